//! `stratum pull`: materialize an image's flat rootfs, or any subtree, into
//! a directory, from a local repository or over HTTP(S) through the node's
//! verified cache.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::CatalogKind;
use stratum_catalog::manifest;
use stratum_catalog::namespace::Namespace;

use crate::progress;

#[derive(clap::Args)]
pub struct PullArgs {
    /// A repository directory, or the http(s):// URL of one (then --pubkey is required).
    repo: PathBuf,
    /// An image name with tag, as listed by `stratum images`.
    #[arg(
        long,
        value_name = "NAME:TAG",
        conflicts_with_all = ["path", "thin"],
        required_unless_present_any = ["path", "thin"]
    )]
    image: Option<String>,
    /// A namespace path, e.g. a layer tree /layers/ab/<diff_id hex>.
    #[arg(long, conflicts_with = "thin")]
    path: Option<String>,
    /// The image a thin-image descriptor names, by the flat catalog id it pins: a file, or
    /// docker://HOST/REPO:TAG pushed by `stratum thin push` (this host's platform).
    #[arg(long, value_name = "FILE|docker://REF")]
    thin: Option<PathBuf>,
    /// The directory to fill: created if missing, else it must be empty.
    dest: PathBuf,
    /// Content objects fetched, verified and written at once, while the walk of the
    /// catalogs goes on (nested catalogs are fetched ahead too). Over a network each
    /// request costs a round trip, so many in flight are what makes a pull fast; 1
    /// pulls one object at a time. Every object is verified before a byte of it is
    /// written, whatever N. [default: 128, chosen at a 10 ms round trip, see
    /// docs/DECISIONS.md]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
    /// Print a JSON report (counts, skipped entries and, from a URL, transport statistics)
    /// instead of text.
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (required with a URL; default for a
    /// directory: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Cache directory for a URL, shared with `stratum mount` (default: /var/cache/stratum
    /// as root, else $XDG_CACHE_HOME/stratum or ~/.cache/stratum).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// With a URL: write downloaded file contents only into DEST, not also into the node
    /// cache (catalogs are still cached, and contents already in the cache are still read
    /// from it). For a one-off pull: it creates half the files and needs half the disk;
    /// a later pull or mount of the same contents downloads them again.
    #[arg(long)]
    no_fill_cache: bool,
    /// With a URL: more URLs serving the same repository, tried in turn when one fails.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// With --thin docker://…: how to reach the registry.
    #[command(flatten)]
    registry: crate::registry_args::RegistryArgs,
    /// With a URL: timeouts and retries.
    #[command(flatten)]
    transport: crate::transport_args::TransportArgs,
}

pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let PullArgs {
        repo,
        image,
        path,
        thin,
        dest,
        jobs,
        json,
        pubkey,
        cache,
        no_fill_cache,
        mirrors,
        registry,
        transport: transport_args,
    } = a;
    let (repo, dest) = (repo.as_path(), dest.as_path());
    let url = repo
        .to_str()
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"));
    let (ns_path, stats, transport) = match url {
        Some(url) => {
            let pubkey = pubkey.with_context(|| {
                format!("--pubkey KEY.pub is required to pull from {url}: it verifies the manifest")
            })?;
            let key = manifest::load_verifying_key(&pubkey)?;
            let cache = cache.unwrap_or_else(stratum_fetcher::default_cache_dir);
            let mut urls = vec![url.to_owned()];
            urls.extend(mirrors.iter().cloned());
            let mut cfg = stratum_fetcher::RemoteConfig::new(urls.clone(), key, cache.clone());
            transport_args.apply(&mut cfg);
            cfg.fill_cache = !no_fill_cache;
            let thin = match &thin {
                Some(spec) => {
                    let (desc, label) = crate::thin::load_thin(spec, &registry)?;
                    desc.check_key(&cfg.public_key)
                        .with_context(|| label.clone())?;
                    transport_args.expect_thin_name(&mut cfg, &desc.repository.name)?;
                    Some((desc, label))
                }
                None => None,
            };
            let remote =
                std::sync::Arc::new(stratum_fetcher::Remote::open(cfg).with_context(|| {
                    format!("opening {} (cache {})", urls.join(", "), cache.display())
                })?);
            // A thin image pins its flat tree's catalog: pull that tree,
            // once a signed revision vouches for it.
            let (root, path) = match &thin {
                Some((desc, label)) => {
                    crate::thin::vouch(&remote, desc).with_context(|| label.clone())?;
                    let flat = desc.flat.catalog_id()?;
                    let cat = remote.catalog(&flat)?;
                    stratum_thin_image::check_pinned_catalog(
                        &cat,
                        CatalogKind::Flat,
                        &desc.flat.path,
                    )
                    .with_context(|| label.clone())?;
                    (flat, Some("/".to_owned()))
                }
                None => (remote.manifest().root, path),
            };
            let ns = Namespace::new(stratum_fetcher::RemoteLoader::new(remote.clone()), &root)?;
            let (p, st) = pull_tree(&ns, &*remote, url, image, path, dest, jobs)?;
            (p, st, Some(remote.stats()))
        }
        None => {
            if cache.is_some() {
                bail!("--cache applies to pulls from a URL, not from a local repository");
            }
            if no_fill_cache {
                bail!("--no-fill-cache applies to pulls from a URL, not from a local repository");
            }
            if !mirrors.is_empty() {
                bail!("--mirror applies to pulls from a URL, not from a local repository");
            }
            transport_args.refuse_for_directory()?;
            if thin.is_some() {
                bail!("--thin pulls from the repository URL; give the URL (the descriptor lists them)");
            }
            let reader = crate::inspect::open_reader(repo, pubkey)?;
            let ns = reader.namespace()?;
            let source = repo.display().to_string();
            let (p, st) = pull_tree(&ns, &reader.store, &source, image, path, dest, jobs)?;
            (p, st, None)
        }
    };
    if json {
        let mut out = serde_json::json!({
            "path": ns_path, "dest": dest.display().to_string(),
            "files": stats.files, "dirs": stats.dirs, "symlinks": stats.symlinks,
            "hardlinks": stats.hardlinks, "devices": stats.devices, "bytes": stats.bytes,
            "skipped": stats.skipped,
        });
        if let Some(t) = transport {
            out["transport"] = serde_json::json!({
                "requests": t.requests, "bytes_downloaded": t.bytes_downloaded,
                "cache_hits": t.cache_hits, "cache_misses": t.cache_misses,
                "retries": t.retries, "failovers": t.failovers, "rejected": t.rejected,
                "evictions": t.evictions,
            });
        }
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        outln!(
            "pulled {ns_path} into {}: {} files, {} bytes",
            dest.display(),
            stats.files,
            stats.bytes
        );
        if let Some(t) = transport {
            outln!(
                "fetched {} bytes in {} requests; {} objects from the cache, {} downloaded",
                t.bytes_downloaded,
                t.requests,
                t.cache_hits,
                t.cache_misses
            );
        }
        for s in &stats.skipped {
            eprintln!("warning: {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves `--image` or `--path` in `ns` and materializes it into `dest`.
fn pull_tree<L: stratum_catalog::namespace::CatalogLoader>(
    ns: &Namespace<L>,
    objects: &(dyn stratum_fetcher::ObjectSource + Sync),
    source: &str,
    image: Option<String>,
    path: Option<String>,
    dest: &Path,
    jobs: Option<u32>,
) -> Result<(String, stratum_fetcher::PullStats)> {
    let ns_path = match (&image, &path) {
        (Some(name), _) => {
            let images = ns.image_index().variants(name)?;
            let rec = crate::thin::pick_image(&images, name)
                .with_context(|| format!("no image {name} in {source} (see `stratum images`)"))?;
            rec.flat_path.clone()
        }
        (None, Some(p)) => p.clone(),
        (None, None) => bail!("give --image NAME:TAG or --path PATH"),
    };
    let node = ns.resolve(&ns_path)?;
    let bar = progress::bytes_bar("pulling");
    let mut opts = stratum_fetcher::PullOptions::default();
    if let Some(j) = jobs {
        opts.jobs = j as usize;
    }
    let stats =
        stratum_fetcher::materialize(ns, &node, objects, dest, &opts, &|n| bar.set_position(n))
            .with_context(|| format!("pulling {ns_path} into {}", dest.display()))?;
    bar.finish_and_clear();
    Ok((ns_path, stats))
}
