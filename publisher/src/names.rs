//! Image names under `/images`: [`stratum_catalog::image_name`].

pub use stratum_catalog::image_name::{ImageName, ImageNameError};

use crate::error::PublishError;

impl From<ImageNameError> for PublishError {
    fn from(e: ImageNameError) -> Self {
        PublishError::InvalidName {
            name: e.name,
            reason: e.reason,
        }
    }
}
