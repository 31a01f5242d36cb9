//! Real processes killed with SIGKILL in the middle of a stream: every certificate still
//! ends delivered exactly once. Also sled 0.34.7's crash-during-snapshot bug cannot stop a
//! node.

use std::collections::BTreeSet;
use std::time::Duration;

use kp_tests::*;

const N: u64 = 2000;

struct Pair {
    _tmp: tempfile::TempDir,
    ru: ProcessNode,
    inn: ProcessNode,
}

/// RU with N certificates queued (each acknowledged, so durable) for IN, which starts only
/// now, so that the whole stream lies ahead.
fn pair_with_queue() -> (Pair, BTreeSet<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", free_port());
    enrol_cli(&ru_dir, &in_dir);
    let ru = ProcessNode::start(&ru_dir);
    let numbers = submit_all(&ru.api());
    let inn = ProcessNode::start(&in_dir);
    (Pair { _tmp: tmp, ru, inn }, numbers)
}

/// Waits until the stream is under way, and checks after `kill` that it had not finished.
fn kill_mid_stream(p: &mut Pair, kill: impl FnOnce(&mut Pair)) {
    let inn_api = p.inn.api();
    let ru_api = p.ru.api();
    wait_until(Duration::from_secs(60), "the stream is under way", || received(&inn_api) >= N / 10);
    kill(p);
    let delivered = if p.ru.child.is_some() { ru_api.count("out", "delivered") as u64 } else { 0 };
    assert!(delivered < N, "the kill came after the stream had finished; nothing was tested");
}

/// Submits N certificates to `api` from several threads (each acknowledged, so durable).
fn submit_all(api: &Api) -> BTreeSet<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let api = api.clone();
                s.spawn(move || {
                    (0..N)
                        .filter(|i| i % 8 == t)
                        .map(|i| api.submit(&certificate_json("RU", "IN", None, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn received(api: &Api) -> u64 {
    api.status()["certificates_in"].as_u64().unwrap_or(0)
}

/// Waits for the end state and checks it: N distinct certificates at IN, N receipts at RU,
/// and both logs audit clean with exactly N entries of each kind.
fn check_exactly_once(mut p: Pair, numbers: &BTreeSet<String>) {
    let ru_api = p.ru.api();
    wait_until(Duration::from_secs(120), "every certificate is delivered", || {
        ru_api.count("out", "delivered") == N as usize
    });
    let inbound = p.inn.api().certificates("in");
    let got: BTreeSet<String> = inbound.iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    assert_eq!(inbound.len() as u64, N, "no duplicates");
    assert_eq!(&got, numbers);
    p.ru.stop();
    p.inn.stop();
    let ru_log = audit(&p.ru.dir);
    let in_log = audit(&p.inn.dir);
    assert_eq!(ru_log.sent, N, "one stored receipt per certificate at the sender");
    assert_eq!(in_log.received, N, "one log entry per certificate at the receiver");
}

#[test]
fn the_receiver_killed_mid_stream_ends_with_every_certificate_exactly_once() {
    let (mut p, numbers) = pair_with_queue();
    kill_mid_stream(&mut p, |p| p.inn.kill9());
    p.inn = ProcessNode::start(&p.inn.dir.clone());
    check_exactly_once(p, &numbers);
}

#[test]
fn the_sender_killed_mid_stream_ends_with_every_certificate_exactly_once() {
    let (mut p, numbers) = pair_with_queue();
    let in_api = p.inn.api();
    kill_mid_stream(&mut p, |p| p.ru.kill9());
    assert!(received(&in_api) < N, "the kill came after the stream had finished");
    p.ru = ProcessNode::start(&p.ru.dir.clone());
    check_exactly_once(p, &numbers);
}

#[test]
fn a_partial_sled_snapshot_left_by_a_crash_cannot_stop_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", free_port());
    let mut node = ProcessNode::start(&dir);
    let numbers: Vec<String> =
        (0..50).map(|i| node.api().submit(&certificate_json("RU", "IN", None, i))).collect();
    node.stop();

    // What a kill between sled's create and rename of a snapshot leaves: a partial file
    // whose name sorts after every real snapshot.
    let planted = dir.store_dir().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&planted, b"partial snapshot, cut off by SIGKILL").unwrap();

    let node = ProcessNode::start(&dir);
    assert!(!planted.exists(), "the partial snapshot was removed");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.contains("removed a partial sled snapshot") && log.contains("snap.FFFFFFFFFFFFFFFF.generating"),
        "the log says what was removed: {log}"
    );
    let listed = node.api().certificates("out");
    assert_eq!(listed.len(), 50, "all data is there");
    for n in &numbers {
        assert!(listed.iter().any(|c| c["number"] == n.as_str()));
    }
}
