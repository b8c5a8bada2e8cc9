//! Private keys left inside a repository directory by mistake.
//!
//! A repository directory is meant to be published: served by `stratum
//! serve` or any static server, copied, replicated. `stratum serve` serves
//! only the paths the format defines, so it does not serve a signing key kept
//! next to the data, but nginx configured more loosely, an `rsync` of the
//! directory or a backup would. Whoever gets that key can sign revisions that
//! every node accepts. So `init` and `serve` look for PEM private keys in the
//! directory and warn about each one.
//!
//! The object directories `data/<2 hex>/` are not looked into: they may hold
//! millions of files (a start-up cost for nothing, since only object-named
//! files there are ever served and the format's writers put nothing else
//! there), and neither is `.stratum/tmp/`, the writers' own scratch space.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Files larger than this are not read: a PEM private key is a few KiB (an
/// RSA 8192-bit one is about 6.5 KiB, stratum's own Ed25519 key 119 bytes).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Directory entries looked at before the scan stops, so that a huge
/// directory served by mistake costs a bounded start-up time.
const MAX_ENTRIES: usize = 100_000;

/// The PEM private keys found inside the local repository directory `repo`
/// (see the module header for what is looked at). Unreadable entries are
/// skipped: this is a warning, not a check that may fail.
pub fn private_keys_in(repo: &Path) -> Vec<PathBuf> {
    let walk = walkdir::WalkDir::new(repo)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !skipped_dir(repo, e));
    walk.take(MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| holds_private_key(e.path()))
        .map(|e| e.into_path())
        .collect()
}

/// Prints a warning on stderr for each private key inside `repo`. Printed
/// rather than logged: a leaked signing key must not hide behind a
/// `RUST_LOG` filter chosen for something else (e.g. the access log).
pub fn warn_about_private_keys(repo: &Path) {
    for key in private_keys_in(repo) {
        eprintln!(
            "warning: {} is a private key inside the repository {}: move it out. \
             `stratum serve` does not serve it, but another server, a copy or a backup \
             of the directory would, and whoever has the signing key can sign revisions \
             that every node accepts",
            key.display(),
            repo.display()
        );
    }
}

/// `data/<2 hex>` and `.stratum/tmp`, relative to `repo`.
fn skipped_dir(repo: &Path, e: &walkdir::DirEntry) -> bool {
    if !e.file_type().is_dir() {
        return false;
    }
    let Ok(rel) = e.path().strip_prefix(repo) else {
        return false;
    };
    let Some(rel) = rel.to_str() else {
        return false;
    };
    if rel == stratum_catalog::layout::TMP_DIR {
        return true;
    }
    rel.strip_prefix("data/").is_some_and(|d| {
        d.len() == 2
            && d.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `path` is a small regular file holding a PEM private key block.
fn holds_private_key(path: &Path) -> bool {
    // Never follow a symlink swapped in, never block on a fifo swapped in.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= MAX_KEY_FILE => {}
        _ => return false,
    }
    let mut text = Vec::new();
    if file.take(MAX_KEY_FILE).read_to_end(&mut text).is_err() {
        return false;
    }
    is_pem_private_key(&text)
}

/// Whether `text` has a PEM `BEGIN … PRIVATE KEY` line: PKCS#8 (what
/// `stratum keygen` writes), encrypted PKCS#8, and the RSA, EC, DSA and
/// OpenSSH forms.
fn is_pem_private_key(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n').any(|line| {
        let line = line.trim_ascii();
        line.starts_with(b"-----BEGIN ") && line.ends_with(b"PRIVATE KEY-----")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_private_keys_are_recognised() {
        for key in [
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\r\nx\r\n",
            "-----BEGIN RSA PRIVATE KEY-----\n",
            "-----BEGIN EC PRIVATE KEY-----\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\n",
            "a comment first\n-----BEGIN PRIVATE KEY-----\n",
        ] {
            assert!(is_pem_private_key(key.as_bytes()), "{key:?}");
        }
        for not_key in [
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN CERTIFICATE-----\n",
            "PRIVATE KEY",
            "",
        ] {
            assert!(!is_pem_private_key(not_key.as_bytes()), "{not_key:?}");
        }
    }

    #[test]
    fn finds_keys_outside_the_object_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        let key = b"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
        for dir in [".stratum/tmp", "data/ab", "data/notes", "keys/old"] {
            std::fs::create_dir_all(repo.join(dir)).unwrap();
        }
        for f in [
            "signing.key",
            "keys/old/k.pem",
            "data/notes/k",
            ".stratum/k",
        ] {
            std::fs::write(repo.join(f), key).unwrap();
        }
        // Not looked at: the object directories and the writers' scratch.
        std::fs::write(repo.join("data/ab/k"), key).unwrap();
        std::fs::write(repo.join(".stratum/tmp/k"), key).unwrap();
        // Not keys: a public key, a large file, a symlink to a key.
        std::fs::write(
            repo.join("signing.key.pub"),
            b"-----BEGIN PUBLIC KEY-----\n",
        )
        .unwrap();
        let mut big = key.to_vec();
        big.resize(MAX_KEY_FILE as usize + 1, b'\n');
        std::fs::write(repo.join("big"), big).unwrap();
        std::os::unix::fs::symlink(repo.join("signing.key"), repo.join("link")).unwrap();

        let mut found: Vec<String> = private_keys_in(repo)
            .iter()
            .map(|p| p.strip_prefix(repo).unwrap().display().to_string())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ".stratum/k",
                "data/notes/k",
                "keys/old/k.pem",
                "signing.key"
            ]
        );
    }
}
