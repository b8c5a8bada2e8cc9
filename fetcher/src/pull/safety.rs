//! The primitives that keep `stratum pull` inside its destination: name and
//! entry checks, descriptor-relative opens, and the error constructors that
//! name the namespace and destination paths (see the module header of
//! `pull`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, Stat, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use stratum_catalog::catalog::{Entry, ROOT_ID};
use stratum_catalog::namespace::Node;

use super::{Loc, PullOptions};
use crate::PullError;

pub(super) fn io_err(loc: Loc<'_>, op: impl Into<String>, e: Errno) -> PullError {
    PullError::Io {
        path: loc.path.to_owned(),
        dest: loc.dest.to_owned(),
        op: op.into(),
        source: e.into(),
    }
}

pub(super) fn invalid(loc: Loc<'_>, reason: impl Into<String>) -> PullError {
    PullError::Invalid {
        path: loc.path.to_owned(),
        dest: loc.dest.to_owned(),
        reason: reason.into(),
    }
}

pub(super) fn internal(loc: Loc<'_>, what: &str) -> PullError {
    invalid(loc, format!("internal error: {what}"))
}

pub(super) fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

pub(super) fn join_ns(parent: &str, name: &[u8]) -> String {
    if parent.ends_with('/') {
        format!("{parent}{}", lossy(name))
    } else {
        format!("{parent}/{}", lossy(name))
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(super) fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The namespace path of `node`, for messages: its catalog's mount path and
/// the names up from the entry. Best effort, never fails.
pub(super) fn ns_path_of(node: &Node) -> String {
    let cat = &node.catalog;
    let mut names = Vec::new();
    let mut e = node.entry.clone();
    let mut complete = false;
    for _ in 0..4096 {
        if e.id == ROOT_ID {
            complete = true;
            break;
        }
        names.push(std::mem::take(&mut e.name));
        match cat.get(e.parent) {
            Ok(Some(p)) => e = p,
            _ => break,
        }
    }
    let mut path = if complete {
        cat.path().to_owned()
    } else {
        "…".to_owned()
    };
    for n in names.iter().rev() {
        path = join_ns(&path, n);
    }
    path
}

/// Why `name` cannot be created in a directory, if it cannot.
pub(super) fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("the name is empty")
    } else if name == b"." || name == b".." {
        Err("'.' and '..' are not file names")
    } else if name.contains(&b'/') {
        Err("the name contains '/'")
    } else if name.contains(&0) {
        Err("the name contains a NUL byte")
    } else {
        Ok(())
    }
}

/// Checks that do not depend on the file type.
pub(super) fn check_entry(e: &Entry, opts: &PullOptions, loc: Loc<'_>) -> Result<(), PullError> {
    if e.mtime_ns >= 1_000_000_000 {
        return Err(invalid(
            loc,
            format!("mtime nanoseconds {} out of range", e.mtime_ns),
        ));
    }
    if opts.preserve_owner && (e.uid == u32::MAX || e.gid == u32::MAX) {
        return Err(invalid(
            loc,
            format!("owner {}:{} is not a valid uid:gid", e.uid, e.gid),
        ));
    }
    for (n, _) in &e.xattrs {
        if n.is_empty() || n.contains(&0) {
            return Err(invalid(loc, format!("invalid xattr name {:?}", lossy(n))));
        }
    }
    Ok(())
}

pub(super) fn times(e: &Entry) -> Timestamps {
    // mtime_ns < 1e9 was checked, so it fits any tv_nsec type.
    let t = Timespec {
        tv_sec: e.mtime,
        tv_nsec: e.mtime_ns as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

pub(super) fn owner(e: &Entry) -> (Option<Uid>, Option<Gid>) {
    // u32::MAX ("no change") was refused by check_entry.
    (Some(Uid::from_raw(e.uid)), Some(Gid::from_raw(e.gid)))
}

pub(super) fn open_dir(
    dirfd: impl AsFd,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(super) fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens (creating it if absent) the destination directory, which must be
/// empty and not a symlink.
pub(super) fn open_dest(dest: &Path) -> Result<OwnedFd, PullError> {
    let err = |reason: String| PullError::Destination {
        dest: dest.to_owned(),
        reason,
    };
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            rfs::mkdirat(CWD, dest, Mode::from_raw_mode(0o700))
                .map_err(|e| err(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(err(format!("cannot inspect it: {e}"))),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(err(
                "is a symbolic link; refusing to follow it (give the real path)".into(),
            ))
        }
        Ok(m) if !m.is_dir() => return Err(err("exists and is not a directory".into())),
        Ok(_) => {}
    }
    let fd = open_dir(CWD, dest).map_err(|e| err(format!("cannot open it as a directory: {e}")))?;
    let dir = rfs::Dir::read_from(&fd).map_err(|e| err(format!("cannot list it: {e}")))?;
    for ent in dir {
        let ent = ent.map_err(|e| err(format!("cannot list it: {e}")))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Err(err(format!(
                "is not empty (it holds {:?}); pull needs an absent or empty directory",
                lossy(n)
            )));
        }
    }
    Ok(fd)
}

/// Where to set xattrs.
#[derive(Clone, Copy)]
pub(super) enum XattrTarget<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// A path whose last component must not be followed (a symlink).
    NoFollow(&'a Path),
    /// A `/proc/self/fd/N` path of an `O_PATH` descriptor of a special file.
    ProcFd(&'a Path),
}
