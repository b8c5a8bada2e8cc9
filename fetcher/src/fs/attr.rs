//! The attributes the kernel gets for a catalog entry, and for a name that
//! is not there.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseType, INodeNo};
use stratum_catalog::catalog::{Entry, FileType};

/// The attributes of entry `e` shown as inode `ino`, owned by `owner`
/// instead of the entry's owner when given.
pub(super) fn of(ino: u64, e: &Entry, owner: Option<(u32, u32)>) -> FileAttr {
    let kind = match e.file_type() {
        Some(FileType::Directory) => FuseType::Directory,
        Some(FileType::Symlink) => FuseType::Symlink,
        Some(FileType::CharDevice) => FuseType::CharDevice,
        Some(FileType::BlockDevice) => FuseType::BlockDevice,
        Some(FileType::Fifo) => FuseType::NamedPipe,
        Some(FileType::Socket) => FuseType::Socket,
        _ => FuseType::RegularFile,
    };
    let mtime = if e.mtime >= 0 {
        UNIX_EPOCH + Duration::new(e.mtime as u64, e.mtime_ns)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(e.mtime.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(e.mtime_ns))))
            .unwrap_or(UNIX_EPOCH)
    };
    let (uid, gid) = owner.unwrap_or((e.uid, e.gid));
    FileAttr {
        ino: INodeNo(ino),
        size: e.size,
        blocks: e.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm: (e.mode & 0o7777) as u16,
        nlink: if e.is_dir() { 2 } else { e.nlink.max(1) },
        uid,
        gid,
        rdev: e.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// A negative entry: inode 0, which the kernel keeps for the reply's TTL
/// as "no such name" (an ENOENT error it would not keep).
pub(super) fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FuseType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}
