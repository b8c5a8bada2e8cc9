//! Concurrent writers and readers of one repository directory
//! (docs/SECURITY.md, "Concurrent publishers, garbage collection and
//! readers"): publishers queue on the repository lock, every one of them
//! lands in its own revision, and a reader running meanwhile always sees a
//! complete, verified revision.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::OsStr;

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{tempdir, TestRepo};

#[test]
fn concurrent_publishers_serialize_and_readers_see_whole_revisions() {
    let repo = TestRepo::new("concurrency.test");
    let tmp = tempdir();
    let l = Layout::create(&tmp.path().join("layout"));
    l.add_image(
        "base",
        &[Layer::gzip(&[TarEntry::file(b"base", b"base\n")])],
    );
    repo.publish_one(
        &format!("oci:{}:base", l.dir.display()),
        Some("test/base:1"),
    );
    let start = repo.revision();
    const N: usize = 4;
    for i in 0..N {
        let seed = support::fsutil::Rng::new(i as u64 + 100).bytes(300_000);
        l.add_image(
            &format!("t{i}"),
            &[Layer::gzip(&[
                TarEntry::file(format!("file-{i}").as_bytes(), format!("{i}\n").as_bytes()),
                TarEntry::file(b"big", &seed),
            ])],
        );
    }
    let publishers: Vec<_> = (0..N)
        .map(|i| {
            let args: Vec<String> = vec![
                "publish".into(),
                format!("oci:{}:t{i}", l.dir.display()),
                "--repo".into(),
                repo.repo.display().to_string(),
                "--key".into(),
                repo.key.display().to_string(),
                "--as".into(),
                format!("test/c{i}:1"),
            ];
            std::thread::spawn(move || support::stratum_raw(args))
        })
        .collect();
    // Read while they write: every pull sees a whole revision.
    let mut pulls = 0;
    while !publishers.iter().all(|p| p.is_finished()) || pulls == 0 {
        let dest = repo.scratch("reader");
        let out = support::stratum_raw([
            OsStr::new("pull"),
            repo.repo.as_os_str(),
            OsStr::new("--image"),
            OsStr::new("test/base:1"),
            dest.as_os_str(),
        ]);
        out.assert_no_panic();
        out.assert_success();
        assert_eq!(std::fs::read(dest.join("base")).unwrap(), b"base\n");
        repo.check();
        pulls += 1;
    }
    for p in publishers {
        p.join().unwrap().assert_success();
    }
    eprintln!("{pulls} pulls and checks ran during the publishes");
    assert_eq!(repo.revision(), start + N as u64);
    for i in 0..N {
        let dest = repo.scratch("final");
        repo.pull_image(&format!("test/c{i}:1"), &dest);
        assert_eq!(
            std::fs::read(dest.join(format!("file-{i}"))).unwrap(),
            format!("{i}\n").as_bytes()
        );
    }
    repo.check();
}
