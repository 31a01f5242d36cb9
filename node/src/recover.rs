//! Recovery from partners, the asking side (the partner's side is in [`crate::link`]; the
//! rules without I/O in [`kp_exchange::recover`]; the protocol in docs/protocol.md).
//!
//! After `kpnode restore` from an older backup, `kpnode recover` (`POST
//! /v1/recover/{participant}`) dials a partner, asks it page by page for their own traffic
//! since the restored log head, checks each item and stores it through the store actor:
//! this node's own documents as sent and acknowledged (with the partner's original receipt),
//! the partner's documents as received (checked as on delivery, as of when this node first
//! received them, and receipted anew at their new log position). Items are stored one at a
//! time through the same engine as deliveries, so a repeated recovery adds nothing twice and
//! a crash loses nothing already stored. Finally the certificate counter is raised above the
//! highest number of this node's the partner holds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use kp_exchange::engine::{assigned_parts, Command, EngineError, Outcome, Reply};
use kp_exchange::link::{check_hello, hello, Inbound, Limits};
use kp_exchange::recover::{check_receipt_time, check_received, check_sent, order};
use kp_protocol::frame::{Recovered, MAX_RECOVER_ITEMS, MAX_RECOVER_PAGE_BYTES};
use kp_protocol::{Frame, ParticipantCode, RejectCode, Timestamp};
use serde::Serialize;

use crate::link::{connect, SOFTWARE};
use crate::net::conn::{FrameReader, FrameWriter, LinkError};
use crate::state::Shared;
use crate::store::{get_record, read_log, Storage, StoreError, Tree};

/// The `meta` entry `kpnode restore` writes: the restored log head, the point recovery asks
/// partners to send back what follows.
pub const RECOVERY_BASE: &[u8] = b"recovery_base";

/// Documents this node signed this long before the restored log head are asked for too: a
/// margin for a document signed just before the snapshot and logged after it.
const SINCE_MARGIN_MS: i64 = 3_600_000;
/// Most items kept for a second try (a follow-up whose certificate comes on a later page).
const MAX_DEFERRED: usize = 4096;
/// Most pages asked of one partner in one run (each moves the cursor on; a partner with more
/// is asked again by the next run, which finds what is stored held).
const MAX_PAGES: u64 = 100_000;
/// Most items taken from one partner in one run.
const MAX_ITEMS: u64 = 2_000_000;
/// The longest one run may spend with one partner.
const MAX_RUN: Duration = Duration::from_secs(4 * 3600);
/// Most refusals listed in a report (all are counted and logged).
const MAX_LISTED: usize = 20;

/// Where a restore left the log.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct RecoveryBase {
    /// The restored log's last entry (0: none).
    pub log_seq: u64,
    /// When that entry was recorded.
    pub recorded_at: Timestamp,
}

/// Records the restored log head in a restored store (called by `kpnode restore`).
pub fn record_base<S: Storage + ?Sized>(store: &S) -> Result<RecoveryBase, StoreError> {
    let head: crate::store::LogHead =
        get_record(store, Tree::Meta, crate::store::meta::LOG_HEAD)?.unwrap_or_default();
    let log_seq = head.next_seq.saturating_sub(1);
    let recorded_at = match read_log(store, log_seq)? {
        Some((entry, _)) => entry.recorded_at,
        None => Timestamp::from_unix_millis(0),
    };
    let base = RecoveryBase { log_seq, recorded_at };
    let mut writes = crate::store::Writes::new();
    writes.insert((Tree::Meta, RECOVERY_BASE.to_vec()), Some(kp_protocol::codec::encode(&base)));
    store.commit(&writes)?;
    Ok(base)
}

/// What recovering from one partner did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct RecoverReport {
    pub partner: String,
    /// The restored log head asked from (0: the whole history: this node was not restored).
    pub after_seq: u64,
    /// Pages asked for.
    pub pages: u64,
    /// This node's own documents stored again (sent, with the partner's receipt).
    pub sent_recovered: u64,
    /// The partner's documents stored again (received).
    pub received_recovered: u64,
    /// Items this node already held (a second recovery finds them all here).
    pub already_held: u64,
    /// Items refused (checked and found wrong, or not storable), listed in `refusals`.
    pub refused: u64,
    pub refusals: Vec<String>,
    /// Key rotation statements of this node's the partner holds (not stored: this node's key
    /// history comes with its keys).
    pub rotations_skipped: u64,
    /// The highest number of this node's the partner says it holds (shown only: the counter
    /// is raised from the certificates it returned, checked against this node's own keys).
    pub highest_number: Option<String>,
    /// Whether `highest_number` is that of a certificate returned and checked.
    pub highest_number_verified: bool,
    /// The certificate counter raised, if it was.
    pub number_raised: Option<NumberRaised>,
    /// Whether the node still awaits recovery from other partners (see `kpnode status`):
    /// until then it holds back follow-ups it cannot place and issues no certificate.
    pub recovery_pending: bool,
    /// The highest verified (year, sequence) of this node's numbers among what was returned.
    #[serde(skip)]
    verified: BTreeMap<i32, u64>,
}

/// A certificate counter raised: new numbers of `year` continue above `last`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NumberRaised {
    pub year: i32,
    pub last: u64,
}

/// Why recovery from a partner failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0} is not an active enrolled peer of this node (see `kpnode peer list`)")]
    NotPeer(ParticipantCode),
    #[error("a recovery from {0} is already running; wait for it to finish")]
    Busy(ParticipantCode),
    #[error("recovering from {peer}: {error}")]
    Link { peer: ParticipantCode, error: LinkError },
    #[error("recovering from {peer}: {detail}")]
    Protocol { peer: ParticipantCode, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] crate::actor::ActorError),
}

/// Partners being recovered from now: one run per partner at a time; others run alongside.
static RUNNING: Mutex<BTreeSet<ParticipantCode>> = Mutex::new(BTreeSet::new());

struct Running(ParticipantCode);
impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Ends the recovery-pending state the operator's way (`kpnode recover --finish`).
pub async fn finish(shared: &Arc<Shared>) -> Result<(), RecoverError> {
    shared.actor.call(Command::RecoveryProgress { recovered: None, partners: Vec::new() }).await?;
    tracing::warn!("the operator ended the recovery-pending state; certificates are issued again");
    Ok(())
}

/// Recovers this node's traffic with `peer` (see the module docs). One run per partner at a
/// time, bounded in pages, items and time.
pub async fn recover(shared: &Arc<Shared>, peer: ParticipantCode) -> Result<RecoverReport, RecoverError> {
    if !RUNNING.lock().unwrap_or_else(|p| p.into_inner()).insert(peer) {
        return Err(RecoverError::Busy(peer));
    }
    let _running = Running(peer);
    tokio::select! {
        r = recover_from(shared, peer) => r,
        _ = shared.cancel.cancelled() => Err(RecoverError::Protocol { peer, detail: "the node is shutting down".into() }),
        _ = tokio::time::sleep(MAX_RUN) => Err(RecoverError::Protocol {
            peer,
            detail: format!("stopped after {} hours (the limit of one run); run `kpnode recover` again to go on", MAX_RUN.as_secs() / 3600),
        }),
    }
}

async fn recover_from(shared: &Arc<Shared>, peer: ParticipantCode) -> Result<RecoverReport, RecoverError> {
    let endpoint = shared
        .trust
        .get()
        .active(peer)
        .and_then(|p| p.endpoints.first().cloned())
        .ok_or(RecoverError::NotPeer(peer))?;
    let base = get_record::<RecoveryBase, _>(&shared.store, Tree::Meta, RECOVERY_BASE)?
        .unwrap_or(RecoveryBase { log_seq: 0, recorded_at: Timestamp::from_unix_millis(0) });
    let since =
        Timestamp::from_unix_millis(base.recorded_at.unix_millis().saturating_sub(SINCE_MARGIN_MS).max(0));
    let mut report =
        RecoverReport { partner: peer.to_string(), after_seq: base.log_seq, ..Default::default() };
    let link = |error| RecoverError::Link { peer, error };
    let protocol = |detail: String| RecoverError::Protocol { peer, detail };

    let tls = connect(shared, peer, &endpoint).await.map_err(link)?;
    let tls_key = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| kp_keys::tlscert::public_key(c).ok())
        .ok_or_else(|| protocol("the partner presented no Ed25519 certificate".into()))?;
    let d = &shared.config.delivery;
    let (rd, wr) = tokio::io::split(tls);
    let mut reader = FrameReader::new(rd, d.max_frame_bytes);
    let mut writer = FrameWriter::new(wr, d.max_frame_bytes);
    writer.send(&hello(shared.me, SOFTWARE)).await.map_err(link)?;
    let first = reader.read_frame_within(d.handshake_timeout, "waiting for Hello").await.map_err(link)?;
    check_hello(first, peer).map_err(|e| link(e.into()))?;
    tracing::info!(%peer, after_seq = base.log_seq, %since, "recovering this node's traffic from a partner");

    let mut deferred: Vec<Recovered> = Vec::new();
    let mut seen: HashSet<kp_protocol::MessageId> = HashSet::new();
    let (mut cursor, mut request_id) = (0u64, 0u64);
    let mut last_sent: Instant;
    // Each answer frame may take the partner a while (it reads its log), never longer than this.
    let wait = d.ack_timeout.max(Duration::from_secs(30));
    loop {
        request_id += 1;
        let request = Frame::RecoverRequest {
            request_id,
            after_seq: base.log_seq,
            since,
            cursor,
            max_items: MAX_RECOVER_ITEMS,
        };
        if report.pages >= MAX_PAGES {
            return Err(protocol(format!(
                "stopped after {MAX_PAGES} pages (the limit of one run); run `kpnode recover` again to go on"
            )));
        }
        writer.send(&request).await.map_err(link)?;
        last_sent = Instant::now();
        let pages_before = report.pages;
        report.pages += 1;
        let mut items = Vec::new();
        let mut page_bytes = 0usize;
        let (next, highest) = loop {
            let frame = reader.read_frame_within(wait, "waiting for the partner's recovery page").await;
            match frame.map_err(link)? {
                Some(Frame::RecoverItem { request_id: r, item }) if r == request_id => {
                    if items.len() >= usize::from(MAX_RECOVER_ITEMS) {
                        return Err(protocol(format!("more than {MAX_RECOVER_ITEMS} items in one page")));
                    }
                    page_bytes += kp_protocol::codec::encode(item.as_ref()).len();
                    if page_bytes > MAX_RECOVER_PAGE_BYTES {
                        return Err(protocol(format!("a page of more than {MAX_RECOVER_PAGE_BYTES} bytes")));
                    }
                    if !seen.insert(item.document().message_id()) {
                        return Err(protocol(format!(
                            "message {} sent twice in one recovery",
                            item.document().message_id()
                        )));
                    }
                    if seen.len() as u64 > MAX_ITEMS {
                        return Err(protocol(format!(
                            "more than {MAX_ITEMS} items (the limit of one run); run `kpnode recover` again to go on"
                        )));
                    }
                    items.push(*item);
                }
                Some(Frame::RecoverDone { request_id: r, next, highest_number }) if r == request_id => {
                    break (next, highest_number);
                }
                Some(Frame::Ping { .. } | Frame::Pong { .. }) => {}
                Some(other) => return Err(protocol(format!("unexpected {} frame in a recovery", other.name()))),
                None if pages_before == 0 => {
                    return Err(protocol(
                        "the partner closed the connection before answering the first request (a kpnode that does not know recovery closes it on the request; otherwise see the partner's log: it may not trust this node's key)"
                            .into(),
                    ))
                }
                None => {
                    return Err(protocol(format!(
                        "the partner closed the connection after {pages_before} page(s) (see the partner's log); what was stored is kept, run `kpnode recover` again"
                    )))
                }
            }
        };
        items.sort_by_key(order);
        let stored_before = report.sent_recovered + report.received_recovered;
        for item in items {
            // The partner closes a link idle for three ping intervals: storing a page may take
            // longer than that on a slow disk.
            if last_sent.elapsed() >= d.ping_interval {
                writer.send(&Frame::Ping { nonce: request_id }).await.map_err(link)?;
                last_sent = Instant::now();
            }
            if let Some(again) = store_item(shared, peer, tls_key, item, &mut report).await? {
                if deferred.len() >= MAX_DEFERRED {
                    return Err(protocol(format!(
                        "more than {MAX_DEFERRED} documents wait for their certificate"
                    )));
                }
                deferred.push(again);
            }
        }
        // Deferred items are tried again only when something new was stored (their
        // certificate may be among it), so a partner replaying follow-ups costs no more.
        if !deferred.is_empty() && report.sent_recovered + report.received_recovered > stored_before {
            deferred = retry(shared, peer, tls_key, deferred, &mut report, false).await?;
        }
        if let Some(n) = &highest {
            report.highest_number = Some(n.to_string());
        }
        match next {
            Some(n) if n > cursor => cursor = n,
            Some(n) => {
                return Err(protocol(format!("the partner's next page ({n}) does not move past {cursor}")))
            }
            None => break,
        }
    }
    writer.shutdown().await;
    retry(shared, peer, tls_key, deferred, &mut report, true).await?;
    raise_numbers(shared, &mut report).await?;
    let partners: Vec<ParticipantCode> = shared.trust.get().active_peers().map(|p| p.participant).collect();
    shared.actor.call(Command::RecoveryProgress { recovered: Some(peer), partners }).await?;
    report.recovery_pending = kp_exchange::engine::recovery_pending(&shared.store)?.is_some();
    tracing::info!(
        %peer,
        sent = report.sent_recovered,
        received = report.received_recovered,
        held = report.already_held,
        refused = report.refused,
        highest = ?report.highest_number,
        "recovery from the partner finished"
    );
    Ok(report)
}

/// Stores what was deferred again, in order, until a round stores nothing more; on the
/// `last` round what still cannot be stored is refused.
async fn retry(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    tls_key: [u8; 32],
    mut deferred: Vec<Recovered>,
    report: &mut RecoverReport,
    last: bool,
) -> Result<Vec<Recovered>, RecoverError> {
    loop {
        let before = deferred.len();
        let mut again = Vec::new();
        deferred.sort_by_key(order);
        for item in deferred {
            if let Some(item) = store_item(shared, peer, tls_key, item, report).await? {
                again.push(item);
            }
        }
        if again.is_empty() || again.len() == before {
            if last {
                for item in &again {
                    let d = item.document();
                    refuse(
                        report,
                        format!("{} {}: its certificate is not on this node", d.kind.name(), d.message_id()),
                    );
                }
                return Ok(Vec::new());
            }
            return Ok(again);
        }
        deferred = again;
    }
}

fn refuse(report: &mut RecoverReport, why: String) {
    tracing::warn!(partner = %report.partner, "recovery refused an item: {why}");
    report.refused += 1;
    if report.refusals.len() < MAX_LISTED {
        report.refusals.push(why);
    }
}

/// Checks and stores one item. `Some(item)`: it follows up a certificate not on this node
/// (yet), to try again later.
async fn store_item(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    tls_key: [u8; 32],
    item: Recovered,
    report: &mut RecoverReport,
) -> Result<Option<Recovered>, RecoverError> {
    let own = shared.keys.lock().unwrap_or_else(|p| p.into_inner()).history.clone();
    let trust = shared.trust.get();
    let id = item.document().message_id();
    let kind = item.document().kind.name();
    match item {
        Recovered::Sent { document, receipt } => {
            let Some(peer_trust) = trust.known(peer) else { return Err(RecoverError::NotPeer(peer)) };
            let content = match check_sent(shared.me, peer, &own, &peer_trust.history, &document, &receipt) {
                Ok(c) => c,
                Err(why) => {
                    refuse(report, format!("{kind} {id}: {why}"));
                    return Ok(None);
                }
            };
            let tolerance = shared.config.delivery.clock_tolerance.as_millis() as i64;
            if let Err(why) = check_receipt_time(&document, &receipt, shared.now(), tolerance) {
                refuse(report, format!("{kind} {id}: {why}"));
                return Ok(None);
            }
            match &content {
                kp_exchange::verify::Content::Rotation(_) => {
                    report.rotations_skipped += 1;
                    return Ok(None);
                }
                kp_exchange::verify::Content::Certificate(c) => {
                    // Signed by this node (checked above): its number is one this node gave.
                    if let Some((year, seq)) = assigned_parts(&c.number, shared.me) {
                        let last = report.verified.entry(year).or_default();
                        *last = (*last).max(seq);
                    }
                }
                _ => {}
            }
            let command = Command::RecoveredSent {
                peer,
                document: document.clone(),
                content: Box::new(content),
                receipt: Box::new(receipt.clone()),
            };
            match shared.actor.call(command).await? {
                Outcome::Updated(_) | Outcome::Submitted { .. } => report.sent_recovered += 1,
                Outcome::Done => report.already_held += 1,
                Outcome::Refused(EngineError::NotFound(_)) => {
                    return Ok(Some(Recovered::Sent { document, receipt }));
                }
                Outcome::Refused(e) => refuse(report, format!("{kind} {id}: {e}")),
                other => refuse(report, format!("{kind} {id}: unexpected outcome {other:?}")),
            }
        }
        Recovered::Received { document, receipt } => {
            let at = match check_received(shared.me, peer, &own, &document, &receipt) {
                Ok(at) => at.min(shared.now()),
                Err(why) => {
                    refuse(report, format!("{kind} {id}: {why}"));
                    return Ok(None);
                }
            };
            // Checked as a delivery on a link from the partner, as of when this node first
            // received it (a certificate since expired was valid then).
            let mut link = Inbound::new(shared.me, peer, tls_key);
            let now = shared.now();
            if let Err(why) = link.judge(&trust, now, shared.tls.grace_millis) {
                return Err(RecoverError::Link { peer, error: LinkError::Untrusted(why) });
            }
            let limits = Limits {
                clock_tolerance_ms: shared.config.delivery.clock_tolerance.as_millis() as i64,
                retired_key_grace_ms: shared.config.keys.tls_grace_period.as_millis() as i64,
            };
            let registry = shared.registry.get();
            let checked = link
                .receive(at, limits, registry.on(at.date()), &trust, vec![(id, None, document.clone())])
                .map_err(|why| RecoverError::Link { peer, error: LinkError::Untrusted(why) })?;
            let refusal = match checked.command {
                None => checked.slots.into_iter().flatten().next().map(|(_, r)| r),
                Some(command) => match shared.actor.call(command).await? {
                    Outcome::Delivered(replies) => match replies.into_iter().next() {
                        Some(Reply::Receipt { duplicate: true, .. }) => {
                            report.already_held += 1;
                            None
                        }
                        Some(Reply::Receipt { duplicate: false, .. }) => {
                            report.received_recovered += 1;
                            None
                        }
                        Some(Reply::Reject { refusal, .. }) => Some(refusal),
                        Some(Reply::Held { .. }) => {
                            return Ok(Some(Recovered::Received { document, receipt }));
                        }
                        None => None,
                    },
                    Outcome::Refused(e) => {
                        refuse(report, format!("{kind} {id}: {e}"));
                        None
                    }
                    other => {
                        refuse(report, format!("{kind} {id}: unexpected outcome {other:?}"));
                        None
                    }
                },
            };
            if let Some(r) = refusal {
                if r.code == RejectCode::UnknownCertificate {
                    return Ok(Some(Recovered::Received { document, receipt }));
                }
                refuse(report, format!("{kind} {id}: {} ({})", r.code, r.detail));
            }
        }
    }
    Ok(None)
}

/// Raises the certificate counters to the highest number of this node's among the
/// certificates the partner returned (each verified against this node's own key history): in
/// the store (the engine's counters) and in the issuing service's cache, for every year the
/// cache holds (so a number recovered, union form included, is never drawn again). The
/// partner's `highest_number` alone raises nothing: it is not signed by this node.
async fn raise_numbers(shared: &Arc<Shared>, report: &mut RecoverReport) -> Result<(), RecoverError> {
    let (numbers, verified) = to_raise(report.highest_number.as_deref(), &report.verified, shared.me);
    report.highest_number_verified = verified;
    if let (Some(claim), false) = (&report.highest_number, verified) {
        tracing::warn!(partner = %report.partner, %claim, "the partner claims a number of this node's it returned no certificate for; the counter is not raised to it");
    }
    if !numbers.is_empty() {
        shared.actor.call(Command::RaiseNumbers { numbers: numbers.clone() }).await?;
    }
    if let Some(&(year, last)) = numbers.iter().max_by_key(|(_, s)| *s) {
        report.number_raised = Some(NumberRaised { year, last });
    }
    let mut cache = shared.numbers.lock().unwrap_or_else(|p| p.into_inner());
    for (year, last) in cache.iter_mut() {
        let key = format!("{}{year}", crate::store::meta::NUMBER_PREFIX);
        let stored = get_record::<u64, _>(&shared.store, Tree::Meta, key.as_bytes())?.unwrap_or(0);
        let verified = report.verified.get(year).copied().unwrap_or(0);
        *last = (*last).max(stored).max(verified);
    }
    Ok(())
}

/// The (year, sequence) counters to raise: the highest verified number of each year, never
/// the partner's `claimed` number; and whether the claim is one of the verified numbers.
fn to_raise(
    claimed: Option<&str>,
    verified: &BTreeMap<i32, u64>,
    me: ParticipantCode,
) -> (Vec<(i32, u64)>, bool) {
    let claimed = claimed.and_then(|n| n.parse().ok()).and_then(|n| assigned_parts(&n, me));
    let backed = claimed.is_some_and(|(y, s)| verified.get(&y).is_some_and(|&v| v >= s));
    (verified.iter().map(|(&y, &s)| (y, s)).collect(), backed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partners_bare_claim_raises_no_counter() {
        let me: ParticipantCode = "RU".parse().unwrap();
        let verified = BTreeMap::from([(2026, 7)]);
        // An inflated claim, in either form, raises only to what was verified.
        for claim in ["RU-2026-999999999999999999", "ZZ-RU-2026-999999", "RU-9999-000001"] {
            assert_eq!(to_raise(Some(claim), &verified, me), (vec![(2026, 7)], false), "{claim}");
        }
        assert_eq!(to_raise(Some("RU-2026-000007"), &verified, me), (vec![(2026, 7)], true));
        // Nothing returned and verified: nothing raised, whatever is claimed.
        assert_eq!(to_raise(Some("RU-2026-000009"), &BTreeMap::new(), me), (vec![], false));
    }
}
