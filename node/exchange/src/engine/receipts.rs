//! A partner's answers to what this node sent: a receipt logs the message as sent, a
//! rejection keeps the refusal; either takes it out of the outbox and updates its certificate.

use super::inbound::note_signed;
use super::*;

impl Engine {
    /// Takes the message `id` at `oseq` out of `peer`'s outbox, now that the peer answered
    /// it; `None` if it is no longer waiting (a duplicate answer) or is another one.
    fn take_answered<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        peer: ParticipantCode,
        id: MessageId,
        oseq: u64,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let okey = outbox_key(peer, oseq);
        let Some(entry) = txn.get_rec::<OutboxEntry>(Tree::Outbox, &okey)?.filter(|e| e.message_id == id)
        else {
            return Ok(None);
        };
        txn.remove(Tree::Outbox, &okey);
        self.dequeue(peer);
        Ok(Some(entry))
    }

    /// Records the receipt for the message at `oseq` in `peer`'s outbox; returns the
    /// certificate it concerns, or `None` if that message is no longer waiting (a duplicate
    /// receipt) or is another one.
    pub(super) fn receipt<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        id: MessageId,
        oseq: u64,
        receipt: MessageReceipt,
    ) -> Result<Option<Option<CertificateNumber>>, StoreError> {
        let Some(entry) = self.take_answered(txn, peer, id, oseq)? else {
            return Ok(None);
        };
        let received_at = receipt.received_at();
        note_signed(txn, peer, receipt.batch.key_id, receipt.batch.signed_at)?;
        let kind = entry.document.kind;
        let certificate = entry.certificate;
        // Who had it sent: the entry names them.
        let officer = txn.get_rec::<Officer>(Tree::Meta, &meta::officer_key(&id))?;
        let (seq, _) = self.append(
            txn,
            now,
            EntryBody::Sent { peer, document: entry.document, receipt: Box::new(receipt) },
            officer,
        );
        update_certificate(txn, now, certificate.as_ref(), |rec, _| match kind {
            DocumentKind::Certificate => {
                if rec.status == CertStatus::Queued {
                    rec.status = CertStatus::Delivered;
                }
                rec.log_seq = Some(seq);
                rec.oseq = None;
                rec.delivered_at = Some(received_at);
            }
            DocumentKind::ImportConfirmation => {
                if let Some(c) = rec.confirmation.as_mut() {
                    c.acknowledged = true;
                    // Where the signed confirmation now sits (for its remarks).
                    c.log_seq = Some(seq);
                }
            }
            DocumentKind::Void => {
                if let Some(v) = rec.void.as_mut() {
                    v.acknowledged = true;
                }
            }
            _ => {}
        })?;
        Ok(Some(certificate))
    }

    /// Records that `peer` refused the message at `oseq` in its outbox (if it is still
    /// waiting there).
    pub(super) fn rejected<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        id: MessageId,
        oseq: u64,
        rejection: Rejection,
    ) -> Result<(), StoreError> {
        let Some(entry) = self.take_answered(txn, peer, id, oseq)? else {
            return Ok(());
        };
        if entry.document.kind == DocumentKind::Certificate {
            restore_replaced(txn, now, peer, &entry.document, &rejection)?;
        }
        update_certificate(txn, now, entry.certificate.as_ref(), |rec, events| match entry.document.kind {
            DocumentKind::Certificate => {
                if rec.status == CertStatus::Queued {
                    rec.status = CertStatus::Rejected;
                }
                rec.oseq = None;
                rec.rejection = Some(rejection);
            }
            DocumentKind::ImportConfirmation => {
                if let Some(c) = rec.confirmation.as_mut() {
                    c.rejection = Some(rejection);
                }
            }
            DocumentKind::Void => {
                // A void the importer refused (it had confirmed the import) keeps
                // the refusal for `show`; the certificate stays voided here, and the
                // importer's confirmation, if it comes, is refused (see `judge_confirmation`).
                events.push(Event::VoidRefused {
                    peer,
                    number: rec.number.clone(),
                    detail: rejection.detail.to_string(),
                });
                if let Some(v) = rec.void.as_mut() {
                    v.rejection = Some(rejection);
                }
            }
            _ => {}
        })
    }
}

/// If the refused certificate in `document` replaced one of this node's, that one stands again
/// with the status it had (unless something has happened to it since, such as a confirmation
/// that crossed the replacement on the wire).
fn restore_replaced<S: Storage + ?Sized>(
    txn: &mut Txn<'_, S>,
    now: Timestamp,
    peer: ParticipantCode,
    document: &SignedDocument,
    rejection: &Rejection,
) -> Result<(), StoreError> {
    let Ok(cert) = document.body::<Certificate>() else {
        return Ok(());
    };
    let Some(old) = cert.content.replaces else {
        return Ok(());
    };
    let rkey = store::replacement_key(&old);
    let Some(r) = txn.get_rec::<ReplacementRecord>(Tree::Meta, &rkey)?.filter(|r| r.by == cert.number) else {
        return Ok(());
    };
    txn.remove(Tree::Meta, &rkey);
    txn.events.push(Event::ReplacementRefused {
        peer,
        number: old.clone(),
        by: cert.number.clone(),
        detail: rejection.detail.clone(),
    });
    // The status it would have now had it not been replaced: what happened to it since (its
    // receipt, or its own refusal) counts, not only the status it had then.
    update_certificate(txn, now, Some(&old), |rec, _| {
        if rec.status == CertStatus::Replaced {
            rec.status = if rec.rejection.is_some() {
                CertStatus::Rejected
            } else if rec.log_seq.is_some() && r.previous == CertStatus::Queued {
                CertStatus::Delivered
            } else {
                r.previous
            };
        }
    })
}

/// Updates the stored record of certificate `number` (if any, and if there is one) with
/// `update`, which may tell the operator something through the events it is given.
fn update_certificate<S: Storage + ?Sized>(
    txn: &mut Txn<'_, S>,
    now: Timestamp,
    number: Option<&CertificateNumber>,
    update: impl FnOnce(&mut CertRecord, &mut Vec<Event>),
) -> Result<(), StoreError> {
    let Some(number) = number else {
        return Ok(());
    };
    let key = number.as_str().as_bytes();
    if let Some(mut rec) = txn.get_rec::<CertRecord>(Tree::Certs, key)? {
        update(&mut rec, &mut txn.events);
        rec.updated_at = now;
        txn.put_cert(&rec);
    }
    Ok(())
}
