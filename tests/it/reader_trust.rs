//! The reading side against hostile repositories and a tampered node cache
//! (issue 12, items 2, 4, 10 and 12), through the binary: `pull` (local and
//! over HTTP), `mount`, `check` and `replicate`. Each repository here is
//! signed by its key, so only the readers' own checks stand between it and
//! the node: catalogs are hand-crafted with SQLite, objects with a
//! hand-written zstd frame.
#![allow(clippy::unwrap_used)]

use crate::support;

use stratum_fetcher::testing as http_server;

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{stratum, stratum_bin, which, Output, TestRepo};
use http_server::Server;
use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::{CatalogBuilder, CatalogKind, Data, Entry, FileType, ROOT_ID};
use stratum_catalog::manifest::{load_signing_key, Manifest};
use stratum_catalog::object::Encoder;
use stratum_catalog::{ObjectId, ObjectKind, Store};

fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut s = repo.key.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

fn store(repo: &TestRepo) -> Store {
    Store::new(Arc::new(LocalDir::open(&repo.repo).unwrap()))
}

/// Signs a new revision of `repo` whose root catalog is `root`.
fn sign_root(repo: &TestRepo, root: ObjectId) {
    let key = load_signing_key(&repo.key).unwrap();
    let st = store(repo);
    let (m, mid) = st.manifest(&key.verifying_key()).unwrap();
    let next = Manifest::new(&m.name, m.revision + 1, m.timestamp + 1, root, Some(mid)).unwrap();
    std::fs::write(repo.manifest_path(), next.sign(&key)).unwrap();
}

/// A root catalog holding `entries` under its root, patched by `sql`,
/// stored and signed as the root of `repo`.
fn hostile_root(repo: &TestRepo, entries: &[Entry], sql: &str) {
    let scratch = repo.scratch("build");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut b = CatalogBuilder::create(
        &scratch,
        CatalogKind::Root,
        "/",
        &Entry::new(FileType::Directory, 0o755),
    )
    .unwrap();
    for e in entries {
        b.insert(ROOT_ID, e).unwrap();
    }
    let file = scratch.join("root.db");
    std::fs::write(&file, b.finish().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    let bytes = std::fs::read(&file).unwrap();
    let id = store(repo)
        .put(ObjectKind::Catalog, &bytes, &mut Encoder::new(1).unwrap())
        .unwrap()
        .id;
    sign_root(repo, id);
}

fn dir(name: &str) -> Entry {
    let mut e = Entry::new(FileType::Directory, 0o755);
    e.name = name.as_bytes().to_vec();
    e
}

/// Runs `stratum ARGS…`, killed after `limit`; returns its output and the
/// peak resident memory of that process (KiB), as GNU time measures it.
///
/// Through `/usr/bin/time` rather than `wait4` here: Linux charges a child
/// the resident size of the process that spawned it up to its `exec` (the
/// high-water mark of the old address space goes into the child's
/// `ru_maxrss`), and this test process, running every end-to-end test in
/// parallel, is itself far above the bound being checked. `time` is small.
fn run_bounded<I, S>(args: I, limit: Duration) -> (Output, u64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out_dir = tempfile::tempdir().unwrap();
    let (o, e, rss) = (
        out_dir.path().join("out"),
        out_dir.path().join("err"),
        out_dir.path().join("rss"),
    );
    let time =
        which("time").expect("GNU time (Debian package `time`, installed by scripts/test.sh)");
    let mut child = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(stratum_bin())
        .args(args)
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            // The whole group: time and the stratum it runs.
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
            let _ = child.wait();
            panic!(
                "stratum still running after {limit:?}\n--- stderr ---\n{}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // GNU time reports "Command exited with non-zero status N" first when
    // the command fails; the peak size is the last line.
    let maxrss = std::fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak size from time in {}", rss.display()));
    let out = Output {
        cmdline: "stratum …".into(),
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    };
    (out, maxrss)
}

// ---------------------------------------------------------------------------
// Item 2: catalogs with a cycle

/// The root entry listed as a child of itself (`loop/loop/…`), and as a
/// child of its grandchild.
const CYCLES: &[&str] = &[
    "UPDATE entries SET parent = 1, name = x'6c6f6f70' WHERE id = 1",
    "UPDATE entries SET parent = 3, name = x'616761696e' WHERE id = 1",
];

fn cyclic_repo(sql: &str) -> TestRepo {
    let repo = TestRepo::new("cycle.test");
    // ids: root 1, d 2, d/e 3 (e is inserted below d by the SQL's view of
    // ids; the builder numbers in insertion order).
    hostile_root(&repo, &[dir("d")], &format!("INSERT INTO entries SELECT 3, 2, x'65', mode, uid, gid, size, mtime, mtime_ns, rdev, nlink, hardlink, flags, symlink, content, chunks, inline, nested FROM entries WHERE id = 2; {sql}"));
    repo
}

#[test]
fn catalog_cycle_pull_is_refused_in_bounded_time() {
    for sql in CYCLES {
        let repo = cyclic_repo(sql);
        let dest = repo.scratch("dest");
        let (out, _) = run_bounded(
            [
                OsStr::new("pull"),
                repo.repo.as_os_str(),
                OsStr::new("--path"),
                OsStr::new("/"),
                dest.as_os_str(),
            ],
            Duration::from_secs(60),
        );
        out.assert_no_panic();
        assert!(!out.success(), "a cyclic catalog was pulled");
        assert!(
            out.stderr_str().contains("root entry has parent"),
            "{}",
            out.stderr_str()
        );
        // `check` reports it too, and ends.
        let (out, _) = run_bounded(
            [OsStr::new("check"), repo.repo.as_os_str()],
            Duration::from_secs(60),
        );
        assert!(!out.success(), "check accepted a cyclic catalog");
    }
}

#[test]
fn catalog_cycle_mount_is_refused() {
    if !require_fuse() {
        return;
    }
    for sql in CYCLES {
        let repo = cyclic_repo(sql);
        let mnt = repo.scratch("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let source = MountSource::dir(&repo.repo, None);
        let err = Mount::expect_failure::<&str>(&source, &mnt, None, &[]);
        assert!(err.contains("root entry has parent"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Item 4: zstd bombs

/// A zstd frame of `size` zero bytes declared in its header, made of RLE
/// blocks (4 bytes per 128 KiB): 1 GiB in 32 KiB.
fn rle_bomb(size: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header: 8-byte content size, a window descriptor; window 2^17.
    f.push(0xc0);
    f.push(7 << 3);
    f.extend_from_slice(&size.to_le_bytes());
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        let last = u32::from(left == 0);
        let head = last | (1 << 1) | ((n as u32) << 3);
        f.extend_from_slice(&head.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// Stores a bomb as the object `id` (its bytes do not hash to it).
fn plant(repo: &TestRepo, id: &ObjectId, kind: ObjectKind, bytes: &[u8]) {
    let path = repo.repo.join(id.path(kind));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const GIB: u64 = 1 << 30;
/// Peak memory allowed to a reader handed a 1 GiB bomb (KiB).
const RSS_LIMIT_KIB: u64 = 200 << 10;

/// A repository whose root holds `bomb.bin` (10 bytes as the catalog
/// says), whose object is a 36 KB frame declaring 1 GiB.
fn content_bomb_repo() -> TestRepo {
    let repo = TestRepo::new("bomb.test");
    let id = ObjectId::of(b"ten bytes!");
    let mut e = Entry::new(FileType::Regular, 0o644);
    e.name = b"bomb.bin".to_vec();
    e.size = 10;
    e.data = Data::Object(id);
    hostile_root(&repo, &[e], "");
    plant(&repo, &id, ObjectKind::Content, &rle_bomb(GIB));
    repo
}

fn assert_refused_bounded(what: &str, out: &Output, rss_kib: u64, needle: &str) {
    out.assert_no_panic();
    assert!(!out.success(), "{what}: a bomb was accepted");
    assert!(
        out.stderr_str().contains(needle) || out.stdout_str().contains(needle),
        "{what}: {needle:?} not in\n{}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert!(
        rss_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {rss_kib} KiB for a bomb"
    );
}

#[test]
fn zstd_bomb_content_is_refused_with_bounded_memory() {
    let repo = content_bomb_repo();
    let needle = "1073741824 bytes, the catalog";
    let t = Duration::from_secs(120);

    let dest = repo.scratch("dest");
    let (out, rss) = run_bounded(
        [
            OsStr::new("pull"),
            repo.repo.as_os_str(),
            OsStr::new("--path"),
            OsStr::new("/"),
            dest.as_os_str(),
        ],
        t,
    );
    assert_refused_bounded("pull DIR", &out, rss, needle);

    let (out, rss) = run_bounded([OsStr::new("check"), repo.repo.as_os_str()], t);
    assert_refused_bounded("check", &out, rss, needle);

    let server = Server::start(&repo.repo);
    let key = pubkey(&repo);
    let dest = repo.scratch("dest");
    let cache = repo.scratch("cache");
    let (out, rss) = run_bounded(
        [
            OsStr::new("pull"),
            OsStr::new(&server.url()),
            OsStr::new("--pubkey"),
            key.as_os_str(),
            OsStr::new("--path"),
            OsStr::new("/"),
            dest.as_os_str(),
            OsStr::new("--cache"),
            cache.as_os_str(),
        ],
        t,
    );
    assert_refused_bounded("pull URL", &out, rss, needle);
    // Refused once, not decoded again on every retry.
    assert_eq!(
        server.requests_for(&repo_path_of_bomb()),
        1,
        "{:?}",
        server.log()
    );

    let replica = repo.scratch("replica");
    let (out, rss) = run_bounded(
        [
            OsStr::new("replicate"),
            OsStr::new(&server.url()),
            replica.as_os_str(),
            OsStr::new("--pubkey"),
            key.as_os_str(),
        ],
        t,
    );
    assert_refused_bounded("replicate", &out, rss, needle);
}

fn repo_path_of_bomb() -> String {
    ObjectId::of(b"ten bytes!").path(ObjectKind::Content)
}

#[test]
fn zstd_bomb_content_in_a_mount_is_an_error_with_bounded_memory() {
    if !require_fuse() {
        return;
    }
    let repo = content_bomb_repo();
    let server = Server::start(&repo.repo);
    let key = pubkey(&repo);
    let cache = repo.scratch("cache");
    let mnt = repo.scratch("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let source = MountSource::url(&server.url(), &key, ());
    let m = Mount::start_with(
        &source,
        &mnt,
        None,
        &[OsStr::new("--cache"), cache.as_os_str()],
    );
    let started = Instant::now();
    let r = std::fs::read(m.at("bomb.bin"));
    assert!(r.is_err(), "a bomb was read: {:?}", r.map(|v| v.len()));
    assert!(started.elapsed() < Duration::from_secs(30));
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid().unwrap())).unwrap();
    let hwm: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm < RSS_LIMIT_KIB, "mount: peak RSS {hwm} KiB for a bomb");
    m.unmount();
}

#[test]
fn zstd_bomb_catalog_is_decoded_with_bounded_memory() {
    // A nested catalog whose object decodes to 512 MiB of zeros: under the
    // catalog maximum, so it is decoded — as a stream, into a file, and
    // refused when its hash does not match.
    let repo = TestRepo::new("bomb.test");
    let id = ObjectId::of(b"a catalog");
    let mut e = dir("nested");
    e.nested = Some(id);
    hostile_root(&repo, &[e], "");
    plant(&repo, &id, ObjectKind::Catalog, &rle_bomb(512 << 20));
    let t = Duration::from_secs(120);
    let needle = "content hashes to";

    let dest = repo.scratch("dest");
    let (out, rss) = run_bounded(
        [
            OsStr::new("pull"),
            repo.repo.as_os_str(),
            OsStr::new("--path"),
            OsStr::new("/"),
            dest.as_os_str(),
        ],
        t,
    );
    assert_refused_bounded("pull DIR", &out, rss, needle);
    let (out, rss) = run_bounded([OsStr::new("check"), repo.repo.as_os_str()], t);
    assert_refused_bounded("check", &out, rss, needle);

    let server = Server::start(&repo.repo);
    let key = pubkey(&repo);
    let (dest, cache) = (repo.scratch("dest"), repo.scratch("cache"));
    let (out, rss) = run_bounded(
        [
            OsStr::new("pull"),
            OsStr::new(&server.url()),
            OsStr::new("--pubkey"),
            key.as_os_str(),
            OsStr::new("--path"),
            OsStr::new("/"),
            dest.as_os_str(),
            OsStr::new("--cache"),
            cache.as_os_str(),
            OsStr::new("--retries"),
            OsStr::new("0"),
        ],
        t,
    );
    assert_refused_bounded("pull URL", &out, rss, needle);
    let replica = repo.scratch("replica");
    let (out, rss) = run_bounded(
        [
            OsStr::new("replicate"),
            OsStr::new(&server.url()),
            replica.as_os_str(),
            OsStr::new("--pubkey"),
            key.as_os_str(),
        ],
        t,
    );
    assert_refused_bounded("replicate", &out, rss, needle);

    // Over the documented maximum: refused from the frame header.
    plant(&repo, &id, ObjectKind::Catalog, &rle_bomb(GIB + 1));
    let dest = repo.scratch("dest");
    let (out, rss) = run_bounded(
        [
            OsStr::new("pull"),
            repo.repo.as_os_str(),
            OsStr::new("--path"),
            OsStr::new("/"),
            dest.as_os_str(),
        ],
        Duration::from_secs(20),
    );
    assert_refused_bounded("pull DIR", &out, rss, "over the limit of 1073741824");
}

// ---------------------------------------------------------------------------
// Item 10: the node cache is not trusted

const IMAGE: &str = "test/cache:1";

fn published() -> (TestRepo, Vec<u8>) {
    let repo = TestRepo::new("cache.test");
    let l = Layout::create(&repo.scratch("layout"));
    let data = support::fsutil::Rng::new(7).bytes(200_000);
    l.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"data.bin", &data),
        ])],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some(IMAGE));
    (repo, data)
}

/// The cached object files (decoded bytes) of `cache`.
fn cached_objects(cache: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(cache.join("objects"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn tamper(cache: &Path, data: &[u8]) -> usize {
    let mut n = 0;
    for p in cached_objects(cache) {
        if std::fs::read(&p).unwrap() == data {
            let mut bad = data.to_vec();
            bad[1000] ^= 0xff;
            std::fs::write(&p, bad).unwrap();
            n += 1;
        }
    }
    n
}

fn pull_url(url: &str, key: &Path, dest: &Path, cache: &Path) {
    stratum([
        OsStr::new("pull"),
        OsStr::new(url),
        OsStr::new("--pubkey"),
        key.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        dest.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
    ]);
}

#[test]
fn tampered_cache_object_is_refetched_by_pull() {
    let (repo, data) = published();
    let server = Server::start(&repo.repo);
    let key = pubkey(&repo);
    let cache = repo.scratch("cache");
    pull_url(&server.url(), &key, &repo.scratch("warm"), &cache);
    assert_eq!(tamper(&cache, &data), 1, "the object is cached");

    let dest = repo.scratch("dest");
    pull_url(&server.url(), &key, &dest, &cache);
    assert!(
        std::fs::read(dest.join("data.bin")).unwrap() == data,
        "pull wrote the tampered bytes of the cache"
    );
    // The bad file was replaced by verified bytes.
    assert_eq!(tamper(&cache, &data), 1);
}

#[test]
fn tampered_cache_object_is_refetched_by_mount() {
    if !require_fuse() {
        return;
    }
    let (repo, data) = published();
    let server = Server::start(&repo.repo);
    let key = pubkey(&repo);
    let cache = repo.scratch("cache");
    pull_url(&server.url(), &key, &repo.scratch("warm"), &cache);
    assert_eq!(tamper(&cache, &data), 1);
    let mnt = repo.scratch("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let source = MountSource::url(&server.url(), &key, ());
    let m = Mount::start_with(
        &source,
        &mnt,
        Some(IMAGE),
        &[OsStr::new("--cache"), cache.as_os_str()],
    );
    assert!(
        std::fs::read(m.at("data.bin")).unwrap() == data,
        "mount served the tampered bytes of the cache"
    );
    m.unmount();
}

// ---------------------------------------------------------------------------
// Item 12: symlink modes

#[test]
fn symlink_mode_is_0777_whatever_the_tar_header_says() {
    let repo = TestRepo::new("symlink.test");
    let l = Layout::create(&repo.scratch("layout"));
    l.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"target", b"x\n"),
            TarEntry::symlink(b"link", b"target").mode(0o644),
        ])],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/sym:1"));
    let flat = repo.image("test/sym:1")["flat_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let ls = stratum([
        OsStr::new("ls"),
        repo.repo.as_os_str(),
        OsStr::new(&flat),
        OsStr::new("--json"),
    ])
    .json();
    let link = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "link")
        .unwrap_or_else(|| panic!("{ls:#}"));
    assert_eq!(link["mode"], 0o120777, "ls --json: {link}");

    if !require_fuse() {
        return;
    }
    let mnt = repo.scratch("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = Mount::start(
        &MountSource::dir(&repo.repo, None),
        &mnt,
        Some("test/sym:1"),
    );
    let md = std::fs::symlink_metadata(m.at("link")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(&md),
        0o120777,
        "mounted symlink mode"
    );
    m.unmount();
}
