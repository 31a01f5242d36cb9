//! Where each element of the certificate goes (KPCS Annex I): the title and the statement,
//! the number and the seal at the top of page 1, the parties and dates, the parcel table with
//! its totals (continued on further pages for a long shipment, its header repeated), the
//! declarations and remarks, the issuing authority's validation and the message id. Every
//! label is printed in each language of `langs` (English first).

use kp_protocol::amount::format_hundredths;
use kp_protocol::Origin;

use super::canvas::{Canvas, Face, Rgb, BLACK, GREY, MARGIN, RED, RULE, SHADE, WIDTH};
use super::labels::Labels;
use super::Sheet;

/// The QR code's quiet zone, in modules (ISO/IEC 18004 asks for 4).
const QUIET: usize = 4;
/// A module's side: 2.4 pt is 5 pixels at 150 dpi, 0.85 mm on paper, read by phone
/// cameras and by `zbarimg` on a 150 dpi scan.
const MODULE: f32 = 2.4;
/// The seal's largest side, quiet zone included.
const SEAL_MAX: f32 = 170.0;
/// Space between two columns.
const GUTTER: f32 = 14.0;

/// A label in every language, joined by " / ".
fn both(langs: &[Labels], f: impl Fn(&Labels) -> &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for l in langs {
        let s = f(l);
        if !parts.contains(&s) {
            parts.push(s);
        }
    }
    parts.join(" / ")
}

/// Draws the certificate onto `c`.
pub fn certificate(c: &mut Canvas, sheet: &Sheet<'_>, langs: &[Labels]) -> Result<(), String> {
    let cert = sheet.certificate;
    let content = &cert.content;
    if sheet.void.is_some() {
        c.watermark = Some(both(langs, |l| &l.void));
    }
    c.new_page();
    let top = c.y;

    // The seal (or the VOID box) in the top right corner.
    let side = match &sheet.seal {
        Some(text) => {
            let (width, dark) = crate::report::seal::modules(text)?;
            let module = MODULE.min(SEAL_MAX / (width + 2 * QUIET) as f32);
            let side = (width + 2 * QUIET) as f32 * module;
            c.qr(MARGIN + WIDTH - side, top, module, QUIET, width, &dark);
            side
        }
        None => SEAL_MAX * 0.8,
    };
    let seal_x = MARGIN + WIDTH - side;
    let mut seal_bottom = top - side;
    if let Some((at, _)) = &sheet.void {
        let y = top - side;
        c.fill(seal_x, y, side, side, (1.0, 0.93, 0.93));
        c.frame(seal_x, y, side, side, 2.0, RED);
        let mut line = top - 30.0;
        for (i, l) in langs.iter().enumerate() {
            let size = if i == 0 { 30.0 } else { 13.0 };
            for text in c.wrap(Face::Bold, size, &l.void, side - 12.0) {
                let w = c.width(Face::Bold, size, &text);
                c.text(Face::Bold, size, seal_x + (side - w) / 2.0, line, &text, RED);
                line -= size * 1.15;
            }
        }
        line -= 4.0;
        let voided = format!("{}: {}", both(langs, |l| &l.voided_at), at.date());
        for text in c.wrap(Face::Regular, 7.5, &voided, side - 12.0) {
            c.text(Face::Regular, 7.5, seal_x + 6.0, line, &text, RED);
            line -= 9.0;
        }
        seal_bottom = seal_bottom.min(line);
    } else {
        let mut line = seal_bottom - 10.0;
        c.text(Face::Bold, 7.5, seal_x, line, &both(langs, |l| &l.seal), GREY);
        for l in langs {
            for text in c.wrap(Face::Regular, 6.5, &l.seal_hint, side) {
                line -= 8.0;
                c.text(Face::Regular, 6.5, seal_x, line, &text, GREY);
            }
        }
        line -= 8.0;
        c.text(Face::Regular, 6.5, seal_x, line, "kpnode verify --qr", GREY);
        seal_bottom = line;
    }

    // Title, statement and number, left of the seal.
    let left = WIDTH - side - GUTTER;
    let mut y = top - 16.0;
    for (i, l) in langs.iter().enumerate() {
        let size = if i == 0 { 17.0 } else { 12.5 };
        for text in c.wrap(Face::Bold, size, &l.title, left) {
            c.text(Face::Bold, size, MARGIN, y, &text, BLACK);
            y -= size * 1.25;
        }
    }
    y -= 2.0;
    for l in langs {
        for text in c.wrap(Face::Regular, 8.0, &l.statement, left) {
            c.text(Face::Regular, 8.0, MARGIN, y, &text, BLACK);
            y -= 10.0;
        }
        y -= 3.0;
    }
    y -= 6.0;
    c.text(Face::Regular, 7.0, MARGIN, y, &both(langs, |l| &l.number), GREY);
    y -= 17.0;
    c.text(Face::Bold, 16.0, MARGIN, y, cert.number.as_str(), BLACK);
    c.y = y.min(seal_bottom) - 16.0;

    if let Some((at, reason)) = &sheet.void {
        let text = format!(
            "{} — {}: {}. {}: {}",
            both(langs, |l| &l.void),
            both(langs, |l| &l.voided_at),
            at,
            both(langs, |l| &l.reason),
            reason
        );
        let lines = c.wrap(Face::Bold, 9.5, &text, WIDTH - 12.0);
        let h = lines.len() as f32 * 12.0 + 8.0;
        c.need(h);
        let y = c.y;
        c.frame(MARGIN, y - h, WIDTH, h, 1.5, RED);
        let mut line = y - 13.0;
        for text in lines {
            c.text(Face::Bold, 9.5, MARGIN + 6.0, line, &text, RED);
            line -= 12.0;
        }
        c.y = y - h - 12.0;
    }

    // The parties, dates and references, two to a row; an element that may be absent takes
    // a place only when given.
    let licence = both(langs, |l| &l.licence);
    let party = |p: &kp_protocol::certificate::Party| match &p.licence {
        Some(number) => format!("{}\n{}\n{licence}: {number}", p.name, p.address),
        None => format!("{}\n{}", p.name, p.address),
    };
    let mut rows: Vec<Vec<(String, String)>> = vec![vec![
        (both(langs, |l| &l.exporting_participant), content.exporting_participant.to_string()),
        (both(langs, |l| &l.importing_participant), content.importing_participant.to_string()),
    ]];
    let routing: Vec<(String, String)> = [
        content.replaces.as_ref().map(|n| (both(langs, |l| &l.replaces), n.to_string())),
        content.importing_member.map(|m| (both(langs, |l| &l.importing_member), m.to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !routing.is_empty() {
        rows.push(routing);
    }
    rows.extend([
        vec![
            (both(langs, |l| &l.exporter), party(&content.exporter)),
            (both(langs, |l| &l.importer), party(&content.importer)),
        ],
        vec![
            (both(langs, |l| &l.issued_on), content.issued_on.to_string()),
            (both(langs, |l| &l.expires_on), content.expires_on.to_string()),
        ],
        vec![
            (both(langs, |l| &l.issuing_authority), content.issuing_authority.to_string()),
            (both(langs, |l| &l.number_of_parcels), cert.parcel_count().to_string()),
        ],
    ]);
    if let Some(s) = &content.shipment {
        let text = |t: &Option<kp_protocol::Text>| t.as_ref().map_or("—".to_owned(), |t| t.to_string());
        rows.push(vec![
            (both(langs, |l| &l.port_of_export), text(&s.port_of_export)),
            (both(langs, |l| &l.customs_reference), text(&s.customs_reference)),
        ]);
        let seals: Vec<String> = s.container_seals.iter().map(ToString::to_string).collect();
        let transport: Vec<(String, String)> = [
            s.port_of_entry.map(|p| (both(langs, |l| &l.port_of_entry), p.to_string())),
            s.transport_mode.map(|m| (both(langs, |l| &l.transport_mode), both(langs, |l| l.transport(m)))),
            s.transport_document.as_ref().map(|d| (both(langs, |l| &l.transport_document), d.to_string())),
            (!seals.is_empty()).then(|| (both(langs, |l| &l.container_seals), seals.join(", "))),
        ]
        .into_iter()
        .flatten()
        .collect();
        rows.extend(transport.chunks(2).map(<[_]>::to_vec));
    }
    let column = (WIDTH - GUTTER) / 2.0;
    for row in rows {
        let cells: Vec<(Vec<String>, Vec<String>)> = row
            .iter()
            .map(|(label, value)| {
                (c.wrap(Face::Regular, 7.0, label, column), c.wrap(Face::Regular, 9.5, value, column))
            })
            .collect();
        let h = cells.iter().map(|(l, v)| l.len() as f32 * 8.5 + v.len() as f32 * 12.0).fold(0.0, f32::max);
        c.need(h + 8.0);
        let y = c.y;
        for (i, (label, value)) in cells.iter().enumerate() {
            let x = MARGIN + i as f32 * (column + GUTTER);
            let mut line = y - 7.0;
            for text in label {
                c.text(Face::Regular, 7.0, x, line, text, GREY);
                line -= 8.5;
            }
            line -= 3.0;
            for text in value {
                c.text(Face::Regular, 9.5, x, line, text, BLACK);
                line -= 12.0;
            }
        }
        c.y = y - h - 8.0;
    }

    parcels(c, sheet, langs);

    // Declarations and remarks.
    if !content.declarations.is_empty() {
        heading(c, &both(langs, |l| &l.declarations));
        for d in &content.declarations {
            c.need(10.0);
            let y = c.y - 8.0;
            c.text(Face::Bold, 8.0, MARGIN, y, d.code.as_str(), BLACK);
            c.y = y - 2.0;
            paragraph(c, Face::Regular, 8.5, &d.text.to_string(), BLACK);
            c.y -= 4.0;
        }
    }
    if let Some(remarks) = &content.remarks {
        heading(c, &both(langs, |l| &l.remarks));
        paragraph(c, Face::Regular, 8.5, &remarks.to_string(), BLACK);
    }

    // The validation by the exporting authority.
    heading(c, &both(langs, |l| &l.validation));
    paragraph(
        c,
        Face::Bold,
        10.0,
        &format!("{} ({})", content.issuing_authority, content.exporting_participant),
        BLACK,
    );
    for (label, value) in [
        (both(langs, |l| &l.signed), sheet.signed_at.to_string()),
        (both(langs, |l| &l.key), format!("{} ({})", sheet.key_id, sheet.signer)),
        (both(langs, |l| &l.message_id), sheet.message_id.to_string()),
    ] {
        paragraph(c, Face::Regular, 7.0, &label, GREY);
        paragraph(c, Face::Regular, 8.5, &value, BLACK);
        c.y -= 2.0;
    }

    footers(c, sheet, langs);
    Ok(())
}

/// A section heading with a rule above it.
fn heading(c: &mut Canvas, text: &str) {
    c.need(34.0);
    c.y -= 6.0;
    c.line(MARGIN, c.y, MARGIN + WIDTH, c.y, 0.5, RULE);
    c.y -= 13.0;
    c.text(Face::Bold, 9.0, MARGIN, c.y, text, BLACK);
    c.y -= 5.0;
}

/// Text across the page's width, line by line (onto further pages if it must).
fn paragraph(c: &mut Canvas, face: Face, size: f32, text: &str, color: Rgb) {
    let leading = size * 1.3;
    for line in c.wrap(face, size, text, WIDTH) {
        c.need(leading);
        c.y -= leading;
        c.text(face, size, MARGIN, c.y + leading - size, &line, color);
    }
}

/// The parcel table: one row per parcel, then the totals.
fn parcels(c: &mut Canvas, sheet: &Sheet<'_>, langs: &[Labels]) {
    let cert = sheet.certificate;
    // (label, width, right-aligned)
    type Label = fn(&Labels) -> &str;
    let columns: [(Label, f32, bool); 6] = [
        (|l| &l.parcel, 30.0, false),
        (|l| &l.hs_code, 62.0, false),
        (|l| &l.description, 120.0, false),
        (|l| &l.origin, WIDTH - 30.0 - 62.0 - 120.0 - 92.0 - 110.0, false),
        (|l| &l.carats, 92.0, true),
        (|l| &l.value_usd, 110.0, true),
    ];
    let xs: Vec<f32> = columns
        .iter()
        .scan(MARGIN, |x, (_, w, _)| {
            let at = *x;
            *x += w;
            Some(at)
        })
        .collect();
    heading(c, &both(langs, |l| &l.parcels));
    let header = |c: &mut Canvas| {
        // One line per language (each wrapped if it must), so that each label stays whole.
        let cells: Vec<Vec<String>> = columns
            .iter()
            .map(|(label, w, _)| {
                langs.iter().flat_map(|l| c.wrap(Face::Bold, 7.0, label(l), w - 6.0)).collect()
            })
            .collect();
        let h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * 8.5 + 6.0;
        c.need(h);
        let y = c.y;
        c.fill(MARGIN, y - h, WIDTH, h, SHADE);
        for (i, lines) in cells.iter().enumerate() {
            let mut line = y - 9.0;
            for text in lines {
                if columns[i].2 {
                    c.text_right(Face::Bold, 7.0, xs[i] + columns[i].1 - 3.0, line, text, BLACK);
                } else {
                    c.text(Face::Bold, 7.0, xs[i] + 3.0, line, text, BLACK);
                }
                line -= 8.5;
            }
        }
        c.y = y - h;
    };
    header(c);
    let mut mixed = false;
    for (n, p) in cert.content.parcels.iter().enumerate() {
        let hs = p.hs_code.to_string();
        let mut description: Vec<String> = Vec::new();
        for l in langs {
            description.extend(c.wrap(Face::Regular, 8.0, l.hs(&hs), columns[2].1 - 6.0));
        }
        // MIXED as the code the KP uses; the legend under the table says what it means.
        let mut origin = vec![p.origin.to_string()];
        mixed |= p.origin == Origin::Mixed;
        if let Some(area) = &p.origin_area {
            origin.extend(c.wrap(Face::Regular, 8.0, &area.to_string(), columns[3].1 - 6.0));
        }
        let cells: [Vec<String>; 6] = [
            vec![(n + 1).to_string()],
            vec![hs],
            description,
            origin,
            vec![p.carats.to_string()],
            vec![p.value_usd.to_string()],
        ];
        let h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * 10.0 + 5.0;
        if c.need(h) {
            header(c);
        }
        let y = c.y;
        for (i, lines) in cells.iter().enumerate() {
            let mut line = y - 10.0;
            for text in lines {
                if columns[i].2 {
                    c.text_right(Face::Regular, 8.5, xs[i] + columns[i].1 - 3.0, line, text, BLACK);
                } else {
                    c.text(Face::Regular, 8.5, xs[i] + 3.0, line, text, BLACK);
                }
                line -= 10.0;
            }
        }
        c.y = y - h;
        c.line(MARGIN, c.y, MARGIN + WIDTH, c.y, 0.3, RULE);
    }
    // The totals, derived from the parcels (never typed in twice).
    let h = 16.0;
    if c.need(h) {
        header(c);
    }
    let y = c.y;
    c.fill(MARGIN, y - h, WIDTH, h, SHADE);
    let line = y - 11.0;
    let total = format!(
        "{} — {}: {}",
        both(langs, |l| &l.total),
        both(langs, |l| &l.number_of_parcels),
        cert.parcel_count()
    );
    c.text(Face::Bold, 8.5, xs[0] + 3.0, line, &total, BLACK);
    c.text_right(
        Face::Bold,
        8.5,
        xs[4] + columns[4].1 - 3.0,
        line,
        &format_hundredths(cert.total_carats()),
        BLACK,
    );
    c.text_right(
        Face::Bold,
        8.5,
        xs[5] + columns[5].1 - 3.0,
        line,
        &format_hundredths(cert.total_value_usd()),
        BLACK,
    );
    c.y = y - h - 4.0;
    if mixed {
        paragraph(c, Face::Regular, 7.0, &format!("MIXED: {}", both(langs, |l| &l.mixed)), GREY);
    }
}

/// Every page's footer: the certificate's number and the page, of how many.
fn footers(c: &mut Canvas, sheet: &Sheet<'_>, langs: &[Labels]) {
    let n = c.pages.len();
    let title = &langs[0].title;
    let page = both(langs, |l| &l.page);
    for i in 0..n {
        let text = format!("{title} {} — {page} {}/{n}", sheet.certificate.number, i + 1);
        c.page = i;
        c.text(Face::Regular, 7.0, MARGIN, 28.0, &text, GREY);
        c.line(MARGIN, 38.0, MARGIN + WIDTH, 38.0, 0.3, RULE);
    }
    c.page = n.saturating_sub(1);
}
