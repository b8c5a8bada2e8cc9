//! HTTP transport: one asynchronous client, a list of mirrors tried in order
//! with failover, bounded retries with exponential backoff, timeouts on every
//! request, a size limit per body, and counters.
//!
//! # Asynchronous core, blocking callers
//!
//! A fetch is a future ([`Transport::fetch_async`]); each of its requests
//! runs as a task of one runtime per process, driven by one thread
//! (`request::runtime`), with its connection: the body is collected there
//! and handed over whole, and requests and connections keep their order
//! (a connection is back in the pool before the next request looks).
//! `pull` keeps `--jobs` fetches in flight from one thread
//! (`pull::pipeline::driver`). FUSE request threads, catalog loads,
//! `refresh` and `replicate` are synchronous: [`Transport::fetch`] and
//! [`Transport::fetch_conditional`] run the same future on the calling
//! thread (`block_on`), so there is one code path for mirrors, retries and
//! limits. The blocking calls must not be made from inside the runtime (a
//! future), which nothing does.
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
//! protocol choice uses one client (`request::shared_client`), so one connection
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

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;

mod counters;
mod error;
mod request;

pub(crate) use counters::Counters;
pub use counters::TransportStats;
pub use error::{FailureKind, FetchError, MirrorFailure};
pub(crate) use request::runtime;
use request::{retryable_status, shared_client, speaks_tls, ClientSettings, Got};
pub use request::{Fetched, Validators};

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
    /// No byte for this long fails a request.
    read_timeout: Duration,
    /// A request ends after this long whatever its progress.
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
            read_timeout,
            deadline: connect_timeout + read_timeout * 10,
            counters: Counters::default(),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Opens up to `n` kept-alive connections to the preferred mirror, in
    /// the background, for parallel requests about to be made: `n` `HEAD`
    /// requests of `rel_path` at once, as tasks of the runtime (any static
    /// server answers `HEAD`; no body crosses the link). Their outcome is
    /// not looked at: a request that follows succeeds or fails on its own.
    /// Over HTTP/2 every request shares one connection, so nothing is
    /// opened ahead.
    pub fn open_connections(&self, n: usize, rel_path: &str) {
        let mirror = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let (client, h2c) = &self.clients[mirror];
        let Ok(rt) = runtime() else {
            return;
        };
        if *h2c {
            return;
        }
        let url = format!("{}/{rel_path}", self.urls[mirror]);
        for _ in 0..n {
            let (client, url) = (client.clone(), url.clone());
            rt.spawn(async move {
                match client.head(&url).send().await {
                    Ok(r) => {
                        tracing::trace!(status = %r.status(), "{url}: connection opened ahead")
                    }
                    Err(e) => tracing::debug!("{url}: opening a connection ahead: {e}"),
                }
            });
        }
    }

    /// The mirror asked first: the last one that answered well.
    pub fn preferred_url(&self) -> &str {
        &self.urls[self.preferred.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// Fetches `rel_path` (relative to each base URL) and runs `check` on the
    /// body; see the module documentation. `what` names the object in errors.
    /// Blocks the calling thread, which must not be a thread of the runtime.
    pub fn fetch<T>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        revalidate: bool,
        mut check: impl FnMut(&str, Vec<u8>) -> Result<T, Reject>,
    ) -> Result<T, FetchError> {
        runtime()?.block_on(
            self.fetch_async(what, rel_path, limit, revalidate, |url, body| {
                std::future::ready(check(url, body))
            }),
        )
    }

    /// [`Transport::fetch`] as a future, for callers that keep many in
    /// flight on the runtime; `check` is a future too, so that it can run
    /// its work elsewhere (`spawn_blocking`).
    pub async fn fetch_async<T, C: Future<Output = Result<T, Reject>>>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        revalidate: bool,
        mut check: impl FnMut(&str, Vec<u8>) -> C,
    ) -> Result<T, FetchError> {
        let got = self
            .fetch_inner(
                what,
                rel_path,
                limit,
                revalidate,
                None,
                self.retries,
                |url, body, _| check(url, body),
            )
            .await?;
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
    /// the configured number of extra rounds. Blocks, as `fetch` does.
    pub fn fetch_conditional<T>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        cond: Option<(&str, &Validators)>,
        retries: u32,
        mut check: impl FnMut(&str, Vec<u8>, Validators) -> Result<T, Reject>,
    ) -> Result<Fetched<T>, FetchError> {
        runtime()?.block_on(self.fetch_inner(
            what,
            rel_path,
            limit,
            true,
            cond,
            retries,
            |url, body, v| std::future::ready(check(url, body, v)),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_inner<T, C: Future<Output = Result<T, Reject>>>(
        &self,
        what: &str,
        rel_path: &str,
        limit: u64,
        revalidate: bool,
        cond: Option<(&str, &Validators)>,
        retries: u32,
        mut check: impl FnMut(&str, Vec<u8>, Validators) -> C,
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
                tokio::time::sleep(backoff + jitter).await;
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
                let got = self
                    .get(i, &url, limit, revalidate, validators, &mut received)
                    .await;
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
                    Ok(Got::Body(body, v)) => match check(&url, body, v).await {
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

    fn rejected(&self, url: String, reason: String) -> MirrorFailure {
        Counters::bump(&self.counters.rejected);
        MirrorFailure {
            url,
            kind: FailureKind::Rejected,
            reason,
        }
    }
}
