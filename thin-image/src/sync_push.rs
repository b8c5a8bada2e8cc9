//! The thin-image pushes of `stratum sync` (the wishlist's `thin_images`
//! section, docs/WISHLIST.md): after the sync published its revision, the
//! descriptors of every image it wants are pushed ([`crate::push`]) to the
//! name the wishlist's pattern gives, each logged as a `push` event.
//!
//! Behind the `registry` feature, next to `push.rs` (see there why this is
//! `thin-image`'s and not `registry`'s).

use std::sync::Arc;
use std::time::Instant;

use stratum_catalog::error_chain;
use stratum_publisher::event_log::{Action, Event, EventLog, EventLogError, Status};
use stratum_publisher::sync::SyncReport;
use stratum_publisher::wishlist::{ThinVars, Wishlist};
use stratum_registry::{Reference, Registry};

use crate::push::push;

/// One thin-image push of a sync.
#[derive(Debug, serde::Serialize)]
pub struct ThinPush {
    pub image: String,
    pub reference: String,
    pub digest: Option<String>,
    pub platforms: Vec<String>,
    pub unchanged: bool,
    pub error: Option<String>,
    pub seconds: f64,
}

/// The wishlist's event log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("event log {path}")]
pub struct SyncPushError {
    pub path: String,
    #[source]
    pub source: EventLogError,
}

/// Pushes the thin image of every image the wishlist wants (added, updated
/// or kept: a push to a tag that already holds the same descriptor is a
/// no-op), to the name `thin_images.pattern` gives; logs each as `push`.
/// A failed push is reported in its [`ThinPush`], not as an error.
pub fn push_thin_images(
    wl: &Wishlist,
    report: &SyncReport,
    registry: &Arc<Registry>,
) -> Result<Vec<ThinPush>, SyncPushError> {
    let Some(thin) = &wl.thin_images else {
        return Ok(Vec::new());
    };
    let log_error = |source| SyncPushError {
        path: wl.event_log.display().to_string(),
        source,
    };
    let mut log = EventLog::open(&wl.event_log).map_err(log_error)?;
    let mut out = Vec::new();
    let items = report
        .added
        .iter()
        .chain(&report.updated)
        .chain(&report.kept);
    // Per-platform names ride in their NAME:TAG's index.
    for item in items.filter(|i| !i.name.contains('+')) {
        let started = Instant::now();
        let (name, tag) = item.name.rsplit_once(':').unwrap_or((&item.name, "latest"));
        let source = Reference::parse(&item.source).ok();
        let digest = item.digest.clone().unwrap_or_default();
        let platform = item.platform.clone().unwrap_or_default();
        let rendered = thin.pattern.render(&ThinVars {
            registry: source.as_ref().map(|s| s.registry()).unwrap_or(""),
            repository: source.as_ref().map(|s| s.repository()).unwrap_or(""),
            name,
            tag,
            digest: &digest,
            platform: &platform,
        });
        let result = match Reference::parse(&rendered) {
            Ok(dest) => push(
                &wl.repository,
                None,
                &item.name,
                &dest,
                &thin.urls,
                None,
                registry,
            )
            .map_err(|e| error_chain(&e)),
            Err(e) => Err(error_chain(&e)),
        };
        let seconds = started.elapsed().as_secs_f64();
        let mut event =
            Event::new(Action::Push, item.name.clone(), Status::Ok).took(started.elapsed());
        let push = match result {
            Ok(p) => {
                event = event.digest(p.digest.clone());
                ThinPush {
                    image: item.name.clone(),
                    reference: p.reference,
                    digest: Some(p.digest),
                    platforms: p.platforms,
                    unchanged: p.unchanged,
                    error: None,
                    seconds,
                }
            }
            Err(msg) => {
                event = event.error(&msg);
                ThinPush {
                    image: item.name.clone(),
                    reference: rendered.clone(),
                    digest: None,
                    platforms: Vec::new(),
                    unchanged: false,
                    error: Some(msg),
                    seconds,
                }
            }
        };
        log.append(&event).map_err(log_error)?;
        out.push(push);
    }
    Ok(out)
}
