//! Dialing the peers a download's connector knows, and the peers that refused us.

use super::*;

impl Content {
    pub(super) fn on_dialed(&mut self, peer: PeerId, stream: BoxStream) {
        if self.banned.contains(&peer) || self.by_id.contains_key(&peer) {
            return;
        }
        let stream: BoxStream = Box::new(crate::limit::Throttled::new(
            stream,
            self.shared.meter.clone(),
        ));
        let (r, w) = tokio::io::split(stream);
        let mut state = ConnectionState::new(Role::Initiator);
        let cap = self.download.as_ref().and_then(|d| d.capability.clone());
        let mut hello = self.our_hello();
        if let Some(c) = cap.as_deref() {
            hello.capability = c.as_slice();
        }
        let (avail, announced) = if hello.piece_size.is_some() {
            self.our_availability()
        } else {
            (OurAvail::None, None)
        };
        let ok = state.on_send(&Message::Hello(hello.clone())).is_ok()
            && state.on_send(&avail.message()).is_ok();
        let frames = frame_of(&Message::Hello(hello)).zip(frame_of(&avail.message()));
        let Some((hf, avail)) = frames.filter(|_| ok) else {
            return;
        };
        self.spawn_session(
            peer,
            FrameReader::new(r),
            w,
            state,
            vec![hf, avail],
            true,
            None,
            announced,
            Admitted::default(),
        );
    }

    pub(super) fn dial_more(&mut self) {
        if matches!(
            self.phase(),
            Phase::Seeding | Phase::Complete | Phase::Failed
        ) {
            return;
        }
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let connector = d.connector.clone();
        let room = (self.shared.max_peers() as usize)
            .saturating_sub(self.peers.len() + self.dialing.len())
            .min(MAX_DIALS.saturating_sub(self.dialing.len()))
            .min((self.want_peers as usize).max(usize::from(self.peers.is_empty())));
        if room == 0 {
            return;
        }
        let known = connector.peers();
        self.known_peers = known.len();
        let now = Instant::now();
        let started = self.swarm.is_some();
        let pex = &self.pex_learned;
        let usable = |p: &PeerId, dialed: &HashMap<PeerId, (u32, Instant)>| {
            *p != self.shared.local
                && !self.banned.contains(p)
                && !self.refused.contains(p)
                && dialed.get(p).is_none_or(|(n, _)| {
                    if pex.contains(p) {
                        *n < PEX_MAX_ATTEMPTS
                    } else {
                        started || *n < MAX_ATTEMPTS
                    }
                })
        };
        let candidates: Vec<PeerId> = known
            .iter()
            .filter(|p| {
                usable(p, &self.dialed)
                    && !self.by_id.contains_key(p)
                    && !self.dialing.contains(p)
                    && self
                        .dialed
                        .get(p)
                        .is_none_or(|(_, t)| now.duration_since(*t) >= REDIAL_AFTER)
            })
            .take(room)
            .copied()
            .collect();
        // Every peer known refused us access: no point waiting for one of them
        // to change its mind (even mid-download).
        let all_refused = !known.is_empty()
            && known
                .iter()
                .all(|p| self.refused.contains(p) || *p == self.shared.local);
        if self.peers.is_empty()
            && self.dialing.is_empty()
            && candidates.is_empty()
            && (all_refused && self.access_error.is_some()
                || !started && !known.iter().any(|p| usable(p, &self.dialed)))
        {
            if let Some(msg) = self.access_error.clone() {
                return self.fail(NodeError::AccessRefused {
                    id: self.id,
                    why: msg,
                });
            }
            return self.fail(NodeError::NoPeers {
                id: self.id,
                why: format!("{} known peers tried", known.len()),
            });
        }
        for peer in candidates {
            self.dials = self.dials.saturating_add(1);
            self.dialing.insert(peer);
            let e = self.dialed.entry(peer).or_insert((0, now));
            *e = (e.0 + 1, now);
            self.want_peers = self.want_peers.saturating_sub(1);
            let c = connector.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let res = c.connect(peer).await;
                let _ = tx.send(Ev::Dialed { peer, res }).await;
            });
        }
    }

    /// A peer refused us access (or no longer has the content): it is not
    /// dialed again by this download, and its refusal explains a failure if no
    /// other peer is left.
    pub(super) fn refuse(&mut self, key: PeerKey, msg: String) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if !p.outbound {
            return;
        }
        self.refused.insert(p.id);
        // An access refusal explains more than "not found" from a peer that
        // simply lacks the content: keep the first unless a better one comes.
        let weak = |m: &str| m.starts_with("the sharer no longer shares");
        if self.access_error.as_deref().is_none_or(weak) {
            self.access_error = Some(msg);
        }
    }
}
