//! kp-node: the kpnode daemon and its command line.
//!
//! # Layout
//! - [`home`]: the node directory (`kpnode init` and what every command reads).
//! - [`store`]: the only module that touches sled; [`engine`]: the exchange rules over it,
//!   with no I/O; [`verify`]: the checks on a delivered document that need no store.
//! - [`signer`]: every signature this node makes; [`trust`]: whom it trusts now;
//!   [`participants`]: the participant list; [`clock`]: time, passed in.
//! - [`cli`]: the `kpnode` command line.

pub mod cli;
pub mod clock;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod home;
pub mod participants;
pub mod signer;
pub mod store;
pub mod trust;
pub mod verify;
