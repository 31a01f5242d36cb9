//! kp-node: the kpnode daemon and its command line.
//!
//! The exchange itself (its rules, stored records, link state machine, trust, checks and
//! signatures) is the `kp-exchange` crate, which does no I/O; this crate drives it over
//! sockets, sled and the system clock.
//!
//! # Layout
//! Dependencies point one way, from the top of this list to the bottom (the `layering` test
//! in `tests/` fails on an import cycle):
//! - [`cli`]: the `kpnode` command line; [`bench`](mod@bench): `kpnode bench`; [`client`]: the HTTP
//!   client of the local API, which both use.
//! - [`node`]: the composition root: starts a node (store, actor, keys, trust, listeners) and
//!   its task tree, and is the only module that starts the peer links and the API; stops it in
//!   a written-down order.
//! - [`api`]: the local HTTP API: router, bearer-token check, error answers, one file per
//!   OpenAPI tag, and [`api::http`], the server with its limits. [`console`]: the browser
//!   console on the same listener (sessions, pages), a thin view over the API's functions.
//! - [`link`]: the peer links (accept and dial loops, one task per connection), driving
//!   `kp_exchange::link` over [`net`]: mutual TLS with pinned keys ([`net::tls`]) and frames
//!   ([`net::conn`]).
//! - [`backup`]: backup files (`kpnode backup`, `kpnode restore`): their format, writing,
//!   and restoring with every check.
//! - [`service`]: operations for the operator, shared by the API and the offline commands:
//!   issuing certificates ([`service::issuing`]), the participant registry
//!   ([`service::participants`]) and the age of the node's keys ([`service::keys`]).
//! - [`report`]: statistics and reconciliation ([`report::stats`]), their chart
//!   ([`report::chart`]), QR seals and `.kpc` files ([`report::seal`]); [`queries`]: views
//!   of the store for people.
//! - [`state`]: what a running node's tasks share ([`state::Shared`]), its table of peer
//!   links, and loading the trust and registry snapshots.
//! - [`actor`]: the thread that owns the engine and does group commits; [`store`]: the
//!   exchange's storage on sled, the only module that touches sled; [`home`]: the node
//!   directory (`kpnode init` and what every command reads); [`hsm`]: the signing key in a
//!   PKCS#11 token; [`metrics`]: the Prometheus
//!   metrics; [`clock`]: the system clock; [`os`]: process limits; [`systemd`]: the systemd
//!   notify protocol.

pub mod actor;
pub mod api;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod console;
pub mod home;
pub mod hsm;
pub mod link;
pub mod metrics;
pub mod net;
pub mod node;
pub mod os;
pub mod queries;
pub mod recover;
pub mod report;
pub mod service;
pub mod state;
pub mod store;
pub mod systemd;

pub use node::{Node, NodeHandle, NodeOptions};
