//! Long-running services for end-to-end tests, each a real child process
//! owned by a guard that kills it when dropped (also when the test panics):
//!
//! - [`StratumServe`]: `stratum serve REPO --listen 127.0.0.1:0`, its URL read
//!   from the `listening on http://…` line it prints, and its access log
//!   ([`StratumServe::access_log`]).
//! - [`Nginx`]: the Debian `nginx` serving a repository directory unchanged,
//!   from a generated configuration whose every path is inside a temp dir.
//!
//! And two small HTTP helpers: [`http_client`] (blocking reqwest, no proxy)
//! and [`raw_get`], which sends a request path exactly as given (reqwest
//! normalizes `..` away before sending, which is no use for traversal tests).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stratum_bin;

/// How long a service may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits for `child` with a deadline; `None` when it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects a child's output stream in the background.
fn collect(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

// ---------------------------------------------------------------------------
// stratum serve

/// A running `stratum serve`; killed (SIGKILL) when dropped.
pub struct StratumServe {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl StratumServe {
    /// `stratum serve REPO --listen 127.0.0.1:0 EXTRA…`, waiting for its
    /// `listening on http://ADDR` line. `RUST_LOG` is set to show the access
    /// log (see [`StratumServe::stderr`]).
    pub fn start<S: AsRef<OsStr>>(repo: &Path, extra: &[S]) -> StratumServe {
        let mut cmd = Command::new(stratum_bin());
        cmd.arg("serve")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "stratum::serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cmdline = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut guard = StratumServe {
            child: Some(child),
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => panic!(
                "{cmdline} printed no `listening on` line within {START_TIMEOUT:?}\n--- stderr ---\n{}",
                guard.stderr()
            ),
        };
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from {cmdline}: {line:?}"));
        guard.addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no http://ADDR in {line:?}"));
        assert_ne!(guard.addr.port(), 0, "the actual port must be printed");
        guard.url = url.to_string();
        guard
    }

    /// The server's process id.
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().expect("server already stopped"))
    }

    /// `URL` + `path` (which starts with `/`).
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The requests logged so far (`stratum::serve::access` lines), in order.
    pub fn access_log(&self) -> Vec<Served> {
        let log = strip_ansi(&self.stderr());
        let mut out = Vec::new();
        for line in log.lines().filter(|l| l.contains("stratum::serve::access")) {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .map(str::to_string)
            };
            let (Some(path), Some(status), Some(bytes)) =
                (field("path"), field("status"), field("bytes"))
            else {
                panic!("unexpected access log line of stratum serve: {line:?}");
            };
            out.push(Served {
                version: field("version"),
                path,
                status: status.parse().unwrap(),
                bytes: bytes.parse().unwrap(),
            });
        }
        out
    }

    /// [`StratumServe::access_log`] once it stops growing (a line is written
    /// when a response body is dropped, just after the client has it).
    pub fn settled_access_log(&self) -> Vec<Served> {
        let mut last = self.access_log().len();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.access_log();
            if now.len() == last {
                return now;
            }
            last = now.len();
        }
    }

    /// Sends `signal` and waits up to `timeout` for the server to exit.
    pub fn stop(&mut self, signal: rustix::process::Signal, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal)
            .expect("signal the server");
        match wait_timeout(&mut child, timeout) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stratum serve did not exit within {timeout:?} of {signal:?}\n--- stderr ---\n{}",
                    self.stderr()
                )
            }
        }
    }
}

/// One request in the access log of `stratum serve`.
#[derive(Clone, Debug)]
pub struct Served {
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: Option<String>,
    pub path: String,
    pub status: u16,
    #[allow(dead_code)] // shown in failure messages (Debug)
    pub bytes: u64,
}

/// Removes ANSI colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for StratumServe {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// nginx

/// The Debian nginx binary, when installed.
pub fn nginx_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/sbin/nginx");
    if p.is_file() {
        return Some(p);
    }
    super::which("nginx")
}

/// A free TCP port on 127.0.0.1 (bound, then released: another process may
/// take it in between, so callers retry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The minimal nginx configuration that serves repository `root` like
/// `stratum serve`: no writer files, immutable objects, no-cache manifest.
/// Every path nginx writes is under `prefix`.
pub fn nginx_config(prefix: &Path, root: &Path, port: u16) -> String {
    let p = prefix.display();
    let r = root.display();
    format!(
        r#"# generated by tests/it/support/services.rs
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {r};
        autoindex off;
        location / {{ return 404; }}
        location ~ /\. {{ return 404; }}
        location /data/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location = /.stratum/manifest {{ add_header Cache-Control "no-cache"; }}
        location = /.stratum/public.pem {{ add_header Cache-Control "no-cache"; }}
    }}
}}
"#
    )
}

/// A running nginx serving a directory; killed when dropped.
pub struct Nginx {
    child: Option<Child>,
    pub url: String,
    /// Holds nginx's files until the guard is dropped.
    _prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1 serving `root` with
    /// [`nginx_config`], waiting until it accepts connections.
    pub fn start(bin: &Path, root: &Path) -> Nginx {
        let prefix = super::tempdir();
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = prefix.path().join("nginx.conf");
            std::fs::write(&conf, nginx_config(prefix.path(), root, port)).unwrap();
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(prefix.path())
                .arg("-e")
                .arg(prefix.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let stderr = collect(child.stderr.take().unwrap());
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        child: Some(child),
                        url: format!("http://127.0.0.1:{port}"),
                        _prefix: prefix,
                    };
                }
                if let Some(st) = child.try_wait().unwrap() {
                    last_err = format!(
                        "nginx exited with {st}\n--- stderr ---\n{}\n--- error.log ---\n{}",
                        String::from_utf8_lossy(&stderr.lock().unwrap()),
                        std::fs::read_to_string(prefix.path().join("error.log"))
                            .unwrap_or_default()
                    );
                    break; // perhaps the port was taken meanwhile: try another
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nginx did not accept connections within {START_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start: {last_err}");
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `master_process off`: one process, nothing is left behind by SIGKILL.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers

/// A blocking HTTP client that ignores proxy variables and never redirects.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build HTTP client")
}

/// Sends `METHOD PATH HTTP/1.1` with the path exactly as given and returns
/// the status code and the whole raw response.
pub fn raw_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in response to {path:?}: {text:?}"));
    (code, text)
}

/// [`raw_request`] with `GET`, returning only the status.
pub fn raw_get(addr: SocketAddr, path: &str) -> u16 {
    raw_request(addr, "GET", path).0
}
