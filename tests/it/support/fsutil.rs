//! Small file-system helpers for building test trees: paths from raw bytes,
//! xattrs, devices, fifos, owners and nanosecond mtimes (all without following
//! symlinks), and a seeded pseudo-random generator.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

/// `root/rel` where `rel` is raw bytes (non-UTF-8 names allowed).
pub fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn ctx<T>(r: std::io::Result<T>, what: &str, path: &Path) -> T {
    r.unwrap_or_else(|e| panic!("{what} {}: {e}", path.display()))
}

/// Creates the parent directories of `path`.
pub fn parents(path: &Path) {
    if let Some(parent) = path.parent() {
        ctx(std::fs::create_dir_all(parent), "mkdir -p", parent);
    }
}

/// Writes a regular file (creating parents) with the given mode.
pub fn file(root: &Path, rel: &[u8], content: &[u8], mode: u32) -> PathBuf {
    let path = p(root, rel);
    parents(&path);
    ctx(std::fs::write(&path, content), "write", &path);
    chmod(&path, mode);
    path
}

/// Creates a directory (and parents) and sets its mode.
pub fn dir(root: &Path, rel: &[u8], mode: u32) -> PathBuf {
    let path = p(root, rel);
    ctx(std::fs::create_dir_all(&path), "mkdir -p", &path);
    chmod(&path, mode);
    path
}

/// `ln -s target root/rel` (target is raw bytes).
pub fn symlink(root: &Path, rel: &[u8], target: &[u8]) -> PathBuf {
    let path = p(root, rel);
    parents(&path);
    ctx(
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path),
        "symlink",
        &path,
    );
    path
}

/// `ln root/existing root/rel`.
pub fn hardlink(root: &Path, existing: &[u8], rel: &[u8]) -> PathBuf {
    let path = p(root, rel);
    parents(&path);
    ctx(std::fs::hard_link(p(root, existing), &path), "link", &path);
    path
}

/// chmod (all 12 bits, so setuid/setgid/sticky survive).
pub fn chmod(path: &Path, mode: u32) {
    ctx(
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
        "chmod",
        path,
    );
}

/// lchown. Note chown clears setuid/setgid on regular files: chmod afterwards.
pub fn lchown(path: &Path, uid: u32, gid: u32) {
    ctx(
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
        "lchown",
        path,
    );
}

/// lsetxattr.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    ctx(
        rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).map_err(Into::into),
        &format!("setxattr {name}"),
        path,
    );
}

/// lremovexattr.
pub fn remove_xattr(path: &Path, name: &str) {
    ctx(
        rustix::fs::lremovexattr(path, name).map_err(Into::into),
        &format!("removexattr {name}"),
        path,
    );
}

/// All xattrs of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr(path, &mut [0u8; 0][..])?;
                list.resize(need.max(list.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = OsStr::from_bytes(name);
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut val[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr(path, cname, &mut [0u8; 0][..])?;
                    val.resize(need.max(val.len() * 2), 0);
                }
                Err(e) => return Err(e.into()),
            }
        };
        val.truncate(len);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Ok(out)
}

/// mknod a character device.
pub fn char_dev(root: &Path, rel: &[u8], major: u32, minor: u32, mode: u32) -> PathBuf {
    mknod(root, rel, FileType::CharacterDevice, major, minor, mode)
}

/// mknod a block device.
pub fn block_dev(root: &Path, rel: &[u8], major: u32, minor: u32, mode: u32) -> PathBuf {
    mknod(root, rel, FileType::BlockDevice, major, minor, mode)
}

/// mkfifo.
pub fn fifo(root: &Path, rel: &[u8], mode: u32) -> PathBuf {
    mknod(root, rel, FileType::Fifo, 0, 0, mode)
}

fn mknod(root: &Path, rel: &[u8], ft: FileType, major: u32, minor: u32, mode: u32) -> PathBuf {
    let path = p(root, rel);
    parents(&path);
    ctx(
        rustix::fs::mknodat(
            CWD,
            &path,
            ft,
            Mode::from_raw_mode(mode),
            rustix::fs::makedev(major, minor),
        )
        .map_err(Into::into),
        "mknod",
        &path,
    );
    // mknod applies the umask; set the exact mode.
    chmod(&path, mode);
    path
}

/// Sets atime and mtime (seconds + nanoseconds) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nsecs: u32) {
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: nsecs.into(),
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    ctx(
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into),
        "utimensat",
        path,
    );
}

/// Removes a file, symlink, or a whole directory tree.
pub fn remove(root: &Path, rel: &[u8]) {
    let path = p(root, rel);
    let md = ctx(std::fs::symlink_metadata(&path), "lstat", &path);
    if md.is_dir() {
        ctx(std::fs::remove_dir_all(&path), "rm -rf", &path);
    } else {
        ctx(std::fs::remove_file(&path), "rm", &path);
    }
}

/// Gives every entry below `root` (and `root` itself) a distinct, fixed mtime
/// with a nanosecond part, children before parents so that directory mtimes
/// stick. `base` separates one call's times from another's.
pub fn stamp_mtimes(root: &Path, base: i64) {
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("walk").into_path())
        .collect();
    // contents_first already orders children before their directory.
    for (i, path) in entries.drain(..).enumerate() {
        let i = i as i64;
        set_mtime(
            &path,
            base + i * 37,
            ((i * 7_919_113) % 1_000_000_000) as u32,
        );
    }
}

/// Seeded pseudo-random generator (SplitMix64): reproducible content without
/// a `rand` dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}
