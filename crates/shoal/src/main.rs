//! `shoal`: the command-line interface.
//!
//! A thin binary over the library crates: it parses arguments, calls into
//! `shoal-store` / `shoal-core`, and renders results for people (tables,
//! progress bars on stderr) or programs (`--json`). Every error is printed as one
//! line on stderr with a non-zero exit code.

mod access_cmd;
mod cli;
mod client;
mod commands;
mod daemon_cmd;
mod net_args;
mod output;
mod p2p;
mod remote;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let matches = cli::Cli::command().get_matches();
    cli::record_given(&matches);
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<commands::AlreadyReported>() => ExitCode::FAILURE,
        Err(err) if err.is::<remote::Detached>() => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc gives every thread that allocates under contention an
/// arena of its own (up to 8 per core) and keeps what is freed in each: the
/// blocking threads that read and hash pieces left a folder seeder at 60 MiB
/// where two arenas hold it near 30 (docs/benchmarks.md, issue 14). So two
/// arenas, unless `MALLOC_ARENA_MAX` says otherwise. Called first, before
/// any other thread exists. The workspace's one `unsafe` block: a plain
/// libc call with no pointer, on the binary only.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a tuning value of the allocator; no
        // other thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The error and its causes on one line: what failed, on what, and (from the
/// innermost error) what to do. Library errors often already include their
/// source's text, so a cause whose text is already shown is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace(['\n', '\r'], " ")
}

/// Warnings from shoal's own crates go to stderr, each line stamped with the
/// UTC time to the microsecond (so that logs of several peers can be laid
/// side by side), for example a shared file that changed and can no longer be
/// served; `SHOAL_LOG=debug` shows more,
/// `SHOAL_LOG=off` nothing. Other crates log only errors, unless `SHOAL_LOG`
/// holds per-target directives (`shoal_net=debug,libp2p_dcutr=debug`).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let var = std::env::var("SHOAL_LOG").unwrap_or_default();
    // `SHOAL_LOG=shoal_net=debug,libp2p_dcutr=trace`: per-target levels, for
    // looking into the libraries too.
    if var.contains('=') {
        if let Ok(filter) = var.parse::<Targets>() {
            let _ = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_timer(tracing_subscriber::fmt::time::SystemTime),
                )
                .with(filter)
                .try_init();
            return;
        }
    }
    let level = match var.as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    let filter = Targets::new()
        .with_default(LevelFilter::ERROR.min(level))
        .with_target("shoal", level)
        .with_target("shoal_node", level)
        .with_target("shoal_net", level)
        .with_target("shoal_store", level);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_timer(tracing_subscriber::fmt::time::SystemTime),
        )
        .with(filter)
        .try_init();
}
