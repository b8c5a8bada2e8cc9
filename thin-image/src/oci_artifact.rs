//! [`ThinImage::to_artifact`] and [`ThinImage::from_artifact`]: the
//! descriptor as the registry client's [`Artifact`] (see `artifact.rs` for
//! its shape). Behind the `registry` feature.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use stratum_registry::Artifact;

use crate::{
    ArtifactConfig, ThinImage, ThinImageError, ANNOTATION_CREATED, ANNOTATION_PLATFORM,
    ANNOTATION_REF_NAME, ANNOTATION_REPOSITORY, ANNOTATION_REVISION, ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE, MAX_CONFIG_BYTES, MAX_DESCRIPTOR_BYTES, MEDIA_TYPE, SCHEMA_VERSION,
};

fn artifact_err(reason: impl Into<String>) -> ThinImageError {
    ThinImageError::Artifact(reason.into())
}

impl ThinImage {
    /// The descriptor as an OCI artifact, annotated with the time now.
    pub fn to_artifact(&self) -> Result<Artifact, ThinImageError> {
        self.to_artifact_at(SystemTime::now())
    }

    /// The descriptor as an OCI artifact whose `created` annotation is
    /// `created`. The blob is the descriptor as `stratum thin` writes it
    /// (pretty JSON and a newline); refuses an invalid descriptor.
    pub fn to_artifact_at(&self, created: SystemTime) -> Result<Artifact, ThinImageError> {
        let payload = self.to_file_text()?;
        let config = ArtifactConfig {
            schema_version: self.schema_version,
            image: self.image.clone(),
            manifest_digest: self.manifest_digest.clone(),
            platform: self.platform.clone(),
        };
        let annotations = BTreeMap::from([
            (ANNOTATION_REF_NAME.to_owned(), self.image.clone()),
            (ANNOTATION_CREATED.to_owned(), rfc3339(created)),
            (ANNOTATION_PLATFORM.to_owned(), self.platform.to_string()),
            (
                ANNOTATION_REPOSITORY.to_owned(),
                self.repository.name.clone(),
            ),
            (
                ANNOTATION_REVISION.to_owned(),
                self.repository.revision.to_string(),
            ),
        ]);
        Ok(Artifact {
            artifact_type: ARTIFACT_TYPE.to_owned(),
            config_media_type: CONFIG_MEDIA_TYPE.to_owned(),
            config: serde_json::to_vec(&config)?,
            media_type: MEDIA_TYPE.to_owned(),
            payload: payload.into_bytes(),
            annotations,
        })
    }

    /// Reads a descriptor back from an artifact: the artifact, config and
    /// blob media types must be this format's, the config must be a valid
    /// [`ArtifactConfig`] of at most [`MAX_CONFIG_BYTES`], the blob must pass
    /// [`ThinImage::from_json`] (at most [`MAX_DESCRIPTOR_BYTES`]), and the
    /// config must name the same image, manifest digest and platform.
    /// Annotations are informative and not trusted.
    pub fn from_artifact(a: &Artifact) -> Result<Self, ThinImageError> {
        if a.artifact_type != ARTIFACT_TYPE {
            return Err(artifact_err(format!(
                "artifact type is {:?}, expected {ARTIFACT_TYPE:?}",
                a.artifact_type
            )));
        }
        if a.config_media_type != CONFIG_MEDIA_TYPE {
            return Err(artifact_err(format!(
                "config media type is {:?}, expected {CONFIG_MEDIA_TYPE:?}",
                a.config_media_type
            )));
        }
        if a.media_type != MEDIA_TYPE {
            return Err(artifact_err(format!(
                "blob media type is {:?}, expected {MEDIA_TYPE:?}",
                a.media_type
            )));
        }
        if a.config.len() > MAX_CONFIG_BYTES {
            return Err(artifact_err(format!(
                "config is {} bytes, over the limit of {MAX_CONFIG_BYTES}",
                a.config.len()
            )));
        }
        if a.payload.len() > MAX_DESCRIPTOR_BYTES {
            return Err(ThinImageError::TooLarge {
                size: a.payload.len(),
                limit: MAX_DESCRIPTOR_BYTES,
            });
        }
        let config: ArtifactConfig =
            serde_json::from_slice(&a.config).map_err(|e| artifact_err(format!("config: {e}")))?;
        if config.schema_version != SCHEMA_VERSION {
            return Err(ThinImageError::UnsupportedSchemaVersion {
                found: config.schema_version.to_string(),
                expected: SCHEMA_VERSION,
            });
        }
        let thin = ThinImage::from_json(&a.payload)?;
        let disagree = |member: &str, c: &str, d: &str| {
            artifact_err(format!(
                "its config says {member} {c:?} but its descriptor {d:?}"
            ))
        };
        if config.image != thin.image {
            return Err(disagree("image", &config.image, &thin.image));
        }
        if config.manifest_digest != thin.manifest_digest {
            return Err(disagree(
                "manifestDigest",
                &config.manifest_digest,
                &thin.manifest_digest,
            ));
        }
        if config.platform != thin.platform {
            return Err(disagree(
                "platform",
                &config.platform.to_string(),
                &thin.platform.to_string(),
            ));
        }
        Ok(thin)
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC, whole seconds; times before 1970 as 1970).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
