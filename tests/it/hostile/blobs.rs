//! Layer blobs: decompression bombs, garbage after or inside the
//! stream, empty layers, FIFOs where a blob or layout file should be.

use super::*;

/// `members` gzip members of `member_zeros` zeros each, after `head`.
fn gzip_zeros(head: &[u8], member_zeros: usize, members: usize) -> Vec<u8> {
    let mut blob = support::oci::gzip(head);
    let member = support::oci::gzip(&vec![0u8; member_zeros]);
    for _ in 0..members {
        blob.extend_from_slice(&member);
    }
    blob
}

/// The source and layer needles of a blob-level error.
fn blob_needles(l: &Layout, index: usize, layer: &Layer) -> Vec<String> {
    vec![
        format!("oci:{}:bad", l.dir.display()),
        format!("layer {index} ({}", layer.digest()),
    ]
}

/// A gzip bomb: a valid tar, then 1 GiB of zeros after its end (the
/// zeros compress ~1030:1, the most deflate can). It is stopped past 16 MiB
/// by the default ratio limit (1000:1), not decompressed to its end. (Its
/// diff_id is not computed: hashing 1 GiB in a debug test is slow, and
/// the ratio must stop it first.)
#[test]
fn a_gzip_bomb_is_stopped_early() {
    let s = setup();
    let tar = support::oci::build_tar(&[TarEntry::dir(b"./"), TarEntry::file(b"f", b"f\n")]);
    let blob = gzip_zeros(&tar, 8 << 20, 128);
    let ratio = (128u64 << 23) / blob.len() as u64;
    assert!(ratio > 1010, "the bomb compresses only {ratio}:1");
    let layer = Layer {
        tar,
        blob,
        media_type: MT_LAYER_GZIP.into(),
    };
    let l = image(&s, "gzbomb", std::slice::from_ref(&layer));
    let mut n = blob_needles(&l, 0, &layer);
    n.push("more than the limit of 1000:1 (a decompression bomb? see --max-ratio)".into());
    let t = Instant::now();
    s.refused(&l, &[], &strs(&n));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

/// A zstd bomb: a file declaring 1 GiB whose content is zeros from frames
/// of ~30 000:1, stopped while the file is read.
#[test]
fn a_zstd_bomb_is_stopped_early() {
    let s = setup();
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").unwrap();
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut blob = zstd::encode_all(h.as_bytes().as_slice(), 3).unwrap();
    let frame = zstd::encode_all(&vec![0u8; 16 << 20][..], 3).unwrap();
    for _ in 0..64 {
        blob.extend_from_slice(&frame);
    }
    let layer = Layer {
        tar: h.as_bytes().to_vec(),
        blob,
        media_type: MT_LAYER_ZSTD.into(),
    };
    let l = image(&s, "zstdbomb", std::slice::from_ref(&layer));
    let mut n = blob_needles(&l, 0, &layer);
    n.extend([
        NAME.to_string(),
        "entry \"bomb\"".into(),
        "(a decompression bomb? see --max-ratio)".into(),
    ]);
    s.refused(&l, &[], &strs(&n));
}

fn small_tar() -> Vec<u8> {
    support::oci::build_tar(&[TarEntry::dir(b"./"), TarEntry::file(b"f", b"f\n")])
}

#[test]
fn garbage_after_the_gzip_or_zstd_stream_is_refused() {
    let s = setup();
    let tar = small_tar();
    let mut gz = support::oci::gzip(&tar);
    gz.extend_from_slice(b"trailing garbage");
    let mut zs = zstd::encode_all(&tar[..], 3).unwrap();
    zs.extend_from_slice(b"trailing garbage");
    for (i, (blob, mt, what)) in [
        (gz, MT_LAYER_GZIP, "gzip decompression"),
        (zs, MT_LAYER_ZSTD, "zstd decompression"),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer {
            tar: tar.clone(),
            blob,
            media_type: mt.into(),
        };
        let l = image(&s, &format!("trailing{i}"), std::slice::from_ref(&layer));
        let mut n = blob_needles(&l, 0, &layer);
        n.push(what.into());
        s.refused(&l, &[], &strs(&n));
    }
}

/// Inside the tar stream: data after the end-of-archive marker (two zero
/// blocks) is ignored, as by GNU tar and Go's archive/tar (it is still
/// covered by the diff_id); garbage where a header should be is refused.
#[test]
fn garbage_inside_the_tar_stream() {
    let mut s = setup();
    let mut after_end = small_tar();
    after_end.extend_from_slice(&[b'g'; 700]);
    let l = image(&s, "after-end", &[gzip_layer(after_end)]);
    let dest = s.accepted(&l, &[], None);
    assert_dir_holds_only(&dest, &["f"]);

    let body = support::oci::build_tar(&[TarEntry::file(b"visible", b"v\n")]);
    let end = body.len() - 1024; // the builder's two zero blocks
    let mut junk = body[..end].to_vec();
    junk.extend_from_slice(&[b'j'; 1024]);
    let layer = gzip_layer(junk);
    s.refuses_layer(
        "junk-header",
        &[layer],
        &["when getting cksum", "(after entry \"visible\")"],
    );
}

/// Regression (entries after a lone zero block silently dropped): the tar
/// reader stops at the first zero block, so a layer could hide entries
/// after a single one from stratum while GNU tar -i shows them (and Go's
/// archive/tar refuses the layer). Such a layer is now refused.
#[test]
fn entries_after_a_lone_zero_block_are_not_silently_dropped() {
    let s = setup();
    let body = support::oci::build_tar(&[TarEntry::file(b"visible", b"v\n")]);
    let hidden = support::oci::build_tar(&[TarEntry::file(b"hidden", b"h\n")]);
    let end = body.len() - 1024; // the builder's two zero blocks
    let mut lone = body[..end + 512].to_vec();
    lone.extend_from_slice(&hidden);
    let layer = gzip_layer(lone);
    s.refuses_layer("lone-zero", &[layer], &["data follows a single zero block"]);
}

/// Neutralised: an empty layer (an end-of-archive marker only, or no bytes
/// at all) is an empty tree.
#[test]
fn empty_layers_are_empty_trees() {
    let mut s = setup();
    let end_only = support::oci::build_tar(&[]);
    let l = image(
        &s,
        "empty",
        &[
            Layer::gzip(&[TarEntry::file(b"base", b"b\n")]),
            gzip_layer(end_only),
            Layer {
                tar: Vec::new(),
                blob: Vec::new(),
                media_type: support::oci::MT_LAYER_TAR.into(),
            },
        ],
    );
    let dest = s.accepted(&l, &[], None);
    assert_dir_holds_only(&dest, &["base"]);
}

/// Runs `stratum ARGS…`, killing it after `limit`: a hang is a failure
/// of its own, reported as such instead of stalling the test run.
fn stratum_within(limit: Duration, args: &[&OsStr]) -> Output {
    use std::io::Read;
    let mut child = std::process::Command::new(support::stratum_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("stratum {args:?} still ran after {limit:?} (it hangs); killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        cmdline: format!("stratum {args:?}"),
        status,
        stdout,
        stderr,
    }
}

/// Replaces `path` by a FIFO that no one ever writes to.
fn make_fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
}

/// Issue 12, item 7: a FIFO where the layout has a blob (a layer, the
/// manifest, the config), its `index.json` or `oci-layout`, or a
/// `docker-archive:` file, made `publish` block forever in `open` while it
/// held the repository lock. Each is refused at once, naming the path.
#[test]
fn a_fifo_as_a_blob_or_layout_file_is_refused_not_waited_on() {
    let s = setup();
    let layer = Layer::gzip(&[TarEntry::dir(b"./"), TarEntry::file(b"f", b"f\n")]);
    let limit = Duration::from_secs(30);
    let publish = |source: &str| -> Output {
        let repo = s.repo.repo.as_os_str();
        let key = s.repo.key.as_os_str();
        let out = stratum_within(
            limit,
            &[
                OsStr::new("publish"),
                OsStr::new(source),
                OsStr::new("--repo"),
                repo,
                OsStr::new("--key"),
                key,
                OsStr::new("--as"),
                OsStr::new(NAME),
            ],
        );
        out.assert_no_panic();
        out.assert_clean_failure()
    };
    let check = |out: Output, fifo: &Path| {
        let err = out.stderr_str();
        eprintln!("stratum says: {}", err.trim());
        let shown = fifo.display().to_string();
        assert!(err.contains(&shown), "stderr should name {shown}:\n{err}");
        assert!(err.contains("a FIFO, not a regular file"), "{err}");
        s.assert_unchanged();
    };
    type PathOf = fn(&Layout, &Layer) -> PathBuf;
    let cases: [(&str, PathOf); 5] = [
        ("layer", |l, layer| l.blob_path(&layer.digest())),
        ("manifest", |l, _| l.blob_path(&l.manifest("bad").0)),
        ("config", |l, _| {
            let m = l.manifest("bad").1;
            l.blob_path(m["config"]["digest"].as_str().unwrap())
        }),
        ("index.json", |l, _| l.dir.join("index.json")),
        ("oci-layout", |l, _| l.dir.join("oci-layout")),
    ];
    for (what, path_of) in cases {
        let l = image(&s, &format!("fifo-{what}"), std::slice::from_ref(&layer));
        let fifo = path_of(&l, &layer);
        make_fifo(&fifo);
        check(publish(&format!("oci:{}:bad", l.dir.display())), &fifo);
    }
    let archive = s.tmp.path().join("fifo-archive.tar");
    make_fifo(&archive);
    check(
        publish(&format!("docker-archive:{}", archive.display())),
        &archive,
    );
}
