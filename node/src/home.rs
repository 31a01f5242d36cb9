//! The node directory: what `kpnode init` creates and every other command reads.
//!
//! ```text
//! DIR/node.toml    configuration (written last by init: its presence marks a node)
//! DIR/api.token    bearer token of the local API (0600)
//! DIR/keys/        signing and TLS keys, key history (0700; see kp_keys::keydir)
//! DIR/store/       the sled store (log, certificates, outbox, peers)
//! ```

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kp_config::{ConfigError, NodeConfig};
use kp_keys::files::{read_secret, write_atomic};
use kp_keys::{KeyError, NodeKeys};
use kp_protocol::{ParticipantCode, Text, Timestamp};
use rand::RngCore;

use crate::store::{meta, SledStore, Storage, StoreError, Tree, Writes};

/// A node directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    root: PathBuf,
}

/// Why a node directory could not be created or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    #[error("{0} already holds a node ({1} exists); choose another directory, or remove it to start over")]
    AlreadyInitialised(PathBuf, &'static str),
    #[error("{0} is not a node directory (no node.toml); create one with `kpnode init`, or pass --dir / set KPNODE_DIR")]
    NotANode(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {detail}")]
    Token { path: PathBuf, detail: String },
    /// The PKCS#11 token holding the signing key could not be used.
    #[error(transparent)]
    Hsm(#[from] crate::hsm::TokenError),
}

fn io(path: &Path, source: std::io::Error) -> HomeError {
    HomeError::Io { path: path.to_owned(), source }
}

/// What `init` is asked to set.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub participant: ParticipantCode,
    pub authority: Text,
    pub peer_listen: Option<SocketAddr>,
    pub api_listen: Option<SocketAddr>,
    pub advertise: Vec<String>,
    /// The signing key (and, with `tls_key`, the TLS key) in a PKCS#11 token (made there, or
    /// the one already under its label).
    pub pkcs11: Option<kp_config::Pkcs11>,
}

impl NodeDir {
    pub fn new(root: impl Into<PathBuf>) -> NodeDir {
        NodeDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("node.toml")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn token_path(&self) -> PathBuf {
        self.root.join("api.token")
    }

    /// Creates a node: keys, token, store, then `node.toml`. On failure, removes what it made.
    pub fn init(&self, opts: &InitOptions, now: Timestamp) -> Result<(NodeConfig, NodeKeys), HomeError> {
        for (name, what) in [("node.toml", "node.toml"), ("keys", "keys/"), ("store", "store/")] {
            if self.root.join(name).exists() {
                return Err(HomeError::AlreadyInitialised(self.root.clone(), what));
            }
        }
        let created_root = !self.root.exists();
        fs::create_dir_all(&self.root).map_err(|e| io(&self.root, e))?;
        if created_root {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .map_err(|e| io(&self.root, e))?;
        }
        let result = self.init_inner(opts, now);
        if result.is_err() {
            let _ = fs::remove_dir_all(self.keys_dir());
            let _ = fs::remove_dir_all(self.store_dir());
            let _ = fs::remove_file(self.token_path());
            if created_root {
                let _ = fs::remove_dir(&self.root);
            }
        }
        result
    }

    fn init_inner(&self, opts: &InitOptions, now: Timestamp) -> Result<(NodeConfig, NodeKeys), HomeError> {
        let mut config = NodeConfig::new(opts.participant, opts.authority.clone());
        if let Some(a) = opts.peer_listen {
            config.network.peer_listen = a;
        }
        if let Some(a) = opts.api_listen {
            config.network.api_listen = a;
        }
        config.network.advertise = opts.advertise.clone();
        config.pkcs11 = opts.pkcs11.clone();
        // Check what we are about to write, exactly as it will be read.
        NodeConfig::parse(&config.render())
            .map_err(|problems| ConfigError { file: self.config_path(), problems })?;

        let keys = match &config.pkcs11 {
            None => NodeKeys::create(&self.keys_dir(), opts.participant, now)?,
            Some(_) => {
                // A key pair already under a key's label is used (one made by the token's own
                // tools); otherwise one is made inside the token.
                let tokens = crate::hsm::from_config(&config)?;
                let place = |h: Option<crate::hsm::TokenHandle>| -> Result<_, HomeError> {
                    let Some(h) = h else { return Ok(None) };
                    let existing = h.token.existing(&h.key)?.map(|k| std::sync::Arc::new(k) as _);
                    Ok(Some(kp_keys::TokenPlace { token: std::sync::Arc::new(h), existing }))
                };
                let places = kp_keys::KeyPlaces { signing: place(tokens.signing)?, tls: place(tokens.tls)? };
                NodeKeys::create_in(&self.keys_dir(), opts.participant, now, places)?
            }
        };
        let mut token = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut token);
        write_atomic(
            &self.token_path(),
            format!("{}\n", kp_protocol::digest::hex(&token)).as_bytes(),
            0o600,
        )?;
        let store = SledStore::create(&self.store_dir(), config.store.cache_capacity_mb)?;
        store.commit(&Writes::from([(
            (Tree::Meta, meta::PARTICIPANT.to_vec()),
            Some(opts.participant.as_bytes().to_vec()),
        )]))?;
        store.flush()?;
        drop(store);
        write_atomic(&self.config_path(), config.render().as_bytes(), 0o644)?;
        Ok((config, keys))
    }

    /// Loads `node.toml`.
    pub fn config(&self) -> Result<NodeConfig, HomeError> {
        if !self.config_path().exists() {
            return Err(HomeError::NotANode(self.root.clone()));
        }
        Ok(NodeConfig::load(&self.config_path())?)
    }

    /// Loads the keys, checking them against the configured participant.
    pub fn keys(&self, config: &NodeConfig) -> Result<NodeKeys, HomeError> {
        Ok(self.keys_and_tokens(config)?.0)
    }

    /// After a rotation into another key of the token (`kpnode keys rotate --signing-key URI`
    /// or `--tls-key URI`): `node.toml` names the new URI, so that the next start finds the
    /// key there. The settings are written again as `init` writes them (values kept).
    pub fn set_token_key(&self, tls: bool, uri: &kp_keys::pkcs11uri::Pkcs11Uri) -> Result<(), HomeError> {
        let mut config = self.config()?;
        let Some(p) = config.pkcs11.as_mut() else {
            return Err(HomeError::Token {
                path: self.config_path(),
                detail: "has no [pkcs11] section to name the new key's URI in".into(),
            });
        };
        if tls {
            p.tls_key = Some(uri.clone());
        } else {
            p.signing_key = uri.clone();
        }
        let text = config.render();
        NodeConfig::parse(&text).map_err(|problems| ConfigError { file: self.config_path(), problems })?;
        write_atomic(&self.config_path(), text.as_bytes(), 0o644)?;
        Ok(())
    }

    /// [`keys`](Self::keys), and the tokens `node.toml` names (to make keys in later).
    pub fn keys_and_tokens(
        &self,
        config: &NodeConfig,
    ) -> Result<(NodeKeys, crate::hsm::ConfiguredTokens), HomeError> {
        let tokens = crate::hsm::from_config(config)?;
        let mut keys = NodeKeys::load_in(&self.keys_dir(), tokens.signing_dyn(), tokens.tls_dyn())?;
        for problem in keys.problems.drain(..) {
            tracing::error!(%problem, "a key problem that does not stop the node");
        }
        if keys.participant() != config.participant {
            return Err(HomeError::Keys(KeyError::Mismatch {
                path: self.keys_dir(),
                detail: format!(
                    "belong to {}, but node.toml says participant = \"{}\"",
                    keys.participant(),
                    config.participant
                ),
            }));
        }
        Ok((keys, tokens))
    }

    /// The API bearer token.
    pub fn token(&self) -> Result<String, HomeError> {
        let path = self.token_path();
        let bytes = read_secret(&path)?;
        let token = std::str::from_utf8(&bytes)
            .map_err(|_| HomeError::Token { path: path.clone(), detail: "is not text".into() })?;
        let token = token.trim().to_owned();
        if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(HomeError::Token {
                path,
                detail: "does not hold a token (expected at least 32 letters or digits)".into(),
            });
        }
        Ok(token)
    }
}
