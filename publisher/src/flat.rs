//! The flat rootfs of an image: its layer trees merged in order, whiteouts
//! and opaque directories applied, from catalogs only (content is already
//! in the store and is never read again).

use std::collections::{HashMap, HashSet};

use stratum_catalog::catalog::{
    schema::{FLAG_COPYUP, FLAG_IMPLICIT},
    Catalog, CatalogBuilder, Entry, ROOT_ID,
};

use crate::tree::{is_overlay_xattr, resolve};

/// Applies one layer tree on top of `flat`, as extracting the layer's tar
/// over the rootfs would.
pub fn apply_layer(flat: &mut CatalogBuilder, layer: &Catalog) -> stratum_catalog::Result<()> {
    // Hardlink groups are per catalog: give this layer's groups fresh
    // numbers in the flat catalog.
    let mut groups: HashMap<i64, i64> = HashMap::new();
    let kept = join_copyups(flat, layer, &mut groups)?;
    let root = layer.root()?;
    if root.is_opaque() {
        flat.remove_children(ROOT_ID)?;
    }
    if root.flags & FLAG_IMPLICIT == 0 {
        let mut r = clean(root);
        r.name = Vec::new();
        flat.update(ROOT_ID, &r)?;
    }
    // Explicit stack: trees can be deeper than the thread stack allows.
    let mut stack = vec![(ROOT_ID, ROOT_ID)];
    while let Some((layer_dir, flat_dir)) = stack.pop() {
        layer.for_each_child(layer_dir, |child| {
            let existing = flat.lookup(flat_dir, &child.name)?;
            if child.is_whiteout() {
                if let Some(old) = existing {
                    flat.remove(old.id)?;
                }
                return Ok(());
            }
            let layer_id = child.id;
            if child.is_dir() {
                let opaque = child.is_opaque();
                let implicit = child.flags & FLAG_IMPLICIT != 0;
                let flat_id = match existing {
                    Some(old) if old.is_dir() => {
                        if opaque {
                            flat.remove_children(old.id)?;
                        }
                        if !implicit {
                            flat.update(old.id, &clean(child))?;
                        }
                        old.id
                    }
                    old => {
                        if let Some(old) = old {
                            flat.remove(old.id)?;
                        }
                        flat.insert(flat_dir, &clean(child))?
                    }
                };
                stack.push((layer_id, flat_id));
            } else {
                if kept.contains(&layer_id) && existing.as_ref().is_some_and(|e| !e.is_dir()) {
                    // A copied-up hardlink target: the lower file stays.
                    return Ok(());
                }
                if let Some(old) = existing {
                    flat.remove(old.id)?;
                }
                let mut e = clean(child);
                if e.hardlink != 0 {
                    e.hardlink = *groups
                        .entry(e.hardlink)
                        .or_insert_with(|| flat.new_hardlink_group());
                }
                flat.insert(flat_dir, &e)?;
            }
            Ok(())
        })?;
    }
    Ok(())
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
