//! Image metadata: what each image name points to, where its trees are, and
//! which layers it uses (the reference counts garbage collection needs come
//! from here, not from a tree scan). Records are rows of the `/flat/ab`
//! partition of the image's flat tree; the lifecycle tables (retired images,
//! revision tags) are in the `/images` catalog (FORMAT.md §5.3, §5.5).

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::Sha256Digest;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageLayerRecord {
    /// Blob digest as published by the source (`sha256:…`).
    pub digest: Sha256Digest,
    /// Uncompressed digest (`sha256:…`); keys the layer tree.
    pub diff_id: Sha256Digest,
    pub media_type: String,
    pub size: u64,
    /// `/layers/ab/<diff_id hex>`.
    pub layer_path: String,
    /// Catalog id (hex) of the layer tree.
    pub catalog: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// Full name with tag, e.g. `local/app:1.0`.
    pub name: String,
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The source as given to `publish`.
    pub source: String,
    /// Unix seconds.
    pub published_at: i64,
    /// `/flat/ab/<manifest digest hex>`.
    pub flat_path: String,
    /// Catalog id (hex) of the flat tree.
    pub flat_catalog: String,
    #[serde(skip)]
    pub manifest: Vec<u8>,
    #[serde(skip)]
    pub config: Vec<u8>,
    /// Base first.
    pub layers: Vec<ImageLayerRecord>,
    /// Extra outputs added to the flat tree, sorted (`apptainer`); empty
    /// when the flat tree is exactly the merged layers (FORMAT.md §5.5).
    pub outputs: Vec<String>,
    /// The recorded prefetch list published with this name (FORMAT.md
    /// §5.6), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<PrefetchRef>,
}

/// Where an image's prefetch list is: a content object (FORMAT.md §5.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefetchRef {
    /// Id (hex) of the content object holding the list.
    pub list: String,
    /// Its size in bytes (at most `MAX_PREFETCH_LIST_SIZE`).
    pub size: u64,
    /// How many paths it lists.
    pub entries: u64,
}

impl PrefetchRef {
    /// The list object's id and size, checked against the format's limits.
    pub fn object(&self) -> Result<(crate::ObjectId, u64), crate::Error> {
        use crate::prefetch_list::{MAX_PREFETCH_ENTRIES, MAX_PREFETCH_LIST_SIZE};
        let id = crate::ObjectId::from_hex(&self.list)?;
        if self.size > MAX_PREFETCH_LIST_SIZE || self.entries > MAX_PREFETCH_ENTRIES as u64 {
            return Err(crate::Error::ObjectTooLarge {
                id,
                size: self.size,
                limit: MAX_PREFETCH_LIST_SIZE,
            });
        }
        Ok((id, self.size))
    }
}

pub(crate) fn insert(conn: &Connection, i: &ImageRecord) -> rusqlite::Result<()> {
    remove(conn, &i.name)?;
    conn.prepare_cached(
        "INSERT INTO images (name, manifest_digest, config_digest, platform, source, published_at, \
         flat_path, flat_catalog, manifest, config) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    )?
    .execute(params![
            i.name,
            i.manifest_digest,
            i.config_digest,
            i.platform,
            i.source,
            i.published_at,
            i.flat_path,
            i.flat_catalog,
            i.manifest,
            i.config
        ],
    )?;
    for (pos, l) in i.layers.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO image_layers (image, position, digest, diff_id, media_type, size, layer_path, catalog) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        )?
        .execute(params![
                i.name,
                pos as i64,
                l.digest,
                l.diff_id,
                l.media_type,
                i64::try_from(l.size).unwrap_or(i64::MAX),
                l.layer_path,
                l.catalog
            ],
        )?;
    }
    for o in &i.outputs {
        conn.prepare_cached("INSERT OR IGNORE INTO image_outputs (image, output) VALUES (?1, ?2)")?
            .execute(params![i.name, o])?;
    }
    if let Some(p) = &i.prefetch {
        conn.prepare_cached(
            "INSERT INTO image_prefetch (image, list, size, entries) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            i.name,
            p.list,
            i64::try_from(p.size).unwrap_or(i64::MAX),
            i64::try_from(p.entries).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(())
}

pub(crate) fn remove(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM images WHERE name = ?1")?
        .execute([name])?;
    conn.prepare_cached("DELETE FROM image_layers WHERE image = ?1")?
        .execute([name])?;
    if table_exists(conn, "image_outputs")? {
        conn.prepare_cached("DELETE FROM image_outputs WHERE image = ?1")?
            .execute([name])?;
    }
    if table_exists(conn, "image_prefetch")? {
        conn.prepare_cached("DELETE FROM image_prefetch WHERE image = ?1")?
            .execute([name])?;
    }
    Ok(())
}

pub(crate) fn any(conn: &Connection) -> rusqlite::Result<bool> {
    if !table_exists(conn, "images")? {
        return Ok(false);
    }
    conn.query_row("SELECT EXISTS (SELECT 1 FROM images)", [], |r| r.get(0))
}

pub(crate) fn list(conn: &Connection) -> rusqlite::Result<Vec<ImageRecord>> {
    select(conn, "", [])
}

/// The record of `name`, if any (indexed: the name is the primary key).
pub(crate) fn get(conn: &Connection, name: &str) -> rusqlite::Result<Option<ImageRecord>> {
    Ok(select(conn, "WHERE name = ?1", [name])?.into_iter().next())
}

/// One record whose manifest digest is `digest`, if any.
pub(crate) fn by_digest(conn: &Connection, digest: &str) -> rusqlite::Result<Option<ImageRecord>> {
    Ok(select(conn, "WHERE manifest_digest = ?1", [digest])?
        .into_iter()
        .next())
}

fn select<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> rusqlite::Result<Vec<ImageRecord>> {
    let mut st = conn.prepare(&format!(
        "SELECT name, manifest_digest, config_digest, platform, source, published_at, flat_path, \
         flat_catalog, manifest, config FROM images {filter} ORDER BY name"
    ))?;
    let mut images: Vec<ImageRecord> = st
        .query_map(params, |r| {
            Ok(ImageRecord {
                name: r.get(0)?,
                manifest_digest: r.get(1)?,
                config_digest: r.get(2)?,
                platform: r.get(3)?,
                source: r.get(4)?,
                published_at: r.get(5)?,
                flat_path: r.get(6)?,
                flat_catalog: r.get(7)?,
                manifest: r.get(8)?,
                config: r.get(9)?,
                layers: Vec::new(),
                outputs: Vec::new(),
                prefetch: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare(
        "SELECT digest, diff_id, media_type, size, layer_path, catalog FROM image_layers \
         WHERE image = ?1 ORDER BY position",
    )?;
    for img in &mut images {
        img.layers = st
            .query_map([&img.name], |r| {
                Ok(ImageLayerRecord {
                    digest: r.get(0)?,
                    diff_id: r.get(1)?,
                    media_type: r.get(2)?,
                    size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    layer_path: r.get(4)?,
                    catalog: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    if table_exists(conn, "image_outputs")? {
        let mut st =
            conn.prepare("SELECT output FROM image_outputs WHERE image = ?1 ORDER BY output")?;
        for img in &mut images {
            img.outputs = st
                .query_map([&img.name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
    }
    if table_exists(conn, "image_prefetch")? {
        let mut st =
            conn.prepare("SELECT list, size, entries FROM image_prefetch WHERE image = ?1")?;
        for img in &mut images {
            img.prefetch = st
                .query_map([&img.name], prefetch_row)?
                .next()
                .transpose()?;
        }
    }
    Ok(images)
}

fn prefetch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PrefetchRef> {
    Ok(PrefetchRef {
        list: r.get(0)?,
        size: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(u64::MAX),
        entries: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(u64::MAX),
    })
}

/// Every prefetch list this catalog's records name (for garbage
/// collection, `check` and replication: the objects beyond its entries).
pub(crate) fn prefetch_lists(conn: &Connection) -> rusqlite::Result<Vec<(String, PrefetchRef)>> {
    if !table_exists(conn, "image_prefetch")? {
        return Ok(Vec::new());
    }
    let mut st =
        conn.prepare("SELECT image, list, size, entries FROM image_prefetch ORDER BY image")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PrefetchRef {
                list: r.get(1)?,
                size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(u64::MAX),
                entries: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(u64::MAX),
            },
        ))
    })?;
    rows.collect()
}

/// An image that stopped being wanted: unlinked from `/images` at once, its
/// trees kept until garbage collection's grace period has passed since
/// `retired_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RetiredImage {
    pub name: String,
    pub manifest_digest: String,
    pub platform: String,
    pub published_at: i64,
    /// Unix seconds.
    pub retired_at: i64,
    /// `removed` (dropped from the wishlist or `stratum rm`) or `replaced`
    /// (its tag moved to another digest).
    pub reason: String,
    pub flat_path: String,
    pub flat_catalog: String,
    /// The layers it used: `(diff_id, layer_path, catalog)`, base first.
    pub layers: Vec<(String, String, String)>,
}

impl RetiredImage {
    pub fn from_record(r: &ImageRecord, retired_at: i64, reason: &str) -> Self {
        RetiredImage {
            name: r.name.clone(),
            manifest_digest: r.manifest_digest.to_string(),
            platform: r.platform.clone(),
            published_at: r.published_at,
            retired_at,
            reason: reason.to_owned(),
            flat_path: r.flat_path.clone(),
            flat_catalog: r.flat_catalog.clone(),
            layers: r
                .layers
                .iter()
                .map(|l| {
                    (
                        l.diff_id.to_string(),
                        l.layer_path.clone(),
                        l.catalog.clone(),
                    )
                })
                .collect(),
        }
    }
}

pub(crate) fn insert_retired(conn: &Connection, r: &RetiredImage) -> rusqlite::Result<()> {
    let layers = serde_json::to_string(&r.layers).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO retired_images (name, manifest_digest, platform, published_at, \
         retired_at, reason, flat_path, flat_catalog, layers) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        r.name,
        r.manifest_digest,
        r.platform,
        r.published_at,
        r.retired_at,
        r.reason,
        r.flat_path,
        r.flat_catalog,
        layers
    ])?;
    Ok(())
}

pub(crate) fn list_retired(conn: &Connection) -> rusqlite::Result<Vec<RetiredImage>> {
    if !table_exists(conn, "retired_images")? {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare(
        "SELECT name, manifest_digest, platform, published_at, retired_at, reason, flat_path, \
         flat_catalog, layers FROM retired_images ORDER BY name, manifest_digest",
    )?;
    let rows = st.query_map([], |r| {
        let layers: String = r.get(8)?;
        Ok(RetiredImage {
            name: r.get(0)?,
            manifest_digest: r.get(1)?,
            platform: r.get(2)?,
            published_at: r.get(3)?,
            retired_at: r.get(4)?,
            reason: r.get(5)?,
            flat_path: r.get(6)?,
            flat_catalog: r.get(7)?,
            layers: serde_json::from_str(&layers).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        })
    })?;
    rows.collect()
}

/// A named revision (`stratum tag`): garbage collection keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevisionTag {
    pub name: String,
    pub revision: u64,
    /// Id (hex) of the revision's manifest object (`M`).
    pub manifest_id: String,
    pub tagged_at: i64,
}

pub(crate) fn insert_tag(conn: &Connection, t: &RevisionTag) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO revision_tags (name, revision, manifest_id, tagged_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        t.name,
        i64::try_from(t.revision).unwrap_or(i64::MAX),
        t.manifest_id,
        t.tagged_at
    ])?;
    Ok(())
}

pub(crate) fn list_tags(conn: &Connection) -> rusqlite::Result<Vec<RevisionTag>> {
    if !table_exists(conn, "revision_tags")? {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare(
        "SELECT name, revision, manifest_id, tagged_at FROM revision_tags ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(RevisionTag {
            name: r.get(0)?,
            revision: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            manifest_id: r.get(2)?,
            tagged_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Whether `table` exists: tables added to format v1 later are missing in
/// older catalogs, and readers treat them as empty (FORMAT.md §5.5).
fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}
