//! kp-exchange: the exchange between Kimberley Process participants' nodes, without I/O.
//!
//! Everything here is driven from outside and touches no socket, file, clock or thread: the
//! daemon (`kp-node`) drives it over TLS connections and a sled store, the deterministic
//! simulator ([`sim`], in tests) over an in-memory store and a seeded network. Both run the
//! same code, so what the simulator proves holds for the daemon's exchange logic.
//!
//! # Layout
//! - [`storage`]: the [`Storage`](storage::Storage) trait the rules store through, the key
//!   layout, every stored record, and [`MemStorage`](storage::MemStorage).
//! - [`engine`]: the exchange rules over a store — submit, confirm, void, resolve, inbound
//!   judging, receipts, the hash-chained log, rotations, enrolment; it returns outcomes and
//!   [`Event`](engine::Event)s and does not log.
//! - [`link`]: one peer link as a state machine — the window of deliveries in flight,
//!   resends after a reconnect, holding messages for a suspended participant, receipt
//!   batching, pings — fed frames and ticks, returning frames and engine commands.
//! - [`verify`]: the checks on a delivered document that need no store; [`refusal`]: why
//!   one is refused.
//! - [`trust`]: whom the node trusts now, and the rule a link is judged by; [`enrol`]:
//!   whether a partner's bundle may be enrolled; [`registry`]: participants, their
//!   standing and unions; [`snapshot`]: a value swapped whole.
//! - [`signer`]: every signature the node makes; [`clock`]: time, passed in.
//! - [`audit`]: `log verify`, the offline audit of a node's log; [`meter`]: where the
//!   node's CPU goes, counted at the places that sign, verify, parse, store and encrypt.

pub mod audit;
pub mod clock;
pub mod engine;
pub mod enrol;
pub mod link;
pub mod meter;
pub mod recover;
pub mod refusal;
pub mod registry;
pub mod signer;
#[cfg(test)]
mod sim;
pub mod snapshot;
pub mod storage;
#[cfg(test)]
mod testkit;
pub mod trust;
pub mod verify;
