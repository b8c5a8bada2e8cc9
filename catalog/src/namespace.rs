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
        })
    }

    /// Follows a nested-catalog mount point, if `entry` is one.
    fn cross(&self, catalog: &Rc<Catalog>, entry: Entry) -> Result<Node> {
        match entry.nested {
            None => Ok(Node {
                catalog: catalog.clone(),
                entry,
            }),
            Some(id) => {
                let child = self.loader.load(&id)?;
                let mut root = child.root()?;
                root.name = entry.name;
                Ok(Node {
                    catalog: child,
                    entry: root,
                })
            }
        }
    }

    pub fn lookup(&self, dir: &Node, name: &[u8]) -> Result<Option<Node>> {
        match dir.catalog.lookup(dir.entry.id, name)? {
            None => Ok(None),
            Some(e) => self.cross(&dir.catalog, e).map(Some),
        }
    }

    pub fn children(&self, dir: &Node) -> Result<Vec<Node>> {
        dir.catalog
            .children(dir.entry.id)?
            .into_iter()
            .map(|e| self.cross(&dir.catalog, e))
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
}
