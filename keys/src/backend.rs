//! Where a signing key's private half lives: in a PEM file this process has read
//! ([`SigningKeyPair`]) or in a hardware token that signs on request and never gives the key
//! out (a PKCS#11 token, implemented in kp-node). Everything that signs for the authority
//! goes through [`SigningBackend`], so the rest of the code does not care which it is; only
//! a token can fail to sign, and then the caller gets a [`SignError`] naming the key and the
//! cause and makes nothing.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signer as _, VerifyingKey};
use kp_protocol::{Body, DocumentKind, KeyId, ParticipantCode, SignedDocument, Timestamp};

use crate::secret::SigningKeyPair;

/// Why a signature could not be made now. The key is still there (a token that is absent,
/// busy or locked comes back); the caller answers "unavailable" and tries again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signing key {key} cannot sign now: {cause}")]
pub struct SignError {
    /// The key, as the operator configured it (`pkcs11:token=KP;object=kp-signing`).
    pub key: String,
    /// What the token said, with the fix where one is known.
    pub cause: String,
}

/// A private Ed25519 key that signs on request.
pub trait SigningBackend: Send + Sync + fmt::Debug {
    /// The public half, read once when the key was opened.
    fn verifying_key(&self) -> VerifyingKey;

    /// The Ed25519 signature over `message`.
    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], SignError>;

    /// Where the key is, for messages: a file path or a PKCS#11 URI.
    fn location(&self) -> String;

    fn key_id(&self) -> KeyId {
        KeyId::of(&self.verifying_key())
    }

    /// Signs `body` as `signer` at `signed_at`.
    fn sign_document_bytes(
        &self,
        kind: DocumentKind,
        body: Vec<u8>,
        signer: ParticipantCode,
        signed_at: Timestamp,
    ) -> Result<SignedDocument, SignError> {
        SignedDocument::sign_bytes_with(kind, body, signer, &self.verifying_key(), signed_at, |m| {
            self.sign_message(m)
        })
    }
}

/// Signs `body` with `key` as `signer` at `signed_at`.
pub fn sign_document<B: Body>(
    key: &dyn SigningBackend,
    body: &B,
    signer: ParticipantCode,
    signed_at: Timestamp,
) -> Result<SignedDocument, SignError> {
    key.sign_document_bytes(B::KIND, body.to_body_bytes(), signer, signed_at)
}

impl SigningBackend for SigningKeyPair {
    fn verifying_key(&self) -> VerifyingKey {
        SigningKeyPair::verifying_key(self)
    }

    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        Ok(self.signing_key().sign(message).to_bytes())
    }

    fn location(&self) -> String {
        "keys/signing.key.pem".into()
    }
}

impl From<SigningKeyPair> for Arc<dyn SigningBackend> {
    fn from(k: SigningKeyPair) -> Self {
        Arc::new(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that always fails, as a token that was pulled out does.
    #[derive(Debug)]
    struct Absent(VerifyingKey);
    impl SigningBackend for Absent {
        fn verifying_key(&self) -> VerifyingKey {
            self.0
        }
        fn sign_message(&self, _: &[u8]) -> Result<[u8; 64], SignError> {
            Err(SignError { key: self.location(), cause: "token not present".into() })
        }
        fn location(&self) -> String {
            "pkcs11:token=KP;object=kp-signing".into()
        }
    }

    #[test]
    fn a_file_key_signs_as_before_and_a_failing_key_makes_nothing() {
        let k = SigningKeyPair::from_secret_bytes(&[7; 32]);
        let ru = ParticipantCode::from_static("RU");
        let at = Timestamp::from_unix_millis(1000);
        let body = b"body".to_vec();
        let via = k.sign_document_bytes(DocumentKind::Void, body.clone(), ru, at).unwrap();
        let direct = SignedDocument::sign_bytes(DocumentKind::Void, body.clone(), ru, k.signing_key(), at);
        assert_eq!(via, direct);
        let e = Absent(k.verifying_key()).sign_document_bytes(DocumentKind::Void, body, ru, at).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the signing key pkcs11:token=KP;object=kp-signing cannot sign now: token not present"
        );
    }
}
