//! [`Registry`]: a blocking client over oci-client for the publisher's
//! synchronous pipeline and the fetcher's command-line paths.
//!
//! oci-client does the protocol: the `/v2/` challenge, bearer-token exchange
//! (or basic auth), manifests, tags and pushes. Every call is bounded by the
//! retry policy. Blob downloads are our own request (see [`crate::blob`]) so
//! that they stream into a `Read`, resume with `Range` and honour
//! `Retry-After`; they reuse the token oci-client obtained.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use stratum_catalog::error_chain;
use tracing::{debug, warn};

use crate::config::RegistryConfig;
use crate::error::{RegistryError, Result};
use crate::reference::Reference;

/// Manifest media types we ask for (OCI and Docker v2, images and indexes).
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A manifest or index exactly as the registry sent it.
#[derive(Clone, Debug)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    /// `sha256:…` of `bytes`, computed here.
    pub digest: String,
    /// The `mediaType` field of the document (empty if it has none).
    pub media_type: String,
}

/// How an error from one attempt should be handled.
pub(crate) enum Failure {
    /// Worth another attempt, after the given pause if the server said so.
    Transient(String, Option<Duration>),
    /// Final.
    Fatal(RegistryError),
}

/// A blocking registry client; cheap to share between threads.
pub struct Registry {
    pub(crate) config: RegistryConfig,
    rt: tokio::runtime::Runtime,
    client: oci_client::Client,
    pub(crate) http: reqwest::blocking::Client,
    auth: Mutex<HashMap<String, RegistryAuth>>,
    /// Bearer tokens for blob requests, by `registry/repository`.
    tokens: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// How long a bearer token is reused for our own blob requests; registries
/// issue them for 60 s or more.
const TOKEN_REUSE: Duration = Duration::from_secs(45);

impl Registry {
    pub fn new(config: RegistryConfig) -> Result<Registry> {
        let pems = config.ca_pems()?;
        let mut extra = Vec::new();
        let mut http = reqwest::blocking::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Blocking reqwest applies this to each read of the body.
            .timeout(config.read_timeout)
            .user_agent(concat!("stratum/", env!("CARGO_PKG_VERSION")));
        for (pem, path) in pems.iter().zip(&config.ca_files) {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryError::Config(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(RegistryError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for c in certs {
                http = http.add_root_certificate(c);
            }
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            });
        }
        let http = http
            .build()
            .map_err(|e| RegistryError::Config(format!("HTTP client: {e}")))?;
        let oci_config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            extra_root_certificates: extra,
            // Indexes are resolved by the caller, which knows the platforms.
            platform_resolver: None,
            read_timeout: Some(config.read_timeout),
            connect_timeout: Some(config.connect_timeout),
            user_agent: concat!("stratum/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(oci_config)
            .map_err(|e| RegistryError::Config(format!("registry client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("stratum-registry")
            .build()
            .map_err(|e| RegistryError::Config(format!("async runtime: {e}")))?;
        Ok(Registry {
            config,
            rt,
            client,
            http,
            auth: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub(crate) fn auth_for(&self, r: &Reference) -> Result<RegistryAuth> {
        let mut map = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = map.get(r.registry()) {
            return Ok(a.clone());
        }
        let a = self.config.auth_for(r.registry())?;
        map.insert(r.registry().to_owned(), a.clone());
        Ok(a)
    }

    /// Runs one oci-client operation under the retry policy.
    pub(crate) fn call<T, F, Fut>(&self, r: &Reference, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.retrying(r, what, || {
            self.rt.block_on(op()).map_err(|e| classify(r, what, e))
        })
    }

    /// The retry loop shared by oci-client calls and blob requests.
    pub(crate) fn retrying<T>(
        &self,
        r: &Reference,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T> {
        let policy = &self.config.retry;
        let mut n = 0;
        loop {
            n += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(reason, after)) => {
                    if n >= policy.attempts.max(1) {
                        return Err(RegistryError::Exhausted {
                            reference: r.to_string(),
                            what: what.to_owned(),
                            attempts: n,
                            reason,
                        });
                    }
                    let pause = after
                        .map(|d| d.min(policy.max_delay))
                        .unwrap_or_else(|| policy.backoff(n));
                    warn!(reference = %r, what, attempt = n, ?pause, "retrying: {reason}");
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// The manifest or index `r` names (by digest when pinned, else by
    /// tag), verified against the pinned digest.
    pub fn manifest(&self, r: &Reference) -> Result<RawManifest> {
        let auth = self.auth_for(r)?;
        let what = "manifest";
        let (bytes, _) = self.call(r, what, || {
            self.client
                .pull_manifest_raw(r.oci(), &auth, &MANIFEST_MEDIA_TYPES)
        })?;
        if bytes.len() as u64 > self.config.max_document_size {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                what: what.into(),
                limit: self.config.max_document_size,
            });
        }
        let digest = sha256_digest(&bytes);
        if let Some(pinned) = r.digest() {
            if pinned != digest {
                return Err(RegistryError::DigestMismatch {
                    reference: r.to_string(),
                    what: what.into(),
                    expected: pinned.to_owned(),
                    actual: digest,
                });
            }
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        debug!(reference = %r, %digest, %media_type, "manifest");
        Ok(RawManifest {
            bytes: bytes.to_vec(),
            digest,
            media_type,
        })
    }

    /// Every tag of `r`'s repository, following pagination.
    pub fn tags(&self, r: &Reference) -> Result<Vec<String>> {
        let auth = self.auth_for(r)?;
        let mut out: Vec<String> = Vec::new();
        const PAGE: usize = 1000;
        loop {
            let last = out.last().cloned();
            let page = self.call(r, "tag list", || {
                self.client
                    .list_tags(r.oci(), &auth, Some(PAGE), last.as_deref())
            })?;
            let n = page.tags.len();
            let before = out.len();
            for t in page.tags {
                if last.as_deref().is_none_or(|l| t.as_str() > l) {
                    out.push(t);
                }
            }
            // A registry that ignores `n`/`last` sends everything at once.
            if n < PAGE || out.len() == before {
                break;
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether the registry has blob `digest` in `r`'s repository.
    pub fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool> {
        let auth = self.auth_for(r)?;
        self.call(r, "blob check", || async {
            self.client
                .store_auth_if_needed(r.oci().resolve_registry(), &auth)
                .await;
            self.client.blob_exists(r.oci(), digest).await
        })
    }

    /// Uploads `data` as a blob of `r`'s repository unless it is there.
    pub fn push_blob(&self, r: &Reference, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        if self.blob_exists(r, &digest)? {
            return Ok(digest);
        }
        let auth = self.auth_for(r)?;
        let bytes = bytes::Bytes::copy_from_slice(data);
        self.call(r, "blob upload", || async {
            self.client
                .auth(r.oci(), &auth, RegistryOperation::Push)
                .await?;
            self.client.push_blob(r.oci(), bytes.clone(), &digest).await
        })?;
        Ok(digest)
    }

    /// Uploads a manifest under `r`'s tag (or digest); returns its digest.
    pub fn push_manifest(&self, r: &Reference, bytes: &[u8], media_type: &str) -> Result<String> {
        let auth = self.auth_for(r)?;
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|e| {
            RegistryError::Protocol {
                reference: r.to_string(),
                what: "manifest upload".into(),
                reason: format!("media type {media_type:?}: {e}"),
            }
        })?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.call(r, "manifest upload", || async {
            self.client
                .auth(r.oci(), &auth, RegistryOperation::Push)
                .await?;
            self.client
                .push_manifest_raw(r.oci(), body.clone(), content_type.clone())
                .await
        })?;
        Ok(sha256_digest(bytes))
    }

    /// The `Authorization` header value for a blob GET in `r`'s repository.
    pub(crate) fn pull_authorization(
        &self,
        r: &Reference,
        refresh: bool,
    ) -> Result<Option<String>> {
        let key = r.name();
        if !refresh {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((t, at)) = tokens.get(&key) {
                if at.elapsed() < TOKEN_REUSE {
                    return Ok(t.clone());
                }
            }
        }
        let auth = self.auth_for(r)?;
        let token = self.call(r, "authentication", || {
            self.client.auth(r.oci(), &auth, RegistryOperation::Pull)
        })?;
        let header = match (token, &auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(basic_header(u, p)),
            (None, _) => None,
        };
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (header.clone(), Instant::now()));
        Ok(header)
    }

    /// `scheme://host/v2/repo/blobs/digest`.
    pub(crate) fn blob_url(&self, r: &Reference, digest: &str) -> String {
        let host = r.resolve_registry();
        format!(
            "{}://{host}/v2/{}/blobs/{digest}",
            self.config.scheme(r.registry()),
            r.repository()
        )
    }
}

fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (for one header; not worth a crate).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `sha256:<64 lowercase hex>` of `bytes` ([`stratum_catalog::Sha256Digest`]).
pub fn sha256_digest(bytes: &[u8]) -> String {
    stratum_catalog::Sha256Digest::of(bytes).to_string()
}

/// Sorts an oci-client error into retry or final, and names it.
fn classify(r: &Reference, what: &str, e: OciDistributionError) -> Failure {
    let reference = r.to_string();
    let fatal = |reason: String| {
        Failure::Fatal(RegistryError::Protocol {
            reference: reference.clone(),
            what: what.to_owned(),
            reason,
        })
    };
    match e {
        OciDistributionError::UnauthorizedError { url } => {
            Failure::Fatal(RegistryError::Unauthorized {
                reference,
                what: what.to_owned(),
                reason: format!("HTTP 401 from {url}"),
            })
        }
        OciDistributionError::AuthenticationFailure(m) => {
            Failure::Fatal(RegistryError::Unauthorized {
                reference,
                what: what.to_owned(),
                reason: m,
            })
        }
        OciDistributionError::ImageManifestNotFoundError(m) => {
            Failure::Fatal(RegistryError::NotFound {
                reference,
                what: what.to_owned(),
                reason: m,
            })
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = format!("{envelope} ({url})");
            if codes.contains(&&OciErrorCode::Toomanyrequests) {
                Failure::Transient(text, None)
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Failure::Fatal(RegistryError::NotFound {
                    reference,
                    what: what.to_owned(),
                    reason: text,
                })
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Failure::Fatal(RegistryError::Unauthorized {
                    reference,
                    what: what.to_owned(),
                    reason: text,
                })
            } else {
                fatal(text)
            }
        }
        OciDistributionError::ServerError { code, url, message } => {
            let text = format!("HTTP {code} from {url}: {}", message.trim());
            match code {
                408 | 429 | 500..=599 => Failure::Transient(text, None),
                401 | 403 => Failure::Fatal(RegistryError::Unauthorized {
                    reference,
                    what: what.to_owned(),
                    reason: text,
                }),
                404 => Failure::Fatal(RegistryError::NotFound {
                    reference,
                    what: what.to_owned(),
                    reason: text,
                }),
                _ => fatal(text),
            }
        }
        OciDistributionError::RequestError(e) => {
            let chain = error_chain(&e);
            if e.is_builder() {
                fatal(chain)
            } else if let Some(hint) = tls_hint(&chain) {
                fatal(format!("{chain} ({hint})"))
            } else {
                Failure::Transient(chain, None)
            }
        }
        OciDistributionError::IoError(e) => Failure::Transient(format!("{e}"), None),
        other => fatal(format!("{other}")),
    }
}

/// TLS failures do not go away by retrying: say what to do instead.
pub(crate) fn tls_hint(chain: &str) -> Option<&'static str> {
    if chain.contains("InvalidContentType") || chain.contains("wrong version number") {
        Some("the registry does not speak TLS there; for a plain-HTTP registry give --insecure-registry HOST[:PORT]")
    } else if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        Some("the registry's TLS certificate is not trusted; give its CA with --registry-ca FILE")
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
