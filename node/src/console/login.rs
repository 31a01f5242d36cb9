//! Signing in and out, and the change of one's own password.

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::session;
use super::{
    cookie, field, render, session_cookie, set_cookie, Client, Console, Nav, PageError, PageResult, SignedIn,
    LOGIN_COOKIE,
};
use crate::service::accounts::{self, AccountError, SignInError};
use crate::service::i18n::{self, Catalogue};
use crate::state::throttle::{LockedOut, Refusal};

/// Stands for any malformed name (which no account has) in the throttle, the log and the form.
const INVALID_NAME: &str = "(not a valid name)";

/// The name to fill the form in with again: blank for a malformed one.
fn shown(name: String) -> String {
    if name == INVALID_NAME {
        String::new()
    } else {
        name
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    csrf: String,
    name: String,
    error: Option<String>,
}

/// The sign-in form, with a fresh CSRF token in a short-lived cookie and in the form.
pub(super) async fn form(client: Client, headers: HeaderMap) -> Response {
    login_page(client, &headers, String::new(), None, StatusCode::OK)
}

/// The sign-in page's language, before anyone is signed in: the browser's first choice the
/// console speaks (`Accept-Language`), else English.
fn browser_language(headers: &HeaderMap) -> &'static Catalogue {
    let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    i18n::negotiate(accepted)
}

fn login_page(
    client: Client,
    headers: &HeaderMap,
    name: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let csrf = session::random_token();
    let page = LoginPage { tr: browser_language(headers), nav: None, csrf: csrf.clone(), name, error };
    let mut response = (status, render(&page)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(client.tls, LOGIN_COOKIE, &csrf, "/login", 3600));
    response
}

pub(super) async fn submit(
    State(console): State<Arc<Console>>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let tr = browser_language(&headers);
    let sent = field(&form, super::CSRF_FIELD).unwrap_or("");
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !session::same_secret(sent, expected) {
        let mut e = PageError::new(StatusCode::FORBIDDEN, tr.t("login-csrf"));
        e.tr = Some(tr);
        return Err(e);
    }
    // Only a well-formed name is remembered, logged or shown again as typed: the throttle's
    // table and the log must not hold whatever a form body of up to FORM_BODY_LIMIT carries.
    let typed = field(&form, "name").unwrap_or("").trim();
    let name = if accounts::check_name(typed).is_ok() { typed.to_owned() } else { INVALID_NAME.to_owned() };
    let password = field(&form, "password").unwrap_or("").to_owned();
    let now = Instant::now();
    let source = client.source;
    // Held until the password is checked: at most MAX_VERIFYING Argon2 runs at once.
    let Ok(_permit) = console.verifying.try_acquire() else {
        tracing::warn!(user = %name, %source, "console sign-in refused: too many sign-ins at once");
        let why = tr.t("login-busy");
        return Ok(login_page(client, &headers, shown(name), Some(why), StatusCode::SERVICE_UNAVAILABLE));
    };
    // The attempt counts as failed from here (under the throttle's lock) until the password
    // proves right, so parallel guesses cannot all pass the check before any is counted.
    if let Err(LockedOut { why, remaining }) = console.shared.sign_in_throttle.check(&name, source, now) {
        let minutes = remaining.as_secs().div_ceil(60);
        tracing::warn!(user = %name, %source, ?why, "console sign-in refused: locked out after repeated wrong passwords");
        let why = match why {
            Refusal::AccountFromAddress => tr.count("login-locked-account", minutes as usize),
            Refusal::Address => tr.count("login-locked-address", minutes as usize),
            Refusal::SlowedDown => tr.count("login-slowed", remaining.as_secs().max(1) as usize),
        };
        return Ok(login_page(client, &headers, shown(name), Some(why), StatusCode::TOO_MANY_REQUESTS));
    }
    let store = console.shared.store.clone();
    let (n, p) = (name.clone(), password);
    let checked =
        tokio::task::spawn_blocking(move || accounts::check_password(&store, &n, &p)).await.map_err(|e| {
            PageError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("sign-in task failed: {e}"))
        })?;
    let account = match checked {
        Ok(a) => a,
        Err(SignInError::Refused(refusal)) => {
            tracing::info!(user = %name, %source, ?refusal, "console sign-in refused");
            // A disabled account is answered as a wrong password: the answer must not tell
            // a guesser that the password was right.
            let why = tr.t("login-wrong");
            return Ok(login_page(client, &headers, shown(name), Some(why), StatusCode::UNAUTHORIZED));
        }
        Err(SignInError::Account(e)) => return Err(e.into()),
    };
    console.shared.sign_in_throttle.succeeded(&account.name, source);
    let Some((id, _)) = console.sessions.open(&account.name, account.password_generation, now) else {
        let mut e = PageError::new(StatusCode::SERVICE_UNAVAILABLE, tr.t("login-too-many-sessions"));
        e.tr = Some(tr);
        return Err(e);
    };
    tracing::info!(user = %account.name, role = %account.role, %source, "console sign-in");
    let next = if account.must_change_password { "/password" } else { "/" };
    let mut response = Redirect::to(next).into_response();
    let max_age = session::LIFETIME.as_secs();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(client.tls, session_cookie(client.tls), &id, "/", max_age));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(client.tls, LOGIN_COOKIE, "", "/login", 0));
    Ok(response)
}

pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    client: Client,
    signed: SignedIn,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    console.sessions.close(&signed.session_id);
    tracing::info!(user = %signed.account.name, "console sign-out");
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(client.tls, session_cookie(client.tls), "", "/", 0));
    Ok(response)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    /// The languages the console speaks: (code, the language's own name).
    languages: Vec<(&'static str, String)>,
    must_change: bool,
    current_error: Option<String>,
    new_error: Option<String>,
    repeat_error: Option<String>,
    done: bool,
}

impl PasswordPage {
    /// The form as first shown: no errors yet.
    fn new(signed: &SignedIn) -> PasswordPage {
        PasswordPage {
            tr: signed.tr(),
            nav: Some(signed.nav()),
            languages: i18n::codes()
                .into_iter()
                .map(|c| (c, i18n::catalogue(c).t("language-name")))
                .collect(),
            must_change: signed.account.must_change_password,
            current_error: None,
            new_error: None,
            repeat_error: None,
            done: false,
        }
    }
}

pub(super) async fn password_form(signed: SignedIn) -> Response {
    render(&PasswordPage::new(&signed))
}

pub(super) async fn password_submit(
    State(console): State<Arc<Console>>,
    client: Client,
    signed: SignedIn,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    let current = field(&form, "current_password").unwrap_or("").to_owned();
    let new = field(&form, "new_password").unwrap_or("").to_owned();
    let repeat = field(&form, "repeat_password").unwrap_or("");
    let mut page = PasswordPage::new(&signed);
    if new != repeat {
        page.repeat_error = Some(page.tr.t("password-differ"));
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
    }
    let store = console.shared.store.clone();
    let name = signed.account.name.clone();
    let now = console.shared.now();
    let result = tokio::task::spawn_blocking(move || {
        accounts::check_password(&store, &name, &current)?;
        accounts::change_own_password(&store, &name, &current, &new, now).map_err(SignInError::Account)
    })
    .await
    .map_err(|e| {
        signed
            .localize(PageError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("password task failed: {e}")))
    })?;
    match result {
        Ok(account) => {
            // Every session of this user ends with the old password (a forgotten terminal, and
            // an id that leaked or was planted before the change); this browser goes on in a
            // new session, with a new id and a new CSRF token.
            let Some((id, session)) =
                console.sessions.renew(&signed.account.name, account.password_generation, Instant::now())
            else {
                return Err(signed.localize(PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    signed.tr().t("login-too-many-sessions"),
                )));
            };
            tracing::info!(user = %signed.account.name, "console password changed");
            page.must_change = false;
            page.done = true;
            if let Some(nav) = page.nav.as_mut() {
                nav.csrf = session.csrf;
            }
            let mut response = render(&page);
            let max_age = session::LIFETIME.as_secs();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(client.tls, session_cookie(client.tls), &id, "/", max_age),
            );
            Ok(response)
        }
        Err(SignInError::Refused(_)) => {
            page.current_error = Some(page.tr.t("password-current-wrong"));
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(SignInError::Account(e)) if e.field() == "password" => {
            page.new_error = Some(match e {
                AccountError::PasswordTooShort => page.tr.count("password-too-short", accounts::MIN_PASSWORD),
                AccountError::PasswordTooLong => page.tr.count("password-too-long", accounts::MAX_PASSWORD),
                _ => page.tr.t("password-unchanged"),
            });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(SignInError::Account(e)) => Err(signed.localize(e)),
    }
}

/// The user's choice of language (the form on the password page): stored with the account,
/// so every later page speaks it.
pub(super) async fn language_submit(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    let language = field(&form, "language").unwrap_or("");
    accounts::set_language(&console.shared.store, &signed.account.name, language).map_err(|e| match e {
        AccountError::UnknownLanguage(code) => signed.localize(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            signed.tr().format(
                "language-unknown",
                &[("code", code.into()), ("codes", i18n::codes().join(", ").into())],
            ),
        )),
        e => signed.localize(e),
    })?;
    tracing::info!(user = %signed.account.name, language, "console language changed");
    Ok(Redirect::to("/password").into_response())
}
