//! Eager materialization (`stratum pull`): writes a subtree of the
//! repository namespace into a local directory, for nodes without FUSE.
//!
//! # Never writing outside the destination
//!
//! The catalog is hostile input and the destination may be tampered with
//! while we write, so:
//!
//! - every name is checked first: empty, `.`, `..`, names with `/` or NUL are
//!   refused ([`PullError::UnsafeName`]);
//! - everything is created with `*at` system calls relative to directory
//!   descriptors this code opened itself with `O_DIRECTORY | O_NOFOLLOW`, and
//!   every file with `O_CREAT | O_EXCL | O_NOFOLLOW`: an existing name is an
//!   error, a symlink is never followed;
//! - metadata goes through the descriptor of the object itself (`fchown`,
//!   `fchmod`, `futimens`, `fsetxattr`) or, for symlinks and special files,
//!   through calls that do not follow symlinks (`fchownat(AT_SYMLINK_NOFOLLOW
//!   or AT_EMPTY_PATH)`, `utimensat(AT_SYMLINK_NOFOLLOW)`, `lsetxattr` on
//!   `/proc/self/fd/<dir>/<name>`, and `chmod` on `/proc/self/fd/<O_PATH fd>`
//!   after checking the file type: Linux has no race-free `lchmod`);
//! - directories re-opened by name (see below) and hardlink targets are
//!   checked to be the same inode that was created.
//!
//! # Walk
//!
//! Iterative and pre-order for creation, post-order for directory metadata:
//! a directory is created `0700` (so that it can be filled whatever its final
//! mode), and gets its owner, xattrs, mode and mtime only once all of its
//! children are written. At most [`FD_WINDOW`] directory descriptors of the
//! current path are kept open; deeper ancestors are closed and re-opened by
//! name (component by component, `O_NOFOLLOW`, identity checked) when the
//! walk returns to them, so a tree of any depth needs neither stack nor more
//! than a bounded number of descriptors.
//!
//! # Metadata order
//!
//! content → owner → xattrs → mode → times. `chown` clears setuid/setgid
//! and `security.capability`, and writing content clears them too, so mode
//! and xattrs come after both; times come last.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat, Timespec, Timestamps, XattrFlags, CWD};
use rustix::io::Errno;
use rustix::process::{geteuid, Gid, Uid};
use stratum_catalog::catalog::{Catalog, Data, Entry, FileType, ROOT_ID};
use stratum_catalog::namespace::{CatalogLoader, Namespace, Node};

use crate::{ObjectSource, PullError};

/// Directory descriptors kept open along the current path (plus the
/// destination's own, which is always open).
const FD_WINDOW: usize = 64;

const S_IXUSR: u32 = 0o100;
const SETID_BITS: u32 = 0o6000;

/// How [`materialize`] treats what only root can reproduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullOptions {
    /// Give every file the uid/gid of its catalog entry (`lchown`). Default:
    /// true when running as root (effective uid 0). When false, files belong
    /// to the user running the pull; if that user is root, setuid/setgid bits
    /// of non-directories are then dropped (and reported in
    /// [`PullStats::skipped`]) rather than creating root-owned setuid files
    /// the image never had.
    pub preserve_owner: bool,
    /// Create character and block devices (`mknod`). Default: true when
    /// running as root. When false they are reported in
    /// [`PullStats::skipped`], except overlayfs whiteouts (character device
    /// 0:0), which Linux ≥ 5.8 lets anyone create: those are attempted and
    /// reported only if that fails.
    pub devices: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        let root = geteuid().is_root();
        PullOptions {
            preserve_owner: root,
            devices: root,
        }
    }
}

/// What [`materialize`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Regular files created (each hardlinked inode once).
    pub files: u64,
    /// Directories, including the destination itself.
    pub dirs: u64,
    pub symlinks: u64,
    /// Extra names linked to an inode already created (all file types).
    pub hardlinks: u64,
    /// Special files created: character and block devices, whiteouts, fifos.
    pub devices: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// What could not be reproduced, one line each: `<namespace path>: <why>`
    /// (device nodes when not root, sockets, privileged xattrs when not
    /// root, dropped setuid bits).
    pub skipped: Vec<String>,
}

/// Materializes the subtree at `node` (a directory) into `dest`.
///
/// `dest` must not exist (its parent must) or be an empty directory; it is
/// never followed if it is a symlink. It receives the metadata of `node`
/// itself. `objects` provides the verified bytes of content objects;
/// `progress` is called with the number of content bytes written so far
/// after each write.
///
/// Nothing is written outside `dest`, whatever the catalogs hold. On error,
/// `dest` keeps what was written until then (see [`PullError`]).
pub fn materialize<L: CatalogLoader>(
    ns: &Namespace<L>,
    node: &Node,
    objects: &dyn ObjectSource,
    dest: &Path,
    opts: &PullOptions,
    progress: &dyn Fn(u64),
) -> Result<PullStats, PullError> {
    run(ns, node, objects, dest, opts, progress, geteuid().is_root())
}

/// [`materialize`] with the privilege level given rather than asked, so that
/// tests running as root can exercise the unprivileged policies.
pub(crate) fn run<L: CatalogLoader>(
    ns: &Namespace<L>,
    node: &Node,
    objects: &dyn ObjectSource,
    dest: &Path,
    opts: &PullOptions,
    progress: &dyn Fn(u64),
    root_user: bool,
) -> Result<PullStats, PullError> {
    let top_path = ns_path_of(node);
    let loc = Loc {
        path: &top_path,
        dest,
    };
    if !node.entry.is_dir() {
        return Err(invalid(
            loc,
            "not a directory: only a directory can be pulled (resolve symlinks first)",
        ));
    }
    check_entry(&node.entry, opts, loc)?;
    let fd = open_dest(dest)?;
    let st = rfs::fstat(&fd).map_err(|e| io_err(loc, "fstat", e))?;
    let children = ns.children(node).map_err(|source| PullError::Catalog {
        path: top_path.clone(),
        source: Box::new(source),
    })?;
    tracing::debug!(path = %top_path, dest = %dest.display(), "pull starts");
    let mut stack = vec![Frame {
        name: OsString::new(),
        ns_path: top_path,
        dest_path: dest.to_owned(),
        fd: Some(fd),
        ident: ident(&st),
        entry: node.entry.clone(),
        catalog: node.catalog.clone(),
        inst: 0,
        children: children.into_iter(),
    }];
    let mut p = Puller {
        ns,
        objects,
        opts,
        progress,
        root_user,
        stats: PullStats::default(),
        links: HashMap::new(),
        deferred: Vec::new(),
        next_inst: 0,
    };
    p.walk(&mut stack)?;
    tracing::debug!(dest = %dest.display(), stats = ?p.stats, "pull done");
    Ok(p.stats)
}

/// One directory on the current path of the walk.
struct Frame {
    /// Its name in its parent (empty for the destination).
    name: OsString,
    ns_path: String,
    dest_path: PathBuf,
    /// Open unless closed to bound the number of descriptors.
    fd: Option<OwnedFd>,
    /// (st_dev, st_ino) when created, to check re-opens.
    ident: (u64, u64),
    entry: Entry,
    catalog: Rc<Catalog>,
    /// Which mount of a catalog this directory belongs to: hardlink groups
    /// are per catalog, and crossing into a nested catalog starts a new one.
    inst: u64,
    children: std::vec::IntoIter<Node>,
}

/// The first entry of a hardlink group, which later members link to.
enum Link {
    Made(LinkTarget),
    /// The first member could not be created (device when not root, socket).
    Skipped,
}

struct LinkTarget {
    /// Directory components from the destination down to its parent.
    dir: Vec<OsString>,
    name: OsString,
    ns_path: String,
    ident: (u64, u64),
}

/// A directory whose final mode denies its owner search permission, when
/// not root: applied at the very end (children first), so that it does not
/// block later walks through it.
struct Deferred {
    components: Vec<OsString>,
    mode: u32,
    ns_path: String,
    dest_path: PathBuf,
    ident: (u64, u64),
}

struct Puller<'a, L> {
    ns: &'a Namespace<L>,
    objects: &'a dyn ObjectSource,
    opts: &'a PullOptions,
    progress: &'a dyn Fn(u64),
    root_user: bool,
    stats: PullStats,
    links: HashMap<(u64, i64), Link>,
    deferred: Vec<Deferred>,
    next_inst: u64,
}

/// The namespace and destination paths an error or a skip is about.
#[derive(Clone, Copy)]
struct Loc<'a> {
    path: &'a str,
    dest: &'a Path,
}

fn io_err(loc: Loc<'_>, op: impl Into<String>, e: Errno) -> PullError {
    PullError::Io {
        path: loc.path.to_owned(),
        dest: loc.dest.to_owned(),
        op: op.into(),
        source: e.into(),
    }
}

fn invalid(loc: Loc<'_>, reason: impl Into<String>) -> PullError {
    PullError::Invalid {
        path: loc.path.to_owned(),
        dest: loc.dest.to_owned(),
        reason: reason.into(),
    }
}

fn internal(loc: Loc<'_>, what: &str) -> PullError {
    invalid(loc, format!("internal error: {what}"))
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn join_ns(parent: &str, name: &[u8]) -> String {
    if parent.ends_with('/') {
        format!("{parent}{}", lossy(name))
    } else {
        format!("{parent}/{}", lossy(name))
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The namespace path of `node`, for messages: its catalog's mount path and
/// the names up from the entry. Best effort, never fails.
fn ns_path_of(node: &Node) -> String {
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
fn check_name(name: &[u8]) -> Result<(), &'static str> {
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
fn check_entry(e: &Entry, opts: &PullOptions, loc: Loc<'_>) -> Result<(), PullError> {
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

fn times(e: &Entry) -> Timestamps {
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

fn owner(e: &Entry) -> (Option<Uid>, Option<Gid>) {
    // u32::MAX ("no change") was refused by check_entry.
    (Some(Uid::from_raw(e.uid)), Some(Gid::from_raw(e.gid)))
}

fn open_dir(dirfd: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens (creating it if absent) the destination directory, which must be
/// empty and not a symlink.
fn open_dest(dest: &Path) -> Result<OwnedFd, PullError> {
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
enum XattrTarget<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// A path whose last component must not be followed (a symlink).
    NoFollow(&'a Path),
    /// A `/proc/self/fd/N` path of an `O_PATH` descriptor of a special file.
    ProcFd(&'a Path),
}

impl<L: CatalogLoader> Puller<'_, L> {
    fn skip(&mut self, loc: Loc<'_>, why: impl std::fmt::Display) {
        tracing::debug!(path = loc.path, "not reproduced: {why}");
        self.stats.skipped.push(format!("{}: {why}", loc.path));
    }

    fn walk(&mut self, stack: &mut Vec<Frame>) -> Result<(), PullError> {
        loop {
            let Some(top) = stack.len().checked_sub(1) else {
                return Ok(());
            };
            match stack[top].children.next() {
                Some(node) => {
                    self.ensure_open(stack, top)?;
                    if let Some(frame) = self.child(stack, node)? {
                        stack.push(frame);
                        let n = top + 1;
                        if n > FD_WINDOW {
                            stack[n - FD_WINDOW].fd = None;
                        }
                    }
                }
                None => {
                    self.ensure_open(stack, top)?;
                    let Some(frame) = stack.pop() else {
                        return Ok(());
                    };
                    if stack.is_empty() {
                        self.apply_deferred(&frame)?;
                    }
                    self.finish_dir(stack, &frame)?;
                }
            }
        }
    }

    /// Re-opens the descriptor of `stack[idx]` if it was closed, walking by
    /// name from the nearest open ancestor, and keeps the last `FD_WINDOW`
    /// re-opened ones.
    fn ensure_open(&self, stack: &mut [Frame], idx: usize) -> Result<(), PullError> {
        if stack.get(idx).is_some_and(|f| f.fd.is_some()) {
            return Ok(());
        }
        let Some(base) = (0..idx).rev().find(|&k| stack[k].fd.is_some()) else {
            let f = &stack[idx];
            return Err(internal(
                Loc {
                    path: &f.ns_path,
                    dest: &f.dest_path,
                },
                "no open ancestor",
            ));
        };
        let keep_from = idx.saturating_sub(FD_WINDOW - 1);
        let mut tmp: Option<OwnedFd> = None;
        for j in base + 1..=idx {
            let opened = {
                let loc = Loc {
                    path: &stack[j].ns_path,
                    dest: &stack[j].dest_path,
                };
                let parent = match (&tmp, &stack[j - 1].fd) {
                    (Some(t), _) => t.as_fd(),
                    (None, Some(f)) => f.as_fd(),
                    (None, None) => return Err(internal(loc, "lost a directory descriptor")),
                };
                let fd = open_dir(parent, &stack[j].name)
                    .map_err(|e| io_err(loc, "re-opening the directory", e))?;
                let st = rfs::fstat(&fd).map_err(|e| io_err(loc, "fstat", e))?;
                if ident(&st) != stack[j].ident {
                    return Err(invalid(loc, "the directory was replaced during the pull"));
                }
                fd
            };
            if j >= keep_from {
                stack[j].fd = Some(opened);
                tmp = None;
            } else {
                tmp = Some(opened);
            }
        }
        Ok(())
    }

    /// Creates one child of the directory on top of the stack; returns the
    /// frame to push if it is a directory.
    fn child(&mut self, stack: &[Frame], node: Node) -> Result<Option<Frame>, PullError> {
        let Some(parent) = stack.last() else {
            return Ok(None);
        };
        let name_bytes = node.entry.name.as_slice();
        if let Err(reason) = check_name(name_bytes) {
            return Err(PullError::UnsafeName {
                parent: parent.ns_path.clone(),
                name: format!("{:?}", lossy(name_bytes)),
                dest: parent.dest_path.clone(),
                reason: reason.to_owned(),
            });
        }
        let name = OsStr::from_bytes(name_bytes);
        let ns_path = join_ns(&parent.ns_path, name_bytes);
        let dest_path = parent.dest_path.join(name);
        let loc = Loc {
            path: &ns_path,
            dest: &dest_path,
        };
        let Some(dfd) = parent.fd.as_ref().map(|f| f.as_fd()) else {
            return Err(internal(loc, "parent directory not open"));
        };
        let e = &node.entry;
        let Some(ft) = e.file_type() else {
            return Err(invalid(
                loc,
                format!("unknown file type in mode {:o}", e.mode),
            ));
        };
        check_entry(e, self.opts, loc)?;

        let group = if e.hardlink != 0 {
            if ft == FileType::Directory {
                return Err(invalid(loc, "a directory cannot be in a hardlink group"));
            }
            let key = (parent.inst, e.hardlink);
            match self.links.get(&key) {
                Some(Link::Made(t)) => {
                    self.link(stack, t, dfd, name, loc)?;
                    self.stats.hardlinks += 1;
                    return Ok(None);
                }
                Some(Link::Skipped) => {
                    self.skip(loc, "hardlink to an entry that could not be created");
                    return Ok(None);
                }
                None => Some(key),
            }
        } else {
            None
        };

        let made = match ft {
            FileType::Directory => {
                let frame = self.directory(parent, dfd, node, ns_path, dest_path)?;
                return Ok(Some(frame));
            }
            FileType::Regular => Some(self.regular(dfd, name, e, loc)?),
            FileType::Symlink => Some(self.symlink(dfd, name, e, loc)?),
            FileType::Fifo => Some(self.special(dfd, name, e, ft, loc)?),
            FileType::CharDevice | FileType::BlockDevice => {
                let (major, minor) = e.device();
                let kind = if ft == FileType::CharDevice {
                    "character"
                } else {
                    "block"
                };
                if self.opts.devices {
                    Some(self.special(dfd, name, e, ft, loc)?)
                } else if e.is_whiteout() {
                    // Unprivileged whiteouts are allowed since Linux 5.8.
                    match self.special(dfd, name, e, ft, loc) {
                        Ok(made) => Some(made),
                        Err(PullError::Io { source, .. })
                            if matches!(
                                source.raw_os_error(),
                                Some(c) if c == Errno::PERM.raw_os_error()
                            ) =>
                        {
                            self.skip(
                                loc,
                                format!("whiteout (character device 0:0) not created: {source}"),
                            );
                            None
                        }
                        Err(err) => return Err(err),
                    }
                } else {
                    self.skip(
                        loc,
                        format!("{kind} device {major}:{minor} not created (devices need root)"),
                    );
                    None
                }
            }
            FileType::Socket => {
                self.skip(loc, "sockets are not reproduced");
                None
            }
        };
        if let Some(key) = group {
            let link = match made {
                Some(ident) => Link::Made(LinkTarget {
                    dir: stack.iter().skip(1).map(|f| f.name.clone()).collect(),
                    name: name.to_owned(),
                    ns_path: ns_path.clone(),
                    ident,
                }),
                None => Link::Skipped,
            };
            self.links.insert(key, link);
        }
        Ok(None)
    }

    /// Links `name` in `dfd` to the first member of its hardlink group.
    fn link(
        &self,
        stack: &[Frame],
        t: &LinkTarget,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        loc: Loc<'_>,
    ) -> Result<(), PullError> {
        // Start from the deepest open directory on the path to the target.
        let mut common = 0;
        while common < t.dir.len()
            && common + 1 < stack.len()
            && stack[common + 1].name == t.dir[common]
        {
            common += 1;
        }
        let Some(base) = (0..=common)
            .rev()
            .find(|&k| stack.get(k).is_some_and(|f| f.fd.is_some()))
        else {
            return Err(internal(loc, "no open ancestor"));
        };
        let Some(base_fd) = stack[base].fd.as_ref() else {
            return Err(internal(loc, "no open ancestor"));
        };
        let op = |what: &str| format!("{what} (hardlink to {})", t.ns_path);
        let mut tmp: Option<OwnedFd> = None;
        for comp in t.dir.iter().skip(base) {
            let parent = tmp.as_ref().map_or(base_fd.as_fd(), |f| f.as_fd());
            let fd = open_dir(parent, comp)
                .map_err(|e| io_err(loc, op("opening the target's directory"), e))?;
            tmp = Some(fd);
        }
        let src = tmp.as_ref().map_or(base_fd.as_fd(), |f| f.as_fd());
        rfs::linkat(src, &t.name, dfd, name, AtFlags::empty())
            .map_err(|e| io_err(loc, op("linkat"), e))?;
        let st = rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(loc, op("stat"), e))?;
        if ident(&st) != t.ident {
            // Best effort: do not leave a link to something we did not create.
            let _ = rfs::unlinkat(dfd, name, AtFlags::empty());
            return Err(invalid(
                loc,
                format!(
                    "the hardlink target {} was replaced during the pull",
                    t.ns_path
                ),
            ));
        }
        Ok(())
    }

    fn directory(
        &mut self,
        parent: &Frame,
        dfd: BorrowedFd<'_>,
        node: Node,
        ns_path: String,
        dest_path: PathBuf,
    ) -> Result<Frame, PullError> {
        let loc = Loc {
            path: &ns_path,
            dest: &dest_path,
        };
        let name = OsStr::from_bytes(&node.entry.name).to_owned();
        rfs::mkdirat(dfd, &name, Mode::from_raw_mode(0o700))
            .map_err(|e| io_err(loc, "mkdirat", e))?;
        let fd = open_dir(dfd, &name).map_err(|e| io_err(loc, "opening the new directory", e))?;
        let st = rfs::fstat(&fd).map_err(|e| io_err(loc, "fstat", e))?;
        if st.st_mode & 0o700 != 0o700 {
            // The umask took owner bits: we need them to fill it.
            rfs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| io_err(loc, "fchmod", e))?;
        }
        let children = self
            .ns
            .children(&node)
            .map_err(|source| PullError::Catalog {
                path: ns_path.clone(),
                source: Box::new(source),
            })?;
        let inst = if Rc::ptr_eq(&node.catalog, &parent.catalog) {
            parent.inst
        } else {
            self.next_inst += 1;
            self.next_inst
        };
        Ok(Frame {
            name,
            ns_path,
            dest_path,
            fd: Some(fd),
            ident: ident(&st),
            entry: node.entry,
            catalog: node.catalog,
            inst,
            children: children.into_iter(),
        })
    }

    /// A directory's own metadata, once all its children are written.
    fn finish_dir(&mut self, ancestors: &[Frame], frame: &Frame) -> Result<(), PullError> {
        let loc = Loc {
            path: &frame.ns_path,
            dest: &frame.dest_path,
        };
        let Some(fd) = frame.fd.as_ref() else {
            return Err(internal(loc, "directory not open"));
        };
        let e = &frame.entry;
        if self.opts.preserve_owner {
            let (u, g) = owner(e);
            rfs::fchown(fd, u, g).map_err(|err| io_err(loc, "fchown", err))?;
        }
        self.set_xattrs(XattrTarget::Fd(fd.as_fd()), e, loc)?;
        let mode = self.final_mode(e, FileType::Directory, loc);
        if !self.root_user && !ancestors.is_empty() && mode & S_IXUSR == 0 {
            self.deferred.push(Deferred {
                components: ancestors
                    .iter()
                    .skip(1)
                    .map(|f| f.name.clone())
                    .chain([frame.name.clone()])
                    .collect(),
                mode,
                ns_path: frame.ns_path.clone(),
                dest_path: frame.dest_path.clone(),
                ident: frame.ident,
            });
        } else {
            rfs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|err| io_err(loc, "fchmod", err))?;
        }
        rfs::futimens(fd, &times(e)).map_err(|err| io_err(loc, "futimens", err))?;
        self.stats.dirs += 1;
        Ok(())
    }

    /// Final modes of directories that deny their owner search permission
    /// (unprivileged pulls only), children before parents.
    fn apply_deferred(&mut self, root: &Frame) -> Result<(), PullError> {
        for d in std::mem::take(&mut self.deferred) {
            let loc = Loc {
                path: &d.ns_path,
                dest: &d.dest_path,
            };
            let Some(root_fd) = root.fd.as_ref() else {
                return Err(internal(loc, "destination not open"));
            };
            let mut cur: Option<OwnedFd> = None;
            for comp in &d.components {
                let parent = cur.as_ref().map_or(root_fd.as_fd(), |f| f.as_fd());
                let fd = open_dir(parent, comp)
                    .map_err(|e| io_err(loc, "re-opening the directory", e))?;
                cur = Some(fd);
            }
            let Some(fd) = cur else {
                return Err(internal(loc, "deferred destination"));
            };
            let st = rfs::fstat(&fd).map_err(|e| io_err(loc, "fstat", e))?;
            if ident(&st) != d.ident {
                return Err(invalid(loc, "the directory was replaced during the pull"));
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(|e| io_err(loc, "fchmod", e))?;
        }
        Ok(())
    }

    /// The permission bits to set: the entry's, less setuid/setgid on
    /// non-directories that root would own instead of their real owner.
    fn final_mode(&mut self, e: &Entry, ft: FileType, loc: Loc<'_>) -> u32 {
        let mut perm = e.perm();
        if ft != FileType::Directory
            && self.root_user
            && !self.opts.preserve_owner
            && perm & SETID_BITS != 0
        {
            self.skip(
                loc,
                format!(
                    "setuid/setgid bits of mode {perm:04o} dropped: owners are not preserved, \
                     the file would be a root-owned set-id file"
                ),
            );
            perm &= !SETID_BITS;
        }
        perm
    }

    fn set_xattrs(
        &mut self,
        target: XattrTarget<'_>,
        e: &Entry,
        loc: Loc<'_>,
    ) -> Result<(), PullError> {
        for (n, v) in &e.xattrs {
            let res = match target {
                XattrTarget::Fd(fd) => rfs::fsetxattr(fd, n.as_slice(), v, XattrFlags::empty()),
                XattrTarget::NoFollow(p) => rfs::lsetxattr(p, n.as_slice(), v, XattrFlags::empty()),
                XattrTarget::ProcFd(p) => rfs::setxattr(p, n.as_slice(), v, XattrFlags::empty()),
            };
            match res {
                Ok(()) => {}
                // trusted.*, security.*, user.* on special files and
                // filesystems without xattrs: only root must reproduce them.
                Err(err) if !self.root_user && (err == Errno::PERM || err == Errno::OPNOTSUPP) => {
                    self.skip(loc, format!("xattr {} not set: {err}", lossy(n)));
                }
                Err(err) => return Err(io_err(loc, format!("setting xattr {}", lossy(n)), err)),
            }
        }
        Ok(())
    }

    fn write(&mut self, file: &mut File, bytes: &[u8], loc: Loc<'_>) -> Result<(), PullError> {
        file.write_all(bytes).map_err(|source| PullError::Io {
            path: loc.path.to_owned(),
            dest: loc.dest.to_owned(),
            op: "writing".into(),
            source,
        })?;
        self.stats.bytes += bytes.len() as u64;
        (self.progress)(self.stats.bytes);
        Ok(())
    }

    fn fetch(&self, id: &stratum_catalog::ObjectId, loc: Loc<'_>) -> Result<Vec<u8>, PullError> {
        self.objects
            .content(id)
            .map_err(|source| PullError::Content {
                path: loc.path.to_owned(),
                dest: loc.dest.to_owned(),
                id: *id,
                source: Box::new(source),
            })
    }

    fn write_content(&mut self, file: &mut File, e: &Entry, loc: Loc<'_>) -> Result<(), PullError> {
        let size_err = |what: String, expected: u64, actual: u64| PullError::Size {
            path: loc.path.to_owned(),
            dest: loc.dest.to_owned(),
            what,
            expected,
            actual,
        };
        match &e.data {
            Data::None if e.size == 0 => Ok(()),
            Data::None => Err(size_err("the content (none is recorded)".into(), e.size, 0)),
            Data::Inline(b) => {
                if b.len() as u64 != e.size {
                    return Err(size_err(
                        "the inline content".into(),
                        e.size,
                        b.len() as u64,
                    ));
                }
                self.write(file, b, loc)
            }
            Data::Object(id) => {
                let b = self.fetch(id, loc)?;
                if b.len() as u64 != e.size {
                    return Err(size_err(
                        format!("content object {id}"),
                        e.size,
                        b.len() as u64,
                    ));
                }
                self.write(file, &b, loc)
            }
            Data::Chunks(chunks) => {
                let mut total: u64 = 0;
                for c in chunks {
                    total = total
                        .checked_add(c.size)
                        .ok_or_else(|| invalid(loc, "chunk sizes overflow"))?;
                }
                if total != e.size {
                    return Err(size_err(
                        format!("the sum of its {} chunk sizes", chunks.len()),
                        e.size,
                        total,
                    ));
                }
                for (i, c) in chunks.iter().enumerate() {
                    // One chunk in memory at a time.
                    let b = self.fetch(&c.id, loc)?;
                    if b.len() as u64 != c.size {
                        return Err(size_err(
                            format!("chunk {i} (object {})", c.id),
                            c.size,
                            b.len() as u64,
                        ));
                    }
                    self.write(file, &b, loc)?;
                }
                Ok(())
            }
        }
    }

    fn regular(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        loc: Loc<'_>,
    ) -> Result<(u64, u64), PullError> {
        let fd = rfs::openat(
            dfd,
            name,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| io_err(loc, "creating the file", err))?;
        let mut file = File::from(fd);
        self.write_content(&mut file, e, loc)?;
        let st = rfs::fstat(&file).map_err(|err| io_err(loc, "fstat", err))?;
        if self.opts.preserve_owner {
            let (u, g) = owner(e);
            rfs::fchown(&file, u, g).map_err(|err| io_err(loc, "fchown", err))?;
        }
        self.set_xattrs(XattrTarget::Fd(file.as_fd()), e, loc)?;
        let mode = self.final_mode(e, FileType::Regular, loc);
        rfs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|err| io_err(loc, "fchmod", err))?;
        rfs::futimens(&file, &times(e)).map_err(|err| io_err(loc, "futimens", err))?;
        self.stats.files += 1;
        Ok(ident(&st))
    }

    fn symlink(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        loc: Loc<'_>,
    ) -> Result<(u64, u64), PullError> {
        let target = match e.symlink.as_deref() {
            None => return Err(invalid(loc, "symlink without a target")),
            Some([]) => return Err(invalid(loc, "symlink with an empty target")),
            Some(t) if t.contains(&0) => {
                return Err(invalid(loc, "symlink target contains a NUL byte"))
            }
            Some(t) => t,
        };
        rfs::symlinkat(OsStr::from_bytes(target), dfd, name)
            .map_err(|err| io_err(loc, "symlinkat", err))?;
        let st = rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| io_err(loc, "stat", err))?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Symlink {
            return Err(invalid(loc, "the symlink was replaced while being created"));
        }
        if self.opts.preserve_owner {
            let (u, g) = owner(e);
            rfs::chownat(dfd, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|err| io_err(loc, "lchown", err))?;
        }
        if !e.xattrs.is_empty() {
            let p = proc_fd_path(dfd).join(name);
            self.set_xattrs(XattrTarget::NoFollow(&p), e, loc)?;
        }
        rfs::utimensat(dfd, name, &times(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| io_err(loc, "utimensat", err))?;
        self.stats.symlinks += 1;
        Ok(ident(&st))
    }

    /// Fifos and devices (`mknod`).
    fn special(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        ft: FileType,
        loc: Loc<'_>,
    ) -> Result<(u64, u64), PullError> {
        let (rtype, dev) = match ft {
            FileType::CharDevice | FileType::BlockDevice => {
                let (major, minor) = e.device();
                let t = if ft == FileType::CharDevice {
                    rfs::FileType::CharacterDevice
                } else {
                    rfs::FileType::BlockDevice
                };
                (t, rfs::makedev(major, minor))
            }
            FileType::Fifo => (rfs::FileType::Fifo, 0),
            _ => return Err(internal(loc, "not a special file")),
        };
        rfs::mknodat(dfd, name, rtype, Mode::from_raw_mode(0o600), dev)
            .map_err(|err| io_err(loc, "mknodat", err))?;
        // An O_PATH descriptor of the node itself: chmod, chown, xattrs and
        // times through it cannot be redirected by a rename or a symlink.
        let p = rfs::openat(
            dfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| io_err(loc, "opening the new node (O_PATH)", err))?;
        let st = rfs::fstat(&p).map_err(|err| io_err(loc, "fstat", err))?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rtype {
            return Err(invalid(loc, "the node was replaced while being created"));
        }
        if self.opts.preserve_owner {
            let (u, g) = owner(e);
            rfs::chownat(&p, "", u, g, AtFlags::EMPTY_PATH)
                .map_err(|err| io_err(loc, "fchownat", err))?;
        }
        let proc = proc_fd_path(p.as_fd());
        self.set_xattrs(XattrTarget::ProcFd(&proc), e, loc)?;
        let mode = self.final_mode(e, ft, loc);
        rfs::chmodat(CWD, &proc, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(|err| io_err(loc, format!("chmod via {}", proc.display()), err))?;
        rfs::utimensat(CWD, &proc, &times(e), AtFlags::empty())
            .map_err(|err| io_err(loc, "utimensat", err))?;
        self.stats.devices += 1;
        Ok(ident(&st))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::sync::Arc;

    use stratum_catalog::backend::LocalDir;
    use stratum_catalog::catalog::{CatalogBuilder, CatalogKind};
    use stratum_catalog::namespace::StoreLoader;
    use stratum_catalog::object::Encoder;
    use stratum_catalog::{ObjectKind, Store};

    /// A one-catalog repository holding `entries` under its root; returns
    /// the pull of it into `<tmp>/dest` with the given privilege level.
    fn pull(
        entries: &[Entry],
        opts: &PullOptions,
        root_user: bool,
    ) -> (tempfile::TempDir, Result<PullStats, PullError>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalDir::open(tmp.path().join("repo")).unwrap()));
        let mut b = CatalogBuilder::create(
            tmp.path(),
            CatalogKind::Flat,
            "/",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        for e in entries {
            b.insert(ROOT_ID, e).unwrap();
        }
        let bytes = b.finish().unwrap();
        let id = store
            .put(ObjectKind::Catalog, &bytes, &mut Encoder::new(3).unwrap())
            .unwrap()
            .id;
        let ns = Namespace::new(StoreLoader::new(store.clone()), &id).unwrap();
        let res = run(
            &ns,
            &ns.root().unwrap(),
            &store,
            &tmp.path().join("dest"),
            opts,
            &|_| {},
            root_user,
        );
        (tmp, res)
    }

    fn ent(ft: FileType, perm: u32, name: &str) -> Entry {
        let mut e = Entry::new(ft, perm);
        e.name = name.as_bytes().to_vec();
        e
    }

    #[test]
    fn unprivileged_xattr_failures_are_skipped_privileged_ones_are_errors() {
        // Linux refuses user.* xattrs on symlinks (EPERM), even to root.
        let mut l = ent(FileType::Symlink, 0o777, "l");
        l.symlink = Some(b"t".to_vec());
        l.xattrs = vec![(b"user.x".to_vec(), b"1".to_vec())];
        let opts = PullOptions {
            preserve_owner: false,
            devices: false,
        };
        let (tmp, res) = pull(std::slice::from_ref(&l), &opts, false);
        let stats = res.unwrap();
        assert_eq!(stats.skipped.len(), 1, "{:?}", stats.skipped);
        assert!(
            stats.skipped[0].starts_with("/l: xattr user.x"),
            "{:?}",
            stats.skipped
        );
        assert!(std::fs::symlink_metadata(tmp.path().join("dest/l"))
            .unwrap()
            .file_type()
            .is_symlink());

        let (_tmp, res) = pull(&[l], &opts, true);
        let err = res.unwrap_err();
        assert!(
            matches!(&err, PullError::Io { op, .. } if op.contains("user.x")),
            "{err:?}"
        );
    }

    #[test]
    fn unprivileged_pull_defers_modes_without_owner_search_and_skips_devices() {
        let mut c = ent(FileType::CharDevice, 0o666, "null");
        c.rdev = Entry::make_rdev(1, 3);
        let mut w = ent(FileType::CharDevice, 0o600, "wh");
        w.rdev = 0;
        let mut h = ent(FileType::CharDevice, 0o666, "null-link");
        h.rdev = Entry::make_rdev(1, 3);
        h.hardlink = 4;
        let mut h2 = h.clone();
        h2.name = b"null-link2".to_vec();
        let entries = [
            ent(FileType::Directory, 0o000, "closed"),
            ent(FileType::Directory, 0o311, "wx"),
            c,
            w,
            h,
            h2,
            ent(FileType::Socket, 0o755, "sock"),
        ];
        let opts = PullOptions {
            preserve_owner: false,
            devices: false,
        };
        let (tmp, res) = pull(&entries, &opts, false);
        let stats = res.unwrap();
        let dest = tmp.path().join("dest");
        let mode = |n: &str| std::fs::symlink_metadata(dest.join(n)).unwrap().mode();
        assert_eq!(mode("closed"), 0o040000);
        assert_eq!(mode("wx"), 0o040311);
        assert!(!dest.join("null").exists());
        assert!(!dest.join("null-link2").exists());
        let skipped = stats.skipped.join("\n");
        for p in ["/null:", "/null-link:", "/null-link2:", "/sock:"] {
            assert!(skipped.contains(p), "{p} not in {skipped}");
        }
        // Whiteouts need no privilege since Linux 5.8 (where the filesystem
        // allows them): created, or reported.
        match std::fs::symlink_metadata(dest.join("wh")) {
            Ok(m) => assert!(m.file_type().is_char_device() && m.rdev() == 0),
            Err(_) => assert!(skipped.contains("/wh:"), "{skipped}"),
        }
        std::fs::set_permissions(
            dest.join("closed"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"\xff\xfe"] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn ns_join() {
        assert_eq!(join_ns("/", b"a"), "/a");
        assert_eq!(join_ns("/a", b"b"), "/a/b");
    }
}
