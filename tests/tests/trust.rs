//! What a partner's key history and enrolment may contain, attacked as a hostile partner (or
//! a stale bundle in a mailbox) would: every test performs the attack and shows the refusal.
//!
//! - an older bundle of an enrolled participant is refused (exit 2, API 422), not rolled back;
//! - a new identity needs `--replace-identity`, and the old one's entries still verify;
//! - 70 hostile TLS rotations are refused or bounded, and the node restarts;
//! - a peer record that cannot be loaded quarantines the peer, never the node;
//! - a backdated rotation (also with its signing time backdated: it may not disown what was
//!   received), a TLS key bound to another participant and a new TLS key without proof of
//!   possession are refused;
//! - this node's own rotation beyond the bounds is refused as a conflict (409, exit 2);
//! - offline `verify` does not let a new identity's bundle vouch for the old identity.

use std::path::Path;
use std::time::Duration;

use kp_keys::{Bundle, NodeKeys, TlsKeyPair};
use kp_protocol::{Frame, KeyRotation, ParticipantCode, RejectCode, SignedDocument, Timestamp};
use kp_tests::raw::RawPeer;
use kp_tests::*;
use serde_json::json;

fn now() -> Timestamp {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock)
}

const RU: ParticipantCode = ParticipantCode::from_static("RU");

/// How many signing and TLS keys `api`'s node knows for `peer`.
fn key_counts(api: &Api, peer: &str) -> (usize, usize) {
    let (_, keys) = api.get("/v1/keys");
    keys["peers"].as_array().unwrap().iter().find(|p| p["participant"] == peer).map_or((0, 0), |p| {
        let n = |k: &str| p["history"][k].as_array().map_or(0, Vec::len);
        (n("signing"), n("tls"))
    })
}

/// A node in this process that announces itself like `kpnode run`, so that the real CLI
/// finds its API.
fn start_announced(rt: &tokio::runtime::Runtime, dir: kp_node::home::NodeDir) -> TestNode {
    let mut opts = kp_node::node::NodeOptions::new(dir.clone());
    opts.announce = true;
    let handle = rt.block_on(kp_node::node::Node::start(opts)).expect("the node starts");
    let api = Api::new(handle.api_addr(), handle.api_token());
    TestNode { code: handle.participant(), dir, handle: Some(handle), api }
}

/// RU and IN, enrolled and linked; IN announces itself for the CLI.
fn linked(rt: &tokio::runtime::Runtime, root: &Path) -> (TestNode, TestNode) {
    let ru = TestNode::start(rt, init_dir(root, "RU", 0));
    let inn = start_announced(rt, init_dir(root, "IN", free_port()));
    enrol_pair(&ru, &inn);
    wait_linked(&ru.api, inn.code);
    (ru, inn)
}

fn write_bundle(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `kpnode peer add` as an operator runs it.
fn peer_add(node: &kp_node::home::NodeDir, bundle: &str, fingerprint: &str, extra: &[&str]) -> (i32, String) {
    let mut args =
        vec!["peer", "add", bundle, "--fingerprint", fingerprint, "--dir", node.root().to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = kpnode(&args);
    (code, format!("{out}{err}"))
}

/// A TLS-only rotation of `keys`' participant to `cert`, as the next statement after
/// `sequence - 1`, proved by `prover` if given.
fn tls_rotation(
    keys: &NodeKeys,
    sequence: u32,
    cert: Vec<u8>,
    prover: Option<&TlsKeyPair>,
    signed_at: Timestamp,
    effective_from: Timestamp,
) -> SignedDocument {
    let mut body = KeyRotation {
        participant: keys.participant(),
        sequence,
        previous_key: keys.signing.key_id(),
        new_signing_key: None,
        new_tls_certificate: Some(cert),
        effective_from,
        tls_possession: None,
    };
    if let Some(p) = prover {
        p.prove_possession(&mut body);
    }
    SignedDocument::sign(
        &body,
        keys.participant(),
        keys.signing.file().expect("a file key").signing_key(),
        signed_at,
    )
}

/// Delivers `doc` on `raw` and returns the answer: `Ok(())` for a receipt, `Err((code,
/// detail))` for a reject.
async fn deliver(raw: &mut RawPeer, doc: &SignedDocument) -> Result<(), (RejectCode, String)> {
    raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
    match raw.recv(Duration::from_secs(20)).await.unwrap() {
        Some(Frame::Receipt { .. }) => Ok(()),
        Some(Frame::Reject { code, detail, .. }) => Err((code, detail)),
        other => panic!("expected a Receipt or a Reject, got {other:?}"),
    }
}

/// `reply` must be a refusal with `code`, its detail saying `says`; `what` says what is refused.
fn assert_refused(reply: Result<(), (RejectCode, String)>, code: RejectCode, says: &str, what: &str) {
    let (got, detail) = reply.expect_err(what);
    assert_eq!(got, code, "{what}: {detail}");
    assert!(detail.contains(says), "{what}: expected {says:?} in: {detail}");
}

/// What IN answers when RU, with `ru_keys`, sends `doc` on a fresh raw link.
fn send_once(
    rt: &tokio::runtime::Runtime,
    inn: &TestNode,
    ru_keys: &NodeKeys,
    doc: &SignedDocument,
) -> Result<(), (RejectCode, String)> {
    rt.block_on(async {
        let mut raw = RawPeer::connect(inn.handle().peer_addr(), ru_keys, RU).await.unwrap();
        deliver(&mut raw, doc).await
    })
}

/// RU's first rotation, replacing its signing key by `new_key` from `effective`, signed at
/// `signed` with the key it replaces.
fn signing_rotation(
    ru_keys: &NodeKeys,
    new_key: &kp_keys::SigningKeyPair,
    effective: Timestamp,
    signed: Timestamp,
) -> SignedDocument {
    let body = KeyRotation::new_with_signing_key(
        RU,
        1,
        ru_keys.signing.key_id(),
        new_key.signing_key(),
        None,
        effective,
    );
    SignedDocument::sign(&body, RU, ru_keys.signing.file().expect("a file key").signing_key(), signed)
}

/// A valid self-signed Ed25519 certificate of `key`, padded with subject names to about
/// `size` bytes.
fn big_certificate(key: &TlsKeyPair, size: usize) -> Vec<u8> {
    let names: Vec<String> =
        (0..size / 64).map(|i| format!("{i:06}.{}.kpnode.invalid", "x".repeat(40))).collect();
    let params = rcgen::CertificateParams::new(names).unwrap();
    let pair = rcgen::KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap();
    params.self_signed(&pair).unwrap().der().to_vec()
}

#[test]
fn an_older_bundle_of_an_enrolled_peer_is_refused_not_rolled_back() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (ru, inn) = linked(&rt, tmp.path());
    let (old_bundle, fp) = ru.bundle();
    // RU rotates its signing key; IN learns the rotation over the link.
    let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
    assert_eq!(s, 200, "{v}");
    wait_until(Duration::from_secs(20), "IN holds RU's rotation", || key_counts(&inn.api, "RU").0 == 2);

    // The stale bundle (same fingerprint, one rotation fewer), through the real CLI.
    let path = write_bundle(tmp.path(), "ru-old.bundle", &old_bundle);
    let (code, out) = peer_add(&inn.dir, &path, &fp, &[]);
    assert_eq!(code, 2, "an older bundle must be refused with exit status 2: {out}");
    assert!(out.contains("older than what this node holds"), "{out}");
    // And through the API.
    let body = json!({"bundle": old_bundle, "fingerprint": fp}).to_string();
    let (s, v) = inn.api.post("/v1/peers", &body);
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("older than what this node holds"), "{v}");
    assert_eq!(key_counts(&inn.api, "RU").0, 2, "IN still holds RU's rotation");

    // RU's current bundle extends what IN holds: accepted.
    let (new_bundle, fp2) = ru.bundle();
    assert_eq!(fp, fp2);
    let path = write_bundle(tmp.path(), "ru-new.bundle", &new_bundle);
    let (code, out) = peer_add(&inn.dir, &path, &fp, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(key_counts(&inn.api, "RU").0, 2);
    wait_linked(&inn.api, RU);
}

#[test]
fn an_identity_change_needs_the_flag_and_old_entries_still_verify() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (mut ru, mut inn) = linked(&rt, tmp.path());
    let number = ru.api.submit(&certificate_json("RU", "IN", None, 1));
    wait_until(Duration::from_secs(20), "IN received RU's certificate", || {
        inn.api.count("in", "received") == 1
    });
    let (old_bundle, _) = ru.bundle();
    ru.stop(&rt);
    // The paperwork of that certificate: its QR seal, made under the old identity.
    let seal = tmp.path().join("seal.png");
    let ru_dir = ru.dir.root().to_str().unwrap().to_owned();
    let (code, _, err) = kpnode(&["cert", "qr", &number, "--out", seal.to_str().unwrap(), "--dir", &ru_dir]);
    assert_eq!(code, 0, "{err}");

    // RU's authority starts over with new keys (a fresh `kpnode init`).
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let mut ru2 = TestNode::start(&rt, init_dir(&again, "RU", 0));
    let (bundle2, fp2) = ru2.bundle();
    let path = write_bundle(tmp.path(), "ru-new-identity.bundle", &bundle2);

    let (code, out) = peer_add(&inn.dir, &path, &fp2, &[]);
    assert_eq!(code, 2, "a new fingerprint without the flag must be refused: {out}");
    assert!(out.contains("--replace-identity"), "the refusal names the flag: {out}");
    let (s, v) = inn.api.post("/v1/peers", &json!({"bundle": bundle2, "fingerprint": fp2}).to_string());
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("replace_identity"), "{v}");

    let (code, out) = peer_add(&inn.dir, &path, &fp2, &["--replace-identity"]);
    assert_eq!(code, 0, "{out}");
    let (_, peers) = inn.api.get("/v1/peers");
    assert_eq!(peers[0]["fingerprint"], fp2.as_str(), "{peers}");

    // The certificate RU signed under its old identity still verifies, with the real CLI.
    ru2.stop(&rt);
    inn.stop(&rt);
    let (code, out, err) = kpnode(&["log", "verify", "--dir", inn.dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "log verify after an identity change: {out}{err}");
    let report = audit(&inn.dir);
    assert_eq!(report.received, 1, "{number}");

    // Offline, a bundle vouches for its own identity only: the certificate and its seal are
    // authentic by the old identity's bundle, and not by the new one, which says why.
    let kpc = tmp.path().join("cert.kpc");
    let inn_dir = inn.dir.root().to_str().unwrap().to_owned();
    let (code, _, err) =
        kpnode(&["cert", "export", &number, "--out", kpc.to_str().unwrap(), "--dir", &inn_dir]);
    assert_eq!(code, 0, "{err}");
    let old_path = write_bundle(tmp.path(), "ru-old-identity.bundle", &old_bundle);
    let (kpc, seal) = (kpc.to_str().unwrap(), seal.to_str().unwrap());
    let (code, out, err) = kpnode(&["verify", kpc, "--qr", seal, "--bundle", &old_path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Authentic"), "{out}");
    for args in [vec![kpc], vec!["--qr", seal], vec![kpc, "--qr", seal]] {
        let mut args: Vec<&str> = [&["verify"][..], &args].concat();
        args.extend(["--bundle", &path]);
        let (code, out, err) = kpnode(&args);
        assert_eq!(code, 2, "{args:?} must be refused by the new identity's bundle: {out}{err}");
        assert!(!out.contains("Authentic"), "{out}");
        assert!(err.contains("signed under an earlier identity of RU"), "{args:?}: {err}");
        assert!(err.contains("does not vouch for an earlier identity"), "{err}");
    }
}

#[test]
fn seventy_hostile_tls_rotations_leave_the_node_startable() {
    let Pair { rt, tmp: _tmp, ru, mut inn } = enrolled_pair(0, free_port());
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let t = now();

    // 70 TLS-only rotations, each with a valid ~62 KB certificate: together past the 4 MiB
    // a stored record may decode to.
    let (big_refused, small_accepted, small_refused) = rt.block_on(async {
        let mut raw = RawPeer::connect(inn.handle().peer_addr(), &ru_keys, RU).await.unwrap();
        let mut big_refused = Vec::new();
        for i in 0..70u32 {
            let key = TlsKeyPair::generate();
            let cert = big_certificate(&key, 62_000);
            let at = t.saturating_add_millis(i as i64);
            let doc = tls_rotation(&ru_keys, 1 + i, cert, None, at, at);
            if let Err(r) = deliver(&mut raw, &doc).await {
                big_refused.push(r);
            }
        }
        // Then 70 small, proven ones: only a day's worth are taken.
        let (mut accepted, mut refused) = (0u32, Vec::new());
        for i in 0..70u32 {
            let key = TlsKeyPair::generate();
            let cert = kp_keys::tlscert::self_signed(&key, RU).unwrap();
            let at = t.saturating_add_millis(1000 + i as i64);
            let doc = tls_rotation(&ru_keys, 1 + accepted, cert, Some(&key), at, at);
            match deliver(&mut raw, &doc).await {
                Ok(()) => accepted += 1,
                Err(r) => refused.push(r),
            }
        }
        (big_refused, accepted, refused)
    });
    assert_eq!(big_refused.len(), 70, "every oversized rotation is refused");
    assert!(
        big_refused
            .iter()
            .all(|(c, d)| *c == RejectCode::InvalidDocument && d.contains("bytes, more than the")),
        "{big_refused:?}"
    );
    assert_eq!(small_accepted as usize, kp_keys::history::MAX_ROTATIONS_PER_DAY);
    assert!(small_refused.iter().all(|(_, d)| d.contains("within 24 hours")), "{small_refused:?}");

    // The node starts again, serves, and still trusts RU.
    inn.stop(&rt);
    let inn = TestNode::start(&rt, inn.dir.clone());
    let (s, _) = inn.api.get("/healthz");
    assert_eq!(s, 200);
    let status = inn.api.status();
    assert_eq!(status["quarantined"], json!([]), "{status}");
    assert_eq!(key_counts(&inn.api, "RU").1, 1 + kp_keys::history::MAX_ROTATIONS_PER_DAY);
    wait_linked(&ru.api, inn.code);
}

#[test]
fn a_peer_record_that_cannot_be_loaded_quarantines_the_peer_not_the_node() {
    use kp_node::store::{Storage, Tree};
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let kz = TestNode::start(&rt, init_dir(tmp.path(), "KZ", 0));
    let mut inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", free_port()));
    enrol_pair(&ru, &inn);
    enrol_pair(&kz, &inn);
    inn.stop(&rt);
    {
        // RU's record as an earlier version let it grow: past the decode limit.
        let (store, _) = kp_node::store::SledStore::open(&inn.dir.store_dir(), 16).unwrap();
        let mut writes = kp_node::store::Writes::new();
        let mut oversized = vec![0u8; 5 << 20];
        oversized[..2].copy_from_slice(b"RU");
        oversized[2..10].copy_from_slice(&(5u64 << 20).to_be_bytes());
        writes.insert((Tree::Peers, b"RU".to_vec()), Some(oversized));
        store.commit(&writes).unwrap();
        store.flush().unwrap();
    }
    let inn = start_announced(&rt, inn.dir.clone());
    let (s, _) = inn.api.get("/healthz");
    assert_eq!(s, 200);
    let status = inn.api.status();
    assert_eq!(status["quarantined"][0]["participant"], "RU", "{status}");
    assert!(
        status["warnings"].to_string().contains("peer RU is quarantined"),
        "status names the quarantined peer: {status}"
    );
    wait_linked(&inn.api, kz.code);
    let (code, out, err) = kpnode(&["status", "--dir", inn.dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("peer RU is quarantined"), "{out}");

    // A current bundle from RU replaces the record.
    let (bundle, fp) = ru.bundle();
    inn.api.enrol(&bundle, &fp);
    wait_until(Duration::from_secs(10), "RU is no longer quarantined", || {
        inn.api.status()["quarantined"] == json!([])
    });
    wait_linked(&inn.api, RU);
}

#[test]
fn a_backdated_rotation_is_refused() {
    let Pair { rt, tmp: _tmp, ru, inn } = enrolled_pair(0, 0);
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    // Takes effect just after RU's key was made, but signed now: it would disown everything
    // RU signed in between.
    let effective = ru_keys.history.root().valid_from.saturating_add_millis(1);
    std::thread::sleep(Duration::from_millis(5));
    let signed = now();
    assert!(signed > effective);
    let new_key = kp_keys::SigningKeyPair::generate();
    let doc = signing_rotation(&ru_keys, &new_key, effective, signed);
    let reply = send_once(&rt, &inn, &ru_keys, &doc);
    assert_refused(
        reply,
        RejectCode::InvalidDocument,
        "before it was signed",
        "a backdated rotation must be refused",
    );
    assert_eq!(key_counts(&inn.api, "RU").0, 1);
}

/// The backdating above with `signed_at` backdated too (review High 1): the statement is
/// consistent in itself (effective at its signing time, inside the current key's window), but
/// IN already stores a certificate RU signed with the key it retires after that: refused on
/// the link and in a bundle, and IN's log still verifies.
#[test]
fn a_rotation_backdated_with_its_signing_time_cannot_disown_what_was_received() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (ru, mut inn) = linked(&rt, tmp.path());
    ru.api.submit(&certificate_json("RU", "IN", None, 1));
    wait_until(Duration::from_secs(20), "IN received RU's certificate", || {
        inn.api.count("in", "received") == 1
    });
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let backdated = ru_keys.history.root().valid_from.saturating_add_millis(1);
    let new_key = kp_keys::SigningKeyPair::generate();
    let doc = signing_rotation(&ru_keys, &new_key, backdated, backdated);
    let reply = send_once(&rt, &inn, &ru_keys, &doc);
    assert_refused(
        reply,
        RejectCode::InvalidDocument,
        "cannot disown what was already received",
        "a rotation disowning a stored certificate must be refused",
    );
    assert_eq!(key_counts(&inn.api, "RU").0, 1);

    // The same statement in a bundle RU's operator sends.
    let bundle = Bundle {
        format: kp_keys::bundle::BUNDLE_FORMAT,
        participant: RU,
        authority: "Authority".parse().unwrap(),
        endpoints: vec!["127.0.0.1:9".into()],
        root_key: ru_keys.history.root().public_key.to_bytes(),
        root_created_at: ru_keys.history.root().valid_from,
        root_tls_certificate: ru_keys.history.tls_keys()[0].certificate_der.clone(),
        rotations: vec![doc],
        created_at: now(),
    }
    .sign(&new_key)
    .unwrap();
    let body =
        json!({"bundle": bundle.to_armored(), "fingerprint": bundle.fingerprint.to_string()}).to_string();
    let (s, v) = inn.api.post("/v1/peers", &body);
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("would disown what was already received"), "{v}");
    assert_eq!(key_counts(&inn.api, "RU").0, 1);

    inn.stop(&rt);
    let (code, out, err) = kpnode(&["log", "verify", "--dir", inn.dir.root().to_str().unwrap()]);
    assert_eq!(code, 0, "IN's log still verifies: {out}{err}");
}

#[test]
fn a_new_tls_key_without_proof_of_possession_is_refused() {
    let Pair { rt, tmp: _tmp, ru, inn } = enrolled_pair(0, 0);
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let key = TlsKeyPair::generate();
    let cert = kp_keys::tlscert::self_signed(&key, RU).unwrap();
    // Signed now, and backdated to just after RU's key was made.
    let mut docs = Vec::new();
    for t in [now(), ru_keys.history.root().valid_from.saturating_add_millis(1)] {
        docs.push(tls_rotation(&ru_keys, 1, cert.clone(), None, t, t));
        // A proof made by another key than the one in the certificate.
        docs.push(tls_rotation(&ru_keys, 1, cert.clone(), Some(&TlsKeyPair::generate()), t, t));
    }
    let replies = rt.block_on(async {
        let mut raw = RawPeer::connect(inn.handle().peer_addr(), &ru_keys, RU).await.unwrap();
        let mut replies = Vec::new();
        for d in &docs {
            replies.push(deliver(&mut raw, d).await);
        }
        replies
    });
    for r in replies {
        assert_refused(
            r,
            RejectCode::InvalidDocument,
            "did not sign it",
            "a TLS key without proof of possession must be refused",
        );
    }
    assert_eq!(key_counts(&inn.api, "RU").1, 1);
}

#[test]
fn a_tls_key_bound_to_another_participant_is_refused() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let kz = TestNode::start(&rt, init_dir(tmp.path(), "KZ", 0));
    let inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", 0));
    enrol_pair(&ru, &inn);
    enrol_pair(&kz, &inn);
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let kz_keys = NodeKeys::load(&kz.dir.keys_dir()).unwrap();

    // RU rotates to KZ's TLS key (proved: suppose RU got hold of it), signed now and
    // backdated to just after RU's key was made.
    for t in [now(), ru_keys.history.root().valid_from.saturating_add_millis(1)] {
        let mut body = KeyRotation {
            participant: RU,
            sequence: 1,
            previous_key: ru_keys.signing.key_id(),
            new_signing_key: None,
            new_tls_certificate: Some(kz_keys.tls_certificate.clone()),
            effective_from: t,
            tls_possession: None,
        };
        kz_keys.tls.prove_possession(&mut body).unwrap();
        let doc =
            SignedDocument::sign(&body, RU, ru_keys.signing.file().expect("a file key").signing_key(), t);
        let reply = send_once(&rt, &inn, &ru_keys, &doc);
        let (_, detail) = reply.expect_err("a rotation to another participant's TLS key must be refused");
        assert!(detail.contains("already bound to KZ"), "{detail}");
        assert_eq!(key_counts(&inn.api, "RU").1, 1);
    }

    // A new participant's bundle whose TLS certificate is KZ's.
    let ae = init_dir(tmp.path(), "AE", 0);
    let ae_keys = NodeKeys::load(&ae.keys_dir()).unwrap();
    let bundle = Bundle {
        format: kp_keys::bundle::BUNDLE_FORMAT,
        participant: "AE".parse().unwrap(),
        authority: "Impostor".parse().unwrap(),
        endpoints: vec!["127.0.0.1:9".into()],
        root_key: ae_keys.signing.verifying_key().to_bytes(),
        root_created_at: ae_keys.history.root().valid_from,
        root_tls_certificate: kz_keys.tls_certificate.clone(),
        rotations: Vec::new(),
        created_at: now(),
    }
    .sign_unchecked_armored(ae_keys.signing.file().expect("a file key"));
    let fingerprint = kp_keys::Fingerprint::of(&ae_keys.signing.verifying_key());
    let body = json!({"bundle": bundle, "fingerprint": fingerprint.to_string()}).to_string();
    let (s, v) = inn.api.post("/v1/peers", &body);
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("must name AE and be signed by its own key"), "{v}");
    let (_, peers) = inn.api.get("/v1/peers");
    assert_eq!(peers.as_array().unwrap().len(), 2, "{peers}");
}

/// This node's own rotations obey the bounds its partners apply: the 9th within 24 hours is
/// refused as a conflict (API 409 `rotation_refused`, CLI exit 2) that changes nothing, not
/// answered as an internal error.
#[test]
fn a_ninth_own_rotation_in_a_day_is_refused_as_a_conflict() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let mut ru = start_announced(&rt, init_dir(tmp.path(), "RU", 0));
    for i in 0..8 {
        let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
        assert_eq!(s, 200, "rotation {i}: {v}");
    }
    let key = ru.api.status()["signing_key"].as_str().unwrap().to_owned();
    let (s, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "rotation_refused", "{v}");
    assert!(v["message"].as_str().unwrap().contains("within 24 hours"), "{v}");
    let dir = ru.dir.root().to_str().unwrap().to_owned();
    let (code, out, err) = kpnode(&["keys", "rotate", "--tls", "--dir", &dir]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("at most 8 are accepted") && err.contains("nothing changed"), "{err}");
    assert_eq!(ru.api.status()["signing_key"], key.as_str(), "the refused rotations changed nothing");
    let (_, keys) = ru.api.get("/v1/keys");
    assert_eq!(keys["own"]["signing"].as_array().map(Vec::len), Some(9), "{keys}");
    ru.stop(&rt);
    // And the node starts again on what it holds.
    let mut again = start_announced(&rt, ru.dir.clone());
    assert_eq!(again.api.status()["signing_key"], key.as_str());
    again.stop(&rt);
}

/// An impostor enrolled *first* with another participant's public TLS
/// certificate (as its root certificate, or in a format-1 rotation without proof of
/// possession) would bind that key to itself, and the real owner's enrolment would then be
/// refused as taking it. Both bundles are refused; the owner enrols.
#[test]
fn a_bundle_cannot_bind_another_participants_tls_certificate_before_it_is_enrolled() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let kz = TestNode::start(&rt, init_dir(tmp.path(), "KZ", 0));
    let inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", 0));
    let kz_keys = NodeKeys::load(&kz.dir.keys_dir()).unwrap();
    let ae = init_dir(tmp.path(), "AE", 0);
    let ae_keys = NodeKeys::load(&ae.keys_dir()).unwrap();
    let impostor = |root_tls_certificate: Vec<u8>, rotations: Vec<SignedDocument>| {
        let armored = Bundle {
            format: kp_keys::bundle::BUNDLE_FORMAT,
            participant: "AE".parse().unwrap(),
            authority: "Impostor".parse().unwrap(),
            endpoints: vec!["127.0.0.1:9".into()],
            root_key: ae_keys.signing.verifying_key().to_bytes(),
            root_created_at: ae_keys.history.root().valid_from,
            root_tls_certificate,
            rotations,
            created_at: now(),
        }
        .sign_unchecked_armored(ae_keys.signing.file().expect("a file key"));
        let fingerprint = kp_keys::Fingerprint::of(&ae_keys.signing.verifying_key());
        json!({"bundle": armored, "fingerprint": fingerprint.to_string()}).to_string()
    };
    // KZ's certificate as the root certificate.
    let (s, v) = inn.api.post("/v1/peers", &impostor(kz_keys.tls_certificate.clone(), Vec::new()));
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("must name AE and be signed by its own key"), "{v}");
    // AE's own root certificate, then a format-1 rotation (no proof) to KZ's, signed now and
    // backdated to just after AE's key was made.
    for t in [now(), ae_keys.history.root().valid_from.saturating_add_millis(1)] {
        let rotation = tls_rotation(&ae_keys, 1, kz_keys.tls_certificate.clone(), None, t, t);
        let (s, v) = inn.api.post("/v1/peers", &impostor(ae_keys.tls_certificate.clone(), vec![rotation]));
        assert_eq!(s, 422, "{v}");
        assert!(v.to_string().contains("without proof that AE holds it"), "{v}");
    }
    let (_, peers) = inn.api.get("/v1/peers");
    assert_eq!(peers, json!([]), "nothing was enrolled");
    // KZ, the key's owner, enrols.
    enrol_pair(&kz, &inn);
    wait_linked(&inn.api, kz.code);
}

/// The per-day bound counts `effective_from`, which the signer chooses: 128
/// rotations dated a day apart in the future would all pass in one burst. A rotation on the
/// wire must take effect by now (within the clock tolerance).
#[test]
fn a_rotation_taking_effect_in_the_future_is_refused() {
    let Pair { rt, tmp: _tmp, ru, inn } = enrolled_pair(0, 0);
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    const DAY: i64 = 86_400_000;
    let replies = rt.block_on(async {
        let mut raw = RawPeer::connect(inn.handle().peer_addr(), &ru_keys, RU).await.unwrap();
        let mut replies = Vec::new();
        // Signed now, and backdated to just after RU's key was made.
        for signed in [now(), ru_keys.history.root().valid_from.saturating_add_millis(1)] {
            for i in 1..=3i64 {
                let key = TlsKeyPair::generate();
                let cert = kp_keys::tlscert::self_signed(&key, RU).unwrap();
                let doc =
                    tls_rotation(&ru_keys, 1, cert, Some(&key), signed, now().saturating_add_millis(i * DAY));
                replies.push(deliver(&mut raw, &doc).await);
            }
        }
        replies
    });
    for r in replies {
        assert_refused(
            r,
            RejectCode::ClockSkew,
            "in the future for this node",
            "a rotation taking effect in the future must be refused",
        );
    }
    assert_eq!(key_counts(&inn.api, "RU").1, 1);
}
