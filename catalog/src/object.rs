//! Object encoding: one zstd frame per object with the content size in its
//! header. Every decode checks the frame, the size and the BLAKE3 id.

use crate::{Error, ObjectId, Result};

/// Level used on the publish path: the fastest. Compression of new content
/// is the largest cost of a publish (level 1 ≈ 320 MB/s, level 3 ≈ 195 MB/s
/// per core here, shared/DEPENDENCIES.md), and ids do not depend on the
/// level, so `stratum compact` re-encodes objects densely (level 19) later,
/// off the publish path, without touching any catalog.
pub const DEFAULT_LEVEL: i32 = 1;

/// Level used for the catalogs of trees (flat, layer, subtree): written
/// once, read by every node that walks them, and a small share of what a
/// publish compresses (≈ 0.4 MB of SQLite pages per image against MBs of
/// content), so a denser level costs little: 5.8 % fewer bytes than level
/// 1 at ≈ 38 MB/s per core (DECISIONS D44). The namespace's catalogs, which
/// every revision rewrites and which grow with the repository, stay at
/// [`DEFAULT_LEVEL`]. Decoding speed does not depend on the level.
pub const CATALOG_LEVEL: i32 = 15;

/// The level the publish path encodes an object of `kind` at.
pub fn level_for(kind: crate::ObjectKind) -> i32 {
    match kind {
        crate::ObjectKind::Catalog => CATALOG_LEVEL,
        _ => DEFAULT_LEVEL,
    }
}

/// The largest uncompressed object a reader accepts. Objects are whole small
/// files, chunks (≤ 4 MiB) or catalogs; anything bigger is corrupt or hostile.
pub const MAX_OBJECT_SIZE: u64 = 1 << 30;

/// Compresses `data` into an object. The frame records the content size and
/// carries no checksum of its own (the id is the checksum).
pub fn encode(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut cctx = zstd::bulk::Compressor::new(level).map_err(zstd_err)?;
    cctx.include_contentsize(true).map_err(zstd_err)?;
    cctx.include_checksum(false).map_err(zstd_err)?;
    cctx.compress(data).map_err(zstd_err)
}

fn zstd_err(e: std::io::Error) -> Error {
    Error::io("<zstd>", e)
}

/// A reusable encoder: keeps one zstd context, which matters when millions of
/// small objects are encoded on one thread.
pub struct Encoder {
    cctx: zstd::bulk::Compressor<'static>,
}

impl Encoder {
    pub fn new(level: i32) -> Result<Self> {
        let mut cctx = zstd::bulk::Compressor::new(level).map_err(zstd_err)?;
        cctx.include_contentsize(true).map_err(zstd_err)?;
        cctx.include_checksum(false).map_err(zstd_err)?;
        Ok(Encoder { cctx })
    }

    pub fn encode(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.cctx.compress(data).map_err(zstd_err)
    }
}

/// The largest decoded catalog a reader accepts (FORMAT.md §3). A catalog
/// holds about 0.5 KB per entry plus its inlined files (≤ 1 KiB each), so a
/// layer at the publisher's default limit of a million entries fits; the
/// bound exists so that a hostile frame cannot make a reader decode
/// without end. Catalogs are decoded as a stream into a file, so this
/// bounds disk and time, not memory.
pub const MAX_CATALOG_SIZE: u64 = 1 << 30;

/// The largest zstd window a reader accepts: 2^27 bytes, zstd's own default
/// limit, which every level (1–22) stays within. The decoder's buffer is
/// the smaller of the window and the frame's declared size, so this bounds
/// the memory of decoding a catalog (FORMAT.md §3).
pub const MAX_WINDOW_LOG: u32 = 27;

/// What a reader knows of an object's decoded size before decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this many bytes: the size a signed catalog states for a
    /// file or a chunk. A frame declaring anything else is refused before
    /// any byte is decoded.
    Size(u64),
    /// At most this many bytes (catalogs: [`MAX_CATALOG_SIZE`]).
    AtMost(u64),
}

impl Expected {
    /// The most bytes an encoded object (one zstd frame) of this decoded
    /// size can take: zstd's worst case for incompressible data (stored
    /// blocks, ≈ 1/256 overhead, plus the frame header) with room to spare.
    /// Readers refuse a longer body before buffering all of it, so a
    /// hostile server cannot make them take in more than this per request.
    pub fn encoded_bound(self) -> u64 {
        let decoded = match self {
            Expected::Size(n) | Expected::AtMost(n) => n,
        };
        decoded
            .saturating_add(decoded / 128)
            .saturating_add(64 << 10)
    }
}

/// Decoded bytes are produced and hashed in pieces of this size.
const STEP: usize = 128 << 10;

/// Checks the frame of `encoded` against `expected` without decoding it:
/// exactly one frame, with its content size declared and acceptable.
/// Returns the declared size.
pub fn check_frame(id: &ObjectId, encoded: &[u8], expected: Expected) -> Result<u64> {
    let corrupt = |reason: String| Error::CorruptObject { id: *id, reason };
    let size = zstd::zstd_safe::get_frame_content_size(encoded)
        .map_err(|_| corrupt("not a zstd frame".into()))?
        .ok_or_else(|| corrupt("zstd frame does not declare its content size".into()))?;
    match expected {
        Expected::Size(want) if size != want => {
            return Err(Error::SizeMismatch {
                id: *id,
                declared: size,
                expected: want,
            })
        }
        Expected::AtMost(limit) if size > limit => {
            return Err(Error::ObjectTooLarge {
                id: *id,
                size,
                limit,
            })
        }
        _ => {}
    }
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(encoded)
        .map_err(|_| corrupt("truncated zstd frame".into()))?;
    if frame_len != encoded.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after the zstd frame",
            encoded.len().saturating_sub(frame_len)
        )));
    }
    Ok(size)
}

/// Decodes an object as a stream into `out`, hashing as it goes, and checks
/// that it is exactly one frame whose declared size is `expected`, which
/// decodes to that many bytes hashing to `id`. Returns the size.
///
/// Memory stays bounded whatever the frame says: nothing is allocated from
/// the declared size; the decoder's window is at most [`MAX_WINDOW_LOG`]
/// and never more than the declared size; decoding stops at the first byte
/// past the declared size. On error `out` holds a prefix of garbage, which
/// the caller discards.
pub fn decode_to(
    id: &ObjectId,
    encoded: &[u8],
    expected: Expected,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};
    let corrupt = |reason: String| Error::CorruptObject { id: *id, reason };
    let size = check_frame(id, encoded, expected)?;
    let mut dctx = DCtx::try_create().ok_or_else(|| corrupt("zstd: out of memory".into()))?;
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|c| corrupt(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; STEP];
    let mut input = InBuffer::around(encoded);
    let mut total: u64 = 0;
    loop {
        let mut output = OutBuffer::around(buf.as_mut_slice());
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|c| corrupt(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
        let n = output.pos();
        total += n as u64;
        if total > size {
            return Err(corrupt(format!(
                "decodes to more than the {size} bytes its frame declares"
            )));
        }
        let piece = &buf[..n];
        hasher.update(piece);
        out.write_all(piece)
            .map_err(|e| Error::io("<decoded object>", e))?;
        if hint == 0 {
            break;
        }
        if n == 0 && input.pos() == encoded.len() {
            return Err(corrupt("truncated zstd frame".into()));
        }
    }
    if total != size {
        return Err(corrupt(format!(
            "decoded {total} bytes, frame declares {size}"
        )));
    }
    let actual = ObjectId(*hasher.finalize().as_bytes());
    if actual != *id {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(total)
}

/// Checks that an object decodes as `expected` to bytes hashing to `id`,
/// keeping none of them (replication, `check`).
pub fn verify(id: &ObjectId, encoded: &[u8], expected: Expected) -> Result<u64> {
    decode_to(id, encoded, expected, &mut std::io::sink())
}

/// Decodes an object whose size is `expected` into memory (see
/// [`decode_to`]); the buffer grows with what actually decodes, never from
/// what the frame declares.
pub fn decode_expected(id: &ObjectId, encoded: &[u8], expected: Expected) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_to(id, encoded, expected, &mut out)?;
    Ok(out)
}

/// Decompresses an object and checks that it is exactly one frame whose
/// declared size and BLAKE3 hash match; returns the bytes. For readers that
/// know no better bound than [`MAX_OBJECT_SIZE`]; a reader that knows the
/// size (from a catalog) uses [`decode_expected`].
pub fn decode(id: &ObjectId, encoded: &[u8]) -> Result<Vec<u8>> {
    decode_with_limit(id, encoded, MAX_OBJECT_SIZE)
}

pub fn decode_with_limit(id: &ObjectId, encoded: &[u8], limit: u64) -> Result<Vec<u8>> {
    decode_expected(id, encoded, Expected::AtMost(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_tampering() {
        let data = b"hello hello hello hello".repeat(10);
        let id = ObjectId::of(&data);
        let enc = encode(&data, DEFAULT_LEVEL).unwrap();
        assert_eq!(decode(&id, &enc).unwrap(), data);
        // wrong id
        assert!(decode(&ObjectId::of(b"other"), &enc).is_err());
        // truncated
        assert!(decode(&id, &enc[..enc.len() - 1]).is_err());
        // trailing garbage
        let mut long = enc.clone();
        long.push(0);
        assert!(decode(&id, &long).is_err());
        // flipped byte anywhere
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(decode(&id, &bad).is_err(), "flip at {i} accepted");
        }
        // size limit
        assert!(matches!(
            decode_with_limit(&id, &enc, 10),
            Err(Error::ObjectTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 1i32..6) {
            let id = ObjectId::of(&data);
            let enc = encode(&data, level).unwrap();
            prop_assert_eq!(decode(&id, &enc).unwrap(), data.clone());
            let mut e = Encoder::new(level).unwrap();
            prop_assert_eq!(decode(&id, &e.encode(&data).unwrap()).unwrap(), data);
        }
    }
}
