//! A regular file being filled: the walk creates it and computes what to
//! fetch ([`FileJob::plan`]); workers write each verified object at its
//! offset through the file's descriptor ([`FileJob::write_piece`]); the
//! last one applies the metadata ([`FileJob::finish`]), in the order the
//! module header of `pull` gives (content → owner → xattrs → mode → times).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{self as rfs, Mode};
use stratum_catalog::catalog::{Data, Entry};
use stratum_catalog::ObjectId;

use super::create::apply_xattrs;
use super::safety::*;
use super::{Loc, PullOptions};
use crate::{ObjectSource, PullError};

/// One content object of a file: the whole file, or one of its chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub id: ObjectId,
    pub size: u64,
    /// Where its bytes go in the file.
    pub offset: u64,
    /// Its position in the chunk list, `None` for a whole-file object.
    pub chunk: Option<usize>,
}

impl Piece {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How errors name it.
    fn what(&self) -> String {
        match self.chunk {
            None => format!("content object {}", self.id),
            Some(i) => format!("chunk {i} (object {})", self.id),
        }
    }
}

/// What a file's catalog entry says to write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan<'e> {
    /// Nothing (an empty file).
    Empty,
    /// These bytes, from the catalog itself.
    Inline(&'e [u8]),
    /// These objects, each at its offset.
    Objects(Vec<Piece>),
}

/// A created regular file and what remains to be written into it.
pub(crate) struct FileJob {
    file: File,
    pub ns_path: String,
    pub dest_path: PathBuf,
    entry: Entry,
    /// The permission bits to set (`Puller::final_mode`).
    mode: u32,
    /// Its position in the walk (orders the skipped lines).
    pub seq: u64,
    remaining: AtomicUsize,
}

impl FileJob {
    /// Checks a file's content description against its size and lays out
    /// its objects. Refuses sizes that do not add up (before any fetch).
    pub fn plan<'e>(e: &'e Entry, loc: Loc<'_>) -> Result<Plan<'e>, PullError> {
        let size_err = |what: String, expected: u64, actual: u64| PullError::Size {
            path: loc.path.to_owned(),
            dest: loc.dest.to_owned(),
            what,
            expected,
            actual,
        };
        match &e.data {
            Data::None if e.size == 0 => Ok(Plan::Empty),
            Data::None => Err(size_err("the content (none is recorded)".into(), e.size, 0)),
            Data::Inline(b) => {
                if b.len() as u64 != e.size {
                    return Err(size_err(
                        "the inline content".into(),
                        e.size,
                        b.len() as u64,
                    ));
                }
                Ok(if b.is_empty() {
                    Plan::Empty
                } else {
                    Plan::Inline(b)
                })
            }
            Data::Object(id) => Ok(Plan::Objects(vec![Piece {
                id: *id,
                size: e.size,
                offset: 0,
                chunk: None,
            }])),
            Data::Chunks(chunks) => {
                let mut pieces = Vec::with_capacity(chunks.len());
                let mut offset: u64 = 0;
                for (i, c) in chunks.iter().enumerate() {
                    pieces.push(Piece {
                        id: c.id,
                        size: c.size,
                        offset,
                        chunk: Some(i),
                    });
                    offset = offset
                        .checked_add(c.size)
                        .ok_or_else(|| invalid(loc, "chunk sizes overflow"))?;
                }
                if offset != e.size {
                    return Err(size_err(
                        format!("the sum of its {} chunk sizes", chunks.len()),
                        e.size,
                        offset,
                    ));
                }
                Ok(if pieces.is_empty() {
                    Plan::Empty
                } else {
                    Plan::Objects(pieces)
                })
            }
        }
    }

    pub fn new(file: File, e: &Entry, mode: u32, seq: u64, pieces: usize, loc: Loc<'_>) -> Self {
        FileJob {
            file,
            ns_path: loc.path.to_owned(),
            dest_path: loc.dest.to_owned(),
            entry: e.clone(),
            mode,
            seq,
            remaining: AtomicUsize::new(pieces),
        }
    }

    fn loc(&self) -> Loc<'_> {
        Loc {
            path: &self.ns_path,
            dest: &self.dest_path,
        }
    }

    /// An error about this file.
    pub fn invalid(&self, reason: &str) -> PullError {
        invalid(self.loc(), reason)
    }

    /// Fetches `piece` (verified by the source) and writes it at its
    /// offset; returns the bytes written.
    pub fn write_piece(&self, objects: &dyn ObjectSource, piece: &Piece) -> Result<u64, PullError> {
        self.write_fetched(piece, objects.content(&piece.id, piece.size))
    }

    /// Writes what the source returned for `piece` (its verified bytes, or
    /// why not) at its offset; returns the bytes written.
    pub fn write_fetched(
        &self,
        piece: &Piece,
        fetched: Result<Vec<u8>, stratum_catalog::Error>,
    ) -> Result<u64, PullError> {
        let loc = self.loc();
        let bytes = fetched.map_err(|source| match source {
            stratum_catalog::Error::SizeMismatch {
                declared, expected, ..
            } => PullError::Size {
                path: loc.path.to_owned(),
                dest: loc.dest.to_owned(),
                what: piece.what(),
                expected,
                actual: declared,
            },
            source => PullError::Content {
                path: loc.path.to_owned(),
                dest: loc.dest.to_owned(),
                id: piece.id,
                source: Box::new(source),
            },
        })?;
        if bytes.len() as u64 != piece.size {
            return Err(PullError::Size {
                path: loc.path.to_owned(),
                dest: loc.dest.to_owned(),
                what: piece.what(),
                expected: piece.size,
                actual: bytes.len() as u64,
            });
        }
        self.write_at(&bytes, piece.offset)?;
        Ok(bytes.len() as u64)
    }

    /// Writes verified bytes at `offset` through the file's descriptor.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), PullError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|source| PullError::Io {
                path: self.ns_path.clone(),
                dest: self.dest_path.clone(),
                op: "writing".into(),
                source,
            })
    }

    /// One piece written; true for the last one.
    pub fn piece_done(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The file's metadata, once all of its content is written: owner,
    /// xattrs, mode, times, all through its descriptor.
    pub fn finish(
        &self,
        opts: &PullOptions,
        root_user: bool,
        skip: &mut dyn FnMut(String),
    ) -> Result<(), PullError> {
        let loc = self.loc();
        let e = &self.entry;
        if opts.preserve_owner {
            let (u, g) = owner(e);
            rfs::fchown(&self.file, u, g).map_err(|err| io_err(loc, "fchown", err))?;
        }
        apply_xattrs(XattrTarget::Fd(self.file.as_fd()), e, root_user, loc, skip)?;
        rfs::fchmod(&self.file, Mode::from_raw_mode(self.mode))
            .map_err(|err| io_err(loc, "fchmod", err))?;
        rfs::futimens(&self.file, &times(e)).map_err(|err| io_err(loc, "futimens", err))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;
    use stratum_catalog::catalog::{Chunk, FileType};

    fn loc() -> Loc<'static> {
        Loc {
            path: "/f",
            dest: Path::new("/d/f"),
        }
    }

    fn file(size: u64, data: Data) -> Entry {
        let mut e = Entry::new(FileType::Regular, 0o644);
        e.size = size;
        e.data = data;
        e
    }

    #[test]
    fn chunks_are_laid_out_at_their_offsets() {
        let (a, b) = (ObjectId::of(b"a"), ObjectId::of(b"b"));
        let e = file(
            5,
            Data::Chunks(vec![Chunk { id: a, size: 2 }, Chunk { id: b, size: 3 }]),
        );
        let Plan::Objects(p) = FileJob::plan(&e, loc()).unwrap() else {
            panic!("not objects");
        };
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].offset, p[0].size, p[0].chunk), (0, 2, Some(0)));
        assert_eq!((p[1].offset, p[1].size, p[1].chunk), (2, 3, Some(1)));
    }

    #[test]
    fn sizes_that_do_not_add_up_are_refused_before_any_fetch() {
        let a = ObjectId::of(b"a");
        let short = file(6, Data::Chunks(vec![Chunk { id: a, size: 5 }]));
        assert!(matches!(
            FileJob::plan(&short, loc()),
            Err(PullError::Size {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        let overflow = file(
            1,
            Data::Chunks(vec![
                Chunk {
                    id: a,
                    size: u64::MAX,
                },
                Chunk { id: a, size: 2 },
            ]),
        );
        assert!(matches!(
            FileJob::plan(&overflow, loc()),
            Err(PullError::Invalid { .. })
        ));
        let inline = file(3, Data::Inline(b"ab".to_vec()));
        assert!(FileJob::plan(&inline, loc()).is_err());
        assert!(FileJob::plan(&file(1, Data::None), loc()).is_err());
        assert_eq!(
            FileJob::plan(&file(0, Data::None), loc()).unwrap(),
            Plan::Empty
        );
    }
}
