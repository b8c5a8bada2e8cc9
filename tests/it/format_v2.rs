//! Format version 2 (issue 17): flat trees are Merkle trees of nested
//! `subtree` catalogs, so what images share is stored once; the catalogs
//! are deterministic; version-1 repositories are read and upgraded by the
//! next revision; a repository newer than the reader is refused.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::CatalogKind;
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::support::compare::compare_trees;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{stratum, stratum_raw, tempdir, TestRepo};

/// A base layer big enough to be cut (`usr/lib` holds 600 files, over the
/// writer's threshold), and a top layer of a few files.
fn base_layer() -> Layer {
    let mut e = vec![
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/hostname", b"base\n"),
        TarEntry::dir(b"usr/"),
        TarEntry::dir(b"usr/lib/"),
        TarEntry::dir(b"usr/share/"),
        TarEntry::dir(b"usr/share/doc/"),
    ];
    for i in 0..600 {
        let body = format!("library {i}\n").repeat(1 + i % 7);
        e.push(TarEntry::file(
            format!("usr/lib/lib{i:04}.so").as_bytes(),
            body.as_bytes(),
        ));
    }
    for i in 0..300 {
        e.push(TarEntry::file(
            format!("usr/share/doc/README.{i}").as_bytes(),
            format!("doc {i}\n").as_bytes(),
        ));
    }
    e.push(TarEntry::hardlink(
        b"usr/lib/alias.so",
        b"usr/lib/lib0001.so",
    ));
    Layer::gzip(&e)
}

fn top_layer(tag: &str) -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"app/"),
        TarEntry::file(b"app/main.py", format!("print({tag:?})\n").as_bytes()),
        TarEntry::file(b"etc/hostname", format!("{tag}\n").as_bytes()),
    ])
}

fn store(repo: &Path) -> Store {
    Store::new(Arc::new(LocalDir::open(repo).unwrap()))
}

/// Every catalog a tree reaches, with its stored (compressed) size.
fn tree_catalogs(repo: &Path, top: &ObjectId) -> BTreeMap<ObjectId, u64> {
    let s = store(repo);
    let mut out = BTreeMap::new();
    let mut todo = vec![*top];
    while let Some(id) = todo.pop() {
        if out.contains_key(&id) {
            continue;
        }
        let size = std::fs::metadata(repo.join(id.path(ObjectKind::Catalog)))
            .unwrap()
            .len();
        out.insert(id, size);
        let cat = s.load_catalog(&id).unwrap();
        cat.for_each_entry(|e| {
            todo.extend(e.nested);
            Ok(())
        })
        .unwrap();
    }
    out
}

fn flat_catalog(repo: &TestRepo, name: &str) -> ObjectId {
    ObjectId::from_hex(repo.image(name)["flat_catalog"].as_str().unwrap()).unwrap()
}

#[test]
fn images_with_the_same_base_share_its_subtree_catalogs() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let base = base_layer();
    layout.add_image("one", &[base.clone(), top_layer("one")]);
    layout.add_image("two", &[base, top_layer("two")]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let repo = TestRepo::new("share.example.org");
    repo.publish_one(&src("one"), Some("app:one"));
    repo.publish_one(&src("two"), Some("app:two"));
    repo.check();

    let one = tree_catalogs(&repo.repo, &flat_catalog(&repo, "app:one"));
    let two = tree_catalogs(&repo.repo, &flat_catalog(&repo, "app:two"));
    let s = store(&repo.repo);
    let top_one = s.load_catalog(&flat_catalog(&repo, "app:one")).unwrap();
    assert_eq!(top_one.kind(), CatalogKind::Flat);
    let shared: Vec<_> = two.keys().filter(|id| one.contains_key(id)).collect();
    // usr/lib and usr/share/doc are cut, and identical in both images.
    assert_eq!(
        shared.len(),
        2,
        "shared subtrees: {shared:?} of {one:?} / {two:?}"
    );
    for id in &shared {
        assert_eq!(s.load_catalog(id).unwrap().kind(), CatalogKind::Subtree);
    }
    let first: u64 = one.values().sum();
    let second_new: u64 = two
        .iter()
        .filter(|(id, _)| !one.contains_key(id))
        .map(|(_, n)| n)
        .sum();
    assert!(
        second_new * 5 < first,
        "the second image's own catalogs take {second_new} bytes, the first's all {first}"
    );
    // Both trees read in full through the nested catalogs, hardlink kept.
    for name in ["app:one", "app:two"] {
        let dest = repo.scratch("pull");
        repo.pull_image(name, &dest);
        assert_eq!(
            std::fs::read_dir(dest.join("usr/lib")).unwrap().count(),
            601
        );
        let a = std::fs::metadata(dest.join("usr/lib/alias.so")).unwrap();
        let b = std::fs::metadata(dest.join("usr/lib/lib0001.so")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{name}");
    }
}

#[test]
fn the_same_image_in_two_fresh_repositories_has_byte_identical_catalogs() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    layout.add_image("one", &[base_layer(), top_layer("one")]);
    let src = format!("oci:{}:one", layout.dir.display());
    let a = TestRepo::new("a.example.org");
    let b = TestRepo::new("b.example.org");
    a.publish_one(&src, Some("app:one"));
    // A second apart, so that nothing that depends on the time can agree
    // by chance.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.publish_one(&src, Some("app:one"));
    let (fa, fb) = (flat_catalog(&a, "app:one"), flat_catalog(&b, "app:one"));
    assert_eq!(fa, fb, "flat tree ids");
    let ca = tree_catalogs(&a.repo, &fa);
    assert_eq!(
        ca.keys().collect::<Vec<_>>(),
        tree_catalogs(&b.repo, &fb).keys().collect::<Vec<_>>()
    );
    assert!(ca.len() >= 3, "{ca:?}");
    for id in ca.keys() {
        let path = id.path(ObjectKind::Catalog);
        let (x, y) = (
            store(&a.repo).get(id, ObjectKind::Catalog).unwrap(),
            store(&b.repo).get(id, ObjectKind::Catalog).unwrap(),
        );
        assert_eq!(x, y, "{path}");
    }
    // The layer trees too.
    let layers = |r: &TestRepo| -> Vec<String> {
        r.image("app:one")["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["catalog"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(layers(&a), layers(&b));
}

/// Copies the version-1 fixture (written by the version-1 implementation,
/// commit fe8d6a1: `stratum init` + `publish oci:layout:base --as
/// local/base:1`) into a temp dir.
fn v1_fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/format-v1");
    let copy = |from: &Path, to: &Path| {
        for e in walkdir::WalkDir::new(from) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(from).unwrap();
            let dest = to.join(rel);
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
            } else {
                std::fs::copy(e.path(), &dest).unwrap();
            }
        }
    };
    copy(&fx, dir);
    let key = dir.join("key");
    let mut p = std::fs::metadata(&key).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o600);
    std::fs::set_permissions(&key, p).unwrap();
    (dir.join("repo"), key, dir.join("layout"))
}

fn info(repo: &Path) -> serde_json::Value {
    stratum([OsStr::new("info"), repo.as_os_str(), OsStr::new("--json")]).json()
}

#[test]
fn a_version_1_repository_is_read_and_upgraded_by_one_signed_revision() {
    let tmp = tempdir();
    let (repo, key, layout) = v1_fixture(tmp.path());
    let i = info(&repo);
    assert_eq!(
        (i["format_version"].as_u64(), i["revision"].as_u64()),
        (Some(1), Some(2))
    );
    stratum([OsStr::new("check"), repo.as_os_str()]);
    let before = tmp.path().join("before");
    stratum([
        OsStr::new("pull"),
        repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new("local/base:1"),
        before.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read_dir(before.join("usr/lib")).unwrap().count(),
        300
    );

    let out = stratum([
        OsStr::new("publish"),
        OsStr::new(&format!("oci:{}:app", layout.display())),
        OsStr::new("--repo"),
        repo.as_os_str(),
        OsStr::new("--key"),
        key.as_os_str(),
        OsStr::new("--as"),
        OsStr::new("local/app:1"),
    ]);
    let err = out.stderr_str();
    assert!(
        err.contains(
            "is in format version 1: this revision (revision 3) upgrades it to format version 2"
        ),
        "{err}"
    );
    let manifest = std::fs::read_to_string(repo.join(".stratum/manifest")).unwrap();
    assert!(manifest.starts_with("stratum-manifest 2\n"), "{manifest}");
    let i = info(&repo);
    assert_eq!(
        (i["format_version"].as_u64(), i["revision"].as_u64()),
        (Some(2), Some(3))
    );
    stratum([OsStr::new("check"), repo.as_os_str()]);
    // The version-1 trees are kept as they are and read next to the new
    // ones; the next publish says nothing more about versions.
    for (name, dest) in [("local/base:1", "base"), ("local/app:1", "app")] {
        let d = tmp.path().join(dest);
        stratum([
            OsStr::new("pull"),
            repo.as_os_str(),
            OsStr::new("--image"),
            OsStr::new(name),
            d.as_os_str(),
        ]);
    }
    compare_trees(&before, &tmp.path().join("base")).unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("app/etc/hostname")).unwrap(),
        b"app\n"
    );
    let app_flat = ObjectId::from_hex(
        stratum([OsStr::new("images"), repo.as_os_str(), OsStr::new("--json")])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "local/app:1")
            .unwrap()["flat_catalog"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let cats = tree_catalogs(&repo, &app_flat);
    assert_eq!(
        cats.len(),
        2,
        "usr/lib (301 entries) is a subtree: {cats:?}"
    );
    let again = stratum([
        OsStr::new("rm"),
        repo.as_os_str(),
        OsStr::new("--key"),
        key.as_os_str(),
        OsStr::new("local/app:1"),
    ]);
    assert!(
        !again.stderr_str().contains("format version"),
        "{}",
        again.stderr_str()
    );
}

#[test]
fn a_repository_of_a_newer_format_is_refused_naming_both_versions() {
    let tmp = tempdir();
    let (repo, key, _) = v1_fixture(tmp.path());
    // Re-signed as version 3 with the repository's key: what a reader of
    // versions 1-2 meets in a repository a newer stratum wrote.
    let sk = stratum_catalog::manifest::load_signing_key(&key).unwrap();
    let bytes = std::fs::read(repo.join(".stratum/manifest")).unwrap();
    let (mut m, _, _) = stratum_catalog::manifest::Manifest::parse_unverified(&bytes).unwrap();
    m.version = 3;
    std::fs::write(repo.join(".stratum/manifest"), m.sign(&sk)).unwrap();
    for args in [
        vec![OsStr::new("info"), repo.as_os_str()],
        vec![OsStr::new("check"), repo.as_os_str()],
        vec![
            OsStr::new("rm"),
            repo.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("local/base:1"),
        ],
    ] {
        let out = stratum_raw(args.clone()).assert_clean_failure();
        let err = out.stderr_str();
        assert!(
            err.contains("unsupported format version 3") && err.contains("reads versions 1 to 2"),
            "{args:?}: {err}"
        );
    }
}
