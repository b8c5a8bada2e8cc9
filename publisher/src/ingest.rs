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

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{bounded, Receiver, Sender};
use stratum_catalog::catalog::{
    schema::FLAG_COPYUP, schema::FLAG_IMPLICIT, CatalogBuilder, CatalogKind, Chunk, Data, Entry,
    FileType, OPAQUE_XATTR, OPAQUE_XATTR_USER, ROOT_ID,
};
use stratum_catalog::ObjectKind;

use crate::error::{PublishError, Result};
use crate::limits::Limits;
use crate::objects::ObjectWriter;
use crate::source::{LayerDescriptor, LayerStream};
use crate::tree::{display, resolve, split_path, Components, PlaceError, Tree};

/// Files up to this size are stored in the catalog row itself, saving an
/// object file and an HTTP round trip each. Inlined bytes are copied into
/// every catalog that lists the file (its layer tree, each flat tree, each
/// rebuild of the layer) while objects are shared, so the threshold is kept
/// low: measured on the publish benchmark (docs/BENCHMARKS.md), 4 KiB made
/// the repository 6% larger and its catalogs 3.4× larger than 1 KiB.
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
/// yet stored).
pub fn ingest_layer_with(
    ctx: &LayerContext<'_>,
    limits: &Limits,
    stream: LayerStream,
    objects: &mut ObjectWriter,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(tempfile::NamedTempFile, IngestStats)> {
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
    Ok((tree.b.finish_file()?, stats))
}

pub fn layer_path(diff_hex: &str) -> String {
    format!("/layers/{}/{}", &diff_hex[..2], diff_hex)
}

/// Slack over [`Limits::max_header_size`] for what the tar reader reads
/// between two entries besides extension records: header blocks, padding,
/// the end-of-archive blocks.
const HEADER_SLACK: u64 = 8 * 512;

/// The tar reader's input: while the reader looks for the next entry it
/// may take only `budget` bytes. It holds PAX records and GNU long names
/// in memory whole, so without this one header declaring gigabytes (fed
/// by a compressible blob) would exhaust the memory.
struct HeaderGuard<'s> {
    inner: &'s mut LayerStream,
    budget: Rc<Cell<u64>>,
    limit: u64,
}

impl Read for HeaderGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.budget.get();
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the tar headers of one entry (PAX records, GNU long names, sparse maps) \
                     take more than {} bytes",
                    self.limit
                ),
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.budget.set(left.saturating_sub(n as u64));
        Ok(n)
    }
}

fn parse(
    ctx: &Errors,
    limits: &Limits,
    mut stream: LayerStream,
    mut tx: BatchSender,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let closed = || ctx.layer_err("ingestion stopped");
    stream.set_max_ratio(limits.max_ratio, limits.ratio_floor);
    let compressed = stream.compressed_counter();
    // File contents produced so far, against the blob bytes read: GNU
    // sparse holes expand without any input at all.
    let mut content = 0u64;
    let mut grow = |raw: &str, n: u64| -> Result<()> {
        content = content.saturating_add(n);
        let c = compressed.load(Ordering::Acquire);
        if limits.ratio_exceeded(content, c) {
            return Err(ctx.entry_err(
                raw,
                format!(
                    "file contents reach {content} bytes from {c} compressed bytes, more than \
                     the limit of {}:1 (see --max-ratio)",
                    limits.max_ratio
                ),
            ));
        }
        Ok(())
    };
    let budget = Rc::new(Cell::new(u64::MAX));
    let header_budget = limits.max_header_size.saturating_add(HEADER_SLACK);
    {
        let guard = HeaderGuard {
            inner: &mut stream,
            budget: budget.clone(),
            limit: limits.max_header_size,
        };
        let mut archive = tar::Archive::new(guard);
        let mut entries = archive
            .entries()
            .map_err(|e| ctx.layer_err(format!("reading tar: {e}")))?;
        let mut count = 0u64;
        let mut last = String::new();
        loop {
            budget.set(header_budget);
            let next = entries.next();
            budget.set(u64::MAX);
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| {
                let mut m = tar_error(e);
                if count > 0 {
                    m.push_str(&format!(" (after entry {last:?})"));
                }
                ctx.layer_err(m)
            })?;
            let raw_path = entry.path_bytes().into_owned();
            let raw = String::from_utf8_lossy(&raw_path).into_owned();
            count += 1;
            if count > limits.max_entries {
                return Err(ctx.entry_err(
                    &raw,
                    format!(
                        "the layer has more than {} entries (--max-entries)",
                        limits.max_entries
                    ),
                ));
            }
            if entry.size() > limits.max_file_size {
                return Err(ctx.entry_err(
                    &raw,
                    format!(
                        "declares {} bytes, more than the limit of {} (--max-file-size)",
                        entry.size(),
                        limits.max_file_size
                    ),
                ));
            }
            'entry: {
                let ty = entry.header().entry_type();
                if ty.is_pax_global_extensions() {
                    break 'entry;
                }
                limits
                    .check_path(&raw_path)
                    .map_err(|r| ctx.entry_err(&raw, r))?;
                let mut comps = split_path(&raw_path).map_err(|r| ctx.entry_err(&raw, r))?;
                let meta = metadata(&mut entry).map_err(|r| ctx.entry_err(&raw, r))?;
                let mut kind = match ty {
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Regular
                    | tar::EntryType::Continuous
                    | tar::EntryType::GNUSparse => {
                        let size = entry.size();
                        if size > CHUNK_THRESHOLD {
                            Kind::BigFile
                        } else {
                            let mut buf = Vec::with_capacity(size as usize);
                            (&mut entry).take(size).read_to_end(&mut buf).map_err(|e| {
                                ctx.entry_err(&raw, format!("reading content: {}", tar_error(e)))
                            })?;
                            if buf.len() as u64 != size {
                                return Err(ctx.entry_err(
                                    &raw,
                                    format!("truncated: {} of {size} bytes", buf.len()),
                                ));
                            }
                            grow(&raw, size)?;
                            Kind::File(buf)
                        }
                    }
                    tar::EntryType::Symlink => {
                        let target = entry
                            .link_name_bytes()
                            .ok_or_else(|| ctx.entry_err(&raw, "symlink without a target"))?
                            .into_owned();
                        if target.is_empty() || target.contains(&0) {
                            return Err(
                                ctx.entry_err(&raw, "symlink target is empty or contains NUL")
                            );
                        }
                        if target.len() > limits.max_path_length {
                            return Err(ctx.entry_err(
                                &raw,
                                format!(
                                    "the symlink target is {} bytes long, more than the limit \
                                     of {} (--max-path-length)",
                                    target.len(),
                                    limits.max_path_length
                                ),
                            ));
                        }
                        Kind::Symlink(target)
                    }
                    tar::EntryType::Link => {
                        let target = entry
                            .link_name_bytes()
                            .ok_or_else(|| ctx.entry_err(&raw, "hardlink without a target"))?;
                        limits
                            .check_path(&target)
                            .map_err(|r| ctx.entry_err(&raw, format!("hardlink target: {r}")))?;
                        let t = split_path(&target)
                            .map_err(|r| ctx.entry_err(&raw, format!("hardlink target: {r}")))?;
                        Kind::Hardlink(t)
                    }
                    tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                        Kind::Special
                    }
                    other => {
                        return Err(ctx.entry_err(
                            &raw,
                            format!("unsupported tar entry type {:?}", other.as_byte() as char),
                        ))
                    }
                };
                // Whiteouts (OCI image spec, "Representing Changes").
                if let Some(last) = comps.last() {
                    if last.as_slice() == b".wh..wh..opq" {
                        comps.pop();
                        kind = Kind::Opaque;
                    } else if last.starts_with(b".wh..wh.") {
                        // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
                        break 'entry;
                    } else if let Some(name) = last.strip_prefix(b".wh.") {
                        if name.is_empty() {
                            return Err(ctx.entry_err(&raw, "whiteout without a name"));
                        }
                        // `.wh..` and `.wh...` would put entries named `.`
                        // and `..` into the tree (caught by the fuzz harness).
                        if name == b"." || name == b".." {
                            return Err(ctx.entry_err(&raw, "whiteout of '.' or '..'"));
                        }
                        let name = name.to_vec();
                        comps.pop();
                        comps.push(name);
                        kind = Kind::Whiteout;
                    }
                } else if matches!(kind, Kind::Dir) {
                    kind = Kind::Root;
                } else if !matches!(kind, Kind::Opaque) {
                    return Err(ctx.entry_err(&raw, "names the layer root but is not a directory"));
                }
                let big = matches!(kind, Kind::BigFile);
                let size = entry.size();
                let item_bytes = match &kind {
                    Kind::File(b) => b.len(),
                    _ => 0,
                };
                tx.send(
                    Msg::Item(Box::new(Item {
                        comps,
                        raw: raw.clone(),
                        meta,
                        kind,
                    })),
                    item_bytes,
                )
                .map_err(|_| closed())?;
                if big {
                    let mut total = 0u64;
                    let cdc = fastcdc::v2020::StreamCDC::new(
                        (&mut entry).take(size),
                        CHUNK_MIN,
                        CHUNK_AVG,
                        CHUNK_MAX,
                    );
                    for chunk in cdc {
                        let chunk = chunk
                            .map_err(|e| ctx.entry_err(&raw, format!("reading content: {e}")))?;
                        let n = chunk.data.len();
                        total += n as u64;
                        grow(&raw, n as u64)?;
                        on_bytes(n as u64);
                        tx.send(Msg::Chunk(chunk.data), n).map_err(|_| closed())?;
                    }
                    if total != size {
                        return Err(
                            ctx.entry_err(&raw, format!("truncated: {total} of {size} bytes"))
                        );
                    }
                    tx.send(Msg::BigEnd, 0).map_err(|_| closed())?;
                } else {
                    on_bytes(size);
                }
            }
            // What this entry's data was not used (a directory's, a skipped
            // entry's) is read here, streaming, so that the budget of the
            // next header covers headers only.
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| {
                ctx.entry_err(&raw, format!("reading entry data: {}", tar_error(e)))
            })?;
            last = raw;
        }
    }
    // The tar ended at a zero block (or at the end of the stream). The
    // end-of-archive marker is two: a single zero block followed by more
    // headers would hide those entries from this reader while other
    // readers (GNU tar -i) show them, and Go's archive/tar refuses it.
    let mut block = [0u8; 512];
    let mut got = 0;
    while let Some(rest) = block.get_mut(got..).filter(|r| !r.is_empty()) {
        match stream.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ctx.layer_err(tar_error(e))),
        }
    }
    if block.iter().any(|&b| b != 0) {
        return Err(ctx.layer_err(
            "data follows a single zero block that ends the tar (entries hidden after the \
             end-of-archive block)",
        ));
    }
    tx.flush().map_err(|_| closed())?;
    drop(tx);
    stream.finish()?;
    Ok(())
}

fn tar_error(e: std::io::Error) -> String {
    // A digest mismatch found at EOF travels inside an io::Error.
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

/// Metadata of a tar entry, PAX records applied (uid, gid, mtime with
/// nanoseconds, SCHILY.xattr.*).
fn metadata<R: Read>(entry: &mut tar::Entry<R>) -> Result<Entry, String> {
    let h = entry.header();
    let ft = match h.entry_type() {
        tar::EntryType::Directory => FileType::Directory,
        tar::EntryType::Symlink => FileType::Symlink,
        tar::EntryType::Char => FileType::CharDevice,
        tar::EntryType::Block => FileType::BlockDevice,
        tar::EntryType::Fifo => FileType::Fifo,
        _ => FileType::Regular,
    };
    let mode = h.mode().map_err(|e| format!("bad mode: {e}"))?;
    let mut e = Entry::new(ft, mode);
    e.uid = u32::try_from(h.uid().map_err(|e| format!("bad uid: {e}"))?)
        .map_err(|_| "uid out of range")?;
    e.gid = u32::try_from(h.gid().map_err(|e| format!("bad gid: {e}"))?)
        .map_err(|_| "gid out of range")?;
    e.mtime = i64::try_from(h.mtime().map_err(|e| format!("bad mtime: {e}"))?).unwrap_or(i64::MAX);
    if matches!(ft, FileType::CharDevice | FileType::BlockDevice) {
        let major = h
            .device_major()
            .map_err(|e| format!("bad device major: {e}"))?
            .unwrap_or(0);
        let minor = h
            .device_minor()
            .map_err(|e| format!("bad device minor: {e}"))?
            .unwrap_or(0);
        e.rdev = Entry::make_rdev(major, minor);
    }
    if ft == FileType::Regular {
        e.size = entry.size();
    }
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = |what: &str| -> Result<u64, String> {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad PAX {what} {:?}", String::from_utf8_lossy(value)))
            };
            match key {
                b"uid" => e.uid = u32::try_from(num("uid")?).map_err(|_| "PAX uid out of range")?,
                b"gid" => e.gid = u32::try_from(num("gid")?).map_err(|_| "PAX gid out of range")?,
                b"mtime" => (e.mtime, e.mtime_ns) = pax_time(value)?,
                // The tar reader uses a valid PAX size and silently ignores
                // an invalid one; two readers must not see two layouts.
                b"size" => {
                    num("size")?;
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        // Overlay markers come only from whiteouts: a tar
                        // that carries its own (opaque, redirect, metacopy)
                        // would steer overlay mounts of the layer trees.
                        if crate::tree::is_overlay_xattr(name) {
                            continue;
                        }
                        if name.is_empty() || name.len() > 255 || value.len() > 65536 {
                            return Err("xattr name or value out of range".into());
                        }
                        e.xattrs.retain(|(n, _)| n != name);
                        e.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
        e.xattrs.sort();
    }
    Ok(e)
}

/// A PAX time: decimal seconds, optionally negative, optional fraction.
fn pax_time(v: &[u8]) -> Result<(i64, u32), String> {
    let s = std::str::from_utf8(v).map_err(|_| "PAX mtime is not UTF-8")?;
    let bad = || format!("bad PAX mtime {s:?}");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = int.starts_with('-');
    let secs: i64 = if int == "-" {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    if frac.is_empty() {
        return Ok((secs, 0));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: u32 = digits.parse().map_err(|_| bad())?;
    if negative && ns > 0 {
        // -1.5 means 1.5 s before the epoch: floor the seconds.
        let floored = secs.checked_sub(1).ok_or_else(bad)?;
        return Ok((floored, 1_000_000_000 - ns));
    }
    Ok((secs, ns))
}

fn write(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    mut rx: BatchReceiver,
    objects: &mut ObjectWriter,
) -> Result<IngestStats> {
    let mut stats = IngestStats::default();
    while let Some(msg) = rx.recv() {
        let Msg::Item(item) = msg else {
            return Err(ctx.layer_err("internal: chunk without a file"));
        };
        stats.entries += 1;
        let Item {
            comps,
            raw,
            mut meta,
            kind,
        } = *item;
        let place = |e: PlaceError| match e {
            PlaceError::Catalog(c) => PublishError::from(c),
            PlaceError::Invalid(r) => ctx.entry_err(&raw, r),
        };
        match kind {
            Kind::Root => {
                let mut root = tree
                    .b
                    .get(ROOT_ID)?
                    .ok_or_else(|| ctx.layer_err("no root"))?;
                let keep: Vec<_> = root
                    .xattrs
                    .iter()
                    .filter(|(n, _)| is_opaque_name(n))
                    .cloned()
                    .collect();
                meta.xattrs.extend(keep);
                meta.xattrs.sort();
                meta.xattrs.dedup_by(|a, b| a.0 == b.0);
                meta.name = Vec::new();
                meta.flags = 0;
                root = Entry {
                    id: root.id,
                    parent: root.parent,
                    ..meta
                };
                tree.b.update(ROOT_ID, &root)?;
            }
            Kind::Opaque => {
                let id = tree.ensure_dir(&comps, lower).map_err(place)?;
                let mut dir = tree
                    .b
                    .get(id)?
                    .ok_or_else(|| ctx.layer_err("directory vanished"))?;
                for n in [OPAQUE_XATTR, OPAQUE_XATTR_USER] {
                    dir.xattrs.retain(|(x, _)| x != n);
                    dir.xattrs.push((n.to_vec(), b"y".to_vec()));
                }
                dir.xattrs.sort();
                tree.b.update(id, &dir)?;
            }
            Kind::Whiteout => {
                let (name, parent) = split_last(&comps);
                // Below a non-directory (e.g. a directory this layer turned
                // into a file, whose old children umoci still whites out)
                // there is nothing left to hide: drop the whiteout.
                let parent_is_dir = match resolve(&tree.b, parent)? {
                    Some(p) => p.is_dir(),
                    None => match lower {
                        Some(low) => resolve(low, parent)?.is_none_or(|p| p.is_dir()),
                        None => true,
                    },
                };
                if !parent_is_dir {
                    continue;
                }
                let parent_id = tree.ensure_dir(parent, lower).map_err(place)?;
                // A whiteout hides lower layers only; an entry of this same
                // layer with that name stays (OCI image spec).
                if tree.b.lookup(parent_id, name)?.is_none() {
                    let mut w = Entry::new(FileType::CharDevice, meta.perm());
                    w.name = name.to_vec();
                    (w.uid, w.gid, w.mtime, w.mtime_ns) =
                        (meta.uid, meta.gid, meta.mtime, meta.mtime_ns);
                    tree.b.insert(parent_id, &w)?;
                }
            }
            Kind::Dir => {
                let (name, parent) = split_last(&comps);
                let parent_id = tree.ensure_dir(parent, lower).map_err(place)?;
                meta.name = name.to_vec();
                match tree.b.lookup(parent_id, name)? {
                    Some(old) if old.is_dir() => {
                        // A directory listed twice, or after its children:
                        // new metadata, same children, opaque marks kept.
                        let keep: Vec<_> = old
                            .xattrs
                            .iter()
                            .filter(|(n, _)| is_opaque_name(n))
                            .cloned()
                            .collect();
                        meta.xattrs.extend(keep);
                        meta.xattrs.sort();
                        meta.xattrs.dedup_by(|a, b| a.0 == b.0);
                        tree.b.update(old.id, &meta)?;
                        tree.remember_dir(&comps, old.id);
                    }
                    old => {
                        if let Some(old) = old {
                            tree.remove(old.id, &comps)?;
                        }
                        let id = tree.b.insert(parent_id, &meta)?;
                        tree.remember_dir(&comps, id);
                    }
                }
            }
            Kind::File(bytes) => {
                stats.files += 1;
                stats.bytes += bytes.len() as u64;
                meta.size = bytes.len() as u64;
                meta.data = if bytes.is_empty() {
                    Data::None
                } else if meta.size <= INLINE_MAX {
                    Data::Inline(bytes)
                } else {
                    Data::Object(objects.put_owned(ObjectKind::Content, bytes)?)
                };
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::BigFile => {
                stats.files += 1;
                let mut chunks = Vec::new();
                loop {
                    match rx.recv() {
                        Some(Msg::Chunk(data)) => {
                            let size = data.len() as u64;
                            let id = objects.put_owned(ObjectKind::Content, data)?;
                            chunks.push(Chunk { id, size });
                        }
                        Some(Msg::BigEnd) => break,
                        // The parser reports why it stopped.
                        _ => return Ok(stats),
                    }
                }
                stats.bytes += meta.size;
                meta.data = Data::Chunks(chunks);
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Symlink(target) => {
                meta.size = target.len() as u64;
                meta.symlink = Some(target);
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Special => {
                replace(lower, ctx, tree, &comps, &raw, meta)?;
            }
            Kind::Hardlink(target) => hardlink(lower, ctx, tree, &comps, &raw, &target)?,
        }
    }
    Ok(stats)
}

fn is_opaque_name(n: &[u8]) -> bool {
    n == OPAQUE_XATTR || n == OPAQUE_XATTR_USER
}

fn split_last(comps: &[Vec<u8>]) -> (&[u8], &[Vec<u8>]) {
    match comps.split_last() {
        Some((last, parent)) => (last.as_slice(), parent),
        None => (b"", &[]),
    }
}

/// Puts a non-directory entry at `comps`, replacing whatever is there (a
/// later tar entry wins, as when extracting).
fn replace(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    comps: &[Vec<u8>],
    raw: &str,
    mut meta: Entry,
) -> Result<i64> {
    let (name, parent) = split_last(comps);
    let parent_id = tree.ensure_dir(parent, lower).map_err(|e| match e {
        PlaceError::Catalog(c) => PublishError::from(c),
        PlaceError::Invalid(r) => ctx.entry_err(raw, r),
    })?;
    if let Some(old) = tree.b.lookup(parent_id, name)? {
        tree.remove(old.id, comps)?;
    }
    meta.name = name.to_vec();
    Ok(tree.b.insert(parent_id, &meta)?)
}

/// A tar hardlink: the new path shares the target's inode. The target is
/// an earlier entry of this layer or, failing that, a file of the layers
/// below, which is then copied up into this layer (as overlayfs and
/// containerd do), so that stacking the layer trees gives the flat tree.
fn hardlink(
    lower: Option<&CatalogBuilder>,
    ctx: &Errors,
    tree: &mut Tree,
    comps: &[Vec<u8>],
    raw: &str,
    target: &[Vec<u8>],
) -> Result<()> {
    let missing = || {
        ctx.entry_err(
            raw,
            format!("hardlink to missing target {}", display(target)),
        )
    };
    if target == comps {
        return Err(ctx.entry_err(raw, "hardlink to itself"));
    }
    let mut t = match resolve(&tree.b, target)? {
        Some(t) if t.flags & FLAG_IMPLICIT == 0 || !t.is_dir() => t,
        _ => {
            let low = match lower {
                Some(low) => resolve(low, target)?.ok_or_else(missing)?,
                None => return Err(missing()),
            };
            if low.is_dir() {
                return Err(
                    ctx.entry_err(raw, format!("hardlink to directory {}", display(target)))
                );
            }
            let mut copy = low;
            copy.hardlink = 0;
            copy.flags |= FLAG_COPYUP;
            let id = replace(lower, ctx, tree, target, raw, copy)?;
            tree.b.get(id)?.ok_or_else(missing)?
        }
    };
    if t.is_dir() {
        return Err(ctx.entry_err(raw, format!("hardlink to directory {}", display(target))));
    }
    if t.is_whiteout() {
        return Err(ctx.entry_err(
            raw,
            format!("hardlink to {}, which this layer deleted", display(target)),
        ));
    }
    if t.hardlink == 0 {
        t.hardlink = tree.b.new_hardlink_group();
        tree.b.update(t.id, &t)?;
    }
    t.flags &= !FLAG_COPYUP;
    replace(lower, ctx, tree, comps, raw, t)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"1700000000").unwrap(), (1_700_000_000, 0));
        assert_eq!(
            pax_time(b"1700000000.5").unwrap(),
            (1_700_000_000, 500_000_000)
        );
        assert_eq!(pax_time(b"1.123456789123").unwrap(), (1, 123_456_789));
        assert_eq!(pax_time(b"-1.5").unwrap(), (-2, 500_000_000));
        assert_eq!(pax_time(b"-0.5").unwrap(), (-1, 500_000_000));
        assert!(pax_time(b"abc").is_err());
        // Regression: flooring the smallest i64 overflowed (a panic in
        // debug builds, i64::MAX in release ones).
        assert!(pax_time(b"-9223372036854775808.5").is_err());
        assert_eq!(pax_time(b"-9223372036854775808").unwrap(), (i64::MIN, 0));
        assert!(pax_time(b"99999999999999999999").is_err());
        assert!(pax_time(b"1.2x").is_err());
    }
}
