//! Deterministic simulation of the exchange, in the manner of FoundationDB's simulation tests
//! and TigerBeetle's VOPR: the real exchange rules ([`Engine`], [`check_batch`],
//! [`SenderState`], signed receipts) on in-memory stores whose crashes lose every write not
//! yet flushed, joined by a network that drops, delays, reorders and duplicates frames and
//! cuts connections, under skewed clocks, with nodes crashing and restarting — every choice
//! drawn from one seeded generator, so a seed replays the same run exactly.
//!
//! After the faults stop and every node is back, the run settles and the invariants are
//! checked: no receipt for anything not durably stored, every certificate a submitter was
//! told is stored delivered exactly once, every confirmation applied exactly once, every
//! stored receipt valid, and every log verifying.
//!
//! Nothing here does I/O: a schedule of a few minutes of simulated time runs in milliseconds.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use kp_keys::{KeyHistory, SigningKeyPair, TlsKeyPair};
use kp_protocol::{
    Certificate, CertificateDraft, ImportConfirmation, MessageId, MessageReceipt, ParticipantCode,
    RejectCode, SignedDocument, Timestamp, ValidationContext,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::ManualClock;
use crate::engine::{Command, Engine, Outcome, Reply};
use crate::registry::Registry;
use crate::sender::{Backoff, SenderState};
use crate::signer::Signer;
use crate::store::{
    decode_record, outbox_range, CertRecord, CertStatus, Direction, EntryBody, MemStorage, OutboxEntry,
    Storage, Tree,
};
use crate::trust::{PeerTrust, Trust};
use crate::verify::{check_batch, CheckContext};

/// 2026-11-18, the simulation's epoch.
const T0: i64 = 1_795_000_000_000;
const TOLERANCE_MS: i64 = 300_000;
/// The default `keys.tls_grace_period`, for documents signed with a just-replaced key.
const GRACE_MS: i64 = 7 * 86_400_000;
const ACK_TIMEOUT_MS: i64 = 2_000;
const TICK_MS: i64 = 100;

/// What one schedule may do.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub certificates: usize,
    /// Simulated milliseconds during which faults happen.
    pub fault_window_ms: i64,
    pub drop: f64,
    pub duplicate: f64,
    pub cut: f64,
    pub crash: f64,
    pub max_delay_ms: i64,
    pub max_skew_ms: i64,
    pub window: usize,
    /// Chance that an importer confirms a certificate it holds, at each step.
    pub confirm: f64,
    /// Chance that a flush fails (a full disk): nothing in the batch is acknowledged.
    pub disk_full: f64,
    /// Deliberate bugs, to show the checks catch them: receipts sent before the flush…
    pub bug_ack_before_flush: bool,
    /// …and a sender that does not resend after a reconnect.
    pub bug_no_resend: bool,
}

impl Config {
    /// A schedule's shape, itself drawn from the seed: some are calm, some are storms.
    pub fn from_seed(rng: &mut StdRng) -> Config {
        Config {
            nodes: rng.gen_range(2..=3),
            certificates: rng.gen_range(1..=12),
            fault_window_ms: rng.gen_range(2_000..20_000),
            drop: [0.0, 0.02, 0.1, 0.3][rng.gen_range(0..4)],
            duplicate: [0.0, 0.05, 0.2][rng.gen_range(0..3)],
            cut: [0.0, 0.01, 0.05][rng.gen_range(0..3)],
            crash: [0.0, 0.002, 0.01, 0.03][rng.gen_range(0..4)],
            max_delay_ms: [1, 20, 500][rng.gen_range(0..3)],
            max_skew_ms: [0, 1_000, 120_000][rng.gen_range(0..3)],
            window: [1, 2, 8][rng.gen_range(0..3)],
            confirm: [0.0, 0.05, 0.2][rng.gen_range(0..3)],
            disk_full: [0.0, 0.0, 0.05][rng.gen_range(0..3)],
            bug_ack_before_flush: false,
            bug_no_resend: false,
        }
    }
}

/// What a schedule did, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub submitted: u64,
    pub accepted: u64,
    pub confirmations: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub frames_duplicated: u64,
    pub cuts: u64,
    pub crashes: u64,
    pub receipts: u64,
    pub failed_flushes: u64,
    pub simulated_ms: i64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.submitted += o.submitted;
        self.accepted += o.accepted;
        self.confirmations += o.confirmations;
        self.frames_sent += o.frames_sent;
        self.frames_dropped += o.frames_dropped;
        self.frames_duplicated += o.frames_duplicated;
        self.cuts += o.cuts;
        self.crashes += o.crashes;
        self.receipts += o.receipts;
        self.failed_flushes += o.failed_flushes;
        self.simulated_ms += o.simulated_ms;
    }
}

/// A frame on the wire.
#[derive(Debug, Clone)]
enum Msg {
    Deliver { id: MessageId, doc: SignedDocument },
    Receipt(Box<MessageReceipt>),
    Reject { id: MessageId, code: RejectCode, detail: String },
}

/// A frame on the connection that `owner` dialled to `peer` (deliveries go owner → peer,
/// their receipts peer → owner).
#[derive(Debug, Clone)]
struct Packet {
    owner: usize,
    peer: usize,
    epoch: u64,
    msg: Msg,
}

#[derive(Debug)]
enum Ev {
    Arrive(Packet),
    Flush(usize),
    Tick(usize),
    Crash(usize),
    Restart(usize),
    Submit { node: usize, to: usize, n: usize },
}

/// What a node does only once its batch is durable.
#[derive(Debug)]
enum Effect {
    Send(Packet),
    Accepted(String, usize),
    Confirmed(String),
    Published(usize, u64),
}

struct Node {
    code: ParticipantCode,
    store: MemStorage,
    engine: Engine,
    signer: Arc<Signer>,
    clock: Arc<ManualClock>,
    skew: i64,
    up: bool,
    senders: Vec<SenderState>,
    /// The connection epoch each sender last saw.
    seen_epoch: Vec<u64>,
    /// Durable outbox high-water mark, per peer.
    published: Vec<u64>,
    effects: Vec<Effect>,
    flush_due: bool,
}

/// One schedule.
pub struct Sim {
    rng: StdRng,
    cfg: Config,
    now: i64,
    seq: u64,
    queue: BinaryHeap<std::cmp::Reverse<(i64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    next_event: usize,
    nodes: Vec<Node>,
    histories: Vec<KeyHistory>,
    /// Epoch of each (owner, peer) connection.
    epochs: BTreeMap<(usize, usize), u64>,
    faults: bool,
    /// Certificates the submitter was told are stored: number → importer.
    accepted: BTreeMap<String, usize>,
    /// Confirmations the importer was told are stored.
    confirmed: BTreeSet<String>,
    stats: Stats,
}

fn codes() -> [ParticipantCode; 3] {
    [
        ParticipantCode::from_static("RU"),
        ParticipantCode::from_static("IN"),
        ParticipantCode::from_static("AE"),
    ]
}

fn certificate(from: ParticipantCode, to: ParticipantCode, number: &str, variant: usize) -> Certificate {
    let json = format!(
        r#"{{"number":"{number}","exporting_participant":"{from}","importing_participant":"{to}","issuing_authority":"Authority of {from}","exporter":{{"name":"Exporter","address":"1 Mine Road"}},"importer":{{"name":"Importer","address":"2 Bourse St"}},"issued_on":"2026-11-18","expires_on":"2026-12-18","parcels":[{{"hs_code":"7102.31","carats":"{}.{:02}","value_usd":"1000.00","origin":"{from}"}}]}}"#,
        100 + variant,
        variant % 100
    );
    let ctx = ValidationContext {
        today: Timestamp::from_unix_millis(T0).date(),
        max_validity_days: Some(60),
        participants: &kp_protocol::AnyParticipant,
        exporter: Some(from),
        importer: None,
    };
    // Invariant: the template is valid for every code and variant used here.
    CertificateDraft::from_json(&json, &ctx)
        .expect("a valid simulated certificate")
        .into_certificate(|| unreachable!())
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = Config::from_seed(&mut rng);
        Sim::with_config(seed, cfg)
    }

    pub fn with_config(seed: u64, cfg: Config) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
        let mut nodes = Vec::new();
        let mut histories = Vec::new();
        for (i, code) in codes().into_iter().take(cfg.nodes).enumerate() {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let key = SigningKeyPair::from_secret_bytes(&secret);
            rng.fill(&mut secret);
            let tls = TlsKeyPair::from_secret_bytes(&secret);
            // Invariant: a fresh Ed25519 key always makes a self-signed certificate.
            let cert = kp_keys::tlscert::self_signed(&tls, code).expect("a TLS certificate");
            let history = KeyHistory::genesis(
                code,
                &key.verifying_key().to_bytes(),
                Timestamp::from_unix_millis(T0 - 86_400_000),
                cert,
            )
            .expect("a key history");
            let skew =
                if cfg.max_skew_ms == 0 { 0 } else { rng.gen_range(-cfg.max_skew_ms..=cfg.max_skew_ms) };
            let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(T0 + skew)));
            let signer = Arc::new(Signer::new(code, key, clock.clone()));
            let store = MemStorage::new();
            let engine = Engine::load(&store, signer.clone()).expect("an empty store loads");
            let n = cfg.nodes;
            nodes.push(Node {
                code,
                store,
                engine,
                signer,
                clock,
                skew,
                up: true,
                senders: (0..n).map(|_| sender(&cfg)).collect(),
                seen_epoch: vec![0; n],
                published: vec![0; n],
                effects: Vec::new(),
                flush_due: false,
            });
            histories.push(history);
            let _ = i;
        }
        let mut sim = Sim {
            rng,
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes,
            histories,
            epochs: BTreeMap::new(),
            faults: true,
            accepted: BTreeMap::new(),
            confirmed: BTreeSet::new(),
            stats: Stats::default(),
        };
        for i in 0..sim.nodes.len() {
            sim.at(TICK_MS, Ev::Tick(i));
        }
        for n in 0..sim.cfg.certificates {
            let node = sim.rng.gen_range(0..sim.nodes.len());
            let mut to = sim.rng.gen_range(0..sim.nodes.len() - 1);
            if to >= node {
                to += 1;
            }
            let when = sim.rng.gen_range(0..sim.cfg.fault_window_ms.max(1));
            sim.at(when, Ev::Submit { node, to, n });
        }
        sim
    }

    fn at(&mut self, delay: i64, ev: Ev) {
        let id = self.next_event;
        self.next_event += 1;
        self.seq += 1;
        self.events.insert(id, ev);
        self.queue.push(std::cmp::Reverse((self.now + delay.max(0), self.seq, id)));
    }

    fn chance(&mut self, p: f64) -> bool {
        self.faults && p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }

    fn epoch(&self, owner: usize, peer: usize) -> u64 {
        self.epochs.get(&(owner, peer)).copied().unwrap_or(0)
    }

    fn cut(&mut self, owner: usize, peer: usize) {
        *self.epochs.entry((owner, peer)).or_default() += 1;
        self.stats.cuts += 1;
    }

    fn send(&mut self, p: Packet) {
        self.stats.frames_sent += 1;
        if self.chance(self.cfg.drop) {
            self.stats.frames_dropped += 1;
            return;
        }
        let copies = if self.chance(self.cfg.duplicate) {
            self.stats.frames_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(0..=self.cfg.max_delay_ms);
            self.at(delay, Ev::Arrive(p.clone()));
        }
    }

    fn schedule_flush(&mut self, i: usize) {
        if !self.nodes[i].flush_due {
            self.nodes[i].flush_due = true;
            let d = self.rng.gen_range(0..5);
            self.at(d, Ev::Flush(i));
        }
    }

    fn set_clocks(&mut self) {
        for n in &self.nodes {
            n.clock.set(Timestamp::from_unix_millis(T0 + self.now + n.skew));
        }
    }

    fn node_now(&self, i: usize) -> Timestamp {
        Timestamp::from_unix_millis(T0 + self.now + self.nodes[i].skew)
    }

    fn apply(&mut self, i: usize, commands: Vec<Command>) -> Result<Vec<Outcome>, String> {
        let now = self.node_now(i);
        let n = &mut self.nodes[i];
        let applied =
            n.engine.apply(&n.store, now, commands).map_err(|e| format!("{}: store: {e}", n.code))?;
        for (peer, oseq) in &applied.queued_up_to {
            if let Some(j) = self.nodes.iter().position(|x| x.code == *peer) {
                self.nodes[i].effects.push(Effect::Published(j, *oseq));
            }
        }
        self.schedule_flush(i);
        // Power cuts are likeliest to matter right after a write: sometimes one follows.
        if self.chance(self.cfg.crash * 5.0) {
            let d = self.rng.gen_range(0..6);
            self.at(d, Ev::Crash(i));
        }
        Ok(applied.outcomes)
    }

    /// Runs the schedule to the end and checks the invariants.
    pub fn run(mut self) -> Result<Stats, String> {
        let limit = self.cfg.fault_window_ms + 600_000;
        while let Some(std::cmp::Reverse((t, _, id))) = self.queue.pop() {
            self.now = t;
            if self.faults && self.now >= self.cfg.fault_window_ms {
                self.heal();
            }
            if self.now > limit {
                return Err(format!("the run did not settle within {limit} ms of simulated time"));
            }
            self.set_clocks();
            let Some(ev) = self.events.remove(&id) else { continue };
            self.step(ev)?;
            if !self.faults && self.settled() {
                break;
            }
        }
        self.stats.simulated_ms = self.now;
        self.check()?;
        Ok(self.stats)
    }

    /// Faults stop; every node comes back.
    fn heal(&mut self) {
        self.faults = false;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
    }

    /// Nothing left to deliver, acknowledge or flush anywhere.
    fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.up && !n.flush_due
                && n.effects.is_empty()
                && n.engine.queued().values().all(|q| *q == 0)
                && n.senders.iter().all(|s| s.in_flight() == 0)
        }) && self
            .queue
            .iter()
            .all(|std::cmp::Reverse((_, _, id))| matches!(self.events.get(id), Some(Ev::Tick(_)) | None))
    }

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Tick(i) => {
                self.at(TICK_MS, Ev::Tick(i));
                if !self.nodes[i].up {
                    return Ok(());
                }
                if self.chance(self.cfg.crash) {
                    self.crash(i);
                    return Ok(());
                }
                for j in 0..self.nodes.len() {
                    if j == i {
                        continue;
                    }
                    if self.chance(self.cfg.cut) {
                        self.cut(i, j);
                    }
                    self.maybe_confirm(i, j)?;
                    let now = self.node_now(i);
                    let timeout = std::time::Duration::from_millis(ACK_TIMEOUT_MS as u64);
                    if self.nodes[i].senders[j].overdue(now, timeout) {
                        // The link gives up on the connection and dials again.
                        self.cut(i, j);
                    }
                    self.fill(i, j);
                }
            }
            Ev::Flush(i) => {
                self.nodes[i].flush_due = false;
                if !self.nodes[i].up {
                    return Ok(());
                }
                if self.chance(self.cfg.disk_full) {
                    self.stats.failed_flushes += 1;
                    self.nodes[i].store.fail_next_flush();
                }
                if self.nodes[i].store.flush().is_err() {
                    // As the store actor does: every caller of the batch is told it failed
                    // (nothing is acknowledged), and the outbox marks wait for a flush that
                    // works; the writes stay committed and the next flush may still make them
                    // durable.
                    let effects = std::mem::take(&mut self.nodes[i].effects);
                    self.nodes[i].effects =
                        effects.into_iter().filter(|e| matches!(e, Effect::Published(..))).collect();
                    self.schedule_flush(i);
                    return Ok(());
                }
                let effects = std::mem::take(&mut self.nodes[i].effects);
                let mut touched = BTreeSet::new();
                for e in effects {
                    match e {
                        Effect::Send(p) => self.send(p),
                        Effect::Accepted(number, to) => {
                            self.accepted.insert(number, to);
                            self.stats.accepted += 1;
                        }
                        Effect::Confirmed(number) => {
                            self.confirmed.insert(number);
                        }
                        Effect::Published(j, oseq) => {
                            let p = &mut self.nodes[i].published[j];
                            *p = (*p).max(oseq);
                            touched.insert(j);
                        }
                    }
                }
                for j in touched {
                    self.fill(i, j);
                }
            }
            Ev::Crash(i) => {
                if self.nodes[i].up && self.faults {
                    self.crash(i);
                }
            }
            Ev::Restart(i) => self.restart(i),
            Ev::Submit { node, to, n } => {
                if !self.nodes[node].up {
                    // The submitter's call fails; it is not told the certificate is stored.
                    return Ok(());
                }
                self.stats.submitted += 1;
                let (from, dest) = (self.nodes[node].code, self.nodes[to].code);
                let number = format!("{from}-SIM-{n:04}");
                let cert = certificate(from, dest, &number, n);
                let document = self.nodes[node].signer.sign(&cert);
                let out = self.apply(
                    node,
                    vec![Command::Submit {
                        document,
                        certificate: Box::new(cert),
                        assigned: None,
                        idempotency: None,
                    }],
                )?;
                match out.first() {
                    Some(Outcome::Submitted { .. }) => {
                        self.nodes[node].effects.push(Effect::Accepted(number, to))
                    }
                    other => return Err(format!("submit {number} was refused: {other:?}")),
                }
            }
            Ev::Arrive(p) => self.arrive(p)?,
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let n = &mut self.nodes[i];
        n.store.crash();
        n.up = false;
        n.effects.clear();
        n.flush_due = false;
        for j in 0..self.nodes.len() {
            if j != i {
                self.cut(i, j);
                self.cut(j, i);
            }
        }
        let d = self.rng.gen_range(10..3_000);
        self.at(d, Ev::Restart(i));
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        let n = &mut self.nodes[i];
        // Invariant: the in-memory store never fails to read what it holds.
        n.engine = Engine::load(&n.store, n.signer.clone()).expect("the engine reloads");
        let high = n.engine.counts().next_oseq;
        n.published = vec![high; n.published.len()];
        for s in &mut n.senders {
            s.connected();
        }
        n.up = true;
    }

    /// Sends what fits in the window from `i`'s durable outbox for `j`.
    fn fill(&mut self, i: usize, j: usize) {
        if !self.nodes[i].up || !self.nodes[j].up {
            return;
        }
        let epoch = self.epoch(i, j);
        if self.nodes[i].seen_epoch[j] != epoch {
            self.nodes[i].seen_epoch[j] = epoch;
            if !self.cfg.bug_no_resend {
                self.nodes[i].senders[j].connected();
            }
        }
        let now = self.node_now(i);
        let peer = self.nodes[j].code;
        let durable = self.nodes[i].published[j];
        let mut out = Vec::new();
        {
            let n = &mut self.nodes[i];
            let state = &mut n.senders[j];
            while state.room() > 0 && state.cursor() < durable {
                let (start, end) = outbox_range(peer, state.cursor());
                let Ok(rows) = n.store.range(Tree::Outbox, &start, &end, state.room()) else { break };
                if rows.is_empty() {
                    state.skip(durable);
                    break;
                }
                for (k, v) in rows {
                    let oseq = u64::from_be_bytes(k[2..10].try_into().unwrap_or([0xff; 8]));
                    if oseq > durable {
                        state.skip(durable);
                        break;
                    }
                    let Ok(e) = decode_record::<OutboxEntry>(Tree::Outbox, &k, &v) else {
                        state.skip(oseq);
                        continue;
                    };
                    if state.is_in_flight(&e.message_id) {
                        state.skip(oseq);
                        continue;
                    }
                    state.sent(e.message_id, oseq, now);
                    out.push(Msg::Deliver { id: e.message_id, doc: e.document });
                }
            }
        }
        for msg in out {
            self.send(Packet { owner: i, peer: j, epoch, msg });
        }
    }

    fn arrive(&mut self, p: Packet) -> Result<(), String> {
        let live = self.nodes[p.owner].up && self.nodes[p.peer].up && p.epoch == self.epoch(p.owner, p.peer);
        if !live {
            return Ok(()); // The connection it travelled on is gone.
        }
        match p.msg {
            Msg::Deliver { id, doc } => {
                let (to, from) = (p.peer, p.owner);
                let registry = Registry::default();
                let now = self.node_now(to);
                let ctx = CheckContext {
                    me: self.nodes[to].code,
                    peer: self.nodes[from].code,
                    now,
                    clock_tolerance_ms: TOLERANCE_MS,
                    retired_key_grace_ms: GRACE_MS,
                    registry: registry.on(now.date()),
                };
                let mut history = self.histories[from].clone();
                let checked = check_batch(&ctx, &mut history, vec![(id, None, doc)]);
                let mut replies = Vec::new();
                let mut accepted = Vec::new();
                for r in checked {
                    match r {
                        Ok(item) => accepted.push(item),
                        Err(refusal) => {
                            replies.push(Msg::Reject { id, code: refusal.code, detail: refusal.detail })
                        }
                    }
                }
                if !accepted.is_empty() {
                    let out = self.apply(
                        to,
                        vec![Command::Deliveries { peer: self.nodes[from].code, items: accepted }],
                    )?;
                    if let Some(Outcome::Delivered(rs)) = out.into_iter().next() {
                        for r in rs {
                            replies.push(match r {
                                Reply::Receipt { receipt, .. } => Msg::Receipt(receipt),
                                Reply::Reject { message_id, refusal } => {
                                    Msg::Reject { id: message_id, code: refusal.code, detail: refusal.detail }
                                }
                            });
                        }
                    }
                }
                for msg in replies {
                    // Receipts go back only once the batch is durable.
                    let reply = Packet { owner: p.owner, peer: p.peer, epoch: p.epoch, msg };
                    if self.cfg.bug_ack_before_flush {
                        self.send(reply);
                    } else {
                        self.nodes[to].effects.push(Effect::Send(reply));
                    }
                }
                self.schedule_flush(to);
            }
            Msg::Receipt(receipt) => {
                let (me, peer) = (p.owner, p.peer);
                let id = receipt.proof.item.message_id;
                let key = self.histories[peer]
                    .signing_key_at(receipt.batch.key_id, receipt.batch.signed_at)
                    .map_err(|e| {
                        format!("a receipt from {} names an unknown key: {e}", self.nodes[peer].code)
                    })?;
                receipt
                    .verify(id, key, self.nodes[peer].code, self.nodes[me].code)
                    .map_err(|e| format!("an invalid receipt from {}: {e}", self.nodes[peer].code))?;
                let Some(oseq) = self.nodes[me].senders[peer].settled(&id) else { return Ok(()) };
                self.stats.receipts += 1;
                let code = self.nodes[peer].code;
                self.apply(me, vec![Command::Receipts { peer: code, items: vec![(id, oseq, *receipt)] }])?;
                self.fill(me, peer);
            }
            Msg::Reject { id, code, detail } => {
                let (me, peer) = (p.owner, p.peer);
                return Err(format!(
                    "{} refused message {id:?} from {}: {code}: {detail}",
                    self.nodes[peer].code, self.nodes[me].code
                ));
            }
        }
        Ok(())
    }

    /// Sometimes the importer `i` confirms one certificate it received from `j`.
    fn maybe_confirm(&mut self, i: usize, j: usize) -> Result<(), String> {
        if !self.faults || !self.rng.gen_bool(self.cfg.confirm) {
            return Ok(());
        }
        let peer = self.nodes[j].code;
        let rows = self.nodes[i]
            .store
            .range(Tree::Certs, &[], &[0xff; 40], usize::MAX)
            .map_err(|e| e.to_string())?;
        let candidates: Vec<CertRecord> = rows
            .iter()
            .filter_map(|(k, v)| decode_record::<CertRecord>(Tree::Certs, k, v).ok())
            .filter(|r| r.direction == Direction::In && r.peer == peer && r.status == CertStatus::Received)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let rec = candidates[self.rng.gen_range(0..candidates.len())].clone();
        let n = &self.nodes[i];
        let doc = crate::engine::document_of(|t, k| n.store.get(t, k), &rec)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: the signed certificate {} is missing", n.code, rec.number))?;
        let cert: Certificate = doc.body().map_err(|e| e.to_string())?;
        let confirmation = ImportConfirmation {
            certificate: rec.number.clone(),
            certificate_id: rec.message_id,
            exporting_participant: cert.content.exporting_participant,
            importing_participant: n.code,
            exporter: cert.content.exporter.clone(),
            importer: cert.content.importer.clone(),
            received_on: rec.issued_on,
            parcels: rec.parcels,
            carats: cert.content.parcels[0].carats,
            confirming_authority: "Customs".parse().map_err(|e: kp_protocol::ValueError| e.to_string())?,
            remarks: None,
        };
        let document = n.signer.sign(&confirmation);
        self.stats.confirmations += 1;
        let out = self.apply(i, vec![Command::Confirm { document, confirmation: Box::new(confirmation) }])?;
        match out.first() {
            Some(Outcome::Updated(_)) => {
                self.nodes[i].effects.push(Effect::Confirmed(rec.number.to_string()))
            }
            other => return Err(format!("confirming {} was refused: {other:?}", rec.number)),
        }
        Ok(())
    }

    /// The invariants, on the durable state of every node.
    fn check(&self) -> Result<(), String> {
        let trust_of = |me: usize| {
            Trust::new(self.nodes.iter().enumerate().filter(|(j, _)| *j != me).map(|(j, n)| {
                PeerTrust::of_history(
                    format!("Authority of {}", n.code),
                    self.histories[j].clone(),
                    Timestamp::from_unix_millis(T0),
                )
            }))
        };
        let mut logs: Vec<Vec<crate::store::LogEntry>> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            // Only what is durable counts: throw away anything committed but not flushed.
            n.store.crash();
            crate::audit::verify_log(&n.store, n.code, &self.histories[i], &trust_of(i), |_| {})
                .map_err(|e| format!("{}'s log does not verify: {e}", n.code))?;
            let rows = n.store.range(Tree::Log, &[], &[0xff; 9], usize::MAX).map_err(|e| e.to_string())?;
            logs.push(
                rows.iter()
                    .map(|(k, v)| crate::store::decode_log(k, v).map(|x| x.0))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?,
            );
        }
        let index = |code: ParticipantCode| self.nodes.iter().position(|n| n.code == code);
        // Every receipt a sender holds points at an entry the receiver durably holds.
        for (i, log) in logs.iter().enumerate() {
            for e in log {
                if let EntryBody::Sent { peer, document, receipt } = &e.body {
                    let j = index(*peer).ok_or("a receipt from an unknown peer")?;
                    let item = receipt.proof.item;
                    let held = logs[j].iter().find(|x| x.seq == item.log_seq);
                    let ok = held.is_some_and(|x| {
                        x.document().message_id() == document.message_id() && x.hash() == item.entry_hash
                    });
                    if !ok {
                        return Err(format!(
                            "{} holds a receipt from {peer} for entry {} of its log, which {peer} does not durably hold",
                            self.nodes[i].code, item.log_seq
                        ));
                    }
                }
            }
        }
        // Every accepted certificate: once in the importer's log and records, once sent.
        for (number, to) in &self.accepted {
            let received = logs[*to]
                .iter()
                .filter(|e| matches!(&e.body, EntryBody::Received { document, .. } if document.body::<Certificate>().is_ok_and(|c| c.number.as_str() == number)))
                .count();
            if received != 1 {
                return Err(format!("{number} is in the importer's log {received} times, not once"));
            }
            let from =
                index(number[..2].parse().map_err(|_| "a bad number")?).ok_or("an unknown exporter")?;
            let sent = logs[from]
                .iter()
                .filter(|e| matches!(&e.body, EntryBody::Sent { document, .. } if document.body::<Certificate>().is_ok_and(|c| c.number.as_str() == number)))
                .count();
            if sent != 1 {
                return Err(format!("{number} is in the exporter's log as sent {sent} times, not once"));
            }
            let rec = crate::store::get_record::<CertRecord, _>(
                &self.nodes[*to].store,
                Tree::Certs,
                number.as_bytes(),
            )
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{number} has no record at its importer"))?;
            if rec.direction != Direction::In {
                return Err(format!("{number}'s record at its importer is not inbound"));
            }
        }
        // Nothing is held that no submitter was told about, beyond what a crash interrupted.
        for (i, n) in self.nodes.iter().enumerate() {
            let queued: u64 = n.engine.queued().values().sum();
            let outbox =
                n.store.range(Tree::Outbox, &[], &[0xff; 11], usize::MAX).map_err(|e| e.to_string())?;
            if !outbox.is_empty() {
                return Err(format!(
                    "{} still has {} message(s) queued ({queued} counted) after settling",
                    self.nodes[i].code,
                    outbox.len()
                ));
            }
        }
        // Every accepted confirmation reached the exporter, once.
        for number in &self.confirmed {
            let from =
                index(number[..2].parse().map_err(|_| "a bad number")?).ok_or("an unknown exporter")?;
            let rec = crate::store::get_record::<CertRecord, _>(
                &self.nodes[from].store,
                Tree::Certs,
                number.as_bytes(),
            )
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{number} has no record at its exporter"))?;
            if rec.confirmation.is_none() {
                return Err(format!("the confirmation of {number} never reached its exporter"));
            }
            let times = logs[from]
                .iter()
                .filter(|e| matches!(&e.body, EntryBody::Received { document, .. } if document.body::<ImportConfirmation>().is_ok_and(|c| c.certificate.as_str() == number)))
                .count();
            if times != 1 {
                return Err(format!("the confirmation of {number} is in the exporter's log {times} times"));
            }
        }
        Ok(())
    }
}

fn sender(cfg: &Config) -> SenderState {
    let b = Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_millis(100));
    SenderState::new(cfg.window, b)
}

/// Runs `count` schedules from `first_seed`; the first failure names its seed.
pub fn run_many(first_seed: u64, count: u64) -> Result<(u64, Stats), (u64, String)> {
    let mut total = Stats::default();
    for seed in first_seed..first_seed + count {
        match Sim::new(seed).run() {
            Ok(s) => total += s,
            Err(e) => return Err((seed, e)),
        }
    }
    Ok((count, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schedules per run: `KPNODE_SIM_SCHEDULES` (default 2000); one seed: `KPNODE_SIM_SEED`.
    #[test]
    fn thousands_of_fault_schedules_keep_every_promise() {
        let (first, count) = match std::env::var("KPNODE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
            Some(seed) => (seed, 1),
            None => {
                (1, std::env::var("KPNODE_SIM_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000))
            }
        };
        let started = std::time::Instant::now();
        match run_many(first, count) {
            Ok((n, s)) => eprintln!(
                "simulation: {n} schedules in {:.1} s: {} certificates submitted, {} stored, {} confirmations, {} frames ({} dropped, {} duplicated), {} connection cuts, {} crashes, {} failed flushes, {} receipts, {:.0} simulated minutes",
                started.elapsed().as_secs_f64(),
                s.submitted,
                s.accepted,
                s.confirmations,
                s.frames_sent,
                s.frames_dropped,
                s.frames_duplicated,
                s.cuts,
                s.crashes,
                s.failed_flushes,
                s.receipts,
                s.simulated_ms as f64 / 60_000.0
            ),
            Err((seed, e)) => panic!(
                "simulation seed {seed} broke a promise: {e}\nreplay it with: KPNODE_SIM_SEED={seed} cargo test -p kp-node --lib sim::"
            ),
        }
    }

    /// The checks have teeth: each deliberate bug is caught within a few hundred schedules.
    #[test]
    fn the_checks_catch_a_node_that_acknowledges_early_or_forgets_to_resend() {
        let find = |bug: &dyn Fn(&mut Config)| {
            (1..500u64).find_map(|seed| {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut cfg = Config::from_seed(&mut rng);
                cfg.crash = cfg.crash.max(0.01);
                cfg.drop = cfg.drop.max(0.05);
                bug(&mut cfg);
                Sim::with_config(seed, cfg).run().err()
            })
        };
        let early =
            find(&|c| c.bug_ack_before_flush = true).expect("acknowledging before the flush is caught");
        assert!(early.contains("does not durably hold") || early.contains("not once"), "{early}");
        let stuck = find(&|c| c.bug_no_resend = true).expect("a sender that never resends is caught");
        assert!(stuck.contains("settle") || stuck.contains("still has"), "{stuck}");
    }

    #[test]
    fn a_seed_replays_exactly() {
        let a = Sim::new(42).run().unwrap();
        let b = Sim::new(42).run().unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
