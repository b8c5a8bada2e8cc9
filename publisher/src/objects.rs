//! Writing content objects during a publish: hash, skip what the repository
//! (or this publish) already has, compress and store the rest, and count.

use std::collections::HashSet;

use stratum_catalog::object::{Encoder, DEFAULT_LEVEL};
use stratum_catalog::{ObjectId, ObjectKind, Store};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectStats {
    pub new_objects: u64,
    pub new_stored_bytes: u64,
}

pub struct ObjectWriter {
    store: Store,
    enc: Encoder,
    /// Ids known to be in the repository: written by this publish or seen
    /// there, so each id costs at most one existence check per publish.
    known: HashSet<ObjectId>,
    /// Verify objects found present instead of trusting them (after an
    /// interrupted writer, see `repo::RepoLock::recovering`).
    verify_existing: bool,
    pub stats: ObjectStats,
}

impl ObjectWriter {
    pub fn new(store: Store) -> stratum_catalog::Result<Self> {
        Ok(ObjectWriter {
            store,
            enc: Encoder::new(DEFAULT_LEVEL)?,
            known: HashSet::new(),
            verify_existing: false,
            stats: ObjectStats::default(),
        })
    }

    pub fn verify_existing(&mut self, yes: bool) {
        self.verify_existing = yes;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores `data` as an object of `kind` unless present; returns its id.
    pub fn put(&mut self, kind: ObjectKind, data: &[u8]) -> stratum_catalog::Result<ObjectId> {
        let id = ObjectId::of(data);
        if self.known.contains(&id) && kind == ObjectKind::Content {
            return Ok(id);
        }
        if self.verify_existing
            && self.store.exists(&id, kind)?
            && self.store.get(&id, kind).is_err()
        {
            tracing::warn!(
                "object {id} was left incomplete by an interrupted writer; rewriting it"
            );
            self.store
                .backend()
                .replace(&id.path(kind), &self.enc.encode(data)?)?;
            self.stats.new_objects += 1;
        }
        let put = self.store.put_with_id(id, kind, data, &mut self.enc)?;
        if put.written {
            self.stats.new_objects += 1;
            self.stats.new_stored_bytes += put.stored_bytes;
        }
        if kind == ObjectKind::Content {
            self.known.insert(id);
        }
        Ok(id)
    }
}
