//! A minimal reference extractor of per-layer trees, overlayfs style, for the
//! harness's own self-test: it shows that the overlay comparison of
//! `tests/it/oracle.rs` can pass (stacking correct layer trees gives what
//! `umoci unpack` gives) before stratum exists. Not a model of stratum's
//! code; only as careful as the fixture images need.
//!
//! Per layer: `.wh.NAME` → character device 0:0 `NAME` (ignored below a
//! non-directory of the same layer, which umoci writes); `.wh..wh..opq` → the
//! directory gets `trusted.overlay.opaque=y` (and `user.overlay.opaque=y`); a
//! hardlink whose target is not in this layer becomes a copy of the target
//! from the nearest lower layer tree (overlayfs cannot share inodes across
//! layers).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fsutil;
use super::oci::{Layout, MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD};

/// Normalises a member name: no leading `./` or `/`, no trailing `/`; the
/// root is the empty path.
fn clean(name: &[u8]) -> Vec<u8> {
    let mut n = name;
    loop {
        if let Some(r) = n.strip_prefix(b"./") {
            n = r;
        } else if let Some(r) = n.strip_prefix(b"/") {
            n = r;
        } else {
            break;
        }
    }
    let n = n.strip_suffix(b"/").unwrap_or(n);
    if n == b"." {
        Vec::new()
    } else {
        n.to_vec()
    }
}

fn open_layer(layout: &Layout, digest: &str, media_type: &str) -> Box<dyn Read> {
    let f = std::fs::File::open(layout.blob_path(digest)).unwrap();
    match media_type {
        MT_LAYER_GZIP => Box::new(flate2::read::GzDecoder::new(f)),
        MT_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::new(f).unwrap()),
        MT_LAYER_TAR => Box::new(f),
        other => panic!("unknown layer media type {other}"),
    }
}

/// Extracts every layer of `LAYOUT:TAG` into `dest/layerN`; returns the
/// layer dirs, base first.
pub fn extract_layer_trees(layout: &Layout, tag: &str, dest: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, (digest, mt)) in layout.layers(tag).iter().enumerate() {
        let dir = dest.join(format!("layer{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        extract_layer(open_layer(layout, digest, mt), &dir, &dirs);
        dirs.push(dir);
    }
    dirs
}

struct Meta {
    path: PathBuf,
    is_dir: bool,
    is_link: bool,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
}

/// Creates the missing ancestors of `rel` in the layer tree `root`. A layer
/// may hold `etc/hostname` without an `etc/` entry (umoci leaves out
/// directories whose own metadata did not change). Such an implicit
/// directory takes the metadata that the directory has in the lower layers,
/// so that the stacked mount shows the lower directory's mode, owner, mtime
/// and xattrs, as the flat tree does.
fn ensure_parents(root: &Path, rel: &[u8], lowers: &[PathBuf], metas: &mut Vec<Meta>) {
    let mut prefix: Vec<u8> = Vec::new();
    let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
    for comp in &comps[..comps.len().saturating_sub(1)] {
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(comp);
        let path = fsutil::p(root, &prefix);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        std::fs::create_dir(&path).unwrap();
        // The nearest lower layer that has something at this path decides.
        let lower = lowers
            .iter()
            .rev()
            .map(|l| fsutil::p(l, &prefix))
            .find_map(|p| std::fs::symlink_metadata(&p).ok().map(|m| (p, m)));
        match lower {
            Some((lp, md)) if md.is_dir() => {
                for (k, v) in fsutil::xattrs(&lp).unwrap() {
                    if !k.ends_with(b"overlay.opaque") {
                        fsutil::set_xattr(&path, std::str::from_utf8(&k).unwrap(), &v);
                    }
                }
                metas.push(Meta {
                    path,
                    is_dir: true,
                    is_link: false,
                    mode: md.mode() & 0o7777,
                    uid: md.uid().into(),
                    gid: md.gid().into(),
                    mtime: (md.mtime(), md.mtime_nsec() as u32),
                });
            }
            _ => metas.push(Meta {
                path,
                is_dir: true,
                is_link: false,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: (0, 0),
            }),
        }
    }
}

fn extract_layer(r: Box<dyn Read>, root: &Path, lowers: &[PathBuf]) {
    let mut ar = tar::Archive::new(r);
    let mut metas: Vec<Meta> = Vec::new();
    let mut written: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    for entry in ar.entries().unwrap() {
        let mut e = entry.unwrap();
        let name = clean(&e.path_bytes());
        let h = e.header().clone();
        let mut mtime = (h.mtime().unwrap() as i64, 0u32);
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                let key = ext.key().unwrap();
                if key == "mtime" {
                    let v = ext.value().unwrap();
                    let (s, ns) = v.split_once('.').unwrap_or((v, "0"));
                    let ns = format!("{ns:0<9}");
                    mtime = (s.parse().unwrap(), ns[..9].parse().unwrap());
                } else if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((x.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let (dir_part, base) = match name.iter().rposition(|b| *b == b'/') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => (&b""[..], &name[..]),
        };
        ensure_parents(root, &name, lowers, &mut metas);
        if base == b".wh..wh..opq" {
            let d = fsutil::p(root, dir_part);
            assert!(d.is_dir(), "opaque marker in {d:?}, not a directory");
            fsutil::set_xattr(&d, "trusted.overlay.opaque", b"y");
            fsutil::set_xattr(&d, "user.overlay.opaque", b"y");
            continue;
        }
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            // umoci 0.4.7 writes `back` (a file) and then `back/.wh.inner`
            // when a directory became a file: nothing to hide below a file.
            let parent = fsutil::p(root, dir_part);
            if std::fs::symlink_metadata(&parent).is_ok_and(|m| !m.is_dir()) {
                continue;
            }
            let mut rel = dir_part.to_vec();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(hidden);
            fsutil::char_dev(root, &rel, 0, 0, 0o000);
            continue;
        }
        let path = fsutil::p(root, &name);
        let ty = h.entry_type();
        if !ty.is_dir() {
            if let Ok(md) = std::fs::symlink_metadata(&path) {
                if md.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
        let is_link = ty.is_symlink();
        match ty {
            t if t.is_dir() => std::fs::create_dir_all(&path).unwrap(),
            t if t.is_file() => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                std::fs::write(&path, data).unwrap();
            }
            t if t.is_symlink() => {
                let target = e.link_name_bytes().unwrap();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).unwrap();
            }
            t if t.is_hard_link() => {
                let target = clean(&e.link_name_bytes().unwrap());
                if let Some(src) = written.get(&target) {
                    std::fs::hard_link(src, &path).unwrap();
                } else {
                    // Target in a lower layer: copy it with its metadata.
                    let src = lowers
                        .iter()
                        .rev()
                        .map(|l| fsutil::p(l, &target))
                        .find(|p| p.exists())
                        .unwrap_or_else(|| panic!("hardlink target {target:?} in no layer"));
                    std::fs::copy(&src, &path).unwrap();
                    let md = std::fs::symlink_metadata(&src).unwrap();
                    fsutil::lchown(&path, md.uid(), md.gid());
                    fsutil::chmod(&path, md.mode() & 0o7777);
                    for (k, v) in fsutil::xattrs(&src).unwrap() {
                        fsutil::set_xattr(&path, std::str::from_utf8(&k).unwrap(), &v);
                    }
                    fsutil::set_mtime(&path, md.mtime(), md.mtime_nsec() as u32);
                    written.insert(name.clone(), path.clone());
                }
                continue; // a hardlink carries no metadata of its own
            }
            t if t.is_character_special() || t.is_block_special() => {
                let (ma, mi) = (
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                );
                if t.is_character_special() {
                    fsutil::char_dev(root, &name, ma, mi, 0o600);
                } else {
                    fsutil::block_dev(root, &name, ma, mi, 0o600);
                }
            }
            t if t.is_fifo() => {
                fsutil::fifo(root, &name, 0o600);
            }
            other => panic!("unsupported tar entry type {other:?}"),
        }
        for (k, v) in &xattrs {
            fsutil::set_xattr(&path, k, v);
        }
        written.insert(name.clone(), path.clone());
        metas.push(Meta {
            path,
            is_dir: ty.is_dir(),
            is_link,
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime,
        });
    }
    // Owners and modes, then mtimes, directories last and deepest first.
    metas.sort_by_key(|m| (m.is_dir, std::cmp::Reverse(m.path.components().count())));
    for m in &metas {
        fsutil::lchown(&m.path, m.uid as u32, m.gid as u32);
        if !m.is_link {
            fsutil::chmod(&m.path, m.mode & 0o7777);
        }
        fsutil::set_mtime(&m.path, m.mtime.0, m.mtime.1);
    }
}
