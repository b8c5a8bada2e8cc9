//! Entry points shared by the fuzz targets (`fuzz/`) and the stable tests
//! that replay their corpora (`tests/it/fuzz_seeds.rs`). Not a stable API.

use std::time::{Duration, UNIX_EPOCH};

use crate::{Artifact, RuntimeConfig, ThinImage, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MEDIA_TYPE};

/// Target `thin_descriptor`: the bytes as a descriptor file, as an OCI image
/// config, and as the config blob and the payload of a thin-image artifact.
///
/// A descriptor that parses must survive the round trips that `stratum
/// thin` and `thin push` make of it: pretty JSON and back, artifact and
/// back, each giving the same descriptor.
pub fn descriptor_bytes(data: &[u8]) {
    let _ = RuntimeConfig::from_oci_config(data);
    let parsed = ThinImage::from_json(data);

    // The bytes as the artifact's config blob, around a valid descriptor
    // when the bytes are one, else around the bytes themselves.
    let artifact = |config: Vec<u8>, payload: Vec<u8>| Artifact {
        artifact_type: ARTIFACT_TYPE.to_owned(),
        config_media_type: CONFIG_MEDIA_TYPE.to_owned(),
        config,
        media_type: MEDIA_TYPE.to_owned(),
        payload,
        annotations: Default::default(),
    };
    let _ = ThinImage::from_artifact(&artifact(data.to_vec(), data.to_vec()));

    let Ok(thin) = parsed else {
        return;
    };
    thin.validate()
        .unwrap_or_else(|e| panic!("from_json accepted an invalid descriptor: {e}"));
    let _ = thin.check_key(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key());
    let _ = thin.platform.to_string();
    let _ = thin.flat.catalog_id();
    for l in &thin.layers {
        let _ = l.catalog_id();
    }

    let json = thin
        .to_json_pretty()
        .unwrap_or_else(|e| panic!("a parsed descriptor does not serialize: {e}"));
    let again = ThinImage::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("a serialized descriptor does not parse: {e}\n{json}"));
    assert_eq!(again, thin, "pretty JSON round trip changed the descriptor");

    let a = thin
        .to_artifact_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap_or_else(|e| panic!("a parsed descriptor does not make an artifact: {e}"));
    let back = ThinImage::from_artifact(&a)
        .unwrap_or_else(|e| panic!("a descriptor's own artifact is refused: {e}"));
    assert_eq!(back, thin, "artifact round trip changed the descriptor");

    // The bytes as the config of an artifact whose payload is valid.
    let _ = ThinImage::from_artifact(&artifact(data.to_vec(), a.payload.clone()));
}
