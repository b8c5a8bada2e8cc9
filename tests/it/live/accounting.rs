//! Live mounts, continued: through a Squid proxy, many switches in one
//! process, and the numbers `status --json` reports.
//!
//! - A `--refresh 1s` mount whose every request goes through Squid sees a
//!   publish within 3 s: the manifest is revalidated with the origin, never
//!   served stale from Squid's cache.
//! - 200 switches (a retag published and `reload`ed each time) keep the
//!   mount process's open file descriptors bounded: catalogs of old
//!   revisions are closed once the kernel forgets their inodes, while a
//!   file held open in a removed image keeps reading the right bytes.
//! - `status --json` changes by exactly what a publish (revision +1, the
//!   new catalogs fetched), a read of a new file (one object, its bytes on
//!   the wire) and a read of a cached file (one cache hit) should change.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::VISIBLE_WITHIN;
use super::{check_files, image_dir, live_mount, os, pubkey, publish, ready, status, wait_for};
use crate::support::mount::{Mount, MountSource};
use crate::support::services::StratumServe;
use crate::support::squid::{squid_bin, Squid};
use crate::support::{skip, stratum, tempdir, TestRepo};

/// A name only Squid resolves (its `hosts_file`): the mount cannot reach
/// the origin but through the proxy.
const ORIGIN_HOST: &str = "stratum-origin.test";

/// Every request of a `--refresh 1s` mount goes through Squid; a publish
/// shows within 3 s, and the manifest was revalidated with the origin on
/// each refresh (Squid logs it as a miss or a refresh, never a plain hit).
#[test]
fn through_squid_a_publish_shows_within_the_refresh() {
    if !ready() {
        return;
    }
    let Some(bin) = squid_bin() else {
        return skip("squid is not installed (see .ci/run)");
    };
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 51, 10);
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
    let src = MountSource::url(&origin, &pubkey(&repo), ());
    let m = Mount::start_env(
        &src,
        &tmp.path().join("mnt"),
        None,
        &[
            os("--refresh"),
            os("1s"),
            os("--cache"),
            os(tmp.path().join("cache")),
        ],
        &env,
    );
    check_files(&image_dir(m.path(), "test/a:1"), &a, "before");
    // Refreshes with nothing published: 304s through Squid.
    let n = status(m.path())["refresh"]["refreshes"].as_u64().unwrap();
    wait_for(Duration::from_secs(10), "two refreshes", || {
        status(m.path())["refresh"]["refreshes"].as_u64().unwrap() >= n + 2
    });
    let st = status(m.path());
    assert_eq!(st["refresh"]["last"]["outcome"], "not-modified", "{st}");

    let b = publish(&repo, "test/b:1", 52, 10);
    let b_dir = image_dir(m.path(), "test/b:1");
    let took = wait_for(VISIBLE_WITHIN, "test/b:1 through squid", || b_dir.exists());
    eprintln!("publish visible through squid after {took:?}");
    check_files(&b_dir, &b, "after the publish");
    let st = status(m.path());
    assert_eq!(st["revision"], repo.revision());
    assert_eq!(st["mirror"], origin);

    let log = squid.settled_log();
    let manifests: Vec<&str> = log
        .iter()
        .filter(|p| p.url == format!("{origin}/.stratum/manifest"))
        .map(|p| p.code.as_str())
        .collect();
    eprintln!("manifest requests through squid: {manifests:?}");
    assert!(manifests.len() >= 3, "{log:#?}");
    for code in &manifests {
        assert!(
            !code.contains("HIT") || code.contains("REFRESH"),
            "squid answered a manifest request from its cache without the origin: {code}"
        );
    }
    assert!(
        log.iter().all(|p| p.url.starts_with(&format!("{origin}/"))),
        "squid saw other requests: {log:#?}"
    );
    m.unmount();
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// 200 revisions, each a retag of test/c:1 that the mount switches to
/// (`reload`) and reads from: the mount process's open file descriptors
/// stay bounded (old revisions' catalogs are closed once the kernel forgot
/// their inodes), and a file held open in a removed image reads right.
#[test]
fn two_hundred_switches_keep_open_files_bounded() {
    const SWITCHES: u64 = 200;
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    let a = publish(&repo, "test/a:1", 61, 4);
    publish(&repo, "test/c:1", 62, 2);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "1h");
    let pid = m.pid().unwrap();
    let a_dir = image_dir(m.path(), "test/a:1");
    let open = std::fs::File::open(a_dir.join("big.bin")).unwrap();
    stratum([
        os("rm"),
        os(&repo.repo),
        os("test/a:1"),
        os("--key"),
        os(&repo.key),
    ]);
    let c_dir = image_dir(m.path(), "test/c:1");
    let mut baseline = 0;
    for i in 0..SWITCHES {
        let files = publish(&repo, "test/c:1", 1000 + i, 2);
        let out = stratum([os("reload"), os(m.path()), os("--timeout"), os("30s")]);
        assert_eq!(
            out.stdout_str().trim(),
            format!("revision {}", repo.revision())
        );
        check_files(&c_dir, &files, &format!("switch {i}"));
        if i == 9 {
            baseline = open_fds(pid);
        }
    }
    let fds = open_fds(pid);
    let st = status(m.path());
    eprintln!(
        "{SWITCHES} switches: {baseline} fds after 10, {fds} after {SWITCHES}; catalogs {}",
        st["refresh"]["catalogs"]
    );
    assert!(
        fds <= baseline + 8,
        "open fds grew from {baseline} to {fds} over {} switches: {}",
        SWITCHES - 10,
        st["refresh"]["catalogs"]
    );
    let cats = &st["refresh"]["catalogs"];
    assert!(cats["released"].as_u64().unwrap() > SWITCHES, "{cats}");
    assert!(cats["open"].as_u64().unwrap() <= 16, "{cats}");
    let mut all = vec![0u8; a["big.bin"].len()];
    open.read_exact_at(&mut all, 0).unwrap();
    assert!(all == a["big.bin"], "the open file read other bytes");
    drop(open);
    m.unmount();
}

/// Ids (64 hex) of the files in `CACHE/objects` or `CACHE/catalogs`.
fn cached(cache: &Path, sub: &str) -> BTreeSet<String> {
    walkdir::WalkDir::new(cache.join(sub))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Size of the repository's file of object `hex` (as served: encoded).
fn served_size(repo: &Path, hex: &str) -> u64 {
    let dir = repo.join("data").join(&hex[..2]);
    let e = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&hex[2..]))
        .unwrap_or_else(|| panic!("no object {hex} in {}", dir.display()));
    e.metadata().unwrap().len()
}

/// `after - before` of the number at `path` (e.g. `fetched.bytes`).
fn delta(before: &Value, after: &Value, path: &str) -> i64 {
    let get = |v: &Value| {
        path.split('.')
            .fold(v, |v, k| &v[k])
            .as_i64()
            .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
    };
    get(after) - get(before)
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").unwrap();
}

/// What a publish, a read of a new file and a read of a cached file change
/// in `status --json`, exactly.
#[test]
fn status_counts_a_publish_a_read_and_a_cache_hit() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    publish(&repo, "test/a:1", 71, 4);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let m = live_mount(&repo, &serve, tmp.path(), "1", "1h");
    let cache: PathBuf = tmp.path().join("cache-1");
    let s0 = status(m.path());

    // A publish: revision +1; the manifest and the new catalogs fetched.
    let b = publish(&repo, "test/b:1", 72, 4);
    let cats0 = cached(&cache, "catalogs");
    let manifest_len = repo.manifest_bytes().len() as i64;
    stratum([os("reload"), os(m.path()), os("--timeout"), os("30s")]);
    let s1 = status(m.path());
    let new_cats: Vec<String> = cached(&cache, "catalogs")
        .difference(&cats0)
        .cloned()
        .collect();
    let cat_bytes: u64 = new_cats.iter().map(|h| served_size(&repo.repo, h)).sum();
    eprintln!(
        "publish: {} new catalogs, {cat_bytes} bytes",
        new_cats.len()
    );
    assert!(!new_cats.is_empty());
    assert_eq!(delta(&s0, &s1, "revision"), 1);
    assert_eq!(delta(&s0, &s1, "refresh.refreshes"), 1);
    assert_eq!(
        delta(&s0, &s1, "fetched.requests"),
        1 + new_cats.len() as i64
    );
    assert_eq!(delta(&s0, &s1, "fetched.objects"), new_cats.len() as i64);
    assert_eq!(
        delta(&s0, &s1, "fetched.bytes"),
        manifest_len + cat_bytes as i64
    );
    assert_eq!(delta(&s0, &s1, "cache_misses"), new_cats.len() as i64);
    assert_eq!(delta(&s0, &s1, "download_errors"), 0);

    // A read of a new file: one object, its bytes as served.
    let b_dir = image_dir(m.path(), "test/b:1");
    let big = b_dir.join("big.bin");
    std::fs::metadata(&big).unwrap();
    let objs0 = cached(&cache, "objects");
    let s2 = status(m.path());
    assert_eq!(std::fs::read(&big).unwrap(), b["big.bin"]);
    let s3 = status(m.path());
    let new_objs: Vec<String> = cached(&cache, "objects")
        .difference(&objs0)
        .cloned()
        .collect();
    assert_eq!(new_objs.len(), 1, "{new_objs:?}");
    let obj_bytes = served_size(&repo.repo, &new_objs[0]) as i64;
    eprintln!(
        "read of {} bytes: {obj_bytes} on the wire; {s2} -> {s3}",
        b["big.bin"].len()
    );
    assert_eq!(delta(&s2, &s3, "fetched.requests"), 1);
    assert_eq!(delta(&s2, &s3, "fetched.objects"), 1);
    assert_eq!(delta(&s2, &s3, "fetched.bytes"), obj_bytes);
    assert_eq!(delta(&s2, &s3, "cache_misses"), 1);
    assert_eq!(delta(&s2, &s3, "cache_hits"), 0);

    // The same file again, page cache dropped: one cache hit, nothing fetched.
    drop_caches();
    std::fs::metadata(&big).unwrap();
    let s4 = status(m.path());
    assert_eq!(std::fs::read(&big).unwrap(), b["big.bin"]);
    let s5 = status(m.path());
    assert_eq!(delta(&s4, &s5, "cache_hits"), 1, "{s4} -> {s5}");
    assert_eq!(delta(&s4, &s5, "cache_misses"), 0);
    assert_eq!(delta(&s4, &s5, "fetched.requests"), 0);
    assert_eq!(delta(&s4, &s5, "fetched.bytes"), 0);
    m.unmount();
}
