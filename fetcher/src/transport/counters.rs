//! The counters of a transport and its cache ([`TransportStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the [`crate::Remote`] (or transport) was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Body bytes received (encoded, as on the wire), accepted or not.
    pub bytes_downloaded: u64,
    /// Objects and catalogs served by the cache without a download (a file
    /// in the cache directory, or a catalog already open in this process).
    pub cache_hits: u64,
    /// Objects and catalogs downloaded, verified and inserted.
    pub cache_misses: u64,
    /// Extra rounds over the mirrors after a failed one.
    pub retries: u64,
    /// Attempts that went to another mirror because the previous one failed.
    pub failovers: u64,
    /// Bodies refused by verification (corrupt objects, bad manifests).
    pub rejected: u64,
    /// Callers that waited for a download another caller had started
    /// (singleflight) instead of downloading themselves.
    pub shared_waits: u64,
    /// Files removed from the cache to stay under the quota.
    pub evictions: u64,
    /// Attempts that failed (network, status, refused bytes), whether or
    /// not another attempt then succeeded.
    pub failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub retries: AtomicU64,
    pub failovers: AtomicU64,
    pub rejected: AtomicU64,
    pub shared_waits: AtomicU64,
    pub evictions: AtomicU64,
    pub failures: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> TransportStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            requests: g(&self.requests),
            bytes_downloaded: g(&self.bytes_downloaded),
            cache_hits: g(&self.cache_hits),
            cache_misses: g(&self.cache_misses),
            retries: g(&self.retries),
            failovers: g(&self.failovers),
            rejected: g(&self.rejected),
            shared_waits: g(&self.shared_waits),
            evictions: g(&self.evictions),
            failures: g(&self.failures),
        }
    }

    pub fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// An object or catalog served by the cache: counted, and recorded as
    /// a metric.
    pub fn hit(&self) {
        Self::bump(&self.cache_hits);
        stratum_metrics::mount::cache_hit();
    }

    /// An object or catalog downloaded into the cache: counted, and
    /// recorded as a metric.
    pub fn miss(&self) {
        Self::bump(&self.cache_misses);
        stratum_metrics::mount::cache_miss();
    }
}
