//! The stratum client: what a node (or a replica) needs to read a published
//! repository, verifying everything it reads.
//!
//! Reading catalogs and content is kept apart from where the bytes come
//! from. [`ObjectSource`] (content, for [`materialize`]) and
//! [`fs::TreeStore`] (catalogs and content, for the FUSE file system) are the
//! seams: a repository read directly through its [`Store`] (a directory or an
//! `s3://` bucket) and a [`Remote`] over HTTP(S) both implement them.
//!
//! - [`Remote`]: a repository over HTTP(S) ([`transport`]: mirrors, retries,
//!   timeouts) through the node's verified, quota-bounded [`cache`], which
//!   also refuses older revisions and another repository's manifest
//!   ([`RemoteConfig::expected_name`]); [`RemoteLoader`] loads a namespace's
//!   catalogs from it.
//! - [`materialize`]: the eager `stratum pull`, which writes a subtree of the
//!   namespace into a local directory, never writing outside it.
//! - [`fs`]: the read-only FUSE file system over a namespace or one tree
//!   ([`fs::StratumFs`], [`fs::serve`]), the background prefetch, and which
//!   overlayfs markers layer trees show ([`fs::OverlayXattrs`]).
//! - [`Remote::poll_manifest`]: a conditional request for a newer signed
//!   revision, for mounts that follow the repository ([`fs::Live`]).
//! - [`replicate`]: mirrors a served repository into a storage backend (a
//!   directory or an S3 bucket prefix), incrementally, every object
//!   verified, the manifest written last.
//! - [`bundle`]: an OCI runtime bundle's `config.json` for a published
//!   image (as `umoci unpack` writes it), rooted in a mount of its flat tree.
//!
//! Not here: path resolution across catalogs is
//! `stratum_catalog::namespace`; whether a signed revision vouches for a
//! thin descriptor's pinned catalogs is `stratum_thin_image::vouch_for_pins`;
//! the `stratum mount` command (signals, the `--layers` overlay stack) is
//! in the CLI (`src/mount.rs`); fetching descriptors from registries is
//! `stratum_thin_image::fetch` (its `registry` feature).
//!
//! [`Store`]: stratum_catalog::Store

pub mod bundle;
mod error;
pub mod fs;
mod pull;
mod refresh;
mod source;

pub mod cache;
pub mod remote;
pub mod replicate;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;

pub use error::PullError;
pub use pull::{materialize, PullOptions, PullStats, DEFAULT_PULL_JOBS};
pub use source::{ContentFuture, ObjectSource};

pub use cache::CacheUsage;
pub use refresh::Poll;
pub use remote::{
    default_cache_dir, CachedObject, Remote, RemoteConfig, RemoteLoader, DEFAULT_QUOTA,
};
pub use transport::{FailureKind, FetchError, MirrorFailure, TransportStats, Validators};
