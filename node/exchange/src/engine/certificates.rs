//! This node's certificates and their follow-ups: submission (numbered once, with its
//! idempotency key), and this node's own confirmations, voids and resolutions, each checked
//! against the stored record and queued for the certificate's other participant.

use super::*;

impl Engine {
    /// The signed certificate of a record: pending in the outbox or in the log.
    fn certificate_document<S: Storage + ?Sized>(
        &self,
        txn: &Txn<'_, S>,
        rec: &CertRecord,
    ) -> Result<Option<SignedDocument>, StoreError> {
        document_of(|t, k| txn.get(t, k), rec)
    }

    // The fields of `Command::Submit`, plus the batch's context.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn submit<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        cert: Certificate,
        assigned: Option<(i32, u64)>,
        idempotency: Option<Idempotency>,
    ) -> Result<Outcome, StoreError> {
        if let Some(idem) = &idempotency {
            let key = idempotency_meta_key(&idem.key);
            if let Some(prior) = live_idempotency(txn.get_rec::<IdempotencyRecord>(Tree::Meta, &key)?, now) {
                if prior.content != idem.content {
                    return Ok(Outcome::Refused(EngineError::IdempotencyConflict {
                        key: idem.key.clone(),
                        number: prior.number,
                    }));
                }
                if let Some(existing) =
                    txn.get_rec::<CertRecord>(Tree::Certs, prior.number.as_str().as_bytes())?
                {
                    return Ok(Outcome::Submitted { record: Box::new(existing), already_stored: true });
                }
            }
        }
        let number = cert.number.clone();
        if let Some(existing) = txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())? {
            let same = existing.direction == Direction::Out
                && self.certificate_document(txn, &existing)?.is_some_and(|d| d.body == document.body);
            if same {
                if let Some(idem) = idempotency {
                    remember_idempotency(txn, now, idem, &number)?;
                }
            }
            return Ok(if same {
                Outcome::Submitted { record: Box::new(existing), already_stored: true }
            } else {
                Outcome::Refused(EngineError::Conflict(number))
            });
        }
        let peer = cert.delivered_to();
        if let Some(old) = &cert.content.replaces {
            let replaced = match Self::followed(txn, old.clone(), |rec| replaceable(rec, peer))? {
                Ok(rec) => rec,
                Err(refused) => return Ok(refused),
            };
            mark_replaced(txn, now, replaced, &cert.number, document.message_id(), document.signed_at);
        }
        let record = CertRecord {
            number: number.clone(),
            direction: Direction::Out,
            peer,
            message_id: document.message_id(),
            status: CertStatus::Queued,
            issued_on: cert.content.issued_on,
            expires_on: cert.content.expires_on,
            signed_at: document.signed_at,
            parcels: cert.parcel_count() as u32,
            carats: cert.total_carats(),
            value_usd: cert.total_value_usd(),
            log_seq: None,
            oseq: None,
            delivered_at: None,
            confirmation: None,
            void: None,
            rejection: None,
            updated_at: now,
            vigilance: None,
        };
        let mut record = record;
        record.oseq =
            Some(self.enqueue(txn, applied, peer, &document, record.message_id, Some(number.clone())));
        txn.put_new_cert(&record);
        self.counts.certificates_out += 1;
        if let Some((year, seq)) = assigned {
            let last = self.numbers.entry(year).or_default();
            *last = (*last).max(seq);
        }
        if let Some(idem) = idempotency {
            remember_idempotency(txn, now, idem, &number)?;
        }
        Ok(Outcome::Submitted { record: Box::new(record), already_stored: false })
    }

    /// The record of certificate `number`, to follow up with a document of this node's; the
    /// refusal if there is none or `why_not` says it cannot take that document now.
    fn followed<S: Storage + ?Sized>(
        txn: &Txn<'_, S>,
        number: CertificateNumber,
        why_not: impl FnOnce(&CertRecord) -> Option<String>,
    ) -> Result<Result<CertRecord, Outcome>, StoreError> {
        let Some(rec) = txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())? else {
            return Ok(Err(Outcome::Refused(EngineError::NotFound(number))));
        };
        Ok(match why_not(&rec) {
            Some(why) => Err(Outcome::Refused(EngineError::WrongState {
                number: rec.number,
                status: rec.status.as_str(),
                why,
            })),
            None => Ok(rec),
        })
    }

    /// Queues this node's follow-up `document` on `rec` (updated by the caller) for the
    /// certificate's other participant, and stores `rec`.
    fn send_follow_up<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: &SignedDocument,
        mut rec: CertRecord,
    ) -> Outcome {
        rec.updated_at = now;
        self.enqueue(txn, applied, rec.peer, document, document.message_id(), Some(rec.number.clone()));
        txn.put_cert(&rec);
        Outcome::Updated(Box::new(rec))
    }

    pub(super) fn confirm<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        c: ImportConfirmation,
    ) -> Result<Outcome, StoreError> {
        let mut rec = match Self::followed(txn, c.certificate.clone(), confirmable)? {
            Ok(rec) => rec,
            Err(refused) => return Ok(refused),
        };
        record_confirmation(&mut rec, &c, &document, document.message_id(), None);
        Ok(self.send_follow_up(txn, applied, now, &document, rec))
    }

    pub(super) fn void<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        v: Void,
    ) -> Result<Outcome, StoreError> {
        let mut rec = match Self::followed(txn, v.certificate.clone(), voidable)? {
            Ok(rec) => rec,
            Err(refused) => return Ok(refused),
        };
        record_void(&mut rec, &v, &document, document.message_id(), None);
        Ok(self.send_follow_up(txn, applied, now, &document, rec))
    }

    pub(super) fn resolve<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        r: kp_protocol::Resolution,
    ) -> Result<Outcome, StoreError> {
        let rkey = crate::storage::resolution_key(&r.certificate);
        let existing = txn.get_rec::<ResolutionRecord>(Tree::Meta, &rkey)?;
        let rec = match Self::followed(txn, r.certificate.clone(), |rec| resolvable(rec, existing.as_ref()))?
        {
            Ok(rec) => rec,
            Err(refused) => return Ok(refused),
        };
        txn.put(Tree::Meta, &rkey, &resolution_record(&r, &document, document.message_id(), None));
        Ok(self.send_follow_up(txn, applied, now, &document, rec))
    }
}

/// How long a submission's `Idempotency-Key` is remembered: a retry within this window gets
/// the first answer. Longer than any client retries, short enough that the keys kept stay few.
pub const IDEMPOTENCY_WINDOW_DAYS: i64 = 30;

/// How many expired idempotency keys one submission removes, at most: the work stays bounded
/// and the keys kept track the submissions of the window.
const IDEMPOTENCY_PRUNE: usize = 8;

/// A submission's idempotency key, and the SHA-256 of the request body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub content: Digest,
}

/// The `meta` key of a remembered idempotency key.
pub fn idempotency_meta_key(key: &str) -> Vec<u8> {
    format!("{}{key}", meta::IDEMPOTENCY_PREFIX).into_bytes()
}

fn idempotency_at_key(at: Timestamp, key: &str) -> Vec<u8> {
    let mut k = meta::IDEMPOTENCY_AT_PREFIX.as_bytes().to_vec();
    k.extend_from_slice(&(at.unix_millis().max(0) as u64).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `record`, unless its window has passed by `now`.
pub fn live_idempotency(record: Option<IdempotencyRecord>, now: Timestamp) -> Option<IdempotencyRecord> {
    let window_ms = IDEMPOTENCY_WINDOW_DAYS * 86_400_000;
    record.filter(|r| r.at.saturating_add_millis(window_ms) > now)
}

/// Why a certificate cannot be resolved, if it cannot: only an import discrepancy is, once.
pub fn resolvable(rec: &CertRecord, existing: Option<&ResolutionRecord>) -> Option<String> {
    if let Some(prev) = existing {
        return Some(format!(
            "its discrepancy was already resolved by {} ({}) at {}",
            prev.participant, prev.resolved_by, prev.resolved_at
        ));
    }
    if rec.status != CertStatus::ImportDiscrepancy {
        return Some("only a certificate in import_discrepancy can be resolved".into());
    }
    None
}

/// Why an inbound certificate cannot be confirmed now, if it cannot.
pub fn confirmable(rec: &CertRecord) -> Option<String> {
    if rec.direction != Direction::In {
        return Some("this node issued it; only the importing participant confirms receipt".into());
    }
    match rec.status {
        CertStatus::Voided => {
            Some("it was voided by the exporting authority; a voided certificate cannot be confirmed".into())
        }
        CertStatus::Replaced => Some(
            "it was replaced by the exporting authority; confirm the certificate that replaces it instead"
                .into(),
        ),
        CertStatus::ImportConfirmed | CertStatus::ImportDiscrepancy => {
            Some("its receipt was already confirmed".into())
        }
        _ => None,
    }
}

/// Why an outbound certificate cannot be replaced by one delivered to `peer`, if it cannot:
/// only this node's own, not yet confirmed, voided, refused or replaced, and only by a
/// certificate to the same importer (a correction, not a new shipment).
pub fn replaceable(rec: &CertRecord, peer: ParticipantCode) -> Option<String> {
    if rec.direction != Direction::Out {
        return Some("it was issued by another participant; only the exporting authority replaces it".into());
    }
    if rec.peer != peer {
        return Some(format!(
            "it was issued to {}, and a replacement goes to the same importer (this one goes to {peer}); \
             void it and issue a new certificate instead",
            rec.peer
        ));
    }
    match rec.status {
        CertStatus::Queued | CertStatus::Delivered => None,
        CertStatus::Replaced => Some("it was already replaced".into()),
        CertStatus::Voided => Some("it is voided; issue a new certificate instead".into()),
        CertStatus::Rejected => Some(
            "the importing node refused it, so it holds nothing to replace; issue a new certificate".into(),
        ),
        _ => Some(
            "the importer has confirmed receipt of the shipment; a confirmed certificate cannot be replaced"
                .into(),
        ),
    }
}

/// Why an inbound certificate cannot be replaced now, if it cannot (the importing side's rule:
/// only one still waiting for its confirmation).
pub fn replaceable_here(rec: &CertRecord) -> Option<String> {
    match rec.status {
        CertStatus::Received => None,
        CertStatus::Replaced => Some("it was already replaced".into()),
        CertStatus::Voided => Some("it was voided".into()),
        _ => {
            Some("its receipt was already confirmed here; a confirmed certificate cannot be replaced".into())
        }
    }
}

/// Marks `rec` replaced by certificate `by` (message `id`, signed at `at`), remembering its
/// status to go back to if the replacement is refused.
pub(super) fn mark_replaced<S: Storage + ?Sized>(
    txn: &mut Txn<'_, S>,
    now: Timestamp,
    mut rec: CertRecord,
    by: &CertificateNumber,
    id: MessageId,
    at: Timestamp,
) {
    txn.put(
        Tree::Meta,
        &store::replacement_key(&rec.number),
        &ReplacementRecord { by: by.clone(), message_id: id, at, previous: rec.status },
    );
    txn.events.push(Event::CertificateReplaced {
        peer: rec.peer,
        number: rec.number.clone(),
        by: by.clone(),
    });
    rec.status = CertStatus::Replaced;
    rec.updated_at = now;
    txn.put_cert(&rec);
}

/// Why an outbound certificate cannot be voided now, if it cannot.
pub fn voidable(rec: &CertRecord) -> Option<String> {
    if rec.direction != Direction::Out {
        return Some("it was issued by another participant; only the exporting authority voids it".into());
    }
    match rec.status {
        CertStatus::Queued | CertStatus::Delivered => None,
        CertStatus::Voided => Some("it is already voided".into()),
        CertStatus::Replaced => Some("it was replaced; void the certificate that replaces it instead".into()),
        CertStatus::Rejected => Some("the importing node refused it; there is nothing to void".into()),
        _ => Some("the importer has confirmed receipt of the shipment".into()),
    }
}

// The follow-ups a certificate record holds, written alike for this node's own (`log_seq`
// `None`: logged, and acknowledged, once the partner's receipt comes) and a partner's
// (received, so acknowledged, and logged at `log_seq`). `id` is the message id of `doc`.

/// Records import confirmation `c` (signed in `doc`) on `rec`, with its discrepancy if any.
pub(super) fn record_confirmation(
    rec: &mut CertRecord,
    c: &ImportConfirmation,
    doc: &SignedDocument,
    id: MessageId,
    log_seq: Option<u64>,
) {
    let discrepancy = discrepancy(rec, c);
    rec.status =
        if discrepancy.is_some() { CertStatus::ImportDiscrepancy } else { CertStatus::ImportConfirmed };
    rec.confirmation = Some(ConfirmationRecord {
        message_id: id,
        received_on: c.received_on,
        parcels: c.parcels,
        carats: c.carats,
        discrepancy,
        confirmed_at: doc.signed_at,
        acknowledged: log_seq.is_some(),
        rejection: None,
        log_seq,
    });
}

/// Records void `v` (signed in `doc`) on `rec`.
pub(super) fn record_void(
    rec: &mut CertRecord,
    v: &Void,
    doc: &SignedDocument,
    id: MessageId,
    log_seq: Option<u64>,
) {
    rec.status = CertStatus::Voided;
    rec.void = Some(VoidRecord {
        message_id: id,
        reason: v.reason.to_string(),
        voided_at: doc.signed_at,
        acknowledged: log_seq.is_some(),
        rejection: None,
        log_seq,
    });
}

/// The record of resolution `r` (signed in `doc`).
pub(super) fn resolution_record(
    r: &kp_protocol::Resolution,
    doc: &SignedDocument,
    id: MessageId,
    log_seq: Option<u64>,
) -> ResolutionRecord {
    ResolutionRecord {
        message_id: id,
        participant: doc.signer,
        note: r.note.to_string(),
        resolved_by: r.resolved_by.to_string(),
        resolved_at: doc.signed_at,
        log_seq,
    }
}

/// How a confirmation differs from the certificate, if it does.
fn discrepancy(rec: &CertRecord, c: &ImportConfirmation) -> Option<String> {
    let mut parts = Vec::new();
    if c.parcels != rec.parcels {
        parts.push(format!("parcels: certified {}, received {}", rec.parcels, c.parcels));
    }
    if c.carats.hundredths() != rec.carats {
        let diff = c.carats.hundredths() as i128 - rec.carats as i128;
        let sign = if diff < 0 { "-" } else { "+" };
        parts.push(format!(
            "carats: certified {}, received {} ({sign}{})",
            kp_protocol::amount::format_hundredths(rec.carats),
            c.carats,
            kp_protocol::amount::format_hundredths(diff.unsigned_abs() as u64)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The signed certificate of `rec`, read through `get` (pending in the outbox, or in the log).
/// Remembers `idem` for `number` in the batch being applied (so it becomes durable with the
/// certificate), and forgets a few keys whose window has passed.
fn remember_idempotency<S: Storage + ?Sized>(
    txn: &mut Txn<'_, S>,
    now: Timestamp,
    idem: Idempotency,
    number: &CertificateNumber,
) -> Result<(), StoreError> {
    let window_ms = IDEMPOTENCY_WINDOW_DAYS * 86_400_000;
    let start = meta::IDEMPOTENCY_AT_PREFIX.as_bytes();
    let end = idempotency_at_key(now.saturating_sub_millis(window_ms), "");
    for (at_key, _) in txn.store.range(Tree::Meta, start, &end, IDEMPOTENCY_PRUNE)? {
        if let Some(old) = at_key.get(start.len() + 8..).and_then(|k| std::str::from_utf8(k).ok()) {
            let key = idempotency_meta_key(old);
            // Only if it still belongs to that time (a key reused after expiry was rewritten).
            let stale = txn
                .get_rec::<IdempotencyRecord>(Tree::Meta, &key)?
                .is_none_or(|r| idempotency_at_key(r.at, old) == at_key);
            if stale {
                txn.remove(Tree::Meta, &key);
            }
        }
        txn.remove(Tree::Meta, &at_key);
    }
    let key = idempotency_meta_key(&idem.key);
    if let Some(prior) = txn.get_rec::<IdempotencyRecord>(Tree::Meta, &key)? {
        txn.remove(Tree::Meta, &idempotency_at_key(prior.at, &idem.key));
    }
    txn.put(Tree::Meta, &key, &IdempotencyRecord { content: idem.content, number: number.clone(), at: now });
    txn.put(Tree::Meta, &idempotency_at_key(now, &idem.key), &0u8);
    Ok(())
}

pub fn document_of(
    get: impl Fn(Tree, &[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    rec: &CertRecord,
) -> Result<Option<SignedDocument>, StoreError> {
    if let Some(seq) = rec.log_seq {
        if let Some(bytes) = get(Tree::Log, &log_key(seq))? {
            let (entry, _) = store::decode_log(&log_key(seq), &bytes)?;
            if entry.document().message_id() == rec.message_id {
                return Ok(Some(entry.document().clone()));
            }
        }
    }
    if let (Direction::Out, Some(oseq)) = (rec.direction, rec.oseq) {
        let key = outbox_key(rec.peer, oseq);
        if let Some(bytes) = get(Tree::Outbox, &key)? {
            let entry: OutboxEntry = decode_record(Tree::Outbox, &key, &bytes)?;
            if entry.message_id == rec.message_id {
                return Ok(Some(entry.document));
            }
        }
    }
    Ok(None)
}
