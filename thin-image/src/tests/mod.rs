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

mod artifact;
mod builder;
mod props;
mod refusals;
mod schema;
