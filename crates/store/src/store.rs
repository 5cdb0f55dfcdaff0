//! The [`Store`] facade: a data directory with the database and outboard files.
//!
//! Layout of the data directory (created with mode 0700):
//! - `shoal.db` (+ WAL files): the SQLite database ([`Db`]).
//! - `outboards/<hex id>.obao`: outboards of contents of more than one piece,
//!   written atomically (temporary file, fsync, rename). Contents of at most one
//!   piece need no file: their outboard follows from their id. A content id has
//!   one outboard: the first layout recorded for it stays (an outboard of the
//!   same content cut at another piece size, from an older version or a peer,
//!   is never written over it; see [`Store::put_outboard`]).

use std::fs::{DirBuilder, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_core::{ContentId, Kind};

use crate::db::{now_secs, Db, NewShare, OutboardRecord, SearchHit, Share, ShareFile, Visibility};
use crate::error::StoreError;
use crate::hash::{hash_bytes, Progress};
use crate::layout::PieceLayout;
use crate::partial::PartialFile;
use crate::tree::Outboard;
use crate::walk::{hash_path_reusing, Hashed, Skipped};

/// Visibility of a newly added share: reachable with its ticket only.
pub const DEFAULT_VISIBILITY: Visibility = Visibility::Unlisted;

/// Default number of results of [`Store::search`].
pub const DEFAULT_SEARCH_LIMIT: u32 = 100;

/// What [`Store::add_with_report`] did.
#[derive(Debug, Clone)]
pub struct Added {
    /// The share (the existing one if the content was already shared).
    pub share: Share,
    /// Whether the content was already shared (nothing was changed).
    pub existed: bool,
    /// Entries of a folder that were left out (links, sockets, …).
    pub skipped: Vec<Skipped>,
    /// Bytes not read again because an earlier share of the same path had hashed
    /// them with the same size and modification time.
    pub reused_bytes: u64,
}

/// Where the bytes of a content id come from when serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blob {
    /// A shared file (or a file inside a shared folder), read in place; re-verify
    /// every piece read from it (see [`crate::partial::read_piece_from`]).
    File(PathBuf),
    /// A collection's manifest encoding, kept in the database.
    Manifest(Vec<u8>),
}

/// shoal's local state: the database and the outboards, in one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    outboards: PathBuf,
    db: Db,
    /// Held while outboard files and their records change together (adding,
    /// removing, keeping a download's outboard), so that one never writes or
    /// deletes a file that another is recording.
    outboard_lock: Arc<Mutex<()>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store in `data_dir`, creating the directory (mode 0700), the
    /// database `shoal.db` and `outboards/` as needed.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(StoreError::io("create the data directory", data_dir))?;
        let outboards = data_dir.join("outboards");
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&outboards)
            .map_err(StoreError::io("create the folder", &outboards))?;
        let db = Db::open(&data_dir.join("shoal.db"))?;
        Ok(Store {
            dir: data_dir.to_path_buf(),
            outboards,
            db,
            outboard_lock: Arc::new(Mutex::new(())),
        })
    }

    /// Takes [`Store::outboard_lock`] (it guards no data of its own, so a panic
    /// while it was held leaves nothing to repair).
    fn lock_outboards(&self) -> MutexGuard<'_, ()> {
        self.outboard_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Shares a file or folder in place (nothing is copied): hashes it (except
    /// the files an earlier share of the same path hashed and that kept their
    /// size and modification time since, see [`crate::walk::hash_path_reusing`]), stores
    /// its outboards, records it with [`DEFAULT_VISIBILITY`]. Adding content that
    /// is already shared returns the existing share unchanged. `name` defaults to
    /// the file or folder name.
    pub fn add(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Share, StoreError> {
        self.add_with_report(path, name, progress).map(|a| a.share)
    }

    /// [`Store::add`], also saying whether the share existed and what was skipped.
    pub fn add_with_report(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Added, StoreError> {
        let canon = path.canonicalize().map_err(StoreError::io("find", path))?;
        // Sharing a folder that holds the data directory must not hash the
        // database while it is being written.
        let exclude: Vec<PathBuf> = self.dir.canonicalize().into_iter().collect();
        let known = self.db.indexed_files(&canon)?;
        // A recorded hash stands only for the same size and time, and only if
        // its outboard is still here. Whatever its piece size (older versions
        // cut some contents differently), it is the one this content keeps (see
        // `save_outboard`), so hashing again would change nothing. Serving
        // re-verifies every piece anyway, so a file changed behind an unchanged
        // time is never served, only refused piece by piece.
        let reuse = |path: &Path, size: u64, mtime_ns: i64| -> Option<Outboard> {
            let k = known.get(path)?;
            if k.size != size || k.mtime_ns != mtime_ns {
                return None;
            }
            let ob = self.outboard(&k.id).ok()??;
            (ob.layout().len() == size).then_some(ob)
        };
        let hashed = hash_path_reusing(&canon, &exclude, &reuse, progress)?;
        self.add_hashed(&hashed, name)
    }

    /// Records an already hashed file or folder (see
    /// [`crate::walk::hash_path_excluding`]; its path should be canonical and it
    /// should exclude [`Store::dir`]).
    pub fn add_hashed(&self, hashed: &Hashed, name: Option<&str>) -> Result<Added, StoreError> {
        let _outboards = self.lock_outboards();
        let id = hashed.id();
        let skipped = match hashed {
            Hashed::File(_) => Vec::new(),
            Hashed::Folder(d) => d.skipped.clone(),
        };
        let reused_bytes = hashed.reused_bytes();
        if let Some(share) = self.db.share(&id)? {
            // Same content from the same path: keep the times just seen of the
            // files hashed again, so files shared before their time could be
            // trusted, or touched since, are skipped next time (a reused file's
            // time is the one on record already).
            match hashed {
                Hashed::File(f) if f.path == share.path && !f.reused => {
                    self.db.refresh_mtimes(&id, f.mtime_ns, &[])?;
                }
                Hashed::Folder(d) if d.root == share.path => {
                    let files: Vec<(&str, Option<i64>)> = d
                        .files
                        .iter()
                        .filter(|f| !f.reused)
                        .map(|f| (f.path.as_str(), f.mtime_ns))
                        .collect();
                    if !files.is_empty() {
                        self.db.refresh_mtimes(&id, None, &files)?;
                    }
                }
                _ => {}
            }
            return Ok(Added {
                share,
                existed: true,
                skipped,
                reused_bytes,
            });
        }
        let (path, files, manifest_bytes, mut records) = match hashed {
            Hashed::File(f) => (
                f.path.clone(),
                Vec::new(),
                None,
                vec![self.save_outboard(&f.outboard)?],
            ),
            Hashed::Folder(d) => {
                let mut records = Vec::with_capacity(d.files.len() + 1);
                for f in &d.files {
                    records.push(self.save_outboard(&f.outboard)?);
                }
                let files: Vec<ShareFile> = d
                    .files
                    .iter()
                    .map(|f| ShareFile {
                        path: f.path.clone(),
                        size: f.size,
                        id: f.id,
                        mtime_ns: f.mtime_ns,
                    })
                    .collect();
                (d.root.clone(), files, Some(d.manifest.encode()), records)
            }
        };
        if let Some(bytes) = &manifest_bytes {
            // The manifest is served like any blob, so it has an outboard too.
            let ob = hash_bytes(bytes).map_err(|source| StoreError::Layout {
                path: path.clone(),
                source,
            })?;
            records.push(self.save_outboard(&ob)?);
        }
        let default_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let share = Share {
            id,
            kind: hashed.kind(),
            name: name.map(str::to_string).unwrap_or(default_name),
            path,
            size: hashed.size(),
            files: match hashed {
                Hashed::File(_) => 1,
                Hashed::Folder(d) => d.files.len() as u64,
            },
            visibility: DEFAULT_VISIBILITY,
            added_at: now_secs(),
        };
        let inserted = self.db.insert_share(&NewShare {
            share: &share,
            manifest: manifest_bytes.as_deref(),
            files: &files,
            outboards: &records,
            mtime_ns: match hashed {
                Hashed::File(f) => f.mtime_ns,
                Hashed::Folder(_) => None,
            },
        })?;
        if !inserted {
            // Added concurrently by someone else: theirs stands.
            if let Some(existing) = self.db.share(&id)? {
                return Ok(Added {
                    share: existing,
                    existed: true,
                    skipped,
                    reused_bytes,
                });
            }
        }
        Ok(Added {
            share,
            existed: false,
            skipped,
            reused_bytes,
        })
    }

    /// Every share, oldest first.
    pub fn shares(&self) -> Result<Vec<Share>, StoreError> {
        self.db.shares()
    }

    /// The share with this id.
    pub fn share(&self, id: &ContentId) -> Result<Option<Share>, StoreError> {
        self.db.share(id)
    }

    /// The files of a collection share, sorted by path.
    pub fn share_files(&self, id: &ContentId) -> Result<Vec<ShareFile>, StoreError> {
        self.db.share_files(id)
    }

    /// Files `offset..offset + limit` of a collection share, sorted by path,
    /// with the number of files and their total size.
    pub fn share_files_page(
        &self,
        id: &ContentId,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, u64, Vec<ShareFile>), StoreError> {
        self.db.share_files_page(id, offset, limit)
    }

    /// Changes who may see a share; `false` if there is no such share.
    pub fn set_visibility(&self, id: &ContentId, v: Visibility) -> Result<bool, StoreError> {
        self.db.set_visibility(id, v)
    }

    /// Stops sharing `id`: removes it from the index and deletes the outboards
    /// nothing else refers to. **Never touches the shared files.** `false` if there
    /// was no such share.
    pub fn remove(&self, id: &ContentId) -> Result<bool, StoreError> {
        let _outboards = self.lock_outboards();
        let Some(files) = self.db.remove_share(id)? else {
            return Ok(false);
        };
        for f in files {
            if !is_outboard_file_name(&f) {
                continue;
            }
            let p = self.outboards.join(&f);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove the outboard", &p)(e)),
            }
        }
        Ok(true)
    }

    /// Full-text search over share names and file paths (see [`Db::search`]).
    pub fn search(&self, query: &str) -> Result<Vec<SearchHit>, StoreError> {
        self.db.search(query, DEFAULT_SEARCH_LIMIT)
    }

    /// Where the bytes of content `id` are read from when serving it, if shared.
    pub fn source_of(&self, id: &ContentId) -> Result<Option<PathBuf>, StoreError> {
        self.db.source_of(id)
    }

    /// Where to read content `id` from to serve it: a file in place, or a
    /// collection's manifest. `None` if this node does not share it.
    pub fn blob(&self, id: &ContentId) -> Result<Option<Blob>, StoreError> {
        if let Some(bytes) = self.db.manifest(id)? {
            return Ok(Some(Blob::Manifest(bytes)));
        }
        Ok(self.db.source_of(id)?.map(Blob::File))
    }

    /// The manifest encoding of a collection share.
    pub fn manifest(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.manifest(id)
    }

    /// The verified outboard of content `id`, if known (shared or downloading).
    pub fn outboard(&self, id: &ContentId) -> Result<Option<Outboard>, StoreError> {
        let Some(rec) = self.db.outboard(id)? else {
            return Ok(None);
        };
        let layout =
            PieceLayout::with_piece_size(rec.size, u64::from(rec.piece_size)).map_err(|e| {
                StoreError::Corrupt {
                    what: format!("the outboard record of {id}: {e}"),
                }
            })?;
        let Some(file) = rec.file else {
            return Outboard::trivial(*id, layout)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("the outboard record of {id} lacks its file"),
                });
        };
        if !is_outboard_file_name(&file) {
            return Err(StoreError::Corrupt {
                what: format!("the outboard file name {file:?} of {id}"),
            });
        }
        let path = self.outboards.join(&file);
        let expected = u64::from(layout.num_pieces()) * 32;
        let actual = std::fs::metadata(&path)
            .map_err(StoreError::io("read the outboard", &path))?
            .len();
        if actual != expected {
            return Err(StoreError::CorruptOutboard {
                id: *id,
                path,
                source: crate::tree::VerifyError::WrongOutboardLength { expected, actual },
            });
        }
        let bytes = std::fs::read(&path).map_err(StoreError::io("read the outboard", &path))?;
        Outboard::decode(*id, layout, &bytes)
            .map(Some)
            .map_err(|source| StoreError::CorruptOutboard {
                id: *id,
                path,
                source,
            })
    }

    /// Keeps a verified outboard (e.g. fetched for a download) so that it survives
    /// a restart; a no-op if one is already kept for its content, even one cut at
    /// another piece size (that one stays: a share may be serving from it).
    pub fn put_outboard(&self, outboard: &Outboard) -> Result<(), StoreError> {
        let _outboards = self.lock_outboards();
        let rec = self.save_outboard(outboard)?;
        self.db.insert_outboard(&rec)
    }

    /// Starts or resumes downloading the content `outboard` describes to `dest`
    /// (see [`PartialFile::open`]); the outboard is kept too.
    pub fn open_download(
        &self,
        outboard: Outboard,
        dest: &Path,
        part: Option<&Path>,
    ) -> Result<PartialFile, StoreError> {
        self.put_outboard(&outboard)?;
        PartialFile::open(&self.db, outboard, dest, part)
    }

    /// Writes an outboard file if the content needs one; returns its record. If
    /// the content already has a record with another layout, that record is
    /// returned and its file left alone (both are named after the content id).
    /// The caller holds [`Store::lock_outboards`] until the record is stored.
    fn save_outboard(&self, ob: &Outboard) -> Result<OutboardRecord, StoreError> {
        let layout = ob.layout();
        let id = ob.root();
        if let Some(rec) = self.db.outboard(&id)? {
            if rec.piece_size != layout.piece_size() || rec.size != layout.len() {
                return Ok(rec);
            }
        }
        let file = if layout.num_pieces() <= 1 {
            None
        } else {
            let name = format!("{id}.obao");
            let path = self.outboards.join(&name);
            let expected = u64::from(layout.num_pieces()) * 32;
            let present = std::fs::metadata(&path)
                .map(|m| m.len() == expected)
                .unwrap_or(false);
            if !present {
                write_atomically(&self.outboards, &path, &ob.encode())?;
            }
            Some(name)
        };
        Ok(OutboardRecord {
            id,
            piece_size: layout.piece_size(),
            size: layout.len(),
            file,
        })
    }

    /// The kind of a shared content id, if shared (as a share or inside one).
    pub fn kind_of(&self, id: &ContentId) -> Result<Option<Kind>, StoreError> {
        if let Some(s) = self.db.share(id)? {
            return Ok(Some(s.kind));
        }
        Ok(self.db.source_of(id)?.map(|_| Kind::File))
    }
}

/// Whether `name` is `<64 hex digits>.obao`, the only outboard file names the
/// store creates (so a damaged database cannot make it read or delete others).
fn is_outboard_file_name(name: &str) -> bool {
    name.strip_suffix(".obao")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Writes `bytes` to `path` via a temporary file in `dir`, fsync, rename, and
/// a directory fsync, so `path` is either absent or complete.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
        f.sync_all().map_err(StoreError::io("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(StoreError::io("rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("sync the folder", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
