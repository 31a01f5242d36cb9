//! Who gets in, and what is refused: unenrolled TLS clients, documents signed by someone
//! other than the peer at the end of the link, API calls without the token, invalid
//! certificates.

use std::time::Duration;

use kp_keys::NodeKeys;
use kp_protocol::{Certificate, CertificateDraft, Frame, RejectCode, ValidationContext};
use kp_tests::raw::{admission, rejected, sign_by_hand, Admission, RawPeer};
use kp_tests::*;

fn certificate(json: &str) -> Certificate {
    let ctx = ValidationContext {
        today: kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date(),
        max_validity_days: Some(60),
        participants: &kp_protocol::AnyParticipant,
        exporter: None,
        importer: None,
    };
    CertificateDraft::from_json(json, &ctx).unwrap().into_certificate(|| unreachable!())
}

#[test]
fn strangers_and_forgeries_are_refused_and_nothing_is_stored() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", 0));
    let inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", 0));
    let kz_dir = init_dir(tmp.path(), "KZ", 0);
    let kz = TestNode::start(&rt, kz_dir.clone());
    enrol_pair(&ru, &inn);
    enrol_pair(&kz, &inn);
    let in_addr = inn.handle().peer_addr();

    // An unenrolled node (fresh keys of a participant IN never enrolled) is refused at the
    // TLS handshake: a TLS alert (not silence, not a timeout), counted, and logged with the
    // digest of its key that `kpnode keys` shows on the stranger's side.
    let stranger = NodeKeys::load(&init_dir(tmp.path(), "AE", 0).keys_dir()).unwrap();
    let refused_before = metric(&inn.api, "kpnode_handshakes_refused_total");
    let answer = rt.block_on(admission(in_addr, &stranger, "AE".parse().unwrap(), Duration::from_secs(10)));
    match &answer {
        Admission::Refused(detail) => assert!(detail.contains("alert"), "refused, but not by TLS: {detail}"),
        other => panic!("a stranger's TLS key must be refused at the handshake, got {other:?}"),
    }
    wait_until(Duration::from_secs(5), "the refusal is counted", || {
        metric(&inn.api, "kpnode_handshakes_refused_total") >= refused_before + 1.0
    });
    let stranger_key = kp_keys::tlscert::public_key(&stranger.tls_certificate).unwrap();
    let digest = format!("sha256:{}", kp_protocol::Digest::of(&stranger_key).short());
    wait_logged(&["refused a TLS peer", &format!("tls_key={digest}"), "not a key of any peer ever enrolled"]);

    // RU (enrolled) delivers a certificate that KZ signed: refused as WrongSigner.
    let kz_keys = NodeKeys::load(&kz_dir.keys_dir()).unwrap();
    let cert = certificate(&certificate_json("KZ", "IN", Some("KZ-2026-000001"), 1));
    let doc = sign_by_hand(&cert, "KZ", &kz_keys, kp_node::clock::Clock::now(&kp_node::clock::SystemClock));
    let ru_keys = NodeKeys::load(&ru.dir.keys_dir()).unwrap();
    let reply = rt.block_on(async {
        let mut raw = RawPeer::connect(in_addr, &ru_keys, "RU".parse().unwrap()).await.unwrap();
        raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
        raw.recv(Duration::from_secs(10)).await.unwrap()
    });
    let detail = rejected(&reply, RejectCode::WrongSigner);
    assert!(detail.contains("signed by KZ") && detail.contains("belongs to RU"), "{detail}");
    // The same document straight from KZ is accepted: the refusal was about the link.
    let reply = rt.block_on(async {
        let mut raw = RawPeer::connect(in_addr, &kz_keys, "KZ".parse().unwrap()).await.unwrap();
        raw.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await.unwrap();
        raw.recv(Duration::from_secs(10)).await.unwrap()
    });
    assert!(matches!(reply, Some(Frame::Receipt { .. })), "{reply:?}");
    let inbound = inn.api.certificates("in");
    assert_eq!(inbound.len(), 1, "only KZ's own delivery is stored");
    assert_eq!(inbound[0]["peer"], "KZ");

    // A Hello that names another participant than the TLS key: the connection is closed
    // without a Hello in answer, counted as a protocol error, and logged naming both.
    let errors_before = metric(&inn.api, "kpnode_protocol_errors_total");
    let answer = rt.block_on(admission(in_addr, &ru_keys, "KZ".parse().unwrap(), Duration::from_secs(10)));
    assert!(matches!(answer, Admission::Refused(_)), "a mismatched Hello must be refused, got {answer:?}");
    wait_until(Duration::from_secs(5), "the mismatched Hello is counted", || {
        metric(&inn.api, "kpnode_protocol_errors_total") >= errors_before + 1.0
    });
    wait_logged(&["closed the connection", "Hello says KZ, but the TLS key belongs to RU"]);

    // The API: no token, a wrong token.
    let no_token = Api::new(inn.handle().api_addr(), "");
    let (s, v) = no_token.get("/v1/certificates");
    assert_eq!(s, 401, "{v}");
    let wrong = Api::new(inn.handle().api_addr(), &"0".repeat(64));
    assert_eq!(wrong.post("/v1/certificates", "{}").0, 401);
    // /healthz needs none.
    assert_eq!(no_token.get("/healthz").0, 200);

    // An invalid certificate: 422 listing every problem.
    let mut bad: serde_json::Value = serde_json::from_str(&certificate_json("IN", "RU", None, 1)).unwrap();
    bad["parcels"][0]["hs_code"] = "7104.21".into();
    bad["parcels"][1]["carats"] = "-3".into();
    bad["importer"]["name"] = "".into();
    bad["colour"] = "D".into();
    let (s, v) = inn.api.post("/v1/certificates", &bad.to_string());
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"], "invalid_certificate");
    let fields: Vec<&str> =
        v["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    for f in ["parcels[0].hs_code", "parcels[1].carats", "importer.name", "colour"] {
        assert!(fields.contains(&f), "{f} missing: {v}");
    }
    drop((ru, kz));
}
