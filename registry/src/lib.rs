//! stratum's OCI registry client.
//!
//! One blocking [`Registry`] per process. The publisher uses it for
//! `docker://` sources and the tag lists of wishlist globs
//! (`stratum_publisher::source`, `stratum_publisher::sync`); `thin-image`,
//! with its `registry` feature, uses it to push thin images as artifacts
//! and to fetch them back by reference (`stratum_thin_image::push`,
//! `fetch`, `sync_push`). It owns how registries are reached
//! ([`RegistryConfig`]: plain HTTP only for hosts named insecure, extra CAs,
//! credentials from flags, the environment, `$REGISTRY_AUTH_FILE`,
//! `~/.docker/config.json` and credential helpers) and how failures are
//! survived ([`RetryPolicy`]: 429 and 5xx back off and retry, honouring
//! `Retry-After`; broken blob transfers resume). It checks digests of what it
//! reads whole (manifests, configs, artifacts); layer blobs are streamed and
//! verified by their consumer.
//!
//! Its plain types are used without a client too: `stratum-thin-image`
//! wraps descriptors as an [`Artifact`] and names their [`Platform`], and
//! `stratum-fetcher` takes the node's platform from [`Platform::host`].

mod artifact;
mod blob;
mod client;
mod config;
mod error;
mod platform;
mod reference;

pub use artifact::{
    Artifact, ArtifactListing, IndexEntry, PulledArtifact, PushedManifest,
    ARTIFACT_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
};
pub use blob::BlobReader;
pub use client::{sha256_digest, RawManifest, Registry, MANIFEST_MEDIA_TYPES};
pub use config::{Credentials, RegistryConfig, RetryPolicy};
pub use error::{RegistryError, Result};
pub use platform::{Platform, PlatformError};
pub use reference::Reference;
