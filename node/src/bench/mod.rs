//! `kpnode bench`: the throughput and latency of a real exchange between two nodes (mutual
//! TLS, durable sled stores, signed receipts), beside this machine's Ed25519 limit.
//!
//! Certificates go through the same path as the API (`service::issuing::submit`: validate,
//! sign, store, flush) and each is timed from submission to the moment the exporter has
//! stored the importer's receipt durably. By default both nodes run in this process; with
//! `processes` both run as `kpnode run` daemons and the certificates go over the HTTP API
//! (`processes`), so each node's memory is its own.

pub mod cost;
mod processes;
pub mod scale;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, SigningKey, Verifier};
use kp_protocol::{Certificate, CertificateDraft, ParticipantCode, SignedDocument, ValidationContext};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::clock::{Clock, SystemClock};
use crate::home::{InitOptions, NodeDir};
use crate::node::{Node, NodeHandle, NodeOptions};
use kp_exchange::engine::Command as EngineCommand;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub certs: u64,
    /// Deliveries in flight per link.
    pub window: u32,
    /// Certificates being submitted at once (1: one at a time, each waiting for its receipt).
    pub concurrency: usize,
    /// Run the importer as a separate process.
    pub processes: bool,
    /// With `processes`: certificates per request through the bulk route
    /// `POST /v1/certificates/batch` (0: one per request through `POST /v1/certificates`).
    pub batch: usize,
    /// Also time the start of a node whose log holds this many entries.
    pub startup_entries: Option<u64>,
    /// Print progress to stderr.
    pub progress: bool,
    /// Also run the exchange with the exporter's signing key in a SoftHSM2 token that the
    /// bench makes in its temporary directory, through this PKCS#11 module.
    pub hsm_module: Option<PathBuf>,
}

/// The exchange again with the exporter's signing key in a SoftHSM2 token.
#[derive(Debug, Clone, Serialize)]
pub struct HsmBench {
    pub module: String,
    pub acknowledged: u64,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    pub latency_ms: Latency,
    /// One Ed25519 signature made by the token (`C_Sign`, `CKM_EDDSA`), best of several rounds.
    pub token_sign_us: f64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Peak resident memory of each node, in MB.
#[derive(Debug, Clone, Serialize)]
pub struct Rss {
    pub exporter: f64,
    pub importer: f64,
    /// How the figures were taken.
    pub note: String,
    /// With `--processes`: each daemon's resident memory (`VmRSS`) once connected and idle,
    /// before the first certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_exporter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_importer: Option<f64>,
}

/// This machine's Ed25519 speed on a certificate-sized document, on one core.
#[derive(Debug, Clone, Serialize)]
pub struct Crypto {
    pub document_bytes: usize,
    pub sign_us: f64,
    pub verify_us: f64,
    pub batch_verify_us: f64,
    pub cores: usize,
}

/// What the stores did.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub exporter_flushes: u64,
    pub exporter_commands_per_flush: f64,
    pub exporter_flush_ms: f64,
    pub importer_flushes: u64,
    pub importer_commands_per_flush: f64,
    pub importer_flush_ms: f64,
}

/// One node's flush totals: flushes, commands they made durable, seconds spent flushing.
type FlushTotals = (f64, f64, f64);

impl StoreStats {
    pub(crate) fn from_totals(exporter: FlushTotals, importer: FlushTotals) -> StoreStats {
        // Flushes, commands per flush, milliseconds per flush.
        let per = |(f, c, secs): FlushTotals| (f as u64, c / f.max(1.0), secs * 1e3 / f.max(1.0));
        let ((ef, ec, et), (imf, imc, imt)) = (per(exporter), per(importer));
        StoreStats {
            exporter_flushes: ef,
            exporter_commands_per_flush: ec,
            exporter_flush_ms: et,
            importer_flushes: imf,
            importer_commands_per_flush: imc,
            importer_flush_ms: imt,
        }
    }
}

fn flush_totals(m: &crate::metrics::Metrics) -> FlushTotals {
    let (f, c, secs) = m.flush_totals();
    (f as f64, c as f64, secs)
}

/// A start-up measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    pub log_entries: u64,
    pub store_mb: f64,
    pub seconds_to_serve: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub certs: u64,
    /// Certificates whose receipt the exporter stored (the run fails unless this is `certs`).
    pub acknowledged: u64,
    pub window: u32,
    pub concurrency: usize,
    pub mode: String,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    pub latency_ms: Latency,
    pub rss_mb: Rss,
    pub crypto: Crypto,
    /// cores / (2 × sign + 2 × verify): certificates per second if each cost one
    /// signature and one verification on each side and nothing else.
    pub limit_per_s: f64,
    pub ratio: f64,
    pub ratio_note: String,
    /// Group commits of each node's store: how many, how many commands each, how long.
    pub store: StoreStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    /// With `--hsm-module`: the same exchange with the exporter's signing key in a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsm: Option<HsmBench>,
    /// The Ed25519 work a certificate needs (its signature and verification, and its share of
    /// a receipt's), and the throughput that allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<cost::Floor>,
    /// throughput / floor.per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_floor: Option<f64>,
    /// The nodes' CPU per certificate, and where it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<cost::CpuUse>,
    /// One at a time (`--concurrency 1`): the latency's own floor, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_floor: Option<cost::LatencyFloor>,
    /// With `--processes`: the in-process exchange run right after, and this run's ratio to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process: Option<cost::Compared>,
}

/// What an exchange used: the nodes' CPU over the measured run, and the meter's totals.
#[derive(Debug, Clone, Default)]
struct Work {
    /// Both nodes, in seconds.
    cpu_seconds: f64,
    /// With `--processes`: each daemon, and the bench's HTTP clients.
    daemons: Option<(f64, f64, f64)>,
    /// sled's IO threads, in both nodes.
    sled_io_seconds: f64,
    parts: Vec<kp_exchange::meter::Totals>,
    how: String,
}

impl Work {
    fn cpu_use(&self, floor: &cost::Floor, certs: u64) -> cost::CpuUse {
        let mut used =
            cost::cpu_use(self.cpu_seconds, &self.parts, self.sled_io_seconds, certs, floor, &self.how);
        if let Some((ex, im, clients)) = self.daemons {
            let per = |s: f64| Some(s * 1e6 / certs.max(1) as f64);
            (used.exporter_us_per_cert, used.importer_us_per_cert, used.clients_us_per_cert) =
                (per(ex), per(im), per(clients));
        }
        used
    }
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    // Made before any thread starts: it sets SOFTHSM2_CONF for this process.
    let hsm = opts.hsm_module.as_deref().map(SoftHsmToken::make).transpose()?;
    let crypto = measure_crypto();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpnode-bench")
        .build()
        .map_err(|e| e.to_string())?;
    let (mut report, work) = if opts.processes {
        processes::exchange(opts, &crypto)?
    } else {
        runtime.block_on(exchange(opts, &crypto, None))?
    };
    if opts.processes {
        // Back to back, so that both meet the machine in the same state.
        let alone = BenchOptions { processes: false, concurrency: IN_PROCESS_CONCURRENCY, ..opts.clone() };
        say(opts, format!("the same in one process, {IN_PROCESS_CONCURRENCY} at a time, for comparison …"));
        let (r, _) = runtime.block_on(exchange(&alone, &crypto, None))?;
        report.in_process = Some(cost::Compared {
            certs: r.certs,
            concurrency: r.concurrency,
            throughput_per_s: r.throughput_per_s,
            ratio: report.throughput_per_s / r.throughput_per_s,
        });
    }
    let rtt_ms = if opts.concurrency <= 1 { Some(cost::loopback_rtt_ms()?) } else { None };
    if let Some(h) = &hsm {
        say(opts, format!("again with RU's signing key in a SoftHSM2 token ({}) …", h.module.display()));
        let (r, _) = runtime.block_on(exchange(opts, &crypto, Some(h.settings("kp-bench-signing"))))?;
        report.hsm = Some(HsmBench {
            module: h.module.display().to_string(),
            acknowledged: r.acknowledged,
            elapsed_s: r.elapsed_s,
            throughput_per_s: r.throughput_per_s,
            latency_ms: r.latency_ms,
            token_sign_us: h.sign_us()?,
        });
    }
    // Measured again after the exchange; the best of both is the machine's limit.
    let crypto = best_of(crypto, measure_crypto());
    report.limit_per_s = limit_per_s(&crypto);
    report.ratio = report.throughput_per_s / report.limit_per_s;
    let floor = cost::Floor::new(&crypto, cost::certs_per_receipt(&work.parts, report.acknowledged));
    report.ratio_to_floor = Some(report.throughput_per_s / floor.per_s);
    report.cpu = Some(work.cpu_use(&floor, report.acknowledged));
    report.floor = Some(floor);
    report.latency_floor =
        rtt_ms.map(|rtt| cost::LatencyFloor::new(&report.store, report.certs, rtt, report.latency_ms.p50));
    report.crypto = crypto;
    if let Some(n) = opts.startup_entries {
        report.startup = Some(runtime.block_on(startup(n, opts.progress))?);
    }
    Ok(report)
}

fn say(opts: &BenchOptions, text: impl AsRef<str>) {
    if opts.progress {
        eprintln!("{}", text.as_ref());
    }
}

/// The issuing authority each bench node is initialised with. The sample certificates name the
/// same authority, so the exporting node accepts them without an authority-mismatch warning.
fn bench_authority(code: &str) -> String {
    format!("Bench authority of {code}")
}

/// A certificate of the size and shape of a real one.
fn sample_json(number: &str, variant: u64, today: kp_protocol::Date) -> String {
    let expires = today.add_days(30).unwrap_or(today);
    let authority = bench_authority("RU");
    format!(
        r#"{{"number":"{number}","exporting_participant":"RU","importing_participant":"IN","issuing_authority":"{authority}","exporter":{{"name":"ALROSA PJSC","address":"6 Lenina St, Mirny, Sakha (Yakutia) 678174, Russia"}},"importer":{{"name":"Kiran Gems Pvt Ltd","address":"Bharat Diamond Bourse, Bandra Kurla Complex, Mumbai 400051, India"}},"issued_on":"{today}","expires_on":"{expires}","parcels":[{{"hs_code":"7102.31","carats":"{}.{:02}","value_usd":"4231000.00","origin":"RU"}},{{"hs_code":"7102.21","carats":"310.00","value_usd":"15500.00","origin":"MIXED"}}],"shipment":{{"port_of_export":"Moscow Sheremetyevo","customs_reference":"10005020/281126/{variant:07}"}},"declarations":[{{"code":"WDC-SoW","text":"The diamonds herein invoiced have been purchased from legitimate sources not involved in funding conflict."}}]}}"#,
        1000 + variant / 100,
        variant % 100
    )
}

fn sample_document() -> SignedDocument {
    let today = SystemClock.now().date();
    let ctx = ValidationContext {
        today,
        max_validity_days: None,
        participants: &kp_protocol::AnyParticipant,
        exporter: None,
        importer: None,
    };
    let json = sample_json("RU-BENCH-0000001", 1, today);
    // Invariant: the sample is valid by construction (tested).
    let cert: Certificate = CertificateDraft::from_json(&json, &ctx)
        .expect("the bench sample is valid")
        .into_certificate(|| unreachable!());
    SignedDocument::sign(
        &cert,
        ParticipantCode::from_static("RU"),
        &SigningKey::from_bytes(&[7; 32]),
        SystemClock.now(),
    )
}

/// Ed25519 on one core: sign, verify, and batch-verify (batches of 64). Each is the best of
/// several rounds: a shared virtual machine's speed varies from moment to moment, and the
/// limit is what the machine can do, not what it did while disturbed.
pub fn measure_crypto() -> Crypto {
    let doc = sample_document();
    let key = SigningKey::from_bytes(&[9; 32]);
    let vk = key.verifying_key();
    let message = doc.signing_message();
    let n = 640;
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut m = message.clone();
            m[0] = i as u8;
            m[1] = (i >> 8) as u8;
            m
        })
        .collect();
    let sigs: Vec<Signature> = messages.iter().map(|m| ed25519_dalek::Signer::sign(&key, m)).collect();
    let best = |f: &dyn Fn() -> usize| -> f64 {
        (0..7)
            .map(|_| {
                let t = Instant::now();
                let ops = f();
                t.elapsed().as_secs_f64() * 1e6 / ops as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let sign_us = best(&|| {
        for m in &messages {
            std::hint::black_box(ed25519_dalek::Signer::sign(&key, m));
        }
        n
    });
    let verify_us = best(&|| {
        for (m, s) in messages.iter().zip(&sigs) {
            let _ = std::hint::black_box(vk.verify(m, s));
        }
        n
    });
    let batch_verify_us = best(&|| {
        for chunk in 0..n / 64 {
            let range = chunk * 64..(chunk + 1) * 64;
            let refs: Vec<&[u8]> = messages[range.clone()].iter().map(Vec::as_slice).collect();
            let _ = std::hint::black_box(ed25519_dalek::verify_batch(&refs, &sigs[range], &vec![vk; 64]));
        }
        (n / 64) * 64
    });
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Crypto { document_bytes: doc.to_bytes().len(), sign_us, verify_us, batch_verify_us, cores }
}

/// The faster of two measurements, field by field.
fn best_of(a: Crypto, b: Crypto) -> Crypto {
    Crypto {
        sign_us: a.sign_us.min(b.sign_us),
        verify_us: a.verify_us.min(b.verify_us),
        batch_verify_us: a.batch_verify_us.min(b.batch_verify_us),
        ..a
    }
}

/// Peak resident memory of a process, in MB (`VmHWM`).
pub fn peak_rss_mb(pid: Option<u32>) -> Option<f64> {
    status_mb(pid, "VmHWM:")
}

/// Resident memory of a process now, in MB (`VmRSS`).
pub fn rss_mb(pid: Option<u32>) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// A memory figure of `/proc/PID/status` (in kB there), in MB.
fn status_mb(pid: Option<u32>, field: &str) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let kb: f64 = text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// When a certificate was submitted, and who waits for its receipt.
type Started = (Instant, Option<oneshot::Sender<()>>);

/// Tracks each certificate from submission to its durable receipt.
#[derive(Default)]
struct Tracker {
    started: Mutex<HashMap<String, Started>>,
    latencies: Mutex<Vec<Duration>>,
    remaining: AtomicU64,
    last: Mutex<Option<Instant>>,
}

/// A SoftHSM2 token of the bench's own (label `KPBENCH`), in a temporary directory removed
/// when dropped; `SOFTHSM2_CONF` points this process (and the nodes in it) at it.
struct SoftHsmToken {
    module: PathBuf,
    root: PathBuf,
    pin_file: PathBuf,
}

impl SoftHsmToken {
    fn make(module: &Path) -> Result<SoftHsmToken, String> {
        if !module.is_file() {
            return Err(format!(
                "--hsm-module {}: no such file (Debian's softhsm2 installs /usr/lib/softhsm/libsofthsm2.so)",
                module.display()
            ));
        }
        let root = tempdir()?;
        let tokens = root.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
        let conf = root.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let token = SoftHsmToken { module: module.to_owned(), pin_file: root.join("pin"), root };
        // Before any thread of this process starts (see `run`).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let pin = format!("{:08}", rand::random::<u32>() % 100_000_000);
        let out = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "KPBENCH", "--so-pin", &pin, "--pin", &pin])
            .output()
            .map_err(|e| format!("--hsm-module: softhsm2-util cannot be run ({e}); install softhsm2: the bench makes a SoftHSM2 token of its own"))?;
        if !out.status.success() {
            return Err(format!(
                "softhsm2-util --init-token failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        kp_keys::files::write_atomic(&token.pin_file, pin.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        Ok(token)
    }

    /// `[pkcs11]` for a node whose signing key is `object` in this token.
    fn settings(&self, object: &str) -> kp_config::Pkcs11 {
        kp_config::Pkcs11 {
            module: self.module.clone(),
            pin_file: Some(self.pin_file.clone()),
            // Invariant: a fixed, valid URI.
            signing_key: format!("pkcs11:token=KPBENCH;object={object}").parse().expect("a valid URI"),
            tls_key: None,
        }
    }

    /// One token signature of a certificate-sized message, in µs: best of 5 rounds of 100.
    fn sign_us(&self) -> Result<f64, String> {
        use kp_keys::SigningBackend as _;
        let settings = crate::hsm::TokenSettings::from_config(&self.settings("kp-bench-probe"))
            .map_err(|e| e.to_string())?;
        let uri = settings.uri.clone();
        let token = crate::hsm::Pkcs11Token::open(settings).map_err(|e| e.to_string())?;
        let key = token.generate(&uri).map_err(|e| e.to_string())?;
        let message = sample_document().signing_message();
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..100 {
                key.sign_message(&message).map_err(|e| e.to_string())?;
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / 100.0);
        }
        Ok(best)
    }
}

impl Drop for SoftHsmToken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn init_node(
    root: &Path,
    code: &str,
    peer_port: u16,
    window: u32,
    pkcs11: Option<kp_config::Pkcs11>,
) -> Result<NodeDir, String> {
    let dir = NodeDir::new(root.join(code));
    let opts = InitOptions {
        participant: code.parse().map_err(|e| format!("{e}"))?,
        authority: bench_authority(code).parse().map_err(|e| format!("{e}"))?,
        peer_listen: Some(([127, 0, 0, 1], peer_port).into()),
        api_listen: Some(([127, 0, 0, 1], 0).into()),
        advertise: Vec::new(),
        pkcs11,
    };
    let (mut config, _) = dir.init(&opts, SystemClock.now()).map_err(|e| e.to_string())?;
    config.delivery.max_in_flight = window;
    std::fs::write(dir.config_path(), config.render()).map_err(|e| e.to_string())?;
    Ok(dir)
}

async fn enrol(node: &NodeHandle, bundle: &kp_keys::VerifiedBundle) -> Result<(), String> {
    let (record, _) = kp_exchange::enrol::prepare(
        node.participant(),
        &bundle.to_armored(),
        &bundle.fingerprint.to_string(),
        None,
        SystemClock.now(),
    )
    .map_err(|e| e.to_string())?;
    node.shared()
        .actor
        .call(EngineCommand::EnrolPeer { record: Box::new(record), replace_identity: false, officer: None })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Certificates submitted at once by the in-process run a `--processes` one is compared with
/// (the default of `--concurrency`).
const IN_PROCESS_CONCURRENCY: usize = 1024;

async fn exchange(
    opts: &BenchOptions,
    crypto: &Crypto,
    pkcs11: Option<kp_config::Pkcs11>,
) -> Result<(BenchReport, Work), String> {
    let tmp = tempdir()?;
    let ex_dir = init_node(&tmp, "RU", 0, opts.window, pkcs11)?;
    let im_dir = init_node(&tmp, "IN", 0, opts.window, None)?;

    let tracker = Arc::new(Tracker::default());
    tracker.remaining.store(opts.certs, Ordering::SeqCst);
    let t = tracker.clone();
    let observer: crate::node::DeliveryObserver = Arc::new(move |acked| {
        let now = Instant::now();
        let mut started = t.started.lock().unwrap_or_else(|p| p.into_inner());
        let mut lat = t.latencies.lock().unwrap_or_else(|p| p.into_inner());
        for (_, number) in acked {
            if let Some((at, done)) = number.as_ref().and_then(|n| started.remove(n.as_str())) {
                lat.push(now - at);
                if let Some(d) = done {
                    let _ = d.send(());
                }
                t.remaining.fetch_sub(1, Ordering::SeqCst);
            }
        }
        *t.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    });
    let mut ex_opts = NodeOptions::new(ex_dir.clone());
    ex_opts.announce = false;
    ex_opts.delivery_observer = Some(observer);
    let exporter = Node::start(ex_opts).await.map_err(|e| e.to_string())?;
    let ex_bundle = exporter.bundle().map_err(|e| e.to_string())?;

    let mut im_opts = NodeOptions::new(im_dir.clone());
    im_opts.announce = false;
    let importer = Node::start(im_opts).await.map_err(|e| e.to_string())?;
    enrol(&exporter, &importer.bundle().map_err(|e| e.to_string())?).await?;
    enrol(&importer, &ex_bundle).await?;
    let in_code = ParticipantCode::from_static("IN");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exporter.shared().links.status(in_code).connected {
        if Instant::now() > deadline {
            return Err("the link between the two nodes did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    say(opts, format!("submitting {} certificates, {} at a time …", opts.certs, opts.concurrency));
    let today = SystemClock.now().date();
    let next = Arc::new(AtomicU64::new(0));
    let me = std::process::id();
    let sled_before = cost::threads_cpu_seconds(me, cost::SLED_IO_THREADS);
    let (cpu_before, parts_before) = (crate::os::process_cpu_seconds(), kp_exchange::meter::totals());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (next, tracker, shared) = (next.clone(), tracker.clone(), exporter.shared().clone());
        let (n, wait) = (opts.certs, opts.concurrency <= 1);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let number = format!("RU-BENCH-{i:07}");
                let body = sample_json(&number, i, today);
                let (tx, rx) = if wait { Some(oneshot::channel()).unzip() } else { (None, None) };
                tracker
                    .started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(number.clone(), (Instant::now(), tx));
                crate::service::issuing::submit(&shared, body.as_bytes(), None, &shared.token_officer())
                    .await
                    .map_err(|e| format!("{number}: {e:?}"))?;
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
            }
        });
    }
    let mut last_report = Instant::now();
    loop {
        let remaining = tracker.remaining.load(Ordering::SeqCst);
        if remaining == 0 {
            break;
        }
        if let Some(Err(e)) = tasks.try_join_next().transpose().map_err(|e| e.to_string())? {
            return Err(e);
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            say(opts, format!("  {} of {} acknowledged", opts.certs - remaining, opts.certs));
            last_report = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(60 + opts.certs / 100) {
            return Err(format!("{remaining} certificates were not acknowledged in time"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let work = Work {
        cpu_seconds: crate::os::process_cpu_seconds() - cpu_before,
        daemons: None,
        sled_io_seconds: cost::threads_cpu_seconds(me, cost::SLED_IO_THREADS) - sled_before,
        parts: cost::delta(&parts_before, &kp_exchange::meter::totals()),
        how: "CPU (getrusage) of this one process over the run: both nodes and the bench's own submitting tasks"
            .into(),
    };
    let last = tracker.last.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(Instant::now);
    let elapsed = last.duration_since(started).as_secs_f64();
    let mut lat = tracker.latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };

    let store = StoreStats::from_totals(
        flush_totals(&exporter.shared().metrics),
        flush_totals(&importer.shared().metrics),
    );
    let rss = peak_rss_mb(None).unwrap_or(0.0);
    importer.shutdown().await;
    exporter.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);

    let throughput = opts.certs as f64 / elapsed.max(1e-9);
    let limit = limit_per_s(crypto);
    let report = BenchReport {
        certs: opts.certs,
        acknowledged: lat.len() as u64,
        window: opts.window,
        concurrency: opts.concurrency,
        mode: "one process".into(),
        elapsed_s: elapsed,
        throughput_per_s: throughput,
        latency_ms: Latency { p50: pct(0.50), p99: pct(0.99), max: pct(1.0) },
        rss_mb: Rss {
            exporter: rss,
            importer: rss,
            note: "both nodes run in this one process, so both figures are its peak RSS; --processes shows each node's own"
                .into(),
            idle_exporter: None,
            idle_importer: None,
        },
        crypto: crypto.clone(),
        limit_per_s: limit,
        ratio: throughput / limit,
        ratio_note: RATIO_NOTE.into(),
        store,
        startup: None,
        hsm: None,
        floor: None,
        ratio_to_floor: None,
        cpu: None,
        latency_floor: None,
        in_process: None,
    };
    Ok((report, work))
}

/// Why the ratio may exceed 1.
const RATIO_NOTE: &str = "The limit counts two signatures and two verifications per certificate. kpnode \
signs one receipt per batch of deliveries (a Merkle root with a proof per certificate) and verifies it once, \
so a certificate costs about one signature and one verification: a ratio above 1 is possible.";

/// cores / (2 × sign + 2 × verify), in certificates per second. Documents are verified one by
/// one (strictly, as `log verify` does), not in batches: see `verify::verify_signatures`.
fn limit_per_s(c: &Crypto) -> f64 {
    c.cores as f64 / ((2.0 * c.sign_us + 2.0 * c.verify_us) / 1e6)
}

fn tempdir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir().join(format!(
        "kpnode-bench-{}-{}",
        std::process::id(),
        SystemClock.now().unix_millis()
    ));
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    Ok(base)
}

/// Fills a node's log with `entries` entries (a real signed certificate each, chained), then
/// times its start until the API answers.
async fn startup(entries: u64, progress: bool) -> Result<Startup, String> {
    use crate::store::{
        encode_record, hash_entry_bytes, log_key, meta, EntryBody, LogEntry, LogHead, Storage, Tree, Writes,
    };
    let tmp = tempdir()?;
    let dir = init_node(&tmp, "IN", 0, 256, None)?;
    let config = dir.config().map_err(|e| e.to_string())?;
    {
        let (store, _) = crate::store::SledStore::open(&dir.store_dir(), config.store.cache_capacity_mb)
            .map_err(|e| e.to_string())?;
        let doc = sample_document();
        let mut head = LogHead { next_seq: 1, last_hash: kp_protocol::Digest::ZERO };
        let now = SystemClock.now();
        while head.next_seq <= entries {
            let mut writes = Writes::new();
            for _ in 0..10_000.min(entries + 1 - head.next_seq) {
                let entry = LogEntry::new(
                    head.next_seq,
                    head.last_hash,
                    now,
                    EntryBody::Received { peer: ParticipantCode::from_static("RU"), document: doc.clone() },
                    None,
                );
                let bytes = encode_record(&entry);
                head = LogHead {
                    next_seq: entry.seq + 1,
                    last_hash: hash_entry_bytes(&entry.prev_hash, &bytes),
                };
                let record = crate::store::LogRecord { entry: bytes, receipt: None };
                writes.insert((Tree::Log, log_key(entry.seq).to_vec()), Some(encode_record(&record)));
            }
            writes.insert((Tree::Meta, meta::LOG_HEAD.to_vec()), Some(encode_record(&head)));
            store.commit(&writes).map_err(|e| e.to_string())?;
            if progress && head.next_seq % 100_000 == 1 {
                eprintln!("  filled {} log entries …", head.next_seq - 1);
            }
        }
        store.flush().map_err(|e| e.to_string())?;
    }
    let store_mb = dir_size(&dir.store_dir()) as f64 / 1e6;
    // sled's IO threads may hold the filled store's lock for a moment after it is dropped:
    // retry until they let go, timing only the start that succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (node, started) = loop {
        let started = Instant::now();
        let mut opts = NodeOptions::new(dir.clone());
        opts.announce = false;
        match Node::start(opts).await {
            Ok(node) => break (node, started),
            Err(e) if e.to_string().contains("acquire lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    // Serving: the API answers a request that reads the store.
    let status = node
        .shared()
        .store
        .get(crate::store::Tree::Meta, crate::store::meta::LOG_HEAD)
        .map_err(|e| e.to_string())?;
    let addr = node.api_addr();
    tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    if status.is_none() {
        return Err("the log head is missing after start".into());
    }
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Startup { log_entries: entries, store_mb, seconds_to_serve: seconds })
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_certificate_is_valid() {
        let doc = sample_document();
        assert!(doc.body::<Certificate>().is_ok());
        assert!(doc.to_bytes().len() > 500, "a realistic size");
    }

    /// The bench's exporting node must sign its sample certificates without the
    /// authority-mismatch warning, which a real operator would see as a misconfiguration.
    #[test]
    fn the_sample_certificate_names_the_bench_nodes_authority() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = init_node(tmp.path(), "RU", 0, 8, None).unwrap();
        let config = dir.config().unwrap();
        let cert = sample_document().body::<Certificate>().unwrap();
        assert_eq!(config.authority_mismatch(cert.content.issuing_authority.as_str()), None);
    }
}
