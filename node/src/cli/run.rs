//! `kpnode run`: the daemon.

use tracing_subscriber::EnvFilter;

use super::{CliResult, DirArg, Failure};
use crate::home::NodeDir;
use crate::node::{Node, NodeHandle, NodeOptions, StandIn};
use crate::systemd::Notifier;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str = "Run the node: serve partner nodes over mutual TLS on network.peer_listen, \
deliver queued certificates, confirmations and voids to each enrolled peer, and serve the local \
API on network.api_listen. Stops cleanly on SIGINT or SIGTERM: requests in progress finish, \
everything acknowledged is already on disk.\n\n\
If the store's disk fails (full, or read-only), the API keeps answering: writes and /healthz get \
503 naming the cause and the fix, and the node reopens its store by itself once a test write \
succeeds.\n\n\
Logs go to standard error; set the level with KPNODE_LOG (e.g. KPNODE_LOG=debug, or \
KPNODE_LOG=kp_node::link=debug).\n\nUnder systemd (Type=notify) it says READY=1 once the store is open and both listeners are bound, STOPPING=1 when it begins to stop, and, with WatchdogSec= set, WATCHDOG=1 while its store threads answer; see packaging/systemd/kpnode.service.";

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KPNODE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn run(a: RunArgs) -> CliResult {
    init_logging(a.log_format);
    // Before the runtime starts any thread: this changes the process environment.
    let (notify, errors) = Notifier::from_env();
    for e in errors {
        tracing::warn!(error = %e, "ignoring a systemd setting");
    }
    crate::os::ignore_file_size_signal();
    if let Some(limit) = crate::os::raise_open_file_limit() {
        tracing::debug!(limit, "open file limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpnode")
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let dir = NodeDir::new(&a.dir.dir);
        let mut signals = Signals::install();
        let mut watchdog = Watchdog::new(&notify);
        notify.status("starting: opening the store");
        let mut node = Node::start(NodeOptions::new(dir.clone())).await.map_err(|e| {
            use crate::home::HomeError;
            use crate::node::StartError;
            use crate::store::StoreError;
            let code = match e {
                StartError::Home(HomeError::Config(_)) => 2,
                // Another kpnode's store: a restart cannot fix it (the unit file does not
                // restart on exit status 2).
                StartError::Store(StoreError::Format { .. }) => 2,
                _ => 1,
            };
            Failure { code, lines: e.to_string().lines().map(str::to_owned).collect() }
        })?;
        // Node::start returns once the store is open and both listeners are bound.
        notify.ready(&serving(&node));
        // The pause before each attempt to reopen the store grows across failures, so a disk
        // that takes the probe but fails sled again is not reopened every second; it starts
        // over once the node has run for a while without failing.
        let mut backoff = Backoff::default();
        loop {
            let started = std::time::Instant::now();
            let why = loop {
                tokio::select! {
                    _ = signals.next() => {
                        notify.stopping("stopping: finishing requests in progress");
                        node.shutdown().await;
                        return Ok(());
                    }
                    why = node.store_failed() => break why,
                    _ = watchdog.tick() => {
                        if node.alive(watchdog.period).await {
                            notify.watchdog();
                        } else if node.shared().store_health.failure().is_none() {
                            // (A failed store is handled by the next pass of this loop.)
                            tracing::warn!(
                                within_ms = watchdog.period.as_millis() as u64,
                                "the store threads did not answer in time; not telling the systemd watchdog the node is alive"
                            );
                        }
                    }
                }
            };
            notify.status(&format!(
                "the store failed ({why}); answering 503 until the disk accepts writes again"
            ));
            // sled refuses every write after an I/O error, so the store must be reopened. Until
            // the disk takes writes the failed node keeps serving: every write is refused with
            // 503 naming the cause and the fix, /healthz answers 503, and reads answer, or 503
            // too where sled would have to write to read (it splits and merges as it reads).
            tracing::error!(error = %why, "the store failed; the node answers 503 and reopens its store once the disk accepts writes again");
            backoff.ran_for(started.elapsed());
            if !wait_writable(&dir, &mut signals, &mut backoff, &mut watchdog).await {
                notify.stopping("stopping: finishing requests in progress");
                node.shutdown().await;
                return Ok(());
            }
            // The next node takes over the same sockets: connections made in between wait
            // in their backlog instead of being refused. Nothing unacknowledged is lost:
            // every caller of a failed batch was told so.
            let stand_in = StandIn::of(&node, &why);
            node.shutdown().await;
            match restart(&dir, &stand_in, &mut signals, &mut backoff, &mut watchdog).await {
                Some(n) => {
                    node = n;
                    notify.status(&serving(&node));
                }
                None => {
                    notify.stopping("stopping");
                    return Ok(());
                }
            }
        }
    })
}

/// The `STATUS=` of a serving node.
fn serving(node: &NodeHandle) -> String {
    format!("serving peers on {} and the API on {}", node.peer_addr(), node.api_addr())
}

/// When to tell the systemd watchdog the node is alive: every half of `$WATCHDOG_USEC`,
/// after checking that it is (see [`NodeHandle::alive`]); never without a watchdog. The check
/// runs in `kpnode run`'s own loop, not in a task of its own, so a wedged loop stops the
/// pings too. While the store is being reopened (the node answering 503 by design) the loop
/// itself is what is alive, and it says so after each pass.
struct Watchdog<'a> {
    notify: &'a Notifier,
    interval: Option<tokio::time::Interval>,
    /// How long a check may take: one interval.
    period: std::time::Duration,
}

impl<'a> Watchdog<'a> {
    fn new(notify: &'a Notifier) -> Watchdog<'a> {
        let period = notify.watchdog_interval();
        let interval = period.map(|p| {
            let mut i = tokio::time::interval(p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Watchdog { notify, interval, period: period.unwrap_or_default() }
    }

    /// Resolves at the next tick; never without a watchdog.
    async fn tick(&mut self) {
        match &mut self.interval {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// The pause before reopening a failed store: 1 s, doubling to 30 s.
#[derive(Debug)]
struct Backoff {
    pause: std::time::Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { pause: std::time::Duration::from_secs(1) }
    }
}

impl Backoff {
    /// The node ran this long before its store failed: after ten healthy minutes, start over.
    fn ran_for(&mut self, healthy: std::time::Duration) {
        if healthy >= std::time::Duration::from_secs(600) {
            *self = Backoff::default();
        }
    }

    fn next(&mut self) -> std::time::Duration {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(30));
        pause
    }
}

/// Waits (with a growing pause) until the store's disk takes a probe write; `false` if a
/// signal asks to stop meanwhile.
async fn wait_writable(
    dir: &NodeDir,
    signals: &mut Signals,
    backoff: &mut Backoff,
    watchdog: &mut Watchdog<'_>,
) -> bool {
    loop {
        let pause = tokio::time::sleep(backoff.next());
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = signals.next() => return false,
                _ = &mut pause => break,
                _ = watchdog.tick() => watchdog.notify.watchdog(),
            }
        }
        match probe_writable(&dir.store_dir()) {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.store_dir().display(), "the store's disk still refuses writes")
            }
        }
    }
}

/// Starts the node again on the same sockets, retrying (with a growing pause, the API
/// answering 503 meanwhile) until it starts; `None` if a signal asks to stop meanwhile.
async fn restart(
    dir: &NodeDir,
    stand_in: &StandIn,
    signals: &mut Signals,
    backoff: &mut Backoff,
    watchdog: &mut Watchdog<'_>,
) -> Option<NodeHandle> {
    loop {
        let mut opts = NodeOptions::new(dir.clone());
        opts.listeners = Some(stand_in.listeners());
        let e = match Node::start(opts).await {
            Ok(n) => {
                tracing::info!("the store accepts writes again; the node is running");
                return Some(n);
            }
            Err(e) => e,
        };
        tracing::warn!(error = %e, "the node could not start again yet");
        let mut stop = false;
        stand_in
            .serve_until(&e.to_string(), async {
                stop = !wait_writable(dir, signals, backoff, watchdog).await;
            })
            .await;
        if stop {
            return None;
        }
    }
}

/// Writes, syncs and removes a 1 MiB file beside the store.
fn probe_writable(store: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = store.join(".kpnode-write-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// SIGTERM and SIGINT.
struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Signals { streams: Some((term, int)) },
            _ => {
                tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
                Signals { streams: None }
            }
        }
    }

    async fn next(&mut self) {
        match &mut self.streams {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            },
            None => std::future::pending::<()>().await,
        }
    }
}
