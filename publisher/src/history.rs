//! Revision history: listing the chain of signed manifests, naming
//! revisions (tags, which garbage collection keeps), rolling back, and
//! removing image names.
//!
//! Every revision's manifest records its parent's id (`previous`) and is
//! also stored as an `M` object, so the chain can be walked back until
//! garbage collection has removed an old revision. A rollback never makes
//! the revision number go back: it publishes a *new* revision whose
//! `/images` is the old revision's (D33).

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use stratum_catalog::catalog::{ImageRecord, RevisionTag, ROOT_ID};
use stratum_catalog::manifest::Manifest;
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::publish::Transaction;
use crate::repo::Repository;

/// One revision of the chain.
#[derive(Clone, Debug, Serialize)]
pub struct RevisionInfo {
    pub revision: u64,
    pub timestamp: u64,
    /// Id of the manifest object (`M`).
    pub manifest_id: String,
    pub root: String,
    /// Tags naming this revision.
    pub tags: Vec<String>,
}

/// The chain from the current revision back, newest first, at most
/// `limit` long; `true` when it ends because older manifests were removed
/// by garbage collection (rather than at revision 1).
pub fn history(
    store: &Store,
    key: &VerifyingKey,
    limit: Option<usize>,
) -> Result<(Vec<RevisionInfo>, bool)> {
    let (current, current_id) = store.manifest(key)?;
    let tags = images_catalog_of(store, &current)?
        .map(|c| c.revision_tags())
        .transpose()?
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut next = Some((current, current_id));
    while let Some((m, id)) = next.take() {
        if limit.is_some_and(|l| out.len() >= l) {
            return Ok((out, false));
        }
        out.push(RevisionInfo {
            revision: m.revision,
            timestamp: m.timestamp,
            manifest_id: id.to_hex(),
            root: m.root.to_hex(),
            tags: tags
                .iter()
                .filter(|t| t.manifest_id == id.to_hex())
                .map(|t| t.name.clone())
                .collect(),
        });
        match m.previous {
            None => return Ok((out, false)),
            Some(prev) => match load_manifest(store, key, &prev)? {
                Some(pm) => next = Some((pm, prev)),
                None => return Ok((out, true)),
            },
        }
    }
    Ok((out, false))
}

/// A historical manifest object, verified; `None` when it is gone.
pub fn load_manifest(store: &Store, key: &VerifyingKey, id: &ObjectId) -> Result<Option<Manifest>> {
    if !store.exists(id, ObjectKind::Manifest)? {
        return Ok(None);
    }
    let bytes = store.get(id, ObjectKind::Manifest)?;
    Ok(Some(Manifest::verify(&bytes, key)?))
}

/// Revision `n`, with its manifest id: found through a tag naming it, or
/// by walking the chain back.
pub fn find_revision(store: &Store, key: &VerifyingKey, n: u64) -> Result<(Manifest, ObjectId)> {
    let (mut m, mut id) = store.manifest(key)?;
    let tags = images_catalog_of(store, &m)?
        .map(|c| c.revision_tags())
        .transpose()?
        .unwrap_or_default();
    for t in tags.iter().filter(|t| t.revision == n && n != m.revision) {
        if let Ok(tid) = ObjectId::from_hex(&t.manifest_id) {
            if let Some(tm) = load_manifest(store, key, &tid)? {
                if tm.revision == n {
                    return Ok((tm, tid));
                }
            }
        }
    }
    if n > m.revision {
        return Err(invalid(format!(
            "revision {n} does not exist (the current one is {})",
            m.revision
        )));
    }
    while m.revision != n {
        let prev = m
            .previous
            .ok_or_else(|| invalid(format!("revision {n} is not in the chain")))?;
        m = load_manifest(store, key, &prev)?.ok_or_else(|| {
            invalid(format!(
                "revision {n} was removed by garbage collection (the chain ends at revision {})",
                m.revision
            ))
        })?;
        id = prev;
    }
    Ok((m, id))
}

fn images_catalog_of(
    store: &Store,
    m: &Manifest,
) -> Result<Option<stratum_catalog::catalog::Catalog>> {
    let root = store.load_catalog(&m.root)?;
    match root.lookup(ROOT_ID, b"images")?.and_then(|e| e.nested) {
        Some(id) => Ok(Some(store.load_catalog(&id)?)),
        None => Ok(None),
    }
}

/// The images revision `m` published.
pub fn images_of(store: &Store, m: &Manifest) -> Result<Vec<ImageRecord>> {
    let root = store.load_catalog(&m.root)?;
    let images = stratum_catalog::image_index::in_store(store, &root).all()?;
    Ok(images)
}

fn invalid(reason: String) -> PublishError {
    PublishError::Repo {
        repo: "history".into(),
        reason,
    }
}

/// Names revision `revision` (default: the current one) `name`, in a new
/// revision. Returns the new revision and the tag.
pub fn tag(
    repo: &Repository,
    key: &SigningKey,
    name: &str,
    revision: Option<u64>,
) -> Result<(u64, RevisionTag)> {
    check_tag_name(name)?;
    let mut tx = Transaction::begin(repo, key)?;
    let (current, current_id) = tx.base();
    let (target, target_id) = match revision {
        None => (current.clone(), current_id),
        Some(n) => find_revision(repo.store(), &key.verifying_key(), n)?,
    };
    let t = RevisionTag {
        name: name.to_owned(),
        revision: target.revision,
        manifest_id: target_id.to_hex(),
        tagged_at: i64::try_from(tx.timestamp()).unwrap_or(0),
    };
    tx.namespace_mut().set_tag(t.clone());
    let (rev, _) = tx.commit(key)?;
    Ok((rev, t))
}

/// Removes tag `name` (its revision is then kept only while it is among
/// the newest). `false` when there was no such tag (nothing published).
pub fn untag(repo: &Repository, key: &SigningKey, name: &str) -> Result<(u64, bool)> {
    let mut tx = Transaction::begin(repo, key)?;
    if !tx.namespace().tags().any(|t| t.name == name) {
        let (rev, _) = tx.commit(key)?;
        return Ok((rev, false));
    }
    tx.namespace_mut().remove_tag(name);
    let (rev, _) = tx.commit(key)?;
    Ok((rev, true))
}

fn check_tag_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PublishError::InvalidName {
            name: name.to_owned(),
            reason: "a revision tag is 1-128 characters of [A-Za-z0-9._-]".into(),
        })
    }
}

/// What a rollback did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RollbackReport {
    /// The new revision (whose images are those of `to`).
    pub revision: u64,
    pub to: u64,
    /// Names pointed (again) at the image they had in revision `to`.
    pub restored: Vec<String>,
    /// Names that revision `to` did not have: unlinked (and retired, so
    /// their trees stay for the grace period).
    pub unlinked: Vec<String>,
}

/// Publishes a new revision whose `/images` equals revision `to`'s. The
/// trees of every image of `to` must still be in the repository (garbage
/// collection removes the trees of images retired longer than the grace
/// period); the images it unlinks are retired, not deleted.
pub fn rollback(repo: &Repository, key: &SigningKey, to: u64) -> Result<RollbackReport> {
    let mut tx = Transaction::begin(repo, key)?;
    let store = repo.store().clone();
    let (old, _) = find_revision(&store, &key.verifying_key(), to)?;
    let wanted = images_of(&store, &old)?;
    let mut report = RollbackReport {
        to,
        ..Default::default()
    };
    for r in &wanted {
        let hex = r
            .flat_path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let ns = tx.namespace_mut();
        if ns.flat(&store, &hex)?.is_none() {
            return Err(invalid(format!(
                "cannot roll back to revision {to}: the tree of {} ({}) was removed by garbage collection",
                r.name, r.manifest_digest
            )));
        }
        for l in &r.layers {
            let lhex = l.diff_id.hex();
            if ns.layer(&store, &lhex)?.is_none() {
                return Err(invalid(format!(
                    "cannot roll back to revision {to}: layer {} of {} was removed by garbage collection",
                    l.diff_id, r.name
                )));
            }
        }
    }
    let current: Vec<ImageRecord> = tx.images()?;
    for c in &current {
        if !wanted.iter().any(|w| w.name == c.name) {
            tx.remove_image(&c.name)?;
            report.unlinked.push(c.name.clone());
        }
    }
    for w in wanted {
        let same = current
            .iter()
            .any(|c| c.name == w.name && c.manifest_digest == w.manifest_digest);
        if !same {
            report.restored.push(w.name.clone());
            tx.namespace_mut().set_image(w)?;
        }
    }
    let (rev, _) = tx.commit(key)?;
    report.revision = rev;
    Ok(report)
}

/// Unlinks image names from `/images` in one new revision (their trees
/// stay until garbage collection). Unknown names are an error and nothing
/// is published.
pub fn remove_images(repo: &Repository, key: &SigningKey, names: &[String]) -> Result<u64> {
    let mut tx = Transaction::begin(repo, key)?;
    for n in names {
        if !tx.remove_image(n)? {
            return Err(PublishError::Image {
                image: n.clone(),
                reason: "no such image (see `stratum images`)".into(),
            });
        }
    }
    let (rev, _) = tx.commit(key)?;
    Ok(rev)
}
