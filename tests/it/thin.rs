//! `stratum thin` and `stratum publish --thin-dir`: the thin-image descriptor
//! of a published image, checked field by field against `stratum images
//! --json`, `stratum info --json`, the repository's key and the image's own
//! OCI config. Needs neither root nor umoci: images are hand-built OCI layouts.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{stratum, stratum_fails, stratum_raw, TestRepo};
use serde_json::{json, Value};
use stratum_catalog::manifest::{key_fingerprint, load_verifying_key, public_key_path};
use stratum_thin_image::{ThinImage, MEDIA_TYPE};

const URL1: &str = "https://stratum.example.org/repo";
const URL2: &str = "http://127.0.0.1:8080/";

/// A two-layer image `LAYOUT:1` in `dir/app`, with a config that sets every
/// member the descriptor carries.
fn app_image(dir: &Path) -> Layout {
    let l = Layout::create(&dir.join("app"));
    l.add_image(
        "1",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"bin/"),
                TarEntry::file(b"bin/app", b"#!/bin/sh\necho app\n").mode(0o755),
                TarEntry::file(b"etc/app.conf", b"answer = 42\n"),
            ]),
            Layer::uncompressed(&[
                TarEntry::file(b"etc/app.conf", b"answer = 43\n"),
                TarEntry::whiteout(b"bin/", b"gone"),
            ]),
        ],
    );
    l.edit_image("1", |_, config| {
        config["config"] = json!({
            "Env": ["PATH=/usr/bin:/bin", "APP_MODE=thin"],
            "Entrypoint": ["/bin/app"],
            "Cmd": ["--serve", "0.0.0.0:80"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "app", "maintainer": "ops"},
            "StopSignal": "SIGQUIT",
            "Volumes": {"/data": {}},
        });
    });
    l
}

/// A one-layer image `LAYOUT:1` in `dir/other`, with the harness's default config.
fn other_image(dir: &Path) -> Layout {
    let l = Layout::create(&dir.join("other"));
    l.add_image("1", &[Layer::gzip(&[TarEntry::file(b"hello", b"hello\n")])]);
    l
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// `stratum publish SOURCE --repo --key --as NAME --json [EXTRA…]`.
fn publish(repo: &TestRepo, source: &str, name: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "publish".to_string(),
        source.to_string(),
        "--repo".into(),
        s(&repo.repo),
        "--key".into(),
        s(&repo.key),
        "--as".into(),
        name.into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    stratum(args).json()
}

/// `stratum thin REPO --image NAME [EXTRA…]` → stdout.
fn thin(repo: &TestRepo, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "thin".to_string(),
        s(&repo.repo),
        "--image".into(),
        name.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    stratum(args).stdout_str()
}

fn thin_fails(repo: &TestRepo, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "thin".to_string(),
        s(&repo.repo),
        "--image".into(),
        name.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    stratum_fails(args).stderr_str()
}

fn catalog_object(repo: &TestRepo, id: &str) -> PathBuf {
    repo.repo
        .join("data")
        .join(&id[..2])
        .join(format!("{}C", &id[2..]))
}

/// Checks every member of `thin` (the descriptor's JSON) against the repository.
fn check_descriptor(repo: &TestRepo, layout: &Layout, name: &str, text: &str, urls: &[&str]) {
    let parsed = ThinImage::from_json(text.as_bytes())
        .unwrap_or_else(|e| panic!("stratum thin printed an invalid descriptor ({e}):\n{text}"));
    let v: Value = serde_json::from_str(text).unwrap();
    let img = repo.image(name);
    let info = repo.info();

    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["mediaType"], MEDIA_TYPE);
    assert_eq!(v["image"], name);
    assert_eq!(v["manifestDigest"], img["manifest_digest"]);
    let (layout_digest, _) = layout.manifest("1");
    assert_eq!(v["manifestDigest"], layout_digest.as_str());
    assert_eq!(
        parsed.platform.to_string(),
        img["platform"].as_str().unwrap()
    );
    assert_eq!(
        v["platform"],
        json!({"os": "linux", "architecture": "amd64"})
    );

    // Repository: name and revision from `info`, the key's fingerprint, the URLs.
    assert_eq!(v["repository"]["name"], info["name"]);
    assert_eq!(v["repository"]["name"], repo.name.as_str());
    assert_eq!(v["repository"]["revision"], info["revision"]);
    let key = load_verifying_key(&public_key_path(&repo.key)).unwrap();
    assert_eq!(
        v["repository"]["publicKeyFingerprint"],
        key_fingerprint(&key)
    );
    assert_eq!(v["repository"]["urls"], json!(urls));

    // Flat tree.
    assert_eq!(v["flat"]["path"], img["flat_path"]);
    assert_eq!(v["flat"]["catalog"], img["flat_catalog"]);
    assert!(catalog_object(repo, v["flat"]["catalog"].as_str().unwrap()).is_file());

    // Layers, base first.
    let layers = v["layers"].as_array().unwrap();
    let expected = img["layers"].as_array().unwrap();
    assert_eq!(layers.len(), expected.len());
    assert_eq!(img["layer_paths"].as_array().unwrap().len(), layers.len());
    let layout_layers = layout.layers("1");
    let diff_ids = layout.diff_ids("1");
    for (i, (l, e)) in layers.iter().zip(expected).enumerate() {
        assert_eq!(
            l.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["catalog", "diffId", "digest", "path", "size"],
            "layers[{i}]"
        );
        assert_eq!(l["digest"], e["digest"], "layers[{i}]");
        assert_eq!(l["digest"], layout_layers[i].0.as_str(), "layers[{i}]");
        assert_eq!(l["diffId"], e["diff_id"], "layers[{i}]");
        assert_eq!(l["diffId"], diff_ids[i].as_str(), "layers[{i}]");
        assert_eq!(l["path"], e["layer_path"], "layers[{i}]");
        assert_eq!(l["path"], img["layer_paths"][i], "layers[{i}]");
        assert_eq!(l["catalog"], e["catalog"], "layers[{i}]");
        assert_eq!(l["size"], e["size"], "layers[{i}]");
        let blob = std::fs::metadata(layout.blob_path(&layout_layers[i].0)).unwrap();
        assert_eq!(l["size"], blob.len(), "layers[{i}]");
        assert!(catalog_object(repo, l["catalog"].as_str().unwrap()).is_file());
    }

    // The paths resolve in the repository namespace.
    stratum([
        OsStr::new("ls"),
        repo.repo.as_os_str(),
        OsStr::new(v["flat"]["path"].as_str().unwrap()),
    ]);
}

#[test]
fn thin_descriptor_matches_the_published_image() {
    let repo = TestRepo::new("thin-test");
    let layout = app_image(&repo.scratch("layout"));
    let source = format!("oci:{}:1", layout.dir.display());
    publish(&repo, &source, "test/app:1", &[]);

    let text = thin(&repo, "test/app:1", &["--url", URL1, "--url", URL2]);
    assert!(text.ends_with("}\n"), "one JSON document and a newline");
    check_descriptor(&repo, &layout, "test/app:1", &text, &[URL1, URL2]);

    // The runtime config, from the image's OCI config.
    let v: Value = serde_json::from_str(&text).unwrap();
    let oci = &layout.config("1")["config"];
    assert_eq!(
        v["config"],
        json!({
            "Env": oci["Env"],
            "Entrypoint": oci["Entrypoint"],
            "Cmd": oci["Cmd"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "ExposedPorts": ["443/tcp", "80/tcp"],
            "Labels": oci["Labels"],
            "StopSignal": "SIGQUIT",
        })
    );
    assert!(v.get("prioritizedFiles").is_none());

    // -o FILE writes the same bytes.
    let out = repo.scratch("out").with_extension("json");
    let printed = thin(
        &repo,
        "test/app:1",
        &["--url", URL1, "--url", URL2, "-o", &s(&out)],
    );
    assert_eq!(printed, "", "nothing on stdout with -o");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

    // --pubkey with the repository's key gives the same descriptor.
    let pubkey = s(&public_key_path(&repo.key));
    let with_key = thin(
        &repo,
        "test/app:1",
        &["--url", URL1, "--url", URL2, "--pubkey", &pubkey],
    );
    assert_eq!(with_key, text);
}

#[test]
fn thin_dir_writes_what_thin_prints() {
    let repo = TestRepo::new("thin-dir");
    let scratch = repo.scratch("layouts");
    let app = app_image(&scratch);
    let other = other_image(&scratch);
    let dir = repo.tmp.path().join("thin-out");
    let dir_s = s(&dir);

    let report = publish(
        &repo,
        &format!("oci:{}:1", app.dir.display()),
        "test/app:1",
        &["--thin-dir", &dir_s, "--url", URL1],
    );
    assert!(
        report.is_array(),
        "--json output stays one JSON array: {report}"
    );
    let file = dir.join("test_app_1.json");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, thin(&repo, "test/app:1", &["--url", URL1]));
    check_descriptor(&repo, &app, "test/app:1", &written, &[URL1]);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["test_app_1.json"], "no temporary file left behind");

    // A second publish (new revision) writes only its own image, under a
    // name with ':' and '/' replaced; the first descriptor is kept as it was.
    let rev1 = repo.revision();
    publish(
        &repo,
        &format!("oci:{}:1", other.dir.display()),
        "test/other/x:v2.0",
        &["--thin-dir", &dir_s, "--url", URL1, "--url", URL2],
    );
    assert_eq!(repo.revision(), rev1 + 1);
    let second = std::fs::read_to_string(dir.join("test_other_x_v2.0.json")).unwrap();
    assert_eq!(
        second,
        thin(&repo, "test/other/x:v2.0", &["--url", URL1, "--url", URL2])
    );
    check_descriptor(&repo, &other, "test/other/x:v2.0", &second, &[URL1, URL2]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let v: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        v["config"],
        json!({"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]})
    );

    // Republishing an unchanged image still writes its descriptor (now at the
    // current revision, which did not change).
    std::fs::remove_file(&file).unwrap();
    publish(
        &repo,
        &format!("oci:{}:1", app.dir.display()),
        "test/app:1",
        &["--thin-dir", &dir_s, "--url", URL1],
    );
    assert_eq!(repo.revision(), rev1 + 1);
    let again = std::fs::read_to_string(&file).unwrap();
    assert_eq!(again, thin(&repo, "test/app:1", &["--url", URL1]));
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap()["repository"]["revision"],
        rev1 + 1
    );

    // Without --json, publish names the files it wrote.
    let out = stratum([
        "publish",
        &format!("oci:{}:1", app.dir.display()),
        "--repo",
        &s(&repo.repo),
        "--key",
        &s(&repo.key),
        "--as",
        "test/app:1",
        "--thin-dir",
        &dir_s,
        "--url",
        URL1,
    ]);
    assert!(out.stdout_str().contains(&s(&file)), "{}", out.stdout_str());
}

#[test]
fn prefetch_list_goes_into_the_descriptor() {
    let repo = TestRepo::new("thin-prefetch");
    let layout = app_image(&repo.scratch("layout"));
    publish(
        &repo,
        &format!("oci:{}:1", layout.dir.display()),
        "test/app:1",
        &[],
    );
    let list = repo.scratch("prefetch");
    std::fs::write(
        &list,
        "# recorded\n/bin/app\n\n/etc/app.conf\n/lib/x y.so\n",
    )
    .unwrap();
    let text = thin(
        &repo,
        "test/app:1",
        &["--url", URL1, "--prefetch", &s(&list)],
    );
    let t = ThinImage::from_json(text.as_bytes()).unwrap();
    assert_eq!(
        t.prioritized_files,
        ["/bin/app", "/etc/app.conf", "/lib/x y.so"]
    );
    check_descriptor(&repo, &layout, "test/app:1", &text, &[URL1]);

    std::fs::write(&list, "/bin/app\nrelative/path\n").unwrap();
    let err = thin_fails(
        &repo,
        "test/app:1",
        &["--url", URL1, "--prefetch", &s(&list)],
    );
    assert!(err.contains(":2"), "the error names the line: {err}");
    std::fs::write(&list, "/bin/app\n/bin/app\n").unwrap();
    thin_fails(
        &repo,
        "test/app:1",
        &["--url", URL1, "--prefetch", &s(&list)],
    );
}

#[test]
fn thin_refuses_bad_arguments_cleanly() {
    let repo = TestRepo::new("thin-bad");
    let layout = other_image(&repo.scratch("layout"));
    publish(
        &repo,
        &format!("oci:{}:1", layout.dir.display()),
        "test/x:1",
        &[],
    );

    // --url is required (no default URLs were recorded by `init`), and must
    // be an http(s) base URL.
    thin_fails(&repo, "test/x:1", &[]);
    for bad in [
        "ftp://host/repo",
        "/srv/repo",
        "https://user:pw@host/",
        "https://h/?q",
    ] {
        let err = thin_fails(&repo, "test/x:1", &["--url", bad]);
        assert!(err.contains(bad), "{err}");
    }
    // Unknown image.
    let err = thin_fails(&repo, "test/nope:1", &["--url", URL1]);
    assert!(err.contains("test/nope:1"), "{err}");
    // Another key does not verify the manifest.
    let other_key = repo.tmp.path().join("keys").join("other.key");
    stratum([OsStr::new("keygen"), other_key.as_os_str()]);
    thin_fails(
        &repo,
        "test/x:1",
        &["--url", URL1, "--pubkey", &s(&public_key_path(&other_key))],
    );
    // Not a repository.
    stratum_fails([
        "thin",
        &s(&repo.tmp.path().join("nothing")),
        "--image",
        "test/x:1",
        "--url",
        URL1,
    ]);

    // publish: --thin-dir needs --url (no defaults recorded) and --url needs
    // --thin-dir; refused before anything is published.
    let rev = repo.revision();
    let app = app_image(&repo.scratch("layout"));
    let base = [
        "publish".to_string(),
        format!("oci:{}:1", app.dir.display()),
        "--repo".into(),
        s(&repo.repo),
        "--key".into(),
        s(&repo.key),
    ];
    let dir = s(&repo.tmp.path().join("thin-out"));
    for extra in [
        vec!["--thin-dir", dir.as_str()],
        vec!["--url", URL1],
        vec!["--thin-dir", dir.as_str(), "--url", "ftp://x/"],
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        stratum_raw(args).assert_clean_failure();
    }
    assert_eq!(repo.revision(), rev);
    assert!(!repo.tmp.path().join("thin-out").exists());
}
