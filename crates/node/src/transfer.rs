//! The facade the CLI and the daemon use: serve inbound transfer streams, start
//! downloads of files and collections, watch their progress.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use libp2p_identity::PeerId;
use shoal_core::proto::{decode_frame, CloseCode, DenyReason, Message};

/// How long an inbound stream may take to send its hello (below the
/// protocol's HELLO_TIMEOUT, which a responder may shorten): an initiator sends
/// it as soon as the stream opens, so only a silent peer waits this long, and
/// a flood of silent streams holds the accept slots briefly (spec §9.7).
pub const INBOUND_HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
use shoal_core::{ContentId, Kind, Manifest};
use shoal_net::Multiaddr;
use shoal_store::{hash_bytes, Blob, Store};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::access::{Access, DownloadPolicy, Verdict};
use crate::content::{Content, DownloadCfg, Ev};
use crate::error::NodeError;
use crate::limit::{Counters, Limits, Meter, RateLimiter, Throttled};
use crate::session::{write_frame, BoxStream, BufPool, FrameReader, ReadError, Stream};

/// Limits and tuning of a [`TransferService`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Most connections per content (inbound and outbound together).
    pub max_peers: u32,
    /// Piece reads and verifications running at once (blocking threads).
    pub io_concurrency: usize,
    /// The scheduler's knobs (`piece_size` and `max_peers` are set per content).
    /// Its `max_remote_requests` bounds the uploads queued per peer.
    pub swarm: shoal_swarm::Config,
    /// A task seeding a content with no peer for this long ends (the next
    /// stream for it starts a new one), so that serving many files leaves
    /// no task per file behind.
    pub seed_idle: std::time::Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            max_peers: 50,
            io_concurrency: 8,
            swarm: shoal_swarm::Config::default(),
            seed_idle: crate::content::SEED_IDLE,
        }
    }
}

/// Opens transfer streams to peers for a download; the networking layer
/// implements it (tickets, DHT, mDNS feed `peers`).
pub trait Connector: Send + Sync + 'static {
    /// Opens an authenticated stream to `peer` (over `/shoal/xfer/1` or the TLS
    /// fast path).
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>>;
    /// Peers believed to have the content. A download dials each again after a
    /// failure, a bounded number of times (never after an access denial).
    fn peers(&self) -> Vec<PeerId>;
    /// Peers of this content that other peers told us about (peer exchange),
    /// with their addresses as unverified dial hints. The node has already
    /// dropped itself, connected and banned peers, and capped the number (at
    /// most [`PEX_NEW_PER_MESSAGE`] per message, [`PEX_MAX_LEARNED`] per
    /// content). A connector that can dial them should return them from
    /// [`peers`](Self::peers); the default ignores them.
    fn learned(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        let _ = peers;
    }
    /// A connector to the providers of `id` alone (a file of the folder this
    /// connector serves, looked up by its own id), or `None` if this
    /// connector cannot look up other content (the default).
    fn for_content(&self, id: ContentId) -> Option<Arc<dyn Connector>> {
        let _ = id;
        None
    }
}

/// A file of a folder fetched by its id: from the folder's peers and from
/// the providers of that file alone.
struct FolderAndFile {
    folder: Arc<dyn Connector>,
    file: Arc<dyn Connector>,
}

impl Connector for FolderAndFile {
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        if self.folder.peers().contains(&peer) {
            self.folder.connect(peer)
        } else {
            self.file.connect(peer)
        }
    }

    fn peers(&self) -> Vec<PeerId> {
        let mut all = self.folder.peers();
        for p in self.file.peers() {
            if !all.contains(&p) {
                all.push(p);
            }
        }
        all
    }

    fn learned(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        // Peer exchange in the file's swarm names peers of the file.
        self.file.learned(peers);
    }
}

/// The connector for larger file `id` of a folder: the folder's peers,
/// and the file's own providers where `folder` can look them up.
fn file_connector(folder: &Arc<dyn Connector>, id: ContentId) -> Arc<dyn Connector> {
    match folder.for_content(id) {
        Some(file) => Arc::new(FolderAndFile {
            folder: folder.clone(),
            file,
        }),
        None => folder.clone(),
    }
}

/// Where the node finds dialable addresses of the peers it tells others about
/// in peer exchange (`docs/protocol.md` §6.4).
pub trait AddressBook: Send + Sync + 'static {
    /// Addresses at which `peer` can be dialed, fit to be given to `to` (for
    /// instance no loopback addresses to a peer that is not on loopback). The
    /// node uses at most `MAX_PEX_ADDRS` of them, each at most `MAX_ADDR_LEN`
    /// bytes; a peer with none is not offered.
    fn addrs_for(&self, peer: &PeerId, to: &PeerId) -> Vec<Multiaddr>;
}

/// Most new peers taken from one received `PeerExchange`.
pub const PEX_NEW_PER_MESSAGE: usize = 8;
/// Most peers a download learns through peer exchange over its life.
pub const PEX_MAX_LEARNED: usize = 64;

/// One peer's share of a transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerProgress {
    pub peer: PeerId,
    /// Whether a session with the peer is open now.
    pub connected: bool,
    /// Verified piece bytes received from the peer.
    pub downloaded: u64,
    /// Piece bytes sent to the peer.
    pub uploaded: u64,
    /// Bytes per second, over the last second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// Banned for this content: it sent pieces that failed verification.
    pub banned: bool,
}

/// Where an inbound stream came from: the remote address and how it is
/// reached (`fast`, `direct` or `relayed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub addr: String,
    pub path: String,
}

/// A peer this node sends a content to, as the content's task last saw it
/// (updated every second).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedPeer {
    pub peer: PeerId,
    /// Where its stream came from, for a peer that connected to us.
    pub remote: Option<Remote>,
    /// Piece bytes sent to it and received from it by this task.
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes per second, over the last second.
    pub up_rate: f64,
    pub down_rate: f64,
    /// The share of the content it has told us it holds (0..1), once known.
    pub progress: Option<f64>,
}

/// What this node sent of one content since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Uploads {
    /// Piece bytes sent to every peer since the node started (also by tasks
    /// of this content that have ended).
    pub uploaded: u64,
    /// Bytes per second to all its peers, over the last second.
    pub up_rate: f64,
    /// Connected peers this node has sent pieces of it to.
    pub peers: Vec<ServedPeer>,
}

/// The state of a transfer, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub id: ContentId,
    /// The content's length, once a peer told it (for a collection: all files).
    pub total_bytes: Option<u64>,
    /// Verified bytes present.
    pub done_bytes: u64,
    pub pieces_done: u32,
    pub num_pieces: u32,
    pub connected_peers: usize,
    /// Every peer that took part, by peer id.
    pub peers: Vec<PeerProgress>,
    pub complete: bool,
    /// Why the transfer failed, if it did.
    pub failed: Option<String>,
    /// Received pieces that failed verification (discarded and fetched
    /// again from other peers).
    pub pieces_failed: u64,
    /// Providers known so far (the ticket's, the DHT's, peer exchange's).
    pub known_peers: usize,
    /// Connection attempts made so far.
    pub dials: u32,
    /// Why the last attempt to reach a provider failed, if one did.
    pub last_dial_error: Option<String>,
    /// A folder download's verified bytes of each file, in manifest order,
    /// once its manifest is here (shared: it changes as pieces verify).
    pub files: Option<Arc<FileBytes>>,
}

/// Which files of a folder a download fetches: those matching one of the
/// `only` globs (every file when there is none) and none of the `exclude`
/// globs. Globs match a file's path inside the folder ('/'-separated); `*`
/// and `?` also match '/', so `*.flac` chooses every FLAC file at any depth.
#[derive(Debug, Clone)]
pub struct FileChoice {
    only: Option<globset::GlobSet>,
    exclude: globset::GlobSet,
    /// The globs as given, for messages.
    pub only_globs: Vec<String>,
    pub exclude_globs: Vec<String>,
}

impl FileChoice {
    /// Compiles the globs; an invalid one is an error naming it.
    pub fn new(only: &[String], exclude: &[String]) -> Result<Self, String> {
        let set = |globs: &[String], flag: &str| -> Result<globset::GlobSet, String> {
            let mut b = globset::GlobSetBuilder::new();
            for g in globs {
                let glob = globset::GlobBuilder::new(g)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("{flag} {g:?} is not a valid glob: {}", e.kind()))?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| format!("the {flag} globs cannot be used: {e}"))
        };
        Ok(Self {
            only: if only.is_empty() {
                None
            } else {
                Some(set(only, "--only")?)
            },
            exclude: set(exclude, "--exclude")?,
            only_globs: only.to_vec(),
            exclude_globs: exclude.to_vec(),
        })
    }

    /// Whether the file at `path` (inside the folder) is fetched.
    pub fn chooses(&self, path: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.is_match(path)) && !self.exclude.is_match(path)
    }
}

/// Verified bytes present of each file of a folder download, in the
/// manifest's order, updated as its files' pieces verify.
#[derive(Debug, Default)]
pub struct FileBytes(Vec<std::sync::atomic::AtomicU64>);

impl FileBytes {
    fn new(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        )
    }

    pub(crate) fn set(&self, i: usize, v: u64) {
        if let Some(a) = self.0.get(i) {
            a.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The bytes of file `i` here, if the folder has such a file.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.0
            .get(i)
            .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Files in the folder.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The same download's counters are the same: two views of one are equal
/// here, and what they hold is compared through `done_bytes`.
impl PartialEq for FileBytes {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Progress {
    /// What a download does while no peer is connected and nothing arrived
    /// yet: how many providers it knows, how many attempts it made, and why
    /// the last one failed. `None` once a peer is connected or bytes arrived.
    /// The CLI, the daemon's API and the web UI show this same text.
    pub fn searching(&self) -> Option<String> {
        if self.connected_peers > 0 || self.done_bytes > 0 || self.complete {
            return None;
        }
        let mut s = match self.known_peers {
            0 => "looking for peers: none known yet (asking the DHT)".to_owned(),
            n => format!(
                "looking for peers: {n} known, {} connection attempt{}",
                self.dials,
                if self.dials == 1 { "" } else { "s" }
            ),
        };
        if let Some(e) = &self.last_dial_error {
            s.push_str(&format!("; last failure: {}", e.escape_debug()));
        }
        Some(s)
    }

    /// Verified bytes per second received: the sum of every peer's rate
    /// (each over the last 5 s, so a peer that left within that window still
    /// counts for what it sent). The CLI's bar, the daemon's API, the web UI
    /// and hence every figure shown use this one sum.
    pub fn down_rate(&self) -> f64 {
        self.peers.iter().map(|p| p.down_rate).sum()
    }

    /// Bytes per second sent, summed like [`Progress::down_rate`].
    pub fn up_rate(&self) -> f64 {
        self.peers.iter().map(|p| p.up_rate).sum()
    }

    /// Seconds left at [`Progress::down_rate`], while it is known and
    /// nonzero and the download is not complete.
    pub fn eta_s(&self) -> Option<f64> {
        let rate = self.down_rate();
        self.total_bytes
            .filter(|_| rate > 0.0 && !self.complete)
            .map(|t| t.saturating_sub(self.done_bytes) as f64 / rate)
    }

    pub(crate) fn new(id: ContentId) -> Self {
        Self {
            id,
            total_bytes: None,
            done_bytes: 0,
            pieces_done: 0,
            num_pieces: 0,
            connected_peers: 0,
            peers: Vec::new(),
            complete: false,
            failed: None,
            pieces_failed: 0,
            known_peers: 0,
            dials: 0,
            last_dial_error: None,
            files: None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) local: PeerId,
    pub(crate) cfg: NodeConfig,
    pub(crate) registry: Mutex<HashMap<ContentId, mpsc::Sender<Ev>>>,
    /// Shared contents whose source no longer matches their id (the file was
    /// changed or truncated after it was shared), with why: not served again
    /// until shared again (which gives them a new id, or clears this one).
    pub(crate) broken: Mutex<HashMap<ContentId, String>>,
    pub(crate) pool: BufPool,
    pub(crate) io_limit: Arc<Semaphore>,
    /// TransferService-wide rate limits and traffic counters, shared by every stream.
    pub(crate) meter: Arc<Meter>,
    /// Addresses of peers, for peer exchange (none: peer exchange sends nothing).
    pub(crate) book: OnceLock<Arc<dyn AddressBook>>,
    /// Most connections per content, changeable while running (starts as
    /// `cfg.max_peers`).
    pub(crate) max_peers: std::sync::atomic::AtomicU32,
    /// Who may fetch what: every inbound stream is admitted here.
    pub(crate) access: Arc<Access>,
    /// What each content task reported of its uploads (see [`Uploads`]).
    pub(crate) uploads: Mutex<HashMap<ContentId, Uploads>>,
    /// Folders this node serves or downloads whole files of (§6.5).
    pub(crate) folders: crate::folder::Registry,
}

impl Shared {
    /// The live per-content connection limit.
    pub(crate) fn max_peers(&self) -> u32 {
        self.max_peers.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether this node can serve a content id a peer was admitted for.
enum Served {
    /// A running download or seed of it.
    Yes(mpsc::Sender<Ev>),
    /// Nothing here holds its bytes.
    NotShared,
}

/// How long `DownloadHandle::stop` waits for the transfer tasks to end.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Content-task queue length.
const CONTENT_QUEUE: usize = 256;

/// A shoal node: serves what its store shares and downloads content.
///
/// Dropping the node stops its seeding tasks (downloads stop with their handles).
pub struct TransferService {
    shared: Arc<Shared>,
    seeds: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for TransferService {
    fn drop(&mut self) {
        if let Ok(s) = self.seeds.lock() {
            for h in s.iter() {
                h.abort();
            }
        }
    }
}

/// Where a download stands; dropping it stops the download (progress is kept on
/// disk, so starting it again resumes).
pub struct DownloadHandle {
    progress: watch::Receiver<Progress>,
    alive: mpsc::Receiver<()>,
    result: Option<oneshot::Receiver<Result<PathBuf, NodeError>>>,
    task: Option<JoinHandle<()>>,
    id: ContentId,
    limit: Arc<RateLimiter>,
    priority: mpsc::UnboundedSender<(Vec<String>, FilePriority)>,
}

/// How much a file of a folder download is wanted, changeable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FilePriority {
    /// Not fetched (a file not yet here is never created).
    Skip,
    Normal,
    /// Fetched before the normal ones.
    High,
}

impl FilePriority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

impl std::str::FromStr for FilePriority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            other => Err(format!(
                "unknown priority {other:?}: one of skip, normal, high"
            )),
        }
    }
}

impl Drop for DownloadHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl DownloadHandle {
    /// Per-transfer download limit (bytes/s), on top of the node-wide one;
    /// `None` (or 0) = unlimited. Applies at once to every session of this
    /// download (for a collection: of all its files).
    pub fn set_download_limit(&self, limit: Option<u64>) {
        self.limit.set(limit);
    }

    /// The per-transfer download limit set with
    /// [`set_download_limit`](Self::set_download_limit).
    pub fn download_limit(&self) -> Option<u64> {
        self.limit.get()
    }

    /// Sets the priority of the files of a folder download at these paths
    /// (inside the folder, as its manifest names them), now or, before the
    /// manifest is here, as soon as it is. Paths the folder lacks and files
    /// not chosen (`FileChoice`) are ignored; a file skipped after it
    /// arrived stays. Without effect on a file's download.
    pub fn set_priority(&self, paths: Vec<String>, priority: FilePriority) {
        let _ = self.priority.send((paths, priority));
    }

    /// Progress updates (at most every 100 ms, and on every state change).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits for the download to finish: the path of the file or collection
    /// folder. The transfer task keeps serving other peers until the handle is
    /// dropped.
    pub async fn result(&mut self) -> Result<PathBuf, NodeError> {
        let Some(rx) = self.result.take() else {
            return Err(NodeError::Stopped { id: self.id });
        };
        rx.await.unwrap_or(Err(NodeError::Stopped { id: self.id }))
    }

    /// Stops the download and waits until its tasks are gone (its partial file is
    /// closed and its progress persisted).
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        // Every transfer task of this download holds a sender; all are gone (and
        // their partial files closed) when this returns None.
        let _ = tokio::time::timeout(STOP_WAIT, self.alive.recv()).await;
    }
}

impl TransferService {
    /// The manifest of folder `id`, the store's cached copy or fetched from
    /// the peers `connector` finds (presenting `capability`, a ticket's
    /// invite), verified against `id` and decoded: what `shoal ls` lists.
    /// It waits for a provider as a download does: the caller bounds it.
    pub async fn manifest(
        &self,
        id: ContentId,
        connector: Arc<dyn Connector>,
        capability: Option<Vec<u8>>,
    ) -> Result<Manifest, NodeError> {
        let cap = capability.filter(|c| !c.is_empty()).map(Arc::new);
        let (alive, mut alive_rx) = mpsc::channel(1);
        let res = fetch_manifest(
            &self.shared,
            id,
            connector,
            alive,
            Arc::new(RateLimiter::default()),
            cap,
        )
        .await;
        // Writes of the fetch still in flight end before the answer.
        while alive_rx.recv().await.is_some() {}
        res.map(|(m, _)| m)
    }

    /// A node serving `store`'s shares, identified by `local` (its own peer id,
    /// which it never dials).
    pub fn new(store: Store, local: PeerId, config: NodeConfig) -> Self {
        let io = config.io_concurrency.max(1);
        let max_peers = std::sync::atomic::AtomicU32::new(config.max_peers.max(1));
        let store_for_access = store.clone();
        Self {
            shared: Arc::new(Shared {
                store,
                local,
                cfg: config,
                registry: Mutex::new(HashMap::new()),
                broken: Mutex::new(HashMap::new()),
                pool: BufPool::default(),
                io_limit: Arc::new(Semaphore::new(io)),
                meter: Arc::new(Meter::default()),
                book: OnceLock::new(),
                max_peers,
                access: Arc::new(Access::new(store_for_access, local)),
                uploads: Mutex::new(HashMap::new()),
                folders: Mutex::new(HashMap::new()),
            }),
            seeds: Mutex::new(Vec::new()),
        }
    }

    /// Serves `id` again after its source failed (it was shared again).
    pub(crate) fn clear_broken(&self, id: &ContentId) {
        if let Ok(mut b) = self.shared.broken.lock() {
            b.remove(id);
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The access service: decides every inbound stream; call
    /// [`Access::changed`] after changing a policy so running sessions are
    /// checked again.
    pub fn access(&self) -> &Arc<Access> {
        &self.shared.access
    }

    /// Gives the node the address source peer exchange offers peers from
    /// (only the first call counts; without one, no peer is offered).
    pub fn set_address_book(&self, book: Arc<dyn AddressBook>) {
        let _ = self.shared.book.set(book);
    }

    /// Sets the most connections per content (at least 1). Running transfers
    /// dial and accept against it at once; sessions above a lowered limit stay
    /// until they end.
    pub fn set_max_peers(&self, n: u32) {
        self.shared
            .max_peers
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The most connections per content, as in force now.
    pub fn max_peers(&self) -> u32 {
        self.shared.max_peers()
    }

    /// Sets the node-wide rate limits; they apply at once to every open
    /// transfer stream and to later ones.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.meter.set_limits(limits);
    }

    /// The node-wide rate limits (a limit of 0 reads back as `None`).
    pub fn limits(&self) -> Limits {
        self.shared.meter.limits()
    }

    /// What this node sent of each content since it started, with the peers
    /// it is sending to now.
    pub fn uploads(&self) -> HashMap<ContentId, Uploads> {
        self.shared
            .uploads
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// [`uploads`](Self::uploads) of one content.
    pub fn uploads_of(&self, id: &ContentId) -> Option<Uploads> {
        self.shared.uploads.lock().ok()?.get(id).cloned()
    }

    /// Content tasks running (downloads, and seeds with peers or idle for
    /// less than `NodeConfig::seed_idle`).
    pub fn content_tasks(&self) -> usize {
        self.shared
            .registry
            .lock()
            .map(|r| r.values().filter(|tx| !tx.is_closed()).count())
            .unwrap_or(0)
    }

    /// Traffic and verification totals since the node was created.
    pub fn counters(&self) -> Counters {
        self.shared.meter.stats.snapshot()
    }

    /// Serves an inbound transfer stream from the authenticated `peer`: reads its
    /// hello (within `INBOUND_HELLO_WAIT`), then hands the stream to the task of the
    /// content it names, starting a seeding task if the store shares it. Denies
    /// (`NotFound`, `BadHello`, `VersionUnsupported`, `Busy`, `Banned`, layout
    /// mismatches) what it cannot serve. Returns once the stream is handed over.
    pub async fn accept(&self, peer: PeerId, stream: impl Stream) -> Result<(), NodeError> {
        self.accept_from(peer, None, stream).await
    }

    /// [`accept`](Self::accept), noting where the stream came from in the
    /// access log and in [`uploads`](Self::uploads).
    pub async fn accept_from(
        &self,
        peer: PeerId,
        remote: Option<Remote>,
        stream: impl Stream,
    ) -> Result<(), NodeError> {
        let addr = remote.as_ref().map(|r| format!("{} ({})", r.addr, r.path));
        let stream: BoxStream = Box::new(Throttled::new(stream, self.shared.meter.clone()));
        let (r, mut w) = tokio::io::split(stream);
        let mut fr = FrameReader::new(r);
        let n = match tokio::time::timeout(INBOUND_HELLO_WAIT, fr.fill_frame()).await {
            Err(_) => {
                let close = Message::Close {
                    code: CloseCode::Timeout,
                    text: "no hello",
                };
                let _ = write_frame(&mut w, &close).await;
                return Err(NodeError::Closed {
                    code: CloseCode::Timeout,
                    text: "no hello within the hello timeout".into(),
                });
            }
            Ok(Err(ReadError::Io(e))) => return Err(e.into()),
            Ok(Err(ReadError::Proto(e))) => {
                deny(&mut w, e.deny_reason(), "bad hello").await;
                return Err(e.into());
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(n))) => n,
        };
        let (id, piece_size, content_len, capability) = match decode_frame(fr.frame(n)) {
            Ok(Some((Message::Hello(h), _))) => (
                h.content,
                h.piece_size,
                h.content_len,
                h.capability.to_vec(),
            ),
            Ok(Some((Message::Close { .. }, _))) => return Ok(()),
            Ok(_) => {
                deny(
                    &mut w,
                    DenyReason::BadHello,
                    "the first message must be Hello",
                )
                .await;
                return Err(NodeError::Closed {
                    code: CloseCode::UnexpectedMessage,
                    text: "the first message was not a hello".into(),
                });
            }
            Err(e) => {
                deny(&mut w, e.deny_reason(), "bad hello").await;
                return Err(e.into());
            }
        };
        fr.consume(n);
        // The one admission point: every stream, whatever task serves it.
        let access = self.shared.access.clone();
        let (verdict, log) = {
            let cap = capability.clone();
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || access.admit(&id, &peer, addr.as_deref(), &cap))
                .await
                .map_err(|e| NodeError::Internal(format!("the access check failed: {e}")))??
        };
        if let Verdict::Deny(d) = verdict {
            deny(&mut w, d.reason, &d.text).await;
            return Ok(());
        }
        // A `FileBitfield` right after the hello makes this a folder session
        // (§6.5); anything else is a content's session, for its task. The
        // initiator sends its availability with its hello, so this waits
        // only for bytes already on their way.
        let folder = match tokio::time::timeout(INBOUND_HELLO_WAIT, fr.fill_frame()).await {
            Ok(Ok(Some(n))) => matches!(
                shoal_core::proto::decode_header(fr.frame(n)),
                Ok(Some(h)) if h.kind == shoal_core::proto::MessageType::FileBitfield
            ),
            _ => false,
        };
        if folder {
            let layout = (piece_size, content_len);
            return crate::folder::accept(
                &self.shared,
                id,
                peer,
                fr,
                w,
                layout,
                capability,
                log,
                remote,
            )
            .await;
        }
        let mut ev = Ev::Inbound {
            peer,
            fr,
            w,
            piece_size,
            content_len,
            admitted: crate::content::Admitted {
                capability,
                log,
                remote,
            },
        };
        // A task that just ended (its content no longer held) drops its channel:
        // one more try starts a fresh one if the content is still served.
        for _ in 0..2 {
            let tx = match self.content_task(id)? {
                Served::Yes(tx) => tx,
                Served::NotShared => {
                    let why = self
                        .shared
                        .broken
                        .lock()
                        .ok()
                        .and_then(|b| b.get(&id).cloned())
                        .unwrap_or_else(|| "not shared here".to_owned());
                    if let Ev::Inbound { mut w, .. } = ev {
                        deny(&mut w, DenyReason::NotFound, &why).await;
                    }
                    return Ok(());
                }
            };
            match tx.send(ev).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => ev = back,
            }
        }
        Err(NodeError::Stopped { id })
    }

    /// The task serving `id`: a running download or seed, or a new seeding task if
    /// the store shares `id`.
    fn content_task(&self, id: ContentId) -> Result<Served, NodeError> {
        let mut reg = self
            .shared
            .registry
            .lock()
            .map_err(|_| NodeError::Internal("the content registry is poisoned".into()))?;
        if let Some(tx) = reg.get(&id) {
            if !tx.is_closed() {
                return Ok(Served::Yes(tx.clone()));
            }
        }
        let store = &self.shared.store;
        if self.shared.broken.lock().is_ok_and(|b| b.contains_key(&id)) {
            return Ok(Served::NotShared);
        }
        let blob = if store.db().grants_of(&id)?.is_empty() {
            // Not shared, but maybe the manifest or a larger file of a folder
            // this node downloads or downloaded (served while its download
            // lives, like a file's).
            crate::folder::blob_of(&self.shared, &id)
        } else {
            store.blob(&id)?
        };
        let (outboard, file, memory) = match blob {
            None => return Ok(Served::NotShared),
            Some(Blob::File(path)) => match store.outboard(&id)? {
                Some(ob) => (ob, Some(path), None),
                None => return Ok(Served::NotShared),
            },
            Some(Blob::Manifest(bytes)) => {
                let ob = match store.outboard(&id)? {
                    Some(ob) => ob,
                    None => hash_bytes(&bytes)
                        .map_err(|e| NodeError::Internal(format!("manifest of {id}: {e}")))?,
                };
                (ob, None, Some(bytes))
            }
        };
        let (tx, rx) = mpsc::channel(CONTENT_QUEUE);
        let c = Content::seed(id, self.shared.clone(), tx.clone(), outboard, file, memory)?;
        let h = tokio::spawn(c.run(rx));
        if let Ok(mut s) = self.seeds.lock() {
            s.retain(|h| !h.is_finished());
            s.push(h.abort_handle());
        }
        reg.insert(id, tx.clone());
        Ok(Served::Yes(tx))
    }

    /// Downloads content `id` into `out_dir`, named `name` (default: the id in
    /// hex), from the peers `connector` finds. A file goes to `out_dir/name`; a
    /// collection to `out_dir/name/<path>` for each of its files, never outside
    /// that folder. Starting the same download again resumes it.
    pub fn download(
        &self,
        id: ContentId,
        kind: Kind,
        out_dir: &Path,
        name: Option<&str>,
        connector: Arc<dyn Connector>,
    ) -> DownloadHandle {
        self.download_with(id, kind, out_dir, name, connector, None)
    }

    /// [`download`](Self::download) presenting `capability` (an invite) in every
    /// hello. Content fetched with an invite is served to nobody else; without
    /// one, to anyone who knows its id (unlisted) while the download's task lives.
    pub fn download_with(
        &self,
        id: ContentId,
        kind: Kind,
        out_dir: &Path,
        name: Option<&str>,
        connector: Arc<dyn Connector>,
        capability: Option<Vec<u8>>,
    ) -> DownloadHandle {
        self.download_chosen(id, kind, out_dir, name, connector, capability, None)
    }

    /// [`download_with`](Self::download_with) of only the files of a folder
    /// that `choice` chooses; the others are never created.
    #[allow(clippy::too_many_arguments)]
    pub fn download_chosen(
        &self,
        id: ContentId,
        kind: Kind,
        out_dir: &Path,
        name: Option<&str>,
        connector: Arc<dyn Connector>,
        capability: Option<Vec<u8>>,
        choice: Option<Arc<FileChoice>>,
    ) -> DownloadHandle {
        let cap = capability.filter(|c| !c.is_empty()).map(Arc::new);
        let (ptx, prx) = watch::channel(Progress::new(id));
        let (rtx, rrx) = oneshot::channel();
        let (alive, alive_rx) = mpsc::channel(1);
        let shared = self.shared.clone();
        let out_dir = out_dir.to_path_buf();
        let name = name.map(str::to_owned);
        let limit = Arc::new(RateLimiter::default());
        let lim = limit.clone();
        let (priority, prio_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let name = match name {
                Some(n) if !shoal_core::manifest::is_plain_name(&n) => {
                    let _ = rtx.send(Err(NodeError::UnsafeDestination {
                        path: out_dir.join(n),
                        why: "the name is not a single plain file name",
                    }));
                    return;
                }
                Some(n) => n,
                None => id.to_hex(),
            };
            let dest = out_dir.join(name);
            match kind {
                Kind::Collection => {
                    let res = download_collection(
                        &shared, id, &dest, connector, &ptx, alive, lim, cap, choice, prio_rx,
                    )
                    .await;
                    match res {
                        Ok((path, folder, mut agg)) => {
                            let _ = rtx.send(Ok(path));
                            // The folder's files are served to its other
                            // peers until the handle is dropped; what they
                            // are sent keeps being counted.
                            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                            loop {
                                tick.tick().await;
                                agg.set_whole(folder.folder());
                                agg.publish(&ptx);
                            }
                        }
                        Err(e) => {
                            let _ = rtx.send(Err(e));
                        }
                    }
                }
                _ => {
                    // The task keeps seeding after it finished, until the handle drops.
                    let _ = run_file(
                        &shared,
                        id,
                        dest,
                        connector,
                        ptx,
                        None,
                        Some(rtx),
                        alive,
                        lim,
                        cap,
                    )
                    .await;
                }
            }
        });
        DownloadHandle {
            progress: prx,
            alive: alive_rx,
            result: Some(rrx),
            task: Some(task),
            id,
            limit,
            priority,
        }
    }
}

pub(crate) async fn deny<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    reason: DenyReason,
    text: &str,
) {
    // A text over the protocol's limit would make the frame unencodable, and
    // the peer would get no answer at all.
    let text = crate::content::text(text);
    let _ = write_frame(w, &Message::Deny { reason, text }).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(w).await;
}

/// Runs one file download to `dest`. With `report`, the result goes there and the
/// task keeps serving until dropped; without, returns the result when done.
#[allow(clippy::too_many_arguments)]
async fn run_file(
    shared: &Arc<Shared>,
    id: ContentId,
    dest: PathBuf,
    connector: Arc<dyn Connector>,
    ptx: watch::Sender<Progress>,
    max_len: Option<u64>,
    report: Option<oneshot::Sender<Result<PathBuf, NodeError>>>,
    alive: mpsc::Sender<()>,
    limit: Arc<RateLimiter>,
    capability: Option<Arc<Vec<u8>>>,
) -> Result<PathBuf, NodeError> {
    if id == ContentId::of(b"") {
        let res = create_empty(&dest).await;
        let ok = res.as_ref().map(|p| p.clone()).map_err(|e| e.to_string());
        ptx.send_modify(|p| {
            p.total_bytes = Some(0);
            p.complete = ok.is_ok();
            p.failed = ok.err();
        });
        return match report {
            Some(r) => {
                let _ = r.send(res);
                std::future::pending().await
            }
            None => res,
        };
    }
    let (tx, rx) = mpsc::channel(CONTENT_QUEUE);
    let (dtx, drx) = oneshot::channel();
    let policy = if capability.is_some() {
        DownloadPolicy::Private
    } else {
        DownloadPolicy::Unlisted
    };
    let cfg = DownloadCfg {
        dest,
        connector,
        done: Some(dtx),
        max_len,
        alive,
        limit,
        _grant: shared.access.register_download(id, policy),
        capability,
    };
    let c = Content::download(id, shared.clone(), tx.clone(), ptx, cfg);
    if let Ok(mut reg) = shared.registry.lock() {
        if reg.get(&id).is_none_or(|t| t.is_closed()) {
            reg.insert(id, tx);
        }
    }
    let task = AbortOnDrop(tokio::spawn(c.run(rx)));
    let res = drx.await.unwrap_or(Err(NodeError::Stopped { id }));
    match report {
        Some(r) => {
            let _ = r.send(res);
            // Keep serving other peers until the handle is dropped.
            let _ = task;
            std::future::pending().await
        }
        None => res,
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn create_empty(dest: &Path) -> Result<PathBuf, NodeError> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if m.is_file() && m.len() == 0 => return Ok(dest.to_path_buf()),
        Ok(_) => {
            return Err(NodeError::Store(
                shoal_store::StoreError::DestinationExists {
                    path: dest.to_path_buf(),
                },
            ))
        }
        Err(_) => {}
    }
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await?;
    Ok(dest.to_path_buf())
}

/// Creates `dir` (one level) unless it exists as a real folder; refuses symbolic
/// links and anything else in the way.
/// `path` (a manifest path: relative, '/'-separated, no '.' or '..'
/// components, no NUL or backslash, as `Manifest::decode` checked) under
/// `root`, with the folders above it made (and `path` itself too when
/// `is_folder`), none of them a link.
fn place_under(root: &Path, path: &str, is_folder: bool) -> Result<PathBuf, NodeError> {
    let mut dest = root.to_path_buf();
    let mut comps = path.split('/').peekable();
    while let Some(c) = comps.next() {
        dest.push(c);
        if is_folder || comps.peek().is_some() {
            ensure_dir(&dest)?;
        }
    }
    Ok(dest)
}

fn ensure_dir(dir: &Path) -> Result<(), NodeError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(NodeError::UnsafeDestination {
            path: dir.to_path_buf(),
            why: "it is a symbolic link",
        }),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(NodeError::UnsafeDestination {
            path: dir.to_path_buf(),
            why: "a file is where a folder must be",
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ensure_dir(dir),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` already holds exactly the content `id` of `size` bytes.
/// Whether `path` already holds exactly the content `id` (a regular file of
/// `size` bytes whose BLAKE3 root is `id`): a download run again after it
/// completed fetches nothing. A file of another size is not hashed.
pub(crate) fn already_complete(path: &Path, id: ContentId, size: u64) -> Result<bool, NodeError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(NodeError::UnsafeDestination {
            path: path.to_path_buf(),
            why: "it is a symbolic link",
        }),
        Ok(m) if m.is_file() && m.len() == size => {
            let ob = shoal_store::hash_file(path, &|_| {})?;
            Ok(ob.root() == id)
        }
        _ => Ok(false),
    }
}

/// A folder's manifest: the copy in the store's `manifests/` folder if it
/// hashes to `id`, else fetched like any content from the peers `connector`
/// finds, into that folder, and decoded (bounded, every path checked).
async fn fetch_manifest(
    shared: &Arc<Shared>,
    id: ContentId,
    connector: Arc<dyn Connector>,
    alive: mpsc::Sender<()>,
    limit: Arc<RateLimiter>,
    capability: Option<Arc<Vec<u8>>>,
) -> Result<(Manifest, u64), NodeError> {
    // The manifest is fetched like any content, into the store's folder.
    let mdir = shared.store.dir().join("manifests");
    std::fs::create_dir_all(&mdir)?;
    let mpath = mdir.join(id.to_hex());
    let have = std::fs::read(&mpath)
        .ok()
        .filter(|b| ContentId::of(b) == id);
    let bytes = match have {
        Some(b) => b,
        None => {
            // A cached copy that does not hash to the id (damaged, cut short) is
            // the store's own file: fetched again rather than refused forever
            // as a destination that differs.
            match std::fs::remove_file(&mpath) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            let (mtx, _) = watch::channel(Progress::new(id));
            let max = Some(shoal_core::manifest::MAX_ENCODED_LEN as u64);
            run_file(
                shared,
                id,
                mpath.clone(),
                connector.clone(),
                mtx,
                max,
                None,
                alive.clone(),
                limit.clone(),
                capability.clone(),
            )
            .await?;
            std::fs::read(&mpath)?
        }
    };
    let manifest =
        Manifest::decode(&bytes).map_err(|source| NodeError::BadManifest { id, source })?;
    if ContentId::of(&bytes) != id {
        return Err(NodeError::Internal(format!(
            "the manifest file {} does not hash to {id}",
            mpath.display()
        )));
    }
    Ok((manifest, bytes.len() as u64))
}

#[allow(clippy::too_many_arguments)]
async fn download_collection(
    shared: &Arc<Shared>,
    id: ContentId,
    root: &Path,
    connector: Arc<dyn Connector>,
    ptx: &watch::Sender<Progress>,
    alive: mpsc::Sender<()>,
    limit: Arc<RateLimiter>,
    capability: Option<Arc<Vec<u8>>>,
    choice: Option<Arc<FileChoice>>,
    mut prio_rx: mpsc::UnboundedReceiver<(Vec<String>, FilePriority)>,
) -> Result<(PathBuf, crate::folder::FolderDownload, FolderProgress), NodeError> {
    let (manifest, manifest_len) = fetch_manifest(
        shared,
        id,
        connector.clone(),
        alive.clone(),
        limit.clone(),
        capability.clone(),
    )
    .await?;
    let manifest = Arc::new(manifest);
    let n = manifest.len();
    // The files fetched, by manifest index: all, or those `choice` chooses.
    let chosen: Vec<usize> = match &choice {
        None => (0..n).collect(),
        Some(c) => (0..n)
            .filter(|&i| c.chooses(&manifest.entries()[i].path))
            .collect(),
    };
    if chosen.is_empty() && n > 0 {
        return Err(NodeError::NothingChosen { id, files: n });
    }
    // Empty folders are made as the files are: all, or those whose path
    // `choice` chooses.
    let empty_folders: Vec<&str> = manifest
        .empty_folders()
        .filter(|f| choice.as_ref().is_none_or(|c| c.chooses(f)))
        .collect();
    // Names one file system would merge are refused before anything is
    // written (the folder itself included); `--only`/`--exclude` can leave
    // one of them out.
    if let Some((a, b)) = shoal_core::manifest::find_case_collision_with_folders(
        chosen.iter().map(|&i| manifest.entries()[i].path.as_str()),
        empty_folders.iter().copied(),
    ) {
        return Err(NodeError::NameCollision { id, a, b });
    }
    // Priorities set before the manifest was here (a resumed transfer's).
    let index: HashMap<&str, usize> = chosen
        .iter()
        .map(|&i| (manifest.entries()[i].path.as_str(), i))
        .collect();
    let mut prio: HashMap<usize, FilePriority> = HashMap::new();
    while let Ok((paths, p)) = prio_rx.try_recv() {
        for path in paths {
            if let Some(&i) = index.get(path.as_str()) {
                prio.insert(i, p);
            }
        }
    }
    let skipped =
        |prio: &HashMap<usize, FilePriority>, i: usize| prio.get(&i) == Some(&FilePriority::Skip);
    let total_of = |prio: &HashMap<usize, FilePriority>| -> u64 {
        chosen
            .iter()
            .filter(|&&i| !skipped(prio, i))
            .map(|&i| manifest.entries()[i].size)
            .sum()
    };
    let mut total = total_of(&prio);
    let files = Arc::new(FileBytes::new(n));
    ptx.send_modify(|p| {
        p.total_bytes = Some(total);
        p.files = Some(files.clone());
    });
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    ensure_dir(root)?;
    // Every file's place first: its folders made (none is a link), so the
    // files can be fetched in any order.
    let mut dests = vec![PathBuf::new(); n];
    for &i in &chosen {
        dests[i] = place_under(root, &manifest.entries()[i].path, false)?;
    }
    for folder in &empty_folders {
        place_under(root, folder, true)?;
    }
    // Whole files (§6.5) travel over folder sessions, many per round trip,
    // and part files (up to MAX_PART_FILE) piece by piece over the same
    // sessions; larger ones each in a swarm of its own, FOLDER_FILES_AT_ONCE
    // at a time.
    let (whole, larger): (Vec<usize>, Vec<usize>) = chosen
        .iter()
        .partition(|&&i| crate::folder::in_sessions(manifest.entries()[i].size));
    let (present, mut wanted) = {
        let (m, d) = (manifest.clone(), dests.clone());
        let whole = whole.clone();
        tokio::task::spawn_blocking(move || -> Result<(Vec<usize>, Vec<usize>), NodeError> {
            let (mut present, mut wanted) = (Vec::new(), Vec::new());
            for i in whole {
                let e = &m.entries()[i];
                // A temporary name left by an interrupted run (§ folder.rs);
                // a part file's is its partial file, resumed.
                if shoal_core::proto::is_whole_file(e.size) {
                    crate::folder::remove_temp(&d[i], e.id)?;
                }
                if already_complete(&d[i], e.id, e.size)? {
                    present.push(i);
                } else {
                    wanted.push(i);
                }
            }
            Ok((present, wanted))
        })
        .await
        .map_err(|e| NodeError::Internal(format!("checking the files failed: {e}")))??
    };
    let mut agg = FolderProgress::default();
    for &i in &present {
        let size = manifest.entries()[i].size;
        agg.finish(i, None, size);
        files.set(i, size);
    }
    // A file set to skip that is here already stays, and counts.
    for &i in &present {
        prio.remove(&i);
    }
    total = total_of(&prio);
    wanted.retain(|&i| !skipped(&prio, i));
    let fd = crate::folder::FolderDownload::start(
        shared,
        id,
        manifest.clone(),
        manifest_len,
        root,
        &wanted,
        &present,
        connector.clone(),
        limit.clone(),
        capability.clone(),
        files.clone(),
    );
    for (&i, &p) in &prio {
        if p == FilePriority::High && crate::folder::in_sessions(manifest.entries()[i].size) {
            fd.folder().set_priority(i, p);
        }
    }
    ptx.send_modify(|p| p.total_bytes = Some(total));
    agg.publish(ptx);
    let (utx, mut urx) = mpsc::channel::<(usize, Progress)>(64);
    let mut running = tokio::task::JoinSet::new();
    // The larger files not started yet, high priority first; the running
    // ones by task id (a skip stops one).
    let mut queue: std::collections::VecDeque<usize> = larger
        .iter()
        .copied()
        .filter(|&i| !skipped(&prio, i))
        .collect();
    let order = |q: &mut std::collections::VecDeque<usize>, prio: &HashMap<usize, FilePriority>| {
        q.make_contiguous()
            .sort_by_key(|i| (prio.get(i) != Some(&FilePriority::High), *i));
    };
    order(&mut queue, &prio);
    let mut tasks: HashMap<tokio::task::Id, (usize, tokio::task::AbortHandle)> = HashMap::new();
    // Whole files fetched by their own ids (see FILE_LOOKUPS_AT_ONCE): those
    // running, those to start, since when each unavailable one has been so,
    // and when each that came back may be tried again.
    let mut handed: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut lonely: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut unseen_since: HashMap<usize, tokio::time::Instant> = HashMap::new();
    let mut retry_at: HashMap<usize, tokio::time::Instant> = HashMap::new();
    let mut no_lookup = false;
    let mut done_larger: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut prio_open = true;
    let whole_done = fd.finished();
    tokio::pin!(whole_done);
    let mut whole_finished = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Up to FOLDER_FILES_AT_ONCE larger files at a time, in manifest
        // order (high priority first).
        while running.len() - handed.len() < FOLDER_FILES_AT_ONCE {
            let Some(i) = queue.pop_front() else {
                break;
            };
            let entry = manifest.entries()[i].clone();
            let dest = dests[i].clone();
            agg.inflight.insert(i, Progress::new(entry.id));
            let (shared, connector, alive, limit, capability, utx) = (
                shared.clone(),
                connector.clone(),
                alive.clone(),
                limit.clone(),
                capability.clone(),
                utx.clone(),
            );
            let task = running.spawn(async move {
                let (check, id, size) = (dest.clone(), entry.id, entry.size);
                let there = tokio::task::spawn_blocking(move || already_complete(&check, id, size))
                    .await
                    .map_err(|e| NodeError::Internal(format!("checking a file failed: {e}")))??;
                if there {
                    return Ok::<_, NodeError>((i, Fetch::Done(None)));
                }
                let connector = file_connector(&connector, entry.id);
                let last = fetch_file(
                    &shared, i, &entry, dest, connector, &utx, alive, limit, capability,
                )
                .await?;
                Ok((i, Fetch::Done(Some(last))))
            });
            tasks.insert(task.id(), (i, task));
        }
        // Whole files that no folder peer has had for a while: looked up by
        // their own ids, a few at a time; those nobody else has either go
        // back to the folder sessions.
        while handed.len() < FILE_LOOKUPS_AT_ONCE {
            let Some(i) = lonely.pop_front() else {
                break;
            };
            if !fd.folder().hand_over(i) {
                continue;
            }
            let Some(file) = connector.for_content(manifest.entries()[i].id) else {
                fd.folder().take_back(i);
                no_lookup = true;
                break;
            };
            handed.insert(i);
            let entry = manifest.entries()[i].clone();
            let dest = dests[i].clone();
            agg.inflight.insert(i, Progress::new(entry.id));
            let (shared, folder, alive, limit, capability, utx) = (
                shared.clone(),
                fd.folder().clone(),
                alive.clone(),
                limit.clone(),
                capability.clone(),
                utx.clone(),
            );
            let task = running.spawn(async move {
                // Only once someone has it: a fetch with no peer would fail.
                let deadline = tokio::time::Instant::now() + FILE_LOOKUP_WAIT;
                while file.peers().is_empty() {
                    if tokio::time::Instant::now() >= deadline || folder.available(i) {
                        return Ok((i, Fetch::Back));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                match fetch_file(
                    &shared, i, &entry, dest, file, &utx, alive, limit, capability,
                )
                .await
                {
                    Ok(last) => Ok((i, Fetch::Done(Some(last)))),
                    Err(e) => {
                        tracing::debug!(file = %entry.path, error = %e, "no provider of the file alone delivered it");
                        Ok((i, Fetch::Back))
                    }
                }
            });
            tasks.insert(task.id(), (i, task));
        }
        if running.is_empty() && whole_finished {
            break;
        }
        tokio::select! {
            res = &mut whole_done, if !whole_finished => {
                res?;
                whole_finished = true;
                agg.set_whole(fd.folder());
                agg.publish(ptx);
            }
            Some((i, cur)) = urx.recv() => {
                // An update of a file that has ended comes too late.
                if let Some(slot) = agg.inflight.get_mut(&i) {
                    files.set(i, cur.done_bytes);
                    *slot = cur;
                    agg.publish(ptx);
                }
            }
            joined = running.join_next_with_id(), if !running.is_empty() => match joined {
                Some(Ok((task, Ok((i, Fetch::Done(last)))))) => {
                    tasks.remove(&task);
                    handed.remove(&i);
                    done_larger.insert(i);
                    let size = manifest.entries()[i].size;
                    agg.finish(i, last, size);
                    files.set(i, size);
                    fd.folder().add_present(i);
                    agg.publish(ptx);
                }
                Some(Ok((task, Ok((i, Fetch::Back))))) => {
                    tasks.remove(&task);
                    handed.remove(&i);
                    agg.inflight.remove(&i);
                    files.set(i, 0);
                    retry_at.insert(i, tokio::time::Instant::now() + FILE_LOOKUP_RETRY);
                    fd.folder().take_back(i);
                    if whole_finished && !skipped(&prio, i) {
                        whole_done.set(fd.finished());
                        whole_finished = false;
                    }
                    agg.publish(ptx);
                }
                // The first failure ends the folder; dropping `running`
                // stops the files still running (their partial data stays
                // for a resume).
                Some(Ok((_, Err(e)))) => return Err(e),
                // Set to skip while it ran: its partial data stays.
                Some(Err(e)) if e.is_cancelled() => {
                    if let Some((i, _)) = tasks.remove(&e.id()) {
                        agg.inflight.remove(&i);
                        if handed.remove(&i) {
                            fd.folder().take_back(i);
                        }
                        agg.publish(ptx);
                    }
                }
                Some(Err(e)) => {
                    return Err(NodeError::Internal(format!("a file's download task failed: {e}")))
                }
                None => {}
            },
            change = prio_rx.recv(), if prio_open => match change {
                None => prio_open = false,
                Some((paths, p)) => {
                    for path in paths {
                        let Some(&i) = index.get(path.as_str()) else {
                            continue;
                        };
                        if files.get(i) == Some(manifest.entries()[i].size) || done_larger.contains(&i) {
                            continue; // here already
                        }
                        let before = prio.insert(i, p).unwrap_or(FilePriority::Normal);
                        // A skipped file's fetch stops (a larger file's swarm,
                        // or a whole file's fetch by its own id).
                        if p == FilePriority::Skip {
                            if let Some((_, (_, task))) = tasks.iter().find(|(_, (x, _))| *x == i) {
                                task.abort();
                            }
                        }
                        if crate::folder::in_sessions(manifest.entries()[i].size) {
                            fd.folder().set_priority(i, p);
                            if p != FilePriority::Skip && whole_finished {
                                // Needed again after the others arrived.
                                whole_done.set(fd.finished());
                                whole_finished = false;
                            }
                        } else if p == FilePriority::Skip {
                            queue.retain(|&q| q != i);
                        } else if before == FilePriority::Skip
                            && !tasks.values().any(|(x, _)| *x == i)
                        {
                            queue.push_back(i);
                        }
                    }
                    order(&mut queue, &prio);
                    total = total_of(&prio);
                    ptx.send_modify(|x| x.total_bytes = Some(total));
                    agg.publish(ptx);
                }
            },
            _ = tick.tick() => {
                agg.set_whole(fd.folder());
                agg.publish(ptx);
                if !no_lookup && lonely.is_empty() && handed.len() < FILE_LOOKUPS_AT_ONCE {
                    let now = tokio::time::Instant::now();
                    let missing = fd.folder().unavailable(LONELY_SCAN);
                    unseen_since.retain(|i, _| missing.contains(i));
                    retry_at.retain(|_, at| *at > now);
                    for i in missing {
                        let since = *unseen_since.entry(i).or_insert(now);
                        if now - since >= LONELY_AFTER
                            && !retry_at.contains_key(&i)
                            && lonely.len() < FILE_LOOKUPS_AT_ONCE
                        {
                            lonely.push_back(i);
                        }
                    }
                }
            }
        }
    }
    agg.set_whole(fd.folder());
    agg.publish(ptx);
    ptx.send_modify(|p| {
        p.done_bytes = total;
        p.complete = true;
    });
    Ok((root.to_path_buf(), fd, agg))
}

/// How a file fetched by its own id ended: here (its last figures, `None`
/// when it was here already), or back to the folder sessions (no provider
/// of it alone delivered it).
enum Fetch {
    Done(Option<Progress>),
    Back,
}

/// Fetches file `i` of a folder (`entry`) by its id into `dest` from the
/// peers of `connector`, sending its progress on `utx`; returns its last
/// figures.
#[allow(clippy::too_many_arguments)]
async fn fetch_file(
    shared: &Arc<Shared>,
    i: usize,
    entry: &shoal_core::manifest::Entry,
    dest: PathBuf,
    connector: Arc<dyn Connector>,
    utx: &mpsc::Sender<(usize, Progress)>,
    alive: mpsc::Sender<()>,
    limit: Arc<RateLimiter>,
    capability: Option<Arc<Vec<u8>>>,
) -> Result<Progress, NodeError> {
    let (ftx, mut frx) = watch::channel(Progress::new(entry.id));
    let fut = run_file(
        shared,
        entry.id,
        dest,
        connector,
        ftx,
        Some(entry.size),
        None,
        alive,
        limit,
        capability,
    );
    tokio::pin!(fut);
    loop {
        tokio::select! {
            res = &mut fut => { res?; break; }
            changed = frx.changed() => {
                if changed.is_err() {
                    (&mut fut).await?;
                    break;
                }
                let cur = frx.borrow().clone();
                let _ = utx.send((i, cur)).await;
            }
        }
    }
    // The file's last figures (its final update may not have been sent).
    let last = frx.borrow().clone();
    Ok(last)
}

/// Whole files of a folder looked up by their own ids at once, when no
/// peer of the folder has them (`docs/protocol.md` §6.5): each is one DHT
/// lookup and, if a provider of that file alone answers, one swarm.
pub const FILE_LOOKUPS_AT_ONCE: usize = 4;

/// How long a whole file must be unavailable from every folder peer before
/// it is looked up by its own id (peers' bitfields arrive in the first
/// round trips).
const LONELY_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a lookup waits for a provider of the file alone.
const FILE_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a file nobody else delivered waits before it is looked up again.
const FILE_LOOKUP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Most unavailable files one scan collects (a scan is every 500 ms).
const LONELY_SCAN: usize = 64;

/// How many files of a folder download at once (each its own stream per
/// peer, as the protocol allows): enough to hide the round trips a small
/// file costs, few enough to stay within a peer's handshake and accept
/// limits per source (8 fast-path handshakes, 16 hellos).
pub const FOLDER_FILES_AT_ONCE: usize = 4;

/// A folder's progress from its files': the files complete so far and the
/// ones being fetched.
#[derive(Default)]
struct FolderProgress {
    /// Bytes of the files complete (fetched, or found already there).
    complete: u64,
    /// Pieces that failed verification in the files complete.
    failed: u64,
    /// Each peer's (down, up) bytes in the files complete.
    before: HashMap<PeerId, (u64, u64)>,
    /// The files being fetched, by manifest index, as last seen.
    inflight: std::collections::BTreeMap<usize, Progress>,
    /// Peers in the order first seen.
    order: Vec<PeerId>,
    /// The folder sessions' part (whole files): bytes placed, files that
    /// failed verification, each peer's (down, up, connected, banned).
    whole: (u64, u64),
    whole_peers: HashMap<PeerId, crate::folder::PeerStat>,
    /// Each peer's folder-session bytes at the last rate sample, and when.
    sampled: HashMap<PeerId, (u64, u64)>,
    sampled_at: Option<std::time::Instant>,
    whole_rates: HashMap<PeerId, (f64, f64)>,
}

impl FolderProgress {
    /// File `i` ended: `last` its final figures (`None`: already there).
    fn finish(&mut self, i: usize, last: Option<Progress>, size: u64) {
        self.inflight.remove(&i);
        self.complete += size;
        if let Some(last) = last {
            self.failed += last.pieces_failed;
            for fp in &last.peers {
                let e = self.before.entry(fp.peer).or_insert((0, 0));
                e.0 += fp.downloaded;
                e.1 += fp.uploaded;
            }
        }
    }

    /// Takes the folder sessions' figures; rates over the time since the
    /// last sample (at least 0.4 s apart).
    fn set_whole(&mut self, folder: &crate::folder::Folder) {
        self.whole = folder.fetched();
        self.whole_peers = folder.peers();
        let now = std::time::Instant::now();
        let elapsed = self.sampled_at.map(|t| now.duration_since(t).as_secs_f64());
        if elapsed.is_some_and(|e| e < 0.4) {
            return;
        }
        for (peer, st) in &self.whole_peers {
            let (d0, u0) = self.sampled.get(peer).copied().unwrap_or((0, 0));
            let rate = |now: u64, before: u64| match elapsed {
                Some(e) if e > 0.0 => now.saturating_sub(before) as f64 / e,
                _ => 0.0,
            };
            self.whole_rates
                .insert(*peer, (rate(st.down, d0), rate(st.up, u0)));
            self.sampled.insert(*peer, (st.down, st.up));
        }
        self.sampled_at = Some(now);
    }

    fn publish(&mut self, ptx: &watch::Sender<Progress>) {
        let mut peers: HashMap<PeerId, PeerProgress> = HashMap::new();
        for (peer, st) in &self.whole_peers {
            let (down_rate, up_rate) = self.whole_rates.get(peer).copied().unwrap_or((0.0, 0.0));
            peers.insert(
                *peer,
                PeerProgress {
                    peer: *peer,
                    connected: st.sessions > 0,
                    downloaded: st.down,
                    uploaded: st.up,
                    down_rate: if st.sessions > 0 { down_rate } else { 0.0 },
                    up_rate: if st.sessions > 0 { up_rate } else { 0.0 },
                    banned: st.banned,
                },
            );
        }
        for (&peer, &(down, up)) in &self.before {
            let e = peers.entry(peer).or_insert(PeerProgress {
                peer,
                connected: false,
                downloaded: 0,
                uploaded: 0,
                down_rate: 0.0,
                up_rate: 0.0,
                banned: false,
            });
            e.downloaded += down;
            e.uploaded += up;
        }
        let (mut done, mut failed) = (self.complete + self.whole.0, self.failed + self.whole.1);
        let (mut known, mut dials, mut error) = (0, 0, None);
        for p in self.inflight.values() {
            done += p.done_bytes;
            failed += p.pieces_failed;
            known = known.max(p.known_peers);
            dials = dials.max(p.dials);
            if p.last_dial_error.is_some() {
                error = p.last_dial_error.clone();
            }
            for fp in &p.peers {
                let e = peers.entry(fp.peer).or_insert(PeerProgress {
                    peer: fp.peer,
                    connected: false,
                    downloaded: 0,
                    uploaded: 0,
                    down_rate: 0.0,
                    up_rate: 0.0,
                    banned: false,
                });
                e.downloaded += fp.downloaded;
                e.uploaded += fp.uploaded;
                e.down_rate += fp.down_rate;
                e.up_rate += fp.up_rate;
                e.connected |= fp.connected;
                e.banned |= fp.banned;
            }
        }
        for peer in peers.keys() {
            if !self.order.contains(peer) {
                self.order.push(*peer);
            }
        }
        let list: Vec<PeerProgress> = self.order.iter().filter_map(|p| peers.remove(p)).collect();
        ptx.send_modify(|p| {
            // A banned peer stays banned for the folder.
            let banned: Vec<PeerId> = p
                .peers
                .iter()
                .filter(|x| x.banned)
                .map(|x| x.peer)
                .collect();
            p.done_bytes = done;
            p.pieces_failed = failed;
            p.connected_peers = list.iter().filter(|x| x.connected).count();
            p.known_peers = known;
            p.dials = dials;
            p.last_dial_error = error;
            p.peers = list
                .into_iter()
                .map(|mut x| {
                    x.banned |= banned.contains(&x.peer);
                    x
                })
                .collect();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: PeerId, down: u64, rate: f64) -> PeerProgress {
        PeerProgress {
            peer: id,
            connected: true,
            downloaded: down,
            uploaded: 0,
            down_rate: rate,
            up_rate: 0.0,
            banned: false,
        }
    }

    /// One rate for every view: all peers' rates summed (a peer that just
    /// left still counts for its window), and the ETA at that rate.
    #[test]
    fn the_rate_is_every_peers_and_the_eta_follows_it() {
        let id = ContentId::of(b"file");
        let mut p = Progress::new(id);
        assert_eq!((p.down_rate(), p.eta_s()), (0.0, None));
        p.total_bytes = Some(1000);
        p.done_bytes = 400;
        let mut gone = peer(PeerId::random(), 100, 50.0);
        gone.connected = false;
        p.peers = vec![peer(PeerId::random(), 300, 250.0), gone];
        assert_eq!(p.down_rate(), 300.0);
        assert_eq!(p.eta_s(), Some(2.0));
        p.complete = true;
        assert_eq!(p.eta_s(), None);
    }

    /// A folder's progress: files fetched at once add up (bytes and rates);
    /// each peer's bytes add up over the files, and a peer of a finished
    /// file that no running file has keeps its bytes but shows no rate.
    #[test]
    fn a_folders_files_add_up_and_finished_files_peers_lose_their_rates() {
        let id = ContentId::of(b"folder");
        let (a, b) = (PeerId::random(), PeerId::random());
        let (ptx, prx) = watch::channel(Progress::new(id));
        let mut agg = FolderProgress::default();
        let mut first = Progress::new(id);
        first.done_bytes = 100;
        first.peers = vec![peer(a, 60, 10.0), peer(b, 40, 20.0)];
        let mut second = Progress::new(id);
        second.done_bytes = 30;
        second.peers = vec![peer(a, 30, 5.0)];
        agg.inflight.insert(0, first.clone());
        agg.inflight.insert(1, second.clone());
        agg.publish(&ptx);
        let p = prx.borrow().clone();
        assert_eq!((p.done_bytes, p.connected_peers), (130, 2));
        assert_eq!(p.down_rate(), 35.0);
        // The first file ends (100 bytes); the second goes on with a alone.
        agg.finish(0, Some(first), 100);
        second.done_bytes = 50;
        second.peers = vec![peer(a, 50, 5.0)];
        agg.inflight.insert(1, second);
        agg.publish(&ptx);
        let p = prx.borrow().clone();
        assert_eq!(p.done_bytes, 150);
        let pa = p.peers.iter().find(|x| x.peer == a).unwrap();
        let pb = p.peers.iter().find(|x| x.peer == b).unwrap();
        assert_eq!(
            (pa.downloaded, pa.down_rate, pa.connected),
            (110, 5.0, true)
        );
        assert_eq!(
            (pb.downloaded, pb.down_rate, pb.connected),
            (40, 0.0, false)
        );
        // A file already there counts its size and no peer's bytes.
        agg.finish(2, None, 1000);
        agg.publish(&ptx);
        assert_eq!(prx.borrow().done_bytes, 1150);
    }
}
