//! The node's network below the peer link: mutual TLS with pinned keys ([`tls`]) and frames
//! over a byte stream ([`conn`]). The link itself (`crate::link`) drives `kp_exchange::link`
//! over them.

pub mod conn;
pub mod metered;
pub mod port;
pub mod tls;
