//! The node's two Ed25519 key pairs. They are different types so that the signing key (the
//! authority's validation of documents) can never be used for transport, or the reverse.
//! Both zeroize their secret on drop and print only their public identity in `Debug`.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use kp_protocol::KeyId;
use zeroize::Zeroizing;

/// Why a PEM key could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("not a PKCS#8 Ed25519 private key in PEM form ({0})")]
pub struct PemError(String);

/// The authority's document-signing key.
pub struct SigningKeyPair(SigningKey);

/// The node's TLS key, for mutual TLS with peers.
pub struct TlsKeyPair(SigningKey);

macro_rules! key_pair {
    ($name:ident) => {
        impl $name {
            /// A fresh key from the operating system's random source.
            pub fn generate() -> Self {
                $name(SigningKey::generate(&mut rand_core::OsRng))
            }

            /// A key from its 32 secret bytes: for deterministic tests and the simulation,
            /// never for a node's real keys (use `generate`).
            pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
                $name(SigningKey::from_bytes(secret))
            }

            pub fn from_pkcs8_pem(pem: &str) -> Result<Self, PemError> {
                SigningKey::from_pkcs8_pem(pem).map($name).map_err(|e| PemError(e.to_string()))
            }

            /// PKCS#8 v1 PEM (RFC 8410), exactly as `openssl genpkey -algorithm ed25519`
            /// writes it, so `openssl pkey` reads it: OpenSSL 3.0 refuses the v2 form (with
            /// the public key) that ed25519-dalek writes. Both forms are read. Zeroized when
            /// dropped.
            pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
                // Zeroized when dropped; no public key, so the encoding is version 1.
                let v1 = KeypairBytes { secret_key: self.0.to_bytes(), public_key: None };
                // Invariant: encoding a well-formed Ed25519 key as PKCS#8 cannot fail.
                v1.to_pkcs8_pem(LineEnding::LF).expect("Ed25519 key encodes as PKCS#8")
            }

            /// PKCS#8 DER, for rustls and rcgen. Zeroized when dropped.
            pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
                // Invariant: as in `to_pkcs8_pem`.
                Zeroizing::new(
                    self.0.to_pkcs8_der().expect("Ed25519 key encodes as PKCS#8").as_bytes().to_vec(),
                )
            }

            pub fn verifying_key(&self) -> VerifyingKey {
                self.0.verifying_key()
            }

            pub fn key_id(&self) -> KeyId {
                KeyId::of(&self.0.verifying_key())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.key_id())
            }
        }
    };
}

key_pair!(SigningKeyPair);
key_pair!(TlsKeyPair);

impl SigningKeyPair {
    /// The key for signing documents (`SignedDocument::sign`).
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl TlsKeyPair {
    /// Has this TLS key sign `rotation` (which names it in `new_tls_certificate`), proving to
    /// partners that the rotating node holds it. The only signature a TLS key makes outside TLS.
    pub fn prove_possession(&self, rotation: &mut kp_protocol::KeyRotation) {
        rotation.prove_tls_possession(&self.0);
    }

    /// The Ed25519 signature over `message`: for the self-signed certificate.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.0.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_debug_hides_the_secret() {
        let k = SigningKeyPair::generate();
        let pem = k.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKeyPair::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.verifying_key(), k.verifying_key());
        let secret_hex: String = k.signing_key().to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let dbg = format!("{k:?} {:?}", TlsKeyPair::generate());
        assert!(!dbg.contains(&secret_hex));
        assert!(dbg.starts_with("SigningKeyPair("), "{dbg}");
        assert!(SigningKeyPair::from_pkcs8_pem("garbage").is_err());
    }

    /// RFC 8410's example key, as OpenSSL writes it (PKCS#8 v1, no public key).
    const RFC8410_V1: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";

    #[test]
    fn keys_are_written_as_openssl_writes_them_and_both_versions_are_read() {
        let k = SigningKeyPair::from_pkcs8_pem(RFC8410_V1).unwrap();
        assert_eq!(k.to_pkcs8_pem().as_str(), RFC8410_V1, "written byte for byte as OpenSSL does");
        // A file written before: PKCS#8 v2, with the public key.
        let v2 = k.signing_key().to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_ne!(v2.as_str(), RFC8410_V1);
        let back = TlsKeyPair::from_pkcs8_pem(&v2).unwrap();
        assert_eq!(back.verifying_key(), k.verifying_key());
        // The DER handed to rustls and rcgen (in memory) is unchanged.
        assert_eq!(k.to_pkcs8_der().as_slice(), k.signing_key().to_pkcs8_der().unwrap().as_bytes());
    }
}
