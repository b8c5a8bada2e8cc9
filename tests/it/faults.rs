//! Fetcher faults, end to end: `stratum pull URL` and `stratum mount URL`
//! read a repository served by `stratum serve` through the fault-injecting
//! proxy of `support/fault_http.rs` (delays, resets and closes mid-body,
//! bit flips, 404/500/503/429, a server that stalls before or after the
//! response head, a trickle), on content objects, on catalogs and on the
//! manifest. What must hold:
//!
//! - one fault (or a persistent fault on one of two mirrors): the read
//!   succeeds with the bytes of a local pull of the same image, after a
//!   retry or a failover;
//! - no good source: the pull fails with a message naming the object, and a
//!   read of the mount fails with `EIO`, within the budget that `--timeout`
//!   and `--retries` give (asserted from both sides for the stalls);
//! - nothing unverified is cached: every file of the cache directory holds
//!   the bytes of its name, and the object that failed is not there;
//! - afterwards, the same cache (pull) or the same mount (still mounted)
//!   reads everything right once the fault is gone.
//!
//! The mount tests need root and `/dev/fuse`, and skip with a message
//! without them. Every test has its own repository, server and proxies.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::compare::{assert_trees_equal, compare_trees, CompareOpts};
use crate::support::fault_http::{object_id_of, HttpFault, HttpFaultProxy, Target};
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::services::StratumServe;
use crate::support::small::{Files, SmallImage};
use crate::support::{require_root, stratum_raw, tempdir, Output, TestRepo};
use pull::pull;

/// `--timeout` of most tests, in seconds.
const TIMEOUT: f64 = 1.0;
/// What a command or a read may take beyond the transport's budget: process
/// start, the manifest and catalogs, a loaded CI machine.
const SLACK: Duration = Duration::from_secs(5);
/// How long a failed object is remembered by a mount
/// (`fetcher/src/fs/store.rs`, `FAILURE_MEMORY`), plus a margin.
const FAILURE_MEMORY: Duration = Duration::from_millis(2500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

// ---------------------------------------------------------------------------
// Faults

/// Faults after which a second attempt gets the right bytes: delays under
/// the timeout (no retry needed), broken bodies, retryable statuses, stalls
/// (the attempt times out).
fn transient_faults() -> Vec<HttpFault> {
    vec![
        HttpFault::DelayHead(ms(300)),
        HttpFault::DelayBody {
            after: 600,
            delay: ms(300),
        },
        HttpFault::Reset { after: 600 },
        HttpFault::Truncate { keep: 600 },
        HttpFault::FlipBit { at: 600 },
        HttpFault::Status(500),
        HttpFault::Status(503),
        HttpFault::Status(429),
        HttpFault::StallBeforeHead,
        HttpFault::StallAfterHead,
    ]
}

/// Faults that, on every request, never give the bytes.
fn failing_faults() -> Vec<HttpFault> {
    vec![
        HttpFault::DelayBody {
            after: 600,
            delay: Duration::from_secs(3600),
        },
        HttpFault::Reset { after: 600 },
        HttpFault::Truncate { keep: 600 },
        HttpFault::FlipBit { at: 600 },
        HttpFault::Status(404),
        HttpFault::Status(500),
        HttpFault::Status(503),
        HttpFault::Status(429),
        HttpFault::StallBeforeHead,
        HttpFault::StallAfterHead,
    ]
}

/// A fault that costs the client a whole timeout per attempt.
fn waits_for_timeout(f: &HttpFault) -> bool {
    matches!(
        f,
        HttpFault::StallBeforeHead | HttpFault::StallAfterHead | HttpFault::DelayBody { .. }
    )
}

/// A delay under the timeout: the slow answer is taken, nothing retried.
fn is_mere_delay(f: &HttpFault) -> bool {
    matches!(f, HttpFault::DelayHead(_) | HttpFault::DelayBody { .. })
}

/// The longest one fetch may take against mirrors that never answer
/// (`fetcher/src/transport.rs`): `retries + 1` rounds, each asking every
/// mirror, each attempt ending after `attempt`, with backoff between rounds
/// (200 ms × 2^round, at most 5 s, plus up to 100 ms of jitter).
fn budget(attempt: Duration, retries: u32, mirrors: u32) -> Duration {
    let backoff: Duration = (1..=retries)
        .map(|r| (ms(200) * (1 << (r - 1).min(8))).min(Duration::from_secs(5)) + ms(100))
        .sum();
    attempt * ((retries + 1) * mirrors) + backoff
}

/// The least time a fetch takes when every attempt waits for the timeout.
fn least(attempt: Duration, retries: u32, mirrors: u32) -> Duration {
    attempt * ((retries + 1) * mirrors) - ms(100)
}

// ---------------------------------------------------------------------------
// A repository behind `stratum serve`

struct Image {
    name: String,
    /// A local pull of the image (`stratum pull REPO --image NAME`): the
    /// oracle.
    local: PathBuf,
    files: Files,
}

impl Image {
    /// The bytes of `rel` in the local pull.
    fn bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.local.join(rel)).unwrap()
    }

    /// The files holding one content object each, in a fixed order.
    fn object_files(&self) -> Vec<String> {
        self.files
            .keys()
            .filter(|k| k.starts_with("docs/") || k.as_str() == "etc/motd")
            .cloned()
            .collect()
    }
}

struct Fixture {
    repo: TestRepo,
    serve: StratumServe,
    images: Vec<Image>,
}

/// `count` small images (`files` content objects each, plus an inline file
/// and a 1.5 MiB one), published as `test/faults{i}:1`, each pulled locally,
/// and `stratum serve` on the repository.
fn fixture(name: &str, count: usize, files: usize) -> Fixture {
    fixture_with(name, count, files, 0)
}

/// [`fixture`] with a chunked file `big/huge.bin` of `big` bytes if > 0.
fn fixture_with(name: &str, count: usize, files: usize, big: usize) -> Fixture {
    let repo = TestRepo::new(name);
    let mut images = Vec::new();
    for i in 0..count {
        let name = format!("test/faults{i}:1");
        let mut small = SmallImage::new(100 + i as u64, files);
        small.big = big;
        let files = small.publish(&repo, &name);
        let local = repo.scratch("local");
        repo.pull_image(&name, &local);
        images.push(Image { name, local, files });
    }
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    Fixture {
        repo,
        serve,
        images,
    }
}

impl Fixture {
    fn pubkey(&self) -> PathBuf {
        let mut p = self.repo.key.clone().into_os_string();
        p.push(".pub");
        p.into()
    }

    fn proxy(&self) -> HttpFaultProxy {
        HttpFaultProxy::start(self.serve.addr)
    }
}

// ---------------------------------------------------------------------------
// The node cache

/// Every file under `CACHE/objects` and `CACHE/catalogs` holds the bytes of
/// its name (BLAKE3), and `CACHE/tmp` holds no partial download; returns the
/// names.
fn verify_cache(cache: &Path) -> Vec<String> {
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "partial files in the cache: {leftovers:?}"
    );
    let mut names = Vec::new();
    for sub in ["objects", "catalogs"] {
        for e in walkdir::WalkDir::new(cache.join(sub)) {
            let e = e.unwrap();
            if !e.file_type().is_file() {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            let name = e.file_name().to_str().unwrap().to_string();
            assert_eq!(
                stratum_catalog::ObjectId::of(&bytes).to_hex(),
                name,
                "{} does not hold the bytes of its name",
                e.path().display()
            );
            names.push(name);
        }
    }
    names
}

/// The objects the proxy injected a fault into.
fn faulted_ids(proxy: &HttpFaultProxy) -> Vec<String> {
    faulted_ids_since(proxy, 0)
}

/// The objects the proxy injected a fault into from its `start`th request
/// on.
fn faulted_ids_since(proxy: &HttpFaultProxy, start: usize) -> Vec<String> {
    proxy.log()[start..]
        .iter()
        .filter(|h| h.fault.is_some())
        .filter_map(|h| object_id_of(&h.path))
        .collect()
}

/// Root and FUSE, or a SKIP line.
fn fuse_ready() -> bool {
    require_root() && require_fuse()
}

// ---------------------------------------------------------------------------
// Both pull and mount

/// The manifest never arrives (the response head, then nothing, on every
/// request for it): `pull` and `mount` fail cleanly, naming the manifest,
/// within the budget of `--timeout 1 --retries 1`, and the mount leaves
/// nothing mounted.
#[test]
fn a_manifest_that_never_arrives_fails_pull_and_mount_within_the_timeout() {
    let fx = fixture("faults-manifest-stall.test", 1, 2);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    proxy.inject_always(Target::Manifest, HttpFault::StallAfterHead);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let t = Duration::from_secs_f64(TIMEOUT);
    let (lo, hi) = (least(t, 1, 1), budget(t, 1, 1) + SLACK);
    let (out, _, took) = pull(&fx, &img.name, &[proxy.url()], &cache, TIMEOUT, 1);
    let out = out.assert_clean_failure();
    assert!(
        out.stderr_str().contains("manifest"),
        "{}",
        out.stderr_str()
    );
    assert!(
        took >= lo && took <= hi,
        "pull: failed after {took:?}, outside {lo:?}..{hi:?}"
    );
    eprintln!("pull: failed after {took:?}");
    if !fuse_ready() {
        return;
    }
    let src = MountSource::url(&proxy.url(), &fx.pubkey(), ());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let extra = [
        os("--cache"),
        os(&cache),
        os("--timeout"),
        os(TIMEOUT.to_string()),
        os("--retries"),
        os("1"),
    ];
    let t0 = Instant::now();
    let err = Mount::expect_failure(&src, &mnt, Some(&img.name), &extra);
    let took = t0.elapsed();
    assert!(err.contains("manifest"), "{err}");
    assert!(
        took >= lo && took <= hi,
        "mount: failed after {took:?}, outside {lo:?}..{hi:?}\n{err}"
    );
    eprintln!("mount: failed after {took:?}");
    assert_eq!(proxy.faults(), 4, "two attempts each");
}

/// `--timeout`, `--retries` and `--mirror` are for a repository URL: with a
/// directory, `pull` and `mount` refuse them; and bad values are refused.
#[test]
fn transport_flags_need_a_url_and_sane_values() {
    let repo = TestRepo::new("faults-flags.test");
    let tmp = tempdir();
    let dir = os(&repo.repo);
    let dest = os(tmp.path().join("dest"));
    for extra in [
        &["--timeout", "1"][..],
        &["--retries", "1"],
        &["--mirror", "http://127.0.0.1:9/"],
    ] {
        let mut args = vec![os("pull"), dir.clone(), os("--path"), os("/"), dest.clone()];
        args.extend(extra.iter().map(os));
        let out = support::stratum_fails(&args);
        assert!(
            out.stderr_str().contains(extra[0]),
            "pull {extra:?}: {}",
            out.stderr_str()
        );
        let mut args = vec![os("mount"), dir.clone(), os(tmp.path().join("mnt"))];
        args.extend(extra.iter().map(os));
        let out = support::stratum_fails(&args);
        assert!(
            out.stderr_str().contains(extra[0]),
            "mount {extra:?}: {}",
            out.stderr_str()
        );
    }
    for bad in [
        &["--timeout", "0"][..],
        &["--timeout", "x"],
        &["--retries", "1000"],
    ] {
        let mut args = vec![
            os("pull"),
            os("http://127.0.0.1:9/"),
            os("--pubkey"),
            os("k.pub"),
            os("--path"),
            os("/"),
            dest.clone(),
        ];
        args.extend(bad.iter().map(os));
        let out = support::stratum_fails(&args);
        assert!(
            out.stderr_str().contains(bad[0]),
            "{bad:?}: {}",
            out.stderr_str()
        );
    }
}

mod mount;
mod proxy;
mod pull;
