//! The publish transaction: ingest every named image, then write the
//! namespace above them and sign one new revision.
//!
//! Order of writes (each step only adds files; the manifest is replaced
//! last): content objects → layer catalogs → flat catalogs → partition,
//! `/images` and root catalogs → one durability barrier → manifest object →
//! `.stratum/manifest`. A crash anywhere before the last step leaves the
//! previous revision as it was; what was written is garbage for `gc`.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use stratum_catalog::catalog::nesting::{
    write_tree, CutRule, InlineRule, Origins, TreeObject, REGION_MIN_ENTRIES, SUBTREE_MIN_ENTRIES,
};
use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Entry, FileType, ImageLayerRecord, ImageRecord,
};
use stratum_catalog::manifest::Manifest;
use stratum_catalog::ObjectKind;

use crate::error::{PublishError, Result};
use crate::flat::{apply_layer, lower_dirs};
use crate::ingest::{ingest_layer_tree, layer_path, LayerContext};
use crate::limits::Limits;
use crate::names::ImageName;
use crate::namespace_writer::NamespaceWriter;
use crate::objects::ObjectWriter;
pub use crate::prefetch::PrefetchReport;
use crate::repo::{now, RepoLock, Repository};
use crate::source::{self, ImageSource, SourceContext, SourceRef};

/// One image to publish: a source spec and, optionally, the name to
/// publish it under.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub source: String,
    pub name: Option<String>,
    /// Extra outputs added to the flat tree.
    pub outputs: Outputs,
}

/// Extra outputs of a flat tree (none by default: the flat tree is then
/// exactly the merged layers, as `umoci unpack` extracts them). They belong
/// to the flat tree of a manifest digest, so every name of that digest
/// shows the outputs its latest publish asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// `/.singularity.d` and friends ([`crate::apptainer`]).
    pub apptainer: bool,
}

impl Outputs {
    /// The names recorded in image records (sorted).
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.apptainer {
            v.push(crate::apptainer::OUTPUT.to_owned());
        }
        v
    }

    /// From recorded names (unknown names are ignored).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        Outputs {
            apptainer: names.iter().any(|n| n.as_ref() == crate::apptainer::OUTPUT),
        }
    }
}

/// What happened to one image (the `--json` report of `stratum publish`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImageReport {
    pub name: String,
    pub manifest_digest: String,
    /// `published`, or `unchanged` when the name already pointed at this
    /// manifest digest.
    pub status: String,
    /// `os/arch[/variant]` of the image.
    pub platform: String,
    pub layers_ingested: u64,
    pub layers_skipped: u64,
    /// Layer trees merged into the flat tree: a layer listed again right
    /// after itself is merged once (0 when the flat tree already existed).
    pub layers_merged: u64,
    pub files: u64,
    pub bytes: u64,
    /// Compressed bytes of the layers read from the source.
    pub downloaded_bytes: u64,
    pub new_objects: u64,
    pub new_stored_bytes: u64,
    pub seconds: f64,
    /// The prefetch list stored with this name by this publish, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<PrefetchReport>,
}

/// A recorded prefetch list to store with a published image (FORMAT.md
/// §5.6): `publish --prefetch NAME:TAG=FILE`, or a wishlist's `prefetch`.
#[derive(Clone, Debug)]
pub struct PrefetchRequest {
    /// The image name with its tag, published by this publish or before.
    pub name: String,
    /// The list's text (see `stratum_catalog::prefetch_list`).
    pub list: Vec<u8>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PublishOutcome {
    /// The revision now current (unchanged when nothing changed).
    pub revision: u64,
    pub new_revision: bool,
    pub images: Vec<ImageReport>,
}

/// Progress events for a front end (progress bars); called from the
/// ingesting threads.
pub trait Progress: Sync {
    fn layer_start(&self, image: &str, index: usize, count: usize, uncompressed_hint: u64);
    fn bytes(&self, n: u64);
    fn layer_done(&self);
}

pub struct NoProgress;
impl Progress for NoProgress {
    fn layer_start(&self, _: &str, _: usize, _: usize, _: u64) {}
    fn bytes(&self, _: u64) {}
    fn layer_done(&self) {}
}

/// Publishes `requests`, then stores the `prefetch` lists with their
/// images, as one new signed revision of `repo`.
pub fn publish(
    repo: &Repository,
    key: &SigningKey,
    requests: &[PublishRequest],
    prefetch: &[PrefetchRequest],
    ctx: &SourceContext,
    progress: &dyn Progress,
) -> Result<PublishOutcome> {
    let mut tx = Transaction::begin(repo, key)?;
    tx.set_limits(ctx.limits);
    let mut reports = Vec::new();
    for req in requests {
        let spec = SourceRef::parse(&req.source)?;
        if let (SourceRef::Registry { reference }, Some(registry)) = (&spec, &ctx.registry) {
            // Resolved first: an image already published under another name
            // is linked without downloading anything.
            for rm in source::registry::resolve(registry, reference, &req.source, &ctx.platforms)? {
                let base = req.name.clone().unwrap_or_else(|| rm.default_name.clone());
                let names = source::image_names(&base, rm.placement.as_ref());
                let digest = rm.digest.to_string();
                if let Some(r) = tx.publish_existing(&names, &digest, &req.source, &req.outputs)? {
                    reports.extend(r);
                    continue;
                }
                let src = source::registry::open(registry, &rm, &req.source, &ctx.platforms)?;
                reports.extend(tx.publish_source(&src, &base, &req.outputs, progress)?);
            }
            continue;
        }
        for src in source::open_all(&spec, &req.source, ctx)? {
            let base = match &req.name {
                Some(n) => n.clone(),
                None => src.image().default_name.clone(),
            };
            reports.extend(tx.publish_source(src.as_ref(), &base, &req.outputs, progress)?);
        }
    }
    for p in prefetch {
        let stored = tx.set_prefetch(&p.name, &p.list)?;
        match reports.iter_mut().rev().find(|r| r.name == p.name) {
            Some(r) => r.prefetch = Some(stored),
            None => {
                let record = tx.image(&p.name)?;
                reports.push(ImageReport {
                    name: p.name.clone(),
                    manifest_digest: record
                        .as_ref()
                        .map(|r| r.manifest_digest.to_string())
                        .unwrap_or_default(),
                    status: "unchanged".into(),
                    platform: record.map(|r| r.platform).unwrap_or_default(),
                    prefetch: Some(stored),
                    ..Default::default()
                });
            }
        }
    }
    let (revision, new_revision) = tx.commit(key)?;
    Ok(PublishOutcome {
        revision,
        new_revision,
        images: reports,
    })
}

/// One revision in the making: the repository is locked from [`begin`] to
/// [`commit`] (or drop, which publishes nothing). Images are published into
/// it one by one; a failed image leaves only unreferenced objects behind
/// (garbage), so a caller may go on with the next one.
///
/// [`begin`]: Transaction::begin
/// [`commit`]: Transaction::commit
pub struct Transaction<'r> {
    repo: &'r Repository,
    /// Always `Some` until [`Transaction::commit_holding`] hands it out.
    lock: Option<RepoLock>,
    current: Manifest,
    current_id: stratum_catalog::ObjectId,
    ns: NamespaceWriter,
    objects: ObjectWriter,
    ts: u64,
    changed: bool,
    done: bool,
    limits: Limits,
}

impl Drop for Transaction<'_> {
    /// A transaction given up (an error, a dry run) publishes nothing; what
    /// it wrote is garbage. Once that garbage is durable the repository is
    /// clean again, so the next writer need not re-verify objects.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let durable = self.objects.flush().is_ok() && self.repo.store().backend().sync().is_ok();
        if let (true, Some(lock)) = (durable, &self.lock) {
            let _ = lock.mark_clean();
        }
    }
}

impl<'r> Transaction<'r> {
    /// Locks `repo` (waiting for another writer) and loads its namespace.
    pub fn begin(repo: &'r Repository, key: &SigningKey) -> Result<Self> {
        let lock = repo.lock()?;
        let store = repo.store();
        let (current, current_id) =
            store
                .manifest(&key.verifying_key())
                .map_err(|e| PublishError::Repo {
                    repo: repo.dir().display().to_string(),
                    reason: format!("{e} (is --key the key this repository was created with?)"),
                })?;
        let ts = now().max(current.timestamp);
        let ns = NamespaceWriter::load(store, &current.root, repo.tmp_dir(), ts)?;
        let mut objects = ObjectWriter::new(store.clone())?;
        objects.verify_existing(lock.recovering);
        Ok(Transaction {
            repo,
            lock: Some(lock),
            current,
            current_id,
            ns,
            objects,
            ts,
            changed: false,
            done: false,
            limits: Limits::default(),
        })
    }

    /// The limits every layer ingested from now on must keep to.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The revision this transaction started from.
    pub fn base_revision(&self) -> u64 {
        self.current.revision
    }

    /// The image published under `name` (as of now in this transaction).
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        self.ns.image(name)
    }

    /// Every image (reads the whole `/images` catalog).
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.ns.images()
    }

    /// Unlinks `name` from `/images`; its trees stay until garbage
    /// collection. `false` when there was no such image.
    pub fn remove_image(&mut self, name: &str) -> Result<bool> {
        let removed = self.ns.remove_image(name)?;
        self.changed |= removed;
        Ok(removed)
    }

    /// Publishes one resolved image under `base` (and, for one platform of
    /// a multi-platform index, its per-platform name): one report per name.
    pub fn publish_source(
        &mut self,
        src: &dyn ImageSource,
        base: &str,
        outputs: &Outputs,
        progress: &dyn Progress,
    ) -> Result<Vec<ImageReport>> {
        let names = src.image().names(base);
        let mut reports = Vec::new();
        for name in names {
            let report = publish_image(
                self.repo,
                &mut self.ns,
                &mut self.objects,
                src,
                &name,
                self.ts,
                &self.limits,
                outputs,
                progress,
            )?;
            self.changed |= report.status != "unchanged";
            reports.push(report);
        }
        Ok(reports)
    }

    /// Points `names` at an image already published (under another name)
    /// with manifest `digest`, without reading its source: nothing is
    /// downloaded. `None` when no published image has that manifest with
    /// these `outputs` (its flat tree must then be rebuilt).
    pub fn publish_existing(
        &mut self,
        names: &[String],
        digest: &str,
        source: &str,
        outputs: &Outputs,
    ) -> Result<Option<Vec<ImageReport>>> {
        let Some(existing) = self.ns.image_by_digest(digest)? else {
            return Ok(None);
        };
        if existing.outputs != outputs.names() {
            return Ok(None);
        }
        let mut reports = Vec::new();
        for name in names {
            let name = ImageName::parse(name)?.to_string();
            let mut report = ImageReport {
                name: name.clone(),
                manifest_digest: digest.to_owned(),
                status: "published".into(),
                platform: existing.platform.clone(),
                layers_skipped: existing.layers.len() as u64,
                ..Default::default()
            };
            if self
                .ns
                .image(&name)?
                .is_some_and(|r| r.manifest_digest == digest && r.outputs == existing.outputs)
            {
                report.status = "unchanged".into();
            } else {
                let mut record = existing.clone();
                record.name = name;
                record.source = source.to_owned();
                record.published_at = published_at(self.ts);
                self.ns.set_image(record)?;
                self.changed = true;
            }
            reports.push(report);
        }
        Ok(Some(reports))
    }

    /// Stores `list` (the text of a prefetch list, FORMAT.md §5.6) as the
    /// prefetch list of the published image `name`: paths that are not
    /// files with content in its flat tree are dropped and reported, a
    /// list over the format's limits is refused. Setting the list it
    /// already has changes nothing.
    pub fn set_prefetch(&mut self, name: &str, list: &[u8]) -> Result<PrefetchReport> {
        let (record, report) =
            crate::prefetch::store_list(self.repo, &self.ns, &mut self.objects, name, list)?;
        if let Some(record) = record {
            self.ns.set_image(record)?;
            self.changed = true;
        }
        Ok(report)
    }

    /// Signs and publishes the new revision if anything changed; returns
    /// the current revision and whether it is new.
    pub fn commit(self, key: &SigningKey) -> Result<(u64, bool)> {
        let (revision, new, _lock) = self.commit_holding(key)?;
        Ok((revision, new))
    }

    /// [`Transaction::commit`], keeping the repository locked until the
    /// returned lock is dropped (garbage collection sweeps under it).
    pub fn commit_holding(mut self, key: &SigningKey) -> Result<(u64, bool, RepoLock)> {
        self.done = true;
        let lock = self.lock.take().ok_or_else(|| PublishError::Repo {
            repo: self.repo.dir().display().to_string(),
            reason: "internal: transaction without its lock".into(),
        })?;
        let store = self.repo.store();
        if !self.changed {
            self.objects.flush()?;
            store.backend().sync()?;
            lock.mark_clean()?;
            return Ok((self.current.revision, false, lock));
        }
        let ns = std::mem::replace(
            &mut self.ns,
            NamespaceWriter::empty(self.repo.tmp_dir(), self.ts),
        );
        let root = ns.write(store, &mut self.objects)?;
        if self.current.version < stratum_catalog::FORMAT_VERSION {
            // Readers of version 2 read version-1 catalogs, so the upgrade
            // is this one signed revision: its manifest says 2; the catalogs
            // it keeps stay as they are (FORMAT.md §12).
            tracing::info!(
                target: stratum_catalog::NOTICE,
                "repository {} is in format version {}: this revision (revision {}) upgrades it \
                 to format version {}; stratum releases that read only version {} cannot read it \
                 any more (they refuse it, naming the version)",
                self.current.name,
                self.current.version,
                self.current.revision + 1,
                stratum_catalog::FORMAT_VERSION,
                self.current.version,
            );
        }
        let manifest = Manifest::new(
            &self.current.name,
            self.current.revision + 1,
            self.ts,
            root,
            Some(self.current_id),
        )?;
        self.objects.flush()?;
        self.repo.commit(&manifest, key)?;
        lock.mark_clean()?;
        Ok((manifest.revision, true, lock))
    }

    /// The namespace being prepared, for lifecycle operations (garbage
    /// collection, tags, rollback); `changed` marks the revision as new.
    pub(crate) fn namespace_mut(&mut self) -> &mut NamespaceWriter {
        self.changed = true;
        &mut self.ns
    }

    pub(crate) fn namespace(&self) -> &NamespaceWriter {
        &self.ns
    }

    /// The manifest this transaction started from, and its object id.
    pub fn base(&self) -> (&Manifest, stratum_catalog::ObjectId) {
        (&self.current, self.current_id)
    }

    /// The timestamp the new revision will carry.
    pub fn timestamp(&self) -> u64 {
        self.ts
    }
}

#[allow(clippy::too_many_arguments)]
fn publish_image(
    repo: &Repository,
    ns: &mut NamespaceWriter,
    objects: &mut ObjectWriter,
    src: &dyn ImageSource,
    name: &str,
    ts: u64,
    limits: &Limits,
    outputs: &Outputs,
    progress: &dyn Progress,
) -> Result<ImageReport> {
    let started = Instant::now();
    let store = repo.store().clone();
    let image = src.image();
    let name = ImageName::parse(name)?.to_string();
    let manifest_hex = image.manifest_digest.hex();
    let mut report = ImageReport {
        name: name.clone(),
        manifest_digest: image.manifest_digest.to_string(),
        status: "published".into(),
        platform: image.platform.clone(),
        ..Default::default()
    };
    let wanted_outputs = outputs.names();
    if ns
        .image(&name)?
        .is_some_and(|r| r.manifest_digest == report.manifest_digest && r.outputs == wanted_outputs)
    {
        report.status = "unchanged".into();
        report.layers_skipped = image.layers.len() as u64;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if image.layers.len() > limits.max_layers {
        return Err(PublishError::Image {
            image: name,
            reason: format!(
                "the image has {} layers, more than the limit of {} (--max-layers)",
                image.layers.len(),
                limits.max_layers
            ),
        });
    }
    objects.flush()?;
    let before = objects.stats();
    let mut layer_records = Vec::new();
    // An image whose manifest is already published (under another name)
    // needs no work beyond its name, unless its flat tree has other outputs:
    // then it is built again from the layer catalogs (no content is read).
    let had_flat = ns.flat(&store, &manifest_hex)?;
    let existing_flat = match had_flat {
        Some(id) if flat_outputs(&store.load_catalog(&id)?)? == wanted_outputs => Some(id),
        _ => None,
    };
    let mut flat = match existing_flat {
        Some(_) => None,
        None => {
            let mut root = Entry::new(FileType::Directory, 0o755);
            root.mtime = 0;
            let path = format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]);
            let mut b = CatalogBuilder::create(&repo.tmp_dir(), CatalogKind::Flat, &path, &root)?;
            b.set_property("manifest_digest", &report.manifest_digest)?;
            Some(b)
        }
    };
    // Layers already in the repository are never read from the source;
    // tell it which ones it will be asked for so it can fetch ahead.
    let mut needed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for layer in &image.layers {
        if ns.layer(&store, &layer.diff_id.hex())?.is_none() && seen.insert(layer.diff_id) {
            needed.push(layer.clone());
        }
    }
    src.prepare(&needed, &repo.tmp_dir());
    let rule = cut_rule();
    // Which layer each flat entry comes from unchanged (the cut rule).
    let mut origins = std::collections::HashMap::new();
    let mut previous = None;
    for layer in &image.layers {
        let diff_hex = layer.diff_id.hex();
        let (catalog_id, ingested) = match ns.layer(&store, &diff_hex)? {
            Some(id) => {
                report.layers_skipped += 1;
                (id, None)
            }
            None => {
                progress.layer_start(&name, layer.index, image.layers.len(), layer.size);
                let stream = src.open_layer(layer)?;
                let ctx = LayerContext {
                    image: &name,
                    layer,
                    tmp_dir: &repo.tmp_dir(),
                    lower: flat.as_ref(),
                };
                let on_bytes = |n| progress.bytes(n);
                let (tree, stats) = ingest_layer_tree(&ctx, limits, stream, objects, &on_bytes)?;
                progress.layer_done();
                report.layers_ingested += 1;
                report.files += stats.files;
                report.bytes += stats.bytes;
                report.downloaded_bytes += layer.size;
                // Cut by the same rule as flat trees, so that a directory
                // the flat tree takes unchanged from this layer (an image's
                // own `app/`) is one catalog in both (DECISIONS D43).
                let lower = match flat.as_ref() {
                    Some(f) => lower_dirs(&tree, f)?,
                    None => Default::default(),
                };
                let written = write_tree(
                    tree,
                    &repo.tmp_dir(),
                    CatalogKind::Layer,
                    &layer_path(&diff_hex),
                    rule,
                    Origins::Layer(&lower),
                    |p| put(objects, p),
                )?;
                let id = written.top;
                ns.add_layer(&diff_hex, id);
                (id, Some(store.load_catalog(&id)?))
            }
        };
        // Extracting a layer again right after itself changes nothing: what
        // it whites out is gone, what it adds is there with its metadata,
        // its opaque directories hold only its own entries, its hardlinks
        // to lower files are joined already. So a run of one layer is
        // merged once (an image listing one layer 100 times took 100
        // merges). A layer repeated after another (A, B, A) is merged
        // again: B may have changed what A sets.
        let repeat = previous == Some(layer.diff_id);
        previous = Some(layer.diff_id);
        if let (Some(flat), false) = (flat.as_mut(), repeat) {
            report.layers_merged += 1;
            let cat = match ingested {
                Some(cat) => cat,
                None => {
                    // It may have been ingested moments ago (a repeated
                    // layer): let its object reach the store first.
                    objects.flush()?;
                    store.load_catalog(&catalog_id)?
                }
            };
            let index = u32::try_from(layer.index).unwrap_or(u32::MAX - 1);
            apply_layer(flat, &mut origins, &cat, index, &mut |id| {
                store.load_catalog(id)
            })?;
        }
        layer_records.push(ImageLayerRecord {
            digest: layer.digest,
            diff_id: layer.diff_id,
            media_type: layer.media_type.clone(),
            size: layer.size,
            layer_path: layer_path(&diff_hex),
            catalog: catalog_id.to_hex(),
        });
    }
    let flat_id = match (existing_flat, flat) {
        (Some(id), _) => id,
        (None, Some(mut b)) => {
            if outputs.apptainer {
                let config =
                    crate::apptainer::ImageConfig::parse(&image.config).map_err(|reason| {
                        PublishError::Image {
                            image: name.clone(),
                            reason,
                        }
                    })?;
                crate::apptainer::add_to_flat(&mut b, objects, &config)?;
            }
            // The flat tree as a Merkle tree of catalogs: what it shares
            // with other images (its base's subtrees) is stored once.
            let path = format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]);
            let tree = write_tree(
                b,
                &repo.tmp_dir(),
                CatalogKind::Flat,
                &path,
                rule,
                Origins::Flat(&origins),
                |p| put(objects, p),
            )?;
            ns.add_flat(&manifest_hex, tree.top);
            tree.top
        }
        (None, None) => unreachable_flat(&name)?,
    };
    // A list recorded for this digest under this name still describes it.
    let prefetch = ns
        .image(&name)?
        .filter(|r| r.manifest_digest == image.manifest_digest)
        .and_then(|r| r.prefetch);
    ns.set_image(ImageRecord {
        name: name.clone(),
        manifest_digest: image.manifest_digest,
        config_digest: image.config_digest,
        platform: image.platform.clone(),
        source: image.source.clone(),
        published_at: published_at(ts),
        flat_path: format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]),
        flat_catalog: flat_id.to_hex(),
        manifest: image.manifest.clone(),
        config: image.config.clone(),
        layers: layer_records,
        outputs: wanted_outputs.clone(),
        prefetch,
    })?;
    // Other names of this manifest share its flat tree: when it was
    // rebuilt with other outputs, they follow it.
    let others = match (had_flat, existing_flat) {
        (Some(_), None) => ns.images()?,
        _ => Vec::new(),
    };
    for mut other in others {
        if other.name != name
            && other.manifest_digest == image.manifest_digest
            && (other.flat_catalog != flat_id.to_hex() || other.outputs != wanted_outputs)
        {
            other.flat_catalog = flat_id.to_hex();
            other.outputs = wanted_outputs.clone();
            ns.set_image(other)?;
        }
    }
    objects.flush()?;
    let after = objects.stats();
    report.new_objects = after.new_objects - before.new_objects;
    report.new_stored_bytes = after.new_stored_bytes - before.new_stored_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Stores what `write_tree` writes: catalogs, and the small files a flat
/// tree's catalog does not inline (D49) as content objects.
fn put(
    objects: &mut ObjectWriter,
    p: TreeObject<'_>,
) -> stratum_catalog::Result<stratum_catalog::ObjectId> {
    match p {
        TreeObject::Catalog(f) => objects.put_file(ObjectKind::Catalog, f),
        TreeObject::Content(bytes) => objects.put_owned(ObjectKind::Content, bytes),
    }
}

/// The cut rule of flat and layer trees: [`CutRule::REFERENCE`], or for
/// measurements (bench/nesting.sh, bench/scale.sh) its thresholds from
/// `STRATUM_SUBTREE_MIN_ENTRIES` and `STRATUM_REGION_MIN_ENTRIES`
/// (numbers; `0` turns the rule off: `STRATUM_SUBTREE_MIN_ENTRIES=0`
/// writes every tree as one catalog, as format version 1 did) and its
/// inline rule from `STRATUM_FLAT_INLINE` (`always`: every catalog
/// inlines, as before D49; `one-layer`: every catalog mixing layers
/// does not). With every tree one catalog and no `STRATUM_FLAT_INLINE`,
/// trees inline as version 1 did, so that the two layouts compare.
fn cut_rule() -> CutRule {
    let var = |name: &str, default: usize| match std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => default,
    };
    let min_entries = var("STRATUM_SUBTREE_MIN_ENTRIES", SUBTREE_MIN_ENTRIES);
    CutRule {
        min_entries,
        region_min_entries: var("STRATUM_REGION_MIN_ENTRIES", REGION_MIN_ENTRIES),
        inline: match std::env::var("STRATUM_FLAT_INLINE").as_deref() {
            Ok("always") => InlineRule::Always,
            Ok("one-layer") => InlineRule::OneLayer,
            _ if min_entries == usize::MAX => CutRule::WHOLE.inline,
            _ => CutRule::REFERENCE.inline,
        },
    }
}

/// The publish time an image record carries: `SOURCE_DATE_EPOCH` when set
/// (reproducible builds: the same images published into two fresh
/// repositories then give byte-identical catalogs and the same root), else
/// the revision's time `ts`. It is the only time in a catalog that a
/// publish writes (DECISIONS D45).
fn published_at(ts: u64) -> i64 {
    let ts = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(ts);
    i64::try_from(ts).unwrap_or(0)
}

/// The outputs a flat catalog carries (its `outputs` property), sorted.
fn flat_outputs(cat: &Catalog) -> Result<Vec<String>> {
    let mut v: Vec<String> = cat
        .property(crate::apptainer::PROP_OUTPUTS)?
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    Ok(v)
}

fn unreachable_flat(name: &str) -> Result<stratum_catalog::ObjectId> {
    Err(PublishError::Image {
        image: name.to_owned(),
        reason: "internal: no flat tree was built".into(),
    })
}
