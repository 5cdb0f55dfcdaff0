//! Real `shoal-net` peers on 127.0.0.1 driven through `host::Host`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p_identity::PeerId;
use shoal_core::Provider;
use shoal_net::{DhtMode, NetConfig};
use shoal_node::host::{Host, HostConfig, NetConnector};
use shoal_node::{BoxStream, Connector, NodeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn loopback() -> NetConfig {
    NetConfig {
        listen: shoal_net::config::socket_to_multiaddrs(([127, 0, 0, 1], 0).into()),
        fast_listen: vec![([127, 0, 0, 1], 0).into()],
        mdns: false,
        upnp: false,
        dht_mode: DhtMode::Server,
        ..Default::default()
    }
}

async fn peer(dir: &std::path::Path) -> Host {
    Host::start(
        dir,
        HostConfig {
            net: loopback(),
            ..Default::default()
        },
    )
    .await
    .expect("peer starts")
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut v = vec![0u8; len];
    x.fill(&mut v);
    v
}

/// Flips one bit every `every` bytes read (after the first `skip`).
struct Flip {
    inner: BoxStream,
    pos: u64,
    skip: u64,
    every: u64,
}

impl AsyncRead for Flip {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let (skip, every, start) = (self.skip, self.every, self.pos);
            let filled = buf.filled_mut();
            for (i, b) in filled[before..].iter_mut().enumerate() {
                let at = start + i as u64;
                if at >= skip && (at - skip).is_multiple_of(every) {
                    *b ^= 0x10;
                }
            }
            self.pos += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl AsyncWrite for Flip {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A [`NetConnector`] whose streams from `bad` arrive with flipped bits.
struct Corrupting {
    inner: Arc<NetConnector>,
    bad: PeerId,
    dials_to_bad: AtomicUsize,
}

impl Connector for Corrupting {
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        Box::pin(async move {
            let s = self.inner.connect(peer).await?;
            if peer != self.bad {
                return Ok(s);
            }
            self.dials_to_bad.fetch_add(1, Ordering::SeqCst);
            let s: BoxStream = Box::new(Flip {
                inner: s,
                pos: 0,
                // Past the handshake and outboard, then once per ~100 KiB: inside
                // piece payloads.
                skip: 300_000,
                every: 100_003,
            });
            Ok(s)
        })
    }

    fn peers(&self) -> Vec<PeerId> {
        self.inner.peers()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_over_real_connections_gets_no_verified_bytes_and_the_result_is_correct() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let t = tempfile::tempdir().unwrap();
        let bytes = data(8 << 20, 11);
        let src = t.path().join("f.bin");
        std::fs::write(&src, &bytes).unwrap();
        let good = peer(&t.path().join("good")).await;
        let bad = peer(&t.path().join("bad")).await;
        let share = good.store().add(&src, None, &|_| {}).unwrap();
        bad.store().add(&src, None, &|_| {}).unwrap();
        let leech = peer(&t.path().join("leech")).await;
        let providers = vec![
            Provider {
                peer: bad.peer_id(),
                addrs: bad.net().ticket_addrs(),
            },
            Provider {
                peer: good.peer_id(),
                addrs: good.net().ticket_addrs(),
            },
        ];
        let conn = Arc::new(Corrupting {
            inner: leech.connector(share.id, &providers),
            bad: bad.peer_id(),
            dials_to_bad: AtomicUsize::new(0),
        });
        let out = t.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut h = leech
            .node()
            .download(share.id, share.kind, &out, Some("f"), conn.clone());
        let path = h.result().await.expect("download completes");
        assert_eq!(std::fs::read(path).unwrap(), bytes);
        let p = h.progress().borrow().clone();
        let from_bad: u64 = p
            .peers
            .iter()
            .filter(|x| x.peer == bad.peer_id())
            .map(|x| x.downloaded)
            .sum();
        let from_good: u64 = p
            .peers
            .iter()
            .filter(|x| x.peer == good.peer_id())
            .map(|x| x.downloaded)
            .sum();
        assert!(
            conn.dials_to_bad.load(Ordering::SeqCst) >= 1,
            "the bad peer was never used"
        );
        // Pieces received before the first flipped byte verify; after it, the
        // peer is banned and never redialed, so most bytes come from the good one.
        eprintln!("from the corrupt peer: {from_bad} B, from the honest one: {from_good} B");
        assert!(from_bad < 2 << 20, "from the corrupt peer: {from_bad}");
        assert_eq!(
            conn.dials_to_bad.load(Ordering::SeqCst),
            1,
            "a banned peer is not redialed"
        );
        assert_eq!(from_good + from_bad, bytes.len() as u64);
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_do_not_block_admission() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("f.bin");
    let bytes = data(4 << 20, 51);
    std::fs::write(&src, &bytes).unwrap();
    let seeder = peer(&t.path().join("s")).await;
    let share = seeder.store().add(&src, None, &|_| {}).unwrap();
    let hints = seeder.net().ticket_addrs();
    // 150 fast-path (TCP + TLS) transfer streams that never send a hello:
    // more than the accept pool and the incoming queue used to hold.
    let (attacker, _events) =
        shoal_net::Net::start(shoal_net::Keypair::generate_ed25519(), loopback())
            .await
            .unwrap();
    let mut silent = Vec::new();
    for _ in 0..150 {
        match tokio::time::timeout(
            Duration::from_secs(10),
            attacker.open_transfer(seeder.peer_id(), &hints),
        )
        .await
        {
            Ok(Ok((s, _))) => silent.push(s),
            other => panic!(
                "cannot open a silent stream: {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
    }
    // A legitimate download is admitted and completes.
    let leecher = peer(&t.path().join("l")).await;
    let providers = vec![Provider {
        peer: seeder.peer_id(),
        addrs: hints.clone(),
    }];
    let started = std::time::Instant::now();
    let (mut h, _c) = leecher.fetch(
        share.id,
        shoal_core::Kind::File,
        &t.path().join("out"),
        Some("f.bin"),
        &providers,
    );
    let path = tokio::time::timeout(Duration::from_secs(30), h.result())
        .await
        .expect("the download finished in time")
        .expect("the download completes despite the silent streams");
    assert!(std::fs::read(path).unwrap() == bytes);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
    attacker.shutdown().await;
    leecher.shutdown().await;
    seeder.shutdown().await;
}

/// Opens a TCP connection to `to` from the local address `from`.
async fn tcp_from(from: std::net::IpAddr, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((from, 0).into())
        .expect("bind a loopback address");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Whether the seeder admits a fast-path stream from this node at once: the
/// stream is fast, and our hello is answered with the seeder's hello.
async fn admitted_on_the_fast_path(
    leecher: &Host,
    seeder: &Host,
    hints: &[shoal_net::Multiaddr],
    id: shoal_core::ContentId,
) -> Result<(), String> {
    use shoal_core::proto::{decode_frame, encode, Hello, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, path) = tokio::time::timeout(
        Duration::from_secs(10),
        leecher.net().open_transfer(seeder.peer_id(), hints),
    )
    .await
    .map_err(|_| "no stream within 10 s".to_owned())?
    .map_err(|e| e.to_string())?;
    if path != shoal_net::PathKind::Fast {
        return Err(format!(
            "the stream took the {path} path, not the fast path"
        ));
    }
    let mut out = Vec::new();
    encode(&Message::Hello(Hello::new(id)), &mut out).unwrap();
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Ok(Some((m, _))) = decode_frame(&buf) {
                return match m {
                    Message::Hello(_) => Ok(()),
                    other => Err(format!("answered {other:?}")),
                };
            }
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the seeder's hello".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no hello from the seeder within 5 s".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_host_do_not_block_others() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("f.bin");
    let bytes = data(1 << 20, 52);
    std::fs::write(&src, &bytes).unwrap();
    let seeder = peer(&t.path().join("s")).await;
    let share = seeder.store().add(&src, None, &|_| {}).unwrap();
    let hints = seeder.net().ticket_addrs();
    let fast = hints
        .iter()
        .find_map(|a| shoal_net::addrs::parse_fast_multiaddr(a).map(|(sa, _)| sa))
        .expect("the seeder has a fast-path address");
    let leecher = peer(&t.path().join("l")).await;
    let attacker: std::net::IpAddr = [127, 0, 0, 2].into();

    // 1. 200 TCP connections from one host that never start TLS: more than
    //    the handshake pool (64) holds.
    let mut silent_tcp = Vec::new();
    for _ in 0..200 {
        silent_tcp.push(tcp_from(attacker, fast).await);
    }
    admitted_on_the_fast_path(&leecher, &seeder, &hints, share.id)
        .await
        .expect("admitted despite 200 silent TCP connections from another host");

    // 2. TLS connections from that host that never send a hello, reopened
    //    faster than the hello wait (3 s) frees them: more than the accept
    //    pool holds, for as long as the attack lasts.
    drop(silent_tcp);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let seeder_id = seeder.peer_id();
        tokio::spawn(async move {
            let tls = shoal_net::fast::FastTls::new(&shoal_net::Keypair::generate_ed25519())
                .expect("tls");
            let mut opened = 0usize;
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let mut held = Vec::new();
                let round = std::time::Instant::now();
                while held.len() < 300 && round.elapsed() < Duration::from_secs(2) {
                    if let Ok(s) = tls
                        .connect_over(tcp_from(attacker, fast).await, seeder_id)
                        .await
                    {
                        held.push(s);
                        opened += 1;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2).saturating_sub(round.elapsed())).await;
            }
            opened
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    admitted_on_the_fast_path(&leecher, &seeder, &hints, share.id)
        .await
        .expect("admitted during a flood of silent TLS connections from another host");
    let providers = vec![Provider {
        peer: seeder.peer_id(),
        addrs: hints.clone(),
    }];
    let (mut h, _c) = leecher.fetch(
        share.id,
        shoal_core::Kind::File,
        &t.path().join("out"),
        Some("f.bin"),
        &providers,
    );
    let path = tokio::time::timeout(Duration::from_secs(20), h.result())
        .await
        .expect("the download finished in time")
        .expect("the download completes during the flood");
    assert!(std::fs::read(path).unwrap() == bytes);
    stop.store(true, Ordering::Relaxed);
    let opened = flood.await.expect("flood task");
    assert!(
        opened >= 100,
        "the flood opened only {opened} TLS connections"
    );
    leecher.shutdown().await;
    seeder.shutdown().await;
}
