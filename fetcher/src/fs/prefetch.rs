//! Background prefetch after a mount: the prioritized files of a thin
//! image first, or (eager mode for bad networks) every file of the tree,
//! with bounded concurrency, while the mount is already serving.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use stratum_catalog::catalog::{Data, ROOT_ID};
use stratum_catalog::ObjectId;

use super::TreeStore;

/// What to prefetch below the tree whose catalog is `root`.
pub enum PrefetchPlan {
    /// These paths (relative to the tree root), in this order.
    Files(Vec<String>),
    /// Every regular file of the tree.
    All,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PrefetchReport {
    pub objects: usize,
    pub failed: usize,
}

/// Fetches the objects of the planned files with `workers` threads.
/// Failures are logged and counted; a demand read retries them anyway.
pub fn prefetch<S: TreeStore>(
    store: &Arc<S>,
    root: &ObjectId,
    plan: &PrefetchPlan,
    workers: usize,
) -> PrefetchReport {
    let ids = match collect(&**store, root, plan) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("prefetch: {e}");
            return PrefetchReport {
                objects: 0,
                failed: 1,
            };
        }
    };
    let queue = Mutex::new(ids.into_iter());
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let Some((id, size)) = queue.lock().unwrap_or_else(|p| p.into_inner()).next()
                else {
                    break;
                };
                match store.read_at(&id, size, 0, &mut [0u8; 1]) {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!("prefetch of object {id}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            });
        }
    });
    PrefetchReport {
        objects: done.into_inner(),
        failed: failed.into_inner(),
    }
}

/// The content objects of an entry, with the sizes its catalog states.
fn objects_of(
    data: &Data,
    size: u64,
    out: &mut Vec<(ObjectId, u64)>,
    seen: &mut HashSet<ObjectId>,
) {
    let mut push = |id: ObjectId, size: u64| {
        if seen.insert(id) {
            out.push((id, size));
        }
    };
    match data {
        Data::Object(id) => push(*id, size),
        Data::Chunks(c) => c.iter().for_each(|c| push(c.id, c.size)),
        Data::None | Data::Inline(_) => {}
    }
}

fn collect(
    store: &dyn TreeStore,
    root: &ObjectId,
    plan: &PrefetchPlan,
) -> Result<Vec<(ObjectId, u64)>, stratum_catalog::Error> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    match plan {
        PrefetchPlan::Files(paths) => {
            for p in paths {
                let mut cat = store.catalog(root)?;
                let mut id = ROOT_ID;
                let mut entry = None;
                for comp in p.split('/').filter(|c| !c.is_empty()) {
                    let Some(e) = cat.lookup(id, comp.as_bytes())? else {
                        entry = None;
                        break;
                    };
                    if let Some(child) = e.nested {
                        cat = store.catalog(&child)?;
                        id = ROOT_ID;
                    } else {
                        id = e.id;
                    }
                    entry = Some(e);
                }
                match entry {
                    Some(e) => objects_of(&e.data, e.size, &mut out, &mut seen),
                    None => tracing::debug!("prefetch: {p} is not in the image"),
                }
            }
        }
        PrefetchPlan::All => {
            let mut catalogs = vec![*root];
            while let Some(cid) = catalogs.pop() {
                let cat = store.catalog(&cid)?;
                cat.for_each_entry(|e| {
                    if let Some(child) = e.nested {
                        catalogs.push(child);
                    }
                    objects_of(&e.data, e.size, &mut out, &mut seen);
                    Ok(())
                })?;
            }
        }
    }
    Ok(out)
}
