//! Test helpers: in-process nodes wired with in-memory duplex pipes.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PeerId;
use rand::{RngCore, SeedableRng};
use shoal_node::{BoxStream, Connector, Node, NodeConfig, NodeError};
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
    pub node: Arc<Node>,
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
            node: Arc::new(Node::new(store, id, cfg)),
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
/// by `Node::accept` with our peer id as the authenticated remote.
pub struct PipeConnector {
    pub me: PeerId,
    pub targets: Vec<(PeerId, Arc<Node>)>,
    pub wrap: Option<Wrap>,
}

impl PipeConnector {
    pub fn new(me: PeerId, targets: &[&TestNode]) -> Arc<Self> {
        Arc::new(Self {
            me,
            targets: targets.iter().map(|t| (t.id, t.node.clone())).collect(),
            wrap: None,
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
                let _ = node.accept(me, Box::new(far)).await;
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
}

pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
