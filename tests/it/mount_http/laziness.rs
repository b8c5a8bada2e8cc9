//! Laziness: reading one file fetches that file's object and the
//! catalogs on the way, not the image.

use super::*;

/// A fresh cache, one small file read and a few directories looked at:
/// what came over the wire is that file's object and the catalogs on the
/// way, not the image.
#[test]
fn reading_one_file_fetches_that_file_not_the_image() {
    if !ready() {
        return;
    }
    let (repo, files) = small_repo("lazy.test", 9 * MIB, 3);
    let serve = StratumServe::start(&repo.repo, &[] as &[&str]);
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let src = MountSource::url(&serve.url, &pubkey(&repo), ());
    let m = Mount::start_with(
        &src,
        &tmp.path().join("mnt"),
        Some(SMALL),
        &cache_arg(&cache),
    );

    let want = &files["etc/motd"];
    assert_eq!(&std::fs::read(m.at("etc/motd")).unwrap(), want);
    for d in ["docs", "docs/d3", "big", "etc", ""] {
        assert!(std::fs::metadata(m.at(d)).unwrap().is_dir(), "/{d}");
    }
    assert_eq!(std::fs::read_dir(m.at("docs/d5")).unwrap().count(), 15);
    let log = settled_log(&serve);
    m.unmount();

    let repo_files = repo.data_files();
    let repo_bytes: u64 = repo_files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let wire: u64 = log.iter().map(|r| r.bytes).sum();
    let data_reqs = log.iter().filter(|r| r.path.starts_with("/data/")).count();
    let (objs, obj_bytes) = cache_usage(&cache, "objects");
    let (cats, cat_bytes) = cache_usage(&cache, "catalogs");
    let image_size: usize = files.values().map(Vec::len).sum();
    eprintln!(
        "lazy: read 1 file of {} bytes; fetched {} requests ({data_reqs} objects), {wire} bytes on the wire; \
         cache: {objs} content objects ({obj_bytes} bytes), {cats} catalogs ({cat_bytes} bytes); \
         the repository: {} objects, {repo_bytes} bytes; the image: {} files, {image_size} bytes",
        want.len(),
        log.len(),
        repo_files.len(),
        files.len()
    );
    assert_eq!(objs, 1, "one content object: etc/motd's");
    assert_eq!(
        obj_bytes,
        want.len() as u64,
        "the content fetched is the file's bytes"
    );
    assert!(
        data_reqs * 10 <= repo_files.len(),
        "{data_reqs} objects fetched of the repository's {}",
        repo_files.len()
    );
    assert!(
        wire <= repo_bytes / 20,
        "{wire} bytes fetched; the repository holds {repo_bytes} (more than 5% fetched)"
    );
    assert!(
        wire <= want.len() as u64 + cat_bytes + 64 * 1024,
        "{wire} bytes on the wire for a {}-byte file and {cat_bytes} bytes of catalogs",
        want.len()
    );
}
