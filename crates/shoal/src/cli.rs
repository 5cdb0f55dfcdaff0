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
    /// Work with tickets.
    #[command(subcommand)]
    Ticket(TicketCommand),
}

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
