//! Live mounts: a whole-repository mount that follows the repository's new
//! revisions (`stratum mount URL MOUNTPOINT --refresh DURATION`).
//!
//! [`Live`] runs one thread that, every interval (or when asked with
//! [`Live::request_refresh`]), polls the manifest with a conditional request
//! ([`Remote::poll_manifest`]: signature, repository name, no rollback). On
//! a newer revision, [`Switcher::switch`] loads the new root catalog and
//! every `/images` or partition catalog that differs from the current
//! root's, and only then replaces the root in one atomic store. Finally
//! the kernel is told to forget the root's entries and attributes.
//!
//! Why that is enough: an inode names one entry of one catalog (a slot,
//! see `slots`), so everything the kernel caches about an inode stays true
//! across switches; only inode 1 changes meaning. A lookup below the root
//! happens entirely in the old or entirely in the new revision. Processes
//! inside an image's tree (`/flat/..`, `/layers/..`) keep their inodes,
//! which still name the same catalogs, whatever `/images` says now.
//!
//! Metrics ([`stratum_metrics::mount`]): every refresh by its outcome
//! ([`Outcome::as_str`]), and the revision served, set when a switch is
//! made (the revision mounted is set by [`Remote::open`]).
//!
//! Failures (server down or slow, a manifest that does not verify, an
//! older revision, a catalog that cannot be loaded) leave the mount on its
//! revision: they are logged as warnings naming the URLs and the reason,
//! recorded in [`LiveStatus`], and the next interval tries again. Readers
//! never see them: nothing is switched until everything is loaded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use fuser::{INodeNo, Notifier};
use stratum_catalog::catalog::{Catalog, CatalogKind, ROOT_ID};
use stratum_catalog::manifest::Manifest;
use stratum_catalog::ObjectId;

use super::slots::{RootCell, SlotTable};
use super::{FsError, FsResult, RemoteTree, TreeStore};
use crate::transport::Validators;
use crate::{Poll, Remote};

/// Switches the root of a [`super::StratumFs`] made live with
/// [`super::StratumFs::live`].
pub struct Switcher<S: TreeStore> {
    store: Arc<S>,
    slots: SlotTable,
    root: RootCell,
}

impl<S: TreeStore> Switcher<S> {
    pub(super) fn new(store: Arc<S>, slots: SlotTable, root: RootCell) -> Self {
        Switcher { store, slots, root }
    }

    /// Loads the root catalog `new` (of kind root) and the catalogs mounted
    /// in it (`/images`, partitions) that differ from the current root's,
    /// then makes `new` the root. Returns the names the kernel may have
    /// cached below the root: those of the old and of the new root. On an
    /// error nothing changed.
    pub fn switch(&self, new: &ObjectId) -> FsResult<Vec<Vec<u8>>> {
        let (old_slot, _) = self.root.get();
        let old = self.slots.slot(old_slot)?.catalog.clone();
        // Loaded outside the slot table first: a catalog that is not a
        // namespace root must not get a slot.
        let cat = self.store.catalog(new)?;
        if cat.kind() != CatalogKind::Root {
            return Err(FsError::Catalog(stratum_catalog::Error::InvalidCatalog {
                catalog: new.to_hex(),
                reason: format!("a manifest's root is of kind {}", cat.kind().as_str()),
            }));
        }
        let before = mounted_catalogs(&old)?;
        // The changed ones are loaded now, so that a catalog that cannot be
        // had fails the switch, not a reader; unchanged ones are loaded on
        // demand, as at mount time.
        let mut keep = HashSet::new();
        for (path, id) in mounted_catalogs(&cat)? {
            if before.get(&path) != Some(&id) && self.slots.find(&id).is_none() {
                keep.insert(self.slots.slot_of(&id)?);
            }
        }
        let mut names = BTreeSet::new();
        for c in old
            .children(ROOT_ID)?
            .into_iter()
            .chain(cat.children(ROOT_ID)?)
        {
            names.insert(c.name);
        }
        let slot = self.slots.slot_of(new)?;
        keep.insert(slot);
        self.root.set((slot, ROOT_ID));
        // Open stay the new root and what this switch loaded; the catalogs
        // the kernel holds nothing of close now, the others when the kernel
        // forgets their inodes (D37).
        self.slots.keep_only(keep);
        Ok(names.into_iter().collect())
    }
}

/// Path → id of the catalogs mounted in a root catalog (`/images`, the
/// partitions `/flat/ab`, `/layers/ab`).
fn mounted_catalogs(cat: &Catalog) -> FsResult<HashMap<Vec<u8>, ObjectId>> {
    let mut out = HashMap::new();
    let mut todo = vec![(ROOT_ID, Vec::new(), 0)];
    while let Some((dir, path, depth)) = todo.pop() {
        for c in cat.children(dir)? {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&c.name);
            match c.nested {
                Some(id) => {
                    out.insert(p, id);
                }
                // The root catalog is a few directories deep (FORMAT §5).
                None if c.is_dir() && depth < 4 => todo.push((c.id, p, depth + 1)),
                None => {}
            }
        }
    }
    Ok(out)
}

/// What one refresh did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror answered 304.
    NotModified,
    /// The manifest is the one served.
    Unchanged,
    /// The mount switched from revision `from` to `to`.
    Switched { from: u64, to: u64 },
    /// The mount stayed on its revision, for this reason.
    Failed(String),
}

impl Outcome {
    /// `not-modified`, `unchanged`, `switched` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::NotModified => "not-modified",
            Outcome::Unchanged => "unchanged",
            Outcome::Switched { .. } => "switched",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// One refresh: when it started, how long it took, what it did.
#[derive(Clone, Debug)]
pub struct Refresh {
    pub at: SystemTime,
    pub took: Duration,
    pub outcome: Outcome,
}

/// What a live mount is on and what its refreshes did.
#[derive(Clone, Debug)]
pub struct LiveStatus {
    /// The verified manifest of the revision served, and its id.
    pub manifest: Manifest,
    pub manifest_id: ObjectId,
    pub interval: Duration,
    /// Refreshes done, and how many of them failed.
    pub refreshes: u64,
    pub failures: u64,
    pub last: Option<Refresh>,
    /// When the next refresh is due (none while one is running).
    pub next: Option<SystemTime>,
    /// The catalogs the mount has had and has open.
    pub catalogs: super::SlotCounts,
}

struct State {
    manifest: Manifest,
    manifest_id: ObjectId,
    validators: (String, Validators),
    refreshes: u64,
    failures: u64,
    last: Option<Refresh>,
    next: Option<SystemTime>,
    requested: bool,
}

/// The refresh loop of a live mount; see the module documentation.
pub struct Live {
    remote: Arc<Remote>,
    switcher: Switcher<RemoteTree>,
    interval: Duration,
    state: Mutex<State>,
    wake: Condvar,
    notifier: OnceLock<Notifier>,
}

impl Live {
    /// A loop refreshing every `interval`, starting from the revision
    /// `remote` was opened with (the one `switcher`'s filesystem shows).
    pub fn new(
        remote: Arc<Remote>,
        switcher: Switcher<RemoteTree>,
        interval: Duration,
    ) -> Arc<Self> {
        let state = State {
            manifest: remote.manifest().clone(),
            manifest_id: remote.manifest_id(),
            validators: remote.manifest_validators().clone(),
            refreshes: 0,
            failures: 0,
            last: None,
            next: None,
            requested: false,
        };
        Arc::new(Live {
            remote,
            switcher,
            interval,
            state: Mutex::new(state),
            wake: Condvar::new(),
            notifier: OnceLock::new(),
        })
    }

    /// Where the kernel's cache invalidations go (from [`super::serve`]).
    /// Without it, switches rely on the root's short TTL.
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Starts the refresh thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("stratum-refresh".into())
            .spawn(move || me.run())
    }

    /// Asks for a refresh now (`stratum reload`, SIGHUP).
    pub fn request_refresh(&self) {
        self.lock().requested = true;
        self.wake.notify_all();
    }

    pub fn status(&self) -> LiveStatus {
        let st = self.lock();
        LiveStatus {
            manifest: st.manifest.clone(),
            manifest_id: st.manifest_id,
            interval: self.interval,
            refreshes: st.refreshes,
            failures: st.failures,
            last: st.last.clone(),
            next: st.next,
            catalogs: self.switcher.slots.counts(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        loop {
            let due = Instant::now() + self.interval;
            let mut st = self.lock();
            st.next = Some(SystemTime::now() + self.interval);
            while !st.requested {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                st = self
                    .wake
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            st.requested = false;
            st.next = None;
            drop(st);
            let (at, started) = (SystemTime::now(), Instant::now());
            let outcome = self.refresh();
            stratum_metrics::mount::refresh(outcome.as_str());
            let mut st = self.lock();
            st.refreshes += 1;
            if matches!(outcome, Outcome::Failed(_)) {
                st.failures += 1;
            }
            st.last = Some(Refresh {
                at,
                took: started.elapsed(),
                outcome,
            });
        }
    }

    /// One refresh; only the refresh thread calls it.
    fn refresh(&self) -> Outcome {
        let (current, current_id, validators) = {
            let st = self.lock();
            (st.manifest.clone(), st.manifest_id, st.validators.clone())
        };
        let urls = self.remote.urls().join(", ");
        let stay = |reason: String| {
            tracing::warn!(
                "refreshing {urls}: {reason}; staying on revision {}",
                current.revision
            );
            Outcome::Failed(reason)
        };
        match self
            .remote
            .poll_manifest(&current, &current_id, Some(&validators))
        {
            Ok(Poll::NotModified) => Outcome::NotModified,
            Ok(Poll::Same { validators }) => {
                self.lock().validators = validators;
                Outcome::Unchanged
            }
            Ok(Poll::Newer {
                manifest,
                id,
                validators,
            }) => match self.switcher.switch(&manifest.root) {
                Ok(names) => {
                    let (from, to) = (current.revision, manifest.revision);
                    {
                        let mut st = self.lock();
                        st.manifest = manifest;
                        st.manifest_id = id;
                        st.validators = validators;
                    }
                    stratum_metrics::mount::revision(to);
                    self.invalidate_root(&names);
                    tracing::info!("{urls}: switched from revision {from} to {to}");
                    Outcome::Switched { from, to }
                }
                Err(e) => stay(format!(
                    "loading the catalogs of revision {}: {e}",
                    manifest.revision
                )),
            },
            Err(e) => stay(e.to_string()),
        }
    }

    /// Tells the kernel to forget the root's entries and attributes (and
    /// any cached listing).
    fn invalidate_root(&self, names: &[Vec<u8>]) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        for name in names {
            if let Err(e) = n.inval_entry(INodeNo(1), OsStr::from_bytes(name)) {
                tracing::debug!("invalidating /{}: {e}", String::from_utf8_lossy(name));
            }
        }
        if let Err(e) = n.inval_inode(INodeNo(1), 0, 0) {
            tracing::debug!("invalidating the root: {e}");
        }
    }
}
