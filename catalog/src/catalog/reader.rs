//! The one reader of catalogs: a verified catalog object opened read-only,
//! in memory.

use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension, MAIN_DB};

use super::entry::Entry;
use super::images::ImageRecord;
use super::schema;
use super::{rows, CatalogKind, MAX_DEPTH, ROOT_ID};
use crate::object::{self, Expected, MAX_CATALOG_SIZE};
use crate::{Error, ObjectId, Result, FORMAT_VERSION};

/// Shareable between threads (FUSE serves requests in parallel): the
/// connection sits behind a mutex; each query holds it for microseconds.
pub struct Catalog {
    id: ObjectId,
    conn: Mutex<Connection>,
    kind: CatalogKind,
    /// Empty for a subtree catalog.
    path: String,
    version: u32,
    /// The decoded file of a catalog opened with [`Catalog::from_encoded`],
    /// removed when the catalog is dropped.
    _scratch: Option<tempfile::TempPath>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Catalog({} {} {})",
            self.kind.as_str(),
            self.path,
            self.id
        )
    }
}

impl Catalog {
    /// Opens the decoded bytes of catalog object `id` (already verified
    /// against `id` by [`crate::object::decode`]).
    pub fn from_bytes(id: ObjectId, bytes: &[u8]) -> Result<Self> {
        let label = format!("{id}");
        let sql = |source| Error::Sqlite {
            catalog: label.clone(),
            source,
        };
        let mut conn = Connection::open_with_flags(
            ":memory:",
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.deserialize_read_exact(MAIN_DB, bytes, bytes.len(), true)
            .map_err(sql)?;
        Self::from_connection(id, conn)
    }

    /// Decodes catalog object `id` from its encoded bytes as a stream into
    /// a temporary file, verifying it (at most [`MAX_CATALOG_SIZE`] bytes,
    /// hashed while decoding), and opens that file: memory stays bounded
    /// whatever the object holds (a zstd bomb, a huge catalog).
    pub fn from_encoded(id: ObjectId, encoded: &[u8]) -> Result<Self> {
        let io = |e| Error::io(std::env::temp_dir(), e);
        let mut tmp = tempfile::Builder::new()
            .prefix("stratum-catalog-")
            .tempfile()
            .map_err(io)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            object::decode_to(&id, encoded, Expected::AtMost(MAX_CATALOG_SIZE), &mut w)?;
            std::io::Write::flush(&mut w).map_err(io)?;
        }
        let path = tmp.into_temp_path();
        let mut cat = Self::open_path(id, &path)?;
        cat._scratch = Some(path);
        Ok(cat)
    }

    /// Opens a decoded catalog file by its path and checks that the file
    /// SQLite opened hashes to `id`, so that whatever was checked before,
    /// under that name, the catalog in use is the one `id` names: someone
    /// who can write the directory (the node cache is not trusted) may have
    /// renamed another file over the name in between. The check reads the
    /// database through the connection itself (one pass, the catalog's size
    /// in memory for that moment); pages read later come from the same open
    /// file (`immutable=1`).
    pub fn open_path_checked(id: ObjectId, path: &std::path::Path) -> Result<Self> {
        let cat = Self::open_path(id, path)?;
        let bytes = cat.to_bytes()?;
        if ObjectId::of(&bytes) != id {
            return Err(Error::CorruptObject {
                id,
                reason: format!(
                    "the catalog file {} does not hash to its id (replaced after it was checked?)",
                    path.display()
                ),
            });
        }
        Ok(cat)
    }

    /// Opens a decoded catalog file that was verified against `id` when it
    /// was written, without loading it into memory. The file must never
    /// change while open (`immutable=1`); where its directory is not
    /// trusted, use [`Catalog::open_path_checked`].
    pub fn open_path(id: ObjectId, path: &std::path::Path) -> Result<Self> {
        let label = format!("{id}");
        let uri = format!(
            "file:{}?immutable=1",
            path.display()
                .to_string()
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23")
        );
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|source| Error::Sqlite {
            catalog: label,
            source,
        })?;
        Self::from_connection(id, conn)
    }

    fn from_connection(id: ObjectId, conn: Connection) -> Result<Self> {
        let label = format!("{id}");
        let sql = |source| Error::Sqlite {
            catalog: label.clone(),
            source,
        };
        // Catalog bytes are hash-verified, but treat them as untrusted input
        // to SQLite all the same.
        conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA query_only = ON;")
            .map_err(sql)?;
        let invalid = |reason: String| Error::InvalidCatalog {
            catalog: label.clone(),
            reason,
        };
        // Only ordinary tables and indexes (docs/FORMAT.md §4.1): a view
        // runs on every query that names it, and a recursive one never ends
        // (an `entries` view made opening the catalog hang).
        let other: Option<(String, String)> = conn
            .query_row(
                "SELECT type, name FROM sqlite_master WHERE type NOT IN ('table', 'index')
                 UNION ALL
                 SELECT type, name FROM pragma_table_list WHERE schema = 'main' AND type != 'table'
                 LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        if let Some((ty, name)) = other {
            return Err(invalid(format!(
                "its schema holds {ty} {name:?}; a catalog has only tables and indexes"
            )));
        }
        let version = rows::property(&conn, schema::PROP_FORMAT_VERSION)
            .map_err(sql)?
            .ok_or_else(|| invalid("no format_version property".into()))?;
        let version: u64 = version
            .parse()
            .map_err(|_| invalid(format!("bad format_version {version:?}")))?;
        if !crate::reads_version(version) {
            return Err(Error::UnsupportedVersion {
                what: format!("catalog {id}"),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let kind = rows::property(&conn, schema::PROP_KIND)
            .map_err(sql)?
            .and_then(|k| CatalogKind::parse(&k))
            .ok_or_else(|| invalid("missing or unknown kind".into()))?;
        // A subtree catalog is mounted wherever its content occurs: it has
        // no path of its own (FORMAT.md §4.12).
        let path = match kind {
            CatalogKind::Subtree if version < 2 => {
                return Err(invalid(format!(
                    "kind subtree does not exist in format version {version}"
                )))
            }
            CatalogKind::Subtree => String::new(),
            _ => rows::property(&conn, schema::PROP_PATH)
                .map_err(sql)?
                .ok_or_else(|| invalid("no path property".into()))?,
        };
        let cat = Catalog {
            id,
            conn: Mutex::new(conn),
            kind,
            path,
            version: version as u32,
            _scratch: None,
        };
        let root = cat.root()?;
        if !root.is_dir() {
            return Err(invalid("root entry is not a directory".into()));
        }
        if root.parent != 0 {
            return Err(invalid(format!(
                "root entry has parent {} (must be 0): its tree would contain itself",
                root.parent
            )));
        }
        cat.check_tree()?;
        Ok(cat)
    }

    /// Refuses a catalog whose parent links do not form one tree rooted at
    /// the root entry, or whose tree is deeper than [`MAX_DEPTH`]: every
    /// walker (pull, mount, check, replicate, ls) follows parent → children
    /// links, and a cycle reachable from the root (the root listed as a
    /// child of one of its descendants) is an endless path `loop/loop/…`.
    ///
    /// One recursive query down the `(parent, name)` index from the root:
    /// in a tree it reaches every entry exactly once, so it reaches as many
    /// entries as the table holds exactly when every entry's parent chain
    /// ends at the root (entries on a cycle never do). The root is never
    /// re-entered, depth and row count are capped, so the query ends even
    /// on an index crafted to disagree with the table.
    fn check_tree(&self) -> Result<()> {
        let conn = self.conn();
        let total: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        let (reached, depth): (i64, i64) = conn
            .query_row(
                "WITH RECURSIVE t(id, depth) AS (
                     SELECT ?1, 0
                     UNION ALL
                     SELECT e.id, t.depth + 1 FROM entries e JOIN t ON e.parent = t.id
                     WHERE e.id != ?1 AND t.depth <= ?2
                     LIMIT ?3
                 )
                 SELECT COUNT(*), COALESCE(MAX(depth), 0) FROM t",
                rusqlite::params![ROOT_ID, MAX_DEPTH as i64, total.saturating_add(1)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        let invalid = |reason: String| Error::InvalidCatalog {
            catalog: self.id.to_hex(),
            reason,
        };
        if depth > MAX_DEPTH as i64 {
            return Err(invalid(format!(
                "its tree is deeper than {MAX_DEPTH} levels"
            )));
        }
        if reached != total {
            return Err(invalid(format!(
                "{} of its {total} entries are not in the tree of its root (a parent cycle, \
                 or a parent that does not exist)",
                (total - reached).abs()
            )));
        }
        Ok(())
    }

    /// Opens a catalog file on disk read-only (a builder's output, for tests
    /// and tools).
    pub fn open_file(id: ObjectId, path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(id, &bytes)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a read-only
        // connection inconsistent: keep using it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            catalog: format!("{} ({})", self.id, self.path),
            source,
        }
    }

    /// A query whose rows came back out of order: only a corrupt database
    /// (its b-tree keys out of order) does that.
    fn out_of_order(&self, what: &str) -> Error {
        Error::InvalidCatalog {
            catalog: format!("{} ({})", self.id, self.path),
            reason: format!("{what}: the database is corrupt"),
        }
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }

    pub fn kind(&self) -> CatalogKind {
        self.kind
    }

    /// The namespace path this catalog is mounted at; empty for a
    /// subtree catalog, which may be mounted at many places.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `format_version` the catalog declares (1 or 2).
    pub fn format_version(&self) -> u32 {
        self.version
    }

    pub fn property(&self, key: &str) -> Result<Option<String>> {
        rows::property(&self.conn(), key).map_err(|e| self.sql(e))
    }

    pub fn root(&self) -> Result<Entry> {
        self.get(ROOT_ID)?.ok_or_else(|| Error::InvalidCatalog {
            catalog: self.id.to_hex(),
            reason: "no root entry".into(),
        })
    }

    pub fn get(&self, id: i64) -> Result<Option<Entry>> {
        rows::get(&self.conn(), id).map_err(|e| self.sql(e))
    }

    pub fn lookup(&self, parent: i64, name: &[u8]) -> Result<Option<Entry>> {
        rows::lookup(&self.conn(), parent, name).map_err(|e| self.sql(e))
    }

    pub fn children(&self, parent: i64) -> Result<Vec<Entry>> {
        rows::children(&self.conn(), parent).map_err(|e| self.sql(e))
    }

    /// The catalog's database bytes, as [`Catalog::from_bytes`] takes them:
    /// a writer updating a catalog it already opened (and verified) starts
    /// from these instead of fetching and verifying the object again.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut conn = self.conn();
        let data = conn.serialize(MAIN_DB).map_err(|e| self.sql(e))?;
        Ok(data.to_vec())
    }

    /// How many entries `parent` holds.
    pub fn child_count(&self, parent: i64) -> Result<usize> {
        rows::child_count(&self.conn(), parent).map_err(|e| self.sql(e))
    }

    /// `(name, catalog id)` of the mount points directly below `parent`, in
    /// name order (other children are left out).
    pub fn mount_points(&self, parent: i64) -> Result<Vec<(Vec<u8>, ObjectId)>> {
        rows::mount_points(&self.conn(), parent).map_err(|e| self.sql(e))
    }

    /// The children of `parent` in name order, in batches, so that a
    /// directory of a million entries is never held in memory at once and
    /// `f` may query this catalog.
    pub fn for_each_child(
        &self,
        parent: i64,
        mut f: impl FnMut(Entry) -> Result<()>,
    ) -> Result<()> {
        const BATCH: i64 = 1024;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch: Vec<Entry> = {
                let conn = self.conn();
                let rows = match &after {
                    None => rows::children_page(&conn, parent, None, BATCH),
                    Some(a) => rows::children_page(&conn, parent, Some(a), BATCH),
                };
                rows.map_err(|e| self.sql(e))?
            };
            let Some(last) = batch.last() else {
                return Ok(());
            };
            // Each batch must start after the previous one and be in order:
            // a corrupt b-tree can return rows out of order, and then the
            // next batch would start over (an endless loop).
            let mut prev = after.as_deref();
            for e in &batch {
                if prev.is_some_and(|p| e.name.as_slice() <= p) {
                    return Err(self.out_of_order(&format!(
                        "children of entry {parent} are not in name order"
                    )));
                }
                prev = Some(&e.name);
            }
            after = Some(last.name.clone());
            let full = batch.len() as i64 == BATCH;
            for e in batch {
                f(e)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every entry, in id order (for `check` and copying).
    pub fn for_each_entry(&self, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        // In batches, so that `f` may query this catalog (the connection's
        // lock is not held while it runs) and memory stays bounded.
        const BATCH: i64 = 4096;
        let mut after = i64::MIN;
        loop {
            let batch: Vec<Entry> = {
                let conn = self.conn();
                let mut st = conn
                    .prepare_cached(&format!(
                        "SELECT {} FROM entries WHERE id > ?1 ORDER BY id LIMIT ?2",
                        rows::COLUMNS
                    ))
                    .map_err(|e| self.sql(e))?;
                let rows = st
                    .query_map(rusqlite::params![after, BATCH], rows::entry_from_row)
                    .map_err(|e| self.sql(e))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(|e| self.sql(e))?
            };
            let Some(last) = batch.last() else {
                return Ok(());
            };
            // As in `for_each_child`: no batch may go back (endless loop).
            let mut prev = after;
            for e in &batch {
                if e.id <= prev {
                    return Err(self.out_of_order("entries are not in id order"));
                }
                prev = e.id;
            }
            after = last.id;
            for e in batch {
                f(e)?;
            }
        }
    }

    /// The image records this catalog holds (a `/flat/ab` partition, or an
    /// `/images` catalog of an older repository: FORMAT.md §5.3). To find
    /// an image from the namespace, use [`crate::image_index::ImageIndex`].
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        super::images::list(&self.conn()).map_err(|e| self.sql(e))
    }

    /// Whether this catalog holds any image record.
    pub fn has_image_records(&self) -> Result<bool> {
        super::images::any(&self.conn()).map_err(|e| self.sql(e))
    }

    /// The image record of `name` held by this catalog.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        super::images::get(&self.conn(), name).map_err(|e| self.sql(e))
    }

    /// An image record held by this catalog whose manifest digest is `digest`.
    pub fn image_by_digest(&self, digest: &str) -> Result<Option<ImageRecord>> {
        super::images::by_digest(&self.conn(), digest).map_err(|e| self.sql(e))
    }

    /// The prefetch lists the image records of this catalog name, with the
    /// name of the image each belongs to (FORMAT.md §5.6).
    pub fn prefetch_lists(&self) -> Result<Vec<(String, super::images::PrefetchRef)>> {
        super::images::prefetch_lists(&self.conn()).map_err(|e| self.sql(e))
    }

    /// Named revisions (only the `/images` catalog has any).
    pub fn revision_tags(&self) -> Result<Vec<super::images::RevisionTag>> {
        super::images::list_tags(&self.conn()).map_err(|e| self.sql(e))
    }

    /// Images unlinked from `/images` whose trees await garbage collection.
    pub fn retired_images(&self) -> Result<Vec<super::images::RetiredImage>> {
        super::images::list_retired(&self.conn()).map_err(|e| self.sql(e))
    }

    /// For each hardlink group, the lowest entry id in it: the entry whose
    /// inode number the whole group shares when mounted.
    pub fn hardlink_representatives(&self) -> Result<std::collections::HashMap<i64, i64>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT hardlink, MIN(id) FROM entries WHERE hardlink != 0 GROUP BY hardlink")
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    pub fn entry_count(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }
}
