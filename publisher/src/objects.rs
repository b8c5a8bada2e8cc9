//! Writing content objects during a publish: hash, skip what the repository
//! (or this publish) already has, and compress and store the rest on a
//! small pool of threads.
//!
//! Compression is the largest cost of ingesting new content, so it does not
//! run on the thread that parses and writes catalog rows: the caller gets
//! the id at once (it is the hash of the uncompressed bytes) and a worker
//! encodes and stores the object. [`ObjectWriter::flush`] waits for them;
//! the publish calls it before any catalog that names those objects can
//! become reachable (before the durability barrier and the manifest).

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use stratum_catalog::object::{level_for, Encoder, DEFAULT_LEVEL};
use stratum_catalog::{ObjectId, ObjectKind, Store};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectStats {
    pub new_objects: u64,
    pub new_stored_bytes: u64,
}

/// Compression workers. Two fit this project's 2-core machines: with the
/// decompressing and parsing threads they keep both cores busy.
const WORKERS: usize = 2;
/// Batches waiting for a worker; a batch holds ~1 MiB of small objects or
/// one object up to 4 MiB, so this bounds the queued memory to ~20 MiB.
const QUEUE: usize = 4;
/// Small objects are handed over in batches: one hand-off per ~1 MiB.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_JOBS: usize = 128;

struct Job {
    id: ObjectId,
    kind: ObjectKind,
    data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    pending: usize,
    stats: ObjectStats,
    error: Option<stratum_catalog::Error>,
}

struct Pool {
    tx: Option<Sender<Vec<Job>>>,
    state: Arc<(Mutex<Shared>, Condvar)>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(store: &Store) -> stratum_catalog::Result<Self> {
        let (tx, rx) = bounded::<Vec<Job>>(QUEUE);
        let state = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (rx, state, store) = (rx.clone(), state.clone(), store.clone());
            // Catalogs handed over here are the namespace's (root,
            // `/images`, partitions): rewritten by every revision and
            // growing with the repository, so they stay at the fast level
            // (a publish at 10 000 images must cost what one at 10 does);
            // trees go through `put_file` at CATALOG_LEVEL.
            let mut enc = Encoder::new(DEFAULT_LEVEL)?;
            workers.push(std::thread::spawn(move || {
                while let Ok(batch) = rx.recv() {
                    for job in batch {
                        // The caller checked that the object is absent.
                        let r = enc.encode(&job.data).and_then(|encoded| {
                            let written = store
                                .backend()
                                .put_if_absent(&job.id.path(job.kind), &encoded)?;
                            Ok((written, encoded.len() as u64))
                        });
                        let (lock, cv) = &*state;
                        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                        match r {
                            Ok((true, n)) => {
                                s.stats.new_objects += 1;
                                s.stats.new_stored_bytes += n;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                s.error.get_or_insert(e);
                            }
                        }
                        s.pending -= 1;
                        // Only `flush` waits, and only for zero: waking it
                        // for every object would cost a syscall each.
                        if s.pending == 0 {
                            cv.notify_all();
                        }
                    }
                }
            }));
        }
        Ok(Pool {
            tx: Some(tx),
            state,
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

pub struct ObjectWriter {
    store: Store,
    /// Ids known to be in the repository: written by this publish or seen
    /// there, so each id costs at most one existence check per publish.
    known: HashSet<ObjectId>,
    /// Verify objects found present instead of trusting them (after an
    /// interrupted writer, see `repo::RepoLock::recovering`).
    verify_existing: bool,
    pool: Pool,
    batch: Vec<Job>,
    batch_bytes: usize,
    enc: Encoder,
}

impl ObjectWriter {
    pub fn new(store: Store) -> stratum_catalog::Result<Self> {
        Ok(ObjectWriter {
            pool: Pool::new(&store)?,
            store,
            known: HashSet::new(),
            verify_existing: false,
            batch: Vec::new(),
            batch_bytes: 0,
            enc: Encoder::new(DEFAULT_LEVEL)?,
        })
    }

    pub fn verify_existing(&mut self, yes: bool) {
        self.verify_existing = yes;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores `data` as an object of `kind` unless present; returns its id.
    /// The write may still be in progress: see [`ObjectWriter::flush`].
    pub fn put(&mut self, kind: ObjectKind, data: &[u8]) -> stratum_catalog::Result<ObjectId> {
        self.put_owned(kind, data.to_vec())
    }

    /// As [`ObjectWriter::put`], taking the buffer to avoid a copy.
    pub fn put_owned(
        &mut self,
        kind: ObjectKind,
        data: Vec<u8>,
    ) -> stratum_catalog::Result<ObjectId> {
        let id = ObjectId::of(&data);
        if self.known.contains(&id) {
            return Ok(id);
        }
        self.check_error()?;
        if self.store.exists(&id, kind)? {
            if self.verify_existing && self.store.get(&id, kind).is_err() {
                tracing::warn!(
                    "object {id} was left incomplete by an interrupted writer; rewriting it"
                );
                self.store
                    .backend()
                    .replace(&id.path(kind), &self.enc.encode(&data)?)?;
            }
            self.known.insert(id);
            return Ok(id);
        }
        {
            let (lock, _) = &*self.pool.state;
            lock.lock().unwrap_or_else(|p| p.into_inner()).pending += 1;
        }
        self.batch_bytes += data.len();
        self.batch.push(Job { id, kind, data });
        self.known.insert(id);
        if self.batch.len() >= BATCH_JOBS || self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        Ok(id)
    }

    fn send_batch(&mut self) -> stratum_catalog::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        let sent = self.pool.tx.as_ref().map(|tx| tx.send(batch));
        if !matches!(sent, Some(Ok(()))) {
            return Err(stratum_catalog::Error::InvalidManifest(
                "internal: object writers stopped".into(),
            ));
        }
        Ok(())
    }

    /// Stores a file's contents as an object, streaming, on this thread; a
    /// catalog (a tree's, written once) at `CATALOG_LEVEL`.
    pub fn put_file(
        &mut self,
        kind: ObjectKind,
        file: &mut std::fs::File,
    ) -> stratum_catalog::Result<ObjectId> {
        let mut put = self.store.put_file(kind, file, level_for(kind))?;
        if !put.written && self.verify_existing && self.store.get(&put.id, kind).is_err() {
            tracing::warn!(
                "object {} was left incomplete by an interrupted writer; rewriting it",
                put.id
            );
            self.store.backend().delete(&put.id.path(kind))?;
            put = self.store.put_file(kind, file, level_for(kind))?;
        }
        if put.written {
            let (lock, _) = &*self.pool.state;
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            s.stats.new_objects += 1;
            s.stats.new_stored_bytes += put.stored_bytes;
        }
        self.known.insert(put.id);
        Ok(put.id)
    }

    fn check_error(&self) -> stratum_catalog::Result<()> {
        let (lock, _) = &*self.pool.state;
        match lock.lock().unwrap_or_else(|p| p.into_inner()).error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until every object handed over so far is written; returns the
    /// first error of any of them.
    pub fn flush(&mut self) -> stratum_catalog::Result<()> {
        self.send_batch()?;
        let (lock, cv) = &*self.pool.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        while s.pending > 0 {
            s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Counts so far (complete after [`ObjectWriter::flush`]).
    pub fn stats(&self) -> ObjectStats {
        let (lock, _) = &*self.pool.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stats
    }
}
