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

    pub(super) fn update_rates(&mut self) {
        let dt = self.last_rates.elapsed().as_secs_f64();
        self.last_rates = Instant::now();
        if dt <= 0.0 {
            return;
        }
        for p in self.peers.values_mut() {
            p.down_rate = (p.downloaded - p.rate_mark.0) as f64 / dt;
            p.up_rate = (p.uploaded - p.rate_mark.1) as f64 / dt;
            p.rate_mark = (p.downloaded, p.uploaded);
        }
    }
}
