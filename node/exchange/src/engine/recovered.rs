//! Recovery from partners (see [`crate::recover`]): this node's own documents that a partner
//! holds, with the receipt it gave, stored again as sent and acknowledged (the command that
//! first queued each one, then its receipt, in one transaction); and the certificate counter
//! raised above the numbers partners hold.

use super::*;
use crate::verify::Content;

/// The `meta` entry `kpnode restore` writes and a completed recovery from every partner (or
/// the operator's `kpnode recover --finish`) removes: while it is there, this node was
/// restored from a backup and may lack certificates its partners hold. Follow-ups about a
/// certificate it does not know are then held back (no receipt, no refusal: the partner sends
/// them again), and new certificates are refused (their numbers may be taken).
pub const RECOVERY_PENDING: &[u8] = b"recovery_pending";

/// The recovery-pending state (see [`RECOVERY_PENDING`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct RecoveryPending {
    /// When `kpnode restore` set it.
    pub since: Timestamp,
    /// Partners fully recovered from since.
    pub recovered: Vec<ParticipantCode>,
    /// Follow-ups held back so far (counted for the operator's status).
    pub held: u64,
}

/// The recovery-pending state of `store`, if set.
pub fn recovery_pending<S: Storage + ?Sized>(store: &S) -> Result<Option<RecoveryPending>, StoreError> {
    match store.get(Tree::Meta, RECOVERY_PENDING)? {
        Some(b) => decode_record(Tree::Meta, RECOVERY_PENDING, &b).map(Some),
        None => Ok(None),
    }
}

/// The meta write that sets the recovery-pending state (for `kpnode restore`, offline).
pub fn set_recovery_pending(since: Timestamp) -> (Vec<u8>, Vec<u8>) {
    (RECOVERY_PENDING.to_vec(), encode_record(&RecoveryPending { since, ..Default::default() }))
}

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

    /// Notes a completed recovery from `recovered` (`None`: the operator ends the
    /// recovery-pending state): the state ends once every one of `partners` is recovered.
    pub(super) fn recovery_progress<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        recovered: Option<ParticipantCode>,
        partners: &[ParticipantCode],
    ) -> Result<Outcome, StoreError> {
        let Some(mut state) = txn.get_rec::<RecoveryPending>(Tree::Meta, RECOVERY_PENDING)? else {
            return Ok(Outcome::Done);
        };
        match recovered {
            None => txn.remove(Tree::Meta, RECOVERY_PENDING),
            Some(peer) => {
                if !state.recovered.contains(&peer) {
                    state.recovered.push(peer);
                }
                if partners.iter().all(|p| state.recovered.contains(p)) {
                    txn.remove(Tree::Meta, RECOVERY_PENDING);
                } else {
                    txn.put(Tree::Meta, RECOVERY_PENDING, &state);
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// Whether a follow-up about a certificate this node does not hold is held back rather
    /// than refused (the node awaits recovery); counts it if so.
    pub(super) fn hold_for_recovery<S: Storage + ?Sized>(
        &self,
        txn: &mut Txn<'_, S>,
    ) -> Result<bool, StoreError> {
        let Some(mut state) = txn.get_rec::<RecoveryPending>(Tree::Meta, RECOVERY_PENDING)? else {
            return Ok(false);
        };
        state.held = state.held.saturating_add(1);
        txn.put(Tree::Meta, RECOVERY_PENDING, &state);
        Ok(true)
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
