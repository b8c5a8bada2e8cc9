//! The containerd remote snapshotter (`stratum snapshotter`), end to end:
//! a private containerd with `[proxy_plugins.stratum]`, real runc, Debian's
//! docker-registry logging every request, `stratum serve` and a live FUSE
//! mount of the repository.
//!
//! - A published image pulls with no layer blob downloaded; `ctr run` runs
//!   busybox from it (whiteouts and opaque directories of the repository's
//!   layer trees apply) and the container's root lists exactly the image's
//!   flat tree; a restart of the snapshotter between pull and run changes
//!   nothing; `ctr image rm --sync` removes every snapshot, ours included.
//! - Two published base layers under an unpublished top layer: only the
//!   top layer is downloaded (two namespaces pulling at once); it runs.
//! - An image not in the repository: every layer downloaded, and the
//!   container prints what it prints on the overlayfs snapshotter.
//! - A layer tree removed from the repository (rm + gc, the mount moves
//!   on): `Mounts` and `ctr run` fail at once with a clear error.
//! - An image published with a prefetch list: the CRI pull alone (its
//!   `cri.manifest-digest` label) starts the list, so the listed objects
//!   are fetched before the container runs, and only once.
//!
//! Needs root, FUSE, containerd, runc, docker-registry, skopeo and
//! busybox-static; each test skips with a message otherwise.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::containerd::{require_containerd, Containerd, Snapshotter};
use crate::support::cri;
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::registry::{push_oci, require_registry, Registry};
use crate::support::services::StratumServe;
use crate::support::{require_root, require_tool, skip, stratum, tempdir, TestRepo};

/// The namespace of the CRI plugin's images.
const NS: &str = "k8s.io";
/// The namespace of `ctr images pull`.
const CTR_NS: &str = "stratum-test";

fn ready() -> bool {
    if !(require_root() && require_fuse() && require_containerd() && require_registry()) {
        return false;
    }
    if !require_tool("skopeo") {
        return false;
    }
    if !Path::new("/bin/busybox").is_file() {
        skip("/bin/busybox is missing: apt-get install busybox-static (see .ci/run)");
        return false;
    }
    true
}

/// Layer A: busybox (static) and its applets, `etc/removed`, `opt/dir/{x,y}`.
fn layer_a() -> Layer {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut e = vec![
        TarEntry::dir(b"bin/"),
        TarEntry::file(b"bin/busybox", &bb).mode(0o755),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/removed", b"A\n"),
        TarEntry::dir(b"opt/"),
        TarEntry::dir(b"opt/dir/"),
        TarEntry::file(b"opt/dir/x", b"x\n"),
        TarEntry::file(b"opt/dir/y", b"y\n"),
    ];
    for applet in ["sh", "cat", "ls", "echo", "test", "find", "sort"] {
        e.push(TarEntry::symlink(
            format!("bin/{applet}").as_bytes(),
            b"busybox",
        ));
    }
    Layer::gzip(&e)
}

/// Layer B: whites out `etc/removed`, makes `opt/dir` opaque (only `z`),
/// adds `data/b.txt` and `data/old.txt`.
fn layer_b() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"etc/"),
        TarEntry::whiteout(b"etc/", b"removed"),
        TarEntry::dir(b"opt/dir/"),
        TarEntry::opaque(b"opt/dir/"),
        TarEntry::file(b"opt/dir/z", b"z\n"),
        TarEntry::dir(b"data/"),
        TarEntry::file(b"data/b.txt", b"from B\n"),
        TarEntry::file(b"data/old.txt", b"old\n"),
    ])
}

/// Layer C (never published): adds `data/c.txt`, whites out `data/old.txt`.
fn layer_c() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"data/"),
        TarEntry::file(b"data/c.txt", b"from C\n"),
        TarEntry::whiteout(b"data/", b"old.txt"),
    ])
}

/// What the test command prints from a root of the image.
const SCRIPT: &str =
    "cat /data/*.txt; ls /opt/dir; test -e /etc/removed && echo present || echo removed";

/// Everything a node needs: repository, its server, the live mount,
/// registry, snapshotter and containerd (dropped in that reverse order).
struct Node {
    containerd: Containerd,
    snap: Snapshotter,
    mount: Mount,
    serve: StratumServe,
    reg: Registry,
    repo: TestRepo,
    layout: Layout,
    tmp: tempfile::TempDir,
    layers: [Layer; 3],
}

impl Node {
    /// Publishes `test/app:1` = [A, B] and pushes it and `test/app:2` =
    /// [A, B, C] to the registry; starts everything.
    fn start() -> Node {
        Node::start_with_list(&[])
    }

    /// [`Node::start`], `test/app:1` published with the prefetch list
    /// `list` (paths in its flat tree) when not empty.
    fn start_with_list(list: &[&str]) -> Node {
        let tmp = tempdir();
        let repo = TestRepo::new("snapshotter.test");
        let layers = [layer_a(), layer_b(), layer_c()];
        let layout = Layout::create(&tmp.path().join("layout"));
        layout.add_image("app1", &layers[..2]);
        layout.add_image("app2", &layers[..]);
        repo.publish_one(
            &format!("oci:{}:app1", layout.dir.display()),
            Some("test/app:1"),
        );
        if !list.is_empty() {
            let file = tmp.path().join("prefetch.list");
            std::fs::write(&file, list.join("\n")).unwrap();
            let mut spec = OsString::from("test/app:1=");
            spec.push(&file);
            stratum([
                OsString::from("publish"),
                "--repo".into(),
                repo.repo.clone().into(),
                "--key".into(),
                repo.key.clone().into(),
                "--prefetch".into(),
                spec,
            ]);
        }
        let reg = Registry::start_plain();
        push_oci(&layout.dir, "app1", "test/app:1", &reg);
        push_oci(&layout.dir, "app2", "test/app:2", &reg);
        let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
        let mut pubkey = repo.key.clone().into_os_string();
        pubkey.push(".pub");
        let src = MountSource::url(&serve.url, Path::new(&pubkey), ());
        let mount = Mount::start_with(
            &src,
            &tmp.path().join("mnt"),
            None,
            &[
                OsString::from("--refresh"),
                "1s".into(),
                "--cache".into(),
                tmp.path().join("cache").into(),
            ],
        );
        let snap = Snapshotter::start(
            &tmp.path().join("snap.sock"),
            &tmp.path().join("snap"),
            mount.path(),
        );
        let containerd =
            Containerd::start(&tmp.path().join("containerd"), &snap.socket, &reg.host());
        Node {
            containerd,
            snap,
            mount,
            serve,
            reg,
            repo,
            layout,
            tmp,
            layers,
        }
    }

    /// How many times `stratum serve` was asked for `path`.
    fn served(&self, path: &str) -> usize {
        self.serve
            .access_log()
            .iter()
            .filter(|r| r.path.trim_start_matches('/') == path)
            .count()
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.reg.host())
    }

    fn pull(&self, ns: &str, name: &str, snapshotter: &str) {
        let image = self.image(name);
        self.containerd.ctr_ok(
            ns,
            &[
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                &image,
            ],
        );
    }

    /// Pulls through containerd's CRI plugin (namespace `k8s.io`): the
    /// unpacker of the remote snapshotter protocol.
    fn cri_pull(&self, name: &str) {
        let image = self.image(name);
        if let Err(e) = cri::pull_image(&self.containerd.address, &image, Duration::from_secs(120))
        {
            panic!(
                "CRI pull of {image}: {e}\n{}\n--- snapshotter log ---\n{}",
                self.containerd.log_tail(),
                self.snap.log()
            );
        }
    }

    /// `ctr run --rm` of SCRIPT; returns stdout.
    ///
    /// `ctr` can lose the tail of a short-lived task's stdout (its copy from
    /// the fifo races the task's exit; seen in CI under load: a script's
    /// first line arrived, the rest did not). The script therefore ends by
    /// printing a marker, and a run whose output lacks it is run again, at
    /// most three times, under a new container id.
    fn run(&self, ns: &str, name: &str, snapshotter: &str, id: &str, script: &str) -> String {
        const END: &str = "@@end-of-output@@\n";
        let image = self.image(name);
        // The script's status, not the marker's, is the run's.
        let script = format!(
            "{script}\nstatus=$?\necho '{}'\nexit $status",
            END.trim_end()
        );
        let mut seen = Vec::new();
        for attempt in 0..3 {
            let id = if attempt == 0 {
                id.to_owned()
            } else {
                format!("{id}-again{attempt}")
            };
            let out = self.containerd.ctr(
                ns,
                &[
                    "run",
                    "--rm",
                    "--snapshotter",
                    snapshotter,
                    &image,
                    &id,
                    "/bin/sh",
                    "-c",
                    &script,
                ],
            );
            assert!(
                out.success(),
                "ctr run {name} failed: {}\n{}\n--- snapshotter log ---\n{}",
                out.stderr_str(),
                self.containerd.log_tail(),
                self.snap.log()
            );
            let stdout = out.stdout_str();
            if let Some(body) = stdout.strip_suffix(END) {
                return body.to_owned();
            }
            eprintln!("ctr run {name} ({id}): output without its end marker, run again:\n{stdout}");
            seen.push(stdout);
        }
        panic!("ctr run {name}: three runs lost the end of their output: {seen:#?}");
    }

    /// The layer blob digests the registry served since `forget_requests`.
    fn layer_gets(&self) -> BTreeSet<String> {
        let digests: Vec<String> = self.layers.iter().map(Layer::digest).collect();
        self.reg
            .requests()
            .into_iter()
            .filter(|(m, _, _)| m == "GET")
            .filter_map(|(_, u, _)| digests.iter().find(|d| u.contains(d.as_str())).cloned())
            .collect()
    }

    /// Rows of the snapshotter's metadata database and local snapshot dirs.
    fn backend(&self) -> (Vec<String>, usize) {
        let db = rusqlite::Connection::open(self.snap.root.join("metadata.db")).unwrap();
        let mut st = db.prepare("SELECT name FROM snapshots").unwrap();
        let names = st
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let dirs = std::fs::read_dir(self.snap.root.join("snapshots"))
            .unwrap()
            .count();
        (names, dirs)
    }
}

/// Paths below `root` ("/a/b"), without following symlinks.
fn walk(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            format!("/{}", e.path().strip_prefix(root).unwrap().display())
        })
        .collect()
}

#[test]
fn a_published_image_pulls_no_layer_runs_and_survives_a_restart() {
    if !ready() {
        return;
    }
    let mut node = Node::start();
    node.reg.forget_requests();
    let t0 = Instant::now();
    node.cri_pull("test/app:1");
    eprintln!("pull of a published image: {:?}", t0.elapsed());
    assert_eq!(
        node.layer_gets(),
        BTreeSet::new(),
        "no layer blob may be downloaded"
    );
    let diff_ids: Vec<String> = node.layers[..2].iter().map(Layer::diff_id).collect();
    let log = node.snap.log();
    for d in &diff_ids {
        assert!(
            log.contains(d.as_str()),
            "layer {d} not served remotely:\n{log}"
        );
    }

    let t0 = Instant::now();
    let out = node.run(NS, "test/app:1", "stratum", "c1", SCRIPT);
    eprintln!("run: {:?}", t0.elapsed());
    assert_eq!(out, "from B\nold\nz\nremoved\n");

    // The container's root is the image's flat tree (plus the mount
    // points runc adds).
    let listing = node.run(NS, "test/app:1", "stratum", "c2", "find / -xdev");
    let seen: BTreeSet<String> = listing
        .lines()
        .filter(|l| *l != "/" && !["/dev", "/proc", "/sys", "/run"].contains(l))
        .map(str::to_string)
        .collect();
    let flat = std::fs::canonicalize(node.mount.at("images/test/app/1")).unwrap();
    assert_eq!(
        seen,
        walk(&flat),
        "container root vs the published flat tree"
    );

    // Restart between pull and run.
    node.cri_pull("test/app:2");
    node.snap.restart();
    // containerd redials a proxy plugin with a backoff of at most 3 s.
    let t0 = Instant::now();
    while !node
        .containerd
        .ctr(NS, &["snapshots", "--snapshotter", "stratum", "usage"])
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "containerd did not reconnect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("containerd reconnected after {:?}", t0.elapsed());
    let out = node.run(NS, "test/app:2", "stratum", "c3", SCRIPT);
    assert_eq!(out, "from B\nfrom C\nz\nremoved\n");

    // Garbage collection removes every snapshot.
    // (The CRI plugin names each image three ways: tag, digest, id.)
    let names = node.containerd.ctr_ok(NS, &["images", "ls", "-q"]);
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut args = vec!["images", "rm", "--sync"];
    args.extend(names);
    node.containerd.ctr_ok(NS, &args);
    let listed = node
        .containerd
        .ctr_ok(NS, &["snapshots", "--snapshotter", "stratum", "ls"]);
    assert_eq!(
        listed.lines().count(),
        1,
        "only the header may be left: {listed}"
    );
    let t0 = Instant::now();
    loop {
        let (names, dirs) = node.backend();
        if names.is_empty() && dirs == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the snapshotter still holds {names:?} ({dirs} dirs)\n{}",
            node.containerd.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_unpublished_top_layer_is_the_only_download() {
    if !ready() {
        return;
    }
    let node = Node::start();
    node.reg.forget_requests();
    // Two namespaces pull the image at once.
    // Two pulls of the image at once.
    let (sock, image) = (&node.containerd.address, node.image("test/app:2"));
    std::thread::scope(|s| {
        let pulls: Vec<_> = (0..2)
            .map(|_| s.spawn(|| cri::pull_image(sock, &image, Duration::from_secs(120))))
            .collect();
        for p in pulls {
            if let Err(e) = p.join().unwrap() {
                panic!("{e}\n{}\n{}", node.containerd.log_tail(), node.snap.log());
            }
        }
    });
    assert_eq!(
        node.layer_gets(),
        BTreeSet::from([node.layers[2].digest()]),
        "only the unpublished top layer may be downloaded"
    );
    for id in ["ca", "cb"] {
        let out = node.run(NS, "test/app:2", "stratum", id, SCRIPT);
        assert_eq!(out, "from B\nfrom C\nz\nremoved\n");
    }
}

#[test]
fn an_image_not_in_the_repository_runs_as_on_overlayfs() {
    if !ready() {
        return;
    }
    let node = Node::start();
    // Layer A with other bytes (trailing zeros after the tar's end), then
    // C and one more: no layer of it is in the repository.
    let mut base = layer_a();
    base.tar.extend_from_slice(&[0u8; 1024]);
    base.blob = crate::support::oci::gzip(&base.tar);
    let other = Layer::gzip(&[
        TarEntry::dir(b"data/"),
        TarEntry::file(b"data/o.txt", b"other\n"),
    ]);
    let layers = [base, layer_c(), other];
    let layout = Layout::create(&node.tmp.path().join("other"));
    layout.add_image("o", &layers);
    push_oci(&layout.dir, "o", "test/other:1", &node.reg);
    node.reg.forget_requests();
    // Through the remote snapshotter protocol: every layer is downloaded
    // and applied into local snapshots.
    node.cri_pull("test/other:1");
    let got: usize = layers
        .iter()
        .map(|l| node.reg.count_requests("GET", &l.digest()))
        .sum();
    assert_eq!(got, 3, "every layer is downloaded");
    node.pull(CTR_NS, "test/other:1", "overlayfs");
    let script = "cat /data/*.txt; ls /opt/dir; find / -xdev | sort";
    let on_stratum = node.run(NS, "test/other:1", "stratum", "s", script);
    let on_overlay = node.run(CTR_NS, "test/other:1", "overlayfs", "o", script);
    assert!(
        on_stratum.starts_with("from C\nother\nx\ny\n"),
        "{on_stratum}"
    );
    assert_eq!(on_stratum, on_overlay);

    // `ctr images pull` (which fetches every blob before it unpacks, with
    // no remote snapshot label) of a published image: local snapshots.
    node.pull(CTR_NS, "test/app:1", "stratum");
    let out = node.run(CTR_NS, "test/app:1", "stratum", "p", SCRIPT);
    assert_eq!(out, "from B\nold\nz\nremoved\n");
}

#[test]
fn a_layer_tree_the_mount_no_longer_serves_is_an_error_not_a_hang() {
    if !ready() {
        return;
    }
    let node = Node::start();
    node.cri_pull("test/app:1");
    let chain = node.layout.diff_ids("app1");
    let top = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(format!("{} {}", chain[0], chain[1]).as_bytes());
        format!("sha256:{}", hex::encode(h.finalize()))
    };
    // A view made by `ctr snapshots view` has no lease: containerd's
    // garbage collection (scheduled when the pull's lease ends) may take
    // it before it is labelled a root. Until the label holds, make it again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let _ = node
            .containerd
            .ctr(NS, &["snapshots", "--snapshotter", "stratum", "rm", "v1"]);
        node.containerd.ctr_ok(
            NS,
            &["snapshots", "--snapshotter", "stratum", "view", "v1", &top],
        );
        // Kept from containerd's garbage collection (and Update exercised).
        let labelled = node.containerd.ctr(
            NS,
            &[
                "snapshots",
                "--snapshotter",
                "stratum",
                "label",
                "v1",
                "containerd.io/gc.root=1",
            ],
        );
        if labelled.success() {
            break;
        }
        assert!(
            attempts < 10 && labelled.stderr_str().contains("does not exist"),
            "ctr snapshots label v1: {}",
            labelled.stderr_str()
        );
    }
    // Remove the image and collect its trees; the mount follows.
    let key = node.repo.key.to_str().unwrap();
    let repo = node.repo.repo.to_str().unwrap();
    stratum(["rm", repo, "test/app:1", "--key", key]);
    stratum([
        "gc",
        repo,
        "--key",
        key,
        "--grace",
        "0s",
        "--keep-revisions",
        "1",
        "--safety-window",
        "0s",
    ]);
    let hex = chain[1].strip_prefix("sha256:").unwrap();
    let tree: PathBuf = node.mount.at(format!("layers/{}/{hex}", &hex[..2]));
    let t0 = Instant::now();
    while tree.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{} still served",
            tree.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let target = node.tmp.path().join("v1-mnt");
    let out = node.containerd.ctr(
        NS,
        &[
            "snapshots",
            "--snapshotter",
            "stratum",
            "mounts",
            target.to_str().unwrap(),
            "v1",
        ],
    );
    assert!(!out.success(), "Mounts must fail: {}", out.stdout_str());
    assert!(
        out.stderr_str()
            .contains("not served by the repository mount"),
        "{}",
        out.stderr_str()
    );
    let image = node.image("test/app:1");
    let run = node.containerd.ctr(
        NS,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "stratum",
            &image,
            "gone",
            "/bin/true",
        ],
    );
    assert!(!run.success());
    assert!(
        run.stderr_str()
            .contains("not served by the repository mount"),
        "{}",
        run.stderr_str()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}

/// The CRI pull of an image published with a prefetch list starts that
/// list (the snapshotter enters the image's flat tree when it sees the
/// image's `cri.manifest-digest` label): busybox, the only listed object,
/// is fetched before anything runs, and the run reads it from the cache.
#[test]
fn a_cri_pull_starts_the_images_published_prefetch_list() {
    if !ready() {
        return;
    }
    let node = Node::start_with_list(&["bin/busybox"]);
    let hex = stratum_catalog::ObjectId::of(&std::fs::read("/bin/busybox").unwrap()).to_hex();
    let busybox = format!("data/{}/{}", &hex[..2], &hex[2..]);
    assert_eq!(
        node.served(&busybox),
        0,
        "nothing is fetched before the pull"
    );
    node.cri_pull("test/app:1");
    let t0 = Instant::now();
    while node.served(&busybox) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the pull did not start the image's prefetch list\n--- snapshotter log ---\n{}",
            node.snap.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = node.run(NS, "test/app:1", "stratum", "c1", SCRIPT);
    assert_eq!(out, "from B\nold\nz\nremoved\n");
    assert_eq!(
        node.served(&busybox),
        1,
        "the run reads busybox from the node cache"
    );
}
