//! Where things live in a repository (docs/FORMAT.md §1, §2, §9.1): every
//! `.stratum/*` path, the object path rule, which paths a reader may be
//! served, and the writer lock of a repository directory.
//!
//! Paths are repository-relative, `/`-separated, as a [`Backend`] takes
//! them.
//!
//! [`Backend`]: crate::backend::Backend

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::{ObjectId, ObjectKind, Result};

/// The directory of the repository's metadata.
pub const META_DIR: &str = ".stratum";
/// The directory of the objects.
pub const DATA_DIR: &str = "data";
/// The signed manifest: the one mutable file a reader reads.
pub const MANIFEST_PATH: &str = ".stratum/manifest";
/// The repository's own copy of its public key, written once by `init`.
/// Readers that were given no key verify against it (which proves the
/// repository is consistent, not who signed it).
pub const PUBLIC_KEY_PATH: &str = ".stratum/public.pem";
/// The writer lock (§9.1): `flock` on this file in a directory, a lock
/// object ([`crate::lock`]) in a bucket.
pub const LOCK_PATH: &str = ".stratum/lock";
/// Present while a writer may have objects that are not yet durable (§9.1).
/// Found when taking the lock, it means the last writer died before its
/// barrier (e.g. power loss): objects it left may be incomplete on disk, so
/// the next writer verifies every object it would otherwise skip as present.
pub const DIRTY_PATH: &str = ".stratum/dirty";
/// Where temp files live: inside the repository (same filesystem, so rename
/// is atomic) but outside `data/`, so a half-written file is never at an
/// object's path.
pub const TMP_DIR: &str = ".stratum/tmp";
/// The base URLs nodes fetch the repository from (`stratum init --url`),
/// one per line.
pub const URLS_PATH: &str = ".stratum/urls";
/// The compaction state of the writer (`stratum compact`).
pub const COMPACTED_PATH: &str = ".stratum/compacted";

/// Path of an object relative to the repository root:
/// `data/<first 2 hex>/<remaining 62 hex><kind suffix>`.
pub fn object_path(id: &ObjectId, kind: ObjectKind) -> String {
    let hex = id.to_hex();
    format!("{DATA_DIR}/{}/{}{}", &hex[..2], &hex[2..], kind.suffix())
}

/// Inverse of [`object_path`]; strict.
pub fn parse_object_path(path: &str) -> Result<(ObjectId, ObjectKind)> {
    let bad = || crate::Error::InvalidObjectPath(path.to_owned());
    let rest = path
        .strip_prefix(DATA_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad)?;
    let (dir, name) = rest.split_once('/').ok_or_else(bad)?;
    // A name that is not ASCII would make `split_at` panic inside a
    // character (names come from requests and directory listings).
    if dir.len() != 2 || name.len() < 62 || !name.is_char_boundary(62) {
        return Err(bad());
    }
    let (tail, suffix) = name.split_at(62);
    let kind = ObjectKind::from_suffix(suffix).ok_or_else(bad)?;
    let id = ObjectId::from_hex(&format!("{dir}{tail}")).map_err(|_| bad())?;
    Ok((id, kind))
}

/// What a reader may be served of a repository (§1, §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderPath {
    /// The manifest or the public key: replaced in place, to revalidate.
    Mutable,
    /// An object: immutable and content-addressed.
    Object,
}

/// The class of a repository-relative path given as its components, or
/// `None` when it is not a path the format defines for readers: the
/// manifest, the public key, and object paths (parsed as strictly as a
/// reader parses them). Writer files (`.stratum/lock`, `dirty`, `tmp/`,
/// `urls`, `compacted`) and anything else are not.
pub fn reader_path(components: &[&str]) -> Option<ReaderPath> {
    match components {
        // MANIFEST_PATH and PUBLIC_KEY_PATH.
        [META_DIR, "manifest" | "public.pem"] => Some(ReaderPath::Mutable),
        [DATA_DIR, dir, name] => parse_object_path(&format!("{DATA_DIR}/{dir}/{name}"))
            .ok()
            .map(|_| ReaderPath::Object),
        _ => None,
    }
}

/// The writer lock of a repository directory (§9.1), held until dropped
/// or the process dies.
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serializes the writers of the repository directory `dir` (publisher,
/// gc, `replicate` into a directory): an exclusive `flock` on
/// `DIR/.stratum/lock`, waiting when another process holds it (`on_wait`
/// is called once, with the lock file, before waiting, which is also said
/// in a [`crate::NOTICE`] event). Leftover temp files of a killed writer
/// (`.stratum/tmp/`) are removed once it is held.
pub fn lock_dir(dir: &Path, on_wait: &mut dyn FnMut(&Path)) -> std::io::Result<DirLock> {
    use rustix::fs::{flock, FlockOperation};
    std::fs::create_dir_all(dir.join(META_DIR))?;
    let path = dir.join(LOCK_PATH);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        on_wait(&path);
        tracing::info!(
            target: crate::NOTICE,
            "waiting for the repository lock ({}) held by another stratum process…",
            path.display()
        );
        flock(&file, FlockOperation::LockExclusive)?;
    }
    if let Ok(rd) = std::fs::read_dir(dir.join(TMP_DIR)) {
        for ent in rd.flatten() {
            let _ = std::fs::remove_file(ent.path());
        }
    }
    Ok(DirLock { _file: file, path })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reader_paths() {
        let id = ObjectId::of(b"x");
        let p = object_path(&id, ObjectKind::Catalog);
        let comps: Vec<&str> = p.split('/').collect();
        assert_eq!(reader_path(&comps), Some(ReaderPath::Object));
        assert_eq!(
            reader_path(&[".stratum", "manifest"]),
            Some(ReaderPath::Mutable)
        );
        assert_eq!(
            reader_path(&[".stratum", "public.pem"]),
            Some(ReaderPath::Mutable)
        );
        for bad in [
            &[".stratum", "lock"][..],
            &[".stratum", "urls"],
            &[".stratum", "tmp", "x"],
            &["data", "ab"],
            &["key.pem"],
        ] {
            assert_eq!(reader_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lock_clears_tmp() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(TMP_DIR)).unwrap();
        std::fs::write(d.path().join(TMP_DIR).join("left"), b"x").unwrap();
        let lock = lock_dir(d.path(), &mut |_| panic!("not held")).unwrap();
        assert_eq!(lock.path(), d.path().join(LOCK_PATH));
        assert!(!d.path().join(TMP_DIR).join("left").exists());
    }
}
