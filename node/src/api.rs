//! The local HTTP API: JSON over HTTP on `api_listen`, every route but `/healthz` behind the
//! bearer token in `api.token`. A thin layer: handlers parse, call the same signer, store
//! actor and queries as everything else, and shape the answer.
//!
//! Errors are JSON: `{"error": "<code>", "message": "…"}`, and for invalid input (422)
//! `{"error": "invalid_certificate", "problems": [{"field": "…", "message": "…"}]}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kp_protocol::{
    Carats, Certificate, CertificateDraft, CertificateNumber, Date, ImportConfirmation, LongText,
    ParticipantCode, Problem, Text, ValidationContext, Void,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use crate::actor::ActorError;
use crate::engine::{document_of, Command, EngineError, Outcome};
use crate::node::Shared;
use crate::participants::Directory;
use crate::queries::{self, cert_view, CertFilter};
use crate::store::{get_record, meta, CertRecord, CertStatus, Direction, PeerRecord, StoreError, Tree};

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound(String),
    Invalid { error: &'static str, problems: Vec<Problem> },
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "message": "missing or wrong bearer token (see api.token in the node directory)"}),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": "not_found", "message": m})),
            ApiError::Invalid { error, problems } => {
                (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": error, "problems": problems}))
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({"error": "conflict", "message": m})),
            ApiError::Unavailable(m) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "unavailable", "message": m}))
            }
            ApiError::Internal(m) => {
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "internal", "message": m}))
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(_) | EngineError::UnknownPeer(_) => ApiError::NotFound(e.to_string()),
            _ => ApiError::Conflict(e.to_string()),
        }
    }
}

fn invalid(error: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { error, problems: vec![Problem::new(field, message)] }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serves the API until the node stops; requests in progress are finished.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let cancel = shared.cancel.clone();
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(error = %e, "the API server failed");
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.api.max_body_bytes as usize;
    let protected = Router::new()
        .route("/v1/certificates", post(submit).get(list))
        .route("/v1/certificates/{number}", get(show))
        .route("/v1/certificates/{number}/confirm", post(confirm))
        .route("/v1/certificates/{number}/void", post(void))
        .route("/v1/peers", get(peers).post(add_peer))
        .route("/v1/peers/{code}", delete(remove_peer))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(protected)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), shared.token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a submission.
#[derive(Debug, Serialize, Deserialize)]
pub struct Submitted {
    pub number: String,
    pub status: String,
    pub message_id: String,
    /// True if this exact certificate was already stored (a repeated submission).
    pub already_stored: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn directory(shared: &Shared) -> Directory {
    Directory::with_extra(shared.trust.get().peers().map(|p| p.participant))
}

/// The next certificate number of `year`, above anything assigned or stored.
fn next_number(shared: &Shared, year: i32) -> ApiResult<u64> {
    let mut numbers = shared.numbers.lock().unwrap_or_else(|p| p.into_inner());
    let n = match numbers.entry(year) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let key = format!("{}{year}", meta::NUMBER_PREFIX);
            e.insert(get_record::<u64, _>(&shared.store, Tree::Meta, key.as_bytes())?.unwrap_or(0))
        }
    };
    *n += 1;
    Ok(*n)
}

async fn submit(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let outcome = submit_certificate(&shared, &body).await?;
    let status = if outcome.already_stored { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome)))
}

/// Validates, numbers, signs and stores a certificate: the path of the API and of `bench`.
pub async fn submit_certificate(shared: &Arc<Shared>, body: &[u8]) -> ApiResult<Submitted> {
    let today = shared.now().date();
    let draft = {
        let directory = directory(shared);
        let ctx = ValidationContext {
            today,
            max_validity_days: Some(shared.config.certificates.max_validity_days),
            participants: &directory,
            exporter: Some(shared.me),
            importer: None,
        };
        CertificateDraft::from_json_bytes(body, &ctx)
            .map_err(|p| ApiError::Invalid { error: "invalid_certificate", problems: p.0 })?
    };
    let importer = draft.content.importing_participant;
    let mut warnings = Vec::new();
    if shared.trust.get().active(importer).is_none() {
        warnings.push(format!(
            "{importer} is not an enrolled peer; the certificate stays queued until its node is enrolled (kpnode peer add)"
        ));
    }
    // A number we assign may already have been taken by hand; then take the next.
    for _ in 0..16 {
        let (cert, assigned) = match &draft.number {
            Some(n) => (draft.clone().into_certificate(|| n.clone()), None),
            None => {
                let year = today.year();
                let seq = next_number(shared, year)?;
                let n = CertificateNumber::assigned(shared.me, year, seq);
                (draft.clone().into_certificate(|| n), Some((year, seq)))
            }
        };
        let document = shared.signer.sign(&cert);
        let outcome =
            shared.actor.call(Command::Submit { document, certificate: Box::new(cert), assigned }).await?;
        match outcome {
            Outcome::Submitted { record, already_stored } => {
                if !already_stored {
                    tracing::info!(number = %record.number, to = %record.peer, "certificate signed and queued");
                }
                return Ok(Submitted {
                    number: record.number.to_string(),
                    status: record.status.as_str().into(),
                    message_id: record.message_id.to_string(),
                    already_stored,
                    warnings,
                });
            }
            Outcome::Refused(EngineError::Conflict(_)) if assigned.is_some() => continue,
            Outcome::Refused(e) => return Err(e.into()),
            other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
        }
    }
    Err(ApiError::Conflict("could not find a free certificate number; give one in the JSON".into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    direction: Option<String>,
    status: Option<String>,
    peer: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<queries::CertView>>> {
    let mut problems = Vec::new();
    let direction = match q.direction.as_deref() {
        None => None,
        Some("in") => Some(Direction::In),
        Some("out") => Some(Direction::Out),
        Some(other) => {
            problems.push(Problem::new("direction", format!("{other:?} is not in or out")));
            None
        }
    };
    let status = q
        .status
        .as_deref()
        .and_then(|s| s.parse::<CertStatus>().map_err(|e| problems.push(Problem::new("status", e))).ok());
    let peer = q.peer.as_deref().and_then(|p| {
        p.parse::<ParticipantCode>()
            .map_err(|e| problems.push(Problem::new("peer", format!("{p:?} {e}"))))
            .ok()
    });
    if !problems.is_empty() {
        return Err(ApiError::Invalid { error: "invalid_query", problems });
    }
    let filter = CertFilter {
        direction,
        status,
        peer,
        after: q.after,
        limit: q.limit.unwrap_or(100_000).min(100_000),
    };
    let today = shared.now().date();
    let records = queries::list_certs(&shared.store, &filter, today)?;
    let views =
        records.iter().map(|r| cert_view(&shared.store, r, today, true)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(views))
}

fn record(shared: &Shared, number: &str) -> ApiResult<CertRecord> {
    let n: CertificateNumber =
        number.parse().map_err(|e| invalid("invalid_request", "number", format!("{number:?} {e}")))?;
    get_record::<CertRecord, _>(&shared.store, Tree::Certs, n.as_str().as_bytes())?
        .ok_or_else(|| ApiError::NotFound(format!("there is no certificate {n} on this node")))
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
) -> ApiResult<Json<queries::CertView>> {
    let rec = record(&shared, &number)?;
    Ok(Json(cert_view(&shared.store, &rec, shared.now().date(), true)?))
}

/// An importing node's confirmation of receipt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    pub received_on: String,
    pub parcels: u32,
    pub carats: String,
    pub remarks: Option<String>,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| invalid("invalid_request", "", format!("{e}")))
}

async fn confirm(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    body: Bytes,
) -> ApiResult<Json<queries::CertView>> {
    let req: ConfirmRequest = parse_body(&body)?;
    let rec = record(&shared, &number)?;
    let mut problems = Vec::new();
    let received_on = req
        .received_on
        .parse::<Date>()
        .map_err(|e| problems.push(Problem::new("received_on", format!("{:?} {e}", req.received_on))))
        .ok();
    let carats = req
        .carats
        .parse::<Carats>()
        .map_err(|e| problems.push(Problem::new("carats", format!("{:?} {e}", req.carats))))
        .ok();
    let remarks = match req.remarks.as_deref() {
        None => None,
        Some(r) => {
            r.parse::<LongText>().map_err(|e| problems.push(Problem::new("remarks", e.to_string()))).ok()
        }
    };
    let today = shared.now().date();
    if let Some(d) = received_on {
        if d.days_after(today) > kp_protocol::certificate::ISSUE_DATE_TOLERANCE_DAYS {
            problems.push(Problem::new("received_on", format!("{d} lies in the future (today is {today})")));
        }
        if d < rec.issued_on {
            problems.push(Problem::new(
                "received_on",
                format!("{d} is before the certificate was issued ({})", rec.issued_on),
            ));
        }
    }
    if req.parcels == 0 {
        problems.push(Problem::new("parcels", "must be at least 1"));
    }
    let (Some(received_on), Some(carats)) = (received_on, carats) else {
        return Err(ApiError::Invalid { error: "invalid_request", problems });
    };
    if !problems.is_empty() {
        return Err(ApiError::Invalid { error: "invalid_request", problems });
    }
    if let Some(why) = crate::engine::confirmable(&rec) {
        return Err(ApiError::Conflict(format!(
            "certificate {} is {}: {why}",
            rec.number,
            queries::effective_status(&rec, today).as_str()
        )));
    }
    let cert = certificate_of(&shared, &rec)?;
    let confirmation = ImportConfirmation {
        certificate: rec.number.clone(),
        certificate_id: rec.message_id,
        exporting_participant: cert.content.exporting_participant,
        importing_participant: shared.me,
        exporter: cert.content.exporter.clone(),
        importer: cert.content.importer.clone(),
        received_on,
        parcels: req.parcels,
        carats,
        confirming_authority: shared.config.authority.clone(),
        remarks,
    };
    let document = shared.signer.sign(&confirmation);
    updated(&shared, Command::Confirm { document, confirmation: Box::new(confirmation) }).await
}

fn certificate_of(shared: &Shared, rec: &CertRecord) -> ApiResult<Certificate> {
    document_of(|t, k| crate::store::Storage::get(&shared.store, t, k), rec)?
        .and_then(|d| d.body::<Certificate>().ok())
        .ok_or_else(|| {
            ApiError::Internal(format!("the signed certificate {} is missing from the store", rec.number))
        })
}

async fn updated(shared: &Arc<Shared>, command: Command) -> ApiResult<Json<queries::CertView>> {
    match shared.actor.call(command).await? {
        Outcome::Updated(rec) => Ok(Json(cert_view(&shared.store, &rec, shared.now().date(), true)?)),
        Outcome::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// An exporting node's voiding of a certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidRequest {
    pub reason: String,
}

async fn void(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    body: Bytes,
) -> ApiResult<Json<queries::CertView>> {
    let req: VoidRequest = parse_body(&body)?;
    let reason: Text =
        req.reason.parse().map_err(|e| invalid("invalid_request", "reason", format!("{e}")))?;
    let rec = record(&shared, &number)?;
    if let Some(why) = crate::engine::voidable(&rec) {
        let today = shared.now().date();
        return Err(ApiError::Conflict(format!(
            "certificate {} is {}: {why}",
            rec.number,
            queries::effective_status(&rec, today).as_str()
        )));
    }
    let void = Void { certificate: rec.number.clone(), certificate_id: rec.message_id, reason };
    let document = shared.signer.sign(&void);
    updated(&shared, Command::Void { document, void }).await
}

async fn peers(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Vec<queries::PeerView>>> {
    Ok(Json(queries::peer_views(&shared)?))
}

/// Enrolling a partner: its armored bundle and the fingerprint read over the phone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPeerRequest {
    pub bundle: String,
    pub fingerprint: String,
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
}

async fn add_peer(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<queries::PeerView>)> {
    let req: AddPeerRequest = parse_body(&body)?;
    let existing = peer_record(&shared, &req.bundle)?;
    let (record, _) = crate::enrol::prepare(
        shared.me,
        &req.bundle,
        &req.fingerprint,
        req.endpoints,
        existing,
        shared.now(),
    )
    .map_err(|e| invalid("invalid_bundle", "bundle", e.to_string()))?;
    let code = record.participant;
    match shared.actor.call(Command::EnrolPeer { record: Box::new(record) }).await? {
        Outcome::Done => {}
        Outcome::Refused(e) => return Err(e.into()),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    tracing::info!(peer = %code, "peer enrolled");
    let view = queries::peer_views(&shared)?
        .into_iter()
        .find(|p| p.participant == code)
        .ok_or_else(|| ApiError::Internal("the enrolled peer is missing".into()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The stored record of the participant a bundle names, if any.
fn peer_record(shared: &Shared, bundle_text: &str) -> ApiResult<Option<PeerRecord>> {
    let Ok(b) = kp_keys::VerifiedBundle::from_armored(bundle_text) else { return Ok(None) };
    Ok(get_record::<PeerRecord, _>(&shared.store, Tree::Peers, &b.bundle.participant.as_bytes())?)
}

async fn remove_peer(
    State(shared): State<Arc<Shared>>,
    Path(code): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let code: ParticipantCode =
        code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?} {e}")))?;
    match shared.actor.call(Command::RemovePeer { participant: code }).await? {
        Outcome::Done => {
            tracing::info!(peer = %code, "peer removed");
            let queued = queries::queued(&shared.store, code)?;
            Ok(Json(json!({"removed": code, "queued": queued})))
        }
        Outcome::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// The node at a glance.
#[derive(Debug, Serialize)]
pub struct Status {
    pub participant: ParticipantCode,
    pub authority: String,
    pub fingerprint: String,
    pub signing_key: String,
    pub started_at: kp_protocol::Timestamp,
    pub peer_listen: String,
    pub certificates_out: u64,
    pub certificates_in: u64,
    pub log_entries: u64,
    pub peers: Vec<queries::PeerView>,
}

async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Status>> {
    let counts =
        get_record::<crate::store::Counts, _>(&shared.store, Tree::Meta, meta::COUNTS)?.unwrap_or_default();
    let head = get_record::<crate::store::LogHead, _>(&shared.store, Tree::Meta, meta::LOG_HEAD)?
        .unwrap_or_default();
    let fingerprint = shared.keys.lock().unwrap_or_else(|p| p.into_inner()).fingerprint().to_string();
    Ok(Json(Status {
        participant: shared.me,
        authority: shared.config.authority.to_string(),
        fingerprint,
        signing_key: shared.signer.key_id().to_string(),
        started_at: shared.started_at,
        peer_listen: shared.peer_addr.to_string(),
        certificates_out: counts.certificates_out,
        certificates_in: counts.certificates_in,
        log_entries: head.next_seq.saturating_sub(1),
        peers: queries::peer_views(&shared)?,
    }))
}
