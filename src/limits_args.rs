//! `--max-layers`, `--max-entries`, `--max-path-length`, `--max-file-size`,
//! `--max-ratio`: the ingestion limits of `publish` and `sync` (see
//! `stratum_publisher::Limits` and docs/SECURITY.md).

use anyhow::{bail, Context, Result};
use stratum_publisher::Limits;

#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Limits on what one image or layer may hold (hostile images)")]
pub struct LimitsArgs {
    /// Most layers in one image (Docker's limit is 127).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_layers)]
    pub max_layers: usize,
    /// Most tar entries in one layer.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_entries)]
    pub max_entries: u64,
    /// Longest path or link target in a layer, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_path_length)]
    pub max_path_length: usize,
    /// Largest file in a layer (e.g. 500M, 64G).
    #[arg(long, value_name = "SIZE", default_value = "64G")]
    pub max_file_size: String,
    /// Most uncompressed bytes per compressed byte of a layer, checked past
    /// the first 16 MiB: stops gzip and zstd bombs early (0: no limit).
    #[arg(long, value_name = "R", default_value_t = Limits::default().max_ratio)]
    pub max_ratio: u64,
}

impl LimitsArgs {
    pub fn limits(&self) -> Result<Limits> {
        let max_file_size =
            crate::mount::parse_size(&self.max_file_size).context("--max-file-size")?;
        if self.max_path_length == 0 {
            bail!("--max-path-length must be at least 1");
        }
        if self.max_layers == 0 {
            bail!("--max-layers must be at least 1");
        }
        Ok(Limits {
            max_layers: self.max_layers,
            max_entries: self.max_entries,
            max_path_length: self.max_path_length,
            max_file_size,
            max_ratio: self.max_ratio,
            ..Limits::default()
        })
    }
}
