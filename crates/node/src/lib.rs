//! The shoal node: transfer sessions over any authenticated byte stream, one task
//! per content driving the `shoal_swarm` scheduler against `shoal_store`, and the
//! [`TransferService`] facade (serve inbound streams, download files and collections).
//!
//! The transfer layer does not depend on networking: a stream comes from the
//! caller together with the transport-authenticated
//! [`PeerId`](libp2p_identity::PeerId) of the remote, and downloads dial through
//! a [`Connector`]. [`runtime`] wires it to `shoal-net`: a full [`host::Host`]
//! (store + identity + `Net` + accept loop + DHT announcements) and
//! [`host::NetConnector`] (ticket providers plus a DHT lookup loop).

pub mod access;
mod content;
pub mod control;
mod error;
pub mod host;
mod limit;
mod session;
mod transfer;

pub use error::NodeError;
pub use limit::{Counters, Limits};
pub use session::{BoxStream, Stream};
pub use transfer::{
    AddressBook, Connector, DownloadHandle, NodeConfig, PeerProgress, Progress, TransferService,
    PEX_MAX_LEARNED, PEX_NEW_PER_MESSAGE,
};
