//! Paths and names: escapes through `..`, absolute names, symlinks and
//! hardlinks aimed outside the tree, duplicates, type changes, NUL and
//! non-UTF-8 names, long names.

use super::*;

#[test]
fn dotdot_components_are_refused() {
    let s = setup();
    let v = Victim::new();
    for (i, path) in [
        b"../escaped".to_vec(),
        b"a/../../escaped".to_vec(),
        escape(&v.abs("/escaped")),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"ok", b"fine\n"),
            TarEntry::file(&path, b"escaped\n"),
        ]);
        let raw = String::from_utf8(path).unwrap();
        s.refuses_entry(&format!("dotdot{i}"), &[layer], &raw, "'..'");
        v.assert_untouched();
    }
}

/// Neutralised: leading `/`, `./`, repeated and trailing slashes are dropped
/// (docs/FORMAT.md §6.1), so an absolute name lands inside the tree.
#[test]
fn absolute_paths_and_extra_slashes_are_made_relative() {
    let mut s = setup();
    let v = Victim::new();
    let abs = v.abs("/planted");
    let l = image(
        &s,
        "abs",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(&abs, b"planted\n"),
            TarEntry::file(b"/etc/abs-file", b"abs\n"),
            TarEntry::file(b"a//b///c", b"c\n"),
            TarEntry::dir(b"./d/./e/"),
            TarEntry::file(b"plain-with-slash/", b"f\n"),
            TarEntry::dir(b"//").mode(0o750),
        ])],
    );
    let dest = s.accepted(&l, &[], Some(&v));
    let inside = support::fsutil::p(&dest, &abs[1..]);
    assert_eq!(std::fs::read(&inside).unwrap(), b"planted\n");
    assert_eq!(std::fs::read(dest.join("etc/abs-file")).unwrap(), b"abs\n");
    assert_eq!(std::fs::read(dest.join("a/b/c")).unwrap(), b"c\n");
    assert!(dest.join("d/e").is_dir());
    assert_eq!(
        std::fs::read(dest.join("plain-with-slash")).unwrap(),
        b"f\n"
    );
    // `//` names the layer root: its metadata becomes the root's.
    assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o750);
}

/// A non-directory naming the layer root (`/`) is refused.
#[test]
fn a_file_named_slash_is_refused() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::file(b"/", b"root?\n")]);
    s.refuses_entry("slash", &[layer], "/", "names the layer root");
}

#[test]
fn writing_through_a_symlink_of_the_same_layer_is_refused() {
    let s = setup();
    let v = Victim::new();
    for (i, (target, through)) in [
        (v.abs(""), b"link/passwd".to_vec()),
        (escape(&v.abs("")), b"link/passwd".to_vec()),
        (b"inner".to_vec(), b"link/x".to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::dir(b"inner/"),
            TarEntry::symlink(b"link", &target),
            TarEntry::file(&through, b"root::0:0::/:/bin/sh\n"),
        ]);
        s.refuses_entry(
            &format!("same{i}"),
            &[layer],
            std::str::from_utf8(&through).unwrap(),
            "goes through the symlink /link of the same layer",
        );
        v.assert_untouched();
    }
}

/// A directory replaced by a symlink, then written through, in one layer.
#[test]
fn a_directory_replaced_by_a_symlink_then_written_through_is_refused() {
    let s = setup();
    let v = Victim::new();
    let lower = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::dir(b"d/")]);
    let upper = Layer::gzip(&[
        TarEntry::symlink(b"d", &v.abs("")),
        TarEntry::file(b"d/secret", b"overwritten\n"),
    ]);
    s.refuses_entry(
        "dirsym",
        &[lower, upper],
        "d/secret",
        "goes through the symlink /d",
    );
    v.assert_untouched();
}

#[test]
fn writing_through_a_symlink_of_a_lower_layer_is_refused() {
    let s = setup();
    let v = Victim::new();
    let lower = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::symlink(b"abs", &v.abs(""))]);
    let upper = Layer::gzip(&[TarEntry::file(b"abs/secret", b"overwritten\n")]);
    s.refuses_entry(
        "lowersym",
        &[lower, upper],
        "abs/secret",
        "path goes through /abs, a symlink in a lower layer",
    );
    v.assert_untouched();
}

/// Neutralised: a whiteout below a symlink hides nothing and is dropped
/// (FORMAT §6.4); the symlink itself stays, as data.
#[test]
fn a_whiteout_through_a_symlink_is_dropped() {
    let mut s = setup();
    let v = Victim::new();
    let l = image(
        &s,
        "whsym",
        &[
            Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::symlink(b"link", &v.abs(""))]),
            Layer::gzip(&[TarEntry::whiteout(b"link", b"secret")]),
        ],
    );
    let dest = s.accepted(&l, &[], Some(&v));
    assert_eq!(std::fs::read_link(dest.join("link")).unwrap(), v.dir);
    assert_dir_holds_only(&dest, &["link"]);
}

/// Hardlinks can only name entries of the image: absolute targets are
/// relative to the layer root (and so missing), `..` is refused, and a
/// target through a symlink is not followed.
#[test]
fn hardlinks_pointing_outside_are_refused() {
    let s = setup();
    let v = Victim::new();
    let secret = v.abs("/secret");
    let mut through = b"link".to_vec();
    through.extend_from_slice(b"/secret");
    for (i, (target, reason)) in [
        (secret.clone(), "hardlink to missing target"),
        (escape(&secret), "'..'"),
        (through, "hardlink to missing target /link/secret"),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::symlink(b"link", &v.abs("")),
            TarEntry::hardlink(b"stolen", &target),
        ]);
        s.refuses_entry(&format!("hl{i}"), &[layer], "stolen", reason);
        v.assert_untouched();
    }
}

#[test]
fn hardlinks_to_a_directory_are_refused() {
    let s = setup();
    // In the same layer.
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"dir/"),
        TarEntry::hardlink(b"dirlink", b"dir"),
    ]);
    s.refuses_entry("hldir", &[layer], "dirlink", "hardlink to directory /dir");
    // In a lower layer, and the layer root itself.
    for (i, target) in [&b"dir"[..], b"/"].into_iter().enumerate() {
        let lower = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::dir(b"dir/")]);
        let upper = Layer::gzip(&[TarEntry::hardlink(b"dirlink", target)]);
        s.refuses_entry(
            &format!("hldir-lower{i}"),
            &[lower, upper],
            "dirlink",
            "hardlink to directory",
        );
    }
}

/// Neutralised: a later entry for the same path wins, as when extracting;
/// a directory listed twice keeps its children and takes the new metadata.
#[test]
fn duplicate_entries_the_last_one_wins() {
    let mut s = setup();
    let l = image(
        &s,
        "dup",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"dup", b"first\n"),
            TarEntry::file(b"dup", b"second\n").mode(0o600),
            TarEntry::dir(b"d/").mode(0o700),
            TarEntry::file(b"d/child", b"kept\n"),
            TarEntry::dir(b"d/").mode(0o751),
            TarEntry::symlink(b"s", b"dup"),
            TarEntry::file(b"s", b"now a file\n"),
        ])],
    );
    let dest = s.accepted(&l, &[], None);
    assert_eq!(std::fs::read(dest.join("dup")).unwrap(), b"second\n");
    assert_eq!(
        std::fs::metadata(dest.join("dup")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(std::fs::read(dest.join("d/child")).unwrap(), b"kept\n");
    assert_eq!(
        std::fs::metadata(dest.join("d")).unwrap().mode() & 0o7777,
        0o751
    );
    let sm = std::fs::symlink_metadata(dest.join("s")).unwrap();
    assert!(sm.is_file());
    assert_dir_holds_only(&dest, &["dup", "d", "s"]);
}

/// Neutralised: an entry of another kind replaces the earlier one and its
/// subtree (FORMAT §6.5), in one layer and across layers.
#[test]
fn a_file_replaced_by_a_directory_and_back() {
    let mut s = setup();
    let l = image(
        &s,
        "flip",
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::file(b"x", b"one\n"),
                TarEntry::dir(b"x/"),
                TarEntry::file(b"x/child", b"gone\n"),
                TarEntry::file(b"x", b"two\n"),
                TarEntry::file(b"y", b"file first\n"),
                TarEntry::dir(b"y/"),
                TarEntry::file(b"y/in", b"in y\n"),
                TarEntry::file(b"z", b"lower file\n"),
                TarEntry::dir(b"w/"),
                TarEntry::file(b"w/old", b"old\n"),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"z/"),
                TarEntry::file(b"z/in", b"in z\n"),
                TarEntry::file(b"w", b"w is a file now\n"),
            ]),
        ],
    );
    let dest = s.accepted(&l, &[], None);
    assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"two\n");
    assert_eq!(std::fs::read(dest.join("y/in")).unwrap(), b"in y\n");
    assert_eq!(std::fs::read(dest.join("z/in")).unwrap(), b"in z\n");
    assert_eq!(std::fs::read(dest.join("w")).unwrap(), b"w is a file now\n");
    assert_dir_holds_only(&dest, &["x", "y", "z", "w"]);
}

/// Neutralised: a symlink that points outside is data; pull creates the
/// link and never follows it.
#[test]
fn symlinks_pointing_outside_are_kept_as_links() {
    let mut s = setup();
    let v = Victim::new();
    let l = image(
        &s,
        "symout",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::symlink(b"abs", &v.abs("/secret")).mode(0o777),
            TarEntry::symlink(b"rel", &escape(&v.abs("/secret"))),
            TarEntry::symlink(b"dir", &v.abs("")),
        ])],
    );
    let dest = s.accepted(&l, &[], Some(&v));
    for (name, target) in [
        ("abs", v.abs("/secret")),
        ("rel", escape(&v.abs("/secret"))),
        ("dir", v.abs("")),
    ] {
        let md = std::fs::symlink_metadata(dest.join(name)).unwrap();
        assert!(md.file_type().is_symlink(), "{name}");
        assert_eq!(
            std::fs::read_link(dest.join(name))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            &target[..]
        );
    }
}

// ---------------------------------------------------------------------------
// Names

/// A NUL inside a name can only come from a PAX record (the ustar field
/// ends at the first NUL): refused, for paths and link targets.
#[test]
fn names_with_nul_are_refused() {
    let s = setup();
    let mut long = vec![b'n'; 120];
    long[60] = 0;
    let layer = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::file(&long, b"x\n")]);
    s.refuses_layer("nul", &[layer], &["NUL"]);

    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::symlink(b"l", b"t").pax("linkpath", b"target\0hidden"),
    ]);
    s.refuses_entry(
        "nul-link",
        &[layer],
        "l",
        "symlink target is empty or contains NUL",
    );
}

/// Neutralised: names are bytes, not text; pull recreates them exactly.
#[test]
fn invalid_utf8_names_round_trip() {
    let mut s = setup();
    let l = image(
        &s,
        "utf8",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"caf\xe9", b"latin-1\n"),
            TarEntry::dir(b"\xff\xfe/"),
            TarEntry::file(b"\xff\xfe/\x80", b"inner\n"),
            TarEntry::symlink(b"sym", b"\xc3\x28"),
        ])],
    );
    let dest = s.accepted(&l, &[], None);
    let p = |b: &[u8]| support::fsutil::p(&dest, b);
    assert_eq!(std::fs::read(p(b"caf\xe9")).unwrap(), b"latin-1\n");
    assert_eq!(std::fs::read(p(b"\xff\xfe/\x80")).unwrap(), b"inner\n");
    assert_eq!(
        std::fs::read_link(p(b"sym"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"\xc3\x28"
    );
}

/// A component of 256 bytes, or a path of more than 4096 bytes, is refused;
/// a 3.7 KiB path of 250-byte components is published and pulled.
#[test]
fn long_names_and_paths() {
    let mut s = setup();
    let comp = |c: u8| vec![c; 250];
    let deep: Vec<u8> = (0..14u8)
        .map(|i| comp(b'a' + i))
        .collect::<Vec<_>>()
        .join(&b'/');
    let l = image(
        &s,
        "deep",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(&deep, b"deep\n"),
        ])],
    );
    let dest = s.accepted(&l, &[], None);
    assert_eq!(
        std::fs::read(support::fsutil::p(&dest, &deep)).unwrap(),
        b"deep\n"
    );

    let wide = vec![b'w'; 256];
    let layer = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::file(&wide, b"w\n")]);
    s.refuses_layer("wide", &[layer], &["a path component is 256 bytes long"]);

    let too_long: Vec<u8> = (0..17u8)
        .map(|i| comp(b'a' + i))
        .collect::<Vec<_>>()
        .join(&b'/');
    let layer = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::file(&too_long, b"x\n")]);
    s.refuses_layer(
        "toolong",
        &[layer],
        &["the path is 4266 bytes long, more than the limit of 4096 (--max-path-length)"],
    );
}
