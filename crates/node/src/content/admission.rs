//! Admission of inbound streams (after the node-wide access decision) and the re-check of running sessions when an access policy changes.

use super::*;

impl Content {
    /// Checks every inbound session against the current access policy and
    /// closes (`AccessRevoked`) those no longer allowed. Returns false when this
    /// is a seeding task for content nothing here holds any more and no session
    /// is left: the task ends.
    pub(super) fn recheck_access(&mut self) -> bool {
        let access = self.shared.access.clone();
        let inbound: Vec<(PeerKey, PeerId, Vec<u8>)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.outbound)
            .map(|(k, p)| (*k, p.id, p.admitted.capability.clone()))
            .collect();
        let verdicts = if inbound.is_empty() {
            Ok(Vec::new())
        } else {
            access.check_all(&self.id, inbound.iter().map(|(_, p, c)| (p, c.as_slice())))
        };
        match verdicts {
            Ok(verdicts) => {
                for ((key, peer, _), v) in inbound.iter().zip(verdicts) {
                    if let crate::access::Verdict::Deny(d) = v {
                        tracing::debug!(id = %self.id, %peer, reason = ?d.reason, "access revoked");
                        let why = format!("access revoked: {}", d.text);
                        self.drop_peer(*key, Some((CloseCode::AccessRevoked, &why)), true);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check access"),
        }
        let pending = std::mem::take(&mut self.pending_inbound);
        for p in pending {
            match access.check(&self.id, &p.peer, &p.admitted.capability) {
                Ok(crate::access::Verdict::Deny(d)) => {
                    let mut w = p.w;
                    tokio::spawn(async move {
                        let msg = Message::Deny {
                            reason: d.reason,
                            text: text(&d.text),
                        };
                        let _ = crate::session::write_frame(&mut w, &msg).await;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    });
                }
                _ => self.pending_inbound.push(p),
            }
        }
        if self.download.is_none() && self.peers.is_empty() {
            return access.holds(&self.id).unwrap_or(true);
        }
        true
    }

    pub(super) fn admit(
        &mut self,
        peer: PeerId,
        fr: FrameReader<ReadHalf>,
        mut w: WriteHalf,
        piece_size: Option<u32>,
        content_len: Option<u64>,
        admitted: Admitted,
    ) {
        let deny = |reason: DenyReason, why: &'static str| (reason, why);
        if let Some(&existing) = self.by_id.get(&peer) {
            let ours = self.peers.get(&existing).is_some_and(|p| p.outbound);
            if ours && peer.to_bytes() < self.shared.local.to_bytes() {
                // Two peers that opened streams to each other keep the one
                // opened by the lower peer id (spec §3).
                self.drop_peer(
                    existing,
                    Some((CloseCode::Normal, "duplicate stream")),
                    true,
                );
            } else if !ours {
                // A peer opens a second stream for a content only when it
                // lost the first (it crashed, or its connection died without
                // our noticing yet): the new stream replaces the old one, so a
                // restarted download is served at once (spec §3).
                self.drop_peer(
                    existing,
                    Some((
                        CloseCode::Normal,
                        "replaced by a new stream from the same peer",
                    )),
                    true,
                );
            }
        }
        let waiting = matches!(self.phase(), Phase::Locating | Phase::FetchingOutboard);
        if waiting
            && !self.banned.contains(&peer)
            && self.pending_inbound.len() < self.shared.max_peers() as usize
        {
            // A download that does not know the layout yet answers once it does
            // (the initiator waits up to HELLO_TIMEOUT for the reply).
            self.pending_inbound.push(PendingInbound {
                since: Instant::now(),
                peer,
                fr,
                w,
                piece_size,
                content_len,
                admitted,
            });
            return;
        }
        let verdict = if self.banned.contains(&peer) {
            Err(deny(DenyReason::Banned, "banned for this content"))
        } else if self.by_id.contains_key(&peer) {
            Err(deny(DenyReason::Busy, "already connected for this content"))
        } else if self.peers.len() >= self.shared.max_peers() as usize {
            Err(deny(DenyReason::Busy, "too many peers for this content"))
        } else {
            match self.layout.filter(|_| self.outboard.is_some()) {
                None => Err(deny(DenyReason::NotFound, "content not available yet")),
                Some(l) if piece_size.is_some_and(|p| p != l.piece_size()) => {
                    Err(deny(DenyReason::PieceSizeMismatch, "different piece size"))
                }
                Some(l) if content_len.is_some_and(|n| n != l.content_len()) => {
                    Err(deny(DenyReason::LengthMismatch, "different content length"))
                }
                Some(l) => Ok(l),
            }
        };
        let layout = match verdict {
            Ok(l) => l,
            Err((reason, why)) => {
                tokio::spawn(async move {
                    let msg = Message::Deny { reason, text: why };
                    let _ = crate::session::write_frame(&mut w, &msg).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                });
                return;
            }
        };
        let mut state = ConnectionState::new(Role::Responder);
        let their = Hello {
            piece_size,
            content_len,
            ..Hello::new(self.id)
        };
        let ours = self.our_hello();
        let (avail, announced) = self.our_availability();
        let ok = state.on_recv(&Message::Hello(their)).is_ok()
            && state.on_send(&Message::Hello(ours.clone())).is_ok()
            && state.on_send(&avail.message()).is_ok();
        let frames = frame_of(&Message::Hello(ours)).zip(frame_of(&avail.message()));
        let Some((hello, avail)) = frames.filter(|_| ok) else {
            tracing::warn!(%peer, "could not build the handshake reply");
            return;
        };
        self.spawn_session(
            peer,
            fr,
            w,
            state,
            vec![hello, avail],
            false,
            Some(layout),
            announced,
            admitted,
        );
    }

    /// Denies inbound streams that waited too long, or all of them once the
    /// download failed.
    pub(super) fn expire_pending(&mut self) {
        let failed = self.failed.is_some();
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_inbound)
            .into_iter()
            .partition(|p| failed || p.since.elapsed() >= PENDING_INBOUND_WAIT);
        self.pending_inbound = keep;
        for p in old {
            let mut w = p.w;
            tokio::spawn(async move {
                let msg = Message::Deny {
                    reason: DenyReason::Busy,
                    text: "content not available yet",
                };
                let _ = crate::session::write_frame(&mut w, &msg).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
            });
        }
    }
}
