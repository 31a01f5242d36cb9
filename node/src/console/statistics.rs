//! Statistics (auditors and supervisors): the period picker, the tables, the chart, the CSV
//! download, and the reconciliation with what needs attention; the reports are `kpnode
//! stats`'s and `kpnode reconcile`'s ([`crate::api::stats_report`],
//! [`crate::api::reconciliation`], [`crate::report::chart::render`],
//! [`crate::report::stats::to_csv`]).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{render, Console, Nav, PageError, PageResult, SignedIn};
use crate::report::stats::{Finding, Flow, Reconciliation, StatsReport};
use crate::service::accounts::Action;

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
    flow: &'static str,
    partner: String,
    hs_code: String,
    certificates: u64,
    parcels: u64,
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
    sent: u64,
    confirmed: u64,
    awaiting: u64,
    received: u64,
    resolved: usize,
}

#[derive(Template)]
#[template(path = "statistics.html")]
struct StatisticsPage {
    nav: Option<Nav>,
    period: String,
    basis: String,
    measure: String,
    period_error: Option<String>,
    /// The query string of this report, for the chart and the CSV.
    query: String,
    report: Option<Report>,
}

#[derive(Debug)]
struct Report {
    label: String,
    start: String,
    end: String,
    rows: Vec<FigureRow>,
    totals: Vec<FigureRow>,
    voided_excluded: u64,
    unconfirmed_imports: u64,
    partners: Vec<PartnerLine>,
    attention: Vec<Attention>,
}

fn flow(f: Flow) -> &'static str {
    match f {
        Flow::Export => "export",
        Flow::Import => "import",
    }
}

fn figures(rows: &[crate::report::stats::Row]) -> Vec<FigureRow> {
    rows.iter()
        .map(|r| FigureRow {
            flow: flow(r.flow),
            partner: r.partner.map(|p| p.to_string()).unwrap_or_default(),
            hs_code: r.hs_code.as_ref().map(|h| h.to_string()).unwrap_or_default(),
            certificates: r.certificates,
            parcels: r.parcels,
            carats: r.carats.clone(),
            value_usd: r.value_usd.clone(),
        })
        .collect()
}

fn attention(r: &Reconciliation) -> (Vec<PartnerLine>, Vec<Attention>) {
    let mut lines = Vec::new();
    let mut out = Vec::new();
    for p in &r.partners {
        lines.push(PartnerLine {
            partner: p.partner.to_string(),
            sent: p.sent,
            confirmed: p.confirmed,
            awaiting: p.awaiting_confirmation,
            received: p.received,
            resolved: p.resolved.len(),
        });
        let mut add = |kind: &'static str, findings: &[Finding]| {
            out.extend(findings.iter().map(|f| Attention {
                partner: p.partner.to_string(),
                kind,
                number: f.number.clone(),
                expires_on: f.expires_on.to_string(),
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

async fn stats(
    console: &Console,
    period: &str,
    basis: &str,
) -> Result<Result<StatsReport, String>, PageError> {
    let q = crate::api::StatsQuery { period: period.to_owned(), by: None, basis: Some(basis.to_owned()) };
    match crate::api::stats_report(&console.shared, q).await {
        Ok(r) => Ok(Ok(r)),
        Err(e) => match e.into_problems() {
            Ok(problems) => Ok(Err(problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; "))),
            Err(e) => Err(e.into()),
        },
    }
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, "see the statistics")?;
    let period = period_of(&console, &picker);
    let basis = basis_of(&picker);
    let measure = if picker.measure.trim() == "carats" { "carats" } else { "usd" }.to_owned();
    let mut page = StatisticsPage {
        nav: Some(signed.nav()),
        query: query_of(&period, &basis, &measure),
        period,
        basis,
        measure,
        period_error: None,
        report: None,
    };
    match stats(&console, &page.period, &page.basis).await? {
        Err(why) => {
            page.period_error = Some(why);
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
        }
        Ok(r) => {
            let q = crate::api::ReconcileQuery { partner: None, period: Some(page.period.clone()), on: None };
            let rec = crate::api::reconciliation(&console.shared, q).await.map_err(PageError::from)?;
            let (partners, attention) = attention(&rec);
            page.report = Some(Report {
                label: r.period.label.clone(),
                start: r.period.start.to_string(),
                end: r.period.end.to_string(),
                rows: figures(&r.rows),
                totals: figures(&r.totals),
                voided_excluded: r.voided_excluded,
                unconfirmed_imports: r.unconfirmed_imports,
                partners,
                attention,
            });
        }
    }
    Ok(render(&page))
}

/// The chart of the picker's period, as SVG (`kpnode stats --chart`).
pub(super) async fn chart(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, "see the statistics")?;
    let measure: crate::report::chart::Measure =
        if picker.measure.trim() == "carats" { "carats" } else { "usd" }
            .parse()
            .map_err(|e: String| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let report = stats(&console, &period_of(&console, &picker), &basis_of(&picker))
        .await?
        .map_err(|why| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], crate::report::chart::render(&report, measure))
        .into_response())
}

/// The picker's period as CSV (`kpnode stats --csv`).
pub(super) async fn csv(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Query(picker): Query<Picker>,
) -> PageResult {
    signed.require(Action::Audit, "download the statistics")?;
    let period = period_of(&console, &picker);
    let report = stats(&console, &period, &basis_of(&picker))
        .await?
        .map_err(|why| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, why))?;
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
