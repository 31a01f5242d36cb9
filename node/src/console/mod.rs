//! The console: server-rendered pages for the authority's people, on the API's listener under
//! `/` (the JSON API stays under `/v1`), sign-in at `/login`.
//!
//! Pages are thin views: each handler calls the same functions the API's handlers do (the
//! status, the certificate queries, the void) and hands the result to an askama template in
//! `node/templates/`. Templates are compiled into the binary and escape HTML by default.
//!
//! Security, in one place: sessions and the sign-in throttle ([`session`]); every page needs a
//! session ([`SignedIn`]); every form carries the session's CSRF token, checked before
//! anything else ([`SignedIn::check_csrf`]); every action checks the user's role on the
//! server ([`SignedIn::require`]), answering 403 and changing nothing; the session cookie is
//! HttpOnly and SameSite=Strict, and Secure when the reverse proxy says the request came over
//! TLS (`X-Forwarded-Proto: https`).
//!
//! # Layout
//! [`login`]: sign-in, sign-out, the change of password; [`dashboard`]: the node at a glance;
//! [`certificates`]: the list, a certificate's page and its actions; [`issue`]: the form that
//! issues a certificate; [`session`]: sessions and
//! the throttle; [`verify`]: a `.kpc` or a QR seal checked, with the certificate's status here;
//! [`qr`]: a certificate's QR seal; [`partners`]: enrolled peers, enrolment and removal;
//! [`participants`]: the registry and its changes; [`statistics`]: the reports and the
//! reconciliation; [`upload`]: the upload forms' bodies.

mod certificates;
mod dashboard;
mod issue;
mod login;
mod participants;
mod partners;
mod qr;
pub mod session;
mod statistics;
mod upload;
mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::service::accounts::{self, Account, Action, Role};
use crate::state::Shared;
use session::{Session, Sessions, Throttle};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kpnode_session";
/// The sign-in form's CSRF cookie (double submit: there is no session yet to tie it to).
pub const LOGIN_COOKIE: &str = "kpnode_login";
/// The form field every form's CSRF token is sent in.
pub const CSRF_FIELD: &str = "csrf";

/// What the console's handlers share.
#[derive(Debug)]
pub struct Console {
    shared: Arc<Shared>,
    sessions: Sessions,
    throttle: Throttle,
    /// Argon2 verifications of sign-ins running at once, at most [`MAX_VERIFYING`]: each
    /// takes ~19 MiB and a core for a moment, so a burst of sign-ins cannot take the node's
    /// memory.
    verifying: tokio::sync::Semaphore,
    /// The dashboard's counts of certificates by status.
    counts: dashboard::StatusCounts,
    /// The statistics page's figures, by period.
    stats: statistics::StatsCache,
}

/// The largest body a console form (but the issue form) sends: its routes are not the
/// API's, so `api.max_body_bytes` (set for certificates) does not apply to them.
pub const FORM_BODY_LIMIT: usize = 64 << 10;
/// Sign-in password checks running at once at most; beyond that a sign-in is answered 503.
pub const MAX_VERIFYING: usize = 2;

/// The console's routes, to be merged with the API's on its listener.
pub fn router(shared: Arc<Shared>) -> Router {
    let issue_limit = (shared.config.api.max_body_bytes as usize).max(FORM_BODY_LIMIT);
    let console = Arc::new(Console {
        shared,
        sessions: Sessions::default(),
        throttle: Throttle::default(),
        verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        counts: dashboard::StatusCounts::default(),
        stats: statistics::StatsCache::default(),
    });
    Router::new()
        .route("/", get(dashboard::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/password", get(login::password_form).post(login::password_submit))
        .route("/certificates", get(certificates::list))
        // The issue form of a thousand parcels is larger than any other form: it may be as
        // large as a certificate posted to the API.
        .route(
            "/certificates/new",
            get(issue::form).post(issue::submit).layer(DefaultBodyLimit::max(issue_limit)),
        )
        .route("/certificates/{number}", get(certificates::show))
        .route("/certificates/{number}/void", post(certificates::void))
        .route("/certificates/{number}/confirm", post(certificates::confirm))
        .route("/certificates/{number}/kpc", get(certificates::kpc))
        .route("/certificates/{number}/qr.svg", get(qr::svg))
        .route("/certificates/{number}/qr.png", get(qr::png))
        // Uploads: their own limits, the bodies read whole (see `upload`).
        .route(
            "/verify",
            get(verify::form).post(verify::submit).layer(DefaultBodyLimit::max(verify::MAX_UPLOAD_BYTES)),
        )
        .route(
            "/partners",
            get(partners::list)
                .post(partners::enrol)
                .layer(DefaultBodyLimit::max(partners::MAX_BUNDLE_UPLOAD)),
        )
        .route("/partners/{code}/remove", post(partners::remove))
        .route("/participants", get(participants::list))
        .route("/participants/{code}", get(participants::show).post(participants::set))
        .route("/statistics", get(statistics::page))
        .route("/statistics/chart.svg", get(statistics::chart))
        .route("/statistics/statistics.csv", get(statistics::csv))
        .route("/console.css", get(stylesheet))
        .layer(DefaultBodyLimit::max(FORM_BODY_LIMIT))
        .layer(axum::middleware::map_response(page_headers))
        .with_state(console)
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../templates/console.css"))
}

/// Headers on every console answer: no caching of pages that show certificates, no framing,
/// only this origin's scripts and styles, no sniffing.
async fn page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What every page's header shows: who is signed in, what their role lets them reach, and the
/// CSRF token for the sign-out form.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// Whether the role may issue certificates (the menu offers the form).
    pub can_issue: bool,
    /// Whether the menu offers the Verify page.
    pub can_verify: bool,
    /// Whether the menu offers the Partners page (supervisors manage, auditors read).
    pub can_see_partners: bool,
    /// Whether the menu offers the Statistics page.
    pub can_audit: bool,
}

/// A signed-in request: its session and the account as stored now.
#[derive(Debug)]
pub struct SignedIn {
    pub session_id: String,
    pub session: Session,
    pub account: Account,
}

impl SignedIn {
    /// The officer of what this user does: the log entries name their account.
    pub fn officer(&self) -> crate::store::Officer {
        crate::state::officer_named(&self.account.name)
    }

    pub fn nav(&self) -> Nav {
        Nav {
            user: self.account.name.clone(),
            role: self.account.role,
            csrf: self.session.csrf.clone(),
            can_issue: self.account.role.may(Action::Issue),
            can_verify: self.account.role.may(Action::Verify),
            can_see_partners: self.account.role.may(Action::ManagePeers)
                || self.account.role.may(Action::Audit),
            can_audit: self.account.role.may(Action::Audit),
        }
    }

    /// Refuses a form without this session's CSRF token (403): it was not sent by a page of
    /// this session.
    pub fn check_csrf(&self, form: &[(String, String)]) -> Result<(), PageError> {
        let sent = field(form, CSRF_FIELD).unwrap_or("");
        if session::same_secret(sent, &self.session.csrf) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form was not sent from this console session (its security token is missing or old). \
Reload the page and send the form again.",
            ))
        }
    }

    /// Refuses an action the user's role does not allow (403), before anything is done.
    pub fn require(&self, action: Action, what: &str) -> Result<(), PageError> {
        if self.account.role.may(action) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                format!("Your role ({}) may not {what}. Ask a supervisor.", self.account.role),
            ))
        }
    }
}

/// The first value of a form field.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(to_login()) };
        let Some(session) = console.sessions.touch(id, Instant::now()) else { return Err(to_login()) };
        let account = match accounts::get(&console.shared.store, &session.user) {
            Ok(a) if !a.disabled => a,
            Ok(_) | Err(accounts::AccountError::NotFound(_)) => {
                console.sessions.close_user(&session.user, None);
                return Err(to_login());
            }
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        // A one-time password buys nothing but the choice of a new one.
        if account.must_change_password && parts.uri.path() != "/password" && parts.uri.path() != "/logout" {
            return Err(Redirect::to("/password").into_response());
        }
        Ok(SignedIn { session_id: id.to_owned(), session, account })
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached the reverse proxy over TLS: then cookies are marked Secure.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure over TLS; `max_age` 0 deletes it.
pub fn set_cookie(headers: &HeaderMap, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    // Names and values are ours (hex tokens, fixed names): always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The address a request comes from (see [`source_address`]), for the sign-in throttle.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Self::Rejection> {
        Ok(Source(source_address(parts)))
    }
}

/// The address a sign-in comes from: the connection's, or, when that is the loopback
/// reverse proxy, the last address it added to `X-Forwarded-For`.
pub fn source_address(parts: &Parts) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !peer.is_loopback() {
        return peer;
    }
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

/// An error answered as a page, with its status.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError { status, message: message.into() }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage { nav: None, title, message: &self.message };
        (self.status, render(&page)).into_response()
    }
}

impl From<crate::api::ApiError> for PageError {
    /// The API's errors, as pages: the same status, the same message.
    fn from(e: crate::api::ApiError) -> PageError {
        let (status, message) = e.status_and_message();
        PageError::new(status, message)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> PageError {
        crate::api::ApiError::from(e).into()
    }
}

impl From<accounts::AccountError> for PageError {
    fn from(e: accounts::AccountError) -> PageError {
        let status = if e.is_invalid_input() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        PageError::new(status, e.to_string())
    }
}

/// A template as an HTML answer; a template that fails to render (a bug) answers 500.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; the node's log says why")
                .into_response()
        }
    }
}

/// The result of a page handler.
pub type PageResult = Result<Response, PageError>;
