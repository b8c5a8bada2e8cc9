//! Serving a repository over HTTP, with real processes: `stratum serve`
//! (headers, ranges, conditional requests, what it refuses, the access log,
//! graceful shutdown), and the Debian nginx serving the same directory
//! unchanged, byte for byte. Needs neither root nor umoci: the image is a
//! hand-built OCI layout.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::services::{http_client, nginx_bin, raw_get, raw_request, Nginx, StratumServe};
use crate::support::{skip, TestRepo};
use reqwest::blocking::{Client, Response};
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;

/// Publishes a small one-layer image (a few small files and a 300 kB one)
/// into a fresh repository.
pub(crate) fn published_repo() -> TestRepo {
    let repo = TestRepo::new("serve-test");
    let layout = Layout::create(&repo.scratch("layout"));
    layout.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::dir(b"etc/"),
            TarEntry::file(b"etc/hello.txt", b"hello over HTTP\n"),
            TarEntry::file(b"etc/other.txt", b"another small file\n"),
            TarEntry::file(b"big", &support::fsutil::Rng::new(7).bytes(300_000)),
        ])],
    );
    repo.publish_one(
        &format!("oci:{}:1", layout.dir.display()),
        Some("test/serve:1"),
    );
    assert!(
        repo.data_files().len() >= 3,
        "expected a few objects under data/"
    );
    repo
}

/// The repository-relative URL path of a file under `repo`.
pub(crate) fn url_path(repo: &Path, file: &Path) -> String {
    format!(
        "/{}",
        file.strip_prefix(repo)
            .unwrap()
            .to_str()
            .expect("ASCII path")
    )
}

/// The largest object under `data/` and its bytes.
pub(crate) fn largest_object(repo: &TestRepo) -> (String, Vec<u8>) {
    let f = repo
        .data_files()
        .into_iter()
        .max_by_key(|f| f.metadata().unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&f).unwrap();
    assert!(
        bytes.len() > 100,
        "largest object is only {} bytes",
        bytes.len()
    );
    (url_path(&repo.repo, &f), bytes)
}

fn get(client: &Client, url: &str, headers: &[(header::HeaderName, &str)]) -> Response {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    req.send()
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

fn hdr(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(&name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

/// Checks a strong ETag: quoted, not `W/`.
fn assert_strong_etag(h: &HeaderMap) -> String {
    let etag = hdr(h, header::ETAG).to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "ETag {etag:?} must be a strong quoted tag"
    );
    etag
}

/// Range requests that every server of a repository must answer alike.
fn check_ranges(client: &Client, url: &str, body: &[u8]) {
    let len = body.len();

    let r = get(client, url, &[(header::RANGE, "bytes=10-19")]);
    assert_eq!(
        r.status(),
        StatusCode::PARTIAL_CONTENT,
        "Range 10-19 of {url}"
    );
    assert_eq!(
        hdr(r.headers(), header::CONTENT_RANGE),
        format!("bytes 10-19/{len}")
    );
    assert_eq!(hdr(r.headers(), header::CONTENT_LENGTH), "10");
    assert_eq!(r.bytes().unwrap().as_ref(), &body[10..20]);

    let r = get(client, url, &[(header::RANGE, "bytes=-7")]);
    assert_eq!(
        r.status(),
        StatusCode::PARTIAL_CONTENT,
        "suffix range of {url}"
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &body[len - 7..]);

    let r = get(
        client,
        url,
        &[(header::RANGE, &format!("bytes={}-", len - 3))],
    );
    assert_eq!(
        r.status(),
        StatusCode::PARTIAL_CONTENT,
        "open range of {url}"
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &body[len - 3..]);

    let r = get(client, url, &[(header::RANGE, &format!("bytes={len}-"))]);
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range past the end of {url}"
    );
    assert_eq!(
        hdr(r.headers(), header::CONTENT_RANGE),
        format!("bytes */{len}")
    );

    let r = client.head(url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "HEAD {url}");
    assert_eq!(hdr(r.headers(), header::CONTENT_LENGTH), len.to_string());
    assert!(r.bytes().unwrap().is_empty(), "HEAD {url} sent a body");
}

#[test]
fn stratum_serve_serves_a_repository() {
    let repo = published_repo();
    let root = &repo.repo;
    let objects = repo.data_files();
    // Writer files and traps that must never be served.
    std::fs::write(root.join(".stratum/lock"), b"").unwrap();
    std::fs::write(root.join(".stratum/dirty"), b"").unwrap();
    std::fs::create_dir_all(root.join(".stratum/tmp")).unwrap();
    std::fs::write(root.join(".stratum/tmp/partial"), b"half an object").unwrap();
    let (obj_path, obj) = largest_object(&repo);
    let obj_dir = root
        .join(obj_path.trim_start_matches('/'))
        .parent()
        .unwrap()
        .to_path_buf();
    std::os::unix::fs::symlink("/etc/passwd", obj_dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../.stratum/lock", obj_dir.join("to-lock")).unwrap();
    std::fs::write(obj_dir.join(".hidden"), b"hidden").unwrap();

    let mut server = StratumServe::start(root, &["--max-age", "12345"]);
    let client = http_client();

    // The manifest: exact bytes, revalidated by caches.
    let r = get(&client, &server.at("/.stratum/manifest"), &[]);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(r.headers(), header::CACHE_CONTROL), "no-cache");
    assert_eq!(
        hdr(r.headers(), header::CONTENT_TYPE),
        "application/octet-stream"
    );
    let manifest_etag = assert_strong_etag(r.headers());
    let manifest = repo.manifest_bytes();
    assert_eq!(
        hdr(r.headers(), header::CONTENT_LENGTH),
        manifest.len().to_string()
    );
    assert_eq!(r.bytes().unwrap().as_ref(), manifest.as_slice());
    let r = get(
        &client,
        &server.at("/.stratum/manifest"),
        &[(header::IF_NONE_MATCH, &manifest_etag)],
    );
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(hdr(r.headers(), header::CACHE_CONTROL), "no-cache");

    // The public key, when `init` wrote one.
    let pem = root.join(".stratum/public.pem");
    if pem.exists() {
        let r = get(&client, &server.at("/.stratum/public.pem"), &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(r.headers(), header::CACHE_CONTROL), "no-cache");
        assert_eq!(r.bytes().unwrap().as_ref(), std::fs::read(&pem).unwrap());
    }

    // Every object: exact bytes, immutable.
    for f in &objects {
        let r = get(&client, &server.at(&url_path(root, f)), &[]);
        assert_eq!(r.status(), StatusCode::OK, "{}", f.display());
        assert_eq!(
            hdr(r.headers(), header::CACHE_CONTROL),
            "public, max-age=12345, immutable"
        );
        assert_eq!(r.bytes().unwrap().as_ref(), std::fs::read(f).unwrap());
    }

    // One object in detail: headers, validators, conditional requests, ranges.
    let url = server.at(&obj_path);
    let r = get(&client, &url, &[]);
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(hdr(&h, header::CONTENT_LENGTH), obj.len().to_string());
    assert_eq!(hdr(&h, header::CONTENT_TYPE), "application/octet-stream");
    assert_eq!(hdr(&h, header::ACCEPT_RANGES), "bytes");
    let etag = assert_strong_etag(&h);
    assert_eq!(r.bytes().unwrap().as_ref(), obj.as_slice());

    let r = get(&client, &url, &[(header::IF_NONE_MATCH, &etag)]);
    assert_eq!(
        r.status(),
        StatusCode::NOT_MODIFIED,
        "If-None-Match: {etag}"
    );
    assert_eq!(hdr(r.headers(), header::ETAG), etag);
    assert_eq!(
        hdr(r.headers(), header::CACHE_CONTROL),
        "public, max-age=12345, immutable"
    );
    assert!(r.bytes().unwrap().is_empty());
    let r = get(
        &client,
        &url,
        &[(header::IF_NONE_MATCH, "\"something-else\"")],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().unwrap().len(), obj.len());
    let r = get(&client, &url, &[(header::IF_MATCH, "\"something-else\"")]);
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    check_ranges(&client, &url, &obj);
    // A file above the size the server reads whole (1 MiB) is streamed from
    // disk instead: the same bytes and the same range answers. (Only object
    // paths are served; the server does not decode what it serves.)
    let large = support::fsutil::Rng::new(11).bytes(3 << 20);
    let large_file = obj_dir.join("f".repeat(62));
    std::fs::write(&large_file, &large).unwrap();
    let large_url = server.at(&url_path(root, &large_file));
    let r = get(&client, &large_url, &[]);
    assert_eq!(r.status(), StatusCode::OK, "{large_url}");
    assert_eq!(
        hdr(r.headers(), header::CONTENT_LENGTH),
        large.len().to_string()
    );
    assert!(
        r.bytes().unwrap().as_ref() == large.as_slice(),
        "{large_url}"
    );
    check_ranges(&client, &large_url, &large);
    // Several ranges: the whole body, 200 (documented in src/serve/mod.rs).
    let r = get(&client, &url, &[(header::RANGE, "bytes=0-9,20-29")]);
    assert_eq!(r.status(), StatusCode::OK, "multi-range");
    assert_eq!(r.bytes().unwrap().as_ref(), obj.as_slice());
    // If-Range: a range only while the validator matches.
    let r = get(
        &client,
        &url,
        &[(header::RANGE, "bytes=10-19"), (header::IF_RANGE, &etag)],
    );
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "matching If-Range");
    assert_eq!(r.bytes().unwrap().as_ref(), &obj[10..20]);
    let r = get(
        &client,
        &url,
        &[
            (header::RANGE, "bytes=10-19"),
            (header::IF_RANGE, "\"stale\""),
        ],
    );
    assert_eq!(r.status(), StatusCode::OK, "stale If-Range");
    assert_eq!(r.bytes().unwrap().as_ref(), obj.as_slice());

    // Refused: writer files, hidden files, directories, symlinks that leave
    // the repository or lead to a refused file, traversal, missing objects.
    let rel_dir = url_path(root, &obj_dir);
    for path in [
        "/.stratum/lock".to_string(),
        "/.stratum/dirty".into(),
        "/.stratum/tmp/partial".into(),
        "/.stratum/tmp/".into(),
        "/.stratum/".into(),
        "/%2estratum/lock".into(),
        "/".into(),
        "/data/".into(),
        "/data".into(),
        rel_dir.clone(),
        format!("{rel_dir}/"),
        format!("{rel_dir}/escape"),
        format!("{rel_dir}/to-lock"),
        format!("{rel_dir}/.hidden"),
        "/data/00/0000000000000000000000000000000000000000000000000000000000000".into(),
    ] {
        let r = get(&client, &server.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
        assert!(
            r.headers().get(header::CACHE_CONTROL).is_none(),
            "a 404 must not be cacheable as immutable: {path}"
        );
    }
    for path in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/data/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/data/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/data/..%5c..%5cetc/passwd",
        "/.stratum/../.stratum/lock",
    ] {
        let (code, text) = raw_request(server.addr, "GET", path);
        assert!(
            code == 404 || code == 400,
            "GET {path} must be 404 or 400, got {code}"
        );
        assert!(!text.contains("root:"), "GET {path} leaked /etc/passwd");
    }

    // Only GET and HEAD.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::OPTIONS,
    ] {
        let r = client.request(method.clone(), &url).send().unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
        assert_eq!(hdr(r.headers(), header::ALLOW), "GET, HEAD");
    }
    assert_eq!(raw_get(server.addr, &obj_path), 200);

    // The access log, then a graceful exit on SIGTERM.
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    let log = server.stderr();
    assert!(
        st.success(),
        "stratum serve exited with {st} on SIGTERM\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("method=GET") && l.contains(&obj_path) && l.contains("status=206"))
        .unwrap_or_else(|| panic!("no access-log line for the range request:\n{log}"));
    assert!(line.contains("bytes=10"), "{line}");
    assert!(line.contains("stratum::serve::access"), "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains("method=POST") && l.contains("status=405")),
        "{log}"
    );
}

#[test]
fn stratum_serve_refuses_a_non_repository_and_stops_on_sigint() {
    let tmp = support::tempdir();
    support::stratum_fails([std::ffi::OsStr::new("serve"), tmp.path().as_os_str()]);
    support::stratum_fails([
        std::ffi::OsStr::new("serve"),
        tmp.path().join("missing").as_os_str(),
    ]);

    let repo = TestRepo::new("serve-sigint");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let r = http_client()
        .head(server.at("/.stratum/manifest"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let st = server.stop(rustix::process::Signal::INT, Duration::from_secs(15));
    assert!(
        st.success(),
        "exit status {st} on SIGINT\n{}",
        server.stderr()
    );
}

#[test]
fn nginx_serves_the_repository_unchanged() {
    let Some(bin) = nginx_bin() else {
        return skip("nginx is not installed (Debian package `nginx`, see .ci/run)");
    };
    let repo = published_repo();
    let nginx = Nginx::start(&bin, &repo.repo);
    let client = http_client();

    let mut files = repo.data_files();
    files.push(repo.manifest_path());
    for f in &files {
        let path = url_path(&repo.repo, f);
        let r = get(&client, &nginx.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::OK, "nginx GET {path}");
        let want_cc = if path.starts_with("/data/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        assert_eq!(hdr(r.headers(), header::CACHE_CONTROL), want_cc, "{path}");
        let etag = assert_strong_etag(r.headers());
        assert_eq!(
            r.bytes().unwrap().as_ref(),
            std::fs::read(f).unwrap(),
            "nginx served other bytes for {path}"
        );
        let r = get(&client, &nginx.at(&path), &[(header::IF_NONE_MATCH, &etag)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    let (obj_path, obj) = largest_object(&repo);
    check_ranges(&client, &nginx.at(&obj_path), &obj);

    std::fs::write(repo.repo.join(".stratum/lock"), b"").unwrap();
    for path in ["/.stratum/lock", "/.stratum/tmp/", "/../etc/passwd"] {
        let code = raw_get(
            nginx.url.strip_prefix("http://").unwrap().parse().unwrap(),
            path,
        );
        assert!(
            code == 404 || code == 400,
            "nginx GET {path} must be 404 or 400, got {code}"
        );
    }
}

/// Issue 12, item 11a: an ~8 000-byte request path was answered `500` and
/// logged an ERROR (the file system refuses the name with ENAMETOOLONG); it
/// is simply not there: `404`, and nothing above INFO in the log.
#[test]
fn an_8000_byte_path_is_404_not_500() {
    let repo = TestRepo::new("serve-long-path");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let one_component = format!("/{}", "a".repeat(8000));
    let many_components = "/data/ab".to_string() + &"/abcdefgh".repeat(900);
    let long_object = format!("/data/ab/{}", "c".repeat(8000));
    for path in [&one_component, &many_components, &long_object] {
        let (code, _) = raw_request(server.addr, "GET", path);
        assert_eq!(code, 404, "GET of a {}-byte path", path.len());
        let (code, _) = raw_request(server.addr, "HEAD", path);
        assert_eq!(code, 404, "HEAD of a {}-byte path", path.len());
    }
    // The server still answers, and logged no error or warning.
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    let log = server.stderr();
    assert!(st.success(), "exit status {st}\n{log}");
    assert!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "a long path must not log an error:\n{log}"
    );
}

/// Issue 12, item 6: `stratum serve` served every non-hidden file under the
/// repository, a private key kept there by mistake included. Only the paths
/// the format defines are served now (the manifest, the public key, object
/// paths of every kind), and `init` and `serve` warn about a private key
/// inside the repository.
#[test]
fn serve_serves_only_format_paths_not_a_private_key_in_the_repo() {
    let repo = published_repo();
    let root = &repo.repo;
    // A second revision, so that the history holds a manifest object (`M`).
    let layout = Layout::create(&repo.scratch("layout2"));
    layout.add_image("2", &[Layer::gzip(&[TarEntry::file(b"two.txt", b"two\n")])]);
    repo.publish_one(
        &format!("oci:{}:2", layout.dir.display()),
        Some("test/serve:2"),
    );
    let objects = repo.data_files();
    for suffix in ['C', 'M'] {
        assert!(
            objects
                .iter()
                .any(|f| f.to_str().unwrap().ends_with(suffix)),
            "expected a {suffix} object among {objects:?}"
        );
    }

    // A signing key made inside the repository, and other stray files.
    support::stratum(["keygen".as_ref(), root.join("signing.key").as_os_str()]);
    std::fs::create_dir_all(root.join("keys/old")).unwrap();
    std::fs::copy(root.join("signing.key"), root.join("keys/old/ci.pem")).unwrap();
    std::fs::write(root.join("README.txt"), b"notes").unwrap();
    std::fs::write(root.join(".stratum/urls"), b"http://example.org/\n").unwrap();
    std::fs::write(root.join("data/notes.txt"), b"notes").unwrap();
    let (obj_path, obj) = largest_object(&repo);
    let obj_file = root.join(obj_path.trim_start_matches('/'));
    let obj_dir = obj_file.parent().unwrap();
    let name = obj_file.file_name().unwrap().to_str().unwrap();
    let hex62 = &name[..62];
    std::fs::write(obj_dir.join(format!("{hex62}.bak")), &obj).unwrap();
    std::fs::write(obj_dir.join(format!("{hex62}X")), &obj).unwrap();
    std::fs::write(obj_dir.join(hex62.to_uppercase()), &obj).unwrap();
    std::fs::create_dir_all(root.join("data/zz")).unwrap();
    std::fs::write(root.join("data/zz").join(hex62), &obj).unwrap();
    // An object-shaped symlink to the key: followed only to a served path.
    let to_key = obj_dir.join(format!("{}{}", &hex62[..61], "0"));
    assert!(!to_key.exists());
    std::os::unix::fs::symlink("../../signing.key", &to_key).unwrap();

    let mut server = StratumServe::start(root, &[] as &[&str]);
    let client = http_client();
    for path in [
        "/signing.key".to_string(),
        "/signing.key.pub".into(),
        "/keys/old/ci.pem".into(),
        "/README.txt".into(),
        "/.stratum/urls".into(),
        "/data/notes.txt".into(),
        url_path(root, &obj_dir.join(format!("{hex62}.bak"))),
        url_path(root, &obj_dir.join(format!("{hex62}X"))),
        url_path(root, &obj_dir.join(hex62.to_uppercase())),
        format!("/data/zz/{hex62}"),
        url_path(root, &to_key),
    ] {
        let r = get(&client, &server.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
        let body = r.bytes().unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("PRIVATE KEY"),
            "GET {path} leaked the key"
        );
        let r = client.head(server.at(&path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }

    // Every path of the format is still served, byte for byte.
    for f in objects
        .iter()
        .chain([&repo.manifest_path(), &root.join(".stratum/public.pem")])
    {
        let path = url_path(root, f);
        let r = get(&client, &server.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        assert_eq!(r.bytes().unwrap().as_ref(), std::fs::read(f).unwrap());
    }

    // `serve` warned about both keys, and only about them.
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    let log = server.stderr();
    assert!(st.success(), "exit status {st}\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("private key inside the repository"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(warnings.iter().any(|l| l.contains("signing.key ")), "{log}");
    assert!(
        warnings.iter().any(|l| l.contains("keys/old/ci.pem")),
        "{log}"
    );

    // `init` warns too, when the key it is given lies in the new repository.
    let tmp = support::tempdir();
    let new_repo = tmp.path().join("repo");
    std::fs::create_dir(&new_repo).unwrap();
    let key = new_repo.join("key");
    support::stratum(["keygen".as_ref(), key.as_os_str()]);
    let out = support::stratum([
        "init".as_ref(),
        new_repo.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    let err = out.stderr_str();
    assert!(
        err.contains("private key inside the repository") && err.contains(&*key.to_string_lossy()),
        "no warning from init:\n{err}"
    );
    // …and not when the key is kept outside.
    let outside = tmp.path().join("outside.key");
    support::stratum(["keygen".as_ref(), outside.as_os_str()]);
    let out = support::stratum([
        "init".as_ref(),
        tmp.path().join("clean").as_os_str(),
        "--key".as_ref(),
        outside.as_os_str(),
    ]);
    assert!(
        !out.stderr_str().contains("private key"),
        "{}",
        out.stderr_str()
    );
}

/// Regression (issue 12.11): `RepoBackend::resolve` canonicalized the path,
/// checked it, and then opened it with `O_NOFOLLOW`, which protects only
/// the last component: a `data/ab` directory swapped for a symlink between
/// the check and the open led outside the repository. Every component is
/// now opened relative to its parent with `O_NOFOLLOW`. Here `data/ab`
/// flips between the real directory and a symlink to an outside directory
/// holding a "secret" under the same object name, while requests run.
#[test]
fn a_directory_swapped_for_a_symlink_never_serves_outside_the_repository() {
    let repo = TestRepo::new("serve-swap");
    let name = "c".repeat(62);
    let outside = repo.scratch("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join(&name), b"SECRET").unwrap();
    let data = repo.repo.join("data");
    let dir = data.join("ab");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&name), b"GOOD").unwrap();
    let link = data.join("ab-link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, dir, link) = (stop.clone(), dir.clone(), link.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &dir,
                    rustix::fs::CWD,
                    &link,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                flips += 1;
            }
            flips
        })
    };
    let path = format!("/data/ab/{name}");
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let (mut good, mut absent, mut leaked) = (0, 0, 0);
    while std::time::Instant::now() < deadline {
        let (code, text) = raw_request(server.addr, "GET", &path);
        match code {
            200 if text.ends_with("SECRET") => leaked += 1,
            200 => good += 1,
            404 => absent += 1,
            other => panic!("GET {path}: {other}\n{text}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{flips} flips; {good} good, {absent} 404, {leaked} leaked");
    assert_eq!(
        leaked, 0,
        "served a file outside the repository {leaked} times"
    );
    assert!(
        good > 0 && absent > 0,
        "the swap never raced: {good} good, {absent} 404"
    );
    server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
}

/// Issue 12, item 3: `stratum serve` never timed out a connection, so 300
/// half-sent requests under a 256-descriptor limit stopped it from answering
/// anyone. With a header timeout and a connection cap, a normal client is
/// answered within a few header timeouts and the half-sent connections are
/// closed by the server.
#[test]
fn half_sent_requests_do_not_stop_serve_from_answering() {
    const HALF_SENT: usize = 300;
    const CAP: usize = 100;
    let repo = TestRepo::new("serve-half-sent");
    let mut server = StratumServe::start(
        &repo.repo,
        &[
            "--header-timeout",
            "1",
            "--max-connections",
            &CAP.to_string(),
        ],
    );
    // The review's conditions: 256 file descriptors.
    let pid = server.pid();
    rustix::process::prlimit(
        Some(pid),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: Some(256),
        },
    )
    .unwrap();

    let attack = Instant::now();
    let half = format!(
        "GET /.stratum/manifest HTTP/1.1\r\nHost: {}\r\nUser-Agent: slow",
        server.addr
    );
    let mut half_sent: Vec<TcpStream> = (0..HALF_SENT)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("half-sent connection {i}: {e}"));
            s.write_all(half.as_bytes()).unwrap();
            s
        })
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero()))
        .unwrap()
        .count();
    assert!(
        fds < 256 - 16,
        "{fds} descriptors open with {HALF_SENT} connections pending and a cap of {CAP}"
    );

    // A normal client, behind all of them in the listen backlog: each round
    // of CAP half-sent connections holds the slots for one header timeout.
    let client = Instant::now();
    let r = http_client()
        .get(server.at("/.stratum/manifest"))
        .timeout(Duration::from_secs(20))
        .send();
    let answered_in = client.elapsed();
    let r = r.unwrap_or_else(|e| {
        panic!(
            "no answer within 20 s behind {HALF_SENT} half-sent requests: {e}\n{}",
            server.stderr()
        )
    });
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.bytes().unwrap().as_ref(),
        repo.manifest_bytes().as_slice()
    );
    let bound = Duration::from_secs((HALF_SENT / CAP + 3) as u64);
    assert!(
        answered_in < bound,
        "answered after {answered_in:?}, more than {bound:?}"
    );

    // Every half-sent connection is closed by the server, unanswered.
    let deadline = attack + Duration::from_secs(20);
    for (i, s) in half_sent.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!(
                "half-sent connection {i} was answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!(
                "half-sent connection {i} still open {:?} after the attack began: {e}",
                attack.elapsed()
            ),
        }
    }
    let all_closed_in = attack.elapsed();
    eprintln!(
        "{HALF_SENT} half-sent requests, cap {CAP}, header timeout 1 s, 256 descriptors: \
         {fds} descriptors open, normal client answered in {answered_in:?}, \
         all half-sent connections closed {all_closed_in:?} after the first"
    );
    assert!(raw_get(server.addr, "/.stratum/manifest") == 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// Issue 12, item 3, the other ways to hold a connection: a kept-alive
/// connection left idle is closed after the header timeout, and a client
/// that stops reading a large response is cut off after the idle timeout
/// (it gets far less than the whole body).
#[test]
fn serve_times_out_idle_and_stalled_connections() {
    let repo = TestRepo::new("serve-stalled");
    let dir = repo.repo.join("data/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let big = support::fsutil::Rng::new(5).bytes(32 << 20);
    let name = "e".repeat(62);
    std::fs::write(dir.join(&name), &big).unwrap();
    let big_path = format!("/data/ab/{name}");
    let mut server = StratumServe::start(
        &repo.repo,
        &["--header-timeout", "2", "--idle-timeout", "1"],
    );

    // Kept alive, then idle: closed after the header timeout.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "HEAD /.stratum/manifest HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let idle = Instant::now();
    let r = s.read(&mut buf);
    let closed_after = idle.elapsed();
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "an idle kept-alive connection must be closed: {r:?} after {closed_after:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "closed {closed_after:?} after the response; the header timeout is 2 s"
    );

    // A client that asks for 32 MiB and does not read: cut off.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    write!(
        s,
        "GET {big_path} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = 0usize;
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => got += n,
            Err(e) => break e.to_string(),
        }
    };
    eprintln!(
        "stalled reader: got {got} of {} bytes, then {end}",
        big.len()
    );
    assert!(
        got < big.len() / 2,
        "a client that stopped reading for 4 s still got {got} of {} bytes ({end})",
        big.len()
    );
    assert!(end == "EOF" || end.contains("reset"), "{end}");

    // The server is fine.
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// Security review: one client could hold every connection slot. It opened
/// `--max-connections` kept-alive connections and sent a small request on
/// each every few seconds, under both the header and the idle timeout, and
/// everyone else waited in the listen backlog for as long as it liked. Like
/// nginx, serve now closes kept-alive connections idle between requests
/// (the longest idle first) when every slot is taken and a new connection
/// waits. Here the holder also reconnects at once whenever a connection of
/// its is closed, to keep its hold as best it can.
#[test]
fn one_client_holding_every_slot_does_not_lock_others_out() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    const CAP: usize = 20;
    const INTERVAL: Duration = Duration::from_millis(300);
    let repo = TestRepo::new("serve-slot-holder");
    let mut server = StratumServe::start(&repo.repo, &["--max-connections", &CAP.to_string()]);

    let stop = Arc::new(AtomicBool::new(false));
    let (up, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let holders: Vec<_> = (0..CAP)
        .map(|_| {
            let (stop, up, closed, addr) = (stop.clone(), up.clone(), closed.clone(), server.addr);
            std::thread::spawn(move || {
                let request = format!("HEAD /.stratum/manifest HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                let mut conn: Option<TcpStream> = None;
                let mut counted = false;
                while !stop.load(Ordering::Relaxed) {
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => {
                            let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                            else {
                                continue;
                            };
                            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                            conn.insert(s)
                        }
                    };
                    // One request, its response head (HEAD: no body).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    let answered = s.write_all(request.as_bytes()).is_ok()
                        && loop {
                            match s.read(&mut buf) {
                                Ok(n) if n > 0 => {
                                    head.extend_from_slice(&buf[..n]);
                                    if head.ends_with(b"\r\n\r\n") {
                                        break true;
                                    }
                                }
                                _ => break false,
                            }
                        };
                    if !answered {
                        // Closed by the server (or not accepted within 2 s):
                        // take another slot at once.
                        conn = None;
                        closed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if !counted {
                        up.fetch_add(1, Ordering::Relaxed);
                        counted = true;
                    }
                    std::thread::sleep(INTERVAL);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.load(Ordering::Relaxed) < CAP {
        assert!(
            Instant::now() < deadline,
            "the holder got only {} of {CAP} connections answered",
            up.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every slot held, each connection busy every 300 ms (well under the
    // 10 s header timeout and the 60 s idle timeout).
    std::thread::sleep(Duration::from_millis(500));

    let mut answered_in = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let r = http_client()
            .get(server.at("/.stratum/manifest"))
            .timeout(Duration::from_secs(6))
            .send();
        let took = t.elapsed();
        let r = r.unwrap_or_else(|e| {
            panic!(
                "client {i}: no answer within 6 s while one client holds all {CAP} \
                 connection slots: {e}"
            )
        });
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.bytes().unwrap().as_ref(),
            repo.manifest_bytes().as_slice()
        );
        assert!(
            took < Duration::from_secs(2),
            "client {i} answered after {took:?} while one client holds every slot"
        );
        answered_in.push(took);
    }
    // The holder finds out at its next request.
    std::thread::sleep(INTERVAL * 3);
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
    eprintln!(
        "{CAP} slots held: fresh clients answered in {answered_in:?}; \
         the holder's connections closed {} times",
        closed.load(Ordering::Relaxed)
    );
    // (One at least: a fresh client leaving frees its slot for the next.)
    assert!(
        closed.load(Ordering::Relaxed) >= 1,
        "fresh clients were answered, so a holder's connection must have been closed"
    );
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// Waits up to 5 s for `needle` on the server's stderr (written by another
/// thread).
fn stderr_with(server: &StratumServe, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let err = server.stderr();
        if err.contains(needle) || Instant::now() > deadline {
            return err;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serve follows no symlink below the repository root, so a `data/xx`,
/// `data/` or `.stratum/` moved elsewhere and symlinked back makes what is
/// behind it 404: serve says so at start, pointing to a bind mount.
#[test]
fn serve_warns_about_symlinked_repository_directories() {
    let warning = |p: &Path| format!("warning: {} is a symlink", p.display());
    // A symlinked object directory: its objects are 404, the others served.
    let repo = TestRepo::new("serve-symlinked-xx");
    let (ab, cd) = (repo.repo.join("data/ab"), repo.repo.join("data/cd"));
    let name = "d".repeat(62);
    let elsewhere = repo.scratch("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(&name), b"behind a symlink").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ab).unwrap();
    std::fs::create_dir_all(&cd).unwrap();
    std::fs::write(cd.join(&name), b"in place").unwrap();
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let err = stderr_with(&server, &warning(&ab));
    assert!(
        err.contains(&warning(&ab)),
        "no warning about {ab:?}:\n{err}"
    );
    assert!(err.contains("404") && err.contains("bind mount"), "{err}");
    assert!(!err.contains(&warning(&cd)), "{err}");
    assert_eq!(raw_get(server.addr, &format!("/data/ab/{name}")), 404);
    assert_eq!(raw_get(server.addr, &format!("/data/cd/{name}")), 200);
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());

    // `data/` and `.stratum/` themselves moved and symlinked back.
    let repo = TestRepo::new("serve-symlinked-top");
    let moved = repo.scratch("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let (data, meta) = (repo.repo.join("data"), repo.repo.join(".stratum"));
    std::fs::create_dir_all(data.join("ab")).unwrap();
    std::fs::write(data.join("ab").join(&name), b"object").unwrap();
    for d in [&data, &meta] {
        let to = moved.join(d.file_name().unwrap());
        std::fs::rename(d, &to).unwrap();
        std::os::unix::fs::symlink(&to, d).unwrap();
    }
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let err = stderr_with(&server, &warning(&meta));
    assert!(
        err.contains(&warning(&data)) && err.contains(&warning(&meta)),
        "no warning about {data:?} and {meta:?}:\n{err}"
    );
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 404);
    assert_eq!(raw_get(server.addr, &format!("/data/ab/{name}")), 404);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());

    // A repository without symlinks: no such warning.
    let repo = TestRepo::new("serve-no-symlink");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
    assert!(
        !server.stderr().contains("is a symlink"),
        "{}",
        server.stderr()
    );
}

/// Like nginx's `keepalive_requests` 1000: the 1000th response on one
/// kept-alive connection says `Connection: close`, and the connection is
/// closed after it.
#[test]
fn a_kept_alive_connection_serves_at_most_1000_requests() {
    let repo = TestRepo::new("serve-keepalive-requests");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "HEAD /.stratum/manifest HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    for i in 1..=1000 {
        s.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed before response {i}");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "response {i}: {head}");
        assert_eq!(
            head.contains("connection: close"),
            i == 1000,
            "response {i}: {head}"
        );
    }
    let r = s.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "still open after 1000 requests: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}
