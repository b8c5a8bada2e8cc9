//! The flat rootfs of an image: its layer trees merged in order, whiteouts
//! and opaque directories applied, from catalogs only (content is already
//! in the store and is never read again).

use std::collections::{HashMap, HashSet};

use stratum_catalog::catalog::{
    schema::{FLAG_COPYUP, FLAG_IMPLICIT},
    Catalog, CatalogBuilder, Entry, ROOT_ID,
};
use stratum_catalog::ObjectId;

use crate::tree::{is_overlay_xattr, resolve};

/// Origin of an entry that no single layer wrote as it is.
const MIXED: u32 = u32::MAX;

/// Loads a catalog that a layer tree mounts (its nested `subtree`s).
pub type LoadCatalog<'a> = dyn FnMut(&ObjectId) -> stratum_catalog::Result<Catalog> + 'a;

/// Where the merge reads next: a directory of a catalog already open, or
/// the root of a nested catalog still to load.
enum Next {
    Dir(usize, i64),
    Nested(ObjectId),
}

/// Applies one layer tree (the `index`-th layer of the image) on top of
/// `flat`, as extracting the layer's tar over the rootfs would, and
/// records in `origins` which layer each entry it writes comes from
/// unchanged (for the cut rule, `nesting::Origins::Flat`). The layer
/// tree's nested catalogs are read through `load`; they hold only the
/// layer's own entries (no whiteouts, opaque markers or copy-ups:
/// `nesting::Origins::Layer`).
pub fn apply_layer(
    flat: &mut CatalogBuilder,
    origins: &mut HashMap<i64, u32>,
    layer: &Catalog,
    index: u32,
    load: &mut LoadCatalog<'_>,
) -> stratum_catalog::Result<()> {
    let tag = |e: &Entry| if is_own(e) { index } else { MIXED };
    // Hardlink groups are per catalog: give this layer's groups fresh
    // numbers in the flat catalog.
    let mut groups: HashMap<i64, i64> = HashMap::new();
    let kept = join_copyups(flat, layer, &mut groups)?;
    let root = layer.root()?;
    if root.is_opaque() {
        flat.remove_children(ROOT_ID)?;
    }
    if root.flags & FLAG_IMPLICIT == 0 {
        origins.insert(ROOT_ID, tag(&root));
        let mut r = clean(root);
        r.name = Vec::new();
        flat.update(ROOT_ID, &r)?;
    }
    // Catalog 0 is `layer`, catalog i > 0 is `loaded[i - 1]`.
    let mut loaded: Vec<Catalog> = Vec::new();
    // Explicit stack: trees can be deeper than the thread stack allows.
    let mut stack = vec![(Next::Dir(0, ROOT_ID), ROOT_ID)];
    while let Some((next, flat_dir)) = stack.pop() {
        let (cat_index, layer_dir) = match next {
            Next::Dir(c, d) => (c, d),
            Next::Nested(id) => {
                loaded.push(load(&id)?);
                (loaded.len(), ROOT_ID)
            }
        };
        let catalog = match cat_index {
            0 => layer,
            i => &loaded[i - 1],
        };
        catalog.for_each_child(layer_dir, |child| {
            let existing = flat.lookup(flat_dir, &child.name)?;
            if child.is_whiteout() {
                if let Some(old) = existing {
                    flat.remove(old.id)?;
                }
                // The directory now differs from the layer's (which holds
                // the whiteout): not one layer's.
                origins.insert(flat_dir, MIXED);
                return Ok(());
            }
            let layer_id = child.id;
            if child.is_dir() {
                let opaque = child.is_opaque();
                let implicit = child.flags & FLAG_IMPLICIT != 0;
                let nested = child.nested;
                let origin = tag(&child);
                let flat_id = match existing {
                    Some(old) if old.is_dir() => {
                        if opaque {
                            flat.remove_children(old.id)?;
                        }
                        if !implicit {
                            flat.update(old.id, &clean(child))?;
                            origins.insert(old.id, origin);
                        }
                        old.id
                    }
                    old => {
                        if let Some(old) = old {
                            flat.remove(old.id)?;
                        }
                        let id = flat.insert(flat_dir, &clean(child))?;
                        origins.insert(id, origin);
                        id
                    }
                };
                match nested {
                    Some(id) => stack.push((Next::Nested(id), flat_id)),
                    None => stack.push((Next::Dir(cat_index, layer_id), flat_id)),
                }
            } else {
                if kept.contains(&layer_id) && existing.as_ref().is_some_and(|e| !e.is_dir()) {
                    // A copied-up hardlink target: the lower file stays.
                    return Ok(());
                }
                if let Some(old) = existing {
                    flat.remove(old.id)?;
                }
                let origin = tag(&child);
                let mut e = clean(child);
                if e.hardlink != 0 {
                    e.hardlink = *groups
                        .entry(e.hardlink)
                        .or_insert_with(|| flat.new_hardlink_group());
                }
                let id = flat.insert(flat_dir, &e)?;
                origins.insert(id, origin);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The directories of layer tree `layer` that the tree below it (`lower`,
/// the flat tree merged so far) already has: the flat merge mixes them
/// with the lower layers' entries, so the layer tree does not count them
/// as its own when it is cut (`nesting::Origins::Layer`).
pub fn lower_dirs(
    layer: &CatalogBuilder,
    lower: &CatalogBuilder,
) -> stratum_catalog::Result<HashSet<i64>> {
    let mut out = HashSet::new();
    let mut stack = vec![(ROOT_ID, ROOT_ID)];
    while let Some((layer_dir, lower_dir)) = stack.pop() {
        for child in layer.children(layer_dir)? {
            if !child.is_dir() {
                continue;
            }
            if let Some(low) = lower.lookup(lower_dir, &child.name)? {
                if low.is_dir() {
                    out.insert(child.id);
                    stack.push((child.id, low.id));
                }
            }
        }
    }
    Ok(out)
}

/// Whether a layer entry is the layer's own: not something it holds only
/// to stack with overlayfs (the same test as the cut rule's).
fn is_own(e: &Entry) -> bool {
    e.flags & (FLAG_IMPLICIT | FLAG_COPYUP) == 0
        && !e.is_whiteout()
        && !e.xattrs.iter().any(|(n, _)| is_overlay_xattr(n))
}

/// Hardlinks to files of lower layers: the layer tree holds a copy of the
/// target (flagged copy-up) in the link's group. The flat tree instead keeps
/// the lower file, with whatever links it already had, and puts the layer's
/// group into that file's group — what extracting the tar over the lower
/// layers does. Returns the layer entries that must not replace their path.
fn join_copyups(
    flat: &mut CatalogBuilder,
    layer: &Catalog,
    groups: &mut HashMap<i64, i64>,
) -> stratum_catalog::Result<HashSet<i64>> {
    let mut copyups = Vec::new();
    layer.for_each_entry(|e| {
        if e.flags & FLAG_COPYUP != 0 && e.hardlink != 0 {
            copyups.push((e.id, e.hardlink));
        }
        Ok(())
    })?;
    let mut kept = HashSet::new();
    for (id, group) in copyups {
        let path = entry_path(layer, id)?;
        let Some(mut lower) = resolve(flat, &path)? else {
            continue;
        };
        if lower.is_dir() {
            continue;
        }
        if lower.hardlink == 0 {
            lower.hardlink = flat.new_hardlink_group();
            flat.update(lower.id, &lower)?;
        }
        groups.insert(group, lower.hardlink);
        kept.insert(id);
    }
    Ok(kept)
}

/// The path components of entry `id` of `cat`, from its root.
fn entry_path(cat: &Catalog, mut id: i64) -> stratum_catalog::Result<Vec<Vec<u8>>> {
    let mut comps = Vec::new();
    while id != ROOT_ID {
        let Some(e) = cat.get(id)? else { break };
        comps.push(e.name);
        id = e.parent;
        if comps.len() > 4096 {
            break;
        }
    }
    comps.reverse();
    Ok(comps)
}

/// A layer entry as the flat tree keeps it: no overlay markers, no
/// implicit flag.
fn clean(mut e: Entry) -> Entry {
    e.xattrs.retain(|(n, _)| !is_overlay_xattr(n));
    e.flags &= !(FLAG_IMPLICIT | FLAG_COPYUP);
    e.nested = None;
    e
}
