//! Typed objects over a backend: put and get by id and kind, every get
//! decoded and verified, and the manifest read with its signature checked.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::backend::Backend;
use crate::catalog::Catalog;
use crate::manifest::{Manifest, MANIFEST_PATH};
use crate::object::{self, Encoder};
use crate::{Error, ObjectId, ObjectKind, Result};

#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

/// What a put did.
#[derive(Clone, Copy, Debug)]
pub struct Put {
    pub id: ObjectId,
    /// False when the object was already there.
    pub written: bool,
    /// Encoded bytes written (0 when not written).
    pub stored_bytes: u64,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Store { backend }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn exists(&self, id: &ObjectId, kind: ObjectKind) -> Result<bool> {
        self.backend.exists(&id.path(kind))
    }

    /// Encodes and stores `data` unless an object with its id exists.
    pub fn put(&self, kind: ObjectKind, data: &[u8], enc: &mut Encoder) -> Result<Put> {
        let id = ObjectId::of(data);
        self.put_with_id(id, kind, data, enc)
    }

    /// As [`Store::put`] when the caller already hashed `data`.
    pub fn put_with_id(
        &self,
        id: ObjectId,
        kind: ObjectKind,
        data: &[u8],
        enc: &mut Encoder,
    ) -> Result<Put> {
        let path = id.path(kind);
        if self.backend.exists(&path)? {
            return Ok(Put {
                id,
                written: false,
                stored_bytes: 0,
            });
        }
        let encoded = enc.encode(data)?;
        let written = self.backend.put_if_absent(&path, &encoded)?;
        Ok(Put {
            id,
            written,
            stored_bytes: if written { encoded.len() as u64 } else { 0 },
        })
    }

    /// Stores an already-encoded object (the caller vouches that it decodes
    /// to `id`), replacing whatever is at its path. Used to repair objects
    /// that a crashed publish may have left incomplete.
    pub fn put_encoded(&self, id: &ObjectId, kind: ObjectKind, encoded: &[u8]) -> Result<bool> {
        self.backend.put_if_absent(&id.path(kind), encoded)
    }

    /// The raw encoded bytes, unverified (for replication and `check`).
    pub fn get_encoded(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        self.backend
            .get(&id.path(kind))?
            .ok_or(Error::MissingObject(*id))
    }

    /// The verified, decoded bytes of an object.
    pub fn get(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        let enc = self.get_encoded(id, kind)?;
        object::decode(id, &enc)
    }

    pub fn load_catalog(&self, id: &ObjectId) -> Result<Catalog> {
        let bytes = self.get(id, ObjectKind::Catalog)?;
        Catalog::from_bytes(*id, &bytes)
    }

    /// The current manifest, verified with `key`, and its id (the BLAKE3 of
    /// its file bytes, which the next revision records as `previous`).
    pub fn manifest(&self, key: &VerifyingKey) -> Result<(Manifest, ObjectId)> {
        let bytes = self.manifest_bytes()?;
        let m = Manifest::verify(&bytes, key)?;
        Ok((m, ObjectId::of(&bytes)))
    }

    pub fn manifest_bytes(&self) -> Result<Vec<u8>> {
        self.backend.get(MANIFEST_PATH)?.ok_or_else(|| {
            Error::InvalidManifest(format!(
                "{MANIFEST_PATH} is missing: not a stratum repository"
            ))
        })
    }
}
