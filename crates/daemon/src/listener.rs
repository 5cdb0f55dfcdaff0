//! The API's listener and server: at most `max` connections at once (more
//! wait in the kernel's backlog, holding no file descriptor and no memory of
//! ours), a connection that moves no byte either way for `idle` is closed, and
//! a request whose headers do not arrive whole within `header` is cut off
//! (hyper's header-read timeout), so trickling bytes does not keep a slot.
//! Accept errors (such as running out of file descriptors) are logged at most
//! every 10 s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Most API connections open at once.
pub const MAX_API_CONNECTIONS: usize = 512;
/// An API connection that moves no byte for this long is closed (above the
/// event stream's 15 s keep-alive, so a quiet event stream stays).
pub const API_IDLE: Duration = Duration::from_secs(60);
/// A request's headers must arrive whole within this time of its first byte.
pub const API_HEADER: Duration = Duration::from_secs(10);
/// How long stopping waits for connections to finish their responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` turns true, then lets the open
/// connections finish (at most `SHUTDOWN_GRACE`).
pub(crate) async fn serve(
    mut listener: Guarded,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    header: Duration,
) {
    use axum::serve::Listener;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            _ = async { stop.wait_for(|c| *c).await.is_ok() } => break,
        };
        // Finished connection tasks are reaped as we go.
        while conns.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, "an API connection ended");
                    }
                }
                _ = async { stop.wait_for(|c| *c).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

pub(crate) struct Guarded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
    last_error_log: Option<Instant>,
}

impl Guarded {
    pub(crate) fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle,
            last_error_log: None,
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // Never closed; wait as if at the cap.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((s, addr)) => return (GuardedStream::new(s, permit, self.idle), addr),
                Err(e) => {
                    let now = Instant::now();
                    if self
                        .last_error_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                    {
                        tracing::warn!(error = %e, "the API cannot accept a connection");
                        self.last_error_log = Some(now);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted API connection: holds its slot until dropped, and fails once
/// it moved no byte for `idle`.
pub(crate) struct GuardedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl GuardedStream {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            inner,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn idle_error(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no byte moved for {} s", self.idle.as_secs()),
        )
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(self.idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(self.idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
