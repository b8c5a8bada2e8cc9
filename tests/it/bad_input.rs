//! Hostile and broken images: `stratum publish` must fail with a clear
//! message naming the image, layer or path, must not panic, and must leave the
//! repository exactly as it was (same signed manifest bytes, same revision,
//! same images, `check` passes). Objects written before the failure are
//! allowed: they are unreachable garbage, never visible.
//!
//! Some inputs may instead be *neutralised*, as tar does (absolute paths made
//! relative, `..` members skipped, an escaping link refused or replaced).
//! Those tests accept either outcome: "fails clearly and changes nothing", or
//! "succeeds, `check` passes, and pulling the image writes nothing outside
//! DEST and touches no host file". Which inputs those are is said per test.
//!
//! Every layout here is hand-built with correct digests except for the one
//! defect under test (`layout_writer_is_valid_for_umoci` checks the writer
//! against umoci). None of this needs umoci or root, except that one test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{assert_dir_holds_only, digest_hex, tempdir, Output, TestRepo};
use serde_json::{json, Value};

/// A repository holding one good image, and its state before the bad publish.
struct Setup {
    repo: TestRepo,
    tmp: tempfile::TempDir,
    manifest: Vec<u8>,
    revision: u64,
    images: Value,
}

fn good_layer() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/hello.txt", b"hello from the good image\n"),
        TarEntry::symlink(b"etc/link", b"hello.txt"),
        TarEntry::dir(b"bin/"),
        TarEntry::file(b"bin/tool", b"#!/bin/sh\n").mode(0o755),
    ])
}

/// A layer that is not in the repository yet. The broken images are built
/// from it: a layer whose diff_id is already in the repository may rightly be
/// skipped without reading its blob at all.
fn fresh_layer() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"srv/"),
        TarEntry::file(b"srv/fresh.txt", b"not in the repository yet\n"),
        TarEntry::file(b"srv/more", &support::fsutil::Rng::new(11).bytes(20_000)),
    ])
}

/// What an error about `layer` may name: its digest or its diff_id.
fn layer_needles(layer: &Layer) -> Vec<String> {
    vec![short(&layer.digest()), short(&layer.diff_id())]
}

fn setup() -> Setup {
    let repo = TestRepo::new("bad-input.test");
    let tmp = tempdir();
    let good = Layout::create(&tmp.path().join("good"));
    good.add_image("1", &[good_layer()]);
    repo.publish_one(
        &format!("oci:{}:1", good.dir.display()),
        Some("test/good:1"),
    );
    repo.check();
    Setup {
        manifest: repo.manifest_bytes(),
        revision: repo.revision(),
        images: repo.images(),
        repo,
        tmp,
    }
}

impl Setup {
    /// A new empty layout in this setup's temp dir.
    fn layout(&self, name: &str) -> Layout {
        Layout::create(&self.tmp.path().join(name))
    }

    fn publish(&self, layout: &Layout, tag: &str) -> Output {
        let out = self.repo.publish_raw(
            &[&format!("oci:{}:{tag}", layout.dir.display())],
            Some("test/bad:1"),
        );
        out.assert_no_panic();
        out
    }

    /// The repository is exactly as before the bad publish.
    fn assert_unchanged(&self) {
        assert!(
            self.repo.manifest_bytes() == self.manifest,
            "the signed manifest changed after a failed publish"
        );
        assert_eq!(self.repo.revision(), self.revision);
        assert_eq!(self.repo.images(), self.images);
        self.repo.check();
    }

    /// Publishing `tag` of `layout` fails cleanly, stderr names one of
    /// `needles`, and the repository is unchanged.
    fn expect_rejected(&self, layout: &Layout, tag: &str, needles: &[&str]) {
        let out = self.publish(layout, tag).assert_clean_failure();
        eprintln!("stratum says: {}", out.stderr_str().trim());
        assert_mentions(&out, needles);
        self.assert_unchanged();
    }
}

/// stderr mentions at least one of `needles` (case-insensitive).
fn assert_mentions(out: &Output, needles: &[&str]) {
    let err = out.stderr_str().to_lowercase();
    assert!(
        needles.iter().any(|n| err.contains(&n.to_lowercase())),
        "stderr of `{}` should name one of {needles:?}; it says:\n{}",
        out.cmdline,
        out.stderr_str()
    );
}

/// The first 12 hex digits of a digest: what an error naming it must contain.
fn short(digest: &str) -> String {
    digest_hex(digest)[..12].to_string()
}

/// A host directory that hostile images aim at: it must stay as it is.
struct Victim {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
    md: std::fs::Metadata,
}

impl Victim {
    fn new() -> Victim {
        let tmp = tempdir();
        let dir = tmp.path().join("victim");
        std::fs::create_dir(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"host secret\n").unwrap();
        support::fsutil::chmod(&secret, 0o600);
        let md = std::fs::symlink_metadata(&secret).unwrap();
        Victim {
            _tmp: tmp,
            dir,
            secret,
            md,
        }
    }
    /// The victim dir's absolute path as raw bytes, without the leading `/`.
    fn rel(&self) -> Vec<u8> {
        self.dir
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .as_bytes()
            .to_vec()
    }
    fn abs(&self) -> Vec<u8> {
        self.dir.to_str().unwrap().as_bytes().to_vec()
    }
    fn assert_untouched(&self) {
        assert_dir_holds_only(&self.dir, &["secret"]);
        assert_eq!(std::fs::read(&self.secret).unwrap(), b"host secret\n");
        let md = std::fs::symlink_metadata(&self.secret).unwrap();
        assert_eq!(
            (md.mode(), md.uid(), md.gid(), md.mtime(), md.nlink()),
            (
                self.md.mode(),
                self.md.uid(),
                self.md.gid(),
                self.md.mtime(),
                self.md.nlink()
            ),
            "host file {} was modified",
            self.secret.display()
        );
    }
}

/// For inputs that may be neutralised: either a clean rejection that changes
/// nothing, or a success after which pulling writes nothing outside DEST and
/// touches no host file. Returns the pulled tree when it succeeded.
fn rejected_or_neutralised(
    s: &Setup,
    layout: &Layout,
    needles: &[&str],
    victim: &Victim,
) -> Option<PathBuf> {
    let out = s.publish(layout, "bad");
    victim.assert_untouched();
    if !out.success() {
        let out = out.assert_clean_failure();
        eprintln!("stratum says: {}", out.stderr_str().trim());
        assert_mentions(&out, needles);
        s.assert_unchanged();
        return None;
    }
    eprintln!("NOTE: publish neutralised the input instead of rejecting it");
    s.repo.check();
    let sandbox = s.tmp.path().join("sandbox");
    let inner = sandbox.join("a").join("b");
    std::fs::create_dir_all(&inner).unwrap();
    let dest = inner.join("dest");
    let pull = support::stratum_raw([
        std::ffi::OsStr::new("pull"),
        s.repo.repo.as_os_str(),
        std::ffi::OsStr::new("--image"),
        std::ffi::OsStr::new("test/bad:1"),
        dest.as_os_str(),
    ]);
    pull.assert_no_panic();
    victim.assert_untouched();
    assert_dir_holds_only(&sandbox, &["a"]);
    assert_dir_holds_only(&sandbox.join("a"), &["b"]);
    assert_dir_holds_only(&inner, &["dest"]);
    // A neutralised image is a published image: it must pull.
    pull.assert_success();
    // Nothing in DEST may be a hardlink to a host file.
    for e in walkdir::WalkDir::new(&dest) {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        assert!(
            md.ino() != victim.md.ino() || md.dev() != victim.md.dev(),
            "{} is the host file {}",
            e.path().display(),
            victim.secret.display()
        );
    }
    Some(dest)
}

// ---------------------------------------------------------------------------
// Paths

/// `..` members: rejected, or skipped/kept inside (like GNU tar, which skips
/// member names containing `..`).
#[test]
fn path_with_dotdot() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("bad");
    let mut deep = b"../../../../../../../../../../../../../..".to_vec();
    deep.extend_from_slice(&v.abs());
    deep.extend_from_slice(b"/escaped-dotdot");
    l.add_image(
        "bad",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"ok", b"fine\n"),
            TarEntry::file(b"../escaped-dotdot", b"escaped\n"),
            TarEntry::file(b"a/../../escaped-dotdot-2", b"escaped\n"),
            TarEntry::file(&deep, b"escaped\n"),
        ])],
    );
    rejected_or_neutralised(&s, &l, &["escaped-dotdot", ".."], &v);
}

/// Absolute member names: rejected, or made relative (like tar).
#[test]
fn absolute_path() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("bad");
    let mut abs = v.abs();
    abs.extend_from_slice(b"/escaped-absolute");
    l.add_image(
        "bad",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(&abs, b"escaped\n"),
        ])],
    );
    if let Some(dest) = rejected_or_neutralised(&s, &l, &["escaped-absolute"], &v) {
        // Neutralised: the file is inside DEST at the relative path, or gone.
        let mut rel = v.rel();
        rel.extend_from_slice(b"/escaped-absolute");
        let inside = support::fsutil::p(&dest, &rel);
        assert!(
            inside.is_file() || !inside.exists(),
            "{} should be the sanitised member",
            inside.display()
        );
    }
}

/// A symlink to a host directory, then a file written through it.
#[test]
fn symlink_escape_then_write_through_it() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("bad");
    l.add_image(
        "bad",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::symlink(b"link", &v.abs()),
            TarEntry::file(b"link/passwd", b"root::0:0::/:/bin/sh\n"),
        ])],
    );
    rejected_or_neutralised(&s, &l, &["link/passwd", "link"], &v);
}

/// The same escape across layers: the lower layer plants the symlink, the
/// upper one writes through it.
#[test]
fn symlink_escape_across_layers() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("bad");
    let mut rel_escape = b"../../../../../../../../../../../../../..".to_vec();
    rel_escape.extend_from_slice(&v.abs());
    l.add_image(
        "bad",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::symlink(b"abs", &v.abs()),
                TarEntry::symlink(b"rel", &rel_escape),
            ]),
            Layer::gzip(&[
                TarEntry::file(b"abs/secret", b"overwritten\n"),
                TarEntry::file(b"rel/new", b"planted\n"),
            ]),
        ],
    );
    rejected_or_neutralised(&s, &l, &["abs/secret", "rel/new", "abs", "rel"], &v);
}

/// A symlink that points out of the tree is legitimate (it is only data), but
/// pulling must create it without following it: owner, mode and mtime go on
/// the link, never on the host file.
#[test]
fn symlink_to_host_file_is_not_followed_on_pull() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("ok");
    let mut target = v.abs();
    target.extend_from_slice(b"/secret");
    l.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::symlink(b"s", &target)
                .owner(4321, 4321)
                .mtime(1_000_000_000, None),
        ])],
    );
    s.repo.publish_one(
        &format!("oci:{}:1", l.dir.display()),
        Some("test/symlink:1"),
    );
    let dest = s.tmp.path().join("dest");
    s.repo.pull_image("test/symlink:1", &dest);
    v.assert_untouched();
    let md = std::fs::symlink_metadata(dest.join("s")).unwrap();
    assert!(md.file_type().is_symlink());
    if support::is_root() {
        assert_eq!((md.uid(), md.gid()), (4321, 4321));
    }
    assert_eq!(md.mtime(), 1_000_000_000);
    assert_eq!(
        std::fs::read_link(dest.join("s"))
            .unwrap()
            .as_os_str()
            .len(),
        target.len()
    );
}

/// A hardlink to a host file (absolute or via `..`).
#[test]
fn hardlink_escape() {
    let s = setup();
    let v = Victim::new();
    let l = s.layout("bad");
    let mut abs = v.abs();
    abs.extend_from_slice(b"/secret");
    let mut rel = b"../../../../../../../../../../../../../..".to_vec();
    rel.extend_from_slice(&abs);
    l.add_image(
        "bad",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::hardlink(b"stolen-abs", &abs),
            TarEntry::hardlink(b"stolen-rel", &rel),
        ])],
    );
    rejected_or_neutralised(&s, &l, &["stolen-abs", "stolen-rel", "secret"], &v);
}

// ---------------------------------------------------------------------------
// Inputs that must always be rejected. Each `broken_*` writes the image
// `bad` into a layout and returns what stderr must name (any one of them);
// `broken_layouts_are_broken_for_umoci_too` checks the defects against umoci.

/// A hardlink whose target is in no layer.
fn broken_hardlink_to_missing_target(l: &Layout) -> Vec<String> {
    l.add_image(
        "bad",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"present", b"x\n"),
            TarEntry::hardlink(b"dangling-hardlink", b"no-such-target"),
        ])],
    );
    vec!["dangling-hardlink".into(), "no-such-target".into()]
}

/// gzip cut in the middle; the descriptor's digest and size are those of the
/// truncated blob, so only decompression can notice.
fn broken_truncated_gzip(l: &Layout) -> Vec<String> {
    let mut layer = fresh_layer();
    layer.blob.truncate(layer.blob.len() / 2);
    l.add_image("bad", std::slice::from_ref(&layer));
    layer_needles(&layer)
}

/// gzip with flipped bytes inside the deflate stream (digest recomputed).
fn broken_corrupt_gzip(l: &Layout) -> Vec<String> {
    let mut layer = fresh_layer();
    let mid = layer.blob.len() / 2;
    for b in &mut layer.blob[mid - 8..mid + 8] {
        *b ^= 0x5a;
    }
    l.add_image("bad", std::slice::from_ref(&layer));
    layer_needles(&layer)
}

/// gzip that decompresses fine to something that is not a tar stream.
fn broken_gzip_of_garbage(l: &Layout) -> Vec<String> {
    let junk = support::fsutil::Rng::new(7).bytes(10_000);
    let layer = Layer {
        blob: support::oci::gzip(&junk),
        tar: junk,
        media_type: support::oci::MT_LAYER_GZIP.into(),
    };
    l.add_image("bad", std::slice::from_ref(&layer));
    layer_needles(&layer)
}

fn zstd_layer() -> Layer {
    // Compressible, so that flipped bytes land in entropy-coded blocks.
    let text: Vec<u8> = (0..5000)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    Layer::zstd(&[TarEntry::dir(b"./"), TarEntry::file(b"data", &text)])
}

fn broken_truncated_zstd(l: &Layout) -> Vec<String> {
    let mut layer = zstd_layer();
    layer.blob.truncate(layer.blob.len() * 2 / 3);
    l.add_image("bad", std::slice::from_ref(&layer));
    layer_needles(&layer)
}

fn broken_corrupt_zstd(l: &Layout) -> Vec<String> {
    let mut layer = zstd_layer();
    let mid = layer.blob.len() / 2;
    for b in &mut layer.blob[mid - 8..mid + 8] {
        *b ^= 0xa5;
    }
    l.add_image("bad", std::slice::from_ref(&layer));
    layer_needles(&layer)
}

/// A blob whose bytes do not match the digest it is stored and named under.
/// Only the gzip header's MTIME field differs, which decoders ignore: the
/// layer still decompresses to the right tar with the right diff_id, so only
/// checking the blob's sha256 can notice.
fn broken_wrong_blob_digest(l: &Layout) -> Vec<String> {
    let layer = fresh_layer();
    l.add_image("bad", std::slice::from_ref(&layer));
    let path = l.blob_path(&layer.digest());
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    bytes[4] ^= 1; // MTIME, little-endian, bytes 4..8
    std::fs::write(&path, bytes).unwrap();
    layer_needles(&layer)
}

/// The config's diff_id does not match the layer's uncompressed bytes.
fn broken_wrong_diff_id(l: &Layout) -> Vec<String> {
    let layer = fresh_layer();
    l.add_image("bad", std::slice::from_ref(&layer));
    let wrong = support::oci::digest_of(b"not the layer");
    l.edit_image("bad", |_, config| {
        config["rootfs"]["diff_ids"] = json!([wrong]);
    });
    let mut n = layer_needles(&layer);
    n.push(short(&wrong));
    n
}

/// The manifest names a layer blob that is not in the layout.
fn broken_missing_layer_blob(l: &Layout) -> Vec<String> {
    let layer = fresh_layer();
    l.add_image("bad", std::slice::from_ref(&layer));
    std::fs::remove_file(l.blob_path(&layer.digest())).unwrap();
    layer_needles(&layer)
}

/// The manifest names a config blob that is not in the layout.
fn broken_missing_config_blob(l: &Layout) -> Vec<String> {
    l.add_image("bad", &[fresh_layer()]);
    let (_, m) = l.manifest("bad");
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(l.blob_path(&config)).unwrap();
    vec![short(&config)]
}

/// The descriptor claims an absurd size (4 EiB) for a small, correct blob.
fn broken_absurd_descriptor_size(l: &Layout) -> Vec<String> {
    let layer = fresh_layer();
    l.add_image("bad", std::slice::from_ref(&layer));
    l.edit_image("bad", |m, _| {
        m["layers"][0]["size"] = json!(1u64 << 62);
    });
    layer_needles(&layer)
}

/// A tar header declaring a 1 TiB file followed by 1 KiB and the end.
fn broken_absurd_tar_entry_size(l: &Layout) -> Vec<String> {
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"huge-entry", &[7u8; 1024]).declared_size(1 << 40),
    ]);
    l.add_image("bad", std::slice::from_ref(&layer));
    let mut n = layer_needles(&layer);
    n.push("huge-entry".into());
    n
}

type Broken = fn(&Layout) -> Vec<String>;

/// (name, builder, whether umoci reads that kind of layer)
const BROKEN: &[(&str, Broken, bool)] = &[
    (
        "hardlink_to_missing_target",
        broken_hardlink_to_missing_target,
        true,
    ),
    ("truncated_gzip", broken_truncated_gzip, true),
    ("corrupt_gzip", broken_corrupt_gzip, true),
    ("gzip_of_garbage", broken_gzip_of_garbage, true),
    ("truncated_zstd", broken_truncated_zstd, false),
    ("corrupt_zstd", broken_corrupt_zstd, false),
    ("wrong_blob_digest", broken_wrong_blob_digest, true),
    ("wrong_diff_id", broken_wrong_diff_id, true),
    ("missing_layer_blob", broken_missing_layer_blob, true),
    ("missing_config_blob", broken_missing_config_blob, true),
    (
        "absurd_descriptor_size",
        broken_absurd_descriptor_size,
        true,
    ),
    ("absurd_tar_entry_size", broken_absurd_tar_entry_size, true),
];

fn expect_broken_rejected(build: Broken) {
    let s = setup();
    let l = s.layout("bad");
    let needles = build(&l);
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    s.expect_rejected(&l, "bad", &needles);
    assert!(
        t.elapsed().as_secs() < 120,
        "rejecting took {:?}",
        t.elapsed()
    );
}

#[test]
fn hardlink_to_missing_target() {
    expect_broken_rejected(broken_hardlink_to_missing_target);
}

#[test]
fn truncated_gzip() {
    expect_broken_rejected(broken_truncated_gzip);
}

#[test]
fn corrupt_gzip() {
    expect_broken_rejected(broken_corrupt_gzip);
}

#[test]
fn gzip_of_garbage() {
    expect_broken_rejected(broken_gzip_of_garbage);
}

#[test]
fn truncated_zstd() {
    expect_broken_rejected(broken_truncated_zstd);
}

#[test]
fn corrupt_zstd() {
    expect_broken_rejected(broken_corrupt_zstd);
}

#[test]
fn wrong_blob_digest() {
    expect_broken_rejected(broken_wrong_blob_digest);
}

#[test]
fn wrong_diff_id() {
    expect_broken_rejected(broken_wrong_diff_id);
}

#[test]
fn manifest_names_missing_layer_blob() {
    expect_broken_rejected(broken_missing_layer_blob);
}

#[test]
fn manifest_names_missing_config_blob() {
    expect_broken_rejected(broken_missing_config_blob);
}

#[test]
fn absurd_descriptor_size() {
    expect_broken_rejected(broken_absurd_descriptor_size);
}

/// Must fail quickly, without trying to allocate or wait for 1 TiB.
#[test]
fn absurd_tar_entry_size() {
    expect_broken_rejected(broken_absurd_tar_entry_size);
}

/// Each broken layout is broken the way its name says: umoci refuses it
/// (for the gzip ones), and the zstd ones do not decode. This keeps the tests
/// above honest: they fail stratum on a real defect, not on a harness bug
/// (`layout_writer_is_valid_for_umoci` shows the writer is otherwise sound).
#[test]
fn broken_layouts_are_broken_for_umoci_too() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let mut accepted = Vec::new();
    for (name, build, umoci_reads) in BROKEN {
        let l = Layout::create(&tmp.path().join(name));
        build(&l);
        if *umoci_reads {
            let mut cmd = std::process::Command::new("umoci");
            cmd.args(["unpack", "--image"])
                .arg(format!("{}:bad", l.dir.display()))
                .arg(tmp.path().join(format!("{name}.bundle")));
            let out = support::run_cmd(cmd);
            if out.success() {
                accepted.push(*name);
            } else {
                eprintln!("umoci rejects {name}: {}", out.stderr_str().trim());
            }
        } else {
            for (d, _) in l.layers("bad") {
                let blob = l.read_blob(&d);
                assert!(
                    zstd::decode_all(&blob[..]).is_err(),
                    "{name}: the zstd blob decodes"
                );
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "umoci accepts these 'broken' layouts: {accepted:?}"
    );
}

/// `oci:DIR:TAG` with a tag the layout does not have.
#[test]
fn unknown_tag() {
    let s = setup();
    let l = s.layout("bad");
    l.add_image("present", &[good_layer()]);
    s.expect_rejected(&l, "no-such-tag", &["no-such-tag"]);
}

/// A source directory that is not an OCI layout at all.
#[test]
fn not_a_layout() {
    let s = setup();
    let dir = s.tmp.path().join("not-a-layout");
    std::fs::create_dir(&dir).unwrap();
    let out = s
        .repo
        .publish_raw(&[&format!("oci:{}:1", dir.display())], Some("test/bad:1"))
        .assert_clean_failure();
    assert_mentions(&out, &["not-a-layout", "index.json", "oci-layout"]);
    s.assert_unchanged();
}

// ---------------------------------------------------------------------------
// The layout writer itself

/// The hand-built layouts are valid OCI: umoci unpacks the good image and the
/// tree is what the tar entries say (needs root and umoci).
#[test]
fn layout_writer_is_valid_for_umoci() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "1",
        &[
            good_layer(),
            Layer::uncompressed(&[
                TarEntry::dir(b"./"),
                TarEntry::whiteout(b"bin", b"tool"),
                TarEntry::dir(b"bin/").mtime(1_700_000_001, None),
                TarEntry::hardlink(b"hello-again", b"etc/hello.txt"),
                TarEntry::char_dev(b"tty", 4, 1).owner(0, 5).mode(0o620),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"etc/").mtime(1_700_000_002, Some(5)),
                TarEntry::opaque(b"etc"),
                TarEntry::file(b"etc/only", b"only\n")
                    .xattr("user.k", b"v")
                    .mtime(1_700_000_003, Some(123)),
            ]),
        ],
    );
    let bundle = tmp.path().join("bundle");
    support::tool(
        "umoci",
        [
            "unpack",
            "--image",
            &format!("{}:1", l.dir.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let r = bundle.join("rootfs");
    let names: Vec<PathBuf> = walkdir::WalkDir::new(&r)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&r).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        names,
        ["bin", "etc", "etc/only", "hello-again", "tty"]
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
    );
    let md = std::fs::symlink_metadata(r.join("etc/only")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_003, 123));
    assert_eq!(
        support::fsutil::xattrs(&r.join("etc/only")).unwrap(),
        vec![(b"user.k".to_vec(), b"v".to_vec())]
    );
    let tty = std::fs::symlink_metadata(r.join("tty")).unwrap();
    assert_eq!((tty.gid(), tty.mode() & 0o7777), (5, 0o620));
    assert_eq!(
        std::fs::read(r.join("hello-again")).unwrap(),
        b"hello from the good image\n"
    );
    // A spliced layer lands on top with correct digests too.
    l.splice_layer(
        "1",
        "2",
        &Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::file(b"spliced", b"s\n")]),
    );
    let bundle2 = tmp.path().join("bundle2");
    support::tool(
        "umoci",
        [
            "unpack",
            "--image",
            &format!("{}:2", l.dir.display()),
            bundle2.to_str().unwrap(),
        ],
    );
    assert!(bundle2.join("rootfs/spliced").is_file());
    assert!(bundle2.join("rootfs/etc/only").is_file());
    assert_eq!(l.layers("2").len(), 4);
    assert_eq!(l.diff_ids("2").len(), 4);
}
