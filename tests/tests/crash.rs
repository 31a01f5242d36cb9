//! Real processes killed with SIGKILL in the middle of a stream, again and again: every
//! certificate still ends delivered exactly once. Also sled 0.34.7's crash-during-snapshot
//! bug cannot stop a node.
//!
//! `KPNODE_KILL_LOOPS` (default 20) kills per test and `KPNODE_KILL_CERTS` (default 6,000)
//! certificates per stream; RELIABILITY.md has the long run.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kp_node::home::NodeDir;
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

/// Submissions that go on while the kills happen: the second half of the stream, numbered
/// by the test (`RU-<year>-5xxxxx`) so that a submission cut off by a kill can be repeated
/// (a repeat of a stored certificate is acknowledged again, not stored twice).
struct Submitter {
    /// True until every submission has been acknowledged.
    running: Arc<AtomicBool>,
    /// Attempts that got no answer or a 5xx: the node died under them.
    cut_off: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Submitter {
    fn start(ru_dir: NodeDir, first: u64, count: u64) -> Submitter {
        let running = Arc::new(AtomicBool::new(true));
        let cut_off = Arc::new(AtomicU64::new(0));
        let year = kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date().year();
        let thread = {
            let (running, cut_off) = (running.clone(), cut_off.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in first..first + count {
                    let number = format!("RU-{year}-{:06}", 500_000 + i);
                    let json = certificate_json("RU", "IN", Some(&number), i);
                    let deadline = std::time::Instant::now() + Duration::from_secs(120);
                    loop {
                        // The API's address changes with every restart: read it afresh.
                        match api_of(&ru_dir).and_then(|api| api.try_post("/v1/certificates", &json)) {
                            Some((200 | 201, v)) => {
                                assert_eq!(v["number"], number.as_str(), "{v}");
                                break;
                            }
                            Some((s, v)) if s < 500 => panic!("{number} refused: {s} {v}"),
                            _ => {
                                cut_off.fetch_add(1, Ordering::SeqCst);
                                assert!(std::time::Instant::now() < deadline, "{number} never acknowledged");
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    acked.push(number);
                }
                running.store(false, Ordering::SeqCst);
                acked
            })
        };
        Submitter { running, cut_off, thread: Some(thread) }
    }

    fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Every number acknowledged, once all are.
    fn finish(mut self) -> Vec<String> {
        self.thread.take().expect("not finished yet").join().expect("the submitter")
    }
}

/// The API of the daemon running in `dir`, if it has announced itself.
fn api_of(dir: &NodeDir) -> Option<Api> {
    let bytes = std::fs::read(kp_node::node::daemon_file_path(dir)).ok()?;
    let d: kp_node::node::DaemonFile = serde_json::from_slice(&bytes).ok()?;
    Some(Api::new(d.api, &dir.token().ok()?))
}

/// RU with half of N certificates queued (each acknowledged, so durable) for IN, which
/// starts only now, so that the stream lies ahead; the other half is submitted while the
/// stream runs and the kills strike.
fn pair_streaming() -> (Pair, BTreeSet<String>, Submitter) {
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
    let half = n() / 2;
    let numbers: BTreeSet<String> = submit_from_threads(&ru.api(), half).into_iter().collect();
    let inn = ProcessNode::start(&in_dir);
    let submitter = Submitter::start(ru_dir, half, n() - half);
    (Pair { _tmp: tmp, ru, inn }, numbers, submitter)
}

/// Which node dies.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Receiver,
    Sender,
}

/// What the kills made happen, from the metrics of every incarnation (each read just before
/// its kill; metrics do not survive a restart).
#[derive(Debug, Default)]
struct Seen {
    /// Kills that struck while IN had not yet received everything.
    mid_stream: u64,
    /// Kills that struck while submissions were still being acknowledged.
    during_submissions: u64,
    /// Deliveries RU sent, over its incarnations (more than N: some were resent).
    sent: f64,
    /// Deliveries IN already held when they came again (a resend), over its incarnations.
    duplicates: f64,
}

/// Kills the victim with SIGKILL `kills` times at random moments of the stream (each after
/// IN has received a random number more), restarting it each time.
fn kill_loop(p: &mut Pair, submitter: &Submitter, victim: Victim, kills: u64, seed: u64) -> Seen {
    let n = n();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen = Seen::default();
    for k in 0..kills {
        let in_api = p.inn.api();
        let step = rng.gen_range(1..=(n / (kills * 6)).max(2));
        let target = (received(&in_api) + step).min(n);
        wait_until(Duration::from_secs(60), &format!("kill {k}: IN receives {target}"), || {
            received(&in_api) >= target
        });
        if received(&in_api) < n {
            seen.mid_stream += 1;
        }
        if submitter.running() {
            seen.during_submissions += 1;
        }
        match victim {
            Victim::Receiver => {
                seen.duplicates += metric(&in_api, "kpnode_duplicates_received_total");
                p.inn.kill9();
                p.inn = ProcessNode::start(&p.inn.dir.clone());
            }
            Victim::Sender => {
                seen.sent += metric(&p.ru.api(), "kpnode_deliveries_sent_total");
                p.ru.kill9();
                p.ru = ProcessNode::start(&p.ru.dir.clone());
            }
        }
    }
    seen
}

fn received(api: &Api) -> u64 {
    api.status()["certificates_in"].as_u64().unwrap_or(0)
}

/// Waits for the end state and checks it: N distinct certificates at IN, N receipts at RU,
/// both logs audit clean with exactly N entries of each kind, and the kills did what they
/// were for: they struck mid-stream and while submissions were being acknowledged, and
/// made RU resend.
fn check_exactly_once(
    mut p: Pair,
    mut numbers: BTreeSet<String>,
    submitter: Submitter,
    mut seen: Seen,
    kills: u64,
) {
    let n = n();
    let cut_off = submitter.cut_off.load(Ordering::SeqCst);
    numbers.extend(submitter.finish());
    assert_eq!(numbers.len() as u64, n, "every submission was acknowledged, each once");
    let ru_api = p.ru.api();
    wait_until(Duration::from_secs(120 + n / 50), "every certificate is delivered", || {
        ru_api.count("out", "delivered") == n as usize
    });
    let in_api = p.inn.api();
    let inbound = in_api.certificates("in");
    let got: BTreeSet<String> = inbound.iter().map(|c| c["number"].as_str().unwrap().to_owned()).collect();
    assert_eq!(inbound.len() as u64, n, "no duplicates");
    assert_eq!(got, numbers);
    seen.sent += metric(&ru_api, "kpnode_deliveries_sent_total");
    seen.duplicates += metric(&in_api, "kpnode_duplicates_received_total");
    eprintln!(
        "kill loop: {kills} kills, {} mid-stream, {} while submissions were acknowledged ({cut_off} submissions cut off and repeated); {} deliveries sent for {n} certificates, {} resent deliveries already held",
        seen.mid_stream, seen.during_submissions, seen.sent, seen.duplicates
    );
    assert!(seen.mid_stream >= kills / 2, "only {} of {kills} kills struck mid-stream", seen.mid_stream);
    assert!(seen.during_submissions >= 1, "no kill struck while submissions were being acknowledged");
    assert!(
        seen.duplicates > 0.0 || seen.sent > n as f64,
        "no delivery was resent ({} sent for {n}, {} duplicates): the kills tested no recovery",
        seen.sent,
        seen.duplicates
    );
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
    let (mut p, numbers, submitter) = pair_streaming();
    let seen = kill_loop(&mut p, &submitter, Victim::Receiver, kills, 1);
    check_exactly_once(p, numbers, submitter, seen, kills);
}

#[test]
fn the_sender_killed_again_and_again_mid_stream_ends_with_every_certificate_exactly_once() {
    let kills = env_u64("KPNODE_KILL_LOOPS", 20);
    let (mut p, numbers, submitter) = pair_streaming();
    let seen = kill_loop(&mut p, &submitter, Victim::Sender, kills, 2);
    assert!(submitter.cut_off.load(Ordering::SeqCst) > 0, "no kill cut off a submission");
    check_exactly_once(p, numbers, submitter, seen, kills);
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
