//! The soak: thousands of certificates from RU to IN through a fault-injecting proxy that
//! cuts, truncates, stalls and delays the connection at random. Every certificate arrives
//! exactly once, every stored receipt is valid, and both logs verify.
//!
//! `KPNODE_SOAK_CERTS` sets the number of certificates (default 5,000) and
//! `KPNODE_SOAK_SEED` the proxy's seed; see RELIABILITY.md for the long run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kp_tests::proxy::{FaultProxy, Faults};
use kp_tests::*;

/// Short timeouts, so that stalls and cuts are noticed and repaired quickly.
fn tune(dir: &kp_node::home::NodeDir) {
    let text = std::fs::read_to_string(dir.config_path()).unwrap();
    let tuned = text
        .replace("ack_timeout = \"30s\"", "ack_timeout = \"2s\"")
        .replace("ping_interval = \"15s\"", "ping_interval = \"1s\"")
        .replace("backoff_initial = \"200ms\"", "backoff_initial = \"20ms\"")
        .replace("backoff_max = \"30s\"", "backoff_max = \"500ms\"")
        .replace("handshake_timeout = \"10s\"", "handshake_timeout = \"2s\"");
    for key in ["ack_timeout = \"2s\"", "ping_interval = \"1s\"", "backoff_max = \"500ms\""] {
        assert!(tuned.contains(key), "the default node.toml changed; update this test ({key})");
    }
    std::fs::write(dir.config_path(), tuned).unwrap();
}

#[test]
fn certificates_through_a_faulty_network_arrive_exactly_once() {
    init_logging();
    let n = env_u64("KPNODE_SOAK_CERTS", 5000);
    let seed = env_u64("KPNODE_SOAK_SEED", 7);
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", 0);
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    tune(&ru_dir);
    tune(&in_dir);
    let mut inn = TestNode::start(&rt, in_dir.clone());
    let faults = Faults { cut: 0.04, truncate: 0.02, stall: 0.01, stall_ms: 2_500, max_delay_ms: 2 };
    let proxy = FaultProxy::start(&rt, inn.handle().peer_addr(), faults, seed);
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    // RU reaches IN only through the proxy.
    let (text, fp) = inn.bundle();
    let body = serde_json::json!({"bundle": text, "fingerprint": fp, "endpoints": [proxy.addr.to_string()]});
    let (s, v) = ru.api.post("/v1/peers", &body.to_string());
    assert_eq!(s, 201, "{v}");
    let (text, fp) = ru.bundle();
    inn.api.enrol(&text, &fp);

    let started = Instant::now();
    let numbers: BTreeSet<String> = submit_from_threads(&ru.api, n).into_iter().collect();
    assert_eq!(numbers.len() as u64, n);
    wait_until(
        Duration::from_secs(180 + n / 50),
        "every certificate is delivered through the faults",
        || ru.api.count("out", "delivered") as u64 == n,
    );
    let took = started.elapsed();

    let inbound = inn.api.certificates("in");
    let got: BTreeSet<String> = inbound.iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    assert_eq!(inbound.len() as u64, n, "no certificate stored twice");
    assert_eq!(got, numbers, "every certificate, and only those");
    let faults_injected = proxy.stats.faults();
    assert!(faults_injected > 0, "the proxy injected no fault: nothing was tested");
    let (_, m) = inn.api.get("/metrics");
    let duplicates: f64 = m
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("kpnode_duplicates_received_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // The faults must have made RU resend what IN already held: otherwise the run never
    // tested the dedupe it claims to.
    assert!(duplicates > 0.0, "no delivery was resent through {faults_injected} faults: nothing was tested");
    ru.stop(&rt);
    inn.stop(&rt);
    let ru_log = audit(&ru_dir);
    let in_log = audit(&in_dir);
    assert_eq!(ru_log.sent, n, "one verified receipt per certificate at RU");
    assert_eq!(in_log.received, n, "one log entry per certificate at IN");
    eprintln!(
        "soak: {n} certificates in {:.1} s through {} ({faults_injected} faults); {duplicates} resent deliveries answered with their original receipt; both logs verify",
        took.as_secs_f64(),
        proxy.stats.summary()
    );
}
