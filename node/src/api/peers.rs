//! The `peers` tag: list, enrol and remove partner nodes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kp_protocol::ParticipantCode;
use serde::{Deserialize, Serialize};

use super::{invalid, parse_body, ApiError, ApiPath, ApiResult, ErrorBody, JsonBody};
use crate::queries;
use crate::state::Shared;
use kp_exchange::engine::{Command, EngineError, Outcome};

#[utoipa::path(get, path = "/v1/peers", tag = "peers",
    responses((status = 200, body = Vec<queries::PeerView>), (status = 401, body = ErrorBody)))]
pub(super) async fn peers(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Vec<queries::PeerView>>> {
    Ok(Json(queries::peer_views(&shared)?))
}

/// Enrolling a partner: its armored bundle and the fingerprint read over the phone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct AddPeerRequest {
    pub bundle: String,
    pub fingerprint: String,
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// Set to enrol a bundle whose fingerprint differs from the enrolled one (the partner
    /// made a new identity, confirmed by phone). The old identity is archived: no longer
    /// trusted for new documents, kept so log entries signed under it still verify. Without
    /// it such a bundle is refused (422).
    #[serde(default)]
    pub replace_identity: bool,
}

#[utoipa::path(post, path = "/v1/peers", tag = "peers", request_body = AddPeerRequest,
    responses((status = 201, description = "Trusted now; the link is dialled", body = queries::PeerView),
        (status = 413, body = ErrorBody), (status = 422, description = "Bad bundle or fingerprint mismatch; a bundle older than (or forking from) the key history held; a new fingerprint without replace_identity; a TLS key already bound to another participant", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn add_peer(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<queries::PeerView>)> {
    let req: AddPeerRequest = parse_body(&body)?;
    let officer = shared.token_officer();
    Ok((StatusCode::CREATED, Json(enrol_peer(&shared, req, officer).await?)))
}

/// Enrols a partner from its bundle and the fingerprint its authority read out: refused (422,
/// naming the field) when the bundle is bad or its fingerprint differs. The one way to enrol,
/// for the API (and so `kpnode peer add` against a daemon) and the console alike. The log
/// records the change, signed by this node, with `officer`.
pub async fn enrol_peer(
    shared: &Arc<Shared>,
    req: AddPeerRequest,
    officer: crate::store::Officer,
) -> Result<queries::PeerView, ApiError> {
    use kp_exchange::enrol::EnrolError;
    let (record, _) =
        kp_exchange::enrol::prepare(shared.me, &req.bundle, &req.fingerprint, req.endpoints, shared.now())
            .map_err(|e| {
                // A fingerprint typed wrong, or one that is not the bundle's, is the
                // fingerprint's problem: shown at that field.
                let field = match e {
                    EnrolError::Fingerprint(_) | EnrolError::Mismatch { .. } => "fingerprint",
                    EnrolError::Endpoint(_) => "endpoints",
                    _ => "bundle",
                };
                enrol_refused(field, &e)
            })?;
    let code = record.participant;
    let command = Command::EnrolPeer {
        record: Box::new(record),
        replace_identity: req.replace_identity,
        officer: Some(officer),
    };
    match shared.actor.call(command).await? {
        Outcome::Done => {}
        Outcome::Refused(EngineError::Enrol(e)) => {
            let field = match e {
                EnrolError::IdentityChange { .. } => "replace_identity",
                _ => "bundle",
            };
            return Err(enrol_refused(field, &e));
        }
        Outcome::Refused(e) => return Err(e.into()),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    tracing::info!(peer = %code, "peer enrolled");
    queries::peer_views(shared)?
        .into_iter()
        .find(|p| p.participant == code)
        .ok_or_else(|| ApiError::Internal("the enrolled peer is missing".into()))
}

/// A refused enrolment, shown at `field`: the enrolment error's English text for the API, and
/// its message id and arguments for the console.
fn enrol_refused(field: &str, e: &kp_exchange::enrol::EnrolError) -> ApiError {
    ApiError::Invalid {
        error: "invalid_bundle",
        problems: vec![kp_protocol::Problem::new(field, e.to_string()).coded(e.coded())],
    }
}

/// A removal done.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeerRemoved {
    pub removed: ParticipantCode,
    /// Messages that stay queued for it.
    pub queued: u64,
}

#[utoipa::path(delete, path = "/v1/peers/{code}", tag = "peers",
    params(("code" = ParticipantCode, Path, description = "The partner's participant code")),
    responses((status = 200, description = "Links closed; its messages stay queued", body = PeerRemoved),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn remove_peer(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<PeerRemoved>> {
    let officer = shared.token_officer();
    remove(&shared, &code, officer).await.map(Json)
}

/// Removes a partner: its links close, its messages stay queued. The one way to remove, for the
/// API and the console alike; the log records it with `officer`.
pub async fn remove(
    shared: &Arc<Shared>,
    code: &str,
    officer: crate::store::Officer,
) -> Result<PeerRemoved, ApiError> {
    let code: ParticipantCode =
        code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?} {e}")))?;
    match shared.actor.call(Command::RemovePeer { participant: code, officer: Some(officer) }).await? {
        Outcome::Done => {
            tracing::info!(peer = %code, "peer removed");
            let queued = queries::queued(&shared.store, code)?;
            Ok(PeerRemoved { removed: code, queued })
        }
        Outcome::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}
