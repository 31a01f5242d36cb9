//! What a link sends, and when, without doing any I/O: the window of deliveries in flight,
//! which outbox entries come next, when the oldest delivery has waited too long, and how long
//! to wait before reconnecting. The link task feeds it events and carries out what it says;
//! the simulation drives the same state.

use std::collections::HashMap;
use std::time::Duration;

use kp_protocol::{MessageId, Timestamp};

/// The sending side of one peer link.
#[derive(Debug, Clone)]
pub struct SenderState {
    window: usize,
    /// The highest outbox sequence handed out on this connection.
    cursor: u64,
    /// Each delivery in flight: when it was sent and its outbox position.
    in_flight: HashMap<MessageId, (Timestamp, u64)>,
    backoff: Backoff,
    /// Sending is held: the peer's participant is suspended.
    holding: bool,
}

impl SenderState {
    pub fn new(window: usize, backoff: Backoff) -> SenderState {
        SenderState { window: window.max(1), cursor: 0, in_flight: HashMap::new(), backoff, holding: false }
    }

    /// A new connection: everything unacknowledged will be sent again, from the start of the
    /// outbox, with the same message ids.
    pub fn connected(&mut self) {
        self.cursor = 0;
        self.in_flight.clear();
    }

    /// The connection ended. Returns how long to wait before dialling again.
    pub fn disconnected(&mut self, jitter: f64) -> Duration {
        self.in_flight.clear();
        self.backoff.next_delay(jitter)
    }

    /// A connection lived long enough to count as healthy: the next failure starts the
    /// backoff afresh.
    pub fn healthy(&mut self) {
        self.backoff.reset();
    }

    /// How many more deliveries may be sent now (none while holding).
    pub fn room(&self) -> usize {
        if self.holding {
            return 0;
        }
        self.window.saturating_sub(self.in_flight.len())
    }

    /// Holds (or releases) everything queued for the peer: nothing is sent while held, and
    /// nothing is dropped.
    pub fn hold(&mut self, holding: bool) {
        self.holding = holding;
    }

    pub fn holding(&self) -> bool {
        self.holding
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records a delivery sent; `oseq` is its outbox position.
    pub fn sent(&mut self, id: MessageId, oseq: u64, now: Timestamp) {
        self.cursor = self.cursor.max(oseq);
        self.in_flight.entry(id).or_insert((now, oseq));
    }

    /// Skips an outbox position that needs no sending (already acknowledged meanwhile).
    pub fn skip(&mut self, oseq: u64) {
        self.cursor = self.cursor.max(oseq);
    }

    /// A receipt or reject settled `id`: its outbox position, or `None` if it was not in
    /// flight on this connection (a duplicate).
    pub fn settled(&mut self, id: &MessageId) -> Option<u64> {
        self.in_flight.remove(id).map(|(_, oseq)| oseq)
    }

    pub fn is_in_flight(&self, id: &MessageId) -> bool {
        self.in_flight.contains_key(id)
    }

    /// Whether the oldest delivery has waited longer than `timeout` at `now`.
    pub fn overdue(&self, now: Timestamp, timeout: Duration) -> bool {
        let limit = timeout.as_millis() as i64;
        self.in_flight.values().any(|(sent, _)| now.unix_millis().saturating_sub(sent.unix_millis()) > limit)
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// The next delay: `initial × 2^attempt`, capped at `max`, scaled by `jitter` in [0, 1)
    /// into [50 %, 100 %] of that, so that nodes restarted together do not dial in step.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.initial.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(400));
        for _ in 0..40 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }

    #[test]
    fn the_window_limits_what_is_in_flight_and_a_reconnect_resends_everything() {
        let mut s = SenderState::new(2, Backoff::new(Duration::from_millis(1), Duration::from_millis(1)));
        let (a, b) = (MessageId::of(b"a"), MessageId::of(b"b"));
        let t = Timestamp::from_unix_millis(0);
        s.connected();
        assert_eq!(s.room(), 2);
        s.sent(a, 1, t);
        s.sent(b, 2, t);
        assert_eq!(s.room(), 0);
        assert_eq!(s.cursor(), 2);
        assert_eq!(s.settled(&a), Some(1));
        assert_eq!(s.settled(&a), None);
        assert_eq!(s.room(), 1);
        assert!(s.overdue(Timestamp::from_unix_millis(2000), Duration::from_secs(1)));
        assert!(!s.overdue(Timestamp::from_unix_millis(500), Duration::from_secs(1)));
        s.disconnected(0.5);
        s.connected();
        assert_eq!((s.cursor(), s.in_flight()), (0, 0));
    }
}
