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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bincode::{Decode, Encode};
use kp_exchange::engine::{assigned_parts, Command, EngineError, Outcome, Reply};
use kp_exchange::link::{check_hello, hello, Inbound, Limits};
use kp_exchange::recover::{check_received, check_sent, order};
use kp_protocol::frame::{Recovered, MAX_RECOVER_ITEMS};
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
const MAX_DEFERRED: usize = 65_536;
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
    /// The highest number of this node's the partner holds.
    pub highest_number: Option<String>,
    /// The certificate counter raised, if it was.
    pub number_raised: Option<NumberRaised>,
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
    #[error("a recovery is already running; wait for it to finish")]
    Busy,
    #[error("recovering from {peer}: {error}")]
    Link { peer: ParticipantCode, error: LinkError },
    #[error("recovering from {peer}: {detail}")]
    Protocol { peer: ParticipantCode, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] crate::actor::ActorError),
}

static RUNNING: AtomicBool = AtomicBool::new(false);

struct Running;
impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Recovers this node's traffic with `peer` (see the module docs). One recovery at a time.
pub async fn recover(shared: &Arc<Shared>, peer: ParticipantCode) -> Result<RecoverReport, RecoverError> {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(RecoverError::Busy);
    }
    let _running = Running;
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
    let (mut cursor, mut request_id) = (0u64, 0u64);
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
        writer.send(&request).await.map_err(link)?;
        report.pages += 1;
        let mut items = Vec::new();
        let (next, highest) = loop {
            let frame = reader.read_frame_within(wait, "waiting for the partner's recovery page").await;
            match frame.map_err(link)? {
                Some(Frame::RecoverItem { request_id: r, item }) if r == request_id => {
                    if items.len() >= usize::from(MAX_RECOVER_ITEMS) {
                        return Err(protocol(format!("more than {MAX_RECOVER_ITEMS} items in one page")));
                    }
                    items.push(*item);
                }
                Some(Frame::RecoverDone { request_id: r, next, highest_number }) if r == request_id => {
                    break (next, highest_number);
                }
                Some(Frame::Ping { .. } | Frame::Pong { .. }) => {}
                Some(other) => return Err(protocol(format!("unexpected {} frame in a recovery", other.name()))),
                None => {
                    return Err(protocol(
                        "the partner closed the connection (a kpnode that does not know recovery closes it on the request)"
                            .into(),
                    ))
                }
            }
        };
        items.sort_by_key(order);
        for item in items {
            if let Some(again) = store_item(shared, peer, tls_key, item, &mut report).await? {
                if deferred.len() >= MAX_DEFERRED {
                    return Err(protocol(format!(
                        "more than {MAX_DEFERRED} documents wait for their certificate"
                    )));
                }
                deferred.push(again);
            }
        }
        deferred = retry(shared, peer, tls_key, deferred, &mut report, false).await?;
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

/// Raises the certificate counters above the partner's highest number of this node's: in
/// the store (the engine's counters) and in the issuing service's cache.
async fn raise_numbers(shared: &Arc<Shared>, report: &mut RecoverReport) -> Result<(), RecoverError> {
    let Some(parts) = report
        .highest_number
        .as_deref()
        .and_then(|n| n.parse().ok())
        .and_then(|n| assigned_parts(&n, shared.me))
    else {
        return Ok(());
    };
    shared.actor.call(Command::RaiseNumbers { numbers: vec![parts] }).await?;
    let mut numbers = shared.numbers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(last) = numbers.get_mut(&parts.0) {
        *last = (*last).max(parts.1);
    }
    report.number_raised = Some(NumberRaised { year: parts.0, last: parts.1 });
    Ok(())
}
