//! Keys on disk, bundles and key history, as a partner and an auditor rely on them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use kp_keys::{BundleError, KeyError, NodeKeys, VerifiedBundle};
use kp_protocol::{ParticipantCode, SignedDocument, Timestamp, Void};

const RU: ParticipantCode = ParticipantCode::from_static("RU");

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn void() -> Void {
    Void {
        certificate: "RU-2026-000001".parse().unwrap(),
        certificate_id: kp_protocol::Digest::of(b"x"),
        reason: "issued in error".parse().unwrap(),
    }
}

#[test]
fn created_keys_load_back_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let keys = NodeKeys::create(&keys_dir, RU, t(1000)).unwrap();
    let mode = |name: &str| fs::metadata(keys_dir.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("."), 0o700);
    assert_eq!(mode("signing.key.pem"), 0o600);
    assert_eq!(mode("tls.key.pem"), 0o600);
    assert_eq!(mode("history.bin"), 0o600);
    let loaded = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(loaded.signing.key_id(), keys.signing.key_id());
    assert_eq!(loaded.fingerprint(), keys.fingerprint());
    assert!(matches!(NodeKeys::create(&keys_dir, RU, t(1)), Err(KeyError::AlreadyExists(_))));
    // No secret in Debug output.
    let dbg = format!("{loaded:?}");
    let pem = loaded.signing.file().expect("a file key").to_pkcs8_pem();
    let b64_line = pem.lines().nth(1).unwrap();
    assert!(!dbg.contains(b64_line), "{dbg}");
    let secret: String = loaded
        .signing
        .file()
        .expect("a file key")
        .signing_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!dbg.contains(&secret));
    // Nor the secret bytes as Debug prints a byte array.
    let secret_debug = format!("{:?}", loaded.signing.file().expect("a file key").signing_key().to_bytes());
    assert!(!dbg.contains(&secret_debug[1..secret_debug.len() - 1]), "{dbg}");
}

#[test]
fn missing_damaged_or_exposed_key_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    NodeKeys::create(&keys_dir, RU, t(1000)).unwrap();
    let signing = keys_dir.join("signing.key.pem");

    fs::set_permissions(&signing, fs::Permissions::from_mode(0o644)).unwrap();
    let err = NodeKeys::load(&keys_dir).unwrap_err().to_string();
    assert!(err.contains("signing.key.pem") && err.contains("chmod 600"), "{err}");
    fs::set_permissions(&signing, fs::Permissions::from_mode(0o600)).unwrap();

    let original = fs::read(&signing).unwrap();
    fs::write(&signing, b"-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    let err = NodeKeys::load(&keys_dir).unwrap_err().to_string();
    assert!(err.contains("signing.key.pem") && err.contains("damaged"), "{err}");

    // Another valid key in its place is a mismatch, not silently accepted.
    let other = kp_keys::SigningKeyPair::generate();
    fs::write(&signing, other.to_pkcs8_pem().as_bytes()).unwrap();
    let err = NodeKeys::load(&keys_dir).unwrap_err().to_string();
    assert!(err.contains("signing.key.pem") && err.contains("current signing key"), "{err}");

    fs::remove_file(&signing).unwrap();
    let err = NodeKeys::load(&keys_dir).unwrap_err().to_string();
    assert!(err.contains("signing.key.pem"), "{err}");
    fs::write(&signing, original).unwrap();
    fs::set_permissions(&signing, fs::Permissions::from_mode(0o600)).unwrap();
    NodeKeys::load(&keys_dir).unwrap();
}

#[test]
fn bundles_verify_and_refuse_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let keys = NodeKeys::create(&dir.path().join("keys"), RU, t(1000)).unwrap();
    let bundle =
        keys.bundle("Gokhran of Russia".parse().unwrap(), vec!["127.0.0.1:7700".into()], t(2000)).unwrap();
    let text = bundle.to_armored();
    assert!(text.contains(&format!("Fingerprint: {}", keys.fingerprint())));
    let back = VerifiedBundle::from_armored(&text).unwrap();
    assert_eq!(back.fingerprint, keys.fingerprint());
    assert_eq!(back.bundle.participant, RU);
    assert_eq!(back.history.current_signing().key_id, keys.signing.key_id());

    // A changed header is refused even though the signed content is intact.
    let edited = text.replace("Participant: RU", "Participant: IN");
    assert!(matches!(VerifiedBundle::from_armored(&edited), Err(BundleError::Armor(_))));

    // A changed byte inside the signed content breaks the self-signature.
    let mut wire = bundle.to_bytes().to_vec();
    let n = wire.len();
    wire[n - 70] ^= 1; // inside the bundle, before the key id and signature
    let err = VerifiedBundle::from_bytes(&wire).unwrap_err();
    assert!(
        matches!(err, BundleError::BadSignature | BundleError::Decode(_) | BundleError::History(_)),
        "{err}"
    );
    let mut wire = bundle.to_bytes().to_vec();
    let n = wire.len();
    wire[n - 1] ^= 1; // the signature
    assert_eq!(VerifiedBundle::from_bytes(&wire).unwrap_err(), BundleError::BadSignature);
}

#[test]
fn rotation_keeps_old_documents_verifiable_and_refuses_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let mut keys = NodeKeys::create(&keys_dir, RU, t(1000)).unwrap();
    let fingerprint = keys.fingerprint();
    let before =
        SignedDocument::sign(&void(), RU, keys.signing.file().expect("a file key").signing_key(), t(1500));
    let old_id = keys.signing.key_id();

    let statement = keys.rotate(true, true, t(2000)).unwrap();
    assert_ne!(keys.signing.key_id(), old_id);
    let after =
        SignedDocument::sign(&void(), RU, keys.signing.file().expect("a file key").signing_key(), t(2500));

    // The reloaded keys are the new ones, and the fingerprint is unchanged.
    let reloaded = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(reloaded.signing.key_id(), keys.signing.key_id());
    assert_eq!(reloaded.fingerprint(), fingerprint);

    // A partner with the updated bundle verifies documents from before and after.
    let bundle = keys.bundle("Gokhran".parse().unwrap(), vec![], t(3000)).unwrap();
    let partner = VerifiedBundle::from_armored(&bundle.to_armored()).unwrap();
    assert_eq!(partner.fingerprint, fingerprint);
    let h = &partner.history;
    before.verify_signature(h.signing_key_at(before.key_id, before.signed_at).unwrap()).unwrap();
    after.verify_signature(h.signing_key_at(after.key_id, after.signed_at).unwrap()).unwrap();
    // The old key cannot sign after the switch.
    assert!(h.signing_key_at(old_id, t(2000)).is_err());
    assert_eq!(h.signing_keys().len(), 2);
    assert_eq!(h.signing_keys()[0].valid_until, Some(t(2000)));
    // The old TLS key is accepted only within the grace period.
    let old_tls = h.tls_keys()[0].public_key;
    assert!(h.accepts_tls_key(&old_tls, t(2500), 1000));
    assert!(!h.accepts_tls_key(&old_tls, t(3000), 1000));
    assert!(h.accepts_tls_key(&h.current_tls().public_key, t(9_999_999), 0));

    // A rotation statement signed by a key other than the one it replaces is refused.
    let mut genesis = kp_keys::KeyHistory::genesis(
        RU,
        &partner.bundle.root_key,
        t(1000),
        partner.bundle.root_tls_certificate.clone(),
    )
    .unwrap();
    let mut forged = statement.clone();
    let stranger = kp_keys::SigningKeyPair::generate();
    let body: kp_protocol::KeyRotation = statement.body().unwrap();
    forged = SignedDocument::sign(&body, RU, stranger.signing_key(), forged.signed_at);
    let err = genesis.apply(&forged).unwrap_err().to_string();
    assert!(err.contains("signed by key"), "{err}");
    genesis.apply(&statement).unwrap();
}

#[test]
fn an_interrupted_rotation_is_finished_or_undone_by_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let keys = NodeKeys::create(&keys_dir, RU, t(1000)).unwrap();
    // A crash before the history was written leaves a stray .next file: it is discarded.
    let stray = kp_keys::SigningKeyPair::generate();
    fs::write(keys_dir.join("signing.key.pem.next"), stray.to_pkcs8_pem().as_bytes()).unwrap();
    fs::set_permissions(keys_dir.join("signing.key.pem.next"), fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(loaded.signing.key_id(), keys.signing.key_id());
    assert!(!keys_dir.join("signing.key.pem.next").exists());

    // A crash after the history committed, before the new key was moved into place: the
    // load finishes the move.
    let mut keys = loaded;
    let old_pem = fs::read(keys_dir.join("signing.key.pem")).unwrap();
    keys.rotate(true, false, t(5000)).unwrap();
    let new_id = keys.signing.key_id();
    fs::rename(keys_dir.join("signing.key.pem"), keys_dir.join("signing.key.pem.next")).unwrap();
    fs::write(keys_dir.join("signing.key.pem"), old_pem).unwrap();
    let recovered = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(recovered.signing.key_id(), new_id);
    assert!(!keys_dir.join("signing.key.pem.next").exists());
}

#[test]
fn a_history_file_from_before_its_checksum_still_loads_and_a_damaged_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let keys = NodeKeys::create(&keys_dir, RU, t(1000)).unwrap();
    let path = keys_dir.join("history.bin");
    let sealed = fs::read(&path).unwrap();
    // The older layout: the same encoding without the 32-byte SHA-256 suffix.
    fs::write(&path, &sealed[..sealed.len() - 32]).unwrap();
    let loaded = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(loaded.fingerprint(), keys.fingerprint());
    // One changed byte is found and blamed on history.bin. (In the old layout it is still
    // found, by the cross-checks, but may be blamed on the file the history disagrees with.)
    let mut bad = sealed.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x40;
    fs::write(&path, &bad).unwrap();
    let err = NodeKeys::load(&keys_dir).unwrap_err().to_string();
    assert!(err.contains("history.bin") && err.contains("checksum"), "{err}");
    bad.truncate(bad.len() - 32);
    fs::write(&path, &bad).unwrap();
    assert!(NodeKeys::load(&keys_dir).is_err());
}
