//! Unit tests of [`super`]: one per PAX key with an empty value (issue 12,
//! item 13), later records overriding earlier ones, and global headers.

use super::*;

/// What one entry of a hand-built tar looks like to the ingester.
#[derive(Debug)]
struct Seen {
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    size: u64,
    meta: Entry,
    /// The content of the entry, then the path of the entry after it: the
    /// layout of the stream as the reader saw it.
    data: Vec<u8>,
    next: Option<Vec<u8>>,
}

fn ustar(ty: tar::EntryType, name: &str, link: Option<&str>, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(ty);
    h.set_path(name).unwrap();
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_mode(0o644);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1000);
    h.set_size(size);
    h.set_cksum();
    h
}

/// A tar of: `pax` records (if any), then `h` with `data`, then a file
/// `next`. Reads its first entry back.
fn read(pax: &[(&str, &[u8])], h: &tar::Header, data: &[u8]) -> Result<Seen, String> {
    read_with(|b| {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        b.append(h, data).unwrap();
    })
}

fn read_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Result<Seen, String> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.append(&ustar(tar::EntryType::Regular, "next", None, 0), &[][..])
        .unwrap();
    let bytes = b.into_inner().unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut entries = archive.entries().unwrap();
    let mut entry = loop {
        let e = entries.next().unwrap().unwrap();
        // The ingester skips global headers (see the module header).
        if !e.header().entry_type().is_pax_global_extensions() {
            break e;
        }
    };
    let pax = Pax::read(&mut entry)?;
    let meta = metadata(&entry, &pax)?;
    let path = path_bytes(&entry, Some(&pax)).into_owned();
    let link = link_name_bytes(&entry, Some(&pax)).map(Cow::into_owned);
    let size = entry.size();
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    drop(entry);
    let next = entries.next().map(|e| e.unwrap().path_bytes().into_owned());
    Ok(Seen {
        path,
        link,
        size,
        meta,
        data,
        next,
    })
}

fn file(size: u64) -> tar::Header {
    ustar(tar::EntryType::Regular, "ustar-name", None, size)
}

#[test]
fn pax_times() {
    assert_eq!(pax_time(b"1700000000").unwrap(), (1_700_000_000, 0));
    assert_eq!(
        pax_time(b"1700000000.5").unwrap(),
        (1_700_000_000, 500_000_000)
    );
    assert_eq!(pax_time(b"1.123456789123").unwrap(), (1, 123_456_789));
    assert_eq!(pax_time(b"-1.5").unwrap(), (-2, 500_000_000));
    assert_eq!(pax_time(b"-0.5").unwrap(), (-1, 500_000_000));
    assert!(pax_time(b"abc").is_err());
    // Regression: flooring the smallest i64 overflowed (a panic in
    // debug builds, i64::MAX in release ones).
    assert!(pax_time(b"-9223372036854775808.5").is_err());
    assert_eq!(pax_time(b"-9223372036854775808").unwrap(), (i64::MIN, 0));
    assert!(pax_time(b"99999999999999999999").is_err());
    assert!(pax_time(b"1.2x").is_err());
}

#[test]
fn an_empty_xattr_value_means_no_xattr() {
    let s = read(
        &[
            ("SCHILY.xattr.user.empty", b""),
            ("SCHILY.xattr.user.keep", b"1"),
        ],
        &file(0),
        b"",
    )
    .unwrap();
    assert_eq!(s.meta.xattrs, vec![(b"user.keep".to_vec(), b"1".to_vec())]);
}

#[test]
fn an_empty_path_means_the_ustar_name() {
    let s = read(&[("path", b"")], &file(2), b"hi").unwrap();
    assert_eq!(s.path, b"ustar-name");
    assert_eq!(s.next.as_deref(), Some(&b"next"[..]));
    let s = read(&[("path", b"pax-name")], &file(2), b"hi").unwrap();
    assert_eq!(s.path, b"pax-name");
}

#[test]
fn an_empty_path_keeps_a_gnu_long_name() {
    let long = "d/".repeat(60) + "file";
    let s = read_with(|b| {
        b.append_pax_extensions([("path", &b""[..])]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, &long, &[][..]).unwrap();
    })
    .unwrap();
    assert_eq!(s.path, long.as_bytes());
}

/// Regression (review of issue 12.13): a GNU long name that is present but
/// empty hid the PAX `path` (the tar reader returned it, and the ustar name
/// was used); Go applies a GNU long name only when it is not empty.
#[test]
fn an_empty_gnu_long_name_lets_the_pax_path_apply() {
    for (kind, pax_key, expect) in [
        (tar::EntryType::GNULongName, "path", "from/pax"),
        (tar::EntryType::GNULongLink, "linkpath", "pax/target"),
    ] {
        let s = read_with(|b| {
            b.append_pax_extensions([(pax_key, expect.as_bytes())])
                .unwrap();
            // An empty long name (or link) header: a 'L'/'K' entry of 0 bytes.
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(kind);
            l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            l.set_size(0);
            l.set_cksum();
            b.append(&l, &[][..]).unwrap();
            b.append(
                &ustar(
                    tar::EntryType::Symlink,
                    "ustar/name",
                    Some("ustar/target"),
                    0,
                ),
                &[][..],
            )
            .unwrap();
        })
        .unwrap();
        if pax_key == "path" {
            assert_eq!(s.path, expect.as_bytes(), "{kind:?}");
        } else {
            assert_eq!(s.link.as_deref(), Some(expect.as_bytes()), "{kind:?}");
        }
    }
}

#[test]
fn an_empty_linkpath_means_the_ustar_link_name() {
    let sym = ustar(tar::EntryType::Symlink, "s", Some("ustar-target"), 0);
    let s = read(&[("linkpath", b"")], &sym, b"").unwrap();
    assert_eq!(s.link.as_deref(), Some(&b"ustar-target"[..]));
    let s = read(&[("linkpath", b"pax-target")], &sym, b"").unwrap();
    assert_eq!(s.link.as_deref(), Some(&b"pax-target"[..]));
    let hard = ustar(tar::EntryType::Link, "h", Some("ustar-name"), 0);
    let s = read(&[("linkpath", b"")], &hard, b"").unwrap();
    assert_eq!(s.link.as_deref(), Some(&b"ustar-name"[..]));
}

#[test]
fn an_empty_size_means_the_ustar_size() {
    let s = read(&[("size", b"")], &file(5), b"hello").unwrap();
    assert_eq!((s.size, s.meta.size), (5, 5));
    assert_eq!(s.data, b"hello");
    assert_eq!(s.next.as_deref(), Some(&b"next"[..]));
}

#[test]
fn empty_uid_and_gid_mean_the_ustar_ones() {
    let s = read(&[("uid", b""), ("gid", b"")], &file(0), b"").unwrap();
    assert_eq!((s.meta.uid, s.meta.gid), (7, 8));
    let s = read(&[("uid", b"70000"), ("gid", b"")], &file(0), b"").unwrap();
    assert_eq!((s.meta.uid, s.meta.gid), (70000, 8));
}

#[test]
fn an_empty_mtime_means_the_ustar_one() {
    let s = read(&[("mtime", b"")], &file(0), b"").unwrap();
    assert_eq!((s.meta.mtime, s.meta.mtime_ns), (1000, 0));
}

#[test]
fn empty_names_and_times_stratum_does_not_keep_are_accepted() {
    for key in ["uname", "gname", "atime", "ctime", "comment"] {
        let s = read(&[(key, b"")], &file(0), b"").unwrap();
        assert_eq!((s.meta.uid, s.meta.mtime), (7, 1000), "{key}");
    }
}

#[test]
fn a_later_record_overrides_an_earlier_one() {
    let pax: &[(&str, &[u8])] = &[
        ("mtime", b"5"),
        ("mtime", b"6.5"),
        ("SCHILY.xattr.user.a", b"1"),
        ("SCHILY.xattr.user.a", b""),
        ("SCHILY.xattr.user.b", b""),
        ("SCHILY.xattr.user.b", b"2"),
    ];
    let s = read(pax, &file(0), b"").unwrap();
    assert_eq!((s.meta.mtime, s.meta.mtime_ns), (6, 500_000_000));
    assert_eq!(s.meta.xattrs, vec![(b"user.b".to_vec(), b"2".to_vec())]);
    // An empty later value deletes the key: the ustar value applies.
    let s = read(&[("mtime", b"5"), ("mtime", b"")], &file(0), b"").unwrap();
    assert_eq!(s.meta.mtime, 1000);
}

/// The tar reader takes the first of these records and Go the last: two
/// different values would give two readings of the layer.
#[test]
fn reader_keys_given_twice_with_different_values_are_refused() {
    for (key, a, b) in [
        ("path", &b"one"[..], &b"two"[..]),
        ("linkpath", b"one", b"two"),
        ("size", b"5", b"0"),
        ("size", b"5", b""),
        ("uid", b"1", b"2"),
        ("gid", b"", b"2"),
    ] {
        let e = read(&[(key, a), (key, b)], &file(5), b"hello").unwrap_err();
        assert!(e.contains("twice, to different values"), "{key}: {e}");
    }
    // The same value twice is no disagreement.
    let s = read(&[("uid", b"9"), ("uid", b"9")], &file(0), b"").unwrap();
    assert_eq!(s.meta.uid, 9);
}

/// A PAX record as it is written: `LEN key=value\n`, LEN counting itself.
fn record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn a_global_header_applies_to_no_entry() {
    let s = read_with(|b| {
        let mut data = record("uid", "99");
        data.extend(record("mtime", "5"));
        data.extend(record("SCHILY.xattr.user.global", "1"));
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        h.set_path("pax_global_header").unwrap();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        // A local record deleting what the global one set.
        b.append_pax_extensions([("SCHILY.xattr.user.global", &b""[..])])
            .unwrap();
        b.append(&file(0), &[][..]).unwrap();
    })
    .unwrap();
    assert_eq!(s.path, b"ustar-name");
    assert_eq!((s.meta.uid, s.meta.mtime), (7, 1000));
    assert!(s.meta.xattrs.is_empty(), "{:?}", s.meta.xattrs);
}

#[test]
fn invalid_values_are_still_refused() {
    for (key, v, needle) in [
        ("uid", &b"-1"[..], "bad PAX uid"),
        ("size", b"12abc", "bad PAX size"),
        ("mtime", b"1e9", "bad PAX mtime"),
    ] {
        let e = read(&[(key, v)], &file(0), b"").unwrap_err();
        assert!(e.contains(needle), "{key}: {e}");
    }
}
