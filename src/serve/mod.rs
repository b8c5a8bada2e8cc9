//! `stratum serve`: the embedded read-only HTTP server of a repository.
//!
//! A repository is plain static files (see `docs/FORMAT.md` §1), so any web
//! server can serve it; this one adds the headers that make HTTP caches and
//! clients efficient and refuses what a reader must never see:
//!
//! - Methods: `GET` and `HEAD` only; anything else is `405` with
//!   `Allow: GET, HEAD`.
//! - What is served: only the paths the format defines for readers:
//!   `.stratum/manifest`, `.stratum/public.pem`, and regular files at object
//!   paths, `data/<2 hex>/<62 hex><kind suffix>` (suffix none, `C` or `M`,
//!   FORMAT.md §2). Everything else is `404`: the writer's files
//!   (`.stratum/lock`, `.stratum/dirty`, `.stratum/tmp/`), anything else
//!   under `.stratum/`, any other file in the directory (a private key left
//!   there by mistake, notes, backups), directories, devices and fifos, and
//!   paths with `..` (refused before the file system is touched). Symlinks
//!   below the repository root are never followed: every component of a
//!   path is opened with `O_NOFOLLOW`, so a file behind a symlink (a
//!   symlinked object, or any file under a symlinked `data/`, `data/<2 hex>/`
//!   or `.stratum/`) is `404`. The root itself may be a symlink (it is
//!   resolved once at start). A symlinked `data/`, `.stratum/` or
//!   `data/<2 hex>/` is warned about at start ([`warn_about_symlinked_dirs`]:
//!   use a bind mount instead), and so is a private key inside the
//!   repository ([`crate::stray_keys`]), since other servers would serve it.
//! - Caching: objects under `data/` are immutable and content-addressed, so
//!   they get `Cache-Control: public, max-age=<--max-age>, immutable`
//!   (default one year). Every other served file (the manifest, the public
//!   key) gets `Cache-Control: no-cache`: caches must revalidate it.
//! - Validators: a strong `ETag` derived from the file's mtime (nanoseconds)
//!   and size, and `Last-Modified`; `If-None-Match` / `If-Modified-Since`
//!   give `304`, `If-Match` / `If-Unmodified-Since` give `412`.
//! - Ranges: one byte range per request (`206` with `Content-Range`;
//!   `416` with `Content-Range: bytes */SIZE` when unsatisfiable or
//!   malformed). A request with several ranges is answered `200` with the
//!   whole body (RFC 9110 allows a server to ignore `Range`; no multipart).
//!   `If-Range` is honoured with a strong ETag; a date or another ETag gives
//!   the whole body (`200`).
//! - Every successful response is `Content-Type: application/octet-stream`
//!   with `X-Content-Type-Options: nosniff`.
//! - Access log: one `tracing` event per request at `info` level, target
//!   `stratum::serve::access`, when the body has been sent (or dropped): client,
//!   method, protocol version (`HTTP/1.1`, `HTTP/2.0`), path, status, body bytes actually sent, duration, and whether the
//!   body was sent completely. Show it with `RUST_LOG=stratum::serve=info`.
//! - Protocols ([`conn`]): HTTP/1.1, and HTTP/2 over cleartext (h2c) for a
//!   client with prior knowledge, on the same port.
//! - Connections ([`conn`]): at most `--max-connections` at once (the rest
//!   wait in the listen backlog); when all are taken and another connection
//!   waits, kept-alive connections idle between requests are closed for it,
//!   the longest idle first (as nginx does), so one client cannot hold every
//!   slot; at most 1000 requests per kept-alive connection; closed when a
//!   complete request head has not arrived within `--header-timeout` or when
//!   nothing moved for `--idle-timeout`. HTTP/2: at most 128 streams per
//!   connection, at most `--max-connections` requests answered at once over
//!   all connections, a connection idle for `--header-timeout` gets
//!   `GOAWAY`, one whose response sent nothing for `--idle-timeout` is
//!   closed.
//! - Metrics (`--metrics HOST:PORT`): each request counted by status, with
//!   the body bytes sent and its duration, when its access-log line is
//!   written (`stratum_metrics::serve`).
//! - Shutdown: SIGINT or SIGTERM stops accepting connections and waits up to
//!   [`SHUTDOWN_GRACE`] for requests in flight; a second signal exits at once.

use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use stratum_catalog::layout::{self, ReaderPath as Class};
use tower_http::services::fs::{Backend, File as BackendFile, ServeDir};

mod conn;

pub use conn::{ConnLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};

/// Default `max-age` of objects under `data/`: one year, the customary
/// maximum (RFC 9111 caches treat larger values the same).
pub const DEFAULT_MAX_AGE: u64 = 365 * 24 * 60 * 60;

/// How long a shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The repository directory.
    repo: PathBuf,
    /// Address to listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Cache lifetime of the immutable objects under data/, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MAX_AGE)]
    max_age: u64,
    /// Close a connection that has not sent a complete request head within SECONDS of
    /// connecting or of the end of its previous response (so also how long an idle
    /// kept-alive connection stays open).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    header_timeout: u64,
    /// Close a connection on which no byte could be read or written for SECONDS (a client
    /// that stopped reading a response).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    idle_timeout: u64,
    /// Serve at most N connections at once; further ones wait in the listen backlog until
    /// one closes, and when all are taken, kept-alive connections idle between requests are
    /// closed for a waiting one (the longest idle first, as nginx does). Lowered, with a warning, when the file-descriptor limit (raised up to its
    /// hard limit if needed) cannot hold two descriptors per connection.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    #[command(flatten)]
    metrics: crate::metrics_args::MetricsArgs,
}

/// `stratum serve REPO --listen ADDR --max-age SECONDS` with the connection
/// limits: serves until SIGINT or SIGTERM.
pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let (repo, listen, max_age) = (a.repo.as_path(), a.listen.as_str(), a.max_age);
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(a.header_timeout),
        idle_timeout: Duration::from_secs(a.idle_timeout),
        max_connections: a.max_connections,
    };
    if repo.to_str().is_some_and(|r| r.starts_with("s3://")) {
        bail!(
            "{} is an S3 bucket: nodes read it from the bucket's own HTTP(S) endpoint \
             (see docs/DEPLOYMENT.md), `stratum serve` serves a local directory",
            repo.display()
        );
    }
    let root =
        std::fs::canonicalize(repo).with_context(|| format!("cannot serve {}", repo.display()))?;
    if !root.join(layout::META_DIR).is_dir() {
        bail!(
            "{} is not a stratum repository (no .stratum directory)",
            repo.display()
        );
    }
    crate::stray_keys::warn_about_private_keys(&root);
    warn_about_symlinked_dirs(&root);
    a.metrics.install()?;
    let limits = ConnLimits {
        max_connections: conn::fit_fd_limit(limits.max_connections),
        ..limits
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stratum-serve")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(root, listen, max_age, limits))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(root: PathBuf, listen: &str, max_age: u64, limits: ConnLimits) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(
        root = %root.display(),
        %addr,
        max_age,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        max_connections = limits.max_connections,
        "serving repository"
    );

    let app = router(root, max_age)?;
    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        let s = shutdown_signal().await;
        let _ = signal_tx.send(s);
    };
    let graceful = conn::accept_loop(listener, app, limits, stop).await;
    // The accept loop ends only on a signal (or when the signal handler
    // could not be installed, reported here).
    let s = signal_rx.await.context("waiting for a signal")?;
    tracing::info!(signal = s?, "shutting down: finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
        }
        s = shutdown_signal() => {
            tracing::warn!(signal = s?, "second signal: closing requests in flight");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The directories of the repository `root` that are symlinks and so hide
/// what they hold: `.stratum`, `data` and, unless `data` itself is one, each
/// `data/<2 lowercase hex>`. Sorted.
fn symlinked_dirs(root: &Path) -> Vec<PathBuf> {
    let is_symlink =
        |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    let mut out: Vec<PathBuf> = [layout::META_DIR, layout::DATA_DIR]
        .iter()
        .map(|d| root.join(d))
        .filter(|p| is_symlink(p))
        .collect();
    let data = root.join(layout::DATA_DIR);
    if !is_symlink(&data) {
        if let Ok(entries) = std::fs::read_dir(&data) {
            for e in entries.flatten() {
                let name = e.file_name();
                let is_object_dir = name.to_str().is_some_and(|n| {
                    n.len() == 2
                        && n.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                });
                if is_object_dir && e.file_type().is_ok_and(|t| t.is_symlink()) {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// Prints a warning on stderr for each directory of [`symlinked_dirs`]:
/// `stratum serve` answers `404` for everything behind it. Printed rather
/// than logged, like the private-key warning: a repository whose objects
/// are all 404 must not hide behind a `RUST_LOG` filter.
fn warn_about_symlinked_dirs(root: &Path) {
    for dir in symlinked_dirs(root) {
        eprintln!(
            "warning: {} is a symlink: `stratum serve` follows no symlink below the \
             repository root (each path component is opened with O_NOFOLLOW), so \
             every file behind it will be 404. Use a bind mount instead \
             (mount --bind TARGET {})",
            dir.display(),
            dir.display()
        );
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn shutdown_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// The application: policy and access log around a confined `ServeDir`.
fn router(root: PathBuf, max_age: u64) -> Result<Router> {
    let policy = Arc::new(Policy {
        immutable: HeaderValue::from_str(&format!("public, max-age={max_age}, immutable"))?,
    });
    let files = ServeDir::with_backend(&root, RepoBackend { root: root.clone() })
        .append_index_html_on_directories(false)
        .redirect_to_trailing_slash(false)
        .ignore_multi_range_requests(true);
    Ok(Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn_with_state(policy, apply_policy))
        .layer(middleware::from_fn(access_log)))
}

// ---------------------------------------------------------------------------
// What is served, and how it may be cached

/// The class of a repository-relative path, or `None` when it must not be
/// served. Only what the format defines for readers (FORMAT.md §1, §2) is
/// served: the manifest, the public key, and object paths
/// (`data/<2 hex>/<62 hex><kind suffix>`, parsed as strictly as a reader
/// parses them). Everything else a repository directory may hold (writer
/// files, `.stratum/urls`, a private key left there by mistake, notes) is
/// refused by what it is not, rather than by a list of what to hide.
fn classify(rel: &Path) -> Option<Class> {
    let comps = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<&str>>>()?;
    layout::reader_path(&comps)
}

/// The repository-relative path that `ServeDir` derives from a request path:
/// percent-decoded (as UTF-8), split on `/`, `.` and empty components
/// dropped; `None` when it has a `..` or is not UTF-8.
fn request_rel_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path.trim_start_matches('/'))
        .decode_utf8()
        .ok()?;
    let mut rel = PathBuf::new();
    for c in Path::new(&*decoded).components() {
        match c {
            Component::Normal(s) => rel.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

struct Policy {
    immutable: HeaderValue,
}

/// Methods, what may be served, caching headers, content type, `If-Range`.
async fn apply_policy(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
        )
            .into_response();
    }
    let Some(class) = request_rel_path(req.uri().path())
        .as_deref()
        .and_then(classify)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };

    // If-Range (RFC 9110 §13.1.5), which tower-http does not implement: keep
    // what is needed to ask again without the range.
    let retry = match req.headers().get(header::IF_RANGE) {
        Some(v) if req.headers().contains_key(header::RANGE) => Some((
            v.clone(),
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )),
        _ => None,
    };
    let mut res = next.clone().run(req).await;
    if let Some((if_range, method, uri, mut headers)) = retry {
        let strong_match = res.status() == StatusCode::PARTIAL_CONTENT
            && !if_range.as_bytes().starts_with(b"W/")
            && res.headers().get(header::ETAG) == Some(&if_range);
        if res.status() == StatusCode::PARTIAL_CONTENT && !strong_match {
            drop(res);
            headers.remove(header::RANGE);
            headers.remove(header::IF_RANGE);
            let mut again = Request::new(Body::empty());
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.headers_mut() = headers;
            res = next.run(again).await;
        }
    }

    let status = res.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        let h = res.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            match class {
                Class::Object => policy.immutable.clone(),
                Class::Mutable => HeaderValue::from_static("no-cache"),
            },
        );
        if status != StatusCode::NOT_MODIFIED {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    res
}

// ---------------------------------------------------------------------------
// The file-system backend: confined to the repository

#[derive(Clone)]
struct RepoBackend {
    /// The canonical repository root.
    root: PathBuf,
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// `NotFound` for the errors by which the file system says that a request
/// path names no file (a name too long, a file where a directory should be,
/// a symlink loop), which `ServeDir` would otherwise answer `500` and log as
/// an error: a client chooses the path, so these are its mistakes, not the
/// server's.
fn absent_as_not_found(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        // ELOOP is also what O_NOFOLLOW answers for a symlink.
        Some(libc::ENAMETOOLONG | libc::ENOTDIR | libc::ELOOP) => not_found(),
        _ => e,
    }
}

impl RepoBackend {
    /// Opens the file `path` names (`ServeDir` built it as root + request
    /// components), or `NotFound` when it may not be served: not a path the
    /// format defines, a symlink anywhere below the root, or not a regular
    /// file. Each component is opened relative to its parent with
    /// `O_NOFOLLOW`, so a directory swapped for a symlink at any moment
    /// (checking first and opening later would race with that) can never
    /// lead outside the root or to another file of it.
    fn open_blocking(&self, path: &Path) -> io::Result<std::fs::File> {
        use rustix::fs::{openat, Mode, OFlags, CWD};
        let rel = path.strip_prefix(&self.root).map_err(|_| not_found())?;
        classify(rel).ok_or_else(not_found)?;
        let comps: Vec<&std::ffi::OsStr> = rel.components().map(|c| c.as_os_str()).collect();
        let (last, dirs) = comps.split_last().ok_or_else(not_found)?;
        let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = openat(
            CWD,
            &self.root,
            flags | OFlags::DIRECTORY | OFlags::PATH,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        for c in dirs {
            dir = openat(
                &dir,
                *c,
                flags | OFlags::DIRECTORY | OFlags::PATH,
                Mode::empty(),
            )
            .map_err(|e| absent_as_not_found(e.into()))?;
        }
        // O_NONBLOCK: never block on a fifo planted under an object's name.
        let fd = openat(
            &dir,
            *last,
            flags | OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| absent_as_not_found(e.into()))?;
        let file = std::fs::File::from(fd);
        if !file.metadata()?.file_type().is_file() {
            return Err(not_found());
        }
        Ok(file)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = io::Result<T>> + Send>>;

impl Backend for RepoBackend {
    type File = RepoFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = BoxFuture<RepoFile>;
    type MetadataFuture = BoxFuture<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let this = self.clone();
        Box::pin(blocking(move || {
            let file = this.open_blocking(&path)?;
            let meta = file.metadata()?;
            if meta.len() > READ_WHOLE_MAX {
                return Ok(RepoFile::Streamed(tokio::fs::File::from_std(file)));
            }
            let mut data = Vec::with_capacity(meta.len() as usize);
            io::Read::read_to_end(&mut io::Read::take(&file, READ_WHOLE_MAX + 1), &mut data)?;
            if data.len() as u64 != meta.len() {
                // Served files never change in place (objects are immutable,
                // the manifest is replaced by a rename): refuse rather than
                // send a body that disagrees with its Content-Length.
                return Err(io::Error::other(format!(
                    "{} changed size while being read",
                    path.display()
                )));
            }
            Ok(RepoFile::Whole {
                data: io::Cursor::new(data),
                meta,
            })
        }))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let this = self.clone();
        Box::pin(blocking(move || this.open_blocking(&path)?.metadata()))
    }
}

/// Files up to this size are read whole by the blocking call that opens
/// them, so the response costs no further trip through tokio's blocking
/// pool (one per read and one for the metadata with `tokio::fs::File`): most
/// objects are a few KiB, and those trips, not the copy, were what made
/// `stratum serve` cost several times nginx's CPU per request. At most this
/// much memory per request in flight.
const READ_WHOLE_MAX: u64 = 1 << 20;

/// An opened repository file: in memory when small, else read as sent.
enum RepoFile {
    Whole {
        data: io::Cursor<Vec<u8>>,
        meta: std::fs::Metadata,
    },
    Streamed(tokio::fs::File),
}

impl tokio::io::AsyncRead for RepoFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut *self {
            RepoFile::Whole { data, .. } => {
                let n = io::Read::read(data, buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            RepoFile::Streamed(f) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncSeek for RepoFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match &mut *self {
            RepoFile::Whole { data, .. } => io::Seek::seek(data, position).map(|_| ()),
            RepoFile::Streamed(f) => Pin::new(f).start_seek(position),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<u64>> {
        match &mut *self {
            RepoFile::Whole { data, .. } => Poll::Ready(Ok(data.position())),
            RepoFile::Streamed(f) => Pin::new(f).poll_complete(cx),
        }
    }
}

impl BackendFile for RepoFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> =
        Pin<Box<dyn std::future::Future<Output = io::Result<std::fs::Metadata>> + Send + 'a>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        match self {
            RepoFile::Whole { meta, .. } => {
                let meta = meta.clone();
                Box::pin(async move { Ok(meta) })
            }
            RepoFile::Streamed(f) => Box::pin(f.metadata()),
        }
    }
}

// ---------------------------------------------------------------------------
// Access log

/// Wraps the response body to log the request once the body is done.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "-".into());
    let method = req.method().clone();
    let version = req.version();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let expected = res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    res.map(|inner| {
        Body::new(LoggedBody {
            expected,
            inner,
            sent: 0,
            ended: false,
            entry: AccessEntry {
                client,
                method,
                version,
                path,
                status,
                start,
            },
        })
    })
}

struct AccessEntry {
    client: String,
    method: Method,
    version: axum::http::Version,
    path: String,
    status: u16,
    start: Instant,
}

struct LoggedBody {
    inner: Body,
    /// `Content-Length`, when set: hyper stops polling after that many bytes.
    expected: Option<u64>,
    sent: u64,
    ended: bool,
    entry: AccessEntry,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let e = &self.entry;
        let complete = self.ended || self.inner.is_end_stream() || self.expected == Some(self.sent);
        let seconds = e.start.elapsed().as_secs_f64();
        stratum_metrics::serve::request(e.status, self.sent, seconds);
        tracing::info!(
            target: "stratum::serve::access",
            client = %e.client,
            method = %e.method,
            version = ?e.version,
            path = %e.path,
            status = e.status,
            bytes = self.sent,
            ms = format_args!("{:.3}", seconds * 1000.0),
            complete,
            "request"
        );
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn class(p: &str) -> Option<Class> {
        request_rel_path(p).as_deref().and_then(classify)
    }

    #[test]
    fn what_is_served() {
        let obj = "/data/ab/cdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(obj.len(), "/data/ab/".len() + 62);
        assert_eq!(class(obj), Some(Class::Object));
        assert_eq!(class(&format!("{obj}C")), Some(Class::Object));
        assert_eq!(class("/.stratum/manifest"), Some(Class::Mutable));
        assert_eq!(class("/.stratum/public.pem"), Some(Class::Mutable));
        assert_eq!(class("/%2estratum/manifest"), Some(Class::Mutable));
        assert_eq!(class("//.stratum//./manifest"), Some(Class::Mutable));
        for refused in [
            "/",
            "",
            "/.stratum/lock",
            "/.stratum/dirty",
            "/.stratum/tmp/x",
            "/.stratum/tmp",
            "/.stratum",
            "/.stratum/",
            "/%2estratum/lock",
            "/data/ab/.hidden",
            "/.git/config",
            "/../etc/passwd",
            "/data/../../etc/passwd",
            "/data/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2fetc%2fpasswd",
            "/data/%ff",
        ] {
            assert_eq!(class(refused), None, "{refused:?} must not be served");
        }
        let hex62 = &obj["/data/ab/".len()..];
        assert_eq!(class(&format!("{obj}M")), Some(Class::Object));
        for refused in [
            "/data".to_string(),
            "/data/ab".into(),
            "/key.pem".into(),
            "/signing.key".into(),
            "/.stratum/urls".into(),
            "/.stratum/compacted".into(),
            "/data/notes.txt".into(),
            format!("{obj}X"),
            format!("{obj}CC"),
            format!("{obj}.bak"),
            format!("{obj}/x"),
            format!("/data/ab/{}", &hex62[1..]),
            format!("/data/ab/{hex62}0"),
            format!("/data/AB/{hex62}"),
            format!("/data/ab/{}", hex62.to_uppercase()),
            format!("/data/abc/{}", &hex62[1..]),
            format!("/data/ab/{}%C3%A9", &hex62[1..]),
            format!("/x/data/ab/{hex62}"),
            format!("/data/ab/{}", "a".repeat(8000)),
        ] {
            assert_eq!(class(&refused), None, "{refused:?} must not be served");
        }
    }

    #[test]
    fn classify_rejects_non_normal_components() {
        assert_eq!(classify(Path::new("data/../x")), None);
        assert_eq!(classify(Path::new("/data/ab/x")), None);
        assert_eq!(classify(Path::new(OsStr::new(""))), None);
    }
}
