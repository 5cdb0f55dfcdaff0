//! Live rate limits and traffic counters.
//!
//! Every transfer stream of a [`TransferService`](crate::TransferService) is wrapped in a
//! [`Throttled`] stream holding the node's upload and download limiters, so a
//! limit set later applies at once to every open stream. While a limiter is
//! unlimited the wrapper costs one relaxed atomic load per read or write (plus
//! the byte counter); the token bucket's mutex is only touched while a limit is
//! set. A download also has its own limiter, applied by its sessions' readers on
//! top of the node-wide one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Stream;

/// Rate limits in bytes per second; `None` = unlimited (`Some(0)` also means
/// unlimited and reads back as `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes per second written to all transfer streams together.
    pub upload: Option<u64>,
    /// Bytes per second read from all transfer streams together.
    pub download: Option<u64>,
}

/// Totals since the node started, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Bytes written to transfer streams (pieces and protocol messages).
    pub bytes_up: u64,
    /// Bytes read from transfer streams (pieces and protocol messages).
    pub bytes_down: u64,
    /// Downloaded pieces that passed verification and were stored.
    pub pieces_verified: u64,
    /// Downloaded pieces that failed verification.
    pub pieces_failed: u64,
}

/// The counters behind [`Counters`], shared by every stream of a node.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) pieces_verified: AtomicU64,
    pub(crate) pieces_failed: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            pieces_verified: self.pieces_verified.load(Ordering::Relaxed),
            pieces_failed: self.pieces_failed.load(Ordering::Relaxed),
        }
    }
}

/// The longest a paced stream sleeps before looking at its limiter again, so a
/// raised (or removed) limit is seen quickly.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Bytes a paced read or write waits for (when asked for at least that many),
/// so a slow limit does not turn into many tiny system calls.
const MIN_CHUNK: usize = 8 * 1024;

/// A token bucket whose rate can change at any time.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    /// Tokens available and when they were last counted.
    state: Mutex<(f64, Instant)>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(None)
    }
}

/// The most bytes a rate limit of `rate` bytes per second lets through at
/// once after an idle time: 250 ms of traffic saved up, and at least one
/// chunk. Enough for a stream that was not scheduled for a while (a busy
/// machine) to catch up, small enough not to show as a burst above the rate.
/// A lower bound on transfer time under the limit must allow for it.
pub fn burst_bytes(rate: u64) -> u64 {
    (rate / 4).max(MIN_CHUNK as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RateLimiter {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            rate: AtomicU64::new(rate.unwrap_or(0)),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Sets the rate (`None` or 0: unlimited); applies to the next read or write.
    pub(crate) fn set(&self, rate: Option<u64>) {
        let rate = rate.unwrap_or(0);
        let old = self.rate.swap(rate, Ordering::Relaxed);
        if old != rate {
            // Start the new rate from an empty bucket: a burst saved up under a
            // higher rate must not overshoot the new one.
            *lock(&self.state) = (0.0, Instant::now());
        }
    }

    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// Bytes that may pass now (at most `want`, at least 1 when `want` > 0),
    /// taken from the bucket, or how long to wait before asking again.
    /// Unlimited: `Ok(want)`.
    pub(crate) fn take(&self, want: usize) -> Result<usize, Duration> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 || want == 0 {
            return Ok(want);
        }
        let rate = rate as f64;
        let burst = burst_bytes(rate as u64) as f64;
        let need = want.min(MIN_CHUNK) as f64;
        let mut st = lock(&self.state);
        let now = Instant::now();
        let refill = now.saturating_duration_since(st.1).as_secs_f64() * rate;
        st.0 = (st.0 + refill).min(burst);
        st.1 = now;
        if st.0 >= need {
            let n = (st.0 as usize).min(want).max(1);
            st.0 -= n as f64;
            Ok(n)
        } else {
            let wait = Duration::from_secs_f64((need - st.0) / rate);
            Err(wait.clamp(Duration::from_millis(1), MAX_WAIT))
        }
    }

    /// Returns bytes taken but not used.
    pub(crate) fn give_back(&self, n: usize) {
        if n == 0 || self.rate.load(Ordering::Relaxed) == 0 {
            return;
        }
        lock(&self.state).0 += n as f64;
    }

    /// Waits until at least one byte (up to `want`) may pass and takes it.
    pub(crate) async fn acquire(&self, want: usize) -> usize {
        loop {
            match self.take(want) {
                Ok(n) => return n,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// A node's limiters and counters, shared by all its streams.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    pub(crate) up: RateLimiter,
    pub(crate) down: RateLimiter,
    pub(crate) stats: Stats,
}

impl Meter {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            upload: self.up.get(),
            download: self.down.get(),
        }
    }

    pub(crate) fn set_limits(&self, l: Limits) {
        self.up.set(l.upload);
        self.down.set(l.download);
    }
}

/// A stream whose reads and writes are counted and paced by a node's [`Meter`].
pub(crate) struct Throttled<S> {
    inner: S,
    meter: Arc<Meter>,
    rsleep: Option<Pin<Box<tokio::time::Sleep>>>,
    wsleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Stream> Throttled<S> {
    pub(crate) fn new(inner: S, meter: Arc<Meter>) -> Self {
        Self {
            inner,
            meter,
            rsleep: None,
            wsleep: None,
        }
    }
}

/// Polls a pacing sleep; `Ready` once it is over (or there is none).
fn poll_sleep(sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>, cx: &mut Context<'_>) -> bool {
    if let Some(sl) = sleep.as_mut() {
        if sl.as_mut().poll(cx).is_pending() {
            return false;
        }
        *sleep = None;
    }
    true
}

impl<S: Stream> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !poll_sleep(&mut this.rsleep, cx) {
                return Poll::Pending;
            }
            let want = buf.remaining();
            match this.meter.down.take(want) {
                Ok(n) if n == want => {
                    // Unlimited (or enough tokens for all of it): read in place.
                    let before = buf.filled().len();
                    let res = Pin::new(&mut this.inner).poll_read(cx, buf);
                    let got = match &res {
                        Poll::Ready(Ok(())) => buf.filled().len() - before,
                        _ => 0,
                    };
                    this.meter.down.give_back(n - got);
                    this.meter
                        .stats
                        .bytes_down
                        .fetch_add(got as u64, Ordering::Relaxed);
                    return res;
                }
                Ok(n) => {
                    let mut sub = ReadBuf::new(buf.initialize_unfilled_to(n));
                    let res = Pin::new(&mut this.inner).poll_read(cx, &mut sub);
                    let got = match &res {
                        Poll::Ready(Ok(())) => sub.filled().len(),
                        _ => 0,
                    };
                    buf.advance(got);
                    this.meter.down.give_back(n - got);
                    this.meter
                        .stats
                        .bytes_down
                        .fetch_add(got as u64, Ordering::Relaxed);
                    return res;
                }
                Err(wait) => this.rsleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }
}

impl<S: Stream> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        loop {
            if !poll_sleep(&mut this.wsleep, cx) {
                return Poll::Pending;
            }
            match this.meter.up.take(buf.len()) {
                Ok(n) => {
                    let res = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
                    let w = match &res {
                        Poll::Ready(Ok(w)) => *w,
                        _ => 0,
                    };
                    this.meter.up.give_back(n - w.min(n));
                    this.meter
                        .stats
                        .bytes_up
                        .fetch_add(w as u64, Ordering::Relaxed);
                    return res;
                }
                Err(wait) => this.wsleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_limiter_passes_everything_at_once() {
        let l = RateLimiter::new(None);
        assert_eq!(l.take(1 << 20), Ok(1 << 20));
        l.set(Some(0));
        assert_eq!(l.get(), None);
        assert_eq!(l.take(1 << 20), Ok(1 << 20));
    }

    #[test]
    fn limited_limiter_starts_empty_and_asks_to_wait() {
        let l = RateLimiter::new(None);
        l.set(Some(1000));
        assert_eq!(l.get(), Some(1000));
        let wait = l
            .take(100_000)
            .expect_err("an empty bucket must ask to wait");
        assert!(wait > Duration::ZERO && wait <= MAX_WAIT);
    }

    #[test]
    fn given_back_tokens_are_reused() {
        let l = RateLimiter::new(Some(1));
        l.give_back(MIN_CHUNK);
        assert_eq!(l.take(MIN_CHUNK), Ok(MIN_CHUNK));
    }
}
