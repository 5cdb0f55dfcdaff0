//! One task per content id (a download or a seed): owns the [`Swarm`] scheduler,
//! maps peer ids to scheduler keys, runs the sessions, executes the scheduler's
//! actions against storage, and fetches the outboard before a download starts.

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
use crate::node::{
    Connector, PeerProgress, Progress, Shared, PEX_MAX_LEARNED, PEX_NEW_PER_MESSAGE,
};
use crate::session::{
    frame_of, reap_writer, run_reader, run_writer, Availability, BoxStream, FrameReader, InMsg,
    Out, PiecePermit, ReadHalf, SessionEvent, WriteHalf, WRITE_QUEUE,
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
        /// The hello's capability (empty: none), checked again on policy changes.
        capability: Vec<u8>,
        /// The stream's access-log row.
        log: Option<i64>,
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
    out: mpsc::Sender<Out>,
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
    rate_mark: (u64, u64),
    down_rate: f64,
    up_rate: f64,
    /// When we may next send this peer a `PeerExchange`.
    pex_next: Instant,
    /// Peers we told this one about (as added) and not yet as dropped.
    pex_told: HashSet<PeerId>,
    /// When this peer's last `PeerExchange` we acted on arrived.
    pex_heard: Option<Instant>,
    /// An inbound peer's capability (empty: none).
    capability: Vec<u8>,
    /// An inbound stream's access-log row (bytes served are added at its end).
    log: Option<i64>,
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

/// An inbound stream waiting for this download to learn the content's layout.
struct PendingInbound {
    since: Instant,
    peer: PeerId,
    fr: FrameReader<ReadHalf>,
    w: WriteHalf,
    piece_size: Option<u32>,
    content_len: Option<u64>,
    capability: Vec<u8>,
    log: Option<i64>,
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
/// The first `PeerExchange` to a peer goes this long after the session starts
/// (the handshake is done by then, and identify has told the address book
/// about the peers that connected just before)...
const PEX_FIRST: Duration = Duration::from_secs(1);
/// ...then at most once per this (spec §9.6), and only when there is news.
const PEX_EVERY: Duration = Duration::from_secs(60);
/// A peer's `PeerExchange` arriving sooner than this after its previous one is
/// ignored (spec §9.6 allows it; a little below 60 s for timer slack).
const PEX_MIN_GAP: Duration = Duration::from_secs(50);
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
    next_key: u32,
    events: VecDeque<Event>,
    want_peers: u32,
    /// Piece bytes received from and sent to each peer id over this task's life.
    totals: HashMap<PeerId, (u64, u64)>,
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
}

impl Drop for Content {
    fn drop(&mut self) {
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

fn text(s: &str) -> &str {
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
            next_key: 0,
            events: VecDeque::new(),
            want_peers: 0,
            totals: HashMap::new(),
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
        self.dial_more();
        loop {
            let deadline = match self.swarm.as_ref().and_then(|s| s.poll_timeout()) {
                Some(t) => (self.start + t).min(self.next_flush),
                None => self.next_flush,
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
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
                        if !self.recheck_access() {
                            return;
                        }
                        self.expire_pending();
                        self.flush();
                        self.update_rates();
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
            if self.peers.is_empty() || self.last_dial_check.elapsed() >= DIAL_CHECK_EVERY {
                self.last_dial_check = Instant::now();
                self.dial_more();
            }
            self.publish(false);
        }
    }

    // ---- peers and sessions ----

    fn our_availability(&self) -> (OurAvail, Option<SwarmBitfield>) {
        let Some(s) = self.swarm.as_ref() else {
            return (OurAvail::None, None);
        };
        let have = s.have().clone();
        let n = have.len();
        if s.initial_seeding() || have.count_ones() == 0 {
            return (OurAvail::None, Some(SwarmBitfield::new(n)));
        }
        if have.is_full() {
            return (OurAvail::All, Some(have));
        }
        match WireBitfield::new(n) {
            Ok(mut b) => {
                for i in have.ones() {
                    b.set(i);
                }
                (OurAvail::Bits(b), Some(have))
            }
            Err(_) => (OurAvail::None, Some(SwarmBitfield::new(n))),
        }
    }

    /// Checks every inbound session against the current access policy and
    /// closes (`AccessRevoked`) those no longer allowed. Returns false when this
    /// is a seeding task for content nothing here holds any more and no session
    /// is left: the task ends.
    fn recheck_access(&mut self) -> bool {
        let access = self.shared.access.clone();
        let inbound: Vec<(PeerKey, PeerId, Vec<u8>)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.outbound)
            .map(|(k, p)| (*k, p.id, p.capability.clone()))
            .collect();
        for (key, peer, cap) in inbound {
            match access.check(&self.id, &peer, &cap) {
                Ok(crate::access::Verdict::Allow(_)) => {}
                Ok(crate::access::Verdict::Deny(d)) => {
                    tracing::debug!(id = %self.id, %peer, reason = ?d.reason, "access revoked");
                    let why = format!("access revoked: {}", d.text);
                    self.drop_peer(key, Some((CloseCode::AccessRevoked, &why)), true);
                }
                Err(e) => tracing::warn!(error = %e, "cannot check access"),
            }
        }
        let pending = std::mem::take(&mut self.pending_inbound);
        for p in pending {
            match access.check(&self.id, &p.peer, &p.capability) {
                Ok(crate::access::Verdict::Deny(d)) => {
                    let mut w = p.w;
                    tokio::spawn(async move {
                        let msg = Message::Deny {
                            reason: d.reason,
                            text: text(&d.text),
                        };
                        let _ = crate::session::write_frame(&mut w, &msg).await;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    });
                }
                _ => self.pending_inbound.push(p),
            }
        }
        if self.download.is_none() && self.peers.is_empty() {
            return access.holds(&self.id).unwrap_or(true);
        }
        true
    }

    fn our_hello(&self) -> Hello<'static> {
        let mut h = Hello::new(self.id);
        if let Some(l) = self.layout.filter(|_| self.outboard.is_some()) {
            h.piece_size = Some(l.piece_size());
            h.content_len = Some(l.content_len());
        }
        h
    }

    /// Starts the reader and writer of a new session whose first frames are already
    /// accounted in `state`.
    #[allow(clippy::too_many_arguments)]
    fn spawn_session(
        &mut self,
        peer: PeerId,
        fr: FrameReader<ReadHalf>,
        w: WriteHalf,
        state: ConnectionState,
        first: Vec<Vec<u8>>,
        outbound: bool,
        layout: Option<Layout>,
        announced: Option<SwarmBitfield>,
        admitted: (Vec<u8>, Option<i64>),
    ) {
        let key = PeerKey(self.next_key);
        self.next_key = self.next_key.wrapping_add(1);
        let mut fr = fr;
        fr.set_limit(self.download.as_ref().map(|d| d.limit.clone()));
        let state = Arc::new(Mutex::new(state));
        let (otx, orx) = mpsc::channel(WRITE_QUEUE);
        for f in first {
            let _ = otx.try_send(Out::Frame(f));
        }
        let wrap = |k, e| Ev::Session(k, e);
        let reader = tokio::spawn(run_reader(
            fr,
            key,
            state.clone(),
            self.tx.clone(),
            wrap,
            self.shared.pool.clone(),
            !outbound,
        ));
        let writer = tokio::spawn(run_writer(
            w,
            orx,
            key,
            state.clone(),
            self.tx.clone(),
            wrap,
        ));
        self.by_id.insert(peer, key);
        self.peers.insert(
            key,
            PeerConn {
                id: peer,
                state,
                out: otx,
                _reader: AbortOnDrop(reader),
                writer: Some(writer),
                outbound,
                layout,
                avail: None,
                established: false,
                registered: false,
                announced,
                uploading: HashSet::new(),
                queued_pieces: 0,
                downloaded: 0,
                uploaded: 0,
                rate_mark: (0, 0),
                down_rate: 0.0,
                up_rate: 0.0,
                pex_next: Instant::now() + PEX_FIRST,
                pex_told: HashSet::new(),
                pex_heard: None,
                capability: admitted.0,
                log: admitted.1,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        peer: PeerId,
        fr: FrameReader<ReadHalf>,
        mut w: WriteHalf,
        piece_size: Option<u32>,
        content_len: Option<u64>,
        capability: Vec<u8>,
        log: Option<i64>,
    ) {
        let deny = |reason: DenyReason, why: &'static str| (reason, why);
        // Two peers that opened streams to each other keep the one opened by the
        // lower peer id (spec §3).
        if let Some(&existing) = self.by_id.get(&peer) {
            let ours = self.peers.get(&existing).is_some_and(|p| p.outbound);
            if ours && peer.to_bytes() < self.shared.local.to_bytes() {
                self.drop_peer(
                    existing,
                    Some((CloseCode::Normal, "duplicate stream")),
                    true,
                );
            }
        }
        let waiting = self.download.is_some() && self.outboard.is_none() && self.failed.is_none();
        if waiting
            && !self.banned.contains(&peer)
            && self.pending_inbound.len() < self.shared.max_peers() as usize
        {
            // A download that does not know the layout yet answers once it does
            // (the initiator waits up to HELLO_TIMEOUT for the reply).
            self.pending_inbound.push(PendingInbound {
                since: Instant::now(),
                peer,
                fr,
                w,
                piece_size,
                content_len,
                capability,
                log,
            });
            return;
        }
        let verdict = if self.banned.contains(&peer) {
            Err(deny(DenyReason::Banned, "banned for this content"))
        } else if self.by_id.contains_key(&peer) {
            Err(deny(DenyReason::Busy, "already connected for this content"))
        } else if self.peers.len() >= self.shared.max_peers() as usize {
            Err(deny(DenyReason::Busy, "too many peers for this content"))
        } else {
            match self.layout.filter(|_| self.outboard.is_some()) {
                None => Err(deny(DenyReason::NotFound, "content not available yet")),
                Some(l) if piece_size.is_some_and(|p| p != l.piece_size()) => {
                    Err(deny(DenyReason::PieceSizeMismatch, "different piece size"))
                }
                Some(l) if content_len.is_some_and(|n| n != l.content_len()) => {
                    Err(deny(DenyReason::LengthMismatch, "different content length"))
                }
                Some(l) => Ok(l),
            }
        };
        let layout = match verdict {
            Ok(l) => l,
            Err((reason, why)) => {
                tokio::spawn(async move {
                    let msg = Message::Deny { reason, text: why };
                    let _ = crate::session::write_frame(&mut w, &msg).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                });
                return;
            }
        };
        let mut state = ConnectionState::new(Role::Responder);
        let their = Hello {
            piece_size,
            content_len,
            ..Hello::new(self.id)
        };
        let ours = self.our_hello();
        let (avail, announced) = self.our_availability();
        let ok = state.on_recv(&Message::Hello(their)).is_ok()
            && state.on_send(&Message::Hello(ours.clone())).is_ok()
            && state.on_send(&avail.message()).is_ok();
        let frames = frame_of(&Message::Hello(ours)).zip(frame_of(&avail.message()));
        let Some((hello, avail)) = frames.filter(|_| ok) else {
            tracing::warn!(%peer, "could not build the handshake reply");
            return;
        };
        self.spawn_session(
            peer,
            fr,
            w,
            state,
            vec![hello, avail],
            false,
            Some(layout),
            announced,
            (capability, log),
        );
    }

    /// Denies inbound streams that waited too long, or all of them once the
    /// download failed.
    fn expire_pending(&mut self) {
        let failed = self.failed.is_some();
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_inbound)
            .into_iter()
            .partition(|p| failed || p.since.elapsed() >= PENDING_INBOUND_WAIT);
        self.pending_inbound = keep;
        for p in old {
            let mut w = p.w;
            tokio::spawn(async move {
                let msg = Message::Deny {
                    reason: DenyReason::Busy,
                    text: "content not available yet",
                };
                let _ = crate::session::write_frame(&mut w, &msg).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
            });
        }
    }

    fn on_dialed(&mut self, peer: PeerId, stream: BoxStream) {
        if self.banned.contains(&peer) || self.by_id.contains_key(&peer) {
            return;
        }
        let stream: BoxStream = Box::new(crate::limit::Throttled::new(
            stream,
            self.shared.meter.clone(),
        ));
        let (r, w) = tokio::io::split(stream);
        let mut state = ConnectionState::new(Role::Initiator);
        let cap = self.download.as_ref().and_then(|d| d.capability.clone());
        let mut hello = self.our_hello();
        if let Some(c) = cap.as_deref() {
            hello.capability = c.as_slice();
        }
        let (avail, announced) = if hello.piece_size.is_some() {
            self.our_availability()
        } else {
            (OurAvail::None, None)
        };
        let ok = state.on_send(&Message::Hello(hello.clone())).is_ok()
            && state.on_send(&avail.message()).is_ok();
        let frames = frame_of(&Message::Hello(hello)).zip(frame_of(&avail.message()));
        let Some((hf, avail)) = frames.filter(|_| ok) else {
            return;
        };
        self.spawn_session(
            peer,
            FrameReader::new(r),
            w,
            state,
            vec![hf, avail],
            true,
            None,
            announced,
            (Vec::new(), None),
        );
    }

    /// Sends `msg` to `key` if the protocol allows it now; false otherwise (or if the
    /// peer's queue is full, in which case the peer is dropped).
    fn send(&mut self, key: PeerKey, msg: &Message<'_>) -> bool {
        let Some(p) = self.peers.get(&key) else {
            return false;
        };
        let allowed = match p.state.lock() {
            Ok(mut s) => s.on_send(msg),
            Err(_) => return false,
        };
        if let Err(e) = allowed {
            tracing::debug!(?key, error = %e, "not sending {:?}", msg.message_type());
            return false;
        }
        let Some(f) = frame_of(msg) else {
            return false;
        };
        let full = p.out.try_send(Out::Frame(f)).is_err();
        if full {
            self.drop_peer(key, Some((CloseCode::Shutdown, "too slow")), true);
            return false;
        }
        true
    }

    /// Closes the session with `key`: `Close { code }` (if given) then shutdown.
    /// `tell_swarm`: the scheduler still knows the peer and must forget it.
    fn drop_peer(&mut self, key: PeerKey, close: Option<(CloseCode, &str)>, tell_swarm: bool) {
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        self.by_id.remove(&p.id);
        if self
            .pending_piece
            .as_ref()
            .is_some_and(|(k, _, _, _)| *k == key)
        {
            self.pending_piece = None;
        }
        if let Some((code, why)) = close {
            let msg = Message::Close {
                code,
                text: text(why),
            };
            let ok = p.state.lock().map(|mut s| s.on_send(&msg).is_ok());
            if let (Ok(true), Some(f)) = (ok, frame_of(&msg)) {
                let _ = p.out.try_send(Out::Close(f));
            }
        }
        if let Some(w) = p.writer.take() {
            reap_writer(w);
        }
        if let Some(log) = p.log {
            self.shared.access.served(log, p.uploaded);
        }
        if tell_swarm && p.registered {
            self.events.push_back(Event::PeerDisconnected { peer: key });
        }
        if self.ob_fetch.as_ref().is_some_and(|f| f.key == key) {
            self.ob_fetch = None;
            self.ob_tried.insert(p.id);
        }
        drop(p);
        self.drain_events();
        self.start_outboard();
    }

    fn dial_more(&mut self) {
        if self.complete || self.failed.is_some() {
            return;
        }
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let connector = d.connector.clone();
        let room = (self.shared.max_peers() as usize)
            .saturating_sub(self.peers.len() + self.dialing.len())
            .min(MAX_DIALS.saturating_sub(self.dialing.len()))
            .min((self.want_peers as usize).max(usize::from(self.peers.is_empty())));
        if room == 0 {
            return;
        }
        let known = connector.peers();
        let now = Instant::now();
        let started = self.swarm.is_some();
        let pex = &self.pex_learned;
        let usable = |p: &PeerId, dialed: &HashMap<PeerId, (u32, Instant)>| {
            *p != self.shared.local
                && !self.banned.contains(p)
                && !self.refused.contains(p)
                && dialed.get(p).is_none_or(|(n, _)| {
                    if pex.contains(p) {
                        *n < PEX_MAX_ATTEMPTS
                    } else {
                        started || *n < MAX_ATTEMPTS
                    }
                })
        };
        let candidates: Vec<PeerId> = known
            .iter()
            .filter(|p| {
                usable(p, &self.dialed)
                    && !self.by_id.contains_key(p)
                    && !self.dialing.contains(p)
                    && self
                        .dialed
                        .get(p)
                        .is_none_or(|(_, t)| now.duration_since(*t) >= REDIAL_AFTER)
            })
            .take(room)
            .copied()
            .collect();
        // Every peer known refused us access: no point waiting for one of them
        // to change its mind (even mid-download).
        let all_refused = !known.is_empty()
            && known
                .iter()
                .all(|p| self.refused.contains(p) || *p == self.shared.local);
        if self.peers.is_empty()
            && self.dialing.is_empty()
            && candidates.is_empty()
            && (all_refused && self.access_error.is_some()
                || !started && !known.iter().any(|p| usable(p, &self.dialed)))
        {
            if let Some(msg) = self.access_error.clone() {
                return self.fail(NodeError::AccessRefused {
                    id: self.id,
                    why: msg,
                });
            }
            return self.fail(NodeError::NoPeers {
                id: self.id,
                why: format!("{} known peers tried", known.len()),
            });
        }
        for peer in candidates {
            self.dialing.insert(peer);
            let e = self.dialed.entry(peer).or_insert((0, now));
            *e = (e.0 + 1, now);
            self.want_peers = self.want_peers.saturating_sub(1);
            let c = connector.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let res = c.connect(peer).await;
                let _ = tx.send(Ev::Dialed { peer, res }).await;
            });
        }
    }

    // ---- peer exchange ----

    /// Sends each established peer whose turn it is the peers of this content
    /// we connected to or lost since we last told it (spec §6.4): never itself,
    /// only peers the address book has addresses for, at most
    /// `MAX_PEX_ADDED` + `MAX_PEX_DROPPED` per message. Nothing to say costs
    /// no turn.
    fn pex_tick(&mut self) {
        let Some(book) = self.shared.book.get().cloned() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established && p.pex_next <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        let connected: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.established)
            .map(|p| p.id)
            .collect();
        for key in due {
            let Some(p) = self.peers.get(&key) else {
                continue;
            };
            let to = p.id;
            let mut added: Vec<(PeerId, Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
            for peer in &connected {
                if added.len() >= MAX_PEX_ADDED {
                    break;
                }
                if *peer == to || p.pex_told.contains(peer) {
                    continue;
                }
                let addrs: Vec<Vec<u8>> = book
                    .addrs_for(peer, &to)
                    .into_iter()
                    .map(|a| a.to_vec())
                    .filter(|a| !a.is_empty() && a.len() <= MAX_ADDR_LEN)
                    .take(MAX_PEX_ADDRS)
                    .collect();
                let id = peer.to_bytes();
                if !addrs.is_empty() && id.len() <= MAX_PEER_ID_LEN {
                    added.push((*peer, id, addrs));
                }
            }
            let dropped: Vec<PeerId> = p
                .pex_told
                .iter()
                .filter(|x| !connected.contains(x))
                .take(MAX_PEX_DROPPED)
                .copied()
                .collect();
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            let dropped_bytes: Vec<Vec<u8>> = dropped.iter().map(|d| d.to_bytes()).collect();
            let msg = Message::PeerExchange {
                added: added
                    .iter()
                    .map(|(_, id, addrs)| PexPeer {
                        peer: id,
                        addrs: addrs.iter().map(Vec::as_slice).collect(),
                    })
                    .collect(),
                dropped: dropped_bytes
                    .iter()
                    .map(Vec::as_slice)
                    .filter(|b| b.len() <= MAX_PEER_ID_LEN)
                    .collect(),
            };
            if !self.send(key, &msg) {
                continue;
            }
            tracing::debug!(
                id = %self.id,
                %to,
                added = added.len(),
                dropped = dropped.len(),
                "peer exchange sent"
            );
            if let Some(p) = self.peers.get_mut(&key) {
                p.pex_next = now + PEX_EVERY;
                for (peer, _, _) in &added {
                    p.pex_told.insert(*peer);
                }
                for d in &dropped {
                    p.pex_told.remove(d);
                }
            }
        }
    }

    /// A peer's `PeerExchange`: a running download hands the new peers with
    /// addresses to its connector (bounded per message and per content) and
    /// dials; seeds and finished downloads only take note.
    fn on_pex(
        &mut self,
        key: PeerKey,
        added: Vec<(PeerId, Vec<shoal_net::Multiaddr>)>,
        dropped: Vec<PeerId>,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.pex_heard.is_some_and(|t| t.elapsed() < PEX_MIN_GAP) {
            tracing::debug!(peer = %p.id, "peer exchange too soon after the last one: ignored");
            return;
        }
        p.pex_heard = Some(Instant::now());
        let from = p.id;
        tracing::debug!(
            id = %self.id,
            %from,
            added = added.len(),
            dropped = dropped.len(),
            "peer exchange received"
        );
        let Some(connector) = self.download.as_ref().map(|d| d.connector.clone()) else {
            return;
        };
        if self.complete || self.failed.is_some() {
            return;
        }
        let mut fresh = Vec::new();
        for (peer, addrs) in added {
            if fresh.len() >= PEX_NEW_PER_MESSAGE || self.pex_learned.len() >= PEX_MAX_LEARNED {
                break;
            }
            if peer == self.shared.local
                || peer == from
                || self.banned.contains(&peer)
                || self.by_id.contains_key(&peer)
                || self.pex_learned.contains(&peer)
            {
                continue;
            }
            let addrs: Vec<shoal_net::Multiaddr> = addrs
                .into_iter()
                .take(MAX_PEX_ADDRS)
                .filter(|a| !self.pex_addrs.contains(a))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            self.pex_addrs.extend(addrs.iter().cloned());
            self.pex_learned.insert(peer);
            fresh.push((peer, addrs));
        }
        if fresh.is_empty() {
            return;
        }
        connector.learned(fresh);
        self.dial_more();
    }

    // ---- events ----

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Inbound {
                peer,
                fr,
                w,
                piece_size,
                content_len,
                capability,
                log,
            } => self.admit(peer, fr, w, piece_size, content_len, capability, log),
            Ev::Dialed { peer, res } => {
                self.dialing.remove(&peer);
                match res {
                    Ok(s) => self.on_dialed(peer, s),
                    Err(e) => tracing::debug!(%peer, error = %e, "dial failed"),
                }
            }
            Ev::Session(key, ev) => self.on_session(key, ev),
            Ev::UploadRead { key, piece, res } => self.on_upload_read(key, piece, res),
            Ev::Verified {
                key,
                piece,
                len,
                res,
            } => self.on_verified(key, piece, len, res),
            Ev::Finished(res) => self.on_finished(res),
            Ev::Flushed(res) => {
                if let Err(e) = res {
                    self.fail(e.into());
                }
            }
        }
    }

    fn on_session(&mut self, key: PeerKey, ev: SessionEvent) {
        match ev {
            SessionEvent::Msg(m) => self.on_msg(key, m),
            SessionEvent::Denied { reason, text } => {
                tracing::debug!(?key, ?reason, text = %text.escape_debug(), "denied");
                if crate::access::is_access_denial(reason) || reason == DenyReason::NotFound {
                    let cap = self
                        .download
                        .as_ref()
                        .and_then(|d| d.capability.clone())
                        .unwrap_or_default();
                    let msg = crate::access::denial_message(reason, &cap, &text);
                    self.refuse(key, msg);
                }
                self.drop_peer(key, None, true);
            }
            SessionEvent::Closed { code, text } => {
                tracing::debug!(?key, ?code, text = %text.escape_debug(), "closed by peer");
                if code == CloseCode::AccessRevoked {
                    let msg = format!(
                        "the sharer no longer allows this download ({})",
                        text.escape_debug()
                    );
                    self.refuse(key, msg);
                }
                self.drop_peer(key, None, true);
            }
            SessionEvent::Gone(why) => {
                tracing::debug!(?key, %why, "session ended");
                self.drop_peer(key, None, true);
            }
            SessionEvent::Violation(e) => {
                tracing::debug!(?key, error = %e, "protocol violation");
                let why = e.to_string();
                self.drop_peer(key, Some((e.close_code(), &why)), true);
            }
            SessionEvent::PieceSent { piece, buf } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queued_pieces = p.queued_pieces.saturating_sub(1);
                    p.uploaded += buf.len() as u64;
                    self.totals.entry(p.id).or_default().1 += buf.len() as u64;
                    if p.uploading.remove(&piece) {
                        self.events
                            .push_back(Event::UploadDone { peer: key, piece });
                    }
                }
                self.shared.pool.give(buf);
                self.drain_events();
            }
        }
    }

    /// A peer refused us access (or no longer has the content): it is not
    /// dialed again by this download, and its refusal explains a failure if no
    /// other peer is left.
    fn refuse(&mut self, key: PeerKey, msg: String) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if !p.outbound {
            return;
        }
        self.refused.insert(p.id);
        // An access refusal explains more than "not found" from a peer that
        // simply lacks the content: keep the first unless a better one comes.
        let weak = |m: &str| m.starts_with("the sharer no longer shares");
        if self.access_error.as_deref().is_none_or(weak) {
            self.access_error = Some(msg);
        }
    }

    fn on_msg(&mut self, key: PeerKey, m: InMsg) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let registered = p.registered;
        let msg = match m {
            InMsg::Hello {
                piece_size,
                content_len,
            } => {
                let Ok(l) = Layout::new(content_len, piece_size) else {
                    return self.drop_peer(key, Some((CloseCode::BadHello, "bad layout")), true);
                };
                p.layout = Some(l);
                if self.layout.is_none() && self.download.is_some() {
                    self.layout = Some(l);
                }
                return;
            }
            InMsg::Availability(a) => {
                p.avail = Some(a);
                p.established = true;
                self.try_register(key);
                self.start_outboard();
                return;
            }
            InMsg::OutboardRequest { first, count } => {
                return self.serve_outboard(key, first, count);
            }
            InMsg::OutboardResponse { first, cvs } => return self.on_outboard(key, first, cvs),
            InMsg::RequestWhileChoking(piece) => {
                self.send(
                    key,
                    &Message::Reject {
                        piece,
                        reason: RejectReason::Choked,
                    },
                );
                return;
            }
            InMsg::Nothing => return,
            InMsg::PeerExchange { added, dropped } => {
                return self.on_pex(key, added, dropped);
            }
            InMsg::Have(piece) if !registered => {
                // Kept with the availability until the scheduler knows the peer.
                let n = p.layout.or(self.layout).map_or(0, |l| l.num_pieces());
                match p.avail.take() {
                    Some(Availability::All) => p.avail = Some(Availability::All),
                    Some(Availability::Some(mut b)) => {
                        b.set(piece);
                        p.avail = Some(Availability::Some(b));
                    }
                    _ => {
                        if let Ok(mut b) = WireBitfield::new(n) {
                            b.set(piece);
                            p.avail = Some(Availability::Some(b));
                        }
                    }
                }
                return;
            }
            _ if !registered => {
                // Only possible before the scheduler knows the peer (no outboard
                // yet): nothing was requested from it and it cannot be unchoked.
                if let InMsg::Request(piece) = m {
                    self.send(
                        key,
                        &Message::Reject {
                            piece,
                            reason: RejectReason::NotAvailable,
                        },
                    );
                }
                return;
            }
            InMsg::Have(piece) => Msg::Have { piece },
            InMsg::Interested => Msg::Interested,
            InMsg::NotInterested => Msg::NotInterested,
            InMsg::Choke => Msg::Choke,
            InMsg::Unchoke => Msg::Unchoke,
            InMsg::Request(piece) => Msg::Request { piece },
            InMsg::Cancel(piece) => {
                // The scheduler drops a cancelled queued upload silently, but the
                // protocol wants one answer per request: reject it here.
                let unanswered = p
                    .state
                    .lock()
                    .map(|s| s.peer_requests().any(|r| r == piece))
                    .unwrap_or(false);
                let queued = unanswered && !p.uploading.contains(&piece);
                self.feed(Event::Message {
                    peer: key,
                    msg: Msg::Cancel { piece },
                });
                if queued {
                    self.send(
                        key,
                        &Message::Reject {
                            piece,
                            reason: RejectReason::Cancelled,
                        },
                    );
                }
                return;
            }
            InMsg::Piece(piece, data, permit) => {
                if let Some((_, _, old, _)) = self.pending_piece.replace((key, piece, data, permit))
                {
                    self.shared.pool.give(old);
                }
                self.feed(Event::Message {
                    peer: key,
                    msg: Msg::Piece { piece },
                });
                if let Some((_, _, buf, _)) = self.pending_piece.take() {
                    // Not named by VerifyAndStore (a duplicate): discarded.
                    self.shared.pool.give(buf);
                }
                return;
            }
            InMsg::Reject(piece) => Msg::Reject { piece },
        };
        self.feed(Event::Message { peer: key, msg });
    }

    /// Hands an established peer to the scheduler, once both exist.
    fn try_register(&mut self, key: PeerKey) {
        let Some(layout) = self.layout.filter(|_| self.swarm.is_some()) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.registered || p.avail.is_none() {
            return;
        }
        if p.layout.is_some_and(|l| l != layout) {
            return self.drop_peer(
                key,
                Some((CloseCode::Normal, "another layout for this content")),
                false,
            );
        }
        p.registered = true;
        let n = layout.num_pieces();
        if p.announced.is_none() {
            p.announced = Some(SwarmBitfield::new(n));
        }
        let bf = match p.avail.take() {
            Some(Availability::All) => Some(SwarmBitfield::full(n)),
            Some(Availability::Some(b)) => {
                let mut s = SwarmBitfield::new(n);
                for i in b.iter_ones() {
                    s.set(i);
                }
                Some(s)
            }
            _ => None,
        };
        let outbound = p.outbound;
        self.events.push_back(Event::PeerConnected {
            peer: key,
            outbound,
        });
        if let Some(bf) = bf.filter(|b| b.count_ones() > 0) {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Bitfield(bf),
            });
        }
        // Choke and interest messages that came before: the connection kept them.
        let (choking, interested) = p
            .state
            .lock()
            .map(|s| (s.peer_choking(), s.peer_interested()))
            .unwrap_or((true, false));
        if !choking {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Unchoke,
            });
        }
        if interested {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Interested,
            });
        }
        self.drain_events();
    }

    // ---- outboard ----

    fn serve_outboard(&mut self, key: PeerKey, first: u32, count: u32) {
        let bytes = self.ob_bytes.clone();
        let cvs: &[u8] = match bytes.as_deref() {
            Some(b) if self.layout.is_some_and(|l| l.num_pieces() > 1) => {
                let start = first as usize * CV_LEN;
                let end = start + count as usize * CV_LEN;
                b.get(start..end).unwrap_or(&[])
            }
            _ => &[],
        };
        self.send(key, &Message::OutboardResponse { first, cvs });
    }

    /// Starts fetching the outboard from an established peer that gave a layout.
    fn start_outboard(&mut self) {
        if self.download.is_none()
            || self.outboard.is_some()
            || self.ob_fetch.is_some()
            || self.failed.is_some()
        {
            return;
        }
        let cand = self
            .peers
            .iter()
            .filter(|(_, p)| p.established && !self.ob_tried.contains(&p.id))
            .find_map(|(k, p)| p.layout.map(|l| (*k, l)));
        let Some((key, layout)) = cand else {
            if self.peers.is_empty() && self.dialing.is_empty() {
                self.dial_more();
            }
            return;
        };
        let too_big = self
            .download
            .as_ref()
            .and_then(|d| d.max_len)
            .is_some_and(|m| layout.content_len() > m);
        if too_big {
            if let Some(id) = self.peers.get(&key).map(|p| p.id) {
                self.ob_tried.insert(id);
            }
            return self.drop_peer(
                key,
                Some((CloseCode::Normal, "the content is larger than expected")),
                false,
            );
        }
        self.layout = Some(layout);
        if layout.num_pieces() <= 1 {
            let trivial = piece_layout(layout).and_then(|pl| Outboard::trivial(self.id, pl));
            match trivial {
                Some(ob) => return self.init_download(ob),
                None => {
                    let id = self.peers.get(&key).map(|p| p.id);
                    if let Some(id) = id {
                        self.ob_tried.insert(id);
                    }
                    return self.drop_peer(
                        key,
                        Some((CloseCode::BadData, "the layout does not fit the content id")),
                        false,
                    );
                }
            }
        }
        self.ob_fetch = Some(OutboardFetch {
            key,
            layout,
            leaves: vec![0; layout.num_pieces() as usize * CV_LEN],
            next: 0,
            outstanding: 0,
            received: 0,
        });
        self.request_outboard();
    }

    fn request_outboard(&mut self) {
        loop {
            let Some(f) = self.ob_fetch.as_mut() else {
                return;
            };
            let n = f.layout.num_pieces();
            if f.next >= n || f.outstanding >= MAX_OUTSTANDING_OUTBOARD_REQUESTS {
                return;
            }
            let first = f.next;
            let count = (n - first).min(MAX_OUTBOARD_CVS);
            f.next += count;
            f.outstanding += 1;
            let key = f.key;
            if !self.send(key, &Message::OutboardRequest { first, count }) {
                self.ob_fetch = None;
                return;
            }
        }
    }

    fn on_outboard(&mut self, key: PeerKey, first: u32, cvs: Vec<u8>) {
        let Some(f) = self.ob_fetch.as_mut().filter(|f| f.key == key) else {
            return;
        };
        f.outstanding = f.outstanding.saturating_sub(1);
        let start = first as usize * CV_LEN;
        let ok = !cvs.is_empty()
            && f.leaves
                .get_mut(start..start + cvs.len())
                .map(|dst| dst.copy_from_slice(&cvs))
                .is_some();
        if !ok {
            // The peer cannot give the outboard now: ask another one.
            self.ob_fetch = None;
            if let Some(p) = self.peers.get(&key) {
                self.ob_tried.insert(p.id);
            }
            return self.start_outboard();
        }
        f.received += (cvs.len() / CV_LEN) as u32;
        if f.received < f.layout.num_pieces() {
            return self.request_outboard();
        }
        let Some(f) = self.ob_fetch.take() else {
            return;
        };
        let leaves: Vec<Cv> = f
            .leaves
            .chunks_exact(CV_LEN)
            .map(|c| {
                let mut cv = [0u8; CV_LEN];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        let verified =
            piece_layout(f.layout).and_then(|pl| Outboard::from_leaves(self.id, pl, leaves).ok());
        match verified {
            Some(ob) => self.init_download(ob),
            None => {
                if let Some(p) = self.peers.get(&key) {
                    let id = p.id;
                    self.ob_tried.insert(id);
                    self.banned.insert(id);
                }
                self.layout = None;
                self.drop_peer(
                    key,
                    Some((
                        CloseCode::BadData,
                        "the outboard does not match the content id",
                    )),
                    false,
                );
            }
        }
    }

    // ---- download ----

    fn init_download(&mut self, ob: Outboard) {
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let Some(layout) = layout_of(&ob) else {
            return;
        };
        let partial = match self.shared.store.open_download(ob.clone(), &d.dest, None) {
            Ok(p) => p,
            Err(e) => return self.fail(e.into()),
        };
        self.layout = Some(layout);
        self.set_outboard(ob);
        let n = layout.num_pieces();
        let mut have = SwarmBitfield::new(n);
        for i in 0..n {
            if partial.has(i) {
                have.set(i);
            }
        }
        let complete = partial.is_complete();
        let part = partial.part().to_path_buf();
        let verifier = partial.verifier();
        let file = Arc::new(Mutex::new(Some(partial)));
        self.source = Source::Partial {
            part,
            file,
            verifier,
        };
        match Swarm::new(self.swarm_config(layout), n, have, self.seed_rng()) {
            Ok(s) => self.swarm = Some(s),
            Err(e) => return self.fail(NodeError::Internal(e.to_string())),
        }
        self.publish(true);
        if complete {
            return self.finish();
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.try_register(k);
        }
        for p in std::mem::take(&mut self.pending_inbound) {
            self.admit(
                p.peer,
                p.fr,
                p.w,
                p.piece_size,
                p.content_len,
                p.capability,
                p.log,
            );
        }
    }

    fn flush(&mut self) {
        if let Source::Partial { file, .. } = &self.source {
            if self.finishing {
                return;
            }
            let file = file.clone();
            let tx = self.tx.clone();
            let alive = self.alive();
            tokio::spawn(async move {
                let res = tokio::task::spawn_blocking(move || {
                    let _alive = alive;
                    // The sync runs outside the lock: pieces keep being written.
                    let pending = match file.lock() {
                        Ok(mut g) => g.as_mut().and_then(|p| p.start_flush()),
                        Err(_) => None,
                    };
                    pending.map_or(Ok(()), |f| f.run())
                })
                .await
                .unwrap_or(Ok(()));
                let _ = tx.send(Ev::Flushed(res)).await;
            });
        }
    }

    fn finish(&mut self) {
        if self.finishing || self.complete {
            return;
        }
        let Source::Partial { file, .. } = &self.source else {
            return;
        };
        self.finishing = true;
        let file = file.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let res = tokio::task::spawn_blocking(move || {
                let taken = file.lock().ok().and_then(|mut g| g.take());
                match taken {
                    Some(p) => p.finish(),
                    None => Err(StoreError::Corrupt {
                        what: "the partial download was already closed".into(),
                    }),
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("finishing the download failed: {e}"),
                })
            });
            let _ = tx.send(Ev::Finished(res)).await;
        });
    }

    fn on_finished(&mut self, res: Result<PathBuf, StoreError>) {
        match res {
            Ok(path) => {
                self.complete = true;
                self.source = Source::File(path.clone());
                self.publish(true);
                if let Some(done) = self.download.as_mut().and_then(|d| d.done.take()) {
                    let _ = done.send(Ok(path));
                }
            }
            Err(e) => self.fail(e.into()),
        }
    }

    fn fail(&mut self, e: NodeError) {
        if self.failed.is_some() {
            return;
        }
        tracing::debug!(id = %self.id, error = %e, "download failed");
        self.failed = Some(e.to_string());
        self.publish(true);
        if let Some(done) = self.download.as_mut().and_then(|d| d.done.take()) {
            let _ = done.send(Err(e));
        }
    }

    // ---- the scheduler ----

    fn feed(&mut self, ev: Event) {
        self.events.push_back(ev);
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.events.pop_front() {
            let now = self.now();
            let Some(s) = self.swarm.as_mut() else {
                self.events.clear();
                return;
            };
            s.handle(ev, now);
            while let Some(a) = self.swarm.as_mut().and_then(|s| s.poll_action()) {
                self.act(a);
            }
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Send { peer, msg } => self.send_msg(peer, msg),
            Action::SendPiece { peer, piece } => self.send_piece(peer, piece),
            Action::VerifyAndStore { piece, from } => self.verify(piece, from),
            Action::Ban { peer } => {
                if let Some(p) = self.peers.get(&peer) {
                    self.banned.insert(p.id);
                }
            }
            Action::Disconnect { peer, reason } => {
                let (code, why) = match reason {
                    DisconnectReason::Banned => {
                        (CloseCode::BadData, "sent pieces that failed verification")
                    }
                    DisconnectReason::ProtocolViolation => {
                        (CloseCode::ProtocolViolation, "protocol violation")
                    }
                    DisconnectReason::BothComplete => (CloseCode::Normal, "both complete"),
                    DisconnectReason::TooManyPeers => (CloseCode::Normal, "too many peers"),
                };
                self.drop_peer(peer, Some((code, why)), false);
            }
            Action::WantPeers { n } => {
                self.want_peers = self.want_peers.max(n);
            }
            Action::Complete => self.finish(),
        }
    }

    fn send_msg(&mut self, key: PeerKey, msg: Msg) {
        let m = match msg {
            Msg::KeepAlive => Message::KeepAlive,
            Msg::Bitfield(bf) => {
                // The protocol has one availability message, in the handshake; later
                // pieces are announced one by one.
                let new: Vec<u32> = match self.peers.get(&key).and_then(|p| p.announced.as_ref()) {
                    Some(a) => bf.ones().filter(|&i| !a.get(i)).collect(),
                    None => bf.ones().collect(),
                };
                for piece in new {
                    self.send_have(key, piece);
                }
                return;
            }
            Msg::Have { piece } => return self.send_have(key, piece),
            Msg::Interested => Message::Interested,
            Msg::NotInterested => Message::NotInterested,
            Msg::Choke => Message::Choke,
            Msg::Unchoke => Message::Unchoke,
            Msg::Request { piece } => {
                if !self.send(key, &Message::Request { piece }) {
                    // Keep the scheduler's view equal to the connection's.
                    self.events.push_back(Event::Message {
                        peer: key,
                        msg: Msg::Reject { piece },
                    });
                }
                return;
            }
            Msg::Cancel { piece } => Message::Cancel { piece },
            Msg::Reject { piece } => {
                let choking = self
                    .peers
                    .get(&key)
                    .and_then(|p| p.state.lock().ok().map(|s| s.am_choking()))
                    .unwrap_or(true);
                Message::Reject {
                    piece,
                    reason: if choking {
                        RejectReason::Choked
                    } else {
                        RejectReason::Overloaded
                    },
                }
            }
            Msg::Piece { .. } | Msg::PeerExchange => return,
        };
        self.send(key, &m);
    }

    fn send_have(&mut self, key: PeerKey, piece: u32) {
        if self.send(key, &Message::Have { piece }) {
            if let Some(a) = self.peers.get_mut(&key).and_then(|p| p.announced.as_mut()) {
                a.set(piece);
            }
        }
    }

    fn send_piece(&mut self, key: PeerKey, piece: u32) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(ob) = self.outboard.clone() else {
            return;
        };
        p.uploading.insert(piece);
        enum Src {
            File(PathBuf),
            Memory(Arc<Vec<u8>>),
        }
        let src = match &self.source {
            Source::File(path) => Src::File(path.clone()),
            Source::Partial { part, .. } => Src::File(part.clone()),
            Source::Memory(m) => Src::Memory(m.clone()),
            Source::None => Src::Memory(Arc::new(Vec::new())),
        };
        let mut buf = self.shared.pool.take();
        let sem = self.shared.io_limit.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let res = tokio::task::spawn_blocking(move || {
                let res = match src {
                    Src::File(path) => read_piece(&path, &ob, piece, &mut buf),
                    Src::Memory(m) => {
                        let r = ob.layout().piece_range(piece);
                        match m.get(r.start as usize..r.end as usize) {
                            Some(d) => {
                                buf.extend_from_slice(d);
                                ob.verify_piece(piece, &buf)
                                    .map_err(|source| StoreError::Verify {
                                        id: ob.root(),
                                        source,
                                    })
                            }
                            None => Err(StoreError::Corrupt {
                                what: "piece out of range of the served bytes".into(),
                            }),
                        }
                    }
                };
                res.map(|()| buf)
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("reading a piece failed: {e}"),
                })
            });
            let _ = tx.send(Ev::UploadRead { key, piece, res }).await;
        });
    }

    fn on_upload_read(&mut self, key: PeerKey, piece: u32, res: Result<Vec<u8>, StoreError>) {
        let Some(p) = self.peers.get(&key) else {
            if let Ok(buf) = res {
                self.shared.pool.give(buf);
            }
            return;
        };
        match res {
            Ok(buf) => {
                let allowed = p
                    .state
                    .lock()
                    .map(|mut s| s.on_send(&Message::Piece { piece, data: &buf }).is_ok())
                    .unwrap_or(false);
                if allowed {
                    if p.out.try_send(Out::Piece { piece, data: buf }).is_err() {
                        self.drop_peer(key, Some((CloseCode::Shutdown, "too slow")), true);
                        return;
                    }
                    // Read ahead: with few pieces queued for this peer, the
                    // scheduler may start the next upload while this one is being
                    // written, so disk reads overlap with the network. Beyond
                    // UPLOAD_READ_AHEAD, it waits for the writer.
                    let Some(p) = self.peers.get_mut(&key) else {
                        return;
                    };
                    p.queued_pieces += 1;
                    if p.queued_pieces <= UPLOAD_READ_AHEAD && p.uploading.remove(&piece) {
                        self.feed(Event::UploadDone { peer: key, piece });
                    }
                    return;
                }
                self.shared.pool.give(buf);
            }
            Err(e) => {
                tracing::warn!(id = %self.id, piece, error = %e, "cannot serve a piece");
                self.send(
                    key,
                    &Message::Reject {
                        piece,
                        reason: RejectReason::NotAvailable,
                    },
                );
            }
        }
        if let Some(p) = self.peers.get_mut(&key) {
            if p.uploading.remove(&piece) {
                self.feed(Event::UploadDone { peer: key, piece });
            }
        }
    }

    fn verify(&mut self, piece: u32, from: PeerKey) {
        let (buf, permit) = match self.pending_piece.take() {
            Some((k, p, buf, permit)) if k == from && p == piece => (buf, permit),
            other => {
                self.pending_piece = other;
                self.events.push_back(Event::PieceFailed { piece, from });
                return;
            }
        };
        let Source::Partial { file, verifier, .. } = &self.source else {
            self.shared.pool.give(buf);
            return;
        };
        let file = file.clone();
        let verifier = verifier.clone();
        let tx = self.tx.clone();
        let pool = self.shared.pool.clone();
        let sem = self.shared.io_limit.clone();
        let alive = self.alive();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let len = buf.len();
            let res = tokio::task::spawn_blocking(move || {
                let _alive = alive;
                // The piece's bytes leave the budget once written.
                let _budget = permit;
                // Hashing, the slow part, runs outside the lock, so pieces
                // verify on as many threads as `io_limit` allows; only the
                // write into the page cache is serialised, and the sync of a
                // flush runs after the lock is released.
                let res = verifier.verify(piece, &buf).and_then(|ok| {
                    let pending = match file.lock() {
                        Ok(mut g) => match g.as_mut() {
                            Some(p) => p.write_verified(ok).map(|()| {
                                if p.unflushed() >= FLUSH_PIECES {
                                    p.start_flush()
                                } else {
                                    None
                                }
                            }),
                            None => Ok(None),
                        },
                        Err(_) => Err(StoreError::Corrupt {
                            what: "the partial download is poisoned".into(),
                        }),
                    }?;
                    pending.map_or(Ok(()), |f| f.run())
                });
                pool.give(buf);
                res
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("verifying a piece failed: {e}"),
                })
            });
            let _ = tx
                .send(Ev::Verified {
                    key: from,
                    piece,
                    len,
                    res,
                })
                .await;
        });
    }

    fn on_verified(&mut self, key: PeerKey, piece: u32, len: usize, res: Result<(), StoreError>) {
        match res {
            Ok(()) => {
                self.shared
                    .meter
                    .stats
                    .pieces_verified
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.downloaded += len as u64;
                    self.totals.entry(p.id).or_default().0 += len as u64;
                }
                self.feed(Event::PieceVerified { piece, from: key });
            }
            Err(StoreError::Verify { .. }) => {
                self.shared
                    .meter
                    .stats
                    .pieces_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.feed(Event::PieceFailed { piece, from: key });
            }
            Err(e) => self.fail(e.into()),
        }
    }

    // ---- progress ----

    fn update_rates(&mut self) {
        let dt = self.last_rates.elapsed().as_secs_f64();
        self.last_rates = Instant::now();
        if dt <= 0.0 {
            return;
        }
        for p in self.peers.values_mut() {
            p.down_rate = (p.downloaded - p.rate_mark.0) as f64 / dt;
            p.up_rate = (p.uploaded - p.rate_mark.1) as f64 / dt;
            p.rate_mark = (p.downloaded, p.uploaded);
        }
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
        let total = self.layout.map(|l| l.content_len());
        let peers: Vec<PeerProgress> = self
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
                }
            })
            .collect();
        let connected = self.peers.len();
        self.progress.send_modify(|pr| {
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
