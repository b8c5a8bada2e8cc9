//! The one CRI call the snapshotter tests need: `ImageService/PullImage`
//! (CRI v1) on a containerd socket, as the kubelet makes it. containerd
//! 1.6's `ctr images pull` fetches every blob before it unpacks; its CRI
//! plugin pulls through the unpacker that speaks the remote snapshotter
//! protocol (each layer's `Prepare` carries `containerd.io/snapshot.ref`
//! and the layer is fetched only when the snapshotter does not answer
//! `AlreadyExists`). The two messages are written out by hand (field
//! numbers of k8s.io/cri-api's api.proto), so no proto compiler runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;

/// `runtime.v1.ImageSpec` (the fields a pull needs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `runtime.v1.PullImageRequest` without auth and sandbox config.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

/// `runtime.v1.PullImageResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    #[prost(string, tag = "1")]
    pub image_ref: String,
}

/// Pulls `image` through containerd's CRI plugin at `socket` (namespace
/// `k8s.io`); returns the image id, or the gRPC status as text. Bounded
/// by `timeout`.
pub fn pull_image(socket: &Path, image: &str, timeout: Duration) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket: PathBuf = socket.to_path_buf();
    let image = image.to_string();
    rt.block_on(async move {
        let call = async {
            let channel = tonic::transport::Endpoint::try_from("http://[::1]:1")
                .map_err(|e| e.to_string())?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    tokio::net::UnixStream::connect(socket.clone())
                }))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| format!("ready: {e}"))?;
            let codec = tonic::codec::ProstCodec::<PullImageRequest, PullImageResponse>::default();
            let req = PullImageRequest {
                image: Some(ImageSpec { image }),
            };
            let resp = grpc
                .unary(
                    tonic::Request::new(req),
                    PathAndQuery::from_static("/runtime.v1.ImageService/PullImage"),
                    codec,
                )
                .await
                .map_err(|s| format!("PullImage: {s}"))?;
            Ok(resp.into_inner().image_ref)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("PullImage did not finish within {timeout:?}")),
        }
    })
}
