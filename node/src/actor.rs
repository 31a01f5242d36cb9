//! The store actor: one thread owns the engine and all writes; a second one makes them
//! durable. The writer takes the commands that are waiting, up to `store.max_batch` (a bulk
//! submission's beyond that are committed in further parts), applies them as one batch and
//! commits it; the flusher takes every batch committed since its last flush, flushes once,
//! and only then answers: an answer always means "durable". While the flusher waits for the
//! disk, the writer already applies the next batch (a pipelined group commit), so one flush
//! serves many batches when the disk is slow, and the disk never waits for the CPU.
//!
//! After each successful flush the flusher publishes what became durable: each peer's outbox
//! high-water mark (links send only durable entries) and, if peers changed, a new trust
//! snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kp_protocol::{CertificateNumber, MessageId, ParticipantCode, SignedDocument, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{SledStore, Storage, StoreError};
use kp_exchange::engine::{Applied, Command, Engine, EngineError, Event, Outcome};

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The batch could not be written or flushed; nothing in it is acknowledged.
    #[error(
        "the store could not write ({0}); nothing in this request is acknowledged. Fix what the error names; `kpnode run` reopens its store by itself once a test write succeeds"
    )]
    Storage(String),
    /// The batch could not be applied for another reason than I/O (a damaged record); the
    /// store is unchanged and keeps serving other requests.
    #[error(
        "the store could not apply this request ({0}); nothing in it is acknowledged. Run `kpnode log verify` on this node to check its store"
    )]
    Damaged(String),
    #[error("the node is shutting down")]
    Stopped,
    /// A signature the batch needed (a receipt) could not be made: the signing key's token
    /// failed. Nothing of the batch is written; it succeeds once the token signs again.
    #[error("{0}")]
    Signing(String),
    #[error("{}", match .0 {
        RotationError::Refused(_) => .0.to_string(),
        other => format!("key rotation failed: {other}"),
    })]
    Rotation(#[from] RotationError),
}

/// Why a key rotation was not done.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The node's own key history refuses the rotation (a bound its partners apply too: at
    /// most 8 taking effect within 24 hours, 128 in all). Nothing changed: the keys in use
    /// stay; the operator must wait, or start a new identity.
    #[error("the key history refuses this rotation ({0}); nothing changed, the keys in use stay")]
    Refused(kp_keys::HistoryError),
    /// The new keys could not be made or written.
    #[error("{0}")]
    Keys(Arc<kp_keys::KeyError>),
    /// The URI a key is to move into cannot be used (it names the other key's object):
    /// refused before anything is made. `field` is the request's field.
    #[error("{detail}")]
    Target { field: &'static str, detail: String },
    /// The new TLS key was made but the TLS stack cannot use it.
    #[error("the new TLS key cannot be used: {0}")]
    Tls(rustls::Error),
    /// The engine refused to record the rotation's announcement.
    #[error("{0}")]
    Announce(EngineError),
}

type Reply = oneshot::Sender<Result<Outcome, ActorError>>;

enum Job {
    Command(Box<Command>, Reply),
    /// Commands sent together (a bulk submission): committed in batches of at most
    /// `store.max_batch` commands, which the flusher's group commit makes durable together.
    Commands(Vec<(Command, Reply)>),
    /// Rotate keys: between two batches, so that everything signed with the old key is
    /// queued before the statement and everything signed with the new one after it.
    Rotate {
        signing: bool,
        tls: bool,
        /// Who rotates: the log entries of the announcement name them.
        officer: crate::store::Officer,
        to: Box<RotateTo>,
        reply: oneshot::Sender<Result<SignedDocument, ActorError>>,
    },
    /// Answered once both threads have reached it: see [`ActorHandle::ping`].
    Ping(oneshot::Sender<()>),
    /// Dump the store into a file: see [`ActorHandle::snapshot`].
    Snapshot(Box<std::fs::File>, oneshot::Sender<Result<Snapshot, ActorError>>),
    Stop,
}

impl Job {
    /// How many commands the job holds, for the bound on a commit.
    fn commands(&self) -> usize {
        match self {
            Job::Command(..) => 1,
            Job::Commands(many) => many.len(),
            Job::Rotate { .. } | Job::Ping(_) | Job::Snapshot(..) | Job::Stop => 0,
        }
    }
}

/// What [`ActorHandle::snapshot`] wrote.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dump: crate::store::dump::Summary,
    /// The log's head when the dump was taken: the seq of its last entry (0 if none) and
    /// that entry's hash.
    pub log_seq: u64,
    pub log_hash: kp_protocol::Digest,
}

/// Where a rotation makes the new keys when not where the current ones are: another key
/// (object) in the token, or another token of the same module (`kpnode keys rotate
/// --signing-key URI / --tls-key URI`).
#[derive(Debug, Clone, Default)]
pub struct RotateTo {
    pub signing_key: Option<kp_keys::pkcs11uri::Pkcs11Uri>,
    pub tls_key: Option<kp_keys::pkcs11uri::Pkcs11Uri>,
}

/// Rotates the node's keys for the actor.
pub trait Rotator: Send + 'static {
    /// Makes new keys and the statement; returns it with the peers to announce it to.
    /// [`RotationError::Refused`] when the key history refuses it (nothing changed), another
    /// [`RotationError`] when making it failed.
    fn rotate(
        &mut self,
        signing: bool,
        tls: bool,
        to: &RotateTo,
    ) -> Result<(SignedDocument, Vec<ParticipantCode>), RotationError>;
    /// Called once the announcement is durable.
    fn announced(&mut self, statement: &SignedDocument, peers: &[ParticipantCode]);
}

/// Called after each successful flush with what it made durable.
pub trait Publish: Send + 'static {
    fn durable(
        &mut self,
        queued_up_to: &BTreeMap<ParticipantCode, u64>,
        peers_changed: bool,
        acknowledged: &[(MessageId, Option<CertificateNumber>)],
        store: &SledStore,
    );
}

/// Whether the store still works. After a write or flush fails (a full disk, an I/O error)
/// sled refuses everything that follows, so the first failure is reported once and the
/// daemon restarts the node's store when the disk accepts writes again.
#[derive(Debug)]
pub struct StoreHealth(tokio::sync::watch::Sender<Option<String>>);

impl Default for StoreHealth {
    fn default() -> StoreHealth {
        StoreHealth(tokio::sync::watch::channel(None).0)
    }
}

impl StoreHealth {
    fn failed(&self, error: &str) {
        self.0.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(error.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolves with the first failure.
    pub async fn wait_failed(&self) -> String {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return "the store stopped".into();
            }
        }
    }
}

/// A handle to send commands to the store actor.
#[derive(Clone, Debug)]
pub struct ActorHandle {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Command(c, _) => write!(f, "Job::Command({c:?})"),
            Job::Commands(c) => write!(f, "Job::Commands({} commands)", c.len()),
            Job::Rotate { signing, tls, .. } => write!(f, "Job::Rotate(signing: {signing}, tls: {tls})"),
            Job::Ping(_) => f.write_str("Job::Ping"),
            Job::Snapshot(..) => f.write_str("Job::Snapshot"),
            Job::Stop => f.write_str("Job::Stop"),
        }
    }
}

impl ActorHandle {
    /// Sends `command` and waits until its effects are durable.
    pub async fn call(&self, command: Command) -> Result<Outcome, ActorError> {
        let rx = self.send(command).await?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// Sends `command`; the receiver yields the outcome once durable. Lets a caller pipeline.
    pub async fn send(
        &self,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Outcome, ActorError>>, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Command(Box::new(command), tx)).await.map_err(|_| ActorError::Stopped)?;
        Ok(rx)
    }

    /// Sends `commands` as one job: the writer applies them together (with whatever else is
    /// waiting), in commits of at most `store.max_batch` commands that the flusher's group
    /// commit makes durable together. One receiver per command, in order, each yielding its
    /// outcome once durable.
    pub async fn send_all(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<oneshot::Receiver<Result<Outcome, ActorError>>>, ActorError> {
        let (jobs, receivers): (Vec<_>, Vec<_>) = commands
            .into_iter()
            .map(|c| {
                let (tx, rx) = oneshot::channel();
                ((c, tx), rx)
            })
            .unzip();
        self.tx.send(Job::Commands(jobs)).await.map_err(|_| ActorError::Stopped)?;
        Ok(receivers)
    }

    /// Rotates keys and queues the statement for every active peer; answers once durable.
    pub async fn rotate(
        &self,
        signing: bool,
        tls: bool,
        to: RotateTo,
        officer: crate::store::Officer,
    ) -> Result<SignedDocument, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Rotate { signing, tls, to: Box::new(to), officer, reply: tx })
            .await
            .map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// Answers once the writer thread has taken every job sent before this one and the
    /// flusher has finished every batch committed before it: both store threads are alive
    /// and moving. A ping that is not answered means a thread is stuck (a disk that never
    /// returns from fsync, a deadlock), which is what the systemd watchdog is told about.
    /// Costs no write and no flush of its own.
    pub async fn ping(&self) -> Result<(), ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Ping(tx)).await.map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)
    }

    /// Writes a [`dump`](crate::store::dump) of the whole store into `file`, on the writer
    /// thread between two batches, so it is consistent: every batch committed before it is in
    /// it, whole, and nothing after. Everything in it is flushed first, so the dump holds
    /// nothing a crash could still take back. Writes wait meanwhile (the dump reads the store
    /// sequentially: see docs/operations.md for what it costs).
    pub async fn snapshot(&self, file: std::fs::File) -> Result<Snapshot, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Snapshot(Box::new(file), tx)).await.map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// The same as `call`, from a thread outside the runtime.
    pub fn call_blocking(&self, command: Command) -> Result<Outcome, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.blocking_send(Job::Command(Box::new(command), tx)).map_err(|_| ActorError::Stopped)?;
        rx.blocking_recv().map_err(|_| ActorError::Stopped)?
    }
}

/// A committed batch waiting for the flush that makes it durable.
struct Ticket {
    replies: Vec<Reply>,
    outcomes: Vec<Outcome>,
    queued_up_to: BTreeMap<ParticipantCode, u64>,
    peers_changed: bool,
    acknowledged: Vec<(MessageId, Option<CertificateNumber>)>,
    appended: u64,
    /// What the engine reports, logged once the batch is durable.
    events: Vec<Event>,
    /// Told once the batch is durable (or not): used by rotation, which must wait.
    done: Option<std::sync::mpsc::Sender<Result<(), ActorError>>>,
    /// Pings to answer when the flusher reaches this ticket (see [`ActorHandle::ping`]).
    pings: Vec<oneshot::Sender<()>>,
}

impl Ticket {
    /// Pings alone, nothing to flush.
    fn pings(pings: Vec<oneshot::Sender<()>>) -> Ticket {
        Ticket {
            replies: Vec::new(),
            outcomes: Vec::new(),
            queued_up_to: BTreeMap::new(),
            peers_changed: false,
            acknowledged: Vec::new(),
            appended: 0,
            events: Vec::new(),
            done: None,
            pings,
        }
    }

    fn has_writes(&self) -> bool {
        !self.replies.is_empty() || self.done.is_some()
    }

    fn answer_pings(&mut self) {
        for p in self.pings.drain(..) {
            let _ = p.send(());
        }
    }
}

/// The running actor threads.
#[derive(Debug)]
pub struct Actor {
    handle: ActorHandle,
    writer: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
}

/// At most this many committed batches wait for the flusher; beyond, the writer waits.
const TICKETS_IN_FLIGHT: usize = 4;

/// What the actor reports to, and asks of, the rest of the node.
pub struct ActorHooks {
    pub metrics: Arc<Metrics>,
    pub publish: Box<dyn Publish>,
    pub rotator: Box<dyn Rotator>,
    pub health: Arc<StoreHealth>,
}

impl std::fmt::Debug for ActorHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHooks").finish_non_exhaustive()
    }
}

impl Actor {
    /// Starts the actor threads over `store` and `engine`.
    pub fn start(
        store: SledStore,
        engine: Engine,
        clock: Arc<dyn Clock>,
        max_batch: usize,
        hooks: ActorHooks,
    ) -> std::io::Result<Actor> {
        let ActorHooks { metrics, publish, rotator, health } = hooks;
        let (tx, rx) = mpsc::channel(max_batch.max(16) * 4);
        let (tickets_tx, tickets_rx) = std::sync::mpsc::sync_channel::<Ticket>(TICKETS_IN_FLIGHT);
        let flusher = {
            let store = store.clone();
            let metrics = metrics.clone();
            let health = health.clone();
            std::thread::Builder::new()
                .name("kpnode-flush".into())
                .spawn(move || flush_loop(tickets_rx, store, metrics, publish, health))?
        };
        let writer = std::thread::Builder::new().name("kpnode-store".into()).spawn(move || {
            let mut writer = Writer { store, engine, clock, metrics, tickets: tickets_tx, health };
            writer.run(rx, max_batch, rotator);
        })?;
        Ok(Actor { handle: ActorHandle { tx }, writer: Some(writer), flusher: Some(flusher) })
    }

    pub fn handle(&self) -> ActorHandle {
        self.handle.clone()
    }

    /// Finishes every command already sent, flushes, and stops the threads.
    pub async fn stop(mut self) {
        let _ = self.handle.tx.send(Job::Stop).await;
        let threads: Vec<JoinHandle<()>> =
            [self.writer.take(), self.flusher.take()].into_iter().flatten().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Dropped without `stop` (a failed start): tell the threads to end, don't wait.
            let _ = self.handle.tx.try_send(Job::Stop);
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: SledStore,
    engine: Engine,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    tickets: std::sync::mpsc::SyncSender<Ticket>,
    health: Arc<StoreHealth>,
}

impl Writer {
    /// Applies and commits `commands`; hands the batch to the flusher. Returns the error that
    /// left the store refusing writes (an I/O failure), if that is how it failed.
    fn commit(
        &mut self,
        commands: Vec<Command>,
        replies: Vec<Reply>,
        done: Option<std::sync::mpsc::Sender<Result<(), ActorError>>>,
        pings: Vec<oneshot::Sender<()>>,
    ) -> Option<ActorError> {
        let now: Timestamp = self.clock.now();
        let applied = kp_exchange::meter::measure(kp_exchange::meter::Part::Store, || {
            self.engine.apply(&self.store, now, commands)
        });
        match applied {
            Ok(Applied { outcomes, queued_up_to, peers_changed, appended, acknowledged, events }) => {
                let ticket = Ticket {
                    replies,
                    outcomes,
                    queued_up_to,
                    peers_changed,
                    acknowledged,
                    appended,
                    events,
                    done,
                    pings,
                };
                if let Err(std::sync::mpsc::SendError(t)) = self.tickets.send(ticket) {
                    fail(t, ActorError::Stopped);
                }
                None
            }
            Err(StoreError::Signing(e)) => {
                tracing::warn!(error = %e, "the signing key could not sign; the batch is not acknowledged");
                let error = ActorError::Signing(e.to_string());
                for r in replies {
                    let _ = r.send(Err(error.clone()));
                }
                if let Some(d) = done {
                    let _ = d.send(Err(error));
                }
                self.send_pings(pings);
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed; the batch is not acknowledged");
                self.metrics.store_failures.inc();
                // Only an I/O failure leaves sled refusing writes: then the node reopens its
                // store. A damaged record fails this batch alone (nothing of it was written).
                let error = if e.is_io() {
                    self.health.failed(&e.to_string());
                    ActorError::Storage(e.to_string())
                } else {
                    ActorError::Damaged(e.to_string())
                };
                for r in replies {
                    let _ = r.send(Err(error.clone()));
                }
                if let Some(d) = done {
                    let _ = d.send(Err(error.clone()));
                }
                // The threads are alive; the failure itself is reported through `health`.
                self.send_pings(pings);
                matches!(error, ActorError::Storage(_)).then_some(error)
            }
        }
    }

    /// Hands pings to the flusher, behind every batch committed before them.
    fn send_pings(&mut self, pings: Vec<oneshot::Sender<()>>) {
        if !pings.is_empty() {
            let _ = self.tickets.send(Ticket::pings(pings));
        }
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Job>, max_batch: usize, mut rotator: Box<dyn Rotator>) {
        let max_batch = max_batch.max(1);
        let mut stopping = false;
        let mut held: Option<Job> = None;
        while !stopping {
            let first = match held.take() {
                Some(job) => job,
                None => match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            if let Job::Rotate { signing, tls, to, officer, reply } = first {
                let _ = reply.send(self.rotate(rotator.as_mut(), signing, tls, &to, officer));
                continue;
            }
            if let Job::Snapshot(file, reply) = first {
                let _ = reply.send(self.snapshot(*file));
                continue;
            }
            let mut gathered = first.commands();
            let mut jobs = vec![first];
            while gathered < max_batch {
                match rx.try_recv() {
                    // A rotation or a snapshot ends the batch: it runs between two commits.
                    Ok(job @ (Job::Rotate { .. } | Job::Snapshot(..))) => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => {
                        gathered += job.commands();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let mut commands = Vec::with_capacity(jobs.len());
            let mut replies = Vec::with_capacity(jobs.len());
            let mut pings = Vec::new();
            for job in jobs {
                match job {
                    Job::Command(c, r) => {
                        commands.push(*c);
                        replies.push(r);
                    }
                    Job::Ping(p) => pings.push(p),
                    Job::Commands(many) => {
                        for (c, r) in many {
                            commands.push(c);
                            replies.push(r);
                        }
                    }
                    Job::Stop => stopping = true,
                    Job::Rotate { .. } | Job::Snapshot(..) => {}
                }
            }
            if !commands.is_empty() {
                // A bulk submission larger than max_batch is committed in parts, each a batch
                // of its own, made durable by the flushes the flusher groups. sled frees what a
                // commit replaced only after the commit ends, so a commit's size bounds the
                // memory it holds: at 2,000 certificates a commit, a node's peak grew by about
                // 30 MB.
                while commands.len() > max_batch {
                    let rest = (commands.split_off(max_batch), replies.split_off(max_batch));
                    if let Some(error) = self.commit(commands, replies, None, Vec::new()) {
                        // The store refuses writes until the node reopens it: the other parts
                        // get the same answer rather than being tried against it.
                        for r in rest.1 {
                            let _ = r.send(Err(error.clone()));
                        }
                        (commands, replies) = (Vec::new(), Vec::new());
                        break;
                    }
                    (commands, replies) = rest;
                }
                if commands.is_empty() {
                    self.send_pings(pings);
                } else {
                    self.commit(commands, replies, None, pings);
                }
            } else {
                self.send_pings(pings);
            }
        }
        // Refuse whatever arrived after Stop; the flusher finishes what was committed.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            match job {
                Job::Command(_, r) => {
                    let _ = r.send(Err(ActorError::Stopped));
                }
                Job::Commands(many) => {
                    for (_, r) in many {
                        let _ = r.send(Err(ActorError::Stopped));
                    }
                }
                Job::Rotate { reply, .. } => {
                    let _ = reply.send(Err(ActorError::Stopped));
                }
                Job::Snapshot(_, reply) => {
                    let _ = reply.send(Err(ActorError::Stopped));
                }
                // Dropped unanswered: the node is stopping.
                Job::Ping(_) | Job::Stop => {}
            }
        }
    }

    /// Flushes, then dumps the store into `file` (see [`ActorHandle::snapshot`]).
    fn snapshot(&mut self, mut file: std::fs::File) -> Result<Snapshot, ActorError> {
        use crate::store::{get_record, meta, LogHead, Tree};
        let storage = |e: crate::store::StoreError| ActorError::Storage(e.to_string());
        self.store.flush().map_err(storage)?;
        let head: LogHead =
            get_record(&self.store, Tree::Meta, meta::LOG_HEAD).map_err(storage)?.unwrap_or_default();
        let started = Instant::now();
        let dump = self.store.dump(&mut file).map_err(storage)?;
        file.sync_all().map_err(|e| ActorError::Storage(format!("the snapshot file: {e}")))?;
        tracing::info!(
            records = dump.records,
            bytes = dump.bytes,
            millis = started.elapsed().as_millis() as u64,
            "store snapshot taken for a backup"
        );
        Ok(Snapshot { dump, log_seq: head.next_seq.saturating_sub(1), log_hash: head.last_hash })
    }

    /// Rotates keys and makes the announcement durable before anything else is committed.
    fn rotate(
        &mut self,
        rotator: &mut dyn Rotator,
        signing: bool,
        tls: bool,
        to: &RotateTo,
        officer: crate::store::Officer,
    ) -> Result<SignedDocument, ActorError> {
        let (statement, peers) = rotator.rotate(signing, tls, to)?;
        let (tx, rx) = oneshot::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.commit(
            vec![Command::Announce {
                document: statement.clone(),
                peers: peers.clone(),
                officer: Some(officer),
            }],
            vec![tx],
            Some(done_tx),
            Vec::new(),
        );
        done_rx.recv().map_err(|_| ActorError::Stopped)??;
        if let Ok(Ok(Outcome::Refused(e))) = rx.blocking_recv() {
            return Err(RotationError::Announce(e).into());
        }
        rotator.announced(&statement, &peers);
        Ok(statement)
    }
}

/// Answers a ticket's callers with `error`; its pings are dropped unanswered (the caller
/// answers them first if the threads are alive).
fn fail(ticket: Ticket, error: ActorError) {
    for r in ticket.replies {
        let _ = r.send(Err(error.clone()));
    }
    if let Some(d) = ticket.done {
        let _ = d.send(Err(error));
    }
}

/// Flushes whatever batches were committed meanwhile, then answers them.
/// Writes an event of the engine to the node's log.
fn log_event(e: &Event) {
    let peer = e.peer();
    if e.is_warning() {
        tracing::warn!(%peer, "{e}");
    } else {
        tracing::info!(%peer, "{e}");
    }
}

fn flush_loop(
    rx: std::sync::mpsc::Receiver<Ticket>,
    store: SledStore,
    metrics: Arc<Metrics>,
    mut publish: Box<dyn Publish>,
    health: Arc<StoreHealth>,
) {
    // Outbox marks committed but not yet known durable (a flush failed since).
    let mut unpublished: BTreeMap<ParticipantCode, u64> = BTreeMap::new();
    let mut peers_unpublished = false;
    while let Ok(first) = rx.recv() {
        let mut tickets = vec![first];
        while let Ok(t) = rx.try_recv() {
            tickets.push(t);
        }
        if !tickets.iter().any(Ticket::has_writes) {
            // Pings alone: the flusher has reached them, nothing to flush.
            tickets.iter_mut().for_each(Ticket::answer_pings);
            continue;
        }
        for t in &tickets {
            for (peer, seq) in &t.queued_up_to {
                let e = unpublished.entry(*peer).or_default();
                *e = (*e).max(*seq);
            }
            peers_unpublished |= t.peers_changed;
        }
        let started = Instant::now();
        if let Err(e) = kp_exchange::meter::measure(kp_exchange::meter::Part::Flush, || store.flush()) {
            tracing::error!(error = %e, "store flush failed; the batch is not acknowledged");
            metrics.store_failures.inc();
            health.failed(&e.to_string());
            let error = ActorError::Storage(format!("flush failed: {e}"));
            for mut t in tickets {
                // The threads are alive; the failure itself is reported through `health`.
                t.answer_pings();
                fail(t, error.clone());
            }
            continue;
        }
        let took = started.elapsed();
        let commands: usize = tickets.iter().map(|t| t.replies.len()).sum();
        let appended: u64 = tickets.iter().map(|t| t.appended).sum();
        metrics.observe_flush(took, commands, appended);
        if took > Duration::from_millis(500) {
            tracing::warn!(millis = took.as_millis() as u64, "slow store flush");
        }
        let acknowledged: Vec<(MessageId, Option<CertificateNumber>)> =
            tickets.iter_mut().flat_map(|t| std::mem::take(&mut t.acknowledged)).collect();
        publish.durable(&unpublished, peers_unpublished, &acknowledged, &store);
        unpublished.clear();
        peers_unpublished = false;
        for mut t in tickets {
            t.answer_pings();
            t.events.iter().for_each(log_event);
            for (r, outcome) in t.replies.into_iter().zip(t.outcomes) {
                let _ = r.send(Ok(outcome));
            }
            if let Some(d) = t.done {
                let _ = d.send(Ok(()));
            }
        }
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final store flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    /// Publishes nothing. With `release`, the first flush says so and blocks in it until
    /// released, as a flusher stuck on the disk would; without, it never blocks.
    struct StuckOnce {
        entered: std::sync::mpsc::Sender<()>,
        release: Option<std::sync::mpsc::Receiver<()>>,
    }

    impl Publish for StuckOnce {
        fn durable(
            &mut self,
            _: &BTreeMap<ParticipantCode, u64>,
            _: bool,
            _: &[(MessageId, Option<CertificateNumber>)],
            _: &SledStore,
        ) {
            if let Some(release) = self.release.take() {
                let _ = self.entered.send(());
                let _ = release.recv();
            }
        }
    }

    struct NoRotation;

    impl Rotator for NoRotation {
        fn rotate(
            &mut self,
            _: bool,
            _: bool,
            _: &RotateTo,
        ) -> Result<(SignedDocument, Vec<ParticipantCode>), RotationError> {
            unreachable!("this test rotates nothing")
        }
        fn announced(&mut self, _: &SignedDocument, _: &[ParticipantCode]) {}
    }

    /// Counts the writer's commits: it reads the clock once per commit.
    #[derive(Debug, Default)]
    struct CountingClock(std::sync::atomic::AtomicU64);

    impl Clock for CountingClock {
        fn now(&self) -> Timestamp {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            SystemClock.now()
        }
    }

    fn start_actor(
        store: SledStore,
        clock: Arc<dyn Clock>,
        max_batch: usize,
        publish: Box<dyn Publish>,
    ) -> Actor {
        let me: ParticipantCode = "RU".parse().unwrap();
        let signer = Arc::new(kp_exchange::signer::Signer::new(
            me,
            kp_keys::SigningKeyPair::generate(),
            Arc::new(SystemClock),
        ));
        let engine = Engine::load(&store, signer).unwrap();
        let hooks = ActorHooks {
            metrics: Arc::new(Metrics::default()),
            publish,
            rotator: Box::new(NoRotation),
            health: Arc::new(StoreHealth::default()),
        };
        Actor::start(store, engine, clock, max_batch, hooks).unwrap()
    }

    /// A bulk submission larger than max_batch is committed in parts of at most max_batch
    /// commands (what bounds the memory a commit holds), and every command still gets its own
    /// answer, in order.
    #[test]
    fn a_bulk_job_is_committed_in_parts_of_at_most_max_batch() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = SledStore::create(&tmp.path().join("store"), 16).unwrap();
        let clock = Arc::new(CountingClock::default());
        let actor = start_actor(
            store,
            clock.clone(),
            4,
            Box::new(StuckOnce { entered: std::sync::mpsc::channel().0, release: None }),
        );
        let handle = actor.handle();
        let codes: Vec<ParticipantCode> = ["AM", "AE", "BY", "IN", "KG", "KZ", "CN", "BW", "ZA", "NA"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        rt.block_on(async {
            let commands =
                codes.iter().map(|&participant| Command::RemovePeer { participant, officer: None }).collect();
            let answers = handle.send_all(commands).await.unwrap();
            let mut refused = Vec::new();
            for answer in answers {
                match answer.await.unwrap() {
                    Ok(Outcome::Refused(EngineError::UnknownPeer(p))) => refused.push(p),
                    other => panic!("an unknown peer is refused by name: {other:?}"),
                }
            }
            assert_eq!(refused, codes, "each command is answered with its own outcome, in order");
            assert_eq!(
                clock.0.load(std::sync::atomic::Ordering::SeqCst),
                3,
                "10 commands at most 4 a commit: 3 commits"
            );
            actor.stop().await;
        });
    }

    /// The watchdog's question: a ping is answered while both threads move, and not while the
    /// flusher is stuck, even though the writer still takes jobs.
    #[test]
    fn a_ping_is_answered_only_while_both_store_threads_move() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = SledStore::create(&tmp.path().join("store"), 16).unwrap();
        let (release, stuck) = std::sync::mpsc::channel();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let publish = Box::new(StuckOnce { entered: entered_tx, release: Some(stuck) });
        let actor = start_actor(store, Arc::new(SystemClock), 16, publish);
        let handle = actor.handle();
        let within = |d: u64| Duration::from_millis(d);
        rt.block_on(async {
            assert!(
                matches!(tokio::time::timeout(within(5000), handle.ping()).await, Ok(Ok(()))),
                "an idle actor answers"
            );
            // A write: its flush reaches the publisher, which blocks.
            let answer = handle
                .send(Command::RemovePeer { participant: "IN".parse().unwrap(), officer: None })
                .await
                .unwrap();
            entered.recv_timeout(within(5000)).expect("the flusher reaches the publisher");
            // The writer is free and takes the ping at once; the flusher is not.
            let ping = tokio::time::timeout(within(500), handle.ping()).await;
            assert!(ping.is_err(), "no answer while the flusher is stuck: {ping:?}");
            release.send(()).unwrap();
            assert!(answer.await.is_ok(), "the write is answered once the flush ends");
            assert!(
                matches!(tokio::time::timeout(within(5000), handle.ping()).await, Ok(Ok(()))),
                "answered again once it moves"
            );
            actor.stop().await;
            assert!(matches!(handle.ping().await, Err(ActorError::Stopped)), "a stopped actor never answers");
        });
    }
}
