//! The one error type of the thin-image crate.

/// Why a descriptor was refused (parsing, validation) or could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ThinImageError {
    /// The bytes are over [`crate::MAX_DESCRIPTOR_BYTES`].
    #[error("thin-image descriptor is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// `schemaVersion` is missing, not an integer, or a version this build does not read.
    #[error(
        "unsupported thin-image schemaVersion {found} (this build reads schemaVersion {expected})"
    )]
    UnsupportedSchemaVersion { found: String, expected: u64 },
    /// `mediaType` is missing or not [`crate::MEDIA_TYPE`].
    #[error("unsupported thin-image mediaType {found} (this build reads {expected:?})")]
    UnsupportedMediaType {
        found: String,
        expected: &'static str,
    },
    /// Not JSON, or JSON of the wrong shape (missing, unknown or mistyped members).
    #[error("not a valid thin-image descriptor: {0}")]
    Json(#[from] serde_json::Error),
    /// A member has a value the format does not allow.
    #[error("invalid thin-image descriptor: {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The published metadata a descriptor is built from is unusable.
    #[error("cannot build the thin-image descriptor of {image}: {reason}")]
    Build { image: String, reason: String },
    /// An OCI artifact that is not a well-formed thin-image artifact.
    #[error("not a valid thin-image artifact: {0}")]
    Artifact(String),
    /// The descriptor was made for another repository key.
    #[error(
        "the thin-image descriptor names public key {expected}, but the key given has fingerprint {found}"
    )]
    KeyMismatch { expected: String, found: String },
    /// No revision signed by the repository key holds the catalogs the
    /// descriptor pins (see [`crate::vouch`]).
    #[error("thin image {image}: its pinned catalogs are not vouched for by a signed revision: {reason}")]
    Unvouched { image: String, reason: String },
}

impl ThinImageError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ThinImageError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
