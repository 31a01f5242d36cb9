//! The local HTTP API: JSON over HTTP on `api_listen`, every route but `/healthz` behind the
//! bearer token in `api.token`. A thin layer: handlers parse, call the same signer, store
//! actor and queries as everything else, and shape the answer.
//!
//! Errors are JSON: `{"error": "<code>", "message": "…"}`, and for invalid input (422)
//! `{"error": "invalid_certificate", "problems": [{"field": "…", "message": "…"}]}`
//! (`error`: the status each kind of failure is answered with).
//!
//! Here: the router, the bearer-token check, the request extractors and the OpenAPI
//! document. The handlers live in one file per OpenAPI tag: `certificates`, `statistics`,
//! `peers`, `participants`, `keys`, `log`, `node`, `users`. [`http`] serves the router.

mod backup;
mod certificates;
mod error;
pub mod http;
mod keys;
mod log;
mod node;
mod participants;
mod peers;
mod recover;
mod statistics;
mod users;

pub use certificates::{
    confirm_certificate, confirm_refusal, kpc_text, list_views, list_views_bounded, show_view,
    void_certificate, void_refusal, ConfirmRequest, ListQuery, DEFAULT_LIST_LIMIT, IDEMPOTENCY_HEADER,
    MAX_LIST_LIMIT, MAX_LIST_SCANNED, NEXT_CURSOR_HEADER,
};
use error::{invalid, ApiResult};
pub use error::{ApiError, ErrorBody};
pub use keys::keys_view;
pub use node::{status_view, Status};
pub use participants::set_participant;
pub use peers::{enrol_peer, remove as remove_peer_now, AddPeerRequest, PeerRemoved};
pub use statistics::{reconciliation, stats_report, ReconcileQuery, StatsQuery};

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use kp_protocol::Problem;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::state::Shared;
use certificates::{confirm, kpc, list, pdf, replace, resolve, seal, show, submit, submit_batch, void};
use keys::{keys, rotate};
use log::{log, log_verify};
use node::{healthz, metrics, openapi_json, status};
use participants::{
    participants_export, participants_import, participants_list, participants_set, participants_show,
};
use peers::{add_peer, peers, remove_peer};
use statistics::{reconcile, stats};
use users::{add_user, disable_user, set_password, unlock_user, users};

/// Serves the API until the node stops; requests in progress are finished. Connections are
/// capped and must send their headers in time (see [`crate::api::http`]).
/// `beside` is served on the same listener, outside `/v1` (the console's pages).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, beside: Router) {
    let (cancel, metrics) = (shared.cancel.clone(), shared.metrics.clone());
    let limits = crate::api::http::Limits::of(&shared.config.api);
    crate::api::http::serve(listener, router(shared).merge(beside), limits, metrics, cancel).await;
}

pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.api.max_body_bytes as usize;
    let protected = Router::new()
        .route("/v1/certificates", post(submit).get(list))
        .route(
            "/v1/certificates/batch",
            post(submit_batch).layer(DefaultBodyLimit::max(
                limit.saturating_mul(crate::service::issuing::BATCH_BODY_FACTOR),
            )),
        )
        .route("/v1/certificates/{number}", get(show))
        .route("/v1/certificates/{number}/confirm", post(confirm))
        .route("/v1/certificates/{number}/void", post(void))
        .route("/v1/certificates/{number}/replace", post(replace))
        .route("/v1/certificates/{number}/resolve", post(resolve))
        .route("/v1/certificates/{number}/seal", get(seal))
        .route("/v1/certificates/{number}/kpc", get(kpc))
        .route("/v1/certificates/{number}/pdf", get(pdf))
        .route("/v1/stats", get(stats))
        .route("/v1/reconcile", get(reconcile))
        .route("/v1/peers", get(peers).post(add_peer))
        .route("/v1/peers/{code}", delete(remove_peer))
        .route("/v1/participants", get(participants_list))
        .route("/v1/participants/import", post(participants_import))
        .route("/v1/participants/export", get(participants_export))
        .route("/v1/participants/{code}", get(participants_show).post(participants_set))
        .route("/v1/users", get(users).post(add_user))
        .route("/v1/users/{name}/disable", post(disable_user))
        .route("/v1/users/{name}/password", post(set_password))
        .route("/v1/users/{name}/unlock", post(unlock_user))
        .route("/v1/status", get(status))
        .route("/v1/keys", get(keys))
        .route("/v1/keys/rotate", post(rotate))
        .route("/v1/log", get(log))
        .route("/v1/log/verify", get(log_verify))
        .route("/v1/backup/snapshot", post(backup::snapshot))
        .route("/v1/recover/{code}", post(recover::recover))
        .route("/v1/recovery/finish", post(recover::finish))
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
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge(
                "the request body is larger than api.max_body_bytes (node.toml) allows".into(),
            )),
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

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| invalid("invalid_request", "", format!("{e}")))
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
    paths(certificates::submit, certificates::submit_batch, certificates::list, certificates::show, certificates::confirm, certificates::void, certificates::replace,
        certificates::resolve, certificates::seal, certificates::kpc, certificates::pdf, statistics::stats, statistics::reconcile,
        peers::peers, peers::add_peer, peers::remove_peer, participants::participants_list,
        participants::participants_show, participants::participants_set, participants::participants_import,
        participants::participants_export, node::status, keys::keys, keys::rotate, log::log, log::log_verify,
        backup::snapshot, recover::recover, recover::finish, node::metrics, node::healthz, node::openapi_json, users::users, users::add_user,
        users::disable_user, users::set_password, users::unlock_user),
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
        (name = "users", description = "The console's accounts: people who sign in at / with a role"),
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
