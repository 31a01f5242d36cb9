//! The `node` tag: status, metrics, health and the OpenAPI document itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kp_protocol::ParticipantCode;
use serde::Serialize;

use super::{ApiError, ApiResult, ErrorBody};
use crate::queries;
use crate::state::Shared;
use crate::store::{get_record, meta, Tree};

/// The node at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub participant: ParticipantCode,
    pub authority: String,
    pub fingerprint: String,
    pub signing_key: String,
    pub started_at: kp_protocol::Timestamp,
    pub peer_listen: String,
    pub certificates_out: u64,
    pub certificates_in: u64,
    /// Inbound certificates from restricted participants, accepted under enhanced vigilance.
    pub certificates_under_vigilance: u64,
    pub log_entries: u64,
    /// Keys older than `keys.max_key_age`, messages held for suspended participants, and
    /// similar things needing attention.
    pub warnings: Vec<String>,
    pub peers: Vec<queries::PeerView>,
    /// Peers whose stored record could not be loaded: not trusted, not dialled, until a
    /// current bundle is enrolled for them. The node serves the others meanwhile.
    pub quarantined: Vec<QuarantinedPeer>,
    /// Participants with certificates queued that are not enrolled peers: delivered once their
    /// node is enrolled (`kpnode peer add`).
    pub not_enrolled: Vec<queries::UnenrolledQueue>,
    /// Set after `kpnode restore` until `kpnode recover` has recovered from every enrolled
    /// partner (or `kpnode recover --finish`): no certificate is issued, and follow-ups of
    /// certificates this node lacks are held back for their senders to resend.
    pub recovery_pending: Option<RecoveryPendingView>,
}

/// The recovery-pending state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryPendingView {
    /// When `kpnode restore` set it.
    pub since: kp_protocol::Timestamp,
    /// Partners recovered from already.
    pub recovered: Vec<ParticipantCode>,
    /// Active enrolled partners still to recover from.
    pub remaining: Vec<ParticipantCode>,
    /// Follow-ups held back so far (each resend counts).
    pub held: u64,
}

/// A peer whose record could not be loaded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantinedPeer {
    pub participant: ParticipantCode,
    pub reason: String,
}

#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
pub(super) async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Status>> {
    status_view(&shared).map(Json)
}

/// The node at a glance, for the API's status and the console's dashboard.
pub fn status_view(shared: &Shared) -> Result<Status, ApiError> {
    let counts =
        get_record::<crate::store::Counts, _>(&shared.store, Tree::Meta, meta::COUNTS)?.unwrap_or_default();
    let head = get_record::<crate::store::LogHead, _>(&shared.store, Tree::Meta, meta::LOG_HEAD)?
        .unwrap_or_default();
    let fingerprint = shared.keys.lock().unwrap_or_else(|p| p.into_inner()).fingerprint().to_string();
    let peers = queries::peer_views(shared)?;
    let mut warnings = crate::service::keys::key_age_warnings(shared);
    let registry = shared.registry.get();
    let on = registry.on(shared.now().date());
    for p in &peers {
        if let Some(why) = on.held(p.participant) {
            warnings.push(format!("{} message(s) for {} are held: {why}", p.queued, p.participant));
        }
    }
    let trust = shared.trust.get();
    let quarantined: Vec<QuarantinedPeer> = trust
        .quarantined()
        .map(|(participant, reason)| QuarantinedPeer { participant, reason: reason.to_owned() })
        .collect();
    for q in &quarantined {
        warnings.push(format!(
            "peer {} is quarantined: its record cannot be loaded ({}). Enrol a current bundle from its \
             operator with `kpnode peer add BUNDLE --fingerprint FP` to replace it",
            q.participant, q.reason
        ));
    }
    let not_enrolled = queries::unenrolled_queues(&shared.store, &trust)?;
    for q in &not_enrolled {
        warnings.push(format!(
            "{} message(s) are queued for {}, which is not an enrolled peer: they are delivered once its node is enrolled (kpnode peer add)",
            q.queued, q.participant
        ));
    }
    let recovery_pending = kp_exchange::engine::recovery_pending(&shared.store)?.map(|p| {
        let remaining: Vec<ParticipantCode> =
            trust.active_peers().map(|x| x.participant).filter(|x| !p.recovered.contains(x)).collect();
        RecoveryPendingView { since: p.since, recovered: p.recovered, remaining, held: p.held }
    });
    if let Some(p) = &recovery_pending {
        warnings.push(format!(
            "this node was restored from a backup and awaits `kpnode recover` (partners left: {}): no certificate \
             is issued and follow-ups of certificates it lacks are held back until then",
            p.remaining.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Status {
        participant: shared.me,
        authority: shared.config.authority.to_string(),
        fingerprint,
        signing_key: shared.signer.key_id().to_string(),
        started_at: shared.started_at,
        peer_listen: shared.peer_addr.to_string(),
        certificates_out: counts.certificates_out,
        certificates_in: counts.certificates_in,
        certificates_under_vigilance: counts.vigilance,
        log_entries: head.next_seq.saturating_sub(1),
        warnings,
        peers,
        quarantined,
        not_enrolled,
        recovery_pending,
    })
}

#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, body = ErrorBody)))]
pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    use crate::metrics::Gauge;
    let trust = shared.trust.get();
    let mut peers: Vec<ParticipantCode> = trust.peers().map(|p| p.participant).collect();
    peers.sort();
    let mut queue = Vec::new();
    let mut up = Vec::new();
    let mut in_flight = Vec::new();
    let mut inbound = Vec::new();
    for p in &peers {
        let link = shared.links.status(*p);
        queue.push((Some(*p), queries::queued(&shared.store, *p)?));
        up.push((Some(*p), u64::from(link.connected)));
        in_flight.push((Some(*p), link.in_flight as u64));
        inbound.push((Some(*p), u64::from(link.inbound_connections)));
    }
    // Queued for participants not enrolled: no link, but a queue all the same.
    for q in queries::unenrolled_queues(&shared.store, &trust)? {
        queue.push((Some(q.participant), q.queued));
    }
    let counts =
        get_record::<crate::store::Counts, _>(&shared.store, Tree::Meta, meta::COUNTS)?.unwrap_or_default();
    let head = get_record::<crate::store::LogHead, _>(&shared.store, Tree::Meta, meta::LOG_HEAD)?
        .unwrap_or_default();
    let (signing_age, tls_age) = crate::service::keys::key_ages_seconds(&shared);
    let expiring = expiring_unconfirmed(&shared).await?;
    let gauges = [
        Gauge {
            name: "kpnode_queue_depth",
            help: "Messages waiting for the peer (not yet acknowledged).",
            values: queue,
        },
        Gauge { name: "kpnode_link_up", help: "1 if this node's link to the peer is up.", values: up },
        Gauge {
            name: "kpnode_in_flight",
            help: "Deliveries to the peer awaiting a receipt.",
            values: in_flight,
        },
        Gauge {
            name: "kpnode_inbound_connections",
            help: "Connections the peer holds to this node.",
            values: inbound,
        },
        Gauge {
            name: "kpnode_certificates_issued",
            help: "Certificates this node has issued.",
            values: vec![(None, counts.certificates_out)],
        },
        Gauge {
            name: "kpnode_certificates_received",
            help: "Certificates this node has received.",
            values: vec![(None, counts.certificates_in)],
        },
        Gauge {
            name: "kpnode_signing_key_age_seconds",
            help: "Age of this node's current signing key.",
            values: vec![(None, signing_age)],
        },
        Gauge {
            name: "kpnode_tls_key_age_seconds",
            help: "Age of this node's current TLS key.",
            values: vec![(None, tls_age)],
        },
        Gauge {
            name: "kpnode_key_max_age_seconds",
            help: "keys.max_key_age: keys older than this are due for rotation.",
            values: vec![(None, shared.config.keys.max_key_age.as_secs())],
        },
        Gauge {
            name: "kpnode_certificates_expiring_unconfirmed",
            help: "Certificates issued to the peer that expire within 7 days (today included) and are still awaiting its import confirmation (queued or delivered; not voided or refused). Counted at most once a minute.",
            values: expiring,
        },
        Gauge {
            name: "kpnode_log_entries",
            help: "Entries in the hash-chained log.",
            values: vec![(None, head.next_seq.saturating_sub(1))],
        },
    ];
    let text = shared.metrics.render(&gauges);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// [`queries::unconfirmed_expiring`] per peer (every enrolled peer, 0 when none), reused for a
/// minute: it reads every certificate record, which a scrape every few seconds on a store of
/// millions should not repeat. Read on a blocking thread, off the API's workers.
async fn expiring_unconfirmed(shared: &Arc<Shared>) -> ApiResult<Vec<(Option<ParticipantCode>, u64)>> {
    const REUSE: std::time::Duration = std::time::Duration::from_secs(60);
    let cached = shared.metrics.expiring_unconfirmed(REUSE);
    // One count at a time: scrapes that find no fresh count wait for the one being taken.
    let _counting = match cached {
        Some(_) => None,
        None => Some(shared.metrics.expiring_counting.lock().await),
    };
    let cached = cached.or_else(|| shared.metrics.expiring_unconfirmed(REUSE));
    let counts = match cached {
        Some(c) => c,
        None => {
            let store = shared.store.clone();
            let today = shared.now().date();
            let counts = tokio::task::spawn_blocking(move || queries::unconfirmed_expiring(&store, today))
                .await
                .map_err(|e| ApiError::Internal(format!("counting expiring certificates: {e}")))??;
            shared.metrics.set_expiring_unconfirmed(counts.clone());
            counts
        }
    };
    let mut peers: std::collections::BTreeSet<ParticipantCode> =
        shared.trust.get().peers().map(|p| p.participant).collect();
    peers.extend(counts.keys().copied());
    Ok(peers.into_iter().map(|p| (Some(p), counts.get(&p).copied().unwrap_or(0))).collect())
}

#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, description = "The node is up", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 503, description = "The store failed; the node is reopening it", body = ErrorBody)))]
pub(super) async fn healthz(State(shared): State<Arc<Shared>>) -> ApiResult<&'static str> {
    match shared.store_health.failure() {
        Some(why) => {
            Err(ApiError::Unavailable(format!("the store failed ({why}); the node is reopening it")))
        }
        None => Ok("ok\n"),
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object), (status = 401, body = ErrorBody)))]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi())
}
