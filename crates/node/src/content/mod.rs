//! One task per content id (a download or a seed): owns the [`Swarm`] scheduler,
//! maps peer ids to scheduler keys, runs the sessions, executes the scheduler's
//! actions against storage, and fetches the outboard before a download starts.

mod admission;
mod dialing;
mod events;
mod io;
mod outboard;
mod pex;
mod sched;
mod sessions;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p_identity::PeerId;
use shoal_core::proto::{
    Bitfield as WireBitfield, CloseCode, ConnectionState, DenyReason, Hello, Layout, Message,
    PexPeer, RejectReason, Role, CV_LEN, MAX_ADDR_LEN, MAX_OUTBOARD_CVS,
    MAX_OUTSTANDING_OUTBOARD_REQUESTS, MAX_PEER_ID_LEN, MAX_PEX_ADDED, MAX_PEX_ADDRS,
    MAX_PEX_DROPPED, MAX_TEXT_LEN,
};
use shoal_core::ContentId;
use shoal_store::{read_piece, Cv, Outboard, PartialFile, PieceLayout, PieceVerifier, StoreError};
use shoal_swarm::{
    Action, Bitfield as SwarmBitfield, DisconnectReason, Event, Msg, PeerKey, Swarm,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::NodeError;
use crate::session::{
    frame_of, outbox, reap_writer, run_reader, run_writer, Availability, BoxStream, FrameReader,
    InMsg, Out, Outbox, PiecePermit, ReadHalf, SessionEvent, WriteHalf, WRITE_QUEUE,
};
use crate::transfer::{
    Connector, PeerProgress, Progress, Shared, PEX_MAX_LEARNED, PEX_NEW_PER_MESSAGE,
};

/// Events of a content task (its single input channel).
pub(crate) enum Ev {
    /// An inbound stream whose hello names this content (the hello was read).
    Inbound {
        peer: PeerId,
        fr: FrameReader<ReadHalf>,
        w: WriteHalf,
        piece_size: Option<u32>,
        content_len: Option<u64>,
        admitted: Admitted,
    },
    /// A dial finished.
    Dialed {
        peer: PeerId,
        res: Result<BoxStream, NodeError>,
    },
    Session(PeerKey, SessionEvent),
    UploadRead {
        key: PeerKey,
        piece: u32,
        res: Result<Vec<u8>, StoreError>,
    },
    Verified {
        key: PeerKey,
        piece: u32,
        len: usize,
        res: Result<(), StoreError>,
    },
    Finished(Result<PathBuf, StoreError>),
    Flushed(Result<(), StoreError>),
}

/// Where pieces are served from.
enum Source {
    /// Nothing yet (a download before its outboard).
    None,
    /// A file in place (a share, or a finished download).
    File(PathBuf),
    /// Bytes in memory (a collection manifest).
    Memory(Arc<Vec<u8>>),
    /// A download in progress.
    Partial {
        part: PathBuf,
        file: Arc<Mutex<Option<PartialFile>>>,
        /// Checks received pieces without the lock around `file`.
        verifier: PieceVerifier,
    },
}

/// What a download needs beyond a seed.
pub(crate) struct DownloadCfg {
    pub(crate) dest: PathBuf,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) done: Option<oneshot::Sender<Result<PathBuf, NodeError>>>,
    /// The largest content accepted (a manifest's limit, a collection file's size).
    pub(crate) max_len: Option<u64>,
    /// Dropped with the task (and its blocking jobs): lets a stopping download
    /// wait until its partial file is closed.
    pub(crate) alive: mpsc::Sender<()>,
    /// The download's own rate limit, applied to every session's reads.
    pub(crate) limit: Arc<crate::limit::RateLimiter>,
    /// Registers the download with the access service while the task lives.
    pub(crate) _grant: crate::access::DownloadGrant,
    /// The invite presented in every hello.
    pub(crate) capability: Option<Arc<Vec<u8>>>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct PeerConn {
    id: PeerId,
    state: Arc<Mutex<ConnectionState>>,
    out: Outbox,
    _reader: AbortOnDrop,
    writer: Option<JoinHandle<()>>,
    outbound: bool,
    /// The layout the peer's hello gave (or that we gave, as responder).
    layout: Option<Layout>,
    /// The peer's availability, until it is handed to the scheduler.
    avail: Option<Availability>,
    established: bool,
    registered: bool,
    /// Pieces announced to this peer (availability message and `Have`s).
    announced: Option<SwarmBitfield>,
    /// Pieces being read or sent to this peer (the scheduler's in-flight uploads).
    uploading: HashSet<u32>,
    /// Pieces in the writer's queue or being written.
    queued_pieces: u32,
    downloaded: u64,
    uploaded: u64,
    /// (when, downloaded, uploaded) at each rate tick of the last
    /// [`RATE_WINDOW`], oldest first: rates are taken over that window.
    rate_hist: VecDeque<(Instant, u64, u64)>,
    down_rate: f64,
    up_rate: f64,
    /// When we may next send this peer a `PeerExchange`, and the bucket
    /// that bounds them (messages left, when the next one is added).
    pex_next: Instant,
    pex_tokens: u32,
    pex_refill: Instant,
    /// Peers we told this one about (as added) and not yet as dropped.
    pex_told: HashSet<PeerId>,
    /// The bucket of this peer's `PeerExchange`s we act on (messages left,
    /// when the next one is added).
    pex_heard_tokens: u32,
    pex_heard_refill: Instant,
    /// What the admission of an inbound stream recorded (empty for ours).
    admitted: Admitted,
}

/// What the admission of an inbound stream recorded about it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Admitted {
    /// The hello's capability (empty: none), checked again on policy changes.
    pub(crate) capability: Vec<u8>,
    /// The stream's access-log row (bytes served are added at its end).
    pub(crate) log: Option<i64>,
    /// Where the stream came from.
    pub(crate) remote: Option<crate::transfer::Remote>,
}

impl Drop for PeerConn {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// Our availability message for a new connection.
enum OurAvail {
    None,
    All,
    Bits(WireBitfield),
}

impl OurAvail {
    fn message(&self) -> Message<'_> {
        match self {
            Self::None => Message::HaveNone,
            Self::All => Message::HaveAll,
            Self::Bits(b) => b.to_message(),
        }
    }
}

/// Where a content task stands. Derived from the task's state by
/// [`Content::phase`], so it cannot disagree with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving a share or a manifest: every piece is present.
    Seeding,
    /// A download that does not know the layout yet: asking peers for it.
    Locating,
    /// A download that knows the layout and fetches the outboard.
    FetchingOutboard,
    /// Fetching, verifying and writing pieces.
    Downloading,
    /// Every piece verified: the partial file is synced and renamed into place.
    Finishing,
    /// A download that completed; it keeps serving while its handle lives.
    Complete,
    /// A download that failed: it dials nobody and admits nobody new.
    Failed,
}

/// An inbound stream waiting for this download to learn the content's layout.
struct PendingInbound {
    since: Instant,
    peer: PeerId,
    fr: FrameReader<ReadHalf>,
    w: WriteHalf,
    piece_size: Option<u32>,
    content_len: Option<u64>,
    admitted: Admitted,
}

/// How long an inbound stream may wait for a reply (below the initiator's
/// HELLO_TIMEOUT), after which it is denied `Busy`.
const PENDING_INBOUND_WAIT: Duration = Duration::from_secs(8);

struct OutboardFetch {
    key: PeerKey,
    layout: Layout,
    leaves: Vec<u8>,
    next: u32,
    outstanding: u32,
    received: u32,
}

/// A partial file is flushed (data synced, then its bitfield recorded) this often,
/// or after this many pieces, whichever comes first: a crash loses at most that.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const FLUSH_PIECES: u32 = 64;
/// Pieces queued for one peer's writer whose upload is already reported done to
/// the scheduler (so it can start reading the next one).
const UPLOAD_READ_AHEAD: u32 = 2;
/// Rates (per peer, and so per transfer and share) are verified piece bytes
/// over this sliding window: long enough that a slow transfer's pieces, which
/// arrive whole, do not make its rate jump between zero and twice its value.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Progress snapshots are published at most this often (and on state changes).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How often a download looks for peers to dial (at once when it has none).
const DIAL_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Dial attempts in flight at once per download.
const MAX_DIALS: usize = 8;
/// A peer that could not serve us (dial failed, denied, disconnected) is tried
/// again after this long...
const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// ...at most this many times before the download gives up on it (while no
/// piece has arrived yet).
const MAX_ATTEMPTS: u32 = 5;
/// `PeerExchange` to a peer (spec §9.6): the first as soon as the session is
/// established (naming the peers already here), then whenever there is news
/// (a peer joined, or its addresses became known, or one left), at most
/// `PEX_BURST` messages at once, at least `PEX_SPACING` apart, the bucket
/// refilled with one message every `PEX_EVERY`. So a swarm's first peers
/// learn of each other within a round trip of meeting, and a long-lived
/// connection carries at most one a minute.
const PEX_BURST: u32 = 8;
const PEX_SPACING: Duration = Duration::from_millis(250);
const PEX_EVERY: Duration = Duration::from_secs(60);
/// How often the task looks for peer-exchange news while events arrive.
const PEX_CHECK_EVERY: Duration = Duration::from_millis(100);
/// A peer's `PeerExchange` beyond a bucket of `PEX_HEARD_BURST` refilled
/// one every `PEX_HEARD_EVERY` is ignored (spec §9.6 allows it; a little
/// more slack than the sender's rule, for timers).
const PEX_HEARD_BURST: u32 = PEX_BURST + 2;
const PEX_HEARD_EVERY: Duration = Duration::from_secs(50);
/// By default, a seeding task with no peer, no stream waiting and nothing in
/// flight for this long ends (see `retire_if_idle`); the next stream for its content
/// starts a new one.
pub(crate) const SEED_IDLE: Duration = Duration::from_secs(30);
/// A peer learned through peer exchange is dialed at most this many times.
const PEX_MAX_ATTEMPTS: u32 = 3;

pub(crate) struct Content {
    id: ContentId,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Ev>,
    layout: Option<Layout>,
    outboard: Option<Arc<Outboard>>,
    ob_bytes: Option<Arc<Vec<u8>>>,
    ob_fetch: Option<OutboardFetch>,
    ob_tried: HashSet<PeerId>,
    swarm: Option<Swarm>,
    source: Source,
    peers: HashMap<PeerKey, PeerConn>,
    by_id: HashMap<PeerId, PeerKey>,
    dialing: HashSet<PeerId>,
    pending_inbound: Vec<PendingInbound>,
    /// Dial attempts per peer and when the last one started.
    dialed: HashMap<PeerId, (u32, Instant)>,
    banned: HashSet<PeerId>,
    /// Received pieces that failed verification.
    pieces_failed: u64,
    /// Providers known at the last dial round, dial attempts, and why the
    /// last attempt failed (shown while no peer is connected).
    known_peers: usize,
    dials: u32,
    last_dial_error: Option<String>,
    pending_piece: Option<(PeerKey, u32, Vec<u8>, PiecePermit)>,
    download: Option<DownloadCfg>,
    finishing: bool,
    complete: bool,
    failed: Option<String>,
    progress: watch::Sender<Progress>,
    start: Instant,
    next_flush: Instant,
    last_progress: Instant,
    last_rates: Instant,
    last_dial_check: Instant,
    last_pex_check: Instant,
    next_key: u32,
    events: VecDeque<Event>,
    want_peers: u32,
    /// Piece bytes received from and sent to each peer id over this task's life.
    totals: HashMap<PeerId, (u64, u64)>,
    /// Of the bytes sent, those already added to `Shared::uploads`.
    uploads_reported: u64,
    /// Peers learned through peer exchange and handed to the connector
    /// (at most `PEX_MAX_LEARNED`).
    pex_learned: HashSet<PeerId>,
    /// Addresses of those peers: an address is attributed to one peer id only,
    /// so a lying peer cannot make us dial one address under many names.
    pex_addrs: HashSet<shoal_net::Multiaddr>,
    /// Notified when an access policy changes.
    access_rx: watch::Receiver<u64>,
    /// Peers that refused us for access reasons: never dialed again by this
    /// download; the last such refusal, for the error if no peer is left.
    refused: HashSet<PeerId>,
    access_error: Option<String>,
    /// A seed whose source failed: the task ends (see `retire_source`).
    retired: bool,
    /// Rate limit of the "cannot serve a piece" warning.
    last_read_warning: Option<Instant>,
    read_warnings_suppressed: u32,
    /// Since when a seeding task has had nothing to do.
    idle_since: Option<Instant>,
}

impl Drop for Content {
    fn drop(&mut self) {
        self.report_uploads(true);
        if let Ok(mut r) = self.shared.registry.lock() {
            if r.get(&self.id).is_some_and(|s| s.same_channel(&self.tx)) {
                r.remove(&self.id);
            }
        }
    }
}

fn layout_of(ob: &Outboard) -> Option<Layout> {
    let l = ob.layout();
    Layout::new(l.len(), l.piece_size()).ok()
}

fn piece_layout(l: Layout) -> Option<PieceLayout> {
    PieceLayout::with_piece_size(l.content_len(), u64::from(l.piece_size())).ok()
}

/// `s` cut to the protocol's text limit at a character boundary.
pub(crate) fn text(s: &str) -> &str {
    if s.len() <= MAX_TEXT_LEN {
        return s;
    }
    let mut end = MAX_TEXT_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Content {
    fn new(
        id: ContentId,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Ev>,
        progress: watch::Sender<Progress>,
    ) -> Self {
        let now = Instant::now();
        let access_rx = shared.access.subscribe();
        Self {
            access_rx,
            refused: HashSet::new(),
            access_error: None,
            retired: false,
            last_read_warning: None,
            read_warnings_suppressed: 0,
            idle_since: None,
            id,
            shared,
            tx,
            layout: None,
            outboard: None,
            ob_bytes: None,
            ob_fetch: None,
            ob_tried: HashSet::new(),
            swarm: None,
            source: Source::None,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            dialing: HashSet::new(),
            pending_inbound: Vec::new(),
            dialed: HashMap::new(),
            banned: HashSet::new(),
            pieces_failed: 0,
            known_peers: 0,
            dials: 0,
            last_dial_error: None,
            pending_piece: None,
            download: None,
            finishing: false,
            complete: false,
            failed: None,
            progress,
            start: now,
            next_flush: now + FLUSH_EVERY,
            last_progress: now,
            last_rates: now,
            last_dial_check: now,
            last_pex_check: now,
            next_key: 0,
            events: VecDeque::new(),
            want_peers: 0,
            totals: HashMap::new(),
            uploads_reported: 0,
            pex_learned: HashSet::new(),
            pex_addrs: HashSet::new(),
        }
    }

    /// A seeding task for a content this node shares, served from `file` or from
    /// `memory` (a manifest).
    pub(crate) fn seed(
        id: ContentId,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Ev>,
        outboard: Outboard,
        source_file: Option<PathBuf>,
        memory: Option<Vec<u8>>,
    ) -> Result<Self, NodeError> {
        let (ptx, _) = watch::channel(Progress::new(id));
        let mut c = Self::new(id, shared, tx, ptx);
        let layout = layout_of(&outboard)
            .ok_or_else(|| NodeError::Internal(format!("the outboard of {id} has a bad layout")))?;
        c.layout = Some(layout);
        c.source = match (source_file, memory) {
            (Some(p), _) => Source::File(p),
            (None, Some(m)) => Source::Memory(Arc::new(m)),
            (None, None) => Source::None,
        };
        c.set_outboard(outboard);
        let n = layout.num_pieces();
        let swarm = Swarm::new(
            c.swarm_config(layout),
            n,
            SwarmBitfield::full(n),
            c.seed_rng(),
        )
        .map_err(|e| NodeError::Internal(e.to_string()))?;
        c.swarm = Some(swarm);
        c.complete = true;
        Ok(c)
    }

    /// A download task of `id` into `cfg.dest`.
    pub(crate) fn download(
        id: ContentId,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Ev>,
        progress: watch::Sender<Progress>,
        cfg: DownloadCfg,
    ) -> Self {
        let mut c = Self::new(id, shared, tx, progress);
        c.download = Some(cfg);
        c.want_peers = c.shared.max_peers();
        c
    }

    /// The task's phase.
    pub(crate) fn phase(&self) -> Phase {
        if self.download.is_none() {
            Phase::Seeding
        } else if self.failed.is_some() {
            Phase::Failed
        } else if self.complete {
            Phase::Complete
        } else if self.finishing {
            Phase::Finishing
        } else if self.outboard.is_some() {
            Phase::Downloading
        } else if self.layout.is_some() {
            Phase::FetchingOutboard
        } else {
            Phase::Locating
        }
    }

    fn seed_rng(&self) -> u64 {
        let b = self.id.as_bytes();
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        u64::from_le_bytes(s) ^ u64::from(self.start.elapsed().subsec_nanos())
    }

    fn swarm_config(&self, layout: Layout) -> shoal_swarm::Config {
        let mut cfg = self.shared.cfg.swarm.clone();
        cfg.piece_size = layout.piece_size();
        // The node enforces its live limit (`Shared::max_peers`) before a
        // peer reaches the scheduler, so the scheduler's own cap stays out of
        // the way of a limit raised later.
        cfg.max_peers = u32::MAX;
        cfg
    }

    /// The stored outboard of this download's content, when the destination
    /// is a regular file of its length (so it may be the content already).
    fn local_outboard(&self) -> Option<Outboard> {
        let d = self.download.as_ref()?;
        let ob = self.shared.store.outboard(&self.id).ok()??;
        let meta = std::fs::symlink_metadata(&d.dest).ok()?;
        (meta.is_file() && meta.len() == ob.layout().len()).then_some(ob)
    }

    /// Adds what was sent since the last report to `Shared::uploads` and
    /// replaces this content's list of peers being served (emptied when
    /// `ended`: the task is going away).
    fn report_uploads(&mut self, ended: bool) {
        let sent: u64 = self.totals.values().map(|t| t.1).sum();
        let new = sent.saturating_sub(self.uploads_reported);
        self.uploads_reported = sent;
        let num_pieces = self.layout.map(|l| l.num_pieces()).unwrap_or(0);
        let peers: Vec<crate::transfer::ServedPeer> = if ended {
            Vec::new()
        } else {
            self.peers
                .iter()
                .filter(|(_, p)| p.uploaded > 0 || p.up_rate > 0.0)
                .map(|(k, p)| crate::transfer::ServedPeer {
                    peer: p.id,
                    remote: p.admitted.remote.clone(),
                    uploaded: p.uploaded,
                    downloaded: p.downloaded,
                    up_rate: p.up_rate,
                    down_rate: p.down_rate,
                    progress: self
                        .swarm
                        .as_ref()
                        .and_then(|s| s.peer_have_count(*k))
                        .filter(|_| num_pieces > 0)
                        .map(|h| f64::from(h) / f64::from(num_pieces)),
                })
                .collect()
        };
        let Ok(mut all) = self.shared.uploads.lock() else {
            return;
        };
        if new == 0 && peers.is_empty() && !all.contains_key(&self.id) {
            return;
        }
        let u = all.entry(self.id).or_default();
        u.uploaded += new;
        u.up_rate = peers.iter().map(|p| p.up_rate).sum();
        u.peers = peers;
    }

    fn set_outboard(&mut self, ob: Outboard) {
        self.ob_bytes = Some(Arc::new(ob.encode()));
        self.outboard = Some(Arc::new(ob));
    }

    fn alive(&self) -> Option<mpsc::Sender<()>> {
        self.download.as_ref().map(|d| d.alive.clone())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The task's main loop.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Ev>) {
        // A file this node downloaded before (its outboard is in the store)
        // and that is still at the destination needs no peer: checked against
        // the id, it is served again at once (a seeding transfer after a
        // restart, or a download run again).
        if let Some(ob) = self.local_outboard() {
            self.init_download(ob);
        }
        self.dial_more();
        loop {
            let deadline = match self.swarm.as_ref().and_then(|s| s.poll_timeout()) {
                Some(t) => (self.start + t).min(self.next_flush),
                None => self.next_flush,
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        self.on_event(ev);
                        if self.retired {
                            return;
                        }
                    }
                    None => return,
                },
                changed = self.access_rx.changed() => {
                    if changed.is_ok() {
                        self.access_rx.mark_unchanged();
                        if !self.recheck_access() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.next_flush {
                        self.next_flush = Instant::now() + FLUSH_EVERY;
                        // Invites expire with time, and another process on the
                        // same data directory may change a policy: sessions
                        // are checked every tick too.
                        if !self.recheck_access() || self.retire_if_idle(&rx) {
                            return;
                        }
                        self.expire_pending();
                        self.flush();
                        self.update_rates();
                        self.report_uploads(false);
                        self.pex_tick();
                        self.publish(true);
                    }
                    if self.swarm.as_ref().and_then(|s| s.poll_timeout())
                        .is_some_and(|t| self.start + t <= Instant::now())
                    {
                        self.feed(Event::Tick);
                    }
                }
            }
            // Asking the connector for candidates is not free: not on every event.
            if self.last_pex_check.elapsed() >= PEX_CHECK_EVERY {
                self.last_pex_check = Instant::now();
                self.pex_tick();
            }
            if self.peers.is_empty() || self.last_dial_check.elapsed() >= DIAL_CHECK_EVERY {
                self.last_dial_check = Instant::now();
                self.dial_more();
            }
            self.publish(false);
        }
    }

    /// Whether this task should end now: a seed (not a download) that has had
    /// no peer, no waiting stream, no ban and no event for `NodeConfig::seed_idle`, and
    /// whose channel nobody else holds. Then it leaves the registry under
    /// the registry's lock, so a stream that arrives later starts a new task
    /// (and one that raced it finds the channel closed and retries). Without
    /// this, a node that served a folder of many files kept one task per
    /// file, each checking the store's policy every second.
    fn retire_if_idle(&mut self, rx: &mpsc::Receiver<Ev>) -> bool {
        let busy = self.download.is_some()
            || !self.peers.is_empty()
            || !self.pending_inbound.is_empty()
            || !self.dialing.is_empty()
            || !self.banned.is_empty()
            || !rx.is_empty();
        if busy {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.shared.cfg.seed_idle {
            return false;
        }
        let Ok(mut reg) = self.shared.registry.lock() else {
            return false;
        };
        let listed = reg.get(&self.id).is_some_and(|s| s.same_channel(&self.tx));
        // Ours, and the registry's: no session, dial or I/O job can send.
        if self.tx.strong_count() > 1 + usize::from(listed) || !rx.is_empty() {
            return false;
        }
        if listed {
            reg.remove(&self.id);
        }
        tracing::debug!(id = %self.id, "idle seeding task ends");
        true
    }

    fn publish(&mut self, force: bool) {
        if !force && self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        if self.progress.receiver_count() == 0 {
            return;
        }
        self.last_progress = Instant::now();
        let (pieces_done, num_pieces, done_bytes) = match (&self.swarm, self.outboard.as_ref()) {
            (Some(s), Some(ob)) => {
                let l = ob.layout();
                let done: u64 = s.have().ones().map(|i| l.piece_len(i) as u64).sum();
                (s.have().count_ones(), l.num_pieces(), done)
            }
            _ => (0, 0, 0),
        };
        let complete = self.complete;
        let failed = self.failed.clone();
        // A download's length is shown once its outboard verified against the
        // content id: before, it is only what some peer's hello claimed.
        let total = match (&self.download, &self.outboard) {
            (Some(_), None) => None,
            _ => self.layout.map(|l| l.content_len()),
        };
        let mut peers: Vec<PeerProgress> = self
            .totals
            .iter()
            .map(|(id, (down, up))| {
                let conn = self.by_id.get(id).and_then(|k| self.peers.get(k));
                PeerProgress {
                    peer: *id,
                    connected: conn.is_some(),
                    downloaded: *down,
                    uploaded: *up,
                    down_rate: conn.map_or(0.0, |p| p.down_rate),
                    up_rate: conn.map_or(0.0, |p| p.up_rate),
                    banned: self.banned.contains(id),
                }
            })
            .collect();
        // A banned peer is listed even if nothing it sent counted.
        for id in &self.banned {
            if !self.totals.contains_key(id) {
                peers.push(PeerProgress {
                    peer: *id,
                    connected: false,
                    downloaded: 0,
                    uploaded: 0,
                    down_rate: 0.0,
                    up_rate: 0.0,
                    banned: true,
                });
            }
        }
        let connected = self.peers.len();
        let pieces_failed = self.pieces_failed;
        let (known_peers, dials, last_dial_error) =
            (self.known_peers, self.dials, self.last_dial_error.clone());
        self.progress.send_modify(|pr| {
            pr.pieces_failed = pieces_failed;
            pr.known_peers = known_peers;
            pr.dials = dials;
            pr.last_dial_error = last_dial_error;
            pr.total_bytes = total;
            pr.done_bytes = done_bytes;
            pr.pieces_done = pieces_done;
            pr.num_pieces = num_pieces;
            pr.complete = complete;
            pr.failed = failed;
            pr.connected_peers = connected;
            pr.peers = peers;
        });
    }
}
