//! `--metrics HOST:PORT`: Prometheus metrics of a long-running command
//! (`serve`, `sync --every`, `mount`), served in the text format by
//! `metrics-exporter-prometheus` from its own HTTP listener (a thread of its
//! own, whatever the command does). The crates record through the `metrics`
//! facade with the helpers of `stratum_metrics`, which names every metric;
//! without `--metrics` no recorder is installed and recording costs nothing.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (text format) on http://HOST:PORT/metrics
    /// (any path answers the same); docs/DEPLOYMENT.md lists them.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the exporter when `--metrics` was given; the listener is bound
    /// (or the error returned) before this returns.
    pub fn install(&self) -> Result<()> {
        let Some(addr) = self.metrics else {
            return Ok(());
        };
        let mut builder = PrometheusBuilder::new().with_http_listener(addr);
        for h in stratum_metrics::HISTOGRAMS {
            builder = builder
                .set_buckets_for_metric(
                    Matcher::Full(h.name.to_owned()),
                    stratum_metrics::SECONDS_BUCKETS,
                )
                .context("metrics: histogram buckets")?;
        }
        builder
            .install()
            .with_context(|| format!("--metrics {addr}: cannot serve metrics"))?;
        stratum_metrics::describe();
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
        Ok(())
    }
}
