//! Path resolution across nested catalogs.
//!
//! A directory entry that names a nested catalog is replaced, for readers,
//! by the root entry of that catalog (under the parent's name). Catalogs are
//! loaded on first use through a [`CatalogLoader`], so a reader touches only
//! the catalogs on the paths it visits. The same code serves a local
//! repository and, through another loader, an HTTP one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::catalog::nesting::{fits, MAX_NESTING};
use crate::catalog::{Catalog, Entry};
use crate::store::Store;
use crate::{Error, ObjectId, Result};

pub trait CatalogLoader {
    fn load(&self, id: &ObjectId) -> Result<Rc<Catalog>>;
}

/// Loads catalogs from a [`Store`], each verified once and kept for the
/// namespace's lifetime.
pub struct StoreLoader {
    store: Store,
    cache: RefCell<HashMap<ObjectId, Rc<Catalog>>>,
}

impl StoreLoader {
    pub fn new(store: Store) -> Self {
        StoreLoader {
            store,
            cache: RefCell::new(HashMap::new()),
        }
    }
}

impl CatalogLoader for StoreLoader {
    fn load(&self, id: &ObjectId) -> Result<Rc<Catalog>> {
        if let Some(c) = self.cache.borrow().get(id) {
            return Ok(c.clone());
        }
        let c = Rc::new(self.store.load_catalog(id)?);
        self.cache.borrow_mut().insert(*id, c.clone());
        Ok(c)
    }
}

/// An entry together with the catalog it lives in.
#[derive(Clone, Debug)]
pub struct Node {
    pub catalog: Rc<Catalog>,
    pub entry: Entry,
    /// Catalogs on the path from the namespace root to this entry's, both
    /// included (1 in the root catalog).
    pub nesting: usize,
}

pub struct Namespace<L> {
    loader: L,
    root: Rc<Catalog>,
}

impl<L: CatalogLoader> Namespace<L> {
    pub fn new(loader: L, root: &ObjectId) -> Result<Self> {
        let root = loader.load(root)?;
        Ok(Namespace { loader, root })
    }

    pub fn loader(&self) -> &L {
        &self.loader
    }

    /// The image records of this namespace (FORMAT.md §5.3).
    pub fn image_index(
        &self,
    ) -> crate::image_index::ImageIndex<'_, impl FnMut(&ObjectId) -> Result<Rc<Catalog>> + '_> {
        crate::image_index::ImageIndex::new(&self.root, move |id: &ObjectId| self.loader.load(id))
    }

    pub fn root(&self) -> Result<Node> {
        Ok(Node {
            catalog: self.root.clone(),
            entry: self.root.root()?,
            nesting: 1,
        })
    }

    /// Follows a nested-catalog mount point, if `entry` (a child of `dir`)
    /// is one: the child catalog must fit its place (a tree mounts only
    /// subtrees, FORMAT.md §4.12) and be at most [`MAX_NESTING`] catalogs
    /// deep. Catalogs are named by the hash of their bytes, so none can
    /// name itself or an ancestor; the depth bound holds whatever a hostile
    /// store (or a broken hash) serves.
    fn cross(&self, dir: &Node, entry: Entry) -> Result<Node> {
        match entry.nested {
            None => Ok(Node {
                catalog: dir.catalog.clone(),
                entry,
                nesting: dir.nesting,
            }),
            Some(id) => {
                let invalid = |reason: String| Error::InvalidCatalog {
                    catalog: id.to_hex(),
                    reason,
                };
                if dir.nesting >= MAX_NESTING {
                    return Err(invalid(format!(
                        "nested catalogs more than {MAX_NESTING} deep (mounted at {:?} in catalog {})",
                        String::from_utf8_lossy(&entry.name),
                        dir.catalog.id()
                    )));
                }
                let child = self.loader.load(&id)?;
                if !fits(dir.catalog.kind(), child.kind()) {
                    return Err(invalid(format!(
                        "a catalog of kind {} cannot be mounted in one of kind {} (at {:?} in catalog {})",
                        child.kind().as_str(),
                        dir.catalog.kind().as_str(),
                        String::from_utf8_lossy(&entry.name),
                        dir.catalog.id()
                    )));
                }
                let mut root = child.root()?;
                root.name = entry.name;
                Ok(Node {
                    catalog: child,
                    entry: root,
                    nesting: dir.nesting + 1,
                })
            }
        }
    }

    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        match dir.catalog.lookup(dir.entry.id, name)? {
            None => Ok(None),
            Some(e) => self.cross(dir, e).map(Some),
        }
    }

    pub fn children(&self, dir: &Node) -> Result<Vec<Node>> {
        dir.catalog
            .children(dir.entry.id)?
            .into_iter()
            .map(|e| self.cross(dir, e))
            .collect()
    }

    /// Resolves an absolute namespace path without following symlinks.
    pub fn resolve(&self, path: &str) -> Result<Node> {
        let mut node = self.root()?;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if comp == ".." {
                return Err(Error::Path {
                    path: path.to_owned(),
                    reason: "'..' is not allowed".into(),
                });
            }
            if !node.entry.is_dir() {
                return Err(Error::Path {
                    path: path.to_owned(),
                    reason: format!("{comp:?} is below a non-directory"),
                });
            }
            node = self
                .lookup(&node, comp.as_bytes())?
                .ok_or_else(|| Error::NotFound {
                    path: path.to_owned(),
                })?;
        }
        Ok(node)
    }

    /// Resolves an absolute namespace path as a file system would, following
    /// symlinks on the way (an absolute target from the namespace root, a
    /// relative one from the link's directory; `..` stops at the root), and
    /// the last component too when `follow_last`. So
    /// `/images/NAME/TAG/etc/os-release` reaches the file in the image's
    /// flat tree. At most [`MAX_SYMLINK_HOPS`] links are followed.
    pub fn resolve_following(&self, path: &str, follow_last: bool) -> Result<Node> {
        let err = |reason: String| Error::Path {
            path: path.to_owned(),
            reason,
        };
        let split = |p: &[u8]| -> std::collections::VecDeque<Vec<u8>> {
            p.split(|b| *b == b'/')
                .filter(|c| !c.is_empty() && *c != b".")
                .map(<[u8]>::to_vec)
                .collect()
        };
        // The directories walked so far, the root first; `where` names them.
        let mut stack = vec![self.root()?];
        let mut names: Vec<Vec<u8>> = Vec::new();
        let shown = |names: &[Vec<u8>]| {
            let mut s = String::new();
            for n in names {
                s.push('/');
                s.push_str(&String::from_utf8_lossy(n));
            }
            if s.is_empty() {
                s.push('/');
            }
            s
        };
        let mut pending = split(path.as_bytes());
        let mut hops = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == b".." {
                if stack.len() > 1 {
                    stack.pop();
                    names.pop();
                }
                continue;
            }
            let dir = stack.last().ok_or_else(|| err("empty walk".into()))?;
            if !dir.entry.is_dir() {
                return Err(err(format!("{} is not a directory", shown(&names))));
            }
            let node = self.lookup(dir, &comp)?.ok_or_else(|| Error::NotFound {
                path: path.to_owned(),
            })?;
            if let Some(target) = node
                .entry
                .symlink
                .as_ref()
                .filter(|_| follow_last || !pending.is_empty())
            {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(err(format!(
                        "more than {MAX_SYMLINK_HOPS} symbolic links on the way"
                    )));
                }
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                    names.clear();
                }
                let mut next = split(target);
                next.extend(pending);
                pending = next;
                continue;
            }
            names.push(comp);
            stack.push(node);
        }
        stack.pop().ok_or_else(|| err("empty walk".into()))
    }
}

/// The most symlinks [`Namespace::resolve_following`] follows for one path
/// (Linux's own limit).
pub const MAX_SYMLINK_HOPS: usize = 40;
