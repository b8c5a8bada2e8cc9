//! The `oci:DIR[:TAG]` source: an OCI image layout directory.
//!
//! `oci-layout` must declare `imageLayoutVersion` 1.0.0. The manifest is
//! chosen in `index.json` by its `org.opencontainers.image.ref.name`
//! annotation (= TAG); without a TAG the layout must hold exactly one
//! manifest (or only untagged per-platform manifests, chosen like an index).
//! An image index (OCI or Docker manifest list), and several descriptors
//! sharing the TAG, are resolved like a registry's index: every image
//! manifest listed (nesting at most [`MAX_INDEX_DEPTH`] levels, never
//! visiting the same index twice) is a candidate, and the
//! [`PlatformSelection`] (`--platform`, `--all-platforms`, by default the
//! host's platform) picks one or several. Blobs live at
//! `blobs/sha256/<hex>`; every index, manifest and config is checked against
//! its descriptor's size and digest before it is parsed, and layers are
//! verified while they stream.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use stratum_registry::Platform;

use super::digest::Digest;
use super::error::SourceError;
use super::registry::{choose, join, primary_of, IndexEntry, PlatformSelection};
use super::spec::{self, Descriptor, Kind};
use super::verify::{open_regular, read_capped, read_verified};
use super::MAX_DOCUMENT_SIZE;
use super::{
    check_layer, ImageSource, LayerDescriptor, LayerStream, PlatformPlacement, ResolvedImage,
};

/// How many image indexes may nest below `index.json`.
pub const MAX_INDEX_DEPTH: usize = 4;

/// An opened OCI layout image.
#[derive(Debug)]
pub struct OciLayoutSource {
    dir: PathBuf,
    image: ResolvedImage,
}

/// An image manifest chosen for publishing.
struct Chosen {
    digest: Digest,
    size: u64,
    /// Set when one of several platforms chosen from an index.
    placement: Option<PlatformPlacement>,
    /// Whether an index chose it (by its declared platform); otherwise a
    /// `--platform` list is checked against its config.
    from_index: bool,
}

impl OciLayoutSource {
    /// Opens the image tagged `tag` (or the only one) in the layout at
    /// `dir`, for the host's platform if it is an index.
    pub fn open(dir: &Path, tag: Option<&str>, original: &str) -> Result<Self, SourceError> {
        let all = Self::open_all(dir, tag, original, &PlatformSelection::Host)?;
        all.into_iter()
            .next()
            .ok_or_else(|| SourceError::malformed(original, "index.json", "no image chosen"))
    }

    /// Opens the image tagged `tag` (or the only one) in the layout at
    /// `dir`: one image per platform `platforms` selects from an index.
    pub fn open_all(
        dir: &Path,
        tag: Option<&str>,
        original: &str,
        platforms: &PlatformSelection,
    ) -> Result<Vec<Self>, SourceError> {
        let layout = Layout {
            dir,
            image: original,
        };
        layout.check_version()?;
        let index_path = dir.join("index.json");
        let index_bytes = read_capped(
            original,
            "index.json",
            open_regular(original, &index_path)?,
            MAX_DOCUMENT_SIZE,
        )?;
        let index = spec::parse_index(original, "index.json", &index_bytes)?;
        let chosen = layout.choose_top(&index, tag)?;
        let default_name = default_name(dir, tag);
        layout
            .resolve(chosen, platforms)?
            .into_iter()
            .map(|c| {
                let image = layout.open_image(&c, &default_name, platforms)?;
                Ok(OciLayoutSource {
                    dir: dir.to_owned(),
                    image,
                })
            })
            .collect()
    }

    /// Path of the blob with `digest`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

impl ImageSource for OciLayoutSource {
    fn image(&self) -> &ResolvedImage {
        &self.image
    }

    fn open_layer(&self, layer: &LayerDescriptor) -> Result<LayerStream, SourceError> {
        check_layer(&self.image, layer)?;
        let path = self.blob_path(&layer.digest);
        let file = open_regular(&self.image.source, &path)?;
        LayerStream::spawn(&self.image.source, layer, Box::new(file))
    }
}

/// `blobs/sha256/<hex>` under `dir`.
fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// `local/<basename of dir>:<tag or latest>`, made a valid reference.
fn default_name(dir: &Path, tag: Option<&str>) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let canonical = std::fs::canonicalize(dir).ok()?;
            canonical
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    format!(
        "local/{}:{}",
        sanitize_repository(&base),
        sanitize_tag(tag.unwrap_or("latest"))
    )
}

/// A repository path component: lowercase `[a-z0-9._-]`, starting with an
/// alphanumeric; `image` when nothing is left.
pub(crate) fn sanitize_repository(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "image".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A tag: `[A-Za-z0-9_.-]`, at most 128 characters, not starting with `.`
/// or `-`; `latest` when nothing is left.
pub(crate) fn sanitize_tag(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    let trimmed: String = mapped
        .trim_start_matches(['.', '-'])
        .chars()
        .take(128)
        .collect();
    if trimmed.is_empty() {
        "latest".to_owned()
    } else {
        trimmed
    }
}

/// Reading helpers bound to one layout.
struct Layout<'a> {
    dir: &'a Path,
    image: &'a str,
}

impl Layout<'_> {
    fn check_version(&self) -> Result<(), SourceError> {
        let path = self.dir.join("oci-layout");
        let file = match open_regular(self.image, &path) {
            Err(SourceError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(SourceError::malformed(
                    self.image,
                    self.dir.display().to_string(),
                    "not an OCI image layout (no oci-layout file)",
                ))
            }
            other => other?,
        };
        let bytes = read_capped(self.image, "oci-layout", file, 64 * 1024)?;
        #[derive(serde::Deserialize)]
        struct OciLayoutFile {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let parsed: OciLayoutFile = spec::parse_json(self.image, "oci-layout", &bytes)?;
        if parsed.version != "1.0.0" {
            return Err(SourceError::malformed(
                self.image,
                "oci-layout",
                format!(
                    "imageLayoutVersion is {:?}, expected \"1.0.0\"",
                    parsed.version
                ),
            ));
        }
        Ok(())
    }

    /// Reads a blob, verified against its descriptor.
    fn read_blob(&self, what: &str, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        if desc.size > MAX_DOCUMENT_SIZE {
            return Err(SourceError::TooLarge {
                image: self.image.to_owned(),
                what: what.to_owned(),
                size: desc.size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let path = blob_path(self.dir, &desc.digest);
        let file = open_regular(self.image, &path)?;
        read_verified(self.image, what, file, &desc.digest, desc.size)
    }

    /// Picks the descriptor in `index.json` for `tag`.
    fn choose_top<'i>(
        &self,
        index: &'i spec::Index,
        tag: Option<&str>,
    ) -> Result<Top<'i>, SourceError> {
        let tags: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_owned))
            .collect();
        match tag {
            Some(tag) => {
                let matching: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|d| d.ref_name() == Some(tag))
                    .collect();
                match matching.as_slice() {
                    [] => Err(SourceError::TagNotFound {
                        image: self.image.to_owned(),
                        tag: tag.to_owned(),
                        available: tags,
                    }),
                    [one] => Ok(Top::One(one)),
                    _ => Ok(Top::ByPlatform(matching)),
                }
            }
            None => match index.manifests.as_slice() {
                [] => Err(SourceError::malformed(
                    self.image,
                    "index.json",
                    "it lists no manifests",
                )),
                [one] => Ok(Top::One(one)),
                several if tags.is_empty() && several.iter().all(|d| d.platform.is_some()) => {
                    Ok(Top::ByPlatform(several.iter().collect()))
                }
                several => Err(SourceError::TagRequired {
                    image: self.image.to_owned(),
                    count: several.len(),
                    available: tags,
                }),
            },
        }
    }

    /// The image manifests `top` stands for that `sel` selects: a plain
    /// manifest is taken as it is; indexes are flattened and chosen from
    /// by their declared platforms.
    fn resolve(&self, top: Top<'_>, sel: &PlatformSelection) -> Result<Vec<Chosen>, SourceError> {
        let (what, listed): (String, Vec<&Descriptor>) = match top {
            Top::One(d) => {
                let media_type = d.media_type.clone().unwrap_or_default();
                match spec::kind_of(&media_type) {
                    Some(Kind::Manifest) => {
                        return Ok(vec![Chosen {
                            digest: d.digest,
                            size: d.size,
                            placement: None,
                            from_index: false,
                        }])
                    }
                    Some(Kind::Index) => (format!("image index {}", d.digest), vec![d]),
                    None => {
                        return Err(SourceError::UnsupportedMediaType {
                            image: self.image.to_owned(),
                            what: format!("manifest {}", d.digest),
                            media_type,
                        })
                    }
                }
            }
            Top::ByPlatform(candidates) => ("index.json".to_owned(), candidates),
        };
        let mut entries = Vec::new();
        let mut visited = HashSet::new();
        self.collect(&listed, 0, &mut visited, &mut entries)?;
        let chosen = choose(self.image, &what, &entries, sel)?;
        let primary = primary_of(&chosen);
        let many = chosen.len() > 1;
        Ok(chosen
            .iter()
            .enumerate()
            .map(|(i, e)| Chosen {
                digest: e.digest,
                size: e.size,
                placement: many.then(|| PlatformPlacement {
                    slug: e.platform.slug(),
                    primary: i == primary,
                }),
                from_index: true,
            })
            .collect())
    }

    /// Adds the image manifests `listed` (and the indexes among them, at
    /// `depth`, recursively) to `out`. Like a registry's index: entries
    /// without a platform, build attestations (`unknown/unknown`) and
    /// unknown media types are no candidates.
    fn collect(
        &self,
        listed: &[&Descriptor],
        depth: usize,
        visited: &mut HashSet<Digest>,
        out: &mut Vec<IndexEntry>,
    ) -> Result<(), SourceError> {
        for d in listed {
            match spec::kind_of(d.media_type.as_deref().unwrap_or_default()) {
                Some(Kind::Manifest) => {
                    let Some(p) = &d.platform else { continue };
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
                    if !visited.insert(d.digest) {
                        return Err(SourceError::IndexNesting {
                            image: self.image.to_owned(),
                            digest: d.digest,
                            reason: "it refers to itself (an index loop)".to_owned(),
                        });
                    }
                    if depth + 1 > MAX_INDEX_DEPTH {
                        return Err(SourceError::IndexNesting {
                            image: self.image.to_owned(),
                            digest: d.digest,
                            reason: format!("indexes nest more than {MAX_INDEX_DEPTH} levels deep"),
                        });
                    }
                    let what = format!("image index {}", d.digest);
                    let bytes = self.read_blob(&what, d)?;
                    let index = spec::parse_index(self.image, &what, &bytes)?;
                    let nested: Vec<&Descriptor> = index.manifests.iter().collect();
                    self.collect(&nested, depth + 1, visited, out)?;
                }
                None => tracing::debug!(
                    image = self.image,
                    digest = %d.digest,
                    "skipping an index entry of unknown type"
                ),
            }
        }
        Ok(())
    }

    /// Reads the chosen manifest and its config.
    fn open_image(
        &self,
        chosen: &Chosen,
        default_name: &str,
        sel: &PlatformSelection,
    ) -> Result<ResolvedImage, SourceError> {
        let desc = Descriptor {
            media_type: None,
            digest: chosen.digest,
            size: chosen.size,
            annotations: None,
            platform: None,
        };
        let what = format!("manifest {}", chosen.digest);
        let manifest_bytes = self.read_blob(&what, &desc)?;
        let manifest = spec::parse_manifest(self.image, &what, &manifest_bytes)?;
        let config_desc = &manifest.config;
        let config_what = format!("config {}", config_desc.digest);
        let config_bytes = self.read_blob(&config_what, config_desc)?;
        let (config, platform) = spec::parse_config(self.image, &config_what, &config_bytes)?;
        // A plain manifest has no declared platform: an explicit list is
        // checked against its config, as for a registry's.
        if let (false, PlatformSelection::List(wanted)) = (chosen.from_index, sel) {
            let have: Platform = platform.parse().map_err(SourceError::from)?;
            if !wanted.iter().any(|w| w.matches(&have)) {
                return Err(SourceError::PlatformNotFound {
                    image: self.image.to_owned(),
                    index: what,
                    wanted: join(wanted),
                    available: vec![platform],
                });
            }
        }
        let layers = spec::layers_from(self.image, &manifest.layers, &config)?;
        Ok(ResolvedImage {
            source: self.image.to_owned(),
            default_name: default_name.to_owned(),
            manifest_digest: chosen.digest,
            manifest: manifest_bytes,
            config_digest: config_desc.digest,
            config: config_bytes,
            platform,
            layers,
            placement: chosen.placement.clone(),
        })
    }
}

/// What `index.json` offers for the requested tag.
enum Top<'i> {
    /// One descriptor.
    One(&'i Descriptor),
    /// Several, to choose among by platform.
    ByPlatform(Vec<&'i Descriptor>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_name(Path::new("/tmp/My Image"), Some("v1.0")),
            "local/my-image:v1.0"
        );
        assert_eq!(default_name(Path::new("/tmp/x"), None), "local/x:latest");
        assert_eq!(
            default_name(Path::new("/tmp/x/"), Some("a/b:c")),
            "local/x:a-b-c"
        );
        assert_eq!(sanitize_repository("__"), "image");
        assert_eq!(sanitize_tag("..."), "latest");
        assert_eq!(sanitize_tag(&"t".repeat(300)).len(), 128);
    }
}
