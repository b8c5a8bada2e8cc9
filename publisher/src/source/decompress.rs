//! Layer compression: media type → [`Compression`], detection by magic bytes,
//! and a [`Decoder`] that turns a compressed blob into the uncompressed tar.
//!
//! gzip uses `flate2`'s `MultiGzDecoder` (zlib-rs backend), so a blob made of
//! several gzip members decodes as their concatenation; zstd uses
//! `zstd::stream::read::Decoder`, which reads every frame up to EOF (skippable
//! frames included) with zstd's default window limit (2^27 bytes). Data after
//! the last member or frame is an error.

use std::io::{self, BufRead, Read};

use flate2::bufread::MultiGzDecoder;

use super::Compression;

/// OCI media type of a plain tar layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Every layer media type accepted, with its compression.
const LAYER_MEDIA_TYPES: [(&str, Compression); 10] = [
    (OCI_LAYER_TAR, Compression::None),
    (OCI_LAYER_GZIP, Compression::Gzip),
    (OCI_LAYER_ZSTD, Compression::Zstd),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Compression::None,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        Compression::None,
    ),
];

/// The compression a layer media type declares, or `None` for a media type
/// that is not a layer this reader accepts.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    LAYER_MEDIA_TYPES
        .iter()
        .find(|(m, _)| *m == media_type)
        .map(|(_, c)| *c)
}

/// The OCI layer media type for `compression`.
pub fn oci_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => OCI_LAYER_TAR,
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
    }
}

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd's frame magic (little-endian 0xFD2FB528).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Bytes [`sniff`] needs to see.
pub const SNIFF_LEN: usize = 4;

/// Detects the compression of a blob from its first bytes. Anything that is
/// neither gzip nor zstd is taken for a plain tar.
pub fn sniff(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if prefix.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads a blob and yields its uncompressed bytes.
pub enum Decoder<R: BufRead> {
    /// A plain tar: bytes pass through.
    Plain(R),
    /// gzip, one or more members.
    Gzip(Box<MultiGzDecoder<R>>),
    /// zstd, one or more frames.
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    /// A decoder for `compression` over `reader`.
    pub fn new(compression: Compression, reader: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::Plain(reader),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(reader))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(reader)?),
        })
    }

    /// The reader underneath (to drain or inspect it after an error).
    pub fn get_mut(&mut self) -> &mut R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }

    /// What this decoder does, for error messages.
    pub fn activity(&self) -> &'static str {
        match self {
            Decoder::Plain(_) => "reading the blob",
            Decoder::Gzip(_) => "gzip decompression",
            Decoder::Zstd(_) => "zstd decompression",
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    fn decode(c: Compression, blob: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(c, blob)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn media_types() {
        assert_eq!(layer_compression(OCI_LAYER_GZIP), Some(Compression::Gzip));
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression(OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+bzip2"),
            None
        );
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(layer_compression(oci_media_type(c)), Some(c));
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&gzip(b"x")), Compression::Gzip);
        assert_eq!(
            sniff(&zstd::encode_all(&b"x"[..], 1).unwrap()),
            Compression::Zstd
        );
        assert_eq!(sniff(b"usr/"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }

    #[test]
    fn multi_member_gzip_and_multi_frame_zstd() {
        let mut blob = gzip(b"hello ");
        blob.extend(gzip(b"world"));
        assert_eq!(decode(Compression::Gzip, &blob).unwrap(), b"hello world");
        let mut blob = zstd::encode_all(&b"hello "[..], 3).unwrap();
        blob.extend(zstd::encode_all(&b"world"[..], 3).unwrap());
        assert_eq!(decode(Compression::Zstd, &blob).unwrap(), b"hello world");
    }

    #[test]
    fn corrupt_and_truncated_fail() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let g = gzip(&data);
        assert!(decode(Compression::Gzip, &g[..g.len() - 10]).is_err());
        let mut trailing = g.clone();
        trailing.extend_from_slice(b"garbage");
        assert!(decode(Compression::Gzip, &trailing).is_err());
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert!(decode(Compression::Zstd, &z[..z.len() - 10]).is_err());
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"garbage");
        assert!(decode(Compression::Zstd, &trailing).is_err());
    }
}
