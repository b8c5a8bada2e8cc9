//! The descriptor as an OCI artifact, so that it can be pushed to and pulled
//! from a registry by reference (`docs/THIN-IMAGE.md` §8).
//!
//! One image manifest whose `artifactType` is [`ARTIFACT_TYPE`] (the
//! descriptor's own media type), whose config is a small JSON document of
//! media type [`CONFIG_MEDIA_TYPE`] ([`ArtifactConfig`]: schema version,
//! image, manifest digest, platform) and whose one blob is the descriptor,
//! exactly as `stratum thin` writes it. [`ThinImage::from_artifact`] reads
//! one back and refuses anything that is not exactly that. Those two need
//! the registry client's artifact type: they are in `oci_artifact.rs`,
//! behind the `registry` feature; the names and the config are here.

use serde::{Deserialize, Serialize};

use crate::{Platform, MEDIA_TYPE};

/// The `artifactType` of a thin-image artifact (and of an index of them):
/// the descriptor's media type.
pub const ARTIFACT_TYPE: &str = MEDIA_TYPE;

/// The media type of the artifact's config blob ([`ArtifactConfig`]).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.stratum.thin-image.config.v1+json";

/// The largest config blob [`ThinImage::from_artifact`] accepts.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// OCI annotation: the image name (`NAME:TAG` as published).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// OCI annotation: when the artifact was made (RFC 3339, UTC).
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// The platform, `os/architecture[/variant]`.
pub const ANNOTATION_PLATFORM: &str = "vnd.stratum.thin-image.platform";
/// The repository name.
pub const ANNOTATION_REPOSITORY: &str = "vnd.stratum.thin-image.repository";
/// The repository revision the descriptor pins.
pub const ANNOTATION_REVISION: &str = "vnd.stratum.thin-image.revision";

/// The artifact's config blob: what the descriptor is of, readable without
/// fetching the descriptor. It must agree with the descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactConfig {
    /// The descriptor's `schemaVersion`.
    pub schema_version: u64,
    /// The descriptor's `image`.
    pub image: String,
    /// The descriptor's `manifestDigest`.
    pub manifest_digest: String,
    /// The descriptor's `platform`.
    pub platform: Platform,
}
