//! `stratum serve` over HTTP/2 (h2c, prior knowledge) on the port that
//! serves HTTP/1.1: the same bytes and headers either way (curl, which
//! speaks both), and the connection limits of src/serve/conn.rs holding for
//! HTTP/2 clients that misbehave (raw frames written by hand).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::serve::{largest_object, published_repo, url_path};
use crate::support;
use crate::support::services::{http_client, raw_get, StratumServe};
use crate::support::TestRepo;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

/// One `curl` transfer: (HTTP version, status, response headers lowercased, body).
fn curl(url: &str, extra: &[&str], scratch: &Path) -> (String, u16, String, Vec<u8>) {
    let (hdr, body) = (scratch.join("h"), scratch.join("b"));
    // curl leaves the output file alone when there is no body.
    let _ = std::fs::remove_file(&body);
    let out = Command::new("curl")
        .args(["-s", "-S", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {extra:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = String::from_utf8(out.stdout).unwrap();
    let (version, status) = w.split_once(' ').unwrap();
    (
        version.to_owned(),
        status.parse().unwrap(),
        std::fs::read_to_string(&hdr).unwrap().to_ascii_lowercase(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// The value of header `name` (lowercase) in a block of response headers.
fn header_of<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[test]
fn serve_answers_http2_prior_knowledge_and_http1_on_one_port_with_identical_bytes() {
    let repo = published_repo();
    let server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let scratch = repo.scratch("curl");
    std::fs::create_dir_all(&scratch).unwrap();
    let client = http_client();
    let mut paths: Vec<String> = repo
        .data_files()
        .iter()
        .map(|f| url_path(&repo.repo, f))
        .collect();
    paths.push("/.stratum/manifest".into());
    paths.push("/.stratum/public.pem".into());
    for path in &paths {
        let url = server.at(path);
        let (v2, s2, h2, b2) = curl(&url, &["--http2-prior-knowledge"], &scratch);
        let (v1, s1, h1, b1) = curl(&url, &["--http1.1"], &scratch);
        assert_eq!((v2.as_str(), s2), ("2", 200), "{path} over HTTP/2");
        assert_eq!((v1.as_str(), s1), ("1.1", 200), "{path} over HTTP/1.1");
        let on_disk = std::fs::read(repo.repo.join(&path[1..])).unwrap();
        assert!(b2 == on_disk && b1 == on_disk, "{path}: bodies differ");
        for name in [
            "etag",
            "last-modified",
            "cache-control",
            "content-type",
            "content-length",
            "x-content-type-options",
        ] {
            assert_eq!(
                header_of(&h2, name),
                header_of(&h1, name),
                "{path}: header {name}"
            );
            assert!(header_of(&h2, name).is_some(), "{path}: no {name}\n{h2}");
        }
        // And the HTTP/1.1 client of the test suite (reqwest) agrees.
        let r = client.get(&url).send().unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.bytes().unwrap().as_ref(), on_disk.as_slice());
    }

    // Ranges, conditional requests and refusals are the same over HTTP/2.
    let (big, bytes) = largest_object(&repo);
    let url = server.at(&big);
    let (_, s, h, b) = curl(&url, &["--http2-prior-knowledge", "-r", "10-99"], &scratch);
    assert_eq!(s, 206);
    assert_eq!(b, &bytes[10..100]);
    assert_eq!(
        header_of(&h, "content-range"),
        Some(format!("bytes 10-99/{}", bytes.len()).as_str())
    );
    let etag = header_of(&h, "etag").unwrap().to_owned();
    let inm = format!("If-None-Match: {etag}");
    let (_, s, _, b) = curl(&url, &["--http2-prior-knowledge", "-H", &inm], &scratch);
    assert_eq!((s, b.len()), (304, 0));
    for refused in ["/.stratum/lock", "/keys/test.key", "/data/../.stratum/lock"] {
        let (_, s, _, _) = curl(
            &server.at(refused),
            &["--http2-prior-knowledge", "--path-as-is"],
            &scratch,
        );
        assert_eq!(s, 404, "{refused} over HTTP/2");
    }
    let (_, s, h, _) = curl(
        &server.at("/.stratum/manifest"),
        &["--http2-prior-knowledge", "-X", "DELETE"],
        &scratch,
    );
    assert_eq!(s, 405);
    assert_eq!(header_of(&h, "allow"), Some("get, head"));

    // Many requests at once on one connection (raw frames: curl 7.88 cannot
    // reuse an h2c connection, nginx's or ours).
    let (mut s, _) = h2_connect(server.addr, &[(0x4, 1 << 20)]);
    s.write_all(&frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()))
        .unwrap();
    let block = get_block(server.addr, &big);
    let mut bodies = std::collections::HashMap::<u32, Vec<u8>>::new();
    for i in 0..100u32 {
        s.write_all(&frame(HEADERS, 0x5, 2 * i + 1, &block))
            .unwrap();
        bodies.insert(2 * i + 1, Vec::new());
    }
    let mut open = 100;
    while open > 0 {
        let (kind, flags, id, payload) = read_frame(&mut s).expect("closed early");
        if kind == DATA {
            bodies.get_mut(&id).unwrap().extend_from_slice(&payload);
            if flags & 0x1 != 0 {
                open -= 1;
            }
        }
    }
    assert!(bodies.values().all(|b| *b == bytes), "100 streams at once");
    drop(s);

    let log = server.settled_access_log();
    assert!(log
        .iter()
        .any(|r| r.version.as_deref() == Some("HTTP/2.0") && r.path == big));
    assert!(log
        .iter()
        .any(|r| r.version.as_deref() == Some("HTTP/1.1") && r.path == big));
}

// ---------------------------------------------------------------------------
// Raw HTTP/2 frames, for clients that misbehave

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The next frame: (type, flags, stream, payload); `None` at EOF or on an
/// error (a reset, the read timeout).
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// A connection that has sent the preface and `settings`, and read the
/// server's SETTINGS (returned as (id, value) pairs).
fn h2_connect(addr: SocketAddr, settings: &[(u16, u32)]) -> (TcpStream, Vec<(u16, u32)>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut payload = Vec::new();
    for (id, v) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&v.to_be_bytes());
    }
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &payload)).unwrap();
    let (kind, flags, _, payload) = read_frame(&mut s).expect("the server's SETTINGS");
    assert_eq!((kind, flags), (SETTINGS, 0), "the server's first frame");
    let server = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    s.write_all(&frame(SETTINGS, 0x1, 0, &[])).unwrap();
    (s, server)
}

/// An HPACK header block for `GET path` (no Huffman coding, no indexing of
/// our own).
fn get_block(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    for (name_index, value) in [(4u8, path.to_string()), (1, addr.to_string())] {
        assert!(value.len() < 127);
        b.push(name_index); // literal without indexing, indexed name
        b.push(u8::try_from(value.len()).unwrap());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Reads frames until the connection ends; returns how long that took and
/// the frame types seen.
fn read_until_closed(s: &mut TcpStream) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut kinds = Vec::new();
    while let Some((kind, ..)) = read_frame(s) {
        kinds.push(kind);
        assert!(start.elapsed() < Duration::from_secs(30), "never closed");
    }
    (start.elapsed(), kinds)
}

#[test]
fn http2_connections_are_bounded_streams_headers_idle_and_half_sent() {
    let published = published_repo();
    let repo = &published;
    let mut server = StratumServe::start(&repo.repo, &["--header-timeout", "2"]);

    // What the server announces.
    let (mut s, settings) = h2_connect(server.addr, &[]);
    let get = |id| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    assert_eq!(get(0x3), Some(128), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(get(0x6), Some(16384), "SETTINGS_MAX_HEADER_LIST_SIZE");

    // More streams than announced, none of which can finish (a shut
    // window): 128 are answered, the others refused.
    let (mut many, _) = h2_connect(server.addr, &[(0x4, 0)]);
    let (big, _) = largest_object(&published);
    let block = get_block(server.addr, &big);
    let mut stream_frames = Vec::new();
    for i in 0..200u32 {
        stream_frames.extend(frame(HEADERS, 0x5, 2 * i + 1, &block));
    }
    many.write_all(&stream_frames).unwrap();
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 200 {
        let (kind, _, _, payload) = read_frame(&mut many).expect("closed early");
        match kind {
            HEADERS => answered += 1,
            // REFUSED_STREAM
            RST_STREAM if payload == [0, 0, 0, 7] => refused += 1,
            RST_STREAM => panic!("RST_STREAM {payload:?}"),
            _ => {}
        }
    }
    assert_eq!((answered, refused), (128, 72));
    drop(many);

    // Preface, settings and nothing else: GOAWAY after the header timeout,
    // closed one more header timeout later at most (we do not answer the
    // server's PING, so the close never completes on our side).
    let (after, kinds) = read_until_closed(&mut s);
    assert!(kinds.contains(&GOAWAY), "frames: {kinds:?}");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(8),
        "an idle HTTP/2 connection closed after {after:?}; the header timeout is 2 s"
    );

    // Half a header block (no END_HEADERS, no CONTINUATION ever): the same.
    let (mut s, _) = h2_connect(server.addr, &[]);
    let block = get_block(server.addr, "/.stratum/manifest");
    s.write_all(&frame(HEADERS, 0x1, 1, &block[..block.len() / 2]))
        .unwrap();
    let (after, kinds) = read_until_closed(&mut s);
    assert!(
        after < Duration::from_secs(8) && !kinds.contains(&HEADERS),
        "half a header block: closed after {after:?}, frames {kinds:?}"
    );

    // A header block over the limit is refused (431 or a reset), the
    // server goes on.
    let scratch = repo.scratch("curl");
    std::fs::create_dir_all(&scratch).unwrap();
    let huge = format!("X-Big: {}", "a".repeat(20_000));
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "-H", &huge])
        .arg(server.at("/.stratum/manifest"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        code == "431" || !out.status.success(),
        "a 20 kB header over HTTP/2: {code} {:?}",
        out.status
    );
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// An HTTP/2 client can keep a connection busy (a PING now and then) while
/// never opening the flow-control window of a stream: the idle timeout of
/// the connection then never fires, and the response would hold its turn
/// and its memory for good. The stream's own stall closes the connection.
#[test]
fn an_http2_stream_whose_window_stays_shut_is_cut_off_though_pings_flow() {
    let repo = TestRepo::new("serve-h2-stalled");
    let dir = repo.repo.join("data/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let big = support::fsutil::Rng::new(5).bytes(8 << 20);
    let name = "e".repeat(62);
    std::fs::write(dir.join(&name), &big).unwrap();
    let mut server = StratumServe::start(&repo.repo, &["--idle-timeout", "2"]);

    // SETTINGS_INITIAL_WINDOW_SIZE 0: no DATA may be sent on any stream.
    let (mut s, _) = h2_connect(server.addr, &[(0x4, 0)]);
    let block = get_block(server.addr, &format!("/data/ab/{name}"));
    s.write_all(&frame(HEADERS, 0x5, 1, &block)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let (mut status_seen, mut data) = (false, 0usize);
    let ended = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a stream stalled for good while PINGs flow: never closed"
        );
        if s.write_all(&frame(PING, 0, 0, b"stratum!")).is_err() {
            break start.elapsed();
        }
        let mut head = [0u8; 9];
        match s.read_exact(&mut head) {
            Ok(()) => {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if s.read_exact(&mut payload).is_err() {
                    break start.elapsed();
                }
                status_seen |= head[3] == HEADERS;
                if head[3] == DATA {
                    data += len;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(status_seen, "the response head was sent");
    assert!(
        data < big.len(),
        "all {data} bytes sent with a shut window?"
    );
    assert!(
        ended >= Duration::from_millis(1500) && ended < Duration::from_secs(10),
        "closed {ended:?} after the request; --idle-timeout is 2 s"
    );
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// Over HTTP/2 one connection carries many requests, so the connection cap no
/// longer bounds the responses held in memory: the server answers at most
/// `--max-connections` requests at once over all connections, the others
/// wait their turn.
#[test]
fn http2_requests_answered_at_once_are_capped_by_max_connections() {
    let published = published_repo();
    let (big, _) = largest_object(&published);
    let mut server = StratumServe::start(&published.repo, &["--max-connections", "3"]);
    // Five streams whose responses cannot finish (a shut window).
    let (mut s, _) = h2_connect(server.addr, &[(0x4, 0)]);
    let block = get_block(server.addr, &big);
    for i in 0..5u32 {
        s.write_all(&frame(HEADERS, 0x5, 2 * i + 1, &block))
            .unwrap();
    }
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut answered = 0;
    while let Some((kind, ..)) = read_frame(&mut s) {
        answered += usize::from(kind == HEADERS);
    }
    assert_eq!(answered, 3, "responses started with --max-connections 3");
    // An HTTP/1.1 client gets a slot (two are free) but waits for a turn
    // until the HTTP/2 connection goes away.
    let waiting = std::thread::spawn({
        let addr = server.addr;
        move || {
            let t = Instant::now();
            (raw_get(addr, "/.stratum/manifest"), t.elapsed())
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !waiting.is_finished(),
        "answered while 3 responses were open"
    );
    drop(s);
    let (status, waited) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

/// (curl 7.88 cannot reuse an h2c connection for a second transfer, nginx's
/// or ours: raw frames again.)
#[test]
fn an_http2_connection_serves_at_most_1000_requests() {
    let repo = TestRepo::new("serve-h2-requests");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let (mut s, _) = h2_connect(server.addr, &[]);
    // Room for 1000 manifests on the connection.
    s.write_all(&frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()))
        .unwrap();
    let block = get_block(server.addr, "/.stratum/manifest");
    let mut goaway_after = None;
    for i in 1..=1000u32 {
        let stream = 2 * i - 1;
        s.write_all(&frame(HEADERS, 0x5, stream, &block)).unwrap();
        let mut status_ok = false;
        loop {
            let (kind, flags, id, payload) =
                read_frame(&mut s).unwrap_or_else(|| panic!("closed during request {i}"));
            match kind {
                GOAWAY => {
                    goaway_after.get_or_insert(i);
                }
                // The status: `:status 200` is HPACK static entry 8.
                HEADERS if id == stream => status_ok = payload.first() == Some(&0x88),
                PING if flags & 0x1 == 0 => s.write_all(&frame(PING, 0x1, 0, &payload)).unwrap(),
                _ => {}
            }
            if id == stream && flags & 0x1 != 0 && (kind == DATA || kind == HEADERS) {
                break;
            }
        }
        assert!(status_ok, "request {i} was not answered 200");
    }
    // The GOAWAY may follow the last response.
    let (after, kinds) = read_until_closed(&mut s);
    if kinds.contains(&GOAWAY) {
        goaway_after.get_or_insert(1000);
    }
    assert_eq!(
        goaway_after,
        Some(1000),
        "GOAWAY with request 1000 (frames after it: {kinds:?})"
    );
    assert!(after < Duration::from_secs(15), "closed {after:?} after");
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
}

// ---------------------------------------------------------------------------
// stratum's own client over h2c

/// `stratum pull URL … EXTRA` of the image of [`published_repo`].
fn pull_args(url: &str, repo: &TestRepo, dest: &Path, cache: &Path) -> Vec<std::ffi::OsString> {
    let key = format!("{}.pub", repo.key.display());
    [
        "pull",
        url,
        "--pubkey",
        &key,
        "--image",
        "test/serve:1",
        dest.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

/// `pull` and `mount` with `--http2-prior-knowledge` against `stratum
/// serve`: the same tree as a local pull, every request over HTTP/2; the
/// same commands without the flag speak HTTP/1.1.
#[test]
fn pull_and_mount_over_h2c_from_stratum_serve() {
    use crate::support::compare::{assert_trees_equal, CompareOpts};
    let repo = published_repo();
    let server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let local = repo.scratch("local");
    support::stratum([
        std::ffi::OsStr::new("pull"),
        repo.repo.as_os_str(),
        std::ffi::OsStr::new("--image"),
        std::ffi::OsStr::new("test/serve:1"),
        local.as_os_str(),
    ]);

    let dest = repo.scratch("h2c");
    let mut args = pull_args(&server.url, &repo, &dest, &repo.scratch("cache-h2c"));
    args.push("--http2-prior-knowledge".into());
    let report = support::stratum(&args).json();
    assert_trees_equal(&local, &dest, &CompareOpts::default(), "pull over h2c");
    let fetched = report["transport"]["requests"].as_u64().unwrap();
    let log = server.settled_access_log();
    assert!(fetched >= 3 && log.len() as u64 == fetched, "{log:?}");
    assert!(
        log.iter().all(|r| r.version.as_deref() == Some("HTTP/2.0")),
        "{log:?}"
    );

    let dest = repo.scratch("h1");
    let args = pull_args(&server.url, &repo, &dest, &repo.scratch("cache-h1"));
    support::stratum(&args);
    assert_trees_equal(&local, &dest, &CompareOpts::default(), "pull over h1");
    let log = server.settled_access_log();
    assert!(
        log[fetched as usize..]
            .iter()
            .all(|r| r.version.as_deref() == Some("HTTP/1.1")),
        "{log:?}"
    );

    // A lazy mount over h2c.
    if !(support::require_root() && crate::support::mount::require_fuse()) {
        return;
    }
    use crate::support::mount::{Mount, MountSource};
    let key = std::path::PathBuf::from(format!("{}.pub", repo.key.display()));
    let before = server.access_log().len();
    let src = MountSource::url(&server.url, &key, ());
    let cache = repo.scratch("cache-mount");
    let m = Mount::start_with(
        &src,
        &repo.scratch("mnt"),
        Some("test/serve:1"),
        &[
            std::ffi::OsStr::new("--cache"),
            cache.as_os_str(),
            std::ffi::OsStr::new("--http2-prior-knowledge"),
        ],
    );
    assert_trees_equal(&local, m.path(), &CompareOpts::default(), "mount over h2c");
    m.unmount();
    let log = server.settled_access_log();
    assert!(log.len() > before + 2, "{log:?}");
    assert!(
        log[before..]
            .iter()
            .all(|r| r.version.as_deref() == Some("HTTP/2.0")),
        "{log:?}"
    );
}

/// `--http2-prior-knowledge` against a server that speaks only HTTP/1.1
/// (nginx as Debian configures it): a clear failure naming the URL, not a
/// hang; without the flag the same server works.
#[test]
fn http2_prior_knowledge_against_an_http1_only_server_fails_clearly() {
    let Some(bin) = crate::support::services::nginx_bin() else {
        support::skip("nginx is not installed");
        return;
    };
    let repo = published_repo();
    let nginx = crate::support::services::Nginx::start(&bin, &repo.repo);
    let url = nginx.at("");
    let dest = repo.scratch("h2c");
    let mut args = pull_args(&url, &repo, &dest, &repo.scratch("cache-h2c"));
    args.extend(
        [
            "--http2-prior-knowledge",
            "--retries",
            "0",
            "--timeout",
            "5",
        ]
        .map(Into::into),
    );
    let started = Instant::now();
    let out = support::stratum_fails(&args);
    let err = out.stderr_str();
    eprintln!("h2c against HTTP/1.1-only nginx: {err}");
    assert!(err.contains(&url), "names the URL: {err}");
    assert!(err.contains("does this server speak HTTP/2"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let dest = repo.scratch("h1");
    support::stratum(pull_args(&url, &repo, &dest, &repo.scratch("cache-h1")));
}
