//! The cut rule, the canonical writer, and readers crossing the result.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use super::*;
use crate::backend::LocalDir;
use crate::catalog::{Catalog, Entry, FileType};
use crate::namespace::{CatalogLoader, Namespace, Node, StoreLoader};
use crate::{ObjectKind, Store};

/// A tree described by paths: `d` directories, `f` regular files (inline
/// data = the path), `h:<group>` hardlinked files.
fn build(tmp: &Path, paths: &[String]) -> CatalogBuilder {
    let mut b = CatalogBuilder::create(
        tmp,
        CatalogKind::Flat,
        "/flat/ab/x",
        &Entry::new(FileType::Directory, 0o755),
    )
    .unwrap();
    b.set_property("manifest_digest", "sha256:x").unwrap();
    let mut dirs: HashMap<String, i64> = HashMap::from([(String::new(), ROOT_ID)]);
    for spec in paths {
        let (kind, path) = spec.split_once(' ').unwrap();
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let pid = dirs[parent];
        let mut e = if kind == "d" {
            Entry::new(FileType::Directory, 0o755)
        } else {
            let mut e = Entry::new(FileType::Regular, 0o644);
            e.size = name.len() as u64;
            e.data = crate::catalog::Data::Inline(name.as_bytes().to_vec());
            if let Some(g) = kind.strip_prefix("h:") {
                e.hardlink = g.parse().unwrap();
            }
            e
        };
        e.name = name.as_bytes().to_vec();
        e.mtime = 7;
        let id = b.insert(pid, &e).unwrap();
        if kind == "d" {
            dirs.insert(path.to_owned(), id);
        }
    }
    b
}

fn image(extra: &[&str], files_in_lib: usize) -> Vec<String> {
    let mut v: Vec<String> = ["d etc", "f etc/hostname", "d usr", "d usr/lib", "d usr/bin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..files_in_lib {
        v.push(format!("f usr/lib/lib{i:04}.so"));
    }
    for i in 0..40 {
        v.push(format!("f usr/bin/tool{i}"));
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

struct Repo {
    _dir: tempfile::TempDir,
    store: Store,
    tmp: std::path::PathBuf,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(LocalDir::open(dir.path().join("repo")).unwrap()));
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Repo {
        _dir: dir,
        store,
        tmp,
    }
}

/// Stores what `write_tree` hands over.
fn put(r: &Repo, p: TreeObject<'_>) -> crate::Result<ObjectId> {
    match p {
        TreeObject::Catalog(f) => r.store.put_file(ObjectKind::Catalog, f, 1).map(|p| p.id),
        TreeObject::Content(bytes) => {
            let mut enc = crate::object::Encoder::new(1)?;
            r.store
                .put(ObjectKind::Content, &bytes, &mut enc)
                .map(|p| p.id)
        }
    }
}

fn write(r: &Repo, paths: &[String], min: usize) -> WrittenTree {
    let b = build(&r.tmp, paths);
    let rule = CutRule {
        min_entries: min,
        region_min_entries: usize::MAX,
        inline: InlineRule::OneLayer,
    };
    let origins = HashMap::new();
    write_tree(
        b,
        &r.tmp,
        CatalogKind::Flat,
        "/flat/ab/x",
        rule,
        Origins::Flat(&origins),
        |p| put(r, p),
    )
    .unwrap()
}

/// path → (mode, size, mtime, nlink, data) of every entry below `node`,
/// read through the namespace (crossing nested catalogs).
fn listing(ns: &Namespace<StoreLoader>, node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), node.clone())];
    while let Some((path, n)) = stack.pop() {
        for c in ns.children(&n).unwrap() {
            let p = format!("{path}/{}", String::from_utf8_lossy(&c.entry.name));
            let e = &c.entry;
            out.insert(
                p.clone(),
                format!(
                    "{:o} {} {} {} {:?}",
                    e.mode, e.size, e.mtime, e.nlink, e.data
                ),
            );
            if e.is_dir() {
                stack.push((p, c));
            }
        }
    }
    out
}

fn namespace(r: &Repo, top: &ObjectId) -> Namespace<StoreLoader> {
    Namespace::new(StoreLoader::new(r.store.clone()), top).unwrap()
}

#[test]
fn a_large_directory_becomes_a_subtree_catalog_and_reads_the_same() {
    let r = repo();
    let paths = image(&[], 300);
    let whole = write(&r, &paths, usize::MAX);
    let split = write(&r, &paths, 100);
    assert!(whole.subtrees.is_empty());
    // usr/lib (301 entries) is cut; usr then holds 40 + 2 + mount point.
    assert_eq!(split.subtrees.len(), 1, "{split:?}");
    let sub = r.store.load_catalog(&split.subtrees[0]).unwrap();
    assert_eq!(sub.kind(), CatalogKind::Subtree);
    assert_eq!(sub.path(), "");
    assert_eq!(sub.property(schema::PROP_PATH).unwrap(), None);
    assert_eq!(sub.entry_count().unwrap(), 301);
    let top = r.store.load_catalog(&split.top).unwrap();
    assert_eq!(top.kind(), CatalogKind::Flat);
    assert_eq!(top.path(), "/flat/ab/x");
    assert_eq!(
        top.property("manifest_digest").unwrap().as_deref(),
        Some("sha256:x")
    );
    let a = namespace(&r, &whole.top);
    let b = namespace(&r, &split.top);
    let la = listing(&a, &a.root().unwrap());
    assert_eq!(la.len(), paths.len());
    assert_eq!(la, listing(&b, &b.root().unwrap()));
    let lib = b.resolve("/usr/lib/lib0007.so").unwrap();
    assert_eq!(lib.catalog.id(), split.subtrees[0]);
    assert_eq!(lib.nesting, 2);
}

#[test]
fn equal_content_gives_equal_bytes_whatever_the_insertion_order() {
    let r = repo();
    let paths = image(&["d opt", "f opt/a"], 300);
    // Directories before their children, otherwise another order.
    let mut shuffled: Vec<String> = paths
        .iter()
        .filter(|p| p.starts_with("d "))
        .cloned()
        .collect();
    shuffled.extend(paths.iter().rev().filter(|p| !p.starts_with("d ")).cloned());
    assert_ne!(shuffled, paths);
    let a = write(&r, &paths, 100);
    let b = write(&r, &shuffled, 100);
    assert_eq!(a.top, b.top);
    assert_eq!(a.subtrees, b.subtrees);
    // And the header does not name the SQLite that wrote it.
    let bytes = r.store.get(&a.top, ObjectKind::Catalog).unwrap();
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    assert_eq!(
        bytes[96..100],
        super::super::builder::CANONICAL_SQLITE_VERSION.to_be_bytes()
    );
    assert_eq!(u16::from_be_bytes([bytes[16], bytes[17]]), 4096);
}

#[test]
fn images_with_the_same_base_share_its_subtree_catalogs() {
    let r = repo();
    let one = write(&r, &image(&["d app", "f app/one"], 300), 100);
    let two = write(&r, &image(&["d app", "f app/two", "f etc/motd"], 300), 100);
    assert_ne!(one.top, two.top);
    assert_eq!(one.subtrees, two.subtrees, "usr/lib is the same subtree");
    // The same subtree at another place of another tree is the same
    // catalog too: the cut depends on the subtree only.
    let mut moved: Vec<String> = vec!["d opt".into()];
    moved.extend(
        image(&[], 300)
            .into_iter()
            .filter(|p| p.contains("usr"))
            .map(|p| p.replacen(' ', " opt/", 1)),
    );
    let three = write(&r, &moved, 100);
    assert_eq!(three.subtrees, one.subtrees);
    // Shown at two places of one namespace, it reads as two directories.
    let ns = namespace(&r, &three.top);
    assert_eq!(
        ns.resolve("/opt/usr/lib/lib0001.so").unwrap().entry.data,
        crate::catalog::Data::Inline(b"lib0001.so".to_vec())
    );
}

#[test]
fn a_hardlink_group_is_never_split_between_catalogs() {
    let r = repo();
    // lib0000.so in usr/lib and a link to it in etc: usr/lib stays inline.
    let mut paths = image(&[], 300);
    let at = paths
        .iter()
        .position(|p| p == "f usr/lib/lib0000.so")
        .unwrap();
    paths[at] = "h:9 usr/lib/lib0000.so".into();
    paths.push("h:9 etc/link".into());
    let t = write(&r, &paths, 100);
    assert!(t.subtrees.is_empty(), "{t:?}");
    let ns = namespace(&r, &t.top);
    assert_eq!(ns.resolve("/etc/link").unwrap().entry.nlink, 2);
    // A group wholly inside usr/lib does not stop the cut.
    let mut paths = image(&[], 300);
    paths.push("h:4 usr/lib/x".into());
    paths.push("h:4 usr/lib/y".into());
    let t = write(&r, &paths, 100);
    assert_eq!(t.subtrees.len(), 1);
    let ns = namespace(&r, &t.top);
    let x = ns.resolve("/usr/lib/x").unwrap().entry;
    assert_eq!((x.nlink, x.hardlink), (2, 1), "renumbered from 1");
}

#[test]
fn subtrees_nest_and_the_writer_bounds_their_depth() {
    let r = repo();
    // A chain of directories each holding 10 files: with a threshold of 5,
    // every level is a catalog, up to MAX_TREE_NESTING of them.
    let mut paths = Vec::new();
    let mut dir = String::new();
    for level in 0..MAX_TREE_NESTING + 5 {
        dir = if dir.is_empty() {
            "d0".to_owned()
        } else {
            format!("{dir}/d{level}")
        };
        paths.push(format!("d {dir}"));
        for i in 0..10 {
            paths.push(format!("f {dir}/f{i}"));
        }
    }
    let t = write(&r, &paths, 5);
    assert_eq!(t.subtrees.len(), MAX_TREE_NESTING);
    let ns = namespace(&r, &t.top);
    let deepest = ns.resolve(&format!("/{dir}/f3")).unwrap();
    assert_eq!(deepest.nesting, MAX_TREE_NESTING + 1);
    assert_eq!(listing(&ns, &ns.root().unwrap()).len(), paths.len());
}

/// A loader that serves catalogs by any id it is told, as a hostile
/// mirror could if ids were not hashes: the resolver's own bounds.
struct Rigged(HashMap<ObjectId, Rc<Catalog>>);

impl CatalogLoader for Rigged {
    fn load(&self, id: &ObjectId) -> crate::Result<Rc<Catalog>> {
        self.0
            .get(id)
            .cloned()
            .ok_or(crate::Error::MissingObject(*id))
    }
}

/// A subtree catalog with one directory `d` mounting catalog `to`.
fn mounting(tmp: &Path, kind: CatalogKind, to: ObjectId) -> Catalog {
    let mut b =
        CatalogBuilder::create(tmp, kind, "/t", &Entry::new(FileType::Directory, 0o755)).unwrap();
    let mut d = Entry::new(FileType::Directory, 0o755);
    d.name = b"d".to_vec();
    d.nested = Some(to);
    b.insert(ROOT_ID, &d).unwrap();
    let bytes = b.finish().unwrap();
    Catalog::from_bytes(ObjectId::of(&bytes), &bytes).unwrap()
}

#[test]
fn hostile_nesting_self_ancestor_missing_and_deep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let walk = |ns: &Namespace<Rigged>, depth: usize| -> crate::Result<Node> {
        ns.resolve(&"/d".repeat(depth))
    };
    // A catalog that names itself: served under the id it names.
    let me = ObjectId::of(b"me");
    let cat = Rc::new(mounting(t, CatalogKind::Subtree, me));
    let top = ObjectId::of(b"top");
    let flat = Rc::new(mounting(t, CatalogKind::Flat, me));
    let ns = Namespace::new(Rigged(HashMap::from([(me, cat), (top, flat)])), &top).unwrap();
    let err = walk(&ns, 10_000).unwrap_err().to_string();
    assert!(
        err.contains(&format!("more than {MAX_NESTING} deep")),
        "{err}"
    );
    // An ancestor: a subtree mounting the flat tree above it.
    let flat_id = ObjectId::of(b"flat");
    let sub = ObjectId::of(b"sub");
    let ns = Namespace::new(
        Rigged(HashMap::from([
            (flat_id, Rc::new(mounting(t, CatalogKind::Flat, sub))),
            (sub, Rc::new(mounting(t, CatalogKind::Subtree, flat_id))),
        ])),
        &flat_id,
    )
    .unwrap();
    let err = walk(&ns, 2).unwrap_err().to_string();
    assert!(
        err.contains("kind flat cannot be mounted in one of kind subtree"),
        "{err}"
    );
    // A missing id.
    let ns = Namespace::new(
        Rigged(HashMap::from([(
            flat_id,
            Rc::new(mounting(t, CatalogKind::Flat, sub)),
        )])),
        &flat_id,
    )
    .unwrap();
    assert!(matches!(
        walk(&ns, 1),
        Err(crate::Error::MissingObject(id)) if id == sub
    ));
}

#[test]
fn a_chain_of_real_subtree_catalogs_deeper_than_the_limit_is_refused() {
    // Real, hash-named catalogs: each mounts the next, MAX_NESTING + 5 deep.
    let r = repo();
    let mut below: Option<ObjectId> = None;
    for _ in 0..MAX_NESTING + 5 {
        let mut b = CatalogBuilder::create(
            &r.tmp,
            CatalogKind::Subtree,
            "",
            &Entry::new(FileType::Directory, 0o755),
        )
        .unwrap();
        if let Some(id) = below {
            let mut d = Entry::new(FileType::Directory, 0o755);
            d.name = b"d".to_vec();
            d.nested = Some(id);
            b.insert(ROOT_ID, &d).unwrap();
        }
        let mut f = b.finish_file().unwrap();
        below = Some(
            r.store
                .put_file(ObjectKind::Catalog, f.as_file_mut(), 1)
                .unwrap()
                .id,
        );
    }
    let mut b = CatalogBuilder::create(
        &r.tmp,
        CatalogKind::Flat,
        "/flat/ab/x",
        &Entry::new(FileType::Directory, 0o755),
    )
    .unwrap();
    let mut d = Entry::new(FileType::Directory, 0o755);
    d.name = b"d".to_vec();
    d.nested = below;
    b.insert(ROOT_ID, &d).unwrap();
    let mut f = b.finish_file().unwrap();
    let top = r
        .store
        .put_file(ObjectKind::Catalog, f.as_file_mut(), 1)
        .unwrap()
        .id;
    let ns = namespace(&r, &top);
    assert!(ns.resolve(&"/d".repeat(MAX_NESTING - 1)).is_ok());
    let err = ns.resolve(&"/d".repeat(MAX_NESTING + 3)).unwrap_err();
    assert!(
        err.to_string().contains("nested catalogs more than"),
        "{err}"
    );
}

#[test]
fn a_directory_larger_than_a_page_is_copied_whole_and_in_order() {
    let r = repo();
    let paths = image(&[], 2500);
    let whole = write(&r, &paths, usize::MAX);
    let split = write(&r, &paths, 100);
    let sub = r.store.load_catalog(&split.subtrees[0]).unwrap();
    assert_eq!(sub.entry_count().unwrap(), 2501);
    // Breadth-first in name order: lib0000.so is entry 2, lib2499.so 2501.
    assert_eq!(sub.get(2).unwrap().unwrap().name, b"lib0000.so");
    assert_eq!(sub.get(2501).unwrap().unwrap().name, b"lib2499.so");
    let (a, b) = (namespace(&r, &whole.top), namespace(&r, &split.top));
    assert_eq!(
        listing(&a, &a.root().unwrap()),
        listing(&b, &b.root().unwrap())
    );
}

/// Writes `paths` with `rule`, as a flat tree whose entries under `app`
/// come from layer 1 (the rest from layer 0, the root from none) or as a
/// layer tree, and returns what its top mounts at `/app`.
fn app_mount(r: &Repo, paths: &[String], layer: bool, rule: CutRule) -> Option<ObjectId> {
    let b = build(&r.tmp, paths);
    let mut origins = HashMap::new();
    let lower = std::collections::HashSet::new();
    for (i, spec) in paths.iter().enumerate() {
        let path = spec.split_once(' ').unwrap().1;
        // Ids follow insertion order (root = 1).
        let from = u32::from(path == "app" || path.starts_with("app/"));
        origins.insert(i as i64 + 2, from);
    }
    let (kind, origins) = if layer {
        (CatalogKind::Layer, Origins::Layer(&lower))
    } else {
        (CatalogKind::Flat, Origins::Flat(&origins))
    };
    let top = write_tree(b, &r.tmp, kind, "/x", rule, origins, |p| put(r, p))
        .unwrap()
        .top;
    let cat = r.store.load_catalog(&top).unwrap();
    cat.lookup(ROOT_ID, b"app").unwrap().and_then(|e| e.nested)
}

#[test]
fn a_directory_one_layer_writes_is_the_same_catalog_in_its_layer_and_flat_trees() {
    let r = repo();
    let mut app: Vec<String> = vec!["d app".into(), "d app/lib".into()];
    for i in 0..40 {
        app.push(format!("f app/lib/m{i:02}.py"));
    }
    let mut flat = image(&[], 10);
    flat.extend(app.iter().cloned());
    let mut layer: Vec<String> = vec!["d etc".into(), "f etc/hostname".into()];
    layer.extend(app.iter().cloned());
    let rule = CutRule::REFERENCE;
    let in_flat = app_mount(&r, &flat, false, rule);
    let in_layer = app_mount(&r, &layer, true, rule);
    assert!(
        in_flat.is_some(),
        "app/ (42 entries) is cut at the region's edge"
    );
    assert_eq!(in_flat, in_layer);
    // The rule off: app/ is below SUBTREE_MIN_ENTRIES, so stays inline.
    let off = CutRule {
        region_min_entries: usize::MAX,
        ..rule
    };
    assert_eq!(app_mount(&r, &flat, false, off), None);
    assert_eq!(app_mount(&r, &layer, true, off), None);
    // A directory the layers below already have is not the layer's own.
    let b = build(&r.tmp, &layer);
    let app_id = 4; // root 1, etc 2, etc/hostname 3, app 4
    let lower = std::collections::HashSet::from([app_id]);
    let top = write_tree(
        b,
        &r.tmp,
        CatalogKind::Layer,
        "/x",
        rule,
        Origins::Layer(&lower),
        |p| put(&r, p),
    )
    .unwrap()
    .top;
    let cat = r.store.load_catalog(&top).unwrap();
    let app = cat.lookup(ROOT_ID, b"app").unwrap().unwrap();
    assert_eq!(app.nested, None);
    // Nor is a deeper directory cut by this rule: only the top's children.
    let lib = cat.lookup(app.id, b"lib").unwrap().unwrap();
    assert_eq!(lib.nested, None, "app/lib (41 entries) stays inline");
}

/// Writes `paths` as a flat tree under `rule`, the entries under `app`
/// from layer 1 and the others from `base` (none recorded when `None`),
/// and returns its top catalog.
fn flat_top(r: &Repo, paths: &[String], base: Option<u32>, rule: CutRule) -> ObjectId {
    let origin = |path: &str| {
        if path == "app" || path.starts_with("app/") {
            Some(1)
        } else {
            base
        }
    };
    flat_top_with(r, paths, origin, rule)
}

/// Writes `paths` as a flat tree under `rule`, each entry from the layer
/// `origin` gives (`u32::MAX`: no single layer; none recorded: `None`).
fn flat_top_with(
    r: &Repo,
    paths: &[String],
    origin: impl Fn(&str) -> Option<u32>,
    rule: CutRule,
) -> ObjectId {
    let b = build(&r.tmp, paths);
    let mut origins = HashMap::new();
    for (i, spec) in paths.iter().enumerate() {
        // Ids follow insertion order (root = 1).
        if let Some(from) = origin(spec.split_once(' ').unwrap().1) {
            origins.insert(i as i64 + 2, from);
        }
    }
    let flat = Origins::Flat(&origins);
    write_tree(b, &r.tmp, CatalogKind::Flat, "/x", rule, flat, |p| {
        put(r, p)
    })
    .unwrap()
    .top
}

/// (inline files, files stored as content objects) of one catalog; every
/// object holds the file's bytes (here: its name).
fn data_of(r: &Repo, id: &ObjectId) -> (usize, usize) {
    let cat = r.store.load_catalog(id).unwrap();
    let (mut inline, mut objects) = (0, 0);
    cat.for_each_entry(|e| {
        match &e.data {
            crate::catalog::Data::Inline(_) => inline += 1,
            crate::catalog::Data::Object(o) => {
                let bytes = r.store.get(o, ObjectKind::Content).unwrap();
                assert_eq!(bytes, e.name, "the object of {:?}", e.name);
                objects += 1;
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    (inline, objects)
}

#[test]
fn a_flat_catalog_mixing_layers_stores_its_small_files_as_content_objects() {
    let r = repo();
    let mut paths = image(&[], 10);
    paths.extend(["d app".to_string(), "d app/lib".to_string()]);
    for i in 0..40 {
        paths.push(format!("f app/lib/m{i:02}.py"));
    }
    let rule = CutRule::REFERENCE;
    // The top mixes layers 0 and 1 (its mount points usr/ and app/): its
    // file etc/hostname is an object; usr/ (layer 0's) and app/ (layer
    // 1's), cut by D43, keep inlining.
    let top = flat_top(&r, &paths, Some(0), rule);
    assert_eq!(data_of(&r, &top), (0, 1));
    let cat = r.store.load_catalog(&top).unwrap();
    let nested = |name: &[u8]| {
        let e = cat.lookup(ROOT_ID, name).unwrap().unwrap();
        e.nested.expect("cut by D43")
    };
    assert_eq!(data_of(&r, &nested(b"usr")), (50, 0));
    assert_eq!(data_of(&r, &nested(b"app")), (40, 0));
    // Not cut, usr/ is in the mixed top too.
    let uncut = CutRule {
        region_min_entries: usize::MAX,
        ..rule
    };
    assert_eq!(data_of(&r, &flat_top(&r, &paths, Some(0), uncut)), (0, 91));
    // Every catalog inlining, as before D49.
    let always = CutRule {
        inline: InlineRule::Always,
        ..rule
    };
    assert_eq!(data_of(&r, &flat_top(&r, &paths, Some(0), always)), (1, 0));
    // A tree whose entries all come from one layer, with its root and
    // directories recorded by none (implicit), is one layer's: inline.
    let one: Vec<String> = paths
        .iter()
        .filter(|p| !p.contains("app"))
        .cloned()
        .collect();
    assert_eq!(data_of(&r, &flat_top(&r, &one, Some(0), uncut)), (51, 0));
    assert_eq!(data_of(&r, &flat_top(&r, &one, None, uncut)), (51, 0));
    // One entry no single layer wrote as it is (a directory a whiteout
    // was applied in) makes its catalog mixed.
    let b = build(&r.tmp, &one);
    let mut origins: HashMap<i64, u32> = (2..=one.len() as i64 + 1).map(|i| (i, 0)).collect();
    origins.insert(2, u32::MAX); // etc
    let flat = Origins::Flat(&origins);
    let top = write_tree(b, &r.tmp, CatalogKind::Flat, "/x", uncut, flat, |p| {
        put(&r, p)
    })
    .unwrap()
    .top;
    assert_eq!(data_of(&r, &top), (0, 51));
}

#[test]
fn a_nested_catalog_keeps_inlining_unless_a_whiteout_changed_it() {
    let r = repo();
    // usr/lib (301 entries) is cut by size; it mixes layers 0 and 1.
    let paths = image(&[], 300);
    let lib_of = |top: &ObjectId| {
        let cat = r.store.load_catalog(top).unwrap();
        let usr = cat.lookup(ROOT_ID, b"usr").unwrap().unwrap();
        let lib = cat.lookup(usr.id, b"lib").unwrap().unwrap();
        lib.nested.expect("usr/lib is cut")
    };
    let rule = CutRule {
        region_min_entries: usize::MAX,
        ..CutRule::REFERENCE
    };
    let mixed = |p: &str| Some(u32::from(p == "usr/lib/lib0007.so"));
    // Shared by every image on the same layers: inline.
    let top = flat_top_with(&r, &paths, mixed, rule);
    assert_eq!(data_of(&r, &lib_of(&top)), (300, 0));
    // The top's own entries (etc/, usr/bin, the mount point) are all
    // layer 0's: it inlines its 41 files.
    assert_eq!(data_of(&r, &top), (41, 0));
    // Changed by a whiteout: the image's own, objects.
    let whiteout = |p: &str| {
        if p == "usr/lib" {
            Some(u32::MAX)
        } else {
            Some(0)
        }
    };
    let top = flat_top_with(&r, &paths, whiteout, rule);
    assert_eq!(data_of(&r, &lib_of(&top)), (0, 300));
    // InlineRule::OneLayer makes every catalog mixing layers objects.
    let one_layer = CutRule {
        inline: InlineRule::OneLayer,
        ..rule
    };
    let top = flat_top_with(&r, &paths, mixed, one_layer);
    assert_eq!(data_of(&r, &lib_of(&top)), (0, 300));
}
