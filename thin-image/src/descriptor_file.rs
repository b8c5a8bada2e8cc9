//! Descriptor files: the text `stratum thin` writes (pretty JSON and a
//! newline, [`ThinImage::to_file_text`], also the blob of the OCI artifact)
//! and the atomic write that puts it at a path ([`write_atomic`]), so that a
//! node reading a descriptor never sees half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{ThinImage, ThinImageError};

impl ThinImage {
    /// The descriptor as written to files and stdout: pretty JSON and a newline.
    pub fn to_file_text(&self) -> Result<String, ThinImageError> {
        let mut text = self.to_json_pretty()?;
        text.push('\n');
        Ok(text)
    }
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} names no file", .0.display())]
    NoFileName(PathBuf),
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// fsynced and renamed over `path`, so that a reader sees the old file or the
/// new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| WriteError::NoFileName(path.to_owned()))?
        .to_string_lossy();
    let mut n = 0u32;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(source) => return Err(WriteError::Create { path: tmp, source }),
        }
    };
    let result = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(WriteError::Write {
            path: path.to_owned(),
            source,
        });
    }
    // Make the rename durable; not every file system lets a directory be fsynced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("thin-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        let e = write_atomic(&dir.join("missing/a.json"), b"x").unwrap_err();
        assert!(e.to_string().starts_with("creating "), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
