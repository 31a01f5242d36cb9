//! Open links follow the trust that admitted them: when an enrolled peer's identity is
//! replaced, when it is removed (and enrolled again with a new identity), or when its old TLS
//! key's grace period ends, every open link that authenticated with a key no longer trusted
//! is closed at once, and nothing it sends afterwards is stored or receipted. A link whose TLS
//! key stays trusted has each delivery judged by the identity in force when it arrives, not
//! the one at its handshake.
//!
//! The attacker in each case is a client holding RU's old keys with a link to IN opened while
//! they were trusted ([`RawPeer`]), beside the real RU daemon whose links are open too.

use std::time::{Duration, Instant};

use kp_keys::NodeKeys;
use kp_node::net::conn::LinkError;
use kp_protocol::{Frame, SignedDocument};
use kp_tests::raw::{sign_by_hand, RawPeer};
use kp_tests::*;
use serde_json::json;

fn now() -> kp_protocol::Timestamp {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock)
}

/// A certificate RU→IN numbered `number`, signed with `keys`.
fn signed(keys: &NodeKeys, number: &str, variant: u64) -> SignedDocument {
    let cert = parse_certificate(&certificate_json("RU", "IN", Some(number), variant));
    sign_by_hand(&cert, "RU", keys, now())
}

fn deliver(doc: &SignedDocument) -> Frame {
    Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn metric(api: &Api, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, v) = api.get("/metrics");
    let text = v.as_str().unwrap_or_default().to_owned();
    let exposition = kp_tests::prometheus::parse_strict(&text).expect("the metrics parse");
    exposition
        .samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

const CLOSED: &str = "kpnode_links_closed_untrusted_total";

/// What the node answers on `raw` within `limit`, skipping pings: `Some(frame)`, or `None`
/// once it has closed the connection. Panics if the connection is still open and silent.
async fn answer(raw: &mut RawPeer, limit: Duration) -> Option<Frame> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.recv(left).await {
            Ok(Some(Frame::Ping { .. } | Frame::Pong { .. })) => continue,
            Ok(Some(f)) => return Some(f),
            Ok(None) => return None,
            Err(LinkError::Timeout(..)) => panic!("the link is still open after {limit:?}"),
            // A reset or a TLS alert: closed all the same.
            Err(_) => return None,
        }
    }
}

/// Enrols `text` as a new identity of an enrolled participant. Builds that require the
/// identity change to be explicit (`replace_identity`) refuse it without the field and name
/// it; the original code takes it as is. Either way the new identity is enrolled.
fn enrol_new_identity(api: &Api, text: &str, fp: &str) {
    let (s, v) = api.post("/v1/peers", &json!({"bundle": text, "fingerprint": fp}).to_string());
    if s == 201 {
        return;
    }
    assert!(v.to_string().contains("replace_identity"), "enrolling a new identity failed: {s} {v}");
    let body = json!({"bundle": text, "fingerprint": fp, "replace_identity": true}).to_string();
    let (s, v) = api.post("/v1/peers", &body);
    assert_eq!(s, 201, "enrolling a new identity with replace_identity failed: {v}");
}

/// IN's view of its links with RU.
fn in_link_of_ru(inn: &Api) -> serde_json::Value {
    let s = inn.status();
    s["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "RU").unwrap()["link"].clone()
}

/// The real RU daemon, still running with its old identity, submits a certificate for IN:
/// IN refuses its reconnections at the handshake and stores nothing.
fn old_daemon_gets_nothing_in(ru: &TestNode, inn: &TestNode, number: &str) {
    wait_until(Duration::from_secs(10), "IN holds no connection of the old RU", || {
        in_link_of_ru(&inn.api)["inbound_connections"] == 0
    });
    let refused_before = metric(&inn.api, "kpnode_handshakes_refused_total", &[]);
    let n = ru.api.submit(&certificate_json("RU", "IN", Some(number), 77));
    wait_until(Duration::from_secs(20), "the old RU is refused at the handshake", || {
        metric(&inn.api, "kpnode_handshakes_refused_total", &[]) >= refused_before + 2.0
    });
    assert_ne!(ru.api.certificate(&n)["status"], "delivered");
    assert_eq!(inn.api.get(&format!("/v1/certificates/{n}")).0, 404, "IN must not store {n}");
}

#[test]
fn replacing_a_peers_identity_closes_the_old_identitys_links_at_once() {
    let Pair { rt, tmp, ru, inn } = linked_pair(0, free_port());
    wait_linked(&inn.api, ru.code);
    let in_addr = inn.handle().peer_addr();
    let old = NodeKeys::load(&ru.dir.keys_dir()).unwrap();

    // A link opened with the old identity's keys works, as it should while they are trusted.
    let first = signed(&old, "RU-2026-100001", 1);
    let mut raw = rt.block_on(async {
        let mut raw = RawPeer::connect(in_addr, &old, "RU".parse().unwrap()).await.unwrap();
        raw.send(&deliver(&first)).await.unwrap();
        let reply = answer(&mut raw, Duration::from_secs(10)).await;
        assert!(matches!(reply, Some(Frame::Receipt { .. })), "{reply:?}");
        raw
    });

    // IN's operator enrols a new RU identity (a fresh `kpnode init` after a compromise).
    let new_ru = TestNode::start(&rt, init_dir(&tmp.path().join("new"), "RU", 0));
    let (text, fp) = new_ru.bundle();
    assert_ne!(fp, ru.api.status()["fingerprint"].as_str().unwrap());
    let closed_before = metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "identity_replaced")]);
    enrol_new_identity(&inn.api, &text, &fp);
    let changed = Instant::now();

    // The old identity, still connected, delivers a certificate: neither stored nor receipted.
    let second = signed(&old, "RU-2026-100002", 2);
    let reply = rt.block_on(async {
        let _ = raw.send(&deliver(&second)).await;
        answer(&mut raw, Duration::from_secs(30)).await
    });
    assert!(reply.is_none(), "the old identity's link must be closed, not answered: {reply:?}");
    // Well before the link's idle timeout (45 s), with room for a busy machine.
    assert!(changed.elapsed() < Duration::from_secs(15), "closed at once, not by a timeout");
    assert_eq!(
        inn.api.get("/v1/certificates/RU-2026-100002").0,
        404,
        "IN stored the old identity's delivery"
    );
    assert_eq!(inn.api.certificates("in").len(), 1, "only the delivery from before the change");

    // Positive evidence: IN counted the closures, naming the reason: the raw link and the old
    // RU daemon's link into IN, and IN's own link out to the old RU.
    wait_until(Duration::from_secs(5), "IN counts the closures", || {
        metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "identity_replaced")]) >= closed_before + 3.0
    });
    // The real old RU daemon's link is gone too and it cannot get back in.
    old_daemon_gets_nothing_in(&ru, &inn, "RU-2026-100003");
    drop((ru, new_ru));
}

#[test]
fn removing_a_peer_and_enrolling_a_new_identity_leaves_no_old_link() {
    let Pair { rt, tmp, ru, inn } = linked_pair(0, free_port());
    wait_linked(&inn.api, ru.code);
    let in_addr = inn.handle().peer_addr();
    let old = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let mut raw =
        rt.block_on(async { RawPeer::connect(in_addr, &old, "RU".parse().unwrap()).await.unwrap() });

    let closed_before = metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "removed")]);
    let (s, v) = inn.api.delete("/v1/peers/RU");
    assert_eq!(s, 200, "{v}");
    let doc = signed(&old, "RU-2026-200001", 1);
    let reply = rt.block_on(async {
        let _ = raw.send(&deliver(&doc)).await;
        answer(&mut raw, Duration::from_secs(10)).await
    });
    assert!(reply.is_none(), "a removed peer's link must be closed: {reply:?}");
    wait_until(Duration::from_secs(5), "IN counts the closures", || {
        metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "removed")]) >= closed_before + 3.0
    });

    // Enrolled again, with a new identity: the old keys stay out.
    let new_ru = TestNode::start(&rt, init_dir(&tmp.path().join("new"), "RU", 0));
    let (text, fp) = new_ru.bundle();
    enrol_new_identity(&inn.api, &text, &fp);
    let refused = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), RawPeer::connect(in_addr, &old, "RU".parse().unwrap()))
            .await
            .map_or(true, |r| r.is_err())
    });
    assert!(refused, "the old identity's keys must be refused");
    old_daemon_gets_nothing_in(&ru, &inn, "RU-2026-200002");
    assert!(inn.api.certificates("in").is_empty(), "{:?}", inn.api.certificates("in"));
    drop((ru, new_ru));
}

#[test]
fn a_link_on_a_tls_key_past_its_grace_period_is_closed() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", 0);
    set_setting(&in_dir, "keys", "tls_grace_period", "\"2s\"");
    assert_eq!(in_dir.config().unwrap().keys.tls_grace_period, Duration::from_secs(2));
    let ru = TestNode::start(&rt, ru_dir.clone());
    let inn = TestNode::start(&rt, in_dir);
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);
    wait_linked(&inn.api, ru.code);
    let in_addr = inn.handle().peer_addr();
    let old = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    let mut raw =
        rt.block_on(async { RawPeer::connect(in_addr, &old, "RU".parse().unwrap()).await.unwrap() });
    let closed_before = metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "grace_over")]);

    let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"tls": true}"#);
    assert_eq!((s, v["tls_rotated"].as_bool()), (200, Some(true)), "{v}");
    wait_until(Duration::from_secs(20), "IN knows RU's new TLS key", || {
        let (_, keys) = inn.api.get("/v1/keys");
        keys["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["participant"] == "RU" && p["history"]["tls"].as_array().map_or(0, Vec::len) == 2)
    });
    let learnt = Instant::now();

    // The link opened with the old key is closed when its grace period ends (2 s after the
    // rotation took effect), without anything being sent on it: no idle timeout (45 s) in
    // play.
    let reply = rt.block_on(answer(&mut raw, Duration::from_secs(30)));
    assert!(reply.is_none(), "{reply:?}");
    assert!(
        learnt.elapsed() < Duration::from_secs(15),
        "closed at the grace period's end, not by the idle timeout"
    );
    // The raw link, the real RU's link into IN and IN's link out to RU (RU presented the old
    // key when IN dialled it) are all on the old key.
    wait_until(Duration::from_secs(5), "IN counts the closures", || {
        metric(&inn.api, CLOSED, &[("peer", "RU"), ("reason", "grace_over")]) >= closed_before + 3.0
    });

    // Sending afterwards on a fresh attempt with the old key gets nowhere...
    let refused = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), RawPeer::connect(in_addr, &old, "RU".parse().unwrap()))
            .await
            .map_or(true, |r| r.is_err())
    });
    assert!(refused, "the old TLS key must be refused after its grace period");
    // ...while the real RU, whose links were closed too, reconnects with its new key.
    let n = ru.api.submit(&certificate_json("RU", "IN", Some("RU-2026-300001"), 1));
    let m = inn.api.submit(&certificate_json("IN", "RU", None, 2));
    wait_until(Duration::from_secs(30), "both directions deliver on the new key", || {
        ru.api.certificate(&n)["status"] == "delivered" && inn.api.certificate(&m)["status"] == "delivered"
    });
}

#[test]
fn each_delivery_is_judged_by_the_identity_in_force_not_the_one_at_handshake() {
    let Pair { rt, tmp: _tmp, ru, inn } = linked_pair(0, free_port());
    let in_addr = inn.handle().peer_addr();
    let old = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let mut raw =
        rt.block_on(async { RawPeer::connect(in_addr, &old, "RU".parse().unwrap()).await.unwrap() });

    // A new RU identity that keeps the TLS certificate: the open link's key stays trusted, so
    // the link stays open, but the old signing key is no longer RU's.
    let new_signing = kp_keys::SigningKeyPair::generate();
    let created = now().saturating_add_millis(-5_000);
    let bundle = kp_keys::Bundle {
        format: kp_keys::bundle::BUNDLE_FORMAT,
        participant: "RU".parse().unwrap(),
        authority: "Authority of RU".parse().unwrap(),
        endpoints: vec![ru.handle().peer_addr().to_string()],
        root_key: new_signing.verifying_key().to_bytes(),
        root_created_at: created,
        root_tls_certificate: old.tls_certificate.clone(),
        rotations: Vec::new(),
        created_at: created,
    }
    .sign(&new_signing)
    .unwrap();
    enrol_new_identity(&inn.api, &bundle.to_armored(), &bundle.fingerprint.to_string());

    let by_old = signed(&old, "RU-2026-400001", 1);
    let cert = parse_certificate(&certificate_json("RU", "IN", Some("RU-2026-400002"), 2));
    let by_new = SignedDocument::sign(&cert, "RU".parse().unwrap(), new_signing.signing_key(), now());
    let (old_reply, new_reply) = rt.block_on(async {
        raw.send(&deliver(&by_old)).await.unwrap();
        let a = answer(&mut raw, Duration::from_secs(10)).await;
        raw.send(&deliver(&by_new)).await.unwrap();
        let b = answer(&mut raw, Duration::from_secs(10)).await;
        (a, b)
    });
    match old_reply {
        Some(Frame::Reject { code, detail, .. }) => {
            assert_eq!(code, kp_protocol::RejectCode::UnknownKey, "{detail}")
        }
        other => panic!("a document signed with the replaced identity's key must be refused: {other:?}"),
    }
    assert!(matches!(new_reply, Some(Frame::Receipt { .. })), "{new_reply:?}");
    assert_eq!(inn.api.get("/v1/certificates/RU-2026-400001").0, 404);
    assert_eq!(inn.api.certificate("RU-2026-400002")["status"], "received");
}
