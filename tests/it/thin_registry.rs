//! Thin images in registries: `stratum thin push` pushes the descriptor of a
//! published image to a real `docker-registry` as an OCI artifact (an image
//! index of them for a multi-platform image), and `pull --thin docker://…` /
//! `mount --thin docker://…` fetch it, verify it and read the image it pins
//! from `stratum serve`. Also `stratum init --url` (the repository's default
//! URLs). Skipped, with a message, without docker-registry and skopeo (and
//! htpasswd + openssl for the TLS registry, FUSE for the mount).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::compare::compare_trees;
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::registry::{
    build_multiarch_default, push_multiarch, push_oci, require_registry, require_tls_registry,
    Registry, ACCEPT_MANIFESTS,
};
use crate::support::services::{http_client, StratumServe};
use crate::support::{run_cmd, stratum, stratum_bin, Output, TestRepo};
use serde_json::{json, Value};
use stratum_registry::{Artifact, IndexEntry, Platform, Reference, Registry as Client};
use stratum_thin_image::{ThinImage, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MEDIA_TYPE};

const IMAGE: &str = "test/app:1";

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// A two-layer image `LAYOUT:1` (a file replaced, one deleted, a symlink).
fn app_layout(dir: &Path) -> Layout {
    let l = Layout::create(dir);
    l.add_image(
        "1",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"bin/"),
                TarEntry::file(b"bin/app", b"#!/bin/sh\necho app\n").mode(0o755),
                TarEntry::file(b"etc/app.conf", b"answer = 42\n"),
                TarEntry::file(b"etc/gone", b"deleted by the next layer\n"),
                TarEntry::symlink(b"bin/run", b"app"),
            ]),
            Layer::uncompressed(&[
                TarEntry::file(b"etc/app.conf", b"answer = 43\n"),
                TarEntry::whiteout(b"etc/", b"gone"),
                TarEntry::file(b"usr/share/data.bin", &vec![7u8; 300_000]),
            ]),
        ],
    );
    l
}

/// `stratum ARGS…` with a credential-free environment: no Docker or podman
/// auth file can lend credentials, so only the flags count.
fn stratum_isolated<S: AsRef<OsStr>>(home: &Path, args: &[S]) -> Output {
    let empty = home.join("no-credentials");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = Command::new(stratum_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("STRATUM_REGISTRY_USER")
        .env_remove("STRATUM_REGISTRY_PASSWORD")
        .env("HOME", &empty)
        .env("DOCKER_CONFIG", &empty)
        .env("REGISTRY_AUTH_FILE", empty.join("auth.json"))
        .env("XDG_RUNTIME_DIR", &empty);
    run_cmd(cmd)
}

/// The OCI name of this host's platform, as `Platform::host()` gives it.
fn host_platform() -> String {
    Platform::host().to_string()
}

/// A published repository served by `stratum serve`, and its public key.
struct Published {
    repo: TestRepo,
    serve: StratumServe,
    pubkey: PathBuf,
}

fn published_app() -> Published {
    let repo = TestRepo::new("thin-registry");
    let layout = app_layout(&repo.scratch("layout"));
    repo.publish_one(&format!("oci:{}:1", layout.dir.display()), Some(IMAGE));
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let pubkey = stratum_catalog::manifest::public_key_path(&repo.key);
    Published {
        repo,
        serve,
        pubkey,
    }
}

impl Published {
    /// `stratum thin push REPO --image IMAGE DEST --url SERVE --json EXTRA…`.
    fn push(&self, image: &str, dest: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "thin".into(),
            "push".into(),
            s(&self.repo.repo),
            "--image".into(),
            image.into(),
            dest.into(),
            "--url".into(),
            self.serve.url.clone(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        stratum_isolated(self.repo.tmp.path(), &args)
    }

    /// `stratum pull SERVE --pubkey KEY --thin SPEC DEST --cache … EXTRA…`.
    fn pull_thin(&self, spec: &str, dest: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "pull".into(),
            self.serve.url.clone(),
            "--pubkey".into(),
            s(&self.pubkey),
            "--thin".into(),
            spec.into(),
            s(dest),
            "--cache".into(),
            s(&self.repo.scratch("cache")),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        stratum_isolated(self.repo.tmp.path(), &args)
    }

    /// `stratum pull REPO --image NAME DEST` (the local reference tree).
    fn pull_local(&self, name: &str) -> PathBuf {
        let dest = self.repo.scratch("local");
        self.repo.pull_image(name, &dest);
        dest
    }
}

/// GET `/v2/<repo>/manifests/<reference>` (any manifest type) as JSON.
fn registry_manifest(reg: &Registry, repo: &str, reference: &str) -> Value {
    let r = http_client()
        .get(reg.at(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "manifest {repo}:{reference}");
    serde_json::from_slice(&r.bytes().unwrap()).unwrap()
}

fn registry_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let r = http_client()
        .get(reg.at(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "blob {digest}");
    r.bytes().unwrap().to_vec()
}

/// A client of the plain registry `reg` (for hand-made pushes).
fn client(reg: &Registry) -> std::sync::Arc<Client> {
    let config = stratum_registry::RegistryConfig {
        insecure: vec![reg.host()],
        use_credential_files: false,
        ..Default::default()
    };
    std::sync::Arc::new(Client::new(config).unwrap())
}

fn assert_empty_or_missing(dir: &Path) {
    assert!(
        !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none(),
        "{} must not be written",
        dir.display()
    );
}

// ===========================================================================

/// Push to a plain registry, then pull and mount by reference: the same tree
/// as a pull by name. The artifact has stratum's types and carries the exact
/// descriptor `stratum thin` prints; a second push changes nothing; a tag
/// that holds a container image is not overwritten.
#[test]
fn push_then_pull_and_mount_by_reference() {
    if !require_registry() {
        return;
    }
    let p = published_app();
    let reg = Registry::start_plain();
    let host = reg.host();
    let dest = format!("docker://{host}/thin/app:1");

    let out = p
        .push(IMAGE, &dest, &["--insecure-registry", &host])
        .assert_success();
    let pushed = out.json();
    let platform = p.repo.image(IMAGE)["platform"].clone();
    assert_eq!(pushed["reference"], dest.as_str(), "{pushed}");
    assert_eq!(pushed["platforms"], json!([platform]), "{pushed}");
    assert_eq!(pushed["unchanged"], false);
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{pushed}");

    // The artifact, as the registry holds it.
    let m = registry_manifest(&reg, "thin/app", "1");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], ARTIFACT_TYPE);
    assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["layers"][0]["mediaType"], MEDIA_TYPE);
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], IMAGE);
    assert!(m["annotations"]["org.opencontainers.image.created"].is_string());
    let config: Value = serde_json::from_slice(&registry_blob(
        &reg,
        "thin/app",
        m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["image"], IMAGE);
    assert_eq!(config["schemaVersion"], 1);
    let blob = registry_blob(&reg, "thin/app", m["layers"][0]["digest"].as_str().unwrap());
    let printed = stratum([
        "thin",
        &s(&p.repo.repo),
        "--image",
        IMAGE,
        "--url",
        &p.serve.url,
    ])
    .stdout;
    assert_eq!(
        String::from_utf8_lossy(&blob),
        String::from_utf8_lossy(&printed),
        "the artifact's blob is the descriptor `stratum thin` prints"
    );

    // Pushing the same descriptor again changes nothing.
    let again = p
        .push(IMAGE, &dest, &["--insecure-registry", &host])
        .assert_success()
        .json();
    assert_eq!(again["unchanged"], true, "{again}");
    assert_eq!(again["digest"], digest.as_str());
    // The text output names the reference and the digest.
    let text = stratum_isolated(
        p.repo.tmp.path(),
        &[
            "thin",
            "push",
            &s(&p.repo.repo),
            "--image",
            IMAGE,
            &dest,
            "--url",
            &p.serve.url,
            "--insecure-registry",
            &host,
        ],
    )
    .assert_success()
    .stdout_str();
    assert!(text.contains(&format!("{dest}@{digest}")), "{text}");

    // --prefetch goes into the pushed descriptor.
    let list = p.repo.scratch("prefetch");
    std::fs::write(&list, "# first\n/bin/app\n/etc/app.conf\n").unwrap();
    let with_list = format!("docker://{host}/thin/app:prefetch");
    p.push(
        IMAGE,
        &with_list,
        &["--insecure-registry", &host, "--prefetch", &s(&list)],
    )
    .assert_success();
    let m = registry_manifest(&reg, "thin/app", "prefetch");
    let blob = registry_blob(&reg, "thin/app", m["layers"][0]["digest"].as_str().unwrap());
    let thin = ThinImage::from_json(&blob).unwrap();
    assert_eq!(thin.prioritized_files, vec!["/bin/app", "/etc/app.conf"]);

    // pull --thin docker://… equals pull --image.
    let local = p.pull_local(IMAGE);
    let dest_dir = p.repo.scratch("pulled");
    p.pull_thin(&dest, &dest_dir, &["--insecure-registry", &host])
        .assert_success();
    compare_trees(&local, &dest_dir).unwrap_or_else(|d| {
        panic!(
            "pull --thin docker:// differs from pull --image:\n{}",
            d.join("\n")
        )
    });
    // Pinned by digest works too.
    let pinned = format!("docker://{host}/thin/app@{digest}");
    let dest_dir = p.repo.scratch("pulled-pinned");
    p.pull_thin(&pinned, &dest_dir, &["--insecure-registry", &host])
        .assert_success();
    compare_trees(&local, &dest_dir).unwrap();

    // A tag that is not there, and a registry spoken to over TLS by mistake.
    let missing = p.repo.scratch("missing");
    let err = p
        .pull_thin(
            &format!("docker://{host}/thin/app:nope"),
            &missing,
            &["--insecure-registry", &host],
        )
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("not found"), "{err}");
    assert_empty_or_missing(&missing);
    let err = p
        .pull_thin(&dest, &missing, &["--registry-attempts", "1"])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("--insecure-registry"), "{err}");
    assert_empty_or_missing(&missing);

    // A tag holding a container image is not overwritten by a thin push.
    let layout = app_layout(&p.repo.scratch("img-layout"));
    push_oci(&layout.dir, "1", "img:1", &reg);
    let before = registry_manifest(&reg, "img", "1");
    let err = p
        .push(
            IMAGE,
            &format!("docker://{host}/img:1"),
            &["--insecure-registry", &host],
        )
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(registry_manifest(&reg, "img", "1"), before);
    // A digest is not somewhere to push to.
    let err = p
        .push(IMAGE, &pinned, &["--insecure-registry", &host])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("tag"), "{err}");

    // mount --thin docker://… shows the same tree.
    if !require_fuse() {
        return;
    }
    let src = MountSource::dir(Path::new(&format!("--thin={dest}")), Some(&p.pubkey));
    let m = Mount::start_with(
        &src,
        &p.repo.scratch("mnt"),
        None,
        &[
            "--cache",
            &s(&p.repo.scratch("mount-cache")),
            "--insecure-registry",
            &host,
        ],
    );
    compare_trees(&local, m.path()).unwrap_or_else(|d| {
        panic!(
            "mount --thin docker:// differs from pull --image:\n{}",
            d.join("\n")
        )
    });
    m.unmount();
}

/// A registry on TLS with basic auth: push and pull with `--registry-ca` and
/// `--registry-user/--registry-password` (or the environment); without the
/// credentials, or without the CA, both are refused with a message that says
/// what to give.
#[test]
fn tls_registry_with_credentials() {
    if !require_tls_registry() {
        return;
    }
    let p = published_app();
    let reg = Registry::start_tls_auth("stratum", "s3cret pw");
    let host = reg.host();
    let ca = s(&reg.ca_file().unwrap());
    let dest = format!("docker://{host}/thin/app:1");
    let creds = [
        "--registry-ca",
        ca.as_str(),
        "--registry-user",
        "stratum",
        "--registry-password",
        "s3cret pw",
    ];
    let few = ["--registry-attempts", "1"];

    // Refused: no credentials; no CA.
    let err = p
        .push(IMAGE, &dest, &["--registry-ca", &ca])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("--registry-user"), "{err}");
    let err = p
        .push(IMAGE, &dest, &[&creds[2..], &few[..]].concat())
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("--registry-ca"), "{err}");
    let err = p
        .push(
            IMAGE,
            &dest,
            &[
                "--registry-ca",
                &ca,
                "--registry-user",
                "stratum",
                "--registry-password",
                "wrong",
            ],
        )
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("credentials"), "{err}");

    let pushed = p.push(IMAGE, &dest, &creds).assert_success().json();
    assert_eq!(pushed["unchanged"], false, "{pushed}");

    let local = p.pull_local(IMAGE);
    let dest_dir = p.repo.scratch("pulled");
    p.pull_thin(&dest, &dest_dir, &creds).assert_success();
    compare_trees(&local, &dest_dir).unwrap();

    // The credentials from the environment.
    let dest_dir = p.repo.scratch("pulled-env");
    let mut cmd = Command::new(stratum_bin());
    let empty = p.repo.tmp.path().join("no-credentials");
    cmd.args([
        "pull",
        &p.serve.url,
        "--pubkey",
        &s(&p.pubkey),
        "--thin",
        &dest,
        &s(&dest_dir),
        "--cache",
        &s(&p.repo.scratch("cache")),
        "--registry-ca",
        &ca,
    ])
    .env("HOME", &empty)
    .env("DOCKER_CONFIG", &empty)
    .env("REGISTRY_AUTH_FILE", empty.join("auth.json"))
    .env("STRATUM_REGISTRY_USER", "stratum")
    .env("STRATUM_REGISTRY_PASSWORD", "s3cret pw");
    run_cmd(cmd).assert_success();
    compare_trees(&local, &dest_dir).unwrap();

    // Without credentials the pull is refused, and writes nothing.
    let refused = p.repo.scratch("refused");
    let err = p
        .pull_thin(&dest, &refused, &["--registry-ca", &ca])
        .assert_clean_failure()
        .stderr_str();
    assert!(
        err.contains("credentials") && err.contains("--registry-user"),
        "{err}"
    );
    assert_empty_or_missing(&refused);
}

/// An image published for two platforms (`publish docker://… --all-platforms`)
/// is pushed as one artifact per platform under an image index; `pull --thin`
/// takes this host's, like `pull --image NAME:TAG` does; an index without
/// this host's platform is refused with the list of what it has.
#[test]
fn multi_platform_index() {
    if !require_registry() {
        return;
    }
    let repo = TestRepo::new("thin-multi");
    let reg = Registry::start_plain();
    let host = reg.host();
    let ma = build_multiarch_default(&repo.scratch("ma"), "1");
    push_multiarch(&ma, "multi:1", &reg);
    let out = stratum([
        "publish",
        &format!("docker://{host}/multi:1"),
        "--repo",
        &s(&repo.repo),
        "--key",
        &s(&repo.key),
        "--as",
        "test/multi:1",
        "--all-platforms",
        "--insecure-registry",
        &host,
        "--json",
    ]);
    assert!(out.json().is_array());
    let names: BTreeSet<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    for n in [
        "test/multi:1",
        "test/multi:1+linux-amd64",
        "test/multi:1+linux-arm64-v8",
    ] {
        assert!(names.contains(n), "{n} not in {names:?}");
    }
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let p = Published {
        pubkey: stratum_catalog::manifest::public_key_path(&repo.key),
        repo,
        serve,
    };

    let dest = format!("docker://{host}/thin/multi:1");
    let pushed = p
        .push("test/multi:1", &dest, &["--insecure-registry", &host])
        .assert_success()
        .json();
    let platforms: BTreeSet<&str> = pushed["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64", "linux/arm64/v8"]),
        "{pushed}"
    );
    // The primary platform (what test/multi:1 is) comes first.
    let primary = p.repo.image("test/multi:1")["platform"].clone();
    assert_eq!(pushed["platforms"][0], primary, "{pushed}");

    let index = registry_manifest(&reg, "thin/multi", "1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["artifactType"], ARTIFACT_TYPE);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for e in entries {
        assert_eq!(e["artifactType"], ARTIFACT_TYPE, "{e}");
        assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        let os_arch = format!("{}/{}", e["platform"]["os"], e["platform"]["architecture"]);
        assert!(os_arch.contains("linux"), "{e}");
        // Each entry is a thin-image artifact of that platform's image.
        let m = registry_manifest(&reg, "thin/multi", e["digest"].as_str().unwrap());
        assert_eq!(m["artifactType"], ARTIFACT_TYPE);
        let blob = registry_blob(
            &reg,
            "thin/multi",
            m["layers"][0]["digest"].as_str().unwrap(),
        );
        let thin = ThinImage::from_json(&blob).unwrap();
        assert_eq!(thin.platform.to_oci().os, e["platform"]["os"]);
        assert_eq!(
            thin.platform.to_oci().architecture,
            e["platform"]["architecture"]
        );
        assert!(thin.image.starts_with("test/multi:1+"), "{}", thin.image);
    }
    let again = p
        .push("test/multi:1", &dest, &["--insecure-registry", &host])
        .assert_success()
        .json();
    assert_eq!(again["unchanged"], true, "{again}");
    assert_eq!(again["digest"], pushed["digest"]);

    // This host's platform, if the index has it.
    let host_platform = host_platform();
    let mine = p
        .repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["name"].as_str().unwrap().starts_with("test/multi:1+")
                && host_platform
                    .parse::<Platform>()
                    .unwrap()
                    .matches(&i["platform"].as_str().unwrap().parse().unwrap())
        })
        .map(|i| i["name"].as_str().unwrap().to_owned());
    let dest_dir = p.repo.scratch("pulled");
    let out = p.pull_thin(&dest, &dest_dir, &["--insecure-registry", &host]);
    match &mine {
        Some(name) => {
            out.assert_success();
            let local = p.pull_local(name);
            compare_trees(&local, &dest_dir).unwrap_or_else(|d| {
                panic!(
                    "pull --thin of the index differs from {name}:\n{}",
                    d.join("\n")
                )
            });
            let arch = host_platform.split('/').nth(1).unwrap();
            let content = std::fs::read_to_string(dest_dir.join("etc/platform")).unwrap();
            assert!(content.contains(arch), "{content}");
            // pull --image NAME:TAG takes this host's platform too.
            let by_name = p.pull_local("test/multi:1");
            compare_trees(&local, &by_name).unwrap();
        }
        None => {
            let err = out.assert_clean_failure().stderr_str();
            assert!(err.contains("linux/amd64"), "{err}");
        }
    }

    // An index without this host's platform: refused, listing what it has.
    let c = client(&reg);
    let r = Reference::parse(&dest).unwrap();
    let other = entries
        .iter()
        .find(|e| {
            let p = Platform::new(
                e["platform"]["os"].as_str().unwrap(),
                e["platform"]["architecture"].as_str().unwrap(),
                e["platform"]["variant"].as_str(),
            );
            !Platform::host().matches(&p)
        })
        .unwrap();
    let other_platform = Platform::new(
        other["platform"]["os"].as_str().unwrap(),
        other["platform"]["architecture"].as_str().unwrap(),
        other["platform"]["variant"].as_str(),
    );
    let foreign = r.with_tag("foreign");
    c.push_artifact_index(
        &foreign,
        ARTIFACT_TYPE,
        &[IndexEntry {
            manifest: stratum_registry::PushedManifest {
                digest: other["digest"].as_str().unwrap().to_owned(),
                size: other["size"].as_u64().unwrap(),
            },
            platform: other_platform.clone(),
            artifact_type: ARTIFACT_TYPE.into(),
            annotations: Default::default(),
        }],
        &Default::default(),
    )
    .unwrap();
    let refused = p.repo.scratch("foreign");
    let err = p
        .pull_thin(
            &foreign.to_string(),
            &refused,
            &["--insecure-registry", &host],
        )
        .assert_clean_failure()
        .stderr_str();
    assert!(
        err.contains(&host_platform) && err.contains(&other_platform.to_string()),
        "{err}"
    );
    assert_empty_or_missing(&refused);

    // An index entry that lies about its platform is refused.
    if let Some(mine_entry) = entries.iter().find(|e| e["digest"] != other["digest"]) {
        let liar = r.with_tag("liar");
        c.push_artifact_index(
            &liar,
            ARTIFACT_TYPE,
            &[IndexEntry {
                manifest: stratum_registry::PushedManifest {
                    digest: other["digest"].as_str().unwrap().to_owned(),
                    size: other["size"].as_u64().unwrap(),
                },
                platform: Platform::new(
                    mine_entry["platform"]["os"].as_str().unwrap(),
                    mine_entry["platform"]["architecture"].as_str().unwrap(),
                    mine_entry["platform"]["variant"].as_str(),
                ),
                artifact_type: ARTIFACT_TYPE.into(),
                annotations: Default::default(),
            }],
            &Default::default(),
        )
        .unwrap();
        if mine.is_some() {
            let err = p
                .pull_thin(&liar.to_string(), &refused, &["--insecure-registry", &host])
                .assert_clean_failure()
                .stderr_str();
            assert!(err.contains("descriptor is for"), "{err}");
            assert_empty_or_missing(&refused);
        }
    }
}

/// Artifacts altered by hand are refused: a descriptor whose flat catalog id
/// was changed (to nothing, or to another real tree's catalog), a config
/// that names another image, an artifact of another type, a blob corrupted
/// in the registry's storage, and a pull with another key.
#[test]
fn tampered_artifacts_are_refused() {
    if !require_registry() {
        return;
    }
    let p = published_app();
    let reg = Registry::start_plain();
    let host = reg.host();
    let dest = format!("docker://{host}/thin/app:1");
    p.push(IMAGE, &dest, &["--insecure-registry", &host])
        .assert_success();
    let c = client(&reg);
    let r = Reference::parse(&dest).unwrap();
    let (genuine, _) = c.pull_artifact(&r, ARTIFACT_TYPE, MEDIA_TYPE).unwrap();
    let desc: Value = serde_json::from_slice(&genuine.payload).unwrap();

    let push_edited = |tag: &str, edit: &dyn Fn(&mut Artifact)| -> String {
        let mut a = genuine.clone();
        edit(&mut a);
        let t = r.with_tag(tag);
        c.push_artifact(&t, &a).unwrap();
        t.to_string()
    };
    let edit_payload = |f: &dyn Fn(&mut Value)| {
        let mut v = desc.clone();
        f(&mut v);
        serde_json::to_vec_pretty(&v).unwrap()
    };
    let refused = |spec: &str, needle: &str| {
        let dest_dir = p.repo.scratch("refused");
        let err = p
            .pull_thin(spec, &dest_dir, &["--insecure-registry", &host])
            .assert_clean_failure()
            .stderr_str();
        assert!(err.contains(needle), "{spec}: {err:?} lacks {needle:?}");
        assert_empty_or_missing(&dest_dir);
    };

    let layer_catalog = desc["layers"][0]["catalog"].clone();
    let payload = edit_payload(&|v| v["flat"]["catalog"] = json!("ab".repeat(32)));
    let t = push_edited("unknown-catalog", &|a| a.payload = payload.clone());
    refused(&t, "abab");
    let payload = edit_payload(&|v| v["flat"]["catalog"] = layer_catalog.clone());
    let t = push_edited("other-tree", &|a| a.payload = payload.clone());
    refused(&t, "not the pinned catalog");
    let payload = edit_payload(&|v| v["flat"]["catalog"] = json!("AB".repeat(32)));
    let t = push_edited("bad-id", &|a| a.payload = payload.clone());
    refused(&t, "flat.catalog");
    let t = push_edited("other-image", &|a| {
        let mut v: Value = serde_json::from_slice(&a.config).unwrap();
        v["image"] = json!("test/other:1");
        a.config = serde_json::to_vec(&v).unwrap();
    });
    refused(&t, "config says image");
    let t = push_edited("not-thin", &|a| {
        a.artifact_type = "application/vnd.example.other+json".into()
    });
    refused(&t, "artifact type");

    // Another key than the one the descriptor names.
    let other_key = p.repo.tmp.path().join("keys").join("other.key");
    stratum([OsStr::new("keygen"), other_key.as_os_str()]);
    let dest_dir = p.repo.scratch("other-key");
    let err = stratum_isolated(
        p.repo.tmp.path(),
        &[
            "pull",
            &p.serve.url,
            "--pubkey",
            &s(&stratum_catalog::manifest::public_key_path(&other_key)),
            "--thin",
            &dest,
            &s(&dest_dir),
            "--cache",
            &s(&p.repo.scratch("cache")),
            "--insecure-registry",
            &host,
        ],
    )
    .assert_clean_failure()
    .stderr_str();
    // (The repository's manifest does not verify with it, so the pull stops
    // there; the descriptor's fingerprint would refuse it next.)
    assert!(
        err.contains("does not verify") || err.contains("fingerprint"),
        "{err}"
    );

    // A blob corrupted in the registry's storage (served as it is).
    let m = registry_manifest(&reg, "thin/app", "1");
    reg.corrupt_blob(m["layers"][0]["digest"].as_str().unwrap());
    refused(&dest, "digest mismatch");
}

/// `stratum init --url` records default URLs in `.stratum/urls`; `thin`,
/// `thin push` and `publish --thin-dir` use them when `--url` is absent, and
/// `--url` overrides them. Without either, the error says what to do.
#[test]
fn init_records_default_urls() {
    let tmp = support::tempdir();
    let key = tmp.path().join("k.key");
    stratum([OsStr::new("keygen"), key.as_os_str()]);
    const U1: &str = "https://stratum.example.org/repo";
    const U2: &str = "http://10.0.0.1:8080/";

    // A bad URL is refused before anything is created.
    let bad = tmp.path().join("bad");
    support::stratum_fails(["init", &s(&bad), "--key", &s(&key), "--url", "ftp://x/"]);
    assert!(!bad.exists());

    let repo = tmp.path().join("repo");
    stratum([
        "init",
        &s(&repo),
        "--key",
        &s(&key),
        "--url",
        U1,
        "--url",
        U2,
    ]);
    assert_eq!(
        std::fs::read_to_string(repo.join(".stratum/urls")).unwrap(),
        format!("{U1}\n{U2}\n")
    );
    let layout = app_layout(&tmp.path().join("layout"));
    let thin_dir = tmp.path().join("thin-out");
    stratum([
        "publish",
        &format!("oci:{}:1", layout.dir.display()),
        "--repo",
        &s(&repo),
        "--key",
        &s(&key),
        "--as",
        IMAGE,
        "--thin-dir",
        &s(&thin_dir),
    ]);
    let written = std::fs::read(thin_dir.join("test_app_1.json")).unwrap();
    let thin = ThinImage::from_json(&written).unwrap();
    assert_eq!(thin.repository.urls, vec![U1.to_owned(), U2.to_owned()]);
    let printed = stratum(["thin", &s(&repo), "--image", IMAGE]).stdout;
    assert_eq!(printed, written);
    let explicit = stratum([
        "thin",
        &s(&repo),
        "--image",
        IMAGE,
        "--url",
        "https://other.example.org/",
    ])
    .stdout;
    let thin = ThinImage::from_json(&explicit).unwrap();
    assert_eq!(thin.repository.urls, vec!["https://other.example.org/"]);

    // Without defaults and without --url: a clear error, nothing published.
    let plain = tmp.path().join("plain");
    stratum(["init", &s(&plain), "--key", &s(&key)]);
    assert!(!plain.join(".stratum/urls").exists());
    let err = support::stratum_fails(["thin", &s(&plain), "--image", IMAGE]).stderr_str();
    assert!(
        err.contains("--url") && err.contains("stratum init"),
        "{err}"
    );
    let err = support::stratum_fails([
        "publish",
        &format!("oci:{}:1", layout.dir.display()),
        "--repo",
        &s(&plain),
        "--key",
        &s(&key),
        "--thin-dir",
        &s(&tmp.path().join("thin-plain")),
    ])
    .stderr_str();
    assert!(err.contains("--url"), "{err}");
    let images = stratum(["images", &s(&plain), "--json"]).json();
    assert_eq!(images, json!([]));
    let err = support::stratum_fails([
        "thin",
        "push",
        &s(&plain),
        "--image",
        IMAGE,
        "docker://127.0.0.1:1/thin/app:1",
    ])
    .stderr_str();
    assert!(err.contains("--url"), "{err}");
}
