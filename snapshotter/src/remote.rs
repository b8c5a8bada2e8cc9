//! What the repository mount can serve: the layer trees
//! `MOUNT/layers/ab/<diff_id hex>` of the live whole-repository mount, and
//! the chain IDs that name stacks of them.
//!
//! containerd names a layer stack by its chain ID (OCI image spec:
//! `chain(L0) = diff_id(L0)`, `chain(L0…Ln) = sha256(chain(L0…Ln-1) + " " +
//! diff_id(Ln))`). A `Prepare` carries the target chain ID and the parent
//! snapshot, whose chain is known; the layer's diff_id is the one published
//! diff_id `d` with `sha256(parent_chain + " " + d) == target`. The set of
//! published diff_ids is read from the mount's `/layers` partitions (32
//! at once; first in the background when the snapshotter starts) and
//! rebuilt when the mount moves to a new revision (the `revision` of its
//! status attribute), so a lookup costs hashing, not I/O. A base layer
//! needs no index: its chain ID is its diff_id, looked up directly.
//!
//! Every access to the mount runs on its own thread with a deadline
//! ([`bounded`]): a stuck mount gives an error, never a hung gRPC call.
//!
//! # Starting an image's prefetch
//!
//! containerd's CRI plugin labels every layer `Prepare` with the image's
//! manifest digest (`containerd.io/snapshot/cri.manifest-digest`). The first
//! time one is seen, [`Repository::warm`] looks up the image's flat tree
//! `MOUNT/flat/ab/<hex>` on a thread of its own: the mount starts the
//! image's published prefetch list when a lookup first enters that tree, so
//! the files the container will open are on their way while containerd
//! is still preparing snapshots and creating the container. The files are
//! then read through the layer trees; they are the same content objects,
//! found in the node cache.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long one access to the mount may take.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Without a readable revision, how long a listing of `/layers` is trusted.
const UNVERSIONED_TTL: Duration = Duration::from_secs(5);

/// The extended attribute with the live mount's status (JSON, `revision`).
const STATUS_XATTR: &str = "user.stratum.status";

/// The label with the digest of the image manifest a layer belongs to, set
/// by containerd's CRI plugin.
pub const MANIFEST_LABEL: &str = "containerd.io/snapshot/cri.manifest-digest";

/// Manifest digests remembered as warmed at most (then forgotten at once).
const MAX_WARMED: usize = 4096;

/// `/layers` partitions listed at once.
const LIST_THREADS: usize = 32;

struct Cached {
    revision: Option<u64>,
    at: Instant,
    diff_ids: Arc<HashSet<String>>,
}

/// The layer trees of one repository mount.
pub struct Repository {
    mount: PathBuf,
    cache: Mutex<Option<Cached>>,
    warmed: Mutex<HashSet<String>>,
}

/// Runs `f` on its own thread and waits at most `timeout` for it; `what`
/// names the path in the timeout error. A thread stuck in the kernel is
/// left behind (it cannot be cancelled), the caller gets an error.
pub fn bounded<T: Send + 'static>(
    what: &Path,
    timeout: Duration,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stratum-snap-io".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(Error::io(what))?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(Error::TreeTimeout {
            path: what.to_path_buf(),
            secs: timeout.as_secs(),
        }),
    }
}

/// `sha256:<hex>` → `<hex>`, checking the form.
fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// The chain ID of `parent_chain` (None for the base) plus `diff_id`.
pub fn chain_id(parent_chain: Option<&str>, diff_id: &str) -> String {
    match parent_chain {
        None => diff_id.to_string(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(p.as_bytes());
            h.update(b" ");
            h.update(diff_id.as_bytes());
            format!("sha256:{}", hex::encode(h.finalize()))
        }
    }
}

impl Repository {
    pub fn new(mount: PathBuf) -> Repository {
        Repository {
            mount,
            cache: Mutex::new(None),
            warmed: Mutex::new(HashSet::new()),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// `MOUNT/layers/ab/<hex>` of `diff_id` (`sha256:<hex>`).
    pub fn tree(&self, diff_id: &str) -> Result<PathBuf> {
        let hex = hex_of(diff_id)
            .ok_or_else(|| Error::InvalidArgument(format!("not a sha256 digest: {diff_id}")))?;
        Ok(self.mount.join("layers").join(&hex[..2]).join(hex))
    }

    /// Checks, within [`MOUNT_TIMEOUT`], that the mount serves the layer
    /// tree `path` (a directory that can be listed).
    pub fn check_tree(&self, path: &Path) -> Result<()> {
        let p = path.to_path_buf();
        bounded(path, MOUNT_TIMEOUT, move || {
            let gone = |source| Error::TreeGone {
                path: p.clone(),
                source,
            };
            let md = std::fs::metadata(&p).map_err(gone)?;
            if !md.is_dir() {
                return Err(gone(std::io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            std::fs::read_dir(&p)
                .map_err(gone)?
                .next()
                .transpose()
                .map_err(gone)?;
            Ok(())
        })
    }

    /// The mount's current revision, if its status attribute says.
    fn revision(mount: &Path) -> Option<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = rustix::fs::getxattr(mount, STATUS_XATTR, &mut buf).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).ok()?;
        v.get("revision")?.as_u64()
    }

    /// Lists `/layers/*/*` of the mount: the published diff_ids. Each
    /// partition is a catalog the mount may have to fetch, so up to
    /// [`LIST_THREADS`] are listed at once: a cold node behind a 10 ms link
    /// pays ~256/32 round trips for a full repository, not 256.
    fn list(mount: &Path) -> Result<HashSet<String>> {
        let layers = mount.join("layers");
        let mut parts = Vec::new();
        for part in std::fs::read_dir(&layers).map_err(Error::io(&layers))? {
            parts.push(part.map_err(Error::io(&layers))?.path());
        }
        let queue = Mutex::new(parts.into_iter());
        let out = Mutex::new(HashSet::new());
        let failed = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..LIST_THREADS {
                s.spawn(|| loop {
                    let Some(path) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                        return;
                    };
                    match Repository::list_partition(&path) {
                        Ok(found) => out.lock().unwrap_or_else(|p| p.into_inner()).extend(found),
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(out.into_inner().unwrap_or_else(|p| p.into_inner())),
        }
    }

    fn list_partition(path: &Path) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path).map_err(Error::io(path))? {
            let e = e.map_err(Error::io(path))?;
            if let Some(name) = e.file_name().to_str() {
                let d = format!("sha256:{name}");
                if hex_of(&d).is_some() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Builds the index of published diff_ids in the background (at
    /// start), so the first pull does not wait for the listing.
    pub fn warm_index(self: &Arc<Self>) {
        let repo = self.clone();
        let spawned = std::thread::Builder::new()
            .name("stratum-snap-index".into())
            .spawn(move || {
                if let Err(e) = repo.diff_ids() {
                    tracing::warn!(error = %e, "indexing the repository's layer trees");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "indexing the repository's layer trees");
        }
    }

    /// The published diff_ids, listed again when the revision moved.
    pub fn diff_ids(&self) -> Result<Arc<HashSet<String>>> {
        let mount = self.mount.clone();
        let revision = bounded(&self.mount, MOUNT_TIMEOUT, move || {
            Ok(Repository::revision(&mount))
        })?;
        {
            let cache = self
                .cache
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            if let Some(c) = cache.as_ref() {
                let fresh = match (revision, c.revision) {
                    (Some(now), Some(then)) => now == then,
                    _ => c.at.elapsed() < UNVERSIONED_TTL,
                };
                if fresh {
                    return Ok(c.diff_ids.clone());
                }
            }
        }
        let mount = self.mount.clone();
        let set = Arc::new(bounded(&self.mount, MOUNT_TIMEOUT * 3, move || {
            Repository::list(&mount)
        })?);
        tracing::info!(
            revision,
            layers = set.len(),
            "indexed the repository's layer trees"
        );
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?;
        *cache = Some(Cached {
            revision,
            at: Instant::now(),
            diff_ids: set.clone(),
        });
        Ok(set)
    }

    /// `MOUNT/flat/ab/<hex>` of a manifest digest (`sha256:<hex>`).
    pub fn flat_tree(&self, manifest_digest: &str) -> Option<PathBuf> {
        let hex = hex_of(manifest_digest)?;
        Some(self.mount.join("flat").join(&hex[..2]).join(hex))
    }

    /// Enters the flat tree of `manifest_digest` once, in the background,
    /// so that the mount starts that image's prefetch (module header).
    /// Never waits and never fails: an image without a flat tree or a list
    /// costs one lookup. Returns whether a lookup was started.
    pub fn warm(&self, manifest_digest: &str) -> bool {
        let Some(path) = self.flat_tree(manifest_digest) else {
            return false;
        };
        {
            let mut warmed = self.warmed.lock().unwrap_or_else(|p| p.into_inner());
            if warmed.contains(manifest_digest) {
                return false;
            }
            if warmed.len() >= MAX_WARMED {
                warmed.clear();
            }
            warmed.insert(manifest_digest.to_string());
        }
        let spawned = std::thread::Builder::new()
            .name("stratum-snap-warm".into())
            .spawn(move || match std::fs::symlink_metadata(&path) {
                Ok(_) => tracing::debug!(path = %path.display(), "entered the image's flat tree"),
                Err(e) => tracing::debug!(path = %path.display(), "no flat tree to warm: {e}"),
            });
        spawned.is_ok()
    }

    /// The diff_id of the layer that makes `parent_chain` (None: no
    /// parent) into `target`, if the repository publishes it.
    pub fn find(&self, parent_chain: Option<&str>, target: &str) -> Result<Option<String>> {
        if hex_of(target).is_none() {
            return Ok(None);
        }
        if parent_chain.is_none() {
            // A base layer's chain ID is its diff_id: one lookup, no index.
            let tree = self.tree(target)?;
            let t = tree.clone();
            let found = bounded(&tree, MOUNT_TIMEOUT, move || {
                Ok(std::fs::symlink_metadata(&t).is_ok_and(|m| m.is_dir()))
            })?;
            return Ok(found.then(|| target.to_string()));
        }
        let set = self.diff_ids()?;
        Ok(match parent_chain {
            None => set.contains(target).then(|| target.to_string()),
            Some(_) => set
                .iter()
                .find(|d| chain_id(parent_chain, d) == target)
                .cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(None, &a), a);
        let mut h = Sha256::new();
        h.update(format!("{a} {b}").as_bytes());
        assert_eq!(
            chain_id(Some(&a), &b),
            format!("sha256:{}", hex::encode(h.finalize()))
        );
    }

    #[test]
    fn an_image_is_warmed_once_and_only_by_a_valid_digest() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new(dir.path().to_path_buf());
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            repo.flat_tree(&d).unwrap(),
            dir.path().join("flat").join("ab").join("ab".repeat(32))
        );
        assert!(repo.warm(&d));
        assert!(
            !repo.warm(&d),
            "a second Prepare of the image starts nothing"
        );
        assert!(!repo.warm("sha256:../../etc"));
        assert!(!repo.warm(&format!("sha256:{}/x", "ab".repeat(32))));
    }

    #[test]
    fn digests_are_checked() {
        assert!(hex_of("sha256:abc").is_none());
        assert!(hex_of(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(hex_of(&format!("sha256:{}", "0".repeat(64))).is_some());
    }
}
