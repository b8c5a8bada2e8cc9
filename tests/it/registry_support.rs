//! Self-tests of the registry harness (`tests/it/support/registry.rs`): the real
//! `docker-registry` (plain, and TLS + basic auth), skopeo pushes, the
//! multi-arch index builder and the fault-injecting proxy. Each test fails if
//! the piece it covers is broken, so that the `docker://` tests built on them
//! can trust them. Skipped (with a message) when docker-registry, skopeo,
//! htpasswd or openssl are missing; the umoci test also needs root.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;

use crate::support::fsutil::Rng;
use crate::support::oci::{digest_of, Layer, Layout, TarEntry, MT_MANIFEST};
use crate::support::registry::{
    build_multiarch_default, inspect_raw, inspect_raw_output, push_multiarch, push_oci,
    require_registry, require_tls_registry, skopeo_raw, Endpoint, Fault, FaultProxy, Registry,
    ACCEPT_MANIFESTS, MT_INDEX,
};
use crate::support::services::http_client;
use crate::support::umoci::ImageBuilder;
use crate::support::{require_oracle_tools, tempdir, which};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A hand-built one-image layout (no root, no umoci) with a small file and a
/// `big_len`-byte incompressible one, in an uncompressed layer so that the
/// blob is at least that big. Returns the layout and the layer digest.
fn small_layout(dir: &Path, tag: &str, big_len: usize) -> (Layout, String) {
    let layout = Layout::create(dir);
    let layer = Layer::uncompressed(&[
        TarEntry::dir(b"./"),
        TarEntry::dir(b"etc/"),
        TarEntry::file(b"etc/hello.txt", b"hello registry\n"),
        TarEntry::file(b"big.bin", &Rng::new(42).bytes(big_len)),
    ]);
    let d = layer.digest();
    layout.add_image(tag, &[layer]);
    (layout, d)
}

fn catalog(reg: &Registry) -> Vec<String> {
    let r = http_client().get(reg.at("/v2/_catalog")).send().unwrap();
    assert_eq!(r.status(), 200);
    json(&r.bytes().unwrap())["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plain_registry_serves_a_pushed_umoci_image_and_logs_blob_gets() {
    if !(require_registry() && require_oracle_tools(false)) {
        return;
    }
    let tmp = tempdir();
    let layout = tmp.path().join("img");
    let mut img = ImageBuilder::new(&layout, "v1");
    img.add_layer(|root| {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hello.txt"), b"hello registry\n").unwrap();
    });

    let reg = Registry::start_plain();
    assert!(reg.host().starts_with("127.0.0.1:"), "{}", reg.host());
    assert!(!reg.is_tls() && reg.ca_file().is_none() && reg.credentials().is_none());
    assert!(
        reg.requests().is_empty(),
        "the readiness probe must not show: {:?}",
        reg.requests()
    );

    let digest = push_oci(&layout, "v1", "test/small:v1", &reg);
    assert_eq!(catalog(&reg), vec!["test/small".to_string()]);
    assert!(
        reg.count_requests("PUT", "/v2/test/small/manifests/v1") == 1,
        "{:?}",
        reg.requests()
    );

    let client = http_client();
    // The OCI manifest is served only to clients that accept OCI.
    let r = client
        .get(reg.at("/v2/test/small/manifests/v1"))
        .header(ACCEPT, ACCEPT_MANIFESTS)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.headers()[CONTENT_TYPE], MT_MANIFEST);
    assert_eq!(digest_of(&r.bytes().unwrap()), digest);
    let r = client
        .get(reg.at("/v2/test/small/manifests/v1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "docker-registry 2.8 without Accept");
    assert_eq!(reg.manifest_gets(), 2);

    let (layer, _) = img.oci().layers("v1").remove(0);
    let blob_uri = format!("/v2/test/small/blobs/{layer}");
    let before = reg.blob_gets();
    let r = client.get(reg.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().unwrap();
    assert_eq!(digest_of(&body), layer);
    assert_eq!(reg.blob_gets(), before + 1, "{:?}", reg.requests());
    assert_eq!(
        reg.requests().last().unwrap(),
        &("GET".to_string(), blob_uri.clone(), 200)
    );
    // A HEAD is logged, but is not a blob GET.
    let r = client.head(reg.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(reg.blob_gets(), before + 1);
    assert!(reg.count_requests("HEAD", &blob_uri) >= 1);
    // forget_requests starts the log afresh.
    reg.forget_requests();
    assert!(reg.requests().is_empty());
    assert_eq!(reg.blob_gets(), 0);

    // blob_path is the stored blob; a corrupted one is served as it is.
    let stored = reg.blob_path(&layer);
    assert_eq!(std::fs::read(&stored).unwrap(), img.oci().read_blob(&layer));
    assert_eq!(reg.blob_path(support::digest_hex(&layer)), stored);
    reg.corrupt_blob(&layer);
    let r = client.get(reg.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], layer.as_str());
    let bad = r.bytes().unwrap();
    assert_eq!(bad.len(), body.len());
    assert_ne!(digest_of(&bad), layer, "the corruption must be served");
    assert_eq!(reg.blob_gets(), 1);

    // Dropping kills the registry and deletes its storage.
    let (dir, port) = (reg.dir().to_path_buf(), reg.port());
    drop(reg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn tls_auth_registry_refuses_anonymous_and_accepts_credentials_with_the_ca() {
    if !require_tls_registry() {
        return;
    }
    let tmp = tempdir();
    let (layout, _) = small_layout(&tmp.path().join("img"), "v1", 10_000);
    let reg = Registry::start_tls_auth("alice", "s3cret-pw");
    assert!(reg.is_tls());
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    assert_eq!(reg.credentials(), Some(("alice", "s3cret-pw")));
    let ca = reg.ca_file().unwrap();
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let cert_dir = reg.cert_dir().unwrap();
    let cert_dir = cert_dir.to_str().unwrap();

    let digest = push_oci(&layout.dir, "v1", "secure/img:v1", &reg);
    assert_eq!(digest_of(&inspect_raw(&reg, "secure/img:v1")), digest);

    // Anonymous, with the CA: refused with 401 on every request.
    reg.forget_requests();
    let target = reg.docker_ref("secure/img:v1");
    let out = skopeo_raw(&[
        "inspect",
        "--raw",
        "--cert-dir",
        cert_dir,
        "--no-creds",
        &target,
    ]);
    assert!(!out.success(), "anonymous inspect succeeded");
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
    let reqs = reg.requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|(_, _, s)| *s == 401), "{reqs:?}");

    // Wrong password: refused.
    let out = skopeo_raw(&[
        "inspect",
        "--raw",
        "--cert-dir",
        cert_dir,
        "--creds",
        "alice:wrong",
        &target,
    ]);
    assert!(!out.success(), "inspect with a wrong password succeeded");

    // Right credentials without the CA: the certificate is not trusted.
    let out = skopeo_raw(&["inspect", "--raw", "--creds", "alice:s3cret-pw", &target]);
    assert!(!out.success(), "inspect without the CA succeeded");
    let err = out.stderr_str();
    assert!(
        err.contains("x509") || err.contains("certificate"),
        "expected a certificate error: {err}"
    );

    // Both: accepted, and logged with 200.
    reg.forget_requests();
    let out = inspect_raw_output(&reg, "secure/img:v1").assert_success();
    assert_eq!(digest_of(&out.stdout), digest);
    assert!(
        reg.requests()
            .iter()
            .any(|(m, u, s)| m == "GET" && u == "/v2/secure/img/manifests/v1" && *s == 200),
        "{:?}",
        reg.requests()
    );

    // The certificate names 127.0.0.1 and localhost (curl, when installed).
    if which("curl").is_some() {
        let port = reg.port().to_string();
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{port}/v2/_catalog");
            let ca = ca.to_str().unwrap();
            let code = support::tool(
                "curl",
                [
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--cacert",
                    ca,
                    &url,
                ],
            )
            .stdout_str();
            assert_eq!(code, "401", "anonymous curl {url}");
            let out = support::tool(
                "curl",
                [
                    "-sS",
                    "--fail",
                    "--cacert",
                    ca,
                    "-u",
                    "alice:s3cret-pw",
                    &url,
                ],
            );
            assert!(
                out.stdout_str().contains("secure/img"),
                "{}",
                out.stdout_str()
            );
        }
    }
}

#[test]
fn multiarch_push_gives_an_index_of_two_platforms() {
    if !require_registry() {
        return;
    }
    let tmp = tempdir();
    let ma = build_multiarch_default(&tmp.path().join("ma"), "v1");
    assert_eq!(ma.images.len(), 2);
    let (amd, arm) = (ma.image("amd64"), ma.image("arm64"));
    assert_eq!(
        amd.layers[0].digest(),
        arm.layers[0].digest(),
        "shared base"
    );
    assert_ne!(amd.layers[1].digest(), arm.layers[1].digest());
    assert_ne!(amd.files, arm.files);
    let layout = Layout::open(&ma.layout);
    assert_eq!(layout.descriptor("v1")["mediaType"], MT_INDEX);
    assert_eq!(layout.config(&arm.tag)["architecture"], "arm64");
    assert_eq!(layout.config(&arm.tag)["variant"], "v8");
    assert_eq!(layout.config(&amd.tag)["architecture"], "amd64");

    let reg = Registry::start_plain();
    let digest = push_multiarch(&ma, "multi/arch:v1", &reg);
    assert_eq!(digest, ma.index_digest);

    let raw = inspect_raw(&reg, "multi/arch:v1");
    assert_eq!(digest_of(&raw), ma.index_digest);
    let index = json(&raw);
    assert_eq!(index["mediaType"], MT_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let platforms: BTreeSet<String> = manifests
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_string(), "linux/arm64/v8".to_string()])
    );
    // Every platform manifest was pushed too, byte for byte.
    for img in &ma.images {
        let m = inspect_raw(&reg, &format!("multi/arch@{}", img.manifest_digest));
        assert_eq!(m, layout.read_blob(&img.manifest_digest));
    }
    // skopeo picks the platform's image out of the index.
    for arch in ["amd64", "arm64"] {
        let mut args = vec!["--override-arch".to_string(), arch.into(), "inspect".into()];
        args.extend(reg.skopeo_flags("--"));
        args.push(reg.docker_ref("multi/arch:v1"));
        let out = skopeo_raw(&args).assert_success();
        let v = json(&out.stdout);
        assert_eq!(v["Architecture"], arch);
        // (`Digest` is the index's; the layers are the platform's.)
        let layers: Vec<&str> = v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let want: Vec<String> = ma.image(arch).layers.iter().map(Layer::digest).collect();
        assert_eq!(layers, want, "{arch}");
    }
    // And over HTTP, with the index media type.
    let r = http_client()
        .get(reg.at("/v2/multi/arch/manifests/v1"))
        .header(ACCEPT, ACCEPT_MANIFESTS)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CONTENT_TYPE], MT_INDEX);
}

#[test]
fn fault_proxy_injects_faults_then_forwards_faithfully() {
    if !require_registry() {
        return;
    }
    let tmp = tempdir();
    let big = 3 << 20;
    let (layout, layer) = small_layout(&tmp.path().join("img"), "v1", big);
    let reg = Registry::start_plain();
    let digest = push_oci(&layout.dir, "v1", "faulty/img:v1", &reg);
    let proxy = FaultProxy::start(&reg);
    assert!(proxy.host().starts_with("127.0.0.1:"));
    assert_ne!(proxy.host(), reg.host());
    reg.forget_requests();

    // 429 twice on manifests, then the real answer.
    proxy.fail_next_matching(2, "/manifests/", 429);
    let client = http_client();
    let get_manifest = || {
        client
            .get(proxy.at("/v2/faulty/img/manifests/v1"))
            .header(ACCEPT, ACCEPT_MANIFESTS)
            .send()
            .unwrap()
    };
    for _ in 0..2 {
        let r = get_manifest();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        let v = json(&r.bytes().unwrap());
        assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    }
    let r = get_manifest();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(digest_of(&r.bytes().unwrap()), digest);
    assert_eq!((proxy.faults(), proxy.forwarded()), (2, 1));
    assert_eq!(reg.manifest_gets(), 1, "faults must not reach the registry");
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);

    // The manifest rule is used up; a big blob streams through whole.
    let blob_uri = format!("/v2/faulty/img/blobs/{layer}");
    let r = client.get(proxy.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()[CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().unwrap();
    assert!(body.len() > big);
    assert_eq!(body.len(), len);
    assert_eq!(digest_of(&body), layer);
    assert_eq!(reg.blob_gets(), 1);

    // 503 on a blob HEAD (no body), then through.
    proxy.fail_next_matching(1, "/blobs/", 503);
    let r = client.head(proxy.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()[RETRY_AFTER], "1");
    let r = client.head(proxy.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[CONTENT_LENGTH].to_str().unwrap(),
        len.to_string()
    );

    // A response cut short: the head arrives, the body does not complete.
    proxy.inject(1, Some("/blobs/"), Fault::Truncate { body_bytes: 1000 });
    let mut r = client.get(proxy.at(&blob_uri)).send().unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let res = std::io::Read::read_to_end(&mut r, &mut got);
    assert!(res.is_err(), "a truncated body must be an error");
    assert_eq!(got.len(), 1000);
    assert_eq!(reg.blob_gets(), 2, "a truncated response was forwarded");
    // A dropped connection.
    proxy.inject(1, None, Fault::Close);
    assert!(client.get(proxy.at("/v2/")).send().is_err());
    assert_eq!(proxy.faults(), 2 + 1 + 1 + 1);

    // skopeo through the proxy: a push (POST/PATCH/PUT and the registry's
    // absolute Location URLs, which must point back at the proxy) and a pull.
    let pushed = push_oci(&layout.dir, "v1", "via/proxy:v1", &proxy);
    assert_eq!(pushed, digest);
    assert!(catalog(&reg).contains(&"via/proxy".to_string()));
    let pulled = tmp.path().join("pulled");
    let mut args = vec![
        "copy".to_string(),
        "--quiet".into(),
        "--preserve-digests".into(),
    ];
    args.extend(proxy.skopeo_flags("--src-"));
    args.push(proxy.docker_ref("via/proxy:v1"));
    args.push(format!("oci:{}:v1", pulled.display()));
    skopeo_raw(&args).assert_success();
    let pulled = Layout::open(&pulled);
    assert_eq!(pulled.descriptor("v1")["digest"], digest.as_str());
    assert_eq!(digest_of(&pulled.read_blob(&layer)), layer);
    assert!(proxy
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.status == 202 && r.fault.is_none()));
}
