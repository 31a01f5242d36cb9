//! One peer link, as a state machine without I/O. The daemon's link tasks (`kp_node::link`)
//! feed it what arrives on a TLS connection and carry out what it returns; the simulator
//! (`crate::sim`) feeds it frames from its seeded network. Both therefore run the same
//! logic for everything a link decides:
//!
//! - [`Outbound`], the side that dials: which outbox entries go next within the window of
//!   deliveries in flight, resending everything unacknowledged after a reconnect with the
//!   same message ids, holding everything for a suspended participant (and releasing it),
//!   verifying the peer's signed receipt batches, settling rejects, and when the oldest
//!   delivery has waited too long; [`Backoff`] says when to dial again.
//! - [`Inbound`], the side that accepts: judging the link's TLS key against the trust in
//!   force before each batch, keeping the link's own view of the peer's key history,
//!   checking a batch of deliveries and making the command that stores it, and turning the
//!   store's replies into frames, receipts of one signed batch sharing frames.
//! - [`check_hello`] and [`hello`], the greeting both sides exchange first.

use std::collections::HashMap;
use std::time::Duration;

use kp_keys::{Fingerprint, KeyHistory};
use kp_protocol::frame::PROTOCOL_VERSION;
use kp_protocol::receipt::verify_batch;
use kp_protocol::{
    Frame, MessageId, MessageReceipt, ParticipantCode, ReceiptProof, RejectCode, SignedDocument, Timestamp,
};

use crate::engine::{CheckedUnder, Command, Reply};
use crate::refusal::Refusal;
use crate::registry::View;
use crate::storage::{decode_record, outbox_range, OutboxEntry, Storage, StoreError, Tree};
use crate::trust::{judge_link, Distrust, Trust};
use crate::verify::{check_batch, CheckContext, Delivery, Received};

/// Most deliveries checked and stored as one batch.
pub const MAX_DELIVERY_BATCH: usize = 256;

#[cfg(test)]
thread_local! {
    /// Deliberate bugs in the link, for the simulator to show its checks catch them: a
    /// sender that does not resend after a reconnect…
    pub(crate) static BUG_NO_RESEND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// …a receiver that judges deliveries by the trust it took when the link opened…
    pub(crate) static BUG_KEEP_TRUST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// …and a sender that sends to a suspended participant.
    pub(crate) static BUG_RELEASE_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a deliberate bug is switched on (never, outside the simulator's tests).
macro_rules! bug {
    ($switch:ident) => {{
        #[cfg(test)]
        {
            $switch.with(std::cell::Cell::get)
        }
        #[cfg(not(test))]
        {
            false
        }
    }};
}

/// Why a link must close. The daemon adds its own (I/O, TLS, timeouts) around these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer broke the protocol: an unexpected frame, an invalid receipt, a Hello that
    /// names another participant than its TLS key.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer speaks another protocol version.
    #[error("{peer} speaks protocol version {theirs}; this node speaks {PROTOCOL_VERSION}")]
    Version { peer: ParticipantCode, theirs: u16 },
    #[error("the peer closed the connection before Hello")]
    NoHello,
    /// A receipt signed with a key this node does not know (yet): most likely the peer
    /// rotated its key and the statement is still on its way on the other link. The link
    /// closes and the deliveries are resent; nothing is lost.
    #[error("a receipt is signed with a key not (yet) known: {0}")]
    UnknownKey(String),
    /// Reading the outbox failed.
    #[error("reading the outbox: {0}")]
    Store(#[from] StoreError),
}

/// The frame each side sends first.
pub fn hello(me: ParticipantCode, software: &str) -> Frame {
    Frame::Hello { version: PROTOCOL_VERSION, participant: me, software: software.into() }
}

/// Checks the peer's first frame: a Hello, at this protocol version, from the participant
/// its TLS key belongs to.
pub fn check_hello(frame: Option<Frame>, peer: ParticipantCode) -> Result<(), LinkError> {
    match frame {
        Some(Frame::Hello { version, participant, .. }) => {
            if version != PROTOCOL_VERSION {
                return Err(LinkError::Version { peer, theirs: version });
            }
            if participant != peer {
                return Err(LinkError::Protocol(format!(
                    "Hello says {participant}, but the TLS key belongs to {peer}"
                )));
            }
            Ok(())
        }
        Some(other) => Err(LinkError::Protocol(format!("expected Hello, got {}", other.name()))),
        None => Err(LinkError::NoHello),
    }
}

/// What [`Outbound::fill`] decided.
#[derive(Debug, Default)]
pub struct Fill {
    /// Deliveries to send, in order.
    pub frames: Vec<Frame>,
    /// Sending was just held (the participant is suspended, and why) or released.
    pub held: Option<String>,
    pub released: bool,
    /// Outbox entries that could not be read and were skipped (position, why).
    pub damaged: Vec<(u64, StoreError)>,
}

/// What a frame from the peer settled, on the dialling side.
#[derive(Debug, Default)]
pub struct Settled {
    /// Every message the frame acknowledged or refused, in flight here or not (a resend
    /// acknowledged again): the daemon notes its own TLS rotation as known to the peer.
    pub ids: Vec<MessageId>,
    /// The command that records the receipts or the refusal, if anything was in flight.
    pub command: Option<Command>,
    /// Receipts among them that were in flight here.
    pub receipts: usize,
    /// A refusal for good of a message in flight here: its code and (printable) detail.
    pub rejected: Option<(MessageId, RejectCode, String)>,
}

/// The dialling side of a peer link: see the module docs.
#[derive(Debug, Clone)]
pub struct Outbound {
    me: ParticipantCode,
    peer: ParticipantCode,
    state: SenderState,
}

impl Outbound {
    pub fn new(me: ParticipantCode, peer: ParticipantCode, window: usize, backoff: Backoff) -> Outbound {
        Outbound { me, peer, state: SenderState::new(window, backoff) }
    }

    /// A connection is up (the Hellos exchanged): everything unacknowledged is sent again,
    /// from the start of the outbox, with the same message ids.
    pub fn connected(&mut self) {
        if !bug!(BUG_NO_RESEND) {
            self.state.connected();
        }
    }

    /// The connection ended. Returns how long to wait before dialling again; `jitter` in
    /// [0, 1) spreads the nodes restarted together.
    pub fn disconnected(&mut self, jitter: f64) -> Duration {
        self.state.disconnected(jitter)
    }

    /// The connection lived long enough to count as healthy: the next failure starts the
    /// backoff afresh.
    pub fn healthy(&mut self) {
        self.state.healthy();
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight()
    }

    pub fn holding(&self) -> bool {
        self.state.holding()
    }

    /// Whether the oldest delivery has waited longer than `timeout` at `now`: the link gives
    /// up on the connection and dials again.
    pub fn overdue(&self, now: Timestamp, timeout: Duration) -> bool {
        self.state.overdue(now, timeout)
    }

    /// Sends durable outbox entries (up to position `durable`) while the window has room,
    /// unless `held` says why the peer's participant is suspended today: then nothing is
    /// sent, and nothing dropped, until it is not.
    pub fn fill<S: Storage + ?Sized>(
        &mut self,
        store: &S,
        durable: u64,
        held: Option<String>,
        now: Timestamp,
    ) -> Result<Fill, StoreError> {
        let state = &mut self.state;
        let mut fill = Fill::default();
        let held = if bug!(BUG_RELEASE_HELD) { None } else { held };
        if let Some(why) = held {
            if state.cursor() < durable && !state.holding() {
                fill.held = Some(why);
            }
            state.hold(true);
            return Ok(fill);
        }
        if state.holding() {
            state.hold(false);
            fill.released = true;
        }
        while state.room() > 0 && state.cursor() < durable {
            let (start, end) = outbox_range(self.peer, state.cursor());
            let entries = store.range(Tree::Outbox, &start, &end, state.room())?;
            if entries.is_empty() {
                // Everything up to `durable` was acknowledged meanwhile.
                state.skip(durable);
                break;
            }
            for (key, value) in entries {
                let oseq = key
                    .get(2..10)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                if oseq > durable {
                    state.skip(durable);
                    break;
                }
                let entry = match decode_record::<OutboxEntry>(Tree::Outbox, &key, &value) {
                    Ok(e) => e,
                    Err(e) => {
                        fill.damaged.push((oseq, e));
                        state.skip(oseq);
                        continue;
                    }
                };
                let id = entry.message_id;
                if state.is_in_flight(&id) {
                    state.skip(oseq);
                    continue;
                }
                state.sent(id, oseq, now);
                fill.frames.push(Frame::Deliver { message_id: id, document: entry.document });
            }
        }
        Ok(fill)
    }

    /// A frame from the peer on this link: a receipt batch (checked against `history`, the
    /// peer's key history), a refusal for good, or a pong. Anything else breaks the
    /// protocol.
    pub fn on_frame(&mut self, frame: Frame, history: &KeyHistory) -> Result<Settled, LinkError> {
        match frame {
            Frame::Receipt { batch, proofs } => self.receipts(batch, proofs, history),
            Frame::Reject { message_id, code, detail } => {
                let mut settled = Settled { ids: vec![message_id], ..Settled::default() };
                if let Some(oseq) = self.state.settled(&message_id) {
                    let detail = printable(&detail);
                    settled.rejected = Some((message_id, code, detail.clone()));
                    settled.command =
                        Some(Command::Rejected { peer: self.peer, message_id, oseq, code, detail });
                }
                Ok(settled)
            }
            Frame::Pong { .. } => Ok(Settled::default()),
            other => {
                Err(LinkError::Protocol(format!("unexpected {} frame from {}", other.name(), self.peer)))
            }
        }
    }

    fn receipts(
        &mut self,
        batch: SignedDocument,
        proofs: Vec<ReceiptProof>,
        history: &KeyHistory,
    ) -> Result<Settled, LinkError> {
        let key = *history
            .signing_key_at(batch.key_id, batch.signed_at)
            .map_err(|e| LinkError::UnknownKey(e.to_string()))?;
        let body = crate::meter::measure(crate::meter::Part::VerifyReceipt, || {
            verify_batch(&batch, &key, self.peer, self.me)
        })
        .map_err(|e| LinkError::Protocol(format!("invalid receipt: {e}")))?;
        let mut settled = Settled::default();
        let mut items = Vec::with_capacity(proofs.len());
        for proof in proofs {
            proof.check(&body).map_err(|e| LinkError::Protocol(format!("invalid receipt: {e}")))?;
            let id = proof.item.message_id;
            settled.ids.push(id);
            // A receipt for a message not in flight on this connection is a duplicate (or for
            // a send of an earlier connection, which this one has sent again and will see
            // acknowledged again): nothing to record.
            let Some(oseq) = self.state.settled(&id) else { continue };
            items.push((id, oseq, MessageReceipt { batch: batch.clone(), proof }));
        }
        settled.receipts = items.len();
        if !items.is_empty() {
            settled.command = Some(Command::Receipts { peer: self.peer, items });
        }
        Ok(settled)
    }
}

/// A batch of deliveries checked on the accepting side.
#[derive(Debug)]
pub struct Checked {
    /// In order, one per delivery: refused before the store saw it (and why), or `None`:
    /// it takes the next of the store's replies to [`Checked::command`].
    pub slots: Vec<Option<(MessageId, Refusal)>>,
    /// The command that stores what passed, if anything did.
    pub command: Option<Command>,
}

/// The frames answering one batch of deliveries.
#[derive(Debug, Default)]
pub struct Answer {
    pub frames: Vec<Frame>,
    /// Deliveries stored now, and resends answered with their original receipt.
    pub received: u64,
    pub duplicates: u64,
    /// Deliveries refused for good, in order (for the log).
    pub refused: Vec<(MessageId, Refusal)>,
    /// Deliveries held back unanswered while the node awaits recovery (see
    /// [`crate::engine::Reply::Held`]): the sender sends them again after its ack timeout.
    pub held: Vec<(MessageId, String)>,
}

/// The receiver's tolerances when checking deliveries (see [`CheckContext`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far ahead of this node's clock a signature may be dated.
    pub clock_tolerance_ms: i64,
    /// How long after a rotation documents signed with the replaced key are still accepted.
    pub retired_key_grace_ms: i64,
}

/// The accepting side of a peer link: see the module docs.
#[derive(Debug, Clone)]
pub struct Inbound {
    me: ParticipantCode,
    peer: ParticipantCode,
    /// The TLS key the peer authenticated with.
    tls_key: [u8; 32],
    /// This link's view of the peer's keys: rotation statements it delivers take effect for
    /// the documents after them at once, before the store has made them durable.
    history: Option<(Fingerprint, KeyHistory)>,
}

impl Inbound {
    pub fn new(me: ParticipantCode, peer: ParticipantCode, tls_key: [u8; 32]) -> Inbound {
        Inbound { me, peer, tls_key, history: None }
    }

    pub fn peer(&self) -> ParticipantCode {
        self.peer
    }

    pub fn tls_key(&self) -> &[u8; 32] {
        &self.tls_key
    }

    /// Judges the link against the trust in force (`grace_ms`: how long a replaced TLS key
    /// stays trusted) and refreshes its view of the peer's keys: the current trust's, unless
    /// this link's own copy extends it (rotations delivered here that the store has not yet
    /// published). A copy that does not extend the current history (a new identity was
    /// enrolled, or the stored history changed otherwise) is dropped for the current one.
    pub fn judge(&mut self, trust: &Trust, now: Timestamp, grace_ms: i64) -> Result<(), Distrust> {
        if bug!(BUG_KEEP_TRUST) && self.history.is_some() {
            return Ok(());
        }
        judge_link(trust, self.peer, &self.tls_key, now, grace_ms)?;
        let current = trust.active(self.peer).ok_or(Distrust::NotEnrolled)?;
        let extends = self.history.as_ref().is_some_and(|(fp, h)| {
            let (mine, theirs) = (h.rotations(), current.history.rotations());
            *fp == current.fingerprint && mine.len() >= theirs.len() && mine[..theirs.len()] == *theirs
        });
        if !extends {
            self.history = Some((current.fingerprint, current.history.clone()));
        }
        Ok(())
    }

    /// Checks a batch of deliveries (after [`Inbound::judge`] passed for it) at `now`, with
    /// the participant registry as it stands, and makes the command that stores what passed,
    /// naming the identity it was checked under so the store can refuse it whole if trust
    /// changed before it commits.
    pub fn receive(
        &mut self,
        now: Timestamp,
        limits: Limits,
        registry: View<'_>,
        trust: &Trust,
        deliveries: Vec<Delivery>,
    ) -> Result<Checked, Distrust> {
        let ctx = CheckContext {
            me: self.me,
            peer: self.peer,
            now,
            clock_tolerance_ms: limits.clock_tolerance_ms,
            retired_key_grace_ms: limits.retired_key_grace_ms,
            registry,
        };
        let Some((_, history)) = self.history.as_mut() else { return Err(Distrust::NotEnrolled) };
        let under = CheckedUnder { root_key: history.root().public_key.to_bytes(), tls_key: self.tls_key };
        // A rotation to a TLS key bound to another participant is refused before it touches
        // this link's copy of the history (the store checks again, atomically).
        let mut early = Vec::with_capacity(deliveries.len());
        let mut to_check = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let refused = tls_key_claimed_elsewhere(trust, self.peer, &d.2);
            early.push((d.0, refused.clone()));
            if refused.is_none() {
                to_check.push(d);
            }
        }
        let mut checked = check_batch(&ctx, history, to_check).into_iter();
        let mut slots = Vec::with_capacity(early.len());
        let mut accepted: Vec<Received> = Vec::new();
        for (id, refused) in early {
            let result = match refused {
                Some(refusal) => Err(refusal),
                None => checked
                    .next()
                    .unwrap_or_else(|| Err(Refusal::new(RejectCode::InvalidDocument, "not checked"))),
            };
            match result {
                Ok(r) => {
                    slots.push(None);
                    accepted.push(r);
                }
                Err(refusal) => slots.push(Some((id, refusal))),
            }
        }
        let command = if accepted.is_empty() {
            None
        } else {
            Some(Command::Deliveries { peer: self.peer, under: Some(under), items: accepted })
        };
        Ok(Checked { slots, command })
    }

    /// The frames answering a batch: `slots` from [`Inbound::receive`], `stored` the store's
    /// replies to its command (empty if it had none). Receipts of one signed batch share
    /// frames of at most `max_items` proofs.
    pub fn answer(slots: Vec<Option<(MessageId, Refusal)>>, stored: Vec<Reply>, max_items: usize) -> Answer {
        let mut stored = stored.into_iter();
        let mut answer = Answer::default();
        let mut pending: Option<(SignedDocument, Vec<ReceiptProof>)> = None;
        let flush = |frames: &mut Vec<Frame>, pending: &mut Option<(SignedDocument, Vec<ReceiptProof>)>| {
            if let Some((batch, proofs)) = pending.take() {
                for chunk in proofs.chunks(max_items.max(1)) {
                    frames.push(Frame::Receipt { batch: batch.clone(), proofs: chunk.to_vec() });
                }
            }
        };
        for slot in slots {
            let reply = match slot {
                Some((message_id, refusal)) => Reply::Reject { message_id, refusal },
                None => match stored.next() {
                    Some(r) => r,
                    None => break,
                },
            };
            match reply {
                Reply::Receipt { receipt, duplicate } => {
                    let MessageReceipt { batch, proof } = *receipt;
                    if duplicate {
                        answer.duplicates += 1;
                    } else {
                        answer.received += 1;
                    }
                    match &mut pending {
                        Some((b, proofs)) if *b == batch => proofs.push(proof),
                        _ => {
                            flush(&mut answer.frames, &mut pending);
                            pending = Some((batch, vec![proof]));
                        }
                    }
                }
                Reply::Held { message_id, detail } => answer.held.push((message_id, detail)),
                Reply::Reject { message_id, refusal } => {
                    flush(&mut answer.frames, &mut pending);
                    answer.frames.push(Frame::reject(message_id, refusal.code, &refusal.detail));
                    answer.refused.push((message_id, refusal));
                }
            }
        }
        flush(&mut answer.frames, &mut pending);
        answer
    }
}

/// A peer's refusal detail as this node keeps and shows it: at most
/// [`MAX_DETAIL_CHARS`](kp_protocol::frame::MAX_DETAIL_CHARS) characters, without control
/// characters or the invisible marks that reorder text on a screen.
fn printable(detail: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    detail.chars().filter(|c| !hidden(*c)).take(kp_protocol::frame::MAX_DETAIL_CHARS).collect()
}

/// How many receipt proofs fit in one frame of at most `max_frame` bytes.
pub fn receipts_per_frame(max_frame: u32) -> usize {
    // A proof item is at most ~400 bytes with a batch of 256 (8 levels); the batch document
    // itself about 200.
    ((max_frame as usize).saturating_sub(1024) / 400).clamp(1, MAX_DELIVERY_BATCH)
}

/// If `doc` is a rotation of `peer` to a TLS key that `trust` binds to another participant,
/// the refusal.
fn tls_key_claimed_elsewhere(trust: &Trust, peer: ParticipantCode, doc: &SignedDocument) -> Option<Refusal> {
    if doc.kind != kp_protocol::DocumentKind::KeyRotation {
        return None;
    }
    let cert = doc.body::<kp_protocol::KeyRotation>().ok()?.new_tls_certificate?;
    let key = kp_keys::tlscert::public_key(&cert).ok()?;
    trust.tls_key_owner(&key, peer).map(|owner| {
        Refusal::new(
            RejectCode::InvalidDocument,
            format!("the new TLS key is already bound to {owner}; a TLS key belongs to one participant"),
        )
    })
}

/// The window and cursor of [`Outbound`], and its backoff.
#[derive(Debug, Clone)]
struct SenderState {
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

    fn hello_from(version: u16, participant: &str) -> Option<Frame> {
        Some(Frame::Hello { version, participant: participant.parse().unwrap(), software: "t".into() })
    }

    #[test]
    fn a_peers_refusal_detail_is_kept_short_and_without_hidden_marks() {
        let detail = format!("bad\u{202E}txt.exe\n\u{200B}{}", "x".repeat(5000));
        let kept = printable(&detail);
        assert!(kept.starts_with("badtxt.exe"), "{kept:?}");
        assert_eq!(kept.chars().count(), kp_protocol::frame::MAX_DETAIL_CHARS);
    }

    #[test]
    fn check_hello_accepts_only_the_tls_key_owner_at_this_version() {
        let ru: ParticipantCode = "RU".parse().unwrap();
        assert!(check_hello(hello_from(PROTOCOL_VERSION, "RU"), ru).is_ok());
        // Another participant than the TLS key's owner: a protocol error naming both.
        match check_hello(hello_from(PROTOCOL_VERSION, "KZ"), ru) {
            Err(LinkError::Protocol(m)) => assert_eq!(m, "Hello says KZ, but the TLS key belongs to RU"),
            other => panic!("{other:?}"),
        }
        // Another version: refused, naming both versions.
        let e = check_hello(hello_from(PROTOCOL_VERSION + 1, "RU"), ru).unwrap_err();
        assert!(matches!(e, LinkError::Version { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{m}");
        assert!(m.contains(&format!("speaks {PROTOCOL_VERSION}")), "{m}");
        // Any other frame first, or nothing.
        match check_hello(Some(Frame::Ping { nonce: 1 }), ru) {
            Err(LinkError::Protocol(m)) => assert!(m.contains("expected Hello"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_hello(None, ru), Err(LinkError::NoHello)));
    }

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

/// The two sides of a link between two engines over in-memory stores, frame by frame: the
/// state machine's decisions without a network.
#[cfg(test)]
mod exchange_tests {
    use std::sync::Arc;

    use kp_keys::{SigningKeyPair, TlsKeyPair};
    use kp_protocol::{CertificateDraft, Timestamp, ValidationContext};

    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::{Engine, Outcome};
    use crate::registry::Registry;
    use crate::signer::Signer;
    use crate::storage::MemStorage;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const IN: ParticipantCode = ParticipantCode::from_static("IN");
    const T0: i64 = 1_795_000_000_000; // 2026-11-18

    struct Node {
        store: MemStorage,
        engine: Engine,
        signer: Arc<Signer>,
        tls: TlsKeyPair,
        bundle: kp_keys::VerifiedBundle,
    }

    fn node(code: ParticipantCode, secret: u8) -> Node {
        let now = Timestamp::from_unix_millis(T0);
        let signing = SigningKeyPair::from_secret_bytes(&[secret; 32]);
        let tls = TlsKeyPair::from_secret_bytes(&[secret + 1; 32]);
        let cert = kp_keys::tlscert::self_signed(&tls, code).unwrap();
        let bundle =
            crate::testkit::bundle(code, &signing, cert, Timestamp::from_unix_millis(T0 - 1000), now);
        let clock = Arc::new(ManualClock::new(now));
        let signer = Arc::new(Signer::new(code, signing, clock));
        let store = MemStorage::new();
        let engine = Engine::load(&store, signer.clone()).unwrap();
        Node { store, engine, signer, tls, bundle }
    }

    impl Node {
        fn apply(&mut self, commands: Vec<Command>) -> crate::engine::Applied {
            let applied = self.engine.apply(&self.store, Timestamp::from_unix_millis(T0), commands).unwrap();
            self.store.flush().unwrap();
            applied
        }

        fn enrol(&mut self, me: ParticipantCode, other: &Node) {
            let b = &other.bundle;
            let now = Timestamp::from_unix_millis(T0);
            let (record, _) =
                crate::enrol::prepare(me, &b.to_armored(), &b.fingerprint.to_string(), None, now).unwrap();
            let applied = self.apply(vec![Command::EnrolPeer {
                record: Box::new(record),
                replace_identity: false,
                officer: None,
            }]);
            assert!(matches!(applied.outcomes[..], [Outcome::Done]), "{:?}", applied.outcomes);
        }

        /// Submits certificates to IN; the outbox position now durable.
        fn submit(&mut self, numbers: &[&str]) -> u64 {
            let today = Timestamp::from_unix_millis(T0).date();
            let registry = Registry::default();
            let ctx = ValidationContext {
                today,
                max_validity_days: Some(60),
                participants: &registry.on(today),
                exporter: Some(RU),
                importer: None,
            };
            let commands = numbers
                .iter()
                .map(|number| {
                    let text = include_str!("../../../protocol/tests/fixtures/certificate.json")
                        .replace("RU-2026-000123", number)
                        .replace("2026-11-28", "2026-11-18")
                        .replace("2027-01-27", "2027-01-10");
                    let cert =
                        CertificateDraft::from_json(&text, &ctx).unwrap().into_certificate(|| unreachable!());
                    let document = self.signer.sign(&cert).expect("the simulation's file key signs");
                    Command::Submit {
                        document,
                        certificate: Box::new(cert),
                        assigned: None,
                        idempotency: None,
                        officer: None,
                    }
                })
                .collect();
            self.apply(commands).queued_up_to[&IN]
        }
    }

    fn ids(frames: &[Frame]) -> Vec<MessageId> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Deliver { message_id, .. } => *message_id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn deliveries(frames: Vec<Frame>) -> Vec<Delivery> {
        frames
            .into_iter()
            .map(|f| match f {
                Frame::Deliver { message_id, document } => (message_id, None, document),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_link_windows_holds_resends_and_settles_by_verified_receipt_batches() {
        let now = Timestamp::from_unix_millis(T0);
        let (mut ru, mut inn) = (node(RU, 1), node(IN, 3));
        inn.enrol(IN, &ru);
        ru.enrol(RU, &inn);
        let durable = ru.submit(&["RU-2026-000001", "RU-2026-000002", "RU-2026-000003"]);
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let mut out = Outbound::new(RU, IN, 2, backoff);
        out.connected();

        // The window: two in flight, the third waits.
        let first = out.fill(&ru.store, durable, None, now).unwrap();
        assert_eq!(first.frames.len(), 2);
        assert!(out.fill(&ru.store, durable, None, now).unwrap().frames.is_empty());

        // Suspended: held (said once), nothing sent, nothing dropped; released later.
        let held = out.fill(&ru.store, durable, Some("IN is suspended".into()), now).unwrap();
        assert_eq!((held.frames.len(), held.held.as_deref()), (0, Some("IN is suspended")));
        let again = out.fill(&ru.store, durable, Some("IN is suspended".into()), now).unwrap();
        assert_eq!((again.frames.len(), again.held), (0, None));
        let released = out.fill(&ru.store, durable, None, now).unwrap();
        assert!(released.released);

        // A reconnect resends what is unacknowledged, with the same message ids.
        out.connected();
        let resent = out.fill(&ru.store, durable, None, now).unwrap();
        assert_eq!(ids(&resent.frames), ids(&first.frames));

        // The importer's side: judged, checked, stored, answered with one signed batch.
        let trust = crate::trust::load(&inn.store).unwrap();
        let mut link = Inbound::new(IN, RU, tls_of(&ru));
        link.judge(&trust, now, 0).unwrap();
        let limits = Limits { clock_tolerance_ms: 300_000, retired_key_grace_ms: 0 };
        let registry = Registry::default();
        let checked =
            link.receive(now, limits, registry.on(now.date()), &trust, deliveries(resent.frames)).unwrap();
        assert_eq!(checked.slots, vec![None, None]);
        let mut applied = inn.apply(vec![checked.command.unwrap()]);
        let Outcome::Delivered(replies) = applied.outcomes.remove(0) else { panic!() };
        // At most one proof a frame: two frames of the same signed batch.
        let answer = Inbound::answer(checked.slots.clone(), replies.clone(), 1);
        assert_eq!((answer.frames.len(), answer.received), (2, 2));
        let answer = Inbound::answer(checked.slots, replies, 256);
        assert_eq!(answer.frames.len(), 1);
        let receipt = answer.frames[0].clone();

        // The exporter verifies the batch against IN's keys and settles both; a duplicate
        // settles nothing; the window has room for the third.
        let in_history = crate::trust::load(&ru.store).unwrap().known(IN).unwrap().history.clone();
        let settled = out.on_frame(receipt.clone(), &in_history).unwrap();
        assert_eq!(settled.receipts, 2);
        assert!(matches!(settled.command, Some(Command::Receipts { ref items, .. }) if items.len() == 2));
        let duplicate = out.on_frame(receipt.clone(), &in_history).unwrap();
        assert_eq!((duplicate.receipts, duplicate.command.is_none(), duplicate.ids.len()), (0, true, 2));
        assert_eq!(out.fill(&ru.store, durable, None, now).unwrap().frames.len(), 1);

        // A receipt batch signed by anyone but IN is a protocol violation, as is a delivery
        // on the link this node dialled.
        let Frame::Receipt { mut batch, proofs } = receipt else { panic!() };
        batch.signature[0] ^= 1;
        let forged = out.on_frame(Frame::Receipt { batch, proofs }, &in_history).unwrap_err();
        assert!(matches!(forged, LinkError::Protocol(ref m) if m.contains("invalid receipt")), "{forged:?}");
        let ping = out.on_frame(Frame::Ping { nonce: 1 }, &in_history).unwrap_err();
        assert!(matches!(ping, LinkError::Protocol(_)), "{ping:?}");
    }

    fn tls_of(n: &Node) -> [u8; 32] {
        n.tls.verifying_key().to_bytes()
    }

    #[test]
    fn a_link_is_judged_by_the_trust_in_force_at_every_batch() {
        let now = Timestamp::from_unix_millis(T0);
        let (ru, mut inn) = (node(RU, 1), node(IN, 3));
        inn.enrol(IN, &ru);
        let trust = crate::trust::load(&inn.store).unwrap();
        // Another key than RU's: not RU's link.
        let mut stranger = Inbound::new(IN, RU, [7; 32]);
        assert!(stranger.judge(&trust, now, 0).is_err());
        let mut link = Inbound::new(IN, RU, tls_of(&ru));
        link.judge(&trust, now, 0).unwrap();
        // RU removed: the open link is judged again and closes.
        inn.apply(vec![Command::RemovePeer { participant: RU, officer: None }]);
        let after = crate::trust::load(&inn.store).unwrap();
        assert_eq!(link.judge(&after, now, 0), Err(Distrust::Removed));
    }
}
