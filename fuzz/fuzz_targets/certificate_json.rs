//! Certificate JSON as customs systems (or anyone with the API token) submit it.
#![no_main]

use kp_protocol::{AnyParticipant, Body, Certificate, CertificateDraft, ValidationContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = ValidationContext {
        today: "2026-11-28".parse().expect("a date"),
        max_validity_days: Some(60),
        participants: &AnyParticipant,
        exporter: None,
        importer: None,
    };
    match CertificateDraft::from_json_bytes(data, &ctx) {
        Ok(draft) => {
            let cert = draft.into_certificate(|| "RU-2026-000001".parse().expect("a number"));
            assert_eq!(Certificate::from_body_bytes(&cert.to_body_bytes()).as_ref(), Ok(&cert));
        }
        Err(problems) => assert!(!problems.0.is_empty()),
    }
});
