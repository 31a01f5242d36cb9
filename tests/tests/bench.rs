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
    check_costs(r);
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|v| v > 0.0 && v.is_finite())
}

/// The floor, the CPU per certificate and its parts: every certificate signed exactly once by
/// the exporter and verified at least once by the importer (once more only for a resend), at
/// most one receipt signed per certificate, nothing else signed, and the parts adding up.
fn check_costs(r: &Value) {
    let floor = &r["floor"];
    for key in ["certs_per_receipt", "us_per_cert", "per_s"] {
        assert!(positive(&floor[key]), "floor.{key}: {r}");
    }
    assert!(positive(&r["ratio_to_floor"]), "ratio_to_floor: {r}");
    let cpu = &r["cpu"];
    assert!(positive(&cpu["us_per_cert"]) && positive(&cpu["over_floor"]), "cpu: {r}");
    let parts = cpu["parts"].as_array().expect("cpu.parts");
    let part = |name: &str| {
        parts.iter().find(|p| p["part"] == name).unwrap_or_else(|| panic!("cpu.parts has no {name}: {r}"))
    };
    let calls = |name: &str| part(name)["calls_per_cert"].as_f64().unwrap();
    assert_eq!(calls("sign_certificate"), 1.0, "one signature per certificate: {r}");
    assert!(calls("verify_document") >= 1.0, "every certificate verified by the importer: {r}");
    let receipts = calls("sign_receipt");
    assert!(receipts > 0.0 && receipts <= 1.0, "receipts signed per certificate: {r}");
    assert!(calls("verify_receipt") > 0.0 && calls("verify_receipt") <= 1.0, "receipts verified: {r}");
    assert!(
        (receipts * floor["certs_per_receipt"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "certs_per_receipt is the receipts' count: {r}"
    );
    assert_eq!(calls("sign_other"), 0.0, "nothing else is signed per certificate: {r}");
    for name in ["sign_certificate", "verify_document", "json", "store", "flush", "tls"] {
        assert!(calls(name) > 0.0, "{name} counted: {r}");
    }
    assert!(part("sled_io")["us_per_cert"].as_f64().unwrap() >= 0.0, "{r}");
    // `other` is what the parts leave of the total, so the shares make the whole (more only
    // if the parts' per-thread clocks counted more than the process's coarser one).
    assert!(parts.iter().all(|p| p["share"].as_f64().unwrap() >= 0.0), "{r}");
    let shares: f64 = parts.iter().map(|p| p["share"].as_f64().unwrap()).sum();
    assert!(shares >= 1.0 - 1e-6, "the parts and other make the whole: {r}");
}

#[test]
fn bench_acknowledges_every_certificate_in_one_process() {
    let r = bench(&["--certs", "500"]);
    check(&r, 500);
    assert_eq!(r["mode"], "one process");
    assert!(r.get("latency_floor").is_none() && r.get("in_process").is_none(), "{r}");
    assert!(r["cpu"].get("exporter_us_per_cert").is_none(), "one process has one CPU figure: {r}");
}

/// One at a time, the latency's floor is measured in the same run: both flushes and a
/// loopback round trip, the exporter flushing twice per certificate (it and its receipt).
#[test]
fn bench_measures_the_latency_floor_one_at_a_time() {
    let r = bench(&["--certs", "30", "--concurrency", "1"]);
    check(&r, 30);
    let f = &r["latency_floor"];
    for key in ["exporter_flush_ms", "importer_flush_ms", "rtt_ms", "sum_ms", "p50_over_floor"] {
        assert!(positive(&f[key]), "latency_floor.{key}: {r}");
    }
    let sum = f["exporter_flush_ms"].as_f64().unwrap()
        + f["importer_flush_ms"].as_f64().unwrap()
        + f["rtt_ms"].as_f64().unwrap();
    assert!((sum - f["sum_ms"].as_f64().unwrap()).abs() < 1e-9, "{f}");
    assert!(f["exporter_flushes_per_cert"].as_f64().unwrap() >= 1.0, "{f}");
    assert!(f["importer_flushes_per_cert"].as_f64().unwrap() > 0.0, "{f}");
}

#[test]
fn bench_acknowledges_every_certificate_across_two_daemons() {
    let r = bench(&["--certs", "200", "--processes", "--concurrency", "8"]);
    check(&r, 200);
    assert_eq!(r["concurrency"], 8);
    check_daemons_and_comparison(&r, 200);
}

/// Over HTTP: each daemon's CPU and the bench's clients apart, and the in-process run made
/// right after for comparison.
fn check_daemons_and_comparison(r: &Value, certs: u64) {
    let cpu = &r["cpu"];
    for key in ["exporter_us_per_cert", "importer_us_per_cert", "clients_us_per_cert"] {
        assert!(positive(&cpu[key]), "cpu.{key}: {r}");
    }
    let sum = cpu["exporter_us_per_cert"].as_f64().unwrap() + cpu["importer_us_per_cert"].as_f64().unwrap();
    assert!(
        (sum - cpu["us_per_cert"].as_f64().unwrap()).abs() < 1e-6,
        "the nodes' CPU is both daemons': {r}"
    );
    for side in ["idle_exporter", "idle_importer"] {
        let idle = r["rss_mb"][side].as_f64().unwrap_or_else(|| panic!("rss_mb.{side}: {r}"));
        let peak = r["rss_mb"][side.trim_start_matches("idle_")].as_f64().unwrap();
        assert!(idle > 1.0 && idle <= peak + 1e-9, "idle below the peak: {r}");
    }
    let c = &r["in_process"];
    assert_eq!(c["certs"], certs);
    assert!(positive(&c["throughput_per_s"]) && positive(&c["ratio"]), "in_process: {r}");
    let ratio = r["throughput_per_s"].as_f64().unwrap() / c["throughput_per_s"].as_f64().unwrap();
    assert!((ratio - c["ratio"].as_f64().unwrap()).abs() < 1e-9, "{r}");
}

#[test]
fn bench_submits_through_the_bulk_route() {
    // 250 in batches of 100: the last batch is partial.
    let r = bench(&["--certs", "250", "--processes", "--concurrency", "2", "--batch", "100"]);
    check(&r, 250);
    assert!(r["mode"].as_str().unwrap().contains("batches of 100"), "{r}");
    check_daemons_and_comparison(&r, 250);
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
