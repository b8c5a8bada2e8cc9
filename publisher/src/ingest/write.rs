//! The writer side of ingestion: places each entry in the layer tree
//! (whiteouts, opaque directories, replacements, hardlinks, copy-ups of
//! lower files), stores content objects and writes the catalog rows.

use stratum_catalog::catalog::{
    schema::FLAG_COPYUP, schema::FLAG_IMPLICIT, CatalogBuilder, Chunk, Data, Entry, FileType,
    OPAQUE_XATTR, OPAQUE_XATTR_USER, ROOT_ID,
};
use stratum_catalog::ObjectKind;

use crate::error::{PublishError, Result};
use crate::objects::ObjectWriter;
use crate::tree::{display, resolve, PlaceError, Tree};

use super::*;

pub(super) fn write(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    mut rx: BatchReceiver,
    objects: &mut ObjectWriter,
) -> Result<IngestStats> {
    let mut stats = IngestStats::default();
    while let Some(msg) = rx.recv() {
        let Msg::Item(item) = msg else {
            return Err(ctx.layer_err("internal: chunk without a file"));
        };
        stats.entries += 1;
        let Item {
            comps,
            raw,
            mut meta,
            kind,
        } = *item;
        let place = |e: PlaceError| match e {
            PlaceError::Catalog(c) => PublishError::from(c),
            PlaceError::Invalid(r) => ctx.entry_err(&raw, r),
        };
        match kind {
            Kind::Root => {
                let mut root = tree
                    .b
                    .get(ROOT_ID)?
                    .ok_or_else(|| ctx.layer_err("no root"))?;
                let keep: Vec<_> = root
                    .xattrs
                    .iter()
                    .filter(|(n, _)| is_opaque_name(n))
                    .cloned()
                    .collect();
                meta.xattrs.extend(keep);
                meta.xattrs.sort();
                meta.xattrs.dedup_by(|a, b| a.0 == b.0);
                meta.name = Vec::new();
                meta.flags = 0;
                root = Entry {
                    id: root.id,
                    parent: root.parent,
                    ..meta
                };
                tree.b.update(ROOT_ID, &root)?;
            }
            Kind::Opaque => {
                let id = tree.ensure_dir(&comps, lower).map_err(place)?;
                let mut dir = tree
                    .b
                    .get(id)?
                    .ok_or_else(|| ctx.layer_err("directory vanished"))?;
                for n in [OPAQUE_XATTR, OPAQUE_XATTR_USER] {
                    dir.xattrs.retain(|(x, _)| x != n);
                    dir.xattrs.push((n.to_vec(), b"y".to_vec()));
                }
                dir.xattrs.sort();
                tree.b.update(id, &dir)?;
            }
            Kind::Whiteout => {
                let (name, parent) = split_last(&comps);
                // Below a non-directory (e.g. a directory this layer turned
                // into a file, whose old children umoci still whites out)
                // there is nothing left to hide: drop the whiteout.
                let parent_is_dir = match resolve(&tree.b, parent)? {
                    Some(p) => p.is_dir(),
                    None => match lower {
                        Some(low) => resolve(low, parent)?.is_none_or(|p| p.is_dir()),
                        None => true,
                    },
                };
                if !parent_is_dir {
                    continue;
                }
                let parent_id = tree.ensure_dir(parent, lower).map_err(place)?;
                // A whiteout hides lower layers only; an entry of this same
                // layer with that name stays (OCI image spec).
                if tree.b.lookup(parent_id, name)?.is_none() {
                    let mut w = Entry::new(FileType::CharDevice, meta.perm());
                    w.name = name.to_vec();
                    (w.uid, w.gid, w.mtime, w.mtime_ns) =
                        (meta.uid, meta.gid, meta.mtime, meta.mtime_ns);
                    tree.b.insert(parent_id, &w)?;
                }
            }
            Kind::Dir => {
                let (name, parent) = split_last(&comps);
                let parent_id = tree.ensure_dir(parent, lower).map_err(place)?;
                meta.name = name.to_vec();
                match tree.b.lookup(parent_id, name)? {
                    Some(old) if old.is_dir() => {
                        // A directory listed twice, or after its children:
                        // new metadata, same children, opaque marks kept.
                        let keep: Vec<_> = old
                            .xattrs
                            .iter()
                            .filter(|(n, _)| is_opaque_name(n))
                            .cloned()
                            .collect();
                        meta.xattrs.extend(keep);
                        meta.xattrs.sort();
                        meta.xattrs.dedup_by(|a, b| a.0 == b.0);
                        tree.b.update(old.id, &meta)?;
                        tree.remember_dir(&comps, old.id);
                    }
                    old => {
                        if let Some(old) = old {
                            tree.remove(old.id, &comps)?;
                        }
                        let id = tree.b.insert(parent_id, &meta)?;
                        tree.remember_dir(&comps, id);
                    }
                }
            }
            Kind::File(bytes) => {
                stats.files += 1;
                stats.bytes += bytes.len() as u64;
                meta.size = bytes.len() as u64;
                meta.data = if bytes.is_empty() {
                    Data::None
                } else if meta.size <= INLINE_MAX {
                    Data::Inline(bytes)
                } else {
                    Data::Object(objects.put_owned(ObjectKind::Content, bytes)?)
                };
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::BigFile => {
                stats.files += 1;
                let mut chunks = Vec::new();
                loop {
                    match rx.recv() {
                        Some(Msg::Chunk(data)) => {
                            let size = data.len() as u64;
                            let id = objects.put_owned(ObjectKind::Content, data)?;
                            chunks.push(Chunk { id, size });
                        }
                        Some(Msg::BigEnd) => break,
                        // The parser reports why it stopped.
                        _ => return Ok(stats),
                    }
                }
                stats.bytes += meta.size;
                meta.data = Data::Chunks(chunks);
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Symlink(target) => {
                meta.size = target.len() as u64;
                meta.symlink = Some(target);
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Special => {
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Hardlink(target) => hardlink(lower, ctx, tree, &comps, &raw, &target)?,
        }
    }
    Ok(stats)
}

pub(super) fn is_opaque_name(n: &[u8]) -> bool {
    n == OPAQUE_XATTR || n == OPAQUE_XATTR_USER
}

pub(super) fn split_last(comps: &[Vec<u8>]) -> (&[u8], &[Vec<u8>]) {
    match comps.split_last() {
        Some((last, parent)) => (last.as_slice(), parent),
        None => (b"", &[]),
    }
}

/// Puts a non-directory entry at `comps`, replacing whatever is there (a
/// later tar entry wins, as when extracting).
pub(super) fn replace(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    comps: &[Vec<u8>],
    raw: &str,
    mut meta: Entry,
) -> Result<i64> {
    let (name, parent) = split_last(comps);
    let parent_id = tree.ensure_dir(parent, lower).map_err(|e| match e {
        PlaceError::Catalog(c) => PublishError::from(c),
        PlaceError::Invalid(r) => ctx.entry_err(raw, r),
    })?;
    if let Some(old) = tree.b.lookup(parent_id, name)? {
        tree.remove(old.id, comps)?;
    }
    meta.name = name.to_vec();
    Ok(tree.b.insert(parent_id, &meta)?)
}

/// A tar hardlink: the new path shares the target's inode. The target is
/// an earlier entry of this layer or, failing that, a file of the layers
/// below, which is then copied up into this layer (as overlayfs and
/// containerd do), so that stacking the layer trees gives the flat tree.
pub(super) fn hardlink(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    comps: &[Vec<u8>],
    raw: &str,
    target: &[Vec<u8>],
) -> Result<()> {
    let missing = || {
        ctx.entry_err(
            raw,
            format!("hardlink to missing target {}", display(target)),
        )
    };
    if target == comps {
        return Err(ctx.entry_err(raw, "hardlink to itself"));
    }
    let mut t = match resolve(&tree.b, target)? {
        Some(t) if t.flags & FLAG_IMPLICIT == 0 || !t.is_dir() => t,
        _ => {
            let low = match lower {
                Some(low) => resolve(low, target)?.ok_or_else(missing)?,
                None => return Err(missing()),
            };
            if low.is_dir() {
                return Err(
                    ctx.entry_err(raw, format!("hardlink to directory {}", display(target)))
                );
            }
            let mut copy = low;
            copy.hardlink = 0;
            copy.flags |= FLAG_COPYUP;
            let id = replace(lower, ctx, tree, target, raw, copy)?;
            tree.b.get(id)?.ok_or_else(missing)?
        }
    };
    if t.is_dir() {
        return Err(ctx.entry_err(raw, format!("hardlink to directory {}", display(target))));
    }
    if t.is_whiteout() {
        return Err(ctx.entry_err(
            raw,
            format!("hardlink to {}, which this layer deleted", display(target)),
        ));
    }
    if t.hardlink == 0 {
        t.hardlink = tree.b.new_hardlink_group();
        tree.b.update(t.id, &t)?;
    }
    t.flags &= !FLAG_COPYUP;
    replace(lower, ctx, tree, comps, raw, t)?;
    Ok(())
}
