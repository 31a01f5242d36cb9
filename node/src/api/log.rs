//! The `log` tag: the hash-chained log and its audit.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::queries;
use crate::state::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/log", tag = "log",
    params(("from" = Option<u64>, Query, description = "first entry (default 1)"),
        ("limit" = Option<usize>, Query, description = "at most this many (default 1000, maximum 10000)")),
    responses((status = 200, body = Vec<queries::LogEntryView>), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn log(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<Vec<queries::LogEntryView>>> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(queries::log_entries(&shared.store, q.from.unwrap_or(1), limit)?))
}

/// The outcome of a log audit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogVerification {
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<kp_exchange::audit::AuditReport>,
    /// The first entry at fault, if the problem is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/v1/log/verify", tag = "log",
    responses((status = 200, description = "The audit's outcome (verified or the first bad entry)", body = LogVerification), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
pub(super) async fn log_verify(State(shared): State<Arc<Shared>>) -> ApiResult<Json<LogVerification>> {
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        let own = s.keys.lock().unwrap_or_else(|p| p.into_inner()).history.clone();
        kp_exchange::audit::verify_log(&s.store, s.me, &own, &s.trust.get(), |_| {})
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(match result {
        Ok(report) => LogVerification { verified: true, report: Some(report), seq: None, error: None },
        // A store that cannot be read says nothing about the log: 503, not "not verified".
        Err(kp_exchange::audit::AuditError::Store(e)) if e.is_io() => return Err(e.into()),
        Err(e) => LogVerification { verified: false, report: None, seq: e.seq(), error: Some(e.to_string()) },
    }))
}
