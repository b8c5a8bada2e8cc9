//! `stratum thin push` (and the pushes of a sync): the descriptors of a
//! published image pushed to an OCI registry as artifacts, one per platform
//! under an image index when the image was published for several.
//!
//! This lives in `thin-image` behind its `registry` feature, next to
//! `oci_artifact.rs`, rather than in `registry`: what is pushed (which
//! images, which descriptors, when a tag already holds them) is this
//! format's business, and `registry` stays a generic OCI client that knows
//! no stratum format (`thin-image` with the feature depends on it, never the
//! other way round).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stratum_catalog::catalog::ImageRecord;
use stratum_registry::{
    sha256_digest, Artifact, ArtifactListing, IndexEntry, Reference, Registry, RegistryError,
};

use crate::published::{find_image, Published, PublishedError};
use crate::{
    default_urls, ThinImage, ThinImageError, ANNOTATION_CREATED, ANNOTATION_REF_NAME,
    ARTIFACT_TYPE, MEDIA_TYPE,
};

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushedThin {
    /// `docker://HOST/REPO:TAG`.
    pub reference: String,
    /// Digest of the manifest at the tag: the artifact's, or the index's.
    pub digest: String,
    /// The platforms pushed, `os/arch[/variant]`, the primary one first.
    pub platforms: Vec<String>,
    /// The tag already held these descriptors: nothing was pushed.
    pub unchanged: bool,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}: thin images are pushed to a tag, not to a digest")]
    ToDigest(String),
    #[error(transparent)]
    Urls(#[from] default_urls::Error),
    #[error(transparent)]
    Published(#[from] PublishedError),
    #[error("prefetch list")]
    Prefetch(#[source] ThinImageError),
    #[error("thin image of {image}")]
    Artifact {
        image: String,
        #[source]
        source: ThinImageError,
    },
    #[error("pushing the thin image of {image}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error(
        "pushing the thin image of {image}: {dest} holds {kind}, not a stratum thin image \
         ({MEDIA_TYPE}); refusing to overwrite it: push to another tag, or delete it from the \
         registry first"
    )]
    Occupied {
        image: String,
        dest: String,
        kind: String,
    },
}

/// Pushes the thin image of `image` (published in `repo`, verified with
/// `pubkey` or the repository's own key) to `dest` (a tag): one artifact,
/// or, when the image was published for several platforms (`NAME:TAG+slug`
/// names next to `NAME:TAG`), one untagged artifact per platform and an
/// image index at `dest`. `urls` empty means the repository's default URLs;
/// `prefetch`, the descriptors' prioritized files. Nothing is pushed when
/// `dest` already holds the same descriptors; a tag holding anything else
/// than a thin image is not overwritten.
pub fn push(
    repo: &Path,
    pubkey: Option<&Path>,
    image: &str,
    dest: &Reference,
    urls: &[String],
    prefetch: Option<&[String]>,
    registry: &Arc<Registry>,
) -> Result<PushedThin, PushError> {
    if dest.digest().is_some() {
        return Err(PushError::ToDigest(dest.to_string()));
    }
    let urls = default_urls::given_or_default(repo, urls)?;
    let reader = Published::open(repo, pubkey)?;
    let images = reader.variants(image)?;
    let (records, multi) = platform_set(&images, image, repo)?;
    let mut artifacts: Vec<(ThinImage, Artifact)> = Vec::new();
    for record in &records {
        let mut thin = reader.build(record, &urls)?;
        if let Some(files) = prefetch {
            thin = thin
                .with_prioritized_files(files.to_vec())
                .map_err(PushError::Prefetch)?;
        }
        let artifact = thin.to_artifact().map_err(|source| PushError::Artifact {
            image: record.name.clone(),
            source,
        })?;
        artifacts.push((thin, artifact));
    }
    let platforms: Vec<String> = artifacts
        .iter()
        .map(|(t, _)| t.platform.to_string())
        .collect();
    let pushing = |source| PushError::Registry {
        image: image.to_owned(),
        source,
    };
    if let Some(digest) = already_there(registry, dest, &artifacts, multi).map_err(|e| match e {
        Held::Registry(e) => pushing(e),
        Held::Other(kind) => PushError::Occupied {
            image: image.to_owned(),
            dest: dest.to_string(),
            kind,
        },
    })? {
        return Ok(PushedThin {
            reference: dest.to_string(),
            digest,
            platforms,
            unchanged: true,
        });
    }
    let digest = if multi {
        let mut entries = Vec::new();
        for (thin, artifact) in &artifacts {
            let manifest = registry
                .push_artifact_untagged(dest, artifact)
                .map_err(pushing)?;
            entries.push(IndexEntry {
                manifest,
                platform: thin.platform.to_oci(),
                artifact_type: ARTIFACT_TYPE.to_owned(),
                annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), thin.image.clone())]),
            });
        }
        let created = artifacts
            .first()
            .and_then(|(_, a)| a.annotations.get(ANNOTATION_CREATED).cloned())
            .unwrap_or_default();
        let annotations = BTreeMap::from([
            (ANNOTATION_REF_NAME.to_owned(), image.to_owned()),
            (ANNOTATION_CREATED.to_owned(), created),
        ]);
        registry
            .push_artifact_index(dest, ARTIFACT_TYPE, &entries, &annotations)
            .map_err(pushing)?
    } else {
        let (_, artifact) = &artifacts[0];
        registry.push_artifact(dest, artifact).map_err(pushing)?
    };
    Ok(PushedThin {
        reference: dest.to_string(),
        digest,
        platforms,
        unchanged: false,
    })
}

/// The images a push of `name` covers: `NAME:TAG` alone, or, when it was
/// published for several platforms, its `NAME:TAG+slug` siblings (the one
/// `NAME:TAG` points to first). True when there are siblings.
pub fn platform_set<'a>(
    images: &'a [ImageRecord],
    name: &str,
    repo: &Path,
) -> Result<(Vec<&'a ImageRecord>, bool), PublishedError> {
    let record = find_image(images, name, repo)?;
    if name.contains('+') {
        return Ok((vec![record], false));
    }
    let prefix = format!("{name}+");
    let mut siblings: Vec<&ImageRecord> = images
        .iter()
        .filter(|i| i.name.strip_prefix(&prefix).is_some_and(|s| !s.is_empty()))
        .collect();
    if siblings.is_empty() {
        return Ok((vec![record], false));
    }
    if !siblings
        .iter()
        .any(|s| s.manifest_digest == record.manifest_digest)
    {
        // Left over from an earlier multi-platform publish of the name.
        tracing::warn!(
            "{name} is none of its per-platform images ({}); pushing {name} alone",
            siblings
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok((vec![record], false));
    }
    siblings.sort_by_key(|s| (s.manifest_digest != record.manifest_digest, s.name.clone()));
    Ok((siblings, true))
}

/// Why [`already_there`] could not say.
enum Held {
    Registry(RegistryError),
    /// The tag holds something else than a thin image (its kind).
    Other(String),
}

impl From<RegistryError> for Held {
    fn from(e: RegistryError) -> Self {
        Held::Registry(e)
    }
}

/// The digest at `dest` when it already holds exactly these descriptors
/// (same platforms, same blobs); `None` when something must be pushed.
/// Refuses to overwrite a tag that holds something else than a thin image.
fn already_there(
    registry: &Arc<Registry>,
    dest: &Reference,
    artifacts: &[(ThinImage, Artifact)],
    multi: bool,
) -> Result<Option<String>, Held> {
    let listing = registry.inspect_artifact(dest, ARTIFACT_TYPE)?;
    Ok(match listing {
        None => None,
        Some(ArtifactListing::Other { kind, .. }) => return Err(Held::Other(kind)),
        Some(ArtifactListing::Single { digest, payload }) => match artifacts {
            [(_, a)] if !multi && sha256_digest(&a.payload) == payload => Some(digest),
            _ => None,
        },
        Some(ArtifactListing::Index { digest, entries }) => {
            if !multi || entries.len() != artifacts.len() {
                return Ok(None);
            }
            for (thin, a) in artifacts {
                let want = thin.platform.to_oci();
                let Some((_, manifest)) = entries.iter().find(|(p, _)| *p == want) else {
                    return Ok(None);
                };
                if registry.artifact_payload_digest(dest, manifest)? != sha256_digest(&a.payload) {
                    return Ok(None);
                }
            }
            Some(digest)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use stratum_catalog::testing::image_record as record;

    #[test]
    fn platform_set_takes_the_siblings_primary_first() {
        let repo = Path::new("/repo");
        let images = vec![
            record("a:1", "linux/arm64/v8", 'b'),
            record("a:1+linux-amd64", "linux/amd64", 'a'),
            record("a:1+linux-arm64-v8", "linux/arm64/v8", 'b'),
            record("a:10", "linux/amd64", 'c'),
            record("b:1", "linux/amd64", 'd'),
            record("c:1", "linux/amd64", 'e'),
            record("c:1+linux-arm64", "linux/arm64", 'f'),
        ];
        let names = |name: &str| {
            let (set, multi) = platform_set(&images, name, repo).unwrap();
            (
                set.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                multi,
            )
        };
        assert_eq!(
            names("a:1"),
            (
                vec![
                    "a:1+linux-arm64-v8".to_owned(),
                    "a:1+linux-amd64".to_owned()
                ],
                true
            )
        );
        assert_eq!(names("a:10"), (vec!["a:10".to_owned()], false));
        assert_eq!(names("b:1"), (vec!["b:1".to_owned()], false));
        assert_eq!(
            names("a:1+linux-amd64"),
            (vec!["a:1+linux-amd64".to_owned()], false)
        );
        // Siblings that c:1 is none of (left over): c:1 alone.
        assert_eq!(names("c:1"), (vec!["c:1".to_owned()], false));
        let e = platform_set(&images, "z:1", repo).unwrap_err().to_string();
        assert!(e.contains("no image z:1"), "{e}");
    }
}
