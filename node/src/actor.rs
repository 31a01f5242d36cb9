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

use kp_protocol::{ParticipantCode, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::engine::{Applied, Command, Engine, Outcome};
use crate::metrics::Metrics;
use crate::store::{SledStore, Storage, StoreError};

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The batch could not be written or flushed; nothing in it is acknowledged.
    #[error("the store could not write: {0}")]
    Storage(String),
    #[error("the node is shutting down")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Outcome, ActorError>>;

enum Job {
    Command(Box<Command>, Reply),
    Stop,
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
    ) -> std::io::Result<Actor> {
        let (tx, rx) = mpsc::channel(max_batch.max(16) * 4);
        let thread = std::thread::Builder::new().name("kpnode-store".into()).spawn(move || {
            run(rx, store, engine, clock, max_batch, metrics, publish);
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

fn run(
    mut rx: mpsc::Receiver<Job>,
    store: SledStore,
    mut engine: Engine,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    mut publish: Box<dyn Publish>,
) {
    let mut stopping = false;
    // Outbox marks committed but not yet known to be durable (a flush failed since).
    let mut unpublished: BTreeMap<ParticipantCode, u64> = BTreeMap::new();
    let mut peers_unpublished = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else { break };
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
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
            }
        }
        if commands.is_empty() {
            continue;
        }
        let now: Timestamp = clock.now();
        let result: Result<Applied, StoreError> = engine.apply(&store, now, commands);
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "store write failed; the batch is not acknowledged");
                metrics.store_failures.inc();
                for r in replies {
                    let _ = r.send(Err(ActorError::Storage(e.to_string())));
                }
                continue;
            }
        };
        for (peer, seq) in &applied.queued_up_to {
            let e = unpublished.entry(*peer).or_default();
            *e = (*e).max(*seq);
        }
        peers_unpublished |= applied.peers_changed;
        let started = Instant::now();
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "store flush failed; the batch is not acknowledged");
            metrics.store_failures.inc();
            for r in replies {
                let _ = r.send(Err(ActorError::Storage(format!("flush failed: {e}"))));
            }
            continue;
        }
        let took = started.elapsed();
        metrics.observe_flush(took, replies.len(), applied.appended);
        if took > Duration::from_millis(500) {
            tracing::warn!(millis = took.as_millis() as u64, "slow store flush");
        }
        publish.durable(&unpublished, peers_unpublished, &store);
        unpublished.clear();
        peers_unpublished = false;
        for (r, outcome) in replies.into_iter().zip(applied.outcomes) {
            let _ = r.send(Ok(outcome));
        }
    }
    // Refuse whatever arrived after Stop.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        if let Job::Command(_, r) = job {
            let _ = r.send(Err(ActorError::Stopped));
        }
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final store flush failed");
    }
}
