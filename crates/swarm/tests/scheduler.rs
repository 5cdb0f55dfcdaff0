//! Behaviour tests of the scheduler through its public, sans-IO API.

use shoal_swarm::picker::{PickOptions, Picker};
use shoal_swarm::{
    Action, Bitfield, Config, DisconnectReason, Event, Msg, PeerKey, PickerMode, Slot, Swarm,
};
use std::time::Duration;

const N: u32 = 64;

struct H {
    s: Swarm,
    now: Duration,
}

impl H {
    fn new(cfg: Config, n: u32, have: Bitfield, seed: u64) -> H {
        H {
            s: Swarm::new(cfg, n, have, seed).expect("valid setup"),
            now: Duration::ZERO,
        }
    }
    fn leecher(cfg: Config) -> H {
        H::new(cfg, N, Bitfield::new(N), 7)
    }
    fn at_ms(&mut self, ms: u64) {
        self.now = Duration::from_millis(ms);
    }
    fn ev(&mut self, e: Event) -> Vec<Action> {
        self.s.handle(e, self.now);
        self.s.check_invariants().expect("invariants hold");
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }
    fn connect(&mut self, k: u32) -> Vec<Action> {
        self.ev(Event::PeerConnected {
            peer: PeerKey(k),
            outbound: true,
        })
    }
    fn msg(&mut self, k: u32, msg: Msg) -> Vec<Action> {
        self.ev(Event::Message {
            peer: PeerKey(k),
            msg,
        })
    }
    fn tick(&mut self) -> Vec<Action> {
        self.ev(Event::Tick)
    }
    /// Connects a peer that has every piece and unchokes us; returns its requests.
    fn seeder_peer(&mut self, k: u32) -> Vec<u32> {
        self.connect(k);
        self.msg(k, Msg::Bitfield(Bitfield::full(N)));
        requests(&self.msg(k, Msg::Unchoke), k)
    }
}

fn requests(actions: &[Action], k: u32) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                peer,
                msg: Msg::Request { piece },
            } if peer.0 == k => Some(*piece),
            _ => None,
        })
        .collect()
}

fn sent_to(actions: &[Action], k: u32, want: &Msg) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Send { peer, msg } if peer.0 == k && msg == want))
}

fn bits(n: u32, ones: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in ones {
        b.set(i);
    }
    b
}

// ---------------- picker ----------------

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn opts(mode: PickerMode) -> PickOptions {
    PickOptions {
        mode,
        random_first: 0,
        sequential_window: None,
    }
}

#[test]
fn rarest_first_picks_the_least_available_piece() {
    let mut p = Picker::new(Bitfield::new(8));
    // availability: piece i has 8 - i copies, piece 5 has 1, piece 6 none (peer lacks it)
    for piece in 0..8 {
        for _ in 0..(8 - piece) {
            p.add_availability(piece);
        }
    }
    let peer = bits(8, &[0, 1, 2, 3, 4, 5]);
    for seed in 0..20 {
        assert_eq!(
            p.pick(
                &peer,
                &|_| false,
                opts(PickerMode::RarestFirst),
                &mut rng(seed)
            ),
            Some(5)
        );
    }
    // Excluding 5 falls back to the next rarest.
    assert_eq!(
        p.pick(
            &peer,
            &|q| q == 5,
            opts(PickerMode::RarestFirst),
            &mut rng(1)
        ),
        Some(4)
    );
}

#[test]
fn random_tie_break_is_deterministic_for_a_seed_and_varies_across_seeds() {
    let p = Picker::new(Bitfield::new(64));
    let peer = Bitfield::full(64);
    let a: Vec<_> = (0..10)
        .map(|s| {
            p.pick(
                &peer,
                &|_| false,
                opts(PickerMode::RarestFirst),
                &mut rng(s),
            )
        })
        .collect();
    let b: Vec<_> = (0..10)
        .map(|s| {
            p.pick(
                &peer,
                &|_| false,
                opts(PickerMode::RarestFirst),
                &mut rng(s),
            )
        })
        .collect();
    assert_eq!(a, b, "same seed, same pick");
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() >= 5, "ties are broken at random: {a:?}");
}

#[test]
fn started_pieces_are_picked_before_rarer_ones() {
    let mut p = Picker::new(Bitfield::new(8));
    for piece in 0..8 {
        for _ in 0..(piece + 1) {
            p.add_availability(piece);
        }
    }
    // Piece 6 was requested and lost its request (peer died): started.
    p.on_request(6);
    p.on_request_dropped(6, true);
    assert!(p.is_started(6));
    let peer = Bitfield::full(8);
    assert_eq!(
        p.pick(
            &peer,
            &|_| false,
            opts(PickerMode::RarestFirst),
            &mut rng(3)
        ),
        Some(6)
    );
    // A plain reject does not mark the piece started.
    p.on_request(6);
    p.on_request_dropped(6, false);
    assert_eq!(
        p.pick(
            &peer,
            &|_| false,
            opts(PickerMode::RarestFirst),
            &mut rng(3)
        ),
        Some(0)
    );
}

#[test]
fn sequential_window_takes_lowest_missing_piece_in_window_first() {
    let mut have = Bitfield::new(32);
    for i in 0..5 {
        have.set(i);
    }
    let mut p = Picker::new(have);
    // Piece 5 is requested elsewhere; piece 30 is the rarest.
    p.on_request(5);
    for q in 0..32 {
        if q != 30 {
            p.add_availability(q);
            p.add_availability(q);
        }
    }
    let peer = Bitfield::full(32);
    let seq = PickOptions {
        sequential_window: Some(8),
        ..opts(PickerMode::RarestFirst)
    };
    assert_eq!(p.pick(&peer, &|_| false, seq, &mut rng(1)), Some(6));
    // Outside the window nothing in order: falls back to rarest first.
    let peer_far = bits(32, &[20, 30]);
    assert_eq!(p.pick(&peer_far, &|_| false, seq, &mut rng(1)), Some(30));
    // Without the window: rarest first.
    assert_eq!(
        p.pick(
            &peer,
            &|_| false,
            opts(PickerMode::RarestFirst),
            &mut rng(1)
        ),
        Some(30)
    );
}

#[test]
fn first_pieces_are_random_not_rarest() {
    let mut p = Picker::new(Bitfield::new(16));
    for q in 1..16 {
        p.add_availability(q);
        p.add_availability(q);
    }
    let peer = Bitfield::full(16);
    let random_first = PickOptions {
        random_first: 4,
        ..opts(PickerMode::RarestFirst)
    };
    let picks: std::collections::BTreeSet<_> = (0..40)
        .filter_map(|s| p.pick(&peer, &|_| false, random_first, &mut rng(s)))
        .collect();
    assert!(
        picks.len() > 4,
        "random while fewer than 4 pieces are had: {picks:?}"
    );
    assert_eq!(
        p.pick(
            &peer,
            &|_| false,
            opts(PickerMode::RarestFirst),
            &mut rng(0)
        ),
        Some(0)
    );
}

// ---------------- pipelines ----------------

#[test]
fn pipeline_depth_follows_rate_times_rtt_within_bounds() {
    let cfg = Config {
        random_first_pieces: 0,
        ..Config::default()
    };
    let mut h = H::leecher(cfg.clone());
    let first = h.seeder_peer(1);
    assert_eq!(
        first.len() as u32,
        cfg.min_pipeline,
        "unknown rate: minimum depth"
    );
    // 64 pieces over 2 s from request to arrival (rtt sample = 100 ms):
    // rate ≈ 256 KiB × 64 / 2 s = 8 MiB/s; rate × rtt ≈ 0.8 MiB ≈ 3.2 pieces.
    let mut outstanding = first;
    let mut t = 0;
    let mut delivered = 0;
    while delivered < 40 {
        t += 100;
        h.at_ms(t);
        let piece = outstanding.remove(0);
        let a = h.msg(1, Msg::Piece { piece });
        assert!(a.contains(&Action::VerifyAndStore {
            piece,
            from: PeerKey(1)
        }));
        h.ev(Event::PieceVerified {
            piece,
            from: PeerKey(1),
        });
        outstanding.extend(requests(&a, 1));
        delivered += 1;
        if outstanding.is_empty() {
            break;
        }
    }
    let d = h.s.pipeline_depth(PeerKey(1)).unwrap();
    assert!(
        d > cfg.min_pipeline,
        "depth grows with the measured rate: {d}"
    );
    assert!(d <= cfg.max_pipeline);

    // A very fast peer is capped at max_pipeline.
    let cfg = Config {
        max_pipeline: 3,
        default_rtt: Duration::from_secs(10),
        ..Config::default()
    };
    let mut h = H::leecher(cfg);
    h.seeder_peer(1);
    for piece in 0..2 {
        h.msg(1, Msg::Piece { piece });
    }
    assert!(h.s.pipeline_depth(PeerKey(1)).unwrap() <= 3);
}

#[test]
fn timed_out_requests_move_to_another_peer() {
    let cfg = Config {
        request_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut h = H::leecher(cfg);
    let slow = h.seeder_peer(1);
    assert!(!slow.is_empty());
    // A second peer joins with nothing to do until the first times out.
    // A second peer delivers steadily.
    h.connect(2);
    h.msg(2, Msg::Bitfield(Bitfield::full(N)));
    h.msg(2, Msg::Unchoke);
    let deliver = |h: &mut H| {
        let mut asked = Vec::new();
        for piece in h.s.outstanding(PeerKey(2)) {
            asked.extend(requests(&h.msg(2, Msg::Piece { piece }), 2));
            h.ev(Event::PieceVerified {
                piece,
                from: PeerKey(2),
            });
        }
        asked
    };
    h.at_ms(4_000);
    deliver(&mut h);
    h.at_ms(6_000);
    let a = h.tick();
    for piece in &slow {
        assert!(
            sent_to(&a, 1, &Msg::Cancel { piece: *piece }),
            "slow request {piece} cancelled"
        );
        assert!(!h.s.outstanding(PeerKey(1)).contains(piece));
    }
    assert!(h.s.stats().timeouts as usize >= slow.len());
    h.at_ms(6_500);
    let mut stolen = requests(&a, 2);
    stolen.extend(deliver(&mut h));
    stolen.extend(h.s.outstanding(PeerKey(2)));
    assert!(
        slow.iter().all(|p| stolen.contains(p)),
        "timed-out pieces move to the other peer: {stolen:?} vs {slow:?}"
    );
}

/// Peer 1 holds our request for piece 5 (and has only it) for 3 s; peer 2
/// then unchokes us with only piece 5. Returns the actions of that unchoke.
fn idle_peer_offers_a_piece_queued_elsewhere(h: &mut H) -> Vec<Action> {
    h.connect(1);
    h.msg(1, Msg::Bitfield(bits(N, &[5])));
    assert_eq!(requests(&h.msg(1, Msg::Unchoke), 1), vec![5]);
    h.at_ms(3_000);
    h.connect(2);
    h.msg(2, Msg::Bitfield(bits(N, &[5])));
    h.msg(2, Msg::Unchoke)
}

fn moving() -> Config {
    Config {
        steal_when_idle: true,
        random_first_pieces: 0,
        ..Config::default()
    }
}

#[test]
fn idle_peer_takes_over_a_late_request_only_after_the_old_holder_rejects_the_cancel() {
    let mut h = H::leecher(moving());
    let a = idle_peer_offers_a_piece_queued_elsewhere(&mut h);
    assert!(sent_to(&a, 1, &Msg::Cancel { piece: 5 }), "{a:?}");
    assert!(requests(&a, 2).is_empty(), "not asked twice: {a:?}");
    // Still outstanding at peer 1 until it answers.
    assert_eq!(h.s.outstanding(PeerKey(1)), vec![5]);
    assert_eq!(h.s.stats().steals, 1);
    h.at_ms(3_040);
    let a = h.msg(1, Msg::Reject { piece: 5 });
    assert_eq!(requests(&a, 2), vec![5], "moved once rejected: {a:?}");
    assert!(h.s.outstanding(PeerKey(1)).is_empty());
    // Peer 1 may be asked for it again later (the Reject answered a cancel).
    h.at_ms(3_200);
    let a = h.msg(2, Msg::Piece { piece: 5 });
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::VerifyAndStore { piece: 5, .. })));
    assert_eq!(h.s.stats().wasted, 0);
}

#[test]
fn a_cancel_answered_by_the_piece_leaves_the_request_where_it_was() {
    let mut h = H::leecher(moving());
    let a = idle_peer_offers_a_piece_queued_elsewhere(&mut h);
    assert!(sent_to(&a, 1, &Msg::Cancel { piece: 5 }));
    // Peer 1 had started sending: the piece is the answer.
    h.at_ms(3_040);
    let a = h.msg(1, Msg::Piece { piece: 5 });
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::VerifyAndStore { piece: 5, .. })));
    assert!(requests(&a, 2).is_empty(), "no second copy asked: {a:?}");
    h.ev(Event::PieceVerified {
        piece: 5,
        from: PeerKey(1),
    });
    // A late Reject for it (crossing) changes nothing.
    let a = h.msg(1, Msg::Reject { piece: 5 });
    assert!(requests(&a, 2).is_empty());
    assert_eq!(h.s.stats().wasted, 0);
    assert!(h.s.have().get(5));
}

#[test]
fn a_cancel_never_answered_frees_the_piece_after_a_second() {
    let mut h = H::leecher(moving());
    let a = idle_peer_offers_a_piece_queued_elsewhere(&mut h);
    assert!(sent_to(&a, 1, &Msg::Cancel { piece: 5 }));
    h.at_ms(3_500);
    h.tick();
    assert_eq!(h.s.outstanding(PeerKey(1)), vec![5], "still waiting");
    h.at_ms(4_100);
    let a = h.tick();
    // The piece is free again and asked anew, of one peer only.
    let asked = [requests(&a, 1), requests(&a, 2)].concat();
    assert_eq!(asked, vec![5], "asked again of one peer: {a:?}");
    assert_eq!(h.s.picker().requesters(5), 1);
}

#[test]
fn upload_queued_tells_a_driver_whether_a_cancel_can_still_be_rejected() {
    let mut h = H::new(no_initial_seeding(), N, Bitfield::full(N), 3);
    h.connect(1);
    h.msg(1, Msg::Interested);
    h.tick();
    assert_eq!(h.s.slot(PeerKey(1)), Some(Slot::Regular));
    let a = h.msg(1, Msg::Request { piece: 1 });
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::SendPiece { piece: 1, .. })));
    h.msg(1, Msg::Request { piece: 2 });
    // Piece 1 is being sent, piece 2 waits.
    assert!(!h.s.upload_queued(PeerKey(1), 1));
    assert!(h.s.upload_queued(PeerKey(1), 2));
    h.msg(1, Msg::Cancel { piece: 2 });
    assert!(!h.s.upload_queued(PeerKey(1), 2));
}

// ---------------- endgame ----------------

#[test]
fn endgame_duplicates_the_last_request_and_cancels_the_loser() {
    let n = 4;
    let cfg = Config {
        random_first_pieces: 0,
        ..Config::default()
    };
    let mut h = H::new(cfg, n, Bitfield::new(n), 3);
    h.connect(1);
    h.msg(1, Msg::Bitfield(Bitfield::full(n)));
    let mut out1 = requests(&h.msg(1, Msg::Unchoke), 1);
    // Peer 1 delivers quickly and takes the remaining pieces.
    let mut t = 0;
    while h.s.picker().missing_count() > 0 {
        t += 50;
        h.at_ms(t);
        let piece = out1.remove(0);
        let a = h.msg(1, Msg::Piece { piece });
        h.ev(Event::PieceVerified {
            piece,
            from: PeerKey(1),
        });
        out1.extend(requests(&a, 1));
    }
    assert!(!out1.is_empty());
    // Peer 1 stalls; a second peer appears: every missing piece is requested,
    // so it gets duplicates of peer 1's outstanding requests.
    h.at_ms(t + 5_000);
    h.connect(2);
    h.msg(2, Msg::Bitfield(Bitfield::full(n)));
    let dups = requests(&h.msg(2, Msg::Unchoke), 2);
    assert!(!dups.is_empty(), "endgame duplicates");
    assert!(dups.iter().all(|p| out1.contains(p)));
    assert!(h.s.stats().endgame_requests >= 1);
    // The duplicate wins: the loser is cancelled.
    let piece = dups[0];
    let a = h.msg(2, Msg::Piece { piece });
    assert!(
        sent_to(&a, 1, &Msg::Cancel { piece }),
        "loser cancelled: {a:?}"
    );
    assert!(!h.s.outstanding(PeerKey(1)).contains(&piece));
}

// ---------------- bad data ----------------

#[test]
fn corrupt_pieces_ban_the_sender_after_two_and_are_refetched_from_others() {
    let cfg = Config {
        random_first_pieces: 0,
        min_pipeline: 2,
        ..Config::default()
    };
    let mut h = H::leecher(cfg);
    let liar = h.seeder_peer(1);
    h.connect(2);
    h.msg(2, Msg::Bitfield(Bitfield::full(N)));
    h.msg(2, Msg::Unchoke);
    let (a, b) = (liar[0], liar[1]);
    h.msg(1, Msg::Piece { piece: a });
    let first = h.ev(Event::PieceFailed {
        piece: a,
        from: PeerKey(1),
    });
    assert!(
        !first.iter().any(|x| matches!(x, Action::Ban { .. })),
        "one failure is not enough"
    );
    assert!(h.s.picker().is_started(a) || !h.s.outstanding(PeerKey(2)).is_empty());
    assert!(
        !h.s.outstanding(PeerKey(1)).contains(&a),
        "never asked of the liar again"
    );
    h.msg(1, Msg::Piece { piece: b });
    let second = h.ev(Event::PieceFailed {
        piece: b,
        from: PeerKey(1),
    });
    assert!(second.contains(&Action::Ban { peer: PeerKey(1) }));
    assert!(second.contains(&Action::Disconnect {
        peer: PeerKey(1),
        reason: DisconnectReason::Banned
    }));
    assert!(h.s.is_banned(PeerKey(1)));
    // As the honest peer delivers, the failed pieces (started) come first.
    let mut asked = Vec::new();
    for _ in 0..3 {
        for piece in h.s.outstanding(PeerKey(2)) {
            let r = h.msg(2, Msg::Piece { piece });
            asked.extend(requests(&r, 2));
            h.ev(Event::PieceVerified {
                piece,
                from: PeerKey(2),
            });
        }
    }
    // At most 4 pieces were in the liar's hands (2 failed, 2 in flight); they
    // are requested before any other piece.
    asked.truncate(4);
    assert!(
        asked.contains(&a) && asked.contains(&b),
        "both refetched from the honest peer: {asked:?}"
    );
    // The banned peer cannot come back.
    let again = h.connect(1);
    assert!(again.contains(&Action::Disconnect {
        peer: PeerKey(1),
        reason: DisconnectReason::Banned
    }));
}

// ---------------- choker ----------------

fn seeder_with_interested(peers: u32, cfg: Config) -> H {
    let mut h = H::new(cfg, N, Bitfield::full(N), 11);
    for k in 1..=peers {
        h.connect(k);
        h.msg(k, Msg::Interested);
    }
    h
}

fn slots(h: &H, peers: u32) -> (u32, u32) {
    let mut regular = 0;
    let mut optimistic = 0;
    for k in 1..=peers {
        match h.s.slot(PeerKey(k)) {
            Some(Slot::Regular) => regular += 1,
            Some(Slot::Optimistic) => optimistic += 1,
            _ => {}
        }
    }
    (regular, optimistic)
}

fn no_initial_seeding() -> Config {
    Config {
        initial_seeding: false,
        ..Config::default()
    }
}

#[test]
fn choker_uses_four_regular_slots_and_one_optimistic() {
    let mut h = seeder_with_interested(10, no_initial_seeding());
    h.tick();
    assert_eq!(slots(&h, 10), (4, 1));
    // A leecher too: ten interested peers, 4 + 1 unchoked.
    let mut h = H::leecher(Config::default());
    for k in 1..=10 {
        h.connect(k);
        h.msg(k, Msg::Bitfield(bits(N, &[k])));
    }
    h.ev(Event::PieceVerified {
        piece: 0,
        from: PeerKey(1),
    });
    for k in 1..=10 {
        h.msg(k, Msg::Interested);
    }
    h.tick();
    assert_eq!(slots(&h, 10), (4, 1));
}

#[test]
fn regular_slots_are_rechosen_every_ten_seconds_by_rate_to_us() {
    let mut h = H::leecher(Config {
        random_first_pieces: 0,
        min_pipeline: 2,
        idle_slot_timeout: Duration::from_secs(1_000),
        ..Config::default()
    });
    h.tick(); // first rechoke at t=0; next at 10 s
              // Peers 1..=6 all have everything and are interested in our piece 0.
    for k in 1..=6 {
        h.connect(k);
        h.msg(k, Msg::Bitfield(Bitfield::full(N)));
    }
    // Get piece 0 from peer 6 so the others become interested in us... they
    // have everything, so instead make them interested explicitly.
    for k in 1..=6 {
        h.msg(k, Msg::Interested);
    }
    let before: Vec<Slot> = (1..=6).map(|k| h.s.slot(PeerKey(k)).unwrap()).collect();
    // Peer 6 (and 5) upload to us a lot, all unchoke us. At 3 s, so the
    // pieces are still inside the 8 s rate window at the 10 s rechoke.
    let mut t = 3_000;
    for k in [5u32, 6] {
        let reqs = requests(&h.msg(k, Msg::Unchoke), k);
        for piece in reqs {
            t += 10;
            h.at_ms(t);
            h.msg(k, Msg::Piece { piece });
            h.ev(Event::PieceVerified {
                piece,
                from: PeerKey(k),
            });
        }
    }
    for k in 1..=4 {
        h.msg(k, Msg::Unchoke);
    }
    h.at_ms(5_000);
    h.tick();
    let mid: Vec<Slot> = (1..=6).map(|k| h.s.slot(PeerKey(k)).unwrap()).collect();
    assert_eq!(before, mid, "no rechoke before 10 s");
    h.at_ms(10_000);
    h.tick();
    assert_eq!(h.s.slot(PeerKey(5)), Some(Slot::Regular));
    assert_eq!(h.s.slot(PeerKey(6)), Some(Slot::Regular));
}

#[test]
fn optimistic_unchoke_rotates_every_thirty_seconds() {
    // Long seeding slots, so only the optimistic timer moves slots.
    let cfg = Config {
        seed_slot_time: Duration::from_secs(1_000),
        idle_slot_timeout: Duration::from_secs(1_000),
        ..no_initial_seeding()
    };
    let mut h = seeder_with_interested(12, cfg);
    h.tick();
    let opt = |h: &H| (1..=12).find(|k| h.s.slot(PeerKey(*k)) == Some(Slot::Optimistic));
    let first = opt(&h).expect("an optimistic unchoke");
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(first);
    for step in 1..=2 {
        h.at_ms(10_000 * step);
        h.tick();
        assert_eq!(opt(&h), Some(first), "kept until 30 s");
    }
    for round in 1..=6u64 {
        h.at_ms(30_000 * round);
        h.tick();
        seen.insert(opt(&h).expect("an optimistic unchoke"));
    }
    assert!(seen.len() >= 3, "the optimistic slot rotates: {seen:?}");
}

#[test]
fn new_peers_are_favoured_for_the_optimistic_slot() {
    let mut new_wins = 0;
    let trials = 60;
    for seed in 0..trials {
        let mut h = H::new(no_initial_seeding(), N, Bitfield::full(N), seed);
        // 5 old peers take the regular slots plus 5 more old candidates.
        for k in 1..=10 {
            h.connect(k);
            h.msg(k, Msg::Interested);
        }
        h.at_ms(120_000);
        // 5 new peers.
        for k in 11..=15 {
            h.connect(k);
            h.msg(k, Msg::Interested);
        }
        h.tick();
        let opt = (1..=15).find(|k| h.s.slot(PeerKey(*k)) == Some(Slot::Optimistic));
        if opt.is_some_and(|k| k > 10) {
            new_wins += 1;
        }
    }
    // Candidates: ~5-6 old and 5 new; weight 3 gives new peers ~3/4 of draws
    // versus ~1/2 without the bias.
    assert!(
        new_wins > trials * 6 / 10,
        "new peers won {new_wins}/{trials}"
    );
}

#[test]
fn idle_slot_holders_yield_to_waiting_peers_when_our_upload_is_idle() {
    let mut h = seeder_with_interested(8, no_initial_seeding());
    h.tick();
    assert_eq!(slots(&h, 8), (4, 1));
    let holders: Vec<u32> = (1..=8)
        .filter(|k| h.s.slot(PeerKey(*k)) != Some(Slot::None))
        .collect();
    // Nobody requests anything for 2 s while 3 interested peers wait.
    h.at_ms(2_000);
    h.tick();
    let now_holding: Vec<u32> = (1..=8)
        .filter(|k| h.s.slot(PeerKey(*k)) != Some(Slot::None))
        .collect();
    assert_ne!(holders, now_holding, "idle holders yielded their slots");
    let (regular, optimistic) = slots(&h, 8);
    assert!(regular <= 4 && optimistic <= 1, "still 4 + 1 slots");
    // A holder that keeps requesting keeps its slot.
    let mut h = seeder_with_interested(8, no_initial_seeding());
    h.tick();
    let busy = (1..=8)
        .find(|k| h.s.slot(PeerKey(*k)) == Some(Slot::Regular))
        .unwrap();
    let mut t = 0;
    for piece in 0..20 {
        t += 100;
        h.at_ms(t);
        h.msg(busy, Msg::Request { piece });
        h.ev(Event::UploadDone {
            peer: PeerKey(busy),
            piece,
        });
        h.tick();
    }
    assert_eq!(h.s.slot(PeerKey(busy)), Some(Slot::Regular));
}

#[test]
fn snubbing_peer_loses_its_regular_slot() {
    let cfg = Config {
        snub_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(600),
        random_first_pieces: 0,
        ..Config::default()
    };
    let mut h = H::leecher(cfg);
    for k in 1..=3 {
        h.connect(k);
        h.msg(k, Msg::Bitfield(Bitfield::full(N)));
        h.msg(k, Msg::Interested);
        h.msg(k, Msg::Unchoke);
    }
    h.tick();
    assert_eq!(h.s.slot(PeerKey(1)), Some(Slot::Regular));
    // Peer 2 delivers a piece every 2 s; peers 1 and 3 never do.
    for t in 1..=70u64 {
        h.at_ms(t * 1_000);
        for k in 2..=(t % 2) as u32 + 1 {
            if let Some(&piece) = h.s.outstanding(PeerKey(k)).first() {
                h.msg(k, Msg::Piece { piece });
                h.ev(Event::PieceVerified {
                    piece,
                    from: PeerKey(k),
                });
            }
        }
        h.tick();
    }
    assert!(h.s.is_snubbed(PeerKey(1)));
    assert_eq!(h.s.pipeline_depth(PeerKey(1)), Some(1));
    assert_ne!(
        h.s.slot(PeerKey(1)),
        Some(Slot::Regular),
        "snubbed peer lost its regular slot"
    );
}

// ---------------- uploads and bounds ----------------

#[test]
fn requests_beyond_the_cap_and_from_choked_peers_are_rejected() {
    let cfg = Config {
        max_remote_requests: 3,
        initial_seeding: false,
        ..Config::default()
    };
    let mut h = H::new(cfg, N, Bitfield::full(N), 1);
    h.connect(1);
    h.connect(2);
    h.msg(1, Msg::Interested);
    // Peer 2 is not unchoked (not interested): its request is rejected.
    let a = h.msg(2, Msg::Request { piece: 0 });
    assert!(sent_to(&a, 2, &Msg::Reject { piece: 0 }));
    let mut sent = 0;
    let mut rejected = 0;
    for piece in 0..6 {
        let a = h.msg(1, Msg::Request { piece });
        sent += a
            .iter()
            .filter(|x| matches!(x, Action::SendPiece { .. }))
            .count();
        rejected += usize::from(sent_to(&a, 1, &Msg::Reject { piece }));
    }
    assert_eq!(sent, 1, "one upload at a time");
    assert_eq!(rejected, 3, "cap of 3 queued-or-sending requests");
}

#[test]
fn choking_a_peer_rejects_its_queued_requests() {
    let mut h = seeder_with_interested(1, no_initial_seeding());
    for piece in 0..3 {
        h.msg(1, Msg::Request { piece });
    }
    let a = h.msg(1, Msg::NotInterested);
    assert!(sent_to(&a, 1, &Msg::Choke));
    assert!(sent_to(&a, 1, &Msg::Reject { piece: 1 }));
    assert!(sent_to(&a, 1, &Msg::Reject { piece: 2 }));
}

#[test]
fn initial_seeding_sends_no_piece_twice_until_every_piece_is_out() {
    use std::collections::VecDeque;
    let n = 16;
    let mut h = H::new(Config::default(), n, Bitfield::full(n), 5);
    let mut actions = Vec::new();
    for k in 1..=3 {
        actions.extend(h.connect(k));
    }
    actions.extend(h.tick());
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Msg::Bitfield(_),
                ..
            }
        )),
        "a super-seeder hides its bitfield"
    );
    let mut offers: VecDeque<(u32, u32)> = VecDeque::new();
    let mut in_flight: VecDeque<(u32, u32)> = VecDeque::new();
    let mut uploads: Vec<u32> = Vec::new();
    let mut t = 0;
    for _ in 0..1000 {
        for a in actions.drain(..) {
            match a {
                Action::Send {
                    peer,
                    msg: Msg::Have { piece },
                } => offers.push_back((peer.0, piece)),
                Action::SendPiece { peer, piece } => {
                    uploads.push(piece);
                    in_flight.push_back((peer.0, piece));
                }
                _ => {}
            }
        }
        t += 10;
        h.at_ms(t);
        if let Some((k, piece)) = offers.pop_front() {
            actions = h.msg(k, Msg::Request { piece });
        } else if let Some((k, piece)) = in_flight.pop_front() {
            actions = h.ev(Event::UploadDone {
                peer: PeerKey(k),
                piece,
            });
        } else {
            break;
        }
    }
    let first_pass: Vec<u32> = uploads.iter().copied().take(n as usize).collect();
    let distinct: std::collections::BTreeSet<u32> = first_pass.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        n as usize,
        "every piece out exactly once first: {uploads:?}"
    );
    assert!(
        !h.s.initial_seeding(),
        "initial seeding ends once every piece is out"
    );
}

#[test]
fn out_of_range_indices_are_protocol_violations() {
    let mut h = H::leecher(Config::default());
    h.connect(1);
    let a = h.msg(1, Msg::Have { piece: N });
    assert!(a.contains(&Action::Disconnect {
        peer: PeerKey(1),
        reason: DisconnectReason::ProtocolViolation
    }));
    h.connect(2);
    let a = h.msg(2, Msg::Bitfield(Bitfield::new(N + 1)));
    assert!(a.contains(&Action::Disconnect {
        peer: PeerKey(2),
        reason: DisconnectReason::ProtocolViolation
    }));
    assert_eq!(h.s.peer_count(), 0);
}

#[test]
fn same_seed_and_events_give_the_same_actions() {
    let run = |seed| {
        let mut h = H::new(Config::default(), N, Bitfield::new(N), seed);
        let mut all = Vec::new();
        for k in 1..=5 {
            all.extend(h.connect(k));
            all.extend(h.msg(k, Msg::Bitfield(Bitfield::full(N))));
            all.extend(h.msg(k, Msg::Unchoke));
        }
        all
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

/// The sequence that hung a node download of a one-piece manifest: a seeder
/// unchokes us before it reveals its piece. With demand interest the
/// request must still go out after `Interested`, as the protocol requires
/// (the node's connection refuses a request from an uninterested side).
#[test]
fn interested_goes_out_before_the_first_request() {
    let cfg = Config::default();
    assert!(cfg.demand_interest, "the node runs demand interest");
    let mut h = H::new(cfg, 1, Bitfield::new(1), 3);
    h.connect(0);
    assert!(requests(&h.msg(0, Msg::Unchoke), 0).is_empty());
    let acts = h.msg(0, Msg::Have { piece: 0 });
    let pos = |want: &Msg| {
        acts.iter()
            .position(|a| matches!(a, Action::Send { peer, msg } if peer.0 == 0 && msg == want))
    };
    let interested = pos(&Msg::Interested).expect("Interested sent");
    let request = pos(&Msg::Request { piece: 0 }).expect("the piece is requested");
    assert!(interested < request, "{acts:?}");
}

/// The only peer that has the last piece lets our request for it time out
/// (a stream that stalled, say): the piece is first left for other peers, but
/// with none it is asked of the same peer again instead of never.
#[test]
fn a_timed_out_piece_is_asked_again_when_no_other_peer_has_it() {
    let cfg = Config {
        request_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let timeout = cfg.request_timeout;
    let mut h = H::new(cfg, 1, Bitfield::new(1), 3);
    h.connect(0);
    h.msg(0, Msg::Bitfield(Bitfield::full(1)));
    assert_eq!(requests(&h.msg(0, Msg::Unchoke), 0), vec![0]);
    h.at_ms(6_000);
    let a = h.tick();
    assert!(sent_to(&a, 0, &Msg::Cancel { piece: 0 }), "{a:?}");
    assert!(h.s.outstanding(PeerKey(0)).is_empty());
    let mut asked_again = None;
    for ms in (6_500..=6_000 + 3 * timeout.as_millis() as u64).step_by(500) {
        h.at_ms(ms);
        if requests(&h.tick(), 0).contains(&0) {
            asked_again = Some(ms);
            break;
        }
    }
    let at = asked_again.expect("the piece is asked of its only holder again");
    assert!(
        at >= 6_000 + timeout.as_millis() as u64 / 2,
        "not at once: {at} ms"
    );
}

fn pieces_sent(actions: &[Action]) -> Vec<(u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendPiece { peer, piece } => Some((peer.0, *piece)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stalled_upload_gives_its_slot_to_the_other_peers() {
    // One shared upload slot, two unchoked peers asking for everything.
    let mut h = seeder_with_interested(2, no_initial_seeding());
    h.tick();
    assert_eq!(slots(&h, 2), (2, 0));
    let mut sent = pieces_sent(&h.msg(1, Msg::Request { piece: 0 }));
    for piece in 1..8 {
        sent.extend(pieces_sent(&h.msg(1, Msg::Request { piece })));
    }
    for piece in 0..8 {
        sent.extend(pieces_sent(&h.msg(2, Msg::Request { piece })));
    }
    assert_eq!(sent, vec![(1, 0)], "one slot: peer 1's first piece");
    // Peer 1 does not take its piece. Before `upload_stall` nothing moves.
    h.at_ms(900);
    assert!(pieces_sent(&h.tick()).is_empty());
    // After it, the slot goes to peer 2, whose pieces then flow one by one.
    h.at_ms(1_100);
    assert_eq!(pieces_sent(&h.tick()), vec![(2, 0)]);
    for piece in 0..7 {
        let next = pieces_sent(&h.ev(Event::UploadDone {
            peer: PeerKey(2),
            piece,
        }));
        assert_eq!(next, vec![(2, piece + 1)], "peer 2 is not held up");
    }
    // Peer 1 is served at its own pace: its next piece only once the last
    // one is out, and outside the shared slot (peer 2 keeps its own).
    let next = h.ev(Event::UploadDone {
        peer: PeerKey(1),
        piece: 0,
    });
    assert_eq!(pieces_sent(&next), vec![(1, 1)]);
    assert!(
        pieces_sent(&h.tick()).is_empty(),
        "one slow piece at a time"
    );
    // Once a piece reaches it within `upload_stall` it shares the slot again:
    // with the slot held by peer 2, its next piece waits for that slot.
    h.at_ms(1_500);
    let next = h.ev(Event::UploadDone {
        peer: PeerKey(1),
        piece: 1,
    });
    assert!(pieces_sent(&next).is_empty(), "{next:?}");
    let next = h.ev(Event::UploadDone {
        peer: PeerKey(2),
        piece: 7,
    });
    assert_eq!(pieces_sent(&next), vec![(1, 2)]);
}

fn revealed(actions: &[Action]) -> Vec<(u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                peer,
                msg: Msg::Have { piece },
            } => Some((peer.0, *piece)),
            _ => None,
        })
        .collect()
}

#[test]
fn initial_seeding_offers_a_peer_sits_on_go_to_the_others() {
    // Initial seeding: each piece is shown to one peer. Peer 1 is interested
    // but never asks for what it was shown.
    let mut h = H::new(Config::default(), N, Bitfield::full(N), 5);
    let mut shown = Vec::new();
    for k in 1..=2 {
        shown.extend(revealed(&h.connect(k)));
        shown.extend(revealed(&h.msg(k, Msg::Interested)));
    }
    shown.extend(revealed(&h.tick()));
    let to_1: Vec<u32> = shown.iter().filter(|s| s.0 == 1).map(|s| s.1).collect();
    assert!(!to_1.is_empty(), "peer 1 was shown pieces: {shown:?}");
    // Peer 2 takes every piece shown to it, as it is shown.
    let mut t = 0;
    let mut pending: Vec<u32> = shown.iter().filter(|s| s.0 == 2).map(|s| s.1).collect();
    let mut got = Vec::new();
    // Past the 10 s patience for offers nobody asks for.
    while t < 12_000 {
        t += 100;
        h.at_ms(t);
        let mut acts = h.tick();
        for piece in std::mem::take(&mut pending) {
            acts.extend(h.msg(2, Msg::Request { piece }));
        }
        // Each piece sent is taken at once (which may start the next) and
        // announced, as an honest peer does once it verified it.
        let mut i = 0;
        while i < acts.len() {
            if let Action::SendPiece { peer, piece } = acts[i] {
                acts.extend(h.ev(Event::UploadDone { peer, piece }));
                acts.extend(h.msg(2, Msg::Have { piece }));
                got.push(piece);
            }
            i += 1;
        }
        pending.extend(revealed(&acts).iter().filter(|s| s.0 == 2).map(|s| s.1));
    }
    // The pieces peer 1 sat on went back to the pool and reached peer 2.
    for piece in &to_1 {
        assert!(
            got.contains(piece),
            "piece {piece} stayed with peer 1: {got:?}"
        );
    }
    // And peer 1 is offered nothing more until it asks for something.
    let later: Vec<u32> = revealed(&h.tick())
        .iter()
        .filter(|s| s.0 == 1)
        .map(|s| s.1)
        .collect();
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn initial_seeding_shows_no_more_pieces_to_a_peer_that_does_not_announce_them() {
    // Peer 1 asks for what it is shown and takes it, but never announces a
    // piece (it does not pass them on); peer 2 is honest.
    let mut h = H::new(Config::default(), N, Bitfield::full(N), 5);
    let mut shown = Vec::new();
    for k in 1..=2 {
        shown.extend(revealed(&h.connect(k)));
        shown.extend(revealed(&h.msg(k, Msg::Interested)));
    }
    shown.extend(revealed(&h.tick()));
    let mut shown_to_1 = Vec::new();
    let mut t = 0;
    let mut pending: Vec<(u32, u32)> = shown.clone();
    // The seeder's link sends one piece every 200 ms: initial seeding lasts
    // longer than the test.
    let mut sending: std::collections::VecDeque<(PeerKey, u32)> = Default::default();
    while t < 8_000 {
        t += 200;
        h.at_ms(t);
        let mut acts = h.tick();
        for (k, piece) in std::mem::take(&mut pending) {
            acts.extend(h.msg(k, Msg::Request { piece }));
        }
        if let Some((peer, piece)) = sending.pop_front() {
            acts.extend(h.ev(Event::UploadDone { peer, piece }));
            if peer.0 == 2 {
                acts.extend(h.msg(2, Msg::Have { piece }));
            }
        }
        for a in &acts {
            if let Action::SendPiece { peer, piece } = a {
                sending.push_back((*peer, *piece));
            }
        }
        let new = revealed(&acts);
        shown_to_1.extend(new.iter().filter(|s| s.0 == 1).map(|s| (t, s.1)));
        pending.extend(new);
    }
    // Peer 1 got pieces early; once one of them is unannounced for
    // HAVE_PATIENCE (3 s) it is shown nothing new.
    let late: Vec<_> = shown_to_1.iter().filter(|(at, _)| *at > 4_500).collect();
    assert!(!shown_to_1.is_empty(), "peer 1 was never shown a piece");
    assert!(late.is_empty(), "peer 1 was still shown {late:?}");
}
