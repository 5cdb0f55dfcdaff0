//! The task's input events and the messages of each session.

use super::*;

impl Content {
    pub(super) fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Inbound {
                peer,
                fr,
                w,
                piece_size,
                content_len,
                admitted,
            } => self.admit(peer, fr, w, piece_size, content_len, admitted),
            Ev::Dialed { peer, res } => {
                self.dialing.remove(&peer);
                match res {
                    Ok(s) => self.on_dialed(peer, s),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "dial failed");
                        self.last_dial_error = Some(text(&format!("{peer}: {e}")).to_owned());
                        self.publish(true);
                    }
                }
            }
            Ev::Session(key, ev) => self.on_session(key, ev),
            Ev::UploadRead { key, piece, res } => self.on_upload_read(key, piece, res),
            Ev::Verified {
                key,
                piece,
                len,
                res,
            } => self.on_verified(key, piece, len, res),
            Ev::Finished(res) => self.on_finished(res),
            Ev::Flushed(res) => {
                if let Err(e) = res {
                    self.fail(e.into());
                }
            }
        }
    }

    pub(super) fn on_session(&mut self, key: PeerKey, ev: SessionEvent) {
        match ev {
            SessionEvent::Msg(m) => self.on_msg(key, m),
            SessionEvent::Denied { reason, text } => {
                tracing::debug!(?key, ?reason, text = %text.escape_debug(), "denied");
                if crate::access::is_access_denial(reason) || reason == DenyReason::NotFound {
                    let cap = self
                        .download
                        .as_ref()
                        .and_then(|d| d.capability.clone())
                        .unwrap_or_default();
                    let msg = crate::access::denial_message(reason, &cap, &text);
                    self.refuse(key, msg);
                }
                self.drop_peer(key, None, true);
            }
            SessionEvent::Closed { code, text } => {
                tracing::debug!(?key, ?code, text = %text.escape_debug(), "closed by peer");
                if code == CloseCode::AccessRevoked {
                    let msg = format!(
                        "the sharer no longer allows this download ({})",
                        text.escape_debug()
                    );
                    self.refuse(key, msg);
                }
                self.drop_peer(key, None, true);
            }
            SessionEvent::Gone(why) => {
                tracing::debug!(?key, %why, "session ended");
                self.drop_peer(key, None, true);
            }
            SessionEvent::Violation(e) => {
                tracing::debug!(?key, error = %e, "protocol violation");
                let why = e.to_string();
                self.drop_peer(key, Some((e.close_code(), &why)), true);
            }
            SessionEvent::PieceSent { piece, buf } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queued_pieces = p.queued_pieces.saturating_sub(1);
                    p.uploaded += buf.len() as u64;
                    self.totals.entry(p.id).or_default().1 += buf.len() as u64;
                    if p.uploading.remove(&piece) {
                        self.events
                            .push_back(Event::UploadDone { peer: key, piece });
                    }
                }
                self.shared.pool.give(buf);
                self.drain_events();
            }
        }
    }

    pub(super) fn on_msg(&mut self, key: PeerKey, m: InMsg) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let registered = p.registered;
        let msg = match m {
            InMsg::Hello {
                piece_size,
                content_len,
            } => {
                let Ok(l) = Layout::new(content_len, piece_size) else {
                    return self.drop_peer(key, Some((CloseCode::BadHello, "bad layout")), true);
                };
                p.layout = Some(l);
                if self.layout.is_none() && self.download.is_some() {
                    self.layout = Some(l);
                }
                return;
            }
            InMsg::Availability(a) => {
                p.avail = Some(a);
                p.established = true;
                self.try_register(key);
                self.start_outboard();
                return;
            }
            InMsg::OutboardRequest { first, count } => {
                return self.serve_outboard(key, first, count);
            }
            InMsg::OutboardResponse { first, cvs } => return self.on_outboard(key, first, cvs),
            InMsg::RequestWhileChoking(piece) => {
                self.send(
                    key,
                    &Message::Reject {
                        piece,
                        reason: RejectReason::Choked,
                    },
                );
                return;
            }
            InMsg::Nothing => return,
            InMsg::PeerExchange { added, dropped } => {
                return self.on_pex(key, added, dropped);
            }
            InMsg::Have(piece) if !registered => {
                // Kept with the availability until the scheduler knows the peer.
                let n = p.layout.or(self.layout).map_or(0, |l| l.num_pieces());
                match p.avail.take() {
                    Some(Availability::All) => p.avail = Some(Availability::All),
                    Some(Availability::Some(mut b)) => {
                        b.set(piece);
                        p.avail = Some(Availability::Some(b));
                    }
                    _ => {
                        if let Ok(mut b) = WireBitfield::new(n) {
                            b.set(piece);
                            p.avail = Some(Availability::Some(b));
                        }
                    }
                }
                return;
            }
            _ if !registered => {
                // Only possible before the scheduler knows the peer (no outboard
                // yet): nothing was requested from it and it cannot be unchoked.
                if let InMsg::Request(piece) = m {
                    self.send(
                        key,
                        &Message::Reject {
                            piece,
                            reason: RejectReason::NotAvailable,
                        },
                    );
                }
                return;
            }
            InMsg::Have(piece) => Msg::Have { piece },
            InMsg::Interested => Msg::Interested,
            InMsg::NotInterested => Msg::NotInterested,
            InMsg::Choke => Msg::Choke,
            InMsg::Unchoke => Msg::Unchoke,
            InMsg::Request(piece) => Msg::Request { piece },
            InMsg::Cancel(piece) => {
                // The scheduler drops a cancelled queued upload silently, but the
                // protocol wants one answer per request: reject it here.
                let unanswered = p
                    .state
                    .lock()
                    .map(|s| s.peer_requests().any(|r| r == piece))
                    .unwrap_or(false);
                let queued = unanswered && !p.uploading.contains(&piece);
                self.feed(Event::Message {
                    peer: key,
                    msg: Msg::Cancel { piece },
                });
                if queued {
                    self.send(
                        key,
                        &Message::Reject {
                            piece,
                            reason: RejectReason::Cancelled,
                        },
                    );
                }
                return;
            }
            InMsg::Piece(piece, data, permit) => {
                if let Some((_, _, old, _)) = self.pending_piece.replace((key, piece, data, permit))
                {
                    self.shared.pool.give(old);
                }
                self.feed(Event::Message {
                    peer: key,
                    msg: Msg::Piece { piece },
                });
                if let Some((_, _, buf, _)) = self.pending_piece.take() {
                    // Not named by VerifyAndStore (a duplicate): discarded.
                    self.shared.pool.give(buf);
                }
                return;
            }
            InMsg::Reject(piece) => Msg::Reject { piece },
        };
        self.feed(Event::Message { peer: key, msg });
    }

    /// Hands an established peer to the scheduler, once both exist.
    pub(super) fn try_register(&mut self, key: PeerKey) {
        let Some(layout) = self.layout.filter(|_| self.swarm.is_some()) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.registered || p.avail.is_none() {
            return;
        }
        if p.layout.is_some_and(|l| l != layout) {
            return self.drop_peer(
                key,
                Some((CloseCode::Normal, "another layout for this content")),
                false,
            );
        }
        p.registered = true;
        let n = layout.num_pieces();
        if p.announced.is_none() {
            p.announced = Some(SwarmBitfield::new(n));
        }
        let bf = match p.avail.take() {
            Some(Availability::All) => Some(SwarmBitfield::full(n)),
            Some(Availability::Some(b)) => {
                let mut s = SwarmBitfield::new(n);
                for i in b.iter_ones() {
                    s.set(i);
                }
                Some(s)
            }
            _ => None,
        };
        let outbound = p.outbound;
        self.events.push_back(Event::PeerConnected {
            peer: key,
            outbound,
        });
        if let Some(bf) = bf.filter(|b| b.count_ones() > 0) {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Bitfield(bf),
            });
        }
        // Choke and interest messages that came before: the connection kept them.
        let (choking, interested) = p
            .state
            .lock()
            .map(|s| (s.peer_choking(), s.peer_interested()))
            .unwrap_or((true, false));
        if !choking {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Unchoke,
            });
        }
        if interested {
            self.events.push_back(Event::Message {
                peer: key,
                msg: Msg::Interested,
            });
        }
        self.drain_events();
    }
}
