//! Whom this node trusts: each enrolled peer's key history, endpoints, and the TLS keys that
//! map to it. An immutable snapshot, swapped whole when a peer is added, removed or rotates,
//! so readers (TLS verifiers, link tasks) never hold a lock across anything slow.

use std::collections::HashMap;

use kp_keys::{Fingerprint, KeyHistory, VerifiedBundle};
use kp_protocol::{ParticipantCode, Timestamp};

use crate::store::PeerRecord;

/// One enrolled partner, as trusted now.
#[derive(Debug, Clone)]
pub struct PeerTrust {
    pub participant: ParticipantCode,
    pub authority: String,
    pub history: KeyHistory,
    pub fingerprint: Fingerprint,
    pub endpoints: Vec<String>,
    pub enrolled_at: Timestamp,
    /// Removed peers stay known (their documents in the log still verify) but are refused
    /// on the wire.
    pub removed: bool,
}

/// Why a stored peer record could not be turned into trust.
#[derive(Debug, thiserror::Error)]
#[error("peer {participant}: {detail}")]
pub struct PeerRecordError {
    pub participant: ParticipantCode,
    pub detail: String,
}

impl PeerTrust {
    pub fn from_record(rec: &PeerRecord) -> Result<PeerTrust, PeerRecordError> {
        let err = |detail: String| PeerRecordError { participant: rec.participant, detail };
        let bundle = VerifiedBundle::from_bytes(&rec.bundle).map_err(|e| err(e.to_string()))?;
        let mut history = bundle.history.clone();
        for r in &rec.rotations {
            // Rotations already in the bundle's chain are skipped; later ones applied.
            let seq = r.body::<kp_protocol::KeyRotation>().map(|b| b.sequence).unwrap_or(0);
            if (seq as usize) <= history.rotations().len() {
                continue;
            }
            history.apply(r).map_err(|e| err(e.to_string()))?;
        }
        Ok(PeerTrust {
            participant: rec.participant,
            authority: bundle.bundle.authority.to_string(),
            history,
            fingerprint: bundle.fingerprint,
            endpoints: rec.endpoints.clone(),
            enrolled_at: rec.enrolled_at,
            removed: rec.removed_at.is_some(),
        })
    }
}

/// A snapshot of everything trusted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    peers: HashMap<ParticipantCode, PeerTrust>,
}

impl Trust {
    pub fn new(peers: impl IntoIterator<Item = PeerTrust>) -> Trust {
        Trust { peers: peers.into_iter().map(|p| (p.participant, p)).collect() }
    }

    /// An enrolled, not removed, peer.
    pub fn active(&self, code: ParticipantCode) -> Option<&PeerTrust> {
        self.peers.get(&code).filter(|p| !p.removed)
    }

    /// Any peer ever enrolled (for verifying old documents).
    pub fn known(&self, code: ParticipantCode) -> Option<&PeerTrust> {
        self.peers.get(&code)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values()
    }

    pub fn active_peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values().filter(|p| !p.removed)
    }

    /// The active peer a TLS key belongs to, if it may be used at `now`.
    pub fn peer_for_tls_key(
        &self,
        key: &[u8; 32],
        now: Timestamp,
        grace_millis: i64,
    ) -> Option<ParticipantCode> {
        self.active_peers().find(|p| p.history.accepts_tls_key(key, now, grace_millis)).map(|p| p.participant)
    }
}

/// The shared, swappable trust set.
pub type TrustCell = crate::snapshot::Snapshot<Trust>;
