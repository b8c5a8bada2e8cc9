//! Image names under `/images` (FORMAT.md §5.5): `NAME:TAG`, where NAME is
//! one or more `/`-separated components, and TAG may carry the platform
//! slug of a per-platform image (`+os-arch[-variant]`). Validated strictly,
//! because each becomes a directory or symlink of the namespace; the
//! publisher and thin-image descriptors check names here.

/// A name that is not an image name, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image name {name:?}: {reason}")]
pub struct ImageNameError {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageName {
    pub repository: String,
    pub tag: String,
}

impl ImageName {
    pub fn parse(s: &str) -> Result<Self, ImageNameError> {
        let bad = |reason: &str| ImageNameError {
            name: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (repo, tag) = match s.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => return Err(bad("expected NAME:TAG")),
        };
        // A per-platform name carries `+os-arch[-variant]` after the tag.
        let (tag_only, slug) = match tag.split_once('+') {
            Some((t, s)) => (t, Some(s)),
            None => (tag, None),
        };
        if let Some(slug) = slug {
            if slug.is_empty()
                || slug.len() > 64
                || !slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            {
                return Err(bad(
                    "the platform after '+' must be 1-64 characters of [a-z0-9._-], e.g. linux-arm64",
                ));
            }
        }
        let tag_full = tag;
        let tag = tag_only;
        if tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            || tag.starts_with(['.', '-'])
        {
            return Err(bad(
                "the tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            ));
        }
        if repo.is_empty() || repo.len() > 255 {
            return Err(bad("the name must be 1-255 characters"));
        }
        for (i, comp) in repo.split('/').enumerate() {
            // A registry host may carry a port: `host:5000/repo:tag`.
            let allowed = |b: u8| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"._-".contains(&b)
                    || (i == 0 && b == b':')
            };
            if comp.is_empty() || comp.starts_with('.') || !comp.bytes().all(allowed) {
                return Err(bad(
                    "each '/'-separated part of the name must be non-empty, of [a-z0-9._-], not starting with '.'",
                ));
            }
        }
        Ok(ImageName {
            repository: repo.to_owned(),
            tag: tag_full.to_owned(),
        })
    }

    /// `/images/<repository>/<tag>`, as path components below `/images`.
    pub fn components(&self) -> Vec<Vec<u8>> {
        self.repository
            .split('/')
            .chain(std::iter::once(self.tag.as_str()))
            .map(|c| c.as_bytes().to_vec())
            .collect()
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let n = ImageName::parse("local/app:1.0").unwrap();
        assert_eq!(
            (n.repository.as_str(), n.tag.as_str()),
            ("local/app", "1.0")
        );
        assert_eq!(
            n.components(),
            vec![b"local".to_vec(), b"app".to_vec(), b"1.0".to_vec()]
        );
        let n = ImageName::parse("host:5000/a/b:t").unwrap();
        assert_eq!(
            (n.repository.as_str(), n.tag.as_str()),
            ("host:5000/a/b", "t")
        );
        assert!(
            ImageName::parse("a/b:c/d:t").is_err(),
            "':' only in the registry part"
        );
        for bad in [
            "app", "app:", ":t", "a//b:t", "../x:t", "a/.x:t", "A:t", "a:t/x", "a:.t",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }
}
