//! The shoal node: transfer sessions over any authenticated byte stream, one task
//! per content driving the `shoal_swarm` scheduler against `shoal_store`, and the
//! [`Node`] facade (serve inbound streams, download files and collections).
//!
//! Networking is not here: a stream comes from the caller together with the
//! transport-authenticated [`PeerId`](libp2p_identity::PeerId) of the remote, and
//! downloads dial through a [`Connector`].

mod content;
mod error;
mod node;
mod session;

pub use error::NodeError;
pub use node::{Connector, DownloadHandle, Node, NodeConfig, PeerProgress, Progress};
pub use session::{BoxStream, Stream};
