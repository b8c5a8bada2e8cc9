//! `stratum sync WISHLIST.yaml [--dry-run] [--json]`: the wishlist's images
//! published in one revision (see `stratum_publisher::sync` and
//! docs/WISHLIST.md); this module only parses, prints and sets the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use stratum_publisher::sync::{registry_config, sync, SyncItem, SyncOptions, SyncReport};
use stratum_publisher::wishlist::Wishlist;

use crate::progress;
use crate::registry_args::RegistryArgs;

#[derive(clap::Args)]
pub struct SyncArgs {
    /// The wishlist (YAML, see docs/WISHLIST.md).
    wishlist: PathBuf,
    /// Contact the registries and report what would change; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    let wl = Wishlist::load(&args.wishlist)?;
    let hosts: Vec<String> = {
        let mut h: Vec<String> = wl.images.iter().map(|i| i.source.host.clone()).collect();
        h.sort();
        h.dedup();
        h
    };
    let registry = args.registry.client_with(&hosts, registry_config(&wl)?)?;
    let bar = progress::PublishBar(progress::bytes_bar("syncing"));
    let opts = SyncOptions {
        dry_run: args.dry_run,
    };
    let report = sync(&wl, &registry, &opts, &bar)
        .with_context(|| format!("syncing {}", args.wishlist.display()))?;
    bar.0.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(r: &SyncReport) {
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
                "failed" => println!(
                    "{what:8} {}: {}",
                    i.name,
                    i.error.as_deref().unwrap_or("")
                ),
                "added" | "updated" => println!(
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
                _ => println!("{what:8} {} {digest} {platform}", i.name),
            }
        }
    }
    let verb = if r.dry_run { "would be " } else { "" };
    println!(
        "{} {verb}added, {} {verb}updated, {} kept, {} {verb}retired, {} failed in {:.2}s",
        r.added.len(),
        r.updated.len(),
        r.kept.len(),
        r.retired.len(),
        r.failed.len(),
        r.seconds
    );
    if r.dry_run {
        println!("dry run: revision {} stays current", r.revision);
    } else if r.new_revision {
        println!("published revision {}", r.revision);
    } else {
        println!("nothing changed; revision {} stays current", r.revision);
    }
}
