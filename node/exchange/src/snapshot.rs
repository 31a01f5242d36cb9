//! A shared value that readers take whole and writers replace whole: the trust set and the
//! participant registry. Readers hold an `Arc` of the version they got, never a lock.

use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct Snapshot<T>(RwLock<Arc<T>>);

impl<T> Snapshot<T> {
    pub fn new(value: T) -> Snapshot<T> {
        Snapshot(RwLock::new(Arc::new(value)))
    }

    /// The current version.
    pub fn get(&self) -> Arc<T> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc, which cannot leave
        // the Arc half-written; keep serving the last version.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces it; readers see the new version from their next `get`.
    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(value),
            Err(p) => *p.into_inner() = Arc::new(value),
        }
    }
}
