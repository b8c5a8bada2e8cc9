//! The stratum publisher: reads OCI images from their sources, ingests
//! their layers into the content-addressed store, builds per-layer and flat
//! trees, and publishes signed revisions.
//!
//! Data flows one way: [`source`] → [`ingest`] (tar → rows and objects) →
//! [`flat`] (merged tree) → [`namespace_writer`] (partitions, `/images`,
//! root) → [`repo`] (durable commit of the manifest).

pub mod apptainer;
pub mod compact;
pub mod error;
pub mod event_log;
pub mod flat;
/// Entry points of the fuzz targets (`fuzz/`) and of the tests that replay
/// their corpora; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod history;
pub mod ingest;
pub mod limits;
pub mod names;
pub mod namespace_writer;
pub mod objects;
pub mod prefetch;
pub mod publish;
pub mod repo;
pub mod source;
pub mod sync;
mod tree;
pub mod wishlist;

pub use error::{PublishError, Result};
pub use limits::Limits;
pub use publish::{
    publish, ImageReport, NoProgress, PrefetchRequest, Progress, PublishOutcome, PublishRequest,
    Transaction,
};
pub use repo::Repository;
