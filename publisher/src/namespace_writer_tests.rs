//! Where the namespace writer puts image records (FORMAT.md §5.3), read back
//! through `stratum_catalog::image_index` as every reader does.

use std::sync::Arc;

use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Entry, FileType, ImageLayerRecord, ImageRecord, ROOT_ID,
};
use stratum_catalog::image_index::in_store;
use stratum_catalog::{ObjectId, ObjectKind, Sha256Digest, Store};

use super::{dir_entry, NamespaceWriter};
use crate::objects::ObjectWriter;

struct Fixture {
    _dir: tempfile::TempDir,
    tmp: std::path::PathBuf,
    store: Store,
    objects: ObjectWriter,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let store = Store::new(Arc::new(LocalDir::open(dir.path().join("repo")).unwrap()));
    let objects = ObjectWriter::new(store.clone()).unwrap();
    Fixture {
        _dir: dir,
        tmp,
        store,
        objects,
    }
}

/// A manifest hex starting with `prefix` (two hex digits), unique per `n`.
fn hex(prefix: &str, n: u8) -> String {
    format!("{prefix}{:062x}", n)
}

fn record(name: &str, hex: &str) -> ImageRecord {
    ImageRecord {
        name: name.to_owned(),
        manifest_digest: Sha256Digest::from_hex(hex).unwrap(),
        config_digest: Sha256Digest([0xcc; 32]),
        platform: "linux/amd64".into(),
        source: "test".into(),
        published_at: 1_700_000_000,
        flat_path: format!("/flat/{}/{hex}", &hex[..2]),
        flat_catalog: ObjectId::of(hex.as_bytes()).to_hex(),
        manifest: b"{}".to_vec(),
        config: b"{}".to_vec(),
        layers: vec![ImageLayerRecord {
            digest: Sha256Digest([0xdd; 32]),
            diff_id: Sha256Digest([0xee; 32]),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: 10,
            layer_path: format!("/layers/ee/{}", "e".repeat(64)),
            catalog: ObjectId::of(b"layer").to_hex(),
        }],
        outputs: Vec::new(),
        prefetch: None,
    }
}

fn publish(w: &mut NamespaceWriter, r: &ImageRecord) {
    let hex = r.flat_path.rsplit('/').next().unwrap().to_owned();
    w.add_flat(&hex, ObjectId::of(hex.as_bytes()));
    w.set_image(r.clone()).unwrap();
}

fn write(f: &mut Fixture, w: NamespaceWriter) -> ObjectId {
    let root = w.write(&f.store, &mut f.objects).unwrap();
    f.objects.flush().unwrap();
    root
}

fn load(f: &Fixture, root: &ObjectId) -> NamespaceWriter {
    NamespaceWriter::load(&f.store, root, f.tmp.clone(), 1_700_000_100).unwrap()
}

/// `(images catalog, /flat partition ids)` of namespace `root`.
fn layout(f: &Fixture, root: &ObjectId) -> (Catalog, Vec<(String, ObjectId)>) {
    let root = f.store.load_catalog(root).unwrap();
    let images = root.lookup(ROOT_ID, b"images").unwrap().unwrap();
    let images = f.store.load_catalog(&images.nested.unwrap()).unwrap();
    let flat = root.lookup(ROOT_ID, b"flat").unwrap().unwrap();
    let parts = root
        .children(flat.id)
        .unwrap()
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.nested.unwrap()))
        .collect();
    (images, parts)
}

#[test]
fn records_live_in_the_flat_partition_of_their_tree() {
    let mut f = fixture();
    let mut w = NamespaceWriter::empty(f.tmp.clone(), 1_700_000_000);
    let a = record("local/a:1", &hex("ab", 1));
    let b = record("local/b:1", &hex("cd", 2));
    publish(&mut w, &a);
    publish(&mut w, &b);
    let root = write(&mut f, w);

    let (images, parts) = layout(&f, &root);
    assert!(
        !images.has_image_records().unwrap(),
        "/images holds no record"
    );
    for (part, id) in &parts {
        let names: Vec<String> = f
            .store
            .load_catalog(id)
            .unwrap()
            .images()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let want = match part.as_str() {
            "ab" => vec!["local/a:1".to_owned()],
            "cd" => vec!["local/b:1".to_owned()],
            other => panic!("unexpected partition {other}"),
        };
        assert_eq!(names, want, "records of /flat/{part}");
    }

    let root_cat = f.store.load_catalog(&root).unwrap();
    let mut index = in_store(&f.store, &root_cat);
    assert_eq!(index.get("local/a:1").unwrap(), Some(a.clone()));
    assert_eq!(index.get("local/c:1").unwrap(), None);
    assert_eq!(index.all().unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(index.variants("local/b:1").unwrap(), vec![b]);
    let w = load(&f, &root);
    assert_eq!(
        w.image_by_digest(&a.manifest_digest.to_string()).unwrap(),
        Some(a.clone())
    );
    assert_eq!(w.image("local/a:1").unwrap(), Some(a));
}

#[test]
fn a_publish_rewrites_only_the_partitions_its_records_touch() {
    let mut f = fixture();
    let mut w = NamespaceWriter::empty(f.tmp.clone(), 1_700_000_000);
    let a = record("local/a:1", &hex("ab", 1));
    let b = record("local/b:1", &hex("cd", 2));
    publish(&mut w, &a);
    publish(&mut w, &b);
    let first = write(&mut f, w);
    let (_, before) = layout(&f, &first);

    // A new image in a third partition leaves the other two as they were.
    let mut w = load(&f, &first);
    let c = record("local/c:1", &hex("ef", 3));
    publish(&mut w, &c);
    let second = write(&mut f, w);
    let (_, after) = layout(&f, &second);
    for (part, id) in &before {
        assert!(
            after.contains(&(part.clone(), *id)),
            "/flat/{part} rewritten"
        );
    }

    // Moving a:1 to another tree moves its record, and retires the old one.
    let mut w = load(&f, &second);
    let a2 = record("local/a:1", &hex("cd", 4));
    publish(&mut w, &a2);
    assert_eq!(w.images().unwrap(), vec![a2.clone(), b.clone(), c.clone()]);
    let third = write(&mut f, w);
    let (images, parts) = layout(&f, &third);
    let ab = parts.iter().find(|(p, _)| p == "ab").unwrap().1;
    assert!(!f
        .store
        .load_catalog(&ab)
        .unwrap()
        .has_image_records()
        .unwrap());
    let retired = images.retired_images().unwrap();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].manifest_digest, a.manifest_digest);
    let root_cat = f.store.load_catalog(&third).unwrap();
    assert_eq!(
        in_store(&f.store, &root_cat).all().unwrap(),
        vec![a2, b, c.clone()]
    );

    // Removing a name removes its record.
    let mut w = load(&f, &third);
    assert!(w.remove_image("local/c:1").unwrap());
    assert_eq!(w.image("local/c:1").unwrap(), None);
    assert_eq!(
        w.image_by_digest(&c.manifest_digest.to_string()).unwrap(),
        None
    );
    let fourth = write(&mut f, w);
    let root_cat = f.store.load_catalog(&fourth).unwrap();
    let names: Vec<String> = in_store(&f.store, &root_cat)
        .all()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["local/a:1", "local/b:1"]);
}

/// A namespace as written before records moved out of `/images`: the
/// records in the `/images` catalog, none in the partitions.
fn legacy_namespace(f: &mut Fixture, records: &[ImageRecord]) -> ObjectId {
    let ts: u64 = 1_700_000_000;
    let mut root = CatalogBuilder::create(&f.tmp, CatalogKind::Root, "/", &legacy_dir(ts)).unwrap();
    let mut images =
        CatalogBuilder::create(&f.tmp, CatalogKind::Images, "/images", &legacy_dir(ts)).unwrap();
    let mut flat_dir = legacy_dir(ts);
    flat_dir.name = b"flat".to_vec();
    let flat = root.insert(ROOT_ID, &flat_dir).unwrap();
    let mut layers = legacy_dir(ts);
    layers.name = b"layers".to_vec();
    root.insert(ROOT_ID, &layers).unwrap();
    for r in records {
        let hex = r.flat_path.rsplit('/').next().unwrap();
        let mut part = CatalogBuilder::create(
            &f.tmp,
            CatalogKind::Partition,
            &format!("/flat/{}", &hex[..2]),
            &legacy_dir(ts),
        )
        .unwrap();
        let mut mp = legacy_dir(ts);
        mp.name = hex.as_bytes().to_vec();
        mp.nested = Some(ObjectId::of(hex.as_bytes()));
        part.insert(ROOT_ID, &mp).unwrap();
        let mut pe = legacy_dir(ts);
        pe.name = hex.as_bytes()[..2].to_vec();
        pe.nested = Some(
            f.objects
                .put(ObjectKind::Catalog, &part.finish().unwrap())
                .unwrap(),
        );
        root.insert(flat, &pe).unwrap();

        let (repo, tag) = r.name.rsplit_once(':').unwrap();
        let mut parent = ROOT_ID;
        for comp in repo.split('/') {
            parent = match images.lookup(parent, comp.as_bytes()).unwrap() {
                Some(e) => e.id,
                None => {
                    let mut d = legacy_dir(ts);
                    d.name = comp.as_bytes().to_vec();
                    images.insert(parent, &d).unwrap()
                }
            };
        }
        let mut link = Entry::new(FileType::Symlink, 0o777);
        link.name = tag.as_bytes().to_vec();
        let target = format!("../..{}", r.flat_path);
        link.size = target.len() as u64;
        link.symlink = Some(target.into_bytes());
        images.insert(parent, &link).unwrap();
        images.add_image(r).unwrap();
    }
    let mut ie = legacy_dir(ts);
    ie.name = b"images".to_vec();
    ie.nested = Some(
        f.objects
            .put(ObjectKind::Catalog, &images.finish().unwrap())
            .unwrap(),
    );
    root.insert(ROOT_ID, &ie).unwrap();
    let id = f
        .objects
        .put(ObjectKind::Catalog, &root.finish().unwrap())
        .unwrap();
    f.objects.flush().unwrap();
    id
}

#[test]
fn records_an_older_writer_left_in_images_are_read_then_moved() {
    let mut f = fixture();
    let a = record("local/a:1", &hex("ab", 1));
    let b = record("local/b:1", &hex("cd", 2));
    let old = legacy_namespace(&mut f, &[a.clone(), b.clone()]);

    let root_cat = f.store.load_catalog(&old).unwrap();
    let mut index = in_store(&f.store, &root_cat);
    assert_eq!(index.get("local/a:1").unwrap(), Some(a.clone()));
    assert_eq!(index.all().unwrap(), vec![a.clone(), b.clone()]);
    drop(index);

    // The next revision (here: one more image) moves them.
    let mut w = load(&f, &old);
    assert_eq!(w.image("local/b:1").unwrap(), Some(b.clone()));
    assert_eq!(
        w.image_by_digest(&a.manifest_digest.to_string()).unwrap(),
        Some(a.clone())
    );
    let c = record("local/c:1", &hex("ef", 3));
    publish(&mut w, &c);
    let new = write(&mut f, w);
    let (images, parts) = layout(&f, &new);
    assert!(
        !images.has_image_records().unwrap(),
        "/images still holds records"
    );
    assert_eq!(parts.len(), 3);
    let root_cat = f.store.load_catalog(&new).unwrap();
    assert_eq!(in_store(&f.store, &root_cat).all().unwrap(), vec![a, b, c]);
}

/// A namespace directory as writers before D45 made it: the revision's
/// time as its mtime.
fn legacy_dir(ts: u64) -> Entry {
    let mut e = dir_entry();
    e.mtime = i64::try_from(ts).unwrap_or(0);
    e
}
