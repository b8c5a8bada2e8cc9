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

    /// Stores the contents of `file` (from its start) as an object of `kind`,
    /// streaming: the file is hashed in one pass and encoded in another,
    /// never held in memory.
    pub fn put_file(&self, kind: ObjectKind, file: &mut std::fs::File, level: i32) -> Result<Put> {
        use std::io::{Seek, SeekFrom};
        let io = |e| Error::io("<object being stored>", e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&mut *file).map_err(io)?;
        let id = ObjectId::from_hash(hasher.finalize());
        let path = id.path(kind);
        if self.backend.exists(&path)? {
            return Ok(Put {
                id,
                written: false,
                stored_bytes: 0,
            });
        }
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut enc = zstd::stream::read::Encoder::new(&mut *file, level).map_err(io)?;
        enc.include_contentsize(true).map_err(io)?;
        enc.include_checksum(false).map_err(io)?;
        enc.set_pledged_src_size(Some(len)).map_err(io)?;
        let mut counted = CountingReader { inner: enc, n: 0 };
        let written = self.backend.put_reader_if_absent(&path, &mut counted)?;
        Ok(Put {
            id,
            written,
            stored_bytes: if written { counted.n } else { 0 },
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
        // Decoded into a temporary file, not memory (a catalog may be large,
        // or a zstd bomb).
        let enc = self.get_encoded(id, ObjectKind::Catalog)?;
        Catalog::from_encoded(*id, &enc)
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

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_file_streams_a_valid_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(
            crate::backend::LocalDir::open(dir.path()).unwrap(),
        ));
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let put = store.put_file(ObjectKind::Catalog, &mut f, 3).unwrap();
        assert!(put.written && put.stored_bytes > 0);
        assert_eq!(put.id, ObjectId::of(&data));
        // Decodes with the strict single-frame reader, content size included.
        assert_eq!(store.get(&put.id, ObjectKind::Catalog).unwrap(), data);
        assert!(
            !store
                .put_file(ObjectKind::Catalog, &mut f, 3)
                .unwrap()
                .written
        );
    }
}
