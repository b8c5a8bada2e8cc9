//! The read-only FUSE filesystem over a repository namespace.
//!
//! Inodes are `(catalog slot, entry id)` pairs packed into 64 bits; catalogs
//! get a slot when first loaded, so a subtree's catalog is fetched only when
//! something below it is looked up. Hardlinked entries share the inode of
//! their group's lowest entry id. What an inode names is immutable, so
//! entries, attributes and page cache are kept by the kernel for a long
//! time. A live mount ([`Live`]) switches only what inode 1 is.
//!
//! Handlers return `Result`; [`Errno`] conversion happens in one place
//! ([`FsError::errno`]), and every failure is logged with what it was about.

mod ahead;
mod attr;
mod live;
mod ops;
mod overlay_xattrs;
mod passthrough;
pub mod prefetch;
mod record;
mod session;
mod slots;
mod store;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use stratum_catalog::catalog::nesting::{fits, MAX_NESTING};
use stratum_catalog::catalog::{CatalogKind, Data, Entry, FileType, ROOT_ID};
use stratum_catalog::ObjectId;

pub use fuser::{Notifier, SessionUnmounter};
pub use live::{Live, LiveStatus, Outcome, Refresh, Switcher};
pub use ops::{OpCounters, OpCounts};
pub use overlay_xattrs::OverlayXattrs;
pub use prefetch::{PrefetchPlan, PrefetchReport, Prefetcher, DEFAULT_PREFETCH_JOBS};
pub use record::Recorder;
pub use session::{serve, unmount, MountConfig};
pub use slots::SlotCounts;
use slots::{RootCell, Slot, SlotTable};
pub use store::{LocalTree, RemoteTree, TreeStore};

/// What an inode names never changes (see [`slots`]), so the kernel may
/// keep entries and attributes for long (D26, D37).
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The one exception: the root of a live mount (inode 1) changes meaning
/// when the mount switches revisions. The switch invalidates the kernel's
/// entries of the root ([`Live`]); this short TTL bounds what a lookup
/// racing with the switch can leave behind (D37).
const ROOT_TTL: Duration = Duration::from_secs(1);

/// The extended attribute of a mount's root that reports its status (JSON
/// of the CLI's making, see [`StratumFs::with_status`]). Not listed by
/// `listxattr`, so copies of the tree do not take it along.
pub const STATUS_XATTR: &str = "user.stratum.status";

/// Renders a mount's status on request.
pub type StatusFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument")]
    Invalid,
    #[error("no such attribute")]
    NoXattr,
    #[error("buffer too small")]
    Range,
    #[error("{0}")]
    Catalog(#[from] stratum_catalog::Error),
    #[error("reading content: {0}")]
    Io(#[from] std::io::Error),
}

impl FsError {
    /// The one adapter from errors to errno. Anything from the network or a
    /// verification failure is EIO: the read fails, it never hangs or lies.
    fn errno(&self) -> Errno {
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::NotDir => Errno::ENOTDIR,
            FsError::IsDir => Errno::EISDIR,
            FsError::Invalid => Errno::EINVAL,
            FsError::NoXattr => Errno::NO_XATTR,
            FsError::Range => Errno::ERANGE,
            FsError::Catalog(stratum_catalog::Error::NotFound { .. }) => Errno::ENOENT,
            FsError::Catalog(_) | FsError::Io(_) => Errno::EIO,
        }
    }
}

type FsResult<T> = Result<T, FsError>;

/// A directory listing taken at opendir, served by readdir.
type Listing = Vec<(FileAttr, Vec<u8>)>;

pub struct StratumFs<S: TreeStore> {
    store: Arc<S>,
    slots: SlotTable,
    /// The (slot, entry id) shown as the mount's root (inode 1).
    root: RootCell,
    /// The root may switch to another revision's ([`Switcher`]).
    live: bool,
    status: Option<StatusFn>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    /// Open files: the object each read last, so that the reads of one
    /// object through one open count one cache hit, not one per request.
    files: Mutex<HashMap<u64, Option<ObjectId>>>,
    next_fh: AtomicU64,
    uid_gid_override: Option<(u32, u32)>,
    /// `+os-arch` of this node: `/images/NAME/TAG` shows `TAG+<this>` when
    /// the image was published for several platforms.
    platform_suffix: Vec<u8>,
    overlay_xattrs: OverlayXattrs,
    ahead: ahead::Ahead,
    /// `--record`: the files opened, and the names that give their paths.
    recorder: Option<(Arc<Recorder>, record::Names)>,
    ops: Arc<OpCounters>,
    passthrough: passthrough::Passthrough,
}

impl<S: TreeStore> StratumFs<S> {
    /// Which overlayfs markers this mount shows (default: both).
    pub fn with_overlay_xattrs(mut self, which: OverlayXattrs) -> Self {
        self.overlay_xattrs = which;
        self
    }

    /// A filesystem showing the subtree at `path` (e.g. `/` or an image's
    /// `/flat/ab/<hex>`) of the namespace whose root catalog is `root`.
    pub fn new(store: Arc<S>, root: &ObjectId, path: &str) -> FsResult<Self> {
        let fs = StratumFs {
            slots: SlotTable::new(store.clone()),
            store,
            root: RootCell::new((0, ROOT_ID)),
            live: false,
            status: None,
            dirs: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid_gid_override: None,
            platform_suffix: format!("+{}", stratum_catalog::Platform::host().slug()).into_bytes(),
            overlay_xattrs: OverlayXattrs::Both,
            ahead: ahead::Ahead::default(),
            recorder: None,
            ops: Arc::default(),
            passthrough: passthrough::Passthrough::default(),
        };
        let mut node = (fs.slot_of(root)?, ROOT_ID);
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let (slot, entry) = fs.child(node, comp.as_bytes())?.ok_or(FsError::NotFound)?;
            if !entry.is_dir() {
                return Err(FsError::NotDir);
            }
            node = (slot, entry.id);
        }
        fs.root.set(node);
        // Inode 1 is never forgotten; the catalogs walked through to it
        // are released (nothing below the mount point names them).
        fs.slots.keep_only([node.0].into());
        Ok(fs)
    }

    /// Records every file opened through this mount into `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some((recorder, record::Names::default()));
        self
    }

    /// Fetches ahead (through the store's [`Prefetcher`]): `images`, the
    /// published prefetch list of each image whose flat tree is entered
    /// (for a whole-repository mount); `batch`, the small files of a listed
    /// directory whose files are opened one after another.
    pub fn with_fetch_ahead(mut self, images: bool, batch: bool) -> Self {
        self.ahead.images = images;
        self.ahead.batch = batch;
        self
    }

    /// Notes that `ino` is `name` in directory `parent` (for `--record`).
    fn note_name(&self, parent: u64, name: &[u8], ino: u64) {
        if let Some((_, names)) = &self.recorder {
            names.note(parent, name, ino);
        }
    }

    /// Makes the root switchable: returns the handle that switches it. Only
    /// for a filesystem showing a whole namespace (`path` `/`).
    pub fn live(&mut self) -> Switcher<S> {
        self.live = true;
        Switcher::new(self.store.clone(), self.slots.clone(), self.root.clone())
    }

    /// The requests this filesystem answered, counted as they come.
    pub fn op_counters(&self) -> Arc<OpCounters> {
        self.ops.clone()
    }

    /// How many catalogs this mount has had and has open (D37).
    pub fn catalog_counts(&self) -> SlotCounts {
        self.slots.counts()
    }

    /// Serves [`STATUS_XATTR`] on the root, rendered by `f` on each request.
    pub fn with_status(mut self, f: StatusFn) -> Self {
        self.status = Some(f);
        self
    }

    /// Entry and attribute TTL of `ino` (an inode, or the parent of a looked
    /// up entry).
    fn ttl(&self, ino: u64) -> &'static Duration {
        if self.live && ino == 1 {
            &ROOT_TTL
        } else {
            &TTL
        }
    }

    fn slot_of(&self, id: &ObjectId) -> FsResult<u32> {
        self.slots.slot_of(id)
    }

    /// The kernel gets a reference to inode `ino` (a lookup reply, a
    /// `readdirplus` entry): counted for its slot until `forget`.
    fn hand_out(&self, ino: u64) {
        if ino != 1 {
            self.slots.looked_up(self.decode(ino).0);
        }
    }

    fn slot(&self, s: u32) -> FsResult<Arc<Slot>> {
        self.slots.slot(s)
    }

    fn ino(&self, slot: &Slot, s: u32, e: &Entry) -> u64 {
        let id = match e.hardlink {
            0 => e.id,
            g => slot.links.get(&g).copied().unwrap_or(e.id),
        };
        if (s, id) == self.root.get() {
            return 1;
        }
        ((u64::from(s) + 1) << 32) | (id as u64 & 0xffff_ffff)
    }

    fn decode(&self, ino: u64) -> (u32, i64) {
        if ino == 1 {
            return self.root.get();
        }
        (
            ((ino >> 32).saturating_sub(1)) as u32,
            (ino & 0xffff_ffff) as i64,
        )
    }

    /// The entry behind an inode.
    fn node(&self, ino: u64) -> FsResult<(u32, Arc<Slot>, Entry)> {
        let (s, id) = self.decode(ino);
        let slot = self.slot(s)?;
        let e = slot.catalog.get(id)?.ok_or(FsError::NotFound)?;
        Ok((s, slot, e))
    }

    /// Looks `name` up in directory `(slot, id)`, crossing into a nested
    /// catalog (loading it) when the entry is a mount point.
    fn child(&self, (s, id): (u32, i64), name: &[u8]) -> FsResult<Option<(u32, Entry)>> {
        let slot = self.slot(s)?;
        let Some(e) = slot.catalog.lookup(id, name)? else {
            return Ok(None);
        };
        match e.nested {
            None => Ok(Some((s, self.platform_alias(&slot, id, e)?))),
            Some(child) => {
                self.ahead.entered(&self.store, &slot.catalog, child);
                let cs = self.nested_slot(s, &slot, e.id, &child)?;
                let root = self.slot(cs)?.catalog.root()?;
                Ok(Some((cs, root)))
            }
        }
    }

    /// The slot of catalog `child`, mounted at entry `entry` of slot `s`:
    /// a subtree catalog gets a slot per place (the same subtree shown at
    /// two places is two directories), and must fit its place and be at
    /// most [`MAX_NESTING`] catalogs deep (FORMAT.md §4.12).
    fn nested_slot(&self, s: u32, slot: &Slot, entry: i64, child: &ObjectId) -> FsResult<u32> {
        let parent = slot.catalog.kind();
        let in_tree = matches!(
            parent,
            CatalogKind::Flat | CatalogKind::Layer | CatalogKind::Subtree
        );
        let invalid = |reason: String| {
            FsError::Catalog(stratum_catalog::Error::InvalidCatalog {
                catalog: child.to_hex(),
                reason,
            })
        };
        if self.slots.nesting(s) >= MAX_NESTING {
            return Err(invalid(format!(
                "nested catalogs more than {MAX_NESTING} deep (mounted in catalog {})",
                slot.catalog.id()
            )));
        }
        let cs = if in_tree {
            self.slots.slot_at(child, Some((s, entry)))?
        } else {
            self.slot_of(child)?
        };
        let kind = self.slot(cs)?.catalog.kind();
        if !fits(parent, kind) {
            return Err(invalid(format!(
                "a catalog of kind {} cannot be mounted in one of kind {} (catalog {})",
                kind.as_str(),
                parent.as_str(),
                slot.catalog.id()
            )));
        }
        Ok(cs)
    }

    /// In the `/images` catalog, `TAG` of an image published for several
    /// platforms stands for `TAG+<this node's platform>` when that exists
    /// (same name, that entry's inode and target): readers get their
    /// platform's tree at the name they know. Elsewhere, `e` itself.
    fn platform_alias(&self, slot: &Slot, parent: i64, e: Entry) -> FsResult<Entry> {
        if slot.catalog.kind() != CatalogKind::Images
            || e.file_type() != Some(FileType::Symlink)
            || e.name.contains(&b'+')
        {
            return Ok(e);
        }
        let mut alias = e.name.clone();
        alias.extend_from_slice(&self.platform_suffix);
        match slot.catalog.lookup(parent, &alias)? {
            Some(mut a) if a.file_type() == Some(FileType::Symlink) => {
                a.name = e.name;
                Ok(a)
            }
            _ => Ok(e),
        }
    }

    fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        attr::of(ino, e, self.uid_gid_override)
    }

    fn do_lookup(&self, parent: u64, name: &[u8]) -> FsResult<FileAttr> {
        let (s, id) = self.decode(parent);
        let (cs, e) = self.child((s, id), name)?.ok_or(FsError::NotFound)?;
        let slot = self.slot(cs)?;
        Ok(self.attr(self.ino(&slot, cs, &e), &e))
    }

    /// Whether open file `fh` read object `id` last (and makes it so).
    fn read_last(&self, fh: u64, id: &ObjectId) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match files.get_mut(&fh) {
            Some(last) if last.as_ref() == Some(id) => true,
            Some(last) => {
                *last = Some(*id);
                false
            }
            None => false,
        }
    }

    /// Reads `buf.len()` bytes of object `id` at `offset` for open file `fh`.
    fn read_object(
        &self,
        fh: u64,
        id: &ObjectId,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> FsResult<()> {
        let again = self.read_last(fh, id);
        store::read_full(&*self.store, id, size, offset, buf, again)
    }

    fn do_read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.ops.read();
        let (_, _, e) = self.node(ino)?;
        if e.is_dir() {
            return Err(FsError::IsDir);
        }
        let end = offset.saturating_add(u64::from(size)).min(e.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        match &e.data {
            Data::None => {}
            Data::Inline(b) => {
                let start = offset as usize;
                out.copy_from_slice(&b[start.min(b.len())..(end as usize).min(b.len())]);
            }
            Data::Object(id) => self.read_object(fh, id, e.size, offset, &mut out)?,
            Data::Chunks(chunks) => {
                let mut pos = 0u64;
                let mut filled = 0usize;
                for (i, c) in chunks.iter().enumerate() {
                    let (cstart, cend) = (pos, pos + c.size);
                    pos = cend;
                    if cend <= offset + filled as u64 {
                        continue;
                    }
                    if cstart >= end {
                        break;
                    }
                    let at = offset + filled as u64 - cstart;
                    let n = ((cend - cstart - at) as usize).min(out.len() - filled);
                    self.read_object(fh, &c.id, c.size, at, &mut out[filled..filled + n])?;
                    filled += n;
                    if filled == out.len() {
                        // Sequential readers will want the next chunk next.
                        if let Some(next) = chunks.get(i + 1) {
                            self.store.prefetch(&next.id, next.size);
                        }
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn do_opendir(&self, ino: u64) -> FsResult<u64> {
        let (s, slot, e) = self.node(ino)?;
        if !e.is_dir() {
            return Err(FsError::NotDir);
        }
        self.ahead.listed((s, e.id));
        let own = self.attr(ino, &e);
        let mut list: Listing = vec![(own, b".".to_vec()), (own, b"..".to_vec())];
        for c in slot.catalog.children(e.id)? {
            let (cs, ce) = match c.nested {
                Some(child) => {
                    let cs = self.nested_slot(s, &slot, c.id, &child)?;
                    let mut root = self.slot(cs)?.catalog.root()?;
                    root.name = c.name;
                    (cs, root)
                }
                None => (s, self.platform_alias(&slot, e.id, c)?),
            };
            let cslot = self.slot(cs)?;
            let attr = self.attr(self.ino(&cslot, cs, &ce), &ce);
            list.push((attr, ce.name));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(list));
        Ok(fh)
    }

    /// The listing taken by `opendir` for this handle.
    fn listing(&self, fh: FileHandle) -> Option<Arc<Listing>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
    }

    fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(value.len() as u32);
        } else if value.len() > size as usize {
            reply.error(FsError::Range.errno());
        } else {
            reply.data(value);
        }
    }
}

fn fail<T>(what: &str, ino: u64, r: FsResult<T>) -> Result<T, Errno> {
    r.map_err(|e| {
        match e {
            FsError::NotFound | FsError::NoXattr | FsError::Range => {
                tracing::debug!("{what} inode {ino}: {e}")
            }
            _ => tracing::warn!("{what} inode {ino}: {e}"),
        }
        e.errno()
    })
}

impl<S: TreeStore> Filesystem for StratumFs<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Optional speed-ups; a kernel without them still works.
        for flag in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_readahead(1 << 20);
        // Reads of files the node cache holds go to its files (D48). The
        // mount then counts as one stacked file system (overlayfs on it
        // still fits the kernel's limit of two).
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.enable();
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match fail(
            "lookup",
            parent.0,
            self.do_lookup(parent.0, name.as_bytes()),
        ) {
            Ok(attr) => {
                self.ops.lookup(true);
                self.hand_out(attr.ino.0);
                self.note_name(parent.0, name.as_bytes(), attr.ino.0);
                reply.entry(self.ttl(parent.0), &attr, Generation(0))
            }
            Err(e) if e == Errno::ENOENT => {
                // A directory's names never change (a live root's for at
                // most its TTL, and a switch invalidates them): inode 0 is
                // a negative entry the kernel keeps, so a program probing
                // paths (the dynamic loader's search path, Python's) asks
                // once per name, not once per probe.
                self.ops.lookup(false);
                reply.entry(self.ttl(parent.0), &attr::negative(), Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    /// The kernel dropped `nlookup` references to `ino`: a slot none of
    /// whose inodes the kernel holds any more closes its catalog (D37).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 != 1 {
            self.slots.forget(self.decode(ino.0).0, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match fail("getattr", ino.0, self.node(ino.0)) {
            Ok((_, _, e)) => reply.attr(self.ttl(ino.0), &self.attr(ino.0, &e)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .node(ino.0)
            .and_then(|(_, _, e)| e.symlink.ok_or(FsError::Invalid));
        match fail("readlink", ino.0, r) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let r = self.node(ino.0).and_then(|(s, slot, e)| {
            if e.is_dir() {
                Err(FsError::IsDir)
            } else {
                Ok((s, slot, e))
            }
        });
        match fail("open", ino.0, r) {
            // Immutable content: let the page cache survive close and reopen.
            Ok((s, slot, e)) => {
                if let Some((recorder, names)) = &self.recorder {
                    recorder.opened(names.path(ino.0));
                }
                self.ahead
                    .opened(&self.store, &slot.catalog, (s, e.parent), &e);
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, None);
                let backing = self.passthrough.open(ino.0, &reply, || match &e.data {
                    Data::Object(id) if e.size > 0 => self.store.cached_file(id, e.size),
                    _ => None,
                });
                self.ops.open(backing.is_some());
                match backing {
                    Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(ino.0);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match fail("read", ino.0, self.do_read(ino.0, fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // A live root's listing changes: the kernel must not cache it.
        let flags = if self.live && ino.0 == 1 {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
        };
        match fail("opendir", ino.0, self.do_opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(list) = self.listing(fh) else {
            tracing::warn!("readdir inode {}: unknown directory handle", ino.0);
            return reply.error(Errno::EBADF);
        };
        for (i, (attr, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(attr.ino, (i + 1) as u64, attr.kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    /// Entries with their attributes in one reply: a directory walk (`find
    /// -ls`, `ls -l`) then needs no lookup per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(list) = self.listing(fh) else {
            tracing::warn!("readdirplus inode {}: unknown directory handle", ino.0);
            return reply.error(Errno::EBADF);
        };
        for (i, (attr, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(
                attr.ino,
                (i + 1) as u64,
                OsStr::from_bytes(name),
                self.ttl(ino.0),
                attr,
                Generation(0),
            ) {
                break;
            }
            // Each entry but `.` and `..` is a reference the kernel keeps.
            if name != b"." && name != b".." {
                self.hand_out(attr.ino.0);
                self.note_name(ino.0, name, attr.ino.0);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if let Some(status) = self.status.as_ref().filter(|_| ino.0 == 1) {
            if name.as_bytes() == STATUS_XATTR.as_bytes() {
                return Self::xattr_reply(&status(), size, reply);
            }
        }
        let hidden = self.overlay_xattrs.hides(name.as_bytes());
        let r = self.node(ino.0).and_then(|(_, _, e)| {
            e.xattr(name.as_bytes())
                .filter(|_| !hidden)
                .map(<[u8]>::to_vec)
                .ok_or(FsError::NoXattr)
        });
        match fail("getxattr", ino.0, r) {
            Ok(v) => Self::xattr_reply(&v, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match fail("listxattr", ino.0, self.node(ino.0)) {
            Ok((_, _, e)) => {
                let mut names = Vec::new();
                for (n, _) in e
                    .xattrs
                    .iter()
                    .filter(|(n, _)| !self.overlay_xattrs.hides(n))
                {
                    names.extend_from_slice(n);
                    names.push(0);
                }
                Self::xattr_reply(&names, size, reply)
            }
            Err(e) => reply.error(e),
        }
    }

    /// Nothing to flush in a read-only tree: ENOSYS tells the kernel so
    /// once, and it sends no more flushes (one round trip per `close`).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.ops.flush();
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions).
        reply.ok();
    }
}

/// The records of image `name` and of its per-platform siblings
/// (`name+os-arch…`) in the namespace rooted at `root`: the `/images`
/// catalog and the `/flat` partitions they live in are fetched, nothing else.
pub fn image_variants(
    store: &dyn TreeStore,
    root: &ObjectId,
    name: &str,
) -> FsResult<Vec<stratum_catalog::catalog::ImageRecord>> {
    let cat = store.catalog(root)?;
    let images =
        stratum_catalog::image_index::ImageIndex::new(&cat, |id: &ObjectId| store.catalog(id))
            .variants(name)?;
    Ok(images)
}
