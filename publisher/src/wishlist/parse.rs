//! Parsing a wishlist: the raw YAML shape (serde, with line spans), and the
//! checks that turn it into a [`Wishlist`] or a [`WishlistError`] naming
//! the field, the entry and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::*;

// ---------------------------------------------------------------- raw YAML shape

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWishlist {
    version: Spanned<u64>,
    repository: PathBuf,
    signing_key: PathBuf,
    #[serde(default)]
    platforms: Option<Spanned<RawPlatforms>>,
    #[serde(default)]
    registries: BTreeMap<String, RegistrySettings>,
    #[serde(default)]
    thin_images: Option<RawThin>,
    #[serde(default)]
    event_log: Option<PathBuf>,
    images: Vec<Spanned<RawImage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThin {
    pattern: Spanned<String>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageEntry {
    source: String,
    #[serde(default)]
    platforms: Option<RawPlatforms>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
    #[serde(default)]
    prefetch: Option<PathBuf>,
}

/// An `images` entry: a reference string, or a map.
enum RawImage {
    Plain(String),
    Full(RawImageEntry),
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawImage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference (docker://HOST/REPO:TAG) or a map with `source`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawImage, E> {
                Ok(RawImage::Plain(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawImage, A::Error> {
                RawImageEntry::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawImage::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `platforms`: a list of `os/arch[/variant]`, or one such string, or `all`.
struct RawPlatforms(Vec<String>);

impl<'de> Deserialize<'de> for RawPlatforms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPlatforms;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of platforms (os/arch[/variant]) or `all`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPlatforms, E> {
                Ok(RawPlatforms(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPlatforms, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(RawPlatforms(out))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- parse + validate

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn field(
        &self,
        line: Option<u64>,
        field: impl Into<String>,
        reason: impl fmt::Display,
    ) -> WishlistError {
        WishlistError::Field {
            origin: self.origin.to_owned(),
            line,
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// The YAML reader's error, as `ORIGIN:LINE:COLUMN: MESSAGE (in "LINE TEXT")`:
/// type errors do not name the field, the quoted line does.
fn yaml_error(origin: &str, text: &str, e: &serde_saphyr::Error) -> WishlistError {
    let loc = e.location();
    let line = loc.map(|l| l.line()).filter(|&l| l > 0);
    let column = loc.map(|l| l.column()).filter(|&c| c > 0);
    let mut message = e.to_string();
    // A hint for the programmer, not for whoever edits the wishlist.
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        let rest = message[i..]
            .find(" at line ")
            .map(|j| message[i + j..].to_owned());
        message.truncate(i);
        message.push_str(&rest.unwrap_or_default());
    }
    if let (Some(l), Some(c)) = (line, column) {
        if let Some(m) = message.strip_suffix(&format!(" at line {l}, column {c}")) {
            message = m.to_owned();
        }
        let src = usize::try_from(l - 1)
            .ok()
            .and_then(|i| text.lines().nth(i))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some(src) = src {
            let src: String = src.chars().take(80).collect();
            message = format!("{message} (in {src:?})");
        }
    }
    WishlistError::Yaml {
        origin: origin.to_owned(),
        line,
        column,
        message,
    }
}

fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    let l = s.referenced.line();
    (l > 0).then_some(l)
}

pub(super) fn parse_inner(
    text: &str,
    base: &Path,
    origin: &str,
    stem: &str,
) -> Result<Wishlist, WishlistError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let raw: RawWishlist = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| yaml_error(origin, text, &e))?;
    let cx = Ctx { origin };

    if raw.version.value != WISHLIST_VERSION {
        return Err(cx.field(
            line_of(&raw.version),
            "version",
            format!(
                "unsupported wishlist version {}; this stratum reads version {WISHLIST_VERSION}",
                raw.version.value
            ),
        ));
    }
    let resolve = |field: &str, p: &Path| -> Result<PathBuf, WishlistError> {
        if p.as_os_str().is_empty() {
            return Err(cx.field(None, field, "must not be empty"));
        }
        Ok(base.join(p))
    };
    // `s3://BUCKET/PREFIX` is a location, not a path to resolve.
    let repository = if raw
        .repository
        .to_str()
        .is_some_and(|r| r.starts_with("s3://"))
    {
        raw.repository.clone()
    } else {
        resolve("repository", &raw.repository)?
    };
    let signing_key = resolve("signing_key", &raw.signing_key)?;
    let event_log = match &raw.event_log {
        Some(p) => resolve("event_log", p)?,
        None => base.join(format!("{stem}{EVENT_LOG_SUFFIX}")),
    };

    let platforms = match &raw.platforms {
        Some(p) => parse_platforms(&p.value).map_err(|r| cx.field(line_of(p), "platforms", r))?,
        None => Platforms::List(vec![Platform::host()]),
    };

    let mut registries = BTreeMap::new();
    for (host, settings) in raw.registries {
        let field = format!("registries.{host:?}");
        check_host(&host).map_err(|r| cx.field(None, &field, r))?;
        let mut s = settings;
        if let Some(ca) = &s.ca_file {
            if s.insecure {
                return Err(cx.field(
                    None,
                    &field,
                    "`insecure` (plain HTTP) and `ca_file` (TLS) exclude each other",
                ));
            }
            s.ca_file = Some(resolve(&format!("{field}.ca_file"), ca)?);
        }
        for (key, var) in [
            ("username_env", &s.username_env),
            ("password_env", &s.password_env),
        ] {
            if let Some(v) = var {
                check_env_name(v).map_err(|r| cx.field(None, format!("{field}.{key}"), r))?;
            }
        }
        if s.username_env.is_some() != s.password_env.is_some() {
            return Err(cx.field(
                None,
                &field,
                "give both `username_env` and `password_env`, or neither",
            ));
        }
        registries.insert(host, s);
    }

    let mut images = Vec::with_capacity(raw.images.len());
    for (index, entry) in raw.images.iter().enumerate() {
        let mut input = parse_input(&cx, index, entry, &platforms)?;
        if let RawImage::Full(RawImageEntry {
            prefetch: Some(p), ..
        }) = &entry.value
        {
            input.prefetch = Some(resolve(&format!("images[{index}].prefetch"), p)?);
        }
        images.push(input);
    }
    check_conflicts(&cx, &raw.images, &images)?;

    let thin_images = match &raw.thin_images {
        Some(t) => {
            let line = line_of(&t.pattern);
            let pattern = ThinPattern::parse(&t.pattern.value)
                .map_err(|e| cx.field(line, "thin_images.pattern", e))?;
            check_thin_targets(&cx, line, &pattern, &images)?;
            for (i, u) in t.urls.iter().enumerate() {
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.contains(char::is_whitespace)
                {
                    return Err(cx.field(
                        line,
                        format!("thin_images.urls[{i}]"),
                        format!("{u:?} is not an http:// or https:// URL"),
                    ));
                }
            }
            Some(ThinImages {
                pattern,
                urls: t.urls.clone(),
            })
        }
        None => None,
    };

    Ok(Wishlist {
        origin: origin.to_owned(),
        repository,
        signing_key,
        platforms,
        registries,
        thin_images,
        event_log,
        images,
    })
}

fn parse_input(
    cx: &Ctx,
    index: usize,
    entry: &Spanned<RawImage>,
    defaults: &Platforms,
) -> Result<Input, WishlistError> {
    let line = line_of(entry);
    let (source_text, platforms, name, prefix, raw_outputs) = match &entry.value {
        RawImage::Plain(s) => (s, None, None, format!("images[{index}]"), None),
        RawImage::Full(e) => (
            &e.source,
            e.platforms.as_ref(),
            e.name.as_deref(),
            format!("images[{index}].source"),
            e.outputs.as_deref(),
        ),
    };
    let outputs = parse_outputs(raw_outputs.unwrap_or_default())
        .map_err(|r| cx.field(line, format!("images[{index}].outputs"), r))?;
    let has_name = name.is_some();
    let source = ImageRef::parse(source_text).map_err(|e| cx.field(line, &prefix, e))?;
    let platforms = match platforms {
        Some(p) => parse_platforms(p)
            .map_err(|r| cx.field(line, format!("images[{index}].platforms"), r))?,
        None => defaults.clone(),
    };
    let (name, tag) = match name {
        None => (source.default_name(), None),
        Some(n) => {
            let field = format!("images[{index}].name");
            let (repo, tag) = split_name(n);
            if let Some(t) = tag {
                if source.is_glob() {
                    return Err(cx.field(
                        line,
                        field,
                        format!(
                            "{n:?} fixes the tag, but the source selects many tags ({}); \
                             give the name without a tag",
                            source
                        ),
                    ));
                }
                check_tag(t).map_err(|r| cx.field(line, &field, r))?;
            }
            (repo.to_owned(), tag.map(str::to_owned))
        }
    };
    let input = Input {
        index,
        source,
        platforms,
        name,
        tag,
        outputs,
        prefetch: None,
    };
    // The published name must be a valid `/images` name. For a glob, check
    // the repository part with a stand-in tag.
    let tag = input.publish_tag().unwrap_or_else(|| "t".to_owned());
    let field = if has_name {
        format!("images[{index}].name")
    } else {
        prefix
    };
    ImageName::parse(&format!("{}:{tag}", input.name)).map_err(|e| cx.field(line, field, e))?;
    Ok(input)
}

/// Splits `REPO[:TAG]` the way `/images` names are split: a `:` after the
/// last `/` starts the tag (a `:` before it is a registry port).
fn split_name(n: &str) -> (&str, Option<&str>) {
    match n.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (n, None),
    }
}

/// Two inputs whose names could publish the same `NAME:TAG`.
fn check_conflicts(
    cx: &Ctx,
    raw: &[Spanned<RawImage>],
    inputs: &[Input],
) -> Result<(), WishlistError> {
    for (j, b) in inputs.iter().enumerate() {
        for a in &inputs[..j] {
            if a.name != b.name {
                continue;
            }
            let (pa, pb) = (a.publish_tag_pattern(), b.publish_tag_pattern());
            if globs_overlap(&pa, &pb) {
                let reason = if a.is_glob() || b.is_glob() {
                    format!(
                        "both may publish under {}: tags {pa:?} and {pb:?} overlap",
                        b.name
                    )
                } else {
                    format!("both publish {}:{pb}", b.name)
                };
                return Err(WishlistError::Conflict {
                    origin: cx.origin.to_owned(),
                    line: raw.get(j).and_then(line_of),
                    field: b.label(),
                    other: a.label(),
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// The pattern must render every input to a valid, distinct thin-image
/// reference. Each input is rendered with its own registry, repository,
/// name, tag (a stand-in for a glob) and platforms; digests are stand-ins.
fn check_thin_targets(
    cx: &Ctx,
    line: Option<u64>,
    pattern: &ThinPattern,
    inputs: &[Input],
) -> Result<(), WishlistError> {
    const STAND_IN_DIGEST: &str =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for input in inputs {
        let tag = input.publish_tag().unwrap_or_else(|| "1.0".to_owned());
        let platforms: Vec<String> = match &input.platforms {
            Platforms::All => vec!["linux/amd64".to_owned()],
            Platforms::List(l) => l.iter().map(Platform::to_string).collect(),
        };
        for platform in &platforms {
            let vars = ThinVars {
                registry: &input.source.host,
                repository: &input.source.repository,
                name: &input.name,
                tag: &tag,
                digest: STAND_IN_DIGEST,
                platform,
            };
            let rendered = pattern.render(&vars);
            pattern.check_rendered(&rendered).map_err(|r| {
                cx.field(
                    line,
                    "thin_images.pattern",
                    format!("for {}: {r}", input.label()),
                )
            })?;
            // Distinct inputs must not push to the same place (globs and
            // digest placeholders make names distinct per image at run time).
            if input.is_glob() || pattern.uses_digest() {
                continue;
            }
            if let Some(&other) = seen.get(&rendered) {
                if other != input.index {
                    return Err(WishlistError::Conflict {
                        origin: cx.origin.to_owned(),
                        line,
                        field: input.label(),
                        other: format!("images[{other}]"),
                        reason: format!("thin_images.pattern pushes both to {rendered}"),
                    });
                }
            }
            seen.insert(rendered, input.index);
        }
    }
    Ok(())
}

/// `outputs`: a list of extra flat-tree outputs; `apptainer` is the only
/// one, given at most once.
fn parse_outputs(raw: &[String]) -> Result<crate::publish::Outputs, String> {
    let mut out = crate::publish::Outputs::default();
    for o in raw {
        match o.as_str() {
            crate::apptainer::OUTPUT if !out.apptainer => out.apptainer = true,
            crate::apptainer::OUTPUT => return Err(format!("{o:?} is listed twice")),
            _ => {
                return Err(format!(
                    "unknown output {o:?} (the outputs are: {})",
                    crate::apptainer::OUTPUT
                ))
            }
        }
    }
    Ok(out)
}

fn parse_platforms(raw: &RawPlatforms) -> Result<Platforms, String> {
    if raw.0.is_empty() {
        return Err("the list is empty (leave the field out for the default)".to_owned());
    }
    if raw.0.iter().any(|p| p == "all") {
        if raw.0.len() > 1 {
            return Err("`all` stands alone: it already means every platform".to_owned());
        }
        return Ok(Platforms::All);
    }
    let mut out: Vec<Platform> = Vec::with_capacity(raw.0.len());
    for s in &raw.0 {
        let p = s.parse::<Platform>().map_err(|e| e.to_string())?;
        if out.contains(&p) {
            return Err(format!("{p} is listed twice"));
        }
        out.push(p);
    }
    Ok(Platforms::List(out))
}
