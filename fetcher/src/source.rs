//! Where content objects come from.

use std::future::Future;
use std::pin::Pin;

use stratum_catalog::object::{self, Expected};
use stratum_catalog::{ObjectId, ObjectKind, Store};

/// A source of content objects (whole small files and chunks of large ones).
///
/// Implementations return the *verified, decoded* bytes of the object: the
/// BLAKE3 of what they return must equal `id`, and anything else is an
/// error, never data. [`Store`] does this through [`Store::get`]; an HTTP
/// source must do the same (or go through a verifying cache).
///
/// `size` is what the catalog states for the object (a file's size, or a
/// chunk's): an object whose frame declares anything else is refused before
/// it is decoded, so a small zstd frame declaring a gigabyte costs nothing.
pub trait ObjectSource {
    fn content(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error>;

    /// True for a source whose requests wait on the network: a pull then
    /// keeps its `--jobs` downloads in flight as futures of
    /// [`ObjectSource::content_async`] polled by one thread, rather than
    /// calling [`ObjectSource::content`] from `--jobs` threads. Default
    /// false.
    fn fetches_async(&self) -> bool {
        false
    }

    /// [`ObjectSource::content`] as a future (the same verified bytes, the
    /// same errors), polled on the transport's runtime. Default: `content`,
    /// run when first polled.
    fn content_async(&self, id: ObjectId, size: u64) -> ContentFuture<'_> {
        Box::pin(std::future::ready(self.content(&id, size)))
    }

    /// A hint that catalog `id` will be loaded soon: a source with slow
    /// requests fetches and verifies it now (where the loader will find
    /// it) and returns the ids of the catalogs mounted in it, to be fetched
    /// ahead in turn. Errors are left to the real load. Default: nothing.
    fn catalog_ahead(&self, _id: &ObjectId) -> Vec<ObjectId> {
        Vec::new()
    }
}

/// The verified bytes of one object, to come.
pub type ContentFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<u8>, stratum_catalog::Error>> + 'a>>;

impl ObjectSource for Store {
    fn content(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error> {
        let enc = self.get_encoded(id, ObjectKind::Content)?;
        object::decode_expected(id, &enc, Expected::Size(size))
    }
}

impl<T: ObjectSource + ?Sized> ObjectSource for &T {
    fn content(&self, id: &ObjectId, size: u64) -> Result<Vec<u8>, stratum_catalog::Error> {
        (**self).content(id, size)
    }

    fn fetches_async(&self) -> bool {
        (**self).fetches_async()
    }

    fn content_async(&self, id: ObjectId, size: u64) -> ContentFuture<'_> {
        (**self).content_async(id, size)
    }

    fn catalog_ahead(&self, id: &ObjectId) -> Vec<ObjectId> {
        (**self).catalog_ahead(id)
    }
}
