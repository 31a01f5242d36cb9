//! Enrolling a partner: checking its bundle and the fingerprint the operator was read, and
//! turning them into a peer record. Shared by the API (daemon running) and the offline path.
//!
//! What may replace a stored record is decided by [`admit`], inside the store's transaction:
//! - same identity (fingerprint): the bundle's key history must *extend* what is held (the
//!   same statements, then more) — an older bundle would roll the history back;
//! - a different identity only with `replace_identity` (`--replace-identity`); the old one is
//!   archived, so what was signed under it still verifies;
//! - a record that cannot be loaded (a quarantined peer) is replaced by a valid bundle; if it
//!   still decodes, its root key (read without verifying) keeps the identity rule: a different
//!   fingerprint needs `replace_identity`, and the record is archived;
//! - in every case, the statements this node did not hold before are judged as new ones on
//!   the wire are: a new TLS key proves possession, and a signing-key rotation takes effect
//!   after everything this node stores signed with the key it replaces.

use std::collections::BTreeMap;

use kp_keys::{Fingerprint, VerifiedBundle};
use kp_protocol::{KeyId, KeyRotation, ParticipantCode, Timestamp};

use crate::engine::Event;
use crate::storage::PeerRecord;

/// Why a bundle was not enrolled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrolError {
    #[error("the bundle is not valid: {0}")]
    Bundle(String),
    #[error("{0}")]
    Fingerprint(String),
    #[error(
        "fingerprint mismatch: the bundle's fingerprint is {actual}, but you were given {given}. Do not \
         enrol it; ask {participant}'s operator to read theirs again from `kpnode peer export`"
    )]
    Mismatch { participant: ParticipantCode, actual: String, given: String },
    #[error("the bundle is this node's own ({0}); enrol the partner's bundle instead")]
    Own(ParticipantCode),
    #[error("endpoint {0:?} is not host:port")]
    Endpoint(String),
    #[error(
        "the bundle is older than what this node holds for {participant}: it has {given} key \
         rotation(s), this node holds {held}. Enrolling it would roll {participant}'s keys back; \
         ask its operator for a current bundle (`kpnode peer export`)"
    )]
    Older { participant: ParticipantCode, held: usize, given: usize },
    #[error(
        "the bundle's key rotation {sequence} differs from the one this node holds for \
         {participant}: the two histories fork. Do not enrol it; ask {participant}'s operator \
         what happened to their keys"
    )]
    Diverges { participant: ParticipantCode, sequence: usize },
    #[error(
        "{participant} is enrolled with fingerprint {held}, and this bundle has fingerprint \
         {given}: a new identity. If {participant}'s operator confirmed by phone that they \
         replaced their keys, enrol it with --replace-identity (API: \"replace_identity\": \
         true); the old identity is archived so entries signed under it still verify"
    )]
    IdentityChange { participant: ParticipantCode, held: String, given: String },
    #[error("the bundle's key rotation {sequence} brings a new TLS key without proof that {participant} holds it: {participant}'s node must run a kpnode version that proves possession (a statement made before kpnode proved possession is enrolled only by a node that already holds it; otherwise {participant} starts a new identity with `kpnode init`)")]
    Unproven { participant: ParticipantCode, sequence: usize },
    #[error(
        "the bundle claims a TLS key that is already bound to {owner}: a TLS key belongs to one \
         participant. Do not enrol it"
    )]
    TlsKeyTaken { participant: ParticipantCode, owner: ParticipantCode },
    #[error(
        "the bundle's key rotation {sequence} retires {participant}'s key {key_id} at {effective_from}, \
         but this node holds a document {participant} signed with that key at {last_signed}: the \
         rotation would disown what was already received. Do not enrol it; ask {participant}'s \
         operator what happened to their keys"
    )]
    Disowns {
        participant: ParticipantCode,
        sequence: usize,
        key_id: KeyId,
        effective_from: Timestamp,
        last_signed: Timestamp,
    },
}

kp_protocol::problem_texts! {
    /// What an [`EnrolError`] says, by message id and arguments, for a user interface that
    /// speaks its user's language (the console's catalogues, `problem-<id>`).
    pub enum EnrolText {
        BundleInvalid = "enrol-bundle-invalid" { detail },
        FingerprintUnreadable = "enrol-fingerprint-unreadable" { detail },
        FingerprintMismatch = "enrol-fingerprint-mismatch" { participant, actual, given },
        OwnBundle = "enrol-own-bundle" { participant },
        EndpointNotHostPort = "enrol-endpoint-not-host-port" { endpoint },
        BundleOlder = "enrol-bundle-older" { participant, held, given },
        HistoryDiverges = "enrol-history-diverges" { participant, sequence },
        IdentityChange = "enrol-identity-change" { participant, held, given },
        TlsKeyUnproven = "enrol-tls-key-unproven" { participant, sequence },
        TlsKeyTaken = "enrol-tls-key-taken" { owner },
        RotationDisowns = "enrol-rotation-disowns" { participant, sequence, key_id, effective_from, last_signed },
    }
}

impl EnrolError {
    /// What this error says, by message id and arguments (its English text is `to_string`).
    pub fn coded(&self) -> kp_protocol::problem::Coded {
        use kp_protocol::problem::Arg;
        match self {
            EnrolError::Bundle(detail) => EnrolText::BundleInvalid { detail: detail.as_str().into() },
            EnrolError::Fingerprint(detail) => {
                EnrolText::FingerprintUnreadable { detail: detail.as_str().into() }
            }
            EnrolError::Mismatch { participant, actual, given } => EnrolText::FingerprintMismatch {
                participant: (*participant).into(),
                actual: actual.as_str().into(),
                given: given.as_str().into(),
            },
            EnrolError::Own(participant) => EnrolText::OwnBundle { participant: (*participant).into() },
            EnrolError::Endpoint(endpoint) => {
                EnrolText::EndpointNotHostPort { endpoint: endpoint.as_str().into() }
            }
            EnrolError::Older { participant, held, given } => EnrolText::BundleOlder {
                participant: (*participant).into(),
                held: (*held).into(),
                given: (*given).into(),
            },
            EnrolError::Diverges { participant, sequence } => EnrolText::HistoryDiverges {
                participant: (*participant).into(),
                sequence: (*sequence).into(),
            },
            EnrolError::IdentityChange { participant, held, given } => EnrolText::IdentityChange {
                participant: (*participant).into(),
                held: held.as_str().into(),
                given: given.as_str().into(),
            },
            EnrolError::Unproven { participant, sequence } => {
                EnrolText::TlsKeyUnproven { participant: (*participant).into(), sequence: (*sequence).into() }
            }
            EnrolError::TlsKeyTaken { owner, .. } => EnrolText::TlsKeyTaken { owner: (*owner).into() },
            EnrolError::Disowns { participant, sequence, key_id, effective_from, last_signed } => {
                EnrolText::RotationDisowns {
                    participant: (*participant).into(),
                    sequence: (*sequence).into(),
                    key_id: Arg::text(key_id),
                    effective_from: Arg::text(effective_from),
                    last_signed: Arg::text(last_signed),
                }
            }
        }
        .into()
    }
}

/// What enrolling a bundle writes: the new record, and the identity it replaces (to archive).
#[derive(Debug)]
pub struct Admitted {
    pub record: PeerRecord,
    pub archive: Option<PeerRecord>,
    /// What the operator should hear about (a record replaced, an identity changed).
    pub event: Option<Event>,
}

/// The latest signing time of what this node stores from the participant, per key of it
/// (see [`crate::storage::meta::SIGNED_PREFIX`]).
pub type LastSigned = BTreeMap<KeyId, Timestamp>;

/// Decides whether `new` (from [`prepare`]) may replace `existing`, the stored record of the
/// same participant (`Err` if it cannot be loaded), and what to write. `last_signed` holds,
/// for the keys the bundle's rotations replace, the latest signing time of what this node
/// stores signed with them. See the module docs.
pub fn admit(
    new: PeerRecord,
    existing: Option<Result<PeerRecord, String>>,
    replace_identity: bool,
    last_signed: &LastSigned,
) -> Result<Admitted, EnrolError> {
    let participant = new.participant;
    let fresh = crate::trust::PeerTrust::from_record(&new).map_err(|e| EnrolError::Bundle(e.to_string()))?;
    let old = match existing {
        None => {
            check_new_statements(&fresh, 0, last_signed)?;
            return Ok(Admitted { record: new, archive: None, event: None });
        }
        Some(Err(error)) => {
            check_new_statements(&fresh, 0, last_signed)?;
            let event = Event::UnloadableRecordReplaced { peer: participant, error, archived: None };
            return Ok(Admitted { record: new, archive: None, event: Some(event) });
        }
        Some(Ok(old)) => old,
    };
    let held = match crate::trust::PeerTrust::from_record(&old) {
        Ok(t) => t,
        Err(e) => {
            // The record decodes but does not verify. Its root key, read without verifying,
            // still keeps the identity-change rule (its rotations cannot be trusted to count).
            if let Ok(b) = kp_keys::bundle::decode_unverified(&old.bundle) {
                let held_fp =
                    ed25519_dalek::VerifyingKey::from_bytes(&b.root_key).ok().map(|k| Fingerprint::of(&k));
                if let Some(held_fp) = held_fp.filter(|fp| *fp != fresh.fingerprint) {
                    if !replace_identity {
                        return Err(EnrolError::IdentityChange {
                            participant,
                            held: held_fp.to_string(),
                            given: fresh.fingerprint.to_string(),
                        });
                    }
                    check_new_statements(&fresh, 0, last_signed)?;
                    let event = Event::UnloadableRecordReplaced {
                        peer: participant,
                        error: e.to_string(),
                        archived: Some((held_fp.to_string(), fresh.fingerprint.to_string())),
                    };
                    return Ok(Admitted { record: new, archive: Some(old), event: Some(event) });
                }
            }
            check_new_statements(&fresh, 0, last_signed)?;
            let event =
                Event::UnloadableRecordReplaced { peer: participant, error: e.to_string(), archived: None };
            return Ok(Admitted { record: new, archive: None, event: Some(event) });
        }
    };
    if held.fingerprint != fresh.fingerprint {
        if !replace_identity {
            return Err(EnrolError::IdentityChange {
                participant,
                held: held.fingerprint.to_string(),
                given: fresh.fingerprint.to_string(),
            });
        }
        check_new_statements(&fresh, 0, last_signed)?;
        let event = Event::IdentityReplaced {
            peer: participant,
            old: held.fingerprint.to_string(),
            new: fresh.fingerprint.to_string(),
        };
        return Ok(Admitted { record: new, archive: Some(old), event: Some(event) });
    }
    let (held_r, given_r) = (held.history.rotations(), fresh.history.rotations());
    if given_r.len() < held_r.len() {
        return Err(EnrolError::Older { participant, held: held_r.len(), given: given_r.len() });
    }
    if let Some(i) = held_r.iter().zip(given_r).position(|(a, b)| a != b) {
        return Err(EnrolError::Diverges { participant, sequence: i + 1 });
    }
    check_new_statements(&fresh, held_r.len(), last_signed)?;
    Ok(Admitted { record: new, archive: None, event: None })
}

/// Checks the statements of `fresh`'s history from index `held` on (those this node has not
/// held before: all of them on a first enrolment, an identity change or in place of a record
/// that cannot be loaded) as new, as on the wire:
/// - a new TLS key proves possession (a format-1 statement without that proof is refused);
/// - a signing-key rotation takes effect after everything this node stores signed with the
///   key it replaces. Both its `signed_at` and its `effective_from` are the signer's to
///   choose, so only what this node holds bounds them from below.
fn check_new_statements(
    fresh: &crate::trust::PeerTrust,
    held: usize,
    last_signed: &LastSigned,
) -> Result<(), EnrolError> {
    let participant = fresh.participant;
    for (i, doc) in fresh.history.rotations().iter().enumerate().skip(held) {
        let Ok(r) = doc.body::<KeyRotation>() else { continue };
        if r.new_tls_certificate.is_some() && r.tls_possession.is_none() {
            return Err(EnrolError::Unproven { participant, sequence: i + 1 });
        }
        if r.new_signing_key.is_none() {
            continue;
        }
        if let Some(&last) = last_signed.get(&r.previous_key).filter(|last| r.effective_from <= **last) {
            return Err(EnrolError::Disowns {
                participant,
                sequence: i + 1,
                key_id: r.previous_key,
                effective_from: r.effective_from,
                last_signed: last,
            });
        }
    }
    Ok(())
}

/// Checks `bundle_text` against `fingerprint` and makes the record to store (whether it may
/// replace a stored one is [`admit`]'s to decide).
pub fn prepare(
    me: ParticipantCode,
    bundle_text: &str,
    fingerprint: &str,
    endpoints: Option<Vec<String>>,
    now: Timestamp,
) -> Result<(PeerRecord, VerifiedBundle), EnrolError> {
    let bundle = VerifiedBundle::from_armored(bundle_text).map_err(|e| EnrolError::Bundle(e.to_string()))?;
    let given: Fingerprint =
        fingerprint.parse().map_err(|e: kp_keys::fingerprint::FingerprintParseError| {
            EnrolError::Fingerprint(format!("--fingerprint {fingerprint:?}: {e}"))
        })?;
    let participant = bundle.bundle.participant;
    if given != bundle.fingerprint {
        return Err(EnrolError::Mismatch {
            participant,
            actual: bundle.fingerprint.to_string(),
            given: given.to_string(),
        });
    }
    if participant == me {
        return Err(EnrolError::Own(me));
    }
    let endpoints = match endpoints {
        Some(list) if !list.is_empty() => {
            for e in &list {
                let ok = e
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
                if !ok {
                    return Err(EnrolError::Endpoint(e.clone()));
                }
            }
            list
        }
        _ => bundle.bundle.endpoints.clone(),
    };
    let record = PeerRecord {
        participant,
        bundle: bundle.to_bytes().to_vec(),
        // The bundle holds every rotation up to now: an accepted bundle extends what was
        // held, so nothing received on the wire is lost.
        rotations: Vec::new(),
        endpoints,
        enrolled_at: now,
        removed_at: None,
    };
    // The record must build trust exactly as the node will.
    crate::trust::PeerTrust::from_record(&record).map_err(|e| EnrolError::Bundle(e.to_string()))?;
    Ok((record, bundle))
}
