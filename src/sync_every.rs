//! `stratum sync WISHLIST --every DURATION [--json] [--metrics HOST:PORT]`:
//! the publisher as a service (what DUCC's daemon mode does).
//!
//! - One [`crate::sync::round`] per interval: the next round starts DURATION
//!   after the previous one started (at once when a round took longer). Each
//!   round rereads the wishlist, so an edit applies at the next round, and
//!   makes one revision, or none when nothing changed. The wishlist must
//!   read at start: an error then ends the service.
//! - A failing image is in its round's report (`failed`) and keeps what it
//!   published before; a round that fails as a whole (the wishlist does not
//!   parse, the repository is locked or unreadable) is reported and the next
//!   one runs as usual. Neither stops the service.
//! - Output: per round, the report as text, or with `--json` one JSON object
//!   on one line: the report of a one-shot `sync --json` plus `round` (1, 2,
//!   …), `outcome` (`ok`, `partial`, `failed`, `cancelled`) and `error`
//!   (the round's own error, else null).
//! - SIGTERM / SIGINT: between rounds the service exits at once; during one
//!   the sync is cancelled (`SyncOptions::cancel`, checked before each image
//!   and at each block of a layer), its transaction dropped, so the
//!   repository stays at the last committed revision (FORMAT.md §9.4). Exit
//!   status 0. A second signal exits at once (status 1), which is safe too:
//!   a writer killed at any point leaves the previous revision intact.
//! - `--metrics HOST:PORT`: rounds by outcome, images by outcome, seconds per
//!   round, current revision (`stratum_metrics::sync`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use stratum_metrics::sync::RoundOutcome;
use stratum_publisher::NoProgress;

use crate::sync::{round, SyncArgs};

/// How often a wait between rounds looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

pub fn run(args: &SyncArgs, every: Duration) -> Result<ExitCode> {
    // A wishlist that cannot be read at start stops the service at once
    // (systemd shows it); later, a bad edit fails only its rounds.
    stratum_publisher::wishlist::Wishlist::load(&args.wishlist)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The second signal exits at once; the first only sets the flag.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("installing the signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    args.metrics.install()?;
    tracing::info!(wishlist = %args.wishlist.display(), ?every, "sync service started");
    let mut number: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        number += 1;
        let started = Instant::now();
        one_round(args, number, &stop)?;
        let next = started + every;
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(POLL.min(next.saturating_duration_since(Instant::now())));
        }
    }
    tracing::info!("sync service stopped by a signal");
    Ok(ExitCode::SUCCESS)
}

/// Runs round `number`, prints its report and records its metrics. Only an
/// error writing the output is returned.
fn one_round(args: &SyncArgs, number: u64, stop: &Arc<AtomicBool>) -> Result<()> {
    let started = Instant::now();
    let result = round(args, Some(stop.clone()), &NoProgress);
    let seconds = started.elapsed().as_secs_f64();
    let cancelled = stop.load(Ordering::Relaxed);
    let (outcome, revision) = match &result {
        Ok(r) if r.ok() => (RoundOutcome::Ok, Some(r.report.revision)),
        Ok(r) => (RoundOutcome::Partial, Some(r.report.revision)),
        Err(_) if cancelled => (RoundOutcome::Cancelled, None),
        Err(_) => (RoundOutcome::Failed, None),
    };
    stratum_metrics::sync::round(outcome, seconds, revision, stratum_publisher::repo::now());
    let error = result.as_ref().err().map(crate::show_chain);
    if let Some(e) = &error {
        match outcome {
            RoundOutcome::Cancelled => tracing::info!(round = number, "round cancelled: {e}"),
            _ => tracing::warn!(round = number, "round failed: {e}"),
        }
    }
    if args.json {
        let mut v = match &result {
            Ok(r) => r.json()?,
            Err(_) => json!({
                "wishlist": args.wishlist.display().to_string(),
                "seconds": seconds,
            }),
        };
        v["round"] = json!(number);
        v["outcome"] = json!(outcome.as_str());
        v["error"] = json!(error);
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!("round {number}: {}", outcome.as_str());
        match &result {
            Ok(r) => r.print()?,
            Err(_) => outln!("error: {}", error.as_deref().unwrap_or("")),
        }
    }
    Ok(())
}
