//! A private containerd and a `stratum snapshotter` for end-to-end tests of
//! the remote snapshotter (tests/it/snapshotter.rs):
//!
//! - [`Snapshotter`]: `stratum snapshotter --address --root --mount` as a
//!   child process, ready once its socket exists; stopped with SIGTERM
//!   (SIGKILL after 10 s) when dropped or [`Snapshotter::stop`]ped.
//! - [`Containerd`]: Debian's `containerd --config FILE` with its `root`,
//!   `state`, gRPC and ttrpc sockets and `opt` directory in a temp dir, the
//!   CRI plugin off, and `[proxy_plugins.stratum]` pointing at a snapshotter
//!   socket; driven with `ctr` ([`Containerd::ctr`], every call bounded by
//!   `timeout`). Dropping it kills the tasks it started (and their shims),
//!   stops containerd and detaches every mount left below its directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mount::unescape_mountinfo;
use super::{require_tool, run_cmd, stratum_bin, Output};

/// How long containerd or the snapshotter may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// containerd, ctr, runc and the runc shim are installed.
pub fn require_containerd() -> bool {
    require_tool("containerd")
        && require_tool("ctr")
        && require_tool("runc")
        && require_tool("containerd-shim-runc-v2")
}

fn wait_for_socket(path: &Path, child: &mut Child, what: &str, log: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what} exited ({st}) before listening\n--- log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < START_TIMEOUT,
            "{what}: no socket {} within {START_TIMEOUT:?}\n--- log ---\n{}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_child(child: &mut Child, grace: Duration) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// stratum snapshotter

/// A running `stratum snapshotter`.
pub struct Snapshotter {
    child: Option<Child>,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub mount: PathBuf,
    log: PathBuf,
}

impl Snapshotter {
    pub fn start(socket: &Path, root: &Path, mount: &Path) -> Snapshotter {
        let log = root.with_extension("log");
        let mut s = Snapshotter {
            child: None,
            socket: socket.to_path_buf(),
            root: root.to_path_buf(),
            mount: mount.to_path_buf(),
            log,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(stratum_bin())
            .arg("snapshotter")
            .arg("--address")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--mount")
            .arg(&self.mount)
            .env("RUST_LOG", "stratum_snapshotter=debug,info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start stratum snapshotter");
        wait_for_socket(&self.socket, &mut child, "stratum snapshotter", &self.log);
        self.child = Some(child);
    }

    /// SIGTERM, then waits: the socket is gone afterwards.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Stops and starts again on the same socket, root and mount.
    pub fn restart(&mut self) {
        self.stop();
        assert!(!self.socket.exists(), "socket left after SIGTERM");
        self.spawn();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// containerd

/// A private containerd.
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    pub address: PathBuf,
}

impl Containerd {
    /// Starts containerd in `dir` with the proxy snapshotter `stratum` at
    /// `snapshotter_socket`, and the CRI plugin pulling into it from
    /// `registry` (HOST:PORT, plain HTTP); waits until `ctr version` answers.
    pub fn start(dir: &Path, snapshotter_socket: &Path, registry: &str) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let address = dir.join("c.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[proxy_plugins.stratum]
  type = "snapshot"
  address = "{snap}"

[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "stratum"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{opt}/cni/bin"
    conf_dir = "{opt}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            address = address.display(),
            opt = dir.join("opt").display(),
            snap = snapshotter_socket.display(),
            registry = registry,
        );
        let config_file = dir.join("config.toml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join("containerd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start containerd");
        wait_for_socket(&address, &mut child, "containerd", &log);
        let c = Containerd {
            child: Some(child),
            dir: dir.to_path_buf(),
            address,
        };
        let t0 = Instant::now();
        while !c.ctr("default", &["version"]).success() {
            assert!(t0.elapsed() < START_TIMEOUT, "containerd does not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS…`, killed after 180 s.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "180", "ctr", "-a"])
            .arg(&self.address)
            .args(["-n", namespace])
            .args(args);
        run_cmd(cmd)
    }

    /// Like [`Containerd::ctr`], asserting success; returns stdout.
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> String {
        let out = self.ctr(namespace, args);
        assert!(
            out.success(),
            "ctr {args:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- containerd log (tail) ---\n{}",
            out.status,
            out.stdout_str(),
            out.stderr_str(),
            self.log_tail()
        );
        out.stdout_str()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills the tasks of every namespace and removes their containers.
    fn kill_tasks(&self) {
        let nss = self
            .ctr("default", &["namespaces", "ls", "-q"])
            .stdout_str();
        for ns in nss.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let tasks = self.ctr(ns, &["tasks", "ls", "-q"]).stdout_str();
            for t in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(ns, &["tasks", "kill", "-a", "-s", "SIGKILL", t]);
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(10)
                    && !self.ctr(ns, &["tasks", "rm", "-f", t]).success()
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let cs = self.ctr(ns, &["containers", "ls", "-q"]).stdout_str();
            for c in cs.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(ns, &["containers", "rm", c]);
            }
        }
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|f| {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(f)))
        })
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill_tasks();
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        for m in mounts_below(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}
