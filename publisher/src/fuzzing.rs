//! Entry points shared by the fuzz targets (`fuzz/`) and the stable tests
//! that replay their corpora (`tests/it/fuzz_seeds.rs`). Not a stable API.
//!
//! Each function takes arbitrary bytes and must return without panicking:
//! bad input is a clean error. The functions also assert what must hold
//! when the input is accepted (a layer that ingests gives catalogs that
//! `stratum check` would pass); a failed assertion is a bug too.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_catalog::backend::LocalDir;
use stratum_catalog::catalog::{
    Catalog, CatalogBuilder, CatalogKind, Data, Entry, FileType, ROOT_ID,
};
use stratum_catalog::{ObjectId, ObjectKind, Store};

use crate::error::{PublishError, Result};
use crate::ingest::{ingest_layer, IngestStats, LayerContext};
use crate::objects::ObjectWriter;
use crate::source::decompress::{oci_media_type, sniff, Decoder};
use crate::source::{Compression, Digest, LayerDescriptor, LayerStream, Sha256};
use crate::wishlist::{glob_matches, ImageRef, Platforms, Target, ThinPattern, ThinVars, Wishlist};

/// The image name errors of the fuzzed layers carry.
const IMAGE: &str = "fuzz/layer:1";

/// A layer whose tar is larger than this once decompressed is skipped: the
/// fuzzer would spend its time on decompression bombs, which the real path
/// handles by streaming (bounded memory), not by refusing.
pub const MAX_UNCOMPRESSED: u64 = 16 << 20;

/// Every compression a layer blob may have.
pub const COMPRESSIONS: [Compression; 3] =
    [Compression::None, Compression::Gzip, Compression::Zstd];

/// Target `ingest_layer`: the bytes as a layer blob, as a plain tar and,
/// if they start like one, as gzip or zstd. (Any other blob fails a
/// decoder at its first bytes, before ingestion sees an entry; skipping
/// those runs makes the target three times faster.)
pub fn ingest_bytes(data: &[u8]) {
    for c in COMPRESSIONS {
        if c == Compression::None || sniff(data) == c {
            let _ = ingest_as(data, c);
        }
    }
}

/// Ingests `data` as a layer blob compressed with `compression`, through
/// the real streaming path ([`LayerStream`] then [`ingest_layer`]), on top
/// of a small fixed base layer, into a throw-away repository in a temp dir;
/// then merges it into a flat tree as a publish does and checks both trees.
///
/// `Ok(None)`: skipped, the tar would be over [`MAX_UNCOMPRESSED`]. The
/// descriptor declares the blob's true size, digest and diff_id, so the
/// checks at the end of the stream pass and ingestion runs to its end.
pub fn ingest_as(data: &[u8], compression: Compression) -> Result<Option<IngestStats>> {
    let Some(diff_id) = diff_id_of(data, compression) else {
        return Ok(None);
    };
    let tmp = tempfile::tempdir().map_err(|e| io_err(&std::env::temp_dir(), e))?;
    let result = ingest_in(tmp.path(), data, compression, diff_id);
    check_temp_dir(tmp.path());
    result.map(Some)
}

fn ingest_in(
    dir: &Path,
    data: &[u8],
    compression: Compression,
    diff_id: Digest,
) -> Result<IngestStats> {
    let repo = dir.join("repo");
    let scratch = dir.join("scratch");
    for d in [&repo, &scratch] {
        std::fs::create_dir(d).map_err(|e| io_err(d, e))?;
    }
    let store = Store::new(Arc::new(LocalDir::open(&repo)?));
    let mut objects = ObjectWriter::new(store.clone())?;

    // The base layer, and the flat tree of it that the fuzzed layer is
    // ingested against (hardlinks to lower files, implicit directories).
    let base = base_layer();
    let base_layer = LayerDescriptor {
        index: 0,
        digest: Digest::of(&base),
        diff_id: Digest::of(&base),
        media_type: oci_media_type(Compression::None).to_owned(),
        size: base.len() as u64,
        compression: Compression::None,
    };
    let mut root = Entry::new(FileType::Directory, 0o755);
    root.mtime = 0;
    let mut flat = CatalogBuilder::create(
        &scratch,
        CatalogKind::Flat,
        &format!("/flat/00/{}", "0".repeat(64)),
        &root,
    )?;
    let (base_id, _) = ingest_one(&scratch, &base_layer, base, None, &mut objects, &mut flat)?;

    let layer = LayerDescriptor {
        index: 1,
        digest: Digest::of(data),
        diff_id,
        media_type: oci_media_type(compression).to_owned(),
        size: data.len() as u64,
        compression,
    };
    let (layer_id, stats) = ingest_one(
        &scratch,
        &layer,
        data.to_vec(),
        Some(&base_id),
        &mut objects,
        &mut flat,
    )?;
    let mut flat_file = flat.finish_file()?;
    let flat_id = objects.put_file(ObjectKind::Catalog, flat_file.as_file_mut())?;
    objects.flush()?;

    // What ingestion accepted must be a valid tree (`stratum check`).
    let problems: Vec<String> = [(layer_id, "layer"), (flat_id, "flat")]
        .into_iter()
        .flat_map(|(id, what)| match store.load_catalog(&id) {
            Ok(cat) => check_tree(&store, &cat)
                .into_iter()
                .map(|p| format!("{what} tree: {p}"))
                .collect(),
            Err(e) => vec![format!("{what} catalog {id} does not load: {e}")],
        })
        .collect();
    assert!(
        problems.is_empty(),
        "an accepted {compression} layer gave invalid trees:\n{}",
        problems.join("\n")
    );
    Ok(stats)
}

/// Streams and ingests one layer on top of `flat`, stores its catalog and
/// applies it to `flat`; returns the catalog's id.
fn ingest_one(
    scratch: &Path,
    layer: &LayerDescriptor,
    blob: Vec<u8>,
    base: Option<&ObjectId>,
    objects: &mut ObjectWriter,
    flat: &mut CatalogBuilder,
) -> Result<(ObjectId, IngestStats)> {
    let stream = LayerStream::spawn(IMAGE, layer, Box::new(Cursor::new(blob)))?;
    let ctx = LayerContext {
        image: IMAGE,
        layer,
        tmp_dir: scratch,
        lower: base.map(|_| &*flat),
    };
    let (mut file, stats) = ingest_layer(&ctx, stream, objects, &|_| {})?;
    let id = objects.put_file(ObjectKind::Catalog, file.as_file_mut())?;
    let cat = Catalog::open_path(id, file.path())?;
    let mut origins = std::collections::HashMap::new();
    crate::flat::apply_layer(flat, &mut origins, &cat, 0, &mut |id| {
        Err(stratum_catalog::Error::MissingObject(*id))
    })?;
    Ok((id, stats))
}

/// The diff_id of `data` decompressed as `compression` (of what comes out
/// before an error, if it is corrupt); `None` when that is too large.
fn diff_id_of(data: &[u8], compression: Compression) -> Option<Digest> {
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let Ok(mut decoder) = Decoder::new(compression, data) else {
        return Some(hash.finish());
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) | Err(_) => return Some(hash.finish()),
            Ok(n) => {
                total += n as u64;
                if total > MAX_UNCOMPRESSED {
                    return None;
                }
                hash.update(buf.get(..n).unwrap_or_default());
            }
        }
    }
}

fn io_err(path: &Path, error: std::io::Error) -> PublishError {
    PublishError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Nothing may appear in the temp dir but objects, the backend's temp
/// files and catalogs being built: a tar path never reaches the file system.
fn check_temp_dir(dir: &Path) {
    let mut todo = vec![PathBuf::from(dir)];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = if is_dir {
                matches!(
                    rel.as_str(),
                    "repo" | "scratch" | "repo/data" | "repo/.stratum" | "repo/.stratum/tmp"
                ) || (rel.starts_with("repo/data/") && name.len() == 2)
            } else {
                (rel.starts_with("repo/data/") && ObjectId::parse_path(&rel[5..]).is_ok())
                    || rel.starts_with("repo/.stratum/tmp/")
                    || (rel.starts_with("scratch/") && name.starts_with("catalog-"))
            };
            assert!(ok, "unexpected file in the throw-away repository: {rel}");
            if is_dir {
                todo.push(p);
            }
        }
    }
}

/// The per-entry rules of `stratum check` (catalog/src/verify.rs) and the
/// tree rules a walk relies on; returns the problems found.
pub fn check_tree(store: &Store, cat: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    let walked = cat.for_each_entry(|e| {
        let at = format!("entry {} {:?}", e.id, String::from_utf8_lossy(&e.name));
        if e.id == ROOT_ID {
            if !e.is_dir() || e.parent != 0 || !e.name.is_empty() {
                problems.push(format!("{at}: bad root"));
            }
        } else {
            if e.name.is_empty()
                || e.name == b"."
                || e.name == b".."
                || e.name.contains(&b'/')
                || e.name.contains(&0)
            {
                problems.push(format!("{at}: invalid name"));
            }
            match cat.get(e.parent)? {
                Some(p) if p.is_dir() => {}
                Some(_) => problems.push(format!("{at}: parent {} is not a directory", e.parent)),
                None => problems.push(format!("{at}: parent {} is missing", e.parent)),
            }
        }
        let Some(ft) = e.file_type() else {
            problems.push(format!("{at}: unknown file type in mode {:o}", e.mode));
            return Ok(());
        };
        if e.nested.is_some() {
            problems.push(format!("{at}: nested catalog in a layer or flat tree"));
        }
        if ft == FileType::Directory && e.hardlink != 0 {
            problems.push(format!("{at}: hardlinked directory"));
        }
        if (ft == FileType::Symlink) != e.symlink.is_some() {
            problems.push(format!(
                "{at}: symlink target on a non-symlink or none on a symlink"
            ));
        }
        let size = e.size;
        match (&e.data, ft) {
            (Data::None, FileType::Regular) if size != 0 => {
                problems.push(format!("{at}: {size} bytes declared but no data"))
            }
            (Data::None, _) => {}
            (_, t) if t != FileType::Regular => {
                problems.push(format!("{at}: data on a non-regular file"))
            }
            (Data::Inline(b), _) if b.len() as u64 != size => problems.push(format!(
                "{at}: inline data is {} bytes, size says {size}",
                b.len()
            )),
            (Data::Inline(_), _) => {}
            (Data::Object(id), _) => check_object(store, id, size, &at, &mut problems),
            (Data::Chunks(chunks), _) => {
                let total: u64 = chunks.iter().map(|c| c.size).sum();
                if total != size {
                    problems.push(format!("{at}: chunks add up to {total}, size says {size}"));
                }
                for c in chunks {
                    check_object(store, &c.id, c.size, &at, &mut problems);
                }
            }
        }
        Ok(())
    });
    if let Err(e) = walked {
        problems.push(format!("walking the catalog: {e}"));
    }
    problems
}

fn check_object(store: &Store, id: &ObjectId, size: u64, at: &str, problems: &mut Vec<String>) {
    match store.get(id, ObjectKind::Content) {
        Ok(b) if b.len() as u64 == size => {}
        Ok(b) => problems.push(format!(
            "{at}: object {id} is {} bytes, not {size}",
            b.len()
        )),
        Err(e) => problems.push(format!("{at}: object {id}: {e}")),
    }
}

/// The fixed base layer under every fuzzed layer: a little of everything a
/// layer above may refer to (hardlinks to lower files, whiteouts, opaque
/// directories, a directory replaced by a file).
pub fn base_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, ty: tar::EntryType, mode: u32, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if ty == tar::EntryType::Char {
            // /dev/null (0:0 would be a whiteout).
            let _ = h.set_device_major(1);
            let _ = h.set_device_minor(3);
        }
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            // Short ASCII names: cannot fail.
            let _ = h.set_link_name(l);
        }
        let _ = h.set_path(path);
        h.set_cksum();
        let _ = b.append(&h, data);
    };
    use tar::EntryType as T;
    add("etc/", T::Directory, 0o755, None, b"");
    add("etc/hello.txt", T::Regular, 0o644, None, b"hello\n");
    add("etc/hard", T::Link, 0o644, Some("etc/hello.txt"), b"");
    add("bin", T::Symlink, 0o777, Some("usr/bin"), b"");
    add("usr/bin/", T::Directory, 0o755, None, b"");
    add("usr/bin/tool", T::Regular, 0o755, None, &[b'x'; 2000]);
    add("var/lib/state", T::Regular, 0o600, None, b"state");
    add("dev-null", T::Char, 0o666, None, b"");
    add("fifo", T::Fifo, 0o600, None, b"");
    b.into_inner().unwrap_or_default()
}

/// Target `wishlist`: the bytes as a wishlist file (and as one image
/// reference and one thin-image pattern). What parses must be usable: every
/// reference prints back to itself, every non-glob input has its publish
/// name, the thin pattern renders for every input.
pub fn wishlist_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ImageRef::parse(text.trim()) {
        check_reference(&r);
    }
    let _ = ThinPattern::parse(text.trim());
    let Ok(w) = Wishlist::parse(text, "/srv/wishlists") else {
        return;
    };
    let _ = w.platforms.to_string();
    for host in w.registries.keys() {
        let _ = w.registry(host);
    }
    for input in &w.images {
        check_reference(&input.source);
        let _ = (input.label(), input.is_glob(), input.platforms.to_string());
        match &input.source.target {
            Target::Glob(g) => {
                // Valid tags: one the glob selects must give a name.
                for tag in ["latest", "1.0", "3.12.1", "a", "_", &"a".repeat(128)] {
                    if glob_matches(g, tag) {
                        if let Err(e) = input.publish_name_for(tag) {
                            panic!("{}: selects {tag:?} but cannot name it: {e}", input.label());
                        }
                    }
                }
            }
            _ => {
                let name = input.publish_name();
                assert!(
                    name.is_some(),
                    "{}: accepted, but has no publish name ({:?}:{:?})",
                    input.label(),
                    input.name,
                    input.publish_tag()
                );
            }
        }
    }
    if let Some(thin) = &w.thin_images {
        let again = ThinPattern::parse(thin.pattern.as_str());
        assert_eq!(
            again.ok().as_ref(),
            Some(&thin.pattern),
            "pattern does not re-parse"
        );
        for input in &w.images {
            let tag = input.publish_tag().unwrap_or_else(|| "1.0".to_owned());
            let platforms = match &input.platforms {
                Platforms::All => vec!["linux/amd64".to_owned()],
                Platforms::List(l) => l.iter().map(|p| p.to_string()).collect(),
            };
            for platform in &platforms {
                let vars = ThinVars {
                    registry: &input.source.host,
                    repository: &input.source.repository,
                    name: &input.name,
                    tag: &tag,
                    digest:
                        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                    platform,
                };
                let _ = thin.pattern.render(&vars);
            }
        }
    }
}

fn check_reference(r: &ImageRef) {
    let s = r.to_string();
    match ImageRef::parse(&s) {
        Ok(again) => assert_eq!(&again, r, "{s:?} re-parses differently"),
        Err(e) => panic!("{s:?}, printed from a parsed reference, does not parse: {e}"),
    }
    let _ = (r.default_name(), r.without_scheme(), r.tag(), r.digest());
}
