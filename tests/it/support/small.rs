//! Small hand-built images with known bytes, published into a
//! [`TestRepo`](super::TestRepo) without external tools: many small files
//! (one content object each), an inline file, a medium file and optionally
//! a chunked one. Used by `tests/it/replicate.rs` and `tests/it/fanout.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::fsutil::Rng;
use super::oci::{Layer, Layout, TarEntry};
use super::TestRepo;

/// Regular files of an image: relative path → bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

/// What to put in an image.
#[derive(Clone, Debug)]
pub struct SmallImage {
    /// Seeds the random bytes: the same seed gives the same files.
    pub seed: u64,
    /// Files of 4–24 KiB (one object each), spread over 8 directories.
    pub files: usize,
    /// Size of `big/huge.bin`, a chunked file, if > 0.
    pub big: usize,
    /// Files copied into the image as they are (shared with other images).
    pub extra: Files,
}

impl SmallImage {
    pub fn new(seed: u64, files: usize) -> SmallImage {
        SmallImage {
            seed,
            files,
            big: 0,
            extra: Files::new(),
        }
    }

    /// The files of the image.
    pub fn files(&self) -> Files {
        let mut rng = Rng::new(self.seed);
        let mut files = Files::new();
        files.insert(
            "etc/hostname".into(),
            format!("small-{}\n", self.seed).into_bytes(),
        );
        files.insert("etc/motd".into(), rng.bytes(6000));
        for i in 0..self.files {
            let len = 4200 + rng.below(20_000) as usize;
            files.insert(format!("docs/d{}/f{i:03}", i % 8), rng.bytes(len));
        }
        files.insert("big/mid.bin".into(), rng.bytes(3 << 19));
        if self.big > 0 {
            files.insert("big/huge.bin".into(), rng.bytes(self.big));
        }
        files.extend(self.extra.clone());
        files
    }

    /// Builds the image as a one-layer OCI layout (uncompressed layer) in a
    /// scratch directory of `repo` and publishes it as `name`. Returns its
    /// files.
    pub fn publish(&self, repo: &TestRepo, name: &str) -> Files {
        let files = self.files();
        let layout = Layout::create(&repo.scratch("layout"));
        layout.add_image("1", &[Layer::uncompressed(&tar_entries(&files))]);
        repo.publish_one(&format!("oci:{}:1", layout.dir.display()), Some(name));
        files
    }
}

/// The tar entries of `files`: their directories, the files, a symlink.
fn tar_entries(files: &Files) -> Vec<TarEntry> {
    let mut entries = vec![TarEntry::dir(b"./")];
    let mut dirs = BTreeSet::new();
    for rel in files.keys() {
        let mut p = Path::new(rel).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_str().expect("utf-8 path").to_string());
            p = d.parent();
        }
    }
    for d in &dirs {
        entries.push(TarEntry::dir(format!("{d}/").as_bytes()));
    }
    for (rel, bytes) in files {
        entries.push(TarEntry::file(rel.as_bytes(), bytes));
    }
    entries.push(TarEntry::symlink(b"lnk", b"etc/motd"));
    entries
}

/// Reads every file of `files` under `root` and checks its bytes, and that
/// `root` holds no other regular file. Returns the bytes read.
pub fn check_files(root: &Path, files: &Files, what: &str) -> u64 {
    let mut bad = Vec::new();
    let mut total = 0u64;
    for (rel, want) in files {
        match std::fs::read(root.join(rel)) {
            Ok(got) if &got == want => total += got.len() as u64,
            Ok(got) => bad.push(format!(
                "{rel}: {} bytes, not the {} expected (or different bytes)",
                got.len(),
                want.len()
            )),
            Err(e) => bad.push(format!("{rel}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} files read wrong:\n  {}",
        bad.len(),
        files.len(),
        bad.join("\n  ")
    );
    let found: BTreeSet<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap_or_else(|e| panic!("{what}: walking {}: {e}", root.display())))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .expect("under root")
                .to_str()
                .expect("utf-8 path")
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        found,
        want,
        "{what}: the regular files under {}",
        root.display()
    );
    total
}
