//! Where a repository lives: a local directory, or a prefix of an
//! S3-compatible bucket (`s3://bucket/prefix`). Parsed here and nowhere
//! else, so that every command accepts the same spellings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, LocalDir};
use crate::{Error, Result};

/// A repository's location, as given on a command line or in a wishlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on this machine.
    Local(PathBuf),
    /// A bucket of an S3-compatible object store, and a key prefix in it.
    S3(S3Location),
}

/// `s3://BUCKET/PREFIX`: the repository's files are the keys
/// `PREFIX/.stratum/manifest`, `PREFIX/data/ab/…` of `BUCKET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// `/`-separated, without a leading or trailing `/`; empty for the
    /// bucket's root.
    pub prefix: String,
}

impl RepoLocation {
    /// `s3://…` is a bucket; anything else is a local directory (relative
    /// paths stay relative).
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.strip_prefix("s3://") {
            Some(rest) => Ok(RepoLocation::S3(S3Location::parse(rest).map_err(
                |reason| Error::Path {
                    path: spec.to_owned(),
                    reason: format!("{reason} (expected s3://BUCKET[/PREFIX])"),
                },
            )?)),
            None => Ok(RepoLocation::Local(PathBuf::from(spec))),
        }
    }

    /// As [`RepoLocation::parse`] for a command-line path (a non-UTF-8 path
    /// is always a local directory).
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.to_str() {
            Some(s) => Self::parse(s),
            None => Ok(RepoLocation::Local(path.to_owned())),
        }
    }

    /// True for a location that is not a local directory.
    pub fn is_remote(&self) -> bool {
        !matches!(self, RepoLocation::Local(_))
    }

    /// The local directory, if that is what this is.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            RepoLocation::Local(p) => Some(p),
            RepoLocation::S3(_) => None,
        }
    }

    /// Opens the storage backend: [`LocalDir`], or the S3 backend with the
    /// process-wide [`S3Options::defaults`].
    pub fn open_backend(&self) -> Result<Arc<dyn Backend>> {
        match self {
            RepoLocation::Local(dir) => Ok(Arc::new(LocalDir::open(dir)?)),
            RepoLocation::S3(loc) => open_s3(loc, &S3Options::defaults()),
        }
    }
}

#[cfg(feature = "s3")]
fn open_s3(loc: &S3Location, opts: &S3Options) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::backend_s3::S3Backend::open(loc, opts)?))
}

#[cfg(not(feature = "s3"))]
fn open_s3(loc: &S3Location, _: &S3Options) -> Result<Arc<dyn Backend>> {
    Err(Error::Path {
        path: loc.to_string(),
        reason: "this build has no S3 support (stratum-catalog feature `s3`)".into(),
    })
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(p) => write!(f, "{}", p.display()),
            RepoLocation::S3(s) => s.fmt(f),
        }
    }
}

impl S3Location {
    fn parse(rest: &str) -> std::result::Result<Self, String> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("no bucket name".into());
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "bucket name {bucket:?} may hold only lowercase letters, digits, '-' and '.'"
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!(
                "prefix {prefix:?} has an empty, `.` or `..` component"
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of repository path `path` (e.g. `.stratum/manifest`).
    pub fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// How to reach an S3-compatible store. Every field left `None` falls back
/// to the usual AWS environment variables (see [`S3Options::resolved`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The endpoint URL, e.g. `https://s3.example.org` or
    /// `http://127.0.0.1:9000`; else `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT`; else AWS itself.
    pub endpoint: Option<String>,
    /// Else `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Else `AWS_ACCESS_KEY_ID` (and the other credential sources of the
    /// AWS SDKs: web identity, container credentials, instance metadata).
    pub access_key_id: Option<String>,
    /// Else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Else `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

static DEFAULTS: Mutex<Option<S3Options>> = Mutex::new(None);

impl S3Options {
    /// Sets the options [`RepoLocation::open_backend`] uses (the CLI's
    /// `--s3-endpoint` and `--s3-region`), once, before opening anything.
    pub fn set_defaults(opts: S3Options) {
        *DEFAULTS.lock().unwrap_or_else(|p| p.into_inner()) = Some(opts);
    }

    /// The options set by [`S3Options::set_defaults`], or none.
    pub fn defaults() -> S3Options {
        DEFAULTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// The options with every unset field taken from the environment, and
    /// the region defaulted to `us-east-1`.
    pub fn resolved(&self) -> S3Options {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        S3Options {
            endpoint: self
                .endpoint
                .clone()
                .or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"])),
            region: self
                .region
                .clone()
                .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
                .or_else(|| Some("us-east-1".into())),
            access_key_id: self
                .access_key_id
                .clone()
                .or_else(|| env(&["AWS_ACCESS_KEY_ID"])),
            secret_access_key: self
                .secret_access_key
                .clone()
                .or_else(|| env(&["AWS_SECRET_ACCESS_KEY"])),
            session_token: self
                .session_token
                .clone()
                .or_else(|| env(&["AWS_SESSION_TOKEN"])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            RepoLocation::parse("repo/dir").unwrap(),
            RepoLocation::Local("repo/dir".into())
        );
        let s3 = |b: &str, p: &str| {
            RepoLocation::S3(S3Location {
                bucket: b.into(),
                prefix: p.into(),
            })
        };
        assert_eq!(RepoLocation::parse("s3://bkt").unwrap(), s3("bkt", ""));
        assert_eq!(RepoLocation::parse("s3://bkt/").unwrap(), s3("bkt", ""));
        assert_eq!(
            RepoLocation::parse("s3://bkt/a/b/").unwrap(),
            s3("bkt", "a/b")
        );
        assert_eq!(
            RepoLocation::parse("s3://bkt/a/b").unwrap().to_string(),
            "s3://bkt/a/b"
        );
        for bad in [
            "s3://",
            "s3:///x",
            "s3://Bkt/x",
            "s3://b/a//c",
            "s3://b/../x",
        ] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad}");
        }
        let RepoLocation::S3(l) = s3("b", "p/q") else {
            unreachable!()
        };
        assert_eq!(l.key(".stratum/manifest"), "p/q/.stratum/manifest");
    }
}
