//! Statistics (auditors and supervisors): the period picker, the tables, the chart, the CSV
//! download, and the reconciliation with what needs attention; the reports are `kpnode
//! stats`'s and `kpnode reconcile`'s ([`crate::api::stats_report`],
//! [`crate::api::reconciliation`], [`crate::report::chart::render`],
//! [`crate::report::stats::to_csv`]).
//!
//! Both reports read every certificate (or log entry) of the period: on a node of 100,000
//! certificates that takes far longer than a page may. So they are computed off the async
//! workers and kept per period and basis for [`FRESH`] ([`StatsCache`]); a page waits at most
//! [`PAGE_WAIT`] for a computation, then shows the last figures of that period with their
//! time, or says they are being computed. At most [`MAX_COMPUTING`] periods are computed at
//! once and [`MAX_CACHED`] kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{render, Console, Msg, Nav, PageError, PageResult, SignedIn};
use crate::report::stats::{Finding, Flow, Reconciliation, StatsReport};
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;

/// How long a period's figures are shown without computing them again.
pub const FRESH: Duration = Duration::from_secs(60);
/// How long the page waits for a computation before showing the last figures.
pub const PAGE_WAIT: Duration = Duration::from_millis(30);
/// How long the chart and the CSV wait for a computation (they are downloads, not pages).
pub const DOWNLOAD_WAIT: Duration = Duration::from_secs(60);
/// Periods computed at once at most; beyond that a new period is answered 503.
pub const MAX_COMPUTING: usize = 2;
/// Periods whose figures are kept at most.
pub const MAX_CACHED: usize = 32;

/// Both reports of one period and basis, or the error that stopped them.
#[derive(Debug)]
struct Computed {
    at: Instant,
    /// When they were computed, by the node's clock.
    at_time: kp_protocol::Timestamp,
    reports: Result<(StatsReport, Reconciliation), (StatusCode, String)>,
}

#[derive(Debug, Default)]
struct Slot {
    last: Option<Arc<Computed>>,
    computing: bool,
}

/// The figures of the periods asked for lately (see the module's documentation).
#[derive(Debug, Default)]
pub struct StatsCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

/// Figures to show, and whether newer ones are being computed.
struct Figures {
    computed: Arc<Computed>,
    stale: bool,
}

impl StatsCache {
    /// The figures of `period` (already checked to parse) and `basis`, computing them when
    /// they are older than [`FRESH`] and waiting for that at most `wait`; `None` when there are
    /// none yet.
    async fn get(
        &self,
        console: &Arc<Console>,
        period: &str,
        basis: &str,
        wait: Duration,
        tr: &'static Catalogue,
    ) -> Result<Option<Figures>, PageError> {
        let key = (period.to_owned(), basis.to_owned());
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let computing = slots.values().filter(|s| s.computing).count();
            let slot = slots.get(&key);
            let fresh = slot.and_then(|s| s.last.as_ref()).is_some_and(|c| c.at.elapsed() < FRESH);
            let running = slot.is_some_and(|s| s.computing);
            if !fresh && !running {
                if computing >= MAX_COMPUTING {
                    if let Some(last) = slot.and_then(|s| s.last.clone()) {
                        return Ok(Some(Figures { computed: last, stale: true }));
                    }
                    let mut e = PageError::new(StatusCode::SERVICE_UNAVAILABLE, tr.t("statistics-busy"));
                    e.tr = Some(tr);
                    return Err(e);
                }
                if !slots.contains_key(&key) && slots.len() >= MAX_CACHED {
                    // Room for this period: forget the oldest figures not being computed.
                    let oldest = slots
                        .iter()
                        .filter(|(_, s)| !s.computing)
                        .min_by_key(|(_, s)| s.last.as_ref().map(|c| c.at))
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        slots.remove(&k);
                    }
                }
                slots.entry(key.clone()).or_default().computing = true;
                let c = console.clone();
                let k = key.clone();
                tokio::spawn(async move {
                    let computed = compute(&c, &k.0, &k.1).await;
                    let mut slots = c.stats.slots.lock().unwrap_or_else(|p| p.into_inner());
                    let slot = slots.entry(k).or_default();
                    slot.computing = false;
                    slot.last = Some(Arc::new(computed));
                });
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            {
                let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                let slot = slots.get(&key);
                let done = !slot.is_some_and(|s| s.computing);
                if done || Instant::now() >= deadline {
                    let last = slot.and_then(|s| s.last.clone());
                    return Ok(last.map(|c| {
                        let stale = !done || c.at.elapsed() >= FRESH;
                        Figures { computed: c, stale }
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Both reports, each the API's own.
async fn compute(console: &Arc<Console>, period: &str, basis: &str) -> Computed {
    let shared = &console.shared;
    let at_time = shared.now();
    let reports = async {
        let q = crate::api::StatsQuery { period: period.to_owned(), by: None, basis: Some(basis.to_owned()) };
        let stats = crate::api::stats_report(shared, q).await.map_err(|e| e.status_and_message())?;
        let q = crate::api::ReconcileQuery { partner: None, period: Some(period.to_owned()), on: None };
        let rec = crate::api::reconciliation(shared, q).await.map_err(|e| e.status_and_message())?;
        Ok((stats, rec))
    }
    .await;
    Computed { at: Instant::now(), at_time, reports }
}

/// The period picker's fields, as typed; empty meaning the default.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Picker {
    #[serde(default)]
    period: String,
    #[serde(default)]
    basis: String,
    #[serde(default)]
    measure: String,
}

#[derive(Debug)]
struct FigureRow {
    /// The flow's name in the user's language.
    flow: String,
    partner: String,
    hs_code: String,
    certificates: String,
    parcels: String,
    carats: String,
    value_usd: String,
}

#[derive(Debug)]
struct Attention {
    partner: String,
    /// "discrepancy", "unconfirmed", or "not_confirmed_here".
    kind: &'static str,
    number: String,
    expires_on: String,
    detail: String,
}

#[derive(Debug)]
struct PartnerLine {
    partner: String,
    sent: String,
    confirmed: String,
    awaiting: String,
    received: String,
    resolved: String,
    /// Confirmations received after the certificate expired, either way.
    late: String,
}

#[derive(Template)]
#[template(path = "statistics.html")]
struct StatisticsPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    period: String,
    basis: String,
    measure: String,
    period_error: Option<String>,
    /// The query string of this report, for the chart and the CSV.
    query: String,
    report: Option<Report>,
    /// When the figures shown were computed.
    computed_at: String,
    /// Newer figures than those shown are being computed.
    stale: bool,
    /// No figures of this period yet: they are being computed.
    pending: bool,
}

#[derive(Debug)]
struct Report {
    label: String,
    start: String,
    end: String,
    rows: Vec<FigureRow>,
    totals: Vec<FigureRow>,
    /// How many voided certificates are left out, said (`None` when none are).
    voided_note: Option<String>,
    /// How many imports are left out for want of a confirmation, said.
    unconfirmed_note: Option<String>,
    partners: Vec<PartnerLine>,
    attention: Vec<Attention>,
}

/// A flow's name in the user's language.
fn flow(tr: &Catalogue, f: Flow) -> String {
    match f {
        Flow::Export => tr.t("statistics-flow-export"),
        Flow::Import => tr.t("statistics-flow-import"),
    }
}

fn figures_of(tr: &Catalogue, rows: &[crate::report::stats::Row]) -> Vec<FigureRow> {
    rows.iter()
        .map(|r| FigureRow {
            flow: flow(tr, r.flow),
            partner: r.partner.map(|p| p.to_string()).unwrap_or_default(),
            hs_code: r.hs_code.as_ref().map(|h| h.to_string()).unwrap_or_default(),
            certificates: tr.number(r.certificates),
            parcels: tr.number(r.parcels),
            carats: tr.decimal(&r.carats),
            value_usd: tr.decimal(&r.value_usd),
        })
        .collect()
}

fn attention(tr: &Catalogue, r: &Reconciliation) -> (Vec<PartnerLine>, Vec<Attention>) {
    let mut lines = Vec::new();
    let mut out = Vec::new();
    for p in &r.partners {
        lines.push(PartnerLine {
            partner: p.partner.to_string(),
            sent: tr.number(p.sent),
            confirmed: tr.number(p.confirmed),
            awaiting: tr.number(p.awaiting_confirmation),
            received: tr.number(p.received),
            resolved: tr.number(p.resolved.len() as u64),
            late: tr.number(p.late_arrivals.len() as u64),
        });
        let mut add = |kind: &'static str, findings: &[Finding]| {
            out.extend(findings.iter().map(|f| Attention {
                partner: p.partner.to_string(),
                kind,
                number: f.number.clone(),
                expires_on: tr.date(f.expires_on),
                detail: f.detail.clone(),
            }))
        };
        add("discrepancy", &p.discrepancies);
        add("unconfirmed", &p.unconfirmed_past_expiry);
        add("not_confirmed_here", &p.not_confirmed_here);
    }
    (lines, out)
}

/// The picker's period, or this year's (a quarter alone may hold nothing yet).
fn period_of(console: &Console, picker: &Picker) -> String {
    let typed = picker.period.trim();
    if typed.is_empty() {
        console.shared.now().date().ymd().0.to_string()
    } else {
        typed.to_owned()
    }
}

fn basis_of(picker: &Picker) -> String {
    if picker.basis.trim() == "imported" { "imported" } else { "issued" }.to_owned()
}

fn query_of(period: &str, basis: &str, measure: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'.' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!("period={}&basis={}&measure={}", enc(period), enc(basis), enc(measure))
}

/// The period as typed, checked; the problem in plain words, in the user's language, if it
/// is not one.
fn check_period(tr: &Catalogue, period: &str) -> Result<(), String> {
    period
        .parse::<crate::report::stats::Period>()
        .map(|_| ())
        .map_err(|why| tr.t2("statistics-period-invalid", "value", period, "why", why))
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, Msg("forbidden-statistics-see"))?;
    let period = period_of(&console, &picker);
    let basis = basis_of(&picker);
    let measure = if picker.measure.trim() == "carats" { "carats" } else { "usd" }.to_owned();
    let tr = signed.tr();
    let mut page = StatisticsPage {
        tr,
        nav: Some(signed.nav()),
        query: query_of(&period, &basis, &measure),
        period,
        basis,
        measure,
        period_error: None,
        report: None,
        computed_at: String::new(),
        stale: false,
        pending: false,
    };
    if let Err(why) = check_period(tr, &page.period) {
        page.period_error = Some(why);
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
    }
    let Some(figures) = console.stats.get(&console, &page.period, &page.basis, PAGE_WAIT, tr).await? else {
        page.pending = true;
        return Ok(render(&page));
    };
    let (r, rec) = match &figures.computed.reports {
        Ok(reports) => reports,
        Err((status, message)) => return Err(signed.localize(PageError::new(*status, message.clone()))),
    };
    let (partners, attention) = attention(tr, rec);
    page.computed_at = tr.datetime(figures.computed.at_time);
    page.stale = figures.stale;
    page.report = Some(Report {
        label: r.period.label.clone(),
        start: tr.date(r.period.start),
        end: tr.date(r.period.end),
        rows: figures_of(tr, &r.rows),
        totals: figures_of(tr, &r.totals),
        voided_note: (r.voided_excluded > 0)
            .then(|| tr.count("statistics-voided-excluded", r.voided_excluded as usize)),
        unconfirmed_note: (r.unconfirmed_imports > 0)
            .then(|| tr.count("statistics-unconfirmed-imports", r.unconfirmed_imports as usize)),
        partners,
        attention,
    });
    Ok(render(&page))
}

/// The statistics of the picker's period for a download: waits for them (up to
/// [`DOWNLOAD_WAIT`]).
async fn report_for_download(
    console: &Arc<Console>,
    signed: &SignedIn,
    picker: &Picker,
) -> Result<StatsReport, PageError> {
    let tr = signed.tr();
    let period = period_of(console, picker);
    check_period(tr, &period)
        .map_err(|why| signed.localize(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, why)))?;
    let figures = console
        .stats
        .get(console, &period, &basis_of(picker), DOWNLOAD_WAIT, tr)
        .await?
        .ok_or_else(|| {
            signed
                .localize(PageError::new(StatusCode::SERVICE_UNAVAILABLE, tr.t("statistics-still-computing")))
        })?;
    match &figures.computed.reports {
        Ok((r, _)) => Ok(r.clone()),
        Err((status, message)) => Err(signed.localize(PageError::new(*status, message.clone()))),
    }
}

/// The chart of the picker's period, as SVG (`kpnode stats --chart`).
pub(super) async fn chart(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, Msg("forbidden-statistics-see"))?;
    let measure: crate::report::chart::Measure =
        if picker.measure.trim() == "carats" { "carats" } else { "usd" }
            .parse()
            .map_err(|e: String| signed.localize(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, e)))?;
    let report = report_for_download(&console, &signed, &picker).await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], crate::report::chart::render(&report, measure))
        .into_response())
}

/// The picker's period as CSV (`kpnode stats --csv`).
pub(super) async fn csv(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, Msg("forbidden-statistics-download"))?;
    let period = period_of(&console, &picker);
    let report = report_for_download(&console, &signed, &picker).await?;
    let name: String = period.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"kp-statistics-{name}.csv\"")),
        ],
        crate::report::stats::to_csv(&report),
    )
        .into_response())
}
