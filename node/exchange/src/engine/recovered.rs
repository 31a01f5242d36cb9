//! Recovery from partners (see [`crate::recover`]): this node's own documents that a partner
//! holds, with the receipt it gave, stored again as sent and acknowledged (the command that
//! first queued each one, then its receipt, in one transaction); and the certificate counter
//! raised above the numbers partners hold.

use super::*;
use crate::verify::Content;

impl Engine {
    /// Stores this node's `document` (with its decoded `content`) that `peer` acknowledged
    /// with `receipt` (already verified against `peer`'s key history). `Updated`: recovered
    /// now; `Done`: this node already holds it; `Refused`: the stored records do not allow it
    /// (yet: a follow-up whose certificate is not recovered yet is `NotFound`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn recovered_sent<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        peer: ParticipantCode,
        document: SignedDocument,
        content: Content,
        receipt: MessageReceipt,
    ) -> Result<Outcome, StoreError> {
        let id = document.message_id();
        let number = match &content {
            Content::Certificate(c) => c.number.clone(),
            Content::Confirmation(c) => c.certificate.clone(),
            Content::Void(v) => v.certificate.clone(),
            Content::Resolution(r) => r.certificate.clone(),
            // This node's own key history lives with its keys, not in what partners hold.
            Content::Rotation(_) => return Ok(Outcome::Done),
        };
        if let Some(rec) = txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())? {
            // Only the certificate's other participant can hold its follow-ups with a receipt.
            if rec.peer != peer {
                return Ok(Outcome::Refused(EngineError::WrongState {
                    number: rec.number,
                    status: rec.status.as_str(),
                    why: format!("its other participant is {}, not {peer}", rec.peer),
                }));
            }
            let held = match &content {
                Content::Certificate(_) if rec.message_id == id => {
                    // Restored while still queued: its receipt settles it here and now.
                    if let (None, Some(oseq)) = (rec.log_seq, rec.oseq) {
                        return self.recovered_receipt(txn, applied, now, peer, id, oseq, receipt, number);
                    }
                    true
                }
                Content::Confirmation(_) => rec.confirmation.as_ref().is_some_and(|c| c.message_id == id),
                Content::Void(_) => rec.void.as_ref().is_some_and(|v| v.message_id == id),
                Content::Resolution(_) => txn
                    .get_rec::<ResolutionRecord>(Tree::Meta, &crate::storage::resolution_key(&number))?
                    .is_some_and(|r| r.message_id == id),
                _ => false,
            };
            // A follow-up still queued from the restored outbox is settled by the link, which
            // resends it and gets this very receipt back.
            if held {
                return Ok(Outcome::Done);
            }
        }
        let outcome = match content {
            Content::Certificate(cert) => {
                let assigned = assigned_parts(&cert.number, self.me);
                self.submit(txn, applied, now, document, cert, assigned, None)?
            }
            Content::Confirmation(c) => self.confirm(txn, applied, now, document, c)?,
            Content::Void(v) => self.void(txn, applied, now, document, v)?,
            Content::Resolution(r) => self.resolve(txn, applied, now, document, r)?,
            Content::Rotation(_) => return Ok(Outcome::Done),
        };
        match outcome {
            Outcome::Submitted { already_stored: false, .. } | Outcome::Updated(_) => {
                let Some(&oseq) = applied.queued_up_to.get(&peer) else {
                    return Ok(Outcome::Refused(EngineError::UnknownPeer(peer)));
                };
                self.recovered_receipt(txn, applied, now, peer, id, oseq, receipt, number)
            }
            Outcome::Submitted { already_stored: true, .. } => Ok(Outcome::Done),
            other => Ok(other),
        }
    }

    /// Records `receipt` for the message `id` just queued at `oseq`; the certificate's
    /// record as it then stands.
    #[allow(clippy::too_many_arguments)]
    fn recovered_receipt<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        peer: ParticipantCode,
        id: MessageId,
        oseq: u64,
        receipt: MessageReceipt,
        number: CertificateNumber,
    ) -> Result<Outcome, StoreError> {
        if let Some(n) = self.receipt(txn, now, peer, id, oseq, receipt)? {
            applied.acknowledged.push((id, n));
        }
        match txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())? {
            Some(rec) => Ok(Outcome::Updated(Box::new(rec))),
            None => Ok(Outcome::Done),
        }
    }

    /// Raises the last certificate sequence of each year to at least the one given.
    pub(super) fn raise_numbers(&mut self, numbers: &[(i32, u64)]) -> Outcome {
        for &(year, seq) in numbers {
            let last = self.numbers.entry(year).or_default();
            *last = (*last).max(seq);
        }
        Outcome::Done
    }
}

/// The (year, sequence) of a number this node assigns (`<CC>-<YYYY>-<seq>`, or
/// `<UNION>-<CC>-<YYYY>-<seq>` for a member of a union), `None` for any other number.
pub fn assigned_parts(number: &CertificateNumber, me: ParticipantCode) -> Option<(i32, u64)> {
    let parts: Vec<&str> = number.as_str().split('-').collect();
    let (owner, year, seq) = match parts[..] {
        [owner, year, seq] | [_, owner, year, seq] => (owner, year, seq),
        _ => return None,
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if owner != me.as_str() || year.len() != 4 || !digits(year) || !digits(seq) || seq.len() > 18 {
        return None;
    }
    Some((year.parse().ok()?, seq.parse().ok()?))
}
