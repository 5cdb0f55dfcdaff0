//! The shoal node as services behind one facade.
//!
//! - [`host::Host`]: the local node. It owns the store, the identity key, the
//!   network (`shoal-net`) and the services below, serves inbound streams,
//!   announces public shares, and offers what the CLI and the daemon do:
//!   [`Host::get`](host::Host::get), share and access management through
//!   [`Host::control`](host::Host::control), invites.
//! - [`TransferService`]: the transfer engine, one task per content id driving
//!   the `shoal_swarm` scheduler against `shoal_store` over any authenticated
//!   byte stream. It opens no socket itself: a stream comes from the caller with
//!   the transport-authenticated [`PeerId`](libp2p_identity::PeerId) of the
//!   remote, and downloads dial through a [`Connector`] (the host's is
//!   [`host::NetConnector`]). It names `shoal-net` types only for addresses.
//! - [`access`]: the one access decision every inbound stream passes.
//! - [`control`]: visibility, allowlists, invites and the access log.
//! - [`transfers`]: managed transfers (queue, pause, resume, cancel, persisted).

pub mod access;
mod choke;
mod content;
pub mod control;
mod error;
mod folder;
pub mod host;
mod limit;
mod session;
mod transfer;
pub mod transfers;

pub use error::NodeError;
pub use limit::{burst_bytes, Counters, Limits};
pub use session::{BoxStream, Stream};
pub use transfer::{
    AddressBook, Connector, DownloadHandle, FileChoice, FilePriority, NodeConfig, PeerProgress,
    Progress, Remote, ServedPeer, TransferService, Uploads, INBOUND_HELLO_WAIT, PEX_MAX_LEARNED,
    PEX_NEW_PER_MESSAGE,
};
