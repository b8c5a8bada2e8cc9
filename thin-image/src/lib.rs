//! The thin-image descriptor: a small, versioned JSON document that tells a
//! node where one published image lives in a stratum repository, so that it
//! can mount the image (flat, or per layer with overlayfs) without pulling any
//! tarball and without trusting a newer manifest than the one it was made from.
//!
//! `docs/THIN-IMAGE.md` is the normative description and
//! `docs/thin-image.schema.json` its JSON Schema; this crate implements both:
//!
//! - the types ([`ThinImage`] and its parts), serialized with serde under the
//!   exact member names of the format;
//! - strict parsing ([`ThinImage::from_json`]): the `schemaVersion` and
//!   `mediaType` are checked before anything else, unknown members are
//!   refused, and every id, digest, path, name and URL is validated
//!   ([`ThinImage::validate`]);
//! - building a descriptor from what a publish recorded in the `/images`
//!   catalog ([`ThinImage::build`]);
//! - writing it to a file atomically ([`descriptor_file`]);
//! - with the `registry` feature: wrapping it as an OCI artifact for
//!   registries and reading it back ([`ThinImage::to_artifact`],
//!   [`ThinImage::from_artifact`]), building descriptors from a published
//!   repository (`published`), pushing them to a registry (`push`, and the
//!   pushes of a sync in `sync_push`) and fetching them by reference
//!   (`fetch`). Without it the crate links no registry client.
//!
//! Example (the shape; see `docs/THIN-IMAGE.md` for a complete one):
//!
//! ```text
//! { "schemaVersion": 1,
//!   "mediaType": "application/vnd.stratum.thin-image.v1+json",
//!   "image": "local/app:1.0", "manifestDigest": "sha256:…",
//!   "platform": {"os": "linux", "architecture": "amd64"},
//!   "config": {"Env": […], "Cmd": […], …},
//!   "repository": {"name": "…", "urls": ["https://…"], "publicKeyFingerprint": "…", "revision": 7},
//!   "flat": {"path": "/flat/ab/…", "catalog": "…"},
//!   "layers": [{"digest": "sha256:…", "diffId": "sha256:…", "path": "/layers/cd/…", "catalog": "…", "size": 123}],
//!   "prioritizedFiles": ["/bin/sh"] }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stratum_catalog::catalog::ImageRecord;
use stratum_catalog::manifest::{key_fingerprint, Manifest};
use stratum_catalog::ObjectId;
/// The image's platform, from its OCI config.
pub use stratum_catalog::Platform;

mod artifact;
pub mod default_urls;
pub mod descriptor_file;
mod error;
#[cfg(feature = "registry")]
pub mod fetch;
/// Entry points of the fuzz targets (`fuzz/`) and of the tests that replay
/// their corpora; not a stable API. They round-trip artifacts.
#[cfg(feature = "registry")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "registry")]
mod oci_artifact;
#[cfg(feature = "registry")]
pub mod published;
#[cfg(feature = "registry")]
pub mod push;
#[cfg(feature = "registry")]
pub mod sync_push;
pub mod validate;
pub mod vouch;

pub use artifact::{
    ArtifactConfig, ANNOTATION_CREATED, ANNOTATION_PLATFORM, ANNOTATION_REF_NAME,
    ANNOTATION_REPOSITORY, ANNOTATION_REVISION, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MAX_CONFIG_BYTES,
};
/// The public-key type [`ThinImage::build`] and [`ThinImage::check_key`] take.
pub use ed25519_dalek::VerifyingKey;
pub use error::ThinImageError;
/// The artifact type [`ThinImage::to_artifact`] makes and [`ThinImage::from_artifact`] reads.
#[cfg(feature = "registry")]
pub use stratum_registry::Artifact;
pub use vouch::vouch_for_pins;

use validate::{
    check_clean_path, check_digest, check_hex64, check_image_name, check_platform_part,
    check_repository_name, check_tree_path, check_url,
};

/// The media type of a version-1 descriptor (the `mediaType` member, and the
/// media type of the file when it is served or wrapped as an OCI artifact).
pub const MEDIA_TYPE: &str = "application/vnd.stratum.thin-image.v1+json";

/// The `schemaVersion` this crate reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// The largest descriptor [`ThinImage::from_json`] accepts.
pub const MAX_DESCRIPTOR_BYTES: usize = 16 << 20;

/// A thin-image descriptor, version 1.
///
/// Fields are public so that a descriptor can be made or edited by hand;
/// [`ThinImage::validate`] (called by [`ThinImage::from_json`],
/// [`ThinImage::build`] and [`ThinImage::to_json_pretty`]) enforces the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThinImage {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u64,
    /// Always [`MEDIA_TYPE`].
    pub media_type: String,
    /// The image name as published under `/images`, e.g. `local/app:1.0`.
    pub image: String,
    /// `sha256:<hex>` of the image manifest; keys the flat tree.
    pub manifest_digest: String,
    pub platform: Platform,
    /// What a runtime needs from the OCI image config.
    pub config: RuntimeConfig,
    pub repository: RepositoryRef,
    /// The image's flat rootfs.
    pub flat: FlatTree,
    /// The per-layer trees, base layer first.
    pub layers: Vec<LayerTree>,
    /// Files to fetch first after mounting: absolute, clean paths inside the
    /// image rootfs, in the order they should be fetched. Omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prioritized_files: Vec<String>,
}

/// The part of the OCI image config (`config` object of the config JSON) that
/// a runtime needs, under the OCI member names. Absent and empty values are
/// omitted; `Entrypoint` and `Cmd` keep the difference between absent and `[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `VARNAME=VALUE` entries, in image order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub working_dir: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub user: Option<String>,
    /// The keys of the OCI `ExposedPorts` object (`80/tcp`, …), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub stop_signal: Option<String>,
}

/// Where the image lives and how to trust it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryRef {
    /// The repository name of its manifest.
    pub name: String,
    /// Base URLs of the repository (mirrors), in order of preference; at least one.
    pub urls: Vec<String>,
    /// Hex BLAKE3 of the 32-byte Ed25519 public key that signs the manifest
    /// ([`stratum_catalog::manifest::key_fingerprint`]).
    pub public_key_fingerprint: String,
    /// The revision the descriptor was made from; the catalog ids below are
    /// those of that revision.
    pub revision: u64,
}

/// The flat rootfs tree of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlatTree {
    /// `/flat/<hex[0..2]>/<hex>`, hex of `manifestDigest`.
    pub path: String,
    /// Id (64 hex) of the flat catalog mounted at `path`.
    pub catalog: String,
}

impl FlatTree {
    /// The catalog id, parsed.
    pub fn catalog_id(&self) -> Result<ObjectId, ThinImageError> {
        parse_id("flat.catalog", &self.catalog)
    }
}

/// One layer of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerTree {
    /// The layer blob's digest as published by the source.
    pub digest: String,
    /// The uncompressed layer's digest; keys the layer tree.
    pub diff_id: String,
    /// `/layers/<hex[0..2]>/<hex>`, hex of `diffId`.
    pub path: String,
    /// Id (64 hex) of the layer catalog mounted at `path`.
    pub catalog: String,
    /// The blob's size in bytes, as its descriptor declared it.
    pub size: u64,
}

impl LayerTree {
    /// The catalog id, parsed.
    pub fn catalog_id(&self) -> Result<ObjectId, ThinImageError> {
        parse_id("layers[].catalog", &self.catalog)
    }
}

/// For optional members: absent is `None`, present must be a value (`null`
/// is refused, as the schema refuses it).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

fn parse_id(field: &str, s: &str) -> Result<ObjectId, ThinImageError> {
    ObjectId::from_hex(s).map_err(|e| ThinImageError::invalid(field, e.to_string()))
}

/// The two members checked before anything else, whatever the rest holds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
    #[serde(default)]
    media_type: Option<serde_json::Value>,
}

/// The OCI image config file, only as far as [`RuntimeConfig`] needs it.
/// Lenient: the publisher already validated it; `null` is absent.
#[derive(Deserialize)]
struct OciConfigFile {
    #[serde(default)]
    config: Option<OciConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OciConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

impl RuntimeConfig {
    /// Extracts the runtime part of an OCI image config JSON (the bytes of
    /// the config blob). Empty `WorkingDir`, `User` and `StopSignal` strings
    /// (as `docker` writes them) count as absent.
    pub fn from_oci_config(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let file: OciConfigFile = serde_json::from_slice(bytes)?;
        let c = match file.config {
            Some(c) => c,
            None => return Ok(RuntimeConfig::default()),
        };
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(RuntimeConfig {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            exposed_ports: c
                .exposed_ports
                .map(|m| m.into_keys().collect())
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: non_empty(c.stop_signal),
        })
    }
}

impl ThinImage {
    /// Parses and validates a descriptor. Checks, in this order: the size,
    /// `schemaVersion` (must be the integer [`SCHEMA_VERSION`]), `mediaType`
    /// (must be [`MEDIA_TYPE`]), the shape (no missing, unknown or mistyped
    /// member), then every value ([`ThinImage::validate`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ThinImageError> {
        if bytes.len() > MAX_DESCRIPTOR_BYTES {
            return Err(ThinImageError::TooLarge {
                size: bytes.len(),
                limit: MAX_DESCRIPTOR_BYTES,
            });
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        check_schema_version(probe.schema_version.as_ref())?;
        check_media_type(probe.media_type.as_ref())?;
        let thin: ThinImage = serde_json::from_slice(bytes)?;
        thin.validate()?;
        Ok(thin)
    }

    /// The descriptor as pretty-printed JSON (2-space indent, members in
    /// format order, labels sorted, no trailing newline). Refuses an invalid
    /// descriptor, so that nothing invalid is ever written.
    pub fn to_json_pretty(&self) -> Result<String, ThinImageError> {
        self.validate()?;
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Checks every rule of the format that the types do not express.
    pub fn validate(&self) -> Result<(), ThinImageError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ThinImageError::UnsupportedSchemaVersion {
                found: self.schema_version.to_string(),
                expected: SCHEMA_VERSION,
            });
        }
        if self.media_type != MEDIA_TYPE {
            return Err(ThinImageError::UnsupportedMediaType {
                found: format!("{:?}", self.media_type),
                expected: MEDIA_TYPE,
            });
        }
        check_image_name("image", &self.image)?;
        let manifest_hex = check_digest("manifestDigest", &self.manifest_digest)?;

        let p = &self.platform;
        check_platform_part("platform.os", &p.os)?;
        check_platform_part("platform.architecture", &p.architecture)?;
        if let Some(v) = &p.variant {
            check_platform_part("platform.variant", v)?;
        }

        let r = &self.repository;
        check_repository_name("repository.name", &r.name)?;
        if r.urls.is_empty() {
            return Err(ThinImageError::invalid(
                "repository.urls",
                "at least one URL is needed",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, u) in r.urls.iter().enumerate() {
            let field = format!("repository.urls[{i}]");
            check_url(&field, u)?;
            if !seen.insert(u.as_str()) {
                return Err(ThinImageError::invalid(
                    field,
                    format!("{u:?} is listed twice"),
                ));
            }
        }
        check_hex64("repository.publicKeyFingerprint", &r.public_key_fingerprint)?;
        if r.revision == 0 {
            return Err(ThinImageError::invalid(
                "repository.revision",
                "revisions start at 1",
            ));
        }

        check_tree_path(
            "flat.path",
            &self.flat.path,
            "/flat",
            manifest_hex,
            "manifest",
        )?;
        check_hex64("flat.catalog", &self.flat.catalog)?;

        let mut by_diff_id: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            let f = |m: &str| format!("layers[{i}].{m}");
            check_digest(&f("digest"), &l.digest)?;
            let diff_hex = check_digest(&f("diffId"), &l.diff_id)?;
            check_tree_path(&f("path"), &l.path, "/layers", diff_hex, "diffId")?;
            check_hex64(&f("catalog"), &l.catalog)?;
            if let Some(other) = by_diff_id.insert(&l.diff_id, &l.catalog) {
                if other != l.catalog {
                    return Err(ThinImageError::invalid(
                        f("catalog"),
                        format!(
                            "diffId {} appears again with another catalog ({other} before)",
                            l.diff_id
                        ),
                    ));
                }
            }
        }

        let mut seen = BTreeSet::new();
        for (i, p) in self.prioritized_files.iter().enumerate() {
            let field = format!("prioritizedFiles[{i}]");
            check_clean_path(&field, p)?;
            if !seen.insert(p.as_str()) {
                return Err(ThinImageError::invalid(
                    field,
                    format!("{p:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Builds the descriptor of one published image.
    ///
    /// - `record`: the image's row of the `/images` catalog of the revision
    ///   that `manifest` describes (name, digests, platform, flat and layer
    ///   trees with their catalog ids, raw OCI config);
    /// - `manifest`: the verified manifest of that revision (repository name,
    ///   revision);
    /// - `key`: the public key that verified it (its fingerprint is recorded);
    /// - `urls`: the repository's base URLs, in order of preference.
    ///
    /// `prioritizedFiles` is left empty ([`ThinImage::with_prioritized_files`]).
    pub fn build(
        record: &ImageRecord,
        manifest: &Manifest,
        key: &VerifyingKey,
        urls: &[String],
    ) -> Result<Self, ThinImageError> {
        let build_err = |reason: String| ThinImageError::Build {
            image: record.name.clone(),
            reason,
        };
        let parts: Vec<&str> = record.platform.split('/').collect();
        let platform = match parts.as_slice() {
            [os, arch] => Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            },
            [os, arch, variant] => Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            },
            _ => {
                return Err(build_err(format!(
                    "platform {:?} is not os/architecture[/variant]",
                    record.platform
                )))
            }
        };
        let config = RuntimeConfig::from_oci_config(&record.config)
            .map_err(|e| build_err(format!("unreadable OCI image config: {e}")))?;
        let thin = ThinImage {
            schema_version: SCHEMA_VERSION,
            media_type: MEDIA_TYPE.to_owned(),
            image: record.name.clone(),
            manifest_digest: record.manifest_digest.to_string(),
            platform,
            config,
            repository: RepositoryRef {
                name: manifest.name.clone(),
                urls: urls.to_vec(),
                public_key_fingerprint: key_fingerprint(key),
                revision: manifest.revision,
            },
            flat: FlatTree {
                path: record.flat_path.clone(),
                catalog: record.flat_catalog.clone(),
            },
            layers: record
                .layers
                .iter()
                .map(|l| LayerTree {
                    digest: l.digest.to_string(),
                    diff_id: l.diff_id.to_string(),
                    path: l.layer_path.clone(),
                    catalog: l.catalog.clone(),
                    size: l.size,
                })
                .collect(),
            prioritized_files: Vec::new(),
        };
        thin.validate()?;
        Ok(thin)
    }

    /// Sets `prioritizedFiles` (absolute, clean paths inside the image,
    /// no duplicates), validating them.
    pub fn with_prioritized_files(mut self, files: Vec<String>) -> Result<Self, ThinImageError> {
        self.prioritized_files = files;
        self.validate()?;
        Ok(self)
    }

    /// Refuses `key` unless it is the key the descriptor names
    /// (`repository.publicKeyFingerprint`).
    pub fn check_key(&self, key: &VerifyingKey) -> Result<(), ThinImageError> {
        let found = key_fingerprint(key);
        if found == self.repository.public_key_fingerprint {
            Ok(())
        } else {
            Err(ThinImageError::KeyMismatch {
                expected: self.repository.public_key_fingerprint.clone(),
                found,
            })
        }
    }
}

fn check_schema_version(v: Option<&serde_json::Value>) -> Result<(), ThinImageError> {
    match v {
        Some(v) if v.as_u64() == Some(SCHEMA_VERSION) => Ok(()),
        other => Err(ThinImageError::UnsupportedSchemaVersion {
            found: other.map_or_else(|| "(missing)".to_owned(), |v| v.to_string()),
            expected: SCHEMA_VERSION,
        }),
    }
}

fn check_media_type(v: Option<&serde_json::Value>) -> Result<(), ThinImageError> {
    match v {
        Some(serde_json::Value::String(s)) if s == MEDIA_TYPE => Ok(()),
        other => Err(ThinImageError::UnsupportedMediaType {
            found: other.map_or_else(|| "(missing)".to_owned(), |v| v.to_string()),
            expected: MEDIA_TYPE,
        }),
    }
}

/// The file name `stratum publish --thin-dir` gives an image's descriptor:
/// the image name with `/` and `:` replaced by `_`, plus `.json`
/// (`local/app:1.0` → `local_app_1.0.json`).
pub fn descriptor_file_name(image: &str) -> String {
    let mut s: String = image
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    s.push_str(".json");
    s
}

#[cfg(test)]
mod tests;

/// Checks that a catalog fetched by an id the descriptor pins is the tree
/// the descriptor says it is: a hash-verified catalog proves its bytes, not
/// that the id in the descriptor was not swapped for another real tree's.
/// Every catalog records its kind and namespace path, so a swap is caught.
pub fn check_pinned_catalog(
    catalog: &stratum_catalog::catalog::Catalog,
    kind: stratum_catalog::catalog::CatalogKind,
    path: &str,
) -> Result<(), ThinImageError> {
    if catalog.kind() != kind || catalog.path() != path {
        return Err(ThinImageError::Invalid {
            field: path.to_owned(),
            reason: format!(
                "catalog {} is the {} tree {}, not the {} tree {path}",
                catalog.id(),
                catalog.kind().as_str(),
                catalog.path(),
                kind.as_str()
            ),
        });
    }
    Ok(())
}
