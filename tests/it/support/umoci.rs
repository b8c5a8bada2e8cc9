//! Builds real OCI images with the real `umoci` (and converts them with
//! `skopeo`), layer by layer, from closures that mutate a rootfs.
//!
//! What umoci 0.4.7 does (checked by `fixture_images_are_what_we_think` in
//! `tests/it/oracle.rs`):
//! - `umoci repack` diffs the rootfs against the mtree recorded at unpack time
//!   (keywords include size, mode, uid/gid, nlink, tar_time, xattr and the
//!   sha256), so metadata-only changes and new hardlinks to old files re-emit
//!   the changed files; a hardlink added in an upper layer makes umoci emit
//!   the old file again in that layer with the link next to it.
//! - Deletions become per-file `.wh.<name>` whiteouts. umoci never emits the
//!   opaque marker `.wh..wh..opq`: a directory replaced wholesale gives one
//!   whiteout per vanished child. [`ImageBuilder::splice_layer`] adds
//!   hand-built layers for opaque directories and for hardlinks whose target
//!   lives only in a lower layer.
//! - Layer headers carry whole-second mtimes (no PAX `mtime`), user xattrs as
//!   `SCHILY.xattr.*`, and each layer has a `.` entry for the root.

use std::path::{Path, PathBuf};

use super::oci::{Layer, Layout};
use super::tool;

/// An image in an OCI layout, built one layer at a time with umoci.
pub struct ImageBuilder {
    pub layout: PathBuf,
    pub tag: String,
    layers: usize,
}

impl ImageBuilder {
    /// `umoci init` (if the layout does not exist yet) + `umoci new --image L:TAG`.
    pub fn new(layout: &Path, tag: &str) -> ImageBuilder {
        if !layout.join("index.json").exists() {
            if let Some(parent) = layout.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            tool("umoci", ["init", "--layout", layout.to_str().unwrap()]);
        }
        tool(
            "umoci",
            ["new", "--image", &format!("{}:{tag}", layout.display())],
        );
        ImageBuilder {
            layout: layout.to_path_buf(),
            tag: tag.to_string(),
            layers: 0,
        }
    }

    /// `umoci tag`: a second tag on the current image; building on the new
    /// builder leaves this one unchanged (how two images share a base).
    pub fn fork(&self, new_tag: &str) -> ImageBuilder {
        tool(
            "umoci",
            [
                "tag",
                "--image",
                &format!("{}:{}", self.layout.display(), self.tag),
                new_tag,
            ],
        );
        ImageBuilder {
            layout: self.layout.clone(),
            tag: new_tag.to_string(),
            layers: self.layers,
        }
    }

    /// `LAYOUT:TAG`, as umoci and skopeo name it.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.layout.display(), self.tag)
    }

    /// The stratum source `oci:LAYOUT:TAG`.
    pub fn source(&self) -> String {
        format!("oci:{}", self.image_ref())
    }

    /// The default name stratum gives it: `local/<layout dir name>:<tag>`.
    pub fn default_name(&self) -> String {
        format!(
            "local/{}:{}",
            self.layout.file_name().unwrap().to_str().unwrap(),
            self.tag
        )
    }

    pub fn layer_count(&self) -> usize {
        self.layers
    }

    pub fn oci(&self) -> Layout {
        Layout::open(&self.layout)
    }

    fn scratch(&self) -> PathBuf {
        let base = self.layout.with_file_name(format!(
            "{}.bundles",
            self.layout.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::create_dir_all(&base).unwrap();
        base
    }

    /// `umoci unpack` + `f(rootfs)` + `umoci repack`: one new layer holding
    /// whatever `f` changed (deletions become whiteouts).
    pub fn add_layer(&mut self, f: impl FnOnce(&Path)) -> &mut Self {
        let bundle = tempfile::tempdir_in(self.scratch()).unwrap();
        let bundle = bundle.path().join("b");
        tool(
            "umoci",
            [
                "unpack",
                "--image",
                &self.image_ref(),
                bundle.to_str().unwrap(),
            ],
        );
        f(&bundle.join("rootfs"));
        tool(
            "umoci",
            [
                "repack",
                "--image",
                &self.image_ref(),
                bundle.to_str().unwrap(),
            ],
        );
        let _ = std::fs::remove_dir_all(&bundle);
        self.layers += 1;
        self
    }

    /// Appends a hand-built layer (see [`Layout::splice_layer`]).
    pub fn splice_layer(&mut self, layer: &Layer) -> &mut Self {
        self.oci().splice_layer(&self.tag, &self.tag, layer);
        self.layers += 1;
        self
    }

    /// `umoci unpack --image L:TAG DEST`; returns `DEST/rootfs`, the oracle.
    pub fn unpack(&self, dest: &Path) -> PathBuf {
        tool(
            "umoci",
            [
                "unpack",
                "--image",
                &self.image_ref(),
                dest.to_str().unwrap(),
            ],
        );
        dest.join("rootfs")
    }

    /// `skopeo copy oci:L:T docker-archive:FILE:NAME`; returns the stratum
    /// source `docker-archive:FILE`. The archive's layers are the same tars
    /// (same diff_ids), uncompressed.
    pub fn docker_archive(&self, file: &Path, name: &str) -> String {
        skopeo_copy(
            &[],
            &format!("oci:{}", self.image_ref()),
            &format!("docker-archive:{}:{name}", file.display()),
        );
        format!("docker-archive:{}", file.display())
    }

    /// `skopeo copy --dest-compress-format zstd oci:L:T oci:DEST:TAG`: the same
    /// layer tars (same diff_ids) as `tar+zstd` blobs. umoci cannot read zstd
    /// layers, so the oracle of the copy is this (gzip) image.
    pub fn zstd_copy(&self, dest_layout: &Path, tag: &str) -> ImageBuilder {
        skopeo_copy(
            &["--dest-compress-format", "zstd"],
            &format!("oci:{}", self.image_ref()),
            &format!("oci:{}:{tag}", dest_layout.display()),
        );
        ImageBuilder {
            layout: dest_layout.to_path_buf(),
            tag: tag.to_string(),
            layers: self.layers,
        }
    }
}

fn skopeo_copy(extra: &[&str], from: &str, to: &str) {
    let mut args = vec!["--insecure-policy", "copy", "--quiet"];
    args.extend_from_slice(extra);
    args.push(from);
    args.push(to);
    tool("skopeo", args);
}
