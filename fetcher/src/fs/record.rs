//! `stratum mount --record FILE`: the files a real run opened, in first-open
//! order, as a prefetch list (FORMAT.md §5.6) to publish with the image.
//!
//! A mount learns the name of every inode it hands to the kernel (lookup
//! and readdirplus replies), so an opened inode's path below the mount root
//! is the chain of those names. The list is written atomically (temporary
//! file, fsync, rename) when the mount ends and whenever
//! [`Recorder::write`] is called (SIGUSR1 in `stratum mount`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use stratum_catalog::prefetch_list::{self, PrefetchList, MAX_PREFETCH_ENTRIES};

/// The opened files of one or more mounts (the layer mounts of a thin
/// image share one), and where to write them.
pub struct Recorder {
    file: PathBuf,
    state: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    order: Vec<String>,
    seen: HashSet<String>,
    /// Opens not recorded: the path was unknown or not a valid list path,
    /// or the list was full.
    missed: u64,
}

impl Recorder {
    /// A recorder that writes to `file` (nothing is written until
    /// [`Recorder::write`]).
    pub fn new(file: PathBuf) -> Self {
        Recorder {
            file,
            state: Mutex::new(Recorded::default()),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A file at `path` (below the mount root) was opened.
    pub(super) fn opened(&self, path: Option<Vec<u8>>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = path.and_then(|p| prefetch_list::normalize(&p).ok()) else {
            st.missed += 1;
            return;
        };
        if st.seen.contains(&p) {
            return;
        }
        if st.order.len() >= MAX_PREFETCH_ENTRIES {
            st.missed += 1;
            return;
        }
        st.seen.insert(p.clone());
        st.order.push(p);
    }

    /// Writes the list recorded so far, atomically; returns how many paths
    /// it holds.
    pub fn write(&self) -> std::io::Result<usize> {
        let (bytes, n, missed) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (PrefetchList::encode(&st.order), st.order.len(), st.missed)
        };
        if missed > 0 {
            tracing::info!("--record: {missed} opens were not recorded (unknown path, or over {MAX_PREFETCH_ENTRIES} files)");
        }
        let dir = match self.file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".stratum-record-")
            .tempfile_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.file).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(n)
    }
}

/// Inodes whose names a recording mount remembers at most (about 100 MB
/// at worst); a file below one it forgot is not recorded.
const MAX_NAMES: usize = 1_000_000;

/// The names a mount handed out: inode → (parent inode, name).
#[derive(Default)]
pub(super) struct Names(Mutex<HashMap<u64, (u64, Vec<u8>)>>);

impl Names {
    pub fn note(&self, parent: u64, name: &[u8], ino: u64) {
        if ino == 1 || name == b"." || name == b".." {
            return;
        }
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() < MAX_NAMES || names.contains_key(&ino) {
            names.insert(ino, (parent, name.to_vec()));
        }
    }

    /// The path of `ino` below the mount root, if every name on the way is
    /// known.
    pub fn path(&self, mut ino: u64) -> Option<Vec<u8>> {
        let names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut parts = Vec::new();
        while ino != 1 {
            let (parent, name) = names.get(&ino)?;
            parts.push(name.as_slice());
            ino = *parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        parts.reverse();
        Some(parts.join(&b'/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_first_opens_in_order_and_writes_a_list_publish_reads() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::default();
        names.note(1, b"usr", 2);
        names.note(2, b"bin", 3);
        names.note(3, b"python3", 4);
        names.note(1, b"etc", 5);
        names.note(5, b"passwd", 6);
        let r = Recorder::new(dir.path().join("list"));
        for ino in [4, 6, 4, 99] {
            r.opened(names.path(ino));
        }
        assert_eq!(r.write().unwrap(), 2);
        let text = std::fs::read(dir.path().join("list")).unwrap();
        assert_eq!(text, b"usr/bin/python3\netc/passwd\n");
        assert_eq!(PrefetchList::parse(&text).unwrap().paths.len(), 2);
        // No temporary file is left next to it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
