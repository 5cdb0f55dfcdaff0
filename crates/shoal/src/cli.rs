//! Command-line arguments. Every flag that configures the node can also be set
//! from an environment variable (`SHOAL_*`), as the clap `env` attribute shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Peer-to-peer file sharing: share files in place, fetch them verified with BLAKE3",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where shoal keeps its state (database, outboards, identity).
    /// Defaults to the platform's data directory (on Linux `~/.local/share/shoal`).
    #[arg(long, global = true, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Work without the shoal daemon even when one runs for the data dir
    /// (`share`, `get`, `shares` and `rm` then run in the foreground as they do
    /// when no daemon runs).
    /// `SHOAL_NO_DAEMON` takes 1/0, true/false, yes/no, on/off.
    #[arg(long, global = true, env = "SHOAL_NO_DAEMON", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_daemon: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the BLAKE3 content id of files, exactly as `b3sum` does; for a folder,
    /// every file inside and then the folder's collection id as `<id>  <folder>/`.
    Hash {
        /// Files or folders to hash.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Index a file or folder for sharing, in place (nothing is copied), and print its id.
    Add {
        /// The file or folder to index.
        path: PathBuf,
        /// A name to show instead of the file or folder name.
        #[arg(long)]
        name: Option<String>,
        /// Print the share as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List indexed shares.
    Shares {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a share from the index. The files themselves are never touched.
    Rm {
        /// The share's content id (or a unique prefix of at least 8 hex digits).
        id: String,
    },
    /// List the transfers of the running shoal daemon.
    Transfers {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the peers the running shoal daemon is connected to.
    Peers {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pause a transfer of the running daemon (its progress stays on disk).
    Pause(TransferIdArgs),
    /// Resume a paused transfer of the running daemon.
    Resume(TransferIdArgs),
    /// Stop and forget a transfer of the running daemon; a partial download's
    /// data is deleted, a completed file is kept.
    Cancel(TransferIdArgs),
    /// Show the running daemon: peer id, addresses, reachability, uptime.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the address of the running daemon's web UI, with its access token.
    Ui {
        /// Also open it in the browser (with `xdg-open`).
        #[arg(long)]
        open: bool,
    },
    /// Work with tickets.
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// Share files or folders (indexing what is not yet indexed) and serve them
    /// until Ctrl-C. The first line on stdout is the ticket.
    Share(ShareArgs),
    /// Download content by ticket or id from every provider found, verified.
    Get(GetArgs),
    /// Run one seeder and N downloaders on this machine (loopback) and report
    /// how the swarm did.
    Demo(DemoArgs),
    /// Run in the background: the peer behind a local HTTP API and web UI,
    /// until Ctrl-C or SIGTERM.
    Daemon(crate::daemon_cmd::DaemonArgs),
}

/// The transfer a `pause`, `resume` or `cancel` acts on.
#[derive(Debug, Args)]
pub struct TransferIdArgs {
    /// The transfer's content id, or a unique prefix of at least 8 hex digits.
    pub id: String,
    /// Print the resulting transfer as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of every command that starts a node.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    #[command(flatten)]
    pub net: shoal_net::NetArgs,

    /// Limit uploads to RATE bytes per second over all peers (e.g. `10MiB`; `0`: no limit)
    #[arg(long = "upload-limit", value_name = "RATE", env = "SHOAL_UPLOAD_LIMIT", value_parser = parse_size)]
    pub upload_limit: Option<u64>,

    /// Limit downloads to RATE bytes per second over all peers (e.g. `10MiB`; `0`: no limit)
    #[arg(long = "download-limit", value_name = "RATE", env = "SHOAL_DOWNLOAD_LIMIT", value_parser = parse_size)]
    pub download_limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    /// Files or folders to share (indexed in place if not yet indexed).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Announce the shares on the DHT so anyone can find them by id (default:
    /// unlisted, reachable with the ticket only).
    #[arg(long)]
    pub public: bool,
    /// Print one JSON object per share (`ticket`, `id`, `peer`, `addrs`) instead of the tickets.
    #[arg(long)]
    pub json: bool,
    /// Stop serving after this long (e.g. `30s`, `10m`) instead of waiting for Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub serve_for: Option<std::time::Duration>,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// A ticket (`shoal1…`) or a content id (64 hex digits, looked up on the DHT).
    pub target: String,
    /// Folder to download into.
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// File or folder name to create in DIR [default: the content id].
    #[arg(long)]
    pub name: Option<String>,
    /// Fetch pieces in order (for streaming) instead of rarest first.
    #[arg(long)]
    pub sequential: bool,
    /// Keep serving the content for this long after it is complete (e.g. `10m`).
    #[arg(long = "seed-for", value_name = "DURATION", value_parser = parse_duration)]
    pub seed_for: Option<std::time::Duration>,
    /// With an id only: the id names a collection (a folder), not a file.
    #[arg(long)]
    pub collection: bool,
    /// Announce on the DHT that this node has the content while it downloads
    /// and seeds (on by default when fetching by id).
    #[arg(long)]
    pub announce: bool,
    /// Give up finding a first provider after this long.
    #[arg(long = "find-timeout", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub find_timeout: std::time::Duration,
    /// Fail when no new verified data arrived for this long.
    #[arg(long = "stall-timeout", value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub stall_timeout: std::time::Duration,
    /// Print JSON: progress lines on stderr and one summary object on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of downloaders.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub peers: u32,
    /// Size of the generated file (e.g. `64MiB`).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
    /// Upload limit of every node, per second (`0`: none; then the comparison
    /// is against one downloader fetching alone).
    #[arg(long = "demo-upload-limit", value_name = "RATE", default_value = "20MiB", value_parser = parse_size)]
    pub rate: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Network flags: every demo node uses them, except that each listens on
    /// 127.0.0.1 (port 0), mDNS and UPnP are off, and the seeder is the DHT
    /// bootstrap node.
    #[command(flatten)]
    pub net: shoal_net::NetArgs,
}

/// Durations like `30`, `30s`, `5m`, `2h`, `1d`.
pub use shoal_core::parse_duration;
/// Sizes like `1048576`, `64MiB`, `2GiB`, `512k` (binary units): the parser the
/// daemon's config file is read with too, so both read sizes the same way.
pub use shoal_core::parse_size;

#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// Decode a ticket and show what it carries, or say exactly why it is not valid.
    Inspect {
        /// The ticket text (starts with `shoal1`).
        ticket: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}
