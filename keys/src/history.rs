//! A participant's keys over time, rebuilt from its root key and its chain of rotation
//! statements. Every rotation is checked as it is applied: signed by the key it replaces,
//! with the new key's consent, in sequence. So a history can only be built from statements
//! the participant really made.
//!
//! # Bounds
//! A partner's history is stored by every node that enrols it, so what one participant can
//! make others store about it is bounded: [`MAX_TLS_CERTIFICATE_BYTES`] per certificate,
//! [`MAX_ROTATION_BYTES`] per statement, [`MAX_ROTATIONS`] statements in all and at most
//! [`MAX_ROTATIONS_PER_DAY`] taking effect within any 24 hours. A statement's `effective_from`
//! is never before its own `signed_at` (both come from the signer's one clock), so a rotation
//! cannot reach back and disown documents signed before it.
//!
//! # Proof of possession
//! A new signing key signs the statement ([`kp_protocol::NewSigningKey`]), and so does a new
//! TLS key (format 2, [`KeyRotation::tls_possession`]): nobody can claim a key it does not
//! hold. [`KeyHistory::apply`] requires both. Format-1 TLS statements (written before the TLS
//! proof existed) are accepted only as part of a chain already made or held
//! ([`KeyHistory::from_chain`], [`KeyHistory::apply_recorded`]), never as a new statement.

use ed25519_dalek::VerifyingKey;
use kp_protocol::{KeyId, KeyRotation, ParticipantCode, SignedDocument, Timestamp};
use serde::Serialize;

use crate::tlscert;

/// The largest TLS certificate a history holds (kpnode's own are under 600 bytes).
pub const MAX_TLS_CERTIFICATE_BYTES: usize = 4096;
/// The largest rotation statement body (a new signing key, a certificate and two proofs).
pub const MAX_ROTATION_BYTES: usize = 8192;
/// The most rotations a history holds. A participant that reaches it starts a new identity
/// (`kpnode init` and re-enrolment), which its partners confirm by phone.
pub const MAX_ROTATIONS: usize = 128;
/// The most rotations that may take effect within any 24 hours.
pub const MAX_ROTATIONS_PER_DAY: usize = 8;
const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// How much a statement must prove to be applied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Admission {
    /// A statement arriving now: every new key proves possession.
    New,
    /// A statement already part of a chain made before (a bundle's): a format-1 TLS
    /// statement (from before the TLS proof of possession) is accepted as it was then.
    Recorded,
    /// A statement this node already holds (its own key history file, a rotation stored in
    /// a peer record): as `Recorded`, without the count and rate bounds, which limit what a
    /// partner can make a node store, not what it stored before they existed.
    Held,
}

/// One signing key and when it was valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyEntry {
    pub key_id: KeyId,
    pub public_key: VerifyingKey,
    pub valid_from: Timestamp,
    /// When a rotation replaced it; documents it signed at or after this are refused.
    pub valid_until: Option<Timestamp>,
}

/// One TLS certificate and when it was current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeyEntry {
    pub certificate_der: Vec<u8>,
    pub public_key: [u8; 32],
    pub valid_from: Timestamp,
    /// When a rotation replaced it. Peers keep accepting it for their grace period.
    pub replaced_at: Option<Timestamp>,
}

/// A participant's key history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistory {
    participant: ParticipantCode,
    signing: Vec<SigningKeyEntry>,
    tls: Vec<TlsKeyEntry>,
    rotations: Vec<SignedDocument>,
    /// When each rotation took effect (parallel to `rotations`), for the rate bound.
    effective: Vec<Timestamp>,
}

/// Why a key history could not be built or a key was not found.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("the root signing key is not a valid (or is a weak) Ed25519 key")]
    BadRootKey,
    #[error("TLS certificate: {0}")]
    Tls(#[from] tlscert::TlsCertError),
    #[error("rotation statement {sequence}: {reason}")]
    BadRotation { sequence: usize, reason: String },
    #[error("{participant} has no key {key_id}")]
    UnknownKey { participant: ParticipantCode, key_id: KeyId },
    #[error("{participant}'s key {key_id} was not valid at {at} (valid from {valid_from}{until})")]
    KeyNotValidAt {
        participant: ParticipantCode,
        key_id: KeyId,
        at: Timestamp,
        valid_from: Timestamp,
        until: String,
    },
}

impl KeyHistory {
    /// The history of a participant that has never rotated.
    pub fn genesis(
        participant: ParticipantCode,
        root_key: &[u8; 32],
        created_at: Timestamp,
        tls_certificate_der: Vec<u8>,
    ) -> Result<KeyHistory, HistoryError> {
        let public_key = VerifyingKey::from_bytes(root_key)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or(HistoryError::BadRootKey)?;
        check_certificate_size(&tls_certificate_der)?;
        let tls_key = tlscert::public_key(&tls_certificate_der)?;
        // The root certificate's proof of possession: signed by its own key and naming the
        // participant, so nobody can put another participant's certificate in its bundle.
        tlscert::check_own(&tls_certificate_der, participant)?;
        Ok(KeyHistory {
            participant,
            signing: vec![SigningKeyEntry {
                key_id: KeyId::of(&public_key),
                public_key,
                valid_from: created_at,
                valid_until: None,
            }],
            tls: vec![TlsKeyEntry {
                certificate_der: tls_certificate_der,
                public_key: tls_key,
                valid_from: created_at,
                replaced_at: None,
            }],
            rotations: Vec::new(),
            effective: Vec::new(),
        })
    }

    /// Builds a history from its root and its rotations, checking each (as statements
    /// already made: see [`KeyHistory::apply_recorded`]).
    pub fn from_chain(
        participant: ParticipantCode,
        root_key: &[u8; 32],
        created_at: Timestamp,
        root_tls_certificate_der: Vec<u8>,
        rotations: &[SignedDocument],
    ) -> Result<KeyHistory, HistoryError> {
        let mut h = Self::genesis(participant, root_key, created_at, root_tls_certificate_der)?;
        for r in rotations {
            h.apply_recorded(r)?;
        }
        Ok(h)
    }

    pub fn participant(&self) -> ParticipantCode {
        self.participant
    }

    pub fn root(&self) -> &SigningKeyEntry {
        &self.signing[0]
    }

    pub fn current_signing(&self) -> &SigningKeyEntry {
        // Invariant: a history always holds at least its root key.
        self.signing.last().expect("a key history has a root key")
    }

    pub fn current_tls(&self) -> &TlsKeyEntry {
        // Invariant: a history always holds at least its first TLS certificate.
        self.tls.last().expect("a key history has a TLS certificate")
    }

    pub fn signing_keys(&self) -> &[SigningKeyEntry] {
        &self.signing
    }

    pub fn tls_keys(&self) -> &[TlsKeyEntry] {
        &self.tls
    }

    pub fn rotations(&self) -> &[SignedDocument] {
        &self.rotations
    }

    /// The next rotation's sequence number.
    pub fn next_sequence(&self) -> u32 {
        self.rotations.len() as u32 + 1
    }

    /// Checks `doc` as the next rotation, arriving now, and applies it: every new key must
    /// prove possession.
    pub fn apply(&mut self, doc: &SignedDocument) -> Result<(), HistoryError> {
        self.apply_as(doc, Admission::New)
    }

    /// Checks and applies `doc`, a statement that was already part of a chain made before (a
    /// bundle's): as [`KeyHistory::apply`], except that a format-1 TLS rotation without proof
    /// of possession, written before that proof existed, is accepted.
    pub fn apply_recorded(&mut self, doc: &SignedDocument) -> Result<(), HistoryError> {
        self.apply_as(doc, Admission::Recorded)
    }

    /// Checks and applies `doc`, a statement this node already holds (its own key history
    /// file, a rotation stored in a peer record): as [`KeyHistory::apply_recorded`], without
    /// the bounds on the number and rate of rotations, so that what was stored before the
    /// bounds existed still loads.
    pub fn apply_held(&mut self, doc: &SignedDocument) -> Result<(), HistoryError> {
        self.apply_as(doc, Admission::Held)
    }

    /// As [`KeyHistory::from_chain`], for a chain this node already holds (see
    /// [`KeyHistory::apply_held`]): its own key history file.
    pub fn from_chain_held(
        participant: ParticipantCode,
        root_key: &[u8; 32],
        created_at: Timestamp,
        root_tls_certificate_der: Vec<u8>,
        rotations: &[SignedDocument],
    ) -> Result<KeyHistory, HistoryError> {
        let mut h = Self::genesis(participant, root_key, created_at, root_tls_certificate_der)?;
        for r in rotations {
            h.apply_held(r)?;
        }
        Ok(h)
    }

    fn apply_as(&mut self, doc: &SignedDocument, admission: Admission) -> Result<(), HistoryError> {
        let sequence = self.rotations.len() + 1;
        let bad = |reason: String| HistoryError::BadRotation { sequence, reason };
        let bounded = admission != Admission::Held;
        if bounded && self.rotations.len() >= MAX_ROTATIONS {
            return Err(bad(format!(
                "the history already holds {MAX_ROTATIONS} rotations, the most kpnode keeps; \
                 the participant must start a new identity (kpnode init) and be enrolled again"
            )));
        }
        if doc.body.len() > MAX_ROTATION_BYTES {
            return Err(bad(format!(
                "the statement is {} bytes, more than the {MAX_ROTATION_BYTES} a rotation may have",
                doc.body.len()
            )));
        }
        let rotation: KeyRotation = doc.body().map_err(|e| bad(e.to_string()))?;
        let current = self.current_signing().clone();
        if doc.signer != self.participant || rotation.participant != self.participant {
            return Err(bad(format!(
                "made by {} for {}, not by {}",
                doc.signer, rotation.participant, self.participant
            )));
        }
        if rotation.sequence as usize != sequence {
            return Err(bad(format!("has sequence number {}, expected {sequence}", rotation.sequence)));
        }
        if rotation.previous_key != current.key_id || doc.key_id != current.key_id {
            return Err(bad(format!(
                "replaces key {} and is signed by key {}, but the current key is {}",
                rotation.previous_key, doc.key_id, current.key_id
            )));
        }
        doc.verify_signature(&current.public_key)
            .map_err(|e| bad(format!("not signed by the key it replaces: {e}")))?;
        if rotation.effective_from < current.valid_from || doc.signed_at < current.valid_from {
            return Err(bad(format!(
                "takes effect at {}, before the current key became valid ({})",
                rotation.effective_from, current.valid_from
            )));
        }
        if rotation.effective_from < doc.signed_at {
            return Err(bad(format!(
                "takes effect at {}, before it was signed ({}): a rotation cannot reach back and \
                 disown documents signed before it",
                rotation.effective_from, doc.signed_at
            )));
        }
        if bounded && self.effective.len() >= MAX_ROTATIONS_PER_DAY {
            let earlier = &self.effective[self.effective.len() - MAX_ROTATIONS_PER_DAY];
            if rotation.effective_from < earlier.saturating_add_millis(DAY_MILLIS) {
                return Err(bad(format!(
                    "would be the {}th rotation taking effect within 24 hours (since {earlier}); \
                     at most {MAX_ROTATIONS_PER_DAY} are accepted",
                    MAX_ROTATIONS_PER_DAY + 1
                )));
            }
        }
        let new_key =
            rotation.verified_new_key().map_err(|e| bad(format!("the new key did not sign it: {e}")))?;
        let new_tls = match &rotation.new_tls_certificate {
            Some(der) => {
                check_certificate_size(der)?;
                let key = tlscert::public_key(der)?;
                match (rotation.tls_possession, admission) {
                    (None, Admission::Recorded | Admission::Held) => {}
                    _ => rotation.verify_tls_possession(&key).map_err(|e| {
                        bad(format!("the new TLS key did not sign it (no proof of possession): {e}"))
                    })?,
                }
                Some((der.clone(), key))
            }
            None => None,
        };
        if new_key.is_none() && new_tls.is_none() {
            return Err(bad("changes no key".into()));
        }
        let at = rotation.effective_from;
        if let Some(key) = new_key {
            if key.is_weak() {
                return Err(bad("the new key is a weak (small-order) key".into()));
            }
            if self.signing.iter().any(|e| e.public_key == key) {
                return Err(bad("reuses a key that was already in use".into()));
            }
            if let Some(last) = self.signing.last_mut() {
                last.valid_until = Some(at);
            }
            self.signing.push(SigningKeyEntry {
                key_id: KeyId::of(&key),
                public_key: key,
                valid_from: at,
                valid_until: None,
            });
        }
        if let Some((der, public_key)) = new_tls {
            if let Some(last) = self.tls.last_mut() {
                last.replaced_at = Some(at);
            }
            self.tls.push(TlsKeyEntry {
                certificate_der: der,
                public_key,
                valid_from: at,
                replaced_at: None,
            });
        }
        self.rotations.push(doc.clone());
        self.effective.push(at);
        Ok(())
    }

    /// Ends the history at `at`: the keys still current are valid only before it (a key of an
    /// identity the participant replaced signs nothing after the replacement). Keys that a
    /// rotation had already replaced keep their own end.
    pub fn retire_at(&mut self, at: Timestamp) {
        for e in &mut self.signing {
            e.valid_until = Some(e.valid_until.map_or(at, |u| u.min(at)));
        }
        for e in &mut self.tls {
            e.replaced_at = Some(e.replaced_at.map_or(at, |r| r.min(at)));
        }
    }

    /// The key `key_id`, if it was this participant's valid signing key at `at`.
    pub fn signing_key_at(&self, key_id: KeyId, at: Timestamp) -> Result<&VerifyingKey, HistoryError> {
        let entry = self
            .signing
            .iter()
            .find(|e| e.key_id == key_id)
            .ok_or(HistoryError::UnknownKey { participant: self.participant, key_id })?;
        let valid = at >= entry.valid_from && entry.valid_until.is_none_or(|u| at < u);
        if valid {
            Ok(&entry.public_key)
        } else {
            Err(HistoryError::KeyNotValidAt {
                participant: self.participant,
                key_id,
                at,
                valid_from: entry.valid_from,
                until: entry.valid_until.map(|u| format!(" until {u}")).unwrap_or_default(),
            })
        }
    }

    /// Whether `public_key` is a TLS key this participant may use at `now`: the current one,
    /// or one replaced less than `grace_millis` ago.
    pub fn accepts_tls_key(&self, public_key: &[u8; 32], now: Timestamp, grace_millis: i64) -> bool {
        self.tls.iter().any(|e| {
            e.public_key == *public_key
                && e.replaced_at.is_none_or(|r| now < r.saturating_add_millis(grace_millis))
        })
    }

    /// A summary for `keys show` and the API.
    pub fn summary(&self) -> KeyHistorySummary {
        KeyHistorySummary {
            participant: self.participant,
            signing: self
                .signing
                .iter()
                .map(|e| KeySummary {
                    key_id: e.key_id.to_string(),
                    valid_from: e.valid_from,
                    valid_until: e.valid_until,
                })
                .collect(),
            tls: self
                .tls
                .iter()
                .map(|e| TlsSummary {
                    key_sha256: kp_protocol::Digest::of(&e.public_key).short(),
                    valid_from: e.valid_from,
                    replaced_at: e.replaced_at,
                })
                .collect(),
        }
    }
}

fn check_certificate_size(der: &[u8]) -> Result<(), HistoryError> {
    if der.len() > MAX_TLS_CERTIFICATE_BYTES {
        return Err(tlscert::TlsCertError::Parse(format!(
            "the certificate is {} bytes, more than the {MAX_TLS_CERTIFICATE_BYTES} kpnode accepts",
            der.len()
        ))
        .into());
    }
    Ok(())
}

/// What `keys show` prints about a history.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyHistorySummary {
    pub participant: ParticipantCode,
    pub signing: Vec<KeySummary>,
    pub tls: Vec<TlsSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeySummary {
    pub key_id: String,
    pub valid_from: Timestamp,
    pub valid_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TlsSummary {
    /// The first bytes of SHA-256 over the TLS public key, as logs show it.
    pub key_sha256: String,
    pub valid_from: Timestamp,
    pub replaced_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{SigningKeyPair, TlsKeyPair};

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const T0: i64 = 1_790_000_000_000;

    struct Node {
        signing: SigningKeyPair,
        history: KeyHistory,
    }

    fn node() -> Node {
        let signing = SigningKeyPair::generate();
        let tls = TlsKeyPair::generate();
        let history = KeyHistory::genesis(
            RU,
            &signing.verifying_key().to_bytes(),
            Timestamp::from_unix_millis(T0),
            tlscert::self_signed(&tls, RU).unwrap(),
        )
        .unwrap();
        Node { signing, history }
    }

    /// A TLS-only rotation to `cert`, signed at `signed_at`, proved by `prover` if given.
    fn tls_rotation(
        n: &Node,
        cert: Vec<u8>,
        prover: Option<&TlsKeyPair>,
        signed_at: i64,
        effective_from: i64,
    ) -> SignedDocument {
        let mut body = KeyRotation {
            participant: RU,
            sequence: n.history.next_sequence(),
            previous_key: n.signing.key_id(),
            new_signing_key: None,
            new_tls_certificate: Some(cert),
            effective_from: Timestamp::from_unix_millis(effective_from),
            tls_possession: None,
        };
        if let Some(p) = prover {
            p.prove_possession(&mut body);
        }
        SignedDocument::sign(&body, RU, n.signing.signing_key(), Timestamp::from_unix_millis(signed_at))
    }

    fn proved(n: &Node, signed_at: i64) -> SignedDocument {
        let k = TlsKeyPair::generate();
        tls_rotation(n, tlscert::self_signed(&k, RU).unwrap(), Some(&k), signed_at, signed_at + 1)
    }

    fn reason(e: HistoryError) -> String {
        e.to_string()
    }

    #[test]
    fn a_new_tls_key_must_prove_possession() {
        let mut n = node();
        let theirs = TlsKeyPair::generate();
        let their_cert = tlscert::self_signed(&theirs, ParticipantCode::from_static("IN")).unwrap();
        // Claiming someone else's certificate without its key: no proof at all…
        let unproven = tls_rotation(&n, their_cert.clone(), None, T0 + 10, T0 + 11);
        let e = reason(n.history.clone().apply(&unproven).unwrap_err());
        assert!(e.contains("no proof of possession"), "{e}");
        // …or a proof made with a key the attacker does hold.
        let mine = TlsKeyPair::generate();
        let wrong = tls_rotation(&n, their_cert, Some(&mine), T0 + 10, T0 + 11);
        let e = reason(n.history.clone().apply(&wrong).unwrap_err());
        assert!(e.contains("did not sign it"), "{e}");
        // A format-1 statement already in a chain (written before the proof existed) loads.
        let legacy_key = TlsKeyPair::generate();
        let legacy = tls_rotation(&n, tlscert::self_signed(&legacy_key, RU).unwrap(), None, T0 + 10, T0 + 11);
        n.history.clone().apply_recorded(&legacy).unwrap();
        // The real thing.
        n.history.apply(&proved(&n, T0 + 10)).unwrap();
        assert_eq!(n.history.tls_keys().len(), 2);
    }

    /// Review Medium 5: a bundle whose root certificate is another participant's (public)
    /// certificate would bind that participant's TLS key to the bundle's participant.
    #[test]
    fn the_root_certificate_must_be_the_participants_own() {
        let signing = SigningKeyPair::generate();
        let victims = TlsKeyPair::generate();
        let their_cert = tlscert::self_signed(&victims, ParticipantCode::from_static("IN")).unwrap();
        let e = KeyHistory::genesis(
            RU,
            &signing.verifying_key().to_bytes(),
            Timestamp::from_unix_millis(T0),
            their_cert,
        )
        .unwrap_err();
        assert!(reason(e).contains("must name RU and be signed by its own key"));
    }

    #[test]
    fn a_rotation_cannot_take_effect_before_it_was_signed() {
        let n = node();
        let k = TlsKeyPair::generate();
        let cert = tlscert::self_signed(&k, RU).unwrap();
        let backdated = tls_rotation(&n, cert.clone(), Some(&k), T0 + 50_000, T0 + 10);
        let e = reason(n.history.clone().apply(&backdated).unwrap_err());
        assert!(e.contains("before it was signed"), "{e}");
        // Also refused inside a chain (a bundle or a stored record).
        let e = reason(n.history.clone().apply_recorded(&backdated).unwrap_err());
        assert!(e.contains("before it was signed"), "{e}");
        let same_instant = tls_rotation(&n, cert, Some(&k), T0 + 50_000, T0 + 50_000);
        n.history.clone().apply(&same_instant).unwrap();
    }

    #[test]
    fn oversized_certificates_and_statements_are_refused() {
        let n = node();
        let big_cert = vec![0x30; MAX_TLS_CERTIFICATE_BYTES + 1];
        let doc = tls_rotation(&n, big_cert, None, T0 + 1, T0 + 2);
        let e = reason(n.history.clone().apply_recorded(&doc).unwrap_err());
        assert!(e.contains("more than the 4096"), "{e}");
        let huge = tls_rotation(&n, vec![0x30; MAX_ROTATION_BYTES], None, T0 + 1, T0 + 2);
        let e = reason(n.history.clone().apply_recorded(&huge).unwrap_err());
        assert!(e.contains("more than the 8192"), "{e}");
        let signing = SigningKeyPair::generate();
        let e = KeyHistory::genesis(
            RU,
            &signing.verifying_key().to_bytes(),
            Timestamp::from_unix_millis(T0),
            vec![0x30; MAX_TLS_CERTIFICATE_BYTES + 1],
        )
        .unwrap_err();
        assert!(reason(e).contains("more than the 4096"));
    }

    #[test]
    fn rotations_are_bounded_per_day_and_in_all() {
        let mut n = node();
        let hour = 3_600_000;
        for i in 0..MAX_ROTATIONS_PER_DAY as i64 {
            n.history.apply(&proved(&n, T0 + 10 + i * hour)).unwrap();
        }
        let e = reason(n.history.clone().apply(&proved(&n, T0 + 10 + 9 * hour)).unwrap_err());
        assert!(e.contains("within 24 hours"), "{e}");
        // A day after the first of them, the next one is fine.
        n.history.apply(&proved(&n, T0 + 11 + 24 * hour)).unwrap();

        let mut n = node();
        let day = 24 * hour;
        for i in 0..MAX_ROTATIONS as i64 {
            n.history.apply(&proved(&n, T0 + 10 + i * day)).unwrap();
        }
        let e = reason(n.history.clone().apply(&proved(&n, T0 + 10 + 500 * day)).unwrap_err());
        assert!(e.contains("already holds 128 rotations"), "{e}");
        // What a node already holds loads whatever the bounds say.
        n.history.apply_held(&proved(&n, T0 + 10 + 500 * day)).unwrap();
    }
}
