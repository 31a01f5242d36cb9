//! What the node reports to people and to the KP: trade statistics and partner reconciliation
//! ([`stats`]), their chart ([`chart`]), and certificate seals as QR codes and portable
//! certificates ([`seal`]), and the printable certificate ([`pdf`]).

pub mod chart;
pub mod pdf;
pub mod seal;
pub mod stats;
