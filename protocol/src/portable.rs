//! The portable signed certificate (`.kpc`): a signed certificate document in ASCII armor,
//! with readable headers that repeat its content. Made by `kpnode cert sign`, checked by
//! `kpnode verify` against the issuer's enrolment bundle.

use crate::armor::{self, ArmorError};
use crate::certificate::Certificate;
use crate::codec::CodecError;
use crate::document::{DocumentError, DocumentKind, SignedDocument};

pub const LABEL: &str = "KIMBERLEY PROCESS CERTIFICATE";

/// Why a `.kpc` file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PortableError {
    #[error("not a signed KP certificate file: {0}")]
    Armor(#[from] ArmorError),
    /// The signed bytes do not decode: the file was changed (by hand, or by a program that
    /// "fixed" it) or damaged in transit. Never a hint to edit it: it is signed.
    #[error(
        "the file was changed or damaged after it was signed (its signed content does not decode: {0}); \
ask the issuer for an untouched copy"
    )]
    Decode(#[from] CodecError),
    #[error("the file holds a {0} document, not a certificate")]
    NotACertificate(DocumentKind),
    #[error(transparent)]
    Document(#[from] DocumentError),
}

/// Armors a signed certificate.
pub fn to_armored(doc: &SignedDocument, cert: &Certificate) -> String {
    let c = &cert.content;
    let headers = [
        ("Number", cert.number.to_string()),
        ("Exporting-Participant", c.exporting_participant.to_string()),
        ("Importing-Participant", c.importing_participant.to_string()),
        ("Issued-On", c.issued_on.to_string()),
        ("Expires-On", c.expires_on.to_string()),
        ("Signed-By", format!("{} key {}", doc.signer, doc.key_id)),
        ("Signed-At", doc.signed_at.to_string()),
        ("Message-Id", doc.message_id().to_string()),
    ];
    armor::armor(LABEL, &headers, &doc.to_bytes())
}

/// Reads a `.kpc` file: exact armor of a signed certificate document. The signature is not
/// checked here (that needs the issuer's keys).
pub fn from_armored(text: &str) -> Result<(SignedDocument, Certificate), PortableError> {
    let bytes = armor::dearmor(text, LABEL)?;
    let doc = SignedDocument::from_bytes(&bytes)?;
    if doc.kind != DocumentKind::Certificate {
        return Err(PortableError::NotACertificate(doc.kind));
    }
    let cert: Certificate = doc.body().map_err(|e| match e {
        DocumentError::Body { error, .. } => PortableError::Decode(error),
        other => PortableError::Document(other),
    })?;
    armor::check_canonical(text, &to_armored(&doc, &cert))?;
    Ok((doc, cert))
}
