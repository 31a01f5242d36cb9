//! The `keys` tag: this node's keys and its peers', and key rotation.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kp_protocol::ParticipantCode;
use serde::{Deserialize, Serialize};

use super::{parse_body, ApiError, ApiResult, ErrorBody, JsonBody};
use crate::state::Shared;

/// Keys of this node and of its peers, over time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysView {
    pub participant: ParticipantCode,
    pub fingerprint: String,
    pub own: kp_keys::history::KeyHistorySummary,
    pub peers: Vec<PeerKeys>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeerKeys {
    pub participant: ParticipantCode,
    pub fingerprint: String,
    pub removed: bool,
    pub history: kp_keys::history::KeyHistorySummary,
}

/// Builds the keys view from a node's own keys and its trust.
pub fn keys_view(keys: &kp_keys::NodeKeys, trust: &kp_exchange::trust::Trust) -> KeysView {
    let mut peers: Vec<PeerKeys> = trust
        .peers()
        .map(|p| PeerKeys {
            participant: p.participant,
            fingerprint: p.fingerprint.to_string(),
            removed: p.removed,
            history: p.history.summary(),
        })
        .collect();
    peers.sort_by_key(|p| p.participant);
    KeysView {
        participant: keys.participant(),
        fingerprint: keys.fingerprint().to_string(),
        own: keys.history.summary(),
        peers,
    }
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeysView), (status = 401, body = ErrorBody)))]
pub(super) async fn keys(State(shared): State<Arc<Shared>>) -> ApiResult<Json<KeysView>> {
    let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(keys_view(&keys, &shared.trust.get())))
}

/// Which keys to rotate; neither means both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct RotateRequest {
    #[serde(default)]
    pub signing: bool,
    #[serde(default)]
    pub tls: bool,
    /// Make the new signing key under this PKCS#11 URI (another object label, or another
    /// token of the node's module) instead of where the current one is; implies `signing`.
    /// node.toml's `pkcs11.signing_key` is set to it.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Make the new TLS key under this PKCS#11 URI; implies `tls`. node.toml's
    /// `pkcs11.tls_key` is set to it.
    #[serde(default)]
    pub tls_key: Option<String>,
}

/// A rotation done and queued for every peer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    pub sequence: u32,
    pub effective_from: kp_protocol::Timestamp,
    pub signing_key: String,
    pub tls_rotated: bool,
    pub statement_id: String,
    pub announced_to: Vec<ParticipantCode>,
}

#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys", request_body = RotateRequest,
    responses((status = 200, description = "Rotated and announced to every peer", body = Rotated),
        (status = 409, description = "rotation_refused: the node's key history refuses another rotation \
(at most 8 taking effect within 24 hours, 128 in all, the bounds its partners apply); nothing changed", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn rotate(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Rotated>> {
    let req: RotateRequest = if body.is_empty() {
        RotateRequest { signing: false, tls: false, signing_key: None, tls_key: None }
    } else {
        parse_body(&body)?
    };
    let uri = |field: &'static str, v: &Option<String>| -> ApiResult<Option<kp_keys::pkcs11uri::Pkcs11Uri>> {
        let Some(v) = v else { return Ok(None) };
        let uri = kp_keys::pkcs11uri::Pkcs11Uri::parse(v)
            .map_err(|e| super::error::invalid("invalid_request", field, e.to_string()))?;
        if shared.config.pkcs11.is_none() {
            return Err(super::error::invalid(
                "invalid_request",
                field,
                "this node has no PKCS#11 token configured ([pkcs11] in node.toml): its keys are files",
            ));
        }
        Ok(Some(uri))
    };
    let to = crate::actor::RotateTo {
        signing_key: uri("signing_key", &req.signing_key)?,
        tls_key: uri("tls_key", &req.tls_key)?,
    };
    let (signing, tls) = (req.signing || to.signing_key.is_some(), req.tls || to.tls_key.is_some());
    let (signing, tls) = if !signing && !tls { (true, true) } else { (signing, tls) };
    let statement = shared.actor.rotate(signing, tls, to, shared.token_officer()).await?;
    let r: kp_protocol::KeyRotation = statement.body().map_err(|e| ApiError::Internal(e.to_string()))?;
    let announced_to = shared.trust.get().active_peers().map(|p| p.participant).collect();
    Ok(Json(Rotated {
        sequence: r.sequence,
        effective_from: r.effective_from,
        signing_key: shared.signer.key_id().to_string(),
        tls_rotated: r.new_tls_certificate.is_some(),
        statement_id: statement.message_id().to_string(),
        announced_to,
    }))
}
