//! The one error type of the registry client. Every variant names the image
//! reference and what was being fetched or pushed, so a failed sync line is
//! actionable on its own.

use thiserror::Error;

#[derive(Clone, Debug, Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform { platform: String, reason: String },

    #[error("registry configuration: {0}")]
    Config(String),

    #[error("credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },

    #[error(
        "{reference}: {what}: the registry refused the credentials or requires some \
         ({reason}); give them with --registry-user/--registry-password, \
         ~/.docker/config.json, $REGISTRY_AUTH_FILE or a credential helper"
    )]
    Unauthorized {
        reference: String,
        what: String,
        reason: String,
    },

    #[error("{reference}: {what}: not found in the registry ({reason})")]
    NotFound {
        reference: String,
        what: String,
        reason: String,
    },

    #[error("{reference}: no entry of the index serves platform {wanted} (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("{reference}: {what}: {reason}")]
    Protocol {
        reference: String,
        what: String,
        reason: String,
    },

    #[error("{reference}: {what}: gave up after {attempts} attempts: {reason}")]
    Exhausted {
        reference: String,
        what: String,
        attempts: u32,
        reason: String,
    },

    #[error("{reference}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{reference}: {what}: larger than the limit of {limit} bytes")]
    TooLarge {
        reference: String,
        what: String,
        limit: u64,
    },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
