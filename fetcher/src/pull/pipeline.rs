//! The pull's worker pool: content fetched, verified and written on
//! [`PullOptions::jobs`] threads while the walk goes on creating entries.
//!
//! The walk (one thread) creates each regular file itself, through the
//! descriptor-relative code of `safety` and `create`, and hands the open
//! file to the pool as one task per content object (a whole file, or one
//! chunk written at its offset). A worker fetches the object through the
//! [`ObjectSource`], which returns only verified bytes, writes them with
//! `pwrite` through the file's own descriptor, and the worker that writes
//! a file's last piece applies its metadata (`content`). So no byte reaches
//! the destination unverified, and no path is ever resolved off the walk.
//!
//! Bounds: at most `jobs` tasks wait in the queue (the walk blocks when it
//! is full, so open files stay below `2 × jobs`), and workers start a task
//! only while the decoded bytes they hold stay under [`MEMORY_BUDGET`] (a
//! larger object runs alone), so memory does not grow with the image or
//! with what a hostile catalog declares.
//!
//! Catalogs: the walk announces the nested catalogs mounted in each
//! directory it enters; workers fetch them (and, recursively, the catalogs
//! mounted in those) ahead of the walk, before any content task, through
//! [`ObjectSource::catalog_ahead`]. At most [`MAX_CATALOGS_AHEAD`] per pull.
//!
//! A source whose requests wait on the network
//! ([`ObjectSource::fetches_async`], an HTTP remote) gets no content
//! threads: one thread (`driver`) keeps up to `jobs` downloads in flight as
//! futures, under the same queue, budget and failure rules, and at most
//! [`CATALOG_THREADS`] workers fetch catalogs ahead.
//!
//! The first error (in the walk or a worker) stops the pull: queued tasks
//! are dropped, running ones end, and it is returned. With `jobs = 1` there
//! are no threads: each task runs on the walk's thread when it is handed
//! over, which is the sequential pull.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use stratum_catalog::ObjectId;

use super::content::{FileJob, Piece};
use super::PullOptions;
use crate::{ObjectSource, PullError};

mod driver;

/// Decoded bytes the workers may hold at once (an object larger than this
/// runs alone).
pub(super) const MEMORY_BUDGET: u64 = 256 << 20;

/// Nested catalogs fetched ahead of the walk, at most, per pull.
pub(super) const MAX_CATALOGS_AHEAD: usize = 4096;

/// Threads fetching catalogs ahead when content is downloaded by the
/// driver (at most `jobs`).
pub(super) const CATALOG_THREADS: usize = 16;

/// One content object to fetch and write into its file.
pub(super) struct Task {
    pub job: Arc<FileJob>,
    pub piece: Piece,
}

#[derive(Default)]
struct State {
    tasks: VecDeque<Task>,
    catalogs: VecDeque<ObjectId>,
    seen_catalogs: HashSet<ObjectId>,
    /// Decoded bytes held by running tasks.
    held: u64,
    /// Tasks and catalog fetches running.
    running: usize,
    /// No more tasks will come (the walk ended, or failed).
    closed: bool,
    failed: Option<PullError>,
}

/// What the walk and the workers share. See the module documentation.
pub(super) struct Pool<'a> {
    pub objects: &'a (dyn ObjectSource + Sync),
    pub opts: &'a PullOptions,
    pub root_user: bool,
    progress: &'a (dyn Fn(u64) + Sync),
    jobs: usize,
    /// Content is downloaded by the driver (`driver`), not by threads.
    asynchronous: bool,
    /// [`MEMORY_BUDGET`], smaller in tests.
    budget: u64,
    state: Mutex<State>,
    /// Wakes the driver: a task was handed over, or the end.
    wake: tokio::sync::Notify,
    /// Signalled when there is work, room in the budget, or the end.
    work: Condvar,
    /// Signalled when the queue has room, a task ends, or the pull failed.
    room: Condvar,
    bytes: AtomicU64,
    reporting: Mutex<()>,
    files: AtomicU64,
    /// Lines of `PullStats::skipped`, with the walk order of their entry.
    skipped: Mutex<Vec<(u64, String)>>,
    /// Tests: how long a worker pauses after ending a task and waking the
    /// walk (to hold open the window a lost failure needed).
    #[cfg(test)]
    pause_after_task: Option<std::time::Duration>,
}

impl<'a> Pool<'a> {
    pub fn new(
        objects: &'a (dyn ObjectSource + Sync),
        opts: &'a PullOptions,
        root_user: bool,
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> Self {
        Pool {
            objects,
            opts,
            root_user,
            progress,
            jobs: opts.jobs.max(1),
            // Without a runtime (it could not start threads), the threads'
            // requests fail, each naming its object.
            asynchronous: opts.jobs > 1
                && objects.fetches_async()
                && crate::transport::runtime().is_ok(),
            budget: MEMORY_BUDGET,
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
            work: Condvar::new(),
            room: Condvar::new(),
            bytes: AtomicU64::new(0),
            reporting: Mutex::new(()),
            files: AtomicU64::new(0),
            skipped: Mutex::new(Vec::new()),
            #[cfg(test)]
            pause_after_task: None,
        }
    }

    /// Worker threads to start (none for a sequential pull).
    pub fn threads(&self) -> usize {
        if self.jobs <= 1 {
            0
        } else if self.asynchronous {
            self.jobs.min(CATALOG_THREADS)
        } else {
            self.jobs
        }
    }

    /// Starts the workers (and the driver) in `scope`.
    pub fn start<'s>(&'s self, scope: &'s std::thread::Scope<'s, '_>) {
        for _ in 0..self.threads() {
            scope.spawn(|| self.worker());
        }
        if self.asynchronous {
            scope.spawn(|| self.drive());
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands one task to the workers, waiting while the queue is full; runs
    /// it here when there are no workers.
    pub fn submit(&self, task: Task) -> Result<(), PullError> {
        if self.jobs <= 1 {
            return self.execute(task);
        }
        let mut g = self.lock();
        loop {
            if g.failed.is_some() {
                return Err(stopped_error(&task));
            }
            if g.tasks.len() < self.jobs {
                break;
            }
            g = self.room.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.tasks.push_back(task);
        if self.asynchronous {
            self.wake.notify_one();
        } else {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Asks the workers to fetch these catalogs (and those mounted in them)
    /// ahead of the walk. A hint: failures are left to the walk's own load.
    pub fn catalogs_ahead(&self, ids: impl IntoIterator<Item = ObjectId>) {
        if self.jobs <= 1 {
            return;
        }
        let mut g = self.lock();
        let mut added = false;
        for id in ids {
            if g.seen_catalogs.len() >= MAX_CATALOGS_AHEAD {
                break;
            }
            if g.seen_catalogs.insert(id) {
                g.catalogs.push_back(id);
                added = true;
            }
        }
        if added {
            self.work.notify_all();
        }
    }

    /// Records the first failure and stops: queued tasks are dropped.
    pub fn fail(&self, e: PullError) {
        let mut g = self.lock();
        self.fail_locked(&mut g, e);
    }

    /// [`Pool::fail`] under the lock the caller holds. A worker records its
    /// failure in the same critical section that ends its task: `finish`
    /// must never see the task over (`running == 0`) and no failure yet.
    fn fail_locked(&self, g: &mut State, e: PullError) {
        if g.failed.is_none() {
            g.failed = Some(e);
        }
        g.tasks.clear();
        g.catalogs.clear();
        g.closed = true;
        self.work.notify_all();
        self.room.notify_all();
        self.wake.notify_one();
    }

    /// No more tasks: waits for the queued and running ones, and returns the
    /// first failure if there was one.
    pub fn finish(&self) -> Result<(), PullError> {
        let mut g = self.lock();
        g.closed = true;
        self.work.notify_all();
        self.wake.notify_one();
        while g.failed.is_none() && (!g.tasks.is_empty() || g.running > 0) {
            g = self.room.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        // Workers waiting for budget or work see the end and exit; those
        // still running a task finish it and exit.
        self.work.notify_all();
        match g.failed.take() {
            Some(e) => {
                g.tasks.clear();
                g.catalogs.clear();
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// A worker thread: catalogs first (the walk will need them), then
    /// content tasks in order, each when the memory budget allows (unless
    /// the driver runs them); exits on failure, or once the pool is closed
    /// and its queue empty.
    pub fn worker(&self) {
        enum Job {
            Catalog(ObjectId),
            Content(Task, u64),
        }
        loop {
            let job = {
                let mut g = self.lock();
                loop {
                    if g.failed.is_some() {
                        return;
                    }
                    if !g.closed {
                        if let Some(id) = g.catalogs.pop_front() {
                            g.running += 1;
                            break Job::Catalog(id);
                        }
                    }
                    if self.asynchronous {
                        if g.closed {
                            return;
                        }
                        g = self.work.wait(g).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    let need = match g.tasks.front() {
                        Some(t) => t.piece.size().min(self.budget),
                        None if g.closed => return,
                        None => {
                            g = self.work.wait(g).unwrap_or_else(|p| p.into_inner());
                            continue;
                        }
                    };
                    if g.held == 0 || g.held + need <= self.budget {
                        if let Some(t) = g.tasks.pop_front() {
                            g.held += need;
                            g.running += 1;
                            self.room.notify_all();
                            // More work and maybe budget: pass the wake-up on.
                            if !g.tasks.is_empty() {
                                self.work.notify_one();
                            }
                            break Job::Content(t, need);
                        }
                    }
                    g = self.work.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            match job {
                Job::Catalog(id) => {
                    let nested = self.objects.catalog_ahead(&id);
                    self.catalogs_ahead(nested);
                    self.lock().running -= 1;
                }
                Job::Content(task, held) => {
                    let r = self.execute(task);
                    self.end_task(r, held);
                }
            }
            // Only the walk waits for room (to hand over a task, or to finish).
            self.room.notify_all();
            #[cfg(test)]
            if let Some(d) = self.pause_after_task {
                std::thread::sleep(d);
            }
        }
    }

    /// A content task ended with `r`, having held `held` bytes of the
    /// budget. Its failure is recorded in the same critical section (see
    /// [`Pool::fail_locked`]).
    fn end_task(&self, r: Result<(), PullError>, held: u64) {
        let mut g = self.lock();
        g.held -= held;
        g.running -= 1;
        if let Err(e) = r {
            self.fail_locked(&mut g, e);
        } else if !g.tasks.is_empty() {
            // The budget freed may let a waiting worker start (one at a
            // time: waking them all costs more than it saves).
            self.work.notify_one();
            self.wake.notify_one();
        }
    }

    /// Fetches, verifies and writes one piece; the last piece of a file
    /// applies its metadata.
    fn execute(&self, task: Task) -> Result<(), PullError> {
        let n = task.job.write_piece(self.objects, &task.piece)?;
        self.piece_written(&task, n)
    }

    /// `n` bytes of `task` were written: counted; the last piece of a file
    /// applies its metadata.
    fn piece_written(&self, task: &Task, n: u64) -> Result<(), PullError> {
        self.add_bytes(n);
        if task.job.piece_done() {
            task.job.finish(self.opts, self.root_user, &mut |line| {
                self.skip(task.job.seq, line)
            })?;
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts content bytes written and reports the total (under a lock,
    /// so that the totals reported only grow).
    pub fn add_bytes(&self, n: u64) {
        let _order = self.reporting.lock().unwrap_or_else(|p| p.into_inner());
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        (self.progress)(total);
    }

    /// A file created and filled by the walk itself (no object to fetch).
    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// One line of `PullStats::skipped` for the entry at walk position `seq`.
    pub fn skip(&self, seq: u64, line: String) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((seq, line));
    }

    /// (files, bytes, skipped lines in walk order) once the pool is done.
    pub fn totals(&self) -> (u64, u64, Vec<String>) {
        let mut skipped =
            std::mem::take(&mut *self.skipped.lock().unwrap_or_else(|p| p.into_inner()));
        // Stable: lines of one entry keep their order.
        skipped.sort_by_key(|(seq, _)| *seq);
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            skipped.into_iter().map(|(_, l)| l).collect(),
        )
    }
}

/// What the walk gets for a task handed over after the pool stopped (the
/// pool's own error is what the pull reports).
fn stopped_error(task: &Task) -> PullError {
    task.job
        .invalid("not written: the pull stopped on an earlier error")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs::File;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use stratum_catalog::catalog::{Entry, FileType};

    use super::super::Loc;

    /// Objects whose bytes are their id's first byte repeated; counts what
    /// runs at once and what it holds.
    #[derive(Default)]
    struct Fake {
        sizes: Mutex<HashMap<ObjectId, u64>>,
        running: AtomicUsize,
        most_running: AtomicUsize,
        held: AtomicU64,
        most_held: AtomicU64,
        fail: Option<ObjectId>,
        calls: AtomicUsize,
        /// Catalog id -> the catalogs mounted in it.
        nested: HashMap<ObjectId, Vec<ObjectId>>,
        catalogs_fetched: Mutex<Vec<ObjectId>>,
        /// Content through `content_async`, run by the driver.
        asynchronous: bool,
    }

    impl Fake {
        fn begin(&self, size: u64) {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            let held = self.held.fetch_add(size, Ordering::SeqCst) + size;
            self.most_held.fetch_max(held, Ordering::SeqCst);
        }

        fn end(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error> {
            self.held.fetch_sub(size, Ordering::SeqCst);
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail == Some(*id) {
                return Err(stratum_catalog::Error::CorruptObject {
                    id: *id,
                    reason: "test".into(),
                });
            }
            let _ = self.sizes.lock().unwrap().insert(*id, size);
            Ok(vec![id.as_bytes()[0]; size as usize])
        }
    }

    impl ObjectSource for Fake {
        fn content(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error> {
            self.begin(size);
            std::thread::sleep(Duration::from_millis(20));
            self.end(id, size)
        }

        fn fetches_async(&self) -> bool {
            self.asynchronous
        }

        fn content_async(&self, id: ObjectId, size: u64) -> crate::ContentFuture<'_> {
            Box::pin(async move {
                self.begin(size);
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.end(&id, size)
            })
        }

        fn catalog_ahead(&self, id: &ObjectId) -> Vec<ObjectId> {
            self.catalogs_fetched.lock().unwrap().push(*id);
            self.nested.get(id).cloned().unwrap_or_default()
        }
    }

    fn opts(jobs: usize) -> PullOptions {
        PullOptions {
            preserve_owner: false,
            devices: false,
            jobs,
        }
    }

    /// `n` files of `size` bytes each (one object each) in `dir`, handed
    /// to `pool`; then the pool's result.
    fn run(pool: &Pool<'_>, dir: &Path, n: usize, size: u64) -> Result<(), PullError> {
        std::thread::scope(|s| {
            pool.start(s);
            let mut walked = Ok(());
            for i in 0..n {
                let path = dir.join(format!("f{i}"));
                let file = File::create(&path).unwrap();
                let mut e = Entry::new(FileType::Regular, 0o644);
                e.size = size;
                let loc = Loc {
                    path: "/f",
                    dest: &path,
                };
                let job = Arc::new(FileJob::new(file, &e, 0o644, i as u64, 1, loc));
                let piece = Piece {
                    id: ObjectId::of(&i.to_le_bytes()),
                    size,
                    offset: 0,
                    chunk: None,
                };
                if let Err(e) = pool.submit(Task { job, piece }) {
                    walked = Err(e);
                    break;
                }
            }
            if let Err(e) = walked {
                pool.fail(e);
            }
            pool.finish()
        })
    }

    /// The two ways of running content: threads, and the driver's futures.
    fn sources() -> [Fake; 2] {
        [
            Fake::default(),
            Fake {
                asynchronous: true,
                ..Fake::default()
            },
        ]
    }

    #[test]
    fn jobs_objects_are_fetched_at_once_and_each_lands_in_its_file() {
        for src in sources() {
            let tmp = tempfile::tempdir().unwrap();
            let o = opts(8);
            let pool = Pool::new(&src, &o, false, &|_| {});
            run(&pool, tmp.path(), 40, 1000).unwrap();
            let most = src.most_running.load(Ordering::SeqCst);
            assert!((2..=8).contains(&most), "{most} at once");
            let (files, bytes, _) = pool.totals();
            assert_eq!((files, bytes), (40, 40_000));
            for i in 0..40usize {
                let got = std::fs::read(tmp.path().join(format!("f{i}"))).unwrap();
                let first = ObjectId::of(&i.to_le_bytes()).as_bytes()[0];
                assert_eq!(got, vec![first; 1000], "f{i}");
            }
        }
    }

    #[test]
    fn a_source_with_async_requests_gets_the_driver_and_catalog_threads_only() {
        let [sync, asynchronous] = sources();
        let o = opts(64);
        assert_eq!(Pool::new(&sync, &o, false, &|_| {}).threads(), 64);
        let pool = Pool::new(&asynchronous, &o, false, &|_| {});
        assert!(pool.asynchronous);
        assert_eq!(pool.threads(), CATALOG_THREADS);
        // 64 requests in flight from the one driver thread.
        let tmp = tempfile::tempdir().unwrap();
        run(&pool, tmp.path(), 200, 10).unwrap();
        assert_eq!(asynchronous.most_running.load(Ordering::SeqCst), 64);
        // --jobs 1 stays the sequential pull on the walk's thread.
        let o1 = opts(1);
        let pool = Pool::new(&asynchronous, &o1, false, &|_| {});
        assert!(!pool.asynchronous);
        assert_eq!(pool.threads(), 0);
    }

    /// D50: the default keeps 128 downloads in flight (64 left the larger
    /// benchmark image's pull at a 10 ms round trip waiting on the network).
    #[test]
    fn the_default_jobs_keep_128_downloads_in_flight() {
        let src = Fake {
            asynchronous: true,
            ..Fake::default()
        };
        let o = PullOptions {
            preserve_owner: false,
            devices: false,
            ..PullOptions::default()
        };
        let pool = Pool::new(&src, &o, false, &|_| {});
        let tmp = tempfile::tempdir().unwrap();
        run(&pool, tmp.path(), 400, 10).unwrap();
        assert_eq!(src.most_running.load(Ordering::SeqCst), 128);
    }

    #[test]
    fn one_job_runs_everything_on_the_walks_thread_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let src = Fake::default();
        let o = opts(1);
        let seen = Mutex::new(Vec::new());
        let progress = |n| seen.lock().unwrap().push(n);
        let pool = Pool::new(&src, &o, false, &progress);
        assert_eq!(pool.threads(), 0);
        run(&pool, tmp.path(), 5, 10).unwrap();
        assert_eq!(src.most_running.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.lock().unwrap(), vec![10, 20, 30, 40, 50]);
    }

    #[test]
    fn decoded_bytes_held_stay_under_the_budget() {
        for (src, big) in sources().into_iter().zip(sources()) {
            let tmp = tempfile::tempdir().unwrap();
            let o = opts(16);
            let mut pool = Pool::new(&src, &o, false, &|_| {});
            pool.budget = 10_000;
            // 3 000 bytes each: at most 3 at once, though 16 may run.
            run(&pool, tmp.path(), 24, 3000).unwrap();
            assert!(src.most_held.load(Ordering::SeqCst) <= 9000);
            assert!(src.most_running.load(Ordering::SeqCst) >= 2);
            // An object over the budget runs alone.
            let mut pool = Pool::new(&big, &o, false, &|_| {});
            pool.budget = 10_000;
            std::fs::create_dir(tmp.path().join("big")).unwrap();
            run(&pool, &tmp.path().join("big"), 6, 25_000).unwrap();
            assert_eq!(big.most_running.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn the_first_failure_stops_the_pool_and_is_returned() {
        for src in sources() {
            let tmp = tempfile::tempdir().unwrap();
            let bad = ObjectId::of(&3usize.to_le_bytes());
            let src = Fake {
                fail: Some(bad),
                ..src
            };
            let o = opts(4);
            let pool = Pool::new(&src, &o, false, &|_| {});
            let err = run(&pool, tmp.path(), 400, 10).unwrap_err();
            assert!(
                matches!(&err, PullError::Content { id, .. } if *id == bad),
                "{err:?}"
            );
            // Stopped: the queue was dropped, most objects never asked for.
            assert!(src.calls.load(Ordering::SeqCst) < 100);
            // The failed object's file got nothing.
            assert_eq!(std::fs::read(tmp.path().join("f3")).unwrap(), b"");
        }
    }

    /// Regression (CI, `reader_trust::zstd_bomb_content_is_refused_with_bounded_memory`:
    /// "pull URL: a bomb was accepted"): a worker ended its task and woke
    /// the walk before recording its failure, so `finish` could see no
    /// task left, no failure, and report success for a pull whose last
    /// object was refused.
    #[test]
    fn a_failure_of_the_last_task_is_never_lost() {
        for round in 0..40 {
            let tmp = tempfile::tempdir().unwrap();
            let src = Fake {
                fail: Some(ObjectId::of(&0usize.to_le_bytes())),
                asynchronous: round % 2 == 1,
                ..Fake::default()
            };
            let o = opts(4);
            let mut pool = Pool::new(&src, &o, false, &|_| {});
            pool.pause_after_task = Some(Duration::from_millis(20));
            let r = run(&pool, tmp.path(), 1, 10);
            assert!(
                matches!(r, Err(PullError::Content { .. })),
                "round {round}: {r:?}"
            );
        }
    }

    #[test]
    fn catalogs_are_fetched_ahead_once_each_and_below_the_cap() {
        let id = |n: u32| ObjectId::of(&n.to_le_bytes());
        // 1 mounts 2 and 3; 3 mounts 2 (shared) and 4.
        let src = Fake {
            nested: HashMap::from([(id(1), vec![id(2), id(3)]), (id(3), vec![id(2), id(4)])]),
            ..Fake::default()
        };
        let o = opts(4);
        let pool = Pool::new(&src, &o, false, &|_| {});
        std::thread::scope(|s| {
            for _ in 0..pool.threads() {
                s.spawn(|| pool.worker());
            }
            pool.catalogs_ahead([id(1), id(1)]);
            // Let the workers get through them before the end.
            for _ in 0..200 {
                if src.catalogs_fetched.lock().unwrap().len() == 4 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            pool.finish().unwrap();
        });
        let mut got = src.catalogs_fetched.lock().unwrap().clone();
        got.sort();
        let mut want = vec![id(1), id(2), id(3), id(4)];
        want.sort();
        assert_eq!(got, want);

        // Sequential pulls fetch nothing ahead; a pull asks for at most
        // MAX_CATALOGS_AHEAD.
        let o1 = opts(1);
        let pool = Pool::new(&src, &o1, false, &|_| {});
        pool.catalogs_ahead([id(9)]);
        assert!(pool.lock().catalogs.is_empty());
        let pool = Pool::new(&src, &o, false, &|_| {});
        pool.catalogs_ahead((0..MAX_CATALOGS_AHEAD as u32 + 10).map(id));
        assert_eq!(pool.lock().catalogs.len(), MAX_CATALOGS_AHEAD);
    }
}
