//! Participants: the registry with each participant's status (everyone signed in), one
//! participant's history of changes, and the change of its status (supervisors), by the API's
//! own function ([`crate::api::set_participant`]), which `kpnode participants set` reaches
//! through a running daemon.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use kp_protocol::{ParticipantCode, ParticipantDirectory};

use super::{field, render, Console, Msg, Nav, PageError, PageResult, SignedIn};
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;
use kp_protocol::registry::ParticipantStatus;

#[derive(Debug)]
struct Row {
    code: String,
    name: String,
    status: String,
    effective_from: String,
    reason: String,
    /// Origin areas a restricted participant's parcels must come from; a union's members.
    detail: String,
    pending: String,
}

#[derive(Template)]
#[template(path = "participants.html")]
struct ListPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    rows: Vec<Row>,
    /// The user may change a participant's status.
    can_set: bool,
}

#[derive(Debug)]
struct Change {
    recorded_at: String,
    log_seq: String,
    status: String,
    effective_from: String,
    reason: String,
    /// Who decided it: "this node's operator", or the signed list it came from.
    source: String,
    from_list: bool,
}

/// The set-status form's values, as typed.
#[derive(Debug, Default)]
struct SetForm {
    status: String,
    effective_from: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "participant.html")]
struct DetailPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    code: String,
    name: String,
    status: String,
    effective_from: String,
    reason: String,
    member_of: String,
    detail: String,
    history: Vec<Change>,
    can_set: bool,
    /// Each status's code and its name in the user's language.
    statuses: Vec<(&'static str, String)>,
    form: SetForm,
    errors: BTreeMap<String, String>,
}

/// The participant statuses a user may set, in the order the form offers them.
pub const STATUSES: [ParticipantStatus; 3] =
    [ParticipantStatus::Active, ParticipantStatus::Suspended, ParticipantStatus::Restricted];

/// A participant status's name in the user's language.
fn status_name(tr: &Catalogue, s: ParticipantStatus) -> String {
    tr.t(&format!("participant-status-{}", s.as_str()))
}

fn row(tr: &Catalogue, e: &kp_protocol::registry::ParticipantEntry, pending: usize) -> Row {
    Row {
        code: e.code.to_string(),
        name: e.name.to_string(),
        status: status_name(tr, e.status),
        effective_from: tr.date(e.effective_from),
        reason: e.reason.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        detail: detail(e),
        pending: tr.number(pending as u64),
    }
}

fn detail(e: &kp_protocol::registry::ParticipantEntry) -> String {
    let areas: Vec<String> = e.approved_origin_areas.iter().map(|a| a.to_string()).collect();
    let members: Vec<String> = e.members.iter().map(|m| m.to_string()).collect();
    [areas.join(", "), members.join(" ")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ")
}

pub(super) async fn list(State(console): State<Arc<Console>>, signed: SignedIn) -> PageResult {
    let registry = console.shared.registry.get();
    let on = registry.on(console.shared.now().date());
    let tr = signed.tr();
    let rows = on.entries().into_iter().map(|e| row(tr, e, on.pending(e.code).len())).collect();
    let can_set = signed.account.role.may(Action::ManageParticipants);
    Ok(render(&ListPage { tr, nav: Some(signed.nav()), rows, can_set }))
}

fn detail_page(console: &Console, signed: &SignedIn, code: &str) -> Result<DetailPage, PageError> {
    let tr = signed.tr();
    let parsed: ParticipantCode = code.trim().to_uppercase().parse().map_err(|e| {
        signed.localize(PageError::new(
            StatusCode::NOT_FOUND,
            tr.t2("participant-bad-code", "code", format!("{code:?}"), "error", e),
        ))
    })?;
    let registry = console.shared.registry.get();
    let today = console.shared.now().date();
    let on = registry.on(today);
    let entry = on.entry(parsed);
    let member_of = on.union_of(parsed).map(|u| u.to_string()).unwrap_or_default();
    if entry.is_none() && member_of.is_empty() && registry.history(parsed).is_empty() {
        return Err(signed
            .localize(PageError::new(StatusCode::NOT_FOUND, tr.t1("participant-unknown", "code", parsed))));
    }
    let history = registry
        .history(parsed)
        .iter()
        .rev()
        .map(|r| Change {
            recorded_at: tr.datetime(r.recorded_at),
            log_seq: tr.number(r.log_seq),
            status: status_name(tr, r.entry.status),
            effective_from: tr.date(r.entry.effective_from),
            reason: r.entry.reason.as_ref().map(|x| x.to_string()).unwrap_or_default(),
            source: r
                .from_list
                .as_ref()
                .map(|l| format!("{} ({})", l.issuer, tr.datetime(l.issued_at)))
                .unwrap_or_default(),
            from_list: r.from_list.is_some(),
        })
        .collect();
    Ok(DetailPage {
        tr,
        nav: Some(signed.nav()),
        code: parsed.to_string(),
        name: entry.map(|e| e.name.to_string()).unwrap_or_default(),
        status: entry.map(|e| status_name(tr, e.status)).unwrap_or_default(),
        effective_from: entry.map(|e| tr.date(e.effective_from)).unwrap_or_default(),
        reason: entry.and_then(|e| e.reason.as_ref()).map(|r| r.to_string()).unwrap_or_default(),
        member_of,
        detail: entry.map(detail).unwrap_or_default(),
        history,
        can_set: signed.account.role.may(Action::ManageParticipants) && entry.is_some(),
        statuses: STATUSES.iter().map(|s| (s.as_str(), status_name(tr, *s))).collect(),
        form: SetForm {
            status: entry.map(|e| e.status.as_str().to_owned()).unwrap_or_default(),
            effective_from: today.to_string(),
            reason: String::new(),
        },
        errors: BTreeMap::new(),
    })
}

pub(super) async fn show(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(code): Path<String>,
) -> PageResult {
    Ok(render(&detail_page(&console, &signed, &code)?))
}

/// Sets a participant's status: CSRF, the role, then the API's change; each problem at its field.
pub(super) async fn set(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Path(code): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    signed.require(Action::ManageParticipants, Msg("forbidden-participant-status"))?;
    let value = |name: &str| field(&form, name).unwrap_or("").trim().to_owned();
    let typed =
        SetForm { status: value("status"), effective_from: value("effective_from"), reason: value("reason") };
    let req = crate::service::participants::SetRequest {
        status: typed.status.clone(),
        effective_from: (!typed.effective_from.is_empty()).then(|| typed.effective_from.clone()),
        reason: (!typed.reason.is_empty()).then(|| typed.reason.clone()),
        ..Default::default()
    };
    let mut errors = BTreeMap::new();
    match crate::api::set_participant(&console.shared, &code, &req).await {
        Ok(d) => {
            tracing::info!(user = %signed.account.name, participant = %d.code, status = %typed.status, "participant status set from the console");
            return Ok(Redirect::to(&format!("/participants/{}", d.code)).into_response());
        }
        Err(e) => match e.into_problems() {
            Ok(problems) => {
                for p in problems {
                    let message = super::problem_text(signed.tr(), &p);
                    let at = if ["status", "effective_from", "reason"].contains(&p.field.as_str()) {
                        p.field
                    } else {
                        "status".to_owned()
                    };
                    errors.entry(at).or_insert(message);
                }
            }
            Err(e) => return Err(signed.localize(e)),
        },
    }
    let mut page = detail_page(&console, &signed, &code)?;
    page.form = typed;
    page.errors = errors;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}
