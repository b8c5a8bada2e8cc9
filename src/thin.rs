//! `stratum thin` and `stratum publish --thin-dir`: the thin-image descriptors
//! (`docs/THIN-IMAGE.md`) of published images, built by `stratum-thin-image`
//! from the verified manifest and the `/images` catalog of the current revision.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::ImageRecord;
use stratum_catalog::manifest::{self, Manifest};
use stratum_catalog::namespace::{Namespace, StoreLoader};
use stratum_catalog::Store;
use stratum_publisher::{PublishOutcome, Repository};
use stratum_thin_image::{descriptor_file_name, validate, ThinImage, VerifyingKey};

/// Arguments of `stratum thin`.
#[derive(clap::Args)]
pub struct ThinArgs {
    /// The repository directory.
    repo: PathBuf,
    /// The published image, as listed by `stratum images`.
    #[arg(long, value_name = "NAME:TAG")]
    image: String,
    /// Base URL nodes fetch the repository from (http:// or https://); repeat for mirrors,
    /// in order of preference.
    #[arg(long = "url", value_name = "URL", required = true, value_parser = parse_url)]
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

/// The `--thin-dir` / `--url` arguments of `stratum publish`.
#[derive(clap::Args)]
pub struct PublishThinArgs {
    /// After publishing, write the thin-image descriptor of each image into DIR
    /// (NAME:TAG with '/' and ':' replaced by '_', plus .json), as `stratum thin` would.
    #[arg(long, value_name = "DIR", requires = "thin_urls")]
    pub thin_dir: Option<PathBuf>,
    /// With --thin-dir: base URL recorded in the descriptors (repeat for mirrors).
    #[arg(long = "url", value_name = "URL", requires = "thin_dir", value_parser = parse_url)]
    pub thin_urls: Vec<String>,
}

fn parse_url(s: &str) -> Result<String, String> {
    validate::check_url("--url", s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// `stratum thin`.
pub fn run(args: ThinArgs) -> Result<ExitCode> {
    let reader = open(&args.repo, args.pubkey.as_deref())?;
    let images = reader.images()?;
    let record = images
        .iter()
        .find(|i| i.name == args.image)
        .with_context(|| {
            format!(
                "no image {} in {} (see `stratum images`)",
                args.image,
                args.repo.display()
            )
        })?;
    let mut thin = reader.build(record, &args.urls)?;
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
            println!("thin image: {}", path.display());
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
    let images = reader.images()?;
    // Build everything first: nothing is written unless every descriptor is good.
    let mut files: BTreeMap<String, (String, String)> = BTreeMap::new();
    for report in &outcome.images {
        let record = images
            .iter()
            .find(|i| i.name == report.name)
            .with_context(|| format!("image {} is not in the current revision", report.name))?;
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
    fn images(&self) -> Result<Vec<ImageRecord>> {
        let ns = Namespace::new(StoreLoader::new(self.store.clone()), &self.manifest.root)?;
        let node = ns.resolve("/images")?;
        Ok(node.catalog.images()?)
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
