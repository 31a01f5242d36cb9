//! kp-keys: the node's keys on disk, enrolment bundles, fingerprints and key history.
//!
//! # Layout
//! - [`backend`]: where a signing key lives (file or token), behind one trait.
//! - [`pkcs11uri`]: RFC 7512 URIs naming a key in a PKCS#11 token.
//! - [`secret`]: the signing key and the TLS key, distinct types, zeroized, never in `Debug`.
//! - [`files`]: atomic 0600 writes in a 0700 directory.
//! - [`tlscert`]: the self-signed TLS certificate (rcgen) and the key inside one.
//! - [`history`]: a participant's keys over time, rebuilt from verified rotations.
//! - [`bundle`]: the signed, armored enrolment bundle; [`fingerprint`]: its short digest.
//! - [`keydir`]: the `keys/` directory of a node, and rotation on disk.

use std::path::{Path, PathBuf};

pub mod backend;
pub mod bundle;
pub mod files;
pub mod fingerprint;
pub mod history;
pub mod keydir;
pub mod pkcs11uri;
pub mod secret;
pub mod tlscert;

pub use backend::{SignError, SigningBackend};
pub use bundle::{Bundle, BundleError, VerifiedBundle};
pub use fingerprint::Fingerprint;
pub use history::{HistoryError, KeyHistory};
pub use keydir::{KeyPlaces, KeyToken, NodeKeys, NodeSigningKey, NodeTlsKey, TokenPlace};
pub use secret::{SigningKeyPair, TlsKeyPair};

/// Why keys could not be created, loaded or rotated. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is readable or writable by other users (mode {mode:04o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path} is damaged: {detail}. Restore it from backup; kpnode never makes a new key in its place"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("{path} {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error("{0} already holds keys")]
    AlreadyExists(PathBuf),
    #[error(transparent)]
    TlsCertificate(#[from] tlscert::TlsCertError),
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The signing key's token refused or failed (absent, wrong PIN, key missing…).
    #[error("{key}: {detail}")]
    Token { key: String, detail: String },
    /// The token could not sign the rotation statement now.
    #[error(transparent)]
    Signing(SignError),
}

impl KeyError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> KeyError {
        KeyError::Io { path: path.to_owned(), source }
    }
}
