//! Connections of `stratum serve`: the accept loop, its cap and timeouts,
//! for HTTP/1.1 and HTTP/2 alike.
//!
//! Both protocols are served on the same port: a connection that opens with
//! the HTTP/2 preface (`PRI * HTTP/2.0…`, a client with prior knowledge:
//! `curl --http2-prior-knowledge`, `stratum pull --http2-prior-knowledge`)
//! is served as HTTP/2 over cleartext (h2c), any other as HTTP/1.1. There
//! is no `Upgrade: h2c` (deprecated by RFC 9113) and no TLS (terminate TLS
//! in front, see docs/DEPLOYMENT.md).
//!
//! A client that opens connections and sends nothing, or half a request, or
//! stops reading a response, must not hold the server's file descriptors
//! forever (issue 12, item 3: 300 half-sent requests under a 256-descriptor
//! limit once stopped it from answering anyone). Nor may a client that
//! holds every connection with a small request now and then, under both
//! timeouts, keep everyone else out (security review). So:
//!
//! - At most [`ConnLimits::max_connections`] connections are served at once.
//!   When every slot is taken, the accept loop accepts one more connection
//!   and holds it, unserved, until a slot frees up; the others wait in the
//!   kernel's listen backlog, where they cost the server no descriptor, and
//!   are accepted in turn.
//! - While that connection waits, kept-alive connections that are idle
//!   between requests are closed for it, the longest idle first, one at a
//!   time (again every [`EVICT_RETRY`] while it still waits), as nginx does
//!   with its idle keep-alive connections when it runs out of connections:
//!   so a client holding every slot with a request now and then keeps no one
//!   out. hyper's `graceful_shutdown` closes a connection at once when it is
//!   idle; a request in progress is never interrupted (its connection, were
//!   it picked while the request arrived, closes after the response).
//! - A kept-alive connection serves at most [`MAX_REQUESTS_PER_CONNECTION`]
//!   requests (nginx's `keepalive_requests`): the last response says
//!   `Connection: close`.
//! - hyper's HTTP/1 header read timeout closes a connection that has not sent
//!   a complete request head within [`ConnLimits::header_timeout`] of being
//!   accepted or of the end of its previous response (so it also bounds how
//!   long an idle kept-alive connection stays open).
//! - [`IdleTimeout`] closes a connection on which no byte could be read or
//!   written for [`ConnLimits::idle_timeout`]: a client that stopped reading
//!   the response, or a stalled request body.
//! - Whatever the protocol, a connection with no request in flight for
//!   [`ConnLimits::header_timeout`] is asked to close (HTTP/2: `GOAWAY`),
//!   and dropped if it is still open, still without a request in flight,
//!   one more header timeout later (a peer that does not finish the close).
//!   For HTTP/1 this is what hyper's header read timeout does already; for
//!   HTTP/2, which has no such timeout, it bounds a connection that sends
//!   the preface and nothing else, or half a header block.
//!
//! HTTP/2 multiplexes requests on one connection, so a slot no longer bounds
//! the requests, and bytes moving on a connection (a `PING` now and then,
//! one stream read slowly) no longer prove that each response is read: a
//! connection carries at most [`MAX_STREAMS_PER_CONNECTION`]
//! streams at once (nginx's `http2_max_concurrent_streams`), a header block
//! may decode to at most [`MAX_HEADER_LIST_SIZE`] bytes, streams reset by
//! the client before being answered are bounded (hyper's defaults against
//! "rapid reset", CVE-2023-44487), and the server answers at most
//! `max_connections` requests at once over all connections (more wait for
//! their turn, in order), so the memory a server holds for responses (up
//! to 1 MiB per request, see `READ_WHOLE_MAX`) stays what it was with
//! HTTP/1 alone. An HTTP/2 connection on which a response being answered
//! has sent nothing for [`ConnLimits::idle_timeout`] (its stream's
//! flow-control window kept shut; a body is sent in frames of up to 64 KiB,
//! so less than one per idle timeout) is closed, as [`IdleTimeout`] closes an HTTP/1
//! connection whose client stopped reading. The request limit per
//! connection closes an HTTP/2 connection with `GOAWAY` (the streams open
//! finish).
//!
//! Graceful shutdown ([`Connections::shutdown`]): every connection is asked
//! to close (idle ones close at once, the others after their response); the
//! caller decides how long to wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
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

/// Requests served on one kept-alive connection before it is closed: nginx's
/// `keepalive_requests` default.
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// Concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`):
/// nginx's `http2_max_concurrent_streams`; above the 64 downloads in flight
/// that a `pull --jobs 64` asks for.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Decoded size of an HTTP/2 request's header block
/// (`SETTINGS_MAX_HEADER_LIST_SIZE`): a GET of a repository path with
/// conditional headers needs a few hundred bytes.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Streams an HTTP/2 client may reset before the server has answered them,
/// pending at once, before the connection is closed (the h2 crate's
/// default, against "rapid reset").
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// While a connection waits for a slot, how often an idle connection is
/// looked for again when closing the last one picked freed no slot (none was
/// idle, or the one picked had just received a request).
const EVICT_RETRY: Duration = Duration::from_millis(100);

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
) -> Connections {
    let conns = Connections::new(limits.max_connections);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS);
    // Requests answered at once, over all connections and protocols.
    let answering = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut stop = std::pin::pin!(stop);
    let mut last_error_warned: Option<Instant> = None;
    loop {
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
        // A slot, closing idle connections for it when all are taken.
        let permit = match conns.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::debug!(%peer, "every connection slot taken: closing idle connections");
                tokio::select! {
                    p = conns.slot_by_eviction() => match p {
                        Some(p) => p,
                        // Never closed; if it were, stop serving rather than panic.
                        None => break,
                    },
                    () = &mut stop => break,
                }
            }
        };
        // Objects are fetched one small request after another on a
        // kept-alive connection: without TCP_NODELAY each response waits on
        // delayed ACKs.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
        let (id, state) = conns.register();
        let app = app.clone();
        let service_state = state.clone();
        let answering = answering.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // The access log reads the client's address from here.
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::start(service_state.clone());
            let last = service_state.requests.fetch_add(1, Ordering::Relaxed) + 1
                >= MAX_REQUESTS_PER_CONNECTION;
            if last && req.version() == hyper::Version::HTTP_2 {
                // GOAWAY: the streams open are answered, no new one is.
                service_state.ask_to_close();
            }
            let mut app = app.clone();
            let answering = answering.clone();
            async move {
                // Never closed, so never `None`.
                let turn = answering.acquire_owned().await.ok();
                let http1 = req.version() != hyper::Version::HTTP_2;
                let mut res = app.call(req.map(Body::new)).await?;
                if last && http1 {
                    // hyper closes the connection after this response.
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                let progress = Arc::new(AtomicU64::new(busy.0.now()));
                if !http1 {
                    // HTTP/1: `IdleTimeout` sees a client that stops reading.
                    busy.0.track_response(&progress);
                }
                Ok::<_, std::convert::Infallible>(res.map(|body| BusyBody {
                    body,
                    progress,
                    busy,
                    _turn: turn,
                }))
            }
        });
        let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
        let conn = http.serve_connection(io, service).into_owned();
        let conns_ = conns.clone();
        let idle_close = limits.header_timeout;
        let stall = limits.idle_timeout;
        let stall_tick = (stall / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut closing = false;
            let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = loop {
                let wait = state
                    .idle_for()
                    .map_or(idle_close, |d| idle_close.saturating_sub(d))
                    .min(stall_tick);
                tokio::select! {
                    r = conn.as_mut() => break r,
                    () = state.close.notified(), if !closing => {
                        // Closes it now if idle, else after the responses
                        // in progress (HTTP/2: GOAWAY first).
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        state.restart_idle_clock();
                    }
                    () = tokio::time::sleep(wait) => {
                        if state.longest_stall().is_some_and(|d| d >= stall) {
                            break Err(format!(
                                "a response sent nothing for {stall:?}: closed"
                            ).into());
                        }
                        if state.idle_for().is_some_and(|d| d >= idle_close) {
                            if closing {
                                // Asked to close a header timeout ago, idle
                                // since, and still open.
                                break Ok(());
                            }
                            state.ask_to_close();
                        }
                    }
                }
            };
            if let Err(e) = r {
                // Timeouts, resets and malformed requests: the client's.
                tracing::debug!(%peer, "connection closed: {e}");
            }
            conns_.unregister(id);
            drop(permit);
        });
    }
    conns
}

/// The connections being served: their slots, and what is needed to close
/// idle ones for a waiting connection and all of them at shutdown.
#[derive(Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max: u32,
    registry: Arc<Registry>,
}

struct Registry {
    /// The origin of [`ConnState::idle_since`].
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

/// What the accept loop knows of one connection.
struct ConnState {
    epoch: Instant,
    /// Requests whose response has not been sent (or dropped) yet.
    in_flight: AtomicU32,
    /// Since when no request is in flight, in nanoseconds since `epoch`.
    idle_since: AtomicU64,
    /// Requests received.
    requests: AtomicU32,
    /// Asked to close already.
    closing: AtomicBool,
    /// When each response being sent last sent something (see
    /// [`BusyBody`]), in nanoseconds since `epoch`.
    responses: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    close: Notify,
}

impl ConnState {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long no request has been in flight, or `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.idle_since.load(Ordering::Relaxed);
        Some(Duration::from_nanos(self.now().saturating_sub(since)))
    }

    /// Tracks a response being sent: `progress` holds when it last sent
    /// something.
    fn track_response(&self, progress: &Arc<AtomicU64>) {
        let mut r = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        r.retain(|p| p.strong_count() > 0);
        r.push(Arc::downgrade(progress));
    }

    /// The longest time a response being sent has sent nothing, if any is
    /// being sent.
    fn longest_stall(&self) -> Option<Duration> {
        let now = self.now();
        let mut r = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        r.retain(|p| p.strong_count() > 0);
        r.iter()
            .filter_map(|p| p.upgrade())
            .map(|p| Duration::from_nanos(now.saturating_sub(p.load(Ordering::Relaxed))))
            .max()
    }

    /// Counts the idle time from now on (the grace given to a connection
    /// asked to close).
    fn restart_idle_clock(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
    }

    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        // Stores the wake-up if the task is not waiting yet.
        self.close.notify_one();
    }
}

impl Connections {
    fn new(max: u32) -> Self {
        Connections {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            registry: Arc::new(Registry {
                epoch: Instant::now(),
                next_id: AtomicU64::new(0),
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.registry
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self) -> (u64, Arc<ConnState>) {
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        let epoch = self.registry.epoch;
        let state = Arc::new(ConnState {
            epoch,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            responses: Mutex::new(Vec::new()),
            close: Notify::new(),
        });
        state.idle_since.store(state.now(), Ordering::Relaxed);
        self.open().insert(id, state.clone());
        (id, state)
    }

    fn unregister(&self, id: u64) {
        self.open().remove(&id);
    }

    /// Asks the connection idle longest (no request in flight) to close;
    /// `false` when none is idle. A connection accepted just now counts as
    /// idle too, but as the most recently idle it is picked last.
    fn close_longest_idle(&self) -> bool {
        let open = self.open();
        let oldest = open
            .values()
            .filter(|c| {
                !c.closing.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Relaxed) == 0
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                c.ask_to_close();
                true
            }
            None => false,
        }
    }

    /// A slot for a connection that waits for one: closes idle connections,
    /// one at a time, until one frees up. `None` if the semaphore was closed
    /// (it never is).
    async fn slot_by_eviction(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            self.close_longest_idle();
            tokio::select! {
                p = self.slots.clone().acquire_owned() => return p.ok(),
                () = tokio::time::sleep(EVICT_RETRY) => {}
            }
        }
    }

    /// Asks every connection to close (at once when idle, after the response
    /// in progress otherwise) and resolves when all are closed.
    pub async fn shutdown(self) {
        for c in self.open().values() {
            c.ask_to_close();
        }
        let _all = self.slots.acquire_many(self.max).await;
    }
}

/// A request in flight on a connection, from its head to the end (or drop)
/// of its response body.
struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request marked in flight, and its turn
/// among the requests answered at once.
struct BusyBody {
    body: Body,
    /// When a frame of this body was last sent (or the body created).
    progress: Arc<AtomicU64>,
    busy: Busy,
    _turn: Option<OwnedSemaphorePermit>,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &r {
            self.progress.store(self.busy.0.now(), Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
