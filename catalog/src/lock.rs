//! A writer lock kept as an object, for stores without file locks (S3).
//!
//! The lock is the object at `path` (`.stratum/lock`), created with a
//! create-only write and holding who took it, when, and a random token:
//!
//! ```json
//! {"host":"pub1","pid":4242,"token":"…","acquired":1700000000,"refreshed":1700000030}
//! ```
//!
//! - **Exclusion**: only one create-only `PUT` of an absent object succeeds.
//! - **Liveness**: the holder rewrites the object every
//!   [`LockOptions::refresh_every`] (a conditional `PUT` on the ETag it
//!   wrote last), so a lock whose `refreshed` time is older than
//!   [`LockOptions::stale_after`] belongs to a writer that died. A waiter
//!   breaks such a lock by replacing it, conditionally on the ETag of the
//!   stale copy it read: of several waiters only one wins, and a holder
//!   that was merely slow notices its refresh fail ([`ObjectLock::lost`]).
//! - **Release**: the holder deletes the object if it still holds its token.
//!
//! Breaking relies on the clocks of the writers' machines agreeing to well
//! within `stale_after` (default 10 minutes). Even a wrongly broken lock
//! cannot lose a revision: the manifest itself is replaced conditionally on
//! the ETag read at the start of the transaction (see `backend_s3`).
//!
//! This needs a backend whose `put_if_absent` is atomic and whose `replace`
//! is conditional on what it last saw at the path, as the S3 backend's are.
//! Local directories use `flock` instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::Backend;
use crate::{Error, Result};

/// What a lock object says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// Random, so a holder recognizes its own lock.
    pub token: String,
    /// Unix seconds.
    pub acquired: u64,
    /// Unix seconds of the last refresh.
    pub refreshed: u64,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {}, taken {}s ago, refreshed {}s ago",
            self.pid,
            self.host,
            now().saturating_sub(self.acquired),
            now().saturating_sub(self.refreshed)
        )
    }
}

#[derive(Clone, Debug)]
pub struct LockOptions {
    /// A lock not refreshed for this long is broken by the next writer.
    pub stale_after: Duration,
    /// How often the holder refreshes its lock.
    pub refresh_every: Duration,
    /// How often a waiter looks again.
    pub poll: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            stale_after: Duration::from_secs(600),
            refresh_every: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// What happened while acquiring, for the caller to tell the user.
pub enum LockEvent<'a> {
    /// Another writer holds the lock; waiting for it (reported once).
    Waiting(&'a LockInfo),
    /// The lock of a writer that stopped refreshing it was broken.
    BrokeStale(&'a LockInfo),
}

/// A held lock object; released (deleted) on drop.
pub struct ObjectLock {
    backend: Arc<dyn Backend>,
    path: String,
    token: String,
    lost: Arc<AtomicBool>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn token() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn encode(info: &LockInfo) -> Vec<u8> {
    let mut v = serde_json::to_vec(info).unwrap_or_default();
    v.push(b'\n');
    v
}

impl ObjectLock {
    /// Takes the lock at `path`, waiting while a live writer holds it and
    /// breaking it when its holder stopped refreshing it.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        path: &str,
        opts: &LockOptions,
        on_event: &mut dyn FnMut(LockEvent<'_>),
    ) -> Result<Self> {
        let token = token();
        let mine = |t: u64| LockInfo {
            host: hostname(),
            pid: std::process::id(),
            token: token.clone(),
            acquired: t,
            refreshed: t,
        };
        let mut waited = false;
        loop {
            if backend.put_if_absent(path, &encode(&mine(now())))? {
                break;
            }
            // Held (or just released): read who holds it. This read also
            // records the ETag that a break below is conditional on.
            let Some(bytes) = backend.get(path)? else {
                continue;
            };
            let holder = match serde_json::from_slice::<LockInfo>(&bytes) {
                Ok(h) => h,
                Err(_) => {
                    // Not ours to read: age it by the object's own time.
                    let t = backend
                        .stat(path)?
                        .and_then(|(_, m)| m.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    LockInfo {
                        host: "?".into(),
                        pid: 0,
                        token: String::new(),
                        acquired: t,
                        refreshed: t,
                    }
                }
            };
            if now().saturating_sub(holder.refreshed) > opts.stale_after.as_secs() {
                match backend.replace(path, &encode(&mine(now()))) {
                    Ok(()) => {
                        on_event(LockEvent::BrokeStale(&holder));
                        break;
                    }
                    // Someone else broke it, or the holder refreshed it.
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            if !waited {
                on_event(LockEvent::Waiting(&holder));
                waited = true;
            }
            std::thread::sleep(opts.poll);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let (backend, key, lost, stop) =
                (backend.clone(), path.to_owned(), lost.clone(), stop.clone());
            let mut info = mine(now());
            let every = opts.refresh_every;
            std::thread::Builder::new()
                .name("stratum-lock".into())
                .spawn(move || loop {
                    {
                        let (m, cv) = &*stop;
                        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
                        let (guard, _) = cv
                            .wait_timeout_while(guard, every, |stopped| !*stopped)
                            .unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                    }
                    info.refreshed = now();
                    match backend.replace(&key, &encode(&info)) {
                        Ok(()) => {}
                        Err(Error::Conflict { .. }) => {
                            tracing::error!(
                                "{key}: another writer broke this process's repository lock; \
                                 its next manifest update will fail rather than overwrite"
                            );
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => tracing::warn!("refreshing the repository lock {key}: {e}"),
                    }
                })
                .map_err(|e| Error::io(path, e))?
        };
        Ok(ObjectLock {
            backend,
            path: path.to_owned(),
            token,
            lost,
            stop,
            refresher: Some(refresher),
        })
    }

    /// True when another writer broke this lock (it was not refreshed in
    /// time): this process must not publish.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn stop_refreshing(&mut self) {
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }

    /// Stops refreshing and deletes the lock object if it is still ours.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        self.stop_refreshing();
        if self.lost() {
            return Ok(());
        }
        // A window remains between this read and the delete; only a writer
        // that broke a lock refreshed moments ago could fall into it.
        match self.backend.get(&self.path)? {
            Some(b)
                if serde_json::from_slice::<LockInfo>(&b).is_ok_and(|i| i.token == self.token) =>
            {
                self.backend.delete(&self.path)
            }
            _ => Ok(()),
        }
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        if self.refresher.is_some() {
            if let Err(e) = self.release_inner() {
                tracing::warn!("releasing the repository lock {}: {e}", self.path);
            }
        }
    }
}
