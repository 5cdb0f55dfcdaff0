//! The store's error type. Every message says what failed, on what, and what to do.

use std::io;
use std::path::{Path, PathBuf};

use shoal_core::ContentId;

use crate::layout::LayoutError;
use crate::tree::VerifyError;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}; {}", path.display(), io_hint(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The content cannot be cut into pieces (too large, bad piece size).
    #[error("{}: {source}", path.display())]
    Layout {
        path: PathBuf,
        #[source]
        source: LayoutError,
    },
    /// A file changed size while it was being hashed.
    #[error(
        "{} changed while it was being hashed (it was {expected} bytes, now {actual}); \
         wait until it is no longer being written and try again",
        path.display()
    )]
    FileChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A shared file no longer matches the id it was indexed with.
    #[error(
        "{} no longer matches content id {id} (piece {piece} differs or is missing): the file \
         was modified after it was shared; add it again to share the new version",
        path.display()
    )]
    SourceChanged {
        path: PathBuf,
        id: ContentId,
        piece: u32,
    },
    /// A request the store refuses (over a limit, inconsistent).
    #[error("{what}")]
    Invalid { what: String },
    /// A file or folder name is not valid UTF-8, which collections require.
    #[error("{} has a name that is not valid UTF-8; rename it to share this folder", path.display())]
    NonUtf8Name { path: PathBuf },
    /// The path to share is neither a regular file nor a folder.
    #[error("{} is not a regular file or a folder; only files and folders can be shared", path.display())]
    NotShareable { path: PathBuf },
    /// A piece or outboard did not verify.
    #[error("content {id}: {source}")]
    Verify {
        id: ContentId,
        #[source]
        source: VerifyError,
    },
    /// A stored outboard is corrupt.
    #[error(
        "the stored outboard {} for {id} is corrupt ({source}); remove the share and add it again",
        path.display()
    )]
    CorruptOutboard {
        id: ContentId,
        path: PathBuf,
        #[source]
        source: VerifyError,
    },
    /// The folder's file list was refused by the manifest rules.
    #[error("cannot build the manifest of {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: shoal_core::manifest::ManifestError,
    },
    /// A database operation failed.
    #[error("database error while trying to {action}: {source}; if this persists, check the data directory's disk space and permissions")]
    Db {
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The database holds something this code cannot read.
    #[error("the database is inconsistent: {what}; it may come from a newer shoal or be damaged")]
    Corrupt { what: String },
    /// The database was written by a newer shoal.
    #[error("the database schema version {found} is newer than this shoal understands ({known}); upgrade shoal")]
    SchemaTooNew { found: i64, known: i64 },
    /// `finish` was called before every piece was present.
    #[error("the download to {} is incomplete: {missing} of {total} pieces are missing", path.display())]
    Incomplete {
        path: PathBuf,
        missing: u32,
        total: u32,
    },
    /// A different file already exists where a download would be placed.
    #[error("{} already exists and differs from the download; move it away or choose another destination", path.display())]
    DestinationExists { path: PathBuf },
    /// The partial file a download would use holds another download's bytes
    /// (`owner`), or bytes this data directory has no record of (`None`).
    #[error("{} holds {}; save this one under another name, or {}", part.display(), match owner {
        Some(id) => format!("the unfinished download of {id}"),
        None => "data of a download this data directory has no record of".to_string(),
    }, match owner {
        Some(_) => "finish or cancel that download first (or delete that file)",
        None => "move or delete that file if it is not needed",
    })]
    PartInUse {
        part: PathBuf,
        owner: Option<shoal_core::ContentId>,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "check the file's permissions",
        io::ErrorKind::NotFound => "check that the path exists",
        io::ErrorKind::StorageFull => "free some disk space",
        io::ErrorKind::UnexpectedEof => {
            "the file is shorter than expected; it may be being written"
        }
        _ => "check the path and the disk",
    }
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Db { action, source }
    }
}
