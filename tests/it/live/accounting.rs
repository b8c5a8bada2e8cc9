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
//! - `--metrics`: the Prometheus endpoint of a live mount moves with the
//!   same events (revision, refreshes by outcome, requests and bytes by
//!   mirror, latency histogram, cache hits, misses and bytes) and agrees
//!   with `status --json`.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::VISIBLE_WITHIN;
use super::{check_files, image_dir, live_mount, os, pubkey, publish, ready, status, wait_for};
use crate::support::mount::{Mount, MountSource};
use crate::support::prom::{scrape, Scrape};
use crate::support::services::{free_port, StratumServe};
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

/// The fetch metrics of one mirror and the cache metrics, as a scrape
/// shows them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fetch {
    ok: f64,
    errors: f64,
    bytes: f64,
    timed: f64,
    hits: f64,
    misses: f64,
    cache_bytes: f64,
}

impl Fetch {
    fn of(m: &Scrape, mirror: &str) -> Fetch {
        let req = |outcome| {
            m.value(
                "stratum_fetch_requests_total",
                &[("mirror", mirror), ("outcome", outcome)],
            )
        };
        Fetch {
            ok: req("ok"),
            errors: req("error"),
            bytes: m.value("stratum_fetch_bytes_total", &[("mirror", mirror)]),
            timed: m.value(
                "stratum_fetch_duration_seconds_count",
                &[("mirror", mirror)],
            ),
            hits: m.value("stratum_cache_hits_total", &[]),
            misses: m.value("stratum_cache_misses_total", &[]),
            cache_bytes: m.value("stratum_cache_bytes", &[]),
        }
    }

    /// The same numbers must be in `status --json`.
    fn agrees_with(&self, st: &Value) {
        let n = |path: &str| {
            path.split('.')
                .fold(st, |v, k| &v[k])
                .as_f64()
                .unwrap_or_else(|| panic!("{path} in {st}"))
        };
        assert_eq!(
            self.ok + self.errors,
            n("fetched.requests"),
            "{self:?} vs {st}"
        );
        assert_eq!(self.errors, n("download_errors"), "{self:?} vs {st}");
        assert_eq!(self.bytes, n("fetched.bytes"), "{self:?} vs {st}");
        assert_eq!(self.timed, self.ok + self.errors, "{self:?}");
        assert_eq!(self.hits, n("cache_hits"), "{self:?} vs {st}");
        assert_eq!(self.misses, n("cache_misses"), "{self:?} vs {st}");
        assert_eq!(self.cache_bytes, n("cache.bytes_used"), "{self:?} vs {st}");
    }
}

/// `stratum mount URL … --metrics`: a publish + reload moves the revision
/// gauge and `refreshes{outcome="switched"}`; reading a new file adds its
/// object's bytes (at least the file's size) to the fetched bytes, one
/// request, one miss and the file's size to the cache; reading it again
/// with the page cache dropped is one cache hit and fetches nothing. Every
/// number also agrees with `status --json`.
#[test]
fn metrics_count_a_publish_a_read_and_a_cache_hit() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("live.test");
    publish(&repo, "test/a:1", 81, 4);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let mirror = serve.url.trim_end_matches('/').to_owned();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        None,
        &[
            os("--refresh"),
            os("1h"),
            os("--cache"),
            os(tmp.path().join("cache")),
            os("--metrics"),
            os(addr.to_string()),
        ],
    );
    let cache = tmp.path().join("cache");

    // At mount time: the revision mounted, no refresh yet, the manifest and
    // the root catalog fetched from the one mirror.
    let m0 = scrape(addr);
    let s0 = status(m.path());
    let rev0 = s0["revision"].as_f64().unwrap();
    assert_eq!(m0.kind("stratum_mount_revision"), Some("gauge"));
    assert_eq!(m0.kind("stratum_fetch_requests_total"), Some("counter"));
    assert_eq!(m0.kind("stratum_fetch_duration_seconds"), Some("histogram"));
    assert_eq!(m0.value("stratum_mount_revision", &[]), rev0);
    assert_eq!(m0.sum("stratum_mount_refreshes_total"), 0.0);
    let f0 = Fetch::of(&m0, &mirror);
    assert!(f0.ok >= 2.0 && f0.errors == 0.0, "{f0:?}");
    assert!(f0.bytes > 0.0 && f0.cache_bytes > 0.0, "{f0:?}");
    assert_eq!(
        m0.sum("stratum_fetch_requests_total"),
        f0.ok,
        "one mirror only"
    );
    f0.agrees_with(&s0);

    // A publish and a refresh: the gauge moves, one switched refresh.
    let b = publish(&repo, "test/b:1", 82, 4);
    stratum([os("reload"), os(m.path()), os("--timeout"), os("30s")]);
    let m1 = scrape(addr);
    let s1 = status(m.path());
    assert_eq!(s1["revision"].as_f64().unwrap(), rev0 + 1.0);
    assert_eq!(m1.value("stratum_mount_revision", &[]), rev0 + 1.0);
    assert_eq!(
        m1.value("stratum_mount_refreshes_total", &[("outcome", "switched")]),
        1.0
    );
    assert_eq!(m1.sum("stratum_mount_refreshes_total"), 1.0);
    let f1 = Fetch::of(&m1, &mirror);
    // The manifest (and the new catalogs) fetched.
    assert!(f1.ok > f0.ok && f1.bytes > f0.bytes, "{f0:?} -> {f1:?}");
    f1.agrees_with(&s1);

    // A new file: its object fetched (one request, its bytes as served,
    // at least the file's size: random bytes do not compress), one miss,
    // the file's bytes added to the cache.
    // Opened before the first scrape and read through the handle: no
    // lookup (a catalog hit) falls between the scrapes, even when another
    // test drops the kernel's caches meanwhile.
    let big = image_dir(m.path(), "test/b:1").join("big.bin");
    let read = |f: std::fs::File| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut v).unwrap();
        assert!(v == b["big.bin"], "big.bin has other bytes");
    };
    let file = std::fs::File::open(&big).unwrap();
    let objs0 = cached(&cache, "objects");
    let f2 = Fetch::of(&scrape(addr), &mirror);
    read(file);
    let m3 = scrape(addr);
    let f3 = Fetch::of(&m3, &mirror);
    let new_objs: Vec<String> = cached(&cache, "objects")
        .difference(&objs0)
        .cloned()
        .collect();
    assert_eq!(new_objs.len(), 1, "{new_objs:?}");
    let served = served_size(&repo.repo, &new_objs[0]) as f64;
    let size = b["big.bin"].len() as f64;
    eprintln!("read of {size} bytes, {served} on the wire: {f2:?} -> {f3:?}");
    assert_eq!(f3.bytes - f2.bytes, served);
    assert!(f3.bytes - f2.bytes >= size, "{f2:?} -> {f3:?}");
    assert_eq!(f3.ok - f2.ok, 1.0);
    assert_eq!(f3.timed - f2.timed, 1.0);
    assert_eq!(f3.misses - f2.misses, 1.0);
    assert_eq!(f3.hits, f2.hits);
    assert_eq!(f3.cache_bytes - f2.cache_bytes, size);
    assert!(
        m3.value(
            "stratum_fetch_duration_seconds_sum",
            &[("mirror", mirror.as_str())]
        ) > 0.0
    );
    f3.agrees_with(&status(m.path()));

    // The same file again, page cache dropped: one hit, nothing fetched.
    // The hit is counted by the read, or, when the kernel reads the cached
    // file itself (passthrough, D48), by the open.
    drop_caches();
    let passthrough = || {
        status(m.path())["requests"]["passthrough"]
            .as_u64()
            .unwrap()
    };
    let (p0, f_open) = (passthrough(), Fetch::of(&scrape(addr), &mirror));
    let file = std::fs::File::open(&big).unwrap();
    let f4 = Fetch::of(&scrape(addr), &mirror);
    read(file);
    let m5 = scrape(addr);
    let f5 = Fetch::of(&m5, &mirror);
    if passthrough() > p0 {
        assert!(f4.hits > f_open.hits, "{f_open:?} -> {f4:?}");
        assert_eq!(f5.hits, f4.hits, "{f4:?} -> {f5:?}");
    } else {
        assert_eq!(f5.hits - f4.hits, 1.0, "{f4:?} -> {f5:?}");
    }
    assert_eq!(
        (f5.misses, f5.ok, f5.bytes, f5.cache_bytes),
        (f4.misses, f4.ok, f4.bytes, f4.cache_bytes)
    );
    assert_eq!(m5.value("stratum_cache_evictions_total", &[]), 0.0);
    assert_eq!(m5.sum("stratum_mount_refreshes_total"), 1.0);
    f5.agrees_with(&status(m.path()));
    m.unmount();
}
