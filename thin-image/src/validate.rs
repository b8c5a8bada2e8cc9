//! Value checks shared by the parser and the builder. Each returns
//! [`ThinImageError::Invalid`] naming the member (`layers[2].catalog`) and why.

use crate::ThinImageError;

type Result<T = ()> = std::result::Result<T, ThinImageError>;

/// Longest URL accepted in `repository.urls`.
pub const MAX_URL_LEN: usize = 2048;
/// Longest path accepted (`flat.path`, `layers[].path`, `prioritizedFiles[]`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component accepted.
pub const MAX_COMPONENT_LEN: usize = 255;

fn bad(field: &str, reason: impl Into<String>) -> ThinImageError {
    ThinImageError::invalid(field, reason)
}

/// Exactly 64 lowercase hex digits ([`stratum_catalog::is_hex64`]).
pub fn is_hex64(s: &str) -> bool {
    stratum_catalog::is_hex64(s.as_bytes())
}

/// An object id or key fingerprint: 64 lowercase hex digits.
pub fn check_hex64(field: &str, s: &str) -> Result {
    if is_hex64(s) {
        Ok(())
    } else {
        Err(bad(field, format!("{s:?} is not 64 lowercase hex digits")))
    }
}

/// `sha256:<64 lowercase hex>` ([`stratum_catalog::Sha256Digest`]); returns the hex.
pub fn check_digest<'a>(field: &str, s: &'a str) -> Result<&'a str> {
    match stratum_catalog::Sha256Digest::parse(s) {
        Ok(_) => Ok(&s[stratum_catalog::digest::SHA256_PREFIX.len()..]),
        Err(_) => Err(bad(
            field,
            format!("{s:?} is not a digest of the form sha256:<64 lowercase hex digits>"),
        )),
    }
}

/// An absolute, clean path: starts with `/`, no empty, `.` or `..`
/// component, no trailing `/`, no NUL, bounded lengths. `/` alone is refused.
pub fn check_clean_path(field: &str, p: &str) -> Result {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(bad(field, format!("{p:?} is not an absolute path")));
    };
    if rest.is_empty() {
        return Err(bad(field, "the path must name something below \"/\""));
    }
    if p.len() > MAX_PATH_LEN {
        return Err(bad(
            field,
            format!(
                "path is {} bytes, over the limit of {MAX_PATH_LEN}",
                p.len()
            ),
        ));
    }
    for comp in rest.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(bad(
                field,
                format!("{p:?} is not a clean path (empty, \".\" or \"..\" component)"),
            ));
        }
        if comp.contains('\0') {
            return Err(bad(field, format!("{p:?} contains a NUL byte")));
        }
        if comp.len() > MAX_COMPONENT_LEN {
            return Err(bad(
                field,
                format!("{p:?} has a component longer than {MAX_COMPONENT_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// `<prefix>/<hex[0..2]>/<hex>` (`prefix` is `/flat` or `/layers`): a clean
/// path under `prefix/` that is exactly the tree of `hex` (FORMAT.md §5).
pub fn check_tree_path(field: &str, p: &str, prefix: &str, hex: &str, what: &str) -> Result {
    check_clean_path(field, p)?;
    if !p.starts_with(prefix) || p.as_bytes().get(prefix.len()) != Some(&b'/') {
        return Err(bad(field, format!("{p:?} is not under {prefix}/")));
    }
    let expected = format!("{prefix}/{}/{hex}", &hex[..2]);
    if p != expected {
        return Err(bad(
            field,
            format!("{p:?} is not the tree of {what} sha256:{hex} (expected {expected:?})"),
        ));
    }
    Ok(())
}

/// An image name `<repository>:<tag>` as `/images` accepts it (FORMAT.md §5.5,
/// [`stratum_catalog::image_name`]).
pub fn check_image_name(field: &str, s: &str) -> Result {
    stratum_catalog::image_name::ImageName::parse(s)
        .map(drop)
        .map_err(|e| bad(field, format!("{s:?}: {}", e.reason)))
}

/// A repository name as the manifest carries it: 1–200 of `[A-Za-z0-9._-]`.
pub fn check_repository_name(field: &str, s: &str) -> Result {
    if !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{s:?} is not a repository name (1-200 characters of [A-Za-z0-9._-])"),
        ))
    }
}

/// A repository base URL: `http://` or `https://`, a host, an optional path;
/// printable ASCII only, no credentials, no query, no fragment.
pub fn check_url(field: &str, u: &str) -> Result {
    let err = |reason: &str| bad(field, format!("{u:?}: {reason}"));
    if u.len() > MAX_URL_LEN {
        return Err(err("URL too long"));
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| err("the URL must start with http:// or https://"))?;
    if !u.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            "the URL must be printable ASCII without spaces (percent-encode the rest)",
        ));
    }
    if u.contains(['?', '#']) {
        return Err(err("a repository URL has no query or fragment"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(err("the URL has no host"));
    }
    if host.contains('@') {
        return Err(err("credentials do not belong in a descriptor"));
    }
    Ok(())
}

/// A platform component (`os`, `architecture`, `variant`): 1–64 of `[A-Za-z0-9._-]`.
pub fn check_platform_part(field: &str, s: &str) -> Result {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{s:?} is not a platform component (1-64 characters of [A-Za-z0-9._-])"),
        ))
    }
}
