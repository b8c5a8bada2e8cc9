//! One function per subcommand: call the library, print the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::{CatalogKind, Data, Entry, FileType, ImageRecord};
use stratum_catalog::manifest::{self, Manifest};
use stratum_catalog::namespace::{Namespace, Node, StoreLoader};
use stratum_catalog::{ObjectKind, Store};
use stratum_publisher::source::SourceContext;
use stratum_publisher::{PublishRequest, Repository};

use crate::progress;
use crate::Command;

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Keygen { keyfile } => keygen(&keyfile),
        Command::Mount {
            source,
            mountpoint,
            thin,
            urls,
            layers,
            prefetch_all,
            pubkey,
            mirrors,
            cache,
            quota,
            image,
            allow_other,
            suid,
            dev,
            overlay_xattrs,
            registry,
            transport,
        } => crate::mount::mount(crate::mount::MountArgs {
            source,
            mountpoint,
            thin,
            urls,
            layers,
            prefetch_all,
            pubkey,
            mirrors,
            cache,
            quota,
            image,
            allow_other,
            suid,
            dev,
            overlay_xattrs,
            registry,
            transport,
        }),
        Command::Umount { mountpoint } => crate::mount::umount(&mountpoint),
        Command::Compact {
            repo,
            level,
            all,
            threads,
            json,
        } => compact(&repo, level, all, threads, json),
        Command::Init {
            repo,
            key,
            name,
            urls,
        } => init(&repo, &key, name, &urls),
        Command::Publish {
            sources,
            repo,
            key,
            as_name,
            json,
            platforms,
            registry,
            thin,
            limits,
        } => publish(
            &repo, &key, sources, as_name, json, platforms, registry, thin, limits,
        ),
        Command::Thin(args) => crate::thin::run(args),
        Command::Sync(args) => crate::sync::run(args),
        Command::Replicate(args) => crate::replicate::run(args),
        Command::Rm(args) => crate::lifecycle::run_rm(args),
        Command::Gc(args) => crate::lifecycle::run_gc(args),
        Command::History(args) => crate::lifecycle::run_history(args),
        Command::Tag(args) => crate::lifecycle::run_tag(args),
        Command::Rollback(args) => crate::lifecycle::run_rollback(args),
        Command::Images { repo, json, pubkey } => images(&repo, pubkey, json),
        Command::Info { repo, json, pubkey } => info(&repo, pubkey, json),
        Command::Ls {
            repo,
            path,
            json,
            pubkey,
        } => ls(&repo, pubkey, &path, json),
        Command::Cat { repo, path, pubkey } => cat(&repo, pubkey, &path),
        Command::Check { repo, json, pubkey } => check(&repo, pubkey, json),
        Command::Pull {
            repo,
            image,
            path,
            thin,
            dest,
            json,
            pubkey,
            cache,
            mirrors,
            registry,
            transport,
        } => pull(
            &repo, pubkey, image, path, thin, &dest, json, cache, &registry, &mirrors, &transport,
        ),
        Command::Serve {
            repo,
            listen,
            max_age,
            header_timeout,
            idle_timeout,
            max_connections,
        } => crate::serve::run(
            &repo,
            &listen,
            max_age,
            crate::serve::ConnLimits {
                header_timeout: std::time::Duration::from_secs(header_timeout),
                idle_timeout: std::time::Duration::from_secs(idle_timeout),
                max_connections,
            },
        ),
    }
}

fn keygen(keyfile: &Path) -> Result<ExitCode> {
    let public = manifest::generate_keypair(keyfile)
        .with_context(|| format!("generating key {}", keyfile.display()))?;
    outln!("private key: {}", keyfile.display());
    outln!(
        "public key:  {}",
        manifest::public_key_path(keyfile).display()
    );
    outln!("fingerprint: {}", manifest::key_fingerprint(&public));
    Ok(ExitCode::SUCCESS)
}

fn init(repo: &Path, key: &Path, name: Option<String>, urls: &[String]) -> Result<ExitCode> {
    let sk = manifest::load_signing_key(key)?;
    let name = match name {
        Some(n) => n,
        None => std::path::absolute(repo)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "stratum".into()),
    };
    let m = Repository::init(repo, &sk, &name)
        .with_context(|| format!("initializing {}", repo.display()))?;
    outln!(
        "initialized repository {:?} at {} (revision {})",
        m.name,
        repo.display(),
        m.revision
    );
    if !stratum_publisher::repo::RepoLocation::from_path(repo)?.is_remote() {
        crate::stray_keys::warn_about_private_keys(repo);
    }
    if !urls.is_empty() {
        crate::thin::write_default_urls(repo, urls).with_context(|| {
            format!(
                "the repository is initialized, but recording its URLs in {} failed",
                repo.join(crate::thin::URLS_FILE).display()
            )
        })?;
        outln!("default URLs: {}", urls.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn publish(
    repo: &Path,
    key: &Path,
    sources: Vec<String>,
    as_name: Option<String>,
    json: bool,
    platforms: crate::registry_args::PlatformArgs,
    registry: crate::registry_args::RegistryArgs,
    thin: crate::thin::PublishThinArgs,
    limits: crate::limits_args::LimitsArgs,
) -> Result<ExitCode> {
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
        })
        .collect();
    let bar = progress::PublishBar(progress::bytes_bar("publishing"));
    let outcome = stratum_publisher::publish(&r, &sk, &requests, &ctx, &bar)
        .with_context(|| format!("publishing into {}", repo.display()))?;
    bar.0.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&outcome.images)?);
    } else {
        for i in &outcome.images {
            outln!(
                "{} {} {}: {} layers ingested, {} skipped, {} files, {} bytes, {} new objects ({} bytes stored), {:.2}s",
                i.status, i.name, i.manifest_digest, i.layers_ingested, i.layers_skipped, i.files, i.bytes, i.new_objects, i.new_stored_bytes, i.seconds
            );
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

/// An opened repository for reading: its store and verified manifest.
struct Reader {
    store: Store,
    manifest: Manifest,
}

fn open_reader(repo: &Path, pubkey: Option<PathBuf>) -> Result<Reader> {
    let r = Repository::open(repo)?;
    let key = match pubkey {
        Some(p) => manifest::load_verifying_key(&p)?,
        None => r.public_key()?,
    };
    let (manifest, _) = r
        .store()
        .manifest(&key)
        .with_context(|| format!("verifying {}", repo.display()))?;
    Ok(Reader {
        store: r.store().clone(),
        manifest,
    })
}

impl Reader {
    fn namespace(&self) -> Result<Namespace<StoreLoader>> {
        Ok(Namespace::new(
            StoreLoader::new(self.store.clone()),
            &self.manifest.root,
        )?)
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        let ns = self.namespace()?;
        let images = ns.image_index().all()?;
        Ok(images)
    }
}

fn images(repo: &Path, pubkey: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let images = open_reader(repo, pubkey)?.images()?;
    if json {
        let out: Vec<_> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "manifest_digest": i.manifest_digest,
                    "config_digest": i.config_digest,
                    "platform": i.platform,
                    "source": i.source,
                    "published_at": i.published_at,
                    "flat_path": i.flat_path,
                    "flat_catalog": i.flat_catalog,
                    "layer_paths": i.layers.iter().map(|l| l.layer_path.clone()).collect::<Vec<_>>(),
                    "layers": i.layers,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for i in images {
            outln!(
                "{}\t{}\t{}\t{} layers\t{}",
                i.name,
                i.manifest_digest,
                i.platform,
                i.layers.len(),
                i.flat_path
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn info(repo: &Path, pubkey: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let m = open_reader(repo, pubkey)?.manifest;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "name": m.name, "revision": m.revision, "timestamp": m.timestamp,
                "root_catalog": m.root.to_hex(),
                "previous_manifest": m.previous.map(|p| p.to_hex()),
                "format_version": stratum_catalog::FORMAT_VERSION,
            })
        );
    } else {
        outln!("name:         {}", m.name);
        outln!("revision:     {}", m.revision);
        outln!("timestamp:    {}", crate::show_time(m.timestamp));
        outln!("root catalog: {}", m.root);
    }
    Ok(ExitCode::SUCCESS)
}

fn type_char(e: &Entry) -> char {
    match e.file_type() {
        Some(FileType::Directory) => 'd',
        Some(FileType::Symlink) => 'l',
        Some(FileType::CharDevice) => 'c',
        Some(FileType::BlockDevice) => 'b',
        Some(FileType::Fifo) => 'p',
        Some(FileType::Socket) => 's',
        _ => '-',
    }
}

fn ls(repo: &Path, pubkey: Option<PathBuf>, path: &str, json: bool) -> Result<ExitCode> {
    let reader = open_reader(repo, pubkey)?;
    let ns = reader.namespace()?;
    let node = ns.resolve_following(path, path.ends_with('/'))?;
    let nodes: Vec<Node> = if node.entry.is_dir() {
        ns.children(&node)?
    } else {
        vec![node]
    };
    if json {
        let out: Vec<_> = nodes
            .iter()
            .map(|n| {
                let e = &n.entry;
                serde_json::json!({
                    "name": String::from_utf8_lossy(&e.name),
                    "type": type_char(e).to_string(),
                    "mode": e.mode, "uid": e.uid, "gid": e.gid, "size": e.size,
                    "mtime": e.mtime, "nlink": e.nlink,
                    "target": e.symlink.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for n in nodes {
        let e = &n.entry;
        let name = String::from_utf8_lossy(&e.name);
        let target = e
            .symlink
            .as_ref()
            .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
            .unwrap_or_default();
        writeln!(
            out,
            "{}{:04o} {:>5} {:>5} {:>12} {}{}",
            type_char(e),
            e.perm(),
            e.uid,
            e.gid,
            e.size,
            name,
            target
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cat(repo: &Path, pubkey: Option<PathBuf>, path: &str) -> Result<ExitCode> {
    let reader = open_reader(repo, pubkey)?;
    let ns = reader.namespace()?;
    let node = ns.resolve_following(path, true)?;
    if node.entry.file_type() != Some(FileType::Regular) {
        bail!("{path} is not a regular file");
    }
    let mut out = std::io::stdout().lock();
    match &node.entry.data {
        Data::None => {}
        Data::Inline(b) => out.write_all(b)?,
        Data::Object(id) => out.write_all(
            &reader
                .store
                .get(id, ObjectKind::Content)
                .with_context(|| format!("reading {path}"))?,
        )?,
        Data::Chunks(chunks) => {
            for c in chunks {
                out.write_all(
                    &reader
                        .store
                        .get(&c.id, ObjectKind::Content)
                        .with_context(|| format!("reading {path}"))?,
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compact(
    repo: &Path,
    level: i32,
    all: bool,
    threads: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let r = Repository::open(repo)?;
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let bar = progress::bytes_bar("compacting (objects)");
    let report =
        stratum_publisher::compact::compact(&r, level, all, threads, &|n| bar.set_position(n))
            .with_context(|| format!("compacting {}", repo.display()))?;
    bar.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "examined {} objects, rewrote {}: {} -> {} bytes at zstd level {} in {:.1}s",
            report.examined,
            report.rewritten,
            report.bytes_before,
            report.bytes_after,
            report.level,
            report.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check(repo: &Path, pubkey: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let r = Repository::open(repo)?;
    let key = match pubkey {
        Some(p) => manifest::load_verifying_key(&p)?,
        None => r.public_key()?,
    };
    let bar = progress::bytes_bar("checking");
    let report = stratum_catalog::verify::check(r.store(), &key, &|n| bar.set_position(n))
        .with_context(|| format!("checking {}", repo.display()))?;
    bar.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.findings {
            outln!("PROBLEM: {p}");
        }
        outln!(
            "revision {}: {} catalogs, {} entries, {} objects ({} bytes stored): {}",
            report.revision,
            report.catalogs,
            report.entries,
            report.objects,
            report.stored_bytes,
            if report.ok() { "OK" } else { "DAMAGED" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::too_many_arguments)]
fn pull(
    repo: &Path,
    pubkey: Option<PathBuf>,
    image: Option<String>,
    path: Option<String>,
    thin: Option<PathBuf>,
    dest: &Path,
    json: bool,
    cache: Option<PathBuf>,
    registry: &crate::registry_args::RegistryArgs,
    mirrors: &[String],
    transport_args: &crate::transport_args::TransportArgs,
) -> Result<ExitCode> {
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
            let thin = match &thin {
                Some(spec) => {
                    let (desc, label) = crate::thin::load_thin(spec, registry)?;
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
            let (p, st) = pull_tree(&ns, &*remote, url, image, path, dest)?;
            (p, st, Some(remote.stats()))
        }
        None => {
            if cache.is_some() {
                bail!("--cache applies to pulls from a URL, not from a local repository");
            }
            if !mirrors.is_empty() {
                bail!("--mirror applies to pulls from a URL, not from a local repository");
            }
            transport_args.refuse_for_directory()?;
            if thin.is_some() {
                bail!("--thin pulls from the repository URL; give the URL (the descriptor lists them)");
            }
            let reader = open_reader(repo, pubkey)?;
            let ns = reader.namespace()?;
            let source = repo.display().to_string();
            let (p, st) = pull_tree(&ns, &reader.store, &source, image, path, dest)?;
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
    objects: &dyn stratum_fetcher::ObjectSource,
    source: &str,
    image: Option<String>,
    path: Option<String>,
    dest: &Path,
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
    let opts = stratum_fetcher::PullOptions::default();
    let stats =
        stratum_fetcher::materialize(ns, &node, objects, dest, &opts, &|n| bar.set_position(n))
            .with_context(|| format!("pulling {ns_path} into {}", dest.display()))?;
    bar.finish_and_clear();
    Ok((ns_path, stats))
}
