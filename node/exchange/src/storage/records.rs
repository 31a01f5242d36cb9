//! What the store keeps, as bincode records. Every record type here is part of the on-disk
//! format (`*.v1` trees): change one only with a new tree version and a migration.

use bincode::{Decode, Encode};
use kp_protocol::{
    Carats, CertificateNumber, Date, Digest, MessageId, MessageReceipt, ParticipantCode, RejectCode,
    SignedDocument, Timestamp,
};
use serde::Serialize;

/// Which way a document travelled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Direction {
    Out,
    In,
    /// A record this node made for itself (a participant registry change).
    Local,
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Local => "local",
        }
    }
}

/// One entry of the hash-chained log. Nothing in the log is ever rewritten.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct LogEntry {
    pub seq: u64,
    pub prev_hash: Digest,
    pub recorded_at: Timestamp,
    pub body: EntryBody,
}

/// What an entry records.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub enum EntryBody {
    /// A document this node sent, with the peer's signed receipt for it.
    Sent { peer: ParticipantCode, document: SignedDocument, receipt: Box<MessageReceipt> },
    /// A document this node received and acknowledged. The receipt it signed commits to this
    /// entry's hash, so it is kept beside the entry (in `messages`), not inside it.
    Received { peer: ParticipantCode, document: SignedDocument },
    /// A document this node signed for its own record (a participant registry change).
    Recorded { document: SignedDocument },
}

impl LogEntry {
    /// `SHA-256(prev_hash ‖ entry)`.
    pub fn hash(&self) -> Digest {
        hash_entry_bytes(&self.prev_hash, &kp_protocol::codec::encode(self))
    }

    pub fn document(&self) -> &SignedDocument {
        match &self.body {
            EntryBody::Sent { document, .. }
            | EntryBody::Received { document, .. }
            | EntryBody::Recorded { document } => document,
        }
    }

    /// The other participant; for a local record, the signer (this node).
    pub fn peer(&self) -> ParticipantCode {
        match &self.body {
            EntryBody::Sent { peer, .. } | EntryBody::Received { peer, .. } => *peer,
            EntryBody::Recorded { document } => document.signer,
        }
    }

    pub fn direction(&self) -> Direction {
        match &self.body {
            EntryBody::Sent { .. } => Direction::Out,
            EntryBody::Received { .. } => Direction::In,
            EntryBody::Recorded { .. } => Direction::Local,
        }
    }
}

/// What the log stores under an entry's seq: the entry's canonical bytes (which the hash
/// covers) and, for an entry this node received, the receipt it gave for it. That receipt
/// commits to the entry's hash, so it is kept beside the entry, not inside it; keeping both
/// in one record costs one write per received document instead of two.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct LogRecord {
    pub entry: Vec<u8>,
    pub receipt: Option<MessageReceipt>,
}

/// The hash of an entry given its encoded bytes.
pub fn hash_entry_bytes(prev_hash: &Digest, entry_bytes: &[u8]) -> Digest {
    Digest::of_parts(&[&prev_hash.0, entry_bytes])
}

/// Where a certificate stands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CertStatus {
    /// Outbound, signed and stored, not yet acknowledged.
    Queued,
    /// Outbound, acknowledged by the importer's signed receipt.
    Delivered,
    /// Inbound, stored and acknowledged.
    Received,
    ImportConfirmed,
    ImportDiscrepancy,
    /// Outbound, refused by the importer's node.
    Rejected,
    Voided,
    /// Not confirmed by its expiry date. Never stored: derived when read.
    Expired,
}

impl CertStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CertStatus::Queued => "queued",
            CertStatus::Delivered => "delivered",
            CertStatus::Received => "received",
            CertStatus::ImportConfirmed => "import_confirmed",
            CertStatus::ImportDiscrepancy => "import_discrepancy",
            CertStatus::Rejected => "rejected",
            CertStatus::Voided => "voided",
            CertStatus::Expired => "expired",
        }
    }

    pub const ALL: [CertStatus; 8] = [
        CertStatus::Queued,
        CertStatus::Delivered,
        CertStatus::Received,
        CertStatus::ImportConfirmed,
        CertStatus::ImportDiscrepancy,
        CertStatus::Rejected,
        CertStatus::Voided,
        CertStatus::Expired,
    ];
}

impl std::str::FromStr for CertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CertStatus::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = CertStatus::ALL.iter().map(CertStatus::as_str).collect();
            format!("unknown status {s:?}; use one of {}", all.join(", "))
        })
    }
}

/// A certificate as this node tracks it. The signed certificate itself is in `messages`
/// (outbound, until acknowledged) or in the log.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct CertRecord {
    pub number: CertificateNumber,
    pub direction: Direction,
    /// The other participant: the importer for outbound, the exporter's node for inbound.
    pub peer: ParticipantCode,
    pub message_id: MessageId,
    pub status: CertStatus,
    pub issued_on: Date,
    pub expires_on: Date,
    pub signed_at: Timestamp,
    pub parcels: u32,
    pub carats: u64,
    pub value_usd: u64,
    /// Where the certificate sits in this node's log, once acknowledged.
    pub log_seq: Option<u64>,
    /// Outbound, while queued: its place in the peer's outbox.
    pub oseq: Option<u64>,
    pub delivered_at: Option<Timestamp>,
    pub confirmation: Option<ConfirmationRecord>,
    pub void: Option<VoidRecord>,
    pub rejection: Option<Rejection>,
    pub updated_at: Timestamp,
    /// Inbound from a restricted participant: accepted under enhanced vigilance, and why.
    pub vigilance: Option<String>,
}

/// An import confirmation and how it compares with the certificate.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmationRecord {
    #[cfg_attr(feature = "openapi", schema(value_type = Digest))]
    pub message_id: MessageId,
    pub received_on: Date,
    pub parcels: u32,
    pub carats: Carats,
    /// What differs from the certificate, if anything.
    pub discrepancy: Option<String>,
    pub confirmed_at: Timestamp,
    /// Whether the exporter's node acknowledged it (on the importing side).
    pub acknowledged: bool,
    /// Set if the exporter's node refused it.
    pub rejection: Option<Rejection>,
    /// Where the confirmation sits in this node's log: on the exporting side once received,
    /// on the importing side once the exporter acknowledged it.
    pub log_seq: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoidRecord {
    #[cfg_attr(feature = "openapi", schema(value_type = Digest))]
    pub message_id: MessageId,
    pub reason: String,
    pub voided_at: Timestamp,
    pub acknowledged: bool,
    pub rejection: Option<Rejection>,
    /// On the importing side: where the void sits in the log.
    pub log_seq: Option<u64>,
}

/// A signed settlement of a certificate's import discrepancy, by either participant.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolutionRecord {
    #[cfg_attr(feature = "openapi", schema(value_type = Digest))]
    pub message_id: MessageId,
    /// The participant whose node signed it.
    pub participant: ParticipantCode,
    pub note: String,
    pub resolved_by: String,
    pub resolved_at: Timestamp,
    /// Where the signed resolution sits in this node's log, on the receiving side.
    pub log_seq: Option<u64>,
}

/// A peer's permanent refusal.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    pub code: RejectCode,
    pub detail: String,
    pub at: Timestamp,
}

/// A document waiting in a peer's outbox, under its outbox sequence (a sequential key: the
/// hot path never writes a large record under a random key).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct OutboxEntry {
    pub message_id: MessageId,
    pub document: SignedDocument,
    /// The certificate the document concerns, if any.
    pub certificate: Option<CertificateNumber>,
}

/// An enrolled (or formerly enrolled) partner.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct PeerRecord {
    pub participant: ParticipantCode,
    /// The enrolment bundle as received (binary form).
    pub bundle: Vec<u8>,
    /// Rotation statements received from the peer since enrolment, in order.
    pub rotations: Vec<SignedDocument>,
    /// Endpoints to dial; from the bundle unless the operator overrode them.
    pub endpoints: Vec<String>,
    pub enrolled_at: Timestamp,
    /// Set when the operator removed the peer; its queued messages stay queued.
    pub removed_at: Option<Timestamp>,
}

/// An identity a peer had before the operator replaced it (`peer add --replace-identity`),
/// under the participant's code and the archive's number (big-endian `u32`). Never trusted
/// for new documents; kept so that what was signed under it still verifies.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct ArchivedIdentity {
    pub record: PeerRecord,
    pub replaced_at: Timestamp,
}

/// The key of a peer's `n`th archived identity.
pub fn archive_key(participant: ParticipantCode, n: u32) -> Vec<u8> {
    let mut k = participant.as_bytes().to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The log's head, kept in `meta` so start-up never scans the log.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, Default)]
pub struct LogHead {
    /// The seq the next entry gets (entries are numbered from 1).
    pub next_seq: u64,
    pub last_hash: Digest,
}

/// Counters kept in `meta`, updated with every batch, so nothing counts by scanning.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, Default, Serialize)]
pub struct Counts {
    pub certificates_out: u64,
    pub certificates_in: u64,
    /// Inbound certificates accepted under enhanced vigilance.
    pub vigilance: u64,
    pub queued: u64,
    pub next_oseq: u64,
}

/// A remembered `Idempotency-Key` of a submission (`meta`, `idempotency/<key>`): the
/// certificate the first request with that key produced, and what that request carried, so a
/// retried request gets the first answer and a reused key with other content is refused.
/// Written in the same commit as the certificate, so a crash between the flush and the HTTP
/// answer cannot separate them.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request body.
    pub content: Digest,
    pub number: CertificateNumber,
    /// When the first request was stored; the key is remembered for
    /// [`crate::engine::IDEMPOTENCY_WINDOW_DAYS`] from then.
    pub at: Timestamp,
}
