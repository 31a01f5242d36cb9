//! The `users` tag: the console's accounts, for `kpnode users …` on a running daemon. Behind
//! the bearer token like every route: the machine's operator manages the people.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{parse_body, ApiError, ApiPath, ApiResult, ErrorBody, JsonBody};
use crate::service::accounts::{self, Account, Role};
use crate::state::Shared;

#[utoipa::path(get, path = "/v1/users", tag = "users",
    responses((status = 200, body = Vec<Account>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn users(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(accounts::list(&shared.store)?))
}

/// A new account. Without `password`, a one-time password is made and answered once; the
/// user must change it at first sign-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    pub name: String,
    /// Read as text and checked by the accounts' own rule, so that a bad role is answered
    /// naming the field and the roles there are.
    #[schema(value_type = Role)]
    pub role: String,
    /// The console's language for the user: a code of a shipped catalogue (`en`, `ru`);
    /// English when left out.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// An account made or whose password was set, with the one-time password if one was made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPassword {
    pub account: Account,
    /// Shown once; only its Argon2id hash is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = AddUserRequest,
    responses((status = 201, body = UserPassword), (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A bad name, role or password, naming the field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn add_user(
    State(shared): State<Arc<Shared>>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<UserPassword>)> {
    let req: AddUserRequest = parse_body(&body)?;
    let role: Role = req.role.parse()?;
    let now = shared.now();
    let store = shared.store.clone();
    // Argon2 is tens of milliseconds of CPU: off the async workers.
    let added = blocking(move || {
        accounts::add(&store, &req.name, role, req.language.as_deref(), req.password.as_deref(), now)
    })
    .await??;
    tracing::info!(user = %added.account.name, role = %added.account.role, "console account added");
    Ok((
        StatusCode::CREATED,
        Json(UserPassword { account: added.account, one_time_password: added.one_time_password }),
    ))
}

#[utoipa::path(post, path = "/v1/users/{name}/disable", tag = "users",
    params(("name" = String, Path, description = "The account's name")),
    responses((status = 200, description = "Disabled: it cannot sign in, and its sessions end", body = Account),
        (status = 404, body = ErrorBody), (status = 422, description = "Not a valid account name", body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn disable_user(
    State(shared): State<Arc<Shared>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Account>> {
    let account = accounts::disable(&shared.store, &name)?;
    tracing::info!(user = %account.name, "console account disabled");
    Ok(Json(account))
}

/// A new password for an account; without `password`, a one-time password is made.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    #[serde(default)]
    pub password: Option<String>,
}

#[utoipa::path(post, path = "/v1/users/{name}/password", tag = "users", request_body = PasswordRequest,
    params(("name" = String, Path, description = "The account's name")),
    responses((status = 200, body = UserPassword), (status = 404, body = ErrorBody),
        (status = 422, description = "A password outside the rules", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn set_password(
    State(shared): State<Arc<Shared>>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<UserPassword>> {
    let req: PasswordRequest = if body.is_empty() { PasswordRequest::default() } else { parse_body(&body)? };
    let now = shared.now();
    let store = shared.store.clone();
    let (account, one_time_password) =
        blocking(move || accounts::reset_password(&store, &name, req.password.as_deref(), now)).await??;
    tracing::info!(user = %account.name, "console account's password set");
    Ok(Json(UserPassword { account, one_time_password }))
}

/// What an unlock cleared.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unlocked {
    pub name: String,
    /// Whether any lock or slowdown was in force (false: there was nothing to clear).
    pub was_locked: bool,
}

#[utoipa::path(post, path = "/v1/users/{name}/unlock", tag = "users",
    params(("name" = String, Path, description = "The account's name")),
    responses((status = 200, description = "The account's sign-in locks and slowdown (from every address) are cleared", body = Unlocked),
        (status = 404, body = ErrorBody), (status = 422, description = "Not a valid account name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn unlock_user(
    State(shared): State<Arc<Shared>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Unlocked>> {
    let account = accounts::get(&shared.store, &name)?;
    let was_locked = shared.sign_in_throttle.unlock(&account.name, std::time::Instant::now());
    tracing::info!(user = %account.name, was_locked, "console account's sign-in locks cleared");
    Ok(Json(Unlocked { name: account.name, was_locked }))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("account task failed: {e}")))
}
