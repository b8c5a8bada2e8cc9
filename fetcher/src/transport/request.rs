//! One GET to one mirror ([`Transport::get`]), on the process's HTTP
//! runtime ([`runtime`]) and shared client (`shared_client`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use stratum_catalog::error_chain;
use tokio::runtime::Handle;

use super::{Counters, FailureKind, FetchError, MirrorFailure, Transport};

/// What a fetch brought: a body the check accepted, or (to a conditional
/// request) "not modified" from mirror `url`.
#[derive(Debug)]
pub enum Fetched<T> {
    Body(T),
    NotModified { url: String },
}

pub(super) enum Got {
    Body(Vec<u8>, Validators),
    NotModified,
}

/// The runtime every transport of the process runs its requests on (see
/// the module documentation of `transport`): one thread ("stratum-http")
/// drives it, so that every request, its connection and the return of the
/// connection to the pool run in order on that thread (a request made from
/// another thread right after the previous one ended could otherwise find
/// its connection not yet back in the pool, and open another). Its
/// blocking threads, one per core, decode and verify what `pull` downloads
/// (`spawn_blocking`).
pub(crate) fn runtime() -> Result<&'static Handle, FetchError> {
    static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
            let rt = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(cores)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("stratum-http".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| FetchError::Config(format!("HTTP runtime: {e}")))
}

impl Transport {
    /// One GET: status 200 and a complete body of at most `limit` bytes,
    /// with its validators; or, asked with `cond`, 304. `received` is set
    /// to the body bytes received, whatever the outcome. Runs on the
    /// runtime's thread (see [`runtime`]); ends within the transport's
    /// deadline.
    pub(super) async fn get(
        &self,
        mirror: usize,
        url: &str,
        limit: u64,
        revalidate: bool,
        cond: Option<&Validators>,
        received: &mut u64,
    ) -> Result<Got, MirrorFailure> {
        Counters::bump(&self.counters.requests);
        let (client, h2c) = self.clients[mirror].clone();
        let get = Get {
            client,
            h2c,
            url: url.to_owned(),
            limit,
            revalidate,
            cond: cond.cloned(),
            wait: self.read_timeout,
            deadline: self.deadline,
        };
        let fail = |reason: String| MirrorFailure {
            url: url.to_owned(),
            kind: FailureKind::Truncated,
            reason,
        };
        let (got, n) = match runtime() {
            Ok(rt) => rt
                .spawn(get.run())
                .await
                .unwrap_or_else(|e| (Err(fail(format!("the request's task failed: {e}"))), 0)),
            Err(e) => (Err(fail(e.to_string())), 0),
        };
        *received = n;
        self.counters
            .bytes_downloaded
            .fetch_add(n, Ordering::Relaxed);
        got
    }
}

/// What one GET needs, owned, to run as a task of the runtime.
struct Get {
    client: Client,
    h2c: bool,
    url: String,
    limit: u64,
    revalidate: bool,
    cond: Option<Validators>,
    /// The read timeout.
    wait: Duration,
    deadline: Duration,
}

impl Get {
    /// The response and the body bytes received.
    async fn run(self) -> (Result<Got, MirrorFailure>, u64) {
        // Behind the tasks already queued: the connection a request just
        // finished with goes back to the pool through two of them (its
        // connection's, then the pool's), and this request should find it
        // there rather than open another.
        for _ in 0..2 {
            tokio::task::yield_now().await;
        }
        let mut received = 0;
        let got = tokio::time::timeout(self.deadline, self.within(&mut received)).await;
        let got = got.unwrap_or_else(|_| {
            Err(MirrorFailure {
                url: self.url.clone(),
                kind: FailureKind::Timeout,
                reason: format!(
                    "gave up after {:?} ({received} bytes received)",
                    self.deadline
                ),
            })
        });
        (got, received)
    }

    /// [`Get::run`] without its deadline; the read timeout applies to the
    /// response head and to every read of the body.
    async fn within(&self, received: &mut u64) -> Result<Got, MirrorFailure> {
        let (url, limit, cond) = (self.url.as_str(), self.limit, self.cond.as_ref());
        let fail = |kind, reason: String| MirrorFailure {
            url: url.to_owned(),
            kind,
            reason,
        };
        let wait = self.wait;
        let h2c = &self.h2c;
        let mut req = self.client.get(url);
        if self.revalidate {
            req = req.header(reqwest::header::CACHE_CONTROL, "no-cache");
        }
        if let Some(v) = cond {
            if let Some(etag) = &v.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            } else if let Some(lm) = &v.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let sent = tokio::time::timeout(wait, req.send())
            .await
            .map_err(|_| fail(FailureKind::Timeout, format!("no response within {wait:?}")))?;
        let mut resp = sent.map_err(|e| {
            let kind = if e.is_connect() {
                FailureKind::Connect
            } else if e.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Truncated
            };
            let chain = error_chain(&e);
            // What an HTTP/1.1 server's answer to the HTTP/2 preface looks
            // like to the client: "frame with invalid size", or the
            // connection closed under the request.
            let hint =
                if *h2c && (chain.contains("http2 error") || chain.contains("connection closed")) {
                    " (HTTP/2 with prior knowledge: does this server speak HTTP/2 in cleartext?)"
                } else {
                    ""
                };
            fail(kind, format!("request failed: {chain}{hint}"))
        })?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED && cond.is_some() {
            return Ok(Got::NotModified);
        }
        if status != StatusCode::OK {
            return Err(fail(
                FailureKind::Status(status.as_u16()),
                format!("HTTP {status}"),
            ));
        }
        let declared = resp.content_length();
        if let Some(len) = declared {
            if len > limit {
                return Err(fail(
                    FailureKind::TooLarge,
                    format!("body of {len} bytes is over the limit of {limit}"),
                ));
            }
        }
        let cap = declared.unwrap_or(64 * 1024).min(8 << 20);
        let mut body = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
        loop {
            let chunk = match tokio::time::timeout(wait, resp.chunk()).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    let kind = if e.is_timeout() {
                        FailureKind::Timeout
                    } else {
                        FailureKind::Truncated
                    };
                    return Err(fail(
                        kind,
                        format!(
                            "reading the body failed after {} bytes: {}",
                            body.len(),
                            error_chain(&e)
                        ),
                    ));
                }
                Err(_) => {
                    return Err(fail(
                        FailureKind::Timeout,
                        format!("no body byte for {wait:?} after {} bytes", body.len()),
                    ))
                }
            };
            body.extend_from_slice(&chunk);
            *received = body.len() as u64;
            if body.len() as u64 > limit {
                return Err(fail(
                    FailureKind::TooLarge,
                    format!("body is over the limit of {limit} bytes"),
                ));
            }
        }
        if let Some(len) = declared {
            if body.len() as u64 != len {
                return Err(fail(
                    FailureKind::Truncated,
                    format!("body has {} bytes, Content-Length says {len}", body.len()),
                ));
            }
        }
        Ok(Got::Body(body, Validators::of(resp.headers())))
    }
}

/// The validators of a response, for asking the same URL again with a
/// conditional request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// `Last-Modified`, sent back as `If-Modified-Since` when there is no
    /// ETag. Kept only when the response's `Date` is in a later second: a
    /// file changed again within the second it was served would otherwise
    /// look unmodified for good (RFC 9110 §8.8.2.2).
    pub last_modified: Option<String>,
}

impl Validators {
    fn of(h: &reqwest::header::HeaderMap) -> Self {
        let text = |name| {
            h.get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let date = |name| text(name).and_then(|t| httpdate::parse_http_date(&t).ok());
        let strong_date = match (
            date(reqwest::header::LAST_MODIFIED),
            date(reqwest::header::DATE),
        ) {
            (Some(lm), Some(d)) => d.duration_since(lm).is_ok_and(|x| x.as_secs() >= 1),
            _ => false,
        };
        Validators {
            etag: text(reqwest::header::ETAG),
            last_modified: text(reqwest::header::LAST_MODIFIED).filter(|_| strong_date),
        }
    }

    /// True when there is nothing to make a request conditional with.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What makes two transports' clients interchangeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClientSettings {
    pub connect_timeout: Duration,
    /// HTTP/2 with prior knowledge (cleartext `http://` only).
    pub h2c: bool,
    /// Whether a connection may speak TLS (see [`speaks_tls`]).
    pub tls: bool,
}

/// Whether requests to a mirror of URL scheme `scheme` may go over TLS: an
/// `https://` mirror, or an `http://` one reached through an `https://`
/// proxy (the variables the client honours for `http://` URLs, read with
/// `env`). A client that never speaks TLS does not load the system's CA
/// roots, which cost ~15 ms at every mount's start (D42).
pub(super) fn speaks_tls(scheme: &str, env: impl Fn(&str) -> Option<String>) -> bool {
    scheme != "http"
        || ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .filter_map(|v| env(v))
            .any(|p| !p.trim().to_ascii_lowercase().starts_with("http://") && !p.trim().is_empty())
}

/// The client for `settings`, built once per process: a `reqwest` client is
/// a connection pool, and every transport with the same settings shares it
/// (a mount's catalogs and objects, the images of one pull, a replicate).
pub(super) fn shared_client(settings: ClientSettings) -> Result<Client, FetchError> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientSettings, Client>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = clients.get(&settings) {
        return Ok(c.clone());
    }
    let mut b = Client::builder()
        .connect_timeout(settings.connect_timeout)
        // Below the idle limits servers put on kept-alive connections
        // (`stratum serve --header-timeout` 10 s, nginx 75 s): reusing a
        // connection the server is closing at that moment costs a retry.
        .pool_idle_timeout(Duration::from_secs(5))
        // No cap on idle connections per host (the default, said here):
        // the 64 connections of 64 parallel HTTP/1.1 downloads stay open
        // between batches.
        .pool_max_idle_per_host(usize::MAX)
        // HTTP/2: the connection window bounds all streams of a mirror
        // together; hyper's 5 MB would cap 64 downloads at 10 ms round
        // trips to ~250 MB/s.
        .http2_initial_connection_window_size(16 << 20)
        .tcp_nodelay(true)
        .user_agent(concat!("stratum/", env!("CARGO_PKG_VERSION")));
    if settings.h2c {
        b = b.http2_prior_knowledge();
    }
    if !settings.tls {
        // No roots: nothing is loaded, and a TLS connection (which this
        // client never makes) would fail.
        b = b.tls_certs_only(std::iter::empty());
    }
    let client = b
        .build()
        .map_err(|e| FetchError::Config(format!("HTTP client: {e}")))?;
    clients.insert(settings, client.clone());
    Ok(client)
}

pub(super) fn retryable_status(s: u16) -> bool {
    s >= 500 || s == 408 || s == 429
}

#[cfg(test)]
mod tests {
    use super::{speaks_tls, Validators};
    use reqwest::header::{HeaderMap, HeaderValue, DATE, ETAG, LAST_MODIFIED};

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn only_plain_http_without_a_tls_proxy_skips_the_ca_roots() {
        let none = |_: &str| None;
        assert!(!speaks_tls("http", none));
        assert!(speaks_tls("https", none));
        let proxy = |url: &'static str| move |v: &str| (v == "http_proxy").then(|| url.to_owned());
        assert!(!speaks_tls("http", proxy("http://squid:3128")));
        assert!(!speaks_tls("http", proxy("HTTP://squid:3128")));
        assert!(speaks_tls("http", proxy("https://squid:3129")));
        // A proxy without a scheme: the client's own default applies, be safe.
        assert!(speaks_tls("http", proxy("squid:3128")));
    }

    #[test]
    fn last_modified_in_the_second_of_the_response_is_not_a_validator() {
        let lm = "Sun, 07 Dec 2025 10:00:00 GMT";
        let same = headers(&[(LAST_MODIFIED, lm), (DATE, lm)]);
        assert!(Validators::of(&same).is_empty());
        let later = headers(&[(LAST_MODIFIED, lm), (DATE, "Sun, 07 Dec 2025 10:00:01 GMT")]);
        assert_eq!(Validators::of(&later).last_modified.as_deref(), Some(lm));
        let no_date = headers(&[(LAST_MODIFIED, lm)]);
        assert!(Validators::of(&no_date).is_empty());
        let etag = headers(&[(ETAG, "\"abc\"")]);
        assert_eq!(Validators::of(&etag).etag.as_deref(), Some("\"abc\""));
    }
}
