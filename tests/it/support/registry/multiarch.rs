//! Multi-arch images: an image index of per-platform images sharing a
//! base layer, hand-built in an OCI layout (needs neither root nor umoci).

use super::*;

/// An OCI platform (`os`/`architecture`[/`variant`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// The descriptor's `platform` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"architecture": self.architecture, "os": self.os});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }

    /// `linux/arm64/v8`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// `linux-arm64-v8`, for tags and file names.
    pub fn slug(&self) -> String {
        self.name().replace('/', "-")
    }
}

/// One platform's image of a [`MultiArch`].
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub platform: Platform,
    /// Its own tag in the layout: `<index tag>-<platform slug>`.
    pub tag: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// Base first. The first (base) layer is the same blob on every platform.
    pub layers: Vec<Layer>,
    /// The regular files of its top (platform) layer: `(path, content)`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A multi-arch image: an OCI image index in a layout, tagged `tag`, whose
/// manifest descriptors carry `platform` fields.
#[derive(Clone, Debug)]
pub struct MultiArch {
    pub layout: PathBuf,
    pub tag: String,
    pub index_digest: String,
    #[allow(dead_code)] // part of what a test may assert on
    pub index: Value,
    pub images: Vec<PlatformImage>,
}

impl MultiArch {
    /// The platform image whose architecture is `arch`.
    pub fn image(&self, arch: &str) -> &PlatformImage {
        self.images
            .iter()
            .find(|i| i.platform.architecture == arch)
            .unwrap_or_else(|| panic!("no {arch} image in {}", self.tag))
    }

    /// `oci:LAYOUT:TAG`.
    #[allow(dead_code)] // the source string of this image, for tests to publish it
    pub fn source(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
}

/// The layer every platform image shares.
fn shared_base_layer() -> Layer {
    Layer::gzip(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(
            b"etc/os-release",
            b"NAME=\"stratum multi-arch test\"\nID=stratum-test\n",
        ),
        TarEntry::dir(b"usr/"),
        TarEntry::dir(b"usr/share/"),
        TarEntry::file(b"usr/share/common.txt", b"the same on every platform\n"),
    ])
}

/// The files that differ between platforms (so their flat trees differ).
fn platform_files(p: &Platform) -> Vec<(String, Vec<u8>)> {
    let seed = p
        .name()
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    vec![
        (
            "etc/platform".into(),
            format!("{}\n", p.name()).into_bytes(),
        ),
        (
            "usr/bin/hello".into(),
            format!("#!/bin/sh\necho 'hello from {}'\n", p.name()).into_bytes(),
        ),
        (
            format!("usr/lib/{}.bin", p.slug()),
            Rng::new(seed).bytes(20_000),
        ),
    ]
}

/// Builds a multi-arch image in the OCI layout `layout_dir` (created when
/// missing): one image per platform, each with the shared base layer and a
/// platform layer ([`platform_files`]: `etc/platform`, `usr/bin/hello` and
/// `usr/lib/<slug>.bin`), its config's `os`/`architecture`/`variant` set,
/// tagged `<tag>-<slug>`; then the image index listing them with `platform`
/// fields, tagged `tag`. `skopeo copy --all oci:DIR:TAG` pushes all of it.
pub fn build_multiarch(layout_dir: &Path, tag: &str, platforms: &[Platform]) -> MultiArch {
    let layout = if layout_dir.join("index.json").exists() {
        Layout::open(layout_dir)
    } else {
        Layout::create(layout_dir)
    };
    let base = shared_base_layer();
    let mut images = Vec::new();
    for p in platforms {
        let files = platform_files(p);
        let mut entries = vec![
            TarEntry::dir(b"etc/"),
            TarEntry::dir(b"usr/"),
            TarEntry::dir(b"usr/bin/"),
            TarEntry::dir(b"usr/lib/"),
        ];
        for (path, content) in &files {
            let e = TarEntry::file(path.as_bytes(), content);
            entries.push(if path.starts_with("usr/bin/") {
                e.mode(0o755)
            } else {
                e
            });
        }
        let layers = vec![base.clone(), Layer::gzip(&entries)];
        let ptag = format!("{tag}-{}", p.slug());
        layout.add_image(&ptag, &layers);
        let digest = layout.edit_image(&ptag, |_, config| {
            config["os"] = json!(p.os);
            config["architecture"] = json!(p.architecture);
            match &p.variant {
                Some(v) => config["variant"] = json!(v),
                None => {
                    config.as_object_mut().unwrap().remove("variant");
                }
            }
        });
        let size = layout.read_blob(&digest).len() as u64;
        images.push(PlatformImage {
            platform: p.clone(),
            tag: ptag,
            manifest_digest: digest,
            manifest_size: size,
            layers,
            files,
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": images.iter().map(|i| json!({
            "mediaType": MT_MANIFEST,
            "digest": i.manifest_digest,
            "size": i.manifest_size,
            "platform": i.platform.to_json(),
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let (index_digest, size) = layout.write_blob(&bytes);
    assert_eq!(index_digest, digest_of(&bytes));
    let mut top = layout.index();
    let list = top["manifests"].as_array_mut().unwrap();
    list.retain(|m| m["annotations"][REF_NAME] != tag);
    list.push(json!({
        "mediaType": MT_INDEX,
        "digest": index_digest,
        "size": size,
        "annotations": {REF_NAME: tag},
    }));
    layout.write_index(&top);
    MultiArch {
        layout: layout_dir.to_path_buf(),
        tag: tag.to_string(),
        index_digest,
        index,
        images,
    }
}

/// [`build_multiarch`] for `linux/amd64` and `linux/arm64/v8`.
pub fn build_multiarch_default(layout_dir: &Path, tag: &str) -> MultiArch {
    build_multiarch(
        layout_dir,
        tag,
        &[
            Platform::new("linux", "amd64", None),
            Platform::new("linux", "arm64", Some("v8")),
        ],
    )
}
