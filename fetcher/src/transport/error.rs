//! What a fetch reports when it fails: [`FetchError`], with the last
//! failure of every mirror asked ([`MirrorFailure`]).

use stratum_catalog::{ObjectId, ObjectKind};

/// Why a fetch (or opening a remote) failed. Cloneable, so that one failed
/// download can be reported to every caller that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    /// The configuration cannot work (no URL, a URL that is not http(s)).
    #[error("configuration: {0}")]
    Config(String),
    /// No mirror has the path (404/410 everywhere).
    #[error("{what}: not found on any mirror ({})", .urls.join(", "))]
    NotFound { what: String, urls: Vec<String> },
    /// Every mirror failed, within the retry budget. `failures` holds the
    /// last failure of each mirror asked.
    #[error("{what}: failed after {attempts} attempts: {}", show_failures(.failures))]
    Failed {
        what: String,
        attempts: u32,
        failures: Vec<MirrorFailure>,
    },
    /// The newest manifest offered is older than one this cache has already
    /// verified for the same repository and key (rollback protection).
    #[error(
        "manifest of {name} from {url}: revision {offered} is older than revision {seen} already seen by this cache (refusing a rollback)"
    )]
    Rollback {
        name: String,
        url: String,
        offered: u64,
        seen: u64,
    },
    /// The local cache directory cannot be used.
    #[error("cache {path}: {reason}")]
    Cache {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A verified catalog cannot be opened (not a valid catalog, unsupported
    /// version).
    #[error("catalog {id}: {reason}")]
    Catalog { id: ObjectId, reason: String },
    /// A manifest object of the signed history does not verify (signature,
    /// format, or another repository's name).
    #[error("manifest object {id}: {reason}")]
    Manifest { id: ObjectId, reason: String },
}

fn show_failures(f: &[MirrorFailure]) -> String {
    f.iter()
        .map(|m| format!("{}: {}", m.url, m.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl FetchError {
    /// True when the failures were all refusals of the bytes (corrupt
    /// objects, bad signatures) rather than the network.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, FetchError::Failed { failures, .. }
            if !failures.is_empty() && failures.iter().all(|f| f.kind == FailureKind::Rejected))
    }

    /// This error as the catalog crate's, for code written against
    /// [`stratum_catalog::Error`] (`Namespace`, `materialize`): not found →
    /// `MissingObject`, refused bytes → `CorruptObject`, an invalid catalog →
    /// `InvalidCatalog`, anything else → `Io` on the object's repository
    /// path, with this error's message.
    pub fn to_catalog_error(&self, id: &ObjectId, kind: ObjectKind) -> stratum_catalog::Error {
        match self {
            FetchError::NotFound { .. } => stratum_catalog::Error::MissingObject(*id),
            FetchError::Catalog { reason, .. } => stratum_catalog::Error::InvalidCatalog {
                catalog: id.to_hex(),
                reason: reason.clone(),
            },
            e if e.is_corrupt() => stratum_catalog::Error::CorruptObject {
                id: *id,
                reason: e.to_string(),
            },
            e => stratum_catalog::Error::Io {
                path: std::path::PathBuf::from(id.path(kind)),
                error: std::io::Error::other(e.to_string()),
            },
        }
    }
}

/// For `read` paths that speak `io::Error` (FUSE replies EIO): kind
/// `NotFound` for [`FetchError::NotFound`], `InvalidData` for refused bytes,
/// `Other` otherwise; the message is kept.
impl From<FetchError> for std::io::Error {
    fn from(e: FetchError) -> Self {
        let kind = match &e {
            FetchError::NotFound { .. } => std::io::ErrorKind::NotFound,
            e if e.is_corrupt() => std::io::ErrorKind::InvalidData,
            FetchError::Catalog { .. }
            | FetchError::Manifest { .. }
            | FetchError::Rollback { .. } => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The last failure of one mirror during one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The full URL asked.
    pub url: String,
    pub kind: FailureKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused, DNS, TLS, connect timeout.
    Connect,
    /// No response or no body byte within the read timeout, or the overall
    /// deadline passed.
    Timeout,
    /// An HTTP status other than 200.
    Status(u16),
    /// The body ended before its declared length, or reading it failed.
    Truncated,
    /// The body is larger than allowed.
    TooLarge,
    /// The bytes arrived but were refused (hash mismatch, not a zstd frame,
    /// bad signature, rollback).
    Rejected,
}
