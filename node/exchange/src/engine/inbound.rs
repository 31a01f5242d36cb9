//! Judging what a partner delivers: each checked document against the store (new, a resend
//! of one stored, or refused), one function per kind, and the batch's receipts signed once.

use super::certificates::{
    mark_replaced, record_confirmation, record_void, replaceable_here, resolution_record,
};
use super::*;

impl Engine {
    /// A partner's resolution: it must come from the other participant of a certificate this
    /// node holds, name that certificate's id, and find it in `import_discrepancy`.
    fn judge_resolution<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        a: &Arrival<'_>,
        r: &kp_protocol::Resolution,
    ) -> Result<Verdict, StoreError> {
        let Arrival { now, peer, item, at_seq } = *a;
        let (doc, id) = (&item.document, item.message_id);
        let Some(mut rec) = named_certificate(txn, &r.certificate, peer, None, r.certificate_id)? else {
            if self.hold_for_recovery(txn)? {
                return Ok(Verdict::Hold(format!("certificate {} is not on this node yet", r.certificate)));
            }
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::UnknownCertificate,
                format!(
                    "{} holds no certificate {} exchanged with {peer} with that id; only the two participants \
                     of a certificate may resolve it",
                    self.me, r.certificate
                ),
            )));
        };
        let rkey = crate::storage::resolution_key(&rec.number);
        let existing = txn.get_rec::<ResolutionRecord>(Tree::Meta, &rkey)?;
        if let Some(prev) = &existing {
            if let (true, Some(seq)) = (prev.message_id == id, prev.log_seq) {
                return Ok(Verdict::Duplicate(seq));
            }
        }
        if let Some(why) = resolvable(&rec, existing.as_ref()) {
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::Conflict,
                format!("certificate {} is {}: {why}", rec.number, rec.status.as_str()),
            )));
        }
        txn.events.push(Event::DiscrepancyResolved { peer, number: rec.number.clone() });
        txn.put(Tree::Meta, &rkey, &resolution_record(r, doc, id, Some(at_seq)));
        rec.updated_at = now;
        txn.put_cert(&rec);
        Ok(Verdict::Store)
    }

    pub(super) fn deliveries<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        peer: ParticipantCode,
        items: Vec<Received>,
    ) -> Result<Vec<Reply>, StoreError> {
        enum Slot {
            Done(Reply),
            /// Index into `new_items`.
            New(usize),
        }
        let mut slots = Vec::with_capacity(items.len());
        let mut new_items: Vec<ReceiptItem> = Vec::new();
        let mut new_entries: Vec<Vec<u8>> = Vec::new();
        let mut new_index: HashMap<MessageId, usize> = HashMap::new();
        let mut rotations: Vec<(MessageId, u64)> = Vec::new();
        // The link checked these documents against its own copy of the peer's key history,
        // which may hold a rotation the store refused (a fork sent over another link, a
        // statement that would disown stored documents). What is stored must verify against
        // the stored history, so each document's key is looked up in it as this batch leaves
        // it. Key ids only: the link verified the signature with the key the id names.
        let mut windows = stored_signing_windows(txn, peer)?;
        for item in items {
            let id = item.message_id;
            if let Some(&i) = new_index.get(&id) {
                slots.push(Slot::New(i));
                continue;
            }
            if let Some(refusal) = item.refused {
                // Failed a check: acknowledged only as a resend of what is stored.
                slots.push(Slot::Done(match self.stored_at(txn, peer, id, &item.content)? {
                    Some(seq) => {
                        txn.events.push(Event::ResendOfStored {
                            peer,
                            message: id,
                            now_refused: refusal.to_string(),
                        });
                        Reply::Receipt { receipt: Box::new(receipt_at(txn, seq)?), duplicate: true }
                    }
                    None => Reply::Reject { message_id: id, refusal },
                }));
                continue;
            }
            let is_rotation = matches!(item.content, Content::Rotation(_));
            if !is_rotation {
                if let Some(refusal) =
                    windows.as_deref().and_then(|w| outside_history(w, peer, &item.document))
                {
                    txn.events.push(Event::OutsideHistory {
                        peer,
                        message: id,
                        detail: refusal.detail.clone(),
                    });
                    slots.push(Slot::Done(Reply::Reject { message_id: id, refusal }));
                    continue;
                }
            }
            let at_seq = self.head.next_seq;
            let (key_id, signed_at) = (item.document.key_id, item.document.signed_at);
            match self.judge(txn, applied, &Arrival { now, peer, item: &item, at_seq })? {
                Verdict::Store => {
                    if is_rotation {
                        rotations.push((id, at_seq));
                        windows = stored_signing_windows(txn, peer)?;
                    }
                    note_signed(txn, peer, key_id, signed_at)?;
                    // Stored below, once, with its receipt.
                    let (seq, hash, bytes) =
                        self.chain(now, EntryBody::Received { peer, document: item.document }, None);
                    new_index.insert(id, new_items.len());
                    slots.push(Slot::New(new_items.len()));
                    new_items.push(ReceiptItem { message_id: id, log_seq: seq, entry_hash: hash });
                    new_entries.push(bytes);
                }
                Verdict::Duplicate(seq) => {
                    let receipt = receipt_at(txn, seq)?;
                    slots.push(Slot::Done(Reply::Receipt { receipt: Box::new(receipt), duplicate: true }));
                }
                Verdict::Refuse(refusal) => slots.push(Slot::Done(Reply::Reject { message_id: id, refusal })),
                Verdict::Hold(detail) => slots.push(Slot::Done(Reply::Held { message_id: id, detail })),
            }
        }
        let receipts: Vec<MessageReceipt> = if new_items.is_empty() {
            Vec::new()
        } else {
            let signer = &self.signer;
            // It signs any batch of 1 to u32::MAX items; this one has 1 to MAX_DELIVERIES.
            // A token that cannot sign fails the whole transaction: nothing is stored, and the
            // sender, without a receipt, resends.
            let (batch, proofs) = try_sign_batch_with(&new_items, self.me, peer, |body| signer.sign(body))?
                .expect("a batch of 1 to MAX_DELIVERIES receipts is signed");
            proofs.into_iter().map(|proof| MessageReceipt { batch: batch.clone(), proof }).collect()
        };
        for (r, entry) in receipts.iter().zip(new_entries) {
            txn.put(
                Tree::Log,
                &log_key(r.proof.item.log_seq),
                &LogRecord { entry, receipt: Some(r.clone()) },
            );
        }
        for (id, seq) in rotations {
            txn.put(Tree::Messages, &in_message_key(peer, &id), &seq);
        }
        Ok(slots
            .into_iter()
            .map(|s| match s {
                Slot::Done(reply) => reply,
                Slot::New(i) => Reply::Receipt { receipt: Box::new(receipts[i].clone()), duplicate: false },
            })
            .collect())
    }

    /// The log position of the document with id `id` received from `peer`, if it is stored:
    /// the lookup [`Engine::judge`] makes for a resend, through the same record, for a
    /// delivery that failed a check (see [`Received::refused`]). Never writes.
    fn stored_at<S: Storage + ?Sized>(
        &self,
        txn: &Txn<'_, S>,
        peer: ParticipantCode,
        id: MessageId,
        content: &Content,
    ) -> Result<Option<u64>, StoreError> {
        let cert = |number: &CertificateNumber, direction: Direction| {
            Ok::<_, StoreError>(
                txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())?
                    .filter(|r| r.direction == direction && r.peer == peer),
            )
        };
        Ok(match content {
            Content::Certificate(c) => {
                cert(&c.number, Direction::In)?.filter(|r| r.message_id == id).and_then(|r| r.log_seq)
            }
            Content::Confirmation(c) => cert(&c.certificate, Direction::Out)?
                .and_then(|r| r.confirmation)
                .filter(|c| c.message_id == id)
                .and_then(|c| c.log_seq),
            Content::Void(v) => cert(&v.certificate, Direction::In)?
                .and_then(|r| r.void)
                .filter(|v| v.message_id == id)
                .and_then(|v| v.log_seq),
            Content::Rotation(_) => txn.get_rec::<u64>(Tree::Messages, &in_message_key(peer, &id))?,
            Content::Resolution(r) => txn
                .get_rec::<ResolutionRecord>(Tree::Meta, &crate::storage::resolution_key(&r.certificate))?
                .filter(|x| x.message_id == id && x.participant == peer)
                .and_then(|x| x.log_seq),
        })
    }

    /// Whether a checked delivery is new (then the records it concerns are updated, for a
    /// log entry at `at_seq` that the caller appends), a resend of one stored at some log
    /// position, or refused given what is stored.
    fn judge<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        a: &Arrival<'_>,
    ) -> Result<Verdict, StoreError> {
        match &a.item.content {
            Content::Certificate(cert) => self.judge_certificate(txn, a, cert),
            Content::Confirmation(c) => self.judge_confirmation(txn, a, c),
            Content::Void(v) => self.judge_void(txn, a, v),
            Content::Resolution(r) => self.judge_resolution(txn, a, r),
            Content::Rotation(r) => self.judge_rotation(txn, applied, a, r),
        }
    }

    /// A partner's certificate: new unless its number is stored; the same message again is a
    /// resend, another document with that number a conflict.
    fn judge_certificate<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        a: &Arrival<'_>,
        cert: &Certificate,
    ) -> Result<Verdict, StoreError> {
        let Arrival { now, peer, item, at_seq } = *a;
        let (doc, id) = (&item.document, item.message_id);
        let key = cert.number.as_str().as_bytes();
        if let Some(existing) = txn.get_rec::<CertRecord>(Tree::Certs, key)?.filter(|_| dedupe_on()) {
            if existing.direction == Direction::In && existing.peer == peer && existing.message_id == id {
                if let Some(seq) = existing.log_seq {
                    return Ok(Verdict::Duplicate(seq));
                }
            }
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::Conflict,
                format!(
                    "certificate {} was already received from {} as a different document (message {:?}, signed {}); a corrected certificate needs a new number",
                    cert.number, existing.peer, existing.message_id, existing.signed_at
                ),
            )));
        }
        if let Some(old) = &cert.content.replaces {
            let replaced = txn
                .get_rec::<CertRecord>(Tree::Certs, old.as_str().as_bytes())?
                .filter(|r| r.direction == Direction::In && r.peer == peer);
            let Some(replaced) = replaced else {
                if self.hold_for_recovery(txn)? {
                    return Ok(Verdict::Hold(format!(
                        "certificate {old}, which {} replaces, is not on this node yet",
                        cert.number
                    )));
                }
                return Ok(Verdict::Refuse(Refusal::new(
                    RejectCode::UnknownCertificate,
                    format!(
                        "certificate {} replaces {old}, which {} never received from {peer}; issue it as a new certificate",
                        cert.number, self.me
                    ),
                )));
            };
            if let Some(why) = replaceable_here(&replaced) {
                return Ok(Verdict::Refuse(Refusal::new(
                    RejectCode::Conflict,
                    format!("certificate {} cannot replace {old} on {}: {why}", cert.number, self.me),
                )));
            }
            mark_replaced(txn, now, replaced, &cert.number, id, doc.signed_at);
        }
        let rec = CertRecord {
            number: cert.number.clone(),
            direction: Direction::In,
            peer,
            message_id: id,
            status: CertStatus::Received,
            issued_on: cert.content.issued_on,
            expires_on: cert.content.expires_on,
            signed_at: doc.signed_at,
            parcels: cert.parcel_count() as u32,
            carats: cert.total_carats(),
            value_usd: cert.total_value_usd(),
            log_seq: Some(at_seq),
            oseq: None,
            delivered_at: Some(now),
            confirmation: None,
            void: None,
            rejection: None,
            updated_at: now,
            vigilance: item.vigilance.clone(),
        };
        txn.put_new_cert(&rec);
        self.counts.certificates_in += 1;
        if let Some(why) = &item.vigilance {
            self.counts.vigilance += 1;
            txn.events.push(Event::Vigilance { peer, number: cert.number.clone(), why: why.to_string() });
        }
        txn.events.push(Event::CertificateReceived { peer, number: cert.number.clone() });
        Ok(Verdict::Store)
    }

    /// A partner's import confirmation of a certificate this node issued to it: refused if the
    /// certificate was voided here, or was already confirmed by another message.
    fn judge_confirmation<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        a: &Arrival<'_>,
        c: &ImportConfirmation,
    ) -> Result<Verdict, StoreError> {
        let Arrival { now, peer, item, at_seq } = *a;
        let (doc, id) = (&item.document, item.message_id);
        let Some(mut rec) =
            named_certificate(txn, &c.certificate, peer, Some(Direction::Out), c.certificate_id)?
        else {
            if self.hold_for_recovery(txn)? {
                return Ok(Verdict::Hold(format!("certificate {} is not on this node yet", c.certificate)));
            }
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::UnknownCertificate,
                format!("{} issued no certificate {} to {peer} with that id", self.me, c.certificate),
            )));
        };
        if let Some(prev) = &rec.confirmation {
            return Ok(again(prev.message_id, prev.log_seq, id, || {
                format!("certificate {} was already confirmed (message {:?})", rec.number, prev.message_id)
            }));
        }
        // The exporter's void is authoritative on the exporter's node: a confirmation
        // of a voided certificate is refused, naming the void, whether or not the
        // importer acknowledged it (an importer that holds the void unacknowledged
        // must not be able to undo it). If the two crossed on the wire, the importer
        // refuses the void too (naming its confirmation): each side keeps its own
        // status and shows the other's refusal (`cert show`), a conflict for the two
        // authorities to settle, never a silent flip.
        if let Some(v) = rec.void.as_ref().filter(|_| rec.status == CertStatus::Voided) {
            txn.events.push(Event::ConfirmationOfVoided { peer, number: rec.number.clone() });
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::Voided,
                format!(
                    "{} voided certificate {} at {} (message {:?}, reason: {}); a voided certificate cannot be confirmed",
                    self.me, rec.number, v.voided_at, v.message_id, v.reason
                ),
            )));
        }
        record_confirmation(&mut rec, c, doc, id, Some(at_seq));
        rec.updated_at = now;
        txn.events.push(Event::ConfirmationReceived {
            peer,
            number: rec.number.clone(),
            status: rec.status.as_str(),
        });
        txn.put_cert(&rec);
        Ok(Verdict::Store)
    }

    /// A partner's void of a certificate this node received from it: refused if the import
    /// was confirmed here, or the certificate was already voided by another message.
    fn judge_void<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        a: &Arrival<'_>,
        v: &Void,
    ) -> Result<Verdict, StoreError> {
        let Arrival { now, peer, item, at_seq } = *a;
        let (doc, id) = (&item.document, item.message_id);
        let Some(mut rec) =
            named_certificate(txn, &v.certificate, peer, Some(Direction::In), v.certificate_id)?
        else {
            if self.hold_for_recovery(txn)? {
                return Ok(Verdict::Hold(format!("certificate {} is not on this node yet", v.certificate)));
            }
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::UnknownCertificate,
                format!("{} holds no certificate {} from {peer} with that id", self.me, v.certificate),
            )));
        };
        if let Some(prev) = &rec.void {
            return Ok(again(prev.message_id, prev.log_seq, id, || {
                format!("certificate {} is already voided", rec.number)
            }));
        }
        // The rule the exporter's node applies to its operator (`voidable`): a
        // certificate whose import was confirmed cannot be voided.
        if let Some(c) = &rec.confirmation {
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::Conflict,
                format!(
                    "{} confirmed receipt of certificate {} at {} (message {:?}) before this void arrived; \
                     a certificate whose import was confirmed cannot be voided",
                    self.me, rec.number, c.confirmed_at, c.message_id
                ),
            )));
        }
        txn.events.push(Event::VoidReceived {
            peer,
            number: rec.number.clone(),
            reason: v.reason.to_string(),
        });
        record_void(&mut rec, v, doc, id, Some(at_seq));
        rec.updated_at = now;
        txn.put_cert(&rec);
        Ok(Verdict::Store)
    }

    /// A partner's key rotation: it must extend the key history stored for it (not fork
    /// it), not disown what this node stores signed with the replaced key, and not claim a
    /// TLS key bound to another participant.
    fn judge_rotation<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        a: &Arrival<'_>,
        r: &kp_protocol::KeyRotation,
    ) -> Result<Verdict, StoreError> {
        let Arrival { peer, item, .. } = *a;
        let (doc, id) = (&item.document, item.message_id);
        if let Some(seq) = txn.get_rec::<u64>(Tree::Messages, &in_message_key(peer, &id))? {
            return Ok(Verdict::Duplicate(seq));
        }
        let key = peer.as_bytes();
        let refuse = |detail: String| Ok(Verdict::Refuse(Refusal::new(RejectCode::NotAllowed, detail)));
        let Some(bytes) = txn.get(Tree::Peers, &key)? else {
            return refuse(format!("{peer} is not enrolled here"));
        };
        // The stored history, not the link's copy, is what the statement must extend.
        let stored =
            decode_record::<PeerRecord>(Tree::Peers, &key, &bytes).map_err(|e| e.to_string()).and_then(
                |rec| crate::trust::PeerTrust::from_record(&rec).map(|t| (rec, t)).map_err(|e| e.to_string()),
            );
        let (mut rec, mut trust) = match stored {
            Ok(x) => x,
            Err(e) => {
                return refuse(format!("the record of {peer} cannot be loaded here (quarantined): {e}"))
            }
        };
        let sequence = r.sequence as usize;
        if (1..=trust.history.rotations().len()).contains(&sequence) {
            // A statement this node holds (from a bundle, or another link) is taken
            // again; another one with the same sequence number forks the history.
            if trust.history.rotations()[sequence - 1] == *doc {
                return Ok(Verdict::Store);
            }
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::InvalidDocument,
                format!(
                    "key rotation {sequence} differs from the rotation {sequence} this node already \
                     holds for {peer}: the key history forks. Refused, with what was signed \
                     under it"
                ),
            )));
        }
        let replaced = trust.history.current_signing().key_id;
        if let Err(e) = trust.history.apply(doc) {
            return Ok(Verdict::Refuse(Refusal::new(RejectCode::InvalidDocument, e.to_string())));
        }
        if let Some(refusal) = disowns_stored(txn, peer, replaced, r)? {
            return Ok(Verdict::Refuse(refusal));
        }
        let claimed: Vec<[u8; 32]> =
            r.new_tls_certificate.iter().filter_map(|c| kp_keys::tlscert::public_key(c).ok()).collect();
        if let Some(owner) = txn.tls_owner(peer, &claimed)? {
            return Ok(Verdict::Refuse(Refusal::new(
                RejectCode::InvalidDocument,
                format!("the new TLS key is already bound to {owner}; a TLS key belongs to one participant"),
            )));
        }
        rec.rotations.push(doc.clone());
        txn.put(Tree::Peers, &key, &rec);
        applied.peers_changed = true;
        Ok(Verdict::Store)
    }
}

/// Why deliveries checked `under` some trust may no longer be taken from `peer`, according
/// to its stored record as this transaction sees it; `None` if they may.
pub(super) fn distrust<S: Storage + ?Sized>(
    txn: &Txn<'_, S>,
    peer: ParticipantCode,
    under: &CheckedUnder,
) -> Result<Option<crate::trust::Distrust>, StoreError> {
    use crate::trust::Distrust;
    let key = peer.as_bytes();
    let Some(bytes) = txn.get(Tree::Peers, &key)? else { return Ok(Some(Distrust::NotEnrolled)) };
    let Ok(rec) = decode_record::<PeerRecord>(Tree::Peers, &key, &bytes) else {
        return Ok(Some(Distrust::Quarantined));
    };
    if rec.removed_at.is_some() {
        return Ok(Some(Distrust::Removed));
    }
    let Ok(bundle) = kp_keys::bundle::decode_unverified(&rec.bundle) else {
        return Ok(Some(Distrust::Quarantined));
    };
    if bundle.root_key != under.root_key || !crate::trust::record_tls_keys(&rec).contains(&under.tls_key) {
        return Ok(Some(Distrust::IdentityReplaced));
    }
    Ok(None)
}

/// The signing-key windows of `peer`'s stored record as `txn` sees it; `None` if there is no
/// record that decodes (the caller has refused such a peer's deliveries, or keeps its trust
/// outside the store: the simulator).
pub(super) fn stored_signing_windows<S: Storage + ?Sized>(
    txn: &Txn<'_, S>,
    peer: ParticipantCode,
) -> Result<Option<Vec<crate::trust::SigningWindow>>, StoreError> {
    let key = peer.as_bytes();
    let Some(bytes) = txn.get(Tree::Peers, &key)? else { return Ok(None) };
    let Ok(rec) = decode_record::<PeerRecord>(Tree::Peers, &key, &bytes) else { return Ok(None) };
    Ok(crate::trust::record_signing_windows(&rec))
}

/// Why `doc` would not verify against the stored signing-key windows `w` of `peer` (as `log
/// verify` will judge it), if it would not.
pub(super) fn outside_history(
    w: &[crate::trust::SigningWindow],
    peer: ParticipantCode,
    doc: &SignedDocument,
) -> Option<Refusal> {
    let Some(k) = w.iter().find(|k| k.key_id == doc.key_id) else {
        return Some(Refusal::new(
            RejectCode::UnknownKey,
            format!(
                "signed with key {}, which is not in the key history this node holds for {peer} (a \
                 rotation to it was refused here)",
                doc.key_id
            ),
        ));
    };
    let valid = doc.signed_at >= k.valid_from && k.valid_until.is_none_or(|u| doc.signed_at < u);
    (!valid).then(|| {
        Refusal::new(
            RejectCode::UnknownKey,
            format!(
                "signed at {} with key {}, which the key history this node holds for {peer} makes \
                 valid from {}{}",
                doc.signed_at,
                doc.key_id,
                k.valid_from,
                k.valid_until.map(|u| format!(" until {u}")).unwrap_or_default()
            ),
        )
    })
}

/// Records that something `peer` signed with `key_id` at `signed_at` is stored (see
/// [`meta::SIGNED_PREFIX`]).
pub(super) fn note_signed<S: Storage + ?Sized>(
    txn: &mut Txn<'_, S>,
    peer: ParticipantCode,
    key_id: kp_protocol::KeyId,
    signed_at: Timestamp,
) -> Result<(), StoreError> {
    let key = meta::signed_with(peer, key_id);
    if txn.get_rec::<Timestamp>(Tree::Meta, &key)?.is_none_or(|t| t < signed_at) {
        txn.put(Tree::Meta, &key, &signed_at);
    }
    Ok(())
}

/// The refusal of rotation `r` of `peer`, which replaces signing key `replaced`, if it would
/// take effect at or before the signing time of something this node stores signed with that
/// key: `log verify` would then refuse what was received in good faith. Both `signed_at` and
/// `effective_from` are the signer's to choose, so only what this node holds bounds them.
fn disowns_stored<S: Storage + ?Sized>(
    txn: &Txn<'_, S>,
    peer: ParticipantCode,
    replaced: kp_protocol::KeyId,
    r: &kp_protocol::KeyRotation,
) -> Result<Option<Refusal>, StoreError> {
    if r.new_signing_key.is_none() {
        return Ok(None);
    }
    let last = txn.get_rec::<Timestamp>(Tree::Meta, &meta::signed_with(peer, replaced))?;
    Ok(last.filter(|last| r.effective_from <= *last).map(|last| {
        Refusal::new(
            RejectCode::InvalidDocument,
            format!(
                "the rotation takes effect at {}, but this node holds a document {peer} signed with \
                 key {replaced} at {last}: a rotation cannot disown what was already received",
                r.effective_from
            ),
        )
    }))
}

/// The receipt given for the received document at log position `seq`.
fn receipt_at<S: Storage + ?Sized>(txn: &Txn<'_, S>, seq: u64) -> Result<MessageReceipt, StoreError> {
    txn.get_rec::<LogRecord>(Tree::Log, &log_key(seq))?.and_then(|r| r.receipt).ok_or_else(|| {
        StoreError::Corrupt {
            tree: Tree::Log.name(),
            key: seq.to_string(),
            detail: "the receipt given for this log entry is missing".into(),
        }
    })
}

/// The record of certificate `number` if this node exchanged it with `peer` under message
/// `certificate_id` (and in `direction`, if given): the certificate a partner's follow-up
/// (confirmation, void, resolution) must name.
fn named_certificate<S: Storage + ?Sized>(
    txn: &Txn<'_, S>,
    number: &CertificateNumber,
    peer: ParticipantCode,
    direction: Option<Direction>,
    certificate_id: MessageId,
) -> Result<Option<CertRecord>, StoreError> {
    Ok(txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())?.filter(|r| {
        direction.is_none_or(|d| r.direction == d) && r.peer == peer && r.message_id == certificate_id
    }))
}

/// The verdict on a partner's follow-up `id` of a kind the certificate already holds one of
/// (`prior`, logged at `prior_seq`): the same message again is a resend; another is a
/// conflict, explained by `conflict`.
fn again(
    prior: MessageId,
    prior_seq: Option<u64>,
    id: MessageId,
    conflict: impl FnOnce() -> String,
) -> Verdict {
    match (prior == id, prior_seq) {
        (true, Some(seq)) => Verdict::Duplicate(seq),
        _ => Verdict::Refuse(Refusal::new(RejectCode::Conflict, conflict())),
    }
}

/// A checked delivery being judged: from `peer`, at `now`, to be logged at `at_seq` if it is
/// stored.
#[derive(Clone, Copy)]
struct Arrival<'a> {
    now: Timestamp,
    peer: ParticipantCode,
    item: &'a Received,
    at_seq: u64,
}

/// What the store says about a delivered document.
enum Verdict {
    /// New: store it.
    Store,
    /// Stored before, at this log position: answer with the receipt given then.
    Duplicate(u64),
    Refuse(Refusal),
    /// Neither stored nor refused: the node awaits recovery (see [`Reply::Held`]).
    Hold(String),
}

#[cfg(test)]
thread_local! {
    /// Test-only, per thread: the receiver forgets to dedupe certificates, so that the
    /// simulator can show its checks catch a node that stores a resend twice.
    pub(crate) static BUG_NO_DEDUPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether received certificates are deduped (always, outside the simulator's bug switch).
fn dedupe_on() -> bool {
    #[cfg(test)]
    {
        !BUG_NO_DEDUPE.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        true
    }
}
