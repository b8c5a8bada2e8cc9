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

pub(crate) fn store(repo: &Path) -> Store {
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

pub(crate) fn flat_catalog(repo: &TestRepo, name: &str) -> ObjectId {
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

/// A subtree catalog shown at two places of one mount (the same base in two
/// images) is two directories: other inode numbers, the right parent, and
/// hardlinks within each place only.
#[test]
fn a_shared_subtree_mounted_at_two_places_is_two_directories() {
    use crate::support::mount::{require_fuse, Mount, MountSource};
    use std::os::unix::fs::MetadataExt;
    if !require_fuse() {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let base = base_layer();
    layout.add_image("one", &[base.clone(), top_layer("one")]);
    layout.add_image("two", &[base, top_layer("two")]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let repo = TestRepo::new("places.example.org");
    repo.publish(&[&src("one"), &src("two")], None);
    let names: Vec<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = Mount::start(&MountSource::dir(&repo.repo, None), &mnt, None);
    let lib = |name: &str| {
        m.path()
            .join("images")
            .join(name.replace(':', "/"))
            .join("usr/lib")
    };
    let (a, b) = (lib(&names[0]), lib(&names[1]));
    let (ma, mb) = (
        std::fs::metadata(&a).unwrap(),
        std::fs::metadata(&b).unwrap(),
    );
    assert_ne!(ma.ino(), mb.ino(), "one directory inode under two parents");
    for dir in [&a, &b] {
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 601);
        let x = std::fs::metadata(dir.join("alias.so")).unwrap();
        let y = std::fs::metadata(dir.join("lib0001.so")).unwrap();
        assert_eq!((x.ino(), x.nlink()), (y.ino(), 2));
        assert_eq!(
            std::fs::read(dir.join("lib0003.so")).unwrap(),
            "library 3\n".repeat(4).as_bytes()
        );
        // `..` of the subtree's root is its own image's usr.
        let up = std::fs::metadata(dir.join("..")).unwrap();
        assert_eq!(
            up.ino(),
            std::fs::metadata(dir.parent().unwrap()).unwrap().ino()
        );
    }
    let x = std::fs::metadata(a.join("alias.so")).unwrap();
    let y = std::fs::metadata(b.join("alias.so")).unwrap();
    assert_ne!(x.ino(), y.ino(), "hardlinks stay within one place");
}

/// A top layer whose `app/` (with a subdirectory and a whiteout-free
/// body of `n` files) comes from it alone, as `COPY app /app` writes it.
pub(crate) fn app_layer(tag: &str, n: usize) -> Layer {
    let mut e = vec![
        TarEntry::dir(b"app/"),
        TarEntry::dir(b"app/lib/"),
        TarEntry::file(b"etc/hostname", format!("{tag}\n").as_bytes()),
    ];
    for i in 0..n {
        let path = if i % 2 == 0 {
            format!("app/m{i:03}.py")
        } else {
            format!("app/lib/l{i:03}.py")
        };
        e.push(TarEntry::file(
            path.as_bytes(),
            format!("# {tag} {i}\n").as_bytes(),
        ));
    }
    Layer::gzip(&e)
}

/// The catalog mounted at `/name` of the catalog `top`.
pub(crate) fn mounted_at(repo: &Path, top: &ObjectId, name: &[u8]) -> Option<ObjectId> {
    let cat = store(repo).load_catalog(top).unwrap();
    cat.lookup(stratum_catalog::catalog::ROOT_ID, name)
        .unwrap()
        .and_then(|e| e.nested)
}

#[test]
fn an_image_s_own_directory_is_one_catalog_of_its_layer_tree_and_its_flat_tree() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let base = base_layer();
    layout.add_image("one", &[base.clone(), app_layer("one", 60)]);
    layout.add_image("small", &[base, app_layer("small", 4)]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let repo = TestRepo::new("own.example.org");
    repo.publish_one(&src("one"), Some("app:one"));
    repo.publish_one(&src("small"), Some("app:small"));
    repo.check();
    let layer_top = |name: &str| {
        let img = repo.image(name);
        ObjectId::from_hex(img["layers"][1]["catalog"].as_str().unwrap()).unwrap()
    };
    // `app/` (63 entries) is at the edge of what the top layer alone
    // writes: one catalog, the same object in both trees.
    let in_layer = mounted_at(&repo.repo, &layer_top("app:one"), b"app");
    let in_flat = mounted_at(&repo.repo, &flat_catalog(&repo, "app:one"), b"app");
    assert!(in_layer.is_some(), "the layer tree cuts app/");
    assert_eq!(
        in_layer, in_flat,
        "app/ of the layer tree and the flat tree"
    );
    // etc/ mixes the base's and the top layer's entries: never cut by this
    // rule; and the base's directories stay in the base's catalogs.
    assert_eq!(mounted_at(&repo.repo, &layer_top("app:one"), b"etc"), None);
    assert_eq!(
        mounted_at(&repo.repo, &flat_catalog(&repo, "app:one"), b"etc"),
        None
    );
    // Below the threshold (7 entries) app/ stays inline in both.
    assert_eq!(
        mounted_at(&repo.repo, &layer_top("app:small"), b"app"),
        None
    );
    assert_eq!(
        mounted_at(&repo.repo, &flat_catalog(&repo, "app:small"), b"app"),
        None
    );
    // The trees read back whole through the nested catalogs.
    let dest = repo.scratch("pull");
    repo.pull_image("app:one", &dest);
    assert_eq!(std::fs::read_dir(dest.join("app")).unwrap().count(), 31);
    assert_eq!(
        std::fs::read(dest.join("app/lib/l059.py")).unwrap(),
        b"# one 59\n"
    );
    assert_eq!(std::fs::read(dest.join("etc/hostname")).unwrap(), b"one\n");
}

/// The root catalog id the repository's signed manifest names.
fn manifest_root(repo: &Path) -> String {
    let text = std::fs::read_to_string(repo.join(".stratum/manifest")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("root "))
        .unwrap_or_else(|| panic!("no root line in {text}"))
        .to_owned()
}

/// `stratum publish SRC --as NAME` with `SOURCE_DATE_EPOCH` set.
fn publish_at(repo: &TestRepo, src: &str, name: &str, epoch: &str) {
    let mut cmd = std::process::Command::new(crate::support::stratum_bin());
    cmd.args(repo.publish_args(&[src], Some(name)))
        .env("NO_COLOR", "1")
        .env("SOURCE_DATE_EPOCH", epoch);
    crate::support::run_cmd(cmd).assert_success();
}

#[test]
fn the_same_image_in_two_fresh_repositories_has_byte_identical_catalogs() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    layout.add_image("one", &[base_layer(), top_layer("one")]);
    let src = format!("oci:{}:one", layout.dir.display());
    let a = TestRepo::new("same.example.org");
    // A second apart, so that nothing that depends on the time can agree
    // by chance.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = TestRepo::new("same.example.org");
    // An empty namespace holds no time at all.
    assert_eq!(
        manifest_root(&a.repo),
        manifest_root(&b.repo),
        "roots after init"
    );
    a.publish_one(&src, Some("app:one"));
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
    // The one time a first publish puts in catalogs is the image's publish
    // time: with SOURCE_DATE_EPOCH, the whole namespace is the same.
    let c = TestRepo::new("same.example.org");
    publish_at(&c, &src, "app:one", "1700000000");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let d = TestRepo::new("same.example.org");
    publish_at(&d, &src, "app:one", "1700000000");
    assert_eq!(manifest_root(&c.repo), manifest_root(&d.repo), "roots");
    assert_eq!(c.image("app:one")["published_at"], 1_700_000_000);
    assert_ne!(
        manifest_root(&a.repo),
        manifest_root(&b.repo),
        "without SOURCE_DATE_EPOCH the records say when each was published"
    );
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
    // What the revision wrote is version 2; the base's trees are kept as
    // the version-1 catalogs they were.
    let s = store(&repo);
    let manifest_bytes = std::fs::read(repo.join(".stratum/manifest")).unwrap();
    let (m, _, _) = stratum_catalog::manifest::Manifest::parse_unverified(&manifest_bytes).unwrap();
    assert_eq!(s.load_catalog(&m.root).unwrap().format_version(), 2);
    assert_eq!(s.load_catalog(&app_flat).unwrap().format_version(), 2);
    let images = stratum([OsStr::new("images"), repo.as_os_str(), OsStr::new("--json")]).json();
    let base_flat = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "local/base:1")
        .unwrap()["flat_catalog"]
        .as_str()
        .unwrap()
        .to_owned();
    let base_flat = ObjectId::from_hex(&base_flat).unwrap();
    assert_eq!(s.load_catalog(&base_flat).unwrap().format_version(), 1);
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

// ---------------------------------------------------------------------------
// Hostile nesting, signed by the repository key: readers' own checks only.

/// Stores a catalog of `kind` whose root holds the directories `dirs`,
/// each the mount point of its catalog when given.
fn store_catalog(
    repo: &TestRepo,
    kind: CatalogKind,
    path: &str,
    dirs: &[(&[u8], Option<ObjectId>)],
) -> ObjectId {
    use stratum_catalog::catalog::{CatalogBuilder, Entry, FileType, ROOT_ID};
    let scratch = repo.scratch("build");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut b = CatalogBuilder::create(
        &scratch,
        kind,
        path,
        &Entry::new(FileType::Directory, 0o755),
    )
    .unwrap();
    for &(name, to) in dirs {
        let mut d = Entry::new(FileType::Directory, 0o755);
        d.name = name.to_vec();
        d.nested = to;
        b.insert(ROOT_ID, &d).unwrap();
    }
    let mut f = b.finish_file().unwrap();
    store(&repo.repo)
        .put_file(ObjectKind::Catalog, f.as_file_mut(), 1)
        .unwrap()
        .id
}

/// Stores a catalog of `kind` whose root holds a directory `d`, the mount
/// point of `to` when given.
fn link(repo: &TestRepo, kind: CatalogKind, path: &str, to: Option<ObjectId>) -> ObjectId {
    store_catalog(repo, kind, path, &[(b"d", to)])
}

/// Signs a revision whose root mounts `flat` at `/t`.
fn sign_with_tree(repo: &TestRepo, flat: ObjectId) {
    use stratum_catalog::manifest::{load_signing_key, Manifest};
    let root = store_catalog(repo, CatalogKind::Root, "/", &[(b"t", Some(flat))]);
    let key = load_signing_key(&repo.key).unwrap();
    let st = store(&repo.repo);
    let (m, mid) = st.manifest(&key.verifying_key()).unwrap();
    let next = Manifest::new(&m.name, m.revision + 1, m.timestamp + 1, root, Some(mid)).unwrap();
    std::fs::write(repo.manifest_path(), next.sign(&key)).unwrap();
}

/// `pull --path /t` and `check` of `repo` fail, within a minute, saying
/// `needle`; so does reading `/t/d…` (depth `walk`) in a mount, where FUSE
/// is available.
fn refused_everywhere(repo: &TestRepo, needle: &str, walk: usize) {
    use crate::support::mount::{require_fuse, Mount, MountSource};
    let started = std::time::Instant::now();
    let dest = repo.scratch("dest");
    let out = stratum_raw([
        OsStr::new("pull"),
        repo.repo.as_os_str(),
        OsStr::new("--path"),
        OsStr::new("/t"),
        dest.as_os_str(),
    ])
    .assert_clean_failure();
    assert!(
        out.stderr_str().contains(needle),
        "pull: {}",
        out.stderr_str()
    );
    let out = stratum_raw([OsStr::new("check"), repo.repo.as_os_str()]);
    out.assert_no_panic();
    assert!(!out.success(), "check accepted it");
    assert!(
        out.stdout_str().contains(needle) || out.stderr_str().contains(needle),
        "check: {} {}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    if require_fuse() {
        let mnt = repo.scratch("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let m = Mount::start(&MountSource::dir(&repo.repo, None), &mnt, None);
        let deep = m.path().join("t").join("d/".repeat(walk));
        let err = std::fs::read_dir(&deep).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(5),
            "EIO at {}: {err}",
            deep.display()
        );
    }
}

#[test]
fn nested_catalogs_deeper_than_the_limit_are_refused() {
    use stratum_catalog::catalog::nesting::MAX_NESTING;
    let repo = TestRepo::new("deep.example.org");
    let mut below = None;
    for _ in 0..MAX_NESTING + 10 {
        below = Some(link(&repo, CatalogKind::Subtree, "", below));
    }
    let flat = link(&repo, CatalogKind::Flat, "/t", below);
    sign_with_tree(&repo, flat);
    refused_everywhere(
        &repo,
        &format!("more than {MAX_NESTING} deep"),
        MAX_NESTING + 2,
    );
}

#[test]
fn a_nested_catalog_that_is_missing_or_of_a_tree_kind_is_refused() {
    // Missing: a hash nobody stored.
    let repo = TestRepo::new("missing.example.org");
    let missing = ObjectId::of(b"no such catalog");
    let flat = link(&repo, CatalogKind::Flat, "/t", Some(missing));
    sign_with_tree(&repo, flat);
    refused_everywhere(&repo, &missing.to_hex(), 1);
    // A subtree mounting a flat tree (what mounting an ancestor takes,
    // since no catalog can hold its own hash).
    let repo = TestRepo::new("kind.example.org");
    let other_flat = link(&repo, CatalogKind::Flat, "/t", None);
    let sub = link(&repo, CatalogKind::Subtree, "", Some(other_flat));
    let flat = link(&repo, CatalogKind::Flat, "/t", Some(sub));
    sign_with_tree(&repo, flat);
    refused_everywhere(&repo, "kind flat", 2);
}

/// Stores a `subtree` catalog whose root holds directories `a` and `b`,
/// both mount points of `to` (or empty when `to` is `None`).
fn fork(repo: &TestRepo, to: Option<ObjectId>) -> ObjectId {
    store_catalog(repo, CatalogKind::Subtree, "", &[(b"a", to), (b"b", to)])
}

/// FORMAT.md §13 point 12: 40 catalogs, each mounting the next twice, show
/// 2^40 directories. Each is read once by `check`; `pull` used to walk
/// them all (exponential in the size of the repository) and now refuses
/// the 1025th entry into one catalog, naming it.
#[test]
fn a_fan_out_of_shared_subtrees_is_refused_by_pull_not_walked_exponentially() {
    use stratum_catalog::catalog::nesting::MAX_MOUNTS_OF_ONE_CATALOG;
    let repo = TestRepo::new("fanout.example.org");
    let leaf = fork(&repo, None);
    let mut below = leaf;
    for _ in 0..40 {
        below = fork(&repo, Some(below));
    }
    let flat = link(&repo, CatalogKind::Flat, "/t", Some(below));
    sign_with_tree(&repo, flat);
    let started = std::time::Instant::now();
    let out = stratum_raw([OsStr::new("check"), repo.repo.as_os_str()]);
    out.assert_no_panic();
    let dest = repo.scratch("dest");
    let out = stratum_raw([
        OsStr::new("pull"),
        repo.repo.as_os_str(),
        OsStr::new("--path"),
        OsStr::new("/t"),
        dest.as_os_str(),
    ])
    .assert_clean_failure();
    let err = out.stderr_str();
    assert!(
        err.contains(&format!(
            "mounted at more than {MAX_MOUNTS_OF_ONE_CATALOG} places"
        )),
        "pull: {err}"
    );
    // The catalog entered most is the deepest one, which the walk reaches
    // first.
    assert!(err.contains(&leaf.to_hex()), "names the catalog: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
