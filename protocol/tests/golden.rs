//! Golden encodings: any change to the certificate or signed-document format shows up as a
//! diff of these fixtures. After a deliberate format change, regenerate them with
//! `KPNODE_UPDATE_GOLDEN=1 cargo test -p kp-protocol --test golden` and commit them together
//! with the change (and a note on compatibility).

use std::path::PathBuf;

use kp_protocol::ed25519_dalek::SigningKey;
use kp_protocol::{
    codec, AnyParticipant, Body, Certificate, CertificateDraft, ParticipantCode, SignedDocument, Timestamp,
    ValidationContext,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn to_hex_lines(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = String::new();
    for chunk in hex.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out
}

fn check(name: &str, bytes: &[u8]) {
    let path = fixture(name);
    let actual = to_hex_lines(bytes);
    if std::env::var_os("KPNODE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KPNODE_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{name} changed: the encoding format is different. If that is deliberate, regenerate \
         with KPNODE_UPDATE_GOLDEN=1 and commit the fixture with the change."
    );
}

pub fn sample_certificate() -> Certificate {
    let ctx = ValidationContext {
        today: "2026-11-28".parse().unwrap(),
        max_validity_days: Some(60),
        participants: &AnyParticipant,
        exporter: None,
        importer: None,
    };
    CertificateDraft::from_json(include_str!("fixtures/certificate.json"), &ctx)
        .unwrap()
        .into_certificate(|| unreachable!("the fixture has a number"))
}

#[test]
fn certificate_encoding_is_stable() {
    let cert = sample_certificate();
    let bytes = cert.to_body_bytes();
    check("certificate.bincode.hex", &bytes);
    assert_eq!(Certificate::from_body_bytes(&bytes).unwrap(), cert);
}

/// A certificate using every element of format 2 (replacement, a union's member state,
/// licences, port of entry, transport, container seals).
pub fn sample_certificate_v2() -> Certificate {
    let ctx = ValidationContext {
        today: "2026-11-28".parse().unwrap(),
        max_validity_days: Some(60),
        participants: &AnyParticipant,
        exporter: None,
        importer: None,
    };
    let cert = CertificateDraft::from_json(include_str!("fixtures/certificate-v2.json"), &ctx)
        .unwrap()
        .into_certificate(|| unreachable!("the fixture has a number"));
    assert!(cert.content.replaces.is_some() && cert.content.importing_member.is_some());
    cert
}

#[test]
fn certificate_format_2_encoding_is_stable() {
    let cert = sample_certificate_v2();
    let bytes = cert.to_body_bytes();
    check("certificate-v2.bincode.hex", &bytes);
    assert_eq!(Certificate::from_body_bytes(&bytes).unwrap(), cert);
    let key = SigningKey::from_bytes(&[7; 32]);
    let doc = SignedDocument::sign(
        &cert,
        ParticipantCode::from_static("RU"),
        &key,
        Timestamp::from_unix_millis(1_795_000_000_000),
    );
    check("signed-certificate-v2.bincode.hex", &doc.to_bytes());
    let back = SignedDocument::from_bytes(&doc.to_bytes()).unwrap();
    back.verify_signature(&key.verifying_key()).unwrap();
    assert_eq!(back.body::<Certificate>().unwrap(), cert);
}

#[test]
fn a_format_2_certificate_is_refused_by_a_reader_of_format_1_only() {
    // What kpnode before format 2 did with a certificate's bytes: decode exactly format 1.
    #[derive(bincode::Decode)]
    #[allow(dead_code)]
    struct Format1 {
        number: kp_protocol::CertificateNumber,
        exporting: ParticipantCode,
        importing: ParticipantCode,
        authority: kp_protocol::Text,
        exporter: (kp_protocol::Text, kp_protocol::Text),
        importer: (kp_protocol::Text, kp_protocol::Text),
        issued_on: kp_protocol::Date,
        expires_on: kp_protocol::Date,
        parcels: Vec<kp_protocol::Parcel>,
        shipment: Option<(Option<kp_protocol::Text>, Option<kp_protocol::Text>)>,
        declarations: Vec<kp_protocol::Declaration>,
        remarks: Option<kp_protocol::LongText>,
    }
    assert!(codec::decode::<Format1>(&sample_certificate().to_body_bytes()).is_ok());
    assert!(matches!(
        codec::decode::<Format1>(&sample_certificate_v2().to_body_bytes()),
        Err(codec::CodecError::TrailingBytes(_))
    ));
}

#[test]
fn signed_document_encoding_is_stable() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let doc = SignedDocument::sign(
        &sample_certificate(),
        ParticipantCode::from_static("RU"),
        &key,
        Timestamp::from_unix_millis(1_795_000_000_000),
    );
    let bytes = doc.to_bytes();
    check("signed-certificate.bincode.hex", &bytes);
    let back = SignedDocument::from_bytes(&bytes).unwrap();
    back.verify_signature(&key.verifying_key()).unwrap();
    assert_eq!(back.body::<Certificate>().unwrap(), sample_certificate());
    // The message id is part of the format too: resends must keep it.
    let id_path = fixture("signed-certificate.message-id");
    if std::env::var_os("KPNODE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&id_path, format!("{}\n", doc.message_id())).unwrap();
    }
    let expected = std::fs::read_to_string(&id_path).unwrap();
    assert_eq!(expected.trim(), doc.message_id().to_hex());
}

/// A key rotation with a new signing key and a new TLS certificate, as `tls` proves it.
fn sample_rotation(prove_tls: bool) -> kp_protocol::KeyRotation {
    let old = SigningKey::from_bytes(&[7; 32]);
    let new = SigningKey::from_bytes(&[8; 32]);
    let tls = SigningKey::from_bytes(&[9; 32]);
    let mut r = kp_protocol::KeyRotation::new_with_signing_key(
        ParticipantCode::from_static("RU"),
        3,
        kp_protocol::KeyId::of(&old.verifying_key()),
        &new,
        Some(b"DER of the new TLS certificate".to_vec()),
        Timestamp::from_unix_millis(1_795_000_000_000),
    );
    if prove_tls {
        r.prove_tls_possession(&tls);
    }
    r
}

#[test]
fn key_rotation_format_1_still_decodes() {
    // Format 1 is what kpnode wrote before the TLS proof of possession: the derived encoding
    // of these six fields, in this order. Histories and bundles hold such statements.
    let r = sample_rotation(false);
    let v1_layout = codec::encode(&(
        r.participant,
        r.sequence,
        r.previous_key,
        r.new_signing_key.clone(),
        r.new_tls_certificate.clone(),
        r.effective_from,
    ));
    check("key-rotation-v1.bincode.hex", &v1_layout);
    let back = codec::decode::<kp_protocol::KeyRotation>(&v1_layout).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.tls_possession, None);
    assert_eq!(codec::encode(&back), v1_layout, "a format-1 statement re-encodes to the same bytes");
    back.verified_new_key().unwrap();
}

#[test]
fn key_rotation_format_2_encoding_is_stable() {
    let r = sample_rotation(true);
    let bytes = codec::encode(&r);
    check("key-rotation-v2.bincode.hex", &bytes);
    let back = codec::decode::<kp_protocol::KeyRotation>(&bytes).unwrap();
    assert_eq!(back, r);
    back.verified_new_key().unwrap();
    back.verify_tls_possession(&SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes()).unwrap();
}

/// A resolution is the newest document kind: it was appended at the end of `DocumentKind`, so
/// every earlier kind keeps its tag and documents written before it still decode.
#[test]
fn resolution_encoding_is_stable_and_earlier_kinds_keep_their_tags() {
    use kp_protocol::{DocumentKind, Resolution};
    let earlier = [
        DocumentKind::Certificate,
        DocumentKind::Receipt,
        DocumentKind::ImportConfirmation,
        DocumentKind::Void,
        DocumentKind::KeyRotation,
        DocumentKind::ParticipantChange,
        DocumentKind::ParticipantList,
        DocumentKind::CertificateSeal,
        DocumentKind::ParticipantListV2,
    ];
    for (tag, kind) in earlier.iter().enumerate() {
        assert_eq!(codec::encode(kind), (tag as u32).to_be_bytes().to_vec(), "{kind}");
    }
    assert_eq!(codec::encode(&DocumentKind::Resolution), 9u32.to_be_bytes().to_vec());

    let key = SigningKey::from_bytes(&[7; 32]);
    let cert = SignedDocument::sign(
        &sample_certificate(),
        ParticipantCode::from_static("RU"),
        &key,
        Timestamp::from_unix_millis(1_795_000_000_000),
    );
    let resolution = Resolution {
        certificate: sample_certificate().number,
        certificate_id: cert.message_id(),
        note: "Recounted at Mumbai customs: 2 carats of dust lost in transit".parse().unwrap(),
        resolved_by: "A. Petrova, Gokhran".parse().unwrap(),
    };
    let doc = SignedDocument::sign(
        &resolution,
        ParticipantCode::from_static("RU"),
        &key,
        Timestamp::from_unix_millis(1_795_000_100_000),
    );
    let bytes = doc.to_bytes();
    check("signed-resolution.bincode.hex", &bytes);
    let back = SignedDocument::from_bytes(&bytes).unwrap();
    back.verify_signature(&key.verifying_key()).unwrap();
    assert_eq!(back.kind, DocumentKind::Resolution);
    assert_eq!(back.body::<Resolution>().unwrap(), resolution);
}

/// A peer change is the newest document kind, appended after `Resolution`: every earlier kind
/// keeps its tag. It is only ever in this node's own log, and that log must stay readable.
#[test]
fn peer_change_encoding_is_stable() {
    use kp_protocol::{DocumentKind, PeerAction, PeerChange};
    assert_eq!(codec::encode(&DocumentKind::PeerChange), 10u32.to_be_bytes().to_vec());
    let key = SigningKey::from_bytes(&[7; 32]);
    let change = PeerChange {
        participant: ParticipantCode::from_static("IN"),
        action: PeerAction::IdentityReplaced,
        fingerprint: "7KQ2-9XMA-3F0D-HN5R".parse().unwrap(),
        bundle: Some(kp_protocol::Digest::of_parts(&[b"a bundle"])),
    };
    let doc = SignedDocument::sign(
        &change,
        ParticipantCode::from_static("RU"),
        &key,
        Timestamp::from_unix_millis(1_795_000_200_000),
    );
    let bytes = doc.to_bytes();
    check("signed-peer-change.bincode.hex", &bytes);
    let back = SignedDocument::from_bytes(&bytes).unwrap();
    back.verify_signature(&key.verifying_key()).unwrap();
    assert_eq!(back.kind, DocumentKind::PeerChange);
    assert_eq!(back.body::<PeerChange>().unwrap(), change);
    for action in
        [PeerAction::Enrolled, PeerAction::Updated, PeerAction::IdentityReplaced, PeerAction::Removed]
    {
        let tag = action as u32;
        assert_eq!(codec::encode(&action), tag.to_be_bytes().to_vec(), "{action:?}");
    }
}
