//! The fast path: tokio TCP + rustls TLS 1.3 with libp2p-tls certificates
//! (docs/net-design.md §7).
//!
//! Both sides present the self-signed certificate libp2p-tls generates, whose
//! extension is signed by the node's identity key, so each side proves its peer
//! id exactly as on a libp2p TLS connection. We build our own rustls configs
//! instead of `libp2p::tls::make_*_config` to prefer AES-GCM (AES-NI), to use
//! our ALPN `shoal-xfer/1`, and to never log session keys.
//!
//! A client names the peer it expects; a different certificate aborts the
//! handshake with [`NetError::PeerIdMismatch`] before any application byte moves.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use libp2p::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{NetError, Result};
use crate::{IncomingTransfer, PathKind, TransferStream};

/// TCP connect timeout for outbound fast-path connections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TLS handshake timeout, both directions.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent inbound handshakes per listener; more connections are closed at once.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 64;
/// Concurrent inbound handshakes from one source (an IPv4 address or an IPv6
/// /64); more from it are closed at once, so one host cannot fill the pool.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// The ALPN of the fast path (`docs/protocol.md` §3).
pub const ALPN: &[u8] = shoal_core::proto::ALPN;

/// A peer presented a certificate for another peer id than the one expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer id mismatch: expected {expected}, the certificate proves {actual}")]
pub struct PeerIdMismatch {
    pub expected: PeerId,
    pub actual: PeerId,
}

/// The rustls configurations of one node's fast path. Certificates are
/// generated once per process (libp2p's TLS spec allows reuse).
#[derive(Clone)]
pub struct FastTls {
    local: PeerId,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for FastTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTls")
            .field("local", &self.local)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    // AES-GCM first: with AES-NI it is ~30 % faster than ChaCha20 here (note §7.2).
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::TlsConfig(e.to_string())
}

impl FastTls {
    /// Generates the certificate for `keypair` and builds both configurations.
    pub fn new(keypair: &Keypair) -> Result<Self> {
        let (cert, key) = certificate::generate(keypair).map_err(tls_err)?;
        let provider = provider();
        // A resolver, not `with_single_cert`: that one checks our certificate
        // with webpki, which rejects libp2p's critical extension.
        let own = Arc::new(OwnCert(Arc::new(CertifiedKey::new(
            vec![cert],
            aws_lc_rs::sign::any_ecdsa_type(&key).map_err(tls_err)?,
        ))));

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(Arc::new(PeerVerifier { expected: None }))
            .with_cert_resolver(own.clone());
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.send_tls13_tickets = 0;
        server.ignore_client_order = true;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier { expected: None }))
            .with_client_cert_resolver(own);
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        client.enable_sni = false;

        Ok(Self {
            local: keypair.public().to_peer_id(),
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// This node's peer id (the one its certificate proves).
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Connects to `addr` and completes a TLS 1.3 handshake that proves the
    /// server is `expected` (TCP connect ≤ [`CONNECT_TIMEOUT`], handshake ≤
    /// [`HANDSHAKE_TIMEOUT`]).
    ///
    /// A server that proves another id fails with [`NetError::PeerIdMismatch`].
    /// TLS 1.3 ordering: if the *server* rejects *our* certificate, this may
    /// return `Ok` and the failure shows on the first read, so the session must
    /// wait for the peer's first frame before trusting the connection.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: PeerId,
    ) -> Result<tokio_rustls::client::TlsStream<FastTcp>> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| NetError::FastConnect {
                addr,
                source: io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"),
            })?
            .map_err(|source| NetError::FastConnect { addr, source })?;
        self.connect_over(tcp, expected).await
    }

    /// The client side of [`FastTls::connect`] over a TCP connection the
    /// caller made (bound to a chosen local address, say).
    pub async fn connect_over(
        &self,
        tcp: TcpStream,
        expected: PeerId,
    ) -> Result<tokio_rustls::client::TlsStream<FastTcp>> {
        let addr = tcp.peer_addr().map_err(|source| NetError::FastConnect {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tcp.set_nodelay(true)
            .map_err(|source| NetError::FastConnect { addr, source })?;
        let tcp = buffered(tcp);

        let mut config = (*self.client).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(PeerVerifier {
                expected: Some(expected),
            }));
        let connector = TlsConnector::from(Arc::new(config));
        // SNI is off and unused: peers are identified by certificate, not by name.
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| NetError::Handshake {
                addr,
                reason: format!("no answer within {} s", HANDSHAKE_TIMEOUT.as_secs()),
            })?
            .map_err(|e| match find_mismatch(&e) {
                Some(ids) => NetError::PeerIdMismatch {
                    addr,
                    ids: Box::new(ids),
                },
                None => NetError::Handshake {
                    addr,
                    reason: e.to_string(),
                },
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(NetError::Handshake {
                addr,
                reason: "the peer does not speak shoal-xfer/1 (ALPN)".into(),
            });
        }
        Ok(tls)
    }

    /// Completes the server side of the handshake on an accepted socket
    /// (≤ [`HANDSHAKE_TIMEOUT`]) and returns the client's proven peer id.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(PeerId, tokio_rustls::server::TlsStream<FastTcp>)> {
        let addr = tcp.peer_addr().map_err(|source| NetError::FastConnect {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tcp.set_nodelay(true)
            .map_err(|source| NetError::FastConnect { addr, source })?;
        let tcp = buffered(tcp);
        let acceptor = TlsAcceptor::from(self.server.clone());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| NetError::Handshake {
                addr,
                reason: format!("no answer within {} s", HANDSHAKE_TIMEOUT.as_secs()),
            })?
            .map_err(|e| NetError::Handshake {
                addr,
                reason: e.to_string(),
            })?;
        let conn = tls.get_ref().1;
        // rustls accepts a client that offers no ALPN at all: refuse it here.
        if conn.alpn_protocol() != Some(ALPN) {
            return Err(NetError::Handshake {
                addr,
                reason: "the client did not negotiate shoal-xfer/1 (ALPN)".into(),
            });
        }
        let peer = match conn.peer_certificates() {
            Some([cert]) => certificate::parse(cert)
                .map_err(|e| NetError::Handshake {
                    addr,
                    reason: format!("bad client certificate: {e}"),
                })?
                .peer_id(),
            _ => {
                return Err(NetError::Handshake {
                    addr,
                    reason: "the client did not present exactly one certificate".into(),
                })
            }
        };
        Ok((peer, tls))
    }
}

/// Always presents this node's one certificate.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn find_mismatch(e: &io::Error) -> Option<PeerIdMismatch> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            other.downcast_ref::<PeerIdMismatch>().copied()
        }
        _ => None,
    }
}

/// The socket under a fast-path TLS stream: reads go through a buffer.
pub type FastTcp = tokio::io::BufReader<TcpStream>;

/// Size of [`FastTcp`]'s read buffer. rustls asks its transport for at most
/// 4 KiB per read, so without a buffer a GiB costs ~260 000 `recv` calls;
/// with it, one call per 128 KiB (the copy out of the buffer is cheaper
/// than the system calls it saves). Writes pass straight through.
pub const FAST_READ_BUFFER: usize = 128 * 1024;

fn buffered(tcp: TcpStream) -> FastTcp {
    tokio::io::BufReader::with_capacity(FAST_READ_BUFFER, tcp)
}

/// Runs the accept loop of one fast-path listener until the task is aborted:
/// at most [`MAX_CONCURRENT_HANDSHAKES`] handshakes at once and
/// [`MAX_HANDSHAKES_PER_SOURCE`] from one source (extra sockets are closed),
/// each bounded by [`HANDSHAKE_TIMEOUT`]; authenticated streams go to
/// `incoming` with `try_send` (a full queue closes the connection: the consumer
/// is overloaded and the peer will retry or use another path).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: FastTls,
    incoming: mpsc::Sender<IncomingTransfer>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let sources = crate::limit::PerSource::new(MAX_HANDSHAKES_PER_SOURCE);
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("fast-path accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(source) = sources.try_acquire(crate::limit::source_of(from.ip())) else {
            tracing::debug!(%from, "fast-path handshakes from this source at their limit; closing a new connection");
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("fast-path handshake limit reached; closing a new connection");
            continue;
        };
        let tls = tls.clone();
        let incoming = incoming.clone();
        let remote = tcp.peer_addr().ok().map(crate::addrs::fast_multiaddr);
        tokio::spawn(async move {
            let _permit = permit;
            let _source = source;
            match tls.accept(tcp).await {
                Ok((peer, stream)) => {
                    let stream: TransferStream = Box::new(stream);
                    if incoming
                        .try_send(IncomingTransfer {
                            peer,
                            stream,
                            path: PathKind::Fast,
                            remote,
                        })
                        .is_err()
                    {
                        tracing::debug!(%peer, "incoming transfer queue full; closing fast-path connection");
                    }
                }
                Err(e) => tracing::debug!("fast-path handshake failed: {e}"),
            }
        });
    }
}

/// Certificate checks for both directions: exactly one certificate, a valid
/// libp2p extension (checked by `certificate::parse`, which also checks the
/// validity period), and, for a client, the expected peer id.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<PeerId>,
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> std::result::Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p peer must present exactly one certificate".into(),
            ));
        }
        let cert = certificate::parse(end_entity).map_err(other_cert_error)?;
        if let Some(expected) = self.expected {
            let actual = cert.peer_id();
            if actual != expected {
                return Err(other_cert_error(PeerIdMismatch { expected, actual }));
            }
        }
        Ok(())
    }
}

fn other_cert_error(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)
        .map_err(other_cert_error)?
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

/// The schemes libp2p-tls verifies (its verifier.rs), preferred first.
fn schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA512,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not allowed on the shoal fast path".into())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}
