//! Path-level editing of a catalog under construction: walking and creating
//! parent directories, replacing entries, with a cache of directory ids so
//! that ingesting a path costs one indexed lookup per new component, not per
//! component.

use std::collections::HashMap;

use stratum_catalog::catalog::{CatalogBuilder, Entry, FileType, ROOT_ID};

/// A path split into components, each a clean name (no `/`, not `.`/`..`).
pub type Components = Vec<Vec<u8>>;

/// Splits a tar path into clean components. Leading `/` and `./` are
/// dropped (as GNU tar does); `..` anywhere is refused, since no legitimate
/// layer needs it and it is how a hostile layer escapes its root.
pub fn split_path(raw: &[u8]) -> Result<Components, String> {
    let mut out = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains a '..' component".into()),
            c => {
                if c.contains(&0) {
                    return Err("path contains a NUL byte".into());
                }
                if c.len() > 255 {
                    return Err(format!(
                        "a path component is {} bytes long (limit 255)",
                        c.len()
                    ));
                }
                out.push(c.to_vec());
            }
        }
    }
    if out.len() > 1024 {
        return Err(format!(
            "path is {} components deep (limit 1024)",
            out.len()
        ));
    }
    Ok(out)
}

pub fn display(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Resolves `comps` in a builder without following symlinks.
pub fn resolve(b: &CatalogBuilder, comps: &[Vec<u8>]) -> stratum_catalog::Result<Option<Entry>> {
    let mut cur = match b.get(ROOT_ID)? {
        Some(e) => e,
        None => return Ok(None),
    };
    for c in comps {
        if !cur.is_dir() {
            return Ok(None);
        }
        match b.lookup(cur.id, c)? {
            Some(e) => cur = e,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// A catalog being assembled path by path.
pub struct Tree {
    pub b: CatalogBuilder,
    dirs: HashMap<Components, i64>,
}

/// Why a path could not be placed.
pub enum PlaceError {
    Catalog(stratum_catalog::Error),
    Invalid(String),
}

impl From<stratum_catalog::Error> for PlaceError {
    fn from(e: stratum_catalog::Error) -> Self {
        PlaceError::Catalog(e)
    }
}

impl Tree {
    pub fn new(b: CatalogBuilder) -> Self {
        Tree {
            b,
            dirs: HashMap::new(),
        }
    }

    /// The id of directory `comps`, creating missing directories as
    /// implicit ones with metadata from `lower` (the merged lower layers) or,
    /// without one there, `0755 root:root`.
    pub fn ensure_dir(
        &mut self,
        comps: &[Vec<u8>],
        lower: Option<&CatalogBuilder>,
    ) -> Result<i64, PlaceError> {
        if comps.is_empty() {
            return Ok(ROOT_ID);
        }
        if let Some(&id) = self.dirs.get(comps) {
            return Ok(id);
        }
        let parent = self.ensure_dir(&comps[..comps.len() - 1], lower)?;
        let name = &comps[comps.len() - 1];
        let id = match self.b.lookup(parent, name)? {
            Some(e) if e.is_dir() => e.id,
            Some(e) if e.file_type() == Some(FileType::Symlink) => {
                return Err(PlaceError::Invalid(format!(
                    "path goes through the symlink {} of the same layer",
                    display(comps)
                )))
            }
            Some(_) => {
                return Err(PlaceError::Invalid(format!(
                    "{} is not a directory",
                    display(comps)
                )))
            }
            None => {
                let mut dir = Entry::new(FileType::Directory, 0o755);
                if let Some(low) = lower {
                    match resolve(low, comps)? {
                        Some(e) if e.is_dir() => {
                            dir = e;
                            dir.hardlink = 0;
                            dir.xattrs.retain(|(n, _)| !is_overlay_xattr(n));
                        }
                        Some(e) if e.file_type() == Some(FileType::Symlink) => {
                            return Err(PlaceError::Invalid(format!(
                                "path goes through {}, a symlink in a lower layer",
                                display(comps)
                            )))
                        }
                        _ => {}
                    }
                }
                dir.name = name.clone();
                dir.flags |= stratum_catalog::catalog::schema::FLAG_IMPLICIT;
                self.b.insert(parent, &dir)?
            }
        };
        self.dirs.insert(comps.to_vec(), id);
        Ok(id)
    }

    /// Removes entry `id` at `comps`; forgets cached directories below it.
    pub fn remove(&mut self, id: i64, comps: &[Vec<u8>]) -> stratum_catalog::Result<()> {
        self.b.remove(id)?;
        self.dirs.retain(|k, _| !k.starts_with(comps));
        Ok(())
    }

    pub fn remember_dir(&mut self, comps: &[Vec<u8>], id: i64) {
        self.dirs.insert(comps.to_vec(), id);
    }
}

pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}
