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

use super::{field, render, Console, Msg, Nav, PageError, PageResult, SignedIn};
use crate::api::ListQuery;
use crate::queries::CertView;
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;
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
    direction: String,
    peer: String,
    status: String,
    /// The shipment arrived after the certificate expired (marked beside the status).
    late: bool,
    issued_on: String,
    parcels: String,
    carats: String,
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct ListPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    direction: String,
    status: String,
    peer: String,
    number: String,
    /// Each status's code and its name in the user's language.
    statuses: Vec<(&'static str, String)>,
    issued_from: String,
    issued_to: String,
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

/// A direction's name in the user's language.
fn direction_name(tr: &Catalogue, d: Direction) -> String {
    tr.t(&format!("direction-{}", direction_str(d)))
}

/// A status's name in the user's language.
fn status_name(tr: &Catalogue, s: CertStatus) -> String {
    tr.t(&format!("status-{}", s.as_str()))
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
    let tr = signed.tr();
    let mut page = ListPage {
        tr,
        nav: Some(signed.nav()),
        direction: filter.direction.trim().to_owned(),
        status: filter.status.trim().to_owned(),
        peer: filter.peer.trim().to_uppercase(),
        number: filter.number.trim().to_owned(),
        statuses: CertStatus::ALL.iter().map(|s| (s.as_str(), status_name(tr, *s))).collect(),
        issued_from: filter.issued_from.trim().to_owned(),
        issued_to: filter.issued_to.trim().to_owned(),
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
                let e = signed.localize(e);
                if e.status != StatusCode::NOT_FOUND && e.status != StatusCode::UNPROCESSABLE_ENTITY {
                    return Err(e);
                }
                page.error = Some(e.text());
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
            page.rows = views.iter().map(|v| row(tr, v)).collect();
        }
        Err(e) => match e.into_problems() {
            Ok(problems) => {
                for p in problems {
                    if p.field == "issued_from" || p.field == "issued_to" {
                        let message = date_problem(tr, &p.field, &page.issued_from, &page.issued_to);
                        page.date_errors.entry(p.field).or_insert(message);
                    } else {
                        page.error = Some(format!("{}: {}", p.field, super::problem_text(tr, &p)));
                    }
                }
            }
            Err(e) => return Err(signed.localize(e)),
        },
    }
    Ok(render(&page))
}

/// What is wrong with the date range's `field`, in the user's language: a day that is not
/// one, or the end before the start (the API's two problems with these fields).
fn date_problem(tr: &Catalogue, field: &str, from: &str, to: &str) -> String {
    let value = if field == "issued_from" { from } else { to };
    match value.parse::<kp_protocol::Date>() {
        Ok(_) => tr.t1("certificates-date-order", "from", from),
        Err(_) => tr.t1("certificates-date-invalid", "value", value),
    }
}

fn row(tr: &Catalogue, v: &CertView) -> Row {
    Row {
        number: v.number.clone(),
        direction: direction_name(tr, v.direction),
        peer: v.peer.to_string(),
        status: status_name(tr, v.status),
        late: v.late_arrival.is_some(),
        issued_on: tr.date(v.issued_on),
        parcels: tr.number(v.parcels),
        carats: tr.decimal(&v.carats),
    }
}

/// One labelled element of a certificate, as its page lists them.
#[derive(Debug)]
struct Fact {
    label: String,
    value: String,
}

/// The certificate's elements its page shows only when given: the certificate it replaces,
/// the importing member state, the parties' licences, the port of entry, the transport and
/// the container seals.
fn details(tr: &Catalogue, c: &kp_protocol::Certificate) -> Vec<Fact> {
    let c = &c.content;
    let mut out = Vec::new();
    // Labels written out in full: the catalogue test finds every key used by its literal.
    let mut fact = |label: String, value: Option<String>| {
        if let Some(value) = value {
            out.push(Fact { label, value });
        }
    };
    fact(tr.t("cert-replaces"), c.replaces.as_ref().map(ToString::to_string));
    fact(tr.t("cert-importing-member"), c.importing_member.map(|m| m.to_string()));
    fact(tr.t("cert-exporter-licence"), c.exporter.licence.as_ref().map(ToString::to_string));
    fact(tr.t("cert-importer-licence"), c.importer.licence.as_ref().map(ToString::to_string));
    if let Some(s) = &c.shipment {
        fact(tr.t("cert-port-of-entry"), s.port_of_entry.map(|p| p.to_string()));
        fact(
            tr.t("cert-transport-mode"),
            s.transport_mode.map(|m| format!("{} ({m})", tr.t(&format!("transport-mode-{m}")))),
        );
        fact(tr.t("cert-transport-document"), s.transport_document.as_ref().map(ToString::to_string));
        let seals: Vec<String> = s.container_seals.iter().map(ToString::to_string).collect();
        fact(tr.t("cert-container-seals"), (!seals.is_empty()).then(|| seals.join(", ")));
    }
    out
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
    tr: &'static Catalogue,
    nav: Option<Nav>,
    number: String,
    direction: String,
    peer: String,
    /// The status's name in the user's language, and its code (`data-status`).
    status: String,
    status_code: &'static str,
    /// Said when the shipment arrived after the certificate expired.
    late_arrival: Option<String>,
    /// Status `replaced`: the words, and the number of the certificate that replaced it.
    replaced_by: Option<(String, String)>,
    issued_on: String,
    expires_on: String,
    parcels: String,
    carats: String,
    value_usd: String,
    exporter: String,
    importer: String,
    /// What the certificate gives beyond the figures above (format 2's elements), each only
    /// when present.
    details: Vec<Fact>,
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

fn timeline(tr: &Catalogue, v: &CertView) -> Vec<Step> {
    let mut steps = Vec::new();
    let issuer = v.certificate.as_ref().map_or_else(
        || tr.t("timeline-exporting-authority"),
        |c| format!("{} ({})", c.content.issuing_authority, c.content.exporting_participant),
    );
    // Who on this node did it: the officer its log entry names.
    let by = |what: String, o: &Option<crate::store::Officer>| match o {
        Some(o) => tr.format("timeline-officer", &[("step", what.into()), ("officer", o.to_string().into())]),
        None => what,
    };
    let o = &v.officers;
    steps.push(Step {
        at: tr.datetime(v.signed_at),
        what: by(tr.t1("timeline-issued", "issuer", issuer), &o.issued),
    });
    if let Some(at) = v.delivered_at {
        let what = match (&v.receipt, v.direction) {
            (Some(r), _) => tr.format(
                "timeline-delivered-receipt",
                &[
                    ("receiver", r.receiver.to_string().into()),
                    ("entry", tr.number(r.receiver_log_seq).into()),
                ],
            ),
            (None, Direction::In) => tr.t("timeline-received"),
            (None, _) => tr.t("timeline-delivered"),
        };
        steps.push(Step { at: tr.datetime(at), what });
    }
    if let Some(r) = &v.rejection {
        steps.push(Step { at: tr.datetime(r.at), what: tr.t1("timeline-refused", "detail", &r.detail) });
    }
    if let Some(c) = &v.confirmation {
        let rec = &c.record;
        let mut args = vec![
            ("parcels", fluent_count(rec.parcels)),
            ("carats", tr.decimal(&rec.carats.to_string()).into()),
            ("received_on", tr.date(rec.received_on).into()),
        ];
        let what = match &rec.discrepancy {
            Some(d) => {
                args.push(("difference", d.to_string().into()));
                tr.format("timeline-confirmed-discrepancy", &args)
            }
            None => tr.format("timeline-confirmed", &args),
        };
        steps.push(Step { at: tr.datetime(rec.confirmed_at), what: by(what, &o.confirmed) });
    }
    if let Some(r) = &v.resolution {
        let what = tr.format(
            "timeline-resolved",
            &[
                ("by", r.resolved_by.clone().into()),
                ("participant", r.participant.to_string().into()),
                ("note", r.note.clone().into()),
            ],
        );
        steps.push(Step { at: tr.datetime(r.resolved_at), what: by(what, &o.resolved) });
    }
    if let Some(void) = &v.void {
        steps.push(Step {
            at: tr.datetime(void.voided_at),
            what: by(tr.t1("timeline-voided", "reason", &void.reason), &o.voided),
        });
    }
    steps
}

/// A count as a Fluent number (which picks the plural form).
fn fluent_count(n: impl Into<u64>) -> fluent_bundle::FluentValue<'static> {
    fluent_bundle::FluentValue::from(n.into())
}

fn certificate_page(
    console: &Console,
    signed: &SignedIn,
    number: &str,
) -> Result<CertificatePage, PageError> {
    let v = crate::api::show_view(&console.shared, number).map_err(|e| signed.localize(e))?;
    let can_void = signed.account.role.may(Action::Void)
        && crate::api::void_refusal(&console.shared, number).map_err(|e| signed.localize(e))?.is_none();
    let can_confirm = signed.account.role.may(Action::ConfirmImport)
        && crate::api::confirm_refusal(&console.shared, number).map_err(|e| signed.localize(e))?.is_none();
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
    let tr = signed.tr();
    Ok(CertificatePage {
        tr,
        nav: Some(signed.nav()),
        number: v.number.clone(),
        direction: direction_name(tr, v.direction),
        peer: v.peer.to_string(),
        status: status_name(tr, v.status),
        status_code: v.status.as_str(),
        late_arrival: v.late_arrival.map(|l| {
            tr.t2(
                "cert-late-arrival",
                "received_on",
                tr.date(l.received_on),
                "expires_on",
                tr.date(v.expires_on),
            )
        }),
        replaced_by: v
            .replaced_by
            .as_ref()
            .map(|r| (tr.t1("cert-replaced-by", "at", tr.datetime(r.at)), r.by.to_string())),
        issued_on: tr.date(v.issued_on),
        expires_on: tr.date(v.expires_on),
        parcels: tr.number(v.parcels),
        carats: tr.decimal(&v.carats),
        value_usd: tr.decimal(&v.value_usd),
        exporter,
        importer,
        details: v.certificate.as_ref().map(|c| details(tr, c)).unwrap_or_default(),
        timeline: timeline(tr, &v),
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
    signed.require(Action::Void, Msg("forbidden-void"))?;
    let reason = field(&form, "reason").unwrap_or("").trim();
    if reason.is_empty() {
        let mut page = certificate_page(&console, &signed, &number)?;
        page.reason_error = Some(page.tr.t("void-reason-missing"));
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
    }
    match crate::api::void_certificate(&console.shared, &number, reason, &signed.officer()).await {
        Ok(v) => {
            tracing::info!(user = %signed.account.name, certificate = %v.number, "certificate voided from the console");
            Ok(Redirect::to(&format!("/certificates/{}", v.number)).into_response())
        }
        Err(e) => {
            // The reason's problems are shown at the form; anything else takes the page.
            let problems = e.into_problems().map_err(|e| signed.localize(e))?;
            let mut page = certificate_page(&console, &signed, &number)?;
            let said: Vec<String> = problems.iter().map(|p| super::problem_text(page.tr, p)).collect();
            page.reason_error = Some(said.join("; "));
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
    signed.require(Action::ConfirmImport, Msg("forbidden-confirm"))?;
    let value = |name: &str| field(&form, name).unwrap_or("").trim().to_owned();
    let typed = ConfirmForm {
        received_on: value("received_on"),
        parcels: value("parcels"),
        carats: value("carats"),
        remarks: value("remarks"),
    };
    let mut errors = BTreeMap::new();
    let parcels = typed.parcels.parse::<u32>().unwrap_or_else(|_| {
        errors
            .insert("parcels".to_owned(), signed.tr().t1("confirm-parcels-invalid", "value", &typed.parcels));
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
                        let message = super::problem_text(signed.tr(), &p);
                        errors.entry(p.field).or_insert(message);
                    }
                }
                Err(e) => return Err(signed.localize(e)),
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
    signed: SignedIn,
    Path(number): Path<String>,
) -> PageResult {
    let text = crate::api::kpc_text(&console.shared, &number).map_err(|e| signed.localize(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(extra: &str) -> kp_protocol::Certificate {
        let json = format!(
            r#"{{"number": "RU-2026-000142", "exporting_participant": "RU", {extra}
            "issuing_authority": "Gokhran of Russia",
            "issued_on": "2026-03-02", "expires_on": "2026-04-30",
            "parcels": [{{"hs_code": "7102.31", "carats": "1.00", "value_usd": "10.00", "origin": "RU"}}]}}"#
        );
        let ctx = kp_protocol::ValidationContext {
            today: kp_protocol::Date::from_ymd(2026, 3, 2).unwrap(),
            max_validity_days: Some(60),
            participants: &kp_protocol::AnyParticipant,
            exporter: None,
            importer: None,
        };
        kp_protocol::CertificateDraft::from_json(&json, &ctx).unwrap().into_certificate(|| unreachable!())
    }

    #[test]
    fn the_page_lists_format_2_elements_only_when_given_in_the_users_language() {
        let cert = certificate(
            r#""replaces": "RU-2026-000101", "importing_participant": "EU", "importing_member": "BE",
            "exporter": {"name": "ALROSA", "address": "Mirny", "licence": "RU-EXP-2026-0417"},
            "importer": {"name": "ADT", "address": "Antwerpen", "licence": "BE-IMP-77"},
            "shipment": {"port_of_entry": "BE ANR", "transport_mode": "rail",
                "transport_document": "CIM 0042", "container_seals": ["S-1", "S-2"]},"#,
        );
        let shown = |code: &str| -> Vec<(String, String)> {
            details(crate::service::i18n::catalogue(code), &cert)
                .into_iter()
                .map(|f| (f.label, f.value))
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(l, v)| ((*l).to_owned(), (*v).to_owned())).collect()
        };
        assert_eq!(
            shown("en"),
            pairs(&[
                ("Replaces", "RU-2026-000101"),
                ("Importing member state", "BE"),
                ("Exporter's licence", "RU-EXP-2026-0417"),
                ("Importer's licence", "BE-IMP-77"),
                ("Port of entry", "BEANR"),
                ("Transport mode", "Rail (rail)"),
                ("Transport document", "CIM 0042"),
                ("Container seals", "S-1, S-2"),
            ])
        );
        let ru = shown("ru");
        assert_eq!(ru[5], ("Вид транспорта".to_owned(), "Железнодорожный (rail)".to_owned()), "{ru:?}");
        let plain = certificate(
            r#""importing_participant": "IN",
            "exporter": {"name": "ALROSA", "address": "Mirny"},
            "importer": {"name": "Kiran Gems", "address": "Mumbai"},
            "shipment": {"port_of_export": "Moscow Sheremetyevo"},"#,
        );
        assert!(
            details(crate::service::i18n::catalogue("en"), &plain).is_empty(),
            "nothing but what is given"
        );
    }
}
