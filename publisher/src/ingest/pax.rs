//! What one tar entry says about itself: its ustar header with its PAX
//! extended records applied, the way POSIX pax and Go's `archive/tar`
//! (which containerd, Docker and umoci use) apply them, so that a layer
//! gives the tree every container runtime shows (docs/FORMAT.md §6.3).
//!
//! - **An empty value deletes the key**: the entry is read as if the record
//!   were absent, so the ustar field (or GNU long name) applies; an empty
//!   `SCHILY.xattr.NAME` means no xattr `NAME`, not an empty one. This holds
//!   for every key: `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`,
//!   xattrs (and `uname`, `gname`, `atime`, `ctime`, which stratum does not
//!   keep).
//! - **A key given twice in one entry's records**: the last one wins (as in
//!   Go), for the keys read here. The tar reader itself applies `path`,
//!   `linkpath`, `size`, `uid` and `gid` and takes the *first* record; two
//!   different values for one of those would make stratum and Go see
//!   different entries (for `size`, a different layout of the rest of the
//!   stream), so such an entry is refused.
//! - **A global header (`g`)** applies to no entry: Go's reader returns it
//!   as an entry of its own and containerd, Docker and umoci skip it, so
//!   honouring it (as POSIX would) would make the tree differ from theirs.
//!   The caller skips it; the tar reader never merges it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use stratum_catalog::catalog::{Entry, FileType};

/// Keys the tar reader applies by itself, taking the first record.
const READER_KEYS: [&[u8]; 5] = [b"path", b"linkpath", b"size", b"uid", b"gid"];

/// The effective PAX records of one entry: one value per key (the last
/// given), keys with an empty value removed.
#[derive(Debug, Default)]
pub(super) struct Pax {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Pax {
    /// Reads the entry's local PAX records.
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<R>) -> Result<Pax, String> {
        let mut records: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| format!("bad PAX header: {e}"))?
        else {
            return Ok(Pax::default());
        };
        for ext in exts {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            let (key, value) = (ext.key_bytes(), ext.value_bytes());
            if let Some(old) = records.get(key) {
                if READER_KEYS.contains(&key) && old.as_slice() != value {
                    return Err(format!(
                        "the PAX records set {:?} twice, to different values (tar readers \
                         disagree about which one applies)",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
            records.insert(key.to_vec(), value.to_vec());
        }
        records.retain(|_, v| !v.is_empty());
        Ok(Pax { records })
    }
}

/// The entry's path: its GNU long name, else its PAX `path`, else the
/// ustar name (Go's order; an empty long name or record counts as absent).
/// The tar reader gives the first two itself, but returns an empty GNU long
/// name, or an empty PAX `path`, as the path; `pax` (the entry's effective
/// records, when they could be read) supplies what applies instead.
pub(super) fn path_bytes<'e, R: Read>(
    entry: &'e tar::Entry<R>,
    pax: Option<&'e Pax>,
) -> Cow<'e, [u8]> {
    match entry.path_bytes() {
        p if p.is_empty() => match pax.and_then(|x| x.records.get(b"path".as_slice())) {
            Some(v) => Cow::Borrowed(v.as_slice()),
            None => entry.header().path_bytes(),
        },
        p => p,
    }
}

/// The entry's link target, read like its path (GNU long link name, PAX
/// `linkpath`, ustar link name).
pub(super) fn link_name_bytes<'e, R: Read>(
    entry: &'e tar::Entry<R>,
    pax: Option<&'e Pax>,
) -> Option<Cow<'e, [u8]>> {
    match entry.link_name_bytes() {
        Some(l) if l.is_empty() => match pax.and_then(|x| x.records.get(b"linkpath".as_slice())) {
            Some(v) => Some(Cow::Borrowed(v.as_slice())),
            None => entry.header().link_name_bytes(),
        },
        other => other,
    }
}

/// Metadata of a tar entry, effective PAX records applied (uid, gid, mtime
/// with nanoseconds, SCHILY.xattr.*).
pub(super) fn metadata<R: Read>(entry: &tar::Entry<R>, pax: &Pax) -> Result<Entry, String> {
    let h = entry.header();
    let ft = match h.entry_type() {
        tar::EntryType::Directory => FileType::Directory,
        tar::EntryType::Symlink => FileType::Symlink,
        tar::EntryType::Char => FileType::CharDevice,
        tar::EntryType::Block => FileType::BlockDevice,
        tar::EntryType::Fifo => FileType::Fifo,
        _ => FileType::Regular,
    };
    let mode = h.mode().map_err(|e| format!("bad mode: {e}"))?;
    let mut e = Entry::new(ft, mode);
    e.uid = u32::try_from(h.uid().map_err(|e| format!("bad uid: {e}"))?)
        .map_err(|_| "uid out of range")?;
    e.gid = u32::try_from(h.gid().map_err(|e| format!("bad gid: {e}"))?)
        .map_err(|_| "gid out of range")?;
    e.mtime = i64::try_from(h.mtime().map_err(|e| format!("bad mtime: {e}"))?).unwrap_or(i64::MAX);
    if matches!(ft, FileType::CharDevice | FileType::BlockDevice) {
        let major = h
            .device_major()
            .map_err(|e| format!("bad device major: {e}"))?
            .unwrap_or(0);
        let minor = h
            .device_minor()
            .map_err(|e| format!("bad device minor: {e}"))?
            .unwrap_or(0);
        e.rdev = Entry::make_rdev(major, minor);
    }
    if ft == FileType::Regular {
        e.size = entry.size();
    }
    for (key, value) in &pax.records {
        let num = |what: &str| -> Result<u64, String> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad PAX {what} {:?}", String::from_utf8_lossy(value)))
        };
        match key.as_slice() {
            b"uid" => e.uid = u32::try_from(num("uid")?).map_err(|_| "PAX uid out of range")?,
            b"gid" => e.gid = u32::try_from(num("gid")?).map_err(|_| "PAX gid out of range")?,
            b"mtime" => (e.mtime, e.mtime_ns) = pax_time(value)?,
            // The tar reader uses a valid PAX size and silently ignores
            // an invalid one; two readers must not see two layouts.
            b"size" => {
                num("size")?;
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // Overlay markers come only from whiteouts: a tar
                    // that carries its own (opaque, redirect, metacopy)
                    // would steer overlay mounts of the layer trees.
                    if crate::tree::is_overlay_xattr(name) {
                        continue;
                    }
                    if name.is_empty() || name.len() > 255 || value.len() > 65536 {
                        return Err("xattr name or value out of range".into());
                    }
                    e.xattrs.push((name.to_vec(), value.clone()));
                }
            }
        }
    }
    e.xattrs.sort();
    Ok(e)
}

/// A PAX time: decimal seconds, optionally negative, optional fraction.
pub(super) fn pax_time(v: &[u8]) -> Result<(i64, u32), String> {
    let s = std::str::from_utf8(v).map_err(|_| "PAX mtime is not UTF-8")?;
    let bad = || format!("bad PAX mtime {s:?}");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = int.starts_with('-');
    let secs: i64 = if int == "-" {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    if frac.is_empty() {
        return Ok((secs, 0));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: u32 = digits.parse().map_err(|_| bad())?;
    if negative && ns > 0 {
        // -1.5 means 1.5 s before the epoch: floor the seconds.
        let floored = secs.checked_sub(1).ok_or_else(bad)?;
        return Ok((floored, 1_000_000_000 - ns));
    }
    Ok((secs, ns))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "pax_tests.rs"]
mod tests;
