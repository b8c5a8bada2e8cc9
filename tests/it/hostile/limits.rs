//! The limits set on the command line (docs/SECURITY.md, "Limits"):
//! each refuses with its flag and accepts with the defaults.

use super::*;

/// Publishing with `flags` is refused with `needles`; with the defaults the
/// same image is published.
fn limit_case(s: &mut Setup, l: &Layout, flags: &[&str], needles: &[&str]) {
    s.refused(l, flags, needles);
    s.accepted(l, &[], None);
}

/// Issue 12, item 5: an image may list at most 127 layers (Docker's
/// limit; `--max-layers`), refused with its name before any layer is read.
#[test]
fn limit_max_layers() {
    let mut s = setup();
    let layers: Vec<Layer> = (0..4)
        .map(|i| Layer::gzip(&[TarEntry::file(format!("f{i}").as_bytes(), b"x")]))
        .collect();
    let l = image(&s, "layers", &layers);
    limit_case(
        &mut s,
        &l,
        &["--max-layers", "3"],
        &[
            NAME,
            "the image has 4 layers, more than the limit of 3 (--max-layers)",
        ],
    );
    // 128 listings of one layer: over the default.
    let one = Layer::gzip(&[TarEntry::file(b"f", b"x")]);
    let l = image(&s, "layers-128", &vec![one; 128]);
    s.refused(
        &l,
        &[],
        &[
            NAME,
            "the image has 128 layers, more than the limit of 127 (--max-layers)",
        ],
    );
}

#[test]
fn limit_max_entries() {
    let mut s = setup();
    let mut entries = vec![TarEntry::dir(b"./")];
    for i in 0..300 {
        entries.push(TarEntry::file(format!("f{i:03}").as_bytes(), b"x"));
    }
    let layer = Layer::gzip(&entries);
    let l = image(&s, "entries", std::slice::from_ref(&layer));
    let mut n = entry_needles(0, &layer, "f099");
    n.push("the layer has more than 100 entries (--max-entries)".into());
    limit_case(&mut s, &l, &["--max-entries", "100"], &strs(&n));
}

#[test]
fn limit_max_path_length() {
    let mut s = setup();
    let long = format!("{}/file", "d".repeat(120));
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(long.as_bytes(), b"x\n"),
    ]);
    let l = image(&s, "pathlen", std::slice::from_ref(&layer));
    let mut n = entry_needles(0, &layer, &long);
    n.push("the path is 125 bytes long, more than the limit of 100 (--max-path-length)".into());
    limit_case(&mut s, &l, &["--max-path-length", "100"], &strs(&n));
    // Link targets count too.
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::symlink(b"s", long.as_bytes()),
    ]);
    let l = image(&s, "linklen", std::slice::from_ref(&layer));
    let mut n = entry_needles(0, &layer, "s");
    n.push("the symlink target is 125 bytes long".into());
    limit_case(&mut s, &l, &["--max-path-length", "100"], &strs(&n));
}

#[test]
fn limit_max_file_size() {
    let mut s = setup();
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"small", b"s\n"),
        TarEntry::file(b"two-mib", &support::fsutil::Rng::new(5).bytes(2 << 20)),
    ]);
    let l = image(&s, "filesize", std::slice::from_ref(&layer));
    let mut n = entry_needles(0, &layer, "two-mib");
    n.push("declares 2097152 bytes, more than the limit of 1048576 (--max-file-size)".into());
    limit_case(&mut s, &l, &["--max-file-size", "1M"], &strs(&n));
}

/// 20 MiB that compress about 50:1: within the default ratio, refused at
/// `--max-ratio 10` once past the first 16 MiB.
#[test]
fn limit_max_ratio() {
    let mut s = setup();
    let mut rng = support::fsutil::Rng::new(9);
    let mut content = Vec::with_capacity(20 << 20);
    while content.len() < 20 << 20 {
        content.extend_from_slice(&rng.bytes(64));
        content.resize(content.len() + 4032, 0);
    }
    let layer = Layer::zstd(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"sparse-ish", &content),
    ]);
    let ratio = layer.tar.len() / layer.blob.len();
    assert!((11..1000).contains(&ratio), "ratio {ratio}");
    let l = image(&s, "ratio", std::slice::from_ref(&layer));
    let mut n = entry_needles(0, &layer, "sparse-ish");
    n.push("more than the limit of 10:1".into());
    n.push("--max-ratio".into());
    limit_case(&mut s, &l, &["--max-ratio", "10"], &strs(&n));
}

#[test]
fn limit_flags_are_validated_and_offered_by_sync() {
    let s = setup();
    let l = image(&s, "flags", &[Layer::gzip(&[TarEntry::file(b"f", b"f\n")])]);
    for bad in [
        &["--max-file-size", "12X"][..],
        &["--max-entries", "-1"],
        &["--max-ratio", "lots"],
        &["--max-path-length", "0"],
        &["--max-layers", "0"],
    ] {
        s.publish(&l, bad).assert_clean_failure();
        s.assert_unchanged();
    }
    let help = support::stratum(["sync", "--help"]).stdout_str();
    for flag in [
        "--max-layers",
        "--max-entries",
        "--max-path-length",
        "--max-file-size",
        "--max-ratio",
    ] {
        assert!(help.contains(flag), "sync --help lacks {flag}");
    }
}
