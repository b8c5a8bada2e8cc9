//! The thin-image naming pattern (`thin_images.pattern`), in the spirit of
//! CernVM-FS DUCC's `output_format`.

use std::fmt;

use super::{ImageRef, Target, WishlistError, SCHEME};

// ---------------------------------------------------------------- thin pattern

/// The placeholders of [`ThinPattern`].
pub const THIN_PLACEHOLDERS: &[&str] = &[
    "registry",
    "repository",
    "name",
    "tag",
    "digest",
    "digest_hex",
    "platform",
];

/// Values for [`ThinPattern::render`].
#[derive(Clone, Copy, Debug)]
pub struct ThinVars<'a> {
    /// The source registry, `host[:port]`.
    pub registry: &'a str,
    /// The source repository path, e.g. `library/busybox`.
    pub repository: &'a str,
    /// The published repository name (below `/images`).
    pub name: &'a str,
    /// The published tag.
    pub tag: &'a str,
    /// The image's manifest digest, `sha256:<hex>`.
    pub digest: &'a str,
    /// The platform, `os/arch[/variant]`; rendered as `os-arch[-variant]`.
    pub platform: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(&'static str),
}

/// The reference thin images are pushed to, e.g.
/// `registry.example.org/thin/{repository}:{tag}`. A leading `docker://`
/// is allowed and kept out of the rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinPattern {
    text: String,
    parts: Vec<Part>,
}

impl ThinPattern {
    pub fn parse(text: &str) -> Result<ThinPattern, WishlistError> {
        let bad = |reason: String| WishlistError::Pattern {
            pattern: text.to_owned(),
            reason,
        };
        let body = text.strip_prefix(SCHEME).unwrap_or(text);
        let mut parts = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Text(rest[..i].to_owned()));
                    }
                    if rest[i..].starts_with('}') {
                        return Err(bad("a '}' without its '{'".to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| bad("a '{' without its '}'".to_owned()))?;
                    let name = &after[..end];
                    if name.contains('{') {
                        return Err(bad("a '{' without its '}'".to_owned()));
                    }
                    let var = THIN_PLACEHOLDERS
                        .iter()
                        .find(|p| **p == name)
                        .ok_or_else(|| {
                            bad(format!(
                                "unknown placeholder {{{name}}}; the placeholders are {}",
                                THIN_PLACEHOLDERS
                                    .iter()
                                    .map(|p| format!("{{{p}}}"))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            ))
                        })?;
                    parts.push(Part::Var(var));
                    rest = &after[end + 1..];
                }
            }
        }
        let pattern = ThinPattern {
            text: text.to_owned(),
            parts,
        };
        let sample = ThinVars {
            registry: "registry.example.org",
            repository: "library/app",
            name: "registry.example.org/library/app",
            tag: "1.0",
            digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            platform: "linux/amd64",
        };
        pattern
            .check_rendered(&pattern.render(&sample))
            .map_err(bad)?;
        Ok(pattern)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Fills in the placeholders: `HOST[:PORT]/REPO:TAG`, without a scheme.
    pub fn render(&self, vars: &ThinVars) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => match *v {
                    "registry" => out.push_str(vars.registry),
                    "repository" => out.push_str(vars.repository),
                    "name" => out.push_str(vars.name),
                    "tag" => out.push_str(vars.tag),
                    "digest" => out.push_str(vars.digest),
                    "digest_hex" => out.push_str(
                        vars.digest
                            .split_once(':')
                            .map(|(_, h)| h)
                            .unwrap_or(vars.digest),
                    ),
                    "platform" => out.push_str(&vars.platform.replace('/', "-")),
                    _ => {}
                },
            }
        }
        out
    }

    /// Whether the pattern uses `{digest}` or `{digest_hex}`.
    pub fn uses_digest(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var("digest" | "digest_hex")))
    }

    /// Whether the pattern uses `placeholder` (without braces).
    pub fn uses(&self, placeholder: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if *v == placeholder))
    }

    /// A rendering must be a reference with a tag: thin images are pushed by tag.
    pub(super) fn check_rendered(&self, rendered: &str) -> Result<(), String> {
        let hint = if self.uses("digest") {
            " ({digest} has a ':'; in a tag, use {digest_hex})"
        } else {
            ""
        };
        let r = ImageRef::parse(&format!("{SCHEME}{rendered}")).map_err(|e| match e {
            WishlistError::Reference { reason, .. } => {
                format!("renders to {rendered:?}: {reason}{hint}")
            }
            other => other.to_string(),
        })?;
        match &r.target {
            Target::Tag(_)
                if rendered
                    .rsplit_once(':')
                    .is_some_and(|(_, t)| !t.contains('/')) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "renders to {rendered:?}, which has no tag: thin images are pushed by tag \
                 (end the pattern with e.g. :{{tag}})"
            )),
        }
    }
}

impl fmt::Display for ThinPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
