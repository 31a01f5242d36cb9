//! Certificates: the list with its filters, a certificate's page with its timeline, and the
//! actions on it, each the API's own function behind the user's role.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{field, render, Console, Nav, PageError, PageResult, SignedIn};
use crate::api::ListQuery;
use crate::queries::CertView;
use crate::service::accounts::Action;
use crate::store::{CertStatus, Direction};

/// Rows on a page of the list.
const PAGE: usize = 50;
/// Certificates looked at for one page at most: a filter that few certificates match answers
/// within the page budget on a store of 100,000 and more, offering to search on.
const MAX_SCANNED: usize = 2_000;

/// The list's filter form; every field optional, empty meaning "any".
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    peer: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    issued_from: String,
    #[serde(default)]
    issued_to: String,
}

#[derive(Debug)]
struct Row {
    number: String,
    direction: &'static str,
    peer: String,
    status: &'static str,
    issued_on: String,
    parcels: u32,
    carats: String,
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct ListPage {
    nav: Option<Nav>,
    direction: String,
    status: String,
    peer: String,
    number: String,
    issued_from: String,
    issued_to: String,
    statuses: Vec<&'static str>,
    rows: Vec<Row>,
    /// The query string of the next page, if there is one.
    next: Option<String>,
    /// Set when the page stopped searching at this number (see [`MAX_SCANNED`]).
    searched_to: Option<String>,
    error: Option<String>,
    /// Problems with the date range, by field (`issued_from`, `issued_to`).
    date_errors: BTreeMap<String, String>,
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Out => "out",
        Direction::In => "in",
        Direction::Local => "local",
    }
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(filter): Query<Filter>,
) -> PageResult {
    let mut page = ListPage {
        nav: Some(signed.nav()),
        direction: filter.direction.trim().to_owned(),
        status: filter.status.trim().to_owned(),
        peer: filter.peer.trim().to_uppercase(),
        number: filter.number.trim().to_owned(),
        issued_from: filter.issued_from.trim().to_owned(),
        issued_to: filter.issued_to.trim().to_owned(),
        statuses: CertStatus::ALL.iter().map(|s| s.as_str()).collect(),
        rows: Vec::new(),
        next: None,
        searched_to: None,
        error: None,
        date_errors: BTreeMap::new(),
    };
    // Search by number: straight to the certificate's page.
    if let Some(number) = some(&filter.number) {
        match crate::api::show_view(&console.shared, &number) {
            Ok(v) => return Ok(Redirect::to(&format!("/certificates/{}", v.number)).into_response()),
            Err(e) => {
                let (status, message) = e.status_and_message();
                if status != StatusCode::NOT_FOUND && status != StatusCode::UNPROCESSABLE_ENTITY {
                    return Err(PageError::new(status, message));
                }
                page.error = Some(message);
            }
        }
    }
    let query = ListQuery {
        direction: some(&filter.direction),
        status: some(&filter.status),
        peer: some(&page.peer),
        after: some(&filter.after),
        issued_from: some(&filter.issued_from),
        issued_to: some(&filter.issued_to),
        limit: Some(PAGE + 1),
    };
    match crate::api::list_views_bounded(&console.shared, query, false, MAX_SCANNED) {
        Ok((mut views, resume)) => {
            let after = if views.len() > PAGE {
                views.truncate(PAGE);
                views.last().map(|v| v.number.clone())
            } else {
                page.searched_to = resume.clone();
                resume
            };
            page.next = after.map(|after| {
                format!(
                    "direction={}&status={}&peer={}&issued_from={}&issued_to={}&after={after}",
                    page.direction, page.status, page.peer, page.issued_from, page.issued_to
                )
            });
            page.rows = views.iter().map(row).collect();
        }
        Err(e) => match e.into_problems() {
            Ok(problems) => {
                for p in problems {
                    if p.field == "issued_from" || p.field == "issued_to" {
                        page.date_errors.entry(p.field).or_insert(p.message);
                    } else {
                        page.error = Some(format!("{}: {}", p.field, p.message));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(render(&page))
}

fn row(v: &CertView) -> Row {
    Row {
        number: v.number.clone(),
        direction: direction_str(v.direction),
        peer: v.peer.to_string(),
        status: v.status.as_str(),
        issued_on: v.issued_on.to_string(),
        parcels: v.parcels,
        carats: v.carats.clone(),
    }
}

/// A step of a certificate's life, as its page lists them.
#[derive(Debug)]
struct Step {
    at: String,
    what: String,
}

#[derive(Template)]
#[template(path = "certificate.html")]
struct CertificatePage {
    nav: Option<Nav>,
    number: String,
    direction: &'static str,
    peer: String,
    status: &'static str,
    issued_on: String,
    expires_on: String,
    parcels: u32,
    carats: String,
    value_usd: String,
    exporter: String,
    importer: String,
    timeline: Vec<Step>,
    /// The void form is offered only when the user's role and the certificate's state allow it.
    can_void: bool,
    reason_error: Option<String>,
    /// The confirm-import form is offered on inbound certificates to customs officers.
    can_confirm: bool,
    /// The QR seal is shown for a certificate issued here and not voided (only the issuer seals).
    can_seal: bool,
    confirm: ConfirmForm,
    /// Problems with the confirm-import form, by field name.
    confirm_errors: BTreeMap<String, String>,
}

/// The confirm-import form's values, as typed (kept when the form comes back with problems).
#[derive(Debug, Default, Clone)]
struct ConfirmForm {
    received_on: String,
    parcels: String,
    carats: String,
    remarks: String,
}

fn timeline(v: &CertView) -> Vec<Step> {
    let mut steps = Vec::new();
    let issuer = v.certificate.as_ref().map_or_else(
        || "the exporting authority".to_owned(),
        |c| format!("{} ({})", c.content.issuing_authority, c.content.exporting_participant),
    );
    // Who on this node did it: the officer its log entry names.
    let by = |o: &Option<crate::store::Officer>| {
        o.as_ref().map(|o| format!(" — officer: {o}")).unwrap_or_default()
    };
    let o = &v.officers;
    steps.push(Step {
        at: v.signed_at.to_string(),
        what: format!("Issued and signed by {issuer}{}", by(&o.issued)),
    });
    if let Some(at) = v.delivered_at {
        let what = match (&v.receipt, v.direction) {
            (Some(r), _) => format!(
                "Delivered: {}'s node stored it at entry {} of its log (its signed receipt)",
                r.receiver, r.receiver_log_seq
            ),
            (None, Direction::In) => "Received by this node".to_owned(),
            (None, _) => "Delivered".to_owned(),
        };
        steps.push(Step { at: at.to_string(), what });
    }
    if let Some(r) = &v.rejection {
        steps.push(Step {
            at: r.at.to_string(),
            what: format!("Refused by the importer's node: {}", r.detail),
        });
    }
    if let Some(c) = &v.confirmation {
        let what = match &c.record.discrepancy {
            Some(d) => format!(
                "Import confirmed with a discrepancy: {d} (received {} parcel(s), {} carats on {})",
                c.record.parcels, c.record.carats, c.record.received_on
            ),
            None => format!(
                "Import confirmed: {} parcel(s), {} carats received on {}",
                c.record.parcels, c.record.carats, c.record.received_on
            ),
        };
        steps.push(Step { at: c.record.confirmed_at.to_string(), what: what + &by(&o.confirmed) });
    }
    if let Some(r) = &v.resolution {
        steps.push(Step {
            at: r.resolved_at.to_string(),
            what: format!(
                "Discrepancy resolved by {} ({}): {}{}",
                r.resolved_by,
                r.participant,
                r.note,
                by(&o.resolved)
            ),
        });
    }
    if let Some(void) = &v.void {
        steps.push(Step {
            at: void.voided_at.to_string(),
            what: format!("Voided: {}{}", void.reason, by(&o.voided)),
        });
    }
    steps
}

fn certificate_page(
    console: &Console,
    signed: &SignedIn,
    number: &str,
) -> Result<CertificatePage, PageError> {
    let v = crate::api::show_view(&console.shared, number)?;
    let can_void =
        signed.account.role.may(Action::Void) && crate::api::void_refusal(&console.shared, number)?.is_none();
    let can_confirm = signed.account.role.may(Action::ConfirmImport)
        && crate::api::confirm_refusal(&console.shared, number)?.is_none();
    // What the certificate declares is the likeliest answer: the officer corrects it.
    let confirm = ConfirmForm {
        received_on: console.shared.now().date().to_string(),
        parcels: v.parcels.to_string(),
        carats: v.carats.clone(),
        remarks: String::new(),
    };
    let (exporter, importer) = v.certificate.as_ref().map_or_else(Default::default, |c| {
        (
            format!("{} ({})", c.content.exporter.name, c.content.exporting_participant),
            format!("{} ({})", c.content.importer.name, c.content.importing_participant),
        )
    });
    Ok(CertificatePage {
        nav: Some(signed.nav()),
        number: v.number.clone(),
        direction: direction_str(v.direction),
        peer: v.peer.to_string(),
        status: v.status.as_str(),
        issued_on: v.issued_on.to_string(),
        expires_on: v.expires_on.to_string(),
        parcels: v.parcels,
        carats: v.carats.clone(),
        value_usd: v.value_usd.clone(),
        exporter,
        importer,
        timeline: timeline(&v),
        can_void,
        reason_error: None,
        can_confirm,
        can_seal: v.direction == Direction::Out && v.void.is_none(),
        confirm,
        confirm_errors: BTreeMap::new(),
    })
}

pub(super) async fn show(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(number): Path<String>,
) -> PageResult {
    Ok(render(&certificate_page(&console, &signed, &number)?))
}

/// Voids a certificate: CSRF first, then the role (403, nothing done), then the API's void.
pub(super) async fn void(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(number): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    signed.require(Action::Void, "void certificates")?;
    let reason = field(&form, "reason").unwrap_or("").trim();
    if reason.is_empty() {
        let mut page = certificate_page(&console, &signed, &number)?;
        page.reason_error = Some("Say why the certificate is voided; the importer sees the reason.".into());
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
    }
    match crate::api::void_certificate(&console.shared, &number, reason, &signed.officer()).await {
        Ok(v) => {
            tracing::info!(user = %signed.account.name, certificate = %v.number, "certificate voided from the console");
            Ok(Redirect::to(&format!("/certificates/{}", v.number)).into_response())
        }
        Err(e) => {
            let (status, message) = e.status_and_message();
            if status != StatusCode::UNPROCESSABLE_ENTITY {
                return Err(PageError::new(status, message));
            }
            let mut page = certificate_page(&console, &signed, &number)?;
            page.reason_error = Some(message.trim_start_matches("reason: ").to_owned());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

/// Confirms the import of an inbound certificate: CSRF, the role, then the API's confirmation;
/// each problem is shown at its field.
pub(super) async fn confirm(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(number): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    signed.require(Action::ConfirmImport, "confirm imports")?;
    let value = |name: &str| field(&form, name).unwrap_or("").trim().to_owned();
    let typed = ConfirmForm {
        received_on: value("received_on"),
        parcels: value("parcels"),
        carats: value("carats"),
        remarks: value("remarks"),
    };
    let mut errors = BTreeMap::new();
    let parcels = typed.parcels.parse::<u32>().unwrap_or_else(|_| {
        errors.insert("parcels".to_owned(), format!("{:?} is not a whole number of parcels", typed.parcels));
        0
    });
    if errors.is_empty() {
        let req = crate::api::ConfirmRequest {
            received_on: typed.received_on.clone(),
            parcels,
            carats: typed.carats.clone(),
            remarks: (!typed.remarks.is_empty()).then(|| typed.remarks.clone()),
        };
        match crate::api::confirm_certificate(&console.shared, &number, req, &signed.officer()).await {
            Ok(v) => {
                tracing::info!(user = %signed.account.name, certificate = %v.number, status = v.status.as_str(), "import confirmed from the console");
                return Ok(Redirect::to(&format!("/certificates/{}", v.number)).into_response());
            }
            Err(e) => match e.into_problems() {
                Ok(problems) => {
                    for p in problems {
                        errors.entry(p.field).or_insert(p.message);
                    }
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    let mut page = certificate_page(&console, &signed, &number)?;
    page.confirm = typed;
    page.confirm_errors = errors;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

/// The signed certificate as a `.kpc` download.
pub(super) async fn kpc(
    State(console): State<Arc<Console>>,
    _signed: SignedIn,
    Path(number): Path<String>,
) -> PageResult {
    let text = crate::api::kpc_text(&console.shared, &number)?;
    let disposition = format!(
        "attachment; filename=\"{}.kpc\"",
        number.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>()
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-kpc".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        text,
    )
        .into_response())
}
