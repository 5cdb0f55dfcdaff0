//! The shoal node: transfer sessions over any authenticated byte stream, one task
//! per content driving the `shoal_swarm` scheduler against `shoal_store`, and the
//! [`Node`] facade (serve inbound streams, download files and collections).
//!
//! The transfer layer does not depend on networking: a stream comes from the
//! caller together with the transport-authenticated
//! [`PeerId`](libp2p_identity::PeerId) of the remote, and downloads dial through
//! a [`Connector`]. [`runtime`] wires it to `shoal-net`: a full [`runtime::Peer`]
//! (store + identity + `Net` + accept loop + DHT announcements) and
//! [`runtime::NetConnector`] (ticket providers plus a DHT lookup loop).

pub mod access;
mod content;
pub mod control;
mod error;
mod limit;
mod node;
pub mod runtime;
mod session;

pub use error::NodeError;
pub use limit::{Counters, Limits};
pub use node::{
    AddressBook, Connector, DownloadHandle, Node, NodeConfig, PeerProgress, Progress,
    PEX_MAX_LEARNED, PEX_NEW_PER_MESSAGE,
};
pub use session::{BoxStream, Stream};
