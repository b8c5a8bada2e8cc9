//! Small files in flat trees (D49): a flat tree's catalog that is its
//! image's own (the top mixing layers, a subtree a whiteout changed)
//! stores its small files as content objects, not inline, so that the
//! files of a base that every image on it changes a directory of are
//! stored once, not once per image.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use stratum_catalog::{ObjectId, ObjectKind};

use crate::format_v2::{app_layer, flat_catalog, mounted_at, store};
use crate::support::compare::compare_trees;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{tempdir, TestRepo};

/// A base whose `etc/` holds small files, and a top layer that changes
/// `etc/` (as nearly every image does) and adds its own `app/`.
fn etc_base() -> Layer {
    let mut e = vec![TarEntry::dir(b"./"), TarEntry::dir(b"etc/")];
    for i in 0..40 {
        e.push(TarEntry::file(
            format!("etc/conf{i:02}.conf").as_bytes(),
            format!("setting{i} = {}\n", "x".repeat(i * 10)).as_bytes(),
        ));
    }
    Layer::gzip(&e)
}

/// The `etc/` files of a tree (in its top catalog or the one mounted at
/// `etc/`): name → (inline, content id).
fn etc_files(repo: &Path, top: &ObjectId) -> BTreeMap<Vec<u8>, (bool, Option<ObjectId>)> {
    use stratum_catalog::catalog::{Data, ROOT_ID};
    let mut cat = store(repo).load_catalog(top).unwrap();
    let mut etc = cat.lookup(ROOT_ID, b"etc").unwrap().unwrap().id;
    if let Some(nested) = mounted_at(repo, top, b"etc") {
        (cat, etc) = (store(repo).load_catalog(&nested).unwrap(), ROOT_ID);
    }
    let mut out = BTreeMap::new();
    cat.for_each_child(etc, |e| {
        let data = match &e.data {
            Data::Inline(_) => (true, None),
            Data::Object(id) => (false, Some(*id)),
            other => panic!("{:?}: {other:?}", e.name),
        };
        out.insert(e.name, data);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn base_files_in_a_flat_catalog_mixing_layers_are_content_objects_shared_by_the_images() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let base = etc_base();
    layout.add_image("one", &[base.clone(), app_layer("one", 60)]);
    layout.add_image("two", &[base, app_layer("two", 60)]);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let repo = TestRepo::new("inline.example.org");
    repo.publish_one(&src("one"), Some("app:one"));
    repo.publish_one(&src("two"), Some("app:two"));
    repo.check();
    // etc/ mixes two layers: never cut, in the flat tree's top catalog.
    assert_eq!(
        mounted_at(&repo.repo, &flat_catalog(&repo, "app:two"), b"etc"),
        None
    );
    // etc/ mixes two layers: never cut, in the flat tree's top catalog.
    let flat_two = flat_catalog(&repo, "app:two");
    assert_eq!(mounted_at(&repo.repo, &flat_two, b"etc"), None);
    let one = etc_files(&repo.repo, &flat_catalog(&repo, "app:one"));
    let two = etc_files(&repo.repo, &flat_catalog(&repo, "app:two"));
    assert_eq!(one.len(), 41, "40 base files and the top layer's hostname");
    // The flat tops hold no inline bytes: the base's small files are
    // content objects, the same ones in both images.
    for (name, (inline, id)) in &two {
        let name = String::from_utf8_lossy(name);
        assert!(!inline, "etc/{name} is inline in a catalog mixing layers");
        if name != "hostname" {
            assert_eq!(one[name.as_bytes()].1, *id, "etc/{name}");
            let path = repo.repo.join(id.unwrap().path(ObjectKind::Content));
            assert!(path.exists(), "etc/{name}: {} missing", path.display());
        }
    }
    // The base's layer tree is one layer's: it keeps inlining them.
    let base_top = {
        let img = repo.image("app:two");
        ObjectId::from_hex(img["layers"][0]["catalog"].as_str().unwrap()).unwrap()
    };
    let in_layer = etc_files(&repo.repo, &base_top);
    assert!(in_layer.values().all(|(inline, _)| *inline), "{in_layer:?}");
    // app/ is the top layer's alone (D43): its catalog inlines.
    let app = mounted_at(&repo.repo, &flat_catalog(&repo, "app:two"), b"app").unwrap();
    let cat = store(&repo.repo).load_catalog(&app).unwrap();
    let mut inline = 0;
    cat.for_each_entry(|e| {
        inline += usize::from(matches!(e.data, stratum_catalog::catalog::Data::Inline(_)));
        Ok(())
    })
    .unwrap();
    assert_eq!(inline, 60);
    // Read back: the same bytes as the layers say, in the flat tree's
    // extraction and through the layer trees.
    let dest = repo.scratch("pull");
    repo.pull_image("app:two", &dest);
    assert_eq!(
        std::fs::read(dest.join("etc/conf07.conf")).unwrap(),
        format!("setting7 = {}\n", "x".repeat(70)).as_bytes()
    );
    assert_eq!(std::fs::read(dest.join("etc/hostname")).unwrap(), b"two\n");
    // The flat tree is still what `umoci unpack` extracts.
    let bundle = tmp.path().join("oracle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:two", layout.dir.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci: {out:?}");
    compare_trees(&bundle.join("rootfs"), &dest).unwrap();
}
