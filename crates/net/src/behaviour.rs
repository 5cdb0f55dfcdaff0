//! The composed libp2p `NetworkBehaviour` (docs/net-design.md §2).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, identify, kad, mdns, ping, relay, upnp, StreamProtocol,
};

use crate::config::{DhtMode, NetConfig};

/// identify's protocol version: peers with another value are still served,
/// but it tells operators which network a peer belongs to.
pub const IDENTIFY_PROTOCOL: &str = "/shoal/1.0.0";

/// Provider records one node keeps (its own and others'); libp2p's default
/// of 1024 would refuse a node's 1025th public share.
const MAX_PROVIDED_KEYS: usize = 1 << 16;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    // First, so that denied connections are refused before others keep state.
    pub limits: connection_limits::Behaviour,
    /// Per source address: one host cannot fill the pending pool.
    pub sources: crate::source_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    // mDNS and UPnP exist only when switched on: constructing them already
    // starts multicast sockets or a gateway search.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub autonat_client: autonat::v2::client::Behaviour,
    pub autonat_server: autonat::v2::server::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: Toggle<dcutr::Behaviour>,
    pub upnp: Toggle<upnp::tokio::Behaviour>,
    pub stream: libp2p_stream::Behaviour,
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &NetConfig,
    ) -> Result<Self, BoxError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::Behaviour::new(libp2p_limits(&cfg.limits));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(cfg.agent_version.clone())
                .with_push_listen_addr_updates(true),
        );

        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(15))
                .with_timeout(Duration::from_secs(20)),
        );

        let protocol = StreamProtocol::try_from_owned(cfg.kad_protocol.clone())
            .map_err(|e| format!("Kademlia protocol name {:?}: {e}", cfg.kad_protocol))?;
        let mut kad_cfg = kad::Config::new(protocol);
        kad_cfg
            .set_provider_publication_interval(Some(cfg.provider_publication_interval))
            .set_provider_record_ttl(Some(cfg.provider_record_ttl))
            .set_query_timeout(Duration::from_secs(30))
            // Inbound provider records come to the swarm task, which stores them
            // and reports them; value records (unused by shoal) are refused.
            .set_record_filtering(kad::StoreInserts::FilterBoth);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_provided_keys: MAX_PROVIDED_KEYS,
                ..Default::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
        match cfg.dht_mode {
            DhtMode::Auto => kad.set_mode(None),
            DhtMode::Server => kad.set_mode(Some(kad::Mode::Server)),
            DhtMode::Client => kad.set_mode(Some(kad::Mode::Client)),
        }

        let mdns = Toggle::from(
            cfg.mdns
                .then(|| mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id))
                .transpose()?,
        );

        let relay_server = Toggle::from(cfg.relay_server.then(|| {
            relay::Behaviour::new(
                peer_id,
                relay::Config {
                    max_circuit_bytes: cfg.relay_max_circuit_bytes,
                    max_circuit_duration: cfg.relay_max_circuit_duration,
                    ..Default::default()
                },
            )
        }));

        let upnp = Toggle::from(cfg.upnp.then(upnp::tokio::Behaviour::default));

        Ok(Self {
            limits,
            sources: Default::default(),
            identify,
            ping,
            kad,
            mdns,
            autonat_client: autonat::v2::client::Behaviour::default(),
            autonat_server: autonat::v2::server::Behaviour::default(),
            relay_server,
            relay_client,
            dcutr: Toggle::from(cfg.hole_punching.then(|| dcutr::Behaviour::new(peer_id))),
            upnp,
            stream: libp2p_stream::Behaviour::new(),
        })
    }
}

/// libp2p's form of shoal's connection limits.
pub(crate) fn libp2p_limits(
    l: &crate::config::ConnectionLimits,
) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(l.max_pending_incoming))
        .with_max_pending_outgoing(Some(l.max_pending_outgoing))
        .with_max_established(Some(l.max_established))
        .with_max_established_per_peer(Some(l.max_established_per_peer))
}
