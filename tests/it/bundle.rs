//! `stratum bundle` + the real `runc`: an OCI runtime bundle whose root is
//! the image's flat tree in a live FUSE mount (and, in the pull-based
//! variant, in a `stratum pull` directory) starts the image's process with
//! the image's Env, WorkingDir and User; the generated `config.json` says
//! what `umoci unpack` says about the process and the annotations, except
//! for the differences kept on purpose (docs/DEPLOYMENT.md §"Running an
//! image with runc").
//!
//! The image is hand-built: Debian's static busybox as `/bin/busybox`, an
//! `/etc/passwd` and `/etc/group` with a user in two groups, and a config
//! that sets Env, WorkingDir, Entrypoint, Cmd, User and Labels.
//!
//! Needs root, `/dev/fuse`, runc, umoci and busybox-static; each test skips
//! with a message when one is missing. Every runc call is bounded in time
//! and every container is removed (`runc delete -f`) by a guard.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::services::StratumServe;
use crate::support::{require_root, require_tool, stratum, stratum_fails, tempdir, tool, TestRepo};

const IMAGE: &str = "test/bb:1";
const BUSYBOX: &str = "/bin/busybox";
/// How long one `runc run` may take.
const RUNC_TIMEOUT: Duration = Duration::from_secs(60);
/// What the process runs: its environment, working directory and ids.
const SCRIPT: &str = "env; echo cwd=$(pwd); id -u; id -g; id -G";

fn ready() -> bool {
    require_root()
        && require_fuse()
        && require_tool("runc")
        && require_tool("umoci")
        && (Path::new(BUSYBOX).exists() || {
            crate::support::skip("no /bin/busybox (Debian busybox-static)");
            false
        })
}

/// `KEYFILE.pub` of a test repository.
fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// The busybox image as an OCI layout in `dir`, tagged `1`.
fn build_image(dir: &Path) -> Layout {
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let mut entries = vec![
        TarEntry::dir(b"bin"),
        TarEntry::file(b"bin/busybox", &busybox).mode(0o755),
        TarEntry::dir(b"etc"),
        // /etc/passwd through a symlink: read through the repository, it is
        // resolved inside the image. (Relative: umoci follows an absolute
        // one on the host, where /etc/passwd.real is not.)
        TarEntry::file(
            b"etc/passwd.real",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        ),
        TarEntry::symlink(b"etc/passwd", b"passwd.real"),
        TarEntry::file(
            b"etc/group",
            b"root:x:0:\napp:x:1000:\nextra:x:2000:app\nmore:x:3000:other,app\n",
        ),
        TarEntry::dir(b"home"),
        TarEntry::dir(b"home/app").owner(1000, 1000),
        TarEntry::dir(b"srv"),
        TarEntry::dir(b"srv/work").owner(1000, 1000),
        // Mount points of runc's default mounts: the root is read-only,
        // runc cannot create them.
        TarEntry::dir(b"proc"),
        TarEntry::dir(b"dev"),
        TarEntry::dir(b"sys"),
        TarEntry::dir(b"tmp").mode(0o1777),
    ];
    for applet in ["sh", "env", "id", "pwd", "echo", "cat"] {
        entries.push(TarEntry::symlink(
            format!("bin/{applet}").as_bytes(),
            b"busybox",
        ));
    }
    let layout = Layout::create(dir);
    layout.add_image("1", &[Layer::gzip(&entries)]);
    layout.edit_image("1", |_, config| {
        config["created"] = json!("2024-05-06T07:08:09.123400Z");
        config["author"] = json!("stratum tests");
        config["config"] = json!({
            "Env": ["PATH=/bin", "GREETING=hello world", "EMPTY="],
            "WorkingDir": "/srv/work",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [SCRIPT],
            "User": "app",
            "Labels": {"org.example.team": "storage", "version": "1.2"},
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGTERM",
        });
    });
    layout
}

/// A repository holding the busybox image as [`IMAGE`], and the layout.
fn repo_with_image() -> (TestRepo, Layout) {
    let repo = TestRepo::new("bundle.test");
    let layout = build_image(&repo.tmp.path().join("layout"));
    repo.publish_one(&format!("oci:{}:1", layout.dir.display()), Some(IMAGE));
    (repo, layout)
}

/// A container started with `runc run`, deleted (`runc delete -f`) on drop.
struct Container {
    root: PathBuf,
    id: String,
}

impl Container {
    /// `runc --root ROOT run --bundle BUNDLE ID`, its stdout, within
    /// [`RUNC_TIMEOUT`]; panics with stderr if it fails.
    fn run(state: &Path, bundle: &Path) -> (Container, String) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "stratum-bundle-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let guard = Container {
            root: state.to_path_buf(),
            id: id.clone(),
        };
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(state)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start runc");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let deadline = Instant::now() + RUNC_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Kill the container before joining the readers: its processes hold
        // the pipes too.
        let status = match status {
            Some(st) => st,
            None => {
                drop(guard);
                panic!("runc run {id} did not finish within {RUNC_TIMEOUT:?}; killed and deleted");
            }
        };
        let (stdout, stderr) = (t_out.join().unwrap(), t_err.join().unwrap());
        assert!(
            status.success(),
            "runc run {id} failed with {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
        (guard, stdout)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(&self.root)
            .args(["delete", "-f", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = cmd.spawn() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the process printed: its environment, cwd, uid, gid and groups.
fn check_process_output(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "PATH=/bin",
        "GREETING=hello world",
        "EMPTY=",
        "HOME=/home/app",
        "TERM=xterm",
        "cwd=/srv/work",
    ] {
        assert!(lines.contains(&want), "no {want:?} in the output:\n{out}");
    }
    let n = lines.len();
    assert!(n >= 3, "{out}");
    assert_eq!(&lines[n - 3..n - 1], ["1000", "1000"], "uid, gid:\n{out}");
    let mut groups: Vec<&str> = lines[n - 1].split_whitespace().collect();
    groups.sort_unstable();
    assert_eq!(groups, ["1000", "2000", "3000"], "groups:\n{out}");
}

/// `umoci unpack --image LAYOUT:1 DIR` of the same image: its config.json.
fn umoci_config(layout: &Layout, tmp: &Path) -> Value {
    let dir = tmp.join("umoci-bundle");
    tool(
        "umoci",
        [
            OsStr::new("unpack"),
            OsStr::new("--image"),
            OsStr::new(&format!("{}:1", layout.dir.display())),
            dir.as_os_str(),
        ],
    );
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Our config.json against umoci's: the process and the annotations are
/// umoci's, but for the differences kept on purpose (terminal, no
/// inheritable capabilities); the root is the given path, read-only.
fn compare_with_umoci(ours: &Value, umoci: &Value, rootfs: &Path) {
    let mut want = umoci["process"].clone();
    want["terminal"] = json!(false);
    want["capabilities"]
        .as_object_mut()
        .unwrap()
        .remove("inheritable");
    assert_eq!(ours["process"], want, "process differs from umoci's");
    assert_eq!(
        ours["annotations"], umoci["annotations"],
        "annotations differ from umoci's"
    );
    assert_eq!(
        ours["mounts"], umoci["mounts"],
        "mounts differ from umoci's"
    );
    assert_eq!(
        ours["linux"]["namespaces"], umoci["linux"]["namespaces"],
        "namespaces differ from umoci's"
    );
    assert_eq!(
        ours["root"],
        json!({"path": rootfs.to_str().unwrap(), "readonly": true})
    );
    // What the image config says, spelled out.
    assert_eq!(
        ours["process"]["args"],
        json!(["/bin/sh", "-c", SCRIPT]),
        "Entrypoint + Cmd"
    );
    assert_eq!(ours["process"]["cwd"], "/srv/work");
    assert_eq!(
        ours["process"]["user"],
        json!({"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000]})
    );
    assert_eq!(ours["annotations"]["org.example.team"], "storage");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The repository served over HTTP and mounted live; the bundle's root is
/// the image's flat tree under the mount; runc runs it; the config says
/// what umoci's says.
#[test]
fn a_bundle_under_a_live_mount_runs_with_runc() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let (repo, layout) = repo_with_image();
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);
    let src = MountSource::url(&serve.url, &key, ());
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let mount = Mount::start_with(
        &src,
        &mnt,
        None,
        &[
            OsStr::new("--cache"),
            cache.as_os_str(),
            // The process runs as uid 1000, not as the mount's owner.
            OsStr::new("--allow-other"),
        ],
    );

    let bundle = tmp.path().join("bundle");
    let out = stratum([
        OsStr::new("bundle"),
        OsStr::new(&serve.url),
        OsStr::new("--pubkey"),
        key.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        bundle.as_os_str(),
        OsStr::new("--mount"),
        mount.path().as_os_str(),
        OsStr::new("--json"),
    ])
    .json();
    let flat = out["flat_path"].as_str().unwrap().to_owned();
    assert!(flat.starts_with("/flat/"), "{out}");
    let rootfs = mount.path().join(flat.trim_start_matches('/'));
    assert_eq!(out["image"], IMAGE);
    assert_eq!(out["rootfs"], rootfs.to_str().unwrap());
    assert_eq!(
        out["path"],
        bundle.join("config.json").to_str().unwrap(),
        "{out}"
    );
    assert_eq!(out["platform"], "linux/amd64");
    assert_eq!(out["warnings"], json!([]), "{out}");
    let config = read_json(&bundle.join("config.json"));
    compare_with_umoci(&config, &umoci_config(&layout, tmp.path()), &rootfs);

    let state = tmp.path().join("runc-state");
    let (container, stdout) = Container::run(&state, &bundle);
    check_process_output(&stdout);
    drop(container);
    mount.unmount();
}

/// The pull-based variant: `stratum pull` writes the tree, `--rootfs`
/// points at it (read from the repository directory).
#[test]
fn a_bundle_on_a_pulled_tree_runs_with_runc() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let (repo, layout) = repo_with_image();
    let rootfs = tmp.path().join("rootfs");
    stratum([
        OsStr::new("pull"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        rootfs.as_os_str(),
    ]);
    let bundle = tmp.path().join("bundle");
    let out = stratum([
        OsStr::new("bundle"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        bundle.as_os_str(),
        OsStr::new("--rootfs"),
        rootfs.as_os_str(),
    ]);
    assert!(out.stdout_str().contains("wrote "), "{}", out.stdout_str());
    let config = read_json(&bundle.join("config.json"));
    compare_with_umoci(&config, &umoci_config(&layout, tmp.path()), &rootfs);
    let state = tmp.path().join("runc-state");
    let (_container, stdout) = Container::run(&state, &bundle);
    check_process_output(&stdout);
}

/// Refusals: an unknown image, a rootfs that is not there (a mount point
/// with nothing mounted), an image whose User is not in its passwd.
#[test]
fn bundle_refuses_what_it_cannot_run() {
    if !require_tool("umoci") || !Path::new(BUSYBOX).exists() {
        return;
    }
    let tmp = tempdir();
    let (repo, layout) = repo_with_image();
    let bundle = tmp.path().join("bundle");
    let args = |image: &str, extra: &[&OsStr]| {
        let mut v = vec![
            OsStr::new("bundle").to_owned(),
            repo.repo.as_os_str().to_owned(),
            "--image".into(),
            image.into(),
            bundle.as_os_str().to_owned(),
        ];
        v.extend(extra.iter().map(|s| s.to_os_string()));
        v
    };
    let empty = tmp.path().join("not-mounted");
    std::fs::create_dir_all(&empty).unwrap();
    let err = stratum_fails(args(
        "test/none:1",
        &[OsStr::new("--rootfs"), empty.as_os_str()],
    ))
    .stderr_str();
    assert!(err.contains("no image test/none:1"), "{err}");
    let err = stratum_fails(args(IMAGE, &[OsStr::new("--mount"), empty.as_os_str()])).stderr_str();
    assert!(err.contains("rootfs") && err.contains("mounted"), "{err}");
    let err = stratum_fails(args(IMAGE, &[])).stderr_str();
    assert!(err.contains("--mount") || err.contains("--rootfs"), "{err}");

    layout.edit_image("1", |_, config| {
        config["config"]["User"] = json!("nobody");
    });
    repo.publish_one(
        &format!("oci:{}:1", layout.dir.display()),
        Some("test/bb:nobody"),
    );
    let err = stratum_fails(args(
        "test/bb:nobody",
        &[OsStr::new("--rootfs"), empty.as_os_str()],
    ))
    .stderr_str();
    assert!(err.contains("nobody") && err.contains("passwd"), "{err}");
    assert!(!bundle.join("config.json").exists());
}
