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

// ---------------------------------------------------------------------------
// Pull

/// `stratum pull URL --pubkey … --image IMAGE DEST --cache CACHE --json
/// --timeout T --retries R [--mirror M…]`, timed.
fn pull(
    fx: &Fixture,
    image: &str,
    urls: &[String],
    cache: &Path,
    timeout: f64,
    retries: u32,
) -> (Output, PathBuf, Duration) {
    let dest = fx.repo.scratch("dest");
    let mut args = vec![
        os("pull"),
        os(urls[0].clone()),
        os("--pubkey"),
        os(fx.pubkey()),
        os("--image"),
        os(image),
        os(dest.clone()),
        os("--cache"),
        os(cache),
        os("--json"),
        os("--timeout"),
        os(timeout.to_string()),
        os("--retries"),
        os(retries.to_string()),
    ];
    for m in &urls[1..] {
        args.push(os("--mirror"));
        args.push(os(m.clone()));
    }
    let t0 = Instant::now();
    let out = stratum_raw(args);
    (out, dest, t0.elapsed())
}

/// Asserts that a pull succeeded and equals the local pull; returns its
/// `transport` counters.
fn assert_pulled(out: Output, dest: &Path, image: &Image, what: &str) -> serde_json::Value {
    let out = out.assert_success();
    compare_trees(&image.local, dest).unwrap_or_else(|d| {
        panic!(
            "{what}: the pull differs from the local pull:\n{}",
            d.join("\n")
        )
    });
    out.json()["transport"].clone()
}

/// One fault on the first request for `target`: the pull retries (or
/// waits) and equals the local pull; nothing bad is cached.
fn pull_past_one_fault_each(target: Target, name: &str) {
    let fx = fixture(name, 1, 6);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let tmp = tempdir();
    for (i, fault) in transient_faults().into_iter().enumerate() {
        let what = format!("{target:?}, {}", fault.name());
        let faults_before = proxy.faults();
        proxy.inject(target.clone(), 1, fault.clone());
        let cache = tmp.path().join(format!("cache{i}"));
        let (out, dest, took) = pull(&fx, &img.name, &[proxy.url()], &cache, TIMEOUT, 2);
        let t = assert_pulled(out, &dest, img, &what);
        assert_eq!(proxy.armed(), 0, "{what}: the fault was not injected");
        assert_eq!(proxy.faults(), faults_before + 1, "{what}");
        let retries = t["retries"].as_u64().unwrap();
        if is_mere_delay(&fault) {
            assert_eq!(retries, 0, "{what}: a slow answer is not retried: {t}");
        } else {
            assert!(retries >= 1, "{what}: no retry counted: {t}");
        }
        if matches!(fault, HttpFault::FlipBit { .. }) {
            assert!(t["rejected"].as_u64().unwrap() >= 1, "{what}: {t}");
        }
        verify_cache(&cache);
        eprintln!("{what}: pulled in {took:?} ({retries} retries)");
    }
}

#[test]
fn pull_retries_past_one_fault_of_each_kind_on_content_objects() {
    pull_past_one_fault_each(Target::Content, "faults-pull-content.test");
}

#[test]
fn pull_retries_past_one_fault_of_each_kind_on_catalogs() {
    pull_past_one_fault_each(Target::Catalogs, "faults-pull-catalogs.test");
}

/// The manifest: every fault is retried except a flipped bit, which makes
/// the manifest fail its signature check, and a mirror that serves a
/// manifest that does not verify is not asked again (as for a wrong key):
/// with one mirror the pull fails at once, naming the signature; with a
/// second mirror it fails over.
#[test]
fn pull_retries_past_one_fault_on_the_manifest_or_fails_over() {
    let fx = fixture("faults-pull-manifest.test", 1, 4);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let good = fx.proxy();
    let tmp = tempdir();
    for (i, fault) in transient_faults().into_iter().enumerate() {
        let what = format!("manifest, {}", fault.name());
        proxy.inject(Target::Manifest, 1, fault.clone());
        let cache = tmp.path().join(format!("cache{i}"));
        let (out, dest, took) = pull(&fx, &img.name, &[proxy.url()], &cache, TIMEOUT, 2);
        assert_eq!(proxy.armed(), 0, "{what}: the fault was not injected");
        if matches!(fault, HttpFault::FlipBit { .. }) {
            let out = out.assert_clean_failure();
            assert!(
                out.stderr_str().contains("manifest"),
                "{what}: {}",
                out.stderr_str()
            );
            assert!(took < SLACK, "{what}: took {took:?}, not refused at once");
            // The same fault with a good mirror behind it.
            proxy.inject(Target::Manifest, 1, fault.clone());
            let (out, dest, _) = pull(
                &fx,
                &img.name,
                &[proxy.url(), good.url()],
                &cache,
                TIMEOUT,
                2,
            );
            let t = assert_pulled(out, &dest, img, &what);
            assert!(t["failovers"].as_u64().unwrap() >= 1, "{what}: {t}");
        } else {
            assert_pulled(out, &dest, img, &what);
        }
        verify_cache(&cache);
        eprintln!("{what}: {took:?}");
    }
}

/// A first mirror that fails every request (each kind in turn, 404
/// included, on everything it serves): the pull fails over to the second
/// mirror and equals the local pull.
#[test]
fn pull_fails_over_to_a_mirror_past_a_persistent_fault() {
    let fx = fixture("faults-pull-failover.test", 1, 6);
    let img = &fx.images[0];
    let good = fx.proxy();
    let tmp = tempdir();
    for (i, fault) in failing_faults().into_iter().enumerate() {
        let what = format!("first mirror: {} on everything", fault.name());
        let bad = fx.proxy();
        bad.inject_always(Target::Any, fault.clone());
        let cache = tmp.path().join(format!("cache{i}"));
        let (out, dest, took) = pull(&fx, &img.name, &[bad.url(), good.url()], &cache, TIMEOUT, 1);
        let t = assert_pulled(out, &dest, img, &what);
        assert!(bad.faults() >= 1, "{what}: the first mirror was not asked");
        assert!(t["failovers"].as_u64().unwrap() >= 1, "{what}: {t}");
        // The mirror that answered well is asked first afterwards: one
        // timeout at most, not one per object.
        let bound = budget(Duration::from_secs_f64(TIMEOUT), 0, 1) + SLACK;
        assert!(took < bound, "{what}: took {took:?}, more than {bound:?}");
        verify_cache(&cache);
        eprintln!("{what}: {took:?}, {} faults", bad.faults());
    }
}

/// No good source for content objects (each kind of fault on every
/// request, one mirror): the pull fails cleanly, naming the object, within
/// the budget of `--timeout 1 --retries 1`, and no sooner for the faults
/// that wait for the timeout. The cache holds only verified files, not the
/// object, and a pull through the cleared proxy with the same cache then
/// equals the local pull.
#[test]
fn pull_without_a_good_source_fails_within_the_timeout() {
    let fx = fixture("faults-pull-eio.test", 1, 4);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let tmp = tempdir();
    let mut cases: Vec<(HttpFault, f64, u32)> = failing_faults()
        .into_iter()
        .map(|f| (f, TIMEOUT, 1))
        .collect();
    // A server that trickles a byte every 50 ms sends before every read
    // timeout: the request's overall deadline (connect + 10 × read timeout,
    // the connect timeout being the read timeout up to 5 s) ends it.
    cases.push((
        HttpFault::Trickle {
            bytes: 1,
            every: ms(50),
        },
        0.3,
        0,
    ));
    for (i, (fault, timeout, retries)) in cases.into_iter().enumerate() {
        let what = format!("content objects, {} always", fault.name());
        proxy.clear();
        proxy.inject_always(Target::Content, fault.clone());
        let cache = tmp.path().join(format!("cache{i}"));
        let (out, _, took) = pull(&fx, &img.name, &[proxy.url()], &cache, timeout, retries);
        let out = out.assert_clean_failure();
        // Requests run in parallel: the pull stops on the first failure it
        // sees, which need not be the last fault the proxy sent (requests
        // in flight are dropped).
        let ids = faulted_ids(&proxy);
        let stderr = out.stderr_str();
        assert!(
            ids.iter().any(|id| stderr.contains(&id[2..])),
            "{what}: the error names none of the faulted objects {ids:?}:\n{stderr}"
        );
        let t = Duration::from_secs_f64(timeout);
        let attempt = match fault {
            HttpFault::Trickle { .. } => t * 11,
            _ => t,
        };
        let (lo, hi) = if matches!(fault, HttpFault::Status(404)) {
            // Not found: no retry, no wait.
            (Duration::ZERO, SLACK)
        } else if waits_for_timeout(&fault) || matches!(fault, HttpFault::Trickle { .. }) {
            (
                least(attempt, retries, 1),
                budget(attempt, retries, 1) + SLACK,
            )
        } else {
            (Duration::ZERO, budget(Duration::ZERO, retries, 1) + SLACK)
        };
        assert!(
            took >= lo && took <= hi,
            "{what}: failed after {took:?}, outside {lo:?}..{hi:?}\n{stderr}"
        );
        let cached = verify_cache(&cache);
        for id in &ids {
            assert!(!cached.contains(id), "{what}: object {id} is in the cache");
        }
        // The same cache through the proxy, fault removed.
        proxy.clear();
        let (out, dest, _) = pull(&fx, &img.name, &[proxy.url()], &cache, TIMEOUT, 1);
        assert_pulled(out, &dest, img, &format!("{what}, then cleared"));
        verify_cache(&cache);
        eprintln!("{what}: failed after {took:?} (bounds {lo:?}..{hi:?})");
    }
}

/// No good source for catalogs (a flipped bit, a truncated body, a stall
/// after the head, on one mirror and then on both of two): the pull fails
/// within the budget, nothing unverified is cached, and the same cache
/// serves a good pull afterwards.
#[test]
fn pull_with_bad_catalogs_everywhere_fails_within_the_timeout() {
    let fx = fixture("faults-pull-catalogs-eio.test", 1, 4);
    let img = &fx.images[0];
    let a = fx.proxy();
    let b = fx.proxy();
    let tmp = tempdir();
    let retries = 1;
    let t = Duration::from_secs_f64(TIMEOUT);
    let mut n = 0;
    for mirrors in [1u32, 2] {
        for fault in [
            HttpFault::FlipBit { at: 600 },
            HttpFault::Truncate { keep: 600 },
            HttpFault::StallAfterHead,
        ] {
            let what = format!("catalogs on {mirrors} mirror(s), {} always", fault.name());
            let (a0, b0) = (a.log().len(), b.log().len());
            let urls: Vec<String> = [&a, &b][..mirrors as usize]
                .iter()
                .map(|p| {
                    p.clear();
                    p.inject_always(Target::Catalogs, fault.clone());
                    p.url()
                })
                .collect();
            let cache = tmp.path().join(format!("cache{n}"));
            n += 1;
            let (out, _, took) = pull(&fx, &img.name, &urls, &cache, TIMEOUT, retries);
            out.assert_clean_failure();
            let (lo, hi) = if waits_for_timeout(&fault) {
                (
                    least(t, retries, mirrors),
                    budget(t, retries, mirrors) + SLACK,
                )
            } else {
                (
                    Duration::ZERO,
                    budget(Duration::ZERO, retries, mirrors) + SLACK,
                )
            };
            assert!(
                took >= lo && took <= hi,
                "{what}: failed after {took:?}, outside {lo:?}..{hi:?}"
            );
            let cached = verify_cache(&cache);
            let failed = [faulted_ids_since(&a, a0), faulted_ids_since(&b, b0)].concat();
            assert!(!failed.is_empty(), "{what}: no fault injected");
            for id in &failed {
                assert!(!cached.contains(id), "{what}: catalog {id} is in the cache");
            }
            a.clear();
            b.clear();
            let (out, dest, _) = pull(&fx, &img.name, &urls, &cache, TIMEOUT, retries);
            assert_pulled(out, &dest, img, &format!("{what}, then cleared"));
            eprintln!("{what}: failed after {took:?} (bounds {lo:?}..{hi:?})");
        }
    }
}

// ---------------------------------------------------------------------------
// Mount

/// Root and FUSE, or a SKIP line.
fn fuse_ready() -> bool {
    require_root() && require_fuse()
}

/// `stratum mount URL MNT --pubkey … [--image IMAGE] --cache CACHE
/// --timeout T --retries R [--mirror M…]`.
fn mount(
    fx: &Fixture,
    urls: &[String],
    mnt: &Path,
    image: Option<&str>,
    cache: &Path,
    retries: u32,
) -> Mount {
    let src = MountSource::url(&urls[0], &fx.pubkey(), ());
    let mut extra = vec![
        os("--cache"),
        os(cache),
        os("--timeout"),
        os(TIMEOUT.to_string()),
        os("--retries"),
        os(retries.to_string()),
    ];
    for m in &urls[1..] {
        extra.push(os("--mirror"));
        extra.push(os(m.clone()));
    }
    Mount::start_with(&src, mnt, image, &extra)
}

/// Reads `path` whole in a thread; `Err` when no answer came within
/// `deadline` (the read is left behind; the mount's drop unblocks it).
fn read_within(
    path: &Path,
    deadline: Duration,
) -> Result<(std::io::Result<Vec<u8>>, Duration), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_owned();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&p));
    });
    let r = rx
        .recv_timeout(deadline)
        .map_err(|_| format!("reading {}: no answer within {deadline:?}", path.display()))?;
    Ok((r, t0.elapsed()))
}

/// Reads 8 KiB at the start of `path`, expecting EIO within `deadline`.
fn expect_eio(path: &Path, deadline: Duration) -> Result<Duration, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_owned();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = File::open(&p).and_then(|f| {
            let mut buf = vec![0u8; 8192];
            f.read_at(&mut buf, 0)
        });
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(deadline)
        .map_err(|_| format!("reading {}: no answer within {deadline:?}", path.display()))?;
    let took = t0.elapsed();
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(took),
        other => Err(format!(
            "reading {}: want EIO, got {other:?} after {took:?}",
            path.display()
        )),
    }
}

/// Reads `rel` through the mount (at most `deadline`) and checks its bytes
/// against the local pull.
fn assert_reads(
    m: &Mount,
    root: &str,
    img: &Image,
    rel: &str,
    deadline: Duration,
    what: &str,
) -> Duration {
    let path = m.at(format!("{root}{rel}"));
    let (r, took) = read_within(&path, deadline)
        .unwrap_or_else(|e| panic!("{what}: {e}\n--- stderr of the mount ---\n{}", m.stderr()));
    let got = r.unwrap_or_else(|e| {
        panic!(
            "{what}: reading {rel}: {e}\n--- stderr of the mount ---\n{}",
            m.stderr()
        )
    });
    assert!(got == img.bytes(rel), "{what}: {rel} read wrong bytes");
    took
}

/// One mount through the proxy (`--image`, `--timeout 1 --retries 2`); one
/// fault of each kind on the next content object: each read returns the
/// right bytes. Afterwards the whole image equals the local pull, and the
/// cache holds only verified files.
#[test]
fn mount_reads_past_one_fault_of_each_kind_on_content_objects() {
    if !fuse_ready() {
        return;
    }
    let fx = fixture("faults-mount-content.test", 1, 12);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let m = mount(
        &fx,
        &[proxy.url()],
        &tmp.path().join("mnt"),
        Some(&img.name),
        &cache,
        2,
    );
    let files = img.object_files();
    let t = Duration::from_secs_f64(TIMEOUT);
    for (i, fault) in transient_faults().into_iter().enumerate() {
        let what = format!("content object, {}", fault.name());
        let before = proxy.faults();
        proxy.inject(Target::Content, 1, fault.clone());
        let took = assert_reads(&m, "", img, &files[i], budget(t, 2, 1) + SLACK, &what);
        assert_eq!(proxy.armed(), 0, "{what}: the fault was not injected");
        assert_eq!(proxy.faults(), before + 1, "{what}");
        eprintln!("{what}: {} read in {took:?}", files[i]);
    }
    assert_trees_equal(
        &img.local,
        m.path(),
        &CompareOpts::default(),
        "after the faults",
    );
    verify_cache(&cache);
    m.unmount();
}

/// A chunked file (12 MiB, about six chunks) read from start to end while
/// every other content request fails (the demand reads' and the
/// read-ahead's alike: a reset, a truncation, a flipped bit, a stall, a
/// 503): every byte reads right, and a read-ahead that failed is fetched
/// again by the read that needs it. `--retries 5`: even if all the faults
/// hit one chunk, its fetch still has an attempt left.
#[test]
fn mount_reads_a_chunked_file_past_faults_on_its_chunks_and_read_ahead() {
    if !fuse_ready() {
        return;
    }
    let fx = fixture_with("faults-mount-chunks.test", 1, 1, 12 << 20);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let retries = 5;
    let m = mount(
        &fx,
        &[proxy.url()],
        &tmp.path().join("mnt"),
        Some(&img.name),
        &cache,
        retries,
    );
    let mut plan = Vec::new();
    for fault in [
        HttpFault::Reset { after: 300_000 },
        HttpFault::Truncate { keep: 1_000_000 },
        HttpFault::FlipBit { at: 1_500_000 },
        HttpFault::StallAfterHead,
        HttpFault::Status(503),
    ] {
        plan.push(Some(fault));
        plan.push(None);
    }
    proxy.inject_sequence(Target::Content, plan);
    let t = Duration::from_secs_f64(TIMEOUT);
    let took = assert_reads(
        &m,
        "",
        img,
        "big/huge.bin",
        budget(t, retries, 1) + SLACK,
        "chunked file",
    );
    assert_eq!(proxy.armed(), 0, "not every fault was injected");
    eprintln!(
        "chunked file read in {took:?} past {} faults, {} requests",
        proxy.faults(),
        proxy.requests()
    );
    verify_cache(&cache);
    m.unmount();
}

/// The whole namespace mounted through the proxy, one image per fault
/// kind: the catalogs of each image are fetched when the image is first
/// used, the first of them with a fault; each image still reads right.
#[test]
fn mount_loads_catalogs_past_one_fault_of_each_kind() {
    if !fuse_ready() {
        return;
    }
    let kinds = transient_faults();
    let fx = fixture("faults-mount-catalogs.test", kinds.len(), 2);
    let proxy = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let m = mount(
        &fx,
        &[proxy.url()],
        &tmp.path().join("mnt"),
        None,
        &cache,
        2,
    );
    let t = Duration::from_secs_f64(TIMEOUT);
    for (img, fault) in fx.images.iter().zip(kinds) {
        let what = format!("catalogs of {}, {}", img.name, fault.name());
        let before = proxy.faults();
        proxy.inject(Target::Catalogs, 1, fault.clone());
        let root = format!("images/{}/", img.name.replace(':', "/"));
        let took = assert_reads(&m, &root, img, "etc/motd", budget(t, 2, 1) + SLACK, &what);
        assert_eq!(proxy.armed(), 0, "{what}: the fault was not injected");
        assert_eq!(proxy.faults(), before + 1, "{what}");
        eprintln!("{what}: read in {took:?}");
    }
    for img in &fx.images {
        // The image's symlink leads to its flat tree.
        let root =
            std::fs::canonicalize(m.at(format!("images/{}", img.name.replace(':', "/")))).unwrap();
        compare_trees(&img.local, &root)
            .unwrap_or_else(|d| panic!("{}: {}", img.name, d.join("\n")));
    }
    verify_cache(&cache);
    m.unmount();
}

/// A mount whose first URL fails every request for data (each kind in
/// turn, one mount per kind so that the bad mirror is asked first) and a
/// good `--mirror`: every read returns the right bytes.
#[test]
fn mount_fails_over_to_a_mirror_past_a_persistent_fault() {
    if !fuse_ready() {
        return;
    }
    let fx = fixture("faults-mount-failover.test", 1, 22);
    let img = &fx.images[0];
    let good = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let files = img.object_files();
    let t = Duration::from_secs_f64(TIMEOUT);
    for (i, fault) in failing_faults().into_iter().enumerate() {
        let what = format!("first mirror: {} on data", fault.name());
        let bad = fx.proxy();
        let m = mount(
            &fx,
            &[bad.url(), good.url()],
            &tmp.path().join(format!("mnt{i}")),
            Some(&img.name),
            &cache,
            1,
        );
        bad.inject_always(Target::Data, fault.clone());
        let took = assert_reads(&m, "", img, &files[2 * i], budget(t, 1, 2) + SLACK, &what);
        assert!(bad.faults() >= 1, "{what}: the first mirror was not asked");
        // Failed over once: later reads go to the good mirror at once.
        let again = assert_reads(&m, "", img, &files[2 * i + 1], SLACK, &what);
        assert!(again < t, "{what}: the next read took {again:?}");
        eprintln!("{what}: read in {took:?}, the next in {again:?}");
        m.unmount();
    }
    verify_cache(&cache);
}

/// One mount, one mirror, `--timeout 1 --retries 1`; each kind of fault on
/// every content request in turn: a read of a file not cached yet fails
/// with EIO within the budget (no sooner for the faults that wait for the
/// timeout), and the object is not cached. Once the faults are gone, the
/// same mount reads every one of those files right.
#[test]
fn mount_read_fails_with_eio_within_the_timeout_and_the_mount_recovers() {
    if !fuse_ready() {
        return;
    }
    let fx = fixture("faults-mount-eio.test", 1, 12);
    let img = &fx.images[0];
    let proxy = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let retries = 1;
    let m = mount(
        &fx,
        &[proxy.url()],
        &tmp.path().join("mnt"),
        Some(&img.name),
        &cache,
        retries,
    );
    let files = img.object_files();
    let t = Duration::from_secs_f64(TIMEOUT);
    let faults = failing_faults();
    for (i, fault) in faults.iter().enumerate() {
        let what = format!("content objects, {} always", fault.name());
        proxy.clear();
        proxy.inject_always(Target::Content, fault.clone());
        let hi = budget(t, retries, 1) + SLACK;
        let took = expect_eio(&m.at(&files[i]), hi)
            .unwrap_or_else(|e| panic!("{what}: {e}\n--- stderr of the mount ---\n{}", m.stderr()));
        if waits_for_timeout(fault) {
            let lo = least(t, retries, 1);
            assert!(took >= lo, "{what}: EIO after {took:?}, before {lo:?}");
        }
        let id = faulted_ids(&proxy).pop().unwrap();
        assert!(!verify_cache(&cache).contains(&id), "{what}: {id} cached");
        eprintln!("{what}: EIO after {took:?}");
    }
    proxy.clear();
    // Failed objects are remembered for 2 s.
    std::thread::sleep(FAILURE_MEMORY);
    for rel in &files[..faults.len()] {
        assert_reads(&m, "", img, rel, SLACK, "after the faults");
    }
    assert_trees_equal(
        &img.local,
        m.path(),
        &CompareOpts::default(),
        "after the faults",
    );
    verify_cache(&cache);
    m.unmount();
}

/// The whole namespace mounted; catalogs that never arrive right (a flipped
/// bit, a truncated body, a stall after the head, a 503): opening a file of
/// an image not used yet fails with EIO within the budget; once the fault
/// is gone the same path reads right on the same mount.
#[test]
fn mount_catalog_faults_give_eio_then_the_mount_recovers() {
    if !fuse_ready() {
        return;
    }
    let kinds = [
        HttpFault::FlipBit { at: 600 },
        HttpFault::Truncate { keep: 600 },
        HttpFault::StallAfterHead,
        HttpFault::Status(503),
    ];
    let fx = fixture("faults-mount-catalogs-eio.test", kinds.len(), 2);
    let proxy = fx.proxy();
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let retries = 1;
    let m = mount(
        &fx,
        &[proxy.url()],
        &tmp.path().join("mnt"),
        None,
        &cache,
        retries,
    );
    let t = Duration::from_secs_f64(TIMEOUT);
    for (img, fault) in fx.images.iter().zip(kinds) {
        let what = format!("catalogs of {}, {} always", img.name, fault.name());
        let root = format!("images/{}/", img.name.replace(':', "/"));
        let start = proxy.log().len();
        proxy.inject_always(Target::Catalogs, fault.clone());
        let hi = budget(t, retries, 1) + SLACK;
        let took = expect_eio(&m.at(format!("{root}etc/motd")), hi)
            .unwrap_or_else(|e| panic!("{what}: {e}\n--- stderr of the mount ---\n{}", m.stderr()));
        if waits_for_timeout(&fault) {
            let lo = least(t, retries, 1);
            assert!(took >= lo, "{what}: EIO after {took:?}, before {lo:?}");
        }
        let cached = verify_cache(&cache);
        let failed = faulted_ids_since(&proxy, start);
        assert!(!failed.is_empty(), "{what}: no fault injected");
        for id in failed {
            assert!(!cached.contains(&id), "{what}: catalog {id} cached");
        }
        proxy.clear();
        let again = assert_reads(
            &m,
            &root,
            img,
            "etc/motd",
            SLACK,
            &format!("{what}, then cleared"),
        );
        eprintln!("{what}: EIO after {took:?}; cleared, read in {again:?}");
    }
    verify_cache(&cache);
    m.unmount();
}

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

// ---------------------------------------------------------------------------
// The proxy itself

/// A raw `GET path` through the proxy: the whole response as received, and
/// how the connection ended.
fn raw_get(
    proxy: &HttpFaultProxy,
    path: &str,
    wait: Duration,
) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

fn split_response(r: &[u8]) -> (String, &[u8]) {
    let end = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (String::from_utf8_lossy(&r[..end]).into_owned(), &r[end..])
}

/// Each fault does what it says, byte for byte, and a request no rule
/// picks is forwarded faithfully.
#[test]
fn fault_proxy_injects_each_fault_then_forwards_faithfully() {
    let fx = fixture("faults-proxy.test", 1, 2);
    let proxy = fx.proxy();
    // The biggest object of the repository (the 1.5 MiB file's).
    let mut objects: Vec<(u64, String)> = walkdir::WalkDir::new(fx.repo.repo.join("data"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(&fx.repo.repo).unwrap();
            (e.metadata().unwrap().len(), format!("/{}", rel.display()))
        })
        .collect();
    objects.sort();
    let (len, path) = objects.pop().unwrap();
    assert!(Target::Content.matches(&path) && !Target::Catalogs.matches(&path));
    let want = std::fs::read(fx.repo.repo.join(&path[1..])).unwrap();
    let wait = Duration::from_secs(5);

    let (r, end) = raw_get(&proxy, &path, wait);
    let (head, body) = split_response(&r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!((body, end), (&want[..], None));

    proxy.inject(Target::Content, 1, HttpFault::Truncate { keep: 1000 });
    let (r, end) = raw_get(&proxy, &path, wait);
    let (head, body) = split_response(&r);
    assert!(head.contains(&format!("ontent-length: {len}")), "{head}");
    assert_eq!(
        (body, end),
        (&want[..1000], None),
        "truncated: a clean close"
    );

    proxy.inject(Target::Content, 1, HttpFault::Reset { after: 1000 });
    let (r, end) = raw_get(&proxy, &path, wait);
    let (_, body) = split_response(&r);
    assert!(body.len() <= 1000 && want.starts_with(body));
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));

    proxy.inject(Target::Content, 1, HttpFault::FlipBit { at: 12345 });
    let (r, _) = raw_get(&proxy, &path, wait);
    let (_, body) = split_response(&r);
    assert_eq!(body.len(), want.len());
    let diff: Vec<usize> = (0..body.len()).filter(|&i| body[i] != want[i]).collect();
    assert_eq!(diff, vec![12345]);
    assert_eq!((body[12345] ^ want[12345]).count_ones(), 1);

    proxy.inject(Target::Content, 1, HttpFault::Status(429));
    let (r, _) = raw_get(&proxy, &path, wait);
    assert!(r.starts_with(b"HTTP/1.1 429 "));
    assert_eq!(
        fx.serve
            .access_log()
            .iter()
            .filter(|s| s.status == 429)
            .count(),
        0
    );

    let t0 = Instant::now();
    proxy.inject(
        Target::Content,
        1,
        HttpFault::DelayBody {
            after: 1000,
            delay: ms(400),
        },
    );
    let (r, _) = raw_get(&proxy, &path, wait);
    assert_eq!(split_response(&r).1, &want[..]);
    assert!(t0.elapsed() >= ms(400));

    proxy.inject(Target::Content, 1, HttpFault::StallBeforeHead);
    let (r, end) = raw_get(&proxy, &path, ms(700));
    assert!(r.is_empty());
    assert!(matches!(
        end,
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    ));

    proxy.inject(Target::Content, 1, HttpFault::StallAfterHead);
    let (r, end) = raw_get(&proxy, &path, ms(700));
    let (head, body) = split_response(&r);
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty());
    assert!(matches!(
        end,
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    ));

    // Rules match by target and count; the manifest passes untouched.
    proxy.inject(Target::Catalogs, 2, HttpFault::Status(500));
    let (r, _) = raw_get(&proxy, "/.stratum/manifest", wait);
    assert!(r.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        split_response(&r).1,
        &std::fs::read(fx.repo.manifest_path()).unwrap()[..]
    );
    assert_eq!(proxy.armed(), 2);
    let (r, _) = raw_get(&proxy, &path, wait);
    assert_eq!(split_response(&r).1, &want[..]);

    assert_eq!(proxy.faults(), 7);
    assert_eq!(proxy.requests(), 10);
    // Everything but the 429 and the stall before the head went upstream.
    assert_eq!(proxy.forwarded(), 8);
    let log = proxy.log();
    assert_eq!(
        log[5].fault,
        Some(HttpFault::DelayBody {
            after: 1000,
            delay: ms(400)
        })
    );
    assert_eq!(log[4].status, 429);
    assert_eq!(log[6].status, 0);
    assert_eq!(log[8].path, "/.stratum/manifest");
    assert_eq!(log[8].fault, None);
}
