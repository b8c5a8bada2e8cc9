//! `docker-archive:` sources: archives `skopeo` writes, and tampered,
//! truncated or inconsistent ones.

use super::*;

#[test]
fn docker_archive_streams_every_layer() {
    let Some(f) = fixture("docker_archive_streams_every_layer") else {
        return;
    };
    let spec = format!("docker-archive:{}", f.archive.display());
    let src = open(&spec).unwrap();
    let oci_src = open(&oci(&f.layout, Some("t"))).unwrap();
    let (image, oci_image) = (src.image(), oci_src.image());
    assert_eq!(image.default_name, "local/foo:bar");
    assert_eq!(image.platform, oci_image.platform);
    assert_eq!(image.config_digest, oci_image.config_digest);
    assert_eq!(Digest::of(&image.manifest), image.manifest_digest);
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["digest"],
        image.config_digest.to_string()
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    for (l, o) in image.layers.iter().zip(&oci_image.layers) {
        assert_eq!(l.compression, Compression::None);
        assert_eq!(l.digest, l.diff_id);
        assert_eq!(l.diff_id, o.diff_id);
        assert_eq!(manifest["layers"][l.index]["digest"], l.digest.to_string());
    }
    // Same synthesized manifest on every open.
    assert_eq!(
        open(&spec).unwrap().image().manifest_digest,
        image.manifest_digest
    );
    assert_eq!(read_layers(src.as_ref()), read_layers(oci_src.as_ref()));
}

#[test]
fn docker_archive_tampered_layer() {
    let Some(f) = fixture("docker_archive_tampered_layer") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("archive.tar");
    fs::copy(&f.archive, &copy).unwrap();
    let src = open(&format!("docker-archive:{}", copy.display())).unwrap();
    let layer = src.image().layers[0].clone();
    // Find the layer's bytes in the archive and flip one in the middle of its data.
    let mut bytes = fs::read(&copy).unwrap();
    let mut stream = src.open_layer(&layer).unwrap();
    let mut data = Vec::new();
    stream.read_to_end(&mut data).unwrap();
    stream.finish().unwrap();
    let at = bytes
        .windows(data.len())
        .position(|w| w == data.as_slice())
        .unwrap();
    bytes[at + 100] ^= 0x20;
    fs::write(&copy, &bytes).unwrap();
    let e = layer_error(src.as_ref(), &layer);
    assert!(
        matches!(e, SourceError::LayerDiffId { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
}

/// Writes a docker archive holding the OCI layout's gzip layers as they
/// are. Old style: `<hex>.json` config, `L<i>/layer.tar` layers, the first
/// named through a symlink. New style (docker ≥ 25): `blobs/sha256/<hex>`.
fn gzip_docker_archive(f: &Fixture, dst: &Path, new_style: bool) -> source::ResolvedImage {
    let oci_src = open(&oci(&f.layout, Some("t"))).unwrap();
    let image = oci_src.image().clone();
    let mut b = tar::Builder::new(fs::File::create(dst).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let config_name = if new_style {
        format!("blobs/sha256/{}", image.config_digest.hex())
    } else {
        format!("{}.json", image.config_digest.hex())
    };
    add(&config_name, &image.config);
    let mut layer_names = Vec::new();
    for l in &image.layers {
        let name = if new_style {
            format!("blobs/sha256/{}", l.digest.hex())
        } else {
            format!("L{}/layer.tar", l.index)
        };
        add(&name, &fs::read(blob_path(&f.layout, &l.digest)).unwrap());
        layer_names.push(name);
    }
    if !new_style {
        layer_names[0] = "link/layer.tar".to_owned();
    }
    let manifest = json!([{"Config": config_name, "RepoTags": null, "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    if !new_style {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "link/layer.tar", "../L0/layer.tar")
            .unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
    image
}

#[test]
fn docker_archive_with_gzip_layers_and_links() {
    let Some(f) = fixture("docker_archive_with_gzip_layers_and_links") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for new_style in [false, true] {
        let path = tmp.path().join(format!("Hand Made {new_style}.tar"));
        let oci_image = gzip_docker_archive(f, &path, new_style);
        let src = open(&format!("docker-archive:{}", path.display())).unwrap();
        let image = src.image();
        assert_eq!(
            image.default_name,
            format!("local/hand-made-{new_style}:latest")
        );
        assert_eq!(image.config_digest, oci_image.config_digest);
        for (l, o) in image.layers.iter().zip(&oci_image.layers) {
            assert_eq!(l.compression, Compression::Gzip);
            assert_eq!(l.digest, o.digest, "hashed at open or taken from the name");
            assert_eq!(l.size, o.size);
            assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        }
        let names = read_layers(src.as_ref());
        assert!(names[0].iter().any(|n| n.ends_with("a.txt")), "{names:?}");
    }
}

#[test]
fn docker_archive_errors() {
    let Some(f) = fixture("docker_archive_errors") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // Truncated archive.
    let cut = tmp.path().join("cut.tar");
    let bytes = fs::read(&f.archive).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(open(&format!("docker-archive:{}", cut.display())).is_err());

    // Not a tar.
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    assert!(open(&format!("docker-archive:{}", junk.display())).is_err());

    // Missing file: names the path.
    let e = open("docker-archive:/nonexistent/x.tar").err().unwrap();
    assert!(e.to_string().contains("/nonexistent/x.tar"), "{e}");

    // A docker archive given as a layout and vice versa.
    assert!(open(&oci(&f.archive, None)).is_err());
    assert!(open(&format!("docker-archive:{}", f.layout.display())).is_err());
}
