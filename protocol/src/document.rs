//! Signed documents: every business message between nodes is one.
//!
//! A document is its kind, the canonical bytes of its body, the signer, the key id, the time
//! of signing and an Ed25519 signature over a domain-separated message:
//! `"kpnode/v1/" + kind + 0x00 + bincode(kind, body, signer, key_id, signed_at)`. The domain
//! tag means a signature made for one kind can never be passed off as another.

use std::fmt;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;

use crate::amount::Carats;
use crate::certificate::{Certificate, PartyName};
use crate::codec::{self, CodecError};
use crate::codes::{CertificateNumber, ParticipantCode};
use crate::date::{Date, Timestamp};
use crate::digest::{hex, Digest, MessageId};
use crate::text::{LongText, Text};

/// What a signed document is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Encode, Decode, Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DocumentKind {
    Certificate,
    Receipt,
    ImportConfirmation,
    Void,
    KeyRotation,
    /// A change to a node's participant registry, kept in its own log.
    ParticipantChange,
    /// A participant list as circulated, imported into a registry.
    ParticipantList,
    /// The issuer's compact attestation of a certificate, printed as a QR code.
    CertificateSeal,
    /// A participant list carrying its issuer's registry revision (version 2 of the list
    /// format); [`DocumentKind::ParticipantList`] lists are still read.
    ParticipantListV2,
    /// An operator's signed settlement of an import discrepancy.
    Resolution,
    /// A change to the partners this node trusts, kept in its own log (never sent).
    PeerChange,
}

impl DocumentKind {
    /// The name used in the signature's domain tag and in listings.
    pub fn name(&self) -> &'static str {
        match self {
            DocumentKind::Certificate => "certificate",
            DocumentKind::Receipt => "receipt",
            DocumentKind::ImportConfirmation => "import-confirmation",
            DocumentKind::Void => "void",
            DocumentKind::KeyRotation => "key-rotation",
            DocumentKind::ParticipantChange => "participant-change",
            DocumentKind::ParticipantList => "participant-list",
            DocumentKind::CertificateSeal => "certificate-seal",
            DocumentKind::ParticipantListV2 => "participant-list-v2",
            DocumentKind::Resolution => "resolution",
            DocumentKind::PeerChange => "peer-change",
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names a signing key: the first 8 bytes of SHA-256 over a domain tag and the public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        let d = Digest::of_parts(&[b"kpnode/v1/key-id\0", key.as_bytes()]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = crate::value::ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::digest::parse_hex::<8>(s).map(KeyId)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A document body: the type that `kind` promises the body bytes decode to.
pub trait Body: Sized {
    const KIND: DocumentKind;

    /// The canonical bytes of the body.
    fn to_body_bytes(&self) -> Vec<u8>;

    /// The body in `bytes`, which must be the whole of its canonical encoding.
    fn from_body_bytes(bytes: &[u8]) -> Result<Self, CodecError>;
}

/// A body whose bytes are its bincode.
macro_rules! bincode_body {
    ($ty:ty, $kind:expr) => {
        impl $crate::document::Body for $ty {
            const KIND: $crate::document::DocumentKind = $kind;

            fn to_body_bytes(&self) -> Vec<u8> {
                $crate::codec::encode(self)
            }

            fn from_body_bytes(bytes: &[u8]) -> Result<Self, $crate::codec::CodecError> {
                $crate::codec::decode(bytes)
            }
        }
    };
}
pub(crate) use bincode_body;

/// A certificate's bytes have two formats (see `certificate_bytes`).
impl Body for Certificate {
    const KIND: DocumentKind = DocumentKind::Certificate;

    fn to_body_bytes(&self) -> Vec<u8> {
        crate::certificate_bytes::encode(self)
    }

    fn from_body_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        crate::certificate_bytes::decode(bytes)
    }
}

/// A signed document. Construct with [`SignedDocument::sign`]; check with
/// [`SignedDocument::verify_signature`] and read with [`SignedDocument::body`].
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedDocument {
    pub kind: DocumentKind,
    /// Canonical bincode of the body.
    pub body: Vec<u8>,
    pub signer: ParticipantCode,
    pub key_id: KeyId,
    pub signed_at: Timestamp,
    pub signature: [u8; 64],
}

/// Why a document is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DocumentError {
    #[error("expected a {expected} document, found a {found} document")]
    WrongKind { expected: DocumentKind, found: DocumentKind },
    #[error("the body of the {kind} document is {error}")]
    Body { kind: DocumentKind, error: CodecError },
    #[error("the document names key {named}, but was checked against key {given}")]
    KeyMismatch { named: KeyId, given: KeyId },
    #[error("the signature does not verify: the document was altered or not signed by key {0}")]
    BadSignature(KeyId),
}

impl SignedDocument {
    /// Signs `body` as `signer` with `key` at `signed_at`.
    pub fn sign<B: Body>(
        body: &B,
        signer: ParticipantCode,
        key: &SigningKey,
        signed_at: Timestamp,
    ) -> SignedDocument {
        Self::sign_bytes(B::KIND, body.to_body_bytes(), signer, key, signed_at)
    }

    /// Signs body bytes that are already canonical.
    pub fn sign_bytes(
        kind: DocumentKind,
        body: Vec<u8>,
        signer: ParticipantCode,
        key: &SigningKey,
        signed_at: Timestamp,
    ) -> SignedDocument {
        let signed = Self::sign_bytes_with(kind, body, signer, &key.verifying_key(), signed_at, |m| {
            Ok::<_, std::convert::Infallible>(key.sign(m).to_bytes())
        });
        match signed {
            Ok(doc) => doc,
            Err(never) => match never {},
        }
    }

    /// Signs body bytes that are already canonical with a key held elsewhere (a hardware
    /// token): `sign` gets the exact message and returns the Ed25519 signature of `public`'s
    /// private key over it, or why it could not. Nothing is made when it fails.
    pub fn sign_bytes_with<E>(
        kind: DocumentKind,
        body: Vec<u8>,
        signer: ParticipantCode,
        public: &VerifyingKey,
        signed_at: Timestamp,
        sign: impl FnOnce(&[u8]) -> Result<[u8; 64], E>,
    ) -> Result<SignedDocument, E> {
        let key_id = KeyId::of(public);
        let message = signing_message(kind, &body, signer, key_id, signed_at);
        let signature = sign(&message)?;
        Ok(SignedDocument { kind, body, signer, key_id, signed_at, signature })
    }

    /// The exact bytes the signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        signing_message(self.kind, &self.body, self.signer, self.key_id, self.signed_at)
    }

    /// Checks the signature with `key`, which must be the key the document names.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), DocumentError> {
        let given = KeyId::of(key);
        if given != self.key_id {
            return Err(DocumentError::KeyMismatch { named: self.key_id, given });
        }
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signing_message(), &signature)
            .map_err(|_| DocumentError::BadSignature(self.key_id))
    }

    /// The body, decoded as `B` (which must match the document's kind).
    pub fn body<B: Body>(&self) -> Result<B, DocumentError> {
        if self.kind != B::KIND {
            return Err(DocumentError::WrongKind { expected: B::KIND, found: self.kind });
        }
        B::from_body_bytes(&self.body).map_err(|error| DocumentError::Body { kind: self.kind, error })
    }

    /// Canonical bytes of the whole document.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SignedDocument, CodecError> {
        codec::decode(bytes)
    }

    /// SHA-256 of the canonical bytes.
    pub fn message_id(&self) -> MessageId {
        Digest::of(&self.to_bytes())
    }
}

fn signing_message(
    kind: DocumentKind,
    body: &[u8],
    signer: ParticipantCode,
    key_id: KeyId,
    signed_at: Timestamp,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    m.extend_from_slice(b"kpnode/v1/");
    m.extend_from_slice(kind.name().as_bytes());
    m.push(0);
    codec::encode_into(&(kind, body, signer, key_id, signed_at), &mut m);
    m
}

impl fmt::Debug for SignedDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedDocument")
            .field("kind", &self.kind)
            .field("signer", &self.signer)
            .field("key_id", &self.key_id)
            .field("signed_at", &self.signed_at)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The importing authority's confirmation that a shipment arrived (KPCS Section III(b)).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportConfirmation {
    pub certificate: CertificateNumber,
    /// The message id of the signed certificate being confirmed.
    pub certificate_id: MessageId,
    pub exporting_participant: ParticipantCode,
    pub importing_participant: ParticipantCode,
    pub exporter: PartyName,
    pub importer: PartyName,
    pub received_on: Date,
    /// Parcels counted on arrival.
    pub parcels: u32,
    /// Total carats weighed on arrival.
    pub carats: Carats,
    pub confirming_authority: Text,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<LongText>,
}

bincode_body!(ImportConfirmation, DocumentKind::ImportConfirmation);

/// The exporting authority's voiding of a certificate it issued.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Void {
    pub certificate: CertificateNumber,
    pub certificate_id: MessageId,
    pub reason: Text,
}

bincode_body!(Void, DocumentKind::Void);

/// An operator's signed statement that an import discrepancy on a certificate has been looked
/// into and settled. Either participant of the certificate may sign one; it is sent to the
/// other, and once stored the certificate no longer counts as needing attention in
/// `reconcile`. The discrepancy itself stays on record: the resolution adds to it.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resolution {
    pub certificate: CertificateNumber,
    /// The message id of the signed certificate being settled.
    pub certificate_id: MessageId,
    /// What was found and how it was settled.
    pub note: LongText,
    /// The person or office that settled it.
    pub resolved_by: Text,
}

bincode_body!(Resolution, DocumentKind::Resolution);

/// A receiver's signed statement that it durably stored `count` messages from `sender`, whose
/// receipt items are the leaves of a Merkle tree with root `root`. One signature thus
/// acknowledges a whole group commit; each message's receipt is this document plus its
/// inclusion proof (see [`crate::receipt`]). `signed_at` is the time of receipt.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct ReceiptBatch {
    pub receiver: ParticipantCode,
    pub sender: ParticipantCode,
    pub count: u32,
    pub root: Digest,
}

bincode_body!(ReceiptBatch, DocumentKind::Receipt);

/// A participant's statement that its keys change. The outer document is signed by the key
/// being replaced (`previous_key`); a new signing key also signs the statement itself
/// (`NewSigningKey::possession`), and so does a new TLS key (`tls_possession`), so a rotation
/// needs the old key and every new one: nobody can claim a key it does not hold.
///
/// # Format
/// Format 1 (kpnode before the TLS proof of possession) encoded `new_tls_certificate` as a
/// bincode `Option` (tag 0 or 1). Format 2 adds tag 2: the certificate followed by the new
/// TLS key's 64-byte signature. Statements without a new TLS key, and format-1 statements
/// kept in histories and bundles, encode and decode exactly as before; a node of the older
/// version refuses a format-2 TLS rotation as undecodable instead of trusting it unproven.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyRotation {
    pub participant: ParticipantCode,
    /// 1 for the first rotation, then 2, 3…: the statements form a chain.
    pub sequence: u32,
    pub previous_key: KeyId,
    pub new_signing_key: Option<NewSigningKey>,
    /// DER of the new TLS certificate, if the TLS key changes.
    pub new_tls_certificate: Option<Vec<u8>>,
    pub effective_from: Timestamp,
    /// The new TLS key's signature over [`KeyRotation::tls_possession_message`] (format 2).
    /// `None` in a format-1 statement; meaningless without `new_tls_certificate`.
    pub tls_possession: Option<[u8; 64]>,
}

bincode_body!(KeyRotation, DocumentKind::KeyRotation);

/// The tag of `new_tls_certificate` in the encoding (see [`KeyRotation`]).
const TLS_NONE: u8 = 0;
const TLS_UNPROVEN: u8 = 1;
const TLS_PROVEN: u8 = 2;

impl Encode for KeyRotation {
    fn encode<E: bincode::enc::Encoder>(&self, e: &mut E) -> Result<(), bincode::error::EncodeError> {
        self.participant.encode(e)?;
        self.sequence.encode(e)?;
        self.previous_key.encode(e)?;
        self.new_signing_key.encode(e)?;
        match (&self.new_tls_certificate, &self.tls_possession) {
            (None, _) => TLS_NONE.encode(e)?,
            (Some(cert), None) => {
                TLS_UNPROVEN.encode(e)?;
                cert.encode(e)?;
            }
            (Some(cert), Some(proof)) => {
                TLS_PROVEN.encode(e)?;
                cert.encode(e)?;
                proof.encode(e)?;
            }
        }
        self.effective_from.encode(e)
    }
}

impl<C> Decode<C> for KeyRotation {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let participant = ParticipantCode::decode(d)?;
        let sequence = u32::decode(d)?;
        let previous_key = KeyId::decode(d)?;
        let new_signing_key = Option::<NewSigningKey>::decode(d)?;
        let (new_tls_certificate, tls_possession) = match u8::decode(d)? {
            TLS_NONE => (None, None),
            TLS_UNPROVEN => (Some(Vec::<u8>::decode(d)?), None),
            TLS_PROVEN => (Some(Vec::<u8>::decode(d)?), Some(<[u8; 64]>::decode(d)?)),
            other => {
                return Err(bincode::error::DecodeError::OtherString(format!(
                    "key rotation: unknown TLS certificate tag {other} (a newer statement format?)"
                )))
            }
        };
        let effective_from = Timestamp::decode(d)?;
        Ok(KeyRotation {
            participant,
            sequence,
            previous_key,
            new_signing_key,
            new_tls_certificate,
            effective_from,
            tls_possession,
        })
    }
}
bincode::impl_borrow_decode!(KeyRotation);

/// A new signing key and its signature over the rotation, proving its holder agreed.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct NewSigningKey {
    pub public_key: [u8; 32],
    pub possession: [u8; 64],
}

impl KeyRotation {
    /// What the new key signs: the statement with everything but the possession signature.
    fn possession_message(&self, new_key: &[u8; 32]) -> Vec<u8> {
        let mut m = b"kpnode/v1/key-rotation-new-key\0".to_vec();
        codec::encode_into(
            &(
                self.participant,
                self.sequence,
                self.previous_key,
                new_key,
                &self.new_tls_certificate,
                self.effective_from,
            ),
            &mut m,
        );
        m
    }

    /// A rotation to `new_key` (and optionally a new TLS certificate), with the new key's
    /// possession signature filled in. The caller signs the result with the previous key.
    pub fn new_with_signing_key(
        participant: ParticipantCode,
        sequence: u32,
        previous_key: KeyId,
        new_key: &SigningKey,
        new_tls_certificate: Option<Vec<u8>>,
        effective_from: Timestamp,
    ) -> KeyRotation {
        let made = Self::new_with_signing_key_with(
            participant,
            sequence,
            previous_key,
            &new_key.verifying_key(),
            new_tls_certificate,
            effective_from,
            |m| Ok::<_, std::convert::Infallible>(new_key.sign(m).to_bytes()),
        );
        match made {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// [`KeyRotation::new_with_signing_key`] for a new key held elsewhere (a hardware token):
    /// `sign` makes its possession signature over the message it is given, or says why not.
    pub fn new_with_signing_key_with<E>(
        participant: ParticipantCode,
        sequence: u32,
        previous_key: KeyId,
        new_key: &VerifyingKey,
        new_tls_certificate: Option<Vec<u8>>,
        effective_from: Timestamp,
        sign: impl FnOnce(&[u8]) -> Result<[u8; 64], E>,
    ) -> Result<KeyRotation, E> {
        let public_key = new_key.to_bytes();
        let mut rotation = KeyRotation {
            participant,
            sequence,
            previous_key,
            new_signing_key: None,
            new_tls_certificate,
            effective_from,
            tls_possession: None,
        };
        let possession = sign(&rotation.possession_message(&public_key))?;
        rotation.new_signing_key = Some(NewSigningKey { public_key, possession });
        Ok(rotation)
    }

    /// What the new TLS key signs: the statement with both possession signatures left out
    /// (the new signing key's public half is in; the outer signature covers everything).
    pub fn tls_possession_message(&self) -> Vec<u8> {
        let mut m = b"kpnode/v2/key-rotation-new-tls-key\0".to_vec();
        codec::encode_into(
            &(
                self.participant,
                self.sequence,
                self.previous_key,
                self.new_signing_key.as_ref().map(|k| k.public_key),
                &self.new_tls_certificate,
                self.effective_from,
            ),
            &mut m,
        );
        m
    }

    /// Has the new TLS key (the key in `new_tls_certificate`) sign the statement. Call it
    /// last: it covers every other field.
    pub fn prove_tls_possession(&mut self, tls_key: &SigningKey) {
        self.tls_possession = Some(tls_key.sign(&self.tls_possession_message()).to_bytes());
    }

    /// Checks that the holder of `tls_key` (the key of `new_tls_certificate`) signed this
    /// statement. A format-1 statement has no such signature and fails.
    pub fn verify_tls_possession(&self, tls_key: &[u8; 32]) -> Result<(), DocumentError> {
        let key = VerifyingKey::from_bytes(tls_key).map_err(|_| DocumentError::Body {
            kind: DocumentKind::KeyRotation,
            error: CodecError::Malformed("the new TLS key is not a valid Ed25519 key".into()),
        })?;
        let proof = self.tls_possession.ok_or_else(|| DocumentError::Body {
            kind: DocumentKind::KeyRotation,
            error: CodecError::Malformed(
                "missing the new TLS key's proof of possession (a format-1 statement)".into(),
            ),
        })?;
        key.verify_strict(&self.tls_possession_message(), &Signature::from_bytes(&proof))
            .map_err(|_| DocumentError::BadSignature(KeyId::of(&key)))
    }

    /// The new signing key, after checking its possession signature.
    pub fn verified_new_key(&self) -> Result<Option<VerifyingKey>, DocumentError> {
        let Some(new) = &self.new_signing_key else {
            return Ok(None);
        };
        let key = VerifyingKey::from_bytes(&new.public_key).map_err(|_| DocumentError::Body {
            kind: DocumentKind::KeyRotation,
            error: CodecError::Malformed("the new signing key is not a valid Ed25519 key".into()),
        })?;
        let message = self.possession_message(&new.public_key);
        key.verify_strict(&message, &Signature::from_bytes(&new.possession))
            .map_err(|_| DocumentError::BadSignature(KeyId::of(&key)))?;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn void() -> Void {
        Void {
            certificate: "RU-2026-000001".parse().unwrap(),
            certificate_id: Digest::of(b"cert"),
            reason: "issued in error".parse().unwrap(),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = key(1);
        let ru = ParticipantCode::from_static("RU");
        let doc = SignedDocument::sign(&void(), ru, &k, Timestamp::from_unix_millis(1000));
        doc.verify_signature(&k.verifying_key()).unwrap();
        assert_eq!(doc.body::<Void>().unwrap(), void());
        assert!(matches!(doc.body::<ImportConfirmation>(), Err(DocumentError::WrongKind { .. })));

        let mut t = doc.clone();
        t.signed_at = Timestamp::from_unix_millis(1001);
        assert!(matches!(t.verify_signature(&k.verifying_key()), Err(DocumentError::BadSignature(_))));
        let mut t = doc.clone();
        t.kind = DocumentKind::Certificate;
        assert!(t.verify_signature(&k.verifying_key()).is_err());
        let mut t = doc.clone();
        t.signer = ParticipantCode::from_static("IN");
        assert!(t.verify_signature(&k.verifying_key()).is_err());
        assert!(matches!(
            doc.verify_signature(&key(2).verifying_key()),
            Err(DocumentError::KeyMismatch { .. })
        ));
        assert_eq!(SignedDocument::from_bytes(&doc.to_bytes()).unwrap(), doc);
        assert_ne!(doc.message_id(), t.message_id());
    }

    #[test]
    fn rotation_needs_the_new_keys_consent() {
        let (old, new) = (key(1), key(2));
        let r = KeyRotation::new_with_signing_key(
            ParticipantCode::from_static("RU"),
            1,
            KeyId::of(&old.verifying_key()),
            &new,
            None,
            Timestamp::from_unix_millis(5),
        );
        assert_eq!(r.verified_new_key().unwrap(), Some(new.verifying_key()));
        let mut forged = r.clone();
        forged.new_signing_key.as_mut().unwrap().public_key = key(3).verifying_key().to_bytes();
        assert!(forged.verified_new_key().is_err());
        let mut moved = r.clone();
        moved.effective_from = Timestamp::from_unix_millis(6);
        assert!(moved.verified_new_key().is_err());
    }

    #[test]
    fn a_new_tls_key_proves_possession_and_both_formats_decode() {
        let (old, tls, other) = (key(1), key(4), key(5));
        let mut r = KeyRotation {
            participant: ParticipantCode::from_static("RU"),
            sequence: 1,
            previous_key: KeyId::of(&old.verifying_key()),
            new_signing_key: None,
            new_tls_certificate: Some(b"certificate bytes".to_vec()),
            effective_from: Timestamp::from_unix_millis(5),
            tls_possession: None,
        };
        // Format 1: no proof; decodes, but does not prove possession.
        let v1 = codec::encode(&r);
        assert_eq!(codec::decode::<KeyRotation>(&v1).unwrap(), r);
        assert!(r.verify_tls_possession(&tls.verifying_key().to_bytes()).is_err());
        r.prove_tls_possession(&tls);
        r.verify_tls_possession(&tls.verifying_key().to_bytes()).unwrap();
        // Someone else's key did not sign it.
        assert!(r.verify_tls_possession(&other.verifying_key().to_bytes()).is_err());
        let v2 = codec::encode(&r);
        assert_eq!(v2.len(), v1.len() + 64);
        assert_eq!(codec::decode::<KeyRotation>(&v2).unwrap(), r);
        // The proof covers the statement.
        let mut moved = r.clone();
        moved.sequence = 2;
        assert!(moved.verify_tls_possession(&tls.verifying_key().to_bytes()).is_err());
        // An unknown tag is refused, not guessed.
        let mut bad = v1.clone();
        let tag_at = 2 + 4 + 8 + 1;
        assert_eq!(bad[tag_at], 1);
        bad[tag_at] = 3;
        assert!(codec::decode::<KeyRotation>(&bad).is_err());
    }
}
