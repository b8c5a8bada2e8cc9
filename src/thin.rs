//! `stratum thin` and `stratum publish --thin-dir`: the thin-image descriptors
//! (`docs/THIN-IMAGE.md`) of published images, built by `stratum-thin-image`
//! from the verified manifest and the `/images` catalog of the current revision.
//!
//! `stratum thin push` pushes them to an OCI registry as artifacts (one per
//! platform, under an image index when the image was published for several),
//! and `mount --thin docker://…` / `pull --thin docker://…` read them back
//! ([`load_thin`]), for this host's platform. The pushing, fetching and
//! file writing are `stratum_thin_image`'s (`push`, `fetch`,
//! `descriptor_file`); this module parses arguments and prints.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_publisher::PublishOutcome;
use stratum_registry::{Platform, Reference};
use stratum_thin_image::descriptor_file::write_atomic;
use stratum_thin_image::fetch::{fetch_thin, read_file};
use stratum_thin_image::published::{find_image, Published};
use stratum_thin_image::push::push;
use stratum_thin_image::{default_urls, descriptor_file_name, validate, ThinImage, VerifyingKey};

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

/// Records `urls` as the repository's defaults (`stratum init --url`).
pub fn write_default_urls(repo: &Path, urls: &[String]) -> Result<()> {
    Ok(default_urls::record(repo, urls)?)
}

/// `urls` when given, else the repository's default URLs, else an error.
pub fn urls_or_default(repo: &Path, urls: &[String]) -> Result<Vec<String>> {
    Ok(default_urls::given_or_default(repo, urls)?)
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
    let reader = Published::open(repo, args.pubkey.as_deref())?;
    let images = reader.variants(image)?;
    let record = find_image(&images, image, repo)?;
    let mut thin = reader.build(record, &urls)?;
    if let Some(file) = &args.prefetch {
        thin = thin
            .with_prioritized_files(read_prefetch(file)?)
            .with_context(|| format!("prefetch list {}", file.display()))?;
    }
    let text = thin.to_file_text()?;
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run_push(args: PushArgs) -> Result<ExitCode> {
    let registry = args.registry.client(&[args.dest.registry().to_owned()])?;
    let prefetch = match &args.prefetch {
        Some(file) => Some(read_prefetch(file)?),
        None => None,
    };
    let pushed = push(
        &args.repo,
        args.pubkey.as_deref(),
        &args.image,
        &args.dest,
        &args.urls,
        prefetch.as_deref(),
        &registry,
    )?;
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

/// The `--thin` value of `mount` and `pull`: a descriptor file, or
/// `docker://REF`, fetched for this host's platform with the registry
/// options given. Returns the descriptor and how to name it in messages.
pub fn load_thin(spec: &Path, registry: &RegistryArgs) -> Result<(ThinImage, String)> {
    if let Some(s) = spec.to_str().filter(|s| s.starts_with("docker://")) {
        let r = Reference::parse(s)?;
        let client = registry.client(&[r.registry().to_owned()])?;
        let fetched = fetch_thin(&client, &r, &Platform::host())?;
        let label = fetched.label(&r);
        return Ok((fetched.thin, label));
    }
    Ok(read_file(spec)?)
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
    let reader = Published::open_with_key(repo, *key)?;
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
        let text = reader.build(record, urls)?.to_file_text()?;
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
