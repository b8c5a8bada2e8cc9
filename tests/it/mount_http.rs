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

mod dead_server;
mod faults;
mod laziness;
mod oracle;
mod squid;

const RICH: &str = "test/rich:oci";
const SMALL: &str = "test/small:1";
/// A name only Squid can resolve (through its own `hosts_file`).
const ORIGIN_HOST: &str = "stratum-origin.test";
/// What a read over a dead or hung server may take at most. The transport's
/// budget is 4 rounds × 20 s read timeout + backoff (`fetcher/src/transport/`).
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
