//! A participant's keys over time, rebuilt from its root key and its chain of rotation
//! statements. Every rotation is checked as it is applied: signed by the key it replaces,
//! with the new key's consent, in sequence. So a history can only be built from statements
//! the participant really made.

use ed25519_dalek::VerifyingKey;
use kp_protocol::{KeyId, KeyRotation, ParticipantCode, SignedDocument, Timestamp};
use serde::Serialize;

use crate::tlscert;

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
        let tls_key = tlscert::public_key(&tls_certificate_der)?;
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
        })
    }

    /// Builds a history from its root and its rotations, checking each.
    pub fn from_chain(
        participant: ParticipantCode,
        root_key: &[u8; 32],
        created_at: Timestamp,
        root_tls_certificate_der: Vec<u8>,
        rotations: &[SignedDocument],
    ) -> Result<KeyHistory, HistoryError> {
        let mut h = Self::genesis(participant, root_key, created_at, root_tls_certificate_der)?;
        for r in rotations {
            h.apply(r)?;
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

    /// Checks `doc` as the next rotation and applies it.
    pub fn apply(&mut self, doc: &SignedDocument) -> Result<(), HistoryError> {
        let sequence = self.rotations.len() + 1;
        let bad = |reason: String| HistoryError::BadRotation { sequence, reason };
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
        let new_key =
            rotation.verified_new_key().map_err(|e| bad(format!("the new key did not sign it: {e}")))?;
        let new_tls = match &rotation.new_tls_certificate {
            Some(der) => Some((der.clone(), tlscert::public_key(der)?)),
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
        Ok(())
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
