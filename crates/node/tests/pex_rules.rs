//! What a download does with a received `PeerExchange`: a raw seeder sends
//! hostile and valid entries to a real node over an in-memory pipe.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use libp2p_identity::PeerId;
use shoal_core::proto::{Hello, Message, PexPeer, DEFAULT_PIECE_SIZE};
use shoal_core::{ContentId, Kind};
use shoal_net::Multiaddr;
use shoal_node::{BoxStream, Connector, NodeError, PEX_NEW_PER_MESSAGE};
use tokio::time::timeout;

/// Dials the raw seeder for `seeder`, fails every other dial (counting them),
/// and offers learned peers for dialing like `NetConnector` does.
struct Recording {
    seeder: PeerId,
    pex: Arc<Vec<Vec<u8>>>,
    learned: Mutex<Vec<(PeerId, Vec<Multiaddr>)>>,
    dials: Mutex<HashMap<PeerId, u32>>,
}

impl Connector for Recording {
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        Box::pin(async move {
            if peer != self.seeder {
                *self.dials.lock().unwrap().entry(peer).or_default() += 1;
                return Err(NodeError::Io(std::io::ErrorKind::ConnectionRefused.into()));
            }
            let (near, far) = tokio::io::duplex(PIPE_BUF);
            tokio::spawn(raw_seeder(Raw::new(far), self.pex.clone()));
            Ok(Box::new(near) as BoxStream)
        })
    }

    fn peers(&self) -> Vec<PeerId> {
        let mut v = vec![self.seeder];
        v.extend(self.learned.lock().unwrap().iter().map(|(p, _)| *p));
        v
    }

    fn learned(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        self.learned.lock().unwrap().extend(peers);
    }
}

/// Two pieces of content, never served: the download stays running.
fn content() -> (ContentId, u64) {
    let len = 2 * u64::from(DEFAULT_PIECE_SIZE);
    (ContentId::of(&random_bytes(len as usize, 3)), len)
}

/// Answers the handshake with `HaveAll`, then sends every frame of `pex` at once
/// and keeps the stream open without serving anything.
async fn raw_seeder(mut raw: Raw, pex: Arc<Vec<Vec<u8>>>) {
    let Some(first) = raw.recv().await else {
        return;
    };
    let id = match first.msg() {
        Message::Hello(h) => h.content,
        _ => return,
    };
    let _availability = raw.recv().await;
    let hello = Hello {
        piece_size: Some(DEFAULT_PIECE_SIZE),
        content_len: Some(content().1),
        ..Hello::new(id)
    };
    raw.send(&Message::Hello(hello)).await;
    raw.send(&Message::HaveAll).await;
    for f in pex.iter() {
        raw.send_raw(f).await;
    }
    while raw.recv().await.is_some() {}
}

fn addr(s: &str) -> Vec<u8> {
    s.parse::<Multiaddr>().unwrap().to_vec()
}

fn frame(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    shoal_core::proto::encode(msg, &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_peer_exchange_is_filtered_capped_and_fed_to_the_connector() {
    timeout(TEST_TIMEOUT, async {
        let leecher = TestNode::new(2);
        let seeder = peer_id(1);
        let me = leecher.id;
        let others: Vec<PeerId> = (10..50).map(peer_id).collect();
        let ids: Vec<Vec<u8>> = others.iter().map(|p| p.to_bytes()).collect();
        let (me_b, seeder_b) = (me.to_bytes(), seeder.to_bytes());
        let good: Vec<Vec<u8>> = (0..40).map(|i| addr(&format!("/ip4/10.0.0.{i}/tcp/4000"))).collect();
        let shared = addr("/ip4/10.9.9.9/tcp/4000");
        let mut added = vec![
            // Ignored: the receiver itself, the sender, an unparsable peer id,
            // a peer whose only address does not parse.
            PexPeer { peer: &me_b, addrs: vec![&good[0]] },
            PexPeer { peer: &seeder_b, addrs: vec![&good[0]] },
            PexPeer { peer: b"not a peer id", addrs: vec![&good[0]] },
            PexPeer { peer: &ids[0], addrs: vec![b"\xff\xff"] },
            // One address under two names: only the first gets it.
            PexPeer { peer: &ids[1], addrs: vec![&shared] },
            PexPeer { peer: &ids[2], addrs: vec![&shared] },
        ];
        for i in 3..25 {
            added.push(PexPeer { peer: &ids[i], addrs: vec![&good[i]] });
        }
        let mut frames = vec![frame(&Message::PeerExchange { added, dropped: vec![] })];
        // Then one peer per message, all at once: a receiver acts on a burst
        // of HEARD_BURST messages (spec §9.6) and ignores the rest until its
        // bucket refills (one every 50 s).
        const HEARD_BURST: usize = 10;
        for i in 30..30 + HEARD_BURST {
            frames.push(frame(&Message::PeerExchange {
                added: vec![PexPeer { peer: &ids[i], addrs: vec![&good[i]] }],
                dropped: vec![],
            }));
        }
        let conn = Arc::new(Recording {
            seeder,
            pex: Arc::new(frames),
            learned: Mutex::new(Vec::new()),
            dials: Mutex::new(HashMap::new()),
        });
        let (id, _) = content();
        let h = leecher
            .node
            .download(id, Kind::File, &leecher.path("out"), Some("f"), conn.clone());

        // Every learned peer gets dialed.
        loop {
            let learned = conn.learned.lock().unwrap().len();
            let dialed = conn.dials.lock().unwrap().len();
            if learned >= PEX_NEW_PER_MESSAGE + HEARD_BURST - 1 && dialed >= learned {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let learned = conn.learned.lock().unwrap().clone();
        let expect: Vec<PeerId> = std::iter::once(others[1])
            .chain(others[3..].iter().copied())
            .take(PEX_NEW_PER_MESSAGE)
            .chain(others[30..30 + HEARD_BURST - 1].iter().copied())
            .collect();
        assert_eq!(
            learned.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            expect,
            "self, sender, bad entries, a reused address and the over-cap rest are dropped; the message beyond the burst is ignored"
        );
        assert_eq!(learned[0].1, vec!["/ip4/10.9.9.9/tcp/4000".parse::<Multiaddr>().unwrap()]);
        for (p, _) in &learned {
            assert!(conn.dials.lock().unwrap().contains_key(p));
        }
        let beyond = others[30 + HEARD_BURST - 1];
        assert!(!conn.dials.lock().unwrap().contains_key(&beyond));
        assert!(!learned.iter().any(|(p, _)| *p == beyond));
        drop(h);
    })
    .await
    .expect("timed out");
}
