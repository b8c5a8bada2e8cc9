//! Whether a signed revision vouches for the catalogs a descriptor pins.
//!
//! A descriptor is not signed. The catalog ids it pins prove which bytes a
//! node reads, not that the repository key ever published them: anyone can
//! publish the bytes of a crafted SQLite catalog as an ordinary file in an
//! image, and a hostile mirror can serve them at that id's catalog path.
//! So a node accepts a pinned catalog only when a manifest signed by the
//! repository key reaches it *as a catalog*: resolving the descriptor's
//! `path` in that revision's namespace must cross a nested-catalog mount
//! point whose id is the pinned one. Content ids never appear where the
//! namespace names a nested catalog, so a content object can never be
//! accepted where a catalog is expected (docs/SECURITY.md §2.4).
//!
//! The current revision is tried first (an image's trees stay under
//! `/flat` and `/layers` for the garbage collector's grace period after it
//! leaves `/images`); failing that, the signed history is walked back to
//! the revision the descriptor was made from, at most
//! [`MAX_HISTORY_WALK`] manifests.

use stratum_catalog::manifest::Manifest;
use stratum_catalog::namespace::{CatalogLoader, Namespace};
use stratum_catalog::ObjectId;

use crate::{ThinImage, ThinImageError};

/// The most manifests walked back through the signed history to find the
/// descriptor's revision (one small download each).
pub const MAX_HISTORY_WALK: u64 = 10_000;

/// Checks that the signed revision `current`, or the revision the
/// descriptor names reached from it through the signed history, holds every
/// catalog the descriptor pins at the path the descriptor gives for it.
/// `previous` fetches and verifies (signature with the repository key,
/// repository name) the manifest object a later manifest names as its
/// `previous`. `load` loads catalogs by id, hash-verified. Returns the
/// revision that vouched.
pub fn vouch_for_pins<L, F, E>(
    desc: &ThinImage,
    current: &Manifest,
    loader: &L,
    mut previous: F,
) -> Result<u64, ThinImageError>
where
    L: CatalogLoader,
    F: FnMut(&ObjectId) -> Result<Manifest, E>,
    E: std::fmt::Display,
{
    let unvouched = |reason: String| ThinImageError::Unvouched {
        image: desc.image.clone(),
        reason,
    };
    let first = match pins_in(desc, current, loader)? {
        None => return Ok(current.revision),
        Some(why) => why,
    };
    let want = desc.repository.revision;
    if want >= current.revision {
        return Err(unvouched(first));
    }
    if current.revision - want > MAX_HISTORY_WALK {
        return Err(unvouched(format!(
            "{first}; revision {want} is more than {MAX_HISTORY_WALK} revisions behind the current {}",
            current.revision
        )));
    }
    let mut m = current.clone();
    while m.revision > want {
        let Some(prev) = m.previous else {
            return Err(unvouched(format!(
                "{first}; revision {} has no previous revision, so revision {want} cannot be checked",
                m.revision
            )));
        };
        let next = previous(&prev).map_err(|e| {
            unvouched(format!(
                "{first}; the manifest of the revision before {} (object {prev}) cannot be read: {e}",
                m.revision
            ))
        })?;
        if next.revision >= m.revision {
            return Err(unvouched(format!(
                "{first}; the signed history goes from revision {} to {} (not backwards)",
                m.revision, next.revision
            )));
        }
        m = next;
    }
    if m.revision != want {
        return Err(unvouched(format!(
            "{first}; the signed history has no revision {want} (it goes to {})",
            m.revision
        )));
    }
    match pins_in(desc, &m, loader)? {
        None => Ok(m.revision),
        Some(why) => Err(unvouched(format!("{first}; {why}"))),
    }
}

/// `None` when the namespace of `m` holds every pinned catalog at its
/// path; otherwise why not. Errors other than "not there" (a catalog that
/// does not load) are returned as errors.
fn pins_in<L: CatalogLoader>(
    desc: &ThinImage,
    m: &Manifest,
    loader: &L,
) -> Result<Option<String>, ThinImageError> {
    let ns = Namespace::new(Loader(loader), &m.root).map_err(|e| ThinImageError::Unvouched {
        image: desc.image.clone(),
        reason: format!("revision {}: root catalog {}: {e}", m.revision, m.root),
    })?;
    let mut pins = vec![(desc.flat.path.as_str(), desc.flat.catalog_id()?)];
    for l in &desc.layers {
        pins.push((l.path.as_str(), l.catalog_id()?));
    }
    for (path, id) in pins {
        let node = match ns.resolve(path) {
            Ok(n) => n,
            Err(stratum_catalog::Error::NotFound { .. }) => {
                return Ok(Some(format!("revision {} has no {path}", m.revision)))
            }
            Err(e) => {
                return Err(ThinImageError::Unvouched {
                    image: desc.image.clone(),
                    reason: format!("revision {}: resolving {path}: {e}", m.revision),
                })
            }
        };
        let is_mount_root = node
            .catalog
            .root()
            .map(|r| r.id == node.entry.id)
            .unwrap_or(false);
        if node.catalog.id() != id || !is_mount_root {
            return Ok(Some(format!(
                "revision {} has catalog {} at {path}, not the pinned catalog {id}",
                m.revision,
                node.catalog.id()
            )));
        }
    }
    Ok(None)
}

/// Borrows a loader as a loader (Namespace takes its loader by value).
struct Loader<'a, L>(&'a L);

impl<L: CatalogLoader> CatalogLoader for Loader<'_, L> {
    fn load(
        &self,
        id: &ObjectId,
    ) -> stratum_catalog::Result<std::rc::Rc<stratum_catalog::catalog::Catalog>> {
        self.0.load(id)
    }
}
