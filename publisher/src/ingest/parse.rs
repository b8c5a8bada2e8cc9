//! The parser thread of ingestion: tar entries (PAX, GNU long names, sparse
//! files, xattrs) read from the decompressed layer under the header budget,
//! checked, and sent as rows and content chunks to the writer.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::limits::Limits;
use crate::source::LayerStream;
use crate::tree::split_path;

use super::pax::{link_name_bytes, metadata, path_bytes, Pax};
use super::*;

/// Slack over [`Limits::max_header_size`] for what the tar reader reads
/// between two entries besides extension records: header blocks, padding,
/// the end-of-archive blocks.
pub(super) const HEADER_SLACK: u64 = 8 * 512;

/// The tar reader's input: while the reader looks for the next entry it
/// may take only `budget` bytes. It holds PAX records and GNU long names
/// in memory whole, so without this one header declaring gigabytes (fed
/// by a compressible blob) would exhaust the memory.
pub(super) struct HeaderGuard<'s> {
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

pub(super) fn parse(
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
            let ty = entry.header().entry_type();
            // A global header is an entry of its own that applies to no
            // other (pax.rs); its records are not even read.
            let pax = if ty.is_pax_global_extensions() {
                Ok(Pax::default())
            } else {
                Pax::read(&mut entry)
            };
            let raw_path = path_bytes(&entry, pax.as_ref().ok()).into_owned();
            let raw = String::from_utf8_lossy(&raw_path).into_owned();
            let pax = pax.map_err(|r| ctx.entry_err(&raw, r))?;
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
                if ty.is_pax_global_extensions() {
                    break 'entry;
                }
                limits
                    .check_path(&raw_path)
                    .map_err(|r| ctx.entry_err(&raw, r))?;
                let mut comps = split_path(&raw_path).map_err(|r| ctx.entry_err(&raw, r))?;
                let meta = metadata(&entry, &pax).map_err(|r| ctx.entry_err(&raw, r))?;
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
                        let target = link_name_bytes(&entry, Some(&pax))
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
                        let target = link_name_bytes(&entry, Some(&pax))
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

pub(super) fn tar_error(e: std::io::Error) -> String {
    // A digest mismatch found at EOF travels inside an io::Error.
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}
