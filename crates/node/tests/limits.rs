//! Live rate limits between real `shoal-net` peers on 127.0.0.1: the achieved
//! rate is measured from the leecher's byte counter over a window of wall-clock
//! time, after the transfer has settled.

use std::time::{Duration, Instant};

use shoal_core::Provider;
use shoal_net::{DhtMode, NetConfig};
use shoal_node::host::{Host, HostConfig};
use shoal_node::{DownloadHandle, Limits};

const MIB: u64 = 1 << 20;

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

async fn peer(dir: &std::path::Path, limits: Limits) -> Host {
    Host::start(
        dir,
        HostConfig {
            net: loopback(),
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

/// A seeder sharing `len` bytes (with `seeder_limits`) and a leecher (with
/// `leecher_limits`) downloading them; returns both and the running download.
async fn transfer(
    dir: &std::path::Path,
    len: usize,
    seeder_limits: Limits,
    leecher_limits: Limits,
) -> (Host, Host, DownloadHandle) {
    let src = dir.join("f.bin");
    std::fs::write(&src, data(len, 7)).unwrap();
    let seeder = peer(&dir.join("s"), seeder_limits).await;
    let share = seeder.store().add(&src, None, &|_| {}).unwrap();
    let leecher = peer(&dir.join("l"), leecher_limits).await;
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let providers = vec![Provider {
        peer: seeder.peer_id(),
        addrs: seeder.net().ticket_addrs(),
    }];
    let (h, _c) = leecher.fetch(share.id, share.kind, &out, Some("f"), &providers);
    (seeder, leecher, h)
}

/// Waits until `peer` has read `bytes` from transfer streams.
async fn wait_for_bytes(peer: &Host, bytes: u64) {
    while peer.counters().bytes_down < bytes {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rate (bytes/s) at which `peer` reads transfer bytes over about `window`.
async fn measure_down_rate(peer: &Host, window: Duration) -> f64 {
    let (b0, t0) = (peer.counters().bytes_down, Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (peer.counters().bytes_down, Instant::now());
    (b1 - b0) as f64 / t1.duration_since(t0).as_secs_f64()
}

fn assert_near(rate: f64, limit: u64, what: &str) {
    let limit = limit as f64;
    eprintln!(
        "{what}: {:.3} MiB/s for a limit of {:.3} MiB/s",
        rate / MIB as f64,
        limit / MIB as f64
    );
    assert!(
        (rate - limit).abs() <= limit * 0.10,
        "{what}: {rate:.0} B/s is not within 10 % of the limit {limit:.0} B/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_limit_holds_the_leecher_within_ten_percent_of_the_rate() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let t = tempfile::tempdir().unwrap();
        let limit = 4 * MIB;
        let leecher_limits = Limits {
            upload: None,
            download: Some(limit),
        };
        let (_s, leecher, h) =
            transfer(t.path(), 32 << 20, Limits::default(), leecher_limits).await;
        assert_eq!(leecher.limits(), leecher_limits);
        wait_for_bytes(&leecher, MIB).await;
        let rate = measure_down_rate(&leecher, Duration::from_secs(3)).await;
        assert_near(rate, limit, "download limit");
        assert!(
            !h.progress().borrow().complete,
            "the window ended after the transfer"
        );
        assert!(leecher.counters().pieces_verified > 0);
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limit_holds_the_seeder_within_ten_percent_of_the_rate() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let t = tempfile::tempdir().unwrap();
        let limit = 4 * MIB;
        let seeder_limits = Limits {
            upload: Some(limit),
            download: None,
        };
        let (seeder, leecher, h) =
            transfer(t.path(), 32 << 20, seeder_limits, Limits::default()).await;
        wait_for_bytes(&leecher, MIB).await;
        let rate = measure_down_rate(&leecher, Duration::from_secs(3)).await;
        assert_near(rate, limit, "upload limit");
        assert!(
            !h.progress().borrow().complete,
            "the window ended after the transfer"
        );
        assert!(seeder.counters().bytes_up >= leecher.counters().bytes_down);
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_changed_mid_transfer_take_effect_at_once() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let t = tempfile::tempdir().unwrap();
        let (seeder, leecher, mut h) =
            transfer(t.path(), 40 << 20, Limits::default(), Limits::default()).await;
        // A per-transfer download limit on a running download.
        h.set_download_limit(Some(6 * MIB));
        assert_eq!(h.download_limit(), Some(6 * MIB));
        wait_for_bytes(&leecher, MIB).await;
        let settle = Duration::from_millis(500);
        tokio::time::sleep(settle).await;
        let rate = measure_down_rate(&leecher, Duration::from_secs(2)).await;
        assert_near(rate, 6 * MIB, "per-transfer limit");

        // Lowered on the fly.
        h.set_download_limit(Some(2 * MIB));
        tokio::time::sleep(settle).await;
        let rate = measure_down_rate(&leecher, Duration::from_secs(2)).await;
        assert_near(rate, 2 * MIB, "per-transfer limit lowered");

        // A node-wide upload limit on the seeder, below the transfer's own.
        h.set_download_limit(None);
        seeder.set_limits(Limits {
            upload: Some(3 * MIB),
            download: None,
        });
        tokio::time::sleep(settle).await;
        let rate = measure_down_rate(&leecher, Duration::from_secs(2)).await;
        assert_near(rate, 3 * MIB, "upload limit set mid-transfer");

        // Removed: the rest arrives at loopback speed.
        seeder.set_limits(Limits::default());
        assert_eq!(seeder.limits(), Limits::default());
        let path = tokio::time::timeout(Duration::from_secs(30), h.result())
            .await
            .expect("the rest arrives once unlimited")
            .expect("download completes");
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(t.path().join("f.bin")).unwrap()
        );
    })
    .await
    .expect("bounded in time");
}
