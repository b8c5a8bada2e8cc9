//! `oci:` sources: tags and digests, gzip and zstd layers, nested indexes,
//! platforms, and tampered, truncated or inconsistent layouts.

use super::*;

#[test]
fn oci_layout_streams_every_layer() {
    let Some(f) = fixture("oci_layout_streams_every_layer") else {
        return;
    };
    let spec = oci(&f.layout, Some("t"));
    let src = open(&spec).unwrap();
    let image = src.image();
    assert_eq!(image.source, spec);
    assert_eq!(image.default_name, "local/layout:t");
    assert_eq!(image.platform, format!("linux/{}", host_arch()));
    assert_eq!(image.layers.len(), 2);
    let desc = descriptor_of_tag(&f.layout, "t");
    assert_eq!(
        image.manifest_digest.to_string(),
        desc["digest"].as_str().unwrap()
    );
    assert_eq!(Digest::of(&image.manifest), image.manifest_digest);
    assert_eq!(Digest::of(&image.config), image.config_digest);
    for (i, l) in image.layers.iter().enumerate() {
        assert_eq!(l.index, i);
        assert_eq!(l.compression, Compression::Gzip);
        assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    }

    let names = read_layers(src.as_ref());
    for (layer, got) in image.layers.iter().zip(&names) {
        let oracle = gnu_tar_names(&blob_path(&f.layout, &layer.digest), true);
        assert_eq!(got, &oracle, "layer {}", layer.index);
    }
    assert!(
        names[0].iter().any(|n| n.ends_with("a.txt")),
        "{:?}",
        names[0]
    );
    assert!(
        names[0].iter().any(|n| n.ends_with("dir/b.txt")),
        "{:?}",
        names[0]
    );
    assert!(
        names[1].iter().any(|n| n.ends_with(".wh.a.txt")),
        "{:?}",
        names[1]
    );
    assert!(
        names[1].iter().any(|n| n.ends_with("c.txt")),
        "{:?}",
        names[1]
    );
}

#[test]
fn oci_layout_tag_selection() {
    let Some(f) = fixture("oci_layout_tag_selection") else {
        return;
    };
    let t = open(&oci(&f.layout, Some("t"))).unwrap();
    let u = open(&oci(&f.layout, Some("u"))).unwrap();
    assert_ne!(t.image().manifest_digest, u.image().manifest_digest);
    assert_eq!(u.image().layers.len(), 1);
    assert_eq!(u.image().default_name, "local/layout:u");
    let names = read_layers(u.as_ref());
    assert!(names[0].iter().any(|n| n.ends_with("u.txt")), "{names:?}");

    let e = open(&oci(&f.layout, Some("nope"))).err().unwrap();
    assert!(matches!(e, SourceError::TagNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains('t') && msg.contains('u'),
        "{msg}"
    );

    let e = open(&oci(&f.layout, None)).err().unwrap();
    assert!(
        matches!(e, SourceError::TagRequired { count: 2, .. }),
        "{e}"
    );

    // A layout with a single manifest needs no tag; the name defaults to latest.
    let (_tmp, copy) = copy_of(&f.layout);
    write_index_json(&copy, json!([descriptor_of_tag(&f.layout, "u")]));
    let only = open(&oci(&copy, None)).unwrap();
    assert_eq!(only.image().manifest_digest, u.image().manifest_digest);
    assert_eq!(only.image().default_name, "local/layout:latest");
}

#[test]
fn zstd_layout() {
    let Some(f) = fixture("zstd_layout") else {
        return;
    };
    let gz = open(&oci(&f.layout, Some("t"))).unwrap();
    let zs = open(&oci(&f.zstd, Some("t"))).unwrap();
    let (gi, zi) = (gz.image(), zs.image());
    assert!(zi.layers.iter().all(|l| l.compression == Compression::Zstd));
    let diff = |i: &source::ResolvedImage| i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>();
    assert_eq!(diff(gi), diff(zi));
    assert_eq!(read_layers(zs.as_ref()), read_layers(gz.as_ref()));
}

#[test]
fn partial_read_then_finish_still_verifies() {
    let Some(f) = fixture("partial_read_then_finish_still_verifies") else {
        return;
    };
    let src = open(&oci(&f.layout, Some("t"))).unwrap();
    let layer = &src.image().layers[0];
    let mut stream = src.open_layer(layer).unwrap();
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut entries = archive.entries().unwrap();
        let first = entries.next().unwrap().unwrap();
        assert!(!first.path().unwrap().as_os_str().is_empty());
    }
    let stats = stream.finish().unwrap();
    assert_eq!(stats.compressed_bytes, layer.size);
    assert!(stats.uncompressed_bytes >= 3 * 512);

    // Not reading at all is fine too; a stream dropped unread does not hang.
    assert!(src.open_layer(layer).unwrap().finish().is_ok());
    drop(src.open_layer(layer).unwrap());
}

#[test]
fn tampered_layer_blob_fails_naming_the_digest() {
    let Some(f) = fixture("tampered_layer_blob_fails_naming_the_digest") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layer = src.image().layers[0].clone();
    let path = blob_path(&copy, &layer.digest);
    let mut blob = fs::read(&path).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x01;
    fs::write(&path, &blob).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    assert!(
        matches!(e, SourceError::LayerDigest { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
}

#[test]
fn truncated_layer_blob_fails() {
    let Some(f) = fixture("truncated_layer_blob_fails") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layer = src.image().layers[1].clone();
    let path = blob_path(&copy, &layer.digest);
    let blob = fs::read(&path).unwrap();
    fs::write(&path, &blob[..blob.len() - 20]).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    let expected_actual = layer.size - 20;
    assert!(
        matches!(e, SourceError::LayerSize { index: 1, actual, .. } if actual == expected_actual),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");

    // A missing blob is an error naming the path.
    fs::remove_file(&path).unwrap();
    let e = src.open_layer(&layer).err().unwrap();
    assert!(e.to_string().contains(&layer.digest.hex()), "{e}");
}

#[test]
fn wrong_diff_id_in_config() {
    let Some(f) = fixture("wrong_diff_id_in_config") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let bogus = Digest::of(b"not the layer");
    rewrite(
        &copy,
        "t",
        |c| c["rootfs"]["diff_ids"][1] = json!(bogus.to_string()),
        |_| {},
    );
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let layers = src.image().layers.clone();
    assert_eq!(layers[1].diff_id, bogus);
    read_layers_ok(src.as_ref(), &layers[0]);
    let e = layer_error(src.as_ref(), &layers[1]);
    assert!(
        matches!(e, SourceError::LayerDiffId { index: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&bogus.to_string()), "{e}");
}

fn read_layers_ok(src: &dyn ImageSource, layer: &LayerDescriptor) {
    let mut s = src.open_layer(layer).unwrap();
    io::copy(&mut s, &mut io::sink()).unwrap();
    s.finish().unwrap();
}

#[test]
fn inconsistent_manifests_are_refused() {
    let Some(f) = fixture("inconsistent_manifests_are_refused") else {
        return;
    };

    // Unknown layer media type.
    let (_t1, copy) = copy_of(&f.layout);
    rewrite(
        &copy,
        "t",
        |_| {},
        |m| m["layers"][1]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2"),
    );
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::UnsupportedMediaType { .. }), "{e}");
    assert!(
        e.to_string().contains("tar+bzip2") && e.to_string().contains("layer 1"),
        "{e}"
    );

    // Layer count differs from the diff_ids.
    let (_t2, copy) = copy_of(&f.layout);
    rewrite(
        &copy,
        "t",
        |c| {
            c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
        },
        |_| {},
    );
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::LayerCountMismatch {
                layers: 2,
                diff_ids: 1,
                ..
            }
        ),
        "{e}"
    );

    // Absurd manifest size: refused before reading.
    let (_t3, copy) = copy_of(&f.layout);
    let mut desc = descriptor_of_tag(&copy, "t");
    desc["size"] = json!(1_u64 << 50);
    write_index_json(&copy, json!([desc.clone()]));
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");

    // Size off by one.
    let size = descriptor_of_tag(&f.layout, "t")["size"].as_u64().unwrap();
    desc["size"] = json!(size - 1);
    write_index_json(&copy, json!([desc.clone()]));
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::SizeMismatch { .. }), "{e}");

    // A config blob that does not match its digest.
    let (_t4, copy) = copy_of(&f.layout);
    let src = open(&oci(&copy, Some("t"))).unwrap();
    let cpath = blob_path(&copy, &src.image().config_digest);
    let mut config = fs::read(&cpath).unwrap();
    let last = config.len() - 2;
    config[last] = b' ';
    fs::write(&cpath, &config).unwrap();
    let e = open(&oci(&copy, Some("t"))).err().unwrap();
    assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("config"), "{e}");

    // Not a layout at all.
    let e = open(&oci(&f.root, None)).err().unwrap();
    assert!(e.to_string().contains("oci-layout"), "{e}");
}

#[test]
fn nested_indexes() {
    let Some(f) = fixture("nested_indexes") else {
        return;
    };
    let (_tmp, copy) = copy_of(&f.layout);
    let mut manifest = descriptor_of_tag(&f.layout, "t");
    manifest.as_object_mut().unwrap().remove("annotations");
    let platform = |arch: &str| json!({"os": "linux", "architecture": arch});
    let entry = |arch: &str| {
        let mut d = manifest.clone();
        d["platform"] = platform(arch);
        d
    };
    let other_arch = if host_arch() == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let index = |manifests: Value| {
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        serde_json::to_vec(&doc).unwrap()
    };
    let index_desc = |(digest, size): (Digest, u64), tag: &str| {
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
    };

    // An index with the host's platform and another one: the host's wins.
    let good = write_blob(
        &copy,
        &index(json!([entry(other_arch), entry(host_arch())])),
    );
    // An index without the host's platform.
    let foreign = write_blob(&copy, &index(json!([entry(other_arch)])));
    // A chain of indexes deeper than allowed.
    let mut deep = good;
    for _ in 0..source::oci_layout::MAX_INDEX_DEPTH {
        let mut d = index_desc(deep, "x");
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = platform(host_arch());
        deep = write_blob(&copy, &index(json!([d])));
    }
    // An index that lists itself (it cannot verify, but must not loop).
    let self_digest = Digest::of(b"placeholder");
    let looping = index(json!([{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": self_digest.to_string(),
        "size": 100,
        "platform": platform(host_arch()),
    }]));
    fs::write(blob_path(&copy, &self_digest), &looping).unwrap();
    write_index_json(
        &copy,
        json!([
            index_desc(good, "multi"),
            index_desc(foreign, "foreign"),
            index_desc(deep, "deep"),
            index_desc((self_digest, looping.len() as u64), "loop"),
        ]),
    );

    let src = open(&oci(&copy, Some("multi"))).unwrap();
    let direct = open(&oci(&f.layout, Some("t"))).unwrap();
    assert_eq!(src.image().manifest_digest, direct.image().manifest_digest);
    assert_eq!(src.image().default_name, "local/layout:multi");

    let e = open(&oci(&copy, Some("foreign"))).err().unwrap();
    assert!(matches!(e, SourceError::PlatformNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("linux/{other_arch}")),
        "{e}"
    );

    let e = open(&oci(&copy, Some("deep"))).err().unwrap();
    assert!(matches!(e, SourceError::IndexNesting { .. }), "{e}");

    let e = open(&oci(&copy, Some("loop"))).err().unwrap();
    assert!(
        matches!(
            e,
            SourceError::DigestMismatch { .. } | SourceError::IndexNesting { .. }
        ),
        "{e}"
    );
}
