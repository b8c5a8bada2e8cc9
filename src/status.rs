//! `stratum status MOUNTPOINT` and `stratum reload MOUNTPOINT`, and the JSON
//! a mount serves for them.
//!
//! Mechanism (docs/DEPLOYMENT.md, "Asking a mount"): a mount of a URL
//! answers `getxattr(MOUNTPOINT, "user.stratum.status")` on its root with
//! a JSON object rendered at that moment ([`render`]). `status` reads and
//! prints it. `reload` reads the mount process's `pid` from it, sends it
//! SIGHUP (which asks a live mount's refresh thread for a refresh now),
//! and reads the status again until `refresh.refreshes` went up. The
//! field names are stable (documented in docs/DEPLOYMENT.md); fields may
//! be added, never renamed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use stratum_fetcher::fs::{Live, OpCounters, Outcome, Prefetcher, StatusFn, STATUS_XATTR};
use stratum_fetcher::Remote;

/// What a mount shows: the whole repository (following it when `live`),
/// one image (`--image`) or a thin image (`--thin`).
#[derive(Clone, Copy)]
pub enum Shown {
    Repository,
    Image,
    Thin,
}

/// The status renderer of a mount of `source` through `remote`.
pub fn provider(
    remote: Arc<Remote>,
    live: Option<Arc<Live>>,
    source: String,
    shown: Shown,
    prefetcher: Option<Prefetcher>,
    ops: Arc<OpCounters>,
) -> StatusFn {
    Arc::new(move || {
        let mut v = render(&remote, live.as_deref(), &source, shown);
        if let Some(obj) = v.as_object_mut() {
            if let Some(p) = &prefetcher {
                obj.insert("prefetch".into(), json!(p.report()));
            }
            obj.insert("requests".into(), json!(ops.snapshot()));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    })
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The status object; see docs/DEPLOYMENT.md for the fields.
pub fn render(remote: &Remote, live: Option<&Live>, source: &str, shown: Shown) -> Value {
    let status = live.map(Live::status);
    let (manifest, manifest_id) = match &status {
        Some(s) => (s.manifest.clone(), s.manifest_id),
        None => (remote.manifest().clone(), remote.manifest_id()),
    };
    let published = UNIX_EPOCH + Duration::from_secs(manifest.timestamp);
    let refresh = status.map(|s| {
        let last = s.last.map(|r| {
            let (from, to) = match r.outcome {
                Outcome::Switched { from, to } => (Some(from), Some(to)),
                _ => (None, None),
            };
            let reason = match &r.outcome {
                Outcome::Failed(why) => Some(why.clone()),
                _ => None,
            };
            json!({
                "at": rfc3339(r.at),
                "at_unix": unix(r.at),
                "seconds": r.took.as_secs_f64(),
                "outcome": r.outcome.as_str(),
                "reason": reason,
                "from_revision": from,
                "to_revision": to,
            })
        });
        json!({
            "interval_seconds": s.interval.as_secs_f64(),
            "refreshes": s.refreshes,
            "failures": s.failures,
            "last": last,
            "next": s.next.map(rfc3339),
            "next_unix": s.next.map(unix),
            "catalogs": {
                "slots": s.catalogs.slots,
                "open": s.catalogs.open,
                "released": s.catalogs.released,
                "reopened": s.catalogs.reopened,
            },
        })
    });
    let stats = remote.stats();
    let usage = remote.cache_usage();
    json!({
        "pid": std::process::id(),
        "source": source,
        "shows": match shown {
            Shown::Repository => "repository",
            Shown::Image => "image",
            Shown::Thin => "thin",
        },
        "live": live.is_some(),
        "urls": remote.urls(),
        "mirror": remote.mirror_in_use(),
        "repository": manifest.name,
        "revision": manifest.revision,
        "published": rfc3339(published),
        "published_unix": manifest.timestamp,
        "root": manifest.root.to_hex(),
        "manifest": manifest_id.to_hex(),
        "refresh": refresh,
        "cache": {
            "dir": remote.cache_dir(),
            "bytes_used": usage.bytes,
            "files": usage.files,
            "quota_bytes": usage.quota,
        },
        "fetched": {
            "requests": stats.requests,
            "objects": stats.cache_misses,
            "bytes": stats.bytes_downloaded,
        },
        "cache_hits": stats.cache_hits,
        "cache_misses": stats.cache_misses,
        "download_errors": stats.failures,
        "evictions": stats.evictions,
    })
}

/// Reads the status of the mount at `mountpoint`.
pub fn read(mountpoint: &Path) -> Result<Value> {
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::getxattr(mountpoint, STATUS_XATTR, &mut buf) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => bail!(
            "{} is not the root of a `stratum mount` of a URL (it has no {STATUS_XATTR})",
            mountpoint.display()
        ),
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("reading {STATUS_XATTR} of {}", mountpoint.display()))
        }
    };
    serde_json::from_slice(&buf[..n])
        .with_context(|| format!("{STATUS_XATTR} of {} is not JSON", mountpoint.display()))
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The directory a `stratum mount` of a URL is mounted on.
    mountpoint: PathBuf,
    /// Print the status object (fields: docs/DEPLOYMENT.md).
    #[arg(long)]
    json: bool,
}

pub fn status(a: StatusArgs) -> Result<ExitCode> {
    let v = read(&a.mountpoint)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    outln!(
        "source:     {} (mirror in use: {})",
        s("source"),
        s("mirror")
    );
    outln!(
        "revision:   {} of {}, published {}",
        s("revision"),
        s("repository"),
        s("published")
    );
    match &v["refresh"] {
        Value::Null => outln!("refresh:    off (pinned: --refresh 0, --image or --thin)"),
        r => {
            outln!(
                "refresh:    every {}s, {} done, {} failed, next {}",
                r["interval_seconds"],
                r["refreshes"],
                r["failures"],
                r["next"].as_str().unwrap_or("now")
            );
            let last = &r["last"];
            if !last.is_null() {
                let mut line = format!(
                    "last:       {} at {} ({:.3}s)",
                    last["outcome"].as_str().unwrap_or("?"),
                    last["at"].as_str().unwrap_or("?"),
                    last["seconds"].as_f64().unwrap_or(0.0)
                );
                if let Some(why) = last["reason"].as_str() {
                    line.push_str(": ");
                    line.push_str(why);
                }
                outln!("{line}");
            }
        }
    }
    let c = &v["cache"];
    outln!(
        "cache:      {} ({} of {} bytes, {} files)",
        c["dir"].as_str().unwrap_or("?"),
        c["bytes_used"],
        c["quota_bytes"],
        c["files"]
    );
    let f = &v["fetched"];
    outln!(
        "fetched:    {} objects, {} bytes in {} requests; cache hits {}, misses {}; download errors {}",
        f["objects"],
        f["bytes"],
        f["requests"],
        v["cache_hits"],
        v["cache_misses"],
        v["download_errors"]
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ReloadArgs {
    /// The directory a live `stratum mount` (a URL, without --image or --thin) is mounted on.
    mountpoint: PathBuf,
    /// How long to wait for the refresh to finish.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn reload(a: ReloadArgs) -> Result<ExitCode> {
    let before = read(&a.mountpoint)?;
    if before["refresh"].is_null() {
        bail!(
            "{} is pinned to revision {} (--refresh 0, --image or --thin): there is nothing to reload",
            a.mountpoint.display(),
            before["revision"]
        );
    }
    let done = before["refresh"]["refreshes"].as_u64().unwrap_or(0);
    let pid = before["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        .context("the status names no mount process")?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("sending SIGHUP to the mount process {}", pid.as_raw_pid()))?;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = read(&a.mountpoint)?;
        let r = &now["refresh"];
        if r["refreshes"].as_u64().unwrap_or(0) > done {
            let last = &r["last"];
            outln!("revision {}", now["revision"]);
            if let Some(why) = last["reason"].as_str() {
                eprintln!("error: the refresh failed: {why}");
                return Ok(ExitCode::FAILURE);
            }
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > a.timeout {
            bail!(
                "no refresh finished within {} (the mount stays on revision {})",
                humantime::format_duration(a.timeout),
                now["revision"]
            );
        }
    }
}
