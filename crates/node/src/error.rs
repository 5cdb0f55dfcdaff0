//! The node's error type: every message says what failed, on what, and what to do.

use std::path::PathBuf;

use shoal_core::proto::{CloseCode, DenyReason, ProtoError};
use shoal_core::ContentId;

/// What went wrong in a transfer or in the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Local storage failed (disk, database, a shared file changed).
    #[error(transparent)]
    Store(#[from] shoal_store::StoreError),
    /// A stream failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the transfer protocol.
    #[error("protocol violation by the peer: {0}")]
    Protocol(#[from] ProtoError),
    /// The peer refused the transfer.
    #[error("the peer refused content {id}: {reason:?} ({text})")]
    Denied {
        id: ContentId,
        reason: DenyReason,
        text: String,
    },
    /// The peer closed the connection.
    #[error("the peer closed the connection: {code:?} ({text})")]
    Closed { code: CloseCode, text: String },
    /// No peer could deliver the content.
    #[error(
        "no peer could deliver content {id}: {why}; check that a peer sharing it is reachable \
         and try again"
    )]
    NoPeers { id: ContentId, why: String },
    /// Every peer that has the content refused us access.
    #[error("{why}")]
    AccessRefused { id: ContentId, why: String },
    /// A collection's manifest was refused (unsafe or malformed paths).
    #[error("the manifest of collection {id} is refused: {source}")]
    BadManifest {
        id: ContentId,
        #[source]
        source: shoal_core::ManifestError,
    },
    /// `--only`/`--exclude` left no file of the folder to fetch.
    #[error("no file of folder {id} ({files} files) matches what was chosen (--only/--exclude); `shoal ls` lists its files")]
    NothingChosen { id: ContentId, files: usize },
    /// Two paths of a folder would be one on a case-insensitive or
    /// normalising file system: refused before anything is written.
    #[error(
        "folder {id} holds {a:?} and {b:?}, whose names differ only in letter case or Unicode normalisation: on a case-insensitive file system (macOS, Windows) one would overwrite the other, so nothing was written; ask the sharer to rename one of them, or leave one out with --exclude"
    )]
    NameCollision { id: ContentId, a: String, b: String },
    /// A download destination is unsafe (a symbolic link or a non-folder in the way).
    #[error(
        "refusing to write to {}: {why}; choose another output folder or remove what is in the way",
        path.display()
    )]
    UnsafeDestination { path: PathBuf, why: &'static str },
    /// The node or the download was shut down before finishing.
    #[error("the transfer of {id} was stopped before it finished")]
    Stopped { id: ContentId },
    /// Something the node relies on failed internally (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}
