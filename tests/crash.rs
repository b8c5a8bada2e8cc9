//! Crash safety: `stratum publish` and `stratum gc` killed with SIGKILL at
//! seeded random moments, again and again on the same repository. After
//! every kill `check` must pass at the last good revision; at the end an
//! uninterrupted run must give the same result as on a fresh repository.
//! A full disk must give a clear error and leave the repository intact.
//!
//! `STRATUM_CRASH_ITERATIONS` sets the number of kills (default 12; the
//! benchmark script `bench/crash-loop.sh` runs 100 and more) and
//! `STRATUM_CRASH_SEED` the seed.

#![allow(clippy::unwrap_used)]

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fsutil::Rng;
use support::oci::{Layer, Layout, TarEntry};
use support::{stratum, stratum_bin, stratum_raw, TestRepo};

fn iterations() -> u64 {
    std::env::var("STRATUM_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

fn seed() -> u64 {
    std::env::var("STRATUM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

/// An image big enough that publishing takes a while: many small files,
/// some chunked large ones, three layers.
fn big_image(dir: &Path) -> Layout {
    let l = Layout::create(dir);
    let mut rng = Rng::new(77);
    let mut layers = Vec::new();
    for layer in 0..3 {
        let mut entries = vec![TarEntry::dir(format!("l{layer}/").as_bytes())];
        for i in 0..300 {
            let len = 200 + (rng.below(6000) as usize);
            entries.push(TarEntry::file(
                format!("l{layer}/f{i:04}").as_bytes(),
                &rng.bytes(len),
            ));
        }
        entries.push(TarEntry::file(
            format!("l{layer}/big.bin").as_bytes(),
            &rng.bytes(5 << 19),
        ));
        layers.push(Layer::gzip(&entries));
    }
    l.add_image("1", &layers);
    l
}

fn publish_cmd(repo: &TestRepo, source: &str) -> Command {
    let mut c = Command::new(stratum_bin());
    c.args(["publish", source, "--as", "crash/app:1", "--repo"])
        .arg(&repo.repo)
        .arg("--key")
        .arg(&repo.key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs `cmd`, kills it with SIGKILL after `after` (if still running);
/// returns whether it had finished by itself.
fn run_and_kill(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + after;
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            return true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success(), "reference run failed");
    t.elapsed()
}

#[test]
fn publish_killed_at_random_moments_never_corrupts_and_a_rerun_matches() {
    let reference = TestRepo::new("crash-ref");
    let layout = big_image(&reference.scratch("layout"));
    let source = format!("oci:{}:1", layout.dir.display());
    let full = timed(publish_cmd(&reference, &source));
    let expected = reference.image("crash/app:1");
    let expected_tree = reference.scratch("expected");
    reference.pull_image("crash/app:1", &expected_tree);

    let mut repo = TestRepo::new("crash");
    let mut rng = Rng::new(seed());
    let mut finished = 0;
    let n = iterations();
    for i in 0..n {
        let before = repo.revision();
        // Anywhere from the start to a little past the reference duration.
        let at = Duration::from_micros(rng.below(full.as_micros() as u64 * 11 / 10 + 1));
        let done = run_and_kill(publish_cmd(&repo, &source), at);
        let out = repo.check_raw();
        assert!(
            out.success(),
            "iteration {i} (killed after {at:?}, finished: {done}): check failed:\n{}",
            out.stderr_str()
        );
        let after = repo.revision();
        assert!(
            after == before || after == before + 1,
            "revision jumped {before} -> {after}"
        );
        if after == before + 1 {
            finished += 1;
            // Published: go on with an empty repository so that later kills
            // interrupt real work (the layers are in this one now).
            repo = TestRepo::new("crash");
        }
    }
    eprintln!("{n} kills, {finished} runs finished before their kill");
    // A run to completion gives exactly the reference result.
    let st = publish_cmd(&repo, &source).status().unwrap();
    assert!(st.success());
    repo.check();
    let got = repo.image("crash/app:1");
    assert_eq!(got["manifest_digest"], expected["manifest_digest"]);
    assert_eq!(got["layer_paths"], expected["layer_paths"]);
    let tree = repo.scratch("tree");
    repo.pull_image("crash/app:1", &tree);
    support::compare::assert_trees_equal(
        &expected_tree,
        &tree,
        &support::compare::CompareOpts::default(),
        "after the crash loop",
    );
}

#[test]
fn gc_killed_at_random_moments_never_corrupts() {
    let repo = TestRepo::new("crash-gc");
    let layout = big_image(&repo.scratch("layout"));
    let source = format!("oci:{}:1", layout.dir.display());
    assert!(publish_cmd(&repo, &source).status().unwrap().success());
    repo.publish_one(&source, Some("crash/keep:1"));
    let keep_tree = repo.scratch("keep");
    repo.pull_image("crash/keep:1", &keep_tree);
    stratum([
        OsString::from("rm"),
        repo.repo.clone().into(),
        "crash/app:1".into(),
        "--key".into(),
        repo.key.clone().into(),
    ]);
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 40 * 86_400)
        .to_string();
    let gc_cmd = || {
        let mut c = Command::new(stratum_bin());
        c.arg("gc")
            .arg(&repo.repo)
            .arg("--key")
            .arg(&repo.key)
            .args([
                "--keep-revisions",
                "1",
                "--safety-window",
                "0",
                "--now",
                &later,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut rng = Rng::new(seed() ^ 0x9c);
    for i in 0..iterations().div_ceil(2) {
        let at = Duration::from_micros(rng.below(150_000));
        run_and_kill(gc_cmd(), at);
        let out = repo.check_raw();
        assert!(
            out.success(),
            "gc kill {i} after {at:?}: {}",
            out.stderr_str()
        );
    }
    assert!(gc_cmd().status().unwrap().success());
    repo.check();
    let tree = repo.scratch("keep-after");
    repo.pull_image("crash/keep:1", &tree);
    support::compare::assert_trees_equal(
        &keep_tree,
        &tree,
        &support::compare::CompareOpts::default(),
        "kept image after gc kills",
    );
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_the_repository_intact() {
    if !support::is_root() {
        support::skip("needs root to mount a small tmpfs");
        return;
    }
    let tmp = support::tempdir();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let key = tmp.path().join("key");
    stratum([OsString::from("keygen"), key.clone().into()]);
    let repo = small.join("repo");
    stratum([
        OsString::from("init"),
        repo.clone().into(),
        "--key".into(),
        key.clone().into(),
    ]);
    let layout = big_image(&tmp.path().join("layout"));
    let before = std::fs::read(repo.join(".stratum/manifest")).unwrap();
    let out = stratum_raw([
        OsString::from("publish"),
        format!("oci:{}:1", layout.dir.display()).into(),
        "--repo".into(),
        repo.clone().into(),
        "--key".into(),
        key.clone().into(),
    ])
    .assert_clean_failure();
    let err = out.stderr_str();
    // The disk fills wherever the next write is: an object file (ENOSPC)
    // or a catalog being built (SQLite's own "disk is full").
    assert!(
        err.contains("No space left on device")
            || err.contains("os error 28")
            || err.contains("disk is full"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(repo.join(".stratum/manifest")).unwrap(),
        before
    );
    stratum([OsString::from("check"), repo.clone().into()]);
}
