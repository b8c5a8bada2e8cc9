//! The error of an eager pull.

use std::path::PathBuf;

use stratum_catalog::ObjectId;

/// Why [`crate::materialize`] failed. Every variant names the namespace path
/// it was working on (`path`) and, where one exists, the destination path
/// (`dest`); content errors also name the object.
///
/// After an error the destination holds whatever was written so far (files,
/// directories with provisional `0700` modes); nothing was written outside
/// it. The caller may remove it.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The destination directory cannot be used (not empty, a symlink, not a
    /// directory, cannot be created).
    #[error("destination {dest}: {reason}")]
    Destination { dest: PathBuf, reason: String },

    /// A catalog holds a name that would escape or corrupt the destination
    /// (empty, `.`, `..`, containing `/` or NUL). Nothing is written for it.
    #[error("refusing entry {name} in {parent} (destination {dest}): {reason}")]
    UnsafeName {
        parent: String,
        name: String,
        dest: PathBuf,
        reason: String,
    },

    /// An entry cannot be reproduced as described (unknown file type, bad
    /// timestamp, a symlink without target, a hardlinked directory, ...).
    #[error("{path} (destination {dest}): {reason}")]
    Invalid {
        path: String,
        dest: PathBuf,
        reason: String,
    },

    /// Listing a directory or loading a nested catalog failed.
    #[error("{path}: reading the catalog failed: {source}")]
    Catalog {
        path: String,
        #[source]
        source: Box<stratum_catalog::Error>,
    },

    /// A content object could not be fetched or did not verify.
    #[error("{path} (destination {dest}): content object {id}: {source}")]
    Content {
        path: String,
        dest: PathBuf,
        id: ObjectId,
        #[source]
        source: Box<stratum_catalog::Error>,
    },

    /// A file's content does not have the size its catalog entry declares
    /// (the whole file, or one chunk of it).
    #[error(
        "{path} (destination {dest}): {what} is {actual} bytes, the catalog declares {expected}"
    )]
    Size {
        path: String,
        dest: PathBuf,
        what: String,
        expected: u64,
        actual: u64,
    },

    /// A system call on the destination failed.
    #[error("{path} (destination {dest}): {op}: {source}")]
    Io {
        path: String,
        dest: PathBuf,
        op: String,
        #[source]
        source: std::io::Error,
    },
}
