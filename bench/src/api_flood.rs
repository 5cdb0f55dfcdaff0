//! `shoal-bench api-flood`: the daemon's local HTTP API under a flood of
//! connections that each send half a request and then nothing, and whether the
//! daemon's memory comes back to its level afterwards.
//!
//! One run: start `shoal daemon` in a fresh data dir with every listener on
//! 127.0.0.1, wait until `GET /` (the web UI, no token) answers, read its RSS
//! after 2 s idle ("before"), open the flood (each connection sends
//! `GET /api/v1/status HTTP/1.1\r\nHost: x\r\n` and stops; a connect that
//! takes more than 300 ms counts as failed), and while the flood is held time
//! one complete `GET /` on a fresh connection (up to 30 s). Then close the
//! flood, wait 5 s, read the RSS ("after") and time `GET /` again. With
//! `--floods K` the flood (open, `GET /` during, hold, close, 5 s, RSS and
//! `GET /` after) is repeated K times on the same daemon, one right after the
//! other, to see whether the RSS after each keeps growing. A flood's peak RSS
//! is the highest of 100 ms samples from its first connection to its "after"
//! reading (so it includes what the daemon does with connections still queued
//! when the flood closes), and VmHWM over the same span when the kernel lets
//! us reset it. Traffic stays on loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde_json::{json, Value};

use crate::measure;
use crate::procs::{self, Cmd, Daemon};

/// What one flood connection sends: a request line and one header, without the
/// blank line that would end the headers.
const HALF_REQUEST: &[u8] = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n";
/// A flood connection not established within this counts as failed (beyond
/// the API's connection cap and the kernel's backlog, SYNs are dropped). A
/// dropped SYN is retried only after 1 s, so a burst that overflows the
/// backlog before the daemon accepts also counts as failed: the count is what
/// got in, not the cap.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Threads opening the flood: most of a refused flood is waiting out connect
/// timeouts, and the flood must be open well within the API's 10 s header
/// timeout for "during" to mean anything (5000 connections take about 1.5 s).
const FLOOD_THREADS: usize = 1024;
/// How long one `GET /` may take, connection included, before it counts as
/// "no answer".
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon has to print its API address and answer `GET /`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time before the "before" reading.
const IDLE_BEFORE: Duration = Duration::from_secs(2);
/// Time between closing the flood and the "after" reading.
const SETTLE_AFTER: Duration = Duration::from_secs(5);
/// RSS and descriptor sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

pub struct Options {
    pub connections: usize,
    /// Floods per run, on the same daemon (at least 1).
    pub floods: u32,
    pub shoal: Option<PathBuf>,
    pub json: bool,
    pub runs: u32,
}

/// One timed `GET /`.
#[derive(Clone, Debug)]
enum Probe {
    /// Time from the start of the connect to the response's status line, and
    /// the part of it the connect took.
    Answered {
        latency: Duration,
        connect: Duration,
        status: u16,
    },
    /// No status line within [`PROBE_TIMEOUT`] (or the connection failed).
    NoAnswer(String),
}

impl Probe {
    fn text(&self) -> String {
        match self {
            Probe::Answered {
                latency, status, ..
            } => {
                if *status == 200 {
                    duration_text(*latency)
                } else {
                    format!("{} (status {status})", duration_text(*latency))
                }
            }
            Probe::NoAnswer(_) => "no answer".into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Probe::Answered {
                latency,
                connect,
                status,
            } => json!({
                "answered": true,
                "ms": round3(latency.as_secs_f64() * 1e3),
                "connect_ms": round3(connect.as_secs_f64() * 1e3),
                "status": status,
            }),
            Probe::NoAnswer(why) => json!({"answered": false, "error": why}),
        }
    }
}

/// Figures of one run: one daemon, idle, then its floods in order.
#[derive(Clone, Debug)]
struct RunResult {
    /// After 2 s idle, before the first flood.
    rss_before_kib: u64,
    fds_before: usize,
    /// At least one.
    floods: Vec<FloodResult>,
}

impl RunResult {
    /// The highest peak of its floods.
    fn rss_peak_kib(&self) -> u64 {
        self.floods
            .iter()
            .map(|f| f.rss_peak_kib)
            .max()
            .unwrap_or(0)
    }

    /// The highest VmHWM of its floods, if every flood has one.
    fn hwm_kib(&self) -> Option<u64> {
        self.floods
            .iter()
            .map(|f| f.hwm_kib)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max())
    }

    fn fds_peak(&self) -> usize {
        self.floods.iter().map(|f| f.fds_peak).max().unwrap_or(0)
    }

    fn last(&self) -> &FloodResult {
        self.floods.last().expect("a run has at least one flood")
    }
}

/// Figures of one flood.
#[derive(Clone, Debug)]
struct FloodResult {
    /// Highest 100 ms sample from the flood's start to its "after" reading.
    rss_peak_kib: u64,
    /// VmHWM over the same span, when `clear_refs` could reset it.
    hwm_kib: Option<u64>,
    /// 5 s after the flood closed.
    rss_after_kib: u64,
    fds_peak: usize,
    fds_after: usize,
    opened: usize,
    /// Failed connects by error text.
    failed: BTreeMap<String, usize>,
    open_time: Duration,
    /// Flood connections the daemon had closed (or answered) by the time we let go.
    ended_by_daemon: usize,
    /// From the end of the flood's opening to its closing.
    held: Duration,
    during: Probe,
    after: Probe,
}

impl FloodResult {
    fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

pub fn run(opts: Options) -> Result<()> {
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
    let nofile = raise_nofile()?;
    // Our sockets plus a few for stdio, logs and /proc.
    if (nofile as usize) < opts.connections.saturating_add(64) {
        eprintln!(
            "warning: the open-file limit is {nofile}, below --connections {} (+64); \
             connections beyond it fail with EMFILE",
            opts.connections
        );
    }
    let load_before = loadavg();
    let mut results = Vec::new();
    let floods = opts.floods.max(1);
    for run in 1..=opts.runs.max(1) {
        eprintln!("run {run} (load average {})", loadavg());
        let r = run_one(&shoal, opts.connections, floods, run)
            .with_context(|| format!("run {run} failed"))?;
        results.push(r);
    }
    let load_after = loadavg();
    if opts.json {
        let v = json!({
            "bench": "api-flood",
            "shoal": shoal.display().to_string(),
            "connections": opts.connections,
            "floods": floods,
            "connect_timeout_ms": CONNECT_TIMEOUT.as_millis() as u64,
            "nofile_limit": nofile,
            "load_before": load_before,
            "load_after": load_after,
            "runs": results.iter().enumerate().map(|(i, r)| run_json(i + 1, r)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!(
            "{}",
            table(
                &results,
                opts.connections,
                floods,
                &load_before,
                &load_after
            )
        );
    }
    Ok(())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (the daemon,
/// started afterwards, inherits it) and returns the new soft limit.
fn raise_nofile() -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE) failed")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("cannot raise the open-file limit from {soft} to {hard}"))?;
    }
    Ok(hard.max(soft))
}

/// A scratch folder deleted when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_one(shoal: &Path, connections: usize, floods: u32, run: u32) -> Result<RunResult> {
    let tmp = TempDir(std::env::temp_dir().join(format!(
        "shoal-bench-api-flood-{}-{run}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0)
        .with_context(|| format!("cannot create {}", tmp.0.display()))?;
    // An empty configuration file, so the caller's ~/.config/shoal cannot
    // change what is measured.
    let config = tmp.0.join("config.toml");
    std::fs::write(&config, "").with_context(|| format!("cannot write {}", config.display()))?;
    let log = tmp.0.join("daemon.log");
    let port = procs::free_port()?;
    let cmd = Cmd::new(shoal)
        .arg("--data-dir")
        .arg(tmp.0.join("d"))
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--api")
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--fast-listen",
            "127.0.0.1:0",
            "--mdns",
            "off",
            "--upnp",
            "off",
        ]);
    // Declared after `tmp`, so it is stopped before the folder is deleted.
    let daemon = Daemon::spawn("shoal daemon", &cmd, &log)?;
    let res = measure_daemon(&daemon, &log, connections, floods);
    let stopped = daemon.stop();
    match res {
        Ok(r) => {
            stopped?;
            Ok(r)
        }
        Err(e) => Err(e.context(format!("daemon log:\n{}", log_tail(&log, 20)))),
    }
}

fn measure_daemon(
    daemon: &Daemon,
    log: &Path,
    connections: usize,
    floods: u32,
) -> Result<RunResult> {
    let pid = daemon.pid();
    let addr = wait_api_line(log, READY_TIMEOUT)?;
    if !addr.ip().is_loopback() {
        bail!("the daemon's API listens on {addr}, not on loopback");
    }
    wait_answering(addr, READY_TIMEOUT)?;

    std::thread::sleep(IDLE_BEFORE);
    let rss_before_kib = read_rss(pid)?;
    let fds_before = measure::proc_fd_count(pid).unwrap_or(0);
    eprintln!(
        "  daemon pid {pid}, API on {addr}: RSS {:.1} MiB, {fds_before} fds",
        mib(rss_before_kib)
    );
    let mut results = Vec::new();
    for n in 1..=floods {
        let f = flood_once(pid, addr, connections)
            .with_context(|| format!("flood {n} of {floods} failed"))?;
        results.push(f);
    }
    if floods > 1 {
        eprintln!(
            "  RSS after each flood: {}",
            after_series(rss_before_kib, &results)
        );
    }
    Ok(RunResult {
        rss_before_kib,
        fds_before,
        floods: results,
    })
}

/// One flood on a daemon that is up: open it, time `GET /` while it is held,
/// close it, wait [`SETTLE_AFTER`], read the RSS and time `GET /` again.
fn flood_once(pid: u32, addr: SocketAddr, connections: usize) -> Result<FloodResult> {
    let hwm_reset = measure::reset_hwm(pid);
    eprintln!("  opening {connections} connections");
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let (flood, failed) = open_flood(addr, connections);
    let open_time = started.elapsed();
    eprintln!(
        "  {} connected, {} failed in {:.1} s; timing GET / while they are held",
        flood.len(),
        failed.values().sum::<usize>(),
        open_time.as_secs_f64()
    );
    let held_from = Instant::now();
    let during = probe(addr, PROBE_TIMEOUT);
    eprintln!("  GET / during the flood: {}", during.text());
    // Keep the flood open for at least a few samples even if the probe was quick.
    let min_hold = 20 * SAMPLE_EVERY;
    if let Some(rest) = min_hold.checked_sub(held_from.elapsed()) {
        std::thread::sleep(rest);
    }
    let ended_by_daemon = flood.iter().filter(|s| ended_by_peer(s)).count();
    let held = held_from.elapsed();
    let opened = flood.len();
    drop(flood);

    std::thread::sleep(SETTLE_AFTER);
    let rss_after_kib = read_rss(pid)?;
    let fds_after = measure::proc_fd_count(pid).unwrap_or(0);
    let (sampled_peak, fds_peak) = sampler.finish();
    let hwm_kib = measure::proc_hwm_kib(pid).filter(|_| hwm_reset);
    let after = probe(addr, PROBE_TIMEOUT);
    eprintln!(
        "  after closing and {} s: RSS {:.1} MiB, {fds_after} fds; GET / {}",
        SETTLE_AFTER.as_secs(),
        mib(rss_after_kib),
        after.text()
    );
    Ok(FloodResult {
        rss_peak_kib: sampled_peak.max(rss_after_kib),
        hwm_kib,
        rss_after_kib,
        fds_peak: fds_peak.max(fds_after),
        fds_after,
        opened,
        failed,
        open_time,
        ended_by_daemon,
        held,
        during,
        after,
    })
}

/// `19.4 MiB idle -> 25.9, 26.3 MiB after floods 1-2`: the idle RSS and the RSS
/// after each flood, in order.
fn after_series(rss_before_kib: u64, floods: &[FloodResult]) -> String {
    let afters = floods
        .iter()
        .map(|f| format!("{:.1}", mib(f.rss_after_kib)))
        .collect::<Vec<_>>()
        .join(", ");
    let which = match floods.len() {
        1 => "flood 1".to_string(),
        n => format!("floods 1-{n}"),
    };
    format!(
        "{:.1} MiB idle -> {afters} MiB after {which}",
        mib(rss_before_kib)
    )
}

fn read_rss(pid: u32) -> Result<u64> {
    measure::proc_rss_kib(pid)
        .ok_or_else(|| anyhow!("cannot read VmRSS of the daemon (pid {pid}); did it exit?"))
}

/// Waits for `api listening on http://ADDR` in the daemon's stderr log.
fn wait_api_line(log: &Path, timeout: Duration) -> Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(parse_api_line) {
            return Ok(addr);
        }
        if Instant::now() >= deadline {
            bail!(
                "the daemon printed no `api listening on` line within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parse_api_line(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("api listening on http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Waits until `GET /` gets a status line.
fn wait_answering(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match probe(addr, left.min(Duration::from_secs(2))) {
            Probe::Answered { .. } => return Ok(()),
            Probe::NoAnswer(why) => {
                if Instant::now() >= deadline {
                    bail!(
                        "the API on {addr} did not answer GET / within {} s: {why}",
                        timeout.as_secs()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One complete `GET /` on a fresh connection, timed to its status line.
fn probe(addr: SocketAddr, timeout: Duration) -> Probe {
    let start = Instant::now();
    match get_status(addr, start + timeout) {
        Ok((status, connected_at)) => Probe::Answered {
            latency: start.elapsed(),
            connect: connected_at.duration_since(start),
            status,
        },
        Err(e) => Probe::NoAnswer(format!("{e:#}")),
    }
}

/// The status code of the answer, and when the connection was established.
fn get_status(addr: SocketAddr, deadline: Instant) -> Result<(u16, Instant)> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("timed out"))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()?).context("connect")?;
    let connected_at = Instant::now();
    s.set_write_timeout(Some(left()?))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .context("sending the request")?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok((parse_status_line(&buf[..end])?, connected_at));
        }
        if buf.len() > 4096 {
            bail!("no status line in the first 4 KiB of the answer");
        }
        s.set_read_timeout(Some(left()?))?;
        match s.read(&mut chunk) {
            Ok(0) => bail!("the connection closed before a status line"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("timed out waiting for the answer")
            }
            Err(e) => return Err(e).context("reading the answer"),
        }
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(line);
    let mut f = text.split_whitespace();
    match (f.next(), f.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => bail!("not an HTTP status line: {text:?}"),
    }
}

/// Opens up to `n` connections that each send [`HALF_REQUEST`], from
/// [`FLOOD_THREADS`] threads; returns the open ones and the failures by error.
fn open_flood(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, BTreeMap<String, usize>) {
    let next = AtomicUsize::new(0);
    let mut open = Vec::with_capacity(n);
    let mut failed = BTreeMap::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n.clamp(1, FLOOD_THREADS))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn_scoped(scope, || {
                        let mut open = Vec::new();
                        let mut failed = BTreeMap::<String, usize>::new();
                        while next.fetch_add(1, Ordering::Relaxed) < n {
                            match half_request(addr) {
                                Ok(s) => open.push(s),
                                Err(e) => *failed.entry(e).or_default() += 1,
                            }
                        }
                        (open, failed)
                    })
                    .ok()
            })
            .collect();
        for w in workers {
            if let Ok((o, f)) = w.join() {
                open.extend(o);
                for (k, v) in f {
                    *failed.entry(k).or_default() += v;
                }
            }
        }
    });
    (open, failed)
}

fn half_request(addr: SocketAddr) -> std::result::Result<TcpStream, String> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| io_kind(&e))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| io_kind(&e))?;
    s.write_all(HALF_REQUEST).map_err(|e| io_kind(&e))?;
    Ok(s)
}

/// A short, stable label of an I/O error (to count failures by kind).
fn io_kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{} (os error {code})", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Whether the daemon has closed (or answered) a flood connection: a
/// non-blocking read that does not say "would block".
fn ended_by_peer(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let mut r: &TcpStream = s;
    !matches!(r.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Samples the daemon's RSS and open descriptors every [`SAMPLE_EVERY`] until
/// stopped (or dropped), keeping the maxima.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u64, usize)>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut fds) = (0u64, 0usize);
            while !flag.load(Ordering::Relaxed) {
                rss = rss.max(measure::proc_rss_kib(pid).unwrap_or(0));
                fds = fds.max(measure::proc_fd_count(pid).unwrap_or(0));
                std::thread::sleep(SAMPLE_EVERY);
            }
            (rss, fds)
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Milliseconds under a second, seconds above.
fn duration_text(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// One run as JSON. `rss_mib` and `daemon_fds` sum the run up (`before`: idle
/// before the first flood; `peak`, `hwm`: the highest of its floods; `after`:
/// after its last flood); `flood` and `get_root` are its last flood's (with one
/// flood, all of it is the shape from before `--floods`); `floods` has every
/// flood's figures in order.
fn run_json(run: usize, r: &RunResult) -> Value {
    let last = r.last();
    json!({
        "run": run,
        "rss_mib": {
            "before": round3(mib(r.rss_before_kib)),
            "peak": round3(mib(r.rss_peak_kib())),
            "hwm": r.hwm_kib().map(|k| round3(mib(k))),
            "after": round3(mib(last.rss_after_kib)),
        },
        "daemon_fds": {"before": r.fds_before, "peak": r.fds_peak(), "after": last.fds_after},
        "flood": flood_stats_json(last),
        "get_root": {"during": last.during.to_json(), "after": last.after.to_json()},
        "floods": r.floods.iter().enumerate().map(|(i, f)| flood_json(i + 1, f)).collect::<Vec<_>>(),
    })
}

fn flood_stats_json(f: &FloodResult) -> Value {
    json!({
        "opened": f.opened,
        "failed": f.failed_total(),
        "failures": f.failed,
        "open_s": round3(f.open_time.as_secs_f64()),
        "held_s": round3(f.held.as_secs_f64()),
        "ended_by_daemon_while_held": f.ended_by_daemon,
    })
}

fn flood_json(n: usize, f: &FloodResult) -> Value {
    json!({
        "n": n,
        "rss_mib": {
            "peak": round3(mib(f.rss_peak_kib)),
            "hwm": f.hwm_kib.map(|k| round3(mib(k))),
            "after": round3(mib(f.rss_after_kib)),
        },
        "daemon_fds": {"peak": f.fds_peak, "after": f.fds_after},
        "flood": flood_stats_json(f),
        "get_root": {"during": f.during.to_json(), "after": f.after.to_json()},
    })
}

fn table(
    results: &[RunResult],
    asked: usize,
    floods: u32,
    load_before: &str,
    load_after: &str,
) -> String {
    let mut out = format!(
        "local API flood: {asked} connections, each a half request, connect timeout {} ms, \
         {floods} flood{} per daemon (load average {load_before} -> {load_after})\n\n",
        CONNECT_TIMEOUT.as_millis(),
        if floods == 1 { "" } else { "s" }
    );
    out.push_str(&format!(
        "{:>3}  {:>5}  {:>9}  {:>10}  {:>8}  {:>8}  {:>9}  {:>14}  {:>14}\n",
        "run",
        "flood",
        "connected",
        "RSS before",
        "peak",
        "after",
        "fds peak",
        "GET / during",
        "GET / after"
    ));
    for (i, r) in results.iter().enumerate() {
        for (k, f) in r.floods.iter().enumerate() {
            // The idle RSS belongs to the run; later floods start from the
            // previous one's "after".
            let before = if k == 0 {
                format!("{:>6.1} MiB", mib(r.rss_before_kib))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:>3}  {:>5}  {:>9}  {:>10}  {:>4.1} MiB  {:>4.1} MiB  {:>9}  {:>14}  {:>14}\n",
                i + 1,
                k + 1,
                f.opened,
                before,
                mib(f.rss_peak_kib),
                mib(f.rss_after_kib),
                f.fds_peak,
                f.during.text(),
                f.after.text()
            ));
        }
    }
    out.push('\n');
    for (i, r) in results.iter().enumerate() {
        if r.floods.len() > 1 {
            out.push_str(&format!(
                "run {}: RSS {}\n",
                i + 1,
                after_series(r.rss_before_kib, &r.floods)
            ));
        }
        let mut fds_from = r.fds_before;
        for (k, f) in r.floods.iter().enumerate() {
            let label = flood_label(i + 1, k + 1, r.floods.len());
            let failures = f
                .failed
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "{label}: opened in {:.1} s, held {:.1} s; {} ended by the daemon while held; \
                 failed: {}; daemon fds {} -> {} -> {}{}\n",
                f.open_time.as_secs_f64(),
                f.held.as_secs_f64(),
                f.ended_by_daemon,
                if failures.is_empty() {
                    "none".into()
                } else {
                    failures
                },
                fds_from,
                f.fds_peak,
                f.fds_after,
                f.hwm_kib
                    .map_or(String::new(), |k| format!("; VmHWM {:.1} MiB", mib(k)))
            ));
            fds_from = f.fds_after;
            for (when, p) in [("during", &f.during), ("after", &f.after)] {
                match p {
                    Probe::NoAnswer(why) => {
                        out.push_str(&format!("{label}: GET / {when}: {why}\n"));
                    }
                    Probe::Answered {
                        latency,
                        connect,
                        status,
                    } => out.push_str(&format!(
                        "{label}: GET / {when}: status {status} after {} (connected after {})\n",
                        duration_text(*latency),
                        duration_text(*connect)
                    )),
                }
            }
        }
    }
    out
}

/// `run 2` when a run has one flood (as before `--floods`), `run 2 flood 3`
/// otherwise.
fn flood_label(run: usize, flood: usize, floods: usize) -> String {
    if floods == 1 {
        format!("run {run}")
    } else {
        format!("run {run} flood {flood}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_line_gives_the_address() {
        assert_eq!(
            parse_api_line("api listening on http://127.0.0.1:7777"),
            Some("127.0.0.1:7777".parse().unwrap())
        );
        assert_eq!(parse_api_line("web UI: run `shoal ui --open`"), None);
    }

    #[test]
    fn status_line_gives_the_code() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line(b"HTTP/1.1 503").unwrap(), 503);
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"").is_err());
    }

    #[test]
    fn probe_reads_a_status_line_and_reports_silence_as_no_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            // First client: an answer. Second: read, then silence until it gives up.
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 512];
            let _ = s.read(&mut b);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut b);
            std::thread::sleep(Duration::from_millis(500));
        });
        assert!(matches!(
            probe(addr, Duration::from_secs(5)),
            Probe::Answered { status: 200, .. }
        ));
        let p = probe(addr, Duration::from_millis(200));
        assert!(matches!(p, Probe::NoAnswer(_)), "{p:?}");
        assert_eq!(p.text(), "no answer");
        server.join().unwrap();
    }

    fn flood(peak_kib: u64, hwm_kib: Option<u64>, after_kib: u64) -> FloodResult {
        FloodResult {
            rss_peak_kib: peak_kib,
            hwm_kib,
            rss_after_kib: after_kib,
            fds_peak: 532,
            fds_after: 20,
            opened: 641,
            failed: BTreeMap::from([("timed out (os error 110)".to_string(), 4359)]),
            open_time: Duration::from_millis(1500),
            ended_by_daemon: 512,
            held: Duration::from_secs(11),
            during: Probe::Answered {
                latency: Duration::from_millis(11_300),
                connect: Duration::from_millis(11_299),
                status: 200,
            },
            after: Probe::NoAnswer("timed out".into()),
        }
    }

    #[test]
    fn a_run_sums_up_its_floods() {
        let r = RunResult {
            rss_before_kib: 19 * 1024,
            fds_before: 20,
            floods: vec![
                flood(28 * 1024, Some(29 * 1024), 26 * 1024),
                flood(30 * 1024, Some(31 * 1024), 27 * 1024),
                flood(29 * 1024, Some(30 * 1024), 27 * 1024 + 512),
            ],
        };
        assert_eq!(r.rss_peak_kib(), 30 * 1024);
        assert_eq!(r.hwm_kib(), Some(31 * 1024));
        assert_eq!(r.last().rss_after_kib, 27 * 1024 + 512);
        assert_eq!(
            after_series(r.rss_before_kib, &r.floods),
            "19.0 MiB idle -> 26.0, 27.0, 27.5 MiB after floods 1-3"
        );
        let v = run_json(1, &r);
        assert_eq!(v["rss_mib"]["before"], 19.0);
        assert_eq!(v["rss_mib"]["peak"], 30.0);
        assert_eq!(v["rss_mib"]["after"], 27.5);
        assert_eq!(v["floods"].as_array().unwrap().len(), 3);
        assert_eq!(v["floods"][1]["n"], 2);
        assert_eq!(v["floods"][1]["rss_mib"]["after"], 27.0);
        assert_eq!(v["floods"][0]["flood"]["failed"], 4359);
        assert_eq!(v["flood"]["opened"], 641);
        assert_eq!(v["get_root"]["during"]["status"], 200);

        // A flood without VmHWM leaves the run without one.
        let mut r2 = r.clone();
        r2.floods[1].hwm_kib = None;
        assert_eq!(r2.hwm_kib(), None);

        let t = table(&[r], 5000, 3, "0.1", "0.2");
        assert!(t.contains("run 1 flood 3: GET / after: timed out"), "{t}");
        assert!(
            t.contains("run 1: RSS 19.0 MiB idle -> 26.0, 27.0, 27.5 MiB"),
            "{t}"
        );
    }

    #[test]
    fn one_flood_keeps_the_labels_of_a_single_flood_run() {
        assert_eq!(flood_label(2, 1, 1), "run 2");
        assert_eq!(flood_label(2, 3, 8), "run 2 flood 3");
        let r = RunResult {
            rss_before_kib: 19 * 1024,
            fds_before: 20,
            floods: vec![flood(28 * 1024, None, 26 * 1024)],
        };
        let t = table(&[r], 5000, 1, "0.1", "0.2");
        assert!(t.contains("run 1: GET / during: status 200"), "{t}");
        assert!(!t.contains("flood 1:"), "{t}");
        assert!(!t.contains("idle ->"), "{t}");
    }

    #[test]
    fn a_closed_flood_connection_is_seen_as_ended() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(!ended_by_peer(&c));
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ended_by_peer(&c) {
            assert!(Instant::now() < deadline, "the close was never seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
