//! What bounds `stratum serve`: half-sent requests, idle and stalled
//! connections, a client holding every slot, requests per kept-alive
//! connection.

use super::*;

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
