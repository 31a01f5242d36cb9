//! Partners: the enrolled peers with their fingerprints and links (supervisors and auditors),
//! enrolment from an uploaded bundle with the fingerprint typed in, and removal (supervisors).
//! Enrolling and removing are the API's own functions ([`crate::api::enrol_peer`],
//! [`crate::api::remove_peer_now`]), which `kpnode peer add` and `peer remove` reach through
//! a running daemon: the same checks, the same refusals.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;

use super::{field, render, upload, Console, Msg, Nav, PageError, PageResult, SignedIn, CSRF_FIELD};
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;

/// The largest upload of the enrolment form: a bundle with a long key history is a few KiB.
pub const MAX_BUNDLE_UPLOAD: usize = 256 << 10;

#[derive(Debug)]
struct PartnerRow {
    participant: String,
    authority: String,
    fingerprint: String,
    signing_key: String,
    rotations: usize,
    endpoints: String,
    enrolled_at: String,
    removed: bool,
    up: bool,
    last_delivery: String,
    last_error: String,
    queued: String,
}

#[derive(Template)]
#[template(path = "partners.html")]
struct PartnersPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    can_manage: bool,
    partners: Vec<PartnerRow>,
    /// The fingerprint as typed, shown again with the form's problems.
    fingerprint: String,
    replace_identity: bool,
    /// Problems with the enrolment form, by field: `bundle`, `fingerprint`, `replace_identity`
    /// (the node's words), or `bundle-missing`, `bundle-not-text`, `fingerprint-missing` (the
    /// page's).
    errors: BTreeMap<String, String>,
    /// The partner just enrolled.
    enrolled: Option<String>,
    /// A removal refused because its box was not ticked: the partner's code.
    remove_unconfirmed: Option<String>,
}

fn may_read(signed: &SignedIn) -> Result<(), PageError> {
    if signed.account.role.may(Action::ManagePeers) || signed.account.role.may(Action::Audit) {
        Ok(())
    } else {
        signed.require(Action::ManagePeers, Msg("forbidden-partners-see"))
    }
}

fn page(console: &Console, signed: &SignedIn) -> Result<PartnersPage, PageError> {
    let tr = signed.tr();
    let partners = crate::queries::peer_views(&console.shared)
        .map_err(|e| signed.localize(e))?
        .into_iter()
        .map(|p| PartnerRow {
            participant: p.participant.to_string(),
            authority: p.authority.clone(),
            fingerprint: p.fingerprint.clone(),
            signing_key: p.signing_key.clone(),
            rotations: p.rotations,
            endpoints: p.endpoints.join(", "),
            enrolled_at: tr.datetime(p.enrolled_at),
            removed: p.removed,
            up: p.link.as_ref().is_some_and(|l| l.connected),
            last_delivery: p
                .link
                .as_ref()
                .and_then(|l| l.last_delivery)
                .map(|t| tr.datetime(t))
                .unwrap_or_default(),
            last_error: p.link.as_ref().and_then(|l| l.last_error.clone()).unwrap_or_default(),
            queued: tr.number(p.queued),
        })
        .collect();
    Ok(PartnersPage {
        tr,
        nav: Some(signed.nav()),
        can_manage: signed.account.role.may(Action::ManagePeers),
        partners,
        fingerprint: String::new(),
        replace_identity: false,
        errors: BTreeMap::new(),
        enrolled: None,
        remove_unconfirmed: None,
    })
}

pub(super) async fn list(State(console): State<Arc<Console>>, signed: SignedIn) -> PageResult {
    may_read(&signed)?;
    Ok(render(&page(&console, &signed)?))
}

/// Enrols a partner: CSRF, the role, then the API's enrolment; a bad bundle or a fingerprint
/// that is not the bundle's is shown at its field, and nothing is enrolled.
pub(super) async fn enrol(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let parts = upload::parse(signed.tr(), &headers, &body)?;
    signed.check_csrf(&[(CSRF_FIELD.to_owned(), upload::text(&parts, CSRF_FIELD).to_owned())])?;
    signed.require(Action::ManagePeers, Msg("forbidden-partners-enrol"))?;
    let fingerprint = upload::text(&parts, "fingerprint").to_owned();
    let replace_identity = upload::text(&parts, "replace_identity") == "yes";
    let mut errors = BTreeMap::new();
    let bundle = match upload::file(&parts, "bundle").map(std::str::from_utf8) {
        None => {
            errors.insert("bundle-missing".to_owned(), String::new());
            None
        }
        Some(Err(_)) => {
            errors.insert("bundle-not-text".to_owned(), String::new());
            None
        }
        Some(Ok(text)) => Some(text.to_owned()),
    };
    if fingerprint.is_empty() {
        errors.insert("fingerprint-missing".to_owned(), String::new());
    }
    if let (Some(bundle), true) = (bundle, errors.is_empty()) {
        let req = crate::api::AddPeerRequest {
            bundle,
            fingerprint: fingerprint.clone(),
            endpoints: None,
            replace_identity,
        };
        match crate::api::enrol_peer(&console.shared, req, signed.officer()).await {
            Ok(view) => {
                tracing::info!(user = %signed.account.name, peer = %view.participant, "partner enrolled from the console");
                let mut p = page(&console, &signed)?;
                p.enrolled = Some(view.participant.to_string());
                return Ok(render(&p));
            }
            Err(e) => match e.into_problems() {
                Ok(problems) => {
                    for p in problems {
                        let message = super::problem_text(signed.tr(), &p);
                        errors.entry(p.field).or_insert(message);
                    }
                }
                Err(e) => return Err(signed.localize(e)),
            },
        }
    }
    let mut p = page(&console, &signed)?;
    p.fingerprint = fingerprint;
    p.replace_identity = replace_identity;
    p.errors = errors;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response())
}

/// Removes a partner: CSRF, the role, then the API's removal.
pub(super) async fn remove(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(code): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    signed.require(Action::ManagePeers, Msg("forbidden-partners-remove"))?;
    if field(&form, "confirm") != Some("yes") {
        let mut p = page(&console, &signed)?;
        p.remove_unconfirmed = Some(code);
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&p)).into_response());
    }
    let removed = crate::api::remove_peer_now(&console.shared, &code, signed.officer())
        .await
        .map_err(|e| signed.localize(e))?;
    tracing::info!(user = %signed.account.name, peer = %removed.removed, "partner removed from the console");
    Ok(Redirect::to("/partners").into_response())
}
