//! kp-node: the kpnode daemon and its command line.
//!
//! The exchange itself (its rules, stored records, link state machine, trust, checks and
//! signatures) is the `kp-exchange` crate, which does no I/O; this crate drives it over
//! sockets, sled and the system clock.
//!
//! # Layout
//! - [`home`]: the node directory (`kpnode init` and what every command reads).
//! - [`store`]: the exchange's storage on sled, the only module that touches sled;
//!   [`actor`]: the thread that owns the engine and does group commits; [`clock`]: the
//!   system clock.
//! - [`node`]: a running node and its task tree; [`link`]: peer connections over [`tls`]
//!   and [`conn`], driving `kp_exchange::link`; [`api`]: the local HTTP API, served by
//!   [`http`]; [`queries`]: views for people; [`participants`]: the registry's operations.
//! - [`stats`], [`chart`], [`seal`]: statistics, their chart, QR seals; [`metrics`]: the
//!   Prometheus metrics; [`os`]: process limits.
//! - [`cli`]: the `kpnode` command line; [`bench`]: `kpnode bench`.

pub mod actor;
pub mod api;
pub mod bench;
pub mod chart;
pub mod cli;
pub mod client;
pub mod clock;
pub mod conn;
pub mod home;
pub mod http;
pub mod link;
pub mod metrics;
pub mod node;
pub mod os;
pub mod participants;
pub mod queries;
pub mod seal;
pub mod state;
pub mod stats;
pub mod store;
pub mod tls;

pub use node::{Node, NodeHandle, NodeOptions};
