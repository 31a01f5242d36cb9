//! The system clock, the node's time source. The exchange takes time through
//! [`kp_exchange::clock::Clock`]; this is the only place the node reads the wall clock for it.

use std::time::{SystemTime, UNIX_EPOCH};

pub use kp_exchange::clock::{Clock, ManualClock};
use kp_protocol::Timestamp;

/// The system's wall clock (UTC).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp::from_unix_millis(ms)
    }
}
