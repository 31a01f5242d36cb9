//! The printable certificate (`kpnode cert pdf`, `GET /v1/certificates/{number}/pdf`): an A4
//! PDF laid out as KPCS Annex I asks, in English and the issuing participant's language
//! ([`labels`]), with the fonts embedded ([`font`]) and the certificate's QR seal
//! ([`super::seal`]) drawn as vector shapes, so that a border post that holds the paper can
//! check it offline with `kpnode verify --qr` on a scan or photo. The paper's text proves
//! nothing by itself (anyone can edit a PDF); the seal does.
//!
//! Built with `pdf-writer` (the PDF objects), `subsetter` (the font subset) and `ttf-parser`
//! (glyphs and metrics): the layout is ours, a few hundred lines, and the dependencies stay
//! small (README, "The printable certificate", says why not a larger crate).

mod canvas;
mod font;
pub mod labels;
mod layout;

use kp_protocol::{Certificate, MessageId, ParticipantCode, Timestamp};
use pdf_writer::{Finish, Name, Pdf, Rect, Ref, TextStr};

use crate::report::seal::SealError;
use crate::store::{CertRecord, Direction, Storage};
use kp_exchange::engine::document_of;
use kp_exchange::signer::Signer;

/// Everything printed: the signed certificate and what this node knows about it.
#[derive(Debug, Clone)]
pub struct Sheet<'a> {
    pub certificate: &'a Certificate,
    /// The signed certificate's message id.
    pub message_id: MessageId,
    /// When and with which key the issuing authority signed it.
    pub signed_at: Timestamp,
    pub key_id: String,
    /// The participant whose node signed it: its language is printed beside English.
    pub signer: ParticipantCode,
    /// The QR text of the seal; `None` for a voided certificate, which gets none.
    pub seal: Option<String>,
    /// When and why it was voided.
    pub void: Option<(Timestamp, String)>,
}

/// Why no PDF was drawn: a shipped label file or font is broken, or the seal could not be
/// encoded. Never the certificate's fault (every certificate the node holds prints).
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(transparent)]
    Labels(#[from] labels::LabelError),
    #[error("{0}")]
    Draw(String),
}

/// Why a certificate held in the store was not printed.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Pdf(#[from] PdfError),
}

/// The PDF of an outbound certificate held in `store`, with a seal signed now by `signer`
/// (none for a voided certificate, which prints with a VOID mark and the reason instead).
pub fn print<S: Storage + ?Sized>(
    store: &S,
    rec: &CertRecord,
    signer: &Signer,
) -> Result<Vec<u8>, PrintError> {
    if rec.direction != Direction::Out {
        return Err(SealError::Refused(format!(
            "certificate {} was issued by {}; only the issuing authority's node prints it, with its seal (this \
node holds its signed file: kpnode cert export)",
            rec.number, rec.peer
        ))
        .into());
    }
    let doc = document_of(|t, k| store.get(t, k), rec).map_err(SealError::from)?.ok_or_else(|| {
        SealError::Damaged(format!("the signed certificate {} is missing from the store", rec.number))
    })?;
    let cert: Certificate = doc.body().map_err(|e| SealError::Damaged(e.to_string()))?;
    let (seal, void) = match &rec.void {
        Some(v) => (None, Some((v.voided_at, v.reason.clone()))),
        None => {
            let (sealed, _) = crate::report::seal::make(store, rec, signer)?;
            (Some(crate::report::seal::text(&sealed)), None)
        }
    };
    let sheet = Sheet {
        certificate: &cert,
        message_id: doc.message_id(),
        signed_at: doc.signed_at,
        key_id: doc.key_id.to_string(),
        signer: doc.signer,
        seal,
        void,
    };
    Ok(render(&sheet)?)
}

/// The PDF of `sheet`.
pub fn render(sheet: &Sheet<'_>) -> Result<Vec<u8>, PdfError> {
    let languages = labels::for_participant(sheet.signer)?;
    let mut canvas = canvas::Canvas::new().map_err(PdfError::Draw)?;
    layout::certificate(&mut canvas, sheet, &languages).map_err(PdfError::Draw)?;

    let mut pdf = Pdf::new();
    let mut next_id = 1;
    let mut next = || {
        let r = Ref::new(next_id);
        next_id += 1;
        r
    };
    let (catalog, tree, info) = (next(), next(), next());
    let font_refs = [next(), next()];
    let pages: Vec<(Ref, Ref)> = canvas.pages.iter().map(|_| (next(), next())).collect();

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(pages.iter().map(|(page, _)| *page)).count(pages.len() as i32);
    for ((page, content), ops) in pages.iter().zip(&canvas.pages) {
        let mut p = pdf.page(*page);
        p.media_box(Rect::new(0.0, 0.0, canvas::PAGE_WIDTH, canvas::PAGE_HEIGHT))
            .parent(tree)
            .contents(*content);
        p.resources().fonts().pair(Name(b"F0"), font_refs[0]).pair(Name(b"F1"), font_refs[1]);
        p.finish();
        // Left uncompressed: small, and a reader can inspect what is drawn.
        pdf.stream(*content, ops.as_bytes());
    }
    for (font, r) in canvas.fonts.iter().zip(font_refs) {
        font.write(&mut pdf, r, &mut next).map_err(PdfError::Draw)?;
    }
    let title = format!("{} {}", languages[0].title, sheet.certificate.number);
    pdf.document_info(info)
        .title(TextStr(&title))
        .author(TextStr(sheet.certificate.content.issuing_authority.as_str()))
        .producer(TextStr(concat!("kpnode ", env!("CARGO_PKG_VERSION"))));
    Ok(pdf.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(parcels: usize) -> Certificate {
        let today = kp_protocol::Date::from_ymd(2026, 3, 2).unwrap();
        let parcel = |i: usize| {
            let (hs, origin) = [("7102.31", "RU"), ("7102.21", "MIXED"), ("7102.10", "RU")][i % 3];
            format!(
                r#"{{"hs_code": "{hs}", "carats": "{}.35", "value_usd": "{}.00", "origin": "{origin}"}}"#,
                100 + i,
                4000 + i
            )
        };
        let json = format!(
            r#"{{"number": "RU-2026-000042", "exporting_participant": "RU", "importing_participant": "IN",
            "issuing_authority": "Gokhran of Russia",
            "exporter": {{"name": "АЛРОСА", "address": "ул. Ленина 6, Мирный"}},
            "importer": {{"name": "Example Diamond Traders", "address": "2 Bourse Street, Mumbai"}},
            "issued_on": "2026-03-02", "expires_on": "2026-04-30",
            "parcels": [{}],
            "shipment": {{"port_of_export": "Moscow Sheremetyevo", "customs_reference": "10005020/020326/0001"}},
            "declarations": [{{"code": "WDC-SoW", "text": "The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict."}}],
            "remarks": "Two sealed parcels."}}"#,
            (0..parcels).map(parcel).collect::<Vec<_>>().join(",")
        );
        let ctx = kp_protocol::ValidationContext {
            today,
            max_validity_days: Some(60),
            participants: &kp_protocol::AnyParticipant,
            exporter: None,
            importer: None,
        };
        kp_protocol::CertificateDraft::from_json(&json, &ctx).unwrap().into_certificate(|| unreachable!())
    }

    fn sheet(cert: &Certificate, void: Option<(Timestamp, String)>) -> Sheet<'_> {
        Sheet {
            certificate: cert,
            message_id: kp_protocol::Digest::of(b"certificate"),
            signed_at: Timestamp::from_unix_millis(1_772_443_200_000),
            key_id: "k1-0123abcd".into(),
            signer: ParticipantCode::from_static("RU"),
            seal: void.is_none().then(|| format!("KP1:{}", "0123456789ABCDEF".repeat(16))),
            void,
        }
    }

    /// Where `KPNODE_PDF_OUT` points, the PDFs are written for a person to look at.
    fn keep(name: &str, bytes: &[u8]) {
        if let Some(dir) = std::env::var_os("KPNODE_PDF_OUT") {
            std::fs::write(std::path::Path::new(&dir).join(name), bytes).unwrap();
        }
    }

    #[test]
    fn a_certificate_prints_on_one_page_and_a_long_one_on_several() {
        let cert = certificate(2);
        let pdf = render(&sheet(&cert, None)).unwrap();
        keep("two-parcels.pdf", &pdf);
        assert!(pdf.starts_with(b"%PDF-1.7"));
        let text = String::from_utf8_lossy(&pdf);
        assert_eq!(
            text.matches("/Type /Page\n").count() + text.matches("/Type /Page ").count(),
            1,
            "one page"
        );
        assert!(text.contains("+DejaVuSans") && text.contains("/FontFile2"), "fonts embedded as subsets");
        assert!(pdf.len() < 120_000, "{} bytes", pdf.len());

        let long = certificate(120);
        let pdf = render(&sheet(&long, None)).unwrap();
        keep("long.pdf", &pdf);
        let text = String::from_utf8_lossy(&pdf);
        let pages: usize =
            text.split("/Count ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap().parse().unwrap();
        assert!((4..=8).contains(&pages), "{pages} pages for 120 parcels");

        let voided = render(&sheet(
            &cert,
            Some((Timestamp::from_unix_millis(1_772_529_600_000), "shipment cancelled".into())),
        ))
        .unwrap();
        keep("void.pdf", &voided);
    }
}
