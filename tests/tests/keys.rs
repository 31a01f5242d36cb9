//! Keys over time: a signing-key rotation in the middle of a stream, a TLS-key rotation with
//! its grace period, and rotation statements that are not signed by the key they replace.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::{Frame, KeyRotation, RejectCode, SignedDocument};
use kp_tests::raw::{admission, rejected, sign_by_hand, Admission, RawPeer};
use kp_tests::*;
use serde_json::Value;

fn now() -> kp_protocol::Timestamp {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock)
}

fn in_count(api: &Api) -> u64 {
    api.status()["certificates_in"].as_u64().unwrap_or(0)
}

/// Signs certificate `number` (contents `variant`) offline, with `kpnode cert sign` on the
/// stopped node in `dir`, into `<tmp>/<name>.kpc`; returns that path.
fn sign_offline(
    tmp: &std::path::Path,
    name: &str,
    number: &str,
    variant: u64,
    dir: &str,
) -> std::path::PathBuf {
    let json = tmp.join(format!("{name}.json"));
    std::fs::write(&json, certificate_json("RU", "IN", Some(number), variant)).unwrap();
    let kpc = tmp.join(format!("{name}.kpc"));
    let (c, _, e) =
        kpnode(&["cert", "sign", json.to_str().unwrap(), "--out", kpc.to_str().unwrap(), "--dir", dir]);
    assert_eq!(c, 0, "{e}");
    kpc
}

#[test]
fn rotating_the_signing_key_mid_stream_keeps_every_document_verifiable() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", 0);

    // A .kpc signed offline before the rotation (before the node starts: `cert sign` checks
    // the number against the store, which an in-process node holds without a daemon.json
    // for the command to find its API by).
    let ru_s = ru_dir.root().to_str().unwrap().to_owned();
    let before_kpc = sign_offline(tmp.path(), "before", "RU-2026-900001", 1, &ru_s);

    let mut ru = TestNode::start(&rt, ru_dir);
    let mut inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", 0));
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);
    let (old_bundle, _) = ru.bundle();
    let old_key = ru.api.status()["signing_key"].as_str().unwrap().to_owned();

    // 1,000 certificates; the key is rotated while they flow.
    let rotated = std::thread::scope(|s| {
        let submitters: Vec<_> = (0..4)
            .map(|t| {
                let api = ru.api.clone();
                s.spawn(move || {
                    for i in (0..1000u64).filter(|i| i % 4 == t) {
                        api.submit(&certificate_json("RU", "IN", None, i));
                    }
                })
            })
            .collect();
        wait_until(Duration::from_secs(60), "the stream is under way", || in_count(&inn.api) >= 200);
        let (st, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
        assert_eq!(st, 200, "{v}");
        let at_rotation = in_count(&inn.api);
        for h in submitters {
            h.join().unwrap();
        }
        (v, at_rotation)
    });
    let (rotation, received_at_rotation) = rotated;
    assert!(received_at_rotation < 1000, "the rotation came after the stream");
    let new_key = rotation["signing_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);

    wait_until(Duration::from_secs(60), "all 1,000 are delivered", || {
        ru.api.count("out", "delivered") == 1000
    });
    assert_eq!(inn.api.certificates("in").len(), 1000);

    // IN holds certificates signed with both keys, and its history of RU's keys shows the
    // switch.
    let (_, log) = inn.api.get("/v1/log?limit=10000");
    let keys_used: std::collections::BTreeSet<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "certificate")
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys_used,
        [old_key.as_str(), new_key.as_str()].into_iter().collect(),
        "certificates signed before and after the rotation"
    );
    let (_, keys) = inn.api.get("/v1/keys");
    let ru_keys = keys["peers"].as_array().unwrap().iter().find(|p| p["participant"] == "RU").unwrap();
    let signing = ru_keys["history"]["signing"].as_array().unwrap();
    assert_eq!(signing.len(), 2, "{ru_keys}");
    assert_eq!(signing[0]["key_id"], old_key.as_str());
    assert_eq!(signing[1]["key_id"], new_key.as_str());
    assert_eq!(signing[0]["valid_until"], signing[1]["valid_from"], "the switch time");
    assert_eq!(signing[1]["valid_from"], rotation["effective_from"]);

    // log verify passes on both nodes, online.
    for api in [&ru.api, &inn.api] {
        let (_, v) = api.get("/v1/log/verify");
        assert_eq!(v["verified"], true, "{v}");
    }

    // Offline: with the updated bundle, documents from before and after the rotation verify;
    // the old bundle does not know the new key. (RU is stopped to sign, as above.)
    let (new_bundle, _) = ru.bundle();
    ru.stop(&rt);
    let after_kpc = sign_offline(tmp.path(), "after", "RU-2026-900002", 2, &ru_s);
    let (old_b, new_b) = (tmp.path().join("old.bundle"), tmp.path().join("new.bundle"));
    std::fs::write(&old_b, old_bundle).unwrap();
    std::fs::write(&new_b, new_bundle).unwrap();
    for kpc in [&before_kpc, &after_kpc] {
        let (c, out, e) = kpnode(&["verify", kpc.to_str().unwrap(), "--bundle", new_b.to_str().unwrap()]);
        assert_eq!(c, 0, "{e}");
        assert!(out.starts_with("Authentic"), "{out}");
    }
    let (c, _, e) = kpnode(&["verify", after_kpc.to_str().unwrap(), "--bundle", old_b.to_str().unwrap()]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("latest bundle"), "{e}");

    inn.stop(&rt);
    assert_eq!(audit(&ru.dir).sent, 1001, "1,000 certificates and the rotation statement");
    assert_eq!(audit(&inn.dir).received, 1001);
}

#[test]
fn a_rotation_statement_not_signed_by_the_key_it_replaces_is_rejected() {
    let Pair { rt, tmp: _tmp, ru, inn } = enrolled_pair(0, 0);
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let now = kp_node::clock::Clock::now(&kp_node::clock::SystemClock);
    let new_key = kp_keys::SigningKeyPair::generate();
    let body = KeyRotation::new_with_signing_key(
        "RU".parse().unwrap(),
        1,
        ru_keys.signing.key_id(),
        new_key.signing_key(),
        None,
        now,
    );
    // Signed by the new key instead of the one it replaces.
    let by_new = SignedDocument::sign(&body, "RU".parse().unwrap(), new_key.signing_key(), now);
    // Signed by the right key, but the new key's own signature is forged.
    let mut forged = body.clone();
    forged.new_signing_key.as_mut().unwrap().public_key =
        kp_keys::SigningKeyPair::generate().verifying_key().to_bytes();
    let by_old_forged = sign_by_hand(&forged, "RU", &ru_keys, now);
    for (doc, code) in [(by_new, RejectCode::UnknownKey), (by_old_forged, RejectCode::InvalidDocument)] {
        let reply = rt.block_on(async {
            let mut raw =
                RawPeer::connect(inn.handle().peer_addr(), &ru_keys, "RU".parse().unwrap()).await.unwrap();
            raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
            raw.recv(Duration::from_secs(10)).await.unwrap()
        });
        rejected(&reply, code);
    }
    let (_, keys) = inn.api.get("/v1/keys");
    let ru_hist = &keys["peers"][0]["history"];
    assert_eq!(
        ru_hist["signing"].as_array().unwrap().len(),
        1,
        "IN still knows only RU's original key: {keys}"
    );
}

fn tls_entries(api: &Api, peer: &str) -> usize {
    let (_, keys) = api.get("/v1/keys");
    keys["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant"] == peer)
        .map_or(0, |p| p["history"]["tls"].as_array().map_or(0, Vec::len))
}

/// How the node at `addr` answers a client with `keys` saying Hello as RU.
fn answer(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, keys: &NodeKeys) -> Admission {
    rt.block_on(admission(addr, keys, "RU".parse().unwrap(), Duration::from_secs(10)))
}

/// Whether a client with `keys` gets through the handshake and Hello at `addr`.
fn handshake_ok(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, keys: &NodeKeys) -> bool {
    answer(rt, addr, keys) == Admission::Accepted
}

/// Whether the node refused `keys` at the TLS handshake: an alert, not silence (a slow or
/// hung handshake is no refusal).
fn refused_by_tls(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, keys: &NodeKeys) -> bool {
    match answer(rt, addr, keys) {
        Admission::Accepted => false,
        Admission::Refused(detail) => {
            assert!(detail.contains("alert"), "refused, but not at the TLS handshake: {detail}");
            true
        }
        Admission::Silent => panic!("the node neither accepted nor refused the key within 10 s"),
    }
}

#[test]
fn rotating_the_tls_key_keeps_links_and_refuses_the_old_key_after_the_grace_period() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", 0);
    // A short grace period on IN, to see it end.
    set_setting(&in_dir, "keys", "tls_grace_period", "\"3s\"");
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    let inn = TestNode::start(&rt, in_dir);
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);
    wait_linked(&inn.api, ru.code);
    let old_keys = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    let in_addr = inn.handle().peer_addr();
    assert!(handshake_ok(&rt, in_addr, &old_keys));

    let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"tls": true}"#);
    assert_eq!((s, v["tls_rotated"].as_bool()), (200, Some(true)), "{v}");
    let new_keys = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    assert_ne!(new_keys.tls_certificate, old_keys.tls_certificate);

    // Existing links keep working, both ways.
    let n = ru.api.submit(&certificate_json("RU", "IN", None, 1));
    let m = inn.api.submit(&certificate_json("IN", "RU", None, 2));
    wait_until(Duration::from_secs(20), "both are delivered", || {
        ru.api.certificate(&n)["status"] == "delivered" && inn.api.certificate(&m)["status"] == "delivered"
    });
    // IN learnt the new TLS key; within the grace period both keys get in.
    wait_until(Duration::from_secs(20), "IN knows RU's new TLS key", || tls_entries(&inn.api, "RU") == 2);
    assert!(handshake_ok(&rt, in_addr, &new_keys), "the new key is accepted at once");
    // After the grace period the old key is refused.
    wait_until(Duration::from_secs(20), "the old key is refused", || refused_by_tls(&rt, in_addr, &old_keys));
    assert!(handshake_ok(&rt, in_addr, &new_keys));

    // Reconnections use the new key: restarted, RU gets its link up (the old key would be
    // refused by now) and delivers.
    ru.stop(&rt);
    let ru = TestNode::start(&rt, ru_dir);
    wait_linked(&ru.api, inn.code);
    let n = ru.api.submit(&certificate_json("RU", "IN", None, 3));
    wait_until(Duration::from_secs(20), "delivered after the reconnection", || {
        ru.api.certificate(&n)["status"] == "delivered"
    });
    // Still refused after RU's restart: counted, and logged naming the old key's digest and
    // the fingerprint of RU, whose history holds it.
    let refused_before = metric(&inn.api, "kpnode_handshakes_refused_total");
    assert!(refused_by_tls(&rt, in_addr, &old_keys), "the old key is refused for good");
    wait_until(Duration::from_secs(5), "the refusal is counted", || {
        metric(&inn.api, "kpnode_handshakes_refused_total") >= refused_before + 1.0
    });
    let old_key = kp_keys::tlscert::public_key(&old_keys.tls_certificate).unwrap();
    let (_, ru_fingerprint) = ru.bundle();
    wait_logged(&[
        "refused a TLS peer",
        &format!("tls_key=sha256:{}", kp_protocol::Digest::of(&old_key).short()),
        &format!("fingerprint={ru_fingerprint} (RU)"),
    ]);
    let _: Value = inn.api.status();
}

/// How many signing keys `api`'s node knows for `peer`.
fn signing_entries(api: &Api, peer: &str) -> usize {
    let (_, keys) = api.get("/v1/keys");
    keys["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant"] == peer)
        .map_or(0, |p| p["history"]["signing"].as_array().map_or(0, Vec::len))
}

/// Over the real link: RU's certificate is stored but its receipt never reaches RU; RU then
/// replaces its signing key and IN's grace period for the old one (3 s here) runs out before
/// the resend. IN answers the resend with the very receipt it gave first, while a certificate
/// it never received, signed with the old key, is refused naming the grace period.
#[test]
fn a_resend_after_the_old_keys_grace_period_gets_the_original_receipt() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let in_dir = init_dir(tmp.path(), "IN", 0);
    set_setting(&in_dir, "keys", "tls_grace_period", "\"3s\"");
    let ru = TestNode::start(&rt, ru_dir.clone());
    let inn = TestNode::start(&rt, in_dir);
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);
    let old = NodeKeys::load(&ru_dir.keys_dir()).unwrap();
    let sign = |number: &str, n: u64| {
        let cert = parse_certificate(&certificate_json("RU", "IN", Some(number), n));
        sign_by_hand(&cert, "RU", &old, now())
    };
    let (stored, never_sent) = (sign("RU-2026-900001", 1), sign("RU-2026-900002", 2));
    // A void of no certificate, signed with the old key well before the rotation (before the
    // first delivery: a signature made in the very millisecond the rotation takes effect is
    // outside the old key's window, and refused for that, not for the grace period), tells when
    // the grace period is over: refused as unknown to IN until then, for the key after.
    let probe = SignedDocument::sign(
        &kp_protocol::Void {
            certificate: "RU-2026-999999".parse().unwrap(),
            certificate_id: kp_protocol::Digest::of(b"none"),
            reason: "issued in error".parse().unwrap(),
        },
        "RU".parse().unwrap(),
        old.signing.file().expect("a file key").signing_key(),
        now(),
    );
    let in_addr = inn.handle().peer_addr();
    // RU's node, played by a client holding its keys, delivers; the receipt is "lost" (the
    // client keeps it only to compare).
    let deliver = |doc: &SignedDocument| {
        rt.block_on(async {
            let mut raw = RawPeer::connect(in_addr, &old, "RU".parse().unwrap()).await.unwrap();
            raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
            raw.recv(Duration::from_secs(10)).await.unwrap()
        })
    };
    let first = deliver(&stored);
    assert!(matches!(first, Some(Frame::Receipt { .. })), "{first:?}");

    let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
    assert_eq!(s, 200, "{v}");
    wait_until(Duration::from_secs(20), "IN learns RU's new signing key", || {
        signing_entries(&inn.api, "RU") == 2
    });
    // Any other refusal of the old key (its window, say) would never turn into the grace
    // period's: fail at once, naming it, rather than time out.
    let grace_over = |reply: Option<Frame>| match reply {
        Some(Frame::Reject { code: RejectCode::UnknownKey, detail, .. }) => {
            assert!(
                detail.contains("grace period"),
                "the probe was refused for its key, not the grace period: {detail}"
            );
            true
        }
        _ => false,
    };
    wait_until(Duration::from_secs(20), "the old key's grace period ends", || grace_over(deliver(&probe)));

    let again = deliver(&stored);
    assert_eq!(again, first, "the resend gets the original receipt");
    let reply = deliver(&never_sent);
    let detail = rejected(&reply, RejectCode::UnknownKey);
    assert!(detail.contains("grace period"), "{detail}");
    let received: Vec<Value> = inn.api.certificates("in");
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["number"], "RU-2026-900001");
}
