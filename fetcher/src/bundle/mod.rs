//! OCI runtime bundles (`stratum bundle`): a `config.json` derived from a
//! published image's config the way `umoci unpack` derives it ([`spec`]),
//! whose `root.path` is the image's flat tree in a mount of the repository
//! (or in a directory `stratum pull` wrote), so that `runc run` starts the
//! image without unpacking anything.
//!
//! The image is picked as `stratum pull --image` picks it (this node's
//! platform of a multi-platform image,
//! [`stratum_catalog::image_index::pick_image`]); its config is the one
//! published with its record; the `User` is resolved against the image's
//! `/etc/passwd` and `/etc/group`, read through the repository (symlinks
//! followed inside the image's tree only, [`read_image_file`]).

use std::path::{Path, PathBuf};

use stratum_catalog::catalog::{Data, FileType};
use stratum_catalog::namespace::{CatalogLoader, Namespace, Node, MAX_SYMLINK_HOPS};

use crate::ObjectSource;

pub mod spec;
pub mod user;

pub use spec::{runtime_spec, Spec, SpecOptions};
pub use user::{resolve_user, ExecUser};

/// The largest `/etc/passwd` or `/etc/group` read from an image.
pub const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No image of that name (nor a platform variant of it) is published.
    #[error("no image {0} in the repository (see `stratum images`)")]
    NoImage(String),
    /// The image config cannot be turned into a runtime spec.
    #[error("the image config cannot be used: {0}")]
    Config(String),
    /// The image's `User` does not resolve.
    #[error("cannot resolve the image's User {user:?}: {reason}")]
    User { user: String, reason: String },
    /// The root file system given is not a directory (not mounted, a mount
    /// of another revision, a pull that is not there).
    #[error("rootfs {}: {reason}", path.display())]
    Rootfs { path: PathBuf, reason: String },
    /// Reading the repository (catalogs, `/etc/passwd`, `/etc/group`) failed.
    #[error("{path}: {source}")]
    Repository {
        path: String,
        #[source]
        source: Box<stratum_catalog::Error>,
    },
    /// The bundle directory or its `config.json` cannot be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn repo_err(path: &str) -> impl FnOnce(stratum_catalog::Error) -> BundleError + '_ {
    move |e| BundleError::Repository {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// Where the bundle's root file system is.
#[derive(Clone, Debug)]
pub enum Rootfs {
    /// This directory (e.g. what `stratum pull` wrote, or a mount of the image).
    Path(PathBuf),
    /// The image's flat tree under a whole-repository mount at this
    /// mount point: `MOUNTPOINT/flat/<ab>/<manifest digest hex>`.
    UnderMount(PathBuf),
}

/// What [`write_bundle`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Bundle {
    /// The `config.json` written.
    pub path: PathBuf,
    /// Its `root.path`.
    pub rootfs: PathBuf,
    /// The image record used (this platform's variant of the name asked for).
    pub image: String,
    pub manifest_digest: String,
    pub platform: String,
    /// The image's flat tree in the repository namespace.
    pub flat_path: String,
    /// Why the container may not start although the bundle is right (e.g.
    /// a FUSE mount without `allow_other` and a process that is not root).
    pub warnings: Vec<String>,
}

/// Writes `dir/config.json` (creating `dir`; an existing `config.json` is
/// replaced atomically) for `image` of the namespace `ns`, with `objects`
/// for file contents. The root file system must be a directory.
pub fn write_bundle<L: CatalogLoader>(
    ns: &Namespace<L>,
    objects: &dyn ObjectSource,
    image: &str,
    dir: &Path,
    rootfs: &Rootfs,
    terminal: bool,
) -> Result<Bundle, BundleError> {
    let variants = ns
        .image_index()
        .variants(image)
        .map_err(repo_err("/images"))?;
    let rec = stratum_catalog::image_index::pick_image(&variants, image)
        .ok_or_else(|| BundleError::NoImage(image.to_owned()))?;

    let rootfs = match rootfs {
        Rootfs::Path(p) => p.clone(),
        Rootfs::UnderMount(m) => m.join(rec.flat_path.trim_start_matches('/')),
    };
    let rootfs = std::path::absolute(&rootfs).map_err(|e| BundleError::Rootfs {
        path: rootfs.clone(),
        reason: e.to_string(),
    })?;
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(BundleError::Rootfs {
                path: rootfs,
                reason: "not a directory".into(),
            })
        }
        Err(e) => {
            return Err(BundleError::Rootfs {
                path: rootfs,
                reason: format!(
                    "{e} (is the repository mounted, and on a revision that has {}?)",
                    rec.name
                ),
            })
        }
    }
    let root_path = rootfs.to_str().ok_or_else(|| BundleError::Rootfs {
        path: rootfs.clone(),
        reason: "not valid UTF-8 (config.json is JSON)".into(),
    })?;

    let tree = ns
        .resolve(&rec.flat_path)
        .map_err(repo_err(&rec.flat_path))?;
    let passwd = read_image_file(ns, &tree, &rec.flat_path, "/etc/passwd", objects)?;
    let group = read_image_file(ns, &tree, &rec.flat_path, "/etc/group", objects)?;
    let spec = runtime_spec(
        &rec.config,
        passwd.as_deref(),
        group.as_deref(),
        &SpecOptions {
            root_path: root_path.to_owned(),
            terminal,
        },
    )?;

    let dir = std::path::absolute(dir).map_err(|source| BundleError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let dir = dir.as_path();
    let path = dir.join("config.json");
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut text = serde_json::to_vec_pretty(&spec).map_err(|e| BundleError::Write {
        path: path.clone(),
        source: e.into(),
    })?;
    text.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err(dir))?;
    std::io::Write::write_all(&mut tmp, &text).map_err(write_err(&path))?;
    tmp.as_file().sync_all().map_err(write_err(&path))?;
    // Readable by the runtime whatever the umask made of the temporary file.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(write_err(&path))?;
    tmp.persist(&path).map_err(|e| BundleError::Write {
        path: path.clone(),
        source: e.error,
    })?;

    let mut warnings = Vec::new();
    if spec.process.user.uid != 0 {
        if let Some(mountpoint) = fuse_mount_without_allow_other(&rootfs) {
            warnings.push(format!(
                "{} is a FUSE mount without allow_other: the container's user {} \
                 (uid {}) will be refused access; mount it with --allow-other",
                mountpoint.display(),
                spec.process.user.uid,
                spec.process.user.uid
            ));
        }
    }

    Ok(Bundle {
        warnings,
        path,
        rootfs,
        image: rec.name.clone(),
        manifest_digest: rec.manifest_digest.to_string(),
        platform: rec.platform.clone(),
        flat_path: rec.flat_path.clone(),
    })
}

/// The FUSE mount that holds `path`, if it was mounted without
/// `allow_other` (then only its owner may enter it: a container process
/// running as another user gets `EACCES`). From `/proc/self/mountinfo`.
fn fuse_mount_without_allow_other(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mountpoint, fstype, options) = mount_holding(&info, &path)?;
    let fuse = fstype == "fuse" || fstype.starts_with("fuse.");
    (fuse && !options.split(',').any(|o| o == "allow_other")).then_some(mountpoint)
}

/// The mount of `mountinfo` (proc_pid_mountinfo(5) text) whose mount point
/// is the longest prefix of `path`, the last one mounted there: its mount
/// point, file system type and super options.
fn mount_holding(mountinfo: &str, path: &Path) -> Option<(PathBuf, String, String)> {
    let unescape = |s: &str| -> PathBuf {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let octal = b
                .get(i + 1..i + 4)
                .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
            match octal {
                Some(d) => {
                    out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                    i += 4;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
    };
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in mountinfo.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mountpoint) = head.split(' ').nth(4).map(unescape) else {
            continue;
        };
        let mut tail = tail.split(' ');
        let fstype = tail.next().unwrap_or_default();
        let options = tail.nth(1).unwrap_or_default();
        if !path.starts_with(&mountpoint) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|(m, _, _)| mountpoint.as_os_str().len() >= m.as_os_str().len());
        if longer {
            best = Some((mountpoint, fstype.to_owned(), options.to_owned()));
        }
    }
    best
}

/// The contents of the regular file at `path` inside the image tree `root`
/// (at namespace path `root_path`), resolved as inside a chroot: symlinks
/// are followed (at most [`MAX_SYMLINK_HOPS`]), an absolute target and `..`
/// never leave the tree. `None` when there is no such regular file.
pub fn read_image_file<L: CatalogLoader>(
    ns: &Namespace<L>,
    root: &Node,
    root_path: &str,
    path: &str,
    objects: &dyn ObjectSource,
) -> Result<Option<Vec<u8>>, BundleError> {
    let shown = format!("{}{path}", root_path.trim_end_matches('/'));
    let split = |p: &[u8]| -> std::collections::VecDeque<Vec<u8>> {
        p.split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect()
    };
    let mut stack = vec![root.clone()];
    let mut pending = split(path.as_bytes());
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Some(dir) = stack.last() else {
            return Ok(None);
        };
        if !dir.entry.is_dir() {
            return Ok(None);
        }
        let Some(node) = ns.lookup(dir, &comp).map_err(repo_err(&shown))? else {
            return Ok(None);
        };
        if let Some(target) = &node.entry.symlink {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Ok(None);
            }
            if target.first() == Some(&b'/') {
                stack.truncate(1);
            }
            let mut next = split(target);
            next.extend(pending);
            pending = next;
            continue;
        }
        stack.push(node);
    }
    let Some(node) = stack.pop().filter(|_| !stack.is_empty()) else {
        return Ok(None);
    };
    let e = &node.entry;
    if e.file_type() != Some(FileType::Regular) {
        return Ok(None);
    }
    if e.size > MAX_ACCOUNT_FILE {
        return Err(BundleError::Config(format!(
            "{shown} is {} bytes, over the {MAX_ACCOUNT_FILE} read for user names",
            e.size
        )));
    }
    let content = |id, size| objects.content(id, size).map_err(repo_err(&shown));
    let bytes = match &e.data {
        Data::None => Vec::new(),
        Data::Inline(b) => b.clone(),
        Data::Object(id) => content(id, e.size)?,
        Data::Chunks(chunks) => {
            let mut out = Vec::new();
            for c in chunks {
                out.extend(content(&c.id, c.size)?);
            }
            out
        }
    };
    if bytes.len() as u64 != e.size {
        return Err(BundleError::Repository {
            path: shown.clone(),
            source: Box::new(stratum_catalog::Error::InvalidCatalog {
                catalog: node.catalog.id().to_hex(),
                reason: format!(
                    "{shown}: {} bytes of content for a size of {}",
                    bytes.len(),
                    e.size
                ),
            }),
        });
    }
    Ok(Some(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_holding_a_path_is_the_longest_and_latest() {
        let info = "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n\
            40 22 0:40 / /mnt/my\\040repo rw,nosuid - fuse.stratum stratum ro,user_id=0,group_id=0,default_permissions\n\
            41 22 0:41 / /mnt/other rw - fuse stratum rw,allow_other\n";
        let m = |p: &str| mount_holding(info, Path::new(p)).unwrap();
        let (mp, fstype, opts) = m("/mnt/my repo/flat/ab/cd");
        assert_eq!(mp, Path::new("/mnt/my repo"));
        assert_eq!(fstype, "fuse.stratum");
        assert!(!opts.contains("allow_other"));
        assert_eq!(m("/mnt/other/x").2, "rw,allow_other");
        assert_eq!(m("/mnt/my").1, "ext4");
        assert_eq!(m("/srv").0, Path::new("/"));
    }
}
