//! Copy-on-write of the namespace above the image trees: the 256-way
//! partitions of `/layers` and `/flat`, the `/images` catalog and the root.
//! A publish rewrites only the partitions it touched, `/images` and `/`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Entry, FileType, ImageRecord, RetiredImage,
    RevisionTag, ROOT_ID,
};
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::names::ImageName;
use crate::objects::ObjectWriter;

/// One of `/layers` and `/flat`: partitions named by the first two hex
/// digits, each a catalog of `<hex>` mount points.
struct Area {
    name: &'static str,
    old: BTreeMap<String, ObjectId>,
    loaded: HashMap<String, Catalog>,
    added: BTreeMap<String, BTreeMap<String, ObjectId>>,
    /// Trees dropped by garbage collection, by partition.
    removed: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Area {
    fn new(name: &'static str) -> Self {
        Area {
            name,
            old: BTreeMap::new(),
            loaded: HashMap::new(),
            added: BTreeMap::new(),
            removed: BTreeMap::new(),
        }
    }

    fn load(name: &'static str, root: &Catalog) -> Result<Self> {
        let mut area = Area::new(name);
        if let Some(dir) = root.lookup(ROOT_ID, name.as_bytes())? {
            for p in root.children(dir.id)? {
                let id = p.nested.ok_or_else(|| {
                    invalid(&format!(
                        "/{name}/{} is not a partition catalog",
                        String::from_utf8_lossy(&p.name)
                    ))
                })?;
                area.old
                    .insert(String::from_utf8_lossy(&p.name).into_owned(), id);
            }
        }
        Ok(area)
    }

    /// The catalog id of tree `<hex>`, if published (or added by this publish).
    fn get(&mut self, store: &Store, hex: &str) -> Result<Option<ObjectId>> {
        let part = &hex[..2];
        if let Some(id) = self.added.get(part).and_then(|m| m.get(hex)) {
            return Ok(Some(*id));
        }
        let Some(pid) = self.old.get(part) else {
            return Ok(None);
        };
        if !self.loaded.contains_key(part) {
            self.loaded
                .insert(part.to_owned(), store.load_catalog(pid)?);
        }
        let cat = &self.loaded[part];
        Ok(cat.lookup(ROOT_ID, hex.as_bytes())?.and_then(|e| e.nested))
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
        ts: u64,
    ) -> Result<BTreeMap<String, ObjectId>> {
        let mut out = self.old.clone();
        let empty_added = BTreeMap::new();
        let empty_removed = std::collections::BTreeSet::new();
        let touched: std::collections::BTreeSet<&String> =
            self.added.keys().chain(self.removed.keys()).collect();
        for part in touched {
            let added = self.added.get(part).unwrap_or(&empty_added);
            let removed = self.removed.get(part).unwrap_or(&empty_removed);
            let path = format!("/{}/{part}", self.name);
            let mut b = CatalogBuilder::create(tmp, CatalogKind::Partition, &path, &dir_entry(ts))?;
            if let Some(pid) = self.old.get(part) {
                if !self.loaded.contains_key(part) {
                    self.loaded.insert(part.clone(), store.load_catalog(pid)?);
                }
                for e in self.loaded[part].children(ROOT_ID)? {
                    let name = String::from_utf8_lossy(&e.name);
                    if !added.contains_key(name.as_ref()) && !removed.contains(name.as_ref()) {
                        b.insert(ROOT_ID, &e)?;
                    }
                }
            }
            for (hex, id) in added {
                let mut e = dir_entry(ts);
                e.name = hex.as_bytes().to_vec();
                e.nested = Some(*id);
                b.insert(ROOT_ID, &e)?;
            }
            let id = objects.put(ObjectKind::Catalog, &b.finish()?)?;
            out.insert(part.clone(), id);
        }
        Ok(out)
    }
}

fn invalid(reason: &str) -> PublishError {
    PublishError::Repo {
        repo: "namespace".into(),
        reason: reason.to_owned(),
    }
}

fn dir_entry(ts: u64) -> Entry {
    let mut e = Entry::new(FileType::Directory, 0o755);
    e.mtime = i64::try_from(ts).unwrap_or(0);
    e
}

/// The namespace of the revision being prepared.
pub struct NamespaceWriter {
    tmp: PathBuf,
    ts: u64,
    layers: Area,
    flat: Area,
    images: BTreeMap<String, ImageRecord>,
    /// By (name, manifest digest).
    retired: BTreeMap<(String, String), RetiredImage>,
    tags: BTreeMap<String, RevisionTag>,
}

impl NamespaceWriter {
    pub fn empty(tmp: PathBuf, ts: u64) -> Self {
        NamespaceWriter {
            tmp,
            ts,
            layers: Area::new("layers"),
            flat: Area::new("flat"),
            images: BTreeMap::new(),
            retired: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Starts from the namespace whose root catalog is `root`.
    pub fn load(store: &Store, root: &ObjectId, tmp: PathBuf, ts: u64) -> Result<Self> {
        let root = store.load_catalog(root)?;
        let mut w = NamespaceWriter::empty(tmp, ts);
        w.layers = Area::load("layers", &root)?;
        w.flat = Area::load("flat", &root)?;
        if let Some(images) = root.lookup(ROOT_ID, b"images")? {
            let id = images
                .nested
                .ok_or_else(|| invalid("/images is not a catalog"))?;
            let cat = store.load_catalog(&id)?;
            for r in cat.images()? {
                w.images.insert(r.name.clone(), r);
            }
            for r in cat.retired_images()? {
                w.retired
                    .insert((r.name.clone(), r.manifest_digest.clone()), r);
            }
            for t in cat.revision_tags()? {
                w.tags.insert(t.name.clone(), t);
            }
        }
        Ok(w)
    }

    pub fn layer(&mut self, store: &Store, diff_hex: &str) -> Result<Option<ObjectId>> {
        self.layers.get(store, diff_hex)
    }

    pub fn add_layer(&mut self, diff_hex: &str, catalog: ObjectId) {
        self.layers.add(diff_hex, catalog)
    }

    pub fn flat(&mut self, store: &Store, manifest_hex: &str) -> Result<Option<ObjectId>> {
        self.flat.get(store, manifest_hex)
    }

    pub fn add_flat(&mut self, manifest_hex: &str, catalog: ObjectId) {
        self.flat.add(manifest_hex, catalog)
    }

    pub fn image(&self, name: &str) -> Option<&ImageRecord> {
        self.images.get(name)
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    /// Points `record.name` at `record`. The image the name pointed to
    /// before, if another, is retired as `replaced`; a retired entry for
    /// this very image is dropped (it is wanted again).
    pub fn set_image(&mut self, record: ImageRecord) {
        self.retired
            .remove(&(record.name.clone(), record.manifest_digest.clone()));
        if let Some(old) = self.images.insert(record.name.clone(), record) {
            let new_digest = &self.images[&old.name].manifest_digest;
            if &old.manifest_digest != new_digest {
                self.retire_record(&old, "replaced");
            }
        }
    }

    /// Unlinks `name` from `/images`, recording when it stopped being
    /// wanted; `false` if no image had that name.
    pub fn remove_image(&mut self, name: &str) -> bool {
        match self.images.remove(name) {
            Some(old) => {
                self.retire_record(&old, "removed");
                true
            }
            None => false,
        }
    }

    pub fn retired(&self) -> impl Iterator<Item = &RetiredImage> {
        self.retired.values()
    }

    /// Forgets a retired image (its grace period is over).
    pub fn drop_retired(&mut self, name: &str, manifest_digest: &str) -> Option<RetiredImage> {
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
        self.tags.insert(tag.name.clone(), tag);
    }

    pub fn remove_tag(&mut self, name: &str) -> bool {
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
        let layers = self.layers.write(store, objects, &self.tmp, self.ts)?;
        let flat = self.flat.write(store, objects, &self.tmp, self.ts)?;
        let images = self.write_images(objects)?;
        let mut root =
            CatalogBuilder::create(&self.tmp, CatalogKind::Root, "/", &dir_entry(self.ts))?;
        for (name, parts) in [("flat", &flat), ("layers", &layers)] {
            let mut d = dir_entry(self.ts);
            d.name = name.as_bytes().to_vec();
            let dir = root.insert(ROOT_ID, &d)?;
            for (part, id) in parts {
                let mut e = dir_entry(self.ts);
                e.name = part.as_bytes().to_vec();
                e.nested = Some(*id);
                root.insert(dir, &e)?;
            }
        }
        let mut e = dir_entry(self.ts);
        e.name = b"images".to_vec();
        e.nested = Some(images);
        root.insert(ROOT_ID, &e)?;
        Ok(objects.put(ObjectKind::Catalog, &root.finish()?)?)
    }

    /// `/images`: `<repository>/<tag>` symlinks to the flat trees, and the
    /// image metadata tables.
    fn write_images(&self, objects: &mut ObjectWriter) -> Result<ObjectId> {
        let mut b = CatalogBuilder::create(
            &self.tmp,
            CatalogKind::Images,
            "/images",
            &dir_entry(self.ts),
        )?;
        let mut dirs: HashMap<Vec<Vec<u8>>, i64> = HashMap::new();
        for r in self.images.values() {
            let name = ImageName::parse(&r.name)?;
            let comps = name.components();
            let (tag, repo) = comps
                .split_last()
                .ok_or_else(|| invalid("empty image name"))?;
            let mut parent = ROOT_ID;
            for i in 0..repo.len() {
                let key = repo[..=i].to_vec();
                parent = match dirs.get(&key) {
                    Some(id) => *id,
                    None => {
                        if b.lookup(parent, &repo[i])?.is_some() {
                            return Err(PublishError::InvalidName {
                                name: r.name.clone(),
                                reason: "a part of the name is already the tag of another image"
                                    .into(),
                            });
                        }
                        let mut d = dir_entry(self.ts);
                        d.name = repo[i].clone();
                        let id = b.insert(parent, &d)?;
                        dirs.insert(key, id);
                        id
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
            b.add_image(r)?;
        }
        for r in self.retired.values() {
            b.add_retired(r)?;
        }
        for t in self.tags.values() {
            b.add_tag(t)?;
        }
        Ok(objects.put(ObjectKind::Catalog, &b.finish()?)?)
    }
}
