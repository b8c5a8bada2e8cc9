//! The OCI (and Docker schema2) JSON documents the sources read, the media
//! types they accept, and the checks that turn a manifest and a config into
//! the image's layer list and platform.
//!
//! Only the fields stratum needs are modelled; unknown fields are ignored.
//! Digests are parsed strictly (sha256 only) while deserializing.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::decompress::layer_compression;
use super::digest::Digest;
use super::error::SourceError;
use super::LayerDescriptor;

/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation that names a manifest in an OCI layout's `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a descriptor points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An image manifest.
    Manifest,
    /// An image index / manifest list.
    Index,
}

/// The kind of document a media type names, if it is one we read.
pub(crate) fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }
}

/// A descriptor's platform.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// `os/arch[/variant]`.
pub(crate) fn platform_string(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// An image index (also `index.json` of a layout).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config that stratum reads.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub rootfs: RootFs,
}

/// `rootfs` of a config.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// Parses a JSON document, naming it in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(
    image: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, SourceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SourceError::malformed(image, what, format!("invalid JSON: {e}")))
}

/// Parses and checks an index blob; `expected` is the kind its descriptor named.
pub(crate) fn parse_index(image: &str, what: &str, bytes: &[u8]) -> Result<Index, SourceError> {
    let index: Index = parse_json(image, what, bytes)?;
    if index.schema_version != 2 {
        return Err(SourceError::malformed(
            image,
            what,
            format!("schemaVersion is {}, expected 2", index.schema_version),
        ));
    }
    check_own_media_type(image, what, index.media_type.as_deref(), Kind::Index)?;
    Ok(index)
}

/// Parses and checks a manifest blob.
pub(crate) fn parse_manifest(
    image: &str,
    what: &str,
    bytes: &[u8],
) -> Result<Manifest, SourceError> {
    let manifest: Manifest = parse_json(image, what, bytes)?;
    if manifest.schema_version != 2 {
        return Err(SourceError::malformed(
            image,
            what,
            format!("schemaVersion is {}, expected 2", manifest.schema_version),
        ));
    }
    check_own_media_type(image, what, manifest.media_type.as_deref(), Kind::Manifest)?;
    if let Some(mt) = manifest.config.media_type.as_deref() {
        if mt != OCI_CONFIG && mt != DOCKER_CONFIG {
            return Err(SourceError::UnsupportedMediaType {
                image: image.to_owned(),
                what: format!("the config of {what} (not a container image?)"),
                media_type: mt.to_owned(),
            });
        }
    }
    Ok(manifest)
}

/// A document's own `mediaType`, when present, must be of the kind expected.
fn check_own_media_type(
    image: &str,
    what: &str,
    media_type: Option<&str>,
    expected: Kind,
) -> Result<(), SourceError> {
    match media_type {
        None => Ok(()),
        Some(mt) if kind_of(mt) == Some(expected) => Ok(()),
        Some(mt) => Err(SourceError::malformed(
            image,
            what,
            format!("its mediaType {mt:?} is not an image {expected:?}"),
        )),
    }
}

/// Parses a config and returns it with its platform string.
pub(crate) fn parse_config(
    image: &str,
    what: &str,
    bytes: &[u8],
) -> Result<(Config, String), SourceError> {
    let config: Config = parse_json(image, what, bytes)?;
    if config.rootfs.kind != "layers" {
        return Err(SourceError::malformed(
            image,
            what,
            format!(
                "rootfs.type is {:?}, expected \"layers\"",
                config.rootfs.kind
            ),
        ));
    }
    if config.os.is_empty() || config.architecture.is_empty() {
        return Err(SourceError::malformed(
            image,
            what,
            "os or architecture is missing",
        ));
    }
    let platform = platform_string(&config.os, &config.architecture, config.variant.as_deref());
    Ok((config, platform))
}

/// Builds the layer list from a manifest's layer descriptors and the
/// config's diff_ids: every media type must be a known layer type and the
/// counts must agree.
pub(crate) fn layers_from(
    image: &str,
    layers: &[Descriptor],
    config: &Config,
) -> Result<Vec<LayerDescriptor>, SourceError> {
    let diff_ids = &config.rootfs.diff_ids;
    if layers.len() != diff_ids.len() {
        return Err(SourceError::LayerCountMismatch {
            image: image.to_owned(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(index, (d, diff_id))| {
            let media_type = d.media_type.clone().unwrap_or_default();
            let compression = layer_compression(&media_type).ok_or_else(|| {
                SourceError::UnsupportedMediaType {
                    image: image.to_owned(),
                    what: format!("layer {index} ({})", d.digest),
                    media_type: media_type.clone(),
                }
            })?;
            Ok(LayerDescriptor {
                index,
                digest: d.digest,
                diff_id: *diff_id,
                media_type,
                size: d.size,
                compression,
            })
        })
        .collect()
}

/// A descriptor as written in a synthesized manifest.
#[derive(Serialize)]
pub(crate) struct OutDescriptor<'a> {
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub digest: Digest,
    pub size: u64,
}

/// A synthesized OCI image manifest (field order fixed, so the bytes are
/// deterministic).
#[derive(Serialize)]
pub(crate) struct OutManifest<'a> {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub config: OutDescriptor<'a>,
    pub layers: Vec<OutDescriptor<'a>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"arm","os":"linux","variant":"v7",
        "rootfs":{"type":"layers","diff_ids":[
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;

    #[test]
    fn config_platform() {
        let (c, p) = parse_config("i", "config", CONFIG.as_bytes()).unwrap();
        assert_eq!(p, "linux/arm/v7");
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        let bad = CONFIG.replace("\"layers\"", "\"tarballs\"");
        assert!(parse_config("i", "config", bad.as_bytes()).is_err());
        let bad = CONFIG.replace("sha256:e3", "sha512:e3");
        let e = parse_config("i", "config", bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("sha512"), "{e}");
    }

    #[test]
    fn layer_checks() {
        let (config, _) = parse_config("i", "config", CONFIG.as_bytes()).unwrap();
        let d = |mt: &str| Descriptor {
            media_type: Some(mt.to_owned()),
            digest: Digest::of(b"x"),
            size: 1,
            annotations: None,
            platform: None,
        };
        let l = layers_from(
            "i",
            &[d("application/vnd.oci.image.layer.v1.tar+gzip")],
            &config,
        );
        assert_eq!(l.unwrap()[0].diff_id, Digest::of(b""));
        let e = layers_from("i", &[d("application/x-foo")], &config).unwrap_err();
        assert!(e.to_string().contains("application/x-foo") && e.to_string().contains("layer 0"));
        let e = layers_from("i", &[], &config).unwrap_err();
        assert!(matches!(
            e,
            SourceError::LayerCountMismatch {
                layers: 0,
                diff_ids: 1,
                ..
            }
        ));
    }

    #[test]
    fn own_media_type_must_agree() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","config":{{"digest":"{}","size":1}}}}"#,
            Digest::of(b"")
        );
        assert!(parse_manifest("i", "m", m.as_bytes()).is_err());
        let m = m.replace(OCI_INDEX, OCI_MANIFEST);
        assert!(parse_manifest("i", "m", m.as_bytes()).is_ok());
    }
}
