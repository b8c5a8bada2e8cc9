//! Wishlist inputs: `docker://HOST[:PORT]/REPO[:TAG|:GLOB|@sha256:…]`, and
//! the tag globs (`*`, `?`) they may use.

use std::fmt;
use std::str::FromStr;

use stratum_catalog::Sha256Digest;

use super::WishlistError;

// ---------------------------------------------------------------- references

/// The scheme of every reference.
pub const SCHEME: &str = "docker://";

/// A registry image reference, `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`,
/// whose tag may be a glob. No tag means `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// `host[:port]`, lowercase, e.g. `registry.example.org` or `127.0.0.1:5000`.
    pub host: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    pub target: Target,
}

/// What an [`ImageRef`] selects in its repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One tag.
    Tag(String),
    /// Every tag that matches this glob (`*`, `?`).
    Glob(String),
    /// One manifest, `sha256:<64 hex>`.
    Digest(Sha256Digest),
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, WishlistError> {
        let bad = |reason: String| WishlistError::Reference {
            reference: s.to_owned(),
            reason,
        };
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| {
            bad("expected docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]".to_owned())
        })?;
        let (host, path) = rest.split_once('/').ok_or_else(|| {
            bad("expected docker://HOST[:PORT]/REPO…: no repository after the host".to_owned())
        })?;
        check_host(host).map_err(bad)?;
        let (repository, target) = if let Some((repo, digest)) = path.split_once('@') {
            if repo.contains(':') {
                return Err(bad("give either a tag or a digest, not both".to_owned()));
            }
            (repo, Target::Digest(parse_digest(digest).map_err(bad)?))
        } else {
            match path.rsplit_once(':') {
                Some((repo, tag)) => {
                    let target = if tag.contains(['*', '?']) {
                        check_glob(tag).map_err(bad)?;
                        Target::Glob(tag.to_owned())
                    } else {
                        check_tag(tag).map_err(bad)?;
                        Target::Tag(tag.to_owned())
                    };
                    (repo, target)
                }
                None => (path, Target::Tag("latest".to_owned())),
            }
        };
        check_repository(repository).map_err(bad)?;
        if host.len() + 1 + repository.len() > 255 {
            return Err(bad("HOST/REPO is longer than 255 characters".to_owned()));
        }
        Ok(ImageRef {
            host: host.to_owned(),
            repository: repository.to_owned(),
            target,
        })
    }

    /// Whether the tag is a glob to expand through the registry's tag list.
    pub fn is_glob(&self) -> bool {
        matches!(self.target, Target::Glob(_))
    }

    /// The tag (or tag glob), if the reference is not pinned by digest.
    pub fn tag(&self) -> Option<&str> {
        match &self.target {
            Target::Tag(t) | Target::Glob(t) => Some(t),
            Target::Digest(_) => None,
        }
    }

    pub fn digest(&self) -> Option<Sha256Digest> {
        match &self.target {
            Target::Digest(d) => Some(*d),
            _ => None,
        }
    }

    /// The same repository at another tag (e.g. one a glob expanded to).
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            host: self.host.clone(),
            repository: self.repository.clone(),
            target: Target::Tag(tag.to_owned()),
        }
    }

    /// The default publish repository name: `<host[:port]>/<repo>`.
    pub fn default_name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    /// `HOST[:PORT]/REPO[:TAG|@DIGEST]`, without the scheme.
    pub fn without_scheme(&self) -> String {
        let s = self.to_string();
        s.strip_prefix(SCHEME).map(str::to_owned).unwrap_or(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.host, self.repository)?;
        match &self.target {
            Target::Tag(t) | Target::Glob(t) => write!(f, ":{t}"),
            Target::Digest(d) => write!(f, "@{d}"),
        }
    }
}

impl FromStr for ImageRef {
    type Err = WishlistError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// `host[:port]`. Like Docker, a host must contain a `.` or a port, or be
/// `localhost`, so that it is not mistaken for a repository. No IPv6.
pub(super) fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the registry host is missing".to_owned());
    }
    if host.starts_with('[') {
        return Err(format!(
            "{host:?}: IPv6 addresses are not supported; use a host name"
        ));
    }
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !valid {
            return Err(format!(
                "the port {p:?} of host {host:?} is not a number from 1 to 65535"
            ));
        }
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("write the host {host:?} in lowercase"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a host name: dot-separated labels of [a-z0-9-] \
             (IPv6 addresses are not supported)"
        ));
    }
    if port.is_none() && !name.contains('.') && name != "localhost" {
        return Err(format!(
            "{host:?} is not a registry host (it needs a '.', a port or to be localhost); \
             the host cannot be left out, e.g. docker://docker.io/library/busybox:latest"
        ));
    }
    Ok(())
}

/// Docker's repository grammar: `/`-separated components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("the repository is missing after the host".to_owned());
    }
    if repo.contains(['*', '?']) {
        return Err("only the tag may be a glob, not the repository".to_owned());
    }
    for comp in repo.split('/') {
        if !repository_component_ok(comp) {
            return Err(format!(
                "repository component {comp:?} is not of [a-z0-9] separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn repository_component_ok(comp: &str) -> bool {
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if alnum(f) && alnum(l) => {}
        _ => return false,
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or one or more `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(super) fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not 1-128 characters of [A-Za-z0-9_.-] starting with a letter, digit or '_'"
        ))
    }
}

/// A tag glob: the tag's characters plus `*` and `?`.
fn check_glob(glob: &str) -> Result<(), String> {
    let ok = !glob.is_empty()
        && glob.len() <= 128
        && !glob.starts_with(['.', '-'])
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag glob {glob:?} is not 1-128 characters of [A-Za-z0-9_.-*?] \
             not starting with '.' or '-'"
        ))
    }
}

/// `sha256:` and 64 lowercase hex digits ([`Sha256Digest::parse`]).
fn parse_digest(d: &str) -> Result<Sha256Digest, String> {
    Sha256Digest::parse(d).map_err(|e| {
        if e.problem.is_algorithm() {
            format!("digest {d:?}: only sha256 digests are supported")
        } else {
            format!("digest {d:?} is not sha256: and 64 lowercase hex digits")
        }
    })
}

pub(super) fn check_env_name(v: &str) -> Result<(), String> {
    let ok = v
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ))
    }
}

// ---------------------------------------------------------------- globs

/// Whether `text` matches `pattern`, where `*` matches any run of characters
/// (also none) and `?` exactly one; every other character matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it now stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and retry.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether some string matches both globs (a literal tag is a glob without
/// `*` or `?`). Reachability over pairs of positions in the two patterns.
pub(super) fn globs_overlap(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (la, lb) = (a.len(), b.len());
    let mut seen = vec![false; (la + 1) * (lb + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let k = i * (lb + 1) + j;
        if seen[k] {
            continue;
        }
        seen[k] = true;
        if i == la && j == lb {
            return true;
        }
        // A `*` may match nothing.
        if i < la && a[i] == '*' {
            stack.push((i + 1, j));
        }
        if j < lb && b[j] == '*' {
            stack.push((i, j + 1));
        }
        // Both consume one character, if some character fits both.
        if i < la && j < lb {
            let (x, y) = (a[i], b[j]);
            let fits = x == '*' || y == '*' || x == '?' || y == '?' || x == y;
            if fits {
                let ni = if x == '*' { i } else { i + 1 };
                let nj = if y == '*' { j } else { j + 1 };
                if (ni, nj) != (i, j) {
                    stack.push((ni, nj));
                }
            }
        }
    }
    false
}
