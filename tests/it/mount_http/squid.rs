//! Through Squid: every request goes through the proxy, and a second
//! node is served from Squid's cache.

use super::*;

/// Two nodes (fresh caches) mount one image through Squid: every request
/// goes through the proxy (the origin's host name resolves only in Squid's
/// `hosts_file`), and the second node is served from Squid's cache, so the
/// origin sees each object at most once.
#[test]
fn mounts_through_squid_and_squid_serves_the_repeats() {
    if !ready() {
        return;
    }
    let Some(bin) = squid_bin() else {
        return skip("squid is not installed (see .ci/run)");
    };
    let (repo, files) = small_repo("squid.test", 6 * MIB, 2);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let squid = Squid::start(&bin, &format!("127.0.0.1 {ORIGIN_HOST}\n"));
    let origin = format!("http://{ORIGIN_HOST}:{}", serve.addr.port());
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
    let tmp = tempdir();
    let key = pubkey(&repo);
    let mut per_node = Vec::new();
    for node in 0..2 {
        let before = squid.log().len();
        let cache = tmp.path().join(format!("cache{node}"));
        let mnt = tmp.path().join(format!("mnt{node}"));
        let m = ProcMount::start(
            &url_mount_args(&origin, &mnt, &key, SMALL, &cache, &[]),
            &mnt,
            &env,
            false,
        );
        let bytes = check_files(
            m.path(),
            &files,
            node == 1,
            &format!("node {node} through squid"),
        );
        m.stop();
        let log = squid.settled_log();
        let mine: Vec<Proxied> = log[before..].to_vec();
        let ids = cached_ids(&cache);
        let proxied: BTreeSet<String> = mine.iter().filter_map(|p| data_path_id(&p.url)).collect();
        eprintln!(
            "node {node}: read {bytes} bytes; {} requests through squid ({} of objects: {:?}); {} objects cached",
            mine.len(),
            proxied.len(),
            count_codes(&mine),
            ids.len()
        );
        assert!(
            mine.iter().any(|p| p.url.ends_with("/.stratum/manifest")),
            "node {node}: the manifest did not go through squid: {mine:#?}"
        );
        for p in &mine {
            assert!(
                p.url.starts_with(&format!("{origin}/")),
                "node {node}: squid saw a request for something else: {p:?}"
            );
        }
        let missing: Vec<&String> = ids.iter().filter(|id| !proxied.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "node {node}: objects in the cache that never went through squid: {missing:?}\n{mine:#?}"
        );
        if node == 1 {
            let not_hits: Vec<&Proxied> = mine
                .iter()
                .filter(|p| data_path_id(&p.url).is_some() && !p.code.contains("HIT"))
                .collect();
            assert!(
                not_hits.is_empty(),
                "node 1: squid did not serve these objects from its cache: {not_hits:#?}"
            );
        }
        per_node.push(ids);
    }
    assert_eq!(
        per_node[0], per_node[1],
        "both nodes read the same image, so fetched the same objects"
    );

    let origin_log = settled_log(&serve);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &origin_log {
        *counts.entry(r.path.as_str()).or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = counts
        .iter()
        .filter(|(p, n)| p.starts_with("/data/") && **n > 1)
        .collect();
    let manifests = counts.get("/.stratum/manifest").copied().unwrap_or(0);
    eprintln!(
        "origin: {} requests ({} distinct data objects, manifest {manifests}×: {:?})",
        origin_log.len(),
        counts.keys().filter(|p| p.starts_with("/data/")).count(),
        origin_log
            .iter()
            .filter(|r| r.path.ends_with("manifest"))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    );
    assert!(
        repeated.is_empty(),
        "the origin served these objects more than once: {repeated:?}"
    );
    assert_eq!(
        counts.keys().filter(|p| p.starts_with("/data/")).count(),
        per_node[0].len(),
        "the origin served exactly the objects the first node cached"
    );
    // The manifest is no-cache: each node's request reached the origin
    // (a revalidation, perhaps answered 304).
    assert!(
        manifests >= 2,
        "the manifest must be revalidated at the origin: {origin_log:#?}"
    );
}

fn count_codes(log: &[Proxied]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in log {
        *m.entry(p.code.clone()).or_default() += 1;
    }
    m
}
