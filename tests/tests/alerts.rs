//! The Prometheus alert rules shipped in `packaging/prometheus/`: `promtool check rules` accepts
//! them, their unit tests (`kpnode-alerts.test.yml`) pass under `promtool test rules`, and every
//! metric they use is one a running node exports, so a renamed metric cannot silently disarm
//! an alert. Without promtool (Debian's `prometheus` package) the promtool part is skipped, and
//! fails under `CI=true`.

use std::path::PathBuf;
use std::process::Command;

use kp_node::clock::Clock;
use kp_tests::*;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// Every `kpnode_…` metric name in the rules, with a histogram's `_bucket` suffix taken off.
fn metrics_used(rules: &str) -> Vec<String> {
    let mut names: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("kpnode_"))
        .map(|w| w.strip_suffix("_bucket").unwrap_or(w).to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = rules_dir();
    let run = |args: &[&str]| Command::new("promtool").args(args).current_dir(&dir).output();
    match run(&["check", "rules", "kpnode-alerts.yml"]) {
        Err(e) => skip_part(
            "promtool check rules",
            &format!("promtool does not run ({e}); install Debian's prometheus package"),
            None,
        ),
        Ok(out) => {
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "promtool check rules refused the rules:\n{text}");
            assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
            let out = run(&["test", "rules", "kpnode-alerts.test.yml"]).expect("promtool runs");
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "the alert rules' unit tests failed:\n{text}");
            assert!(text.contains("SUCCESS"), "{text}");
        }
    }
}

#[test]
fn every_metric_an_alert_uses_is_exported_by_a_node() {
    let rules = std::fs::read_to_string(rules_dir().join("kpnode-alerts.yml")).unwrap();
    let used = metrics_used(&rules);
    assert!(used.len() >= 4, "{used:?}");
    let pair = enrolled_pair(0, 0);
    let (_, text) = pair.ru.api.get("/metrics");
    let text = text.as_str().unwrap_or_default().to_owned();
    for name in used {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "an alert uses {name}, which the node's /metrics does not declare"
        );
    }
}

/// `kpnode_certificates_expiring_unconfirmed` counts, per importer, the certificates issued
/// here that expire within 7 days and are not confirmed: one expiring in 3 days counts, one
/// expiring in 30 does not, and a partner with none shows 0.
#[test]
fn certificates_near_expiry_awaiting_confirmation_are_counted_per_importer() {
    let pair = linked_pair(0, 0);
    let today = kp_node::clock::SystemClock.now().date();
    let mut soon: serde_json::Value = serde_json::from_str(&certificate_json("RU", "IN", None, 1)).unwrap();
    soon["expires_on"] = today.add_days(3).unwrap().to_string().into();
    let soon = pair.ru.api.submit(&soon.to_string());
    let later = pair.ru.api.submit(&certificate_json("RU", "IN", None, 2));
    for n in [&soon, &later] {
        wait_until(std::time::Duration::from_secs(20), &format!("{n} delivered"), || {
            pair.ru.api.certificate(n)["status"] == "delivered"
        });
    }
    let (_, text) = pair.ru.api.get("/metrics");
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("kpnode_certificates_expiring_unconfirmed{peer=\"IN\"} 1\n"), "{text}");
    // IN's node issued nothing: its count for RU is 0.
    let (_, text) = pair.inn.api.get("/metrics");
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("kpnode_certificates_expiring_unconfirmed{peer=\"RU\"} 0\n"), "{text}");
}
