//! Enrolling a partner: checking its bundle and the fingerprint the operator was read, and
//! turning them into a peer record. Shared by the API (daemon running) and the offline path.

use kp_keys::{Fingerprint, VerifiedBundle};
use kp_protocol::{ParticipantCode, Timestamp};

use crate::store::PeerRecord;

/// Why a bundle was not enrolled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrolError {
    #[error("the bundle is not valid: {0}")]
    Bundle(String),
    #[error("{0}")]
    Fingerprint(String),
    #[error(
        "fingerprint mismatch: the bundle's fingerprint is {actual}, but you were given {given}. Do not \
         enrol it; ask {participant}'s operator to read theirs again from `kpnode peer export`"
    )]
    Mismatch { participant: ParticipantCode, actual: String, given: String },
    #[error("the bundle is this node's own ({0}); enrol the partner's bundle instead")]
    Own(ParticipantCode),
    #[error("endpoint {0:?} is not host:port")]
    Endpoint(String),
}

/// Checks `bundle_text` against `fingerprint` and makes the record to store. `existing` is
/// the record of a previous enrolment of the same participant, if any.
pub fn prepare(
    me: ParticipantCode,
    bundle_text: &str,
    fingerprint: &str,
    endpoints: Option<Vec<String>>,
    existing: Option<PeerRecord>,
    now: Timestamp,
) -> Result<(PeerRecord, VerifiedBundle), EnrolError> {
    let bundle = VerifiedBundle::from_armored(bundle_text).map_err(|e| EnrolError::Bundle(e.to_string()))?;
    let given: Fingerprint =
        fingerprint.parse().map_err(|e: kp_keys::fingerprint::FingerprintParseError| {
            EnrolError::Fingerprint(format!("--fingerprint {fingerprint:?}: {e}"))
        })?;
    let participant = bundle.bundle.participant;
    if given != bundle.fingerprint {
        return Err(EnrolError::Mismatch {
            participant,
            actual: bundle.fingerprint.to_string(),
            given: given.to_string(),
        });
    }
    if participant == me {
        return Err(EnrolError::Own(me));
    }
    let endpoints = match endpoints {
        Some(list) if !list.is_empty() => {
            for e in &list {
                let ok = e
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
                if !ok {
                    return Err(EnrolError::Endpoint(e.clone()));
                }
            }
            list
        }
        _ => bundle.bundle.endpoints.clone(),
    };
    // Rotations received on the wire since the earlier enrolment still apply if the identity
    // is the same; a new identity (a fresh `kpnode init` after a compromise) starts afresh.
    let rotations = match existing {
        Some(old) => match kp_keys::VerifiedBundle::from_bytes(&old.bundle) {
            Ok(b) if b.fingerprint == bundle.fingerprint => old.rotations,
            Ok(_) => {
                tracing::warn!(peer = %participant, "the peer's identity changed (new fingerprint); its earlier keys are no longer trusted");
                Vec::new()
            }
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    let record = PeerRecord {
        participant,
        bundle: bundle.to_bytes().to_vec(),
        rotations,
        endpoints,
        enrolled_at: now,
        removed_at: None,
    };
    // The record must build trust exactly as the node will.
    crate::trust::PeerTrust::from_record(&record).map_err(|e| EnrolError::Bundle(e.to_string()))?;
    Ok((record, bundle))
}
