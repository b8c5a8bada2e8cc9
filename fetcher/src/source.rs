//! Where content objects come from.

use stratum_catalog::{ObjectId, ObjectKind, Store};

/// A source of content objects (whole small files and chunks of large ones).
///
/// Implementations return the *verified, decoded* bytes of the object: the
/// BLAKE3 of what they return must equal `id`, and anything else is an
/// error, never data. [`Store`] does this through [`Store::get`]; an HTTP
/// source must do the same (or go through a verifying cache).
pub trait ObjectSource {
    fn content(&self, id: &ObjectId) -> Result<Vec<u8>, stratum_catalog::Error>;
}

impl ObjectSource for Store {
    fn content(&self, id: &ObjectId) -> Result<Vec<u8>, stratum_catalog::Error> {
        self.get(id, ObjectKind::Content)
    }
}

impl<T: ObjectSource + ?Sized> ObjectSource for &T {
    fn content(&self, id: &ObjectId) -> Result<Vec<u8>, stratum_catalog::Error> {
        (**self).content(id)
    }
}
