//! The stratum client.
//!
//! This crate reads a published repository on a node. It keeps the reading
//! of catalogs and content separate from where the bytes come from:
//! [`ObjectSource`] is the one seam between them (a local [`Store`] now, an
//! HTTP transport with a verified cache later).
//!
//! - [`materialize`]: the eager `stratum pull`, which writes a subtree of the
//!   namespace into a local directory, never writing outside it.
//! - [`Remote`]: a repository over HTTP(S) ([`transport`]: mirrors, retries,
//!   timeouts) through the node's verified, quota-bounded [`cache`]; it is an
//!   [`ObjectSource`], and [`RemoteLoader`] loads a namespace's catalogs.
//! - [`replicate`]: mirrors a served repository into a storage backend,
//!   incrementally, every object verified, the manifest written last.
//!
//! [`Store`]: stratum_catalog::Store

mod error;
pub mod fs;
mod pull;
mod source;

pub mod cache;
pub mod remote;
pub mod replicate;
pub mod transport;

pub use error::PullError;
pub use pull::{materialize, PullOptions, PullStats};
pub use source::ObjectSource;

pub use cache::CacheUsage;
pub use remote::{
    default_cache_dir, CachedObject, Remote, RemoteConfig, RemoteLoader, DEFAULT_QUOTA,
};
pub use transport::{FailureKind, FetchError, MirrorFailure, TransportStats};
