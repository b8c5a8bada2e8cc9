//! Storing a recorded prefetch list with a published image (FORMAT.md
//! §5.6): the list is checked against the image's flat tree, reduced to the
//! regular files it names, and written as one content object that the
//! image's record points to, so it is signed with the revision like every
//! other byte of the repository.

use stratum_catalog::catalog::{FileType, ImageRecord, PrefetchRef};
use stratum_catalog::namespace::{Namespace, StoreLoader};
use stratum_catalog::prefetch_list::PrefetchList;
use stratum_catalog::{ObjectId, ObjectKind};

use crate::error::{PublishError, Result};
use crate::namespace_writer::NamespaceWriter;
use crate::objects::ObjectWriter;
use crate::repo::Repository;

/// Paths named in [`PrefetchReport::dropped`] at most (the count is exact).
const DROPPED_SHOWN: usize = 20;

/// What storing one prefetch list did (part of `publish --json`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PrefetchReport {
    pub image: String,
    /// Paths stored, in order.
    pub entries: u64,
    /// Id (hex) of the list object.
    pub list: String,
    /// `stored`, or `unchanged` when the image already had this list.
    pub status: String,
    /// How many lines were dropped: not a path, not in the image, or not a
    /// regular file.
    pub dropped_count: u64,
    /// The first of them, each with the reason.
    pub dropped: Vec<String>,
}

/// Checks `list` against the flat tree of image `name` and writes what is
/// left as an object; returns the updated record (`None`: unchanged).
pub(crate) fn store_list(
    repo: &Repository,
    ns: &NamespaceWriter,
    objects: &mut ObjectWriter,
    name: &str,
    list: &[u8],
) -> Result<(Option<ImageRecord>, PrefetchReport)> {
    let image_err = |reason: String| PublishError::Image {
        image: name.to_owned(),
        reason,
    };
    let Some(mut record) = ns.image(name)? else {
        return Err(image_err(
            "is not published: a prefetch list is stored with a published image".into(),
        ));
    };
    let parsed = PrefetchList::parse(list).map_err(|e| image_err(e.to_string()))?;
    let mut report = PrefetchReport {
        image: name.to_owned(),
        ..Default::default()
    };
    let mut drop = |why: String| {
        report.dropped_count += 1;
        if report.dropped.len() < DROPPED_SHOWN {
            report.dropped.push(why);
        }
    };
    for (line, why) in &parsed.skipped {
        drop(format!("line {line}: {why}"));
    }
    let flat = ObjectId::from_hex(&record.flat_catalog)?;
    let tree = Namespace::new(StoreLoader::new(repo.store().clone()), &flat)?;
    let mut kept = Vec::with_capacity(parsed.paths.len());
    for p in parsed.paths {
        match tree.resolve(&format!("/{p}")) {
            Ok(node) if node.entry.file_type() == Some(FileType::Regular) => kept.push(p),
            Ok(_) => drop(format!("{p}: not a regular file")),
            Err(stratum_catalog::Error::NotFound { .. } | stratum_catalog::Error::Path { .. }) => {
                drop(format!("{p}: not in the image"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if kept.is_empty() {
        return Err(image_err(format!(
            "none of the lines of the prefetch list is a file of the image ({} dropped, e.g. {})",
            report.dropped_count,
            report.dropped.first().map_or("none", String::as_str)
        )));
    }
    let bytes = PrefetchList::encode(&kept);
    let size = bytes.len() as u64;
    let id = objects.put_owned(ObjectKind::Content, bytes)?;
    report.entries = kept.len() as u64;
    report.list = id.to_hex();
    let wanted = PrefetchRef {
        list: id.to_hex(),
        size,
        entries: kept.len() as u64,
    };
    if record.prefetch.as_ref() == Some(&wanted) {
        report.status = "unchanged".into();
        return Ok((None, report));
    }
    report.status = "stored".into();
    record.prefetch = Some(wanted);
    Ok((Some(record), report))
}

/// Reads a prefetch list file, refusing one over
/// [`MAX_PREFETCH_LIST_SIZE`](stratum_catalog::prefetch_list::MAX_PREFETCH_LIST_SIZE)
/// bytes without reading further.
pub fn read_list_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use stratum_catalog::prefetch_list::MAX_PREFETCH_LIST_SIZE;
    let io = |error| PublishError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PREFETCH_LIST_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PREFETCH_LIST_SIZE {
        return Err(io(std::io::Error::other(format!(
            "a prefetch list is at most {MAX_PREFETCH_LIST_SIZE} bytes"
        ))));
    }
    Ok(bytes)
}
