//! A local repository directory: creating it, opening it, and the lock that
//! serialises writers.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use stratum_catalog::backend::{Backend, LocalDir, TMP_DIR};
use stratum_catalog::manifest::{Manifest, MANIFEST_PATH};
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::namespace_writer::NamespaceWriter;
use crate::objects::ObjectWriter;

/// The repository's own copy of its public key, written once by `init`.
/// Readers that were given no key verify against it (which proves the
/// repository is consistent, not who signed it: pass `--pubkey` for that).
pub const PUBLIC_KEY_PATH: &str = ".stratum/public.pem";
const LOCK_PATH: &str = ".stratum/lock";
/// Present while a writer may have objects that are not yet durable. Found
/// when taking the lock, it means the last writer died before its barrier
/// (e.g. power loss): objects it left may be incomplete on disk, so the
/// next writer verifies every object it would otherwise skip as present.
const DIRTY_PATH: &str = ".stratum/dirty";

pub struct Repository {
    dir: PathBuf,
    store: Store,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Repository {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(MANIFEST_PATH).is_file() {
            return Err(PublishError::Repo {
                repo: dir.display().to_string(),
                reason: format!(
                    "no {MANIFEST_PATH}: not a stratum repository (run `stratum init`)"
                ),
            });
        }
        let backend = LocalDir::open(dir)?;
        Ok(Repository {
            dir: dir.to_owned(),
            store: Store::new(Arc::new(backend)),
        })
    }

    /// Creates an empty repository at revision 1.
    pub fn init(dir: &Path, key: &SigningKey, name: &str) -> Result<Manifest> {
        if dir.join(MANIFEST_PATH).exists() {
            return Err(PublishError::Repo {
                repo: dir.display().to_string(),
                reason: "already a stratum repository".into(),
            });
        }
        let meta = dir.join(".stratum");
        fs::create_dir_all(&meta).map_err(|e| io(&meta, e))?;
        let backend = Arc::new(LocalDir::open(dir)?);
        let repo = Repository {
            dir: dir.to_owned(),
            store: Store::new(backend.clone()),
        };
        let lock = repo.lock()?;
        let pem = {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            key.verifying_key()
                .to_public_key_pem(Default::default())
                .map_err(|e| PublishError::Repo {
                    repo: dir.display().to_string(),
                    reason: e.to_string(),
                })?
        };
        backend.put_if_absent(PUBLIC_KEY_PATH, pem.as_bytes())?;
        let mut objects = ObjectWriter::new(repo.store.clone())?;
        let ts = now();
        let root = NamespaceWriter::empty(repo.tmp_dir(), ts).write(&repo.store, &mut objects)?;
        let manifest = Manifest::new(name, 1, ts, root, None)?;
        objects.flush()?;
        repo.commit(&manifest, key)?;
        lock.mark_clean()?;
        Ok(manifest)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join(TMP_DIR)
    }

    /// The repository's own public key (see [`PUBLIC_KEY_PATH`]).
    pub fn public_key(&self) -> Result<VerifyingKey> {
        Ok(stratum_catalog::manifest::load_verifying_key(
            &self.dir.join(PUBLIC_KEY_PATH),
        )?)
    }

    /// Takes the writer lock, waiting for another publisher to finish.
    /// Leftover temp files of a crashed writer are removed once it is held.
    pub fn lock(&self) -> Result<RepoLock> {
        let path = self.dir.join(LOCK_PATH);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        use rustix::fs::{flock, FlockOperation};
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            tracing::warn!(
                "{}: another publisher holds the lock; waiting for it",
                self.dir.display()
            );
            eprintln!(
                "waiting for the repository lock ({}) held by another stratum process…",
                path.display()
            );
            flock(&file, FlockOperation::LockExclusive).map_err(|e| io(&path, e.into()))?;
        }
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        if let Ok(rd) = fs::read_dir(&tmp) {
            for ent in rd.flatten() {
                let _ = fs::remove_file(ent.path());
            }
        }
        let dirty = self.dir.join(DIRTY_PATH);
        let recovering = dirty.exists();
        if recovering {
            tracing::warn!(
                "{}: the last writer was interrupted; verifying existing objects",
                self.dir.display()
            );
        } else {
            let f = File::create(&dirty).map_err(|e| io(&dirty, e))?;
            f.sync_all().map_err(|e| io(&dirty, e))?;
            // The marker's name must be durable too, before any object.
            let meta = self.dir.join(".stratum");
            File::open(&meta)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&meta, e))?;
        }
        Ok(RepoLock {
            _file: file,
            dirty,
            recovering,
        })
    }

    /// Makes everything written durable, then publishes `manifest`: a copy
    /// as an object (for the history chain), then `.stratum/manifest`
    /// replaced atomically — the single point at which readers see the new
    /// revision.
    pub fn commit(&self, manifest: &Manifest, key: &SigningKey) -> Result<ObjectId> {
        let bytes = manifest.sign(key);
        let id = ObjectId::of(&bytes);
        let backend = self.store.backend();
        backend.put_if_absent(
            &id.path(ObjectKind::Manifest),
            &stratum_catalog::object::encode(&bytes, 3)?,
        )?;
        backend.sync()?;
        backend.replace(MANIFEST_PATH, &bytes)?;
        Ok(id)
    }
}

/// Held for the duration of a write; released on drop (or process death).
pub struct RepoLock {
    _file: File,
    dirty: PathBuf,
    /// The previous writer died before making its objects durable.
    pub recovering: bool,
}

impl RepoLock {
    /// Called once everything written under the lock is durable.
    pub fn mark_clean(&self) -> Result<()> {
        match fs::remove_file(&self.dirty) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.dirty, e)),
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> PublishError {
    PublishError::Io {
        path: path.display().to_string(),
        error: source,
    }
}
