//! Rolling-window transfer rate, measured from `now` values passed in.

use crate::types::Time;
use std::time::Duration;

const BUCKETS: usize = 8;
const BUCKET: Duration = Duration::from_millis(1000);

/// Bytes per second over the last `BUCKETS` seconds (fewer right after the
/// first sample, never less than one bucket, so a single piece does not read
/// as an enormous rate).
#[derive(Clone, Debug, Default)]
pub struct RateMeter {
    buckets: [u64; BUCKETS],
    /// Absolute index (`now / BUCKET`) of the newest bucket.
    head: u64,
    first: Option<Time>,
    total: u64,
}

impl RateMeter {
    fn advance(&mut self, now: Time) {
        let idx = (now.as_micros() / BUCKET.as_micros()) as u64;
        if idx <= self.head {
            return;
        }
        let steps = (idx - self.head).min(BUCKETS as u64);
        for k in 1..=steps {
            self.buckets[((self.head + k) % BUCKETS as u64) as usize] = 0;
        }
        self.head = idx;
    }

    /// Records `bytes` transferred at `now`.
    pub fn add(&mut self, bytes: u64, now: Time) {
        self.advance(now);
        if self.first.is_none() {
            self.first = Some(now);
        }
        self.buckets[(self.head % BUCKETS as u64) as usize] += bytes;
        self.total += bytes;
    }

    /// Total bytes ever recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes per second at `now`.
    pub fn rate(&mut self, now: Time) -> f64 {
        self.advance(now);
        let Some(first) = self.first else { return 0.0 };
        let sum: u64 = self.buckets.iter().sum();
        let window = BUCKET * BUCKETS as u32;
        let span = now.saturating_sub(first).clamp(BUCKET, window);
        sum as f64 / span.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_recent_bytes_and_decays() {
        let mut m = RateMeter::default();
        for s in 0..8u64 {
            m.add(1000, Duration::from_secs(s));
        }
        let r = m.rate(Duration::from_secs(8));
        assert!((r - 1000.0).abs() < 200.0, "{r}");
        assert_eq!(m.rate(Duration::from_secs(30)), 0.0);
        assert_eq!(m.total(), 8000);
    }
}
