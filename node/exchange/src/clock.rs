//! Time, passed in rather than read at random places: the node uses the system clock
//! (`kp_node::clock::SystemClock`), the simulation a clock it moves itself. Nothing in this
//! crate reads the system time.

use std::sync::atomic::{AtomicI64, Ordering};

use kp_protocol::Timestamp;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(at.unix_millis()))
    }

    pub fn set(&self, at: Timestamp) {
        self.0.store(at.unix_millis(), Ordering::SeqCst);
    }

    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}
