//! Integration tests of the image sources (`stratum_publisher::source`) on
//! real images built with `umoci` and converted with `skopeo`: OCI layouts
//! (gzip and zstd layers, tags, nested indexes) and docker archives, plus
//! tampered, truncated and inconsistent variants of them.
//!
//! The images are built once per test process under `CARGO_TARGET_TMPDIR`.
//! Tests that need `umoci`/`skopeo`/`tar` (and root, for `umoci unpack`)
//! print a message and pass without checking anything when those are absent.
//!
//! `layer_stream_throughput` (ignored) measures a large gzip layer given in
//! `STRATUM_BENCH_BLOB`; run it with `--release --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use stratum_publisher::source::{
    self, Compression, Digest, ImageSource, LayerDescriptor, SourceError, SourceRef,
};

// ---------------------------------------------------------------- fixture

struct Fixture {
    /// Where the fixture lives.
    root: PathBuf,
    /// OCI layout with tags `t` (2 gzip layers) and `u` (1 layer).
    layout: PathBuf,
    /// `skopeo copy oci:layout:t docker-archive:archive.tar:foo:bar`.
    archive: PathBuf,
    /// `skopeo copy --dest-compress-format zstd oci:layout:t oci:zstd:t`.
    zstd: PathBuf,
}

static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();

/// The shared fixture, or `None` (with a message) when the tools are missing.
fn fixture(test: &str) -> Option<&'static Fixture> {
    let f = FIXTURE.get_or_init(build_fixture).as_ref();
    if f.is_none() {
        println!("skipping {test}: needs root and umoci, skopeo and tar on PATH");
    }
    f
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &str, args: &[&str], cwd: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_fixture() -> Option<Fixture> {
    if !(is_root() && have("umoci") && have("skopeo") && have("tar")) {
        return None;
    }
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    remove_stale(base);
    let root = tempfile::Builder::new()
        .prefix("sources-fixture-")
        .tempdir_in(base)
        .unwrap()
        .keep();
    let r = root.as_path();
    run("umoci", &["init", "--layout", "layout"], r);

    // Tag t: layer 0 adds a.txt and dir/b.txt, layer 1 deletes a.txt and adds c.txt.
    run("umoci", &["new", "--image", "layout:t"], r);
    run("umoci", &["unpack", "--image", "layout:t", "b1"], r);
    fs::write(r.join("b1/rootfs/a.txt"), "hi\n").unwrap();
    fs::create_dir(r.join("b1/rootfs/dir")).unwrap();
    fs::write(r.join("b1/rootfs/dir/b.txt"), "b\n").unwrap();
    run("umoci", &["repack", "--image", "layout:t", "b1"], r);
    run("umoci", &["unpack", "--image", "layout:t", "b2"], r);
    fs::remove_file(r.join("b2/rootfs/a.txt")).unwrap();
    fs::write(r.join("b2/rootfs/c.txt"), "c\n").unwrap();
    run("umoci", &["repack", "--image", "layout:t", "b2"], r);

    // Tag u: one layer with u.txt.
    run("umoci", &["new", "--image", "layout:u"], r);
    run("umoci", &["unpack", "--image", "layout:u", "b3"], r);
    fs::write(r.join("b3/rootfs/u.txt"), "u\n").unwrap();
    run("umoci", &["repack", "--image", "layout:u", "b3"], r);

    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "oci:layout:t",
            "docker-archive:archive.tar:foo:bar",
        ],
        r,
    );
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-compress-format",
            "zstd",
            "oci:layout:t",
            "oci:zstd:t",
        ],
        r,
    );
    Some(Fixture {
        layout: r.join("layout"),
        archive: r.join("archive.tar"),
        zstd: r.join("zstd"),
        root,
    })
}

/// Removes fixtures of earlier runs (older than an hour).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("sources-fixture-")
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A private copy of `dir` (for tests that damage it).
fn copy_of(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(dir.file_name().unwrap());
    let out = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success());
    (tmp, dst)
}

// ---------------------------------------------------------------- helpers

fn open(spec: &str) -> Result<Box<dyn ImageSource>, SourceError> {
    source::open(&SourceRef::parse(spec)?, spec)
}

fn oci(dir: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Entry names of a tar read from `r`, trailing `/` removed.
fn tar_names(r: impl Read) -> io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut entry = entry?;
        io::copy(&mut entry, &mut io::sink())?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        names.insert(path);
    }
    Ok(names)
}

/// Entry names as GNU tar lists them (the oracle).
fn gnu_tar_names(blob: &Path, gzip: bool) -> BTreeSet<String> {
    let flags = if gzip { "-tzf" } else { "-tf" };
    let out = Command::new("tar").arg(flags).arg(blob).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Reads every layer through its LayerStream: names per layer.
fn read_layers(src: &dyn ImageSource) -> Vec<BTreeSet<String>> {
    src.image()
        .layers
        .iter()
        .map(|layer| {
            let mut stream = src.open_layer(layer).unwrap();
            let names = tar_names(&mut stream).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            let stats = stream.finish().unwrap();
            assert_eq!(stats.compressed_bytes, layer.size);
            names
        })
        .collect()
}

/// Drains a layer completely and returns the error `finish` gives.
fn layer_error(src: &dyn ImageSource, layer: &LayerDescriptor) -> SourceError {
    let mut stream = match src.open_layer(layer) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let read = io::copy(&mut stream, &mut io::sink());
    let finished = stream.finish();
    let e = finished.unwrap_err();
    let read_err = read.unwrap_err();
    assert_eq!(read_err.kind(), e.io_kind(), "{read_err} / {e}");
    e
}

fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs/sha256").join(digest.hex())
}

/// Writes a blob into a layout; returns its digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> (Digest, u64) {
    let d = Digest::of(bytes);
    fs::write(blob_path(layout, &d), bytes).unwrap();
    (d, bytes.len() as u64)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn set_descriptor(desc: &mut Value, (digest, size): (Digest, u64)) {
    desc["digest"] = json!(digest.to_string());
    desc["size"] = json!(size);
}

/// Rewrites the image tagged `tag`: edits its config and manifest, writes
/// them as new blobs and points `index.json` at the new manifest.
fn rewrite(
    layout: &Path,
    tag: &str,
    edit_config: impl FnOnce(&mut Value),
    edit_manifest: impl FnOnce(&mut Value),
) {
    let mut index = read_json(&layout.join("index.json"));
    let pos = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let mdigest = Digest::parse(index["manifests"][pos]["digest"].as_str().unwrap()).unwrap();
    let mut manifest = read_json(&blob_path(layout, &mdigest));
    let cdigest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
    let mut config = read_json(&blob_path(layout, &cdigest));
    edit_config(&mut config);
    let c = write_blob(layout, &serde_json::to_vec(&config).unwrap());
    set_descriptor(&mut manifest["config"], c);
    edit_manifest(&mut manifest);
    let m = write_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    set_descriptor(&mut index["manifests"][pos], m);
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Replaces index.json by one listing `manifests`.
fn write_index_json(layout: &Path, manifests: Value) {
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

fn descriptor_of_tag(layout: &Path, tag: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap()
}

// ---------------------------------------------------------------- OCI layout

#[test]
fn oci_layout_streams_every_layer() {
    let Some(f) = fixture("oci_layout_streams_every_layer") else {
        return;
    };
    let spec = oci(&f.layout, Some("t"));
    let src = open(&spec).unwrap();
    let image = src.image();
    assert_eq!(image.source, spec);
    assert_eq!(image.default_name, "local/layout:t");
    assert_eq!(image.platform, format!("linux/{}", host_arch()));
    assert_eq!(image.layers.len(), 2);
    let desc = descriptor_of_tag(&f.layout, "t");
    assert_eq!(
        image.manifest_digest.to_string(),
        desc["digest"].as_str().unwrap()
    );
    assert_eq!(Digest::of(&image.manifest), image.manifest_digest);
    assert_eq!(Digest::of(&image.config), image.config_digest);
    for (i, l) in image.layers.iter().enumerate() {
        assert_eq!(l.index, i);
        assert_eq!(l.compression, Compression::Gzip);
        assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    }

    let names = read_layers(src.as_ref());
    for (layer, got) in image.layers.iter().zip(&names) {
        let oracle = gnu_tar_names(&blob_path(&f.layout, &layer.digest), true);
        assert_eq!(got, &oracle, "layer {}", layer.index);
    }
    assert!(
        names[0].iter().any(|n| n.ends_with("a.txt")),
        "{:?}",
        names[0]
    );
    assert!(
        names[0].iter().any(|n| n.ends_with("dir/b.txt")),
        "{:?}",
        names[0]
    );
    assert!(
        names[1].iter().any(|n| n.ends_with(".wh.a.txt")),
        "{:?}",
        names[1]
    );
    assert!(
        names[1].iter().any(|n| n.ends_with("c.txt")),
        "{:?}",
        names[1]
    );
}

#[test]
fn oci_layout_tag_selection() {
    let Some(f) = fixture("oci_layout_tag_selection") else {
        return;
    };
    let t = open(&oci(&f.layout, Some("t"))).unwrap();
    let u = open(&oci(&f.layout, Some("u"))).unwrap();
    assert_ne!(t.image().manifest_digest, u.image().manifest_digest);
    assert_eq!(u.image().layers.len(), 1);
    assert_eq!(u.image().default_name, "local/layout:u");
    let names = read_layers(u.as_ref());
    assert!(names[0].iter().any(|n| n.ends_with("u.txt")), "{names:?}");

    let e = open(&oci(&f.layout, Some("nope"))).err().unwrap();
    assert!(matches!(e, SourceError::TagNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains('t') && msg.contains('u'),
        "{msg}"
    );

    let e = open(&oci(&f.layout, None)).err().unwrap();
    assert!(
        matches!(e, SourceError::TagRequired { count: 2, .. }),
        "{e}"
    );

    // A layout with a single manifest needs no tag; the name defaults to latest.
    let (_tmp, copy) = copy_of(&f.layout);
    write_index_json(&copy, json!([descriptor_of_tag(&f.layout, "u")]));
    let only = open(&oci(&copy, None)).unwrap();
    assert_eq!(only.image().manifest_digest, u.image().manifest_digest);
    assert_eq!(only.image().default_name, "local/layout:latest");
}

#[test]
fn zstd_layout() {
    let Some(f) = fixture("zstd_layout") else {
        return;
    };
    let gz = open(&oci(&f.layout, Some("t"))).unwrap();
    let zs = open(&oci(&f.zstd, Some("t"))).unwrap();
    let (gi, zi) = (gz.image(), zs.image());
    assert!(zi.layers.iter().all(|l| l.compression == Compression::Zstd));
    let diff = |i: &source::ResolvedImage| i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>();
    assert_eq!(diff(gi), diff(zi));
    assert_eq!(read_layers(zs.as_ref()), read_layers(gz.as_ref()));
}

#[test]
fn partial_read_then_finish_still_verifies() {
    let Some(f) = fixture("partial_read_then_finish_still_verifies") else {
        return;
    };
    let src = open(&oci(&f.layout, Some("t"))).unwrap();
    let layer = &src.image().layers[0];
    let mut stream = src.open_layer(layer).unwrap();
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut entries = archive.entries().unwrap();
        let first = entries.next().unwrap().unwrap();
        assert!(!first.path().unwrap().as_os_str().is_empty());
    }
    let stats = stream.finish().unwrap();
    assert_eq!(stats.compressed_bytes, layer.size);
    assert!(stats.uncompressed_bytes >= 3 * 512);

    // Not reading at all is fine too; a stream dropped unread does not hang.
    assert!(src.open_layer(layer).unwrap().finish().is_ok());
    drop(src.open_layer(layer).unwrap());
}

#[test]
fn tampered_layer_blob_fails_naming_the_digest() {
    let Some(f) = fixture("tampered_layer_blob_fails_naming_the_digest") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layer = src.image().layers[0].clone();
    let path = blob_path(&copy, &layer.digest);
    let mut blob = fs::read(&path).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x01;
    fs::write(&path, &blob).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    assert!(
        matches!(e, SourceError::LayerDigest { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
}

#[test]
fn truncated_layer_blob_fails() {
    let Some(f) = fixture("truncated_layer_blob_fails") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layer = src.image().layers[1].clone();
    let path = blob_path(&copy, &layer.digest);
    let blob = fs::read(&path).unwrap();
    fs::write(&path, &blob[..blob.len() - 20]).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    let expected_actual = layer.size - 20;
    assert!(
        matches!(e, SourceError::LayerSize { index: 1, actual, .. } if actual == expected_actual),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");

    // A missing blob is an error naming the path.
    fs::remove_file(&path).unwrap();
    let e = src.open_layer(&layer).err().unwrap();
    assert!(e.to_string().contains(&layer.digest.hex()), "{e}");
}

#[test]
fn wrong_diff_id_in_config() {
    let Some(f) = fixture("wrong_diff_id_in_config") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let bogus = Digest::of(b"not the layer");
    rewrite(
        &copy,
        "t",
        |c| c["rootfs"]["diff_ids"][1] = json!(bogus.to_string()),
        |_| {},
    );
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layers = src.image().layers.clone();
    assert_eq!(layers[1].diff_id, bogus);
    read_layers_ok(src.as_ref(), &layers[0]);
    let e = layer_error(src.as_ref(), &layers[1]);
    assert!(
        matches!(e, SourceError::LayerDiffId { index: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&bogus.to_string()), "{e}");
}

fn read_layers_ok(src: &dyn ImageSource, layer: &LayerDescriptor) {
    let mut s = src.open_layer(layer).unwrap();
    io::copy(&mut s, &mut io::sink()).unwrap();
    s.finish().unwrap();
}

#[test]
fn inconsistent_manifests_are_refused() {
    let Some(f) = fixture("inconsistent_manifests_are_refused") else {
        return;
    };

    // Unknown layer media type.
    let (_t1, copy) = copy_of(&f.layout);
    rewrite(
        &copy,
        "t",
        |_| {},
        |m| m["layers"][1]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2"),
    );
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::UnsupportedMediaType { .. }), "{e}");
    assert!(
        e.to_string().contains("tar+bzip2") && e.to_string().contains("layer 1"),
        "{e}"
    );

    // Layer count differs from the diff_ids.
    let (_t2, copy) = copy_of(&f.layout);
    rewrite(
        &copy,
        "t",
        |c| {
            c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
        },
        |_| {},
    );
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::LayerCountMismatch {
                layers: 2,
                diff_ids: 1,
                ..
            }
        ),
        "{e}"
    );

    // Absurd manifest size: refused before reading.
    let (_t3, copy) = copy_of(&f.layout);
    let mut desc = descriptor_of_tag(&copy, "t");
    desc["size"] = json!(1_u64 << 50);
    write_index_json(&copy, json!([desc.clone()]));
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");

    // Size off by one.
    let size = descriptor_of_tag(&f.layout, "t")["size"].as_u64().unwrap();
    desc["size"] = json!(size - 1);
    write_index_json(&copy, json!([desc.clone()]));
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::SizeMismatch { .. }), "{e}");

    // A config blob that does not match its digest.
    let (_t4, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let cpath = blob_path(&copy, &src.image().config_digest);
    let mut config = fs::read(&cpath).unwrap();
    let last = config.len() - 2;
    config[last] = b' ';
    fs::write(&cpath, &config).unwrap();
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("config"), "{e}");

    // Not a layout at all.
    let e = open(&oci(&f.root, None)).err().unwrap();
    assert!(e.to_string().contains("oci-layout"), "{e}");
}

#[test]
fn nested_indexes() {
    let Some(f) = fixture("nested_indexes") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let mut manifest = descriptor_of_tag(&f.layout, "t");
    manifest.as_object_mut().unwrap().remove("annotations");
    let platform = |arch: &str| json!({"os": "linux", "architecture": arch});
    let entry = |arch: &str| {
        let mut d = manifest.clone();
        d["platform"] = platform(arch);
        d
    };
    let other_arch = if host_arch() == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let index = |manifests: Value| {
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        serde_json::to_vec(&doc).unwrap()
    };
    let index_desc = |(digest, size): (Digest, u64), tag: &str| {
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
    };

    // An index with the host's platform and another one: the host's wins.
    let good = write_blob(
        &copy,
        &index(json!([entry(other_arch), entry(host_arch())])),
    );
    // An index without the host's platform.
    let foreign = write_blob(&copy, &index(json!([entry(other_arch)])));
    // A chain of indexes deeper than allowed.
    let mut deep = good;
    for _ in 0..source::oci_layout::MAX_INDEX_DEPTH {
        let mut d = index_desc(deep, "x");
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = platform(host_arch());
        deep = write_blob(&copy, &index(json!([d])));
    }
    // An index that lists itself (it cannot verify, but must not loop).
    let self_digest = Digest::of(b"placeholder");
    let looping = index(json!([{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": self_digest.to_string(),
        "size": 100,
        "platform": platform(host_arch()),
    }]));
    fs::write(blob_path(&copy, &self_digest), &looping).unwrap();
    write_index_json(
        &copy,
        json!([
            index_desc(good, "multi"),
            index_desc(foreign, "foreign"),
            index_desc(deep, "deep"),
            index_desc((self_digest, looping.len() as u64), "loop"),
        ]),
    );

    let src = open(&oci(&copy, Some("multi"))).unwrap();
    let direct = open(&oci(&f.layout, Some("t"))).unwrap();
    assert_eq!(src.image().manifest_digest, direct.image().manifest_digest);
    assert_eq!(src.image().default_name, "local/layout:multi");

    let e = open(&oci(&copy, Some("foreign"))).err().unwrap();
    assert!(matches!(e, SourceError::PlatformNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("linux/{other_arch}")),
        "{e}"
    );

    let e = open(&oci(&copy, Some("deep"))).err().unwrap();
    assert!(matches!(e, SourceError::IndexNesting { .. }), "{e}");

    let e = open(&oci(&copy, Some("loop"))).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::DigestMismatch { .. } | SourceError::IndexNesting { .. }
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------- docker-archive

#[test]
fn docker_archive_streams_every_layer() {
    let Some(f) = fixture("docker_archive_streams_every_layer") else {
        return;
    };
    let spec = format!("docker-archive:{}", f.archive.display());
    let src = open(&spec).unwrap();
    let oci_src = open(&oci(&f.layout, Some("t"))).unwrap();
    let (image, oci_image) = (src.image(), oci_src.image());
    assert_eq!(image.default_name, "local/foo:bar");
    assert_eq!(image.platform, oci_image.platform);
    assert_eq!(image.config_digest, oci_image.config_digest);
    assert_eq!(Digest::of(&image.manifest), image.manifest_digest);
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["digest"],
        image.config_digest.to_string()
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    for (l, o) in image.layers.iter().zip(&oci_image.layers) {
        assert_eq!(l.compression, Compression::None);
        assert_eq!(l.digest, l.diff_id);
        assert_eq!(l.diff_id, o.diff_id);
        assert_eq!(manifest["layers"][l.index]["digest"], l.digest.to_string());
    }
    // Same synthesized manifest on every open.
    assert_eq!(
        open(&spec).unwrap().image().manifest_digest,
        image.manifest_digest
    );
    assert_eq!(read_layers(src.as_ref()), read_layers(oci_src.as_ref()));
}

#[test]
fn docker_archive_tampered_layer() {
    let Some(f) = fixture("docker_archive_tampered_layer") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("archive.tar");
    fs::copy(&f.archive, &copy).unwrap();
    let src = open(&format!("docker-archive:{}", copy.display())).unwrap();
    let layer = src.image().layers[0].clone();
    // Find the layer's bytes in the archive and flip one in the middle of its data.
    let mut bytes = fs::read(&copy).unwrap();
    let mut stream = src.open_layer(&layer).unwrap();
    let mut data = Vec::new();
    stream.read_to_end(&mut data).unwrap();
    stream.finish().unwrap();
    let at = bytes
        .windows(data.len())
        .position(|w| w == data.as_slice())
        .unwrap();
    bytes[at + 100] ^= 0x20;
    fs::write(&copy, &bytes).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    assert!(
        matches!(e, SourceError::LayerDiffId { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
}

/// Writes a docker archive holding the OCI layout's gzip layers as they
/// are. Old style: `<hex>.json` config, `L<i>/layer.tar` layers, the first
/// named through a symlink. New style (docker ≥ 25): `blobs/sha256/<hex>`.
fn gzip_docker_archive(f: &Fixture, dst: &Path, new_style: bool) -> source::ResolvedImage {
    let oci_src = open(&oci(&f.layout, Some("t"))).unwrap();
    let image = oci_src.image().clone();
    let mut b = tar::Builder::new(fs::File::create(dst).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let config_name = if new_style {
        format!("blobs/sha256/{}", image.config_digest.hex())
    } else {
        format!("{}.json", image.config_digest.hex())
    };
    add(&config_name, &image.config);
    let mut layer_names = Vec::new();
    for l in &image.layers {
        let name = if new_style {
            format!("blobs/sha256/{}", l.digest.hex())
        } else {
            format!("L{}/layer.tar", l.index)
        };
        add(&name, &fs::read(blob_path(&f.layout, &l.digest)).unwrap());
        layer_names.push(name);
    }
    if !new_style {
        layer_names[0] = "link/layer.tar".to_owned();
    }
    let manifest = json!([{"Config": config_name, "RepoTags": null, "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    if !new_style {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "link/layer.tar", "../L0/layer.tar")
            .unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
    image
}

#[test]
fn docker_archive_with_gzip_layers_and_links() {
    let Some(f) = fixture("docker_archive_with_gzip_layers_and_links") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for new_style in [false, true] {
        let path = tmp.path().join(format!("Hand Made {new_style}.tar"));
        let oci_image = gzip_docker_archive(f, &path, new_style);
        let src = open(&format!("docker-archive:{}", path.display())).unwrap();
        let image = src.image();
        assert_eq!(
            image.default_name,
            format!("local/hand-made-{new_style}:latest")
        );
        assert_eq!(image.config_digest, oci_image.config_digest);
        for (l, o) in image.layers.iter().zip(&oci_image.layers) {
            assert_eq!(l.compression, Compression::Gzip);
            assert_eq!(l.digest, o.digest, "hashed at open or taken from the name");
            assert_eq!(l.size, o.size);
            assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        }
        let names = read_layers(src.as_ref());
        assert!(names[0].iter().any(|n| n.ends_with("a.txt")), "{names:?}");
    }
}

#[test]
fn docker_archive_errors() {
    let Some(f) = fixture("docker_archive_errors") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // Truncated archive.
    let cut = tmp.path().join("cut.tar");
    let bytes = fs::read(&f.archive).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(open(&format!("docker-archive:{}", cut.display())).is_err());

    // Not a tar.
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    assert!(open(&format!("docker-archive:{}", junk.display())).is_err());

    // Missing file: names the path.
    let e = open("docker-archive:/nonexistent/x.tar").err().unwrap();
    assert!(e.to_string().contains("/nonexistent/x.tar"), "{e}");

    // A docker archive given as a layout and vice versa.
    assert!(open(&oci(&f.archive, None)).is_err());
    assert!(open(&format!("docker-archive:{}", f.layout.display())).is_err());
}

// ---------------------------------------------------------------- throughput

/// Time to stream a large gzip layer: `STRATUM_BENCH_BLOB=/path/to/layer.tar.gz
/// cargo test --release -p stratum-publisher --test sources -- --ignored --nocapture`.
#[test]
#[ignore = "needs STRATUM_BENCH_BLOB, a large .tar.gz; run in release"]
fn layer_stream_throughput() {
    let Some(blob) = std::env::var_os("STRATUM_BENCH_BLOB") else {
        println!("set STRATUM_BENCH_BLOB to a .tar.gz to measure");
        return;
    };
    let blob = PathBuf::from(blob);
    let size = fs::metadata(&blob).unwrap().len();
    // Digests, computed the slow simple way before timing.
    let mut h = source::Sha256::new();
    let mut u = source::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut f = fs::File::open(&blob).unwrap();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut d =
        flate2::read::MultiGzDecoder::new(io::BufReader::new(fs::File::open(&blob).unwrap()));
    let mut raw_len = 0u64;
    loop {
        let n = d.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw_len += n as u64;
        u.update(&buf[..n]);
    }
    let (digest, diff_id) = (h.finish(), u.finish());

    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("bench");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&blob, blob_path(&layout, &digest)).unwrap();
    let config = json!({"architecture": host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}});
    let c = write_blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.0.to_string(), "size": c.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest.to_string(), "size": size}]});
    let m = write_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    write_index_json(
        &layout,
        json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": m.0.to_string(), "size": m.1}]),
    );

    let src = open(&oci(&layout, None)).unwrap();
    let layer = &src.image().layers[0];
    let mb = |bytes: u64, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
    for round in 0..2 {
        let start = Instant::now();
        let mut s = src.open_layer(layer).unwrap();
        io::copy(&mut s, &mut io::sink()).unwrap();
        let stats = s.finish().unwrap();
        let t = start.elapsed();
        assert_eq!(stats.uncompressed_bytes, raw_len);
        println!(
            "round {round}: read to end: {:.2}s, {:.0} MB/s compressed, {:.0} MB/s uncompressed",
            t.as_secs_f64(),
            mb(size, t),
            mb(raw_len, t)
        );
        let start = Instant::now();
        let mut s = src.open_layer(layer).unwrap();
        let mut entries = 0;
        {
            let mut archive = tar::Archive::new(&mut s);
            for e in archive.entries().unwrap() {
                let mut e = e.unwrap();
                io::copy(&mut e, &mut io::sink()).unwrap();
                entries += 1;
            }
        }
        s.finish().unwrap();
        let t = start.elapsed();
        println!(
            "round {round}: tar parse of {entries} entries: {:.2}s, {:.0} MB/s uncompressed",
            t.as_secs_f64(),
            mb(raw_len, t)
        );
    }
}
