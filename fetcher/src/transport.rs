//! HTTP transport: one blocking client, a list of mirrors tried in order
//! with failover, bounded retries with exponential backoff, timeouts on every
//! request, a size limit per body, and counters.
//!
//! # What a fetch does
//!
//! [`Transport::fetch`] asks the mirrors for one repository path, starting
//! with the last mirror that answered well (remembered across fetches), and
//! hands each body to a `check` function (decode + BLAKE3, or the manifest's
//! signature). A *round* asks every mirror that is still in the running
//! once. Outcomes of one attempt:
//!
//! | outcome | that mirror, this fetch |
//! |---|---|
//! | 200 and `check` accepts | done; the mirror becomes the preferred one |
//! | connect error, timeout, 5xx, 408, 429, truncated body, `check` refuses the bytes (corrupt) | failed; asked again in the next round |
//! | 404 / 410 | does not have it; not asked again |
//! | another status, body over the size limit, `check` refuses for good (bad signature, rollback) | not asked again |
//!
//! After a round in which nobody succeeded the transport sleeps
//! (`200 ms × 2^round`, capped at 5 s) and starts another, up to
//! `retries` extra rounds. Then it gives up with a [`FetchError`] that names
//! the object and every mirror with its last failure. Every request has a
//! connect timeout, a read timeout (no byte for that long fails the
//! request) and an overall deadline of `connect + 10 × read` timeouts, so a
//! fetch always ends.
//!
//! Connections: every transport of a process with the same timeouts and
//! protocol choice uses one client ([`shared_client`]), so one connection
//! pool: kept-alive connections are reused across mounts, pulls and
//! catalogs of one process, as many at once as downloads run in parallel
//! (no cap per host), closed after 5 s unused. `https://` mirrors speak
//! HTTP/2 when the server offers it in the TLS handshake (ALPN), else
//! HTTP/1.1. `http://` mirrors speak HTTP/1.1, unless
//! `http2_prior_knowledge` is set: then HTTP/2 without negotiation (h2c,
//! what `stratum serve` and nginx's `listen … http2` speak; an HTTP/1.1-only
//! server such as Squid, S3 or a default nginx fails every request), all
//! requests to one mirror multiplexed on one connection.
//!
//! Proxies: the standard variables (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, lowercase too) are honoured by the client.
//! The manifest is requested with `Cache-Control: no-cache` so that an HTTP
//! cache on the way revalidates it; objects are immutable and cacheable.
//!
//! Metrics: besides [`TransportStats`], every request is recorded with
//! [`stratum_metrics::mount::fetch`] under its mirror's base URL: outcome
//! `ok` (a 304, or a 200 whose body was accepted), else `error` (the
//! request failed, or its body was refused); the body bytes received; the
//! seconds from sending it to the end of its body. Cache hits and misses
//! are recorded where they are counted ([`Counters::hit`], [`Counters::miss`]).

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use stratum_catalog::{ObjectId, ObjectKind};

/// Why a fetch (or opening a remote) failed. Cloneable, so that one failed
/// download can be reported to every caller that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    /// The configuration cannot work (no URL, a URL that is not http(s)).
    #[error("configuration: {0}")]
    Config(String),
    /// No mirror has the path (404/410 everywhere).
    #[error("{what}: not found on any mirror ({})", .urls.join(", "))]
    NotFound { what: String, urls: Vec<String> },
    /// Every mirror failed, within the retry budget. `failures` holds the
    /// last failure of each mirror asked.
    #[error("{what}: failed after {attempts} attempts: {}", show_failures(.failures))]
    Failed {
        what: String,
        attempts: u32,
        failures: Vec<MirrorFailure>,
    },
    /// The newest manifest offered is older than one this cache has already
    /// verified for the same repository and key (rollback protection).
    #[error(
        "manifest of {name} from {url}: revision {offered} is older than revision {seen} already seen by this cache (refusing a rollback)"
    )]
    Rollback {
        name: String,
        url: String,
        offered: u64,
        seen: u64,
    },
    /// The local cache directory cannot be used.
    #[error("cache {path}: {reason}")]
    Cache {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A verified catalog cannot be opened (not a valid catalog, unsupported
    /// version).
    #[error("catalog {id}: {reason}")]
    Catalog { id: ObjectId, reason: String },
    /// A manifest object of the signed history does not verify (signature,
    /// format, or another repository's name).
    #[error("manifest object {id}: {reason}")]
    Manifest { id: ObjectId, reason: String },
}

fn show_failures(f: &[MirrorFailure]) -> String {
    f.iter()
        .map(|m| format!("{}: {}", m.url, m.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl FetchError {
    /// True when the failures were all refusals of the bytes (corrupt
    /// objects, bad signatures) rather than the network.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, FetchError::Failed { failures, .. }
            if !failures.is_empty() && failures.iter().all(|f| f.kind == FailureKind::Rejected))
    }

    /// This error as the catalog crate's, for code written against
    /// [`stratum_catalog::Error`] (`Namespace`, `materialize`): not found →
    /// `MissingObject`, refused bytes → `CorruptObject`, an invalid catalog →
    /// `InvalidCatalog`, anything else → `Io` on the object's repository
    /// path, with this error's message.
    pub fn to_catalog_error(&self, id: &ObjectId, kind: ObjectKind) -> stratum_catalog::Error {
        match self {
            FetchError::NotFound { .. } => stratum_catalog::Error::MissingObject(*id),
            FetchError::Catalog { reason, .. } => stratum_catalog::Error::InvalidCatalog {
                catalog: id.to_hex(),
                reason: reason.clone(),
            },
            e if e.is_corrupt() => stratum_catalog::Error::CorruptObject {
                id: *id,
                reason: e.to_string(),
            },
            e => stratum_catalog::Error::Io {
                path: std::path::PathBuf::from(id.path(kind)),
                error: std::io::Error::other(e.to_string()),
            },
        }
    }
}

/// For `read` paths that speak `io::Error` (FUSE replies EIO): kind
/// `NotFound` for [`FetchError::NotFound`], `InvalidData` for refused bytes,
/// `Other` otherwise; the message is kept.
impl From<FetchError> for std::io::Error {
    fn from(e: FetchError) -> Self {
        let kind = match &e {
            FetchError::NotFound { .. } => std::io::ErrorKind::NotFound,
            e if e.is_corrupt() => std::io::ErrorKind::InvalidData,
            FetchError::Catalog { .. }
            | FetchError::Manifest { .. }
            | FetchError::Rollback { .. } => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The last failure of one mirror during one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The full URL asked.
    pub url: String,
    pub kind: FailureKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused, DNS, TLS, connect timeout.
    Connect,
    /// No response or no body byte within the read timeout, or the overall
    /// deadline passed.
    Timeout,
    /// An HTTP status other than 200.
    Status(u16),
    /// The body ended before its declared length, or reading it failed.
    Truncated,
    /// The body is larger than allowed.
    TooLarge,
    /// The bytes arrived but were refused (hash mismatch, not a zstd frame,
    /// bad signature, rollback).
    Rejected,
}

/// Counters since the [`crate::Remote`] (or transport) was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Body bytes received (encoded, as on the wire), accepted or not.
    pub bytes_downloaded: u64,
    /// Objects and catalogs served by the cache without a download (a file
    /// in the cache directory, or a catalog already open in this process).
    pub cache_hits: u64,
    /// Objects and catalogs downloaded, verified and inserted.
    pub cache_misses: u64,
    /// Extra rounds over the mirrors after a failed one.
    pub retries: u64,
    /// Attempts that went to another mirror because the previous one failed.
    pub failovers: u64,
    /// Bodies refused by verification (corrupt objects, bad manifests).
    pub rejected: u64,
    /// Callers that waited for a download another caller had started
    /// (singleflight) instead of downloading themselves.
    pub shared_waits: u64,
    /// Files removed from the cache to stay under the quota.
    pub evictions: u64,
    /// Attempts that failed (network, status, refused bytes), whether or
    /// not another attempt then succeeded.
    pub failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub retries: AtomicU64,
    pub failovers: AtomicU64,
    pub rejected: AtomicU64,
    pub shared_waits: AtomicU64,
    pub evictions: AtomicU64,
    pub failures: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> TransportStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            requests: g(&self.requests),
            bytes_downloaded: g(&self.bytes_downloaded),
            cache_hits: g(&self.cache_hits),
            cache_misses: g(&self.cache_misses),
            retries: g(&self.retries),
            failovers: g(&self.failovers),
            rejected: g(&self.rejected),
            shared_waits: g(&self.shared_waits),
            evictions: g(&self.evictions),
            failures: g(&self.failures),
        }
    }

    pub fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// An object or catalog served by the cache: counted, and recorded as
    /// a metric.
    pub fn hit(&self) {
        Self::bump(&self.cache_hits);
        stratum_metrics::mount::cache_hit();
    }

    /// An object or catalog downloaded into the cache: counted, and
    /// recorded as a metric.
    pub fn miss(&self) {
        Self::bump(&self.cache_misses);
        stratum_metrics::mount::cache_miss();
    }
}

/// What a `check` function says about a body it refuses.
#[derive(Debug)]
pub(crate) enum Reject {
    /// Wrong bytes; the mirror may serve the right ones later (a flaky proxy):
    /// ask it again in the next round.
    Corrupt(String),
    /// Refused for good from this mirror in this fetch (bad signature).
    Permanent(String),
    /// An older manifest than already seen.
    Rollback {
        name: String,
        offered: u64,
        seen: u64,
    },
    /// Not the mirror's fault: stop and report this error.
    Fatal(FetchError),
}

pub(crate) struct Transport {
    /// The client of each mirror, in the order of `urls`, and whether it
    /// speaks HTTP/2 with prior knowledge.
    clients: Vec<(Client, bool)>,
    urls: Vec<String>,
    preferred: AtomicUsize,
    retries: u32,
    deadline: Duration,
    pub counters: Counters,
}

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Transport {
    /// `http2_prior_knowledge`: speak HTTP/2 without negotiation to the
    /// `http://` mirrors (see the module documentation).
    pub fn new(
        urls: &[String],
        connect_timeout: Duration,
        read_timeout: Duration,
        retries: u32,
        http2_prior_knowledge: bool,
    ) -> Result<Self, FetchError> {
        if urls.is_empty() {
            return Err(FetchError::Config("no repository URL given".into()));
        }
        let mut clean = Vec::with_capacity(urls.len());
        let mut clients = Vec::with_capacity(urls.len());
        for u in urls {
            let parsed = reqwest::Url::parse(u)
                .map_err(|e| FetchError::Config(format!("bad URL {u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(FetchError::Config(format!(
                    "URL {u:?}: only http:// and https:// are supported"
                )));
            }
            if parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(FetchError::Config(format!(
                    "URL {u:?}: a repository URL has no query or fragment"
                )));
            }
            clean.push(u.trim_end_matches('/').to_owned());
            let h2c = http2_prior_knowledge && parsed.scheme() == "http";
            let settings = ClientSettings {
                connect_timeout,
                read_timeout,
                h2c,
                tls: speaks_tls(parsed.scheme(), |v| std::env::var(v).ok()),
            };
            clients.push((shared_client(settings)?, h2c));
        }
        Ok(Transport {
            clients,
            urls: clean,
            preferred: AtomicUsize::new(0),
            retries,
            deadline: connect_timeout + read_timeout * 10,
            counters: Counters::default(),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Opens up to `n` kept-alive connections to the preferred mirror, in
    /// the background, for parallel requests about to be made: `n`
    /// `HEAD` requests of `rel_path` at once, each in a thread of its own
    /// (any static server answers `HEAD`; no body crosses the link). Their
    /// outcome is not looked at: a request that follows succeeds or fails
    /// on its own. Over HTTP/2 every request shares one connection, so
    /// nothing is opened ahead.
    pub fn open_connections(&self, n: usize, rel_path: &str) {
        let mirror = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let (client, h2c) = &self.clients[mirror];
        if *h2c {
            return;
        }
        let url = format!("{}/{rel_path}", self.urls[mirror]);
        for _ in 0..n {
            let (client, url) = (client.clone(), url.clone());
            let spawned = std::thread::Builder::new()
                .name("connect-ahead".into())
                .spawn(move || match client.head(&url).send() {
                    Ok(r) => {
                        tracing::trace!(status = %r.status(), "{url}: connection opened ahead")
                    }
                    Err(e) => tracing::debug!("{url}: opening a connection ahead: {e}"),
                });
            if spawned.is_err() {
                break;
            }
        }
    }

    /// The mirror asked first: the last one that answered well.
    pub fn preferred_url(&self) -> &str {
        &self.urls[self.preferred.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// Fetches `rel_path` (relative to each base URL) and runs `check` on the
    /// body; see the module documentation. `what` names the object in errors.
    pub fn fetch<T>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        revalidate: bool,
        mut check: impl FnMut(&str, Vec<u8>) -> Result<T, Reject>,
    ) -> Result<T, FetchError> {
        let got = self.fetch_inner(
            what,
            rel_path,
            limit,
            revalidate,
            None,
            self.retries,
            |url, body, _| check(url, body),
        )?;
        match got {
            Fetched::Body(v) => Ok(v),
            // Only a conditional request is answered with 304 (see `get`).
            Fetched::NotModified { url } => Err(FetchError::Failed {
                what: what.to_owned(),
                attempts: 1,
                failures: vec![MirrorFailure {
                    url,
                    kind: FailureKind::Status(304),
                    reason: "HTTP 304 to an unconditional request".into(),
                }],
            }),
        }
    }

    /// [`Transport::fetch`] with a conditional request: `cond` holds the
    /// validators a mirror (`url`, as in [`Fetched::NotModified`]) sent
    /// with the body the caller has; that mirror is asked with
    /// `If-None-Match` / `If-Modified-Since` and may answer 304. `check`
    /// also gets the validators of the body it checks. `retries` replaces
    /// the configured number of extra rounds.
    pub fn fetch_conditional<T>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        cond: Option<(&str, &Validators)>,
        retries: u32,
        check: impl FnMut(&str, Vec<u8>, Validators) -> Result<T, Reject>,
    ) -> Result<Fetched<T>, FetchError> {
        self.fetch_inner(what, rel_path, limit, true, cond, retries, check)
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch_inner<T>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        revalidate: bool,
        cond: Option<(&str, &Validators)>,
        retries: u32,
        mut check: impl FnMut(&str, Vec<u8>, Validators) -> Result<T, Reject>,
    ) -> Result<Fetched<T>, FetchError> {
        let n = self.urls.len();
        // Mirrors still worth asking in this fetch.
        let mut alive = vec![true; n];
        let mut last: Vec<Option<MirrorFailure>> = vec![None; n];
        let mut attempts = 0u32;
        let mut rollback: Option<(String, String, u64, u64)> = None;
        // The mirror of the previous attempt of this fetch (which failed).
        let mut failed_on: Option<usize> = None;
        for round in 0..=retries {
            if round > 0 {
                if !alive.iter().any(|a| *a) {
                    break;
                }
                Counters::bump(&self.counters.retries);
                let backoff = BACKOFF_BASE
                    .saturating_mul(1 << (round - 1).min(8))
                    .min(BACKOFF_MAX);
                // A little jitter so that nodes that failed together do not
                // come back together.
                let jitter = Duration::from_millis(u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos() % 100)
                        .unwrap_or(0),
                ));
                tracing::debug!(what, round, ?backoff, "retrying after backoff");
                std::thread::sleep(backoff + jitter);
            }
            let start = self.preferred.load(Ordering::Relaxed) % n;
            for k in 0..n {
                let i = (start + k) % n;
                if !alive[i] {
                    continue;
                }
                if failed_on.is_some_and(|j| j != i) {
                    Counters::bump(&self.counters.failovers);
                }
                attempts += 1;
                let url = format!("{}/{}", self.urls[i], rel_path);
                let validators = cond.filter(|(u, _)| *u == url).map(|(_, v)| v);
                let mirror = &self.urls[i];
                let (sent, mut received) = (Instant::now(), 0u64);
                let got = self.get(i, &url, limit, revalidate, validators, &mut received);
                let seconds = sent.elapsed();
                let record = |ok: bool| {
                    stratum_metrics::mount::fetch(mirror, ok, received, seconds.as_secs_f64());
                };
                let failure = match got {
                    Ok(Got::NotModified) => {
                        record(true);
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(Fetched::NotModified { url });
                    }
                    Ok(Got::Body(body, v)) => match check(&url, body, v) {
                        Ok(v) => {
                            record(true);
                            self.preferred.store(i, Ordering::Relaxed);
                            return Ok(Fetched::Body(v));
                        }
                        // Not the mirror's fault (the local cache failed).
                        Err(Reject::Fatal(e)) => {
                            record(true);
                            return Err(e);
                        }
                        Err(Reject::Corrupt(reason)) => (false, self.rejected(url, reason)),
                        Err(Reject::Permanent(reason)) => (true, self.rejected(url, reason)),
                        Err(Reject::Rollback {
                            name,
                            offered,
                            seen,
                        }) => {
                            rollback = Some((name, url.clone(), offered, seen));
                            let reason = format!(
                                "revision {offered} is older than revision {seen} already seen"
                            );
                            (true, self.rejected(url, reason))
                        }
                    },
                    Err(f) => {
                        let permanent = matches!(f.kind, FailureKind::TooLarge)
                            || matches!(f.kind, FailureKind::Status(s) if !retryable_status(s));
                        (permanent, f)
                    }
                };
                let (permanent, failure) = failure;
                record(false);
                Counters::bump(&self.counters.failures);
                tracing::warn!(url = %failure.url, reason = %failure.reason, "{what}: mirror failed");
                if permanent {
                    alive[i] = false;
                }
                last[i] = Some(failure);
                failed_on = Some(i);
            }
        }
        let failures: Vec<MirrorFailure> = last.into_iter().flatten().collect();
        if let Some((name, url, offered, seen)) = rollback {
            if failures.iter().all(|f| {
                f.kind == FailureKind::Rejected || matches!(f.kind, FailureKind::Status(404 | 410))
            }) {
                return Err(FetchError::Rollback {
                    name,
                    url,
                    offered,
                    seen,
                });
            }
        }
        if !failures.is_empty()
            && failures
                .iter()
                .all(|f| matches!(f.kind, FailureKind::Status(404 | 410)))
        {
            return Err(FetchError::NotFound {
                what: what.to_owned(),
                urls: failures.into_iter().map(|f| f.url).collect(),
            });
        }
        Err(FetchError::Failed {
            what: what.to_owned(),
            attempts,
            failures,
        })
    }

    /// One GET: status 200 and a complete body of at most `limit` bytes,
    /// with its validators; or, asked with `cond`, 304. `received` is set
    /// to the body bytes received, whatever the outcome.
    fn get(
        &self,
        mirror: usize,
        url: &str,
        limit: u64,
        revalidate: bool,
        cond: Option<&Validators>,
        received: &mut u64,
    ) -> Result<Got, MirrorFailure> {
        let fail = |kind, reason: String| MirrorFailure {
            url: url.to_owned(),
            kind,
            reason,
        };
        let started = Instant::now();
        Counters::bump(&self.counters.requests);
        let (client, h2c) = &self.clients[mirror];
        let mut req = client.get(url);
        if revalidate {
            req = req.header(reqwest::header::CACHE_CONTROL, "no-cache");
        }
        if let Some(v) = cond {
            if let Some(etag) = &v.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            } else if let Some(lm) = &v.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().map_err(|e| {
            let kind = if e.is_connect() {
                FailureKind::Connect
            } else if e.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Truncated
            };
            let chain = error_chain(&e);
            // What an HTTP/1.1 server's answer to the HTTP/2 preface looks
            // like to the client ("frame with invalid size").
            let hint = if *h2c && chain.contains("http2 error") {
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
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if started.elapsed() > self.deadline {
                self.add_bytes(received, body.len());
                return Err(fail(
                    FailureKind::Timeout,
                    format!(
                        "gave up after {:?} ({} bytes received)",
                        self.deadline,
                        body.len()
                    ),
                ));
            }
            match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    body.extend_from_slice(&buf[..k]);
                    if body.len() as u64 > limit {
                        self.add_bytes(received, body.len());
                        return Err(fail(
                            FailureKind::TooLarge,
                            format!("body is over the limit of {limit} bytes"),
                        ));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.add_bytes(received, body.len());
                    let kind = if e.kind() == std::io::ErrorKind::TimedOut
                        || error_chain(&e).contains("timed out")
                    {
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
            }
        }
        self.add_bytes(received, body.len());
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

    fn rejected(&self, url: String, reason: String) -> MirrorFailure {
        Counters::bump(&self.counters.rejected);
        MirrorFailure {
            url,
            kind: FailureKind::Rejected,
            reason,
        }
    }

    /// Counts the `n` body bytes a request received, and tells its caller.
    fn add_bytes(&self, received: &mut u64, n: usize) {
        *received = n as u64;
        self.counters
            .bytes_downloaded
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What a fetch brought: a body the check accepted, or (to a conditional
/// request) "not modified" from mirror `url`.
#[derive(Debug)]
pub enum Fetched<T> {
    Body(T),
    NotModified { url: String },
}

enum Got {
    Body(Vec<u8>, Validators),
    NotModified,
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
struct ClientSettings {
    connect_timeout: Duration,
    read_timeout: Duration,
    /// HTTP/2 with prior knowledge (cleartext `http://` only).
    h2c: bool,
    /// Whether a connection may speak TLS (see [`speaks_tls`]).
    tls: bool,
}

/// Whether requests to a mirror of URL scheme `scheme` may go over TLS: an
/// `https://` mirror, or an `http://` one reached through an `https://`
/// proxy (the variables the client honours for `http://` URLs, read with
/// `env`). A client that never speaks TLS does not load the system's CA
/// roots, which cost ~15 ms at every mount's start (D42).
fn speaks_tls(scheme: &str, env: impl Fn(&str) -> Option<String>) -> bool {
    scheme != "http"
        || ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .filter_map(|v| env(v))
            .any(|p| !p.trim().to_ascii_lowercase().starts_with("http://") && !p.trim().is_empty())
}

/// The client for `settings`, built once per process: a `reqwest` client is
/// a connection pool, and every transport with the same settings shares it
/// (a mount's catalogs and objects, the images of one pull, a replicate).
fn shared_client(settings: ClientSettings) -> Result<Client, FetchError> {
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
        // The blocking client applies this to waiting for the response
        // head and to every read of the body: a read timeout.
        .timeout(settings.read_timeout)
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

fn retryable_status(s: u16) -> bool {
    s >= 500 || s == 408 || s == 429
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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
