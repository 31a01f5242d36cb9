//! The signing key and the TLS key in a PKCS#11 token (a hardware security module, or
//! SoftHSM2 for tests): the node asks the token to sign and never sees a private key, which
//! is made inside the token not extractable and sensitive.
//!
//! [`Pkcs11Token`] loads the vendor's module, finds the token the URI names (by label or
//! serial) and logs in with the user PIN; [`TokenHandle`]s on it find or make Ed25519 key
//! pairs under their own URI's object label (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, signing with
//! `CKM_EDDSA`: PKCS#11 3.0) — one for the signing key, one for the TLS key, sharing the
//! token's session. Each key pair made gets a random `CKA_ID`; the node's key history says
//! which pair is current (by its public key), so a rotation needs no change to `node.toml`.
//!
//! A token that fails while the node runs (pulled out, its service restarted) makes each
//! signature fail with a [`SignError`] naming the cause — answered 503 by the API, a receipt
//! not sent so the partner resends — and the next signature starts over: the module is
//! finalized and initialized again, the token found, a session opened and logged in. So the
//! node recovers by itself when the token is back, and nothing is lost.
//!
//! Each module is loaded once per process ([`MODULES`]) and shared by every handle on it, since
//! a module is initialized once per process and cryptoki finalizes it when its context drops.

pub mod pin;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ed25519_dalek::VerifyingKey;
use kp_keys::pkcs11uri::Pkcs11Uri;
use kp_keys::{KeyError, KeyToken, SignError, SigningBackend};

pub use pin::{Pin, PinError, PIN_ENV};

/// DER of the Ed25519 curve's OID 1.3.101.112 (RFC 8410), the `CKA_EC_PARAMS` of its keys.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why the token could not be used. Each names the module or the URI and, where one is
/// known, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the PKCS#11 module {} cannot be loaded ({detail}); install the token vendor's library, or correct --pkcs11-module (pkcs11.module in node.toml)", module.display())]
    ModuleNotFound { module: PathBuf, detail: String },
    #[error("the PKCS#11 module {} failed to start: {detail}", module.display())]
    Module { module: PathBuf, detail: String },
    #[error("token absent: no token matching {uri} is present (present: {}); insert it, or correct the URI's token= (its label)", if seen.is_empty() { "none".to_string() } else { seen.join(", ") })]
    TokenAbsent { uri: String, seen: Vec<String> },
    #[error("wrong PIN for the token of {uri}: it refused the login (CKR_PIN_INCORRECT); correct the PIN file or KPNODE_PKCS11_PIN and restart the node — each wrong try brings the token closer to locking the PIN, so kpnode does not try this PIN again")]
    WrongPin { uri: String },
    #[error("the user PIN of the token of {uri} is locked; unlock it with the security officer PIN (e.g. `softhsm2-util` or the vendor's tool)")]
    PinLocked { uri: String },
    #[error("the token of {uri} refused the PIN earlier ({cause}); kpnode does not try that PIN again, so that its retries cannot lock the token's PIN: correct the PIN file or KPNODE_PKCS11_PIN (or unlock the PIN), then restart the node")]
    PinRefusedEarlier { uri: String, cause: String },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("no key pair {uri} in the token{}; create it with `kpnode init`, or correct the URI's object=", if *public_only { " (its public key is there, its private key is not)" } else { "" })]
    ObjectMissing { uri: String, public_only: bool },
    #[error("the token's key pair {uri} is not the key the node's key history names as current ({expected}); was the token or the node directory replaced?")]
    WrongKey { uri: String, expected: String },
    #[error("the private key {uri} is not protected by the token: its {attribute} is {value}, so it can be read out of the token; kpnode signs only with a key that is sensitive and not extractable — make a new one (e.g. let `kpnode init` make it, under a label of its own)")]
    KeyNotProtected { uri: String, attribute: &'static str, value: bool },
    #[error("the private key {uri} is not fit for the node: its {attribute} is {value}, and kpnode signs only with a private key that is private (usable only after login), may sign, and is Ed25519 (CKK_EC_EDWARDS) — make a new one (e.g. let `kpnode init` make it, under a label of its own)")]
    KeyUnfit { uri: String, attribute: &'static str, value: String },
    #[error("{count} tokens match {uri} (their labels and serial numbers are in the node's log); name the one to use by adding its serial= to the URI")]
    AmbiguousToken { uri: String, count: usize },
    #[error("several key pairs are labelled as in {uri}; name the one to use with id= in the URI (its CKA_ID, as `pkcs11-tool -O` shows it)")]
    Ambiguous { uri: String },
    #[error("the token of {uri} does not support {mechanism}, which Ed25519 needs (PKCS#11 3.0); the node needs a token that signs with Ed25519 (CKM_EDDSA)")]
    MechanismUnsupported { uri: String, mechanism: &'static str },
    #[error("the token of {uri} failed: {function}: {detail}")]
    Failed { uri: String, function: String, detail: String },
}

impl From<TokenError> for KeyError {
    fn from(e: TokenError) -> KeyError {
        let key = match &e {
            TokenError::ModuleNotFound { module, .. } | TokenError::Module { module, .. } => {
                module.display().to_string()
            }
            _ => "PKCS#11 token".into(),
        };
        KeyError::Token { key, detail: e.to_string() }
    }
}

/// How to reach a token: the module, the URI naming it (its token= or serial=; the object
/// is the signing key's) and the PIN.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub module: PathBuf,
    pub uri: Pkcs11Uri,
    pub pin: Pin,
}

impl TokenSettings {
    /// From `node.toml`'s `[pkcs11]`, reading the PIN.
    pub fn from_config(p: &kp_config::Pkcs11) -> Result<TokenSettings, TokenError> {
        Ok(TokenSettings {
            module: p.module.clone(),
            uri: p.signing_key.clone(),
            pin: pin::read(p.pin_file.as_deref())?,
        })
    }
}

/// A logged-in session and the context it came from, dropped together on a failure.
struct Open {
    /// Declared first: dropped (closed) before the context is released.
    session: Session,
    slot: Slot,
    context: Arc<Pkcs11>,
}

/// The loaded modules, one context per module path for the whole process. cryptoki's
/// `Pkcs11` calls `C_Finalize` when dropped, and a module is initialized once per process:
/// two contexts on one module (two handles on the token, as an offline command that opens
/// the keys more than once makes) would have the first dropped finalize the second's.
static MODULES: Mutex<Vec<(PathBuf, Arc<Pkcs11>)>> = Mutex::new(Vec::new());

/// The process's context for `module`, loading and initializing it if none is loaded.
fn module_context(module: &std::path::Path) -> Result<Arc<Pkcs11>, TokenError> {
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = modules.iter().find(|(m, _)| m == module) {
        return Ok(c.clone());
    }
    let context = Pkcs11::new(module).map_err(|e| match e {
        CkError::LibraryLoading(l) => {
            TokenError::ModuleNotFound { module: module.to_owned(), detail: l.to_string() }
        }
        other => TokenError::Module { module: module.to_owned(), detail: other.to_string() },
    })?;
    match context.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(TokenError::Module { module: module.to_owned(), detail: e.to_string() }),
    }
    let context = Arc::new(context);
    modules.push((module.to_owned(), context.clone()));
    Ok(context)
}

/// Called after a failure, once the caller's session is closed: finalizes the module (so
/// that the next use initializes it afresh and sees a token put back) only if no other
/// handle in the process holds a session on it; otherwise it stays loaded for them.
fn release_module(context: Arc<Pkcs11>) {
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    drop(context);
    modules.retain(|(_, c)| Arc::strong_count(c) > 1);
}

/// The tokens (module, token=, serial=) that refused the PIN in this process, with the
/// token's words. Once a token has refused it, no handle in the process (the signing key's,
/// the TLS key's own session, one a rotation opens) logs in with that PIN again — each wrong
/// try counts towards locking the PIN, and the node's signers retry by themselves — until
/// the node is restarted with a corrected one.
static REFUSED_PINS: Mutex<Vec<(TokenName, String)>> = Mutex::new(Vec::new());

type TokenName = (PathBuf, Option<String>, Option<String>);

fn token_name(s: &TokenSettings) -> TokenName {
    (s.module.clone(), s.uri.token.clone(), s.uri.serial.clone())
}

fn refused_earlier(s: &TokenSettings) -> Option<String> {
    let name = token_name(s);
    let refused = REFUSED_PINS.lock().unwrap_or_else(|p| p.into_inner());
    refused.iter().find(|(n, _)| *n == name).map(|(_, cause)| cause.clone())
}

fn remember_refused(s: &TokenSettings, cause: String) {
    let mut refused = REFUSED_PINS.lock().unwrap_or_else(|p| p.into_inner());
    refused.push((token_name(s), cause));
}

/// A PKCS#11 token holding the node's signing keys.
pub struct Pkcs11Token {
    settings: TokenSettings,
    open: Mutex<SessionState>,
}

/// The open session, if any, and when the token may be tried again after a failure.
#[derive(Default)]
struct SessionState {
    open: Option<Open>,
    /// After a failure: the error, when the token may be tried again, and the wait after the
    /// next failure. Until then every call gets that error at once, without touching the
    /// module: a token that went away is initialized and logged in to again at most once per
    /// wait (doubling up to [`RETRY_MAX`]), not once per signature or per TLS handshake a
    /// stranger can start.
    retry: Option<Retry>,
}

struct Retry {
    error: TokenError,
    at: Instant,
    next_wait: Duration,
}

/// The first wait after a token failure, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);

impl SessionState {
    /// Remembers `error` and when the token may be tried again.
    fn failed(&mut self, error: &TokenError) {
        let wait = self.retry.as_ref().map_or(RETRY_FIRST, |r| r.next_wait);
        self.retry = Some(Retry {
            error: error.clone(),
            at: Instant::now() + wait,
            next_wait: (wait * 2).min(RETRY_MAX),
        });
    }
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Token({} via {})", self.settings.uri, self.settings.module.display())
    }
}

impl Pkcs11Token {
    /// Opens the token now, so that every problem (module, token, PIN, mechanism) is reported
    /// at start rather than at the first signature.
    pub fn open(settings: TokenSettings) -> Result<Arc<Pkcs11Token>, TokenError> {
        let token = Arc::new(Pkcs11Token { settings, open: Mutex::new(SessionState::default()) });
        token.with_session(|_, _| Ok(()))?;
        Ok(token)
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.settings.uri
    }

    fn uri_text(&self) -> String {
        self.settings.uri.to_string()
    }

    /// Runs `f` with a logged-in session, opening one first if none is open. A failure that
    /// may mean the token went away drops the session and the module, so the next call
    /// starts over.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session, Slot) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let mut guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cause) = refused_earlier(&self.settings) {
            return Err(TokenError::PinRefusedEarlier { uri: self.uri_text(), cause });
        }
        if guard.open.is_none() {
            if let Some(retry) = guard.retry.as_ref().filter(|r| Instant::now() < r.at) {
                return Err(retry.error.clone());
            }
            match self.connect() {
                Ok(open) => guard.open = Some(open),
                Err(e) => {
                    if matches!(e, TokenError::WrongPin { .. } | TokenError::PinLocked { .. }) {
                        tracing::error!(error = %e, "the PKCS#11 token refused the PIN; the node will not try it again until it is restarted");
                        remember_refused(&self.settings, e.to_string());
                    } else {
                        tracing::warn!(error = %e, "PKCS#11 token unavailable; it is tried again later");
                    }
                    guard.failed(&e);
                    return Err(e);
                }
            }
        }
        let open = guard.open.as_ref().expect("opened above");
        let result = f(&open.session, open.slot);
        match &result {
            Ok(_) => guard.retry = None,
            Err(e) => {
                // Any failure, a missing key too: a token that was pulled out and put back (or
                // whose files went away, for SoftHSM2) keeps answering the old session without
                // the key, so only a fresh start of the module sees it again.
                tracing::warn!(error = %e, "PKCS#11 token failed; it is opened again later");
                if let Some(Open { session, context, .. }) = guard.open.take() {
                    drop(session);
                    release_module(context);
                }
                // A call on the token that failed (not an answer about its objects, which the
                // next call may ask differently) holds back the next attempt.
                if matches!(e, TokenError::Failed { .. }) {
                    guard.failed(e);
                }
            }
        }
        result
    }

    fn connect(&self) -> Result<Open, TokenError> {
        let s = &self.settings;
        let uri = self.uri_text();
        if !s.module.is_file() {
            return Err(TokenError::ModuleNotFound {
                module: s.module.clone(),
                detail: "no such file".into(),
            });
        }
        let context = module_context(&s.module)?;
        match self.connect_with(&context, &uri) {
            Ok((session, slot)) => Ok(Open { session, slot, context }),
            Err(e) => {
                release_module(context);
                Err(e)
            }
        }
    }

    fn connect_with(&self, context: &Pkcs11, uri: &str) -> Result<(Session, Slot), TokenError> {
        let s = &self.settings;
        let uri = uri.to_owned();
        let fail = |function: &str, e: CkError| TokenError::Failed {
            uri: uri.clone(),
            function: function.into(),
            detail: e.to_string(),
        };
        let slots = context.get_slots_with_token().map_err(|e| fail("C_GetSlotList", e))?;
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            let Ok(info) = context.get_token_info(slot) else { continue };
            let (label, serial) =
                (info.label().trim_end().to_owned(), info.serial_number().trim_end().to_owned());
            let label_ok = s.uri.token.as_deref().is_none_or(|t| t == label);
            let serial_ok = s.uri.serial.as_deref().is_none_or(|t| t == serial);
            if label_ok && serial_ok {
                found.push((slot, info.user_pin_locked(), format!("{label:?} (serial {serial})")));
            }
            seen.push(format!("{label:?} (serial {serial})"));
        }
        let (slot, locked) = match found.as_slice() {
            [] => return Err(TokenError::TokenAbsent { uri, seen }),
            [(slot, locked, _)] => (*slot, *locked),
            several => {
                // Never the first one silently: it could be another authority's token. Which
                // ones is for the operator's log, not for every API client.
                let names: Vec<&str> = several.iter().map(|(_, _, n)| n.as_str()).collect();
                tracing::error!(%uri, tokens = ?names, "several PKCS#11 tokens match the signing key's URI");
                return Err(TokenError::AmbiguousToken { uri, count: several.len() });
            }
        };
        if locked {
            return Err(TokenError::PinLocked { uri });
        }
        let mechanisms = context.get_mechanism_list(slot).map_err(|e| fail("C_GetMechanismList", e))?;
        if !mechanisms.contains(&MechanismType::EDDSA) {
            return Err(TokenError::MechanismUnsupported { uri, mechanism: "CKM_EDDSA" });
        }
        let session = context.open_rw_session(slot).map_err(|e| session_error(&uri, "C_OpenSession", e))?;
        let pin = AuthPin::new(s.pin.expose().to_owned());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                return Err(TokenError::WrongPin { uri })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(TokenError::PinLocked { uri }),
            Err(e) => return Err(session_error(&uri, "C_Login", e)),
        }
        Ok((session, slot))
    }

    /// The key pairs under `key`'s label (and, with `by_id`, its id), as (public key, CKA_ID,
    /// label).
    fn pairs(&self, session: &Session, key: &Pkcs11Uri, by_id: bool) -> Result<Vec<Pair>, TokenError> {
        let uri = key.to_string();
        let mut template =
            vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::KeyType(KeyType::EC_EDWARDS)];
        name_template(key, &mut template, by_id);
        let handles = session.find_objects(&template).map_err(|e| session_error(&uri, "C_FindObjects", e))?;
        let mut out = Vec::new();
        for h in handles {
            let attrs = session
                .get_attributes(h, &[AttributeType::EcPoint, AttributeType::Id, AttributeType::Label])
                .map_err(|e| session_error(&uri, "C_GetAttributeValue", e))?;
            let (mut point, mut id, mut label) = (None, Vec::new(), Vec::new());
            for a in attrs {
                match a {
                    Attribute::EcPoint(p) => point = ed25519_point(&p),
                    Attribute::Id(i) => id = i,
                    Attribute::Label(l) => label = l,
                    _ => {}
                }
            }
            if let Some(k) = point.and_then(|p| VerifyingKey::from_bytes(&p).ok()) {
                out.push((k, id, label));
            }
        }
        Ok(out)
    }

    /// The private key of the pair with `id` and `label`.
    fn private_key(
        &self,
        session: &Session,
        key: &Pkcs11Uri,
        id: &[u8],
        label: &[u8],
    ) -> Result<ObjectHandle, TokenError> {
        let uri = key.to_string();
        let template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.to_vec()),
        ];
        let found = session.find_objects(&template).map_err(|e| session_error(&uri, "C_FindObjects", e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(TokenError::ObjectMissing { uri, public_only: true }),
            _ => Err(TokenError::Ambiguous { uri }),
        }
    }

    /// Refuses a private key the token would let out (`CKA_EXTRACTABLE` true or
    /// `CKA_SENSITIVE` false), one usable without logging in (`CKA_PRIVATE` false), one that
    /// may not sign or is not Ed25519: a key adopted from the token (made by another tool)
    /// must be as protected as one kpnode makes. One that was once outside the token
    /// (`CKA_ALWAYS_SENSITIVE` false or `CKA_NEVER_EXTRACTABLE` false) is used, with a warning.
    fn check_protected(
        &self,
        session: &Session,
        key: &Pkcs11Uri,
        private: ObjectHandle,
    ) -> Result<(), TokenError> {
        let uri = key.to_string();
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Private,
                    AttributeType::Sign,
                    AttributeType::KeyType,
                ],
            )
            .map_err(|e| session_error(&uri, "C_GetAttributeValue", e))?;
        let (mut extractable, mut sensitive, mut always, mut never) = (None, None, None, None);
        let (mut private_, mut sign, mut key_type) = (None, None, None);
        for a in attrs {
            match a {
                Attribute::Private(v) => private_ = Some(v),
                Attribute::Sign(v) => sign = Some(v),
                Attribute::KeyType(v) => key_type = Some(v),
                Attribute::Extractable(v) => extractable = Some(v),
                Attribute::Sensitive(v) => sensitive = Some(v),
                Attribute::AlwaysSensitive(v) => always = Some(v),
                Attribute::NeverExtractable(v) => never = Some(v),
                _ => {}
            }
        }
        // An attribute the token does not report counts as the unsafe value.
        if extractable != Some(false) {
            return Err(TokenError::KeyNotProtected { uri, attribute: "CKA_EXTRACTABLE", value: true });
        }
        if sensitive != Some(true) {
            return Err(TokenError::KeyNotProtected { uri, attribute: "CKA_SENSITIVE", value: false });
        }
        let shown = |v: Option<bool>| v.map_or("not reported".to_owned(), |v| v.to_string());
        if private_ != Some(true) {
            return Err(TokenError::KeyUnfit { uri, attribute: "CKA_PRIVATE", value: shown(private_) });
        }
        if sign != Some(true) {
            return Err(TokenError::KeyUnfit { uri, attribute: "CKA_SIGN", value: shown(sign) });
        }
        if key_type != Some(KeyType::EC_EDWARDS) {
            let value = key_type.map_or("not reported".to_owned(), |k| k.to_string());
            return Err(TokenError::KeyUnfit { uri, attribute: "CKA_KEY_TYPE", value });
        }
        if always != Some(true) || never != Some(true) {
            tracing::warn!(%uri, always_sensitive = ?always, never_extractable = ?never, "the key was once readable outside the token (CKA_ALWAYS_SENSITIVE or CKA_NEVER_EXTRACTABLE is not true): it may exist elsewhere");
        }
        Ok(())
    }

    /// The key pair whose public key is `public` (the key history's current key), looked for
    /// under `key`'s label. Found by its public key, not by the URI's `id=`: after a rotation
    /// the current pair has a new random `CKA_ID` while `node.toml` is unchanged.
    pub fn key(self: &Arc<Self>, key: &Pkcs11Uri, public: &VerifyingKey) -> Result<TokenKey, TokenError> {
        let uri = key.to_string();
        let (id, label) = self.with_session(|session, _| {
            let pairs = self.pairs(session, key, false)?;
            let found = pairs.iter().find(|(k, _, _)| k == public).map(|(_, i, l)| (i.clone(), l.clone()));
            let Some((id, label)) = found else {
                if pairs.is_empty() {
                    return Err(TokenError::ObjectMissing { uri: uri.clone(), public_only: false });
                }
                return Err(TokenError::WrongKey {
                    uri: uri.clone(),
                    expected: kp_protocol::KeyId::of(public).to_string(),
                });
            };
            let private = self.private_key(session, key, &id, &label)?;
            self.check_protected(session, key, private)?;
            Ok((id, label))
        })?;
        Ok(TokenKey { token: self.clone(), uri: key.clone(), public: *public, id, label })
    }

    /// The one key pair under `key` (its label and `id=`), if there is exactly one (`None` if
    /// there is none): the pair `init` adopts.
    pub fn existing(self: &Arc<Self>, key: &Pkcs11Uri) -> Result<Option<TokenKey>, TokenError> {
        let uri = key.to_string();
        let pairs = self.with_session(|session, _| self.pairs(session, key, true))?;
        match pairs.as_slice() {
            [] => Ok(None),
            [(k, _, _)] => self.key(key, k).map(Some),
            _ => Err(TokenError::Ambiguous { uri }),
        }
    }

    /// Makes a new Ed25519 key pair in the token under `key`'s label, with a fresh random
    /// `CKA_ID` (never the URI's `id=`: a rotation would then make a second pair with the same
    /// label and id, and the private key could no longer be told apart): the private key is
    /// a token object, private, sensitive and not extractable.
    pub fn generate(self: &Arc<Self>, key: &Pkcs11Uri) -> Result<TokenKey, TokenError> {
        let uri = key.to_string();
        let Some(label) = key.object.clone() else {
            return Err(TokenError::ObjectMissing { uri, public_only: false });
        };
        let label = label.into_bytes();
        let id: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let public = self.with_session(|session, _| {
            let public_template = vec![
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(ED25519_OID.to_vec()),
                Attribute::Label(label.clone()),
                Attribute::Id(id.clone()),
            ];
            let private_template = vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Label(label.clone()),
                Attribute::Id(id.clone()),
            ];
            let (public, private) = session
                .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_template, &private_template)
                .map_err(|e| match e {
                    CkError::Pkcs11(RvError::MechanismInvalid, _) => TokenError::MechanismUnsupported {
                        uri: uri.clone(),
                        mechanism: "CKM_EC_EDWARDS_KEY_PAIR_GEN",
                    },
                    e => session_error(&uri, "C_GenerateKeyPair", e),
                })?;
            // The token may not honour the template: check what it made.
            self.check_protected(session, key, private)?;
            let attrs = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(|e| session_error(&uri, "C_GetAttributeValue", e))?;
            attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => ed25519_point(&p),
                    _ => None,
                })
                .and_then(|p| VerifyingKey::from_bytes(&p).ok())
                .ok_or_else(|| TokenError::Failed {
                    uri: uri.clone(),
                    function: "C_GenerateKeyPair".into(),
                    detail: "the new public key is not an Ed25519 point".into(),
                })
        })?;
        tracing::info!(uri = %key, key = %kp_protocol::KeyId::of(&public), "made a key pair in the token");
        Ok(TokenKey { token: self.clone(), uri: key.clone(), public, id, label })
    }

    fn sign(&self, key: &Pkcs11Uri, id: &[u8], label: &[u8], message: &[u8]) -> Result<[u8; 64], TokenError> {
        let uri = key.to_string();
        self.with_session(|session, _| {
            let private = self.private_key(session, key, id, label).map_err(|e| match e {
                TokenError::ObjectMissing { .. } => TokenError::Failed {
                    uri: uri.clone(),
                    function: "C_FindObjects".into(),
                    detail: "the key the node signs with is no longer found in the token (was it removed or \
replaced?); the node opens the token again shortly"
                        .into(),
                },
                e => e,
            })?;
            let signature = session
                .sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), private, message)
                .map_err(|e| match e {
                    CkError::Pkcs11(RvError::MechanismInvalid, _) => {
                        TokenError::MechanismUnsupported { uri: uri.clone(), mechanism: "CKM_EDDSA" }
                    }
                    e => session_error(&uri, "C_Sign", e),
                })?;
            <[u8; 64]>::try_from(signature.as_slice()).map_err(|_| TokenError::Failed {
                uri: uri.clone(),
                function: "C_Sign".into(),
                detail: format!("returned {} bytes, not an Ed25519 signature's 64", signature.len()),
            })
        })
    }

    /// Whether `key` names this token (the same token= and serial=): then its keys are used
    /// through this token's session rather than a second one.
    fn holds(&self, key: &Pkcs11Uri) -> bool {
        key.token == self.settings.uri.token && key.serial == self.settings.uri.serial
    }
}

/// Adds `key`'s label (and, with `by_id`, its id) to a search template.
fn name_template(key: &Pkcs11Uri, template: &mut Vec<Attribute>, by_id: bool) {
    if let Some(label) = &key.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let (true, Some(id)) = (by_id, &key.id) {
        template.push(Attribute::Id(id.clone()));
    }
}

/// A key pair found in the token: its public key, `CKA_ID` and `CKA_LABEL`.
type Pair = (VerifyingKey, Vec<u8>, Vec<u8>);

/// A failure of a call on a session, with the token's words for the common ones.
fn session_error(uri: &str, function: &str, e: CkError) -> TokenError {
    let detail = match &e {
        CkError::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _) => {
            format!("token absent ({e}); insert it — the node retries by itself")
        }
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _) => {
            format!("the session was lost ({e}); the node opens a new one shortly")
        }
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => format!("logged out ({e}); the node logs in again"),
        _ => e.to_string(),
    };
    TokenError::Failed { uri: uri.to_owned(), function: function.to_owned(), detail }
}

/// The 32-byte Ed25519 point in a `CKA_EC_POINT`: raw, or DER `OCTET STRING` (04 20 …) as
/// PKCS#11 3.0 prescribes and SoftHSM2 writes.
fn ed25519_point(p: &[u8]) -> Option<[u8; 32]> {
    match p {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

/// A key pair in a token.
#[derive(Clone)]
pub struct TokenKey {
    token: Arc<Pkcs11Token>,
    /// The URI the key was found or made under.
    uri: Pkcs11Uri,
    public: VerifyingKey,
    id: Vec<u8>,
    label: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({} {})", self.uri, kp_protocol::KeyId::of(&self.public))
    }
}

impl SigningBackend for TokenKey {
    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        let signature = self
            .token
            .sign(&self.uri, &self.id, &self.label, message)
            .map_err(|e| SignError { key: self.location(), cause: e.to_string() })?;
        // A token that returns a wrong signature would make documents partners refuse: check.
        self.public.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature)).map_err(
            |_| SignError {
                key: self.location(),
                cause: "the token returned a signature that does not verify with the key's public half"
                    .into(),
            },
        )?;
        Ok(signature)
    }

    fn location(&self) -> String {
        self.uri.to_string()
    }
}

/// A key's URI on a token, as the key directory uses it ([`KeyToken`]): the signing key's
/// and the TLS key's handles share one token (one session) when their URIs name the same.
#[derive(Debug, Clone)]
pub struct TokenHandle {
    pub token: Arc<Pkcs11Token>,
    pub key: Pkcs11Uri,
}

impl TokenHandle {
    /// A handle for `key`: on `token` if the URI names that token, otherwise on the token it
    /// names, opened with the same module and PIN.
    pub fn on(token: &Arc<Pkcs11Token>, key: &Pkcs11Uri) -> Result<TokenHandle, TokenError> {
        if token.holds(key) {
            return Ok(TokenHandle { token: token.clone(), key: key.clone() });
        }
        TokenHandle::own(token, key)
    }

    /// A handle for `key` with a session of its own (the same module and PIN as `token`):
    /// the TLS key's. Any host that reaches the peer port can make the node sign a handshake,
    /// so those signatures never wait on the signing key's session, and a TLS key that
    /// fails closes only its own session.
    pub fn own(token: &Arc<Pkcs11Token>, key: &Pkcs11Uri) -> Result<TokenHandle, TokenError> {
        let settings = TokenSettings { uri: key.clone(), ..token.settings.clone() };
        Ok(TokenHandle { token: Pkcs11Token::open(settings)?, key: key.clone() })
    }
}

impl KeyToken for TokenHandle {
    fn open(&self, public: &VerifyingKey) -> Result<Arc<dyn SigningBackend>, KeyError> {
        Ok(Arc::new(self.token.key(&self.key, public)?))
    }

    fn generate(&self) -> Result<Arc<dyn SigningBackend>, KeyError> {
        Ok(Arc::new(self.token.generate(&self.key)?))
    }

    fn place(&self) -> String {
        self.key.to_string()
    }

    fn elsewhere(&self, place: &str) -> Result<Arc<dyn KeyToken>, KeyError> {
        let uri: Pkcs11Uri = place.parse().map_err(|e| KeyError::Token {
            key: place.to_owned(),
            detail: format!("keys/tls.previous.place does not hold a PKCS#11 URI: {e}"),
        })?;
        Ok(Arc::new(TokenHandle::own(&self.token, &uri)?))
    }
}

/// The tokens `node.toml` names: the signing key's and, if `[pkcs11] tls_key` is set, the
/// TLS key's.
#[derive(Debug, Default, Clone)]
pub struct ConfiguredTokens {
    pub signing: Option<TokenHandle>,
    pub tls: Option<TokenHandle>,
}

impl ConfiguredTokens {
    pub fn signing_dyn(&self) -> Option<Arc<dyn KeyToken>> {
        self.signing.clone().map(|h| Arc::new(h) as _)
    }

    pub fn tls_dyn(&self) -> Option<Arc<dyn KeyToken>> {
        self.tls.clone().map(|h| Arc::new(h) as _)
    }
}

/// Opens the tokens `node.toml` names, if it names any.
pub fn from_config(config: &kp_config::NodeConfig) -> Result<ConfiguredTokens, TokenError> {
    match &config.pkcs11 {
        None => Ok(ConfiguredTokens::default()),
        Some(p) => {
            let token = Pkcs11Token::open(TokenSettings::from_config(p)?)?;
            let signing = TokenHandle { token: token.clone(), key: p.signing_key.clone() };
            let tls = match &p.tls_key {
                Some(uri) => Some(TokenHandle::own(&token, uri)?),
                None => None,
            };
            Ok(ConfiguredTokens { signing: Some(signing), tls })
        }
    }
}
