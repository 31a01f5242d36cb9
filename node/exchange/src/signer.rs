//! The one place documents are signed. Every signature (certificates, confirmations, voids,
//! receipts, rotation statements) goes through [`Signer`], which makes key rotation exact:
//! the rotation's `effective_from` is later than every signature made with the old key, and
//! no signature is made with the old key after it. The key may live in a file or in a
//! hardware token ([`SigningBackend`]); a token can fail to sign, so every signature is a
//! `Result` and a failure makes nothing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use kp_keys::{SignError, SigningBackend};
use kp_protocol::{Body, DocumentKind, KeyId, ParticipantCode, SignedDocument, Timestamp};

use crate::clock::Clock;

/// Signs as this node's participant with its current key.
#[derive(Debug)]
pub struct Signer {
    participant: ParticipantCode,
    key: RwLock<Arc<dyn SigningBackend>>,
    /// The latest `signed_at` used, so a rotation can start strictly after it.
    latest: AtomicI64,
    clock: Arc<dyn Clock>,
}

impl Signer {
    pub fn new(
        participant: ParticipantCode,
        key: impl Into<Arc<dyn SigningBackend>>,
        clock: Arc<dyn Clock>,
    ) -> Signer {
        Signer { participant, key: RwLock::new(key.into()), latest: AtomicI64::new(i64::MIN), clock }
    }

    pub fn participant(&self) -> ParticipantCode {
        self.participant
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Arc<dyn SigningBackend>> {
        // Poisoning cannot leave the Arc half-swapped; keep using it.
        self.key.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn key_id(&self) -> KeyId {
        self.current().key_id()
    }

    /// Where the current key lives (a file or a PKCS#11 URI), for messages.
    pub fn location(&self) -> String {
        self.current().location()
    }

    /// Signs `body` now, or says why the key cannot sign now (a token that is absent).
    pub fn sign<B: Body>(&self, body: &B) -> Result<SignedDocument, SignError> {
        self.sign_bytes(B::KIND, body.to_body_bytes())
    }

    pub fn sign_bytes(&self, kind: DocumentKind, body: Vec<u8>) -> Result<SignedDocument, SignError> {
        let key = self.current();
        let now = self.clock.now();
        // Counted even when the token fails: a later rotation only needs to start after it.
        self.latest.fetch_max(now.unix_millis(), Ordering::SeqCst);
        crate::meter::measure(crate::meter::Part::signing(kind), || {
            key.sign_document_bytes(kind, body, self.participant, now)
        })
    }

    /// Replaces the key. `make` gets the old key and the moment the rotation takes effect
    /// (after every signature made so far) and returns the new key (or keeps the old one, for a
    /// TLS-only rotation) with whatever else it produced. No signature is made meanwhile.
    pub fn rotate<T, E>(
        &self,
        make: impl FnOnce(&Arc<dyn SigningBackend>, Timestamp) -> Result<(Option<Arc<dyn SigningBackend>>, T), E>,
    ) -> Result<T, E> {
        let mut slot = self.key.write().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now().unix_millis();
        let effective = now.max(self.latest.load(Ordering::SeqCst).saturating_add(1));
        let (new_key, out) = make(&slot, Timestamp::from_unix_millis(effective))?;
        self.latest.fetch_max(effective, Ordering::SeqCst);
        if let Some(k) = new_key {
            *slot = k;
        }
        Ok(out)
    }
}
