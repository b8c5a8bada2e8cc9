//! `stratum mount` over HTTP, end to end: real processes on 127.0.0.1 (the
//! `stratum` binary, `stratum serve`, Debian's `squid`, the kernel's FUSE
//! and overlayfs).
//!
//! - The `rich` fixture mounted through `stratum serve` (`--image`, `--thin`
//!   flat and `--thin --layers`) equals `umoci unpack` of the image.
//! - Through Squid: every request goes through the proxy, and a second node
//!   (a fresh cache) is served by Squid alone: the origin sees each object at
//!   most once.
//! - Laziness: one small file read from a fresh cache fetches that file's
//!   object and the catalogs, not the image.
//! - Faults: a dead first mirror, a wrong key, a tampered manifest, a
//!   rollback, `kill -9` of a mount, two mounts sharing a cache, a quota
//!   smaller than one read, and a server that dies or hangs mid-way (the
//!   read fails with EIO within the transport's timeouts, never hangs).
//!
//! Apart from `rich` (built with umoci), the images are hand-built OCI
//! layouts (see [`small_repo`]), so each test has its own repository, server
//! and caches and the tests run in parallel.
//!
//! Needs root and `/dev/fuse` (plus umoci for the oracle test and squid for
//! the proxy test); each test skips with a message when one is missing.
#![allow(clippy::unwrap_used)]

use crate::support;

use stratum_fetcher::testing as http_server;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::compare::{assert_trees_equal, CompareOpts};
use crate::support::fixtures::build_rich;
use crate::support::fsutil::Rng;
use crate::support::mount::{is_mounted, mounts_at, require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::services::StratumServe;
use crate::support::squid::{squid_bin, Proxied, Squid};
use crate::support::{
    require_root, require_tool, run_cmd, skip, stratum, stratum_bin, tempdir, TestRepo,
};
use rustix::process::{Pid, Signal};

const RICH: &str = "test/rich:oci";
const SMALL: &str = "test/small:1";
/// A name only Squid can resolve (through its own `hosts_file`).
const ORIGIN_HOST: &str = "stratum-origin.test";
/// What a read over a dead or hung server may take at most. The transport's
/// budget is 4 rounds × 20 s read timeout + backoff (`fetcher/src/transport.rs`).
const EIO_DEADLINE: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Readiness

/// Root and FUSE, or a SKIP line.
fn ready() -> bool {
    require_root() && require_fuse()
}

/// `KEYFILE.pub` of a test repository.
fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

// ---------------------------------------------------------------------------
// A small hand-built image with known bytes

/// Regular files of an image: relative path → bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// Publishes [`SMALL`] into a new repository: an inline file, a 6000-byte
/// file (one object), 120 files of 4–24 KiB (one object each) in 8
/// directories, a 1.5 MiB file (one object), a chunked file of `big` bytes
/// (if `big > 0`) and a symlink. Uncompressed layer: nothing to gzip in a
/// debug build.
fn small_repo(name: &str, big: usize, seed: u64) -> (TestRepo, Files) {
    let repo = TestRepo::new(name);
    let files = publish_small(&repo, "1", SMALL, big, seed);
    (repo, files)
}

/// Builds and publishes one small image as `image` (see [`small_repo`]).
fn publish_small(repo: &TestRepo, tag: &str, image: &str, big: usize, seed: u64) -> Files {
    let mut rng = Rng::new(seed);
    let mut files = Files::new();
    files.insert(
        "etc/hostname".into(),
        format!("small-{seed}\n").into_bytes(),
    );
    files.insert("etc/motd".into(), rng.bytes(6000));
    for i in 0..120 {
        let len = 4200 + rng.below(20_000) as usize;
        files.insert(format!("docs/d{}/f{i:03}", i % 8), rng.bytes(len));
    }
    files.insert("big/mid.bin".into(), rng.bytes(3 * MIB / 2));
    if big > 0 {
        files.insert("big/huge.bin".into(), rng.bytes(big));
    }
    let mut entries = vec![TarEntry::dir(b"./")];
    let mut dirs = BTreeSet::new();
    for rel in files.keys() {
        let mut p = Path::new(rel).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_str().unwrap().to_string());
            p = d.parent();
        }
    }
    for d in &dirs {
        entries.push(TarEntry::dir(format!("{d}/").as_bytes()));
    }
    for (rel, bytes) in &files {
        entries.push(TarEntry::file(rel.as_bytes(), bytes));
    }
    entries.push(TarEntry::symlink(b"lnk", b"etc/motd"));
    let layout = Layout::create(&repo.scratch("layout"));
    layout.add_image(tag, &[Layer::uncompressed(&entries)]);
    repo.publish_one(&format!("oci:{}:{tag}", layout.dir.display()), Some(image));
    files
}

// ---------------------------------------------------------------------------
// Reading and checking

/// Reads every file of `files` under `root` (in `order` if given) and
/// checks its bytes; checks too that `root` holds no other regular file.
/// Returns the bytes read.
fn check_files(root: &Path, files: &Files, reverse: bool, what: &str) -> u64 {
    let mut bad = Vec::new();
    let mut total = 0u64;
    let mut order: Vec<(&String, &Vec<u8>)> = files.iter().collect();
    if reverse {
        order.reverse();
    }
    for (rel, want) in order {
        match std::fs::read(root.join(rel)) {
            Ok(got) if &got == want => total += got.len() as u64,
            Ok(got) => bad.push(format!("{rel}: {}", first_difference(want, &got))),
            Err(e) => bad.push(format!("{rel}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} files read wrong:\n  {}",
        bad.len(),
        files.len(),
        bad.join("\n  ")
    );
    let found: BTreeSet<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap_or_else(|e| panic!("{what}: walking {}: {e}", root.display())))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        found,
        want,
        "{what}: the regular files under {}",
        root.display()
    );
    total
}

fn first_difference(want: &[u8], got: &[u8]) -> String {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at +{i}; lengths {} and {}",
            want.len(),
            got.len()
        ),
        None => format!("length {} instead of {}", got.len(), want.len()),
    }
}

// ---------------------------------------------------------------------------
// The node cache

/// Files and bytes under `CACHE/<sub>` (`objects` or `catalogs`), tolerant
/// of files that vanish meanwhile (eviction).
fn cache_usage(cache: &Path, sub: &str) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(cache.join(sub)).into_iter().flatten() {
        if e.file_type().is_file() {
            if let Ok(md) = e.metadata() {
                n += 1;
                bytes += md.len();
            }
        }
    }
    (n, bytes)
}

/// The ids (file names) under `CACHE/objects` and `CACHE/catalogs`.
fn cached_ids(cache: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for sub in ["objects", "catalogs"] {
        for e in walkdir::WalkDir::new(cache.join(sub)).into_iter().flatten() {
            if e.file_type().is_file() {
                ids.insert(e.file_name().to_str().unwrap().to_string());
            }
        }
    }
    ids
}

/// Every file under `CACHE/objects` and `CACHE/catalogs` holds the bytes of
/// its name (BLAKE3); returns how many were checked.
fn verify_cache(cache: &Path) -> usize {
    let mut n = 0;
    for sub in ["objects", "catalogs"] {
        for e in walkdir::WalkDir::new(cache.join(sub)) {
            let e = e.unwrap();
            if !e.file_type().is_file() {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            assert_eq!(
                stratum_catalog::ObjectId::of(&bytes).to_hex(),
                e.file_name().to_str().unwrap(),
                "{} does not hold the bytes of its name",
                e.path().display()
            );
            n += 1;
        }
    }
    n
}

/// `…/data/ab/<62 hex>[suffix]` → the object id `ab<62 hex>`.
fn data_path_id(path: &str) -> Option<String> {
    let rest = &path[path.find("/data/")? + "/data/".len()..];
    let (ab, name) = rest.split_once('/')?;
    let hex = name.get(..62)?;
    (ab.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("{ab}{hex}"))
}

// ---------------------------------------------------------------------------
// The origin's access log (`stratum serve`, RUST_LOG=stratum::serve=info)

#[derive(Debug)]
struct Served {
    path: String,
    status: u16,
    bytes: u64,
}

/// Removes ANSI colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The requests `stratum serve` logged so far, in order.
fn served(serve: &StratumServe) -> Vec<Served> {
    let log = strip_ansi(&serve.stderr());
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains("stratum::serve::access")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let (Some(path), Some(status), Some(bytes)) =
            (field("path"), field("status"), field("bytes"))
        else {
            panic!("unexpected access log line of stratum serve: {line:?}");
        };
        out.push(Served {
            path,
            status: status.parse().unwrap(),
            bytes: bytes.parse().unwrap(),
        });
    }
    out
}

/// Waits until the origin's log stops growing (a line is written when a
/// response body is dropped, just after the client has it).
fn settled_log(serve: &StratumServe) -> Vec<Served> {
    let mut last = served(serve).len();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = served(serve);
        if now.len() == last {
            return now;
        }
        last = now.len();
    }
}

// ---------------------------------------------------------------------------
// A mount process with a custom environment or an overlay at MOUNTPOINT

/// `stratum mount …` run by this file itself (not [`Mount`]): for a child
/// environment (proxy variables) and for `--thin --layers`, whose mount
/// point is an overlayfs over per-layer FUSE mounts. Stopped on drop.
struct ProcMount {
    mountpoint: PathBuf,
    child: Option<Child>,
    cmdline: String,
    logs: tempfile::TempDir,
    /// `--layers`: overlayfs at the mount point; stopped with SIGTERM
    /// (`stratum umount MOUNTPOINT` detaches the overlay, but the process
    /// and its per-layer FUSE mounts keep running until a signal).
    overlay: bool,
}

impl ProcMount {
    /// Spawns `stratum mount ARGS…` (which name `mountpoint`, created here)
    /// with `envs` set (an empty value removes the variable) and waits until
    /// FUSE (or, with `overlay`, overlayfs) is mounted there.
    fn start(
        args: &[OsString],
        mountpoint: &Path,
        envs: &[(&str, &str)],
        overlay: bool,
    ) -> ProcMount {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mountpoint = std::fs::canonicalize(mountpoint).unwrap();
        assert!(
            !is_mounted(&mountpoint),
            "{} is already mounted",
            mountpoint.display()
        );
        let logs = tempdir();
        let mut cmd = Command::new(stratum_bin());
        cmd.arg("mount")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(File::create(logs.path().join("stdout")).unwrap())
            .stderr(File::create(logs.path().join("stderr")).unwrap());
        for (k, v) in envs {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        let mut m = ProcMount {
            mountpoint,
            child: Some(child),
            cmdline,
            logs,
            overlay,
        };
        let want = if overlay { "overlay" } else { "fuse" };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(t) = mounts_at(&m.mountpoint).last() {
                if t.starts_with(want) {
                    return m;
                }
            }
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child = None;
                panic!(
                    "{} exited with {st} before mounting\n--- stderr ---\n{}",
                    m.cmdline,
                    m.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not mount {want} within 60 s\n--- stderr ---\n{}",
                m.cmdline,
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Asks the process to stop (`stratum umount`, or SIGTERM for an
    /// overlay) and waits for it; `None` when it did not exit in time.
    fn request_stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if self.overlay {
            let _ = rustix::process::kill_process(Pid::from_child(&child), Signal::TERM);
        } else {
            let mut cmd = Command::new(stratum_bin());
            cmd.arg("umount").arg(&self.mountpoint);
            let _ = run_cmd(cmd);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the mount and asserts that the process exited 0 and left
    /// nothing mounted.
    fn stop(mut self) {
        let st = self.request_stop();
        assert!(
            st.is_some_and(|s| s.success()),
            "{} ended with {st:?} when stopped\n--- stderr ---\n{}",
            self.cmdline,
            self.stderr()
        );
        assert!(
            !is_mounted(&self.mountpoint),
            "{} still mounted",
            self.mountpoint.display()
        );
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = self.request_stop();
        for _ in 0..8 {
            if !is_mounted(&self.mountpoint) {
                return;
            }
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        eprintln!("LEFT MOUNTED: {}", self.mountpoint.display());
    }
}

/// `mount URL MNT --pubkey KEY --image NAME --cache CACHE EXTRA…`.
fn url_mount_args(
    url: &str,
    mnt: &Path,
    key: &Path,
    image: &str,
    cache: &Path,
    extra: &[&str],
) -> Vec<OsString> {
    let mut v = vec![
        os(url),
        os(mnt),
        os("--pubkey"),
        os(key),
        os("--image"),
        os(image),
        os("--cache"),
        os(cache),
    ];
    v.extend(extra.iter().map(os));
    v
}

/// `--cache DIR` as extra arguments for [`Mount::start_with`].
fn cache_arg(cache: &Path) -> Vec<OsString> {
    vec![os("--cache"), os(cache)]
}

// ===========================================================================
// 1. The oracle over HTTP

/// `rich` through `stratum serve`: `mount --image`, `mount --thin FILE` and
/// `mount --thin FILE --layers` each equal `umoci unpack` of the image (each
/// from a fresh cache, so every byte came over HTTP).
#[test]
fn rich_over_http_equals_umoci_unpack_image_thin_and_layers() {
    if !ready() || !require_tool("umoci") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("mounthttp.test");
    repo.publish_one(&rich.source(), Some(RICH));
    eprintln!("rich built, unpacked and published in {:?}", t0.elapsed());
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);

    let src = MountSource::url(&serve.url, &key, ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt-image"),
        Some(RICH),
        &cache_arg(&tmp.path().join("cache-image")),
    );
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount URL --image rich vs umoci unpack",
    );
    m.unmount();

    let thin = tmp.path().join("rich.thin.json");
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os(RICH),
        os("--url"),
        os(&serve.url),
        os("-o"),
        os(&thin),
    ]);
    // `--thin=FILE` is one argument, so it takes the guard's SOURCE slot:
    // `stratum mount --thin=FILE MOUNTPOINT --pubkey KEY …`.
    let thin_src = MountSource::dir(Path::new(&format!("--thin={}", thin.display())), Some(&key));
    let m = Mount::start_with(
        &thin_src,
        &tmp.path().join("mnt-thin"),
        None,
        &cache_arg(&tmp.path().join("cache-thin")),
    );
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount --thin (flat) vs umoci unpack",
    );
    m.unmount();

    let mnt = tmp.path().join("mnt-layers");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(&key),
            os("--layers"),
            os("--cache"),
            os(tmp.path().join("cache-layers")),
        ],
        &mnt,
        &[],
        true,
    );
    // Exact, overlay xattrs included: the merged view of a root overlay
    // mount shows none of overlayfs' markers (issue 12.14).
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount --thin --layers (overlayfs of the layer trees) vs umoci unpack",
    );
    m.stop();
    eprintln!(
        "rich over HTTP: 3 mounts compared in {:?} in all",
        t0.elapsed()
    );
}

/// Regression: `mount --thin` ignored `--mirror` and used only the
/// descriptor's URLs (or `--url`). With the descriptor's URL down, the
/// mirror serves the image.
#[test]
fn mount_thin_fails_over_to_a_mirror() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("thin-mirror.test");
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "1",
        &[Layer::gzip(&[TarEntry::file(
            b"hello",
            b"hello via the mirror\n",
        )])],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/mirror:1"));
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let thin = tmp.path().join("mirror.thin.json");
    // The descriptor names a URL where nothing listens.
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os("test/mirror:1"),
        os("--url"),
        os("http://127.0.0.1:9/"),
        os("-o"),
        os(&thin),
    ]);
    let mnt = tmp.path().join("mnt");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(pubkey(&repo)),
            os("--mirror"),
            os(&serve.url),
            os("--retries"),
            os("0"),
            os("--cache"),
            os(tmp.path().join("cache")),
        ],
        &mnt,
        &[],
        false,
    );
    assert_eq!(
        std::fs::read(m.path().join("hello")).unwrap(),
        b"hello via the mirror\n"
    );
    m.stop();
}

/// Regression (issue 12.14): the layer mounts under `mount --thin --layers`
/// showed both `trusted.overlay.opaque` and `user.overlay.opaque`; a root
/// overlay mount hides only the `trusted.` one, so the merged view showed
/// `user.overlay.opaque` on opaque directories. The layer mounts now show
/// only the namespace the stack reads; the image's own xattrs stay.
#[test]
fn thin_layers_merged_view_shows_no_overlay_xattrs() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("opaque.test");
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "1",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"etc/"),
                TarEntry::file(b"etc/old", b"old\n"),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"etc/").xattr("user.mine", b"kept"),
                TarEntry::opaque(b"etc/"),
                TarEntry::file(b"etc/new", b"new\n"),
            ]),
        ],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/opaque:1"));
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let thin = tmp.path().join("opaque.thin.json");
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os("test/opaque:1"),
        os("--url"),
        os(&serve.url),
        os("-o"),
        os(&thin),
    ]);
    let mnt = tmp.path().join("mnt");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(pubkey(&repo)),
            os("--layers"),
            os("--cache"),
            os(tmp.path().join("cache")),
        ],
        &mnt,
        &[],
        true,
    );
    let etc = m.path().join("etc");
    assert!(
        !etc.join("old").exists(),
        "the opaque directory hides etc/old"
    );
    assert!(etc.join("new").exists());
    let names = support::fsutil::xattrs(&etc).unwrap();
    let names: Vec<String> = names
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("overlay.")),
        "the merged view shows overlayfs' markers: {names:?}"
    );
    assert!(names.iter().any(|n| n == "user.mine"), "{names:?}");
    m.stop();
}

// ===========================================================================
// 2. Through Squid

/// Two nodes (fresh caches) mount one image through Squid: every request
/// goes through the proxy (the origin's host name resolves only in Squid's
/// `hosts_file`), and the second node is served from Squid's cache, so the
/// origin sees each object at most once.
#[test]
fn mounts_through_squid_and_squid_serves_the_repeats() {
    if !ready() {
        return;
    }
    let Some(bin) = squid_bin() else {
        return skip("squid is not installed (see .ci/run)");
    };
    let (repo, files) = small_repo("squid.test", 6 * MIB, 2);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let squid = Squid::start(&bin, &format!("127.0.0.1 {ORIGIN_HOST}\n"));
    let origin = format!("http://{ORIGIN_HOST}:{}", serve.addr.port());
    let proxy = squid.url();
    let env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("HTTPS_PROXY", ""),
        ("https_proxy", ""),
        ("ALL_PROXY", ""),
        ("all_proxy", ""),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let tmp = tempdir();
    let key = pubkey(&repo);
    let mut per_node = Vec::new();
    for node in 0..2 {
        let before = squid.log().len();
        let cache = tmp.path().join(format!("cache{node}"));
        let mnt = tmp.path().join(format!("mnt{node}"));
        let m = ProcMount::start(
            &url_mount_args(&origin, &mnt, &key, SMALL, &cache, &[]),
            &mnt,
            &env,
            false,
        );
        let bytes = check_files(
            m.path(),
            &files,
            node == 1,
            &format!("node {node} through squid"),
        );
        m.stop();
        let log = squid.settled_log();
        let mine: Vec<Proxied> = log[before..].to_vec();
        let ids = cached_ids(&cache);
        let proxied: BTreeSet<String> = mine.iter().filter_map(|p| data_path_id(&p.url)).collect();
        eprintln!(
            "node {node}: read {bytes} bytes; {} requests through squid ({} of objects: {:?}); {} objects cached",
            mine.len(),
            proxied.len(),
            count_codes(&mine),
            ids.len()
        );
        assert!(
            mine.iter().any(|p| p.url.ends_with("/.stratum/manifest")),
            "node {node}: the manifest did not go through squid: {mine:#?}"
        );
        for p in &mine {
            assert!(
                p.url.starts_with(&format!("{origin}/")),
                "node {node}: squid saw a request for something else: {p:?}"
            );
        }
        let missing: Vec<&String> = ids.iter().filter(|id| !proxied.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "node {node}: objects in the cache that never went through squid: {missing:?}\n{mine:#?}"
        );
        if node == 1 {
            let not_hits: Vec<&Proxied> = mine
                .iter()
                .filter(|p| data_path_id(&p.url).is_some() && !p.code.contains("HIT"))
                .collect();
            assert!(
                not_hits.is_empty(),
                "node 1: squid did not serve these objects from its cache: {not_hits:#?}"
            );
        }
        per_node.push(ids);
    }
    assert_eq!(
        per_node[0], per_node[1],
        "both nodes read the same image, so fetched the same objects"
    );

    let origin_log = settled_log(&serve);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &origin_log {
        *counts.entry(r.path.as_str()).or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = counts
        .iter()
        .filter(|(p, n)| p.starts_with("/data/") && **n > 1)
        .collect();
    let manifests = counts.get("/.stratum/manifest").copied().unwrap_or(0);
    eprintln!(
        "origin: {} requests ({} distinct data objects, manifest {manifests}×: {:?})",
        origin_log.len(),
        counts.keys().filter(|p| p.starts_with("/data/")).count(),
        origin_log
            .iter()
            .filter(|r| r.path.ends_with("manifest"))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    );
    assert!(
        repeated.is_empty(),
        "the origin served these objects more than once: {repeated:?}"
    );
    assert_eq!(
        counts.keys().filter(|p| p.starts_with("/data/")).count(),
        per_node[0].len(),
        "the origin served exactly the objects the first node cached"
    );
    // The manifest is no-cache: each node's request reached the origin
    // (a revalidation, perhaps answered 304).
    assert!(
        manifests >= 2,
        "the manifest must be revalidated at the origin: {origin_log:#?}"
    );
}

fn count_codes(log: &[Proxied]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in log {
        *m.entry(p.code.clone()).or_default() += 1;
    }
    m
}

// ===========================================================================
// 3. Laziness

/// A fresh cache, one small file read and a few directories looked at:
/// what came over the wire is that file's object and the catalogs on the
/// way, not the image.
#[test]
fn reading_one_file_fetches_that_file_not_the_image() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("lazy.test", 9 * MIB, 3);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&cache),
    );

    let want = &files["etc/motd"];
    assert_eq!(&std::fs::read(m.at("etc/motd")).unwrap(), want);
    for d in ["docs", "docs/d3", "big", "etc", ""] {
        assert!(std::fs::metadata(m.at(d)).unwrap().is_dir(), "/{d}");
    }
    assert_eq!(std::fs::read_dir(m.at("docs/d5")).unwrap().count(), 15);
    let log = settled_log(&serve);
    m.unmount();

    let repo_files = repo.data_files();
    let repo_bytes: u64 = repo_files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let wire: u64 = log.iter().map(|r| r.bytes).sum();
    let data_reqs = log.iter().filter(|r| r.path.starts_with("/data/")).count();
    let (objs, obj_bytes) = cache_usage(&cache, "objects");
    let (cats, cat_bytes) = cache_usage(&cache, "catalogs");
    let image_size: usize = files.values().map(Vec::len).sum();
    eprintln!(
        "lazy: read 1 file of {} bytes; fetched {} requests ({data_reqs} objects), {wire} bytes on the wire; \
         cache: {objs} content objects ({obj_bytes} bytes), {cats} catalogs ({cat_bytes} bytes); \
         the repository: {} objects, {repo_bytes} bytes; the image: {} files, {image_size} bytes",
        want.len(),
        log.len(),
        repo_files.len(),
        files.len()
    );
    assert_eq!(objs, 1, "one content object: etc/motd's");
    assert_eq!(
        obj_bytes,
        want.len() as u64,
        "the content fetched is the file's bytes"
    );
    assert!(
        data_reqs * 10 <= repo_files.len(),
        "{data_reqs} objects fetched of the repository's {}",
        repo_files.len()
    );
    assert!(
        wire <= repo_bytes / 20,
        "{wire} bytes fetched; the repository holds {repo_bytes} (more than 5% fetched)"
    );
    assert!(
        wire <= want.len() as u64 + cat_bytes + 64 * 1024,
        "{wire} bytes on the wire for a {}-byte file and {cat_bytes} bytes of catalogs",
        want.len()
    );
}

// ===========================================================================
// 4. Faults

/// `--mirror`: the first URL is a closed port, the mirror works.
#[test]
fn first_mirror_down_the_next_one_serves() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("mirror.test", 5 * MIB, 4);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let dead = http_server::closed_port();
    let src = MountSource::url(&dead, &pubkey(&repo), ());
    let mut extra = cache_arg(&tmp.path().join("cache"));
    extra.extend([os("--mirror"), os(&serve.url)]);
    let t0 = Instant::now();
    let m = Mount::start_with(&src, &tmp.path().join("mnt"), Some(SMALL), &extra);
    let bytes = check_files(m.path(), &files, false, "mount with a dead first mirror");
    eprintln!(
        "dead first mirror: mounted and read {bytes} bytes in {:?}",
        t0.elapsed()
    );
    m.unmount();
    assert!(
        served(&serve).iter().any(|r| r.path.starts_with("/data/")),
        "the mirror served the objects"
    );
}

/// Replaces the `KEY value` line of a manifest.
fn manifest_with(manifest: &[u8], key: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8(manifest.to_vec()).unwrap();
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((k, _)) if k == key => {
                found = true;
                format!("{k} {value}")
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(found, "no {key} line in the manifest:\n{text}");
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    s.into_bytes()
}

/// A wrong public key, a tampered manifest and an older revision after a
/// newer one (same cache) are refused: non-zero exit, a clear message,
/// nothing mounted.
#[test]
fn wrong_key_tampered_manifest_and_rollback_are_refused() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("refuse.test", 0, 5);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let key = pubkey(&repo);
    let src = MountSource::url(&serve.url, &key, ());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // Wrong key.
    let other = tmp.path().join("other.key");
    stratum([os("keygen"), os(&other)]);
    let wrong = MountSource::url(&serve.url, &tmp.path().join("other.key.pub"), ());
    let err = Mount::expect_failure(
        &wrong,
        &mnt,
        Some(SMALL),
        &cache_arg(&tmp.path().join("c-wrong")),
    );
    eprintln!("wrong key: {}", err.trim());
    assert!(
        err.to_lowercase().contains("signature"),
        "the message must say why: {err}"
    );

    // Tampered manifests: a higher revision, another root catalog.
    let good = repo.manifest_bytes();
    let text = String::from_utf8(good.clone()).unwrap();
    let rev: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("revision "))
        .unwrap()
        .parse()
        .unwrap();
    let fake_root = "ab".repeat(32);
    for (field, value) in [("revision", (rev + 1000).to_string()), ("root", fake_root)] {
        std::fs::write(repo.manifest_path(), manifest_with(&good, field, &value)).unwrap();
        let err = Mount::expect_failure(
            &src,
            &mnt,
            Some(SMALL),
            &cache_arg(&tmp.path().join("c-tamper")),
        );
        eprintln!("tampered {field}: {}", err.trim());
        assert!(
            err.to_lowercase().contains("signature"),
            "tampered {field}: {err}"
        );
    }
    std::fs::write(repo.manifest_path(), &good).unwrap();
    assert!(
        !tmp.path().join("c-tamper").join("objects").exists()
            || cache_usage(&tmp.path().join("c-tamper"), "objects").0 == 0,
        "nothing is fetched under a refused manifest"
    );

    // Rollback: revision N, then N+1 on the same cache, then N again.
    let cache = tmp.path().join("cache");
    let m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    m.unmount();
    let newer_files = publish_small(&repo, "2", "test/small:2", 0, 6);
    assert_eq!(repo.revision(), rev + 1);
    let m = Mount::start_with(&src, &mnt, Some("test/small:2"), &cache_arg(&cache));
    assert_eq!(
        std::fs::read(m.at("etc/motd")).unwrap(),
        newer_files["etc/motd"]
    );
    m.unmount();
    let newest = repo.manifest_bytes();
    std::fs::write(repo.manifest_path(), &good).unwrap();
    let err = Mount::expect_failure(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    eprintln!("rollback: {}", err.trim());
    assert!(
        err.contains("rollback") && err.contains(&format!("revision {rev}")),
        "the message must name the rollback and the revision: {err}"
    );
    // The revision is refused because this cache has seen a newer one: a
    // fresh cache takes it.
    let m = Mount::start_with(
        &src,
        &mnt,
        Some(SMALL),
        &cache_arg(&tmp.path().join("fresh")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    m.unmount();
    std::fs::write(repo.manifest_path(), newest).unwrap();
}

/// `kill -9` of a mount in the middle of a download; `stratum umount`
/// cleans up the dead mount; a new mount on the same cache reads every byte
/// right and the cache holds only verified objects.
#[test]
fn kill_9_mid_download_then_a_new_mount_on_the_same_cache() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("kill.test", 9 * MIB, 7);
    let server = http_server::Server::start(&repo.repo);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let mnt = tmp.path().join("mnt");
    let mut m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);

    // Slow objects (1.5 s each): the big file's first chunks are still
    // downloading when the mount process dies, 1 s into the read.
    server.state.delay_ms.store(1500, Ordering::Relaxed);
    let path = m.at("big/huge.bin");
    let reader = std::thread::spawn(move || std::fs::read(path).map(|b| b.len()));
    std::thread::sleep(Duration::from_millis(1000));
    let requests_before = server.requests();
    let st = m.signal(Signal::KILL, Duration::from_secs(10));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    let t0 = Instant::now();
    let r = reader.join().unwrap();
    eprintln!(
        "kill -9 after {requests_before} requests: the reader got {r:?} after {:?}",
        t0.elapsed()
    );
    assert!(r.is_err(), "the read cannot have completed: {r:?}");
    assert!(
        is_mounted(m.path()),
        "a killed FUSE server leaves its (dead) mount behind"
    );
    let out = run_cmd({
        let mut c = Command::new(stratum_bin());
        c.arg("umount").arg(m.path());
        c
    });
    if !out.success() {
        eprintln!(
            "stratum umount of the dead mount failed ({}); umount -l",
            out.stderr_str().trim()
        );
        support::tool("umount", [os("-l"), os(m.path())]);
    }
    assert!(!is_mounted(m.path()), "still mounted after cleanup");
    drop(m);
    let leftovers = cache_usage(&cache, "tmp").0;

    server.state.delay_ms.store(0, Ordering::Relaxed);
    let m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    check_files(
        m.path(),
        &files,
        false,
        "new mount on the cache of a killed one",
    );
    m.unmount();
    let n = verify_cache(&cache);
    eprintln!(
        "after kill -9: {leftovers} leftovers in tmp/, then {n} verified objects in the cache"
    );
}

/// Two mounts (two processes) on one cache read the same files at the same
/// time, each with two readers in opposite orders.
#[test]
fn two_mounts_share_one_cache_concurrently() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("shared.test", 9 * MIB, 8);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let a = Mount::start_with(&src, &tmp.path().join("a"), Some(SMALL), &cache_arg(&cache));
    let b = Mount::start_with(&src, &tmp.path().join("b"), Some(SMALL), &cache_arg(&cache));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for (root, name) in [(a.path(), "a"), (b.path(), "b")] {
            for reverse in [false, true] {
                let files = &files;
                s.spawn(move || {
                    check_files(
                        root,
                        files,
                        reverse,
                        &format!("mount {name}, reverse={reverse}"),
                    )
                });
            }
        }
    });
    let log = settled_log(&serve);
    let distinct: BTreeSet<&str> = log
        .iter()
        .filter(|r| r.path.starts_with("/data/"))
        .map(|r| r.path.as_str())
        .collect();
    eprintln!(
        "two mounts, four readers: {:?}; origin: {} requests for {} distinct objects",
        t0.elapsed(),
        log.len(),
        distinct.len()
    );
    a.unmount();
    b.unmount();
    let n = verify_cache(&cache);
    assert_eq!(cached_ids(&cache).len(), n);
    assert!(
        n >= distinct.len(),
        "{n} objects in the shared cache, {} fetched",
        distinct.len()
    );
}

/// `--quota 2M` and a 24 MiB chunked file read twice: the bytes are right,
/// and the cache stays near the quota all along (sampled while reading).
#[test]
fn quota_smaller_than_a_read() {
    if !ready() {
        return;
    }
    let big = 24 * MIB;
    let (repo, files) = small_repo("quota.test", big, 9);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let mut extra = cache_arg(&cache);
    extra.extend([os("--quota"), os("2M")]);
    let m = Mount::start_with(&src, &tmp.path().join("mnt"), Some(SMALL), &extra);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, cache) = (stop.clone(), peak.clone(), cache.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let used = cache_usage(&cache, "objects").1 + cache_usage(&cache, "catalogs").1;
                peak.fetch_max(used, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let want = &files["big/huge.bin"];
    let t0 = Instant::now();
    let got = std::fs::read(m.at("big/huge.bin")).unwrap();
    assert!(
        &got == want,
        "big/huge.bin read wrong: {}",
        first_difference(want, &got)
    );
    // Pieces again, through a new descriptor (evicted chunks come back).
    let f = File::open(m.at("big/huge.bin")).unwrap();
    let mut rng = Rng::new(99);
    for _ in 0..8 {
        let off = rng.below(big as u64 - 70_000) as usize;
        let mut buf = vec![0u8; 65_536];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf[..] == want[off..off + buf.len()], "pread at {off}");
    }
    drop(f); // an open file would keep the (lazily detached) mount alive
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (objs, obj_bytes) = cache_usage(&cache, "objects");
    let (_, cat_bytes) = cache_usage(&cache, "catalogs");
    let log = settled_log(&serve);
    let wire: u64 = log.iter().map(|r| r.bytes).sum();
    m.unmount();
    let peak = peak.load(Ordering::Relaxed);
    let quota = 2 * MIB as u64;
    eprintln!(
        "quota 2M, {big}-byte file read in {elapsed:?}: cache peak {peak} bytes, at the end {objs} objects \
         ({obj_bytes} bytes) + catalogs ({cat_bytes} bytes); {} requests, {wire} bytes on the wire",
        log.len()
    );
    // Beyond the quota only the chunk just inserted (at most 4 MiB, the
    // largest chunk) and one read-ahead chunk in flight.
    let slack = 2 * 4 * MIB as u64 + 64 * 1024;
    assert!(
        peak <= quota + slack,
        "cache peaked at {peak} bytes with a 2 MiB quota"
    );
    assert!(
        obj_bytes + cat_bytes <= quota + 4 * MIB as u64 + 64 * 1024,
        "cache holds {} bytes after the reads",
        obj_bytes + cat_bytes
    );
    verify_cache(&cache);
}

// ===========================================================================
// 5. A server that dies or hangs mid-way

/// Reads 8 KiB of `rel` under `root` at `offset`, expecting EIO within
/// `deadline`; returns how long it took, or what went wrong.
fn expect_eio(root: &Path, rel: &str, offset: u64, deadline: Duration) -> Result<Duration, String> {
    let path = root.join(rel);
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = File::open(&path).and_then(|f| {
            let mut buf = vec![0u8; 8192];
            f.read_at(&mut buf, offset)
        });
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(deadline)
        .map_err(|_| format!("reading {rel} at {offset}: no answer within {deadline:?}"))?;
    let took = t0.elapsed();
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(took),
        other => Err(format!(
            "reading {rel} at {offset} with the server gone: want EIO, got {other:?} after {took:?}"
        )),
    }
}

/// How many FUSE requests the mount answered with an error so far (its
/// `stratum_fetcher::fs` warnings).
fn failed_fuse_reads(m: &Mount) -> usize {
    m.stderr()
        .lines()
        .filter(|l| l.contains("stratum_fetcher::fs") && l.contains("read inode"))
        .count()
}

/// `stratum serve` killed after mounting: reads of files not yet cached fail
/// with EIO within seconds (connection refused, retries with backoff), not
/// hang; what was read before still reads.
#[test]
fn killed_server_gives_eio_not_a_hang() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("dies.test", 9 * MIB, 10);
    let mut serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&tmp.path().join("cache")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    for rel in ["docs/d1/f001", "big/huge.bin", "big/mid.bin"] {
        std::fs::metadata(m.at(rel)).unwrap();
    }
    serve.stop(Signal::KILL, Duration::from_secs(10));
    let mut took = Vec::new();
    for (rel, offset) in [
        ("docs/d1/f001", 0),
        ("big/huge.bin", 5 * MIB as u64),
        ("big/mid.bin", 0),
    ] {
        let t = expect_eio(m.path(), rel, offset, EIO_DEADLINE)
            .unwrap_or_else(|e| panic!("{e}\n--- stderr of the mount ---\n{}", m.stderr()));
        took.push(format!("{rel}@{offset}: {t:?}"));
    }
    eprintln!(
        "server killed: EIO after {} ({} FUSE reads failed for these 3 read() calls)",
        took.join(", "),
        failed_fuse_reads(&m)
    );
    assert_eq!(
        std::fs::read(m.at("etc/motd")).unwrap(),
        files["etc/motd"],
        "cached bytes still read"
    );
    assert_eq!(
        std::fs::read(m.at("etc/hostname")).unwrap(),
        files["etc/hostname"],
        "inline bytes still read"
    );
    m.unmount();
}

/// A server that stops answering (accepts, never responds) after mounting:
/// the read fails with EIO within [`EIO_DEADLINE`] (the transport gives up
/// on an object after 4 attempts of at most 20 s each); meanwhile other
/// readers of the same mount are served; once the server answers again the
/// same file reads right (nothing bad was cached).
#[test]
fn hung_server_gives_eio_within_the_timeouts() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("hangs.test", 0, 11);
    let server = http_server::Server::start(&repo.repo);
    let tmp = tempdir();
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&tmp.path().join("cache")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    std::fs::metadata(m.at("docs/d2/f002")).unwrap();

    server.state.delay_ms.store(3_600_000, Ordering::Relaxed);
    let requests_before = server.requests();
    let took = std::thread::scope(|s| {
        let root = m.path();
        let slow = s.spawn(move || expect_eio(root, "docs/d2/f002", 0, EIO_DEADLINE));
        // While that read waits on the network, the rest of the mount works.
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(
            std::fs::read(m.at("etc/hostname")).unwrap(),
            files["etc/hostname"]
        );
        assert_eq!(std::fs::read_dir(m.at("docs/d4")).unwrap().count(), 15);
        assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
        let other = t0.elapsed();
        eprintln!("hung server: other readers served in {other:?} meanwhile");
        assert!(
            other < Duration::from_secs(5),
            "other readers waited {other:?} behind a slow fetch"
        );
        slow.join().unwrap()
    });
    let requests = server.requests() - requests_before;
    let took = took.unwrap_or_else(|e| {
        panic!(
            "{e}: the read neither returned nor failed in time ({requests} requests for the object so far, \
             {} FUSE reads failed)\n--- stderr of the mount ---\n{}",
            failed_fuse_reads(&m),
            m.stderr()
        )
    });
    eprintln!(
        "hung server: EIO after {took:?} ({requests} requests for the object, {} FUSE reads failed)",
        failed_fuse_reads(&m)
    );
    server.state.delay_ms.store(0, Ordering::Relaxed);
    // A failed object is remembered for 2 s (so the kernel's immediate
    // retry of a failed readahead does not wait a second retry budget).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        std::fs::read(m.at("docs/d2/f002")).unwrap(),
        files["docs/d2/f002"],
        "the same file reads once the server answers again"
    );
    m.unmount();
}
