//! The node's self-signed TLS certificate, and the one fact peers take from a certificate:
//! its Ed25519 public key. Trust is pinned to that key, not to names or a CA.

use rcgen::{CertificateParams, DistinguishedName, DnType, PublicKeyData, SignatureAlgorithm};
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
    #[error(
        "the certificate is not one {participant}'s TLS key made for {participant}: it must name \
         {participant} and be signed by its own key (as kpnode makes it), which proves that \
         {participant} holds that key"
    )]
    NotOwn { participant: ParticipantCode },
}

/// A self-signed certificate for `key`, naming the participant. Returns DER.
pub fn self_signed(key: &TlsKeyPair, participant: ParticipantCode) -> Result<Vec<u8>, TlsCertError> {
    self_signed_by(&key.verifying_key(), &|m| Ok(key.sign_raw(m)), participant)
}

/// Signs a message with an Ed25519 key, or says why it could not.
pub type RawSigner<'a> = dyn Fn(&[u8]) -> Result<[u8; 64], String> + 'a;

/// An Ed25519 key rcgen signs the certificate with through `sign`: the key may be in a
/// PKCS#11 token, which signs on request and never gives the private key out.
struct ExternalKey<'a> {
    public: [u8; 32],
    sign: &'a RawSigner<'a>,
    /// What the signer said when it failed (rcgen's error has no room for it).
    failure: std::cell::RefCell<Option<String>>,
}

impl PublicKeyData for ExternalKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for ExternalKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        (self.sign)(msg).map(|s| s.to_vec()).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A self-signed certificate for the Ed25519 key `public`, signed through `sign` (a file key
/// or a key in a token), naming the participant. Returns DER; a signer's failure is returned
/// in its own words.
pub fn self_signed_by(
    public: &ed25519_dalek::VerifyingKey,
    sign: &RawSigner<'_>,
    participant: ParticipantCode,
) -> Result<Vec<u8>, TlsCertError> {
    let key_pair = ExternalKey { public: public.to_bytes(), sign, failure: Default::default() };
    let name = dns_name(participant);
    let mut params = CertificateParams::new(vec![name]).map_err(|e| TlsCertError::Generate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("kpnode {participant}"));
    dn.push(DnType::OrganizationName, "Kimberley Process participant node");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key_pair).map_err(|e| {
        TlsCertError::Generate(key_pair.failure.borrow_mut().take().unwrap_or_else(|| e.to_string()))
    })?;
    let der = cert.der().to_vec();
    // The signer is outside this process's control: check what it signed.
    check_own(&der, participant)
        .map_err(|e| TlsCertError::Generate(format!("the signed certificate does not verify: {e}")))?;
    Ok(der)
}

/// The DNS name [`self_signed`] gives `participant`'s certificate.
fn dns_name(participant: ParticipantCode) -> String {
    format!("{}.kpnode.invalid", participant.as_str().to_ascii_lowercase())
}

/// Checks that `cert_der` names `participant` (as [`self_signed`] does) and is signed by its
/// own key: only whoever holds the key can make such a certificate for `participant`, so it
/// proves possession. A certificate copied from another participant names that one.
pub fn check_own(cert_der: &[u8], participant: ParticipantCode) -> Result<(), TlsCertError> {
    let not_own = || TlsCertError::NotOwn { participant };
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| TlsCertError::Parse(format!("{e:?}")))?;
    let name = rustls_pki_types::ServerName::try_from(dns_name(participant)).map_err(|_| not_own())?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| not_own())?;
    let key = ed25519_key_of_spki(cert.subject_public_key_info().as_ref())?;
    let (tbs, signature) = split_signed(cert_der).ok_or_else(not_own)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| not_own())?;
    key.verify_strict(tbs, &ed25519_dalek::Signature::from_bytes(&signature)).map_err(|_| not_own())
}

/// The DER `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`
/// split into the signed bytes and an Ed25519 signature; `None` for anything else.
fn split_signed(der: &[u8]) -> Option<(&[u8], [u8; 64])> {
    /// One TLV at the start of a buffer: (tag, whole TLV, content, rest).
    type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);
    fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
        let (&tag, rest) = b.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 3 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |a, &d| a << 8 | d as usize), &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let header = b.len() - rest.len();
        Some((tag, &b[..header + len], &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const BIT_STRING: u8 = 0x03;
    const ED25519_ALGORITHM: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
    let (SEQUENCE, _, body, []) = tlv(der)? else { return None };
    let (SEQUENCE, tbs, _, rest) = tlv(body)? else { return None };
    let (SEQUENCE, algorithm, _, rest) = tlv(rest)? else { return None };
    let (BIT_STRING, _, bits, []) = tlv(rest)? else { return None };
    if algorithm != ED25519_ALGORITHM {
        return None;
    }
    let signature = bits.strip_prefix(&[0u8])?.try_into().ok()?;
    Some((tbs, signature))
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

/// The DER SubjectPublicKeyInfo of the Ed25519 key `key` (RFC 8410).
pub fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(key);
    out
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

    /// A key outside the process (a token) signs through a closure: its failure comes back in
    /// its own words, and a wrong signature is caught before the certificate is used.
    #[test]
    fn an_external_signer_makes_the_same_kind_of_certificate_and_its_failures_are_named() {
        let ru = ParticipantCode::from_static("RU");
        let key = TlsKeyPair::generate();
        let der = self_signed_by(&key.verifying_key(), &|m| Ok(key.sign_raw(m)), ru).unwrap();
        check_own(&der, ru).unwrap();
        assert_eq!(public_key(&der).unwrap(), key.verifying_key().to_bytes());
        let e =
            self_signed_by(&key.verifying_key(), &|_| Err("token absent (CKR_TOKEN_NOT_PRESENT)".into()), ru)
                .unwrap_err();
        assert_eq!(e, TlsCertError::Generate("token absent (CKR_TOKEN_NOT_PRESENT)".into()));
        let other = TlsKeyPair::generate();
        let e = self_signed_by(&key.verifying_key(), &|m| Ok(other.sign_raw(m)), ru).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn a_certificate_proves_possession_only_for_the_participant_it_names() {
        let (ru, kz) = (ParticipantCode::from_static("RU"), ParticipantCode::from_static("KZ"));
        let key = TlsKeyPair::generate();
        let der = self_signed(&key, ru).unwrap();
        check_own(&der, ru).unwrap();
        // Someone else's certificate, copied verbatim: it names its owner.
        assert_eq!(check_own(&der, kz), Err(TlsCertError::NotOwn { participant: kz }));
        // A certificate naming RU but not signed by its own key.
        let mut forged = der.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(check_own(&forged, ru), Err(TlsCertError::NotOwn { participant: ru }));
    }
}
