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

mod limits;
mod paths;
