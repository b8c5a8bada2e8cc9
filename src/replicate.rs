//! `stratum replicate URL DEST --pubkey KEY.pub`: a served repository
//! mirrored into a local directory or an `s3://` bucket prefix (a replica,
//! "stratum 1"), incrementally.
//! The work is `stratum_fetcher::replicate`; this module checks DEST, holds
//! its lock, shows progress and prints the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_catalog::backend::{Backend, LocalDir};
use stratum_catalog::layout::{self, DATA_DIR, META_DIR};
use stratum_catalog::manifest::{self, MANIFEST_PATH};
use stratum_fetcher::replicate::{self, ReplicateConfig};

use crate::progress;

#[derive(clap::Args)]
pub struct ReplicateArgs {
    /// The http(s):// URL of the repository to mirror.
    #[arg(value_parser = crate::thin::parse_url)]
    url: String,
    /// The replica: a local directory (created if missing), servable as-is
    /// by `stratum serve` or nginx; or s3://BUCKET/PREFIX, served by the bucket.
    dest: PathBuf,
    /// The repository's public key (PEM): the manifest must verify with it.
    #[arg(long)]
    pubkey: PathBuf,
    /// More URLs of the same repository, tried in turn when one fails.
    #[arg(long = "mirror", value_name = "URL", value_parser = crate::thin::parse_url)]
    mirrors: Vec<String>,
    /// Downloads in flight at once (over one pool of kept-alive connections). Each
    /// costs a round trip, so a replica across a WAN needs many. The default was chosen
    /// at a 10 ms round trip (docs/DECISIONS.md).
    #[arg(long, default_value_t = stratum_fetcher::replicate::DEFAULT_REPLICATE_JOBS as u32, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
    /// Walk every catalog and check every object, even below catalogs that
    /// are unchanged since the replica's revision (repairs missing objects).
    #[arg(long)]
    full: bool,
    /// Speak HTTP/2 to http:// URLs without negotiating it (h2c), all
    /// downloads multiplexed on one connection: for `stratum serve` and
    /// servers configured for it; an HTTP/1.1-only server (Squid, S3, a
    /// default nginx) then fails. https:// URLs use HTTP/2 whenever the
    /// server offers it.
    #[arg(long)]
    http2_prior_knowledge: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReplicateArgs) -> Result<ExitCode> {
    let key = manifest::load_verifying_key(&args.pubkey)?;
    let location = stratum_publisher::repo::RepoLocation::from_path(&args.dest)?;
    let (backend, _lock): (Arc<dyn Backend>, Box<dyn std::any::Any>) = match location.local_dir() {
        Some(dir) => {
            prepare_dest(dir)?;
            let lock = layout::lock_dir(dir, &mut |_| {})
                .with_context(|| format!("locking {}", dir.display()))?;
            (Arc::new(LocalDir::open(dir)?), Box::new(lock))
        }
        // A bucket prefix: the publishers' lock object.
        None => {
            let backend = location.open_backend()?;
            let lock = stratum_publisher::repo::lock_object(backend.clone(), &location)?;
            (backend, Box::new(lock))
        }
    };
    let mut urls = vec![args.url.clone()];
    urls.extend(args.mirrors.iter().cloned());
    let mut cfg = ReplicateConfig::new(urls, key);
    cfg.jobs = args.jobs as usize;
    cfg.full = args.full;
    cfg.http2_prior_knowledge = args.http2_prior_knowledge;
    let bar = progress::bytes_bar("replicating");
    let report = replicate::replicate(&cfg, backend.as_ref(), &|p| {
        bar.set_position(p.bytes_fetched);
        bar.set_message(format!(
            "replicating: {} objects fetched, {} present",
            p.objects_fetched, p.objects_present
        ));
    })
    .with_context(|| format!("replicating {} into {}", args.url, args.dest.display()))?;
    bar.finish_and_clear();
    if args.json {
        let t = &report.transport;
        let out = serde_json::json!({
            "name": report.name,
            "revision": report.revision,
            "previous_revision": report.previous_revision,
            "updated": report.updated,
            "recovering": report.recovering,
            "objects_fetched": report.objects_fetched,
            "bytes_fetched": report.bytes_fetched,
            "objects_present": report.objects_present,
            "objects_repaired": report.objects_repaired,
            "catalogs_walked": report.catalogs_walked,
            "catalogs_unchanged": report.catalogs_unchanged,
            "seconds": report.seconds,
            "transport": {
                "requests": t.requests, "bytes_downloaded": t.bytes_downloaded,
                "retries": t.retries, "failovers": t.failovers, "rejected": t.rejected,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else if !report.updated {
        outln!(
            "{} revision {}: the replica {} is up to date",
            report.name,
            report.revision,
            args.dest.display()
        );
    } else {
        outln!(
            "replicated {} revision {}{} into {}: {} objects fetched ({} bytes), {} already present{}, {:.1}s",
            report.name,
            report.revision,
            report
                .previous_revision
                .map(|r| format!(" (was {r})"))
                .unwrap_or_default(),
            args.dest.display(),
            report.objects_fetched,
            report.bytes_fetched,
            report.objects_present,
            if report.objects_repaired > 0 {
                format!(", {} repaired", report.objects_repaired)
            } else {
                String::new()
            },
            report.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// DEST is created if missing. An existing DEST must be a repository (a
/// replica) or hold nothing but what an interrupted first run leaves
/// (`.stratum/`, `data/`), so that a typo never fills a random directory.
fn prepare_dest(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest)
                .with_context(|| format!("creating {}", dest.display()))?;
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("{}", dest.display())),
        Ok(md) if !md.is_dir() => bail!("{} is not a directory", dest.display()),
        Ok(_) => {}
    }
    if dest.join(MANIFEST_PATH).is_file() {
        return Ok(());
    }
    let rd = std::fs::read_dir(dest).with_context(|| format!("reading {}", dest.display()))?;
    for ent in rd {
        let name = ent?.file_name();
        if !matches!(name.to_str(), Some(META_DIR | DATA_DIR | "lost+found")) {
            bail!(
                "{} is neither empty nor a stratum repository (it holds {:?}); give a new or empty directory",
                dest.display(),
                name
            );
        }
    }
    Ok(())
}
