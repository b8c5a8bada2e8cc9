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

/// An error and its sources on one line, `outer: inner: …`, as `anyhow`
/// shows `{:#}`: the cause that names what failed ("connection refused",
/// "certificate") often hides several sources deep. A source whose text
/// the line already holds (errors that embed their source) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn error_chain_joins_every_source() {
        let e = layer(
            "GET http://x/data/ab",
            Some(layer("connect", Some(layer("connection refused", None)))),
        );
        assert_eq!(
            error_chain(&e),
            "GET http://x/data/ab: connect: connection refused"
        );
    }

    #[test]
    fn error_chain_skips_a_source_the_message_already_holds() {
        let e = layer("request failed: timed out", Some(layer("timed out", None)));
        assert_eq!(error_chain(&e), "request failed: timed out");
    }
}
