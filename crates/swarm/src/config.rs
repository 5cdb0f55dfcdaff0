//! Scheduler tuning knobs. Defaults are the values the simulator was tuned with.

use std::time::Duration;

/// How the picker orders the pieces it may request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PickerMode {
    /// Rarest first with a random tie-break (the default).
    RarestFirst,
    /// Uniformly random (ablation).
    Random,
    /// Lowest index first (ablation; for streaming use `Event::SetSequential`).
    Sequential,
}

/// Scheduler configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Piece size in bytes (for rates and pipeline depth). Default 256 KiB.
    pub piece_size: u32,
    /// Piece ordering.
    pub picker: PickerMode,
    /// Until this many pieces are complete, pick at random (get something to
    /// trade quickly). Default 4.
    pub random_first_pieces: u32,
    /// Width of the sequential window (pieces) in streaming mode. Default 16.
    pub sequential_window: u32,
    /// Minimum requests in flight per unchoking peer. Default 1: uploaders
    /// serve one piece at a time round-robin, so their queues already hold a
    /// request per unchoked peer; a deeper minimum piles requests for fresh
    /// pieces on their first holders (measured in the simulator).
    pub min_pipeline: u32,
    /// Requests kept beyond the bandwidth-delay product: depth =
    /// `ceil(rate × rtt / piece_size) + pipeline_slack`. Default 1.
    pub pipeline_slack: u32,
    /// Maximum requests in flight per peer. Default 64 (16 MiB at 256 KiB).
    pub max_pipeline: u32,
    /// Round-trip assumed before one is measured. Default 100 ms.
    pub default_rtt: Duration,
    /// A request with no piece from that peer for this long moves to other
    /// peers. Default 15 s.
    pub request_timeout: Duration,
    /// An unchoking peer that delivers nothing for this long while we wait is
    /// snubbed: one request at a time and no regular unchoke. Default 60 s.
    pub snub_timeout: Duration,
    /// Duplicate the last outstanding requests near the end. Default on.
    pub endgame: bool,
    /// In endgame, at most this many peers are asked for the same piece. Default 3.
    pub endgame_max_requesters: u32,
    /// Outside endgame too, a peer that unchokes us but has nothing new to
    /// offer and no request in flight takes over a request it would deliver
    /// sooner than the peer holding it (same rule as endgame). The request
    /// *moves*: the slower peer gets `Cancel` and the piece is asked of the
    /// idle peer only once the slower one answers `Reject`; if it answers
    /// with the piece instead (it had started sending), the move is off, so
    /// no piece is sent twice. Default on: idle uploaders take work from
    /// long queues (scale-1000 with `demand_interest`, seeds 1–3: see
    /// docs/benchmarks.md).
    pub steal_when_idle: bool,
    /// Pieces per second assumed for a peer that has not sent us a piece
    /// yet, when estimating when a request would arrive (endgame duplicates
    /// and request moves). Default 4 (1 MiB/s at 256 KiB pieces): with 1, a
    /// peer that just unchoked us looked a second away and rarely took over
    /// a late request (scale-1000, seeds 1–3: 1.146–1.150 vs 1.149–1.151).
    pub unmeasured_peer_rate: u32,
    /// Interest follows demand: we are interested in a peer only while it
    /// has a piece nobody was asked for yet, holds requests of ours, or we
    /// are in endgame — not merely because it has a piece we lack that is
    /// already on its way from someone else. Fresh holders then unchoke peers
    /// that will actually ask, and idle slot holders let go at once.
    /// Default on (scale-1000 on a random peer graph: 1.157 of the bound vs
    /// 1.173 without). The first request to a peer is preceded by
    /// `Interested` even when the update pass has not run yet.
    pub demand_interest: bool,
    /// Use the choker; when off every interested peer is unchoked (ablation).
    pub choking: bool,
    /// Regular upload slots. Default 4.
    pub regular_slots: u32,
    /// Optimistic upload slots. Default 1.
    pub optimistic_slots: u32,
    /// While leeching, a peer that chokes us is served at most this many
    /// pieces more than it has sent us; then it loses its slot (regular or
    /// optimistic) and its requests are rejected until it sends us
    /// something. Bootstraps newcomers without feeding free riders. Default 4;
    /// `u32::MAX` disables the limit.
    pub unreciprocated_allowance: u32,
    /// The allowance grows to one piece per this many connected peers when
    /// that is more (a busy neighbour among many picks us rarely).
    /// Default 4 (80 peers: 20 pieces).
    pub allowance_peers_per_piece: u32,
    /// When our upload is idle, a slot holder that has asked for nothing for
    /// this long yields its slot to a waiting interested peer. Default
    /// 200 ms (a few round trips): a peer unchoked by several holders of a
    /// piece asks only one of them, and in a large swarm every idle moment
    /// of an uploader becomes backlog (scale-1000, seeds 1–3: 1.254–1.265
    /// of the bound vs 1.269–1.290 with 1 s checked every 500 ms).
    pub idle_slot_timeout: Duration,
    /// Regular slots are re-chosen this often. Default 10 s.
    pub rechoke_interval: Duration,
    /// The optimistic unchoke rotates this often. Default 30 s.
    pub optimistic_interval: Duration,
    /// Peers connected for less than this are favoured for optimistic unchoke.
    /// Default 60 s.
    pub new_peer_age: Duration,
    /// Weight of a new peer in the optimistic draw (others weigh 1). Default 3.
    pub new_peer_weight: u32,
    /// When seeding, a peer keeps a regular slot at most this long while others
    /// wait. Default 20 s.
    pub seed_slot_time: Duration,
    /// Initial seeding (super-seeding): a seeder reveals pieces one peer at a
    /// time so that no piece goes out twice while others have not gone out once.
    /// Default on.
    pub initial_seeding: bool,
    /// Regular slots while initial seeding: fresh pieces spread fastest when
    /// every peer gets its own to trade, so a super-seeder serves many peers
    /// at once (its uploads are still capped by `max_active_uploads`).
    /// Default 64.
    pub initial_seeding_slots: u32,
    /// Pieces revealed to one unchoked peer at a time during initial seeding.
    /// Default 4.
    pub initial_seeding_offers: u32,
    /// Serve uploads at all. Off makes a leech-only node (the free rider).
    pub serve_uploads: bool,
    /// Pieces being sent at once over all peers; more wait in per-peer queues
    /// served round-robin. One at a time finishes each piece soonest, so it can
    /// be forwarded sooner; the next starts when the driver reports
    /// `UploadDone`, so the link never idles while requests are queued.
    /// Default 1.
    pub max_active_uploads: u32,
    /// An upload not reported done this long after it started gives its
    /// shared slot back: the peer reads slowly (or not at all), and is then
    /// served one piece at a time outside the shared slots, at its own pace,
    /// until a piece reaches it within this time again. So no peer can hold
    /// the others' uploads hostage. Default 1 s.
    pub upload_stall: Duration,
    /// Requests a remote may have queued with us; more are rejected. Default 128.
    pub max_remote_requests: u32,
    /// Failed pieces from one peer before it is banned. Default 2.
    pub ban_threshold: u32,
    /// Most peers kept; more are disconnected. Default 80.
    pub max_peers: u32,
    /// Below this many peers, ask the driver for more. Default 30.
    pub min_peers: u32,
    /// Most banned peer keys remembered. Default 4096.
    pub max_banned: u32,
    /// Interval of `Event::Tick`. Default 100 ms, so that idle slots rotate
    /// soon after `idle_slot_timeout`.
    pub tick_interval: Duration,
    /// Upload queues are served rarest piece first instead of FIFO, so the
    /// freshest pieces spread first. Default on.
    pub upload_rarest_first: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            piece_size: 256 * 1024,
            picker: PickerMode::RarestFirst,
            random_first_pieces: 4,
            sequential_window: 16,
            min_pipeline: 1,
            pipeline_slack: 1,
            max_pipeline: 64,
            default_rtt: Duration::from_millis(100),
            request_timeout: Duration::from_secs(15),
            snub_timeout: Duration::from_secs(60),
            endgame: true,
            endgame_max_requesters: 3,
            steal_when_idle: true,
            unmeasured_peer_rate: 4,
            demand_interest: true,
            choking: true,
            regular_slots: 4,
            optimistic_slots: 1,
            unreciprocated_allowance: 4,
            allowance_peers_per_piece: 4,
            idle_slot_timeout: Duration::from_millis(200),
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            new_peer_age: Duration::from_secs(60),
            new_peer_weight: 3,
            seed_slot_time: Duration::from_secs(20),
            initial_seeding: true,
            initial_seeding_slots: 64,
            initial_seeding_offers: 4,
            serve_uploads: true,
            max_active_uploads: 1,
            upload_stall: Duration::from_secs(1),
            max_remote_requests: 128,
            ban_threshold: 2,
            max_peers: 80,
            min_peers: 30,
            max_banned: 4096,
            tick_interval: Duration::from_millis(100),
            upload_rarest_first: true,
        }
    }
}
