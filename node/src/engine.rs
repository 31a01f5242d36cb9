//! The exchange rules, without I/O: what a node stores, dedupes, acknowledges and refuses,
//! and in which order. [`Engine::apply`] takes a batch of [`Command`]s, works out their
//! effects on a [`Storage`] and commits them atomically; the caller flushes before it acts
//! on any [`Outcome`] (answers a submitter, sends a receipt). The daemon's store actor and
//! the deterministic simulation drive the same engine.
//!
//! Invariants kept here:
//! - a certificate number is stored once; a second, different document with that number is
//!   refused (`Conflict`), the same message again gets its original receipt;
//! - a receipt is only produced for an entry appended in the same commit (and so made
//!   durable by the flush that precedes sending it) or already stored;
//! - the log is append-only and hash-chained, its head kept in `meta` in the same commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bincode::{Decode, Encode};
use kp_protocol::receipt::sign_batch_with;
use kp_protocol::{
    Certificate, CertificateNumber, Digest, DocumentKind, ImportConfirmation, MessageId, MessageReceipt,
    ParticipantCode, ReceiptItem, RejectCode, SignedDocument, Timestamp, Void,
};

use crate::signer::Signer;
use crate::store::{
    self, decode_record, encode_record, in_message_key, log_key, meta, out_message_key, outbox_key,
    CertRecord, CertStatus, ConfirmationRecord, Counts, Direction, EntryBody, InMessage, LogEntry, LogHead,
    OutMessage, PeerRecord, Rejection, Storage, StoreError, Tree, VoidRecord, Writes,
};
use crate::verify::{Content, Received, Refusal};

/// Something for the engine to do.
#[derive(Debug)]
pub enum Command {
    /// A certificate this node signed, to queue for its importer. `assigned` is the
    /// (year, sequence) the node gave it, if it numbered it.
    Submit { document: SignedDocument, certificate: Box<Certificate>, assigned: Option<(i32, u64)> },
    /// An import confirmation this node signed for a certificate it received.
    Confirm { document: SignedDocument, confirmation: Box<ImportConfirmation> },
    /// A void this node signed for a certificate it issued.
    Void { document: SignedDocument, void: Void },
    /// Documents `peer` delivered that passed every check not needing the store.
    Deliveries { peer: ParticipantCode, items: Vec<Received> },
    /// Receipts from `peer`, already verified against its key history.
    Receipts { peer: ParticipantCode, items: Vec<(MessageId, MessageReceipt)> },
    /// `peer` refused a message for good.
    Rejected { peer: ParticipantCode, message_id: MessageId, code: RejectCode, detail: String },
    /// Trust a peer (or trust it again, with a new bundle).
    EnrolPeer { record: Box<PeerRecord> },
    /// Stop trusting a peer; its queued messages stay queued.
    RemovePeer { participant: ParticipantCode },
    /// Queue a document (a key rotation statement) for each of `peers`.
    Announce { document: SignedDocument, peers: Vec<ParticipantCode> },
}

/// The result of one command.
#[derive(Debug)]
pub enum Outcome {
    /// The certificate is stored and queued (or was already, with the same content).
    Submitted {
        record: Box<CertRecord>,
        already_stored: bool,
    },
    /// The certificate record after a confirmation or void.
    Updated(Box<CertRecord>),
    /// One reply per delivered document, in order.
    Delivered(Vec<Reply>),
    Done,
    /// The command was refused; nothing it asked for was written.
    Refused(EngineError),
}

/// What a receiver answers for one delivered document.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The receipt; `duplicate` if the document was stored before (a resend).
    Receipt {
        receipt: Box<MessageReceipt>,
        duplicate: bool,
    },
    Reject {
        message_id: MessageId,
        refusal: Refusal,
    },
}

/// Why a local request was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    #[error(
        "certificate {0} already exists with different content; give the new certificate another number"
    )]
    Conflict(CertificateNumber),
    #[error("there is no certificate {0} on this node")]
    NotFound(CertificateNumber),
    #[error("certificate {number} is {status}: {why}")]
    WrongState { number: CertificateNumber, status: &'static str, why: String },
    #[error("{0} is not an enrolled peer")]
    UnknownPeer(ParticipantCode),
}

/// Everything one `apply` did.
#[derive(Debug)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    /// For each peer that got new outbox entries, the highest outbox sequence committed.
    pub queued_up_to: BTreeMap<ParticipantCode, u64>,
    /// Whether any peer was enrolled, removed or rotated its keys.
    pub peers_changed: bool,
    /// How many log entries were appended.
    pub appended: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Engine {
    me: ParticipantCode,
    signer: Arc<Signer>,
    head: LogHead,
    counts: Counts,
    queued: BTreeMap<ParticipantCode, u64>,
    numbers: BTreeMap<i32, u64>,
}

/// Writes of the batch being applied, readable before they are committed.
struct Txn<'s, S: Storage + ?Sized> {
    store: &'s S,
    writes: Writes,
}

impl<S: Storage + ?Sized> Txn<'_, S> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.writes.get(&(tree, key.to_vec())) {
            return Ok(v.clone());
        }
        self.store.get(tree, key)
    }

    fn get_rec<T: Decode<()>>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get(tree, key)? {
            Some(b) => decode_record(tree, key, &b).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Encode>(&mut self, tree: Tree, key: &[u8], value: &T) {
        self.writes.insert((tree, key.to_vec()), Some(encode_record(value)));
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) {
        self.writes.insert((tree, key.to_vec()), None);
    }
}

/// The state an `apply` may change, so it can be put back if the commit fails.
#[derive(Clone)]
struct Saved {
    head: LogHead,
    counts: Counts,
    queued: BTreeMap<ParticipantCode, u64>,
    numbers: BTreeMap<i32, u64>,
}

impl Engine {
    /// Loads the engine's state from `meta`: no tree is scanned.
    pub fn load<S: Storage + ?Sized>(store: &S, signer: Arc<Signer>) -> Result<Engine, StoreError> {
        let head = store::get_record::<LogHead, _>(store, Tree::Meta, meta::LOG_HEAD)?
            .unwrap_or(LogHead { next_seq: 1, last_hash: Digest::ZERO });
        let counts = store::get_record::<Counts, _>(store, Tree::Meta, meta::COUNTS)?.unwrap_or_default();
        let queued = load_prefixed(store, meta::QUEUED_PREFIX, |s| s.parse::<ParticipantCode>().ok())?;
        let numbers = load_prefixed(store, meta::NUMBER_PREFIX, |s| s.parse::<i32>().ok())?;
        Ok(Engine { me: signer.participant(), signer, head, counts, queued, numbers })
    }

    pub fn head(&self) -> LogHead {
        self.head
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn queued(&self) -> &BTreeMap<ParticipantCode, u64> {
        &self.queued
    }

    /// The last certificate sequence given out in `year` that is stored.
    pub fn last_number(&self, year: i32) -> u64 {
        self.numbers.get(&year).copied().unwrap_or(0)
    }

    fn save(&self) -> Saved {
        Saved {
            head: self.head,
            counts: self.counts,
            queued: self.queued.clone(),
            numbers: self.numbers.clone(),
        }
    }

    fn restore(&mut self, s: Saved) {
        self.head = s.head;
        self.counts = s.counts;
        self.queued = s.queued;
        self.numbers = s.numbers;
    }

    /// Applies `commands` and commits their writes atomically (not yet durably: flush next).
    /// On a storage error nothing is committed and the engine is as before.
    pub fn apply<S: Storage + ?Sized>(
        &mut self,
        store: &S,
        now: Timestamp,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        let saved = self.save();
        match self.apply_inner(store, now, commands) {
            Ok(applied) => Ok(applied),
            Err(e) => {
                self.restore(saved);
                Err(e)
            }
        }
    }

    fn apply_inner<S: Storage + ?Sized>(
        &mut self,
        store: &S,
        now: Timestamp,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        let mut txn = Txn { store, writes: Writes::new() };
        let mut applied = Applied {
            outcomes: Vec::with_capacity(commands.len()),
            queued_up_to: BTreeMap::new(),
            peers_changed: false,
            appended: 0,
        };
        let head_before = self.head.next_seq;
        let counts_before = self.counts;
        let queued_before = self.queued.clone();
        let numbers_before = self.numbers.clone();

        for command in commands {
            let outcome = match command {
                Command::Submit { document, certificate, assigned } => {
                    self.submit(&mut txn, &mut applied, now, document, *certificate, assigned)?
                }
                Command::Confirm { document, confirmation } => {
                    self.confirm(&mut txn, &mut applied, now, document, *confirmation)?
                }
                Command::Void { document, void } => self.void(&mut txn, &mut applied, now, document, void)?,
                Command::Deliveries { peer, items } => {
                    Outcome::Delivered(self.deliveries(&mut txn, &mut applied, now, peer, items)?)
                }
                Command::Receipts { peer, items } => {
                    for (id, receipt) in items {
                        self.receipt(&mut txn, now, peer, id, receipt)?;
                    }
                    Outcome::Done
                }
                Command::Rejected { peer, message_id, code, detail } => {
                    self.rejected(&mut txn, now, peer, message_id, Rejection { code, detail, at: now })?;
                    Outcome::Done
                }
                Command::EnrolPeer { record } => {
                    txn.put(Tree::Peers, &record.participant.as_bytes(), &*record);
                    applied.peers_changed = true;
                    Outcome::Done
                }
                Command::RemovePeer { participant } => {
                    match txn.get_rec::<PeerRecord>(Tree::Peers, &participant.as_bytes())? {
                        Some(mut rec) if rec.removed_at.is_none() => {
                            rec.removed_at = Some(now);
                            txn.put(Tree::Peers, &participant.as_bytes(), &rec);
                            applied.peers_changed = true;
                            Outcome::Done
                        }
                        _ => Outcome::Refused(EngineError::UnknownPeer(participant)),
                    }
                }
                Command::Announce { document, peers } => {
                    for peer in peers {
                        self.enqueue(&mut txn, &mut applied, peer, &document, None);
                    }
                    if let Ok(r) = document.body::<kp_protocol::KeyRotation>() {
                        let announced =
                            txn.get_rec::<u32>(Tree::Meta, meta::ROTATIONS_ANNOUNCED)?.unwrap_or(0);
                        txn.put(Tree::Meta, meta::ROTATIONS_ANNOUNCED, &announced.max(r.sequence));
                    }
                    Outcome::Done
                }
            };
            applied.outcomes.push(outcome);
        }

        applied.appended = self.head.next_seq - head_before;
        if applied.appended > 0 {
            txn.put(Tree::Meta, meta::LOG_HEAD, &self.head);
        }
        if self.counts != counts_before {
            txn.put(Tree::Meta, meta::COUNTS, &self.counts);
        }
        for (peer, n) in &self.queued {
            if queued_before.get(peer) != Some(n) {
                txn.put(Tree::Meta, format!("{}{peer}", meta::QUEUED_PREFIX).as_bytes(), n);
            }
        }
        for (year, n) in &self.numbers {
            if numbers_before.get(year) != Some(n) {
                txn.put(Tree::Meta, format!("{}{year}", meta::NUMBER_PREFIX).as_bytes(), n);
            }
        }
        store.commit(&txn.writes)?;
        Ok(applied)
    }

    /// Appends a log entry; returns its seq and hash.
    fn append<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        body: EntryBody,
    ) -> (u64, Digest) {
        let entry =
            LogEntry { seq: self.head.next_seq, prev_hash: self.head.last_hash, recorded_at: now, body };
        let bytes = encode_record(&entry);
        let hash = store::hash_entry_bytes(&entry.prev_hash, &bytes);
        txn.writes.insert((Tree::Log, log_key(entry.seq).to_vec()), Some(bytes));
        self.head = LogHead { next_seq: entry.seq + 1, last_hash: hash };
        (entry.seq, hash)
    }

    /// Queues `document` for `peer`.
    fn enqueue<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        peer: ParticipantCode,
        document: &SignedDocument,
        certificate: Option<CertificateNumber>,
    ) {
        self.counts.next_oseq += 1;
        let oseq = self.counts.next_oseq;
        let id = document.message_id();
        txn.writes.insert((Tree::Outbox, outbox_key(peer, oseq)), Some(id.0.to_vec()));
        txn.put(
            Tree::Messages,
            &out_message_key(peer, &id),
            &OutMessage::Pending { document: document.clone(), oseq, certificate },
        );
        *self.queued.entry(peer).or_default() += 1;
        applied.queued_up_to.insert(peer, oseq);
    }

    fn dequeue(&mut self, peer: ParticipantCode) {
        if let Some(n) = self.queued.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// The signed certificate of a record: pending in `messages` or in the log.
    fn certificate_document<S: Storage + ?Sized>(
        &self,
        txn: &Txn<'_, S>,
        rec: &CertRecord,
    ) -> Result<Option<SignedDocument>, StoreError> {
        document_of(|t, k| txn.get(t, k), rec)
    }

    fn submit<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        cert: Certificate,
        assigned: Option<(i32, u64)>,
    ) -> Result<Outcome, StoreError> {
        let number = cert.number.clone();
        if let Some(existing) = txn.get_rec::<CertRecord>(Tree::Certs, number.as_str().as_bytes())? {
            let same = existing.direction == Direction::Out
                && self.certificate_document(txn, &existing)?.is_some_and(|d| d.body == document.body);
            return Ok(if same {
                Outcome::Submitted { record: Box::new(existing), already_stored: true }
            } else {
                Outcome::Refused(EngineError::Conflict(number))
            });
        }
        let peer = cert.content.importing_participant;
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
            delivered_at: None,
            confirmation: None,
            void: None,
            rejection: None,
            updated_at: now,
        };
        self.enqueue(txn, applied, peer, &document, Some(number.clone()));
        txn.put(Tree::Certs, number.as_str().as_bytes(), &record);
        self.counts.certificates_out += 1;
        if let Some((year, seq)) = assigned {
            let last = self.numbers.entry(year).or_default();
            *last = (*last).max(seq);
        }
        Ok(Outcome::Submitted { record: Box::new(record), already_stored: false })
    }

    fn confirm<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        c: ImportConfirmation,
    ) -> Result<Outcome, StoreError> {
        let key = c.certificate.as_str().as_bytes().to_vec();
        let Some(mut rec) = txn.get_rec::<CertRecord>(Tree::Certs, &key)? else {
            return Ok(Outcome::Refused(EngineError::NotFound(c.certificate)));
        };
        if let Some(why) = confirmable(&rec) {
            return Ok(Outcome::Refused(EngineError::WrongState {
                number: rec.number,
                status: rec.status.as_str(),
                why,
            }));
        }
        let discrepancy = discrepancy(&rec, &c);
        rec.status =
            if discrepancy.is_some() { CertStatus::ImportDiscrepancy } else { CertStatus::ImportConfirmed };
        rec.confirmation = Some(ConfirmationRecord {
            message_id: document.message_id(),
            received_on: c.received_on,
            parcels: c.parcels,
            carats: c.carats,
            discrepancy,
            confirmed_at: document.signed_at,
            acknowledged: false,
            rejection: None,
        });
        rec.updated_at = now;
        self.enqueue(txn, applied, rec.peer, &document, Some(rec.number.clone()));
        txn.put(Tree::Certs, &key, &rec);
        Ok(Outcome::Updated(Box::new(rec)))
    }

    fn void<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        document: SignedDocument,
        v: Void,
    ) -> Result<Outcome, StoreError> {
        let key = v.certificate.as_str().as_bytes().to_vec();
        let Some(mut rec) = txn.get_rec::<CertRecord>(Tree::Certs, &key)? else {
            return Ok(Outcome::Refused(EngineError::NotFound(v.certificate)));
        };
        if let Some(why) = voidable(&rec) {
            return Ok(Outcome::Refused(EngineError::WrongState {
                number: rec.number,
                status: rec.status.as_str(),
                why,
            }));
        }
        rec.status = CertStatus::Voided;
        rec.void = Some(VoidRecord {
            message_id: document.message_id(),
            reason: v.reason.to_string(),
            voided_at: document.signed_at,
            acknowledged: false,
            rejection: None,
        });
        rec.updated_at = now;
        self.enqueue(txn, applied, rec.peer, &document, Some(rec.number.clone()));
        txn.put(Tree::Certs, &key, &rec);
        Ok(Outcome::Updated(Box::new(rec)))
    }

    fn deliveries<S: Storage + ?Sized>(
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
        let mut new_index: HashMap<MessageId, usize> = HashMap::new();
        for item in items {
            let id = item.message_id;
            if let Some(&i) = new_index.get(&id) {
                slots.push(Slot::New(i));
                continue;
            }
            if let Some(prev) = txn.get_rec::<InMessage>(Tree::Messages, &in_message_key(peer, &id))? {
                slots.push(Slot::Done(Reply::Receipt { receipt: Box::new(prev.receipt), duplicate: true }));
                continue;
            }
            match self.accept(txn, applied, now, peer, &item)? {
                Ok(()) => {
                    let (seq, hash) =
                        self.append(txn, now, EntryBody::Received { peer, document: item.document });
                    new_index.insert(id, new_items.len());
                    slots.push(Slot::New(new_items.len()));
                    new_items.push(ReceiptItem { message_id: id, log_seq: seq, entry_hash: hash });
                }
                Err(refusal) => slots.push(Slot::Done(Reply::Reject { message_id: id, refusal })),
            }
        }
        let receipts: Vec<MessageReceipt> = if new_items.is_empty() {
            Vec::new()
        } else {
            let signer = &self.signer;
            let (batch, proofs) = sign_batch_with(&new_items, self.me, peer, |body| signer.sign(body))
                .ok_or_else(|| StoreError::Corrupt {
                    tree: Tree::Messages.name(),
                    key: String::new(),
                    detail: "too many receipts in one batch".into(),
                })?;
            proofs.into_iter().map(|proof| MessageReceipt { batch: batch.clone(), proof }).collect()
        };
        for r in &receipts {
            let key = in_message_key(peer, &r.proof.item.message_id);
            txn.put(Tree::Messages, &key, &InMessage { log_seq: r.proof.item.log_seq, receipt: r.clone() });
        }
        Ok(slots
            .into_iter()
            .map(|s| match s {
                Slot::Done(reply) => reply,
                Slot::New(i) => Reply::Receipt { receipt: Box::new(receipts[i].clone()), duplicate: false },
            })
            .collect())
    }

    /// Whether a checked delivery may be stored given what is stored; updates the records it
    /// concerns if so. The caller appends the log entry.
    fn accept<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let doc = &item.document;
        match &item.content {
            Content::Certificate(cert) => {
                let key = cert.number.as_str().as_bytes();
                if let Some(existing) = txn.get_rec::<CertRecord>(Tree::Certs, key)? {
                    return Ok(Err(Refusal::new(
                        RejectCode::Conflict,
                        format!(
                            "certificate {} was already received from {} as a different document (message {:?}, signed {}); a corrected certificate needs a new number",
                            cert.number, existing.peer, existing.message_id, existing.signed_at
                        ),
                    )));
                }
                let rec = CertRecord {
                    number: cert.number.clone(),
                    direction: Direction::In,
                    peer,
                    message_id: item.message_id,
                    status: CertStatus::Received,
                    issued_on: cert.content.issued_on,
                    expires_on: cert.content.expires_on,
                    signed_at: doc.signed_at,
                    parcels: cert.parcel_count() as u32,
                    carats: cert.total_carats(),
                    value_usd: cert.total_value_usd(),
                    log_seq: Some(self.head.next_seq),
                    delivered_at: Some(now),
                    confirmation: None,
                    void: None,
                    rejection: None,
                    updated_at: now,
                };
                txn.put(Tree::Certs, key, &rec);
                self.counts.certificates_in += 1;
                tracing::info!(number = %cert.number, from = %peer, "certificate received");
                Ok(Ok(()))
            }
            Content::Confirmation(c) => {
                let key = c.certificate.as_str().as_bytes();
                let rec = txn.get_rec::<CertRecord>(Tree::Certs, key)?;
                let Some(mut rec) = rec.filter(|r| {
                    r.direction == Direction::Out && r.peer == peer && r.message_id == c.certificate_id
                }) else {
                    return Ok(Err(Refusal::new(
                        RejectCode::UnknownCertificate,
                        format!("{} issued no certificate {} to {peer} with that id", self.me, c.certificate),
                    )));
                };
                if rec.status == CertStatus::Voided {
                    let when = rec.void.as_ref().map(|v| v.voided_at.to_string()).unwrap_or_default();
                    return Ok(Err(Refusal::new(
                        RejectCode::Voided,
                        format!(
                            "{} voided certificate {} at {when}; a voided certificate cannot be confirmed",
                            self.me, rec.number
                        ),
                    )));
                }
                if let Some(prev) = &rec.confirmation {
                    return Ok(Err(Refusal::new(
                        RejectCode::Conflict,
                        format!(
                            "certificate {} was already confirmed (message {:?})",
                            rec.number, prev.message_id
                        ),
                    )));
                }
                let discrepancy = discrepancy(&rec, c);
                rec.status = if discrepancy.is_some() {
                    CertStatus::ImportDiscrepancy
                } else {
                    CertStatus::ImportConfirmed
                };
                rec.confirmation = Some(ConfirmationRecord {
                    message_id: item.message_id,
                    received_on: c.received_on,
                    parcels: c.parcels,
                    carats: c.carats,
                    discrepancy,
                    confirmed_at: doc.signed_at,
                    acknowledged: true,
                    rejection: None,
                });
                rec.updated_at = now;
                tracing::info!(number = %rec.number, from = %peer, status = rec.status.as_str(), "import confirmation received");
                txn.put(Tree::Certs, key, &rec);
                Ok(Ok(()))
            }
            Content::Void(v) => {
                let key = v.certificate.as_str().as_bytes();
                let rec = txn.get_rec::<CertRecord>(Tree::Certs, key)?;
                let Some(mut rec) = rec.filter(|r| {
                    r.direction == Direction::In && r.peer == peer && r.message_id == v.certificate_id
                }) else {
                    return Ok(Err(Refusal::new(
                        RejectCode::UnknownCertificate,
                        format!(
                            "{} holds no certificate {} from {peer} with that id",
                            self.me, v.certificate
                        ),
                    )));
                };
                if rec.status == CertStatus::Voided {
                    return Ok(Err(Refusal::new(
                        RejectCode::Conflict,
                        format!("certificate {} is already voided", rec.number),
                    )));
                }
                tracing::info!(number = %rec.number, from = %peer, reason = %v.reason, "certificate voided by its issuer");
                rec.status = CertStatus::Voided;
                rec.void = Some(VoidRecord {
                    message_id: item.message_id,
                    reason: v.reason.to_string(),
                    voided_at: doc.signed_at,
                    acknowledged: true,
                    rejection: None,
                });
                rec.updated_at = now;
                txn.put(Tree::Certs, key, &rec);
                Ok(Ok(()))
            }
            Content::Rotation(r) => {
                let key = peer.as_bytes();
                let Some(mut rec) = txn.get_rec::<PeerRecord>(Tree::Peers, &key)? else {
                    return Ok(Err(Refusal::new(
                        RejectCode::NotAllowed,
                        format!("{peer} is not enrolled here"),
                    )));
                };
                let known = rec
                    .rotations
                    .iter()
                    .filter_map(|d| d.body::<kp_protocol::KeyRotation>().ok())
                    .any(|k| k.sequence >= r.sequence);
                if !known {
                    rec.rotations.push(doc.clone());
                    txn.put(Tree::Peers, &key, &rec);
                    applied.peers_changed = true;
                }
                Ok(Ok(()))
            }
        }
    }

    fn receipt<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        id: MessageId,
        receipt: MessageReceipt,
    ) -> Result<(), StoreError> {
        let key = out_message_key(peer, &id);
        let Some(OutMessage::Pending { document, oseq, certificate }) =
            txn.get_rec::<OutMessage>(Tree::Messages, &key)?
        else {
            // Already acknowledged (a duplicate receipt) or refused: nothing to do.
            return Ok(());
        };
        let received_at = receipt.received_at();
        let kind = document.kind;
        let (seq, _) = self.append(txn, now, EntryBody::Sent { peer, document, receipt: Box::new(receipt) });
        txn.put(
            Tree::Messages,
            &key,
            &OutMessage::Delivered { log_seq: seq, certificate: certificate.clone() },
        );
        txn.remove(Tree::Outbox, &outbox_key(peer, oseq));
        self.dequeue(peer);
        if let Some(number) = certificate {
            let ckey = number.as_str().as_bytes();
            if let Some(mut rec) = txn.get_rec::<CertRecord>(Tree::Certs, ckey)? {
                match kind {
                    DocumentKind::Certificate => {
                        if rec.status == CertStatus::Queued {
                            rec.status = CertStatus::Delivered;
                        }
                        rec.log_seq = Some(seq);
                        rec.delivered_at = Some(received_at);
                    }
                    DocumentKind::ImportConfirmation => {
                        if let Some(c) = rec.confirmation.as_mut() {
                            c.acknowledged = true;
                        }
                    }
                    DocumentKind::Void => {
                        if let Some(v) = rec.void.as_mut() {
                            v.acknowledged = true;
                        }
                    }
                    _ => {}
                }
                rec.updated_at = now;
                txn.put(Tree::Certs, ckey, &rec);
            }
        }
        Ok(())
    }

    fn rejected<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        id: MessageId,
        rejection: Rejection,
    ) -> Result<(), StoreError> {
        let key = out_message_key(peer, &id);
        let Some(OutMessage::Pending { document, oseq, certificate }) =
            txn.get_rec::<OutMessage>(Tree::Messages, &key)?
        else {
            return Ok(());
        };
        txn.put(
            Tree::Messages,
            &key,
            &OutMessage::Rejected { rejection: rejection.clone(), certificate: certificate.clone() },
        );
        txn.remove(Tree::Outbox, &outbox_key(peer, oseq));
        self.dequeue(peer);
        if let Some(number) = certificate {
            let ckey = number.as_str().as_bytes();
            if let Some(mut rec) = txn.get_rec::<CertRecord>(Tree::Certs, ckey)? {
                match document.kind {
                    DocumentKind::Certificate => {
                        if rec.status == CertStatus::Queued {
                            rec.status = CertStatus::Rejected;
                        }
                        rec.rejection = Some(rejection);
                    }
                    DocumentKind::ImportConfirmation => {
                        if let Some(c) = rec.confirmation.as_mut() {
                            c.rejection = Some(rejection);
                        }
                    }
                    DocumentKind::Void => {
                        if let Some(v) = rec.void.as_mut() {
                            v.rejection = Some(rejection);
                        }
                    }
                    _ => {}
                }
                rec.updated_at = now;
                txn.put(Tree::Certs, ckey, &rec);
            }
        }
        Ok(())
    }
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
        CertStatus::ImportConfirmed | CertStatus::ImportDiscrepancy => {
            Some("its receipt was already confirmed".into())
        }
        _ => None,
    }
}

/// Why an outbound certificate cannot be voided now, if it cannot.
pub fn voidable(rec: &CertRecord) -> Option<String> {
    if rec.direction != Direction::Out {
        return Some("it was issued by another participant; only the exporting authority voids it".into());
    }
    match rec.status {
        CertStatus::Queued | CertStatus::Delivered => None,
        CertStatus::Voided => Some("it is already voided".into()),
        CertStatus::Rejected => Some("the importing node refused it; there is nothing to void".into()),
        _ => Some("the importer has confirmed receipt of the shipment".into()),
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

/// The signed certificate of `rec`, read through `get` (pending in `messages`, or in the log).
pub fn document_of(
    get: impl Fn(Tree, &[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    rec: &CertRecord,
) -> Result<Option<SignedDocument>, StoreError> {
    if let Some(seq) = rec.log_seq {
        if let Some(bytes) = get(Tree::Log, &log_key(seq))? {
            let entry: LogEntry = decode_record(Tree::Log, &log_key(seq), &bytes)?;
            if entry.document().message_id() == rec.message_id {
                return Ok(Some(entry.document().clone()));
            }
        }
    }
    if rec.direction == Direction::Out {
        let key = out_message_key(rec.peer, &rec.message_id);
        if let Some(bytes) = get(Tree::Messages, &key)? {
            if let OutMessage::Pending { document, .. } = decode_record(Tree::Messages, &key, &bytes)? {
                return Ok(Some(document));
            }
        }
    }
    Ok(None)
}

fn load_prefixed<K: Ord, S: Storage + ?Sized>(
    store: &S,
    prefix: &str,
    parse: impl Fn(&str) -> Option<K>,
) -> Result<BTreeMap<K, u64>, StoreError> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xff);
    let mut out = BTreeMap::new();
    for (k, v) in store.range(Tree::Meta, prefix.as_bytes(), &end, usize::MAX)? {
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(key) = parse(&name) {
            out.insert(key, decode_record::<u64>(Tree::Meta, &k, &v)?);
        }
    }
    Ok(out)
}
