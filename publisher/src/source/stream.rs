//! [`LayerStream`]: a layer's uncompressed tar, decompressed on a background
//! thread and verified while it is read.
//!
//! The producer thread reads the blob (at most one byte past its declared
//! size), hashes it with sha256, decompresses it and sends blocks of
//! [`BLOCK_SIZE`] bytes through a bounded channel ([`CHANNEL_BLOCKS`] deep);
//! spent blocks travel back for reuse. At the blob's end the producer checks
//! the size, then the digest. The consumer side hashes each block as it
//! arrives (for the diff_id) and checks the diff_id when the producer reports
//! the end, before a read returns 0. So a consumer sees EOF only after every
//! check has passed; a failure surfaces as an `io::Error` whose inner error
//! is the [`SourceError`] (kind `InvalidData` for mismatches).
//!
//! When a layer is stored uncompressed and its digest equals its diff_id (the
//! usual docker-archive case) the producer does not hash: the consumer's
//! diff_id check covers the same bytes.
//!
//! Dropping a stream early closes the channel; the producer notices at its
//! next send and stops, it never blocks forever.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::decompress::Decoder;
use super::digest::Sha256;
use super::error::SourceError;
use super::verify::HashingReader;
use super::{Compression, LayerDescriptor};

/// Size of the uncompressed blocks sent from the producer to the consumer.
pub const BLOCK_SIZE: usize = 512 * 1024;
/// Blocks in flight between producer and consumer.
pub const CHANNEL_BLOCKS: usize = 4;
/// Read buffer between the blob file and the decompressor.
const INPUT_BUFFER: usize = 256 * 1024;

/// Byte counts of a fully verified layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Size of the blob as stored.
    pub compressed_bytes: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_bytes: u64,
}

/// What the producer sends.
enum Msg {
    /// The next uncompressed bytes.
    Data(Vec<u8>),
    /// The blob ended and its size and digest are verified.
    End { compressed_bytes: u64 },
    /// The producer failed; nothing follows.
    Failed(SourceError),
}

/// Where the consumer side stands.
enum State {
    Streaming,
    Done(LayerStats),
    Failed(SourceError),
}

/// A layer's uncompressed tar (`impl Read`), verified while it is read.
///
/// A read past the verified end returns 0 as usual; a digest or size
/// mismatch detected at the end surfaces as an `io::Error` of kind
/// `InvalidData` whose inner error is the [`SourceError`]. Call
/// [`LayerStream::finish`] after parsing.
/// How often a stream with a cancel flag looks at it while it waits for data.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct LayerStream {
    image: String,
    layer: LayerDescriptor,
    rx: Receiver<Msg>,
    recycle: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    hasher: Option<Sha256>,
    uncompressed: u64,
    state: State,
    producer: Option<JoinHandle<()>>,
    /// Blob bytes the decompressor has consumed so far.
    compressed: Arc<AtomicU64>,
    /// Most uncompressed bytes per compressed byte past `ratio_floor`
    /// (0: unchecked); see [`LayerStream::set_max_ratio`].
    max_ratio: u64,
    ratio_floor: u64,
    /// When set, the stream fails with [`SourceError::Cancelled`] at its
    /// next block.
    cancel: Option<Arc<AtomicBool>>,
}

impl LayerStream {
    /// Starts streaming `layer` of `image` from `blob`, positioned at the
    /// blob's first byte (it need not be limited to the blob's size).
    pub(crate) fn spawn(
        image: &str,
        layer: &LayerDescriptor,
        blob: Box<dyn Read + Send>,
    ) -> Result<Self, SourceError> {
        let (tx, rx) = bounded(CHANNEL_BLOCKS);
        let (recycle, recycled) = bounded(CHANNEL_BLOCKS + 2);
        let compressed = Arc::new(AtomicU64::new(0));
        let producer = Producer {
            image: image.to_owned(),
            layer: layer.clone(),
            tx,
            recycled,
            compressed: compressed.clone(),
        };
        let producer = thread::Builder::new()
            .name(format!("layer-{}", layer.index))
            .spawn(move || producer.run(blob))
            .map_err(|e| layer_read(image, layer, "starting the decompression thread", e))?;
        Ok(LayerStream {
            image: image.to_owned(),
            layer: layer.clone(),
            rx,
            recycle,
            current: Vec::new(),
            pos: 0,
            hasher: Some(Sha256::new()),
            uncompressed: 0,
            state: State::Streaming,
            producer: Some(producer),
            compressed,
            max_ratio: 0,
            ratio_floor: 0,
            cancel: None,
        })
    }

    /// Stops the stream with [`SourceError::LayerRatio`] as soon as more
    /// than `floor` bytes came out and they are more than `ratio` times the
    /// blob bytes consumed (a decompression bomb); `ratio` 0 never stops it.
    /// Applies to reads and to [`LayerStream::finish`] alike.
    pub fn set_max_ratio(&mut self, ratio: u64, floor: u64) {
        self.max_ratio = ratio;
        self.ratio_floor = floor;
    }

    /// Stops the stream with [`SourceError::Cancelled`] at its next block
    /// once `cancel` is set (reads and [`LayerStream::finish`] alike).
    pub fn set_cancel(&mut self, cancel: Arc<AtomicBool>) {
        self.cancel = Some(cancel);
    }

    /// A live count of the blob bytes decompressed so far (the producer
    /// runs a few blocks ahead of the consumer).
    pub fn compressed_counter(&self) -> Arc<AtomicU64> {
        self.compressed.clone()
    }

    /// The layer being streamed.
    pub fn layer(&self) -> &LayerDescriptor {
        &self.layer
    }

    /// Reads and discards whatever the consumer left unread, then checks
    /// both digests and sizes. Errors name the layer (index and digest).
    pub fn finish(mut self) -> Result<LayerStats, SourceError> {
        self.pos = self.current.len();
        loop {
            match &self.state {
                State::Done(stats) => return Ok(*stats),
                State::Failed(e) => return Err(e.clone()),
                State::Streaming => self.next_block(),
            }
        }
    }

    /// Receives the next message and updates the state; a data block
    /// becomes `current`.
    fn next_block(&mut self) {
        let received = match &self.cancel {
            None => self.rx.recv().map_err(|_| ()),
            // A stalled download must not hold up a cancel: wait in steps.
            Some(cancel) => loop {
                if cancel.load(Ordering::Relaxed) {
                    // Dropping the stream stops the producer at its next block.
                    self.current = Vec::new();
                    self.state = State::Failed(SourceError::Cancelled {
                        image: self.image.clone(),
                    });
                    return;
                }
                match self.rx.recv_timeout(CANCEL_POLL) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    r => break r.map_err(|_| ()),
                }
            },
        };
        match received {
            Ok(Msg::Data(block)) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&block);
                }
                self.uncompressed += block.len() as u64;
                let spent = std::mem::replace(&mut self.current, block);
                self.pos = 0;
                if spent.capacity() > 0 {
                    // The producer may be gone or have enough buffers: fine.
                    let _ = self.recycle.try_send(spent);
                }
                let compressed = self.compressed.load(Ordering::Acquire).max(1);
                if self.max_ratio > 0
                    && self.uncompressed > self.ratio_floor
                    && self.uncompressed > self.max_ratio.saturating_mul(compressed)
                {
                    // Nothing more is read: dropping the stream stops the
                    // producer at its next block.
                    self.current = Vec::new();
                    self.state = State::Failed(SourceError::LayerRatio {
                        image: self.image.clone(),
                        index: self.layer.index,
                        digest: self.layer.digest,
                        compressed,
                        uncompressed: self.uncompressed,
                        limit: self.max_ratio,
                    });
                }
            }
            Ok(Msg::End { compressed_bytes }) => {
                let actual = self.hasher.take().map(Sha256::finish);
                self.state = match actual {
                    Some(actual) if actual != self.layer.diff_id => {
                        State::Failed(SourceError::LayerDiffId {
                            image: self.image.clone(),
                            index: self.layer.index,
                            digest: self.layer.digest,
                            diff_id: self.layer.diff_id,
                            actual: Box::new(actual),
                        })
                    }
                    _ => State::Done(LayerStats {
                        compressed_bytes,
                        uncompressed_bytes: self.uncompressed,
                    }),
                };
            }
            Ok(Msg::Failed(e)) => self.state = State::Failed(e),
            Err(_) => {
                // The producer ended without a last word: it panicked.
                let reason = match self.producer.take().map(JoinHandle::join) {
                    Some(Err(_)) => "the decompression thread panicked",
                    _ => "the decompression thread stopped unexpectedly",
                };
                self.state = State::Failed(layer_read(
                    &self.image,
                    &self.layer,
                    "streaming",
                    io::Error::other(reason),
                ));
            }
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let rest = self.current.get(self.pos..).unwrap_or(&[]);
            if !rest.is_empty() {
                let n = rest.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            if buf.is_empty() {
                return Ok(0);
            }
            match &self.state {
                State::Done(_) => return Ok(0),
                State::Failed(e) => return Err(e.clone().into()),
                State::Streaming => self.next_block(),
            }
        }
    }
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("image", &self.image)
            .field("layer", &self.layer.index)
            .field("digest", &self.layer.digest)
            .field("uncompressed", &self.uncompressed)
            .finish_non_exhaustive()
    }
}

/// A [`SourceError::LayerRead`].
fn layer_read(
    image: &str,
    layer: &LayerDescriptor,
    context: &str,
    error: io::Error,
) -> SourceError {
    SourceError::LayerRead {
        image: image.to_owned(),
        index: layer.index,
        digest: layer.digest,
        context: context.to_owned(),
        error: std::sync::Arc::new(error),
    }
}

/// The background side: blob → hash → decompress → blocks.
struct Producer {
    image: String,
    layer: LayerDescriptor,
    tx: Sender<Msg>,
    recycled: Receiver<Vec<u8>>,
    /// Blob bytes consumed, published for the consumer's ratio check.
    compressed: Arc<AtomicU64>,
}

/// The producer stops because the consumer is gone.
struct Disconnected;

impl Producer {
    fn run(self, blob: Box<dyn Read + Send>) {
        let last = match self.produce(blob) {
            Ok(compressed_bytes) => Msg::End { compressed_bytes },
            Err(Some(e)) => Msg::Failed(e),
            Err(None) => return,
        };
        // The consumer may have gone; nothing more to do either way.
        let _ = self.tx.send(last);
    }

    /// Streams the whole blob; `Err(None)` when the consumer went away.
    fn produce(&self, blob: Box<dyn Read + Send>) -> Result<u64, Option<SourceError>> {
        let layer = &self.layer;
        // Stored uncompressed with digest == diff_id: the consumer's diff_id
        // check hashes the very same bytes, so skip the second sha256.
        let hash = !(layer.compression == Compression::None && layer.digest == layer.diff_id);
        let limited = blob.take(layer.size.saturating_add(1));
        let input = BufReader::with_capacity(INPUT_BUFFER, HashingReader::new(limited, hash));
        let mut decoder = Decoder::new(layer.compression, input)
            .map_err(|e| Some(layer_read(&self.image, layer, "starting decompression", e)))?;
        loop {
            let mut block = self.recycled.try_recv().unwrap_or_default();
            block.resize(BLOCK_SIZE, 0);
            let filled = match fill(&mut decoder, &mut block) {
                Ok(n) => n,
                Err(e) => return Err(Some(self.diagnose(&mut decoder, e))),
            };
            if filled == 0 {
                break;
            }
            block.truncate(filled);
            // Bytes the decoder consumed: read, minus what waits in the
            // input buffer (up to 256 KiB, which would let a bomb go on).
            let input = decoder.get_mut();
            let consumed = input.get_ref().count() - input.buffer().len() as u64;
            self.compressed.store(consumed, Ordering::Release);
            self.send(Msg::Data(block)).map_err(|Disconnected| None)?;
            if filled < BLOCK_SIZE {
                // `fill` stops short only at the end of the stream.
                break;
            }
        }
        // The decoder saw its end; account for anything after it (a plain
        // stream has nothing left, the decoders read to EOF themselves).
        let hashing = decoder.get_mut().get_mut();
        hashing
            .drain()
            .map_err(|e| Some(layer_read(&self.image, layer, "reading the blob", e)))?;
        self.check_blob(hashing).map_err(Some)
    }

    /// Checks the blob's size, then its digest; returns its size.
    fn check_blob<R: Read>(&self, hashing: &HashingReader<R>) -> Result<u64, SourceError> {
        let layer = &self.layer;
        let actual_size = hashing.count();
        if actual_size != layer.size {
            return Err(SourceError::LayerSize {
                image: self.image.clone(),
                index: layer.index,
                digest: layer.digest,
                expected: layer.size,
                actual: actual_size,
            });
        }
        if let Some(actual) = hashing.digest() {
            if actual != layer.digest {
                return Err(SourceError::LayerDigest {
                    image: self.image.clone(),
                    index: layer.index,
                    digest: layer.digest,
                    actual,
                });
            }
        }
        Ok(actual_size)
    }

    /// Explains a read or decompression error: a blob of the wrong size or
    /// digest (truncated, tampered) is reported as such; otherwise the
    /// decoder's own error.
    fn diagnose<R: Read>(
        &self,
        decoder: &mut Decoder<BufReader<HashingReader<R>>>,
        error: io::Error,
    ) -> SourceError {
        let activity = decoder.activity();
        let hashing = decoder.get_mut().get_mut();
        if hashing.drain().is_ok() {
            if let Err(blob_error) = self.check_blob(hashing) {
                return blob_error;
            }
        }
        layer_read(&self.image, &self.layer, activity, error)
    }

    fn send(&self, msg: Msg) -> Result<(), Disconnected> {
        self.tx.send(msg).map_err(|_| Disconnected)
    }
}

/// Fills `block` from `reader` until it is full or the stream ends; returns
/// the bytes filled.
fn fill(reader: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = block.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::super::decompress::oci_media_type;
    use super::super::Digest;
    use super::*;

    fn tar_bytes(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect()
    }

    fn layer_for(blob: &[u8], raw: &[u8], c: Compression) -> LayerDescriptor {
        LayerDescriptor {
            index: 3,
            digest: Digest::of(blob),
            diff_id: Digest::of(raw),
            media_type: oci_media_type(c).to_owned(),
            size: blob.len() as u64,
            compression: c,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn stream(blob: Vec<u8>, layer: &LayerDescriptor) -> LayerStream {
        LayerStream::spawn("test-image", layer, Box::new(io::Cursor::new(blob))).unwrap()
    }

    #[test]
    fn streams_and_sources_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<LayerStream>();
        send_sync::<SourceError>();
        send_sync::<Box<dyn super::super::ImageSource>>();
    }

    #[test]
    fn reads_every_compression() {
        let raw = tar_bytes(3 * BLOCK_SIZE + 12345);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = match c {
                Compression::None => raw.clone(),
                Compression::Gzip => gzip(&raw),
                Compression::Zstd => zstd::encode_all(&raw[..], 1).unwrap(),
            };
            let layer = layer_for(&blob, &raw, c);
            let mut s = stream(blob.clone(), &layer);
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            assert!(out == raw, "{c}");
            assert_eq!(s.read(&mut [0u8; 10]).unwrap(), 0);
            let stats = s.finish().unwrap();
            assert_eq!(stats.compressed_bytes, blob.len() as u64);
            assert_eq!(stats.uncompressed_bytes, raw.len() as u64);
        }
    }

    #[test]
    fn partial_read_then_finish_verifies() {
        let raw = tar_bytes(2 * BLOCK_SIZE + 7);
        let blob = gzip(&raw);
        let layer = layer_for(&blob, &raw, Compression::Gzip);
        let mut s = stream(blob, &layer);
        let mut head = [0u8; 1000];
        s.read_exact(&mut head).unwrap();
        assert_eq!(s.finish().unwrap().uncompressed_bytes, raw.len() as u64);

        let mut bad = layer.clone();
        bad.diff_id = Digest::of(b"other");
        let mut s = stream(gzip(&raw), &bad);
        s.read_exact(&mut head).unwrap();
        let e = s.finish().unwrap_err();
        assert!(
            matches!(e, SourceError::LayerDiffId { index: 3, .. }),
            "{e}"
        );
    }

    #[test]
    fn mismatches_surface_at_eof_as_invalid_data() {
        let raw = tar_bytes(100_000);
        let blob = gzip(&raw);
        let good = layer_for(&blob, &raw, Compression::Gzip);

        let mut wrong_digest = good.clone();
        wrong_digest.digest = Digest::of(b"x");
        let mut wrong_diff = good.clone();
        wrong_diff.diff_id = Digest::of(b"x");
        let mut too_small = good.clone();
        too_small.size -= 1;
        let mut too_big = good.clone();
        too_big.size += 1;

        for (layer, want) in [
            (wrong_digest, "content digest"),
            (wrong_diff, "diff_id"),
            (too_small, "bytes"),
            (too_big, "bytes"),
        ] {
            let mut s = stream(blob.clone(), &layer);
            let mut out = Vec::new();
            let e = s.read_to_end(&mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            let inner = e.get_ref().map(|i| i.to_string()).unwrap_or_default();
            assert!(inner.contains(want) && inner.contains("layer 3"), "{inner}");
            // The error sticks, and finish() reports it too.
            assert!(s.read(&mut [0u8; 8]).is_err());
            let e = s.finish().unwrap_err();
            assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
        }
    }

    #[test]
    fn truncated_and_corrupt_blobs() {
        let raw = tar_bytes(300_000);
        let blob = gzip(&raw);
        let layer = layer_for(&blob, &raw, Compression::Gzip);
        let e = stream(blob[..blob.len() / 2].to_vec(), &layer)
            .finish()
            .unwrap_err();
        assert!(matches!(e, SourceError::LayerSize { .. }), "{e}");
        let mut flipped = blob.clone();
        flipped[blob.len() / 2] ^= 0x55;
        let e = stream(flipped, &layer).finish().unwrap_err();
        assert!(matches!(e, SourceError::LayerDigest { .. }), "{e}");
        // A blob that matches its descriptor but is not gzip at all.
        let junk = b"definitely not gzip".to_vec();
        let e = stream(junk.clone(), &layer_for(&junk, &raw, Compression::Gzip))
            .finish()
            .unwrap_err();
        assert!(matches!(e, SourceError::LayerRead { .. }), "{e}");
        assert!(e.to_string().contains("gzip"), "{e}");
    }

    #[test]
    fn uncompressed_same_digest_skips_blob_hash_but_still_verifies() {
        let raw = tar_bytes(BLOCK_SIZE + 1);
        let layer = layer_for(&raw, &raw, Compression::None);
        assert_eq!(
            stream(raw.clone(), &layer)
                .finish()
                .unwrap()
                .compressed_bytes,
            raw.len() as u64
        );
        let mut flipped = raw.clone();
        flipped[10] ^= 1;
        let e = stream(flipped, &layer).finish().unwrap_err();
        assert!(matches!(e, SourceError::LayerDiffId { .. }), "{e}");
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_ratio() {
        let raw = vec![0u8; 8 << 20];
        let blob = zstd::encode_all(&raw[..], 3).unwrap();
        let layer = layer_for(&blob, &raw, Compression::Zstd);
        let mut s = stream(blob.clone(), &layer);
        s.set_max_ratio(100, 1 << 20);
        let e = s.finish().unwrap_err();
        assert!(
            matches!(e, SourceError::LayerRatio { limit: 100, uncompressed, .. } if uncompressed < 4 << 20),
            "{e}"
        );
        assert!(e.to_string().contains("layer 3"), "{e}");
        // Below the floor, or with the check off, the same blob passes.
        let mut s = stream(blob.clone(), &layer);
        s.set_max_ratio(100, 16 << 20);
        assert_eq!(s.finish().unwrap().uncompressed_bytes, raw.len() as u64);
        let mut s = stream(blob, &layer);
        s.set_max_ratio(0, 0);
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), raw.len());
    }

    #[test]
    fn dropping_early_stops_the_producer() {
        // An endless blob: the producer must notice the consumer is gone.
        let layer = LayerDescriptor {
            index: 0,
            digest: Digest([1; 32]),
            diff_id: Digest([2; 32]),
            media_type: oci_media_type(Compression::None).to_owned(),
            size: u64::MAX - 1,
            compression: Compression::None,
        };
        let mut s = LayerStream::spawn("t", &layer, Box::new(io::repeat(0))).unwrap();
        let mut head = [0u8; 100];
        s.read_exact(&mut head).unwrap();
        let handle = s.producer.take().unwrap();
        drop(s);
        handle.join().unwrap();
    }
}
