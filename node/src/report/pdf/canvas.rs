//! Drawing on A4 pages: text in the embedded fonts, rules, filled boxes and the QR code, with
//! a cursor that flows down the page and onto a new one. Each page is a content stream of
//! plain PDF operators (text as hex glyph ids), written into the document by [`super`].

use std::fmt::Write as _;

use super::font::Font;

/// A4, in points.
pub const PAGE_WIDTH: f32 = 595.28;
pub const PAGE_HEIGHT: f32 = 841.89;
/// Left, right and top margin (15 mm).
pub const MARGIN: f32 = 42.5;
/// The bottom margin, with room for the footer.
pub const BOTTOM: f32 = 56.0;
/// The width between the margins.
pub const WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN;

pub type Rgb = (f32, f32, f32);
pub const BLACK: Rgb = (0.0, 0.0, 0.0);
pub const GREY: Rgb = (0.33, 0.33, 0.33);
pub const RULE: Rgb = (0.6, 0.6, 0.6);
pub const SHADE: Rgb = (0.92, 0.92, 0.92);
pub const RED: Rgb = (0.78, 0.0, 0.0);
pub const PALE_RED: Rgb = (1.0, 0.82, 0.82);

/// Which embedded face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Regular = 0,
    Bold = 1,
}

/// The pages drawn so far and the cursor on the last one.
#[derive(Debug)]
pub struct Canvas {
    pub fonts: [Font; 2],
    pub pages: Vec<String>,
    /// The page drawn on: the last one, unless set otherwise (the footers).
    pub page: usize,
    /// The baseline room left: the next thing is drawn below `y`.
    pub y: f32,
    /// A mark drawn large and pale across every page, under everything else (VOID).
    pub watermark: Option<String>,
}

impl Canvas {
    pub fn new() -> Result<Canvas, String> {
        Ok(Canvas {
            fonts: [
                Font::new("DejaVuSans", super::font::REGULAR)?,
                Font::new("DejaVuSans-Bold", super::font::BOLD)?,
            ],
            pages: Vec::new(),
            page: 0,
            y: 0.0,
            watermark: None,
        })
    }

    /// Starts a new page, the cursor at its top margin.
    pub fn new_page(&mut self) {
        self.pages.push(String::new());
        self.page = self.pages.len() - 1;
        self.y = PAGE_HEIGHT - MARGIN;
        if let Some(mark) = self.watermark.clone() {
            // Diagonally across the page's centre, bottom left to top right.
            let size = 110.0;
            let w = self.width(Face::Bold, size, &mark).min(PAGE_HEIGHT);
            let (cos, sin) = (std::f32::consts::FRAC_1_SQRT_2, std::f32::consts::FRAC_1_SQRT_2);
            let (cx, cy) = (PAGE_WIDTH / 2.0, PAGE_HEIGHT / 2.0);
            let half_cap = 0.36 * size;
            let x = cx - w / 2.0 * cos + half_cap * sin;
            let y = cy - w / 2.0 * sin - half_cap * cos;
            self.text_matrix(Face::Bold, size, [cos, sin, -sin, cos, x, y], &mark, PALE_RED);
        }
    }

    /// Makes room for `height` points below the cursor, on a new page if this one lacks it.
    /// Returns whether a new page was started.
    pub fn need(&mut self, height: f32) -> bool {
        if self.pages.is_empty() || self.y - height < BOTTOM {
            self.new_page();
            return true;
        }
        false
    }

    fn ops(&mut self) -> &mut String {
        if self.pages.is_empty() {
            self.pages.push(String::new());
        }
        let page = self.page.min(self.pages.len() - 1);
        &mut self.pages[page]
    }

    pub fn width(&self, face: Face, size: f32, text: &str) -> f32 {
        self.fonts[face as usize].width(text, size)
    }

    /// `text` with its baseline starting at (`x`, `y`).
    pub fn text(&mut self, face: Face, size: f32, x: f32, y: f32, text: &str, color: Rgb) {
        self.text_matrix(face, size, [1.0, 0.0, 0.0, 1.0, x, y], text, color);
    }

    /// `text` ending at `right`.
    pub fn text_right(&mut self, face: Face, size: f32, right: f32, y: f32, text: &str, color: Rgb) {
        let w = self.width(face, size, text);
        self.text(face, size, right - w, y, text, color);
    }

    /// `text` drawn with the text matrix `m` (to rotate it).
    pub fn text_matrix(&mut self, face: Face, size: f32, m: [f32; 6], text: &str, color: Rgb) {
        if text.is_empty() {
            return;
        }
        let hex = self.fonts[face as usize].encode(text);
        let f = face as usize;
        let (r, g, b) = color;
        let _ = writeln!(
            self.ops(),
            "BT {r:.3} {g:.3} {b:.3} rg /F{f} {size:.2} Tf {:.4} {:.4} {:.4} {:.4} {:.2} {:.2} Tm <{hex}> Tj ET",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5]
        );
    }

    /// A filled rectangle; (`x`, `y`) is its lower left corner.
    pub fn fill(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        let (r, g, b) = color;
        let _ = writeln!(self.ops(), "{r:.3} {g:.3} {b:.3} rg {x:.2} {y:.2} {w:.2} {h:.2} re f");
    }

    /// A rectangle's outline.
    pub fn frame(&mut self, x: f32, y: f32, w: f32, h: f32, width: f32, color: Rgb) {
        let (r, g, b) = color;
        let _ = writeln!(self.ops(), "{r:.3} {g:.3} {b:.3} RG {width:.2} w {x:.2} {y:.2} {w:.2} {h:.2} re S");
    }

    /// A straight line.
    pub fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32, color: Rgb) {
        let (r, g, b) = color;
        let _ = writeln!(
            self.ops(),
            "{r:.3} {g:.3} {b:.3} RG {width:.2} w {x1:.2} {y1:.2} m {x2:.2} {y2:.2} l S"
        );
    }

    /// A QR code of `width` modules (`dark`, row by row) with its top left corner at
    /// (`x`, `top`), each module `module` points square, on a white square that includes the
    /// quiet zone of `quiet` modules. Each row's runs of dark modules are one rectangle.
    pub fn qr(&mut self, x: f32, top: f32, module: f32, quiet: usize, width: usize, dark: &[bool]) {
        let side = (width + 2 * quiet) as f32 * module;
        self.fill(x, top - side, side, side, (1.0, 1.0, 1.0));
        let mut ops = String::from("0 0 0 rg\n");
        for (row, cells) in dark.chunks(width).enumerate() {
            let y = top - (quiet + row + 1) as f32 * module;
            let mut col = 0;
            while col < cells.len() {
                if !cells[col] {
                    col += 1;
                    continue;
                }
                let start = col;
                while col < cells.len() && cells[col] {
                    col += 1;
                }
                let _ = writeln!(
                    ops,
                    "{:.3} {:.3} {:.3} {:.3} re",
                    x + (quiet + start) as f32 * module,
                    y,
                    (col - start) as f32 * module,
                    module
                );
            }
        }
        ops.push_str("f\n");
        self.ops().push_str(&ops);
    }

    /// `text` broken into lines no wider than `width`, at spaces where it can be (a word
    /// wider than the line is broken between characters). Line breaks in `text` are kept.
    pub fn wrap(&self, face: Face, size: f32, text: &str, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
                let candidate = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
                if self.width(face, size, &candidate) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                // The word alone: broken between characters if it is still too wide.
                for c in word.chars() {
                    let mut next = line.clone();
                    next.push(c);
                    if !line.is_empty() && self.width(face, size, &next) > width {
                        lines.push(std::mem::take(&mut line));
                        line.push(c);
                    } else {
                        line = next;
                    }
                }
            }
            lines.push(line);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_wraps_at_spaces_and_breaks_a_word_too_long_for_a_line() {
        let c = Canvas::new().unwrap();
        let text = "The rough diamonds in this shipment have been handled in accordance with the KPCS";
        let lines = c.wrap(Face::Regular, 9.0, text, 150.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(lines.iter().all(|l| c.width(Face::Regular, 9.0, l) <= 150.0), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        let long = "X".repeat(200);
        let lines = c.wrap(Face::Bold, 9.0, &long, 100.0);
        assert!(lines.len() > 5 && lines.concat() == long, "{lines:?}");
        assert_eq!(c.wrap(Face::Regular, 9.0, "a\nb", 100.0), vec!["a", "b"]);
    }
}
