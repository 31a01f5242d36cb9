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

/// Who did something on this node: the name of the console account signed in, the name of
/// the API token (`api.token_name` in node.toml) for the API and the CLI through it, or the
/// operating-system user of an offline CLI command. Kept inside the log entry of what they
/// did, so the entry's hash covers it and it cannot be changed later; never put in a signed
/// document or anything sent to a partner (a partner sees only the authority).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Encode, Decode, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Officer(String);

impl Officer {
    /// The longest name kept, in characters.
    pub const MAX_CHARS: usize = 64;

    /// A name of 1 to [`Officer::MAX_CHARS`] characters with no control characters and no
    /// space at either end.
    pub fn new(name: &str) -> Result<Officer, String> {
        if name.is_empty() {
            return Err("is empty; give the name of the person or system acting".into());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!("is longer than {} characters", Self::MAX_CHARS));
        }
        if name.chars().any(char::is_control) {
            return Err("holds a control character".into());
        }
        if name.trim() != name {
            return Err("begins or ends with a space".into());
        }
        Ok(Officer(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Officer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the hash-chained log. Nothing in the log is ever rewritten.
///
/// Its stored bytes are what its hash covers, so an entry keeps the layout it was written in:
/// entries written before store format `kpnode-store/3` have no `officer` and are read (and
/// hashed) in their format-2 layout; every entry written since carries `officer` (which may
/// be `None`: a partner's delivery has no officer of this node). The two layouts cannot be
/// mistaken for each other: format 3 is format 2 followed by the officer, and a record must
/// decode to its last byte.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LogEntry {
    pub seq: u64,
    pub prev_hash: Digest,
    pub recorded_at: Timestamp,
    pub body: EntryBody,
    /// Who did what the entry records, on this node.
    pub officer: Option<Officer>,
    pub layout: EntryLayout,
}

/// The store format an entry was written in (see [`LogEntry`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryLayout {
    /// Written by a kpnode of store format 2: no officer.
    Format2,
    /// Written by store format 3 and later.
    Format3,
}

/// The stored layouts of [`LogEntry`], field by field (bincode encodes a struct as its fields
/// in order, so these give the same bytes as the entry itself had).
#[derive(Encode)]
struct Format2Ref<'a> {
    seq: u64,
    prev_hash: &'a Digest,
    recorded_at: &'a Timestamp,
    body: &'a EntryBody,
}

#[derive(Encode)]
struct Format3Ref<'a> {
    seq: u64,
    prev_hash: &'a Digest,
    recorded_at: &'a Timestamp,
    body: &'a EntryBody,
    officer: &'a Option<Officer>,
}

#[derive(Decode)]
struct Format2 {
    seq: u64,
    prev_hash: Digest,
    recorded_at: Timestamp,
    body: EntryBody,
}

#[derive(Decode)]
struct Format3 {
    seq: u64,
    prev_hash: Digest,
    recorded_at: Timestamp,
    body: EntryBody,
    officer: Option<Officer>,
}

impl Encode for LogEntry {
    fn encode<E: bincode::enc::Encoder>(&self, e: &mut E) -> Result<(), bincode::error::EncodeError> {
        let (seq, prev_hash, recorded_at, body) = (self.seq, &self.prev_hash, &self.recorded_at, &self.body);
        match self.layout {
            EntryLayout::Format2 => Format2Ref { seq, prev_hash, recorded_at, body }.encode(e),
            EntryLayout::Format3 => {
                Format3Ref { seq, prev_hash, recorded_at, body, officer: &self.officer }.encode(e)
            }
        }
    }
}

impl LogEntry {
    /// A new entry (in today's layout).
    pub fn new(
        seq: u64,
        prev_hash: Digest,
        recorded_at: Timestamp,
        body: EntryBody,
        officer: Option<Officer>,
    ) -> LogEntry {
        LogEntry { seq, prev_hash, recorded_at, body, officer, layout: EntryLayout::Format3 }
    }

    /// Reads an entry's stored bytes in whichever layout they were written (see
    /// [`LogEntry`]); the error is today's layout's.
    pub fn decode_stored(bytes: &[u8]) -> Result<LogEntry, kp_protocol::codec::CodecError> {
        match kp_protocol::codec::decode::<Format3>(bytes) {
            Ok(e) => Ok(LogEntry {
                seq: e.seq,
                prev_hash: e.prev_hash,
                recorded_at: e.recorded_at,
                body: e.body,
                officer: e.officer,
                layout: EntryLayout::Format3,
            }),
            Err(today) => match kp_protocol::codec::decode::<Format2>(bytes) {
                Ok(e) => Ok(LogEntry {
                    seq: e.seq,
                    prev_hash: e.prev_hash,
                    recorded_at: e.recorded_at,
                    body: e.body,
                    officer: None,
                    layout: EntryLayout::Format2,
                }),
                Err(_) => Err(today),
            },
        }
    }

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

    /// The other participant; for a local record, the partner whose enrolment changed, or
    /// else the signer (this node).
    pub fn peer(&self) -> ParticipantCode {
        match &self.body {
            EntryBody::Sent { peer, .. } | EntryBody::Received { peer, .. } => *peer,
            EntryBody::Recorded { document } => match document.kind {
                kp_protocol::DocumentKind::PeerChange => {
                    document.body::<kp_protocol::PeerChange>().map_or(document.signer, |c| c.participant)
                }
                _ => document.signer,
            },
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

/// What an entry records.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub enum EntryBody {
    /// A document this node sent, with the peer's signed receipt for it.
    Sent { peer: ParticipantCode, document: SignedDocument, receipt: Box<MessageReceipt> },
    /// A document this node received and acknowledged. The receipt it signed commits to this
    /// entry's hash, so it is kept beside the entry (in `messages`), not inside it.
    Received { peer: ParticipantCode, document: SignedDocument },
    /// A document this node signed for its own record (a participant registry change, a
    /// change to a partner's enrolment).
    Recorded { document: SignedDocument },
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
    /// Not confirmed by its expiry date. Never stored: derived when read. A confirmation that
    /// comes later still counts (a late arrival): the status is then the confirmation's.
    Expired,
    /// Superseded by a certificate that names it in `replaces` (on both sides).
    Replaced,
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
            CertStatus::Replaced => "replaced",
        }
    }

    pub const ALL: [CertStatus; 9] = [
        CertStatus::Queued,
        CertStatus::Delivered,
        CertStatus::Received,
        CertStatus::ImportConfirmed,
        CertStatus::ImportDiscrepancy,
        CertStatus::Rejected,
        CertStatus::Voided,
        CertStatus::Expired,
        CertStatus::Replaced,
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

/// That a certificate was replaced (`meta`, `replaced/<number>`): by which certificate, and
/// what its status was before, to go back to if the replacement is refused.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplacementRecord {
    /// The certificate that replaces it.
    pub by: CertificateNumber,
    #[cfg_attr(feature = "openapi", schema(value_type = Digest))]
    pub message_id: MessageId,
    /// When the replacement was signed.
    pub at: Timestamp,
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub previous: CertStatus,
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
