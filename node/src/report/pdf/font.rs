//! The fonts of the printed certificate: DejaVu Sans and DejaVu Sans Bold, shipped in
//! `node/data/fonts` (free licence, Latin, Greek, Cyrillic and more) and embedded in every PDF
//! as a subset of the glyphs it uses. Text is written as real text: a Type 0 font with
//! Identity-H encoding (glyph ids as character codes) and a ToUnicode map, so that a reader
//! can search, copy and extract it (`pdftotext`) in any script the font covers.

use std::collections::BTreeMap;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Filter, Finish, Name, Pdf, Rect, Ref, Str};
use subsetter::GlyphRemapper;

/// The regular and bold faces, as shipped.
pub const REGULAR: &[u8] = include_bytes!("../../../data/fonts/DejaVuSans.ttf");
pub const BOLD: &[u8] = include_bytes!("../../../data/fonts/DejaVuSans-Bold.ttf");

/// What a character the font lacks is printed as.
const MISSING: char = '?';

/// One face, with the glyphs used so far.
pub struct Font {
    /// The face's PostScript name, for the PDF's BaseFont.
    name: &'static str,
    data: &'static [u8],
    face: ttf_parser::Face<'static>,
    units_per_em: f32,
    /// Original glyph id → id in the subset (the CID written into the text).
    remapper: GlyphRemapper,
    /// Subset id → (original glyph id, the character it prints), for widths and ToUnicode.
    used: BTreeMap<u16, (u16, char)>,
}

impl std::fmt::Debug for Font {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Font").field("name", &self.name).field("glyphs", &self.used.len()).finish()
    }
}

impl Font {
    pub fn new(name: &'static str, data: &'static [u8]) -> Result<Font, String> {
        let face =
            ttf_parser::Face::parse(data, 0).map_err(|e| format!("the font {name} is unreadable: {e}"))?;
        let units_per_em = f32::from(face.units_per_em().max(1));
        Ok(Font { name, data, face, units_per_em, remapper: GlyphRemapper::new(), used: BTreeMap::new() })
    }

    /// The glyph of `c`, or of [`MISSING`] if the font has none.
    fn glyph(&self, c: char) -> (ttf_parser::GlyphId, char) {
        match self.face.glyph_index(c) {
            Some(g) => (g, c),
            None => (self.face.glyph_index(MISSING).unwrap_or(ttf_parser::GlyphId(0)), MISSING),
        }
    }

    /// The width of `text` at `size` points.
    pub fn width(&self, text: &str, size: f32) -> f32 {
        let units: u32 =
            text.chars().map(|c| u32::from(self.face.glyph_hor_advance(self.glyph(c).0).unwrap_or(0))).sum();
        units as f32 * size / self.units_per_em
    }

    /// `text` as the hex string of its subset glyph ids, the operand of `Tj`; records the
    /// glyphs for the subset.
    pub fn encode(&mut self, text: &str) -> String {
        let mut hex = String::with_capacity(text.len() * 4);
        for c in text.chars() {
            let (glyph, shown) = self.glyph(c);
            let cid = self.remapper.remap(glyph.0);
            self.used.entry(cid).or_insert((glyph.0, shown));
            hex.push_str(&format!("{cid:04X}"));
        }
        hex
    }

    /// Writes the font (Type 0, its CID font, descriptor, ToUnicode map and the subset font
    /// file) under `type0`, taking further ids from `next`.
    pub fn write(&self, pdf: &mut Pdf, type0: Ref, next: &mut impl FnMut() -> Ref) -> Result<(), String> {
        let (cid, descriptor, unicode, file) = (next(), next(), next(), next());
        // A subset's name carries a tag of six capitals (ISO 32000-1, 9.6.4), derived from the
        // glyphs so that the same subset has the same name.
        let tag: String = {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for (&new, &(old, _)) in &self.used {
                for b in [new.to_be_bytes(), old.to_be_bytes()].concat() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
            (0..6).map(|i| char::from(b'A' + ((h >> (i * 5)) % 26) as u8)).collect()
        };
        let base = format!("{tag}+{}", self.name);
        let system = SystemInfo { registry: Str(b"Adobe"), ordering: Str(b"Identity"), supplement: 0 };

        pdf.type0_font(type0)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid)
            .to_unicode(unicode);

        let scale = 1000.0 / self.units_per_em;
        let mut cid_font = pdf.cid_font(cid);
        cid_font
            .subtype(CidFontType::Type2)
            .base_font(Name(base.as_bytes()))
            .system_info(system)
            .font_descriptor(descriptor)
            .default_width(0.0)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        let count = self.remapper.num_gids();
        let widths: Vec<f32> = (0..count)
            .map(|new| {
                let old = self.used.get(&new).map_or(0, |(old, _)| *old);
                f32::from(self.face.glyph_hor_advance(ttf_parser::GlyphId(old)).unwrap_or(0)) * scale
            })
            .collect();
        cid_font.widths().consecutive(0, widths);
        cid_font.finish();

        let b = self.face.global_bounding_box();
        let cap = self.face.capital_height().unwrap_or(self.face.ascender());
        pdf.font_descriptor(descriptor)
            .name(Name(base.as_bytes()))
            .flags(FontFlags::NON_SYMBOLIC)
            .bbox(Rect::new(
                f32::from(b.x_min) * scale,
                f32::from(b.y_min) * scale,
                f32::from(b.x_max) * scale,
                f32::from(b.y_max) * scale,
            ))
            .italic_angle(0.0)
            .ascent(f32::from(self.face.ascender()) * scale)
            .descent(f32::from(self.face.descender()) * scale)
            .cap_height(f32::from(cap) * scale)
            .stem_v(80.0)
            .font_file2(file);

        let mut cmap = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), system);
        for (&new, &(_, c)) in &self.used {
            cmap.pair(new, c);
        }
        // Left uncompressed (a few kilobytes): the text layer stays inspectable.
        pdf.cmap(unicode, &cmap.finish());

        let subset = subsetter::subset(self.data, 0, &self.remapper)
            .map_err(|e| format!("cannot subset the font {}: {e}", self.name))?;
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6);
        let length =
            i32::try_from(subset.len()).map_err(|_| format!("the font {} is too large", self.name))?;
        pdf.stream(file, &packed).filter(Filter::FlateDecode).pair(Name(b"Length1"), length);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_faces_cover_latin_and_cyrillic_and_measure_text() {
        for (name, data) in [("DejaVuSans", REGULAR), ("DejaVuSans-Bold", BOLD)] {
            let mut f = Font::new(name, data).unwrap();
            for c in "Kimberley Сертификат №0123456789 US$".chars() {
                assert!(f.face.glyph_index(c).is_some(), "{name} lacks {c:?}");
            }
            assert!(f.width("WWW", 10.0) > f.width("iii", 10.0));
            let a = f.encode("ab");
            assert_eq!(a.len(), 8);
            assert_eq!(f.encode("ba"), format!("{}{}", &a[4..], &a[..4]), "a glyph keeps its id");
            // A character the font lacks prints as '?', and says so in the text layer.
            let missing = f.encode("\u{4E2D}");
            assert_eq!(missing, f.encode("?"));
        }
    }
}
