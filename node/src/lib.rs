//! kp-node: the kpnode daemon and its command line.
//!
//! # Layout
//! - [`home`]: the node directory (`kpnode init` and what every command reads).
//! - [`store`]: the only module that touches sled; [`engine`]: the exchange rules over it,
//!   with no I/O; [`actor`]: the thread that owns the engine and does group commits.
//! - [`verify`]: the checks on a delivered document that need no store; [`sender`]: the
//!   window and backoff of a link, without I/O.
//! - [`node`]: a running node and its task tree; [`link`]: peer connections over [`tls`]
//!   and [`conn`]; [`api`]: the local HTTP API, served by [`http`]; [`queries`]: views for
//!   people.
//! - [`signer`]: every signature this node makes; [`trust`]: whom it trusts now;
//!   [`enrol`]: checking partners' bundles; [`registry`]: participants, their standing and unions;
//!   [`metrics`]; [`clock`]: time, passed in.
//! - [`cli`]: the `kpnode` command line.

pub mod actor;
pub mod api;
pub mod audit;
pub mod bench;
pub mod chart;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod enrol;
pub mod home;
pub mod http;
pub mod link;
pub mod metrics;
pub mod node;
pub mod os;
pub mod participants;
pub mod queries;
pub mod registry;
pub mod seal;
pub mod sender;
pub mod signer;
#[cfg(test)]
mod sim;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod tls;
pub mod trust;
pub mod verify;

pub use node::{Node, NodeHandle, NodeOptions};
