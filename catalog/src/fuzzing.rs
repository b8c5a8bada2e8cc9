//! Entry points shared by the fuzz targets (`fuzz/`) and the stable tests
//! that replay their corpora (`tests/it/fuzz_seeds.rs`). Not a stable API.
//!
//! Each function takes arbitrary bytes and must return without panicking,
//! whatever the bytes are: a panic here is a bug in the code under test (or
//! a broken invariant that the function asserts on purpose).

use std::rc::Rc;

use ed25519_dalek::SigningKey;

use crate::catalog::{Catalog, Entry, ROOT_ID};
use crate::manifest::Manifest;
use crate::namespace::{CatalogLoader, Namespace};
use crate::{Error, ObjectId, Result};

/// Entries visited per walk: fuzz inputs are small, this only bounds the
/// work a pathological database can cause.
const MAX_ENTRIES: usize = 10_000;

/// Names looked up in every directory visited (real names of the seeds and
/// some that a reader must handle).
const NAMES: [&[u8]; 6] = [b"etc", b"bin", b"hello.txt", b"", b".", b"\xff\x00/"];

/// The key the `manifest` target verifies with: `SigningKey::from_bytes(&[7; 32])`.
/// Its seeds are signed with it, so mutations reach the signature check.
pub fn manifest_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Target `catalog`: the bytes as a decoded catalog object. Opens them as
/// the reader does (in memory, then from a file as the node cache does)
/// and, if that succeeds, runs every query of [`Catalog`] and a namespace
/// walk over them.
pub fn catalog_bytes(data: &[u8]) {
    let id = ObjectId::of(data);
    // The same bytes as an encoded object: refused cheaply unless zstd.
    let _ = crate::object::decode_with_limit(&id, data, 1 << 20);
    let Ok(cat) = Catalog::from_bytes(id, data) else {
        return;
    };
    exercise(&cat);
    if let Ok(ns) = Namespace::new(OneCatalog(Rc::new(cat)), &id) {
        walk_namespace(&ns);
    }

    // The node cache opens verified catalogs from files (`immutable=1`).
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("catalog");
    if std::fs::write(&path, data).is_ok() {
        if let Ok(cat) = Catalog::open_path(id, &path) {
            exercise(&cat);
        }
    }
}

/// Every query of the reader; errors are fine, panics and hangs are not.
fn exercise(cat: &Catalog) {
    let _ = (cat.id(), cat.kind().as_str(), cat.path());
    for key in ["format_version", "kind", "path", "diff_id", "entries", ""] {
        let _ = cat.property(key);
    }
    let _ = cat.root();
    let _ = cat.entry_count();
    let _ = cat.images();
    for name in ["local/app:1", "local/app:1+linux-amd64", ""] {
        let _ = cat.image(name);
    }
    let _ = cat.image_by_digest(&format!("sha256:{}", "0".repeat(64)));
    let _ = cat.retired_images();
    let _ = cat.revision_tags();
    let _ = cat.hardlink_representatives();
    for id in [i64::MIN, -1, 0, ROOT_ID, 2, 3, i64::MAX] {
        let _ = cat.get(id);
        let _ = cat.children(id);
    }
    let mut dirs = Vec::new();
    let mut seen = 0usize;
    let _ = cat.for_each_entry(|e| {
        seen += 1;
        touch(&e);
        if e.is_dir() && dirs.len() < 64 {
            dirs.push(e.id);
        }
        let _ = cat.lookup(e.parent, &e.name);
        if seen >= MAX_ENTRIES {
            return Err(Error::InvalidCatalog {
                catalog: cat.id().to_hex(),
                reason: "fuzzing: enough entries".into(),
            });
        }
        Ok(())
    });
    for dir in dirs {
        for name in NAMES {
            let _ = cat.lookup(dir, name);
        }
        let mut n = 0usize;
        let _ = cat.for_each_child(dir, |e| {
            n += 1;
            touch(&e);
            if n >= MAX_ENTRIES {
                return Err(Error::NotFound {
                    path: "fuzzing: enough children".into(),
                });
            }
            Ok(())
        });
    }
}

/// The derived views of an entry that readers compute.
fn touch(e: &Entry) {
    let _ = (e.file_type(), e.is_dir(), e.perm(), e.is_whiteout());
    let _ = (e.is_opaque(), e.device(), e.xattr(b"user.x"));
}

/// Loads only the catalog under test (by its own id: a catalog that nests
/// itself is followed as deep as the paths walked).
struct OneCatalog(Rc<Catalog>);

impl CatalogLoader for OneCatalog {
    fn load(&self, id: &ObjectId) -> Result<Rc<Catalog>> {
        if *id == self.0.id() {
            Ok(self.0.clone())
        } else {
            Err(Error::MissingObject(*id))
        }
    }
}

fn walk_namespace(ns: &Namespace<OneCatalog>) {
    for path in [
        "/",
        "/etc",
        "/etc/hello.txt",
        "/bin/../etc",
        "/images",
        "//x/./y",
    ] {
        let _ = ns.resolve(path);
    }
    let Ok(root) = ns.root() else {
        return;
    };
    // Breadth-first, bounded: a catalog may nest itself.
    let mut todo = vec![(root, 0u32)];
    let mut visited = 0usize;
    while let Some((node, depth)) = todo.pop() {
        visited += 1;
        if visited > 256 || depth > 8 || !node.entry.is_dir() {
            continue;
        }
        for name in NAMES {
            let _ = ns.lookup(&node, name);
        }
        if let Ok(children) = ns.children(&node) {
            for c in children.into_iter().take(32) {
                todo.push((c, depth + 1));
            }
        }
    }
}

/// Target `manifest`: the bytes as a `.stratum/manifest` file. Parses them
/// without and with the signature check ([`manifest_key`] and another key).
/// A manifest that parses must be canonical: its signed body is exactly
/// what signing the parsed manifest produces, so that one manifest has one
/// encoding and the signed bytes are unambiguous.
pub fn manifest_bytes(data: &[u8]) {
    let key = manifest_key();
    let verified = Manifest::verify(data, &key.verifying_key());
    let _ = Manifest::verify(data, &SigningKey::from_bytes(&[8; 32]).verifying_key());
    let Ok((m, body, _sig)) = Manifest::parse_unverified(data) else {
        assert!(verified.is_err(), "verify accepted what parse refused");
        return;
    };
    let signed = m.sign(&key);
    assert!(
        signed.starts_with(body) && signed[body.len()..].starts_with(b"signature "),
        "manifest body is not canonical: {:?} parses as {m:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        Manifest::verify(&signed, &key.verifying_key())
            .ok()
            .as_ref(),
        Some(&m),
        "a re-signed manifest does not verify as itself"
    );
    if let Ok(v) = verified {
        assert_eq!(v, m, "verify and parse_unverified disagree");
        assert_eq!(
            signed, data,
            "a verified manifest is not what signing it gives"
        );
    }
}

/// The same catalog with `page_size`-byte pages (`VACUUM`), for seed
/// corpora: a real catalog of 4096-byte pages is mostly empty space, which
/// a fuzzer mutates for nothing. Readers must not depend on the page size
/// (docs/FORMAT.md §4.1), so the result is still a valid catalog.
pub fn repage(bytes: &[u8], page_size: u32) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let path = dir.path().join("catalog");
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    let sql = |source| Error::Sqlite {
        catalog: "seed".into(),
        source,
    };
    let conn = rusqlite::Connection::open(&path).map_err(sql)?;
    conn.execute_batch(&format!("PRAGMA page_size = {page_size}; VACUUM;"))
        .map_err(sql)?;
    drop(conn);
    std::fs::read(&path).map_err(|e| Error::io(&path, e))
}
