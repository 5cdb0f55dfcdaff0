//! Random event sequences never break the scheduler's invariants.

use proptest::prelude::*;
use shoal_swarm::{Action, Bitfield, Config, Event, Msg, PeerKey, PickerMode, Swarm};
use std::time::Duration;

const N: u32 = 24;

#[derive(Clone, Debug)]
enum Op {
    Connect(u32),
    Disconnect(u32),
    Bitfield(u32, Vec<bool>),
    Have(u32, u32),
    Interested(u32, bool),
    Choke(u32, bool),
    Request(u32, u32),
    Cancel(u32, u32),
    Piece(u32, u32),
    Reject(u32, u32),
    /// Answer the oldest pending verification (good or bad).
    Verify(bool),
    /// Finish the oldest upload.
    UploadDone,
    /// Advance the clock and tick.
    Tick(u64),
    Sequential(bool),
    /// A bogus verdict for a piece not being verified.
    StrayVerdict(u32, u32, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u32..6;
    let piece = 0u32..N + 2;
    prop_oneof![
        k.clone().prop_map(Op::Connect),
        k.clone().prop_map(Op::Disconnect),
        (
            k.clone(),
            proptest::collection::vec(any::<bool>(), N as usize)
        )
            .prop_map(|(k, b)| Op::Bitfield(k, b)),
        (k.clone(), piece.clone()).prop_map(|(k, p)| Op::Have(k, p)),
        (k.clone(), any::<bool>()).prop_map(|(k, b)| Op::Interested(k, b)),
        (k.clone(), any::<bool>()).prop_map(|(k, b)| Op::Choke(k, b)),
        (k.clone(), piece.clone()).prop_map(|(k, p)| Op::Request(k, p)),
        (k.clone(), piece.clone()).prop_map(|(k, p)| Op::Cancel(k, p)),
        (k.clone(), piece.clone()).prop_map(|(k, p)| Op::Piece(k, p)),
        (k.clone(), piece.clone()).prop_map(|(k, p)| Op::Reject(k, p)),
        any::<bool>().prop_map(Op::Verify),
        Just(Op::UploadDone),
        (0u64..40_000).prop_map(Op::Tick),
        any::<bool>().prop_map(Op::Sequential),
        (piece, k, any::<bool>()).prop_map(|(p, k, b)| Op::StrayVerdict(p, k, b)),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        1u32..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                initial_seeding,
                choking,
                endgame,
                picker,
                uploads,
                serve,
                demand_interest,
                steal,
            )| Config {
                demand_interest,
                steal_when_idle: steal,
                initial_seeding,
                choking,
                endgame,
                picker: [
                    PickerMode::RarestFirst,
                    PickerMode::Random,
                    PickerMode::Sequential,
                ][picker as usize],
                max_active_uploads: uploads,
                serve_uploads: serve,
                request_timeout: Duration::from_secs(5),
                snub_timeout: Duration::from_secs(20),
                max_remote_requests: 4,
                initial_seeding_offers: 2,
                ..Config::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_event(
        cfg in config(),
        have in proptest::collection::vec(any::<bool>(), N as usize),
        full in any::<bool>(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut bf = Bitfield::new(N);
        for (i, h) in have.iter().enumerate() {
            if *h || full {
                bf.set(i as u32);
            }
        }
        let mut s = Swarm::new(cfg, N, bf, seed).expect("valid setup");
        let mut now = Duration::ZERO;
        let mut verifying: Vec<(u32, PeerKey)> = Vec::new();
        let mut uploads: Vec<(PeerKey, u32)> = Vec::new();
        for op in ops {
            let ev = match op {
                Op::Connect(k) => Event::PeerConnected { peer: PeerKey(k), outbound: k % 2 == 0 },
                Op::Disconnect(k) => Event::PeerDisconnected { peer: PeerKey(k) },
                Op::Bitfield(k, bits) => {
                    let mut b = Bitfield::new(N);
                    for (i, x) in bits.iter().enumerate() {
                        if *x {
                            b.set(i as u32);
                        }
                    }
                    Event::Message { peer: PeerKey(k), msg: Msg::Bitfield(b) }
                }
                Op::Have(k, p) => Event::Message { peer: PeerKey(k), msg: Msg::Have { piece: p } },
                Op::Interested(k, true) => Event::Message { peer: PeerKey(k), msg: Msg::Interested },
                Op::Interested(k, false) => Event::Message { peer: PeerKey(k), msg: Msg::NotInterested },
                Op::Choke(k, true) => Event::Message { peer: PeerKey(k), msg: Msg::Choke },
                Op::Choke(k, false) => Event::Message { peer: PeerKey(k), msg: Msg::Unchoke },
                Op::Request(k, p) => Event::Message { peer: PeerKey(k), msg: Msg::Request { piece: p } },
                Op::Cancel(k, p) => Event::Message { peer: PeerKey(k), msg: Msg::Cancel { piece: p } },
                Op::Piece(k, p) => Event::Message { peer: PeerKey(k), msg: Msg::Piece { piece: p } },
                Op::Reject(k, p) => Event::Message { peer: PeerKey(k), msg: Msg::Reject { piece: p } },
                Op::Verify(good) => {
                    if verifying.is_empty() {
                        continue;
                    }
                    let (piece, from) = verifying.remove(0);
                    if good {
                        Event::PieceVerified { piece, from }
                    } else {
                        Event::PieceFailed { piece, from }
                    }
                }
                Op::UploadDone => {
                    if uploads.is_empty() {
                        continue;
                    }
                    let (peer, piece) = uploads.remove(0);
                    Event::UploadDone { peer, piece }
                }
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    Event::Tick
                }
                Op::Sequential(on) => Event::SetSequential(on),
                Op::StrayVerdict(p, k, good) => {
                    if good {
                        Event::PieceVerified { piece: p, from: PeerKey(k) }
                    } else {
                        Event::PieceFailed { piece: p, from: PeerKey(k) }
                    }
                }
            };
            s.handle(ev, now);
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
            while let Some(a) = s.poll_action() {
                match a {
                    Action::VerifyAndStore { piece, from } => verifying.push((piece, from)),
                    Action::SendPiece { peer, piece } => {
                        prop_assert!(s.have().get(piece), "sending a piece we do not have");
                        uploads.push((peer, piece));
                    }
                    Action::Send { msg: Msg::Request { piece }, .. } => {
                        prop_assert!(!s.have().get(piece), "requesting a piece we have");
                    }
                    _ => {}
                }
            }
            prop_assert!(s.poll_timeout().is_some());
        }
    }
}
