//! The `statistics` tag: trade statistics and partner reconciliation, computed off the async
//! workers.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kp_protocol::{Date, ParticipantCode};
use serde::Deserialize;

use super::{invalid, ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::state::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub period: String,
    pub by: Option<String>,
    pub basis: Option<String>,
}

#[utoipa::path(get, path = "/v1/stats", tag = "statistics",
    params(("period" = String, Query, description = "2026-Q3, 2026-H1, 2026-07, 2026, or 2026-07-01..2026-09-30"),
        ("by" = Option<String>, Query, description = "partner, hs_code, or both (default partner,hs_code)"),
        ("basis" = Option<String>, Query, description = "issued (default: imports by the certificate's date of issue) or imported (by the confirmation's received_on; unconfirmed imports are left out and counted in unconfirmed_imports)")),
    responses((status = 200, body = crate::report::stats::StatsReport), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn stats(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<crate::report::stats::StatsReport>> {
    stats_report(&shared, q).await.map(Json)
}

/// The statistics a [`StatsQuery`] asks for (each problem naming its parameter), computed off
/// the async workers: the one report of the API, `kpnode stats` against a daemon, and the
/// console.
pub async fn stats_report(
    shared: &Arc<Shared>,
    q: StatsQuery,
) -> Result<crate::report::stats::StatsReport, ApiError> {
    let period: crate::report::stats::Period =
        q.period.parse().map_err(|e: String| invalid("invalid_query", "period", e))?;
    let by: crate::report::stats::By =
        q.by.as_deref()
            .unwrap_or("partner,hs_code")
            .parse()
            .map_err(|e: String| invalid("invalid_query", "by", e))?;
    let basis: crate::report::stats::Basis = q
        .basis
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| invalid("invalid_query", "basis", e))?
        .unwrap_or_default();
    let (store, me) = (shared.store.clone(), shared.me);
    // A scan of the log: off the async workers.
    let report =
        tokio::task::spawn_blocking(move || crate::report::stats::compute(&store, me, &period, by, basis))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(report)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    pub partner: Option<String>,
    pub period: Option<String>,
    pub on: Option<String>,
}

#[utoipa::path(get, path = "/v1/reconcile", tag = "statistics",
    params(("partner" = Option<String>, Query, description = "only this partner"),
        ("period" = Option<String>, Query, description = "only certificates issued in this period"),
        ("on" = Option<String>, Query, description = "judge expiry as of this day (default today)")),
    responses((status = 200, body = crate::report::stats::Reconciliation), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn reconcile(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ReconcileQuery>,
) -> ApiResult<Json<crate::report::stats::Reconciliation>> {
    reconciliation(&shared, q).await.map(Json)
}

/// The reconciliation a [`ReconcileQuery`] asks for (each problem naming its parameter): the
/// one of the API, `kpnode reconcile` against a daemon, and the console.
pub async fn reconciliation(
    shared: &Arc<Shared>,
    q: ReconcileQuery,
) -> Result<crate::report::stats::Reconciliation, ApiError> {
    let partner = q
        .partner
        .as_deref()
        .map(str::parse::<ParticipantCode>)
        .transpose()
        .map_err(|e| invalid("invalid_query", "partner", e.to_string()))?;
    let period = q
        .period
        .as_deref()
        .map(str::parse::<crate::report::stats::Period>)
        .transpose()
        .map_err(|e| invalid("invalid_query", "period", e))?;
    let on = match q.on.as_deref() {
        Some(d) => d.parse::<Date>().map_err(|e| invalid("invalid_query", "on", e.to_string()))?,
        None => shared.now().date(),
    };
    let (store, me) = (shared.store.clone(), shared.me);
    let report = tokio::task::spawn_blocking(move || {
        crate::report::stats::reconcile(&store, me, partner, period.as_ref(), on)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(report)
}
