//! Catalogs: SQLite databases that each describe one subtree of the
//! repository namespace.
//!
//! One schema for every catalog ([`schema::SCHEMA`]). [`CatalogBuilder`] is
//! the one writer (a temp SQLite file, mutable while a tree is assembled,
//! then frozen into an object); [`Catalog`] is the one reader (a verified
//! object opened read-only in memory).

mod builder;
mod entry;
mod images;
pub mod nesting;
mod reader;
mod rows;
pub mod schema;

pub use builder::CatalogBuilder;
pub use entry::{Chunk, Data, Entry, FileType, OPAQUE_XATTR, OPAQUE_XATTR_USER};
pub use images::{ImageLayerRecord, ImageRecord, PrefetchRef, RetiredImage, RevisionTag};
pub use reader::Catalog;

/// The entry id of every catalog's root directory.
pub const ROOT_ID: i64 = 1;

/// The deepest tree a reader accepts, in directory levels below a catalog's
/// root, and below the top of a pull (FORMAT.md §4). A path of that many
/// one-byte components is already 8 KiB, twice `PATH_MAX`; deeper trees
/// come only from hostile catalogs.
pub const MAX_DEPTH: usize = 4096;

/// What subtree a catalog covers; recorded in its `kind` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogKind {
    /// `/`: the namespace root.
    Root,
    /// `/layers/ab` or `/flat/ab`: one of 256 partitions.
    Partition,
    /// `/layers/ab/<diff_id>`: one layer's tree.
    Layer,
    /// `/flat/ab/<manifest digest>`: one image's flat rootfs.
    Flat,
    /// `/images`: the image names and the image metadata tables.
    Images,
    /// A subtree of a flat tree, mounted at any number of places (format
    /// version 2): it has no `path`, so identical subtrees are one catalog.
    Subtree,
}

impl CatalogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogKind::Root => "root",
            CatalogKind::Partition => "partition",
            CatalogKind::Layer => "layer",
            CatalogKind::Flat => "flat",
            CatalogKind::Images => "images",
            CatalogKind::Subtree => "subtree",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "root" => CatalogKind::Root,
            "partition" => CatalogKind::Partition,
            "layer" => CatalogKind::Layer,
            "flat" => CatalogKind::Flat,
            "images" => CatalogKind::Images,
            "subtree" => CatalogKind::Subtree,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectId;
    use proptest::prelude::*;

    fn build(entries: &[Entry]) -> (Vec<u8>, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Layer,
            "/layers/ab/x",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        let ids = entries
            .iter()
            .map(|e| b.insert(ROOT_ID, e).unwrap())
            .collect();
        (b.finish().unwrap(), ids)
    }

    #[test]
    fn lookup_readdir_remove_and_nlink() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Flat,
            "/flat/ab/y",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        let mut d = Entry::new(FileType::Directory, 0o700);
        d.name = b"d".to_vec();
        let d_id = b.insert(ROOT_ID, &d).unwrap();
        let mut f = Entry::new(FileType::Regular, 0o644);
        f.name = b"f".to_vec();
        f.hardlink = 5;
        let f_id = b.insert(d_id, &f).unwrap();
        f.name = b"g".to_vec();
        b.insert(d_id, &f).unwrap();
        f.name = b"h".to_vec();
        f.hardlink = 0;
        b.insert(ROOT_ID, &f).unwrap();
        assert!(b.insert(d_id, &f).is_ok());
        assert!(
            b.insert(d_id, &f).is_err(),
            "duplicate name must be refused"
        );
        assert_eq!(b.lookup(d_id, b"f").unwrap().unwrap().id, f_id);
        assert_eq!(b.new_hardlink_group(), 6);
        let bytes = b.finish().unwrap();
        let c = Catalog::from_bytes(ObjectId::of(&bytes), &bytes).unwrap();
        assert_eq!(c.kind(), CatalogKind::Flat);
        assert_eq!(c.path(), "/flat/ab/y");
        let names: Vec<_> = c
            .children(d_id)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec![b"f".to_vec(), b"g".to_vec(), b"h".to_vec()]);
        assert_eq!(c.lookup(d_id, b"f").unwrap().unwrap().nlink, 2);
        assert_eq!(c.lookup(ROOT_ID, b"h").unwrap().unwrap().nlink, 1);
        // The same catalog opened from a file, as the fetcher's cache does.
        let file = dir.path().join("cat 100%?.db");
        std::fs::write(&file, &bytes).unwrap();
        let c2 = Catalog::open_path(ObjectId::of(&bytes), &file).unwrap();
        assert_eq!(c2.children(d_id).unwrap(), c.children(d_id).unwrap());

        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Flat,
            "/",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        let d_id = b.insert(ROOT_ID, &d).unwrap();
        let sub = b.insert(d_id, &d).unwrap();
        b.insert(sub, &f).unwrap();
        b.remove(d_id).unwrap();
        assert!(b.lookup(ROOT_ID, b"d").unwrap().is_none());
        assert!(b.get(sub).unwrap().is_none());
        assert!(b.get(ROOT_ID).unwrap().is_some());
    }

    #[test]
    fn children_come_in_batches_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Layer,
            "/l",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        let mut names: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| format!("f{:05}", (i * 7919) % 2500).into_bytes())
            .collect();
        for n in &names {
            let mut e = Entry::new(FileType::Regular, 0o644);
            e.name = n.clone();
            b.insert(ROOT_ID, &e).unwrap();
        }
        let bytes = b.finish().unwrap();
        let c = Catalog::from_bytes(ObjectId::of(&bytes), &bytes).unwrap();
        let mut seen = Vec::new();
        c.for_each_child(ROOT_ID, |e| {
            // The callback may query the same catalog.
            assert!(c.get(e.id).unwrap().is_some());
            seen.push(e.name);
            Ok(())
        })
        .unwrap();
        names.sort();
        assert_eq!(seen, names);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(Catalog::from_bytes(ObjectId::of(b"x"), b"not sqlite at all").is_err());
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Root,
            "/",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        b.set_property(schema::PROP_FORMAT_VERSION, "3").unwrap();
        let bytes = b.finish().unwrap();
        assert!(matches!(
            Catalog::from_bytes(ObjectId::of(&bytes), &bytes),
            Err(crate::Error::UnsupportedVersion { .. })
        ));
    }

    /// A catalog with directories `/d/e`, patched by `sql` (ids: root 1,
    /// d 2, e 3) as only a hostile writer would.
    fn patched(sql: &str) -> crate::Result<Catalog> {
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::create(
            dir.path(),
            CatalogKind::Flat,
            "/",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        let mut d = Entry::new(FileType::Directory, 0o755);
        d.name = b"d".to_vec();
        let d_id = b.insert(ROOT_ID, &d).unwrap();
        d.name = b"e".to_vec();
        b.insert(d_id, &d).unwrap();
        let file = dir.path().join("cat.db");
        std::fs::write(&file, b.finish().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let bytes = std::fs::read(&file).unwrap();
        Catalog::from_bytes(ObjectId::of(&bytes), &bytes)
    }

    fn refused(r: crate::Result<Catalog>, needle: &str) {
        match r {
            Err(crate::Error::InvalidCatalog { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("accepted or wrong error: {other:?}"),
        }
    }

    #[test]
    fn catalog_cycle_root_listed_as_its_own_child_is_refused() {
        assert!(patched("").is_ok());
        // `loop/loop/loop/…`: the root is a child of itself.
        refused(
            patched("UPDATE entries SET parent = 1, name = x'6c6f6f70' WHERE id = 1"),
            "root entry has parent 1",
        );
        // The root as a child of its grandchild: `d/e/again/d/e/again/…`.
        refused(
            patched("UPDATE entries SET parent = 3, name = x'616761696e' WHERE id = 1"),
            "root entry has parent 3",
        );
    }

    #[test]
    fn catalog_cycle_off_the_root_and_orphans_are_refused() {
        // d and e each other's parent: a cycle the root never reaches.
        refused(
            patched("UPDATE entries SET parent = 3 WHERE id = 2"),
            "not in the tree of its root",
        );
        // A directory that is its own parent.
        refused(
            patched("UPDATE entries SET parent = 3 WHERE id = 3"),
            "not in the tree of its root",
        );
        // A parent that does not exist.
        refused(
            patched("UPDATE entries SET parent = 99 WHERE id = 3"),
            "not in the tree of its root",
        );
    }

    #[test]
    fn catalog_deeper_than_max_depth_is_refused() {
        let build = |levels: usize| {
            let dir = tempfile::tempdir().unwrap();
            let mut b = CatalogBuilder::create(
                dir.path(),
                CatalogKind::Layer,
                "/l",
                &Entry::new(FileType::Directory, 0o755),
            )
            .unwrap();
            let mut d = Entry::new(FileType::Directory, 0o755);
            d.name = b"d".to_vec();
            let mut parent = ROOT_ID;
            for _ in 0..levels {
                parent = b.insert(parent, &d).unwrap();
            }
            b.finish().unwrap()
        };
        let ok = build(MAX_DEPTH);
        assert!(Catalog::from_bytes(ObjectId::of(&ok), &ok).is_ok());
        let deep = build(MAX_DEPTH + 1);
        refused(
            Catalog::from_bytes(ObjectId::of(&deep), &deep),
            "deeper than",
        );
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let data = prop_oneof![
            Just(Data::None),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Data::Inline),
            proptest::array::uniform32(any::<u8>()).prop_map(|b| Data::Object(ObjectId(b))),
            proptest::collection::vec(
                (proptest::array::uniform32(any::<u8>()), 0u64..1 << 40),
                1..4
            )
            .prop_map(|v| Data::Chunks(
                v.into_iter()
                    .map(|(b, size)| Chunk {
                        id: ObjectId(b),
                        size
                    })
                    .collect()
            )),
        ];
        (
            proptest::collection::vec(any::<u8>(), 1..20),
            prop_oneof![
                Just(FileType::Regular),
                Just(FileType::Directory),
                Just(FileType::Symlink),
                Just(FileType::CharDevice)
            ],
            0u32..0o7777,
            any::<u32>(),
            any::<u32>(),
            0u64..(1 << 62),
            any::<i64>(),
            0u32..1_000_000_000,
            (0u32..4096, 0u32..1 << 20),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..30)),
            data,
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..10),
                proptest::collection::vec(any::<u8>(), 0..10),
                0..3,
            ),
        )
            .prop_map(
                |(name, ft, perm, uid, gid, size, mtime, ns, (ma, mi), symlink, data, xattrs)| {
                    let mut e = Entry::new(ft, perm);
                    e.name = name;
                    e.uid = uid;
                    e.gid = gid;
                    e.size = size;
                    e.mtime = mtime;
                    e.mtime_ns = ns;
                    e.rdev = Entry::make_rdev(ma, mi);
                    e.symlink = symlink;
                    e.data = data;
                    e.xattrs = xattrs.into_iter().collect();
                    e
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn rows_round_trip(entries in proptest::collection::vec(arb_entry(), 1..10)) {
            let mut uniq = std::collections::BTreeMap::new();
            for e in entries { uniq.insert(e.name.clone(), e); }
            let entries: Vec<Entry> = uniq.into_values().collect();
            let (bytes, ids) = build(&entries);
            let c = Catalog::from_bytes(ObjectId::of(&bytes), &bytes).unwrap();
            for (e, id) in entries.iter().zip(ids) {
                let got = c.lookup(ROOT_ID, &e.name).unwrap().unwrap();
                let mut want = e.clone();
                want.id = id;
                want.parent = ROOT_ID;
                if want.file_type() == Some(FileType::Symlink) {
                    want.mode = FileType::Symlink.mode_bits() | 0o777;
                }
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(got.device(), (Entry::make_rdev(got.device().0, got.device().1) == got.rdev).then_some(got.device()).unwrap());
            }
        }
    }
}
