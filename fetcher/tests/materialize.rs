//! `materialize` against small repositories built by hand with the catalog
//! crate. Tests that need root skip (with a message) when not run as root.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::{
    CatalogBuilder, CatalogKind, Chunk, Data, Entry, FileType, ROOT_ID,
};
use stratum_catalog::namespace::{Namespace, StoreLoader};
use stratum_catalog::object::{self, Encoder};
use stratum_catalog::{ObjectId, ObjectKind, Store};
use stratum_fetcher::{materialize, PullError, PullOptions, PullStats};

struct Repo {
    dir: tempfile::TempDir,
    store: Store,
    enc: Encoder,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("repo")).unwrap();
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let store = Store::new(Arc::new(LocalDir::open(dir.path().join("repo")).unwrap()));
        Repo {
            dir,
            store,
            enc: Encoder::new(object::DEFAULT_LEVEL).unwrap(),
        }
    }

    fn content(&mut self, bytes: &[u8]) -> ObjectId {
        self.store
            .put(ObjectKind::Content, bytes, &mut self.enc)
            .unwrap()
            .id
    }

    fn builder(&self, ns_path: &str, root: &Entry) -> CatalogBuilder {
        self.builder_of(CatalogKind::Flat, ns_path, root)
    }

    fn builder_of(&self, kind: CatalogKind, ns_path: &str, root: &Entry) -> CatalogBuilder {
        CatalogBuilder::create(&self.dir.path().join("tmp"), kind, ns_path, root).unwrap()
    }

    fn catalog(&mut self, b: CatalogBuilder) -> ObjectId {
        let bytes = b.finish().unwrap();
        self.store
            .put(ObjectKind::Catalog, &bytes, &mut self.enc)
            .unwrap()
            .id
    }

    fn ns(&self, root: &ObjectId) -> Namespace<StoreLoader> {
        Namespace::new(StoreLoader::new(self.store.clone()), root).unwrap()
    }

    /// A fresh sandbox directory; pulls go to `<sandbox>/dest`.
    fn sandbox(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).unwrap();
        p
    }

    fn pull_with(
        &self,
        root: &ObjectId,
        dest: &Path,
        opts: &PullOptions,
    ) -> Result<PullStats, PullError> {
        let ns = self.ns(root);
        let node = ns.root().unwrap();
        materialize(&ns, &node, &self.store, dest, opts, &|_| {})
    }

    fn pull(&self, root: &ObjectId, dest: &Path) -> Result<PullStats, PullError> {
        self.pull_with(root, dest, &PullOptions::default())
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: this test needs root (owners, devices, trusted.* xattrs)");
            return;
        }
    };
}

fn ent(ft: FileType, perm: u32, name: &str) -> Entry {
    let mut e = Entry::new(ft, perm);
    e.name = name.as_bytes().to_vec();
    e
}

fn file(name: &str, perm: u32, data: &[u8]) -> Entry {
    let mut e = ent(FileType::Regular, perm, name);
    e.size = data.len() as u64;
    e.data = Data::Inline(data.to_vec());
    e
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

fn names_in(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_file_type_with_metadata() {
    require_root!();
    let mut repo = Repo::new();
    let big = b"object content ".repeat(100);
    let big_id = repo.content(&big);

    let mut root = Entry::new(FileType::Directory, 0o751);
    root.mtime = 1_500_000_000;
    root.mtime_ns = 42;
    root.uid = 7;
    root.gid = 8;
    let mut b = repo.builder("/", &root);

    let mut f = file("file", 0o640, b"hello");
    f.uid = 1001;
    f.gid = 1002;
    f.mtime = 1_600_000_000;
    f.mtime_ns = 123_456_789;
    f.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    b.insert(ROOT_ID, &f).unwrap();

    let mut o = ent(FileType::Regular, 0o644, "obj");
    o.size = big.len() as u64;
    o.data = Data::Object(big_id);
    b.insert(ROOT_ID, &o).unwrap();

    b.insert(ROOT_ID, &ent(FileType::Regular, 0o600, "empty"))
        .unwrap();

    let mut d = ent(FileType::Directory, 0o750, "dir");
    d.mtime = 1_000_000_000;
    d.mtime_ns = 999_999_999;
    d.uid = 1001;
    let d_id = b.insert(ROOT_ID, &d).unwrap();
    b.insert(d_id, &file("inner", 0o644, b"in")).unwrap();
    let sub_id = b
        .insert(d_id, &ent(FileType::Directory, 0o755, "sub"))
        .unwrap();

    let mut l = ent(FileType::Symlink, 0o777, "abs");
    l.symlink = Some(b"/etc/definitely/not/here".to_vec());
    l.uid = 1001;
    l.gid = 1003;
    l.mtime = 1_234_567_890;
    l.mtime_ns = 5;
    b.insert(ROOT_ID, &l).unwrap();
    let mut l = ent(FileType::Symlink, 0o777, "rel");
    l.symlink = Some(b"../../../../outside".to_vec());
    b.insert(d_id, &l).unwrap();

    let mut c = ent(FileType::CharDevice, 0o666, "null");
    c.rdev = Entry::make_rdev(1, 3);
    c.mtime = 1_111_111_111;
    c.mtime_ns = 7;
    b.insert(ROOT_ID, &c).unwrap();
    let mut c = ent(FileType::BlockDevice, 0o660, "loop");
    c.rdev = Entry::make_rdev(7, 300);
    c.gid = 6;
    b.insert(ROOT_ID, &c).unwrap();
    let mut w = ent(FileType::CharDevice, 0o000, "whiteout");
    w.rdev = 0;
    b.insert(d_id, &w).unwrap();
    b.insert(ROOT_ID, &ent(FileType::Fifo, 0o644, "fifo"))
        .unwrap();
    b.insert(ROOT_ID, &ent(FileType::Socket, 0o755, "sock"))
        .unwrap();

    let mut opq = ent(FileType::Directory, 0o755, "opq");
    opq.xattrs = vec![
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"user.overlay.opaque".to_vec(), b"y".to_vec()),
    ];
    b.insert(ROOT_ID, &opq).unwrap();

    let mut h = file("h1", 0o604, b"linked");
    h.hardlink = 7;
    h.uid = 1005;
    b.insert(ROOT_ID, &h).unwrap();
    h.name = b"h2".to_vec();
    b.insert(d_id, &h).unwrap();
    h.name = b"h3".to_vec();
    b.insert(sub_id, &h).unwrap();
    let mut hs = ent(FileType::Symlink, 0o777, "hs1");
    hs.symlink = Some(b"target".to_vec());
    hs.hardlink = 8;
    b.insert(ROOT_ID, &hs).unwrap();
    hs.name = b"hs2".to_vec();
    b.insert(sub_id, &hs).unwrap();

    let root_id = repo.catalog(b);
    let sb = repo.sandbox("sb");
    let dest = sb.join("dest");
    let progress = Mutex::new(Vec::new());
    let ns = repo.ns(&root_id);
    let stats = materialize(
        &ns,
        &ns.root().unwrap(),
        &repo.store,
        &dest,
        &PullOptions::default(),
        &|n| progress.lock().unwrap().push(n),
    )
    .unwrap();

    assert_eq!(stats.files, 5, "{stats:?}"); // file obj empty inner h1
    assert_eq!(stats.dirs, 4); // dest dir sub opq
    assert_eq!(stats.symlinks, 3); // abs rel hs1
    assert_eq!(stats.hardlinks, 3); // h2 h3 hs2
    assert_eq!(stats.devices, 4); // null loop whiteout fifo
    assert_eq!(stats.bytes, 5 + big.len() as u64 + 2 + 6);
    assert_eq!(stats.skipped.len(), 1, "{:?}", stats.skipped);
    assert!(
        stats.skipped[0].starts_with("/sock:"),
        "{:?}",
        stats.skipped
    );
    let progress = progress.into_inner().unwrap();
    assert_eq!(progress.last().copied(), Some(stats.bytes));
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");

    assert_eq!(names_in(&sb), vec!["dest"]);
    let m = lmeta(&dest);
    assert_eq!((m.mode(), m.uid(), m.gid()), (0o040751, 7, 8));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 42));

    let m = lmeta(&dest.join("file"));
    assert_eq!(
        (m.mode(), m.uid(), m.gid(), m.size()),
        (0o100640, 1001, 1002, 5)
    );
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!(fs::read(dest.join("file")).unwrap(), b"hello");
    assert_eq!(
        xattr(&dest.join("file"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(fs::read(dest.join("obj")).unwrap(), big);
    assert_eq!(lmeta(&dest.join("empty")).size(), 0);

    let m = lmeta(&dest.join("dir"));
    assert_eq!((m.mode(), m.uid()), (0o040750, 1001));
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (1_000_000_000, 999_999_999),
        "dir mtime set after its children"
    );
    assert_eq!(fs::read(dest.join("dir/inner")).unwrap(), b"in");

    let m = lmeta(&dest.join("abs"));
    assert!(m.file_type().is_symlink());
    assert_eq!((m.uid(), m.gid()), (1001, 1003));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 5));
    assert_eq!(
        fs::read_link(dest.join("abs")).unwrap(),
        Path::new("/etc/definitely/not/here")
    );
    assert_eq!(
        fs::read_link(dest.join("dir/rel")).unwrap(),
        Path::new("../../../../outside")
    );

    let m = lmeta(&dest.join("null"));
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (m.mode() & 0o7777, m.rdev()),
        (0o666, rustix::fs::makedev(1, 3))
    );
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_111_111_111, 7));
    let m = lmeta(&dest.join("loop"));
    assert!(m.file_type().is_block_device());
    assert_eq!(
        (m.mode() & 0o7777, m.rdev(), m.gid()),
        (0o660, rustix::fs::makedev(7, 300), 6)
    );
    let m = lmeta(&dest.join("dir/whiteout"));
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    let m = lmeta(&dest.join("fifo"));
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o644);
    assert!(!dest.join("sock").exists());

    assert_eq!(
        xattr(&dest.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&dest.join("opq"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    let h1 = lmeta(&dest.join("h1"));
    assert_eq!((h1.nlink(), h1.uid(), h1.mode()), (3, 1005, 0o100604));
    for p in ["dir/h2", "dir/sub/h3"] {
        assert_eq!(lmeta(&dest.join(p)).ino(), h1.ino(), "{p}");
    }
    assert_eq!(fs::read(dest.join("dir/sub/h3")).unwrap(), b"linked");
    let hs = lmeta(&dest.join("hs1"));
    assert!(hs.file_type().is_symlink());
    assert_eq!(lmeta(&dest.join("dir/sub/hs2")).ino(), hs.ino());
}

#[test]
fn setuid_survives_chown_and_is_dropped_when_root_keeps_ownership() {
    require_root!();
    let mut repo = Repo::new();
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    let mut f = file("su", 0o4755, b"#!/bin/true\n");
    f.uid = 1000;
    f.gid = 1000;
    b.insert(ROOT_ID, &f).unwrap();
    let mut f = file("sg", 0o2711, b"x");
    f.gid = 100;
    b.insert(ROOT_ID, &f).unwrap();
    let mut d = ent(FileType::Directory, 0o3775, "shared");
    d.uid = 1000;
    d.gid = 100;
    let d_id = b.insert(ROOT_ID, &d).unwrap();
    b.insert(d_id, &file("x", 0o644, b"")).unwrap();
    let root_id = repo.catalog(b);

    let dest = repo.sandbox("a").join("dest");
    repo.pull(&root_id, &dest).unwrap();
    let m = lmeta(&dest.join("su"));
    assert_eq!((m.mode(), m.uid(), m.gid()), (0o104755, 1000, 1000));
    let m = lmeta(&dest.join("sg"));
    assert_eq!((m.mode(), m.gid()), (0o102711, 100));
    let m = lmeta(&dest.join("shared"));
    assert_eq!((m.mode(), m.uid(), m.gid()), (0o043775, 1000, 100));

    // As root without owners: no root-owned setuid files the image never had.
    let dest = repo.sandbox("b").join("dest");
    let opts = PullOptions {
        preserve_owner: false,
        devices: true,
        ..PullOptions::default()
    };
    let stats = repo.pull_with(&root_id, &dest, &opts).unwrap();
    let m = lmeta(&dest.join("su"));
    assert_eq!((m.mode(), m.uid()), (0o100755, 0));
    assert_eq!(lmeta(&dest.join("sg")).mode(), 0o100711);
    assert_eq!(
        lmeta(&dest.join("shared")).mode(),
        0o043775,
        "directories keep setgid and sticky"
    );
    assert_eq!(stats.skipped.len(), 2, "{:?}", stats.skipped);
    assert!(stats
        .skipped
        .iter()
        .any(|s| s.starts_with("/su:") && s.contains("setuid")));
}

#[test]
fn read_only_directories_still_get_their_children() {
    let mut repo = Repo::new();
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o555));
    let ro = b
        .insert(ROOT_ID, &ent(FileType::Directory, 0o555, "ro"))
        .unwrap();
    b.insert(ro, &file("f", 0o444, b"read only")).unwrap();
    let inner = b
        .insert(ro, &ent(FileType::Directory, 0o500, "inner"))
        .unwrap();
    b.insert(inner, &file("g", 0o400, b"g")).unwrap();
    let mut h = file("h", 0o444, b"hh");
    h.hardlink = 1;
    b.insert(inner, &h).unwrap();
    let none = b
        .insert(ROOT_ID, &ent(FileType::Directory, 0o000, "none"))
        .unwrap();
    h.name = b"h-again".to_vec();
    b.insert(none, &h).unwrap();
    let root_id = repo.catalog(b);

    let dest = repo.sandbox("s").join("dest");
    let opts = PullOptions {
        preserve_owner: false,
        devices: false,
        ..PullOptions::default()
    };
    let stats = repo.pull_with(&root_id, &dest, &opts).unwrap();
    assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
    assert_eq!(lmeta(&dest).mode(), 0o040555);
    assert_eq!(lmeta(&dest.join("ro")).mode(), 0o040555);
    assert_eq!(lmeta(&dest.join("ro/inner")).mode(), 0o040500);
    assert_eq!(lmeta(&dest.join("none")).mode(), 0o040000);
    // Open everything up (an unprivileged reader needs it; so does the
    // tempdir's removal), then check the contents.
    for p in ["", "ro", "ro/inner", "none"] {
        fs::set_permissions(
            dest.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    assert_eq!(fs::read(dest.join("ro/f")).unwrap(), b"read only");
    assert_eq!(lmeta(&dest.join("ro/f")).mode(), 0o100444);
    assert_eq!(fs::read(dest.join("ro/inner/g")).unwrap(), b"g");
    assert_eq!(
        lmeta(&dest.join("none/h-again")).ino(),
        lmeta(&dest.join("ro/inner/h")).ino()
    );
}

#[test]
fn chunked_files_stream_and_check_sizes() {
    let mut repo = Repo::new();
    let parts: [&[u8]; 4] = [b"first chunk ", b"second ", b"first chunk ", b"end"];
    let chunks: Vec<Chunk> = parts
        .iter()
        .map(|p| Chunk {
            id: repo.content(p),
            size: p.len() as u64,
        })
        .collect();
    let whole: Vec<u8> = parts.concat();
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    let mut f = ent(FileType::Regular, 0o644, "big");
    f.size = whole.len() as u64;
    f.data = Data::Chunks(chunks.clone());
    b.insert(ROOT_ID, &f).unwrap();
    let root_id = repo.catalog(b);

    let dest = repo.sandbox("ok").join("dest");
    let ns = repo.ns(&root_id);
    let seen = Mutex::new(Vec::new());
    // Sequential: chunks are written in file order.
    let sequential = PullOptions {
        jobs: 1,
        ..PullOptions::default()
    };
    let stats = materialize(
        &ns,
        &ns.root().unwrap(),
        &repo.store,
        &dest,
        &sequential,
        &|n| seen.lock().unwrap().push(n),
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("big")).unwrap(), whole);
    assert_eq!(stats.bytes, whole.len() as u64);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![12, 19, 31, 34],
        "progress after every chunk"
    );
    // In parallel: each chunk at its offset, whatever the order they land in.
    let dest = repo.sandbox("parallel").join("dest");
    let seen = Mutex::new(Vec::new());
    let stats = materialize(
        &ns,
        &ns.root().unwrap(),
        &repo.store,
        &dest,
        &PullOptions::default(),
        &|n| seen.lock().unwrap().push(n),
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("big")).unwrap(), whole);
    assert_eq!(stats.bytes, whole.len() as u64);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 4, "progress after every chunk: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // A chunk whose object is shorter than declared.
    let mut bad = chunks.clone();
    bad[1].size += 3;
    bad[3].size -= 3;
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    let mut f = ent(FileType::Regular, 0o644, "big");
    f.size = whole.len() as u64;
    f.data = Data::Chunks(bad);
    b.insert(ROOT_ID, &f).unwrap();
    let root_id = repo.catalog(b);
    // In parallel, whichever bad chunk lands first is reported: chunk 1
    // (object shorter than declared) or chunk 3 (longer).
    let dest = repo.sandbox("chunk-parallel").join("dest");
    let err = repo.pull(&root_id, &dest).unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Size {
                expected: 10,
                actual: 7,
                ..
            } | PullError::Size {
                expected: 0,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // With one job, the first one in file order.
    let dest = repo.sandbox("chunk").join("dest");
    let err = repo.pull_with(&root_id, &dest, &sequential).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            PullError::Size {
                expected: 10,
                actual: 7,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("/big") && msg.contains("chunk 1") && msg.contains(&chunks[1].id.to_hex()),
        "{msg}"
    );

    // Chunk sizes that do not add up to the file size.
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    let mut f = ent(FileType::Regular, 0o644, "big");
    f.size = whole.len() as u64 + 1;
    f.data = Data::Chunks(chunks.clone());
    b.insert(ROOT_ID, &f).unwrap();
    let root_id = repo.catalog(b);
    let err = repo
        .pull(&root_id, &repo.sandbox("sum").join("dest"))
        .unwrap_err();
    assert!(matches!(err, PullError::Size { .. }), "{err:?}");

    // Inline and single-object content of the wrong size.
    let id = repo.content(b"12345");
    for (i, data) in [Data::Inline(b"123".to_vec()), Data::Object(id), Data::None]
        .into_iter()
        .enumerate()
    {
        let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
        let mut f = ent(FileType::Regular, 0o644, "f");
        f.size = 4;
        f.data = data.clone();
        b.insert(ROOT_ID, &f).unwrap();
        let root_id = repo.catalog(b);
        let err = repo.pull(&root_id, &repo.sandbox(&format!("size{i}")).join("dest"));
        assert!(
            matches!(err, Err(PullError::Size { expected: 4, .. })),
            "{data:?}: {err:?}"
        );
    }
}

#[test]
fn corrupt_and_missing_objects_are_errors_naming_the_path() {
    let mut repo = Repo::new();
    let good = b"the real bytes".to_vec();
    let id = repo.content(&good);
    // Replace the stored object with a valid frame of other bytes.
    let path = repo
        .dir
        .path()
        .join("repo")
        .join(id.path(ObjectKind::Content));
    fs::write(&path, object::encode(b"evil bytes!!!!", 3).unwrap()).unwrap();
    let missing = ObjectId::of(b"never stored");

    for (name, oid) in [("corrupt", id), ("missing", missing)] {
        let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
        let d = b
            .insert(ROOT_ID, &ent(FileType::Directory, 0o755, "etc"))
            .unwrap();
        let mut f = ent(FileType::Regular, 0o644, name);
        f.size = good.len() as u64;
        f.data = Data::Object(oid);
        b.insert(d, &f).unwrap();
        let root_id = repo.catalog(b);
        let dest = repo.sandbox(name).join("dest");
        let err = repo.pull(&root_id, &dest).unwrap_err();
        assert!(matches!(err, PullError::Content { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("/etc/{name}")), "{msg}");
        assert!(
            msg.contains(&dest.join("etc").join(name).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains(&oid.to_hex()), "{msg}");
    }
}

#[test]
fn unsafe_names_are_refused_and_nothing_escapes() {
    let bad: [&[u8]; 6] = [b"..", b".", b"", b"a/b", b"../../escape", b"nul\0name"];
    for (i, name) in bad.iter().enumerate() {
        for as_dir in [false, true] {
            let mut repo = Repo::new();
            let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
            let d = b
                .insert(ROOT_ID, &ent(FileType::Directory, 0o755, "d"))
                .unwrap();
            b.insert(d, &file("ok", 0o644, b"fine")).unwrap();
            let mut e = if as_dir {
                ent(FileType::Directory, 0o755, "")
            } else {
                file("", 0o644, b"pwned")
            };
            e.name = name.to_vec();
            let e_id = b.insert(d, &e).unwrap();
            if as_dir {
                b.insert(e_id, &file("pwned", 0o644, b"pwned")).unwrap();
            }
            let root_id = repo.catalog(b);
            let sb = repo.sandbox("sb");
            let dest = sb.join("dest");
            let err = repo.pull(&root_id, &dest).unwrap_err();
            assert!(
                matches!(err, PullError::UnsafeName { .. }),
                "{i} {as_dir}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("/d") && msg.contains(&dest.join("d").display().to_string()),
                "{msg}"
            );
            // Nothing outside dest, and nothing but the good entry inside.
            assert_eq!(names_in(&sb), vec!["dest"]);
            assert_eq!(names_in(repo.dir.path()), vec!["repo", "sb", "tmp"]);
            let written: Vec<PathBuf> = walkdir::WalkDir::new(&dest)
                .into_iter()
                .map(|e| e.unwrap().path().strip_prefix(&dest).unwrap().to_owned())
                .collect();
            assert!(
                written
                    .iter()
                    .all(|p| !p.to_string_lossy().contains("pwned")),
                "{written:?}"
            );
        }
    }
}

#[test]
fn destination_must_be_absent_or_empty() {
    let mut repo = Repo::new();
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    b.insert(ROOT_ID, &file("f", 0o644, b"new")).unwrap();
    let root_id = repo.catalog(b);

    // Not empty: refused, and the existing file is untouched.
    let dest = repo.sandbox("full");
    fs::write(dest.join("f"), b"old").unwrap();
    let err = repo.pull(&root_id, &dest).unwrap_err();
    assert!(matches!(err, PullError::Destination { .. }), "{err:?}");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"old");

    // A symlink to an empty directory: refused, never followed.
    let target = repo.sandbox("target");
    let link = repo.dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = repo.pull(&root_id, &link).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(names_in(&target).is_empty());

    // A regular file.
    let plain = repo.dir.path().join("plain");
    fs::write(&plain, b"").unwrap();
    let err = repo.pull(&root_id, &plain).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");

    // A missing parent is not created.
    let err = repo
        .pull(&root_id, &repo.dir.path().join("no/such/dir"))
        .unwrap_err();
    assert!(matches!(err, PullError::Destination { .. }), "{err:?}");

    // An empty directory and an absent one are fine.
    let empty = repo.sandbox("empty");
    repo.pull(&root_id, &empty).unwrap();
    assert_eq!(fs::read(empty.join("f")).unwrap(), b"new");
    let absent = repo.dir.path().join("absent");
    repo.pull(&root_id, &absent).unwrap();
    assert_eq!(fs::read(absent.join("f")).unwrap(), b"new");
}

#[test]
fn nested_catalogs_and_per_catalog_hardlink_groups() {
    let mut repo = Repo::new();
    // The child catalog, a subtree mounted twice (FORMAT.md §4.12: a tree
    // mounts only subtrees).
    let mut sub_root = Entry::new(FileType::Directory, 0o711);
    sub_root.mtime = 1_700_000_000;
    let mut cb = repo.builder_of(CatalogKind::Subtree, "", &sub_root);
    let mut x = file("x", 0o644, b"child");
    x.hardlink = 1;
    cb.insert(ROOT_ID, &x).unwrap();
    x.name = b"x2".to_vec();
    cb.insert(ROOT_ID, &x).unwrap();
    let child = repo.catalog(cb);

    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    for mount in ["a", "b"] {
        let mut m = ent(FileType::Directory, 0o755, mount);
        m.nested = Some(child);
        b.insert(ROOT_ID, &m).unwrap();
    }
    let mut y = file("y", 0o644, b"parent");
    y.hardlink = 1;
    b.insert(ROOT_ID, &y).unwrap();
    y.name = b"y2".to_vec();
    b.insert(ROOT_ID, &y).unwrap();
    let root_id = repo.catalog(b);

    let dest = repo.sandbox("s").join("dest");
    let stats = repo.pull(&root_id, &dest).unwrap();
    assert_eq!(
        (stats.files, stats.hardlinks, stats.dirs),
        (3, 3, 3),
        "{stats:?}"
    );
    let m = lmeta(&dest.join("a"));
    assert_eq!(
        (m.mode(), m.mtime()),
        (0o040711, 1_700_000_000),
        "a mount point gets the child root's metadata"
    );
    assert_eq!(fs::read(dest.join("b/x2")).unwrap(), b"child");
    let ino = |p: &str| lmeta(&dest.join(p)).ino();
    assert_eq!(ino("a/x"), ino("a/x2"));
    assert_eq!(ino("b/x"), ino("b/x2"));
    assert_eq!(ino("y"), ino("y2"));
    assert_ne!(
        ino("a/x"),
        ino("b/x"),
        "each mount of a catalog is its own set of inodes"
    );
    assert_ne!(ino("a/x"), ino("y"), "hardlink groups are per catalog");

    // Pulling a subtree: the node of a nested catalog.
    let ns = repo.ns(&root_id);
    let node = ns.resolve("/b").unwrap();
    let dest = repo.sandbox("sub").join("dest");
    materialize(
        &ns,
        &node,
        &repo.store,
        &dest,
        &PullOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(names_in(&dest), vec!["x", "x2"]);
    // A non-directory node is refused.
    let node = ns.resolve("/y").unwrap();
    let err = materialize(
        &ns,
        &node,
        &repo.store,
        &repo.dir.path().join("f"),
        &PullOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/y") && err.to_string().contains("not a directory"),
        "{err}"
    );
}

#[test]
fn deep_trees_do_not_exhaust_stack_or_descriptors() {
    const DEPTH: usize = 1500;
    let mut repo = Repo::new();
    let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
    let mut top = file("a", 0o644, b"top");
    top.hardlink = 1;
    b.insert(ROOT_ID, &top).unwrap();
    let mut dir = ROOT_ID;
    let mut d = ent(FileType::Directory, 0o755, "d");
    d.mtime = 1_000;
    d.mtime_ns = 1;
    for i in 0..DEPTH {
        dir = b.insert(dir, &d).unwrap();
        if i % 100 == 50 {
            // Files after the subdirectory, so the walk returns through
            // directories whose descriptors were closed.
            let mut f = file("z", 0o644, format!("{i}").as_bytes());
            f.hardlink = 3;
            b.insert(dir, &f).unwrap();
        }
    }
    b.insert(dir, &top).unwrap(); // links to /a
    let mut bottom = file("b", 0o644, b"bottom");
    bottom.hardlink = 2;
    b.insert(dir, &bottom).unwrap();
    bottom.name = b"z".to_vec();
    b.insert(ROOT_ID, &bottom).unwrap(); // links to the bottom
    let root_id = repo.catalog(b);

    let dest = repo.sandbox("s").join("dest");
    let stats = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let stats = repo.pull(&root_id, &dest);
            (repo, dest, stats)
        })
        .unwrap()
        .join()
        .unwrap();
    let (_repo, dest, stats) = stats;
    let stats = stats.unwrap();
    assert_eq!(stats.dirs, DEPTH as u64 + 1);
    assert_eq!(stats.hardlinks, 2 + DEPTH as u64 / 100 - 1);
    let mut p = dest.clone();
    for _ in 0..DEPTH {
        p.push("d");
    }
    assert_eq!(lmeta(&p.join("a")).ino(), lmeta(&dest.join("a")).ino());
    assert_eq!(lmeta(&p.join("b")).ino(), lmeta(&dest.join("z")).ino());
    let m = lmeta(&p);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000, 1));
    let m = lmeta(&dest.join("d"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000, 1));
    let dirs = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_dir())
        .count();
    assert_eq!(dirs, DEPTH + 1);
}

#[test]
fn invalid_entries_are_errors() {
    let cases: Vec<(&str, Entry)> = vec![
        (
            "symlink without a target",
            ent(FileType::Symlink, 0o777, "l"),
        ),
        ("mtime nanoseconds", {
            let mut e = file("f", 0o644, b"");
            e.mtime_ns = 1_000_000_000;
            e
        }),
        ("unknown file type", {
            let mut e = file("f", 0o644, b"");
            e.mode = 0o644;
            e
        }),
        ("hardlink group", {
            let mut e = ent(FileType::Directory, 0o755, "d");
            e.hardlink = 3;
            e
        }),
    ];
    for (want, e) in cases {
        let mut repo = Repo::new();
        let mut b = repo.builder("/", &Entry::new(FileType::Directory, 0o755));
        b.insert(ROOT_ID, &e).unwrap();
        let root_id = repo.catalog(b);
        let err = repo
            .pull(&root_id, &repo.sandbox("s").join("dest"))
            .unwrap_err();
        assert!(matches!(err, PullError::Invalid { .. }), "{want}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(want)
                && msg.contains(&format!(
                    "/{}",
                    OsStr::from_bytes(&e.name).to_string_lossy()
                )),
            "{msg}"
        );
    }
}
