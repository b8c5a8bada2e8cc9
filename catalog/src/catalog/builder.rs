//! The one writer of catalogs: a temporary SQLite file that can be edited
//! while a tree is assembled (ingest, flat merge, copy-on-write of a parent),
//! then frozen into the bytes of a catalog object.

use std::path::Path;

use rusqlite::{params, Connection};

use super::entry::{Data, Entry};
use super::images::ImageRecord;
use super::rows;
use super::schema::{self, SCHEMA};
use super::{CatalogKind, ROOT_ID};
use crate::{Error, Result, FORMAT_VERSION};

pub struct CatalogBuilder {
    conn: Connection,
    file: tempfile::NamedTempFile,
    label: String,
    next_group: i64,
    /// Started from an existing catalog ([`CatalogBuilder::from_bytes`]).
    in_place: bool,
}

impl CatalogBuilder {
    /// A new catalog for namespace path `ns_path` whose root directory has
    /// `root`'s metadata. The database lives in `tmp_dir` until [`finish`].
    ///
    /// [`finish`]: CatalogBuilder::finish
    pub fn create(tmp_dir: &Path, kind: CatalogKind, ns_path: &str, root: &Entry) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix("catalog-")
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io(tmp_dir, e))?;
        let label = format!("being built for {ns_path}");
        let sql = |source| Error::Sqlite {
            catalog: label.clone(),
            source,
        };
        let conn = Connection::open(file.path()).map_err(sql)?;
        // A builder's file is scratch until finish(): no journal, no fsync.
        // The page size is fixed (before the first table) so that equal
        // content gives equal bytes whatever SQLite's default (§4.1).
        conn.execute_batch(
            "PRAGMA page_size = 4096; PRAGMA auto_vacuum = NONE;
             PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch("BEGIN").map_err(sql)?;
        let mut b = CatalogBuilder {
            conn,
            file,
            label,
            next_group: 1,
            in_place: false,
        };
        b.set_property(schema::PROP_FORMAT_VERSION, &FORMAT_VERSION.to_string())?;
        b.set_property(schema::PROP_KIND, kind.as_str())?;
        // A subtree catalog may be mounted anywhere: no path (§4.12).
        if kind != CatalogKind::Subtree {
            b.set_property(schema::PROP_PATH, ns_path)?;
        }
        let mut root = root.clone();
        root.name.clear();
        b.insert_row(Some(ROOT_ID), 0, &root)?;
        Ok(b)
    }

    /// A builder that starts from an existing catalog's bytes (a copy in
    /// `tmp_dir`): `/images` and the partitions are updated in place instead
    /// of being rebuilt, so a publish costs little however many images there
    /// are. [`CatalogBuilder::finish`] then skips compaction.
    pub fn from_bytes(tmp_dir: &Path, bytes: &[u8], ns_path: &str) -> Result<Self> {
        let mut file = tempfile::Builder::new()
            .prefix("catalog-")
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io(tmp_dir, e))?;
        std::io::Write::write_all(&mut file, bytes).map_err(|e| Error::io(file.path(), e))?;
        let label = format!("being updated for {ns_path}");
        let sql = |source| Error::Sqlite {
            catalog: label.clone(),
            source,
        };
        let conn = Connection::open(file.path()).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql)?;
        // Tables added to the format later (empty in older catalogs).
        let mut missing = String::new();
        for stmt in SCHEMA.split_inclusive(';') {
            let t = stmt.trim();
            for table in [
                "retired_images",
                "revision_tags",
                "image_outputs",
                "image_prefetch",
            ] {
                if t.starts_with(&format!("CREATE TABLE {table} ")) {
                    missing.push_str(&t.replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1));
                    missing.push('\n');
                }
            }
        }
        conn.execute_batch(&missing).map_err(sql)?;
        let next_group: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(hardlink), 0) + 1 FROM entries",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        conn.execute_batch("BEGIN").map_err(sql)?;
        let mut b = CatalogBuilder {
            conn,
            file,
            label,
            next_group,
            in_place: true,
        };
        // A version-1 catalog updated by this writer is written as what
        // it now is: a catalog of this version (its content is valid in
        // both, FORMAT.md §12).
        b.set_property(schema::PROP_FORMAT_VERSION, &FORMAT_VERSION.to_string())?;
        Ok(b)
    }

    /// Empties the retired-image and revision-tag tables (to be refilled).
    pub fn clear_lifecycle_tables(&mut self) -> Result<()> {
        let res = self
            .conn
            .execute_batch("DELETE FROM retired_images; DELETE FROM revision_tags;");
        res.map_err(|e| self.sql(e))
    }

    /// The record of image `name` in the catalog being built.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        super::images::get(&self.conn, name).map_err(|e| self.sql(e))
    }

    fn sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            catalog: self.label.clone(),
            source,
        }
    }

    pub fn set_property(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO properties (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every `(key, value)` property, in key order.
    pub(crate) fn properties(&self) -> Result<Vec<(String, String)>> {
        let res = self
            .conn
            .prepare("SELECT key, value FROM properties ORDER BY key")
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect());
        res.map_err(|e| self.sql(e))
    }

    pub fn property(&self, key: &str) -> Result<Option<String>> {
        rows::property(&self.conn, key).map_err(|e| self.sql(e))
    }

    fn insert_row(&mut self, id: Option<i64>, parent: i64, e: &Entry) -> Result<i64> {
        let (content, chunks, inline) = data_columns(&e.data);
        let res = self
            .conn
            .prepare_cached(
                "INSERT INTO entries (id, parent, name, mode, uid, gid, size, mtime, mtime_ns, rdev, nlink, \
                 hardlink, flags, symlink, content, chunks, inline, nested) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    parent,
                    e.name,
                    e.mode,
                    e.uid,
                    e.gid,
                    to_i64(e.size),
                    e.mtime,
                    e.mtime_ns,
                    to_i64(e.rdev),
                    e.nlink,
                    e.hardlink,
                    e.flags,
                    e.symlink,
                    content,
                    chunks,
                    inline,
                    e.nested.map(|n| n.as_bytes().to_vec()),
                ])
            });
        if let Err(err) = res {
            return Err(self.sql(err));
        }
        let id = self.conn.last_insert_rowid();
        self.write_xattrs(id, &e.xattrs)?;
        if e.hardlink >= self.next_group {
            self.next_group = e.hardlink + 1;
        }
        Ok(id)
    }

    fn write_xattrs(&mut self, id: i64, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let res = self
            .conn
            .prepare_cached("DELETE FROM xattrs WHERE entry = ?1")
            .and_then(|mut st| st.execute([id]));
        res.map_err(|e| self.sql(e))?;
        for (n, v) in xattrs {
            let res = self
                .conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO xattrs (entry, name, value) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut st| st.execute(params![id, n, v]));
            res.map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// Adds `e` under `parent` as entry `id` (ids chosen by the caller, as
    /// the canonical writer of [`super::nesting`] numbers them).
    pub(crate) fn insert_with_id(&mut self, id: i64, parent: i64, e: &Entry) -> Result<i64> {
        self.insert_row(Some(id), parent, e)
    }

    /// Adds `e` (its `name`) under `parent`; returns the new entry's id. The
    /// name must not exist under `parent` yet.
    pub fn insert(&mut self, parent: i64, e: &Entry) -> Result<i64> {
        self.insert_row(None, parent, e)
    }

    /// Replaces the metadata and data of entry `id`, keeping its place, name
    /// and children.
    pub fn update(&mut self, id: i64, e: &Entry) -> Result<()> {
        let (content, chunks, inline) = data_columns(&e.data);
        let res = self
            .conn
            .prepare_cached(
                "UPDATE entries SET mode = ?2, uid = ?3, gid = ?4, size = ?5, mtime = ?6, mtime_ns = ?7, \
                 rdev = ?8, nlink = ?9, hardlink = ?10, flags = ?11, symlink = ?12, content = ?13, \
                 chunks = ?14, inline = ?15, nested = ?16 WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    e.mode,
                    e.uid,
                    e.gid,
                    to_i64(e.size),
                    e.mtime,
                    e.mtime_ns,
                    to_i64(e.rdev),
                    e.nlink,
                    e.hardlink,
                    e.flags,
                    e.symlink,
                    content,
                    chunks,
                    inline,
                    e.nested.map(|n| n.as_bytes().to_vec()),
                ])
            });
        res.map_err(|err| self.sql(err))?;
        self.write_xattrs(id, &e.xattrs)?;
        if e.hardlink >= self.next_group {
            self.next_group = e.hardlink + 1;
        }
        Ok(())
    }

    pub fn get(&self, id: i64) -> Result<Option<Entry>> {
        rows::get(&self.conn, id).map_err(|e| self.sql(e))
    }

    pub fn lookup(&self, parent: i64, name: &[u8]) -> Result<Option<Entry>> {
        rows::lookup(&self.conn, parent, name).map_err(|e| self.sql(e))
    }

    pub fn children(&self, parent: i64) -> Result<Vec<Entry>> {
        rows::children(&self.conn, parent).map_err(|e| self.sql(e))
    }

    /// At most `limit` children of `parent` whose names come after `after`,
    /// in name order: a directory of a million entries is copied in pages.
    pub(crate) fn children_after(
        &self,
        parent: i64,
        after: Option<&[u8]>,
        limit: i64,
    ) -> Result<Vec<Entry>> {
        rows::children_page(&self.conn, parent, after, limit).map_err(|e| self.sql(e))
    }

    /// How many entries `parent` holds (indexed; no entry is decoded).
    pub fn child_count(&self, parent: i64) -> Result<usize> {
        rows::child_count(&self.conn, parent).map_err(|e| self.sql(e))
    }

    /// Entries in the same hardlink group as `group`.
    pub fn hardlink_members(&self, group: i64) -> Result<Vec<i64>> {
        let res = self
            .conn
            .prepare_cached("SELECT id FROM entries WHERE hardlink = ?1 AND hardlink != 0")
            .and_then(|mut st| st.query_map([group], |r| r.get(0))?.collect());
        res.map_err(|e| self.sql(e))
    }

    /// A hardlink group number not used in this catalog yet.
    pub fn new_hardlink_group(&mut self) -> i64 {
        let g = self.next_group;
        self.next_group += 1;
        g
    }

    /// Removes entry `id` and everything below it.
    pub fn remove(&mut self, id: i64) -> Result<()> {
        self.remove_where(id, true)
    }

    /// Removes everything below directory `id`, keeping `id` itself.
    pub fn remove_children(&mut self, id: i64) -> Result<()> {
        self.remove_where(id, false)
    }

    fn remove_where(&mut self, id: i64, include_self: bool) -> Result<()> {
        let sub = "WITH RECURSIVE sub(id) AS (SELECT id FROM entries WHERE parent = ?1 \
                   UNION ALL SELECT e.id FROM entries e JOIN sub ON e.parent = sub.id)";
        let res = self
            .conn
            .execute_batch("DELETE FROM temp_ids")
            .or_else(|_| {
                self.conn
                    .execute_batch("CREATE TEMP TABLE temp_ids (id INTEGER PRIMARY KEY)")
            });
        res.map_err(|e| self.sql(e))?;
        let res = self
            .conn
            .execute(
                &format!("{sub} INSERT INTO temp_ids SELECT id FROM sub"),
                [id],
            )
            .and_then(|_| {
                if include_self {
                    self.conn
                        .execute("INSERT OR IGNORE INTO temp_ids VALUES (?1)", [id])?;
                }
                self.conn.execute_batch(
                    "DELETE FROM xattrs WHERE entry IN (SELECT id FROM temp_ids);
                     DELETE FROM entries WHERE id IN (SELECT id FROM temp_ids);
                     DELETE FROM temp_ids;",
                )
            });
        res.map_err(|e| self.sql(e))
    }

    pub fn add_image(&mut self, image: &ImageRecord) -> Result<()> {
        let res = super::images::insert(&self.conn, image);
        res.map_err(|e| self.sql(e))
    }

    pub fn remove_image(&mut self, name: &str) -> Result<()> {
        let res = super::images::remove(&self.conn, name);
        res.map_err(|e| self.sql(e))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        super::images::list(&self.conn).map_err(|e| self.sql(e))
    }

    pub fn add_tag(&mut self, tag: &super::images::RevisionTag) -> Result<()> {
        let res = super::images::insert_tag(&self.conn, tag);
        res.map_err(|e| self.sql(e))
    }

    pub fn add_retired(&mut self, retired: &super::images::RetiredImage) -> Result<()> {
        let res = super::images::insert_retired(&self.conn, retired);
        res.map_err(|e| self.sql(e))
    }

    /// Freezes the catalog: link counts are computed, the file compacted, and
    /// its bytes returned (to be stored as a catalog object).
    pub fn finish(self) -> Result<Vec<u8>> {
        let file = self.finish_file()?;
        std::fs::read(file.path()).map_err(|e| Error::io(file.path(), e))
    }

    /// As [`CatalogBuilder::finish`], leaving the frozen catalog in its temp
    /// file (deleted on drop): large catalogs are then stored and reopened
    /// without ever being held in memory.
    pub fn finish_file(self) -> Result<tempfile::NamedTempFile> {
        let res = self.conn.execute_batch(
            "UPDATE entries SET nlink = 1 WHERE nlink != 1;
             UPDATE entries SET nlink = g.n
                 FROM (SELECT hardlink, COUNT(*) AS n FROM entries WHERE hardlink != 0 GROUP BY hardlink) AS g
                 WHERE entries.hardlink = g.hardlink;
             COMMIT;",
        );
        res.map_err(|e| self.sql(e))?;
        if self.in_place {
            // An update touches a few rows of a large catalog (`/images`):
            // compacting it would rewrite all of it on every publish, and
            // the pages it frees are reused by the next update.
            let CatalogBuilder {
                conn, file, label, ..
            } = self;
            conn.close().map_err(|(_, source)| Error::Sqlite {
                catalog: label,
                source,
            })?;
            return Ok(file);
        }
        // VACUUM INTO writes the compacted copy straight to a new file; a
        // plain VACUUM would stage the whole database in temp storage.
        let dir = self.file.path().parent().unwrap_or(Path::new("."));
        let out = tempfile::Builder::new()
            .prefix("catalog-")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let target = out.path().to_string_lossy().into_owned();
        let res = self.conn.execute("VACUUM INTO ?1", [&target]);
        res.map_err(|e| self.sql(e))?;
        let CatalogBuilder { conn, label, .. } = self;
        conn.close().map_err(|(_, source)| Error::Sqlite {
            catalog: label,
            source,
        })?;
        fix_header(out.path())?;
        Ok(out)
    }

    /// Computes `nlink` (as [`CatalogBuilder::finish`] does) and ends the
    /// builder's transaction, leaving it readable: the canonical writer
    /// then copies it into catalogs of its own.
    pub(crate) fn freeze_links(&mut self) -> Result<()> {
        let res = self.conn.execute_batch(
            "UPDATE entries SET nlink = 1 WHERE nlink != 1;
             UPDATE entries SET nlink = g.n
                 FROM (SELECT hardlink, COUNT(*) AS n FROM entries WHERE hardlink != 0 GROUP BY hardlink) AS g
                 WHERE entries.hardlink = g.hardlink;",
        );
        res.map_err(|e| self.sql(e))
    }

    /// `(id, parent, is directory, hardlink group, nlink, a layer's own)`
    /// of every entry, in id order: the shape of the tree, for the cut
    /// rule. "A layer's own" is false for what a layer tree holds only to
    /// stack with overlayfs: whiteouts, overlay xattrs (opaque markers),
    /// implicit directories and copied-up hardlink targets.
    pub(crate) fn shape(&self) -> Result<Vec<ShapeRow>> {
        let res = self
            .conn
            .prepare(
                "SELECT id, parent, mode, hardlink, nlink, flags, rdev,
                        EXISTS (SELECT 1 FROM xattrs x WHERE x.entry = entries.id
                                AND (substr(x.name, 1, 16) = CAST('trusted.overlay.' AS BLOB)
                                  OR substr(x.name, 1, 13) = CAST('user.overlay.' AS BLOB)))
                 FROM entries ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    let mode: u32 = r.get(2)?;
                    let flags: i64 = r.get(5)?;
                    let rdev: i64 = r.get(6)?;
                    let overlay: bool = r.get(7)?;
                    let whiteout = mode & super::entry::S_IFMT == 0o020000 && rdev == 0;
                    let marks = super::schema::FLAG_IMPLICIT | super::schema::FLAG_COPYUP;
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        mode & super::entry::S_IFMT == 0o040000,
                        r.get(3)?,
                        r.get(4)?,
                        flags & marks == 0 && !whiteout && !overlay,
                    ))
                })?
                .collect()
            });
        res.map_err(|e| self.sql(e))
    }
}

/// `(id, parent, is directory, hardlink group, nlink, a layer's own)` of
/// one entry.
pub(crate) type ShapeRow = (i64, i64, bool, i64, u32, bool);

/// Header fields of a database file that depend on how, not what, SQLite
/// wrote: the change counter (offset 24), the version-valid-for number
/// (92, which must equal it) and the number of the SQLite library that
/// wrote the file (96). Fixed, so that equal content gives equal bytes
/// whatever SQLite version the writer links (FORMAT.md §4.1).
fn fix_header(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let io = |e| Error::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut header = [0u8; 100];
    f.read_exact(&mut header).map_err(io)?;
    header[24..28].copy_from_slice(&1u32.to_be_bytes());
    header[92..96].copy_from_slice(&1u32.to_be_bytes());
    header[96..100].copy_from_slice(&CANONICAL_SQLITE_VERSION.to_be_bytes());
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&header).map_err(io)
}

/// What the header of every catalog the reference writer builds says about
/// the SQLite version that wrote it (3.45.0; informational for SQLite).
pub const CANONICAL_SQLITE_VERSION: u32 = 3_045_000;

fn to_i64(v: u64) -> i64 {
    // SQLite integers are signed; sizes and device numbers fit in 63 bits.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `(content, chunks, inline)` column values; at most one is set.
type DataColumns<'a> = (Option<Vec<u8>>, Option<Vec<u8>>, Option<&'a [u8]>);

fn data_columns(d: &Data) -> DataColumns<'_> {
    match d {
        Data::None => (None, None, None),
        Data::Object(id) => (Some(id.as_bytes().to_vec()), None, None),
        Data::Chunks(c) => (None, Some(rows::encode_chunks(c)), None),
        Data::Inline(b) => (None, None, Some(b.as_slice())),
    }
}
