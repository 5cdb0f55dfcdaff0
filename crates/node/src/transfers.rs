//! Managed transfers: downloads a host keeps, pauses, resumes and cancels on
//! request (the daemon's `/api/v1/transfers`), each driven by a watcher task
//! that owns its [`crate::DownloadHandle`], publishes [`TransferEvent`]s and
//! keeps the content served after it completes (state "seeding").
//!
//! Persisted in a state file (the daemon's is `<data-dir>/daemon/transfers.json`;
//! temp file + fsync + rename) on every state change, so they survive a restart: on start, transfers that
//! were not paused, failed or finished are fetched again, which resumes from
//! the partial files. A transfer that finished before the restart is shown as
//! "completed" (kept on disk, not served) since the node only serves shares and
//! running downloads.
//!
//! Locking: `Transfers::entries` (a std mutex) is never held across an await.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shoal_core::manifest::Manifest;
use shoal_core::ticket::Target;
use shoal_core::{ContentId, Kind, Provider, Ticket};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::host::{announces, destination, Host, NetConnector};
use crate::Progress;

/// Why a managed-transfer operation failed. The daemon maps these to HTTP
/// statuses; nothing here knows HTTP.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No transfer with this id.
    #[error("no transfer with id {0}; GET /api/v1/transfers lists them")]
    NotFound(ContentId),
    /// The request collides with another transfer, or the limit of transfers.
    #[error("{0}")]
    Conflict(String),
    /// The state file cannot be read.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("{} is not valid: {message}; fix or remove it", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// The transfer is of a file: it has no list of files.
    #[error("transfer {0} is a file, not a folder: it has no list of files")]
    NotAFolder(ContentId),
    /// A request field is not acceptable (`field` names it).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the managed transfers report, in order.
#[derive(Debug, Clone)]
pub enum TransferEvent {
    /// A transfer was added or changed (state, progress, limit).
    Changed(Box<Transfer>),
    /// A transfer was cancelled and forgotten (its id, hex).
    Removed(String),
    /// A transfer failed: why, and its id (hex).
    Failed {
        message: Option<String>,
        transfer: String,
    },
}

/// Most transfers a daemon keeps (bounds memory and the state file).
pub const MAX_TRANSFERS: usize = 10_000;
/// `transfer` events while a transfer moves: at most this often.
const EVENT_EVERY: Duration = Duration::from_millis(500);
/// Commands queued to a watcher task.
const CMD_QUEUE: usize = 8;

/// The state of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Started, waiting for the first peer.
    Queued,
    Downloading,
    /// Stopped by the user; progress is kept on disk.
    Paused,
    /// Complete and still served to other peers.
    Seeding,
    /// Complete, kept on disk, not served.
    Completed,
    Failed,
}

impl TransferState {
    /// Every state, for metrics.
    pub const ALL: [TransferState; 6] = [
        TransferState::Queued,
        TransferState::Downloading,
        TransferState::Paused,
        TransferState::Seeding,
        TransferState::Completed,
        TransferState::Failed,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Queued => "queued",
            TransferState::Downloading => "downloading",
            TransferState::Paused => "paused",
            TransferState::Seeding => "seeding",
            TransferState::Completed => "completed",
            TransferState::Failed => "failed",
        }
    }
}

/// File or folder ("collection", the word of earlier versions, is still read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    File,
    #[serde(rename = "folder", alias = "collection")]
    Collection,
}

impl From<Kind> for ContentKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Collection => ContentKind::Collection,
            _ => ContentKind::File,
        }
    }
}

impl From<ContentKind> for Kind {
    fn from(k: ContentKind) -> Self {
        match k {
            ContentKind::Collection => Kind::Collection,
            ContentKind::File => Kind::File,
        }
    }
}

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// A direct connection (libp2p).
    Direct,
    /// Through a relay.
    Relayed,
    /// A direct TCP + TLS stream of shoal's own (the fast path).
    Fast,
}

impl PathKind {
    /// The path named by `shoal_net::PathKind`'s text ("fast", "direct", "relayed").
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fast" => Some(Self::Fast),
            "direct" => Some(Self::Direct),
            "relayed" => Some(Self::Relayed),
            _ => None,
        }
    }
}

/// A peer this host is connected to or transfers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerView {
    pub peer_id: String,
    /// Multiaddrs of the open connections.
    pub addresses: Vec<String>,
    pub path: PathKind,
    pub down_rate: f64,
    pub up_rate: f64,
    /// Ids of the transfers the peer takes part in.
    pub transfers: Vec<String>,
    /// Ids of the shares it is downloading from this peer now.
    pub shares: Vec<String>,
}

/// One peer's part in a transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferPeer {
    pub peer_id: String,
    pub path: PathKind,
    pub connected: bool,
    /// Verified bytes received from the peer.
    pub downloaded: u64,
    /// Bytes sent to the peer.
    pub uploaded: u64,
    /// Bytes per second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// Banned for this content: it sent pieces that failed verification.
    pub banned: bool,
    /// The address its stream came from, when it connected to us.
    pub address: Option<String>,
    /// The share of the content it told us it holds (0..1), once known.
    pub progress: Option<f64>,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transfer {
    /// The content id (hex), also the transfer's id.
    pub id: String,
    /// The file or folder name given when the transfer was added, if any.
    pub name: Option<String>,
    pub kind: ContentKind,
    /// The folder the content is downloaded into.
    pub output: String,
    pub state: TransferState,
    /// The content's length, once known.
    pub total_bytes: Option<u64>,
    /// Verified bytes present.
    pub done_bytes: u64,
    /// 0..1.
    pub progress: f64,
    /// Bytes per second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// Seconds left at the current rate, if it can be estimated.
    pub eta_s: Option<f64>,
    pub peers: Vec<TransferPeer>,
    /// This transfer's download limit, bytes per second; null = unlimited.
    pub download_limit: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Received pieces that failed verification this run (discarded and
    /// fetched again; their senders are banned).
    pub pieces_failed: u64,
    /// When it was added, Unix seconds.
    pub added_at: u64,
    /// Piece bytes sent to other peers, over every run (kept across restarts).
    pub uploaded_bytes: u64,
    /// `uploaded_bytes` / the content's length (how many copies it has given
    /// back), once the length is known.
    pub ratio: Option<f64>,
    /// Seconds it has seeded since it completed (over restarts).
    pub seeded_s: u64,
    /// Why it stopped seeding by itself (a seed limit), if it did.
    pub note: Option<String>,
    /// A ticket naming this peer for the content (it serves what it holds),
    /// to give to others; it carries no invite.
    pub ticket: String,
    /// Of a folder: only the files matching one of these globs are fetched
    /// (empty: all).
    pub only: Vec<String>,
    /// Of a folder: the files matching one of these globs are left out.
    pub exclude: Vec<String>,
    /// While it runs and no peer answers: what it is doing ("looking for
    /// peers: 2 known, 5 connection attempts; last failure: …").
    pub searching: Option<String>,
    /// Grows with every view of any transfer this daemon makes (it starts
    /// from the daemon's start time in microseconds, so it grows across
    /// restarts): of two views of one transfer, the one with the higher
    /// revision is the newer (an action's response may reach a client after a
    /// later event).
    pub revision: u64,
}

/// The most files one page of a folder's file list holds.
pub const MAX_FILES_PAGE: usize = 1000;

/// One file of a folder and how much of it is here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileProgress {
    /// Path inside the folder, '/'-separated.
    pub path: String,
    pub size: u64,
    /// The file's own content id (hex): what `b3sum` prints for it.
    pub id: String,
    /// Verified bytes of it present.
    pub done_bytes: u64,
    /// Whether it is fetched (false: left out by the transfer's `only` /
    /// `exclude`; never created).
    pub chosen: bool,
    /// Of a chosen file: skip (not fetched; never created unless it was
    /// here already), normal, or high (fetched before the normal ones).
    pub priority: crate::FilePriority,
}

/// A page of a folder's files, in the folder's (byte) order of paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileList {
    /// Whether the list is known: a download learns it from the folder's
    /// manifest, the first thing it fetches.
    pub known: bool,
    /// Files in the folder.
    pub total_files: u64,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// Index of the first file of this page.
    pub offset: u64,
    pub files: Vec<FileProgress>,
    /// The folder's empty folders (paths, in byte order), listed on the
    /// first page (offset 0) only, at most [`MAX_LISTED_EMPTY_FOLDERS`].
    #[serde(default)]
    pub empty_folders: Vec<String>,
    /// How many empty folders the folder has (on the first page only, with
    /// the list; 0 on later pages).
    #[serde(default)]
    pub total_empty_folders: u64,
}

/// Most empty folders one [`FileList`] names.
pub const MAX_LISTED_EMPTY_FOLDERS: usize = 1000;

impl FileList {
    /// A page of `manifest`'s list: `files` from `offset`, its empty
    /// folders (and their count) on the first page.
    pub fn of(manifest: &Manifest, offset: u64, files: Vec<FileProgress>) -> FileList {
        let first = offset == 0;
        FileList {
            known: true,
            total_files: manifest.len() as u64,
            total_bytes: manifest.total_size(),
            offset,
            files,
            empty_folders: manifest
                .empty_folders()
                .take(if first { MAX_LISTED_EMPTY_FOLDERS } else { 0 })
                .map(str::to_owned)
                .collect(),
            total_empty_folders: if first {
                manifest.empty_folder_count() as u64
            } else {
                0
            },
        }
    }
}

/// What is persisted of a transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: ContentId,
    kind: ContentKind,
    name: Option<String>,
    output: PathBuf,
    /// The ticket it was added with (its providers are dialed), if any.
    ticket: Option<String>,
    download_limit: Option<u64>,
    added_at: u64,
    state: TransferState,
    total_bytes: Option<u64>,
    done_bytes: u64,
    error: Option<String>,
    /// Piece bytes sent in runs before the current one.
    #[serde(default)]
    uploaded: u64,
    /// Seconds seeded before the current seeding spell.
    #[serde(default)]
    seeded_s: u64,
    /// The user told it to seed again after it completed: no seed limit
    /// stops it.
    #[serde(default)]
    seed_by_hand: bool,
    /// Why it stopped seeding by itself, shown until it seeds again.
    #[serde(default)]
    note: Option<String>,
    /// Of a folder: the globs choosing its files (`FileChoice`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    only: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    /// Of a folder: the files whose priority is not normal, by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    priorities: BTreeMap<String, crate::FilePriority>,
}

impl Record {
    /// The files of a folder it fetches (`only`/`exclude`), if it chooses.
    /// The globs were checked when the transfer was added; a state file
    /// edited by hand with a bad glob fetches the whole folder rather than
    /// fail.
    fn choice(&self) -> Option<crate::FileChoice> {
        if self.only.is_empty() && self.exclude.is_empty() {
            return None;
        }
        crate::FileChoice::new(&self.only, &self.exclude).ok()
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    transfers: Vec<Record>,
}

/// How long one wait for a first provider lasts before commands are looked at again.
const FIND_WAIT: Duration = Duration::from_secs(1);

/// What a watcher needs to start a download.
struct Job {
    kind: Kind,
    out: PathBuf,
    name: Option<String>,
    limit: Option<u64>,
    conn: Arc<NetConnector>,
    capability: Option<Vec<u8>>,
    /// Of a folder: the files chosen, and those whose priority is not normal.
    choice: Option<Arc<crate::FileChoice>>,
    priorities: BTreeMap<String, crate::FilePriority>,
    /// The length of a file this transfer completed before: if the file is
    /// still there, it is seeded again without waiting for a provider.
    completed_len: Option<u64>,
}

enum Cmd {
    Stop(oneshot::Sender<()>),
    SetLimit(Option<u64>),
    SetPriority(Vec<String>, crate::FilePriority),
}

struct Entry {
    rec: Record,
    last: Option<Progress>,
    conn: Option<Arc<NetConnector>>,
    cmds: Option<mpsc::Sender<Cmd>>,
    /// Bumped when a watcher is started, so a stale watcher's updates are ignored.
    generation: u64,
    /// Since when it seeds in this run (its earlier seeding is `rec.seeded_s`).
    seeding_since: Option<Instant>,
}

/// What a new transfer is made from.
#[derive(Debug, Clone)]
pub struct NewTransfer {
    pub id: ContentId,
    pub kind: Kind,
    pub providers: Vec<Provider>,
    pub output: PathBuf,
    pub name: Option<String>,
    pub download_limit: Option<u64>,
    /// The ticket's invite, presented to every provider.
    pub capability: Option<Vec<u8>>,
    /// Of a folder: only the files matching one of these globs (none: all).
    pub only: Vec<String>,
    /// Of a folder: not the files matching one of these globs.
    pub exclude: Vec<String>,
}

impl NewTransfer {
    /// Parses a ticket (`shoal1…`) or a content id (64 hex digits), with the
    /// content's kind: the ticket's, or for an id only what the local store
    /// knows, else a file.
    pub fn parse_target(s: &str, peer: &Host) -> Result<(Target, Kind), String> {
        let t: Target = s.parse()?;
        let kind = peer.kind_of(&t.id, t.kind);
        Ok((t, kind))
    }
}

/// The managed transfers of a host.
pub struct Transfers {
    /// What the watchers use of the host (not the host itself: the host owns
    /// the transfers).
    store: shoal_store::Store,
    node: Arc<crate::TransferService>,
    net: shoal_net::Net,
    entries: Mutex<BTreeMap<ContentId, Entry>>,
    file: PathBuf,
    events: broadcast::Sender<TransferEvent>,
    /// Serializes writes of the state file.
    save_lock: Mutex<()>,
    next_generation: std::sync::atomic::AtomicU64,
    /// The last [`Transfer::revision`] given out.
    revision: std::sync::atomic::AtomicU64,
    /// When a completed download stops seeding (see [`SeedLimits`]).
    seed_limits: Mutex<SeedLimits>,
    /// The folders' manifests last read for [`Transfers::files`], oldest first.
    manifests: Mutex<Vec<(ContentId, Arc<Manifest>)>>,
}

/// How many decoded manifests [`Transfers::files`] keeps (a manifest can be
/// large: a folder of a million files).
const MANIFESTS_KEPT: usize = 4;

/// When a completed download stops seeding by itself (like Transmission's
/// "stop seeding at ratio" and "stop seeding if idle"): once it has sent
/// `ratio` times its size, or after seeding for `time` (counted over
/// restarts). A download the user told to seed again (`seed`, the resume of a
/// completed download) seeds until stopped by hand.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedLimits {
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Transfers {
    /// Loads the persisted transfers from `file` (none if it does not exist)
    /// without starting them; see [`Transfers::resume_all`].
    pub(crate) fn load(
        host: &Host,
        file: PathBuf,
        events: broadcast::Sender<TransferEvent>,
    ) -> Result<Arc<Self>, TransferError> {
        let mut entries = BTreeMap::new();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let st: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| TransferError::Corrupt {
                        path: file.clone(),
                        message: e.to_string(),
                    })?;
                for rec in st.transfers.into_iter().take(MAX_TRANSFERS) {
                    // A seeding transfer seeds again (resume_all), until the
                    // user pauses it.
                    entries.insert(
                        rec.id,
                        Entry {
                            rec,
                            last: None,
                            conn: None,
                            cmds: None,
                            generation: 0,
                            seeding_since: None,
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TransferError::Io {
                    what: "read",
                    path: file,
                    source,
                })
            }
        }
        Ok(Arc::new(Self {
            store: host.store().clone(),
            node: host.node().clone(),
            net: host.net().clone(),
            entries: Mutex::new(entries),
            file,
            events,
            save_lock: Mutex::new(()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            // Microseconds since 1970 at start: revisions grow across
            // restarts too.
            revision: std::sync::atomic::AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            ),
            seed_limits: Mutex::new(SeedLimits::default()),
            manifests: Mutex::new(Vec::new()),
        }))
    }

    /// Sets when completed downloads stop seeding; seeding ones are checked
    /// against the new limits within a second.
    pub fn set_seed_limits(&self, limits: SeedLimits) {
        *lock(&self.seed_limits) = limits;
    }

    /// Why `e` should stop seeding now, if it should.
    fn seed_limit_reached(&self, e: &Entry) -> Option<String> {
        if e.rec.state != TransferState::Seeding || e.rec.seed_by_hand {
            return None;
        }
        let limits = *lock(&self.seed_limits);
        let total = e.rec.total_bytes.filter(|t| *t > 0)?;
        let ratio = (e.rec.uploaded + run_uploaded(e)) as f64 / total as f64;
        if let Some(r) = limits.ratio.filter(|r| ratio >= *r) {
            return Some(format!(
                "stopped seeding at ratio {ratio:.2} (the limit is {r}); seed it again to go on"
            ));
        }
        let seeded = seeded_secs(e);
        if let Some(t) = limits.time.filter(|t| seeded >= t.as_secs()) {
            return Some(format!(
                "stopped seeding after {} (the limit is {}); seed it again to go on",
                human_duration(seeded),
                human_duration(t.as_secs())
            ));
        }
        None
    }

    /// Another receiver of the transfers' events.
    pub fn subscribe(&self) -> broadcast::Receiver<TransferEvent> {
        self.events.subscribe()
    }

    /// Starts every loaded transfer that was queued or downloading.
    pub fn resume_all(self: &Arc<Self>) {
        let ids: Vec<ContentId> = lock(&self.entries)
            .values()
            .filter(|e| {
                matches!(
                    e.rec.state,
                    TransferState::Queued | TransferState::Downloading | TransferState::Seeding
                )
            })
            .map(|e| e.rec.id)
            .collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Every transfer, oldest first.
    pub fn list(&self) -> Vec<Transfer> {
        let entries = lock(&self.entries);
        let mut v: Vec<Transfer> = entries.values().map(|e| self.view(e)).collect();
        v.sort_by(|a, b| a.added_at.cmp(&b.added_at).then(a.id.cmp(&b.id)));
        v
    }

    /// One transfer.
    pub fn get(&self, id: &ContentId) -> Option<Transfer> {
        lock(&self.entries).get(id).map(|e| self.view(e))
    }

    /// The files `offset..offset + limit` (at most [`MAX_FILES_PAGE`]) of a
    /// folder transfer, with the verified bytes of each that are here: while
    /// it runs, as its download counts them; a completed one, every file
    /// whole; a stopped one (paused, failed, not yet started after a
    /// restart), the files complete on disk (their final name and size; a
    /// partial file counts 0 until the download runs again). `known` is
    /// false until the manifest is here.
    pub async fn files(
        &self,
        id: &ContentId,
        offset: u64,
        limit: usize,
    ) -> Result<FileList, TransferError> {
        let (live, complete, root, choice, priorities) = {
            let entries = lock(&self.entries);
            let e = entries.get(id).ok_or(TransferError::NotFound(*id))?;
            if e.rec.kind != ContentKind::Collection {
                return Err(TransferError::NotAFolder(*id));
            }
            let complete = matches!(
                e.rec.state,
                TransferState::Seeding | TransferState::Completed
            );
            let live = e
                .cmds
                .as_ref()
                .and(e.last.as_ref())
                .and_then(|p| p.files.clone());
            let root = destination(&e.rec.output, e.rec.name.as_deref(), &e.rec.id);
            (
                live,
                complete,
                root,
                e.rec.choice(),
                e.rec.priorities.clone(),
            )
        };
        let Some(manifest) = self.manifest(id).await? else {
            return Ok(FileList {
                known: false,
                total_files: 0,
                total_bytes: 0,
                offset,
                files: Vec::new(),
                empty_folders: Vec::new(),
                total_empty_folders: 0,
            });
        };
        let first = usize::try_from(offset).unwrap_or(usize::MAX);
        let limit = limit.min(MAX_FILES_PAGE);
        let m = manifest.clone();
        let files = tokio::task::spawn_blocking(move || {
            let live = live.filter(|f| f.len() == m.len());
            m.entries()
                .iter()
                .enumerate()
                .skip(first)
                .take(limit)
                .map(|(i, e)| {
                    let chosen = choice.as_ref().is_none_or(|c| c.chooses(&e.path));
                    let priority = priorities
                        .get(&e.path)
                        .copied()
                        .unwrap_or(crate::FilePriority::Normal);
                    // A complete transfer has every chosen file but those
                    // skipped (which are only there if they arrived first).
                    let here = if !chosen {
                        0
                    } else if complete && priority != crate::FilePriority::Skip {
                        e.size
                    } else if let Some(f) = &live {
                        f.get(i).unwrap_or(0).min(e.size)
                    } else {
                        let path = e.path.split('/').fold(root.clone(), |p, c| p.join(c));
                        match std::fs::symlink_metadata(&path) {
                            Ok(md) if md.is_file() && md.len() == e.size => e.size,
                            _ => 0,
                        }
                    };
                    FileProgress {
                        path: e.path.clone(),
                        size: e.size,
                        id: e.id.to_hex(),
                        done_bytes: here,
                        chosen,
                        priority,
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| TransferError::Internal(format!("listing the files failed: {e}")))?;
        Ok(FileList::of(&manifest, offset, files))
    }

    /// A folder's manifest, once its download has fetched it (kept in the
    /// store's `manifests/` folder); the last few decoded are kept.
    async fn manifest(&self, id: &ContentId) -> Result<Option<Arc<Manifest>>, TransferError> {
        if let Some((_, m)) = lock(&self.manifests).iter().find(|(k, _)| k == id) {
            return Ok(Some(m.clone()));
        }
        let path = self.store.dir().join("manifests").join(id.to_hex());
        let want = *id;
        let read =
            tokio::task::spawn_blocking(move || -> Result<Option<Manifest>, TransferError> {
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => {
                        return Err(TransferError::Io {
                            what: "read",
                            path,
                            source,
                        })
                    }
                };
                // A copy cut short or damaged is not the folder's: the download
                // fetches it again.
                if ContentId::of(&bytes) != want {
                    return Ok(None);
                }
                Manifest::decode(&bytes)
                    .map(Some)
                    .map_err(|e| TransferError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            })
            .await
            .map_err(|e| TransferError::Internal(format!("reading a manifest failed: {e}")))??;
        let Some(m) = read else { return Ok(None) };
        let m = Arc::new(m);
        let mut cache = lock(&self.manifests);
        if cache.len() >= MANIFESTS_KEPT {
            cache.remove(0);
        }
        cache.push((*id, m.clone()));
        Ok(Some(m))
    }

    /// Counts by state, for metrics.
    pub fn count_by_state(&self) -> Vec<(TransferState, u64)> {
        let entries = lock(&self.entries);
        TransferState::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    entries.values().filter(|e| e.rec.state == *s).count() as u64,
                )
            })
            .collect()
    }

    /// Adds a transfer and starts it; if the content is already a transfer,
    /// returns that one and `false`.
    pub fn add(self: &Arc<Self>, new: NewTransfer) -> Result<(Transfer, bool), TransferError> {
        {
            let mut entries = lock(&self.entries);
            if let Some(e) = entries.get(&new.id) {
                return Ok((self.view(e), false));
            }
            if entries.len() >= MAX_TRANSFERS {
                return Err(TransferError::Conflict(format!(
                    "this daemon already has {MAX_TRANSFERS} transfers; cancel some first"
                )));
            }
            // Two contents saved under one name would meet at one partial file
            // (the store refuses the second anyway, but only once it started).
            let dest = destination(&new.output, new.name.as_deref(), &new.id);
            if let Some(other) = entries
                .values()
                .find(|e| destination(&e.rec.output, e.rec.name.as_deref(), &e.rec.id) == dest)
            {
                return Err(TransferError::Conflict(format!(
                    "transfer {} already saves to {}; give this one another \"name\"",
                    other.rec.id,
                    dest.display()
                )));
            }
            let rec = Record {
                id: new.id,
                kind: new.kind.into(),
                name: new.name,
                output: new.output,
                ticket: (!new.providers.is_empty() || new.capability.is_some()).then(|| {
                    Ticket {
                        id: new.id,
                        kind: new.kind,
                        providers: new.providers.clone(),
                        capability: new.capability.clone(),
                        name: None,
                    }
                    .to_string()
                }),
                download_limit: new.download_limit,
                added_at: now_s(),
                state: TransferState::Queued,
                total_bytes: None,
                done_bytes: 0,
                error: None,
                uploaded: 0,
                seeded_s: 0,
                seed_by_hand: false,
                note: None,
                only: new.only,
                exclude: new.exclude,
                priorities: BTreeMap::new(),
            };
            entries.insert(
                new.id,
                Entry {
                    rec,
                    last: None,
                    conn: None,
                    cmds: None,
                    generation: 0,
                    seeding_since: None,
                },
            );
        }
        self.start(new.id);
        self.save();
        let t = self
            .emit_current(&new.id)
            .ok_or_else(|| TransferError::Internal("the new transfer vanished".into()))?;
        Ok((t, true))
    }

    /// Starts (or restarts) the download of `id` with a new watcher task.
    fn start(self: &Arc<Self>, id: ContentId) {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(&id) else {
            return;
        };
        let out = e.rec.output.clone();
        if let Err(err) = std::fs::create_dir_all(&out) {
            e.rec.state = TransferState::Failed;
            e.rec.error = Some(format!(
                "cannot create the output folder {}: {err}; choose another output folder",
                out.display()
            ));
            return;
        }
        let (providers, capability): (Vec<Provider>, Option<Vec<u8>>) = e
            .rec
            .ticket
            .as_deref()
            .and_then(|t| t.parse::<Ticket>().ok())
            .map(|t| (t.providers, t.capability))
            .unwrap_or_default();
        if announces(&providers, false) {
            // Fetching by id: tell the DHT we are a provider, as `shoal get` does.
            crate::host::announce_on(&self.net, id);
        }
        let conn = NetConnector::new(self.net.clone(), id, &providers);
        let completed = matches!(
            e.rec.state,
            TransferState::Seeding | TransferState::Completed
        );
        let job = Job {
            kind: e.rec.kind.into(),
            out,
            name: e.rec.name.clone(),
            limit: e.rec.download_limit,
            conn: conn.clone(),
            capability,
            choice: e.rec.choice().map(Arc::new),
            priorities: e.rec.priorities.clone(),
            completed_len: e
                .rec
                .total_bytes
                .filter(|_| completed && e.rec.kind == ContentKind::File),
        };
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e.generation = generation;
        e.cmds = Some(tx);
        e.conn = Some(conn);
        e.rec.uploaded += run_uploaded(e);
        end_seeding(e);
        e.last = None;
        e.rec.state = TransferState::Queued;
        e.rec.error = None;
        drop(entries);
        tokio::spawn(self.clone().watch(id, generation, job, rx));
    }

    /// Finds a first provider (waiting as long as it takes: the transfer
    /// stays queued), then follows the download until it is stopped.
    async fn watch(
        self: Arc<Self>,
        id: ContentId,
        generation: u64,
        mut job: Job,
        mut cmds: mpsc::Receiver<Cmd>,
    ) {
        // A file completed before and still there (its length; the download
        // task checks its bytes against the id) needs no provider: it is
        // served again at once.
        let present = job.completed_len.is_some_and(|len| {
            let dest = crate::host::destination(&job.out, job.name.as_deref(), &id);
            std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == len)
        });
        if !present {
            loop {
                tokio::select! {
                    found = job.conn.wait_for_peers(FIND_WAIT) => if found { break },
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::SetLimit(l)) => job.limit = l,
                        Some(Cmd::SetPriority(paths, p)) => {
                            for path in paths {
                                job.priorities.insert(path, p);
                            }
                        }
                        Some(Cmd::Stop(done)) => {
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                }
            }
        }
        let conn: Arc<dyn crate::Connector> = job.conn.clone();
        let mut handle = self.node.download_chosen(
            id,
            job.kind,
            &job.out,
            job.name.as_deref(),
            conn,
            job.capability.clone(),
            job.choice.clone(),
        );
        handle.set_download_limit(job.limit);
        for p in [crate::FilePriority::Skip, crate::FilePriority::High] {
            let paths: Vec<String> = job
                .priorities
                .iter()
                .filter(|(_, q)| **q == p)
                .map(|(path, _)| path.clone())
                .collect();
            if !paths.is_empty() {
                handle.set_priority(paths, p);
            }
        }
        let mut rx = handle.progress();
        let mut last_emit = Instant::now() - EVENT_EVERY;
        let mut closed = false;
        let mut tick = tokio::time::interval(EVENT_EVERY);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::SetLimit(l)) => handle.set_download_limit(l),
                    Some(Cmd::SetPriority(paths, p)) => handle.set_priority(paths, p),
                    Some(Cmd::Stop(done)) => {
                        handle.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        handle.stop().await;
                        return;
                    }
                },
                ch = rx.changed(), if !closed => {
                    if ch.is_err() {
                        closed = true;
                        // The download task ended without completing: its result says why.
                        let p = rx.borrow().clone();
                        if !p.complete {
                            let why = match tokio::time::timeout(Duration::from_secs(5), handle.result()).await {
                                Ok(Err(e)) => e.to_string(),
                                Ok(Ok(_)) => String::new(),
                                Err(_) => "the download stopped without saying why".to_owned(),
                            };
                            if !why.is_empty() {
                                self.update(id, generation, Some(p), Some(why), true);
                                continue;
                            }
                        }
                        self.update(id, generation, Some(p), None, true);
                        continue;
                    }
                    if last_emit.elapsed() >= EVENT_EVERY {
                        last_emit = Instant::now();
                        let p = rx.borrow_and_update().clone();
                        self.update(id, generation, Some(p), None, false);
                    }
                }
                _ = tick.tick() => {
                    if last_emit.elapsed() >= EVENT_EVERY {
                        last_emit = Instant::now();
                        let p = rx.borrow().clone();
                        self.update(id, generation, Some(p), None, false);
                    }
                    if let Some(why) = self.seed_limit_of(&id, generation) {
                        handle.stop().await;
                        self.stop_seeding(&id, generation, why);
                        return;
                    }
                }
            }
        }
    }

    /// Records a progress snapshot (and a failure); emits an event when the
    /// state changed or the transfer moved; persists on state changes.
    /// `ended`: the download task is gone (a collection, which is not served
    /// once complete, or a failure).
    fn update(
        &self,
        id: ContentId,
        generation: u64,
        p: Option<Progress>,
        failed: Option<String>,
        ended: bool,
    ) {
        let changed = {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(&id) else {
                return;
            };
            if e.generation != generation || e.cmds.is_none() {
                return;
            }
            let before = e.rec.state;
            let moved = p.as_ref() != e.last.as_ref();
            if let Some(p) = p {
                e.rec.total_bytes = p.total_bytes.or(e.rec.total_bytes);
                // A run that has not yet verified its outboard (it knows no
                // length and holds nothing) says nothing of the bytes already
                // on disk: they stay as they were, not 0.
                if p.total_bytes.is_some() || p.done_bytes > 0 {
                    e.rec.done_bytes = p.done_bytes;
                }
                let mut failed = failed.clone().or(p.failed.clone());
                if ended && !p.complete && failed.is_none() {
                    failed = Some("the download stopped before it finished; resume it".to_owned());
                }
                e.rec.state = if p.complete && ended {
                    TransferState::Completed
                } else if p.complete {
                    TransferState::Seeding
                } else if failed.is_some() {
                    TransferState::Failed
                } else if p.done_bytes > 0 || p.connected_peers > 0 {
                    TransferState::Downloading
                } else {
                    TransferState::Queued
                };
                if p.complete {
                    e.rec.error = None;
                    e.rec.total_bytes = Some(p.total_bytes.unwrap_or(p.done_bytes));
                    e.rec.done_bytes = e.rec.total_bytes.unwrap_or(p.done_bytes);
                } else if let Some(f) = failed {
                    e.rec.error = Some(f);
                }
                e.last = Some(p);
            }
            if e.rec.state == TransferState::Seeding {
                if e.seeding_since.is_none() {
                    e.seeding_since = Some(Instant::now());
                }
            } else {
                end_seeding(e);
            }
            if ended || e.rec.state == TransferState::Failed {
                // A failed or ended download is stopped: its watcher ends.
                e.cmds = None;
                e.conn = None;
            }
            let changed = before != e.rec.state;
            if !changed && !moved {
                return;
            }
            // Sent under the lock, so events leave in the order of the changes.
            let view = self.view(e);
            if changed && view.state == TransferState::Failed {
                let _ = self.events.send(TransferEvent::Failed {
                    message: view.error.clone(),
                    transfer: view.id.clone(),
                });
            }
            let _ = self.events.send(TransferEvent::Changed(Box::new(view)));
            changed
        };
        if changed {
            self.save();
        }
    }

    /// Sends the current view of `id` as an event and returns it. The view is
    /// made and sent under the entries lock, so the event stream carries a
    /// transfer's changes in order and ends with its current state.
    fn emit_current(&self, id: &ContentId) -> Option<Transfer> {
        let entries = lock(&self.entries);
        let view = self.view(entries.get(id)?);
        let _ = self
            .events
            .send(TransferEvent::Changed(Box::new(view.clone())));
        Some(view)
    }

    /// Why the watcher `generation` of `id` should stop seeding now, if so.
    fn seed_limit_of(&self, id: &ContentId, generation: u64) -> Option<String> {
        let entries = lock(&self.entries);
        let e = entries.get(id).filter(|e| e.generation == generation)?;
        self.seed_limit_reached(e)
    }

    /// A seed limit was reached: `id` is completed (no longer served), with
    /// `why` as its note.
    fn stop_seeding(&self, id: &ContentId, generation: u64, why: String) {
        {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(id).filter(|e| e.generation == generation) else {
                return;
            };
            tracing::info!(id = %id, "{why}");
            e.cmds = None;
            e.conn = None;
            end_seeding(e);
            e.rec.state = TransferState::Completed;
            e.rec.note = Some(why);
            if let Some(p) = e.last.as_mut() {
                for pp in &mut p.peers {
                    pp.connected = false;
                    pp.down_rate = 0.0;
                    pp.up_rate = 0.0;
                }
                p.connected_peers = 0;
            }
            let view = self.view(e);
            let _ = self.events.send(TransferEvent::Changed(Box::new(view)));
        }
        self.save();
    }

    /// Stops the watcher of `id` if it runs; waits until the download's tasks
    /// are gone (partial file closed, progress persisted).
    async fn stop_watcher(&self, id: &ContentId) {
        let cmds = {
            let mut entries = lock(&self.entries);
            match entries.get_mut(id) {
                Some(e) => {
                    e.conn = None;
                    e.cmds.take()
                }
                None => None,
            }
        };
        if let Some(c) = cmds {
            let (tx, rx) = oneshot::channel();
            if c.send(Cmd::Stop(tx)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(15), rx).await;
            }
        }
    }

    /// Pauses `id`: stops the download (progress stays on disk). A complete
    /// transfer stops being served and becomes "completed".
    pub async fn pause(&self, id: &ContentId) -> Result<Transfer, TransferError> {
        if !lock(&self.entries).contains_key(id) {
            return Err(not_found(id));
        }
        self.stop_watcher(id).await;
        let view = {
            let mut entries = lock(&self.entries);
            let e = entries.get_mut(id).ok_or_else(|| not_found(id))?;
            end_seeding(e);
            e.rec.state = match e.rec.state {
                TransferState::Seeding | TransferState::Completed => TransferState::Completed,
                TransferState::Failed => TransferState::Failed,
                _ => TransferState::Paused,
            };
            // Rates are stale once stopped.
            if let Some(p) = e.last.as_mut() {
                for pp in &mut p.peers {
                    pp.connected = false;
                    pp.down_rate = 0.0;
                    pp.up_rate = 0.0;
                }
                p.connected_peers = 0;
            }
            let view = self.view(e);
            let _ = self
                .events
                .send(TransferEvent::Changed(Box::new(view.clone())));
            view
        };
        self.save();
        Ok(view)
    }

    /// Resumes `id` (fetches it again, continuing from the partial data). A
    /// running transfer is returned as is.
    pub fn resume(self: &Arc<Self>, id: &ContentId) -> Result<Transfer, TransferError> {
        let running = {
            let mut entries = lock(&self.entries);
            let e = entries.get_mut(id).ok_or_else(|| not_found(id))?;
            if e.cmds.is_none() && e.rec.state == TransferState::Completed {
                // Seeding again by hand: until stopped by hand.
                e.rec.seed_by_hand = true;
                e.rec.note = None;
            }
            e.cmds.is_some()
        };
        if !running {
            self.start(*id);
            self.save();
        }
        let view = self.emit_current(id).ok_or_else(|| not_found(id))?;
        Ok(view)
    }

    /// Sets the download limit of `id`.
    pub async fn set_limit(
        &self,
        id: &ContentId,
        limit: Option<u64>,
    ) -> Result<Transfer, TransferError> {
        let cmds = {
            let mut entries = lock(&self.entries);
            let e = entries.get_mut(id).ok_or_else(|| not_found(id))?;
            e.rec.download_limit = limit;
            e.cmds.clone()
        };
        if let Some(c) = cmds {
            let _ = c.send(Cmd::SetLimit(limit)).await;
        }
        self.save();
        let view = self.emit_current(id).ok_or_else(|| not_found(id))?;
        Ok(view)
    }

    /// Sets the priority of files of folder transfer `id` by their paths
    /// inside the folder (at most [`MAX_FILES_PAGE`] at once): `skip` ones
    /// are not fetched (and never created unless already here), `high` ones
    /// before the normal ones. At once while it runs, kept for later runs.
    /// Every path must name a chosen file of the folder, whose list must be
    /// known (its manifest arrives first).
    pub async fn set_priority(
        &self,
        id: &ContentId,
        paths: Vec<String>,
        priority: crate::FilePriority,
    ) -> Result<Transfer, TransferError> {
        if paths.is_empty() || paths.len() > MAX_FILES_PAGE {
            return Err(TransferError::Invalid {
                field: "paths",
                message: format!("give 1 to {MAX_FILES_PAGE} paths, not {}", paths.len()),
            });
        }
        let choice = {
            let entries = lock(&self.entries);
            let e = entries.get(id).ok_or_else(|| not_found(id))?;
            if e.rec.kind != ContentKind::Collection {
                return Err(TransferError::NotAFolder(*id));
            }
            e.rec.choice()
        };
        let Some(manifest) = self.manifest(id).await? else {
            return Err(TransferError::Conflict(
                "the folder's list of files is not here yet (its manifest is fetched first); \
                 try again once the transfer is downloading"
                    .into(),
            ));
        };
        let m = manifest.clone();
        let wanted = paths.clone();
        let unknown = tokio::task::spawn_blocking(move || {
            let all: std::collections::HashSet<&str> =
                m.entries().iter().map(|e| e.path.as_str()).collect();
            wanted.into_iter().find(|p| {
                !all.contains(p.as_str()) || choice.as_ref().is_some_and(|c| !c.chooses(p))
            })
        })
        .await
        .map_err(|e| TransferError::Internal(format!("checking the paths failed: {e}")))?;
        if let Some(p) = unknown {
            return Err(TransferError::Invalid {
                field: "paths",
                message: format!(
                    "{p:?} is not a chosen file of this folder; GET /api/v1/transfers/{id}/files lists them"
                ),
            });
        }
        let cmds = {
            let mut entries = lock(&self.entries);
            let e = entries.get_mut(id).ok_or_else(|| not_found(id))?;
            for p in &paths {
                if priority == crate::FilePriority::Normal {
                    e.rec.priorities.remove(p);
                } else {
                    e.rec.priorities.insert(p.clone(), priority);
                }
            }
            e.cmds.clone()
        };
        if let Some(c) = cmds {
            let _ = c.send(Cmd::SetPriority(paths, priority)).await;
        }
        self.save();
        self.emit_current(id).ok_or_else(|| not_found(id))
    }

    /// Cancels `id`: stops it and forgets it. Its partial data is deleted
    /// unless `keep_data` (then adding it again resumes from it); complete
    /// files are always kept.
    pub async fn cancel(&self, id: &ContentId, keep_data: bool) -> Result<(), TransferError> {
        if !lock(&self.entries).contains_key(id) {
            return Err(not_found(id));
        }
        self.stop_watcher(id).await;
        let rec = lock(&self.entries).remove(id).map(|e| e.rec);
        self.save();
        if let Some(rec) = rec.filter(|_| !keep_data) {
            let dest = destination(&rec.output, rec.name.as_deref(), &rec.id);
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || remove_partials(&store, &dest)).await;
        }
        let _ = self.events.send(TransferEvent::Removed(id.to_hex()));
        Ok(())
    }

    /// Stops every download (for shutdown); their state stays as persisted.
    pub async fn stop_all(&self) {
        let cmds: Vec<mpsc::Sender<Cmd>> = {
            let mut entries = lock(&self.entries);
            entries
                .values_mut()
                .filter_map(|e| {
                    e.conn = None;
                    e.cmds.take()
                })
                .collect()
        };
        let mut waits = Vec::new();
        for c in cmds {
            let (tx, rx) = oneshot::channel();
            if c.send(Cmd::Stop(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            for w in waits {
                let _ = w.await;
            }
        })
        .await;
        self.save();
    }

    /// Writes the state file (temp + fsync + rename). Failures are logged: the
    /// transfers keep running.
    fn save(&self) {
        let _g = lock(&self.save_lock);
        let st = StateFile {
            version: 1,
            transfers: lock(&self.entries)
                .values()
                .map(|e| Record {
                    uploaded: e.rec.uploaded + run_uploaded(e),
                    seeded_s: seeded_secs(e),
                    ..e.rec.clone()
                })
                .collect(),
        };
        let bytes = match serde_json::to_vec_pretty(&st) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the transfers");
                return;
            }
        };
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = shoal_store::write_atomic(&self.file, &bytes, 0o600) {
            tracing::warn!(error = %e, "cannot save the transfers; they may not survive a restart");
        }
    }

    /// The API view of an entry.
    fn view(&self, e: &Entry) -> Transfer {
        let r = &e.rec;
        let mut peers = Vec::new();
        let mut down_rate = 0.0;
        let mut up_rate = 0.0;
        if let Some(p) = &e.last {
            let paths = e.conn.as_ref().map(|c| c.paths()).unwrap_or_default();
            // Where the peers we serve came from and what they hold.
            let served = self
                .node
                .uploads_of(&r.id)
                .map(|u| u.peers)
                .unwrap_or_default();
            down_rate = p.down_rate();
            up_rate = p.up_rate();
            for pp in &p.peers {
                let relayed = e.conn.as_ref().is_some_and(|c| c.is_relayed(&pp.peer));
                peers.push(TransferPeer {
                    peer_id: pp.peer.to_string(),
                    path: if relayed {
                        PathKind::Relayed
                    } else if paths.get(&pp.peer) == Some(&shoal_net::PathKind::Fast) {
                        PathKind::Fast
                    } else {
                        PathKind::Direct
                    },
                    connected: pp.connected,
                    downloaded: pp.downloaded,
                    uploaded: pp.uploaded,
                    down_rate: pp.down_rate,
                    up_rate: pp.up_rate,
                    banned: pp.banned,
                    address: served
                        .iter()
                        .find(|s| s.peer == pp.peer)
                        .and_then(|s| s.remote.as_ref().map(|r| r.addr.clone())),
                    progress: served
                        .iter()
                        .find(|s| s.peer == pp.peer)
                        .and_then(|s| s.progress),
                });
            }
        }
        let complete = matches!(r.state, TransferState::Seeding | TransferState::Completed);
        let progress = match r.total_bytes {
            _ if complete => 1.0,
            Some(t) if t > 0 => (r.done_bytes as f64 / t as f64).clamp(0.0, 1.0),
            _ => 0.0,
        };
        let eta_s = match (r.state, r.total_bytes) {
            (TransferState::Downloading, Some(t)) if down_rate > 0.0 => {
                Some(t.saturating_sub(r.done_bytes) as f64 / down_rate)
            }
            _ => None,
        };
        Transfer {
            id: r.id.to_hex(),
            name: r.name.clone(),
            kind: r.kind,
            output: r.output.to_string_lossy().into_owned(),
            state: r.state,
            total_bytes: r.total_bytes,
            done_bytes: r.done_bytes,
            progress,
            down_rate,
            up_rate,
            eta_s,
            peers,
            download_limit: r.download_limit,
            error: r.error.clone(),
            pieces_failed: e.last.as_ref().map_or(0, |p| p.pieces_failed),
            added_at: r.added_at,
            uploaded_bytes: r.uploaded + run_uploaded(e),
            seeded_s: seeded_secs(e),
            note: r.note.clone(),
            searching: match (r.state, &e.last) {
                (TransferState::Queued | TransferState::Downloading, Some(p))
                    if e.cmds.is_some() =>
                {
                    p.searching()
                }
                // Running, before its download task started: no provider found yet.
                (TransferState::Queued, None) if e.cmds.is_some() => Some(
                    "looking for peers: none found yet (asking the ticket's addresses and the DHT)"
                        .to_owned(),
                ),
                _ => None,
            },
            ratio: r
                .total_bytes
                .filter(|t| *t > 0)
                .map(|t| (r.uploaded + run_uploaded(e)) as f64 / t as f64),
            ticket: self.ticket_of(r),
            only: r.only.clone(),
            exclude: r.exclude.clone(),
            // Views are made under the entries lock, so revisions follow the
            // order of the changes they show.
            revision: self
                .revision
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        }
    }

    /// A ticket naming this peer for the transfer's content: this peer serves
    /// what it holds of it, so others can fetch it from here (and, through
    /// the swarm, from the other peers that have it). It carries no invite.
    fn ticket_of(&self, r: &Record) -> String {
        let mut t = Ticket {
            id: r.id,
            kind: match r.kind {
                ContentKind::File => Kind::File,
                ContentKind::Collection => Kind::Collection,
            },
            providers: vec![Provider {
                peer: self.net.peer_id(),
                addrs: self.net.ticket_addrs(),
            }],
            capability: None,
            name: r
                .name
                .clone()
                .filter(|n| shoal_core::manifest::is_plain_name(n)),
        };
        // A ticket of ours always fits once shrunk; keep it as is otherwise.
        let _ = t.shrink_to_fit();
        t.to_string()
    }

    /// Every peer this host is connected to (libp2p connections) or transfers
    /// with (fast-path streams are not libp2p connections), with its
    /// addresses, how it is reached, its rates and the transfers it takes part
    /// in; sorted by peer id.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers_with_served(Vec::new())
    }

    /// [`peers`](Self::peers), with the peers downloading shares from this
    /// one: `(share id, peer)` pairs.
    pub fn peers_with_served(&self, served: Vec<(String, crate::ServedPeer)>) -> Vec<PeerView> {
        use std::collections::BTreeMap;
        let mut peers: BTreeMap<String, PeerView> = BTreeMap::new();
        let mut direct: BTreeMap<String, bool> = BTreeMap::new();
        let blank = |id: String, path| PeerView {
            peer_id: id,
            addresses: Vec::new(),
            path,
            down_rate: 0.0,
            up_rate: 0.0,
            transfers: Vec::new(),
            shares: Vec::new(),
        };
        for c in self.net.connections() {
            let id = c.peer.to_string();
            *direct.entry(id.clone()).or_default() |= !c.relayed;
            let v = peers
                .entry(id.clone())
                .or_insert_with(|| blank(id, PathKind::Direct));
            let a = c.remote_addr.to_string();
            if !v.addresses.contains(&a) {
                v.addresses.push(a);
            }
        }
        for (tid, tp) in self.peers_by_transfer() {
            let v = peers
                .entry(tp.peer_id.clone())
                .or_insert_with(|| blank(tp.peer_id.clone(), tp.path));
            v.down_rate += tp.down_rate;
            v.up_rate += tp.up_rate;
            if tp.path != PathKind::Relayed {
                direct.insert(tp.peer_id.clone(), true);
            }
            if !v.transfers.contains(&tid) {
                v.transfers.push(tid);
            }
        }
        for (sid, sp) in served {
            let id = sp.peer.to_string();
            let path = sp
                .remote
                .as_ref()
                .and_then(|r| PathKind::parse(&r.path))
                .unwrap_or(PathKind::Direct);
            let v = peers
                .entry(id.clone())
                .or_insert_with(|| blank(id.clone(), path));
            v.down_rate += sp.down_rate;
            v.up_rate += sp.up_rate;
            if path != PathKind::Relayed {
                direct.insert(id.clone(), true);
            }
            if let Some(r) = &sp.remote {
                if !v.addresses.contains(&r.addr) {
                    v.addresses.push(r.addr.clone());
                }
            }
            if !v.shares.contains(&sid) {
                v.shares.push(sid);
            }
        }
        for (id, v) in peers.iter_mut() {
            if direct.get(id) == Some(&false) {
                v.path = PathKind::Relayed;
            }
        }
        peers.into_values().collect()
    }

    /// Peers of running transfers, with the ids of the transfers they take part in.
    pub fn peers_by_transfer(&self) -> Vec<(String, TransferPeer)> {
        let entries = lock(&self.entries);
        let mut out = Vec::new();
        for e in entries.values() {
            if e.cmds.is_none() {
                continue;
            }
            for p in self.view(e).peers {
                out.push((e.rec.id.to_hex(), p));
            }
        }
        out
    }
}

/// `secs` as "2 d 3 h", "3 h 5 min", "4 min 2 s" or "9 s".
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Seconds `e` has seeded, over restarts, up to now.
fn seeded_secs(e: &Entry) -> u64 {
    e.rec.seeded_s + e.seeding_since.map_or(0, |s| s.elapsed().as_secs())
}

/// Ends `e`'s current seeding spell (its time is added to `rec.seeded_s`).
fn end_seeding(e: &mut Entry) {
    if let Some(s) = e.seeding_since.take() {
        e.rec.seeded_s += s.elapsed().as_secs();
    }
}

/// Piece bytes sent in the current run of a transfer.
fn run_uploaded(e: &Entry) -> u64 {
    e.last
        .as_ref()
        .map_or(0, |p| p.peers.iter().map(|pp| pp.uploaded).sum())
}

fn not_found(id: &ContentId) -> TransferError {
    TransferError::NotFound(*id)
}

/// Deletes the partial files of the download to `dest` (a file, or every file
/// of a collection folder) and forgets them in the database. Complete files are
/// kept.
fn remove_partials(store: &shoal_store::Store, dest: &Path) {
    let part = shoal_store::partial::part_path_for(dest);
    let downloads = match store.db().downloads() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list downloads to delete partial data");
            Vec::new()
        }
    };
    let mut removed_main = false;
    for d in downloads {
        if d.part == part || d.part.starts_with(dest) {
            if d.state != shoal_store::db::DownloadState::Complete {
                let _ = std::fs::remove_file(&d.part);
            }
            removed_main |= d.part == part;
            let _ = store.db().remove_download(d.key);
        }
    }
    if !removed_main {
        let _ = std::fs::remove_file(&part);
    }
}
