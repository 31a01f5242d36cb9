//! Auditing the log: recompute the hash chain from the first entry, and check every signature
//! in it against the key histories: each document's signer and key at the time it signed,
//! each peer's receipt for what this node sent, and each receipt this node gave for what it
//! received (which must commit to that very entry). The first thing that does not hold is
//! reported with its entry number.

use std::collections::HashSet;

use kp_keys::KeyHistory;
use kp_protocol::{Digest, MessageId, MessageReceipt, ParticipantCode, SignedDocument};

use crate::storage::{
    decode_log, get_record, hash_entry_bytes, log_key, meta, EntryBody, EntryLayout, LogEntry, LogHead,
    Storage, StoreError, Tree,
};
use crate::trust::Trust;
use crate::verify::verify_signatures;

/// What a successful audit covered.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditReport {
    pub entries: u64,
    pub sent: u64,
    pub received: u64,
    /// Changes this node recorded for itself (participant registry, partner enrolments).
    pub recorded: u64,
    pub signatures_checked: u64,
    pub head_hash: Digest,
}

/// The first problem found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("log entry {seq}: {detail}")]
    Entry { seq: u64, detail: String },
    #[error("the log head recorded in the store ({recorded}) does not match the log ({actual})")]
    Head { recorded: String, actual: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuditError {
    /// The entry at fault, if the problem is in one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            AuditError::Entry { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

fn bad(seq: u64, detail: impl Into<String>) -> AuditError {
    AuditError::Entry { seq, detail: detail.into() }
}

/// A document signature waiting to be checked with others.
struct Pending {
    seq: u64,
    document: SignedDocument,
    key: ed25519_dalek::VerifyingKey,
}

/// Audits the whole log of a node. `own` is this node's key history; `trust` holds every peer
/// it ever enrolled. `progress` is told how many entries are done, now and then.
///
/// One thread reads the log in order (the hash chain, the layout, the receipts: each entry
/// needs the one before it); the documents' signatures, most of the work, are verified by
/// one thread per core, a batch at a time, each strictly (see [`verify_signatures`]). The
/// problem reported is the first in the log: a bad signature before the entry where the
/// reading stopped is reported in its place.
pub fn verify_log<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    own: &KeyHistory,
    trust: &Trust,
    progress: impl FnMut(u64),
) -> Result<AuditReport, AuditError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    verify_log_with(store, me, own, trust, progress, workers)
}

/// Signatures handed to a verifying thread at a time.
const SIGNATURE_BATCH: usize = 256;

/// What a verifying thread found in one batch: how many signatures it checked, and the first
/// that does not verify.
struct BatchResult {
    checked: u64,
    first_bad: Option<AuditError>,
}

/// [`verify_log`] with `workers` verifying threads.
pub fn verify_log_with<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    own: &KeyHistory,
    trust: &Trust,
    progress: impl FnMut(u64),
    workers: usize,
) -> Result<AuditReport, AuditError> {
    use std::sync::{mpsc, Mutex};
    let workers = workers.max(1);
    // Bounded: the reader waits for the verifiers rather than holding the whole log.
    let (jobs, queue) = mpsc::sync_channel::<Vec<Pending>>(workers * 2);
    let queue = Mutex::new(queue);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (results_tx, results) = mpsc::channel::<BatchResult>();
        for _ in 0..workers {
            let (queue, results_tx, failed) = (&queue, results_tx.clone(), &failed);
            scope.spawn(move || loop {
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                let Ok(batch) = job else { return };
                let result = verify_batch(&batch);
                if result.first_bad.is_some() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if results_tx.send(result).is_err() {
                    return;
                }
            });
        }
        drop(results_tx);
        let read = read_log(store, me, own, trust, progress, &mut |batch| {
            // A verifier that stopped can only have stopped because the reading did.
            let _ = jobs.send(batch);
            !failed.load(std::sync::atomic::Ordering::Relaxed)
        });
        drop(jobs);
        let mut checked = 0u64;
        let mut first_bad: Option<AuditError> = None;
        for r in results {
            checked += r.checked;
            if let Some(e) = r.first_bad {
                if first_bad.as_ref().is_none_or(|f| e.seq() < f.seq()) {
                    first_bad = Some(e);
                }
            }
        }
        match (read, first_bad) {
            (Err(e), Some(bad)) if bad.seq().is_some_and(|b| e.seq().is_none_or(|s| b < s)) => Err(bad),
            (Err(e), _) => Err(e),
            (Ok(_), Some(bad)) => Err(bad),
            (Ok(mut report), None) => {
                report.signatures_checked += checked;
                Ok(report)
            }
        }
    })
}

/// Verifies one batch of document signatures; names the first bad one.
fn verify_batch(batch: &[Pending]) -> BatchResult {
    let items: Vec<(&SignedDocument, &ed25519_dalek::VerifyingKey)> =
        batch.iter().map(|p| (&p.document, &p.key)).collect();
    let results = verify_signatures(&items);
    let first_bad = batch.iter().zip(results).find(|(_, ok)| !ok).map(|(p, _)| {
        bad(
            p.seq,
            format!("the signature of this {} by {} does not verify", p.document.kind, p.document.signer),
        )
    });
    BatchResult { checked: batch.len() as u64, first_bad }
}

/// Reads the log in order and checks everything but the documents' signatures, which it hands
/// to `verify` a batch at a time (`verify` answers false to stop: a signature failed). The
/// report's `signatures_checked` counts the receipts' signatures only.
fn read_log<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    own: &KeyHistory,
    trust: &Trust,
    mut progress: impl FnMut(u64),
    verify: &mut dyn FnMut(Vec<Pending>) -> bool,
) -> Result<AuditReport, AuditError> {
    let mut report = AuditReport::default();
    let mut prev = Digest::ZERO;
    let mut expected_seq = 1u64;
    let mut verified_batches: HashSet<MessageId> = HashSet::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut start = log_key(1).to_vec();
    // Entries before this one were written in store format 2 (a migrated store), the rest in
    // today's layout: an entry in the other layout was not written where it stands.
    let format3_from = get_record::<u64, _>(store, Tree::Meta, meta::LOG_FORMAT3_FROM)?.unwrap_or(1);
    const PAGE: usize = 4096;
    loop {
        let page = store.range(Tree::Log, &start, &[0xff; 9], PAGE)?;
        let n = page.len();
        for (k, v) in page {
            let seq = <[u8; 8]>::try_from(k.as_slice()).map(u64::from_be_bytes).unwrap_or(0);
            if seq != expected_seq {
                return Err(bad(expected_seq, format!("missing: the next entry in the store is {seq}")));
            }
            let (entry, record) =
                decode_log(&k, &v).map_err(|e| bad(seq, format!("does not decode: {e}")))?;
            let v = record.entry.clone();
            if entry.seq != seq {
                return Err(bad(seq, format!("says it is entry {}", entry.seq)));
            }
            match (entry.layout, seq < format3_from) {
                (EntryLayout::Format2, false) => {
                    return Err(bad(
                        seq,
                        format!(
                            "is in the layout of store format 2 (no officer), but the log is in format 3 from entry {format3_from}"
                        ),
                    ))
                }
                (EntryLayout::Format3, true) => {
                    return Err(bad(
                        seq,
                        format!(
                            "is in the layout of store format 3, but the log's entries before {format3_from} were written in format 2"
                        ),
                    ))
                }
                _ => {}
            }
            if entry.prev_hash != prev {
                return Err(chain_break(store, seq, &entry, &v, prev)?);
            }
            let hash = hash_entry_bytes(&prev, &v);
            check_entry(
                me,
                own,
                trust,
                &entry,
                record.receipt.as_ref(),
                hash,
                &mut verified_batches,
                &mut pending,
                &mut report,
            )?;
            if pending.len() >= SIGNATURE_BATCH && !verify(std::mem::take(&mut pending)) {
                // A signature failed: that is the first problem found, reported by the caller.
                return Ok(report);
            }
            prev = hash;
            expected_seq += 1;
            report.entries += 1;
            start = log_key(seq + 1).to_vec();
        }
        progress(report.entries);
        if n < PAGE {
            break;
        }
    }
    if !pending.is_empty() && !verify(std::mem::take(&mut pending)) {
        return Ok(report);
    }
    let head = get_record::<LogHead, _>(store, Tree::Meta, meta::LOG_HEAD)?
        .unwrap_or(LogHead { next_seq: 1, last_hash: Digest::ZERO });
    if head.next_seq == expected_seq && head.last_hash != prev && expected_seq > 1 {
        return Err(bad(
            expected_seq - 1,
            format!(
                "was altered: it no longer hashes to the log head recorded in the store ({:?})",
                head.last_hash
            ),
        ));
    }
    if head.next_seq != expected_seq || head.last_hash != prev {
        return Err(AuditError::Head {
            recorded: format!("next entry {}, last hash {:?}", head.next_seq, head.last_hash),
            actual: format!("next entry {expected_seq}, last hash {prev:?}"),
        });
    }
    report.head_hash = prev;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn check_entry(
    me: ParticipantCode,
    own: &KeyHistory,
    trust: &Trust,
    entry: &LogEntry,
    own_receipt: Option<&MessageReceipt>,
    hash: Digest,
    verified_batches: &mut HashSet<MessageId>,
    pending: &mut Vec<Pending>,
    report: &mut AuditReport,
) -> Result<(), AuditError> {
    let seq = entry.seq;
    let peer = entry.peer();
    // A peer's keys under its current identity or an archived one (an identity change keeps
    // what was signed before it verifiable).
    let peer_trust = || {
        trust.known(peer).ok_or_else(|| match trust.quarantine_reason(peer) {
            Some(why) => bad(
                seq,
                format!(
                    "the record of {peer} cannot be loaded ({why}), so nothing from it can be checked; \
                     enrol a current bundle for {peer} and verify again"
                ),
            ),
            None => bad(seq, format!("{peer} was never enrolled here, so nothing from it can be checked")),
        })
    };
    let document = entry.document();
    let expected_signer = match &entry.body {
        EntryBody::Sent { .. } | EntryBody::Recorded { .. } => me,
        EntryBody::Received { .. } => peer,
    };
    if document.signer != expected_signer {
        return Err(bad(
            seq,
            format!("the document is signed by {}, expected {expected_signer}", document.signer),
        ));
    }
    let key = match &entry.body {
        EntryBody::Received { .. } => peer_trust()?.signing_key_at(document.key_id, document.signed_at),
        _ => own.signing_key_at(document.key_id, document.signed_at),
    }
    .map_err(|e| bad(seq, format!("{} {}: {e}", document.kind, entry_what(entry))))?;
    pending.push(Pending { seq, document: document.clone(), key: *key });
    let id = document.message_id();
    match &entry.body {
        EntryBody::Sent { receipt, .. } => {
            report.sent += 1;
            let history = peer_trust()?;
            let batch_id = receipt.batch.message_id();
            if verified_batches.contains(&batch_id) {
                let body = receipt
                    .batch
                    .body::<kp_protocol::ReceiptBatch>()
                    .map_err(|e| bad(seq, format!("receipt: {e}")))?;
                if receipt.proof.item.message_id != id {
                    return Err(bad(seq, "the receipt is for another message"));
                }
                receipt.proof.check(&body).map_err(|e| bad(seq, format!("receipt: {e}")))?;
            } else {
                let key = history
                    .signing_key_at(receipt.batch.key_id, receipt.batch.signed_at)
                    .map_err(|e| bad(seq, format!("receipt: {e}")))?;
                receipt
                    .verify(id, key, peer, me)
                    .map_err(|e| bad(seq, format!("receipt from {peer}: {e}")))?;
                verified_batches.insert(batch_id);
                report.signatures_checked += 1;
            }
        }
        EntryBody::Received { .. } => {
            report.received += 1;
            let Some(receipt) = own_receipt else {
                return Err(bad(seq, "the receipt this node gave for it is missing"));
            };
            let item = receipt.proof.item;
            if item.message_id != id || item.log_seq != seq || item.entry_hash != hash {
                return Err(bad(seq, format!(
                    "the receipt this node gave commits to entry {} with hash {:?}, but this entry hashes to {hash:?}",
                    item.log_seq, item.entry_hash
                )));
            }
            let batch_id = receipt.batch.message_id();
            if verified_batches.contains(&batch_id) {
                let body = receipt
                    .batch
                    .body::<kp_protocol::ReceiptBatch>()
                    .map_err(|e| bad(seq, format!("own receipt: {e}")))?;
                receipt.proof.check(&body).map_err(|e| bad(seq, format!("own receipt: {e}")))?;
            } else {
                let key = own
                    .signing_key_at(receipt.batch.key_id, receipt.batch.signed_at)
                    .map_err(|e| bad(seq, format!("own receipt: {e}")))?;
                receipt.verify(id, key, me, peer).map_err(|e| bad(seq, format!("own receipt: {e}")))?;
                verified_batches.insert(batch_id);
                report.signatures_checked += 1;
            }
        }
        EntryBody::Recorded { document } => {
            report.recorded += 1;
            match document.kind {
                kp_protocol::DocumentKind::ParticipantChange => document
                    .body::<kp_protocol::RegistryChange>()
                    .map(drop)
                    .map_err(|e| bad(seq, format!("participant registry change: {e}")))?,
                kp_protocol::DocumentKind::PeerChange => document
                    .body::<kp_protocol::PeerChange>()
                    .map(drop)
                    .map_err(|e| bad(seq, format!("partner enrolment change: {e}")))?,
                other => {
                    return Err(bad(seq, format!("a {other} is not something this node records for itself")))
                }
            }
        }
    }
    Ok(())
}

/// Entry `seq` does not name the hash of entry `seq - 1`. Either entry `seq - 1` was altered
/// (then `seq` is intact, and the entry after it, or the log head, still chains to it) or
/// entry `seq`'s own link was: look one step ahead to tell which.
fn chain_break<S: Storage + ?Sized>(
    store: &S,
    seq: u64,
    entry: &LogEntry,
    bytes: &[u8],
    expected_prev: Digest,
) -> Result<AuditError, AuditError> {
    let this_hash = hash_entry_bytes(&entry.prev_hash, bytes);
    let next_chains = match store.get(Tree::Log, &log_key(seq + 1))? {
        Some(next) => decode_log(&log_key(seq + 1), &next).is_ok_and(|(n, _)| n.prev_hash == this_hash),
        None => get_record::<LogHead, _>(store, Tree::Meta, meta::LOG_HEAD)?
            .is_some_and(|h| h.last_hash == this_hash),
    };
    Ok(if next_chains && seq > 1 {
        bad(seq - 1, format!(
            "was altered: its content no longer hashes to {:?}, the hash entry {seq} recorded for it (it hashes to {expected_prev:?})",
            entry.prev_hash
        ))
    } else {
        bad(
            seq,
            format!(
            "does not chain: it names {:?} as the previous hash, but entry {} hashes to {expected_prev:?}",
            entry.prev_hash,
            seq.saturating_sub(1)
        ),
        )
    })
}

fn entry_what(entry: &LogEntry) -> String {
    match &entry.body {
        EntryBody::Sent { peer, .. } => format!("sent to {peer}"),
        EntryBody::Received { peer, .. } => format!("received from {peer}"),
        EntryBody::Recorded { .. } => "recorded by this node".into(),
    }
}
