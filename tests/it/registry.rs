//! End-to-end tests of the `docker://` source and `stratum sync` against a
//! real registry (Debian's `docker-registry`) started on 127.0.0.1 by
//! `support::registry`, with images pushed by skopeo.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsString;
use std::process::Command;

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::registry::{
    build_multiarch_default, push_multiarch, push_oci, require_registry, require_tls_registry,
    Fault, FaultProxy, Registry,
};
use crate::support::{run_cmd, stratum, stratum_bin, stratum_raw, Output, TestRepo};
use serde_json::Value;

/// A two-layer image whose content depends on `seed`, tagged `tag`.
fn image(layout: &Layout, tag: &str, seed: u64) -> String {
    let mut rng = support::fsutil::Rng::new(seed);
    layout.add_image(
        tag,
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"etc/"),
                TarEntry::file(b"etc/os-release", b"ID=stratum-registry-test\n"),
                TarEntry::file(b"etc/big.bin", &support::fsutil::Rng::new(1).bytes(200_000)),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"app/"),
                TarEntry::file(b"app/seed", format!("{seed}\n").as_bytes()),
                TarEntry::file(b"app/data.bin", &rng.bytes(50_000)),
                TarEntry::symlink(b"app/link", b"seed"),
            ]),
        ],
    )
}

fn layout(repo: &TestRepo, name: &str) -> Layout {
    Layout::create(&repo.scratch(name))
}

/// `stratum ARGS…` with extra environment variables.
fn stratum_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(stratum_bin());
    cmd.args(args)
        .env_remove("STRATUM_REGISTRY_USER")
        .env_remove("STRATUM_REGISTRY_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd)
}

fn publish_args<'a>(repo: &'a TestRepo, source: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "publish",
        source,
        "--repo",
        repo.repo.to_str().unwrap(),
        "--key",
        repo.key.to_str().unwrap(),
        "--json",
    ];
    v.extend_from_slice(extra);
    v
}

fn pull(repo: &TestRepo, name: &str) -> std::path::PathBuf {
    let dest = repo.scratch("pull");
    repo.pull_image(name, &dest);
    dest
}

#[test]
fn publish_by_tag_and_by_digest_equals_publishing_the_layout() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("registry");
    let l = layout(&repo, "layout");
    let digest = image(&l, "1", 7);
    push_oci(&l.dir, "1", "test/app:1", &reg);

    let host = reg.host();
    let src = format!("docker://{host}/test/app:1");
    let out = stratum(publish_args(&repo, &src, &["--insecure-registry", &host]));
    let reports = out.json();
    let r = &reports[0];
    assert_eq!(r["name"], format!("{host}/test/app:1"));
    assert_eq!(r["manifest_digest"], digest);
    assert_eq!(r["layers_ingested"], 2);
    assert!(r["downloaded_bytes"].as_u64().unwrap() > 0);

    // The same image from the layout, in another repository: same tree.
    let local = TestRepo::new("local");
    local.publish_one(&format!("oci:{}:1", l.dir.display()), Some("local/app:1"));
    support::compare::assert_trees_equal(
        &pull(&local, "local/app:1"),
        &pull(&repo, &format!("{host}/test/app:1")),
        &support::compare::CompareOpts::default(),
        "registry vs layout publish",
    );

    // By digest: the same manifest, so nothing is downloaded again.
    reg.forget_requests();
    let pinned = format!("docker://{host}/test/app@{digest}");
    let r = &stratum(publish_args(
        &repo,
        &pinned,
        &["--insecure-registry", &host],
    ))
    .json()[0];
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(r["name"], format!("{host}/test/app:sha256-{}", &hex[..12]));
    assert_eq!(r["layers_skipped"], 2);
    assert_eq!(
        reg.blob_gets(),
        0,
        "layers already in the repository are never downloaded"
    );
    repo.check();
}

#[test]
fn a_plain_registry_without_insecure_registry_is_refused_with_a_hint() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("registry");
    let l = layout(&repo, "layout");
    image(&l, "1", 1);
    push_oci(&l.dir, "1", "test/app:1", &reg);
    let before = repo.revision();
    let src = format!("docker://{}/test/app:1", reg.host());
    let out = stratum_raw(publish_args(&repo, &src, &[])).assert_clean_failure();
    assert!(
        out.stderr_str().contains("--insecure-registry"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(repo.revision(), before);
}

#[test]
fn tls_registry_with_basic_auth_from_flags_or_auth_file() {
    if !require_tls_registry() {
        return;
    }
    let reg = Registry::start_tls_auth("alice", "s3cret");
    let repo = TestRepo::new("registry");
    let l = layout(&repo, "layout");
    image(&l, "1", 2);
    push_oci(&l.dir, "1", "team/app:1", &reg);
    let ca = reg.ca_file().unwrap();
    let ca = ca.to_str().unwrap();
    let src = format!("docker://{}/team/app:1", reg.host());
    let home = repo.scratch("home");
    std::fs::create_dir_all(&home).unwrap();
    let home = home.to_str().unwrap();
    let no_creds = [("HOME", home), ("REGISTRY_AUTH_FILE", "/nonexistent")];

    // No CA: the certificate is not trusted.
    let out = stratum_env(&publish_args(&repo, &src, &[]), &no_creds).assert_clean_failure();
    assert!(
        out.stderr_str().contains("--registry-ca"),
        "{}",
        out.stderr_str()
    );
    // CA but no credentials: refused, and the message says how to give them.
    let out = stratum_env(
        &publish_args(&repo, &src, &["--registry-ca", ca]),
        &no_creds,
    )
    .assert_clean_failure();
    let err = out.stderr_str();
    assert!(err.contains("credentials") && err.contains("401"), "{err}");
    // Wrong password.
    let bad = publish_args(
        &repo,
        &src,
        &[
            "--registry-ca",
            ca,
            "--registry-user",
            "alice",
            "--registry-password",
            "nope",
        ],
    );
    stratum_env(&bad, &no_creds).assert_clean_failure();
    assert_eq!(repo.revision(), 1);

    // Flags.
    let ok = publish_args(
        &repo,
        &src,
        &[
            "--registry-ca",
            ca,
            "--registry-user",
            "alice",
            "--registry-password",
            "s3cret",
        ],
    );
    let out = stratum_env(&ok, &no_creds).assert_success();
    assert_eq!(out.json()[0]["status"], "published");

    // An auth file (podman/skopeo's auth.json), in another repository.
    let other = TestRepo::new("authfile");
    let auth = other.scratch("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host(),
            base64("alice:s3cret")
        ),
    )
    .unwrap();
    let out = stratum_env(
        &publish_args(&other, &src, &["--registry-ca", ca]),
        &[
            ("HOME", home),
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    )
    .assert_success();
    assert_eq!(out.json()[0]["status"], "published");
    other.check();
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn multi_arch_index_publishes_each_platform_and_names_the_hosts() {
    if !require_registry() {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        support::skip("the multi-arch test assumes an amd64 host");
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("multiarch");
    let ma = build_multiarch_default(&repo.scratch("ma"), "1");
    push_multiarch(&ma, "test/multi:1", &reg);
    let host = reg.host();
    let src = format!("docker://{host}/test/multi:1");
    let base = format!("{host}/test/multi:1");

    // Default: the host's platform only, under the plain name.
    let r = stratum(publish_args(&repo, &src, &["--insecure-registry", &host])).json();
    assert_eq!(r.as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r[0]["name"], base);
    assert_eq!(r[0]["platform"], "linux/amd64");
    assert_eq!(r[0]["manifest_digest"], ma.image("amd64").manifest_digest);

    // Every platform: per-platform names, and NAME:TAG on the host's.
    let all = TestRepo::new("all");
    let r = stratum(publish_args(
        &all,
        &src,
        &["--insecure-registry", &host, "--all-platforms"],
    ))
    .json();
    let names: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&base.as_str()), "{names:?}");
    assert!(
        names.contains(&format!("{base}+linux-amd64").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{base}+linux-arm64-v8").as_str()),
        "{names:?}"
    );
    assert_eq!(
        all.image(&base)["manifest_digest"],
        ma.image("amd64").manifest_digest
    );
    assert_eq!(
        all.image(&format!("{base}+linux-arm64-v8"))["manifest_digest"],
        ma.image("arm64").manifest_digest
    );
    let arm = pull(&all, &format!("{base}+linux-arm64-v8"));
    assert_eq!(
        std::fs::read(arm.join("etc/platform")).unwrap(),
        b"linux/arm64/v8\n"
    );
    let amd = pull(&all, &format!("{base}+linux-amd64"));
    assert_eq!(
        std::fs::read(amd.join("etc/platform")).unwrap(),
        b"linux/amd64\n"
    );
    all.check();

    // One named platform; an absent one is refused with the list.
    let one = TestRepo::new("one");
    let r = stratum(publish_args(
        &one,
        &src,
        &["--insecure-registry", &host, "--platform", "linux/arm64"],
    ))
    .json();
    assert_eq!(r[0]["platform"], "linux/arm64/v8");
    let out = stratum_raw(publish_args(
        &one,
        &src,
        &["--insecure-registry", &host, "--platform", "linux/s390x"],
    ))
    .assert_clean_failure();
    let err = out.stderr_str();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn registry_429_and_503_are_retried_and_a_broken_transfer_resumes() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("faults");
    let l = layout(&repo, "layout");
    image(&l, "1", 3);
    push_oci(&l.dir, "1", "test/app:1", &reg);
    let proxy = FaultProxy::start(&reg);
    proxy.fail_next_matching(2, "/manifests/", 429);
    proxy.fail_next_matching(2, "/blobs/", 503);
    let layer = &l.layers("1")[0].0;
    proxy.inject(
        1,
        Some(&format!("/blobs/{layer}")),
        Fault::Truncate { body_bytes: 1000 },
    );
    let host = proxy.host();
    let src = format!("docker://{host}/test/app:1");
    let r = &stratum(publish_args(&repo, &src, &["--insecure-registry", &host])).json()[0];
    assert_eq!(r["status"], "published");
    assert!(proxy.faults() >= 5, "faults injected: {}", proxy.faults());
    let local = TestRepo::new("local");
    local.publish_one(&format!("oci:{}:1", l.dir.display()), Some("local/app:1"));
    support::compare::assert_trees_equal(
        &pull(&local, "local/app:1"),
        &pull(&repo, &format!("{host}/test/app:1")),
        &support::compare::CompareOpts::default(),
        "publish through faults",
    );
    repo.check();
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused_and_the_repository_is_unchanged() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("corrupt");
    let l = layout(&repo, "layout");
    image(&l, "1", 4);
    push_oci(&l.dir, "1", "test/app:1", &reg);
    let (layer, _) = &l.layers("1")[1];
    reg.corrupt_blob(layer);
    let before = repo.manifest_bytes();
    let src = format!("docker://{}/test/app:1", reg.host());
    let out = stratum_raw(publish_args(
        &repo,
        &src,
        &["--insecure-registry", &reg.host()],
    ))
    .assert_clean_failure();
    let err = out.stderr_str();
    assert!(err.contains("layer 1") && err.contains("digest"), "{err}");
    assert_eq!(
        repo.manifest_bytes(),
        before,
        "the revision must not change"
    );
    repo.check();
}

// ---------------------------------------------------------------------------
// sync

struct Sync<'a> {
    repo: &'a TestRepo,
    file: std::path::PathBuf,
}

impl<'a> Sync<'a> {
    fn new(repo: &'a TestRepo, reg: &Registry, images: &[&str]) -> Sync<'a> {
        let file = repo.tmp.path().join("wishlist.yaml");
        let s = Sync { repo, file };
        s.write(reg, images);
        s
    }

    fn write(&self, reg: &Registry, images: &[&str]) {
        self.write_with(reg, images, "");
    }

    fn write_with(&self, reg: &Registry, images: &[&str], extra: &str) {
        let mut text = format!(
            "version: 1\nrepository: {}\nsigning_key: {}\nregistries:\n  \"{}\": {{ insecure: true }}\nimages:\n",
            self.repo.repo.display(),
            self.repo.key.display(),
            reg.host()
        );
        if images.is_empty() {
            text = text.replace("images:\n", "images: []\n");
        }
        for i in images {
            text.push_str(&format!("  - docker://{}/{i}\n", reg.host()));
        }
        text.push_str(extra);
        std::fs::write(&self.file, text).unwrap();
    }

    fn raw(&self, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> =
            vec!["sync".into(), self.file.clone().into(), "--json".into()];
        args.extend(extra.iter().map(OsString::from));
        stratum_raw(args)
    }

    fn run(&self, extra: &[&str]) -> Value {
        self.raw(extra).assert_success().json()
    }

    fn events(&self) -> Vec<Value> {
        let log = self.file.with_file_name("wishlist.events.jsonl");
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn names(report: &Value, group: &str) -> Vec<String> {
    let mut v: Vec<String> = report[group]
        .as_array()
        .unwrap_or_else(|| panic!("no {group} in {report:#}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn sync_expands_globs_keeps_updates_and_retires_in_one_revision_each() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("sync");
    let h = reg.host();
    let l = layout(&repo, "layout");
    for (tag, seed) in [("1.0", 10), ("1.1", 11), ("2.0", 20), ("1.1-new", 12)] {
        image(&l, tag, seed);
    }
    push_oci(&l.dir, "1.0", "team/app:1.0", &reg);
    push_oci(&l.dir, "1.1", "team/app:1.1", &reg);
    push_oci(&l.dir, "2.0", "team/app:2.0", &reg);
    push_oci(&l.dir, "2.0", "team/other:latest", &reg);
    let s = Sync::new(&repo, &reg, &["team/app:1.*", "team/other:latest"]);

    let r = s.run(&[]);
    assert_eq!(
        names(&r, "added"),
        [
            format!("{h}/team/app:1.0"),
            format!("{h}/team/app:1.1"),
            format!("{h}/team/other:latest")
        ]
    );
    assert_eq!(r["revision"], 2);
    assert_eq!(r["new_revision"], true);

    // Unchanged: no blob is downloaded and no revision is made.
    reg.forget_requests();
    let r = s.run(&[]);
    assert_eq!(names(&r, "kept").len(), 3, "{r:#}");
    assert!(names(&r, "added").is_empty() && names(&r, "updated").is_empty());
    assert_eq!(r["new_revision"], false);
    assert_eq!(
        reg.blob_gets(),
        0,
        "an unchanged sync must not download blobs: {:?}",
        reg.requests()
    );
    assert_eq!(repo.revision(), 2);

    // A tag moved: only its new layer and config are downloaded.
    push_oci(&l.dir, "1.1-new", "team/app:1.1", &reg);
    reg.forget_requests();
    let r = s.run(&[]);
    assert_eq!(names(&r, "updated"), [format!("{h}/team/app:1.1")]);
    let u = &r["updated"][0];
    assert_eq!(u["layers_ingested"], 1);
    assert_eq!(u["layers_skipped"], 1);
    assert!(u["previous_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        reg.blob_gets(),
        2,
        "one layer and one config: {:?}",
        reg.requests()
    );
    assert_eq!(repo.revision(), 3);

    // Dropped from the wishlist: a dry run reports it, the real run retires it.
    s.write(&reg, &["team/app:1.*"]);
    let r = s.run(&["--dry-run"]);
    assert_eq!(names(&r, "retired"), [format!("{h}/team/other:latest")]);
    assert_eq!(repo.revision(), 3);
    let r = s.run(&[]);
    assert_eq!(names(&r, "retired"), [format!("{h}/team/other:latest")]);
    assert_eq!(repo.revision(), 4);
    let listed: Vec<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !listed.contains(&format!("{h}/team/other:latest")),
        "{listed:?}"
    );
    // Its tree stays until garbage collection.
    let other = stratum([
        "ls".into(),
        repo.repo.clone().into_os_string(),
        OsString::from("/flat"),
    ]);
    assert!(other.success());
    repo.check();

    let actions: Vec<String> = s
        .events()
        .iter()
        .map(|e| format!("{}:{}", e["action"], e["status"]))
        .collect();
    for want in [
        "\"add\":\"ok\"",
        "\"keep\":\"ok\"",
        "\"update\":\"ok\"",
        "\"retire\":\"dry-run\"",
        "\"retire\":\"ok\"",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
}

#[test]
fn sync_goes_on_after_a_failing_image_and_exits_non_zero() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("sync-fail");
    let l = layout(&repo, "layout");
    image(&l, "1", 30);
    push_oci(&l.dir, "1", "team/good:1", &reg);
    let s = Sync::new(&repo, &reg, &["team/missing:1", "team/good:1"]);
    let out = s.raw(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_str());
    out.assert_no_panic();
    let r = out.json();
    assert_eq!(names(&r, "added"), [format!("{}/team/good:1", reg.host())]);
    let failed = &r["failed"][0];
    assert!(
        failed["error"].as_str().unwrap().contains("not found"),
        "{failed:#}"
    );
    assert_eq!(repo.revision(), 2);
    repo.check();
    // The good image stays when the registry is gone: failures retire nothing.
    drop(reg);
    let out = s.raw(&["--registry-attempts", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let r = out.json();
    assert!(names(&r, "retired").is_empty(), "{r:#}");
    assert_eq!(repo.revision(), 2);
}

#[test]
fn sync_pushes_thin_images_by_pattern_once() {
    if !require_registry() {
        return;
    }
    let reg = Registry::start_plain();
    let repo = TestRepo::new("sync-thin");
    let l = layout(&repo, "layout");
    image(&l, "1", 40);
    push_oci(&l.dir, "1", "team/app:1", &reg);
    let s = Sync::new(&repo, &reg, &[]);
    s.write_with(
        &reg,
        &["team/app:1"],
        &format!(
            "thin_images:\n  pattern: \"{}/thin/{{repository}}:{{tag}}\"\n  urls: [\"http://127.0.0.1:9/\"]\n",
            reg.host()
        ),
    );
    let r = s.run(&[]);
    let pushes = r["thin_images"].as_array().unwrap();
    assert_eq!(pushes.len(), 1, "{r:#}");
    assert_eq!(
        pushes[0]["reference"],
        format!("docker://{}/thin/team/app:1", reg.host())
    );
    assert_eq!(pushes[0]["unchanged"], false);
    let raw: Value =
        serde_json::from_slice(&support::registry::inspect_raw(&reg, "thin/team/app:1")).unwrap();
    assert_eq!(
        raw["artifactType"],
        "application/vnd.stratum.thin-image.v1+json"
    );
    // Again: nothing to publish, nothing to push.
    let r = s.run(&[]);
    assert_eq!(r["thin_images"][0]["unchanged"], true, "{r:#}");
    assert!(s
        .events()
        .iter()
        .any(|e| e["action"] == "push" && e["status"] == "ok"));
}
