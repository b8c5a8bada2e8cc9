//! Image references: `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
//!
//! The grammar is Docker's (the `docker://` prefix is optional, a name
//! without a host means Docker Hub, a reference without tag or digest means
//! `:latest`). Only sha256 digests are accepted, since every digest we check
//! is a sha256.

use std::fmt;
use std::str::FromStr;

use crate::error::RegistryError;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_client::Reference,
}

impl Reference {
    /// Parses `docker://…` or a bare `HOST/REPO:TAG`.
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let bare = s.strip_prefix("docker://").unwrap_or(s);
        let bad = |reason: String| RegistryError::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        if bare.is_empty() {
            return Err(bad(
                "empty (expected docker://HOST[:PORT]/REPO[:TAG|@sha256:…])".into(),
            ));
        }
        let inner: oci_client::Reference = bare.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(d) = inner.digest() {
            if stratum_catalog::Sha256Digest::parse(d).is_err() {
                return Err(bad(format!(
                    "digest {d:?} is not sha256: and 64 lowercase hex digits"
                )));
            }
        }
        Ok(Reference { inner })
    }

    /// The registry as written (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The host requests go to (`index.docker.io` for Docker Hub).
    pub fn resolve_registry(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The same repository at another tag (no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            inner: oci_client::Reference::with_tag(
                self.registry().to_owned(),
                self.repository().to_owned(),
                tag.to_owned(),
            ),
        }
    }

    /// The same repository pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: &str) -> Reference {
        let inner = match self.tag() {
            Some(tag) => oci_client::Reference::with_tag_and_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                tag.to_owned(),
                digest.to_owned(),
            ),
            None => oci_client::Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_owned(),
            ),
        };
        Reference { inner }
    }

    /// `HOST/REPO`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}", self.name())?;
        if let Some(t) = self.tag() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = self.digest() {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_tags_digests() {
        let r = Reference::parse("docker://127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/team/app:1.0");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        let hub = Reference::parse("docker://busybox").unwrap();
        assert_eq!(hub.registry(), "docker.io");
        assert_eq!(hub.repository(), "library/busybox");
        assert_eq!(hub.tag(), Some("latest"));
        let pinned = hub.with_digest(&d);
        assert_eq!(
            pinned.to_string(),
            format!("docker://docker.io/library/busybox:latest@{d}")
        );
        assert_eq!(Reference::parse(&pinned.to_string()).unwrap(), pinned);
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "docker://",
            "docker://Host/UPPER:1",
            "docker://h:5000/app@sha512:abcd",
            "docker://h:5000/app@sha256:ABCDEF",
            "docker://h:5000/app:bad tag",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }
}
