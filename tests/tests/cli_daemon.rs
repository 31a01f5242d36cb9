//! The client commands against running daemons, as an operator types them: enrolment while
//! the daemons run, submit, list, show, confirm, void, peer list and remove.

use std::time::Duration;

use kp_tests::*;

#[test]
fn an_operator_session_against_running_daemons() {
    let ProcessPair { tmp, ru_dir, in_dir, ru, inn } = enrolled_processes();
    let (ru_s, in_s) = (ru_dir.root().to_str().unwrap(), in_dir.root().to_str().unwrap());

    // The enrolment, made while both daemons run, takes effect without a restart.
    wait_linked(&ru.api(), "IN".parse().unwrap());
    let peers = kpnode_ok(&["peer", "list", "--dir", ru_s]);
    assert!(peers.contains("IN") && peers.contains(" up "), "{peers}");

    let json_path = tmp.path().join("c.json");
    std::fs::write(&json_path, certificate_json("RU", "IN", None, 7)).unwrap();
    let out = kpnode_ok(&["cert", "submit", json_path.to_str().unwrap(), "--dir", ru_s]);
    let number = out.split_whitespace().next().unwrap().to_owned();
    assert!(number.starts_with("RU-") && out.contains("queued"), "{out}");

    wait_until(Duration::from_secs(20), "the importer has it", || {
        let list: serde_json::Value =
            serde_json::from_str(&kpnode_ok(&["cert", "list", "--direction", "in", "--json", "--dir", in_s]))
                .unwrap();
        list.as_array().is_some_and(|a| a.len() == 1 && a[0]["number"] == number.as_str())
    });
    let shown = kpnode_ok(&["cert", "show", &number, "--dir", ru_s]);
    assert!(
        shown.contains("Kimberley Process Certificate") && shown.contains("receipt       IN stored it"),
        "{shown}"
    );

    let out = kpnode_ok(&[
        "cert",
        "confirm",
        &number,
        "--received-on",
        &kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().to_string(),
        "--parcels",
        "2",
        "--carats",
        "1.00",
        "--dir",
        in_s,
    ]);
    assert!(out.contains("import_discrepancy"), "{out}");
    // Voiding on the importing side is refused with a reason, exit 1.
    let (code, _, err) = kpnode(&["cert", "void", &number, "--reason", "no", "--dir", in_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only the exporting authority voids it"), "{err}");
    // Invalid input is exit 2, one line per problem.
    let (code, _, err) = kpnode(&[
        "cert",
        "confirm",
        &number,
        "--received-on",
        "yesterday",
        "--parcels",
        "2",
        "--carats",
        "1.001",
        "--dir",
        in_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");

    // Removing the peer closes the link; the certificate queued after stays queued.
    kpnode_ok(&["peer", "remove", "IN", "--dir", ru_s]);
    std::fs::write(&json_path, certificate_json("RU", "IN", None, 8)).unwrap();
    kpnode_ok(&["cert", "submit", json_path.to_str().unwrap(), "--dir", ru_s]);
    let queued: serde_json::Value =
        serde_json::from_str(&kpnode_ok(&["cert", "list", "--status", "queued", "--json", "--dir", ru_s]))
            .unwrap();
    assert_eq!(queued.as_array().unwrap().len(), 1);
    let peers = kpnode_ok(&["peer", "list", "--dir", ru_s]);
    assert!(peers.contains("removed"), "{peers}");

    // Client commands against a stopped daemon say so, exit 1.
    drop(ru);
    std::fs::remove_file(kp_node::node::daemon_file_path(&ru_dir)).ok();
    let (code, _, err) = kpnode(&["status", "--dir", ru_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the kpnode daemon"), "{err}");
    drop(inn);
}
