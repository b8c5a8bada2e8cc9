//! OCI platforms (`os/architecture[/variant]`), how the host maps to one,
//! and the platform slug of per-platform image names (FORMAT.md §5.5,
//! `NAME:TAG+os-arch[-variant]`). The one `Platform` of stratum: the
//! registry client, the publisher, thin-image descriptors (as a JSON
//! object, docs/THIN-IMAGE.md) and the mount client use it.

use std::fmt;
use std::str::FromStr;

/// An OCI platform such as `linux/amd64` or `linux/arm/v7`. In JSON, an
/// object `{"os", "architecture", "variant"?}` (a `null` variant is
/// refused).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub variant: Option<String>,
}

/// For an optional member: absent is `None`, present must be a value.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A platform string that is not `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {platform:?}: {reason}")]
pub struct PlatformError {
    pub platform: String,
    pub reason: String,
}

impl Platform {
    /// The platform this process runs on, in OCI (Go) names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// Builds a platform from the fields of an index entry or a config.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// Whether an image built for `other` serves a request for `self`.
    /// A request without a variant takes any variant; `arm64` treats a
    /// missing variant as `v8`, its only one in practice.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        self.variant.is_none() || norm(self) == norm(other)
    }

    /// The same platform: kept for the callers of the time when descriptors
    /// and the registry client had a platform type each.
    pub fn to_oci(&self) -> Platform {
        self.clone()
    }

    /// `os-arch[-variant]`: the form used in per-platform image names
    /// (FORMAT.md §5.5).
    pub fn slug(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}-{}-{v}", self.os, self.architecture),
            None => format!("{}-{}", self.os, self.architecture),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| PlatformError {
            platform: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64"));
        }
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(bad("each part must be 1-32 characters of [a-z0-9._-]"));
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_display() {
        for s in ["linux/amd64", "linux/arm/v7", "windows/amd64"] {
            assert_eq!(s.parse::<Platform>().unwrap().to_string(), s);
        }
        for bad in ["linux", "linux/", "a/b/c/d", "Linux/amd64", "linux/am d64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        assert_eq!(
            "linux/arm/v7".parse::<Platform>().unwrap().slug(),
            "linux-arm-v7"
        );
    }

    #[test]
    fn matching() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert_eq!(Platform::host().os, std::env::consts::OS);
    }
}
