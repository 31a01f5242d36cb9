//! What the tasks of a running node share: its configuration and identity, its keys and
//! signer, the trust and registry snapshots, the store and its actor, the table of peer links,
//! the clock and metrics, and the task tree. Built by [`crate::node`]; the peer links, the API
//! and the services read it and never reach back into `node`.

mod links;
pub mod throttle;
mod trust;

pub use links::{LinkStatus, Links};
pub use trust::{load_registry, load_trust, reload_trust};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use kp_config::NodeConfig;
use kp_keys::NodeKeys;
use kp_protocol::{ParticipantCode, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actor::{ActorHandle, StoreHealth};
use crate::clock::Clock;
use crate::home::NodeDir;
use crate::metrics::Metrics;
use crate::net::tls::TlsContext;
use crate::store::SledStore;
use kp_exchange::registry::RegistryCell;
use kp_exchange::signer::Signer;
use kp_exchange::trust::TrustCell;

/// Everything the tasks of a node share.
#[derive(Debug)]
pub struct Shared {
    pub config: NodeConfig,
    pub dir: NodeDir,
    pub me: ParticipantCode,
    pub signer: Arc<Signer>,
    pub keys: Arc<Mutex<NodeKeys>>,
    pub tls: Arc<TlsContext>,
    pub trust: Arc<TrustCell>,
    /// The participant registry, reloaded after every change.
    pub registry: Arc<RegistryCell>,
    /// Set when the store fails (a full disk): the daemon then restarts the node's store.
    pub store_health: Arc<StoreHealth>,
    /// Bumped after every trust change; the supervisor reconciles links on it.
    pub trust_generation: watch::Sender<u64>,
    pub store: SledStore,
    pub actor: ActorHandle,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub links: Arc<Links>,
    /// The last certificate sequence given out per year (numbers not yet stored included).
    pub numbers: Mutex<BTreeMap<i32, u64>>,
    pub token: String,
    pub peer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub started_at: Timestamp,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// Set while an online backup's snapshot is taken or streamed: one at a time, so the
    /// copies of the store it writes to disk cannot pile up.
    pub backup_running: std::sync::atomic::AtomicBool,
    /// The console's sign-in throttle: counted by the console, cleared by the API's unlock.
    pub sign_in_throttle: throttle::Throttle,
}

impl Shared {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The officer of what is done with the API token (the API, and the CLI through it):
    /// `api.token_name`.
    pub fn token_officer(&self) -> crate::store::Officer {
        officer_named(self.config.api.token_name.as_str())
    }

    /// The endpoints to advertise: the configured ones, else the bound peer address.
    pub fn endpoints(&self) -> Vec<String> {
        if self.config.network.advertise.is_empty() {
            vec![self.peer_addr.to_string()]
        } else {
            self.config.network.advertise.clone()
        }
    }
}

/// `name` as an officer: names checked by the same rules (a token name, an account name)
/// always are one; anything else is shortened and cleaned rather than lost.
pub fn officer_named(name: &str) -> crate::store::Officer {
    crate::store::Officer::new(name).unwrap_or_else(|_| {
        let cleaned: String = name
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(crate::store::Officer::MAX_CHARS)
            .collect();
        crate::store::Officer::new(cleaned.trim())
            .unwrap_or_else(|_| crate::store::Officer::new("unnamed").expect("a valid name"))
    })
}
