//! Blocking I/O off the task: reading pieces to upload, verifying and writing received ones, flushing and finishing the partial file.

use super::*;

impl Content {
    pub(super) fn init_download(&mut self, ob: Outboard) {
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let Some(layout) = layout_of(&ob) else {
            return;
        };
        match crate::transfer::already_complete(&d.dest, ob.root(), layout.content_len()) {
            Ok(true) => return self.already_there(ob, layout),
            Ok(false) => {}
            Err(e) => return self.fail(e),
        }
        let partial = match self.shared.store.open_download(ob.clone(), &d.dest, None) {
            Ok(p) => p,
            Err(e) => return self.fail(e.into()),
        };
        let n = layout.num_pieces();
        let mut have = SwarmBitfield::new(n);
        for i in 0..n {
            if partial.has(i) {
                have.set(i);
            }
        }
        let complete = partial.is_complete();
        let part = partial.part().to_path_buf();
        let verifier = partial.verifier();
        let file = Arc::new(Mutex::new(Some(partial)));
        self.source = Source::Partial {
            part,
            file,
            verifier,
        };
        if !self.start_swarm(ob, layout, have) {
            return;
        }
        self.publish(true);
        if complete {
            return self.finish();
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.try_register(k);
        }
        for p in std::mem::take(&mut self.pending_inbound) {
            self.admit(p.peer, p.fr, p.w, p.piece_size, p.content_len, p.admitted);
        }
    }

    /// The destination already holds this content (a download run again after
    /// it completed): nothing is fetched; the task serves the file like a
    /// finished download.
    fn already_there(&mut self, ob: Outboard, layout: Layout) {
        let Some(dest) = self.download.as_ref().map(|d| d.dest.clone()) else {
            return;
        };
        tracing::info!(id = %self.id, path = %dest.display(), "already downloaded: the file there is this content");
        if let Err(e) = self.shared.store.put_outboard(&ob) {
            return self.fail(e.into());
        }
        let full = SwarmBitfield::full(layout.num_pieces());
        if self.start_swarm(ob, layout, full) {
            self.on_finished(Ok(dest));
        }
    }

    /// Takes the download's layout and outboard and starts its scheduler
    /// with the pieces `have`; false (the download failed) if it cannot.
    fn start_swarm(&mut self, ob: Outboard, layout: Layout, have: SwarmBitfield) -> bool {
        self.layout = Some(layout);
        self.set_outboard(ob);
        let n = layout.num_pieces();
        match Swarm::new(self.swarm_config(layout), n, have, self.seed_rng()) {
            Ok(s) => {
                self.swarm = Some(s);
                true
            }
            Err(e) => {
                self.fail(NodeError::Internal(e.to_string()));
                false
            }
        }
    }

    pub(super) fn flush(&mut self) {
        if let Source::Partial { file, .. } = &self.source {
            if self.finishing {
                return;
            }
            let file = file.clone();
            let tx = self.tx.clone();
            let alive = self.alive();
            tokio::spawn(async move {
                let res = tokio::task::spawn_blocking(move || {
                    let _alive = alive;
                    // The sync runs outside the lock: pieces keep being written.
                    let pending = match file.lock() {
                        Ok(mut g) => g.as_mut().and_then(|p| p.start_flush()),
                        Err(_) => None,
                    };
                    pending.map_or(Ok(()), |f| f.run())
                })
                .await
                .unwrap_or(Ok(()));
                let _ = tx.send(Ev::Flushed(res)).await;
            });
        }
    }

    pub(super) fn finish(&mut self) {
        if self.finishing || self.complete {
            return;
        }
        let Source::Partial { file, .. } = &self.source else {
            return;
        };
        self.finishing = true;
        let file = file.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let res = tokio::task::spawn_blocking(move || {
                let taken = file.lock().ok().and_then(|mut g| g.take());
                match taken {
                    Some(p) => p.finish(),
                    None => Err(StoreError::Corrupt {
                        what: "the partial download was already closed".into(),
                    }),
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("finishing the download failed: {e}"),
                })
            });
            let _ = tx.send(Ev::Finished(res)).await;
        });
    }

    pub(super) fn on_finished(&mut self, res: Result<PathBuf, StoreError>) {
        match res {
            Ok(path) => {
                self.complete = true;
                self.source = Source::File(path.clone());
                self.publish(true);
                if let Some(done) = self.download.as_mut().and_then(|d| d.done.take()) {
                    let _ = done.send(Ok(path));
                }
            }
            Err(e) => self.fail(e.into()),
        }
    }

    pub(super) fn fail(&mut self, e: NodeError) {
        if self.failed.is_some() {
            return;
        }
        tracing::debug!(id = %self.id, error = %e, "download failed");
        self.failed = Some(e.to_string());
        self.publish(true);
        if let Some(done) = self.download.as_mut().and_then(|d| d.done.take()) {
            let _ = done.send(Err(e));
        }
    }

    pub(super) fn send_piece(&mut self, key: PeerKey, piece: u32) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(ob) = self.outboard.clone() else {
            return;
        };
        p.uploading.insert(piece);
        enum Src {
            File(PathBuf),
            Memory(Arc<Vec<u8>>),
        }
        let src = match &self.source {
            Source::File(path) => Src::File(path.clone()),
            Source::Partial { part, .. } => Src::File(part.clone()),
            Source::Memory(m) => Src::Memory(m.clone()),
            Source::None => Src::Memory(Arc::new(Vec::new())),
        };
        let mut buf = self.shared.pool.take();
        let sem = self.shared.io_limit.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let res = tokio::task::spawn_blocking(move || {
                let res = match src {
                    Src::File(path) => read_piece(&path, &ob, piece, &mut buf),
                    Src::Memory(m) => {
                        let r = ob.layout().piece_range(piece);
                        match m.get(r.start as usize..r.end as usize) {
                            Some(d) => {
                                buf.extend_from_slice(d);
                                ob.verify_piece(piece, &buf)
                                    .map_err(|source| StoreError::Verify {
                                        id: ob.root(),
                                        source,
                                    })
                            }
                            None => Err(StoreError::Corrupt {
                                what: "piece out of range of the served bytes".into(),
                            }),
                        }
                    }
                };
                res.map(|()| buf)
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("reading a piece failed: {e}"),
                })
            });
            let _ = tx.send(Ev::UploadRead { key, piece, res }).await;
        });
    }

    pub(super) fn on_upload_read(
        &mut self,
        key: PeerKey,
        piece: u32,
        res: Result<Vec<u8>, StoreError>,
    ) {
        let Some(p) = self.peers.get(&key) else {
            if let Ok(buf) = res {
                self.shared.pool.give(buf);
            }
            return;
        };
        match res {
            Ok(buf) => {
                let allowed = p
                    .state
                    .lock()
                    .map(|mut s| s.on_send(&Message::Piece { piece, data: &buf }).is_ok())
                    .unwrap_or(false);
                if allowed {
                    if p.out.try_send(Out::Piece { piece, data: buf }).is_err() {
                        self.drop_peer(key, Some((CloseCode::Shutdown, "too slow")), true);
                        return;
                    }
                    // Read ahead: with few pieces queued for this peer, the
                    // scheduler may start the next upload while this one is being
                    // written, so disk reads overlap with the network. Beyond
                    // UPLOAD_READ_AHEAD, it waits for the writer.
                    let Some(p) = self.peers.get_mut(&key) else {
                        return;
                    };
                    p.queued_pieces += 1;
                    if p.queued_pieces <= UPLOAD_READ_AHEAD && p.uploading.remove(&piece) {
                        self.feed(Event::UploadDone { peer: key, piece });
                    }
                    return;
                }
                self.shared.pool.give(buf);
            }
            Err(e) if self.download.is_none() => {
                // A shared source that no longer matches its id will not heal:
                // stop serving it (once, with one warning) rather than answer
                // every request with a Reject the peer asks again.
                return self.retire_source(e);
            }
            Err(e) => {
                self.warn_read_failure(piece, &e);
                self.send(
                    key,
                    &Message::Reject {
                        piece,
                        reason: RejectReason::NotAvailable,
                    },
                );
            }
        }
        if let Some(p) = self.peers.get_mut(&key) {
            if p.uploading.remove(&piece) {
                self.feed(Event::UploadDone { peer: key, piece });
            }
        }
    }

    pub(super) fn verify(&mut self, piece: u32, from: PeerKey) {
        let (buf, permit) = match self.pending_piece.take() {
            Some((k, p, buf, permit)) if k == from && p == piece => (buf, permit),
            other => {
                self.pending_piece = other;
                self.events.push_back(Event::PieceFailed { piece, from });
                return;
            }
        };
        let Source::Partial { file, verifier, .. } = &self.source else {
            self.shared.pool.give(buf);
            return;
        };
        let file = file.clone();
        let verifier = verifier.clone();
        let tx = self.tx.clone();
        let pool = self.shared.pool.clone();
        let sem = self.shared.io_limit.clone();
        let alive = self.alive();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let len = buf.len();
            let res = tokio::task::spawn_blocking(move || {
                let _alive = alive;
                // The piece's bytes leave the budget once written.
                let _budget = permit;
                // Hashing, the slow part, runs outside the lock, so pieces
                // verify on as many threads as `io_limit` allows; only the
                // write into the page cache is serialised, and the sync of a
                // flush runs after the lock is released.
                let res = verifier.verify(piece, &buf).and_then(|ok| {
                    let pending = match file.lock() {
                        Ok(mut g) => match g.as_mut() {
                            Some(p) => p.write_verified(ok).map(|()| {
                                if p.unflushed() >= FLUSH_PIECES {
                                    p.start_flush()
                                } else {
                                    None
                                }
                            }),
                            None => Ok(None),
                        },
                        Err(_) => Err(StoreError::Corrupt {
                            what: "the partial download is poisoned".into(),
                        }),
                    }?;
                    pending.map_or(Ok(()), |f| f.run())
                });
                pool.give(buf);
                res
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    what: format!("verifying a piece failed: {e}"),
                })
            });
            let _ = tx
                .send(Ev::Verified {
                    key: from,
                    piece,
                    len,
                    res,
                })
                .await;
        });
    }

    pub(super) fn on_verified(
        &mut self,
        key: PeerKey,
        piece: u32,
        len: usize,
        res: Result<(), StoreError>,
    ) {
        match res {
            Ok(()) => {
                self.shared
                    .meter
                    .stats
                    .pieces_verified
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.downloaded += len as u64;
                    self.totals.entry(p.id).or_default().0 += len as u64;
                }
                self.feed(Event::PieceVerified { piece, from: key });
            }
            Err(StoreError::Verify { .. }) => {
                self.shared
                    .meter
                    .stats
                    .pieces_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.pieces_failed += 1;
                self.publish(true);
                self.feed(Event::PieceFailed { piece, from: key });
            }
            Err(e) => self.fail(e.into()),
        }
    }

    /// Stops serving a share whose source failed (changed, truncated, gone):
    /// one warning, every session closed saying why, later streams denied
    /// `NotFound` with that reason, and the task ends.
    pub(super) fn retire_source(&mut self, e: StoreError) {
        let why = "the shared file no longer matches content it was shared as (it was changed or \
                   truncated); it is not served until it is shared again"
            .to_owned();
        let first = self
            .shared
            .broken
            .lock()
            .map(|mut b| b.insert(self.id, why.clone()).is_none())
            .unwrap_or(true);
        if first {
            tracing::warn!(id = %self.id, error = %e, "stopped serving a shared file that changed; share it again to serve the new content");
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.drop_peer(k, Some((CloseCode::Normal, &why)), true);
        }
        self.retired = true;
    }

    /// A piece of a download's partial file could not be read for upload:
    /// warned at most every 10 s (with how many were not shown).
    pub(super) fn warn_read_failure(&mut self, piece: u32, e: &StoreError) {
        let now = Instant::now();
        if self
            .last_read_warning
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.read_warnings_suppressed += 1;
            return;
        }
        tracing::warn!(
            id = %self.id,
            piece,
            error = %e,
            suppressed = self.read_warnings_suppressed,
            "cannot serve a piece"
        );
        self.last_read_warning = Some(now);
        self.read_warnings_suppressed = 0;
    }
}
