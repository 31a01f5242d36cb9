//! Property-driven fuzzing of everything that reads untrusted input, run in CI: the frame
//! decoder, the signed-document decoder, certificate JSON, and the armored files (bundles
//! aside, which kp-keys covers): signed certificates, participant lists and QR seals.
//!
//! Inputs are random bytes and, more usefully, valid inputs mutated byte by byte, so that
//! the cases reach deep into the parsers. The property is always the same: an answer (a
//! value or an error), never a panic, and a value only when re-encoding gives it back. The
//! coverage-guided fuzzers in `fuzz/` (cargo-fuzz) run the same entry points for as long as
//! one likes; see RELIABILITY.md.

use kp_protocol::frame::{decode_frame, decode_frame_with_id, DEFAULT_MAX_FRAME_BYTES};
use kp_protocol::Body;
use kp_protocol::{
    AnyParticipant, CertificateDraft, Frame, ParticipantCode, SignedDocument, ValidationContext,
};
use proptest::prelude::*;

const FIXTURE: &str = include_str!("fixtures/certificate.json");

fn ctx() -> ValidationContext<'static> {
    ValidationContext {
        today: "2026-11-28".parse().unwrap(),
        max_validity_days: Some(60),
        participants: &AnyParticipant,
        exporter: Some(ParticipantCode::from_static("RU")),
        importer: None,
    }
}

fn signed() -> SignedDocument {
    let draft = CertificateDraft::from_json(FIXTURE, &ctx()).unwrap();
    let cert = draft.into_certificate(|| unreachable!());
    let key = kp_protocol::ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    SignedDocument::sign(
        &cert,
        "RU".parse().unwrap(),
        &key,
        kp_protocol::Timestamp::from_unix_millis(1_795_000_000_000),
    )
}

/// Up to `n` byte changes (overwrite, insert, delete) at random places.
fn mutate(base: Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) -> Vec<u8> {
    let mut b = base;
    for (at, op, value) in edits {
        if b.is_empty() {
            b.push(value);
            continue;
        }
        let i = at.index(b.len());
        match op % 3 {
            0 => b[i] = value,
            1 => b.insert(i, value),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn certificate_json_never_panics_on_mutations(e in edits()) {
        let bytes = mutate(FIXTURE.as_bytes().to_vec(), e);
        if let Ok(draft) = CertificateDraft::from_json_bytes(&bytes, &ctx()) {
            // Whatever is accepted is a valid certificate that encodes and decodes as itself.
            let cert = draft.into_certificate(|| "RU-2026-000001".parse().unwrap());
            prop_assert_eq!(kp_protocol::Certificate::from_body_bytes(&cert.to_body_bytes()).unwrap(), cert);
        }
    }

    #[test]
    fn certificate_json_never_panics_on_random_text(s in "\\PC{0,400}") {
        let _ = CertificateDraft::from_json(&s, &ctx());
    }

    #[test]
    fn json_shaped_garbage_is_refused_with_problems(
        keys in prop::collection::vec("[a-z_]{1,12}", 0..8),
        values in prop::collection::vec(prop_oneof![Just("null".to_owned()), Just("[]".to_owned()), Just("{}".to_owned()), "\"[ -~]{0,20}\"", "-?[0-9]{1,25}(\\.[0-9]{1,5})?"], 0..8),
    ) {
        let body: Vec<String> = keys.iter().zip(values.iter()).map(|(k, v)| format!("\"{k}\": {v}")).collect();
        let text = format!("{{{}}}", body.join(", "));
        let r = CertificateDraft::from_json(&text, &ctx());
        prop_assert!(r.is_err(), "{} was accepted", text);
        prop_assert!(!r.unwrap_err().0.is_empty());
    }

    #[test]
    fn signed_documents_never_panic_on_mutations(e in edits()) {
        let bytes = mutate(signed().to_bytes(), e);
        if let Ok(doc) = SignedDocument::from_bytes(&bytes) {
            prop_assert_eq!(SignedDocument::from_bytes(&doc.to_bytes()).unwrap(), doc.clone());
            let _ = doc.body::<kp_protocol::Certificate>();
        }
    }

    #[test]
    fn frames_never_panic_on_mutations(e in edits()) {
        let doc = signed();
        let mut buf = Vec::new();
        kp_protocol::frame::encode_frame(&Frame::Deliver { message_id: doc.message_id(), document: doc }, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        let bytes = mutate(buf, e);
        let plain = decode_frame(&bytes, DEFAULT_MAX_FRAME_BYTES);
        let with_id = decode_frame_with_id(&bytes, DEFAULT_MAX_FRAME_BYTES);
        // Both readers agree on what the bytes are.
        prop_assert_eq!(plain.as_ref().map(|o| o.as_ref().map(|(f, n)| (format!("{f:?}"), *n))).ok(),
            with_id.as_ref().map(|o| o.as_ref().map(|(f, n, _)| (format!("{f:?}"), *n))).ok());
    }

    #[test]
    fn armored_files_never_panic_on_mutations(e in edits(), which in 0u8..3) {
        let doc = signed();
        let cert: kp_protocol::Certificate = doc.body().unwrap();
        let text = match which {
            0 => kp_protocol::portable::to_armored(&doc, &cert),
            1 => {
                let seal = kp_protocol::seal::CertificateSeal::of(&doc, &cert);
                let key = kp_protocol::ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
                let s = SignedDocument::sign(&seal, "RU".parse().unwrap(), &key, doc.signed_at);
                kp_protocol::seal::to_qr_text(&s)
            }
            _ => {
                let list = kp_protocol::ParticipantList { issued_on: "2026-11-28".parse().unwrap(), entries: Vec::new() };
                let key = kp_protocol::ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
                let s = SignedDocument::sign(&list, "RU".parse().unwrap(), &key, doc.signed_at);
                kp_protocol::registry::list_to_armored(&s, &list)
            }
        };
        let bytes = mutate(text.into_bytes(), e);
        let text = String::from_utf8_lossy(&bytes);
        let _ = kp_protocol::portable::from_armored(&text);
        let _ = kp_protocol::seal::from_qr_text(&text);
        let _ = kp_protocol::registry::list_from_armored(&text);
    }
}
