//! Who a folder's sessions serve: tit-for-tat choking across a whole
//! collection (protocol §6.5), with the knobs of the content scheduler's
//! choker (`shoal_swarm::Config`).
//!
//! Sans-IO: the folder calls it under its lock with the peers that want its
//! files and their byte counts, and each session sends `Choke` / `Unchoke`
//! to match [`Choker::unchoked`]. While downloading, the regular slots go to
//! the peers that sent this node the most file bytes over the last round;
//! while seeding, to those it sent the most (they download fastest). One
//! optimistic slot rotates among the others, newcomers weighted, so that a
//! peer with nothing to give yet gets started and a better partner can be
//! found. A peer that becomes interested while a slot is free takes it at
//! once, as does every new session while one is free: a small swarm never
//! waits for a round.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use rand::Rng;

/// The choker's settings, from the node's scheduler settings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChokeCfg {
    /// Off: every peer is unchoked.
    pub on: bool,
    pub regular: usize,
    /// Regular slots while this node has every file (it serves more peers
    /// at once, as the content scheduler does while initial seeding).
    pub seeding: usize,
    pub optimistic: usize,
    pub round: Duration,
    pub optimistic_round: Duration,
    /// A peer connected for less than this is favoured (weight 3) in the
    /// optimistic draw.
    pub new_peer_age: Duration,
}

impl ChokeCfg {
    pub(crate) fn of(c: &shoal_swarm::Config) -> Self {
        Self {
            on: c.choking,
            regular: c.regular_slots as usize,
            seeding: if c.initial_seeding {
                c.initial_seeding_slots as usize
            } else {
                c.regular_slots as usize
            },
            optimistic: c.optimistic_slots.min(1) as usize,
            round: c.rechoke_interval,
            optimistic_round: c.optimistic_interval,
            new_peer_age: c.new_peer_age,
        }
    }

    fn slots(&self, seeding: bool) -> usize {
        if seeding {
            self.seeding
        } else {
            self.regular
        }
    }
}

/// A peer that wants files of this node, at a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub peer: PeerId,
    /// File bytes received from it (`down`) and sent to it (`up`), in all.
    pub down: u64,
    pub up: u64,
    /// When its first session with this folder started.
    pub since: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Choker {
    cfg: ChokeCfg,
    regular: Vec<PeerId>,
    optimistic: Option<PeerId>,
    next_round: Option<Instant>,
    next_optimistic: Option<Instant>,
    /// Each candidate's byte counts at the last round (rates are the
    /// difference).
    last: HashMap<PeerId, (u64, u64)>,
}

impl Choker {
    pub(crate) fn new(cfg: ChokeCfg) -> Self {
        Self {
            cfg,
            regular: Vec::new(),
            optimistic: None,
            next_round: None,
            next_optimistic: None,
            last: HashMap::new(),
        }
    }

    /// Whether `peer` may ask for files and pieces now.
    pub(crate) fn unchoked(&self, peer: &PeerId) -> bool {
        !self.cfg.on || self.optimistic.as_ref() == Some(peer) || self.regular.contains(peer)
    }

    /// Peers unchoked now (with `on`; with it off, every peer is).
    #[cfg(test)]
    pub(crate) fn holders(&self) -> usize {
        self.regular.len() + usize::from(self.optimistic.is_some())
    }

    /// `peer` wants files and is choked: it takes a free slot, if any.
    pub(crate) fn fill(&mut self, peer: PeerId, seeding: bool) -> bool {
        if self.unchoked(&peer) {
            return true;
        }
        if self.regular.len() < self.cfg.slots(seeding) {
            self.regular.push(peer);
            return true;
        }
        if self.optimistic.is_none() && self.cfg.optimistic > 0 {
            self.optimistic = Some(peer);
            return true;
        }
        false
    }

    /// `peer` no longer wants anything: its slot is free.
    pub(crate) fn leave(&mut self, peer: &PeerId) {
        self.regular.retain(|p| p != peer);
        if self.optimistic.as_ref() == Some(peer) {
            self.optimistic = None;
        }
    }

    /// `peer`'s last session ended.
    pub(crate) fn gone(&mut self, peer: &PeerId) {
        self.leave(peer);
        self.last.remove(peer);
    }

    /// Whether a round is due (the first one is one round after the first
    /// peer arrived).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if !self.cfg.on {
            return false;
        }
        match self.next_round {
            None => {
                self.next_round = Some(now + self.cfg.round);
                false
            }
            Some(t) => now >= t,
        }
    }

    /// Re-chooses every slot among `cands` (the peers that want files of
    /// this node; every other peer is choked).
    pub(crate) fn round(&mut self, now: Instant, seeding: bool, cands: &[Cand]) {
        self.next_round = Some(now + self.cfg.round);
        let mut rng = rand::rng();
        let mut ranked: Vec<(u64, u64, PeerId)> = cands
            .iter()
            .map(|c| {
                let (d0, u0) = self.last.get(&c.peer).copied().unwrap_or((0, 0));
                let rate = if seeding {
                    c.up.saturating_sub(u0)
                } else {
                    c.down.saturating_sub(d0)
                };
                (rate, rng.random::<u64>(), c.peer)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for c in cands {
            self.last.insert(c.peer, (c.down, c.up));
        }
        self.regular = ranked
            .iter()
            .take(self.cfg.slots(seeding))
            .map(|r| r.2)
            .collect();
        let keep = self.optimistic.filter(|p| {
            !self.regular.contains(p)
                && cands.iter().any(|c| c.peer == *p)
                && self.next_optimistic.is_some_and(|t| now < t)
        });
        self.optimistic = match keep {
            Some(p) => Some(p),
            None if self.cfg.optimistic > 0 => {
                self.next_optimistic = Some(now + self.cfg.optimistic_round);
                let pool: Vec<(PeerId, u32)> = cands
                    .iter()
                    .filter(|c| !self.regular.contains(&c.peer))
                    .map(|c| {
                        let young = now.duration_since(c.since) < self.cfg.new_peer_age;
                        (c.peer, if young { 3 } else { 1 })
                    })
                    .collect();
                let total: u32 = pool.iter().map(|p| p.1).sum();
                if total == 0 {
                    None
                } else {
                    let mut r = rng.random_range(0..total);
                    pool.into_iter()
                        .find(|(_, w)| {
                            if r < *w {
                                true
                            } else {
                                r -= w;
                                false
                            }
                        })
                        .map(|p| p.0)
                }
            }
            None => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ChokeCfg {
        ChokeCfg {
            on: true,
            regular: 2,
            seeding: 3,
            optimistic: 1,
            round: Duration::from_secs(10),
            optimistic_round: Duration::from_secs(30),
            new_peer_age: Duration::from_secs(60),
        }
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn free_slots_are_taken_at_once_then_peers_wait() {
        let mut c = Choker::new(cfg());
        let p = peers(5);
        assert!(c.fill(p[0], false));
        assert!(c.fill(p[1], false));
        assert!(c.fill(p[2], false), "the optimistic slot");
        assert!(!c.fill(p[3], false));
        assert!(!c.unchoked(&p[3]));
        assert_eq!(c.holders(), 3);
        c.leave(&p[1]);
        assert!(c.fill(p[3], false));
        // Seeding has more regular slots.
        assert!(c.fill(p[4], true));
        assert_eq!(c.holders(), 4);
    }

    #[test]
    fn a_round_gives_regular_slots_to_the_best_givers_and_chokes_the_rest() {
        let mut c = Choker::new(cfg());
        let p = peers(5);
        let t0 = Instant::now();
        for q in &p {
            c.fill(*q, false);
        }
        assert!(
            !c.due(t0),
            "the first round is one round after the first peer"
        );
        let at = t0 + Duration::from_secs(10);
        assert!(c.due(at));
        // Peers 3 and 4 sent the most; peer 0 got much from us (no matter
        // while downloading).
        let cands: Vec<Cand> = p
            .iter()
            .enumerate()
            .map(|(i, q)| Cand {
                peer: *q,
                down: [0, 10, 5, 100, 90][i],
                up: [1000, 0, 0, 0, 0][i],
                since: t0,
            })
            .collect();
        c.round(at, false, &cands);
        assert!(c.unchoked(&p[3]) && c.unchoked(&p[4]));
        assert_eq!(c.holders(), 3, "2 regular and 1 optimistic");
        let opt = c.optimistic.expect("an optimistic unchoke");
        assert!(opt != p[3] && opt != p[4]);
        // Next round, rates count from this round: peer 1 gives most now.
        let mut next = cands.clone();
        next[1].down += 500;
        next[3].down += 1;
        next[4].down += 2;
        c.round(at + Duration::from_secs(10), false, &next);
        assert!(c.unchoked(&p[1]) && c.unchoked(&p[4]));
        assert!(c.regular.len() == 2 && !c.regular.contains(&p[3]));
        // Seeding: ranked by what we sent them.
        let mut seed = next.clone();
        seed[0].up += 5000;
        c.round(at + Duration::from_secs(20), true, &seed);
        assert_eq!(c.regular.len(), 3);
        assert_eq!(c.regular[0], p[0]);
        // Peers that want nothing are choked.
        c.round(at + Duration::from_secs(30), false, &[]);
        assert_eq!(c.holders(), 0);
    }

    #[test]
    fn off_unchokes_everyone_and_never_runs_a_round() {
        let mut c = Choker::new(ChokeCfg { on: false, ..cfg() });
        let p = PeerId::random();
        assert!(c.unchoked(&p));
        assert!(!c.due(Instant::now()));
        assert!(!c.due(Instant::now() + Duration::from_secs(100)));
    }
}
