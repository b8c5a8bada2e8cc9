//! The wishlist: the YAML file that `stratum sync` reads. It names the
//! repository, the signing key, the registry images to keep published (with
//! their platforms), per-registry settings and where thin images go.
//! `docs/WISHLIST.md` is the normative description; this module parses and
//! validates it, and owns the pieces the sync needs without the network:
//! [`ImageRef`] (`docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`), tag globs
//! ([`glob_matches`]), the default publish name and [`ThinPattern`].
//!
//! Every check happens in [`Wishlist::parse`], so a wishlist that loads can
//! be synced without a late surprise from its own text. Errors name the field
//! and the entry (`images[3].source: …`) and, where known, the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use stratum_catalog::Sha256Digest;

use crate::names::ImageName;

/// The only wishlist `version` this code reads.
pub const WISHLIST_VERSION: u64 = 1;

/// Where the wishlist text came from, when it was not read from a file.
const UNNAMED: &str = "wishlist";

/// The default event log's suffix, after the wishlist file's stem.
pub const EVENT_LOG_SUFFIX: &str = ".events.jsonl";

// ---------------------------------------------------------------- errors

/// Everything that can be wrong with a wishlist, a reference, a platform or
/// a thin-image pattern.
#[derive(Debug, thiserror::Error)]
pub enum WishlistError {
    #[error("cannot read the wishlist {path}: {error}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// Not YAML, or not the wishlist's shape (unknown or missing field, wrong
    /// type): the message of the YAML reader, which carries the line.
    #[error("{origin}{}{}: {message}", at_line(*.line), at_line(*.column))]
    Yaml {
        origin: String,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
    /// A field whose value is wrong. `field` is its path, e.g.
    /// `images[3].source` or `registries."host:5000".ca_file`.
    #[error("{origin}{}: {field}: {reason}", at_line(*.line))]
    Field {
        origin: String,
        line: Option<u64>,
        field: String,
        reason: String,
    },
    /// Two entries that would publish (or push) the same name.
    #[error("{origin}{}: {field} conflicts with {other}: {reason}", at_line(*.line))]
    Conflict {
        origin: String,
        line: Option<u64>,
        field: String,
        other: String,
        reason: String,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("invalid platform {platform:?}: {reason}")]
    Platform { platform: String, reason: String },
    #[error("invalid thin-image pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

fn at_line(n: Option<u64>) -> String {
    n.map(|n| format!(":{n}")).unwrap_or_default()
}

// ---------------------------------------------------------------- the wishlist

/// A loaded and validated wishlist. Paths are absolute when the wishlist was
/// loaded from a file given by an absolute path (they are joined onto the
/// wishlist's directory otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Wishlist {
    /// The file it was read from, or `wishlist` when parsed from text.
    pub origin: String,
    pub repository: PathBuf,
    pub signing_key: PathBuf,
    /// The default platforms of the inputs (already applied to each input's
    /// [`Input::platforms`]; kept for reports).
    pub platforms: Platforms,
    /// Per-registry settings, by `host[:port]`.
    pub registries: BTreeMap<String, RegistrySettings>,
    pub thin_images: Option<ThinImages>,
    pub event_log: PathBuf,
    pub images: Vec<Input>,
}

/// Settings for one registry host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates trusted for this registry (in addition
    /// to the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The environment variables that hold the user name and password (or
    /// token). Either both or neither.
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
}

/// Where and under which name sync pushes thin images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinImages {
    pub pattern: ThinPattern,
    /// The repository URLs written into the descriptors (empty: the
    /// repository's defaults, recorded by `stratum init --url`).
    pub urls: Vec<String>,
}

/// One entry of `images`, with the defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Its index in `images`, for messages (`images[3]`).
    pub index: usize,
    pub source: ImageRef,
    pub platforms: Platforms,
    /// The repository name it is published under (below `/images`): the
    /// `name` field without its tag, or `<host[:port]>/<repo>`.
    pub name: String,
    /// The tag from `name: REPO:TAG`, which replaces the source's tag.
    pub tag: Option<String>,
    /// Extra outputs of its flat trees (`outputs: [apptainer]`).
    pub outputs: crate::publish::Outputs,
    /// A recorded prefetch list stored with every name it publishes
    /// (`prefetch: FILE`, relative to the wishlist's directory).
    pub prefetch: Option<PathBuf>,
}

impl Input {
    /// `images[N]`, as used in messages.
    pub fn label(&self) -> String {
        format!("images[{}]", self.index)
    }

    /// Whether the source tag is a glob, to expand through the registry's
    /// tag list.
    pub fn is_glob(&self) -> bool {
        self.source.is_glob()
    }

    /// The tag this input publishes when it is not a glob: the `name`
    /// field's tag, else the source tag, else `sha256-<hex>` for a source
    /// pinned by digest. `None` for a glob.
    pub fn publish_tag(&self) -> Option<String> {
        if let Some(t) = &self.tag {
            return Some(t.clone());
        }
        match &self.source.target {
            Target::Tag(t) => Some(t.clone()),
            Target::Glob(_) => None,
            Target::Digest(d) => Some(digest_tag(d)),
        }
    }

    /// The name a non-glob input publishes, `NAME:TAG`. `None` for a glob
    /// (use [`Input::publish_name_for`] with each tag it expands to).
    pub fn publish_name(&self) -> Option<ImageName> {
        let tag = self.publish_tag()?;
        ImageName::parse(&format!("{}:{tag}", self.name)).ok()
    }

    /// The name published for source tag `tag` (a tag a glob expanded to,
    /// or the input's own tag): `NAME:tag`, or `NAME:<the name's tag>` if
    /// the `name` field gave one. Fails if `tag` is not a valid tag or the
    /// input does not select it.
    pub fn publish_name_for(&self, tag: &str) -> Result<ImageName, WishlistError> {
        if let Err(reason) = check_tag(tag) {
            return Err(WishlistError::Reference {
                reference: self.source.with_tag(tag).to_string(),
                reason,
            });
        }
        if !self.selects_tag(tag) {
            return Err(WishlistError::Reference {
                reference: self.source.with_tag(tag).to_string(),
                reason: format!("{} does not select tag {tag:?}", self.label()),
            });
        }
        let tag = self.tag.as_deref().unwrap_or(tag);
        ImageName::parse(&format!("{}:{tag}", self.name)).map_err(|e| WishlistError::Reference {
            reference: self.source.to_string(),
            reason: e.to_string(),
        })
    }

    /// Whether this input selects source tag `tag`: the glob matches it or
    /// it is the input's tag. A digest-pinned input selects no tag.
    pub fn selects_tag(&self, tag: &str) -> bool {
        match &self.source.target {
            Target::Tag(t) => t == tag,
            Target::Glob(g) => glob_matches(g, tag),
            Target::Digest(_) => false,
        }
    }

    /// The tags this input may publish, as a pattern for conflict checks.
    fn publish_tag_pattern(&self) -> String {
        match (&self.tag, &self.source.target) {
            (Some(t), _) => t.clone(),
            (None, Target::Tag(t) | Target::Glob(t)) => t.clone(),
            (None, Target::Digest(d)) => digest_tag(d),
        }
    }
}

/// `sha256-<hex>`: the tag a digest-pinned input publishes by default.
pub fn digest_tag(digest: &Sha256Digest) -> String {
    format!("sha256-{}", digest.hex())
}

impl Wishlist {
    /// Reads, parses and validates the wishlist at `path`. Relative paths in
    /// it are resolved against the file's directory; the default event log
    /// is `<stem>.events.jsonl` beside it.
    pub fn load(path: impl AsRef<Path>) -> Result<Wishlist, WishlistError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| WishlistError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| UNNAMED.to_owned());
        parse_inner(&text, &base, &path.display().to_string(), &stem)
    }

    /// Parses and validates wishlist text. Relative paths are resolved
    /// against `base_dir`; the default event log is
    /// `base_dir/wishlist.events.jsonl`.
    pub fn parse(text: &str, base_dir: impl AsRef<Path>) -> Result<Wishlist, WishlistError> {
        parse_inner(text, base_dir.as_ref(), UNNAMED, UNNAMED)
    }

    /// The settings for registry `host` (`host[:port]`), if any.
    pub fn registry(&self, host: &str) -> Option<&RegistrySettings> {
        self.registries.get(host)
    }
}

// ---------------------------------------------------------------- platforms

/// Which platforms of an image to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform in the image index (`all`).
    All,
    /// These platforms (never empty, no duplicates).
    List(Vec<Platform>),
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platforms::All => f.write_str("all"),
            Platforms::List(l) => {
                for (i, p) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// An OCI platform, `os/architecture[/variant]`, e.g. `linux/arm/v7`.
pub use stratum_registry::Platform;

mod parse;
use parse::parse_inner;
mod pattern;
mod reference;
#[cfg(test)]
mod tests;

pub use pattern::{ThinPattern, ThinVars, THIN_PLACEHOLDERS};
use reference::{check_env_name, check_host, check_tag, globs_overlap};
pub use reference::{glob_matches, ImageRef, Target, SCHEME};
