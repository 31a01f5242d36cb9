//! A running node: [`Node::start`] opens the store, loads keys and trust, starts the store
//! actor, binds the peer and API listeners and spawns one task tree under a cancellation
//! token; [`NodeHandle::shutdown`] takes it down in a written-down order. Tests start several
//! nodes in one process on `127.0.0.1:0`.
//!
//! The composition root: the only module that starts the peer links and an API server (the
//! node's, or the [`StandIn`] that answers 503 while `kpnode run` reopens a failed store).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kp_config::NodeConfig;
use kp_keys::NodeKeys;
use kp_protocol::ParticipantCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actor::{Actor, ActorError, Publish, RotationError};
use crate::clock::{Clock, SystemClock};
use crate::home::{HomeError, NodeDir};
use crate::metrics::Metrics;
use crate::net::tls::{Identity, TlsContext};
use crate::service::keys::key_age_warnings;
use crate::state::{load_registry, load_trust, reload_trust, Links, Shared};
use crate::store::{decode_record, SledStore, Storage, StoreError, Tree};
use kp_exchange::engine::Engine;
use kp_exchange::registry::RegistryCell;
use kp_exchange::signer::Signer;
use kp_exchange::trust::TrustCell;

/// What to change when a listening address cannot be bound: the `node.toml` setting.
fn listen_hint(e: &std::io::Error, setting: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another program (perhaps another kpnode) listens there: stop it, or set {setting} in the node \
directory's node.toml to a free port{}",
            if setting == "network.peer_listen" {
                " (partners dial this address: send them a new bundle, `kpnode peer export`)"
            } else {
                ""
            }
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("; this machine has no such address: set {setting} in the node directory's node.toml")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "; ports below 1024 need privileges: set {setting} in the node directory's node.toml to a port above 1023"
        ),
        _ => format!(" (the address is {setting} in the node directory's node.toml)"),
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen for peers on {addr}: {source}{}", listen_hint(source, "network.peer_listen"))]
    PeerListen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for the API on {addr}: {source}{}", listen_hint(source, "network.api_listen"))]
    ApiListen { addr: SocketAddr, source: std::io::Error },
    /// The node's TLS key or certificate cannot be used.
    #[error("TLS setup failed: {0}")]
    Tls(#[source] rustls::Error),
    /// The sockets kept from an earlier start (see [`NodeOptions::listeners`]) cannot be
    /// served again.
    #[error("cannot reuse the listening sockets: {0}")]
    ReuseListeners(#[source] std::io::Error),
    /// A bound socket cannot tell its address.
    #[error("{0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot start the store thread: {0}")]
    StoreThread(#[source] std::io::Error),
    /// A key rotation interrupted before it was announced could not be announced now.
    #[error("cannot announce a key rotation: {0}")]
    Announce(#[source] ActorError),
}

/// Told, after each flush, which outbound messages it made acknowledged (for `bench`).
pub type DeliveryObserver =
    Arc<dyn Fn(&[(kp_protocol::MessageId, Option<kp_protocol::CertificateNumber>)]) + Send + Sync>;

/// How to start a node.
#[derive(Clone)]
pub struct NodeOptions {
    pub dir: NodeDir,
    pub clock: Arc<dyn Clock>,
    /// Write `daemon.json` (the bound addresses, for client commands) in the node directory.
    pub announce: bool,
    pub delivery_observer: Option<DeliveryObserver>,
    /// Sockets already bound (by an earlier start of this node), used instead of binding
    /// `network.peer_listen` and `network.api_listen` again: `kpnode run` keeps them open
    /// while it reopens a failed store, so the API never refuses a connection meanwhile and
    /// the addresses stay the same.
    pub listeners: Option<Arc<Listeners>>,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("dir", &self.dir)
            .field("announce", &self.announce)
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    pub fn new(dir: NodeDir) -> NodeOptions {
        NodeOptions {
            dir,
            clock: Arc::new(SystemClock),
            announce: true,
            delivery_observer: None,
            listeners: None,
        }
    }
}

/// The node's two listening sockets. Each start of the node serves duplicates of them, so
/// they outlive the node that served them while someone holds this.
#[derive(Debug)]
pub struct Listeners {
    peer: std::net::TcpListener,
    api: std::net::TcpListener,
}

impl Listeners {
    async fn bind(config: &NodeConfig) -> Result<Listeners, StartError> {
        let peer = TcpListener::bind(config.network.peer_listen)
            .await
            .and_then(TcpListener::into_std)
            .map_err(|source| StartError::PeerListen { addr: config.network.peer_listen, source })?;
        let api = TcpListener::bind(config.network.api_listen)
            .await
            .and_then(TcpListener::into_std)
            .map_err(|source| StartError::ApiListen { addr: config.network.api_listen, source })?;
        Ok(Listeners { peer, api })
    }

    /// Duplicates of the peer and API sockets, for one run of the node's tasks.
    fn serve(&self) -> Result<(TcpListener, TcpListener), StartError> {
        let dup = |l: &std::net::TcpListener| l.try_clone().and_then(TcpListener::from_std);
        let reuse = StartError::ReuseListeners;
        Ok((dup(&self.peer).map_err(reuse)?, dup(&self.api).map_err(reuse)?))
    }

    /// A duplicate of the API socket.
    pub fn api(&self) -> std::io::Result<TcpListener> {
        self.api.try_clone().and_then(TcpListener::from_std)
    }
}

/// Publishes what each flush of the store actor made durable: new outbox positions to the
/// links, the trust and registry reloaded after a peer change, acknowledgements to the
/// delivery observer.
struct Publisher {
    links: Arc<Links>,
    trust: Arc<TrustCell>,
    registry: Arc<RegistryCell>,
    generation: watch::Sender<u64>,
    observer: Option<DeliveryObserver>,
}

impl Publish for Publisher {
    fn durable(
        &mut self,
        queued_up_to: &BTreeMap<ParticipantCode, u64>,
        peers_changed: bool,
        acknowledged: &[(kp_protocol::MessageId, Option<kp_protocol::CertificateNumber>)],
        store: &SledStore,
    ) {
        if let (Some(observer), false) = (&self.observer, acknowledged.is_empty()) {
            observer(acknowledged);
        }
        if peers_changed {
            let earlier = self.trust.get();
            match reload_trust(store, Some(&earlier)) {
                Ok(t) => {
                    match load_registry(store, &t) {
                        Ok(r) => self.registry.set(r),
                        Err(e) => tracing::error!(error = %e, "could not reload the participant registry"),
                    }
                    self.trust.set(t);
                    self.generation.send_modify(|g| *g += 1);
                    // A participant reinstated: its held messages may go now.
                    self.links.wake_all();
                }
                Err(e) => tracing::error!(error = %e, "could not reload peers after a change"),
            }
        }
        for (peer, oseq) in queued_up_to {
            self.links.publish_outbox(*peer, *oseq);
        }
    }
}

/// Starting and stopping nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts the node in `opts.dir`. Returns once it listens on both ports.
    pub async fn start(opts: NodeOptions) -> Result<NodeHandle, StartError> {
        let dir = opts.dir.clone();
        let config = dir.config()?;
        let (keys, tokens) = dir.keys_and_tokens(&config)?;
        let token = dir.token()?;
        let store = open_store(&dir, &config)?;
        let clock = opts.clock.clone();
        let me = config.participant;
        let metrics = Arc::new(Metrics::default());
        let (provider, identity) = tls_identity(&keys)?;
        let trust = Arc::new(TrustCell::new(load_trust(&store)?));
        let registry = Arc::new(RegistryCell::new(load_registry(&store, &trust.get())?));
        let tls = Arc::new(TlsContext {
            provider,
            identity: Arc::new(identity),
            trust: trust.clone(),
            clock: clock.clone(),
            grace_millis: config.keys.tls_grace_period.as_millis() as i64,
            metrics: metrics.clone(),
        });
        // Signing, verifying, parsing, the store and TLS are timed in CPU time per thread.
        kp_exchange::meter::install_clock(crate::os::thread_cpu_nanos);
        let signer = Arc::new(Signer::new(me, keys.signing.backend(), clock.clone()));
        let engine = Engine::load(&store, signer.clone())?;
        let cancel = CancellationToken::new();
        let links = Arc::new(Links::new(engine.counts().next_oseq, cancel.clone()));
        let (trust_generation, _) = watch::channel(0u64);
        let keys = Arc::new(Mutex::new(keys));
        let announced =
            crate::store::get_record::<u32, _>(&store, Tree::Meta, crate::store::meta::ROTATIONS_ANNOUNCED)?
                .unwrap_or(0);

        let listeners = match &opts.listeners {
            Some(l) => l.clone(),
            None => Arc::new(Listeners::bind(&config).await?),
        };
        let (peer_listener, api_listener) = listeners.serve()?;
        let peer_addr = peer_listener.local_addr().map_err(StartError::LocalAddr)?;
        let api_addr = api_listener.local_addr().map_err(StartError::LocalAddr)?;

        let store_health = Arc::new(crate::actor::StoreHealth::default());
        let hooks = crate::actor::ActorHooks {
            metrics: metrics.clone(),
            publish: Box::new(Publisher {
                links: links.clone(),
                trust: trust.clone(),
                registry: registry.clone(),
                generation: trust_generation.clone(),
                observer: opts.delivery_observer.clone(),
            }),
            rotator: Box::new(NodeRotator {
                signer: signer.clone(),
                keys: keys.clone(),
                tls: tls.clone(),
                trust: trust.clone(),
                links: links.clone(),
                tokens,
                dir: dir.clone(),
            }),
            health: store_health.clone(),
        };
        let actor =
            Actor::start(store.clone(), engine, clock.clone(), config.store.max_batch as usize, hooks)
                .map_err(StartError::StoreThread)?;

        let shared = Arc::new(Shared {
            config,
            dir,
            me,
            signer,
            keys,
            tls,
            trust,
            registry,
            store_health,
            trust_generation,
            store,
            actor: actor.handle(),
            started_at: clock.now(),
            clock,
            metrics,
            links,
            numbers: Mutex::new(BTreeMap::new()),
            token,
            peer_addr,
            api_addr,
            cancel,
            tasks: TaskTracker::new(),
            backup_running: Default::default(),
            sign_in_throttle: Default::default(),
        });

        resume_rotations(&shared, announced).await?;
        spawn_tasks(&shared, peer_listener, api_listener);
        if opts.announce {
            write_daemon_file(&shared);
        }
        tracing::info!(
            participant = %me,
            peers = %peer_addr,
            api = %api_addr,
            fingerprint = %shared.keys.lock().unwrap_or_else(|p| p.into_inner()).fingerprint(),
            key = %shared.signer.key_id(),
            "node started"
        );
        Ok(NodeHandle { shared, actor: Some(actor), listeners })
    }
}

/// Opens the node's store, saying what it repaired.
fn open_store(dir: &NodeDir, config: &NodeConfig) -> Result<SledStore, StartError> {
    let (store, report) = SledStore::open(&dir.store_dir(), config.store.cache_capacity_mb)?;
    if let Some(m) = &report.migrated {
        tracing::warn!(from = %m.from, to = m.to, backup = %m.backup.display(), "{}", m.line());
    }
    if let Some(line) = report.indexed_line() {
        if report.index_skipped.is_empty() {
            tracing::info!(certificates = report.indexed, received = report.indexed_imports, "{line}");
        } else {
            tracing::warn!(certificates = report.indexed, received = report.indexed_imports, "{line}");
        }
    }
    for f in &report.removed_partial_snapshots {
        tracing::warn!(
            file = %f.display(),
            "removed a partial sled snapshot left by a crash during snapshotting (sled 0.34.7 bug, upstream #1533); no data is lost"
        );
    }
    Ok(store)
}

/// The TLS provider and the node's TLS identity: its current key, and the previous one while
/// a TLS rotation is not yet acknowledged by every peer.
fn tls_identity(keys: &NodeKeys) -> Result<(Arc<rustls::crypto::CryptoProvider>, Identity), StartError> {
    let provider = crate::net::tls::provider();
    let identity = Identity::new(
        &provider,
        &keys.tls_certificate,
        &keys.tls,
        keys.previous_tls.as_ref().map(|(k, c)| (c.as_slice(), k)),
    )
    .map_err(StartError::Tls)?;
    Ok((provider, identity))
}

/// The node's task tree, every task under `shared.cancel`: the peer accept loop, the daily
/// key-age check, the link supervisor (which dials each peer) and the API. The only place
/// the peer links and the API are started.
fn spawn_tasks(shared: &Arc<Shared>, peer_listener: TcpListener, api_listener: TcpListener) {
    let s = shared.clone();
    shared.tasks.spawn(async move { crate::link::accept_loop(s, peer_listener).await });
    let s = shared.clone();
    shared.tasks.spawn(async move { watch_key_age(s).await });
    let s = shared.clone();
    shared.tasks.spawn(async move { supervise(s).await });
    let s = shared.clone();
    // The console's pages share the API's listener and limits.
    let console = crate::console::router(s.clone());
    shared.tasks.spawn(async move { crate::api::serve(s, api_listener, console).await });
}

/// Rotates keys for the store actor (see [`crate::actor::Rotator`]).
struct NodeRotator {
    signer: Arc<Signer>,
    keys: Arc<Mutex<NodeKeys>>,
    tls: Arc<TlsContext>,
    trust: Arc<TrustCell>,
    links: Arc<Links>,
    /// The tokens `node.toml` names, where a rotation into another URI opens its new key.
    tokens: crate::hsm::ConfiguredTokens,
    dir: NodeDir,
}

impl NodeRotator {
    /// The token handle for a rotation into `uri`: on the token already open when the URI
    /// names it, otherwise on the token it names, with the same module and PIN.
    fn handle_for(
        &self,
        uri: &kp_keys::pkcs11uri::Pkcs11Uri,
        is_tls: bool,
    ) -> Result<crate::hsm::TokenHandle, RotationError> {
        let Some(base) = self.tokens.signing.as_ref() else {
            return Err(RotationError::Keys(Arc::new(kp_keys::KeyError::Token {
                key: uri.to_string(),
                detail: "this node has no PKCS#11 token configured ([pkcs11] in node.toml, set by `kpnode init --signing-key URI --pkcs11-module PATH`); a rotation can move a key only between URIs of its module".into(),
            })));
        };
        let handle = if is_tls {
            crate::hsm::TokenHandle::own(&base.token, uri)
        } else {
            crate::hsm::TokenHandle::on(&base.token, uri)
        };
        handle.map_err(|e| RotationError::Keys(Arc::new(kp_keys::KeyError::from(e))))
    }
}

impl crate::actor::Rotator for NodeRotator {
    fn rotate(
        &mut self,
        signing: bool,
        tls: bool,
        to: &crate::actor::RotateTo,
    ) -> Result<(kp_protocol::SignedDocument, Vec<ParticipantCode>), RotationError> {
        // The two keys need objects of their own: node.toml could not name one URI for both
        // (and a rotation that could not write it would leave a node that cannot start).
        let same = |a: &kp_keys::pkcs11uri::Pkcs11Uri, b: &kp_keys::pkcs11uri::Pkcs11Uri| {
            a.token == b.token && a.serial == b.serial && a.object == b.object
        };
        let signing_after = to.signing_key.as_ref().or(self.tokens.signing.as_ref().map(|h| &h.key));
        let tls_after = to.tls_key.as_ref().or(self.tokens.tls.as_ref().map(|h| &h.key));
        if let (Some(s), Some(t)) = (signing_after, tls_after) {
            if same(s, t) {
                let (field, other) =
                    if to.signing_key.is_some() { ("signing_key", "TLS") } else { ("tls_key", "signing") };
                return Err(RotationError::Target {
                    field,
                    detail: format!("{field} {} names the same key pair as the node's {other} key ({}); each key needs an object= of its own — nothing changed", if field == "signing_key" { s } else { t }, if field == "signing_key" { t } else { s }),
                });
            }
        }
        let new_signing = to.signing_key.as_ref().map(|u| self.handle_for(u, false)).transpose()?;
        let new_tls = to.tls_key.as_ref().map(|u| self.handle_for(u, true)).transpose()?;
        let keys = self.keys.clone();
        let statement = self.signer.rotate(|_old, effective| {
            let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
            let (old_signing, old_tls) = (k.token(false), k.token(true));
            if let Some(h) = &new_signing {
                k.set_token(false, Some(Arc::new(h.clone())));
            }
            if let Some(h) = &new_tls {
                k.set_token(true, Some(Arc::new(h.clone())));
            }
            // The history refuses before anything is written: a refusal changes nothing.
            let statement = k.rotate(signing, tls, effective);
            for problem in k.problems.drain(..) {
                tracing::error!(%problem, "a key problem after the rotation");
            }
            let statement = statement.map_err(|e| {
                // Not rotated: new keys are made where they were before.
                k.set_token(false, old_signing);
                k.set_token(true, old_tls);
                match e {
                    kp_keys::KeyError::History(h) => RotationError::Refused(h),
                    other => RotationError::Keys(Arc::new(other)),
                }
            })?;
            Ok::<_, RotationError>((signing.then(|| k.signing.backend()), statement))
        })?;
        // Committed: node.toml names where the keys now are, for the next start.
        for (is_tls, handle) in [(false, new_signing), (true, new_tls)] {
            let Some(handle) = handle else { continue };
            if let Err(e) = self.dir.set_token_key(is_tls, &handle.key) {
                let setting = if is_tls { "tls_key" } else { "signing_key" };
                tracing::error!(error = %e, uri = %handle.key, "the rotation is done, but node.toml could not name the new key's URI: before the next start set {setting} = \"{}\" in node.toml's [pkcs11]", handle.key);
            }
            if is_tls {
                self.tokens.tls = Some(handle);
            } else {
                self.tokens.signing = Some(handle);
            }
        }
        if tls {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            self.tls
                .identity
                .rotate(&self.tls.provider, &k.tls_certificate, &k.tls)
                .map_err(RotationError::Tls)?;
        }
        let mut peers: Vec<ParticipantCode> =
            self.trust.get().active_peers().map(|p| p.participant).collect();
        peers.sort();
        tracing::info!(signing, tls, peers = peers.len(), key = %self.signer.key_id(), "keys rotated; announcing the rotation to every peer");
        Ok((statement, peers))
    }

    fn announced(&mut self, statement: &kp_protocol::SignedDocument, peers: &[ParticipantCode]) {
        let tls_changed =
            statement.body::<kp_protocol::KeyRotation>().is_ok_and(|r| r.new_tls_certificate.is_some());
        if tls_changed {
            for p in peers {
                self.links.set_tls_rotation_pending(*p, statement.message_id());
            }
        }
    }
}

/// After a restart: queues own rotations that never made it into the outbox, and finds the
/// peers that have not yet acknowledged a TLS rotation.
async fn resume_rotations(shared: &Arc<Shared>, announced: u32) -> Result<(), StartError> {
    let (rotations, has_previous) = {
        let keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        (keys.history.rotations().to_vec(), keys.previous_tls.is_some())
    };
    let active: Vec<ParticipantCode> = shared.trust.get().active_peers().map(|p| p.participant).collect();
    for statement in &rotations {
        let seq = statement.body::<kp_protocol::KeyRotation>().map(|r| r.sequence).unwrap_or(0);
        if seq > announced {
            tracing::warn!(
                sequence = seq,
                "a key rotation was not yet announced (interrupted); announcing it now"
            );
            shared
                .actor
                .call(kp_exchange::engine::Command::Announce {
                    document: statement.clone(),
                    peers: active.clone(),
                    // Whoever rotated is named by the announcement's first attempt only if it
                    // got that far; the daemon finishing it is no one.
                    officer: None,
                })
                .await
                .map_err(StartError::Announce)?;
        }
    }
    if has_previous {
        if let Some(last) = rotations.last() {
            // Peers with our last rotation still in their outbox have not acknowledged it.
            let id = last.message_id();
            for peer in &active {
                let (start, end) = crate::store::outbox_range(*peer, 0);
                let pending = shared
                    .store
                    .range(Tree::Outbox, &start, &end, usize::MAX)?
                    .iter()
                    .filter_map(|(k, v)| decode_record::<crate::store::OutboxEntry>(Tree::Outbox, k, v).ok())
                    .any(|e| e.message_id == id);
                if pending {
                    shared.links.set_tls_rotation_pending(*peer, id);
                }
            }
        }
    }
    Ok(())
}

/// Logs key-age warnings at start and then daily.
async fn watch_key_age(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {
                for w in key_age_warnings(&shared) {
                    tracing::warn!("{w}");
                }
            }
        }
    }
}

/// The node directory's `daemon.json`: where a running daemon listens, for client commands.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DaemonFile {
    pub pid: u32,
    pub participant: String,
    pub api: SocketAddr,
    pub peers: SocketAddr,
}

/// Where `daemon.json` lies in a node directory.
pub fn daemon_file_path(dir: &NodeDir) -> std::path::PathBuf {
    dir.root().join("daemon.json")
}

fn write_daemon_file(shared: &Shared) {
    let info = DaemonFile {
        pid: std::process::id(),
        participant: shared.me.to_string(),
        api: shared.api_addr,
        peers: shared.peer_addr,
    };
    let path = daemon_file_path(&shared.dir);
    let text = serde_json::to_string_pretty(&info).unwrap_or_default();
    if let Err(e) = kp_keys::files::write_atomic(&path, text.as_bytes(), 0o644) {
        tracing::warn!(error = %e, "could not write daemon.json; client commands will use node.toml's api_listen");
    }
}

/// A running node: what its tasks share, its store actor (stopped last, see
/// [`NodeHandle::shutdown`]) and the listening sockets it serves.
#[derive(Debug)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    actor: Option<Actor>,
    listeners: Arc<Listeners>,
}

impl NodeHandle {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn participant(&self) -> ParticipantCode {
        self.shared.me
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.shared.api_addr
    }

    pub fn api_token(&self) -> &str {
        &self.shared.token
    }

    /// This node's enrolment bundle, with the address it actually listens on unless
    /// `network.advertise` says otherwise.
    pub fn bundle(&self) -> Result<kp_keys::VerifiedBundle, kp_keys::BundleError> {
        let keys = self.shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.bundle(self.shared.config.authority.clone(), self.shared.endpoints(), self.shared.now())
    }

    /// The node's listening sockets, to start it again on them (see [`NodeOptions::listeners`]).
    pub fn listeners(&self) -> Arc<Listeners> {
        self.listeners.clone()
    }

    /// Resolves when the store has failed (the first error); the node then refuses every
    /// write, answering 503, until it is restarted.
    pub async fn store_failed(&self) -> String {
        self.shared.store_health.wait_failed().await
    }

    /// Whether the node is alive, for the systemd watchdog: its store has not failed, and both
    /// store threads (the writer that owns the engine and the flusher) answer a ping within
    /// `within`, so the queue every write goes through is moving. A wedged store thread, a
    /// disk that never returns from fsync, or a runtime too stuck to run this check all
    /// make it false (or never answer), and systemd restarts the service.
    pub async fn alive(&self, within: Duration) -> bool {
        if self.shared.store_health.failure().is_some() {
            return false;
        }
        matches!(tokio::time::timeout(within, self.shared.actor.ping()).await, Ok(Ok(())))
    }

    /// Stops the node. Order: (1) cancel the task tree: the API stops taking requests and
    /// finishes those in progress, the accept loop and every link stop; (2) wait for every
    /// task; (3) stop the store actor, which finishes the commands already sent and flushes;
    /// (4) drop the store, releasing its lock. Nothing acknowledged is lost at any point, since
    /// every acknowledgement followed a flush. The listening sockets close unless a holder
    /// of [`NodeHandle::listeners`] keeps them for the next start.
    pub async fn shutdown(mut self) {
        tracing::info!(participant = %self.shared.me, "shutting down");
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.shared.tasks.wait()).await.is_err() {
            tracing::warn!("some tasks did not stop within 10s; stopping the store anyway");
        }
        if let Some(actor) = self.actor.take() {
            actor.stop().await;
        }
        let _ = std::fs::remove_file(daemon_file_path(&self.shared.dir));
        tracing::info!(participant = %self.shared.me, "stopped");
    }
}

/// What answers on the API socket while no node runs on it (`kpnode run` restarting a node
/// whose store failed): 503 to everything, naming the store's failure and the fix.
#[derive(Debug)]
pub struct StandIn {
    listeners: Arc<Listeners>,
    limits: crate::api::http::Limits,
    metrics: Arc<crate::metrics::Metrics>,
    why: String,
}

impl StandIn {
    pub fn of(node: &NodeHandle, why: &str) -> StandIn {
        let shared = node.shared();
        StandIn {
            listeners: node.listeners(),
            limits: crate::api::http::Limits::of(&shared.config.api),
            metrics: shared.metrics.clone(),
            why: why.to_owned(),
        }
    }

    /// The sockets it answers on, to start the node on again.
    pub fn listeners(&self) -> Arc<Listeners> {
        self.listeners.clone()
    }

    /// Answers 503 until `until` resolves.
    pub async fn serve_until(&self, retry: &str, until: impl std::future::Future<Output = ()>) {
        use axum::response::IntoResponse;
        let listener = match self.listeners.api() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer on the API socket while the store is reopened");
                return until.await;
            }
        };
        let message =
            format!("{}. The node could not reopen it yet ({retry})", ActorError::Storage(self.why.clone()));
        let app = axum::Router::new().fallback(move || {
            let message = message.clone();
            async move { crate::api::ApiError::Unavailable(message).into_response() }
        });
        let cancel = tokio_util::sync::CancellationToken::new();
        let serving =
            crate::api::http::serve(listener, app, self.limits, self.metrics.clone(), cancel.clone());
        tokio::pin!(serving);
        tokio::pin!(until);
        let served_to_the_end = tokio::select! {
            _ = &mut serving => false,
            _ = &mut until => true,
        };
        if served_to_the_end {
            cancel.cancel();
            serving.await;
        } else {
            // The server stopped on its own (it does not, but the wait must not be cut short).
            until.await;
        }
    }
}

/// Keeps one outbound link task per active peer, and closes the links of removed peers.
async fn supervise(shared: Arc<Shared>) {
    let mut generation = shared.trust_generation.subscribe();
    loop {
        reconcile(&shared);
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = generation.changed() => if r.is_err() { return },
        }
    }
}

fn reconcile(shared: &Arc<Shared>) {
    let trust = shared.trust.get();
    for peer in trust.peers() {
        let code = peer.participant;
        if peer.removed {
            if shared.links.close(code) {
                tracing::info!(peer = %code, "peer removed: its links are closed; its queued messages stay queued");
            }
            continue;
        }
        if let Some((token, generation)) = shared.links.start_outbound(code, &peer.endpoints) {
            let s = shared.clone();
            shared.tasks.spawn(async move {
                crate::link::outbound(s.clone(), code, token).await;
                s.links.outbound_ended(code, generation);
            });
        }
    }
}
