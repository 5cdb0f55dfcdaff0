//! The crate's error type. Every message says what failed, on what, and what to do.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};

/// Why a networking operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    // ---- identity ----
    #[error("cannot {action} the node identity {path}: {source}; check that the data directory exists and is writable by you", path = .path.display())]
    IdentityIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the node identity {path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}` and start again", path = .path.display())]
    IdentityPermissions { path: PathBuf, mode: u32 },
    #[error("the node identity {path} is not a valid libp2p key ({reason}); move it away to create a new identity (peers will see a new peer id)", path = .path.display())]
    IdentityInvalid { path: PathBuf, reason: String },
    #[error("the node identity {path} is a {key_type} key, but shoal uses ed25519 keys; move it away to create a new identity", path = .path.display())]
    IdentityNotEd25519 { path: PathBuf, key_type: String },

    // ---- configuration ----
    #[error("invalid {flag} value {value:?}: {reason}")]
    Config {
        flag: &'static str,
        value: String,
        reason: String,
    },

    // ---- starting ----
    #[error("cannot listen on {addr}: {reason}; pick another address or port with --listen")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot listen for fast-path connections on {addr}: {source}; pick another address with --fast-listen, or --fast-listen off")]
    FastListen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the libp2p swarm ({what}): {reason}")]
    Swarm { what: &'static str, reason: String },
    #[error("cannot create the TLS configuration for the fast path: {0}")]
    TlsConfig(String),

    // ---- running ----
    #[error("the network task has stopped; restart the node")]
    Stopped,
    #[error("timed out after {secs} s while {what}; {hint}")]
    Timeout {
        what: String,
        secs: u64,
        hint: &'static str,
    },
    #[error(
        "cannot connect to peer {peer}: {reason}; check the ticket's addresses or try again later"
    )]
    Dial { peer: PeerId, reason: String },
    #[error("cannot open a transfer stream to peer {peer}: {reason}")]
    OpenStream { peer: PeerId, reason: String },
    #[error("cannot publish a provider record for {what}: {reason}")]
    Provide { what: String, reason: String },

    // ---- fast path ----
    #[error("fast-path peer at {addr} proved to be {}, not the expected {}; the address is stale or someone is impersonating the peer: connection aborted", .ids.actual, .ids.expected)]
    PeerIdMismatch {
        addr: SocketAddr,
        /// Boxed to keep `NetError` small.
        ids: Box<crate::fast::PeerIdMismatch>,
    },
    #[error("cannot connect to the fast path at {addr}: {source}")]
    FastConnect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake on the fast path with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
}

impl NetError {
    pub(crate) fn config(
        flag: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        NetError::Config {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
