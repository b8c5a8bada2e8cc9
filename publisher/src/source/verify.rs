//! Verified reads: a [`HashingReader`] that counts and hashes a blob as it
//! streams, and capped, digest-checked reads of small documents (manifests,
//! indexes, configs) into memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::digest::{Digest, Sha256};
use super::error::SourceError;
use super::MAX_DOCUMENT_SIZE;

/// Counts, and optionally sha256-hashes, every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; hashes only when `hash` is true (counting is free).
    pub(crate) fn new(inner: R, hash: bool) -> Self {
        HashingReader {
            inner,
            hasher: hash.then(Sha256::new),
            count: 0,
        }
    }

    /// Reads and accounts for everything left in `inner`.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything read (when hashing), without consuming self.
    pub(crate) fn digest(&self) -> Option<Digest> {
        self.hasher.clone().map(Sha256::finish)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or(&[]);
        if let Some(h) = &mut self.hasher {
            h.update(read);
        }
        self.count += read.len() as u64;
        Ok(read.len())
    }
}

/// Reads at most `limit` bytes of `reader`; more is a [`SourceError::TooLarge`].
pub(crate) fn read_capped(
    image: &str,
    what: &str,
    reader: impl Read,
    limit: u64,
) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| SourceError::malformed(image, what, format!("read failed: {e}")))?;
    let len = out.len() as u64;
    if len > limit {
        return Err(SourceError::TooLarge {
            image: image.to_owned(),
            what: what.to_owned(),
            size: len,
            limit,
        });
    }
    Ok(out)
}

/// Reads a blob whose descriptor gives `digest` and `size`: refuses a size
/// above [`MAX_DOCUMENT_SIZE`] before reading, reads at most one byte more
/// than `size`, and checks size then digest.
pub(crate) fn read_verified(
    image: &str,
    what: &str,
    reader: impl Read,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>, SourceError> {
    if size > MAX_DOCUMENT_SIZE {
        return Err(SourceError::TooLarge {
            image: image.to_owned(),
            what: what.to_owned(),
            size,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    let bytes = read_capped(image, what, reader, size).map_err(|e| match e {
        SourceError::TooLarge { size: actual, .. } => SourceError::SizeMismatch {
            image: image.to_owned(),
            what: what.to_owned(),
            expected: size,
            actual,
        },
        other => other,
    })?;
    let actual_size = bytes.len() as u64;
    if actual_size != size {
        return Err(SourceError::SizeMismatch {
            image: image.to_owned(),
            what: what.to_owned(),
            expected: size,
            actual: actual_size,
        });
    }
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(SourceError::DigestMismatch {
            image: image.to_owned(),
            what: what.to_owned(),
            expected: *digest,
            actual,
        });
    }
    Ok(bytes)
}

/// Opens `path` for reading and checks that it is a regular file. A blob,
/// `index.json`, `oci-layout` or docker archive that is a FIFO would block
/// `open` itself until some writer appears (and a device would never end),
/// all while the repository lock is held: the file is opened with
/// `O_NONBLOCK` (which makes opening a FIFO return at once), its type is
/// checked on the open descriptor (no window for a swap), and only a
/// regular file is handed on, back in blocking mode.
pub(crate) fn open_regular(image: &str, path: &Path) -> Result<File, SourceError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| SourceError::io(image, path, e))?;
    let kind = file
        .metadata()
        .map_err(|e| SourceError::io(image, path, e))?
        .file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(SourceError::malformed(
            image,
            path.display().to_string(),
            format!("{what}, not a regular file (refused before reading)"),
        ));
    }
    // Regular files ignore O_NONBLOCK today; clear it anyway so that what
    // reads this file later never sees EAGAIN.
    let flags =
        rustix::fs::fcntl_getfl(&file).map_err(|e| SourceError::io(image, path, e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| SourceError::io(image, path, e.into()))?;
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashing_reader_counts_and_hashes() {
        let data = vec![7u8; 300_000];
        let mut r = HashingReader::new(&data[..], true);
        let mut first = [0u8; 1000];
        r.read_exact(&mut first).unwrap();
        r.drain().unwrap();
        assert_eq!(r.count(), 300_000);
        assert_eq!(r.digest(), Some(Digest::of(&data)));
        let mut r = HashingReader::new(&data[..], false);
        r.drain().unwrap();
        assert_eq!((r.count(), r.digest()), (300_000, None));
    }

    #[test]
    fn verified_reads() {
        let doc = b"{\"a\":1}";
        let d = Digest::of(doc);
        assert_eq!(read_verified("i", "doc", &doc[..], &d, 7).unwrap(), doc);
        let e = read_verified("i", "doc", &doc[..], &d, 6).unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::SizeMismatch {
                    expected: 6,
                    actual: 7,
                    ..
                }
            ),
            "{e}"
        );
        let e = read_verified("i", "doc", &doc[..], &d, 8).unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::SizeMismatch {
                    expected: 8,
                    actual: 7,
                    ..
                }
            ),
            "{e}"
        );
        let e = read_verified("i", "doc", &b"{\"a\":2}"[..], &d, 7).unwrap_err();
        assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
        let e = read_verified("i", "doc", &doc[..], &d, u64::MAX).unwrap_err();
        assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");
        let e = read_capped("i", "doc", &doc[..], 3).unwrap_err();
        assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");
    }
}
