//! Regression tests, each named after the bug it pins down. The expected
//! trees come from `umoci unpack` of the same hand-built image.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::os::unix::fs::MetadataExt;

use crate::support::compare::CompareOpts;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{tempdir, TestRepo};

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

/// `umoci unpack --image DIR:TAG` into `tmp/oracle`; returns its rootfs.
fn umoci_rootfs(tmp: &std::path::Path, layout: &Layout, tag: &str) -> std::path::PathBuf {
    let oracle = tmp.join("oracle");
    support::tool(
        "umoci",
        [
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.dir.display()),
            oracle.to_str().unwrap(),
        ],
    )
    .assert_success();
    oracle.join("rootfs")
}

/// A PAX global header (`g`) with `records`, as the first member of a tar.
fn global_header(records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        // `LEN key=value\n`, LEN counting its own digits.
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        data.extend(format!("{len}{body}").into_bytes());
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XGlobalHeader);
    h.set_path("pax_global_header").unwrap();
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    data.resize(data.len().div_ceil(512) * 512, 0);
    out.extend(data);
    out
}

/// Issue 12, item 13: a PAX record with an empty value deletes its key
/// (POSIX pax; Go's archive/tar, which umoci uses). stratum gave
/// `SCHILY.xattr.user.empty=` as an empty xattr, and refused (or misread)
/// empty `path`, `size`, `uid`, `gid` and `mtime` records. Also pinned: a
/// later record of an entry overrides an earlier one, and a global header
/// applies to no entry. The flat tree must equal umoci's.
#[test]
fn an_empty_pax_value_deletes_the_key() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let tar = support::oci::build_tar(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"empty-xattr", b"x\n")
            .xattr("user.empty", b"")
            .xattr("user.keep", b"1"),
        TarEntry::file(b"ustar-name", b"path\n").pax("path", b""),
        TarEntry::symlink(b"link", b"ustar-target").pax("linkpath", b""),
        TarEntry::file(b"sized", b"hello\n").pax("size", b""),
        TarEntry::file(b"owned", b"o\n")
            .owner(1000, 1001)
            .pax("uid", b"")
            .pax("gid", b"")
            .pax("mtime", b"")
            .pax("uname", b"")
            .pax("atime", b""),
        TarEntry::file(b"later", b"l\n")
            .xattr("user.dropped", b"1")
            .xattr("user.set", b"")
            .pax("SCHILY.xattr.user.dropped", b"")
            .pax("SCHILY.xattr.user.set", b"2")
            .pax("mtime", b"1600000000.5")
            .pax("mtime", b""),
    ]);
    let layer = Layer {
        blob: support::oci::gzip(&tar),
        tar,
        media_type: support::oci::MT_LAYER_GZIP.into(),
    };
    layout.add_image("t", &[layer]);
    let rootfs = umoci_rootfs(tmp.path(), &layout, "t");

    let repo = TestRepo::new("regressions.test");
    repo.publish_one(
        &format!("oci:{}:t", layout.dir.display()),
        Some("test/pax:t"),
    );
    repo.check();
    let dest = repo.scratch("flat");
    repo.pull_image("test/pax:t", &dest);
    let xattr_names = |p: &str| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = support::fsutil::xattrs(&dest.join(p))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !n.starts_with(b"security."))
            .collect();
        v.sort();
        v
    };
    assert_eq!(xattr_names("empty-xattr"), vec![b"user.keep".to_vec()]);
    assert_eq!(std::fs::read(dest.join("ustar-name")).unwrap(), b"path\n");
    assert_eq!(
        std::fs::read_link(dest.join("link")).unwrap(),
        std::path::Path::new("ustar-target")
    );
    assert_eq!(std::fs::read(dest.join("sized")).unwrap(), b"hello\n");
    let owned = std::fs::symlink_metadata(dest.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1001));
    assert_eq!(owned.mtime(), 1_700_000_000);
    assert_eq!(xattr_names("later"), vec![b"user.set".to_vec()]);
    assert_eq!(
        std::fs::symlink_metadata(dest.join("later"))
            .unwrap()
            .mtime(),
        1_700_000_000
    );
    support::compare::assert_trees_equal(&rootfs, &dest, &CompareOpts::default(), "flat vs umoci");

    // A global header sets nothing for later entries: Docker and
    // containerd skip it (umoci 0.4 refuses the layer, so no oracle here).
    let mut tar = global_header(&[
        ("uid", "99"),
        ("mtime", "5"),
        ("SCHILY.xattr.user.global", "g"),
    ]);
    tar.extend(support::oci::build_tar(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"after-global", b"g\n").owner(1000, 1001),
    ]));
    let layer = Layer {
        blob: support::oci::gzip(&tar),
        tar,
        media_type: support::oci::MT_LAYER_GZIP.into(),
    };
    layout.add_image("g", &[layer]);
    repo.publish_one(
        &format!("oci:{}:g", layout.dir.display()),
        Some("test/pax:g"),
    );
    let dest = repo.scratch("global");
    repo.pull_image("test/pax:g", &dest);
    let md = std::fs::symlink_metadata(dest.join("after-global")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mtime()),
        (1000, 1001, 1_700_000_000)
    );
    assert!(support::fsutil::xattrs(&dest.join("after-global"))
        .unwrap()
        .iter()
        .all(|(n, _)| !n.starts_with(b"user.")));
}

/// Issue 12, item 5: an image listing one layer 100 times was merged 100
/// times into its flat tree, under the repository lock. A run of one layer
/// is now ingested and merged once; the layer whites out, makes opaque,
/// hardlinks to and implicitly creates what lies below it, so that merging
/// it again would show if it were not a no-op. The flat tree must equal
/// umoci's of the same image, and that of the image listing it once.
#[test]
fn a_layer_repeated_many_times_is_merged_once() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let mut base = vec![
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/a", b"shared\n"),
        TarEntry::hardlink(b"etc/b", b"etc/a"),
        TarEntry::dir(b"opq/"),
        TarEntry::file(b"opq/old", b"old\n"),
        TarEntry::file(b"gone", b"gone\n"),
        TarEntry::dir(b"d/"),
        TarEntry::file(b"d/x", b"x\n"),
    ];
    // Enough files that a merge has a cost one can see.
    for i in 0..300 {
        base.push(TarEntry::file(format!("etc/f{i:03}").as_bytes(), b"f\n"));
    }
    let base = Layer::gzip(&base);
    // Directories are listed (umoci gives the ones it creates implicitly,
    // and a root it removes a whiteout from, the time of the unpack).
    let mut upper = vec![
        TarEntry::whiteout(b"", b"gone"),
        TarEntry::dir(b"./").mtime(1_650_000_000, None),
        TarEntry::dir(b"opq/"),
        TarEntry::opaque(b"opq"),
        TarEntry::file(b"opq/new", b"new\n"),
        TarEntry::hardlink(b"c", b"etc/a"),
        TarEntry::file(b"d", b"a file where a directory was\n"),
        TarEntry::dir(b"deep/"),
        TarEntry::dir(b"deep/x/"),
        TarEntry::file(b"deep/x/y", b"deep\n"),
        TarEntry::dir(b"etc/")
            .mode(0o700)
            .mtime(1_600_000_000, None),
        TarEntry::dir(b"u/"),
    ];
    for i in 0..300 {
        upper.push(TarEntry::file(format!("u/f{i:03}").as_bytes(), b"u\n"));
    }
    let upper = Layer::gzip(&upper);
    let mut many = vec![base.clone()];
    many.extend(std::iter::repeat_n(upper.clone(), 100));
    layout.add_image("many", &many);
    layout.add_image("once", &[base, upper]);
    let rootfs = umoci_rootfs(tmp.path(), &layout, "many");

    let repo = TestRepo::new("regressions.test");
    let t = std::time::Instant::now();
    let report = repo.publish_one(
        &format!("oci:{}:many", layout.dir.display()),
        Some("test/many:t"),
    );
    let took = t.elapsed();
    eprintln!("publishing 1 + 100 x 1 layer took {took:?}: {report}");
    assert_eq!(report["layers_ingested"].as_u64(), Some(2), "{report}");
    assert_eq!(report["layers_skipped"].as_u64(), Some(99), "{report}");
    assert_eq!(report["layers_merged"].as_u64(), Some(2), "{report}");
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    repo.check();
    let dest = repo.scratch("many");
    repo.pull_image("test/many:t", &dest);
    let ino = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("c"), ino("etc/a"));
    assert_eq!(ino("etc/b"), ino("etc/a"));
    support::compare::assert_trees_equal(&rootfs, &dest, &CompareOpts::default(), "flat vs umoci");

    repo.publish_one(
        &format!("oci:{}:once", layout.dir.display()),
        Some("test/once:t"),
    );
    let once = repo.scratch("once");
    repo.pull_image("test/once:t", &once);
    support::compare::assert_trees_equal(
        &once,
        &dest,
        &CompareOpts::default(),
        "100 times vs once",
    );
}

/// The host's architecture in OCI spelling, and another one.
fn host_and_other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

/// Issue 12, item 15: `--platform` and `--all-platforms` were ignored for
/// `oci:` layouts (`publish oci:multi:tag --platform linux/arm64` recorded
/// the amd64 image). A layout holding two images (built with umoci, their
/// configs set to two architectures) under a hand-written index — as an
/// image index blob (`multi`) and as two descriptors sharing a tag
/// (`pair`) — is published for the host's platform by default, for the
/// one asked for, and for both; `images --json` records each platform.
#[test]
fn platform_flags_apply_to_oci_layouts() {
    if !support::require_oracle_tools(false) {
        return;
    }
    let (host, other) = host_and_other_arch();
    let tmp = tempdir();
    let dir = tmp.path().join("layout");
    let mut digests = Vec::new();
    for arch in [host, other] {
        let mut b = support::umoci::ImageBuilder::new(&dir, arch);
        b.add_layer(|root| std::fs::write(root.join("arch"), format!("{arch}\n")).unwrap());
        let digest = b.oci().edit_image(arch, |_, config| {
            config["architecture"] = serde_json::json!(arch);
            config["os"] = serde_json::json!("linux");
        });
        digests.push((arch, digest));
    }
    let layout = Layout::open(&dir);
    let entry = |arch: &str, digest: &str| {
        let size = std::fs::metadata(layout.blob_path(digest)).unwrap().len();
        serde_json::json!({
            "mediaType": support::oci::MT_MANIFEST,
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let entries: Vec<serde_json::Value> = digests.iter().map(|(a, d)| entry(a, d)).collect();
    let index_doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let (index_digest, index_size) = layout.write_blob(&serde_json::to_vec(&index_doc).unwrap());
    let mut index = layout.index();
    let list = index["manifests"].as_array_mut().unwrap();
    list.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index_digest,
        "size": index_size,
        "annotations": {support::oci::REF_NAME: "multi"},
    }));
    for mut e in entries {
        e["annotations"] = serde_json::json!({support::oci::REF_NAME: "pair"});
        list.push(e);
    }
    layout.write_index(&index);

    let repo = TestRepo::new("regressions.test");
    let publish = |tag: &str, name: &str, flags: &[&str]| -> support::Output {
        let mut args = vec![
            "publish".to_owned(),
            format!("oci:{}:{tag}", dir.display()),
            "--repo".into(),
            repo.repo.to_str().unwrap().into(),
            "--key".into(),
            repo.key.to_str().unwrap().into(),
            "--as".into(),
            name.into(),
            "--json".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        support::stratum_raw(args)
    };
    let holds = |name: &str, arch: &str| {
        let img = repo.image(name);
        assert_eq!(img["platform"], format!("linux/{arch}"), "{name}: {img}");
        let dest = repo.scratch("p");
        repo.pull_image(name, &dest);
        assert_eq!(
            std::fs::read_to_string(dest.join("arch")).unwrap(),
            format!("{arch}\n"),
            "{name}"
        );
    };
    for tag in ["multi", "pair"] {
        publish(tag, &format!("test/{tag}:default"), &[]).assert_success();
        holds(&format!("test/{tag}:default"), host);
        let flag = format!("linux/{other}");
        publish(tag, &format!("test/{tag}:other"), &["--platform", &flag]).assert_success();
        holds(&format!("test/{tag}:other"), other);
        let out = publish(tag, &format!("test/{tag}:all"), &["--all-platforms"]).assert_success();
        let names: Vec<String> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        holds(&format!("test/{tag}:all"), host);
        holds(&format!("test/{tag}:all+linux-{host}"), host);
        holds(&format!("test/{tag}:all+linux-{other}"), other);
        let err = publish(
            tag,
            &format!("test/{tag}:none"),
            &["--platform", "linux/s390x"],
        )
        .assert_clean_failure()
        .stderr_str();
        assert!(err.contains("linux/s390x"), "{err}");
    }
    // A plain manifest is taken for the host whatever its platform, and
    // checked against an explicit --platform.
    publish(other, "test/plain:default", &[]).assert_success();
    holds("test/plain:default", other);
    let flag = format!("linux/{host}");
    let err = publish(other, "test/plain:host", &["--platform", &flag])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains(&flag), "{err}");
    repo.check();
}

/// A `docker save`-style archive at `path` holding one image per
/// architecture in `archs` (a file `arch` naming it), in this order.
fn docker_archive_of(path: &std::path::Path, archs: &[&str]) {
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    for arch in archs {
        let tar = support::oci::build_tar(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"arch", format!("{arch}\n").as_bytes()),
        ]);
        let diff = support::oci::sha256_hex(&tar);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
        }))
        .unwrap();
        let config_name = format!("{}.json", support::oci::sha256_hex(&config));
        let layer_name = format!("{diff}/layer.tar");
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [format!("multi:{arch}")],
            "Layers": [layer_name],
        }));
        members.push((config_name, config));
        members.push((layer_name, tar));
    }
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// Issue 12, item 15, for `docker-archive:`: an archive holding images of
/// two platforms gave the first one whatever `--platform` said. Its images
/// are now chosen by their configs' platforms like an index's entries.
#[test]
fn platform_flags_apply_to_docker_archives() {
    let (host, other) = host_and_other_arch();
    let tmp = tempdir();
    let multi = tmp.path().join("multi.tar");
    // The other platform first: the default must not just take the first.
    docker_archive_of(&multi, &[other, host]);
    let single = tmp.path().join("single.tar");
    docker_archive_of(&single, &[other]);
    let repo = TestRepo::new("regressions.test");
    let publish = |file: &std::path::Path, name: &str, flags: &[&str]| -> support::Output {
        let mut args = vec![
            "publish".to_owned(),
            format!("docker-archive:{}", file.display()),
            "--repo".into(),
            repo.repo.to_str().unwrap().into(),
            "--key".into(),
            repo.key.to_str().unwrap().into(),
            "--as".into(),
            name.into(),
            "--json".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        support::stratum_raw(args)
    };
    let holds = |name: &str, arch: &str| {
        let img = repo.image(name);
        assert_eq!(img["platform"], format!("linux/{arch}"), "{name}: {img}");
        let dest = repo.scratch("p");
        repo.pull_image(name, &dest);
        assert_eq!(
            std::fs::read_to_string(dest.join("arch")).unwrap(),
            format!("{arch}\n"),
            "{name}"
        );
    };
    publish(&multi, "test/a:default", &[]).assert_success();
    holds("test/a:default", host);
    let flag = format!("linux/{other}");
    publish(&multi, "test/a:other", &["--platform", &flag]).assert_success();
    holds("test/a:other", other);
    let out = publish(&multi, "test/a:all", &["--all-platforms"]).assert_success();
    assert_eq!(out.json().as_array().unwrap().len(), 3, "{}", out.json());
    holds("test/a:all", host);
    holds(&format!("test/a:all+linux-{host}"), host);
    holds(&format!("test/a:all+linux-{other}"), other);
    let err = publish(&multi, "test/a:none", &["--platform", "linux/s390x"])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains("linux/s390x"), "{err}");
    // One image: taken by default whatever its platform, checked against
    // an explicit --platform.
    publish(&single, "test/s:default", &[]).assert_success();
    holds("test/s:default", other);
    let flag = format!("linux/{host}");
    let err = publish(&single, "test/s:host", &["--platform", &flag])
        .assert_clean_failure()
        .stderr_str();
    assert!(err.contains(&flag), "{err}");
    repo.check();
}
