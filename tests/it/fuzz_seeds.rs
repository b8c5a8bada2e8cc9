//! The fuzz corpora, replayed on stable: every file of `fuzz/corpus/<target>/`
//! (the committed seeds, plus whatever a local fuzzing run added) and of
//! `fuzz/regressions/<target>/` (inputs that once crashed a target) goes
//! through the very function the cargo-fuzz target calls (each crate's
//! `fuzzing` module), which must not panic. See `fuzz/README.md`.
//!
//! The seeds come from real examples and are rebuilt by
//! `cargo test --test it fuzz_seeds:: -- --ignored regenerate_seed_corpora`.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::oci::{Layer, Layout, TarEntry, TarKind};
use crate::support::{stratum, TestRepo};
use stratum_catalog::catalog::{Catalog, CatalogKind};
use stratum_catalog::manifest::Manifest;
use stratum_catalog::{ObjectId, ObjectKind};
use stratum_publisher::source::Compression;
use stratum_thin_image::ThinImage;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    (
        "ingest_layer",
        stratum_publisher::fuzzing::ingest_bytes as Target,
    ),
    ("catalog", stratum_catalog::fuzzing::catalog_bytes),
    ("manifest", stratum_catalog::fuzzing::manifest_bytes),
    (
        "thin_descriptor",
        stratum_thin_image::fuzzing::descriptor_bytes,
    ),
    ("wishlist", stratum_publisher::fuzzing::wishlist_bytes),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap()
}

/// Runs every corpus and regression input of `name` through its target;
/// fails naming each input that panicked.
fn replay(name: &str) {
    let f = target(name);
    let corpus = files_in(&fuzz_dir().join("corpus").join(name));
    assert!(
        corpus.iter().any(|p| is_seed(p)),
        "fuzz/corpus/{name} has no seed"
    );
    let inputs: Vec<PathBuf> = corpus
        .into_iter()
        .chain(files_in(&fuzz_dir().join("regressions").join(name)))
        .collect();
    let mut failed = Vec::new();
    for p in &inputs {
        // A fuzzer running meanwhile may have replaced the file.
        let Ok(data) = std::fs::read(p) else {
            continue;
        };
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            failed.push(p.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} inputs panicked:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

fn is_seed(p: &Path) -> bool {
    p.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|n| n.starts_with("seed-"))
}

/// The committed seeds of `name` (not what a fuzzing run added).
fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    files_in(&fuzz_dir().join("corpus").join(name))
        .into_iter()
        .filter(|p| is_seed(p))
        .map(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            (n, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A regression input kept in `fuzz/regressions/<target>/<file>`.
fn regression(target: &str, file: &str) -> Vec<u8> {
    let p = fuzz_dir().join("regressions").join(target).join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------- replays

#[test]
fn ingest_layer_corpus_does_not_panic() {
    replay("ingest_layer");
}

#[test]
fn catalog_corpus_does_not_panic() {
    replay("catalog");
}

#[test]
fn manifest_corpus_does_not_panic() {
    replay("manifest");
}

#[test]
fn thin_descriptor_corpus_does_not_panic() {
    replay("thin_descriptor");
}

#[test]
fn wishlist_corpus_does_not_panic() {
    replay("wishlist");
}

/// Every corpus directory belongs to a target (a typo would go untested).
#[test]
fn every_corpus_directory_is_a_target() {
    for sub in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(fuzz_dir().join(sub)) else {
            continue;
        };
        for e in rd {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(n, _)| *n == name),
                "fuzz/{sub}/{name} is not a fuzz target"
            );
        }
    }
}

// ---------------------------------------------------------------- regressions

/// Found by the `catalog` target (as a slow unit: 20 s, then endless
/// without the harness's entry cap). A corrupt catalog whose b-tree holds
/// row ids out of order answers `id > 8` with row 8 again, so
/// `for_each_entry`, which pages by "the rows after the last id seen",
/// looped forever (`stratum check`, `ls`, `gc` on such a catalog would
/// hang). Now a batch that does not move forward is an `InvalidCatalog`
/// error; `for_each_child` has the same guard for names.
#[test]
fn catalog_for_each_entry_loops_on_out_of_order_rowids() {
    let data = regression(
        "catalog",
        "for-each-entry-loops-on-out-of-order-rowids.sqlite",
    );
    let cat = Catalog::from_bytes(ObjectId::of(&data), &data).unwrap();
    let mut seen = 0;
    let r = cat.for_each_entry(|_| {
        seen += 1;
        assert!(seen < 1000, "for_each_entry does not end");
        Ok(())
    });
    match r {
        Err(stratum_catalog::Error::InvalidCatalog { reason, .. }) => {
            assert!(reason.contains("not in id order"), "{reason}")
        }
        other => panic!("expected InvalidCatalog, got {other:?}"),
    }
    for dir in 1..=8 {
        let mut seen = 0;
        let _ = cat.for_each_child(dir, |_| {
            seen += 1;
            assert!(seen < 1000, "for_each_child does not end");
            Ok(())
        });
    }
    let t = std::time::Instant::now();
    stratum_catalog::fuzzing::catalog_bytes(&data);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Found with a hand-made input for the `catalog` target (byte mutations
/// do not write SQL): a catalog whose `entries` is a recursive view with no
/// end made `Catalog::from_bytes` hang in its first query (libFuzzer
/// timeout), and with it any reader (mount, pull, check) given that object.
/// Now a catalog whose schema holds anything but tables and indexes is
/// refused when opened.
#[test]
fn catalog_recursive_entries_view_hangs_open() {
    let data = regression("catalog", "recursive-entries-view-hangs-open.sqlite");
    let (tx, rx) = std::sync::mpsc::channel();
    let d = data.clone();
    std::thread::spawn(move || {
        let r = Catalog::from_bytes(ObjectId::of(&d), &d).map(|_| ());
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => assert!(e.contains("only tables and indexes"), "{e}"),
        Ok(Ok(())) => panic!("a catalog with a view was opened"),
        Err(_) => panic!("opening the catalog did not finish in 60 s"),
    }
    stratum_catalog::fuzzing::catalog_bytes(&data);
}

/// Caught by the `ingest_layer` harness's tree check: a whiteout entry
/// `.wh..` or `.wh...` was accepted and put a character device named `.` or
/// `..` into the layer tree (an invalid name that `stratum check` reports
/// and a FUSE listing would show next to the real `.` and `..`). Now the
/// layer is refused, naming the entry.
#[test]
fn ingest_whiteout_of_dot_or_dotdot_is_refused() {
    for file in ["whiteout-of-dot.tar", "whiteout-of-dotdot.tar"] {
        let data = regression("ingest_layer", file);
        match stratum_publisher::fuzzing::ingest_as(&data, Compression::None) {
            Err(e) => assert!(
                e.to_string().contains("whiteout of '.' or '..'"),
                "{file}: {e}"
            ),
            Ok(r) => panic!("{file}: accepted ({r:?})"),
        }
    }
}

// ---------------------------------------------------------------- the seeds are real

/// The seeds are accepted inputs, so that the fuzzers start from the paths
/// that do work, not from the first error.
#[test]
fn seeds_are_valid_inputs() {
    for (name, data) in seeds("ingest_layer") {
        let c = if name.ends_with(".tar.gz") {
            Compression::Gzip
        } else if name.ends_with(".tar.zst") {
            Compression::Zstd
        } else {
            Compression::None
        };
        let r = stratum_publisher::fuzzing::ingest_as(&data, c);
        assert!(
            matches!(r, Ok(Some(_))),
            "ingest_layer/{name} as {c}: {r:?}"
        );
    }
    for (name, data) in seeds("catalog") {
        if let Err(e) = Catalog::from_bytes(ObjectId::of(&data), &data) {
            panic!("catalog/{name}: {e}");
        }
    }
    let key = stratum_catalog::fuzzing::manifest_key().verifying_key();
    for (name, data) in seeds("manifest") {
        if name.contains("signed") {
            Manifest::verify(&data, &key).unwrap_or_else(|e| panic!("manifest/{name}: {e}"));
        } else {
            Manifest::parse_unverified(&data).unwrap_or_else(|e| panic!("manifest/{name}: {e}"));
        }
    }
    for (name, data) in seeds("thin_descriptor") {
        if name.ends_with(".json") && !name.contains("config") {
            ThinImage::from_json(&data).unwrap_or_else(|e| panic!("thin_descriptor/{name}: {e}"));
        }
    }
    for (name, data) in seeds("wishlist") {
        let text = String::from_utf8(data).unwrap();
        stratum_publisher::wishlist::Wishlist::parse(&text, "/srv")
            .unwrap_or_else(|e| panic!("wishlist/{name}: {e}"));
    }
}

// ---------------------------------------------------------------- regenerating the seeds

/// Rebuilds `fuzz/corpus/*/seed-*` from real examples: hand-built layers,
/// and the catalogs, manifest and thin-image descriptors of a tiny
/// repository that the `stratum` binary publishes. Run by hand after a
/// format change; the output is committed.
#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*; run by hand"]
fn regenerate_seed_corpora() {
    let out = fuzz_dir().join("corpus");
    for (name, _) in TARGETS {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for p in files_in(&dir).into_iter().filter(|p| is_seed(p)) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let write = |target: &str, file: &str, bytes: &[u8]| {
        std::fs::write(out.join(target).join(format!("seed-{file}")), bytes).unwrap();
    };

    // ingest_layer: small layers of every kind of entry, each compression.
    let basic = support::oci::build_tar(&basic_entries());
    let changes = support::oci::build_tar(&change_entries());
    let pax = support::oci::build_tar(&pax_entries());
    write("ingest_layer", "basic.tar", &basic);
    write("ingest_layer", "changes.tar", &changes);
    write("ingest_layer", "pax.tar", &pax);
    write("ingest_layer", "basic.tar.gz", &support::oci::gzip(&basic));
    write(
        "ingest_layer",
        "changes.tar.gz",
        &support::oci::gzip(&changes),
    );
    write(
        "ingest_layer",
        "pax.tar.zst",
        &zstd::encode_all(&pax[..], 19).unwrap(),
    );
    write("ingest_layer", "empty.tar", &[0u8; 1024]);
    // One file over the chunking threshold (4 MiB): a few hundred bytes as zstd.
    let big = support::oci::build_tar(&[
        TarEntry::dir(b"data/"),
        TarEntry::file(b"data/big", &vec![0x5a; (4 << 20) + 4096]),
    ]);
    write(
        "ingest_layer",
        "bigfile.tar.zst",
        &zstd::encode_all(&big[..], 19).unwrap(),
    );

    // A tiny repository: two images, a revision tag, a removed image.
    let repo = TestRepo::new("fuzz-seeds");
    let tmp = support::tempdir();
    let app = Layout::create(&tmp.path().join("app"));
    // The fuzzing harness's base layer first: the layers above refer to it.
    let base = stratum_publisher::fuzzing::base_layer();
    let base = Layer {
        tar: base.clone(),
        blob: base,
        media_type: support::oci::MT_LAYER_TAR.into(),
    };
    app.add_image(
        "1",
        &[
            base,
            Layer::gzip(&basic_entries()),
            Layer::uncompressed(&change_entries()),
        ],
    );
    app.edit_image("1", |_, config| {
        config["config"] = serde_json::json!({
            "Env": ["PATH=/usr/bin:/bin"], "Entrypoint": ["/bin/app"], "Cmd": ["--serve"],
            "WorkingDir": "/srv", "User": "1000:1000", "ExposedPorts": {"80/tcp": {}},
            "Labels": {"maintainer": "ops"}, "StopSignal": "SIGQUIT",
        });
    });
    let other = Layout::create(&tmp.path().join("other"));
    other.add_image("1", &[Layer::zstd(&[TarEntry::file(b"hello", b"hello\n")])]);
    let gone = Layout::create(&tmp.path().join("gone"));
    gone.add_image("1", &[Layer::gzip(&[TarEntry::file(b"gone", b"gone\n")])]);
    let source = |l: &Layout| format!("oci:{}:1", l.dir.display());
    repo.publish_one(&source(&app), Some("local/app:1"));
    repo.publish_one(&source(&other), Some("local/other:1"));
    repo.publish_one(&source(&gone), Some("local/gone:1"));
    let key = repo.key.as_os_str();
    let r = repo.repo.as_os_str();
    stratum([
        OsStr::new("tag"),
        r,
        OsStr::new("release"),
        OsStr::new("--key"),
        key,
    ]);
    stratum([
        OsStr::new("rm"),
        r,
        OsStr::new("local/gone:1"),
        OsStr::new("--key"),
        key,
    ]);

    // catalog: one decoded catalog of each kind, in 512-byte pages.
    let mut by_kind: Vec<(CatalogKind, u64, Vec<u8>)> = Vec::new();
    for p in walkdir::WalkDir::new(repo.repo.join("data")) {
        let p = p.unwrap();
        let rel = p.path().strip_prefix(&repo.repo).unwrap().to_str().unwrap();
        let Ok((id, ObjectKind::Catalog)) = ObjectId::parse_path(rel) else {
            continue;
        };
        let bytes =
            stratum_catalog::object::decode(&id, &std::fs::read(p.path()).unwrap()).unwrap();
        let cat = Catalog::from_bytes(id, &bytes).unwrap();
        let n = cat.entry_count().unwrap();
        match by_kind.iter_mut().find(|(k, _, _)| *k == cat.kind()) {
            Some(slot) if slot.1 >= n => {}
            Some(slot) => *slot = (cat.kind(), n, bytes),
            None => by_kind.push((cat.kind(), n, bytes)),
        }
    }
    assert_eq!(by_kind.len(), 5, "one catalog of each kind");
    for (kind, _, bytes) in &by_kind {
        let small = stratum_catalog::fuzzing::repage(bytes, 512).unwrap();
        write("catalog", &format!("{}.sqlite", kind.as_str()), &small);
    }

    // manifest: the repository's own, and two signed with the target's key.
    write("manifest", "repository", &repo.manifest_bytes());
    let k = stratum_catalog::fuzzing::manifest_key();
    let m = Manifest::new(
        "fuzz-repo",
        7,
        1_700_000_000,
        ObjectId::of(b"root"),
        Some(ObjectId::of(b"prev")),
    )
    .unwrap();
    write("manifest", "signed", &m.sign(&k));
    let first = Manifest::new("first", 1, 0, ObjectId::of(b"root"), None).unwrap();
    write("manifest", "signed-first", &first.sign(&k));

    // thin_descriptor: `stratum thin` of both images, and an artifact config.
    let prefetch = tmp.path().join("prefetch");
    std::fs::write(&prefetch, "/bin/app\n/etc/app.conf\n").unwrap();
    let thin = |image: &str, extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("thin"),
            r,
            OsStr::new("--image"),
            OsStr::new(image),
            OsStr::new("--url"),
            OsStr::new("https://stratum.example.org/repo"),
        ];
        args.extend_from_slice(extra);
        stratum(args).stdout_str()
    };
    let app_thin = thin(
        "local/app:1",
        &[
            OsStr::new("--url"),
            OsStr::new("http://127.0.0.1:8080/"),
            OsStr::new("--prefetch"),
            prefetch.as_os_str(),
        ],
    );
    write("thin_descriptor", "app.json", app_thin.as_bytes());
    write(
        "thin_descriptor",
        "other.json",
        thin("local/other:1", &[]).as_bytes(),
    );
    let artifact = ThinImage::from_json(app_thin.as_bytes())
        .unwrap()
        .to_artifact_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    write("thin_descriptor", "artifact-config.json", &artifact.config);

    // wishlist: the example, and smaller ones for each feature.
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wishlist.yaml"))
            .unwrap();
    write("wishlist", "example.yaml", &example);
    write("wishlist", "minimal.yaml", WISHLIST_MINIMAL.as_bytes());
    write("wishlist", "globs.yaml", WISHLIST_GLOBS.as_bytes());
}

const WISHLIST_MINIMAL: &str = "version: 1
repository: repo
signing_key: repo.key
images:
  - docker://localhost:5000/app
";

const WISHLIST_GLOBS: &str = "version: 1
repository: s3://bucket/prefix
signing_key: /keys/repo.key
platforms: all
registries:
  localhost:5000: { insecure: true }
thin_images:
  pattern: \"docker://localhost:5000/thin/{name}:{tag}-{platform}-{digest_hex}\"
  urls: [https://cdn.example.org/repo]
images:
  - source: docker://localhost:5000/lib/python:3.1?
    platforms: [linux/amd64, linux/arm/v7]
    name: py
  - source: docker://localhost:5000/lib/python:2.*
    name: py
  - source: docker://localhost:5000/base@sha256:4b2d3bb8eb2b2f1b7a1e6de15b0a1f2c0b1d7c3e5f6a7b8c9d0e1f2a3b4c5d6e
    name: base:pinned
";

/// Directories, files (inline and stored as an object), links to this
/// layer and to the base layer of the fuzzing harness, devices.
fn basic_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/app.conf", b"answer = 42\n"),
        TarEntry::file(b"etc/blob", &support::fsutil::Rng::new(3).bytes(1500)),
        TarEntry::symlink(b"etc/link", b"app.conf"),
        TarEntry::hardlink(b"etc/same", b"etc/blob"),
        TarEntry::hardlink(b"etc/lower", b"etc/hello.txt"),
        TarEntry::dir(b"bin/"),
        TarEntry::file(b"bin/app", b"#!/bin/sh\necho app\n").mode(0o4755),
        TarEntry::char_dev(b"dev/console", 5, 1),
        TarEntry {
            kind: TarKind::Fifo,
            ..TarEntry::dir(b"run/fifo")
        },
    ]
}

/// What an upper layer does to the ones below: whiteouts, an opaque
/// directory, replacing a file by a directory and a symlink by a file.
fn change_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::whiteout(b"var/lib/", b"state"),
        TarEntry::whiteout(b"etc/", b"link"),
        TarEntry::opaque(b"usr/bin/"),
        TarEntry::file(b"usr/bin/new", b"new\n"),
        TarEntry::dir(b"fifo/"),
        TarEntry::file(b"bin", b"not a symlink any more\n"),
        TarEntry::file(b"etc/app.conf", b"answer = 43\n"),
    ]
}

/// PAX records: xattrs, owners, nanosecond and negative times, long names.
fn pax_entries() -> Vec<TarEntry> {
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(100));
    vec![
        TarEntry::dir(b"deep/")
            .xattr("user.comment", b"a directory")
            .owner(1000, 1000),
        TarEntry::file(long.as_bytes(), b"long name\n").mtime(1_700_000_000, Some(123_456_789)),
        TarEntry::file(b"deep/caps", b"caps\n").xattr(
            "security.capability",
            &[1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        TarEntry::symlink(b"deep/long-link", long.as_bytes()),
        TarEntry::file(b"old", b"before 1970\n").mtime(0, Some(500_000_000)),
    ]
}
