//! Unit tests: golden output, round trips, refusals, the builder, and the
//! JSON Schema in `docs/` (kept in step with the types).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use stratum_catalog::catalog::{ImageLayerRecord, ImageRecord};
use stratum_catalog::manifest::{key_fingerprint, Manifest};
use stratum_catalog::ObjectId;

use super::*;

const SCHEMA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/thin-image.schema.json"
));

fn h(pair: &str) -> String {
    pair.repeat(32)
}

/// The digest `sha256:` + `h(pair)`.
fn d(pair: &str) -> stratum_catalog::Sha256Digest {
    stratum_catalog::Sha256Digest::from_hex(&h(pair)).unwrap()
}

/// A descriptor with every optional member set.
fn golden() -> ThinImage {
    ThinImage {
        schema_version: 1,
        media_type: MEDIA_TYPE.into(),
        image: "registry.example.org:5000/team/app:1.0".into(),
        manifest_digest: format!("sha256:{}", h("ab")),
        platform: Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        },
        config: RuntimeConfig {
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
            entrypoint: Some(vec!["/bin/entry".into()]),
            cmd: Some(vec!["--serve".into(), "héllo \"quoted\"".into()]),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["443/tcp".into(), "80/tcp".into()],
            labels: BTreeMap::from([
                ("org.opencontainers.image.title".into(), "app".into()),
                ("a".into(), "b".into()),
            ]),
            stop_signal: Some("SIGTERM".into()),
        },
        repository: RepositoryRef {
            name: "example".into(),
            urls: vec![
                "https://mirror1.example.org/stratum".into(),
                "http://10.0.0.1:8080/".into(),
            ],
            public_key_fingerprint: h("44"),
            revision: 7,
        },
        flat: FlatTree {
            path: format!("/flat/ab/{}", h("ab")),
            catalog: h("11"),
        },
        layers: vec![
            LayerTree {
                digest: format!("sha256:{}", h("cd")),
                diff_id: format!("sha256:{}", h("ef")),
                path: format!("/layers/ef/{}", h("ef")),
                catalog: h("22"),
                size: 1234,
            },
            LayerTree {
                digest: format!("sha256:{}", h("01")),
                diff_id: format!("sha256:{}", h("23")),
                path: format!("/layers/23/{}", h("23")),
                catalog: h("33"),
                size: u64::MAX,
            },
        ],
        prioritized_files: vec!["/bin/entry".into(), "/etc/app conf/x.json".into()],
    }
}

/// The same descriptor with every optional member absent.
fn minimal() -> ThinImage {
    ThinImage {
        platform: Platform {
            variant: None,
            ..golden().platform
        },
        config: RuntimeConfig::default(),
        repository: RepositoryRef {
            urls: vec!["https://mirror1.example.org/stratum".into()],
            ..golden().repository
        },
        layers: vec![],
        prioritized_files: vec![],
        ..golden()
    }
}

const GOLDEN_JSON: &str = r#"{
  "schemaVersion": 1,
  "mediaType": "application/vnd.stratum.thin-image.v1+json",
  "image": "registry.example.org:5000/team/app:1.0",
  "manifestDigest": "sha256:{ab}",
  "platform": {
    "os": "linux",
    "architecture": "arm64",
    "variant": "v8"
  },
  "config": {
    "Env": [
      "PATH=/usr/bin:/bin",
      "LANG=C.UTF-8"
    ],
    "Entrypoint": [
      "/bin/entry"
    ],
    "Cmd": [
      "--serve",
      "héllo \"quoted\""
    ],
    "WorkingDir": "/srv",
    "User": "1000:1000",
    "ExposedPorts": [
      "443/tcp",
      "80/tcp"
    ],
    "Labels": {
      "a": "b",
      "org.opencontainers.image.title": "app"
    },
    "StopSignal": "SIGTERM"
  },
  "repository": {
    "name": "example",
    "urls": [
      "https://mirror1.example.org/stratum",
      "http://10.0.0.1:8080/"
    ],
    "publicKeyFingerprint": "{44}",
    "revision": 7
  },
  "flat": {
    "path": "/flat/ab/{ab}",
    "catalog": "{11}"
  },
  "layers": [
    {
      "digest": "sha256:{cd}",
      "diffId": "sha256:{ef}",
      "path": "/layers/ef/{ef}",
      "catalog": "{22}",
      "size": 1234
    },
    {
      "digest": "sha256:{01}",
      "diffId": "sha256:{23}",
      "path": "/layers/23/{23}",
      "catalog": "{33}",
      "size": 18446744073709551615
    }
  ],
  "prioritizedFiles": [
    "/bin/entry",
    "/etc/app conf/x.json"
  ]
}"#;

const MINIMAL_JSON: &str = r#"{
  "schemaVersion": 1,
  "mediaType": "application/vnd.stratum.thin-image.v1+json",
  "image": "registry.example.org:5000/team/app:1.0",
  "manifestDigest": "sha256:{ab}",
  "platform": {
    "os": "linux",
    "architecture": "arm64"
  },
  "config": {},
  "repository": {
    "name": "example",
    "urls": [
      "https://mirror1.example.org/stratum"
    ],
    "publicKeyFingerprint": "{44}",
    "revision": 7
  },
  "flat": {
    "path": "/flat/ab/{ab}",
    "catalog": "{11}"
  },
  "layers": []
}"#;

/// `{xy}` → 64 hex digits `xyxy…`.
fn expand(template: &str) -> String {
    let mut s = template.to_owned();
    for pair in ["ab", "44", "11", "cd", "ef", "22", "01", "23", "33"] {
        s = s.replace(&format!("{{{pair}}}"), &h(pair));
    }
    s
}

#[test]
fn golden_output() {
    assert_eq!(golden().to_json_pretty().unwrap(), expand(GOLDEN_JSON));
    assert_eq!(minimal().to_json_pretty().unwrap(), expand(MINIMAL_JSON));
}

#[test]
fn golden_parses_back() {
    assert_eq!(
        ThinImage::from_json(expand(GOLDEN_JSON).as_bytes()).unwrap(),
        golden()
    );
    assert_eq!(
        ThinImage::from_json(expand(MINIMAL_JSON).as_bytes()).unwrap(),
        minimal()
    );
    // Compact JSON and another member order parse too.
    let mut v: Value = serde_json::from_str(&expand(GOLDEN_JSON)).unwrap();
    let layers = v.as_object_mut().unwrap().remove("layers").unwrap();
    let mut reordered = serde_json::Map::new();
    reordered.insert("layers".into(), layers);
    reordered.extend(v.as_object().unwrap().clone());
    let bytes = serde_json::to_vec(&reordered).unwrap();
    assert_eq!(ThinImage::from_json(&bytes).unwrap(), golden());
}

fn golden_value() -> Value {
    serde_json::from_str(&expand(GOLDEN_JSON)).unwrap()
}

/// Applies `edit` to the golden JSON and parses it.
fn parse_edited(edit: impl FnOnce(&mut Value)) -> Result<ThinImage, ThinImageError> {
    let mut v = golden_value();
    edit(&mut v);
    ThinImage::from_json(&serde_json::to_vec(&v).unwrap())
}

/// Invalid variants of the golden descriptor: (what, edit, error text
/// expected, whether the JSON Schema can refuse it too).
type Edit = Box<dyn Fn(&mut Value)>;

fn refusals() -> Vec<(&'static str, Edit, &'static str, bool)> {
    let upper = h("ab").to_uppercase();
    vec![
        (
            "schemaVersion 2",
            Box::new(|v| v["schemaVersion"] = json!(2)),
            "unsupported thin-image schemaVersion 2",
            true,
        ),
        (
            "schemaVersion 0",
            Box::new(|v| v["schemaVersion"] = json!(0)),
            "schemaVersion 0",
            true,
        ),
        (
            "schemaVersion \"1\"",
            Box::new(|v| v["schemaVersion"] = json!("1")),
            "schemaVersion \"1\"",
            true,
        ),
        (
            "schemaVersion 1.5",
            Box::new(|v| v["schemaVersion"] = json!(1.5)),
            "schemaVersion 1.5",
            true,
        ),
        (
            "schemaVersion missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("schemaVersion");
            }),
            "schemaVersion (missing)",
            true,
        ),
        (
            "mediaType v2",
            Box::new(|v| v["mediaType"] = json!("application/vnd.stratum.thin-image.v2+json")),
            "unsupported thin-image mediaType",
            true,
        ),
        (
            "mediaType missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("mediaType");
            }),
            "mediaType (missing)",
            true,
        ),
        (
            "unknown member",
            Box::new(|v| v["extra"] = json!(1)),
            "unknown field `extra`",
            true,
        ),
        (
            "unknown member in a layer",
            Box::new(|v| v["layers"][0]["mediaType"] = json!("x")),
            "unknown field `mediaType`",
            true,
        ),
        (
            "unknown config member",
            Box::new(|v| v["config"]["Volumes"] = json!({})),
            "unknown field `Volumes`",
            true,
        ),
        (
            "null Entrypoint",
            Box::new(|v| v["config"]["Entrypoint"] = Value::Null),
            "invalid type: null",
            true,
        ),
        (
            "missing flat",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("flat");
            }),
            "missing field `flat`",
            true,
        ),
        (
            "negative size",
            Box::new(|v| v["layers"][0]["size"] = json!(-1)),
            "invalid value",
            true,
        ),
        (
            "flat catalog altered (63 hex)",
            Box::new(|v| v["flat"]["catalog"] = json!(&h("11")[1..])),
            "flat.catalog",
            true,
        ),
        (
            "flat catalog altered (uppercase)",
            Box::new(|v| v["flat"]["catalog"] = json!(h("ab").to_uppercase())),
            "flat.catalog",
            true,
        ),
        (
            "layer catalog altered (non-hex)",
            Box::new(|v| v["layers"][1]["catalog"] = json!(format!("g{}", &h("33")[1..]))),
            "layers[1].catalog",
            true,
        ),
        (
            "layer catalog with sha256: prefix",
            Box::new(|v| v["layers"][0]["catalog"] = json!(format!("sha256:{}", h("22")))),
            "layers[0].catalog",
            true,
        ),
        (
            "fingerprint too short",
            Box::new(|v| v["repository"]["publicKeyFingerprint"] = json!("abcd")),
            "repository.publicKeyFingerprint",
            true,
        ),
        (
            "manifest digest uppercase",
            Box::new(move |v| v["manifestDigest"] = json!(format!("sha256:{upper}"))),
            "manifestDigest",
            true,
        ),
        (
            "digest of another algorithm",
            Box::new(|v| v["layers"][0]["digest"] = json!(format!("sha512:{}", h("cd")))),
            "layers[0].digest",
            true,
        ),
        (
            "flat path of another manifest",
            Box::new(|v| v["flat"]["path"] = json!(format!("/flat/cd/{}", h("cd")))),
            "flat.path",
            false,
        ),
        (
            "flat path under /layers",
            Box::new(|v| v["flat"]["path"] = json!(format!("/layers/ab/{}", h("ab")))),
            "not under /flat/",
            true,
        ),
        (
            "flat path not clean",
            Box::new(|v| v["flat"]["path"] = json!(format!("/flat/../flat/ab/{}", h("ab")))),
            "not a clean path",
            true,
        ),
        (
            "flat path relative",
            Box::new(|v| v["flat"]["path"] = json!(format!("flat/ab/{}", h("ab")))),
            "not an absolute path",
            true,
        ),
        (
            "layer path of another diffId",
            Box::new(|v| v["layers"][0]["path"] = json!(format!("/layers/23/{}", h("23")))),
            "layers[0].path",
            false,
        ),
        (
            "layer path with trailing slash",
            Box::new(|v| v["layers"][0]["path"] = json!(format!("/layers/ef/{}/", h("ef")))),
            "layers[0].path",
            true,
        ),
        (
            "same diffId, two catalogs",
            Box::new(|v| {
                let l = v["layers"][0].clone();
                let mut l2 = l.clone();
                l2["catalog"] = json!(h("99"));
                v["layers"] = json!([l, l2]);
            }),
            "appears again with another catalog",
            false,
        ),
        (
            "no URL",
            Box::new(|v| v["repository"]["urls"] = json!([])),
            "at least one URL",
            true,
        ),
        (
            "duplicate URL",
            Box::new(|v| v["repository"]["urls"] = json!(["https://a/", "https://a/"])),
            "listed twice",
            true,
        ),
        (
            "ftp URL",
            Box::new(|v| v["repository"]["urls"] = json!(["ftp://a/"])),
            "http:// or https://",
            true,
        ),
        (
            "URL with credentials",
            Box::new(|v| v["repository"]["urls"] = json!(["https://u:p@a/"])),
            "credentials",
            true,
        ),
        (
            "URL with a space",
            Box::new(|v| v["repository"]["urls"] = json!(["https://a/b c"])),
            "printable ASCII",
            true,
        ),
        (
            "URL with a query",
            Box::new(|v| v["repository"]["urls"] = json!(["https://a/?x=1"])),
            "query",
            true,
        ),
        (
            "URL without host",
            Box::new(|v| v["repository"]["urls"] = json!(["https:///x"])),
            "no host",
            true,
        ),
        (
            "revision 0",
            Box::new(|v| v["repository"]["revision"] = json!(0)),
            "repository.revision",
            true,
        ),
        (
            "bad repository name",
            Box::new(|v| v["repository"]["name"] = json!("a b")),
            "repository.name",
            true,
        ),
        (
            "image without tag",
            Box::new(|v| v["image"] = json!("local/app")),
            "image",
            true,
        ),
        (
            "image with uppercase",
            Box::new(|v| v["image"] = json!("Local/app:1")),
            "image",
            true,
        ),
        (
            "image with an empty platform",
            Box::new(|v| v["image"] = json!("local/app:1+")),
            "image",
            true,
        ),
        (
            "image with an uppercase platform",
            Box::new(|v| v["image"] = json!("local/app:1+Linux-amd64")),
            "image",
            true,
        ),
        (
            "image with two platforms",
            Box::new(|v| v["image"] = json!("local/app:1+linux-amd64+x")),
            "image",
            true,
        ),
        (
            "empty os",
            Box::new(|v| v["platform"]["os"] = json!("")),
            "platform.os",
            true,
        ),
        (
            "prioritized file relative",
            Box::new(|v| v["prioritizedFiles"] = json!(["bin/sh"])),
            "prioritizedFiles[0]",
            true,
        ),
        (
            "prioritized file with ..",
            Box::new(|v| v["prioritizedFiles"] = json!(["/bin/../etc/passwd"])),
            "prioritizedFiles[0]",
            true,
        ),
        (
            "prioritized /",
            Box::new(|v| v["prioritizedFiles"] = json!(["/"])),
            "prioritizedFiles[0]",
            true,
        ),
        (
            "prioritized file twice",
            Box::new(|v| v["prioritizedFiles"] = json!(["/a", "/b", "/a"])),
            "prioritizedFiles[2]",
            true,
        ),
    ]
}

#[test]
fn invalid_descriptors_are_refused_with_a_clear_error() {
    for (what, edit, expected, _) in refusals() {
        match parse_edited(|v| edit(v)) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(expected),
                    "{what}: error {msg:?} does not mention {expected:?}"
                );
            }
        }
    }
}

#[test]
fn schema_version_is_checked_before_the_shape() {
    // A future version with another shape is refused for its version, not
    // for its members.
    let doc = json!({"schemaVersion": 2, "mediaType": "application/vnd.stratum.thin-image.v2+json", "whatever": []});
    let e = ThinImage::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert!(
        matches!(e, ThinImageError::UnsupportedSchemaVersion { .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "unsupported thin-image schemaVersion 2 (this build reads schemaVersion 1)"
    );
    let doc = json!({"schemaVersion": 1, "mediaType": "application/json"});
    let e = ThinImage::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert!(
        matches!(e, ThinImageError::UnsupportedMediaType { .. }),
        "{e}"
    );
}

#[test]
fn garbage_is_refused() {
    for bytes in [
        &b""[..],
        b"[]",
        b"null",
        b"{",
        b"\xff\xfe",
        b"{\"schemaVersion\": 1",
    ] {
        assert!(ThinImage::from_json(bytes).is_err(), "{bytes:?}");
    }
    let big = vec![b' '; MAX_DESCRIPTOR_BYTES + 1];
    assert!(matches!(
        ThinImage::from_json(&big),
        Err(ThinImageError::TooLarge { .. })
    ));
    // Duplicate members are refused, not resolved silently.
    let dup =
        expand(GOLDEN_JSON).replacen("\"image\":", "\"image\": \"other/app:2\",\n  \"image\":", 1);
    let e = ThinImage::from_json(dup.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("duplicate field"), "{e}");
}

#[test]
fn nothing_invalid_is_written() {
    let mut t = golden();
    t.layers[0].catalog = "nope".into();
    assert!(t.to_json_pretty().is_err());
    assert!(golden()
        .with_prioritized_files(vec!["relative".into()])
        .is_err());
}

#[test]
fn catalog_ids_parse() {
    let g = golden();
    assert_eq!(g.flat.catalog_id().unwrap().to_hex(), h("11"));
    assert_eq!(g.layers[1].catalog_id().unwrap().to_hex(), h("33"));
    assert_eq!(g.platform.to_string(), "linux/arm64/v8");
    assert_eq!(minimal().platform.to_string(), "linux/arm64");
}

#[test]
fn file_names() {
    assert_eq!(descriptor_file_name("local/app:1.0"), "local_app_1.0.json");
    assert_eq!(
        descriptor_file_name("host:5000/a/b:latest"),
        "host_5000_a_b_latest.json"
    );
}

// ---------------------------------------------------------------------------
// OCI artifact

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

// ---------------------------------------------------------------------------
// Builder

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

// ---------------------------------------------------------------------------
// Property tests

fn hex64() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 32).prop_map(hex::encode)
}

fn opt_list() -> impl Strategy<Value = Option<Vec<String>>> {
    proptest::option::of(proptest::collection::vec(any::<String>(), 0..4))
}

fn runtime_config() -> impl Strategy<Value = RuntimeConfig> {
    (
        proptest::collection::vec(any::<String>(), 0..4),
        opt_list(),
        opt_list(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::collection::vec("[0-9]{1,5}/(tcp|udp)", 0..3),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        proptest::option::of("SIG[A-Z]{2,6}"),
    )
        .prop_map(
            |(env, entrypoint, cmd, working_dir, user, exposed_ports, labels, stop_signal)| {
                RuntimeConfig {
                    env,
                    entrypoint,
                    cmd,
                    working_dir,
                    user,
                    exposed_ports,
                    labels,
                    stop_signal,
                }
            },
        )
}

fn layer() -> impl Strategy<Value = LayerTree> {
    (hex64(), hex64(), hex64(), any::<u64>()).prop_map(|(d, diff, catalog, size)| LayerTree {
        digest: format!("sha256:{d}"),
        diff_id: format!("sha256:{diff}"),
        path: format!("/layers/{}/{diff}", &diff[..2]),
        catalog,
        size,
    })
}

fn thin_image() -> impl Strategy<Value = ThinImage> {
    let platform = (
        "[A-Za-z0-9._-]{1,12}",
        "[A-Za-z0-9._-]{1,12}",
        proptest::option::of("[A-Za-z0-9._-]{1,8}"),
    )
        .prop_map(|(os, architecture, variant)| Platform {
            os,
            architecture,
            variant,
        });
    let repository = (
        "[A-Za-z0-9._-]{1,40}",
        proptest::collection::btree_set(
            "https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[A-Za-z0-9._~%-]{0,10}){0,3}",
            1..4,
        ),
        hex64(),
        1..=u64::MAX,
    )
        .prop_map(|(name, urls, fp, revision)| RepositoryRef {
            name,
            urls: urls.into_iter().collect(),
            public_key_fingerprint: fp,
            revision,
        });
    (
        "[a-z0-9][a-z0-9._-]{0,10}(/[a-z0-9_][a-z0-9._-]{0,10}){0,3}:[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        hex64(),
        platform,
        runtime_config(),
        repository,
        hex64(),
        proptest::collection::vec(layer(), 0..5),
        proptest::collection::btree_set("(/[^/\\x00.][^/\\x00]{0,10}){1,4}", 0..5),
    )
        .prop_map(
            |(image, manifest_hex, platform, config, repository, flat_catalog, layers, files)| {
                ThinImage {
                    schema_version: SCHEMA_VERSION,
                    media_type: MEDIA_TYPE.into(),
                    image,
                    manifest_digest: format!("sha256:{manifest_hex}"),
                    platform,
                    config,
                    repository,
                    flat: FlatTree {
                        path: format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]),
                        catalog: flat_catalog,
                    },
                    layers,
                    prioritized_files: files.into_iter().collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn random_descriptor_round_trips(t in thin_image()) {
        let json = t.to_json_pretty().unwrap();
        let back = ThinImage::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &t);
        // Compact JSON too.
        let compact = serde_json::to_vec(&t).unwrap();
        prop_assert_eq!(ThinImage::from_json(&compact).unwrap(), t);
    }

    #[test]
    fn altered_catalog_ids_are_refused(
        t in thin_image(),
        which in any::<prop::sample::Index>(),
        pos in 0usize..64,
        bad in prop::sample::select(vec!['A', 'F', 'g', 'z', ' ', '-', 'é']),
    ) {
        let mut t = t;
        let n = t.layers.len() + 1;
        let i = which.index(n);
        let id = if i == 0 { &mut t.flat.catalog } else { &mut t.layers[i - 1].catalog };
        let mut chars: Vec<char> = id.chars().collect();
        chars[pos] = bad;
        *id = chars.into_iter().collect();
        let json = serde_json::to_vec(&t).unwrap();
        let e = ThinImage::from_json(&json).unwrap_err();
        let field = if i == 0 { "flat.catalog".to_string() } else { format!("layers[{}].catalog", i - 1) };
        prop_assert!(e.to_string().contains(&field), "{}", e);
    }
}

// ---------------------------------------------------------------------------
// The JSON Schema in docs/

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("docs/thin-image.schema.json is not valid JSON")
}

fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        node = schema["$defs"]
            .get(name)
            .unwrap_or_else(|| panic!("$ref {r} names no $defs entry"));
    }
    node
}

/// Walks `value` (JSON the Rust type emitted) alongside its schema node:
/// every object member emitted is a schema property; the schema's `required`
/// are emitted; with `exact`, `required` is exactly the set emitted (the
/// value has no optional member) or `properties` is exactly the set emitted
/// (the value has every optional member).
fn walk(schema: &Value, node: &Value, value: &Value, at: &str, exact: Exactness) {
    let node = resolve(schema, node);
    match value {
        Value::Object(members) => {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                assert_eq!(
                    node.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "{at}: the schema must refuse unknown members, as the parser does"
                );
                let required: BTreeSet<&str> = node
                    .get("required")
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{at}: no `required` list in the schema"))
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                let emitted: BTreeSet<&str> = members.keys().map(String::as_str).collect();
                let properties: BTreeSet<&str> = props.keys().map(String::as_str).collect();
                assert!(
                    emitted.is_subset(&properties),
                    "{at}: emitted {:?} not in the schema's properties",
                    emitted.difference(&properties).collect::<Vec<_>>()
                );
                assert!(
                    required.is_subset(&emitted),
                    "{at}: schema requires {:?}, not emitted",
                    required.difference(&emitted).collect::<Vec<_>>()
                );
                match exact {
                    Exactness::Minimal => assert_eq!(
                        required, emitted,
                        "{at}: the schema's `required` must list exactly what is always emitted"
                    ),
                    Exactness::Maximal => assert_eq!(
                        properties, emitted,
                        "{at}: the schema's `properties` must list exactly what can be emitted"
                    ),
                }
                for (k, v) in members {
                    walk(schema, &props[k], v, &format!("{at}.{k}"), exact);
                }
            } else if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in members {
                    walk(schema, ap, v, &format!("{at}[{k:?}]"), exact);
                }
            } else {
                panic!("{at}: object without properties in the schema");
            }
        }
        Value::Array(items) => {
            let item = node
                .get("items")
                .unwrap_or_else(|| panic!("{at}: array without items in the schema"));
            for (i, v) in items.iter().enumerate() {
                walk(schema, item, v, &format!("{at}[{i}]"), exact);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Exactness {
    Minimal,
    Maximal,
}

#[test]
fn schema_lists_every_member_the_type_emits() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema must declare draft 2020-12"
    );
    assert_eq!(s["properties"]["mediaType"]["const"], MEDIA_TYPE);
    assert_eq!(s["properties"]["schemaVersion"]["const"], SCHEMA_VERSION);
    let max: Value = serde_json::from_str(&golden().to_json_pretty().unwrap()).unwrap();
    let min: Value = serde_json::from_str(&minimal().to_json_pretty().unwrap()).unwrap();
    walk(&s, &s, &max, "$", Exactness::Maximal);
    walk(&s, &s, &min, "$", Exactness::Minimal);
}

/// Runs Python's `jsonschema` (draft 2020-12) over `cases` = [(what,
/// instance, should be valid)]; `None` when python3 or jsonschema is absent.
fn python_validate(cases: &[(String, Value, bool)]) -> Option<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit(3)
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
failures = []
for what, inst, ok in json.load(sys.stdin):
    errs = list(v.iter_errors(inst))
    if ok and errs:
        failures.append(f"{what}: schema refuses it: {errs[0].message}")
    if not ok and not errs:
        failures.append(f"{what}: schema accepts it")
print(json.dumps(failures))
"#;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/thin-image.schema.json"
    );
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT, path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    let input = serde_json::to_vec(
        &cases
            .iter()
            .map(|(w, v, ok)| json!([w, v, ok]))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(
        out.status.success(),
        "python jsonschema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn schema_agrees_with_the_parser() {
    let mut cases = vec![
        ("golden".to_string(), golden_value(), true),
        (
            "minimal".to_string(),
            serde_json::from_str(&expand(MINIMAL_JSON)).unwrap(),
            true,
        ),
    ];
    // Random valid descriptors.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..64 {
        let t = thin_image().new_tree(&mut runner).unwrap().current();
        cases.push((
            format!("random #{i}"),
            serde_json::to_value(&t).unwrap(),
            true,
        ));
    }
    // Everything the parser refuses that JSON Schema can express.
    for (what, edit, _, schema_refuses) in refusals() {
        if schema_refuses {
            let mut v = golden_value();
            edit(&mut v);
            cases.push((what.to_string(), v, false));
        }
    }
    match python_validate(&cases) {
        None if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") => {
            panic!("python3 with the jsonschema package is not installed; under CI every test must run")
        }
        None => eprintln!(
            "SKIP: schema_agrees_with_the_parser: python3 with the jsonschema package is not installed"
        ),
        Some(failures) => assert!(failures.is_empty(), "{failures:#?}"),
    }
}

#[test]
fn the_example_in_the_docs_parses() {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/THIN-IMAGE.md"
    ));
    let start = doc
        .find("```json\n")
        .expect("a ```json block in docs/THIN-IMAGE.md")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let t = ThinImage::from_json(&doc.as_bytes()[start..start + len])
        .unwrap_or_else(|e| panic!("the example of docs/THIN-IMAGE.md is refused: {e}"));
    assert_eq!(t.layers.len(), 2);
    assert_eq!(t.prioritized_files.len(), 2);
}
