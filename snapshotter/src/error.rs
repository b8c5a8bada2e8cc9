//! Errors of the snapshotter, mapped onto the gRPC codes containerd turns
//! back into its `errdefs` (NotFound, AlreadyExists, FailedPrecondition…).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The live mount no longer serves a layer tree a snapshot stands on.
    #[error("layer tree {path} is not served by the repository mount: {source}")]
    TreeGone {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The mount did not answer in time (server or FUSE daemon stuck).
    #[error("layer tree {path}: the repository mount did not answer within {secs} s")]
    TreeTimeout { path: PathBuf, secs: u64 },
    /// `--mount` is not a whole-repository mount (no `layers/`).
    #[error("{} is not a whole-repository stratum mount (start `stratum mount URL MOUNTPOINT` first)", .0.display())]
    NotAMount(PathBuf),
    #[error("metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) | Error::TreeGone { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::TreeTimeout { .. } => tonic::Status::unavailable(msg),
            Error::NotAMount(_) => tonic::Status::unavailable(msg),
            Error::Db(_) | Error::Io { .. } | Error::Internal(_) => tonic::Status::internal(msg),
        }
    }
}
