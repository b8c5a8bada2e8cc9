//! `mount --thin` and `pull --thin`: a descriptor read from a file, or
//! fetched by reference (`docker://…`) from an OCI registry for a platform,
//! every blob verified and the descriptor read strictly.
//!
//! Behind the `registry` feature, next to `oci_artifact.rs` and `push.rs`
//! (see there why this is `thin-image`'s and not `registry`'s).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_registry::{Platform, Reference, Registry, RegistryError};

use crate::{ThinImage, ThinImageError, ARTIFACT_TYPE, MEDIA_TYPE};

/// Why a descriptor could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching a thin image")]
    Registry(#[source] RegistryError),
    #[error("thin image {reference}")]
    Descriptor {
        reference: String,
        #[source]
        source: ThinImageError,
    },
    #[error(
        "thin image {reference}: the index {index} lists {digest} for platform {entry}, but its \
         descriptor is for {own}"
    )]
    PlatformMismatch {
        reference: String,
        index: String,
        digest: String,
        /// The platform the index entry claims.
        entry: String,
        /// The descriptor's own.
        own: String,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{label}")]
    File {
        label: String,
        #[source]
        source: ThinImageError,
    },
}

/// A thin image fetched from a registry.
pub struct FetchedThin {
    pub thin: ThinImage,
    /// Digest of the artifact manifest.
    pub digest: String,
    /// When the reference named an index: the platform of the entry taken.
    pub platform: Option<Platform>,
}

impl FetchedThin {
    /// How to name it in messages: `thin image REF (PLATFORM: DIGEST)` when
    /// taken from an index, else `thin image REF@DIGEST`.
    pub fn label(&self, r: &Reference) -> String {
        match &self.platform {
            Some(p) => format!("thin image {r} ({p}: {})", self.digest),
            None => format!("thin image {r}@{}", self.digest),
        }
    }
}

/// Fetches the thin image `r` names for `platform` (an index is resolved to
/// it), verifies every blob and reads the descriptor strictly
/// ([`ThinImage::from_artifact`]). The descriptor's own platform must be
/// the one the index entry claims.
pub fn fetch_thin(
    registry: &Arc<Registry>,
    r: &Reference,
    platform: &Platform,
) -> Result<FetchedThin, FetchError> {
    let pulled = registry
        .pull_artifact_for(r, ARTIFACT_TYPE, MEDIA_TYPE, platform)
        .map_err(FetchError::Registry)?;
    let thin =
        ThinImage::from_artifact(&pulled.artifact).map_err(|source| FetchError::Descriptor {
            reference: r.to_string(),
            source,
        })?;
    let own = thin.platform.to_oci();
    let entry = match pulled.index {
        Some((index, entry)) => {
            if !(entry.matches(&own) && own.matches(&entry)) {
                return Err(FetchError::PlatformMismatch {
                    reference: r.to_string(),
                    index,
                    digest: pulled.digest,
                    entry: entry.to_string(),
                    own: own.to_string(),
                });
            }
            Some(entry)
        }
        None => {
            if !platform.matches(&own) {
                tracing::warn!("thin image {r} is for {own}, not for this host's {platform}");
            }
            None
        }
    };
    Ok(FetchedThin {
        thin,
        digest: pulled.digest,
        platform: entry,
    })
}

/// A descriptor file, read strictly ([`ThinImage::from_json`]); returns it
/// and how to name it in messages (`thin image PATH`).
pub fn read_file(path: &Path) -> Result<(ThinImage, String), FetchError> {
    let bytes = std::fs::read(path).map_err(|source| FetchError::Read {
        path: path.to_owned(),
        source,
    })?;
    let label = format!("thin image {}", path.display());
    match ThinImage::from_json(&bytes) {
        Ok(thin) => Ok((thin, label)),
        Err(source) => Err(FetchError::File { label, source }),
    }
}
