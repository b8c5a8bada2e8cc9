//! Where image records are found (FORMAT.md §5.3).
//!
//! Each image's record (its `images` row and `image_layers` rows) lives in
//! the `/flat/ab` partition catalog that also holds the mount point of the
//! image's flat tree (`ab` = the first two hex digits of its manifest
//! digest). A name leads to its record through the `/images/<repository>/<tag>`
//! symlink, whose last component is that digest. So publishing one image
//! rewrites one small partition instead of a catalog of every image.
//!
//! Repositories written before this layout kept every record in the
//! `/images` catalog itself; readers still look there, and the next revision a
//! writer makes moves them into the partitions.
//!
//! The functions take a loader so that the same code serves a local store, a
//! remote cache and a namespace being written.

use std::collections::BTreeMap;
use std::ops::Deref;

use crate::catalog::{Catalog, Entry, FileType, ImageRecord, ROOT_ID};
use crate::{Error, ObjectId};

/// The path components of `name` below `/images`: the repository split at
/// `/`, then the tag (after the last `:` that follows the last `/`).
pub fn link_components(name: &str) -> Option<Vec<&[u8]>> {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let colon = slash + name[slash..].rfind(':')?;
    let (repo, tag) = (&name[..colon], &name[colon + 1..]);
    if repo.is_empty() || tag.is_empty() {
        return None;
    }
    Some(
        repo.split('/')
            .chain(std::iter::once(tag))
            .map(str::as_bytes)
            .collect(),
    )
}

/// The hex manifest digest `name`'s symlink in the `/images` catalog points
/// at, if `name` is published.
pub fn flat_hex_of(images: &Catalog, name: &str) -> crate::Result<Option<String>> {
    let Some(link) = link_entry(images, name)? else {
        return Ok(None);
    };
    hex_of_link(images, name, &link).map(Some)
}

fn link_entry(images: &Catalog, name: &str) -> crate::Result<Option<Entry>> {
    let Some(comps) = link_components(name) else {
        return Ok(None);
    };
    let mut parent = ROOT_ID;
    let last = comps.len() - 1;
    for (i, comp) in comps.iter().enumerate() {
        match images.lookup(parent, comp)? {
            Some(e) if i == last => {
                return Ok((e.file_type() == Some(FileType::Symlink)).then_some(e));
            }
            Some(e) if e.is_dir() => parent = e.id,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn hex_of_link(images: &Catalog, name: &str, link: &Entry) -> Result<String, Error> {
    let target = link.symlink.as_deref().unwrap_or_default();
    let hex = target.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if !crate::is_hex64(hex) {
        return Err(Error::InvalidCatalog {
            catalog: images.id().to_hex(),
            reason: format!(
                "/images symlink of {name} does not point at a flat tree: {:?}",
                String::from_utf8_lossy(target)
            ),
        });
    }
    Ok(String::from_utf8_lossy(hex).into_owned())
}

/// Reads image records from the namespace rooted at `root`, loading the
/// catalogs it needs through `load`.
pub struct ImageIndex<'a, F> {
    root: &'a Catalog,
    load: F,
}

impl<'a, F, C, E> ImageIndex<'a, F>
where
    F: FnMut(&ObjectId) -> Result<C, E>,
    C: Deref<Target = Catalog>,
    E: From<Error>,
{
    pub fn new(root: &'a Catalog, load: F) -> Self {
        ImageIndex { root, load }
    }

    fn nested(&self, dir: i64, name: &[u8]) -> Result<Option<(i64, Option<ObjectId>)>, E> {
        Ok(self.root.lookup(dir, name)?.map(|e| (e.id, e.nested)))
    }

    fn images_catalog(&mut self) -> Result<Option<C>, E> {
        match self.nested(ROOT_ID, b"images")? {
            Some((_, Some(id))) => Ok(Some((self.load)(&id)?)),
            _ => Ok(None),
        }
    }

    /// The `/flat/<part>` partition catalog, if there is one.
    pub fn flat_partition(&mut self, part: &str) -> Result<Option<C>, E> {
        let Some((flat, _)) = self.nested(ROOT_ID, b"flat")? else {
            return Ok(None);
        };
        match self.nested(flat, part.as_bytes())? {
            Some((_, Some(id))) => Ok(Some((self.load)(&id)?)),
            _ => Ok(None),
        }
    }

    /// Every published image, by name.
    pub fn all(&mut self) -> Result<Vec<ImageRecord>, E> {
        let mut by_name = BTreeMap::new();
        if let Some(images) = self.images_catalog()? {
            for r in images.images()? {
                by_name.insert(r.name.clone(), r);
            }
        }
        if let Some((flat, _)) = self.nested(ROOT_ID, b"flat")? {
            for p in self.root.children(flat)? {
                if let Some(id) = p.nested {
                    for r in (self.load)(&id)?.images()? {
                        by_name.insert(r.name.clone(), r);
                    }
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// The record of `name`, if published.
    pub fn get(&mut self, name: &str) -> Result<Option<ImageRecord>, E> {
        let Some(images) = self.images_catalog()? else {
            return Ok(None);
        };
        self.get_in(&images, name)
    }

    fn get_in(&mut self, images: &Catalog, name: &str) -> Result<Option<ImageRecord>, E> {
        let Some(hex) = flat_hex_of(images, name)? else {
            return Ok(None);
        };
        if let Some(part) = self.flat_partition(&hex[..2])? {
            if let Some(r) = part.image(name)? {
                return Ok(Some(r));
            }
        }
        Ok(images.image(name)?)
    }

    /// `name` and its per-platform siblings `name+os-arch[-variant]`, those
    /// that are published.
    pub fn variants(&mut self, name: &str) -> Result<Vec<ImageRecord>, E> {
        let Some(images) = self.images_catalog()? else {
            return Ok(Vec::new());
        };
        let Some(comps) = link_components(name) else {
            return Ok(Vec::new());
        };
        let Some((tag, repo)) = comps.split_last() else {
            return Ok(Vec::new());
        };
        let mut parent = ROOT_ID;
        for comp in repo {
            match images.lookup(parent, comp)? {
                Some(e) if e.is_dir() => parent = e.id,
                _ => return Ok(Vec::new()),
            }
        }
        let prefix = [*tag, b"+"].concat();
        let repo_name = &name[..name.len() - tag.len() - 1];
        let mut out = Vec::new();
        for e in images.children(parent)? {
            if e.name == *tag || e.name.starts_with(&prefix) {
                let full = format!("{repo_name}:{}", String::from_utf8_lossy(&e.name));
                if let Some(r) = self.get_in(&images, &full)? {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// An index over a local store: catalogs are loaded (and verified) as needed.
pub fn in_store<'a>(
    store: &'a crate::Store,
    root: &'a Catalog,
) -> ImageIndex<'a, impl FnMut(&ObjectId) -> crate::Result<Box<Catalog>> + 'a> {
    ImageIndex::new(root, move |id: &ObjectId| {
        store.load_catalog(id).map(Box::new)
    })
}

/// The image `name` names for this host: when it was published for several
/// platforms and `name` is not itself this host's, the `name+slug` sibling
/// of this host's platform; else `name`.
pub fn pick_image<'a>(images: &'a [ImageRecord], name: &str) -> Option<&'a ImageRecord> {
    let exact = images.iter().find(|i| i.name == name);
    if name.contains('+') {
        return exact;
    }
    let host = crate::Platform::host();
    let fits = |i: &ImageRecord| {
        i.platform
            .parse::<crate::Platform>()
            .is_ok_and(|p| host.matches(&p))
    };
    if exact.is_some_and(&fits) {
        return exact;
    }
    let prefix = format!("{name}+");
    images
        .iter()
        .find(|i| i.name.starts_with(&prefix) && fits(i))
        .or(exact)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn link_components_split_repository_and_tag() {
        let c = |n| link_components(n).map(|v| v.iter().map(|c| c.to_vec()).collect::<Vec<_>>());
        assert_eq!(
            c("local/app:1.0").unwrap(),
            vec![b"local".to_vec(), b"app".to_vec(), b"1.0".to_vec()]
        );
        // A registry port is part of the repository, not the tag.
        assert_eq!(
            c("host:5000/app:v1+linux-amd64").unwrap(),
            vec![
                b"host:5000".to_vec(),
                b"app".to_vec(),
                b"v1+linux-amd64".to_vec()
            ]
        );
        assert!(c("host:5000/app").is_none());
        assert!(c(":tag").is_none());
        assert!(c("app:").is_none());
    }

    use crate::testing::image_record as record;

    /// This host's platform and one that is not.
    fn platforms() -> (String, String) {
        let host = crate::Platform::host();
        let other = if host.architecture == "s390x" {
            "linux/ppc64le"
        } else {
            "linux/s390x"
        };
        (host.to_string(), other.to_owned())
    }

    #[test]
    fn pick_image_prefers_this_hosts_platform() {
        let (host, other) = platforms();
        let host_slug = host.replace('/', "-");
        let other_slug = other.replace('/', "-");
        // The primary is another platform: this host's sibling is taken.
        let images = vec![
            record("a:1", &other, 'a'),
            record(&format!("a:1+{other_slug}"), &other, 'a'),
            record(&format!("a:1+{host_slug}"), &host, 'b'),
            record("b:1", &other, 'c'),
        ];
        assert_eq!(pick_image(&images, "a:1").unwrap().flat_path, "/flat/b");
        // Named exactly, or without a sibling for this host: the name itself.
        assert_eq!(
            pick_image(&images, &format!("a:1+{other_slug}"))
                .unwrap()
                .flat_path,
            "/flat/a"
        );
        assert_eq!(pick_image(&images, "b:1").unwrap().flat_path, "/flat/c");
        assert!(pick_image(&images, "c:1").is_none());
        // The primary is this host's: itself.
        let images = vec![
            record("a:1", &host, 'a'),
            record(&format!("a:1+{host_slug}"), &host, 'a'),
            record(&format!("a:1+{other_slug}"), &other, 'b'),
        ];
        assert_eq!(pick_image(&images, "a:1").unwrap().name, "a:1");
    }
}
