//! `POST /v1/recover/{code}`: recovery from one partner after a restore (see
//! [`crate::recover`]). `kpnode recover` calls it once per partner, so it can show progress
//! partner by partner.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kp_protocol::ParticipantCode;

use super::{invalid, ApiError, ApiPath, ApiResult, ErrorBody};
use crate::recover::{RecoverError, RecoverReport};
use crate::state::Shared;

#[utoipa::path(post, path = "/v1/recover/{code}", tag = "node",
    description = "Recovery from a partner after `kpnode restore` from an older backup: dials the partner and asks it, page by page (at most 256 items each), for this node's own traffic with it since the restored log head — the documents it delivered that this node receipted beyond that point, and copies of the documents this node sent it — checks each against this node's own key history and the partner's, and stores what this node lacks (nothing twice: a second call finds everything held). Then raises the certificate counter above the highest number of this node's the partner holds. One recovery at a time. See docs/operations.md, \"Recovery from partners\".",
    params(("code" = ParticipantCode, Path, description = "The partner's participant code")),
    responses((status = 200, description = "What was recovered", body = RecoverReport),
        (status = 404, description = "Not an active enrolled peer", body = ErrorBody),
        (status = 409, description = "A recovery is already running", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 502, description = "The partner could not be reached or broke the protocol; nothing stored so far is lost, run it again", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn recover(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<RecoverReport>> {
    let code: ParticipantCode =
        code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?} {e}")))?;
    match crate::recover::recover(&shared, code).await {
        Ok(report) => Ok(Json(report)),
        Err(e @ RecoverError::NotPeer(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ RecoverError::Busy) => Err(ApiError::Conflict(e.to_string())),
        Err(RecoverError::Store(e)) => Err(e.into()),
        Err(RecoverError::Actor(e)) => Err(e.into()),
        Err(e) => Err(ApiError::BadGateway(e.to_string())),
    }
}
