//! Glue to the sans-IO scheduler: events in, actions out, rates.

use super::*;

impl Content {
    pub(super) fn feed(&mut self, ev: Event) {
        self.events.push_back(ev);
        self.drain_events();
    }

    pub(super) fn drain_events(&mut self) {
        while let Some(ev) = self.events.pop_front() {
            let now = self.now();
            let Some(s) = self.swarm.as_mut() else {
                self.events.clear();
                return;
            };
            s.handle(ev, now);
            while let Some(a) = self.swarm.as_mut().and_then(|s| s.poll_action()) {
                self.act(a);
            }
        }
    }

    pub(super) fn act(&mut self, a: Action) {
        match a {
            Action::Send { peer, msg } => self.send_msg(peer, msg),
            Action::SendPiece { peer, piece } => self.send_piece(peer, piece),
            Action::VerifyAndStore { piece, from } => self.verify(piece, from),
            Action::Ban { peer } => {
                if let Some(p) = self.peers.get(&peer) {
                    self.banned.insert(p.id);
                }
            }
            Action::Disconnect { peer, reason } => {
                let (code, why) = match reason {
                    DisconnectReason::Banned => {
                        (CloseCode::BadData, "sent pieces that failed verification")
                    }
                    DisconnectReason::ProtocolViolation => {
                        (CloseCode::ProtocolViolation, "protocol violation")
                    }
                    DisconnectReason::BothComplete => (CloseCode::Normal, "both complete"),
                    DisconnectReason::TooManyPeers => (CloseCode::Normal, "too many peers"),
                };
                self.drop_peer(peer, Some((code, why)), false);
            }
            Action::WantPeers { n } => {
                self.want_peers = self.want_peers.max(n);
            }
            Action::Complete => self.finish(),
        }
    }

    pub(super) fn send_msg(&mut self, key: PeerKey, msg: Msg) {
        let m = match msg {
            Msg::KeepAlive => Message::KeepAlive,
            Msg::Bitfield(bf) => {
                // The protocol has one availability message, in the handshake; later
                // pieces are announced one by one.
                let new: Vec<u32> = match self.peers.get(&key).and_then(|p| p.announced.as_ref()) {
                    Some(a) => bf.ones().filter(|&i| !a.get(i)).collect(),
                    None => bf.ones().collect(),
                };
                for piece in new {
                    self.send_have(key, piece);
                }
                return;
            }
            Msg::Have { piece } => return self.send_have(key, piece),
            Msg::Interested => Message::Interested,
            Msg::NotInterested => Message::NotInterested,
            Msg::Choke => Message::Choke,
            Msg::Unchoke => Message::Unchoke,
            Msg::Request { piece } => {
                if !self.send(key, &Message::Request { piece }) {
                    // Keep the scheduler's view equal to the connection's.
                    self.events.push_back(Event::Message {
                        peer: key,
                        msg: Msg::Reject { piece },
                    });
                }
                return;
            }
            Msg::Cancel { piece } => Message::Cancel { piece },
            Msg::Reject { piece } => {
                let choking = self
                    .peers
                    .get(&key)
                    .and_then(|p| p.state.lock().ok().map(|s| s.am_choking()))
                    .unwrap_or(true);
                Message::Reject {
                    piece,
                    reason: if choking {
                        RejectReason::Choked
                    } else {
                        RejectReason::Overloaded
                    },
                }
            }
            Msg::Piece { .. } | Msg::PeerExchange => return,
        };
        self.send(key, &m);
    }

    pub(super) fn send_have(&mut self, key: PeerKey, piece: u32) {
        if self.send(key, &Message::Have { piece }) {
            if let Some(a) = self.peers.get_mut(&key).and_then(|p| p.announced.as_mut()) {
                a.set(piece);
            }
        }
    }

    /// Each peer's rates: piece bytes over the last [`RATE_WINDOW`] (over
    /// its session so far while that is shorter).
    pub(super) fn update_rates(&mut self) {
        let now = Instant::now();
        self.last_rates = now;
        for p in self.peers.values_mut() {
            p.rate_hist.push_back((now, p.downloaded, p.uploaded));
            // Keep the newest sample at least a window old as the base.
            while p.rate_hist.len() > 2
                && p.rate_hist
                    .get(1)
                    .is_some_and(|s| now.duration_since(s.0) >= RATE_WINDOW)
            {
                p.rate_hist.pop_front();
            }
            let Some(&(t0, d0, u0)) = p.rate_hist.front() else {
                continue;
            };
            let dt = now.duration_since(t0).as_secs_f64();
            if dt > 0.0 {
                p.down_rate = p.downloaded.saturating_sub(d0) as f64 / dt;
                p.up_rate = p.uploaded.saturating_sub(u0) as f64 / dt;
            }
        }
    }
}
