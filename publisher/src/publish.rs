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
use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Entry, FileType, ImageLayerRecord, ImageRecord,
};
use stratum_catalog::manifest::Manifest;
use stratum_catalog::ObjectKind;

use crate::error::{PublishError, Result};
use crate::flat::apply_layer;
use crate::ingest::{ingest_layer, layer_path, LayerContext};
use crate::names::ImageName;
use crate::namespace_writer::NamespaceWriter;
use crate::objects::ObjectWriter;
use crate::repo::{now, Repository};
use crate::source::{self, SourceRef};

/// One image to publish: a source spec and, optionally, the name to
/// publish it under.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub source: String,
    pub name: Option<String>,
}

/// What happened to one image (the `--json` report of `stratum publish`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImageReport {
    pub name: String,
    pub manifest_digest: String,
    /// `published`, or `unchanged` when the name already pointed at this
    /// manifest digest.
    pub status: String,
    pub layers_ingested: u64,
    pub layers_skipped: u64,
    pub files: u64,
    pub bytes: u64,
    pub new_objects: u64,
    pub new_stored_bytes: u64,
    pub seconds: f64,
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

/// Publishes `requests` as one new signed revision of `repo`.
pub fn publish(
    repo: &Repository,
    key: &SigningKey,
    requests: &[PublishRequest],
    progress: &dyn Progress,
) -> Result<PublishOutcome> {
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
    let mut ns = NamespaceWriter::load(store, &current.root, repo.tmp_dir(), ts)?;
    let mut objects = ObjectWriter::new(store.clone())?;
    objects.verify_existing(lock.recovering);
    let mut reports = Vec::new();
    let mut changed = false;
    for req in requests {
        let report = publish_image(repo, &mut ns, &mut objects, req, ts, progress)?;
        changed |= report.status != "unchanged";
        reports.push(report);
    }
    if !changed {
        store.backend().sync()?;
        lock.mark_clean()?;
        return Ok(PublishOutcome {
            revision: current.revision,
            new_revision: false,
            images: reports,
        });
    }
    let root = ns.write(store, &mut objects)?;
    let manifest = Manifest::new(
        &current.name,
        current.revision + 1,
        ts,
        root,
        Some(current_id),
    )?;
    objects.flush()?;
    repo.commit(&manifest, key)?;
    lock.mark_clean()?;
    Ok(PublishOutcome {
        revision: manifest.revision,
        new_revision: true,
        images: reports,
    })
}

fn publish_image(
    repo: &Repository,
    ns: &mut NamespaceWriter,
    objects: &mut ObjectWriter,
    req: &PublishRequest,
    ts: u64,
    progress: &dyn Progress,
) -> Result<ImageReport> {
    let started = Instant::now();
    let store = repo.store().clone();
    let spec = SourceRef::parse(&req.source)?;
    let src = source::open(&spec, &req.source)?;
    let image = src.image();
    let name = ImageName::parse(req.name.as_deref().unwrap_or(&image.default_name))?.to_string();
    let manifest_hex = image.manifest_digest.hex();
    let mut report = ImageReport {
        name: name.clone(),
        manifest_digest: image.manifest_digest.to_string(),
        status: "published".into(),
        ..Default::default()
    };
    if ns
        .image(&name)
        .is_some_and(|r| r.manifest_digest == report.manifest_digest)
    {
        report.status = "unchanged".into();
        report.layers_skipped = image.layers.len() as u64;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    objects.flush()?;
    let before = objects.stats();
    let mut layer_records = Vec::new();
    // An image whose manifest is already published (under another name)
    // needs no work beyond its name.
    let existing_flat = ns.flat(&store, &manifest_hex)?;
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
                let (mut file, stats) = ingest_layer(&ctx, stream, objects, &on_bytes)?;
                progress.layer_done();
                report.layers_ingested += 1;
                report.files += stats.files;
                report.bytes += stats.bytes;
                // Stored and reopened from its file, streaming: a layer of
                // many small files has a large catalog.
                let id = objects.put_file(ObjectKind::Catalog, file.as_file_mut())?;
                let catalog = Catalog::open_path(id, file.path())?;
                ns.add_layer(&diff_hex, id);
                (id, Some((catalog, file)))
            }
        };
        if let Some(flat) = flat.as_mut() {
            match ingested {
                Some((cat, _file)) => apply_layer(flat, &cat)?,
                None => {
                    // It may have been ingested moments ago (a repeated
                    // layer): let its object reach the store first.
                    objects.flush()?;
                    apply_layer(flat, &store.load_catalog(&catalog_id)?)?
                }
            }
        }
        layer_records.push(ImageLayerRecord {
            digest: layer.digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            layer_path: layer_path(&diff_hex),
            catalog: catalog_id.to_hex(),
        });
    }
    let flat_id = match (existing_flat, flat) {
        (Some(id), _) => id,
        (None, Some(b)) => {
            let id = objects.put_file(ObjectKind::Catalog, b.finish_file()?.as_file_mut())?;
            ns.add_flat(&manifest_hex, id);
            id
        }
        (None, None) => unreachable_flat(&name)?,
    };
    ns.set_image(ImageRecord {
        name: name.clone(),
        manifest_digest: report.manifest_digest.clone(),
        config_digest: image.config_digest.to_string(),
        platform: image.platform.clone(),
        source: req.source.clone(),
        published_at: i64::try_from(ts).unwrap_or(0),
        flat_path: format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]),
        flat_catalog: flat_id.to_hex(),
        manifest: image.manifest.clone(),
        config: image.config.clone(),
        layers: layer_records,
    });
    objects.flush()?;
    let after = objects.stats();
    report.new_objects = after.new_objects - before.new_objects;
    report.new_stored_bytes = after.new_stored_bytes - before.new_stored_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn unreachable_flat(name: &str) -> Result<stratum_catalog::ObjectId> {
    Err(PublishError::Image {
        image: name.to_owned(),
        reason: "internal: no flat tree was built".into(),
    })
}
