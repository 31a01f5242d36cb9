//! kp-tests: multi-node integration tests of kpnode, in-process and with real processes.
//!
//! # Layout
//! - this file: shared helpers: nodes in temporary directories ([`TestNode`] in-process,
//!   [`ProcessNode`] as a real `kpnode run`), enrolment, an API client, certificate JSON,
//!   and [`wait_until`] (conditions with a deadline, never bare sleeps).
//! - `tests/*.rs`: the scenarios.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kp_node::clock::{Clock, SystemClock};
use kp_node::home::{InitOptions, NodeDir};
use kp_node::{Node, NodeHandle, NodeOptions};
use kp_protocol::ParticipantCode;
use serde_json::{json, Value};

pub mod console;
pub mod prometheus;
pub mod proxy;
pub mod raw;
pub mod shifted;

/// Everything in-process nodes logged since `init_logging`, for tests that must see the log
/// line naming a refusal.
static LOGGED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Appends what it is given to [`LOGGED`].
struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs of in-process nodes go to the test output, at `KPNODE_TEST_LOG` (default: warn), and
/// to a buffer that [`logged`] returns (so keep the level at warn or below in tests that check
/// a warning).
pub fn init_logging() {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = std::env::var("KPNODE_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(tracing_subscriber::fmt::TestWriter::new.and(|| Captured))
        .try_init();
}

/// What in-process nodes of this test binary have logged so far (every test in the binary
/// shares it: look for lines only your test can have caused).
pub fn logged() -> String {
    LOGGED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Waits until the in-process log holds a line containing every one of `parts`; returns it.
pub fn wait_logged(parts: &[&str]) -> String {
    let mut found = String::new();
    wait_until(Duration::from_secs(10), &format!("a log line with {parts:?}"), || {
        match logged().lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            Some(l) => {
                found = l.to_owned();
                true
            }
            None => false,
        }
    });
    found
}

/// A metric's value from the text of `/metrics`: the sum over its label sets (0 if absent).
pub fn metric(api: &Api, name: &str) -> f64 {
    let (_, v) = api.get("/metrics");
    v.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A multi-threaded runtime for in-process nodes (tests drive them from plain threads).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// Waits until `f` is true, polling, or panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A port that was free a moment ago, for nodes that must keep their address across
/// restarts or that a CLI finds through node.toml (everything else binds port 0). From below
/// the kernel's ephemeral range: see [`kp_node::net::port::free_loopback_port`].
pub fn free_port() -> u16 {
    kp_node::net::port::free_loopback_port().expect("a free loopback port")
}

/// Creates a node directory under `root`.
pub fn init_dir(root: &Path, code: &str, peer_port: u16) -> NodeDir {
    let dir = NodeDir::new(root.join(code));
    let opts = InitOptions {
        participant: code.parse().expect("a participant code"),
        authority: format!("Authority of {code}").parse().expect("valid text"),
        peer_listen: Some(SocketAddr::from(([127, 0, 0, 1], peer_port))),
        api_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        advertise: Vec::new(),
        pkcs11: None,
    };
    dir.init(&opts, SystemClock.now()).expect("init");
    dir
}

/// A client of one node's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(addr: SocketAddr, token: &str) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Api { base: format!("http://{addr}"), token: token.to_owned(), agent }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
        let mut r = r.expect("the API answers");
        let status = r.status().as_u16();
        let text = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(
            self.agent
                .get(&format!("{}{path}", self.base))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// Like `get`, with the answer's value of the header `name`, if it has one.
    pub fn get_with_header(&self, path: &str, name: &str) -> (u16, Value, Option<String>) {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        let header = r
            .as_ref()
            .ok()
            .and_then(|resp| resp.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, value) = Self::finish(r);
        (status, value, header)
    }

    /// Like `post`, but `None` if the API cannot be reached (a node restarting).
    pub fn try_post(&self, path: &str, body: &str) -> Option<(u16, Value)> {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body)
            .ok()?;
        let status = r.status().as_u16();
        let text = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Like `post`, with extra headers; `None` if no answer arrived (the connection failed).
    pub fn try_post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Option<(u16, Value)> {
        let mut request = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut r = request.send(body).ok()?;
        let status = r.status().as_u16();
        let text = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        Self::finish(
            self.agent
                .post(&format!("{}{path}", self.base))
                .header("Authorization", &format!("Bearer {}", self.token))
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        Self::finish(
            self.agent
                .delete(&format!("{}{path}", self.base))
                .header("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// Submits a certificate; panics unless it was stored. Returns its number.
    pub fn submit(&self, json: &str) -> String {
        let (status, v) = self.post("/v1/certificates", json);
        assert!(status == 201 || status == 200, "submit failed: {status} {v}");
        v["number"].as_str().expect("a number").to_owned()
    }

    pub fn status(&self) -> Value {
        let (s, v) = self.get("/v1/status");
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Every certificate in `direction`, page after page (as a client follows `X-Next-Cursor`).
    pub fn certificates(&self, direction: &str) -> Vec<Value> {
        self.every_page(&format!("/v1/certificates?direction={direction}&limit=1000"))
    }

    /// The certificates of every page of the list `query` (a path with its query string).
    pub fn every_page(&self, query: &str) -> Vec<Value> {
        let mut path = query.to_owned();
        let mut all = Vec::new();
        loop {
            let (s, v, next) = self.get_with_header(&path, "X-Next-Cursor");
            assert_eq!(s, 200, "{v}");
            all.extend(v.as_array().cloned().unwrap_or_default());
            match next {
                Some(cursor) => path = format!("{query}&cursor={cursor}"),
                None => return all,
            }
        }
    }

    pub fn certificate(&self, number: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/certificates/{number}"));
        assert_eq!(s, 200, "{v}");
        v
    }

    /// How many certificates the list holds in `direction` and `status`, page after page.
    pub fn count(&self, direction: &str, status: &str) -> usize {
        self.every_page(&format!("/v1/certificates?direction={direction}&status={status}&limit=1000")).len()
    }

    /// Enrols the bundle `text` with `fingerprint`.
    pub fn enrol(&self, text: &str, fingerprint: &str) {
        let body = json!({"bundle": text, "fingerprint": fingerprint}).to_string();
        let (s, v) = self.post("/v1/peers", &body);
        assert_eq!(s, 201, "enrol failed: {v}");
    }
}

/// A node running in this process.
#[derive(Debug)]
pub struct TestNode {
    pub code: ParticipantCode,
    pub dir: NodeDir,
    pub handle: Option<NodeHandle>,
    pub api: Api,
}

impl TestNode {
    /// Starts the node in `dir` on `rt`.
    pub fn start(rt: &tokio::runtime::Runtime, dir: NodeDir) -> TestNode {
        let mut opts = NodeOptions::new(dir.clone());
        opts.announce = false;
        let handle = rt.block_on(Node::start(opts)).expect("the node starts");
        let api = Api::new(handle.api_addr(), handle.api_token());
        TestNode { code: handle.participant(), dir, handle: Some(handle), api }
    }

    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("the node is running")
    }

    /// Armored bundle and fingerprint, with the address the node listens on.
    pub fn bundle(&self) -> (String, String) {
        let b = self.handle().bundle().expect("a bundle");
        (b.to_armored(), b.fingerprint.to_string())
    }

    pub fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        if let Some(h) = self.handle.take() {
            rt.block_on(h.shutdown());
        }
    }
}

/// Enrols `a` and `b` with each other, through their APIs.
pub fn enrol_pair(a: &TestNode, b: &TestNode) {
    let (text, fp) = b.bundle();
    a.api.enrol(&text, &fp);
    let (text, fp) = a.bundle();
    b.api.enrol(&text, &fp);
}

/// RU and IN in one process, in one temporary directory, enrolled to each other: the start
/// of most two-node tests. Bind every field when destructuring (`tmp: _tmp`, not `tmp: _`):
/// a field left unbound is dropped at once, and the temporary directory with it.
#[derive(Debug)]
pub struct Pair {
    pub rt: tokio::runtime::Runtime,
    pub tmp: tempfile::TempDir,
    pub ru: TestNode,
    pub inn: TestNode,
}

/// A [`Pair`] whose nodes listen on `ru_port` and `in_port` (0: any; [`free_port`] for a
/// node that must be dialled again at the same address after it restarts).
pub fn enrolled_pair(ru_port: u16, in_port: u16) -> Pair {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", ru_port));
    let inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", in_port));
    enrol_pair(&ru, &inn);
    Pair { rt, tmp, ru, inn }
}

/// An [`enrolled_pair`] whose link is up.
pub fn linked_pair(ru_port: u16, in_port: u16) -> Pair {
    let pair = enrolled_pair(ru_port, in_port);
    wait_linked(&pair.ru.api, pair.inn.code);
    pair
}

/// Waits until `a`'s link to `b` is up.
pub fn wait_linked(a: &Api, b: ParticipantCode) {
    wait_until(Duration::from_secs(20), &format!("the link to {b} is up"), || {
        let s = a.status();
        s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["participant"] == b.as_str() && p["link"]["connected"].as_bool() == Some(true))
    });
}

/// Certificate JSON from `from` to `to`, issued today. `number` None leaves numbering to the
/// node. `variant` changes the first parcel's carats, so contents differ.
pub fn certificate_json(from: &str, to: &str, number: Option<&str>, variant: u64) -> String {
    let today = SystemClock.now().date();
    let mut v = json!({
        "exporting_participant": from,
        "importing_participant": to,
        "issuing_authority": format!("Authority of {from}"),
        "exporter": {"name": "Exporter Ltd", "address": "1 Mine Road"},
        "importer": {"name": "Importer Pvt", "address": "2 Bourse Street"},
        "issued_on": today.to_string(),
        "expires_on": today.add_days(30).expect("a date").to_string(),
        "parcels": [
            {"hs_code": "7102.31", "carats": format!("{}.{:02}", 100 + variant / 100, variant % 100), "value_usd": "25000.00", "origin": from},
            {"hs_code": "7102.21", "carats": "10.50", "value_usd": "900.00", "origin": "MIXED"}
        ]
    });
    if let Some(n) = number {
        v["number"] = n.into();
    }
    v.to_string()
}

/// The `kpnode` binary of this build: this package's `kpnode-under-test`, which cargo builds
/// beside the test executables (`target/<profile>/`) before running any test.
pub fn kpnode_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("kpnode-under-test");
    assert!(bin.exists(), "{} is missing; run the tests with cargo test", bin.display());
    bin
}

/// A node running as a real `kpnode run` process.
#[derive(Debug)]
pub struct ProcessNode {
    pub dir: NodeDir,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl ProcessNode {
    /// Starts `kpnode run` in `dir` and waits until its API answers.
    pub fn start(dir: &NodeDir) -> ProcessNode {
        let log = dir.root().join(format!("run-{}.log", std::process::id()));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("a log file");
        let child = Command::new(kpnode_bin())
            .args(["run", "--dir"])
            .arg(dir.root())
            .env("KPNODE_LOG", std::env::var("KPNODE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            // Were the tests themselves run by a systemd service, the daemons under test must
            // not notify it.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("kpnode runs");
        let mut node = ProcessNode { dir: dir.clone(), child: Some(child), log };
        let pid = node.pid();
        wait_until(Duration::from_secs(30), "the daemon answers", || {
            if let Some(c) = node.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "kpnode run exited with {status}: {}",
                        std::fs::read_to_string(&node.log).unwrap_or_default()
                    );
                }
            }
            match node.daemon_api() {
                Some((api, daemon_pid)) if daemon_pid == pid => api.get("/v1/status").0 == 200,
                _ => false,
            }
        });
        node
    }

    fn daemon_api(&self) -> Option<(Api, u32)> {
        let bytes = std::fs::read(kp_node::node::daemon_file_path(&self.dir)).ok()?;
        let d: kp_node::node::DaemonFile = serde_json::from_slice(&bytes).ok()?;
        Some((Api::new(d.api, &self.dir.token().ok()?), d.pid))
    }

    pub fn api(&self) -> Api {
        self.daemon_api().expect("the daemon has announced itself").0
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let r = unsafe_kill(c.id() as i32, libc::SIGTERM);
            assert_eq!(r, 0, "SIGTERM could not be sent");
            let status = c.wait().expect("the daemon exits");
            assert!(
                status.success(),
                "kpnode run exited with {status}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `signal` to `pid`.
pub fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. std has no way to
    // send SIGTERM.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal)
    }
}

/// Runs `kpnode` with `args`; returns (exit code, stdout, stderr).
pub fn kpnode(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(kpnode_bin())
        .args(args)
        .env_remove("KPNODE_DIR")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("kpnode runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `kpnode` with `args`, which must succeed; returns its stdout.
pub fn kpnode_ok(args: &[&str]) -> String {
    let (code, out, err) = kpnode(args);
    assert_eq!(code, 0, "kpnode {args:?}: {err}");
    out
}

/// RU and IN as `kpnode run` processes in one temporary directory, each on a port of its
/// own, enrolled to each other through the CLI.
#[derive(Debug)]
pub struct ProcessPair {
    pub tmp: tempfile::TempDir,
    pub ru_dir: NodeDir,
    pub in_dir: NodeDir,
    pub ru: ProcessNode,
    pub inn: ProcessNode,
}

pub fn enrolled_processes() -> ProcessPair {
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let ru = ProcessNode::start(&ru_dir);
    let inn = ProcessNode::start(&in_dir);
    enrol_cli(&ru_dir, &in_dir);
    ProcessPair { tmp, ru_dir, in_dir, ru, inn }
}

/// Enrols process nodes with each other through the CLI, as an operator would.
pub fn enrol_cli(a: &NodeDir, b: &NodeDir) {
    for (x, y) in [(a, b), (b, a)] {
        let bundle = y.root().join("self.bundle");
        let (code, out, err) = kpnode(&[
            "peer",
            "export",
            "--dir",
            y.root().to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let fp = out.lines().find_map(|l| l.strip_prefix("fingerprint: ")).expect("a fingerprint").to_owned();
        let (code, _, err) = kpnode(&[
            "peer",
            "add",
            bundle.to_str().unwrap(),
            "--fingerprint",
            &fp,
            "--dir",
            x.root().to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
}

/// Opens a stopped node's store and audits its log; returns the report.
pub fn audit(dir: &NodeDir) -> kp_exchange::audit::AuditReport {
    let config = dir.config().expect("config");
    let keys = dir.keys(&config).expect("keys");
    let (store, _) = kp_node::store::SledStore::open(&dir.store_dir(), 16).expect("the store opens");
    let trust = kp_exchange::trust::load(&store).expect("trust");
    kp_exchange::audit::verify_log(&store, config.participant, &keys.history, &trust, |_| {})
        .expect("the log verifies")
}

/// A whole-number setting from the environment (the long versions of the soak and the kill
/// loops), or `default` when it is unset. A value that does not parse fails the test: falling
/// back to the default would run the short version while the operator believes the long one
/// ran.
pub fn env_u64(name: &str, default: u64) -> u64 {
    parse_env_u64(name, std::env::var(name), default).unwrap_or_else(|e| panic!("{e}"))
}

/// `env_u64` without the environment, for its unit test.
fn parse_env_u64(name: &str, value: Result<String, std::env::VarError>, default: u64) -> Result<u64, String> {
    match value {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(format!("{name}={v:?} is not a whole number; unset it or set e.g. {name}={default}"))
        }
        Ok(v) => v.trim().parse().map_err(|e| {
            format!("{name}={v:?} is not a whole number ({e}); unset it or set e.g. {name}={default}")
        }),
    }
}

/// Whether this run must not skip anything: in CI (`CI` set to anything but `false`/`0`, as
/// CI services do; `.ci/run` sets it) or when `require_var` is set.
pub fn skipping_forbidden(require_var: Option<&str>) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || require_var.is_some_and(|v| std::env::var_os(v).is_some())
}

/// A part of a test that cannot run on this machine. In CI, or with `require_var` set, that
/// is a failure (a skip there would hide a test that no longer runs). Elsewhere the skip is
/// written straight to the process's stderr: `eprintln!` inside a test is captured by the
/// harness and shown only when the test fails, so a skip would pass unseen.
pub fn skip_part(what: &str, why: &str, require_var: Option<&str>) {
    if skipping_forbidden(require_var) {
        panic!(
            "{what} cannot run here ({why}), and skipping is not allowed in CI{}",
            require_var.map(|v| format!(" or with {v} set")).unwrap_or_default()
        );
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {what}: {why}");
}

/// Submits `n` RU→IN certificates through `api` from 8 threads at once; returns the numbers
/// given out, in no particular order (each acknowledged, so durable).
pub fn submit_from_threads(api: &Api, n: u64) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let api = api.clone();
                s.spawn(move || {
                    (0..n)
                        .filter(|i| i % 8 == t)
                        .map(|i| api.submit(&certificate_json("RU", "IN", None, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// A certificate parsed from `json` as of today, with any participant codes allowed: what a
/// test needs to sign documents by hand.
pub fn parse_certificate(json: &str) -> kp_protocol::Certificate {
    let ctx = kp_protocol::ValidationContext {
        today: SystemClock.now().date(),
        max_validity_days: Some(60),
        participants: &kp_protocol::AnyParticipant,
        exporter: None,
        importer: None,
    };
    kp_protocol::CertificateDraft::from_json(json, &ctx).unwrap().into_certificate(|| unreachable!())
}

/// Sets `key` in `[section]` of `node.toml` to `value` (TOML), whatever it was rendered as.
pub fn set_setting(dir: &kp_node::home::NodeDir, section: &str, key: &str, value: &str) {
    let text = std::fs::read_to_string(dir.config_path()).unwrap();
    let mut current = String::new();
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = s.to_owned();
            } else if current == section && line.split('=').next().map(str::trim) == Some(key) {
                done = true;
                return format!("{key} = {value}");
            }
            line.to_owned()
        })
        .collect();
    assert!(done, "no {section}.{key} in {text}");
    std::fs::write(dir.config_path(), out.join("\n") + "\n").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    #[test]
    fn a_size_variable_that_does_not_parse_is_an_error_not_the_default() {
        assert_eq!(parse_env_u64("KPNODE_X", Err(VarError::NotPresent), 7), Ok(7));
        assert_eq!(parse_env_u64("KPNODE_X", Ok("50000".into()), 7), Ok(50_000));
        for bad in ["50k", "", "-1", "5e4", "1_000"] {
            let e = parse_env_u64("KPNODE_X", Ok(bad.into()), 7).unwrap_err();
            assert!(e.contains("KPNODE_X") && e.contains("not a whole number"), "{bad}: {e}");
        }
    }
}
