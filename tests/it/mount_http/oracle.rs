//! The oracle over HTTP: `mount --image`, `--thin` and `--thin --layers`
//! through `stratum serve` each equal `umoci unpack`; a thin mount fails
//! over to a mirror.

use super::*;

/// `rich` through `stratum serve`: `mount --image`, `mount --thin FILE` and
/// `mount --thin FILE --layers` each equal `umoci unpack` of the image (each
/// from a fresh cache, so every byte came over HTTP).
#[test]
fn rich_over_http_equals_umoci_unpack_image_thin_and_layers() {
    if !ready() || !require_tool("umoci") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempdir();
    let rich = build_rich(&tmp.path().join("images"));
    let oracle = rich.unpack(&tmp.path().join("oracle"));
    let repo = TestRepo::new("mounthttp.test");
    repo.publish_one(&rich.source(), Some(RICH));
    eprintln!("rich built, unpacked and published in {:?}", t0.elapsed());
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let key = pubkey(&repo);

    let src = MountSource::url(&serve.url, &key, ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt-image"),
        Some(RICH),
        &cache_arg(&tmp.path().join("cache-image")),
    );
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount URL --image rich vs umoci unpack",
    );
    m.unmount();

    let thin = tmp.path().join("rich.thin.json");
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os(RICH),
        os("--url"),
        os(&serve.url),
        os("-o"),
        os(&thin),
    ]);
    // `--thin=FILE` is one argument, so it takes the guard's SOURCE slot:
    // `stratum mount --thin=FILE MOUNTPOINT --pubkey KEY …`.
    let thin_src = MountSource::dir(Path::new(&format!("--thin={}", thin.display())), Some(&key));
    let m = Mount::start_with(
        &thin_src,
        &tmp.path().join("mnt-thin"),
        None,
        &cache_arg(&tmp.path().join("cache-thin")),
    );
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount --thin (flat) vs umoci unpack",
    );
    m.unmount();

    let mnt = tmp.path().join("mnt-layers");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(&key),
            os("--layers"),
            os("--cache"),
            os(tmp.path().join("cache-layers")),
        ],
        &mnt,
        &[],
        true,
    );
    // Exact, overlay xattrs included: the merged view of a root overlay
    // mount shows none of overlayfs' markers (issue 12.14).
    assert_trees_equal(
        &oracle,
        m.path(),
        &CompareOpts::default(),
        "mount --thin --layers (overlayfs of the layer trees) vs umoci unpack",
    );
    m.stop();
    eprintln!(
        "rich over HTTP: 3 mounts compared in {:?} in all",
        t0.elapsed()
    );
}

/// Regression: `mount --thin` ignored `--mirror` and used only the
/// descriptor's URLs (or `--url`). With the descriptor's URL down, the
/// mirror serves the image.
#[test]
fn mount_thin_fails_over_to_a_mirror() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("thin-mirror.test");
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "1",
        &[Layer::gzip(&[TarEntry::file(
            b"hello",
            b"hello via the mirror\n",
        )])],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/mirror:1"));
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let thin = tmp.path().join("mirror.thin.json");
    // The descriptor names a URL where nothing listens.
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os("test/mirror:1"),
        os("--url"),
        os("http://127.0.0.1:9/"),
        os("-o"),
        os(&thin),
    ]);
    let mnt = tmp.path().join("mnt");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(pubkey(&repo)),
            os("--mirror"),
            os(&serve.url),
            os("--retries"),
            os("0"),
            os("--cache"),
            os(tmp.path().join("cache")),
        ],
        &mnt,
        &[],
        false,
    );
    assert_eq!(
        std::fs::read(m.path().join("hello")).unwrap(),
        b"hello via the mirror\n"
    );
    m.stop();
}

/// Regression (issue 12.14): the layer mounts under `mount --thin --layers`
/// showed both `trusted.overlay.opaque` and `user.overlay.opaque`; a root
/// overlay mount hides only the `trusted.` one, so the merged view showed
/// `user.overlay.opaque` on opaque directories. The layer mounts now show
/// only the namespace the stack reads; the image's own xattrs stay.
#[test]
fn thin_layers_merged_view_shows_no_overlay_xattrs() {
    if !ready() {
        return;
    }
    let tmp = tempdir();
    let repo = TestRepo::new("opaque.test");
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "1",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"etc/"),
                TarEntry::file(b"etc/old", b"old\n"),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"etc/").xattr("user.mine", b"kept"),
                TarEntry::opaque(b"etc/"),
                TarEntry::file(b"etc/new", b"new\n"),
            ]),
        ],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/opaque:1"));
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let thin = tmp.path().join("opaque.thin.json");
    stratum([
        os("thin"),
        os(&repo.repo),
        os("--image"),
        os("test/opaque:1"),
        os("--url"),
        os(&serve.url),
        os("-o"),
        os(&thin),
    ]);
    let mnt = tmp.path().join("mnt");
    let m = ProcMount::start(
        &[
            os("--thin"),
            os(&thin),
            os(&mnt),
            os("--pubkey"),
            os(pubkey(&repo)),
            os("--layers"),
            os("--cache"),
            os(tmp.path().join("cache")),
        ],
        &mnt,
        &[],
        true,
    );
    let etc = m.path().join("etc");
    assert!(
        !etc.join("old").exists(),
        "the opaque directory hides etc/old"
    );
    assert!(etc.join("new").exists());
    let names = support::fsutil::xattrs(&etc).unwrap();
    let names: Vec<String> = names
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("overlay.")),
        "the merged view shows overlayfs' markers: {names:?}"
    );
    assert!(names.iter().any(|n| n == "user.mine"), "{names:?}");
    m.stop();
}
