//! Every metric stratum records: its name, type, labels and help text, and
//! the one helper each is recorded with.
//!
//! The crates record through the [`metrics`] facade, which costs next to
//! nothing while no recorder is installed (every command but those given
//! `--metrics HOST:PORT`). The `stratum` binary installs the Prometheus
//! exporter (`metrics-exporter-prometheus`) when `--metrics` is given, calls
//! [`describe`] so that each metric has its `# HELP` line, and gives the
//! histograms the buckets of [`HISTOGRAMS`].
//!
//! Names follow Prometheus conventions as written here (counters end in
//! `_total`, units are part of the name); the exporter adds nothing to them.
//! docs/DEPLOYMENT.md lists them all; a metric added here is added there.
//!
//! Label values are bounded sets: an HTTP status, an outcome word, a mirror
//! URL from the command line. Never a path, an image name or an error text.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// A metric: name, type and help text (the labels are in the help text and
/// in docs/DEPLOYMENT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The Prometheus type of a [`Metric`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Histogram buckets for durations in seconds, from a cached request (1 ms)
/// to a sync round that publishes large images (an hour).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// `stratum serve`: the HTTP server of a repository.
pub mod serve {
    use super::*;

    /// Responses by status code (label `status`, e.g. `200`, `304`, `404`).
    pub const REQUESTS: Metric = Metric {
        name: "stratum_serve_requests_total",
        kind: Kind::Counter,
        help: "HTTP requests answered, by status code (label status)",
    };
    /// Response body bytes actually sent.
    pub const SENT_BYTES: Metric = Metric {
        name: "stratum_serve_sent_bytes_total",
        kind: Kind::Counter,
        help: "Response body bytes sent",
    };
    /// From the request to the end of its response body.
    pub const REQUEST_SECONDS: Metric = Metric {
        name: "stratum_serve_request_duration_seconds",
        kind: Kind::Histogram,
        help: "Seconds from a request to the end of its response body",
    };

    pub const ALL: &[Metric] = &[REQUESTS, SENT_BYTES, REQUEST_SECONDS];

    /// One request answered with `status`, `bytes` of body sent, in `seconds`.
    pub fn request(status: u16, bytes: u64, seconds: f64) {
        counter!(REQUESTS.name, "status" => status.to_string()).increment(1);
        counter!(SENT_BYTES.name).increment(bytes);
        histogram!(REQUEST_SECONDS.name).record(seconds);
    }
}

/// `stratum sync --every`: the publisher as a service.
pub mod sync {
    use super::*;

    /// Rounds by outcome (label `outcome`, see [`RoundOutcome`]).
    pub const ROUNDS: Metric = Metric {
        name: "stratum_sync_rounds_total",
        kind: Kind::Counter,
        help: "Sync rounds, by outcome (label outcome: ok, partial, failed, cancelled)",
    };
    /// Images by what a round did with them (label `outcome`: `added`,
    /// `updated`, `kept`, `retired`, `failed`).
    pub const IMAGES: Metric = Metric {
        name: "stratum_sync_images_total",
        kind: Kind::Counter,
        help: "Images handled by sync rounds, by outcome (label outcome: added, updated, kept, retired, failed)",
    };
    pub const ROUND_SECONDS: Metric = Metric {
        name: "stratum_sync_round_duration_seconds",
        kind: Kind::Histogram,
        help: "Seconds per sync round",
    };
    /// The revision current after the last round that read it.
    pub const REVISION: Metric = Metric {
        name: "stratum_sync_revision",
        kind: Kind::Gauge,
        help: "Revision of the repository after the last round",
    };
    /// Unix time at which the last round ended (whatever its outcome).
    pub const LAST_ROUND: Metric = Metric {
        name: "stratum_sync_last_round_timestamp_seconds",
        kind: Kind::Gauge,
        help: "Unix time at which the last sync round ended",
    };

    pub const ALL: &[Metric] = &[ROUNDS, IMAGES, ROUND_SECONDS, REVISION, LAST_ROUND];

    /// How a round ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RoundOutcome {
        /// Every image synced (a revision published, or nothing to do).
        Ok,
        /// Some images failed; the others were published.
        Partial,
        /// The round itself failed (wishlist, repository, lock, commit):
        /// nothing was published.
        Failed,
        /// Stopped by SIGTERM/SIGINT: nothing was published.
        Cancelled,
    }

    impl RoundOutcome {
        pub fn as_str(self) -> &'static str {
            match self {
                RoundOutcome::Ok => "ok",
                RoundOutcome::Partial => "partial",
                RoundOutcome::Failed => "failed",
                RoundOutcome::Cancelled => "cancelled",
            }
        }
    }

    /// `n` images handled with `outcome` (`added`, `updated`, `kept`,
    /// `retired`, `failed`).
    pub fn images(outcome: &'static str, n: u64) {
        counter!(IMAGES.name, "outcome" => outcome).increment(n);
    }

    /// A round ended with `outcome` after `seconds`; `revision` is current
    /// (when the round got as far as reading it).
    pub fn round(outcome: RoundOutcome, seconds: f64, revision: Option<u64>, unix_now: u64) {
        counter!(ROUNDS.name, "outcome" => outcome.as_str()).increment(1);
        histogram!(ROUND_SECONDS.name).record(seconds);
        if let Some(r) = revision {
            gauge!(REVISION.name).set(r as f64);
        }
        gauge!(LAST_ROUND.name).set(unix_now as f64);
    }
}

/// A node's mount (`stratum mount --metrics`): names and helpers for the
/// live mount to record with (revision, refreshes, fetches by mirror, the
/// cache).
pub mod mount {
    use super::*;

    pub const REVISION: Metric = Metric {
        name: "stratum_mount_revision",
        kind: Kind::Gauge,
        help: "Revision the mount serves",
    };
    pub const REFRESHES: Metric = Metric {
        name: "stratum_mount_refreshes_total",
        kind: Kind::Counter,
        help: "Manifest refreshes of a live mount, by outcome (label outcome: switched, unchanged, not-modified, failed)",
    };
    pub const FETCHES: Metric = Metric {
        name: "stratum_fetch_requests_total",
        kind: Kind::Counter,
        help: "HTTP requests to the repository, by mirror and outcome (labels mirror, outcome: ok, error)",
    };
    pub const FETCHED_BYTES: Metric = Metric {
        name: "stratum_fetch_bytes_total",
        kind: Kind::Counter,
        help: "Bytes received from the repository, by mirror (label mirror)",
    };
    pub const FETCH_SECONDS: Metric = Metric {
        name: "stratum_fetch_duration_seconds",
        kind: Kind::Histogram,
        help: "Seconds per request to the repository, by mirror (label mirror)",
    };
    pub const CACHE_HITS: Metric = Metric {
        name: "stratum_cache_hits_total",
        kind: Kind::Counter,
        help: "Objects found in the node's cache",
    };
    pub const CACHE_MISSES: Metric = Metric {
        name: "stratum_cache_misses_total",
        kind: Kind::Counter,
        help: "Objects not in the node's cache (fetched)",
    };
    pub const CACHE_EVICTIONS: Metric = Metric {
        name: "stratum_cache_evictions_total",
        kind: Kind::Counter,
        help: "Objects evicted from the node's cache",
    };
    pub const CACHE_BYTES: Metric = Metric {
        name: "stratum_cache_bytes",
        kind: Kind::Gauge,
        help: "Bytes in the node's cache",
    };

    pub const ALL: &[Metric] = &[
        REVISION,
        REFRESHES,
        FETCHES,
        FETCHED_BYTES,
        FETCH_SECONDS,
        CACHE_HITS,
        CACHE_MISSES,
        CACHE_EVICTIONS,
        CACHE_BYTES,
    ];

    pub fn revision(revision: u64) {
        gauge!(REVISION.name).set(revision as f64);
    }

    /// One refresh: `switched`, `unchanged` (the same manifest came back),
    /// `not-modified` (a 304) or `failed` (the mount stayed on its revision).
    pub fn refresh(outcome: &'static str) {
        counter!(REFRESHES.name, "outcome" => outcome).increment(1);
    }

    /// One request to `mirror` (its base URL): `ok` or `error`, `bytes`
    /// received, in `seconds`.
    pub fn fetch(mirror: &str, ok: bool, bytes: u64, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        counter!(FETCHES.name, "mirror" => mirror.to_owned(), "outcome" => outcome).increment(1);
        counter!(FETCHED_BYTES.name, "mirror" => mirror.to_owned()).increment(bytes);
        histogram!(FETCH_SECONDS.name, "mirror" => mirror.to_owned()).record(seconds);
    }

    pub fn cache_hit() {
        counter!(CACHE_HITS.name).increment(1);
    }

    pub fn cache_miss() {
        counter!(CACHE_MISSES.name).increment(1);
    }

    pub fn cache_evictions(n: u64) {
        counter!(CACHE_EVICTIONS.name).increment(n);
    }

    pub fn cache_bytes(bytes: u64) {
        gauge!(CACHE_BYTES.name).set(bytes as f64);
    }
}

/// Every metric, for [`describe`] and for the documentation test.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    serve::ALL.iter().chain(sync::ALL).chain(mount::ALL)
}

/// The histograms (they get [`SECONDS_BUCKETS`]).
pub const HISTOGRAMS: &[Metric] = &[
    serve::REQUEST_SECONDS,
    sync::ROUND_SECONDS,
    mount::FETCH_SECONDS,
];

/// Registers the help text of every metric with the installed recorder
/// (call once, after installing it).
pub fn describe() {
    for m in all() {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in all() {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("stratum_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}",
                m.name
            );
        }
        for h in HISTOGRAMS {
            assert_eq!(h.kind, Kind::Histogram);
        }
        assert_eq!(
            all().filter(|m| m.kind == Kind::Histogram).count(),
            HISTOGRAMS.len()
        );
    }

    #[test]
    fn every_metric_is_documented_in_deployment_md() {
        let doc = include_str!("../../docs/DEPLOYMENT.md");
        for m in all() {
            assert!(
                doc.contains(&format!("`{}`", m.name)),
                "docs/DEPLOYMENT.md does not document {}",
                m.name
            );
        }
    }
}
