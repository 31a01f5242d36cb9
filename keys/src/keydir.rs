//! The node's `keys/` directory:
//!
//! | file | mode | holds |
//! |---|---|---|
//! | `signing.key.pem` | 0600 | the current signing key, PKCS#8 PEM |
//! | `tls.key.pem` | 0600 | the current TLS key, PKCS#8 PEM |
//! | `tls.cert.pem` | 0644 | the self-signed certificate of the TLS key |
//! | `history.bin` | 0600 | the root public key and every rotation statement |
//! | `tls.previous.key.pem`, `tls.previous.cert.pem` | 0600, 0644 | the TLS key before the last TLS rotation, still presented to peers that have not yet acknowledged the rotation |
//! | `tls.previous.place` | 0644 | with the previous TLS key in a token: its URI (public), so that it is found after a rotation into another URI |
//!
//! With the signing key in a PKCS#11 token ([`KeyToken`]) there is no `signing.key.pem`: the
//! history names the current key's public half and the token holds its private half, never
//! giving it out; a rotation makes the new key in the token. The same holds for the TLS key
//! in a token: no `tls.key.pem` or `tls.previous.key.pem`, only the (public) certificates.
//!
//! `openssl pkey -in keys/signing.key.pem -text` and `openssl x509 -in keys/tls.cert.pem
//! -text` show them. The history is the commit point of a rotation: new key files are
//! written as `*.next` first, then the history, then the `.next` files are renamed into
//! place; on load an interrupted rotation is finished, never guessed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bincode::{Decode, Encode};
use kp_protocol::{codec, ParticipantCode, SignedDocument, Text, Timestamp};

use crate::backend::SigningBackend;
use crate::bundle::{Bundle, BundleError, VerifiedBundle, BUNDLE_FORMAT};
use crate::files::{ensure_private_dir, read_public, read_secret, write_atomic};
use crate::fingerprint::Fingerprint;
use crate::history::KeyHistory;
use crate::secret::{SigningKeyPair, TlsKeyPair};
use crate::tlscert;
use crate::KeyError;

const SIGNING: &str = "signing.key.pem";
const TLS_KEY: &str = "tls.key.pem";
const TLS_CERT: &str = "tls.cert.pem";
const HISTORY: &str = "history.bin";
const TLS_PREVIOUS_KEY: &str = "tls.previous.key.pem";
const TLS_PREVIOUS_CERT: &str = "tls.previous.cert.pem";
/// Where the previous TLS key is when it is in a token (its URI): a rotation into another
/// URI leaves it under the old one, which node.toml no longer names.
const TLS_PREVIOUS_PLACE: &str = "tls.previous.place";

#[derive(Encode, Decode)]
struct HistoryFile {
    participant: ParticipantCode,
    root_key: [u8; 32],
    root_created_at: Timestamp,
    root_tls_certificate: Vec<u8>,
    rotations: Vec<SignedDocument>,
}

/// A PKCS#11 token (or any device) that holds signing keys and signs with them, never
/// giving a private key out. Implemented by kp-node, which loads the vendor's module.
pub trait KeyToken: Send + Sync + std::fmt::Debug {
    /// Opens the token's key pair whose public key is `public`.
    fn open(&self, public: &ed25519_dalek::VerifyingKey) -> Result<Arc<dyn SigningBackend>, KeyError>;
    /// Makes a new Ed25519 key pair inside the token (not extractable, sensitive) and opens it.
    fn generate(&self) -> Result<Arc<dyn SigningBackend>, KeyError>;
    /// Where this handle finds and makes keys (a `pkcs11:` URI), as `tls.previous.place`
    /// records it.
    fn place(&self) -> String;
    /// A handle on `place` (recorded by [`KeyToken::place`]), with the same module and PIN.
    fn elsewhere(&self, place: &str) -> Result<Arc<dyn KeyToken>, KeyError>;
}

/// The node's current signing key: a file this process read, or a key in a token.
#[derive(Debug, Clone)]
pub enum NodeSigningKey {
    File(Arc<SigningKeyPair>),
    Token(Arc<dyn SigningBackend>),
}

impl NodeSigningKey {
    /// The key, for the signer.
    pub fn backend(&self) -> Arc<dyn SigningBackend> {
        match self {
            NodeSigningKey::File(k) => k.clone(),
            NodeSigningKey::Token(k) => k.clone(),
        }
    }

    /// The file key, for tests and tools that craft signatures by hand; `None` for a token's.
    pub fn file(&self) -> Option<&SigningKeyPair> {
        match self {
            NodeSigningKey::File(k) => Some(k),
            NodeSigningKey::Token(_) => None,
        }
    }

    pub fn key_id(&self) -> kp_protocol::KeyId {
        self.backend().key_id()
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.backend().verifying_key()
    }
}

/// The node's TLS key: a file this process read, or a key in a token. Kept apart from
/// [`NodeSigningKey`] so that neither can stand in for the other.
#[derive(Debug, Clone)]
pub enum NodeTlsKey {
    File(Arc<TlsKeyPair>),
    Token(Arc<dyn SigningBackend>),
}

impl NodeTlsKey {
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        match self {
            NodeTlsKey::File(k) => k.verifying_key(),
            NodeTlsKey::Token(k) => k.verifying_key(),
        }
    }

    /// The file key (for rustls, which loads it from PKCS#8); `None` for a token's.
    pub fn file(&self) -> Option<&TlsKeyPair> {
        match self {
            NodeTlsKey::File(k) => Some(k),
            NodeTlsKey::Token(_) => None,
        }
    }

    /// The Ed25519 signature over `message` (a TLS handshake's, a certificate's, a rotation's
    /// possession proof).
    pub fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], crate::SignError> {
        match self {
            NodeTlsKey::File(k) => Ok(k.sign_raw(message)),
            NodeTlsKey::Token(k) => k.sign_message(message),
        }
    }

    /// Where the key is, for messages.
    pub fn location(&self) -> String {
        match self {
            NodeTlsKey::File(_) => format!("keys/{TLS_KEY}"),
            NodeTlsKey::Token(k) => k.location(),
        }
    }

    /// Has this key sign `rotation` (which names it in `new_tls_certificate`), proving to
    /// partners that the rotating node holds it.
    pub fn prove_possession(&self, rotation: &mut kp_protocol::KeyRotation) -> Result<(), crate::SignError> {
        rotation.tls_possession = Some(self.sign_message(&rotation.tls_possession_message())?);
        Ok(())
    }

    /// A self-signed certificate for this key naming `participant`.
    pub fn self_signed(&self, participant: ParticipantCode) -> Result<Vec<u8>, KeyError> {
        match self {
            NodeTlsKey::File(k) => Ok(tlscert::self_signed(k, participant)?),
            NodeTlsKey::Token(k) => tlscert::self_signed_by(
                &k.verifying_key(),
                &|m| k.sign_message(m).map_err(|e| e.to_string()),
                participant,
            )
            .map_err(KeyError::from),
        }
    }
}

/// Where `create_in` puts a key: in `token`, adopting `existing` (a pair already there) if
/// given, or making one. `None` for a key: a file.
#[derive(Debug, Clone, Default)]
pub struct KeyPlaces {
    pub signing: Option<TokenPlace>,
    pub tls: Option<TokenPlace>,
}

/// A token and, optionally, the key pair in it to adopt.
#[derive(Debug, Clone)]
pub struct TokenPlace {
    pub token: Arc<dyn KeyToken>,
    pub existing: Option<Arc<dyn SigningBackend>>,
}

/// The node's keys, loaded and checked against each other.
#[derive(Debug)]
pub struct NodeKeys {
    pub signing: NodeSigningKey,
    pub tls: NodeTlsKey,
    pub tls_certificate: Vec<u8>,
    pub history: KeyHistory,
    /// The TLS key and certificate before the last TLS rotation, if kept.
    pub previous_tls: Option<(NodeTlsKey, Vec<u8>)>,
    /// What went wrong without stopping the node (kp-keys does not log; the node drains and
    /// logs these after loading and after a rotation): a previous TLS key the token could not
    /// give, a key file a committed rotation could not move or remove.
    pub problems: Vec<String>,
    dir: PathBuf,
    /// Where new signing keys are made; `None`: files.
    token: Option<Arc<dyn KeyToken>>,
    /// Where new TLS keys are made; `None`: files.
    tls_token: Option<Arc<dyn KeyToken>>,
}

impl NodeKeys {
    /// Creates fresh keys in `dir` (which must not hold keys yet).
    pub fn create(dir: &Path, participant: ParticipantCode, now: Timestamp) -> Result<NodeKeys, KeyError> {
        Self::create_in(dir, participant, now, KeyPlaces::default())
    }

    /// Creates fresh keys in `dir`, each key in its token when `places` names one (adopting
    /// the pair named there, or making one), in a file otherwise.
    pub fn create_in(
        dir: &Path,
        participant: ParticipantCode,
        now: Timestamp,
        places: KeyPlaces,
    ) -> Result<NodeKeys, KeyError> {
        if dir.join(HISTORY).exists() || dir.join(SIGNING).exists() {
            return Err(KeyError::AlreadyExists(dir.to_owned()));
        }
        ensure_private_dir(dir)?;
        let signing = match &places.signing {
            Some(TokenPlace { existing: Some(k), .. }) => NodeSigningKey::Token(k.clone()),
            Some(TokenPlace { token, existing: None }) => NodeSigningKey::Token(token.generate()?),
            None => NodeSigningKey::File(Arc::new(SigningKeyPair::generate())),
        };
        let tls = match &places.tls {
            Some(TokenPlace { existing: Some(k), .. }) => NodeTlsKey::Token(k.clone()),
            Some(TokenPlace { token, existing: None }) => NodeTlsKey::Token(token.generate()?),
            None => NodeTlsKey::File(Arc::new(TlsKeyPair::generate())),
        };
        if signing.verifying_key() == tls.verifying_key() {
            return Err(KeyError::Mismatch {
                path: dir.to_owned(),
                detail: "would use one key pair as both the signing key and the TLS key; give each its own object= in the token".into(),
            });
        }
        let tls_certificate = tls.self_signed(participant)?;
        let root_key = signing.verifying_key().to_bytes();
        let history = KeyHistory::genesis(participant, &root_key, now, tls_certificate.clone())?;
        if let NodeSigningKey::File(k) = &signing {
            write_atomic(&dir.join(SIGNING), k.to_pkcs8_pem().as_bytes(), 0o600)?;
        }
        if let NodeTlsKey::File(k) = &tls {
            write_atomic(&dir.join(TLS_KEY), k.to_pkcs8_pem().as_bytes(), 0o600)?;
        }
        write_atomic(&dir.join(TLS_CERT), tlscert::to_pem(&tls_certificate).as_bytes(), 0o644)?;
        let file = HistoryFile {
            participant,
            root_key,
            root_created_at: now,
            root_tls_certificate: tls_certificate.clone(),
            rotations: Vec::new(),
        };
        write_atomic(&dir.join(HISTORY), &seal_history(&file), 0o600)?;
        Ok(NodeKeys {
            signing,
            tls,
            tls_certificate,
            history,
            previous_tls: None,
            problems: Vec::new(),
            dir: dir.to_owned(),
            token: places.signing.map(|p| p.token),
            tls_token: places.tls.map(|p| p.token),
        })
    }

    /// Loads the keys in `dir`, finishing an interrupted rotation and checking that the key
    /// files are the ones the history names. A missing or damaged file is an error naming
    /// it: a key is never silently regenerated.
    pub fn load(dir: &Path) -> Result<NodeKeys, KeyError> {
        Self::load_in(dir, None, None)
    }

    /// Loads the keys in `dir`, the signing key from `token` and the TLS key from
    /// `tls_token` when given (the key pair whose public key the history names as current).
    pub fn load_in(
        dir: &Path,
        token: Option<Arc<dyn KeyToken>>,
        tls_token: Option<Arc<dyn KeyToken>>,
    ) -> Result<NodeKeys, KeyError> {
        let history_path = dir.join(HISTORY);
        let file = open_history(&history_path)?;
        // This node's own statements: they load whatever bounds a later version sets.
        let history = KeyHistory::from_chain_held(
            file.participant,
            &file.root_key,
            file.root_created_at,
            file.root_tls_certificate,
            &file.rotations,
        )
        .map_err(|e| KeyError::Damaged { path: history_path.clone(), detail: e.to_string() })?;

        finish_rotation(dir, SIGNING)?;
        finish_rotation(dir, TLS_KEY)?;
        finish_rotation(dir, TLS_CERT)?;

        let signing = match &token {
            Some(t) => NodeSigningKey::Token(t.open(&history.current_signing().public_key)?),
            None => {
                NodeSigningKey::File(Arc::new(load_pem(&dir.join(SIGNING), SigningKeyPair::from_pkcs8_pem)?))
            }
        };
        let tls = match &tls_token {
            Some(t) => {
                let public = ed25519_dalek::VerifyingKey::from_bytes(&history.current_tls().public_key)
                    .map_err(|e| KeyError::Damaged { path: history_path.clone(), detail: e.to_string() })?;
                NodeTlsKey::Token(t.open(&public)?)
            }
            None => NodeTlsKey::File(Arc::new(load_pem(&dir.join(TLS_KEY), TlsKeyPair::from_pkcs8_pem)?)),
        };
        let cert_path = dir.join(TLS_CERT);
        let cert_text = String::from_utf8_lossy(&read_public(&cert_path)?).into_owned();
        let tls_certificate = tlscert::from_pem(&cert_text)
            .map_err(|e| KeyError::Damaged { path: cert_path.clone(), detail: e.to_string() })?;

        if signing.key_id() != history.current_signing().key_id {
            return Err(KeyError::Mismatch {
                path: dir.join(SIGNING),
                detail: format!(
                    "holds key {}, but the key history's current signing key is {}",
                    signing.key_id(),
                    history.current_signing().key_id
                ),
            });
        }
        if tls_certificate != history.current_tls().certificate_der {
            return Err(KeyError::Mismatch {
                path: cert_path,
                detail: "is not the TLS certificate the key history names as current".into(),
            });
        }
        if tls.verifying_key().to_bytes() != history.current_tls().public_key {
            return Err(KeyError::Mismatch {
                path: dir.join(TLS_KEY),
                detail: "does not match the TLS certificate".into(),
            });
        }
        let mut problems = Vec::new();
        let previous_tls = load_previous_tls(dir, &history, tls_token.as_deref(), &mut problems)?;
        Ok(NodeKeys {
            signing,
            tls,
            tls_certificate,
            history,
            previous_tls,
            problems,
            dir: dir.to_owned(),
            token,
            tls_token,
        })
    }

    pub fn participant(&self) -> ParticipantCode {
        self.history.participant()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.history.root().public_key)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This node's enrolment bundle, signed with its current key.
    pub fn bundle(
        &self,
        authority: Text,
        endpoints: Vec<String>,
        now: Timestamp,
    ) -> Result<VerifiedBundle, BundleError> {
        let root = self.history.root();
        Bundle {
            format: BUNDLE_FORMAT,
            participant: self.participant(),
            authority,
            endpoints,
            root_key: root.public_key.to_bytes(),
            root_created_at: root.valid_from,
            root_tls_certificate: self.history.tls_keys()[0].certificate_der.clone(),
            rotations: self.history.rotations().to_vec(),
            created_at: now,
        }
        .sign(self.signing.backend().as_ref())
    }

    /// Whether the signing key is in a token.
    pub fn in_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the TLS key is in a token.
    pub fn tls_in_token(&self) -> bool {
        self.tls_token.is_some()
    }

    /// From now on, makes new signing keys (`tls` false) or TLS keys in `token` (a rotation
    /// into another URI). Called just before [`rotate`](Self::rotate); the keys in use do not
    /// change until a rotation commits.
    pub fn set_token(&mut self, tls: bool, token: Option<Arc<dyn KeyToken>>) {
        if tls {
            self.tls_token = token;
        } else {
            self.token = token;
        }
    }

    /// Where new signing keys (`tls` false) or TLS keys are made; `None`: files.
    pub fn token(&self, tls: bool) -> Option<Arc<dyn KeyToken>> {
        if tls {
            self.tls_token.clone()
        } else {
            self.token.clone()
        }
    }

    /// Rotates keys, effective `now`: writes the new key files beside the old ones, commits
    /// the new history, then moves the new files into place. A replaced TLS key is kept as
    /// `tls.previous.*` (peers that have not yet acknowledged the rotation only know it).
    /// Returns the rotation statement, signed by the current key an instant before `now`
    /// (the moment that key stops being valid).
    pub fn rotate(
        &mut self,
        new_signing: bool,
        new_tls: bool,
        now: Timestamp,
    ) -> Result<SignedDocument, KeyError> {
        if !new_signing && !new_tls {
            return Err(KeyError::Mismatch {
                path: self.dir.clone(),
                detail: "rotation needs --signing, --tls or both".into(),
            });
        }
        let participant = self.participant();
        let previous_key = self.signing.key_id();
        let sequence = self.history.next_sequence();
        let tls_pair = match (new_tls, &self.tls_token) {
            (false, _) => None,
            (true, None) => Some(NodeTlsKey::File(Arc::new(TlsKeyPair::generate()))),
            (true, Some(t)) => Some(NodeTlsKey::Token(t.generate()?)),
        };
        let tls_cert = match &tls_pair {
            Some(k) => Some(k.self_signed(participant)?),
            None => None,
        };
        let signing_pair = match (new_signing, &self.token) {
            (false, _) => None,
            (true, None) => Some(NodeSigningKey::File(Arc::new(SigningKeyPair::generate()))),
            (true, Some(t)) => Some(NodeSigningKey::Token(t.generate()?)),
        };
        let mut body = match &signing_pair {
            Some(k) => {
                let k = k.backend();
                kp_protocol::KeyRotation::new_with_signing_key_with(
                    participant,
                    sequence,
                    previous_key,
                    &k.verifying_key(),
                    tls_cert.clone(),
                    now,
                    |m| k.sign_message(m),
                )
                .map_err(KeyError::Signing)?
            }
            None => kp_protocol::KeyRotation {
                participant,
                sequence,
                previous_key,
                new_signing_key: None,
                new_tls_certificate: tls_cert.clone(),
                effective_from: now,
                tls_possession: None,
            },
        };
        if let Some(k) = &tls_pair {
            k.prove_possession(&mut body).map_err(KeyError::Signing)?;
        }
        let doc = crate::backend::sign_document(
            self.signing.backend().as_ref(),
            &body,
            participant,
            now.saturating_sub_millis(1),
        )
        .map_err(KeyError::Signing)?;
        let mut history = self.history.clone();
        // A refusal here (e.g. too many rotations in a day) changes nothing on disk.
        history.apply(&doc).map_err(KeyError::History)?;

        if let Some(NodeSigningKey::File(k)) = &signing_pair {
            write_atomic(&next(&self.dir, SIGNING), k.to_pkcs8_pem().as_bytes(), 0o600)?;
        }
        if let (Some(k), Some(cert)) = (&tls_pair, &tls_cert) {
            match &self.tls {
                NodeTlsKey::File(old) => {
                    write_atomic(&self.dir.join(TLS_PREVIOUS_KEY), old.to_pkcs8_pem().as_bytes(), 0o600)?;
                    remove_if_present(&self.dir.join(TLS_PREVIOUS_PLACE))?;
                }
                NodeTlsKey::Token(old) => {
                    write_atomic(&self.dir.join(TLS_PREVIOUS_PLACE), old.location().as_bytes(), 0o644)?;
                }
            }
            write_atomic(
                &self.dir.join(TLS_PREVIOUS_CERT),
                tlscert::to_pem(&self.tls_certificate).as_bytes(),
                0o644,
            )?;
            if let NodeTlsKey::File(k) = k {
                write_atomic(&next(&self.dir, TLS_KEY), k.to_pkcs8_pem().as_bytes(), 0o600)?;
            }
            write_atomic(&next(&self.dir, TLS_CERT), tlscert::to_pem(cert).as_bytes(), 0o644)?;
        }
        let root = history.root();
        let file = HistoryFile {
            participant,
            root_key: root.public_key.to_bytes(),
            root_created_at: root.valid_from,
            root_tls_certificate: history.tls_keys()[0].certificate_der.clone(),
            rotations: history.rotations().to_vec(),
        };
        // The commit point. From here on the rotation is done: a failure to tidy up is
        // logged (and finished at the next start, which moves `.next` files into place),
        // never reported as "not rotated", which would have the caller undo a committed state.
        write_atomic(&self.dir.join(HISTORY), &seal_history(&file), 0o600)?;
        let mut tidy = Vec::new();
        for name in [SIGNING, TLS_KEY, TLS_CERT] {
            tidy.push(finish_rotation(&self.dir, name));
        }
        if let Some(NodeSigningKey::Token(_)) = &signing_pair {
            // The new signing key is in a token: the old key's file signs nothing any more.
            tidy.push(remove_if_present(&self.dir.join(SIGNING)));
        }
        if let Some(NodeTlsKey::Token(_)) = &tls_pair {
            // The new TLS key is in a token: a key file left from a file key is of no use (the
            // one just replaced is kept as tls.previous.key.pem), and a previous key in the
            // token is found by the previous certificate's key.
            tidy.push(remove_if_present(&self.dir.join(TLS_KEY)));
            if let NodeTlsKey::Token(_) = &self.tls {
                tidy.push(remove_if_present(&self.dir.join(TLS_PREVIOUS_KEY)));
            }
        }
        for e in tidy.into_iter().filter_map(Result::err) {
            self.problems.push(format!("the key rotation is committed, but a key file could not be moved or removed: {e}; fix the cause and restart the node, which finishes it"));
        }
        self.history = history;
        if let Some(k) = signing_pair {
            self.signing = k;
        }
        if let (Some(k), Some(cert)) = (tls_pair, tls_cert) {
            let old_key = std::mem::replace(&mut self.tls, k);
            let old_cert = std::mem::replace(&mut self.tls_certificate, cert);
            self.previous_tls = Some((old_key, old_cert));
        }
        Ok(doc)
    }
}

/// The previous TLS key, if its certificate file is the history's previous TLS certificate
/// and its key is there: the file `tls.previous.key.pem`, or (with the TLS key in a token)
/// the token's pair with the certificate's key.
fn load_previous_tls(
    dir: &Path,
    history: &KeyHistory,
    token: Option<&dyn KeyToken>,
    problems: &mut Vec<String>,
) -> Result<Option<(NodeTlsKey, Vec<u8>)>, KeyError> {
    let (key_path, cert_path) = (dir.join(TLS_PREVIOUS_KEY), dir.join(TLS_PREVIOUS_CERT));
    if !cert_path.exists() {
        return Ok(None);
    }
    let tls = history.tls_keys();
    let Some(previous) = tls.len().checked_sub(2).map(|i| &tls[i]) else { return Ok(None) };
    let cert_text = String::from_utf8_lossy(&read_public(&cert_path)?).into_owned();
    let cert = tlscert::from_pem(&cert_text)
        .map_err(|e| KeyError::Damaged { path: cert_path.clone(), detail: e.to_string() })?;
    if cert != previous.certificate_der {
        // Left over from an older rotation: of no use any more.
        return Ok(None);
    }
    let key = if key_path.exists() {
        NodeTlsKey::File(Arc::new(load_pem(&key_path, TlsKeyPair::from_pkcs8_pem)?))
    } else if let Some(token) = token {
        let Ok(public) = ed25519_dalek::VerifyingKey::from_bytes(&previous.public_key) else {
            return Ok(None);
        };
        // Under the URI it was made under (recorded at the rotation), else the current one.
        let place_path = dir.join(TLS_PREVIOUS_PLACE);
        let place = match place_path.exists() {
            true => Some(String::from_utf8_lossy(&read_public(&place_path)?).trim().to_owned()),
            false => None,
        };
        let opened = match place.as_deref() {
            Some(p) if p != token.place() => token.elsewhere(p).and_then(|t| t.open(&public)),
            _ => token.open(&public),
        };
        // A previous key the token cannot give is not presented, said in the log: only peers
        // that have not yet acknowledged the rotation need it (they then get the statement
        // only once re-enrolled), so the node still starts.
        match opened {
            Ok(k) => NodeTlsKey::Token(k),
            Err(e) => {
                problems.push(format!("the previous TLS key ({}) is not presented: {e}; peers that have not yet acknowledged the last TLS rotation cannot link to this node until it is back in the token (restart the node then)", place.unwrap_or_else(|| token.place())));
                return Ok(None);
            }
        }
    } else {
        return Ok(None);
    };
    if key.verifying_key().to_bytes() != previous.public_key {
        return Ok(None);
    }
    Ok(Some((key, cert)))
}

fn remove_if_present(path: &Path) -> Result<(), KeyError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KeyError::io(path, e)),
    }
}

fn next(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.next"))
}

/// If `name.next` exists, a rotation wrote it. Whether the rotation committed is decided by
/// the history: the caller checks the resulting files against it. A `.next` file is moved
/// into place only if the history no longer names the old file's key, which `load` then
/// verifies; otherwise it is an uncommitted leftover and removed.
fn finish_rotation(dir: &Path, name: &str) -> Result<(), KeyError> {
    let pending = next(dir, name);
    if !pending.exists() {
        return Ok(());
    }
    let target = dir.join(name);
    let file = open_history(&dir.join(HISTORY))?;
    let pending_matches = match name {
        SIGNING => {
            let k = load_pem(&pending, SigningKeyPair::from_pkcs8_pem)?;
            rotations_name_signing_key(&file, k.verifying_key().to_bytes())
        }
        TLS_KEY => {
            let k = load_pem(&pending, TlsKeyPair::from_pkcs8_pem)?;
            rotations_name_tls_key(&file, k.verifying_key().to_bytes())
        }
        _ => {
            let text = String::from_utf8_lossy(&read_public(&pending)?).into_owned();
            match tlscert::from_pem(&text).and_then(|d| tlscert::public_key(&d)) {
                Ok(key) => rotations_name_tls_key(&file, key),
                Err(_) => false,
            }
        }
    };
    let result = if pending_matches { fs::rename(&pending, &target) } else { fs::remove_file(&pending) };
    result.map_err(|e| KeyError::io(&target, e))
}

/// The history file's bytes: its encoding, then the SHA-256 of that encoding, so that any
/// damage is found and blamed on this file (a changed byte inside an embedded certificate
/// would otherwise decode and look like a mismatch of another file).
fn seal_history(file: &HistoryFile) -> Vec<u8> {
    let mut bytes = codec::encode(file);
    let digest = kp_protocol::Digest::of(&bytes);
    bytes.extend_from_slice(&digest.0);
    bytes
}

fn open_history(path: &Path) -> Result<HistoryFile, KeyError> {
    let bytes = read_secret(path)?;
    let damaged = |detail: String| KeyError::Damaged { path: path.to_owned(), detail };
    let Some(split) = bytes.len().checked_sub(32) else {
        return Err(damaged(format!("only {} bytes long", bytes.len())));
    };
    let (body, sum) = bytes.split_at(split);
    if kp_protocol::Digest::of(body).0.as_slice() != sum {
        // Written by a kpnode from before the checksum: the whole file is the encoding. Its
        // next rewrite (a rotation) adds the checksum.
        if let Ok(legacy) = codec::decode::<HistoryFile>(&bytes) {
            return Ok(legacy);
        }
        return Err(damaged(
            "its checksum does not match: the file was altered or damaged; restore it from a backup".into(),
        ));
    }
    codec::decode(body).map_err(|e| damaged(e.to_string()))
}

fn rotations_name_signing_key(file: &HistoryFile, key: [u8; 32]) -> bool {
    file.rotations
        .last()
        .and_then(|d| d.body::<kp_protocol::KeyRotation>().ok())
        .is_some_and(|r| r.new_signing_key.is_some_and(|n| n.public_key == key))
}

fn rotations_name_tls_key(file: &HistoryFile, key: [u8; 32]) -> bool {
    file.rotations
        .last()
        .and_then(|d| d.body::<kp_protocol::KeyRotation>().ok())
        .and_then(|r| r.new_tls_certificate)
        .and_then(|der| tlscert::public_key(&der).ok())
        .is_some_and(|k| k == key)
}

fn load_pem<T, E: std::fmt::Display>(
    path: &Path,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, KeyError> {
    let bytes = read_secret(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| KeyError::Damaged { path: path.to_owned(), detail: "not PEM text".into() })?;
    parse(text).map_err(|e| KeyError::Damaged { path: path.to_owned(), detail: e.to_string() })
}
