//! Folder sessions (`docs/protocol.md` §6.5): a collection's whole files (1 B
//! to `MAX_WHOLE_FILE`) and, piece by piece, its larger files up to
//! `MAX_PART_FILE` (*part files*), over one stream per pair of peers, both
//! ways.
//!
//! A [`Folder`] is this node's side of one collection: a shared folder (every
//! file here, read in place and re-verified on every read) or a download (its
//! files arriving, each verified against its id before it is written). Every
//! session of the collection, inbound or outbound, shares it: the session
//! serves the files the folder has and, for a download, asks its peer for the
//! files still needed, rarest first, at most `WANT_REQUESTS` requests and
//! `WANT_BYTES` outstanding per peer; a peer that answers faster is asked
//! more (work stealing by pulling), and once every needed file is asked for,
//! an idle session asks again for files outstanding elsewhere (endgame: the
//! first answer wins).
//!
//! On disk: a verified file is written to a hidden temporary name beside its
//! destination; every `PLACE_EVERY` (or `PLACE_BATCH` files) the file system
//! is synced once and the batch is linked into place, never over an existing
//! file. So a name in the folder only ever holds a whole, verified, durable
//! file, and a crash leaves at most temporary files that a resume rewrites.
//!
//! A part file is fetched like a content of its own, inside the folder's
//! sessions: its outboard first (from a peer that has the file), then its
//! pieces, each verified against the outboard and written at its offset into
//! a `PartialFile` under the same hidden name (resumable: the store records
//! which pieces are durable), which is linked into place when complete. At
//! most `OPEN_PARTS` part files are open at once, so pieces of few files are
//! in flight and each file completes early.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use shoal_core::proto::{
    decode_frame, is_part_file, is_whole_file, part_layout, CloseCode, DenyReason, FolderState,
    Hello, Message, PexPeer, ProtoError, RejectReason, HELLO_TIMEOUT, IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL, MAX_PEX_ADDED,
};
use shoal_core::{ContentId, Manifest};
use shoal_store::{Outboard, PartialFile, PieceLayout, PieceVerifier};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::access::{DownloadGrant, Verdict};
use crate::choke::{Cand, ChokeCfg, Choker};
use crate::error::NodeError;
use crate::limit::RateLimiter;
use crate::session::{frame_of, BoxStream, FrameReader, ReadError, ReadHalf, WriteHalf};
use crate::transfer::{Connector, FileBytes, Remote, Shared};

/// Requests a downloader keeps outstanding with one peer (the protocol allows
/// `MAX_OUTSTANDING_FILE_REQUESTS`).
pub(crate) const WANT_REQUESTS: usize = 32;
/// Bytes of files a downloader keeps outstanding with one peer.
pub(crate) const WANT_BYTES: u64 = 4 << 20;
/// Requests for files outstanding elsewhere an idle session may add (endgame).
const ENDGAME_REQUESTS: usize = 4;
/// Candidates a pick compares by availability (rarest of these wins).
const PICK_WINDOW: usize = 64;
/// Needed files a pick looks at before giving up (bounds a pick's cost when the
/// peer has few of them).
const PICK_SCAN: usize = 8192;
/// Files read (to serve) or verified and written (received) at once per session.
const IO_PER_SESSION: usize = 8;
/// File bytes waiting for one session's writer before no more reads start
/// (4 ms of a 1 GB/s link; the socket's own buffer holds more).
const WRITE_BYTES: u64 = 4 << 20;
/// Received file bytes waiting to be verified and written, per folder, before
/// no more files are asked for: a disk slower than the network slows the
/// requests instead of filling memory. With the per-peer outstanding bytes
/// and the node's spare piece buffers this keeps a download of a folder
/// under 64 MiB when the disk is the bottleneck.
const WRITE_BACKLOG: u64 = 8 << 20;
/// Sessions one folder download opens or accepts at most.
const MAX_SESSIONS: usize = 32;
/// Dials in flight at once.
const MAX_DIALS: usize = 8;
/// Failed dials of one peer before it is given up (before any file arrived).
const MAX_ATTEMPTS: u32 = 5;
/// Wait before dialing a peer again.
const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// Verified files are made durable and linked into place at least this often…
const PLACE_EVERY: Duration = Duration::from_millis(200);
/// …or as soon as this many wait.
const PLACE_BATCH: usize = 512;
/// Part files open (outboard asked for, or pieces arriving) at once per folder.
const OPEN_PARTS: usize = 4;
/// Frames of at least this size are built in the piece buffer pool's
/// buffers and go back to it once written (`Part` frames, whole files of
/// 64 KiB or more).
const PART_FRAME_MIN: usize = 64 * 1024;
/// Part files a serving folder keeps open (outboard and file handle) at once.
const SOURCES_KEPT: usize = 64;
/// A part file's written pieces are made durable (and recorded) at least
/// every this many pieces.
const PART_FLUSH_PIECES: u32 = 64;
/// Peer exchange: first 1 s after a session starts, then at most every 60 s.
const PEX_FIRST: Duration = Duration::from_secs(1);
const PEX_EVERY: Duration = Duration::from_secs(60);
/// Part files a peer announced pieces of (`PartHave`) that a session keeps
/// track of; announcements for more are ignored (shoal itself has at most
/// `OPEN_PARTS` open).
const PEER_PARTIAL_FILES: usize = 16;

/// One peer's part in a folder's sessions.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerStat {
    /// File bytes received from it (verified) and sent to it.
    pub(crate) down: u64,
    pub(crate) up: u64,
    /// Sessions open with it now.
    pub(crate) sessions: u32,
    pub(crate) banned: bool,
    /// It wants files of this node (its last `Interested` /
    /// `NotInterested`), and since when it has had a session.
    interested: bool,
    since: Option<Instant>,
}

/// A control message for one session from the folder.
enum Ctl {
    /// Announce this file (it was just placed).
    Have(u32),
    /// Announce this piece of a part file (just verified and written).
    PartHave(u32, u32),
    /// The peer sent this file with bytes that do not match its id.
    Bad(u32),
}

struct Sess {
    peer: PeerId,
    ctl: mpsc::Sender<Ctl>,
}

#[derive(Default)]
struct Inner {
    /// Files here, complete and verified (placed).
    have: Vec<bool>,
    /// Files this download still needs through folder sessions.
    need: Vec<bool>,
    remaining: usize,
    /// Needed files no session has asked for and none is writing.
    pending: BTreeSet<u32>,
    /// Sessions with a request outstanding for each file.
    requested: Vec<u8>,
    /// Files verified and being written or waiting to be placed.
    writing: Vec<bool>,
    /// Bytes of received files not yet written (held in memory).
    backlog: u64,
    /// Written to their temporary names, waiting for the next placement.
    unplaced: Vec<u32>,
    /// Peers (with a session) that have each file.
    avail: Vec<u16>,
    sessions: HashMap<u64, Sess>,
    next_key: u64,
    peers: HashMap<PeerId, PeerStat>,
    /// Dial attempts per peer and when the last one ended.
    dialed: HashMap<PeerId, (u32, Instant)>,
    dialing: HashSet<PeerId>,
    /// Peers that refused us access (never dialed again).
    refused: HashMap<PeerId, String>,
    /// Bytes of files fetched and placed by this folder's sessions.
    fetched: u64,
    /// Received files that failed verification.
    failed: u64,
    /// An error that ends the download (a disk error, a name in the way).
    fatal: Option<String>,
    /// Larger files complete here, registered as served by their ids.
    grants: Vec<DownloadGrant>,
    /// Files set to skip while they were being fetched: never placed.
    skip: HashSet<u32>,
    /// Needed files set to high priority: picked before the others.
    high: BTreeSet<u32>,
    /// Files handed over to a fetch by their own id (from providers of that
    /// file alone): not asked for here until taken back.
    elsewhere: HashSet<u32>,
    /// Needed part files not open yet (no session asked for their outboard).
    part_pending: BTreeSet<u32>,
    /// Part files open: their outboard asked for, or pieces arriving.
    parts: HashMap<u32, Part>,
    /// Bytes of the open part files' pieces present (verified and written).
    part_bytes: u64,
    /// Part files this folder serves, once opened: outboard and open file.
    sources: HashMap<u32, Source>,
    /// Which peers this node serves now (§6.5 choking).
    choker: Choker,
}

/// A part file this folder serves: its outboard and the file, open.
#[derive(Clone)]
struct Source {
    ob: Arc<Outboard>,
    file: Arc<std::fs::File>,
}

/// A part file being fetched through the folder sessions.
#[derive(Default)]
struct Part {
    /// The partial file, once the outboard arrived and it opened (`None`
    /// again while it is being placed).
    file: Option<Arc<Mutex<Option<PartialFile>>>>,
    verifier: Option<PieceVerifier>,
    layout: Option<PieceLayout>,
    /// Pieces present, not asked for by any session, not being written.
    todo: BTreeSet<u32>,
    /// Sessions with a request out for each piece.
    asked: HashMap<u32, u8>,
    /// Pieces received and being verified and written.
    writing: HashSet<u32>,
    /// Which pieces are present, how many, and their bytes.
    got: Vec<bool>,
    present: u32,
    bytes: u64,
    /// Every piece is in: the file is being placed.
    finishing: bool,
    /// Its outboard's chaining values, to serve peers that learned of its
    /// pieces (`PartHave`) before it is complete.
    cvs: Option<Arc<Vec<u8>>>,
}

impl Part {
    /// Whether it is open with pieces to ask for (or asked elsewhere).
    fn open(&self) -> bool {
        self.file.is_some() && !self.finishing
    }
}

/// Where a download's files go and how it reaches peers.
struct Download {
    connector: Arc<dyn Connector>,
    limit: Arc<RateLimiter>,
    capability: Option<Arc<Vec<u8>>>,
    files: Arc<FileBytes>,
    policy: crate::access::DownloadPolicy,
    _grant: DownloadGrant,
}

/// This node's side of one collection's folder sessions.
pub(crate) struct Folder {
    id: ContentId,
    manifest: Arc<Manifest>,
    /// The manifest's encoded length (the collection content's length).
    manifest_len: u64,
    sizes: Arc<[u64]>,
    root: PathBuf,
    download: Option<Download>,
    inner: Mutex<Inner>,
    /// Wakes sessions (work to ask for) and the download (progress, the end).
    changed: Notify,
    /// Set when the folder stops: every session closes.
    stop: watch::Sender<bool>,
    shared: Weak<Shared>,
}

impl Folder {
    fn new(
        shared: &Arc<Shared>,
        id: ContentId,
        manifest: Arc<Manifest>,
        manifest_len: u64,
        root: PathBuf,
        download: Option<Download>,
    ) -> Self {
        let sizes: Arc<[u64]> = manifest.entries().iter().map(|e| e.size).collect();
        let n = sizes.len();
        let inner = Inner {
            have: vec![download.is_none(); n],
            need: vec![false; n],
            requested: vec![0; n],
            writing: vec![false; n],
            avail: vec![0; n],
            choker: Choker::new(ChokeCfg::of(&shared.cfg.swarm)),
            ..Inner::default()
        };
        Self {
            id,
            manifest,
            manifest_len,
            sizes,
            root,
            download,
            inner: Mutex::new(inner),
            changed: Notify::new(),
            stop: watch::Sender::new(false),
            shared: Arc::downgrade(shared),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough counters;
        // the data on disk is verified regardless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where file `i` is (shared) or goes (downloaded).
    fn path_of(&self, i: usize) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(self.manifest.entries()[i].path.split('/'));
        p
    }

    /// The hidden name a received file is written to before it is placed.
    fn temp_of(&self, i: usize) -> PathBuf {
        temp_name(&self.path_of(i), self.manifest.entries()[i].id)
    }

    fn availability(&self) -> Vec<u8> {
        let inner = self.lock();
        let mut bits = vec![0u8; inner.have.len().div_ceil(8)];
        for (i, _) in inner.have.iter().enumerate().filter(|(_, h)| **h) {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
        bits
    }

    /// A session's state and its first bytes: `hello`, then this side's
    /// `FileBitfield` (checked by the state).
    fn opening(&self, hello: &Hello<'_>) -> Result<(FolderState, Vec<u8>), NodeError> {
        let mut state = FolderState::new(self.sizes.clone());
        let bits = self.availability();
        let avail = Message::FileBitfield {
            num_files: self.sizes.len() as u32,
            bits: &bits,
        };
        state.on_send(&avail)?;
        let mut first = Vec::new();
        for m in [Message::Hello(hello.clone()), avail] {
            first.extend(
                frame_of(&m)
                    .ok_or_else(|| NodeError::Internal("a folder hello does not encode".into()))?,
            );
        }
        Ok((state, first))
    }

    /// Stops every session of this folder.
    pub(crate) fn close(&self) {
        self.stop.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Each peer's part, for progress.
    pub(crate) fn peers(&self) -> HashMap<PeerId, PeerStat> {
        self.lock().peers.clone()
    }

    /// (bytes fetched and placed, or in part files' pieces present; files
    /// and pieces that failed verification).
    pub(crate) fn fetched(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.fetched + inner.part_bytes, inner.failed)
    }

    /// File `i` is in place here: have it, count it as fetched if this
    /// download needed it, and show it whole.
    fn mark_placed(&self, inner: &mut Inner, i: usize) {
        inner.high.remove(&(i as u32));
        if !inner.have[i] {
            inner.have[i] = true;
            if inner.need[i] {
                inner.need[i] = false;
                inner.remaining -= 1;
                inner.fetched += self.sizes[i];
            }
        }
        if let Some(d) = &self.download {
            d.files.set(i, self.sizes[i]);
        }
    }

    /// Serves file `i`, complete here, by its own id too while the folder
    /// lives (a download's files only).
    fn grant(&self, inner: &mut Inner, i: usize) {
        if let (Some(d), Some(shared)) = (&self.download, self.shared.upgrade()) {
            let grant = shared
                .access
                .register_download(self.manifest.entries()[i].id, d.policy);
            inner.grants.push(grant);
        }
    }

    /// Whether file `i` is fetched piece by piece here.
    fn is_part(&self, i: usize) -> bool {
        is_part_file(self.sizes[i])
    }

    /// Puts needed file `f` back where sessions look for work.
    fn requeue(&self, inner: &mut Inner, f: u32) {
        if self.is_part(f as usize) {
            if !inner.parts.contains_key(&f) {
                inner.part_pending.insert(f);
            }
        } else if inner.requested[f as usize] == 0 && !inner.writing[f as usize] {
            inner.pending.insert(f);
        }
    }

    /// Closes part file `f` (its partial file stays, resumable) and takes it
    /// out of the folder's work; false if pieces of it are being written or
    /// it is being placed.
    fn close_part(&self, inner: &mut Inner, f: u32) -> bool {
        if let Some(p) = inner.parts.get(&f) {
            if !p.writing.is_empty() || p.finishing {
                return false;
            }
        }
        if let Some(p) = inner.parts.remove(&f) {
            inner.part_bytes = inner.part_bytes.saturating_sub(p.bytes);
        }
        inner.part_pending.remove(&f);
        true
    }
}

/// The hidden name beside `dest` that a received file of content `id` is
/// written to before it is placed: fixed, so a resumed run rewrites it.
fn temp_name(dest: &Path, id: ContentId) -> PathBuf {
    let hex = id.to_hex();
    dest.with_file_name(format!(".shoal-{}.part", &hex[..24]))
}

/// Removes the temporary name of a file of a folder download, if an
/// interrupted run left it.
pub(crate) fn remove_temp(dest: &Path, id: ContentId) -> Result<(), NodeError> {
    match std::fs::remove_file(temp_name(dest, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What this node holds of content `id` through a folder download: the
/// folder's manifest, or one of its files fetched on its own and complete.
pub(crate) fn blob_of(shared: &Arc<Shared>, id: &ContentId) -> Option<shoal_store::Blob> {
    let folders: Vec<Arc<Folder>> = shared
        .folders
        .lock()
        .ok()?
        .values()
        .filter_map(Weak::upgrade)
        .filter(|f| f.download.is_some())
        .collect();
    for f in folders {
        if f.id == *id {
            let path = shared.store.dir().join("manifests").join(id.to_hex());
            let bytes = std::fs::read(path).ok()?;
            return (ContentId::of(&bytes) == *id).then_some(shoal_store::Blob::Manifest(bytes));
        }
        let inner = f.lock();
        let found = f
            .manifest
            .entries()
            .iter()
            .enumerate()
            .find(|(i, e)| e.id == *id && inner.have[*i] && !is_whole_file(e.size));
        if let Some((i, _)) = found {
            return Some(shoal_store::Blob::File(f.path_of(i)));
        }
    }
    None
}

/// The folders this node serves or downloads, by collection id (weak: a folder
/// lives while its download or one of its sessions does).
pub(crate) type Registry = Mutex<HashMap<ContentId, Weak<Folder>>>;

/// A folder download's handle: the sessions run while it lives.
pub(crate) struct FolderDownload {
    folder: Arc<Folder>,
    placer: tokio::task::AbortHandle,
}

impl Drop for FolderDownload {
    fn drop(&mut self) {
        self.folder.close();
        self.placer.abort();
    }
}

impl FolderDownload {
    /// Starts fetching the files `wanted` (manifest indexes of whole files not
    /// here yet) of collection `id` into `root`; `present` are the files
    /// already complete there (announced to peers and served).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        shared: &Arc<Shared>,
        id: ContentId,
        manifest: Arc<Manifest>,
        manifest_len: u64,
        root: &Path,
        wanted: &[usize],
        present: &[usize],
        connector: Arc<dyn Connector>,
        limit: Arc<RateLimiter>,
        capability: Option<Arc<Vec<u8>>>,
        files: Arc<FileBytes>,
    ) -> Self {
        let policy = if capability.is_some() {
            crate::access::DownloadPolicy::Private
        } else {
            crate::access::DownloadPolicy::Unlisted
        };
        let download = Download {
            connector,
            limit,
            capability,
            files,
            policy,
            _grant: shared.access.register_download(id, policy),
        };
        let folder = Folder::new(
            shared,
            id,
            manifest,
            manifest_len,
            root.to_path_buf(),
            Some(download),
        );
        {
            let mut inner = folder.lock();
            for &i in present {
                inner.have[i] = true;
            }
            for &i in wanted {
                if !inner.need[i] && !inner.have[i] {
                    inner.need[i] = true;
                    inner.remaining += 1;
                    folder.requeue(&mut inner, i as u32);
                }
            }
        }
        let folder = Arc::new(folder);
        if let Ok(mut reg) = shared.folders.lock() {
            reg.retain(|_, f| f.strong_count() > 0);
            reg.insert(id, Arc::downgrade(&folder));
        }
        let placer = tokio::spawn(place_loop(folder.clone())).abort_handle();
        folder.dial_more();
        Self { folder, placer }
    }

    pub(crate) fn folder(&self) -> &Arc<Folder> {
        &self.folder
    }

    /// Waits until every wanted file is placed, or fails with why not.
    pub(crate) fn finished(&self) -> impl std::future::Future<Output = Result<(), NodeError>> {
        let folder = self.folder.clone();
        async move { folder.finished().await }
    }
}

impl Folder {
    /// Marks file `i` complete here (fetched in a swarm of its own) and
    /// announces it; it is served by its id too while the folder lives.
    pub(crate) fn add_present(&self, i: usize) {
        let sessions: Vec<mpsc::Sender<Ctl>> = {
            let mut inner = self.lock();
            if inner.have[i] {
                return;
            }
            inner.have[i] = true;
            inner.elsewhere.remove(&(i as u32));
            if let Some(p) = inner.parts.remove(&(i as u32)) {
                inner.part_bytes = inner.part_bytes.saturating_sub(p.bytes);
            }
            if self.is_part(i) {
                // The pieces an earlier folder session left under the
                // hidden name are of no use any more.
                let _ = std::fs::remove_file(self.temp_of(i));
            }
            inner.part_pending.remove(&(i as u32));
            self.grant(&mut inner, i);
            inner.sessions.values().map(|s| s.ctl.clone()).collect()
        };
        for tx in sessions {
            let _ = tx.try_send(Ctl::Have(i as u32));
        }
        self.changed.notify_waiters();
    }

    /// Up to `max` needed files that no session's peer has (none asked for
    /// or being written), in manifest order.
    pub(crate) fn unavailable(&self, max: usize) -> Vec<usize> {
        let inner = self.lock();
        (0..inner.need.len())
            .filter(|&i| {
                inner.need[i]
                    && inner.avail[i] == 0
                    && inner.requested[i] == 0
                    && !inner.writing[i]
                    && inner
                        .parts
                        .get(&(i as u32))
                        .is_none_or(|p| p.asked.is_empty() && p.writing.is_empty() && !p.finishing)
            })
            .take(max)
            .collect()
    }

    /// Whether some session's peer has file `i`.
    pub(crate) fn available(&self, i: usize) -> bool {
        self.lock().avail.get(i).is_some_and(|&a| a > 0)
    }

    /// Takes needed file `i` out of the folder sessions' work, for a fetch by
    /// its own id; false if it is no longer theirs to give (here, asked
    /// for, being written, or not needed).
    pub(crate) fn hand_over(&self, i: usize) -> bool {
        let mut inner = self.lock();
        if !inner.need[i] || inner.requested[i] > 0 || inner.writing[i] || inner.have[i] {
            return false;
        }
        if inner
            .parts
            .get(&(i as u32))
            .is_some_and(|p| !p.asked.is_empty())
            || !self.close_part(&mut inner, i as u32)
        {
            return false;
        }
        inner.need[i] = false;
        inner.remaining -= 1;
        inner.pending.remove(&(i as u32));
        inner.elsewhere.insert(i as u32);
        drop(inner);
        self.changed.notify_waiters();
        true
    }

    /// Gives file `i` back to the folder sessions after a fetch by its own id
    /// ended without it (unless it was set to skip meanwhile).
    pub(crate) fn take_back(&self, i: usize) {
        let f = i as u32;
        let mut inner = self.lock();
        if !inner.elsewhere.remove(&f) || inner.have[i] || inner.skip.contains(&f) {
            return;
        }
        inner.need[i] = true;
        inner.remaining += 1;
        self.requeue(&mut inner, f);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Changes how much whole file `i` (one this download may fetch) is
    /// wanted: skipped, it is no longer asked for and, if its bytes are
    /// already in, not placed; back to normal or high, it is needed again
    /// (unless it is here); high, it is picked before the others.
    pub(crate) fn set_priority(&self, i: usize, p: crate::transfer::FilePriority) {
        use crate::transfer::FilePriority;
        let f = i as u32;
        {
            let mut inner = self.lock();
            if inner.have[i] {
                return;
            }
            match p {
                FilePriority::Skip => {
                    // A part file with pieces being written closes once they
                    // are (see `part_written`).
                    self.close_part(&mut inner, f);
                    inner.skip.insert(f);
                    inner.high.remove(&f);
                    if inner.need[i] {
                        inner.need[i] = false;
                        inner.remaining -= 1;
                        inner.pending.remove(&f);
                    }
                }
                FilePriority::Normal | FilePriority::High => {
                    inner.skip.remove(&f);
                    if p == FilePriority::High {
                        inner.high.insert(f);
                    } else {
                        inner.high.remove(&f);
                    }
                    // Fetched by its own id: needed here only if given back.
                    if !inner.need[i] && !inner.elsewhere.contains(&f) {
                        inner.need[i] = true;
                        inner.remaining += 1;
                        self.requeue(&mut inner, f);
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// The end of writing file `i` received from `peer`: placed with the next
    /// batch, or back to pending with `peer` banned (bad bytes), or the
    /// download fails (the disk).
    fn written(&self, i: u32, peer: PeerId, res: Result<bool, NodeError>, ctl: &mpsc::Sender<Ctl>) {
        let iu = i as usize;
        {
            let mut inner = self.lock();
            inner.backlog = inner.backlog.saturating_sub(self.sizes[iu]);
            match res {
                Ok(true) => {
                    inner.peers.entry(peer).or_default().down += self.sizes[iu];
                    inner.unplaced.push(i);
                }
                Ok(false) => {
                    inner.writing[iu] = false;
                    inner.failed += 1;
                    if inner.requested[iu] == 0 && inner.need[iu] {
                        inner.pending.insert(i);
                    }
                    inner.peers.entry(peer).or_default().banned = true;
                    let _ = ctl.try_send(Ctl::Bad(i));
                }
                Err(e) => {
                    inner.writing[iu] = false;
                    inner.fatal = Some(format!("cannot write {}: {e}", self.path_of(iu).display()));
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Part file `f`'s partial file opened (or not): its missing pieces
    /// become work; a file found complete is placed.
    fn part_opened(self: &Arc<Self>, f: u32, res: Result<PartialFile, NodeError>) {
        let fu = f as usize;
        let mut finish = None;
        {
            let mut inner = self.lock();
            let pf = match res {
                Ok(pf) => pf,
                Err(e) => {
                    if inner.parts.contains_key(&f) {
                        inner.fatal =
                            Some(format!("cannot write {}: {e}", self.path_of(fu).display()));
                    }
                    drop(inner);
                    self.changed.notify_waiters();
                    return;
                }
            };
            // Closed meanwhile, or opened by another session first: this
            // handle is dropped (what it holds is durable already).
            let Some(p) = inner.parts.get_mut(&f).filter(|p| p.file.is_none()) else {
                return;
            };
            let layout = pf.outboard().layout();
            let n = layout.num_pieces();
            p.got = (0..n).map(|i| pf.has(i)).collect();
            p.todo = (0..n).filter(|&i| !pf.has(i)).collect();
            p.present = pf.present();
            p.bytes = (0..n)
                .filter(|&i| pf.has(i))
                .map(|i| layout.piece_len(i) as u64)
                .sum();
            p.verifier = Some(pf.verifier());
            p.cvs = Some(Arc::new(pf.outboard().encode()));
            p.layout = Some(layout);
            let complete = pf.is_complete();
            let file = Arc::new(Mutex::new(Some(pf)));
            p.file = Some(file.clone());
            let bytes = p.bytes;
            if complete {
                p.finishing = true;
                finish = Some(file);
            }
            inner.part_bytes += bytes;
            if let Some(d) = &self.download {
                d.files.set(fu, bytes);
            }
        }
        if let Some(file) = finish {
            tokio::spawn(finish_part(self.clone(), f, file));
        }
        self.changed.notify_waiters();
    }

    /// The end of writing piece `piece` of part file `f` from `peer`.
    #[allow(clippy::too_many_arguments)]
    fn part_written(
        self: &Arc<Self>,
        f: u32,
        piece: u32,
        len: u64,
        peer: PeerId,
        res: Result<bool, NodeError>,
        ctl: &mpsc::Sender<Ctl>,
    ) {
        let fu = f as usize;
        let mut finish = None;
        let mut announce = Vec::new();
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            inner.backlog = inner.backlog.saturating_sub(len);
            let skipped = inner.skip.contains(&f);
            let Some(p) = inner.parts.get_mut(&f) else {
                return;
            };
            p.writing.remove(&piece);
            match res {
                Ok(true) => {
                    if let Some(g) = p.got.get_mut(piece as usize).filter(|g| !**g) {
                        *g = true;
                        p.present += 1;
                        p.bytes += len;
                        inner.part_bytes += len;
                        inner.peers.entry(peer).or_default().down += len;
                        announce = inner.sessions.values().map(|s| s.ctl.clone()).collect();
                    }
                    if let Some(d) = &self.download {
                        d.files.set(fu, p.bytes);
                    }
                    if p.present as usize == p.got.len() && !p.finishing && !skipped {
                        p.finishing = true;
                        finish = p.file.clone();
                    }
                }
                Ok(false) => {
                    inner.failed += 1;
                    if !p.asked.contains_key(&piece) {
                        p.todo.insert(piece);
                    }
                    inner.peers.entry(peer).or_default().banned = true;
                    let _ = ctl.try_send(Ctl::Bad(f));
                }
                Err(e) => {
                    inner.fatal = Some(format!("cannot write {}: {e}", self.path_of(fu).display()));
                }
            }
            if skipped {
                self.close_part(inner, f);
            }
        }
        for tx in announce {
            let _ = tx.try_send(Ctl::PartHave(f, piece));
        }
        if let Some(file) = finish {
            tokio::spawn(finish_part(self.clone(), f, file));
        }
        self.changed.notify_waiters();
    }

    /// The pieces of part files present here but not complete yet, to
    /// announce to a new session (at most `OPEN_PARTS` files).
    fn partial_pieces(&self) -> Vec<(u32, u32)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (&f, p) in &inner.parts {
            if p.cvs.is_none() || p.finishing {
                continue;
            }
            for (i, g) in p.got.iter().enumerate() {
                if *g {
                    out.push((f, i as u32));
                }
            }
        }
        out
    }

    /// Whether this side can answer a request for `item` now: the file is
    /// here, or (for a part file's outboard or piece) its partial file
    /// holds it.
    fn can_serve(&self, item: Serve) -> bool {
        let inner = self.lock();
        match item {
            Serve::File(i) => inner.have[i as usize],
            Serve::Outboard(f) => {
                inner.have[f as usize] || inner.parts.get(&f).is_some_and(|p| p.cvs.is_some())
            }
            Serve::Part(f, piece) => {
                inner.have[f as usize]
                    || inner.parts.get(&f).is_some_and(|p| {
                        p.cvs.is_some() && p.got.get(piece as usize).copied().unwrap_or(false)
                    })
            }
        }
    }

    /// The outboard of part file `i` for a peer: the served file's, or the
    /// one its partial file was opened with. Blocking.
    fn outboard_cvs(&self, i: usize) -> Option<Vec<u8>> {
        let partial = {
            let inner = self.lock();
            let cvs = inner.parts.get(&(i as u32)).and_then(|p| p.cvs.clone());
            cvs.filter(|_| !inner.have[i])
        };
        match partial {
            Some(cvs) => Some(cvs.as_ref().clone()),
            None => self.source_for(i).map(|s| s.ob.encode()),
        }
    }

    /// Piece `piece` of part file `i` read from its partial file (under its
    /// hidden name) into a whole `Part` frame, verified; `None` if it is not
    /// there (any more). Blocking.
    fn partial_frame(&self, i: usize, piece: u32) -> Option<Framed> {
        let (layout, verifier) = {
            let inner = self.lock();
            let p = inner.parts.get(&(i as u32))?;
            if !p.got.get(piece as usize).copied().unwrap_or(false) {
                return None;
            }
            (p.layout?, p.verifier.clone()?)
        };
        let file = std::fs::File::open(self.temp_of(i)).ok()?;
        self.read_part(i, piece, &layout, &file, |data| {
            verifier.verify(piece, data).is_ok()
        })
    }

    /// Piece `piece` of part file `i` (cut by `layout`) read from `file`
    /// straight into a whole `Part` frame, kept only if `verified` accepts
    /// its bytes; the frame and where its data starts. Blocking.
    fn read_part(
        &self,
        i: usize,
        piece: u32,
        layout: &PieceLayout,
        file: &std::fs::File,
        verified: impl FnOnce(&[u8]) -> bool,
    ) -> Option<Framed> {
        use std::os::unix::fs::FileExt;
        let len = layout.piece_len(piece);
        let pool = self.shared.upgrade().map(|s| s.pool.clone());
        let mut frame = framed(pool.as_ref(), len + 16);
        shoal_core::proto::encode_part_header(i as u32, piece, len, &mut frame).ok()?;
        let start = frame.len();
        frame.resize(start + len, 0);
        file.read_exact_at(&mut frame[start..], layout.piece_offset(piece))
            .ok()?;
        verified(&frame[start..]).then_some((frame, start))
    }

    /// Part file `i` as this folder serves it (opened once, then kept): the
    /// store's outboard, or the file hashed if the store has none of the
    /// layout the protocol gives it. Blocking.
    fn source_for(&self, i: usize) -> Option<Source> {
        let f = i as u32;
        if let Some(src) = self.lock().sources.get(&f) {
            return Some(src.clone());
        }
        let e = &self.manifest.entries()[i];
        let (piece_size, _) = part_layout(e.size)?;
        let shared = self.shared.upgrade()?;
        let path = self.path_of(i);
        let file = std::fs::File::open(&path).ok()?;
        let ob = match shared.store.outboard(&e.id).ok().flatten() {
            Some(ob) if ob.layout().piece_size() == piece_size => ob,
            _ => {
                let ob = shoal_store::hash_file(&path, &|_| {}).ok()?;
                (ob.root() == e.id && ob.layout().piece_size() == piece_size).then_some(ob)?
            }
        };
        let src = Source {
            ob: Arc::new(ob),
            file: Arc::new(file),
        };
        let mut inner = self.lock();
        if inner.sources.len() >= SOURCES_KEPT {
            inner.sources.clear();
        }
        inner.sources.insert(f, src.clone());
        Some(src)
    }

    /// Piece `piece` of part file `i` read straight into a whole `Part`
    /// frame (and where its data starts), re-verified against the file's
    /// outboard; `None` if the file no longer has it. Blocking.
    fn part_frame(&self, i: usize, piece: u32) -> Option<Framed> {
        let src = self.source_for(i)?;
        let layout = src.ob.layout();
        if piece >= layout.num_pieces() {
            return None;
        }
        self.read_part(i, piece, &layout, &src.file, |data| {
            src.ob.verify_piece(piece, data).is_ok()
        })
    }

    async fn finished(self: &Arc<Self>) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let notified = self.changed.notified();
            {
                let inner = self.lock();
                if let Some(why) = &inner.fatal {
                    return Err(NodeError::Internal(why.clone()));
                }
                if inner.remaining == 0 {
                    return Ok(());
                }
                if let Some(e) = self.gave_up(&inner) {
                    return Err(e);
                }
            }
            self.dial_more();
            tokio::select! {
                _ = notified => {}
                _ = tick.tick() => {}
            }
        }
    }

    /// Every known peer refused access, or failed too often before any file
    /// arrived: the download cannot go on.
    fn gave_up(&self, inner: &Inner) -> Option<NodeError> {
        if !inner.sessions.is_empty() || !inner.dialing.is_empty() {
            return None;
        }
        let d = self.download.as_ref()?;
        let known: Vec<PeerId> = d.connector.peers();
        if known.is_empty() {
            return None;
        }
        if known.iter().all(|p| inner.refused.contains_key(p)) {
            let why = inner.refused.values().next().cloned().unwrap_or_default();
            return Some(NodeError::AccessRefused { id: self.id, why });
        }
        let exhausted = known.iter().all(|p| {
            inner.refused.contains_key(p)
                || inner.dialed.get(p).is_some_and(|(n, _)| *n >= MAX_ATTEMPTS)
        });
        if exhausted && inner.fetched == 0 {
            return Some(NodeError::NoPeers {
                id: self.id,
                why: "no peer could be reached for the folder's files".into(),
            });
        }
        None
    }

    /// Dials peers the connector knows that have no session yet.
    fn dial_more(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let candidates = d.connector.peers();
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.remaining == 0 {
            return;
        }
        for peer in candidates {
            if inner.sessions.len() + inner.dialing.len() >= MAX_SESSIONS
                || inner.dialing.len() >= MAX_DIALS
            {
                break;
            }
            let busy = peer == shared.local
                || inner.dialing.contains(&peer)
                || inner.refused.contains_key(&peer)
                || inner
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.sessions > 0 || p.banned)
                || inner.dialed.get(&peer).is_some_and(|(n, at)| {
                    *n >= MAX_ATTEMPTS || now.duration_since(*at) < REDIAL_AFTER
                });
            if busy {
                continue;
            }
            inner.dialing.insert(peer);
            let folder = self.clone();
            let shared = shared.clone();
            let connector = d.connector.clone();
            tokio::spawn(async move {
                let res = match connector.connect(peer).await {
                    Ok(stream) => open(&shared, &folder, peer, stream).await,
                    Err(e) => Err(e),
                };
                let mut inner = folder.lock();
                inner.dialing.remove(&peer);
                match res {
                    Ok(()) => {
                        inner.dialed.remove(&peer);
                    }
                    Err(NodeError::Denied { reason, text, .. })
                        if crate::access::is_access_denial(reason)
                            || reason == DenyReason::NotFound =>
                    {
                        let cap = folder.download.as_ref().and_then(|d| d.capability.clone());
                        let why = crate::access::denial_message(
                            reason,
                            cap.as_deref().map_or(&[][..], |c| c.as_slice()),
                            &text,
                        );
                        tracing::debug!(%peer, ?reason, "folder session refused");
                        inner.refused.insert(peer, why);
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "folder session failed");
                        let e = inner.dialed.entry(peer).or_insert((0, Instant::now()));
                        e.0 += 1;
                        e.1 = Instant::now();
                    }
                }
                drop(inner);
                folder.changed.notify_waiters();
            });
        }
    }
}

/// Places part file `f`, complete: synced, linked into place, announced.
async fn finish_part(folder: Arc<Folder>, f: u32, file: Arc<Mutex<Option<PartialFile>>>) {
    let fu = f as usize;
    let done = tokio::task::spawn_blocking(move || {
        let pf = file.lock().unwrap_or_else(|e| e.into_inner()).take();
        pf.map(PartialFile::finish).transpose()
    })
    .await;
    let sessions: Vec<mpsc::Sender<Ctl>> = {
        let mut inner = folder.lock();
        match done {
            Ok(Ok(_)) => {
                if let Some(p) = inner.parts.remove(&f) {
                    inner.part_bytes = inner.part_bytes.saturating_sub(p.bytes);
                }
                if !inner.have[fu] {
                    folder.grant(&mut inner, fu);
                }
                folder.mark_placed(&mut inner, fu);
                inner.sessions.values().map(|s| s.ctl.clone()).collect()
            }
            Ok(Err(e)) => {
                inner.fatal = Some(format!(
                    "cannot place {}: {e}",
                    folder.path_of(fu).display()
                ));
                Vec::new()
            }
            Err(e) => {
                inner.fatal = Some(format!("placing a file failed: {e}"));
                Vec::new()
            }
        }
    };
    for tx in sessions {
        let _ = tx.try_send(Ctl::Have(f));
    }
    folder.changed.notify_waiters();
}

/// Makes verified files durable and links them into place, in batches.
async fn place_loop(folder: Arc<Folder>) {
    let mut tick = tokio::time::interval(PLACE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = folder.changed.notified() => {
                if folder.lock().unplaced.len() < PLACE_BATCH {
                    continue;
                }
            }
        }
        let (batch, dropped) = {
            let mut inner = folder.lock();
            let all = std::mem::take(&mut inner.unplaced);
            let (dropped, batch): (Vec<u32>, Vec<u32>) =
                all.into_iter().partition(|f| inner.skip.contains(f));
            for f in &dropped {
                inner.writing[*f as usize] = false;
            }
            (batch, dropped)
        };
        if batch.is_empty() && dropped.is_empty() {
            continue;
        }
        let f = folder.clone();
        let placed = tokio::task::spawn_blocking(move || {
            // Set to skip after they arrived: not created.
            for i in dropped {
                let _ = std::fs::remove_file(f.temp_of(i as usize));
            }
            place(&f, batch)
        })
        .await;
        let placed = match placed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                folder.lock().fatal = Some(e.to_string());
                folder.changed.notify_waiters();
                return;
            }
            Err(e) => {
                folder.lock().fatal = Some(format!("placing files failed: {e}"));
                folder.changed.notify_waiters();
                return;
            }
        };
        let mut sessions = Vec::new();
        {
            let mut inner = folder.lock();
            for &i in &placed {
                inner.writing[i as usize] = false;
                folder.mark_placed(&mut inner, i as usize);
            }
            sessions.extend(inner.sessions.values().map(|s| s.ctl.clone()));
        }
        for tx in sessions {
            for &i in &placed {
                if tx.try_send(Ctl::Have(i)).is_err() {
                    break;
                }
            }
        }
        folder.changed.notify_waiters();
    }
}

/// Syncs the folder's file system once, then links each written file into
/// place (never over an existing name: one already there must be the same
/// file) and removes its temporary name. Returns the files placed.
fn place(folder: &Folder, batch: Vec<u32>) -> Result<Vec<u32>, NodeError> {
    if batch.is_empty() {
        return Ok(batch);
    }
    sync_fs(&folder.root)?;
    let mut placed = Vec::with_capacity(batch.len());
    for i in batch {
        let iu = i as usize;
        let (temp, dest) = (folder.temp_of(iu), folder.path_of(iu));
        match std::fs::hard_link(&temp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let e = &folder.manifest.entries()[iu];
                if !crate::transfer::already_complete(&dest, e.id, e.size)? {
                    return Err(NodeError::Store(
                        shoal_store::StoreError::DestinationExists { path: dest },
                    ));
                }
            }
            Err(_) if std::fs::symlink_metadata(&dest).is_err() => {
                // No hard links here: a checked rename.
                std::fs::rename(&temp, &dest)?;
            }
            Err(e) => return Err(e.into()),
        }
        match std::fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        placed.push(i);
    }
    if let Some(first) = placed.first() {
        // The new names themselves survive a crash too.
        if let Some(dir) = folder.path_of(*first as usize).parent() {
            sync_fs(dir)?;
        }
    }
    Ok(placed)
}

fn sync_fs(dir: &Path) -> Result<(), NodeError> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(|e| NodeError::Io(e.into()))
}

/// Answers an inbound stream whose first message after its hello is a
/// `FileBitfield`: a folder session for collection `id`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept(
    shared: &Arc<Shared>,
    id: ContentId,
    peer: PeerId,
    fr: FrameReader<ReadHalf>,
    mut w: WriteHalf,
    hello_layout: (Option<u32>, Option<u64>),
    capability: Vec<u8>,
    log: Option<i64>,
    remote: Option<Remote>,
) -> Result<(), NodeError> {
    let folder = match find_or_seed(shared, id)? {
        Some(f) => f,
        None => {
            crate::transfer::deny(
                &mut w,
                DenyReason::NotFound,
                "this node has no file of that folder yet",
            )
            .await;
            return Ok(());
        }
    };
    let (piece_size, content_len) = manifest_layout(folder.manifest_len);
    if hello_layout.0.is_some_and(|p| p != piece_size) {
        crate::transfer::deny(&mut w, DenyReason::PieceSizeMismatch, "other piece size").await;
        return Ok(());
    }
    if hello_layout.1.is_some_and(|l| l != content_len) {
        crate::transfer::deny(&mut w, DenyReason::LengthMismatch, "other manifest length").await;
        return Ok(());
    }
    let banned = folder.lock().peers.get(&peer).is_some_and(|p| p.banned);
    if banned {
        let why = "this peer sent files that do not match their ids";
        crate::transfer::deny(&mut w, DenyReason::Banned, why).await;
        return Ok(());
    }
    let busy = {
        let inner = folder.lock();
        inner.peers.get(&peer).is_some_and(|p| p.sessions > 0)
            || inner.sessions.len() >= MAX_SESSIONS
    };
    if busy {
        let why = "already connected for this folder, or at its limit of peers";
        crate::transfer::deny(&mut w, DenyReason::Busy, why).await;
        return Ok(());
    }
    let hello = Hello {
        piece_size: Some(piece_size),
        content_len: Some(content_len),
        ..Hello::new(id)
    };
    let (state, first) = folder.opening(&hello)?;
    let frames = vec![first];
    let inbound = Inbound {
        capability,
        log,
        remote,
    };
    tokio::spawn(run_session(
        shared.clone(),
        folder,
        peer,
        fr,
        w,
        state,
        frames,
        Some(inbound),
    ));
    Ok(())
}

/// The piece size and length a collection's hello gives: its manifest's.
fn manifest_layout(len: u64) -> (u32, u64) {
    let p = shoal_core::proto::default_piece_size(len).unwrap_or(shoal_core::proto::MIN_PIECE_SIZE);
    (p, len)
}

/// This node's folder for `id`: a download's, or one made for a shared folder.
fn find_or_seed(shared: &Arc<Shared>, id: ContentId) -> Result<Option<Arc<Folder>>, NodeError> {
    let mut reg = shared
        .folders
        .lock()
        .map_err(|_| NodeError::Internal("the folder registry is poisoned".into()))?;
    if let Some(f) = reg.get(&id).and_then(Weak::upgrade) {
        return Ok(Some(f));
    }
    let store = &shared.store;
    let Some(share) = store.share(&id)? else {
        return Ok(None);
    };
    let Some(bytes) = store.manifest(&id)? else {
        return Ok(None);
    };
    let manifest =
        Manifest::decode(&bytes).map_err(|source| NodeError::BadManifest { id, source })?;
    let folder = Arc::new(Folder::new(
        shared,
        id,
        Arc::new(manifest),
        bytes.len() as u64,
        share.path.clone(),
        None,
    ));
    reg.retain(|_, f| f.strong_count() > 0);
    reg.insert(id, Arc::downgrade(&folder));
    Ok(Some(folder))
}

/// Opens a folder session on `stream` (just dialed): hello and file bitfield,
/// the peer's hello or denial, then the session.
async fn open(
    shared: &Arc<Shared>,
    folder: &Arc<Folder>,
    peer: PeerId,
    stream: BoxStream,
) -> Result<(), NodeError> {
    let stream: BoxStream = Box::new(crate::limit::Throttled::new(stream, shared.meter.clone()));
    let (r, mut w) = tokio::io::split(stream);
    let mut fr = FrameReader::new(r);
    let cap = folder.download.as_ref().and_then(|d| d.capability.clone());
    let (piece_size, content_len) = manifest_layout(folder.manifest_len);
    let mut hello = Hello {
        piece_size: Some(piece_size),
        content_len: Some(content_len),
        ..Hello::new(folder.id)
    };
    if let Some(c) = cap.as_deref() {
        hello.capability = c.as_slice();
    }
    let (state, first) = folder.opening(&hello)?;
    w.write_all(&first).await?;
    w.flush().await?;
    let n = match tokio::time::timeout(HELLO_TIMEOUT, fr.fill_frame()).await {
        Err(_) => {
            return Err(NodeError::Closed {
                code: CloseCode::Timeout,
                text: "no hello within the hello timeout".into(),
            })
        }
        Ok(Err(ReadError::Io(e))) => return Err(e.into()),
        Ok(Err(ReadError::Proto(e))) => return Err(e.into()),
        Ok(Ok(None)) => {
            return Err(NodeError::Closed {
                code: CloseCode::Normal,
                text: "the peer closed before its hello".into(),
            })
        }
        Ok(Ok(Some(n))) => n,
    };
    match decode_frame(fr.frame(n))? {
        Some((Message::Hello(h), _)) => {
            h.check_reply(&hello)?;
        }
        Some((Message::Deny { reason, text }, _)) => {
            return Err(NodeError::Denied {
                id: folder.id,
                reason,
                text: text.to_owned(),
            })
        }
        _ => {
            return Err(ProtoError::Unexpected {
                msg: "a message",
                when: "where the responder's Hello or Deny belongs",
            }
            .into())
        }
    }
    fr.consume(n);
    tokio::spawn(run_session(
        shared.clone(),
        folder.clone(),
        peer,
        fr,
        w,
        state,
        Vec::new(),
        None,
    ));
    Ok(())
}

/// What an inbound session was admitted with (re-checked when a policy changes).
struct Inbound {
    capability: Vec<u8>,
    log: Option<i64>,
    remote: Option<Remote>,
}

/// What the reader hands the session loop.
enum In {
    Avail(Vec<u8>),
    Have(u32),
    Request(u32),
    Cancel(u32),
    File(u32, Vec<u8>),
    /// A file request answered with `Reject`; `true` when only because
    /// the peer chokes this side.
    Reject(u32, bool),
    OutboardReq(u32),
    Outboard(u32, Vec<u8>),
    PartReq(u32, u32),
    Part(u32, u32, Vec<u8>),
    PartReject(u32, u32, bool),
    PartHave(u32, u32),
    Pex(Vec<(PeerId, Vec<shoal_net::Multiaddr>)>),
    Nothing,
    /// The peer closed, broke the protocol, or the stream failed.
    End(Option<(CloseCode, String)>, String),
}

async fn read_loop(
    mut fr: FrameReader<ReadHalf>,
    state: Arc<Mutex<FolderState>>,
    tx: mpsc::Sender<In>,
    pool: crate::session::BufPool,
) {
    // Received pieces of part files are copied into reused buffers (given
    // back once written), so a steady download does not allocate (and fault
    // in) 256 KiB per piece. Whole files are small and many: plain copies,
    // so that the pool's spare buffers do not add to the write backlog's
    // memory when the disk is slow.
    let owned = |data: &[u8]| {
        let mut buf = pool.take();
        buf.extend_from_slice(data);
        buf
    };
    loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, fr.fill_frame()).await {
            Err(_) => {
                let e = ProtoError::Timeout {
                    secs: IDLE_TIMEOUT.as_secs(),
                };
                let _ = tx
                    .send(In::End(
                        Some((e.close_code(), e.to_string())),
                        e.to_string(),
                    ))
                    .await;
                return;
            }
            Ok(Ok(Some(n))) => n,
            Ok(Ok(None)) => {
                let _ = tx
                    .send(In::End(None, "the peer closed the stream".into()))
                    .await;
                return;
            }
            Ok(Err(ReadError::Io(e))) => {
                let _ = tx.send(In::End(None, e.to_string())).await;
                return;
            }
            Ok(Err(ReadError::Proto(e))) => {
                let _ = tx
                    .send(In::End(
                        Some((e.close_code(), e.to_string())),
                        e.to_string(),
                    ))
                    .await;
                return;
            }
        };
        let ev = match decode_frame(fr.frame(n)) {
            Ok(Some((msg, _))) => {
                let checked = state
                    .lock()
                    .map_err(|_| ProtoError::Unexpected {
                        msg: "a message",
                        when: "on a broken session",
                    })
                    .and_then(|mut s| s.on_recv(&msg));
                match checked {
                    Err(e) => In::End(Some((e.close_code(), e.to_string())), e.to_string()),
                    Ok(()) => match msg {
                        Message::FileBitfield { bits, .. } => In::Avail(bits.to_vec()),
                        Message::Have { piece } => In::Have(piece),
                        Message::Request { piece } => In::Request(piece),
                        Message::Cancel { piece } => In::Cancel(piece),
                        Message::Piece { piece, data } => In::File(piece, data.to_vec()),
                        Message::Reject { piece, reason } => {
                            In::Reject(piece, reason == RejectReason::Choked)
                        }
                        Message::FileOutboardRequest { file } => In::OutboardReq(file),
                        Message::FileOutboard { file, cvs } => In::Outboard(file, cvs.to_vec()),
                        Message::PartRequest { file, piece } => In::PartReq(file, piece),
                        Message::Part { file, piece, data } => In::Part(file, piece, owned(data)),
                        Message::PartReject {
                            file,
                            piece,
                            reason,
                        } => In::PartReject(file, piece, reason == RejectReason::Choked),
                        Message::PartHave { file, piece } => In::PartHave(file, piece),
                        Message::PeerExchange { added, .. } => {
                            In::Pex(added.iter().filter_map(PexPeer::parse).collect())
                        }
                        Message::Close { code, text } => {
                            In::End(None, format!("the peer closed: {code:?} ({text})"))
                        }
                        _ => In::Nothing,
                    },
                }
            }
            Ok(None) => In::Nothing,
            Err(e) => In::End(Some((e.close_code(), e.to_string())), e.to_string()),
        };
        fr.consume(n);
        let end = matches!(ev, In::End(..));
        if tx.send(ev).await.is_err() || end {
            return;
        }
    }
}

/// Writes queued frames, coalescing what is queued into one buffer (many
/// small files leave in one burst); a peer that accepts nothing for
/// `WRITE_STALL` is dropped. `queued` counts the bytes not yet written.
async fn write_loop(
    w: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicU64>,
    drained: Arc<Notify>,
    pool: crate::session::BufPool,
) -> std::io::Result<()> {
    // A written `Part` frame's buffer goes back to the pool `part_frame`
    // took it from: pieces read on many blocking threads would otherwise
    // leave freed buffers in as many malloc arenas (tens of MiB).
    let recycle = |f: Vec<u8>| {
        if f.capacity() >= PART_FRAME_MIN {
            pool.give(f);
        }
    };
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    while let Some(f) = rx.recv().await {
        stalled(w.write_all(&f)).await?;
        let mut sent = f.len() as u64;
        recycle(f);
        while let Ok(f) = rx.try_recv() {
            stalled(w.write_all(&f)).await?;
            sent += f.len() as u64;
            recycle(f);
        }
        stalled(w.flush()).await?;
        queued.fetch_sub(sent.min(queued.load(Ordering::Relaxed)), Ordering::Relaxed);
        drained.notify_one();
    }
    let _ = stalled(w.shutdown()).await;
    Ok(())
}

async fn stalled<T>(
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(crate::session::WRITE_STALL, f).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer read nothing for 5 s",
        )),
    }
}

/// Reads file `i` for a peer, re-verified against its id.
/// Whole file `i` (of `size` bytes, at `path`) read straight into a whole
/// `Piece` frame, re-verified against its id; `None` if the file no longer
/// is that content. A frame of `PART_FRAME_MIN` or more is a pooled buffer.
fn whole_frame(
    pool: Option<&crate::session::BufPool>,
    path: &Path,
    i: u32,
    id: ContentId,
    size: u64,
) -> Option<Framed> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() != size {
        return None;
    }
    let len = usize::try_from(size).ok()?;
    let mut hdr = [0u8; shoal_core::proto::PIECE_HEADER_MAX];
    let hdr = shoal_core::proto::encode_piece_header(i, len, &mut hdr).ok()?;
    let mut frame = framed(pool, hdr.len() + len);
    frame.extend_from_slice(hdr);
    let start = frame.len();
    frame.resize(start + len, 0);
    let mut file = std::fs::File::open(path).ok()?;
    file.read_exact(&mut frame[start..]).ok()?;
    // Nothing after the expected size (the file did not grow meanwhile).
    if file.read(&mut [0u8; 1]).ok()? != 0 || ContentId::of(&frame[start..]) != id {
        return None;
    }
    Some((frame, start))
}

/// An empty buffer for a frame of `len` bytes: from the pool when large (a
/// pooled buffer much larger than needed is let go, so that frames queued
/// by length do not hold far more memory than they count).
fn framed(pool: Option<&crate::session::BufPool>, len: usize) -> Vec<u8> {
    if len >= PART_FRAME_MIN {
        if let Some(pool) = pool {
            let mut buf = pool.take();
            if buf.capacity() <= 2 * len {
                buf.clear();
                buf.reserve_exact(len);
                return buf;
            }
        }
    }
    Vec::with_capacity(len)
}

/// Verifies a received file and writes it to its temporary name.
fn write_whole(folder: &Folder, i: usize, data: &[u8]) -> Result<bool, NodeError> {
    let e = &folder.manifest.entries()[i];
    if data.len() as u64 != e.size || ContentId::of(data) != e.id {
        return Ok(false);
    }
    std::fs::write(folder.temp_of(i), data)?;
    Ok(true)
}

/// Verifies piece `piece` of an open part file and writes it; every
/// `PART_FLUSH_PIECES` pieces the file is made durable (outside its lock).
/// `Ok(false)`: the bytes are not the piece.
fn write_part(
    file: &Mutex<Option<PartialFile>>,
    verifier: &PieceVerifier,
    piece: u32,
    data: &[u8],
) -> Result<bool, NodeError> {
    let Ok(v) = verifier.verify(piece, data) else {
        return Ok(false);
    };
    let mut g = file.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pf) = g.as_mut() else {
        // Closed (placed) meanwhile: nothing to write into.
        return Ok(true);
    };
    pf.write_verified(v)?;
    let flush = if pf.unflushed() >= PART_FLUSH_PIECES {
        pf.start_flush()
    } else {
        None
    };
    drop(g);
    if let Some(flush) = flush {
        flush.run()?;
    }
    Ok(true)
}

/// One session's request for piece `piece` of part file `f` is answered or
/// void: the piece goes back to be asked for if nobody else asks for it and
/// it is not in.
fn unask_part(inner: &mut Inner, f: u32, piece: u32) {
    let Some(p) = inner.parts.get_mut(&f) else {
        return;
    };
    if let Some(a) = p.asked.get_mut(&piece) {
        *a -= 1;
        if *a == 0 {
            p.asked.remove(&piece);
        }
    }
    let here = p.got.get(piece as usize).copied().unwrap_or(true);
    if p.file.is_some() && !here && !p.asked.contains_key(&piece) && !p.writing.contains(&piece) {
        p.todo.insert(piece);
    }
}

/// A request for the outboard of part file `f` is void (the session ended,
/// or the peer lacks the file): if the file is not open yet, another
/// session may ask.
fn reopen_part(folder: &Folder, inner: &mut Inner, f: u32) {
    if inner.parts.get(&f).is_some_and(|p| p.file.is_none()) {
        inner.parts.remove(&f);
        if inner.need[f as usize] {
            folder.requeue(inner, f);
        }
    }
}

/// One folder session, both ways, until either side closes or the folder stops.
#[allow(clippy::too_many_arguments)]
async fn run_session(
    shared: Arc<Shared>,
    folder: Arc<Folder>,
    peer: PeerId,
    fr: FrameReader<ReadHalf>,
    w: WriteHalf,
    state: FolderState,
    first: Vec<Vec<u8>>,
    inbound: Option<Inbound>,
) {
    let n = folder.sizes.len();
    let state = Arc::new(Mutex::new(state));
    let (wtx, wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicU64::new(0));
    let drained = Arc::new(Notify::new());
    let (itx, mut irx) = mpsc::channel::<In>(64);
    let (ctx, mut crx) = mpsc::channel::<Ctl>(4096);
    let mut fr = fr;
    if let Some(limit) = folder.download.as_ref().map(|d| d.limit.clone()) {
        fr.set_limit(Some(limit));
    }
    for f in first {
        let _ = wtx.send(f);
    }
    let writer = tokio::spawn(write_loop(
        w,
        wrx,
        queued.clone(),
        drained.clone(),
        shared.pool.clone(),
    ));
    let reader = tokio::spawn(read_loop(fr, state.clone(), itx, shared.pool.clone()));
    let key = {
        let mut inner = folder.lock();
        let key = inner.next_key;
        inner.next_key += 1;
        inner.sessions.insert(
            key,
            Sess {
                peer,
                ctl: ctx.clone(),
            },
        );
        let p = inner.peers.entry(peer).or_default();
        p.sessions += 1;
        p.interested = true;
        p.since.get_or_insert_with(Instant::now);
        key
    };
    let from = inbound
        .as_ref()
        .and_then(|i| i.remote.as_ref())
        .map(|r| format!("{} ({})", r.addr, r.path));
    tracing::debug!(id = %folder.id, %peer, ?from, "folder session");
    let mut s = Session {
        folder: folder.clone(),
        shared: shared.clone(),
        peer,
        state,
        wtx,
        ctl: ctx,
        queued,
        drained,
        broken: false,
        peer_has: vec![false; n],
        peer_count: 0,
        got_avail: false,
        mine: HashMap::new(),
        mine_parts: HashMap::new(),
        mine_obs: HashSet::new(),
        mine_bytes: 0,
        cursor: rand::random::<u32>() % (n.max(1) as u32),
        serve_queue: std::collections::VecDeque::new(),
        io: JoinSet::new(),
        uploaded: 0,
        told: HashSet::new(),
        last_sent: Instant::now(),
        interest_cursor: 0,
        interest_clean: 0,
        peer_parts: HashMap::new(),
        piece_start: rand::random(),
    };
    for (file, piece) in folder.partial_pieces() {
        s.send(&Message::PartHave { file, piece });
    }
    let end = s.run(&mut irx, &mut crx, inbound.as_ref()).await;
    // Leave the folder: this session's requests go back to the pool.
    {
        let mut inner = folder.lock();
        inner.sessions.remove(&key);
        if let Some(p) = inner.peers.get_mut(&peer) {
            p.sessions = p.sessions.saturating_sub(1);
            if p.sessions == 0 {
                p.since = None;
                inner.choker.gone(&peer);
            }
        }
        for &f in s.mine.keys() {
            let fu = f as usize;
            inner.requested[fu] = inner.requested[fu].saturating_sub(1);
            if inner.need[fu] && inner.requested[fu] == 0 && !inner.writing[fu] {
                inner.pending.insert(f);
            }
        }
        for &(f, piece) in s.mine_parts.keys() {
            unask_part(&mut inner, f, piece);
        }
        for &f in &s.mine_obs {
            reopen_part(&folder, &mut inner, f);
        }
        if s.got_avail {
            for (i, h) in s.peer_has.iter().enumerate() {
                if *h {
                    inner.avail[i] = inner.avail[i].saturating_sub(1);
                }
            }
        }
    }
    folder.changed.notify_waiters();
    if let Some(log) = inbound.as_ref().and_then(|i| i.log) {
        shared.access.served(log, s.uploaded);
    }
    if let Some((code, text)) = end {
        let text = crate::content::text(&text);
        if let Some(f) = frame_of(&Message::Close { code, text }) {
            let _ = s.wtx.send(f);
        }
    }
    reader.abort();
    drop(s);
    // The writer ends once its queue is drained (all senders gone).
    let abort = writer.abort_handle();
    tokio::spawn(async move {
        if tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    });
}

/// A whole frame read by a serving job, and where its data starts.
type Framed = (Vec<u8>, usize);

enum Done {
    Served(u32, Option<Framed>),
    Outboard(u32, Option<Vec<u8>>),
    Part(u32, u32, Option<Framed>),
}

/// A request of the peer waiting for an I/O slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    File(u32),
    Outboard(u32),
    Part(u32, u32),
}

/// A request this side is about to send.
enum Ask {
    File(u32, u64),
    Outboard(u32),
    Part(u32, u32, u64),
}

struct Session {
    folder: Arc<Folder>,
    shared: Arc<Shared>,
    peer: PeerId,
    state: Arc<Mutex<FolderState>>,
    wtx: mpsc::UnboundedSender<Vec<u8>>,
    /// This session's own control channel (for write results).
    ctl: mpsc::Sender<Ctl>,
    /// Bytes queued for the writer, and its signal that it wrote some.
    queued: Arc<AtomicU64>,
    drained: Arc<Notify>,
    /// A frame could not be queued (the writer ended): the session ends.
    broken: bool,
    peer_has: Vec<bool>,
    peer_count: usize,
    got_avail: bool,
    /// This side's outstanding requests: whole files (file → size), parts
    /// ((file, piece) → length) and outboards; the bytes of the first two.
    mine: HashMap<u32, u64>,
    mine_parts: HashMap<(u32, u32), u64>,
    mine_obs: HashSet<u32>,
    mine_bytes: u64,
    cursor: u32,
    /// Requests of the peer waiting for an I/O slot.
    serve_queue: std::collections::VecDeque<Serve>,
    io: JoinSet<Done>,
    uploaded: u64,
    /// Peers already named to this peer in peer exchange.
    told: HashSet<PeerId>,
    last_sent: Instant,
    /// Where the scan for files this side wants from the peer goes on, and
    /// how many files in a row it found none.
    interest_cursor: usize,
    interest_clean: usize,
    /// Pieces of part files the peer announced (`PartHave`) and does not
    /// have complete: at most `PEER_PARTIAL_FILES` files, needed ones.
    peer_parts: HashMap<u32, HashSet<u32>>,
    /// Where this session starts in a part file's pieces (random, so that
    /// peers fetching a file at once hold different pieces to trade).
    piece_start: u32,
}

impl Session {
    /// Sends `msg` if the protocol allows it now.
    fn send(&mut self, msg: &Message<'_>) -> bool {
        let ok = self
            .state
            .lock()
            .map(|mut s| s.on_send(msg).is_ok())
            .unwrap_or(false);
        if !ok {
            return false;
        }
        match frame_of(msg) {
            Some(f) => {
                self.last_sent = Instant::now();
                self.queued.fetch_add(f.len() as u64, Ordering::Relaxed);
                if self.wtx.send(f).is_err() {
                    self.broken = true;
                    return false;
                }
                true
            }
            None => false,
        }
    }

    /// Sends `frame`, a whole `Piece` or `Part` frame whose data starts at
    /// `hdr` (`msg` makes the message of that data, for the protocol check),
    /// if the protocol allows it now; the data's length if sent.
    fn send_framed(
        &mut self,
        msg: impl for<'d> FnOnce(&'d [u8]) -> Message<'d>,
        hdr: usize,
        frame: Vec<u8>,
    ) -> Option<u64> {
        let data_len = frame.len().checked_sub(hdr)?;
        let ok = {
            let m = msg(&frame[hdr..]);
            self.state
                .lock()
                .map(|mut s| s.on_send(&m).is_ok())
                .unwrap_or(false)
        };
        if !ok {
            return None;
        }
        self.last_sent = Instant::now();
        self.queued.fetch_add(frame.len() as u64, Ordering::Relaxed);
        if self.wtx.send(frame).is_err() {
            self.broken = true;
            return None;
        }
        Some(data_len as u64)
    }

    /// The main loop; returns the `Close` to send, if any.
    async fn run(
        &mut self,
        irx: &mut mpsc::Receiver<In>,
        crx: &mut mpsc::Receiver<Ctl>,
        inbound: Option<&Inbound>,
    ) -> Option<(CloseCode, String)> {
        let started = Instant::now();
        let mut pex_at = started + PEX_FIRST;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = self.folder.stop.subscribe();
        let mut policy = self.shared.access.subscribe();
        let mut recheck = inbound.is_some();
        loop {
            if recheck {
                recheck = false;
                if let Some(i) = inbound {
                    let (access, id, peer, cap) = (
                        self.shared.access.clone(),
                        self.folder.id,
                        self.peer,
                        i.capability.clone(),
                    );
                    let v =
                        tokio::task::spawn_blocking(move || access.check(&id, &peer, &cap)).await;
                    if let Ok(Ok(Verdict::Deny(d))) = v {
                        return Some((
                            CloseCode::AccessRevoked,
                            format!("access revoked: {}", d.text),
                        ));
                    }
                }
            }
            if *stop.borrow() {
                return Some((
                    CloseCode::Normal,
                    "the folder is no longer served here".into(),
                ));
            }
            self.apply_choke();
            self.fill_requests();
            self.start_serving();
            if self.broken {
                return None;
            }
            if self.both_done() {
                return Some((CloseCode::Normal, "both have every file".into()));
            }
            let notified = self.folder.changed.notified();
            tokio::select! {
                ev = irx.recv() => match ev {
                    None => return None,
                    Some(ev) => if let Some(end) = self.on_in(ev) { return end; },
                },
                Some(done) = self.io.join_next(), if !self.io.is_empty() => {
                    match done {
                        Ok(d) => if let Some(end) = self.on_done(d) { return Some(end); },
                        Err(e) => return Some((CloseCode::Shutdown, format!("an I/O task failed: {e}"))),
                    }
                }
                Some(ctl) = crx.recv() => match ctl {
                    Ctl::Have(i) => {
                        self.send(&Message::Have { piece: i });
                    }
                    Ctl::PartHave(file, piece) => {
                        if !self.peer_has[file as usize] {
                            self.send(&Message::PartHave { file, piece });
                        }
                    }
                    Ctl::Bad(i) => {
                        return Some((CloseCode::BadData, format!("file {i} does not match its id")));
                    }
                },
                _ = notified => {}
                _ = self.drained.notified() => {}
                _ = stop.changed() => {}
                _ = policy.changed(), if inbound.is_some() => recheck = true,
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now >= pex_at {
                        self.send_pex();
                        pex_at = now + PEX_EVERY;
                    }
                    self.update_interest();
                    if now.duration_since(self.last_sent) >= KEEPALIVE_INTERVAL {
                        self.send(&Message::KeepAlive);
                    }
                }
            }
        }
    }

    /// This side needs nothing more and the peer has every file: nothing left
    /// to do for either.
    fn both_done(&self) -> bool {
        let n = self.folder.sizes.len();
        self.got_avail
            && self.peer_count == n
            && self.mine.is_empty()
            && self.mine_parts.is_empty()
            && self.mine_obs.is_empty()
            && self.serve_queue.is_empty()
            && self.io.is_empty()
            && self.folder.lock().remaining == 0
    }

    fn on_in(&mut self, ev: In) -> Option<Option<(CloseCode, String)>> {
        match ev {
            In::Avail(bits) => {
                let mut inner = self.folder.lock();
                for i in 0..self.peer_has.len() {
                    if bits[i / 8] & (0x80 >> (i % 8)) != 0 {
                        self.peer_has[i] = true;
                        self.peer_count += 1;
                        inner.avail[i] = inner.avail[i].saturating_add(1);
                    }
                }
                self.got_avail = true;
            }
            In::Have(i) => {
                let iu = i as usize;
                self.peer_parts.remove(&i);
                if !self.peer_has[iu] {
                    self.peer_has[iu] = true;
                    self.peer_count += 1;
                    if self.got_avail {
                        let mut inner = self.folder.lock();
                        inner.avail[iu] = inner.avail[iu].saturating_add(1);
                    }
                }
            }
            In::Request(i) => self.queue_request(Serve::File(i)),
            In::OutboardReq(f) => self.serve_queue.push_back(Serve::Outboard(f)),
            In::PartReq(f, piece) => self.queue_request(Serve::Part(f, piece)),
            In::Outboard(f, cvs) => return self.on_outboard(f, cvs).map(Some),
            In::Part(f, piece, data) => return self.on_part(f, piece, data).map(Some),
            In::PartReject(f, piece, choked) => {
                if let Some(len) = self.mine_parts.remove(&(f, piece)) {
                    self.mine_bytes -= len;
                }
                let mut inner = self.folder.lock();
                unask_part(&mut inner, f, piece);
                drop(inner);
                if !choked {
                    if self.peer_has[f as usize] {
                        self.lacks(f);
                    } else if let Some(set) = self.peer_parts.get_mut(&f) {
                        set.remove(&piece);
                    }
                }
                self.folder.changed.notify_waiters();
            }
            In::PartHave(f, piece) => {
                let fu = f as usize;
                let wanted = {
                    let inner = self.folder.lock();
                    inner.need[fu] && !inner.have[fu]
                };
                if wanted
                    && !self.peer_has[fu]
                    && (self.peer_parts.len() < PEER_PARTIAL_FILES
                        || self.peer_parts.contains_key(&f))
                {
                    self.peer_parts.entry(f).or_default().insert(piece);
                    self.folder.changed.notify_waiters();
                }
            }
            In::Cancel(i) => {
                if let Some(pos) = self.serve_queue.iter().position(|&q| q == Serve::File(i)) {
                    self.serve_queue.remove(pos);
                    self.send(&Message::Reject {
                        piece: i,
                        reason: RejectReason::Cancelled,
                    });
                }
            }
            In::File(i, data) => return self.on_file(i, data).map(Some),
            In::Reject(i, choked) => {
                // It does not have the file (now), or chokes this side: ask
                // another peer.
                self.forget(i);
                if !choked {
                    self.lacks(i);
                }
                self.folder.changed.notify_waiters();
            }
            In::Pex(peers) => {
                if let Some(d) = &self.folder.download {
                    let fresh: Vec<_> = peers
                        .into_iter()
                        .filter(|(p, _)| *p != self.shared.local && *p != self.peer)
                        .take(crate::transfer::PEX_NEW_PER_MESSAGE)
                        .collect();
                    if !fresh.is_empty() {
                        d.connector.learned(fresh);
                    }
                }
            }
            In::Nothing => {}
            In::End(close, why) => {
                tracing::debug!(id = %self.folder.id, peer = %self.peer, %why, "folder session ends");
                return Some(close);
            }
        }
        None
    }

    /// The peer does not have file `i` (any more).
    fn lacks(&mut self, i: u32) {
        self.peer_parts.remove(&i);
        let iu = i as usize;
        if self.peer_has[iu] {
            self.peer_has[iu] = false;
            self.peer_count -= 1;
            let mut inner = self.folder.lock();
            inner.avail[iu] = inner.avail[iu].saturating_sub(1);
        }
    }

    /// The outboard of part file `f` arrived (empty: the peer lacks the
    /// file): checked against the file's id, then the file opens.
    fn on_outboard(&mut self, f: u32, cvs: Vec<u8>) -> Option<(CloseCode, String)> {
        self.mine_obs.remove(&f);
        let folder = self.folder.clone();
        let fu = f as usize;
        let e = &folder.manifest.entries()[fu];
        let ob = PieceLayout::for_len(e.size)
            .ok()
            .filter(|_| !cvs.is_empty())
            .map(|l| Outboard::decode(e.id, l, &cvs));
        let ob = match ob {
            Some(Ok(ob)) => ob,
            bad => {
                reopen_part(&folder, &mut folder.lock(), f);
                folder.changed.notify_waiters();
                if bad.is_none() {
                    self.lacks(f);
                    return None;
                }
                folder.lock().peers.entry(self.peer).or_default().banned = true;
                return Some((
                    CloseCode::BadData,
                    format!("the outboard of file {f} does not match its id"),
                ));
            }
        };
        {
            let inner = folder.lock();
            if !inner.need[fu] || inner.parts.get(&f).is_none_or(|p| p.file.is_some()) {
                return None;
            }
        }
        let shared = folder.shared.upgrade()?;
        tokio::spawn(async move {
            let (dest, temp) = (folder.path_of(fu), folder.temp_of(fu));
            let opened = tokio::task::spawn_blocking(move || {
                shared.store.open_download(ob, &dest, Some(&temp))
            })
            .await;
            let res = match opened {
                Ok(r) => r.map_err(NodeError::from),
                Err(e) => Err(NodeError::Internal(format!("opening a file failed: {e}"))),
            };
            folder.part_opened(f, res);
        });
        None
    }

    /// Piece `piece` of part file `f` arrived: verified and written apart
    /// from this session (it is kept if the session ends meanwhile).
    fn on_part(&mut self, f: u32, piece: u32, data: Vec<u8>) -> Option<(CloseCode, String)> {
        if let Some(len) = self.mine_parts.remove(&(f, piece)) {
            self.mine_bytes -= len;
        }
        let len = data.len() as u64;
        let folder = self.folder.clone();
        let (file, verifier) = {
            let mut inner = folder.lock();
            unask_part(&mut inner, f, piece);
            let p = inner.parts.get_mut(&f)?;
            let (Some(file), Some(verifier)) = (p.file.clone(), p.verifier.clone()) else {
                return None;
            };
            let here = p.got.get(piece as usize).copied().unwrap_or(true);
            if p.finishing || here || p.writing.contains(&piece) {
                // Another peer's copy won (endgame).
                return None;
            }
            p.writing.insert(piece);
            p.todo.remove(&piece);
            inner.backlog += len;
            (file, verifier)
        };
        let (io, peer, ctl) = (self.shared.io_limit.clone(), self.peer, self.ctl.clone());
        let pool = self.shared.pool.clone();
        tokio::spawn(async move {
            let _permit = io.acquire_owned().await;
            let res = tokio::task::spawn_blocking(move || {
                let res = write_part(&file, &verifier, piece, &data);
                pool.give(data);
                res
            })
            .await
            .unwrap_or_else(|e| Err(NodeError::Internal(format!("writing a piece failed: {e}"))));
            folder.part_written(f, piece, len, peer, res, &ctl);
        });
        None
    }

    /// This side's request for `i` is answered or void.
    fn forget(&mut self, i: u32) {
        if let Some(size) = self.mine.remove(&i) {
            self.mine_bytes -= size;
        }
        let mut inner = self.folder.lock();
        let iu = i as usize;
        inner.requested[iu] = inner.requested[iu].saturating_sub(1);
        if inner.need[iu] && inner.requested[iu] == 0 && !inner.writing[iu] && !inner.have[iu] {
            inner.pending.insert(i);
        }
    }

    fn on_file(&mut self, i: u32, data: Vec<u8>) -> Option<(CloseCode, String)> {
        let iu = i as usize;
        if let Some(size) = self.mine.remove(&i) {
            self.mine_bytes -= size;
        }
        {
            let mut inner = self.folder.lock();
            inner.requested[iu] = inner.requested[iu].saturating_sub(1);
            if inner.have[iu] || inner.writing[iu] || !inner.need[iu] {
                // Another peer's copy won (endgame).
                return None;
            }
            inner.writing[iu] = true;
            inner.backlog += self.folder.sizes[iu];
            inner.pending.remove(&i);
        }
        // Not tied to this session: a file that arrived is written and
        // placed even if the session ends meanwhile.
        let (folder, io, peer, ctl) = (
            self.folder.clone(),
            self.shared.io_limit.clone(),
            self.peer,
            self.ctl.clone(),
        );
        tokio::spawn(async move {
            let _permit = io.acquire_owned().await;
            let f = folder.clone();
            let res = tokio::task::spawn_blocking(move || write_whole(&f, iu, &data))
                .await
                .unwrap_or_else(|e| {
                    Err(NodeError::Internal(format!("writing a file failed: {e}")))
                });
            folder.written(i, peer, res, &ctl);
        });
        None
    }

    fn on_done(&mut self, d: Done) -> Option<(CloseCode, String)> {
        match d {
            Done::Served(i, Some((frame, hdr))) => {
                if let Some(size) =
                    self.send_framed(|data| Message::Piece { piece: i, data }, hdr, frame)
                {
                    self.count_upload(size);
                }
            }
            Done::Served(i, None) => {
                self.send(&Message::Reject {
                    piece: i,
                    reason: RejectReason::NotAvailable,
                });
            }
            Done::Outboard(f, cvs) => {
                self.send(&Message::FileOutboard {
                    file: f,
                    cvs: cvs.as_deref().unwrap_or(&[]),
                });
            }
            Done::Part(f, piece, Some((frame, hdr))) => {
                if let Some(size) = self.send_framed(
                    |data| Message::Part {
                        file: f,
                        piece,
                        data,
                    },
                    hdr,
                    frame,
                ) {
                    self.count_upload(size);
                }
            }
            Done::Part(f, piece, None) => {
                self.send(&Message::PartReject {
                    file: f,
                    piece,
                    reason: RejectReason::NotAvailable,
                });
            }
        }
        None
    }

    fn count_upload(&mut self, size: u64) {
        self.uploaded += size;
        self.folder.lock().peers.entry(self.peer).or_default().up += size;
        if let Ok(mut all) = self.shared.uploads.lock() {
            all.entry(self.folder.id).or_default().uploaded += size;
        }
    }

    /// Starts reads for the peer's queued requests, up to the I/O bound.
    fn start_serving(&mut self) {
        while self.io.len() < IO_PER_SESSION && self.queued.load(Ordering::Relaxed) < WRITE_BYTES {
            let Some(item) = self.serve_queue.pop_front() else {
                return;
            };
            let i = match item {
                Serve::File(i) | Serve::Outboard(i) | Serve::Part(i, _) => i,
            };
            let iu = i as usize;
            if !self.folder.can_serve(item) {
                match item {
                    Serve::File(_) => self.send(&Message::Reject {
                        piece: i,
                        reason: RejectReason::NotAvailable,
                    }),
                    Serve::Outboard(_) => self.send(&Message::FileOutboard { file: i, cvs: &[] }),
                    Serve::Part(_, piece) => self.send(&Message::PartReject {
                        file: i,
                        piece,
                        reason: RejectReason::NotAvailable,
                    }),
                };
                continue;
            }
            let e = &self.folder.manifest.entries()[iu];
            let (path, id, size) = (self.folder.path_of(iu), e.id, e.size);
            let io = self.shared.io_limit.clone();
            let folder = self.folder.clone();
            self.io.spawn(async move {
                let _permit = io.acquire_owned().await;
                let job = move || match item {
                    Serve::File(_) => Done::Served(
                        i,
                        whole_frame(
                            folder.shared.upgrade().map(|s| s.pool.clone()).as_ref(),
                            &path,
                            i,
                            id,
                            size,
                        ),
                    ),
                    Serve::Outboard(_) => Done::Outboard(i, folder.outboard_cvs(iu)),
                    Serve::Part(_, piece) => {
                        let here = folder.lock().have[iu];
                        Done::Part(
                            i,
                            piece,
                            if here {
                                folder.part_frame(iu, piece)
                            } else {
                                folder.partial_frame(iu, piece)
                            },
                        )
                    }
                };
                let fallback = match item {
                    Serve::File(_) => Done::Served(i, None),
                    Serve::Outboard(_) => Done::Outboard(i, None),
                    Serve::Part(_, piece) => Done::Part(i, piece, None),
                };
                tokio::task::spawn_blocking(job).await.unwrap_or(fallback)
            });
        }
    }

    fn choked_by_peer(&self) -> bool {
        self.state.lock().map(|s| s.peer_choking()).unwrap_or(true)
    }

    /// A request of the peer for a file or a piece: queued, or answered
    /// `Choked` at once while this side chokes it.
    fn queue_request(&mut self, item: Serve) {
        let choking = self.state.lock().map(|s| s.am_choking()).unwrap_or(true);
        if choking {
            self.reject_choked(item);
        } else {
            self.serve_queue.push_back(item);
        }
    }

    fn reject_choked(&mut self, item: Serve) {
        let reason = RejectReason::Choked;
        match item {
            Serve::File(piece) => self.send(&Message::Reject { piece, reason }),
            Serve::Part(file, piece) => self.send(&Message::PartReject {
                file,
                piece,
                reason,
            }),
            Serve::Outboard(_) => false,
        };
    }

    /// Follows the folder's choker: runs a round when one is due, gives the
    /// peer a free slot when it wants files, and sends `Choke` (answering
    /// its queued file and piece requests `Choked`; outboards are still
    /// served) or `Unchoke` when its state here changed.
    fn apply_choke(&mut self) {
        let Ok((choking, interested)) = self
            .state
            .lock()
            .map(|s| (s.am_choking(), s.peer_interested()))
        else {
            return;
        };
        let now = Instant::now();
        let (unchoke, rechoked) = {
            let mut inner = self.folder.lock();
            let seeding = inner.remaining == 0;
            if let Some(p) = inner.peers.get_mut(&self.peer) {
                p.interested = interested;
            }
            let rechoked = inner.choker.due(now);
            if rechoked {
                let cands: Vec<Cand> = inner
                    .peers
                    .iter()
                    .filter(|(_, p)| p.sessions > 0 && p.interested && !p.banned)
                    .map(|(peer, p)| Cand {
                        peer: *peer,
                        down: p.down,
                        up: p.up,
                        since: p.since.unwrap_or(now),
                    })
                    .collect();
                inner.choker.round(now, seeding, &cands);
            }
            if !interested {
                inner.choker.leave(&self.peer);
            } else {
                inner.choker.fill(self.peer, seeding);
            }
            (inner.choker.unchoked(&self.peer), rechoked)
        };
        if rechoked {
            // The other sessions follow the new slots.
            self.folder.changed.notify_waiters();
        }
        if unchoke && choking {
            self.send(&Message::Unchoke);
        } else if !unchoke && !choking && self.send(&Message::Choke) {
            let queued: Vec<Serve> = self.serve_queue.drain(..).collect();
            for item in queued {
                if let Serve::Outboard(_) = item {
                    self.serve_queue.push_back(item);
                } else {
                    self.reject_choked(item);
                }
            }
        }
    }

    /// Tells the peer whether this side wants any of its files, from a
    /// scan of at most `PICK_SCAN` files per tick (continued where the last
    /// ended): not interested only once every file was looked at without
    /// one that the peer has and this side still needs.
    fn update_interest(&mut self) {
        if !self.got_avail {
            return;
        }
        let Ok(was) = self.state.lock().map(|s| s.am_interested()) else {
            return;
        };
        let wants = if self.folder.download.is_none() {
            false
        } else if self.asks() > 0 {
            true
        } else {
            let inner = self.folder.lock();
            let n = self.peer_has.len();
            if inner.remaining == 0
                || (self.peer_count == 0 && self.peer_parts.is_empty())
                || n == 0
            {
                false
            } else {
                let mut found = false;
                for _ in 0..PICK_SCAN.min(n) {
                    let i = self.interest_cursor % n;
                    if self.peer_has[i]
                        && inner.need[i]
                        && !inner.have[i]
                        && !inner.elsewhere.contains(&(i as u32))
                    {
                        found = true;
                        break;
                    }
                    self.interest_cursor = (i + 1) % n;
                    self.interest_clean += 1;
                }
                if !found {
                    found = self.peer_parts.keys().any(|&f| {
                        let fu = f as usize;
                        inner.need[fu] && !inner.have[fu]
                    });
                }
                if found {
                    self.interest_clean = 0;
                    true
                } else if self.interest_clean >= n {
                    self.interest_clean = n;
                    false
                } else {
                    was
                }
            }
        };
        if wants != was {
            self.send(if wants {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
    }

    /// Requests this side has outstanding with the peer.
    fn asks(&self) -> usize {
        self.mine.len() + self.mine_parts.len() + self.mine_obs.len()
    }

    /// Asks the peer for needed files and pieces of part files, rarest
    /// first, up to the bounds.
    fn fill_requests(&mut self) {
        if self.folder.download.is_none() || !self.got_avail || self.choked_by_peer() {
            return;
        }
        let folder = self.folder.clone();
        let n = folder.sizes.len() as u32;
        let mut picks: Vec<Ask> = Vec::new();
        {
            let mut inner = folder.lock();
            if inner.remaining == 0
                || (self.peer_count == 0 && self.peer_parts.is_empty())
                || inner.backlog >= WRITE_BACKLOG
            {
                return;
            }
            let mut bytes = self.mine_bytes;
            let (mut no_whole, mut no_part) = (false, false);
            while self.asks() + picks.len() < WANT_REQUESTS
                && bytes < WANT_BYTES
                && !(no_whole && no_part)
            {
                if !no_part {
                    match pick_part(
                        &mut inner,
                        &self.peer_has,
                        &self.peer_parts,
                        self.cursor,
                        self.piece_start,
                    ) {
                        Some(a) => {
                            if let Ask::Part(_, _, len) = a {
                                bytes += len;
                            }
                            picks.push(a);
                            continue;
                        }
                        None => no_part = true,
                    }
                }
                if !no_whole {
                    match pick(&inner, &self.peer_has, self.cursor) {
                        Some(i) => {
                            inner.pending.remove(&i);
                            inner.requested[i as usize] += 1;
                            self.cursor = (i + 1) % n.max(1);
                            let size = folder.sizes[i as usize];
                            bytes += size;
                            picks.push(Ask::File(i, size));
                        }
                        None => no_whole = true,
                    }
                }
            }
            // Endgame: every needed file (piece) is asked for; an idle
            // session asks again for some asked elsewhere.
            if picks.is_empty() && self.asks() == 0 && inner.pending.is_empty() {
                let extra: Vec<u32> = (0..n)
                    .filter(|&i| {
                        let iu = i as usize;
                        inner.need[iu]
                            && !inner.writing[iu]
                            && !inner.have[iu]
                            && self.peer_has[iu]
                            && !folder.is_part(iu)
                    })
                    .take(ENDGAME_REQUESTS)
                    .collect();
                for i in extra {
                    inner.requested[i as usize] += 1;
                    picks.push(Ask::File(i, folder.sizes[i as usize]));
                }
                if picks.is_empty() && inner.part_pending.is_empty() {
                    let files: Vec<u32> = inner
                        .parts
                        .keys()
                        .copied()
                        .filter(|&f| inner.need[f as usize] && self.peer_has[f as usize])
                        .collect();
                    for f in files {
                        if picks.len() >= ENDGAME_REQUESTS {
                            break;
                        }
                        let Some(p) = inner.parts.get_mut(&f) else {
                            continue;
                        };
                        let Some(layout) = p.layout.filter(|_| p.open()) else {
                            continue;
                        };
                        let dup: Vec<u32> = p
                            .asked
                            .keys()
                            .copied()
                            .filter(|&x| !p.writing.contains(&x))
                            .take(ENDGAME_REQUESTS - picks.len())
                            .collect();
                        for x in dup {
                            *p.asked.entry(x).or_default() += 1;
                            picks.push(Ask::Part(f, x, layout.piece_len(x) as u64));
                        }
                    }
                }
            }
        }
        for a in picks {
            match a {
                Ask::File(i, size) => {
                    self.mine.insert(i, size);
                    self.mine_bytes += size;
                    if !self.send(&Message::Request { piece: i }) {
                        self.forget(i);
                    }
                }
                Ask::Outboard(f) => {
                    if self.send(&Message::FileOutboardRequest { file: f }) {
                        self.mine_obs.insert(f);
                    } else {
                        reopen_part(&folder, &mut folder.lock(), f);
                    }
                }
                Ask::Part(f, piece, len) => {
                    if self.send(&Message::PartRequest { file: f, piece }) {
                        self.mine_parts.insert((f, piece), len);
                        self.mine_bytes += len;
                    } else {
                        unask_part(&mut folder.lock(), f, piece);
                    }
                }
            }
        }
    }

    /// Names the folder's other peers (with addresses) to this one.
    fn send_pex(&mut self) {
        let Some(book) = self.shared.book.get().cloned() else {
            return;
        };
        let others: Vec<PeerId> = {
            let inner = self.folder.lock();
            inner
                .sessions
                .values()
                .map(|s| s.peer)
                .filter(|p| *p != self.peer && !self.told.contains(p))
                .take(MAX_PEX_ADDED)
                .collect()
        };
        let mut entries: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        for p in others {
            let addrs: Vec<Vec<u8>> = book
                .addrs_for(&p, &self.peer)
                .into_iter()
                .map(|a| a.to_vec())
                .filter(|a| !a.is_empty() && a.len() <= shoal_core::proto::MAX_ADDR_LEN)
                .take(shoal_core::proto::MAX_PEX_ADDRS)
                .collect();
            if addrs.is_empty() {
                continue;
            }
            self.told.insert(p);
            entries.push((p.to_bytes(), addrs));
        }
        if entries.is_empty() {
            return;
        }
        let added = entries
            .iter()
            .map(|(p, a)| PexPeer {
                peer: p,
                addrs: a.iter().map(Vec::as_slice).collect(),
            })
            .collect();
        self.send(&Message::PeerExchange {
            added,
            dropped: Vec::new(),
        });
    }
}

/// The rarest of the first `PICK_WINDOW` pending whole files the peer has,
/// looking from `cursor` on (each session starts at a random place, so that
/// peers fetching the same folder fetch different files first and can
/// trade); high priority files first.
fn pick(inner: &Inner, peer_has: &[bool], cursor: u32) -> Option<u32> {
    pick_from(&inner.pending, inner, peer_has, cursor)
}

/// `pick` over the needed files `set`.
fn pick_from(set: &BTreeSet<u32>, inner: &Inner, peer_has: &[bool], cursor: u32) -> Option<u32> {
    if let Some(&i) = inner
        .high
        .iter()
        .find(|&&i| peer_has[i as usize] && set.contains(&i))
    {
        return Some(i);
    }
    let mut best: Option<(u16, u32)> = None;
    let mut seen = 0;
    for (scanned, &i) in set.range(cursor..).chain(set.range(..cursor)).enumerate() {
        if scanned >= PICK_SCAN || seen >= PICK_WINDOW {
            break;
        }
        if !peer_has[i as usize] {
            continue;
        }
        seen += 1;
        let a = inner.avail[i as usize];
        if best.is_none_or(|(b, _)| a < b) {
            best = Some((a, i));
        }
        if a <= 1 {
            break;
        }
    }
    best.map(|(_, i)| i)
}

/// The next piece of an open part file the peer has (high priority files
/// first, then the file with the fewest pieces left, so files complete
/// early), or else a part file to open (its outboard to ask for), chosen as
/// `pick` chooses whole files, while fewer than `OPEN_PARTS` are open.
fn pick_part(
    inner: &mut Inner,
    peer_has: &[bool],
    peer_parts: &HashMap<u32, HashSet<u32>>,
    cursor: u32,
    piece_start: u32,
) -> Option<Ask> {
    // A piece the peer has: of a file it has complete, or one it announced.
    let offers = |f: u32, p: &Part| {
        peer_has[f as usize]
            || peer_parts
                .get(&f)
                .is_some_and(|s| s.iter().any(|x| p.todo.contains(x)))
    };
    // Not a file set to skip whose pieces are still being written (it
    // closes once they are).
    let next = inner
        .parts
        .iter()
        .filter(|(f, p)| {
            p.open() && inner.need[**f as usize] && !p.todo.is_empty() && offers(**f, p)
        })
        .min_by_key(|(f, p)| (!inner.high.contains(f), p.todo.len(), **f))
        .map(|(f, _)| *f);
    if let Some(f) = next {
        let p = inner.parts.get_mut(&f)?;
        let piece = if peer_has[f as usize] {
            let start = piece_start % (p.got.len().max(1) as u32);
            let x = *p.todo.range(start..).next().or_else(|| p.todo.first())?;
            p.todo.remove(&x);
            x
        } else {
            let x = peer_parts
                .get(&f)?
                .iter()
                .copied()
                .filter(|x| p.todo.contains(x))
                .min()?;
            p.todo.remove(&x);
            x
        };
        *p.asked.entry(piece).or_default() += 1;
        let len = p.layout.map_or(0, |l| l.piece_len(piece) as u64);
        return Some(Ask::Part(f, piece, len));
    }
    if inner.parts.len() >= OPEN_PARTS {
        return None;
    }
    // A file the peer has complete, else one it has pieces of (it can
    // give the outboard too).
    let f = pick_from(&inner.part_pending, inner, peer_has, cursor).or_else(|| {
        peer_parts
            .keys()
            .copied()
            .filter(|f| inner.part_pending.contains(f))
            .min()
    })?;
    inner.part_pending.remove(&f);
    inner.parts.insert(f, Part::default());
    Some(Ask::Outboard(f))
}

/// Whether a file of this size goes through folder sessions (whole, or
/// piece by piece).
pub(crate) fn in_sessions(size: u64) -> bool {
    is_whole_file(size) || is_part_file(size)
}
