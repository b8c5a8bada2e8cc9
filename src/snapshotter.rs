//! `stratum snapshotter`: arguments, the runtime, signals; the service is
//! the `stratum-snapshotter` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct SnapshotterArgs {
    /// The unix socket to listen on (containerd's `[proxy_plugins.stratum] address`).
    #[arg(long, value_name = "SOCKET")]
    address: PathBuf,
    /// Directory for local snapshots and the metadata database.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The node's live whole-repository mount (`stratum mount URL MOUNTPOINT`).
    #[arg(long, value_name = "MOUNTPOINT")]
    mount: PathBuf,
}

pub fn run(a: SnapshotterArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stratum-snapshotter")
        .build()
        .context("starting the async runtime")?;
    let config = stratum_snapshotter::Config {
        address: a.address,
        root: a.root,
        mount: a.mount,
    };
    rt.block_on(async move {
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {}
                        _ = t.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
            tracing::info!("signal: stopping the snapshotter");
        };
        stratum_snapshotter::serve(config, stop).await
    })
    .context("snapshotter")?;
    Ok(ExitCode::SUCCESS)
}
