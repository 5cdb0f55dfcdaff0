//! Network configuration: [`NetConfig`] and the unvalidated, user-facing form
//! [`NetOptions`] (docs/net-design.md §2.2).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::error::{NetError, Result};

/// Default Kademlia protocol name: keeps shoal out of the IPFS DHT unless a user
/// sets `/ipfs/kad/1.0.0`.
pub const DEFAULT_KAD_PROTOCOL: &str = "/shoal/kad/1.0.0";
/// Default relay-server limit of bytes per relayed circuit (libp2p's default).
pub const DEFAULT_RELAY_MAX_CIRCUIT_BYTES: u64 = 128 * 1024;
/// Default relay-server limit of seconds per relayed circuit (libp2p's default).
pub const DEFAULT_RELAY_MAX_CIRCUIT_SECS: u64 = 120;

/// How the node takes part in the Kademlia DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DhtMode {
    /// Client until an external address is confirmed, then server (libp2p's default).
    #[default]
    Auto,
    /// Always answer DHT queries. Bootstrap nodes and loopback tests use this:
    /// a client-mode node refuses inbound DHT streams.
    Server,
    /// Never answer DHT queries.
    Client,
}

/// Swarm-wide connection limits (libp2p `connection_limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_pending_incoming: u32,
    pub max_pending_outgoing: u32,
    pub max_established: u32,
    pub max_established_per_peer: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            max_established: 256,
            max_established_per_peer: 4,
        }
    }
}

/// Everything [`crate::Net::start`] needs besides the keypair.
///
/// `Default` is loopback-safe: listens on `127.0.0.1` (TCP, QUIC and fast path on
/// ephemeral ports), mDNS and UPnP off, no relay server, empty bootstrap list.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// libp2p listen addresses (TCP and QUIC multiaddrs, or relay circuits).
    pub listen: Vec<Multiaddr>,
    /// Fast-path (TCP + TLS 1.3) listen addresses; empty turns the listener off.
    /// Outbound fast-path connections are attempted whatever this says.
    pub fast_listen: Vec<SocketAddr>,
    /// Kademlia bootstrap nodes, each `(peer, address without the /p2p suffix)`.
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Relays to reserve a circuit slot through, `(relay, address without /p2p)`;
    /// the circuit address becomes a listen address once accepted.
    pub relays: Vec<(PeerId, Multiaddr)>,
    /// Multicast DNS discovery on the LAN. Leaves the machine: off by default.
    pub mdns: bool,
    /// UPnP port mapping on the gateway. Leaves the machine: off by default.
    pub upnp: bool,
    /// Act as a relay (circuit relay v2 server) for other peers.
    pub relay_server: bool,
    /// Relay server: bytes per circuit before it is reset (0 = unlimited).
    pub relay_max_circuit_bytes: u64,
    /// Relay server: lifetime of a circuit.
    pub relay_max_circuit_duration: Duration,
    /// Try to upgrade relayed connections to direct ones (DCUtR). Tests that
    /// need a connection to stay relayed turn it off.
    pub hole_punching: bool,
    /// Kademlia protocol name; must start with `/`.
    pub kad_protocol: String,
    /// DHT participation.
    pub dht_mode: DhtMode,
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// Idle connections are closed after this long.
    pub idle_connection_timeout: Duration,
    /// Kademlia provider republication interval (libp2p default 12 h).
    pub provider_publication_interval: Duration,
    /// Kademlia provider record lifetime (libp2p default 48 h).
    pub provider_record_ttl: Duration,
    /// identify's agent version string.
    pub agent_version: String,
}

impl Default for NetConfig {
    fn default() -> Self {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            listen: socket_to_multiaddrs(lo),
            fast_listen: vec![lo],
            bootstrap: Vec::new(),
            relays: Vec::new(),
            mdns: false,
            upnp: false,
            relay_server: false,
            relay_max_circuit_bytes: DEFAULT_RELAY_MAX_CIRCUIT_BYTES,
            relay_max_circuit_duration: Duration::from_secs(DEFAULT_RELAY_MAX_CIRCUIT_SECS),
            hole_punching: true,
            kad_protocol: DEFAULT_KAD_PROTOCOL.to_owned(),
            dht_mode: DhtMode::Auto,
            limits: ConnectionLimits::default(),
            idle_connection_timeout: Duration::from_secs(60),
            provider_publication_interval: Duration::from_secs(12 * 3600),
            provider_record_ttl: Duration::from_secs(48 * 3600),
            agent_version: concat!("shoal/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Network options in the form users give them (addresses as text), before
/// validation; [`NetOptions::into_config`] checks them and builds the
/// [`NetConfig`]. Front ends (the CLI's flags and environment variables, a
/// configuration file) fill it in; this crate knows none of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    /// `IP:PORT` (TCP and QUIC on that port) or multiaddrs; empty: all interfaces, port 0.
    pub listen: Vec<String>,
    /// Fast-path `IP:PORT`s, or `off`; empty: the first listen IP, port + 1.
    pub fast_listen: Vec<String>,
    /// Bootstrap multiaddrs ending in `/p2p/PEER_ID`.
    pub bootstrap: Vec<String>,
    /// Relays to listen through, multiaddrs ending in `/p2p/PEER_ID`.
    pub relay: Vec<String>,
    pub mdns: bool,
    pub upnp: bool,
    pub relay_server: bool,
    pub relay_max_circuit_bytes: u64,
    pub relay_max_circuit_secs: u64,
    pub kad_protocol: String,
    pub dht_mode: DhtMode,
    pub max_connections: u32,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            fast_listen: Vec::new(),
            bootstrap: Vec::new(),
            relay: Vec::new(),
            mdns: false,
            upnp: false,
            relay_server: false,
            relay_max_circuit_bytes: DEFAULT_RELAY_MAX_CIRCUIT_BYTES,
            relay_max_circuit_secs: DEFAULT_RELAY_MAX_CIRCUIT_SECS,
            kad_protocol: DEFAULT_KAD_PROTOCOL.to_owned(),
            dht_mode: DhtMode::Auto,
            max_connections: 256,
        }
    }
}

impl NetOptions {
    /// Validates the flags and builds the configuration. Every error names the
    /// flag, the value and what is expected.
    pub fn into_config(self) -> Result<NetConfig> {
        let mut cfg = NetConfig::default();

        let listen_specs: Vec<ListenSpec> = if self.listen.is_empty() {
            vec![
                ListenSpec::Socket(SocketAddr::from(([0, 0, 0, 0], 0))),
                ListenSpec::Socket(SocketAddr::from(([0u16; 8], 0))),
            ]
        } else {
            self.listen
                .iter()
                .map(|s| parse_listen(s))
                .collect::<Result<_>>()?
        };
        cfg.listen = listen_specs
            .iter()
            .flat_map(ListenSpec::multiaddrs)
            .collect();

        cfg.fast_listen = parse_fast_listen(&self.fast_listen, &listen_specs)?;
        cfg.bootstrap = self
            .bootstrap
            .iter()
            .map(|s| parse_peer_addr("--bootstrap", s))
            .collect::<Result<_>>()?;
        cfg.relays = self
            .relay
            .iter()
            .map(|s| parse_peer_addr("--relay", s))
            .collect::<Result<_>>()?;
        cfg.mdns = self.mdns;
        cfg.upnp = self.upnp;
        cfg.relay_server = self.relay_server;
        cfg.relay_max_circuit_bytes = self.relay_max_circuit_bytes;
        cfg.relay_max_circuit_duration = Duration::from_secs(self.relay_max_circuit_secs);
        validate_kad_protocol(&self.kad_protocol)?;
        cfg.kad_protocol = self.kad_protocol;
        cfg.dht_mode = self.dht_mode;
        if self.max_connections == 0 {
            return Err(NetError::config(
                "--max-connections",
                "0",
                "at least 1 connection is needed",
            ));
        }
        cfg.limits.max_established = self.max_connections;
        Ok(cfg)
    }
}

/// One `--listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenSpec {
    /// `IP:PORT`: TCP and QUIC on that port.
    Socket(SocketAddr),
    /// A multiaddr, used unchanged.
    Multiaddr(Multiaddr),
}

impl ListenSpec {
    /// The libp2p listen multiaddrs for this value.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        match self {
            ListenSpec::Socket(sa) => socket_to_multiaddrs(*sa),
            ListenSpec::Multiaddr(m) => vec![m.clone()],
        }
    }

    /// The IP and TCP port this value listens on, if any.
    fn tcp_socket(&self) -> Option<SocketAddr> {
        match self {
            ListenSpec::Socket(sa) => Some(*sa),
            ListenSpec::Multiaddr(m) => {
                let mut ip = None;
                for p in m.iter() {
                    match p {
                        Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
                        Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
                        Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
                        _ => {}
                    }
                }
                None
            }
        }
    }
}

/// `/ip4/IP/tcp/PORT` and `/ip4/IP/udp/PORT/quic-v1` (`/ip6/` for v6).
pub fn socket_to_multiaddrs(sa: SocketAddr) -> Vec<Multiaddr> {
    let ip = match sa.ip() {
        IpAddr::V4(a) => Protocol::Ip4(a),
        IpAddr::V6(a) => Protocol::Ip6(a),
    };
    let base = Multiaddr::empty().with(ip);
    vec![
        base.clone().with(Protocol::Tcp(sa.port())),
        base.with(Protocol::Udp(sa.port())).with(Protocol::QuicV1),
    ]
}

/// Parses a `--listen` value: `IP:PORT` (`[V6]:PORT` for IPv6) or a multiaddr.
pub fn parse_listen(s: &str) -> Result<ListenSpec> {
    let s = s.trim();
    if s.starts_with('/') {
        let m = Multiaddr::from_str(s).map_err(|e| {
            NetError::config(
                "--listen",
                s,
                format!("not a valid multiaddr ({e}); example: /ip4/127.0.0.1/tcp/4001"),
            )
        })?;
        if !m.iter().any(|p| {
            matches!(
                p,
                Protocol::Tcp(_) | Protocol::QuicV1 | Protocol::P2pCircuit
            )
        }) {
            return Err(NetError::config(
                "--listen",
                s,
                "the multiaddr names no transport shoal listens on (tcp, udp/quic-v1 or p2p-circuit)",
            ));
        }
        Ok(ListenSpec::Multiaddr(m))
    } else {
        SocketAddr::from_str(s).map(ListenSpec::Socket).map_err(|_| {
            NetError::config(
                "--listen",
                s,
                "expected IP:PORT (e.g. 127.0.0.1:4001 or [::]:0) or a multiaddr (e.g. /ip4/127.0.0.1/tcp/4001)",
            )
        })
    }
}

fn parse_fast_listen(values: &[String], listen: &[ListenSpec]) -> Result<Vec<SocketAddr>> {
    if values.len() == 1 && values[0].trim().eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    if values.is_empty() {
        // Default: the first --listen IP, port + 1 (an ephemeral port stays ephemeral).
        return Ok(listen
            .iter()
            .find_map(ListenSpec::tcp_socket)
            .map(|sa| {
                let port = match sa.port() {
                    0 | u16::MAX => 0,
                    p => p + 1,
                };
                SocketAddr::new(sa.ip(), port)
            })
            .into_iter()
            .collect());
    }
    values
        .iter()
        .map(|s| {
            let s = s.trim();
            SocketAddr::from_str(s).map_err(|_| {
                NetError::config(
                    "--fast-listen",
                    s,
                    "expected IP:PORT (e.g. 127.0.0.1:4002), or `off` alone to disable the fast path",
                )
            })
        })
        .collect()
}

/// Parses a multiaddr that must end in `/p2p/PEER_ID` (bootstrap nodes, relays)
/// into the peer and the address without that suffix.
pub fn parse_peer_addr(flag: &'static str, s: &str) -> Result<(PeerId, Multiaddr)> {
    let s = s.trim();
    let mut m = Multiaddr::from_str(s).map_err(|e| {
        NetError::config(
            flag,
            s,
            format!("not a valid multiaddr ({e}); example: /ip4/192.0.2.1/udp/4001/quic-v1/p2p/12D3KooW..."),
        )
    })?;
    let peer = match m.pop() {
        Some(Protocol::P2p(peer)) => peer,
        _ => {
            return Err(NetError::config(
                flag,
                s,
                "the address must end in /p2p/PEER_ID so the node's identity can be checked",
            ))
        }
    };
    if m.is_empty() {
        return Err(NetError::config(
            flag,
            s,
            "the address has a peer id but no IP and port to reach it",
        ));
    }
    Ok((peer, m))
}

/// Checks a Kademlia protocol name (libp2p requires a leading `/`).
pub fn validate_kad_protocol(name: &str) -> Result<()> {
    if !name.starts_with('/') || name.len() > 128 || name.chars().any(char::is_whitespace) {
        return Err(NetError::config(
            "--kad-protocol",
            name,
            "a protocol name starts with / and has no spaces, e.g. /shoal/kad/1.0.0",
        ));
    }
    Ok(())
}
