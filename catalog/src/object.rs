//! Object encoding: one zstd frame per object with the content size in its
//! header. Every decode checks the frame, the size and the BLAKE3 id.

use crate::{Error, ObjectId, Result};

/// Level used on the publish path: the fastest. Compression of new content
/// is the largest cost of a publish (level 1 ≈ 320 MB/s, level 3 ≈ 195 MB/s
/// per core here, shared/DEPENDENCIES.md), and ids do not depend on the
/// level, so `stratum compact` re-encodes objects densely (level 19) later,
/// off the publish path, without touching any catalog.
pub const DEFAULT_LEVEL: i32 = 1;

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

/// Decompresses an object and checks that it is exactly one frame whose
/// declared size and BLAKE3 hash match; returns the bytes.
pub fn decode(id: &ObjectId, encoded: &[u8]) -> Result<Vec<u8>> {
    decode_with_limit(id, encoded, MAX_OBJECT_SIZE)
}

pub fn decode_with_limit(id: &ObjectId, encoded: &[u8], limit: u64) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::CorruptObject { id: *id, reason };
    let size = zstd::zstd_safe::get_frame_content_size(encoded)
        .map_err(|_| corrupt("not a zstd frame".into()))?
        .ok_or_else(|| corrupt("zstd frame does not declare its content size".into()))?;
    if size > limit {
        return Err(Error::ObjectTooLarge {
            id: *id,
            size,
            limit,
        });
    }
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(encoded)
        .map_err(|_| corrupt("truncated zstd frame".into()))?;
    if frame_len != encoded.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after the zstd frame",
            encoded.len().saturating_sub(frame_len)
        )));
    }
    let size = usize::try_from(size).map_err(|_| corrupt("size overflows usize".into()))?;
    let mut out = Vec::with_capacity(size);
    let mut dctx = zstd::bulk::Decompressor::new().map_err(zstd_err)?;
    dctx.decompress_to_buffer(encoded, &mut out)
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    if out.len() != size {
        return Err(corrupt(format!(
            "decoded {} bytes, frame declares {size}",
            out.len()
        )));
    }
    let actual = ObjectId::of(&out);
    if actual != *id {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(out)
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
