//! The node's operations on behalf of its operator, shared by the API and the offline command
//! line: console accounts ([`accounts`]), issuing certificates ([`issuing`]), the participant registry ([`participants`]), and
//! the age of the node's keys ([`keys`]).

pub mod accounts;
pub mod i18n;
pub mod issuing;
pub mod keys;
pub mod participants;
