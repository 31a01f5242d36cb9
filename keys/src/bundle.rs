//! The enrolment bundle: what one participant hands another (by e-mail, USB stick…) so that
//! the other can trust it. It holds the participant, its authority, its endpoints, its root
//! signing key and every rotation since (hence the current keys), and its TLS certificate; it
//! is signed by the current signing key and travels as ASCII armor.
//!
//! A bundle proves only that whoever holds the keys made it. The fingerprint, compared over
//! the phone with the partner, is what ties it to the real authority.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Signer};
use kp_protocol::armor::{self, ArmorError};
use kp_protocol::codec::{self, CodecError};
use kp_protocol::{KeyId, ParticipantCode, SignedDocument, Text, Timestamp};

use crate::fingerprint::Fingerprint;
use crate::history::{HistoryError, KeyHistory};
use crate::secret::SigningKeyPair;

pub const BUNDLE_LABEL: &str = "KPNODE ENROLMENT BUNDLE";
pub const BUNDLE_FORMAT: u16 = 1;
const MAX_ENDPOINTS: usize = 8;

/// What a participant tells its partners about itself.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Bundle {
    pub format: u16,
    pub participant: ParticipantCode,
    pub authority: Text,
    /// Where its node accepts peer connections, `host:port`.
    pub endpoints: Vec<String>,
    pub root_key: [u8; 32],
    pub root_created_at: Timestamp,
    pub root_tls_certificate: Vec<u8>,
    /// Key rotations since the root, oldest first.
    pub rotations: Vec<SignedDocument>,
    pub created_at: Timestamp,
}

#[derive(Encode, Decode)]
struct SignedBundle {
    bundle: Vec<u8>,
    key_id: KeyId,
    signature: [u8; 64],
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    #[error("not an enrolment bundle: {0}")]
    Armor(#[from] ArmorError),
    #[error("the bundle is damaged: {0}")]
    Decode(#[from] CodecError),
    #[error("bundle format {0} is not supported by this version of kpnode (it reads format 1)")]
    UnsupportedFormat(u16),
    #[error("the bundle's key history does not hold: {0}")]
    History(#[from] HistoryError),
    #[error(
        "the bundle's self-signature does not verify: it was altered after it was made, or \
         not made by the holder of its keys"
    )]
    BadSignature,
    #[error("endpoint {0:?} is not host:port")]
    Endpoint(String),
    #[error(transparent)]
    Signing(#[from] crate::backend::SignError),
}

/// A bundle whose self-signature and key history have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub bundle: Bundle,
    pub history: KeyHistory,
    pub fingerprint: Fingerprint,
    wire: Vec<u8>,
}

fn signing_message(bundle_bytes: &[u8]) -> Vec<u8> {
    let mut m = b"kpnode/v1/enrolment-bundle\0".to_vec();
    m.extend_from_slice(bundle_bytes);
    m
}

fn check_endpoint(e: &str) -> Result<(), BundleError> {
    let ok = e.len() <= 255
        && e.bytes().all(|b| b.is_ascii_graphic())
        && e.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(())
    } else {
        Err(BundleError::Endpoint(e.chars().take(64).collect()))
    }
}

impl Bundle {
    /// Signs the bundle with `key` (which must be the current key of its history) and checks
    /// the result as a partner would.
    pub fn sign(self, key: &dyn crate::backend::SigningBackend) -> Result<VerifiedBundle, BundleError> {
        let bundle = codec::encode(&self);
        let signature = key.sign_message(&signing_message(&bundle))?;
        let wire = codec::encode(&SignedBundle { bundle, key_id: key.key_id(), signature });
        VerifiedBundle::from_bytes(&wire)
    }

    /// The armored text of this bundle signed with `key`, without any check: what a hostile
    /// partner could send, for tests that show it refused.
    #[doc(hidden)]
    pub fn sign_unchecked_armored(self, key: &SigningKeyPair) -> String {
        let bundle = codec::encode(&self);
        let signature = key.signing_key().sign(&signing_message(&bundle)).to_bytes();
        let wire = codec::encode(&SignedBundle { bundle, key_id: key.key_id(), signature });
        match VerifiedBundle::from_bytes(&wire) {
            Ok(verified) => verified.to_armored(),
            Err(_) => armor::armor(BUNDLE_LABEL, &[("Participant", self.participant.to_string())], &wire),
        }
    }
}

/// The bundle inside binary bundle bytes, decoded but NOT checked: only for bytes verified
/// before (a stored peer record), to read facts like its TLS keys without re-verifying
/// every signature.
pub fn decode_unverified(wire: &[u8]) -> Result<Bundle, BundleError> {
    let signed: SignedBundle = codec::decode(wire)?;
    Ok(codec::decode(&signed.bundle)?)
}

impl VerifiedBundle {
    /// Checks binary bundle bytes: format, key history, endpoints, self-signature.
    pub fn from_bytes(wire: &[u8]) -> Result<VerifiedBundle, BundleError> {
        let signed: SignedBundle = codec::decode(wire)?;
        let bundle: Bundle = codec::decode(&signed.bundle)?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::UnsupportedFormat(bundle.format));
        }
        if bundle.endpoints.len() > MAX_ENDPOINTS {
            return Err(BundleError::Endpoint(format!(
                "{} endpoints (at most {MAX_ENDPOINTS})",
                bundle.endpoints.len()
            )));
        }
        for e in &bundle.endpoints {
            check_endpoint(e)?;
        }
        let history = KeyHistory::from_chain(
            bundle.participant,
            &bundle.root_key,
            bundle.root_created_at,
            bundle.root_tls_certificate.clone(),
            &bundle.rotations,
        )?;
        let current = history.current_signing();
        if signed.key_id != current.key_id {
            return Err(BundleError::BadSignature);
        }
        current
            .public_key
            .verify_strict(&signing_message(&signed.bundle), &Signature::from_bytes(&signed.signature))
            .map_err(|_| BundleError::BadSignature)?;
        let fingerprint = Fingerprint::of(&history.root().public_key);
        Ok(VerifiedBundle { bundle, history, fingerprint, wire: wire.to_vec() })
    }

    /// Reads armored bundle text, refusing anything but the exact armor of a valid bundle.
    pub fn from_armored(text: &str) -> Result<VerifiedBundle, BundleError> {
        let wire = armor::dearmor(text, BUNDLE_LABEL)?;
        let verified = Self::from_bytes(&wire)?;
        armor::check_canonical(text, &verified.to_armored())?;
        Ok(verified)
    }

    pub fn to_bytes(&self) -> &[u8] {
        &self.wire
    }

    /// ASCII armor with readable headers (which only repeat the signed content).
    pub fn to_armored(&self) -> String {
        let b = &self.bundle;
        let headers = [
            ("Participant", b.participant.to_string()),
            ("Authority", b.authority.to_string()),
            ("Fingerprint", self.fingerprint.to_string()),
            ("Endpoints", b.endpoints.join(", ")),
            ("Signing-Key", self.history.current_signing().key_id.to_string()),
            ("Rotations", b.rotations.len().to_string()),
            ("Created", b.created_at.to_string()),
        ];
        armor::armor(BUNDLE_LABEL, &headers, &self.wire)
    }
}
