//! The SQLite database: the one place that owns SQL.
//!
//! WAL mode, foreign keys on, a busy timeout. The schema is a list of numbered
//! migrations (`migrations/NNNN_*.sql`) applied in order, each in its own
//! transaction, with `PRAGMA user_version` recording how many ran, so each runs
//! exactly once per database.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use shoal_core::{ContentId, Kind};

use crate::error::StoreError;

/// The schema migrations, in order; `user_version` = how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_share_mtime.sql"),
    include_str!("../migrations/0003_access.sql"),
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Most results [`Db::search`] returns.
pub const MAX_SEARCH_RESULTS: u32 = 1000;

/// Who may see and fetch a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Announced and searchable by anyone.
    Public,
    /// Fetchable by anyone holding its ticket, never announced.
    Unlisted,
    /// Only for allowed peers or capability holders.
    Private,
}

impl Visibility {
    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
        }
    }
}

impl std::fmt::Display for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Visibility::Public),
            "unlisted" => Ok(Visibility::Unlisted),
            "private" => Ok(Visibility::Private),
            _ => Err(format!(
                "unknown visibility {s:?}: use public, unlisted or private"
            )),
        }
    }
}

/// A shared file or folder, served in place from `path`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    /// Content id (file hash or collection id).
    pub id: ContentId,
    /// File or collection.
    pub kind: Kind,
    /// Display name.
    pub name: String,
    /// Canonical path of the shared file or folder (serialized lossily as UTF-8,
    /// so a listing never fails on an odd file name).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Total size in bytes.
    pub size: u64,
    /// Number of files (1 for a file share).
    pub files: u64,
    /// Who may see and fetch it.
    pub visibility: Visibility,
    /// When it was added, in Unix seconds.
    pub added_at: i64,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// One file of a collection share.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShareFile {
    /// Path relative to the share's folder, '/'-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Content id.
    pub id: ContentId,
    /// Modification time when hashed, in nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i64>,
}

/// Where the outboard of a content is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboardRecord {
    /// Content id.
    pub id: ContentId,
    /// Piece size in bytes.
    pub piece_size: u32,
    /// Content length in bytes.
    pub size: u64,
    /// File name under the data directory's `outboards/`, or `None` for a content
    /// of at most one piece (its outboard follows from its id).
    pub file: Option<String>,
}

/// A search result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SearchHit {
    /// The share the hit belongs to.
    pub share: ContentId,
    /// That share's name.
    pub share_name: String,
    /// That share's kind.
    pub share_kind: Kind,
    /// That share's visibility (remote search must only show public shares).
    pub visibility: Visibility,
    /// For a file inside a collection, its path; `None` when the share's name
    /// matched.
    pub path: Option<String>,
    /// The id of what matched: the file's id, or the share's id.
    pub id: ContentId,
    /// The size of what matched.
    pub size: u64,
}

/// State of a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadState {
    Active,
    Paused,
    Complete,
    Failed,
}

impl DownloadState {
    fn as_str(self) -> &'static str {
        match self {
            DownloadState::Active => "active",
            DownloadState::Paused => "paused",
            DownloadState::Complete => "complete",
            DownloadState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => DownloadState::Active,
            "paused" => DownloadState::Paused,
            "complete" => DownloadState::Complete,
            "failed" => DownloadState::Failed,
            _ => return None,
        })
    }
}

/// A download's persisted record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// Row id, stable for the download's life.
    pub key: i64,
    /// Content id.
    pub id: ContentId,
    /// File or collection.
    pub kind: Kind,
    /// Final destination.
    pub dest: PathBuf,
    /// Partial file.
    pub part: PathBuf,
    /// Piece size.
    pub piece_size: u32,
    /// Content length.
    pub length: u64,
    /// One bit per piece, most significant bit first; set = verified and durable.
    pub bitfield: Vec<u8>,
    /// State.
    pub state: DownloadState,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Last updated, Unix seconds.
    pub updated_at: i64,
}

/// A peer seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerRecord {
    /// Peer id (base58).
    pub peer_id: String,
    /// Known multiaddrs.
    pub addrs: Vec<String>,
    /// Last seen, Unix seconds.
    pub last_seen: i64,
}

/// A new share to record with its files and outboards, in one transaction.
#[derive(Clone, Debug)]
pub struct NewShare<'a> {
    pub share: &'a Share,
    /// The collection's manifest encoding (None for a file).
    pub manifest: Option<&'a [u8]>,
    pub files: &'a [ShareFile],
    pub outboards: &'a [OutboardRecord],
    /// A single file's modification time when hashed (see [`ShareFile::mtime_ns`]).
    pub mtime_ns: Option<i64>,
}

/// A file as an earlier share recorded it (see [`Db::indexed_files`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedFile {
    /// Size in bytes when hashed.
    pub size: u64,
    /// Modification time when hashed; only records that have one are returned.
    pub mtime_ns: i64,
    /// Content id.
    pub id: ContentId,
}

/// The database handle. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn bytes_path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&b))
}

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

pub(crate) fn id_from(bytes: Vec<u8>) -> Result<ContentId, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| corrupt("a content id is not 32 bytes"))?;
    Ok(ContentId::from_bytes(arr))
}

pub(crate) fn kind_from(s: &str) -> Result<Kind, StoreError> {
    match s {
        "file" => Ok(Kind::File),
        "collection" => Ok(Kind::Collection),
        _ => Err(corrupt(format!("unknown kind {s:?}"))),
    }
}

/// How the database writes a kind (unchanged since its first version,
/// whatever users are shown).
pub(crate) fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Collection => "collection",
    }
}

fn u64_from(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what}")))
}

fn i64_from(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt("a size does not fit in the database"))
}

/// The raw columns of a share row, converted after the query.
type ShareRow = (Vec<u8>, String, String, Vec<u8>, i64, i64, String, i64);

const SHARE_COLUMNS: &str = "id, kind, name, path, size, files, visibility, added_at";

fn share_row(r: &Row<'_>) -> rusqlite::Result<ShareRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn share_from(row: ShareRow) -> Result<Share, StoreError> {
    let (id, kind, name, path, size, files, vis, added_at) = row;
    Ok(Share {
        id: id_from(id)?,
        kind: kind_from(&kind)?,
        name,
        path: bytes_path(path),
        size: u64_from(size, "size")?,
        files: u64_from(files, "file count")?,
        visibility: vis.parse().map_err(corrupt)?,
        added_at,
    })
}

/// Builds a safe FTS5 query: every whitespace-separated term becomes a quoted
/// prefix phrase (`"term"*`), so no user text is read as FTS5 syntax. Terms with
/// no letter or digit are dropped (they would match nothing). `None` if nothing
/// is left to search for.
pub fn fts_query(input: &str) -> Option<String> {
    let terms: Vec<String> = input
        .split_whitespace()
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .take(32)
        .map(|t| format!("\"{}\"*", t.replace('"', "\"\"")))
        .collect();
    if terms.is_empty() {
        None
    } else {
        Some(terms.join(" "))
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up
    /// to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Db {
            action: "open the database",
            source,
        })?;
        Self::setup(conn, path.to_path_buf())
    }

    /// An in-memory database (for tests and tools).
    pub fn open_in_memory() -> Result<Db, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::db("open the database"))?;
        Self::setup(conn, PathBuf::from(":memory:"))
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Db, StoreError> {
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(StoreError::db("set the busy timeout"))?;
        // journal_mode returns the resulting mode as a row.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(StoreError::db("enable WAL mode"))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(StoreError::db("set the database options"))?;
        migrate(&mut conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (every
        // change is in a transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(StoreError::db("read the schema version"))
    }

    /// Records a share with its files and outboards, atomically. Returns `false`
    /// (and changes nothing) if a share with that id already exists.
    pub fn insert_share(&self, new: &NewShare<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(StoreError::db("begin a transaction"))?;
        let s = new.share;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO shares (id, kind, name, path, size, files, visibility, added_at, manifest, mtime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    s.id.as_bytes().as_slice(),
                    kind_str(s.kind),
                    s.name,
                    path_bytes(&s.path),
                    i64_from(s.size)?,
                    i64_from(s.files)?,
                    s.visibility.as_str(),
                    s.added_at,
                    new.manifest,
                    new.mtime_ns,
                ],
            )
            .map_err(StoreError::db("record a share"))?;
        if inserted == 0 {
            return Ok(false);
        }
        let pk = tx.last_insert_rowid();
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO share_files (share, path, size, id, mtime_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(StoreError::db("record a share's files"))?;
            for f in new.files {
                ins.execute(params![
                    pk,
                    f.path,
                    i64_from(f.size)?,
                    f.id.as_bytes().as_slice(),
                    f.mtime_ns
                ])
                .map_err(StoreError::db("record a share's files"))?;
            }
            let mut ob = tx
                .prepare(
                    "INSERT OR IGNORE INTO outboards (id, piece_size, size, file) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(StoreError::db("record outboards"))?;
            for o in new.outboards {
                ob.execute(params![
                    o.id.as_bytes().as_slice(),
                    o.piece_size,
                    i64_from(o.size)?,
                    o.file
                ])
                .map_err(StoreError::db("record outboards"))?;
            }
        }
        tx.commit().map_err(StoreError::db("commit a new share"))?;
        Ok(true)
    }

    /// The share with this id.
    pub fn share(&self, id: &ContentId) -> Result<Option<Share>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {SHARE_COLUMNS} FROM shares WHERE id = ?1"),
                [id.as_bytes().as_slice()],
                share_row,
            )
            .optional()
            .map_err(StoreError::db("look up a share"))?;
        row.map(share_from).transpose()
    }

    /// Every share, oldest first.
    pub fn shares(&self) -> Result<Vec<Share>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SHARE_COLUMNS} FROM shares ORDER BY added_at, pk"
            ))
            .map_err(StoreError::db("list shares"))?;
        let rows = stmt
            .query_map([], share_row)
            .map_err(StoreError::db("list shares"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list shares"))?;
        rows.into_iter().map(share_from).collect()
    }

    /// Records the modification times found when the content of share `id` was
    /// hashed again and came out the same: `file` for a single-file share,
    /// `files` (path in the folder, time) for a collection's files, so that the
    /// next add of the same path can skip them.
    pub fn refresh_mtimes(
        &self,
        id: &ContentId,
        file: Option<i64>,
        files: &[(&str, Option<i64>)],
    ) -> Result<(), StoreError> {
        let what = "record the modification times of a share";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::db(what))?;
        let key = id.as_bytes().as_slice();
        tx.execute(
            "UPDATE shares SET mtime_ns = ?2 WHERE id = ?1 AND kind = 'file'",
            params![key, file],
        )
        .map_err(StoreError::db(what))?;
        {
            let mut upd = tx
                .prepare(
                    "UPDATE share_files SET mtime_ns = ?3
                     WHERE share = (SELECT pk FROM shares WHERE id = ?1) AND path = ?2",
                )
                .map_err(StoreError::db(what))?;
            for (path, mtime) in files {
                upd.execute(params![key, path, mtime])
                    .map_err(StoreError::db(what))?;
            }
        }
        tx.commit().map_err(StoreError::db(what))
    }

    /// Every file that the shares of `path` (a file or a folder, as recorded)
    /// hashed with a known modification time, by absolute path; where several
    /// shares of the same path name a file, the newest share's record wins.
    pub fn indexed_files(&self, path: &Path) -> Result<HashMap<PathBuf, IndexedFile>, StoreError> {
        let what = "look up earlier shares of a path";
        let conn = self.conn();
        // A single-file share's own row (no path inside), then every file of the
        // folder shares; oldest share first, so the newest record is kept.
        let mut stmt = conn
            .prepare(
                "SELECT NULL, s.size, s.id, s.mtime_ns, s.added_at, s.pk FROM shares s
                 WHERE s.path = ?1 AND s.kind = 'file' AND s.mtime_ns IS NOT NULL
                 UNION ALL
                 SELECT f.path, f.size, f.id, f.mtime_ns, s.added_at, s.pk
                 FROM share_files f JOIN shares s ON s.pk = f.share
                 WHERE s.path = ?1 AND f.mtime_ns IS NOT NULL
                 ORDER BY 5, 6",
            )
            .map_err(StoreError::db(what))?;
        let rows = stmt
            .query_map([path_bytes(path)], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(StoreError::db(what))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db(what))?;
        let mut out = HashMap::with_capacity(rows.len());
        for (rel, size, id, mtime_ns) in rows {
            let file = IndexedFile {
                size: u64_from(size, "size")?,
                mtime_ns,
                id: id_from(id)?,
            };
            out.insert(
                rel.map_or_else(|| path.to_path_buf(), |r| path.join(r)),
                file,
            );
        }
        Ok(out)
    }

    /// The files of a collection share, sorted by path (empty for a file share or
    /// an unknown id).
    pub fn share_files(&self, id: &ContentId) -> Result<Vec<ShareFile>, StoreError> {
        Ok(self.share_files_page(id, 0, u64::MAX)?.2)
    }

    /// Files `offset..offset + limit` of a collection share, sorted by path,
    /// with the number of files and their total size.
    pub fn share_files_page(
        &self,
        id: &ContentId,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, u64, Vec<ShareFile>), StoreError> {
        let conn = self.conn();
        let (count, bytes) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(f.size), 0) FROM share_files f
                 JOIN shares s ON s.pk = f.share WHERE s.id = ?1",
                [id.as_bytes().as_slice()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map_err(StoreError::db("count a share's files"))?;
        let mut stmt = conn
            .prepare(
                "SELECT f.path, f.size, f.id, f.mtime_ns FROM share_files f
                 JOIN shares s ON s.pk = f.share WHERE s.id = ?1
                 ORDER BY f.path LIMIT ?2 OFFSET ?3",
            )
            .map_err(StoreError::db("list a share's files"))?;
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![id.as_bytes().as_slice(), clamp(limit), clamp(offset)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .map_err(StoreError::db("list a share's files"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list a share's files"))?;
        let files = rows
            .into_iter()
            .map(|(path, size, id, mtime_ns)| {
                Ok(ShareFile {
                    path,
                    size: u64_from(size, "size")?,
                    id: id_from(id)?,
                    mtime_ns,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((u64_from(count, "count")?, u64_from(bytes, "size")?, files))
    }

    /// The manifest encoding of a collection share.
    pub fn manifest(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .query_row(
                "SELECT manifest FROM shares WHERE id = ?1",
                [id.as_bytes().as_slice()],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(StoreError::db("read a manifest"))
    }

    /// Changes a share's visibility; `false` if there is no such share.
    pub fn set_visibility(&self, id: &ContentId, v: Visibility) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE shares SET visibility = ?2 WHERE id = ?1",
                params![id.as_bytes().as_slice(), v.as_str()],
            )
            .map_err(StoreError::db("change a share's visibility"))?;
        Ok(n > 0)
    }

    /// Removes a share and its files from the index, and the outboard records no
    /// share, share file or download refers to any more. Returns `None` if there
    /// was no such share, else the outboard files to delete. Never touches the
    /// shared files themselves.
    pub fn remove_share(&self, id: &ContentId) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(StoreError::db("begin a transaction"))?;
        let n = tx
            .execute(
                "DELETE FROM shares WHERE id = ?1",
                [id.as_bytes().as_slice()],
            )
            .map_err(StoreError::db("remove a share"))?;
        if n == 0 {
            return Ok(None);
        }
        const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM shares s WHERE s.id = o.id)
               AND NOT EXISTS (SELECT 1 FROM share_files f WHERE f.id = o.id)
               AND NOT EXISTS (SELECT 1 FROM downloads d WHERE d.id = o.id)";
        let files = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT o.file FROM outboards o WHERE o.file IS NOT NULL AND {UNREFERENCED}"
                ))
                .map_err(StoreError::db("find unused outboards"))?;
            let files = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(StoreError::db("find unused outboards"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::db("find unused outboards"))?;
            files
        };
        tx.execute(
            &format!("DELETE FROM outboards AS o WHERE {UNREFERENCED}"),
            [],
        )
        .map_err(StoreError::db("remove unused outboards"))?;
        tx.commit().map_err(StoreError::db("commit a removal"))?;
        Ok(Some(files))
    }

    /// Records an outboard (no-op if one is already recorded for that id).
    pub fn insert_outboard(&self, o: &OutboardRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO outboards (id, piece_size, size, file) VALUES (?1, ?2, ?3, ?4)",
                params![o.id.as_bytes().as_slice(), o.piece_size, i64_from(o.size)?, o.file],
            )
            .map_err(StoreError::db("record an outboard"))?;
        Ok(())
    }

    /// The outboard record of a content.
    pub fn outboard(&self, id: &ContentId) -> Result<Option<OutboardRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT piece_size, size, file FROM outboards WHERE id = ?1",
                [id.as_bytes().as_slice()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(StoreError::db("look up an outboard"))?;
        row.map(|(ps, size, file)| {
            Ok(OutboardRecord {
                id: *id,
                piece_size: u32::try_from(ps).map_err(|_| corrupt("bad piece size"))?,
                size: u64_from(size, "size")?,
                file,
            })
        })
        .transpose()
    }

    /// Where the bytes of content `id` can be read: the path of a file share with
    /// that id, or of a file inside a collection share. `None` if not shared.
    pub fn source_of(&self, id: &ContentId) -> Result<Option<PathBuf>, StoreError> {
        let conn = self.conn();
        let direct: Option<Vec<u8>> = conn
            .query_row(
                "SELECT path FROM shares WHERE id = ?1 AND kind = 'file'",
                [id.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("look up a file"))?;
        if let Some(p) = direct {
            return Ok(Some(bytes_path(p)));
        }
        let inner: Option<(Vec<u8>, String)> = conn
            .query_row(
                "SELECT s.path, f.path FROM share_files f JOIN shares s ON s.pk = f.share
                 WHERE f.id = ?1 ORDER BY s.pk LIMIT 1",
                [id.as_bytes().as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::db("look up a file"))?;
        Ok(inner.map(|(root, rel)| {
            let mut p = bytes_path(root);
            p.extend(rel.split('/'));
            p
        }))
    }

    /// The most open visibility among the shares that hold content `id` (as the
    /// share itself or as a file inside a shared folder), or `None` if no share
    /// holds it. The uploader serves `id` to an unknown peer only if this is
    /// public or unlisted: a private share must never leak through another path.
    pub fn visibility_of(&self, id: &ContentId) -> Result<Option<Visibility>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT visibility FROM shares WHERE id = ?1
                 UNION
                 SELECT s.visibility FROM share_files f JOIN shares s ON s.pk = f.share
                 WHERE f.id = ?1",
            )
            .map_err(StoreError::db("look up a share's visibility"))?;
        let rows = stmt
            .query_map([id.as_bytes().as_slice()], |r| r.get::<_, String>(0))
            .map_err(StoreError::db("look up a share's visibility"))?;
        let mut best: Option<Visibility> = None;
        for row in rows {
            let text = row.map_err(StoreError::db("look up a share's visibility"))?;
            let v: Visibility = text.parse().map_err(|e: String| StoreError::Corrupt {
                what: format!("the visibility of a share of {id}: {e}"),
            })?;
            let rank = |v: Visibility| match v {
                Visibility::Public => 0,
                Visibility::Unlisted => 1,
                Visibility::Private => 2,
            };
            if best.is_none_or(|b| rank(v) < rank(b)) {
                best = Some(v);
            }
        }
        Ok(best)
    }

    /// Full-text search over share names and file paths. Any input is safe: it is
    /// turned into quoted prefix terms that must all match (see [`fts_query`]).
    /// At most `limit` hits (capped at [`MAX_SEARCH_RESULTS`]), best first.
    pub fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, StoreError> {
        let Some(q) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(MAX_SEARCH_RESULTS);
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT s.id, s.name, s.kind, s.visibility, NULL, s.id, s.size, i.rank
                   FROM search_index i JOIN shares s ON s.pk = -i.rowid
                  WHERE search_index MATCH ?1 AND i.rowid < 0
                 UNION ALL
                 SELECT s.id, s.name, s.kind, s.visibility, f.path, f.id, f.size, i.rank
                   FROM search_index i JOIN share_files f ON f.pk = i.rowid
                   JOIN shares s ON s.pk = f.share
                  WHERE search_index MATCH ?1 AND i.rowid > 0
                 ORDER BY 8 LIMIT ?2",
            )
            .map_err(StoreError::db("search"))?;
        let rows = stmt
            .query_map(params![q, limit], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(StoreError::db("search"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("search"))?;
        rows.into_iter()
            .map(|(share, name, kind, vis, path, id, size)| {
                Ok(SearchHit {
                    share: id_from(share)?,
                    share_name: name,
                    share_kind: kind_from(&kind)?,
                    visibility: vis.parse().map_err(corrupt)?,
                    path,
                    id: id_from(id)?,
                    size: u64_from(size, "size")?,
                })
            })
            .collect()
    }

    /// The download whose partial file is `part`.
    pub fn download_by_part(&self, part: &Path) -> Result<Option<Download>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT pk, id, kind, dest, part, piece_size, length, bitfield, state, created_at, updated_at
                 FROM downloads WHERE part = ?1",
                [path_bytes(part)],
                download_row,
            )
            .optional()
            .map_err(StoreError::db("look up a download"))?;
        row.map(download_from).transpose()
    }

    /// Every download, oldest first.
    pub fn downloads(&self) -> Result<Vec<Download>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT pk, id, kind, dest, part, piece_size, length, bitfield, state, created_at, updated_at
                 FROM downloads ORDER BY pk",
            )
            .map_err(StoreError::db("list downloads"))?;
        let rows = stmt
            .query_map([], download_row)
            .map_err(StoreError::db("list downloads"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list downloads"))?;
        rows.into_iter().map(download_from).collect()
    }

    /// Creates a download record, or resets the one for the same partial file to
    /// this content with an empty bitfield. Returns its key.
    #[allow(clippy::too_many_arguments)]
    pub fn start_download(
        &self,
        id: &ContentId,
        kind: Kind,
        dest: &Path,
        part: &Path,
        piece_size: u32,
        length: u64,
        bitfield: &[u8],
    ) -> Result<i64, StoreError> {
        let now = now_secs();
        self.conn()
            .query_row(
                "INSERT INTO downloads (id, kind, dest, part, piece_size, length, bitfield, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?8)
                 ON CONFLICT (part) DO UPDATE SET id = ?1, kind = ?2, dest = ?3, piece_size = ?5,
                    length = ?6, bitfield = ?7, state = 'active', created_at = ?8, updated_at = ?8
                 RETURNING pk",
                params![
                    id.as_bytes().as_slice(),
                    kind_str(kind),
                    path_bytes(dest),
                    path_bytes(part),
                    piece_size,
                    i64_from(length)?,
                    bitfield,
                    now
                ],
                |r| r.get(0),
            )
            .map_err(StoreError::db("record a download"))
    }

    /// Persists a download's bitfield.
    pub fn set_download_bitfield(&self, key: i64, bitfield: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE downloads SET bitfield = ?2, updated_at = ?3 WHERE pk = ?1",
                params![key, bitfield, now_secs()],
            )
            .map_err(StoreError::db("save a download's progress"))?;
        Ok(())
    }

    /// Sets a download's state.
    pub fn set_download_state(&self, key: i64, state: DownloadState) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE downloads SET state = ?2, updated_at = ?3 WHERE pk = ?1",
                params![key, state.as_str(), now_secs()],
            )
            .map_err(StoreError::db("update a download"))?;
        Ok(())
    }

    /// Forgets a download (its files are left alone).
    pub fn remove_download(&self, key: i64) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM downloads WHERE pk = ?1", [key])
            .map_err(StoreError::db("remove a download"))?;
        Ok(n > 0)
    }

    /// Records that a peer was seen at `last_seen` with these addresses.
    pub fn upsert_peer(
        &self,
        peer_id: &str,
        addrs: &[String],
        last_seen: i64,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO peers (peer_id, addrs, last_seen) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer_id) DO UPDATE SET addrs = ?2, last_seen = max(last_seen, ?3)",
                params![peer_id, addrs.join("\n"), last_seen],
            )
            .map_err(StoreError::db("record a peer"))?;
        Ok(())
    }

    /// Every known peer, most recently seen first.
    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT peer_id, addrs, last_seen FROM peers ORDER BY last_seen DESC")
            .map_err(StoreError::db("list peers"))?;
        let rows = stmt
            .query_map([], |r| {
                let addrs: String = r.get(1)?;
                Ok(PeerRecord {
                    peer_id: r.get(0)?,
                    addrs: addrs
                        .split('\n')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string)
                        .collect(),
                    last_seen: r.get(2)?,
                })
            })
            .map_err(StoreError::db("list peers"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list peers"))?;
        Ok(rows)
    }
}

type DownloadRow = (
    i64,
    Vec<u8>,
    String,
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    Vec<u8>,
    String,
    i64,
    i64,
);

fn download_row(r: &Row<'_>) -> rusqlite::Result<DownloadRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn download_from(row: DownloadRow) -> Result<Download, StoreError> {
    let (key, id, kind, dest, part, ps, length, bitfield, state, created_at, updated_at) = row;
    Ok(Download {
        key,
        id: id_from(id)?,
        kind: kind_from(&kind)?,
        dest: bytes_path(dest),
        part: bytes_path(part),
        piece_size: u32::try_from(ps).map_err(|_| corrupt("bad piece size"))?,
        length: u64_from(length, "length")?,
        bitfield,
        state: DownloadState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown download state {state:?}")))?,
        created_at,
        updated_at,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::db("read the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn
            .transaction()
            .map_err(StoreError::db("begin a migration"))?;
        tx.execute_batch(sql)
            .map_err(StoreError::db("migrate the database schema"))?;
        // user_version lives in the database header and is transactional, so the
        // migration and its record commit together.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(StoreError::db("record the schema version"))?;
        tx.commit().map_err(StoreError::db("commit a migration"))?;
    }
    Ok(())
}
