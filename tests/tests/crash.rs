//! Real processes killed with SIGKILL in the middle of a stream, again and again: every
//! certificate still ends delivered exactly once. Also sled 0.34.7's crash-during-snapshot
//! bug cannot stop a node.
//!
//! `KPNODE_KILL_LOOPS` (default 20) kills per test and `KPNODE_KILL_CERTS` (default 6,000)
//! certificates per stream; RELIABILITY.md has the long run.

use std::collections::BTreeSet;
use std::time::Duration;

use kp_tests::*;
use rand::{Rng, SeedableRng};

/// Certificates per stream.
fn n() -> u64 {
    env_u64("KPNODE_KILL_CERTS", 6000)
}

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
    // Quick reconnects, so that a restarted partner is dialled again at once.
    for dir in [&ru_dir, &in_dir] {
        let text = std::fs::read_to_string(dir.config_path()).unwrap();
        let tuned = text
            .replace("backoff_initial = \"200ms\"", "backoff_initial = \"20ms\"")
            .replace("backoff_max = \"30s\"", "backoff_max = \"300ms\"");
        assert!(tuned.contains("backoff_max = \"300ms\""), "the default node.toml changed; update this test");
        std::fs::write(dir.config_path(), tuned).unwrap();
    }
    enrol_cli(&ru_dir, &in_dir);
    let ru = ProcessNode::start(&ru_dir);
    let numbers = submit_all(&ru.api());
    let inn = ProcessNode::start(&in_dir);
    (Pair { _tmp: tmp, ru, inn }, numbers)
}

/// Which node dies.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Receiver,
    Sender,
}

/// Kills the victim with SIGKILL `kills` times at random moments of the stream (each after
/// IN has received a random number more), restarting it each time; returns how many kills
/// struck while the stream was still under way.
fn kill_loop(p: &mut Pair, victim: Victim, kills: u64, seed: u64) -> u64 {
    let n = n();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mid_stream = 0;
    for k in 0..kills {
        let in_api = p.inn.api();
        let step = rng.gen_range(1..=(n / (kills * 6)).max(2));
        let target = (received(&in_api) + step).min(n);
        wait_until(Duration::from_secs(60), &format!("kill {k}: IN receives {target}"), || {
            received(&in_api) >= target
        });
        if received(&in_api) < n {
            mid_stream += 1;
        }
        match victim {
            Victim::Receiver => {
                p.inn.kill9();
                p.inn = ProcessNode::start(&p.inn.dir.clone());
            }
            Victim::Sender => {
                p.ru.kill9();
                p.ru = ProcessNode::start(&p.ru.dir.clone());
            }
        }
    }
    mid_stream
}

/// Submits n() certificates to `api` from several threads (each acknowledged, so durable).
fn submit_all(api: &Api) -> BTreeSet<String> {
    submit_from_threads(api, n()).into_iter().collect()
}

fn received(api: &Api) -> u64 {
    api.status()["certificates_in"].as_u64().unwrap_or(0)
}

/// Waits for the end state and checks it: N distinct certificates at IN, N receipts at RU,
/// and both logs audit clean with exactly N entries of each kind.
fn check_exactly_once(mut p: Pair, numbers: &BTreeSet<String>) {
    let n = n();
    let ru_api = p.ru.api();
    wait_until(Duration::from_secs(120 + n / 50), "every certificate is delivered", || {
        ru_api.count("out", "delivered") == n as usize
    });
    let inbound = p.inn.api().certificates("in");
    let got: BTreeSet<String> = inbound.iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    assert_eq!(inbound.len() as u64, n, "no duplicates");
    assert_eq!(&got, numbers);
    p.ru.stop();
    p.inn.stop();
    let ru_log = audit(&p.ru.dir);
    let in_log = audit(&p.inn.dir);
    assert_eq!(ru_log.sent, n, "one stored receipt per certificate at the sender");
    assert_eq!(in_log.received, n, "one log entry per certificate at the receiver");
}

#[test]
fn the_receiver_killed_again_and_again_mid_stream_ends_with_every_certificate_exactly_once() {
    let kills = env_u64("KPNODE_KILL_LOOPS", 20);
    let (mut p, numbers) = pair_with_queue();
    let mid = kill_loop(&mut p, Victim::Receiver, kills, 1);
    assert!(mid >= kills / 2, "only {mid} of {kills} kills struck mid-stream");
    eprintln!("kill loop: the receiver was killed {kills} times, {mid} of them mid-stream");
    check_exactly_once(p, &numbers);
}

#[test]
fn the_sender_killed_again_and_again_mid_stream_ends_with_every_certificate_exactly_once() {
    let kills = env_u64("KPNODE_KILL_LOOPS", 20);
    let (mut p, numbers) = pair_with_queue();
    let mid = kill_loop(&mut p, Victim::Sender, kills, 2);
    assert!(mid >= kills / 2, "only {mid} of {kills} kills struck mid-stream");
    eprintln!("kill loop: the sender was killed {kills} times, {mid} of them mid-stream");
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
