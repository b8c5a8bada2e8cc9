//! Test harness shared by the workspace-level end-to-end tests (`tests/it/*.rs`).
//!
//! Like ripgrep's `tests/it/util.rs`: helpers that run the real `stratum` binary
//! (`CARGO_BIN_EXE_stratum`) and show its stderr when something fails, a
//! throw-away repository ([`TestRepo`]), skip helpers for tools and privileges
//! that a machine may lack, and the submodules:
//!
//! - [`fsutil`]: small file-system helpers (xattrs, devices, owners, mtimes).
//! - [`compare`]: the oracle comparer [`compare::compare_trees`] and its self-tests.
//! - [`oci`]: an OCI image-layout writer and a raw tar builder, for hand-built
//!   (and hostile) images with correct digests.
//! - [`umoci`]: an image builder over the real `umoci` and `skopeo` tools.
//! - [`fixtures`]: the generated trees and fixture images used by `tests/it/oracle.rs`.
//! - [`registry`]: real OCI registries (Debian's `docker-registry`, plain or
//!   TLS + basic auth), skopeo pushes, multi-arch image indexes and a
//!   fault-injecting proxy, for the `docker://` source.
//! - [`small`]: small hand-built images with known bytes (no external tools).
//! - [`squid`]: Debian's `squid` as a caching proxy on 127.0.0.1, with its
//!   access log.
//! - [`fault_http`]: a fault-injecting HTTP/1.1 reverse proxy (delays,
//!   resets, truncations, bit flips, statuses, stalls) for the node side.
//! - [`prom`]: the Prometheus text format of `--metrics` endpoints, parsed.
//! - [`reference`]: a minimal per-layer tree extractor for the harness's own
//!   self-test of the overlayfs comparison.
//!
//! Every test file includes this module with `mod support;` and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(clippy::unwrap_used)]

pub mod compare;
pub mod containerd;
pub mod cri;
pub mod fault_http;
pub mod fixtures;
pub mod fsutil;
pub mod mount;
pub mod oci;
pub mod prom;
pub mod reference;
pub mod registry;
pub mod services;
pub mod small;
pub mod squid;
pub mod umoci;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `stratum` binary that cargo built for these tests.
pub fn stratum_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stratum")
}

/// What one command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout parsed as JSON; panics with the whole output when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print JSON on stdout ({e})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.cmdline,
                self.stdout_str(),
                self.stderr_str()
            )
        })
    }
    fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }
    /// Panics (showing stdout and stderr) unless the command succeeded.
    pub fn assert_success(self) -> Self {
        if !self.success() {
            panic!("command failed: {}", self.describe());
        }
        self
    }
    /// Panics unless the command failed *cleanly*: non-zero exit, not killed by a
    /// signal, no Rust panic (exit code 101 or "panicked" on stderr), and a
    /// non-empty message on stderr.
    pub fn assert_clean_failure(self) -> Self {
        if self.success() {
            panic!("command unexpectedly succeeded: {}", self.describe());
        }
        self.assert_no_panic();
        if self.status.code().is_none() {
            panic!("command was killed by a signal: {}", self.describe());
        }
        if self.stderr_str().trim().is_empty() {
            panic!(
                "command failed without a message on stderr: {}",
                self.describe()
            );
        }
        self
    }
    /// Like [`Output::assert_clean_failure`], but the message may be on
    /// stdout or stderr (for reports such as `check`, whose findings are data).
    pub fn assert_clean_failure_with_report(self) -> Self {
        if self.success() {
            panic!("command unexpectedly succeeded: {}", self.describe());
        }
        self.assert_no_panic();
        if self.status.code().is_none() {
            panic!("command was killed by a signal: {}", self.describe());
        }
        if self.stderr_str().trim().is_empty() && self.stdout_str().trim().is_empty() {
            panic!("command failed without saying why: {}", self.describe());
        }
        self
    }
    /// Panics if the process panicked (whether or not it failed).
    pub fn assert_no_panic(&self) {
        let err = self.stderr_str();
        if err.contains("panicked") || self.status.code() == Some(101) {
            panic!("command panicked: {}", self.describe());
        }
    }
}

/// How long one command may run before the harness kills it and fails the
/// test (a hung publish, e.g. a lock that is never released, must not hang CI).
/// Override with `STRATUM_TEST_TIMEOUT` (seconds).
fn command_timeout() -> Duration {
    let secs = std::env::var("STRATUM_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// Runs any program with no stdin, capturing stdout and stderr, killing it
/// after [`command_timeout`].
pub fn run_cmd(mut cmd: Command) -> Output {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + command_timeout();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "{cmdline} did not finish within {:?}; killed\n--- stderr ---\n{}",
                command_timeout(),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        cmdline,
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Runs `stratum ARGS…` and returns what it did, whatever the exit status.
pub fn stratum_raw<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(stratum_bin());
    cmd.args(args)
        // No colours and no progress bars in captured output.
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    run_cmd(cmd)
}

/// Runs `stratum ARGS…` and asserts success (stderr is shown on failure).
pub fn stratum<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    stratum_raw(args).assert_success()
}

/// Runs `stratum ARGS…` and asserts a clean failure (non-zero, message, no panic).
pub fn stratum_fails<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    stratum_raw(args).assert_clean_failure()
}

/// Runs an external tool and asserts success.
pub fn tool<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_cmd(cmd).assert_success()
}

// ---------------------------------------------------------------------------
// Skipping

/// Name of the running test: libtest names each test's thread after the test,
/// under `cargo test` and under nextest alike.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unknown test>")
        .to_string()
}

/// Prints `SKIP: <test>: <why>` on stderr and records it for the summary
/// that `scripts/test.sh` prints at the end of the run (libtest swallows the
/// output of passing tests). Under CI (`CI` set and not `false`/`0`) a skip
/// is a failure instead: `.ci/run` installs everything, so CI runs every
/// test. Use as `return skip("…")`.
pub fn skip(why: &str) {
    let line = format!("SKIP: {}: {why}", test_name());
    if under_ci() {
        panic!("{line}; under CI every test must run (scripts/test.sh installs what they need)");
    }
    eprintln!("{line}");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stratum-skipped.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write as _;
        // One write of one line: appends from parallel tests do not interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// True under CI: `CI` set to anything but empty, `false` or `0`.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// True when `program` is on PATH; otherwise prints a SKIP line and returns false.
pub fn require_tool(program: &str) -> bool {
    if which(program).is_some() {
        return true;
    }
    skip(&format!("`{program}` is not installed (see .ci/run)"));
    false
}

/// Full path of `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True when running as root; otherwise prints a SKIP line and returns false.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    skip("needs root (devices, owners, overlayfs, umoci unpack without --rootless)");
    false
}

/// Everything the oracle tests need: root, umoci, and optionally skopeo.
pub fn require_oracle_tools(need_skopeo: bool) -> bool {
    require_root() && require_tool("umoci") && (!need_skopeo || require_tool("skopeo"))
}

// ---------------------------------------------------------------------------
// A throw-away repository

/// A temporary directory holding a signing key and an initialised repository.
pub struct TestRepo {
    pub tmp: tempfile::TempDir,
    /// The repository directory (`REPO`).
    pub repo: PathBuf,
    /// The private key file (`KEYFILE`; the public key is `KEYFILE.pub`).
    pub key: PathBuf,
    /// The repository name given to `init --name`.
    pub name: String,
}

impl TestRepo {
    /// `stratum keygen` + `stratum init REPO --key KEY --name NAME`.
    pub fn new(name: &str) -> TestRepo {
        let tmp = tempdir();
        let key = tmp.path().join("keys").join("test.key");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        stratum([OsStr::new("keygen"), key.as_os_str()]);
        let repo = tmp.path().join("repo");
        stratum([
            OsStr::new("init"),
            repo.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ]);
        TestRepo {
            tmp,
            repo,
            key,
            name: name.to_string(),
        }
    }

    /// A fresh, not yet existing path inside this repository's temp dir.
    pub fn scratch(&self, what: &str) -> PathBuf {
        let base = self.tmp.path().join("scratch");
        std::fs::create_dir_all(&base).unwrap();
        let mut n = 0;
        loop {
            let p = base.join(format!("{what}-{n}"));
            if !p.exists() {
                return p;
            }
            n += 1;
        }
    }

    pub fn publish_args(&self, sources: &[&str], as_name: Option<&str>) -> Vec<String> {
        let mut args = vec!["publish".to_string()];
        args.extend(sources.iter().map(|s| s.to_string()));
        args.push("--repo".into());
        args.push(self.repo.to_str().expect("utf-8 temp path").into());
        args.push("--key".into());
        args.push(self.key.to_str().expect("utf-8 temp path").into());
        if let Some(n) = as_name {
            args.push("--as".into());
            args.push(n.into());
        }
        args.push("--json".into());
        args
    }

    /// `stratum publish SOURCES… --repo --key [--as NAME] --json`, asserting
    /// success; returns the JSON array of per-image reports.
    pub fn publish(&self, sources: &[&str], as_name: Option<&str>) -> Vec<Value> {
        let out = stratum(self.publish_args(sources, as_name));
        match out.json() {
            Value::Array(v) => {
                assert_eq!(
                    v.len(),
                    sources.len(),
                    "publish --json must report one object per image: {v:?}"
                );
                v
            }
            other => panic!("publish --json must print an array, got {other}"),
        }
    }

    /// Publishes one source and returns its report object.
    pub fn publish_one(&self, source: &str, as_name: Option<&str>) -> Value {
        self.publish(&[source], as_name).remove(0)
    }

    /// `stratum publish …` without asserting anything.
    pub fn publish_raw(&self, sources: &[&str], as_name: Option<&str>) -> Output {
        stratum_raw(self.publish_args(sources, as_name))
    }

    /// `stratum images REPO --json` (an array).
    pub fn images(&self) -> Value {
        let v = stratum([
            OsStr::new("images"),
            self.repo.as_os_str(),
            OsStr::new("--json"),
        ])
        .json();
        assert!(v.is_array(), "images --json must print an array, got {v}");
        v
    }

    /// The `images --json` object whose `name` is `name`.
    pub fn image(&self, name: &str) -> Value {
        let all = self.images();
        all.as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("image {name} not in `images --json`: {all:#}"))
    }

    /// `stratum info REPO --json`.
    pub fn info(&self) -> Value {
        stratum([
            OsStr::new("info"),
            self.repo.as_os_str(),
            OsStr::new("--json"),
        ])
        .json()
    }

    pub fn revision(&self) -> u64 {
        let info = self.info();
        info["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("info --json has no integer revision: {info}"))
    }

    /// `stratum check REPO` without asserting.
    pub fn check_raw(&self) -> Output {
        stratum_raw([OsStr::new("check"), self.repo.as_os_str()])
    }

    /// `stratum check REPO`, asserting success.
    pub fn check(&self) {
        self.check_raw().assert_success();
    }

    /// `stratum pull REPO --image NAME DEST`.
    pub fn pull_image(&self, name: &str, dest: &Path) {
        stratum([
            OsStr::new("pull"),
            self.repo.as_os_str(),
            OsStr::new("--image"),
            OsStr::new(name),
            dest.as_os_str(),
        ]);
    }

    /// `stratum pull REPO --path PATH DEST`.
    pub fn pull_path(&self, path: &str, dest: &Path) {
        stratum([
            OsStr::new("pull"),
            self.repo.as_os_str(),
            OsStr::new("--path"),
            OsStr::new(path),
            dest.as_os_str(),
        ]);
    }

    /// The signed manifest file, the only mutable file of a repository.
    pub fn manifest_path(&self) -> PathBuf {
        self.repo.join(".stratum").join("manifest")
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        std::fs::read(self.manifest_path()).expect("read REPO/.stratum/manifest")
    }

    /// Every regular file under `REPO/data`.
    pub fn data_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(self.repo.join("data"))
            .into_iter()
            .map(|e| e.expect("walk REPO/data"))
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        v.sort();
        v
    }
}

/// A temp dir under `$STRATUM_TEST_TMPDIR` or the system temp dir. It must be
/// on a file system with user xattrs, devices and hardlinks (ext4, xfs, btrfs,
/// tmpfs all do) and, for the overlayfs tests, usable as an overlay lower dir.
/// With `STRATUM_TEST_KEEP=1` it is kept (and named on stderr) for debugging.
pub fn tempdir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("stratum-test-");
    let mut t = match std::env::var_os("STRATUM_TEST_TMPDIR") {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .expect("create temp dir");
    if std::env::var_os("STRATUM_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
        t.disable_cleanup(true);
        eprintln!("{}: keeping {}", test_name(), t.path().display());
    }
    t
}

/// `sha256:<hex>` → `<hex>` (asserting the prefix and the length).
pub fn digest_hex(digest: &str) -> &str {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    assert_eq!(hex.len(), 64, "bad digest {digest}");
    hex
}

/// Checks the `images --json` contract for one image object and returns its
/// layer paths.
pub fn check_image_object(img: &Value, expected_layers: usize) -> Vec<String> {
    let digest = img["manifest_digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest_digest in {img}"));
    let hex = digest_hex(digest);
    assert_eq!(
        img["flat_path"].as_str(),
        Some(format!("/flat/{}/{}", &hex[..2], hex).as_str()),
        "flat_path of {img}"
    );
    let layers: Vec<String> = img["layer_paths"]
        .as_array()
        .unwrap_or_else(|| panic!("no layer_paths array in {img}"))
        .iter()
        .map(|l| l.as_str().expect("layer path string").to_string())
        .collect();
    assert_eq!(layers.len(), expected_layers, "layer_paths of {img}");
    for l in &layers {
        let rest = l
            .strip_prefix("/layers/")
            .unwrap_or_else(|| panic!("layer path {l} not under /layers/"));
        let (ab, hex) = rest.split_once('/').expect("/layers/ab/<hex>");
        assert_eq!(hex.len(), 64, "layer path {l}");
        assert_eq!(ab, &hex[..2], "layer path {l}");
    }
    layers
}

/// Asserts that `dir` (which must exist) holds nothing but the names in `allowed`.
pub fn assert_dir_holds_only(dir: &Path, allowed: &[&str]) {
    let mut extra = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        if !allowed.iter().any(|a| OsStr::new(a) == name) {
            extra.push(name);
        }
    }
    assert!(
        extra.is_empty(),
        "{} holds unexpected entries {extra:?} (something was written outside DEST?)",
        dir.display()
    );
}
