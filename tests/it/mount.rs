//! `stratum mount` end to end: real FUSE mounts of published fixture images,
//! checked against `umoci unpack`, stacked with the kernel's overlayfs, and
//! used to run a real program.
//!
//! Every test body takes a [`Via`]: how `stratum mount` reaches the
//! repository. Today that is the repository directory ([`local_dir`]). An
//! HTTP variant is one more function of the same type (start a
//! `support::services::StratumServe` on the repository and return
//! `MountSource::url(&url, &pubkey(repo), serve)`, which keeps the server
//! alive until the mounts are gone) plus one more `#[test]` line per body.
//!
//! The `rich` and `spliced` fixtures (see `support/fixtures.rs`) are built,
//! unpacked with umoci and published once per test process and shared by the
//! tests that run at the same time ([`fixture`]).
//!
//! Needs root, umoci and FUSE (`/dev/fuse`); each test skips with a message
//! when one is missing. The overlay test also skips (with the kernel's exact
//! complaint) if overlayfs refuses a FUSE lower layer.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::support::compare::{assert_trees_equal, CompareOpts};
use crate::support::fixtures::{build_spliced, BIG_FILE_SIZE};
use crate::support::fsutil::{self, Rng};
use crate::support::mount::{
    is_mounted, require_fuse, unescape_mountinfo, Mount, MountSource, OverlayMount,
};
use crate::support::umoci::ImageBuilder;
use crate::support::{
    check_image_object, require_oracle_tools, require_root, run_cmd, skip, stratum, tempdir,
    TestRepo,
};
use rustix::io::Errno;
use rustix::process::Signal;

const RICH: &str = "test/rich:oci";
const SPLICED: &str = "test/spliced:oci";

// ---------------------------------------------------------------------------
// How tests reach a repository

/// Makes the [`MountSource`] of a repository for one transport.
type Via = fn(&TestRepo) -> MountSource;

/// `KEYFILE.pub` of a test repository.
fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// The repository directory, verified with `--pubkey`.
fn local_dir(repo: &TestRepo) -> MountSource {
    MountSource::dir(&repo.repo, Some(&pubkey(repo)))
}

/// Root, umoci and FUSE, or a SKIP line.
fn ready() -> bool {
    require_oracle_tools(false) && require_fuse()
}

// ---------------------------------------------------------------------------
// The shared fixture

/// `rich` and `spliced` published as [`RICH`] and [`SPLICED`], with their
/// `umoci unpack` oracles.
struct Fixture {
    repo: TestRepo,
    rich_oracle: PathBuf,
    spliced_oracle: PathBuf,
    /// Holds the OCI layout and the oracles; declared last, dropped last.
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn build() -> Fixture {
        let t0 = Instant::now();
        let tmp = tempdir();
        let (rich, spliced) = build_spliced(&tmp.path().join("images"));
        let rich_oracle = rich.unpack(&tmp.path().join("oracle-rich"));
        let spliced_oracle = spliced.unpack(&tmp.path().join("oracle-spliced"));
        let repo = TestRepo::new("mount.test");
        repo.publish_one(&rich.source(), Some(RICH));
        repo.publish_one(&spliced.source(), Some(SPLICED));
        eprintln!(
            "fixture: built and published rich and spliced in {:?}",
            t0.elapsed()
        );
        Fixture {
            repo,
            rich_oracle,
            spliced_oracle,
            _tmp: tmp,
        }
    }

    fn oracle(&self, name: &str) -> &Path {
        match name {
            RICH => &self.rich_oracle,
            SPLICED => &self.spliced_oracle,
            _ => panic!("no oracle for {name}"),
        }
    }
}

fn layer_count(name: &str) -> usize {
    match name {
        RICH => 3,
        SPLICED => 4,
        _ => panic!("unknown fixture image {name}"),
    }
}

/// The shared fixture: built by the first test that asks, shared by every
/// test holding it, deleted when the last one lets go (so nothing is left in
/// the temp dir; a later test rebuilds it if it has to).
fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    // Held while building: concurrent tests wait for the one build. A build
    // that panicked poisons the lock and leaves it empty; the next one retries.
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = shared.upgrade() {
        return f;
    }
    let f = Arc::new(Fixture::build());
    *shared = Arc::downgrade(&f);
    f
}

// ---------------------------------------------------------------------------
// Helpers

/// `images/<repository>/<tag>` for `NAME:TAG`.
fn image_link(name: &str) -> String {
    let (repo, tag) = name
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{name} has no tag"));
    format!("images/{repo}/{tag}")
}

/// Lexically resolves `.` and `..` (no symlinks followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every non-directory below `expected` has the same `st_nlink` below
/// `actual` (the comparer checks the grouping, not the count).
fn assert_nlinks_equal(expected: &Path, actual: &Path, what: &str) {
    let mut diffs = Vec::new();
    for e in walkdir::WalkDir::new(expected).follow_links(false) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(expected).unwrap();
        let want = e.metadata().unwrap().nlink();
        match std::fs::symlink_metadata(actual.join(rel)) {
            Ok(md) if md.nlink() == want => {}
            Ok(md) => diffs.push(format!("{rel:?}: st_nlink {} != {want}", md.nlink())),
            Err(err) => diffs.push(format!("{rel:?}: {err}")),
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} st_nlink differences:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// All entry names of a directory, sorted.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `pread` until `len` bytes or end of file.
fn pread_full(f: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The bytes `expected[offset..offset+len]`, clipped to the file.
fn slice(expected: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset as usize).min(expected.len());
    let end = (offset as usize).saturating_add(len).min(expected.len());
    &expected[start..end]
}

/// Describes how two byte strings differ (first differing offset).
fn first_difference(want: &[u8], got: &[u8]) -> String {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at +{i} (want {:#04x}, got {:#04x}); lengths {} and {}",
            want[i],
            got[i],
            want.len(),
            got.len()
        ),
        None => format!("length {} instead of {}", got.len(), want.len()),
    }
}

/// Reads of a `size`-byte file: edges, MiB boundaries, end of file and past
/// it, and seeded random pieces of up to 6 MiB (content-defined chunks are
/// MiB-sized, so most of these cross a chunk boundary).
fn read_plan(size: usize, seed: u64) -> Vec<(u64, usize)> {
    let size = size as u64;
    let mib = 1u64 << 20;
    let mut plan = vec![
        (0, 1),
        (0, 4096),
        (1, 4095),
        (4095, 2),
        (0, 1 << 20),
        (size - 12345, 12345),
        (size - 1, 1),
        (size - 100, 1000),
        (size, 10),
        (size + 5000, 10),
    ];
    let mut k = 1;
    while k * mib < size {
        plan.push((k * mib - 3, 7));
        k += 1;
    }
    let mut rng = Rng::new(seed);
    for _ in 0..40 {
        let off = rng.below(size);
        let len = 1 + rng.below(6 << 20) as usize;
        plan.push((off, len));
    }
    plan
}

/// Runs `plan` against `f` and checks every piece against `expected`.
fn check_preads(f: &File, expected: &[u8], plan: &[(u64, usize)], what: &str) {
    let mut bad = Vec::new();
    for &(off, len) in plan {
        let want = slice(expected, off, len);
        match pread_full(f, off, len) {
            Ok(got) if got == want => {}
            Ok(got) => bad.push(format!(
                "pread({off}, {len}): {}",
                first_difference(want, &got)
            )),
            Err(e) => bad.push(format!("pread({off}, {len}): {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} reads wrong:\n  {}",
        bad.len(),
        plan.len(),
        bad.join("\n  ")
    );
}

/// All xattrs of `path` (following symlinks) through `rustix::fs::listxattr`
/// and `getxattr`, without `security.*` (the host's LSM may add labels).
fn xattrs_via_rustix(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Errno> {
    let len = rustix::fs::listxattr_query(path)?;
    let mut list = vec![0u8; len];
    let n = rustix::fs::listxattr(path, &mut list[..])?;
    let mut out = BTreeMap::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"security.") {
            continue;
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        let vlen = rustix::fs::getxattr_query(path, cname)?;
        let mut val = vec![0u8; vlen];
        let got = rustix::fs::getxattr(path, cname, &mut val[..])?;
        val.truncate(got);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

// ===========================================================================
// Bodies (each run by one `#[test]` per transport, below)

/// `mount --image NAME` equals `umoci unpack` of the image (the comparer and
/// options of the oracle test of `pull`), link counts included; then
/// `stratum umount` makes the mount process exit 0.
fn image_mount_equals_oracle(via: Via, name: &str) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let tmp = tempdir();
    let m = Mount::start(&via(&fx.repo), &tmp.path().join("mnt"), Some(name));
    let oracle = fx.oracle(name);
    assert_trees_equal(
        oracle,
        m.path(),
        &CompareOpts::default(),
        &format!("mount --image {name} vs umoci unpack"),
    );
    assert_nlinks_equal(oracle, m.path(), &format!("mount --image {name}"));
    m.unmount();
}

/// The whole namespace: `/images/<repo>/<tag>` is a relative symlink to the
/// image's `/flat/ab/<hex>`, which equals the `--image` mount; `/layers/ab/`
/// lists exactly the published layers and `/flat/ab/` the flat trees.
fn namespace_mount(via: Via) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let tmp = tempdir();
    let src = via(&fx.repo);
    let ns = Mount::start(&src, &tmp.path().join("ns"), None);
    let top = names(ns.path());
    for d in ["images", "flat", "layers"] {
        assert!(
            top.contains(d),
            "/{d} missing from the namespace root: {top:?}"
        );
    }
    let images = fx.repo.images();
    let images = images.as_array().unwrap();
    assert_eq!(images.len(), 2, "{images:#?}");
    let mut want_layers = BTreeSet::new();
    let mut want_flats = BTreeSet::new();
    for (i, img) in images.iter().enumerate() {
        let name = img["name"].as_str().unwrap();
        let layers = check_image_object(img, layer_count(name));
        want_layers.extend(layers);
        let flat = img["flat_path"].as_str().unwrap();
        want_flats.insert(flat.to_string());

        let link = ns.at(image_link(name));
        let md = std::fs::symlink_metadata(&link)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", link.display()));
        assert!(
            md.file_type().is_symlink(),
            "{} is not a symlink",
            link.display()
        );
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.is_relative() && target.starts_with(".."),
            "{} -> {} must be a relative link up to /flat",
            link.display(),
            target.display()
        );
        let lexical = normalize(&link.parent().unwrap().join(&target));
        assert_eq!(
            lexical,
            ns.at(flat),
            "{} -> {}",
            link.display(),
            target.display()
        );
        let resolved = std::fs::canonicalize(&link)
            .unwrap_or_else(|e| panic!("resolving {}: {e}", link.display()));
        assert_eq!(
            resolved,
            ns.at(flat),
            "{} resolves elsewhere",
            link.display()
        );
        assert!(resolved.is_dir());

        let im = Mount::start(&src, &tmp.path().join(format!("img{i}")), Some(name));
        assert_trees_equal(
            im.path(),
            &resolved,
            &CompareOpts::default(),
            &format!("namespace {} vs mount --image {name}", image_link(name)),
        );
        im.unmount();
    }

    // `ls /layers/<ab>/` and `ls /flat/<ab>/`.
    for (top, want) in [("layers", &want_layers), ("flat", &want_flats)] {
        let mut listed = BTreeSet::new();
        for ab in names(&ns.at(top)) {
            assert!(
                ab.len() == 2 && ab.bytes().all(|b| b.is_ascii_hexdigit()),
                "/{top}/{ab} is not a two-hex-digit partition"
            );
            for hex in names(&ns.at(format!("{top}/{ab}"))) {
                let p = format!("/{top}/{ab}/{hex}");
                assert!(
                    hex.len() == 64 && hex.starts_with(&ab),
                    "{p}: not named by its digest"
                );
                assert!(ns.at(&p).is_dir(), "{p} is not a directory");
                listed.insert(p);
            }
        }
        for p in want {
            let (dir, hex) = p.rsplit_once('/').unwrap();
            assert!(
                names(&ns.at(dir)).contains(hex),
                "ls {dir}/ does not list {hex}"
            );
        }
        assert_eq!(&listed, want, "entries under /{top}/ vs images --json");
    }
    ns.unmount();
}

/// Stacks the mounted per-layer trees of `name` with overlayfs (straight
/// from the FUSE mount) and compares the overlay with the flat mount and
/// with `umoci unpack`.
fn overlay_of_mounted_layers(via: Via, name: &str) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let tmp = tempdir();
    let ns = Mount::start(&via(&fx.repo), &tmp.path().join("ns"), None);
    let img = fx.repo.image(name);
    let layers = check_image_object(&img, layer_count(name));
    let flat = ns.at(img["flat_path"].as_str().unwrap());

    // What overlayfs will read from the FUSE lowers: whiteouts are char 0:0,
    // opaque directories carry trusted.overlay.opaque=y.
    let wh = ns.at(&layers[1]).join("gone");
    let md = std::fs::symlink_metadata(&wh).unwrap_or_else(|e| panic!("{}: {e}", wh.display()));
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "{} must be a 0:0 whiteout, is {:?} rdev {:#x}",
        wh.display(),
        md.file_type(),
        md.rdev()
    );
    if name == SPLICED {
        // A mount made by root shows the trusted.* marker its overlayfs
        // reads, not the user.* one (which the merged view would show).
        let opq = ns.at(&layers[3]).join("replaced2");
        let mut v = [0u8; 16];
        let n = rustix::fs::getxattr(&opq, "trusted.overlay.opaque", &mut v[..])
            .unwrap_or_else(|e| panic!("getxattr {} trusted.overlay.opaque: {e}", opq.display()));
        assert_eq!(&v[..n], b"y", "trusted.overlay.opaque of {}", opq.display());
        assert_eq!(
            rustix::fs::getxattr(&opq, "user.overlay.opaque", &mut v[..]).err(),
            Some(rustix::io::Errno::NODATA),
            "user.overlay.opaque of {} in a root mount",
            opq.display()
        );
    }

    let lowers: Vec<PathBuf> = layers.iter().rev().map(|l| ns.at(l)).collect();
    let ov = match OverlayMount::mount(&lowers, &tmp.path().join("overlay")) {
        Ok(ov) => ov,
        Err(e) => {
            return skip(&format!(
                "overlayfs refuses the FUSE layer trees as lower dirs: {e}"
            ))
        }
    };
    assert_trees_equal(
        &flat,
        &ov.mountpoint,
        &CompareOpts::default(),
        &format!("overlay of the mounted layer trees of {name} vs its flat mount"),
    );
    assert_trees_equal(
        fx.oracle(name),
        &ov.mountpoint,
        &CompareOpts::default(),
        &format!("overlay of the mounted layer trees of {name} vs umoci unpack"),
    );
    drop(ov);
    ns.unmount();
}

/// True when an ELF executable names a program interpreter (is dynamic).
fn elf_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert!(
        elf.len() > 64 && &elf[..5] == b"\x7fELF\x02",
        "not a 64-bit ELF file"
    );
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// A real program from a mounted rootfs: busybox from Debian's
/// `busybox-static`, run with `chroot`.
fn busybox_in_chroot(via: Via) {
    if !ready() || !support::require_tool("chroot") {
        return;
    }
    // Resolved now: the program runs with PATH=/bin (the image's).
    let chroot_bin = support::which("chroot").unwrap();
    let bb = Path::new("/bin/busybox");
    let Ok(bytes) = std::fs::read(bb) else {
        return skip("/bin/busybox is missing: apt-get install busybox-static (see .ci/run)");
    };
    if elf_interpreter(&bytes) {
        return skip(
            "/bin/busybox is dynamically linked: apt-get install busybox-static (see .ci/run)",
        );
    }
    let tmp = tempdir();
    let hello = "hello from a stratum mount\n";
    let mut image = ImageBuilder::new(&tmp.path().join("images"), "busybox");
    image.add_layer(|root| {
        fsutil::chmod(root, 0o755);
        fsutil::file(root, b"bin/busybox", &bytes, 0o755);
        for applet in ["sh", "ls", "cat"] {
            fsutil::symlink(root, format!("bin/{applet}").as_bytes(), b"busybox");
        }
        fsutil::file(root, b"etc/hello", hello.as_bytes(), 0o644);
    });
    let repo = TestRepo::new("busybox.test");
    repo.publish_one(&image.source(), Some("test/busybox:1"));
    let m = Mount::start(&via(&repo), &tmp.path().join("mnt"), Some("test/busybox:1"));
    let chroot = |args: &[&str]| {
        let mut c = Command::new(&chroot_bin);
        c.arg(m.path()).args(args).env_clear().env("PATH", "/bin");
        run_cmd(c).assert_success().stdout_str()
    };
    assert_eq!(
        chroot(&["/bin/busybox", "sh", "-c", "echo hi; cat /etc/hello; ls /"]),
        format!("hi\n{hello}bin\netc\n")
    );
    // Through the symlinks, and a big read of the binary itself.
    assert_eq!(
        chroot(&["/bin/sh", "-c", "ls /bin; cat /bin/busybox | busybox wc -c"]).replace(' ', ""),
        format!("busybox\ncat\nls\nsh\n{}\n", bytes.len())
    );
    m.unmount();
}

/// Reads through `mount --image` of `rich`: pieces of the big (chunked) file
/// at many offsets, with O_DIRECT (the server sees exactly these offsets) and
/// through the page cache, also from threads at once; xattrs through
/// `getxattr`/`listxattr`, including the size-query and ERANGE protocol;
/// hardlinks sharing an inode with the right `st_nlink`; `statfs`; writes
/// refused.
fn reads_xattrs_links_statfs(via: Via) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let oracle = fx.oracle(RICH);
    let tmp = tempdir();
    let m = Mount::start(&via(&fx.repo), &tmp.path().join("mnt"), Some(RICH));

    // --- The big file.
    let expected = std::fs::read(oracle.join("big/random.bin")).unwrap();
    assert_eq!(expected.len(), BIG_FILE_SIZE);
    let big = m.at("big/random.bin");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), BIG_FILE_SIZE as u64);
    let plan = read_plan(BIG_FILE_SIZE, 0xC0FFEE);
    // O_DIRECT first, on a cold mount: FUSE passes each pread through as is.
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&big)
    {
        Ok(f) => check_preads(&f, &expected, &plan, "O_DIRECT preads of big/random.bin"),
        Err(e) => eprintln!("NOTE: O_DIRECT open refused ({e}); buffered reads only"),
    }
    let f = File::open(&big).unwrap();
    check_preads(&f, &expected, &plan, "buffered preads of big/random.bin");
    // Sequentially in odd-sized pieces (crossing every chunk boundary).
    let mut whole = Vec::with_capacity(expected.len());
    let piece = (1 << 20) + 4099;
    loop {
        let got = pread_full(&f, whole.len() as u64, piece).unwrap();
        if got.is_empty() {
            break;
        }
        whole.extend_from_slice(&got);
    }
    assert!(
        whole == expected,
        "sequential read of big/random.bin: {}",
        first_difference(&expected, &whole)
    );
    // Concurrent readers on a fresh file description each (O_DIRECT if possible).
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (big, expected) = (&big, &expected);
            s.spawn(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(big)
                    .or_else(|_| File::open(big))
                    .unwrap();
                let plan = read_plan(BIG_FILE_SIZE, 1000 + t);
                check_preads(&f, expected, &plan, &format!("reader thread {t}"));
            });
        }
    });

    // An open file keeps a lazily unmounted FUSE mount (and its server) alive.
    drop(f);

    // --- Xattrs.
    let xf = m.at("xattr/file");
    let got = xattrs_via_rustix(&xf).unwrap();
    let want: BTreeMap<Vec<u8>, Vec<u8>> = [
        (&b"user.added"[..], &b"added in layer 2"[..]),
        (b"user.binary", &[0, 1, 2, 0xfe, 0xff]),
        (b"user.foo", b"changed in layer 2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_vec(), v.to_vec()))
    .collect();
    assert_eq!(got, want, "xattrs of xattr/file");
    // The size query, a too-small buffer, a missing name.
    let foo_len = rustix::fs::getxattr_query(&xf, "user.foo").unwrap();
    assert_eq!(foo_len, b"changed in layer 2".len(), "getxattr size query");
    let mut small = vec![0u8; foo_len - 1];
    assert_eq!(
        rustix::fs::getxattr(&xf, "user.foo", &mut small[..]),
        Err(Errno::RANGE),
        "getxattr into a too-small buffer"
    );
    assert_eq!(
        rustix::fs::getxattr(&xf, "user.doomed", &mut [0u8; 64][..]),
        Err(Errno::NODATA),
        "getxattr of an xattr removed in layer 2"
    );
    let list_len = rustix::fs::listxattr_query(&xf).unwrap();
    assert_eq!(list_len, "user.added\0user.binary\0user.foo\0".len());
    let mut small = vec![0u8; list_len - 1];
    assert_eq!(
        rustix::fs::listxattr(&xf, &mut small[..]),
        Err(Errno::RANGE),
        "listxattr into a too-small buffer"
    );
    // Every path the oracle has (symlinks excepted: these calls follow them).
    let mut diffs = Vec::new();
    for e in walkdir::WalkDir::new(oracle).follow_links(false) {
        let e = e.unwrap();
        if e.file_type().is_symlink() {
            continue;
        }
        let rel = e.path().strip_prefix(oracle).unwrap();
        let want = xattrs_via_rustix(e.path()).unwrap();
        match xattrs_via_rustix(&m.path().join(rel)) {
            Ok(got) if got == want => {}
            Ok(got) => diffs.push(format!("{rel:?}: {got:?} != {want:?}")),
            Err(err) => diffs.push(format!("{rel:?}: {err}")),
        }
    }
    assert!(
        diffs.is_empty(),
        "xattrs through getxattr/listxattr differ from umoci unpack:\n  {}",
        diffs.join("\n  ")
    );

    // --- Hardlinks: hl/b is gone (layer 3), hl/late joined hl/x (layer 2).
    let st = |rel: &str| {
        std::fs::symlink_metadata(m.at(rel)).unwrap_or_else(|e| panic!("lstat {rel}: {e}"))
    };
    let groups: [(&[&str], u64); 3] = [
        (&["hl/a", "hl/sub/c"], 2),
        (&["hl/x", "hl/y", "hl/late"], 3),
        (&["hl/lonely"], 1),
    ];
    let mut inos = Vec::new();
    for (paths, nlink) in groups {
        let ino = st(paths[0]).ino();
        for p in paths {
            let md = st(p);
            assert_eq!(md.ino(), ino, "{p} must share the inode of {}", paths[0]);
            assert_eq!(md.nlink(), nlink, "st_nlink of {p}");
        }
        inos.push(ino);
    }
    assert_eq!(
        inos.iter().collect::<BTreeSet<_>>().len(),
        inos.len(),
        "distinct hardlink groups share an inode: {inos:?}"
    );
    // readdir's d_ino agrees with stat.
    for dir in ["hl", "hl/sub", "."] {
        for e in std::fs::read_dir(m.at(dir)).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(
                e.ino(),
                md.ino(),
                "d_ino vs st_ino of {}",
                e.path().display()
            );
        }
    }
    // Inode numbers are unique across the tree, except within hardlink groups.
    let mut by_ino: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for e in walkdir::WalkDir::new(m.path()).follow_links(false) {
        let e = e.unwrap();
        by_ino
            .entry(e.metadata().unwrap().ino())
            .or_default()
            .push(e.path().to_path_buf());
    }
    let shared: Vec<_> = by_ino
        .values()
        .filter(|v| v.len() > 1 && v.iter().any(|p| p.is_dir()))
        .collect();
    assert!(
        shared.is_empty(),
        "directories sharing an inode: {shared:?}"
    );

    // --- statfs, read-only.
    let sfs = rustix::fs::statfs(m.path()).expect("statfs of the mount");
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    assert_eq!(sfs.f_type as i64, FUSE_SUPER_MAGIC, "statfs f_type");
    let vfs = rustix::fs::statvfs(m.path()).expect("statvfs of the mount");
    assert!(vfs.f_bsize > 0, "statvfs f_bsize: {}", vfs.f_bsize);
    assert!(vfs.f_namemax >= 255, "statvfs f_namemax: {}", vfs.f_namemax);
    assert!(
        vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
        "the mount must be read-only: flags {:?}",
        vfs.f_flag
    );
    let err = File::create(m.at("new-file")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "create: {err}");
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(m.at("etc/hostname"))
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "open for writing: {err}"
    );
    let err = std::fs::create_dir(m.at("new-dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "mkdir: {err}");

    m.unmount();
}

/// SIGTERM and SIGINT unmount: the mount process exits 0 within seconds and
/// the mount point is an empty, unmounted directory again.
fn unmount_on_signals(via: Via) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let tmp = tempdir();
    let src = via(&fx.repo);
    let want = std::fs::read(fx.oracle(RICH).join("etc/hostname")).unwrap();
    for (i, sig) in [Signal::TERM, Signal::INT].into_iter().enumerate() {
        let mut m = Mount::start(&src, &tmp.path().join(format!("mnt{i}")), Some(RICH));
        assert_eq!(std::fs::read(m.at("etc/hostname")).unwrap(), want);
        let t0 = Instant::now();
        let status = m.signal(sig, Duration::from_secs(5));
        assert!(
            status.success(),
            "after {sig:?} the mount process exited with {status}\n--- stderr ---\n{}",
            m.stderr()
        );
        assert!(
            !is_mounted(m.path()),
            "{} is still mounted after {sig:?} and exit",
            m.path().display()
        );
        assert!(
            names(m.path()).is_empty(),
            "the mount point shows entries after {sig:?}"
        );
        eprintln!("{sig:?}: unmounted and exited in {:?}", t0.elapsed());
    }
}

/// SIGTERM while a file is open: the mount may stay until the file is
/// closed, but the process must stay in control: reads of the open file
/// still work, and once it is closed the process exits 0 (by itself after a
/// lazy unmount, or at the latest on a second SIGTERM) and nothing is left
/// mounted.
fn unmount_on_sigterm_while_busy(via: Via) {
    if !ready() {
        return;
    }
    let fx = fixture();
    let tmp = tempdir();
    let want = std::fs::read(fx.oracle(RICH).join("etc/hostname")).unwrap();
    let mut m = Mount::start(&via(&fx.repo), &tmp.path().join("mnt"), Some(RICH));
    let f = File::open(m.at("etc/hostname")).unwrap();
    m.kill(Signal::TERM);
    let early = m.wait(Duration::from_secs(2));
    assert!(
        early.is_none(),
        "the mount process exited ({early:?}) while a file was open\n--- stderr ---\n{}",
        m.stderr()
    );
    assert_eq!(
        pread_full(&f, 0, 4096).unwrap(),
        want,
        "reading an open file after SIGTERM"
    );
    drop(f);
    let mut status = m.wait(Duration::from_secs(2));
    if status.is_none() {
        // Not detached lazily: a second SIGTERM, now that nothing is busy.
        m.kill(Signal::TERM);
        // Generous: returns as soon as the process exits, and a loaded CI
        // machine has taken more than 5 s to unmount.
        status = m.wait(Duration::from_secs(30));
    }
    let stderr = m.stderr();
    let status = status.unwrap_or_else(|| {
        panic!(
            "after SIGTERM with a file open, then the file closed and SIGTERM again, \
             the mount process still runs and {} is {}mounted\n--- stderr ---\n{stderr}",
            m.path().display(),
            if is_mounted(m.path()) {
                "still "
            } else {
                "not "
            }
        )
    });
    assert!(status.success(), "exit {status}\n--- stderr ---\n{stderr}");
    assert!(
        !is_mounted(m.path()),
        "{} is still mounted",
        m.path().display()
    );
}

/// Mounts that cannot work fail at once, cleanly, and mount nothing.
fn mount_failures(via: Via) {
    if !require_root() || !require_fuse() {
        return;
    }
    let repo = TestRepo::new("empty.test");
    let tmp = tempdir();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let src = via(&repo);
    let none: &[&str] = &[];

    let err = Mount::expect_failure(&src, &mnt, Some("test/nope:1"), none);
    assert!(
        err.contains("test/nope:1"),
        "message must name the image: {err}"
    );

    let other_key = tmp.path().join("other.key");
    stratum([std::ffi::OsStr::new("keygen"), other_key.as_os_str()]);
    let mut wrong = src.clone();
    wrong.pubkey = Some(tmp.path().join("other.key.pub"));
    Mount::expect_failure(&wrong, &mnt, None, none);

    Mount::expect_failure(&src, &tmp.path().join("does-not-exist"), None, none);
    assert!(names(&mnt).is_empty());
}

// ===========================================================================
// Tests: one line per body and transport.

#[test]
fn mountinfo_fields_are_unescaped() {
    assert_eq!(
        unescape_mountinfo(br"/a\040b\134c\011d\012"),
        b"/a b\\c\td\n"
    );
    assert_eq!(unescape_mountinfo(br"/trail\04"), br"/trail\04");
    assert_eq!(unescape_mountinfo(br"/not\999"), br"/not\999");
}

#[test]
fn image_mount_rich_equals_umoci_unpack() {
    image_mount_equals_oracle(local_dir, RICH);
}

#[test]
fn image_mount_spliced_equals_umoci_unpack() {
    image_mount_equals_oracle(local_dir, SPLICED);
}

#[test]
fn namespace_links_flat_trees_and_layers() {
    namespace_mount(local_dir);
}

#[test]
fn overlay_of_mounted_layer_trees_rich() {
    overlay_of_mounted_layers(local_dir, RICH);
}

#[test]
fn overlay_of_mounted_layer_trees_spliced() {
    overlay_of_mounted_layers(local_dir, SPLICED);
}

#[test]
fn busybox_runs_from_a_mounted_image() {
    busybox_in_chroot(local_dir);
}

#[test]
fn reads_xattrs_hardlinks_and_statfs() {
    reads_xattrs_links_statfs(local_dir);
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    unmount_on_signals(local_dir);
}

#[test]
fn sigterm_while_a_file_is_open() {
    unmount_on_sigterm_while_busy(local_dir);
}

#[test]
fn failed_mounts_are_clean() {
    mount_failures(local_dir);
}

/// The mount options of whatever is mounted at `path` (from mountinfo).
fn mount_options(path: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 6 && f[4] == want).then(|| f[5].split(',').map(str::to_owned).collect())
        })
        .next_back()
        .unwrap_or_default()
}

/// Regression: mounts used to be `suid,dev`, so a hostile image's setuid
/// shell or writable block device gave root to any local user who could
/// reach the mount point. Now `nosuid,nodev` unless asked for.
#[test]
fn mounts_are_nosuid_nodev_unless_asked() {
    if !require_root() || !require_fuse() {
        return;
    }
    let repo = TestRepo::new("opts.test");
    let src = local_dir(&repo);
    let tmp = tempdir();
    let mnt = tmp.path().join("mnt");
    let m = Mount::start(&src, &mnt, None);
    let opts = mount_options(m.path());
    assert!(
        opts.contains(&"nosuid".to_owned()) && opts.contains(&"nodev".to_owned()),
        "{opts:?}"
    );
    m.unmount();
    let m = Mount::start_with(&src, &mnt, None, &["--suid", "--dev"]);
    let opts = mount_options(m.path());
    assert!(
        !opts.contains(&"nosuid".to_owned()) && !opts.contains(&"nodev".to_owned()),
        "{opts:?}"
    );
    m.unmount();
}
