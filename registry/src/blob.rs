//! Streaming blob downloads that survive broken connections.
//!
//! [`BlobReader`] is a `Read` over one blob: a GET with the token oci-client
//! obtained, following redirects (to a CDN or object store; reqwest drops
//! `Authorization` when the host changes). When the connection breaks or the
//! body ends early it asks again from the current offset with `Range`, or
//! from the start when the server ignores ranges (discarding what it already
//! returned), under the client's retry policy. It reads exactly the
//! descriptor's size: the caller verifies the digest of what it read (the
//! publisher's `LayerStream` does, while streaming).

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use tracing::{debug, warn};

use stratum_catalog::error_chain;

use crate::client::{sha256_digest, tls_hint, Failure, Registry};
use crate::error::{RegistryError, Result};
use crate::reference::Reference;

pub struct BlobReader {
    registry: Arc<Registry>,
    reference: Reference,
    digest: String,
    size: u64,
    offset: u64,
    response: Option<reqwest::blocking::Response>,
    /// Connections that broke mid-body so far.
    breaks: u32,
}

impl Registry {
    /// Opens blob `digest` (of `size` bytes) of `r`'s repository. The first
    /// request is made here, so a missing blob or refused credentials fail
    /// now rather than at the first read.
    pub fn open_blob(
        self: &Arc<Self>,
        r: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<BlobReader> {
        let mut reader = BlobReader {
            registry: self.clone(),
            reference: r.clone(),
            digest: digest.to_owned(),
            size,
            offset: 0,
            response: None,
            breaks: 0,
        };
        if size > 0 {
            reader.response = Some(reader.request()?);
        }
        Ok(reader)
    }

    /// A whole small blob (a config, an artifact), size-capped and verified.
    pub fn blob_bytes(self: &Arc<Self>, r: &Reference, digest: &str, size: u64) -> Result<Vec<u8>> {
        let limit = self.config.max_document_size;
        if size > limit {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                what: format!("blob {digest}"),
                limit,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.open_blob(r, digest, size)?
            .read_to_end(&mut out)
            .map_err(|e| RegistryError::Protocol {
                reference: r.to_string(),
                what: format!("blob {digest}"),
                reason: e.to_string(),
            })?;
        let actual = sha256_digest(&out);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                reference: r.to_string(),
                what: format!("blob {digest}"),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(out)
    }
}

impl BlobReader {
    fn what(&self) -> String {
        format!("blob {}", self.digest)
    }

    /// One GET from `self.offset`, retried; positioned at `self.offset`.
    fn request(&mut self) -> Result<reqwest::blocking::Response> {
        let reg = self.registry.clone();
        let url = reg.blob_url(&self.reference, &self.digest);
        let what = self.what();
        let mut refreshed = false;
        let offset = self.offset;
        let r = self.reference.clone();
        reg.retrying(&r, &what, || {
            let auth = reg
                .pull_authorization(&r, refreshed)
                .map_err(Failure::Fatal)?;
            let mut req = reg.http.get(&url);
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            debug!(%url, offset, "blob GET");
            let resp = req.send().map_err(|e| {
                let chain = error_chain(&e);
                match tls_hint(&chain) {
                    Some(hint) => Failure::Fatal(RegistryError::Protocol {
                        reference: r.to_string(),
                        what: what.clone(),
                        reason: format!("GET {url}: {chain} ({hint})"),
                    }),
                    None => Failure::Transient(format!("GET {url}: {chain}"), None),
                }
            })?;
            let status = resp.status();
            let fatal = |e: RegistryError| Failure::Fatal(e);
            match status {
                StatusCode::OK => {
                    let mut resp = resp;
                    if offset > 0 {
                        // No range support: skip what we already have.
                        let skipped = io::copy(&mut (&mut resp).take(offset), &mut io::sink())
                            .map_err(|e| Failure::Transient(format!("GET {url}: {e}"), None))?;
                        if skipped != offset {
                            return Err(Failure::Transient(
                                format!("GET {url}: body ended before the resume offset {offset}"),
                                None,
                            ));
                        }
                    }
                    Ok(resp)
                }
                StatusCode::PARTIAL_CONTENT => {
                    let range = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if range.starts_with(&format!("bytes {offset}-")) {
                        Ok(resp)
                    } else {
                        Err(fatal(RegistryError::Protocol {
                            reference: r.to_string(),
                            what: what.clone(),
                            reason: format!(
                                "asked for bytes {offset}- and got Content-Range {range:?}"
                            ),
                        }))
                    }
                }
                StatusCode::UNAUTHORIZED if !refreshed => {
                    // The token may have expired between two requests.
                    refreshed = true;
                    Err(Failure::Transient(
                        format!("HTTP 401 from {url}"),
                        Some(Duration::ZERO),
                    ))
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Err(fatal(RegistryError::Unauthorized {
                        reference: r.to_string(),
                        what: what.clone(),
                        reason: format!("HTTP {} from {url}", status.as_u16()),
                    }))
                }
                StatusCode::NOT_FOUND => Err(fatal(RegistryError::NotFound {
                    reference: r.to_string(),
                    what: what.clone(),
                    reason: format!("HTTP 404 from {url}"),
                })),
                s if s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT
                    || s.is_server_error() =>
                {
                    let after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    Err(Failure::Transient(
                        format!("HTTP {} from {url}", s.as_u16()),
                        after,
                    ))
                }
                s => Err(fatal(RegistryError::Protocol {
                    reference: r.to_string(),
                    what: what.clone(),
                    reason: format!("unexpected HTTP {} from {url}", s.as_u16()),
                })),
            }
        })
    }

    /// Drops a broken response; fails once the retry budget is spent.
    fn broke(&mut self, reason: &str) -> io::Result<()> {
        self.response = None;
        self.breaks += 1;
        let budget = self.registry.config.retry.attempts.max(1);
        if self.breaks >= budget {
            return Err(io::Error::other(RegistryError::Exhausted {
                reference: self.reference.to_string(),
                what: self.what(),
                attempts: self.breaks,
                reason: format!(
                    "transfer broke at byte {} of {}: {reason}",
                    self.offset, self.size
                ),
            }));
        }
        warn!(reference = %self.reference, blob = %self.digest, offset = self.offset, "resuming: {reason}");
        std::thread::sleep(self.registry.config.retry.backoff(self.breaks));
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.offset >= self.size || buf.is_empty() {
                return Ok(0);
            }
            if self.response.is_none() {
                let resp = self.request().map_err(io::Error::other)?;
                self.response = Some(resp);
            }
            let Some(resp) = self.response.as_mut() else {
                continue;
            };
            let want = usize::try_from(self.size - self.offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            match resp.read(&mut buf[..want]) {
                Ok(0) => self.broke("the body ended early")?,
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.broke(&e.to_string())?,
            }
        }
    }
}
