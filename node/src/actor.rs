//! The store actor: one thread owns the engine and all writes. It takes every command that
//! is waiting, applies them as one batch, commits and flushes once, and only then answers:
//! an answer always means "durable". One flush thus serves a whole batch (group commit).
//!
//! After a successful flush it publishes what became durable: each peer's outbox high-water
//! mark (links send only durable entries) and, if peers changed, a new trust snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kp_protocol::{ParticipantCode, SignedDocument, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::engine::{Applied, Command, Engine, Outcome};
use crate::metrics::Metrics;
use crate::store::{SledStore, Storage};

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The batch could not be written or flushed; nothing in it is acknowledged.
    #[error("the store could not write: {0}")]
    Storage(String),
    #[error("the node is shutting down")]
    Stopped,
    #[error("key rotation failed: {0}")]
    Rotation(String),
}

type Reply = oneshot::Sender<Result<Outcome, ActorError>>;

enum Job {
    Command(Box<Command>, Reply),
    /// Rotate keys: between two batches, so that everything signed with the old key is
    /// queued before the statement and everything signed with the new one after it.
    Rotate {
        signing: bool,
        tls: bool,
        reply: oneshot::Sender<Result<SignedDocument, ActorError>>,
    },
    Stop,
}

/// Rotates the node's keys for the actor.
pub trait Rotator: Send + 'static {
    /// Makes new keys and the statement; returns it with the peers to announce it to.
    fn rotate(&mut self, signing: bool, tls: bool) -> Result<(SignedDocument, Vec<ParticipantCode>), String>;
    /// Called once the announcement is durable.
    fn announced(&mut self, statement: &SignedDocument, peers: &[ParticipantCode]);
}

/// Called after each successful flush with what it made durable.
pub trait Publish: Send + 'static {
    fn durable(
        &mut self,
        queued_up_to: &BTreeMap<ParticipantCode, u64>,
        peers_changed: bool,
        store: &SledStore,
    );
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
            Job::Rotate { signing, tls, .. } => write!(f, "Job::Rotate(signing: {signing}, tls: {tls})"),
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

    /// Rotates keys and queues the statement for every active peer; answers once durable.
    pub async fn rotate(&self, signing: bool, tls: bool) -> Result<SignedDocument, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Rotate { signing, tls, reply: tx }).await.map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// The same, from a thread outside the runtime.
    pub fn call_blocking(&self, command: Command) -> Result<Outcome, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.tx.blocking_send(Job::Command(Box::new(command), tx)).map_err(|_| ActorError::Stopped)?;
        rx.blocking_recv().map_err(|_| ActorError::Stopped)?
    }
}

/// The running actor thread.
#[derive(Debug)]
pub struct Actor {
    handle: ActorHandle,
    thread: Option<JoinHandle<()>>,
}

impl Actor {
    /// Starts the actor thread over `store` and `engine`.
    pub fn start(
        store: SledStore,
        engine: Engine,
        clock: Arc<dyn Clock>,
        max_batch: usize,
        metrics: Arc<Metrics>,
        publish: Box<dyn Publish>,
        rotator: Box<dyn Rotator>,
    ) -> std::io::Result<Actor> {
        let (tx, rx) = mpsc::channel(max_batch.max(16) * 4);
        let thread = std::thread::Builder::new().name("kpnode-store".into()).spawn(move || {
            let mut state = State {
                store,
                engine,
                clock,
                metrics,
                publish,
                unpublished: BTreeMap::new(),
                peers_unpublished: false,
            };
            run(rx, &mut state, max_batch, rotator);
        })?;
        Ok(Actor { handle: ActorHandle { tx }, thread: Some(thread) })
    }

    pub fn handle(&self) -> ActorHandle {
        self.handle.clone()
    }

    /// Finishes every command already sent, flushes, and stops the thread.
    pub async fn stop(mut self) {
        let _ = self.handle.tx.send(Job::Stop).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // Dropped without `stop` (a failed start): tell the thread to end, don't wait.
            let _ = self.handle.tx.try_send(Job::Stop);
            drop(t);
        }
    }
}

/// What the actor thread owns.
struct State {
    store: SledStore,
    engine: Engine,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    publish: Box<dyn Publish>,
    /// Outbox marks committed but not yet known durable (a flush failed since).
    unpublished: BTreeMap<ParticipantCode, u64>,
    peers_unpublished: bool,
}

impl State {
    /// Applies `commands`, commits and flushes; the outcomes, or why there are none.
    fn commit(&mut self, commands: Vec<Command>) -> Result<Vec<Outcome>, ActorError> {
        let count = commands.len();
        let now: Timestamp = self.clock.now();
        let applied: Applied = match self.engine.apply(&self.store, now, commands) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "store write failed; the batch is not acknowledged");
                self.metrics.store_failures.inc();
                return Err(ActorError::Storage(e.to_string()));
            }
        };
        for (peer, seq) in &applied.queued_up_to {
            let e = self.unpublished.entry(*peer).or_default();
            *e = (*e).max(*seq);
        }
        self.peers_unpublished |= applied.peers_changed;
        let started = Instant::now();
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "store flush failed; the batch is not acknowledged");
            self.metrics.store_failures.inc();
            return Err(ActorError::Storage(format!("flush failed: {e}")));
        }
        let took = started.elapsed();
        self.metrics.observe_flush(took, count, applied.appended);
        if took > Duration::from_millis(500) {
            tracing::warn!(millis = took.as_millis() as u64, "slow store flush");
        }
        self.publish.durable(&self.unpublished, self.peers_unpublished, &self.store);
        self.unpublished.clear();
        self.peers_unpublished = false;
        Ok(applied.outcomes)
    }
}

fn run(mut rx: mpsc::Receiver<Job>, state: &mut State, max_batch: usize, mut rotator: Box<dyn Rotator>) {
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
        if let Job::Rotate { signing, tls, reply } = first {
            let _ = reply.send(rotate(state, rotator.as_mut(), signing, tls));
            continue;
        }
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                // A rotation ends the batch: it runs between two commits.
                Ok(job @ Job::Rotate { .. }) => {
                    held = Some(job);
                    break;
                }
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut commands = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Command(c, r) => {
                    commands.push(*c);
                    replies.push(r);
                }
                Job::Stop => stopping = true,
                Job::Rotate { .. } => {}
            }
        }
        if commands.is_empty() {
            continue;
        }
        match state.commit(commands) {
            Ok(outcomes) => {
                for (r, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = r.send(Ok(outcome));
                }
            }
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }
    // Refuse whatever arrived after Stop.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        match job {
            Job::Command(_, r) => {
                let _ = r.send(Err(ActorError::Stopped));
            }
            Job::Rotate { reply, .. } => {
                let _ = reply.send(Err(ActorError::Stopped));
            }
            Job::Stop => {}
        }
    }
    if let Err(e) = state.store.flush() {
        tracing::error!(error = %e, "final store flush failed");
    }
}

/// Rotates keys and makes the announcement durable before anything else is committed.
fn rotate(
    state: &mut State,
    rotator: &mut dyn Rotator,
    signing: bool,
    tls: bool,
) -> Result<SignedDocument, ActorError> {
    let (statement, peers) = rotator.rotate(signing, tls).map_err(ActorError::Rotation)?;
    let mut outcomes =
        state.commit(vec![Command::Announce { document: statement.clone(), peers: peers.clone() }])?;
    if let Some(Outcome::Refused(e)) = outcomes.pop() {
        return Err(ActorError::Rotation(e.to_string()));
    }
    rotator.announced(&statement, &peers);
    Ok(statement)
}
