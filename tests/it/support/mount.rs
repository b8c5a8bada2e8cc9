//! FUSE mounts for end-to-end tests: `stratum mount …` as a child process
//! owned by a guard ([`Mount`]) that never leaves a mount behind, and an
//! overlayfs guard ([`OverlayMount`]).
//!
//! - [`MountSource`] says what `stratum mount` reads: a repository directory
//!   ([`MountSource::dir`]) or a URL ([`MountSource::url`], which also keeps
//!   whatever serves it alive for as long as a mount uses it). Test bodies
//!   take a source, so each transport is one more call of the same body.
//! - [`Mount::start`] spawns `stratum mount SOURCE MOUNTPOINT [--image …]
//!   [--pubkey …]` with stdout and stderr going to files, and waits until the
//!   mount point shows up in `/proc/self/mountinfo` (panicking with the
//!   child's stderr if it exits first or takes too long).
//! - Dropping a [`Mount`] (also while a test panics) runs `stratum umount`,
//!   waits for the child (killing it after a timeout) and, if the mount is
//!   somehow still there, detaches it with `umount -l`. [`Mount::unmount`]
//!   does the same but asserts that each step went right.
//! - [`require_fuse`] is the skip helper for machines without `/dev/fuse`.

use std::any::Any;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{run_cmd, skip, stratum_bin};

/// How long `stratum mount` may take until the mount is live.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the mount process may take to exit once unmounted.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stratum umount` (or `umount`) may take.
const UMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Skipping

/// True when FUSE is usable (`/dev/fuse` opens read-write); otherwise prints
/// a SKIP line and returns false.
pub fn require_fuse() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => true,
        Err(e) => {
            skip(&format!(
                "needs FUSE: cannot open /dev/fuse ({e}); load the fuse module or run with --device /dev/fuse"
            ));
            false
        }
    }
}

// ---------------------------------------------------------------------------
// /proc/self/mountinfo

/// Undoes the octal escapes (`\040` for a space, …) of a mountinfo field.
pub fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// The file system types mounted at `path` (exactly that path, as given:
/// pass a canonical path), bottom first, from `/proc/self/mountinfo`.
/// Empty when nothing is mounted there.
pub fn mounts_at(path: &Path) -> Vec<String> {
    let info = match std::fs::read("/proc/self/mountinfo") {
        Ok(b) => b,
        Err(e) => panic!("cannot read /proc/self/mountinfo: {e}"),
    };
    let want = path.as_os_str().as_bytes();
    let mut out = Vec::new();
    for line in info.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        // id parent major:minor root MOUNTPOINT options [optional…] - FSTYPE source super
        if fields.len() < 7 || unescape_mountinfo(fields[4]) != want {
            continue;
        }
        let fstype = fields
            .iter()
            .position(|f| *f == b"-")
            .and_then(|i| fields.get(i + 1))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        out.push(fstype);
    }
    out
}

/// True when anything is mounted at `path` (a canonical path).
pub fn is_mounted(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

// ---------------------------------------------------------------------------
// Processes with deadlines

/// Waits for `child` with a deadline; `None` when it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            // Not ours to wait for any more: treat as gone.
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion within `timeout` without panicking (for `Drop`).
/// Returns a description of what went wrong, if anything.
fn run_quietly(mut cmd: Command, timeout: Duration) -> Result<(), String> {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmdline}: {e}"))?;
    match wait_timeout(&mut child, timeout) {
        Some(st) if st.success() => Ok(()),
        Some(st) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            Err(format!("{cmdline} exited with {st}: {}", err.trim()))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{cmdline} did not finish within {timeout:?}; killed"
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// The source of a mount

/// What `stratum mount` reads from. Cheap to clone; clones share whatever
/// keeps the source alive (e.g. a running server).
#[derive(Clone)]
pub struct MountSource {
    /// The SOURCE argument: a repository directory or a URL.
    pub arg: OsString,
    /// Passed as `--pubkey` when set.
    pub pubkey: Option<PathBuf>,
    /// Dropped only after every mount using this source is unmounted.
    _keep_alive: Option<Arc<dyn Any>>,
}

impl MountSource {
    /// A repository directory, verified with `pubkey` if given (else with the
    /// repository's own copy of its key).
    pub fn dir(repo: &Path, pubkey: Option<&Path>) -> MountSource {
        MountSource {
            arg: repo.as_os_str().to_owned(),
            pubkey: pubkey.map(Path::to_path_buf),
            _keep_alive: None,
        }
    }

    /// A URL, verified with `pubkey`; `server` (e.g. a `StratumServe` guard)
    /// lives until the last mount of this source has been unmounted.
    pub fn url(url: &str, pubkey: &Path, server: impl Any) -> MountSource {
        MountSource {
            arg: url.into(),
            pubkey: Some(pubkey.to_path_buf()),
            _keep_alive: Some(Arc::new(server)),
        }
    }
}

// ---------------------------------------------------------------------------
// The mount guard

/// A running `stratum mount`; unmounted (and the process reaped) on drop.
pub struct Mount {
    /// The canonical mount point.
    pub mountpoint: PathBuf,
    child: Option<Child>,
    cmdline: String,
    /// Holds `stdout` and `stderr` of the mount process.
    logs: tempfile::TempDir,
    /// Kept until after the unmount (fields drop after `Drop::drop`).
    _source: MountSource,
}

impl Mount {
    /// `stratum mount SOURCE MOUNTPOINT [--image IMAGE] [--pubkey KEY]`,
    /// creating MOUNTPOINT if needed; returns once the mount is live.
    pub fn start(source: &MountSource, mountpoint: &Path, image: Option<&str>) -> Mount {
        Mount::start_with(source, mountpoint, image, &[] as &[&str])
    }

    /// [`Mount::start`] with extra arguments.
    pub fn start_with<S: AsRef<OsStr>>(
        source: &MountSource,
        mountpoint: &Path,
        image: Option<&str>,
        extra: &[S],
    ) -> Mount {
        Mount::start_env(source, mountpoint, image, extra, &[])
    }

    /// [`Mount::start_with`] with `envs` set for the mount process (an empty
    /// value removes the variable), e.g. `HTTP_PROXY`.
    pub fn start_env<S: AsRef<OsStr>>(
        source: &MountSource,
        mountpoint: &Path,
        image: Option<&str>,
        extra: &[S],
        envs: &[(&str, &str)],
    ) -> Mount {
        std::fs::create_dir_all(mountpoint)
            .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", mountpoint.display()));
        let mut guard = Mount::spawn(source, mountpoint, image, extra, envs);
        // From here on a panic drops the guard, which cleans up.
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            let types = mounts_at(&guard.mountpoint);
            if let Some(t) = types.last() {
                assert!(
                    t.starts_with("fuse"),
                    "{} is mounted, but as {t:?}, not FUSE\n--- stderr ---\n{}",
                    guard.mountpoint.display(),
                    guard.stderr()
                );
                return guard;
            }
            let child = guard.child.as_mut().expect("child");
            if let Some(st) = child.try_wait().expect("wait for stratum mount") {
                guard.child = None;
                panic!(
                    "{} exited with {st} before the mount was live\n--- stderr ---\n{}",
                    guard.cmdline,
                    guard.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not mount within {MOUNT_TIMEOUT:?}\n--- stderr ---\n{}",
                    guard.cmdline,
                    guard.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `stratum mount …` like [`Mount::start_with`] (without creating
    /// MOUNTPOINT) and expects it to fail cleanly: it must exit non-zero
    /// within [`MOUNT_TIMEOUT`], without a panic, with a message on stderr,
    /// and never mount anything. Returns its stderr.
    pub fn expect_failure<S: AsRef<OsStr>>(
        source: &MountSource,
        mountpoint: &Path,
        image: Option<&str>,
        extra: &[S],
    ) -> String {
        let mut guard = Mount::spawn(source, mountpoint, image, extra, &[]);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let status = loop {
            assert!(
                !is_mounted(&guard.mountpoint),
                "{} mounted, but should have failed\n--- stderr ---\n{}",
                guard.cmdline,
                guard.stderr()
            );
            let child = guard.child.as_mut().expect("child");
            if let Some(st) = child.try_wait().expect("wait for stratum mount") {
                guard.child = None;
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{} neither mounted nor failed within {MOUNT_TIMEOUT:?}\n--- stderr ---\n{}",
                guard.cmdline,
                guard.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = guard.stderr();
        assert!(
            !status.success(),
            "{} exited 0 without mounting\n--- stderr ---\n{err}",
            guard.cmdline
        );
        assert!(
            status.code().is_some_and(|c| c != 101) && !err.contains("panicked"),
            "{} did not fail cleanly ({status})\n--- stderr ---\n{err}",
            guard.cmdline
        );
        assert!(
            !err.trim().is_empty(),
            "{} failed without a message on stderr",
            guard.cmdline
        );
        err
    }

    /// Spawns `stratum mount …` and returns its guard at once.
    fn spawn<S: AsRef<OsStr>>(
        source: &MountSource,
        mountpoint: &Path,
        image: Option<&str>,
        extra: &[S],
        envs: &[(&str, &str)],
    ) -> Mount {
        // Canonical, to match /proc/self/mountinfo (as given if it does not exist).
        let mountpoint =
            std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        assert!(
            !is_mounted(&mountpoint),
            "{} is already a mount point",
            mountpoint.display()
        );
        let logs = super::tempdir();
        let open = |name: &str| {
            let p = logs.path().join(name);
            File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()))
        };
        let mut cmd = Command::new(stratum_bin());
        cmd.arg("mount").arg(&source.arg).arg(&mountpoint);
        if let Some(image) = image {
            cmd.args(["--image", image]);
        }
        if let Some(key) = &source.pubkey {
            cmd.arg("--pubkey").arg(key);
        }
        cmd.args(extra)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(open("stdout"))
            .stderr(open("stderr"));
        for (k, v) in envs {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        Mount {
            mountpoint,
            child: Some(child),
            cmdline,
            logs,
            _source: source.clone(),
        }
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `MOUNTPOINT/rel` (`rel` relative, raw bytes allowed).
    pub fn at(&self, rel: impl AsRef<OsStr>) -> PathBuf {
        let rel = rel.as_ref().as_bytes();
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        self.mountpoint.join(OsStr::from_bytes(rel))
    }

    /// Process id of the mount process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the mount process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(self.logs.path().join("stderr"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `signal` to the mount process and waits up to `timeout` for it to
    /// exit; panics (after killing it) when it does not.
    pub fn signal(&mut self, signal: rustix::process::Signal, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("mount process already gone");
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal)
            .unwrap_or_else(|e| panic!("kill -{signal:?} {}: {e}", child.id()));
        match wait_timeout(&mut child, timeout) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?} of {signal:?}; killed\n--- stderr ---\n{}",
                    self.cmdline,
                    self.stderr()
                )
            }
        }
    }

    /// Sends `signal` to the mount process without waiting.
    pub fn kill(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("mount process already gone");
        rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
            .unwrap_or_else(|e| panic!("kill -{signal:?} {}: {e}", child.id()));
    }

    /// Waits up to `timeout` for the mount process to exit; `None` (and the
    /// process left running) when it does not.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("mount process already gone");
        let st = wait_timeout(child, timeout);
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// `stratum umount MOUNTPOINT`, asserting that it succeeds, that the mount
    /// process then exits 0 within [`EXIT_TIMEOUT`], and that nothing is left
    /// mounted.
    pub fn unmount(mut self) {
        let mut cmd = Command::new(stratum_bin());
        cmd.arg("umount").arg(&self.mountpoint);
        let out = run_cmd(cmd);
        assert!(
            out.success(),
            "stratum umount {} failed: {}\n--- mount stderr ---\n{}",
            self.mountpoint.display(),
            out.stderr_str(),
            self.stderr()
        );
        let mut child = self.child.take().expect("mount process already gone");
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(st) => assert!(
                st.success(),
                "{} exited with {st} after umount\n--- stderr ---\n{}",
                self.cmdline,
                self.stderr()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still ran {EXIT_TIMEOUT:?} after umount; killed\n--- stderr ---\n{}",
                    self.cmdline,
                    self.stderr()
                );
            }
        }
        assert!(
            !is_mounted(&self.mountpoint),
            "{} is still mounted after umount and exit",
            self.mountpoint.display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Never panics while the test is panicking: only collects problems.
        let mut problems = Vec::new();
        if is_mounted(&self.mountpoint) {
            let mut cmd = Command::new(stratum_bin());
            cmd.arg("umount").arg(&self.mountpoint);
            if let Err(e) = run_quietly(cmd, UMOUNT_TIMEOUT) {
                problems.push(e);
            }
        }
        if let Some(mut child) = self.child.take() {
            match wait_timeout(&mut child, EXIT_TIMEOUT) {
                Some(st) if st.success() => {}
                Some(st) => problems.push(format!("{} exited with {st}", self.cmdline)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    problems.push(format!(
                        "{} did not exit within {EXIT_TIMEOUT:?} of umount; killed",
                        self.cmdline
                    ));
                }
            }
        }
        // Whatever happened above, leave nothing mounted (a killed FUSE
        // server leaves a dead mount behind; overlays may sit on top).
        for _ in 0..8 {
            if !is_mounted(&self.mountpoint) {
                break;
            }
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&self.mountpoint);
            if let Err(e) = run_quietly(cmd, UMOUNT_TIMEOUT) {
                problems.push(e);
            }
        }
        if is_mounted(&self.mountpoint) {
            problems.push(format!(
                "LEFT MOUNTED: {} ({:?})",
                self.mountpoint.display(),
                mounts_at(&self.mountpoint)
            ));
        }
        if problems.is_empty() {
            // A failing test shows what its mount said: every error a mount
            // answers (EIO included) is logged there as a warning, and
            // nothing else records which operation failed.
            if std::thread::panicking() {
                eprintln!(
                    "--- stderr of the mount at {} ({}) ---\n{}",
                    self.mountpoint.display(),
                    self.cmdline,
                    self.stderr()
                );
            }
            return;
        }
        let msg = format!(
            "cleaning up the mount at {}:\n  {}\n--- stderr of the mount ---\n{}",
            self.mountpoint.display(),
            problems.join("\n  "),
            self.stderr()
        );
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

// ---------------------------------------------------------------------------
// overlayfs

/// An overlayfs mount, detached on drop (also while a test panics).
pub struct OverlayMount {
    pub mountpoint: PathBuf,
}

impl OverlayMount {
    /// `mount -t overlay overlay -o lowerdir=TOP:…:BASE TARGET`. `Err` carries
    /// the exact message of `mount` when the kernel refuses.
    pub fn mount(lowers_top_first: &[PathBuf], target: &Path) -> Result<OverlayMount, String> {
        std::fs::create_dir_all(target)
            .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", target.display()));
        let target = std::fs::canonicalize(target).unwrap();
        let lower = lowers_top_first
            .iter()
            .map(|p| p.to_str().expect("utf-8 path"))
            .collect::<Vec<_>>()
            .join(":");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={lower}"))
            .arg(&target);
        let cmdline = format!("{cmd:?}");
        let out = run_cmd(cmd);
        if out.success() {
            Ok(OverlayMount { mountpoint: target })
        } else {
            Err(format!(
                "{cmdline} failed ({}): {}",
                out.status,
                out.stderr_str().trim()
            ))
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !is_mounted(&self.mountpoint) {
                return;
            }
            let mut cmd = Command::new("umount");
            cmd.arg(&self.mountpoint);
            if run_quietly(cmd, UMOUNT_TIMEOUT).is_err() {
                let mut cmd = Command::new("umount");
                cmd.arg("-l").arg(&self.mountpoint);
                let _ = run_quietly(cmd, UMOUNT_TIMEOUT);
            }
        }
        if is_mounted(&self.mountpoint) {
            let msg = format!("LEFT MOUNTED: overlay at {}", self.mountpoint.display());
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}
