//! A change to the partner nodes this node trusts, signed by this node for its own log.
//!
//! Enrolling a partner decides whose certificates this node will accept: an authority's audit
//! asks who did it, when, and which identity was trusted. Each enrolment, bundle update,
//! identity replacement and removal is therefore recorded as a [`PeerChange`] signed by this
//! node and kept in its hash-chained log, beside the officer who made it. It is never sent to
//! a partner.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::codes::ParticipantCode;
use crate::digest::Digest;
use crate::document::DocumentKind;
use crate::text::Text;

/// What happened to a partner's enrolment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAction {
    /// Trusted from now: first enrolment, or enrolment again after a removal.
    Enrolled,
    /// The same identity, with a newer bundle (later key rotations or other endpoints).
    Updated,
    /// A different identity replaced the enrolled one (`--replace-identity`); the old one is
    /// archived, so what was signed under it still verifies.
    IdentityReplaced,
    /// No longer trusted for new documents; its queued messages stay queued.
    Removed,
}

impl PeerAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerAction::Enrolled => "enrolled",
            PeerAction::Updated => "updated",
            PeerAction::IdentityReplaced => "identity_replaced",
            PeerAction::Removed => "removed",
        }
    }
}

/// One change to a partner's enrolment (see the module's documentation).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct PeerChange {
    pub participant: ParticipantCode,
    pub action: PeerAction,
    /// The identity trusted from now, as its authority reads it out (`7KQ2-9XMA-3F0D-HN5R`);
    /// for a removal, the identity that stops being trusted.
    pub fingerprint: Text,
    /// SHA-256 of the enrolment bundle as stored (binary form): the exact keys and endpoints
    /// trusted. `None` for a removal.
    pub bundle: Option<Digest>,
}

crate::document::bincode_body!(PeerChange, DocumentKind::PeerChange);
