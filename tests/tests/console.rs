//! The console's accounts and pages over real HTTP: `kpnode users …` offline and through a
//! running daemon; sign-in, sessions, CSRF, the throttle, role checks and sign-out against a
//! running pair of nodes, read as a browser would (cookies, redirects, forms).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kp_tests::*;

/// A browser without JavaScript: keeps cookies, follows no redirect by itself.
struct Browser {
    base: String,
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
    /// Sent as `X-Forwarded-Proto`, as a TLS-terminating reverse proxy would.
    forwarded_proto: Option<&'static str>,
    /// Sent as `X-Forwarded-For`, as a reverse proxy would (or a client pretending).
    forwarded_for: Option<String>,
}

/// An answer: status, `Location`, `Set-Cookie` headers and the body.
#[derive(Debug)]
struct Page {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    /// The `Strict-Transport-Security` header, if sent.
    hsts: Option<String>,
    body: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("the page has a CSRF field") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

impl Browser {
    fn new(base: &str) -> Browser {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Browser {
            base: base.to_owned(),
            agent,
            cookies: BTreeMap::new(),
            forwarded_proto: None,
            forwarded_for: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn finish(&mut self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Page {
        let mut r = r.expect("the console answers");
        let set_cookies: Vec<String> =
            r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let location =
            r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let status = r.status().as_u16();
        let hsts = r.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned());
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Page { status, location, set_cookies, hsts, body }
    }

    fn get(&mut self, path: &str) -> Page {
        let mut req = self.agent.get(&format!("{}{path}", self.base)).header("Cookie", &self.cookie_header());
        if let Some(p) = self.forwarded_proto {
            req = req.header("X-Forwarded-Proto", p);
        }
        if let Some(f) = &self.forwarded_for {
            req = req.header("X-Forwarded-For", f);
        }
        let r = req.call();
        self.finish(r)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie_header())
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(p) = self.forwarded_proto {
            req = req.header("X-Forwarded-Proto", p);
        }
        if let Some(f) = &self.forwarded_for {
            req = req.header("X-Forwarded-For", f);
        }
        let r = req.send(body.as_str());
        self.finish(r)
    }

    /// Signs in through the form; the answer to the form's POST.
    fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/login");
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post("/login", &[("csrf", &csrf), ("name", name), ("password", password)])
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `kpnode users ARGS` with `stdin` on standard input.
fn users_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(kpnode_bin())
        .arg("users")
        .args(args)
        .env_remove("KPNODE_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpnode runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one-time password a `users add`/`users passwd` printed.
fn one_time_password(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once("one-time password for ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once(": "))
        .map(|(_, p)| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no one-time password in {out:?}"))
}

#[test]
fn users_commands_work_offline_and_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let d = dir.root().to_str().unwrap().to_owned();

    // Offline: the store directly.
    let (code, out, err) = users_with_stdin(
        &["add", "anna", "--role", "clerk", "--password-stdin", "--dir", &d],
        "correct horse battery\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Added anna (clerk, console in en)"), "{out}");
    let out = kpnode_ok(&["users", "add", "olga", "--role", "customs", "--dir", &d]);
    let olga_otp = one_time_password(&out);
    assert_eq!(olga_otp.len(), 23, "20 characters in groups of five: {olga_otp}");
    // Refusals name the field and change nothing; exit 2 for the caller's mistakes.
    let (code, _, err) = kpnode(&["users", "add", "anna", "--role", "auditor", "--dir", &d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = kpnode(&["users", "add", "bob", "--role", "admin", "--dir", &d]);
    assert_eq!(code, 2);
    assert!(err.contains("role \"admin\"") && err.contains("clerk, supervisor, customs, auditor"), "{err}");
    let (code, _, err) =
        users_with_stdin(&["add", "bob", "--role", "clerk", "--password-stdin", "--dir", &d], "short\n");
    assert_eq!(code, 2);
    assert!(err.contains("at least 12 characters"), "{err}");
    let (code, _, err) = kpnode(&["users", "add", "Bob Smith", "--role", "clerk", "--dir", &d]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = kpnode(&["users", "add", "bob", "--role", "clerk", "--language", "fr", "--dir", &d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("language \"fr\"") && err.contains("en, ru"), "{err}");
    let out = kpnode_ok(&["users", "add", "ivan", "--role", "auditor", "--language", "ru", "--dir", &d]);
    assert!(out.contains("console in ru"), "{out}");
    // Locks live in a running daemon's memory: offline there is none to clear.
    let out = kpnode_ok(&["users", "unlock", "anna", "--dir", &d]);
    assert!(out.contains("not running"), "{out}");
    let (code, _, err) = kpnode(&["users", "unlock", "nobody", "--dir", &d]);
    assert_eq!(code, 2, "{err}");
    let list = kpnode_ok(&["users", "list", "--dir", &d]);
    assert!(
        list.contains("anna") && list.contains("clerk") && list.contains("must change password"),
        "{list}"
    );
    assert!(!list.contains("bob"), "{list}");

    // Through the running daemon, which holds the store.
    let mut node = ProcessNode::start(&dir);
    let out = kpnode_ok(&["users", "add", "sven", "--role", "supervisor", "--dir", &d]);
    one_time_password(&out);
    kpnode_ok(&["users", "disable", "anna", "--dir", &d]);
    let (code, out, err) =
        users_with_stdin(&["passwd", "olga", "--password-stdin", "--dir", &d], "a border post passphrase\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("The password given is set for olga"), "{out}");
    let out = kpnode_ok(&["users", "unlock", "olga", "--dir", &d]);
    assert!(out.contains("olga was not locked"), "{out}");
    let (code, _, err) = kpnode(&["users", "disable", "nobody", "--dir", &d]);
    assert_ne!(code, 0);
    assert!(err.contains("no account is named \"nobody\""), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&kpnode_ok(&["users", "list", "--json", "--dir", &d])).unwrap();
    let by_name = |n: &str| json.as_array().unwrap().iter().find(|a| a["name"] == n).unwrap().clone();
    assert_eq!(by_name("anna")["disabled"], true);
    assert_eq!(by_name("olga")["must_change_password"], false);
    assert_eq!(by_name("sven")["role"], "supervisor");
    assert!(json.to_string().find("argon2").is_none(), "no hash is ever answered: {json}");

    // The daemon's console signs in with what the commands set.
    let api = node.api();
    let mut browser = Browser::new(&api.base);
    assert_eq!(browser.sign_in("olga", "a border post passphrase").location, "/");
    assert_eq!(browser.get("/").status, 200);
    let mut anna = Browser::new(&api.base);
    let refused = anna.sign_in("anna", "correct horse battery");
    assert_eq!(refused.status, 401);
    // A disabled account is answered as a wrong password: a guesser learns nothing.
    assert!(refused.body.contains("The name or the password is wrong"), "{}", refused.body);
    assert!(!refused.body.contains("disabled"), "{}", refused.body);
    node.stop();

    // Offline again: what the daemon wrote is there.
    let list = kpnode_ok(&["users", "list", "--dir", &d]);
    assert!(list.contains("sven") && list.contains("disabled"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("ivan") && l.contains(" ru ")), "{list}");
}

#[test]
fn console_sessions_csrf_roles_throttle_and_sign_out() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    for (name, role) in [("clara", "clerk"), ("sven", "supervisor")] {
        let body = format!(r#"{{"name":"{name}","role":"{role}","password":"{name} passphrase 1"}}"#);
        let (status, v) = api.post("/v1/users", &body);
        assert_eq!(status, 201, "{v}");
        assert!(v.get("one_time_password").is_none());
    }
    let (status, v) = api.post("/v1/users", r#"{"name":"otto","role":"auditor"}"#);
    assert_eq!(status, 201, "{v}");
    let otto_otp = v["one_time_password"].as_str().unwrap().to_owned();
    let (status, v) = api.post("/v1/users", r#"{"name":"x","role":"clerk","password":"short"}"#);
    assert_eq!((status, v["problems"][0]["field"].as_str()), (422, Some("password")), "{v}");
    // A bad role or language names its field and the choices.
    let (status, v) = api.post("/v1/users", r#"{"name":"x","role":"admin"}"#);
    assert_eq!((status, v["problems"][0]["field"].as_str()), (422, Some("role")), "{v}");
    let detail = v["problems"][0]["message"].as_str().unwrap_or_default().to_owned() + &v.to_string();
    assert!(detail.contains("clerk, supervisor, customs, auditor"), "{v}");
    let (status, v) = api.post("/v1/users", r#"{"name":"x","role":"clerk","language":"tlh"}"#);
    assert_eq!((status, v["problems"][0]["field"].as_str()), (422, Some("language")), "{v}");
    let number = api.submit(&certificate_json("RU", "IN", None, 1));

    // No session: every page sends the browser to sign in.
    let mut anon = Browser::new(&api.base);
    for path in ["/", "/certificates", &format!("/certificates/{number}")] {
        let p = anon.get(path);
        assert_eq!((p.status, p.location.as_str()), (303, "/login"), "{path}");
    }
    // The sign-in form refuses a post without its CSRF token.
    let p = anon.post("/login", &[("name", "clara"), ("password", "clara passphrase 1")]);
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.set_cookies.iter().all(|c| !c.starts_with("kpnode_session=")));

    // A name no account can have is neither remembered nor shown back.
    let long = "x".repeat(50_000);
    let p = anon.sign_in(&long, "whatever it is");
    assert_eq!(p.status, 401);
    assert!(!p.body.contains(&long[..100]), "a malformed name is not echoed");
    // The console's forms are small: a larger body is refused before it is read.
    let p = anon.sign_in(&"x".repeat(70_000), "whatever it is");
    assert_eq!(p.status, 413, "{}", p.body);

    // A clerk signs in: the cookie is HttpOnly and SameSite=Strict. No reverse proxy is
    // trusted (api.trusted_proxies is empty), so X-Forwarded-Proto is not believed: the cookie
    // is not marked Secure on the say of any local client (see the proxy's own test).
    let mut clara = Browser::new(&api.base);
    clara.forwarded_proto = Some("https");
    let p = clara.sign_in("clara", "clara passphrase 1");
    assert_eq!((p.status, p.location.as_str()), (303, "/"), "{}", p.body);
    let session = p.set_cookies.iter().find(|c| c.starts_with("kpnode_session=")).expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && !session.contains("Secure"),
        "{session}"
    );
    assert_eq!(p.hsts, None, "no HSTS on the say of an untrusted client");
    let dash = clara.get("/");
    assert_eq!(dash.status, 200);
    assert!(dash.body.contains("Authority of RU") && dash.body.contains("clara"), "{}", dash.body);
    let list = clara.get("/certificates?direction=out");
    assert!(list.body.contains(&number), "{}", list.body);
    let page = clara.get(&format!("/certificates/{number}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Void this certificate"), "a clerk is not offered the void");
    let kpc = clara.get(&format!("/certificates/{number}/kpc"));
    assert!(kpc.status == 200 && kpc.body.contains("BEGIN"), "{}", kpc.body);
    // …and a clerk's void, even with the session's token, is refused 403 and nothing happens.
    let csrf = page.csrf();
    let p =
        clara.post(&format!("/certificates/{number}/void"), &[("csrf", &csrf), ("reason", "clerk tries")]);
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("Your role (clerk) may not void"), "{}", p.body);
    assert_ne!(api.certificate(&number)["status"], "voided");

    // A supervisor: a void posted without the session's CSRF token is refused.
    let mut sven = Browser::new(&api.base);
    assert_eq!(sven.sign_in("sven", "sven passphrase 1").status, 303);
    let page = sven.get(&format!("/certificates/{number}"));
    assert!(page.body.contains("Void this certificate"), "{}", page.body);
    let p = sven.post(&format!("/certificates/{number}/void"), &[("reason", "no token")]);
    assert_eq!(p.status, 403);
    let p = sven.post(
        &format!("/certificates/{number}/void"),
        &[("csrf", &clara_token(&mut clara)), ("reason", "another session's token")],
    );
    assert_eq!(p.status, 403);
    assert_ne!(api.certificate(&number)["status"], "voided");
    // An empty reason is shown at its field.
    let csrf = page.csrf();
    let p = sven.post(&format!("/certificates/{number}/void"), &[("csrf", &csrf), ("reason", " ")]);
    assert_eq!(p.status, 422);
    assert!(p.body.contains("id=\"reason-error\""), "{}", p.body);
    let p = sven
        .post(&format!("/certificates/{number}/void"), &[("csrf", &csrf), ("reason", "shipment cancelled")]);
    assert_eq!((p.status, p.location.clone()), (303, format!("/certificates/{number}")), "{}", p.body);
    assert_eq!(api.certificate(&number)["status"], "voided");
    let page = sven.get(&format!("/certificates/{number}"));
    // The timeline names who did each thing on this node: the API token for the submission,
    // the supervisor's account for the void.
    assert!(page.body.contains("Voided: shipment cancelled — officer: sven"), "{}", page.body);
    assert!(page.body.contains("— officer: api-token"), "{}", page.body);
    assert_eq!(
        api.certificate(&number)["officers"],
        serde_json::json!({"issued": "api-token", "voided": "sven"})
    );
    // And so do RU's log entries, once IN acknowledged each; IN's own log names no one of RU's.
    kp_tests::wait_until(std::time::Duration::from_secs(20), "the void acknowledged", || {
        api.get("/v1/log").1.as_array().is_some_and(|l| l.iter().any(|e| e["kind"] == "void"))
    });
    let (_, log) = api.get("/v1/log");
    let officers: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["certificate"] == number.as_str())
        .map(|e| (e["kind"].as_str().unwrap(), e["officer"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(officers, [("certificate", "api-token"), ("void", "sven")]);
    let (_, log) = pair.inn.api.get("/v1/log");
    let from_ru = log.as_array().unwrap().iter().filter(|e| e["direction"] == "in");
    assert!(from_ru.clone().count() >= 2 && from_ru.into_iter().all(|e| e["officer"].is_null()), "{log}");

    // A one-time password leads to the change of password and nowhere else.
    let mut otto = Browser::new(&api.base);
    assert_eq!(otto.sign_in("otto", &otto_otp).location, "/password");
    assert_eq!(otto.get("/").location, "/password");
    let form = otto.get("/password");
    let csrf = form.csrf();
    let p = otto.post(
        "/password",
        &[
            ("csrf", &csrf),
            ("current_password", &otto_otp),
            ("new_password", "too short"),
            ("repeat_password", "too short"),
        ],
    );
    assert_eq!(p.status, 422);
    assert!(p.body.contains("id=\"new_password-error\""), "{}", p.body);
    let p = otto.post(
        "/password",
        &[
            ("csrf", &csrf),
            ("current_password", &otto_otp),
            ("new_password", "the auditor's own words"),
            ("repeat_password", "the auditor's own words"),
        ],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(otto.get("/").status, 200);

    // Five wrong passwords lock the account from this address: then even the right one is
    // refused. A made-up X-Forwarded-For per guess changes nothing (no proxy is trusted).
    let mut guesser = Browser::new(&api.base);
    for i in 0..5 {
        guesser.forwarded_for = Some(format!("203.0.113.{i}"));
        let p = guesser.sign_in("clara", &format!("wrong guess number {i}"));
        assert_eq!(p.status, 401, "attempt {i}");
    }
    guesser.forwarded_for = Some("198.51.100.1".into());
    let p = guesser.sign_in("clara", "clara passphrase 1");
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.body.contains("from this address is locked for 15 more minute"), "{}", p.body);
    assert!(p.body.contains("kpnode users unlock"), "the message says who lifts it: {}", p.body);
    // A session opened before the lock-out goes on.
    assert_eq!(clara.get("/").status, 200);

    // Signing out ends the session: its cookie no longer opens anything.
    let old_cookie = sven.cookie_header();
    let csrf = sven.get("/").csrf();
    let p = sven.post("/logout", &[("csrf", &csrf)]);
    assert_eq!((p.status, p.location.as_str()), (303, "/login"));
    let mut replay = Browser::new(&api.base);
    let (k, v) = old_cookie.split_once('=').unwrap();
    replay.cookies.insert(k.to_owned(), v.to_owned());
    assert_eq!(replay.get("/").location, "/login");

    // Disabling an account ends its sessions at their next request.
    let (status, _) = api.post("/v1/users/otto/disable", "");
    assert_eq!(status, 200);
    assert_eq!(otto.get("/").location, "/login");

    // Customs at the importer's node confirms what arrived; a difference is a discrepancy,
    // which both consoles show.
    let number = api.submit(&certificate_json("RU", "IN", None, 2));
    let in_api = &pair.inn.api;
    wait_until(Duration::from_secs(20), "IN has the certificate", || {
        in_api.get(&format!("/v1/certificates/{number}")).0 == 200
    });
    let (status, v) =
        in_api.post("/v1/users", r#"{"name":"cora","role":"customs","password":"cora passphrase 1"}"#);
    assert_eq!(status, 201, "{v}");
    let mut cora = Browser::new(&in_api.base);
    assert_eq!(cora.sign_in("cora", "cora passphrase 1").status, 303);
    let page = cora.get(&format!("/certificates/{number}"));
    assert!(page.body.contains("Confirm the import") && !page.body.contains("Void this"), "{}", page.body);
    let csrf = page.csrf();
    let declared = in_api.certificate(&number)["parcels"].as_u64().unwrap();
    let today = in_api.certificate(&number)["issued_on"].as_str().unwrap().to_owned();
    let fewer = (declared + 1).to_string();
    let p = cora.post(
        &format!("/certificates/{number}/confirm"),
        &[("csrf", &csrf), ("received_on", &today), ("parcels", &fewer), ("carats", "twelve")],
    );
    assert_eq!(p.status, 422);
    assert!(p.body.contains("id=\"carats-error\""), "the problem is shown at its field: {}", p.body);
    assert!(p.body.contains("value=\"twelve\""), "what was typed is kept");
    let carats = in_api.certificate(&number)["carats"].as_str().unwrap().to_owned();
    let p = cora.post(
        &format!("/certificates/{number}/confirm"),
        &[
            ("csrf", &csrf),
            ("received_on", &today),
            ("parcels", &fewer),
            ("carats", &carats),
            ("remarks", "one parcel more"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(in_api.certificate(&number)["status"], "import_discrepancy");
    assert!(cora.get(&format!("/certificates/{number}")).body.contains("with a discrepancy"));
    wait_until(Duration::from_secs(20), "RU learns of the discrepancy", || {
        api.certificate(&number)["status"] == "import_discrepancy"
    });
    let page = clara.get(&format!("/certificates/{number}"));
    assert!(
        page.body.contains("import_discrepancy") && page.body.contains("with a discrepancy"),
        "{}",
        page.body
    );

    // The JSON API keeps its bearer token: no cookie opens it, the token does.
    assert_eq!(clara.get("/v1/status").status, 401);
    assert_eq!(api.get("/v1/status").0, 200);
}

/// Review #3, #4, #5: forwarded headers are believed only from `api.trusted_proxies`; a
/// stranger's wrong passwords lock the account from the stranger's address, not from the real
/// user's (an IPv6 address counting by its /64), and `users unlock` lifts a lock; a password
/// set by an administrator or by the user ends the account's other sessions.
#[test]
fn a_trusted_proxy_names_the_source_and_a_stranger_cannot_lock_the_user_out() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    set_setting(&dir, "api", "trusted_proxies", r#"["127.0.0.1"]"#);
    let node = TestNode::start(&rt, dir);
    let api = &node.api;
    for name in ["anna", "bob"] {
        let body = format!(r#"{{"name":"{name}","role":"clerk","password":"{name} passphrase 1"}}"#);
        assert_eq!(api.post("/v1/users", &body).0, 201);
    }

    // Behind the trusted proxy: X-Forwarded-Proto says TLS, so the cookie is Secure, with the
    // `__Host-` prefix (whole host, no Domain), and every answer asks for HTTPS only (HSTS).
    let mut anna = Browser::new(&api.base);
    anna.forwarded_for = Some("198.51.100.20".into());
    anna.forwarded_proto = Some("https");
    let p = anna.sign_in("anna", "anna passphrase 1");
    assert_eq!(p.status, 303, "{}", p.body);
    let cookie =
        p.set_cookies.iter().find(|c| c.starts_with("__Host-kpnode_session=")).expect("a __Host- cookie");
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/;") && !cookie.contains("Domain"),
        "{cookie}"
    );
    assert_eq!(p.hsts.as_deref(), Some("max-age=31536000"));
    assert_eq!(anna.get("/").hsts.as_deref(), Some("max-age=31536000"), "on every page");
    // Over TLS a plain `kpnode_session` cookie (one a plain-HTTP page could have planted) is
    // not believed, even with a live session's id.
    let id = anna.cookies["__Host-kpnode_session"].clone();
    let mut planted = Browser::new(&api.base);
    planted.forwarded_for = Some("198.51.100.20".into());
    planted.forwarded_proto = Some("https");
    planted.cookies.insert("kpnode_session".into(), id);
    assert_eq!(planted.get("/").location, "/login");

    // A stranger (a client-written entry before the proxy's is not believed) locks the
    // account from the stranger's own address only.
    let mut stranger = Browser::new(&api.base);
    stranger.forwarded_for = Some("10.9.9.9, 203.0.113.7".into());
    for i in 0..5 {
        assert_eq!(stranger.sign_in("anna", &format!("wrong guess {i}")).status, 401);
    }
    stranger.forwarded_for = Some("10.9.9.10, 203.0.113.7".into());
    let p = stranger.sign_in("anna", "anna passphrase 1");
    assert_eq!(p.status, 429, "{}", p.body);
    let mut desk = Browser::new(&api.base);
    desk.forwarded_for = Some("198.51.100.20".into());
    assert_eq!(desk.sign_in("anna", "anna passphrase 1").status, 303, "the real user is not locked out");
    // The operator lifts the lock.
    let (status, v) = api.post("/v1/users/anna/unlock", "");
    assert_eq!((status, v["was_locked"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(stranger.sign_in("anna", "anna passphrase 1").status, 303);
    assert_eq!(api.post("/v1/users/nobody/unlock", "").0, 404);

    // IPv6: the hosts of one /64 are one source.
    let mut six = Browser::new(&api.base);
    for i in 0..5 {
        six.forwarded_for = Some(format!("2001:db8:1:2::{i}"));
        assert_eq!(six.sign_in("bob", &format!("wrong guess {i}")).status, 401);
    }
    six.forwarded_for = Some("2001:db8:1:2:aaaa::99".into());
    assert_eq!(six.sign_in("bob", "bob passphrase 1").status, 429);
    six.forwarded_for = Some("2001:db8:1:3::1".into());
    assert_eq!(six.sign_in("bob", "bob passphrase 1").status, 303);

    // An administrator's new password (users passwd) ends anna's open sessions.
    assert_eq!(anna.get("/").status, 200);
    let (status, v) = api.post("/v1/users/anna/password", r#"{"password":"anna passphrase 2"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(anna.get("/").location, "/login", "the reset ended the session");
    assert_eq!(desk.get("/").location, "/login");
    // So does her own change, but for the session she made it from.
    assert_eq!(anna.sign_in("anna", "anna passphrase 2").status, 303);
    assert_eq!(desk.sign_in("anna", "anna passphrase 2").status, 303);
    let csrf = anna.get("/password").csrf();
    let before_change = anna.cookies["__Host-kpnode_session"].clone();
    let p = anna.post(
        "/password",
        &[
            ("csrf", &csrf),
            ("current_password", "anna passphrase 2"),
            ("new_password", "anna passphrase 3"),
            ("repeat_password", "anna passphrase 3"),
        ],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    // The browser goes on, in a new session: the id it held before the change (which could
    // have leaked, or been planted) is worth nothing now.
    let old = before_change;
    let renewed = anna.cookies["__Host-kpnode_session"].clone();
    assert_ne!(renewed, old, "a new session id: {:?}", p.set_cookies);
    assert_eq!(anna.get("/").status, 200, "the browser that changed it goes on");
    let mut stale = Browser::new(&api.base);
    stale.forwarded_for = Some("198.51.100.20".into());
    stale.forwarded_proto = Some("https");
    stale.cookies.insert("__Host-kpnode_session".into(), old);
    assert_eq!(stale.get("/").location, "/login", "the old id has ended");
    assert_eq!(desk.get("/").location, "/login", "the other one has ended");
}

/// Another session's CSRF token (which must not open this one's forms).
fn clara_token(clara: &mut Browser) -> String {
    clara.get("/").csrf()
}

/// The certificate JSON as the issue form's fields: each value named by its JSON path.
fn form_fields(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                form_fields(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                form_fields(v, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::String(s) => out.push((path, s.clone())),
        other => out.push((path, other.to_string())),
    }
}

/// The element id the issue form gives the input of a JSON path.
fn input_id(path: &str) -> String {
    format!("f-{}", path.replace(['.', '[', ']'], "-"))
}

#[test]
fn the_issue_form_is_the_apis_json_with_the_apis_problems_at_their_inputs() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    for (name, role) in [("clara", "clerk"), ("otto", "auditor")] {
        let body = format!(r#"{{"name":"{name}","role":"{role}","password":"{name} passphrase 1"}}"#);
        assert_eq!(api.post("/v1/users", &body).0, 201);
    }
    let good: serde_json::Value = serde_json::from_str(&certificate_json("RU", "IN", None, 7)).unwrap();
    let mut bad = good.clone();
    bad["parcels"][1]["carats"] = "10.505".into();
    bad["exporter"]["name"] = " ".into();
    bad["parcels"][0]["hs_code"] = "7104.10".into();
    let (status, answer) = api.post("/v1/certificates", &bad.to_string());
    assert_eq!(status, 422, "{answer}");
    let api_fields: std::collections::BTreeSet<String> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(api_fields.len(), 3, "{answer}");

    let mut clara = Browser::new(&api.base);
    assert_eq!(clara.sign_in("clara", "clara passphrase 1").status, 303);
    let csrf = clara.get("/certificates/new").csrf();
    let send = |b: &mut Browser, v: &serde_json::Value| {
        let mut fields = Vec::new();
        form_fields(v, String::new(), &mut fields);
        fields.push(("csrf".into(), csrf.clone()));
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/certificates/new", &pairs)
    };
    let p = send(&mut clara, &bad);
    assert_eq!(p.status, 422, "{}", p.body);
    for field in &api_fields {
        let id = input_id(field);
        assert!(p.body.contains(&format!("id=\"{id}-error\"")), "{field} is shown at its input:\n{}", p.body);
        assert!(p.body.contains(&format!("aria-describedby=\"{id}-error")), "{field}'s error is linked");
    }
    assert_eq!(p.body.matches("class=\"error\"").count(), api_fields.len(), "no other field is marked");
    let issued = |api: &Api| api.get("/v1/certificates?direction=out").1.as_array().expect("a list").len();
    assert_eq!(issued(api), 0, "nothing was issued");

    // An auditor may neither open nor send the form.
    let mut otto = Browser::new(&api.base);
    assert_eq!(otto.sign_in("otto", "otto passphrase 1").status, 303);
    assert_eq!(otto.get("/certificates/new").status, 403);
    let otto_csrf = otto.get("/").csrf();
    let mut fields = Vec::new();
    form_fields(&good, String::new(), &mut fields);
    fields.push(("csrf".into(), otto_csrf));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(otto.post("/certificates/new", &pairs).status, 403);

    // Fixed, it is issued: the stored certificate is the JSON the form was.
    let p = send(&mut clara, &good);
    assert_eq!(p.status, 303, "{}", p.body);
    let number = p.location.strip_prefix("/certificates/").expect("the certificate's page").to_owned();
    assert_eq!(issued(api), 1, "one certificate, the form's");
    let stored = api.certificate(&number);
    for key in ["exporter", "importer", "parcels", "issued_on", "expires_on", "importing_participant"] {
        assert_eq!(stored["certificate"][key], good[key], "{key}: {stored}");
    }

    // A Russian-speaking user: the pages speak Russian, dates and numbers are written the
    // Russian way, and the user can switch to English on the password page.
    let (status, v) = api.post(
        "/v1/users",
        r#"{"name":"ivan","role":"supervisor","language":"ru","password":"ivan passphrase 1"}"#,
    );
    assert_eq!((status, v["account"]["language"].as_str()), (201, Some("ru")), "{v}");
    let mut ivan = Browser::new(&api.base);
    assert_eq!(ivan.sign_in("ivan", "ivan passphrase 1").status, 303);
    let dash = ivan.get("/");
    assert!(dash.body.contains("<html lang=\"ru\">") && dash.body.contains("Сводка"), "{}", dash.body);
    assert!(dash.body.contains("руководитель") && !dash.body.contains("Dashboard"), "{}", dash.body);
    let page = ivan.get(&format!("/certificates/{number}"));
    let (y, m, d) = {
        let on = stored["issued_on"].as_str().unwrap();
        (on[0..4].to_owned(), on[5..7].to_owned(), on[8..10].to_owned())
    };
    assert!(page.body.contains(&format!("{d}.{m}.{y}")), "a Russian date: {}", page.body);
    let value = stored["value_usd"].as_str().unwrap().to_owned();
    let (int, frac) = value.split_once('.').unwrap();
    let grouped: String = int
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && (int.len() - i) % 3 == 0).then_some('\u{a0}');
            sep.into_iter().chain([c])
        })
        .collect();
    assert!(
        page.body.contains(&format!("{grouped},{frac}")),
        "{value} written the Russian way: {}",
        page.body
    );
    assert!(
        page.body.contains("Аннулировать сертификат") && page.body.contains("data-status="),
        "{}",
        page.body
    );
    // An unknown language is refused, naming the field; a known one is kept.
    let csrf = ivan.get("/password").csrf();
    let p = ivan.post("/language", &[("csrf", &csrf), ("language", "xx")]);
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(
        p.body.contains("«xx»") && p.body.contains("en, ru") && p.body.contains("lang=\"ru\""),
        "{}",
        p.body
    );
    let p = ivan.post("/language", &[("csrf", &csrf), ("language", "en")]);
    assert_eq!((p.status, p.location.as_str()), (303, "/password"), "{}", p.body);
    let dash = ivan.get("/");
    assert!(dash.body.contains("<html lang=\"en\">") && dash.body.contains("Dashboard"), "{}", dash.body);
    assert_eq!(
        api.get("/v1/users").1.as_array().unwrap().iter().find(|a| a["name"] == "ivan").unwrap()["language"],
        "en"
    );
}

/// The elements of certificate format 2 on the issue form: each input labelled and named by
/// its JSON path, the container seals one input (a line each), a bad UN/LOCODE, mode and seal
/// each reported at its input, and what is issued shown on the certificate's page.
#[test]
fn the_issue_form_takes_licences_port_of_entry_transport_and_seals_and_the_page_shows_them() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    let body = r#"{"name":"clara","role":"clerk","password":"clara passphrase 1"}"#;
    assert_eq!(api.post("/v1/users", body).0, 201);
    let mut clara = Browser::new(&api.base);
    assert_eq!(clara.sign_in("clara", "clara passphrase 1").status, 303);
    let form = clara.get("/certificates/new");
    assert_eq!(form.status, 200, "{}", form.body);
    for (path, label) in [
        ("importing_member", "Importing member state (optional)"),
        ("exporter.licence", "Licence (optional)"),
        ("importer.licence", "Licence (optional)"),
        ("shipment.port_of_entry", "Port of entry"),
        ("shipment.transport_mode", "Transport mode"),
        ("shipment.transport_document", "Transport document"),
        ("shipment.container_seals", "Container seals"),
    ] {
        let id = input_id(path);
        assert!(
            form.body.contains(&format!("<label for=\"{id}\">{label}</label>")),
            "{path} is labelled {label:?}:\n{}",
            form.body
        );
        assert!(form.body.contains(&format!("id=\"{id}\" name=\"{path}\"")), "{path}'s input");
    }
    assert!(form.body.contains("<select id=\"f-shipment-transport_mode\""), "the mode is picked");
    assert!(form.body.contains("<option value=\"hand-carried\">Hand-carried</option>"), "{}", form.body);
    assert!(form.body.contains("<textarea id=\"f-shipment-container_seals\""), "the seals are one input");
    assert!(form.body.contains("a union such as EU"), "importing_member's hint names its use");
    assert!(!form.body.contains("name=\"replaces\""), "replacing is an action of its own");
    let csrf = form.csrf();

    let mut good: serde_json::Value = serde_json::from_str(&certificate_json("RU", "IN", None, 5)).unwrap();
    good["exporter"]["licence"] = "RU-EXP-2026-0417".into();
    good["importer"]["licence"] = "IEC 0305012345".into();
    good["shipment"] = serde_json::json!({
        "port_of_entry": "INBOM",
        "transport_mode": "air",
        "transport_document": "AWB 555-12345675",
    });
    let send = |b: &mut Browser, v: &serde_json::Value, seals: &str| {
        let mut fields = Vec::new();
        form_fields(v, String::new(), &mut fields);
        fields.push(("shipment.container_seals".into(), seals.to_owned()));
        fields.push(("csrf".into(), csrf.clone()));
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/certificates/new", &pairs)
    };

    // A port that is not a UN/LOCODE, a mode that is not one and a seal too long: each at
    // its input, the values shown back, nothing issued.
    let mut bad = good.clone();
    bad["shipment"]["port_of_entry"] = "Antwerp".into();
    bad["shipment"]["transport_mode"] = "boat".into();
    let long_seal = "9".repeat(300);
    let p = send(&mut clara, &bad, &format!("SEAL-0045117\r\n{long_seal}"));
    assert_eq!(p.status, 422, "{}", p.body);
    for (path, says) in [
        ("shipment.port_of_entry", "must be a UN/LOCODE"),
        ("shipment.transport_mode", "must be one of air, sea, road, rail, post, hand-carried"),
        ("shipment.container_seals", "seal 2: "),
    ] {
        let id = input_id(path);
        let at = p
            .body
            .find(&format!("id=\"{id}-error\""))
            .unwrap_or_else(|| panic!("{path}: no error at its input:\n{}", p.body));
        let error = &p.body[at..at + p.body[at..].find("</p>").unwrap()];
        assert!(error.contains(says), "{path}: {error}");
        assert!(p.body.contains(&format!("aria-describedby=\"{id}-error")), "{path}'s error is linked");
    }
    assert_eq!(p.body.matches("class=\"error\"").count(), 3, "no other field is marked:\n{}", p.body);
    assert!(p.body.contains("value=\"Antwerp\""), "the port typed is shown back");
    assert!(p.body.contains("<option value=\"boat\" selected>"), "the mode sent is shown back");
    assert!(p.body.contains(&format!("SEAL-0045117\n{long_seal}</textarea>")), "the seals, a line each");
    assert!(api.get("/v1/certificates?direction=out").1.as_array().unwrap().is_empty(), "nothing issued");

    // Fixed, it is issued with every element, and its page shows them.
    let p = send(&mut clara, &good, "SEAL-0045117\r\nSEAL-0045118");
    assert_eq!(p.status, 303, "{}", p.body);
    let number = p.location.strip_prefix("/certificates/").expect("the certificate's page").to_owned();
    let stored = &api.certificate(&number)["certificate"];
    assert_eq!(stored["exporter"], good["exporter"]);
    assert_eq!(stored["importer"], good["importer"]);
    let mut shipment = good["shipment"].clone();
    shipment["container_seals"] = serde_json::json!(["SEAL-0045117", "SEAL-0045118"]);
    assert_eq!(stored["shipment"], shipment);
    let page = clara.get(&format!("/certificates/{number}"));
    assert_eq!(page.status, 200, "{}", page.body);
    for (label, value) in [
        ("Exporter&#39;s licence", "RU-EXP-2026-0417"),
        ("Importer&#39;s licence", "IEC 0305012345"),
        ("Port of entry", "INBOM"),
        ("Transport mode", "Air (air)"),
        ("Transport document", "AWB 555-12345675"),
        ("Container seals", "SEAL-0045117, SEAL-0045118"),
    ] {
        assert!(
            page.body.contains(&format!("<dt>{label}</dt><dd>{value}</dd>")),
            "the page shows {label}: {value}:\n{}",
            page.body
        );
    }
    assert!(
        !page.body.contains("Replaces") && !page.body.contains("Importing member state"),
        "only what is given"
    );
}

/// Enrolling and removing a partner decides whose certificates this node accepts: each is a
/// log entry signed by this node that names who did it (the API token's name, the console
/// account), and the log still verifies.
#[test]
fn partner_changes_are_signed_log_entries_naming_their_officer() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    let peer_changes = || -> Vec<serde_json::Value> {
        let (status, log) = api.get("/v1/log");
        assert_eq!(status, 200, "{log}");
        log.as_array().unwrap().iter().filter(|e| e["kind"] == "peer-change").cloned().collect()
    };
    // The pair was enrolled through the API: the token's name is the officer.
    let changes = peer_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let (_, fingerprint) = pair.inn.bundle();
    assert_eq!(
        (&changes[0]["peer"], &changes[0]["direction"], &changes[0]["officer"]),
        (&serde_json::json!("IN"), &serde_json::json!("local"), &serde_json::json!("api-token")),
        "{changes:?}"
    );
    assert_eq!(changes[0]["signer"], "RU");
    assert_eq!(changes[0]["document"]["action"], "enrolled");
    assert_eq!(changes[0]["document"]["fingerprint"].as_str(), Some(fingerprint.as_str()));
    assert!(changes[0]["document"]["bundle"].is_string(), "{changes:?}");

    // A supervisor removes IN from the console: the entry names the account.
    let body = r#"{"name":"sven","role":"supervisor","password":"sven passphrase 1"}"#;
    assert_eq!(api.post("/v1/users", body).0, 201);
    let mut sven = Browser::new(&api.base);
    assert_eq!(sven.sign_in("sven", "sven passphrase 1").status, 303);
    let page = sven.get("/partners");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.csrf();
    let p = sven.post("/partners/IN/remove", &[("csrf", &csrf), ("confirm", "yes")]);
    assert_eq!((p.status, p.location.as_str()), (303, "/partners"), "{}", p.body);
    let changes = peer_changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        (changes[1]["document"]["action"].as_str(), changes[1]["officer"].as_str()),
        (Some("removed"), Some("sven"))
    );
    assert!(changes[1]["document"]["bundle"].is_null(), "{changes:?}");

    // Enrolled again through the API: a new entry, again naming the token.
    let (bundle, fingerprint) = pair.inn.bundle();
    api.enrol(&bundle, &fingerprint);
    let changes = peer_changes();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(
        (changes[2]["document"]["action"].as_str(), changes[2]["officer"].as_str()),
        (Some("enrolled"), Some("api-token"))
    );
    // A refused enrolment (the fingerprint of another node) records nothing.
    let (_, other) = pair.ru.bundle();
    let body = serde_json::json!({"bundle": bundle, "fingerprint": other}).to_string();
    assert_eq!(api.post("/v1/peers", &body).0, 422);
    assert_eq!(peer_changes().len(), 3);

    // The entries are chained and signed like every other: the log verifies.
    let (status, report) = api.get("/v1/log/verify");
    assert_eq!((status, &report["verified"]), (200, &serde_json::json!(true)), "{report}");
    assert_eq!(report["report"]["recorded"], 3, "{report}");
}

/// The problems the validator finds are said in the user's language at their fields: a
/// Russian-speaking clerk's form, sent with four mistakes, comes back with four Russian
/// messages (dates written the Russian way) and none of the API's English.
#[test]
fn a_russian_clerks_issue_form_shows_its_problems_in_russian() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    let (status, v) = api.post(
        "/v1/users",
        r#"{"name":"vera","role":"clerk","language":"ru","password":"vera passphrase 1"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let good: serde_json::Value = serde_json::from_str(&certificate_json("RU", "IN", None, 7)).unwrap();
    let issued_on = good["issued_on"].as_str().unwrap().to_owned();
    let mut bad = good.clone();
    bad["parcels"][1]["carats"] = "10.505".into();
    bad["exporter"]["name"] = " ".into();
    bad["parcels"][0]["hs_code"] = "7104.10".into();
    bad["expires_on"] = issued_on.clone().into();

    let mut vera = Browser::new(&api.base);
    assert_eq!(vera.sign_in("vera", "vera passphrase 1").status, 303);
    let csrf = vera.get("/certificates/new").csrf();
    let mut fields = Vec::new();
    form_fields(&bad, String::new(), &mut fields);
    fields.push(("csrf".into(), csrf));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = vera.post("/certificates/new", &pairs);
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(p.body.contains("<html lang=\"ru\">"), "{}", p.body);
    let ru_date = format!("{}.{}.{}", &issued_on[8..10], &issued_on[5..7], &issued_on[0..4]);
    let said = [
        ("parcels[1].carats", "«10.505»: более двух знаков после точки".to_owned()),
        // A blank input is not sent: the field is missing.
        ("exporter.name", "обязательно для заполнения".to_owned()),
        ("parcels[0].hs_code", "«7104.10» относится к товарной позиции 7104".to_owned()),
        ("expires_on", format!("дата {ru_date} должна быть позже даты выдачи ({ru_date})")),
    ];
    for (field, russian) in &said {
        let id = input_id(field);
        let at = p
            .body
            .find(&format!("id=\"{id}-error\""))
            .unwrap_or_else(|| panic!("{field} at its input:\n{}", p.body));
        let shown = &p.body[at..at + p.body[at..].find("</").unwrap()];
        assert!(shown.contains(russian.as_str()), "{field}: {russian:?} expected in {shown:?}");
    }
    for english in ["has more than two decimals", "is required", "HS heading 7104", "must be after"] {
        assert!(!p.body.contains(english), "{english:?} is not said to a Russian user:\n{}", p.body);
    }
    // The API says the same problems in English, as before.
    let (status, answer) = api.post("/v1/certificates", &bad.to_string());
    assert_eq!(status, 422, "{answer}");
    let messages: Vec<&str> =
        answer["problems"].as_array().unwrap().iter().map(|p| p["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.contains("has more than two decimals")), "{answer}");
    assert!(
        messages.iter().any(|m| m.contains(&format!("must be after issued_on ({issued_on})"))),
        "{answer}"
    );
    assert!(
        answer["problems"][0].as_object().unwrap().keys().all(|k| k == "field" || k == "message"),
        "{answer}"
    );
}

/// A form's body as a browser uploads it (`multipart/form-data`): text fields, then files
/// `(name, file name, content)`; with its `Content-Type`.
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &str)]) -> (String, String) {
    let boundary = "kpnode-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    for (name, file, content) in files {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The text of the element whose `id` is `id` (up to its first closing tag).
fn element<'a>(page: &'a Page, id: &str) -> &'a str {
    let at = page.body.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}:\n{}", page.body));
    &page.body[at..at + page.body[at..].find("</").unwrap()]
}

/// A Russian-speaking supervisor meets in Russian what the node refuses: the partners form's
/// enrolment problems (a fingerprint that is not the bundle's, with both fingerprints and the
/// partner named), the void form's reason problems, and the errors that take a whole page (an
/// unknown certificate number, voiding a certificate already voided, its status named the
/// Russian way). The API says the same in English, as before.
#[test]
fn a_russian_supervisor_meets_enrolment_void_and_page_errors_in_russian() {
    let pair = linked_pair(0, 0);
    let api = &pair.ru.api;
    let body = r#"{"name":"sofia","role":"supervisor","language":"ru","password":"sofia passphrase 1"}"#;
    let (status, v) = api.post("/v1/users", body);
    assert_eq!(status, 201, "{v}");
    let mut sofia = Browser::new(&api.base);
    assert_eq!(sofia.sign_in("sofia", "sofia passphrase 1").status, 303);

    // (a) IN's bundle with RU's own fingerprint: refused at the fingerprint, in Russian.
    let (bundle, actual) = pair.inn.bundle();
    let (_, wrong) = pair.ru.bundle();
    let csrf = sofia.get("/partners").csrf();
    let (content_type, form) =
        multipart(&[("csrf", &csrf), ("fingerprint", &wrong)], &[("bundle", "in.kpbundle", &bundle)]);
    let r = sofia
        .agent
        .post(&format!("{}/partners", sofia.base))
        .header("Cookie", &sofia.cookie_header())
        .header("Content-Type", &content_type)
        .send(form.as_str());
    let p = sofia.finish(r);
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(p.body.contains("<html lang=\"ru\">"), "{}", p.body);
    let shown = element(&p, "fingerprint-error");
    let russian = format!("отпечатки не совпадают: отпечаток пакета — {actual}, а вам сообщили {wrong}");
    assert!(shown.contains(&russian), "{russian:?} expected in {shown:?}");
    assert!(shown.contains("попросите оператора IN"), "{shown:?}");
    assert!(!p.body.contains("fingerprint mismatch"), "no English for a Russian user:\n{}", p.body);
    // The API's answer is the English one, as before.
    let (status, answer) =
        api.post("/v1/peers", &serde_json::json!({"bundle": bundle, "fingerprint": wrong}).to_string());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["problems"][0]["field"], "fingerprint", "{answer}");
    let message = answer["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("fingerprint mismatch: the bundle's fingerprint is {actual}")),
        "{answer}"
    );

    // (b) An unknown certificate number takes the page: 404, in Russian.
    let p = sofia.get("/certificates/RU-2026-999999");
    assert_eq!(p.status, 404, "{}", p.body);
    assert!(p.body.contains("на этом узле нет сертификата RU-2026-999999"), "{}", p.body);
    assert!(!p.body.contains("there is no certificate"), "{}", p.body);
    let (status, answer) = api.get("/v1/certificates/RU-2026-999999");
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")), "{answer}");
    assert_eq!(answer["message"], "there is no certificate RU-2026-999999 on this node", "{answer}");

    // A reason too long for a void is refused at its field, in Russian.
    let number = api.submit(&certificate_json("RU", "IN", None, 11));
    let page = sofia.get(&format!("/certificates/{number}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.csrf();
    let long = "x".repeat(300);
    let p = sofia.post(&format!("/certificates/{number}/void"), &[("csrf", &csrf), ("reason", &long)]);
    assert_eq!(p.status, 422, "{}", p.body);
    let shown = element(&p, "reason-error");
    assert!(shown.contains("длина 300 символов, допускается не более"), "{shown:?}");
    assert!(!shown.contains("long"), "{shown:?}");
    assert_ne!(api.certificate(&number)["status"], "voided");

    // Voiding a certificate already voided (through the API): 409, its status in Russian.
    let (status, v) = api.post(&format!("/v1/certificates/{number}/void"), r#"{"reason":"cancelled"}"#);
    assert_eq!(status, 200, "{v}");
    let p = sofia.post(&format!("/certificates/{number}/void"), &[("csrf", &csrf), ("reason", "again")]);
    assert_eq!(p.status, 409, "{}", p.body);
    let russian = format!("сертификат {number} в состоянии «аннулирован»");
    assert!(p.body.contains(&russian), "{russian:?} expected in:\n{}", p.body);
    assert!(p.body.contains("Конфликт") && !p.body.contains("is voided"), "{}", p.body);
    let (status, answer) = api.post(&format!("/v1/certificates/{number}/void"), r#"{"reason":"again"}"#);
    assert_eq!((status, answer["error"].as_str()), (409, Some("conflict")), "{answer}");
    assert_eq!(
        answer["message"].as_str(),
        Some(format!("certificate {number} is voided: it is already voided").as_str()),
        "{answer}"
    );
}
