//! Flags and environment variables become a validated NetConfig, and bad
//! input gets an error naming the flag, the value and what is expected.

use std::net::SocketAddr;
use std::sync::Mutex;

use clap::Parser;
use shoal_net::{DhtMode, NetError};

use super::NetArgs;

/// The environment is process-wide: tests that parse flags hold this lock.
static ENV: Mutex<()> = Mutex::new(());

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    net: NetArgs,
}

fn parse(args: &[&str]) -> Result<shoal_net::NetConfig, NetError> {
    let cli = Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
        .expect("clap accepts the flags");
    cli.net.into_config()
}

const VARS: &[&str] = &[
    "SHOAL_LISTEN",
    "SHOAL_FAST_LISTEN",
    "SHOAL_BOOTSTRAP",
    "SHOAL_RELAY",
    "SHOAL_MDNS",
    "SHOAL_UPNP",
    "SHOAL_RELAY_SERVER",
    "SHOAL_RELAY_MAX_CIRCUIT_BYTES",
    "SHOAL_RELAY_MAX_CIRCUIT_SECS",
    "SHOAL_KAD_PROTOCOL",
    "SHOAL_DHT_MODE",
    "SHOAL_MAX_CONNECTIONS",
];

fn clear_env() {
    for v in VARS {
        std::env::remove_var(v);
    }
}

const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

#[test]
fn flags_are_well_formed_for_clap() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn defaults_listen_on_all_interfaces_with_switches_off() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    clear_env();
    let c = parse(&[]).unwrap();
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        [
            "/ip4/0.0.0.0/tcp/0",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "/ip6/::/tcp/0",
            "/ip6/::/udp/0/quic-v1"
        ]
    );
    assert_eq!(
        c.fast_listen,
        vec!["0.0.0.0:0".parse::<SocketAddr>().unwrap()]
    );
    assert!(!c.mdns && !c.upnp && !c.relay_server);
    assert!(c.bootstrap.is_empty());
    assert_eq!(c.kad_protocol, "/shoal/kad/1.0.0");
    assert_eq!(c.dht_mode, DhtMode::Auto);
}

#[test]
fn listen_accepts_ip_port_and_multiaddr_and_fast_listen_follows_the_first() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    clear_env();
    let c = parse(&[
        "--listen",
        "127.0.0.1:4001",
        "--listen",
        "/ip6/::1/udp/5000/quic-v1",
    ])
    .unwrap();
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/ip6/::1/udp/5000/quic-v1"
        ]
    );
    assert_eq!(
        c.fast_listen,
        vec!["127.0.0.1:4002".parse::<SocketAddr>().unwrap()]
    );

    let off = parse(&["--listen", "127.0.0.1:0", "--fast-listen", "off"]).unwrap();
    assert!(off.fast_listen.is_empty());
}

#[test]
fn bad_listen_values_name_the_flag_and_the_expected_forms() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    clear_env();
    for bad in [
        "localhost",
        "127.0.0.1",
        "1.2.3.4:99999",
        "/ip4/1.2.3.4",
        "/ip4/nope/tcp/1",
    ] {
        let err = parse(&["--listen", bad]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                NetError::Config {
                    flag: "--listen",
                    ..
                }
            ),
            "{bad}: {msg}"
        );
        assert!(msg.contains(bad), "{msg}");
    }
    let msg = parse(&["--listen", "localhost"]).unwrap_err().to_string();
    assert!(
        msg.contains("IP:PORT") && msg.contains("multiaddr"),
        "{msg}"
    );

    let err = parse(&["--fast-listen", "4002"]).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Config {
                flag: "--fast-listen",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bootstrap_must_name_a_peer_id_and_an_address() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    clear_env();
    let ok = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}");
    let c = parse(&["--bootstrap", &ok]).unwrap();
    assert_eq!(c.bootstrap.len(), 1);
    assert_eq!(c.bootstrap[0].0.to_string(), PEER);
    assert_eq!(
        c.bootstrap[0].1.to_string(),
        "/ip4/127.0.0.1/udp/4001/quic-v1"
    );

    let err = parse(&["--bootstrap", "/ip4/127.0.0.1/tcp/4001"]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        NetError::Config {
            flag: "--bootstrap",
            ..
        }
    ));
    assert!(msg.contains("/p2p/PEER_ID"), "{msg}");

    let only_peer = format!("/p2p/{PEER}");
    let msg = parse(&["--bootstrap", &only_peer]).unwrap_err().to_string();
    assert!(msg.contains("no IP and port"), "{msg}");

    let msg = parse(&["--bootstrap", "127.0.0.1:4001"])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a valid multiaddr"), "{msg}");

    let msg = parse(&["--kad-protocol", "shoal-kad"])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("--kad-protocol") && msg.contains("starts with /"),
        "{msg}"
    );
}

#[test]
fn environment_variables_set_every_switch() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    clear_env();
    let boot = format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}");
    let pairs = [
        ("SHOAL_LISTEN", "127.0.0.1:7000,/ip4/127.0.0.1/tcp/7005"),
        ("SHOAL_FAST_LISTEN", "127.0.0.1:7010"),
        ("SHOAL_BOOTSTRAP", boot.as_str()),
        ("SHOAL_MDNS", "on"),
        ("SHOAL_UPNP", "on"),
        ("SHOAL_RELAY_SERVER", "on"),
        ("SHOAL_RELAY_MAX_CIRCUIT_BYTES", "0"),
        ("SHOAL_RELAY_MAX_CIRCUIT_SECS", "600"),
        ("SHOAL_KAD_PROTOCOL", "/ipfs/kad/1.0.0"),
        ("SHOAL_DHT_MODE", "server"),
        ("SHOAL_MAX_CONNECTIONS", "32"),
    ];
    for (k, v) in pairs {
        std::env::set_var(k, v);
    }
    let c = parse(&[]);
    // A flag overrides its variable.
    let overridden = parse(&["--mdns", "off"]);
    clear_env();
    let c = c.unwrap();
    assert_eq!(c.listen.len(), 3);
    assert_eq!(
        c.fast_listen,
        vec!["127.0.0.1:7010".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.bootstrap.len(), 1);
    assert!(c.mdns && c.upnp && c.relay_server);
    assert_eq!(c.relay_max_circuit_bytes, 0);
    assert_eq!(c.relay_max_circuit_duration.as_secs(), 600);
    assert_eq!(c.kad_protocol, "/ipfs/kad/1.0.0");
    assert_eq!(c.dht_mode, DhtMode::Server);
    assert_eq!(c.limits.max_established, 32);
    assert!(!overridden.unwrap().mdns);

    std::env::set_var("SHOAL_MDNS", "maybe");
    let r = Cli::try_parse_from(["shoal"]);
    clear_env();
    assert!(r.is_err(), "SHOAL_MDNS=maybe must be refused");
}
