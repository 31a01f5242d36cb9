//! The certificate seal: the issuing authority's compact signed attestation of one signed
//! certificate, small enough for a QR code on the shipment's paperwork. It names the
//! certificate (number, parties, dates, totals) and commits to the exact signed certificate
//! by its message id; a border post checks it offline against the issuer's enrolment bundle
//! and key history, with or without the `.kpc` file.
//!
//! QR text: `KP1:` followed by the base45 (RFC 9285) encoding of the signed seal document.
//! Base45 uses exactly the QR code's alphanumeric characters, so the code stays small.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::certificate::Certificate;
use crate::codec::CodecError;
use crate::codes::{CertificateNumber, ParticipantCode};
use crate::date::Date;
use crate::digest::MessageId;
use crate::document::{DocumentError, DocumentKind, SignedDocument};

/// The prefix of a seal's QR text, naming its version.
pub const QR_PREFIX: &str = "KP1:";
/// The longest QR text accepted (a version 40 QR code holds 4,296 alphanumeric characters).
pub const MAX_QR_TEXT: usize = 4296;

/// What the seal attests.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, Serialize)]
pub struct CertificateSeal {
    pub number: CertificateNumber,
    /// The message id of the signed certificate: SHA-256 of its signed document.
    pub certificate_id: MessageId,
    pub exporting_participant: ParticipantCode,
    pub importing_participant: ParticipantCode,
    pub issued_on: Date,
    pub expires_on: Date,
    pub parcels: u32,
    /// Total carats, in hundredths.
    pub carats: u64,
    /// Total value in US cents.
    pub value_usd: u64,
}

crate::document::bincode_body!(CertificateSeal, DocumentKind::CertificateSeal);

impl CertificateSeal {
    /// The seal of a signed certificate.
    pub fn of(doc: &SignedDocument, cert: &Certificate) -> CertificateSeal {
        let c = &cert.content;
        CertificateSeal {
            number: cert.number.clone(),
            certificate_id: doc.message_id(),
            exporting_participant: c.exporting_participant,
            importing_participant: c.importing_participant,
            issued_on: c.issued_on,
            expires_on: c.expires_on,
            parcels: cert.parcel_count() as u32,
            carats: cert.total_carats(),
            value_usd: cert.total_value_usd(),
        }
    }
}

/// Why QR text is not a seal.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum SealError {
    #[error(
        "the QR code does not hold a kpnode certificate seal (its text does not start with {QR_PREFIX})"
    )]
    NotASeal,
    #[error("the QR text is {0} characters long; a seal is far shorter")]
    TooLong(usize),
    #[error("the QR text is not valid base45: {0}")]
    Base45(String),
    #[error("the seal is damaged: {0}")]
    Decode(#[from] CodecError),
    #[error("the QR code holds a {0} document, not a certificate seal")]
    WrongKind(DocumentKind),
    #[error(transparent)]
    Document(#[from] DocumentError),
}

/// The QR text of a signed seal.
pub fn to_qr_text(doc: &SignedDocument) -> String {
    format!("{QR_PREFIX}{}", base45::encode(doc.to_bytes()))
}

/// Reads QR text: the signed seal and what it says. The signature is not checked here.
pub fn from_qr_text(text: &str) -> Result<(SignedDocument, CertificateSeal), SealError> {
    let text = text.trim();
    if text.len() > MAX_QR_TEXT {
        return Err(SealError::TooLong(text.len()));
    }
    let data = text.strip_prefix(QR_PREFIX).ok_or(SealError::NotASeal)?;
    let bytes = base45::decode(data).map_err(|e| SealError::Base45(e.to_string()))?;
    let doc = SignedDocument::from_bytes(&bytes)?;
    if doc.kind != DocumentKind::CertificateSeal {
        return Err(SealError::WrongKind(doc.kind));
    }
    let seal: CertificateSeal = doc.body()?;
    Ok((doc, seal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn qr_text_round_trips_and_refuses_other_text() {
        let seal = CertificateSeal {
            number: "RU-2026-000123".parse().unwrap(),
            certificate_id: MessageId::of(b"certificate"),
            exporting_participant: "RU".parse().unwrap(),
            importing_participant: "IN".parse().unwrap(),
            issued_on: "2026-11-28".parse().unwrap(),
            expires_on: "2027-01-27".parse().unwrap(),
            parcels: 2,
            carats: 183_035,
            value_usd: 424_650_000,
        };
        let key = SigningKey::from_bytes(&[5; 32]);
        let doc =
            SignedDocument::sign(&seal, "RU".parse().unwrap(), &key, crate::Timestamp::from_unix_millis(1));
        let text = to_qr_text(&doc);
        assert!(text.len() < 400, "{} characters", text.len());
        assert!(text.chars().all(|c| "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(c)));
        assert_eq!(from_qr_text(&text).unwrap(), (doc.clone(), seal));
        assert_eq!(from_qr_text("https://example.org"), Err(SealError::NotASeal));
        assert!(matches!(from_qr_text("KP1:!!"), Err(SealError::Base45(_))));
        assert!(matches!(from_qr_text(&"KP1:A".repeat(2000)), Err(SealError::TooLong(_))));
        assert!(from_qr_text("KP1:").is_err());
    }

    #[test]
    fn damaged_qr_text_is_described_in_words_not_debug_text() {
        let errors = [from_qr_text("KP1:a~b").unwrap_err(), from_qr_text("KP1:00000000").unwrap_err()];
        for e in errors {
            let text = e.to_string();
            assert!(
                !text.contains("DecodeError") && !text.contains("OtherString") && !text.contains("{"),
                "{text}"
            );
        }
    }
}
