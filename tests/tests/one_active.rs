//! One active process per store: a second `kpnode run` on a node directory whose daemon runs
//! is refused at once, naming the store and the pid holding it, and the first keeps serving.
//! This is what makes a warm standby on shared or replicated storage safe (see
//! docs/operations.md, "High availability"): the standby's `kpnode run` cannot start while the
//! active one holds the store.

use std::process::{Command, Stdio};
use std::time::Duration;

use kp_tests::*;

#[test]
fn a_second_kpnode_run_on_the_same_store_is_refused_and_the_first_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let first = ProcessNode::start(&dir);
    let api = first.api();
    let before = api.submit(&certificate_json("RU", "IN", None, 1));

    let mut second = Command::new(kpnode_bin())
        .args(["run", "--dir"])
        .arg(dir.root())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), "the second kpnode run exits", || {
        status = second.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("is in use by another kpnode process") && err.contains(&format!("pid {}", first.pid())),
        "the refusal names the store and its holder: {err}"
    );

    // The first daemon is unaffected: it answers and takes writes.
    assert_eq!(api.certificate(&before)["number"], before.as_str());
    let after = api.submit(&certificate_json("RU", "IN", None, 2));
    assert_eq!(api.certificate(&after)["status"], "queued");
}
