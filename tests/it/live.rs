//! Live whole-repository mounts (`stratum mount URL MOUNTPOINT --refresh
//! DURATION`), end to end: real `stratum serve`, real FUSE, real publishes.
//!
//! - A publish shows under `/images` within 3 s of a 1 s refresh and its
//!   tree equals a local pull; `stratum rm` removes it; a retag points the
//!   name at the new tree; unchanged trees keep their inode numbers.
//! - A process with an open file and its working directory in an image
//!   that is then removed keeps reading the right bytes.
//! - 32 reader threads hash two images in a loop while revisions are
//!   published and switched to: no error, every hash right.
//! - An older manifest, another key's, another repository's, garbage, or a
//!   stopped server: the mount stays on its revision, and `status --json`
//!   says why.
//! - `stratum reload` and `status --json`; `--image` and `--refresh 0`
//!   mounts stay pinned.
//!
//! Needs root and `/dev/fuse`; each test skips with a message otherwise.
//! More in [`accounting`]: through Squid, many switches, status numbers.

mod accounting;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::compare::{assert_trees_equal, CompareOpts};
use crate::support::fsutil::Rng;
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::services::StratumServe;
use crate::support::{require_root, stratum, stratum_raw, tempdir, TestRepo};

/// What the issue allows between a publish and its showing on a node
/// refreshing every second.
const VISIBLE_WITHIN: Duration = Duration::from_secs(3);

/// Regular files of an image: relative path → bytes.
type Files = BTreeMap<String, Vec<u8>>;

fn ready() -> bool {
    require_root() && require_fuse()
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// Publishes `image` (NAME:TAG): `n` files of 1–30 KiB in 4 directories
/// and one of 300 KiB, bytes from `seed`.
fn publish(repo: &TestRepo, image: &str, seed: u64, n: usize) -> Files {
    let mut rng = Rng::new(seed);
    let mut files = Files::new();
    files.insert("etc/seed".into(), format!("{seed}\n").into_bytes());
    for i in 0..n {
        let len = 1000 + rng.below(30_000) as usize;
        files.insert(format!("d{}/f{i:03}", i % 4), rng.bytes(len));
    }
    files.insert("big.bin".into(), rng.bytes(300_000));
    let mut entries = vec![TarEntry::dir(b"./"), TarEntry::dir(b"etc/")];
    for d in 0..4.min(n) {
        entries.push(TarEntry::dir(format!("d{d}/").as_bytes()));
    }
    for (rel, bytes) in &files {
        entries.push(TarEntry::file(rel.as_bytes(), bytes));
    }
    let layout = Layout::create(&repo.scratch("layout"));
    layout.add_image("t", &[Layer::uncompressed(&entries)]);
    repo.publish_one(&format!("oci:{}:t", layout.dir.display()), Some(image));
    files
}

/// `/images/NAME/TAG` of `image` (NAME:TAG) under `root`.
fn image_dir(root: &Path, image: &str) -> PathBuf {
    let (name, tag) = image.rsplit_once(':').unwrap();
    root.join("images").join(name).join(tag)
}

/// Polls `cond` every 20 ms until it holds or `within` passed; returns how
/// long it took.
fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads every file of `files` under `root` and compares its bytes.
fn check_files(root: &Path, files: &Files, what: &str) {
    for (rel, want) in files {
        let got = std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{what}: {rel}: {e}"));
        assert!(&got == want, "{what}: {rel} has other bytes");
    }
}

/// The status object the mount at `mnt` serves.
fn status(mnt: &Path) -> Value {
    let out = stratum([os("status"), os(mnt), os("--json")]);
    out.json()
}

/// A whole-repository mount of `serve` with `--refresh REFRESH`.
fn live_mount(
    repo: &TestRepo,
    serve: &StratumServe,
    tmp: &Path,
    what: &str,
    refresh: &str,
) -> Mount {
    let src = MountSource::url(&serve.url, &pubkey(repo), ());
    Mount::start_with(
        &src,
        &tmp.join(format!("mnt-{what}")),
        None,
        &[
            os("--refresh"),
            os(refresh),
            os("--cache"),
            os(tmp.join(format!("cache-{what}"))),
        ],
    )
}

fn names_under(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Publish, `rm` and retag while a `--refresh 1s` mount is up: each shows
/// within 3 s; the new image equals a local pull of it; the tree of the
/// image that stayed keeps its inode numbers.
#[test]
fn publish_rm_and_retag_show_within_3s() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 1, 40);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "1s");
    let a_dir = image_dir(m.path(), "test/a:1");
    check_files(&a_dir, &a, "test/a:1 before");
    let a_ino = std::fs::metadata(&a_dir).unwrap().ino();
    let a_file_ino = std::fs::metadata(a_dir.join("d1/f001")).unwrap().ino();
    assert!(!image_dir(m.path(), "test/b:1").exists());

    // Publish.
    let b = publish(&repo, "test/b:1", 2, 40);
    let b_dir = image_dir(m.path(), "test/b:1");
    let took = wait_for(VISIBLE_WITHIN, "test/b:1 published", || b_dir.exists());
    eprintln!("publish visible after {took:?}");
    check_files(&b_dir, &b, "test/b:1 after its publish");
    let pulled = tmp.path().join("pulled-b");
    repo.pull_image("test/b:1", &pulled);
    assert_trees_equal(
        &pulled,
        &std::fs::canonicalize(&b_dir).unwrap(),
        &CompareOpts::default(),
        "live mount's new image vs local pull",
    );
    assert_eq!(
        names_under(&m.at("images/test")),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    // The image that did not change kept its inode numbers.
    assert_eq!(std::fs::metadata(&a_dir).unwrap().ino(), a_ino);
    assert_eq!(
        std::fs::metadata(a_dir.join("d1/f001")).unwrap().ino(),
        a_file_ino
    );
    let st = status(m.path());
    assert_eq!(st["revision"], repo.revision());
    // With a 1 s interval another refresh (nothing new) may have run since
    // the switch: the last one either switched to this revision or found
    // nothing to do.
    let last = &st["refresh"]["last"];
    match last["outcome"].as_str() {
        Some("switched") => assert_eq!(last["to_revision"], repo.revision(), "{st}"),
        Some("not-modified") => {}
        other => panic!("last refresh {other:?}: {st}"),
    }

    // Remove.
    stratum([
        os("rm"),
        os(&repo.repo),
        os("test/a:1"),
        os("--key"),
        os(&repo.key),
    ]);
    let took = wait_for(VISIBLE_WITHIN, "test/a:1 removed", || {
        !names_under(&m.at("images/test")).contains("a")
    });
    eprintln!("rm visible after {took:?}");
    assert!(!a_dir.exists());

    // Retag: test/b:1 now names another tree.
    let before = std::fs::read_link(&b_dir).unwrap();
    let b2 = publish(&repo, "test/b:1", 3, 30);
    let took = wait_for(VISIBLE_WITHIN, "test/b:1 retagged", || {
        std::fs::read_link(&b_dir).is_ok_and(|t| t != before)
    });
    eprintln!("retag visible after {took:?}");
    check_files(&b_dir, &b2, "test/b:1 after the retag");
    assert!(!b_dir.join("d3/f003").exists() || b2.contains_key("d3/f003"));
    m.unmount();
}

/// A process whose working directory is in an image, and a file held open
/// in it, keep reading the right bytes after the image left `/images`.
#[test]
fn open_file_and_cwd_survive_removal_of_their_image() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 11, 20);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "1s");
    let a_dir = image_dir(m.path(), "test/a:1");
    let open = std::fs::File::open(a_dir.join("big.bin")).unwrap();
    let mut head = vec![0u8; 1000];
    open.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, a["big.bin"][..1000]);
    // A shell in d2/ that reads a file by a relative path once told to.
    let mut sh = Command::new("sh")
        .args(["-c", "read go; cat f002; read go; cat ../etc/seed"])
        .current_dir(a_dir.join("d2"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    stratum([
        os("rm"),
        os(&repo.repo),
        os("test/a:1"),
        os("--key"),
        os(&repo.key),
    ]);
    wait_for(VISIBLE_WITHIN, "test/a:1 removed", || !a_dir.exists());

    let mut stdin = sh.stdin.take().unwrap();
    stdin.write_all(b"go\ngo\n").unwrap();
    drop(stdin);
    let mut out = Vec::new();
    sh.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(sh.wait().unwrap().success());
    let mut want = a["d2/f002"].clone();
    want.extend_from_slice(&a["etc/seed"]);
    assert!(
        out == want,
        "the shell in the removed image read other bytes"
    );
    let mut all = vec![0u8; a["big.bin"].len()];
    open.read_exact_at(&mut all, 0).unwrap();
    assert!(all == a["big.bin"], "the open file read other bytes");
    drop(open);
    m.unmount();
}

/// BLAKE3-free content check: a 64-bit FNV-1a of the bytes.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 32 threads walk and hash two images through `/images` in a loop while
/// `REVISIONS` revisions are published (an image added, retagged or
/// removed each time) and the mount switches to each: not one read error,
/// every hash right.
#[test]
fn readers_see_no_errors_while_revisions_switch() {
    const THREADS: usize = 32;
    const REVISIONS: u64 = 30;
    if !ready() {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 21, 40);
    let b = publish(&repo, "test/b:1", 22, 40);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "200ms");
    let mut want = BTreeMap::new();
    for (image, files) in [("test/a:1", &a), ("test/b:1", &b)] {
        let dir = image_dir(m.path(), image);
        check_files(&dir, files, image);
        for (rel, bytes) in files {
            want.insert(dir.join(rel), fnv(bytes));
        }
    }
    let want = Arc::new(want);
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let roots = [
        image_dir(m.path(), "test/a:1"),
        image_dir(m.path(), "test/b:1"),
    ];
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let (want, stop, reads, errors) =
            (want.clone(), stop.clone(), reads.clone(), errors.clone());
        let root = roots[t % 2].clone();
        threads.push(std::thread::spawn(move || {
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Walk: every regular file found must be one we know.
                for e in walkdir::WalkDir::new(&root).follow_root_links(true) {
                    let e = match e {
                        Ok(e) => e,
                        Err(err) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            problems.push(format!("walk: {err}"));
                            continue;
                        }
                    };
                    if !e.file_type().is_file() {
                        continue;
                    }
                    let path = e.path().to_path_buf();
                    match std::fs::read(&path) {
                        Ok(bytes) if want.get(&path) == Some(&fnv(&bytes)) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            problems.push(format!("{}: wrong bytes", path.display()));
                        }
                        Err(err) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            problems.push(format!("{}: {err}", path.display()));
                        }
                    }
                }
            }
            problems
        }));
    }
    let mut switched = 0;
    for i in 0..REVISIONS {
        match i % 3 {
            // A new image, or a retag of test/c:1, or its removal.
            0 | 1 => {
                publish(&repo, "test/c:1", 100 + i, 4);
            }
            _ => {
                stratum([
                    os("rm"),
                    os(&repo.repo),
                    os("test/c:1"),
                    os("--key"),
                    os(&repo.key),
                ]);
            }
        }
        let rev = repo.revision();
        wait_for(Duration::from_secs(10), "the mount switching", || {
            status(m.path())["revision"] == rev
        });
        switched += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut problems = Vec::new();
    for t in threads {
        problems.extend(t.join().unwrap());
    }
    let st = status(m.path());
    eprintln!(
        "{switched} switches, {} reads, {} errors in {:?}; refreshes {}",
        reads.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        t0.elapsed(),
        st["refresh"]["refreshes"]
    );
    assert!(
        problems.is_empty(),
        "{} read errors, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    m.unmount();
}

/// Replaces the manifest `stratum serve` serves (a rename, as a publish does).
fn serve_manifest(repo: &TestRepo, bytes: &[u8]) {
    let path = repo.manifest_path();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// Waits for two more refreshes (so one started after the change) and
/// returns the status then.
fn after_two_refreshes(mnt: &Path) -> Value {
    let n = status(mnt)["refresh"]["refreshes"].as_u64().unwrap();
    let mut st = Value::Null;
    wait_for(Duration::from_secs(30), "two refreshes", || {
        st = status(mnt);
        st["refresh"]["refreshes"].as_u64().unwrap() >= n + 2
    });
    st
}

/// An older manifest, one signed by another key, one of another repository
/// (same key), garbage, then a stopped server: the mount stays on its
/// revision and keeps serving it; `status --json` shows each failed refresh
/// and its reason. The real manifest back: refreshes succeed again.
#[test]
fn bad_manifests_and_a_stopped_server_keep_the_revision() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 31, 10);
    let old = repo.manifest_bytes();
    let b = publish(&repo, "test/b:1", 32, 10);
    let current = repo.manifest_bytes();
    let rev = repo.revision();
    // Another key, same name; and the same key, another name.
    let other_key = TestRepo::new("live.test");
    publish(&other_key, "test/x:1", 33, 2);
    publish(&other_key, "test/x:2", 34, 2);
    publish(&other_key, "test/x:3", 35, 2);
    let other_name = tmp.path().join("other-name");
    stratum([
        os("init"),
        os(&other_name),
        os("--key"),
        os(&repo.key),
        os("--name"),
        os("other.test"),
    ]);
    for _ in 0..3 {
        stratum_raw([
            os("rm"),
            os(&other_name),
            os("no/such:1"),
            os("--key"),
            os(&repo.key),
        ]);
    }
    let other_name_manifest = std::fs::read(other_name.join(".stratum/manifest")).unwrap();

    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "1s");
    let (a_dir, b_dir) = (
        image_dir(m.path(), "test/a:1"),
        image_dir(m.path(), "test/b:1"),
    );
    check_files(&a_dir, &a, "before");
    check_files(&b_dir, &b, "before");
    for (what, bytes, reason) in [
        ("an older revision", old, "older"),
        ("another key", other_key.manifest_bytes(), "signature"),
        ("another repository", other_name_manifest, "other.test"),
        ("garbage", b"garbage\n".to_vec(), "manifest"),
    ] {
        serve_manifest(&repo, &bytes);
        let st = after_two_refreshes(m.path());
        assert_eq!(st["revision"], rev, "{what}: the mount moved");
        let last = &st["refresh"]["last"];
        assert_eq!(last["outcome"], "failed", "{what}: {st}");
        let why = last["reason"].as_str().unwrap();
        assert!(
            why.contains(reason),
            "{what}: reason {why:?} lacks {reason:?}"
        );
        assert!(
            why.contains(&serve.url),
            "{what}: reason {why:?} names no URL"
        );
        check_files(&a_dir, &a, what);
        check_files(&b_dir, &b, what);
    }
    serve_manifest(&repo, &current);
    let st = after_two_refreshes(m.path());
    assert_ne!(st["refresh"]["last"]["outcome"], "failed", "{st}");
    assert_eq!(st["revision"], rev);

    drop(serve);
    let st = after_two_refreshes(m.path());
    assert_eq!(st["refresh"]["last"]["outcome"], "failed", "{st}");
    assert_eq!(st["revision"], rev);
    check_files(&a_dir, &a, "server stopped");
    check_files(&b_dir, &b, "server stopped");
    assert!(
        m.stderr().contains("staying on revision"),
        "no warning logged:\n{}",
        m.stderr()
    );
    m.unmount();
}

/// `stratum reload` refreshes at once (the interval is an hour) and prints
/// the revision; `status --json` counts what was fetched. An `--image`
/// mount and a `--refresh 0` mount stay on their revision.
#[test]
fn reload_switches_now_and_pinned_mounts_stay() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 41, 10);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let live = live_mount(&repo, &serve, tmp.path(), "live", "1h");
    let pinned = live_mount(&repo, &serve, tmp.path(), "pinned", "0");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let image = Mount::start_with(
        &src,
        &tmp.path().join("mnt-image"),
        Some("test/a:1"),
        &[os("--cache"), os(tmp.path().join("cache-image"))],
    );
    check_files(image.path(), &a, "--image before");
    check_files(&image_dir(live.path(), "test/a:1"), &a, "live before");
    let st = status(live.path());
    assert_eq!(st["live"], true);
    assert_eq!(st["refresh"]["refreshes"], 0);
    assert!(st["fetched"]["objects"].as_u64().unwrap() > 0, "{st}");
    assert!(st["cache"]["bytes_used"].as_u64().unwrap() > 0, "{st}");
    let hits = st["cache_hits"].as_u64().unwrap();

    let a2 = publish(&repo, "test/a:1", 42, 10);
    // The kernel holds fresh entries of the old tree (the root's last
    // under a second): the switch must invalidate them, not their TTL.
    check_files(
        &image_dir(live.path(), "test/a:1"),
        &a,
        "live before reload",
    );
    let out = stratum([os("reload"), os(live.path()), os("--timeout"), os("30s")]);
    assert_eq!(
        out.stdout_str().trim(),
        format!("revision {}", repo.revision())
    );
    check_files(
        &image_dir(live.path(), "test/a:1"),
        &a2,
        "live after reload",
    );
    let st = status(live.path());
    assert_eq!(st["refresh"]["last"]["outcome"], "switched");
    assert_eq!(st["refresh"]["refreshes"], 1);
    assert!(st["cache_hits"].as_u64().unwrap() >= hits);

    // Pinned: `--refresh 0` and `--image`.
    let out = stratum_raw([os("reload"), os(pinned.path()), os("--timeout"), os("30s")]);
    assert!(!out.success());
    assert!(status(pinned.path())["refresh"].is_null());
    check_files(
        &image_dir(pinned.path(), "test/a:1"),
        &a,
        "--refresh 0 after a publish",
    );
    check_files(image.path(), &a, "--image after a publish");
    assert_eq!(status(image.path())["shows"], "image");
    image.unmount();
    pinned.unmount();
    live.unmount();
}
