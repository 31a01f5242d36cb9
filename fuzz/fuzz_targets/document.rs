//! Signed documents, and every body kind they may claim to hold.
#![no_main]

use kp_protocol::SignedDocument;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = SignedDocument::from_bytes(data) {
        assert_eq!(SignedDocument::from_bytes(&doc.to_bytes()).as_ref(), Ok(&doc));
        let _ = doc.body::<kp_protocol::Certificate>();
        let _ = doc.body::<kp_protocol::ImportConfirmation>();
        let _ = doc.body::<kp_protocol::Void>();
        let _ = doc.body::<kp_protocol::KeyRotation>();
        let _ = doc.body::<kp_protocol::ReceiptBatch>();
        let _ = doc.body::<kp_protocol::ParticipantList>();
        let _ = doc.body::<kp_protocol::RegistryChange>();
        let _ = doc.body::<kp_protocol::seal::CertificateSeal>();
        let _ = doc.signing_message();
    }
});
