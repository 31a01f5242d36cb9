//! The node's self-signed TLS certificate, and the one fact peers take from a certificate:
//! its Ed25519 public key. Trust is pinned to that key, not to names or a CA.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;

use crate::secret::TlsKeyPair;
use kp_protocol::ParticipantCode;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why a TLS certificate is not usable.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsCertError {
    #[error("the TLS certificate could not be made: {0}")]
    Generate(String),
    #[error("not a parsable X.509 certificate: {0}")]
    Parse(String),
    #[error("the certificate's key is not an Ed25519 key")]
    NotEd25519,
}

/// A self-signed certificate for `key`, naming the participant. Returns DER.
pub fn self_signed(key: &TlsKeyPair, participant: ParticipantCode) -> Result<Vec<u8>, TlsCertError> {
    let der = key.to_pkcs8_der();
    let key_pair = KeyPair::try_from(der.as_slice()).map_err(|e| TlsCertError::Generate(e.to_string()))?;
    let name = format!("{}.kpnode.invalid", participant.as_str().to_ascii_lowercase());
    let mut params = CertificateParams::new(vec![name]).map_err(|e| TlsCertError::Generate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("kpnode {participant}"));
    dn.push(DnType::OrganizationName, "Kimberley Process participant node");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key_pair).map_err(|e| TlsCertError::Generate(e.to_string()))?;
    Ok(cert.der().to_vec())
}

/// The certificate's SubjectPublicKeyInfo, parsed by webpki (the same parser rustls uses).
pub fn spki(cert_der: &[u8]) -> Result<Vec<u8>, TlsCertError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| TlsCertError::Parse(format!("{e:?}")))?;
    Ok(cert.subject_public_key_info().as_ref().to_vec())
}

/// The Ed25519 public key of a certificate.
pub fn public_key(cert_der: &[u8]) -> Result<[u8; 32], TlsCertError> {
    ed25519_key_of_spki(&spki(cert_der)?)
}

/// The Ed25519 key inside an SPKI, or an error if it is any other kind of key.
pub fn ed25519_key_of_spki(spki: &[u8]) -> Result<[u8; 32], TlsCertError> {
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(key);
            Ok(out)
        }
        _ => Err(TlsCertError::NotEd25519),
    }
}

/// PEM text of a certificate, for `openssl x509 -in tls.cert.pem -text`.
pub fn to_pem(cert_der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert_der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Invariant: base64 is ASCII.
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The DER inside a PEM certificate.
pub fn from_pem(pem: &str) -> Result<Vec<u8>, TlsCertError> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END CERTIFICATE-----")
        .map(str::trim)
        .collect();
    if body.is_empty() {
        return Err(TlsCertError::Parse("no CERTIFICATE block in the PEM text".into()));
    }
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| TlsCertError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_tls_key() {
        let key = TlsKeyPair::generate();
        let der = self_signed(&key, ParticipantCode::from_static("RU")).unwrap();
        assert_eq!(public_key(&der).unwrap(), key.verifying_key().to_bytes());
        assert_eq!(from_pem(&to_pem(&der)).unwrap(), der);
        assert!(public_key(b"not a certificate").is_err());
    }
}
