//! The `oci:DIR[:TAG]` source: an OCI image layout directory.
//!
//! `oci-layout` must declare `imageLayoutVersion` 1.0.0. The manifest is
//! chosen in `index.json` by its `org.opencontainers.image.ref.name`
//! annotation (= TAG); without a TAG the layout must hold exactly one
//! manifest (or only untagged per-platform manifests, chosen like an index).
//! An image index (OCI or Docker manifest list) is resolved to the host's
//! platform, `linux/<arch>`, nesting at most [`MAX_INDEX_DEPTH`] levels and
//! never visiting the same index twice. Blobs live at `blobs/sha256/<hex>`;
//! every index, manifest and config is checked against its descriptor's size
//! and digest before it is parsed, and layers are verified while they stream.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::SourceError;
use super::spec::{self, Descriptor, Kind};
use super::verify::{open_regular, read_capped, read_verified};
use super::MAX_DOCUMENT_SIZE;
use super::{check_layer, ImageSource, LayerDescriptor, LayerStream, ResolvedImage};

/// How many image indexes may nest below `index.json`.
pub const MAX_INDEX_DEPTH: usize = 4;

/// An opened OCI layout image.
#[derive(Debug)]
pub struct OciLayoutSource {
    dir: PathBuf,
    image: ResolvedImage,
}

impl OciLayoutSource {
    /// Opens the image tagged `tag` (or the only one) in the layout at `dir`.
    pub fn open(dir: &Path, tag: Option<&str>, original: &str) -> Result<Self, SourceError> {
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
        let (manifest_digest, manifest_bytes, manifest) = layout.resolve(chosen)?;

        let config_desc = &manifest.config;
        let what = format!("config {}", config_desc.digest);
        let config_bytes = layout.read_blob(&what, config_desc)?;
        let (config, platform) = spec::parse_config(original, &what, &config_bytes)?;
        let layers = spec::layers_from(original, &manifest.layers, &config)?;

        let image = ResolvedImage {
            source: original.to_owned(),
            default_name: default_name(dir, tag),
            manifest_digest,
            manifest: manifest_bytes,
            config_digest: config_desc.digest,
            config: config_bytes,
            platform,
            layers,
            placement: None,
        };
        Ok(OciLayoutSource {
            dir: dir.to_owned(),
            image,
        })
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

    /// Follows indexes down to one image manifest; returns its digest,
    /// exact bytes and parsed form.
    fn resolve(&self, top: Top<'_>) -> Result<(Digest, Vec<u8>, spec::Manifest), SourceError> {
        let mut current: Descriptor = match top {
            Top::One(d) => d.clone(),
            Top::ByPlatform(candidates) => self.pick_platform("index.json", &candidates)?.clone(),
        };
        let mut visited: HashSet<Digest> = HashSet::new();
        let mut depth = 0;
        loop {
            let media_type = current.media_type.clone().unwrap_or_default();
            let kind =
                spec::kind_of(&media_type).ok_or_else(|| SourceError::UnsupportedMediaType {
                    image: self.image.to_owned(),
                    what: format!("manifest {}", current.digest),
                    media_type: media_type.clone(),
                })?;
            match kind {
                Kind::Manifest => {
                    let what = format!("manifest {}", current.digest);
                    let bytes = self.read_blob(&what, &current)?;
                    let manifest = spec::parse_manifest(self.image, &what, &bytes)?;
                    return Ok((current.digest, bytes, manifest));
                }
                Kind::Index => {
                    if !visited.insert(current.digest) {
                        return Err(SourceError::IndexNesting {
                            image: self.image.to_owned(),
                            digest: current.digest,
                            reason: "it refers to itself (an index loop)".to_owned(),
                        });
                    }
                    depth += 1;
                    if depth > MAX_INDEX_DEPTH {
                        return Err(SourceError::IndexNesting {
                            image: self.image.to_owned(),
                            digest: current.digest,
                            reason: format!("indexes nest more than {MAX_INDEX_DEPTH} levels deep"),
                        });
                    }
                    let what = format!("image index {}", current.digest);
                    let bytes = self.read_blob(&what, &current)?;
                    let index = spec::parse_index(self.image, &what, &bytes)?;
                    let candidates: Vec<&Descriptor> = index.manifests.iter().collect();
                    current = self.pick_platform(&what, &candidates)?.clone();
                }
            }
        }
    }

    /// The candidate for the host's platform: `linux/<arch>`, preferring no
    /// variant or the usual one (`v8` on arm64).
    fn pick_platform<'d>(
        &self,
        what: &str,
        candidates: &[&'d Descriptor],
    ) -> Result<&'d Descriptor, SourceError> {
        let (os, arch) = spec::host_platform();
        let matching: Vec<&'d Descriptor> = candidates
            .iter()
            .copied()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == arch)
            })
            .collect();
        let preferred = matching.iter().copied().find(|d| {
            let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
            matches!(variant, None | Some("") | Some("v8")) || arch != "arm64"
        });
        preferred
            .or_else(|| matching.first().copied())
            .ok_or_else(|| SourceError::PlatformNotFound {
                image: self.image.to_owned(),
                index: what.to_owned(),
                wanted: format!("{os}/{arch}"),
                available: candidates
                    .iter()
                    .map(|d| {
                        d.platform
                            .as_ref()
                            .map_or_else(|| "(no platform)".to_owned(), spec::Platform::display)
                    })
                    .collect(),
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
