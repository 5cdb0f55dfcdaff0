//! Command-line arguments. Every flag that configures the node can also be set
//! from an environment variable (`SHOAL_*`), as the clap `env` attribute shows.

use std::path::PathBuf;

use std::sync::OnceLock;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};

/// The options of the subcommand that were given, by long name (`--listen`):
/// on the command line, and through `SHOAL_*` environment variables.
#[derive(Debug, Default, Clone)]
pub struct Given {
    pub command_line: Vec<String>,
    pub environment: Vec<String>,
}

static GIVEN: OnceLock<Given> = OnceLock::new();

/// Records which options of the subcommand were given, and how (see [`given`]).
pub fn record_given(matches: &ArgMatches) {
    let mut g = Given::default();
    let cmd = Cli::command();
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(scmd) = cmd.find_subcommand(name) {
            for arg in scmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                match sub.value_source(arg.get_id().as_str()) {
                    Some(ValueSource::CommandLine) => g.command_line.push(format!("--{long}")),
                    Some(ValueSource::EnvVariable) => g.environment.push(format!("--{long}")),
                    _ => {}
                }
            }
        }
    }
    let _ = GIVEN.set(g);
}

/// Which options of this run's subcommand were given (empty in tests that
/// call the commands directly).
pub fn given() -> Given {
    GIVEN.get().cloned().unwrap_or_default()
}

/// `shoal --version`: the version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SHOAL_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version = VERSION,
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
    /// List the files of a folder: a folder share, or a folder the running
    /// daemon downloads (with how much of each file is here).
    Files {
        /// The share's or transfer's content id (or a unique prefix of at
        /// least 8 hex digits).
        id: String,
        /// Print one JSON object (`known`, `total_files`, `total_bytes`,
        /// `files`: `path`, `size`, `id`, `done_bytes`).
        #[arg(long)]
        json: bool,
    },
    /// List the files of a folder someone shares, by its ticket or id,
    /// fetching only its list (the manifest), verified against the id.
    Ls(LsArgs),
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
    /// Seed a completed download of the running daemon again: it serves its
    /// file to others (also after daemon restarts) until paused.
    Seed(TransferIdArgs),
    /// Change the priority of files of a folder the running daemon
    /// downloads, while it runs: `skip` (not fetched; a file not yet here is
    /// never created), `normal`, or `high` (fetched first). `shoal files ID`
    /// lists the paths.
    Priority(PriorityArgs),
    /// Stop and forget a transfer of the running daemon; a partial download's
    /// data is deleted (unless --keep-data), a completed file is kept.
    Cancel(CancelArgs),
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
    #[command(flatten)]
    Access(AccessCommand),
}

/// Who may fetch what (through the daemon when one runs, else on the data dir).
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Show a share's policy, allowlist and invites.
    Access {
        /// The share's id (or a unique prefix of at least 8 hex digits).
        id: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Allow a peer to fetch a private share (and every file of a shared folder).
    Allow {
        /// The share's id (or a unique prefix).
        id: String,
        /// The peer id to allow (what `shoal status` prints on the other machine).
        peer: String,
        /// Print the share's access as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Take a peer off a share's allowlist; its running sessions close at once.
    Deny {
        /// The share's id (or a unique prefix).
        id: String,
        /// The peer id to remove.
        peer: String,
        /// Print the share's access as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set who may fetch a share: public (announced), unlisted (ticket only) or
    /// private (allowlist and invites only). Sessions no longer allowed close.
    Visibility {
        /// The share's id (or a unique prefix).
        id: String,
        /// public, unlisted or private.
        #[arg(value_parser = parse_policy)]
        visibility: shoal_daemon::access::Policy,
        /// Print the share as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make an invite to a share and print a ticket carrying it: its holder may
    /// fetch the share even while it is private.
    Invite(InviteArgs),
    /// List invites (of one share, or all) with their uses and state.
    Invites {
        /// Only this share's invites (id or unique prefix).
        id: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an invite: refused from now on, and the sessions it admitted close.
    Revoke {
        /// The invite id (32 hex digits, as `shoal invites` prints it).
        invite: String,
        /// Print the invite as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Who asked for what, when, and the answer (newest first).
    #[command(name = "access-log")]
    AccessLog {
        /// Only requests for this share (id or unique prefix).
        id: Option<String>,
        /// Show at most this many rows.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The share's id (or a unique prefix of at least 8 hex digits).
    pub id: String,
    /// Only this peer id may use the invite.
    #[arg(long, value_name = "PEER_ID")]
    pub to: Option<String>,
    /// The invite expires this long after now (e.g. `30m`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// At most this many distinct peers may use it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub uses: Option<u64>,
    /// Print the invite (with its ticket) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn parse_policy(s: &str) -> Result<shoal_daemon::access::Policy, String> {
    use shoal_daemon::access::Policy;
    match s {
        "public" => Ok(Policy::Public),
        "unlisted" => Ok(Policy::Unlisted),
        "private" => Ok(Policy::Private),
        _ => Err(format!(
            "{s:?} is not a visibility: use public, unlisted or private"
        )),
    }
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

/// Arguments of `shoal priority`.
#[derive(Debug, Args)]
pub struct PriorityArgs {
    /// The transfer's content id, or a unique prefix of at least 8 hex digits.
    pub id: String,
    /// The new priority: skip, normal or high.
    #[arg(long = "set", value_name = "PRIORITY")]
    pub priority: shoal_node::FilePriority,
    /// Paths of files inside the folder (1 to 1000), as `shoal files` lists them.
    #[arg(required = true, num_args = 1..)]
    pub paths: Vec<String>,
    /// Print the resulting transfer as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `shoal cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub t: TransferIdArgs,
    /// Keep the partial data on disk: getting the same content into the same
    /// place again resumes from it.
    #[arg(long)]
    pub keep_data: bool,
}

/// Options of every command that starts a node.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    #[command(flatten)]
    pub net: crate::net_args::NetArgs,

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
    #[arg(long, conflicts_with = "private")]
    pub public: bool,
    /// Serve the shares only to the peers given with --allow and to holders of
    /// an invite (`shoal invite`).
    #[arg(long)]
    pub private: bool,
    /// With --private: a peer id allowed to fetch the shares (repeatable).
    #[arg(long, value_name = "PEER_ID", requires = "private")]
    pub allow: Vec<String>,
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
    /// Keep serving the content after it is complete until it has sent R
    /// times its size (e.g. `1.5`); with --seed-for, whichever comes first.
    #[arg(long = "seed-ratio", value_name = "R", value_parser = parse_ratio)]
    pub seed_ratio: Option<f64>,
    /// With an id only: the id names a folder, not a file.
    #[arg(long = "folder", alias = "collection")]
    pub collection: bool,
    /// Of a folder, fetch only the files whose path inside it matches GLOB
    /// (repeatable; `*` and `?` also match `/`: `*.flac` is every FLAC file).
    /// Files not chosen are never created; `shoal ls` lists the paths.
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<String>,
    /// Of a folder, leave out the files whose path matches GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
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
pub struct LsArgs {
    /// A folder's ticket (`shoal1…`) or content id (looked up on the DHT).
    pub target: String,
    /// Give up after this long without the list (1 s to 5 min).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Print one JSON object (`total_files`, `total_bytes`, `files`: `path`,
    /// `size`, `id`).
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
    pub net: crate::net_args::NetArgs,
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
    /// Print a ticket as a QR code (text blocks), to scan it with a phone's
    /// camera; `--svg` prints an SVG image instead.
    Qr {
        /// The ticket text (starts with `shoal1`).
        ticket: String,
        /// Print an SVG image (to save as a file) instead of text.
        #[arg(long)]
        svg: bool,
    },
}

/// A seeding ratio: a number above 0 and at most 10000.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; give a ratio like 1.5"))?;
    if r > 0.0 && r <= 10_000.0 {
        Ok(r)
    } else {
        Err(format!(
            "the ratio must be above 0 and at most 10000, not {r}"
        ))
    }
}
