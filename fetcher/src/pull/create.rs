//! Creating each kind of entry (directories, regular files, symlinks,
//! hardlinks, devices and fifos) with its metadata in the order the module
//! header of `pull` gives.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, XattrFlags, CWD};
use rustix::io::Errno;
use stratum_catalog::catalog::nesting::MAX_MOUNTS_OF_ONE_CATALOG;
use stratum_catalog::catalog::{Entry, FileType};
use stratum_catalog::namespace::{CatalogLoader, Node};

use super::content::{FileJob, Plan};
use super::pipeline::Task;
use super::safety::*;
use super::*;
use crate::PullError;

impl<L: CatalogLoader> Puller<'_, L> {
    /// Creates one child of the directory on top of the stack; returns the
    /// frame to push if it is a directory.
    pub(super) fn child(
        &mut self,
        stack: &[Frame],
        node: Node,
    ) -> Result<Option<Frame>, PullError> {
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
    pub(super) fn link(
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

    pub(super) fn directory(
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
        catalogs_ahead(self.pool, &node);
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
            self.entered(&node, &ns_path)?;
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

    /// Counts one more entry into `node`'s catalog; refuses the
    /// [`MAX_MOUNTS_OF_ONE_CATALOG`]+1-th (FORMAT.md §13, point 12).
    fn entered(&mut self, node: &Node, ns_path: &str) -> Result<(), PullError> {
        let id = node.catalog.id();
        let n = self.mounts.entry(id).or_insert(0);
        *n += 1;
        if *n > MAX_MOUNTS_OF_ONE_CATALOG {
            return Err(PullError::Catalog {
                path: ns_path.to_owned(),
                source: Box::new(stratum_catalog::Error::InvalidCatalog {
                    catalog: id.to_hex(),
                    reason: format!(
                        "mounted at more than {MAX_MOUNTS_OF_ONE_CATALOG} places of the \
                         tree being pulled (a fan-out of shared subtree catalogs); refused"
                    ),
                }),
            });
        }
        Ok(())
    }

    /// A directory's own metadata, once all its children are written.
    pub(super) fn finish_dir(
        &mut self,
        ancestors: &[Frame],
        frame: &Frame,
    ) -> Result<(), PullError> {
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
    pub(super) fn apply_deferred(&mut self, root: &Frame) -> Result<(), PullError> {
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
    pub(super) fn final_mode(&mut self, e: &Entry, ft: FileType, loc: Loc<'_>) -> u32 {
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

    pub(super) fn set_xattrs(
        &mut self,
        target: XattrTarget<'_>,
        e: &Entry,
        loc: Loc<'_>,
    ) -> Result<(), PullError> {
        let (pool, seq) = (self.pool, self.seq);
        apply_xattrs(target, e, self.root_user, loc, &mut |line| {
            tracing::debug!(path = loc.path, "not reproduced: {line}");
            pool.skip(seq, line)
        })
    }

    /// Creates a regular file. Content the catalog holds inline is written
    /// here; objects are handed to the pool, whose workers write them and
    /// then the file's metadata (see `pipeline`).
    pub(super) fn regular(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        loc: Loc<'_>,
    ) -> Result<(u64, u64), PullError> {
        let plan = FileJob::plan(e, loc)?;
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
        let file = File::from(fd);
        let st = rfs::fstat(&file).map_err(|err| io_err(loc, "fstat", err))?;
        let mode = self.final_mode(e, FileType::Regular, loc);
        let pieces = match plan {
            Plan::Objects(p) => p,
            Plan::Empty | Plan::Inline(_) => {
                let job = FileJob::new(file, e, mode, self.seq, 1, loc);
                if let Plan::Inline(b) = plan {
                    job.write_at(b, 0)?;
                    self.pool.add_bytes(b.len() as u64);
                }
                let (pool, seq) = (self.pool, self.seq);
                job.finish(self.opts, self.root_user, &mut |line| pool.skip(seq, line))?;
                self.pool.file_done();
                return Ok(ident(&st));
            }
        };
        let job = Arc::new(FileJob::new(file, e, mode, self.seq, pieces.len(), loc));
        for piece in pieces {
            self.pool.submit(Task {
                job: job.clone(),
                piece,
            })?;
        }
        Ok(ident(&st))
    }

    pub(super) fn symlink(
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
    pub(super) fn special(
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

/// Sets the xattrs of `e` on `target`. When not root, those Linux refuses
/// (`trusted.*`, `security.*`, `user.*` on special files, filesystems
/// without xattrs) are reported to `skip`, not errors.
pub(super) fn apply_xattrs(
    target: XattrTarget<'_>,
    e: &Entry,
    root_user: bool,
    loc: Loc<'_>,
    skip: &mut dyn FnMut(String),
) -> Result<(), PullError> {
    for (n, v) in &e.xattrs {
        let res = match target {
            XattrTarget::Fd(fd) => rfs::fsetxattr(fd, n.as_slice(), v, XattrFlags::empty()),
            XattrTarget::NoFollow(p) => rfs::lsetxattr(p, n.as_slice(), v, XattrFlags::empty()),
            XattrTarget::ProcFd(p) => rfs::setxattr(p, n.as_slice(), v, XattrFlags::empty()),
        };
        match res {
            Ok(()) => {}
            Err(err) if !root_user && (err == Errno::PERM || err == Errno::OPNOTSUPP) => {
                skip(format!("{}: xattr {} not set: {err}", loc.path, lossy(n)));
            }
            Err(err) => return Err(io_err(loc, format!("setting xattr {}", lossy(n)), err)),
        }
    }
    Ok(())
}
