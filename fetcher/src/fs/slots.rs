//! The catalogs a mount has loaded, one slot each, and the slot and entry
//! shown as the mount's root.
//!
//! A catalog gets the next slot number the first time it is loaded and
//! keeps it while the mount lives, so an inode (`(slot, entry id)`, see
//! [`super::StratumFs`]) always names the same entry of the same catalog:
//! its attributes, its children and its content never change. When a live
//! mount switches to a new revision ([`super::Switcher`]), unchanged
//! catalogs (every image and layer tree, and partitions nothing was added
//! to) keep their slots and so their inode numbers; changed ones are new
//! catalogs in new slots. Only inode 1, the root, changes meaning.

use std::collections::HashMap;
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

#[derive(Default)]
pub(super) struct Slots {
    by_id: HashMap<ObjectId, u32>,
    slots: Vec<Arc<Slot>>,
}

/// The slot table of a mount, shared by its request threads and its
/// [`super::Switcher`].
#[derive(Clone, Default)]
pub(super) struct SlotTable(Arc<RwLock<Slots>>);

impl SlotTable {
    /// The slot of catalog `id`, loading the catalog into a new slot the
    /// first time.
    pub fn slot_of(&self, store: &dyn TreeStore, id: &ObjectId) -> FsResult<u32> {
        if let Some(&s) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(id)
        {
            return Ok(s);
        }
        let catalog = store.catalog(id)?;
        let links = catalog.hardlink_representatives()?;
        let mut slots = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&s) = slots.by_id.get(id) {
            return Ok(s);
        }
        let s = u32::try_from(slots.slots.len()).map_err(|_| FsError::Invalid)?;
        slots.slots.push(Arc::new(Slot { catalog, links }));
        slots.by_id.insert(*id, s);
        Ok(s)
    }

    /// Whether catalog `id` has a slot.
    pub fn has(&self, id: &ObjectId) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .contains_key(id)
    }

    pub fn slot(&self, s: u32) -> FsResult<Arc<Slot>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .get(s as usize)
            .cloned()
            .ok_or(FsError::NotFound)
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
