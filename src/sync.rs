//! `stratum sync WISHLIST.yaml [--dry-run] [--json]`: the wishlist's images
//! published in one revision (see `stratum_publisher::sync` and
//! docs/WISHLIST.md) and their thin images pushed
//! (`stratum_thin_image::sync_push`); this module only parses, prints and
//! sets the exit code.
//! With `--every DURATION` it keeps running, one [`round`] per interval
//! (`crate::sync_every`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use stratum_publisher::sync::{registry_config, sync, SyncItem, SyncOptions, SyncReport};
use stratum_publisher::wishlist::Wishlist;
use stratum_publisher::Progress;
use stratum_thin_image::sync_push::{push_thin_images, ThinPush};

use crate::progress;
use crate::registry_args::RegistryArgs;

#[derive(clap::Args)]
pub struct SyncArgs {
    /// The wishlist (YAML, see docs/WISHLIST.md).
    pub wishlist: PathBuf,
    /// Contact the registries and report what would change; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON (with --every: one JSON object per line per round).
    #[arg(long)]
    pub json: bool,
    /// Keep running as a service: one round every DURATION (e.g. 5m; the next round starts
    /// DURATION after the previous one started, at once if it took longer), rereading the
    /// wishlist each time. A failing round or image never stops the service. SIGTERM or
    /// SIGINT stops it (exit 0): between rounds at once, during one by abandoning the round
    /// (the repository stays at its last revision); a second signal exits at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_every, conflicts_with = "dry_run")]
    pub every: Option<std::time::Duration>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    limits: crate::limits_args::LimitsArgs,
    #[command(flatten)]
    pub metrics: crate::metrics_args::MetricsArgs,
}

fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the interval must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 30s, 5m, 1h)")),
    }
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    if let Some(every) = args.every {
        return crate::sync_every::run(&args, every);
    }
    if args.metrics.metrics.is_some() {
        anyhow::bail!("--metrics applies to a sync that keeps running (--every)");
    }
    let bar = progress::PublishBar(progress::bytes_bar("syncing"));
    let round = round(&args, None, &bar)?;
    bar.0.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&round.json()?)?);
    } else {
        round.print()?;
    }
    Ok(if round.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What one sync did: the publisher's report and the thin-image pushes.
pub struct Round {
    pub report: SyncReport,
    pushes: Vec<ThinPush>,
}

impl Round {
    /// No image and no push failed.
    pub fn ok(&self) -> bool {
        self.report.failed.is_empty() && self.pushes.iter().all(|p| p.error.is_none())
    }

    /// The report with its `thin_images`.
    pub fn json(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(&self.report)?;
        v["thin_images"] = serde_json::to_value(&self.pushes)?;
        Ok(v)
    }

    pub fn print(&self) -> Result<()> {
        print_report(&self.report)?;
        for p in &self.pushes {
            match &p.error {
                None => outln!(
                    "thin     {} -> {}@{}{}",
                    p.image,
                    p.reference,
                    p.digest.as_deref().unwrap_or("-"),
                    if p.unchanged { " (unchanged)" } else { "" }
                ),
                Some(e) => outln!("failed   thin image of {} -> {}: {e}", p.image, p.reference),
            }
        }
        Ok(())
    }
}

/// One sync of the wishlist (read now), then the thin-image pushes; stops
/// early, publishing nothing, once `cancel` is set. An error is one of the
/// round as a whole (wishlist, repository, lock, commit); an image that
/// fails is in the report.
pub fn round(
    args: &SyncArgs,
    cancel: Option<Arc<AtomicBool>>,
    progress: &dyn Progress,
) -> Result<Round> {
    let wl = Wishlist::load(&args.wishlist)?;
    let hosts: Vec<String> = {
        let mut h: Vec<String> = wl.images.iter().map(|i| i.source.host.clone()).collect();
        h.sort();
        h.dedup();
        h
    };
    let registry = args.registry.client_with(&hosts, registry_config(&wl)?)?;
    let opts = SyncOptions {
        dry_run: args.dry_run,
        limits: args.limits.limits()?,
        cancel: cancel.clone(),
    };
    let report = sync(&wl, &registry, &opts, progress)
        .with_context(|| format!("syncing {}", args.wishlist.display()))?;
    let cancelled = cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    // Cancelled after the commit: the pushes wait for the next start.
    let pushes = if args.dry_run || cancelled {
        Vec::new()
    } else {
        push_thin_images(&wl, &report, &registry)?
    };
    Ok(Round { report, pushes })
}

fn print_report(r: &SyncReport) -> Result<()> {
    let groups: [(&str, &[SyncItem]); 5] = [
        ("added", &r.added),
        ("updated", &r.updated),
        ("kept", &r.kept),
        ("retired", &r.retired),
        ("failed", &r.failed),
    ];
    for (what, items) in groups {
        for i in items {
            let digest = i
                .digest
                .as_deref()
                .or(i.previous_digest.as_deref())
                .unwrap_or("-");
            let platform = i.platform.as_deref().unwrap_or("-");
            match what {
                "failed" => outln!(
                    "{what:8} {}: {}",
                    i.name,
                    i.error.as_deref().unwrap_or("")
                ),
                "added" | "updated" => outln!(
                    "{what:8} {} {digest} {platform}: {} layers ingested, {} skipped, {} bytes downloaded, {:.2}s{}",
                    i.name,
                    i.layers_ingested,
                    i.layers_skipped,
                    i.bytes,
                    i.seconds,
                    i.previous_digest
                        .as_deref()
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default()
                ),
                _ => outln!("{what:8} {} {digest} {platform}", i.name),
            }
        }
    }
    let verb = if r.dry_run { "would be " } else { "" };
    outln!(
        "{} {verb}added, {} {verb}updated, {} kept, {} {verb}retired, {} failed in {:.2}s",
        r.added.len(),
        r.updated.len(),
        r.kept.len(),
        r.retired.len(),
        r.failed.len(),
        r.seconds
    );
    if r.dry_run {
        outln!("dry run: revision {} stays current", r.revision);
    } else if r.new_revision {
        outln!("published revision {}", r.revision);
    } else {
        outln!("nothing changed; revision {} stays current", r.revision);
    }
    Ok(())
}
