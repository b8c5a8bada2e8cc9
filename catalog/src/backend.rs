//! Storage backends: where a repository's files live.
//!
//! The trait is deliberately small — the operations a content-addressed
//! repository needs and an S3-style store can offer too. Paths are relative,
//! `/`-separated, as in [`crate::ObjectId::path`] and `.stratum/manifest`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result};

pub trait Backend: Send + Sync {
    /// Stores `bytes` at `path` unless something is there already; returns
    /// whether it wrote. The file appears whole or not at all (temp + rename);
    /// durability comes with the next [`Backend::sync`].
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool>;
    /// As [`Backend::put_if_absent`], streaming the bytes from `src` (for
    /// objects too large to hold in memory, such as big catalogs).
    fn put_reader_if_absent(&self, path: &str, src: &mut dyn std::io::Read) -> Result<bool>;
    /// The bytes at `path`, or `None` when absent.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>>;
    fn exists(&self, path: &str) -> Result<bool>;
    /// Every file path under `prefix` (a directory path like `data/`).
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes `path`; absent is not an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// Makes everything written so far durable: the barrier between the
    /// objects of a publish and its manifest.
    fn sync(&self) -> Result<()>;
    /// Atomically and durably replaces `path` (the manifest): readers see the
    /// old bytes or the new ones, never a mix, and after return a crash keeps
    /// the new ones.
    fn replace(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// Size and last-modification time of `path`, `None` when absent.
    /// Garbage collection deletes only objects older than its safety window.
    fn stat(&self, path: &str) -> Result<Option<(u64, std::time::SystemTime)>>;
}

/// A repository in a local directory, servable as-is by any web server.
pub struct LocalDir {
    root: PathBuf,
    tmp: PathBuf,
    /// Created on first write, so that readers never modify a repository.
    tmp_made: std::sync::OnceLock<()>,
    /// Object fan-out directories known to exist, to save a mkdir per object.
    made_dirs: Mutex<HashSet<PathBuf>>,
}

pub use crate::layout::TMP_DIR;

impl LocalDir {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        Ok(LocalDir {
            root,
            tmp,
            tmp_made: std::sync::OnceLock::new(),
            made_dirs: Mutex::new(HashSet::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Error::Path {
                path: path.to_owned(),
                reason: "not a clean relative repository path".into(),
            });
        }
        Ok(self.root.join(path))
    }

    fn ensure_parent(&self, full: &Path) -> Result<()> {
        let Some(parent) = full.parent() else {
            return Ok(());
        };
        let mut made = self.made_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if made.contains(parent) {
            return Ok(());
        }
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        made.insert(parent.to_owned());
        Ok(())
    }

    fn write_temp(&self, bytes: &[u8], durable: bool) -> Result<tempfile::TempPath> {
        if self.tmp_made.get().is_none() {
            fs::create_dir_all(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
            let _ = self.tmp_made.set(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&self.tmp)
            .map_err(|e| Error::io(&self.tmp, e))?;
        tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
        if durable {
            tmp.as_file()
                .sync_all()
                .map_err(|e| Error::io(tmp.path(), e))?;
        }
        // Objects are world-readable: the directory is served over HTTP.
        set_mode(tmp.path(), 0o644)?;
        Ok(tmp.into_temp_path())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

impl Backend for LocalDir {
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        let full = self.full(path)?;
        if full.exists() {
            return Ok(false);
        }
        self.ensure_parent(&full)?;
        let tmp = self.write_temp(bytes, false)?;
        // rename replaces silently; a concurrent writer of the same id wrote
        // the same bytes, so either copy is right.
        tmp.persist(&full).map_err(|e| Error::io(&full, e.error))?;
        Ok(true)
    }

    fn put_reader_if_absent(&self, path: &str, src: &mut dyn std::io::Read) -> Result<bool> {
        let full = self.full(path)?;
        if full.exists() {
            return Ok(false);
        }
        self.ensure_parent(&full)?;
        if self.tmp_made.get().is_none() {
            fs::create_dir_all(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
            let _ = self.tmp_made.set(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&self.tmp)
            .map_err(|e| Error::io(&self.tmp, e))?;
        std::io::copy(src, &mut tmp).map_err(|e| Error::io(tmp.path(), e))?;
        set_mode(tmp.path(), 0o644)?;
        tmp.persist(&full).map_err(|e| Error::io(&full, e.error))?;
        Ok(true)
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.full(path)?;
        match fs::read(&full) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let full = self.full(path)?;
        match fs::symlink_metadata(&full) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    fn stat(&self, path: &str) -> Result<Option<(u64, std::time::SystemTime)>> {
        let full = self.full(path)?;
        match fs::symlink_metadata(&full) {
            Ok(m) => Ok(Some((
                m.len(),
                m.modified().map_err(|e| Error::io(&full, e))?,
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.trim_end_matches('/');
        let base = self.full(prefix)?;
        let mut out = Vec::new();
        let mut stack = vec![(base, prefix.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(&dir, e))?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else { continue };
                let child = format!("{rel}/{name}");
                let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
                if ft.is_dir() {
                    stack.push((ent.path(), child));
                } else {
                    out.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path)?;
        match fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    fn sync(&self) -> Result<()> {
        // One syncfs for the whole publish instead of an fsync per object:
        // with thousands of small files, per-file fsync dominates the cost.
        let dir = File::open(&self.root).map_err(|e| Error::io(&self.root, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io(&self.root, e.into()))
    }

    fn replace(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let full = self.full(path)?;
        self.ensure_parent(&full)?;
        let tmp = self.write_temp(bytes, true)?;
        tmp.persist(&full).map_err(|e| Error::io(&full, e.error))?;
        if let Some(parent) = full.parent() {
            let d = OpenOptions::new()
                .read(true)
                .open(parent)
                .map_err(|e| Error::io(parent, e))?;
            d.sync_all().map_err(|e| Error::io(parent, e))?;
        }
        Ok(())
    }
}

/// The conformance suite lives here; [`crate::testing::conformance`] (feature
/// `testing`) runs it, with more checks, for other backends and crates.
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn local_dir_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalDir::open(dir.path()).unwrap();
        conformance(&b);
    }

    /// The behaviour every backend must show; the S3 backend runs it too.
    pub fn conformance(b: &dyn Backend) {
        assert!(!b.exists("data/ab/x").unwrap());
        assert_eq!(b.get("data/ab/x").unwrap(), None);
        assert!(b.put_if_absent("data/ab/x", b"one").unwrap());
        assert!(!b.put_if_absent("data/ab/x", b"two").unwrap());
        assert_eq!(b.get("data/ab/x").unwrap().unwrap(), b"one");
        assert!(b.put_if_absent("data/cd/y", b"y").unwrap());
        assert!(b
            .put_reader_if_absent("data/ef/z", &mut &b"zz"[..])
            .unwrap());
        assert!(!b
            .put_reader_if_absent("data/ef/z", &mut &b"other"[..])
            .unwrap());
        assert_eq!(b.get("data/ef/z").unwrap().unwrap(), b"zz");
        let (size, modified) = b.stat("data/ef/z").unwrap().unwrap();
        assert_eq!(size, 2);
        let age = std::time::SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(3600), "{age:?}");
        assert!(b.stat("data/ef/none").unwrap().is_none());
        b.delete("data/ef/z").unwrap();
        assert_eq!(b.list("data/").unwrap(), vec!["data/ab/x", "data/cd/y"]);
        b.delete("data/ab/x").unwrap();
        b.delete("data/ab/x").unwrap();
        assert!(!b.exists("data/ab/x").unwrap());
        b.replace(".stratum/manifest", b"m1").unwrap();
        b.replace(".stratum/manifest", b"m2").unwrap();
        assert_eq!(b.get(".stratum/manifest").unwrap().unwrap(), b"m2");
        b.sync().unwrap();
        assert!(b.get("../etc/passwd").is_err());
        assert!(b.get("/etc/passwd").is_err());
    }
}
