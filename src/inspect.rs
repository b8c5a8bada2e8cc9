//! `stratum images`, `info`, `ls`, `cat` and `check`: reading a repository
//! (a directory or an S3 prefix) through its verified manifest, and printing
//! what the catalog library returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::{Data, Entry, FileType, ImageRecord};
use stratum_catalog::manifest::{self, Manifest};
use stratum_catalog::namespace::{Namespace, Node, StoreLoader};
use stratum_catalog::{ObjectKind, Store};
use stratum_publisher::Repository;

use crate::progress;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// Print a JSON array with every image record (digests, platform, catalogs, layers)
    /// instead of one line per image.
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// Print a JSON object (timestamp in Unix seconds, previous manifest, format version)
    /// instead of text.
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The directory (or file) to list; symlinks under /images are followed.
    #[arg(default_value = "/")]
    path: String,
    /// Print a JSON array with one object per entry (name, type, mode, owner, size, mtime,
    /// link target) instead of `ls -l`-like lines.
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// The file to print, e.g. /images/NAME/TAG/etc/os-release; symlinks under /images
    /// are followed.
    path: String,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX (see the S3 options below).
    repo: PathBuf,
    /// Print the report as JSON: the counts, `problems` (one sentence each) and `findings`
    /// (each typed: kind, object, path, entry, image, detail).
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (default: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
}

/// An opened repository for reading: its store and verified manifest.
pub(crate) struct Reader {
    pub store: Store,
    pub manifest: Manifest,
}

pub(crate) fn open_reader(repo: &Path, pubkey: Option<PathBuf>) -> Result<Reader> {
    let r = Repository::open(repo)?;
    let key = match pubkey {
        Some(p) => manifest::load_verifying_key(&p)?,
        None => r.public_key()?,
    };
    let (manifest, _) = r
        .store()
        .manifest(&key)
        .with_context(|| format!("verifying {}", repo.display()))?;
    Ok(Reader {
        store: r.store().clone(),
        manifest,
    })
}

impl Reader {
    pub fn namespace(&self) -> Result<Namespace<StoreLoader>> {
        Ok(Namespace::new(
            StoreLoader::new(self.store.clone()),
            &self.manifest.root,
        )?)
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        let ns = self.namespace()?;
        let images = ns.image_index().all()?;
        Ok(images)
    }
}

pub fn images(a: ImagesArgs) -> Result<ExitCode> {
    let images = open_reader(&a.repo, a.pubkey)?.images()?;
    if a.json {
        let out: Vec<_> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "manifest_digest": i.manifest_digest,
                    "config_digest": i.config_digest,
                    "platform": i.platform,
                    "source": i.source,
                    "published_at": i.published_at,
                    "flat_path": i.flat_path,
                    "flat_catalog": i.flat_catalog,
                    "outputs": i.outputs,
                    "prefetch": i.prefetch,
                    "layer_paths": i.layers.iter().map(|l| l.layer_path.clone()).collect::<Vec<_>>(),
                    "layers": i.layers,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for i in images {
            outln!(
                "{}\t{}\t{}\t{} layers\t{}",
                i.name,
                i.manifest_digest,
                i.platform,
                i.layers.len(),
                i.flat_path
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn info(a: InfoArgs) -> Result<ExitCode> {
    let m = open_reader(&a.repo, a.pubkey)?.manifest;
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "name": m.name, "revision": m.revision, "timestamp": m.timestamp,
                "root_catalog": m.root.to_hex(),
                "previous_manifest": m.previous.map(|p| p.to_hex()),
                "format_version": m.version,
            })
        );
    } else {
        outln!("name:         {}", m.name);
        outln!("revision:     {}", m.revision);
        outln!("timestamp:    {}", crate::show_time(m.timestamp));
        outln!("root catalog: {}", m.root);
        outln!("format:       version {}", m.version);
    }
    Ok(ExitCode::SUCCESS)
}

fn type_char(e: &Entry) -> char {
    match e.file_type() {
        Some(FileType::Directory) => 'd',
        Some(FileType::Symlink) => 'l',
        Some(FileType::CharDevice) => 'c',
        Some(FileType::BlockDevice) => 'b',
        Some(FileType::Fifo) => 'p',
        Some(FileType::Socket) => 's',
        _ => '-',
    }
}

pub fn ls(a: LsArgs) -> Result<ExitCode> {
    let (path, json) = (a.path.as_str(), a.json);
    let reader = open_reader(&a.repo, a.pubkey)?;
    let ns = reader.namespace()?;
    let node = ns.resolve_following(path, path.ends_with('/'))?;
    let nodes: Vec<Node> = if node.entry.is_dir() {
        ns.children(&node)?
    } else {
        vec![node]
    };
    if json {
        let out: Vec<_> = nodes
            .iter()
            .map(|n| {
                let e = &n.entry;
                serde_json::json!({
                    "name": String::from_utf8_lossy(&e.name),
                    "type": type_char(e).to_string(),
                    "mode": e.mode, "uid": e.uid, "gid": e.gid, "size": e.size,
                    "mtime": e.mtime, "nlink": e.nlink,
                    "target": e.symlink.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for n in nodes {
        let e = &n.entry;
        let name = String::from_utf8_lossy(&e.name);
        let target = e
            .symlink
            .as_ref()
            .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
            .unwrap_or_default();
        writeln!(
            out,
            "{}{:04o} {:>5} {:>5} {:>12} {}{}",
            type_char(e),
            e.perm(),
            e.uid,
            e.gid,
            e.size,
            name,
            target
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cat(a: CatArgs) -> Result<ExitCode> {
    let path = a.path.as_str();
    let reader = open_reader(&a.repo, a.pubkey)?;
    let ns = reader.namespace()?;
    let node = ns.resolve_following(path, true)?;
    if node.entry.file_type() != Some(FileType::Regular) {
        bail!("{path} is not a regular file");
    }
    let mut out = std::io::stdout().lock();
    match &node.entry.data {
        Data::None => {}
        Data::Inline(b) => out.write_all(b)?,
        Data::Object(id) => out.write_all(
            &reader
                .store
                .get(id, ObjectKind::Content)
                .with_context(|| format!("reading {path}"))?,
        )?,
        Data::Chunks(chunks) => {
            for c in chunks {
                out.write_all(
                    &reader
                        .store
                        .get(&c.id, ObjectKind::Content)
                        .with_context(|| format!("reading {path}"))?,
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check(a: CheckArgs) -> Result<ExitCode> {
    let r = Repository::open(&a.repo)?;
    let key = match a.pubkey {
        Some(p) => manifest::load_verifying_key(&p)?,
        None => r.public_key()?,
    };
    let bar = progress::bytes_bar("checking");
    let report = stratum_catalog::verify::check(r.store(), &key, &|n| bar.set_position(n))
        .with_context(|| format!("checking {}", a.repo.display()))?;
    bar.finish_and_clear();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.findings {
            outln!("PROBLEM: {p}");
        }
        outln!(
            "revision {}: {} catalogs, {} entries, {} objects ({} bytes stored): {}",
            report.revision,
            report.catalogs,
            report.entries,
            report.objects,
            report.stored_bytes,
            if report.ok() { "OK" } else { "DAMAGED" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
