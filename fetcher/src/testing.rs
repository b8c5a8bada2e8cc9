//! A tiny static HTTP/1.1 server for tests, on 127.0.0.1 only: GET (and
//! HEAD, logged as `HEAD path`) of the files of a directory with
//! Content-Length and keep-alive, plus faults on
//! demand (wrong bytes, 503s, truncated bodies, delays, replaced files). It
//! also answers proxy-style requests (`GET http://host/path`), so it can
//! stand in for a forward proxy. For this crate's tests and the workspace's
//! (the `testing` feature); never part of a node's binary.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct State {
    root: Mutex<PathBuf>,
    /// Bodies served instead of the files at these paths (no leading `/`).
    overrides: Mutex<HashMap<String, Vec<u8>>>,
    /// Flip one byte of every body under `data/`.
    pub corrupt: AtomicBool,
    /// Answer the next n requests with 503.
    pub fail_next: AtomicU32,
    /// Send only half the body (with the full Content-Length) of the next n
    /// requests under `data/`, then close.
    pub truncate_next: AtomicU32,
    /// Sleep this long before answering a request under `data/`.
    pub delay_ms: AtomicU64,
    /// Every request's path, in arrival order.
    log: Mutex<Vec<String>>,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// `HEAD` requests answered (the response written), which a test can
    /// wait for where the log only says they were asked.
    pub heads_answered: AtomicU64,
}

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl Server {
    /// Serves `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        *state.root.lock().unwrap() = root.to_owned();
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Server { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_root(&self, root: &Path) {
        *self.state.root.lock().unwrap() = root.to_owned();
    }

    pub fn set_override(&self, path: &str, body: Vec<u8>) {
        self.state
            .overrides
            .lock()
            .unwrap()
            .insert(path.to_owned(), body);
    }

    /// The paths requested so far.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    pub fn requests_for(&self, needle: &str) -> usize {
        self.log().iter().filter(|p| p.contains(needle)).count()
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

/// An address where nothing listens (connection refused).
pub fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A server that accepts connections and never answers; each connection is
/// dropped after `hold`.
pub fn black_hole(hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                std::thread::sleep(hold);
                drop(conn);
            });
        }
    });
    format!("http://{addr}")
}

fn serve(conn: TcpStream, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            headers.push(h);
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let mut target = parts.next().unwrap_or("/").to_owned();
        // Proxy form: GET http://host[:port]/path
        if let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            target = rest.find('/').map_or("/".into(), |i| rest[i..].to_owned());
        }
        let path = target
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_owned();
        if method == "HEAD" {
            // Logged apart from the GETs (which tests match by path alone).
            st.log.lock().unwrap().push(format!("HEAD {path}"));
            match read_file(&st.root.lock().unwrap(), &path) {
                Some(body) => respond(&mut out, 200, b"", Some(body.len()))?,
                None => respond(&mut out, 404, b"", None)?,
            }
            st.heads_answered.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        st.log.lock().unwrap().push(path.clone());
        if method != "GET" {
            respond(&mut out, 405, b"", None)?;
            continue;
        }
        if take(&st.fail_next) {
            respond(&mut out, 503, b"try later", None)?;
            continue;
        }
        let is_data = path.starts_with("data/");
        if is_data {
            let d = st.delay_ms.load(Ordering::Relaxed);
            if d > 0 {
                std::thread::sleep(Duration::from_millis(d));
            }
        }
        let body = match st.overrides.lock().unwrap().get(&path) {
            Some(b) => Some(b.clone()),
            None => read_file(&st.root.lock().unwrap(), &path),
        };
        let Some(mut body) = body else {
            respond(&mut out, 404, b"not found", None)?;
            continue;
        };
        if is_data && st.corrupt.load(Ordering::Relaxed) && !body.is_empty() {
            let i = body.len() / 2;
            body[i] ^= 0x55;
        }
        if is_data && take(&st.truncate_next) {
            let half = body.len() / 2;
            respond(&mut out, 200, &body[..half], Some(body.len()))?;
            return Ok(()); // close mid-body
        }
        respond(&mut out, 200, &body, None)?;
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

fn read_file(root: &Path, rel: &str) -> Option<Vec<u8>> {
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = root.join(rel);
    if !p.is_file() {
        return None;
    }
    let mut v = Vec::new();
    std::fs::File::open(p).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    body: &[u8],
    declared: Option<usize>,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Other",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        declared.unwrap_or(body.len())
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
