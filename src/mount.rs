//! `stratum mount` / `stratum umount`: argument handling and the signal
//! loop around the fetcher's FUSE filesystem.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_catalog::backend::LocalDir;
use stratum_catalog::{manifest, ObjectId, Store};
use stratum_fetcher::fs::{self, LocalTree, MountConfig, RemoteTree, StratumFs, TreeStore};

pub struct MountArgs {
    pub source: String,
    pub mountpoint: PathBuf,
    pub pubkey: Option<PathBuf>,
    pub mirrors: Vec<String>,
    pub cache: Option<PathBuf>,
    pub quota: String,
    pub image: Option<String>,
    pub allow_other: bool,
}

pub fn mount(args: MountArgs) -> Result<ExitCode> {
    if args.source.starts_with("http://") || args.source.starts_with("https://") {
        return mount_remote(args);
    }
    if !args.mirrors.is_empty() || args.cache.is_some() {
        bail!("--mirror and --cache apply to a repository URL, not a directory");
    }
    let dir = PathBuf::from(&args.source);
    let dir = dir.as_path();
    let repo = stratum_publisher::Repository::open(dir)?;
    let key = match &args.pubkey {
        Some(p) => manifest::load_verifying_key(p)?,
        None => repo.public_key()?,
    };
    let store = Store::new(Arc::new(LocalDir::open(dir)?));
    let (m, _) = store
        .manifest(&key)
        .with_context(|| format!("verifying {}", dir.display()))?;
    let tree = Arc::new(LocalTree::new(store));
    let fsname = format!("stratum:{}", dir.display());
    run(tree, &m.root, args, &fsname)
}

fn mount_remote(args: MountArgs) -> Result<ExitCode> {
    let Some(pubkey) = &args.pubkey else {
        bail!(
            "mounting {} needs --pubkey KEY.pub (the repository's public key)",
            args.source
        );
    };
    let key = manifest::load_verifying_key(pubkey)?;
    let mut urls = vec![args.source.clone()];
    urls.extend(args.mirrors.iter().cloned());
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(stratum_fetcher::default_cache_dir);
    let mut cfg = stratum_fetcher::RemoteConfig::new(urls, key, cache);
    cfg.quota_bytes = parse_size(&args.quota)?;
    let remote =
        stratum_fetcher::Remote::open(cfg).with_context(|| format!("opening {}", args.source))?;
    let root = remote.manifest().root;
    let fsname = format!("stratum:{}", args.source);
    let tree = Arc::new(RemoteTree::new(Arc::new(remote)));
    run(tree, &root, args, &fsname)
}

/// `123`, `500K`, `500M`, `4G`, `1T` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("size {s:?}: unknown unit {c:?} (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("size {s:?} is not a number with an optional K/M/G/T"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

fn run<S: TreeStore>(
    tree: Arc<S>,
    root: &ObjectId,
    args: MountArgs,
    fsname: &str,
) -> Result<ExitCode> {
    let path = match &args.image {
        None => "/".to_owned(),
        Some(name) => fs::image_records(&*tree, root)?
            .into_iter()
            .find(|r| &r.name == name)
            .map(|r| r.flat_path)
            .with_context(|| format!("no image {name} in {}", args.source))?,
    };
    let filesystem =
        StratumFs::new(tree, root, &path).with_context(|| format!("opening {path}"))?;
    let mountpoint = args.mountpoint.clone();
    let cfg = MountConfig {
        fsname: fsname.to_owned(),
        allow_other: args.allow_other,
        ..MountConfig::default()
    };
    eprintln!(
        "mounting {path} of {} at {}",
        args.source,
        mountpoint.display()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    fs::serve(filesystem, &mountpoint, &cfg, move |mut unmounter| {
        // Unmount on SIGINT/SIGTERM; serving then returns and we exit 0.
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                if let Err(e) = unmounter.unmount() {
                    eprintln!("error: unmounting: {e}");
                }
            }
        });
    })
    .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn umount(mountpoint: &Path) -> Result<ExitCode> {
    fs::unmount(mountpoint).with_context(|| format!("unmounting {}", mountpoint.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("123").unwrap(), 123);
        assert_eq!(super::parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(super::parse_size("500m").unwrap(), 500 << 20);
        assert!(super::parse_size("4X").is_err());
        assert!(super::parse_size("G").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }
}
