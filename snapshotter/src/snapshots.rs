//! The snapshot bookkeeping behind the gRPC service: containerd's overlayfs
//! snapshotter semantics for local snapshots, plus remote snapshots whose
//! contents are repository layer trees. Every method blocks (SQLite, the
//! file system, the mount) and is called from a blocking task.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_snapshots::api::types::Mount;

use crate::error::{Error, Result};
use crate::remote::{Repository, MANIFEST_LABEL};
use crate::store::{Db, Kind, Snapshot};

/// The label containerd's unpacker sets on `Prepare` to the chain ID it
/// is about to create (the remote snapshotter protocol).
pub const TARGET_LABEL: &str = "containerd.io/snapshot.ref";

/// Snapshots under `--root`, layer trees under `--mount`.
pub struct Snapshots {
    root: PathBuf,
    db: Mutex<Db>,
    repo: std::sync::Arc<Repository>,
}

/// What a `Prepare`/`View` answers.
pub enum Prepared {
    Mounts(Vec<Mount>),
    /// The target chain is in the repository: committed remotely.
    Remote {
        target: String,
    },
}

/// Disk use of a snapshot.
#[derive(Default)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

impl Snapshots {
    /// Opens `ROOT/metadata.db`, creating `ROOT/snapshots`.
    pub fn open(root: &Path, mount: &Path) -> Result<Snapshots> {
        for d in [
            root.to_path_buf(),
            root.join("snapshots"),
            root.join("trash"),
        ] {
            std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
        }
        let db = Db::open(&root.join("metadata.db"))?;
        Ok(Snapshots {
            root: root.to_path_buf(),
            db: Mutex::new(db),
            repo: std::sync::Arc::new(Repository::new(mount.to_path_buf())),
        })
    }

    /// Starts indexing the repository's layer trees in the background.
    pub fn warm_index(&self) {
        self.repo.warm_index();
    }

    fn db(&self) -> Result<MutexGuard<'_, Db>> {
        self.db
            .lock()
            .map_err(|_| Error::Internal("metadata lock poisoned".into()))
    }

    fn dir(&self, id: i64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// `Prepare` (kind active) or `View`.
    pub fn prepare(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Prepared> {
        tracing::debug!(key, parent, ?labels, "prepare");
        if let Some(digest) = labels.get(MANIFEST_LABEL) {
            self.repo.warm(digest);
        }
        if kind == Kind::Active {
            if let Some(target) = labels.get(TARGET_LABEL) {
                if self.try_remote(target, parent, &labels)? {
                    return Ok(Prepared::Remote {
                        target: target.clone(),
                    });
                }
            }
        }
        // Row and directories are made under the lock, so that `Cleanup`
        // never sees one without the other.
        let (snap, dir) = {
            let db = self.db()?;
            if !parent.is_empty() {
                let p = db.must(parent)?;
                if p.kind != Kind::Committed {
                    return Err(Error::FailedPrecondition(format!(
                        "parent {parent} is not committed"
                    )));
                }
            }
            let snap = db.insert(key, kind, parent, &labels, None)?;
            let dir = self.dir(snap.id);
            let made = ["fs", "work"].iter().try_for_each(|d| {
                let p = dir.join(d);
                std::fs::create_dir_all(&p).map_err(Error::io(&p))
            });
            if let Err(e) = made {
                db.delete(key)?;
                drop(db);
                self.discard(&dir);
                return Err(e);
            }
            (snap, dir)
        };
        match self.mounts_of(&snap) {
            Ok(m) => {
                tracing::debug!(key, parent, ?kind, id = snap.id, "prepared");
                Ok(Prepared::Mounts(m))
            }
            Err(e) => {
                // A snapshot that cannot be mounted is not kept.
                self.db()?.delete(key)?;
                self.discard(&dir);
                Err(e)
            }
        }
    }

    /// The remote snapshot protocol: when `target` is `parent` (remote or
    /// none) plus a layer the repository publishes, records the committed
    /// snapshot `target` on that layer tree. True when `target` exists now.
    fn try_remote(
        &self,
        target: &str,
        parent: &str,
        labels: &HashMap<String, String>,
    ) -> Result<bool> {
        {
            let db = self.db()?;
            if let Some(s) = db.get(target)? {
                return Ok(s.is_remote() && s.parent == parent);
            }
            if !parent.is_empty() {
                match db.get(parent)? {
                    Some(p) if p.is_remote() => {}
                    _ => return Ok(false),
                }
            }
        }
        let parent_chain = (!parent.is_empty()).then_some(parent);
        let diff_id = match self.repo.find(parent_chain, target) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(false),
            Err(e) => {
                // Not fatal: the layer is then downloaded like any other.
                tracing::warn!(error = %e, target, "repository mount unusable; pulling the layer");
                return Ok(false);
            }
        };
        if let Err(e) = self.repo.check_tree(&self.repo.tree(&diff_id)?) {
            tracing::warn!(error = %e, target, "layer tree unusable; pulling the layer");
            return Ok(false);
        }
        let mut labels = labels.clone();
        labels.insert(TARGET_LABEL.into(), target.into());
        match self
            .db()?
            .insert(target, Kind::Committed, parent, &labels, Some(&diff_id))
        {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(target, diff_id, "layer served by the repository");
        Ok(true)
    }

    /// The lower directories of `parent` and its ancestors, top first.
    fn lowers(&self, db: &Db, parent: &str) -> Result<Vec<(PathBuf, bool)>> {
        let mut out = Vec::new();
        let mut name = parent.to_string();
        while !name.is_empty() {
            let s = db.must(&name)?;
            let p = match &s.diff_id {
                Some(d) => (self.repo.tree(d)?, true),
                None => (self.dir(s.id).join("fs"), false),
            };
            out.push(p);
            name = s.parent;
        }
        Ok(out)
    }

    fn mounts_of(&self, s: &Snapshot) -> Result<Vec<Mount>> {
        let lowers = {
            let db = self.db()?;
            match s.kind {
                Kind::Committed => self.lowers(&db, &s.name)?,
                _ => self.lowers(&db, &s.parent)?,
            }
        };
        for (p, remote) in &lowers {
            if *remote {
                self.repo.check_tree(p)?;
            }
        }
        let fs = self.dir(s.id).join("fs");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let bind = |src: &Path, rw: bool| Mount {
            r#type: "bind".into(),
            source: path(src),
            target: String::new(),
            options: vec![if rw { "rw" } else { "ro" }.into(), "rbind".into()],
        };
        let lowerdir = || {
            format!(
                "lowerdir={}",
                lowers
                    .iter()
                    .map(|(p, _)| path(p))
                    .collect::<Vec<_>>()
                    .join(":")
            )
        };
        let mut options = Vec::new();
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            options.push("index=off".to_string());
        }
        let mount = match (s.kind, lowers.len()) {
            (Kind::Active, 0) => bind(&fs, true),
            (Kind::Active, _) => {
                options.push(format!("workdir={}", path(&self.dir(s.id).join("work"))));
                options.push(format!("upperdir={}", path(&fs)));
                options.push(lowerdir());
                Mount {
                    r#type: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options,
                }
            }
            (_, 0) => bind(&fs, false),
            (_, 1) => bind(&lowers[0].0, false),
            (_, _) => {
                options.push(lowerdir());
                Mount {
                    r#type: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options,
                }
            }
        };
        Ok(vec![mount])
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.db()?.must(key)?;
        self.mounts_of(&s)
    }

    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        self.db()?.commit(key, name, &labels)?;
        tracing::debug!(name, key, "committed");
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Snapshot> {
        self.db()?.must(key)
    }

    pub fn list(&self) -> Result<Vec<Snapshot>> {
        self.db()?.all()
    }

    /// `Update`: labels only (the one mutable field); `fieldpaths` as
    /// containerd gives them (`labels`, `labels.KEY`), none = all.
    pub fn update(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        fieldpaths: Option<Vec<String>>,
    ) -> Result<Snapshot> {
        let db = self.db()?;
        let s = db.must(name)?;
        let new = match fieldpaths.filter(|f| !f.is_empty()) {
            None => labels,
            Some(paths) => {
                let mut cur = s.labels.clone();
                for f in paths {
                    if f == "labels" {
                        cur = labels.clone();
                    } else if let Some(k) = f.strip_prefix("labels.") {
                        match labels.get(k) {
                            Some(v) => cur.insert(k.to_string(), v.clone()),
                            None => cur.remove(k),
                        };
                    } else {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update field {f} of snapshot {name}"
                        )));
                    }
                }
                cur
            }
        };
        db.set_labels(name, &new)?;
        db.must(name)
    }

    /// Disk use of a local snapshot's own directory; a remote one uses none.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let s = self.db()?.must(key)?;
        let mut u = Usage::default();
        if s.is_remote() {
            return Ok(u);
        }
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![self.dir(s.id).join("fs")];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&d)(e)),
            };
            for e in entries {
                let e = e.map_err(Error::io(&d))?;
                let md = e.metadata().map_err(Error::io(e.path()))?;
                if seen.insert((md.dev(), md.ino())) {
                    u.inodes += 1;
                    u.size += i64::try_from(md.blocks() * 512).unwrap_or(i64::MAX);
                }
                if md.is_dir() {
                    todo.push(e.path());
                }
            }
        }
        Ok(u)
    }

    /// `Remove`: refused while children exist.
    pub fn remove(&self, key: &str) -> Result<()> {
        let s = {
            let db = self.db()?;
            let s = db.must(key)?;
            if db.has_children(key)? {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key} has children"
                )));
            }
            db.delete(key)?;
            s
        };
        if !s.is_remote() {
            self.discard(&self.dir(s.id));
        }
        tracing::debug!(key, remote = s.is_remote(), "removed");
        Ok(())
    }

    /// Moves a directory to `trash/` and deletes it; failures are logged
    /// (`Cleanup` tries again).
    fn discard(&self, dir: &Path) {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let trash = self
            .root
            .join("trash")
            .join(format!("{}-{stamp}", name.unwrap_or_default()));
        match std::fs::rename(dir, &trash) {
            Ok(()) => {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(dir = %trash.display(), error = %e, "removing a snapshot");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "removing a snapshot"),
        }
    }

    /// `Cleanup`: deletes directories no snapshot owns (left by a crash
    /// between a database change and the file system) and the trash.
    pub fn cleanup(&self) -> Result<()> {
        {
            // Under the lock: `prepare` makes a row and its directory
            // under it too.
            let db = self.db()?;
            let owned: std::collections::HashSet<String> =
                db.all()?.into_iter().map(|s| s.id.to_string()).collect();
            let dir = self.root.join("snapshots");
            for e in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
                let e = e.map_err(Error::io(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !owned.contains(&name) {
                    tracing::info!(dir = %e.path().display(), "removing an orphaned snapshot directory");
                    self.discard(&e.path());
                }
            }
        }
        let trash = self.root.join("trash");
        for e in std::fs::read_dir(&trash).map_err(Error::io(&trash))? {
            let e = e.map_err(Error::io(&trash))?;
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "cleanup");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::remote::chain_id;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// A directory laid out like a repository mount with layers `a`, `b`.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("mnt");
        for c in ['a', 'b'] {
            let hex = c.to_string().repeat(64);
            std::fs::create_dir_all(mount.join("layers").join(&hex[..2]).join(&hex).join("x"))
                .unwrap();
        }
        let root = t.path().join("root");
        (t, root, mount)
    }

    fn label(target: &str) -> HashMap<String, String> {
        HashMap::from([(TARGET_LABEL.to_string(), target.to_string())])
    }

    #[test]
    fn published_chains_are_remote_and_survive_a_reopen() {
        let (_t, root, mount) = setup();
        let s = Snapshots::open(&root, &mount).unwrap();
        let (a, b) = (digest('a'), digest('b'));
        let ab = chain_id(Some(&a), &b);
        assert!(matches!(
            s.prepare(Kind::Active, "x1", "", label(&a)).unwrap(),
            Prepared::Remote { .. }
        ));
        assert!(matches!(
            s.prepare(Kind::Active, "x2", &a, label(&ab)).unwrap(),
            Prepared::Remote { .. }
        ));
        // An unknown layer on top: local, overlay over both trees.
        let c = chain_id(Some(&ab), &digest('c'));
        let Prepared::Mounts(m) = s.prepare(Kind::Active, "x3", &ab, label(&c)).unwrap() else {
            panic!("must be local");
        };
        let lower = m[0]
            .options
            .iter()
            .find(|o| o.starts_with("lowerdir="))
            .unwrap();
        let repo = Repository::new(mount.clone());
        let tree = |d: &str| repo.tree(d).unwrap().display().to_string();
        assert_eq!(lower, &format!("lowerdir={}:{}", tree(&b), tree(&a)));
        s.commit("c", "x3", HashMap::new()).unwrap();
        // A remote layer over a local one is not taken from the repository.
        let Prepared::Mounts(_) = s
            .prepare(Kind::Active, "x4", "c", label(&chain_id(Some(&c), &a)))
            .unwrap()
        else {
            panic!("must be local");
        };
        assert!(matches!(s.remove(&ab), Err(Error::FailedPrecondition(_))));
        drop(s);

        let s = Snapshots::open(&root, &mount).unwrap();
        assert!(s.stat(&ab).unwrap().is_remote());
        assert_eq!(s.stat("c").unwrap().kind, Kind::Committed);
        let Prepared::Mounts(v) = s.prepare(Kind::View, "v", &a, HashMap::new()).unwrap() else {
            panic!("a view is never remote");
        };
        assert_eq!(v[0].r#type, "bind");
        assert_eq!(v[0].source, tree(&a));
        for k in ["v", "x4", "c", &ab, &a] {
            s.remove(k).unwrap();
        }
        assert!(s.list().unwrap().is_empty());
        s.cleanup().unwrap();
        assert_eq!(
            std::fs::read_dir(root.join("snapshots")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_tree_gone_from_the_mount_fails_mounts() {
        let (_t, root, mount) = setup();
        let s = Snapshots::open(&root, &mount).unwrap();
        let a = digest('a');
        s.prepare(Kind::Active, "x1", "", label(&a)).unwrap();
        s.prepare(Kind::Active, "c1", &a, HashMap::new()).unwrap();
        std::fs::remove_dir_all(s.repo.tree(&a).unwrap()).unwrap();
        assert!(matches!(s.mounts("c1"), Err(Error::TreeGone { .. })));
        // A new snapshot on it is refused and leaves nothing behind.
        assert!(matches!(
            s.prepare(Kind::Active, "c2", &a, HashMap::new()),
            Err(Error::TreeGone { .. })
        ));
        assert!(matches!(s.stat("c2"), Err(Error::NotFound(_))));
    }

    #[test]
    fn update_sets_and_removes_single_labels() {
        let (_t, root, mount) = setup();
        let s = Snapshots::open(&root, &mount).unwrap();
        s.prepare(
            Kind::Active,
            "k",
            "",
            HashMap::from([("a".into(), "1".into())]),
        )
        .unwrap();
        let new = HashMap::from([("b".to_string(), "2".to_string())]);
        let got = s
            .update(
                "k",
                new.clone(),
                Some(vec!["labels.b".into(), "labels.a".into()]),
            )
            .unwrap();
        assert_eq!(got.labels, new);
        assert!(matches!(
            s.update("k", new, Some(vec!["parent".into()])),
            Err(Error::InvalidArgument(_))
        ));
    }
}
