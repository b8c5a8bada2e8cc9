//! `stratum compact`: denser objects, same ids, nothing else changes.

#![allow(clippy::unwrap_used)]

use crate::support;

use crate::support::compare::CompareOpts;
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{stratum, tempdir, TestRepo};

#[test]
fn compact_rewrites_objects_smaller_and_the_repository_still_verifies() {
    let tmp = tempdir();
    let layout = Layout::create(&tmp.path().join("img"));
    let text: Vec<u8> = (0..60_000u32)
        .flat_map(|i| format!("line {} of a fairly repetitive file\n", i % 997).into_bytes())
        .collect();
    layout.add_image(
        "t",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"big.txt", &text),
            TarEntry::file(b"mid.txt", &text[..50_000]),
            TarEntry::file(b"small", b"tiny"),
        ])],
    );
    let repo = TestRepo::new("compact.test");
    repo.publish_one(&format!("oci:{}:t", layout.dir.display()), Some("test/c:t"));
    let before = repo.scratch("before");
    repo.pull_image("test/c:t", &before);
    let revision = repo.revision();
    let manifest = repo.manifest_bytes();

    let out = stratum([
        "compact",
        repo.repo.to_str().unwrap(),
        "--level",
        "19",
        "--json",
    ])
    .json();
    assert!(out["examined"].as_u64().unwrap() >= 2, "{out}");
    assert!(out["rewritten"].as_u64().unwrap() >= 1, "{out}");
    assert!(
        out["bytes_after"].as_u64().unwrap() < out["bytes_before"].as_u64().unwrap(),
        "{out}"
    );

    repo.check();
    assert_eq!(repo.revision(), revision, "compaction publishes nothing");
    assert_eq!(repo.manifest_bytes(), manifest);
    let after = repo.scratch("after");
    repo.pull_image("test/c:t", &after);
    support::compare::assert_trees_equal(
        &before,
        &after,
        &CompareOpts::default(),
        "pull before vs after compact",
    );

    assert!(
        !repo.repo.join(".stratum/dirty").exists(),
        "compaction leaves the repository clean"
    );
    // Done objects are not looked at again.
    let again = stratum(["compact", repo.repo.to_str().unwrap(), "--json"]).json();
    assert_eq!(again["rewritten"].as_u64(), Some(0), "{again}");
}
