//! The dashboard: the node at a glance, from the same status the API answers.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;

use super::{render, Console, Nav, PageResult, SignedIn};
use crate::service::i18n::Catalogue;

/// A partner's link, as the dashboard shows it.
#[derive(Debug)]
struct LinkRow {
    participant: String,
    authority: String,
    up: bool,
    last_delivery: String,
    queued: String,
    last_error: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    participant: String,
    authority: String,
    fingerprint: String,
    certificates_out: String,
    certificates_in: String,
    under_vigilance: String,
    log_entries: String,
    warnings: Vec<String>,
    links: Vec<LinkRow>,
}

pub(super) async fn page(State(console): State<Arc<Console>>, signed: SignedIn) -> PageResult {
    let status = crate::api::status_view(&console.shared).map_err(|e| signed.localize(e))?;
    let tr = signed.tr();
    let links = status
        .peers
        .iter()
        .filter(|p| !p.removed)
        .map(|p| LinkRow {
            participant: p.participant.to_string(),
            authority: p.authority.clone(),
            up: p.link.as_ref().is_some_and(|l| l.connected),
            last_delivery: p
                .link
                .as_ref()
                .and_then(|l| l.last_delivery)
                .map_or_else(|| "—".to_owned(), |t| tr.datetime(t)),
            queued: tr.number(p.queued),
            last_error: p.link.as_ref().and_then(|l| l.last_error.clone()).unwrap_or_default(),
        })
        .collect();
    Ok(render(&DashboardPage {
        tr,
        nav: Some(signed.nav()),
        participant: status.participant.to_string(),
        authority: status.authority,
        fingerprint: status.fingerprint,
        certificates_out: tr.number(status.certificates_out),
        certificates_in: tr.number(status.certificates_in),
        under_vigilance: tr.number(status.certificates_under_vigilance),
        log_entries: tr.number(status.log_entries),
        warnings: status.warnings,
        links,
    }))
}
