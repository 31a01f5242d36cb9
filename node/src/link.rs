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

use kp_exchange::engine::{EngineError, Outcome};
use kp_exchange::link::{check_hello, hello, receipts_per_frame, Backoff, Inbound, Limits, Outbound};
use kp_exchange::refusal::Refusal;
use kp_exchange::trust::Distrust;
use kp_exchange::verify::Delivery;
use kp_protocol::{Frame, MessageId, ParticipantCode};
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

/// The software name sent in `Hello`.
pub const SOFTWARE: &str = concat!("kpnode/", env!("CARGO_PKG_VERSION"));
/// Most deliveries checked and stored as one batch.
const MAX_DELIVERY_BATCH: usize = kp_exchange::link::MAX_DELIVERY_BATCH;
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
            LinkError::Stopping
        } else {
            LinkError::Untrusted(Distrust::Removed)
        }),
        why = trust_lost(&shared, peer, key) => Err(LinkError::Untrusted(why)),
        r = serve_peer(&shared, peer, key, tls).instrument(span.clone()) => r,
    };
    let _e = span.enter();
    match result {
        Ok(()) => tracing::debug!("peer closed its connection"),
        Err(LinkError::Untrusted(why)) => closed_untrusted(&shared, peer, "in", &why),
        Err(e) => {
            if e.is_peer_fault() {
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

async fn serve_peer(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    key: [u8; 32],
    tls: TlsServer,
) -> Result<(), LinkError> {
    let max = shared.config.delivery.max_frame_bytes;
    let (rd, wr) = tokio::io::split(crate::net::metered::Metered(tls));
    let mut reader = FrameReader::new(rd, max);
    let hello_frame =
        reader.read_frame_within(shared.config.delivery.handshake_timeout, "waiting for Hello").await?;
    check_hello(hello_frame, peer)?;
    let (tx, rx) = mpsc::channel::<Outgoing>(64);
    // The store's word that a batch was checked under trust withdrawn since closes the link.
    let (refused_tx, mut refused) = oneshot::channel();
    let writer =
        WriterTask::spawn(write_loop(FrameWriter::new(wr, max), rx, peer, shared.clone(), Some(refused_tx)));
    let _ = tx.send(Outgoing::Frame(hello(shared.me, SOFTWARE))).await;
    let idle = shared.config.delivery.ping_interval * 3;

    // The link's state: its view of the peer's keys, judged against the trust in force
    // before every batch.
    let mut link = Inbound::new(shared.me, peer, key);
    link.judge(&shared.trust.get(), shared.now(), shared.tls.grace_millis).map_err(LinkError::Untrusted)?;
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
                    Frame::RecoverRequest { request_id, after_seq, since, cursor, max_items } => {
                        let request = RecoverRequest { request_id, after_seq, since, cursor, max_items };
                        answer_recover(shared, peer, request, &tx).await?;
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
            let batch = receive(shared, &mut link, deliveries).await?;
            if tx.send(batch).await.is_err() {
                return Err(LinkError::WriterStopped);
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

/// Judges the link against the trust in force (nothing is checked, stored or acknowledged
/// for a key no longer trusted), checks a batch of deliveries and hands what passed to the
/// store; returns what the writer must answer.
async fn receive(
    shared: &Arc<Shared>,
    link: &mut Inbound,
    deliveries: Vec<Delivery>,
) -> Result<Outgoing, LinkError> {
    let trust = shared.trust.get();
    let now = shared.now();
    link.judge(&trust, now, shared.tls.grace_millis).map_err(LinkError::Untrusted)?;
    let limits = Limits {
        clock_tolerance_ms: shared.config.delivery.clock_tolerance.as_millis() as i64,
        retired_key_grace_ms: shared.config.keys.tls_grace_period.as_millis() as i64,
    };
    // The registry as it stands now: a suspension takes effect for the next batch.
    let registry = shared.registry.get();
    let checked = link
        .receive(now, limits, registry.on(now.date()), &trust, deliveries)
        .map_err(LinkError::Untrusted)?;
    let stored = match checked.command {
        None => None,
        Some(command) => Some(shared.actor.send(command).await?),
    };
    Ok(Outgoing::Replies { slots: checked.slots, stored })
}

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

/// Writes frames in order; for a batch of deliveries, waits until the store has made them
/// durable before it writes their receipts.
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
                let answer = Inbound::answer(slots, replies, max_items);
                if !answer.held.is_empty() {
                    // Logged once a batch, not once a resend of each.
                    tracing::info!(
                        held = answer.held.len(),
                        first = ?answer.held[0].0,
                        detail = %answer.held[0].1,
                        "held back follow-ups of certificates this restored node lacks until `kpnode recover` \
                         has run; the peer sends them again"
                    );
                }
                for (id, refusal) in &answer.refused {
                    tracing::warn!(message = ?id, code = %refusal.code, detail = %refusal.detail, "refused a delivery");
                }
                shared.metrics.peer_add(PeerCounter::RejectsSent, peer, answer.refused.len() as u64);
                shared.metrics.peer_add(PeerCounter::DocumentsReceived, peer, answer.received);
                shared.metrics.peer_add(PeerCounter::DuplicatesReceived, peer, answer.duplicates);
                answer.frames.iter().all(|f| writer.queue(f).is_ok())
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

/// Keeps the link to `peer` up, delivering its outbox, until `token` is cancelled.
pub async fn outbound(shared: Arc<Shared>, peer: ParticipantCode, token: CancellationToken) {
    let d = &shared.config.delivery;
    let mut state = Outbound::new(
        shared.me,
        peer,
        d.max_in_flight as usize,
        Backoff::new(d.backoff_initial, d.backoff_max),
    );
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
    state: &mut Outbound,
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
    let (rd, wr) = tokio::io::split(crate::net::metered::Metered(tls));
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

pub(crate) async fn connect(
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
    state: &mut Outbound,
    reader: &mut FrameReader<ReadHalf<crate::net::metered::Metered<TlsClient>>>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), LinkError> {
    let d = &shared.config.delivery;
    tx.send(Outgoing::Frame(hello(shared.me, SOFTWARE))).await.map_err(|_| LinkError::WriterStopped)?;
    let hello_frame = reader.read_frame_within(d.handshake_timeout, "waiting for Hello").await?;
    check_hello(hello_frame, peer)?;
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
                    return Err(LinkError::PeerClosed);
                };
                last_heard = Instant::now();
                if let Some(rx) = settle_frame(shared, peer, state, frame).await? {
                    commits.spawn(settle(rx));
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
                r??;
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
                    tx.send(Outgoing::Frame(Frame::Ping { nonce })).await.map_err(|_| LinkError::WriterStopped)?;
                }
            }
        }
    }
}

/// Waits until the store has recorded receipts or a refusal; a failure closes the link
/// (reconnecting resends, and the peer answers with the original receipt).
async fn settle(rx: oneshot::Receiver<Result<Outcome, ActorError>>) -> Result<(), LinkError> {
    match rx.await {
        // A receipt the store would not record (see `EngineError::ReceiptOutsideHistory`) is
        // logged by the store; closing the link would not help, as a resend gets the same
        // receipt.
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(LinkError::Store(e)),
        Err(_) => Err(LinkError::Store(ActorError::Stopped)),
    }
}

/// A frame from the peer on the link this node dialled: receipts and refusals settle what
/// is in flight and go to the store.
async fn settle_frame(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    state: &mut Outbound,
    frame: Frame,
) -> Result<Option<oneshot::Receiver<Result<Outcome, ActorError>>>, LinkError> {
    let trust = shared.trust.get();
    let history = &trust.known(peer).ok_or(LinkError::Untrusted(Distrust::NotEnrolled))?.history;
    let settled = state.on_frame(frame, history)?;
    for id in &settled.ids {
        shared.links.settled(peer, id);
    }
    if let Some((id, code, detail)) = &settled.rejected {
        tracing::warn!(message = ?id, %code, %detail, "the peer refused a message for good");
        shared.metrics.peer_add(PeerCounter::RejectsReceived, peer, 1);
    }
    if settled.receipts > 0 {
        let now = shared.now();
        shared.metrics.peer_add(PeerCounter::ReceiptsStored, peer, settled.receipts as u64);
        shared.links.update(peer, |s| {
            s.last_delivery = Some(now);
            s.in_flight = state.in_flight();
        });
    }
    match settled.command {
        Some(command) => Ok(Some(shared.actor.send(command).await?)),
        None => Ok(None),
    }
}

/// Sends durable outbox entries while the window has room (see [`Outbound::fill`]).
async fn fill_window(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    state: &mut Outbound,
    outbox: &mut tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), LinkError> {
    let durable = *outbox.borrow_and_update();
    let now = shared.now();
    let held = shared.registry.get().on(now.date()).held(peer);
    let holding = held.is_some();
    let fill =
        state.fill(&shared.store, durable, held.clone(), now).map_err(kp_exchange::link::LinkError::Store)?;
    if let Some(why) = &fill.held {
        tracing::warn!(%why, "holding the messages queued for this peer until it is reinstated");
    }
    if holding {
        shared.links.update(peer, |s| s.held = held);
    } else if fill.released {
        tracing::info!("the peer is no longer suspended; sending what was held");
        shared.links.update(peer, |s| s.held = None);
    }
    for (oseq, e) in &fill.damaged {
        tracing::error!(oseq, error = %e, "skipping a damaged outbox entry");
    }
    shared.metrics.peer_add(PeerCounter::DeliveriesSent, peer, fill.frames.len() as u64);
    for frame in fill.frames {
        tx.send(Outgoing::Frame(frame)).await.map_err(|_| LinkError::WriterStopped)?;
    }
    Ok(())
}

/// A recovery request's fields (see [`Frame::RecoverRequest`]).
struct RecoverRequest {
    request_id: u64,
    after_seq: u64,
    since: kp_protocol::Timestamp,
    cursor: u64,
    max_items: u16,
}

/// The shortest time between two recovery pages answered to one peer.
const RECOVER_PAGE_INTERVAL: Duration = Duration::from_millis(50);

/// Per peer: when its last recovery page was answered (locked while one is answered).
type Pace = Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>;
static RECOVER_PACE: std::sync::Mutex<std::collections::BTreeMap<ParticipantCode, Pace>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Answers an enrolled peer's recovery request on the link it dialled (authenticated by its
/// pinned TLS key, judged against the trust in force like any delivery): one page of that
/// peer's own traffic with this node, read from the log off the async workers, each item a
/// frame, then `RecoverDone`. Requests on one link are answered one at a time, in order.
async fn answer_recover(
    shared: &Arc<Shared>,
    peer: ParticipantCode,
    r: RecoverRequest,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), LinkError> {
    // One page at a time per peer, across its connections, and at most one every
    // RECOVER_PAGE_INTERVAL: a peer's recovery requests cost this node bounded work.
    let slot = {
        let mut all = RECOVER_PACE.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(peer).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))).clone()
    };
    let mut last = slot.lock().await;
    if let Some(at) = *last {
        tokio::time::sleep_until(at + RECOVER_PAGE_INTERVAL).await;
    }
    *last = Some(tokio::time::Instant::now());
    let store = shared.store.clone();
    let page = tokio::task::spawn_blocking(move || {
        kp_exchange::recover::page(&store, peer, r.after_seq, r.since, r.cursor, r.max_items)
    })
    .await?
    .map_err(kp_exchange::link::LinkError::Store)?;
    drop(last);
    // Logged once a run (its first page), not once a page.
    if r.cursor == 0 {
        tracing::info!(items = page.items.len(), next = ?page.next, "this peer asks for its traffic back (recovery)");
    } else {
        tracing::debug!(items = page.items.len(), cursor = r.cursor, next = ?page.next, "answered a recovery page");
    }
    let max = shared.config.delivery.max_frame_bytes as usize;
    for item in page.items {
        let frame = Frame::RecoverItem { request_id: r.request_id, item: Box::new(item) };
        // A document close to the frame limit does not fit with its receipt: skipped (and
        // said), not sent to fail the writer and close the link on every run.
        let size = kp_protocol::codec::encode(&frame).len() + kp_protocol::frame::LENGTH_PREFIX;
        if size > max {
            if let Frame::RecoverItem { item, .. } = &frame {
                tracing::warn!(
                    message = %item.document().message_id(),
                    size,
                    max,
                    "a recovery item is larger than a frame (delivery.max_frame_bytes); not sent"
                );
            }
            continue;
        }
        tx.send(Outgoing::Frame(frame)).await.map_err(|_| LinkError::WriterStopped)?;
    }
    let done =
        Frame::RecoverDone { request_id: r.request_id, next: page.next, highest_number: page.highest_number };
    tx.send(Outgoing::Frame(done)).await.map_err(|_| LinkError::WriterStopped)
}
