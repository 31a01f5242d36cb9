//! What a certificate must cost at least, what it did cost, and where the difference goes.
//!
//! The floor is the Ed25519 work the protocol needs per certificate: the exporter's signature
//! of it and the importer's verification, plus the importer's receipt signature and the
//! exporter's verification of it, shared by the certificates of one receipt batch. The CPU a
//! run used is taken from the operating system (`getrusage` of this process, or
//! `/proc/PID/stat` of each daemon) and split by [`kp_exchange::meter`], which counts every
//! signature and verification and times the parts of the work in CPU time per thread.

use std::io::{Read, Write};
use std::time::Instant;

use kp_exchange::meter::{Part, Totals};
use serde::Serialize;

use super::Crypto;

/// The Ed25519 work a certificate needs, and the throughput it allows on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Certificates acknowledged per receipt signature in this run.
    pub certs_per_receipt: f64,
    /// sign + verify + (sign + verify) / certs_per_receipt, in µs of one core.
    pub us_per_cert: f64,
    /// cores / us_per_cert.
    pub per_s: f64,
}

impl Floor {
    pub fn new(crypto: &Crypto, certs_per_receipt: f64) -> Floor {
        let pair = crypto.sign_us + crypto.verify_us;
        let us_per_cert = pair + pair / certs_per_receipt.max(1.0);
        Floor { certs_per_receipt, us_per_cert, per_s: crypto.cores as f64 * 1e6 / us_per_cert }
    }
}

/// One part of the CPU a certificate cost.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPart {
    /// `sign_certificate`, `sign_receipt`, `sign_other`, `verify_document`, `verify_receipt`,
    /// `json`, `store`, `flush`, `tls`, `sled_io` (sled's IO threads, which write and `fsync`
    /// its log while a flush waits), or `other` (what no part counted: HTTP, the link's frames
    /// and scheduling, tokio, the bench's own submitters in one process).
    pub part: String,
    /// Calls per certificate: for the signatures and verifications, how many of them one
    /// certificate cost.
    pub calls_per_cert: f64,
    pub us_per_cert: f64,
    /// Of the nodes' CPU.
    pub share: f64,
}

/// The CPU the nodes used per certificate, and where it went.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// CPU time (user and system) of the nodes per certificate, in µs.
    pub us_per_cert: f64,
    /// `us_per_cert` over the floor's.
    pub over_floor: f64,
    /// With `--processes`: each daemon's share, and the bench's own HTTP clients (not counted
    /// in `us_per_cert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exporter_us_per_cert: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub importer_us_per_cert: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients_us_per_cert: Option<f64>,
    pub parts: Vec<CpuPart>,
    /// How the figures were taken.
    pub note: String,
}

/// How the parts are measured (both modes).
const PARTS_NOTE: &str =
    "parts timed in CPU time per thread (CLOCK_THREAD_CPUTIME_ID) where the node signs, \
verifies, parses a submission's JSON, applies its store, flushes it, and reads and writes a peer link; \
a part inside another counts in its own part only; sled_io = the CPU of sled's IO threads \
(/proc/PID/task, a lower bound: a thread that ended during the run is not counted); other = the total less the parts";

/// The meter's totals over a run: `after` less `before`, for each part.
pub fn delta(before: &[Totals], after: &[Totals]) -> Vec<Totals> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.part == a.part);
            Totals {
                part: a.part,
                calls: a.calls.saturating_sub(b.map_or(0, |b| b.calls)),
                nanos: a.nanos.saturating_sub(b.map_or(0, |b| b.nanos)),
            }
        })
        .collect()
}

/// Adds two processes' totals part by part.
pub fn sum(a: &[Totals], b: &[Totals]) -> Vec<Totals> {
    a.iter()
        .map(|x| {
            let y = b.iter().find(|y| y.part == x.part);
            Totals {
                part: x.part,
                calls: x.calls + y.map_or(0, |y| y.calls),
                nanos: x.nanos + y.map_or(0, |y| y.nanos),
            }
        })
        .collect()
}

/// Certificates per receipt signature: `certs` over the receipts signed in the run.
pub fn certs_per_receipt(parts: &[Totals], certs: u64) -> f64 {
    let receipts = parts.iter().find(|t| t.part == Part::SignReceipt).map_or(0, |t| t.calls);
    certs as f64 / receipts.max(1) as f64
}

/// The breakdown of `cpu_seconds` (the nodes' CPU over the run) into the meter's parts and
/// `sled_io_seconds`, the CPU of sled's IO threads.
pub fn cpu_use(
    cpu_seconds: f64,
    parts: &[Totals],
    sled_io_seconds: f64,
    certs: u64,
    floor: &Floor,
    how: &str,
) -> CpuUse {
    let n = certs.max(1) as f64;
    let us_per_cert = cpu_seconds * 1e6 / n;
    let mut out: Vec<CpuPart> = parts
        .iter()
        .map(|t| CpuPart {
            part: t.part.label().into(),
            calls_per_cert: t.calls as f64 / n,
            us_per_cert: t.nanos as f64 / 1e3 / n,
            share: 0.0,
        })
        .collect();
    out.push(CpuPart {
        part: "sled_io".into(),
        calls_per_cert: 0.0,
        us_per_cert: sled_io_seconds * 1e6 / n,
        share: 0.0,
    });
    let counted: f64 = out.iter().map(|p| p.us_per_cert).sum();
    out.push(CpuPart {
        part: "other".into(),
        calls_per_cert: 0.0,
        us_per_cert: (us_per_cert - counted).max(0.0),
        share: 0.0,
    });
    for p in &mut out {
        p.share = p.us_per_cert / us_per_cert.max(1e-9);
    }
    CpuUse {
        us_per_cert,
        over_floor: us_per_cert / floor.us_per_cert,
        exporter_us_per_cert: None,
        importer_us_per_cert: None,
        clients_us_per_cert: None,
        parts: out,
        note: format!("{how}; {PARTS_NOTE}"),
    }
}

/// The meter's totals as a node's `/metrics` shows them.
pub fn from_metrics(text: &str) -> Vec<Totals> {
    let sample = |name: &str, part: Part| -> f64 {
        let prefix = format!("{name}{{part=\"{}\"}} ", part.label());
        text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    Part::ALL
        .iter()
        .map(|&part| Totals {
            part,
            calls: sample(CALLS_METRIC, part) as u64,
            nanos: (sample(SECONDS_METRIC, part) * 1e9) as u64,
        })
        .collect()
}

use crate::metrics::{WORK_CALLS as CALLS_METRIC, WORK_SECONDS as SECONDS_METRIC};

/// The CPU time (user and system) a process has used, in seconds, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start with the state
    // (field 3), so utime and stime (fields 14 and 15) are the 12th and 13th after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / crate::os::clock_ticks_per_second())
}

/// The CPU seconds so far of a process's live threads whose name starts with `prefix` (sled
/// names its IO threads `sled-io-N`): read from `/proc/PID/task/*/stat`. A thread that ended
/// meanwhile takes its time with it, so a difference of two readings is a lower bound.
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let ticks = crate::os::clock_ticks_per_second();
    tasks
        .flatten()
        .filter_map(|task| {
            let text = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (open, close) = (text.find('(')?, text.rfind(')')?);
            if !text.get(open + 1..close)?.starts_with(prefix) {
                return None;
            }
            let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .sum()
}

/// The prefix of the names of sled's IO threads, which write and `fsync` its log.
pub const SLED_IO_THREADS: &str = "sled-io";

/// One at a time, a certificate waits at least for the exporter's flush, the importer's flush
/// and a round trip between them: each measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyFloor {
    /// Mean group-commit flush of each node in the run.
    pub exporter_flush_ms: f64,
    pub importer_flush_ms: f64,
    /// Median round trip of a 1 KiB message over loopback TCP, measured after the run.
    pub rtt_ms: f64,
    /// exporter flush + importer flush + round trip.
    pub sum_ms: f64,
    /// The run's p50 latency over `sum_ms`.
    pub p50_over_floor: f64,
    /// Flushes of each node per certificate: the exporter flushes twice, once for the
    /// certificate before it is delivered and once for its receipt.
    pub exporter_flushes_per_cert: f64,
    pub importer_flushes_per_cert: f64,
}

impl LatencyFloor {
    pub fn new(store: &super::StoreStats, certs: u64, rtt_ms: f64, p50_ms: f64) -> LatencyFloor {
        let sum_ms = store.exporter_flush_ms + store.importer_flush_ms + rtt_ms;
        let n = certs.max(1) as f64;
        LatencyFloor {
            exporter_flush_ms: store.exporter_flush_ms,
            importer_flush_ms: store.importer_flush_ms,
            rtt_ms,
            sum_ms,
            p50_over_floor: p50_ms / sum_ms.max(1e-9),
            exporter_flushes_per_cert: store.exporter_flushes as f64 / n,
            importer_flushes_per_cert: store.importer_flushes as f64 / n,
        }
    }
}

/// The median round trip of a 1 KiB message (about a delivery frame) over loopback TCP with
/// Nagle off, as the links set it: 200 rounds after 20 to warm up.
pub fn loopback_rtt_ms() -> Result<f64, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    const ROUNDS: usize = 220;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 1024];
        for _ in 0..ROUNDS {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [7u8; 1024];
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        s.write_all(&buf).and_then(|_| s.read_exact(&mut buf)).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    echo.join().map_err(|_| "the echo thread panicked".to_owned())?.map_err(|e| e.to_string())?;
    let mut times = times.split_off(20);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The in-process exchange run right after a `--processes` one, for comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub certs: u64,
    pub concurrency: usize,
    pub throughput_per_s: f64,
    /// This run's throughput over the in-process one.
    pub ratio: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> Crypto {
        Crypto { document_bytes: 1000, sign_us: 20.0, verify_us: 40.0, batch_verify_us: 20.0, cores: 2 }
    }

    #[test]
    fn the_floor_shares_the_receipt_among_its_batch() {
        let f = Floor::new(&crypto(), 60.0);
        assert!((f.us_per_cert - 61.0).abs() < 1e-9, "{f:?}");
        assert!((f.per_s - 2e6 / 61.0).abs() < 1e-6);
        // No receipt measured: counted as one per certificate, never divided by zero.
        assert!((Floor::new(&crypto(), 0.0).us_per_cert - 120.0).abs() < 1e-9);
    }

    #[test]
    fn other_is_what_the_parts_leave_and_shares_add_up() {
        let parts: Vec<Totals> = Part::ALL
            .iter()
            .map(|&part| Totals { part, calls: 100, nanos: if part == Part::Json { 2_000_000 } else { 0 } })
            .collect();
        // 100 certificates, 0.01 s: 100 µs each, 20 of them JSON, 10 sled's IO threads.
        let u = cpu_use(0.01, &parts, 0.001, 100, &Floor::new(&crypto(), 100.0), "test");
        let get = |name: &str| u.parts.iter().find(|p| p.part == name).unwrap().clone();
        assert!((u.us_per_cert - 100.0).abs() < 1e-9);
        assert!((get("json").us_per_cert - 20.0).abs() < 1e-9);
        assert!((get("sled_io").us_per_cert - 10.0).abs() < 1e-9);
        assert!((get("other").us_per_cert - 70.0).abs() < 1e-9);
        assert!((u.parts.iter().map(|p| p.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(get("sign_certificate").calls_per_cert, 1.0);
    }

    #[test]
    fn the_meter_reads_back_from_metrics_text() {
        let text = format!(
            "{CALLS_METRIC}{{part=\"sign_receipt\"}} 12\n{SECONDS_METRIC}{{part=\"sign_receipt\"}} 0.5\n{CALLS_METRIC}{{part=\"json\"}} 3\n"
        );
        let t = from_metrics(&text);
        let receipt = t.iter().find(|t| t.part == Part::SignReceipt).unwrap();
        assert_eq!((receipt.calls, receipt.nanos), (12, 500_000_000));
        assert_eq!(t.iter().find(|t| t.part == Part::Json).unwrap().calls, 3);
        assert_eq!(certs_per_receipt(&t, 600), 50.0);
    }

    #[test]
    fn this_process_cpu_reads_from_proc() {
        let s = process_cpu_seconds(std::process::id()).unwrap();
        assert!(s >= 0.0 && s.is_finite());
        let busy = std::thread::Builder::new()
            .name("sled-io-test".into())
            .spawn(|| {
                let t = Instant::now();
                while t.elapsed().as_millis() < 60 {
                    std::hint::black_box(0u64);
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // 60 ms of CPU, in ticks of 10 ms: counted while the thread lives, and only it.
        assert!(threads_cpu_seconds(std::process::id(), SLED_IO_THREADS) >= 0.03);
        assert_eq!(threads_cpu_seconds(std::process::id(), "no-such-thread"), 0.0);
        busy.join().unwrap();
    }
}
