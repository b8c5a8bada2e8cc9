//! OCI platforms: [`stratum_catalog::platform`], the one `Platform` type.

pub use stratum_catalog::platform::{Platform, PlatformError};

impl From<PlatformError> for crate::RegistryError {
    fn from(e: PlatformError) -> Self {
        crate::RegistryError::InvalidPlatform {
            platform: e.platform,
            reason: e.reason,
        }
    }
}
