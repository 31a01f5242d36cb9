//! Loading the trust and registry snapshots from the store, logging what is wrong with them.
//! The node swaps them whole into its cells after every change; offline commands read them
//! once.

use kp_exchange::registry::Registry;
use kp_exchange::trust::{Trust, TrustProblem};

use crate::store::{Storage, StoreError};

/// Reads every peer record and builds the trust snapshot (see [`kp_exchange::trust::load`]),
/// logging what it found wrong: records ignored, archives unusable, peers quarantined.
pub fn load_trust<S: Storage + ?Sized>(store: &S) -> Result<Trust, StoreError> {
    reload_trust(store, None)
}

/// As [`load_trust`], reusing what `earlier` verified; a quarantine already logged for
/// `earlier` is not logged again.
pub fn reload_trust<S: Storage + ?Sized>(store: &S, earlier: Option<&Trust>) -> Result<Trust, StoreError> {
    let trust = kp_exchange::trust::reload(store, earlier)?;
    for p in trust.problems() {
        if !matches!(p, TrustProblem::Quarantined { new: false, .. }) {
            tracing::error!("{p}");
        }
    }
    Ok(trust)
}

/// The registry: the shipped list, the recorded changes, and the enrolled peers.
pub fn load_registry<S: Storage + ?Sized>(store: &S, trust: &Trust) -> Result<Registry, StoreError> {
    Registry::load(store, trust.peers().map(|p| p.participant))
}
