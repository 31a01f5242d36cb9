//! A certificate's QR seal, drawn for its page (SVG) and for download (PNG): signed now by
//! this node, exactly as `kpnode cert qr` makes it ([`crate::report::seal::make`]), so a border
//! post checks a print or photo of it offline (`kpnode verify --qr`) or on its console's
//! Verify page. Only the issuing node seals, and never a voided certificate.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::{Console, PageError, PageResult, SignedIn};

/// The seal's QR text, signed now.
fn seal_text(console: &Console, signed: &SignedIn, number: &str) -> Result<String, PageError> {
    let tr = signed.tr();
    let n: kp_protocol::CertificateNumber = number.parse().map_err(|e| {
        signed.localize(PageError::new(
            StatusCode::NOT_FOUND,
            tr.t2("qr-bad-number", "number", format!("{number:?}"), "error", e),
        ))
    })?;
    let rec = crate::store::get_record::<crate::store::CertRecord, _>(
        &console.shared.store,
        crate::store::Tree::Certs,
        n.as_str().as_bytes(),
    )
    .map_err(|e| signed.localize(e))?
    .ok_or_else(|| {
        signed.localize(PageError::new(StatusCode::NOT_FOUND, tr.t1("qr-no-certificate", "number", number)))
    })?;
    let (doc, _) = crate::report::seal::make(&console.shared.store, &rec, &console.shared.signer)
        .map_err(|e| signed.localize(crate::api::ApiError::from(e)))?;
    Ok(crate::report::seal::text(&doc))
}

fn download_name(number: &str, ext: &str) -> String {
    let safe: String = number.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("attachment; filename=\"{safe}-seal.{ext}\"")
}

pub(super) async fn svg(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(number): Path<String>,
) -> PageResult {
    let text = seal_text(&console, &signed, &number)?;
    let svg =
        crate::report::seal::svg(&text).map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

pub(super) async fn png(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(number): Path<String>,
) -> PageResult {
    let text = seal_text(&console, &signed, &number)?;
    let png =
        crate::report::seal::png(&text).map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_owned()),
            (header::CONTENT_DISPOSITION, download_name(&number, "png")),
        ],
        png,
    )
        .into_response())
}
