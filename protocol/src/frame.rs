//! Wire frames between peer nodes: a 4-byte big-endian length, then one bincode [`Frame`].
//!
//! The decoder separates "incomplete" (`Ok(None)`: read more) from "invalid" (`Err`: close
//! the link), and refuses an announced length over the maximum before anything is allocated
//! or read.

use std::fmt;

use bincode::{Decode, Encode};

use crate::codec::{self, DECODE_LIMIT};
use crate::codes::{CertificateNumber, ParticipantCode};
use crate::date::Timestamp;
use crate::digest::MessageId;
use crate::document::SignedDocument;
use crate::receipt::{MessageReceipt, ReceiptProof};

/// The protocol version carried in `Hello`. A peer speaking another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// The default maximum frame size (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1 << 20;
/// The largest maximum a node may configure.
pub const MAX_FRAME_BYTES_LIMIT: u32 = DECODE_LIMIT as u32;
/// Reject details are cut to this many characters.
pub const MAX_DETAIL_CHARS: usize = 512;

/// One message on a peer link.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub enum Frame {
    /// The first frame each side sends.
    Hello {
        version: u16,
        participant: ParticipantCode,
        software: String,
    },
    /// A document for the receiver. `message_id` is the SHA-256 of the document's bytes.
    Deliver {
        message_id: MessageId,
        document: SignedDocument,
    },
    /// Receipts for delivered documents: one signed batch and each message's proof.
    Receipt {
        batch: SignedDocument,
        proofs: Vec<ReceiptProof>,
    },
    /// A permanent refusal of one message.
    Reject {
        message_id: MessageId,
        code: RejectCode,
        detail: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Recovery from partners (see docs/protocol.md): a node restored from an older backup
    /// asks a partner, on a connection it dialled, for one page of their own traffic.
    /// Appended after the other variants so their encodings do not change.
    RecoverRequest {
        request_id: u64,
        /// The asker's restored log head: documents the partner delivered that the asker
        /// receipted at a log position above it are sent back.
        after_seq: u64,
        /// Documents the asker signed at or after this time that the partner stored are sent
        /// back (the asker's restored log head's time, less a margin).
        since: Timestamp,
        /// Where the page starts: 0, or the `next` of the previous page.
        cursor: u64,
        /// At most this many items (capped at [`MAX_RECOVER_ITEMS`]).
        max_items: u16,
    },
    /// One item of a recovery page (boxed: it holds two documents, and every frame would
    /// otherwise be as large; the encoding is the same).
    RecoverItem {
        request_id: u64,
        item: Box<Recovered>,
    },
    /// The end of a recovery page.
    RecoverDone {
        request_id: u64,
        /// The cursor of the next page; `None`: there is nothing more.
        next: Option<u64>,
        /// The highest certificate number of the asker the partner holds (in the form
        /// `<CC>-<YYYY>-<seq>` the asker assigns), on the last page only.
        highest_number: Option<CertificateNumber>,
    },
}

/// Most items one recovery page carries.
pub const MAX_RECOVER_ITEMS: u16 = 256;
/// Most bytes of documents and receipts one recovery page carries (each item is also one
/// frame within the asker's frame limit).
pub const MAX_RECOVER_PAGE_BYTES: usize = 8 << 20;
/// Most log entries a partner reads to answer one page: a page with fewer items (even none)
/// and a `next` cursor says "ask again from there", so one request costs bounded work.
pub const MAX_RECOVER_SCAN: usize = 4096;

/// A document of the asker's own traffic with the partner, as the partner holds it. Named
/// from the asker's side.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub enum Recovered {
    /// A document the asker signed and delivered, with the receipt the partner gave for it
    /// (committing to the partner's log position).
    Sent { document: SignedDocument, receipt: MessageReceipt },
    /// A document the partner delivered to the asker, with the receipt the asker gave for it
    /// (committing to the asker's log position, above the request's `after_seq`).
    Received { document: SignedDocument, receipt: MessageReceipt },
}

impl Recovered {
    pub fn document(&self) -> &SignedDocument {
        match self {
            Recovered::Sent { document, .. } | Recovered::Received { document, .. } => document,
        }
    }
}

impl Frame {
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Deliver { .. } => "Deliver",
            Frame::Receipt { .. } => "Receipt",
            Frame::Reject { .. } => "Reject",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::RecoverRequest { .. } => "RecoverRequest",
            Frame::RecoverItem { .. } => "RecoverItem",
            Frame::RecoverDone { .. } => "RecoverDone",
        }
    }

    /// A `Reject` with its detail cut to [`MAX_DETAIL_CHARS`].
    pub fn reject(message_id: MessageId, code: RejectCode, detail: impl fmt::Display) -> Frame {
        let detail: String = detail.to_string().chars().take(MAX_DETAIL_CHARS).collect();
        Frame::Reject { message_id, code, detail }
    }
}

/// Why a receiver refused a message for good. The sender marks the message rejected and
/// shows the code and detail to its operator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RejectCode {
    /// The signer is not the participant at the other end of the link.
    WrongSigner,
    /// The key the document names was not valid for its signer at `signed_at`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// The document's content breaks the rules (the detail lists the problems).
    InvalidDocument,
    /// The document is not addressed to the receiver.
    NotAddressedToUs,
    /// Same certificate number, different content.
    Conflict,
    /// A confirmation or void for a certificate the receiver does not have.
    UnknownCertificate,
    /// The certificate was voided.
    Voided,
    /// `signed_at` lies too far in the future for the receiver's clock.
    ClockSkew,
    /// The certificate had expired when it arrived.
    Expired,
    /// The sender's participant is suspended from the scheme.
    Suspended,
    /// The sender's participant is restricted and the document does not satisfy the rule.
    Restricted,
    /// A document kind this receiver does not accept from this sender.
    NotAllowed,
}

impl RejectCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectCode::WrongSigner => "wrong_signer",
            RejectCode::UnknownKey => "unknown_key",
            RejectCode::BadSignature => "bad_signature",
            RejectCode::InvalidDocument => "invalid_document",
            RejectCode::NotAddressedToUs => "not_addressed_to_us",
            RejectCode::Conflict => "conflict",
            RejectCode::UnknownCertificate => "unknown_certificate",
            RejectCode::Voided => "voided",
            RejectCode::ClockSkew => "clock_skew",
            RejectCode::Expired => "expired",
            RejectCode::Suspended => "suspended",
            RejectCode::Restricted => "restricted",
            RejectCode::NotAllowed => "not_allowed",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes on a link are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum FrameError {
    #[error("announced frame of {announced} bytes exceeds the maximum of {max}")]
    TooLarge { announced: u64, max: u32 },
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(codec::CodecError),
}

/// The frame length announced by a 4-byte prefix, checked against `max`.
pub fn announced_len(prefix: [u8; LENGTH_PREFIX], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max.min(MAX_FRAME_BYTES_LIMIT) {
        return Err(FrameError::TooLarge { announced: len.into(), max });
    }
    Ok(len as usize)
}

/// Decodes one frame from the start of `buf`. `Ok(None)`: not all of it has arrived yet.
/// On success, also returns how many bytes of `buf` it used.
pub fn decode_frame(buf: &[u8], max: u32) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let mut p = [0u8; LENGTH_PREFIX];
    p.copy_from_slice(prefix);
    let len = announced_len(p, max)?;
    let Some(body) = buf.get(LENGTH_PREFIX..LENGTH_PREFIX + len) else {
        return Ok(None);
    };
    let frame = codec::decode(body).map_err(FrameError::Malformed)?;
    Ok(Some((frame, LENGTH_PREFIX + len)))
}

/// Decodes one frame like [`decode_frame`]; for a `Deliver`, also returns the id of the
/// document as it actually is (SHA-256 of its bytes within the frame), so the receiver can
/// compare it with the id the frame claims without encoding the document again.
pub fn decode_frame_with_id(
    buf: &[u8],
    max: u32,
) -> Result<Option<(Frame, usize, Option<MessageId>)>, FrameError> {
    let Some((frame, used)) = decode_frame(buf, max)? else { return Ok(None) };
    let id = match &frame {
        Frame::Deliver { .. } => deliver_document_bytes(&buf[LENGTH_PREFIX..used]).map(crate::Digest::of),
        _ => None,
    };
    Ok(Some((frame, used, id)))
}

/// Where the document's bytes lie in a `Deliver` frame body: after the variant index (u32)
/// and the claimed message id (32 bytes). The encoding is fixed (`codec::config`), and a test
/// checks this against the encoder.
fn deliver_document_bytes(body: &[u8]) -> Option<&[u8]> {
    const DELIVER: [u8; 4] = 1u32.to_be_bytes();
    (body.get(..4)? == DELIVER).then(|| body.get(36..)).flatten()
}

/// Appends `frame`, length-prefixed, to `out`. Fails (appending nothing) if the frame would
/// be larger than `max`.
pub fn encode_frame(frame: &Frame, max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    codec::encode_into(frame, out);
    let len = out.len() - start - LENGTH_PREFIX;
    if len as u64 > u64::from(max.min(MAX_FRAME_BYTES_LIMIT)) {
        out.truncate(start);
        return Err(FrameError::TooLarge { announced: len as u64, max });
    }
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{SignedDocument, Void};
    use crate::{Digest, ParticipantCode, Timestamp};

    #[test]
    fn the_deliver_layout_matches_the_encoder() {
        let void = Void {
            certificate: "RU-2026-000001".parse().unwrap(),
            certificate_id: Digest::of(b"c"),
            reason: "issued in error".parse().unwrap(),
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let doc = SignedDocument::sign(
            &void,
            ParticipantCode::from_static("RU"),
            &key,
            Timestamp::from_unix_millis(1),
        );
        let frame = Frame::Deliver { message_id: Digest::of(b"claimed"), document: doc.clone() };
        let mut buf = Vec::new();
        encode_frame(&frame, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        let (back, used, id) = decode_frame_with_id(&buf, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
        assert_eq!((back, used), (frame, buf.len()));
        assert_eq!(id, Some(doc.message_id()));
        let ping = Frame::Ping { nonce: 1 };
        let mut buf = Vec::new();
        encode_frame(&ping, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        assert_eq!(decode_frame_with_id(&buf, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap().2, None);
    }
}
