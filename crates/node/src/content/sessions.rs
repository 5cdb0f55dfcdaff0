//! Sessions: our handshake frames, starting a session's reader and writer, sending, closing.

use super::*;

impl Content {
    pub(super) fn our_availability(&self) -> (OurAvail, Option<SwarmBitfield>) {
        let Some(s) = self.swarm.as_ref() else {
            return (OurAvail::None, None);
        };
        let have = s.have().clone();
        let n = have.len();
        if s.initial_seeding() || have.count_ones() == 0 {
            return (OurAvail::None, Some(SwarmBitfield::new(n)));
        }
        if have.is_full() {
            return (OurAvail::All, Some(have));
        }
        match WireBitfield::new(n) {
            Ok(mut b) => {
                for i in have.ones() {
                    b.set(i);
                }
                (OurAvail::Bits(b), Some(have))
            }
            Err(_) => (OurAvail::None, Some(SwarmBitfield::new(n))),
        }
    }

    pub(super) fn our_hello(&self) -> Hello<'static> {
        let mut h = Hello::new(self.id);
        if let Some(l) = self.layout.filter(|_| self.outboard.is_some()) {
            h.piece_size = Some(l.piece_size());
            h.content_len = Some(l.content_len());
        }
        h
    }

    /// Starts the reader and writer of a new session whose first frames are already
    /// accounted in `state`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_session(
        &mut self,
        peer: PeerId,
        fr: FrameReader<ReadHalf>,
        w: WriteHalf,
        state: ConnectionState,
        first: Vec<Vec<u8>>,
        outbound: bool,
        layout: Option<Layout>,
        announced: Option<SwarmBitfield>,
        admitted: Admitted,
    ) {
        let key = PeerKey(self.next_key);
        self.next_key = self.next_key.wrapping_add(1);
        let mut fr = fr;
        fr.set_limit(self.download.as_ref().map(|d| d.limit.clone()));
        let state = Arc::new(Mutex::new(state));
        let (otx, orx) = outbox(WRITE_QUEUE);
        for f in first {
            let _ = otx.try_send(Out::Frame(f));
        }
        let wrap = |k, e| Ev::Session(k, e);
        let reader = tokio::spawn(run_reader(
            fr,
            key,
            state.clone(),
            self.tx.clone(),
            wrap,
            self.shared.pool.clone(),
            !outbound,
        ));
        let writer = tokio::spawn(run_writer(
            w,
            orx,
            key,
            state.clone(),
            self.tx.clone(),
            wrap,
        ));
        self.by_id.insert(peer, key);
        self.peers.insert(
            key,
            PeerConn {
                id: peer,
                state,
                out: otx,
                _reader: AbortOnDrop(reader),
                writer: Some(writer),
                outbound,
                layout,
                avail: None,
                established: false,
                registered: false,
                announced,
                uploading: HashSet::new(),
                queued_pieces: 0,
                downloaded: 0,
                uploaded: 0,
                rate_hist: VecDeque::from([(Instant::now(), 0, 0)]),
                down_rate: 0.0,
                up_rate: 0.0,
                pex_next: Instant::now(),
                pex_tokens: PEX_BURST,
                pex_refill: Instant::now() + PEX_EVERY,
                pex_told: HashSet::new(),
                pex_heard_tokens: PEX_HEARD_BURST,
                pex_heard_refill: Instant::now() + PEX_HEARD_EVERY,
                admitted,
            },
        );
    }

    /// Sends `msg` to `key` if the protocol allows it now; false otherwise (or if the
    /// peer's queue is full, in which case the peer is dropped).
    pub(super) fn send(&mut self, key: PeerKey, msg: &Message<'_>) -> bool {
        let Some(p) = self.peers.get(&key) else {
            return false;
        };
        let allowed = match p.state.lock() {
            Ok(mut s) => s.on_send(msg),
            Err(_) => return false,
        };
        if let Err(e) = allowed {
            tracing::debug!(?key, error = %e, "not sending {:?}", msg.message_type());
            return false;
        }
        let Some(f) = frame_of(msg) else {
            return false;
        };
        let full = p.out.try_send(Out::Frame(f)).is_err();
        if full {
            self.drop_peer(key, Some((CloseCode::Shutdown, "too slow")), true);
            return false;
        }
        true
    }

    /// Closes the session with `key`: `Close { code }` (if given) then shutdown.
    /// `tell_swarm`: the scheduler still knows the peer and must forget it.
    pub(super) fn drop_peer(
        &mut self,
        key: PeerKey,
        close: Option<(CloseCode, &str)>,
        tell_swarm: bool,
    ) {
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        self.by_id.remove(&p.id);
        if self
            .pending_piece
            .as_ref()
            .is_some_and(|(k, _, _, _)| *k == key)
        {
            self.pending_piece = None;
        }
        if let Some((code, why)) = close {
            let msg = Message::Close {
                code,
                text: text(why),
            };
            let ok = p.state.lock().map(|mut s| s.on_send(&msg).is_ok());
            if let (Ok(true), Some(f)) = (ok, frame_of(&msg)) {
                let _ = p.out.try_send(Out::Close(f));
            }
        }
        if let Some(w) = p.writer.take() {
            reap_writer(w);
        }
        if let Some(log) = p.admitted.log {
            self.shared.access.served(log, p.uploaded);
        }
        if tell_swarm && p.registered {
            self.events.push_back(Event::PeerDisconnected { peer: key });
        }
        if self.ob_fetch.as_ref().is_some_and(|f| f.key == key) {
            self.ob_fetch = None;
            self.ob_tried.insert(p.id);
        }
        drop(p);
        self.drain_events();
        self.start_outboard();
    }
}
