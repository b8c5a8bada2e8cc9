//! `stratum gc`, `history`, `tag`, `rollback`, `rm` and `compact`: the life
//! of a repository after publishing (see `stratum_publisher::{gc, history}`).
//! This module only parses arguments and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::manifest;
use stratum_publisher::gc::{gc, GcOptions};
use stratum_publisher::history;
use stratum_publisher::Repository;

/// `30d`, `12h`, `90m`, `45s` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by s, m, h or d (e.g. 30d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The repository's private key (PEM, from `stratum keygen`); signs the new revision.
    #[arg(long)]
    key: PathBuf,
    /// How long the trees of a retired image (removed, or replaced by a new digest for
    /// its tag) stay for the nodes still using it: 30d, 12h, 90m, 45s.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    grace: u64,
    /// Keep every object the newest N revisions reach (tagged revisions are always kept).
    #[arg(long, value_name = "N", default_value_t = 10)]
    keep_revisions: usize,
    /// Never delete an object younger than this, reachable or not.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    safety_window: u64,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report (images, trees, objects and bytes removed; revisions kept) as JSON.
    #[arg(long)]
    json: bool,
    /// Take this Unix time as now (for tests and for planning: "what would go in a week").
    #[arg(long, value_name = "UNIX_SECONDS", env = "STRATUM_NOW")]
    now: Option<u64>,
}

pub fn run_gc(a: GcArgs) -> Result<ExitCode> {
    let sk = manifest::load_signing_key(&a.key)?;
    let repo = Repository::open(&a.repo)?;
    let opts = GcOptions {
        grace: a.grace,
        keep_revisions: a.keep_revisions.max(1),
        safety_window: a.safety_window,
        dry_run: a.dry_run,
        now: a.now,
    };
    let r = gc(&repo, &sk, &opts)
        .with_context(|| format!("garbage-collecting {}", a.repo.display()))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let would = if r.dry_run { "would be " } else { "" };
    for i in &r.images_removed {
        outln!("expired  {i}");
    }
    outln!(
        "{} retired images {would}removed ({} still in their grace period), {} flat and {} layer trees",
        r.images_removed.len(),
        r.images_in_grace,
        r.flat_trees_removed,
        r.layer_trees_removed
    );
    outln!(
        "{} objects {would}removed ({} bytes); {} reachable from revisions {:?}; {} unreferenced but younger than the safety window",
        r.objects_removed, r.bytes_removed, r.objects_reachable, r.revisions_kept, r.objects_too_young
    );
    if r.new_revision {
        outln!("published revision {}", r.revision);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// Show at most N revisions.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print a JSON object: `revisions` (number, Unix timestamp, manifest id, tags) and
    /// `older_removed`.
    #[arg(long)]
    json: bool,
    /// Verify the manifests with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

fn public_key(
    repo: &Repository,
    pubkey: Option<&Path>,
) -> Result<stratum_thin_image::VerifyingKey> {
    Ok(match pubkey {
        Some(p) => manifest::load_verifying_key(p)?,
        None => repo.public_key()?,
    })
}

pub fn run_history(a: HistoryArgs) -> Result<ExitCode> {
    let repo = Repository::open(&a.repo)?;
    let vk = public_key(&repo, a.pubkey.as_deref())?;
    let (revs, truncated) = history::history(repo.store(), &vk, a.limit)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "revisions": revs,
                "older_removed": truncated,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in &revs {
        let tags = if r.tags.is_empty() {
            String::new()
        } else {
            format!("  tags: {}", r.tags.join(", "))
        };
        outln!(
            "{:>6}  {}  manifest {}{tags}",
            r.revision,
            crate::show_time(r.timestamp),
            &r.manifest_id[..16]
        );
    }
    if truncated {
        outln!("(older revisions were removed by garbage collection)");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct TagArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The tag: 1-128 characters of [A-Za-z0-9._-].
    name: String,
    /// The revision to name (default: the current one).
    #[arg(long, value_name = "N", conflicts_with = "delete")]
    revision: Option<u64>,
    /// Remove the tag instead.
    #[arg(long)]
    delete: bool,
    /// The repository's private key (PEM, from `stratum keygen`); signs the new revision.
    #[arg(long)]
    key: PathBuf,
    /// Print the new revision and the tag as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_tag(a: TagArgs) -> Result<ExitCode> {
    let sk = manifest::load_signing_key(&a.key)?;
    let repo = Repository::open(&a.repo)?;
    if a.delete {
        let (rev, removed) = history::untag(&repo, &sk, &a.name)?;
        if !removed {
            bail!("no tag {:?} in {}", a.name, a.repo.display());
        }
        if a.json {
            outln!(
                "{}",
                serde_json::json!({ "revision": rev, "deleted": a.name })
            );
        } else {
            outln!("tag {} removed; published revision {rev}", a.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (rev, t) = history::tag(&repo, &sk, &a.name, a.revision)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "revision": rev, "tag": t }))?
        );
    } else {
        outln!(
            "tag {} -> revision {}; published revision {rev}",
            t.name,
            t.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The revision whose images to publish again.
    #[arg(long, value_name = "N")]
    to: u64,
    /// The repository's private key (PEM, from `stratum keygen`); signs the new revision.
    #[arg(long)]
    key: PathBuf,
    /// Print the report (images restored and unlinked, new revision) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_rollback(a: RollbackArgs) -> Result<ExitCode> {
    let sk = manifest::load_signing_key(&a.key)?;
    let repo = Repository::open(&a.repo)?;
    let r = history::rollback(&repo, &sk, a.to)
        .with_context(|| format!("rolling {} back to revision {}", a.repo.display(), a.to))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for n in &r.restored {
            outln!("restored {n}");
        }
        for n in &r.unlinked {
            outln!("unlinked {n}");
        }
        outln!(
            "published revision {} with the images of revision {}",
            r.revision,
            r.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The image names to unlink from /images.
    #[arg(required = true, value_name = "NAME:TAG")]
    images: Vec<String>,
    /// The repository's private key (PEM, from `stratum keygen`); signs the new revision.
    #[arg(long)]
    key: PathBuf,
    /// Print the new revision and the removed names as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_rm(a: RmArgs) -> Result<ExitCode> {
    let sk = manifest::load_signing_key(&a.key)?;
    let repo = Repository::open(&a.repo)?;
    let rev = history::remove_images(&repo, &sk, &a.images)
        .with_context(|| format!("removing images from {}", a.repo.display()))?;
    if a.json {
        outln!(
            "{}",
            serde_json::json!({ "revision": rev, "removed": a.images })
        );
    } else {
        outln!(
            "unlinked {}; their trees stay until `stratum gc` after the grace period; published revision {rev}",
            a.images.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct CompactArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// zstd level (1-22); 19 is about 15% smaller than the publish level, and slow.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Look at every object, not only those published since the last run.
    #[arg(long)]
    all: bool,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report (objects examined and rewritten, bytes before and after) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_compact(a: CompactArgs) -> Result<ExitCode> {
    let CompactArgs {
        repo,
        level,
        all,
        threads,
        json,
    } = a;
    let r = Repository::open(&repo)?;
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let bar = crate::progress::bytes_bar("compacting (objects)");
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

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("45"), Ok(45));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
