//! The oracle comparer: are two directory trees the same container rootfs?
//!
//! [`compare_trees`] walks both trees without following symlinks and compares,
//! per relative path: the file type, the mode bits (all 12, so setuid, setgid
//! and sticky count), uid, gid, size (regular files and symlinks; a
//! directory's size is a property of the file system, not of the image),
//! mtime, symlink target, rdev of devices, every xattr (names and values;
//! `security.*` is ignored because the host's LSM may add labels), the bytes
//! of regular files (SHA-256), and the hardlink grouping: the partition of the
//! non-directory paths by (st_dev, st_ino) must be the same in both trees
//! (inode numbers themselves differ, of course). It reports every difference,
//! not just the first.
//!
//! About mtimes: `umoci repack` (0.4.7) writes plain ustar/PAX headers without
//! a PAX `mtime` record, so the layers it builds carry whole seconds only
//! (Go's `archive/tar` rounds to the nearest second), and
//! `umoci unpack` restores exactly those seconds (`.000000000`). A layer that
//! does carry a PAX `mtime` with a fraction (the hand-built layer of the
//! `spliced` fixture) is restored by `umoci unpack` with its nanoseconds (Go's
//! `archive/tar` parses them and umoci applies them with `lutimes`), and
//! overlayfs reports the lower file's own timestamps. So nanoseconds ARE
//! comparable against these oracles, and [`CompareOpts::default`] compares
//! them; [`CompareOpts::mtime_nanos`] = false compares seconds only, for
//! oracles that cannot keep them (e.g. plain `tar -x` into a file system
//! with coarse timestamps).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::fsutil;

/// What to compare besides the always-compared properties.
#[derive(Clone, Debug)]
pub struct CompareOpts {
    /// Compare the nanosecond part of mtimes too (see the module docs).
    pub mtime_nanos: bool,
    /// Extra xattr name prefixes to ignore (`security.` is always ignored).
    /// The overlayfs comparison ignores `trusted.overlay.` and `user.overlay.`:
    /// those are overlayfs' own markers in the per-layer trees.
    pub ignore_xattr_prefixes: Vec<String>,
    /// Compare the metadata of the two roots themselves (mode, owner, mtime,
    /// xattrs). A rootfs's `/` is part of the image.
    pub compare_root: bool,
}

impl Default for CompareOpts {
    fn default() -> Self {
        CompareOpts {
            mtime_nanos: true,
            ignore_xattr_prefixes: Vec::new(),
            compare_root: true,
        }
    }
}

impl CompareOpts {
    /// For comparing an overlayfs mount of per-layer trees with a flat tree.
    pub fn overlay() -> Self {
        CompareOpts {
            ignore_xattr_prefixes: vec!["trusted.overlay.".into(), "user.overlay.".into()],
            ..CompareOpts::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// The compared properties of one path.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub sha256: Option<[u8; 32]>,
    pub dev: u64,
    pub ino: u64,
}

/// Relative path bytes → entry; the root is `.`.
pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// Reads every entry below `root` (and `root` itself as `.`).
pub fn snapshot(root: &Path, opts: &CompareOpts) -> Result<Snapshot, String> {
    let mut out = Snapshot::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(|e| format!("walking {}: {e}", root.display()))?;
        let rel = e
            .path()
            .strip_prefix(root)
            .map_err(|e| e.to_string())?
            .as_os_str()
            .as_bytes();
        let key = if rel.is_empty() {
            b".".to_vec()
        } else {
            rel.to_vec()
        };
        let entry =
            read_entry(e.path(), opts).map_err(|err| format!("{}: {err}", e.path().display()))?;
        out.insert(key, entry);
    }
    Ok(out)
}

fn read_entry(path: &Path, opts: &CompareOpts) -> std::io::Result<Entry> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::Socket
    };
    let target = if kind == Kind::Symlink {
        Some(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    let rdev = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| {
        let r = md.rdev() as rustix::fs::Dev;
        (rustix::fs::major(r), rustix::fs::minor(r))
    });
    let sha256 = if kind == Kind::File {
        let mut h = Sha256::new();
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Some(h.finalize().into())
    } else {
        None
    };
    let xattrs = fsutil::xattrs(path)?
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with(b"security.")
                && !opts
                    .ignore_xattr_prefixes
                    .iter()
                    .any(|pre| name.starts_with(pre.as_bytes()))
        })
        .collect();
    Ok(Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
        target,
        rdev,
        xattrs,
        sha256,
        dev: md.dev(),
        ino: md.ino(),
    })
}

/// Printable form of a relative path (non-UTF-8 bytes escaped).
pub fn show(path: &[u8]) -> String {
    format!("{:?}", OsStr::from_bytes(path))
}

fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex::encode(b)),
    }
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in x.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}={}", show_bytes(k), show_bytes(v));
    }
    s.push('}');
    s
}

/// Compares `expected` with `actual` using [`CompareOpts::default`].
pub fn compare_trees(expected: &Path, actual: &Path) -> Result<(), Vec<String>> {
    compare_trees_with(expected, actual, &CompareOpts::default())
}

/// Compares two trees; `Err` lists every difference found.
pub fn compare_trees_with(
    expected: &Path,
    actual: &Path,
    opts: &CompareOpts,
) -> Result<(), Vec<String>> {
    let e =
        snapshot(expected, opts).map_err(|m| vec![format!("cannot read expected tree: {m}")])?;
    let a = snapshot(actual, opts).map_err(|m| vec![format!("cannot read actual tree: {m}")])?;
    let diffs = compare_snapshots(&e, &a, opts);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs)
    }
}

/// Compares two snapshots (see [`compare_trees`]).
pub fn compare_snapshots(e: &Snapshot, a: &Snapshot, opts: &CompareOpts) -> Vec<String> {
    let mut diffs = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = e.keys().chain(a.keys()).collect();
    for key in keys {
        if key.as_slice() == b"." && !opts.compare_root {
            continue;
        }
        let name = show(key);
        let (x, y) = match (e.get(key), a.get(key)) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => {
                diffs.push(format!("{name}: only in expected ({:?})", x.kind));
                continue;
            }
            (None, Some(y)) => {
                diffs.push(format!("{name}: only in actual ({:?})", y.kind));
                continue;
            }
            (None, None) => unreachable!(),
        };
        if x.kind != y.kind {
            diffs.push(format!(
                "{name}: type differs: expected {:?}, actual {:?}",
                x.kind, y.kind
            ));
            continue;
        }
        if x.mode != y.mode {
            diffs.push(format!(
                "{name}: mode differs: expected {:#o}, actual {:#o}",
                x.mode, y.mode
            ));
        }
        if x.uid != y.uid {
            diffs.push(format!(
                "{name}: uid differs: expected {}, actual {}",
                x.uid, y.uid
            ));
        }
        if x.gid != y.gid {
            diffs.push(format!(
                "{name}: gid differs: expected {}, actual {}",
                x.gid, y.gid
            ));
        }
        if matches!(x.kind, Kind::File | Kind::Symlink) && x.size != y.size {
            diffs.push(format!(
                "{name}: size differs: expected {}, actual {}",
                x.size, y.size
            ));
        }
        let mtime_differs =
            x.mtime != y.mtime || (opts.mtime_nanos && x.mtime_nsec != y.mtime_nsec);
        if mtime_differs {
            diffs.push(format!(
                "{name}: mtime differs: expected {}.{:09}, actual {}.{:09}",
                x.mtime, x.mtime_nsec, y.mtime, y.mtime_nsec
            ));
        }
        if x.target != y.target {
            diffs.push(format!(
                "{name}: symlink target differs: expected {}, actual {}",
                show_bytes(x.target.as_deref().unwrap_or_default()),
                show_bytes(y.target.as_deref().unwrap_or_default())
            ));
        }
        if x.rdev != y.rdev {
            diffs.push(format!(
                "{name}: rdev differs: expected {:?}, actual {:?}",
                x.rdev, y.rdev
            ));
        }
        if x.xattrs != y.xattrs {
            diffs.push(format!(
                "{name}: xattrs differ: expected {}, actual {}",
                show_xattrs(&x.xattrs),
                show_xattrs(&y.xattrs)
            ));
        }
        if x.sha256 != y.sha256 && x.size == y.size {
            diffs.push(format!("{name}: content differs (same size, other bytes)"));
        } else if x.sha256 != y.sha256 {
            diffs.push(format!("{name}: content differs"));
        }
    }
    diffs.extend(compare_hardlinks(e, a));
    diffs
}

/// For every non-directory path: the sorted set of paths of its tree that
/// share its inode.
fn link_groups(s: &Snapshot) -> HashMap<&[u8], Vec<&[u8]>> {
    let mut by_inode: HashMap<(u64, u64), Vec<&[u8]>> = HashMap::new();
    for (k, v) in s {
        if v.kind != Kind::Dir {
            by_inode.entry((v.dev, v.ino)).or_default().push(k);
        }
    }
    let mut out = HashMap::new();
    for group in by_inode.into_values() {
        let mut group = group;
        group.sort();
        for k in &group {
            out.insert(*k, group.clone());
        }
    }
    out
}

fn compare_hardlinks(e: &Snapshot, a: &Snapshot) -> Vec<String> {
    let ge = link_groups(e);
    let ga = link_groups(a);
    type Group<'a> = Vec<&'a [u8]>;
    let mut reported: BTreeSet<(Group, Group)> = BTreeSet::new();
    let mut diffs = Vec::new();
    let mut keys: Vec<&&[u8]> = ge.keys().filter(|k| ga.contains_key(**k)).collect();
    keys.sort();
    for k in keys {
        let (x, y) = (&ge[*k], &ga[*k]);
        if x != y && reported.insert((x.clone(), y.clone())) {
            let fmt = |g: &Vec<&[u8]>| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(", ");
            diffs.push(format!(
                "{}: hardlink group differs: expected [{}], actual [{}]",
                show(k),
                fmt(x),
                fmt(y)
            ));
        }
    }
    diffs
}

/// Panics with a readable list of differences unless the trees are equal.
pub fn assert_trees_equal(expected: &Path, actual: &Path, opts: &CompareOpts, what: &str) {
    if let Err(diffs) = compare_trees_with(expected, actual, opts) {
        let shown: Vec<&String> = diffs.iter().take(200).collect();
        panic!(
            "{what}: {} differences between expected {} and actual {}:\n  {}{}",
            diffs.len(),
            expected.display(),
            actual.display(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            if diffs.len() > shown.len() {
                "\n  …"
            } else {
                ""
            }
        );
    }
}

/// Self-tests of the comparer: it must notice each kind of difference. Used by
/// the `comparer_*` tests in `tests/it/oracle.rs`.
pub mod selftest {
    use super::*;
    use crate::support::fsutil::*;
    use crate::support::is_root;

    /// A small tree with one of everything the comparer looks at.
    pub fn sample_tree(root: &Path) {
        std::fs::create_dir_all(root).unwrap();
        chmod(root, 0o755);
        let f = file(root, b"file", b"hello world", 0o644);
        set_xattr(&f, "user.foo", b"bar");
        set_xattr(&f, "user.bin", &[0, 1, 255]);
        file(root, b"suid", b"x", 0o4755);
        file(root, b"sgid", b"x", 0o2711);
        dir(root, b"sticky", 0o1777);
        file(root, b"dir/inner", b"inner", 0o600);
        chmod(&p(root, b"dir"), 0o750);
        symlink(root, b"sym", b"file");
        symlink(root, b"abs", b"/etc/hostname");
        symlink(root, b"dangling", b"no/such/thing");
        file(root, b"hl1", b"linked", 0o644);
        hardlink(root, b"hl1", b"dir/hl2");
        file(root, b"solo", b"linked", 0o644);
        file(root, b"empty", b"", 0o644);
        file(root, b"caf\xe9", b"latin-1 name", 0o644);
        fifo(root, b"fifo", 0o640);
        if is_root() {
            char_dev(root, b"chr", 1, 3, 0o666);
            block_dev(root, b"blk", 7, 0, 0o660);
            let o = file(root, b"owned", b"owned", 0o644);
            lchown(&o, 1000, 2000);
        }
        stamp_mtimes(root, 1_600_000_000);
        // hl1/dir/hl2 share one inode: give solo the same mtime so that
        // turning solo into a link of hl1 changes nothing but the grouping.
        let md = std::fs::symlink_metadata(p(root, b"hl1")).unwrap();
        set_mtime(&p(root, b"solo"), md.mtime(), md.mtime_nsec() as u32);
    }

    /// Builds two identical sample trees; returns (tempdir, expected, actual).
    pub fn twin_trees() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let tmp = crate::support::tempdir();
        let e = tmp.path().join("expected");
        let a = tmp.path().join("actual");
        sample_tree(&e);
        sample_tree(&a);
        (tmp, e, a)
    }

    /// Runs `mutate` on the actual tree, restoring the mtimes of the paths in
    /// `keep_mtime` (and of the root) afterwards so that the mutation is the
    /// only difference; then asserts that the comparer reports at least one
    /// difference and that every reported difference mentions `needle`.
    pub fn expect_detects(needle: &str, keep_mtime: &[&[u8]], mutate: impl FnOnce(&Path)) {
        expect_detects_with(&CompareOpts::default(), needle, keep_mtime, mutate)
    }

    pub fn expect_detects_with(
        opts: &CompareOpts,
        needle: &str,
        keep_mtime: &[&[u8]],
        mutate: impl FnOnce(&Path),
    ) {
        let (_tmp, e, a) = twin_trees();
        assert_eq!(
            compare_trees_with(&e, &a, opts),
            Ok(()),
            "twin sample trees must compare equal"
        );
        let mut saved = Vec::new();
        for rel in keep_mtime.iter().chain([&b".".as_slice()]) {
            let path = p(&a, rel);
            if let Ok(md) = std::fs::symlink_metadata(&path) {
                saved.push((path, md.mtime(), md.mtime_nsec()));
            }
        }
        mutate(&a);
        for (path, s, ns) in saved {
            if std::fs::symlink_metadata(&path).is_ok() {
                set_mtime(&path, s, ns as u32);
            }
        }
        match compare_trees_with(&e, &a, opts) {
            Ok(()) => panic!("comparer missed a difference that should mention {needle:?}"),
            Err(diffs) => {
                let unrelated: Vec<&String> =
                    diffs.iter().filter(|d| !d.contains(needle)).collect();
                assert!(
                    unrelated.is_empty(),
                    "expected only {needle:?} differences, also got {unrelated:#?} (all: {diffs:#?})"
                );
            }
        }
    }

    /// Asserts that `mutate` is NOT reported under `opts`.
    pub fn expect_ignores(opts: &CompareOpts, mutate: impl FnOnce(&Path)) {
        let (_tmp, e, a) = twin_trees();
        mutate(&a);
        assert_eq!(compare_trees_with(&e, &a, opts), Ok(()));
    }
}
