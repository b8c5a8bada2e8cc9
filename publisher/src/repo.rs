//! A repository — a local directory or an S3 bucket prefix
//! ([`RepoLocation`]) — creating it, opening it, and the lock that
//! serialises writers.
//!
//! A local directory keeps its writer state in files: `flock` on
//! `.stratum/lock`, temp files in `.stratum/tmp`, the `.stratum/dirty`
//! marker. On S3 the lock is an object refreshed by its holder
//! ([`stratum_catalog::lock`]), the dirty marker and the public key are
//! objects, and temp files live in a local temp directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use stratum_catalog::backend::{Backend, LocalDir, TMP_DIR};
use stratum_catalog::layout;
pub use stratum_catalog::location::RepoLocation;
use stratum_catalog::lock::{LockEvent, LockOptions, ObjectLock};
use stratum_catalog::manifest::{Manifest, MANIFEST_PATH};
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::namespace_writer::NamespaceWriter;
use crate::objects::ObjectWriter;

/// The repository's own copy of its public key (pass `--pubkey` to verify
/// who signed it).
pub use stratum_catalog::layout::PUBLIC_KEY_PATH;
use stratum_catalog::layout::{DirLock, DIRTY_PATH, LOCK_PATH, META_DIR};

/// Seconds after which a lock object on S3 that its holder stopped
/// refreshing is broken by the next writer (default 600).
pub const LOCK_STALE_ENV: &str = "STRATUM_LOCK_STALE_SECS";

pub struct Repository {
    /// The directory; for a remote repository its location spelled as a
    /// path, for messages only.
    dir: PathBuf,
    location: RepoLocation,
    store: Store,
    /// A remote repository's local scratch directory (catalogs being built).
    scratch: Option<tempfile::TempDir>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Repository {
    /// Opens the repository at `dir`: a directory, or `s3://BUCKET/PREFIX`
    /// (see [`RepoLocation`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let location = RepoLocation::from_path(dir)?;
        if location.is_remote() {
            return Self::open_remote(location);
        }
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
            location,
            store: Store::new(Arc::new(backend)),
            scratch: None,
        })
    }

    fn open_remote(location: RepoLocation) -> Result<Self> {
        let repo = Self::remote(location)?;
        if !repo.store.backend().exists(MANIFEST_PATH)? {
            return Err(PublishError::Repo {
                repo: repo.location.to_string(),
                reason: format!(
                    "no {MANIFEST_PATH}: not a stratum repository (run `stratum init`)"
                ),
            });
        }
        Ok(repo)
    }

    fn remote(location: RepoLocation) -> Result<Self> {
        let backend = location.open_backend()?;
        let scratch = tempfile::Builder::new()
            .prefix("stratum-repo-")
            .tempdir()
            .map_err(|e| io(&std::env::temp_dir(), e))?;
        Ok(Repository {
            dir: PathBuf::from(location.to_string()),
            location,
            store: Store::new(backend),
            scratch: Some(scratch),
        })
    }

    /// Creates an empty repository at revision 1.
    pub fn init(dir: &Path, key: &SigningKey, name: &str) -> Result<Manifest> {
        let location = RepoLocation::from_path(dir)?;
        if location.is_remote() {
            let repo = Self::remote(location)?;
            // Read, not just tested: the manifest is then created with a
            // create-only write, so of two racing inits one fails.
            if repo.store.backend().get(MANIFEST_PATH)?.is_some() {
                return Err(PublishError::Repo {
                    repo: repo.location.to_string(),
                    reason: "already a stratum repository".into(),
                });
            }
            return repo.init_in(key, name);
        }
        if dir.join(MANIFEST_PATH).exists() {
            return Err(PublishError::Repo {
                repo: dir.display().to_string(),
                reason: "already a stratum repository".into(),
            });
        }
        let meta = dir.join(META_DIR);
        fs::create_dir_all(&meta).map_err(|e| io(&meta, e))?;
        let backend = Arc::new(LocalDir::open(dir)?);
        let repo = Repository {
            dir: dir.to_owned(),
            location,
            store: Store::new(backend),
            scratch: None,
        };
        repo.init_in(key, name)
    }

    fn init_in(&self, key: &SigningKey, name: &str) -> Result<Manifest> {
        let repo = self;
        let backend = repo.store.backend();
        let lock = repo.lock()?;
        let pem = {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            key.verifying_key()
                .to_public_key_pem(Default::default())
                .map_err(|e| PublishError::Repo {
                    repo: repo.dir.display().to_string(),
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

    /// The repository directory. For a remote repository this is its
    /// location spelled as a path (`s3://bucket/prefix`), good for messages
    /// only: see [`Repository::local_dir`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn location(&self) -> &RepoLocation {
        &self.location
    }

    /// The directory of a local repository; `None` for a remote one.
    pub fn local_dir(&self) -> Option<&Path> {
        self.location.local_dir()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where a writer builds catalogs before storing them: inside a local
    /// repository, else a private local temp directory.
    pub fn tmp_dir(&self) -> PathBuf {
        match &self.scratch {
            Some(t) => t.path().to_owned(),
            None => self.dir.join(TMP_DIR),
        }
    }

    /// The repository's own public key (see [`PUBLIC_KEY_PATH`]).
    pub fn public_key(&self) -> Result<VerifyingKey> {
        if self.scratch.is_none() {
            return Ok(stratum_catalog::manifest::load_verifying_key(
                &self.dir.join(PUBLIC_KEY_PATH),
            )?);
        }
        use ed25519_dalek::pkcs8::DecodePublicKey;
        let bad = |reason: String| PublishError::Repo {
            repo: self.location.to_string(),
            reason,
        };
        let pem = self
            .store
            .backend()
            .get(PUBLIC_KEY_PATH)?
            .ok_or_else(|| bad(format!("no {PUBLIC_KEY_PATH}: give --pubkey")))?;
        let text = String::from_utf8(pem)
            .map_err(|_| bad(format!("{PUBLIC_KEY_PATH} is not a PEM file")))?;
        VerifyingKey::from_public_key_pem(&text).map_err(|e| {
            bad(format!(
                "{PUBLIC_KEY_PATH}: not an Ed25519 public key PEM: {e}"
            ))
        })
    }

    /// Takes the writer lock, waiting for another publisher to finish.
    /// Leftover temp files of a crashed writer are removed once it is held.
    pub fn lock(&self) -> Result<RepoLock> {
        if self.scratch.is_some() {
            return self.lock_remote();
        }
        let file = layout::lock_dir(&self.dir, &mut |_| {
            tracing::warn!(
                "{}: another publisher holds the lock; waiting for it",
                self.dir.display()
            );
        })
        .map_err(|e| io(&self.dir.join(LOCK_PATH), e))?;
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
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
            let meta = self.dir.join(META_DIR);
            File::open(&meta)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&meta, e))?;
        }
        Ok(RepoLock {
            held: Held::Flock { _file: file, dirty },
            recovering,
        })
    }

    /// The lock of a remote repository: a lock object (see
    /// [`stratum_catalog::lock`]), and the dirty marker as an object.
    fn lock_remote(&self) -> Result<RepoLock> {
        let backend = self.store.backend().clone();
        let lock = lock_object(backend.clone(), &self.location)?;
        let recovering = backend.exists(DIRTY_PATH)?;
        if recovering {
            tracing::warn!(
                "{}: the last writer was interrupted; verifying existing objects",
                self.location
            );
        } else {
            backend.replace(DIRTY_PATH, b"")?;
        }
        Ok(RepoLock {
            held: Held::Object { lock, backend },
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

/// Takes the writer lock object `.stratum/lock` of a remote repository
/// (see [`stratum_catalog::lock`]), telling the user (a
/// [`stratum_catalog::NOTICE`] event) when it waits for another writer or
/// breaks a stale lock. Every writer of a remote
/// repository (publisher, `replicate` into a bucket) takes it here, so they
/// exclude each other. The staleness limit comes from [`LOCK_STALE_ENV`].
pub fn lock_object(backend: Arc<dyn Backend>, location: &RepoLocation) -> Result<ObjectLock> {
    let mut opts = LockOptions::default();
    if let Some(secs) = std::env::var(LOCK_STALE_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        opts.stale_after = std::time::Duration::from_secs(secs.max(1));
        opts.refresh_every = opts.refresh_every.min(opts.stale_after / 4);
    }
    let where_ = format!("{location}/{LOCK_PATH}");
    Ok(ObjectLock::acquire(
        backend,
        LOCK_PATH,
        &opts,
        &mut |e| match e {
            LockEvent::Waiting(holder) => {
                tracing::warn!("{where_}: another writer holds the lock; waiting for it");
                tracing::info!(
                    target: stratum_catalog::NOTICE,
                    "waiting for the repository lock ({where_}) held by {holder}; \
                 it is broken if not refreshed for {}s ({LOCK_STALE_ENV})…",
                    opts.stale_after.as_secs()
                );
            }
            LockEvent::BrokeStale(holder) => {
                tracing::warn!("{where_}: broke a stale lock held by {holder}");
                tracing::warn!(
                    target: stratum_catalog::NOTICE,
                    "warning: broke the stale repository lock ({where_}) of {holder}: that \
                 writer stopped refreshing it more than {}s ago",
                    opts.stale_after.as_secs()
                );
            }
        },
    )?)
}

/// Held for the duration of a write; released on drop (or process death;
/// on S3, a dead writer's lock is broken once it goes stale).
pub struct RepoLock {
    held: Held,
    /// The previous writer died before making its objects durable.
    pub recovering: bool,
}

enum Held {
    Flock {
        _file: DirLock,
        dirty: PathBuf,
    },
    Object {
        lock: ObjectLock,
        backend: Arc<dyn Backend>,
    },
}

impl RepoLock {
    /// Called once everything written under the lock is durable.
    pub fn mark_clean(&self) -> Result<()> {
        match &self.held {
            Held::Flock { dirty, .. } => match fs::remove_file(dirty) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(dirty, e)),
            },
            Held::Object { backend, .. } => Ok(backend.delete(DIRTY_PATH)?),
        }
    }

    /// True when another writer broke this (remote) lock because it was not
    /// refreshed in time; the manifest update of this writer will then fail
    /// rather than overwrite the other's.
    pub fn lost(&self) -> bool {
        match &self.held {
            Held::Flock { .. } => false,
            Held::Object { lock, .. } => lock.lost(),
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> PublishError {
    PublishError::Io {
        path: path.display().to_string(),
        error: source,
    }
}
