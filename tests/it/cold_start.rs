//! A cold start's FUSE round trips (issue 16, D48): what the kernel keeps
//! for itself instead of asking the mount again, counted by the mount
//! (`stratum status --json`, `requests`).
//!
//! - a name that is not there is a negative entry the kernel keeps;
//! - `close` sends no flush after the first;
//! - a file whose object the node cache holds at open is read by the
//!   kernel from the cache's verified file (passthrough): no read request;
//! - opening the files of the prefetch list in a listed directory does not
//!   start the batching of that directory (the list brought them).
//!
//! Same image and server as `prefetch`. Needs root and `/dev/fuse`.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use stratum_fetcher::testing as http_server;

use crate::prefetch::{
    mount_args, object_path, pubkey, publish_image, publish_list, ready, wait_requested, IMAGE,
};
use crate::support::mount::{Mount, MountSource};
use crate::support::{stratum, TestRepo};

fn requests(m: &Mount) -> Value {
    let st = stratum([OsString::from("status"), m.path().into(), "--json".into()]).json();
    st["requests"].clone()
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("requests.{field}: {v}"))
}

/// Waits until the mount's prefetch has `n` objects in the cache.
fn wait_prefetched(m: &Mount, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = stratum([OsString::from("status"), m.path().into(), "--json".into()]).json();
        if st["prefetch"]["objects"].as_u64() >= Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "prefetch did not finish: {st}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn missing_names_flushes_and_cached_files_do_not_reach_the_mount_twice() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("cold-start.test");
    let files = publish_image(&repo, 7);
    let listed = ["lib/d0/f03.py", "lib/d0/f04.py"];
    // Listed too, but its cache file is made writable by others below.
    let shared = "lib/d0/f05.py";
    assert!(publish_list(&repo, &format!("{}\n{shared}", listed.join("\n"))).success());
    let server = http_server::Server::start(&repo.repo);
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let tmp = crate::support::tempdir();
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(IMAGE),
        &mount_args(&tmp.path().join("cache"), &[]),
    );

    // A missing name: asked once, then the kernel's negative entry answers.
    let before = requests(&m);
    for _ in 0..3 {
        assert!(!m.at("lib/d0/no-such.py").exists());
        assert!(!m.at("lib/d0/no-such.py").exists());
    }
    let after = requests(&m);
    assert_eq!(
        count(&after, "negative") - count(&before, "negative"),
        1,
        "a missing name reached the mount more than once: {before} -> {after}"
    );

    // The listed files, in the cache before they are opened: the kernel
    // reads the cache's files, no read request comes here.
    wait_prefetched(&m, listed.len() as u64 + 1);
    let before = requests(&m);
    for p in listed {
        assert_eq!(std::fs::read(m.at(p)).unwrap(), files[p], "{p}");
    }
    let after = requests(&m);
    assert_eq!(
        count(&after, "passthrough") - count(&before, "passthrough"),
        listed.len() as u64,
        "{before} -> {after}"
    );
    assert_eq!(
        count(&after, "reads"),
        count(&before, "reads"),
        "reads of cached files reached the mount: {before} -> {after}"
    );

    // A cache file others could write is not handed to the kernel: read
    // through the mount (and hashed again, its ctime changed).
    let hex = stratum_catalog::ObjectId::of(&files[shared]).to_hex();
    let cached = tmp.path().join("cache/objects").join(&hex[..2]).join(&hex);
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(std::fs::read(m.at(shared)).unwrap(), files[shared]);
    let after = requests(&m);
    assert_eq!(
        count(&after, "passthrough"),
        listed.len() as u64 + count(&before, "passthrough"),
        "{after}"
    );
    assert!(
        count(&after, "reads") > count(&before, "reads"),
        "{before} -> {after}"
    );

    // A file not in the cache is read through the mount, verified; its
    // next open (now cached) passes through.
    let p = "lib/d1/f10.py";
    assert_eq!(std::fs::read(m.at(p)).unwrap(), files[p]);
    let mid = requests(&m);
    assert!(
        count(&mid, "reads") > count(&after, "reads"),
        "{after} -> {mid}"
    );
    assert_eq!(count(&mid, "passthrough"), count(&after, "passthrough"));
    assert_eq!(std::fs::read(m.at(p)).unwrap(), files[p]);
    let end = requests(&m);
    assert_eq!(count(&end, "passthrough"), count(&mid, "passthrough") + 1);
    // Files open at once in both modes stay in the mode of the first open.
    let a = std::fs::File::open(m.at("lib/d1/f11.py")).unwrap();
    let b = std::fs::File::open(m.at("lib/d1/f11.py")).unwrap();
    for f in [&a, &b] {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &*f, &mut got).unwrap();
        assert_eq!(got, files["lib/d1/f11.py"]);
    }
    drop((a, b));

    // Many closes, at most one flush.
    assert!(count(&end, "flushes") <= 1, "{end}");
    m.unmount();
}

/// Opening the listed files of a listed directory one after another is the
/// recording being followed: no batch of that directory's other files.
/// Unlisted files opened in a row still start one.
#[test]
fn listed_files_opened_in_a_row_do_not_batch_their_directory() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("cold-start-batch.test");
    let files = publish_image(&repo, 8);
    let listed = ["lib/d2/f00.py", "lib/d2/f01.py", "lib/d2/f02.py"];
    assert!(publish_list(&repo, &listed.join("\n")).success());
    let server = http_server::Server::start(&repo.repo);
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let tmp = crate::support::tempdir();
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(IMAGE),
        &mount_args(&tmp.path().join("cache"), &[]),
    );
    wait_prefetched(&m, listed.len() as u64);
    assert_eq!(std::fs::read_dir(m.at("lib/d2")).unwrap().count(), 24);
    for p in listed {
        assert_eq!(std::fs::read(m.at(p)).unwrap(), files[p], "{p}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let next = object_path(&files["lib/d2/f03.py"]);
    assert!(
        !server.log().contains(&next),
        "listed files started a batch of lib/d2: {:?}",
        server.log()
    );
    for f in ["f10.py", "f11.py"] {
        let p = format!("lib/d2/{f}");
        assert_eq!(std::fs::read(m.at(&p)).unwrap(), files[&p]);
    }
    let ahead: Vec<String> = (12..16)
        .map(|i| object_path(&files[&format!("lib/d2/f{i:02}.py")]))
        .collect();
    assert!(
        wait_requested(|| server.log(), &ahead, Duration::from_secs(10)),
        "unlisted files opened in a row did not batch: {:?}",
        server.log()
    );
    m.unmount();
}
