//! Trees stored as a Merkle tree of catalogs (format version 2, FORMAT.md
//! §4.12): where a tree is cut into nested `subtree` catalogs, and the
//! canonical writer that makes equal subtrees equal bytes, hence one
//! object whatever image, or place in an image, they occur in.
//!
//! The cut rule looks only at a directory's own subtree, so an identical
//! subtree is cut identically wherever it is: a directory becomes a nested
//! catalog when its subtree, minus what its own nested catalogs already
//! hold, has at least `min_entries` entries, and no hardlink group has
//! members both inside and outside it (hardlinks never cross catalogs,
//! §4.7). A child of the tree's top whose whole subtree comes unchanged
//! from one layer is cut from `region_min_entries` entries on: the same
//! rule cuts layer trees, so such a directory (an image's own `app/`) is
//! one catalog in its layer tree and its flat tree (D43). The
//! canonical writer numbers entries breadth-first in name order from 1,
//! renumbers hardlink groups in order of first appearance, writes no
//! timestamp of its own, and builds every catalog with a fixed page size
//! and fixed header fields (§4.1).

use std::collections::HashMap;
use std::path::Path;

use super::builder::CatalogBuilder;
use super::{schema, CatalogKind, ROOT_ID};
use crate::ObjectId;

/// The reference writer's cut threshold: a directory whose subtree holds
/// at least this many entries not already in nested catalogs below it
/// becomes a nested catalog (chosen by measurement, DECISIONS.md D39).
pub const SUBTREE_MIN_ENTRIES: usize = 256;

/// The reference writer's threshold for a child of a tree's top that comes
/// unchanged from one layer (chosen by measurement, DECISIONS.md D43).
pub const REGION_MIN_ENTRIES: usize = 32;

/// Where a tree is cut into nested catalogs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutRule {
    /// A directory with at least this many residual entries is cut
    /// (`usize::MAX`: the tree is one catalog, as format version 1 wrote
    /// it, whatever `region_min_entries` says).
    pub min_entries: usize,
    /// A child of the tree's top that, with its whole subtree, comes
    /// unchanged from one layer is cut from this many residual entries on
    /// (`usize::MAX`: never by this rule).
    pub region_min_entries: usize,
    /// Which small files a flat tree's catalogs keep inline.
    pub inline: InlineRule,
}

/// Which small files (inline data, FORMAT.md §4.5) the catalogs of a flat
/// tree keep inline; the others become content objects. Inline bytes are
/// stored once per catalog that holds them, so they are stored once only
/// where the catalog is: a flat tree's top catalog is its image's own, and
/// when it mixes layers (the base's `etc/` with the one file the image
/// changes) it would store the base's small files again for every image
/// on that base; as objects they are stored once (DECISIONS.md D49).
/// Layer trees always inline: all their catalogs are one layer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InlineRule {
    /// Every catalog inlines (the writer before D49; for measurements).
    Always,
    /// The reference writer: a catalog inlines unless it is the top and
    /// its entries come from more than one layer, or it is a nested
    /// catalog holding a directory that a layer changed without writing
    /// it whole (a whiteout applied in it: such a subtree is the image's
    /// own, not shared).
    Shared,
    /// Every catalog whose entries come from more than one layer stores
    /// its small files as objects (for measurements: in real images that
    /// also moves shared subtrees' files, D49).
    OneLayer,
}

impl CutRule {
    /// The reference writer's rule.
    pub const REFERENCE: CutRule = CutRule {
        min_entries: SUBTREE_MIN_ENTRIES,
        region_min_entries: REGION_MIN_ENTRIES,
        inline: InlineRule::Shared,
    };

    /// One catalog per tree.
    pub const WHOLE: CutRule = CutRule {
        min_entries: usize::MAX,
        region_min_entries: usize::MAX,
        inline: InlineRule::Always,
    };
}

/// Which layer each entry of a tree being written comes from unchanged:
/// what lets a flat tree cut a directory where its layer tree cuts it.
#[derive(Clone, Copy, Debug)]
pub enum Origins<'a> {
    /// A layer tree: every entry is the layer's own except what it holds
    /// only to stack with overlayfs (whiteouts, opaque markers, implicit
    /// directories, copied-up hardlink targets) and the directories given
    /// (those the layers below already have, which the flat tree mixes
    /// with theirs). Only directories whose whole subtree is the layer's
    /// own are cut, so those markers stay in the top catalog, where the
    /// flat merge meets them first.
    Layer(&'a std::collections::HashSet<i64>),
    /// A flat tree: entry id → the index of the layer that wrote the entry
    /// as it is now (absent: no single layer, e.g. a directory whose
    /// children changed later, or an entry no layer wrote).
    Flat(&'a HashMap<i64, u32>),
}

/// The most catalogs a reader crosses on one path from the namespace root
/// (root, partition and tree count; FORMAT.md §11): deeper nesting is
/// refused, whatever the catalogs say.
pub const MAX_NESTING: usize = 256;

/// The most times one walk of a tree (a pull) enters the same catalog. A
/// `subtree` catalog may be mounted at many places, so a crafted tree of
/// *k* catalogs, each mounting the next twice, shows 2^*k* directories;
/// with this bound a walk does at most this many times the work of
/// reading every catalog once (FORMAT.md §11). Honest trees mount a
/// subtree at a handful of places.
pub const MAX_MOUNTS_OF_ONE_CATALOG: u32 = 1024;

/// The most levels of nested catalogs the reference writer puts below the
/// top of one tree (a tree deeper than that keeps the rest inline), well
/// under [`MAX_NESTING`] with the root, partition and tree above it.
pub const MAX_TREE_NESTING: usize = 64;

/// Whether a catalog of kind `child` may be mounted in one of kind
/// `parent`: trees (flat, layer, subtree) mount only subtrees, and
/// subtrees are mounted only in trees (FORMAT.md §4.12).
pub fn fits(parent: CatalogKind, child: CatalogKind) -> bool {
    let tree = |k| {
        matches!(
            k,
            CatalogKind::Flat | CatalogKind::Layer | CatalogKind::Subtree
        )
    };
    if tree(parent) || child == CatalogKind::Subtree {
        tree(parent) && child == CatalogKind::Subtree
    } else {
        true
    }
}

/// What [`write_tree`] stored.
#[derive(Clone, Debug)]
pub struct WrittenTree {
    /// The tree's top catalog (kind and path as asked).
    pub top: ObjectId,
    /// Every nested catalog the tree mounts, once each, deepest first.
    pub subtrees: Vec<ObjectId>,
}

/// What [`write_tree`] hands to its store, which stores it and returns
/// its id.
pub enum TreeObject<'a> {
    /// A frozen catalog file (children before parents).
    Catalog(&'a mut std::fs::File),
    /// The bytes of a small file that its catalog does not inline
    /// ([`InlineRule`]): a content object.
    Content(Vec<u8>),
}

/// Writes the tree assembled in `src` as its top catalog (kind `kind`,
/// path `path`, with `src`'s other properties) and the nested `subtree`
/// catalogs that `rule` gives, knowing where entries come from by
/// `origins`. Each frozen catalog file, children before parents, and each
/// small file a flat tree's catalog does not inline (`rule.inline`) is
/// handed to `store`.
#[allow(clippy::too_many_arguments)]
pub fn write_tree<E: From<crate::Error>>(
    mut src: CatalogBuilder,
    tmp_dir: &Path,
    kind: CatalogKind,
    path: &str,
    rule: CutRule,
    origins: Origins<'_>,
    mut store: impl FnMut(TreeObject<'_>) -> Result<ObjectId, E>,
) -> Result<WrittenTree, E> {
    src.freeze_links()?;
    let shape = Shape::read(&src, origins)?;
    let layer_tree = matches!(origins, Origins::Layer(_));
    let cut = shape.cuts(rule, layer_tree);
    let inline = if layer_tree {
        vec![Inline::All; shape.ids.len()]
    } else {
        shape.inline(&cut, rule.inline)
    };
    // Children before parents: reverse pre-order.
    let mut tops: Vec<usize> = shape
        .preorder
        .iter()
        .rev()
        .copied()
        .filter(|&i| cut[i])
        .collect();
    tops.push(0);
    let mut catalog_of: HashMap<i64, ObjectId> = HashMap::new();
    let mut subtrees = Vec::new();
    let mut top_id = None;
    for t in tops {
        let is_top = t == 0;
        let src_id = shape.ids[t];
        let mut root = src
            .get(src_id)?
            .ok_or_else(|| crate::Error::InvalidCatalog {
                catalog: format!("being built for {path}"),
                reason: format!("entry {src_id} vanished while the tree was written"),
            })?;
        root.name.clear();
        root.nested = None;
        let (k, p) = if is_top {
            (kind, path)
        } else {
            (CatalogKind::Subtree, "")
        };
        let mut out = CatalogBuilder::create(tmp_dir, k, p, &root)?;
        if is_top {
            for (key, value) in src.properties()? {
                if ![
                    schema::PROP_FORMAT_VERSION,
                    schema::PROP_KIND,
                    schema::PROP_PATH,
                ]
                .contains(&key.as_str())
                {
                    out.set_property(&key, &value)?;
                }
            }
        }
        let mut content = |bytes| store(TreeObject::Content(bytes));
        let ctx = Ctx {
            shape: &shape,
            cut: &cut,
            catalog_of: &catalog_of,
            inline: inline[t],
        };
        copy_subtree(&src, &mut out, src_id, &ctx, &mut content)?;
        let mut file = out.finish_file()?;
        let id = store(TreeObject::Catalog(file.as_file_mut()))?;
        if is_top {
            top_id = Some(id);
        } else {
            catalog_of.insert(src_id, id);
            if !subtrees.contains(&id) {
                subtrees.push(id);
            }
        }
    }
    let top = top_id.ok_or_else(|| crate::Error::InvalidCatalog {
        catalog: format!("being built for {path}"),
        reason: "no top catalog was written".into(),
    })?;
    Ok(WrittenTree { top, subtrees })
}

/// What the catalogs of one tree share while they are copied out of it.
struct Ctx<'a> {
    shape: &'a Shape,
    cut: &'a [bool],
    catalog_of: &'a HashMap<i64, ObjectId>,
    /// Which small files the catalog being copied keeps inline.
    inline: Inline,
}

/// Copies the subtree of `src` entry `top` into `out` (whose root it is),
/// breadth-first in name order, stopping at cut directories, which become
/// mount points of their catalogs; small files it does not inline go to
/// `content`.
fn copy_subtree<E: From<crate::Error>>(
    src: &CatalogBuilder,
    out: &mut CatalogBuilder,
    top: i64,
    ctx: &Ctx<'_>,
    content: &mut dyn FnMut(Vec<u8>) -> Result<ObjectId, E>,
) -> Result<(), E> {
    let mut copy = Copy {
        out,
        ctx,
        content,
        groups: HashMap::new(),
        queue: std::collections::VecDeque::from([(top, ROOT_ID)]),
        next: ROOT_ID + 1,
    };
    while let Some((src_dir, out_dir)) = copy.queue.pop_front() {
        // In pages, so that a directory of a million entries is never held
        // in memory at once.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = src.children_after(src_dir, after.as_deref(), PAGE)?;
            let Some(last) = page.last() else { break };
            if after.as_deref().is_some_and(|a| last.name.as_slice() <= a) {
                return Err(crate::Error::InvalidCatalog {
                    catalog: "being written".into(),
                    reason: format!("children of entry {src_dir} are not in name order"),
                }
                .into());
            }
            after = Some(last.name.clone());
            let full = page.len() as i64 == PAGE;
            for e in page {
                copy.entry(e, out_dir)?;
            }
            if !full {
                break;
            }
        }
    }
    Ok(())
}

/// Children copied per query.
const PAGE: i64 = 1024;

/// One catalog being copied out of the tree.
struct Copy<'a, E> {
    out: &'a mut CatalogBuilder,
    ctx: &'a Ctx<'a>,
    content: &'a mut dyn FnMut(Vec<u8>) -> Result<ObjectId, E>,
    /// The tree's hardlink groups → this catalog's, by first appearance.
    groups: HashMap<i64, i64>,
    /// Directories to copy the children of: (tree entry id, catalog id).
    queue: std::collections::VecDeque<(i64, i64)>,
    next: i64,
}

impl<E: From<crate::Error>> Copy<'_, E> {
    /// Copies `e`, a child of this catalog's entry `out_dir`.
    fn entry(&mut self, mut e: super::entry::Entry, out_dir: i64) -> Result<(), E> {
        let src_child = e.id;
        let shape = self.ctx.shape;
        let index = shape.index.get(&src_child).copied();
        let mounted = index.is_some_and(|i| self.ctx.cut[i] && shape.is_dir[i]);
        if mounted {
            // The mount point shows the child's root (§4.10); it carries
            // the same metadata so that the parent depends on nothing but
            // the subtree's content.
            e.nested = self.ctx.catalog_of.get(&src_child).copied();
            if e.nested.is_none() {
                return Err(crate::Error::InvalidCatalog {
                    catalog: "being written".into(),
                    reason: format!("entry {src_child} was cut but has no catalog"),
                }
                .into());
            }
        } else if e.hardlink != 0 {
            let n = self.groups.len() as i64 + 1;
            e.hardlink = *self.groups.entry(e.hardlink).or_insert(n);
        }
        if let super::entry::Data::Inline(bytes) = &mut e.data {
            if self.ctx.inline == Inline::None {
                let bytes = std::mem::take(bytes);
                e.data = super::entry::Data::Object((self.content)(bytes)?);
            }
        }
        let id = self.next;
        self.next += 1;
        self.out.insert_with_id(id, out_dir, &e)?;
        if !mounted && e.is_dir() {
            self.queue.push_back((src_child, id));
        }
        Ok(())
    }
}

/// Which small files one catalog keeps inline (from [`InlineRule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inline {
    All,
    None,
}

/// No single layer (see [`Origins`]).
const MIXED: u32 = u32::MAX;

/// The shape of a tree: enough to apply the cut rule without reading rows.
struct Shape {
    ids: Vec<i64>,
    index: HashMap<i64, usize>,
    is_dir: Vec<bool>,
    group: Vec<i64>,
    nlink: Vec<u32>,
    /// The layer the entry comes from unchanged, or [`MIXED`].
    origin: Vec<u32>,
    /// Whether `origins` says anything of the entry (a directory no layer
    /// lists, implicit in all of them, says nothing of its catalog).
    recorded: Vec<bool>,
    parent: Vec<usize>,
    children: Vec<Vec<usize>>,
    /// Entry indexes in pre-order from the root (index 0).
    preorder: Vec<usize>,
}

impl Shape {
    fn read(src: &CatalogBuilder, origins: Origins<'_>) -> crate::Result<Self> {
        let rows = src.shape()?;
        let mut s = Shape {
            ids: Vec::with_capacity(rows.len()),
            index: HashMap::with_capacity(rows.len()),
            is_dir: Vec::with_capacity(rows.len()),
            group: Vec::with_capacity(rows.len()),
            nlink: Vec::with_capacity(rows.len()),
            origin: Vec::with_capacity(rows.len()),
            recorded: Vec::with_capacity(rows.len()),
            parent: vec![0; rows.len()],
            children: vec![Vec::new(); rows.len()],
            preorder: Vec::with_capacity(rows.len()),
        };
        // The root first, so that it is index 0.
        let root_row = rows.iter().position(|r| r.0 == ROOT_ID);
        let order = root_row
            .into_iter()
            .chain((0..rows.len()).filter(|&i| Some(i) != root_row));
        for i in order {
            let (id, _, dir, g, n, own) = rows[i];
            s.index.insert(id, s.ids.len());
            s.ids.push(id);
            s.is_dir.push(dir);
            s.group.push(g);
            s.nlink.push(n);
            s.origin.push(match origins {
                Origins::Layer(lower) if own && !lower.contains(&id) => 0,
                Origins::Layer(_) => MIXED,
                Origins::Flat(map) => map.get(&id).copied().unwrap_or(MIXED),
            });
            s.recorded.push(match origins {
                Origins::Layer(_) => true,
                Origins::Flat(map) => map.contains_key(&id),
            });
        }
        if s.ids.first() != Some(&ROOT_ID) {
            return Err(crate::Error::InvalidCatalog {
                catalog: "being written".into(),
                reason: "no root entry".into(),
            });
        }
        for &(id, parent, ..) in &rows {
            if id == ROOT_ID {
                continue;
            }
            if let (Some(&c), Some(&p)) = (s.index.get(&id), s.index.get(&parent)) {
                s.children[p].push(c);
                s.parent[c] = p;
            }
        }
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            s.preorder.push(i);
            stack.extend(s.children[i].iter().copied().filter(|&c| s.is_dir[c]));
        }
        Ok(s)
    }

    /// Which directories come, with their whole subtree, unchanged from
    /// one layer.
    fn uniform(&self) -> Vec<bool> {
        let mut origin = vec![MIXED; self.ids.len()];
        for &d in self.preorder.iter().rev() {
            let o = self.origin[d];
            let same = self.children[d].iter().all(|&c| {
                let oc = if self.is_dir[c] {
                    origin[c]
                } else {
                    self.origin[c]
                };
                oc == o
            });
            origin[d] = if same { o } else { MIXED };
        }
        origin.into_iter().map(|o| o != MIXED).collect()
    }

    /// Which directories become nested catalogs (never the root); with
    /// `own_only`, only directories that are wholly one layer's own.
    fn cuts(&self, rule: CutRule, own_only: bool) -> Vec<bool> {
        let n = self.ids.len();
        let mut cut = vec![false; n];
        if rule.min_entries == usize::MAX {
            return cut;
        }
        let uniform = self.uniform();
        let sizes = self.group_sizes();
        let mut residual = vec![0usize; n];
        // Hardlink groups with members in a directory's subtree but not all
        // of them: such a directory cannot be cut.
        let mut open: Vec<HashMap<i64, u32>> = vec![HashMap::new(); n];
        for &d in self.preorder.iter().rev() {
            let mut count = 1usize;
            let mut groups = HashMap::new();
            for &c in &self.children[d] {
                if self.is_dir[c] {
                    count += if cut[c] { 1 } else { residual[c] };
                    let mut sub = std::mem::take(&mut open[c]);
                    if sub.len() > groups.len() {
                        std::mem::swap(&mut sub, &mut groups);
                    }
                    for (g, k) in sub {
                        *groups.entry(g).or_insert(0) += k;
                    }
                } else {
                    count += 1;
                    if self.group[c] != 0 {
                        *groups.entry(self.group[c]).or_insert(0) += 1;
                    }
                }
            }
            groups.retain(|g, k| sizes.get(g) != Some(k));
            residual[d] = count;
            // A child of the top that is one layer's (`/app`): cut where
            // the layer tree cuts it too. Only there: deeper edges (the
            // packages a layer adds to a directory of another) are many
            // and small in real images, and each one cut is one more
            // catalog a cold start fetches on its way (D43).
            let edge = uniform[d] && self.parent[d] == 0 && d != 0;
            cut[d] = d != 0
                && groups.is_empty()
                && (!own_only || uniform[d])
                && (count >= rule.min_entries || (edge && count >= rule.region_min_entries));
            open[d] = groups;
        }
        // Bound the nesting of one tree (top-down: parents are decided
        // first).
        let mut level = vec![0usize; n];
        for &d in &self.preorder {
            for &c in &self.children[d] {
                if !self.is_dir[c] {
                    continue;
                }
                level[c] = level[d] + usize::from(cut[c]);
                if level[c] > MAX_TREE_NESTING {
                    cut[c] = false;
                    level[c] = level[d];
                }
            }
        }
        cut
    }

    /// Which small files each catalog (by the index of its top, given
    /// `cut`) keeps inline under `rule`, looking at the catalog's own
    /// entries: its root and every entry down to its mount points.
    fn inline(&self, cut: &[bool], rule: InlineRule) -> Vec<Inline> {
        let n = self.ids.len();
        if rule == InlineRule::Always {
            return vec![Inline::All; n];
        }
        // The catalog (top index) each directory's children are in.
        let mut home = vec![0usize; n];
        for &d in &self.preorder {
            if d != 0 {
                home[d] = if cut[d] { d } else { home[self.parent[d]] };
            }
        }
        /// What a catalog's recorded entries say.
        #[derive(Clone, Copy)]
        struct Seen {
            /// The one layer they come from, or `Err` once two differ.
            layers: Result<Option<u32>, ()>,
            /// One of them comes from no single layer.
            changed: bool,
        }
        let mut seen = vec![
            Seen {
                layers: Ok(None),
                changed: false,
            };
            n
        ];
        let mut note = |cat: usize, i: usize| {
            if !self.recorded[i] {
                return;
            }
            let o = self.origin[i];
            let s = &mut seen[cat];
            s.changed |= o == MIXED;
            s.layers = match s.layers {
                Ok(None) if o != MIXED => Ok(Some(o)),
                Ok(Some(f)) if f == o => Ok(Some(f)),
                _ => Err(()),
            };
        };
        for i in 0..n {
            if i == 0 || cut[i] {
                // A catalog's root is its own entry (a mount point is also
                // one of its parent's, below).
                note(i, i);
            }
            if i != 0 {
                note(home[self.parent[i]], i);
            }
        }
        seen.iter()
            .enumerate()
            .map(|(i, s)| {
                let keep = match rule {
                    InlineRule::Always => true,
                    InlineRule::OneLayer => s.layers.is_ok(),
                    InlineRule::Shared if i == 0 => s.layers.is_ok(),
                    InlineRule::Shared => !s.changed,
                };
                if keep {
                    Inline::All
                } else {
                    Inline::None
                }
            })
            .collect()
    }

    /// Group → its size (the `nlink` of any member, frozen before).
    fn group_sizes(&self) -> HashMap<i64, u32> {
        let mut sizes = HashMap::new();
        for (i, &g) in self.group.iter().enumerate() {
            if g != 0 {
                sizes.insert(g, self.nlink[i]);
            }
        }
        sizes
    }
}

#[cfg(test)]
#[path = "nesting_tests.rs"]
mod tests;
