//! `kpnode bench --processes`: both nodes as `kpnode run` daemons, exactly as an operator
//! runs them, and the certificates submitted over their HTTP API.
//!
//! Nothing of the bench lives in either node's process, so each node's peak RSS is its own.
//! Submission times are taken here; the moment each receipt was stored is the `recorded_at`
//! of the exporter's log entry for the certificate (millisecond resolution), read back from
//! `GET /v1/log` once every certificate is acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kp_protocol::Timestamp;
use serde_json::Value;

use super::{
    cost, init_node, limit_per_s, peak_rss_mb, rss_mb, sample_json, say, tempdir, BenchOptions, BenchReport,
};
use super::{Crypto, Latency, Rss, StoreStats, Work};
use crate::client::Client;
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;

/// Client connections submitting at once: each is a thread here, and more than this only
/// takes CPU from the nodes being measured.
const MAX_CLIENTS: usize = 64;

/// `kpnode run` children, stopped (SIGTERM, then SIGKILL) however the bench ends.
struct Daemons(Vec<(String, Child)>);

impl Daemons {
    fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            terminate(child);
        }
        for (_, child) in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }

    /// Fails if a daemon has exited, with the end of its log.
    fn check(&mut self, tmp: &Path) -> Result<(), String> {
        for (code, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(tmp.join(format!("{code}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "the {code} node exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we have not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

fn client(dir: &NodeDir) -> Result<Client, String> {
    Client::for_dir(dir).map_err(|e| e.lines().join("; "))
}

fn get(c: &Client, path: &str) -> Result<Value, String> {
    c.get(path).map_err(|e| e.lines().join("; "))
}

/// The sum of a counter's samples in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(c: &Client) -> Result<String, String> {
    match get(c, "/metrics")? {
        Value::String(s) => Ok(s),
        other => Err(format!("unexpected /metrics answer: {other}")),
    }
}

/// Flushes, commands flushed and seconds flushing, from a node's `/metrics`.
fn flush_totals(text: &str) -> (f64, f64, f64) {
    (
        counter(text, "kpnode_flush_seconds_count"),
        counter(text, "kpnode_flushed_commands_total"),
        counter(text, "kpnode_flush_seconds_sum"),
    )
}

pub fn exchange(opts: &BenchOptions, crypto: &Crypto) -> Result<(BenchReport, Work), String> {
    let tmp = tempdir()?;
    let result = run_in(&tmp, opts, crypto);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// A port for a daemon's peer listener, named in the other's enrolment before either starts.
fn free_port() -> Result<u16, String> {
    crate::net::port::free_loopback_port().map_err(|e| format!("a loopback port for a daemon: {e}"))
}

/// The CPU the daemons and the bench have used so far, in seconds.
struct CpuReading {
    exporter: f64,
    importer: f64,
    /// The bench's own process: its HTTP clients.
    clients: f64,
    /// Both daemons' sled IO threads.
    sled_io: f64,
    /// Both daemons' meters, summed.
    parts: Vec<kp_exchange::meter::Totals>,
}

fn cpu_now(daemons: &Daemons, clients: [&Client; 2]) -> Result<CpuReading, String> {
    let pid = |i: usize| daemons.0[i].1.id();
    let cpu = |i: usize| cost::process_cpu_seconds(pid(i)).ok_or("cannot read a daemon's /proc/PID/stat");
    let sled_io = |i: usize| cost::threads_cpu_seconds(pid(i), cost::SLED_IO_THREADS);
    Ok(CpuReading {
        exporter: cpu(0)?,
        importer: cpu(1)?,
        clients: crate::os::process_cpu_seconds(),
        sled_io: sled_io(0) + sled_io(1),
        parts: cost::sum(
            &cost::from_metrics(&metrics(clients[0])?),
            &cost::from_metrics(&metrics(clients[1])?),
        ),
    })
}

fn run_in(tmp: &Path, opts: &BenchOptions, crypto: &Crypto) -> Result<(BenchReport, Work), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ex = init_node(tmp, "RU", free_port()?, opts.window, None)?;
    let im = init_node(tmp, "IN", free_port()?, opts.window, None)?;
    enrol_each_other(&exe, tmp, &ex, &im)?;
    let mut daemons = start_daemons(&exe, tmp, &ex, &im)?;
    let ex_client = wait_connected(&mut daemons, tmp, &ex, &im)?;
    // Idle: connected, started a second ago, nothing submitted yet.
    std::thread::sleep(Duration::from_secs(1));
    let idle = |i: usize| rss_mb(Some(daemons.0[i].1.id()));
    let (idle_exporter, idle_importer) = (idle(0), idle(1));

    let clients = opts.concurrency.clamp(1, MAX_CLIENTS);
    say(opts, format!("submitting {} certificates over HTTP, {clients} connections …", opts.certs));
    let n = usize::try_from(opts.certs).map_err(|_| "--certs is too large for this machine")?;
    let submitted: Arc<Vec<AtomicI64>> = Arc::new((0..n).map(|_| AtomicI64::new(0)).collect());
    let im_client = client(&im)?;
    let before = cpu_now(&daemons, [&ex_client, &im_client])?;
    let start_ms = SystemClock.now().unix_millis();
    let started = Instant::now();
    let threads = spawn_submitters(&ex, clients, opts.batch, &submitted)?;
    wait_acknowledged(opts, &mut daemons, tmp, &ex_client, threads, started)?;
    let after = cpu_now(&daemons, [&ex_client, &im_client])?;
    let (ex_cpu, im_cpu) = (after.exporter - before.exporter, after.importer - before.importer);
    let work = Work {
        cpu_seconds: ex_cpu + im_cpu,
        daemons: Some((ex_cpu, im_cpu, after.clients - before.clients)),
        sled_io_seconds: after.sled_io - before.sled_io,
        parts: cost::delta(&before.parts, &after.parts),
        how: "CPU (user + system, /proc/PID/stat) of the two `kpnode run` daemons over the run, the bench's \
              progress polls of the exporter's /metrics (every 20 ms) included; the bench's HTTP clients apart"
            .into(),
    };

    let (ex_metrics, im_metrics) = (metrics(&ex_client)?, metrics(&im_client)?);
    let rss = |i: usize| peak_rss_mb(Some(daemons.0[i].1.id())).unwrap_or(0.0);
    let (ex_rss, im_rss) = (rss(0), rss(1));

    say(opts, "reading the exporter's log for the receipt times …");
    // The receipts were counted as stored; their log entries are read back. Once, a loaded CI
    // machine read none of them here: read again for a while before calling it a failure, and
    // say what the log did hold.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut latencies, last_ms) = loop {
        let (latencies, last_ms, seen) = latencies(&ex_client, &submitted, start_ms)?;
        if latencies.len() as u64 == opts.certs {
            break (latencies, last_ms);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the exporter's log holds {} acknowledged bench certificates, not {} (it read {seen})",
                latencies.len(),
                opts.certs
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    daemons.stop();

    latencies.sort_by(f64::total_cmp);
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    // The end is the last receipt's log time (ms), or the moment the counter showed it.
    let elapsed = ((last_ms - start_ms) as f64 / 1e3).clamp(1e-3, started.elapsed().as_secs_f64());
    let throughput = opts.certs as f64 / elapsed;
    let store = StoreStats::from_totals(flush_totals(&ex_metrics), flush_totals(&im_metrics));
    let limit = limit_per_s(crypto);
    let report = BenchReport {
        certs: opts.certs,
        acknowledged: latencies.len() as u64,
        window: opts.window,
        concurrency: clients,
        mode: if opts.batch > 0 {
            format!(
                "two processes, submitted over HTTP in batches of {} (POST /v1/certificates/batch)",
                opts.batch
            )
        } else {
            "two processes, submitted over HTTP".into()
        },
        elapsed_s: elapsed,
        throughput_per_s: throughput,
        latency_ms: Latency { p50: pct(0.50), p99: pct(0.99), max: pct(1.0) },
        rss_mb: Rss {
            exporter: ex_rss,
            importer: im_rss,
            note:
                "peak RSS (VmHWM) of each `kpnode run` process; idle: its VmRSS once connected, before the first certificate; latency to the millisecond of the log's clock"
                    .into(),
            idle_exporter,
            idle_importer,
        },
        crypto: crypto.clone(),
        limit_per_s: limit,
        ratio: throughput / limit,
        ratio_note: super::RATIO_NOTE.into(),
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

/// Enrols each node with the other offline, as operators would: bundle file, then `peer add`.
fn enrol_each_other(exe: &Path, tmp: &Path, ex: &NodeDir, im: &NodeDir) -> Result<(), String> {
    for (from, to) in [(ex, im), (im, ex)] {
        let config = from.config().map_err(|e| e.to_string())?;
        let keys = from.keys(&config).map_err(|e| e.to_string())?;
        let bundle = keys
            .bundle(config.authority.clone(), config.endpoints(), SystemClock.now())
            .map_err(|e| e.to_string())?;
        let path: PathBuf = tmp.join(format!("{}.bundle", config.participant));
        std::fs::write(&path, bundle.to_armored()).map_err(|e| e.to_string())?;
        let out = Command::new(exe)
            .args(["peer", "add"])
            .arg(&path)
            .args(["--fingerprint", &bundle.fingerprint.to_string(), "--dir"])
            .arg(to.root())
            .stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("kpnode peer add failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(())
}

/// Starts `kpnode run` for both nodes, each logging warnings to `<code>.log` in `tmp`.
fn start_daemons(exe: &Path, tmp: &Path, ex: &NodeDir, im: &NodeDir) -> Result<Daemons, String> {
    let mut daemons = Daemons(Vec::new());
    for (code, dir) in [("RU", ex), ("IN", im)] {
        let log = std::fs::File::create(tmp.join(format!("{code}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(["run", "--dir"])
            .arg(dir.root())
            .env("KPNODE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        daemons.0.push((code.to_owned(), child));
    }
    Ok(daemons)
}

/// Waits until both APIs answer and the exporter's link to the importer is connected;
/// returns the exporter's client.
fn wait_connected(daemons: &mut Daemons, tmp: &Path, ex: &NodeDir, im: &NodeDir) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        daemons.check(tmp)?;
        let ready = crate::node::daemon_file_path(ex).exists() && crate::node::daemon_file_path(im).exists();
        if ready {
            let c = client(ex)?;
            let connected = get(&c, "/v1/peers").ok().is_some_and(|v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["participant"] == "IN" && p["link"]["connected"].as_bool() == Some(true))
            });
            if connected {
                return Ok(c);
            }
        }
        if Instant::now() > deadline {
            return Err("the two nodes did not connect within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Submitter = std::thread::JoinHandle<Result<(), String>>;

/// `clients` threads, each with its own connection, submitting the bench certificates in
/// turn until none is left (`batch` at a time through the bulk route, or one at a time if 0);
/// each notes in `submitted` when it sent its certificate (µs).
fn spawn_submitters(
    ex: &NodeDir,
    clients: usize,
    batch: usize,
    submitted: &Arc<Vec<AtomicI64>>,
) -> Result<Vec<Submitter>, String> {
    let today = SystemClock.now().date();
    let next = Arc::new(AtomicU64::new(0));
    let per_request = batch.max(1) as u64;
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (c, next, submitted) = (client(ex)?, next.clone(), submitted.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let first = next.fetch_add(per_request, Ordering::SeqCst);
                let last = (first + per_request).min(submitted.len() as u64);
                if first >= last {
                    return Ok(());
                }
                let bodies: Vec<String> =
                    (first..last).map(|i| sample_json(&format!("RU-BENCH-{i:07}"), i, today)).collect();
                let now = micros_now();
                for i in first..last {
                    submitted[i as usize].store(now, Ordering::SeqCst);
                }
                if batch == 0 {
                    c.post("/v1/certificates", bodies[0].as_bytes())
                        .map_err(|e| format!("RU-BENCH-{first:07}: {}", e.lines().join("; ")))?;
                    continue;
                }
                let (_, answer) = c
                    .post("/v1/certificates/batch", format!("[{}]", bodies.join(",")).as_bytes())
                    .map_err(|e| format!("the batch from RU-BENCH-{first:07}: {}", e.lines().join("; ")))?;
                let items = answer["items"].as_array().map_or(&[][..], Vec::as_slice);
                if items.len() as u64 != last - first {
                    return Err(format!(
                        "the batch from RU-BENCH-{first:07}: {} answers for {} certificates",
                        items.len(),
                        last - first
                    ));
                }
                if let Some(bad) = items.iter().find(|i| !matches!(i["code"].as_u64(), Some(200 | 201))) {
                    return Err(format!("the batch from RU-BENCH-{first:07}: refused an item: {bad}"));
                }
            }
        }));
    }
    Ok(threads)
}

/// Waits until the exporter has stored a receipt for every certificate, reporting progress;
/// a daemon that died, a submitter that failed or the deadline ends the run.
fn wait_acknowledged(
    opts: &BenchOptions,
    daemons: &mut Daemons,
    tmp: &Path,
    ex_client: &Client,
    mut threads: Vec<Submitter>,
    started: Instant,
) -> Result<(), String> {
    let mut last_report = Instant::now();
    loop {
        daemons.check(tmp)?;
        let acked = counter(&metrics(ex_client)?, "kpnode_receipts_stored_total") as u64;
        if acked >= opts.certs {
            break;
        }
        if threads.iter().any(|t| t.is_finished()) {
            // A finished thread that failed ends the run now rather than at the deadline.
            let (done, running): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
            threads = running;
            for t in done {
                t.join().map_err(|_| "a submitting thread panicked".to_owned())??;
            }
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            say(opts, format!("  {acked} of {} acknowledged", opts.certs));
            last_report = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(60 + opts.certs / 100) {
            return Err(format!("{} certificates were not acknowledged in time", opts.certs - acked));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in threads {
        t.join().map_err(|_| "a submitting thread panicked".to_owned())??;
    }
    Ok(())
}

/// Latency: submission (here) to the receipt's log entry (the exporter's `recorded_at`), in
/// ms, for every bench certificate in the exporter's log; and the last receipt's time.
/// Also says what it read (entries, by kind and direction), for the error if it is not all.
fn latencies(
    ex_client: &Client,
    submitted: &[AtomicI64],
    start_ms: i64,
) -> Result<(Vec<f64>, i64, String), String> {
    let mut latencies = Vec::with_capacity(submitted.len());
    let mut last_ms = start_ms;
    let mut from = 1u64;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let page = get(ex_client, &format!("/v1/log?from={from}&limit=10000"))?;
        let entries = page.as_array().ok_or("GET /v1/log did not answer a list")?;
        for e in entries {
            let what =
                format!("{} {}", e["direction"].as_str().unwrap_or("?"), e["kind"].as_str().unwrap_or("?"));
            *seen.entry(what).or_default() += 1;
            let index =
                e["certificate"].as_str().and_then(|c| c.strip_prefix("RU-BENCH-")?.parse::<usize>().ok());
            let at = e["recorded_at"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
            if let (Some(i), Some(at), "out", "certificate") =
                (index, at, e["direction"].as_str().unwrap_or(""), e["kind"].as_str().unwrap_or(""))
            {
                let sent_us = submitted.get(i).map_or(0, |s| s.load(Ordering::SeqCst));
                latencies.push(((at.unix_millis() * 1000 - sent_us) as f64 / 1e3).max(0.0));
                last_ms = last_ms.max(at.unix_millis());
            }
        }
        match entries.last().and_then(|e| e["seq"].as_u64()) {
            Some(seq) => from = seq + 1,
            None => break,
        }
    }
    let seen = if seen.is_empty() {
        "no entries".to_owned()
    } else {
        seen.iter().map(|(what, n)| format!("{n} {what}")).collect::<Vec<_>>().join(", ")
    };
    Ok((latencies, last_ms, seen))
}

fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_their_labelled_samples_and_nothing_else() {
        let text =
            "# TYPE a_total counter\na_total{peer=\"IN\"} 3\na_total{peer=\"BY\"} 4\na_total_x 100\nab 7\n";
        assert_eq!(counter(text, "a_total"), 7.0);
        assert_eq!(counter(text, "ab"), 7.0);
        assert_eq!(counter(text, "missing"), 0.0);
    }
}
