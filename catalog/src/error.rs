//! The one error type of the format crate.

use std::path::PathBuf;

use crate::ObjectId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid object id {0:?}: expected 64 lowercase hex digits")]
    InvalidObjectId(String),
    #[error("invalid object path {0:?}")]
    InvalidObjectPath(String),
    #[error("object {id} is corrupt: {reason}")]
    CorruptObject { id: ObjectId, reason: String },
    #[error("object {0} is missing from the repository")]
    MissingObject(ObjectId),
    #[error("object {id} is {size} bytes, over the limit of {limit}")]
    ObjectTooLarge { id: ObjectId, size: u64, limit: u64 },
    /// The object's frame declares another size than the catalog states:
    /// refused before decoding (a small frame declaring a huge size is a
    /// decompression bomb).
    #[error("object {id} declares {declared} bytes, the catalog states {expected}")]
    SizeMismatch {
        id: ObjectId,
        declared: u64,
        expected: u64,
    },
    #[error("I/O error on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("catalog {catalog}: {source}")]
    Sqlite {
        catalog: String,
        source: rusqlite::Error,
    },
    #[error("catalog {catalog} is invalid: {reason}")]
    InvalidCatalog { catalog: String, reason: String },
    #[error("unsupported format version {found} in {what} (this build reads versions 1 to {expected}; a newer stratum wrote it)")]
    UnsupportedVersion {
        what: String,
        found: u64,
        expected: u32,
    },
    #[error("manifest is invalid: {0}")]
    InvalidManifest(String),
    #[error("manifest signature does not verify with the given public key")]
    BadSignature,
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error("{path:?}: no such file or directory in the repository namespace")]
    NotFound { path: String },
    /// A conditional write lost a race: `path` is no longer what this
    /// process last saw there (see `backend_s3`).
    #[error("{path} was not replaced: {reason}")]
    Conflict { path: String, reason: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
