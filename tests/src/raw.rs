//! A raw peer: holds an enrolled participant's keys and speaks the wire protocol directly,
//! frame by frame, so tests can send what a well-behaved node never would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kp_keys::NodeKeys;
use kp_node::net::conn::{FrameReader, FrameWriter, LinkError};
use kp_protocol::frame::PROTOCOL_VERSION;
use kp_protocol::{Body, Frame, ParticipantCode, RejectCode, SignedDocument, Timestamp};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Accepts any server certificate: the raw peer tests the server, not itself.
#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A TLS client configuration presenting no certificate: a stranger on the network, who
/// still gets the server's handshake signature (TLS 1.3 signs before it asks for the client's).
pub fn stranger_config() -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(kp_node::net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS client configuration presenting `cert_der`/`key_der`.
pub fn client_config(cert_der: &[u8], key_pkcs8: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = kp_node::net::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec())),
        )
        .expect("a client certificate");
    Arc::new(config)
}

/// Opens a TLS connection to `addr` presenting `keys`' TLS certificate.
pub async fn connect_tls(addr: SocketAddr, keys: &NodeKeys) -> Result<TlsStream<TcpStream>, LinkError> {
    connect_tls_over(TcpStream::connect(addr).await?, keys).await
}

/// TLS over a TCP connection already open (one with a small receive buffer, say).
pub async fn connect_tls_over(tcp: TcpStream, keys: &NodeKeys) -> Result<TlsStream<TcpStream>, LinkError> {
    let config = client_config(
        &keys.tls_certificate,
        &keys.tls.file().expect("the raw client needs a TLS key in a file").to_pkcs8_der(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("peer.kpnode.invalid").expect("a name");
    connector.connect(name, tcp).await.map_err(|e| LinkError::Tls(e.to_string()))
}

/// A connected raw peer.
#[derive(Debug)]
pub struct RawPeer {
    pub reader: FrameReader<ReadHalf<TlsStream<TcpStream>>>,
    pub writer: FrameWriter<WriteHalf<TlsStream<TcpStream>>>,
}

impl RawPeer {
    /// Connects as `participant` with `keys` and exchanges Hello.
    pub async fn connect(
        addr: SocketAddr,
        keys: &NodeKeys,
        participant: ParticipantCode,
    ) -> Result<RawPeer, LinkError> {
        RawPeer::connect_over(TcpStream::connect(addr).await?, keys, participant).await
    }

    /// As `connect`, over a TCP connection already open.
    pub async fn connect_over(
        tcp: TcpStream,
        keys: &NodeKeys,
        participant: ParticipantCode,
    ) -> Result<RawPeer, LinkError> {
        let tls = connect_tls_over(tcp, keys).await?;
        let (rd, wr) = tokio::io::split(tls);
        let mut peer =
            RawPeer { reader: FrameReader::new(rd, 4 << 20), writer: FrameWriter::new(wr, 4 << 20) };
        peer.writer
            .send(&Frame::Hello { version: PROTOCOL_VERSION, participant, software: "raw-test-peer".into() })
            .await?;
        match peer.reader.read_frame_within(Duration::from_secs(10), "waiting for Hello").await? {
            Some(Frame::Hello { .. }) => Ok(peer),
            other => Err(LinkError::Protocol(format!("expected Hello, got {other:?}"))),
        }
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        self.writer.send(frame).await
    }

    /// The next frame, within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<Option<Frame>, LinkError> {
        self.reader.read_frame_within(limit, "waiting for a frame").await
    }

    /// Delivers `doc` and returns the node's answer (within 10 s).
    pub async fn deliver(&mut self, doc: &kp_protocol::SignedDocument) -> Result<Option<Frame>, LinkError> {
        self.send(&Frame::Deliver { message_id: doc.message_id(), document: doc.clone() }).await?;
        self.recv(Duration::from_secs(10)).await
    }
}

/// Connects to the node at `addr` as `participant` with `keys`, delivers `doc` and returns
/// the node's answer: the one-document exchange of a hostile or hand-made delivery.
pub fn deliver_one(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    keys: &NodeKeys,
    participant: ParticipantCode,
    doc: &kp_protocol::SignedDocument,
) -> Option<Frame> {
    rt.block_on(async {
        let mut raw = RawPeer::connect(addr, keys, participant).await.expect("the raw peer connects");
        raw.deliver(doc).await.expect("the node answers")
    })
}

/// `body` signed at `at` in the name of `signer` with the file signing key in `keys`: a
/// document made by hand (forged, misaddressed, out of its signer's range, signed with a key
/// kept from before a rotation), as no node would make it.
pub fn sign_by_hand<B: Body>(body: &B, signer: &str, keys: &NodeKeys, at: Timestamp) -> SignedDocument {
    SignedDocument::sign(
        body,
        signer.parse().expect("a participant code"),
        keys.signing.file().expect("a file key").signing_key(),
        at,
    )
}

/// The detail of `reply`, which must be a Reject with `code`.
#[track_caller]
pub fn rejected(reply: &Option<Frame>, code: RejectCode) -> &str {
    match reply {
        Some(Frame::Reject { code: got, detail, .. }) => {
            assert_eq!(*got, code, "{detail}");
            detail
        }
        other => panic!("expected a Reject ({code:?}), got {other:?}"),
    }
}

/// How a node answered a client that completes TLS and sends a Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The node answered the Hello with its own: the client is in.
    Accepted,
    /// The node said no: a TLS alert or error, or the connection closed, or a frame other
    /// than Hello (the detail says which).
    Refused(String),
    /// Nothing within the limit: neither in nor refused (a hung node, or one that accepted
    /// and waits). Never evidence of a refusal.
    Silent,
}

/// Connects to `addr` with `keys`, sends a Hello naming `participant`, and reports how the
/// node answered within `limit`. With TLS 1.3 a server refuses a client certificate after
/// the client's side of the handshake is done, so the refusal (an alert) often arrives only
/// at the first read: that read is what tells refused from accepted from silent.
pub async fn admission(
    addr: SocketAddr,
    keys: &NodeKeys,
    participant: ParticipantCode,
    limit: Duration,
) -> Admission {
    let attempt = async {
        let tls = match connect_tls(addr, keys).await {
            Ok(tls) => tls,
            Err(e) => return Admission::Refused(format!("at the handshake: {e}")),
        };
        let (rd, wr) = tokio::io::split(tls);
        let mut reader = FrameReader::new(rd, 4 << 20);
        let mut writer = FrameWriter::new(wr, 4 << 20);
        let hello = Frame::Hello { version: PROTOCOL_VERSION, participant, software: "raw-test-peer".into() };
        if let Err(e) = writer.send(&hello).await {
            return Admission::Refused(format!("sending Hello: {e}"));
        }
        match reader.read_frame().await {
            Ok(Some(Frame::Hello { .. })) => Admission::Accepted,
            Ok(Some(other)) => Admission::Refused(format!("answered with {}", other.name())),
            Ok(None) => Admission::Refused("closed the connection".into()),
            Err(e) => Admission::Refused(e.to_string()),
        }
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or(Admission::Silent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that completes nothing: the client must report Silent, not Refused.
    #[test]
    fn a_silent_node_is_not_counted_as_a_refusal() {
        let rt = crate::runtime();
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::init_dir(tmp.path(), "AE", 0);
        let keys = NodeKeys::load(&dir.keys_dir()).unwrap();
        let got = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hold = tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(s);
            });
            let got = admission(addr, &keys, "AE".parse().unwrap(), Duration::from_millis(500)).await;
            hold.abort();
            got
        });
        assert_eq!(got, Admission::Silent);
    }
}
