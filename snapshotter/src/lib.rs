//! A containerd remote snapshotter on a live stratum mount.
//!
//! `stratum snapshotter --address SOCKET --root DIR --mount MOUNTPOINT`
//! serves containerd's Snapshots gRPC service on a unix socket (a
//! `[proxy_plugins.…]` of type `snapshot`). When containerd unpacks an
//! image, each layer's `Prepare` carries the chain ID it is about to
//! create (`containerd.io/snapshot.ref`); if that chain is a stack of
//! layers the repository publishes, the snapshot is committed at once on
//! the layer tree `MOUNTPOINT/layers/ab/<diff_id hex>` and the answer is
//! `AlreadyExists`, so containerd neither downloads nor applies the layer
//! ([`remote`]). Every other layer is an ordinary local snapshot under
//! `DIR/snapshots/<id>`, mounted as containerd's overlayfs snapshotter
//! would ([`snapshots`]); overlay mounts stack local directories over
//! repository layer trees in chain order.
//!
//! Metadata is kept in SQLite (`DIR/metadata.db`, [`store`]) and survives
//! restarts. Accesses to the mount are bounded in time: a layer tree the
//! mount no longer serves (or a stuck mount) is an error, not a hang.

pub mod error;
pub mod filter;
pub mod remote;
pub mod service;
pub mod snapshots;
pub mod store;

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

pub use error::{Error, Result};
pub use service::Service;
pub use snapshots::Snapshots;

/// Where the snapshotter listens and keeps its state.
#[derive(Clone, Debug)]
pub struct Config {
    /// The unix socket containerd's proxy plugin connects to.
    pub address: PathBuf,
    /// Local snapshots and the metadata database.
    pub root: PathBuf,
    /// The node's live whole-repository mount (`stratum mount URL …`).
    pub mount: PathBuf,
}

/// Serves until `shutdown` resolves; removes the socket when done.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    // Checked first, before anything is created: a node whose mount is not
    // up yet fails here (and its service manager retries).
    let layers = config.mount.join("layers");
    remote::bounded(&layers, remote::MOUNT_TIMEOUT, {
        let layers = layers.clone();
        move || match std::fs::metadata(&layers) {
            Ok(md) if md.is_dir() => Ok(()),
            _ => Err(Error::NotAMount(layers)),
        }
    })?;
    let snaps = Snapshots::open(&config.root, &config.mount)?;
    snaps.warm_index();
    let addr = &config.address;
    if let Some(dir) = addr.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    // A socket left by an earlier run (and only a socket) is replaced.
    if let Ok(md) = std::fs::symlink_metadata(addr) {
        if md.file_type().is_socket() {
            std::fs::remove_file(addr).map_err(Error::io(addr))?;
        }
    }
    let listener = tokio::net::UnixListener::bind(addr).map_err(Error::io(addr))?;
    tracing::info!(address = %addr.display(), root = %config.root.display(),
        mount = %config.mount.display(), "snapshotter listening");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(containerd_snapshots::server(std::sync::Arc::new(
            Service::new(snaps),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(addr);
    result.map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}
