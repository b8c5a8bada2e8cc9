//! A fault-injecting HTTP/1.1 reverse proxy for the node side (`mount`,
//! `pull`, `replicate`): put it in front of `stratum serve` (or nginx, or
//! any plain HTTP/1.1 server) on 127.0.0.1 and program faults per request.
//!
//! [`HttpFaultProxy::inject`] arms `count` faults (or
//! [`HttpFaultProxy::inject_always`] an unlimited number, or
//! [`HttpFaultProxy::inject_sequence`] a sequence of faults and faithful
//! answers) for the requests whose path a [`Target`] matches: the manifest,
//! catalogs, content objects, or any path containing a substring. Rules are
//! checked in the order they were added, and the first one with something
//! left that matches applies; a request no rule picks is forwarded
//! faithfully. The faults ([`HttpFault`]):
//!
//! - a delay before the response head, a delay in the middle of the body,
//!   or a body trickled out a few bytes at a time (a slow server);
//! - a reset (TCP RST) or a clean close in the middle of the body, the head
//!   having promised the whole `Content-Length` (a truncated body);
//! - one bit flipped in the body (a broken proxy, bad memory);
//! - a status answered by the proxy itself (404, 500, 503, 429, …);
//! - a server that stalls forever: it accepts the request and never answers,
//!   or sends the response head and then nothing. The connection stays open
//!   until the client gives up (or the proxy is dropped).
//!
//! Body offsets count the bytes after the response head, i.e. the body as
//! `stratum serve` and nginx send a file (with a `Content-Length`). A cut
//! (reset, truncation) is moved before the last byte when the body is
//! shorter, so that it always removes something.
//!
//! One request per connection: the request goes upstream with `Connection:
//! close`, and the response head gets `Connection: close` too, so a client
//! never reuses a connection the proxy is about to close. Every request is
//! counted and logged ([`HttpFaultProxy::log`]): [`HttpFaultProxy::faults`]
//! (faults injected), [`HttpFaultProxy::forwarded`] (requests passed to the
//! upstream, faulty ones included) and [`HttpFaultProxy::requests`].
//!
//! `registry::FaultProxy` is the registry-side sibling (any method, request
//! bodies, registry-style JSON errors with `Retry-After`).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to a request a rule picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpFault {
    /// Wait this long before forwarding: the response head comes late.
    DelayHead(Duration),
    /// Forward the head and the first `after` body bytes, wait `delay`,
    /// then forward the rest.
    DelayBody { after: u64, delay: Duration },
    /// Forward the head, then the body `bytes` bytes at a time, waiting
    /// `every` before each piece: progress, but slower than any deadline.
    Trickle { bytes: usize, every: Duration },
    /// Forward the head and the first `after` body bytes, then reset the
    /// connection (TCP RST).
    Reset { after: u64 },
    /// Forward the head (with the whole `Content-Length`) and the first
    /// `keep` body bytes, then close the connection cleanly (FIN).
    Truncate { keep: u64 },
    /// Forward everything, with bit `at % 8` of body byte `at` (the last
    /// byte when the body is shorter) flipped.
    FlipBit { at: u64 },
    /// Answer this status without asking the upstream.
    Status(u16),
    /// Accept the request and never answer.
    StallBeforeHead,
    /// Forward the response head, then send nothing more.
    StallAfterHead,
}

impl HttpFault {
    /// Whether the fault acts on the response body (after the head).
    pub fn is_of_the_body(&self) -> bool {
        matches!(
            self,
            HttpFault::DelayBody { .. }
                | HttpFault::Trickle { .. }
                | HttpFault::Reset { .. }
                | HttpFault::Truncate { .. }
                | HttpFault::FlipBit { .. }
                | HttpFault::StallAfterHead
        )
    }

    /// A short name for messages.
    pub fn name(&self) -> String {
        match self {
            HttpFault::DelayHead(d) => format!("delay of {d:?} before the head"),
            HttpFault::DelayBody { after, delay } => {
                format!("delay of {delay:?} after {after} body bytes")
            }
            HttpFault::Trickle { bytes, every } => format!("trickle of {bytes} B every {every:?}"),
            HttpFault::Reset { after } => format!("reset after {after} body bytes"),
            HttpFault::Truncate { keep } => format!("close after {keep} body bytes"),
            HttpFault::FlipBit { at } => format!("bit flip at body byte {at}"),
            HttpFault::Status(s) => format!("status {s}"),
            HttpFault::StallBeforeHead => "stall before the head".into(),
            HttpFault::StallAfterHead => "stall after the head".into(),
        }
    }
}

/// Which requests a rule applies to, by the path of the request target
/// (without its query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Any,
    /// `…/.stratum/manifest`.
    Manifest,
    /// `…/data/ab/<62 hex>C`.
    Catalogs,
    /// `…/data/ab/<62 hex>`.
    Content,
    /// Catalogs and content objects: everything under `data/`.
    Data,
}

impl Target {
    pub fn matches(&self, path: &str) -> bool {
        let kind = data_kind(path);
        match self {
            Target::Any => true,
            Target::Manifest => path.ends_with("/.stratum/manifest"),
            Target::Catalogs => kind == Some('C'),
            Target::Content => kind == Some(' '),
            Target::Data => kind.is_some(),
        }
    }
}

/// For `…/data/ab/<62 hex><suffix>`: the suffix (`' '` for none, `'C'`,
/// `'M'`).
fn data_kind(path: &str) -> Option<char> {
    let rest = &path[path.find("/data/")? + "/data/".len()..];
    let (ab, name) = rest.split_once('/')?;
    if ab.len() != 2 || name.len() < 62 || !name.is_char_boundary(62) {
        return None;
    }
    let (hex, suffix) = name.split_at(62);
    if !(ab.bytes().chain(hex.bytes())).all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match suffix {
        "" => Some(' '),
        "C" | "M" => suffix.chars().next(),
        _ => None,
    }
}

/// `…/data/ab/<62 hex>[suffix]` → the object id (64 hex), if it is one.
pub fn object_id_of(path: &str) -> Option<String> {
    data_kind(path)?;
    let rest = &path[path.find("/data/")? + "/data/".len()..];
    let (ab, name) = rest.split_once('/')?;
    Some(format!("{ab}{}", &name[..62]))
}

/// One request the proxy handled.
#[derive(Clone, Debug)]
pub struct Handled {
    /// The path of the request target, without the query.
    pub path: String,
    /// The fault injected, if any.
    pub fault: Option<HttpFault>,
    /// The status of the response head sent (the upstream's, or the one
    /// injected); 0 when no head was sent.
    pub status: u16,
}

struct Rule {
    target: Target,
    /// What the next requests that `target` matches get, in order (`None`:
    /// forwarded faithfully).
    plan: VecDeque<Option<HttpFault>>,
    /// What every matching request gets once the plan is done.
    always: Option<HttpFault>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    requests: AtomicUsize,
    faults: AtomicUsize,
    forwarded: AtomicUsize,
    log: Mutex<Vec<Handled>>,
}

impl Shared {
    fn take_fault(&self, method: &str, path: &str) -> Option<HttpFault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| (!r.plan.is_empty() || r.always.is_some()) && r.target.matches(path))?;
        if method == "HEAD" {
            // A HEAD answer has no body: a fault of the body does not apply
            // to it (and is not counted), and a planned one waits for the
            // next GET. Mounts send HEADs to open connections ahead.
            let next = match rule.plan.front() {
                Some(step) => step.as_ref(),
                None => rule.always.as_ref(),
            };
            if next.is_some_and(HttpFault::is_of_the_body) {
                return None;
            }
        }
        match rule.plan.pop_front() {
            Some(step) => step,
            None => rule.always.clone(),
        }
    }

    /// Logs a request; returns its index in the log (for the status).
    fn record(&self, path: &str, fault: &Option<HttpFault>) -> usize {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if fault.is_some() {
            self.faults.fetch_add(1, Ordering::SeqCst);
        }
        let mut log = self.log.lock().unwrap();
        log.push(Handled {
            path: path.to_owned(),
            fault: fault.clone(),
            status: 0,
        });
        log.len() - 1
    }

    fn set_status(&self, i: usize, status: u16) {
        if let Some(h) = self.log.lock().unwrap().get_mut(i) {
            h.status = status;
        }
    }

    /// Sleeps `d`, or less when the proxy is being dropped.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                return;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// A fault-injecting reverse proxy on 127.0.0.1; see the module
/// documentation. Stops accepting (and releases stalled connections) when
/// dropped.
pub struct HttpFaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// Socket timeout inside the proxy: a stuck test must not pin its threads.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpFaultProxy {
    /// A proxy in front of the plain HTTP/1.1 server at `upstream`.
    pub fn start(upstream: SocketAddr) -> HttpFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accept = accept_loop(
            listener,
            shared.clone(),
            |sh| &sh.stop,
            move |conn, sh| {
                let _ = handle(conn, upstream, sh);
            },
        );
        HttpFaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `count` requests that `target` matches get `fault`.
    pub fn inject(&self, target: Target, count: usize, fault: HttpFault) {
        self.inject_sequence(target, vec![Some(fault); count]);
    }

    /// The next requests that `target` matches get the faults of `plan` in
    /// order, `None` meaning "forwarded faithfully" (so `[Some(a), None,
    /// Some(b)]` spares every other request).
    pub fn inject_sequence(&self, target: Target, plan: Vec<Option<HttpFault>>) {
        self.shared.rules.lock().unwrap().push(Rule {
            target,
            plan: plan.into(),
            always: None,
        });
    }

    /// Every request that `target` matches gets `fault`, until
    /// [`HttpFaultProxy::clear`].
    pub fn inject_always(&self, target: Target, fault: HttpFault) {
        self.shared.rules.lock().unwrap().push(Rule {
            target,
            plan: VecDeque::new(),
            always: Some(fault),
        });
    }

    /// Drops every rule. Connections already stalled stay stalled until
    /// their client gives up.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Faults armed with [`HttpFaultProxy::inject`] or
    /// [`HttpFaultProxy::inject_sequence`] and not injected yet.
    pub fn armed(&self) -> usize {
        self.shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.plan.iter().flatten().count())
            .sum()
    }

    /// Requests received (with a complete head).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests that got a fault.
    pub fn faults(&self) -> usize {
        self.shared.faults.load(Ordering::SeqCst)
    }

    /// Requests passed on to the upstream (faulty ones included).
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Handled> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads from `s` until the end of an HTTP head; returns `(head, bytes read
/// past it)`, or `None` when the peer closed before sending a whole head or
/// does not speak HTTP.
pub(crate) fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(p + 4);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > 256 * 1024 {
            return Err(std::io::Error::other("HTTP head too large"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        // Not HTTP (a TLS ClientHello starts with 0x16: skopeo tries HTTPS
        // first even with --tls-verify=false): close at once, so that the
        // client falls back to HTTP instead of waiting for its handshake
        // timeout.
        if !buf[0].is_ascii_uppercase() {
            return Ok(None);
        }
    }
}

/// The head's lines, without the final empty one.
fn head_lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .trim_end_matches("\r\n")
        .split("\r\n")
        .map(str::to_owned)
        .collect()
}

/// Accepts connections on `listener`, each handled on its own thread, until
/// `stop(shared)` is set (checked when the next connection arrives: a proxy
/// stopping connects once to wake it). Shared by both fault proxies.
pub fn accept_loop<S, H>(
    listener: TcpListener,
    shared: Arc<S>,
    stop: fn(&S) -> &AtomicBool,
    handle: H,
) -> JoinHandle<()>
where
    S: Send + Sync + 'static,
    H: Fn(TcpStream, &S) + Clone + Send + 'static,
{
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop(&shared).load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let (sh, handle) = (shared.clone(), handle.clone());
            std::thread::spawn(move || handle(conn, &sh));
        }
    })
}

/// `lines` (a request or response head) without the hop-by-hop headers,
/// with `Connection: close`. Shared with the registry fault proxy.
pub fn with_connection_close<S: AsRef<str>>(lines: &[S]) -> Vec<u8> {
    let mut hop = vec![
        "connection".to_string(),
        "keep-alive".into(),
        "proxy-connection".into(),
    ];
    for l in &lines[1..] {
        if let Some((k, v)) = l.as_ref().split_once(':') {
            if k.trim().eq_ignore_ascii_case("connection") {
                hop.extend(v.split(',').map(|t| t.trim().to_ascii_lowercase()));
            }
        }
    }
    let mut out = format!("{}\r\n", lines[0].as_ref());
    for l in &lines[1..] {
        let l = l.as_ref();
        let name = l
            .split_once(':')
            .map(|(k, _)| k.trim().to_ascii_lowercase());
        if name.is_some_and(|n| hop.contains(&n)) {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// The `Content-Length` of a request or response head, if any.
pub fn content_length<S: AsRef<str>>(lines: &[S]) -> Option<u64> {
    lines[1..].iter().find_map(|l| {
        let (k, v) = l.as_ref().split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// Holds `client` open, sending nothing, until it closes its side or the
/// proxy is dropped.
fn hold(client: &mut TcpStream, sh: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while !sh.stop.load(Ordering::SeqCst) {
        match client.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Resets the connection: SO_LINGER 0, then close.
fn reset(mut client: TcpStream) {
    // Let what was written reach the peer first (a reset discards what is
    // still queued).
    let _ = client.flush();
    std::thread::sleep(Duration::from_millis(20));
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
}

fn handle(mut client: TcpStream, upstream: SocketAddr, sh: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    client.set_nodelay(true)?;
    let Some((head, rest)) = read_head(&mut client)? else {
        return Ok(());
    };
    let lines = head_lines(&head);
    let mut first = lines[0].split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("");
    // Absolute form (a client that takes this for a forward proxy).
    let target = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    let fault = sh.take_fault(&method, &path);
    let entry = sh.record(&path, &fault);
    match &fault {
        Some(HttpFault::Status(code)) => {
            let body = format!("{code} {} (injected by the test proxy)\n", reason(*code));
            let mut r = format!(
                "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
                reason(*code),
                body.len()
            );
            if *code == 429 || *code == 503 {
                r.push_str("Retry-After: 1\r\n");
            }
            r.push_str("Connection: close\r\n\r\n");
            if method != "HEAD" {
                r.push_str(&body);
            }
            sh.set_status(entry, *code);
            client.write_all(r.as_bytes())?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Write);
            // Wait for the client's close, so that ours is no reset.
            hold(&mut client, sh);
            return Ok(());
        }
        Some(HttpFault::StallBeforeHead) => {
            hold(&mut client, sh);
            return Ok(());
        }
        Some(HttpFault::DelayHead(d)) => sh.sleep(*d),
        _ => {}
    }
    if sh.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut up = match TcpStream::connect_timeout(&upstream, Duration::from_secs(10)) {
        Ok(up) => up,
        Err(e) => {
            sh.set_status(entry, 502);
            let _ = client.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Err(e);
        }
    };
    sh.forwarded.fetch_add(1, Ordering::SeqCst);
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.set_write_timeout(Some(IO_TIMEOUT))?;
    up.set_nodelay(true)?;
    up.write_all(&with_connection_close(&lines))?;
    // A request body (none for GET and HEAD): what came with the head, then
    // as much as Content-Length says.
    up.write_all(&rest)?;
    if let Some(len) = content_length(&lines) {
        let want = len.saturating_sub(rest.len() as u64);
        std::io::copy(&mut (&client).take(want), &mut up)?;
    }
    // The response head (interim 1xx heads are dropped: the request was
    // sent whole, so `100 Continue` means nothing to the client).
    let (resp_lines, mut body) = loop {
        let Some((h, rest)) = read_head(&mut up)? else {
            sh.set_status(entry, 0);
            return Ok(()); // the upstream closed: so does the client connection
        };
        let l = head_lines(&h);
        let status: u16 = l[0]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) {
            continue;
        }
        sh.set_status(entry, status);
        break (l, rest);
    };
    client.write_all(&with_connection_close(&resp_lines))?;
    client.flush()?;
    if method == "HEAD" {
        let _ = client.shutdown(Shutdown::Write);
        return Ok(());
    }
    let declared = content_length(&resp_lines);
    // The byte offset before which the body is cut, for a reset or a close.
    let cut_at = |n: u64| declared.map_or(n, |len| n.min(len.saturating_sub(1)));
    let cut = match &fault {
        Some(HttpFault::StallAfterHead) => {
            drop(up);
            hold(&mut client, sh);
            return Ok(());
        }
        Some(HttpFault::Reset { after }) => Some(cut_at(*after)),
        Some(HttpFault::Truncate { keep }) => Some(cut_at(*keep)),
        _ => None,
    };
    let flip = match &fault {
        Some(HttpFault::FlipBit { at }) => {
            Some(declared.map_or(*at, |len| (*at).min(len.saturating_sub(1))))
        }
        _ => None,
    };
    let mut delay = match &fault {
        Some(HttpFault::DelayBody { after, delay }) => Some((*after, *delay)),
        _ => None,
    };
    let trickle = match &fault {
        Some(HttpFault::Trickle { bytes, every }) => Some(((*bytes).max(1), *every)),
        _ => None,
    };
    let mut pos = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if body.is_empty() {
            let n = up.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(at) = flip {
            if (pos..pos + body.len() as u64).contains(&at) {
                body[(at - pos) as usize] ^= 1 << (at % 8);
            }
        }
        // How much of `body` to send now.
        let mut take = body.len();
        if let Some(c) = cut {
            take = take.min(c.saturating_sub(pos) as usize);
        }
        if let Some((after, _)) = delay {
            if after >= pos && after < pos + body.len() as u64 {
                take = take.min((after - pos) as usize);
            }
        }
        if let Some((bytes, _)) = trickle {
            take = take.min(bytes);
        }
        if let Some((_, every)) = trickle {
            sh.sleep(every);
            if sh.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
        client.write_all(&body[..take])?;
        client.flush()?;
        body.drain(..take);
        pos += take as u64;
        if cut.is_some_and(|c| pos >= c) {
            drop(up);
            if matches!(fault, Some(HttpFault::Reset { .. })) {
                reset(client);
            } else {
                let _ = client.shutdown(Shutdown::Write);
                hold(&mut client, sh);
            }
            return Ok(());
        }
        if let Some((after, d)) = delay {
            if pos == after {
                sh.sleep(d);
                delay = None;
            }
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
