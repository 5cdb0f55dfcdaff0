//! Throughput of one seeder to one leecher over TCP loopback (no TLS).
//!
//! `cargo test -p shoal-node --release --test throughput -- --ignored --nocapture`
//! (`UPLOADS=n` sets the scheduler's `max_active_uploads` of the seeder).

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libp2p_identity::PeerId;
use shoal_core::Kind;
use shoal_node::{BoxStream, Connector, NodeError};

struct TcpConnector {
    peer: PeerId,
    addr: SocketAddr,
}

impl Connector for TcpConnector {
    fn connect(
        &self,
        _peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }

    fn peers(&self) -> Vec<PeerId> {
        vec![self.peer]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 256 MiB benchmark; run in release"]
async fn throughput_256_mib_over_tcp_loopback() {
    let size = 256usize << 20;
    let mut cfg = shoal_node::NodeConfig::default();
    if let Some(n) = std::env::var("UPLOADS").ok().and_then(|v| v.parse().ok()) {
        cfg.swarm.max_active_uploads = n;
    }
    let seeder = TestNode::with_config(1, cfg);
    let data = random_bytes(size, 11);
    let share = seeder.share_bytes("big.bin", &data);
    drop(data);
    let leecher = TestNode::new(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let node = seeder.node.clone();
    let leecher_id = leecher.id;
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let n = node.clone();
            tokio::spawn(async move {
                let _ = n.accept(leecher_id, s).await;
            });
        }
    });
    let conn = Arc::new(TcpConnector {
        peer: seeder.id,
        addr,
    });
    let out = leecher.path("out");
    let start = Instant::now();
    let mut h = leecher
        .node
        .download(share.id, Kind::File, &out, Some("f"), conn);
    let p = tokio::time::timeout(Duration::from_secs(300), h.result())
        .await
        .expect("timed out")
        .expect("download");
    let secs = start.elapsed().as_secs_f64();
    server.abort();
    let got = shoal_store::hash_file(&p, &|_| {}).expect("hash");
    assert_eq!(got.root(), share.id);
    eprintln!(
        "256 MiB seeder -> leecher over TCP loopback: {secs:.2} s, {:.0} MB/s",
        size as f64 / secs / 1e6
    );
}
