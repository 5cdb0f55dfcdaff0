//! Indexing a file or a folder: every regular file hashed, a folder turned into a
//! collection manifest.
//!
//! Below a folder, symbolic links are **not followed** and not included (a link
//! could point outside the folder or make a cycle); sockets, FIFOs and devices are
//! skipped too, and so are unfinished downloads (`*.shoal-part`) and, when asked,
//! shoal's own data directory. Each skipped entry is reported so the caller can warn. A name that
//! is not valid UTF-8 is an error, since collection paths are UTF-8.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use shoal_core::manifest::{Entry, Manifest, ManifestError, MAX_ENTRIES};
use shoal_core::{ContentId, Kind};

use crate::error::StoreError;
use crate::hash::{default_threads, hash_file_with, Progress};
use crate::partial::PART_SUFFIX;
use crate::tree::Outboard;

/// Files up to this size are hashed one per thread, many at a time; larger ones
/// one at a time with every thread.
const SMALL_FILE: u64 = 16 * 1024 * 1024;

/// An earlier hash that may stand for hashing a file again: given the file's
/// absolute path, size and modification time (ns since the Unix epoch), the
/// outboard recorded for exactly that file, size and time, if any.
pub type Reuse<'a> = &'a (dyn Fn(&Path, u64, i64) -> Option<Outboard> + Sync);

/// A file whose modification time is this close to (or after) the moment its
/// hashing started gets no recorded time, so it is hashed again next time: a
/// write in the same timestamp tick as an earlier one leaves the time unchanged
/// (file times are coarse), so only an older time proves the bytes hashed are
/// the file's bytes for as long as the time stays the same.
const RACY_NS: i64 = 2_000_000_000;

/// The result of hashing a path.
#[derive(Debug, Clone)]
pub enum Hashed {
    /// A single regular file.
    File(HashedFile),
    /// A folder: a collection.
    Folder(HashedFolder),
}

/// A hashed regular file.
#[derive(Debug, Clone)]
pub struct HashedFile {
    /// The file's path, as given.
    pub path: PathBuf,
    /// Content id (= `outboard.root()`).
    pub id: ContentId,
    /// Size in bytes, as hashed.
    pub size: u64,
    /// Its outboard; `outboard.root()` is its id.
    pub outboard: Outboard,
    /// Modification time in nanoseconds since the Unix epoch, when it proves the
    /// hashed bytes current (see [`RACY_NS`]); `None` otherwise.
    pub mtime_ns: Option<i64>,
    /// Whether an earlier hash was reused instead of reading the file.
    pub reused: bool,
}

/// One file of a hashed folder.
#[derive(Debug, Clone)]
pub struct FolderFile {
    /// Path relative to the folder, '/'-separated, UTF-8.
    pub path: String,
    /// Size in bytes (as hashed).
    pub size: u64,
    /// Content id.
    pub id: ContentId,
    /// Its outboard.
    pub outboard: Outboard,
    /// Modification time in nanoseconds since the Unix epoch, when it proves the
    /// hashed bytes current (see [`RACY_NS`]); `None` otherwise.
    pub mtime_ns: Option<i64>,
    /// Whether an earlier hash was reused instead of reading the file.
    pub reused: bool,
}

/// A hashed folder.
#[derive(Debug, Clone)]
pub struct HashedFolder {
    /// The folder's path, as given.
    pub root: PathBuf,
    /// Every regular file below it, sorted by path (byte order, as in the manifest).
    pub files: Vec<FolderFile>,
    /// The canonical manifest.
    pub manifest: Manifest,
    /// The collection id (BLAKE3 of the manifest's encoding).
    pub id: ContentId,
    /// Entries left out, with why.
    pub skipped: Vec<Skipped>,
}

/// An entry left out of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's full path.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: SkipReason,
}

/// Why an entry was left out of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A symbolic link (never followed).
    Symlink,
    /// A Unix socket.
    Socket,
    /// A named pipe.
    Fifo,
    /// A block or character device.
    Device,
    /// Some other kind of entry.
    Other,
    /// An unfinished shoal download (`*.shoal-part`), which changes as it fills.
    PartialDownload,
    /// shoal's own data directory (its database changes while it is hashed).
    DataDir,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::Symlink => "symbolic link (not followed)",
            SkipReason::Socket => "socket",
            SkipReason::Fifo => "named pipe",
            SkipReason::Device => "device",
            SkipReason::Other => "not a regular file",
            SkipReason::PartialDownload => "unfinished shoal download",
            SkipReason::DataDir => "shoal's own data directory",
        })
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.path.display(), self.reason)
    }
}

impl Hashed {
    /// The content id: the file's hash, or the collection id.
    pub fn id(&self) -> ContentId {
        match self {
            Hashed::File(f) => f.id,
            Hashed::Folder(d) => d.id,
        }
    }

    /// File or collection.
    pub fn kind(&self) -> Kind {
        match self {
            Hashed::File(_) => Kind::File,
            Hashed::Folder(_) => Kind::Collection,
        }
    }

    /// Total size in bytes of the file or of every file in the folder.
    pub fn size(&self) -> u64 {
        match self {
            Hashed::File(f) => f.outboard.layout().len(),
            Hashed::Folder(d) => d.manifest.total_size(),
        }
    }

    /// Bytes whose earlier hash was reused rather than read again.
    pub fn reused_bytes(&self) -> u64 {
        match self {
            Hashed::File(f) if f.reused => f.size,
            Hashed::File(_) => 0,
            Hashed::Folder(d) => d.files.iter().filter(|f| f.reused).map(|f| f.size).sum(),
        }
    }
}

fn mtime_ns(meta: &fs::Metadata) -> Option<i64> {
    meta.mtime()
        .checked_mul(1_000_000_000)?
        .checked_add(meta.mtime_nsec())
}

/// Hashes a regular file or a folder (the path itself is followed if it is a
/// link; nothing below a folder is). `progress` gets byte increments.
pub fn hash_path(path: &Path, progress: Progress<'_>) -> Result<Hashed, StoreError> {
    hash_path_excluding(path, &[], progress)
}

/// [`hash_path`], leaving out (and reporting as [`SkipReason::DataDir`]) the
/// folders in `exclude` (compared as given, so pass canonical paths for a
/// canonical `path`).
pub fn hash_path_excluding(
    path: &Path,
    exclude: &[PathBuf],
    progress: Progress<'_>,
) -> Result<Hashed, StoreError> {
    hash_path_reusing(path, exclude, &|_, _, _| None, progress)
}

/// [`hash_path_excluding`], taking a file's earlier hash from `reuse` instead
/// of reading the file when `reuse` has one for its size and modification time
/// (`progress` still gets the file's size).
pub fn hash_path_reusing(
    path: &Path,
    exclude: &[PathBuf],
    reuse: Reuse<'_>,
    progress: Progress<'_>,
) -> Result<Hashed, StoreError> {
    let meta = fs::metadata(path).map_err(StoreError::io("read the metadata of", path))?;
    if meta.is_file() {
        let found = Found {
            rel: String::new(),
            abs: path.to_path_buf(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        };
        let one = hash_or_reuse(&found, reuse, default_threads(), progress)?;
        return Ok(Hashed::File(HashedFile {
            path: path.to_path_buf(),
            id: one.outboard.root(),
            size: one.outboard.layout().len(),
            outboard: one.outboard,
            mtime_ns: one.mtime_ns,
            reused: one.reused,
        }));
    }
    if !meta.is_dir() {
        return Err(StoreError::NotShareable {
            path: path.to_path_buf(),
        });
    }
    hash_folder(path, exclude, reuse, progress).map(Hashed::Folder)
}

struct Found {
    rel: String,
    abs: PathBuf,
    size: u64,
    /// Modification time when listed.
    mtime_ns: Option<i64>,
}

struct One {
    outboard: Outboard,
    mtime_ns: Option<i64>,
    reused: bool,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The modification time worth recording for a file whose time was `before`
/// when listed and `after` once hashed, hashing having started at `started`.
fn trusted_mtime(before: Option<i64>, after: Option<i64>, started: i64) -> Option<i64> {
    match (before, after) {
        (Some(b), Some(a)) if a == b && b < started.saturating_sub(RACY_NS) => Some(b),
        _ => None,
    }
}

/// Reuses the earlier hash of `f` that `reuse` offers, or hashes it.
fn hash_or_reuse(
    f: &Found,
    reuse: Reuse<'_>,
    threads: usize,
    progress: Progress<'_>,
) -> Result<One, StoreError> {
    if let Some(m) = f.mtime_ns {
        if let Some(outboard) = reuse(&f.abs, f.size, m) {
            progress(f.size);
            return Ok(One {
                outboard,
                mtime_ns: Some(m),
                reused: true,
            });
        }
    }
    let started = now_ns();
    let outboard = hash_file_with(&f.abs, None, threads, progress)?;
    // The file as it is now (not through a link: listed entries are regular
    // files, and a shared file's own path was resolved by the caller).
    let after = fs::symlink_metadata(&f.abs).ok().and_then(|m| mtime_ns(&m));
    Ok(One {
        outboard,
        mtime_ns: trusted_mtime(f.mtime_ns, after, started),
        reused: false,
    })
}

/// What [`list_folder`] finds.
struct Listing {
    files: Vec<Found>,
    /// The innermost folders that hold no listed file (see
    /// [`Manifest::with_empty_folders`]).
    empty_folders: Vec<String>,
    skipped: Vec<Skipped>,
}

/// Lists every regular file below `root`, depth first, without following
/// links, and the folders that end up holding none.
fn list_folder(root: &Path, exclude: &[PathBuf]) -> Result<Listing, StoreError> {
    let mut files = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(StoreError::io("list the folder", &dir))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("list the folder", &dir))?;
            let abs = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| StoreError::NonUtf8Name { path: abs.clone() })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // `file_type` does not follow symbolic links.
            let ft = entry
                .file_type()
                .map_err(StoreError::io("read the type of", &abs))?;
            if ft.is_dir() {
                if exclude.contains(&abs) {
                    skipped.push(Skipped {
                        path: abs,
                        reason: SkipReason::DataDir,
                    });
                } else {
                    folders.push(rel.clone());
                    stack.push((abs, rel));
                }
            } else if ft.is_file() && rel.ends_with(PART_SUFFIX) {
                skipped.push(Skipped {
                    path: abs,
                    reason: SkipReason::PartialDownload,
                });
            } else if ft.is_file() {
                let meta = entry
                    .metadata()
                    .map_err(StoreError::io("read the metadata of", &abs))?;
                files.push(Found {
                    rel,
                    abs,
                    size: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                });
                if files.len() + folders.len() > MAX_ENTRIES {
                    return Err(StoreError::Manifest {
                        path: root.to_path_buf(),
                        source: ManifestError::TooManyEntries {
                            count: (files.len() + folders.len()) as u64,
                        },
                    });
                }
            } else {
                let reason = if ft.is_symlink() {
                    SkipReason::Symlink
                } else if ft.is_socket() {
                    SkipReason::Socket
                } else if ft.is_fifo() {
                    SkipReason::Fifo
                } else if ft.is_block_device() || ft.is_char_device() {
                    SkipReason::Device
                } else {
                    SkipReason::Other
                };
                skipped.push(Skipped { path: abs, reason });
            }
        }
    }
    files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    skipped.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    // A folder is listed as empty when no file and no other folder lies
    // below it (a folder holding only links or sockets counts as empty: the
    // receiver gets it empty).
    let mut holding: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for path in files
        .iter()
        .map(|f| f.rel.as_str())
        .chain(folders.iter().map(String::as_str))
    {
        for (i, _) in path.match_indices('/') {
            holding.insert(&path[..i]);
        }
    }
    let empty_folders: Vec<String> = folders
        .iter()
        .filter(|f| !holding.contains(f.as_str()))
        .cloned()
        .collect();
    Ok(Listing {
        files,
        empty_folders,
        skipped,
    })
}

fn hash_folder(
    root: &Path,
    exclude: &[PathBuf],
    reuse: Reuse<'_>,
    progress: Progress<'_>,
) -> Result<HashedFolder, StoreError> {
    let Listing {
        files: found,
        empty_folders,
        skipped,
    } = list_folder(root, exclude)?;
    let hash_one = |f: &Found, threads: usize| -> Result<FolderFile, StoreError> {
        let one = hash_or_reuse(f, reuse, threads, progress)?;
        Ok(FolderFile {
            path: f.rel.clone(),
            size: one.outboard.layout().len(),
            id: one.outboard.root(),
            outboard: one.outboard,
            mtime_ns: one.mtime_ns,
            reused: one.reused,
        })
    };
    // Small files in parallel across files; large ones one by one, each using
    // every core.
    let mut hashed: Vec<Option<FolderFile>> = found
        .par_iter()
        .map(|f| {
            if f.size <= SMALL_FILE {
                hash_one(f, 1).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_, _>>()?;
    for (slot, f) in hashed.iter_mut().zip(&found) {
        if slot.is_none() {
            *slot = Some(hash_one(f, default_threads())?);
        }
    }
    let files: Vec<FolderFile> = hashed.into_iter().flatten().collect();
    let entries = files
        .iter()
        .map(|f| Entry {
            path: f.path.clone(),
            size: f.size,
            id: f.id,
        })
        .collect();
    let manifest = Manifest::with_empty_folders(entries, empty_folders).map_err(|source| {
        StoreError::Manifest {
            path: root.to_path_buf(),
            source,
        }
    })?;
    Ok(HashedFolder {
        root: root.to_path_buf(),
        id: manifest.id(),
        files,
        manifest,
        skipped,
    })
}
