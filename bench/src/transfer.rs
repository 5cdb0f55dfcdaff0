//! `shoal-bench transfer`: one file from one sender to one receiver on loopback,
//! for shoal's fast path (TCP + TLS 1.3), shoal over libp2p QUIC, `cp` (the
//! yardstick), scp (aes128-gcm), rqbit and socat, interleaved round by round.
//!
//! Wall time runs from the spawn of the receiving process to its exit (for
//! socat: from the sender's spawn to the receiver's exit); every output is then
//! checked byte for byte by its BLAKE3 id. CPU seconds and peak RSS are per
//! process: the receiver's from `getrusage` in the `measure` wrapper, a
//! server's from `/proc` over the transfer only (its peak RSS is reset with
//! `clear_refs` once it is ready, so indexing the file before serving does not
//! count).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::measure::{SocketCount, ThreadStates, Usage};
use crate::procs::{self, Cmd, Daemon, Measured, ServerUsage, SocketSampler, Sshd};

/// The ways of moving the file, in the order each round runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// `cp` to a fresh path (the yardstick).
    Cp,
    /// `cp`, then `sync FILE` (fsync): a copy as durable as a finished get,
    /// which syncs the file before moving it into place.
    CpSync,
    /// shoal share + get over the direct TCP + TLS fast path.
    Fast,
    /// shoal share + get over libp2p QUIC only (no TCP listener, fast path off).
    Quic,
    /// scp (SFTP mode) with aes128-gcm through a throwaway sshd on loopback.
    Scp,
    /// rqbit share + rqbit download with the seeder as initial peer.
    Rqbit,
    /// socat TCP copy without crypto.
    Socat,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Cp,
        Method::CpSync,
        Method::Fast,
        Method::Quic,
        Method::Scp,
        Method::Rqbit,
        Method::Socat,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::Cp => "cp",
            Method::CpSync => "cp + fsync",
            Method::Fast => "shoal fast path",
            Method::Quic => "shoal libp2p QUIC",
            Method::Scp => "scp aes128-gcm",
            Method::Rqbit => "rqbit",
            Method::Socat => "socat (no crypto)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Method::Cp => "cp",
            Method::CpSync => "cp_fsync",
            Method::Fast => "shoal_fast",
            Method::Quic => "shoal_quic",
            Method::Scp => "scp",
            Method::Rqbit => "rqbit",
            Method::Socat => "socat",
        }
    }
}

/// Options of the `transfer` subcommand.
pub struct Options {
    pub size: u64,
    pub file: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub runs: u32,
    pub methods: Vec<Method>,
    pub shoal: Option<PathBuf>,
    pub rqbit: Option<PathBuf>,
    pub timeout: Duration,
    pub json: bool,
    /// Drop the clean page cache and re-read the source before every transfer.
    pub drop_caches: bool,
}

/// One transfer of one method.
#[derive(Clone, Debug, Default)]
struct Sample {
    wall: Duration,
    receiver: Usage,
    sender: Option<ServerUsage>,
    /// Transport evidence, for the shoal rows.
    path: Option<PathEvidence>,
    /// The receiver's thread states over the transfer, for the shoal rows.
    threads: Option<ThreadStates>,
}

#[derive(Clone, Debug, Default)]
struct PathEvidence {
    /// The `path` of each peer in `shoal get --json`'s summary.
    reported: Vec<String>,
    receiver_sockets: SocketCount,
    sender_sockets: SocketCount,
}

impl PathEvidence {
    fn summary(&self) -> String {
        format!(
            "path={}; get TCP est {} / UDP {}; seeder TCP est {} listen {} / UDP {}",
            if self.reported.is_empty() {
                "?".to_owned()
            } else {
                self.reported.join(",")
            },
            self.receiver_sockets.tcp_established,
            self.receiver_sockets.udp,
            self.sender_sockets.tcp_established,
            self.sender_sockets.tcp_listen,
            self.sender_sockets.udp,
        )
    }

    /// Whether the evidence proves the transfer ran over libp2p QUIC: the get
    /// says the path was a direct libp2p stream (not `fast`), and neither side
    /// held any TCP connection while it ran, only UDP sockets.
    fn proves_quic(&self) -> bool {
        !self.reported.is_empty()
            && self.reported.iter().all(|p| p == "direct")
            && self.receiver_sockets.tcp_established == 0
            && self.sender_sockets.tcp_established == 0
            && self.sender_sockets.tcp_listen == 0
            && self.receiver_sockets.udp > 0
            && self.sender_sockets.udp > 0
    }

    fn proves_fast(&self) -> bool {
        !self.reported.is_empty()
            && self.reported.iter().all(|p| p == "fast")
            && self.receiver_sockets.tcp_established > 0
    }
}

enum Outcome {
    Skipped(String),
    Samples(Vec<Sample>, Vec<String>),
}

/// Where the runs happen and what they use.
struct Setup {
    src: PathBuf,
    src_name: String,
    id: String,
    work: PathBuf,
    shoal: PathBuf,
    rqbit: Option<PathBuf>,
    timeout: Duration,
}

pub fn run(opts: Options) -> Result<()> {
    if opts.drop_caches {
        // Before writing a source file of gigabytes, not at the first transfer.
        std::fs::OpenOptions::new()
            .write(true)
            .open(DROP_CACHES)
            .context(DROP_CACHES_HINT)?;
    }
    let size = opts.size;
    let src = opts
        .file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-bench-{size}.bin")));
    crate::make_file(&src, size)?;
    let work = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shoal-bench-transfer-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work)
        .with_context(|| format!("cannot create the work folder {}", work.display()))?;
    let shoal = match &opts.shoal {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("shoal"))
            .ok_or_else(|| anyhow!("cannot locate the shoal binary; pass --shoal PATH"))?,
    };
    if !shoal.is_file() {
        bail!(
            "no shoal binary at {}; build it with `cargo build --release --locked -p shoal -p shoal-bench` or pass --shoal PATH",
            shoal.display()
        );
    }
    let rqbit = match &opts.rqbit {
        Some(p) => Some(p.clone()).filter(|p| p.is_file()),
        None => procs::find_program("rqbit"),
    };
    // Also warms the page cache: every method reads the source from memory.
    let id = blake3_of(&src)?;
    let setup = Setup {
        src_name: src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        src,
        id,
        work,
        shoal,
        rqbit,
        timeout: opts.timeout,
    };

    let methods: Vec<Method> = Method::ALL
        .into_iter()
        .filter(|m| opts.methods.contains(m))
        .collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); methods.len()];
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); methods.len()];
    let mut skipped: Vec<Option<String>> = vec![None; methods.len()];

    let mut sshd = None;
    if methods.contains(&Method::Scp) {
        match Sshd::start(&setup.work.join("sshd")) {
            Ok(s) => sshd = Some(s),
            Err(e) => skipped[index(&methods, Method::Scp)] = Some(format!("not run: {e:#}")),
        }
    }
    if methods.contains(&Method::Rqbit) && setup.rqbit.is_none() {
        skipped[index(&methods, Method::Rqbit)] = Some("not installed (pass --rqbit PATH)".into());
    }
    if methods.contains(&Method::Socat) && procs::find_program("socat").is_none() {
        skipped[index(&methods, Method::Socat)] = Some("not installed".into());
    }

    let load0 = loadavg();
    let started = Instant::now();
    let mut kept_failures = false;
    for run in 1..=opts.runs.max(1) {
        eprintln!("round {run} (load average {})", loadavg());
        for (i, &m) in methods.iter().enumerate() {
            if skipped[i].is_some() {
                continue;
            }
            if opts.drop_caches {
                fresh_page_cache(&setup.src)?;
            }
            let dir = setup.work.join(format!("{}-{run}", m.key()));
            let res = run_one(&setup, m, &dir, sshd.as_mut());
            // Outputs are deleted at once and flushed so one method's writeback
            // does not slow the next one; a failed round keeps its logs.
            if res.is_ok() {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                kept_failures = true;
                for f in ["out", "copy.bin", "seed-data", "get-data"] {
                    let p = dir.join(f);
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
            nix::unistd::sync();
            match res {
                Ok(s) => {
                    eprintln!(
                        "  {:<18} {:>7.3} s  recv {:.2} CPU s ({:.2} sys) {:.0} MiB{}{}{}",
                        m.label(),
                        s.wall.as_secs_f64(),
                        s.receiver.cpu_s,
                        s.receiver.sys_s,
                        s.receiver.rss_mib(),
                        s.sender.map_or(String::new(), |u| format!(
                            "  send {:.2} CPU s ({:.2} sys){}",
                            u.cpu_s,
                            u.sys_s,
                            u.max_rss_kib.map_or(String::new(), |k| format!(
                                " {:.0} MiB",
                                k as f64 / 1024.0
                            ))
                        )),
                        s.path
                            .as_ref()
                            .map_or(String::new(), |p| format!("  [{}]", p.summary())),
                        s.threads
                            .as_ref()
                            .map_or(String::new(), |t| format!("  [{}]", threads_note(t)))
                    );
                    samples[i].push(s);
                }
                Err(e) => {
                    eprintln!("  {:<18} FAILED: {e:#}", m.label());
                    failures[i].push(format!("round {run}: {e:#}"));
                }
            }
        }
    }
    if let Some(s) = sshd {
        let _ = s.daemon.stop();
    }
    let outcomes: Vec<(Method, Outcome)> = methods
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let o = match skipped[i].take() {
                Some(reason) => Outcome::Skipped(reason),
                None => Outcome::Samples(
                    std::mem::take(&mut samples[i]),
                    std::mem::take(&mut failures[i]),
                ),
            };
            (m, o)
        })
        .collect();
    let report = Report {
        size,
        runs: opts.runs.max(1),
        load_before: load0,
        load_after: loadavg(),
        elapsed: started.elapsed(),
        drop_caches: opts.drop_caches,
        outcomes,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    if kept_failures {
        eprintln!("logs of the failed rounds are in {}", setup.work.display());
    } else {
        let _ = std::fs::remove_dir_all(&setup.work);
    }
    let shoal_failed = report.outcomes.iter().any(|(m, o)| {
        matches!(m, Method::Fast | Method::Quic)
            && matches!(o, Outcome::Samples(s, _) if s.is_empty())
    });
    if shoal_failed {
        bail!("a shoal transfer failed in every round; see the messages above");
    }
    Ok(())
}

fn index(methods: &[Method], m: Method) -> usize {
    methods.iter().position(|x| *x == m).unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";
const DROP_CACHES_HINT: &str = "cannot drop the page cache (writing /proc/sys/vm/drop_caches \
     needs root); run as root or leave out --drop-caches";

/// Drops the machine's clean page cache and reads `src` back into it: the next
/// transfer starts with the source cached and the rest of memory free, whatever
/// the methods before it left behind (writers into a full page cache first pay
/// for reclaiming it, in their own system CPU time).
fn fresh_page_cache(src: &Path) -> Result<()> {
    nix::unistd::sync();
    std::fs::write(DROP_CACHES, "1").context(DROP_CACHES_HINT)?;
    let mut f =
        std::fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    std::io::copy(&mut f, &mut std::io::sink())
        .with_context(|| format!("cannot read {}", src.display()))?;
    Ok(())
}

fn blake3_of(path: &Path) -> Result<String> {
    Ok(shoal_store::hash::hash_file(path, &|_| {})
        .with_context(|| format!("cannot hash {}", path.display()))?
        .root()
        .to_string())
}

/// Fails unless `out` has exactly the source's bytes.
fn verify(setup: &Setup, out: &Path) -> Result<()> {
    let got = blake3_of(out)?;
    if got != setup.id {
        bail!(
            "{} differs from the source (BLAKE3 {got}, expected {})",
            out.display(),
            setup.id
        );
    }
    Ok(())
}

fn ensure_ok(f: &procs::Finished, what: &str, log: &Path) -> Result<()> {
    if f.code != 0 {
        bail!("{what} exited with {}; see {}", f.code, log.display());
    }
    Ok(())
}

fn run_one(setup: &Setup, m: Method, dir: &Path, sshd: Option<&mut Sshd>) -> Result<Sample> {
    std::fs::create_dir_all(dir)?;
    match m {
        Method::Cp => run_cp(setup, dir, false),
        Method::CpSync => run_cp(setup, dir, true),
        Method::Fast | Method::Quic => run_shoal(setup, m == Method::Quic, dir),
        Method::Scp => run_scp(setup, dir, sshd.context("sshd is not running")?),
        Method::Rqbit => run_rqbit(setup, dir),
        Method::Socat => run_socat(setup, dir),
    }
}

fn run_cp(setup: &Setup, dir: &Path, fsync: bool) -> Result<Sample> {
    let out = dir.join("copy.bin");
    let log = dir.join("cp.log");
    let cmd = if fsync {
        // coreutils `sync FILE` fsyncs that file only.
        Cmd::new("sh")
            .arg("-c")
            .arg("cp -- \"$1\" \"$2\" && sync -- \"$2\"")
            .arg("cp-fsync")
            .arg(&setup.src)
            .arg(&out)
    } else {
        Cmd::new("cp").arg(&setup.src).arg(&out)
    };
    let f = Measured::spawn(&cmd, &dir.join("cp.usage"), &log)?.wait(setup.timeout)?;
    ensure_ok(&f, "cp", &log)?;
    verify(setup, &out)?;
    Ok(Sample {
        wall: f.usage.wall,
        receiver: f.usage,
        ..Sample::default()
    })
}

/// Loopback-only network flags of one shoal node.
fn shoal_net_args(quic_only: bool) -> Vec<&'static str> {
    if quic_only {
        vec![
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--fast-listen",
            "off",
            "--mdns",
            "off",
            "--upnp",
            "off",
        ]
    } else {
        vec![
            "--listen",
            "127.0.0.1:0",
            "--fast-listen",
            "127.0.0.1:0",
            "--mdns",
            "off",
            "--upnp",
            "off",
        ]
    }
}

fn run_shoal(setup: &Setup, quic_only: bool, dir: &Path) -> Result<Sample> {
    let seed_log = dir.join("share.log");
    // Always the foreground node, never a daemon that might run for a data dir
    // (an older shoal ignores the variable).
    let share = Cmd::new(&setup.shoal)
        .env("SHOAL_NO_DAEMON", "1")
        .arg("--data-dir")
        .arg(dir.join("seed-data"))
        .arg("share")
        .arg(&setup.src)
        .args(shoal_net_args(quic_only));
    let mut seeder = Daemon::spawn("shoal share", &share, &seed_log)?;
    let ticket = seeder.wait_line(setup.timeout, &seed_log, parse_ticket_line)?;
    let hwm_reset = seeder.begin();

    let out = dir.join("out");
    let get_log = dir.join("get.log");
    let get = Cmd::new(&setup.shoal)
        .env("SHOAL_NO_DAEMON", "1")
        .arg("--data-dir")
        .arg(dir.join("get-data"))
        .arg("get")
        .arg(&ticket)
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .args(shoal_net_args(quic_only));
    let measured = Measured::spawn(&get, &dir.join("get.usage"), &get_log)?;
    let sampler = SocketSampler::start(seeder.pid(), measured.wrapper_pid());
    let f = measured.wait(setup.timeout);
    let sampled = sampler.finish();
    let sender = seeder.usage(hwm_reset);
    seeder.stop()?;
    let f = f?;
    ensure_ok(&f, "shoal get", &get_log)?;
    let summary = parse_get_summary(&f.stdout)?;
    verify(setup, &summary.path)?;
    Ok(Sample {
        wall: f.usage.wall,
        receiver: f.usage,
        sender: Some(sender),
        path: Some(PathEvidence {
            reported: summary.paths,
            receiver_sockets: sampled.receiver_sockets,
            sender_sockets: sampled.sender_sockets,
        }),
        threads: Some(sampled.receiver_threads),
    })
}

/// The ticket on the first stdout line of `shoal share`.
fn parse_ticket_line(line: &str) -> Option<String> {
    let t = line.trim();
    t.starts_with(shoal_core::ticket::PREFIX)
        .then(|| t.to_owned())
}

struct GetSummary {
    path: PathBuf,
    paths: Vec<String>,
}

/// The last stdout line of `shoal get --json`: the output path and each peer's
/// transport path.
fn parse_get_summary(stdout: &str) -> Result<GetSummary> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("shoal get --json printed no summary: {stdout:?}"))?;
    let v: Value = serde_json::from_str(line).context("shoal get's summary is not JSON")?;
    let path = v
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("shoal get's summary has no path: {line}"))?;
    let paths = v
        .get("peers")
        .and_then(Value::as_array)
        .map(|peers| {
            peers
                .iter()
                .filter(|p| p.get("downloaded").and_then(Value::as_u64).unwrap_or(0) > 0)
                .map(|p| {
                    p.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(GetSummary {
        path: PathBuf::from(path),
        paths,
    })
}

fn run_scp(setup: &Setup, dir: &Path, sshd: &mut Sshd) -> Result<Sample> {
    let out = dir.join("copy.bin");
    let log = dir.join("scp.log");
    let key = sshd.client_key.clone();
    let cmd = Cmd::new(procs::find_program("scp").context("scp not installed")?)
        .args([
            "-q",
            "-F",
            "/dev/null",
            "-c",
            "aes128-gcm@openssh.com",
            "-P",
        ])
        .arg(sshd.port.to_string())
        .arg("-i")
        .arg(&key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@127.0.0.1:{}", sshd.user, setup.src.display()))
        .arg(&out);
    sshd.daemon.begin();
    let f = Measured::spawn(&cmd, &dir.join("scp.usage"), &log)?.wait(setup.timeout)?;
    let sender = sshd.daemon.children_usage();
    ensure_ok(&f, "scp", &log)?;
    verify(setup, &out)?;
    Ok(Sample {
        wall: f.usage.wall,
        receiver: f.usage,
        sender: Some(sender),
        ..Sample::default()
    })
}

/// Flags that keep rqbit on loopback: no DHT, trackers, LSD multicast or UPnP.
fn rqbit_global_args() -> Vec<&'static str> {
    vec![
        "--disable-dht",
        "--disable-dht-persistence",
        "--disable-trackers",
        "--disable-lsd",
        "--disable-upnp-port-forward",
        "--listen-ip",
        "127.0.0.1",
    ]
}

fn run_rqbit(setup: &Setup, dir: &Path) -> Result<Sample> {
    let rqbit = setup.rqbit.clone().context("rqbit not installed")?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let port = procs::free_port()?;
    let seed_log = dir.join("rqbit-share.log");
    let share = Cmd::new(&rqbit)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .args(rqbit_global_args())
        .arg("--listen-port")
        .arg(port.to_string())
        .arg("--http-api-listen-addr")
        .arg("127.0.0.1:0")
        .arg("share")
        .arg(&setup.src);
    let mut seeder = Daemon::spawn("rqbit share", &share, &seed_log)?;
    let magnet = seeder.wait_line(setup.timeout, &seed_log, |l| {
        l.find("magnet:").map(|i| l[i..].trim().to_owned())
    })?;
    procs::wait_listening(port, Duration::from_secs(10), "rqbit share")?;
    let hwm_reset = seeder.begin();

    let out = dir.join("out");
    let log = dir.join("rqbit-download.log");
    let get = Cmd::new(&rqbit)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .args(rqbit_global_args())
        .arg("download")
        .arg("-o")
        .arg(&out)
        .arg("-e")
        .arg("--disable-http-api")
        .arg("--initial-peers")
        .arg(format!("127.0.0.1:{port}"))
        .arg(&magnet);
    let f = Measured::spawn(&get, &dir.join("rqbit.usage"), &log)?.wait(setup.timeout);
    let sender = seeder.usage(hwm_reset);
    seeder.stop()?;
    let f = f?;
    ensure_ok(&f, "rqbit download", &log)?;
    verify(setup, &out.join(&setup.src_name))?;
    Ok(Sample {
        wall: f.usage.wall,
        receiver: f.usage,
        sender: Some(sender),
        ..Sample::default()
    })
}

fn run_socat(setup: &Setup, dir: &Path) -> Result<Sample> {
    let socat = procs::find_program("socat").context("socat not installed")?;
    let port = procs::free_port()?;
    let out = dir.join("copy.bin");
    let recv_log = dir.join("socat-recv.log");
    let send_log = dir.join("socat-send.log");
    // 128 KiB buffers (socat's default is 8 KiB): a fair plain-TCP reference.
    let recv = Cmd::new(&socat)
        .args(["-u", "-b", "131072"])
        .arg(format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
        .arg(format!("CREATE:{}", out.display()));
    let receiver = Measured::spawn(&recv, &dir.join("recv.usage"), &recv_log)?;
    procs::wait_listening(port, Duration::from_secs(10), "socat")?;
    let send = Cmd::new(&socat)
        .args(["-u", "-b", "131072"])
        .arg(format!("OPEN:{},rdonly", setup.src.display()))
        .arg(format!("TCP4:127.0.0.1:{port}"));
    let start = Instant::now();
    let sender = Measured::spawn(&send, &dir.join("send.usage"), &send_log)?;
    let s = sender.wait(setup.timeout)?;
    let r = receiver.wait(setup.timeout)?;
    let wall = r.reaped_at.saturating_duration_since(start);
    ensure_ok(&s, "socat sender", &send_log)?;
    ensure_ok(&r, "socat receiver", &recv_log)?;
    verify(setup, &out)?;
    Ok(Sample {
        wall,
        receiver: r.usage,
        sender: Some(ServerUsage {
            cpu_s: s.usage.cpu_s,
            sys_s: s.usage.sys_s,
            max_rss_kib: Some(s.usage.max_rss_kib),
        }),
        ..Sample::default()
    })
}

// ---------------------------------------------------------------- report

fn threads_note(t: &ThreadStates) -> String {
    format!(
        "get threads: running {:.0} %, disk wait {:.0} % of samples",
        ThreadStates::percent(t.running, t.samples),
        ThreadStates::percent(t.disk_wait, t.samples)
    )
}

struct Report {
    size: u64,
    runs: u32,
    load_before: String,
    load_after: String,
    elapsed: Duration,
    drop_caches: bool,
    outcomes: Vec<(Method, Outcome)>,
}

/// Best of a method's rounds: the fastest round's figures, and the highest
/// peak RSS of any round (the goal is on the worst case).
#[derive(Clone, Debug)]
struct Best {
    sample: Sample,
    receiver_rss_kib: u64,
    sender_rss_kib: Option<u64>,
    rounds: usize,
}

fn best(samples: &[Sample]) -> Option<Best> {
    let fastest = samples.iter().min_by_key(|s| s.wall)?.clone();
    let receiver_rss_kib = samples.iter().map(|s| s.receiver.max_rss_kib).max()?;
    let sender_rss_kib = samples
        .iter()
        .filter_map(|s| s.sender.and_then(|u| u.max_rss_kib))
        .max();
    Some(Best {
        sample: fastest,
        receiver_rss_kib,
        sender_rss_kib,
        rounds: samples.len(),
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// Goals from the issue.
const FAST_VS_CP_MAX: f64 = 1.5;
const SPEEDUP_MIN: f64 = 2.0;
const RSS_MAX_MIB: f64 = 64.0;

impl Report {
    fn best_of(&self, m: Method) -> Option<Best> {
        self.outcomes.iter().find_map(|(x, o)| match o {
            Outcome::Samples(s, _) if *x == m => best(s),
            _ => None,
        })
    }

    fn wall_of(&self, m: Method) -> Option<f64> {
        self.best_of(m).map(|b| b.sample.wall.as_secs_f64())
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "transfer of {:.2} GiB on loopback, best of {} rounds (load average {} before, {} after, {:.0} s in all{})",
            self.size as f64 / GIB,
            self.runs,
            self.load_before,
            self.load_after,
            self.elapsed.as_secs_f64(),
            if self.drop_caches {
                "; page cache dropped before every transfer"
            } else {
                ""
            }
        );
        let _ = writeln!(
            t,
            "| method | wall s | GB/s | × cp | receiver CPU s (sys) | receiver peak RSS MiB | sender CPU s (sys) | sender peak RSS MiB | notes |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        let cp = self.wall_of(Method::Cp);
        for (m, o) in &self.outcomes {
            match o {
                Outcome::Skipped(reason) => {
                    let _ = writeln!(
                        t,
                        "| {} | – | – | – | – | – | – | – | {reason} |",
                        m.label()
                    );
                }
                Outcome::Samples(samples, failures) => {
                    let Some(b) = best(samples) else {
                        let _ = writeln!(
                            t,
                            "| {} | – | – | – | – | – | – | – | failed: {} |",
                            m.label(),
                            failures.first().map_or("", String::as_str)
                        );
                        continue;
                    };
                    let w = b.sample.wall.as_secs_f64();
                    let mut notes = Vec::new();
                    if let Some(p) = &b.sample.path {
                        notes.push(p.summary());
                    }
                    if let Some(th) = &b.sample.threads {
                        notes.push(threads_note(th));
                    }
                    if b.rounds < self.runs as usize {
                        notes.push(format!(
                            "{} of {} rounds failed",
                            self.runs as usize - b.rounds,
                            self.runs
                        ));
                    }
                    if *m == Method::Scp {
                        notes.push("sender = sshd sessions".into());
                    }
                    let _ = writeln!(
                        t,
                        "| {} | {w:.3} | {:.2} | {} | {:.2} ({:.2}) | {:.1} | {} | {} | {} |",
                        m.label(),
                        self.size as f64 / w / 1e9,
                        cp.map_or("–".into(), |c| format!("{:.2}", w / c)),
                        b.sample.receiver.cpu_s,
                        b.sample.receiver.sys_s,
                        b.receiver_rss_kib as f64 / 1024.0,
                        b.sample.sender.map_or("–".into(), |u| {
                            format!("{:.2} ({:.2})", u.cpu_s, u.sys_s)
                        }),
                        b.sender_rss_kib
                            .map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                        notes.join("; ")
                    );
                }
            }
        }
        t.push('\n');
        for g in self.goals() {
            let _ = writeln!(t, "{g}");
        }
        t
    }

    /// The goals, each "met" / "MISSED" / "not measured".
    fn goals(&self) -> Vec<String> {
        let mut g = Vec::new();
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let fast = self.wall_of(Method::Fast);
        match (fast, self.wall_of(Method::Cp)) {
            (Some(f), Some(c)) => g.push(format!(
                "goal fast path ≤ {FAST_VS_CP_MAX}× cp: {:.2}× ({f:.3} s vs {c:.3} s): {}",
                f / c,
                verdict(f <= FAST_VS_CP_MAX * c)
            )),
            _ => g.push("goal fast path ≤ 1.5× cp: not measured".into()),
        }
        if let (Some(f), Some(c)) = (fast, self.wall_of(Method::CpSync)) {
            // Not a goal: the same comparison with the copy made as durable
            // as a finished get (which fsyncs before moving the file into place).
            g.push(format!(
                "(fast path vs cp + fsync: {:.2}× ({f:.3} s vs {c:.3} s))",
                f / c
            ));
        }
        for other in [Method::Scp, Method::Rqbit] {
            match (fast, self.wall_of(other)) {
                (Some(f), Some(o)) => g.push(format!(
                    "goal fast path ≥ {SPEEDUP_MIN}× faster than {}: {:.2}× ({f:.3} s vs {o:.3} s): {}",
                    other.label(),
                    o / f,
                    verdict(o >= SPEEDUP_MIN * f)
                )),
                _ => g.push(format!(
                    "goal fast path ≥ 2× faster than {}: not measured",
                    other.label()
                )),
            }
        }
        for m in [Method::Fast, Method::Quic] {
            if let Some(b) = self.best_of(m) {
                let r = b.receiver_rss_kib as f64 / 1024.0;
                let s = b.sender_rss_kib.map(|k| k as f64 / 1024.0);
                let ok = r <= RSS_MAX_MIB && s.is_none_or(|s| s <= RSS_MAX_MIB);
                g.push(format!(
                    "goal peak RSS ≤ {RSS_MAX_MIB} MiB per process ({}): get {r:.1} MiB, seeder {}: {}",
                    m.label(),
                    s.map_or("not measured".into(), |s| format!("{s:.1} MiB")),
                    verdict(ok)
                ));
                if let Some(p) = &b.sample.path {
                    let proven = if m == Method::Quic {
                        p.proves_quic()
                    } else {
                        p.proves_fast()
                    };
                    g.push(format!(
                        "path check ({}): {}: {}",
                        m.label(),
                        p.summary(),
                        if proven { "confirmed" } else { "NOT CONFIRMED" }
                    ));
                }
            }
        }
        g
    }

    fn to_json(&self) -> Value {
        let cp = self.wall_of(Method::Cp);
        let rows: Vec<Value> = self
            .outcomes
            .iter()
            .map(|(m, o)| match o {
                Outcome::Skipped(reason) => json!({"method": m.key(), "skipped": reason}),
                Outcome::Samples(samples, failures) => {
                    let b = best(samples);
                    json!({
                        "method": m.key(),
                        "failures": failures,
                        "best": b.as_ref().map(|b| {
                            let w = b.sample.wall.as_secs_f64();
                            json!({
                                "wall_s": w,
                                "gb_per_s": self.size as f64 / w / 1e9,
                                "ratio_to_cp": cp.map(|c| w / c),
                                "receiver_cpu_s": b.sample.receiver.cpu_s,
                                "receiver_sys_s": b.sample.receiver.sys_s,
                                "receiver_peak_rss_mib": b.receiver_rss_kib as f64 / 1024.0,
                                "sender_cpu_s": b.sample.sender.map(|u| u.cpu_s),
                                "sender_sys_s": b.sample.sender.map(|u| u.sys_s),
                                "sender_peak_rss_mib": b.sender_rss_kib.map(|k| k as f64 / 1024.0),
                            })
                        }),
                        "rounds": samples.iter().map(|s| json!({
                            "wall_s": s.wall.as_secs_f64(),
                            "receiver_cpu_s": s.receiver.cpu_s,
                            "receiver_sys_s": s.receiver.sys_s,
                            "receiver_peak_rss_kib": s.receiver.max_rss_kib,
                            "sender_cpu_s": s.sender.map(|u| u.cpu_s),
                            "sender_sys_s": s.sender.map(|u| u.sys_s),
                            "sender_peak_rss_kib": s.sender.and_then(|u| u.max_rss_kib),
                            "receiver_threads": s.threads.map(|t| json!({
                                "samples": t.samples,
                                "running": t.running,
                                "disk_wait": t.disk_wait,
                            })),
                            "path": s.path.as_ref().map(|p| json!({
                                "reported": p.reported,
                                "receiver_tcp_established": p.receiver_sockets.tcp_established,
                                "receiver_tcp_listen": p.receiver_sockets.tcp_listen,
                                "receiver_udp": p.receiver_sockets.udp,
                                "sender_tcp_established": p.sender_sockets.tcp_established,
                                "sender_tcp_listen": p.sender_sockets.tcp_listen,
                                "sender_udp": p.sender_sockets.udp,
                            })),
                        })).collect::<Vec<_>>(),
                    })
                }
            })
            .collect();
        json!({
            "bytes": self.size,
            "rounds": self.runs,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "drop_caches": self.drop_caches,
            "methods": rows,
            "goals": self.goals(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_line_is_recognised_only_with_the_ticket_prefix() {
        let t = format!("{}abc", shoal_core::ticket::PREFIX);
        assert_eq!(parse_ticket_line(&format!("{t}\n")), Some(t.clone()));
        assert_eq!(parse_ticket_line("sharing file 'x'"), None);
    }

    #[test]
    fn get_summary_gives_output_path_and_paths_of_peers_that_sent_bytes() {
        let out = "{\"id\":\"00\",\"path\":\"/tmp/o/f.bin\",\"peers\":[\
            {\"peer\":\"a\",\"downloaded\":10,\"path\":\"fast\"},\
            {\"peer\":\"b\",\"downloaded\":0,\"path\":\"direct\"}]}\n";
        let s = parse_get_summary(out).unwrap();
        assert_eq!(s.path, PathBuf::from("/tmp/o/f.bin"));
        assert_eq!(s.paths, vec!["fast".to_owned()]);
        assert!(parse_get_summary("no json here").is_err());
    }

    fn evidence(path: &str, rt: usize, st: usize, sl: usize, ru: usize, su: usize) -> PathEvidence {
        PathEvidence {
            reported: vec![path.to_owned()],
            receiver_sockets: SocketCount {
                tcp_established: rt,
                tcp_listen: 0,
                udp: ru,
            },
            sender_sockets: SocketCount {
                tcp_established: st,
                tcp_listen: sl,
                udp: su,
            },
        }
    }

    #[test]
    fn quic_is_confirmed_only_without_any_tcp_connection() {
        assert!(evidence("direct", 0, 0, 0, 1, 1).proves_quic());
        assert!(!evidence("direct", 1, 0, 0, 1, 1).proves_quic());
        assert!(!evidence("direct", 0, 0, 1, 1, 1).proves_quic());
        assert!(!evidence("fast", 0, 0, 0, 1, 1).proves_quic());
        assert!(!evidence("direct", 0, 0, 0, 0, 1).proves_quic());
        assert!(evidence("fast", 1, 1, 2, 1, 1).proves_fast());
        assert!(!evidence("direct", 1, 1, 2, 1, 1).proves_fast());
    }

    fn sample(wall_ms: u64, rss: u64) -> Sample {
        Sample {
            wall: Duration::from_millis(wall_ms),
            receiver: Usage {
                wall: Duration::from_millis(wall_ms),
                cpu_s: 1.0,
                sys_s: 0.25,
                max_rss_kib: rss,
            },
            sender: Some(ServerUsage {
                cpu_s: 0.5,
                sys_s: 0.25,
                max_rss_kib: Some(rss * 2),
            }),
            ..Sample::default()
        }
    }

    #[test]
    fn best_takes_the_fastest_round_and_the_highest_peak_rss() {
        let b = best(&[sample(2000, 100), sample(1000, 50), sample(1500, 300)]).unwrap();
        assert_eq!(b.sample.wall, Duration::from_millis(1000));
        assert_eq!(b.receiver_rss_kib, 300);
        assert_eq!(b.sender_rss_kib, Some(600));
        assert!(best(&[]).is_none());
    }

    #[test]
    fn goals_compare_against_cp_scp_and_rqbit_of_the_same_run() {
        let r = Report {
            size: 1 << 30,
            runs: 1,
            load_before: String::new(),
            load_after: String::new(),
            elapsed: Duration::ZERO,
            drop_caches: false,
            outcomes: vec![
                (Method::Cp, Outcome::Samples(vec![sample(1000, 10)], vec![])),
                (
                    Method::Fast,
                    Outcome::Samples(vec![sample(1400, 30_000)], vec![]),
                ),
                (
                    Method::Scp,
                    Outcome::Samples(vec![sample(2700, 10)], vec![]),
                ),
                (Method::Rqbit, Outcome::Skipped("not installed".into())),
            ],
        };
        let g = r.goals();
        assert!(g[0].contains("1.40×") && g[0].ends_with("met"), "{}", g[0]);
        assert!(g[1].contains("scp") && g[1].ends_with("MISSED"), "{}", g[1]);
        assert!(
            g[2].contains("rqbit") && g[2].ends_with("not measured"),
            "{}",
            g[2]
        );
        // Seeder peak 58.6 MiB, get 29.3 MiB.
        assert!(g[3].ends_with("met"), "{}", g[3]);
    }
}
