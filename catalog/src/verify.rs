//! Whole-repository verification (`stratum check`): the manifest signature,
//! then every catalog and object reachable from the root, each decoded and
//! hashed once, and the structural rules of docs/FORMAT.md.

use std::collections::HashSet;

use ed25519_dalek::VerifyingKey;

use crate::catalog::nesting::{fits, MAX_NESTING};
use crate::catalog::{Catalog, CatalogKind, Data, FileType};
use crate::object::Expected;
use crate::{ObjectId, ObjectKind, Result, Store};

#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub revision: u64,
    pub catalogs: u64,
    pub entries: u64,
    pub objects: u64,
    pub stored_bytes: u64,
    /// Every problem found, each naming the catalog, path or object.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Serialized with `problems` (each finding as the sentence its `Display`
/// writes) next to the typed `findings`.
impl serde::Serialize for CheckReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            revision: u64,
            catalogs: u64,
            entries: u64,
            objects: u64,
            stored_bytes: u64,
            problems: Vec<String>,
            findings: &'a [Finding],
        }
        Wire {
            revision: self.revision,
            catalogs: self.catalogs,
            entries: self.entries,
            objects: self.objects,
            stored_bytes: self.stored_bytes,
            problems: self.findings.iter().map(Finding::to_string).collect(),
            findings: &self.findings,
        }
        .serialize(s)
    }
}

/// One problem `check` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Hex id of the object at fault: the catalog, the content object, or
    /// the catalog an image record names.
    pub object: Option<String>,
    /// Namespace path of the catalog concerned (where it is mounted).
    pub path: Option<String>,
    /// The catalog entry concerned, for [`FindingKind::BadEntry`] and
    /// [`FindingKind::BadObject`].
    pub entry: Option<EntryRef>,
    /// The image concerned, for [`FindingKind::MissingCatalog`].
    pub image: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
}

/// A catalog entry a [`Finding`] is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntryRef {
    /// Hex id of the catalog holding the entry.
    pub catalog: String,
    /// The entry's id in that catalog.
    pub id: i64,
    /// The entry's name (lossy UTF-8).
    pub name: String,
}

/// What kind of problem a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A catalog is missing, or does not hash to its id or decode.
    UnreadableCatalog,
    /// A catalog says it is at another path than where its parent mounts it.
    MisplacedCatalog,
    /// The root catalog's kind is not `root`.
    WrongRootKind,
    /// Walking a catalog's entries failed midway.
    UnreadableEntries,
    /// An entry breaks a rule of the format: its name, file type, nested
    /// catalog, or data against its size.
    BadEntry,
    /// A content object an entry names is missing, or does not hash to its
    /// id or decode to the stated size.
    BadObject,
    /// The image records of an images catalog cannot be read.
    UnreadableImages,
    /// An image record names a catalog that is not in the store.
    MissingCatalog,
    /// An image record's prefetch list is missing, does not verify, or is
    /// not a valid list of the stated length.
    BadPrefetchList,
}

impl Finding {
    fn catalog(kind: FindingKind, id: &ObjectId, path: &str, detail: String) -> Finding {
        Finding {
            kind,
            object: Some(id.to_hex()),
            path: Some(path.to_owned()),
            entry: None,
            image: None,
            detail,
        }
    }
}

/// The sentence `stratum check` prints after `PROBLEM: `.
impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let object = self.object.as_deref().unwrap_or("?");
        let path = self.path.as_deref().unwrap_or("?");
        let detail = &self.detail;
        match self.kind {
            FindingKind::UnreadableCatalog => {
                write!(f, "catalog {object} mounted at {path}: {detail}")
            }
            FindingKind::MisplacedCatalog => {
                write!(f, "catalog {object} is mounted at {path} but {detail}")
            }
            FindingKind::WrongRootKind => write!(f, "root catalog {object} {detail}"),
            FindingKind::UnreadableEntries => write!(f, "catalog {object} ({path}): {detail}"),
            FindingKind::BadEntry | FindingKind::BadObject => match &self.entry {
                Some(e) => write!(
                    f,
                    "catalog {} ({path}) entry {} {:?}: {detail}",
                    e.catalog, e.id, e.name
                ),
                None => write!(f, "catalog {object} ({path}): {detail}"),
            },
            FindingKind::UnreadableImages => {
                write!(f, "image records of catalog {object}: {detail}")
            }
            FindingKind::BadPrefetchList => write!(
                f,
                "image {}: prefetch list {object}: {detail}",
                self.image.as_deref().unwrap_or("?")
            ),
            FindingKind::MissingCatalog => write!(
                f,
                "image {}: {detail}",
                self.image.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// Verifies the repository. A bad signature or an unreadable manifest is an
/// `Err`; damage below the root is collected in [`CheckReport::findings`].
pub fn check(store: &Store, key: &VerifyingKey, progress: &dyn Fn(u64)) -> Result<CheckReport> {
    let (manifest, _) = store.manifest(key)?;
    let mut report = CheckReport {
        revision: manifest.revision,
        ..Default::default()
    };
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (catalog id, namespace path it is mounted at, kind of the catalog
    // that mounts it, catalogs from the root down to it)
    let mut todo = vec![(manifest.root, "/".to_owned(), None, 1usize)];
    while let Some((id, path, parent_kind, nesting)) = todo.pop() {
        // A subtree catalog shared by many places is checked once.
        if !seen.insert(id) {
            continue;
        }
        if nesting > MAX_NESTING {
            report.findings.push(Finding::catalog(
                FindingKind::MisplacedCatalog,
                &id,
                &path,
                format!("is below nested catalogs more than {MAX_NESTING} deep; not read"),
            ));
            continue;
        }
        let cat = match load(store, &id, &mut report) {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(Finding::catalog(
                    FindingKind::UnreadableCatalog,
                    &id,
                    &path,
                    e.to_string(),
                ));
                continue;
            }
        };
        report.catalogs += 1;
        if let Some(pk) = parent_kind.filter(|&pk| !fits(pk, cat.kind())) {
            report.findings.push(Finding::catalog(
                FindingKind::MisplacedCatalog,
                &id,
                &path,
                format!(
                    "is of kind {}, which a catalog of kind {} cannot mount",
                    cat.kind().as_str(),
                    pk.as_str()
                ),
            ));
        }
        if cat.kind() != CatalogKind::Subtree && cat.path() != path {
            report.findings.push(Finding::catalog(
                FindingKind::MisplacedCatalog,
                &id,
                &path,
                format!("says it is {}", cat.path()),
            ));
        }
        if path == "/" && cat.kind() != CatalogKind::Root {
            report.findings.push(Finding::catalog(
                FindingKind::WrongRootKind,
                &id,
                &path,
                format!("has kind {}", cat.kind().as_str()),
            ));
        }
        let mut problems = Vec::new();
        let walked = cat.for_each_entry(|e| {
            report.entries += 1;
            let finding = |kind, object: Option<&ObjectId>, detail: String| Finding {
                kind,
                object: Some(object.unwrap_or(&id).to_hex()),
                path: Some(path.clone()),
                entry: Some(EntryRef {
                    catalog: id.to_hex(),
                    id: e.id,
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                }),
                image: None,
                detail,
            };
            let bad_entry = |detail: String| finding(FindingKind::BadEntry, None, detail);
            if e.id != 1
                && (e.name.is_empty()
                    || e.name == b"."
                    || e.name == b".."
                    || e.name.contains(&b'/')
                    || e.name.contains(&0))
            {
                problems.push(bad_entry("invalid name".into()));
            }
            let Some(ft) = e.file_type() else {
                problems.push(bad_entry(format!("unknown file type in mode {:o}", e.mode)));
                return Ok(());
            };
            if let Some(child) = e.nested {
                if ft != FileType::Directory {
                    problems.push(bad_entry("nested catalog on a non-directory".into()));
                }
                let child_path = if e.id == 1 {
                    path.clone()
                } else {
                    match entry_path(&cat, e.id) {
                        Ok(rel) => join(&path, &rel),
                        Err(err) => {
                            problems.push(bad_entry(err.to_string()));
                            return Ok(());
                        }
                    }
                };
                todo.push((child, child_path, Some(cat.kind()), nesting + 1));
            }
            let declared = e.size;
            match (&e.data, ft) {
                (Data::None, FileType::Regular) if declared != 0 => {
                    problems.push(bad_entry(format!("{declared} bytes declared but no data")))
                }
                (Data::None, _) => {}
                (_, t) if t != FileType::Regular => {
                    problems.push(bad_entry("data on a non-regular file".into()))
                }
                (Data::Inline(b), _) if b.len() as u64 != declared => problems.push(bad_entry(
                    format!("inline data is {} bytes, size says {declared}", b.len()),
                )),
                (Data::Inline(_), _) => {}
                (Data::Object(oid), _) => {
                    if let Some(p) =
                        verify_object(store, oid, Some(declared), &mut seen, &mut report)
                    {
                        problems.push(finding(FindingKind::BadObject, Some(oid), p));
                    }
                }
                (Data::Chunks(chunks), _) => {
                    let total: u64 = chunks.iter().map(|c| c.size).sum();
                    if total != declared {
                        problems.push(bad_entry(format!(
                            "chunks add up to {total} bytes, size says {declared}"
                        )));
                    }
                    for c in chunks {
                        if let Some(p) =
                            verify_object(store, &c.id, Some(c.size), &mut seen, &mut report)
                        {
                            problems.push(finding(FindingKind::BadObject, Some(&c.id), p));
                        }
                    }
                }
            }
            progress(report.objects);
            Ok(())
        });
        if let Err(e) = walked {
            problems.push(Finding::catalog(
                FindingKind::UnreadableEntries,
                &id,
                &path,
                e.to_string(),
            ));
        }
        if matches!(cat.kind(), CatalogKind::Images | CatalogKind::Partition) {
            check_images(store, &cat, &mut problems);
            check_prefetch_lists(store, &cat, &mut seen, &mut report, &mut problems);
        }
        report.findings.extend(problems);
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
fn check_images(store: &Store, cat: &Catalog, problems: &mut Vec<Finding>) {
    let images = match cat.images() {
        Ok(i) => i,
        Err(e) => {
            problems.push(Finding::catalog(
                FindingKind::UnreadableImages,
                &cat.id(),
                cat.path(),
                e.to_string(),
            ));
            return;
        }
    };
    for img in images {
        let ids = std::iter::once(&img.flat_catalog).chain(img.layers.iter().map(|l| &l.catalog));
        for hex in ids {
            match ObjectId::from_hex(hex) {
                Ok(id) if store.exists(&id, ObjectKind::Catalog).unwrap_or(false) => {}
                _ => problems.push(Finding {
                    kind: FindingKind::MissingCatalog,
                    object: Some(hex.clone()),
                    path: Some(cat.path().to_owned()),
                    entry: None,
                    image: Some(img.name.clone()),
                    detail: format!("catalog {hex} is missing"),
                }),
            }
        }
    }
}

/// Every prefetch list an image record names must be an object that
/// verifies, within the format's limits, holding the stated number of paths
/// (FORMAT.md §5.6).
fn check_prefetch_lists(
    store: &Store,
    cat: &Catalog,
    seen: &mut HashSet<ObjectId>,
    report: &mut CheckReport,
    problems: &mut Vec<Finding>,
) {
    let lists = match cat.prefetch_lists() {
        Ok(l) => l,
        Err(e) => {
            problems.push(Finding::catalog(
                FindingKind::UnreadableImages,
                &cat.id(),
                cat.path(),
                e.to_string(),
            ));
            return;
        }
    };
    for (image, list) in lists {
        let bad = |detail: String| Finding {
            kind: FindingKind::BadPrefetchList,
            object: Some(list.list.clone()),
            path: Some(cat.path().to_owned()),
            entry: None,
            image: Some(image.clone()),
            detail,
        };
        let (id, size) = match list.object() {
            Ok(o) => o,
            Err(e) => {
                problems.push(bad(e.to_string()));
                continue;
            }
        };
        let first = !seen.contains(&id);
        if let Some(p) = verify_object(store, &id, Some(size), seen, report) {
            problems.push(bad(p));
            continue;
        }
        if !first {
            continue;
        }
        let parsed = store
            .get_encoded(&id, ObjectKind::Content)
            .and_then(|enc| crate::object::decode_expected(&id, &enc, Expected::Size(size)))
            .map_err(|e| e.to_string())
            .and_then(|b| crate::prefetch_list::PrefetchList::parse(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(l) if l.paths.len() as u64 == list.entries && l.skipped.is_empty() => {}
            Ok(l) => problems.push(bad(format!(
                "holds {} paths and {} invalid lines, the record states {}",
                l.paths.len(),
                l.skipped.len(),
                list.entries
            ))),
            Err(e) => problems.push(bad(e)),
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
