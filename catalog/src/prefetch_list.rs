//! Prefetch lists (FORMAT.md §5.6): the files a real run of an image opened,
//! in first-open order, stored as one content object that the image's record
//! names, so that a mount fetches them ahead of the reads.
//!
//! The object's bytes are the paths, relative to the image root, each
//! followed by `\n`. This module owns that text form: parsing it (from a
//! file a person or `stratum mount --record` wrote, or from the stored
//! object), its limits, and writing it back canonically.

/// At most this many paths in one list: a publish refuses a longer list,
/// and a reader keeps only the first ones of a stored list.
pub const MAX_PREFETCH_ENTRIES: usize = 100_000;

/// The longest path (bytes) in a list, as Linux's `PATH_MAX`.
pub const MAX_PREFETCH_PATH: usize = 4096;

/// The largest list object (bytes): a publish refuses a larger file without
/// reading past this, and a reader refuses a record stating more.
pub const MAX_PREFETCH_LIST_SIZE: u64 = 16 << 20;

/// A list, parsed: valid paths in order (duplicates removed), and the lines
/// that were not paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefetchList {
    pub paths: Vec<String>,
    /// `(line number from 1, why)` of each line that was skipped.
    pub skipped: Vec<(usize, String)>,
}

/// Why a list as a whole is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefetchListError {
    #[error("the prefetch list is over {MAX_PREFETCH_LIST_SIZE} bytes")]
    TooLarge,
    #[error("the prefetch list has more than {MAX_PREFETCH_ENTRIES} paths")]
    TooManyEntries,
}

impl PrefetchList {
    /// Parses the text form: one path per line, relative to the image root
    /// (a leading `/` is accepted and dropped), blank lines ignored. A line
    /// that is not a valid path (not UTF-8, a `.` or `..` or empty
    /// component, a NUL, over [`MAX_PREFETCH_PATH`]) is skipped and
    /// reported; a path listed again is dropped silently. More than
    /// [`MAX_PREFETCH_ENTRIES`] distinct paths, or more than
    /// [`MAX_PREFETCH_LIST_SIZE`] bytes, is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, PrefetchListError> {
        if bytes.len() as u64 > MAX_PREFETCH_LIST_SIZE {
            return Err(PrefetchListError::TooLarge);
        }
        let mut out = PrefetchList::default();
        let mut seen = std::collections::HashSet::new();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match normalize(line) {
                Ok(p) => {
                    if seen.contains(p.as_str()) {
                        continue;
                    }
                    if out.paths.len() == MAX_PREFETCH_ENTRIES {
                        return Err(PrefetchListError::TooManyEntries);
                    }
                    seen.insert(p.clone());
                    out.paths.push(p);
                }
                Err(why) => out.skipped.push((i + 1, why)),
            }
        }
        Ok(out)
    }

    /// The canonical bytes of `paths` (each followed by `\n`): what a
    /// publish stores.
    pub fn encode(paths: &[String]) -> Vec<u8> {
        let mut v = Vec::with_capacity(paths.iter().map(|p| p.len() + 1).sum());
        for p in paths {
            v.extend_from_slice(p.as_bytes());
            v.push(b'\n');
        }
        v
    }
}

/// One line as a relative path with `/` separators, or why it is not one.
pub fn normalize(line: &[u8]) -> Result<String, String> {
    if line.len() > MAX_PREFETCH_PATH {
        return Err(format!("longer than {MAX_PREFETCH_PATH} bytes"));
    }
    let s = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let s = s.strip_prefix('/').unwrap_or(s);
    if s.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if s.is_empty() {
        return Err("names the image root, not a file".into());
    }
    for c in s.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!("{s:?} has an empty, `.` or `..` component"));
        }
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_order_drops_duplicates_and_reports_bad_lines() {
        let l =
            PrefetchList::parse(b"usr/bin/python3\n/etc/passwd\n\nusr/bin/python3\na/../b\n\xff\n")
                .unwrap();
        assert_eq!(l.paths, vec!["usr/bin/python3", "etc/passwd"]);
        assert_eq!(l.skipped.len(), 2);
        assert_eq!(l.skipped[0].0, 5);
        assert_eq!(l.skipped[1].0, 6);
        assert_eq!(
            PrefetchList::parse(&PrefetchList::encode(&l.paths))
                .unwrap()
                .paths,
            l.paths
        );
    }

    #[test]
    fn a_million_entries_are_refused_without_reading_them_all() {
        let mut big = Vec::new();
        for i in 0..1_000_000 {
            big.extend_from_slice(format!("f{i}\n").as_bytes());
        }
        assert_eq!(
            PrefetchList::parse(&big),
            Err(PrefetchListError::TooManyEntries)
        );
        let huge = vec![b'a'; (MAX_PREFETCH_LIST_SIZE + 1) as usize];
        assert_eq!(PrefetchList::parse(&huge), Err(PrefetchListError::TooLarge));
    }

    #[test]
    fn long_paths_and_roots_are_skipped() {
        let long = "a/".repeat(MAX_PREFETCH_PATH);
        let l = PrefetchList::parse(format!("{long}\n/\n./x\nok\n").as_bytes()).unwrap();
        assert_eq!(l.paths, vec!["ok"]);
        assert_eq!(l.skipped.len(), 3);
    }
}
