//! Documents: manifests, configs and indexes that are not JSON, have
//! wrong digests or sizes, unknown media types, or nest without end.

use super::*;

#[test]
fn documents_that_are_not_json_are_refused() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::file(b"f", b"f\n")]);
    // The manifest.
    let l = image(&s, "manifest-junk", std::slice::from_ref(&layer));
    let (d, size) = l.write_blob(b"this is not JSON {");
    let mut index = l.index();
    index["manifests"][0]["digest"] = json!(d);
    index["manifests"][0]["size"] = json!(size);
    l.write_index(&index);
    s.refused(&l, &[], &[&format!("oci:{}:bad", l.dir.display()), &d]);
    // The config.
    let l = image(&s, "config-junk", std::slice::from_ref(&layer));
    let (_, mut m) = l.manifest("bad");
    let (cd, cs) = l.write_blob(b"\x00\x01 not json");
    m["config"]["digest"] = json!(cd);
    m["config"]["size"] = json!(cs);
    l.set_manifest("bad", &m);
    s.refused(&l, &[], &[&format!("oci:{}:bad", l.dir.display()), &cd]);
    // index.json.
    let l = image(&s, "index-junk", std::slice::from_ref(&layer));
    std::fs::write(l.dir.join("index.json"), b"[1, 2").unwrap();
    s.refused(&l, &[], &["index.json"]);
}

#[test]
fn wrong_document_digests_and_sizes_are_refused() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::file(b"f", b"f\n")]);
    // index.json names a manifest digest whose blob holds other bytes.
    let l = image(&s, "manifest-digest", std::slice::from_ref(&layer));
    let (d, _) = l.manifest("bad");
    let mut m = l.read_blob(&d);
    m.push(b' ');
    std::fs::write(l.blob_path(&d), &m).unwrap();
    let mut index = l.index();
    index["manifests"][0]["size"] = json!(m.len());
    l.write_index(&index);
    s.refused(&l, &[], &[&format!("manifest {d}"), "content digest"]);
    // The manifest names a config whose blob holds other bytes.
    let l = image(&s, "config-digest", std::slice::from_ref(&layer));
    let (_, m) = l.manifest("bad");
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let mut c = l.read_blob(&cd);
    let last = c.len() - 1;
    c[last] = b' ';
    std::fs::write(l.blob_path(&cd), &c).unwrap();
    s.refused(&l, &[], &[&format!("config {cd}"), "content digest"]);
    // A descriptor size that disagrees with the blob.
    let l = image(&s, "config-size", std::slice::from_ref(&layer));
    l.edit_image("bad", |_, _| {});
    let (_, mut m) = l.manifest("bad");
    m["config"]["size"] = json!(m["config"]["size"].as_u64().unwrap() + 1);
    l.set_manifest("bad", &m);
    s.refused(&l, &[], &["config sha256:", "the descriptor says"]);
}

#[test]
fn unknown_media_types_are_refused() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::file(b"f", b"f\n")]);
    let l = image(&s, "mt-layer", std::slice::from_ref(&layer));
    l.edit_image("bad", |m, _| {
        m["layers"][0]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2");
    });
    s.refused(
        &l,
        &[],
        &[
            "unsupported media type",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
        ],
    );
    let l = image(&s, "mt-manifest", std::slice::from_ref(&layer));
    let mut index = l.index();
    index["manifests"][0]["mediaType"] = json!("application/vnd.example.unknown+json");
    l.write_index(&index);
    s.refused(
        &l,
        &[],
        &[
            "unsupported media type",
            "application/vnd.example.unknown+json",
        ],
    );
    let l = image(&s, "mt-config", std::slice::from_ref(&layer));
    let (_, mut m) = l.manifest("bad");
    m["config"]["mediaType"] = json!("application/x-not-a-config");
    l.set_manifest("bad", &m);
    s.refused(
        &l,
        &[],
        &["unsupported media type", "application/x-not-a-config"],
    );
}

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn index_doc(child: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [child],
    }))
    .unwrap()
}

/// An index that lists itself cannot have its own digest (its bytes would
/// contain their hash), so it is refused by its digest, never followed in a
/// loop; a chain of indexes deeper than 4 is refused too.
#[test]
fn indexes_that_point_to_themselves_or_nest_too_deep_are_refused() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::file(b"f", b"f\n")]);
    let l = image(&s, "self-index", std::slice::from_ref(&layer));
    let claimed = support::oci::digest_of(b"the index below claims this digest");
    // The index lists itself under the digest it claims, with its true size
    // (found by iterating), so that only the digest is wrong.
    let mut size = 0;
    let (me, body) = loop {
        let me = json!({"mediaType": MT_INDEX, "digest": claimed, "size": size});
        let body = index_doc(&me);
        if body.len() == size {
            break (me, body);
        }
        size = body.len();
    };
    std::fs::write(l.blob_path(&claimed), &body).unwrap();
    let mut top = me.clone();
    top["annotations"] = json!({support::oci::REF_NAME: "bad"});
    l.write_index(&json!({"schemaVersion": 2, "manifests": [top]}));
    s.refused(
        &l,
        &[],
        &[&format!("image index {claimed}"), "content digest is"],
    );

    // index.json → 5 nested indexes → the manifest.
    let l = image(&s, "deep-index", std::slice::from_ref(&layer));
    let mut child = l.descriptor("bad");
    child.as_object_mut().unwrap().remove("annotations");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    child["platform"] = json!({"os": "linux", "architecture": arch});
    for _ in 0..5 {
        let (d, size) = l.write_blob(&index_doc(&child));
        child = json!({"mediaType": MT_INDEX, "digest": d, "size": size,
                       "platform": {"os": "linux", "architecture": arch}});
    }
    child["annotations"] = json!({support::oci::REF_NAME: "bad"});
    l.write_index(&json!({"schemaVersion": 2, "manifests": [child]}));
    s.refused(&l, &[], &["indexes nest more than 4 levels deep"]);
}
