//! `stratum mount URL` past faults: reads that retry or fail over, EIO
//! within the budget, and a mount that recovers once the fault is gone.

use super::*;

/// A node for mount tests: a temp dir and its cache, shared by the mounts
/// it starts.
struct Node {
    tmp: tempfile::TempDir,
    cache: PathBuf,
}

impl Node {
    fn new() -> Node {
        let tmp = tempdir();
        let cache = tmp.path().join("cache");
        Node { tmp, cache }
    }

    /// `stratum mount URL TMP/MNT --pubkey … [--image IMAGE] --cache CACHE
    /// --timeout T --retries R [--mirror M…]`.
    fn mount(
        &self,
        fx: &Fixture,
        urls: &[String],
        mnt: &str,
        image: Option<&str>,
        retries: u32,
    ) -> Mount {
        let src = MountSource::url(&urls[0], &fx.pubkey(), ());
        let mut extra = vec![
            os("--cache"),
            os(&self.cache),
            os("--timeout"),
            os(TIMEOUT.to_string()),
            os("--retries"),
            os(retries.to_string()),
        ];
        for m in &urls[1..] {
            extra.push(os("--mirror"));
            extra.push(os(m.clone()));
        }
        Mount::start_with(&src, &self.tmp.path().join(mnt), image, &extra)
    }

    /// Every file of the cache holds the bytes of its name; their names.
    fn verify_cache(&self) -> Vec<String> {
        verify_cache(&self.cache)
    }
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

/// A read of `rel` through the mount fails with EIO within the budget of
/// one mirror and `retries`, and no sooner when `fault` makes each attempt
/// wait for the timeout. Returns how long it took.
fn expect_eio_in_budget(
    m: &Mount,
    rel: &str,
    fault: &HttpFault,
    retries: u32,
    what: &str,
) -> Duration {
    let t = Duration::from_secs_f64(TIMEOUT);
    let took = expect_eio(&m.at(rel), budget(t, retries, 1) + SLACK)
        .unwrap_or_else(|e| panic!("{what}: {e}\n--- stderr of the mount ---\n{}", m.stderr()));
    if waits_for_timeout(fault) {
        let lo = least(t, retries, 1);
        assert!(took >= lo, "{what}: EIO after {took:?}, before {lo:?}");
    }
    took
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
    let node = Node::new();
    let m = node.mount(&fx, &[proxy.url()], "mnt", Some(&img.name), 2);
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
    node.verify_cache();
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
    let node = Node::new();
    let retries = 5;
    let m = node.mount(&fx, &[proxy.url()], "mnt", Some(&img.name), retries);
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
    node.verify_cache();
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
    let node = Node::new();
    let m = node.mount(&fx, &[proxy.url()], "mnt", None, 2);
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
    node.verify_cache();
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
    let node = Node::new();
    let files = img.object_files();
    let t = Duration::from_secs_f64(TIMEOUT);
    for (i, fault) in failing_faults().into_iter().enumerate() {
        let what = format!("first mirror: {} on data", fault.name());
        let bad = fx.proxy();
        let m = node.mount(
            &fx,
            &[bad.url(), good.url()],
            &format!("mnt{i}"),
            Some(&img.name),
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
    node.verify_cache();
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
    let node = Node::new();
    let retries = 1;
    let m = node.mount(&fx, &[proxy.url()], "mnt", Some(&img.name), retries);
    let files = img.object_files();
    let faults = failing_faults();
    for (i, fault) in faults.iter().enumerate() {
        let what = format!("content objects, {} always", fault.name());
        proxy.clear();
        proxy.inject_always(Target::Content, fault.clone());
        let took = expect_eio_in_budget(&m, &files[i], fault, retries, &what);
        let id = faulted_ids(&proxy).pop().unwrap();
        assert!(!node.verify_cache().contains(&id), "{what}: {id} cached");
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
    node.verify_cache();
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
    let node = Node::new();
    let retries = 1;
    let m = node.mount(&fx, &[proxy.url()], "mnt", None, retries);
    for (img, fault) in fx.images.iter().zip(kinds) {
        let what = format!("catalogs of {}, {} always", img.name, fault.name());
        let root = format!("images/{}/", img.name.replace(':', "/"));
        let start = proxy.log().len();
        proxy.inject_always(Target::Catalogs, fault.clone());
        let took = expect_eio_in_budget(&m, &format!("{root}etc/motd"), &fault, retries, &what);
        let cached = node.verify_cache();
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
    node.verify_cache();
    m.unmount();
}
