//! The node's operations on behalf of its operator, shared by the API and the offline command
//! line: issuing certificates ([`issuing`]) and the participant registry ([`participants`]).

pub mod issuing;
pub mod participants;
