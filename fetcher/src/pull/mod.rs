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
//!
//! # Layout
//!
//! This module walks the tree; `safety` holds the checks and the
//! descriptor-relative primitives every creation goes through; `create`
//! makes each kind of entry and applies its metadata; `content` fills a
//! regular file from verified objects; `pipeline` runs those fills (and
//! fetches nested catalogs ahead) on [`PullOptions::jobs`] threads while
//! the walk goes on.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs as rfs;
use rustix::process::geteuid;
use stratum_catalog::catalog::{Catalog, Entry, MAX_DEPTH};
use stratum_catalog::namespace::{CatalogLoader, Namespace, Node};

use crate::{ObjectSource, PullError};

mod content;
mod create;
mod pipeline;
mod safety;

use pipeline::Pool;

use safety::*;

/// Directory descriptors kept open along the current path (plus the
/// destination's own, which is always open).
const FD_WINDOW: usize = 64;

const S_IXUSR: u32 = 0o100;
const SETID_BITS: u32 = 0o6000;

/// The default of [`PullOptions::jobs`]: chosen by measurement at a 10 ms
/// round trip (docs/DECISIONS.md, D41 and D50: with the downloads in flight
/// as futures of one driver thread, 128 cost nothing on loopback and cut
/// the larger image's pull at 10 ms by a quarter).
pub const DEFAULT_PULL_JOBS: usize = 128;

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
    /// Content objects fetched, verified and written at once (threads),
    /// while the walk goes on creating entries; 1 is a sequential pull.
    /// Default [`DEFAULT_PULL_JOBS`].
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        let root = geteuid().is_root();
        PullOptions {
            preserve_owner: root,
            devices: root,
            jobs: DEFAULT_PULL_JOBS,
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
/// itself. `objects` provides the verified bytes of content objects (from
/// [`PullOptions::jobs`] threads at once, and nested catalogs ahead of the
/// walk through [`ObjectSource::catalog_ahead`]); `progress` is called
/// with the number of content bytes written so far after each write, from
/// those threads.
///
/// Nothing is written outside `dest`, whatever the catalogs hold. On error,
/// `dest` keeps what was written until then (see [`PullError`]).
pub fn materialize<L: CatalogLoader>(
    ns: &Namespace<L>,
    node: &Node,
    objects: &(dyn ObjectSource + Sync),
    dest: &Path,
    opts: &PullOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PullStats, PullError> {
    run(ns, node, objects, dest, opts, progress, geteuid().is_root())
}

/// [`materialize`] with the privilege level given rather than asked, so that
/// tests running as root can exercise the unprivileged policies.
pub(crate) fn run<L: CatalogLoader>(
    ns: &Namespace<L>,
    node: &Node,
    objects: &(dyn ObjectSource + Sync),
    dest: &Path,
    opts: &PullOptions,
    progress: &(dyn Fn(u64) + Sync),
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
    let pool = Pool::new(objects, opts, root_user, progress);
    catalogs_ahead(&pool, node);
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
        pool: &pool,
        opts,
        root_user,
        stats: PullStats::default(),
        links: HashMap::new(),
        deferred: Vec::new(),
        next_inst: 0,
        mounts: HashMap::new(),
        seq: 0,
    };
    std::thread::scope(|s| {
        pool.start(s);
        let walked = p.walk(&mut stack);
        // On an error of the walk, queued content is dropped; if a worker
        // failed first, its error is the cause and is what is returned.
        if let Err(e) = walked {
            pool.fail(e);
        }
        pool.finish()
    })?;
    let (files, bytes, skipped) = pool.totals();
    let mut stats = p.stats;
    stats.files = files;
    stats.bytes = bytes;
    stats.skipped = skipped;
    tracing::debug!(dest = %dest.display(), stats = ?stats, "pull done");
    Ok(stats)
}

/// Asks the pool to fetch the catalogs mounted directly below `dir` (and
/// those below them) ahead of the walk.
fn catalogs_ahead(pool: &Pool<'_>, dir: &Node) {
    if pool.threads() == 0 || !dir.entry.is_dir() {
        return;
    }
    // A hint: an error here is reported by the walk's own listing.
    if let Ok(mounts) = dir.catalog.mount_points(dir.entry.id) {
        pool.catalogs_ahead(mounts.into_iter().map(|(_, id)| id));
    }
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
    pool: &'a Pool<'a>,
    opts: &'a PullOptions,
    root_user: bool,
    /// Counts of what the walk itself made (files, bytes and skipped lines
    /// are the pool's).
    stats: PullStats,
    links: HashMap<(u64, i64), Link>,
    deferred: Vec<Deferred>,
    next_inst: u64,
    /// How many times the walk entered each catalog (bounded: a fan-out of
    /// shared subtrees must not make the walk exponential).
    mounts: HashMap<stratum_catalog::ObjectId, u32>,
    /// The walk position of the entry being created.
    seq: u64,
}

/// The namespace and destination paths an error or a skip is about.
#[derive(Clone, Copy)]
struct Loc<'a> {
    path: &'a str,
    dest: &'a Path,
}

impl<L: CatalogLoader> Puller<'_, L> {
    fn skip(&mut self, loc: Loc<'_>, why: impl std::fmt::Display) {
        tracing::debug!(path = loc.path, "not reproduced: {why}");
        self.pool.skip(self.seq, format!("{}: {why}", loc.path));
    }

    fn walk(&mut self, stack: &mut Vec<Frame>) -> Result<(), PullError> {
        loop {
            let Some(top) = stack.len().checked_sub(1) else {
                return Ok(());
            };
            match stack[top].children.next() {
                Some(node) => {
                    self.seq += 1;
                    self.ensure_open(stack, top)?;
                    if let Some(frame) = self.child(stack, node)? {
                        // Each catalog's tree is checked when it is opened;
                        // this bounds the nesting of catalogs as well.
                        if stack.len() > MAX_DEPTH {
                            let loc = Loc {
                                path: &frame.ns_path,
                                dest: &frame.dest_path,
                            };
                            return Err(invalid(
                                loc,
                                format!("more than {MAX_DEPTH} directory levels below the top of the pull"),
                            ));
                        }
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use std::sync::Arc;
    use stratum_catalog::catalog::{FileType, ROOT_ID};

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
            ..PullOptions::default()
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
            ..PullOptions::default()
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
