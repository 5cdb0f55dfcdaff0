//! One protocol connection: a reader task that frames, decodes and checks what the
//! peer sends, and a writer task that drains a bounded queue of frames and pieces.
//!
//! The content task owns the decisions; a session only moves bytes and enforces the
//! protocol's rules with [`ConnectionState`], shared (behind a mutex) between the
//! reader (`on_recv`), the content task (`on_send` before queueing) and the writer
//! (keep-alives).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p_identity::PeerId;
use shoal_core::proto::{
    decode_frame, decode_header, decode_piece_prefix, encode, encode_piece_header, Bitfield,
    CloseCode, ConnectionState, DenyReason, FrameHeader, Message, MessageType, PiecePrefix,
    ProtoError, Received, HELLO_TIMEOUT, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, LEN_PREFIX,
    MAX_FRAME_LEN, PIECE_HEADER_MAX,
};
use shoal_net::Multiaddr;
use shoal_swarm::PeerKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};

use crate::limit::RateLimiter;

/// Bytes asked of the stream per read when the buffer has room.
pub(crate) const READ_CHUNK: usize = 256 * 1024;
/// Frames and pieces queued for one peer's writer; a peer that lets this fill up
/// (it does not read) is disconnected rather than buffered without bound.
pub(crate) const WRITE_QUEUE: usize = 4096;
/// How long a closing writer may take to deliver its `Close` before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A peer whose connection accepts no byte of what we send for this long is
/// dropped: it holds an upload slot (and queued pieces) it does not read. A
/// slow reader that takes some bytes now and then is served at its pace.
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(5);

/// The write half with a progress deadline: a write or flush that makes no
/// progress for `limit` fails with `TimedOut`.
struct Progressing<W> {
    inner: W,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<W> Progressing<W> {
    fn new(inner: W, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Pending: start (or check) the stall clock.
    fn check_stall(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer read nothing for {} s", limit.as_secs()),
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Progressing<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.check_stall(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.check_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Any byte stream a transfer can run over (TCP, TLS, a libp2p stream, a pipe).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

pub(crate) type ReadHalf = tokio::io::ReadHalf<BoxStream>;
pub(crate) type WriteHalf = tokio::io::WriteHalf<BoxStream>;

/// Reusable piece buffers, so a steady transfer does not allocate per piece,
/// and the budget of received piece bytes a node holds in memory.
///
/// A received piece is copied out of the frame buffer only once the reader
/// holds a [`PiecePermit`] for its bytes; the permit travels with the piece
/// until it is verified and written (or dropped). When the disk is slower than
/// the network the readers wait here, so TCP backpressure slows the senders
/// instead of pieces piling up in memory.
#[derive(Clone)]
pub(crate) struct BufPool {
    bufs: Arc<Mutex<Spare>>,
    budget: Arc<Semaphore>,
}

/// Free buffers kept for reuse, and their capacity in bytes.
#[derive(Default)]
struct Spare {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

/// Capacity of the free buffers kept for reuse, in bytes (16 pieces of 1 MiB, or
/// 4 of the largest).
const POOL_KEEP_BYTES: usize = 16 << 20;
/// Received piece bytes held in memory at once by a node, in KiB (16 MiB: 16
/// pieces of 1 MiB, 64 of 256 KiB, enough to keep verification and writes busy).
const PIECE_BUDGET_KIB: usize = 16 * 1024;

/// A share of the node's received-piece budget (see [`BufPool`]).
pub(crate) type PiecePermit = tokio::sync::OwnedSemaphorePermit;

impl Default for BufPool {
    fn default() -> Self {
        Self {
            bufs: Arc::default(),
            budget: Arc::new(Semaphore::new(PIECE_BUDGET_KIB)),
        }
    }
}

impl BufPool {
    /// Waits until `len` more piece bytes fit in the budget. A piece larger
    /// than the whole budget waits for all of it. `None` only if the budget
    /// was closed (never).
    pub(crate) async fn reserve(&self, len: usize) -> Option<PiecePermit> {
        let kib = len.div_ceil(1024).clamp(1, PIECE_BUDGET_KIB);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.budget.clone().acquire_many_owned(kib).await.ok()
    }

    pub(crate) fn take(&self) -> Vec<u8> {
        let Ok(mut spare) = self.bufs.lock() else {
            return Vec::new();
        };
        let buf = spare.bufs.pop().unwrap_or_default();
        spare.bytes -= buf.capacity();
        buf
    }

    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut spare) = self.bufs.lock() {
            if spare.bytes + buf.capacity() <= POOL_KEEP_BYTES {
                spare.bytes += buf.capacity();
                spare.bufs.push(buf);
            }
        }
    }
}

/// What [`FrameReader::fill_next`] found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A whole frame of this many bytes is buffered.
    Frame(usize),
    /// A `Piece` frame has begun; its data is read with
    /// [`FrameReader::read_piece_data`].
    Piece(PiecePrefix),
}

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    Proto(ProtoError),
}

/// Reads whole frames into one buffer that never holds more than one frame plus
/// what a read brought after it (at most `MAX_FRAME_LEN + 4` bytes in all).
pub(crate) struct FrameReader<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Paces reads (a download's own limit), on top of the stream's pacing.
    limit: Option<Arc<RateLimiter>>,
}

/// One read of at most `want` bytes through `read`, paced by `limit`: the
/// bytes are taken from it first, and what was not read is given back.
async fn paced<F, Fut>(limit: Option<&RateLimiter>, want: usize, read: F) -> std::io::Result<usize>
where
    F: FnOnce(usize) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<usize>>,
{
    let allowed = match limit {
        Some(l) => l.acquire(want).await.min(want),
        None => want,
    };
    let res = read(allowed).await;
    if let Some(l) = limit {
        l.give_back(allowed - res.as_ref().map_or(0, |n| (*n).min(allowed)));
    }
    res
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(r: R) -> Self {
        Self {
            r,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            limit: None,
        }
    }

    /// Paces this reader's reads with `limit` from now on.
    pub(crate) fn set_limit(&mut self, limit: Option<Arc<RateLimiter>>) {
        self.limit = limit;
    }

    /// Waits until a whole frame is buffered and returns its length (`None` on a
    /// clean end of stream between frames). The length and type are checked as
    /// soon as their bytes arrive, before any body is read.
    pub(crate) async fn fill_frame(&mut self) -> Result<Option<usize>, ReadError> {
        match self.fill(false).await? {
            Some(Next::Frame(n)) => Ok(Some(n)),
            Some(Next::Piece(_)) => unreachable!("fill(false) returns whole frames"),
            None => Ok(None),
        }
    }

    /// Like [`fill_frame`](Self::fill_frame), except that a `Piece` frame is
    /// returned as soon as its index is buffered, for
    /// [`read_piece_data`](Self::read_piece_data) to read its data into a
    /// piece buffer directly (no copy through this reader's buffer).
    pub(crate) async fn fill_next(&mut self) -> Result<Option<Next>, ReadError> {
        self.fill(true).await
    }

    async fn fill(&mut self, pieces_early: bool) -> Result<Option<Next>, ReadError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            let need = match decode_header(avail).map_err(ReadError::Proto)? {
                Some(h) if pieces_early && h.kind == MessageType::Piece => {
                    match decode_piece_prefix(avail).map_err(ReadError::Proto)? {
                        Some(p) => return Ok(Some(Next::Piece(p))),
                        // The index is at most a few bytes past the header.
                        None => avail.len() + 1,
                    }
                }
                Some(h) if avail.len() >= h.frame_len => return Ok(Some(Next::Frame(h.frame_len))),
                Some(h) => h.frame_len,
                None => FrameHeader::LEN,
            };
            if self.start + need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if need > self.buf.len() {
                    let len = (need + READ_CHUNK)
                        .min(MAX_FRAME_LEN + LEN_PREFIX)
                        .max(need);
                    self.buf.resize(len, 0);
                }
            }
            let room = self.buf.len() - self.end;
            let (r, buf, end) = (&mut self.r, &mut self.buf, self.end);
            let n = paced(self.limit.as_deref(), room, |allowed| {
                r.read(&mut buf[end..end + allowed])
            })
            .await
            .map_err(ReadError::Io)?;
            if n == 0 {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
            self.end += n;
        }
    }

    /// Reads the data of the `Piece` frame that [`fill_next`](Self::fill_next)
    /// announced into `out` (cleared first): what is already buffered is
    /// copied, the rest is read from the stream straight into `out`, paced
    /// like every other read. Consumes the whole frame.
    pub(crate) async fn read_piece_data(
        &mut self,
        p: PiecePrefix,
        out: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        out.clear();
        out.reserve_exact(p.data_len);
        self.consume(p.data_offset);
        let buffered = (self.end - self.start).min(p.data_len);
        out.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.consume(buffered);
        while out.len() < p.data_len {
            let want = p.data_len - out.len();
            let (r, o) = (&mut self.r, &mut *out);
            let n = paced(self.limit.as_deref(), want, |allowed| async move {
                r.take(allowed as u64).read_buf(o).await
            })
            .await
            .map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(())
    }

    /// The frame of `len` bytes that [`fill_frame`](Self::fill_frame) announced.
    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }

    pub(crate) fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

/// A message from the peer, checked by [`ConnectionState`] and owned.
#[derive(Debug)]
pub(crate) enum InMsg {
    /// The responder's hello (initiator side), already checked against ours.
    Hello {
        piece_size: u32,
        content_len: u64,
    },
    /// The peer's availability message.
    Availability(Availability),
    Have(u32),
    Interested,
    NotInterested,
    Choke,
    Unchoke,
    Request(u32),
    /// A request that crossed our `Choke`: answer `Reject { Choked }`.
    RequestWhileChoking(u32),
    Cancel(u32),
    /// A piece's bytes and their share of the node's piece budget.
    Piece(u32, Vec<u8>, PiecePermit),
    Reject(u32),
    OutboardRequest {
        first: u32,
        count: u32,
    },
    OutboardResponse {
        first: u32,
        cvs: Vec<u8>,
    },
    /// Peer exchange: the entries that parsed (spec §6.4; the codec bounds
    /// them to 32 + 32 peers of at most 4 addresses).
    PeerExchange {
        added: Vec<(PeerId, Vec<Multiaddr>)>,
        dropped: Vec<PeerId>,
    },
    /// Nothing for the content task (keep-alive).
    Nothing,
}

#[derive(Debug)]
pub(crate) enum Availability {
    None,
    All,
    Some(Bitfield),
}

/// What a session reports to its content task.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    Msg(InMsg),
    /// The peer sent `Deny`.
    Denied {
        reason: DenyReason,
        text: String,
    },
    /// The peer sent `Close`.
    Closed {
        code: CloseCode,
        text: String,
    },
    /// The stream ended or failed without `Close`.
    Gone(String),
    /// The peer broke the protocol (or timed out): close with the error's code.
    Violation(ProtoError),
    /// A piece was fully written to the stream; the buffer comes back for reuse.
    PieceSent {
        piece: u32,
        buf: Vec<u8>,
    },
}

/// Where a session sends its events, tagged with its peer key.
pub(crate) type EventTx<E> = mpsc::Sender<E>;

/// The reader loop. `got_hello` is true when the peer's hello was already read (the
/// responder side). Ends after forwarding a terminal event.
pub(crate) async fn run_reader<E, F>(
    mut fr: FrameReader<ReadHalf>,
    key: PeerKey,
    state: Arc<Mutex<ConnectionState>>,
    tx: EventTx<E>,
    wrap: F,
    pool: BufPool,
    mut got_hello: bool,
) where
    F: Fn(PeerKey, SessionEvent) -> E,
{
    loop {
        let limit = if got_hello {
            IDLE_TIMEOUT
        } else {
            HELLO_TIMEOUT
        };
        let ev = match tokio::time::timeout(limit, fr.fill_next()).await {
            Err(_) => SessionEvent::Violation(ProtoError::Timeout {
                secs: limit.as_secs(),
            }),
            Ok(Err(ReadError::Proto(e))) => SessionEvent::Violation(e),
            Ok(Err(ReadError::Io(e))) => SessionEvent::Gone(e.to_string()),
            Ok(Ok(None)) => SessionEvent::Gone("the stream ended".into()),
            Ok(Ok(Some(Next::Piece(p)))) => {
                match read_piece(&mut fr, p, limit, &state, &pool).await {
                    Some(ev) => ev,
                    None => continue,
                }
            }
            Ok(Ok(Some(Next::Frame(n)))) => {
                let ev = match decode_frame(fr.frame(n)) {
                    Err(e) => Some(SessionEvent::Violation(e)),
                    Ok(None) => Some(SessionEvent::Gone("incomplete frame".into())),
                    Ok(Some((msg, _))) => match check(&state, &msg) {
                        Err(ev) => Some(ev),
                        Ok(Received::Ignored) => None,
                        Ok(r) => Some(own(msg, r)),
                    },
                };
                fr.consume(n);
                match ev {
                    Some(ev) => ev,
                    None => continue,
                }
            }
        };
        if matches!(ev, SessionEvent::Msg(InMsg::Hello { .. })) {
            got_hello = true;
        }
        let last = !matches!(ev, SessionEvent::Msg(_));
        if tx.send(wrap(key, ev)).await.is_err() || last {
            return;
        }
    }
}

/// Reads a piece's data straight into a pooled buffer (within `limit`),
/// checks the message, then waits for the piece's share of the node's
/// budget, as for any other piece. `None`: nothing to report (ignored).
async fn read_piece<R: AsyncRead + Unpin>(
    fr: &mut FrameReader<R>,
    p: PiecePrefix,
    limit: Duration,
    state: &Mutex<ConnectionState>,
    pool: &BufPool,
) -> Option<SessionEvent> {
    let mut buf = pool.take();
    let read = tokio::time::timeout(limit, fr.read_piece_data(p, &mut buf)).await;
    let ev = match read {
        Err(_) => SessionEvent::Violation(ProtoError::Timeout {
            secs: limit.as_secs(),
        }),
        Ok(Err(ReadError::Proto(e))) => SessionEvent::Violation(e),
        Ok(Err(ReadError::Io(e))) => SessionEvent::Gone(e.to_string()),
        Ok(Ok(())) => {
            let msg = Message::Piece {
                piece: p.piece,
                data: &buf,
            };
            match check(state, &msg) {
                Err(ev) => ev,
                Ok(Received::Ignored) => {
                    pool.give(buf);
                    return None;
                }
                Ok(_) => {
                    return Some(match pool.reserve(buf.len()).await {
                        Some(permit) => SessionEvent::Msg(InMsg::Piece(p.piece, buf, permit)),
                        None => {
                            pool.give(buf);
                            SessionEvent::Gone("the node is shutting down".into())
                        }
                    });
                }
            }
        }
    };
    pool.give(buf);
    Some(ev)
}

/// Checks a received message against the connection's state; `Err` is what
/// ends the session (a violation, or a poisoned state).
fn check(state: &Mutex<ConnectionState>, msg: &Message<'_>) -> Result<Received, SessionEvent> {
    match state.lock() {
        Ok(mut s) => s.on_recv(msg).map_err(SessionEvent::Violation),
        Err(_) => Err(SessionEvent::Gone("the session's state is poisoned".into())),
    }
}

/// Turns a checked, borrowed message into what the content task needs.
fn own(msg: Message<'_>, r: Received) -> SessionEvent {
    let m = match msg {
        Message::Hello(h) => match (h.piece_size, h.content_len) {
            (Some(piece_size), Some(content_len)) => InMsg::Hello {
                piece_size,
                content_len,
            },
            // ConnectionState only lets a responder's hello with a layout through.
            _ => InMsg::Nothing,
        },
        Message::Deny { reason, text } => {
            return SessionEvent::Denied {
                reason,
                text: text.to_owned(),
            }
        }
        Message::Close { code, text } => {
            return SessionEvent::Closed {
                code,
                text: text.to_owned(),
            }
        }
        Message::HaveNone => InMsg::Availability(Availability::None),
        Message::HaveAll => InMsg::Availability(Availability::All),
        Message::Bitfield { num_pieces, .. } => match Bitfield::from_message(&msg, num_pieces) {
            Ok(b) => InMsg::Availability(Availability::Some(b)),
            Err(e) => return SessionEvent::Violation(e),
        },
        Message::Have { piece } => InMsg::Have(piece),
        Message::Interested => InMsg::Interested,
        Message::NotInterested => InMsg::NotInterested,
        Message::Choke => InMsg::Choke,
        Message::Unchoke => InMsg::Unchoke,
        Message::Request { piece } if r == Received::RequestWhileChoking => {
            InMsg::RequestWhileChoking(piece)
        }
        Message::Request { piece } => InMsg::Request(piece),
        Message::Cancel { piece } => InMsg::Cancel(piece),
        // `fill_next` hands every Piece frame to `read_piece`, which reads
        // its data into a pooled buffer; none comes through here.
        Message::Piece { .. } => {
            return SessionEvent::Gone("a piece frame bypassed the piece reader".into())
        }
        Message::Reject { piece, .. } => InMsg::Reject(piece),
        Message::OutboardRequest { first, count } => InMsg::OutboardRequest { first, count },
        Message::OutboardResponse { first, cvs } => InMsg::OutboardResponse {
            first,
            cvs: cvs.to_vec(),
        },
        Message::PeerExchange { added, dropped } => InMsg::PeerExchange {
            added: added.iter().filter_map(|p| p.parse()).collect(),
            dropped: dropped
                .iter()
                .filter_map(|b| PeerId::from_bytes(b).ok())
                .collect(),
        },
        // ConnectionState refuses the folder-session ones in a content session.
        Message::KeepAlive
        | Message::FileBitfield { .. }
        | Message::FileOutboardRequest { .. }
        | Message::FileOutboard { .. }
        | Message::PartRequest { .. }
        | Message::Part { .. }
        | Message::PartReject { .. }
        | Message::PartHave { .. } => InMsg::Nothing,
    };
    SessionEvent::Msg(m)
}

/// An item of a writer's queue.
pub(crate) enum Out {
    /// One encoded frame.
    Frame(Vec<u8>),
    /// A piece: the header is built here, the data written from `data` as is.
    Piece { piece: u32, data: Vec<u8> },
    /// An encoded `Close`: written, then the stream is shut down.
    Close(Vec<u8>),
}

/// A session's two outgoing queues: frames (every control message, and
/// `Close`) and piece data. The writer sends every queued frame before the
/// next piece, so a `Have`, `Choke`, `Cancel`, `Reject` or `PeerExchange`
/// waits for at most the piece being written, not for every piece queued
/// before it. Reordering a frame ahead of queued pieces keeps the protocol:
/// each message was checked when queued against a state that already counts
/// the queued pieces as sent (a queued piece is no longer an outstanding
/// request, so no `Reject` can follow it), and a receiver accepts a piece for
/// an outstanding request whatever frames came before it.
pub(crate) struct Outbox {
    frames: mpsc::Sender<Out>,
    pieces: mpsc::Sender<Out>,
}

/// The writer's side of an [`Outbox`].
pub(crate) struct OutboxRx {
    frames: mpsc::Receiver<Out>,
    pieces: mpsc::Receiver<Out>,
}

/// A new outbox holding up to `cap` frames and `cap` pieces.
pub(crate) fn outbox(cap: usize) -> (Outbox, OutboxRx) {
    let (ftx, frx) = mpsc::channel(cap);
    let (ptx, prx) = mpsc::channel(cap);
    (
        Outbox {
            frames: ftx,
            pieces: ptx,
        },
        OutboxRx {
            frames: frx,
            pieces: prx,
        },
    )
}

impl Outbox {
    /// Queues `item` (a piece behind the pieces, anything else behind the
    /// frames); an error if that queue is full or the writer has ended.
    pub(crate) fn try_send(&self, item: Out) -> Result<(), ()> {
        match item {
            Out::Piece { .. } => self.pieces.try_send(item),
            _ => self.frames.try_send(item),
        }
        .map_err(|_| ())
    }
}

impl OutboxRx {
    /// The next item, frames first; `None` once the outbox is dropped and
    /// everything queued is taken.
    async fn recv(&mut self) -> Option<Out> {
        tokio::select! {
            biased;
            Some(f) = self.frames.recv() => Some(f),
            p = self.pieces.recv() => match p {
                Some(p) => Some(p),
                None => self.frames.recv().await,
            },
        }
    }

    /// The next item already queued, frames first.
    fn try_recv(&mut self) -> Option<Out> {
        self.frames
            .try_recv()
            .or_else(|_| self.pieces.try_recv())
            .ok()
    }
}

/// Encodes `msg` as a frame (`None` if the encoder refuses it, a bug of ours).
pub(crate) fn frame_of(msg: &Message<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    encode(msg, &mut out).ok()?;
    Some(out)
}

/// The writer loop: drains the outbox, frames before pieces (small frames
/// coalesce in a 64 KiB buffer),
/// sends `KeepAlive` after `KEEPALIVE_INTERVAL` of silence once established, and
/// ends after `Close`, when the queue is dropped, or on a write error.
pub(crate) async fn run_writer<E, F>(
    w: WriteHalf,
    mut rx: OutboxRx,
    key: PeerKey,
    state: Arc<Mutex<ConnectionState>>,
    tx: EventTx<E>,
    wrap: F,
) where
    F: Fn(PeerKey, SessionEvent) -> E,
{
    let mut w = BufWriter::with_capacity(64 * 1024, Progressing::new(w, WRITE_STALL));
    let mut header = [0u8; PIECE_HEADER_MAX];
    loop {
        let mut item = match tokio::time::timeout(KEEPALIVE_INTERVAL, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => {
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return;
            }
            Err(_) => {
                let ok = state
                    .lock()
                    .map(|mut s| s.is_established() && s.on_send(&Message::KeepAlive).is_ok())
                    .unwrap_or(false);
                match frame_of(&Message::KeepAlive) {
                    Some(f) if ok => Out::Frame(f),
                    _ => continue,
                }
            }
        };
        loop {
            let res = match item {
                Out::Frame(f) => w.write_all(&f).await,
                Out::Piece { piece, data } => {
                    let res = match encode_piece_header(piece, data.len(), &mut header) {
                        Ok(h) => match w.write_all(h).await {
                            Ok(()) => w.write_all(&data).await,
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(std::io::Error::other(e)),
                    };
                    if res.is_ok() {
                        let ev = SessionEvent::PieceSent { piece, buf: data };
                        if tx.send(wrap(key, ev)).await.is_err() {
                            return;
                        }
                    }
                    res
                }
                Out::Close(f) => {
                    let _ = w.write_all(&f).await;
                    let _ = w.flush().await;
                    let _ = w.shutdown().await;
                    return;
                }
            };
            if let Err(e) = res {
                let _ = tx.send(wrap(key, SessionEvent::Gone(e.to_string()))).await;
                return;
            }
            match rx.try_recv() {
                Some(next) => item = next,
                None => break,
            }
        }
        if let Err(e) = w.flush().await {
            let _ = tx.send(wrap(key, SessionEvent::Gone(e.to_string()))).await;
            return;
        }
    }
}

/// Lets a closing writer deliver its last frames for a short while, then stops it.
pub(crate) fn reap_writer(handle: tokio::task::JoinHandle<()>) {
    let abort = handle.abort_handle();
    tokio::spawn(async move {
        if tokio::time::timeout(CLOSE_GRACE, handle).await.is_err() {
            abort.abort();
        }
    });
}

/// Writes one frame straight to a stream (handshake replies outside a session).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message<'_>,
) -> std::io::Result<()> {
    let f = frame_of(msg).ok_or_else(|| std::io::Error::other("message refused by the encoder"))?;
    w.write_all(&f).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames queued after pieces are written before them; pieces keep
    /// their order, and so do frames.
    #[tokio::test]
    async fn frames_go_ahead_of_queued_pieces() {
        let (tx, mut rx) = outbox(8);
        let piece = |piece: u32| Out::Piece {
            piece,
            data: vec![0; 16],
        };
        tx.try_send(piece(1)).unwrap();
        tx.try_send(piece(2)).unwrap();
        tx.try_send(Out::Frame(vec![7])).unwrap();
        tx.try_send(Out::Frame(vec![8])).unwrap();
        let mut order = Vec::new();
        while let Some(item) = rx.try_recv() {
            order.push(match item {
                Out::Frame(f) => format!("frame {}", f[0]),
                Out::Piece { piece, .. } => format!("piece {piece}"),
                Out::Close(_) => "close".into(),
            });
            if order.len() == 1 {
                // A frame queued while a piece is being written still goes
                // next.
                tx.try_send(Out::Close(vec![9])).unwrap();
            }
        }
        assert_eq!(order, ["frame 7", "frame 8", "close", "piece 1", "piece 2"]);
        tx.try_send(Out::Frame(vec![1])).unwrap();
        tx.try_send(piece(3)).unwrap();
        assert!(matches!(rx.recv().await, Some(Out::Frame(_))));
        assert!(matches!(rx.recv().await, Some(Out::Piece { piece: 3, .. })));
        // Dropped with items queued: they are still taken, frames first.
        tx.try_send(piece(4)).unwrap();
        tx.try_send(Out::Frame(vec![2])).unwrap();
        drop(tx);
        assert!(matches!(rx.recv().await, Some(Out::Frame(_))));
        assert!(matches!(rx.recv().await, Some(Out::Piece { piece: 4, .. })));
        assert!(rx.recv().await.is_none());
    }

    /// Spare buffers are kept up to `POOL_KEEP_BYTES` of capacity, whatever
    /// their size, and handed out again cleared.
    #[test]
    fn the_pool_keeps_spare_buffers_up_to_its_byte_limit() {
        let pool = BufPool::default();
        let piece = 4 << 20;
        for _ in 0..10 {
            let mut b = Vec::with_capacity(piece);
            b.push(1);
            pool.give(b);
        }
        let kept = POOL_KEEP_BYTES / piece;
        let mut taken = Vec::new();
        for _ in 0..10 {
            let b = pool.take();
            assert!(b.is_empty());
            taken.push(b.capacity());
        }
        assert_eq!(taken.iter().filter(|&&c| c >= piece).count(), kept);
        assert_eq!(pool.bufs.lock().unwrap().bytes, 0);
        // Small buffers are kept in greater number under the same limit.
        for _ in 0..20 {
            pool.give(Vec::with_capacity(1 << 20));
        }
        assert_eq!(pool.bufs.lock().unwrap().bufs.len(), 16);
    }

    /// A piece frame, then a `Have`, trickled through a pipe a few bytes at a
    /// time: the piece's data arrives whole and in order (part of it copied
    /// from the frame buffer, the rest read into the piece buffer directly),
    /// and the frame after it is intact.
    #[tokio::test]
    async fn piece_data_is_read_straight_into_its_buffer_and_the_next_frame_survives() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut bytes = Vec::new();
        encode(
            &Message::Piece {
                piece: 1234,
                data: &data,
            },
            &mut bytes,
        )
        .expect("encode");
        encode(&Message::Have { piece: 9 }, &mut bytes).expect("encode");
        for chunk in [3usize, 1000, 70_000] {
            let (mut w, r) = tokio::io::duplex(4096);
            let sent = bytes.clone();
            let writer = tokio::spawn(async move {
                for c in sent.chunks(chunk) {
                    w.write_all(c).await.expect("write");
                }
            });
            let mut fr = FrameReader::new(r);
            let Some(Next::Piece(p)) = fr.fill_next().await.expect("read") else {
                panic!("a piece first");
            };
            assert_eq!((p.piece, p.data_len), (1234, data.len()));
            let mut out = Vec::new();
            fr.read_piece_data(p, &mut out).await.expect("piece data");
            assert!(out == data, "chunks of {chunk}: data differs");
            let Some(Next::Frame(n)) = fr.fill_next().await.expect("read") else {
                panic!("then a whole frame");
            };
            let (msg, _) = decode_frame(fr.frame(n)).expect("decode").expect("frame");
            assert_eq!(msg, Message::Have { piece: 9 });
            fr.consume(n);
            writer.await.expect("writer");
            assert!(fr.fill_next().await.expect("clean end").is_none());
        }
    }

    /// A stream that ends inside a piece's data is an error, not a short piece.
    #[tokio::test]
    async fn a_stream_ending_inside_piece_data_is_an_error() {
        let mut bytes = Vec::new();
        encode(
            &Message::Piece {
                piece: 0,
                data: &[5u8; 10_000],
            },
            &mut bytes,
        )
        .expect("encode");
        bytes.truncate(6_000);
        let (mut w, r) = tokio::io::duplex(1 << 16);
        w.write_all(&bytes).await.expect("write");
        drop(w);
        let mut fr = FrameReader::new(r);
        let Some(Next::Piece(p)) = fr.fill_next().await.expect("read") else {
            panic!("a piece");
        };
        let mut out = Vec::new();
        assert!(matches!(
            fr.read_piece_data(p, &mut out).await,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
    }
}
