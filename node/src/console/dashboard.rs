//! The dashboard: the node at a glance, from the same status the API answers, and the
//! certificates counted by status.
//!
//! Counting by status reads every certificate record (the status of one not confirmed by its
//! expiry changes with the day, so no counter can be kept in the store): on a node of 100,000
//! certificates that is longer than a page may take. So the counts are kept here for
//! [`COUNTS_FRESH`], recounted off the async workers, and a page waits at most
//! [`COUNTS_WAIT`] for a recount before it shows the last counts with their time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::State;

use super::{render, Console, Nav, PageResult, SignedIn};
use crate::service::i18n::Catalogue;
use crate::store::CertStatus;

/// How long counts by status are shown without a recount.
pub const COUNTS_FRESH: Duration = Duration::from_secs(30);
/// How long a page waits for a recount before showing the last counts.
pub const COUNTS_WAIT: Duration = Duration::from_millis(20);

/// The last counts by status, and whether a recount is running.
#[derive(Debug, Default)]
pub struct StatusCounts {
    inner: Mutex<CountsState>,
}

#[derive(Debug, Default)]
struct CountsState {
    last: Option<Counted>,
    counting: bool,
}

#[derive(Debug, Clone)]
struct Counted {
    at: Instant,
    /// When they were counted, by the node's clock.
    at_time: kp_protocol::Timestamp,
    counts: Vec<(CertStatus, u64)>,
}

impl StatusCounts {
    /// Fresh counts, or the last ones (`None` before the first count ends).
    async fn get(&self, console: &Arc<Console>) -> Option<Counted> {
        let start = {
            let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = state.last.as_ref().is_some_and(|c| c.at.elapsed() < COUNTS_FRESH);
            if fresh || state.counting {
                return state.last.clone();
            }
            state.counting = true;
            true
        };
        debug_assert!(start);
        let c = console.clone();
        let task = tokio::task::spawn_blocking(move || {
            let shared = &c.shared;
            let now = shared.now();
            let result = crate::queries::count_by_status(&shared.store, now.date());
            let mut state = c.counts.inner.lock().unwrap_or_else(|p| p.into_inner());
            state.counting = false;
            match result {
                Ok(counts) => {
                    state.last = Some(Counted { at: Instant::now(), at_time: now, counts });
                }
                Err(e) => tracing::warn!(error = %e, "the dashboard could not count certificates by status"),
            }
        });
        let _ = tokio::time::timeout(COUNTS_WAIT, task).await;
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).last.clone()
    }
}

/// A status and how many certificates are in it.
#[derive(Debug)]
struct StatusCount {
    status: &'static str,
    /// The status's name in the user's language.
    name: String,
    count: String,
}

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
    /// Certificates by status (`None` while the first count runs), and when they were counted.
    by_status: Option<Vec<StatusCount>>,
    counted_at: String,
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
    let counted = console.counts.get(&console).await;
    let counted_at = counted.as_ref().map(|c| tr.datetime(c.at_time)).unwrap_or_default();
    let by_status = counted.map(|c| {
        c.counts
            .into_iter()
            .map(|(s, count)| StatusCount {
                status: s.as_str(),
                name: tr.t(&format!("status-{}", s.as_str())),
                count: tr.number(count),
            })
            .collect()
    });
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
        by_status,
        counted_at,
    }))
}
