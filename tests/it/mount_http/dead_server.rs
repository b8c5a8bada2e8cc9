//! A server that dies or hangs mid-way: reads fail with EIO within the
//! timeouts, never hang.

use super::*;

/// Reads 8 KiB of `rel` under `root` at `offset`, expecting EIO within
/// `deadline`; returns how long it took, or what went wrong.
fn expect_eio(root: &Path, rel: &str, offset: u64, deadline: Duration) -> Result<Duration, String> {
    let path = root.join(rel);
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = File::open(&path).and_then(|f| {
            let mut buf = vec![0u8; 8192];
            f.read_at(&mut buf, offset)
        });
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(deadline)
        .map_err(|_| format!("reading {rel} at {offset}: no answer within {deadline:?}"))?;
    let took = t0.elapsed();
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(took),
        other => Err(format!(
            "reading {rel} at {offset} with the server gone: want EIO, got {other:?} after {took:?}"
        )),
    }
}

/// How many FUSE requests the mount answered with an error so far (its
/// `stratum_fetcher::fs` warnings).
fn failed_fuse_reads(m: &Mount) -> usize {
    m.stderr()
        .lines()
        .filter(|l| l.contains("stratum_fetcher::fs") && l.contains("read inode"))
        .count()
}

/// `stratum serve` killed after mounting: reads of files not yet cached fail
/// with EIO within seconds (connection refused, retries with backoff), not
/// hang; what was read before still reads.
#[test]
fn killed_server_gives_eio_not_a_hang() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("dies.test", 9 * MIB, 10);
    let mut serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&tmp.path().join("cache")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    for rel in ["docs/d1/f001", "big/huge.bin", "big/mid.bin"] {
        std::fs::metadata(m.at(rel)).unwrap();
    }
    serve.stop(Signal::KILL, Duration::from_secs(10));
    let mut took = Vec::new();
    for (rel, offset) in [
        ("docs/d1/f001", 0),
        ("big/huge.bin", 5 * MIB as u64),
        ("big/mid.bin", 0),
    ] {
        let t = expect_eio(m.path(), rel, offset, EIO_DEADLINE)
            .unwrap_or_else(|e| panic!("{e}\n--- stderr of the mount ---\n{}", m.stderr()));
        took.push(format!("{rel}@{offset}: {t:?}"));
    }
    eprintln!(
        "server killed: EIO after {} ({} FUSE reads failed for these 3 read() calls)",
        took.join(", "),
        failed_fuse_reads(&m)
    );
    assert_eq!(
        std::fs::read(m.at("etc/motd")).unwrap(),
        files["etc/motd"],
        "cached bytes still read"
    );
    assert_eq!(
        std::fs::read(m.at("etc/hostname")).unwrap(),
        files["etc/hostname"],
        "inline bytes still read"
    );
    m.unmount();
}

/// A server that stops answering (accepts, never responds) after mounting:
/// the read fails with EIO within [`EIO_DEADLINE`] (the transport gives up
/// on an object after 4 attempts of at most 20 s each); meanwhile other
/// readers of the same mount are served; once the server answers again the
/// same file reads right (nothing bad was cached).
#[test]
fn hung_server_gives_eio_within_the_timeouts() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("hangs.test", 0, 11);
    let server = http_server::Server::start(&repo.repo);
    let tmp = tempdir();
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&tmp.path().join("cache")),
    );
    assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
    std::fs::metadata(m.at("docs/d2/f002")).unwrap();

    server.state.delay_ms.store(3_600_000, Ordering::Relaxed);
    let requests_before = server.requests();
    let took = std::thread::scope(|s| {
        let root = m.path();
        let slow = s.spawn(move || expect_eio(root, "docs/d2/f002", 0, EIO_DEADLINE));
        // While that read waits on the network, the rest of the mount works.
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(
            std::fs::read(m.at("etc/hostname")).unwrap(),
            files["etc/hostname"]
        );
        assert_eq!(std::fs::read_dir(m.at("docs/d4")).unwrap().count(), 15);
        assert_eq!(std::fs::read(m.at("etc/motd")).unwrap(), files["etc/motd"]);
        let other = t0.elapsed();
        eprintln!("hung server: other readers served in {other:?} meanwhile");
        assert!(
            other < Duration::from_secs(5),
            "other readers waited {other:?} behind a slow fetch"
        );
        slow.join().unwrap()
    });
    let requests = server.requests() - requests_before;
    let took = took.unwrap_or_else(|e| {
        panic!(
            "{e}: the read neither returned nor failed in time ({requests} requests for the object so far, \
             {} FUSE reads failed)\n--- stderr of the mount ---\n{}",
            failed_fuse_reads(&m),
            m.stderr()
        )
    });
    eprintln!(
        "hung server: EIO after {took:?} ({requests} requests for the object, {} FUSE reads failed)",
        failed_fuse_reads(&m)
    );
    server.state.delay_ms.store(0, Ordering::Relaxed);
    // A failed object is remembered for 2 s (so the kernel's immediate
    // retry of a failed readahead does not wait a second retry budget).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        std::fs::read(m.at("docs/d2/f002")).unwrap(),
        files["docs/d2/f002"],
        "the same file reads once the server answers again"
    );
    m.unmount();
}
