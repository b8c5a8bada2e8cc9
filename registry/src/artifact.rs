//! OCI artifacts: one small blob under an image manifest whose
//! `artifactType` and config media type say what it is (the OCI 1.1 way,
//! which registries without artifact support still store as an image).
//!
//! An artifact made for several platforms is pushed as one untagged
//! artifact per platform and an OCI image index, at the tag, whose entries
//! carry `platform` and `artifactType` ([`Registry::push_artifact_index`]);
//! [`Registry::pull_artifact_for`] resolves such an index to one platform.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::client::{sha256_digest, RawManifest, Registry};
use crate::error::{RegistryError, Result};
use crate::platform::Platform;
use crate::reference::Reference;

pub const ARTIFACT_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One artifact: a config blob and one payload blob, both typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub artifact_type: String,
    pub config_media_type: String,
    pub config: Vec<u8>,
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// An artifact manifest as pushed: what an index entry needs to name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedManifest {
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// One entry of an artifact index: a pushed artifact and its platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub manifest: PushedManifest,
    pub platform: Platform,
    pub artifact_type: String,
    pub annotations: BTreeMap<String, String>,
}

/// An artifact fetched by [`Registry::pull_artifact_for`].
#[derive(Clone, Debug)]
pub struct PulledArtifact {
    pub artifact: Artifact,
    /// Digest of the artifact's own manifest.
    pub digest: String,
    /// When the reference named an index: its digest and the platform of
    /// the entry chosen.
    pub index: Option<(String, Platform)>,
}

/// What a reference holds, as far as artifacts of one type are concerned
/// ([`Registry::inspect_artifact`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactListing {
    /// One artifact of the type; `payload` is its blob's digest.
    Single { digest: String, payload: String },
    /// An index; one `(platform, manifest digest)` per entry of the type
    /// (entries of other types are left out).
    Index {
        digest: String,
        entries: Vec<(Platform, String)>,
    },
    /// Something else: a container image, an artifact of another type.
    Other { digest: String, kind: String },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct IndexPlatform {
    architecture: String,
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<IndexPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageIndex {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    manifests: Vec<IndexDescriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl IndexDescriptor {
    fn platform(&self) -> Option<Platform> {
        self.platform
            .as_ref()
            .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()))
    }
}

fn protocol(r: &Reference, what: &str, reason: String) -> RegistryError {
    RegistryError::Protocol {
        reference: r.to_string(),
        what: what.into(),
        reason,
    }
}

fn is_index(raw: &RawManifest) -> bool {
    raw.media_type == INDEX_MEDIA_TYPE || raw.media_type == DOCKER_LIST_MEDIA_TYPE
}

impl Artifact {
    /// The artifact's image manifest (config and payload blobs by digest).
    fn manifest_bytes(&self, r: &Reference) -> Result<Vec<u8>> {
        let manifest = ArtifactManifest {
            schema_version: 2,
            media_type: ARTIFACT_MANIFEST_MEDIA_TYPE.into(),
            artifact_type: Some(self.artifact_type.clone()),
            config: Descriptor {
                media_type: self.config_media_type.clone(),
                digest: sha256_digest(&self.config),
                size: self.config.len() as u64,
            },
            layers: vec![Descriptor {
                media_type: self.media_type.clone(),
                digest: sha256_digest(&self.payload),
                size: self.payload.len() as u64,
            }],
            annotations: self.annotations.clone(),
        };
        serde_json::to_vec(&manifest).map_err(|e| protocol(r, "artifact manifest", e.to_string()))
    }
}

impl Registry {
    /// Pushes `a` to `r` (its tag); returns the manifest digest.
    pub fn push_artifact(self: &Arc<Self>, r: &Reference, a: &Artifact) -> Result<String> {
        let bytes = self.push_artifact_blobs(r, a)?;
        self.push_manifest(r, &bytes, ARTIFACT_MANIFEST_MEDIA_TYPE)
    }

    /// Pushes `a` into `r`'s repository by digest, without a tag (to be
    /// named by an index, [`Registry::push_artifact_index`]).
    pub fn push_artifact_untagged(
        self: &Arc<Self>,
        r: &Reference,
        a: &Artifact,
    ) -> Result<PushedManifest> {
        let bytes = self.push_artifact_blobs(r, a)?;
        let digest = sha256_digest(&bytes);
        let pushed = self.push_manifest(
            &r.with_digest(&digest),
            &bytes,
            ARTIFACT_MANIFEST_MEDIA_TYPE,
        )?;
        debug_assert_eq!(pushed, digest);
        Ok(PushedManifest {
            digest,
            size: bytes.len() as u64,
        })
    }

    fn push_artifact_blobs(self: &Arc<Self>, r: &Reference, a: &Artifact) -> Result<Vec<u8>> {
        self.push_blob(r, &a.config)?;
        self.push_blob(r, &a.payload)?;
        a.manifest_bytes(r)
    }

    /// Pushes an OCI image index at `r`'s tag naming `entries` (artifacts
    /// already pushed into the same repository, one per platform). The
    /// index carries `artifact_type`, and each entry its `platform` and
    /// `artifactType`. Returns the index digest.
    pub fn push_artifact_index(
        self: &Arc<Self>,
        r: &Reference,
        artifact_type: &str,
        entries: &[IndexEntry],
        annotations: &BTreeMap<String, String>,
    ) -> Result<String> {
        if entries.is_empty() {
            return Err(protocol(r, "artifact index", "no entries".into()));
        }
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|o| o.platform == e.platform) {
                return Err(protocol(
                    r,
                    "artifact index",
                    format!("platform {} is listed twice", e.platform),
                ));
            }
        }
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            artifact_type: Some(artifact_type.to_owned()),
            manifests: entries
                .iter()
                .map(|e| IndexDescriptor {
                    media_type: ARTIFACT_MANIFEST_MEDIA_TYPE.into(),
                    digest: e.manifest.digest.clone(),
                    size: e.manifest.size,
                    platform: Some(IndexPlatform {
                        architecture: e.platform.architecture.clone(),
                        os: e.platform.os.clone(),
                        variant: e.platform.variant.clone(),
                    }),
                    artifact_type: Some(e.artifact_type.clone()),
                    annotations: e.annotations.clone(),
                })
                .collect(),
            annotations: annotations.clone(),
        };
        let bytes =
            serde_json::to_vec(&index).map_err(|e| protocol(r, "artifact index", e.to_string()))?;
        self.push_manifest(r, &bytes, INDEX_MEDIA_TYPE)
    }

    /// Fetches the artifact `r` names and checks that it is of
    /// `artifact_type` with one payload of `media_type`; every blob is
    /// verified against its digest. An index is resolved to this host's
    /// platform. Returns it with its manifest digest.
    pub fn pull_artifact(
        self: &Arc<Self>,
        r: &Reference,
        artifact_type: &str,
        media_type: &str,
    ) -> Result<(Artifact, String)> {
        let p = self.pull_artifact_for(r, artifact_type, media_type, &Platform::host())?;
        Ok((p.artifact, p.digest))
    }

    /// [`Registry::pull_artifact`] for `platform`: when `r` names an index,
    /// takes its first entry of `artifact_type` whose platform serves
    /// `platform` ([`Platform::matches`]), checked against the size and
    /// digest the index gives. Fails with [`RegistryError::NoPlatform`],
    /// listing what the index has, when none does.
    pub fn pull_artifact_for(
        self: &Arc<Self>,
        r: &Reference,
        artifact_type: &str,
        media_type: &str,
        platform: &Platform,
    ) -> Result<PulledArtifact> {
        let raw = self.manifest(r)?;
        if !is_index(&raw) {
            let (artifact, digest) = self.artifact_of(r, raw, artifact_type, media_type)?;
            return Ok(PulledArtifact {
                artifact,
                digest,
                index: None,
            });
        }
        let index: ImageIndex = serde_json::from_slice(&raw.bytes)
            .map_err(|e| protocol(r, "artifact index", format!("not an OCI image index: {e}")))?;
        let of_type = |d: &&IndexDescriptor| {
            d.artifact_type
                .as_deref()
                .is_none_or(|t| t == artifact_type)
        };
        let chosen = index
            .manifests
            .iter()
            .filter(of_type)
            .find(|d| d.platform().is_some_and(|p| platform.matches(&p)));
        let Some(entry) = chosen else {
            let mut available: Vec<String> = index
                .manifests
                .iter()
                .filter(of_type)
                .map(|d| {
                    d.platform()
                        .map_or_else(|| "(no platform)".into(), |p| p.to_string())
                })
                .collect();
            available.dedup();
            return Err(RegistryError::NoPlatform {
                reference: r.to_string(),
                wanted: platform.to_string(),
                available: if available.is_empty() {
                    format!("no entry of artifact type {artifact_type}")
                } else {
                    available.join(", ")
                },
            });
        };
        let chosen_platform = entry.platform().unwrap_or_else(|| platform.clone());
        let pinned = r.with_digest(&entry.digest);
        let child = self.manifest(&pinned)?;
        if child.bytes.len() as u64 != entry.size {
            return Err(protocol(
                &pinned,
                "artifact manifest",
                format!(
                    "{} bytes, but the index says {}",
                    child.bytes.len(),
                    entry.size
                ),
            ));
        }
        if is_index(&child) {
            return Err(protocol(
                &pinned,
                "artifact manifest",
                "an index inside an index is not an artifact".into(),
            ));
        }
        let (artifact, digest) = self.artifact_of(&pinned, child, artifact_type, media_type)?;
        Ok(PulledArtifact {
            artifact,
            digest,
            index: Some((raw.digest, chosen_platform)),
        })
    }

    /// What `r` holds now, without fetching any blob; `None` when the
    /// registry has no such tag (or repository).
    pub fn inspect_artifact(
        self: &Arc<Self>,
        r: &Reference,
        artifact_type: &str,
    ) -> Result<Option<ArtifactListing>> {
        let raw = match self.manifest(r) {
            Ok(raw) => raw,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if is_index(&raw) {
            let index: ImageIndex = serde_json::from_slice(&raw.bytes).map_err(|e| {
                protocol(r, "artifact index", format!("not an OCI image index: {e}"))
            })?;
            let entries: Vec<(Platform, String)> = index
                .manifests
                .iter()
                .filter(|d| d.artifact_type.as_deref() == Some(artifact_type))
                .filter_map(|d| Some((d.platform()?, d.digest.clone())))
                .collect();
            return Ok(Some(if entries.is_empty() {
                ArtifactListing::Other {
                    digest: raw.digest,
                    kind: "an image index".into(),
                }
            } else {
                ArtifactListing::Index {
                    digest: raw.digest,
                    entries,
                }
            }));
        }
        let listing = match serde_json::from_slice::<ArtifactManifest>(&raw.bytes) {
            Ok(m) => {
                let found = m.artifact_type.as_deref().unwrap_or(&m.config.media_type);
                match m.layers.as_slice() {
                    [layer] if found == artifact_type => ArtifactListing::Single {
                        digest: raw.digest,
                        payload: layer.digest.clone(),
                    },
                    _ => ArtifactListing::Other {
                        digest: raw.digest,
                        kind: format!("a manifest of type {found}"),
                    },
                }
            }
            Err(_) => ArtifactListing::Other {
                digest: raw.digest,
                kind: format!("a document of media type {:?}", raw.media_type),
            },
        };
        Ok(Some(listing))
    }

    /// The payload digest of the artifact manifest `digest` of `r`'s
    /// repository (for comparing what is there with what would be pushed).
    pub fn artifact_payload_digest(
        self: &Arc<Self>,
        r: &Reference,
        digest: &str,
    ) -> Result<String> {
        let pinned = r.with_digest(digest);
        let raw = self.manifest(&pinned)?;
        let m: ArtifactManifest = serde_json::from_slice(&raw.bytes).map_err(|e| {
            protocol(
                &pinned,
                "artifact",
                format!("the manifest is not an OCI image manifest: {e}"),
            )
        })?;
        match m.layers.as_slice() {
            [layer] => Ok(layer.digest.clone()),
            other => Err(protocol(
                &pinned,
                "artifact",
                format!("expected one blob, the manifest lists {}", other.len()),
            )),
        }
    }

    /// Reads and checks the artifact of an (image) manifest already fetched.
    fn artifact_of(
        self: &Arc<Self>,
        r: &Reference,
        raw: RawManifest,
        artifact_type: &str,
        media_type: &str,
    ) -> Result<(Artifact, String)> {
        let bad = |reason: String| protocol(r, "artifact", reason);
        let m: ArtifactManifest = serde_json::from_slice(&raw.bytes)
            .map_err(|e| bad(format!("the manifest is not an OCI image manifest: {e}")))?;
        let found = m.artifact_type.as_deref().unwrap_or(&m.config.media_type);
        if found != artifact_type {
            return Err(bad(format!(
                "artifact type is {found:?}, expected {artifact_type:?} (is this a stratum thin image?)"
            )));
        }
        let [layer] = m.layers.as_slice() else {
            return Err(bad(format!(
                "expected one blob, the manifest lists {}",
                m.layers.len()
            )));
        };
        if layer.media_type != media_type {
            return Err(bad(format!(
                "the blob's media type is {:?}, expected {media_type:?}",
                layer.media_type
            )));
        }
        let config = self.blob_bytes(r, &m.config.digest, m.config.size)?;
        let payload = self.blob_bytes(r, &layer.digest, layer.size)?;
        debug_assert_eq!(sha256_digest(&payload), layer.digest);
        Ok((
            Artifact {
                artifact_type: found.to_owned(),
                config_media_type: m.config.media_type,
                config,
                media_type: layer.media_type.clone(),
                payload,
                annotations: m.annotations,
            },
            raw.digest,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn artifact_manifest_names_both_blobs() {
        let a = Artifact {
            artifact_type: "application/vnd.example+json".into(),
            config_media_type: "application/vnd.example.config+json".into(),
            config: b"{}".to_vec(),
            media_type: "application/vnd.example+json".into(),
            payload: b"{\"x\":1}".to_vec(),
            annotations: BTreeMap::from([("k".into(), "v".into())]),
        };
        let r = Reference::parse("docker://h:5000/a:1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.manifest_bytes(&r).unwrap()).unwrap();
        assert_eq!(v["mediaType"], ARTIFACT_MANIFEST_MEDIA_TYPE);
        assert_eq!(v["artifactType"], a.artifact_type);
        assert_eq!(v["config"]["digest"], sha256_digest(b"{}"));
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["layers"][0]["digest"], sha256_digest(&a.payload));
        assert_eq!(v["annotations"]["k"], "v");
    }

    #[test]
    fn index_entries_carry_platform_and_type() {
        let d = IndexDescriptor {
            media_type: ARTIFACT_MANIFEST_MEDIA_TYPE.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 10,
            platform: Some(IndexPlatform {
                architecture: "arm64".into(),
                os: "linux".into(),
                variant: Some("v8".into()),
            }),
            artifact_type: Some("t".into()),
            annotations: BTreeMap::new(),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["platform"]["variant"], "v8");
        assert_eq!(v["artifactType"], "t");
        assert!(v.get("annotations").is_none());
        assert_eq!(
            d.platform().unwrap(),
            "linux/arm64/v8".parse::<Platform>().unwrap()
        );
    }
}
