//! End-to-end oracle tests: what `stratum pull` materializes must equal what
//! `umoci unpack` makes of the same image, and stacking the pulled per-layer
//! trees with overlayfs must give the same tree again.
//!
//! The `comparer` module checks the comparer itself (no stratum, no umoci);
//! `fixture_*` tests check the fixture images that umoci and skopeo build (no
//! stratum). Everything else runs the real `stratum` binary. Tests that need
//! root, umoci, skopeo or overlayfs print `SKIP: …` and return when those are
//! missing (`.ci/run` installs the tools and runs as root).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::compare::selftest::{
    expect_detects, expect_detects_with, expect_ignores, twin_trees,
};
use crate::support::compare::{assert_trees_equal, compare_trees_with, CompareOpts};
use crate::support::fixtures::{self, build_rich, build_shared_base, build_spliced};
use crate::support::fsutil::{self, p};
use crate::support::oci::Layout;
use crate::support::umoci::ImageBuilder;
use crate::support::{check_image_object, is_root, require_oracle_tools, skip, tempdir, TestRepo};
use serde_json::Value;

mod comparer;

// ===========================================================================
// The fixtures are what we think they are (umoci/skopeo only, no stratum).

/// Names of the entries of a layer blob (any compression that `tar` reads
/// after gunzip; zstd is not needed here).
fn layer_entry_names(layout: &Layout, digest: &str) -> Vec<Vec<u8>> {
    let blob = layout.read_blob(digest);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect()
}

fn has_name(names: &[Vec<u8>], name: &[u8]) -> bool {
    names
        .iter()
        .any(|n| n == name || n.strip_prefix(b"./") == Some(name))
}

#[test]
fn fixture_images_are_what_we_think() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (rich, spliced) = build_spliced(&tmp.path().join("images"));
    assert_eq!(rich.layer_count(), 3);
    assert_eq!(spliced.layer_count(), 4);
    let layout = rich.oci();
    let layers = layout.layers("spliced");
    assert_eq!(layers.len(), 4);
    assert_eq!(layout.diff_ids("spliced").len(), 4);
    assert_eq!(
        layout.layers("rich")[..],
        layers[..3],
        "spliced shares rich's layers"
    );

    // umoci writes per-file whiteouts, never the opaque marker.
    let l2 = layer_entry_names(&layout, &layers[1].0);
    for wh in [
        &b".wh.gone"[..],
        b".wh.wholedir",
        b"replaced/.wh.a",
        b"replaced/.wh.b",
        b"replaced/sub/.wh.c",
    ] {
        assert!(
            has_name(&l2, wh),
            "layer 2 lacks {:?}",
            String::from_utf8_lossy(wh)
        );
    }
    for (d, _) in &layers[..3] {
        let names = layer_entry_names(&layout, d);
        assert!(
            !names.iter().any(|n| n.ends_with(b".wh..wh..opq")),
            "umoci wrote an opaque marker"
        );
    }
    let l3 = layer_entry_names(&layout, &layers[2].0);
    assert!(
        has_name(&l3, b".wh.todelete"),
        "a deleted directory is one whiteout"
    );
    // The spliced layer has the opaque marker and the cross-layer hardlink.
    let l4 = layer_entry_names(&layout, &layers[3].0);
    assert!(has_name(&l4, b"replaced2/.wh..wh..opq"));
    assert!(has_name(&l4, b"xl/motd-link"));
    assert!(
        !has_name(&l4, b"etc/motd"),
        "the hardlink target is only in a lower layer"
    );

    // The oracle: umoci unpack.
    let r = rich.unpack(&tmp.path().join("rich-bundle"));
    let s = spliced.unpack(&tmp.path().join("spliced-bundle"));
    let lstat = |root: &Path, rel: &[u8]| std::fs::symlink_metadata(p(root, rel));
    assert!(lstat(&r, b"gone").is_err());
    assert!(lstat(&r, b"wholedir").is_err());
    assert!(lstat(&r, b"todelete").is_err());
    assert!(lstat(&r, b"replaced/a").is_err());
    assert!(lstat(&r, b"replaced/new1").unwrap().is_file());
    assert!(lstat(&r, b"morph").unwrap().is_file());
    assert!(lstat(&r, b"back/inner2").unwrap().is_file());
    assert!(lstat(&r, b"back/inner").is_err());
    assert!(lstat(&r, b"lnk/rel").unwrap().is_file());
    assert!(lstat(&r, b"lnk/abs").unwrap().file_type().is_symlink());
    assert!(lstat(&r, b"xattr/dir").unwrap().is_file());
    assert_eq!(lstat(&r, b"bin/suid").unwrap().mode() & 0o7777, 0o755);
    assert_eq!(lstat(&r, b"bin/sgid").unwrap().mode() & 0o7777, 0o2755);
    assert_eq!(lstat(&r, b"bin/allbits").unwrap().mode() & 0o7777, 0o7777);
    assert_eq!(lstat(&r, b"tmp").unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(
        lstat(&r, b"owned/dir/suid-user").unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(lstat(&r, b"owned/u1000").unwrap().uid(), 2000);
    assert_eq!(lstat(&r, b"owned/mixed").unwrap().gid(), 5678);
    assert_eq!(lstat(&r, b"owned/link").unwrap().uid(), 1000);
    assert_eq!(
        lstat(&r, b"big/random.bin").unwrap().len(),
        fixtures::BIG_FILE_SIZE as u64
    );
    assert!(lstat(&r, b"dev/null").unwrap().file_type().is_char_device());
    assert!(lstat(&r, b"dev/loop7")
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(lstat(&r, b"dev/fifo").unwrap().file_type().is_fifo());
    let mut leaf = fixtures::deep_dir();
    leaf.extend_from_slice(b"/leaf");
    assert!(lstat(&r, &leaf).unwrap().is_file());
    for name in fixtures::ODD_NAMES {
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(name);
        assert!(
            lstat(&r, &rel).is_ok(),
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    let many = walkdir::WalkDir::new(r.join("many"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(many, fixtures::MANY_FILES - fixtures::MANY_FILES / 10);
    // Hardlinks: groups survive, the deleted name is gone, the late link joined.
    let ino = |root: &Path, rel: &[u8]| lstat(root, rel).unwrap().ino();
    assert_eq!(ino(&r, b"hl/a"), ino(&r, b"hl/sub/c"));
    assert!(lstat(&r, b"hl/b").is_err());
    assert_eq!(ino(&r, b"hl/x"), ino(&r, b"hl/late"));
    assert_ne!(ino(&r, b"hl/x"), ino(&r, b"hl/lonely"));
    // Xattrs after layer 2, including a binary value. umoci repack drops
    // empty-valued xattrs ("ignoring empty-valued xattr user.empty: disallowed
    // by PAX standard"), so user.empty is not in the image at all.
    let xa: Vec<(Vec<u8>, Vec<u8>)> = fsutil::xattrs(&p(&r, b"xattr/file")).unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"user.added".to_vec(), b"added in layer 2".to_vec()),
        (b"user.binary".to_vec(), vec![0, 1, 2, 0xfe, 0xff]),
        (b"user.foo".to_vec(), b"changed in layer 2".to_vec()),
    ];
    let user: Vec<_> = xa
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"user."))
        .collect();
    assert_eq!(user, want, "umoci round trip of xattrs");
    // umoci layers carry whole seconds only, rounded to the nearest second
    // by Go's archive/tar (l2/new was 1_520_000_000.999999999 in the rootfs).
    assert_eq!(lstat(&r, b"l2/new").unwrap().mtime(), 1_520_000_001);
    assert_eq!(lstat(&r, b"l2/new").unwrap().mtime_nsec(), 0);
    assert_eq!(lstat(&r, b"etc/motd").unwrap().mtime_nsec(), 0);

    // Spliced: opaque dir, cross-layer hardlink, PAX nanoseconds kept by umoci.
    let names: Vec<_> = walkdir::WalkDir::new(s.join("replaced2"))
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&s).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        names,
        [
            "replaced2/fresh",
            "replaced2/olddir",
            "replaced2/olddir/new"
        ]
        .iter()
        .map(PathBuf::from)
        .collect::<Vec<_>>()
    );
    assert_eq!(ino(&s, b"xl/motd-link"), ino(&s, b"etc/motd"));
    let ns = lstat(&s, b"ns/file").unwrap();
    assert_eq!((ns.mtime(), ns.mtime_nsec()), (1_234_567_890, 123_456_789));
    assert_eq!((ns.uid(), ns.gid()), (31337, 31338));
    assert!(lstat(&s, b"spliced/dirgone").is_err());
    assert!(lstat(&s, b"spliced/to-symlink")
        .unwrap()
        .file_type()
        .is_symlink());
    // umoci restores a directory's metadata after whiteouts and opaque
    // markers inside it changed it, so these oracle mtimes are the tar's.
    let md = lstat(&s, b"spliced").unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_530_000_007, 7));
    let md = lstat(&s, b"replaced2").unwrap();
    assert_eq!(
        (md.mtime(), md.mtime_nsec(), md.mode() & 0o7777),
        (1_530_000_001, 1, 0o751)
    );
    let root = lstat(&s, b".").unwrap();
    assert_eq!(
        (root.mtime(), root.mtime_nsec()),
        (1_530_000_000, 123_456_789)
    );
}

#[test]
fn fixture_variants_have_the_same_layer_tars() {
    if !require_oracle_tools(true) {
        return;
    }
    let tmp = tempdir();
    let (base, derived) = build_shared_base(&tmp.path().join("images"));
    let layout = base.oci();
    assert_eq!(layout.layers("base")[0], layout.layers("derived")[0]);
    let z = derived.zstd_copy(&tmp.path().join("zimages"), "derived");
    let zl = z.oci();
    assert_eq!(zl.diff_ids("derived"), layout.diff_ids("derived"));
    for (d, mt) in zl.layers("derived") {
        assert_eq!(mt, support::oci::MT_LAYER_ZSTD);
        let blob = zl.read_blob(&d);
        assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    }
    let src = derived.docker_archive(&tmp.path().join("derived.tar"), "test/derived:latest");
    assert!(src.starts_with("docker-archive:"));
    // docker save format: manifest.json with the layers as uncompressed tars.
    let f = std::fs::File::open(tmp.path().join("derived.tar")).unwrap();
    let names: Vec<String> = tar::Archive::new(f)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
}

// ===========================================================================
// stratum against the oracle.

/// Checks the shape of a `publish --json` report object.
fn check_report(r: &Value, name: &str, layers: usize, ingested: usize) {
    assert_eq!(r["name"], name, "report {r}");
    support::digest_hex(
        r["manifest_digest"]
            .as_str()
            .unwrap_or_else(|| panic!("report {r}")),
    );
    for k in ["files", "bytes", "new_objects", "new_stored_bytes"] {
        assert!(
            r[k].is_u64(),
            "report field {k} must be a non-negative integer: {r}"
        );
    }
    assert!(r["seconds"].is_number(), "report field seconds: {r}");
    assert_eq!(
        r["layers_ingested"].as_u64(),
        Some(ingested as u64),
        "layers_ingested: {r}"
    );
    assert_eq!(
        r["layers_skipped"].as_u64(),
        Some((layers - ingested) as u64),
        "layers_skipped: {r}"
    );
}

/// Publishes `source` as `name`, pulls it, and compares with `oracle`.
fn publish_pull_compare(repo: &TestRepo, source: &str, name: &str, layers: usize, oracle: &Path) {
    let before = repo.revision();
    let report = repo.publish_one(source, Some(name));
    check_report(&report, name, layers, layers);
    assert!(report["files"].as_u64().unwrap() > 0);
    assert_eq!(repo.revision(), before + 1, "one revision per publish call");
    repo.check();
    let img = repo.image(name);
    assert_eq!(img["manifest_digest"], report["manifest_digest"]);
    check_image_object(&img, layers);
    let dest = repo.scratch("flat");
    repo.pull_image(name, &dest);
    assert_trees_equal(
        oracle,
        &dest,
        &CompareOpts::default(),
        &format!("pull --image {name} vs umoci unpack"),
    );
    // The same tree through --path and the image's flat path.
    let dest2 = repo.scratch("flat-path");
    repo.pull_path(img["flat_path"].as_str().unwrap(), &dest2);
    assert_trees_equal(
        &dest,
        &dest2,
        &CompareOpts::default(),
        "pull --path FLAT vs pull --image",
    );
}

#[test]
fn flat_rich_oci() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("oracle.test");
    publish_pull_compare(&repo, &rich.source(), "test/rich:oci", 3, &oracle);
}

#[test]
fn flat_rich_docker_archive() {
    if !require_oracle_tools(true) {
        return;
    }
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let src = rich.docker_archive(&tmp.path().join("rich.tar"), "test/rich:docker");
    let repo = TestRepo::new("oracle.test");
    publish_pull_compare(&repo, &src, "test/rich:docker", 3, &oracle);
}

#[test]
fn flat_rich_zstd() {
    if !require_oracle_tools(true) {
        return;
    }
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    // umoci cannot read zstd layers: the oracle is the gzip twin.
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let z = rich.zstd_copy(&tmp.path().join("zimages"), "rich");
    let repo = TestRepo::new("oracle.test");
    publish_pull_compare(&repo, &z.source(), "test/rich:zstd", 3, &oracle);
}

#[test]
fn flat_spliced_oci() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (_rich, spliced) = build_spliced(&tmp.path().join("images"));
    let oracle = spliced.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("oracle.test");
    publish_pull_compare(&repo, &spliced.source(), "test/spliced:oci", 4, &oracle);
}

/// An overlayfs mount, unmounted on drop.
struct OverlayMount(PathBuf);

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `mount -t overlay overlay -o lowerdir=top:…:base target`; None (after a
/// SKIP line) when overlayfs is not usable here.
fn mount_overlay(lowers_top_first: &[PathBuf], target: &Path) -> Option<OverlayMount> {
    std::fs::create_dir_all(target).unwrap();
    let lower = lowers_top_first
        .iter()
        .map(|p| p.to_str().expect("utf-8 temp path"))
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower}"))
        .arg(target);
    let out = support::run_cmd(cmd);
    if out.success() {
        Some(OverlayMount(target.to_path_buf()))
    } else {
        skip(&format!(
            "mount -t overlay failed: {}",
            out.stderr_str().trim()
        ));
        None
    }
}

/// Stacks `layers_base_first` with overlayfs at `mnt` and compares the mount
/// with each of `expected`. Differences whose message contains one of
/// `tolerated` are printed, not failed. Returns false (after a SKIP line)
/// when overlayfs cannot be mounted here.
fn overlay_compare_dirs(
    what: &str,
    layers_base_first: &[PathBuf],
    mnt: &Path,
    expected: &[(&str, &Path)],
    tolerated: &[&str],
) -> bool {
    let mut dirs = layers_base_first.to_vec();
    dirs.reverse(); // overlayfs wants the top layer first
    let _mount;
    let merged: &Path = if dirs.len() == 1 {
        // overlayfs needs two lower dirs when there is no upper one: a
        // single layer tree is compared directly.
        &dirs[0]
    } else {
        match mount_overlay(&dirs, mnt) {
            Some(m) => _mount = m,
            None => return false,
        }
        mnt
    };
    let opts = CompareOpts::overlay();
    for (ename, e) in expected {
        if let Err(diffs) = compare_trees_with(e, merged, &opts) {
            let (ok, bad): (Vec<_>, Vec<_>) = diffs
                .into_iter()
                .partition(|d| tolerated.iter().any(|t| d.contains(t)));
            for d in &ok {
                eprintln!("NOTE: {what} vs {ename}: tolerated: {d}");
            }
            assert!(
                bad.is_empty(),
                "{what} vs {ename}: {} differences:\n  {}",
                bad.len(),
                bad.join("\n  ")
            );
        }
    }
    true
}

/// Pulls every layer tree of `name`, stacks them with overlayfs and compares
/// the mount with `oracle` and with the flat pull.
fn overlay_compare(repo: &TestRepo, name: &str, layers: usize, oracle: &Path, tolerated: &[&str]) {
    let img = repo.image(name);
    let layer_paths = check_image_object(&img, layers);
    let mut dirs = Vec::new();
    for (i, lp) in layer_paths.iter().enumerate() {
        let d = repo.scratch(&format!("layer{i}"));
        repo.pull_path(lp, &d);
        dirs.push(d);
    }
    let flat = repo.scratch("flat");
    repo.pull_image(name, &flat);
    overlay_compare_dirs(
        &format!("overlay of the pulled layer trees of {name}"),
        &dirs,
        &repo.scratch("overlay"),
        &[("umoci unpack", oracle), ("flat pull", &flat)],
        tolerated,
    );
}

/// xl/motd-link is a hardlink (in the top layer's tar of `spliced`) to
/// etc/motd, which only the base layer holds. The flat tree links them.
/// overlayfs cannot join inodes of two layers: the reference extractor copies
/// the target into the upper layer tree, so in its stacked mount they are two
/// files with the same bytes and metadata, and only that grouping may differ.
/// (stratum's layer tree carries a linked copy of etc/motd itself, so its
/// overlay test `overlay_of_layer_trees_spliced` tolerates nothing.)
const CROSS_LAYER_LINK: &[&str] = &[
    "\"etc/motd\": hardlink group differs",
    "\"xl/motd-link\": hardlink group differs",
];

/// The overlayfs comparison can pass: layer trees made by a minimal reference
/// extractor (support/reference.rs), stacked, equal `umoci unpack`.
#[test]
fn fixture_reference_layer_trees_stack_to_the_oracle() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (rich, spliced) = build_spliced(&tmp.path().join("images"));
    for (img, tolerated) in [(&rich, &[][..]), (&spliced, CROSS_LAYER_LINK)] {
        let oracle = img.unpack(&tmp.path().join(format!("oracle-{}", img.tag)));
        let dirs = support::reference::extract_layer_trees(
            &img.oci(),
            &img.tag,
            &tmp.path().join(format!("layers-{}", img.tag)),
        );
        assert_eq!(dirs.len(), img.layer_count());
        if !overlay_compare_dirs(
            &format!("overlay of reference layer trees of {}", img.tag),
            &dirs,
            &tmp.path().join(format!("mnt-{}", img.tag)),
            &[("umoci unpack", &oracle)],
            tolerated,
        ) {
            return;
        }
    }
}

#[test]
fn overlay_of_layer_trees_rich() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("overlay.test");
    repo.publish_one(&rich.source(), Some("test/rich:oci"));
    overlay_compare(&repo, "test/rich:oci", 3, &oracle, &[]);
}

#[test]
fn overlay_of_layer_trees_spliced() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (_rich, spliced) = build_spliced(&tmp.path().join("images"));
    let oracle = spliced.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("overlay.test");
    repo.publish_one(&spliced.source(), Some("test/spliced:oci"));
    overlay_compare(&repo, "test/spliced:oci", 4, &oracle, &[]);
}

#[test]
fn layer_trees_keep_whiteouts_overlay_style() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (_rich, spliced) = build_spliced(&tmp.path().join("images"));
    let repo = TestRepo::new("layers.test");
    repo.publish_one(&spliced.source(), Some("test/spliced:oci"));
    let layers = check_image_object(&repo.image("test/spliced:oci"), 4);
    // The layer path names the layer by diff_id.
    let diff_ids = spliced.oci().diff_ids("spliced");
    for (lp, d) in layers.iter().zip(&diff_ids) {
        assert!(
            lp.ends_with(support::digest_hex(d)),
            "{lp} is not named by diff_id {d}"
        );
    }
    let whiteout = |root: &Path, rel: &[u8]| {
        let md = std::fs::symlink_metadata(p(root, rel))
            .unwrap_or_else(|e| panic!("{}: {e}", p(root, rel).display()));
        assert!(
            md.file_type().is_char_device(),
            "{} is not a whiteout",
            p(root, rel).display()
        );
        assert_eq!(
            md.rdev(),
            0,
            "whiteout {} must be 0:0",
            p(root, rel).display()
        );
    };
    let l2 = repo.scratch("layer2");
    repo.pull_path(&layers[1], &l2);
    whiteout(&l2, b"gone");
    whiteout(&l2, b"wholedir");
    whiteout(&l2, b"replaced/a");
    whiteout(&l2, b"replaced/sub/c");
    assert!(
        std::fs::symlink_metadata(l2.join(".wh.gone")).is_err(),
        ".wh. names must not stay"
    );
    let l4 = repo.scratch("layer4");
    repo.pull_path(&layers[3], &l4);
    whiteout(&l4, b"spliced/dirgone");
    let xa = fsutil::xattrs(&l4.join("replaced2")).unwrap();
    for name in [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque"] {
        assert!(
            xa.contains(&(name.to_vec(), b"y".to_vec())),
            "replaced2 must carry {}=y, has {xa:?}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(std::fs::symlink_metadata(l4.join("replaced2/.wh..wh..opq")).is_err());
    assert!(l4.join("replaced2/fresh").is_file());
    // The flat tree has no overlay markers.
    let flat = repo.scratch("flat");
    repo.pull_image("test/spliced:oci", &flat);
    assert!(fsutil::xattrs(&flat.join("replaced2"))
        .unwrap()
        .iter()
        .all(|(k, _)| !k.windows(8).any(|w| w == b"overlay.")));
}

#[test]
fn republishing_is_a_no_op() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let repo = TestRepo::new("republish.test");
    let first = repo.publish_one(&rich.source(), Some("test/rich:oci"));
    check_report(&first, "test/rich:oci", 3, 3);
    let key_fields = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| {
                serde_json::json!([
                    i["name"],
                    i["manifest_digest"],
                    i["flat_path"],
                    i["layer_paths"]
                ])
            })
            .collect()
    };
    let images_before = key_fields(repo.images());
    // A publish call with nothing new may or may not bump the revision; it
    // must skip every layer, change no image, and leave a valid repository.
    let again = repo.publish_one(&rich.source(), Some("test/rich:oci"));
    check_report(&again, "test/rich:oci", 3, 0);
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);
    assert_eq!(key_fields(repo.images()), images_before);
    repo.check();
}

#[test]
fn shared_base_layer_is_skipped() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (base, derived) = build_shared_base(&tmp.path().join("images"));
    let repo = TestRepo::new("shared.test");
    let r1 = repo.publish_one(&base.source(), Some("test/app:base"));
    check_report(&r1, "test/app:base", 1, 1);
    let r2 = repo.publish_one(&derived.source(), Some("test/app:derived"));
    check_report(&r2, "test/app:derived", 2, 1);
    repo.check();
    let lb = check_image_object(&repo.image("test/app:base"), 1);
    let ld = check_image_object(&repo.image("test/app:derived"), 2);
    assert_eq!(lb[0], ld[0], "both images use one base layer tree");
    // Both still pull to their oracles.
    for (img, name) in [(&base, "test/app:base"), (&derived, "test/app:derived")] {
        let oracle = img.unpack(&tmp.path().join(format!("oracle-{}", img.tag)));
        let dest = repo.scratch("flat");
        repo.pull_image(name, &dest);
        assert_trees_equal(&oracle, &dest, &CompareOpts::default(), name);
    }
}

#[test]
fn one_revision_per_publish_call_with_default_names() {
    if !require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let (base, derived) = build_shared_base(&tmp.path().join("myimages"));
    let repo = TestRepo::new("multi.test");
    let before = repo.revision();
    let reports = repo.publish(&[&base.source(), &derived.source()], None);
    assert_eq!(repo.revision(), before + 1, "one revision per publish call");
    // Default names: local/<layout dir name>:<tag>.
    assert_eq!(base.default_name(), "local/myimages:base");
    assert_eq!(reports[0]["name"], "local/myimages:base");
    assert_eq!(reports[1]["name"], "local/myimages:derived");
    // Two images, two distinct layers: the shared base is ingested once.
    let ingested: u64 = reports
        .iter()
        .map(|r| r["layers_ingested"].as_u64().unwrap())
        .sum();
    let skipped: u64 = reports
        .iter()
        .map(|r| r["layers_skipped"].as_u64().unwrap())
        .sum();
    assert_eq!((ingested, skipped), (2, 1), "{reports:#?}");
    let names: Vec<String> = repo
        .images()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"local/myimages:base".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"local/myimages:derived".to_string()),
        "{names:?}"
    );
    repo.check();
}

#[test]
fn zstd_and_gzip_layers_are_one_tree() {
    if !require_oracle_tools(true) {
        return;
    }
    let tmp = tempdir();
    let (_base, derived) = build_shared_base(&tmp.path().join("images"));
    let z: ImageBuilder = derived.zstd_copy(&tmp.path().join("zimages"), "derived");
    let repo = TestRepo::new("zstd.test");
    let r1 = repo.publish_one(&derived.source(), Some("test/app:gzip"));
    check_report(&r1, "test/app:gzip", 2, 2);
    let r2 = repo.publish_one(&z.source(), Some("test/app:zstd"));
    assert_ne!(r1["manifest_digest"], r2["manifest_digest"]);
    check_report(&r2, "test/app:zstd", 2, 0);
    let lg = check_image_object(&repo.image("test/app:gzip"), 2);
    let lz = check_image_object(&repo.image("test/app:zstd"), 2);
    assert_eq!(lg, lz, "layer trees are keyed by diff_id");
    let a = repo.scratch("gzip");
    let b = repo.scratch("zstd");
    repo.pull_image("test/app:gzip", &a);
    repo.pull_image("test/app:zstd", &b);
    assert_trees_equal(&a, &b, &CompareOpts::default(), "gzip vs zstd pull");
    repo.check();
}
