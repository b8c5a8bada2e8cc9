//! `stratum mount` / `stratum umount`: argument handling and the signal
//! loop around the fetcher's FUSE filesystem.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_catalog::backend::LocalDir;
use stratum_catalog::{manifest, ObjectId, Store};
use stratum_fetcher::fs::{self, LocalTree, MountConfig, StratumFs, TreeStore};

pub struct MountArgs {
    pub source: String,
    pub mountpoint: PathBuf,
    pub pubkey: Option<PathBuf>,
    pub image: Option<String>,
    pub allow_other: bool,
}

pub fn mount(args: MountArgs) -> Result<ExitCode> {
    if args.source.starts_with("http://") || args.source.starts_with("https://") {
        bail!("mounting over HTTP is not available in this build yet; mount a repository directory");
    }
    let dir = PathBuf::from(&args.source);
    let dir = dir.as_path();
    let repo = stratum_publisher::Repository::open(dir)?;
    let key = match &args.pubkey {
        Some(p) => manifest::load_verifying_key(p)?,
        None => repo.public_key()?,
    };
    let store = Store::new(Arc::new(LocalDir::open(dir)?));
    let (m, _) = store.manifest(&key).with_context(|| format!("verifying {}", dir.display()))?;
    let tree = Arc::new(LocalTree::new(store));
    let fsname = format!("stratum:{}", dir.display());
    run(tree, &m.root, args, &fsname)
}

fn run<S: TreeStore>(tree: Arc<S>, root: &ObjectId, args: MountArgs, fsname: &str) -> Result<ExitCode> {
    let path = match &args.image {
        None => "/".to_owned(),
        Some(name) => fs::image_records(&*tree, root)?
            .into_iter()
            .find(|r| &r.name == name)
            .map(|r| r.flat_path)
            .with_context(|| format!("no image {name} in {}", args.source))?,
    };
    let filesystem = StratumFs::new(tree, root, &path).with_context(|| format!("opening {path}"))?;
    let mountpoint = args.mountpoint.clone();
    let cfg = MountConfig { fsname: fsname.to_owned(), allow_other: args.allow_other, ..MountConfig::default() };
    eprintln!("mounting {path} of {} at {}", args.source, mountpoint.display());
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
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
