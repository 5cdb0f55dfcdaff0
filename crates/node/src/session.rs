//! One protocol connection: a reader task that frames, decodes and checks what the
//! peer sends, and a writer task that drains a bounded queue of frames and pieces.
//!
//! The content task owns the decisions; a session only moves bytes and enforces the
//! protocol's rules with [`ConnectionState`], shared (behind a mutex) between the
//! reader (`on_recv`), the content task (`on_send` before queueing) and the writer
//! (keep-alives).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p_identity::PeerId;
use shoal_core::proto::{
    decode_frame, decode_header, encode, encode_piece_header, Bitfield, CloseCode, ConnectionState,
    DenyReason, FrameHeader, Message, ProtoError, Received, HELLO_TIMEOUT, IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL, LEN_PREFIX, MAX_FRAME_LEN, PIECE_HEADER_MAX,
};
use shoal_net::Multiaddr;
use shoal_swarm::PeerKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::limit::RateLimiter;

/// Bytes asked of the stream per read when the buffer has room.
pub(crate) const READ_CHUNK: usize = 256 * 1024;
/// Frames and pieces queued for one peer's writer; a peer that lets this fill up
/// (it does not read) is disconnected rather than buffered without bound.
pub(crate) const WRITE_QUEUE: usize = 4096;
/// How long a closing writer may take to deliver its `Close` before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Any byte stream a transfer can run over (TCP, TLS, a libp2p stream, a pipe).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

pub(crate) type ReadHalf = tokio::io::ReadHalf<BoxStream>;
pub(crate) type WriteHalf = tokio::io::WriteHalf<BoxStream>;

/// Reusable piece buffers, so a steady transfer does not allocate per piece.
#[derive(Clone, Default)]
pub(crate) struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

const POOL_KEEP: usize = 64;

impl BufPool {
    pub(crate) fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_KEEP {
                v.push(buf);
            }
        }
    }
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
        loop {
            let avail = &self.buf[self.start..self.end];
            let need = match decode_header(avail).map_err(ReadError::Proto)? {
                Some(h) if avail.len() >= h.frame_len => return Ok(Some(h.frame_len)),
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
            let allowed = match &self.limit {
                Some(l) => l.acquire(room).await.min(room),
                None => room,
            };
            let res = self
                .r
                .read(&mut self.buf[self.end..self.end + allowed])
                .await;
            if let Some(l) = &self.limit {
                l.give_back(allowed - res.as_ref().map_or(0, |n| (*n).min(allowed)));
            }
            let n = res.map_err(ReadError::Io)?;
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
    Piece(u32, Vec<u8>),
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
        let ev = match tokio::time::timeout(limit, fr.fill_frame()).await {
            Err(_) => SessionEvent::Violation(ProtoError::Timeout {
                secs: limit.as_secs(),
            }),
            Ok(Err(ReadError::Proto(e))) => SessionEvent::Violation(e),
            Ok(Err(ReadError::Io(e))) => SessionEvent::Gone(e.to_string()),
            Ok(Ok(None)) => SessionEvent::Gone("the stream ended".into()),
            Ok(Ok(Some(n))) => {
                let ev = match decode_frame(fr.frame(n)) {
                    Err(e) => Some(SessionEvent::Violation(e)),
                    Ok(None) => Some(SessionEvent::Gone("incomplete frame".into())),
                    Ok(Some((msg, _))) => {
                        let checked = match state.lock() {
                            Ok(mut s) => s.on_recv(&msg),
                            Err(_) => return,
                        };
                        match checked {
                            Err(e) => Some(SessionEvent::Violation(e)),
                            Ok(Received::Ignored) => None,
                            Ok(r) => Some(own(msg, r, &pool)),
                        }
                    }
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

/// Turns a checked, borrowed message into what the content task needs.
fn own(msg: Message<'_>, r: Received, pool: &BufPool) -> SessionEvent {
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
        Message::Piece { piece, data } => {
            let mut buf = pool.take();
            buf.extend_from_slice(data);
            InMsg::Piece(piece, buf)
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
        Message::KeepAlive => InMsg::Nothing,
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

/// Encodes `msg` as a frame (`None` if the encoder refuses it, a bug of ours).
pub(crate) fn frame_of(msg: &Message<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    encode(msg, &mut out).ok()?;
    Some(out)
}

/// The writer loop: drains the queue (small frames coalesce in a 64 KiB buffer),
/// sends `KeepAlive` after `KEEPALIVE_INTERVAL` of silence once established, and
/// ends after `Close`, when the queue is dropped, or on a write error.
pub(crate) async fn run_writer<E, F>(
    w: WriteHalf,
    mut rx: mpsc::Receiver<Out>,
    key: PeerKey,
    state: Arc<Mutex<ConnectionState>>,
    tx: EventTx<E>,
    wrap: F,
) where
    F: Fn(PeerKey, SessionEvent) -> E,
{
    let mut w = BufWriter::with_capacity(64 * 1024, w);
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
                Ok(next) => item = next,
                Err(_) => break,
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
