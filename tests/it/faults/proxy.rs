//! The fault proxy itself: each fault is injected as asked, and
//! everything else is forwarded byte for byte.

use super::*;

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
