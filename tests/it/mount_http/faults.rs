//! Faults: mirrors down, wrong keys, tampered manifests and rollbacks,
//! a kill -9 mid-download, two mounts on one cache, a quota smaller than
//! a read.

use super::*;

/// `--mirror`: the first URL is a closed port, the mirror works.
#[test]
fn first_mirror_down_the_next_one_serves() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("mirror.test", 5 * MIB, 4);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let dead = http_server::closed_port();
    let src = MountSource::url(&dead, &pubkey(&repo), ());
    let mut extra = cache_arg(&tmp.path().join("cache"));
    extra.extend([os("--mirror"), os(&serve.url)]);
    let t0 = Instant::now();
    let m = Mount::start_with(&src, &tmp.path().join("mnt"), Some(SMALL), &extra);
    let bytes = check_files(m.path(), &files, false, "mount with a dead first mirror");
    eprintln!(
        "dead first mirror: mounted and read {bytes} bytes in {:?}",
        t0.elapsed()
    );
    m.unmount();
    assert!(
        served(&serve).iter().any(|r| r.path.starts_with("/data/")),
        "the mirror served the objects"
    );
}

/// Replaces the `KEY value` line of a manifest.
fn manifest_with(manifest: &[u8], key: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8(manifest.to_vec()).unwrap();
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((k, _)) if k == key => {
                found = true;
                format!("{k} {value}")
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(found, "no {key} line in the manifest:\n{text}");
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    s.into_bytes()
}

/// A wrong public key, a tampered manifest and an older revision after a
/// newer one (same cache) are refused: non-zero exit, a clear message,
/// nothing mounted.
#[test]
fn wrong_key_tampered_manifest_and_rollback_are_refused() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("refuse.test", 0, 5);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let key = pubkey(&repo);
    let src = MountSource::url(&serve.url, &key, ());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // Wrong key.
    let other = tmp.path().join("other.key");
    stratum([os("keygen"), os(&other)]);
    let wrong = MountSource::url(&serve.url, &tmp.path().join("other.key.pub"), ());
    let err = Mount::expect_failure(
        &wrong,
        &mnt,
        Some(SMALL),
        &cache_arg(&tmp.path().join("c-wrong")),
    );
    eprintln!("wrong key: {}", err.trim());
    assert!(
        err.to_lowercase().contains("signature"),
        "the message must say why: {err}"
    );

    // Tampered manifests: a higher revision, another root catalog.
    let good = repo.manifest_bytes();
    let text = String::from_utf8(good.clone()).unwrap();
    let rev: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("revision "))
        .unwrap()
        .parse()
        .unwrap();
    let fake_root = "ab".repeat(32);
    for (field, value) in [("revision", (rev + 1000).to_string()), ("root", fake_root)] {
        std::fs::write(repo.manifest_path(), manifest_with(&good, field, &value)).unwrap();
        let err = Mount::expect_failure(
            &src,
            &mnt,
            Some(SMALL),
            &cache_arg(&tmp.path().join("c-tamper")),
        );
        eprintln!("tampered {field}: {}", err.trim());
        assert!(
            err.to_lowercase().contains("signature"),
            "tampered {field}: {err}"
        );
    }
    std::fs::write(repo.manifest_path(), &good).unwrap();
    assert!(
        !tmp.path().join("c-tamper").join("objects").exists()
            || cache_usage(&tmp.path().join("c-tamper"), "objects").0 == 0,
        "nothing is fetched under a refused manifest"
    );

    // Rollback: revision N, then N+1 on the same cache, then N again.
    let cache = tmp.path().join("cache");
    let m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    m.unmount();
    let newer_files = publish_small(&repo, "2", "test/small:2", 0, 6);
    assert_eq!(repo.revision(), rev + 1);
    let m = Mount::start_with(&src, &mnt, Some("test/small:2"), &cache_arg(&cache));
    assert_eq!(
        std::fs::read(m.at("etc/motd")).unwrap(),
        newer_files["etc/motd"]
    );
    m.unmount();
    let newest = repo.manifest_bytes();
    std::fs::write(repo.manifest_path(), &good).unwrap();
    let err = Mount::expect_failure(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    eprintln!("rollback: {}", err.trim());
    assert!(
        err.contains("rollback") && err.contains(&format!("revision {rev}")),
        "the message must name the rollback and the revision: {err}"
    );
    // The revision is refused because this cache has seen a newer one: a
    // fresh cache takes it.
    let m = Mount::start_with(
        &src,
        &mnt,
        Some(SMALL),
        &cache_arg(&tmp.path().join("fresh")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    m.unmount();
    std::fs::write(repo.manifest_path(), newest).unwrap();
}

/// `kill -9` of a mount in the middle of a download; `stratum umount`
/// cleans up the dead mount; a new mount on the same cache reads every byte
/// right and the cache holds only verified objects.
#[test]
fn kill_9_mid_download_then_a_new_mount_on_the_same_cache() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("kill.test", 9 * MIB, 7);
    let server = http_server::Server::start(&repo.repo);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let mnt = tmp.path().join("mnt");
    let mut m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);

    // Slow objects (1.5 s each): the big file's first chunks are still
    // downloading when the mount process dies, 1 s into the read.
    server.state.delay_ms.store(1500, Ordering::Relaxed);
    let path = m.at("big/huge.bin");
    let reader = std::thread::spawn(move || std::fs::read(path).map(|b| b.len()));
    std::thread::sleep(Duration::from_millis(1000));
    let requests_before = server.requests();
    let st = m.signal(Signal::KILL, Duration::from_secs(10));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    let t0 = Instant::now();
    let r = reader.join().unwrap();
    eprintln!(
        "kill -9 after {requests_before} requests: the reader got {r:?} after {:?}",
        t0.elapsed()
    );
    assert!(r.is_err(), "the read cannot have completed: {r:?}");
    assert!(
        is_mounted(m.path()),
        "a killed FUSE server leaves its (dead) mount behind"
    );
    let out = run_cmd({
        let mut c = Command::new(stratum_bin());
        c.arg("umount").arg(m.path());
        c
    });
    if !out.success() {
        eprintln!(
            "stratum umount of the dead mount failed ({}); umount -l",
            out.stderr_str().trim()
        );
        support::tool("umount", [os("-l"), os(m.path())]);
    }
    assert!(!is_mounted(m.path()), "still mounted after cleanup");
    drop(m);
    let leftovers = cache_usage(&cache, "tmp").0;

    server.state.delay_ms.store(0, Ordering::Relaxed);
    let m = Mount::start_with(&src, &mnt, Some(SMALL), &cache_arg(&cache));
    check_files(
        m.path(),
        &files,
        false,
        "new mount on the cache of a killed one",
    );
    m.unmount();
    let n = verify_cache(&cache);
    eprintln!(
        "after kill -9: {leftovers} leftovers in tmp/, then {n} verified objects in the cache"
    );
}

/// Two mounts (two processes) on one cache read the same files at the same
/// time, each with two readers in opposite orders.
#[test]
fn two_mounts_share_one_cache_concurrently() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("shared.test", 9 * MIB, 8);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let a = Mount::start_with(&src, &tmp.path().join("a"), Some(SMALL), &cache_arg(&cache));
    let b = Mount::start_with(&src, &tmp.path().join("b"), Some(SMALL), &cache_arg(&cache));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for (root, name) in [(a.path(), "a"), (b.path(), "b")] {
            for reverse in [false, true] {
                let files = &files;
                s.spawn(move || {
                    check_files(
                        root,
                        files,
                        reverse,
                        &format!("mount {name}, reverse={reverse}"),
                    )
                });
            }
        }
    });
    let log = settled_log(&serve);
    let distinct: BTreeSet<&str> = log
        .iter()
        .filter(|r| r.path.starts_with("/data/"))
        .map(|r| r.path.as_str())
        .collect();
    eprintln!(
        "two mounts, four readers: {:?}; origin: {} requests for {} distinct objects",
        t0.elapsed(),
        log.len(),
        distinct.len()
    );
    a.unmount();
    b.unmount();
    let n = verify_cache(&cache);
    assert_eq!(cached_ids(&cache).len(), n);
    assert!(
        n >= distinct.len(),
        "{n} objects in the shared cache, {} fetched",
        distinct.len()
    );
}

/// `--quota 2M` and a 24 MiB chunked file read twice: the bytes are right,
/// and the cache stays near the quota all along (sampled while reading).
#[test]
fn quota_smaller_than_a_read() {
    if !ready() {
        return;
    }
    let big = 24 * MIB;
    let (repo, files) = small_repo("quota.test", big, 9);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let mut extra = cache_arg(&cache);
    extra.extend([os("--quota"), os("2M")]);
    let m = Mount::start_with(&src, &tmp.path().join("mnt"), Some(SMALL), &extra);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, cache) = (stop.clone(), peak.clone(), cache.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let used = cache_usage(&cache, "objects").1 + cache_usage(&cache, "catalogs").1;
                peak.fetch_max(used, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let want = &files["big/huge.bin"];
    let t0 = Instant::now();
    let got = std::fs::read(m.at("big/huge.bin")).unwrap();
    assert!(
        &got == want,
        "big/huge.bin read wrong: {}",
        first_difference(want, &got)
    );
    // Pieces again, through a new descriptor (evicted chunks come back).
    let f = File::open(m.at("big/huge.bin")).unwrap();
    let mut rng = Rng::new(99);
    for _ in 0..8 {
        let off = rng.below(big as u64 - 70_000) as usize;
        let mut buf = vec![0u8; 65_536];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf[..] == want[off..off + buf.len()], "pread at {off}");
    }
    drop(f); // an open file would keep the (lazily detached) mount alive
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (objs, obj_bytes) = cache_usage(&cache, "objects");
    let (_, cat_bytes) = cache_usage(&cache, "catalogs");
    let log = settled_log(&serve);
    let wire: u64 = log.iter().map(|r| r.bytes).sum();
    m.unmount();
    let peak = peak.load(Ordering::Relaxed);
    let quota = 2 * MIB as u64;
    eprintln!(
        "quota 2M, {big}-byte file read in {elapsed:?}: cache peak {peak} bytes, at the end {objs} objects \
         ({obj_bytes} bytes) + catalogs ({cat_bytes} bytes); {} requests, {wire} bytes on the wire",
        log.len()
    );
    // Beyond the quota only the chunk just inserted (at most 4 MiB, the
    // largest chunk) and one read-ahead chunk in flight.
    let slack = 2 * 4 * MIB as u64 + 64 * 1024;
    assert!(
        peak <= quota + slack,
        "cache peaked at {peak} bytes with a 2 MiB quota"
    );
    assert!(
        obj_bytes + cat_bytes <= quota + 4 * MIB as u64 + 64 * 1024,
        "cache holds {} bytes after the reads",
        obj_bytes + cat_bytes
    );
    verify_cache(&cache);
}
