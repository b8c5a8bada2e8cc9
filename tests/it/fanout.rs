//! The fan-out deployment of docs/DEPLOYMENT.md §2, end to end on
//! 127.0.0.1: origin (`stratum serve`) → a replica (`stratum replicate`,
//! served by `stratum serve`) → one Squid → several nodes (`stratum pull`
//! with their own caches, all at once, through `http_proxy`).
//!
//! Every node gets the whole image right, and each object crosses each
//! link once: the origin serves each object once (to the replica), and the
//! replica serves each object once (to Squid), however many nodes read it.
//! The manifest, which is `no-cache`, is revalidated by every node.
//!
//! Needs Debian's `squid`; skips with a message without it.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::services::{Served, StratumServe};
use crate::support::small::{check_files, SmallImage};
use crate::support::squid::{squid_bin, Squid};
use crate::support::{run_cmd, skip, stratum, stratum_bin, TestRepo};

const MIB: usize = 1 << 20;
/// Nodes pulling at the same time.
const NODES: usize = 4;
/// A name only Squid can resolve (its own `hosts_file`), so that every
/// request of a node has to go through the proxy.
const REPLICA_HOST: &str = "stratum-replica.test";

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn pubkey(repo: &TestRepo) -> PathBuf {
    let mut p = repo.key.clone().into_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

/// How many times each path was requested (status 200 or 304).
fn counts(log: &[Served]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in log {
        assert!(
            r.status == 200 || r.status == 304,
            "unexpected answer: {r:?}"
        );
        *m.entry(r.path.clone()).or_default() += 1;
    }
    m
}

fn data_counts(log: &[Served]) -> BTreeMap<String, usize> {
    counts(log)
        .into_iter()
        .filter(|(p, _)| p.starts_with("/data/"))
        .collect()
}

/// The object ids (file names) in a node cache.
fn cached_ids(cache: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for sub in ["objects", "catalogs"] {
        for e in walkdir::WalkDir::new(cache.join(sub)).into_iter().flatten() {
            if e.file_type().is_file() {
                ids.insert(e.file_name().to_str().unwrap().to_string());
            }
        }
    }
    ids
}

/// `/data/ab/<62 hex>[suffix]` → `ab<62 hex>`.
fn path_id(path: &str) -> String {
    let rest = path.strip_prefix("/data/").unwrap();
    let (ab, name) = rest.split_once('/').unwrap();
    format!("{ab}{}", &name[..62])
}

#[test]
fn origin_replica_squid_nodes_each_object_crosses_each_link_once() {
    let Some(bin) = squid_bin() else {
        return skip("squid is not installed (see .ci/run)");
    };
    let repo = TestRepo::new("fanout.test");
    let img = SmallImage {
        big: 6 * MIB,
        ..SmallImage::new(21, 80)
    };
    let files = img.publish(&repo, "test/app:1");
    let key = pubkey(&repo);

    // Origin → replica.
    let origin = StratumServe::start(&repo.repo, &[] as &[&str]);
    let replica_dir = repo.scratch("replica");
    stratum([
        os("replicate"),
        os(&origin.url),
        os(&replica_dir),
        os("--pubkey"),
        os(&key),
    ]);
    let replica = StratumServe::start(&replica_dir, &[] as &[&str]);

    // Replica → Squid → nodes, all pulling at once.
    let squid = Squid::start_with(
        &bin,
        &format!("127.0.0.1 {REPLICA_HOST}\n"),
        // Concurrent misses for one URL wait for a single fetch.
        "collapsed_forwarding on\n",
    );
    let url = format!("http://{REPLICA_HOST}:{}", replica.addr.port());
    let proxy = squid.url();
    let tmp = support::tempdir();
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .map(|node| {
                let (url, proxy, key, tmp) = (&url, &proxy, &key, tmp.path());
                s.spawn(move || {
                    let mut cmd = Command::new(stratum_bin());
                    cmd.args([
                        os("pull"),
                        os(url),
                        os("--pubkey"),
                        os(key),
                        os("--image"),
                        os("test/app:1"),
                        os(tmp.join(format!("rootfs{node}"))),
                        os("--cache"),
                        os(tmp.join(format!("cache{node}"))),
                        os("--json"),
                    ])
                    .env("NO_COLOR", "1")
                    .env_remove("RUST_LOG");
                    for (k, v) in [("HTTP_PROXY", proxy), ("http_proxy", proxy)] {
                        cmd.env(k, v);
                    }
                    for k in [
                        "HTTPS_PROXY",
                        "https_proxy",
                        "ALL_PROXY",
                        "all_proxy",
                        "NO_PROXY",
                        "no_proxy",
                    ] {
                        cmd.env_remove(k);
                    }
                    run_cmd(cmd).assert_success().json()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut node_ids = Vec::new();
    for (node, out) in outputs.iter().enumerate() {
        check_files(
            &tmp.path().join(format!("rootfs{node}")),
            &files,
            &format!("node {node}"),
        );
        let ids = cached_ids(&tmp.path().join(format!("cache{node}")));
        assert!(!ids.is_empty());
        node_ids.push(ids);
        eprintln!("node {node}: {}", out["transport"]);
    }
    for ids in &node_ids[1..] {
        assert_eq!(ids, &node_ids[0], "every node fetched the same objects");
    }

    let origin_log = origin.settled_access_log();
    let replica_log = replica.settled_access_log();
    let squid_log = squid.settled_log();
    let per_origin = data_counts(&origin_log);
    let per_replica = data_counts(&replica_log);
    let squid_data = squid_log
        .iter()
        .filter(|p| p.url.contains("/data/"))
        .count();
    eprintln!(
        "origin served {} objects ({} requests); the replica {} objects ({} requests); \
         squid answered {squid_data} object requests for {NODES} nodes",
        per_origin.len(),
        origin_log.len(),
        per_replica.len(),
        replica_log.len()
    );
    let twice: Vec<_> = per_origin.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "the origin served these more than once: {twice:?}"
    );
    let twice: Vec<_> = per_replica.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "the replica served these more than once: {twice:?}"
    );
    let replica_ids: BTreeSet<String> = per_replica.keys().map(|p| path_id(p)).collect();
    assert_eq!(
        replica_ids, node_ids[0],
        "the replica served exactly the objects the nodes needed"
    );
    assert_eq!(
        squid_data,
        NODES * node_ids[0].len(),
        "every node asked squid for every object it needed"
    );
    let manifests = counts(&replica_log)
        .get("/.stratum/manifest")
        .copied()
        .unwrap_or(0);
    assert!(
        manifests >= NODES,
        "every node revalidated the manifest at the replica ({manifests} requests)"
    );
}
