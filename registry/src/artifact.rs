//! OCI artifacts: one small blob under an image manifest whose
//! `artifactType` and config media type say what it is (the OCI 1.1 way,
//! which registries without artifact support still store as an image).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::client::{sha256_digest, Registry};
use crate::error::{RegistryError, Result};
use crate::reference::Reference;

pub const ARTIFACT_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

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

impl Registry {
    /// Pushes `a` to `r` (its tag); returns the manifest digest.
    pub fn push_artifact(self: &Arc<Self>, r: &Reference, a: &Artifact) -> Result<String> {
        let config = self.push_blob(r, &a.config)?;
        let payload = self.push_blob(r, &a.payload)?;
        let manifest = ArtifactManifest {
            schema_version: 2,
            media_type: ARTIFACT_MANIFEST_MEDIA_TYPE.into(),
            artifact_type: Some(a.artifact_type.clone()),
            config: Descriptor {
                media_type: a.config_media_type.clone(),
                digest: config,
                size: a.config.len() as u64,
            },
            layers: vec![Descriptor {
                media_type: a.media_type.clone(),
                digest: payload,
                size: a.payload.len() as u64,
            }],
            annotations: a.annotations.clone(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| RegistryError::Protocol {
            reference: r.to_string(),
            what: "artifact manifest".into(),
            reason: e.to_string(),
        })?;
        self.push_manifest(r, &bytes, ARTIFACT_MANIFEST_MEDIA_TYPE)
    }

    /// Fetches the artifact `r` names and checks that it is of
    /// `artifact_type` with one payload of `media_type`; every blob is
    /// verified against its digest. Returns it with its manifest digest.
    pub fn pull_artifact(
        self: &Arc<Self>,
        r: &Reference,
        artifact_type: &str,
        media_type: &str,
    ) -> Result<(Artifact, String)> {
        let raw = self.manifest(r)?;
        let bad = |reason: String| RegistryError::Protocol {
            reference: r.to_string(),
            what: "artifact".into(),
            reason,
        };
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
