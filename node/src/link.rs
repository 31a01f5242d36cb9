//! Peer links. Each node dials every enrolled peer and keeps that link up: its own
//! deliveries go out on it and their receipts come back on it ([`outbound`]). Peers dial it
//! in turn, and it stores and acknowledges what they deliver ([`accept_loop`]). A pair thus
//! has two links, one each way.
//!
//! Every connection is one task (plus a writer task, so that a slow socket never stops the
//! reader and no two peers can deadlock on full buffers). The TLS handshake and the `Hello`
//! run inside it under `handshake_timeout`, so a silent peer cannot stall the accept loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kp_keys::KeyHistory;
use kp_protocol::frame::PROTOCOL_VERSION;
use kp_protocol::receipt::verify_batch;
use kp_protocol::{Frame, MessageId, MessageReceipt, ParticipantCode, RejectCode, SignedDocument};
use rand::Rng;
use tokio::io::ReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actor::ActorError;
use crate::metrics::PeerCounter;
use crate::net::conn::{FrameReader, FrameWriter, LinkError};
use crate::state::Shared;
use crate::store::{decode_record, outbox_range, OutboxEntry, Storage, Tree};
use kp_exchange::engine::{CheckedUnder, Command, EngineError, Outcome, Reply};
use kp_exchange::link::{Backoff, SenderState};
use kp_exchange::verify::{check_batch, CheckContext, Received, Refusal};

/// The software name sent in `Hello`.
pub const SOFTWARE: &str = concat!("kpnode/", env!("CARGO_PKG_VERSION"));
/// Most deliveries checked and stored as one batch.
const MAX_DELIVERY_BATCH: usize = 256;
/// A link up this long counts as healthy: the next failure restarts the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How often an open link's TLS key is judged again when trust has not changed: a replaced
/// key's grace period ends by the clock alone. A change of trust is judged at once.
const REJUDGE_EVERY: Duration = Duration::from_millis(500);

type TlsServer = tokio_rustls::server::TlsStream<TcpStream>;
type TlsClient = tokio_rustls::client::TlsStream<TcpStream>;

/// What a connection's writer task writes.
enum Outgoing {
    Frame(Frame),
    /// Replies to one batch of deliveries: `slots` says, in order, which were refused before
    /// the store saw them and which take the next of the store's replies.
    Replies {
        slots: Vec<Option<(MessageId, Refusal)>>,
        stored: Option<oneshot::Receiver<Result<Outcome, ActorError>>>,
    },
}

/// Most inbound connections one peer may hold at once (a node dials one link; the rest is
/// reconnects overlapping an old connection not yet timed out).
const MAX_CONNECTIONS_PER_PEER: u32 = 8;

/// Connections still in their TLS handshake. When full, the oldest is dropped to admit the
/// newest: a flood of idle or slow connections (slowloris) then costs legitimate peers
/// retries instead of locking every peer out until the flood's handshakes time out. A flood
/// fast enough to refill the whole set within one handshake's time still starves peers (at
/// 1,000 connections/s and 64 slots, a handshake has ~64 ms); that one must be stopped at
/// the network, by source address.
#[derive(Debug)]
struct Pending {
    cap: usize,
    inner: std::sync::Mutex<PendingInner>,
}

#[derive(Debug, Default)]
struct PendingInner {
    next: u64,
    queue: std::collections::VecDeque<(u64, CancellationToken)>,
    evicted: u64,
    last_report: Option<Instant>,
}

impl Pending {
    fn new(cap: usize) -> Pending {
        Pending { cap: cap.max(1), inner: Default::default() }
    }

    /// Admits a new connection; returns its id and the token that is cancelled if it is
    /// evicted, and how many were evicted since the last report (to log, at most every 10 s).
    fn admit(&self) -> (u64, CancellationToken, Option<u64>) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while p.queue.len() >= self.cap {
            if let Some((_, token)) = p.queue.pop_front() {
                token.cancel();
                p.evicted += 1;
            }
        }
        p.next += 1;
        let (id, token) = (p.next, CancellationToken::new());
        p.queue.push_back((id, token.clone()));
        let report = if p.evicted > 0 && p.last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            p.last_report = Some(Instant::now());
            Some(std::mem::take(&mut p.evicted))
        } else {
            None
        };
        (id, token, report)
    }

    /// The connection finished its handshake (or ended): it no longer counts.
    fn done(&self, id: u64) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.queue.retain(|(i, _)| *i != id);
    }
}

/// Accepts peer connections until the node stops.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(shared.config.delivery.max_inbound_connections as usize));
    let pending = Arc::new(Pending::new(shared.config.delivery.max_pending_handshakes as usize));
    let acceptor = match shared.tls.server_config() {
        Ok(c) => tokio_rustls::TlsAcceptor::from(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the TLS server configuration; not accepting peers");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, evict, evicted) = pending.admit();
        if let Some(n) = evicted {
            shared.metrics.handshakes_refused.add(n);
            tracing::warn!(
                evicted = n,
                limit = shared.config.delivery.max_pending_handshakes,
                "dropped unfinished handshakes to admit new connections (a flood of idle or slow connections?)"
            );
        }
        let s = shared.clone();
        let (acceptor, limit, pending) = (acceptor.clone(), limit.clone(), pending.clone());
        let span = tracing::info_span!("inbound", %addr);
        shared.tasks.spawn(
            async move {
                let cancel = s.cancel.clone();
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = inbound(s, acceptor, tcp, &pending, (id, evict), limit) => {}
                }
                pending.done(id);
            }
            .instrument(span),
        );
    }
}

/// One of a peer's inbound connections, counted while it lives.
struct InboundCount<'a> {
    shared: &'a Shared,
    peer: ParticipantCode,
}

impl Drop for InboundCount<'_> {
    fn drop(&mut self) {
        self.shared
            .links
            .update(self.peer, |s| s.inbound_connections = s.inbound_connections.saturating_sub(1));
    }
}

/// One connection from a peer: handshake, then store and acknowledge what it delivers.
async fn inbound(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    pending: &Pending,
    (id, evict): (u64, CancellationToken),
    limit: Arc<Semaphore>,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = shared.config.delivery.handshake_timeout;
    // Only an unfinished handshake can be evicted for a newer connection.
    let accepted = tokio::select! {
        _ = evict.cancelled() => {
            tracing::debug!("handshake dropped for a newer connection");
            return;
        }
        a = tokio::time::timeout(handshake, acceptor.accept(tcp)) => a,
    };
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.handshakes_refused.inc();
            tracing::info!(timeout = ?handshake, "TLS handshake did not finish in time");
            return;
        }
    };
    let key = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| kp_keys::tlscert::public_key(c).ok());
    let Some((peer, key)) = key.and_then(|k| shared.tls.peer_of_key(&k).map(|p| (p, k))) else {
        shared.metrics.handshakes_refused.inc();
        tracing::warn!("refused a connection: the client's key is not a trusted key of an enrolled peer");
        return;
    };
    // Authenticated: no longer a pending handshake, now an enrolled peer's connection.
    pending.done(id);
    let Ok(_permit) = limit.try_acquire_owned() else {
        tracing::warn!(%peer, limit = shared.config.delivery.max_inbound_connections, "refused a connection: too many inbound connections");
        return;
    };
    // Counted and checked in one step; the count goes down however this connection ends.
    let mut admitted = false;
    shared.links.update(peer, |s| {
        if s.inbound_connections < MAX_CONNECTIONS_PER_PEER {
            s.inbound_connections += 1;
            admitted = true;
        }
    });
    if !admitted {
        shared.metrics.handshakes_refused.inc();
        tracing::warn!(%peer, limit = MAX_CONNECTIONS_PER_PEER, "refused a connection: the peer already holds too many");
        return;
    }
    let _counted = InboundCount { shared: &shared, peer };
    let span = tracing::info_span!("peer", peer = %peer, dir = "in");
    let token = shared.links.token(peer);
    shared.metrics.peer_add(PeerCounter::Connections, peer, 1);
    let result = tokio::select! {
        _ = token.cancelled() => Err(if shared.cancel.is_cancelled() {
            LinkError::Refused("the node is shutting down".into())
        } else {
            LinkError::Untrusted(kp_exchange::trust::Distrust::Removed)
        }),
        why = trust_lost(&shared, peer, key) => Err(LinkError::Untrusted(why)),
        r = serve_peer(&shared, peer, key, tls).instrument(span.clone()) => r,
    };
    let _e = span.enter();
    match result {
        Ok(()) => tracing::debug!("peer closed its connection"),
        Err(LinkError::Untrusted(why)) => closed_untrusted(&shared, peer, "in", &why),
        Err(e) => {
            if matches!(e, LinkError::Protocol(_) | LinkError::Frame(_)) {
                shared.metrics.protocol_errors.inc();
                tracing::warn!(error = %e, "closed the connection");
            } else {
                tracing::info!(error = %e, "connection ended");
            }
        }
    }
}

/// Resolves, with the reason, once `key` is no longer a trusted TLS key of `peer`: judged
/// again at every change of trust and every [`REJUDGE_EVERY`]. Raced against a link's work,
/// it closes the link.
async fn trust_lost(shared: &Shared, peer: ParticipantCode, key: [u8; 32]) -> kp_exchange::trust::Distrust {
    let mut generation = shared.trust_generation.subscribe();
    let mut tick = tokio::time::interval(REJUDGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = true;
    loop {
        if let Err(why) = shared.tls.judge_now(peer, &key) {
            return why;
        }
        tokio::select! {
            r = generation.changed(), if changes => changes = r.is_ok(),
            _ = tick.tick() => {}
        }
    }
}

/// Logs and counts a link closed because its key is no longer trusted.
fn closed_untrusted(
    shared: &Shared,
    peer: ParticipantCode,
    dir: &'static str,
    why: &kp_exchange::trust::Distrust,
) {
    shared.metrics.link_closed_untrusted(peer, why.label());
    shared.links.error(peer, shared.now(), format!("{dir}bound link closed: {why}"));
    tracing::warn!(%peer, dir, reason = why.label(), "closed the link: {why}; nothing it sends is taken any more");
}

/// The peer's key history to check a batch with: the current trust's, unless this link's
/// own copy extends it (rotation statements this link delivered that the store has not yet
/// published). A copy that does not extend the current history (a new identity was enrolled,
/// or the stored history changed otherwise) is dropped for the current one.
fn refresh_history(
    shared: &Shared,
    peer: ParticipantCode,
    key: &[u8; 32],
    held: &mut Option<(kp_keys::Fingerprint, KeyHistory)>,
) -> Result<(), LinkError> {
    let trust = shared.trust.get();
    shared.tls.judge(&trust, peer, key).map_err(LinkError::Untrusted)?;
    let current =
        trust.active(peer).ok_or(LinkError::Untrusted(kp_exchange::trust::Distrust::NotEnrolled))?;
    let extends = held.as_ref().is_some_and(|(fp, h)| {
        let (mine, theirs) = (h.rotations(), current.history.rotations());
        *fp == current.fingerprint && mine.len() >= theirs.len() && mine[..theirs.len()] == *theirs
    });
    if !extends {
        *held = Some((current.fingerprint, current.history.clone()));
    }
    Ok(())
}

async fn serve_peer(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    key: [u8; 32],
    tls: TlsServer,
) -> Result<(), LinkError> {
    let max = shared.config.delivery.max_frame_bytes;
    let (rd, wr) = tokio::io::split(tls);
    let mut reader = FrameReader::new(rd, max);
    let hello =
        reader.read_frame_within(shared.config.delivery.handshake_timeout, "waiting for Hello").await?;
    check_hello(hello, peer)?;
    let (tx, rx) = mpsc::channel::<Outgoing>(64);
    // The store's word that a batch was checked under trust withdrawn since closes the link.
    let (refused_tx, mut refused) = oneshot::channel();
    let writer =
        WriterTask::spawn(write_loop(FrameWriter::new(wr, max), rx, peer, shared.clone(), Some(refused_tx)));
    let _ = tx.send(Outgoing::Frame(hello_frame(shared))).await;
    let idle = shared.config.delivery.ping_interval * 3;

    // This link's view of the peer's keys: rotation statements it delivers take effect for
    // the documents after them at once, before the store has made them durable. Every batch
    // is judged against the trust in force when it arrives (see `refresh_history`).
    let mut history = None;
    refresh_history(shared, peer, &key, &mut history)?;
    let reading = async {
        loop {
            let Some(frame) = reader.read_frame_with_id_within(idle, "with the peer idle").await? else {
                return Ok(());
            };
            let mut deliveries = Vec::new();
            let mut queue = vec![frame];
            while let Some((f, actual)) = queue.pop() {
                match f {
                    Frame::Deliver { message_id, document } => {
                        deliveries.push((message_id, actual, document))
                    }
                    Frame::Ping { nonce } => {
                        let _ = tx.send(Outgoing::Frame(Frame::Pong { nonce })).await;
                    }
                    other => {
                        return Err(LinkError::Protocol(format!(
                            "unexpected {} frame on a link where {peer} delivers",
                            other.name()
                        )))
                    }
                }
                if deliveries.len() < MAX_DELIVERY_BATCH {
                    if let Some(next) = reader.buffered_frame_with_id()? {
                        queue.push(next);
                    }
                }
            }
            if deliveries.is_empty() {
                continue;
            }
            // Nothing is checked, stored or acknowledged for a key no longer trusted.
            refresh_history(shared, peer, &key, &mut history)?;
            let Some((_, h)) = history.as_mut() else {
                return Err(LinkError::Untrusted(kp_exchange::trust::Distrust::NotEnrolled));
            };
            let batch = receive(shared, peer, &key, h, deliveries).await?;
            if tx.send(batch).await.is_err() {
                return Err(LinkError::Refused("the writer stopped".into()));
            }
        }
    };
    let result = tokio::select! {
        r = reading => r,
        Ok(why) = &mut refused => Err(LinkError::Untrusted(why)),
    };
    drop(tx);
    writer.finish().await;
    result
}

/// If `doc` is a rotation of `peer` to a TLS key that `trust` binds to another participant,
/// the refusal.
fn tls_key_claimed_elsewhere(
    trust: &kp_exchange::trust::Trust,
    peer: ParticipantCode,
    doc: &kp_protocol::SignedDocument,
) -> Option<Refusal> {
    if doc.kind != kp_protocol::DocumentKind::KeyRotation {
        return None;
    }
    let cert = doc.body::<kp_protocol::KeyRotation>().ok()?.new_tls_certificate?;
    let key = kp_keys::tlscert::public_key(&cert).ok()?;
    trust.tls_key_owner(&key, peer).map(|owner| {
        Refusal::new(
            RejectCode::InvalidDocument,
            format!("the new TLS key is already bound to {owner}; a TLS key belongs to one participant"),
        )
    })
}

/// Checks a batch of deliveries and hands what passed to the store; returns what the writer
/// must answer.
async fn receive(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    tls_key: &[u8; 32],
    history: &mut KeyHistory,
    deliveries: Vec<kp_exchange::verify::Delivery>,
) -> Result<Outgoing, LinkError> {
    let mut accepted: Vec<Received> = Vec::new();
    let mut slots = Vec::with_capacity(deliveries.len());
    // The identity the batch is checked under (before its own rotations apply), for the
    // store to confirm in the transaction that stores the batch.
    let under = CheckedUnder { root_key: history.root().public_key.to_bytes(), tls_key: *tls_key };
    {
        // The registry as it stands now: a suspension takes effect for the next batch.
        let registry = shared.registry.get();
        let now = shared.now();
        let ctx = CheckContext {
            me: shared.me,
            peer,
            now,
            clock_tolerance_ms: shared.config.delivery.clock_tolerance.as_millis() as i64,
            retired_key_grace_ms: shared.config.keys.tls_grace_period.as_millis() as i64,
            registry: registry.on(now.date()),
        };
        // A rotation to a TLS key bound to another participant is refused before it touches
        // this link's copy of the history (the store checks again, atomically).
        let trust = shared.trust.get();
        let mut order: Vec<(MessageId, Option<Refusal>)> = Vec::with_capacity(deliveries.len());
        let mut to_check = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let early = tls_key_claimed_elsewhere(&trust, peer, &d.2);
            order.push((d.0, early.clone()));
            if early.is_none() {
                to_check.push(d);
            }
        }
        let mut checked_in_order = check_batch(&ctx, history, to_check).into_iter();
        for (id, early) in order {
            let checked = match early {
                Some(refusal) => Err(refusal),
                None => checked_in_order
                    .next()
                    .unwrap_or_else(|| Err(Refusal::new(RejectCode::InvalidDocument, "not checked"))),
            };
            match checked {
                Ok(r) => {
                    slots.push(None);
                    accepted.push(r);
                }
                Err(refusal) => {
                    tracing::warn!(message = ?id, code = %refusal.code, detail = %refusal.detail, "refused a delivery");
                    shared.metrics.peer_add(PeerCounter::RejectsSent, peer, 1);
                    slots.push(Some((id, refusal)));
                }
            }
        }
    }
    let stored = if accepted.is_empty() {
        None
    } else {
        Some(
            shared
                .actor
                .send(Command::Deliveries { peer, under: Some(under), items: accepted })
                .await
                .map_err(|e| LinkError::Refused(e.to_string()))?,
        )
    };
    Ok(Outgoing::Replies { slots, stored })
}

/// Writes frames in order; for a batch of deliveries, waits until the store has made them
/// durable before it writes their receipts.
/// The task that writes a link's frames. Dropped with its link, it is aborted: a peer that
/// stops reading must not keep a write pending, and with it the node's store, for ever.
struct WriterTask(tokio::task::JoinHandle<()>);

impl WriterTask {
    fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> WriterTask {
        WriterTask(tokio::spawn(f))
    }

    /// Lets the writer send what it holds (its queue is closed), for a few seconds at most.
    async fn finish(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.0).await;
    }
}

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    peer: ParticipantCode,
    shared: Arc<Shared>,
    mut refused: Option<oneshot::Sender<kp_exchange::trust::Distrust>>,
) {
    let max_items = receipts_per_frame(shared.config.delivery.max_frame_bytes);
    while let Some(item) = rx.recv().await {
        let ok = match item {
            Outgoing::Frame(f) => writer.queue(&f).is_ok(),
            Outgoing::Replies { slots, stored } => {
                let replies = match stored {
                    None => Vec::new(),
                    Some(rx) => match rx.await {
                        Ok(Ok(Outcome::Delivered(r))) => r,
                        Ok(Ok(Outcome::Refused(EngineError::Untrusted { why, .. }))) => {
                            // Not stored (see `CheckedUnder`): no receipt, no reject, and the
                            // link closes with the reason.
                            if let Some(tx) = refused.take() {
                                let _ = tx.send(why);
                            }
                            break;
                        }
                        Ok(Err(e)) => {
                            // Not stored: no receipt. The peer will send them again.
                            tracing::warn!(error = %e, "could not store deliveries; closing the link so they are resent");
                            break;
                        }
                        _ => break,
                    },
                };
                queue_replies(&mut writer, &shared, peer, slots, replies, max_items).is_ok()
            }
        };
        if !ok {
            break;
        }
        // Write once the queue is drained, so one write carries many frames.
        if rx.is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.flush().await;
    writer.shutdown().await;
}

fn receipts_per_frame(max_frame: u32) -> usize {
    // A proof item is at most ~400 bytes with a batch of 256 (8 levels); the batch document
    // itself about 200.
    ((max_frame as usize).saturating_sub(1024) / 400).clamp(1, MAX_DELIVERY_BATCH)
}

fn queue_replies<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    shared: &Shared,
    peer: ParticipantCode,
    slots: Vec<Option<(MessageId, Refusal)>>,
    replies: Vec<Reply>,
    max_items: usize,
) -> Result<(), LinkError> {
    let mut stored = replies.into_iter();
    // Receipts that share a signed batch go out together.
    let mut pending: Option<(SignedDocument, Vec<kp_protocol::ReceiptProof>)> = None;
    let flush_pending =
        |writer: &mut FrameWriter<W>,
         pending: &mut Option<(SignedDocument, Vec<kp_protocol::ReceiptProof>)>| {
            if let Some((batch, proofs)) = pending.take() {
                for chunk in proofs.chunks(max_items) {
                    writer.queue(&Frame::Receipt { batch: batch.clone(), proofs: chunk.to_vec() })?;
                }
            }
            Ok::<(), LinkError>(())
        };
    let (mut received, mut duplicates) = (0u64, 0u64);
    for slot in slots {
        let reply = match slot {
            Some((id, refusal)) => Reply::Reject { message_id: id, refusal },
            None => match stored.next() {
                // Refused by the store: a conflict, or a delivery that failed a check and is
                // no resend of a stored document (see `Received::refused`).
                Some(Reply::Reject { message_id, refusal }) => {
                    tracing::warn!(message = ?message_id, code = %refusal.code, detail = %refusal.detail, "refused a delivery");
                    shared.metrics.peer_add(PeerCounter::RejectsSent, peer, 1);
                    Reply::Reject { message_id, refusal }
                }
                Some(r) => r,
                None => break,
            },
        };
        match reply {
            Reply::Receipt { receipt, duplicate } => {
                let MessageReceipt { batch, proof } = *receipt;
                if duplicate {
                    duplicates += 1;
                } else {
                    received += 1;
                }
                match &mut pending {
                    Some((b, proofs)) if *b == batch => proofs.push(proof),
                    _ => {
                        flush_pending(writer, &mut pending)?;
                        pending = Some((batch, vec![proof]));
                    }
                }
            }
            Reply::Reject { message_id, refusal } => {
                flush_pending(writer, &mut pending)?;
                writer.queue(&Frame::reject(message_id, refusal.code, &refusal.detail))?;
            }
        }
    }
    flush_pending(writer, &mut pending)?;
    shared.metrics.peer_add(PeerCounter::DocumentsReceived, peer, received);
    shared.metrics.peer_add(PeerCounter::DuplicatesReceived, peer, duplicates);
    Ok(())
}

fn hello_frame(shared: &Shared) -> Frame {
    Frame::Hello { version: PROTOCOL_VERSION, participant: shared.me, software: SOFTWARE.into() }
}

fn check_hello(frame: Option<Frame>, peer: ParticipantCode) -> Result<(), LinkError> {
    match frame {
        Some(Frame::Hello { version, participant, .. }) => {
            if version != PROTOCOL_VERSION {
                return Err(LinkError::Refused(format!(
                    "{peer} speaks protocol version {version}; this node speaks {PROTOCOL_VERSION}"
                )));
            }
            if participant != peer {
                return Err(LinkError::Protocol(format!(
                    "Hello says {participant}, but the TLS key belongs to {peer}"
                )));
            }
            Ok(())
        }
        Some(other) => Err(LinkError::Protocol(format!("expected Hello, got {}", other.name()))),
        None => Err(LinkError::Refused("closed before Hello".into())),
    }
}

/// Keeps the link to `peer` up, delivering its outbox, until `token` is cancelled.
pub async fn outbound(shared: Arc<Shared>, peer: ParticipantCode, token: CancellationToken) {
    let d = &shared.config.delivery;
    let mut state =
        SenderState::new(d.max_in_flight as usize, Backoff::new(d.backoff_initial, d.backoff_max));
    let span = tracing::info_span!("peer", peer = %peer, dir = "out");
    async {
        loop {
            let Some(endpoint) = shared.trust.get().active(peer).and_then(|p| p.endpoints.first().cloned())
            else {
                tracing::info!("not an active peer any more; link stopped");
                return;
            };
            let started = Instant::now();
            let mut key = None;
            let result = tokio::select! {
                _ = token.cancelled() => {
                    // Stopped from outside (the peer removed, new endpoints, the node stopping):
                    // a link whose key is no longer trusted is reported like any other.
                    if let (Some(k), false) = (key, shared.cancel.is_cancelled()) {
                        if let Err(why) = shared.tls.judge_now(peer, &k) {
                            closed_untrusted(&shared, peer, "out", &why);
                        }
                    }
                    return;
                }
                r = session(&shared, peer, &endpoint, &mut state, &mut key) => r,
            };
            shared.links.update(peer, |s| {
                s.connected = false;
                s.connected_since = None;
                s.in_flight = 0;
            });
            match result {
                Ok(()) => {}
                Err(LinkError::Untrusted(why)) => closed_untrusted(&shared, peer, "out", &why),
                Err(e) => {
                    tracing::info!(%endpoint, error = %e, "link down");
                    shared.links.error(peer, shared.now(), &e);
                }
            }
            if started.elapsed() >= HEALTHY_AFTER {
                state.healthy();
            }
            let delay = state.disconnected(rand::thread_rng().gen::<f64>());
            tracing::debug!(?delay, "reconnecting after a pause");
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    .instrument(span)
    .await;
    shared.links.update(peer, |s| {
        s.connected = false;
        s.in_flight = 0;
    });
}

/// One connection to `peer`, until it fails.
async fn session(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    endpoint: &str,
    state: &mut SenderState,
    connected_key: &mut Option<[u8; 32]>,
) -> Result<(), LinkError> {
    let d = &shared.config.delivery;
    let tls = connect(shared, peer, endpoint).await?;
    // The key the peer authenticated with, judged again for as long as the link lives.
    let key = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| kp_keys::tlscert::public_key(c).ok())
        .ok_or_else(|| LinkError::Tls("the peer presented no Ed25519 certificate".into()))?;
    *connected_key = Some(key);
    let (rd, wr) = tokio::io::split(tls);
    let mut reader = FrameReader::new(rd, d.max_frame_bytes);
    let (tx, rx) = mpsc::channel::<Outgoing>(1024);
    let writer = WriterTask::spawn(write_loop(
        FrameWriter::new(wr, d.max_frame_bytes),
        rx,
        peer,
        shared.clone(),
        None,
    ));
    let result = tokio::select! {
        why = trust_lost(shared, peer, key) => Err(LinkError::Untrusted(why)),
        r = run_session(shared, peer, state, &mut reader, &tx) => r,
    };
    drop(tx);
    if !matches!(result, Err(LinkError::Untrusted(_))) {
        writer.finish().await;
    }
    // Else dropped: aborted, nothing more goes to a key no longer trusted.
    result
}

async fn connect(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    endpoint: &str,
) -> Result<TlsClient, LinkError> {
    let limit = shared.config.delivery.handshake_timeout;
    let tcp = tokio::time::timeout(limit, TcpStream::connect(endpoint))
        .await
        .map_err(|_| LinkError::Timeout(limit, "connecting"))??;
    let _ = tcp.set_nodelay(true);
    let previous = shared.tls.identity.has_previous() && shared.links.tls_rotation_pending(peer);
    let config = shared.tls.client_config(peer, previous).map_err(|e| LinkError::Tls(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(format!(
        "{}.kpnode.invalid",
        peer.as_str().to_ascii_lowercase()
    ))
    .map_err(|e| LinkError::Tls(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(limit, connector.connect(name, tcp))
        .await
        .map_err(|_| LinkError::Timeout(limit, "in the TLS handshake"))?
        .map_err(|e| LinkError::Tls(e.to_string()))
}

async fn run_session(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    state: &mut SenderState,
    reader: &mut FrameReader<ReadHalf<TlsClient>>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), LinkError> {
    let d = &shared.config.delivery;
    tx.send(Outgoing::Frame(hello_frame(shared)))
        .await
        .map_err(|_| LinkError::Refused("writer stopped".into()))?;
    let hello = reader.read_frame_within(d.handshake_timeout, "waiting for Hello").await?;
    check_hello(hello, peer)?;
    let now = shared.now();
    shared.links.update(peer, |s| {
        s.connected = true;
        s.connected_since = Some(now);
    });
    shared.metrics.peer_add(PeerCounter::Connections, peer, 1);
    tracing::info!("link up");
    state.connected();
    let mut outbox = shared.links.outbox(peer);
    // Receipts and rejects on their way into the store; a failure closes the link.
    let mut commits: JoinSet<Result<(), LinkError>> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    let mut nonce = 0u64;
    fill_window(shared, peer, state, &mut outbox, tx).await?;
    loop {
        tokio::select! {
            frame = reader.read_frame() => {
                let Some(frame) = frame? else {
                    return Err(LinkError::Refused("the peer closed the connection".into()));
                };
                last_heard = Instant::now();
                match frame {
                    Frame::Receipt { batch, proofs } => {
                        if let Some(rx) = receipts(shared, peer, state, batch, proofs).await? {
                            commits.spawn(settle(rx));
                        }
                    }
                    Frame::Reject { message_id, code, detail } => {
                        shared.links.settled(peer, &message_id);
                        if let Some(oseq) = state.settled(&message_id) {
                            let detail: String = detail.chars().filter(|c| !c.is_control()).collect();
                            tracing::warn!(message = ?message_id, %code, %detail, "the peer refused a message for good");
                            shared.metrics.peer_add(PeerCounter::RejectsReceived, peer, 1);
                            let rx = shared.actor.send(Command::Rejected { peer, message_id, oseq, code, detail }).await
                                .map_err(|e| LinkError::Refused(e.to_string()))?;
                            commits.spawn(settle(rx));
                        }
                    }
                    Frame::Pong { .. } => {}
                    other => return Err(LinkError::Protocol(format!("unexpected {} frame from {peer}", other.name()))),
                }
                fill_window(shared, peer, state, &mut outbox, tx).await?;
            }
            r = outbox.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                fill_window(shared, peer, state, &mut outbox, tx).await?;
            }
            Some(r) = commits.join_next(), if !commits.is_empty() => {
                r.map_err(|e| LinkError::Refused(format!("receipt task failed: {e}")))??;
            }
            _ = tick.tick() => {
                let now = shared.now();
                shared.links.update(peer, |s| s.in_flight = state.in_flight());
                if state.overdue(now, d.ack_timeout) {
                    return Err(LinkError::Timeout(d.ack_timeout, "waiting for a receipt"));
                }
                if last_heard.elapsed() > d.ping_interval * 3 {
                    return Err(LinkError::Timeout(d.ping_interval * 3, "with no word from the peer"));
                }
                if state.holding() {
                    // A suspension can end by its date, not only by a registry change.
                    fill_window(shared, peer, state, &mut outbox, tx).await?;
                }
                if last_ping.elapsed() >= d.ping_interval && last_heard.elapsed() >= d.ping_interval {
                    nonce += 1;
                    last_ping = Instant::now();
                    tx.send(Outgoing::Frame(Frame::Ping { nonce })).await.map_err(|_| LinkError::Refused("writer stopped".into()))?;
                }
            }
        }
    }
}

async fn settle(rx: oneshot::Receiver<Result<Outcome, ActorError>>) -> Result<(), LinkError> {
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        // Not stored: reconnecting resends, and the peer answers with the original receipt.
        Ok(Err(e)) => Err(LinkError::Refused(format!("could not store a receipt: {e}"))),
        Err(_) => Err(LinkError::Refused("the store stopped".into())),
    }
}

/// Checks a Receipt frame and hands its receipts to the store.
async fn receipts(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    state: &mut SenderState,
    batch: SignedDocument,
    proofs: Vec<kp_protocol::ReceiptProof>,
) -> Result<Option<oneshot::Receiver<Result<Outcome, ActorError>>>, LinkError> {
    let trust = shared.trust.get();
    let Some(p) = trust.known(peer) else {
        return Err(LinkError::Refused(format!("{peer} is not enrolled")));
    };
    let key = match p.history.signing_key_at(batch.key_id, batch.signed_at) {
        Ok(k) => *k,
        Err(e) => {
            // Most likely the peer rotated its key and the statement is still on its way to
            // us on the other link: not a reason to give up on the messages.
            return Err(LinkError::Refused(format!("receipt signed with a key not (yet) known: {e}")));
        }
    };
    let body = verify_batch(&batch, &key, peer, shared.me)
        .map_err(|e| LinkError::Protocol(format!("invalid receipt: {e}")))?;
    let mut items = Vec::with_capacity(proofs.len());
    for proof in proofs {
        proof.check(&body).map_err(|e| LinkError::Protocol(format!("invalid receipt: {e}")))?;
        let id = proof.item.message_id;
        shared.links.settled(peer, &id);
        // A receipt for a message not in flight on this connection is a duplicate (or for a
        // send of an earlier connection, which this one has sent again and will see
        // acknowledged again): nothing to record.
        let Some(oseq) = state.settled(&id) else { continue };
        items.push((id, oseq, MessageReceipt { batch: batch.clone(), proof }));
    }
    if items.is_empty() {
        return Ok(None);
    }
    let now = shared.now();
    shared.metrics.peer_add(PeerCounter::ReceiptsStored, peer, items.len() as u64);
    shared.links.update(peer, |s| {
        s.last_delivery = Some(now);
        s.in_flight = state.in_flight();
    });
    let rx = shared
        .actor
        .send(Command::Receipts { peer, items })
        .await
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    Ok(Some(rx))
}

/// Sends durable outbox entries while the window has room.
async fn fill_window(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    state: &mut SenderState,
    outbox: &mut tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), LinkError> {
    let durable = *outbox.borrow_and_update();
    let now = shared.now();
    if let Some(why) = shared.registry.get().on(now.date()).held(peer) {
        if state.cursor() < durable && !state.holding() {
            tracing::warn!(%why, "holding the messages queued for this peer until it is reinstated");
        }
        state.hold(true);
        shared.links.update(peer, |s| s.held = Some(why));
        return Ok(());
    }
    if state.holding() {
        state.hold(false);
        tracing::info!("the peer is no longer suspended; sending what was held");
        shared.links.update(peer, |s| s.held = None);
    }
    let mut sent = 0u64;
    while state.room() > 0 && state.cursor() < durable {
        let (start, end) = outbox_range(peer, state.cursor());
        let entries = shared
            .store
            .range(Tree::Outbox, &start, &end, state.room())
            .map_err(|e| LinkError::Refused(e.to_string()))?;
        if entries.is_empty() {
            // Everything up to `durable` was acknowledged meanwhile.
            state.skip(durable);
            break;
        }
        for (key, value) in entries {
            let oseq = key
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if oseq > durable {
                state.skip(durable);
                break;
            }
            let entry = match decode_record::<OutboxEntry>(Tree::Outbox, &key, &value) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "skipping a damaged outbox entry");
                    state.skip(oseq);
                    continue;
                }
            };
            let id = entry.message_id;
            if state.is_in_flight(&id) {
                state.skip(oseq);
                continue;
            }
            let document = Some(entry.document);
            match document {
                Some(document) => {
                    state.sent(id, oseq, now);
                    sent += 1;
                    tx.send(Outgoing::Frame(Frame::Deliver { message_id: id, document }))
                        .await
                        .map_err(|_| LinkError::Refused("writer stopped".into()))?;
                }
                None => state.skip(oseq),
            }
        }
    }
    shared.metrics.peer_add(PeerCounter::DeliveriesSent, peer, sent);
    Ok(())
}

#[cfg(test)]
mod check_hello_tests {
    use super::*;

    fn hello(version: u16, participant: &str) -> Option<Frame> {
        Some(Frame::Hello { version, participant: participant.parse().unwrap(), software: "t".into() })
    }

    #[test]
    fn check_hello_accepts_only_the_tls_key_owner_at_this_version() {
        let ru: ParticipantCode = "RU".parse().unwrap();
        assert!(check_hello(hello(PROTOCOL_VERSION, "RU"), ru).is_ok());
        // Another participant than the TLS key's owner: a protocol error naming both.
        match check_hello(hello(PROTOCOL_VERSION, "KZ"), ru) {
            Err(LinkError::Protocol(m)) => assert_eq!(m, "Hello says KZ, but the TLS key belongs to RU"),
            other => panic!("{other:?}"),
        }
        // Another version: refused, naming both versions.
        match check_hello(hello(PROTOCOL_VERSION + 1, "RU"), ru) {
            Err(LinkError::Refused(m)) => {
                assert!(m.contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{m}");
                assert!(m.contains(&format!("speaks {PROTOCOL_VERSION}")), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // Any other frame first, or nothing.
        match check_hello(Some(Frame::Ping { nonce: 1 }), ru) {
            Err(LinkError::Protocol(m)) => assert!(m.contains("expected Hello"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_hello(None, ru), Err(LinkError::Refused(_))));
    }
}
