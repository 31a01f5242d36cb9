//! kp-protocol: what kpnode nodes say to each other and to their operators, with no I/O, no
//! clock and no randomness. Times and keys are passed in.
//!
//! # Layout
//! - Values that can only be valid: [`codes`] (participants, certificate numbers, HS codes,
//!   origins), [`amount`] (carats and US$ in hundredths), [`date`], [`text`]; their shared
//!   error is [`value::ValueError`].
//! - [`certificate`]: the KP certificate and its cross-field rules; [`json`] parses the
//!   certificate JSON (docs/certificate-json.md), reporting every problem with its field path.
//! - [`document`]: signed documents (certificate, receipt, import confirmation, void, key
//!   rotation) with domain-separated Ed25519 signatures; [`receipt`] and [`merkle`]: one
//!   signature acknowledging a batch of messages; [`registry`]: participants' standing,
//!   unions, and signed registry changes and lists; [`seal`]: a certificate's compact
//!   signed attestation for QR codes; [`peering`]: this node's signed record of a change to
//!   the partners it trusts.
//! - [`codec`]: the one bincode configuration; [`frame`]: wire frames; [`armor`]: text
//!   armor for files that travel by e-mail.

pub mod amount;
pub mod armor;
pub mod certificate;
mod certificate_bytes;
pub mod codec;
pub mod codes;
pub mod date;
pub mod digest;
pub mod document;
pub mod frame;
pub mod json;
pub mod merkle;
#[cfg(feature = "openapi")]
mod openapi;
pub mod peering;
pub mod portable;
pub mod problem;
pub mod receipt;
pub mod registry;
pub mod seal;
pub mod text;
pub mod value;

pub use amount::{Carats, UsdAmount};
pub use certificate::{
    AnyParticipant, Certificate, CertificateContent, Declaration, Parcel, ParticipantDirectory, Party,
    PartyName, Problem, Problems, Shipment, ValidationContext,
};
pub use codes::{CertificateNumber, HsCode, Locode, Origin, ParticipantCode, TransportMode};
pub use date::{Date, Timestamp};
pub use digest::{Digest, MessageId};
pub use document::{
    Body, DocumentError, DocumentKind, ImportConfirmation, KeyId, KeyRotation, ReceiptBatch, Resolution,
    SignedDocument, Void,
};
pub use frame::{Frame, FrameError, RejectCode};
pub use json::CertificateDraft;
pub use peering::{PeerAction, PeerChange};
pub use receipt::{MessageReceipt, ReceiptItem, ReceiptProof};
pub use registry::{ParticipantEntry, ParticipantList, ParticipantStatus, RegistryChange};
pub use text::{DeclarationCode, LongText, Text};
pub use value::{Expected, ValueError};

/// Re-exported so that callers sign and verify with the same Ed25519 types.
pub use ed25519_dalek;
