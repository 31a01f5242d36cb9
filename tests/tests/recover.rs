//! Recovery from partners, end to end with three `kpnode run` processes: traffic both ways
//! among RU, IN and KZ; a backup of RU; more traffic (certificates, confirmations, voids both
//! ways); RU killed with SIGKILL and its directory deleted; `kpnode restore` of the backup;
//! `kpnode recover`. Then every node shows exactly the certificates and statuses it showed
//! before the loss, nothing twice in any log, a second `recover` finds everything held, a new
//! certificate of RU's gets a number above every number it gave before (none is reissued),
//! and every log still verifies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kp_node::home::NodeDir;
use kp_tests::*;
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What a node shows of its certificates: per (direction, number), the status, the
/// certificate's message id, and its follow-ups (the confirmation's and void's message ids,
/// and whether the other side acknowledged them).
fn view(api: &Api) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for direction in ["out", "in"] {
        for c in api.certificates(direction) {
            let number = c["number"].as_str().unwrap().to_owned();
            let full = api.certificate(&number);
            let shown = serde_json::json!({
                "status": full["status"],
                "peer": full["peer"],
                "message_id": full["message_id"],
                "confirmation": full["confirmation"]["message_id"],
                "confirmation_acknowledged": full["confirmation"]["acknowledged"],
                "discrepancy": full["confirmation"]["discrepancy"],
                "void": full["void"]["message_id"],
                "void_acknowledged": full["void"]["acknowledged"],
            });
            assert!(out.insert((direction.to_owned(), number), shown).is_none(), "a number listed twice");
        }
    }
    out
}

/// Everything settled: nothing queued on `api`'s node (every document acknowledged).
fn settled(api: &Api) -> bool {
    let st = api.status();
    st["peers"].as_array().into_iter().flatten().all(|p| p["queued"].as_u64() == Some(0))
}

fn confirm(dir: &NodeDir, number: &str, parcels: &str, carats: &str) {
    let today = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().to_string();
    kpnode_ok(&[
        "cert",
        "confirm",
        number,
        "--received-on",
        &today,
        "--parcels",
        parcels,
        "--carats",
        carats,
        "--dir",
        s(dir.root()),
    ]);
}

fn void(dir: &NodeDir, number: &str) {
    kpnode_ok(&["cert", "void", number, "--reason", "shipment cancelled", "--dir", s(dir.root())]);
}

/// The message ids in a stopped node's log; each must appear once.
fn log_ids(dir: &NodeDir) -> Vec<String> {
    kpnode_ok(&["log", "export", "--json", "--dir", s(dir.root())])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["message_id"].as_str().unwrap().to_owned())
        .collect()
}

fn wait_delivered(api: &Api, numbers: &[String]) {
    for n in numbers {
        wait_until(Duration::from_secs(30), &format!("{n} delivered"), || {
            api.certificate(n)["status"] == "delivered"
        });
    }
}

/// The sequence of a number RU assigned (`RU-YYYY-NNNNNN`).
fn seq(number: &str) -> u64 {
    number.rsplit('-').next().unwrap().parse().unwrap()
}

#[test]
fn a_node_restored_from_an_old_backup_recovers_everything_from_its_partners() {
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    let kz_dir = init_dir(tmp.path(), "KZ", free_port());
    let mut ru = ProcessNode::start(&ru_dir);
    let mut inn = ProcessNode::start(&in_dir);
    let mut kz = ProcessNode::start(&kz_dir);
    enrol_cli(&ru_dir, &in_dir);
    enrol_cli(&ru_dir, &kz_dir);
    enrol_cli(&in_dir, &kz_dir);
    let (ru_api, in_api, kz_api) = (ru.api(), inn.api(), kz.api());
    for (a, b) in [(&ru_api, "IN"), (&ru_api, "KZ"), (&in_api, "RU"), (&in_api, "KZ"), (&kz_api, "RU")] {
        wait_linked(a, b.parse().unwrap());
    }

    // Before the backup: traffic both ways among the three.
    let ru_in_1: Vec<String> =
        (0..2).map(|i| ru_api.submit(&certificate_json("RU", "IN", None, i))).collect();
    let ru_kz_1 = vec![ru_api.submit(&certificate_json("RU", "KZ", None, 2))];
    let in_ru_1: Vec<String> =
        (0..2).map(|i| in_api.submit(&certificate_json("IN", "RU", None, i))).collect();
    let kz_ru_1 = vec![kz_api.submit(&certificate_json("KZ", "RU", None, 3))];
    let in_kz_1 = vec![in_api.submit(&certificate_json("IN", "KZ", None, 4))];
    wait_delivered(&ru_api, &[ru_in_1.clone(), ru_kz_1.clone()].concat());
    wait_delivered(&in_api, &[in_ru_1.clone(), in_kz_1.clone()].concat());
    wait_delivered(&kz_api, &kz_ru_1);
    confirm(&in_dir, &ru_in_1[0], "2", "110.50");
    wait_until(Duration::from_secs(30), "everything settled before the backup", || {
        settled(&ru_api) && settled(&in_api) && settled(&kz_api)
    });

    let backup = tmp.path().join("ru.kpbackup");
    kpnode_ok(&["backup", "--dir", s(ru_dir.root()), "--out", s(&backup), "--include-keys"]);

    // After the backup: new certificates both ways, confirmations, voids.
    let ru_in_2: Vec<String> =
        (10..13).map(|i| ru_api.submit(&certificate_json("RU", "IN", None, i))).collect();
    let ru_kz_2 = vec![ru_api.submit(&certificate_json("RU", "KZ", None, 13))];
    let in_ru_2: Vec<String> =
        (10..13).map(|i| in_api.submit(&certificate_json("IN", "RU", None, i))).collect();
    let kz_ru_2 = vec![kz_api.submit(&certificate_json("KZ", "RU", None, 14))];
    let in_kz_2 = vec![in_api.submit(&certificate_json("IN", "KZ", None, 15))];
    wait_delivered(&ru_api, &[ru_in_2.clone(), ru_kz_2.clone()].concat());
    wait_delivered(&in_api, &[in_ru_2.clone(), in_kz_2.clone()].concat());
    wait_delivered(&kz_api, &kz_ru_2);
    // IN confirms RU's certificates (one with a discrepancy), KZ confirms RU's;
    confirm(&in_dir, &ru_in_2[0], "2", "110.60");
    confirm(&in_dir, &ru_in_1[1], "2", "1.00");
    confirm(&kz_dir, &ru_kz_2[0], "2", "110.63");
    // RU confirms IN's and KZ's (one from before the backup), and voids one of its own;
    confirm(&ru_dir, &in_ru_2[0], "2", "110.60");
    confirm(&ru_dir, &in_ru_1[0], "2", "110.50");
    confirm(&ru_dir, &kz_ru_2[0], "2", "110.64");
    void(&ru_dir, &ru_in_2[1]);
    // IN voids one of its certificates to RU; traffic RU does not take part in goes on.
    void(&in_dir, &in_ru_2[1]);
    confirm(&kz_dir, &in_kz_2[0], "2", "110.65");
    wait_until(Duration::from_secs(30), "everything settled before the loss", || {
        settled(&ru_api) && settled(&in_api) && settled(&kz_api)
    });
    let before = [view(&ru_api), view(&in_api), view(&kz_api)];
    let statuses: BTreeSet<&str> = before[0].values().filter_map(|v| v["status"].as_str()).collect();
    for wanted in ["delivered", "received", "import_confirmed", "import_discrepancy", "voided"] {
        assert!(statuses.contains(wanted), "the run exercises {wanted}: {statuses:?}");
    }
    let ru_numbers_before: Vec<String> =
        before[0].keys().filter(|(d, _)| d == "out").map(|(_, n)| n.clone()).collect();
    let highest_before = ru_numbers_before.iter().map(|n| seq(n)).max().unwrap();

    // The loss: RU killed, its directory gone; restored from the older backup.
    ru.kill9();
    std::fs::remove_dir_all(ru_dir.root()).unwrap();
    kpnode_ok(&["restore", s(&backup), "--dir", s(ru_dir.root())]);
    let restored = ProcessNode::start(&ru_dir);
    ru = restored;
    let ru_api = ru.api();
    let lacking = view(&ru_api);
    assert!(lacking.len() < before[0].len(), "the backup predates the later traffic");
    wait_linked(&ru_api, "IN".parse().unwrap());
    wait_linked(&ru_api, "KZ".parse().unwrap());

    let out = kpnode_ok(&["recover", "--dir", s(ru_dir.root())]);
    assert!(out.contains("IN: ") && out.contains("KZ: "), "a line per partner: {out}");
    assert!(!out.contains("refused: "), "{out}");
    assert!(out.contains(&format!("highest number of ours it holds: {}", ru_in_2[2])), "{out}");
    assert!(out.contains(&format!("highest number of ours it holds: {}", ru_kz_2[0])), "{out}");

    // Every node shows what it showed before the loss.
    wait_until(Duration::from_secs(30), "RU settled after the recovery", || settled(&ru_api));
    let after = [view(&ru_api), view(&in_api), view(&kz_api)];
    for (i, code) in ["RU", "IN", "KZ"].iter().enumerate() {
        let (b, a) = (&before[i], &after[i]);
        let differ: Vec<_> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k:?}: before {v}, after {:?}", a.get(k)))
            .chain(a.keys().filter(|k| !b.contains_key(*k)).map(|k| format!("{k:?}: only after")))
            .collect();
        assert!(differ.is_empty(), "{code} differs from the run without the loss:\n{}", differ.join("\n"));
    }

    // A second recovery finds everything held.
    let again = kpnode_ok(&["recover", "--dir", s(ru_dir.root()), "--json"]);
    let reports: Vec<Value> = again.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 2, "{again}");
    for r in &reports {
        assert_eq!(
            (r["sent_recovered"].as_u64(), r["received_recovered"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
        assert!(r["already_held"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["refused"], 0, "{r}");
    }

    // New certificates get fresh numbers, above everything RU gave out before the loss, and
    // are taken by their importers (a reissued number would be a conflict there).
    let fresh = ru_api.submit(&certificate_json("RU", "KZ", None, 30));
    let fresh_in = ru_api.submit(&certificate_json("RU", "IN", None, 31));
    assert!(
        !ru_numbers_before.contains(&fresh) && !ru_numbers_before.contains(&fresh_in),
        "{fresh} {fresh_in}"
    );
    assert!(
        seq(&fresh) > highest_before && seq(&fresh_in) > highest_before,
        "{fresh} {fresh_in} {highest_before}"
    );
    wait_delivered(&ru_api, &[fresh.clone(), fresh_in.clone()]);

    // A participant that is not a partner is refused, naming the fix; a partner that is down
    // is reported (exit 1) while the others are still asked.
    let (code, _, err) = kpnode(&["recover", "--peer", "AE", "--dir", s(ru_dir.root())]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("AE is not an active enrolled peer"), "{err}");
    kz.stop();
    let (code, out, err) = kpnode(&["recover", "--dir", s(ru_dir.root())]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("KZ: FAILED") && out.contains("IN: 1 page(s)"), "{out}");
    assert!(err.contains("run `kpnode recover` again"), "{err}");

    // Nothing twice in any log, and every log verifies.
    ru.stop();
    inn.stop();
    for dir in [&ru_dir, &in_dir, &kz_dir] {
        let ids = log_ids(dir);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{}: a document logged twice", dir.root().display());
        let out = kpnode_ok(&["log", "verify", "--dir", s(dir.root())]);
        assert!(out.starts_with("The log verifies"), "{out}");
        audit(dir);
    }
}
