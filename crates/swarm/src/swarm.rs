//! The swarm scheduler state machine. See STATE.md for states and transitions.

use crate::bitfield::Bitfield;
use crate::config::Config;
use crate::picker::{PickOptions, Picker, PieceState};
use crate::rate::RateMeter;
use crate::types::{Action, DisconnectReason, Event, Msg, PeerKey, Time};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Errors of `Swarm::new`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwarmError {
    /// The bitfield of pieces already had does not cover `num_pieces`.
    #[error("the have-bitfield covers {got} pieces but the content has {expected}; pass a bitfield of the content's piece count")]
    HaveLength {
        /// Pieces in the content.
        expected: u32,
        /// Pieces covered by the bitfield passed.
        got: u32,
    },
    /// A configuration value is out of range.
    #[error("invalid scheduler configuration: {0}")]
    Config(&'static str),
}

/// Which upload slot a peer holds (None = choked by us).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Choked.
    None,
    /// One of the regular (reciprocation or seeding) slots.
    Regular,
    /// The optimistic slot.
    Optimistic,
}

/// Counters, for reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Piece bytes sent (upload done).
    pub uploaded: u64,
    /// Piece bytes received (including duplicates).
    pub downloaded: u64,
    /// Piece bytes received that we already had or were verifying.
    pub wasted: u64,
    /// Pieces that failed verification.
    pub hash_failures: u32,
    /// Requests moved away from a stalled peer.
    pub timeouts: u32,
    /// Duplicate (endgame) requests sent.
    pub endgame_requests: u32,
    /// Requests duplicated outside endgame by an idle, faster peer.
    pub steals: u32,
}

#[derive(Clone, Debug)]
struct OutReq {
    piece: u32,
    sent_at: Time,
    /// `Cancel` sent to move the piece to another peer: still outstanding
    /// until the peer answers with `Reject` (then the piece moves) or with
    /// the piece (then it stays here), so no bytes are sent twice.
    cancelling: bool,
    /// When `Cancel` was sent (meaningful while `cancelling`).
    cancelled_at: Time,
}

/// How long an interested peer may hold offers of initial seeding while it
/// asks us for nothing before they go back to the pool.
const HOARD_PATIENCE: Duration = Duration::from_secs(10);

/// How long a peer may take to announce a piece we sent it during initial
/// seeding (it announces it once verified: well under a second when it is
/// honest, the piece's transfer time included).
const HAVE_PATIENCE: Duration = Duration::from_secs(3);
/// Unannounced pieces remembered per peer.
const MAX_UNANNOUNCED: usize = 64;

/// Whether `p` got a piece from us during initial seeding more than
/// `HAVE_PATIENCE` ago and has not announced it.
fn keeps_pieces(p: &Peer, now: Time) -> bool {
    p.unannounced
        .first()
        .is_some_and(|(_, at)| now.saturating_sub(*at) > HAVE_PATIENCE)
}

/// One upload in flight to a peer.
#[derive(Debug, Clone, Copy)]
struct Upload {
    piece: u32,
    since: Time,
    /// Holds one of the `max_active_uploads` shared slots. An upload that
    /// outlives `upload_stall` gives its slot back (the peer turns `slow`), so
    /// a peer that reads slowly or not at all cannot hold the others up.
    shared: bool,
}

/// Pieces not to ask of one peer for now: it rejected them, or let our
/// request time out. Each is left to other peers for a request timeout (or
/// until this peer sends a piece or unchokes us), then may be asked of it
/// again: when no other peer has the piece, never asking again would hang the
/// download. At most `MAX` entries.
#[derive(Debug, Default, Clone)]
struct Avoid(Vec<(u32, Time)>);

impl Avoid {
    const MAX: usize = 64;

    fn contains(&self, piece: &u32) -> bool {
        self.0.iter().any(|(q, _)| q == piece)
    }

    fn push(&mut self, piece: u32, now: Time) {
        if self.0.len() < Self::MAX && !self.contains(&piece) {
            self.0.push((piece, now));
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// Forgets the entries older than `after`; whether any went.
    fn expire(&mut self, now: Time, after: Duration) -> bool {
        let before = self.0.len();
        self.0.retain(|(_, at)| now.saturating_sub(*at) < after);
        self.0.len() < before
    }
}

#[derive(Debug)]
struct Peer {
    connected_at: Time,
    have: Bitfield,
    have_count: u32,
    /// They choke us.
    peer_choking: bool,
    unchoked_us_at: Time,
    peer_interested: bool,
    /// Sent `Interested` at least once: a leecher, not a hiding seeder.
    ever_interested: bool,
    am_interested: bool,
    /// What the peer was last told through actions already handed out by
    /// `poll_action`: a `Request` must follow an `Interested` (protocol §5).
    /// Kept in debug builds only, for that check.
    told_interested: bool,
    /// Pieces they have that we have not verified.
    interesting: u32,
    /// Queued in `Swarm::interest_dirty`.
    interest_dirty: bool,
    slot: Slot,
    unchoked_at: Time,
    choked_at: Time,
    requests: Vec<OutReq>,
    /// Reset when requests go from none to some, and on every piece.
    waiting_since: Time,
    last_piece_at: Time,
    upload_queue: VecDeque<u32>,
    /// Pieces handed to the driver and not yet reported `UploadDone`.
    uploading: Vec<Upload>,
    /// Its last upload outlived `upload_stall`: it is served one piece at a
    /// time outside the shared slots, at its own pace, until a piece reaches
    /// it within `upload_stall` again.
    slow: bool,
    /// Pieces we sent it during initial seeding that it has not announced
    /// (`Have`) yet, with when they were sent (at most `MAX_UNANNOUNCED`).
    /// A peer that does not announce what it got does not pass it on: it is
    /// shown no more pieces, and its offers go back to the pool.
    unannounced: Vec<(u32, Time)>,
    /// When they last asked us for a piece.
    last_request_at: Time,
    in_ring: bool,
    down: RateMeter,
    up: RateMeter,
    snubbed: bool,
    /// Requests timed out; one request at a time until a piece arrives.
    stalled: bool,
    rtt: Option<Duration>,
    strikes: u32,
    /// Pieces this peer sent corrupted: not asked of it again (bounded).
    failed: Vec<u32>,
    /// Pieces it rejected or let time out: left to other peers for a while.
    avoid: Avoid,
    /// A piece moved to this peer: its request elsewhere was cancelled and
    /// rejected, so ask this peer for it first.
    claim: Option<u32>,
    /// Pieces revealed during initial seeding (empty otherwise).
    revealed: Bitfield,
    /// Pieces offered during initial seeding and not yet being sent.
    offers: Vec<u32>,
    /// When a piece was last offered (initial seeding).
    offered_at: Time,
    /// Stayed uninterested in pieces offered during initial seeding (another
    /// seeder, hiding its pieces like us); cleared by `Interested`.
    declined: bool,
    /// Sat on pieces offered during initial seeding without asking for them:
    /// they went back to the pool, and it is offered no more until it asks
    /// for a piece.
    hoarding: bool,
}

#[derive(Debug)]
struct InitialSeeding {
    /// Pieces known to be out in the swarm (uploaded once or seen at a peer).
    sent: Bitfield,
    /// Pieces offered to one peer or being sent, and not yet out.
    offered: Bitfield,
}

/// The sans-IO swarm scheduler for one piece of content.
///
/// Feed events with [`Swarm::handle`], drain [`Swarm::poll_action`] after
/// each, and deliver `Event::Tick` at [`Swarm::poll_timeout`]. Deterministic:
/// the same events at the same times with the same seed give the same actions.
#[derive(Debug)]
pub struct Swarm {
    cfg: Config,
    picker: Picker,
    peers: BTreeMap<PeerKey, Peer>,
    rng: ChaCha8Rng,
    actions: VecDeque<Action>,
    now: Time,
    next_tick: Time,
    next_rechoke: Time,
    next_optimistic: Time,
    sequential: bool,
    active_uploads: u32,
    upload_ring: VecDeque<PeerKey>,
    seeding: Option<InitialSeeding>,
    banned: BTreeSet<PeerKey>,
    banned_order: VecDeque<PeerKey>,
    last_want_peers: Option<Time>,
    dirty: BTreeSet<PeerKey>,
    all_dirty: bool,
    slots_dirty: bool,
    /// Initial seeding: pieces went back to the pool; re-offer them.
    offers_dirty: bool,
    /// Peers whose interest must be re-evaluated (demand interest).
    interest_dirty: Vec<PeerKey>,
    /// Whether endgame was on at the last interest update.
    endgame_was: bool,
    /// Requests being moved (`steal_when_idle`): (piece, peer that takes it
    /// once the old holder rejects the cancelled request).
    moving: Vec<(u32, PeerKey)>,
    /// Scratch for `update_interest`: the pieces changed by one event
    /// (all clear between events).
    changed_mask: Bitfield,
    stats: Stats,
}

impl Swarm {
    /// A scheduler for content of `num_pieces` pieces, of which `have` are
    /// already verified. Randomness comes only from `rng_seed`.
    pub fn new(
        config: Config,
        num_pieces: u32,
        have: Bitfield,
        rng_seed: u64,
    ) -> Result<Self, SwarmError> {
        if have.len() != num_pieces {
            return Err(SwarmError::HaveLength {
                expected: num_pieces,
                got: have.len(),
            });
        }
        if config.min_pipeline == 0 || config.min_pipeline > config.max_pipeline {
            return Err(SwarmError::Config("need 1 <= min_pipeline <= max_pipeline"));
        }
        if config.max_active_uploads == 0
            || config.piece_size == 0
            || config.tick_interval.is_zero()
            || config.upload_stall.is_zero()
        {
            return Err(SwarmError::Config(
                "max_active_uploads, piece_size, tick_interval and upload_stall must be positive",
            ));
        }
        let complete = have.is_full();
        let seeding =
            (complete && config.initial_seeding && num_pieces > 0).then(|| InitialSeeding {
                sent: Bitfield::new(num_pieces),
                offered: Bitfield::new(num_pieces),
            });
        Ok(Swarm {
            cfg: config,
            picker: Picker::new(have),
            peers: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            actions: VecDeque::new(),
            now: Duration::ZERO,
            next_tick: Duration::ZERO,
            next_rechoke: Duration::ZERO,
            next_optimistic: Duration::ZERO,
            sequential: false,
            active_uploads: 0,
            upload_ring: VecDeque::new(),
            seeding,
            banned: BTreeSet::new(),
            banned_order: VecDeque::new(),
            last_want_peers: None,
            dirty: BTreeSet::new(),
            all_dirty: false,
            slots_dirty: false,
            offers_dirty: false,
            interest_dirty: Vec::new(),
            endgame_was: false,
            changed_mask: Bitfield::new(num_pieces),
            moving: Vec::new(),
            stats: Stats::default(),
        })
    }

    // ---- getters ----

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// The piece picker (states and availability), read-only.
    pub fn picker(&self) -> &Picker {
        &self.picker
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether initial seeding (super-seeding) is still going on.
    pub fn initial_seeding(&self) -> bool {
        self.seeding.is_some()
    }

    /// The upload slot `peer` holds, `None` when not connected.
    pub fn slot(&self, peer: PeerKey) -> Option<Slot> {
        self.peers.get(&peer).map(|p| p.slot)
    }

    /// How many pieces `peer` has told us it holds, `None` when not connected.
    pub fn peer_have_count(&self, peer: PeerKey) -> Option<u32> {
        self.peers.get(&peer).map(|p| p.have_count)
    }

    /// Whether `peer` is marked as snubbing us.
    pub fn is_snubbed(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.snubbed)
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: PeerKey) -> bool {
        self.banned.contains(&peer)
    }

    /// Pieces requested from `peer` and not yet received.
    pub fn outstanding(&self, peer: PeerKey) -> Vec<u32> {
        self.peers
            .get(&peer)
            .map(|p| p.requests.iter().map(|r| r.piece).collect())
            .unwrap_or_default()
    }

    /// True when a request of `peer` for `piece` waits in our upload queue
    /// (accepted, not yet being sent). A driver that answers `Cancel` on the
    /// wire uses it: a queued request is answered with `Reject`, one being
    /// sent with the piece.
    pub fn upload_queued(&self, peer: PeerKey, piece: u32) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.upload_queue.contains(&piece))
    }

    /// The number of requests we keep in flight to `peer` now:
    /// `ceil(rate × rtt / piece_size) + pipeline_slack` within `[min_pipeline, max_pipeline]`,
    /// where rate is the peer's rolling download rate to us and rtt the
    /// smallest request-to-piece delay seen (`default_rtt` before one is seen);
    /// 1 for snubbed or stalled peers.
    pub fn pipeline_depth(&mut self, peer: PeerKey) -> Option<u32> {
        let now = self.now;
        let cfg = &self.cfg;
        self.peers.get_mut(&peer).map(|p| depth(cfg, p, now))
    }

    /// When the driver should deliver the next `Event::Tick`.
    pub fn poll_timeout(&self) -> Option<Time> {
        Some(self.next_tick)
    }

    /// The next output, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.actions.pop_front()?;
        // Only a debug check reads `told_interested`: release builds skip
        // the peer lookup on this hot path.
        if !cfg!(debug_assertions) {
            return Some(a);
        }
        if let Action::Send { peer, msg } = &a {
            if let Some(p) = self.peers.get_mut(peer) {
                match msg {
                    Msg::Interested => p.told_interested = true,
                    Msg::NotInterested => p.told_interested = false,
                    Msg::Request { piece } => debug_assert!(
                        p.told_interested,
                        "Request for piece {piece} to {peer:?} before Interested"
                    ),
                    _ => {}
                }
            }
        }
        Some(a)
    }

    // ---- input ----

    /// Feeds one event at `now` (non-decreasing; an earlier `now` is treated
    /// as the last one seen).
    pub fn handle(&mut self, event: Event, now: Time) {
        self.now = self.now.max(now);
        match event {
            Event::PeerConnected { peer, outbound: _ } => self.on_connected(peer),
            Event::PeerDisconnected { peer } => {
                if self.peers.contains_key(&peer) {
                    self.remove_peer(peer);
                }
            }
            Event::Message { peer, msg } => {
                if self.peers.contains_key(&peer) {
                    self.on_message(peer, msg);
                }
            }
            Event::PieceVerified { piece, from } => self.on_verified(piece, from),
            Event::PieceFailed { piece, from } => self.on_failed(piece, from),
            Event::Tick => self.on_tick(),
            Event::SetSequential(on) => {
                self.sequential = on;
                self.all_dirty = true;
            }
            Event::UploadDone { peer, piece } => self.on_upload_done(peer, piece),
        }
        self.after_event();
        #[cfg(any(test, debug_assertions))]
        if let Err(e) = self.check_invariants() {
            panic!("swarm invariant broken: {e}");
        }
    }

    fn send(&mut self, peer: PeerKey, msg: Msg) {
        self.actions.push_back(Action::Send { peer, msg });
    }

    fn on_connected(&mut self, key: PeerKey) {
        if self.banned.contains(&key) {
            self.actions.push_back(Action::Disconnect {
                peer: key,
                reason: DisconnectReason::Banned,
            });
            return;
        }
        if self.peers.contains_key(&key) {
            return;
        }
        if self.peers.len() >= self.cfg.max_peers as usize {
            self.actions.push_back(Action::Disconnect {
                peer: key,
                reason: DisconnectReason::TooManyPeers,
            });
            return;
        }
        let n = self.picker.len();
        let now = self.now;
        self.peers.insert(
            key,
            Peer {
                connected_at: now,
                have: Bitfield::new(n),
                have_count: 0,
                peer_choking: true,
                unchoked_us_at: now,
                peer_interested: false,
                ever_interested: false,
                am_interested: false,
                told_interested: false,
                interesting: 0,
                interest_dirty: false,
                slot: Slot::None,
                unchoked_at: now,
                choked_at: now,
                requests: Vec::new(),
                waiting_since: now,
                last_piece_at: now,
                upload_queue: VecDeque::new(),
                uploading: Vec::new(),
                slow: false,
                unannounced: Vec::new(),
                last_request_at: now,
                in_ring: false,
                down: RateMeter::default(),
                up: RateMeter::default(),
                snubbed: false,
                stalled: false,
                rtt: None,
                strikes: 0,
                failed: Vec::new(),
                avoid: Avoid::default(),
                claim: None,
                revealed: if self.seeding.is_some() {
                    Bitfield::new(n)
                } else {
                    Bitfield::new(0)
                },
                offers: Vec::new(),
                offered_at: now,
                declined: false,
                hoarding: false,
            },
        );
        if self.seeding.is_none() && self.picker.have_count() > 0 {
            let bf = self.picker.have().clone();
            self.send(key, Msg::Bitfield(bf));
        }
        // A seeder in initial seeding reveals nothing yet; the peer is a
        // candidate for a slot because it lacks pieces.
        self.slots_dirty = true;
    }

    fn remove_peer(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.remove(&key) else {
            return;
        };
        for r in &peer.requests {
            self.picker.on_request_dropped(r.piece, true);
        }
        // Moves to it are void; moves away from it now need no answer (its
        // requests are dropped and every peer is refilled below).
        self.moving.retain(|&(q, k)| {
            k != key && !peer.requests.iter().any(|r| r.piece == q && r.cancelling)
        });
        for p in peer.have.ones() {
            self.picker.remove_availability(p);
        }
        self.active_uploads -= peer.uploading.iter().filter(|u| u.shared).count() as u32;
        if peer.in_ring {
            self.upload_ring.retain(|k| *k != key);
        }
        if let Some(s) = self.seeding.as_mut() {
            for q in peer
                .offers
                .iter()
                .copied()
                .chain(peer.uploading.iter().map(|u| u.piece))
            {
                // A piece withdrawn from a slow peer may be offered to another
                // by now: that offer stands.
                if !self.peers.values().any(|o| o.offers.contains(&q)) {
                    s.offered.clear(q);
                }
            }
            self.offers_dirty = true;
        }
        if peer.slot != Slot::None {
            self.slots_dirty = true;
        }
        self.dirty.remove(&key);
        self.all_dirty = true;
    }

    fn violation(&mut self, key: PeerKey) {
        self.actions.push_back(Action::Disconnect {
            peer: key,
            reason: DisconnectReason::ProtocolViolation,
        });
        self.remove_peer(key);
    }

    fn on_message(&mut self, key: PeerKey, msg: Msg) {
        let n = self.picker.len();
        match msg {
            Msg::KeepAlive | Msg::PeerExchange => {}
            Msg::Bitfield(bf) => {
                if bf.len() != n {
                    return self.violation(key);
                }
                for p in bf.ones() {
                    self.add_have(key, p);
                }
                self.check_both_complete(key);
            }
            Msg::Have { piece } => {
                if piece >= n {
                    return self.violation(key);
                }
                if let Some(p) = self.peers.get_mut(&key) {
                    p.unannounced.retain(|(q, _)| *q != piece);
                }
                self.add_have(key, piece);
                self.check_both_complete(key);
            }
            Msg::Interested => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_interested = true;
                    p.ever_interested = true;
                    p.declined = false;
                    if p.slot == Slot::None {
                        self.slots_dirty = true;
                    }
                }
            }
            Msg::NotInterested => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_interested = false;
                }
                if self.peers.get(&key).is_some_and(|p| p.slot != Slot::None)
                    && !self.wants_upload(key)
                {
                    self.set_slot(key, Slot::None);
                    self.slots_dirty = true;
                }
            }
            Msg::Choke => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.peer_choking = true;
                    if p.slot == Slot::Regular {
                        self.slots_dirty = true;
                    }
                }
            }
            Msg::Unchoke => {
                let now = self.now;
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.peer_choking {
                        p.peer_choking = false;
                        p.unchoked_us_at = now;
                        // A fresh chance: pieces it rejected may be asked again.
                        p.avoid.clear();
                        self.dirty.insert(key);
                    }
                }
            }
            Msg::Request { piece } => self.on_request(key, piece),
            Msg::Cancel { piece } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.upload_queue.retain(|q| *q != piece);
                }
            }
            Msg::Piece { piece } => self.on_piece(key, piece),
            Msg::Reject { piece } => {
                if piece >= n {
                    return self.violation(key);
                }
                let mut moved = false;
                let now = self.now;
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(i) = p.requests.iter().position(|r| r.piece == piece) {
                        let r = p.requests.swap_remove(i);
                        if r.cancelling {
                            self.picker.on_request_dropped(piece, true);
                            moved = true;
                        } else {
                            // Not asked of this peer again until it sends
                            // something, or for a while (see `Avoid`).
                            p.avoid.push(piece, now);
                            self.picker.on_request_dropped(piece, false);
                        }
                        self.all_dirty = true;
                    }
                }
                // A confirmed move: the piece goes to the peer that claimed
                // it, first thing.
                if moved {
                    if let Some(m) = self.moving.iter().position(|m| m.0 == piece) {
                        let (_, to) = self.moving.swap_remove(m);
                        if let Some(t) = self.peers.get_mut(&to) {
                            t.claim = Some(piece);
                            // Before any other peer is refilled.
                            self.fill_requests(to);
                        }
                    }
                }
            }
        }
    }

    fn add_have(&mut self, key: PeerKey, piece: u32) {
        let we_have = self.picker.have().get(piece);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.have.set(piece) {
            return;
        }
        p.have_count += 1;
        self.picker.add_availability(piece);
        if !we_have {
            p.interesting += 1;
            if self.cfg.demand_interest {
                if !p.interest_dirty {
                    p.interest_dirty = true;
                    self.interest_dirty.push(key);
                }
            } else if !p.am_interested {
                p.am_interested = true;
                self.actions.push_back(Action::Send {
                    peer: key,
                    msg: Msg::Interested,
                });
            }
            self.dirty.insert(key);
        }
        if let Some(s) = self.seeding.as_mut() {
            // The piece is out in the swarm (perhaps from another seeder):
            // it no longer needs our first copy.
            if s.sent.set(piece) && s.offered.clear(piece) {
                let mut holders = Vec::new();
                for (k, other) in self.peers.iter_mut() {
                    let before = other.offers.len();
                    other.offers.retain(|o| *o != piece);
                    if other.offers.len() != before {
                        holders.push(*k);
                    }
                }
                for k in holders {
                    self.top_up_offers(k);
                }
            }
            self.maybe_end_initial_seeding();
        }
    }

    fn check_both_complete(&mut self, key: PeerKey) {
        let n = self.picker.len();
        if self.picker.is_complete() && self.peers.get(&key).is_some_and(|p| p.have_count == n) {
            self.actions.push_back(Action::Disconnect {
                peer: key,
                reason: DisconnectReason::BothComplete,
            });
            self.remove_peer(key);
        }
    }

    fn on_request(&mut self, key: PeerKey, piece: u32) {
        if piece >= self.picker.len() {
            return self.violation(key);
        }
        let we_have = self.picker.have().get(piece);
        let seeding = self.seeding.is_some();
        let serve = self.cfg.serve_uploads;
        let cap = self.cfg.max_remote_requests as usize;
        let complete = self.picker.is_complete();
        let npeers = self.peers.len();

        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let hidden = seeding && !p.revealed.get(piece);
        let committed = p.upload_queue.len() + p.uploading.len();
        let unreciprocated = freeloads(&self.cfg, complete, npeers, p);

        if unreciprocated {
            self.slots_dirty = true;
        }
        if !serve
            || p.slot == Slot::None
            || !we_have
            || hidden
            || unreciprocated
            || committed >= cap
        {
            self.actions.push_back(Action::Send {
                peer: key,
                msg: Msg::Reject { piece },
            });
            return;
        }
        p.last_request_at = self.now;
        p.hoarding = false;
        if p.upload_queue.contains(&piece) || p.uploading.iter().any(|u| u.piece == piece) {
            return;
        }
        p.upload_queue.push_back(piece);
        if !p.in_ring {
            p.in_ring = true;
            self.upload_ring.push_back(key);
        }
    }

    fn on_piece(&mut self, key: PeerKey, piece: u32) {
        if piece >= self.picker.len() {
            return self.violation(key);
        }
        let now = self.now;
        let size = self.cfg.piece_size as u64;
        // A move of this piece is over: it came (too late to move, or from
        // a third peer).
        self.moving.retain(|m| m.0 != piece);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(i) = p.requests.iter().position(|r| r.piece == piece) {
            let r = p.requests.swap_remove(i);
            let sample = now.saturating_sub(r.sent_at);
            p.rtt = Some(p.rtt.map_or(sample, |old| old.min(sample)));
            self.picker.on_request_dropped(piece, false);
        }
        p.down.add(size, now);
        p.last_piece_at = now;
        p.waiting_since = now;
        p.snubbed = false;
        p.stalled = false;
        p.avoid.clear();
        self.stats.downloaded += size;
        self.dirty.insert(key);
        let state = self.picker.state(piece);
        if matches!(
            state,
            crate::picker::PieceState::Have | crate::picker::PieceState::Verifying
        ) {
            self.stats.wasted += size;
            return;
        }
        // Endgame losers: cancel the same piece everywhere else.
        if self.picker.requesters(piece) > 0 {
            let mut losers = Vec::new();
            for (k, other) in self.peers.iter_mut() {
                if let Some(i) = other.requests.iter().position(|r| r.piece == piece) {
                    other.requests.swap_remove(i);
                    losers.push(*k);
                }
            }
            for k in losers {
                self.picker.on_request_dropped(piece, false);
                self.send(k, Msg::Cancel { piece });
                self.dirty.insert(k);
            }
        }
        self.picker.begin_verify(piece);
        self.actions
            .push_back(Action::VerifyAndStore { piece, from: key });
    }

    fn on_verified(&mut self, piece: u32, _from: PeerKey) {
        if !self.picker.verified(piece) {
            return;
        }
        let mut lost_interest = Vec::new();
        // Have goes to every peer that lacks the piece, and to those that have
        // it unless they are known leechers: a seeder in initial seeding
        // (which never says Interested) learns from it that its piece is out.
        let mut tell: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !(p.have.get(piece) && p.ever_interested))
            .map(|(k, _)| *k)
            .collect();
        // In random order: free slots go to the first peers whose Interested
        // arrives, so a fixed order (by key) would make every holder favour
        // the same neighbours.
        tell.shuffle(&mut self.rng);
        for (k, p) in self.peers.iter_mut() {
            if p.have.get(piece) {
                p.interesting -= 1;
                // With demand interest the update pass decides.
                if p.interesting == 0 && p.am_interested && !self.cfg.demand_interest {
                    p.am_interested = false;
                    lost_interest.push(*k);
                }
            }
        }
        for k in tell {
            self.send(k, Msg::Have { piece });
        }
        for k in lost_interest {
            self.send(k, Msg::NotInterested);
        }
        if self.picker.is_complete() {
            self.actions.push_back(Action::Complete);
            let n = self.picker.len();
            let done: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.have_count == n)
                .map(|(k, _)| *k)
                .collect();
            for k in done {
                self.check_both_complete(k);
            }
            // Switch to the seeding policy now rather than at the next rechoke.
            self.rechoke(false);
        }
    }

    fn on_failed(&mut self, piece: u32, from: PeerKey) {
        if !self.picker.failed(piece) {
            return;
        }
        self.stats.hash_failures += 1;
        self.all_dirty = true;
        let threshold = self.cfg.ban_threshold;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.strikes += 1;
        if p.failed.len() < 64 {
            p.failed.push(piece);
        }
        if p.strikes >= threshold {
            self.ban(from);
        }
    }

    fn ban(&mut self, key: PeerKey) {
        self.actions.push_back(Action::Ban { peer: key });
        self.actions.push_back(Action::Disconnect {
            peer: key,
            reason: DisconnectReason::Banned,
        });
        self.remove_peer(key);
        if self.banned.insert(key) {
            self.banned_order.push_back(key);
            if self.banned_order.len() > self.cfg.max_banned as usize {
                if let Some(old) = self.banned_order.pop_front() {
                    self.banned.remove(&old);
                }
            }
        }
    }

    fn on_upload_done(&mut self, key: PeerKey, piece: u32) {
        let now = self.now;
        let size = self.cfg.piece_size as u64;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(i) = p.uploading.iter().position(|u| u.piece == piece) else {
            return;
        };
        let up = p.uploading.swap_remove(i);
        p.up.add(size, now);
        if up.shared {
            self.active_uploads -= 1;
        } else if now.saturating_sub(up.since) <= self.cfg.upload_stall {
            // It keeps up again: back to the shared slots.
            p.slow = false;
        }
        // It may have used up its allowance: re-examine its slot.
        self.slots_dirty = true;
        self.stats.uploaded += size;
        if let Some(s) = self.seeding.as_mut() {
            if p.unannounced.len() < MAX_UNANNOUNCED {
                p.unannounced.push((piece, now));
            }
            s.sent.set(piece);
            s.offered.clear(piece);
            // It is out once: an offer of it elsewhere (it was withdrawn from
            // a slow peer and offered again) is void.
            for o in self.peers.values_mut() {
                if o.offers.contains(&piece) {
                    o.offers.retain(|q| *q != piece);
                    self.offers_dirty = true;
                }
            }
            self.maybe_end_initial_seeding();
        }
    }

    fn maybe_end_initial_seeding(&mut self) {
        let n = self.picker.len();
        let Some(s) = self.seeding.as_ref() else {
            return;
        };
        // Every piece is out, or another complete peer is here.
        if s.sent.is_full() || self.peers.values().any(|p| p.have_count == n) {
            self.end_initial_seeding();
        }
    }

    /// Leaves initial seeding: every peer learns that we have every piece.
    fn end_initial_seeding(&mut self) {
        if self.seeding.take().is_none() {
            return;
        }
        let n = self.picker.len();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(p) = self.peers.get_mut(&k) {
                p.offers.clear();
                p.revealed = Bitfield::new(0);
                p.declined = false;
                p.unannounced.clear();
            }
            self.send(k, Msg::Bitfield(Bitfield::full(n)));
        }
        // Back to 4 + 1 slots under the seeding policy.
        self.rechoke(false);
    }

    fn on_tick(&mut self) {
        let now = self.now;
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.cfg.tick_interval;
        // Reciprocation grace periods expire silently.
        self.slots_dirty = true;
        // Request timeouts (work stealing) and snubbing.
        let timeout = self.cfg.request_timeout;
        let snub = self.cfg.snub_timeout;
        let mut cancels = Vec::new();
        let mut unanswered = Vec::new();
        let default_rtt = self.cfg.default_rtt;
        let mut expired = false;
        let stall = self.cfg.upload_stall;
        let mut detached = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            for u in p.uploading.iter_mut() {
                if u.shared && now.saturating_sub(u.since) > stall {
                    // It does not drain: its slot goes to the others, and it
                    // is served at its own pace from now on.
                    u.shared = false;
                    p.slow = true;
                    self.active_uploads -= 1;
                    detached.push(u.piece);
                }
            }
            expired |= p.avoid.expire(now, timeout);
            // A peer that does not answer a Cancel (the protocol says it
            // SHOULD) must not hold the piece forever: the move is off and
            // the piece free again.
            let patience = (p.rtt.unwrap_or(default_rtt) * 4).max(Duration::from_secs(1));
            p.requests.retain(|r| {
                let late = r.cancelling && now.saturating_sub(r.cancelled_at) > patience;
                if late {
                    unanswered.push(r.piece);
                }
                !late
            });
            if !p.requests.is_empty() && now.saturating_sub(p.waiting_since) > timeout {
                for r in p.requests.drain(..) {
                    cancels.push((*k, r.piece));
                    p.avoid.push(r.piece, now);
                }
                p.stalled = true;
            }
            if !p.peer_choking
                && p.am_interested
                && now.saturating_sub(p.last_piece_at.max(p.unchoked_us_at)) > snub
            {
                if !p.snubbed && p.slot == Slot::Regular {
                    self.slots_dirty = true;
                }
                p.snubbed = true;
            }
        }
        if let Some(s) = self.seeding.as_mut() {
            // A piece stuck on its way to a slow peer may never get out
            // through it: it goes back to the pool, or the swarm would wait
            // for that peer to end initial seeding.
            for q in detached {
                if !self.peers.values().any(|o| o.offers.contains(&q)) && s.offered.clear(q) {
                    self.offers_dirty = true;
                }
            }
        }
        if self.seeding.is_some() {
            let patience = (self.cfg.default_rtt * 10).max(Duration::from_secs(1));
            let declined: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.slot != Slot::None
                        && !p.peer_interested
                        && !p.offers.is_empty()
                        && now.saturating_sub(p.offered_at) > patience
                })
                .map(|(k, _)| *k)
                .collect();
            // Offers must not rot with a peer that does not take them, or
            // the others wait for pieces only it was shown: a slow peer's
            // offers, and the offers of an interested peer that has nothing
            // pending with us and asked for nothing within the patience, go
            // back to the pool (it may still ask for them).
            if let Some(s) = self.seeding.as_mut() {
                for p in self.peers.values_mut() {
                    if p.offers.is_empty() || !p.peer_interested {
                        continue;
                    }
                    let mut withdrawn = Vec::new();
                    if p.slow {
                        withdrawn = std::mem::take(&mut p.offers);
                    } else if keeps_pieces(p, now) {
                        // It does not pass on what it got: its offers that it
                        // has not asked for go to others.
                        let queue = &p.upload_queue;
                        p.offers.retain(|q| {
                            let asked = queue.contains(q);
                            if !asked {
                                withdrawn.push(*q);
                            }
                            asked
                        });
                    } else if now.saturating_sub(p.offered_at.max(p.last_request_at))
                        > HOARD_PATIENCE
                        && p.upload_queue.is_empty()
                        && p.uploading.is_empty()
                    {
                        // Nothing of it is pending (so none of its offers
                        // was asked for) and it asked for nothing for
                        // HOARD_PATIENCE: it sits on them. (A busy peer may
                        // leave an offer for seconds while its pipeline goes
                        // to others; in a 1000-peer swarm a 1 s patience
                        // cost 11 % of the first pass.)
                        withdrawn = std::mem::take(&mut p.offers);
                        p.hoarding = !withdrawn.is_empty();
                    }
                    for q in &withdrawn {
                        s.offered.clear(*q);
                        self.offers_dirty = true;
                    }
                }
            }
            let any = !declined.is_empty();
            for k in declined {
                if let Some(p) = self.peers.get_mut(&k) {
                    p.declined = true;
                }
                self.set_slot(k, Slot::None);
                self.slots_dirty = true;
            }
            if any {
                // Another seeder is here: hiding pieces now only starves
                // fast requesters of work, so reveal everything.
                self.end_initial_seeding();
            }
        }
        if expired {
            self.all_dirty = true;
        }
        for piece in unanswered {
            self.picker.on_request_dropped(piece, true);
            self.all_dirty = true;
        }
        // Moves whose cancelled request is gone (timed out) wait for nothing.
        let peers = &self.peers;
        self.moving.retain(|&(q, to)| {
            peers.contains_key(&to)
                && peers
                    .values()
                    .any(|p| p.requests.iter().any(|r| r.piece == q && r.cancelling))
        });
        for (k, piece) in cancels {
            self.picker.on_request_dropped(piece, true);
            self.stats.timeouts += 1;
            self.send(k, Msg::Cancel { piece });
            self.all_dirty = true;
        }
        self.rotate_idle_slots();
        if now >= self.next_rechoke {
            self.next_rechoke = now + self.cfg.rechoke_interval;
            let rotate = now >= self.next_optimistic;
            if rotate {
                self.next_optimistic = now + self.cfg.optimistic_interval;
            }
            self.rechoke(rotate);
        }
        let want = self.cfg.min_peers as usize;
        if self.peers.len() < want
            && self
                .last_want_peers
                .is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(5))
        {
            self.last_want_peers = Some(now);
            self.actions.push_back(Action::WantPeers {
                n: (want - self.peers.len()) as u32,
            });
        }
    }

    // ---- choker ----

    /// A peer we could usefully upload to: it says it is interested or,
    /// during initial seeding (when we reveal nothing unasked), it lacks pieces.
    fn wants_upload(&self, key: PeerKey) -> bool {
        let n = self.picker.len();
        self.peers.get(&key).is_some_and(|p| {
            p.peer_interested || (self.seeding.is_some() && p.have_count < n && !p.declined)
        })
    }

    /// Candidates ordered best first for regular slots. Leeching: fastest
    /// uploaders to us first, snubbing peers excluded. Seeding: peers we
    /// upload to fastest first among those unchoked for less than
    /// `seed_slot_time`, then choked peers waiting longest, then the rest.
    fn ranked_candidates(&mut self, only_choked: bool) -> Vec<PeerKey> {
        let now = self.now;
        let seeding = self.picker.is_complete();
        let npeers = self.peers.len();
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !only_choked || p.slot == Slot::None)
            .map(|(k, _)| *k)
            .filter(|k| self.wants_upload(*k))
            .collect();
        let mut scored: Vec<(u8, f64, u64, PeerKey)> = Vec::with_capacity(keys.len());
        for k in keys {
            let tie: u64 = self.rng.random();
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            if seeding {
                let (group, score) = if p.slot == Slot::Regular {
                    if now.saturating_sub(p.unchoked_at) < self.cfg.seed_slot_time {
                        (0, -p.up.rate(now))
                    } else {
                        (2, p.unchoked_at.as_secs_f64())
                    }
                } else {
                    (1, p.choked_at.as_secs_f64())
                };
                scored.push((group, score, tie, k));
            } else {
                if p.snubbed || freeloads(&self.cfg, seeding, npeers, p) {
                    continue;
                }
                scored.push((0, -p.down.rate(now), tie, k));
            }
        }
        scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        scored.into_iter().map(|s| s.3).collect()
    }

    fn draw_optimistic(&mut self, exclude: &[PeerKey]) -> Option<PeerKey> {
        let now = self.now;
        let mut pool = Vec::new();
        for (k, p) in &self.peers {
            if exclude.contains(k) || !self.wants_upload(*k) || self.freeloads(p) {
                continue;
            }
            let w = if now.saturating_sub(p.connected_at) < self.cfg.new_peer_age {
                self.cfg.new_peer_weight.max(1)
            } else {
                1
            };
            pool.push((*k, w));
        }
        let total: u32 = pool.iter().map(|x| x.1).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.random_range(0..total);
        for (k, w) in pool {
            if r < w {
                return Some(k);
            }
            r -= w;
        }
        None
    }

    fn regular_slots(&self) -> u32 {
        if self.seeding.is_some() {
            self.cfg.initial_seeding_slots
        } else {
            self.cfg.regular_slots
        }
    }

    fn freeloads(&self, p: &Peer) -> bool {
        freeloads(&self.cfg, self.picker.is_complete(), self.peers.len(), p)
    }

    /// Our upload is idle while slot holders ask for nothing: a holder that
    /// has not requested anything for `idle_slot_timeout` yields its slot to
    /// a waiting peer (the slot count stays 4 + 1; only who holds them moves).
    fn rotate_idle_slots(&mut self) {
        if !self.cfg.choking || !self.cfg.serve_uploads || self.active_uploads > 0 {
            return;
        }
        let now = self.now;
        let idle_after = self.cfg.idle_slot_timeout;
        let waiting = self
            .peers
            .iter()
            .filter(|(k, p)| p.slot == Slot::None && self.wants_upload(**k) && !self.freeloads(p))
            .count();
        if waiting == 0 {
            return;
        }
        let idle: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.slot != Slot::None
                    && p.upload_queue.is_empty()
                    && p.uploading.is_empty()
                    && now.saturating_sub(p.last_request_at.max(p.unchoked_at)) >= idle_after
            })
            .map(|(k, _)| *k)
            .take(waiting)
            .collect();
        for k in idle {
            self.set_slot(k, Slot::None);
            self.slots_dirty = true;
        }
    }

    /// Re-chooses every slot (every `rechoke_interval`; optimistic when `rotate`).
    fn rechoke(&mut self, rotate: bool) {
        if !self.cfg.serve_uploads {
            return;
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        if !self.cfg.choking {
            for k in keys {
                let s = if self.wants_upload(k) {
                    Slot::Regular
                } else {
                    Slot::None
                };
                self.set_slot(k, s);
            }
            return;
        }
        let ranked = self.ranked_candidates(false);
        let regular: Vec<PeerKey> = ranked
            .into_iter()
            .take(self.regular_slots() as usize)
            .collect();
        let current_opt = self
            .peers
            .iter()
            .find(|(_, p)| p.slot == Slot::Optimistic)
            .map(|(k, _)| *k);
        let optimistic = if self.cfg.optimistic_slots == 0 {
            None
        } else {
            match current_opt {
                Some(k) if !rotate && !regular.contains(&k) && self.wants_upload(k) => Some(k),
                _ => self.draw_optimistic(&regular),
            }
        };
        for k in keys {
            let s = if regular.contains(&k) {
                Slot::Regular
            } else if optimistic == Some(k) {
                Slot::Optimistic
            } else {
                Slot::None
            };
            self.set_slot(k, s);
        }
        self.slots_dirty = false;
    }

    /// Fills free slots without demoting anyone (on interest, departures).
    fn fill_slots(&mut self) {
        if !self.cfg.serve_uploads {
            return;
        }
        if !self.cfg.choking {
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                if self.wants_upload(k) {
                    self.set_slot(k, Slot::Regular);
                }
            }
            return;
        }
        // Tit-for-tat: a peer that chokes us and took its allowance loses
        // its slot, so the slot goes to a peer that reciprocates.
        let freeloaders: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.slot != Slot::None
                    && p.upload_queue.is_empty()
                    && p.uploading.is_empty()
                    && self.freeloads(p)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in freeloaders {
            self.set_slot(k, Slot::None);
        }
        let regular = self
            .peers
            .values()
            .filter(|p| p.slot == Slot::Regular)
            .count();
        let free = (self.regular_slots() as usize).saturating_sub(regular);
        if free > 0 {
            for k in self.ranked_candidates(true).into_iter().take(free) {
                self.set_slot(k, Slot::Regular);
            }
        }
        let has_opt = self.peers.values().any(|p| p.slot == Slot::Optimistic);
        if !has_opt && self.cfg.optimistic_slots > 0 {
            let taken: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.slot != Slot::None)
                .map(|(k, _)| *k)
                .collect();
            if let Some(k) = self.draw_optimistic(&taken) {
                self.set_slot(k, Slot::Optimistic);
            }
        }
    }

    fn set_slot(&mut self, key: PeerKey, slot: Slot) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let old = p.slot;
        p.slot = slot;
        if old == Slot::None && slot != Slot::None {
            p.unchoked_at = now;
            self.send(key, Msg::Unchoke);
            self.top_up_offers(key);
        } else if old != Slot::None && slot == Slot::None {
            p.choked_at = now;
            let rejected: Vec<u32> = p.upload_queue.drain(..).collect();
            let offers: Vec<u32> = std::mem::take(&mut p.offers);
            if let Some(s) = self.seeding.as_mut() {
                for o in offers {
                    s.offered.clear(o);
                }
                self.offers_dirty = true;
            }
            self.send(key, Msg::Choke);
            for piece in rejected {
                self.send(key, Msg::Reject { piece });
            }
        }
    }

    /// Initial seeding: keep `initial_seeding_offers` never-sent pieces
    /// revealed to an unchoked peer, each revealed to one peer only.
    fn top_up_offers(&mut self, key: PeerKey) {
        let want = self.cfg.initial_seeding_offers as usize;
        let Some(s) = self.seeding.as_mut() else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let now = self.now;
        if p.slot == Slot::None || p.slow || p.hoarding || keeps_pieces(p, now) {
            return;
        }
        let n = self.picker.len();
        let mut revealed = Vec::new();
        while p.offers.len() < want {
            // Pool: not out, not offered, not at this peer; rarest first.
            let mut best = u32::MAX;
            let mut ties = 0u32;
            let avail = |q: u32| self.picker.availability(q);
            let in_pool = |q: u32| !s.sent.get(q) && !s.offered.get(q) && !p.have.get(q);
            for q in 0..n {
                if in_pool(q) {
                    let a = avail(q);
                    if a < best {
                        best = a;
                        ties = 1;
                    } else if a == best {
                        ties += 1;
                    }
                }
            }
            if ties == 0 {
                break;
            }
            let mut k = self.rng.random_range(0..ties);
            let mut chosen = None;
            for q in 0..n {
                if in_pool(q) && avail(q) == best {
                    if k == 0 {
                        chosen = Some(q);
                        break;
                    }
                    k -= 1;
                }
            }
            let Some(q) = chosen else { break };
            p.offered_at = self.now;
            s.offered.set(q);
            p.offers.push(q);
            if p.revealed.set(q) {
                revealed.push(q);
            }
        }
        for piece in revealed {
            self.send(key, Msg::Have { piece });
        }
    }

    // ---- after every event ----

    fn after_event(&mut self) {
        if self.slots_dirty {
            self.slots_dirty = false;
            self.fill_slots();
        }
        if self.offers_dirty {
            self.offers_dirty = false;
            let want = self.cfg.initial_seeding_offers as usize;
            let short: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.slot != Slot::None && p.offers.len() < want)
                .map(|(k, _)| *k)
                .collect();
            for k in short {
                self.top_up_offers(k);
            }
        }
        self.start_uploads();
        let keys: Vec<PeerKey> = if self.all_dirty {
            self.peers.keys().copied().collect()
        } else {
            self.dirty.iter().copied().collect()
        };
        self.all_dirty = false;
        self.dirty.clear();
        for k in keys {
            self.fill_requests(k);
        }
        self.update_interest();
    }

    /// Demand interest: re-evaluates peers that have a piece whose state
    /// changed, that sent Have, or all of them when endgame starts or ends.
    fn update_interest(&mut self) {
        let changed = self.picker.take_changed();
        if !self.cfg.demand_interest {
            return;
        }
        let endgame =
            self.cfg.endgame && self.picker.missing_count() == 0 && !self.picker.is_complete();
        let all = endgame != self.endgame_was;
        self.endgame_was = endgame;
        if all || !changed.is_empty() {
            // One word-wise AND per peer instead of a lookup per change.
            let mask = &mut self.changed_mask;
            for &q in &changed {
                mask.set(q);
            }
            for (k, p) in self.peers.iter_mut() {
                if !p.interest_dirty
                    && (all
                        || p.have
                            .words()
                            .iter()
                            .zip(mask.words())
                            .any(|(a, b)| a & b != 0))
                {
                    p.interest_dirty = true;
                    self.interest_dirty.push(*k);
                }
            }
            for &q in &changed {
                mask.clear(q);
            }
        }
        let dirty = std::mem::take(&mut self.interest_dirty);
        for k in dirty {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            p.interest_dirty = false;
            let want = demand(p, self.picker.missing(), endgame);
            if want != p.am_interested {
                p.am_interested = want;
                let msg = if want {
                    Msg::Interested
                } else {
                    Msg::NotInterested
                };
                self.actions.push_back(Action::Send { peer: k, msg });
            }
        }
    }

    fn start_uploads(&mut self) {
        while self.active_uploads < self.cfg.max_active_uploads {
            // While leeching, peers that unchoke us are served first; the
            // others get only capacity nobody reciprocating wants. Slow peers
            // are served below, outside the shared slots.
            let leeching = !self.picker.is_complete();
            let peers = &self.peers;
            let eligible = |k: &PeerKey| peers.get(k).is_none_or(|p| !p.slow);
            let preferred = |k: &PeerKey| peers.get(k).is_some_and(|p| !p.slow && !p.peer_choking);
            let pos = if leeching {
                self.upload_ring
                    .iter()
                    .position(preferred)
                    .or_else(|| self.upload_ring.iter().position(eligible))
            } else {
                self.upload_ring.iter().position(eligible)
            };
            let Some(key) = pos.and_then(|pos| self.upload_ring.remove(pos)) else {
                break;
            };
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            p.in_ring = false;
            if p.slot == Slot::None || p.upload_queue.is_empty() {
                continue;
            }
            if self.start_upload(key, true) {
                self.active_uploads += 1;
            }
            if let Some(p) = self.peers.get_mut(&key) {
                if !p.upload_queue.is_empty() {
                    p.in_ring = true;
                    self.upload_ring.push_back(key);
                }
            }
        }
        // A slow peer gets one piece at a time, whenever its last one is out.
        let slow: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.slow
                    && p.slot != Slot::None
                    && !p.upload_queue.is_empty()
                    && p.uploading.is_empty()
            })
            .map(|(k, _)| *k)
            .collect();
        for key in slow {
            self.start_upload(key, false);
        }
    }

    /// Takes the next piece from `key`'s upload queue (rarest first, if so
    /// configured) and asks the driver to send it.
    fn start_upload(&mut self, key: PeerKey, shared: bool) -> bool {
        let now = self.now;
        let rarest = self.cfg.upload_rarest_first;
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let idx = if rarest {
            let mut best = 0;
            for (i, q) in p.upload_queue.iter().enumerate() {
                if self.picker.availability(*q) < self.picker.availability(p.upload_queue[best]) {
                    best = i;
                }
            }
            best
        } else {
            0
        };
        let Some(piece) = p.upload_queue.remove(idx) else {
            return false;
        };
        p.uploading.push(Upload {
            piece,
            since: now,
            shared,
        });
        p.offers.retain(|o| *o != piece);
        self.actions
            .push_back(Action::SendPiece { peer: key, piece });
        self.top_up_offers(key);
        true
    }

    fn fill_requests(&mut self, key: PeerKey) {
        let now = self.now;
        let opts = PickOptions {
            mode: self.cfg.picker,
            random_first: self.cfg.random_first_pieces,
            sequential_window: self.sequential.then_some(self.cfg.sequential_window),
        };
        let Swarm {
            cfg,
            picker,
            peers,
            rng,
            actions,
            stats,
            moving,
            ..
        } = self;
        let Some(p) = peers.get_mut(&key) else { return };
        // A claim holds only while its piece is Missing: the move was
        // confirmed and nobody has asked for the piece since.
        if let Some(c) = p.claim {
            if picker.state(c) != PieceState::Missing || !p.have.get(c) {
                p.claim = None;
            }
        }
        if p.peer_choking || p.interesting == 0 {
            return;
        }
        let depth = depth(cfg, p, now) as usize;
        loop {
            let Some(p) = peers.get_mut(&key) else { return };
            let live = p.requests.iter().filter(|r| !r.cancelling).count();
            if live >= depth {
                break;
            }
            let (failed, avoid) = (&p.failed, &p.avoid);
            let mut piece = p
                .claim
                .take()
                .filter(|c| !failed.contains(c) && !avoid.contains(c));
            if piece.is_none() {
                piece = picker.pick(
                    &p.have,
                    &|q| failed.contains(&q) || avoid.contains(&q),
                    opts,
                    rng,
                );
            }
            let mut endgame = false;
            if piece.is_none() && cfg.endgame && picker.missing_count() == 0 {
                endgame = true;
                piece = endgame_pick(cfg, picker, peers, key, now);
            } else if piece.is_none()
                && cfg.steal_when_idle
                && live == 0
                && !moving.iter().any(|m| m.1 == key)
            {
                // Nothing new to ask of this peer and its pipeline is empty:
                // move here a request another peer would deliver later. The
                // slower holder gets `Cancel` and the piece moves only when
                // it answers `Reject`; if it answers with the piece (it had
                // started sending), nothing was sent twice.
                if let Some(q) = endgame_pick(cfg, picker, peers, key, now) {
                    stats.steals += 1;
                    for (k, other) in peers.iter_mut() {
                        if *k == key {
                            continue;
                        }
                        if let Some(r) = other
                            .requests
                            .iter_mut()
                            .find(|r| r.piece == q && !r.cancelling)
                        {
                            r.cancelling = true;
                            r.cancelled_at = now;
                            actions.push_back(Action::Send {
                                peer: *k,
                                msg: Msg::Cancel { piece: q },
                            });
                        }
                    }
                    moving.push((q, key));
                }
                break;
            }
            let Some(piece) = piece else { break };
            if endgame {
                stats.endgame_requests += 1;
            }
            let Some(p) = peers.get_mut(&key) else { return };
            if !p.am_interested {
                // With demand interest the update pass would say it after
                // the request; the protocol wants it first.
                p.am_interested = true;
                actions.push_back(Action::Send {
                    peer: key,
                    msg: Msg::Interested,
                });
            }
            picker.on_request(piece);
            if p.requests.is_empty() {
                p.waiting_since = now;
            }
            p.requests.push(OutReq {
                piece,
                sent_at: now,
                cancelling: false,
                cancelled_at: now,
            });
            actions.push_back(Action::Send {
                peer: key,
                msg: Msg::Request { piece },
            });
        }
    }

    // ---- invariants ----

    /// Checks every internal invariant; `Err` names the first one broken.
    /// Called after every event in debug and test builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.picker.check()?;
        let n = self.picker.len();
        let mut requesters = vec![0u32; n as usize];
        let mut availability = vec![0u32; n as usize];
        let mut uploading = 0u32;
        let mut regular = 0u32;
        let mut optimistic = 0u32;
        let mut offered_by_peers = Bitfield::new(n);
        for (k, p) in &self.peers {
            if self.banned.contains(k) {
                return Err(format!("banned peer {k:?} is connected"));
            }
            if p.have.len() != n || p.have.count_ones() != p.have_count {
                return Err(format!("peer {k:?} have count wrong"));
            }
            let mut interesting = 0;
            for q in p.have.ones() {
                availability[q as usize] += 1;
                if !self.picker.have().get(q) {
                    interesting += 1;
                }
            }
            let expected = if self.cfg.demand_interest {
                let endgame = self.cfg.endgame
                    && self.picker.missing_count() == 0
                    && !self.picker.is_complete();
                demand(p, self.picker.missing(), endgame)
            } else {
                interesting > 0
            };
            if interesting != p.interesting || p.am_interested != expected {
                return Err(format!(
                    "peer {k:?} interest: counted {interesting}, kept {} ({})",
                    p.interesting, p.am_interested
                ));
            }
            for (i, r) in p.requests.iter().enumerate() {
                if p.requests[..i].iter().any(|o| o.piece == r.piece) {
                    return Err(format!("peer {k:?} has piece {} requested twice", r.piece));
                }
                if !p.have.get(r.piece) {
                    return Err(format!("peer {k:?} asked for piece {} it lacks", r.piece));
                }
                requesters[r.piece as usize] += 1;
            }
            if p.requests.len() > self.cfg.max_pipeline as usize {
                return Err(format!("peer {k:?} pipeline over max"));
            }
            if p.upload_queue.len() + p.uploading.len() > self.cfg.max_remote_requests as usize {
                return Err(format!("peer {k:?} upload queue over cap"));
            }
            if p.slot == Slot::None && !p.upload_queue.is_empty() {
                return Err(format!("choked peer {k:?} has queued uploads"));
            }
            if !p.upload_queue.is_empty() && !p.in_ring {
                return Err(format!(
                    "peer {k:?} has queued uploads but is not in the ring"
                ));
            }
            for q in p
                .upload_queue
                .iter()
                .copied()
                .chain(p.uploading.iter().map(|u| u.piece))
            {
                if !self.picker.have().get(q) {
                    return Err(format!("peer {k:?} would be sent piece {q} we do not have"));
                }
            }
            uploading += p.uploading.iter().filter(|u| u.shared).count() as u32;
            // Outside the shared slots: a slow peer's one piece at a time, or
            // the shared uploads it held when it turned slow.
            let outside = p.uploading.iter().filter(|u| !u.shared).count() as u32;
            if outside > 0 && (!p.slow || outside > self.cfg.max_active_uploads) {
                return Err(format!(
                    "peer {k:?}: {outside} uploads outside the shared slots (slow: {})",
                    p.slow
                ));
            }
            match p.slot {
                Slot::Regular => regular += 1,
                Slot::Optimistic => optimistic += 1,
                Slot::None => {}
            }
            if !self.cfg.serve_uploads && p.slot != Slot::None {
                return Err(format!("peer {k:?} unchoked although uploads are off"));
            }
            if let Some(s) = &self.seeding {
                for &o in &p.offers {
                    if !s.offered.get(o) || s.sent.get(o) || !p.revealed.get(o) {
                        return Err(format!("peer {k:?} offer {o} not in offered state"));
                    }
                    if !offered_by_peers.set(o) {
                        return Err(format!("piece {o} offered to two peers"));
                    }
                }
                if p.slot == Slot::None && !p.offers.is_empty() {
                    return Err(format!("choked peer {k:?} holds offers"));
                }
            } else if !p.offers.is_empty() {
                return Err(format!("peer {k:?} holds offers outside initial seeding"));
            }
        }
        for q in 0..n {
            if requesters[q as usize] != self.picker.requesters(q) {
                return Err(format!(
                    "piece {q}: {} requests outstanding but picker counts {}",
                    requesters[q as usize],
                    self.picker.requesters(q)
                ));
            }
            if availability[q as usize] != self.picker.availability(q) {
                return Err(format!("piece {q}: availability mismatch"));
            }
        }
        if uploading != self.active_uploads || uploading > self.cfg.max_active_uploads {
            return Err(format!(
                "active uploads {uploading} vs {}",
                self.active_uploads
            ));
        }
        if self.cfg.choking && (regular > self.regular_slots() || optimistic > 1) {
            return Err(format!(
                "{regular} regular and {optimistic} optimistic slots in use"
            ));
        }
        if let Some(s) = &self.seeding {
            if !self.picker.is_complete() {
                return Err("initial seeding without every piece".into());
            }
            for q in s.offered.ones() {
                if s.sent.get(q) {
                    return Err(format!("piece {q} both offered and out"));
                }
            }
        }
        for (i, &(q, to)) in self.moving.iter().enumerate() {
            if !self.peers.contains_key(&to) || self.moving[..i].iter().any(|m| m.1 == to) {
                return Err(format!(
                    "move of piece {q} to {to:?}: peer gone or moving twice"
                ));
            }
            let cancelling = self
                .peers
                .values()
                .filter(|p| p.requests.iter().any(|r| r.piece == q && r.cancelling))
                .count();
            if cancelling == 0 {
                return Err(format!(
                    "move of piece {q}: no cancelled request to wait for"
                ));
            }
        }
        if self.banned.len() > self.cfg.max_banned as usize {
            return Err("ban list over its cap".into());
        }
        Ok(())
    }
}

/// When `p` would deliver one more piece asked now, or the `i`-th of its
/// requests sent at `sent_at`: one round trip, then pieces at its measured
/// rate (a peer that never delivered is assumed to send
/// `unmeasured_peer_rate` pieces a second). A request already later than
/// expected counts as late again by as much, so stalled requests look worse
/// the longer they stall.
fn eta(cfg: &Config, p: &mut Peer, now: Time, sent_at: Time, i: usize) -> Time {
    let measured = p.down.rate(now);
    let rate = if p.down.total() == 0 {
        cfg.piece_size as f64 * f64::from(cfg.unmeasured_peer_rate.max(1))
    } else {
        measured.max(cfg.piece_size as f64 / 60.0)
    };
    let rtt = p.rtt.unwrap_or(cfg.default_rtt);
    let per_piece = cfg.piece_size as f64 / rate;
    let start = sent_at.max(p.waiting_since);
    let expected = start + rtt + Duration::from_secs_f64(per_piece * (i + 1) as f64);
    if expected >= now {
        expected
    } else {
        now + (now - expected)
    }
}

/// Endgame: among pieces `key` has that are requested from others (fewer
/// than `endgame_max_requesters`), the one whose earliest expected arrival
/// is latest, if `key` would deliver it sooner. Duplicates that cannot win
/// are not sent, which keeps endgame waste low in large swarms.
fn endgame_pick(
    cfg: &Config,
    picker: &Picker,
    peers: &mut BTreeMap<PeerKey, Peer>,
    key: PeerKey,
    now: Time,
) -> Option<u32> {
    let n = picker.len() as usize;
    let mut best_eta: Vec<Option<Time>> = vec![None; n];
    for (k, o) in peers.iter_mut() {
        if *k == key {
            continue;
        }
        let mut sent: Vec<Time> = o.requests.iter().map(|r| r.sent_at).collect();
        sent.sort_unstable();
        for i in 0..o.requests.len() {
            if o.requests[i].cancelling {
                continue;
            }
            let r_sent = o.requests[i].sent_at;
            let pos = sent.partition_point(|t| *t < r_sent);
            let e = eta(cfg, o, now, r_sent, pos);
            let q = o.requests[i].piece as usize;
            if let Some(slot) = best_eta.get_mut(q) {
                *slot = Some(slot.map_or(e, |b: Time| b.min(e)));
            }
        }
    }
    let p = peers.get_mut(&key)?;
    let mine = eta(cfg, p, now, now, p.requests.len());
    let mut choice: Option<(Time, u32)> = None;
    for (q, e) in best_eta.iter().enumerate() {
        let (Some(e), q) = (*e, q as u32) else {
            continue;
        };
        if !p.have.get(q)
            || picker.requesters(q) >= cfg.endgame_max_requesters
            || p.failed.contains(&q)
            || p.avoid.contains(&q)
            || p.requests.iter().any(|r| r.piece == q)
            || e <= mine
        {
            continue;
        }
        if choice.is_none_or(|(ce, _)| e > ce) {
            choice = Some((e, q));
        }
    }
    choice.map(|c| c.1)
}

/// Demand interest: the peer has a piece we lack and either a piece nobody
/// was asked for, or our requests, or we are in endgame.
fn demand(p: &Peer, missing: &Bitfield, endgame: bool) -> bool {
    p.interesting > 0
        && (endgame
            || !p.requests.is_empty()
            || p.have
                .words()
                .iter()
                .zip(missing.words())
                .any(|(a, b)| a & b != 0))
}

/// While we leech, a peer that chokes us cannot take one more piece once
/// it was sent (or promised) `unreciprocated_allowance` pieces more than it
/// sent us: requests rejected, no slot, until it sends us something. One
/// rule for rejecting, demoting and unchoking, so slots do not flap.
fn freeloads(cfg: &Config, complete: bool, peers: usize, p: &Peer) -> bool {
    let piece = u64::from(cfg.piece_size);
    // With more peers, each is less likely to pick us for one of its few
    // slots, so reciprocation takes longer to show: the allowance grows.
    let pieces = u64::from(cfg.unreciprocated_allowance)
        .max(peers as u64 / cfg.allowance_peers_per_piece.max(1) as u64);
    let committed = (p.upload_queue.len() + p.uploading.len()) as u64 * piece;
    !complete
        && p.peer_choking
        && p.up.total() + committed + piece > p.down.total() + pieces.saturating_mul(piece)
}

fn depth(cfg: &Config, p: &mut Peer, now: Time) -> u32 {
    if p.snubbed || p.stalled {
        return 1;
    }
    let rate = p.down.rate(now);
    let rtt = p.rtt.unwrap_or(cfg.default_rtt).as_secs_f64();
    let bdp = (rate * rtt / cfg.piece_size as f64).ceil();
    let d = if bdp.is_finite() && bdp >= 0.0 {
        (bdp.min(u32::MAX as f64 / 2.0) as u32).saturating_add(cfg.pipeline_slack)
    } else {
        1
    };
    d.clamp(cfg.min_pipeline, cfg.max_pipeline)
}
