//! The `docker://HOST[:PORT]/REPO[:TAG|@sha256:…]` source: an image in an
//! OCI registry, read through [`stratum_registry::Registry`].
//!
//! [`open_all`] resolves the reference to one image per selected platform:
//! a plain manifest is one image; an index (OCI or Docker manifest list) is
//! filtered by the [`PlatformSelection`], nesting at most
//! [`MAX_INDEX_DEPTH`] levels. Every manifest is fetched by digest and
//! checked against it and against its descriptor's size; configs likewise.
//!
//! Layers: the publisher tells [`ImageSource::prepare`] which layers it
//! still needs (the others are never downloaded). The first one streams
//! straight from the socket into ingestion when it is opened; the rest
//! download in the background, a few at a time, into temp files in the
//! repository's tmp dir, so the network works while the cores ingest. A
//! spooled download that failed is retried by streaming when its turn comes.
//! Every layer is verified (size, sha256, diff_id) by its [`LayerStream`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use stratum_registry::{Platform, Reference, Registry};
use tracing::{debug, warn};

use super::digest::Digest;
use super::error::SourceError;
use super::spec::{self, Kind};
use super::{
    check_layer, ImageSource, LayerDescriptor, LayerStream, PlatformPlacement, ResolvedImage,
};

/// How many image indexes may nest.
pub const MAX_INDEX_DEPTH: usize = 4;
/// Layers downloaded at the same time in the background.
pub const PARALLEL_DOWNLOADS: usize = 3;

/// Which platforms of an index to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PlatformSelection {
    /// The host's platform (a single-platform image is taken whatever its
    /// platform).
    #[default]
    Host,
    /// These platforms; each must be in the index.
    List(Vec<Platform>),
    /// Every platform the index lists (attestations excluded).
    All,
}

/// One image a reference resolves to, known by its manifest digest before
/// anything else is fetched (so an unchanged image costs one request).
#[derive(Clone, Debug)]
pub struct ResolvedManifest {
    /// The reference pinned to this manifest's digest.
    pub reference: Reference,
    pub digest: Digest,
    /// Set when one of several platforms of an index.
    pub placement: Option<PlatformPlacement>,
    /// The platform the index declares for it (`None` for a plain manifest:
    /// its config tells, once opened).
    pub platform: Option<Platform>,
    /// The default `NAME:TAG` to publish under.
    pub default_name: String,
    size: u64,
    /// The manifest bytes, when the reference named the manifest itself.
    bytes: Option<Vec<u8>>,
}

/// Resolves `reference` to one manifest per selected platform, fetching
/// only the manifest or index it names (and nested indexes).
pub fn resolve(
    registry: &Arc<Registry>,
    reference: &Reference,
    original: &str,
    platforms: &PlatformSelection,
) -> Result<Vec<ResolvedManifest>, SourceError> {
    let raw = registry.manifest(reference)?;
    let kind = spec::kind_of(&raw.media_type).or_else(|| guess_kind(&raw.bytes));
    let default_name = default_name(reference);
    match kind {
        Some(Kind::Manifest) => Ok(vec![ResolvedManifest {
            reference: reference.with_digest(&raw.digest),
            digest: Digest::of(&raw.bytes),
            placement: None,
            platform: None,
            default_name,
            size: raw.bytes.len() as u64,
            bytes: Some(raw.bytes),
        }]),
        Some(Kind::Index) => {
            let mut entries = Vec::new();
            let mut seen = HashSet::new();
            collect_index(
                registry,
                reference,
                original,
                &raw.digest,
                &raw.bytes,
                0,
                &mut seen,
                &mut entries,
            )?;
            let what = format!("image index {}", raw.digest);
            let chosen = choose(original, &what, &entries, platforms)?;
            let primary = primary_of(&chosen);
            let many = chosen.len() > 1;
            Ok(chosen
                .iter()
                .enumerate()
                .map(|(i, e)| ResolvedManifest {
                    reference: reference.with_digest(&e.digest.to_string()),
                    digest: e.digest,
                    placement: many.then(|| PlatformPlacement {
                        slug: e.platform.slug(),
                        primary: i == primary,
                    }),
                    platform: Some(e.platform.clone()),
                    default_name: default_name.clone(),
                    size: e.size,
                    bytes: None,
                })
                .collect())
        }
        None => Err(SourceError::UnsupportedMediaType {
            image: original.to_owned(),
            what: format!("manifest {}", raw.digest),
            media_type: raw.media_type,
        }),
    }
}

/// Opens a resolved manifest: fetches it (if needed) and its config, and
/// checks a plain manifest's platform against an explicit selection.
pub fn open(
    registry: &Arc<Registry>,
    resolved: &ResolvedManifest,
    original: &str,
    platforms: &PlatformSelection,
) -> Result<RegistrySource, SourceError> {
    let bytes = match &resolved.bytes {
        Some(b) => b.clone(),
        None => {
            let m = registry.manifest(&resolved.reference)?;
            if m.bytes.len() as u64 != resolved.size {
                return Err(SourceError::SizeMismatch {
                    image: original.to_owned(),
                    what: format!("manifest {}", resolved.digest),
                    expected: resolved.size,
                    actual: m.bytes.len() as u64,
                });
            }
            m.bytes
        }
    };
    let mut src = RegistrySource::from_manifest(
        registry,
        &resolved.reference,
        original,
        bytes,
        resolved.placement.clone(),
    )?;
    src.image.default_name = resolved.default_name.clone();
    if let (None, PlatformSelection::List(wanted)) = (&resolved.platform, platforms) {
        let have: Platform = src.image.platform.parse().map_err(SourceError::from)?;
        if !wanted.iter().any(|w| w.matches(&have)) {
            return Err(SourceError::PlatformNotFound {
                image: original.to_owned(),
                index: format!("manifest {}", resolved.digest),
                wanted: join(wanted),
                available: vec![src.image.platform.clone()],
            });
        }
    }
    Ok(src)
}

/// Resolves `reference` and opens every selected image.
pub fn open_all(
    registry: &Arc<Registry>,
    reference: &Reference,
    original: &str,
    platforms: &PlatformSelection,
) -> Result<Vec<RegistrySource>, SourceError> {
    resolve(registry, reference, original, platforms)?
        .iter()
        .map(|r| open(registry, r, original, platforms))
        .collect()
}

/// `HOST[:PORT]/REPO:TAG` (a digest-only reference gets the tag
/// `sha256-<first 12 hex digits>`), lowercased where a name must be.
fn default_name(r: &Reference) -> String {
    let tag = match (r.tag(), r.digest()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(d)) => format!(
            "sha256-{}",
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        ),
        (None, None) => "latest".to_owned(),
    };
    format!(
        "{}/{}:{tag}",
        r.registry().to_ascii_lowercase(),
        r.repository()
    )
}

fn guess_kind(bytes: &[u8]) -> Option<Kind> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if v.get("manifests").is_some() {
        Some(Kind::Index)
    } else if v.get("config").is_some() {
        Some(Kind::Manifest)
    } else {
        None
    }
}

/// One image manifest an index lists, for a platform.
pub(crate) struct IndexEntry {
    pub digest: Digest,
    pub size: u64,
    pub platform: Platform,
}

#[allow(clippy::too_many_arguments)]
fn collect_index(
    registry: &Arc<Registry>,
    reference: &Reference,
    original: &str,
    digest: &str,
    bytes: &[u8],
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<IndexEntry>,
) -> Result<(), SourceError> {
    if depth >= MAX_INDEX_DEPTH || !seen.insert(digest.to_owned()) {
        return Err(SourceError::IndexNesting {
            image: original.to_owned(),
            digest: Digest::of(bytes),
            reason: format!("indexes loop or nest deeper than {MAX_INDEX_DEPTH} levels"),
        });
    }
    let what = format!("image index {digest}");
    let index = spec::parse_index(original, &what, bytes)?;
    for d in &index.manifests {
        let mt = d.media_type.as_deref().unwrap_or_default();
        match spec::kind_of(mt) {
            Some(Kind::Manifest) => {
                let Some(p) = &d.platform else { continue };
                // Build attestations (buildkit) are listed as unknown/unknown.
                if p.os == "unknown" || p.architecture == "unknown" {
                    continue;
                }
                out.push(IndexEntry {
                    digest: d.digest,
                    size: d.size,
                    platform: Platform::new(&p.os, &p.architecture, p.variant.as_deref()),
                });
            }
            Some(Kind::Index) => {
                let nested = reference.with_digest(&d.digest.to_string());
                let raw = registry.manifest(&nested)?;
                collect_index(
                    registry,
                    reference,
                    original,
                    &raw.digest,
                    &raw.bytes,
                    depth + 1,
                    seen,
                    out,
                )?;
            }
            None => debug!(
                image = original,
                media_type = mt,
                "skipping an index entry of unknown type"
            ),
        }
    }
    Ok(())
}

/// The entries of the index `what` that `sel` selects (for registries and
/// OCI layouts alike).
pub(crate) fn choose<'a>(
    original: &str,
    what: &str,
    entries: &'a [IndexEntry],
    sel: &PlatformSelection,
) -> Result<Vec<&'a IndexEntry>, SourceError> {
    let not_found = |wanted: String| SourceError::PlatformNotFound {
        image: original.to_owned(),
        index: what.to_owned(),
        wanted,
        available: entries.iter().map(|e| e.platform.to_string()).collect(),
    };
    let first_match = |p: &Platform| entries.iter().find(|e| p.matches(&e.platform));
    match sel {
        PlatformSelection::Host => {
            let host = Platform::host();
            first_match(&host)
                .map(|e| vec![e])
                .ok_or_else(|| not_found(host.to_string()))
        }
        PlatformSelection::List(list) => {
            let mut out: Vec<&IndexEntry> = Vec::new();
            for p in list {
                let e = first_match(p).ok_or_else(|| not_found(p.to_string()))?;
                if !out.iter().any(|o| o.digest == e.digest) {
                    out.push(e);
                }
            }
            Ok(out)
        }
        PlatformSelection::All => {
            let mut out: Vec<&IndexEntry> = Vec::new();
            for e in entries {
                if !out
                    .iter()
                    .any(|o| o.digest == e.digest || o.platform == e.platform)
                {
                    out.push(e);
                }
            }
            if out.is_empty() {
                return Err(not_found("any platform".into()));
            }
            Ok(out)
        }
    }
}

/// The image `NAME:TAG` itself points to: the host's platform when chosen,
/// else the first chosen.
pub(crate) fn primary_of(chosen: &[&IndexEntry]) -> usize {
    let host = Platform::host();
    chosen
        .iter()
        .position(|e| host.matches(&e.platform))
        .unwrap_or(0)
}

pub(crate) fn join(ps: &[Platform]) -> String {
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One image of a registry, pinned to its manifest digest.
pub struct RegistrySource {
    registry: Arc<Registry>,
    reference: Reference,
    image: ResolvedImage,
    spool: Mutex<Option<Arc<Spool>>>,
}

impl RegistrySource {
    fn from_manifest(
        registry: &Arc<Registry>,
        pinned: &Reference,
        original: &str,
        bytes: Vec<u8>,
        placement: Option<PlatformPlacement>,
    ) -> Result<Self, SourceError> {
        let manifest_digest = Digest::of(&bytes);
        let what = format!("manifest {manifest_digest}");
        let manifest = spec::parse_manifest(original, &what, &bytes)?;
        let cd = &manifest.config;
        let config = registry.blob_bytes(pinned, &cd.digest.to_string(), cd.size)?;
        let what = format!("config {}", cd.digest);
        let (config_doc, platform) = spec::parse_config(original, &what, &config)?;
        let layers = spec::layers_from(original, &manifest.layers, &config_doc)?;
        Ok(RegistrySource {
            registry: registry.clone(),
            reference: pinned.clone(),
            image: ResolvedImage {
                source: original.to_owned(),
                default_name: String::new(),
                manifest_digest,
                manifest: bytes,
                config_digest: cd.digest,
                config,
                platform,
                layers,
                placement,
            },
            spool: Mutex::new(None),
        })
    }

    fn stream(&self, layer: &LayerDescriptor) -> Result<LayerStream, SourceError> {
        let blob =
            self.registry
                .open_blob(&self.reference, &layer.digest.to_string(), layer.size)?;
        LayerStream::spawn(&self.image.source, layer, Box::new(blob))
    }
}

impl ImageSource for RegistrySource {
    fn image(&self) -> &ResolvedImage {
        &self.image
    }

    fn prepare(&self, needed: &[LayerDescriptor], spool_dir: &Path) {
        // The first needed layer streams; the others are fetched ahead.
        let ahead: Vec<LayerDescriptor> = needed.iter().skip(1).cloned().collect();
        if ahead.is_empty() {
            return;
        }
        let spool = Spool::start(
            self.registry.clone(),
            self.reference.clone(),
            spool_dir.to_owned(),
            ahead,
        );
        *self.spool.lock().unwrap_or_else(|e| e.into_inner()) = Some(spool);
    }

    fn open_layer(&self, layer: &LayerDescriptor) -> Result<LayerStream, SourceError> {
        check_layer(&self.image, layer)?;
        let spool = self.spool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(spool) = spool {
            match spool.take(&layer.digest) {
                Some(Ok(file)) => {
                    let reader = file.reopen().map_err(|e| SourceError::Io {
                        image: self.image.source.clone(),
                        path: file.path().to_owned(),
                        error: e.into(),
                    })?;
                    // The temp file is removed when the stream is dropped.
                    return LayerStream::spawn(
                        &self.image.source,
                        layer,
                        Box::new(KeepFile {
                            reader,
                            _file: file,
                        }),
                    );
                }
                Some(Err(reason)) => {
                    warn!(image = %self.image.source, layer = layer.index, "background download failed ({reason}); streaming it instead");
                }
                None => {}
            }
        }
        self.stream(layer)
    }
}

/// A reader that keeps its temp file alive.
struct KeepFile {
    reader: std::fs::File,
    _file: tempfile::NamedTempFile,
}

impl Read for KeepFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

enum Slot {
    Queued,
    Running,
    Done(tempfile::NamedTempFile),
    Failed(String),
    Taken,
}

/// Background downloads of layers into temp files.
struct Spool {
    slots: Mutex<HashMap<Digest, Slot>>,
    changed: Condvar,
    cancel: AtomicBool,
}

impl Spool {
    fn start(
        registry: Arc<Registry>,
        reference: Reference,
        dir: PathBuf,
        layers: Vec<LayerDescriptor>,
    ) -> Arc<Spool> {
        let spool = Arc::new(Spool {
            slots: Mutex::new(layers.iter().map(|l| (l.digest, Slot::Queued)).collect()),
            changed: Condvar::new(),
            cancel: AtomicBool::new(false),
        });
        let queue = Arc::new(Mutex::new(layers.into_iter().collect::<VecDeque<_>>()));
        for i in 0..PARALLEL_DOWNLOADS {
            let (spool, queue, registry, reference, dir) = (
                spool.clone(),
                queue.clone(),
                registry.clone(),
                reference.clone(),
                dir.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("download-{i}"))
                .spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(layer) = next else { break };
                    if spool.cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    spool.set(layer.digest, Slot::Running);
                    let result = download(&registry, &reference, &dir, &layer, &spool.cancel);
                    spool.set(
                        layer.digest,
                        match result {
                            Ok(f) => Slot::Done(f),
                            Err(e) => Slot::Failed(e),
                        },
                    );
                });
            if let Err(e) = spawned {
                warn!("cannot start a download thread: {e}");
            }
        }
        spool
    }

    fn set(&self, digest: Digest, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.insert(digest, slot);
        self.changed.notify_all();
    }

    /// Waits for the download of `digest` if it was queued; `None` when it
    /// was not (or was already taken).
    fn take(&self, digest: &Digest) -> Option<Result<tempfile::NamedTempFile, String>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match slots.get(digest) {
                None | Some(Slot::Taken) => return None,
                Some(Slot::Queued | Slot::Running) => {
                    slots = self.changed.wait(slots).unwrap_or_else(|e| e.into_inner());
                }
                Some(Slot::Done(_) | Slot::Failed(_)) => {
                    return match slots.insert(*digest, Slot::Taken) {
                        Some(Slot::Done(f)) => Some(Ok(f)),
                        Some(Slot::Failed(e)) => Some(Err(e)),
                        _ => None,
                    };
                }
            }
        }
    }
}

impl Drop for RegistrySource {
    fn drop(&mut self) {
        if let Some(s) = self.spool.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Downloads one blob into a temp file in `dir` (not verified here: the
/// layer stream verifies it when it is ingested).
fn download(
    registry: &Arc<Registry>,
    reference: &Reference,
    dir: &Path,
    layer: &LayerDescriptor,
    cancel: &AtomicBool,
) -> Result<tempfile::NamedTempFile, String> {
    let mut blob = registry
        .open_blob(reference, &layer.digest.to_string(), layer.size)
        .map_err(|e| e.to_string())?;
    let mut file = tempfile::Builder::new()
        .prefix("layer-")
        .tempfile_in(dir)
        .map_err(|e| format!("temp file in {}: {e}", dir.display()))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let n = blob.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", file.path().display()))?;
    }
    debug!(layer = layer.index, digest = %layer.digest, "spooled");
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let r = Reference::parse("docker://127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(default_name(&r), "127.0.0.1:5000/team/app:1.0");
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("docker://h.example/app@{d}")).unwrap();
        assert_eq!(default_name(&r), "h.example/app:sha256-abababababab");
    }
}
