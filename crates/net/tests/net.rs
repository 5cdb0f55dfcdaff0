//! Nodes on 127.0.0.1: libp2p transfer streams, the fast path chosen through
//! `/shoal/fastpath/1`, and provider lookup through a bootstrap node.
//!
//! The tests run one at a time (a shared lock): the machine has two cores.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use shoal_core::ContentId;
use shoal_net::{
    DhtMode, IncomingTransfer, Keypair, Multiaddr, Net, NetConfig, NetEvent, NetEvents, PathKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::timeout;

static SERIAL: Mutex<()> = Mutex::const_new(());
const T: Duration = Duration::from_secs(30);

fn config(fast: bool) -> NetConfig {
    let mut c = NetConfig {
        dht_mode: DhtMode::Server,
        ..NetConfig::default()
    };
    if !fast {
        c.fast_listen.clear();
    }
    c
}

async fn node(cfg: NetConfig) -> (Net, NetEvents) {
    let (net, events) = Net::start(Keypair::generate_ed25519(), cfg).await.unwrap();
    timeout(T, net.wait_listening(T)).await.unwrap().unwrap();
    (net, events)
}

fn with_p2p(addr: &Multiaddr, net: &Net) -> Multiaddr {
    addr.clone().with(Protocol::P2p(net.peer_id()))
}

/// Writes `out` and reads the peer's `expected_in` on one stream, concurrently.
async fn exchange(
    stream: shoal_net::TransferStream,
    out: &'static [u8],
    expected_in: &'static [u8],
) {
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(out).await.unwrap();
        w.flush().await.unwrap();
    };
    let read = async {
        let mut buf = vec![0u8; expected_in.len()];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, expected_in);
    };
    timeout(T, async { tokio::join!(write, read) })
        .await
        .unwrap();
}

async fn next_incoming(events: &mut NetEvents) -> IncomingTransfer {
    timeout(T, events.incoming.recv()).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_stream_carries_bytes_both_ways_on_a_direct_connection() {
    let _serial = SERIAL.lock().await;
    let (a, _a_events) = node(config(false)).await;
    let (b, mut b_events) = node(config(false)).await;
    assert!(b.fast_addrs().is_empty());
    for addr in b.listen_addrs() {
        assert_eq!(multiaddr_ip_is_loopback(&addr), Some(true), "{addr}");
    }

    let hints = b.ticket_addrs();
    let (stream, path) = timeout(T, a.open_transfer(b.peer_id(), &hints))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Direct);

    let a_side = exchange(stream, b"ping from a", b"pong from b");
    let b_side = async {
        let inc = next_incoming(&mut b_events).await;
        assert_eq!(inc.peer, a.peer_id());
        assert_eq!(inc.path, PathKind::Direct);
        exchange(inc.stream, b"pong from b", b"ping from a").await;
    };
    tokio::join!(a_side, b_side);
    assert!(a
        .connections()
        .iter()
        .any(|c| c.peer == b.peer_id() && !c.relayed));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_protocol_gets_its_own_streams() {
    let _serial = SERIAL.lock().await;
    let (a, _a_events) = node(config(false)).await;
    let (b, mut b_events) = node(config(false)).await;
    let proto = libp2p::StreamProtocol::new("/shoal/test-echo/1");
    let mut inbound = b.accept_streams(proto.clone(), 4).unwrap();
    // A protocol is accepted once; the transfer protocol already is.
    assert!(b.accept_streams(proto.clone(), 4).is_err());
    assert!(b
        .accept_streams(libp2p::StreamProtocol::new("/shoal/xfer/1"), 4)
        .is_err());
    let (stream, path) = timeout(T, a.open_stream(b.peer_id(), proto, &b.ticket_addrs()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Direct);
    let a_side = exchange(stream, b"hello service", b"hello back");
    let b_side = async {
        let inc = timeout(T, inbound.recv()).await.unwrap().unwrap();
        assert_eq!(inc.peer, a.peer_id());
        assert!(inc.remote.is_some(), "the remote address is known");
        exchange(inc.stream, b"hello back", b"hello service").await;
    };
    tokio::join!(a_side, b_side);
    // Nothing of it reached the transfer protocol's queue.
    assert!(b_events.incoming.try_recv().is_err());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_is_found_through_the_fastpath_query_and_proves_both_ids() {
    let _serial = SERIAL.lock().await;
    let (a, _a_events) = node(config(true)).await;
    let (b, mut b_events) = node(config(true)).await;
    assert_eq!(b.fast_addrs().len(), 1);

    // Only libp2p addresses as hints: the fast address must come from B itself.
    let hints: Vec<Multiaddr> = b
        .ticket_addrs()
        .into_iter()
        .filter(|m| !shoal_net::addrs::is_fast_multiaddr(m))
        .collect();
    let (stream, path) = timeout(T, a.open_transfer(b.peer_id(), &hints))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Fast);
    let a_side = exchange(stream, b"hello over tls", b"hello back");
    let b_side = async {
        let inc = next_incoming(&mut b_events).await;
        assert_eq!(inc.peer, a.peer_id());
        assert_eq!(inc.path, PathKind::Fast);
        exchange(inc.stream, b"hello back", b"hello over tls").await;
    };
    tokio::join!(a_side, b_side);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_addrs_are_bound_listen_addrs_and_never_unspecified() {
    let _serial = SERIAL.lock().await;
    let mut cfg = config(true);
    cfg.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
    cfg.fast_listen = vec!["0.0.0.0:0".parse().unwrap()];
    let (n, _events) = node(cfg).await;
    let listen = n.listen_addrs();
    let ticket = n.ticket_addrs();
    assert!(!ticket.is_empty() && ticket.len() <= 8, "{ticket:?}");
    for a in &ticket {
        assert!(
            listen.contains(a) || n.external_addrs().contains(a),
            "{a} not bound"
        );
        assert_eq!(
            a.iter()
                .next()
                .map(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())),
            Some(false),
            "{a}"
        );
    }
    assert!(ticket.iter().any(shoal_net::addrs::is_fast_multiaddr));
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_found_through_a_bootstrap_node_and_its_provider_reached() {
    let _serial = SERIAL.lock().await;
    let (b, mut b_events) = node(config(false)).await;
    let b_addr = with_p2p(&b.listen_addrs()[0], &b);
    let cid = ContentId::of(b"the shared file");

    let mut a_cfg = config(false);
    a_cfg.bootstrap = vec![(b.peer_id(), b.listen_addrs()[0].clone())];
    let (a, mut a_events) = node(a_cfg).await;
    timeout(Duration::from_secs(60), a.provide(&cid))
        .await
        .unwrap()
        .unwrap();
    // The bootstrap node stored A's record (the publication is fire-and-forget).
    timeout(T, async {
        loop {
            match b_events.events.recv().await {
                Some(NetEvent::ProviderRecordStored { provider, cid: c }) => {
                    assert_eq!(provider, a.peer_id());
                    assert_eq!(c, Some(cid));
                    break;
                }
                Some(_) => continue,
                None => panic!("B stopped"),
            }
        }
    })
    .await
    .unwrap();

    let c_cfg = NetConfig {
        bootstrap: vec![
            shoal_net::config::parse_peer_addr("--bootstrap", &b_addr.to_string()).unwrap(),
        ],
        ..config(false)
    };
    let (c, _c_events) = node(c_cfg).await;
    let found = timeout(T, c.find_providers(&cid, T))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, vec![a.peer_id()]);

    // No address hints at all: the connection made during the lookup is used.
    let (stream, path) = timeout(T, c.open_transfer(a.peer_id(), &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Direct);
    let c_side = exchange(stream, b"want", b"have");
    let a_side = async {
        let inc = next_incoming(&mut a_events).await;
        assert_eq!(inc.peer, c.peer_id());
        exchange(inc.stream, b"have", b"want").await;
    };
    tokio::join!(c_side, a_side);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

fn multiaddr_ip_is_loopback(m: &Multiaddr) -> Option<bool> {
    shoal_net::addrs::multiaddr_ip(m).map(|ip| ip.is_loopback())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_runs_through_a_relay_when_the_peer_only_listens_there() {
    let _serial = SERIAL.lock().await;
    let mut r_cfg = config(false);
    r_cfg.relay_server = true;
    r_cfg.relay_max_circuit_bytes = 0;
    let (r, _r_events) = node(r_cfg).await;
    let r_addr = r.listen_addrs()[0].clone();

    // A has no direct listener: only a reservation on R. No hole punching, so
    // the connection stays relayed.
    let mut a_cfg = config(false);
    a_cfg.listen.clear();
    a_cfg.relays = vec![(r.peer_id(), r_addr)];
    a_cfg.hole_punching = false;
    let (a, mut a_events) = node(a_cfg).await;
    let circuit = timeout(T, async {
        loop {
            match a_events.events.recv().await {
                Some(NetEvent::ListenAddr(m)) if shoal_net::addrs::is_relayed(&m) => break m,
                Some(_) => continue,
                None => panic!("A stopped"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(a.ticket_addrs(), vec![circuit.clone()]);

    let mut b_cfg = config(false);
    b_cfg.hole_punching = false;
    let (b, _b_events) = node(b_cfg).await;
    let (stream, path) = timeout(T, b.open_transfer(a.peer_id(), &[with_p2p(&circuit, &a)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Relayed);
    assert!(b
        .connections()
        .iter()
        .filter(|c| c.peer == a.peer_id())
        .all(|c| c.relayed));
    let b_side = exchange(stream, b"through the relay", b"and back");
    let a_side = async {
        let inc = next_incoming(&mut a_events).await;
        assert_eq!(inc.peer, b.peer_id());
        assert_eq!(inc.path, PathKind::Relayed);
        exchange(inc.stream, b"and back", b"through the relay").await;
    };
    tokio::join!(b_side, a_side);
    for n in [a, b, r] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_on_a_taken_port_fails_clearly() {
    let _serial = SERIAL.lock().await;
    let (a, _a_events) = node(config(true)).await;
    let taken = a
        .listen_addrs()
        .into_iter()
        .find(|m| {
            !shoal_net::addrs::is_fast_multiaddr(m)
                && m.iter().any(|p| matches!(p, Protocol::Tcp(_)))
        })
        .unwrap();
    let mut cfg = config(false);
    cfg.listen = vec![taken.clone()];
    let err = Net::start(Keypair::generate_ed25519(), cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, shoal_net::NetError::Listen { .. }), "{err:?}");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");

    let fast = a.fast_addrs()[0].clone();
    let (sa, _) = shoal_net::addrs::parse_fast_multiaddr(&fast).unwrap();
    let mut cfg = config(true);
    cfg.fast_listen = vec![sa];
    let err = Net::start(Keypair::generate_ed25519(), cfg)
        .await
        .unwrap_err();
    assert!(
        matches!(err, shoal_net::NetError::FastListen { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--fast-listen"), "{err}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_fast_address_is_used_without_any_libp2p_connection() {
    let _serial = SERIAL.lock().await;
    let (b, mut b_events) = node(config(true)).await;
    let (c, _c_events) = node(config(true)).await;
    let (stream, path) = timeout(T, c.open_transfer(b.peer_id(), &b.ticket_addrs()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Fast);
    assert!(
        !c.is_connected(&b.peer_id()),
        "libp2p was dialed needlessly"
    );
    let c_side = exchange(stream, b"direct", b"indeed");
    let b_side = async {
        let inc = next_incoming(&mut b_events).await;
        assert_eq!((inc.peer, inc.path), (c.peer_id(), PathKind::Fast));
        exchange(inc.stream, b"indeed", b"direct").await;
    };
    tokio::join!(c_side, b_side);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_address_of_another_peer_is_refused_and_libp2p_used_instead() {
    let _serial = SERIAL.lock().await;
    let (a, _a_events) = node(config(true)).await;
    let (b, mut b_events) = node(config(false)).await;
    let (c, _c_events) = node(config(true)).await;
    // A stale ticket: B's libp2p addresses, but A's fast-path address.
    let mut hints = a.fast_addrs();
    hints.extend(b.ticket_addrs());
    let (stream, path) = timeout(T, c.open_transfer(b.peer_id(), &hints))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Direct);
    let c_side = exchange(stream, b"are you b?", b"yes");
    let b_side = async {
        let inc = next_incoming(&mut b_events).await;
        assert_eq!(inc.peer, c.peer_id());
        exchange(inc.stream, b"yes", b"are you b?").await;
    };
    tokio::join!(c_side, b_side);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_addrs_gives_the_fast_and_identify_addresses_of_a_peer_met_over_libp2p() {
    let _serial = SERIAL.lock().await;
    let (a, mut a_events) = node(config(true)).await;
    let (b, _b_events) = node(config(true)).await;
    assert!(a.peer_addrs(&b.peer_id()).is_empty(), "nothing known yet");
    let hints: Vec<Multiaddr> = b
        .ticket_addrs()
        .into_iter()
        .filter(|m| !shoal_net::addrs::is_fast_multiaddr(m))
        .collect();
    let (_stream, path) = timeout(T, a.open_transfer(b.peer_id(), &hints))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, PathKind::Fast);
    // Identify runs beside the fastpath query; wait for its event.
    timeout(T, async {
        loop {
            match a_events.events.recv().await {
                Some(NetEvent::PeerIdentified { peer, .. }) if peer == b.peer_id() => break,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .unwrap();
    let known = a.peer_addrs(&b.peer_id());
    for fast in b.fast_addrs() {
        assert!(known.contains(&fast), "{fast} missing from {known:?}");
    }
    assert!(
        hints.iter().any(|h| known.contains(h)),
        "no libp2p listen address of B in {known:?}"
    );
    assert!(a.peer_addrs(&a.peer_id()).is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_changed_while_running_applies_to_new_connections() {
    let _g = SERIAL.lock().await;
    let (a, _ae) = node(config(false)).await;
    let (b, _be) = node(config(false)).await;
    let (c, _ce) = node(config(false)).await;
    let addrs = a.listen_addrs();
    let mut limits = a.connection_limits();
    limits.max_established = 1;
    a.set_connection_limits(limits).await.unwrap();
    assert_eq!(a.connection_limits().max_established, 1);

    timeout(T, b.dial(a.peer_id(), &addrs))
        .await
        .unwrap()
        .unwrap();
    assert!(eventually(T, || a.is_connected(&b.peer_id())).await);

    // A second peer is refused: whatever its dial reports, the connection is
    // closed by `a` (an accepted one would stay open for the 60 s idle time).
    let _ = timeout(T, c.dial(a.peer_id(), &addrs)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !c.is_connected(&a.peer_id())).await,
        "a connection over the lowered limit was kept"
    );
    assert!(!a.is_connected(&c.peer_id()));

    limits.max_established = 8;
    a.set_connection_limits(limits).await.unwrap();
    timeout(T, c.dial(a.peer_id(), &addrs))
        .await
        .unwrap()
        .unwrap();
    assert!(
        eventually(T, || a.is_connected(&c.peer_id())).await,
        "the raised limit lets the peer in"
    );
}

#[tokio::test]
async fn libp2p_slowloris_from_one_host_does_not_block_others() {
    let _g = SERIAL.lock().await;
    let (server, _se) = node(config(false)).await;
    let addrs = server.listen_addrs();
    let tcp_port = |a: &Multiaddr| {
        let mut ip = None;
        let mut port = None;
        for p in a.iter() {
            match p {
                Protocol::Ip4(x) => ip = Some(x),
                Protocol::Tcp(x) => port = Some(x),
                Protocol::QuicV1 | Protocol::Udp(_) => return None,
                _ => {}
            }
        }
        Some(std::net::SocketAddr::from((ip?, port?)))
    };
    let tcp_addr = addrs
        .iter()
        .find(|a| tcp_port(a).is_some())
        .expect("a TCP listen address")
        .clone();
    let tcp = tcp_port(&tcp_addr).unwrap();
    let quic = addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
        .expect("a QUIC listen address")
        .clone();
    // 200 TCP connections from 127.0.0.2 that never speak: more than the
    // node's 64 pending connections, held for libp2p's handshake timeout.
    let mut silent = Vec::new();
    for _ in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
        if let Ok(Ok(s)) = timeout(Duration::from_secs(5), socket.connect(tcp)).await {
            silent.push(s);
        }
    }
    assert!(
        silent.len() >= 64,
        "only {} connections opened",
        silent.len()
    );
    // Peers on another address still connect, over QUIC and over TCP.
    for addr in [with_p2p(&quic, &server), with_p2p(&tcp_addr, &server)] {
        let (client, _ce) = node(config(false)).await;
        timeout(
            Duration::from_secs(10),
            client.dial(server.peer_id(), std::slice::from_ref(&addr)),
        )
        .await
        .unwrap_or_else(|_| panic!("dialing {addr} timed out"))
        .unwrap_or_else(|e| panic!("dialing {addr} during the slowloris: {e}"));
        client.shutdown().await;
    }
    drop(silent);
    server.shutdown().await;
}
