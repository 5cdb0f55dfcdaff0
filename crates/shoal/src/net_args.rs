//! The network flags every node-starting command flattens (and their
//! `SHOAL_*` environment variables), turned into `shoal_net`'s options.

use shoal_net::{DhtMode, NetConfig, NetError, NetOptions};

/// How the node takes part in the Kademlia DHT (`--dht-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DhtModeArg {
    /// Client until an external address is confirmed, then server.
    #[default]
    Auto,
    /// Always answer DHT queries (bootstrap nodes, loopback tests).
    Server,
    /// Never answer DHT queries.
    Client,
}

/// `on`/`off` switch for flags like `--mdns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// Network flags shared by every command that starts a node; flatten it into a
/// command with `#[command(flatten)]`. Each flag can also be set by the
/// environment variable named in its help. Convert with [`NetArgs::into_config`] (validated by `shoal_net::NetOptions`).
#[derive(Clone, Debug, clap::Args)]
pub struct NetArgs {
    /// Listen address, `IP:PORT` (TCP and QUIC on that port) or a multiaddr;
    /// repeatable [default: 0.0.0.0:0 and [::]:0]
    #[arg(
        long = "listen",
        value_name = "ADDR",
        env = "SHOAL_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,

    /// Fast-path (TCP + TLS) listen address `IP:PORT`, repeatable, or `off`
    /// [default: the first --listen IP, port + 1; port 0 stays 0]
    #[arg(
        long = "fast-listen",
        value_name = "IP:PORT|off",
        env = "SHOAL_FAST_LISTEN",
        value_delimiter = ','
    )]
    pub fast_listen: Vec<String>,

    /// Kademlia bootstrap node, a multiaddr ending in /p2p/PEER_ID; repeatable
    #[arg(
        long = "bootstrap",
        value_name = "ADDR",
        env = "SHOAL_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<String>,

    /// Relay to listen through (reserve a circuit), a multiaddr ending in /p2p/PEER_ID; repeatable
    #[arg(
        long = "relay",
        value_name = "ADDR",
        env = "SHOAL_RELAY",
        value_delimiter = ','
    )]
    pub relay: Vec<String>,

    /// Multicast DNS discovery on the LAN
    #[arg(long, value_enum, env = "SHOAL_MDNS", default_value = "off")]
    pub mdns: Switch,

    /// UPnP port mapping on the gateway
    #[arg(long, value_enum, env = "SHOAL_UPNP", default_value = "off")]
    pub upnp: Switch,

    /// Serve as a circuit relay for other peers
    #[arg(
        long = "relay-server",
        value_enum,
        env = "SHOAL_RELAY_SERVER",
        default_value = "off"
    )]
    pub relay_server: Switch,

    /// Relay server: bytes per circuit, 0 = unlimited
    #[arg(long = "relay-max-circuit-bytes", value_name = "BYTES", env = "SHOAL_RELAY_MAX_CIRCUIT_BYTES", default_value_t = shoal_net::config::DEFAULT_RELAY_MAX_CIRCUIT_BYTES)]
    pub relay_max_circuit_bytes: u64,

    /// Relay server: seconds per circuit
    #[arg(long = "relay-max-circuit-secs", value_name = "SECS", env = "SHOAL_RELAY_MAX_CIRCUIT_SECS", default_value_t = shoal_net::config::DEFAULT_RELAY_MAX_CIRCUIT_SECS)]
    pub relay_max_circuit_secs: u64,

    /// Kademlia protocol name (must start with /)
    #[arg(long = "kad-protocol", value_name = "NAME", env = "SHOAL_KAD_PROTOCOL", default_value = shoal_net::config::DEFAULT_KAD_PROTOCOL)]
    pub kad_protocol: String,

    /// DHT mode
    #[arg(
        long = "dht-mode",
        value_enum,
        env = "SHOAL_DHT_MODE",
        default_value = "auto"
    )]
    pub dht_mode: DhtModeArg,

    /// Maximum established connections
    #[arg(
        long = "max-connections",
        value_name = "N",
        env = "SHOAL_MAX_CONNECTIONS",
        default_value_t = 256
    )]
    pub max_connections: u32,
}

impl NetArgs {
    /// The options these flags give, for `shoal_net` to validate.
    pub fn options(&self) -> NetOptions {
        NetOptions {
            listen: self.listen.clone(),
            fast_listen: self.fast_listen.clone(),
            bootstrap: self.bootstrap.clone(),
            relay: self.relay.clone(),
            mdns: self.mdns.is_on(),
            upnp: self.upnp.is_on(),
            relay_server: self.relay_server.is_on(),
            relay_max_circuit_bytes: self.relay_max_circuit_bytes,
            relay_max_circuit_secs: self.relay_max_circuit_secs,
            kad_protocol: self.kad_protocol.clone(),
            dht_mode: match self.dht_mode {
                DhtModeArg::Auto => DhtMode::Auto,
                DhtModeArg::Server => DhtMode::Server,
                DhtModeArg::Client => DhtMode::Client,
            },
            max_connections: self.max_connections,
        }
    }

    /// Validates the flags and builds the configuration. Every error names the
    /// flag, the value and what is expected.
    pub fn into_config(self) -> Result<NetConfig, NetError> {
        self.options().into_config()
    }
}

#[cfg(test)]
#[path = "net_args_tests.rs"]
mod tests;
