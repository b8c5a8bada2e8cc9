//! `stratum publish`: ingest images into a new signed revision.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::manifest;
use stratum_publisher::source::SourceContext;
use stratum_publisher::{PublishRequest, Repository};

use crate::progress;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The images to publish: oci:DIR[:TAG], docker-archive:FILE or
    /// docker://HOST[:PORT]/REPO[:TAG|@sha256:…].
    /// (None with --prefetch alone: the lists are stored with images already published.)
    #[arg(required_unless_present = "prefetch")]
    sources: Vec<String>,
    /// The repository to publish into: a directory made by `stratum init`, or
    /// s3://BUCKET/PREFIX.
    #[arg(long)]
    repo: PathBuf,
    /// The repository's private key (PEM, from `stratum keygen`); signs the new revision.
    #[arg(long)]
    key: PathBuf,
    /// Name for a single SOURCE under /images (default: local/<layout dir name>:<tag>).
    #[arg(long = "as", value_name = "NAME:TAG")]
    as_name: Option<String>,
    /// Also write Apptainer's /.singularity.d metadata (env from ENV, runscript from
    /// Entrypoint/Cmd, labels.json) into the flat tree; without it the flat tree is exactly
    /// the merged layers (what `umoci unpack` extracts).
    #[arg(long)]
    apptainer: bool,
    /// Store the recorded prefetch list FILE (`stratum mount --record FILE`: paths relative
    /// to the image root, one per line, in the order a real run opened them) with image
    /// NAME:TAG, published by this command or before. Every mount of the image then
    /// fetches those files ahead of the reads. Paths that are not regular files of the
    /// image are dropped with a warning; a list of more than 100000 paths or 16 MiB is
    /// refused. Repeatable.
    #[arg(long = "prefetch", value_name = "NAME:TAG=FILE")]
    prefetch: Vec<String>,
    /// Print a JSON array with one report object per image instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    platforms: crate::registry_args::PlatformArgs,
    #[command(flatten)]
    registry: crate::registry_args::RegistryArgs,
    #[command(flatten)]
    thin: crate::thin::PublishThinArgs,
    #[command(flatten)]
    limits: crate::limits_args::LimitsArgs,
}

pub fn publish(a: PublishArgs) -> Result<ExitCode> {
    let PublishArgs {
        sources,
        repo,
        key,
        as_name,
        apptainer,
        prefetch,
        json,
        platforms,
        registry,
        thin,
        limits,
    } = a;
    let (repo, key) = (repo.as_path(), key.as_path());
    if as_name.is_some() && sources.len() != 1 {
        bail!(
            "--as names a single source, but {} were given",
            sources.len()
        );
    }
    let thin = thin.resolve_urls(repo)?;
    let sk = manifest::load_signing_key(key)?;
    let r = Repository::open(repo)?;
    let hosts = crate::registry_args::hosts_of(&sources);
    let ctx = SourceContext {
        registry: if hosts.is_empty() {
            None
        } else {
            Some(registry.client(&hosts)?)
        },
        platforms: platforms.selection()?,
        limits: limits.limits()?,
    };
    let requests: Vec<_> = sources
        .into_iter()
        .map(|source| PublishRequest {
            source,
            name: as_name.clone(),
            outputs: stratum_publisher::publish::Outputs { apptainer },
        })
        .collect();
    let prefetch = prefetch
        .iter()
        .map(|p| prefetch_request(p))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress::PublishBar(progress::bytes_bar("publishing"));
    let outcome = stratum_publisher::publish(&r, &sk, &requests, &prefetch, &ctx, &bar)
        .with_context(|| format!("publishing into {}", repo.display()))?;
    bar.0.finish_and_clear();
    for p in outcome.images.iter().filter_map(|i| i.prefetch.as_ref()) {
        warn_dropped(p);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome.images)?);
    } else {
        for i in &outcome.images {
            outln!(
                "{} {} {}: {} layers ingested, {} skipped, {} files, {} bytes, {} new objects ({} bytes stored), {:.2}s",
                i.status, i.name, i.manifest_digest, i.layers_ingested, i.layers_skipped, i.files, i.bytes, i.new_objects, i.new_stored_bytes, i.seconds
            );
            if let Some(p) = &i.prefetch {
                outln!(
                    "prefetch list of {}: {} {} paths (object {}), {} lines dropped",
                    p.image,
                    p.status,
                    p.entries,
                    p.list,
                    p.dropped_count
                );
            }
        }
        if outcome.new_revision {
            outln!("published revision {}", outcome.revision);
        } else {
            outln!(
                "nothing changed; revision {} stays current",
                outcome.revision
            );
        }
    }
    crate::thin::after_publish(repo, &sk.verifying_key(), &outcome, &thin, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `NAME:TAG=FILE`, its file read (bounded).
fn prefetch_request(arg: &str) -> Result<stratum_publisher::PrefetchRequest> {
    let Some((name, file)) = arg.split_once('=') else {
        bail!("--prefetch {arg:?}: expected NAME:TAG=FILE");
    };
    let list = stratum_publisher::prefetch::read_list_file(std::path::Path::new(file))
        .with_context(|| format!("--prefetch {arg}"))?;
    Ok(stratum_publisher::PrefetchRequest {
        name: name.to_owned(),
        list,
    })
}

/// The lines of a prefetch list that were not stored: a warning, not an
/// error (a list recorded on another version of the image still helps).
pub fn warn_dropped(p: &stratum_publisher::prefetch::PrefetchReport) {
    if p.dropped_count == 0 {
        return;
    }
    eprintln!(
        "warning: prefetch list of {}: {} lines dropped (not regular files of the image), e.g.:",
        p.image, p.dropped_count
    );
    for d in &p.dropped {
        eprintln!("  {d}");
    }
}
