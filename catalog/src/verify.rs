//! Whole-repository verification (`stratum check`): the manifest signature,
//! then every catalog and object reachable from the root, each decoded and
//! hashed once, and the structural rules of docs/FORMAT.md.

use std::collections::HashSet;

use ed25519_dalek::VerifyingKey;

use crate::catalog::{Catalog, CatalogKind, Data, FileType};
use crate::object::Expected;
use crate::{ObjectId, ObjectKind, Result, Store};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub revision: u64,
    pub catalogs: u64,
    pub entries: u64,
    pub objects: u64,
    pub stored_bytes: u64,
    /// Every problem found, each naming the catalog, path or object.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the repository. A bad signature or an unreadable manifest is an
/// `Err`; damage below the root is collected in [`CheckReport::problems`].
pub fn check(store: &Store, key: &VerifyingKey, progress: &dyn Fn(u64)) -> Result<CheckReport> {
    let (manifest, _) = store.manifest(key)?;
    let mut report = CheckReport {
        revision: manifest.revision,
        ..Default::default()
    };
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (catalog id, namespace path it is mounted at)
    let mut todo = vec![(manifest.root, "/".to_owned())];
    while let Some((id, path)) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let cat = match load(store, &id, &mut report) {
            Ok(c) => c,
            Err(e) => {
                report
                    .problems
                    .push(format!("catalog {id} mounted at {path}: {e}"));
                continue;
            }
        };
        report.catalogs += 1;
        if cat.path() != path {
            report.problems.push(format!(
                "catalog {id} is mounted at {path} but says it is {}",
                cat.path()
            ));
        }
        if path == "/" && cat.kind() != CatalogKind::Root {
            report.problems.push(format!(
                "root catalog {id} has kind {}",
                cat.kind().as_str()
            ));
        }
        let mut problems = Vec::new();
        let walked = cat.for_each_entry(|e| {
            report.entries += 1;
            let where_ = || {
                format!(
                    "catalog {id} ({path}) entry {} {:?}",
                    e.id,
                    String::from_utf8_lossy(&e.name)
                )
            };
            if e.id != 1
                && (e.name.is_empty()
                    || e.name == b"."
                    || e.name == b".."
                    || e.name.contains(&b'/')
                    || e.name.contains(&0))
            {
                problems.push(format!("{}: invalid name", where_()));
            }
            let Some(ft) = e.file_type() else {
                problems.push(format!(
                    "{}: unknown file type in mode {:o}",
                    where_(),
                    e.mode
                ));
                return Ok(());
            };
            if let Some(child) = e.nested {
                if ft != FileType::Directory {
                    problems.push(format!("{}: nested catalog on a non-directory", where_()));
                }
                let child_path = if e.id == 1 {
                    path.clone()
                } else {
                    match entry_path(&cat, e.id) {
                        Ok(rel) => join(&path, &rel),
                        Err(err) => {
                            problems.push(format!("{}: {err}", where_()));
                            return Ok(());
                        }
                    }
                };
                todo.push((child, child_path));
            }
            let declared = e.size;
            match (&e.data, ft) {
                (Data::None, FileType::Regular) if declared != 0 => problems.push(format!(
                    "{}: {declared} bytes declared but no data",
                    where_()
                )),
                (Data::None, _) => {}
                (_, t) if t != FileType::Regular => {
                    problems.push(format!("{}: data on a non-regular file", where_()))
                }
                (Data::Inline(b), _) if b.len() as u64 != declared => problems.push(format!(
                    "{}: inline data is {} bytes, size says {declared}",
                    where_(),
                    b.len()
                )),
                (Data::Inline(_), _) => {}
                (Data::Object(oid), _) => {
                    if let Some(p) =
                        verify_object(store, oid, Some(declared), &mut seen, &mut report)
                    {
                        problems.push(format!("{}: {p}", where_()));
                    }
                }
                (Data::Chunks(chunks), _) => {
                    let total: u64 = chunks.iter().map(|c| c.size).sum();
                    if total != declared {
                        problems.push(format!(
                            "{}: chunks add up to {total} bytes, size says {declared}",
                            where_()
                        ));
                    }
                    for c in chunks {
                        if let Some(p) =
                            verify_object(store, &c.id, Some(c.size), &mut seen, &mut report)
                        {
                            problems.push(format!("{}: {p}", where_()));
                        }
                    }
                }
            }
            progress(report.objects);
            Ok(())
        });
        if let Err(e) = walked {
            problems.push(format!("catalog {id} ({path}): {e}"));
        }
        if matches!(cat.kind(), CatalogKind::Images | CatalogKind::Partition) {
            check_images(store, &cat, &mut problems);
        }
        report.problems.extend(problems);
    }
    Ok(report)
}

fn load(store: &Store, id: &ObjectId, report: &mut CheckReport) -> Result<Catalog> {
    let enc = store.get_encoded(id, ObjectKind::Catalog)?;
    report.objects += 1;
    report.stored_bytes += enc.len() as u64;
    Catalog::from_encoded(*id, &enc)
}

fn verify_object(
    store: &Store,
    id: &ObjectId,
    size: Option<u64>,
    seen: &mut HashSet<ObjectId>,
    report: &mut CheckReport,
) -> Option<String> {
    if !seen.insert(*id) {
        return None;
    }
    let enc = match store.get_encoded(id, ObjectKind::Content) {
        Ok(e) => e,
        Err(e) => return Some(e.to_string()),
    };
    report.objects += 1;
    report.stored_bytes += enc.len() as u64;
    // Decoded as a stream, hashed and dropped, bounded by the size the
    // catalog states: a zstd bomb is refused from its frame header.
    let expected = match size {
        Some(s) => Expected::Size(s),
        None => Expected::AtMost(crate::object::MAX_OBJECT_SIZE),
    };
    crate::object::verify(id, &enc, expected)
        .err()
        .map(|e| e.to_string())
}

/// Every image record must point at flat and layer catalogs that exist.
fn check_images(store: &Store, cat: &Catalog, problems: &mut Vec<String>) {
    let images = match cat.images() {
        Ok(i) => i,
        Err(e) => {
            problems.push(format!("image records of catalog {}: {e}", cat.id()));
            return;
        }
    };
    for img in images {
        let ids = std::iter::once(&img.flat_catalog).chain(img.layers.iter().map(|l| &l.catalog));
        for hex in ids {
            match ObjectId::from_hex(hex) {
                Ok(id) if store.exists(&id, ObjectKind::Catalog).unwrap_or(false) => {}
                _ => problems.push(format!("image {}: catalog {hex} is missing", img.name)),
            }
        }
    }
}

fn entry_path(cat: &Catalog, mut id: i64) -> Result<String> {
    let mut parts = Vec::new();
    let mut guard = 0;
    while id != 1 {
        let e = cat.get(id)?.ok_or_else(|| crate::Error::InvalidCatalog {
            catalog: cat.id().to_hex(),
            reason: format!("entry {id} has no parent"),
        })?;
        parts.push(String::from_utf8_lossy(&e.name).into_owned());
        id = e.parent;
        guard += 1;
        if guard > 4096 {
            return Err(crate::Error::InvalidCatalog {
                catalog: cat.id().to_hex(),
                reason: "parent cycle".into(),
            });
        }
    }
    parts.reverse();
    Ok(parts.join("/"))
}

fn join(base: &str, rel: &str) -> String {
    if base == "/" {
        format!("/{rel}")
    } else {
        format!("{base}/{rel}")
    }
}
