//! Recorded prefetch lists (issue 16): `mount --record`, `publish
//! --prefetch`, the list stored with the image (gc keeps it, check verifies
//! it, replicate carries it, `thin` fills `prioritizedFiles` from it), and a
//! mount fetching it at once, ahead of the reads, through the one
//! reads-first queue; and the batching of a listed directory's small files.
//!
//! The server is `stratum_fetcher::testing` (its request log is in arrival
//! order), alone or behind the fault proxy. Needs root and `/dev/fuse`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratum_fetcher::fs::DEFAULT_PREFETCH_JOBS;
use stratum_fetcher::testing as http_server;

use crate::support::fault_http::{HttpFault, HttpFaultProxy, Target};
use crate::support::fsutil::Rng;
use crate::support::mount::{require_fuse, Mount, MountSource};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{require_root, stratum, stratum_fails, stratum_raw, TestRepo};

pub(crate) const IMAGE: &str = "test/pf:1";

/// Regular files of the image: relative path → bytes.
pub(crate) type Files = BTreeMap<String, Vec<u8>>;

pub(crate) fn ready() -> bool {
    require_root() && require_fuse()
}

pub(crate) fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// An image of 3 directories × 24 files of 3–12 KiB (one object each, none
/// inlined), a fourth of 300 files of 1.1–2 KiB (over the 256 entries at
/// which format v2 cuts a subtree catalog: `lib/d3` is a nested catalog)
/// and `etc/hostname`, published as [`IMAGE`].
pub(crate) fn publish_image(repo: &TestRepo, seed: u64) -> Files {
    let mut rng = Rng::new(seed);
    let mut files = Files::new();
    files.insert("etc/hostname".into(), format!("pf-{seed}\n").into_bytes());
    for d in 0..4 {
        for f in 0..if d == 3 { 300 } else { 24 } {
            let len = if d == 3 {
                1100 + rng.below(1000) as usize
            } else {
                3000 + rng.below(9000) as usize
            };
            files.insert(format!("lib/d{d}/f{f:02}.py"), rng.bytes(len));
        }
    }
    let mut entries = vec![
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::dir(b"lib/"),
    ];
    for d in 0..4 {
        entries.push(TarEntry::dir(format!("lib/d{d}/").as_bytes()));
    }
    for (rel, bytes) in &files {
        entries.push(TarEntry::file(rel.as_bytes(), bytes));
    }
    let layout = Layout::create(&repo.scratch("layout"));
    layout.add_image("1", &[Layer::uncompressed(&entries)]);
    repo.publish_one(&format!("oci:{}:1", layout.dir.display()), Some(IMAGE));
    files
}

/// The request path of the content object holding `bytes`.
pub(crate) fn object_path(bytes: &[u8]) -> String {
    let hex = stratum_catalog::ObjectId::of(bytes).to_hex();
    format!("data/{}/{}", &hex[..2], &hex[2..])
}

/// `publish --prefetch IMAGE=FILE` of `lines` (nothing else published).
pub(crate) fn publish_list(repo: &TestRepo, lines: &str) -> crate::support::Output {
    let file = repo.scratch("list");
    std::fs::write(&file, lines).unwrap();
    stratum_raw(prefetch_args(repo, &file))
}

fn prefetch_args(repo: &TestRepo, file: &Path) -> Vec<OsString> {
    let mut spec = OsString::from(format!("{IMAGE}="));
    spec.push(file);
    vec![
        "publish".into(),
        "--repo".into(),
        repo.repo.clone().into(),
        "--key".into(),
        repo.key.clone().into(),
        "--prefetch".into(),
        spec,
        "--json".into(),
    ]
}

/// The listed files: 2 of each directory, in an order no walk would give.
pub(crate) fn listed(files: &Files) -> Vec<String> {
    let mut v: Vec<String> = files
        .keys()
        .filter(|k| k.ends_with("f05.py") || k.ends_with("f17.py"))
        .cloned()
        .collect();
    v.reverse();
    v.push("etc/hostname".into());
    v
}

/// Waits until `server` has been asked for every path of `want`.
pub(crate) fn wait_requested(
    log: impl Fn() -> Vec<String>,
    want: &[String],
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let got = log();
        if want.iter().all(|w| got.contains(w)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

pub(crate) fn mount_args(cache: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--cache".into(), cache.into()];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// A list published with the image is fetched when the image is mounted,
/// before the program opens anything (`--image`, and a whole-repository
/// mount on first access of the image's tree), and the listed files then
/// need no request; files not listed are not fetched.
#[test]
fn recorded_list_is_fetched_at_mount_start_before_the_reads() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("prefetch.test");
    let files = publish_image(&repo, 1);
    let list = listed(&files);
    let out = publish_list(&repo, &format!("{}\nno/such/file\n", list.join("\n")));
    assert!(out.success(), "{}", out.stderr_str());
    let report = out.json();
    let pf = &report[0]["prefetch"];
    assert_eq!(pf["entries"], list.len() as u64, "{report}");
    assert_eq!(pf["dropped_count"], 1, "{report}");
    assert!(
        out.stderr_str().contains("no/such/file: not in the image"),
        "the dropped path is named in a warning: {}",
        out.stderr_str()
    );
    repo.check();
    // etc/hostname is inlined in the catalog: no object.
    let wanted: Vec<String> = list
        .iter()
        .filter(|p| files[*p].len() > 1024)
        .map(|p| object_path(&files[p]))
        .collect();
    let unlisted: Vec<String> = files
        .iter()
        .filter(|(k, _)| !list.contains(k))
        .map(|(_, b)| object_path(b))
        .collect();

    let server = http_server::Server::start(&repo.repo);
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    for whole in [false, true] {
        server.clear_log();
        let tmp = crate::support::tempdir();
        let m = Mount::start_with(
            &src,
            &tmp.path().join("mnt"),
            (!whole).then_some(IMAGE),
            &mount_args(&tmp.path().join("cache"), &[]),
        );
        let root = if whole {
            // First access of the image's tree, nothing of it opened.
            let r = m.at(format!("images/{}", IMAGE.replace(':', "/")));
            assert!(r.join("etc").is_dir());
            r
        } else {
            m.path().to_path_buf()
        };
        assert!(
            wait_requested(|| server.log(), &wanted, Duration::from_secs(20)),
            "whole={whole}: the listed objects were not all fetched before any read: {:?}",
            server.log()
        );
        // The last downloads may still be landing in the cache.
        let status =
            || stratum([OsString::from("status"), m.path().into(), "--json".into()]).json();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut st = status();
        while st["prefetch"]["objects"].as_u64() < Some(wanted.len() as u64)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
            st = status();
        }
        assert!(
            st["prefetch"]["objects"].as_u64() >= Some(wanted.len() as u64),
            "status shows what was fetched ahead: {st}"
        );
        // An image mount opens the prefetch workers' connections while it
        // fetches the manifest (D42); a whole-repository mount, whose lists
        // start later, does not.
        let log = server.log();
        let heads = log
            .iter()
            .filter(|p| *p == "HEAD .stratum/manifest")
            .count();
        let want = if whole { 0 } else { DEFAULT_PREFETCH_JOBS };
        assert_eq!(heads, want, "whole={whole}: {log:?}");
        if !whole {
            // root, /images, the /flat/ab partition, the flat tree and its
            // lib/d3 subtree: the list reached into a nested catalog.
            let catalogs = server.log().iter().filter(|p| p.ends_with('C')).count();
            assert!(catalogs >= 5, "{catalogs} catalogs: {:?}", server.log());
        }
        let before = server.log();
        for p in &list {
            assert_eq!(std::fs::read(root.join(p)).unwrap(), files[p], "{p}");
        }
        let after = server.log();
        assert_eq!(
            after.len(),
            before.len(),
            "whole={whole}: reading the listed files asked for more: {:?}",
            &after[before.len()..]
        );
        for w in &wanted {
            assert_eq!(after.iter().filter(|p| *p == w).count(), 1, "{w} once");
        }
        for u in &unlisted {
            assert!(!after.contains(u), "whole={whole}: {u} was not listed");
        }
        m.unmount();
    }
}

/// The program reads correct bytes when the prefetch is slow (every object
/// delayed: a read joins the download under way, one request per object)
/// or fails (after the list, every object's responses corrupt or refused
/// until the prefetch has failed on each: the reads then fetch on their
/// own, verified as always).
#[test]
fn reads_are_correct_when_the_prefetch_is_slow_or_fails() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("prefetch-faults.test");
    let files = publish_image(&repo, 2);
    let list: Vec<String> = files.keys().cloned().collect();
    let objects = list.iter().filter(|p| files[*p].len() > 1024).count();
    assert!(publish_list(&repo, &list.join("\n")).success());
    let server = http_server::Server::start(&repo.repo);
    let faults = [
        ("slow", HttpFault::DelayHead(Duration::from_millis(150))),
        ("corrupt", HttpFault::FlipBit { at: 100 }),
        ("refused", HttpFault::Status(503)),
    ];
    for (what, fault) in faults {
        let proxy = HttpFaultProxy::start(server.addr);
        if what == "slow" {
            proxy.inject_always(Target::Content, fault);
        } else {
            // The first content object asked for is the list itself.
            let mut plan = vec![None];
            plan.extend(std::iter::repeat_n(Some(fault), 100_000));
            proxy.inject_sequence(Target::Content, plan);
        }
        let tmp = crate::support::tempdir();
        let src = MountSource::url(&proxy.url(), &pubkey(&repo), ());
        let m = Mount::start_with(
            &src,
            &tmp.path().join("mnt"),
            Some(IMAGE),
            &mount_args(&tmp.path().join("cache"), &[]),
        );
        if what != "slow" {
            let deadline = Instant::now() + Duration::from_secs(30);
            while proxy.faults() < 2 * objects && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                proxy.faults() >= 2 * objects,
                "{what}: the prefetch did not fail"
            );
            proxy.clear();
        }
        // Reads race what the prefetch still does, in another order.
        for p in list.iter().rev() {
            assert_eq!(
                std::fs::read(m.at(p)).unwrap(),
                files[p],
                "{what}: {p} read wrong"
            );
        }
        if what == "slow" {
            for p in list.iter().filter(|p| files[*p].len() > 1024) {
                let obj = object_path(&files[p]);
                let n = proxy
                    .log()
                    .iter()
                    .filter(|h| h.path.ends_with(&obj))
                    .count();
                assert_eq!(n, 1, "slow: {p} was requested {n} times, not joined");
            }
        }
        m.unmount();
    }
}

/// Lists that cannot help are refused at publish with a clear error and
/// nothing published: no path of the image, more than 100 000 paths (a
/// million), an image that is not published. A descriptor whose
/// `prioritizedFiles` someone else wrote (unsigned: 150 000 paths, most
/// not in the image) is a hint: the mount works, reads are correct.
#[test]
fn bad_prefetch_lists_are_refused_or_ignored_never_a_crash() {
    let repo = TestRepo::new("prefetch-bad.test");
    let files = publish_image(&repo, 3);
    let rev = repo.revision();
    let out = publish_list(&repo, "no/such\n../../etc/passwd\n");
    out.assert_no_panic();
    assert!(!out.success());
    assert!(
        out.stderr_str()
            .contains("none of the lines of the prefetch list"),
        "{}",
        out.stderr_str()
    );
    let million: String = (0..1_000_000).map(|i| format!("lib/x{i}\n")).collect();
    let out = publish_list(&repo, &million);
    out.assert_no_panic();
    assert!(!out.success());
    assert!(
        out.stderr_str().contains("more than 100000 paths"),
        "{}",
        out.stderr_str()
    );
    let file = repo.scratch("list");
    std::fs::write(&file, "etc/hostname\n").unwrap();
    let mut args = prefetch_args(&repo, &file);
    args[6] = OsString::from(format!("other/img:1={}", file.display()));
    let out = stratum_fails(args);
    assert!(
        out.stderr_str().contains("other/img:1"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(repo.revision(), rev, "nothing was published");

    if !ready() {
        return;
    }
    let desc = repo.scratch("thin.json");
    stratum([
        OsString::from("thin"),
        repo.repo.clone().into(),
        "--image".into(),
        IMAGE.into(),
        "--url".into(),
        "http://127.0.0.1:1".into(),
        "-o".into(),
        desc.clone().into(),
    ]);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&desc).unwrap()).unwrap();
    let mut hostile: Vec<String> = (0..150_000).map(|i| format!("/lib/nope{i}")).collect();
    hostile.insert(0, "/lib/d1/f03.py".into());
    v["prioritizedFiles"] = serde_json::json!(hostile);
    std::fs::write(&desc, serde_json::to_vec(&v).unwrap()).unwrap();
    let server = http_server::Server::start(&repo.repo);
    let tmp = crate::support::tempdir();
    let mnt = tmp.path().join("mnt");
    // `--thin=FILE` is one argument, so it takes the guard's SOURCE slot.
    let thin_src = MountSource::dir(
        Path::new(&format!("--thin={}", desc.display())),
        Some(&pubkey(&repo)),
    );
    let mut extra = mount_args(&tmp.path().join("cache"), &[]);
    extra.extend([OsString::from("--url"), server.url().into()]);
    let m = Mount::start_with(&thin_src, &mnt, None, &extra);
    for (p, want) in &files {
        assert_eq!(&std::fs::read(m.at(p)).unwrap(), want, "{p}");
    }
    assert!(
        m.stderr().contains("only the first 100000 are prefetched"),
        "{}",
        m.stderr()
    );
    m.unmount();
}

/// `mount --record`: the files a run opened, in first-open order, each
/// once, relative to the image root; written on SIGUSR1 while mounted and
/// at unmount. Published with `--prefetch`, it is what `stratum thin`
/// puts in `prioritizedFiles`; gc keeps the list, check verifies it (and
/// finds it damaged), replicate carries it.
#[test]
fn record_publish_thin_gc_check_replicate_round_trip() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("prefetch-record.test");
    let files = publish_image(&repo, 4);
    let tmp = crate::support::tempdir();
    let record = tmp.path().join("out").join("opened.txt");
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    let src = MountSource::dir(&repo.repo, None);
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(IMAGE),
        &["--record".into(), record.clone().into_os_string()] as &[OsString],
    );
    let order = ["lib/d2/f09.py", "etc/hostname", "lib/d0/f00.py"];
    for p in order.iter().chain(order.iter()) {
        assert_eq!(std::fs::read(m.at(p)).unwrap(), files[*p]);
    }
    std::fs::read_dir(m.at("lib/d3")).unwrap().count();
    m.kill(rustix::process::Signal::USR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "lib/d2/f09.py\netc/hostname\nlib/d0/f00.py\n",
        "written on SIGUSR1"
    );
    assert_eq!(
        std::fs::read(m.at("lib/d1/f01.py")).unwrap(),
        files["lib/d1/f01.py"]
    );
    m.unmount();
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        recorded,
        "lib/d2/f09.py\netc/hostname\nlib/d0/f00.py\nlib/d1/f01.py\n"
    );
    let names: Vec<_> = std::fs::read_dir(record.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");

    let out = stratum(prefetch_args(&repo, &record));
    assert_eq!(out.json()[0]["prefetch"]["entries"], 4);
    let again = stratum(prefetch_args(&repo, &record));
    assert_eq!(again.json()[0]["prefetch"]["status"], "unchanged");
    assert_eq!(repo.image(IMAGE)["prefetch"]["entries"], 4, "images --json");
    let thin = stratum([
        OsString::from("thin"),
        repo.repo.clone().into(),
        "--image".into(),
        IMAGE.into(),
        "--url".into(),
        "http://127.0.0.1:1".into(),
    ]);
    let desc: serde_json::Value = serde_json::from_str(&thin.stdout_str()).unwrap();
    assert_eq!(
        desc["prioritizedFiles"],
        serde_json::json!([
            "/lib/d2/f09.py",
            "/etc/hostname",
            "/lib/d0/f00.py",
            "/lib/d1/f01.py"
        ])
    );

    let list_obj = repo.repo.join(object_path(recorded.as_bytes()));
    assert!(
        list_obj.exists(),
        "the list is an object: {}",
        list_obj.display()
    );
    // gc keeps it (everything unreferenced would go: no grace period).
    stratum([
        OsString::from("gc"),
        repo.repo.clone().into(),
        "--key".into(),
        repo.key.clone().into(),
        "--keep-revisions".into(),
        "1".into(),
        "--safety-window".into(),
        "0".into(),
    ]);
    assert!(list_obj.exists(), "gc kept the list");
    repo.check();
    // replicate carries it, and the replica checks.
    let server = http_server::Server::start(&repo.repo);
    let replica = tmp.path().join("replica");
    stratum([
        OsString::from("replicate"),
        server.url().into(),
        replica.clone().into(),
        "--pubkey".into(),
        pubkey(&repo).into(),
    ]);
    assert!(replica.join(object_path(recorded.as_bytes())).exists());
    stratum([
        OsString::from("check"),
        replica.into(),
        "--pubkey".into(),
        pubkey(&repo).into(),
    ]);
    // A damaged list is a finding of check.
    std::fs::write(&list_obj, b"not zstd").unwrap();
    let out = repo.check_raw();
    assert!(!out.success());
    assert!(
        out.stdout_str().contains("prefetch list") || out.stderr_str().contains("prefetch list"),
        "{}{}",
        out.stdout_str(),
        out.stderr_str()
    );
}

/// Batching: a listed directory whose files are opened one after another
/// gets its next small files fetched ahead (no list published).
#[test]
fn a_listed_directory_read_file_by_file_is_fetched_ahead() {
    if !ready() {
        return;
    }
    let repo = TestRepo::new("prefetch-batch.test");
    let files = publish_image(&repo, 5);
    let server = http_server::Server::start(&repo.repo);
    let tmp = crate::support::tempdir();
    let src = MountSource::url(&server.url(), &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(IMAGE),
        &mount_args(&tmp.path().join("cache"), &[]),
    );
    // Counted, not kept: a `DirEntry` holds the directory open, and an
    // open directory keeps the unmounted mount's process alive.
    assert_eq!(std::fs::read_dir(m.at("lib/d2")).unwrap().count(), 24);
    for f in ["f00.py", "f01.py"] {
        let p = format!("lib/d2/{f}");
        assert_eq!(std::fs::read(m.at(&p)).unwrap(), files[&p]);
    }
    let ahead: Vec<String> = (2..10)
        .map(|i| object_path(&files[&format!("lib/d2/f{i:02}.py")]))
        .collect();
    assert!(
        wait_requested(|| server.log(), &ahead, Duration::from_secs(10)),
        "the next files of lib/d2 were not fetched ahead: {:?}",
        server.log()
    );
    let other = object_path(&files["lib/d1/f02.py"]);
    assert!(!server.log().contains(&other), "another directory's file");
    for i in 2..24 {
        let p = format!("lib/d2/f{i:02}.py");
        assert_eq!(std::fs::read(m.at(&p)).unwrap(), files[&p]);
    }
    m.unmount();
}

/// The same behind nginx and Squid (plain GETs of the same URLs, so both
/// serve and cache them as any other): the listed objects go through the
/// proxy before any read, a listed directory's files are fetched ahead,
/// and every byte read is right.
#[test]
fn a_list_and_a_batch_are_fetched_ahead_through_nginx_and_squid() {
    if !ready() {
        return;
    }
    let (Some(nginx), Some(squid_bin)) = (
        crate::support::services::nginx_bin(),
        crate::support::squid::squid_bin(),
    ) else {
        return crate::support::skip("nginx or squid is not installed (see .ci/run)");
    };
    let repo = TestRepo::new("prefetch-proxies.test");
    let files = publish_image(&repo, 6);
    let list = listed(&files);
    assert!(publish_list(&repo, &list.join("\n")).success());
    let origin_host = "stratum-origin.test";
    let web = crate::support::services::Nginx::start(&nginx, &repo.repo);
    let port = web.url.rsplit(':').next().unwrap().to_owned();
    let squid =
        crate::support::squid::Squid::start(&squid_bin, &format!("127.0.0.1 {origin_host}\n"));
    let proxy = squid.url();
    let env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("HTTPS_PROXY", ""),
        ("https_proxy", ""),
        ("ALL_PROXY", ""),
        ("all_proxy", ""),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let tmp = crate::support::tempdir();
    let src = MountSource::url(&format!("http://{origin_host}:{port}"), &pubkey(&repo), ());
    let m = Mount::start_env(
        &src,
        &tmp.path().join("mnt"),
        Some(IMAGE),
        &mount_args(&tmp.path().join("cache"), &[]),
        &env,
    );
    let wanted: Vec<String> = list
        .iter()
        .filter(|p| files[*p].len() > 1024)
        .map(|p| object_path(&files[p]))
        .collect();
    let proxied = || -> Vec<String> {
        squid
            .log()
            .into_iter()
            .filter_map(|p| p.url.split_once("/data/").map(|(_, r)| format!("data/{r}")))
            .collect()
    };
    assert!(
        wait_requested(proxied, &wanted, Duration::from_secs(20)),
        "the listed objects did not all go through Squid before any read: {:?}",
        proxied()
    );
    assert_eq!(std::fs::read_dir(m.at("lib/d0")).unwrap().count(), 24);
    for f in ["f00.py", "f01.py"] {
        let p = format!("lib/d0/{f}");
        assert_eq!(std::fs::read(m.at(&p)).unwrap(), files[&p]);
    }
    let ahead: Vec<String> = (2..8)
        .map(|i| object_path(&files[&format!("lib/d0/f{i:02}.py")]))
        .collect();
    assert!(
        wait_requested(proxied, &ahead, Duration::from_secs(20)),
        "lib/d0 was not fetched ahead through Squid: {:?}",
        proxied()
    );
    for (p, want) in &files {
        assert_eq!(&std::fs::read(m.at(p)).unwrap(), want, "{p}");
    }
    m.unmount();
}
