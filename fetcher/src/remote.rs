//! A repository read over HTTP through the node's verified cache.
//!
//! [`Remote`] ties the [transport](crate::transport) (mirrors, retries,
//! timeouts) to the [cache](crate::cache) (atomic inserts, quota, pins) and
//! verifies everything in between:
//!
//! - the manifest: parsed strictly, its signature checked with
//!   `verify_strict` against the configured key, and its revision compared
//!   with the highest one this cache has verified for the same repository
//!   name and key (a lower one is refused; a higher one is recorded, under
//!   a lock, before [`Remote::open`] returns);
//! - every object and catalog: decoded and BLAKE3-checked against its id
//!   before it is stored or used; a body that does not verify is a failure
//!   of the mirror that sent it, and the next mirror is asked.
//!
//! One download per id at a time: concurrent callers of [`Remote::object`]
//! or [`Remote::catalog`] for the same id wait for the first one's result
//! (singleflight) instead of downloading again.
//!
//! `Remote` is `Send + Sync`; share it with `Arc` between threads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use stratum_catalog::catalog::Catalog;
use stratum_catalog::manifest::{key_fingerprint, Manifest, MANIFEST_PATH};
use stratum_catalog::namespace::CatalogLoader;
use stratum_catalog::object::{self, Expected, MAX_CATALOG_SIZE, MAX_OBJECT_SIZE};
use stratum_catalog::{ObjectId, ObjectKind};

use crate::cache::{Cache, CacheUsage, Kind};
use crate::transport::{FetchError, Fetched, Reject, Transport, TransportStats, Validators};
use crate::ObjectSource;

mod flights;

use flights::Flights;

/// Default cache quota: 4 GiB.
pub const DEFAULT_QUOTA: u64 = 4 << 30;

/// The largest manifest file (FORMAT.md §8.1).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4096;

/// How to reach a repository and where to cache it.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Base URLs of the repository (the directory that holds `.stratum/`
    /// and `data/`), tried in this order; the last one that answered well
    /// is tried first afterwards.
    pub urls: Vec<String>,
    /// The key that must have signed the manifest.
    pub public_key: VerifyingKey,
    /// The node's cache directory (created if absent); see [`crate::cache`].
    pub cache_dir: PathBuf,
    /// Bound on the bytes of the cache's files. Default [`DEFAULT_QUOTA`].
    pub quota_bytes: u64,
    /// Time allowed to establish a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed without receiving anything (response head or body
    /// bytes). Default 20 s. A request also ends after
    /// `connect_timeout + 10 × read_timeout` whatever the progress.
    pub read_timeout: Duration,
    /// Extra rounds over the mirrors after a round in which all failed,
    /// with exponential backoff in between. Default 3.
    pub retries: u32,
    /// The repository name the manifest must carry. `None`: the name this
    /// cache recorded when the first URL was first used with this key
    /// (trust on first use), or, on that first use, whatever name the
    /// signed manifest carries. Another repository signed with the same
    /// key is refused either way.
    pub expected_name: Option<String>,
    /// Speak HTTP/2 without negotiation (h2c, "prior knowledge") to the
    /// `http://` mirrors, e.g. `stratum serve` or nginx `listen … http2`;
    /// an HTTP/1.1-only server (Squid, S3, a default nginx) then fails.
    /// `https://` mirrors negotiate HTTP/2 either way. Default false.
    pub http2_prior_knowledge: bool,
    /// Connections to open to the first mirror while the manifest is
    /// fetched, for the parallel requests that will follow (a mount's
    /// prefetch workers): each then finds a connection open instead of
    /// paying a connect, one round trip more, when its first request goes
    /// out (D42). At most [`MAX_CONNECTIONS_AHEAD`]. Default 0.
    pub connections_ahead: usize,
    /// Whether content objects that [`ObjectSource::content_async`] (a
    /// pull) downloads are added to the cache. Default true. False: a pull
    /// writes each downloaded object only into its destination (objects
    /// already in the cache are still read from it; catalogs are cached
    /// either way), which halves the files a one-off pull creates.
    pub fill_cache: bool,
}

/// Upper bound of [`RemoteConfig::connections_ahead`].
pub const MAX_CONNECTIONS_AHEAD: usize = 64;

impl RemoteConfig {
    pub fn new(urls: Vec<String>, public_key: VerifyingKey, cache_dir: PathBuf) -> Self {
        RemoteConfig {
            urls,
            public_key,
            cache_dir,
            quota_bytes: DEFAULT_QUOTA,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(20),
            retries: 3,
            expected_name: None,
            http2_prior_knowledge: false,
            connections_ahead: 0,
            fill_cache: true,
        }
    }
}

/// The default cache directory: `/var/cache/stratum` when running as root
/// (one cache for the node), else `$XDG_CACHE_HOME/stratum`, else
/// `$HOME/.cache/stratum`, else `<tmp>/stratum-<uid>`.
pub fn default_cache_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/stratum");
    }
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(x) = abs(std::env::var_os("XDG_CACHE_HOME")) {
        return x.join("stratum");
    }
    if let Some(h) = abs(std::env::var_os("HOME")) {
        return h.join(".cache").join("stratum");
    }
    std::env::temp_dir().join(format!("stratum-{}", rustix::process::geteuid().as_raw()))
}

/// A verified object in the cache, open. The file holds the decoded bytes;
/// read it with [`FileExt::read_at`]. Eviction unlinks files but cannot take
/// the bytes away from an open handle.
#[derive(Debug)]
pub struct CachedObject {
    pub file: File,
    pub len: u64,
}

impl CachedObject {
    /// Reads up to `buf.len()` bytes at `offset` (fewer only at the end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() && offset + (done as u64) < self.len {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The whole object.
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        let mut v = vec![0u8; len];
        self.file.read_exact_at(&mut v, 0)?;
        Ok(v)
    }
}

/// A catalog this process holds open, with the flock that pins its file.
struct Pinned {
    catalog: Arc<Catalog>,
    _lock: File,
}

/// A repository over HTTP with a verified local cache. See the module
/// documentation.
pub struct Remote {
    pub(crate) transport: Transport,
    /// Shared with the blocking threads that insert what `pull` downloads.
    pub(crate) cache: Arc<Cache>,
    key: VerifyingKey,
    manifest: Manifest,
    manifest_id: ObjectId,
    /// The mirror that sent `manifest` and its validators.
    manifest_validators: (String, Validators),
    catalogs: Mutex<HashMap<ObjectId, Pinned>>,
    object_flights: Flights<(Arc<File>, u64)>,
    catalog_flights: Flights<Arc<Catalog>>,
    /// [`RemoteConfig::fill_cache`].
    fill_cache: bool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("urls", &self.transport.urls())
            .field("cache", &self.cache.root())
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

pub(crate) fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Content => "object",
        ObjectKind::Catalog => "catalog",
        ObjectKind::Manifest => "manifest object",
    }
}

impl Remote {
    /// Opens the cache, fetches the manifest and verifies it (signature,
    /// rollback); see the module documentation. Mirrors that serve a bad
    /// or older manifest are skipped for the next one.
    pub fn open(cfg: RemoteConfig) -> Result<Self, FetchError> {
        let transport = Transport::new(
            &cfg.urls,
            cfg.connect_timeout,
            cfg.read_timeout,
            cfg.retries,
            cfg.http2_prior_knowledge,
        )?;
        // Before the manifest request, so that the manifest gets its own
        // connection rather than waiting for one of these.
        transport.open_connections(
            cfg.connections_ahead.min(MAX_CONNECTIONS_AHEAD),
            MANIFEST_PATH,
        );
        let cache = Arc::new(Cache::open(&cfg.cache_dir, cfg.quota_bytes)?);
        let key = cfg.public_key;
        let fp = key_fingerprint(&key);
        // The identity of the repository this node asked for: named by the
        // caller, else what this cache recorded for the first URL and key.
        let origin = cfg.urls.first().cloned().unwrap_or_default();
        let recorded = cache.recorded_name(&origin, &fp)?;
        let expected = cfg.expected_name.clone().or(recorded.clone());
        let fetched = transport.fetch_conditional(
            "manifest",
            MANIFEST_PATH,
            MAX_MANIFEST_SIZE,
            None,
            cfg.retries,
            |url, body, validators| {
                let m = Manifest::verify(&body, &key).map_err(|e| match e {
                    stratum_catalog::Error::BadSignature => Reject::Permanent(
                        "manifest signature does not verify with the given public key".into(),
                    ),
                    other => Reject::Permanent(other.to_string()),
                })?;
                if let Some(want) = expected.as_deref().filter(|w| *w != m.name) {
                    return Err(Reject::Permanent(format!(
                        "the manifest is signed for repository {:?}, not {want:?} (another repository signed with the same key)",
                        m.name
                    )));
                }
                match cache.check_and_record_revision(&m.name, &fp, m.revision) {
                    Err(e) => Err(Reject::Fatal(e)),
                    Ok(Err(seen)) => Err(Reject::Rollback {
                        name: m.name.clone(),
                        offered: m.revision,
                        seen,
                    }),
                    Ok(Ok(())) => Ok((m, ObjectId::of(&body), (url.to_owned(), validators))),
                }
            },
        )?;
        let Fetched::Body((manifest, manifest_id, manifest_validators)) = fetched else {
            // Only a conditional request is answered with "not modified".
            return Err(FetchError::Config(
                "HTTP 304 to an unconditional request".into(),
            ));
        };
        tracing::debug!(name = %manifest.name, revision = manifest.revision, root = %manifest.root, "manifest verified");
        // The revision a mount opened with serves until a live mount switches.
        stratum_metrics::mount::revision(manifest.revision);
        if recorded.is_none() {
            cache.record_name(&origin, &fp, &manifest.name)?;
        }
        Ok(Remote {
            transport,
            cache,
            key,
            manifest,
            manifest_id,
            manifest_validators,
            catalogs: Mutex::new(HashMap::new()),
            object_flights: Flights::new(),
            catalog_flights: Flights::new(),
            fill_cache: cfg.fill_cache,
        })
    }

    /// The verified manifest this remote was opened with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A manifest of this repository's signed history (the object a later
    /// manifest names as `previous`): downloaded, hash-checked against
    /// `id`, its signature verified with this remote's key, and its name
    /// checked against the current manifest's. Not cached: history is read
    /// rarely, and a manifest is small.
    pub fn historic_manifest(&self, id: &ObjectId) -> Result<Manifest, FetchError> {
        let bytes = self.download_small(id, ObjectKind::Manifest, MAX_MANIFEST_SIZE)?;
        let m = Manifest::verify(&bytes, &self.key).map_err(|e| FetchError::Manifest {
            id: *id,
            reason: e.to_string(),
        })?;
        if m.name != self.manifest.name {
            return Err(FetchError::Manifest {
                id: *id,
                reason: format!(
                    "names repository {:?}, not {:?}",
                    m.name, self.manifest.name
                ),
            });
        }
        Ok(m)
    }

    /// The mirror (its manifest URL) that sent that manifest, and the
    /// validators it sent with it: what [`Remote::poll_manifest`] asks with.
    pub fn manifest_validators(&self) -> &(String, Validators) {
        &self.manifest_validators
    }

    /// The id (BLAKE3 of the file bytes) of that manifest.
    pub fn manifest_id(&self) -> ObjectId {
        self.manifest_id
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The base URLs, normalized (no trailing `/`).
    pub fn urls(&self) -> &[String] {
        self.transport.urls()
    }

    /// The mirror in use: the one asked first, which answered last.
    pub fn mirror_in_use(&self) -> &str {
        self.transport.preferred_url()
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.root()
    }

    /// How full the cache is, as this process knows it (for `statfs`).
    pub fn cache_usage(&self) -> CacheUsage {
        self.cache.usage()
    }

    /// Counters since [`Remote::open`] (the manifest fetch included).
    pub fn stats(&self) -> TransportStats {
        let mut s = self.transport.counters.snapshot();
        s.evictions = self
            .cache
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// Downloads one object and decodes it as a stream into a new file of
    /// the cache's `tmp/`, hashing as it goes (memory stays bounded, see
    /// [`object::decode_to`]); returns the file and the decoded size. A
    /// body that does not verify fails that mirror; one whose frame
    /// declares another size than `expected` (a zstd bomb) fails it for
    /// good, without decoding a byte and without retries.
    fn download(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        expected: Expected,
    ) -> Result<(tempfile::NamedTempFile, u64), FetchError> {
        let what = format!("{} {id}", kind_name(kind));
        self.transport.fetch(
            &what,
            &id.path(kind),
            expected.encoded_bound(),
            false,
            |_url, body| {
                let mut tmp = self.cache.new_file().map_err(Reject::Fatal)?;
                let decoded = {
                    let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                    object::decode_to(id, &body, expected, &mut w).and_then(|n| {
                        w.flush()
                            .map(|()| n)
                            .map_err(|e| stratum_catalog::Error::Io {
                                path: self.cache.root().join("tmp"),
                                error: e,
                            })
                    })
                };
                match decoded {
                    Ok(n) => Ok((tmp, n)),
                    Err(
                        e @ (stratum_catalog::Error::ObjectTooLarge { .. }
                        | stratum_catalog::Error::SizeMismatch { .. }),
                    ) => Err(Reject::Permanent(e.to_string())),
                    Err(stratum_catalog::Error::Io { path, error }) => {
                        Err(Reject::Fatal(FetchError::Cache {
                            path,
                            reason: format!("writing a decoded object: {error}"),
                        }))
                    }
                    Err(e) => Err(Reject::Corrupt(e.to_string())),
                }
            },
        )
    }

    /// Downloads one small object (at most `limit` bytes decoded, as the
    /// format bounds it) and returns its verified bytes.
    fn download_small(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        limit: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let what = format!("{} {id}", kind_name(kind));
        self.transport.fetch(
            &what,
            &id.path(kind),
            Expected::AtMost(limit).encoded_bound(),
            false,
            |_url, body| {
                object::decode_expected(id, &body, Expected::AtMost(limit)).map_err(|e| match e {
                    stratum_catalog::Error::ObjectTooLarge { .. } => {
                        Reject::Permanent(e.to_string())
                    }
                    e => Reject::Corrupt(e.to_string()),
                })
            },
        )
    }

    /// A verified content object of unknown size (at most
    /// [`MAX_OBJECT_SIZE`]), from the cache or downloaded into it. Readers
    /// that know the size from a catalog use [`Remote::object_sized`].
    pub fn object(&self, id: &ObjectId) -> Result<CachedObject, FetchError> {
        self.object_expected(id, Expected::AtMost(MAX_OBJECT_SIZE), true, false)
    }

    /// A verified content object of `size` bytes (as its catalog entry or
    /// chunk states), from the cache or downloaded into it (one download
    /// shared by all concurrent callers of the same id). A cached file of
    /// another size is not it.
    pub fn object_sized(&self, id: &ObjectId, size: u64) -> Result<CachedObject, FetchError> {
        self.object_expected(id, Expected::Size(size), true, false)
    }

    /// [`Remote::object_sized`] for a reader that has just read this object
    /// (the next read of the same open file): found in the cache, it is not
    /// counted as another cache hit.
    pub fn object_sized_again(&self, id: &ObjectId, size: u64) -> Result<CachedObject, FetchError> {
        self.object_expected(id, Expected::Size(size), false, false)
    }

    /// A verified content object of `size` bytes if the cache holds it
    /// (counted as a hit); `None` when it does not. Never downloads.
    pub fn cached_object(
        &self,
        id: &ObjectId,
        size: u64,
    ) -> Result<Option<CachedObject>, FetchError> {
        match self.cache.lookup(Kind::Object, id)? {
            Some((_, len)) if len != size => Err(self.size_mismatch(id, len, Expected::Size(size))),
            Some((file, len)) => {
                self.transport.counters.hit();
                Ok(Some(CachedObject { file, len }))
            }
            None => Ok(None),
        }
    }

    /// Brings content object `id` of `size` bytes into the cache ahead of
    /// the reads (not counted as a cache hit). A reader waiting for this
    /// download gets its bytes; when it fails, the reader fetches on its
    /// own instead of failing with it.
    pub fn prefetch_object(&self, id: &ObjectId, size: u64) -> Result<(), FetchError> {
        self.object_expected(id, Expected::Size(size), false, true)
            .map(drop)
    }

    fn object_expected(
        &self,
        id: &ObjectId,
        expected: Expected,
        count_hit: bool,
        hint: bool,
    ) -> Result<CachedObject, FetchError> {
        let c = &self.transport.counters;
        let fits = |len: u64| match expected {
            Expected::Size(s) => len == s,
            Expected::AtMost(m) => len <= m,
        };
        if let Some((file, len)) = self.cache.lookup(Kind::Object, id)? {
            if !fits(len) {
                return Err(self.size_mismatch(id, len, expected));
            }
            if count_hit {
                c.hit();
            }
            return Ok(CachedObject { file, len });
        }
        let (file, len) = self.object_flights.run_as(id, &c.shared_waits, hint, || {
            // Another thread or process may have inserted it meanwhile.
            if let Some((file, len)) = self.cache.lookup(Kind::Object, id)? {
                if count_hit {
                    c.hit();
                }
                return Ok((Arc::new(file), len));
            }
            let (tmp, len) = self.download(id, ObjectKind::Content, expected)?;
            c.miss();
            let (file, len) = self.cache.insert_file(Kind::Object, id, tmp, len)?;
            Ok((Arc::new(file), len))
        })?;
        if !fits(len) {
            return Err(self.size_mismatch(id, len, expected));
        }
        let file = file.try_clone().map_err(|e| FetchError::Cache {
            path: self.cache.path(Kind::Object, id),
            reason: format!("dup: {e}"),
        })?;
        Ok(CachedObject { file, len })
    }

    /// See [`ObjectSource::content_async`] for `Remote`.
    async fn content_fetched(&self, id: ObjectId, size: u64) -> Result<Vec<u8>, FetchError> {
        let c = &self.transport.counters;
        let expected = Expected::Size(size);
        if let Some((file, len)) = self.cache.lookup(Kind::Object, &id)? {
            if len != size {
                return Err(self.size_mismatch(&id, len, expected));
            }
            c.hit();
            return CachedObject { file, len }
                .read_all()
                .map_err(|e| FetchError::Cache {
                    path: self.cache.path(Kind::Object, &id),
                    reason: format!("reading: {e}"),
                });
        }
        let what = format!("{} {id}", kind_name(ObjectKind::Content));
        let bytes = self
            .transport
            .fetch_async(
                &what,
                &id.path(ObjectKind::Content),
                expected.encoded_bound(),
                false,
                |_url, body| {
                    // Decoding, hashing and the insert are CPU and file
                    // system work: on a blocking thread, so that the thread
                    // polling the downloads only writes the destination.
                    let cache = self.fill_cache.then(|| self.cache.clone());
                    let verify = move || {
                        let bytes =
                            object::decode_expected(&id, &body, expected).map_err(|e| match e {
                                stratum_catalog::Error::ObjectTooLarge { .. }
                                | stratum_catalog::Error::SizeMismatch { .. } => {
                                    Reject::Permanent(e.to_string())
                                }
                                e => Reject::Corrupt(e.to_string()),
                            })?;
                        if let Some(cache) = cache {
                            cache.insert_bytes(&id, &bytes).map_err(Reject::Fatal)?;
                        }
                        Ok(bytes)
                    };
                    async move {
                        tokio::task::spawn_blocking(verify).await.map_err(|e| {
                            Reject::Fatal(FetchError::Cache {
                                path: PathBuf::new(),
                                reason: format!("verifying object {id}: {e}"),
                            })
                        })?
                    }
                },
            )
            .await?;
        c.miss();
        Ok(bytes)
    }

    /// A verified object whose size is not what the catalog states: the
    /// catalog is wrong (its id hashes the bytes, so no other copy helps).
    fn size_mismatch(&self, id: &ObjectId, len: u64, expected: Expected) -> FetchError {
        FetchError::Cache {
            path: self.cache.path(Kind::Object, id),
            reason: format!("object {id} is {len} bytes, the catalog states {expected:?}"),
        }
    }

    /// A verified catalog: downloaded once, stored decoded in the cache,
    /// opened in place, and pinned (never evicted by any process) for the
    /// lifetime of this `Remote`.
    pub fn catalog(&self, id: &ObjectId) -> Result<Arc<Catalog>, FetchError> {
        let c = &self.transport.counters;
        let open = || {
            self.catalogs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .map(|p| p.catalog.clone())
        };
        if let Some(cat) = open() {
            c.hit();
            return Ok(cat);
        }
        self.catalog_flights.run(id, &c.shared_waits, || {
            if let Some(cat) = open() {
                c.hit();
                return Ok(cat);
            }
            let file = match self.cache.lookup_catalog_pinned(id)? {
                Some(f) => {
                    c.hit();
                    f
                }
                None => {
                    let (tmp, len) =
                        self.download(id, ObjectKind::Catalog, Expected::AtMost(MAX_CATALOG_SIZE))?;
                    c.miss();
                    self.cache.insert_file(Kind::Catalog, id, tmp, len)?.0
                }
            };
            let path = self.cache.path(Kind::Catalog, id);
            let cat = match Catalog::open_path_checked(*id, &path) {
                Ok(cat) => Arc::new(cat),
                Err(e) => {
                    self.cache.unpin(Kind::Catalog, id);
                    return Err(FetchError::Catalog {
                        id: *id,
                        reason: e.to_string(),
                    });
                }
            };
            self.catalogs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    *id,
                    Pinned {
                        catalog: cat.clone(),
                        _lock: file,
                    },
                );
            Ok(cat)
        })
    }

    /// Closes this `Remote`'s copy of catalog `id` and unpins its file, so
    /// that the quota may evict it; `Arc`s handed out keep their copy open
    /// (an evicted file stays readable through them). A later
    /// [`Remote::catalog`] finds it in the cache again, or downloads it.
    pub fn release_catalog(&self, id: &ObjectId) {
        let pinned = self
            .catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if pinned.is_some() {
            self.cache.unpin(Kind::Catalog, id);
        }
    }

    /// Where the decoded catalog `id` lives in the cache. Meaningful once
    /// [`Remote::catalog`] returned it: then the file stays until
    /// [`Remote::release_catalog`] (or the end of this `Remote`), and may be
    /// opened again with [`Catalog::open_path_checked`] (the name is in the
    /// untrusted cache).
    pub fn catalog_file(&self, id: &ObjectId) -> PathBuf {
        self.cache.path(Kind::Catalog, id)
    }
}

/// `materialize` reads content through this: verified bytes from the cache.
impl ObjectSource for Remote {
    fn content(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error> {
        let o = self
            .object_sized(id, size)
            .map_err(|e| e.to_catalog_error(id, ObjectKind::Content))?;
        o.read_all().map_err(|error| stratum_catalog::Error::Io {
            path: self.cache.path(Kind::Object, id),
            error,
        })
    }

    fn fetches_async(&self) -> bool {
        true
    }

    /// Verified bytes from the cache, or downloaded, then decoded, verified
    /// and inserted into the cache without an `fdatasync`
    /// ([`Cache::insert_bytes`]) on one of the runtime's blocking threads
    /// (a body that does not verify fails its mirror, as in
    /// [`Transport::fetch`](crate::transport)). No singleflight:
    /// a pull asks for an object again only for another file with the same
    /// bytes, and a second download of it costs less than the coordination.
    fn content_async(&self, id: ObjectId, size: u64) -> crate::ContentFuture<'_> {
        Box::pin(async move {
            self.content_fetched(id, size)
                .await
                .map_err(|e| e.to_catalog_error(&id, ObjectKind::Content))
        })
    }

    /// Fetched, verified and pinned like [`Remote::catalog`] (where
    /// [`RemoteLoader`] finds it); returns the catalogs mounted in it.
    fn catalog_ahead(&self, id: &ObjectId) -> Vec<ObjectId> {
        let Ok(cat) = self.catalog(id) else {
            return Vec::new();
        };
        let mut nested = Vec::new();
        let _ = cat.for_each_entry(|e| {
            nested.extend(e.nested);
            Ok(())
        });
        nested
    }
}

/// Loads the catalogs of a [`Namespace`](stratum_catalog::namespace::Namespace)
/// through a [`Remote`]: each catalog is fetched and verified once per
/// `Remote` (pinned in the cache), and opened once per loader.
pub struct RemoteLoader {
    remote: Arc<Remote>,
    open: RefCell<HashMap<ObjectId, Rc<Catalog>>>,
}

impl RemoteLoader {
    pub fn new(remote: Arc<Remote>) -> Self {
        RemoteLoader {
            remote,
            open: RefCell::new(HashMap::new()),
        }
    }

    pub fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }
}

impl CatalogLoader for RemoteLoader {
    fn load(&self, id: &ObjectId) -> stratum_catalog::Result<Rc<Catalog>> {
        if let Some(c) = self.open.borrow().get(id) {
            return Ok(c.clone());
        }
        // Fetched, verified and pinned; the file stays while `remote` lives.
        self.remote
            .catalog(id)
            .map_err(|e| e.to_catalog_error(id, ObjectKind::Catalog))?;
        // Again by name: checked again (see `Catalog::open_path_checked`).
        let c = Rc::new(Catalog::open_path_checked(
            *id,
            &self.remote.catalog_file(id),
        )?);
        self.open.borrow_mut().insert(*id, c.clone());
        Ok(c)
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Remote>();
    is::<CachedObject>();
}
