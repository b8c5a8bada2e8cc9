//! Entry types and tar headers: devices and fifos, PAX records with
//! absurd values, unbounded extension headers, sparse files, tar bombs.

use super::*;

/// Neutralised: device nodes and fifos are metadata in the catalog; `pull`
/// creates devices only as root (inside DEST, like tar), fifos always.
#[test]
fn device_nodes_and_fifos() {
    let mut s = setup();
    let l = image(
        &s,
        "dev",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::char_dev(b"dev/mem", 1, 1).mode(0o640),
            TarEntry::block_dev(b"dev/sda", 8, 0),
            TarEntry::fifo(b"run/fifo"),
        ])],
    );
    let dest = s.accepted(&l, &[], None);
    let fifo = std::fs::symlink_metadata(dest.join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    if support::is_root() {
        let mem = std::fs::symlink_metadata(dest.join("dev/mem")).unwrap();
        assert!(mem.file_type().is_char_device());
        assert_eq!(
            (mem.rdev(), mem.mode() & 0o7777),
            (libc::makedev(1, 1), 0o640)
        );
        let sda = std::fs::symlink_metadata(dest.join("dev/sda")).unwrap();
        assert!(sda.file_type().is_block_device());
        assert_eq!(sda.rdev(), libc::makedev(8, 0));
    } else {
        assert!(!dest.join("dev/mem").exists());
    }
}

/// PAX records with negative or absurd values are refused.
#[test]
fn pax_records_with_negative_or_absurd_values_are_refused() {
    pax_cases(&[
        ("uid", &b"-1"[..], "bad PAX uid"),
        ("gid", b"99999999999", "gid out of range"),
        ("mtime", b"1e9", "bad PAX mtime"),
        ("mtime", b"99999999999999999999", "bad PAX mtime"),
    ]);
}

/// Regression (invalid PAX size silently ignored): the tar reader uses a
/// PAX `size` only if it parses, and otherwise reads the entry with its
/// header size, where another reader stops; the two would see different
/// entries. An invalid size is now refused.
#[test]
fn invalid_pax_size_is_not_silently_ignored() {
    pax_cases(&[
        ("size", &b"-1"[..], "bad PAX size \"-1\""),
        ("size", b"12abc", "bad PAX size \"12abc\""),
    ]);
}

fn pax_cases(cases: &[(&str, &[u8], &str)]) {
    let s = setup();
    for (i, &(key, value, reason)) in cases.iter().enumerate() {
        let layer = Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"victim-entry", b"data\n").pax(key, value),
        ]);
        s.refuses_entry(&format!("pax{i}"), &[layer], "victim-entry", reason);
    }
}

/// A PAX size of 1 TiB declares an absurd file: refused by its header,
/// before any content is read. A size of 2^64-1 cannot even be skipped: the
/// tar reader refuses it, naming the entry before it.
#[test]
fn pax_absurd_sizes_are_refused() {
    let s = setup();
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"huge", b"tiny\n").pax("size", b"1099511627776"),
    ]);
    s.refuses_entry(
        "paxsize",
        &[layer],
        "huge",
        "declares 1099511627776 bytes, more than the limit of 68719476736",
    );

    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"huge", b"tiny\n").pax("size", b"18446744073709551615"),
    ]);
    s.refuses_layer(
        "paxsize-max",
        &[layer],
        &["size overflow (after entry \"./\")"],
    );
}

/// Regression (pax_time overflow): a PAX mtime of -2^63 with a fraction
/// overflowed while being floored (a panic in debug builds).
#[test]
fn pax_mtime_at_the_smallest_i64_is_refused_not_overflowed() {
    let s = setup();
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"t", b"t\n").pax("mtime", b"-9223372036854775808.5"),
    ]);
    s.refuses_entry("mtime-min", &[layer], "t", "bad PAX mtime");
}

/// Neutralised: negative PAX times are times before 1970 (floored,
/// FORMAT §6.3) and pull sets them.
#[test]
fn negative_pax_mtime_is_a_time_before_1970() {
    let mut s = setup();
    let l = image(
        &s,
        "mtime-neg",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"old", b"old\n").pax("mtime", b"-86400.25"),
        ])],
    );
    let dest = s.accepted(&l, &[], None);
    let md = std::fs::symlink_metadata(dest.join("old")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (-86401, 750_000_000));
}

/// Regression (tar extension headers buffered without bound): the tar
/// reader holds PAX records and GNU long names in memory whole, so one
/// header declaring gigabytes (fed by a compressible blob) exhausted the
/// memory. They are now capped at 1 MiB per entry.
#[test]
fn tar_extension_headers_are_not_buffered_without_bound() {
    let s = setup();
    let big = vec![b'c'; 2 << 20];
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"before", b"b\n"),
        TarEntry::file(b"after", b"a\n").pax("comment", &big),
    ]);
    s.refuses_layer(
        "bigpax",
        &[layer],
        &["take more than 1048576 bytes", "after entry \"before\""],
    );
    // A GNU long name (type `L`) of 2 MiB, written by hand.
    let mut tar = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(big.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut b = tar::Builder::new(&mut tar);
    b.append(&h, &big[..]).unwrap();
    let mut f = tar::Header::new_gnu();
    f.set_path("short").unwrap();
    f.set_size(0);
    f.set_mode(0o644);
    f.set_uid(0);
    f.set_gid(0);
    f.set_mtime(0);
    f.set_cksum();
    b.append(&f, &[][..]).unwrap();
    b.finish().unwrap();
    drop(b);
    let layer = gzip_layer(tar);
    s.refuses_layer("biglongname", &[layer], &["take more than 1048576 bytes"]);
}

/// A GNU sparse file (type `S`) of `real` bytes whose only data are the
/// last 512 bytes (`b'd'`); the rest is a hole.
fn sparse_tar(name: &str, real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(512);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(real - 512);
        g.sparse[0].set_length(512);
        g.set_real_size(real);
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[b'd'; 512][..]).unwrap();
    b.into_inner().unwrap()
}

/// Neutralised: a GNU sparse file becomes a regular file, its holes zeros
/// (FORMAT §6.2).
#[test]
fn a_sparse_file_is_a_regular_file_with_zeros() {
    let mut s = setup();
    let layer = gzip_layer(sparse_tar("sparse", 3 << 20));
    let l = image(&s, "sparse", std::slice::from_ref(&layer));
    let dest = s.accepted(&l, &[], None);
    let data = std::fs::read(dest.join("sparse")).unwrap();
    assert_eq!(data.len(), 3 << 20);
    assert!(data[..(3 << 20) - 512].iter().all(|&b| b == 0));
    assert!(data[(3 << 20) - 512..].iter().all(|&b| b == b'd'));
}

/// A sparse file of 60 GiB made of one hole expands without any input: the
/// ratio of file contents to blob bytes stops it early.
#[test]
fn a_sparse_bomb_is_stopped_by_the_ratio() {
    let s = setup();
    let layer = gzip_layer(sparse_tar("sparse-bomb", 60 << 30));
    s.refuses_entry(
        "sparse-bomb",
        &[layer],
        "sparse-bomb",
        "more than the limit of 1000:1 (see --max-ratio)",
    );
}

/// A tar header declaring a 1 TiB file followed by 1 KiB and the end: the
/// declared size is refused before anything is read.
#[test]
fn a_tar_bomb_is_refused_by_its_declared_size() {
    let s = setup();
    let layer = Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::file(b"huge-entry", &[7u8; 1024]).declared_size(1 << 40),
    ]);
    s.refuses_entry(
        "tarbomb",
        &[layer],
        "huge-entry",
        "declares 1099511627776 bytes, more than the limit of 68719476736",
    );
}
