//! Regression tests, each named after the bug it pins down. The expected
//! trees come from `umoci unpack` of the same hand-built image.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::MetadataExt;

use support::compare::CompareOpts;
use support::oci::{Layer, Layout, TarEntry};
use support::{tempdir, TestRepo};

/// A tar hardlink to a file of a lower layer that already had another
/// link: the flat tree must keep one inode with all three names (as
/// extracting the layers does), not split the lower group.
#[test]
fn hardlink_to_lower_file_joins_its_existing_group() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let base = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/a", b"shared inode\n"),
        TarEntry::hardlink(b"etc/b", b"etc/a"),
    ]);
    let upper = Layer::gzip(&[
        TarEntry::hardlink(b"c", b"etc/a"),
        TarEntry::file(b"d", b"new\n"),
    ]);
    layout.add_image("t", &[base, upper]);
    let source = format!("oci:{}:t", layout.dir.display());

    let oracle = tmp.path().join("oracle");
    support::tool(
        "umoci",
        [
            "unpack",
            "--image",
            &format!("{}:t", layout.dir.display()),
            oracle.to_str().unwrap(),
        ],
    )
    .assert_success();
    let rootfs = oracle.join("rootfs");
    assert_eq!(
        std::fs::symlink_metadata(rootfs.join("c")).unwrap().nlink(),
        3,
        "umoci: one inode, three names"
    );

    let repo = TestRepo::new("regressions.test");
    repo.publish_one(&source, Some("test/links:t"));
    repo.check();
    let dest = repo.scratch("flat");
    repo.pull_image("test/links:t", &dest);
    let ino = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("c"), ino("etc/a"));
    assert_eq!(ino("etc/b"), ino("etc/a"));
    assert_eq!(
        std::fs::symlink_metadata(dest.join("c")).unwrap().nlink(),
        3
    );
    support::compare::assert_trees_equal(&rootfs, &dest, &CompareOpts::default(), "flat vs umoci");
}

/// A tar that carries overlay xattrs itself must not steer overlay mounts
/// of the layer trees: only `.wh..wh..opq` makes a directory opaque.
#[test]
fn overlay_xattrs_from_the_tar_are_dropped() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"d/")
            .xattr("trusted.overlay.opaque", b"y")
            .xattr("user.keep", b"1"),
        TarEntry::file(b"d/f", b"x").xattr("trusted.overlay.redirect", b"/etc"),
    ]);
    let diff_id = layer.diff_id();
    layout.add_image("t", &[layer]);
    let repo = TestRepo::new("regressions.test");
    repo.publish_one(&format!("oci:{}:t", layout.dir.display()), Some("test/x:t"));
    let hex = diff_id.trim_start_matches("sha256:");
    let out = support::stratum([
        "ls",
        repo.repo.to_str().unwrap(),
        &format!("/layers/{}/{hex}/d", &hex[..2]),
        "--json",
    ]);
    assert!(out.stdout_str().contains("\"f\""), "{}", out.stdout_str());
    let dest = repo.scratch("layer");
    repo.pull_path(&format!("/layers/{}/{hex}", &hex[..2]), &dest);
    let names = |p: &std::path::Path| -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(p, &mut buf).unwrap();
        buf[..n]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let d = names(&dest.join("d"));
    assert!(d.contains(&"user.keep".to_owned()), "{d:?}");
    assert!(!d.iter().any(|n| n.contains("overlay")), "{d:?}");
    assert!(!names(&dest.join("d/f"))
        .iter()
        .any(|n| n.contains("overlay")));
}

/// An image that lists the same layer twice: the second use must find the
/// layer tree ingested moments before (its catalog may still be on its way
/// to the store when the flat merge needs it).
#[test]
fn the_same_layer_twice_in_one_image() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let a = || {
        Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"a", b"layer a\n"),
            TarEntry::file(b"big", &support::fsutil::Rng::new(5).bytes(300_000)),
        ])
    };
    let b = Layer::gzip(&[
        TarEntry::file(b"a", b"layer b\n"),
        TarEntry::file(b"b", b"b\n"),
    ]);
    layout.add_image("t", &[a(), b, a()]);
    let oracle = tmp.path().join("oracle");
    support::tool(
        "umoci",
        [
            "unpack",
            "--image",
            &format!("{}:t", layout.dir.display()),
            oracle.to_str().unwrap(),
        ],
    )
    .assert_success();
    let repo = TestRepo::new("regressions.test");
    let report = repo.publish_one(
        &format!("oci:{}:t", layout.dir.display()),
        Some("test/twice:t"),
    );
    assert_eq!(report["layers_ingested"].as_u64(), Some(2), "{report}");
    assert_eq!(report["layers_skipped"].as_u64(), Some(1), "{report}");
    repo.check();
    let dest = repo.scratch("flat");
    repo.pull_image("test/twice:t", &dest);
    assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"layer a\n");
    support::compare::assert_trees_equal(
        &oracle.join("rootfs"),
        &dest,
        &CompareOpts::default(),
        "flat vs umoci",
    );
}
