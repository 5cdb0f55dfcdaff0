//! shoal's benchmarks: programs that print figures, each compared in the same run
//! against a yardstick (these machines are shared and noisy, so only ratios
//! measured side by side mean anything). Figures go to `docs/benchmarks.md`.
//!
//! `shoal-bench hash [--size 4G] [--file PATH] [--runs 3]`: indexes a file with
//! shoal's multi-threaded streaming hasher and runs `b3sum` (multi-threaded,
//! mmap) on the same file, alternating, and prints the best time of each, the
//! ratio, and shoal's peak RSS.
//!
//! `shoal-bench transfer [--size 1G] [--runs 3] [--rqbit PATH] [--json]`: one
//! file from one seeder to one downloader on loopback over shoal's fast path and
//! over libp2p QUIC, with `cp`, scp, rqbit and socat in the same rounds; wall
//! time, CPU seconds and peak RSS of every process (see `transfer.rs`).
//!
//! `shoal-bench api-flood [--connections 5000] [--floods 1] [--runs 1] [--shoal PATH] [--json]`:
//! a `shoal daemon` on loopback whose local HTTP API gets that many connections
//! each sending half a request, `--floods` times in a row; its RSS before, at
//! the peak and 5 s after each flood closes, and the latency of `GET /` during
//! and after (see `api_flood.rs`).

mod api_flood;
mod measure;
mod procs;
mod transfer;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "shoal-bench", about = "shoal benchmarks (they print figures)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// shoal's indexing speed against b3sum on the same file.
    Hash {
        /// File size, e.g. 4G, 512M (binary units).
        #[arg(long, default_value = "4G")]
        size: String,
        /// Where to create the test file (re-used if it already has the size).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Runs of each; the best time counts.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Fail unless shoal reaches at least this fraction of b3sum's speed.
        #[arg(long)]
        min_ratio: Option<f64>,
        /// Fail unless shoal's peak RSS stays under this many MiB.
        #[arg(long)]
        max_rss_mib: Option<u64>,
    },
    /// One file from one sender to one receiver on loopback: shoal's fast path,
    /// shoal over libp2p QUIC, cp, scp, rqbit and socat, interleaved.
    Transfer {
        /// File size, e.g. 1G, 256M (binary units).
        #[arg(long, default_value = "1G")]
        size: String,
        /// Where to create the test file (re-used if it already has the size).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Work folder for data dirs and outputs (default: a fresh one in the
        /// temp dir; deleted at the end).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rounds; each runs every method once, and the best time counts.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Methods to run, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = transfer::Method::ALL)]
        methods: Vec<transfer::Method>,
        /// The shoal binary [default: `shoal` next to this executable].
        #[arg(long)]
        shoal: Option<PathBuf>,
        /// The rqbit binary [default: `rqbit` in PATH; the row says "not installed" if absent].
        #[arg(long)]
        rqbit: Option<PathBuf>,
        /// Seconds before one transfer is given up (its processes are killed).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Before every transfer, drop the machine's clean page cache (needs
        /// root) and read the source back in, so each method writes into free
        /// memory instead of first reclaiming what earlier runs left cached.
        #[arg(long)]
        drop_caches: bool,
    },
    /// The daemon's local HTTP API under a flood of half-sent requests: RSS
    /// before, at the peak and after, and the latency of `GET /`.
    ApiFlood {
        /// Connections to open, each sending a request line and one header
        /// and then nothing.
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Floods per run, one after the other on the same daemon (each
        /// opened, held, closed and followed by 5 s of settling), to see
        /// whether its memory keeps growing.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        floods: u32,
        /// Runs, each with a fresh daemon and data dir.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// The shoal binary [default: `shoal` next to this executable].
        #[arg(long)]
        shoal: Option<PathBuf>,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Internal: runs a command and writes its wall time, CPU seconds and peak
    /// RSS to a file (getrusage of its only child).
    #[command(hide = true)]
    Measure {
        #[arg(long)]
        report: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<OsString>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::Hash {
            size,
            file,
            runs,
            min_ratio,
            max_rss_mib,
        } => bench_hash(&size, file, runs, min_ratio, max_rss_mib),
        Bench::Transfer {
            size,
            file,
            dir,
            runs,
            methods,
            shoal,
            rqbit,
            timeout,
            json,
            drop_caches,
        } => transfer::run(transfer::Options {
            size: parse_size(&size)?,
            file,
            dir,
            runs,
            methods,
            shoal,
            rqbit,
            timeout: Duration::from_secs(timeout),
            json,
            drop_caches,
        }),
        Bench::ApiFlood {
            connections,
            floods,
            runs,
            shoal,
            json,
        } => api_flood::run(api_flood::Options {
            connections,
            floods,
            shoal,
            json,
            runs,
        }),
        Bench::Measure { report, cmd } => {
            let code = measure::measure_main(&report, &cmd)?;
            std::process::exit(code);
        }
    }
}

fn parse_size(s: &str) -> Result<u64> {
    shoal_core::parse_size(s).map_err(anyhow::Error::msg)
}

/// Writes `size` bytes of pseudo-random data (xorshift, 4 MiB at a time).
fn make_file(path: &Path, size: u64) -> Result<()> {
    if std::fs::metadata(path)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    eprintln!("creating {} ({size} bytes)", path.display());
    let mut out = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) of this process and of its waited-for children,
/// from `/proc/self/stat` (clock ticks of 10 ms): less sensitive than wall time to
/// other load on a shared machine.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    (get(11) + get(12), get(13) + get(14))
}

fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn bench_hash(
    size: &str,
    file: Option<PathBuf>,
    runs: u32,
    min_ratio: Option<f64>,
    max_rss_mib: Option<u64>,
) -> Result<()> {
    let size = parse_size(size)?;
    let path = file.unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-bench-{size}.bin")));
    make_file(&path, size)?;

    let b3sum = |path: &Path| -> Result<(String, Duration)> {
        let start = Instant::now();
        let out = Command::new("b3sum")
            .arg("--no-names")
            .arg(path)
            .output()
            .context("cannot run b3sum; install it (apt-get install b3sum)")?;
        let t = start.elapsed();
        if !out.status.success() {
            bail!("b3sum failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok((String::from_utf8_lossy(&out.stdout).trim().to_owned(), t))
    };

    // Warm the page cache so both read from memory.
    let (expected, _) = b3sum(&path)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "file: {} ({:.2} GiB), cores: {threads}",
        path.display(),
        size as f64 / (1u64 << 30) as f64
    );

    let mut best_shoal = Duration::MAX;
    let mut best_b3sum = Duration::MAX;
    let (mut cpu_shoal, mut cpu_b3sum) = (f64::MAX, f64::MAX);
    for run in 1..=runs.max(1) {
        let (self0, _) = cpu_seconds();
        let start = Instant::now();
        let outboard = shoal_store::hash::hash_file(&path, &|_| {})
            .with_context(|| format!("shoal could not hash {}", path.display()))?;
        let t_shoal = start.elapsed();
        let got = outboard.root().to_string();
        if got != expected {
            bail!("shoal's id {got} differs from b3sum's {expected}");
        }
        let (self1, children0) = cpu_seconds();
        let (_, t_b3sum) = b3sum(&path)?;
        let (_, children1) = cpu_seconds();
        let (c_shoal, c_b3sum) = (self1 - self0, children1 - children0);
        cpu_shoal = cpu_shoal.min(c_shoal);
        cpu_b3sum = cpu_b3sum.min(c_b3sum);
        println!(
            "run {run}: shoal {:.3} s ({:.2} GB/s, {c_shoal:.2} CPU s), b3sum {:.3} s ({:.2} GB/s, {c_b3sum:.2} CPU s)",
            t_shoal.as_secs_f64(),
            gbps(size, t_shoal),
            t_b3sum.as_secs_f64(),
            gbps(size, t_b3sum)
        );
        best_shoal = best_shoal.min(t_shoal);
        best_b3sum = best_b3sum.min(t_b3sum);
    }
    let ratio = best_b3sum.as_secs_f64() / best_shoal.as_secs_f64();
    let rss_mib = peak_rss_kib().unwrap_or(0) / 1024;
    println!(
        "best: shoal {:.3} s, b3sum {:.3} s; shoal speed / b3sum speed = {ratio:.2}; \
         CPU s: shoal {cpu_shoal:.2}, b3sum {cpu_b3sum:.2}; shoal peak RSS {rss_mib} MiB",
        best_shoal.as_secs_f64(),
        best_b3sum.as_secs_f64()
    );
    if let Some(min) = min_ratio {
        if ratio < min {
            bail!("shoal reached {ratio:.2}x of b3sum's speed, below the goal of {min}");
        }
    }
    if let Some(max) = max_rss_mib {
        if rss_mib >= max {
            bail!("shoal's peak RSS was {rss_mib} MiB, not under {max} MiB");
        }
    }
    Ok(())
}
