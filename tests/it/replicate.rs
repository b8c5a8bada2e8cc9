//! `stratum replicate URL DEST --pubkey KEY.pub`, end to end: a replica
//! made from a served repository verifies (`stratum check`) and reads like
//! the origin (`stratum pull`); a second run fetches only the new objects;
//! a run killed mid-way leaves the replica at its old revision, verifying,
//! and the next run completes it; a manifest signed by another key, a
//! replica of another repository and a rollback are refused; and a mount
//! given the origin and the replica (`--mirror`) goes on reading from the
//! replica when the origin dies.
//!
//! The images are hand-built (`support::small`), so the tests need no
//! external tool; the failover test needs root and `/dev/fuse` and skips
//! with a message without them.
#![allow(clippy::unwrap_used)]

use crate::support;

use stratum_fetcher::testing as http_server;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::compare::{assert_trees_equal, CompareOpts};
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::services::StratumServe;
use crate::support::small::{check_files, Files, SmallImage};
use crate::support::{require_root, stratum, stratum_bin, stratum_fails, TestRepo};
use rustix::process::{Pid, Signal};
use serde_json::Value;

const MIB: usize = 1 << 20;

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// `KEYFILE.pub` of a test repository.
fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// `stratum replicate URL DEST --pubkey KEY --json EXTRA…`, asserting success.
fn replicate(url: &str, dest: &Path, key: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        os("replicate"),
        os(url),
        os(dest),
        os("--pubkey"),
        os(key),
        os("--json"),
    ];
    args.extend(extra.iter().map(os));
    let v = stratum(args).json();
    eprintln!("replicate: {v}");
    v
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {v}"))
}

/// The files under `DIR/data`, relative to DIR.
fn data_files(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir.join("data"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `stratum check DEST --pubkey KEY`, asserting success; returns the report.
fn check(dest: &Path, key: &Path) -> Value {
    stratum([os("check"), os(dest), os("--pubkey"), os(key), os("--json")]).json()
}

fn revision(dir: &Path, key: &Path) -> u64 {
    n(
        &stratum([os("info"), os(dir), os("--pubkey"), os(key), os("--json")]).json(),
        "revision",
    )
}

/// `stratum pull DIR --image NAME DEST`.
fn pull(dir: &Path, key: &Path, image: &str, dest: &Path) {
    stratum([
        os("pull"),
        os(dir),
        os("--pubkey"),
        os(key),
        os("--image"),
        os(image),
        os(dest),
    ]);
}

/// The replica reads like the origin: same image trees, the files expected.
fn assert_same_image(repo: &TestRepo, replica: &Path, image: &str, files: &Files) {
    let key = pubkey(repo);
    let a = repo.scratch("pull-origin");
    let b = repo.scratch("pull-replica");
    pull(&repo.repo, &key, image, &a);
    pull(replica, &key, image, &b);
    assert_trees_equal(
        &a,
        &b,
        &CompareOpts::default(),
        &format!("{image}: pull of the replica vs pull of the origin"),
    );
    check_files(&b, files, &format!("{image} pulled from the replica"));
}

/// Every object of the replica is byte for byte the origin's file.
fn assert_objects_are_the_origins(origin: &Path, replica: &Path) {
    for rel in data_files(replica) {
        let mine = std::fs::read(replica.join(&rel)).unwrap();
        let theirs = std::fs::read(origin.join(&rel))
            .unwrap_or_else(|e| panic!("{rel} is in the replica, not in the origin: {e}"));
        assert!(mine == theirs, "{rel} differs from the origin's file");
    }
}

/// The distinct `/data/…` paths requested from `serve` after `skip` log lines,
/// asserting that none was requested twice.
fn data_requests(serve: &StratumServe, skip: usize) -> BTreeSet<String> {
    let log = serve.settled_access_log();
    let mut seen = BTreeSet::new();
    for r in &log[skip..] {
        if let Some(p) = r.path.strip_prefix('/').filter(|p| p.starts_with("data/")) {
            assert_eq!(r.status, 200, "{r:?}");
            assert!(seen.insert(p.to_string()), "{p} was requested twice");
        }
    }
    seen
}

// ===========================================================================

/// A first replication copies every reachable object once, verified and
/// byte-identical; the replica checks and pulls like the origin. A rerun
/// does nothing. After a new image is published, a run fetches exactly the
/// objects the replica lacks, and skips the unchanged catalogs.
#[test]
fn replica_verifies_and_a_rerun_fetches_only_new_objects() {
    let repo = TestRepo::new("replica.test");
    let img_a = SmallImage {
        big: 5 * MIB,
        ..SmallImage::new(1, 60)
    };
    let files_a = img_a.publish(&repo, "test/a:1");
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);
    let dest = repo.scratch("replica");
    let rev_a = repo.revision();

    let r1 = replicate(&serve.url, &dest, &key, &[]);
    assert_eq!(r1["updated"], true);
    assert_eq!(r1["recovering"], false);
    assert_eq!(n(&r1, "revision"), rev_a);
    assert!(r1["previous_revision"].is_null(), "{r1}");
    assert_eq!(n(&r1, "objects_present"), 0);
    let after1 = data_files(&dest);
    assert_eq!(n(&r1, "objects_fetched"), after1.len() as u64);
    let bytes: u64 = after1
        .iter()
        .map(|p| dest.join(p).metadata().unwrap().len())
        .sum();
    assert_eq!(n(&r1, "bytes_fetched"), bytes);
    assert_eq!(
        data_requests(&serve, 0),
        after1,
        "the origin served each object of the replica once, and nothing else"
    );
    assert_objects_are_the_origins(&repo.repo, &dest);
    let c = check(&dest, &key);
    assert_eq!(n(&c, "revision"), rev_a);
    assert_eq!(revision(&dest, &key), rev_a);
    assert_eq!(
        std::fs::read(dest.join(".stratum/public.pem")).unwrap(),
        std::fs::read(&key).unwrap(),
        "the replica holds the repository's public key"
    );
    assert!(!dest.join(".stratum/dirty").exists());
    assert_same_image(&repo, &dest, "test/a:1", &files_a);

    // Nothing new: nothing fetched.
    let logged = serve.settled_access_log().len();
    let r2 = replicate(&serve.url, &dest, &key, &[]);
    assert_eq!(r2["updated"], false, "{r2}");
    assert_eq!(n(&r2, "objects_fetched"), 0);
    assert!(data_requests(&serve, logged).is_empty());

    // A second image sharing one directory of files with the first.
    let mut img_b = SmallImage::new(2, 30);
    img_b.extra = files_a
        .iter()
        .filter(|(k, _)| k.starts_with("docs/d1/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!img_b.extra.is_empty());
    let files_b = img_b.publish(&repo, "test/b:1");
    let rev_b = repo.revision();
    assert!(rev_b > rev_a);
    let logged = serve.settled_access_log().len();
    let r3 = replicate(&serve.url, &dest, &key, &[]);
    let after3 = data_files(&dest);
    let new: BTreeSet<String> = after3.difference(&after1).cloned().collect();
    assert_eq!(n(&r3, "revision"), rev_b);
    assert_eq!(n(&r3, "previous_revision"), rev_a);
    assert_eq!(
        n(&r3, "objects_fetched"),
        new.len() as u64,
        "only the objects the replica lacked were fetched"
    );
    assert_eq!(
        data_requests(&serve, logged),
        new,
        "the origin was asked for exactly the new objects"
    );
    assert!(
        n(&r3, "objects_present") >= img_b.extra.len() as u64,
        "the shared files' objects were found present: {r3}"
    );
    assert!(
        n(&r3, "catalogs_unchanged") >= 2,
        "the first image's layer and flat trees were not walked again: {r3}"
    );
    assert_objects_are_the_origins(&repo.repo, &dest);
    assert_eq!(n(&check(&dest, &key), "revision"), rev_b);
    assert_same_image(&repo, &dest, "test/b:1", &files_b);
    assert_same_image(&repo, &dest, "test/a:1", &files_a);

    // --full walks everything and finds it all present.
    let r4 = replicate(&serve.url, &dest, &key, &["--full"]);
    assert_eq!(r4["updated"], false, "{r4}");
}

/// `--full` repairs a replica whose objects were removed behind its back,
/// which the default (pruned) walk does not look at.
#[test]
fn full_walk_restores_missing_objects() {
    let repo = TestRepo::new("full.test");
    SmallImage::new(7, 10).publish(&repo, "test/a:1");
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);
    let dest = repo.scratch("replica");
    replicate(&serve.url, &dest, &key, &[]);
    let files_b = SmallImage::new(8, 10).publish(&repo, "test/b:1");
    replicate(&serve.url, &dest, &key, &[]);
    // Remove a content object of the first image: `check` sees it.
    let victim = data_files(&dest)
        .into_iter()
        .find(|p| !p.ends_with('C') && !p.ends_with('M'))
        .unwrap();
    std::fs::remove_file(dest.join(&victim)).unwrap();
    support::stratum_raw([os("check"), os(&dest), os("--pubkey"), os(&key)])
        .assert_clean_failure_with_report();
    // Up to date: nothing is done. A third revision: still pruned.
    SmallImage::new(9, 3).publish(&repo, "test/c:1");
    replicate(&serve.url, &dest, &key, &[]);
    assert!(!dest.join(&victim).exists());
    SmallImage::new(10, 3).publish(&repo, "test/d:1");
    let r = replicate(&serve.url, &dest, &key, &["--full"]);
    assert_eq!(n(&r, "catalogs_unchanged"), 0, "{r}");
    assert!(dest.join(&victim).exists(), "--full fetched {victim} again");
    check(&dest, &key);
    assert_same_image(&repo, &dest, "test/b:1", &files_b);
}

/// A replication killed mid-way (objects being downloaded slowly) leaves
/// the replica at its old revision, verifying; the next run verifies what
/// the killed one left, fetches the rest and completes.
#[test]
fn interrupted_replication_keeps_the_old_revision_and_resumes() {
    let repo = TestRepo::new("resume.test");
    let files_a = SmallImage::new(3, 20).publish(&repo, "test/a:1");
    let server = http_server::Server::start(&repo.repo);
    let key = pubkey(&repo);
    let dest = repo.scratch("replica");
    replicate(&server.url(), &dest, &key, &[]);
    let rev_a = repo.revision();
    let files_b = SmallImage::new(4, 240).publish(&repo, "test/b:1");
    let rev_b = repo.revision();
    let before = data_files(&dest).len();

    // 150 ms per object, 8 at a time: about 5 s for the new image.
    server.state.delay_ms.store(150, Ordering::Relaxed);
    let mut child = Command::new(stratum_bin())
        .arg("replicate")
        .arg(server.url())
        .arg(&dest)
        .arg("--pubkey")
        .arg(&key)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("replicate ended ({st}) before it could be killed");
        }
        if data_files(&dest).len() >= before + 40 {
            break;
        }
        assert!(Instant::now() < deadline, "no objects landed within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(Pid::from_child(&child), Signal::KILL).unwrap();
    child.wait().unwrap();
    let landed = data_files(&dest).len() - before;
    eprintln!("killed after {landed} new objects landed");

    assert!(
        dest.join(".stratum/dirty").exists(),
        "the killed run leaves its marker"
    );
    assert_eq!(revision(&dest, &key), rev_a, "still the old revision");
    assert_eq!(n(&check(&dest, &key), "revision"), rev_a);
    assert_same_image(&repo, &dest, "test/a:1", &files_a);

    server.state.delay_ms.store(0, Ordering::Relaxed);
    let r = replicate(&server.url(), &dest, &key, &[]);
    assert_eq!(r["updated"], true);
    assert_eq!(r["recovering"], true, "{r}");
    assert_eq!(n(&r, "revision"), rev_b);
    assert!(
        n(&r, "objects_present") >= landed as u64,
        "what the killed run stored was kept: {r}"
    );
    assert_eq!(
        n(&r, "objects_fetched") + before as u64 + landed as u64,
        data_files(&dest).len() as u64,
        "{r}"
    );
    assert!(!dest.join(".stratum/dirty").exists());
    let tmp_left = std::fs::read_dir(dest.join(".stratum/tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(tmp_left, 0, "leftover temporary files were removed");
    assert_eq!(n(&check(&dest, &key), "revision"), rev_b);
    assert_same_image(&repo, &dest, "test/b:1", &files_b);
    assert_eq!(replicate(&server.url(), &dest, &key, &[])["updated"], false);
}

/// A manifest signed by another key, a replica of another repository, an
/// older revision than the replica's and a destination that is something
/// else are refused, and the replica stays as it was.
#[test]
fn refuses_another_key_another_repository_and_a_rollback() {
    let repo = TestRepo::new("keys.test");
    SmallImage::new(5, 5).publish(&repo, "test/a:1");
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);
    let other = TestRepo::new("keys.test");
    let other_key = pubkey(&other);

    // The served manifest does not verify with the key given.
    let fresh = repo.scratch("fresh");
    let out = stratum_fails([
        os("replicate"),
        os(&serve.url),
        os(&fresh),
        os("--pubkey"),
        os(&other_key),
    ]);
    assert!(
        out.stderr_str().contains("does not verify"),
        "{}",
        out.stderr_str()
    );
    assert!(!fresh.join(".stratum/manifest").exists());

    // A replica of `repo` does not take another repository's revisions.
    let dest = repo.scratch("replica");
    replicate(&serve.url, &dest, &key, &[]);
    let rev = revision(&dest, &key);
    let other_serve = StratumServe::start(&other.repo, &[] as &[&str]);
    let out = stratum_fails([
        os("replicate"),
        os(&other_serve.url),
        os(&dest),
        os("--pubkey"),
        os(&other_key),
    ]);
    assert!(
        out.stderr_str()
            .contains("not a replica of this repository"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(revision(&dest, &key), rev);

    // Rollback: a server offering the older manifest after a newer one.
    let old_manifest = repo.manifest_bytes();
    SmallImage::new(6, 5).publish(&repo, "test/b:1");
    replicate(&serve.url, &dest, &key, &[]);
    let newer = revision(&dest, &key);
    assert!(newer > rev);
    let stale = http_server::Server::start(&repo.repo);
    stale.set_override(".stratum/manifest", old_manifest);
    let out = stratum_fails([
        os("replicate"),
        os(stale.url()),
        os(&dest),
        os("--pubkey"),
        os(&key),
    ]);
    assert!(
        out.stderr_str().contains("refusing a rollback"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(revision(&dest, &key), newer);
    check(&dest, &key);
    // With a good mirror after the stale one, the stale one is skipped.
    let r = replicate(&stale.url(), &dest, &key, &["--mirror", &serve.url]);
    assert_eq!(r["updated"], false, "{r}");

    // A directory that is neither empty nor a repository.
    let junk = repo.scratch("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), b"mine").unwrap();
    let out = stratum_fails([
        os("replicate"),
        os(&serve.url),
        os(&junk),
        os("--pubkey"),
        os(&key),
    ]);
    assert!(
        out.stderr_str()
            .contains("neither empty nor a stratum repository"),
        "{}",
        out.stderr_str()
    );
}

/// A mount given the origin and the replica (`--mirror`): files read while
/// the origin is up come from it; after the origin dies, files not read
/// yet come from the replica, with no error.
#[test]
fn mount_fails_over_from_origin_to_replica() {
    if !(require_root() && require_fuse()) {
        return;
    }
    let repo = TestRepo::new("failover.test");
    let img = SmallImage {
        big: 6 * MIB,
        ..SmallImage::new(11, 40)
    };
    let files = img.publish(&repo, "test/a:1");
    let key = pubkey(&repo);
    let mut origin = StratumServe::start(&repo.repo, &[] as &[&str]);
    let dest = repo.scratch("replica");
    replicate(&origin.url, &dest, &key, &[]);
    let replica = StratumServe::start(&dest, &[] as &[&str]);
    let logged = origin.settled_access_log().len();

    let tmp = support::tempdir();
    let src = MountSource::url(&origin.url, &key, ());
    let extra = [
        os("--cache"),
        os(tmp.path().join("cache")),
        os("--mirror"),
        os(&replica.url),
    ];
    let m = Mount::start_with(&src, &tmp.path().join("mnt"), Some("test/a:1"), &extra);
    let all: Vec<(&String, &Vec<u8>)> = files.iter().collect();
    let (first, second) = all.split_at(all.len() / 2);
    for (rel, want) in first {
        assert!(std::fs::read(m.at(rel)).unwrap() == **want, "{rel}");
    }
    let from_origin = data_requests(&origin, logged).len();
    assert!(from_origin > 0, "the origin served the first reads");
    assert!(
        data_requests(&replica, 0).is_empty(),
        "the replica was not needed while the origin was up"
    );

    origin.stop(Signal::KILL, Duration::from_secs(10));
    let t0 = Instant::now();
    for (rel, want) in second {
        let got = std::fs::read(m.at(rel))
            .unwrap_or_else(|e| panic!("{rel} after the origin died: {e}\n{}", m.stderr()));
        assert!(got == **want, "{rel}");
    }
    let from_replica = data_requests(&replica, 0).len();
    eprintln!(
        "failover: {from_origin} objects from the origin, then {from_replica} from the replica in {:?}",
        t0.elapsed()
    );
    assert!(
        from_replica > 0,
        "the replica served the reads after the origin died"
    );
    check_files(m.path(), &files, "the whole image after failover");
    m.unmount();
}

/// Bytes that do not verify are never stored: alone, a corrupting server
/// fails the run and the replica gets nothing; with a good mirror after
/// it, every object comes verified from the mirror.
#[test]
fn corrupt_objects_are_refused_and_a_good_mirror_is_used() {
    let repo = TestRepo::new("corrupt.test");
    let files = SmallImage::new(12, 8).publish(&repo, "test/a:1");
    let key = pubkey(&repo);
    let bad = http_server::Server::start(&repo.repo);
    bad.state.corrupt.store(true, Ordering::Relaxed);
    let dest = repo.scratch("replica");
    let out = stratum_fails([
        os("replicate"),
        os(bad.url()),
        os(&dest),
        os("--pubkey"),
        os(&key),
    ]);
    assert!(
        out.stderr_str().contains("corrupt") || out.stderr_str().contains("hashes to"),
        "{}",
        out.stderr_str()
    );
    assert!(data_files(&dest).is_empty(), "nothing was stored");
    assert!(!dest.join(".stratum/manifest").exists());

    let good = StratumServe::start(&repo.repo, &[] as &[&str]);
    assert!(
        !dest.join(".stratum/dirty").exists(),
        "a clean failure syncs and removes its marker"
    );
    let r = replicate(&bad.url(), &dest, &key, &["--mirror", &good.url]);
    assert_eq!(r["recovering"], false, "{r}");
    assert!(n(&r["transport"], "rejected") > 0, "{r}");
    assert_eq!(n(&check(&dest, &key), "revision"), repo.revision());
    assert_objects_are_the_origins(&repo.repo, &dest);
    assert_same_image(&repo, &dest, "test/a:1", &files);
}
