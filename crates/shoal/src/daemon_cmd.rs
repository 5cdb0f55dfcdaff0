//! `shoal daemon`: runs the peer behind the local HTTP API and web UI until
//! Ctrl-C or SIGTERM (see docs/api.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use shoal_daemon::{Daemon, DaemonConfig, FileConfig, Settings, SettingsPatch};
use shoal_node::host::HostConfig;
use shoal_node::NodeConfig;

use crate::cli::{parse_size, Global};

/// The API address when neither a flag, `SHOAL_API` nor the configuration file names one.
const DEFAULT_API: &str = "127.0.0.1:7777";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where the HTTP API and web UI listen, `IP:PORT` (port 0: any free port)
    /// [default: the configuration file's api.listen, else 127.0.0.1:7777]
    #[arg(long, value_name = "ADDR", env = "SHOAL_API")]
    pub api: Option<SocketAddr>,
    /// Configuration file (TOML) [default: the platform's config folder,
    /// on Linux ~/.config/shoal/config.toml; a missing default file is fine]
    #[arg(long, value_name = "FILE", env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Limit uploads to RATE bytes per second over all peers (e.g. `10MiB`;
    /// `0`: no limit); wins over the settings saved through the API
    #[arg(long = "upload-limit", value_name = "RATE", env = "SHOAL_UPLOAD_LIMIT", value_parser = parse_size)]
    pub upload_limit: Option<u64>,
    /// Limit downloads to RATE bytes per second over all transfers (e.g.
    /// `50MiB`; `0`: no limit); wins over the settings saved through the API
    #[arg(long = "download-limit", value_name = "RATE", env = "SHOAL_DOWNLOAD_LIMIT", value_parser = parse_size)]
    pub download_limit: Option<u64>,
    /// Completed downloads stop seeding once they have sent R times their
    /// size; wins over the settings saved through the API
    #[arg(long = "seed-ratio", value_name = "R", env = "SHOAL_SEED_RATIO", value_parser = crate::cli::parse_ratio)]
    pub seed_ratio: Option<f64>,
    /// Completed downloads stop seeding after seeding this long (e.g. `3d`,
    /// counted over restarts); wins over the settings saved through the API
    #[arg(long = "seed-time", value_name = "DURATION", env = "SHOAL_SEED_TIME", value_parser = shoal_core::parse_duration)]
    pub seed_time: Option<std::time::Duration>,
    /// The folder the web UI's folder browser shows and may not leave
    /// [default: your home folder]
    #[arg(long = "browse-root", value_name = "DIR", env = "SHOAL_BROWSE_ROOT")]
    pub browse_root: Option<PathBuf>,
    #[command(flatten)]
    pub net: crate::net_args::NetArgs,
}

fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "shoal").map(|d| d.config_dir().join("config.toml"))
}

/// Whether `--max-connections` or `SHOAL_MAX_CONNECTIONS` was given (the flag
/// has a default, so its value alone cannot tell).
fn max_connections_given() -> bool {
    std::env::var_os("SHOAL_MAX_CONNECTIONS").is_some()
        || std::env::args().any(|a| a == "--max-connections" || a.starts_with("--max-connections="))
}

pub fn run(global: &Global, args: DaemonArgs) -> Result<()> {
    let data_dir = crate::commands::data_dir(global)?;
    let file = match &args.config {
        Some(p) => FileConfig::load(p, true)?,
        None => match default_config_path() {
            Some(p) => FileConfig::load(&p, false)?,
            None => FileConfig::default(),
        },
    };
    let settings = file
        .limits
        .apply(Settings::default())
        .map_err(|(_, m)| anyhow::anyhow!(m))?;
    let pinned = SettingsPatch {
        upload_limit: args.upload_limit.map(|r| Some(r).filter(|r| *r > 0)),
        download_limit: args.download_limit.map(|r| Some(r).filter(|r| *r > 0)),
        max_connections: max_connections_given().then_some(args.net.max_connections),
        max_peers_per_transfer: None,
        seed_ratio_limit: args.seed_ratio.map(Some),
        seed_time_limit: args.seed_time.map(|d| Some(d.as_secs().max(1))),
    };
    let api = match (args.api, file.api_listen) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => DEFAULT_API.parse().context("the default API address")?,
    };
    let net = args.net.into_config().context("invalid network options")?;
    let cfg = DaemonConfig {
        data_dir: data_dir.clone(),
        api,
        peer: HostConfig {
            net,
            node: NodeConfig::default(),
            ..HostConfig::default()
        },
        settings,
        pinned,
        api_max_connections: shoal_daemon::listener::MAX_API_CONNECTIONS,
        api_idle: shoal_daemon::listener::API_IDLE,
        api_header: shoal_daemon::listener::API_HEADER,
        browse_root: match args.browse_root {
            Some(d) if !d.is_absolute() => anyhow::bail!(
                "--browse-root {} is not absolute; give a folder starting with /",
                d.display()
            ),
            Some(d) if !d.is_dir() => anyhow::bail!(
                "--browse-root {} is not a folder; give an existing folder",
                d.display()
            ),
            d => d,
        },
    };
    // The command that reaches this daemon: with its data dir, unless that is
    // the default one (a client finds the daemon through its data dir).
    let ui = match &global.data_dir {
        Some(d) => format!(
            "shoal --data-dir {} ui --open",
            shell_word(&d.to_string_lossy())
        ),
        None => "shoal ui --open".to_owned(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let daemon = Daemon::start(cfg).await?;
        let addr = daemon.api_addr();
        eprintln!("api listening on http://{addr}");
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: the API listens on {} (not loopback): anyone who can reach it and has the token controls this daemon",
                addr.ip()
            );
        }
        eprintln!("data dir {}", data_dir.display());
        eprintln!(
            "web UI: run `{ui}` (it opens http://{addr}/ with the token from {})",
            data_dir.join(shoal_daemon::discovery::TOKEN_FILE).display()
        );
        eprintln!(
            "peer {}; press Ctrl-C to stop",
            daemon.state().peer().peer_id()
        );
        crate::p2p::shutdown_signal().await;
        eprintln!("stopping");
        daemon.shutdown().await;
        Ok(())
    })
}

/// `s` as one word for a POSIX shell: as it is when it holds only characters
/// no shell treats specially, else in single quotes.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_survive_a_shell() {
        assert_eq!(
            shell_word("/home/a/.local/share/shoal"),
            "/home/a/.local/share/shoal"
        );
        assert_eq!(shell_word("/tmp/my data"), "'/tmp/my data'");
        assert_eq!(shell_word("/tmp/it's"), "'/tmp/it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
