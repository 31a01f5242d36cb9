//! The table of peer links: per peer, its live status (for `status`, the API and metrics), the
//! notification that new outbox entries are durable, its cancellation token (a child of the
//! node's root token) and which outbound link task is the current one.

use std::collections::HashMap;
use std::sync::Mutex;

use kp_protocol::{ParticipantCode, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The live state of one peer link, for `status` and the API.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LinkStatus {
    /// Our connection to the peer (deliveries go out on it) is up.
    pub connected: bool,
    pub connected_since: Option<Timestamp>,
    /// Connections the peer holds to us.
    pub inbound_connections: u32,
    pub in_flight: usize,
    pub last_delivery: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// Why messages for the peer are held (its participant is suspended), if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

struct PeerEntry {
    /// The highest outbox sequence known durable for this peer.
    outbox: watch::Sender<u64>,
    status: LinkStatus,
    /// Cancelled when the peer is removed: closes its links at once.
    token: CancellationToken,
    /// Whether an outbound link task is running, and for which endpoints.
    running: Option<Vec<String>>,
    /// Which outbound link task is the current one, and its token (a child of `token`).
    link_generation: u64,
    link_token: Option<CancellationToken>,
    /// Our TLS rotation statement the peer has not yet acknowledged: until it does, we
    /// present our previous TLS certificate when we dial it.
    tls_rotation_pending: Option<kp_protocol::MessageId>,
}

/// Per-peer link state, outbox notifications and cancellation.
pub struct Links {
    inner: Mutex<HashMap<ParticipantCode, PeerEntry>>,
    initial_oseq: u64,
    /// The node's root token: every peer token is a child of it.
    root: CancellationToken,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

impl Links {
    /// An empty table: every peer's outbox starts known durable up to `initial_oseq`, and its
    /// token is a child of `root`.
    pub fn new(initial_oseq: u64, root: CancellationToken) -> Links {
        Links { inner: Mutex::new(HashMap::new()), initial_oseq, root }
    }

    fn with<R>(&self, peer: ParticipantCode, f: impl FnOnce(&mut PeerEntry) -> R) -> R {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let initial = self.initial_oseq;
        let root = &self.root;
        let e = m.entry(peer).or_insert_with(|| PeerEntry {
            outbox: watch::channel(initial).0,
            status: LinkStatus::default(),
            token: root.child_token(),
            running: None,
            link_generation: 0,
            link_token: None,
            tls_rotation_pending: None,
        });
        f(e)
    }

    /// Notified whenever new outbox entries for `peer` become durable.
    pub fn outbox(&self, peer: ParticipantCode) -> watch::Receiver<u64> {
        self.with(peer, |e| e.outbox.subscribe())
    }

    /// Wakes every link's sender, to look at its outbox again (after a registry change).
    pub fn wake_all(&self) {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for e in m.values() {
            e.outbox.send_modify(|_| {});
        }
    }

    /// New outbox entries for `peer`, up to `oseq`, are durable.
    pub fn publish_outbox(&self, peer: ParticipantCode, oseq: u64) {
        self.with(peer, |e| {
            e.outbox.send_if_modified(|v| {
                let changed = oseq > *v;
                *v = (*v).max(oseq);
                changed
            })
        });
    }

    /// The token that is cancelled when `peer` is removed.
    pub fn token(&self, peer: ParticipantCode) -> CancellationToken {
        self.with(peer, |e| e.token.clone())
    }

    pub fn update(&self, peer: ParticipantCode, f: impl FnOnce(&mut LinkStatus)) {
        self.with(peer, |e| f(&mut e.status));
    }

    pub fn status(&self, peer: ParticipantCode) -> LinkStatus {
        self.with(peer, |e| e.status.clone())
    }

    /// Whether we must still present our previous TLS certificate to `peer`.
    pub fn tls_rotation_pending(&self, peer: ParticipantCode) -> bool {
        self.with(peer, |e| e.tls_rotation_pending.is_some())
    }

    pub fn set_tls_rotation_pending(&self, peer: ParticipantCode, id: kp_protocol::MessageId) {
        self.with(peer, |e| e.tls_rotation_pending = Some(id));
    }

    /// `peer` acknowledged (or refused) message `id`: if it was our TLS rotation, the new
    /// certificate is known to it from now on.
    pub fn settled(&self, peer: ParticipantCode, id: &kp_protocol::MessageId) {
        self.with(peer, |e| {
            if e.tls_rotation_pending.as_ref() == Some(id) {
                e.tls_rotation_pending = None;
                tracing::info!(peer = %peer, "the peer acknowledged our TLS key rotation; new connections use the new key");
            }
        });
    }

    pub fn error(&self, peer: ParticipantCode, at: Timestamp, error: impl std::fmt::Display) {
        let text = error.to_string();
        self.update(peer, |s| {
            s.last_error = Some(text);
            s.last_error_at = Some(at);
        });
    }

    /// `peer` was removed: cancels its token, closing its links. True if an outbound link
    /// task was running.
    pub fn close(&self, peer: ParticipantCode) -> bool {
        self.with(peer, |e| {
            let running = e.running.take().is_some();
            if running || !e.token.is_cancelled() {
                e.token.cancel();
            }
            running
        })
    }

    /// Claims the outbound link to `peer` at `endpoints`: `None` if one runs there already;
    /// else cancels the one running elsewhere (if any) and returns the new task's token and
    /// generation (for [`Links::outbound_ended`]).
    pub fn start_outbound(
        &self,
        peer: ParticipantCode,
        endpoints: &[String],
    ) -> Option<(CancellationToken, u64)> {
        let root = self.root.clone();
        self.with(peer, |e| {
            if e.token.is_cancelled() {
                // Enrolled again after a removal.
                e.token = root.child_token();
                e.running = None;
            }
            if e.running.as_deref() == Some(endpoints) {
                return None;
            }
            // Not running, or new endpoints: (re)start the outbound link only.
            if let Some(old) = e.link_token.take() {
                old.cancel();
            }
            let token = e.token.child_token();
            e.link_token = Some(token.clone());
            e.running = Some(endpoints.to_vec());
            e.link_generation += 1;
            Some((token, e.link_generation))
        })
    }

    /// The outbound link task of `generation` ended: if it was the current one, none runs.
    pub fn outbound_ended(&self, peer: ParticipantCode, generation: u64) {
        self.with(peer, |e| {
            if e.link_generation == generation {
                e.running = None;
            }
        });
    }
}
