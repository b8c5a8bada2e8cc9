//! [`Limits`]: bounds on what one layer may make the publisher do, so that a
//! hostile image (a tar bomb, a gzip or zstd bomb, millions of tiny
//! entries, absurd names) fails early with an error naming the image, the
//! layer and the entry, instead of filling the disk, the memory or the day.
//!
//! The defaults are far above what real images need (docs/SECURITY.md);
//! `stratum publish` and `stratum sync` change them with `--max-layers`,
//! `--max-entries`, `--max-path-length`, `--max-file-size` and
//! `--max-ratio`.

/// Limits enforced while a layer is ingested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Most layers one image may list (Docker's own limit is 127): each
    /// distinct layer is ingested once, but the flat tree is merged layer
    /// by layer under the repository lock.
    pub max_layers: usize,
    /// Most tar entries one layer may hold (every header that names a
    /// member: files, directories, links, whiteouts, PAX global headers).
    pub max_entries: u64,
    /// Longest path (and symlink or hardlink target), in bytes, as the tar
    /// spells it (after PAX `path` / GNU long names).
    pub max_path_length: usize,
    /// Longest path component, in bytes. The format's own bound (255,
    /// docs/FORMAT.md §6.1) applies whatever this says.
    pub max_name_length: usize,
    /// Largest size a tar entry may declare (a regular file's content; any
    /// other entry's data is skipped but must fit too).
    pub max_file_size: u64,
    /// Most uncompressed bytes per compressed byte of the layer blob, both
    /// for the decompressed tar stream and for the file contents it expands
    /// to (GNU sparse holes); `0` turns the check off.
    pub max_ratio: u64,
    /// The ratio is enforced only once this many bytes were produced, so
    /// that small, very compressible layers (an empty tar is 10 KiB of
    /// zeros) pass.
    pub ratio_floor: u64,
    /// Most bytes the tar headers of one entry may take (its header blocks
    /// with PAX records, GNU long names and sparse maps), which the tar
    /// reader holds in memory.
    pub max_header_size: u64,
}

/// The format's bound on a path component (docs/FORMAT.md §6.1).
pub const NAME_MAX: usize = 255;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layers: 127,
            max_entries: 1_000_000,
            max_path_length: 4096,
            max_name_length: NAME_MAX,
            max_file_size: 64 << 30,
            max_ratio: 1000,
            ratio_floor: 16 << 20,
            max_header_size: 1 << 20,
        }
    }
}

impl Limits {
    /// Whether `uncompressed` bytes from `compressed` bytes exceed the
    /// ratio (past the floor).
    pub fn ratio_exceeded(&self, uncompressed: u64, compressed: u64) -> bool {
        self.max_ratio > 0
            && uncompressed > self.ratio_floor
            && uncompressed > self.max_ratio.saturating_mul(compressed.max(1))
    }

    /// Why the path `raw` (a member name or a link target) is over the
    /// path-length or name-length limit, if it is.
    pub fn check_path(&self, raw: &[u8]) -> Result<(), String> {
        if raw.len() > self.max_path_length {
            return Err(format!(
                "the path is {} bytes long, more than the limit of {} (--max-path-length)",
                raw.len(),
                self.max_path_length
            ));
        }
        let max_name = self.max_name_length.min(NAME_MAX);
        if let Some(long) = raw.split(|&b| b == b'/').find(|c| c.len() > max_name) {
            return Err(format!(
                "a path component is {} bytes long, more than the limit of {max_name}",
                long.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_needs_the_floor_and_can_be_off() {
        let l = Limits::default();
        assert!(!l.ratio_exceeded(1 << 20, 1));
        assert!(l.ratio_exceeded((16 << 20) + 1, 1));
        assert!(!l.ratio_exceeded(100 << 20, 1 << 20));
        assert!(l.ratio_exceeded(2000 << 20, 1 << 20));
        let off = Limits { max_ratio: 0, ..l };
        assert!(!off.ratio_exceeded(u64::MAX, 0));
    }

    #[test]
    fn paths() {
        let l = Limits {
            max_path_length: 10,
            max_name_length: 3,
            ..Limits::default()
        };
        assert!(l.check_path(b"abc/def").is_ok());
        assert!(l.check_path(b"abcd").is_err());
        assert!(l.check_path(b"a/b/c/d/e/f").is_err());
        let wide = Limits {
            max_name_length: 1000,
            ..Limits::default()
        };
        assert!(wide.check_path(&[b'x'; 256]).is_err());
    }
}
