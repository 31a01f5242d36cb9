//! What the crate's tests share: a participant's enrolment bundle, made from its keys.

use kp_keys::{SigningKeyPair, VerifiedBundle};
use kp_protocol::{ParticipantCode, Timestamp};

/// `code`'s bundle with root key `key`, TLS certificate `tls_certificate`, the root created
/// at `root_created` and the bundle at `created`, reachable (nominally) at 127.0.0.1:9.
pub(crate) fn bundle(
    code: ParticipantCode,
    key: &SigningKeyPair,
    tls_certificate: Vec<u8>,
    root_created: Timestamp,
    created: Timestamp,
) -> VerifiedBundle {
    kp_keys::Bundle {
        format: kp_keys::bundle::BUNDLE_FORMAT,
        participant: code,
        // Invariant: a participant code makes a valid authority name.
        authority: format!("Authority of {code}").parse().expect("an authority name"),
        endpoints: vec!["127.0.0.1:9".into()],
        root_key: key.verifying_key().to_bytes(),
        root_created_at: root_created,
        root_tls_certificate: tls_certificate,
        rotations: Vec::new(),
        created_at: created,
    }
    .sign(key)
    // Invariant: a bundle signed with its own root key verifies.
    .expect("a test bundle verifies")
}
