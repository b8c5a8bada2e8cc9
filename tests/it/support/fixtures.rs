//! The fixture images of `tests/it/oracle.rs`: generated trees built into real
//! OCI images with umoci (see [`super::umoci`]).
//!
//! `rich` (3 umoci layers) covers:
//! - layer 1 (base): regular and empty files; setuid, setgid, sticky and odd
//!   modes; symlinks absolute, relative, dangling, to a directory and to
//!   themselves; hardlink groups of 2 and 3 names in one layer; uid/gid other
//!   than 0 (files and a directory); user xattrs (plain, binary value, on a
//!   directory; also an empty value, which `umoci repack` drops); non-UTF-8 and odd names (Latin-1 byte, 0xff 0xfe,
//!   spaces, newline, leading dash, backslash, Unicode); a 40-level deep
//!   path; a pseudo-random file of 17 MiB + 12345 bytes (larger than any
//!   sane chunk size, so content-defined chunking runs); 2000 small files in
//!   20 directories; fifos, character and block devices; nanosecond mtimes
//!   everywhere (umoci keeps seconds; see `compare`).
//! - layer 2: files deleted (`.wh.` whiteouts, including a whole directory),
//!   a directory replaced wholesale (umoci: per-file whiteouts), a file that
//!   becomes a directory and a directory that becomes a file, a symlink that
//!   becomes a file, a new hardlink to a base-layer file (umoci re-emits the
//!   old name too), metadata-only changes (mode, owner, xattr set, changed and
//!   removed), changed content, new files.
//! - layer 3: the file-turned-directory turns back into a file and vice
//!   versa, a directory tree is deleted, one name of a hardlink group is
//!   deleted, every 10th of the 2000 small files is deleted, a directory
//!   with an xattr becomes a file.
//!
//! `spliced` = `rich` + one hand-built tar layer (not made by umoci):
//! an opaque directory (`.wh..wh..opq`) over a directory with content from
//! lower layers, a hardlink whose target exists only in a lower layer, PAX
//! nanosecond mtimes and xattrs, a whiteout of a whole directory, and a
//! directory that is replaced by a symlink.
//!
//! `base` / `derived`: two tags sharing their base layer.

use std::path::Path;

use super::fsutil::*;
use super::is_root;
use super::oci::{Layer, TarEntry};
use super::umoci::ImageBuilder;

/// Size of the big pseudo-random file: above 16 MiB and not a round number.
pub const BIG_FILE_SIZE: usize = 17 * 1024 * 1024 + 12345;
/// Number of small files in `many/`.
pub const MANY_FILES: usize = 2000;
/// Depth of `deep/`.
pub const DEPTH: usize = 40;

/// The raw relative path of the deepest directory, `deep/d00/…/d39`.
pub fn deep_dir() -> Vec<u8> {
    let mut p = b"deep".to_vec();
    for i in 0..DEPTH {
        p.extend_from_slice(format!("/d{i:02}").as_bytes());
    }
    p
}

/// Odd and non-UTF-8 names of the base layer, under `names/`.
pub const ODD_NAMES: &[&[u8]] = &[
    b"caf\xe9",
    b"\xff\xfe binary",
    b"with space",
    b"new\nline",
    b"-rf",
    b"back\\slash",
    "ünïcødé ✓".as_bytes(),
    b"tab\there",
];

/// Layer 1 of `rich`.
pub fn rich_layer1(root: &Path) {
    chmod(root, 0o755);
    file(root, b"etc/hostname", b"stratum-test\n", 0o644);
    file(root, b"etc/motd", b"welcome\n", 0o644);
    file(root, b"empty", b"", 0o644);
    file(root, b"etc/empty.conf", b"", 0o600);

    // Special mode bits.
    file(root, b"bin/suid", b"#!/bin/sh\necho suid\n", 0o4755);
    file(root, b"bin/sgid", b"#!/bin/sh\necho sgid\n", 0o2755);
    file(root, b"bin/allbits", b"all bits\n", 0o7777);
    file(root, b"bin/noperm", b"no permissions\n", 0o000);
    file(root, b"bin/exec-only", b"x\n", 0o111);
    dir(root, b"tmp", 0o1777);
    dir(root, b"shared", 0o2775);
    dir(root, b"private", 0o700);
    file(root, b"private/secret", b"s3cret\n", 0o400);

    // Symlinks.
    symlink(root, b"lnk/abs", b"/etc/hostname");
    symlink(root, b"lnk/rel", b"../etc/hostname");
    symlink(root, b"lnk/dangling", b"../does/not/exist");
    symlink(root, b"lnk/dangling-abs", b"/nonexistent/\xff");
    symlink(root, b"lnk/to-dir", b"../bin");
    symlink(root, b"lnk/self", b"self");
    symlink(root, b"lnk/dotdot", b"../../../../../../..");

    // Hardlinks inside one layer.
    file(root, b"hl/a", b"hardlinked three times\n", 0o644);
    hardlink(root, b"hl/a", b"hl/b");
    hardlink(root, b"hl/a", b"hl/sub/c");
    file(root, b"hl/x", b"hardlinked twice\n", 0o640);
    hardlink(root, b"hl/x", b"hl/y");
    file(root, b"hl/lonely", b"hardlinked twice\n", 0o640);

    // Owners.
    let o = file(root, b"owned/u1000", b"uid 1000\n", 0o644);
    lchown(&o, 1000, 1000);
    let o = file(root, b"owned/mixed", b"uid 1234 gid 5678\n", 0o664);
    lchown(&o, 1234, 5678);
    let d = dir(root, b"owned/dir", 0o750);
    lchown(&d, 4242, 4343);
    chmod(&d, 0o750);
    let o = file(root, b"owned/dir/suid-user", b"setuid, not root\n", 0o644);
    lchown(&o, 1000, 1000);
    chmod(&o, 0o4755); // after chown, which clears setuid
    let l = symlink(root, b"owned/link", b"u1000");
    lchown(&l, 1000, 1001);

    // Xattrs.
    let x = file(root, b"xattr/file", b"has xattrs\n", 0o644);
    set_xattr(&x, "user.foo", b"bar");
    set_xattr(&x, "user.empty", b""); // umoci repack drops it (PAX forbids empty values)
    set_xattr(&x, "user.binary", &[0, 1, 2, 0xfe, 0xff]);
    set_xattr(&x, "user.doomed", b"removed in layer 2");
    let xd = dir(root, b"xattr/dir", 0o755);
    set_xattr(&xd, "user.dirattr", b"on a directory");
    file(root, b"xattr/dir/child", b"child\n", 0o644);

    // Odd names.
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(name);
        file(root, &rel, format!("odd name {i}\n").as_bytes(), 0o644);
    }
    file(
        root,
        b"names/\xff\xfe dir/inner \xe9",
        b"inside a non-UTF-8 directory\n",
        0o644,
    );

    // Deep path.
    let mut deep = deep_dir();
    deep.extend_from_slice(b"/leaf");
    file(root, &deep, b"forty levels down\n", 0o644);

    // Big pseudo-random file.
    let mut rng = Rng::new(0x5742_4154_554d);
    file(root, b"big/random.bin", &rng.bytes(BIG_FILE_SIZE), 0o644);

    // Many small files.
    for i in 0..MANY_FILES {
        let len = rng.below(300) as usize;
        let rel = format!("many/d{:02}/f{i:04}", i % 20);
        file(root, rel.as_bytes(), &rng.bytes(len), 0o644);
    }

    // Things that later layers change.
    file(root, b"gone", b"deleted in layer 2\n", 0o644);
    file(root, b"replaced/a", b"old a\n", 0o644);
    file(root, b"replaced/b", b"old b\n", 0o644);
    file(root, b"replaced/sub/c", b"old c\n", 0o644);
    file(
        root,
        b"morph",
        b"a file, then a directory, then a file\n",
        0o644,
    );
    file(
        root,
        b"back/inner",
        b"a directory, then a file, then a directory\n",
        0o644,
    );
    file(root, b"todelete/file1", b"1\n", 0o644);
    file(root, b"todelete/dir/x", b"x\n", 0o644);
    file(
        root,
        b"wholedir/f",
        b"the whole directory is deleted in layer 2\n",
        0o644,
    );
    file(
        root,
        b"replaced2/old1",
        b"hidden by an opaque directory\n",
        0o644,
    );
    file(root, b"replaced2/olddir/old2", b"also hidden\n", 0o644);
    file(
        root,
        b"spliced/dirgone/f",
        b"whited out by the spliced layer\n",
        0o644,
    );
    file(
        root,
        b"spliced/to-symlink/f",
        b"dir replaced by a symlink\n",
        0o644,
    );

    // Devices and fifos (as root; the oracle tests require root anyway).
    fifo(root, b"dev/fifo", 0o600);
    if is_root() {
        char_dev(root, b"dev/null", 1, 3, 0o666);
        char_dev(root, b"dev/zero-ish", 1, 5, 0o640);
        block_dev(root, b"dev/loop7", 7, 7, 0o660);
        let d = char_dev(root, b"dev/owned-tty", 4, 64, 0o620);
        lchown(&d, 0, 5);
    }

    stamp_mtimes(root, 1_500_000_000);
}

/// Layer 2 of `rich`.
pub fn rich_layer2(root: &Path) {
    remove(root, b"gone");
    remove(root, b"wholedir");

    remove(root, b"replaced");
    let d = dir(root, b"replaced", 0o700);
    file(root, b"replaced/new1", b"new 1\n", 0o644);
    file(root, b"replaced/sub/new2", b"new 2\n", 0o644);
    set_mtime(&d, 1_510_000_000, 0);

    remove(root, b"morph");
    file(root, b"morph/child", b"morph is a directory now\n", 0o644);

    remove(root, b"back");
    file(root, b"back", b"back is a file now\n", 0o644);

    remove(root, b"lnk/rel");
    file(root, b"lnk/rel", b"was a symlink\n", 0o644);

    // A new name for a base-layer file.
    hardlink(root, b"hl/x", b"hl/late");

    // Metadata-only changes.
    chmod(&p(root, b"bin/suid"), 0o755);
    lchown(&p(root, b"owned/u1000"), 2000, 2000);
    let x = p(root, b"xattr/file");
    set_xattr(&x, "user.foo", b"changed in layer 2");
    set_xattr(&x, "user.added", b"added in layer 2");
    remove_xattr(&x, "user.doomed");

    file(root, b"etc/hostname", b"stratum-test-layer-2\n", 0o644);
    file(root, b"l2/new", b"new in layer 2\n", 0o644);
    set_mtime(&p(root, b"l2/new"), 1_520_000_000, 999_999_999);
}

/// Layer 3 of `rich`.
pub fn rich_layer3(root: &Path) {
    remove(root, b"morph");
    file(root, b"morph", b"morph is a file again\n", 0o600);

    remove(root, b"back");
    file(root, b"back/inner2", b"back is a directory again\n", 0o644);

    remove(root, b"todelete");
    remove(root, b"hl/b");

    for i in (0..MANY_FILES).step_by(10) {
        remove(root, format!("many/d{:02}/f{i:04}", i % 20).as_bytes());
    }

    remove(root, b"xattr/dir");
    file(
        root,
        b"xattr/dir",
        b"a file where a directory with an xattr was\n",
        0o644,
    );
}

/// The hand-built top layer of `spliced` (see the module docs).
pub fn spliced_layer() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"./").mtime(1_530_000_000, Some(123_456_789)),
        // Opaque directory: hides replaced2/old1 and replaced2/olddir/.
        TarEntry::dir(b"replaced2/")
            .mode(0o751)
            .mtime(1_530_000_001, Some(1)),
        TarEntry::opaque(b"replaced2"),
        TarEntry::file(b"replaced2/fresh", b"only this survives\n")
            .mtime(1_530_000_002, Some(500_000_000)),
        TarEntry::dir(b"replaced2/olddir/").mtime(1_530_000_003, Some(3)),
        TarEntry::file(b"replaced2/olddir/new", b"new under an opaque parent\n")
            .mtime(1_530_000_004, None),
        // A hardlink whose target is only in a lower layer.
        TarEntry::dir(b"xl/").mtime(1_530_000_005, Some(5)),
        TarEntry::hardlink(b"xl/motd-link", b"etc/motd"),
        // PAX nanoseconds and xattrs.
        TarEntry::dir(b"ns/").mtime(1_530_000_006, Some(6)),
        TarEntry::file(b"ns/file", b"nanoseconds\n")
            .mtime(1_234_567_890, Some(123_456_789))
            .xattr("user.spliced", b"yes")
            .owner(31337, 31338),
        // Whiteout of a whole directory, and a directory replaced by a symlink.
        TarEntry::dir(b"spliced/").mtime(1_530_000_007, Some(7)),
        TarEntry::whiteout(b"spliced", b"dirgone"),
        TarEntry::symlink(b"spliced/to-symlink", b"../etc").mtime(1_530_000_008, Some(8)),
    ])
}

/// Builds `rich` (3 umoci layers) as `LAYOUT:rich`.
pub fn build_rich(layout: &Path) -> ImageBuilder {
    let mut b = ImageBuilder::new(layout, "rich");
    b.add_layer(rich_layer1);
    b.add_layer(rich_layer2);
    b.add_layer(rich_layer3);
    b
}

/// Builds `rich`, then forks it as `LAYOUT:spliced` with [`spliced_layer`]
/// on top. Returns (rich, spliced).
pub fn build_spliced(layout: &Path) -> (ImageBuilder, ImageBuilder) {
    let rich = build_rich(layout);
    let mut spliced = rich.fork("spliced");
    spliced.splice_layer(&spliced_layer());
    (rich, spliced)
}

/// Two images sharing a base layer: `LAYOUT:base` (1 layer) and
/// `LAYOUT:derived` (the same base + 1 layer). Small and quick.
pub fn build_shared_base(layout: &Path) -> (ImageBuilder, ImageBuilder) {
    let mut base = ImageBuilder::new(layout, "base");
    base.add_layer(|root| {
        chmod(root, 0o755);
        file(root, b"etc/os-release", b"ID=stratum-test\n", 0o644);
        file(
            root,
            b"usr/lib/libfoo.so.1",
            &Rng::new(1).bytes(100_000),
            0o755,
        );
        symlink(root, b"usr/lib/libfoo.so", b"libfoo.so.1");
        file(root, b"etc/gone-in-derived", b"x\n", 0o644);
    });
    let mut derived = base.fork("derived");
    derived.add_layer(|root| {
        file(root, b"app/main", b"#!/bin/sh\necho derived\n", 0o755);
        remove(root, b"etc/gone-in-derived");
    });
    (base, derived)
}
