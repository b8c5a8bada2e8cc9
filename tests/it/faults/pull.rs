//! `stratum pull URL` past faults: retries, failover, failures within
//! the budget, and a cache that holds only verified files.

use super::*;

/// `stratum pull URL --pubkey … --image IMAGE DEST --cache CACHE --json
/// --timeout T --retries R [--mirror M…]`, timed.
pub(super) fn pull(
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
