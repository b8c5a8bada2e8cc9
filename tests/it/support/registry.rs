//! Real OCI registries for end-to-end tests of the `docker://` source:
//!
//! - [`Registry`]: Debian's `docker-registry` (the reference distribution
//!   registry v2, 2.8.x) as a child process on a free port of 127.0.0.1, with
//!   filesystem storage, its configuration and every file it writes in a temp
//!   dir; plain HTTP without auth ([`Registry::start_plain`]) or TLS (a test CA
//!   made with `openssl`) plus htpasswd basic auth
//!   ([`Registry::start_tls_auth`]). Killed and deleted when dropped.
//! - [`push_oci`] / [`push_multiarch`]: `skopeo copy` from an OCI layout into
//!   a registry (digests preserved), and [`build_multiarch`], a multi-arch
//!   image index in an OCI layout (hand-built with [`super::oci`], so it needs
//!   neither root nor umoci).
//! - [`FaultProxy`]: a small HTTP/1.1 reverse proxy in front of a plain
//!   registry that answers chosen requests with 429/503 + `Retry-After`,
//!   cuts responses short or drops connections, then forwards faithfully.
//!
//! What `docker-registry` 2.8 does (checked by `tests/it/registry_support.rs`):
//! - Every request is written to **stdout** as an Apache combined log line
//!   (`127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 345 "" "skopeo/1.9.3"`),
//!   401s included; [`Registry::requests`] parses that. The JSON application log
//!   on stderr has `"msg":"response completed"` with `http.request.method`,
//!   `http.request.uri` and `http.response.status`, but **not** for requests
//!   refused by auth (only a warning), so it is kept for diagnostics only
//!   ([`Registry::app_log`]).
//! - A manifest or index stored as OCI is answered only when `Accept` names
//!   its media type (no conversion): otherwise `404 MANIFEST_UNKNOWN` ("OCI
//!   manifest found, but accept header does not support OCI manifests", "OCI
//!   index found, but accept header does not support OCI indexes"), also for
//!   the Docker media types; [`ACCEPT_MANIFESTS`] names all four.
//! - Blobs are served straight from `storage/docker/registry/v2/blobs/sha256/
//!   ab/<hex>/data` with `Content-Length` from the file and the *requested*
//!   `Docker-Content-Digest`, never re-verified: a blob corrupted on disk is
//!   served corrupted ([`Registry::corrupt_blob`]). Ranges give 206.
//! - Upload `Location`s are absolute URLs built from the request's `Host`, so
//!   a proxy that forwards `Host` unchanged keeps pushes working. Blob GETs
//!   are answered directly (200/206), never redirected (filesystem storage).
//! - With TLS it also speaks HTTP/2 (ALPN). Basic-auth refusals are `401`
//!   with `WWW-Authenticate: Basic realm="stratum-test"`; the access log
//!   shows them, and skopeo always sends one anonymous `GET /v2/` first.
//! - skopeo (containers/image) tries HTTPS first even with
//!   `--tls-verify=false`, then falls back to HTTP; [`FaultProxy`] closes
//!   non-HTTP connections at once so that this costs no handshake timeout.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fault_http::{accept_loop, content_length, with_connection_close};
use super::fsutil::Rng;
use super::oci::{digest_of, Layer, Layout, TarEntry, MT_MANIFEST, REF_NAME};
use super::services::free_port;
use super::{require_tool, run_cmd, skip, tool, Output};

mod fault_proxy;
mod multiarch;

pub use fault_proxy::*;
pub use multiarch::*;

/// How long the registry may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The User-Agent of the readiness probe; [`Registry::requests`] hides it.
const PROBE_UA: &str = "stratum-test-probe";
/// OCI image index media type.
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest media type, for an `Accept` header.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

// ---------------------------------------------------------------------------
// Tools

/// The `docker-registry` binary (Debian package `docker-registry`), if installed.
pub fn registry_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/docker-registry");
    if p.is_file() {
        return Some(p);
    }
    super::which("docker-registry")
}

/// True when `docker-registry` and `skopeo` are installed; otherwise prints
/// a SKIP line and returns false.
pub fn require_registry() -> bool {
    if registry_bin().is_none() {
        skip("`docker-registry` is not installed (Debian package docker-registry, see .ci/run)");
        return false;
    }
    require_tool("skopeo")
}

/// [`require_registry`] plus what [`Registry::start_tls_auth`] needs:
/// `htpasswd` (apache2-utils) and `openssl`.
pub fn require_tls_registry() -> bool {
    if !require_registry() {
        return false;
    }
    if super::which("htpasswd").is_none() {
        skip("`htpasswd` is not installed (Debian package apache2-utils, see .ci/run)");
        return false;
    }
    require_tool("openssl")
}

// ---------------------------------------------------------------------------
// Endpoints: what skopeo talks to

/// Something skopeo can push to and pull from: a [`Registry`] or a
/// [`FaultProxy`] in front of one.
pub trait Endpoint {
    /// `127.0.0.1:PORT`.
    fn host(&self) -> String;
    /// skopeo's TLS and credential flags for this endpoint; `prefix` is
    /// `"--src-"`, `"--dest-"` or `"--"` (for `skopeo inspect`).
    fn skopeo_flags(&self, prefix: &str) -> Vec<String>;
    /// `docker://HOST/REFERENCE` (`REFERENCE` is `repo:tag` or `repo@digest`).
    fn docker_ref(&self, reference: &str) -> String {
        format!("docker://{}/{reference}", self.host())
    }
}

// ---------------------------------------------------------------------------
// The registry

/// TLS material and credentials of a [`Registry::start_tls_auth`] registry.
struct TlsAuth {
    ca: PathBuf,
    cert_dir: PathBuf,
    user: String,
    password: String,
}

/// A running `docker-registry`; killed (and its storage deleted) when dropped.
pub struct Registry {
    child: Option<Child>,
    tmp: tempfile::TempDir,
    port: u16,
    tls: Option<TlsAuth>,
    access_log: PathBuf,
    #[allow(dead_code)] // read by Registry::app_log, for debugging a failing test
    app_log: PathBuf,
    /// Byte offset in the access log where [`Registry::requests`] starts.
    log_from: Mutex<u64>,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AccessLine {
    method: String,
    uri: String,
    status: u16,
    user_agent: String,
}

impl Registry {
    /// A registry on plain HTTP without authentication.
    pub fn start_plain() -> Registry {
        Registry::start(None)
    }

    /// A registry on HTTPS (certificate for `IP:127.0.0.1` and `DNS:localhost`
    /// signed by a CA generated in the temp dir, see [`Registry::ca_file`])
    /// that requires HTTP basic auth as `user`/`password` (bcrypt htpasswd).
    pub fn start_tls_auth(user: &str, password: &str) -> Registry {
        Registry::start(Some((user, password)))
    }

    fn start(tls_auth: Option<(&str, &str)>) -> Registry {
        let bin = registry_bin()
            .expect("docker-registry is not installed (check require_registry() first)");
        let tmp = super::tempdir();
        let dir = tmp.path().to_path_buf();
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let tls = tls_auth.map(|(user, password)| {
            let tls_dir = dir.join("tls");
            make_tls(&tls_dir);
            let htpasswd = tool("htpasswd", ["-Bbn", user, password]).stdout;
            std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
            // skopeo's --cert-dir: every *.crt is a CA; a *.key without its
            // *.cert is an error, so only the CA goes there.
            let cert_dir = dir.join("certs.d");
            std::fs::create_dir_all(&cert_dir).unwrap();
            std::fs::copy(tls_dir.join("ca.crt"), cert_dir.join("ca.crt")).unwrap();
            TlsAuth {
                ca: tls_dir.join("ca.crt"),
                cert_dir,
                user: user.to_string(),
                password: password.to_string(),
            }
        });
        let access_log = dir.join("access.log");
        let app_log = dir.join("registry.log");
        let conf = dir.join("config.yml");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            std::fs::write(&conf, registry_config(&dir, port, tls.is_some())).unwrap();
            // Append mode: the log may be read (and offsets taken) while written.
            let open = |p: &Path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap()
            };
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&conf)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(open(&access_log))
                .stderr(open(&app_log));
            // REGISTRY_* variables override the configuration file.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            match wait_ready(&mut child, port, tls.is_some(), &app_log) {
                Ok(()) => {
                    let reg = Registry {
                        child: Some(child),
                        tmp,
                        port,
                        tls,
                        access_log,
                        app_log,
                        log_from: Mutex::new(0),
                    };
                    reg.forget_requests();
                    return reg;
                }
                Err(e) => {
                    // Perhaps the port was taken meanwhile: try another.
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!(
                        "{e}\n--- registry log ---\n{}",
                        std::fs::read_to_string(&app_log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// [`Registry::url`] + `path` (which starts with `/`).
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// The CA certificate (PEM) that signed the server certificate (TLS only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.ca.clone())
    }

    /// A directory holding only `ca.crt`, for skopeo's `--cert-dir` (TLS only).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.cert_dir.clone())
    }

    /// `(user, password)` (TLS + auth only).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.tls
            .as_ref()
            .map(|t| (t.user.as_str(), t.password.as_str()))
    }

    /// The temp dir holding the configuration, logs, TLS files and storage.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The filesystem storage root (`rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.tmp.path().join("storage")
    }

    /// The file holding blob `digest` (`sha256:<hex>` or just `<hex>`):
    /// `STORAGE/docker/registry/v2/blobs/sha256/<ab>/<hex>/data`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        assert_eq!(hex.len(), 64, "not a sha256 digest: {digest}");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips one byte in the middle of blob `digest` on disk (same size): the
    /// registry keeps serving it, with the original `Docker-Content-Digest`.
    pub fn corrupt_blob(&self, digest: &str) {
        let p = self.blob_path(digest);
        let mut bytes =
            std::fs::read(&p).unwrap_or_else(|e| panic!("read blob {}: {e}", p.display()));
        assert!(!bytes.is_empty(), "blob {digest} is empty");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }

    /// Everything the registry wrote on stderr (its JSON application log).
    #[allow(dead_code)] // for debugging a failing test
    pub fn app_log(&self) -> String {
        std::fs::read_to_string(&self.app_log).unwrap_or_default()
    }

    /// Waits until the access log stops growing (100 ms without a new line,
    /// at most 3 s). The registry writes a request's line just before the
    /// last bytes of its response leave, so this is only a safety margin.
    fn settle_log(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut len = file_len(&self.access_log);
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let l = file_len(&self.access_log);
            if l != len {
                len = l;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(100) {
                return;
            }
        }
    }

    fn access_lines(&self) -> Vec<AccessLine> {
        self.settle_log();
        let from = *self.log_from.lock().unwrap();
        let mut f = File::open(&self.access_log).unwrap();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        let bytes = bytes.get(from as usize..).unwrap_or_default();
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(parse_access_line)
            .filter(|l| l.user_agent != PROBE_UA)
            .collect()
    }

    /// Every request the registry answered since it started (or since
    /// [`Registry::forget_requests`]), in order: `(method, uri, status)`,
    /// `uri` as sent (path and query).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.access_lines()
            .into_iter()
            .map(|l| (l.method, l.uri, l.status))
            .collect()
    }

    /// Forgets the requests logged so far: later [`Registry::requests`] calls
    /// start after them.
    pub fn forget_requests(&self) {
        self.settle_log();
        *self.log_from.lock().unwrap() = file_len(&self.access_log);
    }

    /// How many `method` requests had `uri_part` in their URI.
    pub fn count_requests(&self, method: &str, uri_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, u, _)| m == method && u.contains(uri_part))
            .count()
    }

    /// How many `GET /v2/<name>/blobs/sha256:…` requests the registry
    /// answered (any status; HEADs and uploads are not counted).
    pub fn blob_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(m, u, _)| m == "GET" && is_blob_uri(u))
            .count()
    }

    /// How many `GET /v2/<name>/manifests/<ref>` requests it answered.
    pub fn manifest_gets(&self) -> usize {
        self.count_requests("GET", "/manifests/")
    }
}

impl Endpoint for Registry {
    fn host(&self) -> String {
        Registry::host(self)
    }
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        match &self.tls {
            None => vec![format!("{prefix}tls-verify=false")],
            Some(t) => vec![
                format!("{prefix}cert-dir"),
                t.cert_dir.to_str().expect("utf-8 temp path").to_string(),
                format!("{prefix}creds"),
                format!("{}:{}", t.user, t.password),
            ],
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // One Go process: SIGKILL leaves nothing behind; the TempDir then
        // removes storage, logs and keys.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// True for `/v2/<name>/blobs/<algo>:<hex>` (not `/blobs/uploads/…`).
fn is_blob_uri(uri: &str) -> bool {
    uri.starts_with("/v2/") && uri.contains("/blobs/sha256:")
}

/// Parses `HOST - USER [DATE] "METHOD URI PROTO" STATUS SIZE "REFERER" "UA"`.
fn parse_access_line(line: &str) -> Option<AccessLine> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    let request = &line[start..start + len];
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    let rest = &line[start + len + 1..];
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let user_agent = rest
        .trim_end()
        .strip_suffix('"')
        .and_then(|r| r.rfind('"').map(|i| r[i + 1..].to_string()))
        .unwrap_or_default();
    Some(AccessLine {
        method,
        uri,
        status,
        user_agent,
    })
}

/// Waits until the registry answers HTTP on `port`. It must have logged
/// `listening on 127.0.0.1:PORT` (so the port is its own, not another
/// server's that took the port meanwhile), then: plain, `GET /v2/` must give
/// 200 or 401; TLS, the server must answer a plain-text request (Go's TLS
/// server replies `400 … HTTP request to an HTTPS server`), which proves that
/// it serves, without a TLS client here.
fn wait_ready(child: &mut Child, port: u16, tls: bool, app_log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let listening = format!("listening on 127.0.0.1:{port}");
    let mut last = String::new();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Err(format!("docker-registry exited with {st}"));
        }
        let bound = std::fs::read_to_string(app_log).is_ok_and(|l| l.contains(&listening));
        if let Some(line) = bound.then(|| probe(port)).flatten() {
            let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            let ok = if tls {
                status.is_some()
            } else {
                matches!(status, Some(200 | 401))
            };
            if ok {
                return Ok(());
            }
            last = line;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "docker-registry did not answer within {START_TIMEOUT:?} (last answer: {last:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a plain-text `GET /v2/` to 127.0.0.1:`port` and returns the first
/// line of the answer, if any.
fn probe(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {PROBE_UA}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let first = text.lines().next()?.to_string();
    first.starts_with("HTTP/").then_some(first)
}

/// A YAML (JSON-quoted) string.
fn q(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("utf-8 temp path")).unwrap()
}

/// The registry configuration: everything under `dir`, access log on stdout,
/// JSON application log on stderr, no caches (so that a blob changed on disk
/// is served as it is now), no upload purging.
fn registry_config(dir: &Path, port: u16, tls_auth: bool) -> String {
    let mut c = format!(
        r#"# generated by tests/it/support/registry.rs
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
  secret: stratum-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
"#,
        storage = q(&dir.join("storage")),
    );
    if tls_auth {
        c.push_str(&format!(
            r#"  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: stratum-test
    path: {htpasswd}
"#,
            cert = q(&dir.join("tls/server.crt")),
            key = q(&dir.join("tls/server.key")),
            htpasswd = q(&dir.join("htpasswd")),
        ));
    }
    c
}

/// A test CA and a server certificate for `IP:127.0.0.1`, `DNS:localhost`
/// (P-256 keys), in `dir`: `ca.crt`, `ca.key`, `server.crt`, `server.key`.
fn make_tls(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        "[req]\n\
         distinguished_name = dn\n\
         prompt = no\n\
         [dn]\n\
         CN = stratum test CA\n\
         [v3_ca]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [v3_server]\n\
         basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let p = |name: &str| {
        dir.join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_string()
    };
    let (cnf, ca_key, ca_crt) = (p("openssl.cnf"), p("ca.key"), p("ca.crt"));
    let (key, csr, crt) = (p("server.key"), p("server.csr"), p("server.crt"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let run = |parts: &[&[&str]]| {
        tool("openssl", parts.concat());
    };
    run(&[
        &["req", "-x509", "-config", &cnf],
        &ec,
        &["-extensions", "v3_ca", "-days", "3650"],
        &["-keyout", &ca_key, "-out", &ca_crt],
    ]);
    run(&[
        &["req", "-new", "-config", &cnf],
        &ec,
        &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
    ]);
    run(&[
        &[
            "x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key,
        ],
        &["-set_serial", "2", "-days", "3650", "-extfile", &cnf],
        &["-extensions", "v3_server", "-out", &crt],
    ]);
}

// ---------------------------------------------------------------------------
// skopeo

/// `skopeo --insecure-policy ARGS…`, whatever the outcome.
pub fn skopeo_raw<S: AsRef<str>>(args: &[S]) -> Output {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy")
        .args(args.iter().map(|a| a.as_ref()));
    run_cmd(cmd)
}

/// Pushes `oci:LAYOUT:TAG` to `docker://HOST/DEST_REF` (`repo:tag`) with
/// `skopeo copy --preserve-digests` (and `--all` when the tag is an image
/// index); returns the pushed manifest (or index) digest, which is the
/// layout's.
pub fn push_oci(layout_dir: &Path, tag: &str, dest_ref: &str, reg: &impl Endpoint) -> String {
    let layout = Layout::open(layout_dir);
    let is_index = layout.descriptor(tag)["mediaType"] == MT_INDEX;
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let mut args: Vec<String> = vec!["copy".into(), "--quiet".into(), "--preserve-digests".into()];
    if is_index {
        args.push("--all".into());
    }
    args.extend(reg.skopeo_flags("--dest-"));
    args.push("--digestfile".into());
    args.push(digest_file.path().to_str().unwrap().into());
    args.push(format!("oci:{}:{tag}", layout_dir.display()));
    args.push(reg.docker_ref(dest_ref));
    skopeo_raw(&args).assert_success();
    let digest = std::fs::read_to_string(digest_file.path()).unwrap();
    let digest = digest.trim().to_string();
    assert_eq!(
        digest,
        layout.descriptor(tag)["digest"].as_str().unwrap(),
        "skopeo --preserve-digests pushed another digest"
    );
    digest
}

/// Pushes a [`MultiArch`] image (index and every platform manifest) to
/// `docker://HOST/DEST_REF`; returns the index digest.
pub fn push_multiarch(ma: &MultiArch, dest_ref: &str, reg: &impl Endpoint) -> String {
    push_oci(&ma.layout, &ma.tag, dest_ref, reg)
}

/// `skopeo inspect --raw docker://HOST/REFERENCE` with the endpoint's flags.
pub fn inspect_raw_output(reg: &impl Endpoint, reference: &str) -> Output {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_flags("--"));
    args.push(reg.docker_ref(reference));
    skopeo_raw(&args)
}

/// The raw manifest (or index) bytes of `reference`, asserting success.
pub fn inspect_raw(reg: &impl Endpoint, reference: &str) -> Vec<u8> {
    inspect_raw_output(reg, reference).assert_success().stdout
}
