//! Invalid descriptors and garbage: refused with an error that names
//! the member, never written.

use super::*;

pub(super) fn refusals() -> Vec<(&'static str, Edit, &'static str, bool)> {
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
