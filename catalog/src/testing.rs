//! Test support for every crate of the workspace (feature `testing`): the
//! backend conformance suite, a bare `/images` record ([`image_record`]),
//! and a real S3-protocol server on 127.0.0.1.
//!
//! The server is moto's (`moto_server`, from PyPI `moto[server]`): it speaks
//! enough of S3 for the backend (create-only `If-None-Match: *` and
//! conditional `If-Match` PUTs, multipart uploads, ListObjectsV2, bulk
//! delete) and serves anonymous GETs of a bucket with a public-read policy,
//! as a real bucket would. `.ci/run` installs it in a virtualenv under
//! [`MOTO_VENV`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::location::{S3Location, S3Options};

/// An `/images` record of `name` for `platform` (`os/arch[/variant]`)
/// whose manifest digest is `digest` (a hex digit) 64 times and whose flat
/// path is `/flat/<digest>`; every other member empty.
pub fn image_record(name: &str, platform: &str, digest: char) -> crate::catalog::ImageRecord {
    let hex = digest.to_string().repeat(64);
    crate::catalog::ImageRecord {
        name: name.into(),
        manifest_digest: crate::Sha256Digest::from_hex(&hex)
            .unwrap_or_else(|e| panic!("image_record: {e}")),
        config_digest: crate::Sha256Digest([0; 32]),
        platform: platform.into(),
        source: String::new(),
        published_at: 0,
        flat_path: format!("/flat/{digest}"),
        flat_catalog: String::new(),
        manifest: Vec::new(),
        config: Vec::new(),
        layers: Vec::new(),
        outputs: Vec::new(),
        prefetch: None,
    }
}

/// The behaviour every backend must show: the local directory and the S3
/// backend both run it, each on an empty repository.
pub fn conformance(b: &dyn Backend) {
    crate::backend::tests::conformance(b);
    // Paths outside data/, as the writer's own files are.
    assert_eq!(b.get(".stratum/none").unwrap(), None);
    b.replace(".stratum/new", b"n1").unwrap();
    assert_eq!(b.get(".stratum/new").unwrap().unwrap(), b"n1");
    b.replace(".stratum/new", b"n2").unwrap();
    assert_eq!(b.get(".stratum/new").unwrap().unwrap(), b"n2");
    assert!(b.put_if_absent(".stratum/public.pem", b"k").unwrap());
    assert!(!b.put_if_absent(".stratum/public.pem", b"k2").unwrap());
    assert!(b.exists(".stratum/public.pem").unwrap());
    b.delete(".stratum/new").unwrap();
    assert!(!b.exists(".stratum/new").unwrap());
    // A listing of nothing, and of a nested prefix.
    assert!(b.list("nothing/").unwrap().is_empty());
    assert!(b.put_if_absent("data/12/3456", b"q").unwrap());
    assert_eq!(b.list("data/12").unwrap(), vec!["data/12/3456"]);
    assert_eq!(b.stat("data/12/3456").unwrap().unwrap().0, 1);
    // A streamed object larger than any single-request limit of a backend
    // (the S3 backend switches to a multipart upload above 16 MiB).
    let big: Vec<u8> = (0..(17u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(b
        .put_reader_if_absent("data/bb/big", &mut &big[..])
        .unwrap());
    assert!(!b
        .put_reader_if_absent("data/bb/big", &mut &b"other"[..])
        .unwrap());
    let got = b.get("data/bb/big").unwrap().unwrap();
    assert!(got == big, "large object came back different");
    assert_eq!(b.stat("data/bb/big").unwrap().unwrap().0, big.len() as u64);
    // An empty object is an object.
    assert!(b
        .put_reader_if_absent("data/00/empty", &mut &b""[..])
        .unwrap());
    assert_eq!(b.get("data/00/empty").unwrap().unwrap(), b"");
    for bad in ["", "data//x", "data/./x", "data/../../x", "/abs"] {
        assert!(b.put_if_absent(bad, b"x").is_err(), "{bad:?}");
    }
}

/// Where `.ci/run` installs moto.
pub const MOTO_VENV: &str = "/opt/stratum-moto";

/// Set to `1` (as `.ci/run` does) to fail instead of skipping when no S3
/// test server is installed.
pub const REQUIRE_ENV: &str = "STRATUM_REQUIRE_S3";

/// The `moto_server` program: `$STRATUM_MOTO_SERVER`, else on `PATH`, else
/// in [`MOTO_VENV`].
pub fn moto_server_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATUM_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from(MOTO_VENV).join("bin/moto_server");
        p.is_file().then_some(p)
    })
}

/// A running moto S3 server on 127.0.0.1 with one bucket; killed on drop.
pub struct S3TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    _log: tempfile::NamedTempFile,
}

/// Access key id and secret of the test server (moto accepts any).
pub const TEST_ACCESS_KEY: &str = "stratum-test";
pub const TEST_SECRET_KEY: &str = "stratum-test-secret";

impl S3TestServer {
    /// Starts moto on a free port and creates `bucket`. `None`, after a
    /// `SKIP:` line on stderr, when moto is not installed (a failure instead
    /// when `STRATUM_REQUIRE_S3=1`).
    pub fn start(bucket: &str) -> Option<S3TestServer> {
        let Some(program) = moto_server_program() else {
            let why = format!(
                "no S3 test server: `moto_server` is not on PATH nor in {MOTO_VENV} \
                 (install it as .ci/run does: python3 -m venv {MOTO_VENV} && \
                 {MOTO_VENV}/bin/pip install 'moto[server]')"
            );
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{why}; {REQUIRE_ENV}=1 requires it");
            }
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{why}; under CI every test must run");
            }
            eprintln!(
                "SKIP: {}: {why}",
                std::thread::current().name().unwrap_or("<test>")
            );
            return None;
        };
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&program, bucket) {
                Ok(s) => return Some(s),
                Err(e) => last = e,
            }
        }
        panic!("cannot start {}: {last}", program.display());
    }

    fn try_start(program: &std::path::Path, bucket: &str) -> Result<S3TestServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().map_err(|e| e.to_string())?)
            .stderr(log.reopen().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut server = S3TestServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = server.child.try_wait() {
                let out = std::fs::read_to_string(server._log.path()).unwrap_or_default();
                return Err(format!("moto_server exited ({st}):\n{out}"));
            }
            if server.request("GET", "/", b"").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err("moto_server did not answer within 60s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, body) = server.request("PUT", &format!("/{bucket}"), b"")?;
        if status != 200 {
            return Err(format!("creating bucket {bucket}: HTTP {status}: {body}"));
        }
        Ok(server)
    }

    /// One plain HTTP/1.1 request to the server: (status, body).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| s.write_all(body))
        .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&resp);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad response: {text}"))?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_owned()))
    }

    /// Lets anyone GET the objects under `prefix` (a bucket policy), as a
    /// bucket served to nodes over plain HTTP is configured.
    pub fn allow_anonymous_reads(&self, prefix: &str) {
        let resource = if prefix.is_empty() {
            format!("arn:aws:s3:::{}/*", self.bucket)
        } else {
            format!(
                "arn:aws:s3:::{}/{}/*",
                self.bucket,
                prefix.trim_matches('/')
            )
        };
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                "Action": "s3:GetObject", "Resource": resource,
            }]
        });
        let (status, body) = self
            .request(
                "PUT",
                &format!("/{}?policy", self.bucket),
                policy.to_string().as_bytes(),
            )
            .unwrap();
        assert!(
            status < 300,
            "setting the bucket policy: HTTP {status}: {body}"
        );
    }

    /// Options reaching this server with its test credentials.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(TEST_ACCESS_KEY.into()),
            secret_access_key: Some(TEST_SECRET_KEY.into()),
            session_token: None,
        }
    }

    /// The same as environment variables, for a `stratum` child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY.into()),
        ]
    }

    pub fn location(&self, prefix: &str) -> S3Location {
        S3Location {
            bucket: self.bucket.clone(),
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        self.location(prefix).to_string()
    }

    /// The plain-HTTP URL of `prefix`, as nodes read it.
    pub fn http_url(&self, prefix: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint,
            self.bucket,
            prefix.trim_matches('/')
        )
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_dir_full_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::backend::LocalDir::open(dir.path()).unwrap();
        super::conformance(&b);
    }
}
