//! The catalog schema, version 1 (normative text: docs/FORMAT.md).

/// Created in every catalog. `entries.id` is the inode number within the
/// catalog; the root directory is id 1 with parent 0 and an empty name.
pub const SCHEMA: &str = "
CREATE TABLE properties (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE entries (
    id       INTEGER PRIMARY KEY,
    parent   INTEGER NOT NULL,
    name     BLOB NOT NULL,
    mode     INTEGER NOT NULL,
    uid      INTEGER NOT NULL,
    gid      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime    INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    rdev     INTEGER NOT NULL,
    nlink    INTEGER NOT NULL,
    hardlink INTEGER NOT NULL,
    flags    INTEGER NOT NULL,
    symlink  BLOB,
    content  BLOB,
    chunks   BLOB,
    inline   BLOB,
    nested   BLOB
);
CREATE UNIQUE INDEX entries_by_name ON entries (parent, name);
CREATE TABLE xattrs (
    entry INTEGER NOT NULL,
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (entry, name)
) WITHOUT ROWID;
CREATE TABLE images (
    name            TEXT PRIMARY KEY NOT NULL,
    manifest_digest TEXT NOT NULL,
    config_digest   TEXT NOT NULL,
    platform        TEXT NOT NULL,
    source          TEXT NOT NULL,
    published_at    INTEGER NOT NULL,
    flat_path       TEXT NOT NULL,
    flat_catalog    TEXT NOT NULL,
    manifest        BLOB NOT NULL,
    config          BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE image_layers (
    image      TEXT NOT NULL,
    position   INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    diff_id    TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    layer_path TEXT NOT NULL,
    catalog    TEXT NOT NULL,
    PRIMARY KEY (image, position)
) WITHOUT ROWID;
CREATE INDEX image_layers_by_diff_id ON image_layers (diff_id);
CREATE TABLE image_outputs (
    image  TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (image, output)
) WITHOUT ROWID;
CREATE TABLE image_prefetch (
    image   TEXT PRIMARY KEY NOT NULL,
    list    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    entries INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE retired_images (
    name            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    platform        TEXT NOT NULL,
    published_at    INTEGER NOT NULL,
    retired_at      INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    flat_path       TEXT NOT NULL,
    flat_catalog    TEXT NOT NULL,
    layers          TEXT NOT NULL,
    PRIMARY KEY (name, manifest_digest)
) WITHOUT ROWID;
CREATE TABLE revision_tags (
    name        TEXT PRIMARY KEY NOT NULL,
    revision    INTEGER NOT NULL,
    manifest_id TEXT NOT NULL,
    tagged_at   INTEGER NOT NULL
) WITHOUT ROWID;
";

/// `entries.flags` bit: a directory the layer's tar did not contain but its
/// children needed. A flat merge keeps the lower layer's metadata for it.
pub const FLAG_IMPLICIT: i64 = 1;

/// `entries.flags` bit: a file of a lower layer that this layer's tar
/// hardlinked to, copied up into the layer tree (as overlayfs would) so the
/// link has an inode to share. A flat merge keeps the lower file itself and
/// joins the layer's hardlink group to it.
pub const FLAG_COPYUP: i64 = 2;

/// Property keys every catalog carries.
pub const PROP_FORMAT_VERSION: &str = "format_version";
pub const PROP_KIND: &str = "kind";
pub const PROP_PATH: &str = "path";
