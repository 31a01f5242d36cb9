//! The `participants` tag: the participant registry, its changes and signed lists.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kp_protocol::{ParticipantCode, Problem};
use serde::{Deserialize, Serialize};

use super::{invalid, parse_body, ApiError, ApiPath, ApiResult, ErrorBody, JsonBody};
use crate::service::participants;
use crate::state::Shared;
use kp_exchange::engine::{EngineError, Outcome};

pub(super) fn participant_code(code: &str) -> ApiResult<ParticipantCode> {
    code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?}: {e}")))
}

#[utoipa::path(get, path = "/v1/participants", tag = "participants",
    responses((status = 200, description = "Every participant in force today", body = Vec<participants::ParticipantView>),
        (status = 401, body = ErrorBody)))]
pub(super) async fn participants_list(
    State(shared): State<Arc<Shared>>,
) -> Json<Vec<participants::ParticipantView>> {
    Json(participants::list(&shared.registry.get(), shared.now().date()))
}

#[utoipa::path(get, path = "/v1/participants/{code}", tag = "participants",
    params(("code" = String, Path, description = "A participant or member state code")),
    responses((status = 200, body = participants::ParticipantDetail), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn participants_show(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<participants::ParticipantDetail>> {
    let code = participant_code(&code)?;
    participants::show(&shared.registry.get(), shared.now().date(), code)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("{code} is not in this node's participant registry")))
}

#[utoipa::path(post, path = "/v1/participants/{code}", tag = "participants",
    params(("code" = String, Path, description = "The participant to change or add")),
    request_body = participants::SetRequest,
    responses((status = 200, description = "Recorded (signed, in the log) and in force from its date", body = participants::ParticipantDetail),
        (status = 413, body = ErrorBody), (status = 422, description = "Every problem, by field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn participants_set(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<participants::ParticipantDetail>> {
    let req: participants::SetRequest = parse_body(&body)?;
    set_participant(&shared, &code, &req).await.map(Json)
}

/// Records a change of a participant's entry (signed, in the log), each problem naming its
/// field. The one way to set a status, for the API (and so the CLI against a daemon) and the
/// console alike.
pub async fn set_participant(
    shared: &Arc<Shared>,
    code: &str,
    req: &participants::SetRequest,
) -> Result<participants::ParticipantDetail, ApiError> {
    let code = participant_code(code)?;
    let today = shared.now().date();
    let entry = participants::prepare_set(&shared.registry.get(), today, code, req)
        .map_err(|problems| ApiError::Invalid { error: "invalid_request", problems })?;
    tracing::info!(participant = %code, status = %entry.status, from = %entry.effective_from, "participant registry changed by the operator");
    match shared
        .actor
        .call(kp_exchange::engine::Command::record_participant(
            &shared.signer,
            entry,
            "operator",
            None,
            Some(shared.token_officer()),
        )?)
        .await?
    {
        Outcome::Done => {}
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    participants::show(&shared.registry.get(), shared.now().date(), code)
        .ok_or_else(|| ApiError::Internal("the recorded participant is missing".into()))
}

/// A signed participant list to import.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The armored list (`kpnode participants export`).
    pub list: String,
    /// Only report what would change.
    #[serde(default)]
    pub dry_run: bool,
}

#[utoipa::path(post, path = "/v1/participants/import", tag = "participants", request_body = ImportRequest,
    responses((status = 200, description = "What changed (or would change)", body = participants::ImportPlan),
        (status = 413, body = ErrorBody), (status = 422, description = "Not a valid, verifiable list", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn participants_import(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<participants::ImportPlan>> {
    let req: ImportRequest = parse_body(&body)?;
    let now = shared.now();
    let plan = {
        let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        participants::prepare_import(
            &shared.registry.get(),
            now,
            shared.me,
            &keys.history,
            &shared.trust.get(),
            &req.list,
            shared.config.keys.tls_grace_period.as_millis() as i64,
        )
        .map_err(|p| ApiError::Invalid {
            error: "invalid_list",
            problems: p.into_iter().map(|m| Problem::new("list", m)).collect(),
        })?
    };
    let mut plan = plan;
    if !req.dry_run {
        for entry in std::mem::take(&mut plan.changes) {
            let origin = Some(plan.origin.clone());
            let command = kp_exchange::engine::Command::record_participant(
                &shared.signer,
                entry.clone(),
                &plan.source,
                origin,
                Some(shared.token_officer()),
            )?;
            match shared.actor.call(command).await? {
                Outcome::Done => {
                    tracing::info!(participant = %entry.code, status = %entry.status, source = %plan.source, "participant registry changed by an imported list");
                    plan.changes.push(entry);
                }
                // Another import recorded a newer change since this one was planned.
                Outcome::Refused(EngineError::OlderList(why)) => {
                    tracing::info!(participant = %entry.code, source = %plan.source, %why, "imported entry ignored");
                    plan.ignored.push(participants::IgnoredEntry { entry, why });
                }
                other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            }
        }
    }
    Ok(Json(plan))
}

/// This node's registry as a signed list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedList {
    pub list: String,
}

#[utoipa::path(get, path = "/v1/participants/export", tag = "participants",
    responses((status = 200, description = "The registry in force, signed by this node", body = ExportedList),
        (status = 401, body = ErrorBody),
        (status = 503, description = "The signing key's token cannot sign now", body = ErrorBody)))]
pub(super) async fn participants_export(State(shared): State<Arc<Shared>>) -> ApiResult<Json<ExportedList>> {
    Ok(Json(ExportedList {
        list: participants::export(&shared.registry.get(), shared.now().date(), &shared.signer)?,
    }))
}
