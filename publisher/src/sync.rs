//! `stratum sync`: make the repository publish exactly what a wishlist asks
//! for, in one signed revision.
//!
//! 1. Expand the inputs: tag globs through the registry's tag list.
//! 2. Resolve each reference to its manifest digest(s) — one request per
//!    tag (plus nested indexes). A name that already points at that digest
//!    is *kept* without fetching anything else: an unchanged wishlist on an
//!    unchanged registry downloads no blob.
//! 3. Publish the rest (*added* or *updated*) into one [`Transaction`]; one
//!    failing image is reported and the others go on.
//! 4. *Retire* the registry images (source `docker://…`) no input wants any
//!    more: unlinked from `/images` now, recorded with the time, their trees
//!    left for garbage collection. An input that failed protects what it
//!    published before (a registry outage never retires anything).
//! 5. Commit (no revision when nothing changed) and append one event per
//!    image to the JSON-lines log.
//!
//! A sync can be cancelled ([`SyncOptions::cancel`], set by `stratum sync
//! --every` on SIGTERM): it is checked before each image and while layers
//! stream, and a cancelled sync drops its transaction, so the repository
//! stays at the revision it had (FORMAT.md §9.4) and [`PublishError::Cancelled`]
//! is returned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use stratum_catalog::manifest::load_signing_key;
use stratum_registry::{Credentials, Platform, Reference, Registry, RegistryConfig};

use crate::error::{PublishError, Result};
use crate::event_log::{Action, Event, EventLog, Status};
use crate::publish::{Outputs, Progress, Transaction};
use crate::repo::Repository;
use crate::source::registry::{self as registry_source, ResolvedManifest};
use crate::source::{image_names, ImageSource, PlatformSelection};
use crate::wishlist::{Input, Platforms, Wishlist};

#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Contact the registries and report, but publish and retire nothing.
    pub dry_run: bool,
    /// What a layer may hold (entries, paths, sizes, compression ratio).
    pub limits: crate::Limits,
    /// Set (from another thread, e.g. a signal handler) to stop the sync as
    /// soon as possible without publishing anything.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl SyncOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancelled() {
            return Err(PublishError::Cancelled);
        }
        Ok(())
    }
}

/// One image in the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncItem {
    /// `NAME:TAG` as published (for a failure before any name was known:
    /// the input, e.g. `images[2] docker://…`).
    pub name: String,
    /// The registry reference it comes from.
    pub source: String,
    pub digest: Option<String>,
    /// For `updated` and `retired`: what the name pointed to before.
    pub previous_digest: Option<String>,
    pub platform: Option<String>,
    pub error: Option<String>,
    pub layers_ingested: u64,
    pub layers_skipped: u64,
    /// Compressed layer bytes downloaded.
    pub bytes: u64,
    pub seconds: f64,
    /// The prefetch list the wishlist gives for this image, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<crate::prefetch::PrefetchReport>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub wishlist: String,
    pub repository: String,
    pub dry_run: bool,
    /// The revision current after the sync.
    pub revision: u64,
    pub new_revision: bool,
    pub added: Vec<SyncItem>,
    pub updated: Vec<SyncItem>,
    pub kept: Vec<SyncItem>,
    pub retired: Vec<SyncItem>,
    pub failed: Vec<SyncItem>,
    pub seconds: f64,
}

/// The registry settings a wishlist gives (`registries:`), with credentials
/// read from the environment variables it names.
pub fn registry_config(wl: &Wishlist) -> Result<RegistryConfig> {
    let mut config = RegistryConfig::default();
    for (host, s) in &wl.registries {
        if s.insecure {
            config.insecure.push(host.clone());
        }
        if let Some(ca) = &s.ca_file {
            config.ca_files.push(ca.clone());
        }
        if let (Some(u), Some(p)) = (&s.username_env, &s.password_env) {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| PublishError::Image {
                    image: wl.origin.clone(),
                    reason: format!(
                        "registries.{host}: environment variable {name} is not set (it holds the credentials)"
                    ),
                })
            };
            config.credentials.insert(
                host.clone(),
                Credentials {
                    username: var(u)?,
                    password: var(p)?,
                },
            );
        }
    }
    Ok(config)
}

fn selection(p: &Platforms) -> PlatformSelection {
    match p {
        Platforms::All => PlatformSelection::All,
        // The default (no `platforms:`) is the host's: then a single-platform
        // image is taken whatever its platform, as `stratum publish` does.
        Platforms::List(l) if l.len() == 1 && l[0] == Platform::host() => PlatformSelection::Host,
        Platforms::List(l) => PlatformSelection::List(l.clone()),
    }
}

/// Runs one sync of `wl` (see the module documentation).
pub fn sync(
    wl: &Wishlist,
    registry: &Arc<Registry>,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let started = Instant::now();
    let repo = Repository::open(&wl.repository)?;
    let key = load_signing_key(&wl.signing_key)?;
    let mut log = EventLog::open(&wl.event_log).map_err(|e| PublishError::Image {
        image: wl.origin.clone(),
        reason: format!("event log: {e}"),
    })?;
    let mut tx = Transaction::begin(&repo, &key)?;
    tx.set_limits(opts.limits);
    let mut report = SyncReport {
        wishlist: wl.origin.clone(),
        repository: wl.repository.display().to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut wanted: HashSet<String> = HashSet::new();
    // Names (exact, or `base+…`) and repositories a failure protects.
    let mut protected_names: Vec<String> = Vec::new();
    let mut protected_repos: Vec<(String, String)> = Vec::new();

    for input in &wl.images {
        opts.check_cancel()?;
        let sel = selection(&input.platforms);
        // Reread every round, as the wishlist is: a new recording applies
        // at the next sync.
        let prefetch = match input
            .prefetch
            .as_deref()
            .map(crate::prefetch::read_list_file)
        {
            None => None,
            Some(Ok(list)) => Some(list),
            Some(Err(e)) => {
                report.failed.push(SyncItem {
                    name: format!("{} {}", input.label(), input.source),
                    source: input.source.to_string(),
                    error: Some(format!("prefetch: {e}")),
                    ..Default::default()
                });
                protected_repos.push((input.source.host.clone(), input.source.repository.clone()));
                continue;
            }
        };
        let targets = match targets(registry, input) {
            Ok(t) => t,
            Err(e) => {
                report.failed.push(SyncItem {
                    name: format!("{} {}", input.label(), input.source),
                    source: input.source.to_string(),
                    error: Some(e.to_string()),
                    ..Default::default()
                });
                protected_repos.push((input.source.host.clone(), input.source.repository.clone()));
                continue;
            }
        };
        for target in targets {
            opts.check_cancel()?;
            let (reference, base) = match target {
                Ok(t) => t,
                Err((source, e)) => {
                    report.failed.push(SyncItem {
                        name: format!("{} {source}", input.label()),
                        source,
                        error: Some(e),
                        ..Default::default()
                    });
                    continue;
                }
            };
            sync_target(
                registry,
                &mut tx,
                &reference,
                &base,
                &sel,
                &input.outputs,
                prefetch.as_deref(),
                opts,
                progress,
                &mut report,
                &mut wanted,
                &mut protected_names,
            );
        }
    }

    // An image cut short by a cancel failed for that reason alone: give up
    // the whole transaction rather than retire what was not looked at.
    opts.check_cancel()?;
    // Retire what no input wants.
    let retire: Vec<(String, String, String, String)> = tx
        .images()?
        .into_iter()
        .filter(|r| r.source.starts_with("docker://") && !wanted.contains(&r.name))
        .filter(|r| {
            !protected_names
                .iter()
                .any(|p| r.name == *p || r.name.starts_with(&format!("{p}+")))
        })
        .filter(|r| {
            let Ok(src) = Reference::parse(&r.source) else {
                return true;
            };
            !protected_repos
                .iter()
                .any(|(h, p)| src.registry() == h && src.repository() == p)
        })
        .map(|r| {
            (
                r.name.clone(),
                r.source.clone(),
                r.manifest_digest.to_string(),
                r.platform.clone(),
            )
        })
        .collect();
    for (name, source, digest, platform) in retire {
        if !opts.dry_run {
            tx.remove_image(&name)?;
        }
        report.retired.push(SyncItem {
            name,
            source,
            previous_digest: Some(digest),
            platform: Some(platform),
            ..Default::default()
        });
    }

    opts.check_cancel()?;
    // Nothing was changed in a dry run, so this only releases the lock.
    let (revision, new_revision) = tx.commit(&key)?;
    report.revision = revision;
    report.new_revision = new_revision;
    report.seconds = started.elapsed().as_secs_f64();
    if !opts.dry_run {
        record_metrics(&report);
    }
    write_events(&mut log, &report).map_err(|e| PublishError::Image {
        image: wl.origin.clone(),
        reason: format!("event log {}: {e}", wl.event_log.display()),
    })?;
    Ok(report)
}

type Target = std::result::Result<(Reference, String), (String, String)>;

/// The references an input stands for, each with its base `NAME:TAG`.
fn targets(registry: &Arc<Registry>, input: &Input) -> Result<Vec<Target>> {
    if !input.is_glob() {
        let reference = Reference::parse(&input.source.to_string())?;
        let base = input
            .publish_name()
            .ok_or_else(|| PublishError::InvalidName {
                name: input.source.to_string(),
                reason: format!("{}: no valid name to publish under", input.label()),
            })?;
        return Ok(vec![Ok((reference, base.to_string()))]);
    }
    let repo = Reference::parse(&input.source.with_tag("latest").to_string())?;
    let tags = registry.tags(&repo)?;
    Ok(tags
        .iter()
        .filter(|t| input.selects_tag(t))
        .map(|t| {
            let r = repo.with_tag(t);
            input
                .publish_name_for(t)
                .map(|n| (r.clone(), n.to_string()))
                .map_err(|e| (r.to_string(), e.to_string()))
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn sync_target(
    registry: &Arc<Registry>,
    tx: &mut Transaction<'_>,
    reference: &Reference,
    base: &str,
    sel: &PlatformSelection,
    outputs: &Outputs,
    prefetch: Option<&[u8]>,
    opts: &SyncOptions,
    progress: &dyn Progress,
    report: &mut SyncReport,
    wanted: &mut HashSet<String>,
    protected: &mut Vec<String>,
) {
    let original = reference.to_string();
    let started = Instant::now();
    let resolved = match registry_source::resolve(registry, reference, &original, sel) {
        Ok(r) => r,
        Err(e) => {
            protected.push(base.to_owned());
            report.failed.push(SyncItem {
                name: base.to_owned(),
                source: original,
                error: Some(e.to_string()),
                seconds: started.elapsed().as_secs_f64(),
                ..Default::default()
            });
            return;
        }
    };
    for rm in resolved {
        let t0 = Instant::now();
        let names = image_names(base, rm.placement.as_ref());
        wanted.extend(names.iter().cloned());
        let digest = rm.digest.to_string();
        let current = |n: &str| tx.image(n).ok().flatten();
        let previous = current(&names[0]).map(|r| r.manifest_digest.to_string());
        let mut item = SyncItem {
            name: names[0].clone(),
            source: original.clone(),
            digest: Some(digest.clone()),
            previous_digest: previous.clone().filter(|p| *p != digest),
            platform: rm.platform.as_ref().map(ToString::to_string),
            ..Default::default()
        };
        let wanted_outputs = outputs.names();
        let unchanged = names.iter().all(|n| {
            current(n).is_some_and(|r| r.manifest_digest == digest && r.outputs == wanted_outputs)
        });
        if unchanged {
            item.platform = current(&names[0]).map(|r| r.platform.clone());
            if let Err(e) = store_prefetch(tx, &names, prefetch, opts, &mut item) {
                protected.push(base.to_owned());
                item.error = Some(e.to_string());
                item.seconds = t0.elapsed().as_secs_f64();
                report.failed.push(item);
                continue;
            }
            item.seconds = t0.elapsed().as_secs_f64();
            report.kept.push(item);
            continue;
        }
        let updated = previous.is_some();
        if !opts.dry_run {
            match publish_resolved(
                registry, tx, &rm, &original, sel, base, outputs, opts, progress,
            ) {
                Ok(stats) => {
                    item.platform = Some(stats.0);
                    item.layers_ingested = stats.1;
                    item.layers_skipped = stats.2;
                    item.bytes = stats.3;
                    if let Err(e) = store_prefetch(tx, &names, prefetch, opts, &mut item) {
                        protected.push(base.to_owned());
                        item.error = Some(e.to_string());
                        item.seconds = t0.elapsed().as_secs_f64();
                        report.failed.push(item);
                        continue;
                    }
                }
                Err(e) => {
                    protected.push(base.to_owned());
                    item.error = Some(e.to_string());
                    item.seconds = t0.elapsed().as_secs_f64();
                    report.failed.push(item);
                    continue;
                }
            }
        }
        item.seconds = t0.elapsed().as_secs_f64();
        if updated {
            report.updated.push(item);
        } else {
            report.added.push(item);
        }
    }
}

/// Stores the input's prefetch list with each of `names` (none in a dry
/// run); the report of the first name goes into `item`.
fn store_prefetch(
    tx: &mut Transaction<'_>,
    names: &[String],
    prefetch: Option<&[u8]>,
    opts: &SyncOptions,
    item: &mut SyncItem,
) -> Result<()> {
    let Some(list) = prefetch.filter(|_| !opts.dry_run) else {
        return Ok(());
    };
    for n in names {
        let r = tx.set_prefetch(n, list)?;
        if item.prefetch.is_none() {
            item.prefetch = Some(r);
        }
    }
    Ok(())
}

/// Opens and publishes one resolved manifest: (platform, layers ingested,
/// layers skipped, bytes downloaded).
#[allow(clippy::too_many_arguments)]
fn publish_resolved(
    registry: &Arc<Registry>,
    tx: &mut Transaction<'_>,
    rm: &ResolvedManifest,
    original: &str,
    sel: &PlatformSelection,
    base: &str,
    outputs: &Outputs,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<(String, u64, u64, u64)> {
    let names = image_names(base, rm.placement.as_ref());
    let reports = match tx.publish_existing(&names, &rm.digest.to_string(), original, outputs)? {
        Some(r) => r,
        None => {
            let src = registry_source::open(registry, rm, original, sel)?;
            match &opts.cancel {
                Some(cancel) => tx.publish_source(
                    &Cancellable {
                        inner: &src,
                        cancel: cancel.clone(),
                    },
                    base,
                    outputs,
                    progress,
                )?,
                None => tx.publish_source(&src, base, outputs, progress)?,
            }
        }
    };
    let first = reports.first();
    Ok((
        first.map(|r| r.platform.clone()).unwrap_or_default(),
        reports.iter().map(|r| r.layers_ingested).sum(),
        first.map(|r| r.layers_skipped).unwrap_or_default(),
        reports.iter().map(|r| r.downloaded_bytes).sum(),
    ))
}

/// The images of a sync by outcome (`stratum_metrics::sync::images`).
fn record_metrics(r: &SyncReport) {
    use stratum_metrics::sync::images;
    images("added", r.added.len() as u64);
    images("updated", r.updated.len() as u64);
    images("kept", r.kept.len() as u64);
    images("retired", r.retired.len() as u64);
    images("failed", r.failed.len() as u64);
}

/// An image source whose layer streams stop when `cancel` is set.
struct Cancellable<'a> {
    inner: &'a dyn ImageSource,
    cancel: Arc<AtomicBool>,
}

impl ImageSource for Cancellable<'_> {
    fn image(&self) -> &crate::source::ResolvedImage {
        self.inner.image()
    }

    fn open_layer(
        &self,
        layer: &crate::source::LayerDescriptor,
    ) -> std::result::Result<crate::source::LayerStream, crate::source::SourceError> {
        let mut stream = self.inner.open_layer(layer)?;
        stream.set_cancel(self.cancel.clone());
        Ok(stream)
    }

    fn prepare(&self, needed: &[crate::source::LayerDescriptor], spool_dir: &std::path::Path) {
        self.inner.prepare(needed, spool_dir);
    }
}

fn write_events(
    log: &mut EventLog,
    report: &SyncReport,
) -> std::result::Result<(), crate::event_log::EventLogError> {
    let status = if report.dry_run {
        Status::DryRun
    } else {
        Status::Ok
    };
    let groups: [(&[SyncItem], Action); 5] = [
        (&report.added, Action::Add),
        (&report.updated, Action::Update),
        (&report.kept, Action::Keep),
        (&report.retired, Action::Retire),
        (&report.failed, Action::Fail),
    ];
    for (items, action) in groups {
        for i in items {
            let mut e = Event::new(action, i.name.clone(), status)
                .bytes(i.bytes)
                .took(std::time::Duration::from_secs_f64(i.seconds.max(0.0)));
            if let Some(d) = i.digest.as_ref().or(i.previous_digest.as_ref()) {
                e = e.digest(d.clone());
            }
            if let Some(err) = &i.error {
                e = e.error(err);
            }
            log.append(&e)?;
        }
    }
    Ok(())
}
