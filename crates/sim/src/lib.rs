//! shoal-sim: many peers of the real [`shoal_swarm::Swarm`] scheduler over a
//! modelled network on a virtual clock.
//!
//! # Network model
//!
//! * Time is integer microseconds. Everything is driven by one exact event
//!   queue (no fixed time step).
//! * Control messages arrive one-way `latency` after they are sent, in order
//!   per direction of a connection. With `loss > 0`, each message (and each
//!   piece arrival) is delayed by one retransmission timeout (`RTO`) with
//!   probability `loss` — loss is modelled as delay, as TCP would see it.
//! * A piece transfer is a *flow* (from, to, piece, bytes left, corrupt flag);
//!   piece bytes are never materialised. Flow rates follow a fair-share
//!   approximation of max-min fairness: each uploader splits its upload
//!   capacity equally among its active outgoing flows, and each downloader
//!   water-fills its download capacity over its incoming flows, each capped
//!   by its uploader share. (Exact when uploads are the bottleneck, as in every
//!   scenario here; when a download link binds, the uploader's unused share
//!   is not handed to its other flows.) Rates change only when a flow starts or
//!   ends at one of the two peers, so only the flows of the affected peers are
//!   recomputed and their completion events re-queued: cost O(events × degree).
//! * The piece reaches the downloader `latency` after the flow ends; the
//!   uploader gets `UploadDone` when the flow ends.
//! * Verification is instant: the driver checks the flow's corrupt flag.
//!   `bad_data_accepted` counts pieces a scheduler claims (or serves) whose
//!   stored copy is not verified-good; it must be 0.
//! * Peers connect to a bounded random peer set from a tracker-like view of
//!   live peers (`initial_connections`, capped at `max_connections` on both
//!   sides); `WantPeers` asks for more from the same view. Peers joining at
//!   the same instant are all in the view before any of them connects, so a
//!   flash crowd forms a random graph (each peer opens up to 40 connections
//!   and has at most 80), not a clique of the first joiners around the
//!   seeder.
//! * Like the node's driver, a `Cancel` of a request still waiting in the
//!   uploader's queue is answered with `Reject` (one being sent is answered
//!   by the piece), so the requester knows when a cancelled request is over.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shoal_swarm::{Action, Bitfield, Config, Event, Msg, PeerKey, PickerMode, Swarm};
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Errors of the simulator library.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario name is not known.
    #[error("unknown scenario {0:?}; run with --list to see the scenarios")]
    UnknownScenario(String),
    /// A `--set` value is not a known knob or does not parse.
    #[error("unknown or malformed setting {0:?}; see apply_setting for the knobs")]
    Setting(String),
    /// A scheduler could not be created.
    #[error("scheduler setup failed for peer {peer}: {source}")]
    Swarm {
        /// Peer index.
        peer: usize,
        /// Cause.
        source: shoal_swarm::SwarmError,
    },
}

/// Retransmission delay added to a lost message.
pub const RTO: Duration = Duration::from_millis(200);

const MBIT: f64 = 1_000_000.0 / 8.0;
const MIB: u64 = 1024 * 1024;

/// When a peer leaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Leave {
    /// Stays to the end.
    Never,
    /// Leaves at this time (seconds).
    At(f64),
    /// Leaves when the leechers present at the start have, together, this
    /// fraction of the pieces they need.
    AtProgress(f64),
}

/// One simulated peer.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// Upload capacity, bytes per second.
    pub up: f64,
    /// Download capacity, bytes per second.
    pub down: f64,
    /// Starts with every piece.
    pub seed: bool,
    /// Join time, seconds.
    pub join: f64,
    /// Departure.
    pub leave: Leave,
    /// Fraction of pieces this peer serves corrupted (0 = honest).
    pub corrupt_fraction: f64,
    /// Never uploads (its scheduler has `serve_uploads = false`).
    pub free_rider: bool,
    /// Counted in `completed` and `last_finish_s`.
    pub must_finish: bool,
}

impl PeerSpec {
    fn leecher(up_mbit: f64, down_mbit: f64) -> Self {
        PeerSpec {
            up: up_mbit * MBIT,
            down: down_mbit * MBIT,
            seed: false,
            join: 0.0,
            leave: Leave::Never,
            corrupt_fraction: 0.0,
            free_rider: false,
            must_finish: true,
        }
    }
    fn seeder(up_mbit: f64, down_mbit: f64) -> Self {
        PeerSpec {
            seed: true,
            must_finish: false,
            ..PeerSpec::leecher(up_mbit, down_mbit)
        }
    }
}

/// A complete simulation setup.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name (as given to `--scenario`).
    pub name: String,
    /// Content size in bytes.
    pub file_bytes: u64,
    /// One-way latency.
    pub latency: Duration,
    /// Probability that a message is delayed by `RTO`.
    pub loss: f64,
    /// The peers.
    pub peers: Vec<PeerSpec>,
    /// Connections a joining peer opens.
    pub initial_connections: usize,
    /// Most connections per peer.
    pub max_connections: usize,
    /// Scheduler configuration for every peer.
    pub config: Config,
    /// Simulated time limit.
    pub time_limit: Duration,
    /// Call `check_invariants()` after every event (also in release).
    pub check_invariants: bool,
}

/// Mechanism switches for ablations.
#[derive(Clone, Debug)]
pub struct Options {
    /// Piece ordering.
    pub picker: PickerMode,
    /// Choker on.
    pub choke: bool,
    /// Initial seeding on.
    pub initial_seeding: bool,
    /// Endgame on.
    pub endgame: bool,
    /// Check invariants after every event.
    pub check_invariants: bool,
    /// Extra scheduler settings `name=value` (see [`apply_setting`]).
    pub settings: Vec<(String, String)>,
    /// Probability that a message or piece arrival is delayed by [`RTO`].
    pub loss: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            picker: PickerMode::RarestFirst,
            choke: true,
            initial_seeding: true,
            endgame: true,
            check_invariants: false,
            settings: Vec::new(),
            loss: 0.0,
        }
    }
}

/// Sets one scheduler knob by name (for experiments from the command line).
pub fn apply_setting(cfg: &mut Config, name: &str, value: &str) -> Result<(), SimError> {
    let bad = || SimError::Setting(format!("{name}={value}"));
    let num = || value.parse::<u32>().map_err(|_| bad());
    let flag = || value.parse::<bool>().map_err(|_| bad());
    let ms = || {
        value
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| bad())
    };
    match name {
        "max_active_uploads" => cfg.max_active_uploads = num()?,
        "upload_stall_ms" => cfg.upload_stall = ms()?,
        "allowance_peers_per_piece" => cfg.allowance_peers_per_piece = num()?,
        "unreciprocated_allowance" => cfg.unreciprocated_allowance = num()?,
        "initial_seeding_slots" => cfg.initial_seeding_slots = num()?,
        "initial_seeding_offers" => cfg.initial_seeding_offers = num()?,
        "endgame_max_requesters" => cfg.endgame_max_requesters = num()?,
        "min_pipeline" => cfg.min_pipeline = num()?,
        "pipeline_slack" => cfg.pipeline_slack = num()?,
        "unmeasured_peer_rate" => cfg.unmeasured_peer_rate = num()?,
        "regular_slots" => cfg.regular_slots = num()?,
        "optimistic_slots" => cfg.optimistic_slots = num()?,
        "random_first_pieces" => cfg.random_first_pieces = num()?,
        "demand_interest" => cfg.demand_interest = flag()?,
        "steal_when_idle" => cfg.steal_when_idle = flag()?,
        "upload_rarest_first" => cfg.upload_rarest_first = flag()?,
        "idle_slot_timeout_ms" => cfg.idle_slot_timeout = ms()?,
        "rechoke_interval_ms" => cfg.rechoke_interval = ms()?,
        "seed_slot_time_ms" => cfg.seed_slot_time = ms()?,
        "default_rtt_ms" => cfg.default_rtt = ms()?,
        "tick_interval_ms" => cfg.tick_interval = ms()?,
        _ => return Err(bad()),
    }
    Ok(())
}

/// The scenario names `scenario` knows.
pub const SCENARIOS: &[&str] = &[
    "flash-crowd-7",
    "flash-crowd-15",
    "heterogeneous",
    "churn",
    "free-rider",
    "corrupt-peer",
    "scale-1000",
];

fn base(name: &str, file_bytes: u64, peers: Vec<PeerSpec>, opts: &Options) -> Scenario {
    let mut config = Config {
        picker: opts.picker,
        choking: opts.choke,
        initial_seeding: opts.initial_seeding,
        endgame: opts.endgame,
        // Everything else as the node runs it.
        ..Config::default()
    };
    let mut initial_connections = 40;
    let mut max_connections = 80;
    for (k, v) in &opts.settings {
        // Validated by `scenario` before building.
        match (k.as_str(), v.parse::<usize>()) {
            ("initial_connections", Ok(x)) => initial_connections = x,
            ("max_connections", Ok(x)) => max_connections = x,
            _ => {
                let _ = apply_setting(&mut config, k, v);
            }
        }
    }
    Scenario {
        name: name.to_string(),
        file_bytes,
        latency: Duration::from_millis(20),
        loss: opts.loss.clamp(0.0, 1.0),
        peers,
        initial_connections,
        max_connections,
        config,
        time_limit: Duration::from_secs(600),
        check_invariants: opts.check_invariants,
    }
}

/// Builds the named scenario with the given mechanism switches.
pub fn scenario(name: &str, opts: &Options) -> Result<Scenario, SimError> {
    for (k, v) in &opts.settings {
        if k != "initial_connections" && k != "max_connections" {
            apply_setting(&mut Config::default(), k, v)?;
        }
    }
    let flash = |leechers: usize| {
        let mut peers = vec![PeerSpec::seeder(20.0, 100.0)];
        peers.extend((0..leechers).map(|_| PeerSpec::leecher(20.0, 100.0)));
        peers
    };
    let s = match name {
        "flash-crowd-7" => base(name, 32 * MIB, flash(7), opts),
        "flash-crowd-15" => base(name, 32 * MIB, flash(15), opts),
        "heterogeneous" => {
            let mut peers: Vec<PeerSpec> = [1.0, 2.0, 4.0, 8.0, 16.0]
                .iter()
                .map(|u| PeerSpec::seeder(*u, 100.0))
                .collect();
            peers.push(PeerSpec::leecher(20.0, 100.0));
            base(name, 32 * MIB, peers, opts)
        }
        "churn" => {
            // 4 seeders (10 Mbit/s), 20 leechers at the start; two seeders
            // leave at 30% progress, 3 leechers leave early, 10 leechers arrive
            // one every 2 s.
            let mut peers: Vec<PeerSpec> = (0..4)
                .map(|i| PeerSpec {
                    leave: if i < 2 {
                        Leave::AtProgress(0.3)
                    } else {
                        Leave::Never
                    },
                    ..PeerSpec::seeder(10.0, 100.0)
                })
                .collect();
            for i in 0..20 {
                let mut p = PeerSpec::leecher(20.0, 100.0);
                if i < 3 {
                    p.leave = Leave::At(6.0 + i as f64);
                    p.must_finish = false;
                }
                peers.push(p);
            }
            for i in 0..10 {
                peers.push(PeerSpec {
                    join: 2.0 + 2.0 * i as f64,
                    ..PeerSpec::leecher(20.0, 100.0)
                });
            }
            base(name, 32 * MIB, peers, opts)
        }
        "free-rider" => {
            let mut peers = flash(11);
            peers.push(PeerSpec {
                free_rider: true,
                must_finish: false,
                ..PeerSpec::leecher(20.0, 100.0)
            });
            base(name, 32 * MIB, peers, opts)
        }
        "corrupt-peer" => {
            let mut peers = flash(10);
            peers.push(PeerSpec {
                corrupt_fraction: 0.5,
                must_finish: false,
                ..PeerSpec::leecher(20.0, 100.0)
            });
            base(name, 32 * MIB, peers, opts)
        }
        "scale-1000" => base(name, 64 * MIB, flash(999), opts),
        other => match other
            .strip_prefix("flash-crowd-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            // Any size, for exploring: 1 seeder + N leechers, 32 MiB.
            Some(n) if (1..=5000).contains(&n) => base(name, 32 * MIB, flash(n), opts),
            _ => return Err(SimError::UnknownScenario(other.to_string())),
        },
    };
    Ok(s)
}

/// One peer's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct PeerReport {
    /// Index in the scenario.
    pub index: usize,
    /// "seeder", "leecher", "free-rider" or "corrupt".
    pub role: &'static str,
    /// Upload capacity, Mbit/s.
    pub up_mbit: f64,
    /// Join time, seconds.
    pub join_s: f64,
    /// Completion time since t=0, seconds (None: never completed).
    pub finish_s: Option<f64>,
    /// Piece bytes uploaded, MiB.
    pub uploaded_mib: f64,
    /// Piece bytes received, MiB.
    pub downloaded_mib: f64,
    /// Piece bytes received from seeders, MiB.
    pub from_seeders_mib: f64,
    /// How many peers banned this one.
    pub banned_by: u32,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Every peer that should finish did.
    pub completed: bool,
    /// Latest finish among peers that should finish, seconds since t=0.
    pub last_finish_s: f64,
    /// `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))` over the peers present at t=0.
    pub bound_s: f64,
    /// `last_finish_s / bound_s`.
    pub ratio_to_bound: f64,
    /// Pieces claimed or served without verified-good data (must be 0).
    pub bad_data_accepted: u64,
    /// `VerifyAndStore` for bytes never received (must be 0).
    pub protocol_errors: u64,
    /// Invariant violations seen (with `check_invariants`).
    pub invariant_errors: Vec<String>,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Events processed.
    pub events: u64,
    /// Simulated seconds at the end.
    pub sim_end_s: f64,
    /// Leechers' piece bytes uploaded / (their upload capacity × last finish).
    pub leecher_upload_utilisation: f64,
    /// When the first seeder left initial seeding, seconds (None: never ended
    /// or never started).
    pub initial_seeding_end_s: Option<f64>,
    /// Pieces a seeder started sending again while still in initial seeding.
    pub initial_seeding_duplicates: u64,
    /// Pieces the seeders uploaded / pieces in the content.
    pub seeder_upload_copies: f64,
    /// Piece bytes received that were already had, MiB.
    pub wasted_mib: f64,
    /// Hash failures over all peers.
    pub hash_failures: u32,
    /// Requests moved away after a timeout.
    pub timeouts: u32,
    /// Endgame duplicate requests.
    pub endgame_requests: u32,
    /// Requests duplicated outside endgame by idle faster peers.
    pub steals: u32,
    /// Free rider's received bytes / mean of reciprocating leechers, measured
    /// when the first reciprocating leecher completes.
    pub free_rider_ratio: Option<f64>,
    /// Per second: the fraction of live, unfinished leechers that were
    /// uploading at that instant.
    pub leecher_busy: Vec<f64>,
    /// Per-peer finish times (seconds; None: did not finish or seeder).
    pub finish_s: Vec<Option<f64>>,
    /// Per-peer details.
    pub peers: Vec<PeerReport>,
}

// ---- event queue ----

enum Ev {
    Deliver {
        from: u32,
        to: u32,
        conn: u64,
        msg: Msg,
    },
    Arrive {
        from: u32,
        to: u32,
        conn: u64,
        piece: u32,
        corrupt: bool,
    },
    FlowDone {
        flow: usize,
        version: u32,
    },
    Tick {
        peer: u32,
    },
    Join {
        peer: u32,
    },
    /// The joiner asks the tracker view for peers. Queued at its join time
    /// after every join of that instant, so peers arriving together all see
    /// each other (a random graph, not a clique of the first joiners).
    Connect {
        peer: u32,
    },
    Leave {
        peer: u32,
    },
    Sample,
}

struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.t == o.t && self.seq == o.seq
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (t, seq).
        o.t.cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

struct Flow {
    from: u32,
    to: u32,
    conn: u64,
    piece: u32,
    left: f64,
    rate: f64,
    last: u64,
    version: u32,
    corrupt: bool,
    active: bool,
}

struct Conn {
    id: u64,
    /// Last delivery time per direction (index 0: low → high peer index).
    last: [u64; 2],
}

struct Node {
    spec: PeerSpec,
    swarm: Option<Swarm>,
    alive: bool,
    conns: BTreeSet<u32>,
    banned: HashSet<u32>,
    out_flows: Vec<usize>,
    in_flows: Vec<usize>,
    next_tick: Option<u64>,
    finish: Option<u64>,
    good: Bitfield,
    sent_once: Bitfield,
    pending: Vec<(u32, u32, bool)>,
    downloaded: u64,
    from_seeders: u64,
    uploaded: u64,
    banned_by: u32,
}

struct Sim<'a> {
    sc: &'a Scenario,
    n: u32,
    piece_size: u32,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Item>,
    /// Items pushed with non-decreasing times (messages at exactly the base
    /// latency): a FIFO is already sorted, and far cheaper than the heap.
    lane: VecDeque<Item>,
    nodes: Vec<Node>,
    flows: Vec<Flow>,
    free_flows: Vec<usize>,
    conns: HashMap<(u32, u32), Conn>,
    next_conn: u64,
    alive: Vec<u32>,
    rng: ChaCha8Rng,
    work: VecDeque<(u32, Event)>,
    bad: u64,
    protocol_errors: u64,
    invariant_errors: Vec<String>,
    events: u64,
    verified_initial_leechers: u64,
    needed_initial_leechers: u64,
    progress_leaves: Vec<(u32, f64)>,
    free_rider_ratio: Option<f64>,
    initial_seeding_end: Option<u64>,
    initial_seeding_dups: u64,
    busy: Vec<f64>,
}

fn us(d: f64) -> u64 {
    (d * 1e6).round().max(0.0) as u64
}

impl<'a> Sim<'a> {
    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        let item = Item {
            t,
            seq: self.seq,
            ev,
        };
        let lat = self.sc.latency.as_micros() as u64;
        if t == self.now + lat && self.lane.back().is_none_or(|b| b.t <= t) {
            self.lane.push_back(item);
        } else {
            self.queue.push(item);
        }
    }

    /// The earliest item of the heap and the lane, by (time, sequence).
    fn pop(&mut self) -> Option<Item> {
        let lane_first = match (self.lane.front(), self.queue.peek()) {
            (Some(l), Some(h)) => (l.t, l.seq) < (h.t, h.seq),
            (Some(_), None) => true,
            _ => false,
        };
        if lane_first {
            self.lane.pop_front()
        } else {
            self.queue.pop()
        }
    }

    fn delay(&mut self) -> u64 {
        let mut d = self.sc.latency.as_micros() as u64;
        if self.sc.loss > 0.0 && self.rng.random::<f64>() < self.sc.loss {
            d += RTO.as_micros() as u64;
        }
        d
    }

    /// Delivery time for a message from `from` to `to`, FIFO per direction.
    fn deliver_at(&mut self, from: u32, to: u32) -> Option<(u64, u64)> {
        let d = self.delay();
        let key = (from.min(to), from.max(to));
        let dir = usize::from(from > to);
        let now = self.now;
        let c = self.conns.get_mut(&key)?;
        let t = (now + d).max(c.last[dir]);
        c.last[dir] = t;
        Some((t, c.id))
    }

    fn conn_id(&self, a: u32, b: u32) -> Option<u64> {
        self.conns.get(&(a.min(b), a.max(b))).map(|c| c.id)
    }

    // ---- flows ----

    fn settle(&mut self, f: usize) {
        let fl = &mut self.flows[f];
        let dt = (self.now - fl.last) as f64 / 1e6;
        fl.left = (fl.left - fl.rate * dt).max(0.0);
        fl.last = self.now;
    }

    fn set_rate(&mut self, f: usize, rate: f64) {
        self.settle(f);
        let fl = &mut self.flows[f];
        if fl.rate == rate && fl.version > 0 {
            return;
        }
        fl.rate = rate;
        fl.version += 1;
        let (version, left) = (fl.version, fl.left);
        if rate > 0.0 {
            let t = self.now + (left / rate * 1e6).ceil() as u64;
            self.push(t, Ev::FlowDone { flow: f, version });
        }
    }

    /// Water-fills `to`'s download capacity over its incoming flows, each
    /// capped by its uploader's equal share.
    fn waterfill(&mut self, to: u32) {
        let flows = self.nodes[to as usize].in_flows.clone();
        if flows.is_empty() {
            return;
        }
        let mut caps: Vec<(f64, usize)> = flows
            .iter()
            .map(|&f| {
                let from = &self.nodes[self.flows[f].from as usize];
                (from.spec.up / from.out_flows.len().max(1) as f64, f)
            })
            .collect();
        caps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut remaining = self.nodes[to as usize].spec.down;
        let mut left = caps.len();
        for (cap, f) in caps {
            let r = cap.min(remaining / left as f64);
            remaining -= r;
            left -= 1;
            self.set_rate(f, r);
        }
    }

    fn flows_changed(&mut self, from: u32, to: u32) {
        let mut tos: Vec<u32> = self.nodes[from as usize]
            .out_flows
            .iter()
            .map(|&f| self.flows[f].to)
            .collect();
        tos.push(to);
        tos.sort_unstable();
        tos.dedup();
        for t in tos {
            self.waterfill(t);
        }
    }

    fn start_flow(&mut self, from: u32, to: u32, piece: u32) {
        let Some(conn) = self.conn_id(from, to) else {
            return;
        };
        let spec = &self.nodes[from as usize].spec;
        let corrupt =
            spec.corrupt_fraction > 0.0 && corrupt_hash(from, piece) < spec.corrupt_fraction;
        let flow = Flow {
            from,
            to,
            conn,
            piece,
            left: self.piece_size as f64,
            rate: 0.0,
            last: self.now,
            version: 0,
            corrupt,
            active: true,
        };
        let f = if let Some(f) = self.free_flows.pop() {
            let v = self.flows[f].version;
            self.flows[f] = Flow {
                version: v + 1,
                ..flow
            };
            f
        } else {
            self.flows.push(flow);
            self.flows.len() - 1
        };
        self.nodes[from as usize].out_flows.push(f);
        self.nodes[to as usize].in_flows.push(f);
        self.flows_changed(from, to);
    }

    fn end_flow(&mut self, f: usize) {
        let (from, to) = (self.flows[f].from, self.flows[f].to);
        self.flows[f].active = false;
        self.flows[f].version += 1;
        self.nodes[from as usize].out_flows.retain(|x| *x != f);
        self.nodes[to as usize].in_flows.retain(|x| *x != f);
        self.free_flows.push(f);
        self.flows_changed(from, to);
    }

    // ---- peers and connections ----

    fn connect(&mut self, a: u32, b: u32) -> bool {
        let max = self.sc.max_connections;
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        if a == b
            || !na.alive
            || !nb.alive
            || na.conns.contains(&b)
            || na.banned.contains(&b)
            || nb.banned.contains(&a)
            || na.conns.len() >= max
            || nb.conns.len() >= max
        {
            return false;
        }
        self.next_conn += 1;
        self.conns.insert(
            (a.min(b), a.max(b)),
            Conn {
                id: self.next_conn,
                last: [0, 0],
            },
        );
        self.nodes[a as usize].conns.insert(b);
        self.nodes[b as usize].conns.insert(a);
        self.work.push_back((
            a,
            Event::PeerConnected {
                peer: PeerKey(b),
                outbound: true,
            },
        ));
        self.work.push_back((
            b,
            Event::PeerConnected {
                peer: PeerKey(a),
                outbound: false,
            },
        ));
        true
    }

    /// Connects `a` to up to `want` random live peers (the tracker view).
    fn find_peers(&mut self, a: u32, want: usize) {
        let mut made = 0;
        let tries = want * 4 + 8;
        for _ in 0..tries {
            if made >= want || self.alive.len() < 2 {
                break;
            }
            let b = self.alive[self.rng.random_range(0..self.alive.len())];
            if self.connect(a, b) {
                made += 1;
            }
        }
    }

    /// Closes the a–b connection; `notify` peers get `PeerDisconnected`.
    fn disconnect(&mut self, a: u32, b: u32, notify_a: bool, notify_b: bool) {
        if self.conns.remove(&(a.min(b), a.max(b))).is_none() {
            return;
        }
        self.nodes[a as usize].conns.remove(&b);
        self.nodes[b as usize].conns.remove(&a);
        let mut dead: Vec<usize> = Vec::new();
        for &f in self.nodes[a as usize]
            .out_flows
            .iter()
            .chain(self.nodes[a as usize].in_flows.iter())
        {
            let fl = &self.flows[f];
            if (fl.from == a && fl.to == b) || (fl.from == b && fl.to == a) {
                dead.push(f);
            }
        }
        for f in dead {
            self.end_flow(f);
        }
        if notify_a {
            self.work
                .push_back((a, Event::PeerDisconnected { peer: PeerKey(b) }));
        }
        if notify_b {
            self.work
                .push_back((b, Event::PeerDisconnected { peer: PeerKey(a) }));
        }
    }

    fn join(&mut self, p: u32) -> Result<(), SimError> {
        let node = &self.nodes[p as usize];
        let have = if node.spec.seed {
            Bitfield::full(self.n)
        } else {
            Bitfield::new(self.n)
        };
        let cfg = Config {
            serve_uploads: !node.spec.free_rider,
            max_peers: self.sc.max_connections as u32,
            piece_size: self.piece_size,
            ..self.sc.config.clone()
        };
        let seed = self.rng.random::<u64>();
        let swarm =
            Swarm::new(cfg, self.n, have.clone(), seed).map_err(|source| SimError::Swarm {
                peer: p as usize,
                source,
            })?;
        let node = &mut self.nodes[p as usize];
        node.good = have;
        node.swarm = Some(swarm);
        node.alive = true;
        self.alive.push(p);
        // Connecting waits until every peer joining at this instant is in
        // the tracker view (items of equal time pop in push order).
        self.push(self.now, Ev::Connect { peer: p });
        self.work.push_back((p, Event::Tick));
        Ok(())
    }

    fn leave(&mut self, p: u32) {
        if !self.nodes[p as usize].alive {
            return;
        }
        let peers: Vec<u32> = self.nodes[p as usize].conns.iter().copied().collect();
        for q in peers {
            self.disconnect(p, q, false, true);
        }
        let node = &mut self.nodes[p as usize];
        node.alive = false;
        node.swarm = None;
        node.next_tick = None;
        self.alive.retain(|x| *x != p);
    }

    // ---- driving the schedulers ----

    fn run_work(&mut self) {
        while let Some((p, ev)) = self.work.pop_front() {
            let now = Duration::from_micros(self.now);
            let check = self.sc.check_invariants;
            let Some(swarm) = self.nodes[p as usize].swarm.as_mut() else {
                continue;
            };
            self.events += 1;
            swarm.handle(ev, now);
            if check {
                if let Err(e) = swarm.check_invariants() {
                    if self.invariant_errors.len() < 10 {
                        self.invariant_errors.push(format!("peer {p}: {e}"));
                    }
                }
            }
            let mut actions = Vec::new();
            while let Some(a) = swarm.poll_action() {
                actions.push(a);
            }
            let next = swarm
                .poll_timeout()
                .map(|t| (t.as_micros() as u64).max(self.now));
            let seeding_ended = !swarm.initial_seeding() && swarm.config().initial_seeding;
            if seeding_ended
                && self.nodes[p as usize].spec.seed
                && self.initial_seeding_end.is_none()
            {
                self.initial_seeding_end = Some(self.now);
            }
            for a in actions {
                self.apply(p, a);
            }
            if let Some(t) = next {
                let node = &mut self.nodes[p as usize];
                if node.alive && node.next_tick != Some(t) {
                    node.next_tick = Some(t);
                    self.push(t, Ev::Tick { peer: p });
                }
            }
        }
    }

    fn apply(&mut self, p: u32, a: Action) {
        match a {
            Action::Send { peer, msg } => {
                if let Some((t, conn)) = self.deliver_at(p, peer.0) {
                    self.push(
                        t,
                        Ev::Deliver {
                            from: p,
                            to: peer.0,
                            conn,
                            msg,
                        },
                    );
                }
            }
            Action::SendPiece { peer, piece } => {
                let node = &mut self.nodes[p as usize];
                if !node.good.get(piece) {
                    self.bad += 1;
                }
                if node.spec.seed
                    && node.swarm.as_ref().is_some_and(|s| s.initial_seeding())
                    && !node.sent_once.set(piece)
                {
                    self.initial_seeding_dups += 1;
                }
                self.start_flow(p, peer.0, piece);
            }
            Action::VerifyAndStore { piece, from } => {
                let node = &mut self.nodes[p as usize];
                let Some(i) = node
                    .pending
                    .iter()
                    .position(|x| x.0 == from.0 && x.1 == piece)
                else {
                    self.protocol_errors += 1;
                    return;
                };
                let (_, _, corrupt) = node.pending.swap_remove(i);
                if corrupt {
                    self.work.push_back((p, Event::PieceFailed { piece, from }));
                } else {
                    node.good.set(piece);
                    if !node.spec.seed && node.spec.join == 0.0 {
                        self.verified_initial_leechers += 1;
                        self.check_progress_leaves();
                    }
                    self.work
                        .push_back((p, Event::PieceVerified { piece, from }));
                }
            }
            Action::Ban { peer } => {
                self.nodes[p as usize].banned.insert(peer.0);
                self.nodes[peer.0 as usize].banned_by += 1;
            }
            Action::Disconnect { peer, .. } => self.disconnect(p, peer.0, false, true),
            Action::WantPeers { n } => self.find_peers(p, n as usize),
            Action::Complete => {
                let node = &mut self.nodes[p as usize];
                if node.finish.is_none() {
                    node.finish = Some(self.now);
                }
                if self.free_rider_ratio.is_none() && !node.spec.free_rider && !node.spec.seed {
                    self.snapshot_free_rider();
                }
            }
        }
    }

    fn snapshot_free_rider(&mut self) {
        let riders: Vec<f64> = self
            .nodes
            .iter()
            .filter(|n| n.spec.free_rider)
            .map(|n| n.downloaded as f64)
            .collect();
        if riders.is_empty() {
            return;
        }
        let others: Vec<f64> = self
            .nodes
            .iter()
            .filter(|n| !n.spec.free_rider && !n.spec.seed && n.spec.corrupt_fraction == 0.0)
            .map(|n| n.downloaded as f64)
            .collect();
        let mean_others = others.iter().sum::<f64>() / others.len().max(1) as f64;
        let mean_riders = riders.iter().sum::<f64>() / riders.len() as f64;
        if mean_others > 0.0 {
            self.free_rider_ratio = Some(mean_riders / mean_others);
        }
    }

    fn check_progress_leaves(&mut self) {
        if self.needed_initial_leechers == 0 {
            return;
        }
        let progress = self.verified_initial_leechers as f64 / self.needed_initial_leechers as f64;
        let now = self.now;
        let due: Vec<u32> = self
            .progress_leaves
            .iter()
            .filter(|(_, f)| progress >= *f)
            .map(|(p, _)| *p)
            .collect();
        if due.is_empty() {
            return;
        }
        self.progress_leaves.retain(|(_, f)| progress < *f);
        for p in due {
            self.push(now, Ev::Leave { peer: p });
        }
    }

    fn done(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.spec.must_finish)
            .all(|n| n.finish.is_some())
    }
}

/// A fixed pseudo-random number in [0, 1) for (peer, piece): which pieces a
/// liar corrupts.
fn corrupt_hash(peer: u32, piece: u32) -> f64 {
    let mut x = (u64::from(peer) << 32 | u64::from(piece)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The P2P lower bound `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))` for the peers
/// present at t=0 (u_s: total seeder upload; N, u_i, d_min over leechers).
pub fn bound_seconds(sc: &Scenario) -> f64 {
    let f = sc.file_bytes as f64;
    let start: Vec<&PeerSpec> = sc.peers.iter().filter(|p| p.join == 0.0).collect();
    let u_s: f64 = start.iter().filter(|p| p.seed).map(|p| p.up).sum();
    let leechers: Vec<&&PeerSpec> = start.iter().filter(|p| !p.seed).collect();
    let sum_u: f64 = leechers.iter().map(|p| p.up).sum();
    let d_min = leechers
        .iter()
        .map(|p| p.down)
        .fold(f64::INFINITY, f64::min);
    let n = leechers.len() as f64;
    let mut b = f / u_s;
    if d_min.is_finite() {
        b = b.max(f / d_min);
    }
    b.max(n * f / (u_s + sum_u))
}

/// Runs `sc` with `seed`; deterministic for a given (scenario, seed).
pub fn run(sc: &Scenario, seed: u64) -> Result<Report, SimError> {
    let wall = Instant::now();
    let piece_size = sc.config.piece_size;
    let n = sc.file_bytes.div_ceil(u64::from(piece_size)) as u32;
    let nodes = sc
        .peers
        .iter()
        .map(|spec| Node {
            spec: spec.clone(),
            swarm: None,
            alive: false,
            conns: BTreeSet::new(),
            banned: HashSet::new(),
            out_flows: Vec::new(),
            in_flows: Vec::new(),
            next_tick: None,
            finish: None,
            good: Bitfield::new(n),
            sent_once: Bitfield::new(n),
            pending: Vec::new(),
            downloaded: 0,
            from_seeders: 0,
            uploaded: 0,
            banned_by: 0,
        })
        .collect();
    let initial_leechers = sc.peers.iter().filter(|p| !p.seed && p.join == 0.0).count() as u64;
    let mut sim = Sim {
        sc,
        n,
        piece_size,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        lane: VecDeque::new(),
        nodes,
        flows: Vec::new(),
        free_flows: Vec::new(),
        conns: HashMap::new(),
        next_conn: 0,
        alive: Vec::new(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        work: VecDeque::new(),
        bad: 0,
        protocol_errors: 0,
        invariant_errors: Vec::new(),
        events: 0,
        verified_initial_leechers: 0,
        needed_initial_leechers: initial_leechers * u64::from(n),
        progress_leaves: sc
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.leave {
                Leave::AtProgress(f) => Some((i as u32, f)),
                _ => None,
            })
            .collect(),
        free_rider_ratio: None,
        initial_seeding_end: None,
        initial_seeding_dups: 0,
        busy: Vec::new(),
    };
    sim.push(1_000_000, Ev::Sample);
    for (i, p) in sc.peers.iter().enumerate() {
        sim.push(us(p.join), Ev::Join { peer: i as u32 });
        if let Leave::At(t) = p.leave {
            sim.push(us(t), Ev::Leave { peer: i as u32 });
        }
    }
    let limit = sc.time_limit.as_micros() as u64;
    while let Some(item) = sim.pop() {
        if item.t > limit {
            break;
        }
        sim.now = item.t;
        match item.ev {
            Ev::Join { peer } => sim.join(peer)?,
            Ev::Connect { peer } => {
                if sim.nodes[peer as usize].alive {
                    let want = sc.initial_connections;
                    sim.find_peers(peer, want);
                }
            }
            Ev::Sample => {
                let (mut busy, mut all) = (0usize, 0usize);
                for n in sim
                    .nodes
                    .iter()
                    .filter(|n| n.alive && !n.spec.seed && n.finish.is_none())
                {
                    all += 1;
                    busy += usize::from(!n.out_flows.is_empty());
                }
                sim.busy.push(busy as f64 / all.max(1) as f64);
                sim.push(item.t + 1_000_000, Ev::Sample);
            }
            Ev::Leave { peer } => sim.leave(peer),
            Ev::Tick { peer } => {
                let node = &sim.nodes[peer as usize];
                if node.alive && node.next_tick == Some(item.t) {
                    sim.nodes[peer as usize].next_tick = None;
                    sim.work.push_back((peer, Event::Tick));
                }
            }
            Ev::Deliver {
                from,
                to,
                conn,
                msg,
            } => {
                if sim.conn_id(from, to) == Some(conn) {
                    // Like the node: a Cancel of a request still queued is
                    // answered with Reject (one being sent, by the piece).
                    let reject = match msg {
                        Msg::Cancel { piece } => sim.nodes[to as usize]
                            .swarm
                            .as_ref()
                            .is_some_and(|s| s.upload_queued(PeerKey(from), piece))
                            .then_some(piece),
                        _ => None,
                    };
                    sim.work.push_back((
                        to,
                        Event::Message {
                            peer: PeerKey(from),
                            msg,
                        },
                    ));
                    if let Some(piece) = reject {
                        sim.apply(
                            to,
                            Action::Send {
                                peer: PeerKey(from),
                                msg: Msg::Reject { piece },
                            },
                        );
                    }
                }
            }
            Ev::Arrive {
                from,
                to,
                conn,
                piece,
                corrupt,
            } => {
                if sim.conn_id(from, to) == Some(conn) {
                    sim.nodes[to as usize].downloaded += u64::from(piece_size);
                    if sim.nodes[from as usize].spec.seed {
                        sim.nodes[to as usize].from_seeders += u64::from(piece_size);
                    }
                    sim.nodes[to as usize].pending.push((from, piece, corrupt));
                    sim.work.push_back((
                        to,
                        Event::Message {
                            peer: PeerKey(from),
                            msg: Msg::Piece { piece },
                        },
                    ));
                    sim.run_work();
                    // Bytes the scheduler did not ask to store are dropped.
                    sim.nodes[to as usize]
                        .pending
                        .retain(|x| !(x.0 == from && x.1 == piece));
                }
            }
            Ev::FlowDone { flow, version } => {
                let fl = &sim.flows[flow];
                if fl.active && fl.version == version {
                    let (from, to, conn, piece, corrupt) =
                        (fl.from, fl.to, fl.conn, fl.piece, fl.corrupt);
                    sim.end_flow(flow);
                    sim.nodes[from as usize].uploaded += u64::from(piece_size);
                    if let Some((t, _)) = sim.deliver_at(from, to) {
                        sim.push(
                            t,
                            Ev::Arrive {
                                from,
                                to,
                                conn,
                                piece,
                                corrupt,
                            },
                        );
                    }
                    sim.work.push_back((
                        from,
                        Event::UploadDone {
                            peer: PeerKey(to),
                            piece,
                        },
                    ));
                }
            }
        }
        sim.run_work();
        if sim.done() {
            break;
        }
    }
    // Final audit: every piece a scheduler claims must be stored verified-good.
    for node in &sim.nodes {
        if let Some(s) = &node.swarm {
            for p in s.have().ones() {
                if !node.good.get(p) {
                    sim.bad += 1;
                }
            }
        }
    }
    Ok(report(sim, seed, wall))
}

fn report(sim: Sim<'_>, seed: u64, wall: Instant) -> Report {
    let sc = sim.sc;
    let bound = bound_seconds(sc);
    let completed = sim.done();
    let last = sim
        .nodes
        .iter()
        .filter(|n| n.spec.must_finish)
        .filter_map(|n| n.finish)
        .max()
        .unwrap_or(sim.now) as f64
        / 1e6;
    let mut stats = shoal_swarm::Stats::default();
    for n in &sim.nodes {
        if let Some(s) = &n.swarm {
            let st = s.stats();
            stats.wasted += st.wasted;
            stats.hash_failures += st.hash_failures;
            stats.timeouts += st.timeouts;
            stats.endgame_requests += st.endgame_requests;
            stats.steals += st.steals;
        }
    }
    let seeder_up: u64 = sim
        .nodes
        .iter()
        .filter(|n| n.spec.seed)
        .map(|n| n.uploaded)
        .sum();
    let lu: f64 = sim
        .nodes
        .iter()
        .filter(|n| !n.spec.seed)
        .map(|n| n.uploaded as f64)
        .sum();
    let lcap: f64 = sim
        .nodes
        .iter()
        .filter(|n| !n.spec.seed && !n.spec.free_rider)
        .map(|n| n.spec.up)
        .sum();
    let content = sim.n as f64 * f64::from(sim.piece_size);
    let peers: Vec<PeerReport> = sim
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| PeerReport {
            index: i,
            role: if n.spec.seed {
                "seeder"
            } else if n.spec.free_rider {
                "free-rider"
            } else if n.spec.corrupt_fraction > 0.0 {
                "corrupt"
            } else {
                "leecher"
            },
            up_mbit: n.spec.up / MBIT,
            join_s: n.spec.join,
            finish_s: n.finish.map(|t| t as f64 / 1e6),
            uploaded_mib: n.uploaded as f64 / MIB as f64,
            downloaded_mib: n.downloaded as f64 / MIB as f64,
            from_seeders_mib: n.from_seeders as f64 / MIB as f64,
            banned_by: n.banned_by,
        })
        .collect();
    Report {
        scenario: sc.name.clone(),
        seed,
        completed,
        last_finish_s: last,
        bound_s: bound,
        ratio_to_bound: last / bound,
        bad_data_accepted: sim.bad,
        protocol_errors: sim.protocol_errors,
        invariant_errors: sim.invariant_errors,
        wall_s: wall.elapsed().as_secs_f64(),
        events: sim.events,
        sim_end_s: sim.now as f64 / 1e6,
        leecher_upload_utilisation: lu / (lcap * last).max(1.0),
        initial_seeding_duplicates: sim.initial_seeding_dups,
        leecher_busy: sim
            .busy
            .iter()
            .map(|b| (b * 1000.0).round() / 1000.0)
            .collect(),
        initial_seeding_end_s: sim.initial_seeding_end.map(|t| t as f64 / 1e6),
        seeder_upload_copies: seeder_up as f64 / content,
        wasted_mib: stats.wasted as f64 / MIB as f64,
        hash_failures: stats.hash_failures,
        timeouts: stats.timeouts,
        endgame_requests: stats.endgame_requests,
        steals: stats.steals,
        free_rider_ratio: sim.free_rider_ratio,
        finish_s: peers
            .iter()
            .map(|p| if p.role == "seeder" { None } else { p.finish_s })
            .collect(),
        peers,
    }
}
