//! The dashboard: the node at a glance, from the same status the API answers.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;

use super::{render, Console, Nav, PageResult, SignedIn};

/// A partner's link, as the dashboard shows it.
#[derive(Debug)]
struct LinkRow {
    participant: String,
    authority: String,
    up: bool,
    last_delivery: String,
    queued: u64,
    last_error: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Option<Nav>,
    participant: String,
    authority: String,
    fingerprint: String,
    certificates_out: u64,
    certificates_in: u64,
    under_vigilance: u64,
    log_entries: u64,
    warnings: Vec<String>,
    links: Vec<LinkRow>,
}

pub(super) async fn page(State(console): State<Arc<Console>>, signed: SignedIn) -> PageResult {
    let status = crate::api::status_view(&console.shared)?;
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
                .map_or_else(|| "—".to_owned(), |t| t.to_string()),
            queued: p.queued,
            last_error: p.link.as_ref().and_then(|l| l.last_error.clone()).unwrap_or_default(),
        })
        .collect();
    Ok(render(&DashboardPage {
        nav: Some(signed.nav()),
        participant: status.participant.to_string(),
        authority: status.authority,
        fingerprint: status.fingerprint,
        certificates_out: status.certificates_out,
        certificates_in: status.certificates_in,
        under_vigilance: status.certificates_under_vigilance,
        log_entries: status.log_entries,
        warnings: status.warnings,
        links,
    }))
}
