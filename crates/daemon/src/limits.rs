//! Applying [`Settings`] to the running peer, live.

use shoal_node::host::{Host, HostConfig};
use shoal_node::Limits;

use crate::Settings;

fn limits_of(s: &Settings) -> Limits {
    Limits {
        upload: s.upload_limit,
        download: s.download_limit,
    }
}

/// Puts the settings into a peer's configuration before it starts.
pub(crate) fn configure(cfg: &mut HostConfig, s: &Settings) {
    cfg.net.limits.max_established = s.max_connections;
    cfg.node.max_peers = s.max_peers_per_transfer;
    cfg.limits = limits_of(s);
}

/// Applies every setting to a running peer: rate limits, the connection
/// limit (new connections are checked against it at once; connections above
/// a lowered limit stay until they close) and the most peers per transfer
/// (running transfers dial and accept against it at once).
pub(crate) async fn apply(peer: &Host, s: &Settings) {
    peer.apply_settings(limits_of(s), s.max_peers_per_transfer, s.max_connections)
        .await;
    if let Some(t) = peer.transfers() {
        t.set_seed_limits(seed_limits(s));
    }
}

/// When completed downloads stop seeding.
pub(crate) fn seed_limits(s: &Settings) -> shoal_node::transfers::SeedLimits {
    shoal_node::transfers::SeedLimits {
        ratio: s.seed_ratio_limit,
        time: s.seed_time_limit.map(std::time::Duration::from_secs),
    }
}

/// Totals for `/metrics`.
pub(crate) struct Counters {
    pub uploaded: u64,
    pub downloaded: u64,
    pub pieces_verified: u64,
    pub pieces_failed: u64,
}

/// The peer's traffic counters (bytes on transfer streams, pieces verified and
/// failed), since the daemon started.
pub(crate) fn counters(st: &crate::AppState) -> Counters {
    let c = st.peer.counters();
    Counters {
        uploaded: c.bytes_up,
        downloaded: c.bytes_down,
        pieces_verified: c.pieces_verified,
        pieces_failed: c.pieces_failed,
    }
}
