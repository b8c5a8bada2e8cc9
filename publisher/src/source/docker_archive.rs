//! The `docker-archive:FILE` source: a tarball written by `docker save` or
//! `skopeo copy … docker-archive:`.
//!
//! The outer tar is scanned once, indexing each member's path to the offset
//! and size of its data (symlinks and hardlinks between members — `docker
//! save` links duplicate layers — are followed, at most [`MAX_LINK_HOPS`]
//! hops); no member data is read but `manifest.json`, the config, and the
//! first four bytes of each layer (to detect its compression). Layers are
//! later streamed straight out of the archive with seek + take.
//!
//! `manifest.json` is `[{"Config": …, "RepoTags": […], "Layers": […]}]`; an
//! archive holding several images is chosen from like a registry's index,
//! by the platforms of their configs and the [`PlatformSelection`]
//! (`--platform`, `--all-platforms`, by default the host's platform), the
//! first image of each platform. Layer paths are `<id>/layer.tar`, `<hex>.tar` (skopeo) or
//! `blobs/sha256/<hex>` (docker ≥ 25). A layer's digest is the hex of a
//! `blobs/sha256/` path; otherwise, for a plain tar, its diff_id; for a
//! gzip/zstd layer under another name (detected by magic bytes; docker
//! archives are normally uncompressed), the member is hashed once at open.
//!
//! The image manifest is synthesized: a deterministic OCI image manifest
//! (config `application/vnd.oci.image.config.v1+json`, layer media types
//! from the detected compression) whose sha256 is the manifest digest.
//! The default name is `local/<first RepoTag>` with `docker.io/library/` or
//! `docker.io/` dropped and `:latest` added when there is no tag, or
//! `local/<file stem>:latest` without RepoTags.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stratum_registry::Platform;

use super::decompress::{oci_media_type, sniff, SNIFF_LEN};
use super::digest::{Digest, Sha256};
use super::error::SourceError;
use super::oci_layout::{sanitize_repository, sanitize_tag};
use super::registry::{choose, join, primary_of, IndexEntry, PlatformSelection};
use super::spec::{self, OutDescriptor, OutManifest, OCI_CONFIG, OCI_MANIFEST};
use super::verify::open_regular;
use super::{
    check_layer, ImageSource, LayerDescriptor, LayerStream, PlatformPlacement, ResolvedImage,
};
use super::{Compression, MAX_DOCUMENT_SIZE};

/// Most members an archive may have.
pub const MAX_MEMBERS: usize = 100_000;
/// Most symlink/hardlink hops followed to find a member's data.
pub const MAX_LINK_HOPS: usize = 16;

/// An opened docker archive.
#[derive(Debug)]
pub struct DockerArchiveSource {
    file: PathBuf,
    image: ResolvedImage,
    /// Where each layer's data lies in the archive, by layer index.
    regions: Vec<Region>,
}

/// A member's data in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    offset: u64,
    size: u64,
}

/// What the index knows of one member path.
#[derive(Clone, Debug)]
enum Member {
    /// A regular file's data.
    Data(Region),
    /// A symlink or hardlink to another member (normalized path).
    Link(String),
    /// A member whose data cannot be used (e.g. a sparse file).
    Unusable(&'static str),
}

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
struct ArchiveImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl DockerArchiveSource {
    /// Opens the archive at `file` and resolves its image (for the host's
    /// platform, if it holds several).
    pub fn open(file: &Path, original: &str) -> Result<Self, SourceError> {
        let all = Self::open_all(file, original, &PlatformSelection::Host)?;
        all.into_iter()
            .next()
            .ok_or_else(|| SourceError::malformed(original, "manifest.json", "it lists no image"))
    }

    /// Opens the archive at `file`: its one image, or, when `manifest.json`
    /// lists several, those `platforms` selects by their configs' platforms
    /// (like the entries of a registry's index; the first image per
    /// platform).
    pub fn open_all(
        file: &Path,
        original: &str,
        platforms: &PlatformSelection,
    ) -> Result<Vec<Self>, SourceError> {
        let archive = Archive::open(file, original)?;
        let manifest_bytes = archive.read_member("manifest.json")?;
        let entries: Vec<ArchiveImage> =
            spec::parse_json(original, "manifest.json", &manifest_bytes)?;
        if let [entry] = entries.as_slice() {
            let one = Self::open_entry(&archive, file, original, entry, None)?;
            // Like a registry's plain manifest: an explicit list is checked
            // against the config.
            if let PlatformSelection::List(wanted) = platforms {
                let have: Platform = one.image.platform.parse().map_err(SourceError::from)?;
                if !wanted.iter().any(|w| w.matches(&have)) {
                    return Err(SourceError::PlatformNotFound {
                        image: original.to_owned(),
                        index: "manifest.json".to_owned(),
                        wanted: join(wanted),
                        available: vec![one.image.platform.clone()],
                    });
                }
            }
            return Ok(vec![one]);
        }
        let mut candidates = Vec::with_capacity(entries.len());
        for entry in &entries {
            let config_what = format!("config {}", entry.config);
            let config_bytes = archive.read_member(&entry.config)?;
            let (_, platform) = spec::parse_config(original, &config_what, &config_bytes)?;
            candidates.push(IndexEntry {
                digest: Digest::of(&config_bytes),
                size: config_bytes.len() as u64,
                platform: platform.parse().map_err(SourceError::from)?,
            });
        }
        let chosen = choose(original, "manifest.json", &candidates, platforms)?;
        let primary = primary_of(&chosen);
        let many = chosen.len() > 1;
        chosen
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = candidates
                    .iter()
                    .position(|e| std::ptr::eq(e, *c))
                    .unwrap_or_default();
                let entry = entries.get(at).ok_or_else(|| {
                    SourceError::malformed(original, "manifest.json", "internal: lost an entry")
                })?;
                let placement = many.then(|| PlatformPlacement {
                    slug: c.platform.slug(),
                    primary: i == primary,
                });
                Self::open_entry(&archive, file, original, entry, placement)
            })
            .collect()
    }

    /// Resolves one image of the archive.
    fn open_entry(
        archive: &Archive<'_>,
        file: &Path,
        original: &str,
        entry: &ArchiveImage,
        placement: Option<PlatformPlacement>,
    ) -> Result<Self, SourceError> {
        let config_what = format!("config {}", entry.config);
        let config_bytes = archive.read_member(&entry.config)?;
        let config_digest = Digest::of(&config_bytes);
        if let Some(named) = digest_in_name(&entry.config) {
            if named != config_digest {
                return Err(SourceError::DigestMismatch {
                    image: original.to_owned(),
                    what: config_what,
                    expected: named,
                    actual: config_digest,
                });
            }
        }
        let (config, platform) = spec::parse_config(original, &config_what, &config_bytes)?;
        let diff_ids = &config.rootfs.diff_ids;
        if entry.layers.len() != diff_ids.len() {
            return Err(SourceError::LayerCountMismatch {
                image: original.to_owned(),
                layers: entry.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }

        let mut layers = Vec::with_capacity(entry.layers.len());
        let mut regions = Vec::with_capacity(entry.layers.len());
        for (index, (path, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
            let what = format!("layer {index} ({path})");
            let region = archive.region(path, &what)?;
            let compression = sniff(&archive.read_prefix(region, &what)?);
            let digest = match (digest_in_name(path), compression) {
                (Some(named), _) => named,
                (None, Compression::None) => *diff_id,
                (None, _) => archive.hash_region(region, &what)?,
            };
            layers.push(LayerDescriptor {
                index,
                digest,
                diff_id: *diff_id,
                media_type: oci_media_type(compression).to_owned(),
                size: region.size,
                compression,
            });
            regions.push(region);
        }

        let manifest = synthesize_manifest(&config_bytes, config_digest, &layers)
            .map_err(|e| SourceError::malformed(original, "synthesized manifest", e.to_string()))?;
        let image = ResolvedImage {
            source: original.to_owned(),
            default_name: default_name(entry.repo_tags.as_deref().unwrap_or_default(), file),
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest,
            config: config_bytes,
            platform,
            layers,
            placement,
        };
        Ok(DockerArchiveSource {
            file: file.to_owned(),
            image,
            regions,
        })
    }
}

impl ImageSource for DockerArchiveSource {
    fn image(&self) -> &ResolvedImage {
        &self.image
    }

    fn open_layer(&self, layer: &LayerDescriptor) -> Result<LayerStream, SourceError> {
        check_layer(&self.image, layer)?;
        let source = &self.image.source;
        let region =
            self.regions
                .get(layer.index)
                .copied()
                .ok_or_else(|| SourceError::UnknownLayer {
                    image: source.clone(),
                    index: layer.index,
                    digest: layer.digest,
                })?;
        let mut file = open_regular(source, &self.file)?;
        file.seek(SeekFrom::Start(region.offset))
            .map_err(|e| SourceError::io(source, &self.file, e))?;
        LayerStream::spawn(source, layer, Box::new(file.take(region.size)))
    }
}

/// The archive file and its member index.
struct Archive<'a> {
    path: &'a Path,
    image: &'a str,
    file: File,
    len: u64,
    members: HashMap<String, Member>,
}

impl<'a> Archive<'a> {
    /// Opens the archive and indexes its members (headers only).
    fn open(path: &'a Path, image: &'a str) -> Result<Self, SourceError> {
        let file = open_regular(image, path)?;
        let len = file
            .metadata()
            .map_err(|e| SourceError::io(image, path, e))?
            .len();
        let members = index_members(&file).map_err(|e| {
            SourceError::malformed(
                image,
                path.display().to_string(),
                format!("not a valid tar archive: {e}"),
            )
        })?;
        Ok(Archive {
            path,
            image,
            file,
            len,
            members,
        })
    }

    /// Where the data of the member named `name` (as manifest.json spells
    /// it) lies, following links.
    fn region(&self, name: &str, what: &str) -> Result<Region, SourceError> {
        let bad = |reason: String| SourceError::malformed(self.image, what, reason);
        let mut key =
            normalize(name, None).ok_or_else(|| bad(format!("invalid member path {name:?}")))?;
        for _ in 0..=MAX_LINK_HOPS {
            match self.members.get(&key) {
                None => return Err(bad(format!("member {key:?} is not in the archive"))),
                Some(Member::Unusable(why)) => {
                    return Err(bad(format!("member {key:?} is a {why}")))
                }
                Some(Member::Link(target)) => key = target.clone(),
                Some(Member::Data(region)) => {
                    let end = region.offset.checked_add(region.size);
                    if end.is_none_or(|end| end > self.len) {
                        return Err(bad(format!(
                            "member {key:?} extends past the end of the archive (truncated?)"
                        )));
                    }
                    return Ok(*region);
                }
            }
        }
        Err(bad(format!(
            "more than {MAX_LINK_HOPS} links to follow from {name:?}"
        )))
    }

    /// A reader over a region.
    fn reader(&self, region: Region) -> Result<io::Take<&File>, SourceError> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(region.offset))
            .map_err(|e| SourceError::io(self.image, self.path, e))?;
        Ok(f.take(region.size))
    }

    /// The full data of a small member (manifest.json, the config).
    fn read_member(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let region = self.region(name, name)?;
        if region.size > MAX_DOCUMENT_SIZE {
            return Err(SourceError::TooLarge {
                image: self.image.to_owned(),
                what: name.to_owned(),
                size: region.size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let mut out = Vec::new();
        self.reader(region)?
            .read_to_end(&mut out)
            .map_err(|e| SourceError::io(self.image, self.path, e))?;
        if out.len() as u64 != region.size {
            return Err(SourceError::malformed(
                self.image,
                name,
                "the archive is truncated",
            ));
        }
        Ok(out)
    }

    /// The first bytes of a region (fewer if it is shorter).
    fn read_prefix(&self, region: Region, what: &str) -> Result<Vec<u8>, SourceError> {
        let mut out = Vec::with_capacity(SNIFF_LEN);
        self.reader(Region {
            offset: region.offset,
            size: region.size.min(SNIFF_LEN as u64),
        })?
        .read_to_end(&mut out)
        .map_err(|e| SourceError::malformed(self.image, what, format!("read failed: {e}")))?;
        Ok(out)
    }

    /// sha256 of a region (a compressed layer whose digest is not known).
    fn hash_region(&self, region: Region, what: &str) -> Result<Digest, SourceError> {
        let mut reader = self.reader(region)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SourceError::io(self.image, self.path, e)),
            };
            hasher.update(buf.get(..n).unwrap_or(&[]));
            total += n as u64;
        }
        if total != region.size {
            return Err(SourceError::malformed(
                self.image,
                what,
                "the archive is truncated",
            ));
        }
        Ok(hasher.finish())
    }
}

/// Indexes every member by normalized path (later members win, as in tar).
fn index_members(file: &File) -> io::Result<HashMap<String, Member>> {
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        if members.len() >= MAX_MEMBERS {
            return Err(io::Error::other(format!("more than {MAX_MEMBERS} members")));
        }
        let path = entry.path()?;
        let Some(key) = path.to_str().and_then(|p| normalize(p, None)) else {
            continue; // not a name manifest.json can refer to
        };
        let kind = entry.header().entry_type();
        let member = if kind.is_file() || kind.is_contiguous() {
            Member::Data(Region {
                offset: entry.raw_file_position(),
                size: entry.size(),
            })
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name()?.unwrap_or_default();
            let target = target.to_str().unwrap_or_default();
            // A symlink is relative to its directory, a hardlink to the root.
            let base = kind.is_symlink().then(|| parent(&key));
            match normalize(target, base) {
                Some(t) => Member::Link(t),
                None => Member::Unusable("link pointing outside the archive"),
            }
        } else if kind.is_gnu_sparse() {
            Member::Unusable("sparse file")
        } else {
            continue;
        };
        members.insert(key, member);
    }
    Ok(members)
}

/// `a/b/c` → `a/b`; `c` → ``.
fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Normalizes a member path: `./`, empty and `.` components dropped, `..`
/// resolved; a leading `/` means the archive root. `None` when `..` would
/// leave the archive or nothing is left. `base` is the directory a relative
/// path starts from.
fn normalize(path: &str, base: Option<&str>) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(base) = base.filter(|_| !path.starts_with('/')) {
        parts.extend(base.split('/').filter(|c| !c.is_empty() && *c != "."));
    }
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The digest a member's name states: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let key = normalize(name, None)?;
    if let Some(hex) = key.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    let hex = key.strip_suffix(".json")?;
    Digest::from_hex(hex).ok()
}

/// The deterministic OCI manifest for a docker archive image.
fn synthesize_manifest(
    config: &[u8],
    config_digest: Digest,
    layers: &[LayerDescriptor],
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&OutManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: OutDescriptor {
            media_type: OCI_CONFIG,
            digest: config_digest,
            size: config.len() as u64,
        },
        layers: layers
            .iter()
            .map(|l| OutDescriptor {
                media_type: &l.media_type,
                digest: l.digest,
                size: l.size,
            })
            .collect(),
    })
}

/// `local/<first RepoTag>` (normalized), or `local/<file stem>:latest`.
fn default_name(repo_tags: &[String], file: &Path) -> String {
    let Some(tag) = repo_tags.iter().find(|t| !t.is_empty()) else {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return format!("local/{}:latest", sanitize_repository(&stem));
    };
    let short = tag
        .strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag);
    let (repo, tag) = match short.rsplit_once(':') {
        Some((repo, t)) if !t.contains('/') => (repo, t),
        _ => (short, "latest"),
    };
    let repo: Vec<String> = repo
        .split('/')
        .filter(|c| !c.is_empty())
        .map(sanitize_repository)
        .collect();
    format!("local/{}:{}", repo.join("/"), sanitize_tag(tag))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalizing() {
        assert_eq!(normalize("./a/./b", None).as_deref(), Some("a/b"));
        assert_eq!(normalize("/a/b/../c", None).as_deref(), Some("a/c"));
        assert_eq!(normalize("../x", None), None);
        assert_eq!(normalize("", None), None);
        assert_eq!(normalize("../d.tar", Some("id")).as_deref(), Some("d.tar"));
        assert_eq!(normalize("../../d.tar", Some("id")), None);
        assert_eq!(normalize("/d.tar", Some("id")).as_deref(), Some("d.tar"));
    }

    #[test]
    fn digests_in_names() {
        let d = Digest::of(b"x");
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{}", d.hex())),
            Some(d)
        );
        assert_eq!(digest_in_name(&format!("./{}.json", d.hex())), Some(d));
        assert_eq!(digest_in_name(&format!("{}/layer.tar", d.hex())), None);
        assert_eq!(digest_in_name("config.json"), None);
    }

    #[test]
    fn default_names() {
        let f = Path::new("/x/My Archive.tar");
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            default_name(&tags(&["docker.io/library/foo:bar"]), f),
            "local/foo:bar"
        );
        assert_eq!(default_name(&tags(&["foo:bar"]), f), "local/foo:bar");
        assert_eq!(
            default_name(&tags(&["docker.io/me/foo"]), f),
            "local/me/foo:latest"
        );
        assert_eq!(
            default_name(&tags(&["quay.io/a/b:1.2"]), f),
            "local/quay.io/a/b:1.2"
        );
        assert_eq!(
            default_name(&tags(&["localhost:5000/x"]), f),
            "local/localhost-5000/x:latest"
        );
        assert_eq!(default_name(&[], f), "local/my-archive:latest");
    }

    #[test]
    fn synthesized_manifest_is_deterministic() {
        let layers = [LayerDescriptor {
            index: 0,
            digest: Digest::of(b"l"),
            diff_id: Digest::of(b"l"),
            media_type: oci_media_type(Compression::None).to_owned(),
            size: 1,
            compression: Compression::None,
        }];
        let a = synthesize_manifest(b"{}", Digest::of(b"{}"), &layers).unwrap();
        let b = synthesize_manifest(b"{}", Digest::of(b"{}"), &layers).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:"#), "{text}");
    }
}
