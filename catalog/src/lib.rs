//! The stratum repository format, version 2 (version 1 is read too).
//!
//! Everything a reader or writer of a repository must agree on lives here and
//! nowhere else: object ids and their paths ([`ObjectId`], [`layout`]), the OCI
//! digests images are recorded under ([`Sha256Digest`]), the object
//! encoding ([`object`]), the SQLite catalog schema ([`catalog`]), the signed
//! manifest ([`manifest`]), prefetch lists ([`prefetch_list`]) and the
//! storage backends ([`backend`]).
//! `docs/FORMAT.md` is the normative description; this crate implements it.
//!
//! The crate knows nothing of the network, and of OCI images only the
//! platform names (`linux/amd64`) that per-platform image names carry.

pub mod backend;
#[cfg(feature = "s3")]
pub mod backend_s3;
pub mod catalog;
pub mod digest;
mod error;
/// Entry points of the fuzz targets (`fuzz/`) and of the tests that replay
/// their corpora; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod image_index;
pub mod image_name;
pub mod layout;
pub mod location;
pub mod lock;
pub mod manifest;
pub mod namespace;
pub mod object;
mod object_id;
pub mod platform;
pub mod prefetch_list;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;

pub use digest::{DigestError, Sha256Digest};
pub use error::{error_chain, Error, Result};
pub use object_id::{is_hex64, ObjectId, ObjectKind};
pub use platform::Platform;
pub use store::{Put, Store};

/// The repository format version this crate writes. Readers accept every
/// version from [`OLDEST_FORMAT_VERSION`] to this one (a version-2
/// repository keeps the version-1 catalogs it was upgraded from) and refuse
/// manifests and catalogs that declare another.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Whether this crate reads format version `v`.
pub fn reads_version(v: u64) -> bool {
    (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v)
}

/// The `tracing` target of notices for the person running a command, such
/// as "waiting for the repository lock …": libraries never print; they emit
/// an event with this target, and the `stratum` binary writes its message
/// as a plain line on stderr (whatever `RUST_LOG` says), while any other
/// program sees an ordinary `tracing` event.
pub const NOTICE: &str = "stratum::notice";
