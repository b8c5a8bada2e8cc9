//! Fetching ahead of the reads, one mechanism for every reason to do so:
//! a recorded prefetch list published with the image (FORMAT.md §5.6) or a
//! thin image's prioritized files, the small files of a directory being
//! read one after another (batching, D43), the next chunk of a file read
//! sequentially, and the eager "whole image" mode.
//!
//! A [`Prefetcher`] is a queue of objects and a bounded pool of workers
//! that download them into the node cache, in queue order. It never holds
//! anything a demand read needs: a read does not wait for a worker or a
//! queue slot; it asks the cache and the transport itself, and a read of an
//! object a worker is downloading joins that download (the remote's
//! single-flight) instead of sending a second request. While demand reads
//! are waiting, workers start at most half as many downloads, so a read's
//! request shares the link with fewer prefetches. Everything a worker
//! fetches is verified exactly as a read's would be: the queue holds ids
//! taken from verified catalogs, nothing else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use stratum_catalog::catalog::{Catalog, Data, FileType, PrefetchRef, ROOT_ID};
use stratum_catalog::prefetch_list::{PrefetchList, MAX_PREFETCH_ENTRIES};
use stratum_catalog::ObjectId;

use super::TreeStore;

/// Downloads in flight at once for a mount's prefetch, by default
/// (`stratum mount --prefetch-jobs`): enough to hide a 10 ms round trip
/// behind a reader of small files (D43).
pub const DEFAULT_PREFETCH_JOBS: usize = 16;

/// Objects waiting in the queue at most; more are dropped (a demand read
/// still fetches them). Bounds memory whatever a list or a tree holds.
const MAX_QUEUED: usize = 2 * MAX_PREFETCH_ENTRIES;

/// What to prefetch below the tree whose catalog is `root`.
pub enum PrefetchPlan {
    /// These paths (relative to the tree root, or absolute in it), in this
    /// order.
    Files(Vec<String>),
    /// Every regular file of the tree.
    All,
}

/// Counters of a [`Prefetcher`] since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefetchReport {
    /// Objects queued.
    pub queued: u64,
    /// Objects now in the cache that a worker fetched or found there.
    pub objects: u64,
    /// Objects whose fetch failed (a demand read retries them anyway).
    pub failed: u64,
}

/// Fetches one object into the cache (verified).
pub type FetchFn = Box<dyn Fn(&ObjectId, u64) -> Result<(), String> + Send + Sync>;

struct State {
    jobs: VecDeque<(ObjectId, u64)>,
    queued: HashSet<ObjectId>,
    /// Objects queued from a prefetch list (bounded like the queue).
    listed: HashSet<ObjectId>,
    /// Downloads workers have started and not finished.
    active: usize,
    workers: usize,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    fetch: FetchFn,
    max_workers: usize,
    /// Demand reads in progress.
    demand: AtomicUsize,
    queued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

/// See the module documentation. Cheap to clone (one queue).
#[derive(Clone)]
pub struct Prefetcher(Arc<Inner>);

/// Held by a demand read for as long as it runs ([`Prefetcher::demand`]).
pub struct DemandGuard<'a>(&'a Inner);

impl Drop for DemandGuard<'_> {
    fn drop(&mut self) {
        self.0.demand.fetch_sub(1, Ordering::AcqRel);
        self.0.wake.notify_all();
    }
}

impl Prefetcher {
    /// A queue served by at most `jobs` workers (0: nothing is ever
    /// fetched ahead) that fetch with `fetch`.
    pub fn new(jobs: usize, fetch: FetchFn) -> Self {
        Prefetcher(Arc::new(Inner {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                queued: HashSet::new(),
                listed: HashSet::new(),
                active: 0,
                workers: 0,
            }),
            wake: Condvar::new(),
            fetch,
            max_workers: jobs,
            demand: AtomicUsize::new(0),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// Whether this prefetcher fetches anything.
    pub fn enabled(&self) -> bool {
        self.0.max_workers > 0
    }

    /// Marks a demand read in progress until the guard drops.
    pub fn demand(&self) -> DemandGuard<'_> {
        self.0.demand.fetch_add(1, Ordering::AcqRel);
        DemandGuard(&self.0)
    }

    /// Queues objects behind those already queued (a list, in its order).
    pub fn push_back(&self, objects: impl IntoIterator<Item = (ObjectId, u64)>) {
        self.push(objects, false)
    }

    /// Queues the objects of a prefetch list (as [`Prefetcher::push_back`])
    /// and remembers them: a reader opening them follows the recording.
    pub fn push_listed(&self, objects: Vec<(ObjectId, u64)>) {
        if !self.enabled() {
            return;
        }
        {
            let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            for (id, _) in &objects {
                if st.listed.len() < MAX_QUEUED {
                    st.listed.insert(*id);
                }
            }
        }
        self.push_back(objects)
    }

    /// Whether `id` was queued from a prefetch list.
    pub fn was_listed(&self, id: &ObjectId) -> bool {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .listed
            .contains(id)
    }

    /// Queues objects ahead of those already queued (what a reader is
    /// about to need: the next chunk, the rest of a directory).
    pub fn push_front(&self, objects: impl IntoIterator<Item = (ObjectId, u64)>) {
        self.push(objects, true)
    }

    fn push(&self, objects: impl IntoIterator<Item = (ObjectId, u64)>, front: bool) {
        if !self.enabled() {
            return;
        }
        let mut spawn = 0;
        {
            let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut new: Vec<_> = objects
                .into_iter()
                .filter(|(id, _)| st.queued.len() < MAX_QUEUED && st.queued.insert(*id))
                .collect();
            self.0.queued.fetch_add(new.len() as u64, Ordering::Relaxed);
            if front {
                new.reverse();
                for j in new {
                    st.jobs.push_front(j);
                }
            } else {
                st.jobs.extend(new);
            }
            let wanted = st.jobs.len().min(self.0.max_workers);
            if wanted > st.workers {
                spawn = wanted - st.workers;
                st.workers = wanted;
            }
        }
        for _ in 0..spawn {
            let inner = self.0.clone();
            std::thread::spawn(move || worker(&inner));
        }
        self.0.wake.notify_all();
    }

    pub fn report(&self) -> PrefetchReport {
        PrefetchReport {
            queued: self.0.queued.load(Ordering::Relaxed),
            objects: self.0.done.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
        }
    }

    /// Waits until the queue is empty and no download is running (tests,
    /// and the report a mount logs); `false` on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        while !(st.jobs.is_empty() && st.active == 0) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .0
                .wake
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// One worker: takes the next object while the reads-first limit allows a
/// download to start, fetches it, and exits when the queue is empty.
fn worker(inner: &Inner) {
    loop {
        let job = {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.jobs.is_empty() {
                    st.workers -= 1;
                    inner.wake.notify_all();
                    return;
                }
                let limit = if inner.demand.load(Ordering::Acquire) > 0 {
                    (inner.max_workers / 2).max(1)
                } else {
                    inner.max_workers
                };
                if st.active < limit {
                    break;
                }
                st = inner
                    .wake
                    .wait_timeout(st, Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            st.active += 1;
            let job = st.jobs.pop_front();
            if let Some((id, _)) = &job {
                st.queued.remove(id);
            }
            job
        };
        if let Some((id, size)) = job {
            match (inner.fetch)(&id, size) {
                Ok(()) => inner.done.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::debug!("prefetch of object {id}: {e}");
                    inner.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        inner.state.lock().unwrap_or_else(|p| p.into_inner()).active -= 1;
        inner.wake.notify_all();
    }
}

/// The content objects of an entry, with the sizes its catalog states.
pub(super) fn objects_of(data: &Data, size: u64, out: &mut Vec<(ObjectId, u64)>) {
    match data {
        Data::Object(id) => out.push((*id, size)),
        Data::Chunks(c) => out.extend(c.iter().map(|c| (c.id, c.size))),
        Data::None | Data::Inline(_) => {}
    }
}

/// Queues, in a thread of its own, the objects of `plan` below the tree
/// whose catalog is `root` (its catalogs are fetched as the walk needs
/// them: a path of a nested catalog loads that catalog first). Paths not
/// in the tree are skipped. Returns at once; nothing happens when `store`
/// has no prefetcher.
pub fn start<S: TreeStore + ?Sized>(store: Arc<S>, root: ObjectId, plan: PrefetchPlan) {
    spawn(store, root, move |_| Ok(plan));
}

/// [`start`] with the published prefetch list `list` of the image whose
/// flat tree is `root` (the list object is fetched and verified first).
pub fn start_list<S: TreeStore + ?Sized>(store: Arc<S>, root: ObjectId, list: PrefetchRef) {
    spawn(store, root, move |store| {
        let (id, size) = list.object()?;
        Ok(PrefetchPlan::Files(read_list(store, &id, size)))
    });
}

fn spawn<S: TreeStore + ?Sized>(
    store: Arc<S>,
    root: ObjectId,
    plan: impl FnOnce(&S) -> Result<PrefetchPlan, stratum_catalog::Error> + Send + 'static,
) {
    let Some(pf) = store.prefetcher().filter(|p| p.enabled()).cloned() else {
        return;
    };
    std::thread::spawn(move || {
        let queued = plan(&store).and_then(|plan| queue_plan(&*store, &pf, &root, &plan));
        match queued {
            Ok(n) => tracing::info!("prefetch: {n} objects queued below catalog {root}"),
            Err(e) => tracing::warn!("prefetch below catalog {root}: {e}"),
        }
    });
}

fn queue_plan<S: TreeStore + ?Sized>(
    store: &S,
    pf: &Prefetcher,
    root: &ObjectId,
    plan: &PrefetchPlan,
) -> Result<usize, stratum_catalog::Error> {
    let mut seen = HashSet::new();
    let mut n = 0;
    let listed = matches!(plan, PrefetchPlan::Files(_));
    let mut queue = |objs: Vec<(ObjectId, u64)>| {
        let objs: Vec<_> = objs
            .into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .collect();
        n += objs.len();
        if listed {
            pf.push_listed(objs);
        } else {
            pf.push_back(objs);
        }
    };
    match plan {
        PrefetchPlan::Files(paths) => {
            let paths = &paths[..paths.len().min(MAX_PREFETCH_ENTRIES)];
            resolve_files(store, root, paths, pf.0.max_workers, &mut queue)?;
        }
        PrefetchPlan::All => {
            let mut catalogs = vec![*root];
            while let Some(cid) = catalogs.pop() {
                let cat = store.catalog(&cid)?;
                let mut objs = Vec::new();
                cat.for_each_entry(|e| {
                    if let Some(child) = e.nested {
                        catalogs.push(child);
                    }
                    objects_of(&e.data, e.size, &mut objs);
                    Ok(())
                })?;
                queue(objs);
            }
        }
    }
    Ok(n)
}

/// A path being resolved: its components, how many are walked, and the
/// directory reached (catalog, entry).
struct Walk<'a> {
    comps: Vec<&'a str>,
    at: usize,
    catalog: ObjectId,
    dir: i64,
}

/// Resolves `paths` (relative to the tree whose catalog is `root`) and
/// hands each regular file's objects to `found`, in waves: every path is
/// walked as far as the catalogs loaded so far reach, then the catalogs
/// the walks stopped at are fetched together (`jobs` at once) and the
/// walks go on. A list spread over nested catalogs so costs one round trip
/// per level of nesting, not one per catalog. Paths not in the tree, or
/// below a catalog that cannot be fetched, are skipped.
fn resolve_files<S: TreeStore + ?Sized>(
    store: &S,
    root: &ObjectId,
    paths: &[String],
    jobs: usize,
    mut found: impl FnMut(Vec<(ObjectId, u64)>),
) -> Result<(), stratum_catalog::Error> {
    let mut loaded: HashMap<ObjectId, Arc<Catalog>> = HashMap::new();
    loaded.insert(*root, store.catalog(root)?);
    let mut pending: Vec<Walk> = paths
        .iter()
        .map(|p| Walk {
            comps: p.split('/').filter(|c| !c.is_empty()).collect(),
            at: 0,
            catalog: *root,
            dir: ROOT_ID,
        })
        .collect();
    while !pending.is_empty() {
        let mut parked = Vec::new();
        let mut needed = Vec::new();
        for mut w in pending {
            while w.at < w.comps.len() {
                let Some(cat) = loaded.get(&w.catalog) else {
                    if !needed.contains(&w.catalog) {
                        needed.push(w.catalog);
                    }
                    parked.push(w);
                    break;
                };
                let Some(e) = cat.lookup(w.dir, w.comps[w.at].as_bytes())? else {
                    break;
                };
                w.at += 1;
                if w.at == w.comps.len() {
                    if e.file_type() == Some(FileType::Regular) && e.nested.is_none() {
                        let mut objs = Vec::new();
                        objects_of(&e.data, e.size, &mut objs);
                        found(objs);
                    }
                    break;
                }
                match e.nested {
                    Some(child) => (w.catalog, w.dir) = (child, ROOT_ID),
                    None => w.dir = e.id,
                }
            }
        }
        for (id, got) in fetch_catalogs(store, &needed, jobs) {
            match got {
                Ok(c) => {
                    loaded.insert(id, c);
                }
                Err(e) => tracing::warn!("prefetch: catalog {id}: {e}"),
            }
        }
        pending = parked
            .into_iter()
            .filter(|w| loaded.contains_key(&w.catalog))
            .collect();
    }
    Ok(())
}

/// Fetches catalogs `ids`, `jobs` at once.
#[allow(clippy::type_complexity)]
fn fetch_catalogs<S: TreeStore + ?Sized>(
    store: &S,
    ids: &[ObjectId],
    jobs: usize,
) -> Vec<(ObjectId, Result<Arc<Catalog>, stratum_catalog::Error>)> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(ids.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, ids.len().max(1)) {
            s.spawn(|| {
                while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let got = store.catalog(id);
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((*id, got));
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The paths of a stored prefetch list (object `id` of `size` bytes, read
/// and verified through `store`): at most [`MAX_PREFETCH_ENTRIES`], lines
/// that are not paths skipped. A list is a hint: an unreadable one is
/// logged and treated as empty.
pub fn read_list<S: TreeStore + ?Sized>(store: &S, id: &ObjectId, size: u64) -> Vec<String> {
    let Ok(len) = usize::try_from(size) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match store.read_at(id, size, done as u64, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => {
                tracing::warn!("prefetch list {id}: {e}");
                return Vec::new();
            }
        }
    }
    // A longer list than the format allows keeps its first entries.
    let mut end = 0;
    for (i, line) in buf[..done].split(|&b| b == b'\n').enumerate() {
        if i == MAX_PREFETCH_ENTRIES {
            break;
        }
        end += line.len() + 1;
    }
    let list = match PrefetchList::parse(&buf[..end.min(done)]) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("prefetch list {id}: {e}");
            return Vec::new();
        }
    };
    if !list.skipped.is_empty() {
        tracing::warn!(
            "prefetch list {id}: {} lines are not paths, skipped",
            list.skipped.len()
        );
    }
    list.paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::of(&[n])
    }

    #[test]
    fn workers_fetch_in_queue_order_and_dedupe() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let pf = Prefetcher::new(
            1,
            Box::new(move |id, _| {
                s.lock().unwrap().push(*id);
                Ok(())
            }),
        );
        pf.push_back([(id(1), 1), (id(2), 1), (id(1), 1)]);
        assert!(pf.wait_idle(Duration::from_secs(5)));
        pf.push_back([(id(3), 1)]);
        assert!(pf.wait_idle(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), vec![id(1), id(2), id(3)]);
        assert_eq!(pf.report().objects, 3);
    }

    #[test]
    fn a_waiting_read_halves_the_downloads_started() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let pf = Prefetcher::new(
            8,
            Box::new(move |_, _| {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }),
        );
        let guard = pf.demand();
        pf.push_back((0..40).map(|n| (id(n), 1)));
        std::thread::sleep(Duration::from_millis(200));
        assert!(peak.load(Ordering::SeqCst) <= 4, "{peak:?}");
        drop(guard);
        assert!(pf.wait_idle(Duration::from_secs(10)));
        assert!(peak.load(Ordering::SeqCst) > 4, "{peak:?}");
    }

    #[test]
    fn failures_are_counted_not_retried() {
        let pf = Prefetcher::new(2, Box::new(|_, _| Err("no".into())));
        pf.push_back([(id(1), 1)]);
        assert!(pf.wait_idle(Duration::from_secs(5)));
        assert_eq!(pf.report().failed, 1);
    }

    #[test]
    fn zero_jobs_fetches_nothing() {
        let pf = Prefetcher::new(0, Box::new(|_, _| panic!("fetched")));
        pf.push_back([(id(1), 1)]);
        assert!(pf.wait_idle(Duration::from_secs(1)));
    }
}
