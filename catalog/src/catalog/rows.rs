//! The SQL shared by the catalog writer and reader: one mapping between
//! [`Entry`] and a row, so the two can never disagree.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::entry::{Chunk, Data, Entry, FileType};
use crate::ObjectId;

pub(crate) const COLUMNS: &str = "id, parent, name, mode, uid, gid, size, mtime, mtime_ns, rdev, \
     nlink, hardlink, flags, symlink, content, chunks, inline, nested";

const CHUNK_RECORD: usize = 40;

pub(crate) fn encode_chunks(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * CHUNK_RECORD);
    for c in chunks {
        out.extend_from_slice(c.id.as_bytes());
        out.extend_from_slice(&c.size.to_be_bytes());
    }
    out
}

fn decode_chunks(bytes: &[u8]) -> Result<Vec<Chunk>, String> {
    if !bytes.len().is_multiple_of(CHUNK_RECORD) {
        return Err(format!(
            "chunk list of {} bytes is not a multiple of 40",
            bytes.len()
        ));
    }
    bytes
        .chunks_exact(CHUNK_RECORD)
        .map(|r| {
            let id = ObjectId::from_slice(&r[..32]).map_err(|e| e.to_string())?;
            let mut size = [0u8; 8];
            size.copy_from_slice(&r[32..]);
            Ok(Chunk {
                id,
                size: u64::from_be_bytes(size),
            })
        })
        .collect()
}

fn conv<T: TryFrom<i64>>(v: i64, col: usize) -> rusqlite::Result<T> {
    T::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(col, v))
}

fn bad(col: usize, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Blob, why.into())
}

fn id_col(row: &Row, col: usize) -> rusqlite::Result<Option<ObjectId>> {
    let v: Option<Vec<u8>> = row.get(col)?;
    v.map(|b| ObjectId::from_slice(&b).map_err(|e| bad(col, e.to_string())))
        .transpose()
}

/// Maps a row selected with [`COLUMNS`]; xattrs are filled separately.
pub(crate) fn entry_from_row(row: &Row) -> rusqlite::Result<Entry> {
    let content = id_col(row, 14)?;
    let chunks: Option<Vec<u8>> = row.get(15)?;
    let inline: Option<Vec<u8>> = row.get(16)?;
    let data = match (content, chunks, inline) {
        (None, None, None) => Data::None,
        (Some(id), None, None) => Data::Object(id),
        (None, Some(c), None) => Data::Chunks(decode_chunks(&c).map_err(|e| bad(15, e))?),
        (None, None, Some(b)) => Data::Inline(b),
        _ => return Err(bad(14, "more than one of content, chunks, inline".into())),
    };
    let mut mode: u32 = conv(row.get(3)?, 3)?;
    if FileType::from_mode(mode) == Some(FileType::Symlink) {
        // Symlink permissions mean nothing on Linux and every file system
        // shows 0777 (as `umoci unpack` and CernVM-FS do), whatever the tar
        // header said: every view of a catalog, old ones included, reports
        // that (FORMAT.md §4.2).
        mode = FileType::Symlink.mode_bits() | 0o777;
    }
    Ok(Entry {
        id: row.get(0)?,
        parent: row.get(1)?,
        name: row.get(2)?,
        mode,
        uid: conv(row.get(4)?, 4)?,
        gid: conv(row.get(5)?, 5)?,
        size: conv(row.get(6)?, 6)?,
        mtime: row.get(7)?,
        mtime_ns: conv(row.get(8)?, 8)?,
        rdev: conv(row.get(9)?, 9)?,
        nlink: conv(row.get(10)?, 10)?,
        hardlink: row.get(11)?,
        flags: row.get(12)?,
        symlink: row.get(13)?,
        data,
        nested: id_col(row, 17)?,
        xattrs: Vec::new(),
    })
}

fn with_xattrs(conn: &Connection, mut e: Entry) -> rusqlite::Result<Entry> {
    let mut st =
        conn.prepare_cached("SELECT name, value FROM xattrs WHERE entry = ?1 ORDER BY name")?;
    e.xattrs = st
        .query_map([e.id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(e)
}

pub(crate) fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<Entry>> {
    let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM entries WHERE id = ?1"))?;
    let e = st.query_row([id], entry_from_row).optional()?;
    e.map(|e| with_xattrs(conn, e)).transpose()
}

pub(crate) fn lookup(
    conn: &Connection,
    parent: i64,
    name: &[u8],
) -> rusqlite::Result<Option<Entry>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM entries WHERE parent = ?1 AND name = ?2"
    ))?;
    let e = st
        .query_row(params![parent, name], entry_from_row)
        .optional()?;
    e.map(|e| with_xattrs(conn, e)).transpose()
}

/// Children of `parent`, sorted by name bytes.
pub(crate) fn children(conn: &Connection, parent: i64) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM entries WHERE parent = ?1 ORDER BY name"
    ))?;
    let rows = st
        .query_map([parent], entry_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|e| with_xattrs(conn, e)).collect()
}

/// How many children `parent` has (indexed).
pub(crate) fn child_count(conn: &Connection, parent: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("SELECT count(*) FROM entries WHERE parent = ?1")?
        .query_row([parent], |r| r.get::<_, i64>(0))
        .map(|n| usize::try_from(n).unwrap_or(0))
}

/// `(name, nested catalog id)` of the children of `parent` that are mount
/// points, in name order: the partitions of the root catalog, read on every
/// publish, without decoding whole entries.
pub(crate) fn mount_points(
    conn: &Connection,
    parent: i64,
) -> rusqlite::Result<Vec<(Vec<u8>, ObjectId)>> {
    let mut st = conn.prepare_cached(
        "SELECT name, nested FROM entries WHERE parent = ?1 AND nested IS NOT NULL ORDER BY name",
    )?;
    let rows = st.query_map([parent], |r| {
        let id = id_col(r, 1)?.ok_or_else(|| bad(1, "NULL".into()))?;
        Ok((r.get(0)?, id))
    })?;
    rows.collect()
}

/// Up to `limit` children of `parent` named after `after`, in name order.
pub(crate) fn children_page(
    conn: &Connection,
    parent: i64,
    after: Option<&[u8]>,
    limit: i64,
) -> rusqlite::Result<Vec<Entry>> {
    let rows = match after {
        None => {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE parent = ?1 ORDER BY name LIMIT ?2"
            ))?;
            let rows = st
                .query_map(params![parent, limit], entry_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        }
        Some(a) => {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE parent = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
            ))?;
            let rows = st
                .query_map(params![parent, a, limit], entry_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        }
    };
    rows.into_iter().map(|e| with_xattrs(conn, e)).collect()
}

pub(crate) fn property(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM properties WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}
