//! Building a descriptor from the metadata a repository publishes.

use super::*;

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

fn record(config: &Value) -> ImageRecord {
    ImageRecord {
        name: "local/app:1.0".into(),
        manifest_digest: d("ab"),
        config_digest: d("cc"),
        platform: "linux/amd64".into(),
        source: "oci:/x:1.0".into(),
        published_at: 1_700_000_000,
        flat_path: format!("/flat/ab/{}", h("ab")),
        flat_catalog: h("11"),
        manifest: b"{}".to_vec(),
        config: serde_json::to_vec(config).unwrap(),
        layers: vec![
            ImageLayerRecord {
                digest: d("cd"),
                diff_id: d("ef"),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 99,
                layer_path: format!("/layers/ef/{}", h("ef")),
                catalog: h("22"),
            },
            ImageLayerRecord {
                digest: d("01"),
                diff_id: d("23"),
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: 100,
                layer_path: format!("/layers/23/{}", h("23")),
                catalog: h("33"),
            },
        ],
        outputs: Vec::new(),
        prefetch: None,
    }
}

fn manifest() -> Manifest {
    Manifest::new("example", 12, 1_700_000_000, ObjectId([5; 32]), None).unwrap()
}

#[test]
fn build_from_published_metadata() {
    // Docker-style config: nulls, empty strings, an ExposedPorts object.
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Hostname": "", "Env": ["PATH=/bin", "A=b c"], "Entrypoint": null, "Cmd": ["sh", "-c", "echo hi"],
            "WorkingDir": "", "User": "", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Labels": null, "StopSignal": "SIGQUIT", "Volumes": {"/data": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let key = signing_key().verifying_key();
    let urls = vec!["https://repo.example/".to_string()];
    let t = ThinImage::build(&record(&config), &manifest(), &key, &urls).unwrap();
    assert_eq!(t.schema_version, 1);
    assert_eq!(t.media_type, MEDIA_TYPE);
    assert_eq!(t.image, "local/app:1.0");
    assert_eq!(t.manifest_digest, format!("sha256:{}", h("ab")));
    assert_eq!(
        t.platform,
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None
        }
    );
    assert_eq!(
        t.config,
        RuntimeConfig {
            env: vec!["PATH=/bin".into(), "A=b c".into()],
            entrypoint: None,
            cmd: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
            working_dir: None,
            user: None,
            exposed_ports: vec!["53/udp".into(), "8080/tcp".into()],
            labels: BTreeMap::new(),
            stop_signal: Some("SIGQUIT".into()),
        }
    );
    assert_eq!(
        t.repository,
        RepositoryRef {
            name: "example".into(),
            urls: urls.clone(),
            public_key_fingerprint: key_fingerprint(&key),
            revision: 12,
        }
    );
    assert_eq!(t.flat.path, format!("/flat/ab/{}", h("ab")));
    assert_eq!(t.flat.catalog, h("11"));
    assert_eq!(t.layers.len(), 2);
    assert_eq!(t.layers[1].diff_id, format!("sha256:{}", h("23")));
    assert_eq!(t.layers[1].path, format!("/layers/23/{}", h("23")));
    assert_eq!(t.layers[1].catalog, h("33"));
    assert_eq!(t.layers[1].size, 100);
    assert!(t.prioritized_files.is_empty());
    t.check_key(&key).unwrap();
    let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key();
    assert!(matches!(
        t.check_key(&other),
        Err(ThinImageError::KeyMismatch { .. })
    ));
    // Round trip.
    let json = t.to_json_pretty().unwrap();
    assert_eq!(ThinImage::from_json(json.as_bytes()).unwrap(), t);
    // Prioritized files.
    let t = t
        .with_prioritized_files(vec!["/bin/sh".into(), "/etc/passwd".into()])
        .unwrap();
    assert_eq!(t.prioritized_files.len(), 2);
}

#[test]
fn build_keeps_variant_and_full_config() {
    let config = json!({
        "architecture": "arm", "variant": "v7", "os": "linux",
        "config": {"Env": [], "Entrypoint": [], "Cmd": [], "WorkingDir": "/w", "User": "nobody",
                   "Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let mut r = record(&config);
    r.platform = "linux/arm/v7".into();
    let key = signing_key().verifying_key();
    let t = ThinImage::build(&r, &manifest(), &key, &["http://h:1".to_string()]).unwrap();
    assert_eq!(t.platform.variant.as_deref(), Some("v7"));
    assert_eq!(t.config.entrypoint, Some(vec![]));
    assert_eq!(t.config.cmd, Some(vec![]));
    assert_eq!(t.config.working_dir.as_deref(), Some("/w"));
    assert_eq!(t.config.user.as_deref(), Some("nobody"));
    assert_eq!(t.config.labels.get("k").map(String::as_str), Some("v"));
    // A config without a `config` object.
    let t = ThinImage::build(
        &record(&json!({"os": "linux", "architecture": "amd64"})),
        &manifest(),
        &key,
        &["http://h:1".to_string()],
    )
    .unwrap();
    assert_eq!(t.config, RuntimeConfig::default());
}

#[test]
fn build_refuses_bad_input() {
    let key = signing_key().verifying_key();
    let urls = ["https://a/".to_string()];
    let good = json!({"os": "linux", "architecture": "amd64"});
    let m = manifest();
    assert!(matches!(
        ThinImage::build(&record(&good), &m, &key, &[]),
        Err(ThinImageError::Invalid { .. })
    ));
    assert!(ThinImage::build(&record(&good), &m, &key, &["file:///srv/repo".to_string()]).is_err());
    let mut r = record(&good);
    r.platform = "linux".into();
    assert!(matches!(
        ThinImage::build(&r, &m, &key, &urls),
        Err(ThinImageError::Build { .. })
    ));
    let mut r = record(&good);
    r.config = b"not json".to_vec();
    let e = ThinImage::build(&r, &m, &key, &urls).unwrap_err();
    assert!(e.to_string().contains("local/app:1.0"), "{e}");
    let mut r = record(&good);
    r.layers[0].catalog = "corrupt".into();
    let e = ThinImage::build(&r, &m, &key, &urls).unwrap_err();
    assert!(e.to_string().contains("layers[0].catalog"), "{e}");
}
