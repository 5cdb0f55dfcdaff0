//! Fetching a download's outboard (the per-piece hashes) and serving ours.

use super::*;

impl Content {
    pub(super) fn serve_outboard(&mut self, key: PeerKey, first: u32, count: u32) {
        let bytes = self.ob_bytes.clone();
        let cvs: &[u8] = match bytes.as_deref() {
            Some(b) if self.layout.is_some_and(|l| l.num_pieces() > 1) => {
                let start = first as usize * CV_LEN;
                let end = start + count as usize * CV_LEN;
                b.get(start..end).unwrap_or(&[])
            }
            _ => &[],
        };
        self.send(key, &Message::OutboardResponse { first, cvs });
    }

    /// Starts fetching the outboard from an established peer that gave a layout.
    pub(super) fn start_outboard(&mut self) {
        if self.download.is_none()
            || self.outboard.is_some()
            || self.ob_fetch.is_some()
            || self.failed.is_some()
        {
            return;
        }
        let cand = self
            .peers
            .iter()
            .filter(|(_, p)| p.established && !self.ob_tried.contains(&p.id))
            .find_map(|(k, p)| p.layout.map(|l| (*k, l)));
        let Some((key, layout)) = cand else {
            if self.peers.is_empty() && self.dialing.is_empty() {
                self.dial_more();
            }
            return;
        };
        let too_big = self
            .download
            .as_ref()
            .and_then(|d| d.max_len)
            .is_some_and(|m| layout.content_len() > m);
        if too_big {
            if let Some(id) = self.peers.get(&key).map(|p| p.id) {
                self.ob_tried.insert(id);
            }
            return self.drop_peer(
                key,
                Some((CloseCode::Normal, "the content is larger than expected")),
                false,
            );
        }
        self.layout = Some(layout);
        if layout.num_pieces() <= 1 {
            let trivial = piece_layout(layout).and_then(|pl| Outboard::trivial(self.id, pl));
            match trivial {
                Some(ob) => return self.init_download(ob),
                None => {
                    let id = self.peers.get(&key).map(|p| p.id);
                    if let Some(id) = id {
                        self.ob_tried.insert(id);
                    }
                    return self.drop_peer(
                        key,
                        Some((CloseCode::BadData, "the layout does not fit the content id")),
                        false,
                    );
                }
            }
        }
        self.ob_fetch = Some(OutboardFetch {
            key,
            layout,
            leaves: vec![0; layout.num_pieces() as usize * CV_LEN],
            next: 0,
            outstanding: 0,
            received: 0,
        });
        self.request_outboard();
    }

    pub(super) fn request_outboard(&mut self) {
        loop {
            let Some(f) = self.ob_fetch.as_mut() else {
                return;
            };
            let n = f.layout.num_pieces();
            if f.next >= n || f.outstanding >= MAX_OUTSTANDING_OUTBOARD_REQUESTS {
                return;
            }
            let first = f.next;
            let count = (n - first).min(MAX_OUTBOARD_CVS);
            f.next += count;
            f.outstanding += 1;
            let key = f.key;
            if !self.send(key, &Message::OutboardRequest { first, count }) {
                self.ob_fetch = None;
                return;
            }
        }
    }

    pub(super) fn on_outboard(&mut self, key: PeerKey, first: u32, cvs: Vec<u8>) {
        let Some(f) = self.ob_fetch.as_mut().filter(|f| f.key == key) else {
            return;
        };
        f.outstanding = f.outstanding.saturating_sub(1);
        let start = first as usize * CV_LEN;
        let ok = !cvs.is_empty()
            && f.leaves
                .get_mut(start..start + cvs.len())
                .map(|dst| dst.copy_from_slice(&cvs))
                .is_some();
        if !ok {
            // The peer cannot give the outboard now: ask another one.
            self.ob_fetch = None;
            if let Some(p) = self.peers.get(&key) {
                self.ob_tried.insert(p.id);
            }
            return self.start_outboard();
        }
        f.received += (cvs.len() / CV_LEN) as u32;
        if f.received < f.layout.num_pieces() {
            return self.request_outboard();
        }
        let Some(f) = self.ob_fetch.take() else {
            return;
        };
        let leaves: Vec<Cv> = f
            .leaves
            .chunks_exact(CV_LEN)
            .map(|c| {
                let mut cv = [0u8; CV_LEN];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        let verified =
            piece_layout(f.layout).and_then(|pl| Outboard::from_leaves(self.id, pl, leaves).ok());
        match verified {
            Some(ob) => self.init_download(ob),
            None => {
                if let Some(p) = self.peers.get(&key) {
                    let id = p.id;
                    self.ob_tried.insert(id);
                    self.banned.insert(id);
                }
                self.layout = None;
                self.drop_peer(
                    key,
                    Some((
                        CloseCode::BadData,
                        "the outboard does not match the content id",
                    )),
                    false,
                );
            }
        }
    }
}
