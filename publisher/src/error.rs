//! [`PublishError`]: the error type of ingestion and publishing. Every
//! variant names the image and, where it applies, the layer and tar path.

use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Repository(#[from] stratum_catalog::Error),
    #[error(transparent)]
    Registry(#[from] stratum_registry::RegistryError),
    #[error("{image}: layer {layer} ({diff_id}): entry {path:?}: {reason}")]
    Entry {
        image: String,
        layer: usize,
        diff_id: String,
        path: String,
        reason: String,
    },
    #[error("{image}: layer {layer} ({diff_id}): {reason}")]
    Layer {
        image: String,
        layer: usize,
        diff_id: String,
        reason: String,
    },
    #[error("{image}: {reason}")]
    Image { image: String, reason: String },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("repository {repo}: {reason}")]
    Repo { repo: String, reason: String },
    /// Stopped on request (`SyncOptions::cancel`); nothing was published.
    #[error("cancelled")]
    Cancelled,
    #[error("I/O error on {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

pub type Result<T, E = PublishError> = std::result::Result<T, E>;
