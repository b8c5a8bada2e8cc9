//! [`FaultProxy`]: an HTTP/1.1 reverse proxy in front of a plain registry
//! that answers chosen requests with 429/503 + `Retry-After`, cuts
//! responses short or drops connections, then forwards faithfully.

use super::*;
use crate::support::fault_http::{find, read_head};

/// What the [`FaultProxy`] does to a request chosen for a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `code` itself (a registry-style JSON error body, `Retry-After:
    /// <secs>` when given) without contacting the registry.
    Status { code: u16, retry_after: Option<u64> },
    /// Forward, but close the connection after the response head and
    /// `body_bytes` bytes of its body.
    Truncate { body_bytes: u64 },
    /// Close the connection without answering.
    Close,
    /// Forward the response head and `body_bytes` bytes of its body, then
    /// send nothing more, keeping the connection open (for [`STALL_MAX`] or
    /// until the proxy is dropped): a download that hangs mid-blob.
    Stall { body_bytes: u64 },
}

/// How long a [`Fault::Stall`] holds its connection at most.
pub const STALL_MAX: Duration = Duration::from_secs(60);

/// One request the proxy handled.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    pub method: String,
    /// Path and query, as sent.
    #[allow(dead_code)] // shown in failure messages (Debug)
    pub uri: String,
    /// The status the client got (0 when it got none).
    pub status: u16,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

struct FaultRule {
    remaining: usize,
    path_contains: Option<String>,
    fault: Fault,
}

#[derive(Default)]
struct ProxyShared {
    stop: AtomicBool,
    rules: Mutex<Vec<FaultRule>>,
    faults: AtomicUsize,
    forwarded: AtomicUsize,
    log: Mutex<Vec<ProxiedRequest>>,
}

impl ProxyShared {
    /// The fault for this request, if a rule with requests left matches it.
    fn take_fault(&self, uri: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            r.remaining > 0 && r.path_contains.as_deref().is_none_or(|p| uri.contains(p))
        })?;
        rule.remaining -= 1;
        Some(rule.fault.clone())
    }

    fn record(&self, method: &str, uri: &str, status: u16, fault: Option<Fault>) {
        if fault.is_some() {
            self.faults.fetch_add(1, Ordering::SeqCst);
        }
        self.log.lock().unwrap().push(ProxiedRequest {
            method: method.into(),
            uri: uri.into(),
            status,
            fault,
        });
    }
}

/// A thread-per-connection HTTP/1.1 reverse proxy on 127.0.0.1 in front of a
/// plain registry. One request per connection: it forwards the request with
/// `Connection: close` (the `Host` header unchanged, so the registry's
/// absolute upload `Location`s point back at the proxy), then copies the
/// response bytes verbatim until the registry closes (any framing, any
/// size), and closes the client connection. Any method is forwarded, request
/// bodies are streamed. Rules added with [`FaultProxy::inject`] pick requests
/// for faults first. Stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

/// Socket read/write timeout inside the proxy (a stuck test must not hang
/// proxy threads forever).
const PROXY_IO_TIMEOUT: Duration = Duration::from_secs(60);

impl FaultProxy {
    /// A proxy in front of `upstream`, which must be a plain-HTTP registry.
    pub fn start(upstream: &Registry) -> FaultProxy {
        assert!(
            !upstream.is_tls(),
            "FaultProxy speaks plain HTTP: put it in front of Registry::start_plain()"
        );
        FaultProxy::start_to(SocketAddr::from(([127, 0, 0, 1], upstream.port())))
    }

    /// A proxy in front of any plain HTTP/1.1 server at `upstream`.
    pub fn start_to(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared::default());
        let accept = accept_loop(
            listener,
            shared.clone(),
            |sh| &sh.stop,
            move |conn, sh| {
                let _ = proxy_connection(conn, upstream, sh);
            },
        );
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next `count` requests whose path (with query) contains
    /// `path_contains` (any request when `None`) get `fault`. Rules are
    /// checked in the order they were added; the first with requests left
    /// that matches applies.
    pub fn inject(&self, count: usize, path_contains: Option<&str>, fault: Fault) {
        self.shared.rules.lock().unwrap().push(FaultRule {
            remaining: count,
            path_contains: path_contains.map(Into::into),
            fault,
        });
    }

    /// The next `count` requests get `status` with `Retry-After: 1`.
    #[allow(dead_code)] // part of the fault API, like inject
    pub fn fail_next(&self, count: usize, status: u16) {
        self.inject(
            count,
            None,
            Fault::Status {
                code: status,
                retry_after: Some(1),
            },
        );
    }

    /// The next `count` requests whose path contains `path_contains` (e.g.
    /// `"/blobs/"`, `"/manifests/"`) get `status` with `Retry-After: 1`.
    pub fn fail_next_matching(&self, count: usize, path_contains: &str, status: u16) {
        self.inject(
            count,
            Some(path_contains),
            Fault::Status {
                code: status,
                retry_after: Some(1),
            },
        );
    }

    /// Drops every rule (and the requests they had left).
    #[allow(dead_code)] // part of the fault API, like inject
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Requests that got a fault (a [`Fault::Status`] answer, a truncated
    /// response or a dropped connection).
    pub fn faults(&self) -> usize {
        self.shared.faults.load(Ordering::SeqCst)
    }

    /// Requests passed on to the registry (truncated ones included).
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Every request handled so far, in the order their answers started. An
    /// entry is recorded before the client gets the response head.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Endpoint for FaultProxy {
    fn host(&self) -> String {
        FaultProxy::host(self)
    }
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        vec![format!("{prefix}tls-verify=false")]
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// The registry-style JSON error response for an injected status.
fn fault_response(code: u16, retry_after: Option<u64>, head_only: bool) -> Vec<u8> {
    let err_code = match code {
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        401 => "UNAUTHORIZED",
        404 => "NOT_FOUND",
        _ => "UNKNOWN",
    };
    let body = serde_json::to_vec(&json!({"errors": [{
        "code": err_code,
        "message": format!("{} (injected by the stratum test FaultProxy)", reason(code)),
    }]}))
    .unwrap();
    let mut r = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    if let Some(s) = retry_after {
        r.push_str(&format!("Retry-After: {s}\r\n"));
    }
    r.push_str(&format!(
        "Content-Type: application/json; charset=utf-8\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut r = r.into_bytes();
    if !head_only {
        r.extend_from_slice(&body);
    }
    r
}

fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    sh: &ProxyShared,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(PROXY_IO_TIMEOUT))?;
    client.set_write_timeout(Some(PROXY_IO_TIMEOUT))?;
    client.set_nodelay(true)?;
    let Some((head, rest)) = read_head(&mut client)? else {
        return Ok(());
    };
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let lines: Vec<&str> = head_text.trim_end_matches("\r\n").split("\r\n").collect();
    let mut first = lines[0].split(' ');
    let method = first.next().unwrap_or("").to_string();
    let uri = first.next().unwrap_or("").to_string();
    let fault = sh.take_fault(&uri);
    match fault {
        Some(Fault::Status { code, retry_after }) => {
            sh.record(&method, &uri, code, fault.clone());
            client.write_all(&fault_response(code, retry_after, method == "HEAD"))?;
            // Read a small request body, if any, so that closing does not
            // reset the connection under the answer.
            if let Some(len) = content_length(&lines).filter(|&l| l <= 16 << 20) {
                let want = len.saturating_sub(rest.len() as u64);
                let _ = std::io::copy(&mut (&client).take(want), &mut std::io::sink());
            }
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Close) => {
            sh.record(&method, &uri, 0, fault);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let mut up = match TcpStream::connect_timeout(&upstream, Duration::from_secs(10)) {
        Ok(up) => up,
        Err(e) => {
            sh.record(&method, &uri, 502, None);
            let _ = client.write_all(&fault_response(502, None, method == "HEAD"));
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    up.set_read_timeout(Some(PROXY_IO_TIMEOUT))?;
    up.set_write_timeout(Some(PROXY_IO_TIMEOUT))?;
    up.set_nodelay(true)?;
    up.write_all(&with_connection_close(&lines))?;
    up.write_all(&rest)?;
    // The rest of a request body, streamed until the client closes (which
    // it does once it has the response and sees `Connection: close`, or
    // when this side shuts the client socket down).
    let mut from_client = client.try_clone()?;
    let mut to_up = up.try_clone()?;
    let body_pump = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_up);
    });
    let (truncate, stall) = match &fault {
        Some(Fault::Truncate { body_bytes }) => (Some(*body_bytes), false),
        Some(Fault::Stall { body_bytes }) => (Some(*body_bytes), true),
        _ => (None, false),
    };
    let res = forward_response(&mut up, &mut client, truncate, |status| {
        sh.forwarded.fetch_add(1, Ordering::SeqCst);
        sh.record(&method, &uri, status, fault.clone());
    });
    if stall {
        let until = Instant::now() + STALL_MAX;
        while !sh.stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = body_pump.join();
    res
}

/// Copies the response from `up` to `client`: interim 1xx heads, the final
/// head (calling `on_status` before sending it), then the body verbatim
/// until `up` closes, or only its first `limit` bytes.
fn forward_response(
    up: &mut TcpStream,
    client: &mut TcpStream,
    limit: Option<u64>,
    on_status: impl FnOnce(u16),
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = up.read(&mut chunk)?;
            if n == 0 {
                // Closed before a whole head: pass on what there is.
                on_status(0);
                client.write_all(&buf)?;
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let status: u16 = String::from_utf8_lossy(&buf[..end])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            client.write_all(&buf[..end])?;
            buf.drain(..end);
            continue;
        }
        on_status(status);
        client.write_all(&buf[..end])?;
        buf.drain(..end);
        break;
    }
    let mut left = limit.unwrap_or(u64::MAX);
    let first = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    client.write_all(&buf[..first])?;
    left -= first as u64;
    while left > 0 {
        let n = up.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        let m = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        client.write_all(&chunk[..m])?;
        left -= m as u64;
    }
    client.flush()
}
