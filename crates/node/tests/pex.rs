//! Peer exchange between real `shoal-net` peers on 127.0.0.1: a leecher finds
//! another leecher it was never told about, through the seeder.

use std::time::Duration;

use shoal_core::Provider;
use shoal_net::{DhtMode, NetConfig};
use shoal_node::host::{Host, HostConfig};
use shoal_node::{Connector, Limits};

const MIB: u64 = 1 << 20;

fn loopback(kad_protocol: &str) -> NetConfig {
    NetConfig {
        listen: shoal_net::config::socket_to_multiaddrs(([127, 0, 0, 1], 0).into()),
        fast_listen: vec![([127, 0, 0, 1], 0).into()],
        mdns: false,
        upnp: false,
        dht_mode: DhtMode::Server,
        kad_protocol: kad_protocol.to_owned(),
        ..Default::default()
    }
}

async fn peer(dir: &std::path::Path, kad_protocol: &str, limits: Limits) -> Host {
    Host::start(
        dir,
        HostConfig {
            net: loopback(kad_protocol),
            limits,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leecher_learns_another_leecher_from_the_seeder_and_downloads_from_it() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let t = tempfile::tempdir().unwrap();
        let bytes = data(24 << 20, 5);
        let src = t.path().join("f.bin");
        std::fs::write(&src, &bytes).unwrap();
        // The seeder's upload is the bottleneck, so the leechers have pieces
        // the other lacks.
        let s_limits = Limits {
            upload: Some(4 * MIB),
            download: None,
        };
        let s = peer(&t.path().join("s"), "/shoal-test/kad/1.0.0", s_limits).await;
        let share = s.store().add(&src, None, &|_| {}).unwrap();
        let ticket = vec![Provider {
            peer: s.peer_id(),
            addrs: s.net().ticket_addrs(),
        }];

        let a = peer(
            &t.path().join("a"),
            "/shoal-test/kad/1.0.0",
            Limits::default(),
        )
        .await;
        let out_a = t.path().join("out-a");
        std::fs::create_dir_all(&out_a).unwrap();
        let (mut ha, _ca) = a.fetch(share.id, share.kind, &out_a, Some("f"), &ticket);
        let mut pa = ha.progress();
        pa.wait_for(|p| p.done_bytes >= 2 * MIB)
            .await
            .expect("A makes progress");

        // B speaks another DHT protocol: it cannot use anyone's DHT, and its
        // ticket names only S.
        let b = peer(
            &t.path().join("b"),
            "/shoal-other/kad/1.0.0",
            Limits::default(),
        )
        .await;
        let out_b = t.path().join("out-b");
        std::fs::create_dir_all(&out_b).unwrap();
        let (mut hb, cb) = b.fetch(share.id, share.kind, &out_b, Some("f"), &ticket);
        let path = hb.result().await.expect("B's download completes");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "B's file is correct");

        // Whichever of A and B dialed first (S tells each about the other),
        // B's ticket named only S.
        assert!(!ticket.iter().any(|p| p.peer == a.peer_id()));
        assert!(
            cb.peers()
                .iter()
                .all(|p| *p == s.peer_id() || *p == a.peer_id()),
            "B's connector knows only S and, through peer exchange, A"
        );
        let p = hb.progress().borrow().clone();
        let from_a: u64 = p
            .peers
            .iter()
            .filter(|x| x.peer == a.peer_id())
            .map(|x| x.downloaded)
            .sum();
        let from_s: u64 = p
            .peers
            .iter()
            .filter(|x| x.peer == s.peer_id())
            .map(|x| x.downloaded)
            .sum();
        eprintln!("B got {from_a} B from A and {from_s} B from S");
        assert!(from_a > 0, "B received verified bytes from A");
        assert_eq!(from_a + from_s, bytes.len() as u64);

        let path = ha.result().await.expect("A's download completes");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "A's file is correct");
    })
    .await
    .expect("bounded in time");
}
