//! The exchange rules, without I/O: what a node stores, dedupes, acknowledges and refuses,
//! and in which order. [`Engine::apply`] takes a batch of [`Command`]s, works out their
//! effects on a [`Storage`] and commits them atomically; the caller flushes before it acts
//! on any [`Outcome`] (answers a submitter, sends a receipt). The daemon's store actor and
//! the deterministic simulation drive the same engine.
//!
//! Invariants kept here:
//! - a certificate number is stored once; a second, different document with that number is
//!   refused (`Conflict`), the same message again gets its original receipt, even if it
//!   would no longer pass the receiver's checks (an expired certificate, a retired key);
//! - a receipt is only produced for an entry appended in the same commit (and so made
//!   durable by the flush that precedes sending it) or already stored;
//! - the log is append-only and hash-chained, its head kept in `meta` in the same commit.
//!
//! Here: the commands, outcomes and errors, the batch transaction, the log chain, the outbox
//! and enrolment. By concern: `certificates` (submit, and this node's confirmations, voids and
//! resolutions), `inbound` (judging a partner's deliveries, one function per document kind,
//! and their receipts), `receipts` (a partner's receipts and rejections of what this node
//! sent), `event` (what the operator hears).

mod certificates;
mod event;
mod inbound;
mod receipts;
mod recovered;
#[cfg(test)]
mod tests;

pub use certificates::{
    confirmable, document_of, idempotency_meta_key, live_idempotency, replaceable, replaceable_here,
    resolvable, voidable, Idempotency, IDEMPOTENCY_WINDOW_DAYS,
};
pub use event::Event;
use inbound::distrust;
#[cfg(test)]
pub(crate) use inbound::BUG_NO_DEDUPE;
pub use recovered::{
    assigned_parts, recovery_pending, set_recovery_pending, RecoveryPending, RECOVERY_PENDING,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bincode::{Decode, Encode};
use kp_protocol::receipt::try_sign_batch_with;
use kp_protocol::{
    Certificate, CertificateNumber, Digest, DocumentKind, ImportConfirmation, MessageId, MessageReceipt,
    ParticipantCode, ParticipantEntry, PeerAction, PeerChange, ReceiptItem, RejectCode, SignedDocument,
    Timestamp, Void,
};

use crate::signer::Signer;
use crate::storage::{
    self as store, decode_record, encode_record, in_message_key, log_key, meta, outbox_key, CertRecord,
    CertStatus, ConfirmationRecord, Counts, Direction, EntryBody, IdempotencyRecord, LogEntry, LogHead,
    LogRecord, Officer, OutboxEntry, PeerRecord, Rejection, ReplacementRecord, ResolutionRecord, Storage,
    StoreError, Tree, VoidRecord, Writes,
};
use crate::verify::{Content, Received, Refusal};

/// Something for the engine to do.
#[derive(Debug)]
pub enum Command {
    /// A certificate this node signed, to queue for its importer. `assigned` is the
    /// (year, sequence) the node gave it, if it numbered it.
    /// `idempotency`, if the submitter gave a key, is remembered with the certificate.
    Submit {
        document: SignedDocument,
        certificate: Box<Certificate>,
        assigned: Option<(i32, u64)>,
        idempotency: Option<Idempotency>,
        officer: Option<Officer>,
    },
    /// An import confirmation this node signed for a certificate it received.
    Confirm { document: SignedDocument, confirmation: Box<ImportConfirmation>, officer: Option<Officer> },
    /// A void this node signed for a certificate it issued.
    Void { document: SignedDocument, void: Void, officer: Option<Officer> },
    /// A resolution this node signed for a certificate in `import_discrepancy`.
    Resolve { document: SignedDocument, resolution: Box<kp_protocol::Resolution>, officer: Option<Officer> },
    /// Documents `peer` delivered that passed every check not needing the store. `under`
    /// says which trust they were checked under; the engine confirms it against the stored
    /// peer record in the transaction that would store them (see [`CheckedUnder`]). Only a
    /// caller that keeps its peers' trust outside the store (the simulator) passes `None`.
    Deliveries { peer: ParticipantCode, under: Option<CheckedUnder>, items: Vec<Received> },
    /// Receipts from `peer`, already verified against its key history, each with the outbox
    /// position of the message it acknowledges (known to the link that sent it).
    Receipts { peer: ParticipantCode, items: Vec<(MessageId, u64, MessageReceipt)> },
    /// `peer` refused the message at outbox position `oseq` for good.
    Rejected { peer: ParticipantCode, message_id: MessageId, oseq: u64, code: RejectCode, detail: String },
    /// Trust a peer (or trust it again, with a new bundle: see [`crate::enrol::admit`]).
    /// `replace_identity` allows a new fingerprint for an enrolled participant. The change is
    /// signed and logged (a [`kp_protocol::PeerChange`]) with `officer`.
    EnrolPeer { record: Box<PeerRecord>, replace_identity: bool, officer: Option<Officer> },
    /// Stop trusting a peer; its queued messages stay queued. Signed and logged as enrolment is.
    RemovePeer { participant: ParticipantCode, officer: Option<Officer> },
    /// Queue a document (a key rotation statement) for each of `peers`.
    Announce { document: SignedDocument, peers: Vec<ParticipantCode>, officer: Option<Officer> },
    /// Record a participant registry change this node signed: a log entry, and the entry
    /// added to the participant's registry history.
    RecordParticipant {
        document: SignedDocument,
        entry: Box<ParticipantEntry>,
        /// The signed list the change comes from, if it does (`None`: the operator's).
        from_list: Option<crate::registry::ListOrigin>,
        officer: Option<Officer>,
    },
    /// Recovery from partners: a document this node signed and `peer` holds, with the
    /// receipt `peer` gave for it (verified against `peer`'s key history), stored again as
    /// sent and acknowledged. See `recovered.rs`.
    RecoveredSent {
        peer: ParticipantCode,
        document: SignedDocument,
        content: Box<Content>,
        receipt: Box<MessageReceipt>,
    },
    /// Raise the last certificate sequence of each (year, sequence) to at least that: no
    /// number a partner holds is issued again.
    RaiseNumbers { numbers: Vec<(i32, u64)> },
    /// Recovery from `recovered` completed (`None`: the operator ends the recovery-pending
    /// state): the state ends once every one of `partners` (the active enrolled peers) has.
    RecoveryProgress { recovered: Option<ParticipantCode>, partners: Vec<ParticipantCode> },
}

impl Command {
    /// Signs the record of a change to the participant registry and makes the command that
    /// stores it; `from_list` names the signed list it comes from (`None` for the operator's
    /// change). `source` is who made it ("operator" if it is not a valid text); `officer`, who
    /// on this node (kept in the log entry only, not in the signed document).
    pub fn record_participant(
        signer: &Signer,
        entry: kp_protocol::ParticipantEntry,
        source: &str,
        from_list: Option<crate::registry::ListOrigin>,
        officer: Option<Officer>,
    ) -> Result<Command, kp_keys::SignError> {
        let source: kp_protocol::Text =
            source.parse().unwrap_or_else(|_| "operator".parse().expect("a valid text"));
        let document = signer.sign(&kp_protocol::RegistryChange { entry: entry.clone(), source })?;
        Ok(Command::RecordParticipant { document, entry: Box::new(entry), from_list, officer })
    }

    /// Who on this node asked for this, if anyone did (a partner's traffic has no officer).
    fn officer(&self) -> Option<&Officer> {
        match self {
            Command::Submit { officer, .. }
            | Command::Confirm { officer, .. }
            | Command::Void { officer, .. }
            | Command::Resolve { officer, .. }
            | Command::Announce { officer, .. }
            | Command::RecordParticipant { officer, .. }
            | Command::EnrolPeer { officer, .. }
            | Command::RemovePeer { officer, .. } => officer.as_ref(),
            Command::Deliveries { .. }
            | Command::Receipts { .. }
            | Command::Rejected { .. }
            // Who did it was on the lost store: recovered entries name no officer.
            | Command::RecoveredSent { .. }
            | Command::RaiseNumbers { .. }
            | Command::RecoveryProgress { .. } => None,
        }
    }
}

/// The trust a link checked a batch of deliveries under: the identity whose key history
/// verified the documents, and the TLS key the link authenticated with. A trust change (peer
/// removed, identity replaced, record quarantined) can be committed after the link checked
/// the batch and before the store commits it; the engine compares these two keys with the
/// stored peer record in the batch's own transaction, so the change always wins: the batch
/// is refused whole, nothing is stored or receipted, and the link closes. Two key compares,
/// no signature is verified again. (A replaced TLS key's grace period ends by the clock, not
/// by a commit; the link judges that every 500 ms.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedUnder {
    /// The root signing key of the identity (its fingerprint's key).
    pub root_key: [u8; 32],
    /// The TLS public key the link authenticated with.
    pub tls_key: [u8; 32],
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
    /// Neither stored nor refused: a follow-up of a certificate this node does not hold while
    /// it awaits recovery from its partners (see [`RECOVERY_PENDING`]). No answer is sent;
    /// the partner, without a receipt, sends it again.
    Held {
        message_id: MessageId,
        detail: String,
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
    /// The bundle may not replace what is stored (older, forked, another identity…).
    #[error(transparent)]
    Enrol(#[from] crate::enrol::EnrolError),
    #[error(
        "the record of {0} cannot be loaded (the peer is quarantined); enrol a current bundle \
         with `kpnode peer add` to replace it"
    )]
    Quarantined(ParticipantCode),
    /// A participant registry change from a list that is older than a change the store
    /// recorded since the import was planned (two imports at once): not recorded.
    #[error("{0}")]
    OlderList(String),
    #[error(
        "Idempotency-Key {key:?} was already used for certificate {number}, with other content; a retry must \
send exactly the same request, and a new certificate needs a new key"
    )]
    IdempotencyConflict { key: String, number: CertificateNumber },
    /// Deliveries checked under trust that a change committed since has withdrawn.
    #[error("deliveries from {peer} were checked under trust no longer in force ({why}); nothing of them was stored")]
    Untrusted { peer: ParticipantCode, why: crate::trust::Distrust },
    /// More deliveries in one command than one receipt batch acknowledges ([`MAX_DELIVERIES`]):
    /// a fault of the caller, which batches them; none is stored, and the link closes so the
    /// peer sends them again.
    #[error(
        "a batch of {documents} deliveries from {peer} is more than one receipt batch acknowledges \
         ({max}); nothing of it was stored"
    )]
    TooManyDeliveries { peer: ParticipantCode, documents: usize, max: usize },
    /// Receipts signed with a key the stored key history of the peer does not make valid
    /// when they were signed: not recorded (the others of the command are); their messages
    /// stay queued.
    #[error(
        "a receipt from {peer} is signed with a key its stored key history does not make valid then \
         ({detail}); it was not recorded and the message stays queued. A resend gets the same receipt: \
         ask {peer}'s operator which key signed it"
    )]
    ReceiptOutsideHistory { peer: ParticipantCode, detail: String },
    /// The node was restored from a backup and has not recovered from its partners yet: a
    /// new number could be one a partner already holds.
    #[error(
        "this node was restored from a backup and has not recovered from its partners yet: no certificate is \
         issued until `kpnode recover` has recovered from every enrolled partner (or the operator ends it with \
         `kpnode recover --finish`), because a new number could be one a partner already holds"
    )]
    RecoveryPending,
}

/// The most deliveries one [`Command::Deliveries`] may carry: one receipt batch, signed once,
/// acknowledges them all. Far above what a link batches (at most 256 a read), and small enough
/// that a batch's Merkle tree and receipts stay a few megabytes.
pub const MAX_DELIVERIES: usize = 4096;

/// Everything one `apply` did.
#[derive(Debug)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    /// For each peer that got new outbox entries, the highest outbox sequence committed.
    pub queued_up_to: BTreeMap<ParticipantCode, u64>,
    /// Whether any peer was enrolled, removed or rotated its keys, or the participant
    /// registry changed (the node reloads both).
    pub peers_changed: bool,
    /// How many log entries were appended.
    pub appended: u64,
    /// Outbound messages acknowledged by a receipt in this batch, with the certificate each
    /// concerns.
    pub acknowledged: Vec<(MessageId, Option<CertificateNumber>)>,
    /// What the operator should hear about, in order (the engine does not log).
    pub events: Vec<Event>,
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

/// Writes of the batch being applied, readable before they are committed. One map per tree,
/// so a read needs no allocation.
struct Txn<'s, S: Storage + ?Sized> {
    store: &'s S,
    writes: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Tree::ALL.len()],
    /// What to tell the operator once the batch is durable.
    events: Vec<Event>,
    /// The officer of the command being applied: named in what it queues and logs.
    officer: Option<Officer>,
}

impl<'s, S: Storage + ?Sized> Txn<'s, S> {
    fn new(store: &'s S) -> Txn<'s, S> {
        Txn { store, writes: Default::default(), events: Vec::new(), officer: None }
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.writes[tree as usize].get(key) {
            return Ok(v.clone());
        }
        self.store.get(tree, key)
    }

    fn get_rec<T: Decode<()>>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        if let Some(v) = self.writes[tree as usize].get(key) {
            return v.as_deref().map(|b| decode_record(tree, key, b)).transpose();
        }
        match self.store.get(tree, key)? {
            Some(b) => decode_record(tree, key, &b).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Encode>(&mut self, tree: Tree, key: &[u8], value: &T) {
        self.writes[tree as usize].insert(key.to_vec(), Some(encode_record(value)));
    }

    /// A certificate's record, and (if it was received) its place in the index of
    /// certificates received, in step with its confirmation.
    fn put_cert(&mut self, rec: &CertRecord) {
        self.put(Tree::Certs, rec.number.as_str().as_bytes(), rec);
        for (key, value) in store::index::imported_writes(rec) {
            self.writes[Tree::Imported as usize].insert(key, value);
        }
    }

    /// A new certificate's record, and its place in the index by date of issue (which never
    /// changes: later writes of the record leave the index alone).
    fn put_new_cert(&mut self, rec: &CertRecord) {
        self.put_cert(rec);
        let key = store::index::issued_key(rec.issued_on, rec.number.as_str());
        self.writes[Tree::Issued as usize].insert(key, Some(Vec::new()));
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) {
        self.writes[tree as usize].insert(key.to_vec(), None);
    }

    /// Every entry of `tree` as this batch would leave it (for the small trees only: peers).
    fn scan(&self, tree: Tree) -> Result<Vec<store::KeyValue>, StoreError> {
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> =
            self.store.range(tree, &[], &[0xff; 16], usize::MAX)?.into_iter().collect();
        for (k, v) in &self.writes[tree as usize] {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }

    /// The other participant (not `participant`) a stored record (current or archived
    /// identity) binds one of `keys` to.
    fn tls_owner(
        &self,
        participant: ParticipantCode,
        keys: &[[u8; 32]],
    ) -> Result<Option<ParticipantCode>, StoreError> {
        for (k, v) in self.scan(Tree::Peers)? {
            if k == participant.as_bytes() {
                continue;
            }
            // A record that cannot be read binds nothing it can prove.
            let Ok(rec) = decode_record::<PeerRecord>(Tree::Peers, &k, &v) else { continue };
            if crate::trust::record_tls_keys(&rec).iter().any(|t| keys.contains(t)) {
                return Ok(Some(rec.participant));
            }
        }
        // And identities other participants had before they replaced them.
        for (k, v) in self.scan(Tree::PeerArchive)? {
            if k.starts_with(&participant.as_bytes()) {
                continue;
            }
            let Ok(a) = decode_record::<store::ArchivedIdentity>(Tree::PeerArchive, &k, &v) else { continue };
            if crate::trust::record_tls_keys(&a.record).iter().any(|t| keys.contains(t)) {
                return Ok(Some(a.record.participant));
            }
        }
        Ok(None)
    }

    /// All writes, for the store's atomic commit.
    fn into_writes(self) -> Writes {
        let mut out = Writes::new();
        for (tree, map) in Tree::ALL.iter().zip(self.writes) {
            for (k, v) in map {
                out.insert((*tree, k), v);
            }
        }
        out
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
        let mut txn = Txn::new(store);
        let mut applied = Applied {
            outcomes: Vec::with_capacity(commands.len()),
            queued_up_to: BTreeMap::new(),
            peers_changed: false,
            appended: 0,
            acknowledged: Vec::new(),
            events: Vec::new(),
        };
        let head_before = self.head.next_seq;
        let counts_before = self.counts;
        let queued_before = self.queued.clone();
        let numbers_before = self.numbers.clone();

        for command in commands {
            txn.officer = command.officer().cloned();
            let outcome = match command {
                Command::Submit { .. } if txn.get(Tree::Meta, RECOVERY_PENDING)?.is_some() => {
                    Outcome::Refused(EngineError::RecoveryPending)
                }
                Command::Submit { document, certificate, assigned, idempotency, officer: _ } => {
                    self.submit(&mut txn, &mut applied, now, document, *certificate, assigned, idempotency)?
                }
                Command::Confirm { document, confirmation, officer: _ } => {
                    self.confirm(&mut txn, &mut applied, now, document, *confirmation)?
                }
                Command::Void { document, void, officer: _ } => {
                    self.void(&mut txn, &mut applied, now, document, void)?
                }
                Command::Resolve { document, resolution, officer: _ } => {
                    self.resolve(&mut txn, &mut applied, now, document, *resolution)?
                }
                Command::RecoveredSent { peer, document, content, receipt } => {
                    self.recovered_sent(&mut txn, &mut applied, now, peer, document, *content, *receipt)?
                }
                Command::RaiseNumbers { numbers } => self.raise_numbers(&numbers),
                Command::RecoveryProgress { recovered, partners } => {
                    self.recovery_progress(&mut txn, recovered, &partners)?
                }
                Command::Deliveries { peer, under, items } => {
                    match under.map(|u| distrust(&txn, peer, &u)).transpose()?.flatten() {
                        Some(why) => {
                            txn.events.push(Event::UntrustedBatchRefused {
                                peer,
                                why: why.clone(),
                                documents: items.len(),
                            });
                            Outcome::Refused(EngineError::Untrusted { peer, why })
                        }
                        // Refused before anything is written, so the receipt batch below
                        // always signs.
                        None if items.len() > MAX_DELIVERIES => {
                            let (documents, max) = (items.len(), MAX_DELIVERIES);
                            txn.events.push(Event::OversizedBatchRefused { peer, documents, max });
                            Outcome::Refused(EngineError::TooManyDeliveries { peer, documents, max })
                        }
                        None => {
                            Outcome::Delivered(self.deliveries(&mut txn, &mut applied, now, peer, items)?)
                        }
                    }
                }
                Command::Receipts { peer, items } => {
                    // A receipt is logged with the message it acknowledges, so `log verify`
                    // will judge its signature by the key history stored for the peer: one
                    // signed with a key that history does not make valid then (a key a stored
                    // rotation retired, on a link that checked it before the rotation was in
                    // force), or from a peer whose stored record cannot be read, is not
                    // recorded. The message stays queued; a resend gets the same receipt, so
                    // only the peer's operator can settle it (the event says so). A peer with
                    // no record at all has no link in the daemon; only engines whose trust
                    // lives outside the store (tests) meet one, and their receipts are taken.
                    let recorded = txn.get(Tree::Peers, &peer.as_bytes())?.is_some();
                    let windows = inbound::stored_signing_windows(&txn, peer)?;
                    let mut refused = None;
                    for (id, oseq, receipt) in items {
                        let outside = match windows.as_deref() {
                            Some(w) => inbound::outside_history(w, peer, &receipt.batch),
                            None if !recorded => None,
                            None => Some(Refusal::new(
                                kp_protocol::RejectCode::UnknownKey,
                                format!("the stored record of {peer} cannot be read"),
                            )),
                        };
                        if let Some(r) = outside {
                            txn.events.push(Event::ReceiptOutsideHistory {
                                peer,
                                message: id,
                                detail: r.detail.clone(),
                            });
                            refused.get_or_insert(r.detail);
                            continue;
                        }
                        if let Some(number) = self.receipt(&mut txn, now, peer, id, oseq, receipt)? {
                            applied.acknowledged.push((id, number));
                        }
                    }
                    match refused {
                        Some(detail) => Outcome::Refused(EngineError::ReceiptOutsideHistory { peer, detail }),
                        None => Outcome::Done,
                    }
                }
                Command::Rejected { peer, message_id, oseq, code, detail } => {
                    self.rejected(
                        &mut txn,
                        now,
                        peer,
                        message_id,
                        oseq,
                        Rejection { code, detail, at: now },
                    )?;
                    Outcome::Done
                }
                Command::EnrolPeer { record, replace_identity, officer } => {
                    self.enrol(&mut txn, &mut applied, now, *record, replace_identity, officer)?
                }
                Command::RemovePeer { participant, officer } => {
                    let key = participant.as_bytes();
                    let stored = txn
                        .get(Tree::Peers, &key)?
                        .map(|b| decode_record::<PeerRecord>(Tree::Peers, &key, &b));
                    match stored {
                        // A record that cannot be loaded is kept as it is (it is evidence);
                        // enrolling a current bundle replaces it.
                        Some(Err(_)) => Outcome::Refused(EngineError::Quarantined(participant)),
                        Some(Ok(mut rec)) if rec.removed_at.is_none() => {
                            let change = peer_change(&rec, PeerAction::Removed);
                            let document = self.signer.sign(&change)?;
                            self.append(&mut txn, now, EntryBody::Recorded { document }, officer);
                            rec.removed_at = Some(now);
                            txn.put(Tree::Peers, &key, &rec);
                            applied.peers_changed = true;
                            Outcome::Done
                        }
                        _ => Outcome::Refused(EngineError::UnknownPeer(participant)),
                    }
                }
                Command::Announce { document, peers, officer: _ } => {
                    let id = document.message_id();
                    for peer in peers {
                        self.enqueue(&mut txn, &mut applied, peer, &document, id, None);
                    }
                    if let Ok(r) = document.body::<kp_protocol::KeyRotation>() {
                        let announced =
                            txn.get_rec::<u32>(Tree::Meta, meta::ROTATIONS_ANNOUNCED)?.unwrap_or(0);
                        txn.put(Tree::Meta, meta::ROTATIONS_ANNOUNCED, &announced.max(r.sequence));
                    }
                    Outcome::Done
                }
                Command::RecordParticipant { document, entry, from_list, officer } => {
                    let key = crate::registry::key(entry.code);
                    let mut history: crate::registry::RegistryHistory =
                        txn.get_rec(Tree::Registry, &key)?.unwrap_or_default();
                    // The import was planned against the registry as it stood then; another
                    // import may have recorded a newer change since. Judge again here, in the
                    // transaction, so a stale list never lands last.
                    let newer =
                        from_list.as_ref().and_then(|o| history.0.iter().rev().find_map(|r| r.newer_than(o)));
                    if let Some(why) = newer {
                        Outcome::Refused(EngineError::OlderList(why))
                    } else {
                        let (log_seq, _) =
                            self.append(&mut txn, now, EntryBody::Recorded { document }, officer);
                        history.0.push(crate::registry::RecordedEntry {
                            entry: *entry,
                            log_seq,
                            recorded_at: now,
                            from_list,
                        });
                        txn.put(Tree::Registry, &key, &history);
                        applied.peers_changed = true;
                        Outcome::Done
                    }
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
            // Every certificate's index records are in this batch: the indexes stay complete.
            txn.put(Tree::Meta, meta::ISSUED_INDEX_AT, &self.counts);
            txn.put(Tree::Meta, meta::IMPORTED_INDEX_AT, &self.counts);
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
        applied.events = std::mem::take(&mut txn.events);
        store.commit(&txn.into_writes())?;
        Ok(applied)
    }

    /// Appends an entry to the log (with no receipt: this node's record of what it sent or
    /// recorded, and who had it done); returns its position and hash.
    fn append<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        body: EntryBody,
        officer: Option<Officer>,
    ) -> (u64, Digest) {
        let (seq, hash, entry) = self.chain(now, body, officer);
        txn.put(Tree::Log, &log_key(seq), &LogRecord { entry, receipt: None });
        (seq, hash)
    }

    /// Chains an entry onto the log's head and returns its position, hash and encoding, for
    /// the caller to store (with its receipt, once the batch's receipt is signed).
    fn chain(&mut self, now: Timestamp, body: EntryBody, officer: Option<Officer>) -> (u64, Digest, Vec<u8>) {
        let entry = LogEntry::new(self.head.next_seq, self.head.last_hash, now, body, officer);
        let bytes = encode_record(&entry);
        let hash = store::hash_entry_bytes(&entry.prev_hash, &bytes);
        self.head = LogHead { next_seq: entry.seq + 1, last_hash: hash };
        (entry.seq, hash, bytes)
    }

    /// Queues `document` for `peer`, remembering the batch's officer as the one who had it
    /// sent; returns its outbox position.
    fn enqueue<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        peer: ParticipantCode,
        document: &SignedDocument,
        id: MessageId,
        certificate: Option<CertificateNumber>,
    ) -> u64 {
        self.counts.next_oseq += 1;
        let oseq = self.counts.next_oseq;
        let entry = OutboxEntry { message_id: id, document: document.clone(), certificate };
        txn.put(Tree::Outbox, &outbox_key(peer, oseq), &entry);
        if let Some(officer) = txn.officer.clone() {
            txn.put(Tree::Meta, &meta::officer_key(&id), &officer);
        }
        *self.queued.entry(peer).or_default() += 1;
        applied.queued_up_to.insert(peer, oseq);
        oseq
    }

    /// Enrols `record` if [`crate::enrol::admit`] lets it replace what is stored and none of
    /// its TLS keys is bound to another participant; archives the identity it replaces.
    fn enrol<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        now: Timestamp,
        record: PeerRecord,
        replace_identity: bool,
        officer: Option<Officer>,
    ) -> Result<Outcome, StoreError> {
        let participant = record.participant;
        let key = participant.as_bytes();
        let existing = txn
            .get(Tree::Peers, &key)?
            .map(|b| decode_record::<PeerRecord>(Tree::Peers, &key, &b).map_err(|e| e.to_string()));
        let mut last_signed = crate::enrol::LastSigned::new();
        if let Ok(b) = kp_keys::bundle::decode_unverified(&record.bundle) {
            for r in b.rotations.iter().filter_map(|r| r.body::<kp_protocol::KeyRotation>().ok()) {
                if let Some(t) =
                    txn.get_rec::<Timestamp>(Tree::Meta, &meta::signed_with(participant, r.previous_key))?
                {
                    last_signed.insert(r.previous_key, t);
                }
            }
        }
        // Trusted until now (not removed): enrolling again is an update or a replacement.
        let was_trusted = matches!(&existing, Some(Ok(old)) if old.removed_at.is_none());
        let admitted = match crate::enrol::admit(record, existing, replace_identity, &last_signed) {
            Ok(a) => a,
            Err(e) => return Ok(Outcome::Refused(e.into())),
        };
        let keys = crate::trust::record_tls_keys(&admitted.record);
        if let Some(owner) = txn.tls_owner(participant, &keys)? {
            return Ok(Outcome::Refused(crate::enrol::EnrolError::TlsKeyTaken { participant, owner }.into()));
        }
        let action = if admitted.archive.is_some() {
            PeerAction::IdentityReplaced
        } else if was_trusted {
            PeerAction::Updated
        } else {
            PeerAction::Enrolled
        };
        // Signed before anything is written: a token that cannot sign changes nothing.
        let document = self.signer.sign(&peer_change(&admitted.record, action))?;
        self.append(txn, now, EntryBody::Recorded { document }, officer);
        if let Some(old) = admitted.archive {
            let n = txn.scan(Tree::PeerArchive)?.iter().filter(|(k, _)| k.starts_with(&key)).count();
            txn.put(
                Tree::PeerArchive,
                &store::archive_key(participant, n as u32),
                &store::ArchivedIdentity { record: old, replaced_at: now },
            );
        }
        txn.put(Tree::Peers, &key, &admitted.record);
        txn.events.extend(admitted.event);
        applied.peers_changed = true;
        Ok(Outcome::Done)
    }

    fn dequeue(&mut self, peer: ParticipantCode) {
        if let Some(n) = self.queued.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }
}

/// This node's record of a change to `record`'s enrolment: the identity's fingerprint and the
/// digest of the bundle trusted (none for a removal).
fn peer_change(record: &PeerRecord, action: PeerAction) -> PeerChange {
    // The record was verified when it was admitted (or is the stored one being removed); a
    // bundle that does not decode here is named as such rather than refused, so that a removal
    // of a damaged record is still recorded.
    let fingerprint = kp_keys::bundle::decode_unverified(&record.bundle)
        .ok()
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b.root_key).ok())
        .map(|k| kp_keys::Fingerprint::of(&k).to_string())
        .unwrap_or_else(|| "undecodable bundle".into());
    let fingerprint = fingerprint.parse().unwrap_or_else(|_| "unknown".parse().expect("a valid text"));
    let bundle = (action != PeerAction::Removed).then(|| Digest::of_parts(&[&record.bundle]));
    PeerChange { participant: record.participant, action, fingerprint, bundle }
}

/// The `u64` values stored in `meta` under `prefix`, by the key that `parse` reads from the
/// rest of their name (names it cannot read are skipped).
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
