//! Replication: a mirror of a served repository in a storage backend (a
//! "stratum 1"), brought up to date incrementally.
//!
//! [`replicate`] reads the repository over HTTP with the fetcher's
//! [transport](crate::transport) (mirrors, retries, timeouts) and writes it
//! into any [`Backend`] (a local directory now, S3 later):
//!
//! 1. The replica's own manifest, if it has one, is verified with the given
//!    key: a replica of another repository (or key) is refused.
//! 2. The served manifest is fetched (`Cache-Control: no-cache`) and verified
//!    with the key. One whose repository name differs from the replica's, or
//!    whose revision is lower than the replica's (rollback protection), or
//!    equal to it with other bytes, is refused from that mirror, and the next
//!    mirror is asked. If it is the replica's manifest byte for byte, nothing
//!    is done.
//! 3. Every catalog reachable from the new root is walked (nested catalogs
//!    through their mount points), and every object the replica lacks
//!    (catalogs, content objects, chunks) is fetched, decoded and checked
//!    against its id, then stored with [`Backend::put_if_absent`] as the
//!    bytes that arrived. Up to [`ReplicateConfig::jobs`] downloads run at
//!    once.
//! 4. The new revision's manifest object (`data/…M`), the public key as
//!    `.stratum/public.pem` if absent, then [`Backend::sync`], and only then
//!    `.stratum/manifest` is replaced. A reader of the replica therefore
//!    always sees a complete revision: the old one until the very end.
//!
//! # What is walked
//!
//! Everything that the replica's current manifest reaches is complete and
//! durable: the manifest was written only after a sync of everything below
//! it (by this code, or by the publisher when the replica is a copy made
//! the documented way). So the walk goes down the new tree and the
//! replica's current tree side by side, by mount path, and does not enter a
//! nested catalog whose id is the one the current tree has at the same path:
//! its whole subtree is present. Copy-on-write publishing keeps every
//! untouched layer, flat tree and partition catalog, so a run costs in
//! proportion to what changed, not to the repository. Every other catalog
//! is read (from the replica when present, verified on the way) and every
//! object it names is checked with [`Backend::exists`] (a `stat`).
//! [`ReplicateConfig::full`] disables the pruning: every catalog is walked
//! and every object checked, which repairs a replica whose objects were
//! removed behind its back.
//!
//! An interrupted run writes no manifest, so it leaves the old revision
//! intact; objects it stored are simply found present by the next run.
//!
//! # Crashes and the dirty marker
//!
//! Objects are not synced one by one (one [`Backend::sync`] per run), so
//! after a power loss an object written by an interrupted run may exist
//! with incomplete bytes. As the publisher does (FORMAT.md §9.1), a run
//! writes `.stratum/dirty` durably before its first object and removes it
//! after the manifest (or, after a clean failure, after a sync); a run
//! that finds the marker is *recovering* and
//! reads and verifies every object it would otherwise skip as present,
//! replacing those that do not verify. (Objects of the current tree are
//! durable and are not re-read.)
//!
//! Concurrent runs on one destination must be serialized by the caller:
//! [`stratum_catalog::layout::lock_dir`] for a directory (the publisher's
//! lock file).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use stratum_catalog::backend::Backend;
use stratum_catalog::catalog::{Catalog, Data};
use stratum_catalog::manifest::{Manifest, MANIFEST_PATH};
use stratum_catalog::object::{self, Expected, MAX_CATALOG_SIZE};
use stratum_catalog::{ObjectId, ObjectKind};

use crate::remote::{kind_name, MAX_MANIFEST_SIZE};
use crate::transport::{FetchError, Reject, Transport, TransportStats};

use stratum_catalog::layout::{DIRTY_PATH, PUBLIC_KEY_PATH};

/// The default of [`ReplicateConfig::jobs`]: chosen by measurement at a
/// 10 ms round trip (docs/DECISIONS.md, "`--jobs` defaults").
pub const DEFAULT_REPLICATE_JOBS: usize = 64;

/// Where to replicate from, and how.
#[derive(Clone, Debug)]
pub struct ReplicateConfig {
    /// Base URLs of the repository, tried in order with failover (as for
    /// [`crate::RemoteConfig::urls`]).
    pub urls: Vec<String>,
    /// The key that must have signed the manifest.
    pub public_key: VerifyingKey,
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Default 20 s.
    pub read_timeout: Duration,
    /// Extra rounds over the mirrors. Default 3.
    pub retries: u32,
    /// Downloads in flight at once. Default [`DEFAULT_REPLICATE_JOBS`].
    pub jobs: usize,
    /// Walk every catalog, even below mount points unchanged since the
    /// replica's current revision. Default false.
    pub full: bool,
    /// HTTP/2 without negotiation to `http://` mirrors (as
    /// [`crate::RemoteConfig::http2_prior_knowledge`]). Default false.
    pub http2_prior_knowledge: bool,
}

impl ReplicateConfig {
    pub fn new(urls: Vec<String>, public_key: VerifyingKey) -> Self {
        ReplicateConfig {
            urls,
            public_key,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(20),
            retries: 3,
            jobs: DEFAULT_REPLICATE_JOBS,
            full: false,
            http2_prior_knowledge: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct ReplicateReport {
    /// The repository name.
    pub name: String,
    /// The revision the replica holds now.
    pub revision: u64,
    /// The revision it held before, if any.
    pub previous_revision: Option<u64>,
    /// False when the replica already held the served manifest.
    pub updated: bool,
    /// The previous run was interrupted (dirty marker found): objects
    /// found present were verified.
    pub recovering: bool,
    /// Objects fetched and stored (catalogs, content, the manifest object).
    pub objects_fetched: u64,
    /// Encoded bytes of those objects.
    pub bytes_fetched: u64,
    /// Objects that the replica already had.
    pub objects_present: u64,
    /// Objects present but damaged, replaced (recovering or corrupt
    /// catalogs only).
    pub objects_repaired: u64,
    /// Catalogs read (fetched or present).
    pub catalogs_walked: u64,
    /// Nested catalogs not entered: unchanged since the replica's revision.
    pub catalogs_unchanged: u64,
    /// The transport's counters.
    pub transport: TransportStats,
    pub seconds: f64,
}

/// Progress, as counters so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicateProgress {
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
    pub objects_present: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// Fetching from the served repository failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The served manifest is older than the replica's.
    #[error(
        "manifest of {name} from {url}: revision {offered} is older than the replica's revision {seen} (refusing a rollback)"
    )]
    Rollback {
        name: String,
        url: String,
        offered: u64,
        seen: u64,
    },
    /// The destination is not (or cannot become) a replica of this
    /// repository.
    #[error("replica: {0}")]
    Refused(String),
    /// Reading or writing the destination failed.
    #[error("replica: {0}")]
    Storage(#[from] stratum_catalog::Error),
    /// A verified catalog is not a valid catalog.
    #[error("catalog {id}: {reason}")]
    Catalog { id: ObjectId, reason: String },
}

/// Brings the replica in `dest` up to the served revision; see the module
/// documentation. `progress` is called from the download threads.
pub fn replicate(
    cfg: &ReplicateConfig,
    dest: &dyn Backend,
    progress: &(dyn Fn(ReplicateProgress) + Sync),
) -> Result<ReplicateReport, ReplicateError> {
    let started = Instant::now();
    let key = cfg.public_key;
    let transport = Transport::new(
        &cfg.urls,
        cfg.connect_timeout,
        cfg.read_timeout,
        cfg.retries,
        cfg.http2_prior_knowledge,
    )?;

    // The replica as it is.
    let current: Option<(Manifest, ObjectId)> = match dest.get(MANIFEST_PATH)? {
        None => None,
        Some(bytes) => {
            let m = Manifest::verify(&bytes, &key).map_err(|e| {
                ReplicateError::Refused(format!(
                    "its {MANIFEST_PATH} does not verify with the given public key ({e}): \
                     it is not a replica of this repository"
                ))
            })?;
            Some((m, ObjectId::of(&bytes)))
        }
    };
    check_public_key(dest, &key)?;

    // The served manifest.
    let (manifest, manifest_bytes) = fetch_manifest(&transport, &key, current.as_ref())?;
    let manifest_id = ObjectId::of(&manifest_bytes);
    let mut report = ReplicateReport {
        name: manifest.name.clone(),
        revision: manifest.revision,
        previous_revision: current.as_ref().map(|(m, _)| m.revision),
        ..Default::default()
    };
    if current.as_ref().is_some_and(|(_, id)| *id == manifest_id) {
        tracing::info!(revision = manifest.revision, "the replica is up to date");
        report.transport = transport.counters.snapshot();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // From here on the replica may get objects that are not durable yet.
    let recovering = dest.exists(DIRTY_PATH)?;
    if recovering {
        tracing::warn!(
            "the last replication was interrupted; verifying the objects it may have left"
        );
    } else {
        dest.replace(DIRTY_PATH, b"")?;
    }
    report.recovering = recovering;

    let old_root = match (&current, cfg.full) {
        (Some((m, _)), false) => Some(m.root),
        _ => None,
    };
    let walker = Walker {
        transport: &transport,
        dest,
        recovering,
        progress,
        fetched: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        present: AtomicU64::new(0),
        repaired: AtomicU64::new(0),
        walked: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
    };
    let walked = walker
        .run(
            Task::Catalog {
                id: manifest.root,
                old: old_root,
            },
            cfg.jobs.max(1),
        )
        // The manifest object of the new revision (the history chain), as
        // the server has it; encoded here from the verified bytes if it has
        // none.
        .and_then(|()| {
            walker.ensure(
                &manifest_id,
                ObjectKind::Manifest,
                Expected::Size(manifest_bytes.len() as u64),
                Some(&manifest_bytes),
            )
        });
    if let Err(e) = walked {
        // A clean failure (the network, a corrupt object): what this run
        // stored is made durable, so that the next run need not verify it.
        // A run that was recovering leaves the marker: it may not have
        // reached every leftover.
        if !recovering && dest.sync().is_ok() {
            let _ = dest.delete(DIRTY_PATH);
        }
        return Err(e);
    }
    if !dest.exists(PUBLIC_KEY_PATH)? {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let pem = key
            .to_public_key_pem(Default::default())
            .map_err(|e| ReplicateError::Refused(format!("encoding the public key: {e}")))?;
        dest.put_if_absent(PUBLIC_KEY_PATH, pem.as_bytes())?;
    }

    // The barrier, then the manifest: the one point where readers of the
    // replica see the new revision.
    dest.sync()?;
    if let Some(bytes) = dest.get(MANIFEST_PATH)? {
        if current
            .as_ref()
            .is_none_or(|(_, id)| *id != ObjectId::of(&bytes))
        {
            return Err(ReplicateError::Refused(format!(
                "{MANIFEST_PATH} changed while replicating (another writer?); not replacing it"
            )));
        }
    }
    dest.replace(MANIFEST_PATH, &manifest_bytes)?;
    dest.delete(DIRTY_PATH)?;

    report.updated = true;
    report.objects_fetched = walker.fetched.load(Ordering::Relaxed);
    report.bytes_fetched = walker.bytes.load(Ordering::Relaxed);
    report.objects_present = walker.present.load(Ordering::Relaxed);
    report.objects_repaired = walker.repaired.load(Ordering::Relaxed);
    report.catalogs_walked = walker.walked.load(Ordering::Relaxed);
    report.catalogs_unchanged = walker.unchanged.load(Ordering::Relaxed);
    report.transport = transport.counters.snapshot();
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        revision = report.revision,
        fetched = report.objects_fetched,
        present = report.objects_present,
        "replica updated"
    );
    Ok(report)
}

/// A replica's `.stratum/public.pem`, when present, must be the given key.
fn check_public_key(dest: &dyn Backend, key: &VerifyingKey) -> Result<(), ReplicateError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let Some(pem) = dest.get(PUBLIC_KEY_PATH)? else {
        return Ok(());
    };
    let theirs = std::str::from_utf8(&pem)
        .ok()
        .and_then(|t| VerifyingKey::from_public_key_pem(t).ok());
    if theirs.as_ref() != Some(key) {
        return Err(ReplicateError::Refused(format!(
            "its {PUBLIC_KEY_PATH} is not the given public key: it is not a replica of this repository"
        )));
    }
    Ok(())
}

/// Fetches and verifies the served manifest; see the module documentation.
fn fetch_manifest(
    transport: &Transport,
    key: &VerifyingKey,
    current: Option<&(Manifest, ObjectId)>,
) -> Result<(Manifest, Vec<u8>), ReplicateError> {
    let r = transport.fetch(
        "manifest",
        MANIFEST_PATH,
        MAX_MANIFEST_SIZE,
        true,
        |_url, body| {
            let m = Manifest::verify(&body, key).map_err(|e| match e {
                stratum_catalog::Error::BadSignature => Reject::Permanent(
                    "manifest signature does not verify with the given public key".into(),
                ),
                other => Reject::Permanent(other.to_string()),
            })?;
            if let Some((cur, cur_id)) = current {
                if m.name != cur.name {
                    return Err(Reject::Permanent(format!(
                        "repository {:?}, but the replica is of {:?}",
                        m.name, cur.name
                    )));
                }
                if m.revision < cur.revision {
                    return Err(Reject::Rollback {
                        name: m.name,
                        offered: m.revision,
                        seen: cur.revision,
                    });
                }
                if m.revision == cur.revision && ObjectId::of(&body) != *cur_id {
                    return Err(Reject::Permanent(format!(
                        "revision {} differs from the replica's revision {} (a forked repository?)",
                        m.revision, cur.revision
                    )));
                }
            }
            Ok((m, body))
        },
    );
    match r {
        Ok(v) => Ok(v),
        Err(FetchError::Rollback {
            name,
            url,
            offered,
            seen,
        }) => Err(ReplicateError::Rollback {
            name,
            url,
            offered,
            seen,
        }),
        Err(e) => Err(e.into()),
    }
}

/// One unit of work.
#[derive(Clone, Copy, Debug)]
enum Task {
    /// Make catalog `id` present and walk it. `old` is the catalog the
    /// replica's current tree has at the same mount path, if any.
    Catalog { id: ObjectId, old: Option<ObjectId> },
    /// Make content object `id` present.
    /// Make content object `id` present; its catalog states `size` bytes.
    Content(ObjectId, u64),
}

#[derive(Default)]
struct Queue {
    catalogs: Vec<Task>,
    contents: Vec<Task>,
    seen_catalogs: HashSet<ObjectId>,
    seen_contents: HashSet<ObjectId>,
    /// Tasks queued or running.
    pending: usize,
    failed: Option<ReplicateError>,
}

impl Queue {
    fn push(&mut self, t: Task) {
        let fresh = match t {
            Task::Catalog { id, .. } => self.seen_catalogs.insert(id),
            Task::Content(id, _) => self.seen_contents.insert(id),
        };
        if !fresh {
            return;
        }
        self.pending += 1;
        match t {
            Task::Catalog { .. } => self.catalogs.push(t),
            Task::Content(..) => self.contents.push(t),
        }
    }

    /// Content first: it keeps the queue short (a catalog can name
    /// thousands of objects).
    fn pop(&mut self) -> Option<Task> {
        self.contents.pop().or_else(|| self.catalogs.pop())
    }
}

struct Walker<'a> {
    transport: &'a Transport,
    dest: &'a dyn Backend,
    recovering: bool,
    progress: &'a (dyn Fn(ReplicateProgress) + Sync),
    fetched: AtomicU64,
    bytes: AtomicU64,
    present: AtomicU64,
    repaired: AtomicU64,
    walked: AtomicU64,
    unchanged: AtomicU64,
}

impl Walker<'_> {
    /// Runs `first` and everything it leads to on `jobs` threads; the first
    /// error stops the run.
    fn run(&self, first: Task, jobs: usize) -> Result<(), ReplicateError> {
        let q = Mutex::new(Queue::default());
        let cv = Condvar::new();
        q.lock().unwrap_or_else(|p| p.into_inner()).push(first);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| self.worker(&q, &cv));
            }
        });
        let mut q = q.into_inner().unwrap_or_else(|p| p.into_inner());
        match q.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn worker(&self, q: &Mutex<Queue>, cv: &Condvar) {
        loop {
            let task = {
                let mut g = q.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if g.failed.is_some() || g.pending == 0 {
                        cv.notify_all();
                        return;
                    }
                    if let Some(t) = g.pop() {
                        break t;
                    }
                    g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            let mut more = Vec::new();
            let r = match task {
                Task::Catalog { id, old } => self.catalog(&id, old, &mut more),
                Task::Content(id, size) => {
                    self.ensure(&id, ObjectKind::Content, Expected::Size(size), None)
                }
            };
            let mut g = q.lock().unwrap_or_else(|p| p.into_inner());
            match r {
                Ok(()) => {
                    for t in more {
                        g.push(t);
                    }
                }
                Err(e) => {
                    if g.failed.is_none() {
                        g.failed = Some(e);
                    }
                }
            }
            g.pending -= 1;
            cv.notify_all();
        }
    }

    fn report(&self) {
        (self.progress)(ReplicateProgress {
            objects_fetched: self.fetched.load(Ordering::Relaxed),
            bytes_fetched: self.bytes.load(Ordering::Relaxed),
            objects_present: self.present.load(Ordering::Relaxed),
        });
    }

    /// Downloads and verifies one object (decoded as a stream, hashed and
    /// dropped: memory stays bounded whatever the frame declares); returns
    /// its encoded bytes as received. A body that does not verify fails
    /// that mirror; one declaring another size than `expected` (a zstd
    /// bomb) fails it for good, before a byte is decoded.
    fn download(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        expected: Expected,
    ) -> Result<Vec<u8>, FetchError> {
        let what = format!("{} {id}", kind_name(kind));
        self.transport.fetch(
            &what,
            &id.path(kind),
            expected.encoded_bound(),
            false,
            |_url, body| match object::verify(id, &body, expected) {
                Ok(_) => Ok(body),
                Err(
                    e @ (stratum_catalog::Error::ObjectTooLarge { .. }
                    | stratum_catalog::Error::SizeMismatch { .. }),
                ) => Err(Reject::Permanent(e.to_string())),
                Err(e) => Err(Reject::Corrupt(e.to_string())),
            },
        )
    }

    /// Stores a fetched object that the replica lacks.
    fn store(&self, path: &str, enc: &[u8]) -> Result<(), ReplicateError> {
        if self.dest.put_if_absent(path, enc)? {
            self.fetched.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(enc.len() as u64, Ordering::Relaxed);
        } else {
            // Another writer stored it meanwhile.
            self.present.fetch_add(1, Ordering::Relaxed);
        }
        self.report();
        Ok(())
    }

    /// Replaces a damaged object with verified bytes.
    fn repair(&self, path: &str, enc: &[u8]) -> Result<(), ReplicateError> {
        self.dest.delete(path)?;
        self.dest.put_if_absent(path, enc)?;
        self.repaired.fetch_add(1, Ordering::Relaxed);
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(enc.len() as u64, Ordering::Relaxed);
        self.report();
        Ok(())
    }

    /// Makes a content or manifest object present. `fallback`: the decoded
    /// bytes to encode here if no mirror has the object.
    fn ensure(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        expected: Expected,
        fallback: Option<&[u8]>,
    ) -> Result<(), ReplicateError> {
        let path = id.path(kind);
        let fetch = || -> Result<Vec<u8>, ReplicateError> {
            match (self.download(id, kind, expected), fallback) {
                (Ok(enc), _) => Ok(enc),
                (Err(FetchError::NotFound { .. }), Some(bytes)) => Ok(object::encode(bytes, 3)?),
                (Err(e), _) => Err(e.into()),
            }
        };
        let damaged = if self.recovering {
            match self.dest.get(&path)? {
                None => false,
                Some(enc) => {
                    if object::verify(id, &enc, expected).is_ok() {
                        self.found_present();
                        return Ok(());
                    }
                    tracing::warn!(%id, "object left damaged by an interrupted run; fetching it again");
                    true
                }
            }
        } else {
            if self.dest.exists(&path)? {
                self.found_present();
                return Ok(());
            }
            false
        };
        let enc = fetch()?;
        if damaged {
            self.repair(&path, &enc)
        } else {
            self.store(&path, &enc)
        }
    }

    fn found_present(&self) {
        self.present.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    /// Catalog `id`, opened: the replica's copy when it verifies, else
    /// downloaded (and stored, or the damaged copy replaced). Decoded into
    /// a temporary file ([`Catalog::from_encoded`]), not memory.
    fn load_catalog(&self, id: &ObjectId) -> Result<Catalog, ReplicateError> {
        let path = id.path(ObjectKind::Catalog);
        let damaged = match self.dest.get(&path)? {
            None => false,
            Some(enc) => match Catalog::from_encoded(*id, &enc) {
                Ok(cat) => {
                    self.found_present();
                    return Ok(cat);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "the replica's copy of a catalog does not verify; fetching it again");
                    true
                }
            },
        };
        let enc = self.download(id, ObjectKind::Catalog, Expected::AtMost(MAX_CATALOG_SIZE))?;
        if damaged {
            self.repair(&path, &enc)?;
        } else {
            self.store(&path, &enc)?;
        }
        Catalog::from_encoded(*id, &enc).map_err(|e| ReplicateError::Catalog {
            id: *id,
            reason: e.to_string(),
        })
    }

    fn catalog(
        &self,
        id: &ObjectId,
        old: Option<ObjectId>,
        more: &mut Vec<Task>,
    ) -> Result<(), ReplicateError> {
        if old == Some(*id) {
            self.unchanged.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let cat = self.load_catalog(id)?;
        let invalid = |e: stratum_catalog::Error| ReplicateError::Catalog {
            id: *id,
            reason: e.to_string(),
        };
        self.walked.fetch_add(1, Ordering::Relaxed);
        let mut contents = Vec::new();
        let mut nested = Vec::new();
        cat.for_each_entry(|e| {
            match &e.data {
                Data::Object(oid) => contents.push((*oid, e.size)),
                Data::Chunks(chunks) => contents.extend(chunks.iter().map(|c| (c.id, c.size))),
                Data::None | Data::Inline(_) => {}
            }
            if let Some(child) = e.nested {
                nested.push((e.id, child));
            }
            Ok(())
        })
        .map_err(invalid)?;
        // The prefetch lists its image records name (FORMAT.md §5.6).
        for (_, list) in cat.prefetch_lists().map_err(invalid)? {
            contents.push(list.object().map_err(invalid)?);
        }
        if !nested.is_empty() {
            // The old tree's catalog at this path, from the replica
            // (complete by the manifest-last rule). Unreadable: no pruning
            // below here.
            let old_mounts = match old
                .map(|o| (o, self.old_catalog(&o).and_then(|c| mount_points(&c))))
            {
                None => HashMap::new(),
                Some((_, Ok(m))) => m,
                Some((o, Err(e))) => {
                    tracing::warn!(catalog = %o, error = %e, "cannot read the replica's current catalog; walking below it in full");
                    HashMap::new()
                }
            };
            for (entry, child) in nested {
                let rel = relative_path(&cat, entry).map_err(invalid)?;
                let old_child = old_mounts.get(&rel).copied();
                if old_child == Some(child) {
                    self.unchanged.fetch_add(1, Ordering::Relaxed);
                } else {
                    more.push(Task::Catalog {
                        id: child,
                        old: old_child,
                    });
                }
            }
        }
        more.extend(
            contents
                .into_iter()
                .map(|(id, size)| Task::Content(id, size)),
        );
        Ok(())
    }

    fn old_catalog(&self, id: &ObjectId) -> Result<Catalog, stratum_catalog::Error> {
        let enc = self
            .dest
            .get(&id.path(ObjectKind::Catalog))?
            .ok_or(stratum_catalog::Error::MissingObject(*id))?;
        Catalog::from_encoded(*id, &enc)
    }
}

/// The mount points of a catalog: path relative to its root (names joined
/// with `/`; empty for the root entry itself) → nested catalog id.
fn mount_points(cat: &Catalog) -> stratum_catalog::Result<HashMap<Vec<u8>, ObjectId>> {
    let mut nested = Vec::new();
    cat.for_each_entry(|e| {
        if let Some(child) = e.nested {
            nested.push((e.id, child));
        }
        Ok(())
    })?;
    let mut out = HashMap::with_capacity(nested.len());
    for (entry, child) in nested {
        out.insert(relative_path(cat, entry)?, child);
    }
    Ok(out)
}

fn relative_path(cat: &Catalog, mut id: i64) -> stratum_catalog::Result<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    while id != stratum_catalog::catalog::ROOT_ID {
        let e = cat
            .get(id)?
            .ok_or_else(|| stratum_catalog::Error::InvalidCatalog {
                catalog: cat.id().to_hex(),
                reason: format!("entry {id} has no parent"),
            })?;
        parts.push(e.name);
        id = e.parent;
        if parts.len() > 4096 {
            return Err(stratum_catalog::Error::InvalidCatalog {
                catalog: cat.id().to_hex(),
                reason: "parent cycle".into(),
            });
        }
    }
    parts.reverse();
    Ok(parts.join(&b'/'))
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<ReplicateError>();
    is::<ReplicateReport>();
}
