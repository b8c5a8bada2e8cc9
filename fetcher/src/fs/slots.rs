//! The catalogs a mount has loaded, one slot each, and the slot and entry
//! shown as the mount's root.
//!
//! A catalog gets the next slot number the first time it is loaded and
//! keeps that number while the mount lives, so an inode (`(slot, entry
//! id)`, see [`super::StratumFs`]) always names the same entry of the same
//! catalog: its attributes, its children and its content never change.
//! When a live mount switches to a new revision ([`super::Switcher`]),
//! unchanged catalogs (every image and layer tree, and partitions nothing
//! was added to) keep their slots and so their inode numbers; changed ones
//! are new catalogs in new slots. Only inode 1, the root, changes meaning.
//!
//! The number is forever; the open catalog is not (D37). Each slot counts
//! the kernel's references to its inodes (one per `lookup` reply and per
//! `readdirplus` entry, minus what `forget` returns). A slot whose count
//! is back to zero, that is not the root's, is *released*: its catalog is
//! closed (and unpinned in the node cache, [`TreeStore::release_catalog`])
//! while its id keeps the slot number. A request for a released slot opens
//! the catalog again ([`SlotTable::slot`]), so a count that is off costs a
//! reopen, never a wrong answer. A request in flight keeps its own `Arc`
//! of the catalog, and an open file or a working directory holds a kernel
//! reference, so nothing in use is closed. What stays per slot after
//! release is its id: 36 bytes per catalog ever loaded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use stratum_catalog::catalog::Catalog;
use stratum_catalog::ObjectId;

use super::{FsError, FsResult, TreeStore};

pub(super) struct Slot {
    pub catalog: Arc<Catalog>,
    /// hardlink group → entry id whose inode the group shares
    pub links: HashMap<i64, i64>,
}

struct Entry {
    id: ObjectId,
    /// Catalogs from the mount's top catalog down to this one, both
    /// included.
    nesting: usize,
    /// The open catalog; `None` once released.
    loaded: Option<Arc<Slot>>,
    /// References the kernel holds to inodes of this slot (counted under
    /// the read lock, released under the write lock).
    lookups: AtomicU64,
}

/// What a slot is: a catalog, and for a subtree catalog the place it is
/// mounted at (the slot and entry id of its mount point). A subtree
/// catalog is shared by every place its content occurs (FORMAT.md §4.12);
/// each place is its own slot, so that one directory never has two
/// parents. Other catalogs have one place per namespace, and keep their
/// slot across revisions.
type Key = (ObjectId, Option<(u32, i64)>);

#[derive(Default)]
struct Slots {
    by_id: HashMap<Key, u32>,
    slots: Vec<Entry>,
    /// Slots never released while they are listed: the root's, and the
    /// catalogs a live mount's current revision mounts at its top.
    keep: HashSet<u32>,
}

/// What [`SlotTable::counts`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    /// Catalogs that ever had a slot.
    pub slots: usize,
    /// Of them, open now.
    pub open: usize,
    /// Catalogs closed because nothing used them any more.
    pub released: u64,
    /// Catalogs opened again after a release.
    pub reopened: u64,
}

/// The slot table of a mount, shared by its request threads and its
/// [`super::Switcher`].
#[derive(Clone)]
pub(super) struct SlotTable {
    inner: Arc<RwLock<Slots>>,
    store: Arc<dyn TreeStore>,
    released: Arc<AtomicU64>,
    reopened: Arc<AtomicU64>,
}

impl SlotTable {
    pub fn new(store: Arc<dyn TreeStore>) -> Self {
        SlotTable {
            inner: Arc::default(),
            store,
            released: Arc::default(),
            reopened: Arc::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Slots> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slots> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self, id: &ObjectId) -> FsResult<Arc<Slot>> {
        let catalog = self.store.catalog(id)?;
        let links = catalog.hardlink_representatives()?;
        Ok(Arc::new(Slot { catalog, links }))
    }

    /// The slot of catalog `id`, loading the catalog into a new slot the
    /// first time (and opening it again when it was released).
    pub fn slot_of(&self, id: &ObjectId) -> FsResult<u32> {
        self.slot_at(id, None)
    }

    /// How many catalogs deep slot `s` is (1 for a mount's top catalog).
    pub fn nesting(&self, s: u32) -> usize {
        self.read().slots.get(s as usize).map_or(0, |e| e.nesting)
    }

    /// The slot of catalog `id` mounted at `place` (the slot and entry id
    /// of a mount point in a tree; `None` for any other catalog).
    pub fn slot_at(&self, id: &ObjectId, place: Option<(u32, i64)>) -> FsResult<u32> {
        let key = (*id, place);
        let known = self.read().by_id.get(&key).copied();
        if let Some(s) = known {
            self.slot(s)?;
            return Ok(s);
        }
        let nesting = place.map_or(1, |(p, _)| self.nesting(p) + 1);
        let loaded = self.load(id)?;
        let mut slots = self.write();
        if let Some(&s) = slots.by_id.get(&key) {
            let e = &mut slots.slots[s as usize];
            if e.loaded.is_none() {
                e.loaded = Some(loaded);
                self.reopened.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(s);
        }
        let s = u32::try_from(slots.slots.len()).map_err(|_| FsError::Invalid)?;
        slots.slots.push(Entry {
            id: *id,
            nesting,
            loaded: Some(loaded),
            lookups: AtomicU64::new(0),
        });
        slots.by_id.insert(key, s);
        Ok(s)
    }

    /// The slot of catalog `id` (not a subtree's), if it has one.
    pub fn find(&self, id: &ObjectId) -> Option<u32> {
        self.read().by_id.get(&(*id, None)).copied()
    }

    /// The catalog of slot `s`, opened again if it was released.
    pub fn slot(&self, s: u32) -> FsResult<Arc<Slot>> {
        let id = {
            let slots = self.read();
            let e = slots.slots.get(s as usize).ok_or(FsError::NotFound)?;
            if let Some(l) = &e.loaded {
                return Ok(l.clone());
            }
            e.id
        };
        let loaded = self.load(&id)?;
        let mut slots = self.write();
        let e = &mut slots.slots[s as usize];
        match &e.loaded {
            Some(l) => Ok(l.clone()),
            None => {
                e.loaded = Some(loaded.clone());
                self.reopened.fetch_add(1, Ordering::Relaxed);
                Ok(loaded)
            }
        }
    }

    /// The kernel was handed one more reference to an inode of slot `s`.
    pub fn looked_up(&self, s: u32) {
        if let Some(e) = self.read().slots.get(s as usize) {
            e.lookups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The kernel dropped `n` references to an inode of slot `s`; the
    /// catalog is released when none is left (unless the slot is kept).
    pub fn forget(&self, s: u32, n: u64) {
        let released = {
            let mut slots = self.write();
            let keep = slots.keep.contains(&s);
            let Some(e) = slots.slots.get_mut(s as usize) else {
                return;
            };
            let left = e.lookups.get_mut();
            *left = left.saturating_sub(n);
            if *left == 0 && !keep {
                e.loaded.take().map(|_| e.id)
            } else {
                None
            }
        };
        if let Some(id) = released {
            self.released.fetch_add(1, Ordering::Relaxed);
            self.store.release_catalog(&id);
        }
    }

    /// Makes `keep` the slots never released, and releases every other
    /// open one the kernel holds no reference to (a live mount, after a
    /// switch: the catalogs of older revisions, including those loaded by
    /// a switch and never looked at).
    pub fn keep_only(&self, keep: HashSet<u32>) {
        let ids: Vec<ObjectId> = {
            let mut slots = self.write();
            slots.keep = keep;
            let Slots { slots, keep, .. } = &mut *slots;
            slots
                .iter_mut()
                .enumerate()
                .filter(|(s, e)| {
                    e.lookups.load(Ordering::Relaxed) == 0 && !keep.contains(&(*s as u32))
                })
                .filter_map(|(_, e)| e.loaded.take().map(|_| e.id))
                .collect()
        };
        self.released.fetch_add(ids.len() as u64, Ordering::Relaxed);
        for id in ids {
            self.store.release_catalog(&id);
        }
    }

    pub fn counts(&self) -> SlotCounts {
        let slots = self.read();
        SlotCounts {
            slots: slots.slots.len(),
            open: slots.slots.iter().filter(|e| e.loaded.is_some()).count(),
            released: self.released.load(Ordering::Relaxed),
            reopened: self.reopened.load(Ordering::Relaxed),
        }
    }
}

/// The `(slot, entry id)` shown as inode 1, replaced in one store when a
/// live mount switches revisions.
#[derive(Clone)]
pub(super) struct RootCell(Arc<AtomicU64>);

impl RootCell {
    pub fn new((s, id): (u32, i64)) -> Self {
        RootCell(Arc::new(AtomicU64::new(pack(s, id))))
    }

    pub fn get(&self) -> (u32, i64) {
        let v = self.0.load(Ordering::Acquire);
        ((v >> 32) as u32, (v & 0xffff_ffff) as i64)
    }

    pub fn set(&self, (s, id): (u32, i64)) {
        self.0.store(pack(s, id), Ordering::Release);
    }
}

/// Entry ids of inodes are their low 32 bits (see `StratumFs::ino`).
fn pack(s: u32, id: i64) -> u64 {
    (u64::from(s) << 32) | (id as u64 & 0xffff_ffff)
}
