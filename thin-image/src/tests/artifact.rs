//! The OCI artifact that carries a descriptor to a registry.

use super::*;

#[cfg(feature = "registry")]
fn artifact() -> Artifact {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    golden().to_artifact_at(at).unwrap()
}

#[cfg(feature = "registry")]
#[test]
fn artifact_round_trips_and_carries_the_descriptor_file() {
    let a = artifact();
    assert_eq!(a.artifact_type, ARTIFACT_TYPE);
    assert_eq!(a.artifact_type, MEDIA_TYPE);
    assert_eq!(a.config_media_type, CONFIG_MEDIA_TYPE);
    assert_eq!(a.media_type, MEDIA_TYPE);
    // The blob is exactly what `stratum thin` writes.
    assert_eq!(
        a.payload,
        format!("{}\n", golden().to_json_pretty().unwrap()).into_bytes()
    );
    let config: Value = serde_json::from_slice(&a.config).unwrap();
    assert_eq!(
        config,
        json!({
            "schemaVersion": 1,
            "image": golden().image,
            "manifestDigest": golden().manifest_digest,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        })
    );
    let ann = &a.annotations;
    assert_eq!(ann[ANNOTATION_REF_NAME], golden().image);
    assert_eq!(ann[ANNOTATION_CREATED], "2023-11-14T22:13:20Z");
    assert_eq!(ann[ANNOTATION_PLATFORM], "linux/arm64/v8");
    assert_eq!(ann[ANNOTATION_REPOSITORY], "example");
    assert_eq!(ann[ANNOTATION_REVISION], "7");
    assert_eq!(ThinImage::from_artifact(&a).unwrap(), golden());
    let m = minimal().to_artifact().unwrap();
    assert_eq!(ThinImage::from_artifact(&m).unwrap(), minimal());
    assert!(
        !serde_json::from_slice::<Value>(&m.config).unwrap()["platform"]
            .as_object()
            .unwrap()
            .contains_key("variant")
    );
    assert_eq!(
        golden().platform.to_oci(),
        "linux/arm64/v8"
            .parse::<stratum_registry::Platform>()
            .unwrap()
    );
}

#[cfg(feature = "registry")]
#[test]
fn per_platform_image_names_are_accepted() {
    for name in ["local/app:1+linux-amd64", "h:5000/a/b:v1.2+linux-arm64-v8"] {
        let t = ThinImage {
            image: name.into(),
            ..golden()
        };
        t.validate().unwrap();
        let a = t.to_artifact().unwrap();
        assert_eq!(ThinImage::from_artifact(&a).unwrap().image, name);
    }
}

#[cfg(feature = "registry")]
#[test]
fn invalid_descriptors_are_not_wrapped() {
    let mut t = golden();
    t.flat.catalog = "nope".into();
    assert!(t.to_artifact().is_err());
}

#[cfg(feature = "registry")]
#[test]
fn bad_artifacts_are_refused_with_a_clear_error() {
    type Edit = Box<dyn Fn(&mut Artifact)>;
    let config_edit = |f: fn(&mut Value)| -> Edit {
        Box::new(move |a: &mut Artifact| {
            let mut v: Value = serde_json::from_slice(&a.config).unwrap();
            f(&mut v);
            a.config = serde_json::to_vec(&v).unwrap();
        })
    };
    let payload_edit = |f: fn(&mut Value)| -> Edit {
        Box::new(move |a: &mut Artifact| {
            let mut v: Value = serde_json::from_slice(&a.payload).unwrap();
            f(&mut v);
            a.payload = serde_json::to_vec(&v).unwrap();
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "artifact type",
            Box::new(|a| a.artifact_type = "application/vnd.oci.image.config.v1+json".into()),
            "artifact type is",
        ),
        (
            "config media type",
            Box::new(|a| a.config_media_type = "application/vnd.oci.empty.v1+json".into()),
            "config media type is",
        ),
        (
            "blob media type",
            Box::new(|a| a.media_type = "application/json".into()),
            "blob media type is",
        ),
        (
            "huge config",
            Box::new(|a| a.config = vec![b' '; MAX_CONFIG_BYTES + 1]),
            "over the limit",
        ),
        (
            "huge blob",
            Box::new(|a| a.payload = vec![b' '; MAX_DESCRIPTOR_BYTES + 1]),
            "over the limit",
        ),
        (
            "config not JSON",
            Box::new(|a| a.config = b"{".to_vec()),
            "config:",
        ),
        (
            "config unknown member",
            config_edit(|v| v["extra"] = json!(1)),
            "unknown field",
        ),
        (
            "config missing member",
            config_edit(|v| {
                v.as_object_mut().unwrap().remove("platform");
            }),
            "missing field",
        ),
        (
            "config schema version",
            config_edit(|v| v["schemaVersion"] = json!(2)),
            "schemaVersion 2",
        ),
        (
            "config names another image",
            config_edit(|v| v["image"] = json!("other/app:1")),
            "config says image",
        ),
        (
            "config names another manifest",
            config_edit(|v| v["manifestDigest"] = json!(format!("sha256:{}", h("cd")))),
            "config says manifestDigest",
        ),
        (
            "config names another platform",
            config_edit(|v| v["platform"] = json!({"os": "linux", "architecture": "amd64"})),
            "config says platform",
        ),
        (
            "descriptor with an altered catalog id",
            payload_edit(|v| v["flat"]["catalog"] = json!("AB".repeat(32))),
            "flat.catalog",
        ),
        (
            "descriptor of another version",
            payload_edit(|v| v["schemaVersion"] = json!(2)),
            "unsupported thin-image schemaVersion 2",
        ),
        (
            "blob not JSON",
            Box::new(|a| a.payload = b"not json".to_vec()),
            "not a valid thin-image descriptor",
        ),
    ];
    for (what, edit, expect) in cases {
        let mut a = artifact();
        edit(&mut a);
        let e = ThinImage::from_artifact(&a)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"))
            .to_string();
        assert!(e.contains(expect), "{what}: {e:?} lacks {expect:?}");
    }
}
