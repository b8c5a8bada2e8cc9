//! Copy-on-write of the namespace above the image trees: the 256-way
//! partitions of `/layers` and `/flat`, the `/images` catalog and the root.
//! A publish rewrites only the partitions it touched, `/images` and `/`.
//!
//! Image records live in the `/flat/ab` partition of their flat tree
//! (FORMAT.md §5.3, `stratum_catalog::image_index`), so a publish rewrites the
//! records of one partition, not of every image; `/images` keeps only the
//! name symlinks and the lifecycle tables.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Entry, FileType, ImageRecord, RetiredImage, RevisionTag,
    ROOT_ID,
};
use stratum_catalog::image_index::flat_hex_of;
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::names::ImageName;
use crate::objects::ObjectWriter;

/// One of `/layers` and `/flat`: partitions named by the first two hex
/// digits, each a catalog of `<hex>` mount points.
struct Area {
    name: &'static str,
    old: BTreeMap<String, ObjectId>,
    loaded: RefCell<HashMap<String, Rc<Catalog>>>,
    added: BTreeMap<String, BTreeMap<String, ObjectId>>,
    /// Trees dropped by garbage collection, by partition.
    removed: BTreeMap<String, BTreeSet<String>>,
    /// Image records (only in `/flat`) set by this revision, by partition
    /// and name; they replace any old record of the same name there.
    records_added: BTreeMap<String, BTreeMap<String, ImageRecord>>,
    /// Names whose old record leaves the partition.
    records_removed: BTreeMap<String, BTreeSet<String>>,
}

impl Area {
    fn new(name: &'static str) -> Self {
        Area {
            name,
            old: BTreeMap::new(),
            loaded: RefCell::new(HashMap::new()),
            added: BTreeMap::new(),
            removed: BTreeMap::new(),
            records_added: BTreeMap::new(),
            records_removed: BTreeMap::new(),
        }
    }

    fn load(name: &'static str, root: &Catalog) -> Result<Self> {
        let mut area = Area::new(name);
        if let Some(dir) = root.lookup(ROOT_ID, name.as_bytes())? {
            let parts = root.mount_points(dir.id)?;
            if parts.len() != root.child_count(dir.id)? {
                return Err(invalid(&format!(
                    "/{name} holds entries that are not partition catalogs"
                )));
            }
            for (part, id) in parts {
                area.old
                    .insert(String::from_utf8_lossy(&part).into_owned(), id);
            }
        }
        Ok(area)
    }

    /// The previous revision's catalog of partition `part`, if it had one.
    fn old_partition(&self, store: &Store, part: &str) -> Result<Option<Rc<Catalog>>> {
        let Some(pid) = self.old.get(part) else {
            return Ok(None);
        };
        if let Some(c) = self.loaded.borrow().get(part) {
            return Ok(Some(c.clone()));
        }
        let c = Rc::new(store.load_catalog(pid)?);
        self.loaded.borrow_mut().insert(part.to_owned(), c.clone());
        Ok(Some(c))
    }

    /// The catalog id of tree `<hex>`, if published (or added by this publish).
    fn get(&self, store: &Store, hex: &str) -> Result<Option<ObjectId>> {
        let part = &hex[..2];
        if let Some(id) = self.added.get(part).and_then(|m| m.get(hex)) {
            return Ok(Some(*id));
        }
        let Some(cat) = self.old_partition(store, part)? else {
            return Ok(None);
        };
        Ok(cat.lookup(ROOT_ID, hex.as_bytes())?.and_then(|e| e.nested))
    }

    fn add_record(&mut self, r: &ImageRecord) {
        self.records_added
            .entry(record_part(r).to_owned())
            .or_default()
            .insert(r.name.clone(), r.clone());
    }

    fn remove_record(&mut self, r: &ImageRecord) {
        let part = record_part(r).to_owned();
        if let Some(m) = self.records_added.get_mut(&part) {
            m.remove(&r.name);
        }
        self.records_removed
            .entry(part)
            .or_default()
            .insert(r.name.clone());
    }

    fn remove(&mut self, hex: &str) {
        if let Some(m) = self.added.get_mut(&hex[..2]) {
            m.remove(hex);
        }
        self.removed
            .entry(hex[..2].to_owned())
            .or_default()
            .insert(hex.to_owned());
    }

    fn add(&mut self, hex: &str, id: ObjectId) {
        if let Some(m) = self.removed.get_mut(&hex[..2]) {
            m.remove(hex);
        }
        self.added
            .entry(hex[..2].to_owned())
            .or_default()
            .insert(hex.to_owned(), id);
    }

    /// Writes the touched partitions; returns every partition's id.
    fn write(
        &mut self,
        store: &Store,
        objects: &mut ObjectWriter,
        tmp: &std::path::Path,
    ) -> Result<BTreeMap<String, ObjectId>> {
        let mut out = self.old.clone();
        let empty_added = BTreeMap::new();
        let empty_removed = BTreeSet::new();
        let empty_records = BTreeMap::new();
        let touched: BTreeSet<&String> = self
            .added
            .keys()
            .chain(self.removed.keys())
            .chain(self.records_added.keys())
            .chain(self.records_removed.keys())
            .collect();
        for part in touched {
            let added = self.added.get(part).unwrap_or(&empty_added);
            let removed = self.removed.get(part).unwrap_or(&empty_removed);
            let records = self.records_added.get(part).unwrap_or(&empty_records);
            let records_removed = self.records_removed.get(part).unwrap_or(&empty_removed);
            let path = format!("/{}/{part}", self.name);
            // Updated in place: a partition of a large repository holds the
            // records of many images, and a publish changes one or two.
            let mut b = match self.old_partition(store, part)? {
                Some(old) => {
                    let mut b = CatalogBuilder::from_bytes(tmp, &old.to_bytes()?, &path)?;
                    for hex in removed.iter().chain(added.keys()) {
                        if let Some(e) = b.lookup(ROOT_ID, hex.as_bytes())? {
                            b.remove(e.id)?;
                        }
                    }
                    for name in records_removed.iter().chain(records.keys()) {
                        b.remove_image(name)?;
                    }
                    b
                }
                None => CatalogBuilder::create(tmp, CatalogKind::Partition, &path, &dir_entry())?,
            };
            for (hex, id) in added {
                let mut e = dir_entry();
                e.name = hex.as_bytes().to_vec();
                e.nested = Some(*id);
                b.insert(ROOT_ID, &e)?;
            }
            for r in records.values() {
                b.add_image(r)?;
            }
            let id = objects.put(ObjectKind::Catalog, &b.finish()?)?;
            out.insert(part.clone(), id);
        }
        Ok(out)
    }
}

/// The `/flat` partition that holds `r`: that of its flat tree.
fn record_part(r: &ImageRecord) -> &str {
    let hex = r.flat_path.rsplit('/').next().unwrap_or_default();
    hex.get(..2).unwrap_or("00")
}

fn invalid(reason: &str) -> PublishError {
    PublishError::Repo {
        repo: "namespace".into(),
        reason: reason.to_owned(),
    }
}

/// A directory of the namespace (root, `/flat`, partitions, `/images`
/// and the mount points in them). Its mtime is 0: catalogs carry no time
/// of their own (the revision's is in the signed manifest), so the same
/// images published into two fresh repositories give the same root
/// catalog (FORMAT.md §5.1).
fn dir_entry() -> Entry {
    let mut e = Entry::new(FileType::Directory, 0o755);
    e.mtime = 0;
    e
}

/// The namespace of the revision being prepared.
pub struct NamespaceWriter {
    store: Option<Store>,
    tmp: PathBuf,
    ts: u64,
    layers: Area,
    flat: Area,
    /// The `/images` catalog of the revision loaded (id, bytes, reader);
    /// image records are read on demand through its symlinks, never all at
    /// once on the publish path.
    images_old: Option<(ObjectId, Vec<u8>, Catalog)>,
    /// The root catalog's bytes: the next root is this one updated.
    root_old: Option<Vec<u8>>,
    /// Records the loaded `/images` catalog itself still held (a repository
    /// written before records moved to the partitions): this revision moves
    /// them.
    legacy_records: Vec<String>,
    /// Names set (`Some`) or removed (`None`) by this revision.
    images_delta: BTreeMap<String, Option<ImageRecord>>,
    /// Whether `/images` needs a new catalog (records, retired or tags).
    images_dirty: bool,
    /// By (name, manifest digest).
    retired: BTreeMap<(String, String), RetiredImage>,
    tags: BTreeMap<String, RevisionTag>,
}

impl NamespaceWriter {
    pub fn empty(tmp: PathBuf, ts: u64) -> Self {
        NamespaceWriter {
            store: None,
            tmp,
            ts,
            layers: Area::new("layers"),
            flat: Area::new("flat"),
            images_old: None,
            root_old: None,
            legacy_records: Vec::new(),
            images_delta: BTreeMap::new(),
            images_dirty: false,
            retired: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Starts from the namespace whose root catalog is `root`.
    pub fn load(store: &Store, root: &ObjectId, tmp: PathBuf, ts: u64) -> Result<Self> {
        let started = std::time::Instant::now();
        let root_bytes = store.get(root, ObjectKind::Catalog)?;
        let root = Catalog::from_bytes(*root, &root_bytes)?;
        let mut w = NamespaceWriter::empty(tmp, ts);
        w.store = Some(store.clone());
        w.root_old = Some(root_bytes);
        w.layers = Area::load("layers", &root)?;
        w.flat = Area::load("flat", &root)?;
        if let Some(images) = root.lookup(ROOT_ID, b"images")? {
            let id = images
                .nested
                .ok_or_else(|| invalid("/images is not a catalog"))?;
            let bytes = store.get(&id, ObjectKind::Catalog)?;
            let cat = Catalog::from_bytes(id, &bytes)?;
            for r in cat.retired_images()? {
                w.retired
                    .insert((r.name.clone(), r.manifest_digest.clone()), r);
            }
            for t in cat.revision_tags()? {
                w.tags.insert(t.name.clone(), t);
            }
            if cat.has_image_records()? {
                for r in cat.images()? {
                    w.flat.add_record(&r);
                    w.legacy_records.push(r.name);
                }
                w.images_dirty = true;
            }
            w.images_old = Some((id, bytes, cat));
        }
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            layer_partitions = w.layers.old.len(),
            flat_partitions = w.flat.old.len(),
            "namespace loaded"
        );
        Ok(w)
    }

    pub fn layer(&self, store: &Store, diff_hex: &str) -> Result<Option<ObjectId>> {
        self.layers.get(store, diff_hex)
    }

    pub fn add_layer(&mut self, diff_hex: &str, catalog: ObjectId) {
        self.layers.add(diff_hex, catalog)
    }

    pub fn flat(&self, store: &Store, manifest_hex: &str) -> Result<Option<ObjectId>> {
        self.flat.get(store, manifest_hex)
    }

    pub fn add_flat(&mut self, manifest_hex: &str, catalog: ObjectId) {
        self.flat.add(manifest_hex, catalog)
    }

    /// The image published under `name` (as of this revision so far).
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        if let Some(change) = self.images_delta.get(name) {
            return Ok(change.clone());
        }
        let (Some((_, _, images)), Some(store)) = (&self.images_old, &self.store) else {
            return Ok(None);
        };
        let Some(hex) = flat_hex_of(images, name)? else {
            return Ok(None);
        };
        let part = &hex[..2];
        if let Some(r) = self.flat.records_added.get(part).and_then(|m| m.get(name)) {
            return Ok(Some(r.clone()));
        }
        if let Some(cat) = self.flat.old_partition(store, part)? {
            if let Some(r) = cat.image(name)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// An image (any name) whose manifest digest is `digest`.
    pub fn image_by_digest(&self, digest: &str) -> Result<Option<ImageRecord>> {
        if let Some(r) = self
            .images_delta
            .values()
            .flatten()
            .find(|r| r.manifest_digest == digest)
        {
            return Ok(Some(r.clone()));
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let Some(part) = hex.get(..2) else {
            return Ok(None);
        };
        // Records of the partition, with this revision's changes applied.
        let mut candidates: Vec<ImageRecord> = self
            .flat
            .records_added
            .get(part)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        if let Some(store) = &self.store {
            if let Some(cat) = self.flat.old_partition(store, part)? {
                candidates.extend(cat.images()?);
            }
        }
        for r in candidates {
            if r.manifest_digest == digest && self.image(&r.name)?.as_ref() == Some(&r) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Every image, by name (reads every `/flat` partition: for sync,
    /// garbage collection and rollback, not for a publish).
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut all: BTreeMap<String, ImageRecord> = BTreeMap::new();
        if let Some(store) = &self.store {
            for part in self.flat.old.keys() {
                if let Some(cat) = self.flat.old_partition(store, part)? {
                    for r in cat.images()? {
                        all.insert(r.name.clone(), r);
                    }
                }
            }
        }
        for part in self.flat.records_added.values() {
            for r in part.values() {
                all.insert(r.name.clone(), r.clone());
            }
        }
        for (part, names) in &self.flat.records_removed {
            for name in names {
                let added_here = self
                    .flat
                    .records_added
                    .get(part)
                    .is_some_and(|m| m.contains_key(name));
                if !added_here && all.get(name).is_some_and(|r| record_part(r) == part) {
                    all.remove(name);
                }
            }
        }
        Ok(all.into_values().collect())
    }

    /// Points `record.name` at `record`. The image the name pointed to
    /// before, if another, is retired as `replaced`; a retired entry for
    /// this very image is dropped (it is wanted again).
    pub fn set_image(&mut self, record: ImageRecord) -> Result<()> {
        self.images_dirty = true;
        self.retired
            .remove(&(record.name.clone(), record.manifest_digest.to_string()));
        if let Some(old) = self.image(&record.name)? {
            if old.manifest_digest != record.manifest_digest {
                self.retire_record(&old, "replaced");
            }
            self.flat.remove_record(&old);
        }
        self.flat.add_record(&record);
        self.images_delta.insert(record.name.clone(), Some(record));
        Ok(())
    }

    /// Unlinks `name` from `/images`, recording when it stopped being
    /// wanted; `false` if no image had that name.
    pub fn remove_image(&mut self, name: &str) -> Result<bool> {
        match self.image(name)? {
            Some(old) => {
                self.images_dirty = true;
                self.retire_record(&old, "removed");
                self.flat.remove_record(&old);
                self.images_delta.insert(name.to_owned(), None);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn retired(&self) -> impl Iterator<Item = &RetiredImage> {
        self.retired.values()
    }

    /// Forgets a retired image (its grace period is over).
    pub fn drop_retired(&mut self, name: &str, manifest_digest: &str) -> Option<RetiredImage> {
        self.images_dirty = true;
        self.retired
            .remove(&(name.to_owned(), manifest_digest.to_owned()))
    }

    /// Removes the flat tree of manifest `hex` from `/flat`.
    pub fn remove_flat(&mut self, manifest_hex: &str) {
        self.flat.remove(manifest_hex)
    }

    /// Removes the layer tree of diff_id `hex` from `/layers`.
    pub fn remove_layer(&mut self, diff_hex: &str) {
        self.layers.remove(diff_hex)
    }

    pub fn tags(&self) -> impl Iterator<Item = &RevisionTag> {
        self.tags.values()
    }

    pub fn set_tag(&mut self, tag: RevisionTag) {
        self.images_dirty = true;
        self.tags.insert(tag.name.clone(), tag);
    }

    pub fn remove_tag(&mut self, name: &str) -> bool {
        self.images_dirty = true;
        self.tags.remove(name).is_some()
    }

    fn retire_record(&mut self, old: &ImageRecord, reason: &str) {
        let at = i64::try_from(self.ts).unwrap_or(i64::MAX);
        let r = RetiredImage::from_record(old, at, reason);
        self.retired
            .insert((r.name.clone(), r.manifest_digest.clone()), r);
    }

    /// Writes the changed catalogs bottom-up; returns the new root catalog id.
    pub fn write(mut self, store: &Store, objects: &mut ObjectWriter) -> Result<ObjectId> {
        let t = std::time::Instant::now();
        let layers = self.layers.write(store, objects, &self.tmp)?;
        let t_layers = t.elapsed().as_secs_f64();
        let flat = self.flat.write(store, objects, &self.tmp)?;
        let t_flat = t.elapsed().as_secs_f64();
        let images = self.write_images(objects)?;
        let t_images = t.elapsed().as_secs_f64();
        let root = self.write_root(&layers, &flat, images)?;
        let id = objects.put(ObjectKind::Catalog, &root)?;
        tracing::debug!(
            layers = t_layers,
            flat = t_flat - t_layers,
            images = t_images - t_flat,
            root = t.elapsed().as_secs_f64() - t_images,
            "namespace written (seconds per part)"
        );
        Ok(id)
    }

    /// The root catalog: `/flat` and `/layers` with their partition mount
    /// points, and the `/images` mount point. Updated from the previous root
    /// (only the partitions this revision rewrote change), or built.
    fn write_root(
        &self,
        layers: &BTreeMap<String, ObjectId>,
        flat: &BTreeMap<String, ObjectId>,
        images: ObjectId,
    ) -> Result<Vec<u8>> {
        let mut root = match &self.root_old {
            Some(bytes) => CatalogBuilder::from_bytes(&self.tmp, bytes, "/")?,
            None => CatalogBuilder::create(&self.tmp, CatalogKind::Root, "/", &dir_entry())?,
        };
        for (name, parts, area) in [("flat", flat, &self.flat), ("layers", layers, &self.layers)] {
            let dir = match root.lookup(ROOT_ID, name.as_bytes())? {
                Some(d) if d.is_dir() => d.id,
                Some(_) => return Err(invalid(&format!("/{name} is not a directory"))),
                None => {
                    let mut d = dir_entry();
                    d.name = name.as_bytes().to_vec();
                    root.insert(ROOT_ID, &d)?
                }
            };
            for (part, id) in parts {
                if area.old.get(part) == Some(id) {
                    continue;
                }
                let mut e = dir_entry();
                e.name = part.as_bytes().to_vec();
                e.nested = Some(*id);
                match root.lookup(dir, part.as_bytes())? {
                    Some(old) => root.update(old.id, &e)?,
                    None => {
                        root.insert(dir, &e)?;
                    }
                }
            }
        }
        let mut e = dir_entry();
        e.name = b"images".to_vec();
        e.nested = Some(images);
        match root.lookup(ROOT_ID, b"images")? {
            Some(old) => root.update(old.id, &e)?,
            None => {
                root.insert(ROOT_ID, &e)?;
            }
        }
        Ok(root.finish()?)
    }

    /// `/images`: `<repository>/<tag>` symlinks to the flat trees, and the
    /// image metadata tables. Updated from the previous catalog (only the
    /// names this revision changed are touched), or built when there is none.
    fn write_images(&self, objects: &mut ObjectWriter) -> Result<ObjectId> {
        let mut b = match &self.images_old {
            Some((id, _, _)) if !self.images_dirty => return Ok(*id),
            Some((_, bytes, _)) => CatalogBuilder::from_bytes(&self.tmp, bytes, "/images")?,
            None => {
                CatalogBuilder::create(&self.tmp, CatalogKind::Images, "/images", &dir_entry())?
            }
        };
        // The records themselves are in the `/flat` partitions now.
        for name in &self.legacy_records {
            b.remove_image(name)?;
        }
        // Removals first, so that a name may become a directory and back.
        if let Some((_, _, old)) = &self.images_old {
            for name in self.images_delta.keys() {
                if flat_hex_of(old, name)?.is_some() {
                    unlink(&mut b, name)?;
                }
            }
        }
        for r in self.images_delta.values().flatten() {
            self.link(&mut b, r)?;
        }
        b.clear_lifecycle_tables()?;
        for r in self.retired.values() {
            b.add_retired(r)?;
        }
        for t in self.tags.values() {
            b.add_tag(t)?;
        }
        Ok(objects.put(ObjectKind::Catalog, &b.finish()?)?)
    }

    /// Adds the `<repository>/<tag>` symlink of `r`, creating directories.
    fn link(&self, b: &mut CatalogBuilder, r: &ImageRecord) -> Result<()> {
        let name = ImageName::parse(&r.name)?;
        let comps = name.components();
        let (tag, repo) = comps
            .split_last()
            .ok_or_else(|| invalid("empty image name"))?;
        let mut parent = ROOT_ID;
        for comp in repo {
            parent = match b.lookup(parent, comp)? {
                Some(e) if e.is_dir() => e.id,
                Some(_) => {
                    return Err(PublishError::InvalidName {
                        name: r.name.clone(),
                        reason: "a part of the name is already the tag of another image".into(),
                    })
                }
                None => {
                    let mut d = dir_entry();
                    d.name = comp.clone();
                    b.insert(parent, &d)?
                }
            };
        }
        if b.lookup(parent, tag)?.is_some() {
            return Err(PublishError::InvalidName {
                name: r.name.clone(),
                reason: "the tag is already a directory of other image names".into(),
            });
        }
        // Relative, so it resolves inside any mount point.
        let target = format!(
            "{}{}",
            "../".repeat(repo.len() + 1),
            r.flat_path.trim_start_matches('/')
        );
        let mut link = Entry::new(FileType::Symlink, 0o777);
        link.name = tag.clone();
        link.size = target.len() as u64;
        link.symlink = Some(target.into_bytes());
        link.mtime = r.published_at;
        b.insert(parent, &link)?;
        Ok(())
    }
}

/// Removes the symlink of image `name` and the directories it leaves empty.
fn unlink(b: &mut CatalogBuilder, name: &str) -> Result<()> {
    let parsed = ImageName::parse(name)?;
    let comps = parsed.components();
    let mut chain = vec![ROOT_ID];
    for comp in &comps {
        let parent = chain.last().copied().unwrap_or(ROOT_ID);
        match b.lookup(parent, comp)? {
            Some(e) => chain.push(e.id),
            None => return Ok(()),
        }
    }
    // Leaf first, then each directory that became empty (never the root).
    while chain.len() > 1 {
        let id = chain.pop().unwrap_or(ROOT_ID);
        let is_leaf = chain.len() == comps.len();
        // Counted, not listed: a repository directory may hold every tag.
        if !is_leaf && b.child_count(id)? > 0 {
            break;
        }
        b.remove(id)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "namespace_writer_tests.rs"]
mod tests;
