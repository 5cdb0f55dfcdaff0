//! Peer exchange (docs/protocol.md §6.4, §9.6).

use super::*;

impl Content {
    /// Sends each established peer whose turn it is the peers of this content
    /// we connected to or lost since we last told it (spec §6.4): never itself,
    /// only peers the address book has addresses for, at most
    /// `MAX_PEX_ADDED` + `MAX_PEX_DROPPED` per message. Nothing to say costs
    /// no turn.
    pub(super) fn pex_tick(&mut self) {
        let Some(book) = self.shared.book.get().cloned() else {
            return;
        };
        let now = Instant::now();
        for p in self.peers.values_mut() {
            if now >= p.pex_refill {
                p.pex_tokens = (p.pex_tokens + 1).min(PEX_BURST);
                p.pex_refill = now + PEX_EVERY;
            }
        }
        let due: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established && p.pex_tokens > 0 && p.pex_next <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        let connected: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.established)
            .map(|p| p.id)
            .collect();
        for key in due {
            let Some(p) = self.peers.get(&key) else {
                continue;
            };
            let to = p.id;
            let mut added: Vec<(PeerId, Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
            for peer in &connected {
                if added.len() >= MAX_PEX_ADDED {
                    break;
                }
                if *peer == to || p.pex_told.contains(peer) {
                    continue;
                }
                let addrs: Vec<Vec<u8>> = book
                    .addrs_for(peer, &to)
                    .into_iter()
                    .map(|a| a.to_vec())
                    .filter(|a| !a.is_empty() && a.len() <= MAX_ADDR_LEN)
                    .take(MAX_PEX_ADDRS)
                    .collect();
                let id = peer.to_bytes();
                if !addrs.is_empty() && id.len() <= MAX_PEER_ID_LEN {
                    added.push((*peer, id, addrs));
                }
            }
            let dropped: Vec<PeerId> = p
                .pex_told
                .iter()
                .filter(|x| !connected.contains(x))
                .take(MAX_PEX_DROPPED)
                .copied()
                .collect();
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            let dropped_bytes: Vec<Vec<u8>> = dropped.iter().map(|d| d.to_bytes()).collect();
            let msg = Message::PeerExchange {
                added: added
                    .iter()
                    .map(|(_, id, addrs)| PexPeer {
                        peer: id,
                        addrs: addrs.iter().map(Vec::as_slice).collect(),
                    })
                    .collect(),
                dropped: dropped_bytes
                    .iter()
                    .map(Vec::as_slice)
                    .filter(|b| b.len() <= MAX_PEER_ID_LEN)
                    .collect(),
            };
            if !self.send(key, &msg) {
                continue;
            }
            tracing::debug!(
                id = %self.id,
                %to,
                added = added.len(),
                dropped = dropped.len(),
                "peer exchange sent"
            );
            if let Some(p) = self.peers.get_mut(&key) {
                p.pex_tokens -= 1;
                p.pex_next = now + PEX_SPACING;
                for (peer, _, _) in &added {
                    p.pex_told.insert(*peer);
                }
                for d in &dropped {
                    p.pex_told.remove(d);
                }
            }
        }
    }

    /// A peer's `PeerExchange`: a running download hands the new peers with
    /// addresses to its connector (bounded per message and per content) and
    /// dials; seeds and finished downloads only take note.
    pub(super) fn on_pex(
        &mut self,
        key: PeerKey,
        added: Vec<(PeerId, Vec<shoal_net::Multiaddr>)>,
        dropped: Vec<PeerId>,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        if now >= p.pex_heard_refill {
            p.pex_heard_tokens = (p.pex_heard_tokens + 1).min(PEX_HEARD_BURST);
            p.pex_heard_refill = now + PEX_HEARD_EVERY;
        }
        if p.pex_heard_tokens == 0 {
            tracing::debug!(peer = %p.id, "peer exchange beyond its rate: ignored");
            return;
        }
        p.pex_heard_tokens -= 1;
        let from = p.id;
        tracing::debug!(
            id = %self.id,
            %from,
            added = added.len(),
            dropped = dropped.len(),
            "peer exchange received"
        );
        let Some(connector) = self.download.as_ref().map(|d| d.connector.clone()) else {
            return;
        };
        if matches!(
            self.phase(),
            Phase::Seeding | Phase::Complete | Phase::Failed
        ) {
            return;
        }
        let mut fresh = Vec::new();
        for (peer, addrs) in added {
            if fresh.len() >= PEX_NEW_PER_MESSAGE || self.pex_learned.len() >= PEX_MAX_LEARNED {
                break;
            }
            if peer == self.shared.local
                || peer == from
                || self.banned.contains(&peer)
                || self.by_id.contains_key(&peer)
                || self.pex_learned.contains(&peer)
            {
                continue;
            }
            let addrs: Vec<shoal_net::Multiaddr> = addrs
                .into_iter()
                .take(MAX_PEX_ADDRS)
                .filter(|a| !self.pex_addrs.contains(a))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            self.pex_addrs.extend(addrs.iter().cloned());
            self.pex_learned.insert(peer);
            fresh.push((peer, addrs));
        }
        if fresh.is_empty() {
            return;
        }
        connector.learned(fresh);
        self.dial_more();
    }
}
