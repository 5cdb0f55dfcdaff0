//! Test helpers: in-process nodes wired with in-memory duplex pipes.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PeerId;
use rand::{RngCore, SeedableRng};
use shoal_node::{BoxStream, Connector, NodeConfig, NodeError, TransferService};
use shoal_store::Store;

/// A deterministic peer id.
pub fn peer_id(i: u8) -> PeerId {
    let sk = libp2p_identity::ed25519::SecretKey::try_from_bytes([i.wrapping_add(1); 32])
        .expect("32 bytes is an ed25519 secret key");
    let kp = libp2p_identity::ed25519::Keypair::from(sk);
    libp2p_identity::PublicKey::from(kp.public()).to_peer_id()
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub struct TestNode {
    pub node: Arc<TransferService>,
    pub id: PeerId,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    pub fn new(i: u8) -> Self {
        Self::with_config(i, NodeConfig::default())
    }

    pub fn with_config(i: u8, cfg: NodeConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("data")).expect("store");
        let id = peer_id(i);
        Self {
            node: Arc::new(TransferService::new(store, id, cfg)),
            id,
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `data` under `rel` and shares it.
    pub fn share_bytes(&self, rel: &str, data: &[u8]) -> shoal_store::Share {
        let p = self.path(rel);
        std::fs::write(&p, data).expect("write");
        self.share(&p)
    }

    pub fn share(&self, p: &Path) -> shoal_store::Share {
        self.node.store().add(p, None, &|_| {}).expect("share")
    }
}

/// Wraps the stream a connector returns (to tamper with or count traffic).
pub type Wrap = Arc<dyn Fn(PeerId, tokio::io::DuplexStream) -> BoxStream + Send + Sync>;

/// Connects to in-process nodes through duplex pipes; the far end is served
/// by `TransferService::accept` with our peer id as the authenticated remote.
pub struct PipeConnector {
    pub me: PeerId,
    pub targets: Vec<(PeerId, Arc<TransferService>)>,
    pub wrap: Option<Wrap>,
    /// What `for_content` finds for any other content: these peers (as a
    /// DHT would name the providers of a file), or nothing if empty.
    pub elsewhere: Vec<(PeerId, Arc<TransferService>)>,
}

impl PipeConnector {
    pub fn wrapped(me: PeerId, targets: &[&TestNode], wrap: Wrap) -> Arc<Self> {
        Arc::new(Self {
            me,
            targets: targets.iter().map(|t| (t.id, t.node.clone())).collect(),
            wrap: Some(wrap),
            elsewhere: Vec::new(),
        })
    }

    /// A connector to `targets` whose lookups of other content find
    /// `elsewhere`.
    pub fn with_elsewhere(me: PeerId, targets: &[&TestNode], elsewhere: &[&TestNode]) -> Arc<Self> {
        Arc::new(Self {
            me,
            targets: targets.iter().map(|t| (t.id, t.node.clone())).collect(),
            wrap: None,
            elsewhere: elsewhere.iter().map(|t| (t.id, t.node.clone())).collect(),
        })
    }
}

impl PipeConnector {
    pub fn new(me: PeerId, targets: &[&TestNode]) -> Arc<Self> {
        Arc::new(Self {
            me,
            targets: targets.iter().map(|t| (t.id, t.node.clone())).collect(),
            wrap: None,
            elsewhere: Vec::new(),
        })
    }
}

pub const PIPE_BUF: usize = 4 << 20;

impl Connector for PipeConnector {
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        Box::pin(async move {
            let node = self
                .targets
                .iter()
                .find(|(id, _)| *id == peer)
                .map(|(_, n)| n.clone())
                .ok_or_else(|| NodeError::Internal("unknown test peer".into()))?;
            let (near, far) = tokio::io::duplex(PIPE_BUF);
            let me = self.me;
            tokio::spawn(async move {
                let _ = node.accept(me, far).await;
            });
            Ok(match &self.wrap {
                Some(w) => w(peer, near),
                None => Box::new(near) as BoxStream,
            })
        })
    }

    fn peers(&self) -> Vec<PeerId> {
        self.targets.iter().map(|(id, _)| *id).collect()
    }

    fn for_content(&self, _id: shoal_core::ContentId) -> Option<Arc<dyn Connector>> {
        if self.elsewhere.is_empty() {
            return None;
        }
        Some(Arc::new(PipeConnector {
            me: self.me,
            targets: self.elsewhere.clone(),
            wrap: None,
            elsewhere: Vec::new(),
        }))
    }
}

pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---- a stream wrapper that watches (and may damage) frames ----

use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Follows frame boundaries in one direction of a stream.
#[derive(Default)]
struct FrameTrack {
    hdr: Vec<u8>,
    ty: u8,
    left: usize,
    pos: usize,
    prefix: Vec<u8>,
}

impl FrameTrack {
    /// Feeds bytes; flips one bit in every `Piece` payload when `corrupt`; returns
    /// the frames completed (type byte, first bytes of the body).
    fn feed(&mut self, bytes: &mut [u8], corrupt: bool) -> Vec<(u8, Vec<u8>)> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if self.left == 0 {
                self.hdr.push(bytes[i]);
                i += 1;
                if self.hdr.len() == 5 {
                    let len =
                        u32::from_be_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]]);
                    self.ty = self.hdr[4];
                    self.left = (len as usize).saturating_sub(1);
                    self.pos = 0;
                    self.prefix.clear();
                    self.hdr.clear();
                    if self.left == 0 {
                        done.push((self.ty, Vec::new()));
                    }
                }
                continue;
            }
            let n = self.left.min(bytes.len() - i);
            const AT: usize = 100;
            if corrupt
                && (self.ty == 0x0c || self.ty == 0x17)
                && self.pos <= AT
                && AT < self.pos + n
            {
                bytes[i + AT - self.pos] ^= 0x01;
            }
            let want = 16usize.saturating_sub(self.prefix.len()).min(n);
            self.prefix.extend_from_slice(&bytes[i..i + want]);
            self.pos += n;
            self.left -= n;
            i += n;
            if self.left == 0 {
                done.push((self.ty, std::mem::take(&mut self.prefix)));
            }
        }
        done
    }
}

/// Frames seen on a tapped stream, by direction.
#[derive(Default)]
pub struct TapLog {
    /// Frames we wrote (type, body prefix).
    pub sent: Vec<(u8, Vec<u8>)>,
    /// Frames we read.
    pub received: Vec<(u8, Vec<u8>)>,
    /// Both, in the order this end saw them: (we sent it, type).
    pub order: Vec<(bool, u8)>,
}

impl TapLog {
    /// The piece indices of frames of type `ty` we sent (single-byte or two-byte
    /// varint indices).
    pub fn sent_pieces(&self, ty: u8) -> Vec<u32> {
        self.sent
            .iter()
            .filter(|(t, _)| *t == ty)
            .filter_map(|(_, b)| varint(b))
            .collect()
    }

    /// The body prefixes of frames of type `ty` we sent.
    pub fn sent_frames(&self, ty: u8) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|(t, _)| *t == ty)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// The (file, piece) of a folder session's `PartRequest` or `Part` body.
pub fn file_piece(b: &[u8]) -> Option<(u32, u32)> {
    let f = varint(b)?;
    let skip = b.iter().position(|x| x & 0x80 == 0)? + 1;
    Some((f, varint(b.get(skip..)?)?))
}

pub fn varint(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for (i, byte) in b.iter().take(3).enumerate() {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub struct Tap {
    inner: DuplexStream,
    rd: FrameTrack,
    wr: FrameTrack,
    corrupt: bool,
    log: Arc<Mutex<TapLog>>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tap {
    pub fn new(inner: DuplexStream, corrupt: bool, log: Arc<Mutex<TapLog>>) -> Self {
        Self {
            inner,
            rd: FrameTrack::default(),
            wr: FrameTrack::default(),
            corrupt,
            log,
            delay: None,
            sleep: None,
        }
    }

    /// Waits `d` before each read (slows the incoming direction down).
    pub fn with_read_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(d) = this.delay {
            let s = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.sleep = None;
            let frames = this.rd.feed(&mut buf.filled_mut()[before..], this.corrupt);
            if let Ok(mut l) = this.log.lock() {
                l.order.extend(frames.iter().map(|f| (false, f.0)));
                l.received.extend(frames);
            }
        }
        r
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let mut copy = buf[..n].to_vec();
            let frames = this.wr.feed(&mut copy, false);
            if let Ok(mut l) = this.log.lock() {
                l.order.extend(frames.iter().map(|f| (true, f.0)));
                l.sent.extend(frames);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---- a hand-written raw peer ----

use shoal_core::proto::{decode_frame, encode, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Minimal frame I/O for hand-written peers.
pub struct Raw {
    pub s: DuplexStream,
    buf: Vec<u8>,
}

/// An owned view of a received frame: type byte and whole frame bytes.
pub struct RawFrame {
    pub bytes: Vec<u8>,
}

impl RawFrame {
    pub fn msg(&self) -> Message<'_> {
        decode_frame(&self.bytes)
            .expect("valid frame")
            .expect("whole frame")
            .0
    }
}

impl Raw {
    pub fn new(s: DuplexStream) -> Self {
        Self { s, buf: Vec::new() }
    }

    pub async fn send(&mut self, msg: &Message<'_>) {
        let mut out = Vec::new();
        encode(msg, &mut out).expect("encodable");
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
        let _ = self.s.flush().await;
    }

    /// The next frame, `None` at the end of the stream.
    pub async fn recv(&mut self) -> Option<RawFrame> {
        loop {
            if let Ok(Some((_, n))) = decode_frame(&self.buf) {
                let bytes: Vec<u8> = self.buf.drain(..n).collect();
                return Some(RawFrame { bytes });
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a `Close`; returns its code byte (None: stream ended).
    pub async fn until_close(&mut self) -> Option<u8> {
        while let Some(f) = self.recv().await {
            if let Message::Close { code, .. } = f.msg() {
                return Some(code.to_u8());
            }
        }
        None
    }
}

/// Connects to one hand-written peer: each dial runs `serve` on a fresh pipe.
pub struct RawConnector<F> {
    pub peer: PeerId,
    pub serve: F,
}

impl<F, Fut> Connector for RawConnector<F>
where
    F: Fn(Raw) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn connect(
        &self,
        _peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        let (near, far) = tokio::io::duplex(PIPE_BUF);
        tokio::spawn((self.serve)(Raw::new(far)));
        Box::pin(async move { Ok(Box::new(near) as BoxStream) })
    }

    fn peers(&self) -> Vec<PeerId> {
        vec![self.peer]
    }
}

/// The identity key behind [`peer_id`]`(i)`.
pub fn keypair(i: u8) -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes([i.wrapping_add(1); 32])
        .expect("32 bytes is an ed25519 secret key")
}

impl TestNode {
    /// Share and access management of this node, notifying its sessions.
    pub fn control(&self, i: u8) -> shoal_node::control::AccessControl {
        shoal_node::control::AccessControl::new(
            self.node.store().clone(),
            keypair(i),
            Some(self.node.access().clone()),
        )
    }
}
