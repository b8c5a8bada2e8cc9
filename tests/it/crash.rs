//! Crash safety: `stratum publish`, `stratum gc`, `stratum sync` (from a
//! local `docker-registry`, skipped without it and skopeo) and `stratum
//! replicate` (from `stratum serve`) killed with SIGKILL at seeded random
//! moments, again and again on the same repository or replica. After every
//! kill `check` must pass at the last good revision (or a newer complete
//! one); at the end an uninterrupted run must give the same result as on a
//! fresh repository (for a replica: the origin's manifest and trees).
//! A full disk must give a clear error and leave the repository intact.
//!
//! `STRATUM_CRASH_ITERATIONS` sets the number of kills (default 12; the
//! benchmark script `bench/crash-loop.sh` runs 100 and more) and
//! `STRATUM_CRASH_SEED` the seed.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::fsutil::Rng;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::registry::{push_oci, require_registry, Registry};
use crate::support::services::StratumServe;
use crate::support::small::SmallImage;
use crate::support::{stratum, stratum_bin, stratum_raw, TestRepo};

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
    add_big_image(&l, "1", 77);
    l
}

/// Adds [`big_image`]'s kind of image to `l` as `tag`, its bytes drawn from
/// `seed`; returns its manifest digest.
fn add_big_image(l: &Layout, tag: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
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
    l.add_image(tag, &layers)
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
fn run_and_kill(cmd: Command, after: Duration) -> bool {
    kill_after(cmd, after).is_some()
}

/// Runs `cmd`, kills it with SIGKILL after `after` (if still running);
/// returns its exit status if it had finished by itself, `None` if killed.
fn kill_after(mut cmd: Command, after: Duration) -> Option<ExitStatus> {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + after;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
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

// ---------------------------------------------------------------------------
// sync

/// The images of `stratum sync`'s crash loop, `REPOSITORY:TAG` on the registry,
/// pushed from the layout tags `1` and `2` ([`add_big_image`], seeds 77 and 78).
const SYNC_IMAGES: [&str; 2] = ["crash/app:1", "crash/tool:2"];

/// Writes `REPO_TMP/wishlist.yaml`: every [`SYNC_IMAGES`] from `reg` into `repo`.
fn write_wishlist(repo: &TestRepo, reg: &Registry) -> PathBuf {
    let q = |p: &Path| serde_json::to_string(p.to_str().expect("utf-8 temp path")).unwrap();
    let mut text = format!(
        "version: 1\nrepository: {}\nsigning_key: {}\nregistries:\n  \"{}\": {{ insecure: true }}\nimages:\n",
        q(&repo.repo),
        q(&repo.key),
        reg.host()
    );
    for image in SYNC_IMAGES {
        text.push_str(&format!("  - docker://{}/{image}\n", reg.host()));
    }
    let file = repo.tmp.path().join("wishlist.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn sync_cmd(wishlist: &Path) -> Command {
    let mut c = Command::new(stratum_bin());
    c.arg("sync")
        .arg(wishlist)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// `(name, manifest_digest)` of every image of `repo`, sorted.
fn image_digests(repo: &TestRepo) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["manifest_digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `stratum sync` killed at seeded random moments (two registry images of
/// [`big_image`]'s size, one revision): after every kill `check` passes and
/// the revision is the last good one, or the next one holding the whole
/// sync; a run to completion then equals an uninterrupted one.
#[test]
fn sync_killed_at_random_moments_never_corrupts_and_a_rerun_matches() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let reference = TestRepo::new("crash-sync-ref");
    let layout = Layout::create(&reference.scratch("layout"));
    for (image, (tag, seed)) in SYNC_IMAGES.iter().zip([("1", 77), ("2", 78)]) {
        add_big_image(&layout, tag, seed);
        push_oci(&layout.dir, tag, image, &reg);
    }
    let full = timed(sync_cmd(&write_wishlist(&reference, &reg)));
    let expected = image_digests(&reference);
    assert_eq!(expected.len(), SYNC_IMAGES.len(), "{expected:?}");
    let expected_trees: Vec<PathBuf> = expected
        .iter()
        .map(|(name, _)| {
            let t = reference.scratch("expected");
            reference.pull_image(name, &t);
            t
        })
        .collect();

    let n = iterations();
    eprintln!("sync crash loop: seed {}, reference run {full:?}", seed());
    let mut rng = Rng::new(seed() ^ 0x5c);
    let mut repo = TestRepo::new("crash-sync");
    let mut wishlist = write_wishlist(&repo, &reg);
    let (mut mid_run, mut finished) = (0, 0);
    for i in 0..n {
        let before = repo.revision();
        let before_manifest = repo.manifest_bytes();
        let at = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let status = kill_after(sync_cmd(&wishlist), at);
        eprintln!("sync kill {i}: after {at:?}: {status:?}");
        if let Some(st) = status {
            assert!(st.success(), "iteration {i}: sync failed by itself: {st}");
        } else {
            mid_run += 1;
        }
        let out = repo.check_raw();
        assert!(
            out.success(),
            "iteration {i} (killed after {at:?}, exit: {status:?}): check failed:\n{}{}",
            out.stdout_str(),
            out.stderr_str()
        );
        let after = repo.revision();
        assert!(
            after == before || after == before + 1,
            "iteration {i}: revision jumped {before} -> {after}"
        );
        assert!(
            status.is_none() || after == before + 1,
            "iteration {i}: sync exited 0 without a new revision"
        );
        assert!(
            after != before || repo.manifest_bytes() == before_manifest,
            "iteration {i}: revision {before} kept, but its manifest changed"
        );
        if after == before + 1 {
            finished += 1;
            assert_eq!(
                image_digests(&repo),
                expected,
                "iteration {i}: the new revision must hold the whole sync"
            );
            // Synced: go on with an empty repository so that later kills
            // interrupt real work.
            repo = TestRepo::new("crash-sync");
            wishlist = write_wishlist(&repo, &reg);
        }
    }
    eprintln!(
        "sync: {n} kills (seed {}), {mid_run} mid-run, {finished} revisions completed",
        seed()
    );
    // A run to completion gives exactly the reference result.
    let st = sync_cmd(&wishlist).status().unwrap();
    assert!(st.success(), "the final sync failed: {st}");
    repo.check();
    assert_eq!(image_digests(&repo), expected, "after the crash loop");
    for ((name, _), want) in expected.iter().zip(&expected_trees) {
        let tree = repo.scratch("tree");
        repo.pull_image(name, &tree);
        support::compare::assert_trees_equal(
            want,
            &tree,
            &support::compare::CompareOpts::default(),
            &format!("{name} after the sync crash loop"),
        );
    }
}

// ---------------------------------------------------------------------------
// replicate

fn replicate_cmd(url: &str, dest: &Path, pubkey: &Path) -> Command {
    let mut c = Command::new(stratum_bin());
    c.arg("replicate")
        .arg(url)
        .arg(dest)
        .arg("--pubkey")
        .arg(pubkey)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The replica's revision (`info --pubkey`), `None` while it has no manifest.
fn replica_revision(dest: &Path, pubkey: &Path) -> Option<u64> {
    if !dest.join(".stratum/manifest").exists() {
        return None;
    }
    let info = stratum([
        OsString::from("info"),
        dest.into(),
        "--pubkey".into(),
        pubkey.into(),
        "--json".into(),
    ])
    .json();
    Some(
        info["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("info --json has no integer revision: {info}")),
    )
}

/// `stratum replicate` killed at seeded random moments while `stratum serve`
/// serves the origin: the replica has no manifest yet, or `check` passes at
/// its previous revision or at the origin's. When it has caught up, the next
/// kills hit a fresh replica (full replication) or, alternately, a new image
/// published into the origin (incremental); every fifth iteration the origin
/// also moves on under a half-done replica. A run to completion then gives
/// the origin's manifest and trees.
#[test]
fn replicate_killed_at_random_moments_never_corrupts_and_resumes() {
    let origin = TestRepo::new("crash-origin");
    let layout = big_image(&origin.scratch("layout"));
    origin.publish_one(
        &format!("oci:{}:1", layout.dir.display()),
        Some("crash/app:1"),
    );
    let serve = StratumServe::start(&origin.repo, &[] as &[&str]);
    let mut key = origin.key.clone().into_os_string();
    key.push(".pub");
    let key = PathBuf::from(key);
    let full = timed(replicate_cmd(
        &serve.url,
        &origin.scratch("reference"),
        &key,
    ));

    let n = iterations();
    eprintln!(
        "replicate crash loop: seed {}, reference run {full:?}",
        seed()
    );
    let mut rng = Rng::new(seed() ^ 0x7e);
    let mut replica = origin.scratch("replica");
    // The replica's revision and manifest after the previous iteration.
    let mut last_good: Option<u64> = None;
    let mut last_manifest: Option<Vec<u8>> = None;
    let (mut mid_run, mut caught_up, mut extra) = (0, 0, 0);
    let mut publish_extra = |why: &str| {
        extra += 1;
        let name = format!("crash/extra:{extra}");
        SmallImage::new(1000 + extra, 60).publish(&origin, &name);
        eprintln!("published {name} into the origin ({why})");
    };
    for i in 0..n {
        if i % 5 == 4 {
            publish_extra("every fifth iteration");
        }
        let origin_rev = origin.revision();
        let at = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let status = kill_after(replicate_cmd(&serve.url, &replica, &key), at);
        eprintln!(
            "replicate kill {i}: after {at:?}: {status:?} \
             (last good revision {last_good:?}, origin {origin_rev})"
        );
        if let Some(st) = status {
            assert!(
                st.success(),
                "iteration {i}: replicate failed by itself: {st}"
            );
        } else {
            mid_run += 1;
        }
        let rev = replica_revision(&replica, &key);
        match rev {
            None => assert!(
                last_good.is_none() && status.is_none(),
                "iteration {i} (killed after {at:?}): the replica has no manifest \
                 (last good revision {last_good:?}, exit {status:?})"
            ),
            Some(rev) => {
                let out = stratum_raw([
                    OsString::from("check"),
                    replica.clone().into(),
                    "--pubkey".into(),
                    key.clone().into(),
                ]);
                assert!(
                    out.success(),
                    "iteration {i} (killed after {at:?}, exit {status:?}): check of the replica \
                     failed:\n{}{}",
                    out.stdout_str(),
                    out.stderr_str()
                );
                assert!(
                    Some(rev) == last_good || rev == origin_rev,
                    "iteration {i}: replica at revision {rev}, neither the last good one \
                     ({last_good:?}) nor the origin's ({origin_rev})"
                );
                let manifest = std::fs::read(replica.join(".stratum/manifest")).unwrap();
                if rev == origin_rev {
                    assert!(
                        manifest == origin.manifest_bytes(),
                        "iteration {i}: revision {rev} but not the origin's manifest"
                    );
                } else {
                    assert!(
                        Some(&manifest) == last_manifest.as_ref(),
                        "iteration {i}: revision {rev} kept, but its manifest changed"
                    );
                }
                last_manifest = Some(manifest);
            }
        }
        assert!(
            status.is_none() || rev == Some(origin_rev),
            "iteration {i}: replicate exited 0 without reaching the origin's revision"
        );
        last_good = rev;
        if rev == Some(origin_rev) {
            caught_up += 1;
            if caught_up % 2 == 1 {
                replica = origin.scratch("replica");
                last_good = None;
                last_manifest = None;
            } else {
                publish_extra("the replica caught up");
            }
        }
    }
    eprintln!(
        "replicate: {n} kills (seed {}), {mid_run} mid-run, {caught_up} caught up, \
         {extra} images published meanwhile",
        seed()
    );
    let st = replicate_cmd(&serve.url, &replica, &key).status().unwrap();
    assert!(st.success(), "the final replicate failed: {st}");
    stratum([
        OsString::from("check"),
        replica.clone().into(),
        "--pubkey".into(),
        key.clone().into(),
    ]);
    assert!(
        std::fs::read(replica.join(".stratum/manifest")).unwrap() == origin.manifest_bytes(),
        "the replica's manifest is not the origin's"
    );
    let mut images = vec!["crash/app:1".to_string()];
    if extra > 0 {
        images.push(format!("crash/extra:{extra}"));
    }
    for image in images {
        let want = origin.scratch("origin-tree");
        let got = origin.scratch("replica-tree");
        origin.pull_image(&image, &want);
        stratum([
            OsString::from("pull"),
            replica.clone().into(),
            "--pubkey".into(),
            key.clone().into(),
            "--image".into(),
            image.clone().into(),
            got.clone().into(),
        ]);
        support::compare::assert_trees_equal(
            &want,
            &got,
            &support::compare::CompareOpts::default(),
            &format!("{image}: replica vs origin after the replicate crash loop"),
        );
    }
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
