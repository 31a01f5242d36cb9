//! Verify: a customs officer uploads a signed certificate (`.kpc`) or a photo or scan of its QR
//! seal, and learns whether it is authentic, with the reason in plain words when it is not;
//! and, because the node is online, the certificate's status in this node's store (a voided
//! certificate shows as voided even though its seal still verifies).
//!
//! The checks are `kpnode verify`'s own ([`crate::report::seal::check_kpc`],
//! [`crate::report::seal::verify`]), against the issuer's bundle as this node trusts it: its
//! own for what it issued, an enrolled partner's (with the rotations received since) for
//! the rest. Uploads are bounded: the body by [`MAX_UPLOAD_BYTES`], an image by
//! [`MAX_PIXELS`] (judged from its header before any pixel is decoded), and at most
//! [`MAX_DECODING`] images are decoded at once, off the async workers.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kp_keys::VerifiedBundle;
use kp_protocol::{ParticipantCode, SignedDocument};

use super::{render, upload, Console, Msg, Nav, PageError, PageResult, SignedIn, CSRF_FIELD};
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;
use crate::state::Shared;
use crate::store::{get_record, Tree};

/// The largest upload read: a `.kpc` of a thousand parcels is well under 1 MiB, a phone photo
/// of a seal a few MiB.
pub const MAX_UPLOAD_BYTES: usize = 8 << 20;
/// The largest image decoded: a 12-megapixel phone photo; its decoding takes about 10 bytes a
/// pixel.
pub const MAX_PIXELS: u64 = 12_000_000;
/// Images decoded at once at most; beyond that an upload is answered 503.
pub const MAX_DECODING: usize = 2;

static DECODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_DECODING);

/// What the uploaded file was found to be, when it is authentic.
#[derive(Debug, Default)]
struct Facts {
    number: String,
    /// Who signed it for whom, in the user's language.
    signed_by: String,
    signed_at: String,
    key_id: String,
    fingerprint: String,
    parcels: String,
    carats: String,
    value_usd: String,
    issued_on: String,
    expires_on: String,
    expired: bool,
    retired_key_note: Option<String>,
}

/// What this node's store says of the certificate now.
#[derive(Debug, Default)]
struct Held {
    /// The node holds a certificate of this number.
    found: bool,
    status: String,
    /// The status's name in the user's language.
    status_name: String,
    voided_at: String,
    void_reason: String,
    /// The node holds a different signed document under this number.
    different_document: bool,
}

#[derive(Debug, Default)]
struct Verdict {
    /// "kpc" or "seal".
    kind: &'static str,
    authentic: bool,
    /// Why it is not authentic, from the checks (`kpnode verify`'s words).
    reasons: Vec<String>,
    /// Not checked: signed by this participant, which is not enrolled here.
    not_enrolled: Option<String>,
    /// Not a KP seal: the QR code's text is not one (the decoder's words).
    not_a_seal: Option<String>,
    facts: Facts,
    held: Held,
}

/// What is wrong with the uploaded file, for the page to say at the field.
#[derive(Debug)]
struct FileError {
    /// "missing", "image" (unreadable, with `detail`), "kpc" (unreadable, with `detail`) or
    /// "unknown" (neither a `.kpc` nor an image).
    kind: &'static str,
    detail: String,
}

impl FileError {
    fn new(kind: &'static str, detail: impl Into<String>) -> Option<FileError> {
        Some(FileError { kind, detail: detail.into() })
    }
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    file_error: Option<FileError>,
    verdict: Option<Verdict>,
    max_megabytes: usize,
    max_megapixels: u64,
}

impl VerifyPage {
    fn new(signed: &SignedIn) -> VerifyPage {
        VerifyPage {
            tr: signed.tr(),
            nav: Some(signed.nav()),
            file_error: None,
            verdict: None,
            max_megabytes: MAX_UPLOAD_BYTES >> 20,
            max_megapixels: MAX_PIXELS / 1_000_000,
        }
    }
}

pub(super) async fn form(signed: SignedIn) -> PageResult {
    signed.require(Action::Verify, Msg("forbidden-verify"))?;
    Ok(render(&VerifyPage::new(&signed)))
}

pub(super) async fn submit(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let parts = upload::parse(signed.tr(), &headers, &body)?;
    signed.check_csrf(&[(CSRF_FIELD.to_owned(), upload::text(&parts, CSRF_FIELD).to_owned())])?;
    signed.require(Action::Verify, Msg("forbidden-verify"))?;
    let mut page = VerifyPage::new(&signed);
    let Some(bytes) = upload::file(&parts, "file") else {
        page.file_error = FileError::new("missing", "");
        return Ok(unprocessable(&page));
    };
    let shared = &console.shared;
    let verdict = if crate::report::seal::is_image(bytes) {
        let Ok(_permit) = DECODING.try_acquire() else {
            return Err(
                signed.localize(PageError::new(StatusCode::SERVICE_UNAVAILABLE, page.tr.t("verify-busy")))
            );
        };
        let owned = bytes.to_vec();
        let read =
            tokio::task::spawn_blocking(move || crate::report::seal::read_image_within(&owned, MAX_PIXELS))
                .await
                .map_err(|e| {
                    signed.localize(PageError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        page.tr.t1("verify-image-task-failed", "error", e),
                    ))
                })?;
        match read {
            Ok(text) => check_seal(shared, page.tr, &text).map_err(|e| signed.localize(e))?,
            Err(why) => {
                page.file_error = FileError::new("image", why);
                return Ok(unprocessable(&page));
            }
        }
    } else {
        match std::str::from_utf8(bytes).ok().map(kp_protocol::portable::from_armored) {
            Some(Ok((doc, cert))) => check_kpc(shared, page.tr, doc, cert).map_err(|e| signed.localize(e))?,
            Some(Err(e)) if bytes.starts_with(b"-----BEGIN") => {
                page.file_error = FileError::new("kpc", e.to_string());
                return Ok(unprocessable(&page));
            }
            _ => {
                page.file_error = FileError::new("unknown", "");
                return Ok(unprocessable(&page));
            }
        }
    };
    tracing::info!(user = %signed.account.name, kind = verdict.kind, authentic = verdict.authentic, number = %verdict.facts.number, "verified from the console");
    page.verdict = Some(verdict);
    Ok(render(&page))
}

fn unprocessable(page: &VerifyPage) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, render(page)).into_response()
}

/// The issuer's bundle as this node trusts it: its own, or an enrolled partner's (ever
/// enrolled: what a removed partner signed before still verifies) with every rotation
/// received since enrolment. `Err(Ok(()))`: `issuer` is not enrolled here.
fn issuer_bundle(shared: &Shared, issuer: ParticipantCode) -> Result<VerifiedBundle, Result<(), PageError>> {
    if issuer == shared.me {
        let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        return keys.bundle(shared.config.authority.clone(), shared.endpoints(), shared.now()).map_err(|e| {
            Err(PageError::new(StatusCode::SERVICE_UNAVAILABLE, format!("this node's bundle: {e}")))
        });
    }
    let trust = shared.trust.get();
    let Some(peer) = trust.known(issuer) else {
        return Err(Ok(()));
    };
    let record = get_record::<kp_exchange::storage::records::PeerRecord, _>(
        &shared.store,
        Tree::Peers,
        issuer.as_str().as_bytes(),
    )
    .map_err(|e| Err(PageError::from(e)))?
    .ok_or_else(|| {
        Err(PageError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{issuer}'s record is missing")))
    })?;
    let mut bundle = VerifiedBundle::from_bytes(&record.bundle).map_err(|e| {
        Err(PageError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{issuer}'s stored bundle: {e}")))
    })?;
    // The rotations received over the link since enrolment, as the link trusts them.
    bundle.history = peer.history.clone();
    Ok(bundle)
}

fn not_authentic(kind: &'static str, number: String, reasons: Vec<String>) -> Verdict {
    Verdict { kind, reasons, facts: Facts { number, ..Facts::default() }, ..Verdict::default() }
}

/// Not checked: signed by `issuer`, which is not enrolled here.
fn not_enrolled(kind: &'static str, number: String, issuer: ParticipantCode) -> Verdict {
    Verdict { not_enrolled: Some(issuer.to_string()), ..not_authentic(kind, number, Vec::new()) }
}

fn check_kpc(
    shared: &Shared,
    tr: &Catalogue,
    doc: SignedDocument,
    cert: kp_protocol::Certificate,
) -> Result<Verdict, PageError> {
    let number = cert.number.to_string();
    let bundle = match issuer_bundle(shared, doc.signer) {
        Ok(b) => b,
        Err(Ok(())) => return Ok(not_enrolled("kpc", number, doc.signer)),
        Err(Err(e)) => return Err(e),
    };
    let today = shared.now().date();
    let checked = match crate::report::seal::check_kpc(doc, cert, &bundle, today) {
        Ok(c) => c,
        Err(reasons) => return Ok(not_authentic("kpc", number, reasons)),
    };
    let (doc, cert) = (&checked.document, &checked.certificate);
    let c = &cert.content;
    let facts = Facts {
        number: number.clone(),
        signed_by: signed_by(tr, &number, &bundle, doc.signer, c.importing_participant),
        signed_at: tr.datetime(doc.signed_at),
        key_id: doc.key_id.to_string(),
        fingerprint: bundle.fingerprint.to_string(),
        parcels: tr.number(cert.parcel_count() as u64),
        carats: tr.decimal(&kp_protocol::amount::format_hundredths(cert.total_carats())),
        value_usd: tr.decimal(&kp_protocol::amount::format_hundredths(cert.total_value_usd())),
        issued_on: tr.date(c.issued_on),
        expires_on: tr.date(c.expires_on),
        expired: c.expires_on < today,
        retired_key_note: checked.retired_key_note.clone().map(|n| n.trim().to_owned()),
    };
    let held = held(shared, tr, &number, doc.message_id())?;
    Ok(Verdict { kind: "kpc", authentic: true, facts, held, ..Verdict::default() })
}

/// "Certificate N was signed by AUTHORITY (ISSUER) for IMPORTER", in the user's language.
fn signed_by(
    tr: &Catalogue,
    number: &str,
    bundle: &VerifiedBundle,
    issuer: ParticipantCode,
    importer: ParticipantCode,
) -> String {
    tr.format(
        "verify-signed-by",
        &[
            ("number", number.to_owned().into()),
            ("authority", bundle.bundle.authority.to_string().into()),
            ("issuer", issuer.to_string().into()),
            ("importer", importer.to_string().into()),
        ],
    )
}

fn check_seal(shared: &Shared, tr: &Catalogue, text: &str) -> Result<Verdict, PageError> {
    let (doc, seal) = match kp_protocol::seal::from_qr_text(text) {
        Ok(d) => d,
        Err(e) => {
            return Ok(Verdict {
                not_a_seal: Some(e.to_string()),
                ..not_authentic("seal", String::new(), Vec::new())
            })
        }
    };
    let number = seal.number.to_string();
    let bundle = match issuer_bundle(shared, doc.signer) {
        Ok(b) => b,
        Err(Ok(())) => return Ok(not_enrolled("seal", number, doc.signer)),
        Err(Err(e)) => return Err(e),
    };
    let verified = match crate::report::seal::verify(text, &bundle, None) {
        Ok(v) => v,
        Err(why) => return Ok(not_authentic("seal", number, vec![why])),
    };
    let (doc, s) = (&verified.document, &verified.seal);
    let today = shared.now().date();
    let retired_key_note =
        crate::report::seal::retired_key_limit(&bundle, doc, s.issued_on, s.expires_on, today)
            .ok()
            .flatten()
            .map(|n| n.trim().to_owned());
    let facts = Facts {
        number: number.clone(),
        signed_by: signed_by(tr, &number, &bundle, doc.signer, s.importing_participant),
        signed_at: tr.datetime(doc.signed_at),
        key_id: doc.key_id.to_string(),
        fingerprint: bundle.fingerprint.to_string(),
        parcels: tr.number(s.parcels as u64),
        carats: tr.decimal(&kp_protocol::amount::format_hundredths(s.carats)),
        value_usd: tr.decimal(&kp_protocol::amount::format_hundredths(s.value_usd)),
        issued_on: tr.date(s.issued_on),
        expires_on: tr.date(s.expires_on),
        expired: s.expires_on < today,
        retired_key_note,
    };
    let held = held(shared, tr, &number, s.certificate_id)?;
    Ok(Verdict { kind: "seal", authentic: true, facts, held, ..Verdict::default() })
}

/// The certificate `number` as this node's store holds it now; whether its signed document is
/// the one `message_id` names.
fn held(
    shared: &Shared,
    tr: &Catalogue,
    number: &str,
    message_id: kp_protocol::MessageId,
) -> Result<Held, PageError> {
    match crate::api::show_view(shared, number) {
        Ok(v) => Ok(Held {
            found: true,
            status: v.status.as_str().to_owned(),
            status_name: tr.t(&format!("status-{}", v.status.as_str())),
            voided_at: v.void.as_ref().map(|x| tr.datetime(x.voided_at)).unwrap_or_default(),
            void_reason: v.void.as_ref().map(|x| x.reason.clone()).unwrap_or_default(),
            different_document: v.message_id != message_id,
        }),
        Err(e) => {
            let page = PageError::from(e);
            if page.status == StatusCode::NOT_FOUND {
                Ok(Held::default())
            } else {
                Err(page)
            }
        }
    }
}
