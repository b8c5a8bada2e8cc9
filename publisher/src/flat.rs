//! The flat rootfs of an image: its layer trees merged in order, whiteouts
//! and opaque directories applied, from catalogs only (content is already
//! in the store and is never read again).

use std::collections::HashMap;

use stratum_catalog::catalog::{schema::FLAG_IMPLICIT, Catalog, CatalogBuilder, Entry, ROOT_ID};

use crate::tree::is_overlay_xattr;

/// Applies one layer tree on top of `flat`, as extracting the layer's tar
/// over the rootfs would.
pub fn apply_layer(flat: &mut CatalogBuilder, layer: &Catalog) -> stratum_catalog::Result<()> {
    // Hardlink groups are per catalog: give this layer's groups fresh
    // numbers in the flat catalog.
    let mut groups: HashMap<i64, i64> = HashMap::new();
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
        for child in layer.children(layer_dir)? {
            let existing = flat.lookup(flat_dir, &child.name)?;
            if child.is_whiteout() {
                if let Some(old) = existing {
                    flat.remove(old.id)?;
                }
                continue;
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
        }
    }
    Ok(())
}

/// A layer entry as the flat tree keeps it: no overlay markers, no
/// implicit flag.
fn clean(mut e: Entry) -> Entry {
    e.xattrs.retain(|(n, _)| !is_overlay_xattr(n));
    e.flags &= !FLAG_IMPLICIT;
    e.nested = None;
    e
}
