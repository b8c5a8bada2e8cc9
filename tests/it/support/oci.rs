//! Hand-built OCI image layouts with correct digests, and a raw tar builder
//! that can write what well-behaved tools refuse to (`..`, absolute paths,
//! escaping links, absurd sizes), for `tests/it/bad_input.rs` and for splicing a
//! hand-made layer into an image that umoci built.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------
// Tar

/// One tar entry, described with raw bytes so that anything can be written.
#[derive(Clone, Debug)]
pub struct TarEntry {
    /// Raw path bytes as they go into the archive (no normalisation at all).
    pub path: Vec<u8>,
    pub kind: TarKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// When set, a PAX `mtime` record `secs.nanos` is written as well.
    pub mtime_nsec: Option<u32>,
    /// PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Size written in the header instead of the real data length.
    pub declared_size: Option<u64>,
    /// Extra PAX records, written as given (after the others).
    pub pax: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug)]
pub enum TarKind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

impl TarEntry {
    fn new(path: &[u8], kind: TarKind, mode: u32) -> TarEntry {
        TarEntry {
            path: path.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: None,
            xattrs: Vec::new(),
            declared_size: None,
            pax: Vec::new(),
        }
    }
    pub fn file(path: &[u8], content: &[u8]) -> TarEntry {
        TarEntry::new(path, TarKind::File(content.to_vec()), 0o644)
    }
    pub fn dir(path: &[u8]) -> TarEntry {
        TarEntry::new(path, TarKind::Dir, 0o755)
    }
    pub fn symlink(path: &[u8], target: &[u8]) -> TarEntry {
        TarEntry::new(path, TarKind::Symlink(target.to_vec()), 0o777)
    }
    pub fn hardlink(path: &[u8], target: &[u8]) -> TarEntry {
        TarEntry::new(path, TarKind::Hardlink(target.to_vec()), 0o644)
    }
    pub fn char_dev(path: &[u8], major: u32, minor: u32) -> TarEntry {
        TarEntry::new(path, TarKind::Char(major, minor), 0o644)
    }
    pub fn block_dev(path: &[u8], major: u32, minor: u32) -> TarEntry {
        TarEntry::new(path, TarKind::Block(major, minor), 0o660)
    }
    pub fn fifo(path: &[u8]) -> TarEntry {
        TarEntry::new(path, TarKind::Fifo, 0o644)
    }
    /// An overlay-style whiteout entry `.wh.<name>` in `dir` (empty file).
    pub fn whiteout(dir: &[u8], name: &[u8]) -> TarEntry {
        let mut p = dir.to_vec();
        if !p.is_empty() && !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(b".wh.");
        p.extend_from_slice(name);
        TarEntry::new(&p, TarKind::File(Vec::new()), 0)
    }
    /// The opaque marker `<dir>/.wh..wh..opq`.
    pub fn opaque(dir: &[u8]) -> TarEntry {
        TarEntry::whiteout(dir, b".wh..opq")
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: u64, nsec: Option<u32>) -> Self {
        self.mtime = secs;
        self.mtime_nsec = nsec;
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }
    pub fn declared_size(mut self, size: u64) -> Self {
        self.declared_size = Some(size);
        self
    }
    /// Adds a raw PAX record (e.g. `uid` = `-1`, `size` = an absurd value).
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
}

/// Builds an uncompressed tar stream from [`TarEntry`]s. Names up to 100
/// bytes go raw into the ustar `name`/`linkname` fields; longer ones into PAX
/// `path`/`linkpath` records. Nothing is validated or normalised.
pub fn build_tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();
        let (ty, data, link): (tar::EntryType, &[u8], Option<&[u8]>) = match &e.kind {
            TarKind::File(d) => (tar::EntryType::Regular, d, None),
            TarKind::Dir => (tar::EntryType::Directory, &[], None),
            TarKind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(t)),
            TarKind::Hardlink(t) => (tar::EntryType::Link, &[], Some(t)),
            TarKind::Char(..) => (tar::EntryType::Char, &[], None),
            TarKind::Block(..) => (tar::EntryType::Block, &[], None),
            TarKind::Fifo => (tar::EntryType::Fifo, &[], None),
        };
        h.set_entry_type(ty);
        if let TarKind::Char(ma, mi) | TarKind::Block(ma, mi) = e.kind {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.declared_size.unwrap_or(data.len() as u64));
        {
            let u = h.as_ustar_mut().unwrap();
            if e.path.len() <= 100 {
                u.name = [0; 100];
                u.name[..e.path.len()].copy_from_slice(&e.path);
            } else {
                let short = b"long-name-in-pax";
                u.name = [0; 100];
                u.name[..short.len()].copy_from_slice(short);
                pax.push(("path".into(), e.path.clone()));
            }
            if let Some(l) = link {
                u.linkname = [0; 100];
                if l.len() <= 100 {
                    u.linkname[..l.len()].copy_from_slice(l);
                } else {
                    pax.push(("linkpath".into(), l.to_vec()));
                }
            }
        }
        if let Some(ns) = e.mtime_nsec {
            pax.push((
                "mtime".into(),
                format!("{}.{:09}", e.mtime, ns).into_bytes(),
            ));
        }
        for (k, v) in &e.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        pax.extend(e.pax.iter().cloned());
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------
// Layers and layouts

/// A layer blob: the uncompressed tar (for the diff_id) and the stored blob.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

impl Layer {
    pub fn gzip(entries: &[TarEntry]) -> Layer {
        let tar = build_tar(entries);
        Layer {
            blob: gzip(&tar),
            tar,
            media_type: MT_LAYER_GZIP.into(),
        }
    }
    pub fn zstd(entries: &[TarEntry]) -> Layer {
        let tar = build_tar(entries);
        Layer {
            blob: {
                // With a content checksum, as skopeo writes them.
                let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
                enc.include_checksum(true).unwrap();
                enc.write_all(&tar).unwrap();
                enc.finish().unwrap()
            },
            tar,
            media_type: MT_LAYER_ZSTD.into(),
        }
    }
    pub fn uncompressed(entries: &[TarEntry]) -> Layer {
        let tar = build_tar(entries);
        Layer {
            blob: tar.clone(),
            tar,
            media_type: MT_LAYER_TAR.into(),
        }
    }
    /// `sha256:` of the uncompressed tar.
    pub fn diff_id(&self) -> String {
        digest_of(&self.tar)
    }
    /// `sha256:` of the blob as stored.
    pub fn digest(&self) -> String {
        digest_of(&self.blob)
    }
}

/// An OCI image layout directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Creates an empty layout (`oci-layout`, empty `index.json`, `blobs/sha256`).
    pub fn create(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": []})).unwrap(),
        )
        .unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn open(dir: &Path) -> Layout {
        assert!(
            dir.join("index.json").is_file(),
            "no OCI layout at {}",
            dir.display()
        );
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(crate::support::digest_hex(digest))
    }

    /// Stores a blob under its digest; returns `(digest, size)`.
    pub fn write_blob(&self, bytes: &[u8]) -> (String, u64) {
        let d = digest_of(bytes);
        std::fs::write(self.blob_path(&d), bytes).unwrap();
        (d, bytes.len() as u64)
    }

    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.blob_path(digest)).unwrap()
    }

    pub fn read_json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.read_blob(digest)).unwrap()
    }

    pub fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    pub fn write_index(&self, index: &Value) {
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(index).unwrap(),
        )
        .unwrap();
    }

    /// The index entry (descriptor) of `tag`.
    pub fn descriptor(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"][REF_NAME] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("tag {tag} not in {}", self.dir.display()))
    }

    /// `(manifest digest, manifest)` of `tag`.
    pub fn manifest(&self, tag: &str) -> (String, Value) {
        let d = self.descriptor(tag)["digest"].as_str().unwrap().to_string();
        let m = self.read_json(&d);
        (d, m)
    }

    /// The image config of `tag`.
    pub fn config(&self, tag: &str) -> Value {
        let (_, m) = self.manifest(tag);
        self.read_json(m["config"]["digest"].as_str().unwrap())
    }

    /// The layers' `(digest, media type)` of `tag`, base first.
    pub fn layers(&self, tag: &str) -> Vec<(String, String)> {
        let (_, m) = self.manifest(tag);
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["mediaType"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The config's `rootfs.diff_ids` of `tag`.
    pub fn diff_ids(&self, tag: &str) -> Vec<String> {
        self.config(tag)["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect()
    }

    /// Writes `manifest` as a blob and points `tag` at it (replacing any
    /// previous entry of that tag); returns the manifest digest.
    pub fn set_manifest(&self, tag: &str, manifest: &Value) -> String {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let (digest, size) = self.write_blob(&bytes);
        let mut index = self.index();
        let list = index["manifests"].as_array_mut().unwrap();
        list.retain(|m| m["annotations"][REF_NAME] != tag);
        list.push(json!({
            "mediaType": MT_MANIFEST,
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME: tag},
        }));
        self.write_index(&index);
        digest
    }

    /// Writes a config (with `rootfs.diff_ids` from the layers), the layer
    /// blobs and a manifest, and tags it; returns the manifest digest.
    pub fn add_image(&self, tag: &str, layers: &[Layer]) -> String {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(Layer::diff_id).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created_by": "stratum test harness"})).collect::<Vec<_>>(),
        });
        let (cd, cs) = self.write_blob(&serde_json::to_vec(&config).unwrap());
        let descs: Vec<Value> = layers
            .iter()
            .map(|l| {
                let (d, s) = self.write_blob(&l.blob);
                json!({"mediaType": l.media_type, "digest": d, "size": s})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cd, "size": cs},
            "layers": descs,
        });
        self.set_manifest(tag, &manifest)
    }

    /// Lets `f` edit the manifest and the config of `tag`, then writes the
    /// config blob (fixing the manifest's config descriptor) and the manifest,
    /// and points `tag` at it. Returns the new manifest digest.
    pub fn edit_image(&self, tag: &str, f: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (_, mut manifest) = self.manifest(tag);
        let mut config = self.read_json(manifest["config"]["digest"].as_str().unwrap());
        f(&mut manifest, &mut config);
        let (cd, cs) = self.write_blob(&serde_json::to_vec(&config).unwrap());
        manifest["config"]["digest"] = json!(cd);
        manifest["config"]["size"] = json!(cs);
        self.set_manifest(tag, &manifest)
    }

    /// Splices `layer` on top of image `from_tag` and tags the result
    /// `to_tag` (which may equal `from_tag`): writes the blob, appends the
    /// descriptor to the manifest, the diff_id (and a history entry) to the
    /// config, writes new config and manifest blobs and updates `index.json`.
    /// Returns the new manifest digest.
    pub fn splice_layer(&self, from_tag: &str, to_tag: &str, layer: &Layer) -> String {
        let (_, mut manifest) = self.manifest(from_tag);
        let mut config = self.read_json(manifest["config"]["digest"].as_str().unwrap());
        let (ld, ls) = self.write_blob(&layer.blob);
        manifest["layers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"mediaType": layer.media_type, "digest": ld, "size": ls}));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(layer.diff_id()));
        if let Some(h) = config.get_mut("history").and_then(Value::as_array_mut) {
            h.push(json!({"created_by": "stratum test harness: spliced layer"}));
        }
        let (cd, cs) = self.write_blob(&serde_json::to_vec(&config).unwrap());
        manifest["config"]["digest"] = json!(cd);
        manifest["config"]["size"] = json!(cs);
        self.set_manifest(to_tag, &manifest)
    }
}
