//! Connections of `stratum serve`: the accept loop, its cap and timeouts.
//!
//! A client that opens connections and sends nothing, or half a request, or
//! stops reading a response, must not hold the server's file descriptors
//! forever (issue 12, item 3: 300 half-sent requests under a 256-descriptor
//! limit once stopped it from answering anyone). So:
//!
//! - At most [`ConnLimits::max_connections`] connections are open at once. A
//!   slot is taken *before* `accept`, so beyond the cap connections wait in
//!   the kernel's listen backlog, where they cost the server no descriptor,
//!   and are accepted in turn as slots free up.
//! - hyper's HTTP/1 header read timeout closes a connection that has not sent
//!   a complete request head within [`ConnLimits::header_timeout`] of being
//!   accepted or of the end of its previous response (so it also bounds how
//!   long an idle kept-alive connection stays open).
//! - [`IdleTimeout`] closes a connection on which no byte could be read or
//!   written for [`ConnLimits::idle_timeout`]: a client that stopped reading
//!   the response, or a stalled request body.
//!
//! Graceful shutdown: hyper-util's `GracefulShutdown` watches every
//! connection; the caller triggers it and decides how long to wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower_service::Service;

/// Default of `--header-timeout`: ample for any client to send a request
/// head of a few hundred bytes, short enough that connections held open
/// without one free their slot quickly.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `--idle-timeout`: nginx's `send_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

/// Descriptors kept for everything but connections: the listener, the
/// runtime's epoll and wakers, stdio, the signal pipe, the access to
/// `.stratum/` while starting.
const RESERVED_FDS: u64 = 64;

/// How long the accept loop waits after an accept error (out of descriptors,
/// say) before trying again, so that a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connection limits of `stratum serve`.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

/// The number of connections that the file-descriptor limit allows, at most
/// `wanted`. Each connection may hold two descriptors (its socket, and the
/// file of a response streamed from disk); the soft limit is raised towards
/// the hard one when that is not enough, and the cap lowered, with a
/// warning, when even the hard limit is not.
pub fn fit_fd_limit(wanted: u32) -> u32 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let need = u64::from(wanted) * 2 + RESERVED_FDS;
    let mut lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= need {
        return wanted;
    }
    let hard = lim.maximum.unwrap_or(u64::MAX);
    lim.current = Some(need.min(hard));
    let soft = match setrlimit(Resource::Nofile, lim) {
        Ok(()) => need.min(hard),
        Err(e) => {
            tracing::debug!("raising RLIMIT_NOFILE: {e}");
            soft
        }
    };
    if soft >= need {
        return wanted;
    }
    // Below `wanted`, so it fits in a u32.
    let fits = u32::try_from(soft.saturating_sub(RESERVED_FDS) / 2)
        .unwrap_or(wanted)
        .max(1);
    tracing::warn!(
        "the file-descriptor limit ({soft}) is too low for --max-connections {wanted}; \
         serving at most {fits} connections at once (raise `ulimit -n` to {need})"
    );
    fits
}

/// Accepts and serves connections with `app` until `stop` resolves, then
/// returns the handle that shuts the open connections down gracefully.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut stop = std::pin::pin!(stop);
    let mut last_error_warned: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Never closed; if it were, stop serving rather than panic.
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Per-connection errors (a client that reset before
                    // accept) and resource exhaustion alike: the listener
                    // stays usable, so wait a little and go on. Warn at most
                    // once a minute: a flood must not flood the log too.
                    if last_error_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!("accepting a connection: {e}");
                        last_error_warned = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Objects are fetched one small request after another on a
        // kept-alive connection: without TCP_NODELAY each response waits on
        // delayed ACKs.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // The access log reads the client's address from here.
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req.map(Body::new)).await }
        });
        let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts, resets and malformed requests: the client's.
                tracing::debug!(%peer, "connection closed: {e}");
            }
            drop(permit);
        });
    }
    graceful
}

/// A connection that fails with `TimedOut` once no byte could be read or
/// written for `timeout`. The clock starts when an operation first has to
/// wait and restarts with every byte that moves in either direction, so the
/// time a request spends being answered does not count.
pub struct IdleTimeout<T> {
    io: T,
    timeout: Duration,
    /// Armed while blocked, `None` after progress.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(io: T, timeout: Duration) -> Self {
        IdleTimeout {
            io,
            timeout,
            deadline: None,
        }
    }

    /// After an operation returned `Pending`: arm the clock if it is not
    /// running, and fail once it has run out.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no byte read or written for {timeout:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Interprets the result of an operation: progress stops the clock,
    /// waiting runs it.
    fn track<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
        progressed: impl FnOnce(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(Ok(v)) => {
                if progressed(&v) {
                    self.deadline = None;
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.blocked(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = buf.filled().len() > before;
        this.track(cx, r, |()| read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(cx, r, |&n| n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(cx, r, |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.track(cx, r, |()| true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.track(cx, r, |()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn idle_timeout_fails_a_blocked_read_and_restarts_on_progress() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, TIMEOUT);
        let mut buf = [0u8; 8];
        // Bytes that keep coming, each within the timeout though together
        // well beyond it: the clock restarts with each.
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(TIMEOUT / 2).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        for _ in 0..4 {
            assert_eq!(a.read(&mut buf).await.unwrap(), 1);
        }
        let _b = writer.await.unwrap();
        // Then nothing: TimedOut after the timeout.
        let start = Instant::now();
        let e = a.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= TIMEOUT);
    }

    #[tokio::test]
    async fn idle_timeout_fails_a_write_the_peer_never_reads() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, TIMEOUT);
        // The first 64 bytes fit in the pipe, then writing blocks for good.
        let e = a.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
