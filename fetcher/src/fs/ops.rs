//! Counters of the requests a mount's filesystem answered (`stratum status
//! --json`, field `requests`): what reached the process and what the kernel
//! kept for itself. A cold start's FUSE round trips are its own cost, so
//! these show which ones a change removed (D48).

use std::sync::atomic::{AtomicU64, Ordering};

/// Shared with the status renderer.
#[derive(Default, Debug)]
pub struct OpCounters {
    lookups: AtomicU64,
    negative: AtomicU64,
    opens: AtomicU64,
    passthrough: AtomicU64,
    reads: AtomicU64,
    flushes: AtomicU64,
}

/// A snapshot of [`OpCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// `lookup` requests.
    pub lookups: u64,
    /// Of those, names not in the directory: answered with a negative
    /// entry the kernel keeps, so the same name does not come again.
    pub negative: u64,
    /// `open` requests of files.
    pub opens: u64,
    /// Of those, files whose reads the kernel serves from the node cache's
    /// verified file itself (FUSE passthrough): none of their reads comes here.
    pub passthrough: u64,
    /// `read` requests.
    pub reads: u64,
    /// `flush` requests (one per `close` unless the kernel knows there is
    /// nothing to flush: after the first, none).
    pub flushes: u64,
}

impl OpCounters {
    pub(super) fn lookup(&self, found: bool) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if !found {
            self.negative.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn open(&self, passthrough: bool) {
        self.opens.fetch_add(1, Ordering::Relaxed);
        if passthrough {
            self.passthrough.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OpCounts {
        OpCounts {
            lookups: self.lookups.load(Ordering::Relaxed),
            negative: self.negative.load(Ordering::Relaxed),
            opens: self.opens.load(Ordering::Relaxed),
            passthrough: self.passthrough.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}
