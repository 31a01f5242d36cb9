//! Counters and a flush-latency histogram, rendered as Prometheus text by the API. Cheap
//! enough for the hot path: atomics, and a short-held mutex for per-peer counters that are
//! bumped once per batch, not per message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kp_protocol::ParticipantCode;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the flush-latency buckets, in seconds.
pub const FLUSH_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// What a per-peer counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerCounter {
    /// `Deliver` frames sent (resends included).
    DeliveriesSent,
    /// Our messages the peer acknowledged with a valid receipt (stored).
    ReceiptsStored,
    /// The peer's documents we stored and acknowledged.
    DocumentsReceived,
    /// Duplicates of the peer's documents, answered with the original receipt.
    DuplicatesReceived,
    /// Our refusals of the peer's documents.
    RejectsSent,
    /// The peer's refusals of our messages.
    RejectsReceived,
    /// TLS connections to or from the peer that completed the handshake.
    Connections,
}

impl PeerCounter {
    fn name(&self) -> (&'static str, &'static str) {
        match self {
            PeerCounter::DeliveriesSent => {
                ("kpnode_deliveries_sent_total", "Deliver frames sent to the peer, resends included.")
            }
            PeerCounter::ReceiptsStored => (
                "kpnode_receipts_stored_total",
                "Messages to the peer acknowledged by a verified, stored receipt.",
            ),
            PeerCounter::DocumentsReceived => {
                ("kpnode_documents_received_total", "Documents from the peer stored and acknowledged.")
            }
            PeerCounter::DuplicatesReceived => (
                "kpnode_duplicates_received_total",
                "Resent documents from the peer, answered with their original receipt.",
            ),
            PeerCounter::RejectsSent => {
                ("kpnode_rejects_sent_total", "Documents from the peer refused by this node.")
            }
            PeerCounter::RejectsReceived => {
                ("kpnode_rejects_received_total", "Messages to the peer that it refused.")
            }
            PeerCounter::Connections => {
                ("kpnode_connections_total", "Peer connections that completed the TLS handshake and Hello.")
            }
        }
    }

    const ALL: [PeerCounter; 7] = [
        PeerCounter::DeliveriesSent,
        PeerCounter::ReceiptsStored,
        PeerCounter::DocumentsReceived,
        PeerCounter::DuplicatesReceived,
        PeerCounter::RejectsSent,
        PeerCounter::RejectsReceived,
        PeerCounter::Connections,
    ];
}

/// All of the node's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub store_failures: Counter,
    pub flushes: Counter,
    pub flushed_commands: Counter,
    pub log_entries_appended: Counter,
    pub handshakes_refused: Counter,
    pub protocol_errors: Counter,
    /// API connections closed for not sending a request header in time.
    pub api_header_timeouts: Counter,
    /// API requests answered 408 for not sending their body in time.
    pub api_body_timeouts: Counter,
    /// Connections the API refused (503) because `api.max_connections` were open.
    pub api_connection_cap_reached: Counter,
    flush_buckets: [Counter; FLUSH_BUCKETS.len()],
    flush_sum_micros: Counter,
    peer: Mutex<BTreeMap<(PeerCounter, ParticipantCode), u64>>,
    /// Open links closed because their TLS key stopped being trusted, by peer and reason.
    untrusted: Mutex<BTreeMap<(ParticipantCode, &'static str), u64>>,
    /// The last count of unconfirmed certificates near expiry per importer, and when it was
    /// taken (see `kpnode_certificates_expiring_unconfirmed`).
    expiring: Mutex<Option<(std::time::Instant, BTreeMap<ParticipantCode, u64>)>>,
    /// Held while that count is taken: scrapes arriving meanwhile wait for it and reuse it
    /// rather than each reading every certificate record again.
    pub expiring_counting: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub fn observe_flush(&self, took: Duration, commands: usize, appended: u64) {
        self.flushes.inc();
        self.flushed_commands.add(commands as u64);
        self.log_entries_appended.add(appended);
        self.flush_sum_micros.add(took.as_micros() as u64);
        let secs = took.as_secs_f64();
        for (i, bound) in FLUSH_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.flush_buckets[i].inc();
            }
        }
    }

    /// (flushes, commands flushed, total flush time in seconds).
    pub fn flush_totals(&self) -> (u64, u64, f64) {
        (self.flushes.get(), self.flushed_commands.get(), self.flush_sum_micros.get() as f64 / 1e6)
    }

    pub fn peer_add(&self, counter: PeerCounter, peer: ParticipantCode, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.peer.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((counter, peer)).or_default() += n;
    }

    /// An open link to or from `peer` was closed because its key is no longer trusted.
    pub fn link_closed_untrusted(&self, peer: ParticipantCode, reason: &'static str) {
        let mut m = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((peer, reason)).or_default() += 1;
    }

    /// The last count of unconfirmed certificates near expiry, if taken within `reuse`.
    pub fn expiring_unconfirmed(&self, reuse: Duration) -> Option<BTreeMap<ParticipantCode, u64>> {
        let m = self.expiring.lock().unwrap_or_else(|p| p.into_inner());
        m.as_ref().filter(|(at, _)| at.elapsed() < reuse).map(|(_, c)| c.clone())
    }

    pub fn set_expiring_unconfirmed(&self, counts: BTreeMap<ParticipantCode, u64>) {
        *self.expiring.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), counts));
    }

    pub fn peer_get(&self, counter: PeerCounter, peer: ParticipantCode) -> u64 {
        let m = self.peer.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(counter, peer)).copied().unwrap_or(0)
    }

    /// Prometheus text exposition (version 0.0.4). `gauges` adds per-peer gauges and other
    /// values known only to the caller: (name, help, [(peer, value)]).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let peer = self.peer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for counter in PeerCounter::ALL {
            let (name, help) = counter.name();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((c, p), v) in &peer {
                if *c == counter {
                    let _ = writeln!(out, "{name}{{peer=\"{p}\"}} {v}");
                }
            }
        }
        let name = "kpnode_links_closed_untrusted_total";
        let _ = writeln!(
            out,
            "# HELP {name} Open peer links closed because their TLS key is no longer trusted for the peer (removed, not enrolled, quarantined, identity replaced, grace period over, key bound to another peer).\n# TYPE {name} counter"
        );
        for ((p, reason), v) in self.untrusted.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{peer=\"{p}\",reason=\"{reason}\"}} {v}");
        }
        for (name, help, value) in [
            (
                "kpnode_store_failures_total",
                "Store writes or flushes that failed (nothing in them was acknowledged).",
                self.store_failures.get(),
            ),
            (
                "kpnode_flushed_commands_total",
                "Commands made durable by group-commit flushes.",
                self.flushed_commands.get(),
            ),
            (
                "kpnode_log_entries_appended_total",
                "Log entries appended since start.",
                self.log_entries_appended.get(),
            ),
            (
                "kpnode_handshakes_refused_total",
                "Peer connections refused at the TLS handshake or Hello.",
                self.handshakes_refused.get(),
            ),
            (
                "kpnode_protocol_errors_total",
                "Peer connections closed for malformed or unexpected frames.",
                self.protocol_errors.get(),
            ),
            (
                "kpnode_api_header_timeouts_total",
                "API connections closed because no complete request header arrived within api.header_read_timeout.",
                self.api_header_timeouts.get(),
            ),
            (
                "kpnode_api_body_timeouts_total",
                "API requests answered 408 because their body did not arrive within api.body_read_timeout.",
                self.api_body_timeouts.get(),
            ),
            (
                "kpnode_api_connection_cap_reached_total",
                "Connections answered 503 and closed because the API was serving api.max_connections connections.",
                self.api_connection_cap_reached.get(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        render_work(&mut out);
        let name = "kpnode_flush_seconds";
        let _ = writeln!(out, "# HELP {name} Duration of group-commit flushes.\n# TYPE {name} histogram");
        for (i, bound) in FLUSH_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.flush_buckets[i].get());
        }
        let count = self.flushes.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.flush_sum_micros.get() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        for g in gauges {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
            for (label, value) in &g.values {
                match label {
                    Some(p) => {
                        let _ = writeln!(out, "{}{{peer=\"{p}\"}} {value}", g.name);
                    }
                    None => {
                        let _ = writeln!(out, "{} {value}", g.name);
                    }
                }
            }
        }
        out
    }
}

/// A gauge computed when metrics are read.
#[derive(Debug)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub values: Vec<(Option<ParticipantCode>, u64)>,
}

/// Calls of each timed part of the work ([`kp_exchange::meter`]) since start.
pub const WORK_CALLS: &str = "kpnode_work_calls_total";
/// CPU time of each timed part of the work since start.
pub const WORK_SECONDS: &str = "kpnode_work_cpu_seconds_total";

/// The meter's counts and CPU times, by part: how many signatures and verifications the node
/// made (of certificates, receipts, others), and where its CPU went.
fn render_work(out: &mut String) {
    let totals = kp_exchange::meter::totals();
    let _ = writeln!(
        out,
        "# HELP {WORK_CALLS} Signatures, verifications and other timed parts of the node's work since start, by part.\n# TYPE {WORK_CALLS} counter"
    );
    for t in &totals {
        let _ = writeln!(out, "{WORK_CALLS}{{part=\"{}\"}} {}", t.part.label(), t.calls);
    }
    let _ = writeln!(
        out,
        "# HELP {WORK_SECONDS} CPU time (per thread) spent in each timed part of the node's work since start.\n# TYPE {WORK_SECONDS} counter"
    );
    for t in &totals {
        let _ = writeln!(out, "{WORK_SECONDS}{{part=\"{}\"}} {}", t.part.label(), t.nanos as f64 / 1e9);
    }
}
