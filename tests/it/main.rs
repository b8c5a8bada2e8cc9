//! The workspace's end-to-end tests: one test binary (like ripgrep's
//! `tests/tests.rs`) with a module per area, all sharing [`support`]. They
//! run the real `stratum` binary against real tools and services started on
//! 127.0.0.1 (umoci, skopeo, nginx, Squid, docker-registry, moto, FUSE,
//! overlayfs, runc); `scripts/test.sh` installs them. A test is named
//! `area::test_name` (`cargo test --test it serve::`), which is how
//! docs/SECURITY.md cites them.
#![allow(clippy::unwrap_used)]

mod support;

mod apptainer;
mod bad_input;
mod bundle;
mod cli;
mod cold_start;
mod compact;
mod concurrency;
mod crash;
mod fanout;
mod faults;
mod flat_inline;
mod format_v2;
mod fuzz_seeds;
mod hostile;
mod lifecycle;
mod live;
mod mount;
mod mount_http;
mod oracle;
mod prefetch;
mod pull_http;
mod pull_jobs;
mod reader_trust;
mod registry;
mod registry_support;
mod regressions;
mod replicate;
mod s3;
mod serve;
mod serve_h2;
mod service;
mod snapshotter;
mod thin;
mod thin_registry;
