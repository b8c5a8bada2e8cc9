//! `Remote` over real HTTP: a small signed repository built with the catalog
//! crate, served by the test server of `stratum_fetcher::testing` on
//! 127.0.0.1, read through a cache directory in a temp dir.

#![allow(clippy::unwrap_used)]

use stratum_fetcher::testing as http_server;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::{SigningKey, VerifyingKey};
use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::{
    CatalogBuilder, CatalogKind, Chunk, Data, Entry, FileType, ROOT_ID,
};
use stratum_catalog::manifest::{Manifest, MANIFEST_PATH};
use stratum_catalog::namespace::{CatalogLoader, Namespace, StoreLoader};
use stratum_catalog::object::{self, Encoder};
use stratum_catalog::{ObjectId, ObjectKind, Store};
use stratum_fetcher::{
    materialize, FailureKind, FetchError, ObjectSource, PullOptions, Remote, RemoteConfig,
    RemoteLoader,
};

use http_server::{black_hole, closed_port, Server};

const NAME: &str = "testrepo";

struct Rng(u64);
impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

/// A signed repository: a root catalog with inline, whole-object and chunked
/// files and a nested catalog; `.stratum/manifest` is revision 2, and
/// `manifest1` the signed revision 1 of the same repository.
struct Fixture {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    store: Store,
    key: VerifyingKey,
    root: ObjectId,
    nested: ObjectId,
    /// (name, bytes, id) of every content object, chunks included.
    objects: Vec<(String, Vec<u8>, ObjectId)>,
    manifest1: Vec<u8>,
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn entry(ft: FileType, perm: u32, name: &str) -> Entry {
    let mut e = Entry::new(ft, perm);
    e.name = name.as_bytes().to_vec();
    e.mtime = 1_700_000_000;
    e
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let scratch = tmp.path().join("scratch");
    fs::create_dir_all(repo.join(".stratum")).unwrap();
    fs::create_dir_all(&scratch).unwrap();
    let store = Store::new(Arc::new(LocalDir::open(&repo).unwrap()));
    let mut enc = Encoder::new(object::DEFAULT_LEVEL).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut objects = Vec::new();
    let mut put = |name: String, bytes: Vec<u8>, objects: &mut Vec<(String, Vec<u8>, ObjectId)>| {
        let id = store.put(ObjectKind::Content, &bytes, &mut enc).unwrap().id;
        objects.push((name, bytes, id));
        id
    };

    // The nested catalog, mounted at /nested.
    let dir = entry(FileType::Directory, 0o755, "");
    let mut nb = CatalogBuilder::create(&scratch, CatalogKind::Flat, "/nested", &dir).unwrap();
    let inner = rng.bytes(20_000);
    let id = put("nested/inner.bin".into(), inner.clone(), &mut objects);
    let mut e = entry(FileType::Regular, 0o644, "inner.bin");
    e.size = inner.len() as u64;
    e.data = Data::Object(id);
    nb.insert(ROOT_ID, &e).unwrap();
    let bytes = nb.finish().unwrap();
    let mut enc2 = Encoder::new(object::DEFAULT_LEVEL).unwrap();
    let nested = store
        .put(ObjectKind::Catalog, &bytes, &mut enc2)
        .unwrap()
        .id;

    let mut rb = CatalogBuilder::create(&scratch, CatalogKind::Root, "/", &dir).unwrap();
    let mut small = entry(FileType::Regular, 0o600, "small.txt");
    small.size = 6;
    small.data = Data::Inline(b"hello\n".to_vec());
    rb.insert(ROOT_ID, &small).unwrap();
    for i in 0..8 {
        let bytes = rng.bytes(40_000 + i * 1000);
        let name = format!("f{i}.bin");
        let id = put(name.clone(), bytes.clone(), &mut objects);
        let mut e = entry(FileType::Regular, 0o644, &name);
        e.size = bytes.len() as u64;
        e.data = Data::Object(id);
        rb.insert(ROOT_ID, &e).unwrap();
    }
    let mut chunks = Vec::new();
    let mut total = 0;
    for i in 0..3 {
        let bytes = rng.bytes(30_000);
        total += bytes.len() as u64;
        let id = put(format!("big.bin#{i}"), bytes.clone(), &mut objects);
        chunks.push(Chunk {
            id,
            size: bytes.len() as u64,
        });
    }
    let mut big = entry(FileType::Regular, 0o755, "big.bin");
    big.size = total;
    big.data = Data::Chunks(chunks);
    rb.insert(ROOT_ID, &big).unwrap();
    let mut link = entry(FileType::Symlink, 0o777, "link");
    link.symlink = Some(b"f0.bin".to_vec());
    link.size = 6;
    rb.insert(ROOT_ID, &link).unwrap();
    let mut mp = entry(FileType::Directory, 0o755, "nested");
    mp.nested = Some(nested);
    rb.insert(ROOT_ID, &mp).unwrap();
    let bytes = rb.finish().unwrap();
    let root = store
        .put(ObjectKind::Catalog, &bytes, &mut enc2)
        .unwrap()
        .id;

    let sk = signing_key();
    let manifest1 = Manifest::new(NAME, 1, 1000, root, None).unwrap().sign(&sk);
    let manifest2 = Manifest::new(NAME, 2, 1001, root, Some(ObjectId::of(&manifest1)))
        .unwrap()
        .sign(&sk);
    fs::write(repo.join(MANIFEST_PATH), &manifest2).unwrap();
    Fixture {
        tmp,
        repo,
        store,
        key: sk.verifying_key(),
        root,
        nested,
        objects,
        manifest1,
    }
}

impl Fixture {
    fn cache(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn object(&self, name: &str) -> (&[u8], ObjectId) {
        let o = self.objects.iter().find(|o| o.0 == name).unwrap();
        (&o.1, o.2)
    }
}

fn config(urls: Vec<String>, key: VerifyingKey, cache: &Path) -> RemoteConfig {
    let mut c = RemoteConfig::new(urls, key, cache.to_owned());
    c.connect_timeout = Duration::from_secs(2);
    c.read_timeout = Duration::from_secs(5);
    c.retries = 2;
    c
}

fn open(urls: Vec<String>, f: &Fixture, cache: &str) -> Remote {
    Remote::open(config(urls, f.key, &f.cache(cache))).unwrap()
}

/// Every regular file under `dir`, recursively, with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_owned(), e.metadata().unwrap().len()))
        .collect()
}

fn cached_bytes(cache: &Path) -> u64 {
    files_under(&cache.join("objects"))
        .into_iter()
        .chain(files_under(&cache.join("catalogs")))
        .map(|f| f.1)
        .sum()
}

fn cache_file(cache: &Path, half: &str, id: &ObjectId) -> PathBuf {
    let hex = id.to_hex();
    cache.join(half).join(&hex[..2]).join(hex)
}

#[test]
fn open_verifies_the_manifest_and_records_its_revision() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let r = open(vec![s.url()], &f, "cache");
    assert_eq!(r.manifest().name, NAME);
    assert_eq!(r.manifest().revision, 2);
    assert_eq!(r.manifest().root, f.root);
    assert_eq!(
        r.manifest_id(),
        ObjectId::of(&fs::read(f.repo.join(MANIFEST_PATH)).unwrap())
    );
    let st = r.stats();
    assert_eq!(st.requests, 1, "{st:?}");
    assert_eq!(s.log(), vec![MANIFEST_PATH.to_string()]);
    let revs: Vec<_> = fs::read_dir(f.cache("cache").join("revisions"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(NAME))
        .collect();
    assert_eq!(revs.len(), 1);
    assert_eq!(fs::read_to_string(revs[0].path()).unwrap().trim(), "2");

    // A tampered manifest (one digit changed) is refused.
    let good = fs::read_to_string(f.repo.join(MANIFEST_PATH)).unwrap();
    s.set_override(
        MANIFEST_PATH,
        good.replace("timestamp 1001", "timestamp 1002")
            .into_bytes(),
    );
    let err = Remote::open(config(vec![s.url()], f.key, &f.cache("other"))).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // Bodies over the size limit are refused before they are read whole.
    s.set_override(MANIFEST_PATH, vec![b'x'; 5000]);
    s.clear_log();
    match Remote::open(config(vec![s.url()], f.key, &f.cache("other"))).unwrap_err() {
        FetchError::Failed { failures, .. } => {
            assert_eq!(failures[0].kind, FailureKind::TooLarge, "{failures:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests(), 1, "too large is not retried");
}

#[test]
fn a_wrong_key_is_refused_without_retrying() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let err = Remote::open(config(vec![s.url()], other, &f.cache("cache"))).unwrap_err();
    match &err {
        FetchError::Failed { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].kind, FailureKind::Rejected);
            assert!(failures[0].reason.contains("signature"), "{err}");
            assert!(failures[0].url.starts_with(&s.url()), "{err}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(s.requests(), 1, "a bad signature is not retried");
    assert!(files_under(&f.cache("cache").join("revisions"))
        .iter()
        .all(|(p, _)| p.ends_with(".lock")));
}

#[test]
fn an_older_revision_after_a_newer_one_is_refused() {
    let f = fixture();
    let new = Server::start(&f.repo);
    let old = Server::start(&f.repo);
    old.set_override(MANIFEST_PATH, f.manifest1.clone());

    // A fresh cache takes revision 1 ...
    assert_eq!(open(vec![old.url()], &f, "fresh").manifest().revision, 1);
    // ... then revision 2, and no longer revision 1.
    assert_eq!(open(vec![new.url()], &f, "fresh").manifest().revision, 2);
    let err = Remote::open(config(vec![old.url()], f.key, &f.cache("fresh"))).unwrap_err();
    match err {
        FetchError::Rollback {
            name,
            offered,
            seen,
            url,
        } => {
            assert_eq!((name.as_str(), offered, seen), (NAME, 1, 2));
            assert!(url.starts_with(&old.url()));
        }
        other => panic!("expected Rollback, got {other:?}"),
    }
    // A stale mirror is skipped for a current one.
    let r = open(vec![old.url(), new.url()], &f, "fresh");
    assert_eq!(r.manifest().revision, 2);
    assert!(r.stats().failovers >= 1);
    // Another cache has its own record.
    assert_eq!(open(vec![old.url()], &f, "other").manifest().revision, 1);
}

#[test]
fn objects_and_catalogs_are_fetched_once() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let r = open(vec![s.url()], &f, "cache");
    let root = r.catalog(&f.root).unwrap();
    assert_eq!(root.id(), f.root);
    assert_eq!(root.path(), "/");
    let st = r.stats();
    assert_eq!(
        (st.requests, st.cache_misses, st.cache_hits),
        (2, 1, 0),
        "{st:?}"
    );
    let again = r.catalog(&f.root).unwrap();
    assert!(Arc::ptr_eq(&root, &again));
    let st = r.stats();
    assert_eq!((st.requests, st.cache_hits), (2, 1), "{st:?}");
    let cat_file = cache_file(&f.cache("cache"), "catalogs", &f.root);
    assert_eq!(
        ObjectId::of(&fs::read(&cat_file).unwrap()),
        f.root,
        "the cache holds the decoded, verified catalog"
    );
    assert_eq!(r.catalog_file(&f.root), cat_file);

    let (bytes, id) = f.object("f3.bin");
    let o = r.object(&id).unwrap();
    assert_eq!(o.len, bytes.len() as u64);
    assert_eq!(o.read_all().unwrap(), bytes);
    let mut part = vec![0u8; 100];
    assert_eq!(o.read_at(&mut part, 1000).unwrap(), 100);
    assert_eq!(part, &bytes[1000..1100]);
    assert_eq!(o.read_at(&mut part, o.len - 10).unwrap(), 10);
    let o2 = r.object(&id).unwrap();
    assert_eq!(o2.read_all().unwrap(), bytes);
    assert_eq!(s.requests_for(&id.to_hex()[2..]), 1);
    let st = r.stats();
    assert_eq!(
        (st.requests, st.cache_misses, st.cache_hits),
        (3, 2, 2),
        "{st:?}"
    );
    assert!(st.bytes_downloaded > bytes.len() as u64 / 2);
    assert_eq!(r.content(&id, bytes.len() as u64).unwrap(), bytes);

    // Another Remote (as another process would) finds both in the cache.
    s.clear_log();
    let r2 = open(vec![s.url()], &f, "cache");
    r2.catalog(&f.root).unwrap();
    assert_eq!(r2.object(&id).unwrap().read_all().unwrap(), bytes);
    assert_eq!(s.log(), vec![MANIFEST_PATH.to_string()]);
    let st = r2.stats();
    assert_eq!(
        (st.requests, st.cache_misses, st.cache_hits),
        (1, 0, 2),
        "{st:?}"
    );
    let u = r2.cache_usage();
    assert_eq!(u.files, 2);
    assert_eq!(u.bytes, cached_bytes(&f.cache("cache")));
}

/// Compares two trees: names, types, permissions, contents, link targets.
fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mut v: Vec<_> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap())
            .map(|e| {
                let md = fs::symlink_metadata(e.path()).unwrap();
                let data = if md.is_file() {
                    fs::read(e.path()).unwrap()
                } else if md.file_type().is_symlink() {
                    fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    Vec::new()
                };
                (
                    e.path().strip_prefix(root).unwrap().to_owned(),
                    md.mode(),
                    data,
                )
            })
            .collect();
        v.sort();
        v
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.iter().map(|x| &x.0).collect::<Vec<_>>(),
        lb.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x, y, "{} differs", x.0.display());
    }
}

#[test]
fn materialize_over_http_equals_a_local_pull() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let r = Arc::new(open(vec![s.url()], &f, "cache"));
    let ns = Namespace::new(RemoteLoader::new(r.clone()), &r.manifest().root).unwrap();
    let node = ns.root().unwrap();
    let remote_dest = f.tmp.path().join("remote-dest");
    let opts = PullOptions {
        preserve_owner: false,
        devices: false,
        ..PullOptions::default()
    };
    let stats = materialize(&ns, &node, &*r, &remote_dest, &opts, &|_| {}).unwrap();
    assert_eq!(stats.files, 1 + 8 + 1 + 1);

    let local = Namespace::new(StoreLoader::new(f.store.clone()), &f.root).unwrap();
    let local_dest = f.tmp.path().join("local-dest");
    let lnode = local.root().unwrap();
    materialize(&local, &lnode, &f.store, &local_dest, &opts, &|_| {}).unwrap();
    assert_same_tree(&local_dest, &remote_dest);
    assert_eq!(
        fs::read(remote_dest.join("nested/inner.bin")).unwrap(),
        f.object("nested/inner.bin").0
    );

    // Everything was downloaded exactly once: every object, both catalogs
    // and the manifest.
    let st = r.stats();
    assert_eq!(st.requests as usize, f.objects.len() + 2 + 1, "{st:?}");
    // The loader reuses the catalogs the Remote pinned.
    assert!(ns.loader().load(&f.nested).is_ok());
    assert_eq!(r.stats().requests, st.requests);
}

#[test]
fn a_corrupt_object_on_the_first_mirror_is_fetched_from_the_second() {
    let f = fixture();
    let bad = Server::start(&f.repo);
    bad.state
        .corrupt
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let good = Server::start(&f.repo);
    let r = open(vec![bad.url(), good.url()], &f, "cache");
    let (bytes, id) = f.object("f1.bin");
    assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
    let st = r.stats();
    assert_eq!(st.rejected, 1, "{st:?}");
    assert_eq!(st.failovers, 1, "{st:?}");
    assert_eq!(bad.requests_for(&id.to_hex()[2..]), 1);
    assert_eq!(good.requests_for(&id.to_hex()[2..]), 1);
    let on_disk = fs::read(cache_file(&f.cache("cache"), "objects", &id)).unwrap();
    assert_eq!(ObjectId::of(&on_disk), id, "only verified bytes are cached");
    // The good mirror is now asked first.
    let (bytes2, id2) = f.object("f2.bin");
    assert_eq!(r.object(&id2).unwrap().read_all().unwrap(), bytes2);
    assert_eq!(bad.requests_for(&id2.to_hex()[2..]), 0);
    assert_eq!(r.stats().failovers, 1);
}

#[test]
fn corrupt_bytes_everywhere_are_an_error_and_nothing_is_cached() {
    let f = fixture();
    let bad = Server::start(&f.repo);
    bad.state
        .corrupt
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = open(vec![bad.url()], &f, "cache");
    let (_, id) = f.object("f1.bin");
    let err = r.object(&id).unwrap_err();
    assert!(err.is_corrupt(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&id.to_hex()) && msg.contains(&bad.url()),
        "{msg}"
    );
    // Retried (a proxy may have garbled it), within the budget: 1 + 2 rounds.
    assert_eq!(bad.requests_for(&id.to_hex()[2..]), 3);
    assert!(files_under(&f.cache("cache").join("objects")).is_empty());
    assert!(files_under(&f.cache("cache").join("tmp")).is_empty());
    // Through the ObjectSource seam: a CorruptObject error.
    match r.content(&id, f.object("f1.bin").0.len() as u64) {
        Err(stratum_catalog::Error::CorruptObject { id: e, .. }) => assert_eq!(e, id),
        other => panic!("expected CorruptObject, got {other:?}"),
    }
    let err = r.catalog(&f.root).unwrap_err();
    assert!(err.is_corrupt(), "{err:?}");
    assert!(files_under(&f.cache("cache").join("catalogs")).is_empty());
}

#[test]
fn the_first_mirror_down_the_second_is_used_and_remembered() {
    let f = fixture();
    let good = Server::start(&f.repo);
    let r = open(vec![closed_port(), good.url()], &f, "cache");
    assert_eq!(r.stats().failovers, 1);
    for (_, bytes, id) in &f.objects[..4] {
        assert_eq!(&r.object(id).unwrap().read_all().unwrap(), bytes);
    }
    let st = r.stats();
    assert_eq!(
        st.failovers, 1,
        "the good mirror is asked first now: {st:?}"
    );
    assert_eq!(st.requests, 1 + 1 + 4);
}

#[test]
fn all_mirrors_down_fails_quickly_naming_them() {
    let f = fixture();
    let (a, b) = (closed_port(), closed_port());
    let started = Instant::now();
    let err =
        Remote::open(config(vec![a.clone(), b.clone()], f.key, &f.cache("cache"))).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(
        msg.contains("manifest") && msg.contains(&a) && msg.contains(&b),
        "{msg}"
    );
    match err {
        FetchError::Failed {
            attempts, failures, ..
        } => {
            assert_eq!(attempts, 6, "2 mirrors x (1 + 2 retries)");
            assert!(
                failures.iter().all(|f| f.kind == FailureKind::Connect),
                "{failures:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unresponsive_mirror_times_out() {
    let f = fixture();
    let hole = black_hole(Duration::from_secs(20));
    let good = Server::start(&f.repo);
    let mut cfg = config(vec![hole.clone(), good.url()], f.key, &f.cache("cache"));
    cfg.read_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let r = Remote::open(cfg.clone()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.manifest().revision, 2);

    cfg.urls = vec![hole];
    cfg.retries = 1;
    let started = Instant::now();
    let err = Remote::open(cfg).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    match err {
        FetchError::Failed { failures, .. } => {
            assert_eq!(failures[0].kind, FailureKind::Timeout, "{failures:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_errors_and_truncated_bodies_are_retried() {
    let f = fixture();
    let s = Server::start(&f.repo);
    s.state
        .fail_next
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let r = open(vec![s.url()], &f, "cache");
    assert_eq!(r.stats().retries, 2);
    assert_eq!(r.stats().failovers, 0, "one mirror: retries, no failover");
    s.state
        .truncate_next
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let (bytes, id) = f.object("f4.bin");
    assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
    assert_eq!(r.stats().retries, 3);
    assert_eq!(s.requests_for(&id.to_hex()[2..]), 2);
    // Connections are reused: far fewer than requests.
    for (_, b, id) in &f.objects {
        assert_eq!(&r.object(id).unwrap().read_all().unwrap(), b);
    }
    let conns = s
        .state
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        conns <= 4,
        "{conns} connections for {} requests",
        s.requests()
    );
}

/// One connection pool per process: two remotes of the same repository
/// (a mount's and a pull's, the images of one pull) reuse each other's
/// kept-alive connections instead of opening their own.
#[test]
fn remotes_of_one_process_share_one_connection_pool() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let a = open(vec![s.url()], &f, "cache-a");
    let b = open(vec![s.url()], &f, "cache-b");
    for (_, bytes, id) in &f.objects {
        assert_eq!(&a.object(id).unwrap().read_all().unwrap(), bytes);
        assert_eq!(&b.object(id).unwrap().read_all().unwrap(), bytes);
    }
    let conns = s
        .state
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        conns,
        1,
        "{conns} connections for {} requests",
        s.requests()
    );
}

#[test]
fn a_missing_object_is_not_found_without_retries() {
    let f = fixture();
    let a = Server::start(&f.repo);
    let b = Server::start(&f.repo);
    let r = open(vec![a.url(), b.url()], &f, "cache");
    let id = ObjectId::of(b"not in the repository");
    match r.object(&id).unwrap_err() {
        FetchError::NotFound { what, urls } => {
            assert!(what.contains(&id.to_hex()));
            assert_eq!(urls.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.requests_for(&id.to_hex()[2..]) + b.requests_for(&id.to_hex()[2..]),
        2
    );
    assert!(matches!(r.content(&id, 0), Err(stratum_catalog::Error::MissingObject(m)) if m == id));
}

#[test]
fn the_quota_is_kept_by_evicting_least_recently_used_objects() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let mut cfg = config(vec![s.url()], f.key, &f.cache("cache"));
    cfg.quota_bytes = 200_000;
    let r = Remote::open(cfg).unwrap();
    r.catalog(&f.root).unwrap();
    r.catalog(&f.nested).unwrap();
    let (first_bytes, first) = f.object("f0.bin");
    let held = r.object(&first).unwrap();
    let total: usize = f.objects.iter().map(|o| o.1.len()).sum();
    assert!(total > 2 * 200_000);
    for (_, bytes, id) in &f.objects {
        assert_eq!(&r.object(id).unwrap().read_all().unwrap(), bytes);
        let on_disk = cached_bytes(&f.cache("cache"));
        assert!(on_disk <= 200_000, "{on_disk} bytes cached");
        assert_eq!(r.cache_usage().bytes, on_disk);
    }
    let st = r.stats();
    assert!(st.evictions > 0, "{st:?}");
    // The first object was evicted while we held it: still readable.
    assert!(!cache_file(&f.cache("cache"), "objects", &first).exists());
    assert_eq!(held.read_all().unwrap(), first_bytes);
    // Pinned catalogs stay.
    assert!(cache_file(&f.cache("cache"), "catalogs", &f.root).exists());
    assert!(cache_file(&f.cache("cache"), "catalogs", &f.nested).exists());
    // Read again: downloaded again, correct.
    assert_eq!(r.object(&first).unwrap().read_all().unwrap(), first_bytes);
    assert_eq!(s.requests_for(&first.to_hex()[2..]), 2);
    // The most recently used object survived.
    let (_, last) = &f.objects.last().map(|o| (o.1.clone(), o.2)).unwrap();
    assert!(cache_file(&f.cache("cache"), "objects", last).exists());
}

#[test]
fn two_remotes_share_one_cache() {
    let f = Arc::new(fixture());
    let s = Server::start(&f.repo);
    let remotes: Vec<Arc<Remote>> = (0..2)
        .map(|_| Arc::new(open(vec![s.url()], &f, "cache")))
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let r = remotes[t % 2].clone();
            let f = f.clone();
            std::thread::spawn(move || {
                for (_, bytes, id) in f.objects.iter().rev().cycle().skip(t).take(f.objects.len()) {
                    assert_eq!(&r.object(id).unwrap().read_all().unwrap(), bytes);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let objs = files_under(&f.cache("cache").join("objects"));
    assert_eq!(objs.len(), f.objects.len());
    for (p, _) in &objs {
        let id = ObjectId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(ObjectId::of(&fs::read(p).unwrap()), id);
    }
    // A pin of one Remote holds against the other's eviction.
    remotes[0].catalog(&f.nested).unwrap();
    let mut cfg = config(vec![s.url()], f.key, &f.cache("cache"));
    cfg.quota_bytes = 1;
    let tight = Remote::open(cfg).unwrap();
    let (bytes, id) = f.object("f5.bin");
    assert_eq!(tight.object(&id).unwrap().read_all().unwrap(), bytes);
    assert!(tight.stats().evictions > 0);
    assert!(cache_file(&f.cache("cache"), "catalogs", &f.nested).exists());
    let loader = RemoteLoader::new(remotes[0].clone());
    assert_eq!(loader.load(&f.nested).unwrap().path(), "/nested");
}

#[test]
fn concurrent_readers_of_one_object_share_one_download() {
    let f = fixture();
    let s = Server::start(&f.repo);
    s.state
        .delay_ms
        .store(300, std::sync::atomic::Ordering::Relaxed);
    let r = Arc::new(open(vec![s.url()], &f, "cache"));
    let (bytes, id) = f.object("f6.bin");
    let bytes = bytes.to_vec();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (r, b, bytes) = (r.clone(), barrier.clone(), bytes.clone());
            std::thread::spawn(move || {
                b.wait();
                assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.requests_for(&id.to_hex()[2..]), 1);
    let st = r.stats();
    assert_eq!(st.cache_misses, 1, "{st:?}");
    assert_eq!(st.shared_waits + st.cache_hits, 7, "{st:?}");
    assert!(st.shared_waits >= 1, "{st:?}");
}

#[test]
fn leftover_partial_files_are_ignored_and_old_ones_removed() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let cache = f.cache("cache");
    let (bytes, id) = f.object("f7.bin");
    fs::create_dir_all(cache.join("tmp")).unwrap();
    // What a process killed while writing would leave: a partial file in tmp/.
    let fresh = cache.join("tmp").join(format!("new-{}", id.to_hex()));
    fs::write(&fresh, &bytes[..1000]).unwrap();
    let old = cache.join("tmp").join("new-old");
    fs::write(&old, b"partial").unwrap();
    let f_old = fs::File::options().write(true).open(&old).unwrap();
    f_old
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    drop(f_old);
    // Files that are not objects in the object tree are not taken for any.
    fs::create_dir_all(cache.join("objects").join("zz")).unwrap();
    fs::write(cache.join("objects/zz/junk"), b"junk").unwrap();

    let r = open(vec![s.url()], &f, "cache");
    assert!(!old.exists(), "stale temp files are removed at open");
    assert!(
        fresh.exists(),
        "recent temp files may belong to a live writer"
    );
    assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
    assert_eq!(s.requests_for(&id.to_hex()[2..]), 1);
    assert_eq!(r.cache_usage().files, 1);
    let installed = cache_file(&cache, "objects", &id);
    assert_eq!(fs::read(&installed).unwrap(), bytes);
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// Regression (review of issue 12.10): a catalog checked when it was pinned
/// was then opened again by its name in the cache, so a file renamed over
/// that name in between (another, valid catalog: here the nested one) was
/// used as the catalog the id names. Every open by name now checks what
/// SQLite opened.
#[test]
fn a_catalog_renamed_over_in_the_cache_after_its_check_is_not_used() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let r = Arc::new(open(vec![s.url()], &f, "cache"));
    r.catalog(&f.root).unwrap();
    r.catalog(&f.nested).unwrap();
    // Someone who can write the cache puts the nested catalog's file under
    // the root catalog's name.
    let root_file = r.catalog_file(&f.root);
    let copy = f.cache("cache").join("swapped");
    fs::copy(r.catalog_file(&f.nested), &copy).unwrap();
    fs::rename(&copy, &root_file).unwrap();
    let loader = RemoteLoader::new(r.clone());
    match loader.load(&f.root) {
        Ok(c) => assert_eq!(
            ObjectId::of(&c.to_bytes().unwrap()),
            f.root,
            "the loader returned another catalog under the root's id"
        ),
        Err(e) => assert!(e.to_string().contains("does not hash to its id"), "{e}"),
    }
}

/// Regression (review of issue 12.4): every object download was allowed
/// about 1 GiB whatever size the signed catalog states, buffered whole and
/// retried, so a hostile mirror answering a small file with a huge body
/// cost the node that much memory per request. The body is now bounded by
/// the encoded size the stated size allows, and a longer one is refused
/// from its Content-Length, for good, without reading it.
#[test]
fn a_huge_body_for_a_small_object_is_refused_unread() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let (bytes, id) = f.object("f3.bin");
    let size = bytes.len() as u64;
    s.set_override(&id.path(ObjectKind::Content), vec![0u8; 64 << 20]);
    let r = open(vec![s.url()], &f, "cache");
    let t = Instant::now();
    let err = r.object_sized(&id, size).unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
    let st = r.stats();
    assert!(
        st.bytes_downloaded < (1 << 20),
        "{} bytes taken in for a {size}-byte object",
        st.bytes_downloaded
    );
    assert_eq!(s.requests_for(&id.to_hex()[2..]), 1, "asked again");
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// `connections_ahead`: while the manifest is fetched, that many
/// connections are opened (by `HEAD` requests) for the parallel requests
/// that follow, which then find them open instead of each paying a connect.
#[test]
fn connections_are_opened_ahead_while_the_manifest_is_fetched() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let mut cfg = config(vec![s.url()], f.key, &f.cache("cache"));
    cfg.connections_ahead = 6;
    let r = Arc::new(Remote::open(cfg).unwrap());
    let heads = || {
        s.log()
            .iter()
            .filter(|p| *p == &format!("HEAD {MANIFEST_PATH}"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while heads() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(heads(), 6, "{:?}", s.log());
    // Logged when asked: wait until all six are answered, then let the
    // answers reach the pool (a fixed wait after the asking was too short
    // on a loaded machine).
    let answered = || {
        s.state
            .heads_answered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while answered() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(answered(), 6, "{:?}", s.log());
    std::thread::sleep(Duration::from_millis(500));
    let conns = || {
        s.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let opened = conns();
    assert!(opened >= 6, "{opened} connections: {:?}", s.log());
    // Six downloads at once find them open.
    std::thread::scope(|sc| {
        for (_, bytes, id) in f.objects.iter().take(6) {
            let r = r.clone();
            sc.spawn(move || assert_eq!(&r.object(id).unwrap().read_all().unwrap(), bytes));
        }
    });
    assert!(
        conns() <= 7,
        "{} connections after 6 parallel downloads, {opened} before",
        conns()
    );
}

/// Regression guard for D42 (cache files are no longer fdatasynced before
/// their rename): what a power loss can leave under a name, a short file or
/// one of zeros, is found by the next process's check before first use,
/// removed and fetched again, for objects and catalogs alike.
#[test]
fn cache_files_torn_by_a_power_loss_are_fetched_again() {
    let f = fixture();
    let s = Server::start(&f.repo);
    let cache = f.cache("cache");
    let (bytes, id) = f.object("f5.bin");
    {
        let r = open(vec![s.url()], &f, "cache");
        assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
        r.catalog(&f.nested).unwrap();
    }
    let object = cache_file(&cache, "objects", &id);
    let catalog = cache_file(&cache, "catalogs", &f.nested);
    let half = fs::metadata(&object).unwrap().len() / 2;
    fs::File::options()
        .write(true)
        .open(&object)
        .unwrap()
        .set_len(half)
        .unwrap();
    let len = fs::metadata(&catalog).unwrap().len() as usize;
    fs::write(&catalog, vec![0u8; len]).unwrap();
    let requests = |needle: &ObjectId| s.requests_for(&needle.to_hex()[2..]);
    assert_eq!((requests(&id), requests(&f.nested)), (1, 1));

    // A new process (a new Remote: nothing verified yet) after the reboot.
    let r = open(vec![s.url()], &f, "cache");
    assert_eq!(r.object(&id).unwrap().read_all().unwrap(), bytes);
    assert_eq!(r.catalog(&f.nested).unwrap().path(), "/nested");
    assert_eq!((requests(&id), requests(&f.nested)), (2, 2));
    assert_eq!(fs::read(&object).unwrap(), bytes);
    assert_ne!(fs::read(&catalog).unwrap(), vec![0u8; len]);
}
