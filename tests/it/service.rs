//! The long-running commands as services: `stratum sync --every` (the
//! publisher) against a real registry while images are pushed, updated,
//! broken and removed upstream, stopped by SIGTERM between and in the middle
//! of a round; and the `--metrics` endpoints of `sync --every` and `serve`,
//! scraped and parsed. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fsutil::Rng;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::prom::{scrape, Scrape};
use crate::support::registry::{
    push_oci, require_registry, skopeo_raw, Endpoint, Fault, FaultProxy, Registry,
};
use crate::support::services::{free_port, http_client, StratumServe};
use crate::support::{stratum_bin, TestRepo};

/// How long a change upstream may take to show up in a round's line.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the service may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A one-layer image whose content depends on `seed` (`size` random bytes).
fn image(layout: &Layout, tag: &str, seed: u64, size: usize) -> Layer {
    let layer = Layer::gzip(&[
        TarEntry::dir(b"app/"),
        TarEntry::file(b"app/seed", format!("{seed}\n").as_bytes()),
        TarEntry::file(b"app/data.bin", &Rng::new(seed).bytes(size)),
    ]);
    layout.add_image(tag, std::slice::from_ref(&layer));
    layer
}

fn write_wishlist(repo: &TestRepo, host: &str, images: &[&str]) -> PathBuf {
    let file = repo.tmp.path().join("wishlist.yaml");
    let mut text = format!(
        "version: 1\nrepository: {}\nsigning_key: {}\nregistries:\n  \"{host}\": {{ insecure: true }}\nimages:\n",
        repo.repo.display(),
        repo.key.display(),
    );
    for i in images {
        text.push_str(&format!("  - docker://{host}/{i}\n"));
    }
    std::fs::write(&file, text).unwrap();
    file
}

/// `stratum sync WISHLIST --every 1s --json [EXTRA…]` as a child process,
/// its stdout read line by line; killed when dropped.
struct SyncService {
    child: Option<Child>,
    lines: Receiver<String>,
    /// Every round's line read so far.
    rounds: Vec<Value>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl SyncService {
    fn start(wishlist: &Path, extra: &[&str]) -> SyncService {
        let mut child = Command::new(stratum_bin())
            .args(["sync".as_ref(), wishlist.as_os_str()])
            .args(["--every", "1s", "--json"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "stratum=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        SyncService {
            child: Some(child),
            lines,
            rounds: Vec::new(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The next round's line (each must be one JSON object, numbered in order).
    fn next_round(&mut self, timeout: Duration) -> Value {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no round line within {timeout:?}\n--- stderr ---\n{}",
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "sync --every ended its output\n--- stderr ---\n{}",
                self.stderr()
            ),
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("round line is not one JSON object ({e}): {line:?}"));
        assert_eq!(
            v["round"].as_u64(),
            Some(self.rounds.len() as u64 + 1),
            "rounds are numbered 1, 2, …: {line}"
        );
        self.rounds.push(v.clone());
        v
    }

    /// Reads rounds until one satisfies `pred` (within [`CHANGE_TIMEOUT`]);
    /// returns it and how many rounds it took.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, usize) {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut n = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not seen within {CHANGE_TIMEOUT:?}"
            );
            let r = self.next_round(left);
            n += 1;
            if pred(&r) {
                return (r, n);
            }
        }
    }

    /// Sends `signal` and waits (bounded) for the exit.
    fn stop(&mut self, signal: rustix::process::Signal) -> (ExitStatus, Duration) {
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, t0.elapsed());
            }
            if t0.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sync --every did not exit within {STOP_TIMEOUT:?} of {signal:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines printed after the exit.
    fn rest(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            let v: Value = serde_json::from_str(&line).unwrap();
            self.rounds.push(v.clone());
            out.push(v);
        }
        out
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The names in `group` of a round's report.
fn names(round: &Value, group: &str) -> Vec<String> {
    let mut v: Vec<String> = round[group]
        .as_array()
        .unwrap_or_else(|| panic!("no {group} in {round}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// `images --json` as NAME → manifest digest.
fn published(repo: &TestRepo) -> std::collections::BTreeMap<String, String> {
    repo.images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["manifest_digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `skopeo delete` of a tag (its manifest, and so the tag, is gone).
fn delete_upstream(reg: &Registry, reference: &str) {
    let mut args = vec!["delete".to_string()];
    args.extend(reg.skopeo_flags("--"));
    args.push(reg.docker_ref(reference));
    skopeo_raw(&args).assert_success();
}

#[test]
fn sync_every_follows_pushes_updates_breakage_and_removals_round_by_round() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("svc");
    let h = reg.host();
    let l = Layout::create(&repo.scratch("layout"));
    let _ = image(&l, "app1", 1, 20_000);
    let _ = image(&l, "app1-new", 2, 20_000);
    let _ = image(&l, "app2", 3, 20_000);
    let _ = image(&l, "tool1", 5, 20_000);
    let tool_broken = image(&l, "tool1-broken", 6, 20_000);
    let _ = image(&l, "tool1-fixed", 7, 20_000);
    let app1 = push_oci(&l.dir, "app1", "team/app:1", &reg);
    let tool1 = push_oci(&l.dir, "tool1", "team/tool:1", &reg);
    let wl = write_wishlist(&repo, &h, &["team/app:*", "team/tool:1"]);
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut svc = SyncService::start(&wl, &["--metrics", &metrics.to_string()]);
    let (app, tool) = (format!("{h}/team/app:1"), format!("{h}/team/tool:1"));
    let app_2 = format!("{h}/team/app:2");

    // Round 1 publishes both; the next ones keep them without a revision.
    let r = svc.next_round(CHANGE_TIMEOUT);
    assert_eq!(names(&r, "added"), [app.clone(), tool.clone()], "{r}");
    assert_eq!(
        (r["revision"].as_u64(), &r["new_revision"]),
        (Some(2), &Value::Bool(true))
    );
    assert_eq!(r["outcome"], "ok");
    let r = svc.next_round(CHANGE_TIMEOUT);
    assert_eq!(names(&r, "kept"), [app.clone(), tool.clone()], "{r}");
    assert_eq!(
        (r["revision"].as_u64(), &r["new_revision"]),
        (Some(2), &Value::Bool(false))
    );
    assert_eq!(published(&repo)[&tool], tool1);

    // A new tag upstream: added by the next round.
    push_oci(&l.dir, "app2", "team/app:2", &reg);
    let (_, took) = svc.wait_for("team/app:2 added", |r| names(r, "added") == [app_2.clone()]);
    assert!(
        took <= 2,
        "a push must show up in the next round, took {took}"
    );
    assert!(published(&repo).contains_key(&app_2));

    // A tag moved: updated, with what it was before.
    let app1_new = push_oci(&l.dir, "app1-new", "team/app:1", &reg);
    let (r, took) = svc.wait_for("team/app:1 updated", |r| {
        names(r, "updated") == [app.clone()]
    });
    assert!(
        took <= 2,
        "an update must show up in the next round, took {took}"
    );
    assert_eq!(r["updated"][0]["previous_digest"], app1.as_str());
    assert_eq!(published(&repo)[&app], app1_new);

    // A broken image (its layer corrupt upstream) fails its round's line,
    // the previous version stays published, and the others go on.
    push_oci(&l.dir, "tool1-broken", "team/tool:1", &reg);
    reg.corrupt_blob(&tool_broken.digest());
    let (r, _) = svc.wait_for("team/tool:1 failing", |r| {
        names(r, "failed") == [tool.clone()]
    });
    assert_eq!(r["outcome"], "partial", "{r}");
    assert!(
        r["failed"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("sha256"),
        "{r}"
    );
    assert!(names(&r, "kept").contains(&app), "{r}");
    assert_eq!(
        published(&repo)[&tool],
        tool1,
        "the previous version stays published"
    );
    let r = svc.next_round(CHANGE_TIMEOUT);
    assert_eq!(
        names(&r, "failed"),
        std::slice::from_ref(&tool),
        "it fails every round until fixed: {r}"
    );
    // Fixed upstream: updated by the next round.
    let tool1_fixed = push_oci(&l.dir, "tool1-fixed", "team/tool:1", &reg);
    let (r, took) = svc.wait_for("team/tool:1 fixed", |r| {
        names(r, "updated") == [tool.clone()]
    });
    assert!(took <= 2, "took {took}");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(published(&repo)[&tool], tool1_fixed);

    // Removed upstream: retired from /images by the next round.
    delete_upstream(&reg, "team/app:2");
    let (_, took) = svc.wait_for("team/app:2 retired", |r| {
        names(r, "retired") == [app_2.clone()]
    });
    assert!(took <= 2, "took {took}");
    assert!(!published(&repo).contains_key(&app_2));

    // Every round: one revision when something changed, none otherwise.
    let mut revision = 1;
    for r in &svc.rounds {
        let new = r["new_revision"].as_bool().unwrap();
        let changed = ["added", "updated", "retired"]
            .iter()
            .any(|g| !names(r, g).is_empty());
        assert_eq!(new, changed, "{r}");
        revision += u64::from(new);
        assert_eq!(r["revision"].as_u64(), Some(revision), "{r}");
        assert_eq!(r["outcome"] == "ok", names(r, "failed").is_empty(), "{r}");
        assert_eq!(r["error"], Value::Null);
    }
    assert_eq!(repo.revision(), revision);

    // /metrics: what the rounds so far did. A round may end between the
    // scrape and here: compare with as many rounds as the scrape counted.
    let m = scrape(metrics);
    let counted = m.sum("stratum_sync_rounds_total") as usize;
    while svc.rounds.len() < counted {
        svc.next_round(CHANGE_TIMEOUT);
    }
    assert!(counted >= svc.rounds.len() - 1, "{counted} rounds counted");
    let seen = &svc.rounds[..counted];
    let count = |f: &dyn Fn(&Value) -> usize| seen.iter().map(f).sum::<usize>() as f64;
    for outcome in ["ok", "partial"] {
        assert_eq!(
            m.value("stratum_sync_rounds_total", &[("outcome", outcome)]),
            count(&|r| usize::from(r["outcome"] == outcome)),
            "rounds {outcome}"
        );
    }
    for group in ["added", "updated", "kept", "retired", "failed"] {
        assert_eq!(
            m.value("stratum_sync_images_total", &[("outcome", group)]),
            count(&|r| names(r, group).len()),
            "images {group}"
        );
    }
    assert_eq!(m.kind("stratum_sync_rounds_total"), Some("counter"));
    assert_eq!(
        m.kind("stratum_sync_round_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        m.value("stratum_sync_round_duration_seconds_count", &[]),
        counted as f64
    );
    assert_eq!(m.value("stratum_sync_revision", &[]), revision as f64);
    assert!(m.value("stratum_sync_last_round_timestamp_seconds", &[]) > 1.7e9);

    // SIGTERM between rounds: exit 0 at once, the repository checks.
    let (status, took) = svc.stop(rustix::process::Signal::TERM);
    assert_eq!(status.code(), Some(0), "{}", svc.stderr());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for r in svc.rest() {
        assert_ne!(r["outcome"], "cancelled", "no round was running: {r}");
    }
    repo.check();
}

#[test]
fn sigterm_in_the_middle_of_a_round_abandons_it_promptly() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let proxy = FaultProxy::start(&reg);
    let repo = TestRepo::new("svc-term");
    let l = Layout::create(&repo.scratch("layout"));
    let layer = image(&l, "big", 9, 2_000_000);
    push_oci(&l.dir, "big", "team/big:1", &reg);
    // The layer's download hangs after its first 64 KiB.
    proxy.inject(
        1,
        Some(&layer.digest()),
        Fault::Stall {
            body_bytes: 64 * 1024,
        },
    );
    let wl = write_wishlist(&repo, &proxy.host(), &["team/big:1"]);
    let mut svc = SyncService::start(&wl, &[]);
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    while !proxy
        .requests()
        .iter()
        .any(|r| matches!(r.fault, Some(Fault::Stall { .. })))
    {
        assert!(
            Instant::now() < deadline,
            "the layer download never started: {:?}\n{}",
            proxy.requests(),
            svc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = svc.stop(rustix::process::Signal::TERM);
    assert_eq!(status.code(), Some(0), "{}", svc.stderr());
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
    let lines = svc.rest();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "cancelled", "{}", lines[0]);
    assert_eq!(lines[0]["round"], 1);
    // The round was abandoned: still revision 1, and a repository that
    // checks and that the next writer uses as usual.
    assert_eq!(repo.revision(), 1);
    repo.check();
    let wl = write_wishlist(&repo, &reg.host(), &["team/big:1"]);
    let out = crate::support::stratum(["sync".as_ref(), wl.as_os_str(), "--json".as_ref()]);
    assert_eq!(out.json()["revision"], 2);
    repo.check();
}

#[test]
fn sync_every_refuses_what_does_not_apply() {
    let repo = TestRepo::new("svc-args");
    let wl = write_wishlist(&repo, "127.0.0.1:9", &[]);
    for (args, needle) in [
        (vec!["--every", "0s"], "longer than 0"),
        (vec!["--every", "soon"], "e.g. 30s"),
        (vec!["--every", "1s", "--dry-run"], "cannot be used with"),
        (vec!["--metrics", "127.0.0.1:0"], "--every"),
    ] {
        let mut all = vec!["sync".to_string(), wl.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = crate::support::stratum_raw(&all);
        assert!(!out.success(), "{all:?}");
        out.assert_no_panic();
        assert!(
            out.stderr_str().contains(needle),
            "{all:?}: {}",
            out.stderr_str()
        );
    }
}

#[test]
fn serve_metrics_count_requests_by_status_and_bytes_sent() {
    let repo = TestRepo::new("svc-serve");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let srv = StratumServe::start(&repo.repo, &["--metrics", &metrics.to_string()]);
    let client = http_client();
    let get = |path: &str| {
        let r = client.get(srv.at(path)).send().unwrap();
        (
            r.status().as_u16(),
            r.headers().get("etag").cloned(),
            r.bytes().unwrap().len() as u64,
        )
    };
    let mut sent = 0;
    let (status, etag, n) = get("/.stratum/manifest");
    assert_eq!(status, 200);
    sent += n;
    for _ in 0..2 {
        let (status, _, n) = get("/.stratum/manifest");
        assert_eq!(status, 200);
        sent += n;
    }
    let (status, _, n) = get("/.stratum/public.pem");
    assert_eq!(status, 200);
    sent += n;
    for path in ["/.stratum/lock", "/nothing"] {
        let (status, _, n) = get(path);
        assert_eq!(status, 404);
        sent += n;
    }
    let r = client
        .get(srv.at("/.stratum/manifest"))
        .header("if-none-match", etag.unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    let r = client.post(srv.at("/.stratum/manifest")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    sent += r.bytes().unwrap().len() as u64;
    assert!(sent > 0);

    // A request is counted when its response body is done, just after the
    // client has it: wait (bounded) for all 8.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m: Scrape = loop {
        let m = scrape(metrics);
        if m.sum("stratum_serve_requests_total") >= 8.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(m.kind("stratum_serve_requests_total"), Some("counter"));
    for (status, n) in [("200", 4.0), ("404", 2.0), ("304", 1.0), ("405", 1.0)] {
        assert_eq!(
            m.value("stratum_serve_requests_total", &[("status", status)]),
            n,
            "status {status}"
        );
    }
    assert_eq!(m.sum("stratum_serve_requests_total"), 8.0);
    assert_eq!(m.value("stratum_serve_sent_bytes_total", &[]), sent as f64);
    assert_eq!(
        m.value("stratum_serve_request_duration_seconds_count", &[]),
        8.0
    );
    assert_eq!(
        m.value(
            "stratum_serve_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        8.0
    );
    // Scraping is not a request of the repository.
    let again = scrape(metrics);
    assert_eq!(again.sum("stratum_serve_requests_total"), 8.0);
}

/// The `stratum` command lines of a unit (`ExecStart=`, `ExecStartPre=`,
/// `ExecReload=`, a leading `-` dropped), as arguments after the binary.
fn stratum_lines(unit: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| {
            let (key, cmd) = l.split_once('=')?;
            if !key.starts_with("Exec") {
                return None;
            }
            let mut words = cmd.trim_start_matches('-').split_whitespace();
            (words.next()? == "/usr/local/bin/stratum").then(|| words.map(str::to_string).collect())
        })
        .collect()
}

#[test]
fn the_unit_files_are_documented_verify_and_their_command_lines_parse() {
    let doc = include_str!("../../docs/DEPLOYMENT.md");
    let units = [
        (
            "stratum-sync.service",
            include_str!("../../examples/systemd/stratum-sync.service"),
        ),
        (
            "stratum-mount.service",
            include_str!("../../examples/systemd/stratum-mount.service"),
        ),
        (
            "stratum-snapshotter.service",
            include_str!("../../examples/systemd/stratum-snapshotter.service"),
        ),
    ];
    for (name, unit) in &units {
        assert!(
            doc.contains(unit),
            "docs/DEPLOYMENT.md must show examples/systemd/{name} as it is"
        );
    }
    // Every option parses (clap exits 2 on a usage error); each command
    // then stops at once on a missing file (exit 1), naming it. No command
    // gets as far as the network (the mount reads its --pubkey first; its
    // URL points at 127.0.0.1 anyway).
    for (name, unit) in &units {
        let lines = stratum_lines(unit);
        assert!(!lines.is_empty(), "{name}");
        for words in lines {
            let words: Vec<String> = words
                .iter()
                .map(|w| w.replace("stratum.example.org", "127.0.0.1:9"))
                .collect();
            let out = crate::support::stratum_raw(&words);
            out.assert_no_panic();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name}: {words:?}: {}",
                out.stderr_str()
            );
            let err = out.stderr_str();
            assert!(
                err.contains("/etc/stratum/") || err.contains("/run/stratum/"),
                "{name}: {words:?}: {err}"
            );
            assert!(!err.contains("Usage"), "{name}: {words:?}: {err}");
        }
    }
    if !crate::support::require_tool("systemd-analyze") {
        return;
    }
    let dir = crate::support::tempdir();
    for (name, unit) in &units {
        let file = dir.path().join(name);
        std::fs::write(&file, unit.replace("/usr/local/bin/stratum", stratum_bin())).unwrap();
        let out = crate::support::run_cmd({
            let mut c = Command::new("systemd-analyze");
            c.arg("verify").arg(&file);
            c
        });
        assert!(
            out.success(),
            "systemd-analyze verify {name}: {}",
            out.stderr_str()
        );
        assert!(
            !out.stderr_str().contains(&format!("{name}:")),
            "systemd-analyze verify warns about {name}: {}",
            out.stderr_str()
        );
    }
}
