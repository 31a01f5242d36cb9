//! What the engine did that an operator should hear about. The engine does no I/O and so
//! does not log: it returns these with each batch ([`Applied::events`](super::Applied)),
//! and the node writes them to its log once the batch is durable.

use kp_protocol::{CertificateNumber, MessageId, ParticipantCode};

use crate::trust::Distrust;

/// One thing worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A batch of deliveries was checked under trust withdrawn before it was stored.
    UntrustedBatchRefused {
        peer: ParticipantCode,
        why: Distrust,
        documents: usize,
    },
    /// A batch of deliveries larger than one receipt batch acknowledges was refused whole.
    OversizedBatchRefused {
        peer: ParticipantCode,
        documents: usize,
        max: usize,
    },
    /// A document that fails a check now was stored before: its original receipt is given.
    ResendOfStored {
        peer: ParticipantCode,
        message: MessageId,
        now_refused: String,
    },
    /// A receipt signed with a key the stored history does not make valid then was not
    /// recorded; its message stays queued.
    ReceiptOutsideHistory {
        peer: ParticipantCode,
        message: MessageId,
        detail: String,
    },
    /// A delivery signed with a key the stored history does not hold was refused.
    OutsideHistory {
        peer: ParticipantCode,
        message: MessageId,
        detail: String,
    },
    CertificateReceived {
        peer: ParticipantCode,
        number: CertificateNumber,
    },
    /// A certificate was stored with its participant under enhanced vigilance.
    Vigilance {
        peer: ParticipantCode,
        number: CertificateNumber,
        why: String,
    },
    ConfirmationReceived {
        peer: ParticipantCode,
        number: CertificateNumber,
        status: &'static str,
    },
    /// An import confirmation of a certificate voided here was refused.
    ConfirmationOfVoided {
        peer: ParticipantCode,
        number: CertificateNumber,
    },
    VoidReceived {
        peer: ParticipantCode,
        number: CertificateNumber,
        reason: String,
    },
    DiscrepancyResolved {
        peer: ParticipantCode,
        number: CertificateNumber,
    },
    /// The importer refused this node's void.
    VoidRefused {
        peer: ParticipantCode,
        number: CertificateNumber,
        detail: String,
    },
    /// A peer record that could not be loaded was replaced by an enrolled bundle; when the
    /// bundle is a new identity, the old record is archived (old and new fingerprints).
    UnloadableRecordReplaced {
        peer: ParticipantCode,
        error: String,
        archived: Option<(String, String)>,
    },
    /// A certificate exchanged with `peer` was replaced by another.
    CertificateReplaced {
        peer: ParticipantCode,
        number: CertificateNumber,
        by: CertificateNumber,
    },
    /// The importer refused a replacement, so the certificate it replaced stands again.
    ReplacementRefused {
        peer: ParticipantCode,
        number: CertificateNumber,
        by: CertificateNumber,
        detail: String,
    },
    /// The operator enrolled a new identity for the peer; the old one is archived.
    IdentityReplaced {
        peer: ParticipantCode,
        old: String,
        new: String,
    },
}

impl Event {
    /// Whether an operator should look (a warning) rather than just read (information).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::UntrustedBatchRefused { .. }
                | Event::OversizedBatchRefused { .. }
                | Event::OutsideHistory { .. }
                | Event::ReceiptOutsideHistory { .. }
                | Event::Vigilance { .. }
                | Event::ConfirmationOfVoided { .. }
                | Event::VoidRefused { .. }
                | Event::UnloadableRecordReplaced { .. }
                | Event::IdentityReplaced { .. }
                | Event::ReplacementRefused { .. }
        )
    }

    /// The peer the event concerns.
    pub fn peer(&self) -> ParticipantCode {
        match self {
            Event::UntrustedBatchRefused { peer, .. }
            | Event::OversizedBatchRefused { peer, .. }
            | Event::ResendOfStored { peer, .. }
            | Event::OutsideHistory { peer, .. }
            | Event::ReceiptOutsideHistory { peer, .. }
            | Event::CertificateReceived { peer, .. }
            | Event::Vigilance { peer, .. }
            | Event::ConfirmationReceived { peer, .. }
            | Event::ConfirmationOfVoided { peer, .. }
            | Event::VoidReceived { peer, .. }
            | Event::DiscrepancyResolved { peer, .. }
            | Event::VoidRefused { peer, .. }
            | Event::UnloadableRecordReplaced { peer, .. }
            | Event::CertificateReplaced { peer, .. }
            | Event::ReplacementRefused { peer, .. }
            | Event::IdentityReplaced { peer, .. } => *peer,
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::UntrustedBatchRefused { peer, why, documents } => write!(
                f,
                "refused a batch of {documents} deliveries from {peer} checked under trust withdrawn since: {why}"
            ),
            Event::OversizedBatchRefused { peer, documents, max } => write!(
                f,
                "refused a batch of {documents} deliveries from {peer}: one receipt batch acknowledges at most \
{max}; nothing of it was stored, and the link closes so they are sent again"
            ),
            Event::ResendOfStored { peer, message, now_refused } => write!(
                f,
                "a resend from {peer} of stored message {message:?} gets its original receipt (it would be refused now: {now_refused})"
            ),
            Event::ReceiptOutsideHistory { peer, message, detail } => write!(
                f,
                "did not record {peer}'s receipt for message {message:?}: {detail}; the message stays queued, and a resend gets the same receipt: ask {peer}'s operator which key signed it"
            ),
            Event::OutsideHistory { peer, message, detail } => write!(
                f,
                "refused message {message:?} from {peer}, signed with a key the stored history does not hold: {detail}"
            ),
            Event::CertificateReceived { peer, number } => write!(f, "certificate {number} received from {peer}"),
            Event::Vigilance { peer, number, why } => {
                write!(f, "certificate {number} from {peer} accepted under enhanced vigilance: {why}")
            }
            Event::ConfirmationReceived { peer, number, status } => {
                write!(f, "import confirmation of {number} received from {peer} (now {status})")
            }
            Event::ConfirmationOfVoided { peer, number } => {
                write!(f, "refused {peer}'s import confirmation of {number}, which was voided here")
            }
            Event::VoidReceived { peer, number, reason } => {
                write!(f, "certificate {number} voided by its issuer {peer}: {reason}")
            }
            Event::DiscrepancyResolved { peer, number } => {
                write!(f, "import discrepancy of {number} resolved by {peer}")
            }
            Event::VoidRefused { peer, number, detail } => {
                write!(f, "the importer {peer} refused the void of {number}: {detail}")
            }
            Event::UnloadableRecordReplaced { peer, error, archived: None } => {
                write!(f, "replaced the record of {peer}, which could not be loaded ({error})")
            }
            Event::UnloadableRecordReplaced { peer, error, archived: Some((old, new)) } => write!(
                f,
                "replaced the record of {peer}, which could not be loaded ({error}), with a new identity {new}; \
the old one ({old}) is archived"
            ),
            Event::CertificateReplaced { peer, number, by } => {
                write!(f, "certificate {number} (exchanged with {peer}) is replaced by {by}")
            }
            Event::ReplacementRefused { peer, number, by, detail } => write!(
                f,
                "the importer {peer} refused {by}, the replacement of {number}: {detail}; {number} stands again as it was"
            ),
            Event::IdentityReplaced { peer, old, new } => write!(
                f,
                "the identity of {peer} is replaced by {new}; the old one ({old}) is archived and no longer \
trusted for new documents"
            ),
        }
    }
}
