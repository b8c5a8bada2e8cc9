//! OCI image sources: where the publisher reads images from.
//!
//! A source spec names an image outside the repository:
//!
//! * `oci:DIR[:TAG]`: an OCI image layout directory ([`oci_layout`]);
//! * `docker-archive:FILE`: a `docker save` / `skopeo copy … docker-archive:`
//!   tarball ([`docker_archive`]);
//! * `docker://HOST[:PORT]/REPO[:TAG|@sha256:…]`: an image in an OCI
//!   registry ([`registry`]), which may resolve to one image per platform.
//!
//! [`open`] resolves the spec to one image ([`ResolvedImage`]): its exact
//! manifest and config bytes (both verified against their digests), its
//! platform and its layers, base first. [`ImageSource::open_layer`] then
//! streams one layer's *uncompressed* tar through a [`LayerStream`], which
//! decompresses on a background thread and verifies the blob's size and
//! digest and the diff_id while the consumer reads (see [`stream`]). Nothing
//! is trusted before it is verified; every failure is a [`SourceError`]
//! naming the source, and where it applies the blob, layer and path.

pub mod decompress;
pub mod digest;
pub mod docker_archive;
pub mod error;
pub mod oci_layout;
pub mod registry;
mod spec;
pub mod stream;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use stratum_registry::{Reference, Registry};

pub use digest::{Digest, Sha256};
pub use error::SourceError;
pub use registry::PlatformSelection;
pub use stream::{LayerStats, LayerStream};

/// Largest manifest, index, config or `manifest.json` read into memory.
pub const MAX_DOCUMENT_SIZE: u64 = 8 * 1024 * 1024;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// One layer of a resolved image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerDescriptor {
    /// Position in the image, 0 = base.
    pub index: usize,
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// The layer's media type (for docker-archive: the OCI media type that
    /// matches the detected compression).
    pub media_type: String,
    /// Declared size of the blob in bytes.
    pub size: u64,
    /// How the blob is compressed.
    pub compression: Compression,
}

/// One image, resolved from a source and verified up to its layer list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The source string as the user gave it.
    pub source: String,
    /// A name to publish under when the user gives none: `local/<layout dir
    /// name>:<tag or latest>` for an OCI layout, `local/<first RepoTag>` (or
    /// `local/<file stem>:latest`) for a docker archive.
    pub default_name: String,
    /// sha256 of [`ResolvedImage::manifest`].
    pub manifest_digest: Digest,
    /// The exact image manifest bytes (for docker-archive: a synthesized,
    /// deterministic OCI manifest).
    pub manifest: Vec<u8>,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The exact config bytes, verified against `config_digest`.
    pub config: Vec<u8>,
    /// `os/architecture[/variant]` from the config, e.g. `linux/amd64`.
    pub platform: String,
    /// The layers, base first.
    pub layers: Vec<LayerDescriptor>,
    /// Set when this is one of several platforms published from one index.
    pub placement: Option<PlatformPlacement>,
}

/// Where one platform of a multi-platform index goes under `/images`: every
/// platform is published as `NAME:TAG+<slug>`, and the primary one (the
/// publishing host's platform if chosen, else the first) as `NAME:TAG` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformPlacement {
    /// `os-arch[-variant]`, e.g. `linux-arm64`.
    pub slug: String,
    pub primary: bool,
}

impl ResolvedImage {
    /// The names to publish this image under, given its base `NAME:TAG`.
    pub fn names(&self, base: &str) -> Vec<String> {
        image_names(base, self.placement.as_ref())
    }
}

/// `NAME:TAG` and/or `NAME:TAG+<slug>` for an image with `placement`.
pub fn image_names(base: &str, placement: Option<&PlatformPlacement>) -> Vec<String> {
    match placement {
        None => vec![base.to_owned()],
        Some(p) if p.primary => vec![base.to_owned(), format!("{base}+{}", p.slug)],
        Some(p) => vec![format!("{base}+{}", p.slug)],
    }
}

/// A parsed source spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceRef {
    /// `oci:DIR[:TAG]`.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if given.
        tag: Option<String>,
    },
    /// `docker-archive:FILE`.
    DockerArchive {
        /// The archive file.
        file: PathBuf,
    },
    /// `docker://HOST[:PORT]/REPO[:TAG|@sha256:…]`.
    Registry {
        /// The image reference.
        reference: Reference,
    },
}

/// What a spec may look like, for error messages.
const SPEC_FORMS: &str =
    "expected oci:DIR[:TAG], docker-archive:FILE or docker://HOST[:PORT]/REPO[:TAG|@sha256:…]";

/// Transports that other tools accept but this version does not read.
const LATER_TRANSPORTS: [&str; 5] = [
    "oci-archive:",
    "docker-daemon:",
    "containers-storage:",
    "dir:",
    "docker:",
];

impl SourceRef {
    /// Parses `oci:DIR[:TAG]` or `docker-archive:FILE`.
    ///
    /// For `oci:` the tag is what follows the *last* `:` when that suffix
    /// contains no `/`, so `oci:/tmp/x:latest` is dir `/tmp/x`, tag `latest`,
    /// and `oci:./a:b/c` is dir `./a:b/c` without a tag.
    pub fn parse(spec: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = spec.strip_prefix("oci:") {
            let (dir, tag) = match rest.rfind(':') {
                Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(invalid("the layout directory is empty (oci:DIR[:TAG])"));
            }
            if tag == Some("") {
                return Err(invalid("the tag after the last ':' is empty"));
            }
            return Ok(SourceRef::OciLayout {
                dir: PathBuf::from(dir),
                tag: tag.map(str::to_owned),
            });
        }
        if let Some(file) = spec.strip_prefix("docker-archive:") {
            if file.is_empty() {
                return Err(invalid(
                    "the archive file name is empty (docker-archive:FILE)",
                ));
            }
            return Ok(SourceRef::DockerArchive {
                file: PathBuf::from(file),
            });
        }
        if spec.starts_with("docker://") {
            let reference = Reference::parse(spec).map_err(|e| invalid(&e.to_string()))?;
            return Ok(SourceRef::Registry { reference });
        }
        if let Some(transport) = LATER_TRANSPORTS.iter().find(|t| spec.starts_with(**t)) {
            return Err(SourceError::NotSupported {
                spec: spec.to_owned(),
                transport: (*transport).to_owned(),
            });
        }
        Err(invalid(SPEC_FORMS))
    }
}

impl FromStr for SourceRef {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::OciLayout {
                dir,
                tag: Some(tag),
            } => {
                write!(f, "oci:{}:{tag}", dir.display())
            }
            SourceRef::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            SourceRef::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
            SourceRef::Registry { reference } => write!(f, "{reference}"),
        }
    }
}

/// An opened source, able to stream its layer blobs.
pub trait ImageSource: Send + Sync {
    /// The resolved image.
    fn image(&self) -> &ResolvedImage;

    /// Streams the layer's *uncompressed* tar bytes. The returned stream
    /// verifies, while it is read, (a) the blob's size and sha256 against
    /// `layer.size`/`layer.digest` and (b) the uncompressed bytes' sha256
    /// against `layer.diff_id`. `layer` must be one of
    /// `self.image().layers`.
    fn open_layer(&self, layer: &LayerDescriptor) -> Result<LayerStream, SourceError>;

    /// Told which layers will be opened, in order, before the first is: a
    /// remote source starts fetching ahead into `spool_dir`. Local sources
    /// need nothing.
    fn prepare(&self, _needed: &[LayerDescriptor], _spool_dir: &Path) {}
}

/// What opening a source may need beyond its spec.
#[derive(Clone, Default)]
pub struct SourceContext {
    /// The registry client, for `docker://` sources.
    pub registry: Option<Arc<Registry>>,
    /// Which platforms of an index to publish (registries, OCI layouts).
    pub platforms: PlatformSelection,
    /// What a layer may hold (entries, paths, sizes, compression ratio).
    pub limits: crate::Limits,
}

/// Opens `spec` as one or more images (one per selected platform of a
/// registry's or an OCI layout's index, or of a docker archive).
pub fn open_all(
    spec: &SourceRef,
    original: &str,
    ctx: &SourceContext,
) -> Result<Vec<Box<dyn ImageSource>>, SourceError> {
    match spec {
        SourceRef::Registry { reference } => {
            let registry = ctx
                .registry
                .as_ref()
                .ok_or_else(|| SourceError::InvalidSpec {
                    spec: original.to_owned(),
                    reason: "internal: no registry client configured".into(),
                })?;
            Ok(
                registry::open_all(registry, reference, original, &ctx.platforms)?
                    .into_iter()
                    .map(|s| Box::new(s) as Box<dyn ImageSource>)
                    .collect(),
            )
        }
        SourceRef::OciLayout { dir, tag } => Ok(oci_layout::OciLayoutSource::open_all(
            dir,
            tag.as_deref(),
            original,
            &ctx.platforms,
        )?
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn ImageSource>)
        .collect()),
        SourceRef::DockerArchive { file } => {
            Ok(
                docker_archive::DockerArchiveSource::open_all(file, original, &ctx.platforms)?
                    .into_iter()
                    .map(|s| Box::new(s) as Box<dyn ImageSource>)
                    .collect(),
            )
        }
    }
}

/// Opens `spec`; `original` is the spec string as the user gave it (used in
/// [`ResolvedImage::source`] and in every error message).
pub fn open(spec: &SourceRef, original: &str) -> Result<Box<dyn ImageSource>, SourceError> {
    Ok(match spec {
        SourceRef::OciLayout { dir, tag } => Box::new(oci_layout::OciLayoutSource::open(
            dir,
            tag.as_deref(),
            original,
        )?),
        SourceRef::DockerArchive { file } => {
            Box::new(docker_archive::DockerArchiveSource::open(file, original)?)
        }
        SourceRef::Registry { .. } => {
            let registry = Arc::new(Registry::new(stratum_registry::RegistryConfig::default())?);
            let ctx = SourceContext {
                registry: Some(registry),
                platforms: PlatformSelection::Host,
                ..Default::default()
            };
            let mut all = open_all(spec, original, &ctx)?;
            all.swap_remove(0)
        }
    })
}

/// Checks that `layer` is the image's layer at `layer.index`.
pub(crate) fn check_layer(
    image: &ResolvedImage,
    layer: &LayerDescriptor,
) -> Result<(), SourceError> {
    if image.layers.get(layer.index) == Some(layer) {
        Ok(())
    } else {
        Err(SourceError::UnknownLayer {
            image: image.source.clone(),
            index: layer.index,
            digest: layer.digest,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn oci(dir: &str, tag: Option<&str>) -> SourceRef {
        SourceRef::OciLayout {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn parse_oci() {
        assert_eq!(
            SourceRef::parse("oci:/tmp/x:latest").unwrap(),
            oci("/tmp/x", Some("latest"))
        );
        assert_eq!(SourceRef::parse("oci:/tmp/x").unwrap(), oci("/tmp/x", None));
        assert_eq!(SourceRef::parse("oci:rel").unwrap(), oci("rel", None));
        assert_eq!(
            SourceRef::parse("oci:./a:b/c").unwrap(),
            oci("./a:b/c", None)
        );
        assert_eq!(
            SourceRef::parse("oci:a:b:c").unwrap(),
            oci("a:b", Some("c"))
        );
        assert_eq!("oci:d:t".parse::<SourceRef>().unwrap(), oci("d", Some("t")));
        for bad in [
            "oci:",
            "oci::t",
            "oci:/x:",
            "",
            "foo",
            "/tmp/x",
            "docker-archive:",
        ] {
            assert!(
                matches!(SourceRef::parse(bad), Err(SourceError::InvalidSpec { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parse_archive_and_later() {
        assert_eq!(
            SourceRef::parse("docker-archive:/a/b.tar").unwrap(),
            SourceRef::DockerArchive {
                file: PathBuf::from("/a/b.tar")
            }
        );
        let e = SourceRef::parse("oci-archive:/x.tar").unwrap_err();
        assert!(matches!(e, SourceError::NotSupported { .. }));
        assert!(e.to_string().contains("not supported yet"), "{e}");
        let r = SourceRef::parse("docker://127.0.0.1:5000/app:1").unwrap();
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/app:1");
        assert!(SourceRef::parse("docker://h:5000/app@sha256:xyz").is_err());
        assert!(SourceRef::parse("docker://h:5000/app:bad tag").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["oci:/tmp/x:latest", "oci:/tmp/x", "docker-archive:/a/b.tar"] {
            assert_eq!(SourceRef::parse(s).unwrap().to_string(), s);
        }
    }
}
