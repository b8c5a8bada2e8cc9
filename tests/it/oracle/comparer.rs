//! The comparer must notice every kind of difference (no stratum, no
//! umoci): each test changes one thing in one of two twin trees.

use super::*;

#[test]
fn comparer_accepts_identical_trees() {
    let (_tmp, e, a) = twin_trees();
    assert_eq!(support::compare::compare_trees(&e, &a), Ok(()));
}

#[test]
fn comparer_detects_mode_change() {
    expect_detects("mode differs", &[b"file"], |a| {
        fsutil::chmod(&p(a, b"file"), 0o600)
    });
}

#[test]
fn comparer_detects_lost_setuid_bit() {
    expect_detects("mode differs", &[b"suid"], |a| {
        fsutil::chmod(&p(a, b"suid"), 0o755)
    });
}

#[test]
fn comparer_detects_lost_sticky_bit() {
    expect_detects("mode differs", &[b"sticky"], |a| {
        fsutil::chmod(&p(a, b"sticky"), 0o777)
    });
}

#[test]
fn comparer_detects_one_changed_byte() {
    expect_detects("content differs", &[b"file"], |a| {
        std::fs::write(p(a, b"file"), b"hello World").unwrap()
    });
}

#[test]
fn comparer_detects_size_change() {
    // Same prefix, one more byte: size and content both differ.
    let (_tmp, e, a) = twin_trees();
    std::fs::write(p(&a, b"empty"), b"x").unwrap();
    let md = std::fs::symlink_metadata(p(&e, b"empty")).unwrap();
    fsutil::set_mtime(&p(&a, b"empty"), md.mtime(), md.mtime_nsec() as u32);
    let diffs = support::compare::compare_trees(&e, &a).unwrap_err();
    assert!(
        diffs.iter().any(|d| d.contains("\"empty\": size differs")),
        "{diffs:#?}"
    );
}

#[test]
fn comparer_detects_uid_change() {
    if !is_root() {
        return skip("chown needs root");
    }
    expect_detects("uid differs", &[b"file"], |a| {
        std::os::unix::fs::lchown(p(a, b"file"), Some(1), None).unwrap()
    });
}

#[test]
fn comparer_detects_gid_change() {
    if !is_root() {
        return skip("chown needs root");
    }
    expect_detects("gid differs", &[b"sym"], |a| {
        std::os::unix::fs::lchown(p(a, b"sym"), None, Some(7)).unwrap()
    });
}

#[test]
fn comparer_detects_mtime_seconds() {
    expect_detects("mtime differs", &[], |a| {
        let md = std::fs::symlink_metadata(p(a, b"dir/inner")).unwrap();
        fsutil::set_mtime(&p(a, b"dir/inner"), md.mtime() + 1, md.mtime_nsec() as u32);
    });
}

#[test]
fn comparer_detects_mtime_nanoseconds() {
    expect_detects("mtime differs", &[], |a| {
        let md = std::fs::symlink_metadata(p(a, b"dir")).unwrap();
        fsutil::set_mtime(
            &p(a, b"dir"),
            md.mtime(),
            (md.mtime_nsec() as u32 + 1) % 1_000_000_000,
        );
    });
}

#[test]
fn comparer_ignores_nanoseconds_when_asked() {
    let opts = CompareOpts {
        mtime_nanos: false,
        ..CompareOpts::default()
    };
    expect_ignores(&opts, |a| {
        let md = std::fs::symlink_metadata(p(a, b"file")).unwrap();
        fsutil::set_mtime(&p(a, b"file"), md.mtime(), 42);
    });
    // …but still sees whole seconds.
    expect_detects_with(&opts, "mtime differs", &[], |a| {
        let md = std::fs::symlink_metadata(p(a, b"file")).unwrap();
        fsutil::set_mtime(&p(a, b"file"), md.mtime() - 1, md.mtime_nsec() as u32);
    });
}

#[test]
fn comparer_detects_symlink_target() {
    expect_detects("symlink target differs", &[b"sym"], |a| {
        std::fs::remove_file(p(a, b"sym")).unwrap();
        // Same length as "file", so only the target differs.
        std::os::unix::fs::symlink("fil2", p(a, b"sym")).unwrap();
    });
}

#[test]
fn comparer_detects_type_change() {
    expect_detects("type differs", &[b"empty"], |a| {
        std::fs::remove_file(p(a, b"empty")).unwrap();
        std::fs::create_dir(p(a, b"empty")).unwrap();
    });
}

#[test]
fn comparer_detects_fifo_replaced_by_file() {
    expect_detects("type differs", &[b"fifo"], |a| {
        std::fs::remove_file(p(a, b"fifo")).unwrap();
        fsutil::file(a, b"fifo", b"", 0o640);
    });
}

#[test]
fn comparer_detects_extra_entry() {
    expect_detects("only in actual", &[b"dir"], |a| {
        fsutil::file(a, b"dir/extra", b"", 0o644);
    });
}

#[test]
fn comparer_detects_missing_entry() {
    expect_detects("only in expected", &[b"dir"], |a| {
        std::fs::remove_file(p(a, b"dir/inner")).unwrap();
    });
}

#[test]
fn comparer_detects_missing_non_utf8_entry() {
    expect_detects("only in expected", &[], |a| {
        std::fs::remove_file(p(a, b"caf\xe9")).unwrap();
    });
}

#[test]
fn comparer_detects_added_xattr() {
    expect_detects("xattrs differ", &[], |a| {
        fsutil::set_xattr(&p(a, b"empty"), "user.new", b"1")
    });
}

#[test]
fn comparer_detects_changed_xattr_value() {
    expect_detects("xattrs differ", &[], |a| {
        fsutil::set_xattr(&p(a, b"file"), "user.bin", &[0, 1, 254])
    });
}

#[test]
fn comparer_detects_removed_xattr() {
    expect_detects("xattrs differ", &[], |a| {
        fsutil::remove_xattr(&p(a, b"file"), "user.foo")
    });
}

#[test]
fn comparer_detects_xattr_on_directory() {
    expect_detects("xattrs differ", &[], |a| {
        fsutil::set_xattr(&p(a, b"dir"), "user.d", b"")
    });
}

#[test]
fn comparer_ignores_configured_xattr_prefixes() {
    expect_ignores(&CompareOpts::overlay(), |a| {
        fsutil::set_xattr(&p(a, b"dir"), "user.overlay.opaque", b"y")
    });
}

#[test]
fn comparer_detects_broken_hardlink() {
    // dir/hl2 becomes a separate copy with the same bytes, mode and mtime.
    expect_detects("hardlink group differs", &[b"dir"], |a| {
        let md = std::fs::symlink_metadata(p(a, b"dir/hl2")).unwrap();
        let tmp = p(a, b"dir/.tmp");
        std::fs::copy(p(a, b"dir/hl2"), &tmp).unwrap();
        fsutil::chmod(&tmp, md.mode() & 0o7777);
        fsutil::set_mtime(&tmp, md.mtime(), md.mtime_nsec() as u32);
        std::fs::rename(&tmp, p(a, b"dir/hl2")).unwrap();
    });
}

#[test]
fn comparer_detects_new_hardlink() {
    // solo has the same bytes, mode and mtime as hl1; linking it changes
    // nothing but the grouping.
    expect_detects("hardlink group differs", &[], |a| {
        std::fs::remove_file(p(a, b"solo")).unwrap();
        std::fs::hard_link(p(a, b"hl1"), p(a, b"solo")).unwrap();
    });
}

#[test]
fn comparer_detects_rdev_change() {
    if !is_root() {
        return skip("mknod needs root");
    }
    expect_detects("rdev differs", &[b"chr"], |a| {
        std::fs::remove_file(p(a, b"chr")).unwrap();
        fsutil::char_dev(a, b"chr", 1, 5, 0o666);
    });
}

#[test]
fn comparer_detects_root_metadata() {
    expect_detects("mode differs", &[], |a| fsutil::chmod(a, 0o700));
}

#[test]
fn comparer_reports_every_difference() {
    let (_tmp, e, a) = twin_trees();
    fsutil::chmod(&p(&a, b"file"), 0o600);
    std::fs::remove_file(p(&a, b"dangling")).unwrap();
    fsutil::set_xattr(&p(&a, b"suid"), "user.x", b"1");
    fsutil::file(&a, b"sticky/new", b"", 0o644);
    let diffs = compare_trees_with(&e, &a, &CompareOpts::default()).unwrap_err();
    for needle in [
        "\"file\": mode differs",
        "\"dangling\": only in expected",
        "\"suid\": xattrs differ",
        "\"sticky/new\": only in actual",
        "\"sticky\": mtime differs",
    ] {
        assert!(
            diffs.iter().any(|d| d.contains(needle)),
            "missing {needle:?} in {diffs:#?}"
        );
    }
}
