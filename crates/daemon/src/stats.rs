//! Live traffic figures: the global totals (rates, bytes this session and all
//! time) and each share's uploads, sent on the event stream every second
//! while they change. The totals come from the node's stream counters, the
//! same ones `/metrics` exports; all-time bytes are kept in
//! `daemon/stats.json` (saved every 30 s and at shutdown).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{share_view, ShareView};
use crate::{AppState, Event};

/// How often the figures are taken.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How often all-time totals are saved (and at shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Traffic over every transfer stream of the daemon's peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    /// Bytes per second received and sent, over the last second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// Bytes received and sent since the daemon started (as `/metrics`'s
    /// `shoal_bytes_downloaded_total` and `shoal_bytes_uploaded_total`).
    pub downloaded_session: u64,
    pub uploaded_session: u64,
    /// Bytes received and sent over every run of this data directory.
    pub downloaded_all_time: u64,
    pub uploaded_all_time: u64,
}

/// What `daemon/stats.json` keeps.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    downloaded: u64,
    uploaded: u64,
}

/// Rates are bytes over this sliding window, as the node's per-peer rates
/// (`shoal_node`'s `RATE_WINDOW`).
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The totals as last taken.
pub(crate) struct Stats {
    file: PathBuf,
    /// All-time bytes of earlier runs.
    before: Saved,
    last: Mutex<Totals>,
    /// (when, downloaded, uploaded) of the takes of the last [`RATE_WINDOW`].
    hist: Mutex<std::collections::VecDeque<(Instant, u64, u64)>>,
}

impl Stats {
    /// Loads the all-time totals of `data_dir` (none yet: zero; unreadable:
    /// zero, with a warning, and the file is rewritten at the next save).
    pub(crate) fn load(data_dir: &Path) -> Self {
        let file = data_dir.join("daemon").join("stats.json");
        let before = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %file.display(), error = %e, "the saved traffic totals are unreadable; counting from zero");
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        let t = Totals {
            downloaded_all_time: before.downloaded,
            uploaded_all_time: before.uploaded,
            ..Totals::default()
        };
        Self {
            file,
            before,
            last: Mutex::new(t),
            hist: Mutex::new(std::collections::VecDeque::from([(Instant::now(), 0, 0)])),
        }
    }

    /// The totals as last taken.
    pub(crate) fn totals(&self) -> Totals {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the figures now from the node's counters: bytes since start,
    /// and rates over the last [`RATE_WINDOW`].
    fn take(&self, st: &AppState) -> Totals {
        let c = crate::limits::counters(st);
        let now = Instant::now();
        let (dt, d0, u0) = {
            let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
            h.push_back((now, c.downloaded, c.uploaded));
            // The newest take at least a window old is the base.
            while h.len() > 2
                && h.get(1)
                    .is_some_and(|s| now.duration_since(s.0) >= RATE_WINDOW)
            {
                h.pop_front();
            }
            let (t0, d0, u0) = h.front().copied().unwrap_or((now, 0, 0));
            (now.duration_since(t0).as_secs_f64(), d0, u0)
        };
        let rate = |now: u64, before: u64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let t = Totals {
            down_rate: rate(c.downloaded, d0),
            up_rate: rate(c.uploaded, u0),
            downloaded_session: c.downloaded,
            uploaded_session: c.uploaded,
            downloaded_all_time: self.before.downloaded + c.downloaded,
            uploaded_all_time: self.before.uploaded + c.uploaded,
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = t;
        t
    }

    /// Writes the all-time totals.
    pub(crate) fn save(&self) {
        let t = self.totals();
        let saved = Saved {
            downloaded: t.downloaded_all_time,
            uploaded: t.uploaded_all_time,
        };
        let Ok(bytes) = serde_json::to_vec(&saved) else {
            return;
        };
        if let Err(e) = shoal_store::write_atomic(&self.file, &bytes, 0o600) {
            tracing::warn!(path = %self.file.display(), error = %e, "cannot save the traffic totals");
        }
    }
}

/// Every [`TICK`]: takes the totals and sends a `totals` event when they
/// changed, and a `share` event for each share whose uploads changed (bytes
/// sent, rate, or the peers being served). Ends when the daemon closes.
pub(crate) async fn run(st: Arc<AppState>) {
    let mut closing = st.closing.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_totals = st.stats.totals();
    let mut last_shares: std::collections::HashMap<String, ShareView> = Default::default();
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.wait_for(|c| *c) => break,
        }
        let t = st.stats.take(&st);
        if t != last_totals {
            last_totals = t;
            let _ = st.events.send(Event::new(
                "totals",
                serde_json::to_value(t).unwrap_or_default(),
            ));
        }
        let shares = {
            let st = st.clone();
            tokio::task::spawn_blocking(move || {
                st.peer
                    .store()
                    .shares()
                    .map(|v| v.iter().map(|s| share_view(&st, s)).collect::<Vec<_>>())
            })
            .await
        };
        if let Ok(Ok(shares)) = shares {
            let mut seen = std::collections::HashMap::new();
            for v in shares {
                let changed = last_shares.get(&v.id).is_none_or(|old| {
                    old.uploaded_bytes != v.uploaded_bytes
                        || old.up_rate != v.up_rate
                        || old.peers != v.peers
                });
                // A share added or changed through the API has its own event.
                if changed && last_shares.contains_key(&v.id) {
                    let _ = st.events.send(Event::new(
                        "share",
                        serde_json::to_value(&v).unwrap_or_default(),
                    ));
                }
                seen.insert(v.id.clone(), v);
            }
            last_shares = seen;
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            st.stats.save();
        }
    }
    st.stats.take(&st);
    st.stats.save();
}
