//! shoal's networking: the libp2p control plane and the TCP+TLS fast path
//! (design: `docs/net-design.md`).
//!
//! - [`identity`]: the node's persistent ed25519 key.
//! - [`config`]: [`NetConfig`] and the user-facing, unvalidated [`NetOptions`].
//! - [`Net`]: starts the libp2p swarm (QUIC + TCP, identify, ping, Kademlia,
//!   mDNS, AutoNAT v2, relay client/server, DCUtR, UPnP, connection limits,
//!   libp2p-stream) in a tokio task and opens transfer streams.
//! - [`fast`]: the direct TCP + TLS 1.3 path with libp2p-tls certificates.
//!
//! Whatever the path, a transfer stream is a [`TransferStream`] whose remote
//! peer id was proven during the handshake; the transfer protocol on top does
//! not know which path it runs on, only the [`PathKind`] label.

pub mod addrs;
mod behaviour;
pub mod config;
mod error;
pub mod fast;
pub mod identity;
pub mod limit;
mod net;
pub mod source_limits;

use tokio::io::{AsyncRead, AsyncWrite};

pub use config::{DhtMode, NetConfig, NetOptions};
pub use error::{NetError, Result};
pub use net::{
    content_id_of_key, provider_key, ConnectionInfo, Net, NetEvent, NetEvents, Reachability,
    FASTPATH_PROTOCOL, XFER_PROTOCOL,
};

/// Re-exported so users of this crate name the same types.
pub use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};

/// A byte stream to an authenticated peer (tokio I/O traits).
pub trait TransferIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> TransferIo for T {}

/// A transfer stream: TLS over TCP on the fast path, a libp2p stream otherwise.
pub type TransferStream = Box<dyn TransferIo>;

/// Which path a transfer stream runs on (for the UI and for pacing: relayed
/// circuits are usually byte- and time-limited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Direct TCP + TLS 1.3 (the fast path).
    Fast,
    /// A libp2p stream on a direct connection (QUIC or TCP).
    Direct,
    /// A libp2p stream through a relay.
    Relayed,
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathKind::Fast => "fast",
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        })
    }
}

/// An inbound transfer stream, from the fast-path listener or libp2p.
pub struct IncomingTransfer {
    /// The remote peer, proven by its certificate (fast path) or by libp2p.
    pub peer: PeerId,
    pub stream: TransferStream,
    pub path: PathKind,
    /// The remote address as far as known (the TCP peer of a fast-path
    /// connection; a libp2p connection's remote address).
    pub remote: Option<Multiaddr>,
}

impl std::fmt::Debug for IncomingTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingTransfer")
            .field("peer", &self.peer)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
