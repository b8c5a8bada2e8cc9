//! The node's verified object cache: one directory shared by every mount and
//! process of the node.
//!
//! # Layout
//!
//! ```text
//! <cache>/objects/ab/<64 hex>     decoded content objects (file bytes, chunks)
//! <cache>/catalogs/ab/<64 hex>    decoded catalogs (SQLite files, opened in place)
//! <cache>/tmp/                    files being written; never read as objects
//! <cache>/revisions/<name>-<fp>   highest manifest revision verified for repository
//!                                 <name> signed by the key whose fingerprint starts
//!                                 with <fp> (32 hex); one decimal line
//! <cache>/revisions/.lock         flock(2) serializing revision updates
//! <cache>/origins/<32 hex>        the repository name first verified at a URL with a
//!                                 key (BLAKE3 of both, truncated); one line. Later
//!                                 manifests from that URL must carry the same name
//! ```
//!
//! `ab` is the first two hex digits of the id; files are named by the full
//! id. Files hold the *decoded* bytes, so a read is a `pread` with no
//! decompression.
//!
//! # Writing
//!
//! An object is inserted only after it decoded and hashed to its id. Its
//! bytes go to a new file in `tmp/`, which is made `0644` and renamed to its
//! final name without replacing anything (`renameat2` `RENAME_NOREPLACE`; if
//! the name exists, another process inserted the same verified bytes first
//! and that file is used). So a name under `objects/` or `catalogs/` holds
//! complete verified bytes after `kill -9`; a leftover in `tmp/` is never
//! looked at, and leftovers older than an hour are deleted when a cache is
//! opened. The file is not `fdatasync`ed before its rename (D42): after a
//! power loss a name may hold a short or zeroed file, which the next
//! process finds by hashing it before use (see "Reading": every process
//! hashes a file the first time it uses it), removes and fetches again. A
//! blocking sync per insert cost 0.2–60 ms each on the path of every cold
//! read, for a durability a cache of verified copies does not need.
//!
//! # Reading
//!
//! The cache is not trusted (docs/SECURITY.md §1): anyone who can write to
//! it must not be able to change what a node reads. A file is re-hashed
//! before it is used; one that does not hash to its name is removed and
//! counted as a miss, so the object is fetched and verified again. Each
//! process remembers the files it verified by `(dev, inode, size, ctime)`
//! and hashes again only when that changes: writing a file or changing its
//! times changes its ctime, which only the kernel sets, so a FUSE mount
//! reading a chunk in 128 KiB pieces hashes it once, not 32 times.
//!
//! # Quota and eviction
//!
//! The quota bounds the sum of the sizes (`st_size`) of everything under
//! `objects/` and `catalogs/`. Each process keeps an index (size and last
//! use of every file), built by scanning the directory when it opens the
//! cache, updated by its own inserts and hits, by files it finds that other
//! processes inserted, and by a rescan at most every five minutes on an
//! insert (so that the inserts of other processes are counted). After an
//! insert that puts the total over the quota, the least recently used files
//! are removed until it is under the quota again, except:
//!
//! - the file just inserted;
//! - catalogs *pinned* by any process: a process that opens a catalog holds
//!   a shared `flock` on it for as long as it keeps it (for
//!   [`crate::Remote`], its whole lifetime); an evictor removes a catalog
//!   only while holding an exclusive `flock` taken without waiting, so a
//!   pinned catalog is skipped.
//!
//! Removal is `unlink`: a reader that holds an open object file
//! ([`crate::CachedObject`]) keeps reading the same bytes.
//!
//! Metrics ([`stratum_metrics::mount`]): every eviction, and the bytes in
//! the cache as this process's index counts them, set whenever the index
//! changes. Hits and misses are recorded by [`crate::Remote`], which decides
//! what counts as one (with the `stratum status` counters).
//!
//! Recency is shared across processes through the files' mtime: a hit sets
//! the file's mtime to now, at most once a minute per file (a cheaper
//! signal than atime, which `noatime`/`relatime` mounts do not keep), and a
//! scan takes a file's last use as the later of its mtime and what the
//! process already knew.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{flock, FlockOperation};
use stratum_catalog::ObjectId;

use crate::FetchError;

/// Leftovers in `tmp/` older than this are deleted when a cache is opened.
const TMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// A hit updates the file's mtime at most this often.
const TOUCH_INTERVAL: u64 = 60_000_000_000;
/// The index is rebuilt from the directory at most this often (on inserts).
const RESCAN_INTERVAL: Duration = Duration::from_secs(300);

/// Which half of the cache a file lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Object,
    Catalog,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Object => "objects",
            Kind::Catalog => "catalogs",
        }
    }
}

type Key = (Kind, ObjectId);

#[derive(Clone, Copy)]
struct Meta {
    size: u64,
    /// Last use, nanoseconds since the epoch.
    used: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<Key, Meta>,
    lru: BTreeSet<(u64, Key)>,
    total: u64,
    /// Catalogs this process holds open (and flocked).
    pinned: HashSet<Key>,
}

impl Index {
    fn upsert(&mut self, key: Key, size: u64, used: u64) {
        if let Some(old) = self.entries.insert(key, Meta { size, used }) {
            self.lru.remove(&(old.used, key));
            self.total -= old.size;
        }
        self.lru.insert((used, key));
        self.total += size;
        stratum_metrics::mount::cache_bytes(self.total);
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.lru.remove(&(old.used, *key));
            self.total -= old.size;
            stratum_metrics::mount::cache_bytes(self.total);
        }
    }
}

/// How full the cache is, as this process knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes of the files under `objects/` and `catalogs/`.
    pub bytes: u64,
    pub files: u64,
    pub quota: u64,
}

pub(crate) struct Cache {
    root: PathBuf,
    tmp: PathBuf,
    quota: u64,
    index: Mutex<Index>,
    last_scan: Mutex<Instant>,
    scanning: AtomicBool,
    pub evictions: AtomicU64,
    /// Files that hashed to their name, by the identity they had then.
    verified: Mutex<HashMap<Key, FileStamp>>,
    /// Files found not to hash to their name (removed, refetched).
    pub tampered: AtomicU64,
}

/// What identifies a file's bytes without reading them: a write or a
/// change of times gives a new ctime, which user space cannot set.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_ns: i64,
}

impl FileStamp {
    fn of(md: &fs::Metadata) -> Self {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            ctime: md.ctime(),
            ctime_ns: md.ctime_nsec(),
        }
    }
}

/// Whether the bytes of `f` hash to `id`.
fn hashes_to(f: &File, id: &ObjectId) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = match f.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().as_bytes() == &id.0)
}

fn cache_err(path: &Path, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Cache {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn mtime_ns(md: &fs::Metadata) -> u64 {
    let s = u64::try_from(md.mtime()).unwrap_or(0);
    let ns = u64::try_from(md.mtime_nsec()).unwrap_or(0);
    s.saturating_mul(1_000_000_000).saturating_add(ns)
}

impl Cache {
    /// Opens (creating it if needed) the cache at `root`.
    pub fn open(root: &Path, quota: u64) -> Result<Cache, FetchError> {
        for sub in ["", "objects", "catalogs", "tmp", "revisions"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| cache_err(&p, format!("cannot create: {e}")))?;
        }
        let cache = Cache {
            root: root.to_owned(),
            tmp: root.join("tmp"),
            quota,
            index: Mutex::new(Index::default()),
            last_scan: Mutex::new(Instant::now()),
            scanning: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            verified: Mutex::new(HashMap::new()),
            tampered: AtomicU64::new(0),
        };
        cache.clean_tmp();
        let found = cache.scan()?;
        let mut ix = cache.lock();
        for (key, meta) in found {
            ix.upsert(key, meta.size, meta.used);
        }
        // The quota may have been lowered since the files were cached.
        if ix.total > quota {
            cache.evict(&mut ix, None);
        }
        stratum_metrics::mount::cache_bytes(ix.total);
        tracing::debug!(cache = %root.display(), files = ix.entries.len(), bytes = ix.total, "cache opened");
        drop(ix);
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index stays consistent between statements; keep using it after
        // a panic elsewhere.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, kind: Kind, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(kind.dir()).join(&hex[..2]).join(hex)
    }

    pub fn usage(&self) -> CacheUsage {
        let ix = self.lock();
        CacheUsage {
            bytes: ix.total,
            files: ix.entries.len() as u64,
            quota: self.quota,
        }
    }

    fn clean_tmp(&self) {
        let Ok(rd) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > TMP_MAX_AGE);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Every object and catalog file in the directory.
    fn scan(&self) -> Result<HashMap<Key, Meta>, FetchError> {
        let mut out = HashMap::new();
        for kind in [Kind::Object, Kind::Catalog] {
            let top = self.root.join(kind.dir());
            let rd = fs::read_dir(&top).map_err(|e| cache_err(&top, e))?;
            for sub in rd.flatten() {
                let sub_name = sub.file_name();
                let Some(prefix) = sub_name.to_str().filter(|s| s.len() == 2) else {
                    continue;
                };
                let Ok(files) = fs::read_dir(sub.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name();
                    let Some(id) = name
                        .to_str()
                        .filter(|n| n.starts_with(prefix))
                        .and_then(|n| ObjectId::from_hex(n).ok())
                    else {
                        continue;
                    };
                    let Ok(md) = f.metadata() else { continue };
                    if !md.is_file() {
                        continue;
                    }
                    out.insert(
                        (kind, id),
                        Meta {
                            size: md.len(),
                            used: mtime_ns(&md),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Rebuilds the index from the directory when the last scan is old, to
    /// count what other processes inserted and drop what they evicted.
    fn rescan_if_stale(&self) {
        {
            let last = self.last_scan.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < RESCAN_INTERVAL {
                return;
            }
        }
        if self.scanning.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(found) = self.scan() {
            let mut ix = self.lock();
            let known: Vec<Key> = ix.entries.keys().copied().collect();
            for key in known {
                if !found.contains_key(&key) {
                    ix.remove(&key);
                }
            }
            for (key, meta) in found {
                let used = ix
                    .entries
                    .get(&key)
                    .map_or(meta.used, |m| m.used.max(meta.used));
                ix.upsert(key, meta.size, used);
            }
            *self.last_scan.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        self.scanning.store(false, Ordering::Release);
    }

    /// Records a use of a file that is in the directory; returns whether the
    /// file's mtime should be refreshed.
    fn note_use(&self, key: Key, size: u64) -> bool {
        let now = now_ns();
        let mut ix = self.lock();
        match ix.entries.get(&key).copied() {
            Some(m) => {
                ix.upsert(key, size, now);
                now.saturating_sub(m.used) > TOUCH_INTERVAL
            }
            None => {
                // Inserted by another process since we scanned.
                ix.upsert(key, size, now);
                if ix.total > self.quota {
                    self.evict(&mut ix, Some(key));
                }
                true
            }
        }
    }

    /// The file of a cached object or catalog, opened and verified, or
    /// `None`. A file that does not hash to `id` is removed: a miss.
    pub fn lookup(&self, kind: Kind, id: &ObjectId) -> Result<Option<(File, u64)>, FetchError> {
        let path = self.path(kind, id);
        match File::open(&path) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| cache_err(&path, e))?.len();
                if self.note_use((kind, *id), len) {
                    let _ = f.set_modified(SystemTime::now());
                }
                // Stamped after our own touch, which changes the ctime.
                let md = f.metadata().map_err(|e| cache_err(&path, e))?;
                if self.verify(kind, id, &f, &md, &path)? {
                    Ok(Some((f, len)))
                } else {
                    Ok(None)
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mut ix = self.lock();
                if !ix.pinned.contains(&(kind, *id)) {
                    ix.remove(&(kind, *id));
                }
                Ok(None)
            }
            Err(e) => Err(cache_err(&path, e)),
        }
    }

    /// Whether the open file `f` of `id` holds its bytes (see "Reading");
    /// if not, removes it (the name still leading to that inode) and
    /// forgets it.
    fn verify(
        &self,
        kind: Kind,
        id: &ObjectId,
        f: &File,
        md: &fs::Metadata,
        path: &Path,
    ) -> Result<bool, FetchError> {
        let stamp = FileStamp::of(md);
        let known = |m: &HashMap<Key, FileStamp>| m.get(&(kind, *id)) == Some(&stamp);
        if known(&self.verified.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(true);
        }
        if hashes_to(f, id).map_err(|e| cache_err(path, format!("reading: {e}")))? {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((kind, *id), stamp);
            return Ok(true);
        }
        tracing::warn!(path = %path.display(), "cached {} does not hash to its name; removed, fetching it again", kind.dir());
        self.tampered.fetch_add(1, Ordering::Relaxed);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, *id));
        if fs::symlink_metadata(path)
            .is_ok_and(|now| now.dev() == stamp.dev && now.ino() == stamp.ino)
        {
            let _ = fs::remove_file(path);
        }
        let mut ix = self.lock();
        ix.pinned.remove(&(kind, *id));
        ix.remove(&(kind, *id));
        Ok(false)
    }

    /// A cached catalog, opened and pinned: a shared flock is held on the
    /// returned file, so no process evicts it while the file stays open.
    pub fn lookup_catalog_pinned(&self, id: &ObjectId) -> Result<Option<File>, FetchError> {
        let path = self.path(Kind::Catalog, id);
        for _ in 0..3 {
            let Some((f, len)) = self.lookup(Kind::Catalog, id)? else {
                return Ok(None);
            };
            flock(&f, FlockOperation::LockShared).map_err(|e| cache_err(&path, e))?;
            // An evictor may have unlinked it between our open and our lock
            // (and someone may have inserted it again): pinned only if the
            // name still leads to the inode we locked.
            let ours = f.metadata().map_err(|e| cache_err(&path, e))?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    let mut ix = self.lock();
                    ix.pinned.insert((Kind::Catalog, *id));
                    if !ix.entries.contains_key(&(Kind::Catalog, *id)) {
                        ix.upsert((Kind::Catalog, *id), len, now_ns());
                    }
                    return Ok(Some(f));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(cache_err(&path, e)),
            }
        }
        Ok(None)
    }

    /// Forgets that this process pins a catalog (it failed to open, or
    /// was released).
    pub fn unpin(&self, kind: Kind, id: &ObjectId) {
        self.lock().pinned.remove(&(kind, *id));
    }

    /// A new file in `tmp/` for the decoded bytes of an object; give it to
    /// [`Cache::insert_file`] once they verified.
    pub fn new_file(&self) -> Result<tempfile::NamedTempFile, FetchError> {
        tempfile::Builder::new()
            .prefix("new-")
            .tempfile_in(&self.tmp)
            .map_err(|e| cache_err(&self.tmp, format!("creating a new file: {e}")))
    }

    /// Inserts the verified `bytes` of content object `id` (what `pull`
    /// downloads: it holds them already, decoded).
    pub fn insert_bytes(&self, id: &ObjectId, bytes: &[u8]) -> Result<(), FetchError> {
        let mut tmp = self.new_file()?;
        tmp.as_file_mut()
            .write_all(bytes)
            .map_err(|e| cache_err(&self.tmp, format!("writing a new file: {e}")))?;
        self.insert_file(Kind::Object, id, tmp, bytes.len() as u64)
            .map(drop)
    }

    /// Inserts a file of `tmp/` (from [`Cache::new_file`]) holding the
    /// `len` verified bytes of `id`; returns the file, open.
    pub fn insert_file(
        &self,
        kind: Kind,
        id: &ObjectId,
        mut tmp: tempfile::NamedTempFile,
        len: u64,
    ) -> Result<(File, u64), FetchError> {
        let path = self.path(kind, id);
        let tmp_err = |e: std::io::Error| cache_err(&self.tmp, format!("writing a new file: {e}"));
        tmp.as_file_mut().flush().map_err(tmp_err)?;
        // No fdatasync (see "Writing"): a file torn by a power loss fails
        // the hash every process checks before its first use of it.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(tmp_err)?;
        if kind == Kind::Catalog {
            flock(tmp.as_file(), FlockOperation::LockShared).map_err(|e| tmp_err(e.into()))?;
        }
        for _ in 0..4 {
            match tmp.persist_noclobber(&path) {
                Ok(file) => {
                    // Verified while it was decoded: no need to hash it again.
                    if let Ok(md) = file.metadata() {
                        self.verified
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert((kind, *id), FileStamp::of(&md));
                    }
                    let mut ix = self.lock();
                    if kind == Kind::Catalog {
                        ix.pinned.insert((kind, *id));
                    }
                    ix.upsert((kind, *id), len, now_ns());
                    if ix.total > self.quota {
                        self.evict(&mut ix, Some((kind, *id)));
                    }
                    drop(ix);
                    self.rescan_if_stale();
                    return Ok((file, len));
                }
                Err(e) if e.error.kind() == ErrorKind::AlreadyExists => {
                    // Another process inserted the same verified bytes.
                    let existing = match kind {
                        Kind::Catalog => self.lookup_catalog_pinned(id)?.map(|f| (f, len)),
                        Kind::Object => self.lookup(kind, id)?,
                    };
                    if let Some(found) = existing {
                        return Ok(found);
                    }
                    // ... and it was evicted right away: try again.
                    tmp = e.file;
                }
                // The first object of its fan-out directory.
                Err(e) if e.error.kind() == ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        fs::create_dir_all(dir).map_err(|err| cache_err(dir, err))?;
                    }
                    tmp = e.file;
                }
                Err(e) => {
                    return Err(cache_err(
                        &path,
                        format!("cannot rename into place: {}", e.error),
                    ))
                }
            }
        }
        Err(cache_err(
            &path,
            "raced with eviction: not renamed into place after 4 tries",
        ))
    }

    /// Removes least recently used files until the total is under the
    /// quota, sparing `keep` (the file just inserted) and pinned catalogs.
    fn evict(&self, ix: &mut Index, keep: Option<Key>) {
        let mut spared: HashSet<Key> = HashSet::new();
        while ix.total > self.quota {
            let victim = ix
                .lru
                .iter()
                .map(|(_, k)| *k)
                .find(|k| Some(*k) != keep && !ix.pinned.contains(k) && !spared.contains(k));
            let Some(key) = victim else {
                tracing::debug!(
                    total = ix.total,
                    quota = self.quota,
                    "cache over quota: nothing left to evict"
                );
                return;
            };
            let path = self.path(key.0, &key.1);
            let removed = match key.0 {
                Kind::Object => remove(&path),
                Kind::Catalog => remove_unpinned_catalog(&path),
            };
            if removed {
                ix.remove(&key);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                stratum_metrics::mount::cache_evictions(1);
                tracing::trace!(path = %path.display(), "evicted");
            } else {
                spared.insert(key);
            }
        }
    }

    /// Rollback protection: accepts `revision` for repository `name` signed
    /// by the key with fingerprint `fp` unless a higher one was recorded,
    /// and records it if it is higher. Returns `Err(seen)` on refusal.
    pub fn check_and_record_revision(
        &self,
        name: &str,
        fp: &str,
        revision: u64,
    ) -> Result<Result<(), u64>, FetchError> {
        let dir = self.root.join("revisions");
        let lock_path = dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| cache_err(&lock_path, e))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| cache_err(&lock_path, e))?;
        let fp = &fp[..fp.len().min(32)];
        let path = dir.join(format!("{name}-{fp}"));
        let seen = match fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().parse::<u64>().map_err(|_| {
                cache_err(
                    &path,
                    "not a revision number (delete the file to forget the revisions seen)",
                )
            })?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(cache_err(&path, e)),
        };
        match seen {
            Some(seen) if revision < seen => return Ok(Err(seen)),
            Some(seen) if revision == seen => return Ok(Ok(())),
            _ => {}
        }
        let werr = |e: std::io::Error| cache_err(&path, format!("recording the revision: {e}"));
        let mut tmp = tempfile::Builder::new()
            .prefix("rev-")
            .tempfile_in(&self.tmp)
            .map_err(werr)?;
        writeln!(tmp, "{revision}").map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(werr)?;
        tmp.persist(&path).map_err(|e| werr(e.error))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        drop(lock);
        Ok(Ok(()))
    }

    /// The repository name recorded for manifests fetched from `url` and
    /// verified with the key of fingerprint `fp`, if any.
    pub fn recorded_name(&self, url: &str, fp: &str) -> Result<Option<String>, FetchError> {
        let path = self.origin_path(url, fp);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim_end_matches('\n').to_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cache_err(&path, e)),
        }
    }

    /// Records `name` as the repository served at `url` under the key `fp`
    /// (trust on first use). Written atomically; a concurrent first use that
    /// recorded a name already wins, and the next open checks against it.
    pub fn record_name(&self, url: &str, fp: &str, name: &str) -> Result<(), FetchError> {
        let path = self.origin_path(url, fp);
        let dir = self.root.join("origins");
        fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, format!("cannot create: {e}")))?;
        let werr = |e: std::io::Error| cache_err(&path, format!("recording the name: {e}"));
        let mut tmp = tempfile::Builder::new()
            .prefix("origin-")
            .tempfile_in(&self.tmp)
            .map_err(werr)?;
        writeln!(tmp, "{name}").map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(werr)?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(werr(e.error)),
        }
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn origin_path(&self, url: &str, fp: &str) -> PathBuf {
        let key = format!("{}\0{fp}", url.trim_end_matches('/'));
        let hex = ObjectId::of(key.as_bytes()).to_hex();
        self.root.join("origins").join(&hex[..32])
    }
}

/// Unlinks an object file; a file already gone counts as removed.
fn remove(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot evict: {e}");
            false
        }
    }
}

/// Unlinks a catalog file unless some process holds it pinned (a shared
/// flock). The exclusive lock is held across the unlink.
fn remove_unpinned_catalog(path: &Path) -> bool {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return true,
        Err(_) => return false,
    };
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    // Only the inode we locked: the name may have been evicted and inserted
    // again (and pinned) since we opened it.
    let same = match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (_, Err(e)) if e.kind() == ErrorKind::NotFound => return true,
        _ => false,
    };
    same && remove(path)
}
