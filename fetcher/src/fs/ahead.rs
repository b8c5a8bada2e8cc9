//! What a mount learns from its requests about what will be read next, fed
//! to the store's [`Prefetcher`](super::prefetch::Prefetcher):
//!
//! - entering an image's flat tree for the first time (a whole-repository
//!   mount: the lookup that crosses from a `/flat/ab` partition into the
//!   tree) starts that image's published prefetch list;
//! - a listed directory whose files are opened one after another gets its
//!   next small files fetched together, a window at a time (D43).
//!
//! Both only queue work; the lookup or open that noticed returns at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use stratum_catalog::catalog::{Catalog, CatalogKind, Data, Entry, FileType};
use stratum_catalog::ObjectId;

use super::prefetch;
use super::TreeStore;

/// Files of a directory fetched together at most, per window.
pub const BATCH_FILES: usize = 32;
/// Only files up to this size are batched: a large file is read on demand
/// (and its chunks read ahead one by one).
pub const BATCH_MAX_FILE: u64 = 256 << 10;
/// Bytes fetched together per window at most.
const BATCH_MAX_BYTES: u64 = 4 << 20;
/// Directories and images remembered at most (then forgotten at once).
const MAX_TRACKED: usize = 4096;

/// A directory: (catalog slot, entry id).
pub(super) type DirKey = (u32, i64);

/// (the name whose open queues the next window, the last name queued)
type Window = (Vec<u8>, Vec<u8>);

/// A window of small files: their object and name.
type Batch = Vec<((ObjectId, u64), Vec<u8>)>;

#[derive(Default)]
pub(super) struct Ahead {
    /// Start an image's list when its flat tree is first entered.
    pub images: bool,
    /// Batch the small files of listed directories.
    pub batch: bool,
    started: Mutex<HashSet<ObjectId>>,
    listed: Mutex<HashSet<DirKey>>,
    /// The directory of the last file opened, and how many files of it
    /// were opened in a row.
    last: Mutex<Option<(DirKey, usize)>>,
    /// Per batched directory: where its next window starts.
    windows: Mutex<HashMap<DirKey, Window>>,
}

fn bounded_insert<T: std::hash::Hash + Eq>(set: &mut HashSet<T>, v: T) -> bool {
    if set.len() >= MAX_TRACKED {
        set.clear();
    }
    set.insert(v)
}

impl Ahead {
    /// A lookup crossed from catalog `parent` into nested catalog `child`.
    pub fn entered<S: TreeStore>(&self, store: &Arc<S>, parent: &Catalog, child: ObjectId) {
        if !self.images
            || parent.kind() != CatalogKind::Partition
            || !parent.path().starts_with("/flat/")
        {
            return;
        }
        if !bounded_insert(
            &mut self.started.lock().unwrap_or_else(|p| p.into_inner()),
            child,
        ) {
            return;
        }
        let list = match parent.prefetch_lists() {
            Ok(lists) => lists.into_iter().find_map(|(name, list)| {
                parent
                    .image(&name)
                    .ok()
                    .flatten()
                    .filter(|r| r.flat_catalog == child.to_hex())
                    .map(|_| list)
            }),
            Err(e) => {
                tracing::warn!("prefetch lists of {}: {e}", parent.path());
                None
            }
        };
        if let Some(list) = list {
            prefetch::start_list(store.clone(), child, list);
        }
    }

    /// Directory `dir` was opened for listing.
    pub fn listed(&self, dir: DirKey) {
        if self.batch {
            bounded_insert(
                &mut self.listed.lock().unwrap_or_else(|p| p.into_inner()),
                dir,
            );
        }
    }

    /// File `file` of directory `dir` (of `catalog`) was opened: the second
    /// file in a row of a listed directory queues the next small files
    /// after it; reaching the middle of a window queues the next window.
    /// A file of the image's prefetch list is no sign of a directory being
    /// read file by file: the reader follows the recording, which already
    /// fetched what it opens (D48), so it neither starts nor extends a run.
    pub fn opened<S: TreeStore>(
        &self,
        store: &Arc<S>,
        catalog: &Arc<Catalog>,
        dir: DirKey,
        file: &Entry,
    ) {
        let Some(pf) = store.prefetcher().filter(|p| p.enabled() && self.batch) else {
            return;
        };
        if let Data::Object(id) = &file.data {
            if pf.was_listed(id) {
                return;
            }
        }
        let name = file.name.as_slice();
        let in_row = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let n = match *last {
                Some((d, n)) if d == dir => n + 1,
                _ => 1,
            };
            *last = Some((dir, n));
            n
        };
        if in_row < 2
            || !self
                .listed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&dir)
        {
            return;
        }
        let after = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() >= MAX_TRACKED {
                windows.clear();
            }
            match windows.get(&dir) {
                Some((next_at, _)) if name < next_at.as_slice() => return,
                Some((_, last)) => last.clone().max(name.to_vec()),
                None => name.to_vec(),
            }
        };
        let window = match small_files_after(catalog, dir.1, &after) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("batching directory entry {}: {e}", dir.1);
                return;
            }
        };
        let Some((_, last)) = window.last() else {
            // Nothing left after it: never again for this directory.
            self.windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dir, (vec![0xff; 256], after));
            return;
        };
        let next_at = window[window.len() / 2].1.clone();
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir, (next_at, last.clone()));
        if let Some(p) = store.prefetcher() {
            p.push_front(window.into_iter().map(|(o, _)| o));
        }
    }
}

/// Up to [`BATCH_FILES`] files of at most [`BATCH_MAX_FILE`] bytes (and
/// [`BATCH_MAX_BYTES`] together) after `after` in directory `dir`, in name
/// order: their object and name.
fn small_files_after(
    catalog: &Catalog,
    dir: i64,
    after: &[u8],
) -> Result<Batch, stratum_catalog::Error> {
    let mut out = Vec::new();
    let mut bytes = 0;
    // The walk is cut short with an error once the window is full.
    let full = || stratum_catalog::Error::NotFound {
        path: String::new(),
    };
    let walked = catalog.for_each_child(dir, |e| {
        if e.name.as_slice() <= after || e.file_type() != Some(FileType::Regular) {
            return Ok(());
        }
        if let Data::Object(id) = e.data {
            if e.size <= BATCH_MAX_FILE {
                if bytes + e.size > BATCH_MAX_BYTES {
                    return Err(full());
                }
                bytes += e.size;
                out.push(((id, e.size), e.name));
                if out.len() == BATCH_FILES {
                    return Err(full());
                }
            }
        }
        Ok(())
    });
    match walked {
        Ok(()) | Err(stratum_catalog::Error::NotFound { .. }) => Ok(out),
        Err(e) => Err(e),
    }
}
