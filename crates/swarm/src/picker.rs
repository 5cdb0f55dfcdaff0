//! Piece states and the piece picker.
//!
//! Every piece is in exactly one state (see STATE.md):
//! `Have` (verified), `Verifying` (bytes with the driver), `Requested`
//! (one or more outstanding requests, counted in `requesters`) or `Missing`
//! (nobody asked). `started` marks Missing pieces that were requested before
//! and lost their request (peer death, timeout, hash failure): they are picked
//! before anything else so half-done work does not linger.

use crate::bitfield::{BitIter, Bitfield};
use crate::config::PickerMode;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The state of one piece.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PieceState {
    /// Verified and stored.
    Have,
    /// Received; the driver is verifying it.
    Verifying,
    /// Requested from this many peers (more than one only in endgame).
    Requested(u32),
    /// Not requested from anyone.
    Missing,
}

/// How to choose among candidate pieces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum How {
    Rarest,
    Random,
    Lowest,
}

/// Options of one pick.
#[derive(Copy, Clone, Debug)]
pub struct PickOptions {
    /// Base ordering.
    pub mode: PickerMode,
    /// Pick at random while fewer than this many pieces are had.
    pub random_first: u32,
    /// Streaming window width, when sequential mode is on.
    pub sequential_window: Option<u32>,
}

/// Piece states and availability counts.
#[derive(Clone, Debug)]
pub struct Picker {
    n: u32,
    have: Bitfield,
    verifying: Bitfield,
    missing: Bitfield,
    started: Bitfield,
    requesters: Vec<u32>,
    availability: Vec<u32>,
    have_count: u32,
    missing_count: u32,
    /// Pieces that became or stopped being Missing, lost a request, or
    /// became Verifying or Have, since `take_changed` (drained every event).
    changed: Vec<u32>,
}

impl Picker {
    /// A picker over `have.len()` pieces, of which `have` are already verified.
    pub fn new(have: Bitfield) -> Self {
        let n = have.len();
        let mut missing = Bitfield::full(n);
        for p in have.ones() {
            missing.clear(p);
        }
        let have_count = have.count_ones();
        Picker {
            n,
            verifying: Bitfield::new(n),
            started: Bitfield::new(n),
            requesters: vec![0; n as usize],
            availability: vec![0; n as usize],
            have_count,
            missing_count: n - have_count,
            changed: Vec::new(),
            missing,
            have,
        }
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.n
    }

    /// True when there are no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Number of verified pieces.
    pub fn have_count(&self) -> u32 {
        self.have_count
    }

    /// The Missing pieces (nobody asked, not had, not verifying).
    pub fn missing(&self) -> &Bitfield {
        &self.missing
    }

    /// Pieces that became or stopped being Missing, lost a request, or
    /// became Verifying or Have, since the last call (a request added to a
    /// piece that stays Requested is not a change: only endgame does that).
    pub fn take_changed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.changed)
    }

    /// Number of pieces nobody was asked for.
    pub fn missing_count(&self) -> u32 {
        self.missing_count
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have_count == self.n
    }

    /// How many connected peers have `piece`.
    pub fn availability(&self, piece: u32) -> u32 {
        self.availability.get(piece as usize).copied().unwrap_or(0)
    }

    /// Whether `piece` was requested before and lost its request.
    pub fn is_started(&self, piece: u32) -> bool {
        self.started.get(piece)
    }

    /// The state of `piece` (`Missing` when out of range).
    pub fn state(&self, piece: u32) -> PieceState {
        if self.have.get(piece) {
            PieceState::Have
        } else if self.verifying.get(piece) {
            PieceState::Verifying
        } else if self.missing.get(piece) || piece >= self.n {
            PieceState::Missing
        } else {
            PieceState::Requested(self.requesters[piece as usize])
        }
    }

    /// A connected peer has `piece`.
    pub fn add_availability(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
        }
    }

    /// A peer that had `piece` went away.
    pub fn remove_availability(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_sub(1);
        }
    }

    /// A request for `piece` was sent. The piece must be Missing or Requested.
    pub fn on_request(&mut self, piece: u32) {
        if piece >= self.n || self.have.get(piece) || self.verifying.get(piece) {
            return;
        }
        if self.missing.clear(piece) {
            self.missing_count -= 1;
            self.changed.push(piece);
        }
        self.started.clear(piece);
        self.requesters[piece as usize] += 1;
    }

    /// A request for `piece` ended without the piece (reject, cancel, timeout,
    /// peer death). With `started`, the piece is picked first next time.
    pub fn on_request_dropped(&mut self, piece: u32, started: bool) {
        let Some(r) = self.requesters.get_mut(piece as usize) else {
            return;
        };
        if *r == 0 {
            return;
        }
        *r -= 1;
        // Always a change: the requester may have lost its last request.
        self.changed.push(piece);
        if *r == 0 && !self.have.get(piece) && !self.verifying.get(piece) {
            self.missing.set(piece);
            self.missing_count += 1;
            if started {
                self.started.set(piece);
            }
        }
    }

    /// The bytes of `piece` arrived and go to verification. All requests for
    /// it must have been dropped first (requesters == 0).
    pub fn begin_verify(&mut self, piece: u32) {
        if piece >= self.n || self.have.get(piece) {
            return;
        }
        if self.missing.clear(piece) {
            self.missing_count -= 1;
        }
        self.started.clear(piece);
        self.verifying.set(piece);
        self.changed.push(piece);
    }

    /// `piece` passed verification. Returns false when it was not Verifying.
    pub fn verified(&mut self, piece: u32) -> bool {
        if !self.verifying.clear(piece) {
            return false;
        }
        self.have.set(piece);
        self.have_count += 1;
        self.changed.push(piece);
        true
    }

    /// `piece` failed verification: back to Missing, picked first. Returns
    /// false when it was not Verifying.
    pub fn failed(&mut self, piece: u32) -> bool {
        if !self.verifying.clear(piece) {
            return false;
        }
        if self.requesters[piece as usize] == 0 {
            self.missing.set(piece);
            self.missing_count += 1;
            self.started.set(piece);
        }
        self.changed.push(piece);
        true
    }

    /// The lowest piece not yet verified (the sequential window's start).
    pub fn first_not_had(&self) -> Option<u32> {
        for (wi, &w) in self.have.words().iter().enumerate() {
            if w != u64::MAX {
                let p = wi as u32 * 64 + (!w).trailing_zeros();
                return (p < self.n).then_some(p);
            }
        }
        None
    }

    /// Chooses a Missing piece that `peer_have` contains and `exclude` does
    /// not reject: sequential window first (when on), then started pieces
    /// (rarest), then by mode (random while fewer than `random_first` pieces
    /// are had).
    pub fn pick(
        &self,
        peer_have: &Bitfield,
        exclude: &dyn Fn(u32) -> bool,
        opts: PickOptions,
        rng: &mut ChaCha8Rng,
    ) -> Option<u32> {
        if peer_have.len() != self.n {
            return None;
        }
        let pw = peer_have.words();
        let mw = self.missing.words();
        if let (Some(w), Some(start)) = (opts.sequential_window, self.first_not_had()) {
            let end = start.saturating_add(w).min(self.n);
            for p in start..end {
                if self.missing.get(p) && peer_have.get(p) && !exclude(p) {
                    return Some(p);
                }
            }
        }
        let sw = self.started.words();
        if let Some(p) = self.select(|i| pw[i] & mw[i] & sw[i], exclude, How::Rarest, rng) {
            return Some(p);
        }
        let how = if self.have_count < opts.random_first {
            How::Random
        } else {
            match opts.mode {
                PickerMode::RarestFirst => How::Rarest,
                PickerMode::Random => How::Random,
                PickerMode::Sequential => How::Lowest,
            }
        };
        self.select(|i| pw[i] & mw[i], exclude, how, rng)
    }

    /// Endgame: a Requested piece that `peer_have` contains, asked of fewer
    /// than `max_requesters` peers and not rejected by `exclude` (which must
    /// reject pieces already requested from this peer); fewest requesters
    /// first, random tie-break.
    pub fn pick_endgame(
        &self,
        peer_have: &Bitfield,
        exclude: &dyn Fn(u32) -> bool,
        max_requesters: u32,
        rng: &mut ChaCha8Rng,
    ) -> Option<u32> {
        if peer_have.len() != self.n {
            return None;
        }
        let pw = peer_have.words();
        let (hw, vw, mw) = (
            self.have.words(),
            self.verifying.words(),
            self.missing.words(),
        );
        let mask = |i: usize| pw[i] & !hw[i] & !vw[i] & !mw[i];
        let mut best = u32::MAX;
        let mut ties = 0u32;
        for i in 0..pw.len() {
            for p in (BitIter {
                word: mask(i),
                base: i as u32 * 64,
            }) {
                let r = self.requesters[p as usize];
                if r >= max_requesters || exclude(p) {
                    continue;
                }
                if r < best {
                    best = r;
                    ties = 1;
                } else if r == best {
                    ties += 1;
                }
            }
        }
        if ties == 0 {
            return None;
        }
        let mut k = rng.random_range(0..ties);
        for i in 0..pw.len() {
            for p in (BitIter {
                word: mask(i),
                base: i as u32 * 64,
            }) {
                if self.requesters[p as usize] == best && !exclude(p) {
                    if k == 0 {
                        return Some(p);
                    }
                    k -= 1;
                }
            }
        }
        None
    }

    fn select(
        &self,
        mask: impl Fn(usize) -> u64,
        exclude: &dyn Fn(u32) -> bool,
        how: How,
        rng: &mut ChaCha8Rng,
    ) -> Option<u32> {
        let words = self.missing.words().len();
        let mut best = u32::MAX;
        let mut ties = 0u32;
        for i in 0..words {
            for p in (BitIter {
                word: mask(i),
                base: i as u32 * 64,
            }) {
                if exclude(p) {
                    continue;
                }
                match how {
                    How::Lowest => return Some(p),
                    How::Random => ties += 1,
                    How::Rarest => {
                        let a = self.availability[p as usize];
                        if a < best {
                            best = a;
                            ties = 1;
                        } else if a == best {
                            ties += 1;
                        }
                    }
                }
            }
        }
        if ties == 0 {
            return None;
        }
        let mut k = rng.random_range(0..ties);
        for i in 0..words {
            for p in (BitIter {
                word: mask(i),
                base: i as u32 * 64,
            }) {
                if exclude(p) || (how == How::Rarest && self.availability[p as usize] != best) {
                    continue;
                }
                if k == 0 {
                    return Some(p);
                }
                k -= 1;
            }
        }
        None
    }

    /// Checks the picker's own invariants (states disjoint, counts right).
    pub fn check(&self) -> Result<(), String> {
        let mut have = 0;
        let mut missing = 0;
        for p in 0..self.n {
            let states = [
                self.have.get(p),
                self.verifying.get(p),
                self.missing.get(p),
                self.requesters[p as usize] > 0,
            ];
            if states.iter().filter(|s| **s).count() != 1 {
                return Err(format!(
                    "piece {p} is in {states:?} (have, verifying, missing, requested)"
                ));
            }
            if self.started.get(p) && !self.missing.get(p) {
                return Err(format!("piece {p} is started but not missing"));
            }
            have += self.have.get(p) as u32;
            missing += self.missing.get(p) as u32;
        }
        if have != self.have_count || missing != self.missing_count {
            return Err(format!(
                "counts: have {have} vs {}, missing {missing} vs {}",
                self.have_count, self.missing_count
            ));
        }
        Ok(())
    }

    /// How many outstanding requests the picker counts for `piece`.
    pub fn requesters(&self, piece: u32) -> u32 {
        self.requesters.get(piece as usize).copied().unwrap_or(0)
    }
}
