//! [`SourceError`]: the one error type of image sources.
//!
//! Every variant names what failed: the image source (the spec string as the
//! user gave it), and where it applies the blob digest, the layer index or the
//! file path. The type is `Clone` (I/O errors are kept behind an `Arc`) so that
//! a [`LayerStream`](super::LayerStream) can hand the same failure to a read
//! and, later, to `finish()`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::digest::Digest;

/// Why opening an image source or streaming one of its layers failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The registry failed or refused (names the reference and the object).
    #[error(transparent)]
    Registry(#[from] stratum_registry::RegistryError),

    /// The source spec string could not be parsed.
    #[error("invalid image source {spec:?}: {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The spec names a kind of source that this version cannot read yet.
    #[error("image source {spec:?}: {transport} sources are not supported yet")]
    NotSupported {
        /// The spec as given.
        spec: String,
        /// The transport prefix, e.g. `docker://`.
        transport: String,
    },

    /// A string that should be a `sha256:<64 lowercase hex>` digest is not one.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The offending string (cut to a reasonable length).
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Reading was stopped on request (a sync being cancelled).
    #[error("{image}: cancelled")]
    Cancelled {
        /// The image source.
        image: String,
    },

    /// A file of the source could not be opened or read.
    #[error("{image}: cannot read {}: {error}", path.display())]
    Io {
        /// The image source.
        image: String,
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        error: Arc<io::Error>,
    },

    /// A document (index, manifest, config, `manifest.json`, archive member…)
    /// is not what it should be.
    #[error("{image}: {what}: {reason}")]
    Malformed {
        /// The image source.
        image: String,
        /// What was being read, e.g. `manifest sha256:…` or `index.json`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A manifest, index or config is larger than the limit for such documents.
    #[error("{image}: {what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The image source.
        image: String,
        /// What was being read.
        what: String,
        /// Its declared or actual size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A blob (manifest, index, config) has another size than its descriptor says.
    #[error("{image}: {what}: the descriptor says {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        /// The image source.
        image: String,
        /// Which blob, with its digest.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Size found (at most one byte more than expected is read).
        actual: u64,
    },

    /// A blob (manifest, index, config) has another sha256 than its descriptor says.
    #[error("{image}: {what}: content digest is {actual}, expected {expected}")]
    DigestMismatch {
        /// The image source.
        image: String,
        /// Which blob.
        what: String,
        /// Digest from the descriptor.
        expected: Digest,
        /// Digest of the bytes found.
        actual: Digest,
    },

    /// No manifest in the OCI layout carries the requested tag.
    #[error("{image}: no manifest is tagged {tag:?} (tags: {})", list(available))]
    TagNotFound {
        /// The image source.
        image: String,
        /// The requested tag.
        tag: String,
        /// Tags present in `index.json`.
        available: Vec<String>,
    },

    /// The OCI layout holds several manifests and no tag was given.
    #[error(
        "{image}: the layout holds {count} manifests, add a tag to choose one (tags: {})",
        list(available)
    )]
    TagRequired {
        /// The image source.
        image: String,
        /// How many manifests `index.json` lists.
        count: usize,
        /// Tags present in `index.json`.
        available: Vec<String>,
    },

    /// An image index has no manifest for the wanted platform.
    #[error(
        "{image}: {index} has no manifest for platform {wanted} (platforms: {})",
        list(available)
    )]
    PlatformNotFound {
        /// The image source.
        image: String,
        /// Which index (e.g. `image index sha256:…`).
        index: String,
        /// The platform looked for, e.g. `linux/amd64`.
        wanted: String,
        /// Platforms the index offers.
        available: Vec<String>,
    },

    /// Image indexes refer to each other in a loop, or nest too deeply.
    #[error("{image}: image index {digest}: {reason}")]
    IndexNesting {
        /// The image source.
        image: String,
        /// The index where the problem was found.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },

    /// A manifest, config or layer has a media type this reader does not accept.
    #[error("{image}: {what} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The image source.
        image: String,
        /// Which object, e.g. `layer 2 (sha256:…)`.
        what: String,
        /// The media type found.
        media_type: String,
    },

    /// The manifest and the config disagree on the number of layers.
    #[error(
        "{image}: the manifest lists {layers} layers but the config lists {diff_ids} diff_ids"
    )]
    LayerCountMismatch {
        /// The image source.
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },

    /// `open_layer` was given a descriptor that is not one of this image's layers.
    #[error("{image}: layer {index} ({digest}) is not a layer of this image")]
    UnknownLayer {
        /// The image source.
        image: String,
        /// The index given.
        index: usize,
        /// The digest given.
        digest: Digest,
    },

    /// A layer blob has another size than its descriptor says.
    #[error("{image}: layer {index} ({digest}): the blob has {actual} bytes, the manifest says {expected}")]
    LayerSize {
        /// The image source.
        image: String,
        /// Layer index, 0 = base.
        index: usize,
        /// Digest of the blob, from the manifest.
        digest: Digest,
        /// Size from the manifest.
        expected: u64,
        /// Size found (reading stops one byte past the expected size).
        actual: u64,
    },

    /// A layer blob's sha256 differs from its descriptor's digest.
    #[error("{image}: layer {index} ({digest}): the blob's content digest is {actual}")]
    LayerDigest {
        /// The image source.
        image: String,
        /// Layer index, 0 = base.
        index: usize,
        /// Digest from the manifest.
        digest: Digest,
        /// Digest of the bytes read.
        actual: Digest,
    },

    /// A layer's uncompressed bytes do not hash to the config's diff_id.
    #[error("{image}: layer {index} ({digest}): uncompressed digest is {actual}, the config's diff_id is {diff_id}")]
    LayerDiffId {
        /// The image source.
        image: String,
        /// Layer index, 0 = base.
        index: usize,
        /// Digest of the blob.
        digest: Digest,
        /// diff_id from the config.
        diff_id: Digest,
        /// Digest of the uncompressed bytes read (boxed to keep the error small).
        actual: Box<Digest>,
    },

    /// A layer blob decompresses to more bytes per compressed byte than
    /// [`Limits::max_ratio`](crate::Limits::max_ratio) allows: a
    /// decompression bomb, stopped before it is read to its end.
    #[error(
        "{image}: layer {index} ({digest}): {uncompressed} bytes decompressed from {compressed} \
         compressed bytes, more than the limit of {limit}:1 (a decompression bomb? see --max-ratio)"
    )]
    LayerRatio {
        /// The image source.
        image: String,
        /// Layer index, 0 = base.
        index: usize,
        /// Digest of the blob.
        digest: Digest,
        /// Compressed bytes read so far.
        compressed: u64,
        /// Uncompressed bytes produced so far.
        uncompressed: u64,
        /// The limit (uncompressed bytes per compressed byte).
        limit: u64,
    },

    /// Reading or decompressing a layer blob failed.
    #[error("{image}: layer {index} ({digest}): {context}: {error}")]
    LayerRead {
        /// The image source.
        image: String,
        /// Layer index, 0 = base.
        index: usize,
        /// Digest of the blob.
        digest: Digest,
        /// What was being done, e.g. `gzip decompression`.
        context: String,
        /// The underlying error.
        #[source]
        error: Arc<io::Error>,
    },
}

impl From<stratum_registry::PlatformError> for SourceError {
    fn from(e: stratum_registry::PlatformError) -> Self {
        SourceError::Registry(e.into())
    }
}

impl SourceError {
    /// An [`SourceError::Io`] for `path`.
    pub(crate) fn io(image: &str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        SourceError::Io {
            image: image.to_owned(),
            path: path.into(),
            error: Arc::new(error),
        }
    }

    /// A [`SourceError::Malformed`].
    pub(crate) fn malformed(
        image: &str,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SourceError::Malformed {
            image: image.to_owned(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// The `io::ErrorKind` under which a [`LayerStream`](super::LayerStream) reports
    /// this error: the kind of the underlying I/O error for
    /// [`SourceError::Io`]/[`SourceError::LayerRead`], `InvalidData` otherwise.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            SourceError::Io { error, .. } | SourceError::LayerRead { error, .. } => error.kind(),
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<SourceError> for io::Error {
    fn from(e: SourceError) -> Self {
        io::Error::new(e.io_kind(), e)
    }
}

/// Joins a list for an error message; `(none)` when empty.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}
