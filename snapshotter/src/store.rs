//! Snapshot metadata: one SQLite database (`ROOT/metadata.db`), so that the
//! snapshots containerd knows survive a restart of the snapshotter.
//!
//! A row is one snapshot, named by containerd's key (active, view) or
//! committed name. Local snapshots own the directory `ROOT/snapshots/<id>`
//! (`fs/` and `work/`); remote ones (`diff_id` set) own nothing: their
//! contents are the layer tree `MOUNT/layers/ab/<diff_id hex>`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

/// The kinds of containerd's snapshots API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Kind> {
        match s {
            "view" => Ok(Kind::View),
            "active" => Ok(Kind::Active),
            "committed" => Ok(Kind::Committed),
            _ => Err(rusqlite::Error::InvalidColumnType(
                1,
                "kind".into(),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

/// One snapshot's record.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: i64,
    pub name: String,
    pub kind: Kind,
    /// Name of the parent snapshot, empty for none.
    pub parent: String,
    pub labels: HashMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// `sha256:<hex>` of the repository layer tree holding the contents of
    /// a remote snapshot; `None` for a local one.
    pub diff_id: Option<String>,
}

impl Snapshot {
    pub fn is_remote(&self) -> bool {
        self.diff_id.is_some()
    }
}

/// The database (callers serialize access: one connection behind a mutex).
pub struct Db {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL,
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    diff_id TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent);
";

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

const COLUMNS: &str = "id, name, kind, parent, labels, created, updated, diff_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Snapshot> {
    let labels: String = r.get(4)?;
    Ok(Snapshot {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: Kind::parse(&r.get::<_, String>(2)?)?,
        parent: r.get(3)?,
        labels: serde_json::from_str(&labels).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created: time(r.get(5)?),
        updated: time(r.get(6)?),
        diff_id: r.get(7)?,
    })
}

fn labels_json(labels: &HashMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

impl Db {
    /// Opens (creating) `path`; WAL, synchronous commits.
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db { conn })
    }

    pub fn get(&self, name: &str) -> Result<Option<Snapshot>> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots WHERE name = ?1"))?
            .query_row([name], row)
            .optional()?)
    }

    /// The record of `name`, or [`Error::NotFound`].
    pub fn must(&self, name: &str) -> Result<Snapshot> {
        self.get(name)?
            .ok_or_else(|| Error::NotFound(format!("snapshot {name}")))
    }

    pub fn all(&self) -> Result<Vec<Snapshot>> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots ORDER BY id"))?;
        let v = st
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    pub fn has_children(&self, name: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM snapshots WHERE parent = ?1)",
            [name],
            |r| r.get(0),
        )?)
    }

    /// Inserts a new snapshot; [`Error::AlreadyExists`] if the name is taken.
    pub fn insert(
        &self,
        name: &str,
        kind: Kind,
        parent: &str,
        labels: &HashMap<String, String>,
        diff_id: Option<&str>,
    ) -> Result<Snapshot> {
        let now = nanos(SystemTime::now());
        let n = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO snapshots (name, kind, parent, labels, created, updated, diff_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        )?
        .execute(params![name, kind.as_str(), parent, labels_json(labels), now, diff_id])?;
        if n == 0 {
            return Err(Error::AlreadyExists(format!("snapshot {name}")));
        }
        self.must(name)
    }

    /// Turns the active snapshot `key` into the committed `name`.
    pub fn commit(&self, key: &str, name: &str, labels: &HashMap<String, String>) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        if self.get(name)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name}")));
        }
        let s = self.must(key)?;
        if s.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is not active"
            )));
        }
        let now = nanos(SystemTime::now());
        tx.execute(
            "UPDATE snapshots SET name = ?1, kind = 'committed', labels = ?2, updated = ?3 \
             WHERE name = ?4",
            params![name, labels_json(labels), now, key],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_labels(&self, name: &str, labels: &HashMap<String, String>) -> Result<()> {
        self.conn.execute(
            "UPDATE snapshots SET labels = ?1, updated = ?2 WHERE name = ?3",
            params![labels_json(labels), nanos(SystemTime::now()), name],
        )?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM snapshots WHERE name = ?1", [name])?;
        Ok(())
    }
}
