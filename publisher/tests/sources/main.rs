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

mod docker_archive;
mod oci_layout;

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
