//! The local HTTP API: JSON over HTTP on `api_listen`, every route but `/healthz` behind the
//! bearer token in `api.token`. A thin layer: handlers parse, call the same signer, store
//! actor and queries as everything else, and shape the answer.
//!
//! Errors are JSON: `{"error": "<code>", "message": "…"}`, and for invalid input (422)
//! `{"error": "invalid_certificate", "problems": [{"field": "…", "message": "…"}]}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};

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
use tokio::net::TcpListener;

use crate::actor::ActorError;
use crate::participants;
use crate::queries::{self, cert_view, CertFilter};
use crate::state::Shared;
use crate::store::{get_record, meta, CertRecord, CertStatus, Direction, StoreError, Tree};
use kp_exchange::engine::{document_of, Command, EngineError, Idempotency, Outcome};

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound(String),
    Invalid {
        error: &'static str,
        problems: Vec<Problem>,
    },
    Conflict(String),
    /// A conflict caused by the request's own content (a number taken by another certificate,
    /// an idempotency key reused with another body, a key rotation beyond the bounds), with
    /// its error code: the caller must change the request (or, for a rotation, wait);
    /// retrying at once cannot help.
    Taken(&'static str, String),
    TooLarge(String),
    Unavailable(String),
    Internal(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What kind of error: unauthorized, not_found, invalid_certificate, invalid_request,
    /// invalid_query, invalid_bundle, conflict, number_taken (409: the certificate number is
    /// taken by other content), idempotency_key_reused (409: the Idempotency-Key was used with
    /// another body), rotation_refused (409: the node's key history refuses another rotation
    /// now), too_large, unavailable, internal, request_timeout (408: the body did not arrive
    /// within `api.body_read_timeout`).
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For invalid input: every problem, each naming its field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = |error: &str, message: Option<String>, problems: Option<Vec<Problem>>| ErrorBody {
            error: error.to_owned(),
            message,
            problems,
        };
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                body(
                    "unauthorized",
                    Some("missing or wrong bearer token (see api.token in the node directory)".into()),
                    None,
                ),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, body("not_found", Some(m), None)),
            ApiError::Invalid { error, problems } => {
                (StatusCode::UNPROCESSABLE_ENTITY, body(error, None, Some(problems)))
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, body("conflict", Some(m), None)),
            ApiError::Taken(error, m) => (StatusCode::CONFLICT, body(error, Some(m), None)),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, body("too_large", Some(m), None)),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, body("unavailable", Some(m), None)),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, body("internal", Some(m), None)),
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    /// An I/O failure of the store is `503`, naming the cause and the fix, for reads too:
    /// sled reorganises its tree (splits and merges nodes) as it reads, which writes to its
    /// log, and after an I/O error it refuses those writes, and so some reads, until the
    /// store is reopened. Anything else (a damaged record) is `500`.
    fn from(e: StoreError) -> ApiError {
        if e.is_io() {
            ApiError::Unavailable(format!(
                "the store has failed ({e}) and cannot answer this until it is reopened (sled may write \
as it reads). Fix what the error names; `kpnode run` reopens its store by itself once a test write succeeds"
            ))
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> ApiError {
        match e {
            ActorError::Damaged(_) => ApiError::Internal(e.to_string()),
            ActorError::RotationRefused(_) => ApiError::Taken("rotation_refused", e.to_string()),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(_) | EngineError::UnknownPeer(_) => ApiError::NotFound(e.to_string()),
            EngineError::Conflict(_) => ApiError::Taken("number_taken", e.to_string()),
            EngineError::IdempotencyConflict { .. } => {
                ApiError::Taken("idempotency_key_reused", e.to_string())
            }
            _ => ApiError::Conflict(e.to_string()),
        }
    }
}

fn invalid(error: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { error, problems: vec![Problem::new(field, message)] }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serves the API until the node stops; requests in progress are finished. Connections are
/// capped and must send their headers in time (see [`crate::http`]).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let (cancel, metrics) = (shared.cancel.clone(), shared.metrics.clone());
    let limits = crate::http::Limits::of(&shared.config.api);
    crate::http::serve(listener, router(shared), limits, metrics, cancel).await;
}

pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.api.max_body_bytes as usize;
    let protected = Router::new()
        .route("/v1/certificates", post(submit).get(list))
        .route("/v1/certificates/{number}", get(show))
        .route("/v1/certificates/{number}/confirm", post(confirm))
        .route("/v1/certificates/{number}/void", post(void))
        .route("/v1/certificates/{number}/resolve", post(resolve))
        .route("/v1/certificates/{number}/seal", get(seal))
        .route("/v1/certificates/{number}/kpc", get(kpc))
        .route("/v1/stats", get(stats))
        .route("/v1/reconcile", get(reconcile))
        .route("/v1/peers", get(peers).post(add_peer))
        .route("/v1/peers/{code}", delete(remove_peer))
        .route("/v1/participants", get(participants_list))
        .route("/v1/participants/import", post(participants_import))
        .route("/v1/participants/export", get(participants_export))
        .route("/v1/participants/{code}", get(participants_show).post(participants_set))
        .route("/v1/status", get(status))
        .route("/v1/keys", get(keys))
        .route("/v1/keys/rotate", post(rotate))
        .route("/v1/log", get(log))
        .route("/v1/log/verify", get(log_verify))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
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

/// A request body as bytes; refusals (too large, unreadable) answer in the error shape.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(JsonBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge(format!(
                "the request body is larger than the {} bytes api.max_body_bytes allows",
                "configured"
            ))),
            Err(e) => Err(invalid("invalid_request", "", e.body_text())),
        }
    }
}

/// Query parameters; refusals answer 422 in the error shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| query_problem(&e.body_text()))
    }
}

/// A refused query string as a problem naming its parameter: axum's text reads
/// "Failed to deserialize query string: limit: number too large to fit in target type".
fn query_problem(text: &str) -> ApiError {
    let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(text);
    match detail.split_once(": ") {
        Some((field, why))
            if !field.is_empty() && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            invalid("invalid_query", field, format!("query parameter {field}: {why}"))
        }
        _ => invalid("invalid_query", "", detail.to_owned()),
    }
}

/// A path parameter; refusals answer 422 in the error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| invalid("invalid_request", "", e.body_text()))
    }
}

/// The answer to a submission.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub number: String,
    pub status: String,
    pub message_id: String,
    /// True if nothing new was issued: this exact certificate was already stored, or the
    /// request's Idempotency-Key (with the same body) already produced this certificate.
    pub already_stored: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

/// The request header that makes a submission safe to retry.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The `Idempotency-Key` of a request, if it has one, with the SHA-256 of its body.
fn idempotency(headers: &axum::http::HeaderMap, body: &[u8]) -> ApiResult<Option<Idempotency>> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let bad = |why: &str| invalid("invalid_request", IDEMPOTENCY_HEADER, why.to_owned());
    if values.next().is_some() {
        return Err(bad("is given more than once; send one key per request"));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            bad(&format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces, e.g. a UUID or the SHA-256 of the body in hex"
            ))
        })?;
    Ok(Some(Idempotency { key: key.to_owned(), content: kp_protocol::Digest::of(body) }))
}

#[utoipa::path(post, path = "/v1/certificates", tag = "certificates",
    description = "Validates, numbers (if the JSON has no `number`), signs, stores durably and queues a certificate.

Retrying is safe with an `Idempotency-Key` header: the node stores the key with the certificate, in the same durable write, and remembers it for 30 days. A request with a key already used and the same body gets the first answer again (200, `already_stored`: the same number, no second certificate), even if the node crashed before it could answer the first one; the same key with a different body is refused with 409 naming the first certificate's number. Without a key, a certificate without a `number` is numbered anew on every request: a retried request issues a second certificate. `kpnode cert submit` sends the SHA-256 of the file as the key.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Any string of 1 to 128 printable ASCII characters (no spaces) that identifies this submission, e.g. a UUID or the SHA-256 of the body in hex; remembered for 30 days")),
    request_body(content = kp_protocol::CertificateDraft, description = "Certificate JSON; `number` is optional"),
    responses(
        (status = 201, description = "Signed, stored durably and queued for the importer", body = Submitted),
        (status = 200, description = "Already stored: this exact certificate, or the certificate of a request with the same Idempotency-Key and body", body = Submitted),
        (status = 409, description = "The number is taken by a certificate with other content, or the Idempotency-Key was used with another body (the message names the certificate it produced)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "Every problem, by field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let idem = idempotency(&headers, &body)?;
    let outcome = submit_certificate(&shared, &body, idem).await?;
    let status = if outcome.already_stored { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome)))
}

/// The answer to a request whose idempotency key is remembered: the certificate it produced,
/// or the conflict. `None` if the key is new (or its window has passed).
fn remembered(shared: &Shared, idem: &Idempotency) -> ApiResult<Option<Submitted>> {
    let key = kp_exchange::engine::idempotency_meta_key(&idem.key);
    let record = get_record::<crate::store::IdempotencyRecord, _>(&shared.store, Tree::Meta, &key)?;
    let Some(prior) = kp_exchange::engine::live_idempotency(record, shared.now()) else { return Ok(None) };
    if prior.content != idem.content {
        return Err(EngineError::IdempotencyConflict { key: idem.key.clone(), number: prior.number }.into());
    }
    let Some(record) =
        get_record::<CertRecord, _>(&shared.store, Tree::Certs, prior.number.as_str().as_bytes())?
    else {
        return Ok(None);
    };
    Ok(Some(Submitted {
        number: record.number.to_string(),
        status: record.status.as_str().into(),
        message_id: record.message_id.to_string(),
        already_stored: true,
        warnings: Vec::new(),
    }))
}

/// Validates, numbers, signs and stores a certificate: the path of the API and of `bench`.
/// With `idem`, a request already answered gets its first answer again (see [`submit`]).
pub async fn submit_certificate(
    shared: &Arc<Shared>,
    body: &[u8],
    idem: Option<Idempotency>,
) -> ApiResult<Submitted> {
    // Answered before: no number is drawn. (Two requests racing with one key are settled by
    // the engine, which sees the key in the store or in the batch.)
    if let Some(answer) = idem.as_ref().map(|i| remembered(shared, i)).transpose()?.flatten() {
        return Ok(answer);
    }
    let today = shared.now().date();
    let mut authority_warning = None;
    let draft = {
        let registry = shared.registry.get();
        let on = registry.on(today);
        let ctx = ValidationContext {
            today,
            max_validity_days: Some(shared.config.certificates.max_validity_days),
            participants: &on,
            exporter: Some(shared.me),
            importer: None,
        };
        let draft = CertificateDraft::from_json_bytes(body, &ctx)
            .map_err(|p| ApiError::Invalid { error: "invalid_certificate", problems: p.0 })?;
        let mut problems = on.issue_problems(&draft.content);
        if let Some(why) = shared.config.authority_mismatch(draft.content.issuing_authority.as_str()) {
            match shared.config.certificates.authority_mismatch {
                kp_config::AuthorityMismatch::Refuse => problems.push(Problem::new("issuing_authority", why)),
                kp_config::AuthorityMismatch::Warn => {
                    authority_warning = Some(format!("issuing_authority {why}"))
                }
                kp_config::AuthorityMismatch::Allow => {}
            }
        }
        let importer = draft.content.importing_participant;
        if on.entry(importer).is_some_and(|e| !e.members.is_empty())
            && shared.trust.get().active(importer).is_none()
        {
            problems.push(Problem::new(
                "importing_participant",
                format!(
                    "{importer} is a union of member states; certificates to it are delivered to a node of {importer}'s own, \
                     and none is enrolled here (delivery to a member state's node is not supported)"
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid { error: "invalid_certificate", problems });
        }
        draft
    };
    let importer = draft.content.importing_participant;
    let exporting = draft.content.exporting_participant;
    let mut warnings: Vec<String> = authority_warning.into_iter().collect();
    if shared.trust.get().active(importer).is_none() {
        warnings.push(format!(
            "{importer} is not an enrolled peer; the certificate stays queued until its node is enrolled (kpnode peer add)"
        ));
    }
    // A number we assign may already have been taken by hand; then take the next.
    // Only a number this node assigns is worth retrying; a given one is used once.
    let attempts = if draft.number.is_some() { 1 } else { 16 };
    let mut draft = Some(draft);
    for attempt in 1..=attempts {
        let d = if attempt == attempts { draft.take() } else { draft.clone() };
        let Some(d) = d else { break };
        let (cert, assigned) = match d.number.clone() {
            Some(n) => (d.into_certificate(|| n), None),
            None => {
                let year = today.year();
                let seq = next_number(shared, year)?;
                let n = if exporting == shared.me {
                    CertificateNumber::assigned(shared.me, year, seq)
                } else {
                    CertificateNumber::assigned_for_union(exporting, shared.me, year, seq)
                };
                (d.into_certificate(|| n), Some((year, seq)))
            }
        };
        let document = shared.signer.sign(&cert);
        let number = cert.number.clone();
        let outcome =
            match shared
                .actor
                .call(Command::Submit {
                    document,
                    certificate: Box::new(cert),
                    assigned,
                    idempotency: idem.clone(),
                })
                .await
            {
                Ok(o) => o,
                // The batch was committed but not made durable: it may or may not survive. A
                // number the caller chose makes a retry harmless; one the node chose must be
                // named, or a retry could issue the shipment twice.
                Err(e @ ActorError::Storage(_)) if assigned.is_some() && idem.is_some() => {
                    return Err(ApiError::Unavailable(format!(
                        "{e}. This certificate was numbered {number} and may have been written before the failure: once the node is back, send the same request with the same Idempotency-Key — you get {number} back if it was stored, and a new certificate is issued only if it was not"
                    )))
                }
                Err(e @ ActorError::Storage(_)) if assigned.is_some() => {
                    return Err(ApiError::Unavailable(format!(
                        "{e}. This certificate was numbered {number} and may have been written before the failure: once the node is back, submit it again with \"number\": \"{number}\" — if it was stored you get it back, and if that number has meanwhile gone to another certificate you get a conflict, and should submit it without a number"
                    )))
                }
                Err(e) => return Err(e.into()),
            };
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

#[utoipa::path(get, path = "/v1/certificates", tag = "certificates",
    params(
        ("direction" = Option<String>, Query, description = "in or out"),
        ("status" = Option<CertStatus>, Query, description = "only this status"),
        ("peer" = Option<String>, Query, description = "only certificates exchanged with this participant"),
        ("after" = Option<String>, Query, description = "numbers after this one (paging)"),
        ("limit" = Option<usize>, Query, description = "at most this many (default and maximum 100000)")),
    responses((status = 200, body = Vec<queries::CertView>), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ListQuery>,
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

#[utoipa::path(get, path = "/v1/certificates/{number}", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "The certificate number")),
    responses((status = 200, body = queries::CertView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "The store has failed (a full or read-only disk) and this read needs it reopened", body = ErrorBody)))]
async fn show(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Json<queries::CertView>> {
    let rec = record(&shared, &number)?;
    Ok(Json(cert_view(&shared.store, &rec, shared.now().date(), true)?))
}

/// A certificate's seal, for a QR code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SealView {
    /// The QR code's text: `KP1:` and the base45 of the signed seal.
    pub qr_text: String,
    #[schema(value_type = Object)]
    pub seal: kp_protocol::seal::CertificateSeal,
    pub signed_at: kp_protocol::Timestamp,
    pub key_id: String,
}

/// A refused seal or `.kpc` is a conflict; a store that failed to read is [`StoreError`]'s.
fn seal_error(e: crate::seal::SealError) -> ApiError {
    match e {
        crate::seal::SealError::Refused(m) => ApiError::Conflict(m),
        crate::seal::SealError::Store(e) => e.into(),
    }
}

#[utoipa::path(get, path = "/v1/certificates/{number}/kpc", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "The certificate number (issued here or received)")),
    responses((status = 200, description = "The portable signed certificate (.kpc, ASCII armor) as its issuer signed it; `kpnode verify` checks it against the issuer's bundle", body = String, content_type = "application/x-kpc"),
        (status = 404, body = ErrorBody), (status = 409, description = "Voided: no .kpc is handed out", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
async fn kpc(State(shared): State<Arc<Shared>>, ApiPath(number): ApiPath<String>) -> ApiResult<Response> {
    let rec = record(&shared, &number)?;
    let text = crate::seal::portable(&shared.store, &rec).map_err(seal_error)?;
    Ok(([(header::CONTENT_TYPE, "application/x-kpc")], text).into_response())
}

#[utoipa::path(get, path = "/v1/certificates/{number}/seal", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An outbound certificate's number")),
    responses((status = 200, description = "A seal signed now with the current key", body = SealView),
        (status = 404, body = ErrorBody), (status = 409, description = "Not issued by this node", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, description = "The store has failed (a full or read-only disk)", body = ErrorBody)))]
async fn seal(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Json<SealView>> {
    let rec = record(&shared, &number)?;
    let (doc, seal) = crate::seal::make(&shared.store, &rec, &shared.signer).map_err(seal_error)?;
    Ok(Json(SealView {
        qr_text: crate::seal::text(&doc),
        seal,
        signed_at: doc.signed_at,
        key_id: doc.key_id.to_string(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    period: String,
    by: Option<String>,
}

#[utoipa::path(get, path = "/v1/stats", tag = "statistics",
    params(("period" = String, Query, description = "2026-Q3, 2026-H1, 2026-07, 2026, or 2026-07-01..2026-09-30"),
        ("by" = Option<String>, Query, description = "partner, hs_code, or both (default partner,hs_code)")),
    responses((status = 200, body = crate::stats::StatsReport), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn stats(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<crate::stats::StatsReport>> {
    let period: crate::stats::Period =
        q.period.parse().map_err(|e: String| invalid("invalid_query", "period", e))?;
    let by: crate::stats::By =
        q.by.as_deref()
            .unwrap_or("partner,hs_code")
            .parse()
            .map_err(|e: String| invalid("invalid_query", "by", e))?;
    let (store, me) = (shared.store.clone(), shared.me);
    // A scan of the log: off the async workers.
    let report = tokio::task::spawn_blocking(move || crate::stats::compute(&store, me, &period, by))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileQuery {
    partner: Option<String>,
    period: Option<String>,
    on: Option<String>,
}

#[utoipa::path(get, path = "/v1/reconcile", tag = "statistics",
    params(("partner" = Option<String>, Query, description = "only this partner"),
        ("period" = Option<String>, Query, description = "only certificates issued in this period"),
        ("on" = Option<String>, Query, description = "judge expiry as of this day (default today)")),
    responses((status = 200, body = crate::stats::Reconciliation), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn reconcile(
    State(shared): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ReconcileQuery>,
) -> ApiResult<Json<crate::stats::Reconciliation>> {
    let partner = q
        .partner
        .as_deref()
        .map(str::parse::<ParticipantCode>)
        .transpose()
        .map_err(|e| invalid("invalid_query", "partner", e.to_string()))?;
    let period = q
        .period
        .as_deref()
        .map(str::parse::<crate::stats::Period>)
        .transpose()
        .map_err(|e| invalid("invalid_query", "period", e))?;
    let on = match q.on.as_deref() {
        Some(d) => d.parse::<Date>().map_err(|e| invalid("invalid_query", "on", e.to_string()))?,
        None => shared.now().date(),
    };
    let (store, me) = (shared.store.clone(), shared.me);
    let report = tokio::task::spawn_blocking(move || {
        crate::stats::reconcile(&store, me, partner, period.as_ref(), on)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(report))
}

/// An importing node's confirmation of receipt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ConfirmRequest {
    pub received_on: String,
    pub parcels: u32,
    pub carats: String,
    pub remarks: Option<String>,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| invalid("invalid_request", "", format!("{e}")))
}

#[utoipa::path(post, path = "/v1/certificates/{number}/confirm", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An inbound certificate's number")),
    request_body = ConfirmRequest,
    responses(
        (status = 200, description = "Signed and queued for the exporter", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Voided, already confirmed, or not inbound", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn confirm(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
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
    if let Some(why) = kp_exchange::engine::confirmable(&rec) {
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
#[derive(utoipa::ToSchema)]
pub struct VoidRequest {
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/certificates/{number}/void", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "An outbound certificate's number")),
    request_body = VoidRequest,
    responses(
        (status = 200, description = "Signed and queued for the importer", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Already voided, confirmed, or not outbound", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn void(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<queries::CertView>> {
    let req: VoidRequest = parse_body(&body)?;
    let reason: Text =
        req.reason.parse().map_err(|e| invalid("invalid_request", "reason", format!("{e}")))?;
    let rec = record(&shared, &number)?;
    if let Some(why) = kp_exchange::engine::voidable(&rec) {
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

/// Either participant's settlement of a certificate's import discrepancy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ResolveRequest {
    /// What was found and how it was settled.
    pub note: String,
    /// Who resolved it; default: this node's authority.
    #[serde(default)]
    pub resolved_by: Option<String>,
}

#[utoipa::path(post, path = "/v1/certificates/{number}/resolve", tag = "certificates",
    params(("number" = kp_protocol::CertificateNumber, Path, description = "A certificate in import_discrepancy, inbound or outbound")),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Signed, stored, and queued for the partner; `reconcile` no longer counts the discrepancy", body = queries::CertView),
        (status = 404, body = ErrorBody), (status = 409, description = "Not in import_discrepancy, or already resolved", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn resolve(
    State(shared): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<queries::CertView>> {
    let req: ResolveRequest = parse_body(&body)?;
    let note: kp_protocol::LongText =
        req.note.parse().map_err(|e| invalid("invalid_request", "note", format!("{e}")))?;
    let resolved_by: Text = match &req.resolved_by {
        Some(by) => by.parse().map_err(|e| invalid("invalid_request", "resolved_by", format!("{e}")))?,
        None => shared.config.authority.clone(),
    };
    let rec = record(&shared, &number)?;
    let existing: Option<crate::store::ResolutionRecord> = crate::store::get_record(
        &shared.store,
        crate::store::Tree::Meta,
        &crate::store::resolution_key(&rec.number),
    )?;
    if let Some(why) = kp_exchange::engine::resolvable(&rec, existing.as_ref()) {
        return Err(ApiError::Conflict(format!(
            "certificate {} is {}: {why}",
            rec.number,
            rec.status.as_str()
        )));
    }
    let resolution = kp_protocol::Resolution {
        certificate: rec.number.clone(),
        certificate_id: rec.message_id,
        note,
        resolved_by,
    };
    let document = shared.signer.sign(&resolution);
    updated(&shared, Command::Resolve { document, resolution: Box::new(resolution) }).await
}

#[utoipa::path(get, path = "/v1/peers", tag = "peers",
    responses((status = 200, body = Vec<queries::PeerView>), (status = 401, body = ErrorBody)))]
async fn peers(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Vec<queries::PeerView>>> {
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
async fn add_peer(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<queries::PeerView>)> {
    let req: AddPeerRequest = parse_body(&body)?;
    let (record, _) =
        kp_exchange::enrol::prepare(shared.me, &req.bundle, &req.fingerprint, req.endpoints, shared.now())
            .map_err(|e| invalid("invalid_bundle", "bundle", e.to_string()))?;
    let code = record.participant;
    let command = Command::EnrolPeer { record: Box::new(record), replace_identity: req.replace_identity };
    match shared.actor.call(command).await? {
        Outcome::Done => {}
        Outcome::Refused(EngineError::Enrol(e)) => {
            let field = match e {
                kp_exchange::enrol::EnrolError::IdentityChange { .. } => "replace_identity",
                _ => "bundle",
            };
            return Err(invalid("invalid_bundle", field, e.to_string()));
        }
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

fn participant_code(code: &str) -> ApiResult<ParticipantCode> {
    code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?}: {e}")))
}

#[utoipa::path(get, path = "/v1/participants", tag = "participants",
    responses((status = 200, description = "Every participant in force today", body = Vec<participants::ParticipantView>),
        (status = 401, body = ErrorBody)))]
async fn participants_list(State(shared): State<Arc<Shared>>) -> Json<Vec<participants::ParticipantView>> {
    Json(participants::list(&shared.registry.get(), shared.now().date()))
}

#[utoipa::path(get, path = "/v1/participants/{code}", tag = "participants",
    params(("code" = String, Path, description = "A participant or member state code")),
    responses((status = 200, body = participants::ParticipantDetail), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn participants_show(
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
async fn participants_set(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<participants::ParticipantDetail>> {
    let code = participant_code(&code)?;
    let req: participants::SetRequest = parse_body(&body)?;
    let today = shared.now().date();
    let entry = participants::prepare_set(&shared.registry.get(), today, code, &req)
        .map_err(|problems| ApiError::Invalid { error: "invalid_request", problems })?;
    tracing::info!(participant = %code, status = %entry.status, from = %entry.effective_from, "participant registry changed by the operator");
    match shared
        .actor
        .call(kp_exchange::engine::Command::record_participant(&shared.signer, entry, "operator", None))
        .await?
    {
        Outcome::Done => {}
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    participants::show(&shared.registry.get(), shared.now().date(), code)
        .map(Json)
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
async fn participants_import(
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
            );
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
        (status = 401, body = ErrorBody)))]
async fn participants_export(State(shared): State<Arc<Shared>>) -> Json<ExportedList> {
    Json(ExportedList {
        list: participants::export(&shared.registry.get(), shared.now().date(), &shared.signer),
    })
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
async fn remove_peer(
    State(shared): State<Arc<Shared>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<PeerRemoved>> {
    let code: ParticipantCode =
        code.parse().map_err(|e| invalid("invalid_request", "code", format!("{code:?} {e}")))?;
    match shared.actor.call(Command::RemovePeer { participant: code }).await? {
        Outcome::Done => {
            tracing::info!(peer = %code, "peer removed");
            let queued = queries::queued(&shared.store, code)?;
            Ok(Json(PeerRemoved { removed: code, queued }))
        }
        Outcome::Refused(e) => Err(e.into()),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

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
}

/// A peer whose record could not be loaded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantinedPeer {
    pub participant: ParticipantCode,
    pub reason: String,
}

#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Status>> {
    let counts =
        get_record::<crate::store::Counts, _>(&shared.store, Tree::Meta, meta::COUNTS)?.unwrap_or_default();
    let head = get_record::<crate::store::LogHead, _>(&shared.store, Tree::Meta, meta::LOG_HEAD)?
        .unwrap_or_default();
    let fingerprint = shared.keys.lock().unwrap_or_else(|p| p.into_inner()).fingerprint().to_string();
    let peers = queries::peer_views(&shared)?;
    let mut warnings = crate::state::key_age_warnings(&shared);
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
    Ok(Json(Status {
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
    }))
}

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
async fn keys(State(shared): State<Arc<Shared>>) -> ApiResult<Json<KeysView>> {
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
async fn rotate(State(shared): State<Arc<Shared>>, JsonBody(body): JsonBody) -> ApiResult<Json<Rotated>> {
    let req: RotateRequest =
        if body.is_empty() { RotateRequest { signing: false, tls: false } } else { parse_body(&body)? };
    let (signing, tls) = if !req.signing && !req.tls { (true, true) } else { (req.signing, req.tls) };
    let statement = shared.actor.rotate(signing, tls).await.map_err(|e| match e {
        ActorError::Rotation(m) => ApiError::Internal(m),
        other => other.into(),
    })?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/log", tag = "log",
    params(("from" = Option<u64>, Query, description = "first entry (default 1)"),
        ("limit" = Option<usize>, Query, description = "at most this many (default 1000, maximum 10000)")),
    responses((status = 200, body = Vec<queries::LogEntryView>), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn log(
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
async fn log_verify(State(shared): State<Arc<Shared>>) -> ApiResult<Json<LogVerification>> {
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

#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, body = ErrorBody)))]
async fn metrics(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
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
            name: "kpnode_log_entries",
            help: "Entries in the hash-chained log.",
            values: vec![(None, head.next_seq.saturating_sub(1))],
        },
    ];
    let text = shared.metrics.render(&gauges);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, description = "The node is up", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 503, description = "The store failed; the node is reopening it", body = ErrorBody)))]
async fn healthz(State(shared): State<Arc<Shared>>) -> ApiResult<&'static str> {
    match shared.store_health.failure() {
        Some(why) => {
            Err(ApiError::Unavailable(format!("the store failed ({why}); the node is reopening it")))
        }
        None => Ok("ok\n"),
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object), (status = 401, body = ErrorBody)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// Declares the bearer token.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The token in the node directory's api.token file"))
                    .build(),
            ),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "kpnode local API",
        description = "The local HTTP API of a kpnode: submit, follow, confirm and void Kimberley Process certificates; enrol peers; keys, log, status and metrics. JSON over HTTP; every route but /healthz needs `Authorization: Bearer <api.token>`."
    ),
    paths(submit, list, show, confirm, void, resolve, seal, kpc, stats, reconcile, peers, add_peer, remove_peer, participants_list, participants_show,
        participants_set, participants_import, participants_export, status, keys, rotate, log, log_verify, metrics,
        healthz, openapi_json),
    components(schemas(ErrorBody, Problem, kp_protocol::Certificate, kp_protocol::CertificateDraft)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "certificates", description = "Issue, follow, confirm and void certificates"),
        (name = "peers", description = "Partner nodes"),
        (name = "participants", description = "The participant registry: status (active, suspended, restricted) and unions"),
        (name = "keys", description = "This node's keys and its peers'"),
        (name = "log", description = "The hash-chained log"),
        (name = "statistics", description = "Trade statistics and partner reconciliation, from the log and the certificates"),
        (name = "node", description = "Status, metrics, health and this document")
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of this API, generated from the handlers and types above.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: ApiError) -> (StatusCode, String) {
        let r = e.into_response();
        let status = r.status();
        let body = body_of(r);
        (status, body)
    }

    fn body_of(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// sled's I/O error on a read (after a full disk) is a 503 naming the cause and the fix,
    /// not a 500 "internal"; a damaged record stays a 500.
    #[test]
    fn a_failed_store_answers_503_naming_the_failure() {
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let (status, body) = answer(
            StoreError::Backend { source: Box::new(full), io: Some(std::io::ErrorKind::StorageFull) }.into(),
        );
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(r#""error":"unavailable""#), "{body}");
        assert!(body.contains("No space left on device"), "{body}");
        assert!(body.contains("free space on the disk holding the store"), "{body}");
        assert!(body.contains("reopens its store by itself"), "{body}");

        let damaged =
            StoreError::Corrupt { tree: "certs", key: "RU-2026-000001".into(), detail: "bad".into() };
        let (status, body) = answer(damaged.into());
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body.contains("is damaged"), "{body}");

        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let (status, body) = answer(seal_error(crate::seal::SealError::Store(StoreError::Backend {
            source: Box::new(full),
            io: Some(std::io::ErrorKind::StorageFull),
        })));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
}
