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

mod event;
#[cfg(test)]
mod tests;

pub use event::Event;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bincode::{Decode, Encode};
use kp_protocol::receipt::sign_batch_with;
use kp_protocol::{
    Certificate, CertificateNumber, Digest, DocumentKind, ImportConfirmation, MessageId, MessageReceipt,
    ParticipantCode, ParticipantEntry, ReceiptItem, RejectCode, SignedDocument, Timestamp, Void,
};

use crate::signer::Signer;
use crate::storage::{
    self as store, decode_record, encode_record, in_message_key, log_key, meta, outbox_key, CertRecord,
    CertStatus, ConfirmationRecord, Counts, Direction, EntryBody, IdempotencyRecord, LogEntry, LogHead,
    LogRecord, OutboxEntry, PeerRecord, Rejection, ResolutionRecord, Storage, StoreError, Tree, VoidRecord,
    Writes,
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
    },
    /// An import confirmation this node signed for a certificate it received.
    Confirm { document: SignedDocument, confirmation: Box<ImportConfirmation> },
    /// A void this node signed for a certificate it issued.
    Void { document: SignedDocument, void: Void },
    /// A resolution this node signed for a certificate in `import_discrepancy`.
    Resolve { document: SignedDocument, resolution: Box<kp_protocol::Resolution> },
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
    /// `replace_identity` allows a new fingerprint for an enrolled participant.
    EnrolPeer { record: Box<PeerRecord>, replace_identity: bool },
    /// Stop trusting a peer; its queued messages stay queued.
    RemovePeer { participant: ParticipantCode },
    /// Queue a document (a key rotation statement) for each of `peers`.
    Announce { document: SignedDocument, peers: Vec<ParticipantCode> },
    /// Record a participant registry change this node signed: a log entry, and the entry
    /// added to the participant's registry history.
    RecordParticipant {
        document: SignedDocument,
        entry: Box<ParticipantEntry>,
        /// The signed list the change comes from, if it does (`None`: the operator's).
        from_list: Option<crate::registry::ListOrigin>,
    },
}

impl Command {
    /// Signs the record of a change to the participant registry and makes the command that
    /// stores it; `from_list` names the signed list it comes from (`None` for the operator's
    /// change). `source` is who made it ("operator" if it is not a valid text).
    pub fn record_participant(
        signer: &Signer,
        entry: kp_protocol::ParticipantEntry,
        source: &str,
        from_list: Option<crate::registry::ListOrigin>,
    ) -> Command {
        let source: kp_protocol::Text =
            source.parse().unwrap_or_else(|_| "operator".parse().expect("a valid text"));
        let document = signer.sign(&kp_protocol::RegistryChange { entry: entry.clone(), source });
        Command::RecordParticipant { document, entry: Box::new(entry), from_list }
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
}

/// The most deliveries one [`Command::Deliveries`] may carry: one receipt batch, signed once,
/// acknowledges them all. Far above what a link batches (at most 256 a read), and small enough
/// that a batch's Merkle tree and receipts stay a few megabytes.
pub const MAX_DELIVERIES: usize = 4096;

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

/// Why deliveries checked `under` some trust may no longer be taken from `peer`, according
/// to its stored record as this transaction sees it; `None` if they may.
fn distrust<S: Storage + ?Sized>(
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
fn stored_signing_windows<S: Storage + ?Sized>(
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
fn outside_history(
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
fn note_signed<S: Storage + ?Sized>(
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
}

impl<'s, S: Storage + ?Sized> Txn<'s, S> {
    fn new(store: &'s S) -> Txn<'s, S> {
        Txn { store, writes: Default::default(), events: Vec::new() }
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
            let outcome = match command {
                Command::Submit { document, certificate, assigned, idempotency } => {
                    self.submit(&mut txn, &mut applied, now, document, *certificate, assigned, idempotency)?
                }
                Command::Confirm { document, confirmation } => {
                    self.confirm(&mut txn, &mut applied, now, document, *confirmation)?
                }
                Command::Void { document, void } => self.void(&mut txn, &mut applied, now, document, void)?,
                Command::Resolve { document, resolution } => {
                    self.resolve(&mut txn, &mut applied, now, document, *resolution)?
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
                    for (id, oseq, receipt) in items {
                        if let Some(number) = self.receipt(&mut txn, now, peer, id, oseq, receipt)? {
                            applied.acknowledged.push((id, number));
                        }
                    }
                    Outcome::Done
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
                Command::EnrolPeer { record, replace_identity } => {
                    self.enrol(&mut txn, &mut applied, now, *record, replace_identity)?
                }
                Command::RemovePeer { participant } => {
                    let key = participant.as_bytes();
                    let stored = txn
                        .get(Tree::Peers, &key)?
                        .map(|b| decode_record::<PeerRecord>(Tree::Peers, &key, &b));
                    match stored {
                        // A record that cannot be loaded is kept as it is (it is evidence);
                        // enrolling a current bundle replaces it.
                        Some(Err(_)) => Outcome::Refused(EngineError::Quarantined(participant)),
                        Some(Ok(mut rec)) if rec.removed_at.is_none() => {
                            rec.removed_at = Some(now);
                            txn.put(Tree::Peers, &key, &rec);
                            applied.peers_changed = true;
                            Outcome::Done
                        }
                        _ => Outcome::Refused(EngineError::UnknownPeer(participant)),
                    }
                }
                Command::Announce { document, peers } => {
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
                Command::RecordParticipant { document, entry, from_list } => {
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
                        let (log_seq, _) = self.append(&mut txn, now, EntryBody::Recorded { document });
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

    /// Appends a log entry (with the receipt this node gives for it, if known); returns its
    /// seq, its hash and its canonical bytes.
    /// Appends an entry to the log; returns its position and hash.
    fn append<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        body: EntryBody,
    ) -> (u64, Digest) {
        let (seq, hash, entry) = self.chain(now, body);
        txn.put(Tree::Log, &log_key(seq), &LogRecord { entry, receipt: None });
        (seq, hash)
    }

    /// Chains an entry onto the log's head and returns its position, hash and encoding, for
    /// the caller to store (with its receipt, once the batch's receipt is signed).
    fn chain(&mut self, now: Timestamp, body: EntryBody) -> (u64, Digest, Vec<u8>) {
        let entry =
            LogEntry { seq: self.head.next_seq, prev_hash: self.head.last_hash, recorded_at: now, body };
        let bytes = encode_record(&entry);
        let hash = store::hash_entry_bytes(&entry.prev_hash, &bytes);
        self.head = LogHead { next_seq: entry.seq + 1, last_hash: hash };
        (entry.seq, hash, bytes)
    }

    /// Queues `document` for `peer`; returns its outbox position.
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
        let admitted = match crate::enrol::admit(record, existing, replace_identity, &last_signed) {
            Ok(a) => a,
            Err(e) => return Ok(Outcome::Refused(e.into())),
        };
        let keys = crate::trust::record_tls_keys(&admitted.record);
        if let Some(owner) = txn.tls_owner(participant, &keys)? {
            return Ok(Outcome::Refused(crate::enrol::EnrolError::TlsKeyTaken { participant, owner }.into()));
        }
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
    fn submit<S: Storage + ?Sized>(
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
        txn.put(Tree::Certs, number.as_str().as_bytes(), &record);
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
        txn.put(Tree::Certs, rec.number.as_str().as_bytes(), &rec);
        Outcome::Updated(Box::new(rec))
    }

    fn confirm<S: Storage + ?Sized>(
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

    fn void<S: Storage + ?Sized>(
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

    fn resolve<S: Storage + ?Sized>(
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

    /// A partner's resolution: it must come from the other participant of a certificate this
    /// node holds, name that certificate's id, and find it in `import_discrepancy`.
    fn judge_resolution<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
        r: &kp_protocol::Resolution,
        at_seq: u64,
    ) -> Result<Verdict, StoreError> {
        let (doc, id) = (&item.document, item.message_id);
        let key = r.certificate.as_str().as_bytes();
        let Some(mut rec) = named_certificate(txn, &r.certificate, peer, None, r.certificate_id)? else {
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
        txn.put(Tree::Certs, key, &rec);
        Ok(Verdict::Store)
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
            match self.judge(txn, applied, now, peer, &item, at_seq)? {
                Verdict::Store => {
                    if is_rotation {
                        rotations.push((id, at_seq));
                        windows = stored_signing_windows(txn, peer)?;
                    }
                    note_signed(txn, peer, key_id, signed_at)?;
                    // Stored below, once, with its receipt.
                    let (seq, hash, bytes) =
                        self.chain(now, EntryBody::Received { peer, document: item.document });
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
            }
        }
        let receipts: Vec<MessageReceipt> = if new_items.is_empty() {
            Vec::new()
        } else {
            let signer = &self.signer;
            // It signs any batch of 1 to u32::MAX items; this one has 1 to MAX_DELIVERIES.
            let (batch, proofs) = sign_batch_with(&new_items, self.me, peer, |body| signer.sign(body))
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
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
        at_seq: u64,
    ) -> Result<Verdict, StoreError> {
        match &item.content {
            Content::Certificate(cert) => self.judge_certificate(txn, now, peer, item, cert, at_seq),
            Content::Confirmation(c) => self.judge_confirmation(txn, now, peer, item, c, at_seq),
            Content::Void(v) => self.judge_void(txn, now, peer, item, v, at_seq),
            Content::Resolution(r) => self.judge_resolution(txn, now, peer, item, r, at_seq),
            Content::Rotation(r) => self.judge_rotation(txn, applied, peer, item, r),
        }
    }

    /// A partner's certificate: new unless its number is stored; the same message again is a
    /// resend, another document with that number a conflict.
    fn judge_certificate<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
        cert: &Certificate,
        at_seq: u64,
    ) -> Result<Verdict, StoreError> {
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
        txn.put(Tree::Certs, key, &rec);
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
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
        c: &ImportConfirmation,
        at_seq: u64,
    ) -> Result<Verdict, StoreError> {
        let (doc, id) = (&item.document, item.message_id);
        let key = c.certificate.as_str().as_bytes();
        let Some(mut rec) =
            named_certificate(txn, &c.certificate, peer, Some(Direction::Out), c.certificate_id)?
        else {
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
        txn.put(Tree::Certs, key, &rec);
        Ok(Verdict::Store)
    }

    /// A partner's void of a certificate this node received from it: refused if the import
    /// was confirmed here, or the certificate was already voided by another message.
    fn judge_void<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        now: Timestamp,
        peer: ParticipantCode,
        item: &Received,
        v: &Void,
        at_seq: u64,
    ) -> Result<Verdict, StoreError> {
        let (doc, id) = (&item.document, item.message_id);
        let key = v.certificate.as_str().as_bytes();
        let Some(mut rec) =
            named_certificate(txn, &v.certificate, peer, Some(Direction::In), v.certificate_id)?
        else {
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
        txn.put(Tree::Certs, key, &rec);
        Ok(Verdict::Store)
    }

    /// A partner's key rotation: it must extend the key history stored for it (not fork
    /// it), not disown what this node stores signed with the replaced key, and not claim a
    /// TLS key bound to another participant.
    fn judge_rotation<S: Storage + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, S>,
        applied: &mut Applied,
        peer: ParticipantCode,
        item: &Received,
        r: &kp_protocol::KeyRotation,
    ) -> Result<Verdict, StoreError> {
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
    fn receipt<S: Storage + ?Sized>(
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
        let (seq, _) = self.append(
            txn,
            now,
            EntryBody::Sent { peer, document: entry.document, receipt: Box::new(receipt) },
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
    fn rejected<S: Storage + ?Sized>(
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
        txn.put(Tree::Certs, key, &rec);
    }
    Ok(())
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

/// What the store says about a delivered document.
enum Verdict {
    /// New: store it.
    Store,
    /// Stored before, at this log position: answer with the receipt given then.
    Duplicate(u64),
    Refuse(Refusal),
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

// The follow-ups a certificate record holds, written alike for this node's own (`log_seq`
// `None`: logged, and acknowledged, once the partner's receipt comes) and a partner's
// (received, so acknowledged, and logged at `log_seq`). `id` is the message id of `doc`.

/// Records import confirmation `c` (signed in `doc`) on `rec`, with its discrepancy if any.
fn record_confirmation(
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
fn record_void(rec: &mut CertRecord, v: &Void, doc: &SignedDocument, id: MessageId, log_seq: Option<u64>) {
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
fn resolution_record(
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
