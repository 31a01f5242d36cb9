//! Mutual TLS 1.3 between nodes, trusting pinned keys instead of a CA.
//!
//! Each side presents its self-signed certificate. The verifiers here accept a certificate
//! only if its Ed25519 key is a currently trusted TLS key of an enrolled peer (the dialler
//! additionally requires the peer it meant to reach), and check the handshake signature with
//! that very key. Names, dates and chains in the certificate are ignored: they prove nothing
//! here. A refused key is logged with its digest as `kpnode keys` lists it on the node that holds
//! it, and, when it is or was the key of a peer ever enrolled, with that peer's enrolment
//! fingerprint, so operators can tell who tried.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use kp_protocol::{Digest, ParticipantCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::clock::Clock;
use crate::metrics::Metrics;
use kp_exchange::trust::{judge_link, Distrust, TrustCell};
use kp_keys::NodeTlsKey;

/// The node's own TLS certificates: the current one, and after a TLS rotation the previous
/// one, which the node keeps presenting when it dials a peer that has not yet acknowledged
/// the rotation (that peer knows no other key, and the statement reaches it over this very
/// link).
#[derive(Debug)]
pub struct Identity(RwLock<Keys>);

#[derive(Debug, Clone)]
struct Keys {
    current: Arc<CertifiedKey>,
    previous: Option<Arc<CertifiedKey>>,
}

impl Identity {
    pub fn new(
        provider: &CryptoProvider,
        cert_der: &[u8],
        key: &NodeTlsKey,
        previous: Option<(&[u8], &NodeTlsKey)>,
    ) -> Result<Identity, Error> {
        let current = Arc::new(certified_key(provider, cert_der, key)?);
        let previous = match previous {
            Some((c, k)) => Some(Arc::new(certified_key(provider, c, k)?)),
            None => None,
        };
        Ok(Identity(RwLock::new(Keys { current, previous })))
    }

    /// A TLS rotation: the new key becomes current, the current one previous.
    pub fn rotate(&self, provider: &CryptoProvider, cert_der: &[u8], key: &NodeTlsKey) -> Result<(), Error> {
        let key = Arc::new(certified_key(provider, cert_der, key)?);
        let mut keys = self.0.write().unwrap_or_else(|p| p.into_inner());
        keys.previous = Some(std::mem::replace(&mut keys.current, key));
        Ok(())
    }

    pub fn has_previous(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).previous.is_some()
    }

    fn get(&self, previous: bool) -> Arc<CertifiedKey> {
        let keys = self.0.read().unwrap_or_else(|p| p.into_inner());
        match (&keys.previous, previous) {
            (Some(p), true) => p.clone(),
            _ => keys.current.clone(),
        }
    }
}

/// The certificate and its key for rustls: a file key is loaded by the provider (ring); a key
/// in a token signs each handshake through the token ([`TokenTlsKey`]).
fn certified_key(
    provider: &CryptoProvider,
    cert_der: &[u8],
    key: &NodeTlsKey,
) -> Result<CertifiedKey, Error> {
    let key: Arc<dyn rustls::sign::SigningKey> = match key {
        NodeTlsKey::File(k) => provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.to_pkcs8_der().to_vec())))?,
        NodeTlsKey::Token(k) => Arc::new(TokenTlsKey(k.clone())),
    };
    Ok(CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], key))
}

/// A TLS key in a PKCS#11 token as rustls signs with it: Ed25519 only (the one scheme the
/// peers accept), each handshake signature made by the token (`CKM_EDDSA`). A token that
/// cannot sign fails the handshake with the token's words, logged; the link supervisor dials
/// again later and the accept loop keeps accepting, so links come back with the token.
#[derive(Debug)]
pub struct TokenTlsKey(pub Arc<dyn kp_keys::SigningBackend>);

impl rustls::sign::SigningKey for TokenTlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(TokenTlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        Some(kp_keys::tlscert::ed25519_spki(&self.0.verifying_key().to_bytes()).into())
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ED25519
    }
}

#[derive(Debug)]
struct TokenTlsSigner(Arc<dyn kp_keys::SigningBackend>);

/// How many handshake signatures may wait for the token at once, process-wide, and how long
/// a handshake waits for a place before it fails. In TLS 1.3 the server signs before it
/// sees the client's certificate, so anyone who can reach the peer port can ask for a
/// signature: the bound keeps strangers from tying up threads on a slow token, and the
/// document-signing key (often on the same token) from waiting behind an unbounded queue.
pub const TOKEN_HANDSHAKES_AT_ONCE: usize = 2;
const TOKEN_HANDSHAKE_WAIT: Duration = Duration::from_millis(200);

static TOKEN_HANDSHAKES: Gate = Gate { busy: Mutex::new(0), freed: Condvar::new() };

/// A counting semaphore for blocking callers (the signature runs inside rustls's
/// synchronous state machine, so an async one would not do).
struct Gate {
    busy: Mutex<usize>,
    freed: Condvar,
}

struct Place<'a>(&'a Gate);

impl Gate {
    fn enter(&self, limit: usize, wait: Duration) -> Option<Place<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= limit {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self.freed.wait_timeout(busy, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *busy += 1;
        Some(Place(self))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Runs a blocking call made from inside a future's poll: on a multi-thread runtime the
/// worker hands its other tasks to another thread first (`block_in_place`), so a slow token
/// never stalls the API, the links or issuing.
fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// When the last "handshake could not be signed" warning was logged (ms since the epoch):
/// a stranger can make a handshake fail as often as it connects, so the log gets one line
/// per [`WARN_EVERY_MS`], the others go to debug.
static LAST_WARN_MS: AtomicI64 = AtomicI64::new(i64::MIN);
const WARN_EVERY_MS: i64 = 10_000;

fn warn_limited(error: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let last = LAST_WARN_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= WARN_EVERY_MS
        && LAST_WARN_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(%error, "the TLS handshake could not be signed: the TLS key's token failed (further failures within 10 s are logged at debug level)");
    } else {
        tracing::debug!(%error, "the TLS handshake could not be signed");
    }
}

impl rustls::sign::Signer for TokenTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        off_the_worker(|| {
            let Some(_place) = TOKEN_HANDSHAKES.enter(TOKEN_HANDSHAKES_AT_ONCE, TOKEN_HANDSHAKE_WAIT) else {
                let e = format!(
                    "{TOKEN_HANDSHAKES_AT_ONCE} handshakes are already waiting for the token of {}",
                    self.0.location()
                );
                warn_limited(&e);
                return Err(Error::General(format!("the TLS key could not sign the handshake: {e}")));
            };
            self.0.sign_message(message).map(|s| s.to_vec()).map_err(|e| {
                warn_limited(&e.to_string());
                Error::General(format!("the TLS key could not sign the handshake: {e}"))
            })
        })
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// The crypto provider: ring, TLS 1.3 suites only.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13);
    Arc::new(p)
}

/// Everything the verifiers need.
#[derive(Debug)]
pub struct TlsContext {
    pub provider: Arc<CryptoProvider>,
    pub identity: Arc<Identity>,
    pub trust: Arc<TrustCell>,
    pub clock: Arc<dyn Clock>,
    pub grace_millis: i64,
    pub metrics: Arc<Metrics>,
}

impl TlsContext {
    /// The configuration for accepting peers.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        let config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(PeerVerifier { ctx: self.clone(), expected: None }))
            .with_cert_resolver(Arc::new(OwnCert(self.identity.clone(), false)));
        Ok(Arc::new(config))
    }

    /// The configuration for dialling `peer`, presenting the previous certificate if
    /// `previous` (see [`Identity`]).
    pub fn client_config(
        self: &Arc<Self>,
        peer: ParticipantCode,
        previous: bool,
    ) -> Result<Arc<rustls::ClientConfig>, Error> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier {
                ctx: self.clone(),
                expected: Some(peer),
            }))
            .with_client_cert_resolver(Arc::new(OwnCert(self.identity.clone(), previous)));
        Ok(Arc::new(config))
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }

    /// The enrolled peer whose trusted TLS key is in `cert`, if any.
    pub fn peer_of(&self, cert: &CertificateDer<'_>) -> Option<ParticipantCode> {
        let key = kp_keys::tlscert::public_key(cert).ok()?;
        self.trust.get().peer_for_tls_key(&key, self.clock.now(), self.grace_millis)
    }

    /// Who a refused key belongs to, for the log: the peer (enrolled now or once) whose
    /// history holds it at any time, and the enrolment fingerprint its operator read out. A
    /// stranger's key has none: its digest is all there is to compare.
    fn owner_of_refused(&self, cert: &CertificateDer<'_>) -> Option<(ParticipantCode, kp_keys::Fingerprint)> {
        let key = kp_keys::tlscert::public_key(cert).ok()?;
        let trust = self.trust.get();
        let now = self.clock.now();
        let owner = trust.peers().find(|p| p.history.accepts_tls_key(&key, now, i64::MAX))?;
        Some((owner.participant, owner.fingerprint))
    }
}

/// A short, stable name of a TLS key for logs: the first bytes of its SHA-256.
pub fn key_digest(cert: &CertificateDer<'_>) -> String {
    match kp_keys::tlscert::public_key(cert) {
        Ok(k) => format!("sha256:{}", Digest::of(&k).short()),
        Err(_) => "not an Ed25519 key".into(),
    }
}

/// Verifies a peer's certificate against the trusted keys: any enrolled peer when accepting
/// (`expected` is None), the one being dialled otherwise.
#[derive(Debug)]
struct PeerVerifier {
    ctx: Arc<TlsContext>,
    expected: Option<ParticipantCode>,
}

impl PeerVerifier {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<ParticipantCode, Error> {
        match (self.ctx.peer_of(cert), self.expected) {
            (Some(p), None) => Ok(p),
            (Some(p), Some(e)) if p == e => Ok(p),
            (found, expected) => {
                self.ctx.metrics.handshakes_refused.inc();
                let owner = self.ctx.owner_of_refused(cert);
                tracing::warn!(
                    tls_key = %key_digest(cert),
                    fingerprint = %owner.map_or_else(
                        || "none (not a key of any peer ever enrolled)".to_owned(),
                        |(p, fp)| format!("{fp} ({p})")
                    ),
                    belongs_to = ?found,
                    expected = ?expected,
                    "refused a TLS peer: its key is not a trusted key of an enrolled peer{}; \
                     `kpnode keys` on the other node lists its TLS keys by this digest",
                    if expected.is_some() { " we dialled" } else { "" }
                );
                Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The key checked here is the one pinned in `check`: both come from the same parse.
        let spki = kp_keys::tlscert::spki(cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls::pki_types::SubjectPublicKeyInfoDer::from(spki),
            dss,
            self.ctx.algorithms(),
        )
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        false
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Presents the node's certificate (the previous one if `.1`), on either side.
#[derive(Debug)]
struct OwnCert(Arc<Identity>, bool);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get(self.1))
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes.contains(&SignatureScheme::ED25519).then(|| self.0.get(self.1))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Judging open links again: whether the key a link authenticated with is still trusted.
impl TlsContext {
    /// The enrolled peer whose trusted TLS key `key` is, if any.
    pub fn peer_of_key(&self, key: &[u8; 32]) -> Option<ParticipantCode> {
        self.trust.get().peer_for_tls_key(key, self.clock.now(), self.grace_millis)
    }

    /// Judges an open link again: whether `key`, the TLS key the link authenticated with, is
    /// still a trusted key of `peer` in `trust` now. The rule is the handshake's own, so a link
    /// stays open exactly as long as a new connection with the same key would be admitted as
    /// the same peer.
    pub fn judge(
        &self,
        trust: &kp_exchange::trust::Trust,
        peer: ParticipantCode,
        key: &[u8; 32],
    ) -> Result<(), Distrust> {
        judge_link(trust, peer, key, self.clock.now(), self.grace_millis)
    }

    /// [`judge`](Self::judge) against the trust in force now.
    pub fn judge_now(&self, peer: ParticipantCode, key: &[u8; 32]) -> Result<(), Distrust> {
        self.judge(&self.trust.get(), peer, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kp_exchange::trust::Trust;

    const RU: ParticipantCode = ParticipantCode::from_static("RU");
    const KZ: ParticipantCode = ParticipantCode::from_static("KZ");

    /// An open link of a peer whose record stopped loading is closed as `quarantined`, not as
    /// if the peer had never been enrolled, and counted under that reason.
    #[test]
    fn a_quarantined_peers_link_is_judged_quarantined() {
        let provider = provider();
        let own = kp_keys::TlsKeyPair::generate();
        let cert = kp_keys::tlscert::self_signed(&own, ParticipantCode::from_static("IN")).unwrap();
        let own = NodeTlsKey::File(Arc::new(own));
        let identity = Identity::new(&provider, &cert, &own, None).unwrap();
        let trust = Trust::build(
            vec![(RU, Err("malformed: LimitExceeded".into()))],
            Vec::new(),
            &Default::default(),
            None,
        );
        let metrics = Arc::new(Metrics::default());
        let ctx = TlsContext {
            provider,
            identity: Arc::new(identity),
            trust: Arc::new(TrustCell::new(trust.clone())),
            clock: Arc::new(crate::clock::ManualClock::new(kp_protocol::Timestamp::from_unix_millis(0))),
            grace_millis: 0,
            metrics: metrics.clone(),
        };
        let key = kp_keys::TlsKeyPair::generate().verifying_key().to_bytes();
        let why = ctx.judge_now(RU, &key).unwrap_err();
        assert_eq!(why, Distrust::Quarantined);
        assert!(why.to_string().contains("kpnode peer add"), "{why}");
        assert_eq!(ctx.judge(&trust, KZ, &key), Err(Distrust::NotEnrolled), "a peer never enrolled");
        metrics.link_closed_untrusted(RU, why.label());
        assert!(
            metrics
                .render(&[])
                .contains(r#"kpnode_links_closed_untrusted_total{peer="RU",reason="quarantined"} 1"#),
            "{}",
            metrics.render(&[])
        );
    }
}
