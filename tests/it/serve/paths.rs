//! What `stratum serve` answers for: only the format's paths, never a
//! file outside the repository (symlinks swapped in, symlinked
//! directories), and long paths.

use super::*;

/// Issue 12, item 11a: an ~8 000-byte request path was answered `500` and
/// logged an ERROR (the file system refuses the name with ENAMETOOLONG); it
/// is simply not there: `404`, and nothing above INFO in the log.
#[test]
fn an_8000_byte_path_is_404_not_500() {
    let repo = TestRepo::new("serve-long-path");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let one_component = format!("/{}", "a".repeat(8000));
    let many_components = "/data/ab".to_string() + &"/abcdefgh".repeat(900);
    let long_object = format!("/data/ab/{}", "c".repeat(8000));
    for path in [&one_component, &many_components, &long_object] {
        let (code, _) = raw_request(server.addr, "GET", path);
        assert_eq!(code, 404, "GET of a {}-byte path", path.len());
        let (code, _) = raw_request(server.addr, "HEAD", path);
        assert_eq!(code, 404, "HEAD of a {}-byte path", path.len());
    }
    // The server still answers, and logged no error or warning.
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    let log = server.stderr();
    assert!(st.success(), "exit status {st}\n{log}");
    assert!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "a long path must not log an error:\n{log}"
    );
}

/// Issue 12, item 6: `stratum serve` served every non-hidden file under the
/// repository, a private key kept there by mistake included. Only the paths
/// the format defines are served now (the manifest, the public key, object
/// paths of every kind), and `init` and `serve` warn about a private key
/// inside the repository.
#[test]
fn serve_serves_only_format_paths_not_a_private_key_in_the_repo() {
    let repo = published_repo();
    let root = &repo.repo;
    // A second revision, so that the history holds a manifest object (`M`).
    let layout = Layout::create(&repo.scratch("layout2"));
    layout.add_image("2", &[Layer::gzip(&[TarEntry::file(b"two.txt", b"two\n")])]);
    repo.publish_one(
        &format!("oci:{}:2", layout.dir.display()),
        Some("test/serve:2"),
    );
    let objects = repo.data_files();
    for suffix in ['C', 'M'] {
        assert!(
            objects
                .iter()
                .any(|f| f.to_str().unwrap().ends_with(suffix)),
            "expected a {suffix} object among {objects:?}"
        );
    }

    // A signing key made inside the repository, and other stray files.
    support::stratum(["keygen".as_ref(), root.join("signing.key").as_os_str()]);
    std::fs::create_dir_all(root.join("keys/old")).unwrap();
    std::fs::copy(root.join("signing.key"), root.join("keys/old/ci.pem")).unwrap();
    std::fs::write(root.join("README.txt"), b"notes").unwrap();
    std::fs::write(root.join(".stratum/urls"), b"http://example.org/\n").unwrap();
    std::fs::write(root.join("data/notes.txt"), b"notes").unwrap();
    let (obj_path, obj) = largest_object(&repo);
    let obj_file = root.join(obj_path.trim_start_matches('/'));
    let obj_dir = obj_file.parent().unwrap();
    let name = obj_file.file_name().unwrap().to_str().unwrap();
    let hex62 = &name[..62];
    std::fs::write(obj_dir.join(format!("{hex62}.bak")), &obj).unwrap();
    std::fs::write(obj_dir.join(format!("{hex62}X")), &obj).unwrap();
    std::fs::write(obj_dir.join(hex62.to_uppercase()), &obj).unwrap();
    std::fs::create_dir_all(root.join("data/zz")).unwrap();
    std::fs::write(root.join("data/zz").join(hex62), &obj).unwrap();
    // An object-shaped symlink to the key: followed only to a served path.
    let to_key = obj_dir.join(format!("{}{}", &hex62[..61], "0"));
    assert!(!to_key.exists());
    std::os::unix::fs::symlink("../../signing.key", &to_key).unwrap();

    let mut server = StratumServe::start(root, &[] as &[&str]);
    let client = http_client();
    for path in [
        "/signing.key".to_string(),
        "/signing.key.pub".into(),
        "/keys/old/ci.pem".into(),
        "/README.txt".into(),
        "/.stratum/urls".into(),
        "/data/notes.txt".into(),
        url_path(root, &obj_dir.join(format!("{hex62}.bak"))),
        url_path(root, &obj_dir.join(format!("{hex62}X"))),
        url_path(root, &obj_dir.join(hex62.to_uppercase())),
        format!("/data/zz/{hex62}"),
        url_path(root, &to_key),
    ] {
        let r = get(&client, &server.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
        let body = r.bytes().unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("PRIVATE KEY"),
            "GET {path} leaked the key"
        );
        let r = client.head(server.at(&path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }

    // Every path of the format is still served, byte for byte.
    for f in objects
        .iter()
        .chain([&repo.manifest_path(), &root.join(".stratum/public.pem")])
    {
        let path = url_path(root, f);
        let r = get(&client, &server.at(&path), &[]);
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        assert_eq!(r.bytes().unwrap().as_ref(), std::fs::read(f).unwrap());
    }

    // `serve` warned about both keys, and only about them.
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    let log = server.stderr();
    assert!(st.success(), "exit status {st}\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("private key inside the repository"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(warnings.iter().any(|l| l.contains("signing.key ")), "{log}");
    assert!(
        warnings.iter().any(|l| l.contains("keys/old/ci.pem")),
        "{log}"
    );

    // `init` warns too, when the key it is given lies in the new repository.
    let tmp = support::tempdir();
    let new_repo = tmp.path().join("repo");
    std::fs::create_dir(&new_repo).unwrap();
    let key = new_repo.join("key");
    support::stratum(["keygen".as_ref(), key.as_os_str()]);
    let out = support::stratum([
        "init".as_ref(),
        new_repo.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    let err = out.stderr_str();
    assert!(
        err.contains("private key inside the repository") && err.contains(&*key.to_string_lossy()),
        "no warning from init:\n{err}"
    );
    // …and not when the key is kept outside.
    let outside = tmp.path().join("outside.key");
    support::stratum(["keygen".as_ref(), outside.as_os_str()]);
    let out = support::stratum([
        "init".as_ref(),
        tmp.path().join("clean").as_os_str(),
        "--key".as_ref(),
        outside.as_os_str(),
    ]);
    assert!(
        !out.stderr_str().contains("private key"),
        "{}",
        out.stderr_str()
    );
}

/// Regression (issue 12.11): `RepoBackend::resolve` canonicalized the path,
/// checked it, and then opened it with `O_NOFOLLOW`, which protects only
/// the last component: a `data/ab` directory swapped for a symlink between
/// the check and the open led outside the repository. Every component is
/// now opened relative to its parent with `O_NOFOLLOW`. Here `data/ab`
/// flips between the real directory and a symlink to an outside directory
/// holding a "secret" under the same object name, while requests run.
#[test]
fn a_directory_swapped_for_a_symlink_never_serves_outside_the_repository() {
    let repo = TestRepo::new("serve-swap");
    let name = "c".repeat(62);
    let outside = repo.scratch("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join(&name), b"SECRET").unwrap();
    let data = repo.repo.join("data");
    let dir = data.join("ab");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&name), b"GOOD").unwrap();
    let link = data.join("ab-link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, dir, link) = (stop.clone(), dir.clone(), link.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &dir,
                    rustix::fs::CWD,
                    &link,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                flips += 1;
            }
            flips
        })
    };
    let path = format!("/data/ab/{name}");
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let (mut good, mut absent, mut leaked) = (0, 0, 0);
    while std::time::Instant::now() < deadline {
        let (code, text) = raw_request(server.addr, "GET", &path);
        match code {
            200 if text.ends_with("SECRET") => leaked += 1,
            200 => good += 1,
            404 => absent += 1,
            other => panic!("GET {path}: {other}\n{text}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{flips} flips; {good} good, {absent} 404, {leaked} leaked");
    assert_eq!(
        leaked, 0,
        "served a file outside the repository {leaked} times"
    );
    assert!(
        good > 0 && absent > 0,
        "the swap never raced: {good} good, {absent} 404"
    );
    server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
}

/// Serve follows no symlink below the repository root, so a `data/xx`,
/// `data/` or `.stratum/` moved elsewhere and symlinked back makes what is
/// behind it 404: serve says so at start, pointing to a bind mount.
#[test]
fn serve_warns_about_symlinked_repository_directories() {
    let warning = |p: &Path| format!("warning: {} is a symlink", p.display());
    // A symlinked object directory: its objects are 404, the others served.
    let repo = TestRepo::new("serve-symlinked-xx");
    let (ab, cd) = (repo.repo.join("data/ab"), repo.repo.join("data/cd"));
    let name = "d".repeat(62);
    let elsewhere = repo.scratch("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(&name), b"behind a symlink").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ab).unwrap();
    std::fs::create_dir_all(&cd).unwrap();
    std::fs::write(cd.join(&name), b"in place").unwrap();
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let err = stderr_with(&server, &warning(&ab));
    assert!(
        err.contains(&warning(&ab)),
        "no warning about {ab:?}:\n{err}"
    );
    assert!(err.contains("404") && err.contains("bind mount"), "{err}");
    assert!(!err.contains(&warning(&cd)), "{err}");
    assert_eq!(raw_get(server.addr, &format!("/data/ab/{name}")), 404);
    assert_eq!(raw_get(server.addr, &format!("/data/cd/{name}")), 200);
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());

    // `data/` and `.stratum/` themselves moved and symlinked back.
    let repo = TestRepo::new("serve-symlinked-top");
    let moved = repo.scratch("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let (data, meta) = (repo.repo.join("data"), repo.repo.join(".stratum"));
    std::fs::create_dir_all(data.join("ab")).unwrap();
    std::fs::write(data.join("ab").join(&name), b"object").unwrap();
    for d in [&data, &meta] {
        let to = moved.join(d.file_name().unwrap());
        std::fs::rename(d, &to).unwrap();
        std::os::unix::fs::symlink(&to, d).unwrap();
    }
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    let err = stderr_with(&server, &warning(&meta));
    assert!(
        err.contains(&warning(&data)) && err.contains(&warning(&meta)),
        "no warning about {data:?} and {meta:?}:\n{err}"
    );
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 404);
    assert_eq!(raw_get(server.addr, &format!("/data/ab/{name}")), 404);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());

    // A repository without symlinks: no such warning.
    let repo = TestRepo::new("serve-no-symlink");
    let mut server = StratumServe::start(&repo.repo, &[] as &[&str]);
    assert_eq!(raw_get(server.addr, "/.stratum/manifest"), 200);
    let st = server.stop(rustix::process::Signal::TERM, Duration::from_secs(15));
    assert!(st.success(), "exit status {st}\n{}", server.stderr());
    assert!(
        !server.stderr().contains("is a symlink"),
        "{}",
        server.stderr()
    );
}
