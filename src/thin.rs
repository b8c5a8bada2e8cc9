//! `stratum thin` and `stratum publish --thin-dir`: the thin-image descriptors
//! (`docs/THIN-IMAGE.md`) of published images, built by `stratum-thin-image`
//! from the verified manifest and the `/images` catalog of the current revision.
//!
//! `stratum thin push` pushes them to an OCI registry as artifacts (one per
//! platform, under an image index when the image was published for several),
//! and `mount --thin docker://…` / `pull --thin docker://…` read them back
//! ([`load_thin`]), for this host's platform.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::ImageRecord;
use stratum_catalog::manifest::{self, Manifest};
use stratum_catalog::namespace::{Namespace, StoreLoader};
use stratum_catalog::Store;
use stratum_publisher::{PublishOutcome, Repository};
use stratum_registry::{
    sha256_digest, Artifact, ArtifactListing, IndexEntry, Platform, Reference, Registry,
};
use stratum_thin_image::{
    default_urls, descriptor_file_name, validate, ThinImage, VerifyingKey, ANNOTATION_CREATED,
    ANNOTATION_REF_NAME, ARTIFACT_TYPE, MEDIA_TYPE,
};

use crate::registry_args::RegistryArgs;

/// Where `stratum init --url` records the repository's default URLs, one per line.
pub use stratum_catalog::layout::URLS_PATH;

/// Arguments of `stratum thin`: `stratum thin REPO --image NAME:TAG …` writes a
/// descriptor, `stratum thin push …` pushes it to a registry.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ThinArgs {
    #[command(subcommand)]
    command: Option<ThinCommand>,
    /// The repository directory.
    #[arg(required = true)]
    repo: Option<PathBuf>,
    /// The published image, as listed by `stratum images`.
    #[arg(long, value_name = "NAME:TAG", required = true)]
    image: Option<String>,
    /// Base URL nodes fetch the repository from (http:// or https://); repeat for mirrors,
    /// in order of preference (default: the URLs recorded by `stratum init --url`).
    #[arg(long = "url", value_name = "URL", value_parser = parse_url)]
    urls: Vec<String>,
    /// Write the descriptor to FILE (atomically) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Files to fetch first after mounting: one absolute path inside the image per line
    /// (empty lines and lines starting with '#' are skipped), e.g. recorded from a real run.
    #[arg(long, value_name = "FILE")]
    prefetch: Option<PathBuf>,
    /// Verify the manifest with this public key (default: the repository's own copy); its
    /// fingerprint is recorded in the descriptor.
    #[arg(long, value_name = "KEY.pub")]
    pubkey: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum ThinCommand {
    /// Push the thin image of a published image to an OCI registry, as an artifact.
    ///
    /// One artifact (artifactType application/vnd.stratum.thin-image.v1+json, one blob: the
    /// descriptor) at DEST_REF; for an image published for several platforms
    /// (NAME:TAG+OS-ARCH[-VARIANT] names, `publish --all-platforms`), one artifact per
    /// platform and an OCI image index at DEST_REF. Nothing is pushed when DEST_REF already
    /// holds the same descriptors. Prints the reference and the manifest digest.
    Push(PushArgs),
}

#[derive(clap::Args)]
struct PushArgs {
    /// The repository directory.
    repo: PathBuf,
    /// The published image, as listed by `stratum images`.
    #[arg(long, value_name = "NAME:TAG")]
    image: String,
    /// Where to push: docker://HOST[:PORT]/REPO:TAG.
    #[arg(value_name = "DEST_REF", value_parser = parse_reference)]
    dest: Reference,
    /// Base URL nodes fetch the repository from; repeat for mirrors (default: the URLs
    /// recorded by `stratum init --url`).
    #[arg(long = "url", value_name = "URL", value_parser = parse_url)]
    urls: Vec<String>,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long, value_name = "KEY.pub")]
    pubkey: Option<PathBuf>,
    /// Files to fetch first after mounting, one per line (as for `stratum thin`).
    #[arg(long, value_name = "FILE")]
    prefetch: Option<PathBuf>,
    /// Print {"reference", "digest", "platforms", "unchanged"} as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The `--thin-dir` / `--url` arguments of `stratum publish`.
#[derive(clap::Args)]
pub struct PublishThinArgs {
    /// After publishing, write the thin-image descriptor of each image into DIR
    /// (NAME:TAG with '/' and ':' replaced by '_', plus .json), as `stratum thin` would.
    #[arg(long, value_name = "DIR")]
    pub thin_dir: Option<PathBuf>,
    /// With --thin-dir: base URL recorded in the descriptors (repeat for mirrors; default:
    /// the URLs recorded by `stratum init --url`).
    #[arg(long = "url", value_name = "URL", requires = "thin_dir", value_parser = parse_url)]
    pub thin_urls: Vec<String>,
}

impl PublishThinArgs {
    /// With `--thin-dir` and no `--url`: the repository's default URLs, or an
    /// error, before anything is published.
    pub fn resolve_urls(mut self, repo: &Path) -> Result<Self> {
        if self.thin_dir.is_some() {
            self.thin_urls = urls_or_default(repo, &self.thin_urls)?;
        }
        Ok(self)
    }
}

pub(crate) fn parse_url(s: &str) -> Result<String, String> {
    validate::check_url("--url", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    if !s.starts_with("docker://") {
        return Err("expected docker://HOST[:PORT]/REPO:TAG".into());
    }
    Reference::parse(s).map_err(|e| e.to_string())
}

pub fn default_urls(repo: &Path) -> Result<Vec<String>> {
    let backend = stratum_publisher::repo::RepoLocation::from_path(repo)?.open_backend()?;
    let shown = format!("{}/{URLS_PATH}", repo.display());
    Ok(default_urls::read(backend.as_ref(), &shown)?)
}

/// Records `urls` as the repository's defaults (`stratum init --url`).
pub fn write_default_urls(repo: &Path, urls: &[String]) -> Result<()> {
    let backend = stratum_publisher::repo::RepoLocation::from_path(repo)?.open_backend()?;
    Ok(default_urls::write(backend.as_ref(), urls)?)
}

/// `urls` when given, else the repository's default URLs, else an error.
pub fn urls_or_default(repo: &Path, urls: &[String]) -> Result<Vec<String>> {
    if !urls.is_empty() {
        return Ok(urls.to_vec());
    }
    let defaults = default_urls(repo)?;
    if defaults.is_empty() {
        bail!(
            "no --url given, and {} records no default URLs: give --url URL (repeat for \
             mirrors), or record them with `stratum init REPO --key KEY --url URL…` \
             ({URLS_PATH} in the repository, one URL per line)",
            repo.display()
        );
    }
    Ok(defaults)
}

/// `stratum thin`.
pub fn run(args: ThinArgs) -> Result<ExitCode> {
    if let Some(ThinCommand::Push(push)) = args.command {
        return run_push(push);
    }
    let (Some(repo), Some(image)) = (&args.repo, &args.image) else {
        bail!("give REPO --image NAME:TAG (or `stratum thin push …`)");
    };
    let urls = urls_or_default(repo, &args.urls)?;
    let reader = open(repo, args.pubkey.as_deref())?;
    let images = reader.variants(image)?;
    let record = find_image(&images, image, repo)?;
    let mut thin = reader.build(record, &urls)?;
    if let Some(file) = &args.prefetch {
        thin = thin
            .with_prioritized_files(read_prefetch(file)?)
            .with_context(|| format!("prefetch list {}", file.display()))?;
    }
    let text = render(&thin)?;
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn find_image<'a>(images: &'a [ImageRecord], name: &str, repo: &Path) -> Result<&'a ImageRecord> {
    images.iter().find(|i| i.name == name).with_context(|| {
        format!(
            "no image {name} in {} (see `stratum images`)",
            repo.display()
        )
    })
}

/// What `stratum thin push` (and sync) pushed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushedThin {
    /// `docker://HOST/REPO:TAG`.
    pub reference: String,
    /// Digest of the manifest at the tag: the artifact's, or the index's.
    pub digest: String,
    /// The platforms pushed, `os/arch[/variant]`, the primary one first.
    pub platforms: Vec<String>,
    /// The tag already held these descriptors: nothing was pushed.
    pub unchanged: bool,
}

fn run_push(args: PushArgs) -> Result<ExitCode> {
    let registry = args.registry.client(&[args.dest.registry().to_owned()])?;
    let prefetch = match &args.prefetch {
        Some(file) => Some(read_prefetch(file)?),
        None => None,
    };
    let pushed = match &prefetch {
        None => push_thin(
            &args.repo,
            args.pubkey.as_deref(),
            &args.image,
            &args.dest,
            &args.urls,
            &registry,
        )?,
        Some(files) => push(
            &args.repo,
            args.pubkey.as_deref(),
            &args.image,
            &args.dest,
            &args.urls,
            Some(files),
            &registry,
        )?,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&pushed)?);
    } else {
        outln!(
            "{} {}@{} ({})",
            if pushed.unchanged {
                "unchanged"
            } else {
                "pushed"
            },
            pushed.reference,
            pushed.digest,
            pushed.platforms.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes the thin image of `image` (published in `repo`, verified with
/// `pubkey` or the repository's own key) to `dest` (a tag): one artifact,
/// or, when the image was published for several platforms (`NAME:TAG+slug`
/// names next to `NAME:TAG`), one untagged artifact per platform and an
/// image index at `dest`. `urls` empty means the repository's default URLs.
/// Nothing is pushed when `dest` already holds the same descriptors; a tag
/// holding anything else than a thin image is not overwritten.
pub fn push_thin(
    repo: &Path,
    pubkey: Option<&Path>,
    image: &str,
    dest: &Reference,
    urls: &[String],
    registry: &Arc<Registry>,
) -> Result<PushedThin> {
    push(repo, pubkey, image, dest, urls, None, registry)
}

fn push(
    repo: &Path,
    pubkey: Option<&Path>,
    image: &str,
    dest: &Reference,
    urls: &[String],
    prefetch: Option<&[String]>,
    registry: &Arc<Registry>,
) -> Result<PushedThin> {
    if dest.digest().is_some() {
        bail!("{dest}: thin images are pushed to a tag, not to a digest");
    }
    let urls = urls_or_default(repo, urls)?;
    let reader = open(repo, pubkey)?;
    let images = reader.variants(image)?;
    let (records, multi) = platform_set(&images, image, repo)?;
    let mut artifacts: Vec<(ThinImage, Artifact)> = Vec::new();
    for record in &records {
        let mut thin = reader.build(record, &urls)?;
        if let Some(files) = prefetch {
            thin = thin
                .with_prioritized_files(files.to_vec())
                .context("prefetch list")?;
        }
        let artifact = thin
            .to_artifact()
            .with_context(|| format!("thin image of {}", record.name))?;
        artifacts.push((thin, artifact));
    }
    let platforms: Vec<String> = artifacts
        .iter()
        .map(|(t, _)| t.platform.to_string())
        .collect();
    let context = || format!("pushing the thin image of {image}");
    if let Some(digest) = already_there(registry, dest, &artifacts, multi).with_context(context)? {
        return Ok(PushedThin {
            reference: dest.to_string(),
            digest,
            platforms,
            unchanged: true,
        });
    }
    let digest = if multi {
        let mut entries = Vec::new();
        for (thin, artifact) in &artifacts {
            let manifest = registry
                .push_artifact_untagged(dest, artifact)
                .with_context(context)?;
            entries.push(IndexEntry {
                manifest,
                platform: thin.platform.to_oci(),
                artifact_type: ARTIFACT_TYPE.to_owned(),
                annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), thin.image.clone())]),
            });
        }
        let created = artifacts
            .first()
            .and_then(|(_, a)| a.annotations.get(ANNOTATION_CREATED).cloned())
            .unwrap_or_default();
        let annotations = BTreeMap::from([
            (ANNOTATION_REF_NAME.to_owned(), image.to_owned()),
            (ANNOTATION_CREATED.to_owned(), created),
        ]);
        registry
            .push_artifact_index(dest, ARTIFACT_TYPE, &entries, &annotations)
            .with_context(context)?
    } else {
        let (_, artifact) = &artifacts[0];
        registry
            .push_artifact(dest, artifact)
            .with_context(context)?
    };
    Ok(PushedThin {
        reference: dest.to_string(),
        digest,
        platforms,
        unchanged: false,
    })
}

/// The images a push of `name` covers: `NAME:TAG` alone, or, when it was
/// published for several platforms, its `NAME:TAG+slug` siblings (the one
/// `NAME:TAG` points to first). True when there are siblings.
fn platform_set<'a>(
    images: &'a [ImageRecord],
    name: &str,
    repo: &Path,
) -> Result<(Vec<&'a ImageRecord>, bool)> {
    let record = find_image(images, name, repo)?;
    if name.contains('+') {
        return Ok((vec![record], false));
    }
    let prefix = format!("{name}+");
    let mut siblings: Vec<&ImageRecord> = images
        .iter()
        .filter(|i| i.name.strip_prefix(&prefix).is_some_and(|s| !s.is_empty()))
        .collect();
    if siblings.is_empty() {
        return Ok((vec![record], false));
    }
    if !siblings
        .iter()
        .any(|s| s.manifest_digest == record.manifest_digest)
    {
        // Left over from an earlier multi-platform publish of the name.
        tracing::warn!(
            "{name} is none of its per-platform images ({}); pushing {name} alone",
            siblings
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok((vec![record], false));
    }
    siblings.sort_by_key(|s| (s.manifest_digest != record.manifest_digest, s.name.clone()));
    Ok((siblings, true))
}

/// The digest at `dest` when it already holds exactly these descriptors
/// (same platforms, same blobs); `None` when something must be pushed.
/// Refuses to overwrite a tag that holds something else than a thin image.
fn already_there(
    registry: &Arc<Registry>,
    dest: &Reference,
    artifacts: &[(ThinImage, Artifact)],
    multi: bool,
) -> Result<Option<String>> {
    let listing = registry.inspect_artifact(dest, ARTIFACT_TYPE)?;
    Ok(match listing {
        None => None,
        Some(ArtifactListing::Other { kind, .. }) => bail!(
            "{dest} holds {kind}, not a stratum thin image ({MEDIA_TYPE}); refusing to \
             overwrite it: push to another tag, or delete it from the registry first"
        ),
        Some(ArtifactListing::Single { digest, payload }) => match artifacts {
            [(_, a)] if !multi && sha256_digest(&a.payload) == payload => Some(digest),
            _ => None,
        },
        Some(ArtifactListing::Index { digest, entries }) => {
            if !multi || entries.len() != artifacts.len() {
                return Ok(None);
            }
            for (thin, a) in artifacts {
                let want = thin.platform.to_oci();
                let Some((_, manifest)) = entries.iter().find(|(p, _)| *p == want) else {
                    return Ok(None);
                };
                if registry.artifact_payload_digest(dest, manifest)? != sha256_digest(&a.payload) {
                    return Ok(None);
                }
            }
            Some(digest)
        }
    })
}

/// A thin image fetched from a registry.
pub struct FetchedThin {
    pub thin: ThinImage,
    /// Digest of the artifact manifest.
    pub digest: String,
    /// When the reference named an index: the platform of the entry taken.
    pub platform: Option<Platform>,
}

/// Fetches the thin image `r` names for `platform` (an index is resolved to
/// it), verifies every blob and reads the descriptor strictly
/// ([`ThinImage::from_artifact`]). The descriptor's own platform must be
/// the one the index entry claims.
pub fn fetch_thin(
    registry: &Arc<Registry>,
    r: &Reference,
    platform: &Platform,
) -> Result<FetchedThin> {
    let pulled = registry
        .pull_artifact_for(r, ARTIFACT_TYPE, MEDIA_TYPE, platform)
        .context("fetching a thin image")?;
    let thin =
        ThinImage::from_artifact(&pulled.artifact).with_context(|| format!("thin image {r}"))?;
    let own = thin.platform.to_oci();
    let entry = match pulled.index {
        Some((index, entry)) => {
            if !(entry.matches(&own) && own.matches(&entry)) {
                bail!(
                    "thin image {r}: the index {index} lists {} for platform {entry}, but its \
                     descriptor is for {own}",
                    pulled.digest
                );
            }
            Some(entry)
        }
        None => {
            if !platform.matches(&own) {
                tracing::warn!("thin image {r} is for {own}, not for this host's {platform}");
            }
            None
        }
    };
    Ok(FetchedThin {
        thin,
        digest: pulled.digest,
        platform: entry,
    })
}

/// The `--thin` value of `mount` and `pull`: a descriptor file, or
/// `docker://REF`, fetched for this host's platform with the registry
/// options given. Returns the descriptor and how to name it in messages.
pub fn load_thin(spec: &Path, registry: &RegistryArgs) -> Result<(ThinImage, String)> {
    if let Some(s) = spec.to_str().filter(|s| s.starts_with("docker://")) {
        let r = Reference::parse(s)?;
        let client = registry.client(&[r.registry().to_owned()])?;
        let fetched = fetch_thin(&client, &r, &Platform::host())?;
        let label = match &fetched.platform {
            Some(p) => format!("thin image {r} ({p}: {})", fetched.digest),
            None => format!("thin image {r}@{}", fetched.digest),
        };
        return Ok((fetched.thin, label));
    }
    let bytes = fs::read(spec).with_context(|| format!("reading {}", spec.display()))?;
    let label = format!("thin image {}", spec.display());
    let thin = ThinImage::from_json(&bytes).with_context(|| label.clone())?;
    Ok((thin, label))
}

pub use stratum_catalog::image_index::pick_image;

/// `publish … --thin-dir DIR`: after a successful publish, one descriptor per
/// image of `outcome` (published or unchanged) into DIR. Does nothing without
/// `--thin-dir`.
pub fn after_publish(
    repo: &Path,
    key: &VerifyingKey,
    outcome: &PublishOutcome,
    args: &PublishThinArgs,
    json: bool,
) -> Result<()> {
    let Some(dir) = &args.thin_dir else {
        return Ok(());
    };
    let context = || {
        format!(
            "revision {} is published, but writing its thin-image descriptors into {} failed",
            outcome.revision,
            dir.display()
        )
    };
    let written = write_thin_dir(repo, key, outcome, &args.thin_urls, dir).with_context(context)?;
    if !json {
        for path in written {
            outln!("thin image: {}", path.display());
        }
    }
    Ok(())
}

fn write_thin_dir(
    repo: &Path,
    key: &VerifyingKey,
    outcome: &PublishOutcome,
    urls: &[String],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let reader = open_with_key(repo, *key)?;
    // Build everything first: nothing is written unless every descriptor is good.
    let mut files: BTreeMap<String, (String, String)> = BTreeMap::new();
    // One namespace for all of them: its catalogs are loaded once.
    let ns = reader.namespace()?;
    let mut index = ns.image_index();
    for report in &outcome.images {
        let record = index
            .get(&report.name)?
            .with_context(|| format!("image {} is not in the current revision", report.name))?;
        let record = &record;
        if record.manifest_digest != report.manifest_digest {
            bail!(
                "image {} now points to {}, not to the {} just published (a concurrent publish?)",
                report.name,
                record.manifest_digest,
                report.manifest_digest
            );
        }
        let text = render(&reader.build(record, urls)?)?;
        let file = descriptor_file_name(&report.name);
        if let Some((other, _)) = files.insert(file.clone(), (report.name.clone(), text)) {
            if other != report.name {
                bail!(
                    "images {other} and {} would both be written to {file}",
                    report.name
                );
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (file, (_, text)) in files {
        let path = dir.join(file);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// The descriptor as written to files and stdout: pretty JSON and a newline.
fn render(thin: &ThinImage) -> Result<String> {
    let mut text = thin.to_json_pretty()?;
    text.push('\n');
    Ok(text)
}

/// An opened repository: its store, the verified manifest and the key that verified it.
struct Reader {
    store: Store,
    manifest: Manifest,
    key: VerifyingKey,
}

fn open(repo: &Path, pubkey: Option<&Path>) -> Result<Reader> {
    let key = match pubkey {
        Some(p) => manifest::load_verifying_key(p)?,
        None => Repository::open(repo)?.public_key()?,
    };
    open_with_key(repo, key)
}

fn open_with_key(repo: &Path, key: VerifyingKey) -> Result<Reader> {
    let r = Repository::open(repo)?;
    let (manifest, _) = r
        .store()
        .manifest(&key)
        .with_context(|| format!("verifying {}", repo.display()))?;
    Ok(Reader {
        store: r.store().clone(),
        manifest,
        key,
    })
}

impl Reader {
    /// `name` and its per-platform siblings (`name+os-arch…`).
    fn variants(&self, name: &str) -> Result<Vec<ImageRecord>> {
        let images = self.namespace()?.image_index().variants(name)?;
        Ok(images)
    }

    fn namespace(&self) -> Result<Namespace<StoreLoader>> {
        Ok(Namespace::new(
            StoreLoader::new(self.store.clone()),
            &self.manifest.root,
        )?)
    }

    fn build(&self, record: &ImageRecord, urls: &[String]) -> Result<ThinImage> {
        ThinImage::build(record, &self.manifest, &self.key, urls)
            .with_context(|| format!("thin-image descriptor of {}", record.name))
    }
}

/// A prefetch list: one path per line; empty lines and `#` comments skipped.
fn read_prefetch(file: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut paths = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        validate::check_clean_path(&format!("{}:{}", file.display(), n + 1), line)?;
        paths.push(line.to_owned());
    }
    Ok(paths)
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// fsynced and renamed over `path`, so that a reader sees the old file or the
/// new one, never a part.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_string_lossy();
    let mut n = 0u32;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e).with_context(|| format!("creating {}", tmp.display())),
        }
    };
    let result = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    // Make the rename durable; not every file system lets a directory be fsynced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses a descriptor whose pinned catalogs no revision signed by the
/// repository key holds (the current one, or the descriptor's own revision
/// reached through the signed history): see `stratum_thin_image::vouch`.
/// Returns the revision that vouched.
pub fn vouch(
    remote: &std::sync::Arc<stratum_fetcher::Remote>,
    desc: &stratum_thin_image::ThinImage,
) -> Result<u64> {
    let loader = stratum_fetcher::RemoteLoader::new(remote.clone());
    let revision = stratum_thin_image::vouch_for_pins(desc, remote.manifest(), &loader, |id| {
        remote.historic_manifest(id)
    })?;
    tracing::debug!(image = %desc.image, revision, "pinned catalogs vouched for");
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, platform: &str, digest: char) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            manifest_digest: stratum_catalog::Sha256Digest::from_hex(
                &digest.to_string().repeat(64),
            )
            .unwrap(),
            config_digest: stratum_catalog::Sha256Digest([0; 32]),
            platform: platform.into(),
            source: String::new(),
            published_at: 0,
            flat_path: format!("/flat/{digest}"),
            flat_catalog: String::new(),
            manifest: Vec::new(),
            config: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// This host's platform and one that is not.
    fn platforms() -> (String, String) {
        let host = Platform::host();
        let other = if host.architecture == "s390x" {
            "linux/ppc64le"
        } else {
            "linux/s390x"
        };
        (host.to_string(), other.to_owned())
    }

    #[test]
    fn pick_image_prefers_this_hosts_platform() {
        let (host, other) = platforms();
        let host_slug = host.replace('/', "-");
        let other_slug = other.replace('/', "-");
        // The primary is another platform: this host's sibling is taken.
        let images = vec![
            record("a:1", &other, 'a'),
            record(&format!("a:1+{other_slug}"), &other, 'a'),
            record(&format!("a:1+{host_slug}"), &host, 'b'),
            record("b:1", &other, 'c'),
        ];
        assert_eq!(pick_image(&images, "a:1").unwrap().flat_path, "/flat/b");
        // Named exactly, or without a sibling for this host: the name itself.
        assert_eq!(
            pick_image(&images, &format!("a:1+{other_slug}"))
                .unwrap()
                .flat_path,
            "/flat/a"
        );
        assert_eq!(pick_image(&images, "b:1").unwrap().flat_path, "/flat/c");
        assert!(pick_image(&images, "c:1").is_none());
        // The primary is this host's: itself.
        let images = vec![
            record("a:1", &host, 'a'),
            record(&format!("a:1+{host_slug}"), &host, 'a'),
            record(&format!("a:1+{other_slug}"), &other, 'b'),
        ];
        assert_eq!(pick_image(&images, "a:1").unwrap().name, "a:1");
    }

    #[test]
    fn platform_set_takes_the_siblings_primary_first() {
        let repo = Path::new("/repo");
        let images = vec![
            record("a:1", "linux/arm64/v8", 'b'),
            record("a:1+linux-amd64", "linux/amd64", 'a'),
            record("a:1+linux-arm64-v8", "linux/arm64/v8", 'b'),
            record("a:10", "linux/amd64", 'c'),
            record("b:1", "linux/amd64", 'd'),
            record("c:1", "linux/amd64", 'e'),
            record("c:1+linux-arm64", "linux/arm64", 'f'),
        ];
        let names = |name: &str| {
            let (set, multi) = platform_set(&images, name, repo).unwrap();
            (
                set.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                multi,
            )
        };
        assert_eq!(
            names("a:1"),
            (
                vec![
                    "a:1+linux-arm64-v8".to_owned(),
                    "a:1+linux-amd64".to_owned()
                ],
                true
            )
        );
        assert_eq!(names("a:10"), (vec!["a:10".to_owned()], false));
        assert_eq!(names("b:1"), (vec!["b:1".to_owned()], false));
        assert_eq!(
            names("a:1+linux-amd64"),
            (vec!["a:1+linux-amd64".to_owned()], false)
        );
        // Siblings that c:1 is none of (left over): c:1 alone.
        assert_eq!(names("c:1"), (vec!["c:1".to_owned()], false));
        let e = platform_set(&images, "z:1", repo).unwrap_err().to_string();
        assert!(e.contains("no image z:1"), "{e}");
    }
}
