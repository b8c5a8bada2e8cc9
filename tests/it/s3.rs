//! A repository in an S3 bucket (`s3://bucket/prefix`), end to end, against
//! a real S3-protocol server on 127.0.0.1 (moto, see
//! `stratum_catalog::testing`): `init`, `publish`, `images`, `info`,
//! `check`, `rm` and `gc` through the S3 API; nodes reading the bucket over
//! plain HTTP from the S3 server itself (`pull`, `mount`), with the same
//! result as from a local repository; writers serialized by the lock
//! object; `sync` with `repository: s3://…`. Skipped, with a message, when
//! moto is not installed (`.ci/run` installs it).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{run_cmd, stratum, Output, TestRepo};
use serde_json::Value;
use stratum_catalog::backend::Backend;
use stratum_catalog::backend_s3::S3Backend;
use stratum_catalog::lock::{LockOptions, ObjectLock};
use stratum_catalog::testing::S3TestServer;

const IMAGE: &str = "test/s3:1";

/// `stratum ARGS…` with the test server's AWS variables.
fn s3_raw<S: AsRef<OsStr>>(server: &S3TestServer, args: &[S], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::stratum_bin());
    cmd.args(args)
        .envs(server.env())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    run_cmd(cmd)
}

/// What a command did, for assertion messages.
fn show(o: &Output) -> String {
    format!(
        "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.cmdline,
        o.status,
        o.stdout_str(),
        o.stderr_str()
    )
}

fn s3<S: AsRef<OsStr>>(server: &S3TestServer, args: &[S]) -> Output {
    s3_raw(server, args, &[]).assert_success()
}

fn pubkey(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

/// An OCI layout with image `tag`: inline, whole-object and chunked
/// (> 4 MiB) files, a symlink and a hardlink; `seed` varies the bytes.
fn layout(repo: &TestRepo, tag: &str, seed: u64) -> Layout {
    let l = Layout::create(&repo.scratch("layout"));
    let mut rng = support::fsutil::Rng::new(seed);
    l.add_image(
        tag,
        &[
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::dir(b"etc/"),
                TarEntry::file(
                    b"etc/hello.txt",
                    format!("hello from s3 {seed}\n").as_bytes(),
                ),
                TarEntry::symlink(b"etc/link", b"hello.txt"),
                TarEntry::file(b"mid.bin", &rng.bytes(300_000)),
                TarEntry::hardlink(b"mid-again.bin", b"mid.bin"),
            ]),
            Layer::gzip(&[
                TarEntry::dir(b"./"),
                TarEntry::file(b"large.bin", &rng.bytes(5 << 20)),
                TarEntry::whiteout(b"etc/", b"link"),
            ]),
        ],
    );
    l
}

fn publish(
    server: &S3TestServer,
    url: &str,
    key: &Path,
    l: &Layout,
    tag: &str,
    name: &str,
) -> Value {
    s3(
        server,
        &[
            OsStr::new("publish"),
            OsStr::new(&format!("oci:{}:{tag}", l.dir.display())),
            OsStr::new("--repo"),
            OsStr::new(url),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("--as"),
            OsStr::new(name),
            OsStr::new("--json"),
        ],
    )
    .json()
}

/// The keys under `.stratum/` of the repository at `prefix`.
fn meta_keys(server: &S3TestServer, prefix: &str) -> Vec<String> {
    S3Backend::open(&server.location(prefix), &server.options())
        .unwrap()
        .list(".stratum/")
        .unwrap()
}

fn image_names(server: &S3TestServer, url: &str) -> Vec<String> {
    let v = s3(server, &["images", url, "--json"]).json();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn s3_repository_publish_check_gc_and_plain_http_readers() {
    let Some(server) = S3TestServer::start("stratum-e2e") else {
        return;
    };
    server.allow_anonymous_reads("");
    let url = server.url("repos/main");
    // The reference: the same image in a local repository, same key.
    let local = TestRepo::new("s3-e2e");
    let key = local.key.clone();
    let l = layout(&local, "1", 7);
    local.publish_one(&format!("oci:{}:1", l.dir.display()), Some(IMAGE));

    // init: the endpoint given as a flag rather than AWS_ENDPOINT_URL.
    let init = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["init".into(), url.clone().into(), "--key".into()];
        args.push(key.clone().into());
        args.extend(["--name", "s3-e2e", "--s3-endpoint", &server.endpoint].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        s3_raw(&server, &args, &[("AWS_ENDPOINT_URL", "")])
    };
    let out = init(&["--url", &server.http_url("repos/main")]).assert_success();
    assert!(out.stdout_str().contains("revision 1"), "{}", show(&out));
    let again = init(&[]).assert_clean_failure();
    assert!(
        again.stderr_str().contains("already a stratum repository"),
        "{}",
        show(&again)
    );
    let keys = meta_keys(&server, "repos/main");
    assert_eq!(
        keys,
        [".stratum/manifest", ".stratum/public.pem", ".stratum/urls"],
        "the writer's lock and dirty marker must be gone after init"
    );

    let r = publish(&server, &url, &key, &l, "1", IMAGE);
    assert_eq!(r[0]["status"], "published", "{r:#}");
    assert_eq!(image_names(&server, &url), [IMAGE]);
    let info = s3(&server, &["info", &url, "--json"]).json();
    assert_eq!(info["revision"], 2, "{info:#}");
    assert_eq!(info["name"], "s3-e2e");
    // Publishing the same image again changes nothing.
    let r = publish(&server, &url, &key, &l, "1", IMAGE);
    assert_eq!(r[0]["status"], "unchanged", "{r:#}");
    let pk = pubkey(&key);
    let check = s3(
        &server,
        &[
            OsStr::new("check"),
            OsStr::new(&url),
            OsStr::new("--pubkey"),
            pk.as_os_str(),
        ],
    );
    assert!(check.stdout_str().contains(": OK"), "{}", show(&check));
    assert_eq!(
        meta_keys(&server, "repos/main"),
        [".stratum/manifest", ".stratum/public.pem", ".stratum/urls"]
    );
    // `thin` reads the default URLs recorded by `init --url` from the bucket.
    let thin = s3(&server, &["thin", &url, "--image", IMAGE]).json();
    assert_eq!(
        thin["repository"]["urls"][0].as_str().unwrap(),
        server.http_url("repos/main"),
        "{thin:#}"
    );

    // Nodes read the bucket over plain HTTP, from the S3 server itself.
    let http = server.http_url("repos/main");
    let expected = local.scratch("expected");
    local.pull_image(IMAGE, &expected);
    let pulled = local.scratch("pulled");
    let cache = local.scratch("cache");
    let out = stratum([
        OsStr::new("pull"),
        OsStr::new(&http),
        OsStr::new("--pubkey"),
        pk.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        pulled.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
        OsStr::new("--json"),
    ])
    .json();
    assert!(
        out["transport"]["cache_misses"].as_u64().unwrap() >= 3,
        "{out:#}"
    );
    support::compare::compare_trees(&expected, &pulled).unwrap_or_else(|d| {
        panic!(
            "pull from the bucket differs from a local pull:\n{}",
            d.join("\n")
        )
    });
    // Through the S3 API too (`pull s3://…`, with credentials).
    let via_api = local.scratch("via-api");
    s3(
        &server,
        &[
            OsStr::new("pull"),
            OsStr::new(&url),
            OsStr::new("--image"),
            OsStr::new(IMAGE),
            via_api.as_os_str(),
        ],
    );
    support::compare::compare_trees(&expected, &via_api).unwrap();

    // A replica in another prefix of the bucket, made from the HTTP URL,
    // read over HTTP in turn.
    let replica = server.url("replica");
    let out = s3(
        &server,
        &[
            OsStr::new("replicate"),
            OsStr::new(&http),
            OsStr::new(&replica),
            OsStr::new("--pubkey"),
            pk.as_os_str(),
            OsStr::new("--json"),
        ],
    )
    .json();
    assert_eq!(out["revision"], 2, "{out:#}");
    assert!(out["objects_fetched"].as_u64().unwrap() >= 3, "{out:#}");
    let check = s3(
        &server,
        &[
            OsStr::new("check"),
            OsStr::new(&replica),
            OsStr::new("--pubkey"),
            pk.as_os_str(),
        ],
    );
    assert!(check.stdout_str().contains(": OK"), "{}", show(&check));
    assert_eq!(
        meta_keys(&server, "replica"),
        [".stratum/manifest", ".stratum/public.pem"]
    );
    let from_replica = local.scratch("from-replica");
    stratum([
        OsStr::new("pull"),
        OsStr::new(&server.http_url("replica")),
        OsStr::new("--pubkey"),
        pk.as_os_str(),
        OsStr::new("--image"),
        OsStr::new(IMAGE),
        from_replica.as_os_str(),
        OsStr::new("--cache"),
        local.scratch("replica-cache").as_os_str(),
    ]);
    support::compare::compare_trees(&expected, &from_replica).unwrap();
    let again = s3(
        &server,
        &[
            OsStr::new("replicate"),
            OsStr::new(&http),
            OsStr::new(&replica),
            OsStr::new("--pubkey"),
            pk.as_os_str(),
            OsStr::new("--json"),
        ],
    )
    .json();
    assert_eq!(again["updated"], false, "{again:#}");

    if support::mount::require_fuse() {
        use crate::support::mount::{Mount, MountSource};
        let mcache = local.scratch("mount-cache");
        let src = MountSource::url(&http, &pk, ());
        let m = Mount::start_with(
            &src,
            &local.scratch("mnt"),
            Some(IMAGE),
            &[OsStr::new("--cache"), mcache.as_os_str()],
        );
        support::compare::compare_trees(&expected, m.path()).unwrap_or_else(|d| {
            panic!(
                "mount of the bucket differs from a local pull:\n{}",
                d.join("\n")
            )
        });
    }

    // A second image, then remove the first and collect its garbage.
    let l2 = layout(&local, "2", 8);
    publish(&server, &url, &key, &l2, "2", "test/s3:2");
    assert_eq!(image_names(&server, &url), [IMAGE, "test/s3:2"]);
    let before = S3Backend::open(&server.location("repos/main"), &server.options())
        .unwrap()
        .list("data/")
        .unwrap()
        .len();
    s3(
        &server,
        &[
            OsStr::new("rm"),
            OsStr::new(&url),
            OsStr::new(IMAGE),
            OsStr::new("--key"),
            key.as_os_str(),
        ],
    );
    let gc = s3(
        &server,
        &[
            OsStr::new("gc"),
            OsStr::new(&url),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("--grace"),
            OsStr::new("0s"),
            OsStr::new("--keep-revisions"),
            OsStr::new("1"),
            OsStr::new("--safety-window"),
            OsStr::new("0s"),
            OsStr::new("--json"),
        ],
    )
    .json();
    assert!(gc["objects_removed"].as_u64().unwrap() > 0, "{gc:#}");
    let after = S3Backend::open(&server.location("repos/main"), &server.options())
        .unwrap()
        .list("data/")
        .unwrap()
        .len();
    // (gc also writes the catalogs of its new revision.)
    assert!(after < before, "{before} -> {after} objects: {gc:#}");
    assert_eq!(image_names(&server, &url), ["test/s3:2"]);
    let check = s3(
        &server,
        &[
            OsStr::new("check"),
            OsStr::new(&url),
            OsStr::new("--pubkey"),
            pk.as_os_str(),
        ],
    );
    assert!(check.stdout_str().contains(": OK"), "{}", show(&check));
    // The node still reads the new revision over HTTP.
    let pulled2 = local.scratch("pulled2");
    stratum([
        OsStr::new("pull"),
        OsStr::new(&http),
        OsStr::new("--pubkey"),
        pk.as_os_str(),
        OsStr::new("--image"),
        OsStr::new("test/s3:2"),
        pulled2.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read_to_string(pulled2.join("etc/hello.txt")).unwrap(),
        "hello from s3 8\n"
    );
}

#[test]
fn s3_writers_are_serialized_by_the_lock_object() {
    let Some(server) = S3TestServer::start("stratum-lock") else {
        return;
    };
    let url = server.url("r");
    let local = TestRepo::new("s3-lock");
    let key = local.key.clone();
    s3(
        &server,
        &[
            OsStr::new("init"),
            OsStr::new(&url),
            OsStr::new("--key"),
            key.as_os_str(),
        ],
    );
    let layouts: Vec<Layout> = (0..3).map(|i| layout(&local, "1", 100 + i)).collect();

    // Two publishers at once: both images land, in two revisions.
    std::thread::scope(|s| {
        let handles: Vec<_> = layouts[..2]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (server, url, key) = (&server, &url, &key);
                s.spawn(move || publish(server, url, key, l, "1", &format!("test/c{i}:1")))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(image_names(&server, &url), ["test/c0:1", "test/c1:1"]);
    assert_eq!(s3(&server, &["info", &url, "--json"]).json()["revision"], 3);

    // A live holder (refreshing its lock) makes a publisher wait, however
    // long: it does not break a lock that is being refreshed.
    let backend: Arc<dyn Backend> =
        Arc::new(S3Backend::open(&server.location("r"), &server.options()).unwrap());
    let opts = LockOptions {
        stale_after: Duration::from_secs(600),
        refresh_every: Duration::from_millis(500),
        poll: Duration::from_millis(100),
    };
    let held = ObjectLock::acquire(backend.clone(), ".stratum/lock", &opts, &mut |_| {}).unwrap();
    let started = Instant::now();
    let waiting = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let src = format!("oci:{}:1", layouts[2].dir.display());
            s3_raw(
                &server,
                &[
                    OsStr::new("publish"),
                    OsStr::new(&src),
                    OsStr::new("--repo"),
                    OsStr::new(&url),
                    OsStr::new("--key"),
                    key.as_os_str(),
                    OsStr::new("--as"),
                    OsStr::new("test/c2:1"),
                ],
                &[("STRATUM_LOCK_STALE_SECS", "3")],
            )
        });
        std::thread::sleep(Duration::from_secs(6));
        held.release().unwrap();
        h.join().unwrap()
    });
    let waiting = waiting.assert_success();
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(
        waiting
            .stderr_str()
            .contains("waiting for the repository lock"),
        "{}",
        show(&waiting)
    );
    assert!(
        !waiting.stderr_str().contains("broke the stale"),
        "{}",
        show(&waiting)
    );
    assert_eq!(
        image_names(&server, &url),
        ["test/c0:1", "test/c1:1", "test/c2:1"]
    );

    // A writer that died left its lock (and its dirty marker): the next one
    // breaks the lock once stale, says so, and verifies existing objects.
    let stale = serde_json::json!({
        "host": "crashed-host", "pid": 4242, "token": "x",
        "acquired": 1_000_000, "refreshed": 1_000_000,
    });
    assert!(backend
        .put_if_absent(".stratum/lock", stale.to_string().as_bytes())
        .unwrap());
    backend.replace(".stratum/dirty", b"").unwrap();
    let out = s3(
        &server,
        &[
            OsStr::new("rm"),
            OsStr::new(&url),
            OsStr::new("test/c0:1"),
            OsStr::new("--key"),
            key.as_os_str(),
        ],
    );
    let err = out.stderr_str();
    assert!(
        err.contains("broke the stale repository lock") && err.contains("pid 4242 on crashed-host"),
        "{}",
        show(&out)
    );
    assert_eq!(image_names(&server, &url), ["test/c1:1", "test/c2:1"]);
    assert_eq!(
        meta_keys(&server, "r"),
        [".stratum/manifest", ".stratum/public.pem"]
    );
}

#[test]
fn s3_sync_publishes_a_wishlist_into_a_bucket() {
    if !support::registry::require_registry() || !support::require_tool("skopeo") {
        return;
    }
    let Some(server) = S3TestServer::start("stratum-sync") else {
        return;
    };
    let reg = support::registry::Registry::start_plain();
    let local = TestRepo::new("s3-sync");
    let l = layout(&local, "1.0", 21);
    support::registry::push_oci(&l.dir, "1.0", "team/app:1.0", &reg);
    let url = server.url("synced");
    s3(
        &server,
        &[
            OsStr::new("init"),
            OsStr::new(&url),
            OsStr::new("--key"),
            local.key.as_os_str(),
        ],
    );
    let wishlist = local.tmp.path().join("wishlist.yaml");
    std::fs::write(
        &wishlist,
        format!(
            "version: 1\nrepository: {url}\nsigning_key: {}\nregistries:\n  \"{}\": {{ insecure: true }}\nimages:\n  - docker://{}/team/app:1.0\n",
            local.key.display(),
            reg.host(),
            reg.host()
        ),
    )
    .unwrap();
    let r = s3(
        &server,
        &[
            OsStr::new("sync"),
            wishlist.as_os_str(),
            OsStr::new("--json"),
        ],
    )
    .json();
    assert_eq!(r["revision"], 2, "{r:#}");
    assert_eq!(
        image_names(&server, &url),
        [format!("{}/team/app:1.0", reg.host())]
    );
    let r = s3(
        &server,
        &[
            OsStr::new("sync"),
            wishlist.as_os_str(),
            OsStr::new("--json"),
        ],
    )
    .json();
    assert_eq!(r["new_revision"], false, "{r:#}");
}

/// A prefetch list published into a bucket (FORMAT.md §5.6): `check`
/// verifies it through the S3 API, `replicate` from the bucket's HTTP URL
/// into another prefix carries it, and the replica checks.
#[test]
fn s3_prefetch_list_is_stored_checked_and_replicated() {
    let Some(server) = S3TestServer::start("stratum-prefetch") else {
        return;
    };
    server.allow_anonymous_reads("");
    let url = server.url("repos/pf");
    let local = TestRepo::new("s3-prefetch");
    let key = local.key.clone();
    let l = layout(&local, "1", 9);
    let mut args: Vec<OsString> = vec!["init".into(), url.clone().into(), "--key".into()];
    args.push(key.clone().into());
    args.extend(["--name", "s3-prefetch"].map(OsString::from));
    s3(&server, &args);
    publish(&server, &url, &key, &l, "1", IMAGE);
    let list = local.scratch("list");
    std::fs::write(&list, "large.bin\nmid.bin\nno/such\n").unwrap();
    let spec = format!("{IMAGE}={}", list.display());
    let out = s3(
        &server,
        &[
            "publish",
            "--repo",
            &url,
            "--key",
            key.to_str().unwrap(),
            "--prefetch",
            &spec,
            "--json",
        ],
    )
    .json();
    assert_eq!(out[0]["prefetch"]["entries"], 2, "{out:#}");
    assert_eq!(out[0]["prefetch"]["dropped_count"], 1, "{out:#}");
    let pk = pubkey(&key);
    let pk = pk.to_str().unwrap();
    let check = s3(&server, &["check", &url, "--pubkey", pk, "--json"]).json();
    assert_eq!(check["problems"], serde_json::json!([]), "{check:#}");
    let stored = out[0]["prefetch"]["list"].as_str().unwrap().to_owned();
    let replica = server.url("replica-pf");
    s3(
        &server,
        &[
            "replicate",
            &server.http_url("repos/pf"),
            &replica,
            "--pubkey",
            pk,
        ],
    );
    // check verifies the list object of every record: it is in the replica.
    let check = s3(&server, &["check", &replica, "--pubkey", pk, "--json"]).json();
    assert_eq!(check["problems"], serde_json::json!([]), "{check:#}");
    let images = s3(&server, &["images", &replica, "--pubkey", pk, "--json"]).json();
    assert_eq!(images[0]["prefetch"]["list"], stored.as_str(), "{images:#}");
}
