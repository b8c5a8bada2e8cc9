//! `stratum pull URL`: the same tree as a local pull, through the node
//! cache, through an HTTP proxy, and refusing a wrong key. The repository is
//! served by the small test server of `stratum_fetcher::testing`
//! on 127.0.0.1 (not `stratum serve`, which has its own tests).
#![allow(clippy::unwrap_used)]

use crate::support;

use stratum_fetcher::testing as http_server;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{run_cmd, stratum, stratum_bin, stratum_fails, TestRepo};
use http_server::Server;

const IMAGE: &str = "test/http:1";

/// A published image with inline, whole-object and chunked (> 4 MiB) files,
/// a symlink and a hardlink.
fn published() -> TestRepo {
    let repo = TestRepo::new("http.test");
    let l = Layout::create(&repo.scratch("layout"));
    let mut rng = support::fsutil::Rng::new(42);
    l.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::dir(b"etc/"),
            TarEntry::file(b"etc/hello.txt", b"hello over http\n"),
            TarEntry::symlink(b"etc/link", b"hello.txt"),
            TarEntry::file(b"mid.bin", &rng.bytes(300_000)),
            TarEntry::file(b"large.bin", &rng.bytes(5 << 20)),
            TarEntry::hardlink(b"mid-again.bin", b"mid.bin"),
        ])],
    );
    repo.publish_one(&format!("oci:{}:1", l.dir.display()), Some(IMAGE));
    repo
}

fn pubkey(repo: &TestRepo) -> PathBuf {
    stratum_catalog_pub(&repo.key)
}

fn stratum_catalog_pub(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

fn pull_url(url: &str, key: &Path, dest: &Path, cache: &Path) -> serde_json::Value {
    pull_url_with(url, key, dest, cache, &[])
}

/// [`pull_url`] with more flags.
fn pull_url_with(
    url: &str,
    key: &Path,
    dest: &Path,
    cache: &Path,
    flags: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        OsStr::new("pull"),
        OsStr::new(url),
        OsStr::new("--pubkey"),
        key.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        dest.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
        OsStr::new("--json"),
    ];
    args.extend(flags.iter().map(OsStr::new));
    stratum(args).json()
}

#[test]
fn pull_over_http_equals_a_local_pull_and_reuses_the_cache() {
    let repo = published();
    let server = Server::start(&repo.repo);
    let local = repo.scratch("local");
    repo.pull_image(IMAGE, &local);

    let cache = repo.scratch("cache");
    let remote = repo.scratch("remote");
    let out = pull_url(&server.url(), &pubkey(&repo), &remote, &cache);
    support::compare::compare_trees(&local, &remote)
        .unwrap_or_else(|d| panic!("HTTP pull differs from the local pull:\n{}", d.join("\n")));
    let t = &out["transport"];
    assert!(t["cache_misses"].as_u64().unwrap() >= 4, "{out:#}");
    assert_eq!(t["cache_hits"].as_u64().unwrap(), 0, "{out:#}");
    assert_eq!(
        t["requests"].as_u64().unwrap(),
        server.requests() as u64,
        "{out:#}"
    );
    assert!(server.log()[0].ends_with(".stratum/manifest"));

    // Again, from the warm cache: only the manifest goes over the wire.
    server.clear_log();
    let again = repo.scratch("again");
    let out = pull_url(&server.url(), &pubkey(&repo), &again, &cache);
    assert_eq!(
        server.log(),
        vec![".stratum/manifest".to_string()],
        "{out:#}"
    );
    assert_eq!(out["transport"]["cache_misses"].as_u64().unwrap(), 0);
    support::compare::compare_trees(&local, &again).unwrap();

    // The cache holds decoded, verified objects.
    let mut n = 0;
    for e in walkdir::WalkDir::new(cache.join("objects")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert_eq!(
                blake3_hex(&bytes),
                e.file_name().to_str().unwrap(),
                "{}",
                e.path().display()
            );
            n += 1;
        }
    }
    assert!(n >= 3, "{n} objects cached");
}

fn blake3_hex(bytes: &[u8]) -> String {
    stratum_catalog::ObjectId::of(bytes).to_hex()
}

#[test]
fn pull_over_http_through_a_proxy() {
    let repo = published();
    // The test server answers proxy-style requests, so it stands in for a
    // forward proxy: the repository host below does not exist.
    let proxy = Server::start(&repo.repo);
    let dest = repo.scratch("dest");
    let cache = repo.scratch("cache");
    let mut cmd = Command::new(stratum_bin());
    cmd.args([
        OsStr::new("pull"),
        OsStr::new("http://stratum-repository.invalid/"),
        OsStr::new("--pubkey"),
        pubkey(&repo).as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        dest.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
    ])
    .env("NO_COLOR", "1")
    .env("http_proxy", proxy.url())
    .env("HTTP_PROXY", proxy.url())
    .env_remove("no_proxy")
    .env_remove("NO_PROXY")
    .env_remove("all_proxy")
    .env_remove("ALL_PROXY");
    run_cmd(cmd).assert_success();
    assert!(proxy.requests() >= 4, "{:?}", proxy.log());
    assert_eq!(
        std::fs::read(dest.join("etc/hello.txt")).unwrap(),
        b"hello over http\n"
    );
}

#[test]
fn pull_over_http_needs_the_right_key() {
    let repo = published();
    let server = Server::start(&repo.repo);
    let dest = repo.scratch("dest");
    let cache = repo.scratch("cache");
    let url = server.url();
    let base = |extra: &[&OsStr]| {
        let mut v = vec![
            OsStr::new("pull").to_owned(),
            OsStr::new(&url).to_owned(),
            OsStr::new("--image").to_owned(),
            OsStr::new(IMAGE).to_owned(),
            dest.as_os_str().to_owned(),
            OsStr::new("--cache").to_owned(),
            cache.as_os_str().to_owned(),
        ];
        v.extend(extra.iter().map(|s| s.to_os_string()));
        v
    };
    let out = stratum_fails(base(&[]));
    assert!(
        out.stderr_str().contains("--pubkey"),
        "{}",
        out.stderr_str()
    );

    let other = repo.tmp.path().join("other.key");
    stratum([OsStr::new("keygen"), other.as_os_str()]);
    let other_pub = stratum_catalog_pub(&other);
    let out = stratum_fails(base(&[OsStr::new("--pubkey"), other_pub.as_os_str()]));
    assert!(
        out.stderr_str().contains("signature"),
        "{}",
        out.stderr_str()
    );
    assert!(
        !dest.exists(),
        "nothing is written when the manifest is refused"
    );
    assert!(server.log().iter().all(|p| p.ends_with("manifest")));

    // --cache is for URLs only.
    let out = stratum_fails([
        OsStr::new("pull"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        dest.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
    ]);
    assert!(out.stderr_str().contains("--cache"), "{}", out.stderr_str());
}

/// `pull --thin`: the descriptor pins the flat tree's catalog; the pull
/// equals a pull by name, and a descriptor whose catalog id was altered is
/// refused (the catalog fetched for it does not hash to that id, or is not
/// there) with nothing written.
#[test]
fn pull_by_thin_descriptor_and_refuse_an_altered_one() {
    let repo = published();
    let server = Server::start(&repo.repo);
    let local = repo.scratch("local");
    repo.pull_image(IMAGE, &local);
    let desc_path = write_descriptor(&repo, &server.url(), "desc");
    let cache = repo.scratch("cache");
    let pull_thin = |desc: &Path, dest: &Path| {
        support::stratum_raw([
            OsStr::new("pull"),
            OsStr::new(&server.url()),
            OsStr::new("--pubkey"),
            pubkey(&repo).as_os_str(),
            OsStr::new("--thin"),
            desc.as_os_str(),
            dest.as_os_str(),
            OsStr::new("--cache"),
            cache.as_os_str(),
        ])
    };
    let dest = repo.scratch("thin");
    pull_thin(&desc_path, &dest).assert_success();
    support::compare::compare_trees(&local, &dest)
        .unwrap_or_else(|d| panic!("pull --thin differs from pull --image:\n{}", d.join("\n")));

    let mut desc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&desc_path).unwrap()).unwrap();
    let layer_catalog = desc["layers"][0]["catalog"].clone();
    desc["flat"]["catalog"] = serde_json::Value::String("ab".repeat(32));
    let altered = repo.scratch("altered").with_extension("json");
    std::fs::write(&altered, serde_json::to_vec(&desc).unwrap()).unwrap();
    let dest2 = repo.scratch("altered-dest");
    let out = pull_thin(&altered, &dest2).assert_clean_failure();
    assert!(out.stderr_str().contains("abab"), "{}", out.stderr_str());
    assert!(!dest2.exists() || std::fs::read_dir(&dest2).unwrap().next().is_none());

    // A real, signed catalog of another tree (the layer's) in place of the
    // flat tree's id is refused too: catalogs record their kind and path.
    desc["flat"]["catalog"] = layer_catalog;
    std::fs::write(&altered, serde_json::to_vec(&desc).unwrap()).unwrap();
    let out = pull_thin(&altered, &repo.scratch("other")).assert_clean_failure();
    assert!(
        out.stderr_str().contains("not the pinned catalog"),
        "{}",
        out.stderr_str()
    );
}

/// The catalog id and namespace path of `image`'s flat tree in `repo`, from
/// the descriptor `stratum thin` writes.
fn flat_pin(repo: &TestRepo, image: &str) -> (String, String) {
    let out = stratum([
        OsStr::new("thin"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(image),
        OsStr::new("--url"),
        OsStr::new("http://127.0.0.1:9/"),
    ]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        d["flat"]["catalog"].as_str().unwrap().to_owned(),
        d["flat"]["path"].as_str().unwrap().to_owned(),
    )
}

/// Regression (issue 12.1): `pull --thin` accepted any catalog whose BLAKE3
/// matched the id the descriptor pins. An image author publishes the bytes
/// of a crafted catalog (here: a flat tree with a setuid-root file, made in
/// the attacker's own repository) as an ordinary file; a hostile mirror
/// serves that content object at the catalog path; the descriptor pins it.
/// The bytes hash right, but no revision signed by the key holds that
/// catalog, so the node must refuse it and write nothing.
#[test]
fn thin_descriptor_pinning_a_catalog_no_signed_revision_holds_is_refused() {
    let repo = published();
    // The attacker's tree, built with their own key and repository.
    let evil_repo = TestRepo::new("evil.test");
    let el = Layout::create(&evil_repo.scratch("layout"));
    el.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"./"),
            TarEntry::file(b"rootshell", b"#!/bin/sh\nid\n").mode(0o4755),
        ])],
    );
    evil_repo.publish_one(&format!("oci:{}:1", el.dir.display()), Some("evil/tree:1"));
    let (evil_id, evil_path) = flat_pin(&evil_repo, "evil/tree:1");
    let id = stratum_catalog::ObjectId::from_hex(&evil_id).unwrap();
    let encoded = std::fs::read(
        evil_repo
            .repo
            .join(id.path(stratum_catalog::ObjectKind::Catalog)),
    )
    .unwrap();
    let catalog_bytes = stratum_catalog::object::decode(&id, &encoded).unwrap();

    // The victim repository publishes those bytes as a plain file.
    let pl = Layout::create(&repo.scratch("payload"));
    pl.add_image(
        "1",
        &[Layer::gzip(&[TarEntry::file(
            b"innocent.db",
            &catalog_bytes,
        )])],
    );
    repo.publish_one(
        &format!("oci:{}:1", pl.dir.display()),
        Some("evil/payload:1"),
    );
    let content = repo
        .repo
        .join(id.path(stratum_catalog::ObjectKind::Content));
    assert!(
        content.is_file(),
        "the payload was stored as content {evil_id}"
    );

    // A mirror of the victim repository that also serves the content
    // object at the catalog path.
    let mirror = repo.scratch("mirror");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&repo.repo)
        .arg(&mirror)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::copy(
        &content,
        mirror.join(id.path(stratum_catalog::ObjectKind::Catalog)),
    )
    .unwrap();
    let server = Server::start(&mirror);

    let desc_path = write_descriptor(&repo, &server.url(), "desc");
    let mut desc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&desc_path).unwrap()).unwrap();
    desc["flat"]["catalog"] = evil_id.clone().into();
    desc["flat"]["path"] = evil_path.clone().into();
    let evil_digest = evil_path.rsplit('/').next().unwrap();
    desc["manifestDigest"] = format!("sha256:{evil_digest}").into();
    let forged = repo.scratch("forged").with_extension("json");
    std::fs::write(&forged, serde_json::to_vec(&desc).unwrap()).unwrap();

    let dest = repo.scratch("dest");
    let out = support::stratum_raw([
        OsStr::new("pull"),
        OsStr::new(&server.url()),
        OsStr::new("--pubkey"),
        pubkey(&repo).as_os_str(),
        OsStr::new("--thin"),
        forged.as_os_str(),
        dest.as_os_str(),
        OsStr::new("--cache"),
        repo.scratch("cache").as_os_str(),
    ])
    .assert_clean_failure();
    let err = out.stderr_str();
    assert!(
        err.contains("not vouched for by a signed revision"),
        "{err}"
    );
    assert!(err.contains(&evil_path), "the error names the path: {err}");
    assert!(
        !dest.join("rootshell").exists(),
        "the forged tree was written into DEST"
    );
}

/// Regression (issue 12.9): `pull` by URL accepted any repository signed
/// with the key, so a mirror could answer with another repository of the
/// same key holder. The name is now checked: against `--name`, against the
/// one a thin descriptor names, and otherwise against the name this cache
/// recorded the first time it used that URL with that key.
#[test]
fn pull_by_url_refuses_another_repository_signed_with_the_same_key() {
    let repo = published();
    // Another repository, same key, its own name and image.
    let other = repo.tmp.path().join("other-repo");
    stratum([
        OsStr::new("init"),
        other.as_os_str(),
        OsStr::new("--key"),
        repo.key.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("other.test"),
    ]);
    let l = Layout::create(&repo.scratch("other-layout"));
    l.add_image("1", &[Layer::gzip(&[TarEntry::file(b"other", b"other\n")])]);
    stratum([
        OsStr::new("publish"),
        OsStr::new(&format!("oci:{}:1", l.dir.display())),
        OsStr::new("--repo"),
        other.as_os_str(),
        OsStr::new("--key"),
        repo.key.as_os_str(),
        OsStr::new("--as"),
        OsStr::new(IMAGE),
    ]);
    let server = Server::start(&repo.repo);
    let url = server.url();
    let cache = repo.scratch("cache");
    let key_pub = pubkey(&repo);
    let pull = |extra: &[&OsStr], dest: &Path| {
        let mut v = vec![
            OsStr::new("pull"),
            OsStr::new(&url),
            OsStr::new("--pubkey"),
            key_pub.as_os_str(),
            OsStr::new("--image"),
            OsStr::new(IMAGE),
            dest.as_os_str(),
            OsStr::new("--cache"),
            cache.as_os_str(),
        ];
        v.extend_from_slice(extra);
        support::stratum_raw(v.into_iter().map(|s| s.to_os_string()).collect::<Vec<_>>())
    };
    // First use: the cache records the name "http.test" for this URL and key.
    pull(&[], &repo.scratch("first")).assert_success();

    // The server now answers with the other repository.
    server.set_root(&other);
    let dest = repo.scratch("second");
    let out = pull(&[], &dest).assert_clean_failure();
    let err = out.stderr_str();
    assert!(
        err.contains("other.test") && err.contains("http.test"),
        "the error names both repositories: {err}"
    );
    assert!(
        !dest.join("other").exists(),
        "the other repository was pulled"
    );

    // With a fresh cache, `--name` says which repository is wanted.
    let fresh = repo.scratch("fresh-cache");
    let named = |name: &str, dest: &Path| {
        support::stratum_raw([
            OsStr::new("pull"),
            OsStr::new(&url),
            OsStr::new("--pubkey"),
            pubkey(&repo).as_os_str(),
            OsStr::new("--image"),
            OsStr::new(IMAGE),
            dest.as_os_str(),
            OsStr::new("--cache"),
            fresh.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ])
    };
    let out = named("http.test", &repo.scratch("third")).assert_clean_failure();
    assert!(
        out.stderr_str().contains("other.test"),
        "{}",
        out.stderr_str()
    );
    named("other.test", &repo.scratch("fourth")).assert_success();

    // A thin descriptor names its repository: the other one is refused.
    server.set_root(&repo.repo);
    let desc = write_descriptor(&repo, &url, "desc");
    server.set_root(&other);
    let out = support::stratum_raw([
        OsStr::new("pull"),
        OsStr::new(&url),
        OsStr::new("--pubkey"),
        pubkey(&repo).as_os_str(),
        OsStr::new("--thin"),
        desc.as_os_str(),
        repo.scratch("fifth").as_os_str(),
        OsStr::new("--cache"),
        repo.scratch("thin-cache").as_os_str(),
    ])
    .assert_clean_failure();
    assert!(
        out.stderr_str().contains("other.test"),
        "{}",
        out.stderr_str()
    );
}

/// A descriptor whose trees left the current revision (the image was
/// removed and the grace period ended) is still vouched for by its own
/// revision, reached through the signed history while `gc` keeps it.
#[test]
fn thin_descriptor_of_a_collected_image_is_vouched_for_by_the_signed_history() {
    let repo = published();
    let server = Server::start(&repo.repo);
    let local = repo.scratch("local");
    repo.pull_image(IMAGE, &local);
    let desc = write_descriptor(&repo, &server.url(), "desc");
    let r = repo.repo.as_os_str();
    stratum([
        OsStr::new("rm"),
        r,
        OsStr::new(IMAGE),
        OsStr::new("--key"),
        repo.key.as_os_str(),
    ]);
    stratum([
        OsStr::new("gc"),
        r,
        OsStr::new("--key"),
        repo.key.as_os_str(),
        OsStr::new("--grace"),
        OsStr::new("0s"),
    ]);
    let flat: serde_json::Value = serde_json::from_slice(&std::fs::read(&desc).unwrap()).unwrap();
    let flat_path = flat["flat"]["path"].as_str().unwrap();
    let ls = support::stratum_raw([OsStr::new("ls"), r, OsStr::new(flat_path)]);
    assert!(!ls.success(), "gc left {flat_path} in the current revision");

    let dest = repo.scratch("dest");
    stratum([
        OsStr::new("pull"),
        OsStr::new(&server.url()),
        OsStr::new("--pubkey"),
        pubkey(&repo).as_os_str(),
        OsStr::new("--thin"),
        desc.as_os_str(),
        dest.as_os_str(),
        OsStr::new("--cache"),
        repo.scratch("cache").as_os_str(),
    ]);
    support::compare::compare_trees(&local, &dest)
        .unwrap_or_else(|d| panic!("pull --thin differs from pull --image:\n{}", d.join("\n")));
}

/// Writes `stratum thin`'s descriptor of `IMAGE` in `repo`, listing `url`,
/// to a new scratch file named after `what`.
fn write_descriptor(repo: &TestRepo, url: &str, what: &str) -> PathBuf {
    let path = repo.scratch(what).with_extension("json");
    stratum([
        OsStr::new("thin"),
        repo.repo.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        OsStr::new("--url"),
        OsStr::new(url),
        OsStr::new("-o"),
        path.as_os_str(),
    ]);
    path
}

/// `--no-fill-cache`: the pull's downloaded contents land in DEST only;
/// catalogs are cached, and contents the cache already holds are read from
/// it, not downloaded.
#[test]
fn pull_with_no_fill_cache_writes_contents_only_into_dest() {
    let repo = published();
    let server = Server::start(&repo.repo);
    let local = repo.scratch("local");
    repo.pull_image(IMAGE, &local);
    let key = pubkey(&repo);
    let pull = |dest: &Path, cache: &Path| {
        pull_url_with(&server.url(), &key, dest, cache, &["--no-fill-cache"])
    };
    let files = |dir: &Path| {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter(|e| e.as_ref().unwrap().file_type().is_file())
            .count()
    };

    let cache = repo.scratch("cache");
    let dest = repo.scratch("dest");
    let out = pull(&dest, &cache);
    support::compare::compare_trees(&local, &dest)
        .unwrap_or_else(|d| panic!("--no-fill-cache pull differs:\n{}", d.join("\n")));
    assert!(
        out["transport"]["cache_misses"].as_u64().unwrap() >= 4,
        "{out:#}"
    );
    assert_eq!(files(&cache.join("objects")), 0, "no content is cached");
    assert!(files(&cache.join("catalogs")) > 0, "catalogs are cached");

    // A cache that holds the contents (filled by a default pull) is read.
    let filled = repo.scratch("filled");
    pull_url(&server.url(), &key, &repo.scratch("first"), &filled);
    server.clear_log();
    let again = repo.scratch("again");
    let out = pull(&again, &filled);
    assert_eq!(
        server.log(),
        vec![".stratum/manifest".to_string()],
        "{out:#}"
    );
    assert_eq!(out["transport"]["cache_misses"].as_u64().unwrap(), 0);
    support::compare::compare_trees(&local, &again).unwrap();
}
