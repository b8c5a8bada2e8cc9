//! Garbage collection: `stratum gc`.
//!
//! Two phases, both under the repository lock (a publisher waits; readers
//! are never disturbed, because nothing a kept revision reaches is
//! deleted):
//!
//! 1. **Prune.** Retired images (`retired_images` of `/images`, D32) whose
//!    grace period is over are forgotten; the flat tree of each is removed
//!    unless a wanted or still-graced image has the same manifest, and each
//!    of its layers is removed when no such image uses it any more — the
//!    reference counts come from the published image metadata, never from a
//!    tree scan. If anything was pruned, a new signed revision is published.
//! 2. **Mark and sweep.** Every object reachable from the kept revisions —
//!    the newest `keep_revisions` and every tagged one — is marked (manifest
//!    objects, catalogs, content objects, chunks). Every other object under
//!    `data/` older than the safety window is deleted. The window protects
//!    the objects of a writer that does not take the lock (none in stratum;
//!    a crashed one is covered too) and the clock skew of shared storage.

use std::collections::HashSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use serde::Serialize;
use stratum_catalog::catalog::Data;
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::Result;
use crate::history::load_manifest;
use crate::publish::Transaction;
use crate::repo::{now, Repository};

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// How long a retired image's trees stay (seconds).
    pub grace: u64,
    /// Newest revisions kept (at least 1, the current one).
    pub keep_revisions: usize,
    /// Unreferenced objects younger than this (seconds) are left alone.
    pub safety_window: u64,
    pub dry_run: bool,
    /// "Now", in Unix seconds (injectable for tests; default the clock).
    pub now: Option<u64>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: 30 * 86_400,
            keep_revisions: 10,
            safety_window: 3_600,
            dry_run: false,
            now: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// The current revision after the run.
    pub revision: u64,
    /// Whether pruning published a new revision.
    pub new_revision: bool,
    /// Retired images whose grace period is over (`NAME:TAG@sha256:…`).
    pub images_removed: Vec<String>,
    /// Flat and layer trees removed from the namespace.
    pub flat_trees_removed: usize,
    pub layer_trees_removed: usize,
    /// Retired images still within their grace period.
    pub images_in_grace: usize,
    /// The revisions whose objects were kept.
    pub revisions_kept: Vec<u64>,
    pub objects_reachable: u64,
    pub objects_removed: u64,
    pub bytes_removed: u64,
    /// Unreferenced objects left because they are younger than the window.
    pub objects_too_young: u64,
    pub seconds: f64,
}

pub fn gc(repo: &Repository, key: &SigningKey, opts: &GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    let now = opts.now.unwrap_or_else(now);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut tx = Transaction::begin(repo, key)?;
    let store = repo.store().clone();

    // Phase 1: prune expired retired images.
    let retired: Vec<_> = tx.namespace().retired().cloned().collect();
    let deadline = i64::try_from(now.saturating_sub(opts.grace)).unwrap_or(i64::MAX);
    let (expired, graced): (Vec<_>, Vec<_>) =
        retired.into_iter().partition(|r| r.retired_at <= deadline);
    report.images_in_grace = graced.len();
    let hex_of = |path: &str| path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut live_flats: HashSet<String> = HashSet::new();
    let mut live_layers: HashSet<String> = HashSet::new();
    for i in tx.images()? {
        live_flats.insert(hex_of(&i.flat_path));
        live_layers.extend(i.layers.iter().map(|l| hex_of(&l.layer_path)));
    }
    for r in &graced {
        live_flats.insert(hex_of(&r.flat_path));
        live_layers.extend(r.layers.iter().map(|(_, path, _)| hex_of(path)));
    }
    let mut dead_flats: HashSet<String> = HashSet::new();
    let mut dead_layers: HashSet<String> = HashSet::new();
    for r in &expired {
        report
            .images_removed
            .push(format!("{}@{}", r.name, r.manifest_digest));
        let f = hex_of(&r.flat_path);
        if !live_flats.contains(&f) {
            dead_flats.insert(f);
        }
        for (_, path, _) in &r.layers {
            let l = hex_of(path);
            if !live_layers.contains(&l) {
                dead_layers.insert(l);
            }
        }
    }
    report.flat_trees_removed = dead_flats.len();
    report.layer_trees_removed = dead_layers.len();
    if !opts.dry_run && !expired.is_empty() {
        let ns = tx.namespace_mut();
        for r in &expired {
            ns.drop_retired(&r.name, &r.manifest_digest);
        }
        for f in &dead_flats {
            ns.remove_flat(f);
        }
        for l in &dead_layers {
            ns.remove_layer(l);
        }
    }
    // Dry run: nothing changed, so this only releases the lock.
    let (revision, new_revision, _lock) = tx.commit_holding(key)?;
    report.revision = revision;
    report.new_revision = new_revision;

    // Phase 2: mark from the kept revisions, sweep the rest.
    let (kept, tagged) = kept_revisions(&store, key, opts.keep_revisions.max(1))?;
    report.revisions_kept = kept.iter().map(|(m, _)| m.revision).collect();
    report
        .revisions_kept
        .extend(tagged.iter().map(|(m, _)| m.revision));
    report.revisions_kept.sort_unstable();
    report.revisions_kept.dedup();
    let mut marked: HashSet<(ObjectKind, ObjectId)> = HashSet::new();
    for (m, id) in kept.iter().chain(&tagged) {
        marked.insert((ObjectKind::Manifest, *id));
        mark_tree(&store, &m.root, &mut marked)?;
    }
    report.objects_reachable = marked.len() as u64;
    let cutoff = UNIX_EPOCH + Duration::from_secs(now.saturating_sub(opts.safety_window));
    let backend = store.backend();
    for path in backend.list("data/")? {
        let Ok((id, kind)) = ObjectId::parse_path(&path) else {
            tracing::warn!("gc: {path} is not an object path; left alone");
            continue;
        };
        if marked.contains(&(kind, id)) {
            continue;
        }
        let Some((size, modified)) = backend.stat(&path)? else {
            continue;
        };
        if modified > cutoff {
            report.objects_too_young += 1;
            continue;
        }
        if !opts.dry_run {
            backend.delete(&path)?;
        }
        report.objects_removed += 1;
        report.bytes_removed += size;
    }
    if !opts.dry_run && report.objects_removed > 0 {
        backend.sync()?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

type Kept = Vec<(stratum_catalog::manifest::Manifest, ObjectId)>;

/// The newest `n` revisions that still exist, and the tagged ones.
fn kept_revisions(store: &Store, key: &SigningKey, n: usize) -> Result<(Kept, Kept)> {
    let vk = key.verifying_key();
    let (current, current_id) = store.manifest(&vk)?;
    let mut newest = vec![(current.clone(), current_id)];
    let mut prev = current.previous;
    while newest.len() < n {
        let Some(id) = prev else { break };
        let Some(m) = load_manifest(store, &vk, &id)? else {
            break;
        };
        prev = m.previous;
        newest.push((m, id));
    }
    let mut tagged = Vec::new();
    for t in revision_tags(store, &current)? {
        let Ok(id) = ObjectId::from_hex(&t.manifest_id) else {
            continue;
        };
        if newest.iter().any(|(_, n)| *n == id) {
            continue;
        }
        match load_manifest(store, &vk, &id)? {
            Some(m) => tagged.push((m, id)),
            None => tracing::warn!(
                "gc: tag {} names revision {} whose manifest is gone",
                t.name,
                t.revision
            ),
        }
    }
    Ok((newest, tagged))
}

fn revision_tags(
    store: &Store,
    m: &stratum_catalog::manifest::Manifest,
) -> Result<Vec<stratum_catalog::catalog::RevisionTag>> {
    let root = store.load_catalog(&m.root)?;
    match root
        .lookup(stratum_catalog::catalog::ROOT_ID, b"images")?
        .and_then(|e| e.nested)
    {
        Some(id) => Ok(store.load_catalog(&id)?.revision_tags()?),
        None => Ok(Vec::new()),
    }
}

/// Marks catalog `root` and everything it reaches.
fn mark_tree(
    store: &Store,
    root: &ObjectId,
    marked: &mut HashSet<(ObjectKind, ObjectId)>,
) -> Result<()> {
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        if !marked.insert((ObjectKind::Catalog, id)) {
            continue;
        }
        let cat = store.load_catalog(&id)?;
        cat.for_each_entry(|e| {
            if let Some(n) = e.nested {
                stack.push(n);
            }
            match &e.data {
                Data::Object(o) => {
                    marked.insert((ObjectKind::Content, *o));
                }
                Data::Chunks(cs) => {
                    for c in cs {
                        marked.insert((ObjectKind::Content, c.id));
                    }
                }
                Data::None | Data::Inline(_) => {}
            }
            Ok(())
        })?;
        // The prefetch lists its image records name (FORMAT.md §5.6).
        for (_, list) in cat.prefetch_lists()? {
            marked.insert((ObjectKind::Content, list.object()?.0));
        }
    }
    Ok(())
}
