//! Loopback throughput of the fast path vs libp2p streams (QUIC, TCP+yamux).
//! Not a test of correctness: run explicitly and read the figures.
//!
//! `cargo test -p shoal-net --release --test throughput -- --ignored --nocapture`

use std::time::{Duration, Instant};

use shoal_net::fast::FastTls;
use shoal_net::{Keypair, Net, NetConfig, PathKind, TransferStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 1 << 20;
const T: Duration = Duration::from_secs(300);

async fn pump<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    mut w: W,
    r: impl std::future::Future<Output = R>,
) -> f64 {
    let start = Instant::now();
    let writer = async {
        let buf = vec![0x5au8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            w.write_all(&buf).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut r = r.await;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < TOTAL {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended after {got} bytes");
            got += n;
        }
    };
    timeout(T, async { tokio::join!(writer, reader) })
        .await
        .unwrap();
    TOTAL as f64 / start.elapsed().as_secs_f64() / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints MB/s"]
async fn throughput_fast_path_vs_libp2p_streams() {
    // Fast path.
    let ks = Keypair::generate_ed25519();
    let server = FastTls::new(&ks).unwrap();
    let client = FastTls::new(&Keypair::generate_ed25519()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap().1
    });
    let c = client
        .connect(addr, ks.public().to_peer_id())
        .await
        .unwrap();
    let s = srv.await.unwrap();
    let fast = pump(c, async { s }).await;
    println!("fast path (TCP + TLS 1.3): {fast:.0} MB/s");

    for (name, listen) in [
        ("libp2p QUIC stream", "/ip4/127.0.0.1/udp/0/quic-v1"),
        ("libp2p TCP+yamux stream", "/ip4/127.0.0.1/tcp/0"),
    ] {
        let cfg = || NetConfig {
            listen: vec![listen.parse().unwrap()],
            fast_listen: vec![],
            ..NetConfig::default()
        };
        let (a, _ae) = Net::start(Keypair::generate_ed25519(), cfg())
            .await
            .unwrap();
        let (b, mut be) = Net::start(Keypair::generate_ed25519(), cfg())
            .await
            .unwrap();
        let hints = b.wait_listening(T).await.unwrap();
        let (s, path) = a.open_transfer(b.peer_id(), &hints).await.unwrap();
        assert_eq!(path, PathKind::Direct);
        // The receiving side may see the stream only once data flows.
        let incoming = async {
            let inc = timeout(T, be.incoming.recv()).await.unwrap().unwrap();
            inc.stream
        };
        let mbs = pump::<TransferStream, TransferStream>(s, incoming).await;
        println!("{name}: {mbs:.0} MB/s");
        a.shutdown().await;
        b.shutdown().await;
    }
}
