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

/// Whether the lab can run here; panics with the reason when it cannot and
/// skipping was not asked for. Returns false to skip.
fn lab_available() -> bool {
    if std::env::var("SHOAL_SKIP_NETLAB").as_deref() == Ok("1") {
        eprintln!("netlab tests skipped (SHOAL_SKIP_NETLAB=1)");
        return false;
    }
    let nl = netlab_path();
    assert!(
        nl.exists(),
        "netlab not found at {} (set NETLAB=PATH, or SHOAL_SKIP_NETLAB=1 to skip these tests)",
        nl.display()
    );
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the netlab tests need root (network namespaces); run as root or set SHOAL_SKIP_NETLAB=1"
    );
    true
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
        if !lab_available() {
            return None;
        }
        let turn = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(netlab_path())
            .args(["up", "--prefix", prefix])
            .args(args)
            .args(["--up-rate", "none", "--down-rate", "none"])
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
