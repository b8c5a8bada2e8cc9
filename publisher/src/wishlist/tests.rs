//! Unit and property tests of the wishlist parser.

use super::*;
use proptest::prelude::*;

const HEAD: &str = "version: 1\nrepository: repo\nsigning_key: keys/repo.key\n";

fn parse(body: &str) -> Result<Wishlist, WishlistError> {
    Wishlist::parse(&format!("{HEAD}{body}"), "/srv/sync")
}

/// Parses `body` (after a valid head), expects an error and returns its
/// message after checking that it names every string in `names`.
#[track_caller]
fn err(body: &str, names: &[&str]) -> String {
    let e = match parse(body) {
        Ok(w) => panic!("accepted {body:?}: {w:?}"),
        Err(e) => e.to_string(),
    };
    for n in names {
        assert!(e.contains(n), "{e:?} does not name {n:?}");
    }
    e
}

fn lp(s: &str) -> Platform {
    s.parse::<Platform>().unwrap()
}

#[test]
fn full_wishlist() {
    let text = r#"
version: 1
repository: /srv/stratum/repo
signing_key: ../keys/repo.key
platforms: [linux/amd64]
registries:
  127.0.0.1:5000: { insecure: true }
  registry.example.org: { ca_file: ca.pem, username_env: REG_USER, password_env: REG_PASS }
thin_images:
  pattern: "registry.example.org/thin/{repository}:{tag}"
event_log: logs/sync.jsonl
images:
  - docker://127.0.0.1:5000/library/busybox:1.36
  - source: docker://127.0.0.1:5000/app:*
    platforms: [linux/amd64, linux/arm64]
    name: mirror/app
  - docker://localhost/tools/jq   # no tag: latest
  - source: docker://registry.example.org/base@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    name: base:pinned
    platforms: all
"#;
    let w = Wishlist::parse(text, "/etc/stratum").unwrap();
    assert_eq!(w.origin, "wishlist");
    assert_eq!(w.repository, Path::new("/srv/stratum/repo"));
    assert_eq!(w.signing_key, Path::new("/etc/stratum/../keys/repo.key"));
    assert_eq!(w.event_log, Path::new("/etc/stratum/logs/sync.jsonl"));
    assert_eq!(w.platforms, Platforms::List(vec![lp("linux/amd64")]));
    assert!(w.registry("127.0.0.1:5000").unwrap().insecure);
    let r = w.registry("registry.example.org").unwrap();
    assert_eq!(r.ca_file.as_deref(), Some(Path::new("/etc/stratum/ca.pem")));
    assert_eq!(r.username_env.as_deref(), Some("REG_USER"));
    assert!(w.registry("other.org").is_none());
    assert_eq!(
        w.thin_images.as_ref().unwrap().pattern.as_str(),
        "registry.example.org/thin/{repository}:{tag}"
    );
    assert_eq!(w.images.len(), 4);

    let busybox = &w.images[0];
    assert_eq!(busybox.label(), "images[0]");
    assert_eq!(busybox.platforms, w.platforms);
    assert!(!busybox.is_glob());
    assert_eq!(
        busybox.publish_name().unwrap().to_string(),
        "127.0.0.1:5000/library/busybox:1.36"
    );

    let app = &w.images[1];
    assert!(app.is_glob());
    assert_eq!(app.publish_name(), None);
    assert_eq!(
        app.platforms,
        Platforms::List(vec![lp("linux/amd64"), lp("linux/arm64")])
    );
    assert_eq!(
        app.publish_name_for("3.1").unwrap().to_string(),
        "mirror/app:3.1"
    );
    assert!(app.selects_tag("anything"));
    assert!(app.publish_name_for("-bad").is_err());

    let jq = &w.images[2];
    assert_eq!(jq.source.tag(), Some("latest"));
    assert_eq!(
        jq.publish_name().unwrap().to_string(),
        "localhost/tools/jq:latest"
    );
    assert_eq!(
        jq.publish_name_for("latest").unwrap().to_string(),
        "localhost/tools/jq:latest"
    );
    let e = jq.publish_name_for("1.0").unwrap_err().to_string();
    assert!(e.contains("images[2] does not select tag"), "{e}");

    let base = &w.images[3];
    assert_eq!(base.platforms, Platforms::All);
    assert_eq!(base.publish_name().unwrap().to_string(), "base:pinned");
    assert!(base.source.digest().is_some());
}

#[test]
fn defaults() {
    let w = parse("images:\n  - docker://reg.example.org/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n").unwrap();
    assert_eq!(w.repository, Path::new("/srv/sync/repo"));
    assert_eq!(w.signing_key, Path::new("/srv/sync/keys/repo.key"));
    assert_eq!(w.event_log, Path::new("/srv/sync/wishlist.events.jsonl"));
    assert_eq!(w.platforms, Platforms::List(vec![Platform::host()]));
    assert!(w.registries.is_empty() && w.thin_images.is_none());
    assert_eq!(
            w.images[0].publish_name().unwrap().to_string(),
            "reg.example.org/a/b:sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
    // An empty list is allowed: it retires everything.
    assert!(parse("images: []\n").unwrap().images.is_empty());
    // One platform may be a plain string.
    let w = parse("platforms: linux/arm/v7\nimages: []\n").unwrap();
    assert_eq!(w.platforms, Platforms::List(vec![lp("linux/arm/v7")]));
}

#[test]
fn an_s3_repository_is_taken_as_written() {
    let text = "version: 1\nrepository: s3://bucket/repos/main\nsigning_key: k\nimages: []\n";
    let w = Wishlist::parse(text, "/etc/stratum").unwrap();
    assert_eq!(w.repository, Path::new("s3://bucket/repos/main"));
    assert_eq!(w.signing_key, Path::new("/etc/stratum/k"));
}

#[test]
fn host_platform() {
    let p = Platform::host();
    assert_eq!(p.os, "linux");
    assert_eq!(p.variant, None);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(p.architecture, "amd64");
    #[cfg(target_arch = "aarch64")]
    assert_eq!(p.architecture, "arm64");
    assert_eq!(lp("linux/arm/v7").slug(), "linux-arm-v7");
}

#[test]
fn load_resolves_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("conf");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("mirror.yaml");
    std::fs::write(&path, format!("{HEAD}images: []\n")).unwrap();
    let w = Wishlist::load(&path).unwrap();
    assert_eq!(w.origin, path.display().to_string());
    assert_eq!(w.repository, sub.join("repo"));
    assert_eq!(w.event_log, sub.join("mirror.events.jsonl"));

    let e = Wishlist::load(sub.join("missing.yaml")).unwrap_err();
    assert!(matches!(e, WishlistError::Read { .. }), "{e}");
    assert!(e.to_string().contains("missing.yaml"), "{e}");

    std::fs::write(&path, format!("{HEAD}images:\n  - docker://nohost/x:1\n")).unwrap();
    let e = Wishlist::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:5: images[0]: ", path.display())),
        "{e}"
    );
}

#[test]
fn example_parses() {
    let w = Wishlist::parse(
        include_str!("../../../examples/wishlist.yaml"),
        "/etc/stratum",
    )
    .unwrap();
    assert!(!w.images.is_empty());
    assert!(w.thin_images.is_some());
    assert!(w.images.iter().any(Input::is_glob));
}

#[test]
fn yaml_errors() {
    let e = Wishlist::parse("repository: r\nsigning_key: k\nimages: []\n", "/").unwrap_err();
    assert!(matches!(e, WishlistError::Yaml { .. }));
    assert!(e.to_string().contains("missing field `version`"), "{e}");
    for (text, name, line) in [
        (format!("{HEAD}images: []\nbogus: 1\n"), "`bogus`", 5),
        (
            format!("{HEAD}images:\n  - source: docker://a.b/c:1\n    nam: x\n"),
            "`nam`",
            6,
        ),
        (
            format!("{HEAD}registries:\n  a.b: {{ insecure: true, x: 1 }}\nimages: []\n"),
            "`x`",
            5,
        ),
        (
            format!("{HEAD}thin_images: {{ pattern: 'a.b/c:{{tag}}', push: 1 }}\nimages: []\n"),
            "`push`",
            4,
        ),
        (format!("{HEAD}images:\n  - 5\n"), "image reference", 5),
        (
            "version: 1\nrepository: r\nimages: []\n".to_owned(),
            "`signing_key`",
            0,
        ),
        (HEAD.to_owned(), "`images`", 0),
        (format!("{HEAD}version: 1\nimages: []\n"), "version", 0),
        ("version: one\n".to_owned(), "version", 0),
        (
            format!("{HEAD}images: []\nrepository: x\n"),
            "duplicate mapping key: repository (in",
            5,
        ),
        (
            format!("{HEAD}registries:\n  a.b: {{}}\n  a.b: {{}}\nimages: []\n"),
            "a.b",
            6,
        ),
    ] {
        let e = Wishlist::parse(&text, "/").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(name), "{msg:?} should name {name}");
        if line > 0 {
            let WishlistError::Yaml { line: l, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(l, Some(line), "{msg}");
        }
    }
}

#[test]
fn field_errors() {
    let e = Wishlist::parse(
        "version: 2\nrepository: r\nsigning_key: k\nimages: []\n",
        "/",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "wishlist:1: version: unsupported wishlist version 2; this stratum reads version 1"
    );
    let e = Wishlist::parse(
        "version: 1\nrepository: ''\nsigning_key: k\nimages: []\n",
        "/",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("repository: must not be empty"), "{e}");
    let e = Wishlist::parse(
        "version: 1\nrepository: r\nsigning_key: ''\nimages: []\n",
        "/",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("signing_key: must not be empty"), "{e}");
    err(
        "event_log: ''\nimages: []\n",
        &["event_log: must not be empty"],
    );

    // Platforms.
    err(
        "platforms: []\nimages: []\n",
        &["wishlist:4: platforms: ", "empty"],
    );
    err(
        "platforms: [linux]\nimages: []\n",
        &["platforms: ", "\"linux\"", "OS/ARCH"],
    );
    err(
        "platforms: [linux/AMD64]\nimages: []\n",
        &["platforms: ", "[a-z0-9._-]"],
    );
    err("platforms: [linux/a/b/c]\nimages: []\n", &["platforms: "]);
    err(
        "platforms: [all, linux/amd64]\nimages: []\n",
        &["platforms: ", "`all` stands alone"],
    );
    err(
        "platforms: [linux/amd64, linux/amd64]\nimages: []\n",
        &["platforms: ", "twice"],
    );
    err(
        "images:\n  - source: docker://a.b/c:1\n    platforms: [x86_64]\n",
        &["images[0].platforms: ", "x86_64"],
    );

    // Sources: a plain entry is named by its index, a map by its `source`.
    let e = err(
        "images:\n  - docker://a.b/c:1\n  - docker://a.b/C:1\n",
        &["images[1]: ", "\"C\""],
    );
    assert!(
        e.starts_with("wishlist:6: images[1]: invalid image reference"),
        "{e}"
    );
    err(
        "images:\n  - docker://a.b/c:1\n  - source: a.b/c:2\n",
        &["wishlist:6: images[1].source: ", "docker://"],
    );

    // Names.
    err(
        "images:\n  - source: docker://a.b/c:*\n    name: x/c:1\n",
        &["images[0].name: ", "fixes the tag"],
    );
    err(
        "images:\n  - source: docker://a.b/c:1\n    name: X/c\n",
        &["images[0].name: ", "X/c"],
    );
    err(
        "images:\n  - source: docker://a.b/c:1\n    name: x/c:.t\n",
        &["images[0].name: ", "\".t\""],
    );
    err(
        "images:\n  - source: docker://a.b/c:1\n    name: ''\n",
        &["images[0].name: "],
    );
    err(
        "images:\n  - source: docker://a.b/c:1\n    name: a//c\n",
        &["images[0].name: "],
    );

    // Registries.
    err(
        "registries:\n  nohost: {}\nimages: []\n",
        &["registries.\"nohost\": ", "registry host"],
    );
    err(
        "registries:\n  a.b:99999: {}\nimages: []\n",
        &["registries.\"a.b:99999\": ", "port"],
    );
    err(
        "registries:\n  a.b: { insecure: true, ca_file: ca.pem }\nimages: []\n",
        &["registries.\"a.b\": ", "exclude each other"],
    );
    err(
        "registries:\n  a.b: { username_env: U }\nimages: []\n",
        &["registries.\"a.b\": ", "both"],
    );
    err(
        "registries:\n  a.b: { username_env: U, password_env: 1P }\nimages: []\n",
        &["registries.\"a.b\".password_env: ", "\"1P\""],
    );
    err(
        "registries:\n  a.b: { ca_file: '' }\nimages: []\n",
        &["registries.\"a.b\".ca_file: ", "empty"],
    );

    // Thin pattern.
    let thin = |p: &str| {
        format!("thin_images:\n  pattern: \"{p}\"\nimages:\n  - docker://127.0.0.1:5000/app:1\n")
    };
    err(
        &thin("r.org/thin/{repo}:{tag}"),
        &[
            "wishlist:5: thin_images.pattern: ",
            "{repo}",
            "{digest_hex}",
        ],
    );
    err(
        &thin("r.org/thin/{repository:{tag}"),
        &["thin_images.pattern: ", "'}'"],
    );
    err(
        &thin("r.org/thin/{repository}"),
        &["thin_images.pattern: ", "no tag"],
    );
    err(
        &thin("r.org/thin/{repository}:{digest}"),
        &["thin_images.pattern: ", "use {digest_hex}"],
    );
    err(
        &thin("r.org/thin}/{repository}:{tag}"),
        &["thin_images.pattern: ", "'}'"],
    );
    err(&thin(""), &["thin_images.pattern: "]);
    err(
        &thin("{repository}:{tag}"),
        &["thin_images.pattern: ", "registry host"],
    );
    // Renders fine for the stand-ins, but not for this input's port.
    err(
        &thin("r.org/thin/{registry}/{repository}:{tag}"),
        &["thin_images.pattern: for images[0]: "],
    );
}

#[test]
fn conflicts() {
    let c = |body: &str, names: &[&str]| {
        let e = parse(body).unwrap_err();
        assert!(matches!(e, WishlistError::Conflict { .. }), "{e:?}");
        let msg = e.to_string();
        for n in names {
            assert!(msg.contains(n), "{msg:?} does not name {n:?}");
        }
    };
    c(
        "images:\n  - docker://a.b/c:1\n  - docker://a.b/d:1\n  - docker://a.b/c:1\n",
        &["wishlist:7: images[2] conflicts with images[0]", "a.b/c:1"],
    );
    c(
        "images:\n  - docker://a.b/c:1.2\n  - docker://a.b/c:1.*\n",
        &["images[1] conflicts with images[0]", "\"1.2\" and \"1.*\""],
    );
    c(
        "images:\n  - docker://a.b/c:*-alpine\n  - docker://a.b/c:3.*\n",
        &["images[1]"],
    );
    c(
        "images:\n  - docker://x.org/c:1\n  - source: docker://y.org/c:2\n    name: x.org/c:1\n",
        &["images[1] conflicts with images[0]"],
    );
    c(
            "images:\n  - docker://a.b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n  - docker://a.b/c:sha256-*\n",
            &["images[1]"],
        );
    // Thin images that would be pushed to one place.
    c(
            "thin_images: { pattern: 'r.org/thin/app:{tag}' }\nimages:\n  - docker://a.b/c:1\n  - docker://a.b/d:1\n",
            &["images[1] conflicts with images[0]", "r.org/thin/app:1"],
        );
    // Disjoint: fine.
    parse("images:\n  - docker://a.b/c:3.*\n  - docker://a.b/c:4.*\n  - docker://a.b/c:latest\n  - docker://a.b/d:3.1\n  - source: docker://a.b/c:5\n    name: other/c\n").unwrap();
    parse("thin_images: { pattern: 'r.org/thin/app:{tag}-{digest_hex}' }\nimages:\n  - docker://a.b/c:1\n  - docker://a.b/d:1\n").unwrap();
    parse("thin_images: { pattern: 'r.org/t/{repository}:{tag}-{platform}' }\nplatforms: [linux/amd64, linux/arm/v7]\nimages:\n  - docker://a.b/c:1\n").unwrap();
}

#[test]
fn references() {
    let r = ImageRef::parse("docker://127.0.0.1:5000/library/busybox:1.36").unwrap();
    assert_eq!(
        (r.host.as_str(), r.repository.as_str(), &r.target),
        (
            "127.0.0.1:5000",
            "library/busybox",
            &Target::Tag("1.36".to_owned())
        )
    );
    assert_eq!(r.default_name(), "127.0.0.1:5000/library/busybox");
    assert_eq!(r.without_scheme(), "127.0.0.1:5000/library/busybox:1.36");
    assert_eq!(
        r.with_tag("2").to_string(),
        "docker://127.0.0.1:5000/library/busybox:2"
    );
    assert!(!r.is_glob());
    let g: ImageRef = "docker://localhost:5000/a/b-c__d.e:3.*".parse().unwrap();
    assert!(g.is_glob());
    assert_eq!(g.tag(), Some("3.*"));
    let d = "sha256:".to_owned() + &"ab".repeat(32);
    let p = ImageRef::parse(&format!("docker://registry.example.org/x@{d}")).unwrap();
    assert_eq!(p.digest().map(|d| d.to_string()), Some(d));
    assert_eq!(p.tag(), None);
    assert_eq!(
        ImageRef::parse("docker://localhost/x").unwrap().tag(),
        Some("latest")
    );
    for ok in [
        "docker://a.b/c:_x",
        "docker://a.b/c:?",
        "docker://a.b/a--b/c:1",
        "docker://reg-1.example.org:443/x/y/z:A_b.c-1",
        "docker://a.b/c:*",
    ] {
        assert!(ImageRef::parse(ok).is_ok(), "{ok}");
    }
    for (bad, why) in [
        ("a.b/c:1", "docker://"),
        ("docker://", "no repository"),
        ("docker://a.b", "no repository"),
        ("docker://a.b/", "missing"),
        ("docker://library/busybox", "registry host"),
        ("docker:///c", "host is missing"),
        ("docker://A.b/c", "lowercase"),
        ("docker://a.b:0/c", "port"),
        ("docker://a.b:x/c", "port"),
        ("docker://a_b.c/c", "not a host"),
        ("docker://-a.b/c", "not a host"),
        ("docker://[::1]:5000/c", "IPv6"),
        ("docker://a.b/C", "\"C\""),
        ("docker://a.b/c//d", "\"\""),
        ("docker://a.b/.c", "\".c\""),
        ("docker://a.b/c-", "\"c-\""),
        ("docker://a.b/c.-d", "\"c.-d\""),
        ("docker://a.b/c___d", "\"c___d\""),
        ("docker://a.b/c*/d:1", "only the tag"),
        ("docker://a.b/c:", "tag \"\""),
        ("docker://a.b/c:.x", "tag"),
        ("docker://a.b/c:-x", "tag"),
        ("docker://a.b/c:a+b", "tag"),
        ("docker://a.b/c:*+", "glob"),
        ("docker://a.b/c:1@sha256:00", "not both"),
        ("docker://a.b/c@sha256:00", "64 lowercase hex"),
        ("docker://a.b/c@sha512:00", "only sha256"),
        ("docker://a.b/c@", "only sha256"),
    ] {
        let e = ImageRef::parse(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e:?} does not say {why:?}");
        assert!(e.contains(&format!("{bad:?}")), "{e} names the reference");
    }
    let long = format!("docker://a.b/{}:1", "x".repeat(260));
    assert!(ImageRef::parse(&long)
        .unwrap_err()
        .to_string()
        .contains("255"));
    let tag = "t".repeat(129);
    assert!(ImageRef::parse(&format!("docker://a.b/c:{tag}")).is_err());
}

#[test]
fn globs() {
    for (p, t, m) in [
        ("*", "", true),
        ("*", "anything", true),
        ("3.*", "3.1", true),
        ("3.*", "3.", true),
        ("3.*", "13.1", false),
        ("?", "a", true),
        ("?", "", false),
        ("?", "ab", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("a*b", "abab", true),
        ("*-alpine", "3.19-alpine", true),
        ("*-alpine", "3.19-alpine3", false),
        ("1.?.*", "1.2.3", true),
        ("1.?.*", "1.22.3", false),
        ("**a", "bba", true),
        ("latest", "latest", true),
        ("latest", "latest2", false),
        ("", "", true),
        ("", "a", false),
    ] {
        assert_eq!(glob_matches(p, t), m, "{p:?} ~ {t:?}");
    }
    for (a, b, o) in [
        ("3.*", "4.*", false),
        ("3.*", "*", true),
        ("3.*", "*.1", true),
        ("*-alpine", "*-slim", false),
        ("a?c", "abc", true),
        ("a?c", "abbc", false),
        ("1.2", "1.2", true),
        ("1.2", "1.3", false),
        ("*a", "b*", true),
        ("a*", "*b*c", true),
        ("x*", "y*", false),
        ("??", "*???", false),
        ("??", "*?", true),
    ] {
        assert_eq!(globs_overlap(a, b), o, "{a:?} & {b:?}");
        assert_eq!(globs_overlap(b, a), o, "{b:?} & {a:?}");
    }
}

#[test]
fn thin_render() {
    let p = ThinPattern::parse(
        "docker://r.org/t/{registry}/{name}/{repository}:{tag}-{digest_hex}-{platform}",
    )
    .unwrap();
    assert!(p.uses_digest());
    assert!(p.uses("platform") && !p.uses("digest"));
    let d = "sha256:".to_owned() + &"0f".repeat(32);
    let v = ThinVars {
        registry: "reg.example.org",
        repository: "lib/app",
        name: "mirror/app",
        tag: "1.0",
        digest: &d,
        platform: "linux/arm/v7",
    };
    assert_eq!(
        p.render(&v),
        format!(
            "r.org/t/reg.example.org/mirror/app/lib/app:1.0-{}-linux-arm-v7",
            "0f".repeat(32)
        )
    );
    let p = ThinPattern::parse("r.org/t/{repository}@{digest}:x");
    assert!(p.is_err(), "{p:?}");
    let p = ThinPattern::parse("r.org:5000/thin/{repository}:{tag}").unwrap();
    assert_eq!(p.to_string(), "r.org:5000/thin/{repository}:{tag}");
    assert_eq!(p.render(&v), "r.org:5000/thin/lib/app:1.0");
    assert!(!p.uses_digest());
}

/// A naive recursive matcher to check [`glob_matches`] against.
fn naive(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|k| naive(rest, &t[k..])),
        Some((c, rest)) => t.first().is_some_and(|x| *c == '?' || c == x) && naive(rest, &t[1..]),
    }
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("localhost".to_owned()),
        "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,5}){1,3}",
        "[a-z0-9]{1,8}:[1-9][0-9]{0,3}",
        "(localhost|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}):[1-9][0-9]{0,3}",
    ]
}

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,4}((\\.|_|__|-{1,3})[a-z0-9]{1,4}){0,2}"
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}".prop_map(Target::Tag),
        "[A-Za-z0-9_*?][A-Za-z0-9_.*?-]{0,12}"
            .prop_filter("a glob", |g| g.contains(['*', '?']))
            .prop_map(Target::Glob),
        "[0-9a-f]{64}".prop_map(|h| Target::Digest(Sha256Digest::from_hex(&h).unwrap())),
    ]
}

proptest! {
    #[test]
    fn reference_round_trips(
        host in host(),
        comps in prop::collection::vec(component(), 1..4),
        target in target(),
    ) {
        let r = ImageRef { host, repository: comps.join("/"), target };
        let text = r.to_string();
        let back = ImageRef::parse(&text);
        prop_assert!(back.is_ok(), "{text}: {back:?}");
        prop_assert_eq!(back.ok(), Some(r.clone()));
        prop_assert_eq!(r.is_glob(), matches!(r.target, Target::Glob(_)));
        // The default publish name is a valid `/images` name.
        let tag = match &r.target { Target::Digest(d) => digest_tag(d), _ => "t".to_owned() };
        let name = format!("{}:{tag}", r.default_name());
        prop_assert!(ImageName::parse(&name).is_ok(), "{}", name);
    }

    #[test]
    fn glob_agrees_with_naive(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
        let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
        prop_assert_eq!(glob_matches(&p, &t), naive(&pc, &tc));
    }

    #[test]
    fn overlap_is_sound(a in "[ab*?]{0,6}", b in "[ab*?]{0,6}", t in "[ab]{0,8}") {
        if glob_matches(&a, &t) && glob_matches(&b, &t) {
            prop_assert!(globs_overlap(&a, &b), "{a:?} and {b:?} both match {t:?}");
        }
    }
}

#[test]
fn prefetch_is_a_path_relative_to_the_wishlist() {
    let w = parse(
        "images:\n  - source: docker://127.0.0.1:5000/py:3\n    prefetch: lists/py.prefetch\n  - docker://127.0.0.1:5000/other:1\n",
    )
    .unwrap();
    assert_eq!(
        w.images[0].prefetch.as_deref(),
        Some(Path::new("/srv/sync/lists/py.prefetch"))
    );
    assert_eq!(w.images[1].prefetch, None);
    err(
        "images:\n  - source: docker://127.0.0.1:5000/py:3\n    prefetch: \"\"\n",
        &["images[0].prefetch"],
    );
}
