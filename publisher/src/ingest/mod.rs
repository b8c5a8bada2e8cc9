//! Streaming ingestion of one layer: tar entries → catalog rows, file bytes
//! → content objects. Nothing is extracted to disk and memory stays bounded.
//!
//! Three threads share the work on a two-core machine: the source's thread
//! reads, checks the blob digest and decompresses; the parser thread (here)
//! checks the diff_id, parses tar and cuts large files into content-defined
//! chunks; the calling thread hashes, compresses, stores and writes rows.
//! A bounded channel between the last two caps memory at a few chunks.
//!
//! [`Limits`] bound the rest: entries per layer, path lengths, declared
//! sizes, the decompression ratio (checked by the [`LayerStream`] and, for
//! sparse holes, on file contents) and the bytes of tar headers the tar
//! reader may buffer for one entry (`HeaderGuard`).
//!
//! `parse` is the parser thread's side, `write` the calling thread's; this
//! module starts both and owns the channel between them.

use std::path::Path;

use crossbeam_channel::{bounded, Receiver, Sender};
use stratum_catalog::catalog::{
    schema::FLAG_IMPLICIT, CatalogBuilder, CatalogKind, Entry, FileType, ROOT_ID,
};

use crate::error::{PublishError, Result};
use crate::limits::Limits;
use crate::objects::ObjectWriter;
use crate::source::{LayerDescriptor, LayerStream};
use crate::tree::{Components, Tree};

mod parse;
mod pax;
mod write;

use parse::parse;
use write::write;

/// Files up to this size are stored in the catalog row itself, saving an
/// object file and an HTTP round trip each. Inlined bytes are copied into
/// every catalog that lists the file (its layer tree, each flat tree, each
/// rebuild of the layer) while objects are shared, so the threshold is kept
/// low: measured on the publish benchmark (docs/BENCHMARKS.md), 4 KiB made
/// the repository 6% larger and its catalogs 3.4× larger than 1 KiB. A
/// flat tree's catalogs that are their image's own store such files as
/// objects instead (`nesting::InlineRule`, DECISIONS D49).
pub const INLINE_MAX: u64 = 1024;

/// Files above this size are cut into content-defined chunks, so a node can
/// read part of a large file and similar large files share chunks.
pub const CHUNK_THRESHOLD: u64 = 4 << 20;

/// FastCDC parameters (fastcdc 5.0.0 v2020, normalization level 1). They fix
/// chunk boundaries and so are part of the repository format.
pub const CHUNK_MIN: usize = 1 << 20;
pub const CHUNK_AVG: usize = 2 << 20;
pub const CHUNK_MAX: usize = 4 << 20;

/// Batches in flight between parser and writer; a batch holds at most
/// ~1 MiB of small files or one chunk (≤ 4 MiB) more, so this bounds the
/// buffered file data to about 40 MiB.
const CHANNEL_DEPTH: usize = 8;

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IngestStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

enum Kind {
    Root,
    Dir,
    File(Vec<u8>),
    BigFile,
    Symlink(Vec<u8>),
    Hardlink(Components),
    Special,
    Whiteout,
    Opaque,
}

struct Item {
    comps: Components,
    raw: String,
    meta: Entry,
    kind: Kind,
}

enum Msg {
    Item(Box<Item>),
    Chunk(Vec<u8>),
    BigEnd,
}

/// Messages travel in batches: one channel hand-off per few hundred small
/// files instead of one per file (per-file hand-offs made the threads spend
/// more time waking each other than working).
struct BatchSender {
    tx: Sender<Vec<Msg>>,
    buf: Vec<Msg>,
    bytes: usize,
}

const BATCH_ITEMS: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

impl BatchSender {
    fn send(&mut self, msg: Msg, bytes: usize) -> std::result::Result<(), ()> {
        self.buf.push(msg);
        self.bytes += bytes;
        if self.buf.len() >= BATCH_ITEMS || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::result::Result<(), ()> {
        if !self.buf.is_empty() {
            self.tx
                .send(std::mem::take(&mut self.buf))
                .map_err(|_| ())?;
            self.bytes = 0;
        }
        Ok(())
    }
}

struct BatchReceiver {
    rx: Receiver<Vec<Msg>>,
    cur: std::vec::IntoIter<Msg>,
}

impl BatchReceiver {
    fn recv(&mut self) -> Option<Msg> {
        loop {
            if let Some(m) = self.cur.next() {
                return Some(m);
            }
            self.cur = self.rx.recv().ok()?.into_iter();
        }
    }
}

/// What a layer ingestion needs to know about its surroundings.
pub struct LayerContext<'a> {
    pub image: &'a str,
    pub layer: &'a LayerDescriptor,
    pub tmp_dir: &'a Path,
    /// The flat tree of the layers below, for hardlinks to lower files and
    /// the metadata of implicit directories.
    pub lower: Option<&'a CatalogBuilder>,
}

/// What an error of this layer must name; shared with the parser thread.
#[derive(Clone)]
struct Errors {
    image: String,
    layer: usize,
    diff_id: String,
}

impl Errors {
    fn entry_err(&self, path: &str, reason: impl Into<String>) -> PublishError {
        PublishError::Entry {
            image: self.image.clone(),
            layer: self.layer,
            diff_id: self.diff_id.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn layer_err(&self, reason: impl Into<String>) -> PublishError {
        PublishError::Layer {
            image: self.image.clone(),
            layer: self.layer,
            diff_id: self.diff_id.clone(),
            reason: reason.into(),
        }
    }
}

/// Ingests one layer with the default [`Limits`]; returns its frozen
/// catalog file (not yet stored).
pub fn ingest_layer(
    ctx: &LayerContext<'_>,
    stream: LayerStream,
    objects: &mut ObjectWriter,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(tempfile::NamedTempFile, IngestStats)> {
    ingest_layer_with(ctx, &Limits::default(), stream, objects, on_bytes)
}

/// Ingests one layer within `limits`; returns its frozen catalog file (not
/// yet stored), one catalog.
pub fn ingest_layer_with(
    ctx: &LayerContext<'_>,
    limits: &Limits,
    stream: LayerStream,
    objects: &mut ObjectWriter,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(tempfile::NamedTempFile, IngestStats)> {
    let (b, stats) = ingest_layer_tree(ctx, limits, stream, objects, on_bytes)?;
    Ok((b.finish_file()?, stats))
}

/// Ingests one layer within `limits`; returns its tree, not yet frozen
/// (`nesting::write_tree` cuts and stores it).
pub fn ingest_layer_tree(
    ctx: &LayerContext<'_>,
    limits: &Limits,
    stream: LayerStream,
    objects: &mut ObjectWriter,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(CatalogBuilder, IngestStats)> {
    let ns_path = layer_path(&ctx.layer.diff_id.hex());
    // Until the tar says otherwise, the layer root looks like the merged
    // root below it, so that stacking the layer trees shows the right
    // root metadata (the same rule as any implicit directory).
    let mut root = match ctx.lower {
        Some(low) => low
            .get(ROOT_ID)?
            .unwrap_or_else(|| Entry::new(FileType::Directory, 0o755)),
        None => Entry::new(FileType::Directory, 0o755),
    };
    root.xattrs
        .retain(|(n, _)| !crate::tree::is_overlay_xattr(n));
    root.hardlink = 0;
    root.flags = FLAG_IMPLICIT;
    let builder = CatalogBuilder::create(ctx.tmp_dir, CatalogKind::Layer, &ns_path, &root)?;
    let mut tree = Tree::new(builder);
    tree.b
        .set_property("diff_id", &ctx.layer.diff_id.to_string())?;

    let errs = Errors {
        image: ctx.image.to_owned(),
        layer: ctx.layer.index,
        diff_id: ctx.layer.diff_id.to_string(),
    };
    let (tx, rx) = bounded::<Vec<Msg>>(CHANNEL_DEPTH);
    let tx = BatchSender {
        tx,
        buf: Vec::new(),
        bytes: 0,
    };
    let rx = BatchReceiver {
        rx,
        cur: Vec::new().into_iter(),
    };
    let (parsed, written) = std::thread::scope(|s| {
        let perrs = errs.clone();
        let parser = s.spawn(move || parse(&perrs, limits, stream, tx, on_bytes));
        let written = write(ctx.lower, &errs, &mut tree, rx, objects);
        // Dropping the receiver (inside write) stops a parser that is still
        // sending after a write error.
        (parser.join(), written)
    });
    let parsed = parsed.map_err(|_| errs.layer_err("tar parser thread panicked"))?;
    // A writer error explains a parser's "channel closed"; report it first.
    let stats = written?;
    parsed?;
    tree.b.set_property("entries", &stats.entries.to_string())?;
    tree.b.set_property("files", &stats.files.to_string())?;
    tree.b.set_property("bytes", &stats.bytes.to_string())?;
    Ok((tree.b, stats))
}

pub fn layer_path(diff_hex: &str) -> String {
    format!("/layers/{}/{}", &diff_hex[..2], diff_hex)
}
