//! Signed receipts. A receiver acknowledges a whole group commit with one signature over the
//! Merkle root of its items ([`ReceiptBatch`]); the receipt of one message is that signed
//! batch plus the message's item and inclusion proof ([`MessageReceipt`]). It says: receiver
//! R stored message M at position `log_seq` of its log, in an entry whose hash is
//! `entry_hash`, at time `signed_at`.

use bincode::{Decode, Encode};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;

use crate::codec;
use crate::codes::ParticipantCode;
use crate::date::Timestamp;
use crate::digest::{Digest, MessageId};
use crate::document::{DocumentError, ReceiptBatch, SignedDocument};
use crate::merkle;

/// What a receipt says about one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct ReceiptItem {
    pub message_id: MessageId,
    pub log_seq: u64,
    pub entry_hash: Digest,
}

impl ReceiptItem {
    pub fn leaf(&self) -> Digest {
        merkle::leaf_hash(&codec::encode(self))
    }
}

/// One item of a batch and the path from its leaf to the batch's root.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct ReceiptProof {
    pub item: ReceiptItem,
    pub index: u32,
    pub path: Vec<Digest>,
}

/// The complete receipt for one message, as the sender stores it in its log.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct MessageReceipt {
    pub batch: SignedDocument,
    pub proof: ReceiptProof,
}

/// Why a receipt is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("the receipt is signed by {signer}, but the message was sent to {expected}")]
    WrongReceiver { signer: ParticipantCode, expected: ParticipantCode },
    #[error("the receipt acknowledges messages from {found}, not from {expected}")]
    WrongSender { found: ParticipantCode, expected: ParticipantCode },
    #[error("the receipt's inclusion proof does not lead to the signed root")]
    BadProof,
    #[error("the receipt is for message {found:?}, not {expected:?}")]
    WrongMessage { found: MessageId, expected: MessageId },
}

/// Signs one receipt for all `items` and returns it with each item's proof, in order.
/// `None` if `items` is empty.
pub fn sign_batch(
    items: &[ReceiptItem],
    receiver: ParticipantCode,
    sender: ParticipantCode,
    key: &SigningKey,
    received_at: Timestamp,
) -> Option<(SignedDocument, Vec<ReceiptProof>)> {
    sign_batch_with(items, receiver, sender, |body| SignedDocument::sign(body, receiver, key, received_at))
}

/// As [`sign_batch`], with the signature made by `sign` (which picks the key and the time).
pub fn sign_batch_with(
    items: &[ReceiptItem],
    receiver: ParticipantCode,
    sender: ParticipantCode,
    sign: impl FnOnce(&ReceiptBatch) -> SignedDocument,
) -> Option<(SignedDocument, Vec<ReceiptProof>)> {
    match try_sign_batch_with(items, receiver, sender, |b| Ok::<_, std::convert::Infallible>(sign(b))) {
        Ok(signed) => signed,
        Err(never) => match never {},
    }
}

/// [`sign_batch_with`] for a key that can fail to sign (one in a hardware token): the error
/// comes back and nothing is made.
pub fn try_sign_batch_with<E>(
    items: &[ReceiptItem],
    receiver: ParticipantCode,
    sender: ParticipantCode,
    sign: impl FnOnce(&ReceiptBatch) -> Result<SignedDocument, E>,
) -> Result<Option<(SignedDocument, Vec<ReceiptProof>)>, E> {
    let leaves: Vec<Digest> = items.iter().map(ReceiptItem::leaf).collect();
    let Some((root, paths)) = merkle::root_and_proofs(&leaves) else { return Ok(None) };
    let Ok(count) = u32::try_from(items.len()) else { return Ok(None) };
    let body = ReceiptBatch { receiver, sender, count, root };
    let batch = sign(&body)?;
    let proofs = items
        .iter()
        .zip(paths)
        .enumerate()
        .map(|(i, (item, path))| ReceiptProof { item: *item, index: i as u32, path })
        .collect();
    Ok(Some((batch, proofs)))
}

/// Checks a batch's signature and parties; the result is then used to check each proof
/// without verifying the signature again.
pub fn verify_batch(
    batch: &SignedDocument,
    receiver_key: &VerifyingKey,
    receiver: ParticipantCode,
    sender: ParticipantCode,
) -> Result<ReceiptBatch, ReceiptError> {
    let body: ReceiptBatch = batch.body()?;
    if batch.signer != receiver || body.receiver != receiver {
        return Err(ReceiptError::WrongReceiver { signer: batch.signer, expected: receiver });
    }
    if body.sender != sender {
        return Err(ReceiptError::WrongSender { found: body.sender, expected: sender });
    }
    batch.verify_signature(receiver_key)?;
    Ok(body)
}

impl ReceiptProof {
    /// Checks that this item is part of the (already verified) `batch`.
    pub fn check(&self, batch: &ReceiptBatch) -> Result<(), ReceiptError> {
        match merkle::root_from_proof(self.item.leaf(), self.index, batch.count, &self.path) {
            Some(root) if root == batch.root => Ok(()),
            _ => Err(ReceiptError::BadProof),
        }
    }
}

impl MessageReceipt {
    /// Checks the whole receipt for `message_id`: signature, parties, proof.
    pub fn verify(
        &self,
        message_id: MessageId,
        receiver_key: &VerifyingKey,
        receiver: ParticipantCode,
        sender: ParticipantCode,
    ) -> Result<ReceiptBatch, ReceiptError> {
        if self.proof.item.message_id != message_id {
            return Err(ReceiptError::WrongMessage {
                found: self.proof.item.message_id,
                expected: message_id,
            });
        }
        let batch = verify_batch(&self.batch, receiver_key, receiver, sender)?;
        self.proof.check(&batch)?;
        Ok(batch)
    }

    /// When the receiver stored the message.
    pub fn received_at(&self) -> Timestamp {
        self.batch.signed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_acknowledges_each_message_and_nothing_else() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let (ru, inn) = (ParticipantCode::from_static("RU"), ParticipantCode::from_static("IN"));
        let items: Vec<ReceiptItem> = (0..5u8)
            .map(|i| ReceiptItem {
                message_id: Digest::of(&[i]),
                log_seq: 10 + i as u64,
                entry_hash: Digest::of(&[i, i]),
            })
            .collect();
        let (batch, proofs) = sign_batch(&items, inn, ru, &key, Timestamp::from_unix_millis(7)).unwrap();
        for (item, proof) in items.iter().zip(&proofs) {
            let r = MessageReceipt { batch: batch.clone(), proof: proof.clone() };
            r.verify(item.message_id, &key.verifying_key(), inn, ru).unwrap();
            assert!(matches!(
                r.verify(item.message_id, &key.verifying_key(), ru, inn),
                Err(ReceiptError::WrongReceiver { .. })
            ));
            let mut moved = r.clone();
            moved.proof.item.log_seq += 1;
            assert_eq!(
                moved.verify(item.message_id, &key.verifying_key(), inn, ru),
                Err(ReceiptError::BadProof)
            );
        }
        let other = MessageReceipt { batch: batch.clone(), proof: proofs[0].clone() };
        assert!(matches!(
            other.verify(items[1].message_id, &key.verifying_key(), inn, ru),
            Err(ReceiptError::WrongMessage { .. })
        ));
        assert!(sign_batch(&[], inn, ru, &key, Timestamp::default()).is_none());
    }
}
