//! `stratum compact`: re-encode objects densely, off the publish path.
//!
//! An object's id is the hash of its *uncompressed* bytes, so its encoding
//! can change without touching any catalog or manifest. Publishing uses a
//! fast zstd level; compaction re-encodes what was published since the last
//! run at a high level, in parallel, replacing each file atomically (temp +
//! rename) only when the new encoding is smaller and decodes to the same id.
//! Readers see the old or the new file, both valid, at any moment.
//!
//! Which objects are new is decided by modification time against the start
//! of the last completed run (`.stratum/compacted`); a re-encoded file keeps
//! its original mtime, so the next run skips it.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use stratum_catalog::layout::COMPACTED_PATH as STATE_PATH;
use stratum_catalog::{object, ObjectId};

use crate::error::{PublishError, Result};
use crate::repo::Repository;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CompactReport {
    pub level: i32,
    /// Objects looked at (published since the last run, or all with `all`).
    pub examined: u64,
    pub rewritten: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
}

/// Re-encodes objects of `repo` at zstd `level` with `threads` workers.
pub fn compact(
    repo: &Repository,
    level: i32,
    all: bool,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CompactReport> {
    let started = Instant::now();
    if repo.local_dir().is_none() {
        return Err(crate::error::PublishError::Repo {
            repo: repo.dir().display().to_string(),
            reason: "compact rewrites objects in place and works on a local directory only".into(),
        });
    }
    let lock = repo.lock()?;
    let run_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let state = repo.dir().join(STATE_PATH);
    let since = if all {
        0
    } else {
        fs::read_to_string(&state)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let backend = repo.store().backend().clone();
    let paths = backend.list("data/")?;
    let queue = Mutex::new(paths.into_iter());
    let (examined, rewritten, before, after) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let first_error: Mutex<Option<PublishError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut enc = match object::Encoder::new(level) {
                    Ok(e) => e,
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e.into());
                        return;
                    }
                };
                loop {
                    if first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some()
                    {
                        return;
                    }
                    let Some(rel) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                        return;
                    };
                    match one(repo.dir(), &rel, since, &mut enc) {
                        Ok(None) => {}
                        Ok(Some((old, new))) => {
                            examined.fetch_add(1, Ordering::Relaxed);
                            before.fetch_add(old, Ordering::Relaxed);
                            after.fetch_add(new, Ordering::Relaxed);
                            if new < old {
                                rewritten.fetch_add(1, Ordering::Relaxed);
                            }
                            progress(examined.load(Ordering::Relaxed));
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    backend.sync()?;
    lock.mark_clean()?;
    let tmp = state.with_extension("tmp");
    fs::write(&tmp, format!("{run_start}\n"))
        .and_then(|_| fs::rename(&tmp, &state))
        .map_err(|e| PublishError::Io {
            path: state.display().to_string(),
            error: e,
        })?;
    Ok(CompactReport {
        level,
        examined: examined.into_inner(),
        rewritten: rewritten.into_inner(),
        bytes_before: before.into_inner(),
        bytes_after: after.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Re-encodes one object file if it is new since `since`; returns its size
/// before and after (after = before when the old encoding was kept).
fn one(
    root: &Path,
    rel: &str,
    since: u64,
    enc: &mut object::Encoder,
) -> Result<Option<(u64, u64)>> {
    let io = |path: &Path, error| PublishError::Io {
        path: path.display().to_string(),
        error,
    };
    let Ok((id, _kind)) = ObjectId::parse_path(rel) else {
        return Ok(None);
    };
    let path = root.join(rel);
    let meta = fs::metadata(&path).map_err(|e| io(&path, e))?;
    let mtime = meta.modified().map_err(|e| io(&path, e))?;
    let secs = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if secs < since {
        return Ok(None);
    }
    let old = fs::read(&path).map_err(|e| io(&path, e))?;
    let data = object::decode(&id, &old)?;
    let new = enc.encode(&data)?;
    if new.len() >= old.len() {
        return Ok(Some((old.len() as u64, old.len() as u64)));
    }
    // Never replace a good object with a bad one.
    if object::decode(&id, &new)? != data {
        return Err(PublishError::Repo {
            repo: root.display().to_string(),
            reason: format!("re-encoding {id} changed its bytes"),
        });
    }
    let dir = root.join(stratum_catalog::backend::TMP_DIR);
    let mut tmp = tempfile::Builder::new()
        .prefix("compact-")
        .tempfile_in(&dir)
        .map_err(|e| io(&dir, e))?;
    std::io::Write::write_all(&mut tmp, &new).map_err(|e| io(tmp.path(), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(|e| io(tmp.path(), e))?;
    }
    // Keep the original mtime so that later runs know it is done.
    tmp.as_file()
        .set_modified(mtime)
        .map_err(|e| io(tmp.path(), e))?;
    // The file it replaces was durable: so must this one be before the
    // rename, or a crash could leave an empty object in its place.
    tmp.as_file().sync_all().map_err(|e| io(tmp.path(), e))?;
    tmp.persist(&path).map_err(|e| io(&path, e.error))?;
    Ok(Some((old.len() as u64, new.len() as u64)))
}
