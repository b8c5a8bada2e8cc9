//! Where a mounted tree gets its catalogs and file bytes: the one seam
//! between the filesystem and the transport. Two implementations: a local
//! repository directory ([`LocalTree`]) and the HTTP remote with its
//! verified node cache (`Remote`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use stratum_catalog::catalog::Catalog;
use stratum_catalog::object::{self, Expected};
use stratum_catalog::{ObjectId, ObjectKind, Store};

use super::prefetch::{Prefetcher, DEFAULT_PREFETCH_JOBS};
use super::{FsError, FsResult};

pub trait TreeStore: Send + Sync + 'static {
    /// A verified catalog.
    fn catalog(&self, id: &ObjectId) -> Result<Arc<Catalog>, stratum_catalog::Error>;
    /// Reads verified bytes of content object `id`, of `size` bytes as its
    /// catalog states (an object declaring another size is refused before
    /// it is decoded), at `offset`; returns how many were read (short only
    /// at the object's end).
    fn read_at(&self, id: &ObjectId, size: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// [`TreeStore::read_at`] by a reader whose previous read was of the
    /// same object (an open file read sequentially): the same bytes, but
    /// not counted again as a cache hit.
    fn read_again_at(
        &self,
        id: &ObjectId,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.read_at(id, size, offset, buf)
    }
    /// The verified local file holding the decoded bytes of content object
    /// `id` (`size` bytes), if this store has one at hand; never fetches.
    /// Its reads may bypass the store (FUSE passthrough, D48).
    fn cached_file(&self, _id: &ObjectId, _size: u64) -> Option<std::fs::File> {
        None
    }
    /// Hints that `id`, of `size` bytes, will be read soon (read-ahead of
    /// the next chunk): queued ahead in the [`Prefetcher`], if any.
    fn prefetch(&self, id: &ObjectId, size: u64) {
        if let Some(p) = self.prefetcher() {
            p.push_front([(*id, size)]);
        }
    }
    /// The queue that fetches ahead of the reads (`None`: this store reads
    /// nothing ahead, e.g. a local directory).
    fn prefetcher(&self) -> Option<&Prefetcher> {
        None
    }
    /// The caller holds no more references to catalog `id` than the `Arc`s
    /// it already has: the store may close it (and unpin it) once those
    /// are dropped. A later [`TreeStore::catalog`] opens it again.
    fn release_catalog(&self, _id: &ObjectId) {}
}

/// A repository directory on this machine (or a shared filesystem): objects
/// are decoded and verified on first read and kept in a bounded in-memory
/// cache (first in, first out), so sequential reads of a chunk decode it once.
pub struct LocalTree {
    store: Store,
    catalogs: Mutex<HashMap<ObjectId, Arc<Catalog>>>,
    objects: Mutex<Fifo>,
}

struct Fifo {
    map: HashMap<ObjectId, Arc<Vec<u8>>>,
    order: VecDeque<ObjectId>,
    bytes: usize,
    cap: usize,
}

impl Fifo {
    fn get(&mut self, id: &ObjectId) -> Option<Arc<Vec<u8>>> {
        // Recency is approximate (insertion order): touching an entry would
        // cost a scan of the queue on every read of the hot path.
        self.map.get(id).cloned()
    }

    fn put(&mut self, id: ObjectId, v: Arc<Vec<u8>>) {
        if self.map.contains_key(&id) {
            return;
        }
        self.bytes += v.len();
        self.map.insert(id, v);
        self.order.push_back(id);
        while self.bytes > self.cap && self.order.len() > 1 {
            if let Some(old) = self.order.pop_front() {
                if let Some(v) = self.map.remove(&old) {
                    self.bytes -= v.len();
                }
            }
        }
    }
}

impl LocalTree {
    pub fn new(store: Store) -> Self {
        LocalTree {
            store,
            catalogs: Mutex::new(HashMap::new()),
            objects: Mutex::new(Fifo {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                cap: 256 << 20,
            }),
        }
    }

    fn object(&self, id: &ObjectId, size: u64) -> io::Result<Arc<Vec<u8>>> {
        if let Some(v) = self
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(v);
        }
        let bytes = self
            .store
            .get_encoded(id, ObjectKind::Content)
            .and_then(|enc| object::decode_expected(id, &enc, Expected::Size(size)))
            .map_err(io::Error::other)?;
        let v = Arc::new(bytes);
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(*id, v.clone());
        Ok(v)
    }
}

impl TreeStore for LocalTree {
    fn catalog(&self, id: &ObjectId) -> Result<Arc<Catalog>, stratum_catalog::Error> {
        if let Some(c) = self
            .catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(c.clone());
        }
        let c = Arc::new(self.store.load_catalog(id)?);
        self.catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, c.clone());
        Ok(c)
    }

    fn release_catalog(&self, id: &ObjectId) {
        self.catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn read_at(&self, id: &ObjectId, size: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.object(id, size)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
}

/// How long a failed object fetch is remembered. The kernel retries a
/// failed readahead at once with a plain read; without this memory that
/// retry would spend a whole second retry budget before the EIO arrives.
const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);

/// The HTTP remote through the node's verified cache.
pub struct RemoteTree {
    remote: Arc<crate::Remote>,
    prefetcher: Prefetcher,
    failed: Mutex<HashMap<ObjectId, (std::time::Instant, String)>>,
}

impl RemoteTree {
    pub fn new(remote: Arc<crate::Remote>) -> Self {
        Self::with_prefetch_jobs(remote, DEFAULT_PREFETCH_JOBS)
    }

    /// A tree whose [`Prefetcher`] runs at most `jobs` downloads at once
    /// (0: nothing is fetched ahead of the reads).
    pub fn with_prefetch_jobs(remote: Arc<crate::Remote>, jobs: usize) -> Self {
        let r = remote.clone();
        let prefetcher = Prefetcher::new(
            jobs,
            Box::new(move |id, size| r.prefetch_object(id, size).map_err(|e| e.to_string())),
        );
        RemoteTree {
            remote,
            prefetcher,
            failed: Mutex::new(HashMap::new()),
        }
    }

    pub fn remote(&self) -> &Arc<crate::Remote> {
        &self.remote
    }
}

impl TreeStore for RemoteTree {
    fn catalog(&self, id: &ObjectId) -> Result<Arc<Catalog>, stratum_catalog::Error> {
        self.remote
            .catalog(id)
            .map_err(|e| e.to_catalog_error(id, ObjectKind::Catalog))
    }

    fn release_catalog(&self, id: &ObjectId) {
        self.remote.release_catalog(id);
    }

    fn read_at(&self, id: &ObjectId, size: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.read(id, size, offset, buf, false)
    }

    fn read_again_at(
        &self,
        id: &ObjectId,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.read(id, size, offset, buf, true)
    }

    fn prefetcher(&self) -> Option<&Prefetcher> {
        Some(&self.prefetcher)
    }

    fn cached_file(&self, id: &ObjectId, size: u64) -> Option<std::fs::File> {
        match self.remote.cached_object(id, size) {
            Ok(o) => o.map(|o| o.file),
            Err(e) => {
                tracing::debug!("object {id} in the node cache: {e}");
                None
            }
        }
    }
}

impl RemoteTree {
    fn read(
        &self,
        id: &ObjectId,
        size: u64,
        offset: u64,
        buf: &mut [u8],
        again: bool,
    ) -> io::Result<usize> {
        if let Some((when, why)) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            if when.elapsed() < FAILURE_MEMORY {
                return Err(io::Error::other(format!(
                    "object {id} failed {:.0?} ago: {why}",
                    when.elapsed()
                )));
            }
        }
        // Workers start fewer prefetches while this read runs.
        let _demand = self.prefetcher.demand();
        let got = if again {
            self.remote.object_sized_again(id, size)
        } else {
            self.remote.object_sized(id, size)
        };
        let obj = match got {
            Ok(o) => o,
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.retain(|_, (when, _)| when.elapsed() < FAILURE_MEMORY);
                failed.insert(*id, (std::time::Instant::now(), e.to_string()));
                return Err(e.into());
            }
        };
        if offset >= obj.len {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(obj.len - offset).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            let n = obj.read_at(&mut buf[done..want], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

/// Fills `buf` with the bytes of object `id` (`size` bytes) at `offset`;
/// `again`: the reader's previous read was of the same object.
pub(super) fn read_full(
    store: &dyn TreeStore,
    id: &ObjectId,
    size: u64,
    offset: u64,
    buf: &mut [u8],
    again: bool,
) -> FsResult<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let n = if again || done > 0 {
            store.read_again_at(id, size, at, &mut buf[done..])?
        } else {
            store.read_at(id, size, at, &mut buf[done..])?
        };
        if n == 0 {
            return Err(FsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("object {id} is shorter than its catalog entry says"),
            )));
        }
        done += n;
    }
    Ok(())
}
