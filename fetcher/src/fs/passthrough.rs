//! FUSE passthrough of files the node cache already holds (D48).
//!
//! A file whose content is one object, found in the node cache when the
//! file is opened, is opened in passthrough mode: the kernel reads (and
//! maps) the cache's decoded file itself, so none of its reads comes to
//! this process, and its pages are cached once, not once in the cache file
//! and again in the mount. A cold start reads mostly what the prefetch list
//! already brought in, so its reads stop being FUSE round trips.
//!
//! Trust is unchanged: the cache file was hashed to its id when it was
//! looked up for this open (as a read's lookup would), and it is handed to
//! the kernel only when no one but this process's user can write it (owned
//! by it, not writable by group or others): then changing its bytes later
//! takes the privileges that could change this process anyway. Any other
//! file, and every file of a kernel or user without passthrough (it needs
//! CAP_SYS_ADMIN), is read through FUSE as before.
//!
//! The kernel requires every open of an inode to be in the same mode (and
//! with the same backing file) while any is open, so the mode of an inode's
//! first open holds until its last release.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackingId, ReplyOpen};

/// How the open files of one inode are served.
struct Mode {
    /// `Some`: passthrough to this backing file; `None`: through FUSE.
    backing: Option<Arc<BackingId>>,
    opens: usize,
}

#[derive(Default)]
pub(super) struct Passthrough {
    enabled: AtomicBool,
    inodes: Mutex<HashMap<u64, Mode>>,
}

impl Passthrough {
    /// The kernel agreed to passthrough at `INIT`.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// An open of inode `ino` is being answered with `reply`: the backing
    /// file to pass its reads through to, if any. `file` gives the verified
    /// cache file of its content when the cache holds it (asked only when
    /// the inode has no open file yet). Every call is paired with a
    /// [`Passthrough::release`] of the same inode.
    pub fn open(
        &self,
        ino: u64,
        reply: &ReplyOpen,
        file: impl FnOnce() -> Option<File>,
    ) -> Option<Arc<BackingId>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(m) = self.lock().get_mut(&ino) {
            m.opens += 1;
            return m.backing.clone();
        }
        let backing =
            file()
                .filter(writable_only_by_us)
                .and_then(|f| match reply.open_backing(&f) {
                    Ok(id) => Some(Arc::new(id)),
                    Err(e) => {
                        // Not permitted (no CAP_SYS_ADMIN), or a cache on a
                        // stacked file system: FUSE reads from now on.
                        tracing::debug!("passthrough of inode {ino}: {e}; reads go through FUSE");
                        if e.raw_os_error() == Some(libc::EPERM) {
                            self.enabled.store(false, Ordering::Relaxed);
                        }
                        None
                    }
                });
        // A concurrent first open may have set the mode meanwhile: it wins.
        let mut inodes = self.lock();
        let m = inodes.entry(ino).or_insert(Mode { backing, opens: 0 });
        m.opens += 1;
        m.backing.clone()
    }

    /// An open file of inode `ino` was released.
    pub fn release(&self, ino: u64) {
        let mut inodes = self.lock();
        if let Some(m) = inodes.get_mut(&ino) {
            m.opens = m.opens.saturating_sub(1);
            if m.opens == 0 {
                // Dropping the last reference closes the backing id.
                inodes.remove(&ino);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Mode>> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether only this process's user can change the bytes of `f`.
fn writable_only_by_us(f: &File) -> bool {
    f.metadata()
        .is_ok_and(|md| md.uid() == rustix::process::geteuid().as_raw() && md.mode() & 0o022 == 0)
}
