//! `kpnode bench` stays runnable: a small instance of each mode, checked for completeness,
//! never for speed (this machine's speed is the bench's answer, not the test's).

use kp_tests::kpnode;
use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let mut args = vec!["bench", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = kpnode(&args);
    assert_eq!(code, 0, "kpnode {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

fn check(r: &Value, certs: u64) {
    assert_eq!(r["certs"], certs);
    assert_eq!(r["acknowledged"], certs, "every certificate acknowledged: {r}");
    for key in ["throughput_per_s", "limit_per_s", "ratio"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()), "{key}: {r}");
    }
    let lat = &r["latency_ms"];
    let (p50, p99, max) =
        (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap(), lat["max"].as_f64().unwrap());
    assert!(p50 <= p99 && p99 <= max, "percentiles in order: {lat}");
    for side in ["exporter", "importer"] {
        assert!(r["rss_mb"][side].as_f64().is_some_and(|v| v > 1.0), "rss_mb.{side}: {r}");
    }
    assert!(r["crypto"]["sign_us"].as_f64().is_some_and(|v| v > 0.0));
}

#[test]
fn bench_acknowledges_every_certificate_in_one_process() {
    let r = bench(&["--certs", "500"]);
    check(&r, 500);
    assert_eq!(r["mode"], "one process");
}

#[test]
fn bench_acknowledges_every_certificate_across_two_daemons() {
    let r = bench(&["--certs", "200", "--processes", "--concurrency", "8"]);
    check(&r, 200);
    assert_eq!(r["concurrency"], 8);
}

#[test]
fn bench_submits_through_the_bulk_route() {
    // 250 in batches of 100: the last batch is partial.
    let r = bench(&["--certs", "250", "--processes", "--concurrency", "2", "--batch", "100"]);
    check(&r, 250);
    assert!(r["mode"].as_str().unwrap().contains("batches of 100"), "{r}");
    let (code, _, err) = kpnode(&["bench", "--certs", "10", "--batch", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("--batch needs --processes"), "{err}");
    let (code, _, err) = kpnode(&["bench", "--certs", "10", "--processes", "--batch", "1001"]);
    assert_eq!(code, 2);
    assert!(err.contains("give 1 to 1000"), "{err}");
}

#[test]
fn bench_times_a_start_with_a_full_log() {
    let r = bench(&["--certs", "20", "--concurrency", "1", "--startup-entries", "2000"]);
    check(&r, 20);
    assert_eq!(r["startup"]["log_entries"], 2000);
    assert!(r["startup"]["seconds_to_serve"].as_f64().is_some_and(|s| s > 0.0));
}

#[test]
fn bench_refuses_zero_certificates() {
    let (code, _, err) = kpnode(&["bench", "--certs", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--certs"), "{err}");
}

/// With `--hsm-module`, the same exchange again with the exporter's signing key in a SoftHSM2
/// token the bench makes itself: every certificate acknowledged, both throughputs reported.
#[test]
fn bench_measures_the_signing_key_in_a_softhsm2_token_beside_the_file_key() {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    let installed = std::process::Command::new("softhsm2-util").arg("--version").output().is_ok();
    if !installed || !std::path::Path::new(MODULE).exists() {
        kp_tests::skip_part(
            "the bench with a SoftHSM2 token",
            "softhsm2-util or libsofthsm2.so is missing (apt-get install softhsm2)",
            None,
        );
        return;
    }
    let r = bench(&["--certs", "100", "--hsm-module", MODULE]);
    check(&r, 100);
    let h = &r["hsm"];
    assert_eq!(h["acknowledged"], 100, "every certificate acknowledged with the token key: {r}");
    for key in ["throughput_per_s", "token_sign_us", "elapsed_s"] {
        assert!(h[key].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()), "hsm.{key}: {r}");
    }
    assert_eq!(h["module"], MODULE);
    let (code, _, err) = kpnode(&["bench", "--certs", "10", "--hsm-module", "/nonexistent/p11.so"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/p11.so: no such file"), "{err}");
}
