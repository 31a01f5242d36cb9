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
//! HttpOnly and SameSite=Strict, and when the reverse proxy says the request came over TLS
//! (`X-Forwarded-Proto: https`) it is Secure and `__Host-` prefixed, and answers carry HSTS.
//! A change of one's own password moves the browser to a new session (no fixation); an
//! account holds at most [`session::MAX_SESSIONS_PER_USER`] sessions. Forwarded headers are believed only from the addresses in
//! `api.trusted_proxies` ([`Client`]).
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
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::service::accounts::{self, Account, Action, Role};
use crate::service::i18n::{self, Catalogue};
use crate::state::Shared;
use session::{Session, Sessions};

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "kpnode_session";
/// The session cookie's name over TLS: the `__Host-` prefix makes the browser refuse it unless
/// it is Secure, for the whole host (`Path=/`) and names no `Domain`, so a neighbouring host or
/// a plain-HTTP page cannot plant or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-kpnode_session";
/// How long browsers are told to come back only over HTTPS (a year), sent when the console is
/// known to be served over TLS (the trusted proxy said so).
pub const HSTS: &str = "max-age=31536000";

/// The session cookie's name for a request that did (or did not) come over TLS.
pub fn session_cookie(tls: bool) -> &'static str {
    if tls {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}
/// The sign-in form's CSRF cookie (double submit: there is no session yet to tie it to).
pub const LOGIN_COOKIE: &str = "kpnode_login";
/// The form field every form's CSRF token is sent in.
pub const CSRF_FIELD: &str = "csrf";

/// What the console's handlers share.
#[derive(Debug)]
pub struct Console {
    shared: Arc<Shared>,
    sessions: Sessions,
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
        verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        counts: dashboard::StatusCounts::default(),
        stats: statistics::StatsCache::default(),
    });
    Router::new()
        .route("/", get(dashboard::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/password", get(login::password_form).post(login::password_submit))
        .route("/language", post(login::language_submit))
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
        .layer(axum::middleware::from_fn_with_state(console.clone(), transport_security))
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

/// `Strict-Transport-Security` on every console answer to a request that came over TLS
/// through a trusted proxy: the browser then never tries the console over plain HTTP, where the
/// session cookie could be stripped or a page altered. Over plain HTTP it would be ignored (and
/// must not be sent: the console may be served so on purpose, on a closed network).
async fn transport_security(
    State(console): State<Arc<Console>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let tls = client(peer, request.headers(), &console.shared.config.api.trusted_proxies).tls;
    let mut response = next.run(request).await;
    if tls {
        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

/// What every page's header shows: who is signed in, what their role lets them reach, and the
/// CSRF token for the sign-out form.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    /// The role's name in the user's language.
    pub role: String,
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

/// A catalogue key passed around as a value, written `Msg` of the key's string literal so the
/// catalogue test finds it.
#[derive(Debug, Clone, Copy)]
pub struct Msg(pub &'static str);

/// The name of `role` in the language of `tr`.
pub fn role_name(tr: &Catalogue, role: Role) -> String {
    tr.t(&format!("role-{}", role.as_str()))
}

/// The catalogue keys made at run time (`role-…`, `status-…`, `direction-…`,
/// `participant-status-…`, `error-title-…`):
/// the catalogue test adds them to the keys it finds written out.
pub fn dynamic_keys() -> Vec<String> {
    let mut keys: Vec<String> = Role::ALL.iter().map(|r| format!("role-{}", r.as_str())).collect();
    keys.extend(crate::store::CertStatus::ALL.iter().map(|s| format!("status-{}", s.as_str())));
    keys.extend(["out", "in", "local"].iter().map(|d| format!("direction-{d}")));
    keys.extend(participants::STATUSES.iter().map(|s| format!("participant-status-{}", s.as_str())));
    keys.extend(ERROR_TITLES.iter().map(|c| format!("error-title-{c}")));
    keys.extend(kp_protocol::TransportMode::ALL.iter().map(|m| format!("transport-mode-{m}")));
    keys.extend(problem_ids().iter().map(|(id, _)| format!("problem-{id}")));
    keys
}

/// Every coded problem a page can show (the certificate's, the registry's, the node's own and
/// the enrolment's), with the names of its arguments: each is `problem-<id>` in every catalogue.
pub fn problem_ids() -> Vec<(&'static str, &'static [&'static str])> {
    let mut ids = kp_protocol::problem::ProblemText::ALL.to_vec();
    ids.extend_from_slice(kp_exchange::registry::RegistryText::ALL);
    ids.extend_from_slice(crate::service::NodeText::ALL);
    ids.extend_from_slice(kp_exchange::enrol::EnrolText::ALL);
    ids
}

/// The statuses whose error page has a title of its own (`error-title-<code>`); any other
/// has `error-title`.
const ERROR_TITLES: [u16; 9] = [400, 403, 404, 409, 413, 422, 429, 500, 503];

impl SignedIn {
    /// The user's catalogue: the language stored with the account.
    pub fn tr(&self) -> &'static Catalogue {
        i18n::catalogue(&self.account.language)
    }

    /// `e` as a page in the user's language.
    pub fn localize(&self, e: impl Into<PageError>) -> PageError {
        let mut e = e.into();
        e.tr = Some(self.tr());
        e
    }

    /// The officer of what this user does: the log entries name their account.
    pub fn officer(&self) -> crate::store::Officer {
        crate::state::officer_named(&self.account.name)
    }

    pub fn nav(&self) -> Nav {
        Nav {
            user: self.account.name.clone(),
            role: role_name(self.tr(), self.account.role),
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
            Err(self.localize(PageError::new(StatusCode::FORBIDDEN, self.tr().t("error-csrf"))))
        }
    }

    /// Refuses an action the user's role does not allow (403), before anything is done;
    /// `refusal` says so, with the role's name as `{ $role }`.
    pub fn require(&self, action: Action, refusal: Msg) -> Result<(), PageError> {
        if self.account.role.may(action) {
            Ok(())
        } else {
            let tr = self.tr();
            let message = tr.t1(refusal.0, "role", role_name(tr, self.account.role));
            Err(self.localize(PageError::new(StatusCode::FORBIDDEN, message)))
        }
    }
}

/// What `p` says, in the language of `tr`: its coded message (`problem-<id>` with its
/// arguments, dates written the language's way), or its English text when it has no id or the
/// catalogue lacks the message.
pub fn problem_text(tr: &Catalogue, p: &kp_protocol::Problem) -> String {
    p.coded.as_ref().and_then(|coded| coded_text(tr, coded)).unwrap_or_else(|| p.message.clone())
}

/// `coded` in the language of `tr` (`problem-<id>` with its arguments, dates written the
/// language's way, an argument `status` that is a certificate status by its name in the
/// language), or `None` when the catalogue lacks the message.
pub fn coded_text(tr: &Catalogue, coded: &kp_protocol::problem::Coded) -> Option<String> {
    use fluent_bundle::FluentValue;
    use kp_protocol::problem::Arg;
    let key = format!("problem-{}", coded.id);
    if !tr.has(&key) {
        return None;
    }
    let args: Vec<(&str, FluentValue<'_>)> = coded
        .args
        .iter()
        .map(|(name, arg)| {
            let value = match arg {
                Arg::Text(t) if *name == "status" && tr.has(&format!("status-{t}")) => {
                    FluentValue::from(tr.t(&format!("status-{t}")))
                }
                Arg::Text(t) => FluentValue::from(shown_arg(t)),
                Arg::Number(n) => FluentValue::from(*n),
                Arg::Date(d) => FluentValue::from(tr.date(*d)),
            };
            (*name, value)
        })
        .collect();
    Some(tr.format(&key, &args))
}

/// A text argument as a page shows it: what a user typed can be quoted back in a message, so
/// it is cut to [`MAX_ARG_CHARS`] characters and its control and formatting characters (a
/// right-to-left override would reorder the rest of the sentence) are written as escapes.
fn shown_arg(t: &str) -> String {
    let mut out = String::new();
    for (i, c) in t.chars().enumerate() {
        if i == MAX_ARG_CHARS {
            out.push('…');
            break;
        }
        let invisible = c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}');
        if invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest text argument a message quotes whole.
const MAX_ARG_CHARS: usize = 80;

/// The first value of a form field.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let tls = client(peer, &parts.headers, &console.shared.config.api.trusted_proxies).tls;
        // Over TLS only the `__Host-` cookie is believed: a plain one could have been planted.
        let Some(id) = cookie(&parts.headers, session_cookie(tls)) else { return Err(to_login()) };
        let Some(session) = console.sessions.touch(id, Instant::now()) else { return Err(to_login()) };
        let account = match accounts::get(&console.shared.store, &session.user) {
            // A password set since this session signed in (`users passwd`, or the user's own
            // change from another session) ends it, as does disabling the account.
            Ok(a) if !a.disabled && a.password_generation == session.generation => a,
            Ok(a) if !a.disabled => {
                console.sessions.close(id);
                return Err(to_login());
            }
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

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure when `secure` (the request came
/// over TLS, see [`Client`]); `max_age` 0 deletes it.
pub fn set_cookie(secure: bool, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    // Names and values are ours (hex tokens, fixed names): always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a request comes from, as far as the console can tell: the address the sign-in
/// throttle counts, and whether it came over TLS (then cookies are marked Secure).
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub source: IpAddr,
    pub tls: bool,
}

impl FromRequestParts<Arc<Console>> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Client, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(client(peer, &parts.headers, &console.shared.config.api.trusted_proxies))
    }
}

/// The client of a request from `peer` with `headers`. Only when `peer` is one of the
/// `trusted` reverse proxies are its headers believed: the source is then the last address of
/// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address it
/// was reached from; anything before that the client could have written), and TLS is its
/// `X-Forwarded-Proto: https`. From any other peer, the headers are ignored: the peer's own
/// address is the source, and the connection (plain HTTP) is not TLS.
pub fn client(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Client {
    let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let canonical = |a: IpAddr| a.to_canonical();
    if !trusted.iter().any(|t| canonical(*t) == canonical(peer)) {
        return Client { source: peer, tls: false };
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut source = peer;
    for item in forwarded.iter().rev() {
        // A malformed entry stops the walk at the last trusted hop: never an address the
        // client picked.
        let Ok(a) = item.parse::<IpAddr>() else { break };
        source = a;
        if !trusted.iter().any(|t| canonical(*t) == canonical(a)) {
            break;
        }
    }
    // The last value across every header line is the trusted proxy's own (a proxy that
    // appends rather than overwrites leaves the client's words before it).
    let tls =
        headers.get_all("x-forwarded-proto").iter().next_back().and_then(|v| v.to_str().ok()).is_some_and(
            |v| v.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("https")),
        );
    Client { source, tls }
}

/// An error answered as a page, with its status, in the user's language when known.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    /// In English (or already in the user's language, for the console's own messages).
    pub message: String,
    /// The user's catalogue ([`SignedIn::localize`]); English when `None`.
    pub tr: Option<&'static Catalogue>,
    /// `message` by message id and arguments, said in the language of `tr` when it has it.
    pub coded: Option<kp_protocol::problem::Coded>,
    /// The problems of invalid input behind the error, each said after `message`.
    pub problems: Vec<kp_protocol::Problem>,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError { status, message: message.into(), tr: None, coded: None, problems: Vec::new() }
    }

    /// What the page says: the message and then each problem ("field: what"), in the language
    /// of `tr` where the catalogue has them, else in English.
    pub fn text(&self) -> String {
        let Some(tr) = self.tr else { return self.english() };
        let message =
            self.coded.as_ref().and_then(|c| coded_text(tr, c)).unwrap_or_else(|| self.message.clone());
        let problems = self.problems.iter().map(|p| (p.field.as_str(), problem_text(tr, p)));
        Self::join(message, problems)
    }

    /// The message and problems as the API says them.
    fn english(&self) -> String {
        Self::join(self.message.clone(), self.problems.iter().map(|p| (p.field.as_str(), p.message.clone())))
    }

    fn join<'a>(message: String, problems: impl Iterator<Item = (&'a str, String)>) -> String {
        let mut lines: Vec<String> = Some(message).filter(|m| !m.is_empty()).into_iter().collect();
        lines.extend(
            problems.map(|(field, text)| if field.is_empty() { text } else { format!("{field}: {text}") }),
        );
        lines.join("; ")
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let tr = self.tr.unwrap_or_else(|| i18n::catalogue(i18n::DEFAULT_LANGUAGE));
        let code = self.status.as_u16();
        let title = if ERROR_TITLES.contains(&code) {
            tr.t(&format!("error-title-{code}"))
        } else {
            tr.t("error-title")
        };
        let message = self.text();
        let page = ErrorPage { tr, nav: None, title: &title, message: &message };
        (self.status, render(&page)).into_response()
    }
}

impl From<crate::api::ApiError> for PageError {
    /// The API's errors, as pages: the same status, the same message (said in the user's
    /// language once [`SignedIn::localize`]d, where the error has a message id).
    fn from(e: crate::api::ApiError) -> PageError {
        let coded = e.text().cloned();
        let (status, body) = e.parts();
        PageError {
            coded,
            problems: body.problems.unwrap_or_default(),
            ..PageError::new(status, body.message.unwrap_or_default())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_quoted_argument_is_cut_and_shows_its_invisible_characters() {
        assert_eq!(shown_arg("RU-2026-000001"), "RU-2026-000001");
        assert_eq!(shown_arg("evil\u{202E}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(shown_arg("a\nb"), "a\\u{a}b");
        let long = shown_arg(&"я".repeat(500));
        assert_eq!(long.chars().count(), MAX_ARG_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn the_trusted_proxys_own_forwarded_proto_line_decides() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        // The client wrote "https" itself; the proxy appended its own line saying "http".
        let h = headers(&[("x-forwarded-proto", "https"), ("x-forwarded-proto", "http")]);
        assert!(!client(Some(proxy), &h, &[proxy]).tls);
        let h = headers(&[("x-forwarded-proto", "http"), ("x-forwarded-proto", "https")]);
        assert!(client(Some(proxy), &h, &[proxy]).tls);
    }

    /// Every catalogue key written out in the console's templates and code: the string
    /// literal first argument of the catalogue's `t`, `t1`, `t2`, `count` and `format`, and of `Msg`.
    fn keys_used() -> std::collections::BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates", "src/console"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        files.push(root.join("src/service/i18n.rs"));
        let mut keys = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Code, not its tests (this scanner's own patterns are among them).
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for call in [".t(", ".t1(", ".t2(", ".count(", ".format(", "Msg("] {
                for (at, _) in text.match_indices(call) {
                    let rest = &text[at + call.len()..];
                    let Some(rest) = rest.trim_start().strip_prefix('"') else { continue };
                    let key: String = rest.chars().take_while(|c| *c != '"').collect();
                    assert!(
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                        "{}: {key:?} is not a message key",
                        file.display()
                    );
                    keys.insert(key);
                }
            }
        }
        keys.extend(dynamic_keys());
        keys
    }

    #[test]
    fn every_key_used_is_in_every_catalogue_and_no_catalogue_has_another() {
        let used = keys_used();
        assert!(
            used.len() > 100 && used.contains("login-title") && used.contains("status-voided"),
            "{used:?}"
        );
        for catalogue in i18n::load_all().unwrap() {
            let ids: std::collections::BTreeSet<String> = catalogue.ids().into_iter().collect();
            let missing: Vec<&String> = used.difference(&ids).collect();
            let unknown: Vec<&String> = ids.difference(&used).collect();
            assert!(
                missing.is_empty() && unknown.is_empty(),
                "node/data/console/{}.ftl: missing {missing:?}, not used anywhere {unknown:?}",
                catalogue.code()
            );
        }
    }

    /// The variables (`{ $name }`) the message `id` of the catalogue file `text` uses.
    fn variables(text: &str, id: &str) -> std::collections::BTreeSet<String> {
        let start = format!("{id} =");
        let mut body = String::new();
        let mut lines = text.lines().skip_while(|l| !l.starts_with(&start));
        if let Some(first) = lines.next() {
            body.push_str(first);
            // Continuation lines are indented; the next message, comment or blank line ends it.
            for l in lines.take_while(|l| l.starts_with(' ')) {
                body.push_str(l);
            }
        }
        body.match_indices('$')
            .map(|(at, _)| {
                body[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_problem_id_is_in_every_catalogue_with_the_same_arguments() {
        let ids = problem_ids();
        assert!(
            ids.iter().any(|(id, _)| *id == "parcels-none")
                && ids.iter().any(|(id, _)| *id == "importing-suspended")
                && ids.iter().any(|(id, _)| *id == "received-in-future"),
            "the three crates' problems are all listed"
        );
        let mut seen = std::collections::BTreeSet::new();
        for (id, _) in &ids {
            assert!(seen.insert(*id), "problem id {id} is declared twice");
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for catalogue in i18n::load_all().unwrap() {
            let file = root.join(format!("data/console/{}.ftl", catalogue.code()));
            let text = std::fs::read_to_string(&file).unwrap();
            for (id, args) in &ids {
                let key = format!("problem-{id}");
                assert!(catalogue.has(&key), "{}: no {key}", file.display());
                let wanted: std::collections::BTreeSet<String> = args.iter().map(|a| a.to_string()).collect();
                assert_eq!(variables(&text, &key), wanted, "{}: {key} uses other arguments", file.display());
            }
        }
    }

    #[test]
    fn a_problem_is_said_in_the_users_language_and_in_english_without_its_message() {
        use kp_protocol::problem::ProblemText;
        let day = kp_protocol::Date::from_ymd(2026, 12, 7).unwrap();
        let p =
            kp_protocol::Problem::new("expires_on", "2026-12-07 has already passed (today is 2026-12-08)")
                .coded(ProblemText::ExpiresPassed { expires: day.into(), today: day.into() });
        let ru = problem_text(i18n::catalogue("ru"), &p);
        assert!(ru.contains("уже прошла") && ru.contains("07.12.2026"), "{ru}");
        assert!(problem_text(i18n::catalogue("en"), &p).contains("2026-12-07 has already passed"));
        // No id, or an id no catalogue has: the English text.
        let plain = kp_protocol::Problem::new("x", "some English");
        assert_eq!(problem_text(i18n::catalogue("ru"), &plain), "some English");
        let unknown = kp_protocol::problem::Coded { id: "no-such-problem", args: vec![] };
        let p = kp_protocol::Problem::new("x", "said in English").coded(unknown);
        assert_eq!(problem_text(i18n::catalogue("ru"), &p), "said in English");
        // Plural forms follow the count.
        let p = kp_protocol::Problem::new("expires_on", "").coded(ProblemText::ValidityTooLong {
            expires: day.into(),
            days: 22u32.into(),
            max: 21u32.into(),
        });
        let ru = problem_text(i18n::catalogue("ru"), &p);
        assert!(ru.contains("22 дня") && ru.contains("не более 21 дня"), "{ru}");
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7"), ("x-forwarded-proto", "https")]);
        // No trusted proxy: the peer is the source, and nothing says TLS.
        let c = client(Some(proxy), &h, &[]);
        assert_eq!((c.source, c.tls), (proxy, false));
        // From the trusted proxy: the address it appended (not the client's own entry).
        let c = client(Some(proxy), &h, &[proxy]);
        assert_eq!((c.source, c.tls), ("203.0.113.7".parse().unwrap(), true));
        // A chain of trusted proxies is walked back to the first untrusted address.
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(
            client(Some(proxy), &h, &[proxy, inner]).source,
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        // A malformed last entry leaves the proxy as the source (fails closed: one address).
        let h = headers(&[("x-forwarded-for", "6.6.6.6, not-an-address")]);
        assert_eq!(client(Some(proxy), &h, &[proxy]).source, proxy);
        // Another peer's headers are ignored even if they name a trusted proxy.
        let other: IpAddr = "192.0.2.5".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(client(Some(other), &h, &[proxy]).source, other);
        // An IPv4 peer seen as IPv4-mapped IPv6 is the same proxy.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client(Some(mapped), &h, &[proxy]).source, "203.0.113.7".parse::<IpAddr>().unwrap());
    }
}
