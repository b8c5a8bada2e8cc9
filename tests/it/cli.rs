//! The CLI contract of `stratum`: subcommands and their help, keygen and
//! init, info/images/ls/cat on empty and small repositories, and `check`
//! refusing corrupted objects and foreign or tampered manifests.
//! Needs neither root nor umoci: images are hand-built OCI layouts.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{digest_hex, stratum, stratum_fails, stratum_raw, tempdir, TestRepo};

const SUBCOMMANDS: &[&str] = &[
    "keygen",
    "init",
    "publish",
    "images",
    "info",
    "ls",
    "cat",
    "check",
    "pull",
    "serve",
    "thin",
    "mount",
    "umount",
    "replicate",
];

const HELLO: &[u8] = b"hello from a hand-built image\n";

/// A one-layer image `LAYOUT:1` in `dir/small`.
fn small_image(dir: &Path) -> Layout {
    let l = Layout::create(&dir.join("small"));
    l.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::dir(b"etc/"),
            TarEntry::file(b"etc/hello.txt", HELLO),
            TarEntry::symlink(b"etc/link", b"hello.txt"),
            TarEntry::file(b"big", &support::fsutil::Rng::new(9).bytes(300_000)),
        ])],
    );
    l
}

fn publish_small(repo: &TestRepo) -> serde_json::Value {
    let l = small_image(&repo.scratch("layout"));
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some("test/small:1"));
    repo.image("test/small:1")
}

fn args<'a>(repo: &'a TestRepo, sub: &'a str, rest: &'a [&'a str]) -> Vec<&'a OsStr> {
    let mut v = vec![OsStr::new(sub), repo.repo.as_os_str()];
    v.extend(rest.iter().map(OsStr::new));
    v
}

#[test]
fn help_works_for_every_subcommand() {
    let top = stratum(["--help"]).stdout_str();
    for sub in SUBCOMMANDS {
        assert!(
            top.contains(sub),
            "`stratum --help` does not list {sub}:\n{top}"
        );
        let out = stratum([sub, "--help"]);
        let text = out.stdout_str();
        assert!(
            text.to_lowercase().contains("usage"),
            "`stratum {sub} --help` prints no usage:\n{text}"
        );
    }
}

#[test]
fn unknown_subcommand_and_missing_arguments_fail_cleanly() {
    stratum_fails(["no-such-subcommand"]);
    stratum_fails(["publish"]);
    stratum_fails(["init"]);
    stratum_fails(["pull"]);
}

#[test]
fn keygen_writes_a_private_and_a_public_key() {
    let tmp = tempdir();
    let k1 = tmp.path().join("one.key");
    let k2 = tmp.path().join("two.key");
    stratum([OsStr::new("keygen"), k1.as_os_str()]);
    stratum([OsStr::new("keygen"), k2.as_os_str()]);
    let pub1 = tmp.path().join("one.key.pub");
    let (a, b) = (std::fs::read(&k1).unwrap(), std::fs::read(&pub1).unwrap());
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "private and public key files are the same");
    assert_ne!(
        a,
        std::fs::read(&k2).unwrap(),
        "two keygens made the same key"
    );
    // A private key should not be world-readable.
    let mode = std::fs::metadata(&k1).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "private key mode {mode:o} is readable by others"
    );
}

/// Regression (issue 12.8): `keygen` wrote `KEYFILE.pub` with
/// `fs::write`, which follows a symlink planted there and replaces whatever
/// it points at.
#[test]
fn keygen_does_not_write_the_public_key_through_a_symlink() {
    let tmp = tempdir();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let key = tmp.path().join("site.key");
    std::os::unix::fs::symlink(&victim, tmp.path().join("site.key.pub")).unwrap();
    let out = stratum_fails([OsStr::new("keygen"), key.as_os_str()]);
    assert!(
        out.stderr_str().contains("site.key.pub"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(
        !key.exists(),
        "a failed keygen left a private key without its public key"
    );
}

/// Regression (issue 12.8): an existing `.pub` was silently replaced.
#[test]
fn keygen_refuses_to_replace_an_existing_public_key() {
    let tmp = tempdir();
    let key = tmp.path().join("site.key");
    let public = tmp.path().join("site.key.pub");
    std::fs::write(&public, b"someone else's key\n").unwrap();
    stratum_fails([OsStr::new("keygen"), key.as_os_str()]);
    assert_eq!(std::fs::read(&public).unwrap(), b"someone else's key\n");
    assert!(!key.exists());
}

/// Regression (issue 12.8): the public key took its mode from the umask;
/// it must be 0644 (and the private key 0600) whatever the umask says.
#[test]
fn keygen_public_key_is_0644_whatever_the_umask() {
    let tmp = tempdir();
    for (umask, name) in [("077", "strict.key"), ("000", "loose.key")] {
        let key = tmp.path().join(name);
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" keygen \"$1\""))
            .arg(support::stratum_bin())
            .arg(&key);
        support::run_cmd(cmd).assert_success();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&key), 0o600, "umask {umask}: private key");
        assert_eq!(
            mode(&tmp.path().join(format!("{name}.pub"))),
            0o644,
            "umask {umask}: public key"
        );
    }
}

/// Regression (issue 12.11): `stratum images --json | head` and
/// `stratum info | head` panicked with a backtrace when the reader closed
/// the pipe; a CLI tool ends quietly instead.
#[test]
fn output_into_a_closed_pipe_ends_quietly_without_a_panic() {
    let repo = TestRepo::new("pipe.example.org");
    let img = publish_small(&repo);
    let big = format!("{}/big", img["flat_path"].as_str().unwrap());
    let r = repo.repo.to_str().unwrap();
    for argv in [
        vec!["images", r, "--json"],
        vec!["images", r],
        vec!["info", r],
        vec!["info", r, "--json"],
        vec!["ls", r, "/", "--json"],
        vec!["cat", r, &big],
    ] {
        // A pipe whose reading end is closed before stratum writes: every
        // write gets EPIPE, exactly what `| head` does once it has enough.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = std::process::Command::new(support::stratum_bin());
        cmd.args(&argv)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "stratum {argv:?} into a closed pipe: {stderr}"
        );
        assert!(
            out.status.success(),
            "stratum {argv:?}: {:?} {stderr}",
            out.status
        );
    }
}

/// Regression (issue 13 §6): `cat` through an `/images/...` symlink said
/// `"etc" is below a non-directory`; paths now resolve as a file system
/// would, through the image's symlink and through relative links inside
/// the image.
#[test]
fn cat_and_ls_follow_the_images_symlink_into_the_flat_tree() {
    let repo = TestRepo::new("follow.example.org");
    publish_small(&repo);
    let r = repo.repo.to_str().unwrap();
    let cat = stratum([
        OsStr::new("cat"),
        OsStr::new(r),
        OsStr::new("/images/test/small/1/etc/hello.txt"),
    ]);
    assert_eq!(cat.stdout, HELLO);
    let cat = stratum([
        OsStr::new("cat"),
        OsStr::new(r),
        OsStr::new("/images/test/small/1/etc/link"),
    ]);
    assert_eq!(cat.stdout, HELLO, "a relative link inside the image");
    let ls = stratum([
        OsStr::new("ls"),
        OsStr::new(r),
        OsStr::new("/images/test/small/1/etc"),
    ]);
    assert!(ls.stdout_str().contains("hello.txt"), "{}", ls.stdout_str());
    let out = stratum_fails([
        OsStr::new("cat"),
        OsStr::new(r),
        OsStr::new("/images/test/small/1/etc/hello.txt/x"),
    ]);
    assert!(
        out.stderr_str()
            .contains("/etc/hello.txt is not a directory"),
        "{}",
        out.stderr_str()
    );
}

/// Regression (issue 13 §6): a missing blob printed its cause twice
/// (`…: No such file or directory (os error 2): No such file or directory
/// (os error 2)`): an error that says its cause and also returns it as its
/// source is shown once.
#[test]
fn a_missing_blob_names_its_cause_once() {
    let repo = TestRepo::new("missing-blob.example.org");
    let l = small_image(&repo.scratch("layout"));
    // The largest blob is the layer (the manifest and config are small).
    let blobs = l.dir.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&layer).unwrap();
    let out = repo
        .publish_raw(&[&format!("oci:{}:1", l.dir.display())], None)
        .assert_clean_failure();
    let err = out.stderr_str();
    assert!(
        err.contains(layer.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn empty_repository() {
    let repo = TestRepo::new("empty.example.org");
    let info = repo.info();
    assert_eq!(info["name"], "empty.example.org", "{info}");
    assert_eq!(info["revision"], 1, "{info}");
    assert_eq!(info["format_version"], 2, "{info}");
    assert!(!info["timestamp"].is_null(), "{info}");
    let root = info["root_catalog"]
        .as_str()
        .unwrap_or_else(|| panic!("{info}"));
    assert_eq!(root.len(), 64, "root_catalog is a BLAKE3 hex id: {info}");
    assert!(root.bytes().all(|c| c.is_ascii_hexdigit()), "{info}");
    assert_eq!(repo.images(), serde_json::json!([]));
    assert!(repo.manifest_path().is_file());
    assert!(repo.repo.join("data").is_dir());
    repo.check();
    stratum(args(&repo, "ls", &["/"]));
    // The private key is not copied into the repository.
    let key = std::fs::read(&repo.key).unwrap();
    for f in walkdir::WalkDir::new(&repo.repo) {
        let f = f.unwrap();
        if f.file_type().is_file() {
            assert_ne!(
                std::fs::read(f.path()).unwrap(),
                key,
                "{} is the private key",
                f.path().display()
            );
        }
    }
}

#[test]
fn info_images_ls_cat_after_publish() {
    let repo = TestRepo::new("small.test");
    let img = publish_small(&repo);
    assert_eq!(repo.revision(), 2);
    let images = repo.images();
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    let flat = img["flat_path"].as_str().unwrap();
    let hex = digest_hex(img["manifest_digest"].as_str().unwrap());
    assert_eq!(flat, format!("/flat/{}/{hex}", &hex[..2]));
    let layers = support::check_image_object(&img, 1);

    let top = stratum(args(&repo, "ls", &["/"])).stdout_str();
    for d in ["flat", "layers", "images"] {
        assert!(top.contains(d), "`ls /` does not show {d}:\n{top}");
    }
    let etc = format!("{flat}/etc");
    let listing = stratum(args(&repo, "ls", &[&etc])).stdout_str();
    assert!(
        listing.contains("hello.txt") && listing.contains("link"),
        "{listing}"
    );
    let cat = stratum(args(&repo, "cat", &[&format!("{flat}/etc/hello.txt")]));
    assert_eq!(cat.stdout, HELLO);
    // The layer tree has the same file.
    let cat = stratum(args(
        &repo,
        "cat",
        &[&format!("{}/etc/hello.txt", layers[0])],
    ));
    assert_eq!(cat.stdout, HELLO);
    let big = stratum(args(&repo, "cat", &[&format!("{flat}/big")]));
    assert_eq!(big.stdout, support::fsutil::Rng::new(9).bytes(300_000));

    // Errors name the path.
    let missing = format!("{flat}/etc/no-such-file");
    let out = stratum_fails(args(&repo, "cat", &[&missing]));
    assert!(
        out.stderr_str().contains("no-such-file"),
        "{}",
        out.stderr_str()
    );
    let out = stratum_fails(args(&repo, "ls", &["/no-such-dir"]));
    assert!(
        out.stderr_str().contains("no-such-dir"),
        "{}",
        out.stderr_str()
    );
    let dest = repo.scratch("dest");
    let out = stratum_fails([
        OsStr::new("pull"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new("test/no-such-image:1"),
        dest.as_os_str(),
    ]);
    assert!(
        out.stderr_str().contains("no-such-image"),
        "{}",
        out.stderr_str()
    );
    repo.check();
}

#[test]
fn pull_image_small() {
    let repo = TestRepo::new("small.test");
    publish_small(&repo);
    let dest = repo.scratch("dest");
    repo.pull_image("test/small:1", &dest);
    assert_eq!(std::fs::read(dest.join("etc/hello.txt")).unwrap(), HELLO);
    assert_eq!(
        std::fs::read_link(dest.join("etc/link")).unwrap(),
        Path::new("hello.txt")
    );
    assert_eq!(std::fs::read(dest.join("big")).unwrap().len(), 300_000);
}

/// Flips one byte in the middle of `path` (making it writable first).
fn flip_byte(path: &Path) {
    let perms = std::fs::metadata(path).unwrap().permissions();
    let mut w = perms.clone();
    w.set_mode(perms.mode() | 0o200);
    std::fs::set_permissions(path, w).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, perms).unwrap();
}

/// The objects that the current manifest must reach: `files` minus a stored
/// copy of the current manifest itself (a repository may keep each manifest
/// as an object for the history chain; the *next* revision reaches it as
/// `previous`, the current one cannot).
fn reachable(repo: &TestRepo, files: Vec<PathBuf>) -> Vec<PathBuf> {
    let manifest = repo.manifest_bytes();
    files
        .into_iter()
        .filter(|f| {
            let raw = std::fs::read(f).unwrap();
            zstd::decode_all(&raw[..]).ok().as_deref() != Some(&manifest[..]) && raw != manifest
        })
        .collect()
}

/// Corrupts each file of `files` in turn: `check` must fail for each, and
/// pass again once the byte is flipped back.
fn check_catches_corruption_of(repo: &TestRepo, files: &[PathBuf]) {
    assert!(!files.is_empty(), "no object files to corrupt");
    let mut missed = Vec::new();
    for f in files {
        flip_byte(f);
        let out = repo.check_raw();
        out.assert_no_panic();
        if out.success() {
            missed.push(f.strip_prefix(&repo.repo).unwrap().to_path_buf());
        } else {
            out.assert_clean_failure_with_report();
        }
        flip_byte(f);
    }
    assert!(
        missed.is_empty(),
        "`check` passed although these objects were corrupted: {missed:?}"
    );
    repo.check();
}

#[test]
fn check_fails_after_corrupting_any_object_of_a_fresh_repository() {
    let repo = TestRepo::new("corrupt.test");
    repo.check();
    // Everything an empty repository holds is reachable from its manifest.
    let files = reachable(&repo, repo.data_files());
    check_catches_corruption_of(&repo, &files);
}

#[test]
fn check_fails_after_corrupting_any_object_of_a_publish() {
    let repo = TestRepo::new("corrupt.test");
    let before = repo.data_files();
    publish_small(&repo);
    repo.check();
    // What this publish wrote is reachable from the new revision (objects of
    // revision 1 may have become unreachable, so they are left alone).
    let new: Vec<PathBuf> = repo
        .data_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    check_catches_corruption_of(&repo, &reachable(&repo, new));
}

#[test]
fn check_fails_with_a_manifest_signed_by_another_key() {
    let a = TestRepo::new("same.name");
    let b = TestRepo::new("same.name");
    a.check();
    b.check();
    // Give A all of B's objects, so that only the signature can be wrong.
    for f in b.data_files() {
        let rel = f.strip_prefix(&b.repo).unwrap();
        let to = a.repo.join(rel);
        if !to.exists() {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    }
    a.check();
    std::fs::copy(b.manifest_path(), a.manifest_path()).unwrap();
    let out = a.check_raw().assert_clean_failure_with_report();
    eprintln!(
        "check says: {}{}",
        out.stdout_str().trim(),
        out.stderr_str().trim()
    );
}

#[test]
fn check_fails_after_tampering_with_the_manifest() {
    let repo = TestRepo::new("tamper.test");
    publish_small(&repo);
    repo.check();
    flip_byte(&repo.manifest_path());
    repo.check_raw().assert_clean_failure_with_report();
}

#[test]
fn check_fails_when_an_object_is_missing() {
    let repo = TestRepo::new("missing.test");
    let before = repo.data_files();
    publish_small(&repo);
    let new: Vec<PathBuf> = repo
        .data_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    let victim = new
        .iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let text = stratum_raw([OsStr::new("check"), repo.repo.as_os_str()])
        .assert_clean_failure_with_report();
    // --json: the sentences under `problems`, the same findings typed under
    // `findings`, each naming the missing object and the entry that uses it.
    let out = stratum_raw([
        OsStr::new("check"),
        repo.repo.as_os_str(),
        OsStr::new("--json"),
    ])
    .assert_clean_failure_with_report();
    let report = out.json();
    let problems = report["problems"].as_array().unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{report:#}");
    assert_eq!(problems.len(), findings.len(), "{report:#}");
    let victim_name = victim.file_name().unwrap().to_str().unwrap();
    let missing = findings
        .iter()
        .find(|f| {
            f["object"]
                .as_str()
                .is_some_and(|o| victim_name.starts_with(&o[2..]))
        })
        .unwrap_or_else(|| panic!("no finding names {victim_name}: {report:#}"));
    assert_eq!(missing["kind"], "bad_object", "{report:#}");
    assert!(
        missing["path"].as_str().unwrap().starts_with('/'),
        "{report:#}"
    );
    assert!(missing["entry"]["name"].is_string(), "{report:#}");
    assert!(
        !missing["detail"].as_str().unwrap().is_empty(),
        "{report:#}"
    );
    // The text lists the same sentences.
    for p in problems {
        let line = format!("PROBLEM: {}", p.as_str().unwrap());
        assert!(
            text.stdout_str().lines().any(|l| l == line),
            "{line}\n{}",
            text.stdout_str()
        );
    }
}
