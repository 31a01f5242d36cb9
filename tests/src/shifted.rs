//! Nodes that read a clock the test moves forward by days: for what happens across a date
//! (expiry, a union's joining day). Time still flows, so the links' timers work.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use kp_node::clock::{Clock, SystemClock};
use kp_node::{Node, NodeOptions};
use kp_protocol::Timestamp;

use crate::{Api, TestNode};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The system clock moved forward by a number of days the test sets.
#[derive(Debug, Default)]
pub struct ShiftedClock(AtomicI64);

impl ShiftedClock {
    pub fn shift_days(&self, days: i64) {
        self.0.fetch_add(days * DAY_MS, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        SystemClock.now().saturating_add_millis(self.0.load(Ordering::SeqCst))
    }
}

/// A node in `dir` on `rt` that reads `clock`.
pub fn start_with(
    rt: &tokio::runtime::Runtime,
    dir: kp_node::home::NodeDir,
    clock: Arc<ShiftedClock>,
) -> TestNode {
    let mut opts = NodeOptions::new(dir.clone());
    opts.announce = false;
    opts.clock = clock;
    let handle = rt.block_on(Node::start(opts)).expect("the node starts");
    let api = Api::new(handle.api_addr(), handle.api_token());
    TestNode { code: handle.participant(), dir, handle: Some(handle), api }
}
