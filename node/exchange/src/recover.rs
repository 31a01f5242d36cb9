//! Recovery from partners, without I/O (see docs/protocol.md, "Recovery from partners").
//!
//! A node restored from an older backup asks each partner for their own traffic since the
//! backup. The partner's side is [`page`]: one bounded page of what it holds of the asker's
//! traffic, read from its log (only entries exchanged with the asker, so nothing of a third
//! participant ever leaves it). The asker's side is [`check_sent`] and [`check_received`]:
//! nothing a partner sends back is believed before it verifies against the asker's own key
//! history (its own documents, its own receipts) and the partner's (the partner's receipts).

use kp_keys::KeyHistory;
use kp_protocol::frame::{Recovered, MAX_RECOVER_ITEMS, MAX_RECOVER_PAGE_BYTES, MAX_RECOVER_SCAN};
use kp_protocol::{
    Certificate, CertificateNumber, DocumentKind, ImportConfirmation, KeyRotation, MessageReceipt,
    ParticipantCode, Resolution, SignedDocument, Timestamp, Void,
};

use crate::engine::assigned_parts;
use crate::storage::{decode_log, log_key, EntryBody, Storage, StoreError, Tree};
use crate::verify::Content;

/// One page of a partner's answer.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Recovered>,
    /// Where the next page starts; `None`: the log was read to its end.
    pub next: Option<u64>,
    /// On the last page: the highest number of the asker's the partner holds.
    pub highest_number: Option<CertificateNumber>,
}

/// What a partner answers `asker`'s request: from its log after position `cursor`, reading
/// at most [`MAX_RECOVER_SCAN`] entries, at most `max_items` (capped at
/// [`MAX_RECOVER_ITEMS`]) and about [`MAX_RECOVER_PAGE_BYTES`] of items:
/// - each document it delivered to `asker` whose receipt puts it above `after_seq` in the
///   asker's log, with that receipt ([`Recovered::Received`]);
/// - each document `asker` signed at or after `since` and delivered to it, with the receipt
///   it gave ([`Recovered::Sent`]).
pub fn page<S: Storage + ?Sized>(
    store: &S,
    asker: ParticipantCode,
    after_seq: u64,
    since: Timestamp,
    cursor: u64,
    max_items: u16,
) -> Result<Page, StoreError> {
    let max_items = usize::from(max_items.clamp(1, MAX_RECOVER_ITEMS));
    let mut page = Page::default();
    let (mut at, mut scanned, mut bytes) = (cursor, 0usize, 0usize);
    let end = log_key(u64::MAX);
    loop {
        let want = 256.min(MAX_RECOVER_SCAN - scanned);
        let chunk = store.range(Tree::Log, &log_key(at.saturating_add(1)), &end, want)?;
        if chunk.is_empty() {
            page.highest_number = highest_number(store, asker)?;
            return Ok(page);
        }
        for (key, value) in chunk {
            let (entry, record) = decode_log(&key, &value)?;
            at = entry.seq.max(at);
            scanned += 1;
            let item = match entry.body {
                EntryBody::Sent { peer, document, receipt }
                    if peer == asker && receipt.proof.item.log_seq > after_seq =>
                {
                    Some(Recovered::Received { document, receipt: *receipt })
                }
                EntryBody::Received { peer, document }
                    if peer == asker && document.signer == asker && document.signed_at >= since =>
                {
                    record.receipt.map(|receipt| Recovered::Sent { document, receipt })
                }
                _ => None,
            };
            if let Some(item) = item {
                bytes += item_bytes(&item);
                page.items.push(item);
            }
            if page.items.len() >= max_items || bytes >= MAX_RECOVER_PAGE_BYTES || scanned >= MAX_RECOVER_SCAN
            {
                page.next = Some(at);
                return Ok(page);
            }
        }
    }
}

/// About the encoded size of an item (its two documents and the proof's path).
fn item_bytes(item: &Recovered) -> usize {
    let (Recovered::Sent { document, receipt } | Recovered::Received { document, receipt }) = item;
    document.body.len() + receipt.batch.body.len() + receipt.proof.path.len() * 32 + 512
}

/// The highest number of the form `asker` assigns among the certificates held here, read
/// a thousand keys at a time.
fn highest_number<S: Storage + ?Sized>(
    store: &S,
    asker: ParticipantCode,
) -> Result<Option<CertificateNumber>, StoreError> {
    let mut start = format!("{asker}-").into_bytes();
    let end = format!("{asker}.").into_bytes();
    let mut best: Option<((i32, u64), CertificateNumber)> = None;
    loop {
        let chunk = store.range(Tree::Certs, &start, &end, 1024)?;
        let Some((last, _)) = chunk.last() else { return Ok(best.map(|(_, n)| n)) };
        start = last.clone();
        start.push(0);
        for (key, _) in &chunk {
            let Some(number) =
                std::str::from_utf8(key).ok().and_then(|s| s.parse::<CertificateNumber>().ok())
            else {
                continue;
            };
            if let Some(parts) = assigned_parts(&number, asker) {
                if best.as_ref().is_none_or(|(b, _)| parts > *b) {
                    best = Some((parts, number));
                }
            }
        }
    }
}

/// Checks a [`Recovered::Sent`] item on the asking node `me`: the document is its own,
/// signed with a key its own key history (`own`) made valid then, of a kind it sends,
/// addressed to `peer`; the receipt is `peer`'s (checked against `peer_history`) for exactly
/// this document. Returns the document's content.
pub fn check_sent(
    me: ParticipantCode,
    peer: ParticipantCode,
    own: &KeyHistory,
    peer_history: &KeyHistory,
    document: &SignedDocument,
    receipt: &MessageReceipt,
) -> Result<Content, String> {
    if document.signer != me {
        return Err(format!(
            "a document signed by {}, not by this node, offered as its own",
            document.signer
        ));
    }
    let key = own.signing_key_at(document.key_id, document.signed_at).map_err(|e| {
        format!(
            "not signed with a key of this node's own history: {e} (if this node rotated its keys after the \
             backup, restore with `kpnode restore --keys` and the current keys)"
        )
    })?;
    document.verify_signature(key).map_err(|e| format!("this node's signature does not verify: {e}"))?;
    let content = match document.kind {
        DocumentKind::Certificate => {
            let c: Certificate = document.body().map_err(|e| e.to_string())?;
            if c.delivered_to() != peer {
                return Err(format!(
                    "certificate {} is addressed to {}, not {peer}",
                    c.number,
                    c.delivered_to()
                ));
            }
            Content::Certificate(c)
        }
        DocumentKind::ImportConfirmation => {
            Content::Confirmation(document.body::<ImportConfirmation>().map_err(|e| e.to_string())?)
        }
        DocumentKind::Void => Content::Void(document.body::<Void>().map_err(|e| e.to_string())?),
        DocumentKind::Resolution => {
            Content::Resolution(document.body::<Resolution>().map_err(|e| e.to_string())?)
        }
        DocumentKind::KeyRotation => {
            Content::Rotation(document.body::<KeyRotation>().map_err(|e| e.to_string())?)
        }
        other => return Err(format!("a {} document is not sent to partners", other.name())),
    };
    let key = peer_history
        .signing_key_at(receipt.batch.key_id, receipt.batch.signed_at)
        .map_err(|e| format!(
            "{peer}'s receipt is signed with a key not in its history: {e} (if {peer} rotated its keys after the \
             backup, enrol its current bundle with `kpnode peer add`)"
        ))?;
    receipt
        .verify(document.message_id(), key, peer, me)
        .map_err(|e| format!("{peer}'s receipt does not verify: {e}"))?;
    Ok(content)
}

/// Checks the receipt of a [`Recovered::Received`] item on the asking node `me`: its own
/// (checked against `own`) for exactly this document from `peer`. Returns when this node
/// received the document then: the document is checked again as of that time.
pub fn check_received(
    me: ParticipantCode,
    peer: ParticipantCode,
    own: &KeyHistory,
    document: &SignedDocument,
    receipt: &MessageReceipt,
) -> Result<Timestamp, String> {
    if document.signer != peer {
        return Err(format!("a document signed by {} offered as {peer}'s", document.signer));
    }
    let key = own
        .signing_key_at(receipt.batch.key_id, receipt.batch.signed_at)
        .map_err(|e| format!("the receipt is not signed with a key of this node's own history: {e}"))?;
    receipt
        .verify(document.message_id(), key, me, peer)
        .map_err(|e| format!("this node's receipt does not verify: {e}"))?;
    Ok(receipt.received_at())
}

/// The order items are stored in: key rotations first (later documents may be signed with
/// the keys they bring), then certificates, then what follows them up, each by signing time.
pub fn order(item: &Recovered) -> (u8, Timestamp) {
    let d = item.document();
    let rank = match d.kind {
        DocumentKind::KeyRotation => 0,
        DocumentKind::Certificate => 1,
        DocumentKind::ImportConfirmation | DocumentKind::Void => 2,
        _ => 3,
    };
    (rank, d.signed_at)
}

/// Checks the time of a partner's receipt for this node's `document` (it becomes the
/// document's `delivered_at`): not before the document was signed, nor after `now`, each
/// within `tolerance_ms` of clock difference. A partner cannot date a delivery at will.
pub fn check_receipt_time(
    document: &SignedDocument,
    receipt: &MessageReceipt,
    now: Timestamp,
    tolerance_ms: i64,
) -> Result<(), String> {
    let at = receipt.batch.signed_at.unix_millis();
    if at < document.signed_at.unix_millis().saturating_sub(tolerance_ms) {
        return Err(format!(
            "the receipt is dated {}, before the document was signed ({})",
            receipt.batch.signed_at, document.signed_at
        ));
    }
    if at > now.unix_millis().saturating_add(tolerance_ms) {
        return Err(format!("the receipt is dated {}, in the future", receipt.batch.signed_at));
    }
    Ok(())
}
