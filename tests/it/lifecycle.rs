//! End-to-end tests of the repository's life after publishing: `rm`, `gc`
//! (grace period with an injected clock, shared layers, concurrency with a
//! publisher and with a mounted reader), `history`, `tag` and `rollback`.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::services::StratumServe;
use crate::support::{stratum, stratum_raw, Output, TestRepo};
use serde_json::Value;

const DAY: u64 = 86_400;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Two images sharing a base layer; each has its own top layer.
fn two_images(repo: &TestRepo) -> Layout {
    let l = Layout::create(&repo.scratch("layout"));
    let base = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(
            b"etc/base.bin",
            &support::fsutil::Rng::new(5).bytes(100_000),
        ),
    ]);
    for (tag, seed) in [("a", 1u64), ("b", 2)] {
        let top = Layer::gzip(&[
            TarEntry::dir(b"app/"),
            TarEntry::file(
                b"app/own.bin",
                &support::fsutil::Rng::new(seed).bytes(60_000),
            ),
            TarEntry::file(b"app/name", tag.as_bytes()),
        ]);
        l.add_image(tag, &[base.clone(), top]);
    }
    repo.publish(&[&format!("oci:{}:a", l.dir.display())], Some("test/app:a"));
    repo.publish(&[&format!("oci:{}:b", l.dir.display())], Some("test/app:b"));
    l
}

fn cmd(repo: &TestRepo, sub: &str, rest: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![sub.into(), repo.repo.clone().into()];
    v.extend(rest.iter().map(OsString::from));
    v
}

fn with_key(repo: &TestRepo, sub: &str, rest: &[&str]) -> Vec<OsString> {
    let mut v = cmd(repo, sub, rest);
    v.push("--key".into());
    v.push(repo.key.clone().into());
    v
}

fn gc(repo: &TestRepo, rest: &[&str]) -> Value {
    let mut args = with_key(repo, "gc", rest);
    args.push("--json".into());
    stratum(args).json()
}

fn data_set(repo: &TestRepo) -> Vec<PathBuf> {
    repo.data_files()
}

fn pull_ok(repo: &TestRepo, name: &str) -> PathBuf {
    let dest = repo.scratch("pull");
    repo.pull_image(name, &dest);
    dest
}

fn thin_pull(url: &str, pubkey: &Path, file: &Path, dest: &Path) -> Output {
    stratum_raw([
        OsString::from("pull"),
        url.into(),
        "--pubkey".into(),
        pubkey.into(),
        "--thin".into(),
        file.into(),
        dest.into(),
        "--cache".into(),
        dest.with_extension("cache").into(),
    ])
}

#[test]
fn gc_keeps_a_retired_image_for_the_grace_period_then_removes_only_its_own_objects() {
    let repo = TestRepo::new("gc");
    two_images(&repo);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let pubkey = stratum_pubkey(&repo.key);
    let thin = repo.scratch("a.json");
    stratum(cmd(
        &repo,
        "thin",
        &[
            "--image",
            "test/app:a",
            "--url",
            &serve.url,
            "-o",
            thin.to_str().unwrap(),
        ],
    ));
    let a_tree = pull_ok(&repo, "test/app:a");

    stratum(with_key(&repo, "rm", &["test/app:a"]));
    let names: Vec<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["test/app:b"]);

    // Within the grace period nothing of it goes, even with one revision
    // kept (older revisions' own catalogs may).
    let r = gc(
        &repo,
        &[
            "--keep-revisions",
            "1",
            "--safety-window",
            "0",
            "--now",
            &(now() + DAY).to_string(),
        ],
    );
    assert_eq!(r["images_in_grace"], 1, "{r:#}");
    assert!(r["images_removed"].as_array().unwrap().is_empty());
    assert_eq!(r["flat_trees_removed"], 0);
    repo.check();
    let before = data_set(&repo);
    // A node holding the old descriptor still gets the image.
    let dest = repo.scratch("thin-pull");
    thin_pull(&serve.url, &pubkey, &thin, &dest).assert_success();
    support::compare::assert_trees_equal(
        &a_tree,
        &dest,
        &support::compare::CompareOpts::default(),
        "retired image in grace",
    );

    // A dry run after the grace period reports and changes nothing.
    let later = (now() + 31 * DAY).to_string();
    let r = gc(
        &repo,
        &["--keep-revisions", "1", "--now", &later, "--dry-run"],
    );
    assert_eq!(r["images_removed"].as_array().unwrap().len(), 1);
    assert_eq!(data_set(&repo), before);
    let rev = repo.revision();

    // After it: its flat tree and its own layer go; the shared base stays.
    let r = gc(&repo, &["--keep-revisions", "1", "--now", &later]);
    assert_eq!(r["images_removed"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["flat_trees_removed"], 1);
    assert_eq!(
        r["layer_trees_removed"], 1,
        "the base layer is still used by b: {r:#}"
    );
    assert!(r["objects_removed"].as_u64().unwrap() > 0);
    assert_eq!(repo.revision(), rev + 1);
    assert!(data_set(&repo).len() < before.len());
    repo.check();
    let b = pull_ok(&repo, "test/app:b");
    assert_eq!(std::fs::read(b.join("app/name")).unwrap(), b"b");
    assert_eq!(
        std::fs::read(b.join("etc/base.bin")).unwrap().len(),
        100_000
    );
    // The old descriptor now fails cleanly: its catalogs are gone.
    let dest = repo.scratch("thin-pull-late");
    let out = thin_pull(&serve.url, &pubkey, &thin, &dest);
    assert!(!out.success());
    out.assert_no_panic();

    // Nothing left to do: a second run removes nothing.
    let r = gc(&repo, &["--keep-revisions", "1", "--now", &later]);
    assert_eq!(r["objects_removed"], 0, "{r:#}");
    assert_eq!(r["new_revision"], false);
}

#[test]
fn gc_safety_window_spares_young_unreferenced_objects() {
    let repo = TestRepo::new("gc-young");
    two_images(&repo);
    stratum(with_key(&repo, "rm", &["test/app:a"]));
    // The grace period is over, but every object is younger than the window.
    let r = gc(
        &repo,
        &[
            "--keep-revisions",
            "1",
            "--grace",
            "0s",
            "--safety-window",
            "1h",
        ],
    );
    assert_eq!(r["images_removed"].as_array().unwrap().len(), 1);
    assert_eq!(r["objects_removed"], 0, "{r:#}");
    assert!(r["objects_too_young"].as_u64().unwrap() > 0);
    repo.check();
}

#[test]
fn gc_and_publish_at_the_same_time_lose_nothing() {
    let repo = TestRepo::new("gc-race");
    let l = two_images(&repo);
    stratum(with_key(&repo, "rm", &["test/app:a", "test/app:b"]));
    let later = (now() + 40 * DAY).to_string();
    // Publish `a` again while gc removes everything unreferenced.
    let publish = {
        let args: Vec<String> = vec![
            "publish".into(),
            format!("oci:{}:a", l.dir.display()),
            "--repo".into(),
            repo.repo.display().to_string(),
            "--key".into(),
            repo.key.display().to_string(),
            "--as".into(),
            "test/app:again".into(),
        ];
        std::thread::spawn(move || stratum_raw(args))
    };
    let gc_out = stratum_raw(with_key(
        &repo,
        "gc",
        &[
            "--keep-revisions",
            "1",
            "--safety-window",
            "0",
            "--now",
            &later,
        ],
    ));
    let pub_out = publish.join().unwrap();
    gc_out.assert_success();
    pub_out.assert_success();
    repo.check();
    let t = pull_ok(&repo, "test/app:again");
    assert_eq!(std::fs::read(t.join("app/name")).unwrap(), b"a");
    // And once more, now that both are done.
    gc(
        &repo,
        &[
            "--keep-revisions",
            "1",
            "--safety-window",
            "0",
            "--now",
            &later,
        ],
    );
    repo.check();
    pull_ok(&repo, "test/app:again");
}

#[test]
fn gc_while_a_mounted_reader_reads_causes_no_failed_read() {
    if !require_fuse() {
        return;
    }
    let repo = TestRepo::new("gc-mount");
    two_images(&repo);
    let expected = pull_ok(&repo, "test/app:b");
    stratum(with_key(&repo, "rm", &["test/app:a"]));
    let src = MountSource::dir(&repo.repo, None);
    let mnt = repo.scratch("mnt");
    let m = Mount::start(&src, &mnt, Some("test/app:b"));
    let later = (now() + 40 * DAY).to_string();
    let gc_thread = {
        let args = with_key(
            &repo,
            "gc",
            &[
                "--keep-revisions",
                "1",
                "--safety-window",
                "0",
                "--now",
                &later,
            ],
        );
        std::thread::spawn(move || stratum_raw(args))
    };
    for _ in 0..5 {
        support::compare::assert_trees_equal(
            &expected,
            m.path(),
            &support::compare::CompareOpts::default(),
            "mounted during gc",
        );
    }
    gc_thread.join().unwrap().assert_success();
    support::compare::assert_trees_equal(
        &expected,
        m.path(),
        &support::compare::CompareOpts::default(),
        "mounted after gc",
    );
    m.unmount();
    repo.check();
}

#[test]
fn history_tag_and_rollback_round_trip() {
    let repo = TestRepo::new("history");
    two_images(&repo); // revision 2: a; revision 3: a, b
    let h = stratum(cmd(&repo, "history", &["--json"])).json();
    let revs: Vec<u64> = h["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [3, 2, 1]);
    assert_eq!(h["older_removed"], false);

    let t = stratum(with_key(
        &repo,
        "tag",
        &["only-a", "--revision", "2", "--json"],
    ))
    .json();
    assert_eq!(t["tag"]["revision"], 2);
    assert_eq!(t["revision"], 4);
    // Tagging never changes the images.
    assert_eq!(repo.images().as_array().unwrap().len(), 2);

    let r = stratum(with_key(&repo, "rollback", &["--to", "2", "--json"])).json();
    assert_eq!(r["revision"], 5, "the revision number only grows: {r:#}");
    assert_eq!(r["unlinked"], serde_json::json!(["test/app:b"]));
    let names: Vec<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["test/app:a"]);
    repo.check();

    // Forward again to revision 3's images: b comes back (its trees were kept).
    let r = stratum(with_key(&repo, "rollback", &["--to", "3", "--json"])).json();
    assert_eq!(r["restored"], serde_json::json!(["test/app:b"]));
    assert_eq!(repo.images().as_array().unwrap().len(), 2);
    pull_ok(&repo, "test/app:b");

    // GC keeps the tagged revision (and what it reaches) and the newest one.
    let later = (now() + 40 * DAY).to_string();
    let g = gc(
        &repo,
        &[
            "--keep-revisions",
            "1",
            "--safety-window",
            "0",
            "--now",
            &later,
        ],
    );
    let kept: Vec<u64> = g["revisions_kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(kept.contains(&2), "tagged revision 2 must be kept: {g:#}");
    let h = stratum(cmd(&repo, "history", &["--json"])).json();
    assert_eq!(h["older_removed"], true, "{h:#}");
    // The tagged revision can still be rolled back to.
    let r = stratum(with_key(&repo, "rollback", &["--to", "2", "--json"])).json();
    assert_eq!(r["unlinked"], serde_json::json!(["test/app:b"]));
    repo.check();
    pull_ok(&repo, "test/app:a");

    // Bad requests fail cleanly.
    stratum_raw(with_key(&repo, "rollback", &["--to", "99"])).assert_clean_failure();
    stratum_raw(with_key(&repo, "tag", &["bad tag"])).assert_clean_failure();
    stratum_raw(with_key(&repo, "rm", &["test/app:nope"])).assert_clean_failure();
}

/// `KEYFILE.pub`, as `stratum keygen` writes it.
fn stratum_pubkey(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The `/images` catalog is updated in place (not rebuilt): removing the
/// last image of a repository name removes its now-empty directories, and
/// a name can come back.
#[test]
fn rm_removes_empty_image_directories_and_a_name_can_return() {
    let repo = TestRepo::new("images-dirs");
    let l = two_images(&repo);
    let ls = |path: &str| -> Vec<String> {
        let out = stratum(cmd(&repo, "ls", &[path, "--json"])).json();
        out.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ls("/images/test/app"), ["a", "b"]);
    stratum(with_key(&repo, "rm", &["test/app:a"]));
    assert_eq!(ls("/images/test/app"), ["b"]);
    stratum(with_key(&repo, "rm", &["test/app:b"]));
    assert!(ls("/images").is_empty(), "{:?}", ls("/images"));
    repo.check();
    repo.publish(&[&format!("oci:{}:a", l.dir.display())], Some("test/app:a"));
    assert_eq!(ls("/images/test/app"), ["a"]);
    pull_ok(&repo, "test/app:a");
    repo.check();
}
