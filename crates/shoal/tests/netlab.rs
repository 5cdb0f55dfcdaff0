//! NAT traversal and LAN discovery between real `shoal` processes on virtual
//! hosts made by `netlab` (network namespaces, shaped links, NAT routers): the
//! only place where traffic may leave loopback, because the hosts exist only
//! inside this machine and the test tears them down.
//!
//! Needs root and `../shared/netlab/netlab` beside the repository (CI has
//! both). Without them every test here fails with a message saying so, unless
//! `SHOAL_SKIP_NETLAB=1` is set (for developers without root).
//!
//! Readiness comes from the lines the children print, never from sleeps; every
//! wait is bounded; every child is killed by PID when its guard drops, and
//! each lab is torn down by its guard.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use support::Proc;

const WAIT: Duration = Duration::from_secs(90);

/// Labs are built one at a time (netlab edits iptables and shared state).
static LAB_LOCK: Mutex<()> = Mutex::new(());

fn netlab_path() -> PathBuf {
    if let Ok(p) = std::env::var("NETLAB") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/netlab/netlab")
}

/// Whether the lab can run here (see `shoal_testkit::can_run`): it needs
/// netlab, root (network namespaces), `ip` and `iptables`.
fn lab_available(prefix: &str) -> bool {
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map_or_else(|| format!("the netlab test of lab {prefix}"), str::to_owned);
    shoal_testkit::can_run(&test, lab_missing())
}

fn lab_missing() -> Option<String> {
    if let Some(why) = shoal_testkit::skip_requested("SHOAL_SKIP_NETLAB") {
        return Some(why);
    }
    let nl = netlab_path();
    if !nl.exists() {
        return Some(format!(
            "netlab is not at {} (set NETLAB=PATH)",
            nl.display()
        ));
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("it needs root (network namespaces): run the tests as root".to_owned());
    }
    shoal_testkit::program("ip", "apt-get install iproute2; ./test.sh does")
        .or_else(|| shoal_testkit::program("iptables", "apt-get install iptables; ./test.sh does"))
}

/// A lab of virtual hosts, torn down when dropped (before its turn on
/// [`LAB_LOCK`] ends).
struct Lab {
    prefix: &'static str,
    _turn: MutexGuard<'static, ()>,
}

impl Lab {
    /// Waits for its turn and builds a lab with unshaped links; `args` name the
    /// hosts and NATs. `None` when the netlab tests are skipped.
    fn up(prefix: &'static str, args: &[&str]) -> Option<Lab> {
        Lab::up_shaped(prefix, args, "none", "none")
    }

    /// [`Lab::up`] with every host's upload and download limited (tc rates).
    fn up_shaped(prefix: &'static str, args: &[&str], up: &str, down: &str) -> Option<Lab> {
        if !lab_available(prefix) {
            return None;
        }
        let turn = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(netlab_path())
            .args(["up", "--prefix", prefix])
            .args(args)
            .args(["--up-rate", up, "--down-rate", down])
            .env("NETLAB_QUIET", "1")
            .output()
            .expect("netlab runs");
        assert!(
            out.status.success(),
            "netlab up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Lab {
            prefix,
            _turn: turn,
        })
    }

    fn host(&self, i: u32) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// `shoal` inside host `i`'s namespace, with its own data dir.
    fn shoal(&self, i: u32, data_dir: &Path) -> Command {
        let mut cmd = Command::new(netlab_path());
        cmd.arg("exec")
            .arg(self.host(i))
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .env("SHOAL_DATA_DIR", data_dir)
            .env("SHOAL_MDNS", "off")
            .env("SHOAL_UPNP", "off")
            .env_remove("SHOAL_LISTEN")
            .env_remove("SHOAL_BOOTSTRAP")
            .env_remove("SHOAL_RELAY")
            .env_remove("RUST_BACKTRACE");
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(netlab_path())
            .args(["down", "--prefix", self.prefix])
            .env("NETLAB_QUIET", "1")
            .output();
    }
}

/// The value of a `shoal share --json` line's field.
fn share_field(line: &str, field: &str) -> String {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("share --json printed {line:?}: {e}"));
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .to_owned()
}

fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).expect("write test file");
}

/// Starts a relay on public host 0 listening on 10.99.1.1:4001 (TCP and
/// QUIC); returns it and its QUIC multiaddr.
fn start_relay(lab: &Lab, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let dummy = dir.join("relay-dummy");
    random_file(&dummy, 1000, 7);
    let mut cmd = lab.shoal(0, &dir.join("relay"));
    cmd.arg("share")
        .arg(&dummy)
        .args([
            "--json",
            "--listen",
            "10.99.1.1:4001",
            "--relay-server",
            "on",
        ])
        .args(extra);
    let relay = Proc::spawn(cmd, WAIT);
    let line = relay.line();
    let peer = share_field(&line, "peer");
    (relay, format!("/ip4/10.99.1.1/udp/4001/quic-v1/p2p/{peer}"))
}

/// Runs `shoal get` in host `host` and returns its final JSON summary.
fn get(lab: &Lab, host: u32, listen: &str, dir: &Path, what: &str, extra: &[&str]) -> Value {
    let out = dir.join("out");
    let mut cmd = lab.shoal(host, &dir.join("leecher"));
    cmd.arg("get")
        .arg(what)
        .arg("-o")
        .arg(&out)
        .args(["--json", "--stall-timeout", "60s", "--listen", listen])
        .args(extra);
    let mut p = Proc::spawn(cmd, WAIT);
    let ok = p.wait_exit().success();
    assert!(ok, "shoal get failed; stderr: {}", p.drain_err());
    let summary = p.out.try_iter().last().expect("get printed a summary");
    serde_json::from_str(&summary).unwrap_or_else(|e| panic!("summary {summary:?}: {e}"))
}

fn paths_used(summary: &Value) -> Vec<String> {
    summary["peers"]
        .as_array()
        .expect("peers in the summary")
        .iter()
        .filter(|p| p["downloaded"].as_u64().unwrap_or(0) > 0)
        .map(|p| p["path"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn assert_same_file(summary: &Value, original: &Path) {
    let got = PathBuf::from(summary["path"].as_str().expect("path in summary"));
    let a = std::fs::read(&got).expect("downloaded file");
    let b = std::fs::read(original).expect("original file");
    assert!(a == b, "the downloaded file differs from the original");
}

/// Two peers behind port-preserving NATs (a typical home router): the
/// seeder reserves a circuit on a public relay with libp2p's default limits
/// (128 KiB per circuit), so 16 MiB can only arrive once DCUtR has punched a
/// direct path; the summary says every byte came over a direct path.
#[test]
fn hole_punching_through_home_nats_gives_a_direct_path() {
    let Some(lab) = Lab::up("shp", &["--hosts", "3", "--nat", "1,2"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_relay, relay_addr) = start_relay(&lab, dir.path(), &[]);

    let file = dir.path().join("big.bin");
    random_file(&file, 16 << 20, 1);
    let mut cmd = lab.shoal(1, &dir.path().join("seeder"));
    cmd.arg("share").arg(&file).args([
        "--json",
        "--listen",
        "10.98.2.2:5001",
        "--relay",
        &relay_addr,
    ]);
    let seeder = Proc::spawn(cmd, WAIT);
    let ticket = share_field(&seeder.line(), "ticket");
    assert!(
        share_field_addrs(&ticket)
            .iter()
            .any(|a| a.contains("/p2p-circuit")),
        "the seeder's ticket names its relay circuit"
    );

    let summary = get(&lab, 2, "10.98.3.2:6001", dir.path(), &ticket, &[]);
    assert_same_file(&summary, &file);
    let paths = paths_used(&summary);
    assert_eq!(
        paths,
        vec!["direct".to_owned()],
        "bytes came over {paths:?}"
    );
}

/// Behind symmetric NATs hole punching cannot work; a relay that opts in to
/// carrying data (`--relay-max-circuit-bytes 0`) carries the transfer, and
/// the summary says the path was relayed.
#[test]
fn symmetric_nats_fall_back_to_a_relay_that_opts_in() {
    let Some(lab) = Lab::up("shr", &["--hosts", "3", "--sym-nat", "1,2"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_relay, relay_addr) = start_relay(&lab, dir.path(), &["--relay-max-circuit-bytes", "0"]);

    let file = dir.path().join("f.bin");
    random_file(&file, 4 << 20, 2);
    let mut cmd = lab.shoal(1, &dir.path().join("seeder"));
    cmd.arg("share").arg(&file).args([
        "--json",
        "--listen",
        "10.98.2.2:5001",
        "--relay",
        &relay_addr,
    ]);
    let seeder = Proc::spawn(cmd, WAIT);
    let ticket = share_field(&seeder.line(), "ticket");

    let summary = get(&lab, 2, "10.98.3.2:6001", dir.path(), &ticket, &[]);
    assert_same_file(&summary, &file);
    let paths = paths_used(&summary);
    assert_eq!(
        paths,
        vec!["relayed".to_owned()],
        "bytes came over {paths:?}"
    );
}

/// On one LAN with mDNS on, `shoal get ID` (no ticket, no DHT bootstrap)
/// finds the seeder through mDNS and downloads from it.
#[test]
fn mdns_finds_a_lan_seeder_without_ticket_or_dht() {
    let Some(lab) = Lab::up("shm", &["--hosts", "2"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.bin");
    random_file(&file, 3 << 20, 3);
    let mut cmd = lab.shoal(0, &dir.path().join("seeder"));
    cmd.env("SHOAL_MDNS", "on").arg("share").arg(&file).args([
        "--json",
        "--listen",
        "10.99.1.1:5001",
    ]);
    let seeder = Proc::spawn(cmd, WAIT);
    let id = share_field(&seeder.line(), "id");

    let out = dir.path().join("out");
    let mut cmd = lab.shoal(1, &dir.path().join("leecher"));
    cmd.env("SHOAL_MDNS", "on")
        .arg("get")
        .arg(&id)
        .arg("-o")
        .arg(&out)
        .args([
            "--json",
            "--stall-timeout",
            "60s",
            "--listen",
            "10.99.1.2:6001",
        ]);
    let mut p = Proc::spawn(cmd, WAIT);
    assert!(
        p.wait_exit().success(),
        "shoal get failed; stderr: {}",
        p.drain_err()
    );
    let summary: Value =
        serde_json::from_str(&p.out.try_iter().last().expect("summary")).expect("json summary");
    assert_same_file(&summary, &file);
}

/// The addresses in a ticket, via `shoal ticket inspect --json`.
fn share_field_addrs(ticket: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["ticket", "inspect", ticket])
        .output()
        .expect("shoal ticket inspect runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// A daemon behind a home NAT learns from AutoNAT (served by a public peer it
/// bootstraps from) that nobody can dial it, and its status says "private".
#[test]
fn daemon_behind_a_nat_reports_private_reachability() {
    let Some(lab) = Lab::up("sha", &["--hosts", "2", "--nat", "1"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_relay, relay_addr) = start_relay(&lab, dir.path(), &[]);
    let data = dir.path().join("daemon");
    let mut cmd = lab.shoal(1, &data);
    cmd.args([
        "daemon",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "10.98.2.2:5001",
        "--bootstrap",
        &relay_addr,
    ])
    .env("XDG_CONFIG_HOME", dir.path().join("config"));
    let _daemon = Proc::spawn(cmd, WAIT);
    let deadline = std::time::Instant::now() + WAIT;
    let mut last: String;
    loop {
        let out = lab
            .shoal(1, &data)
            .args(["status", "--json"])
            .output()
            .expect("shoal status runs");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
            last = v["reachability"].as_str().unwrap_or("?").to_owned();
            if last == "private" {
                break;
            }
        } else {
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reachability never became private within {WAIT:?}; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------- hostile swarm

/// The seeder's peak memory (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Starts hostile peers given the seeder's share line; returns them and the
/// ticket the leechers use instead of the seeder's, if any.
type Attack<'a> = dyn Fn(&str) -> (Vec<Proc>, Option<String>) + 'a;

/// One swarm: a fresh seeder on host 0 sharing `file`, five leechers on hosts
/// 1..=5 started at once with `ticket` (or the seeder's own), and the hostile
/// peers `attack` starts once the seeder is up. Returns the slowest leecher's
/// time, the seeder's peak RSS in KiB, and every leecher's summary.
fn swarm_run(
    lab: &Lab,
    dir: &Path,
    file: &Path,
    attack: Option<&Attack<'_>>,
) -> (Duration, u64, Vec<Value>) {
    let mut cmd = lab.shoal(0, &dir.join("seeder"));
    cmd.arg("share")
        .arg(file)
        .args(["--json", "--listen", "10.99.1.1:4001"]);
    let seeder = Proc::spawn(cmd, WAIT);
    let line = seeder.line();
    let mut ticket = share_field(&line, "ticket");
    let mut hostile = Vec::new();
    if let Some(attack) = attack {
        let (procs, with_corrupt) = attack(&line);
        hostile = procs;
        if let Some(t) = with_corrupt {
            ticket = t;
        }
    }
    let started = std::time::Instant::now();
    let mut leechers: Vec<Proc> = (1..=5u32)
        .map(|i| {
            let mut cmd = lab.shoal(i, &dir.join(format!("leecher-{i}")));
            cmd.arg("get")
                .arg(&ticket)
                .arg("-o")
                .arg(dir.join(format!("out-{i}")))
                .args(["--json", "--stall-timeout", "60s", "--listen"])
                .arg(format!("10.99.1.{}:4001", i + 1));
            Proc::spawn(cmd, WAIT)
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut summaries = Vec::new();
    for (i, p) in leechers.iter_mut().enumerate() {
        let ok = p.wait_exit().success();
        slowest = slowest.max(started.elapsed());
        assert!(ok, "leecher {} failed; stderr: {}", i + 1, p.drain_err());
        let summary = p.out.try_iter().last().expect("get printed a summary");
        let v: Value =
            serde_json::from_str(&summary).unwrap_or_else(|e| panic!("summary {summary:?}: {e}"));
        assert_same_file(&v, file);
        summaries.push(v);
    }
    let peak = peak_rss_kib(seeder.id());
    drop(hostile);
    drop(seeder);
    (slowest, peak, summaries)
}

/// Issue 12's soak: five legitimate leechers and one seeder on 20 Mbit/s up,
/// 100 Mbit/s down links, first alone, then with hostile peers on other hosts
/// at the same time: one that requests and never reads, one that reads at
/// 64 KiB/s, 200 TLS connections that never send a hello (reopened), a peer
/// serving corrupt data (named in the leechers' ticket), and a TCP slowloris
/// on the seeder's libp2p port. Every leecher gets a correct file within 1.5×
/// the time without attackers, the corrupt peer is banned, and the seeder's
/// memory stays under 128 MiB.
#[test]
fn hostile_swarm_soak() {
    let Some(lab) = Lab::up_shaped("hs", &["--hosts", "11"], "20mbit", "100mbit") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.bin");
    random_file(&file, 16 << 20, 12);

    let (calm, calm_rss, _) = swarm_run(&lab, &dir.path().join("calm"), &file, None);

    let exe = std::env::current_exe().expect("the test binary");
    let role = |host: u32, role: &str, share: &str| -> Proc {
        let peer = share_field(share, "peer");
        let addrs: Vec<String> = serde_json::from_str::<Value>(share)
            .ok()
            .and_then(|v| v["addrs"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let fast = addrs
            .iter()
            .find(|a| a.ends_with("/tls") && a.contains("10.99.1.1"))
            .expect("the seeder's fast-path address")
            .clone();
        let mut cmd = Command::new(netlab_path());
        cmd.arg("exec")
            .arg(lab.host(host))
            .arg(&exe)
            .args([
                "--exact",
                "hostile_peer",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("SHOAL_HOSTILE_ROLE", role)
            .env("SHOAL_HOSTILE_PEER", &peer)
            .env("SHOAL_HOSTILE_FAST", &fast)
            .env("SHOAL_HOSTILE_TCP", "10.99.1.1:4001")
            .env("SHOAL_HOSTILE_CONTENT", share_field(share, "id"))
            .env("SHOAL_HOSTILE_FILE", &file)
            .env("SHOAL_HOSTILE_LISTEN", format!("10.99.1.{}", host + 1))
            .env("SHOAL_HOSTILE_SECS", "90");
        Proc::spawn(cmd, WAIT)
    };
    let corrupt_peer = std::cell::RefCell::new(String::new());
    let attack = |share: &str| -> (Vec<Proc>, Option<String>) {
        let mut procs = vec![
            role(6, "non-reader", share),
            role(7, "slow-reader", share),
            role(8, "silent-tls", share),
            role(10, "slowloris", share),
        ];
        let corrupt = role(9, "corrupt", share);
        // It prints its peer id and addresses once it listens.
        // (libtest may print "test hostile_peer ... " on the same line.)
        let ready: Value = loop {
            let l = corrupt.line();
            if let Some(Ok(v)) = l.find('{').map(|i| serde_json::from_str::<Value>(&l[i..])) {
                break v;
            }
        };
        *corrupt_peer.borrow_mut() = ready["peer"].as_str().unwrap_or("").to_owned();
        let mut ticket: shoal_core::Ticket = share_field(share, "ticket").parse().expect("ticket");
        ticket.providers.push(shoal_core::Provider {
            peer: ready["peer"].as_str().unwrap().parse().expect("peer id"),
            addrs: ready["addrs"]
                .as_array()
                .expect("addrs")
                .iter()
                .filter_map(|a| a.as_str()?.parse().ok())
                .collect(),
        });
        // The readers have asked for pieces before the leechers start.
        // (Each wait for a line is bounded; libtest's own lines come first.)
        for p in &procs[..2] {
            while !p.line().contains("\"requested\"") {}
        }
        procs.push(corrupt);
        (procs, Some(ticket.to_string()))
    };
    let (hostile, hostile_rss, summaries) =
        swarm_run(&lab, &dir.path().join("hostile"), &file, Some(&attack));
    let corrupt = corrupt_peer.borrow().clone();
    let banned_by = summaries
        .iter()
        .filter(|v| {
            v["banned_peers"]
                .as_array()
                .is_some_and(|b| b.iter().any(|p| p.as_str() == Some(corrupt.as_str())))
        })
        .count();
    let figures = serde_json::json!({
        "calm_s": calm.as_secs_f64(),
        "hostile_s": hostile.as_secs_f64(),
        "ratio": hostile.as_secs_f64() / calm.as_secs_f64(),
        "seeder_peak_rss_mib_calm": calm_rss as f64 / 1024.0,
        "seeder_peak_rss_mib_hostile": hostile_rss as f64 / 1024.0,
        "leechers_that_banned_the_corrupt_peer": banned_by,
    });
    eprintln!("hostile swarm soak: {figures}");
    assert!(
        banned_by > 0,
        "no leecher banned the corrupt peer: {figures}"
    );
    assert!(
        hostile.as_secs_f64() <= 1.5 * calm.as_secs_f64(),
        "the attack slowed the swarm more than 1.5x: {figures}"
    );
    assert!(
        hostile_rss > 0 && hostile_rss < 128 * 1024,
        "the seeder's memory went over 128 MiB: {figures}"
    );
}

/// A hostile peer for [`hostile_swarm_soak`], run by it inside a lab host
/// (the test binary runs itself with `SHOAL_HOSTILE_ROLE` set); does nothing
/// otherwise.
#[test]
#[ignore = "a role of hostile_swarm_soak, run by it inside a netlab host"]
fn hostile_peer() {
    let Ok(role) = std::env::var("SHOAL_HOSTILE_ROLE") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(hostile::run(&role));
}

mod hostile {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use shoal_core::proto::{decode_frame, encode, Hello, Message};
    use shoal_core::ContentId;
    use shoal_net::fast::FastTls;
    use shoal_net::{Keypair, PeerId};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::time::{timeout, Instant};

    struct Env {
        seeder: PeerId,
        fast: SocketAddr,
        tcp: SocketAddr,
        id: ContentId,
        file: PathBuf,
        listen: std::net::IpAddr,
        until: Instant,
    }

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }

    pub async fn run(role: &str) {
        let fast: shoal_net::Multiaddr = var("SHOAL_HOSTILE_FAST").parse().expect("fast addr");
        let env = Env {
            seeder: var("SHOAL_HOSTILE_PEER").parse().expect("peer id"),
            fast: shoal_net::addrs::parse_fast_multiaddr(&fast)
                .expect("a fast-path address")
                .0,
            tcp: var("SHOAL_HOSTILE_TCP").parse().expect("tcp addr"),
            id: var("SHOAL_HOSTILE_CONTENT").parse().expect("content id"),
            file: var("SHOAL_HOSTILE_FILE").into(),
            listen: var("SHOAL_HOSTILE_LISTEN").parse().expect("listen ip"),
            until: Instant::now()
                + Duration::from_secs(var("SHOAL_HOSTILE_SECS").parse().expect("secs")),
        };
        match role {
            "non-reader" => reader(&env, None).await,
            "slow-reader" => reader(&env, Some(64 * 1024)).await,
            "silent-tls" => silent_tls(&env).await,
            "slowloris" => slowloris(&env).await,
            "corrupt" => corrupt(&env).await,
            other => panic!("unknown role {other}"),
        }
    }

    async fn send<W: AsyncWrite + Unpin>(w: &mut W, m: &Message<'_>) -> std::io::Result<()> {
        let mut out = Vec::new();
        encode(m, &mut out).map_err(std::io::Error::other)?;
        w.write_all(&out).await?;
        w.flush().await
    }

    /// The next whole frame's bytes; `None` at the end or on a bad frame.
    async fn frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            match decode_frame(buf) {
                Ok(Some((_, n))) => return Some(buf.drain(..n).collect()),
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = r.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Requests what the seeder offers, then reads nothing (`rate` None) or
    /// `rate` bytes per second; reconnects when the seeder drops it.
    async fn reader(env: &Env, rate: Option<u64>) {
        let tls = FastTls::new(&Keypair::generate_ed25519()).expect("tls");
        let mut told = false;
        while Instant::now() < env.until {
            let Ok(Ok(mut s)) =
                timeout(Duration::from_secs(5), tls.connect(env.fast, env.seeder)).await
            else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let _ = send(&mut s, &Message::Hello(Hello::new(env.id))).await;
            let _ = send(&mut s, &Message::HaveNone).await;
            let _ = send(&mut s, &Message::Interested).await;
            let mut buf = Vec::new();
            let mut offered = Vec::new();
            let mut unchoked = false;
            let mut all = false;
            let shown = Instant::now() + Duration::from_secs(10);
            while Instant::now() < shown && !(unchoked && (all || !offered.is_empty())) {
                let Ok(Some(f)) = timeout(Duration::from_secs(10), frame(&mut s, &mut buf)).await
                else {
                    break;
                };
                match decode_frame(&f) {
                    Ok(Some((Message::Unchoke, _))) => unchoked = true,
                    Ok(Some((Message::Have { piece }, _))) => offered.push(piece),
                    Ok(Some((Message::HaveAll, _))) | Ok(Some((Message::Bitfield { .. }, _))) => {
                        all = true
                    }
                    _ => {}
                }
            }
            let pieces: Vec<u32> = if offered.is_empty() {
                (0..64).collect()
            } else {
                offered
            };
            for &piece in &pieces {
                let _ = send(&mut s, &Message::Request { piece }).await;
            }
            if !told {
                println!("{{\"role\":\"reader\",\"requested\":{}}}", pieces.len());
                told = true;
            }
            let session_end = Instant::now() + Duration::from_secs(15);
            match rate {
                None => tokio::time::sleep_until(session_end.min(env.until)).await,
                Some(rate) => {
                    let mut chunk = vec![0u8; 16 * 1024];
                    let pause = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                    while Instant::now() < env.until {
                        match timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// TLS connections that never send a hello: 200 at a time, reopened
    /// every 2.5 s.
    async fn silent_tls(env: &Env) {
        let tls = FastTls::new(&Keypair::generate_ed25519()).expect("tls");
        let mut opened = 0u64;
        while Instant::now() < env.until {
            let round = Instant::now();
            let mut held = Vec::new();
            while held.len() < 200 && round.elapsed() < Duration::from_secs(2) {
                if let Ok(Ok(s)) =
                    timeout(Duration::from_secs(1), tls.connect(env.fast, env.seeder)).await
                {
                    held.push(s);
                    opened += 1;
                }
            }
            tokio::time::sleep_until(round + Duration::from_millis(2_500)).await;
        }
        println!("{{\"role\":\"silent-tls\",\"opened\":{opened}}}");
    }

    /// TCP connections to the libp2p port that never speak, 800 at a time,
    /// reopened every 5 s.
    async fn slowloris(env: &Env) {
        let mut opened = 0u64;
        while Instant::now() < env.until {
            let round = Instant::now();
            let mut held = Vec::new();
            while held.len() < 800 && round.elapsed() < Duration::from_secs(3) {
                if let Ok(Ok(s)) = timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(env.tcp),
                )
                .await
                {
                    held.push(s);
                    opened += 1;
                }
            }
            tokio::time::sleep_until(round + Duration::from_secs(5)).await;
        }
        println!("{{\"role\":\"slowloris\",\"opened\":{opened}}}");
    }

    /// A peer that claims the whole content, serves its true outboard and
    /// pieces with one byte flipped.
    async fn corrupt(env: &Env) {
        let ob = shoal_store::hash_file(&env.file, &|_| {}).expect("hash the file");
        let layout = ob.layout();
        let cvs = std::sync::Arc::new(ob.encode());
        let data = std::sync::Arc::new(std::fs::read(&env.file).expect("read the file"));
        let cfg = shoal_net::NetConfig {
            listen: shoal_net::config::socket_to_multiaddrs((env.listen, 4001).into()),
            fast_listen: vec![(env.listen, 4002).into()],
            mdns: false,
            upnp: false,
            dht_mode: shoal_net::DhtMode::Client,
            ..Default::default()
        };
        let (net, events) = shoal_net::Net::start(Keypair::generate_ed25519(), cfg)
            .await
            .expect("net");
        net.wait_listening(Duration::from_secs(10))
            .await
            .expect("listening");
        let addrs: Vec<String> = net.ticket_addrs().iter().map(ToString::to_string).collect();
        println!(
            "{}",
            serde_json::json!({ "role": "corrupt", "peer": net.peer_id().to_string(), "addrs": addrs })
        );
        let shoal_net::NetEvents {
            mut incoming,
            mut events,
        } = events;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let (piece_size, len) = (layout.piece_size(), layout.len());
        while let Ok(Some(inc)) = timeout(
            env.until.saturating_duration_since(Instant::now()),
            incoming.recv(),
        )
        .await
        {
            let (cvs, data, id) = (cvs.clone(), data.clone(), env.id);
            tokio::spawn(async move {
                let mut s = inc.stream;
                let mut buf = Vec::new();
                let _their_hello = frame(&mut s, &mut buf).await;
                let _their_availability = frame(&mut s, &mut buf).await;
                let hello = Hello {
                    piece_size: Some(piece_size),
                    content_len: Some(len),
                    ..Hello::new(id)
                };
                if send(&mut s, &Message::Hello(hello)).await.is_err()
                    || send(&mut s, &Message::HaveAll).await.is_err()
                {
                    return;
                }
                while let Some(f) = frame(&mut s, &mut buf).await {
                    let ok = match decode_frame(&f) {
                        Ok(Some((Message::Interested, _))) => {
                            send(&mut s, &Message::Unchoke).await.is_ok()
                        }
                        Ok(Some((Message::Request { piece }, _))) => {
                            let start = (piece as usize) * piece_size as usize;
                            let end = (start + piece_size as usize).min(data.len());
                            let mut bad = data.get(start..end).unwrap_or(&[]).to_vec();
                            if let Some(b) = bad.first_mut() {
                                *b ^= 0xff;
                            }
                            send(&mut s, &Message::Piece { piece, data: &bad })
                                .await
                                .is_ok()
                        }
                        Ok(Some((Message::OutboardRequest { first, count }, _))) => {
                            let a = first as usize * 32;
                            let b = (a + count as usize * 32).min(cvs.len());
                            let part = cvs.get(a..b).unwrap_or(&[]);
                            send(&mut s, &Message::OutboardResponse { first, cvs: part })
                                .await
                                .is_ok()
                        }
                        Ok(Some((Message::Close { .. }, _))) => false,
                        _ => true,
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
    }
}
