//! `stratum mount` / `stratum umount`: argument handling, the signal loop
//! around the fetcher's FUSE filesystem, and the overlay stack of a thin
//! image's layers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_catalog::catalog::CatalogKind;
use stratum_catalog::catalog::PrefetchRef;
use stratum_catalog::prefetch_list::MAX_PREFETCH_ENTRIES;
use stratum_catalog::{manifest, ObjectId};
use stratum_fetcher::fs::{
    self, Live, LocalTree, MountConfig, OverlayXattrs, PrefetchPlan, Recorder, RemoteTree,
    StratumFs, TreeStore,
};

use crate::status::Shown;

/// `--refresh` of a whole-repository mount of a URL.
const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
use stratum_thin_image::{check_pinned_catalog, ThinImage};

#[derive(clap::Args)]
pub struct MountArgs {
    /// A repository: an http(s):// URL (needs --pubkey) or a local directory.
    /// With --thin, the only operand is MOUNTPOINT.
    pub source: String,
    /// The directory to mount on (it must exist); with --thin it is the only operand.
    pub mountpoint: Option<PathBuf>,
    /// Mount the image described by this thin-image descriptor (see docs/THIN-IMAGE.md):
    /// a file, or docker://HOST/REPO:TAG pushed by `stratum thin push` (this host's platform).
    #[arg(long, value_name = "FILE|docker://REF")]
    pub thin: Option<PathBuf>,
    /// With --thin: fetch from these URLs instead of the descriptor's.
    #[arg(long = "url", value_name = "URL", requires = "thin")]
    pub urls: Vec<String>,
    /// With --thin: mount each per-layer tree and stack them with overlayfs at MOUNTPOINT
    /// (the same view as the flat tree, for layer-aware runtimes).
    #[arg(long, requires = "thin")]
    pub layers: bool,
    /// Fetch the whole image in the background while the mount is already usable
    /// (eager mode for bad networks). Without it, the image's recorded prefetch list (or a
    /// thin image's prioritized files) is fetched ahead.
    #[arg(long)]
    pub prefetch_all: bool,
    /// Downloads in flight at once for fetching ahead of the reads: the image's published
    /// prefetch list (started at mount, or for a whole-repository mount when an image's
    /// tree is first entered), the next small files of a directory read file by file, the
    /// next chunk of a file read sequentially. Reads never wait for these: they fetch on
    /// their own, and join a download already under way. 0 fetches nothing ahead. An
    /// --image or --thin mount of a URL opens N connections while it fetches the manifest.
    #[arg(long, value_name = "N", default_value_t = fs::DEFAULT_PREFETCH_JOBS)]
    pub prefetch_jobs: usize,
    /// Write the files opened through this mount (paths relative to the image root, in
    /// first-open order, each once) to FILE when the mount ends (unmount, SIGTERM,
    /// SIGINT), and on SIGUSR1 while it runs: the prefetch list to publish with the image
    /// (`stratum publish --prefetch NAME:TAG=FILE`). Needs --image or --thin.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Verify the manifest with this public key (required for a URL; default for a
    /// directory: the repository's own copy).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// More URLs serving the same repository, tried in turn when one fails.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// The node's cache directory, shared by all mounts and pulls
    /// (default: /var/cache/stratum as root, else $XDG_CACHE_HOME/stratum).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Cache quota; least recently used content is evicted beyond it (e.g. 500M, 4G).
    #[arg(long, value_name = "SIZE", default_value = "4G")]
    pub quota: String,
    /// Mount only this image's flat rootfs at MOUNTPOINT (pinned: it stays the tree the
    /// tag named at mount time).
    #[arg(long, value_name = "NAME:TAG")]
    pub image: Option<String>,
    /// A whole-repository mount of a URL follows the repository: every DURATION it asks
    /// for the manifest (a conditional request), and switches atomically to a newer,
    /// verified revision. `0` pins the revision it mounted. SIGHUP or `stratum reload`
    /// refreshes at once. [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub refresh: Option<std::time::Duration>,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Honour the image's setuid/setgid bits (the mount is nosuid by default: an image
    /// author must not be able to give root to local users). Only for trusted repositories.
    #[arg(long)]
    pub suid: bool,
    /// Let device nodes of the image be opened (nodev by default). Only for trusted
    /// repositories; overlayfs whiteouts do not need it.
    #[arg(long)]
    pub dev: bool,
    /// Which overlayfs markers of opaque directories the per-layer trees show:
    /// `trusted` (trusted.overlay.*, for overlayfs mounted by root), `user`
    /// (user.overlay.*, for rootless overlayfs mounted with userxattr) or `both`.
    /// A stack must get only the namespace it reads, or its merged view shows
    /// overlayfs' private attributes. With --layers it also picks how the stack is
    /// mounted. [default: trusted as root, else user]
    #[arg(long, value_name = "WHICH", value_enum)]
    pub overlay_xattrs: Option<OverlayXattrsArg>,
    /// With --thin docker://…: how to reach the registry.
    #[command(flatten)]
    pub registry: crate::registry_args::RegistryArgs,
    /// With a URL: timeouts and retries.
    #[command(flatten)]
    pub transport: crate::transport_args::TransportArgs,
    /// Prometheus metrics of the mount: revision, refreshes, fetches by mirror, cache.
    #[command(flatten)]
    pub metrics: crate::metrics_args::MetricsArgs,
}

/// `--overlay-xattrs`: see [`OverlayXattrs`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayXattrsArg {
    Trusted,
    User,
    Both,
}

impl MountArgs {
    /// The overlay markers to show: the flag, else what this process's
    /// own overlayfs stack would read.
    fn overlay_xattrs(&self) -> OverlayXattrs {
        match self.overlay_xattrs {
            Some(OverlayXattrsArg::Trusted) => OverlayXattrs::Trusted,
            Some(OverlayXattrsArg::User) => OverlayXattrs::User,
            Some(OverlayXattrsArg::Both) => OverlayXattrs::Both,
            None => OverlayXattrs::for_this_process(),
        }
    }
}

pub fn mount(args: MountArgs) -> Result<ExitCode> {
    if args.record.is_some() && args.image.is_none() && args.thin.is_none() {
        bail!(
            "--record writes paths relative to one image's root: give --image NAME:TAG or --thin"
        );
    }
    // Before the repository is opened: its first requests are counted too.
    args.metrics.install()?;
    if let Some(thin) = args.thin.clone() {
        if args.mountpoint.is_some() {
            bail!("with --thin, give only MOUNTPOINT (the repository URLs come from the descriptor or --url)");
        }
        if args.image.is_some() {
            bail!("--image and --thin both name the image: give one");
        }
        return mount_thin(&thin, args);
    }
    let Some(mountpoint) = args.mountpoint.clone() else {
        bail!("give SOURCE and MOUNTPOINT (or --thin FILE MOUNTPOINT)");
    };
    let source = args.source.clone();
    if source.starts_with("http://") || source.starts_with("https://") {
        if args.image.is_some() && args.refresh.is_some_and(|d| !d.is_zero()) {
            bail!("--image mounts stay on the tree the tag named at mount time: --refresh applies to a whole-repository mount");
        }
        let mut urls = vec![source.clone()];
        urls.extend(args.mirrors.iter().cloned());
        let tree = Arc::new(open_remote(&args, urls, None)?);
        let remote = tree.remote().clone();
        let root = remote.manifest().root;
        let (path, list) = image_path(&*tree, &root, &args)?;
        if let (Some((flat, list)), false) = (list, args.prefetch_all) {
            // At once, before the mount is even up: ahead of the first read.
            fs::prefetch::start_list(tree.clone(), flat, list);
        }
        let mut filesystem =
            open_fs(&tree, &root, &path, &args)?.with_fetch_ahead(args.image.is_none(), true);
        let interval = args.refresh.unwrap_or(DEFAULT_REFRESH);
        let live = (args.image.is_none() && !interval.is_zero())
            .then(|| Live::new(remote.clone(), filesystem.live(), interval));
        let shown = if args.image.is_some() {
            Shown::Image
        } else {
            Shown::Repository
        };
        let ops = filesystem.op_counters();
        let filesystem = filesystem.with_status(crate::status::provider(
            remote,
            live.clone(),
            source.clone(),
            shown,
            tree.prefetcher().cloned(),
            ops,
        ));
        let fsname = format!("stratum:{source}");
        let target = MountTarget {
            root,
            path: &path,
            mountpoint: &mountpoint,
            fsname: &fsname,
        };
        return serve_fs(filesystem, tree, &target, &args, None, live);
    }
    if args.refresh.is_some_and(|d| !d.is_zero()) {
        bail!("--refresh applies to a repository URL; a mount of a directory stays on the revision it mounted");
    }
    if !args.mirrors.is_empty() || args.cache.is_some() {
        bail!("--mirror and --cache apply to a repository URL, not a directory");
    }
    args.transport.refuse_for_directory()?;
    let dir = PathBuf::from(&source);
    let repo = stratum_publisher::Repository::open(&dir)?;
    let key = match &args.pubkey {
        Some(p) => manifest::load_verifying_key(p)?,
        None => repo.public_key()?,
    };
    // The repository's own store: a directory, or an s3:// bucket prefix.
    let store = repo.store().clone();
    let (m, _) = store
        .manifest(&key)
        .with_context(|| format!("verifying {}", dir.display()))?;
    let tree = Arc::new(LocalTree::new(store));
    let (path, _) = image_path(&*tree, &m.root, &args)?;
    serve_one(
        tree,
        m.root,
        &path,
        &mountpoint,
        &args,
        &format!("stratum:{}", dir.display()),
        None,
    )
}

/// Opens the repository at `urls`; `thin_name` is the repository a thin
/// descriptor names, which the manifest must carry.
fn open_remote(args: &MountArgs, urls: Vec<String>, thin_name: Option<&str>) -> Result<RemoteTree> {
    let Some(pubkey) = &args.pubkey else {
        bail!(
            "mounting {} needs --pubkey KEY.pub (the repository's public key)",
            urls.join(", ")
        );
    };
    let key = manifest::load_verifying_key(pubkey)?;
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(stratum_fetcher::default_cache_dir);
    let mut cfg = stratum_fetcher::RemoteConfig::new(urls.clone(), key, cache);
    cfg.quota_bytes = parse_size(&args.quota)?;
    args.transport.apply(&mut cfg);
    // An image's prefetch workers start as soon as its catalogs are in:
    // their connections are opened while those are fetched (D42). A
    // whole-repository mount starts a list only when a tree is entered,
    // later than an idle connection is kept.
    if args.image.is_some() || args.thin.is_some() {
        cfg.connections_ahead = args.prefetch_jobs;
    }
    if let Some(name) = thin_name {
        args.transport.expect_thin_name(&mut cfg, name)?;
    }
    let remote = stratum_fetcher::Remote::open(cfg)
        .with_context(|| format!("opening {}", urls.join(", ")))?;
    Ok(RemoteTree::with_prefetch_jobs(
        Arc::new(remote),
        args.prefetch_jobs,
    ))
}

/// The namespace path shown at the mountpoint: `/`, or an image's flat
/// tree; for an image, its flat catalog and published prefetch list.
fn image_path<S: TreeStore>(
    tree: &S,
    root: &ObjectId,
    args: &MountArgs,
) -> Result<(String, Option<(ObjectId, PrefetchRef)>)> {
    Ok(match &args.image {
        None => ("/".to_owned(), None),
        Some(name) => {
            let images = fs::image_variants(tree, root, name)?;
            let r = crate::thin::pick_image(&images, name)
                .with_context(|| format!("no image {name} in {}", args.source))?;
            let list = match (&r.prefetch, ObjectId::from_hex(&r.flat_catalog)) {
                (Some(l), Ok(flat)) => Some((flat, l.clone())),
                _ => None,
            };
            (r.flat_path.clone(), list)
        }
    })
}

/// Mounts the image a thin descriptor names (a file, or `docker://REF` in a
/// registry, for this host's platform). Its catalogs are fetched by the ids
/// the descriptor pins and each is hash-verified, so the image is exactly the
/// one described, whatever newer revision the servers have.
fn mount_thin(spec: &Path, args: MountArgs) -> Result<ExitCode> {
    if args.refresh.is_some_and(|d| !d.is_zero()) {
        bail!("a --thin mount stays on the catalogs its descriptor pins: --refresh applies to a whole-repository mount");
    }
    let mountpoint = PathBuf::from(&args.source);
    let (desc, label) = crate::thin::load_thin(spec, &args.registry)?;
    let Some(pubkey) = &args.pubkey else {
        bail!("mounting a thin image needs --pubkey KEY.pub (the repository's public key)");
    };
    desc.check_key(&manifest::load_verifying_key(pubkey)?)
        .with_context(|| label.clone())?;
    let mut urls = if args.urls.is_empty() {
        desc.repository.urls.clone()
    } else {
        args.urls.clone()
    };
    // --mirror adds to them, as for a repository URL.
    urls.extend(args.mirrors.iter().cloned());
    let tree = Arc::new(open_remote(&args, urls, Some(&desc.repository.name))?);
    crate::thin::vouch(tree.remote(), &desc).with_context(|| label.clone())?;
    let flat = desc.flat.catalog_id()?;
    let context = || label.clone();
    check_pinned_catalog(&*tree.catalog(&flat)?, CatalogKind::Flat, &desc.flat.path)
        .with_context(context)?;
    for layer in &desc.layers {
        check_pinned_catalog(
            &*tree.catalog(&layer.catalog_id()?)?,
            CatalogKind::Layer,
            &layer.path,
        )
        .with_context(context)?;
    }
    // A descriptor's list is a hint, whoever wrote it: only paths of the
    // pinned (vouched-for) flat tree are fetched, at most as many as a
    // published list may hold, each object verified as a read's would be.
    let plan = if args.prefetch_all {
        Some(PrefetchPlan::All)
    } else if desc.prioritized_files.is_empty() {
        None
    } else {
        if desc.prioritized_files.len() > MAX_PREFETCH_ENTRIES {
            eprintln!(
                "warning: {label}: {} prioritized files, only the first {MAX_PREFETCH_ENTRIES} are prefetched",
                desc.prioritized_files.len()
            );
        }
        Some(PrefetchPlan::Files(
            desc.prioritized_files
                .iter()
                .take(MAX_PREFETCH_ENTRIES)
                .cloned()
                .collect(),
        ))
    };
    let fsname = format!("stratum:{}", desc.image);
    if !args.layers {
        let filesystem = open_fs(&tree, &flat, "/", &args)?.with_fetch_ahead(false, true);
        let ops = filesystem.op_counters();
        let filesystem = filesystem.with_status(crate::status::provider(
            tree.remote().clone(),
            None,
            label.clone(),
            Shown::Thin,
            tree.prefetcher().cloned(),
            ops,
        ));
        let target = MountTarget {
            root: flat,
            path: "/",
            mountpoint: &mountpoint,
            fsname: &fsname,
        };
        return serve_fs(filesystem, tree, &target, &args, plan, None);
    }
    mount_layers(
        tree,
        &desc,
        &mountpoint,
        &args,
        &fsname,
        plan.map(|p| (flat, p)),
    )
}

fn mount_config(args: &MountArgs, fsname: &str) -> MountConfig {
    MountConfig {
        fsname: fsname.to_owned(),
        allow_other: args.allow_other,
        suid: args.suid,
        dev: args.dev,
        ..MountConfig::default()
    }
}

/// SIGINT and SIGTERM unmount; SIGHUP refreshes a live mount now (and is
/// ignored by the others); SIGUSR1 writes the `--record` list now.
fn signals() -> Result<signal_hook::iterator::Signals> {
    Ok(signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])?)
}

fn start_prefetch<S: TreeStore>(tree: &Arc<S>, plan: Option<(ObjectId, PrefetchPlan)>) {
    if let Some((root, plan)) = plan {
        fs::prefetch::start(tree.clone(), root, plan);
    }
}

fn open_fs<S: TreeStore>(
    tree: &Arc<S>,
    root: &ObjectId,
    path: &str,
    args: &MountArgs,
) -> Result<StratumFs<S>> {
    let fs = StratumFs::new(tree.clone(), root, path)
        .with_context(|| format!("opening {path}"))?
        .with_overlay_xattrs(args.overlay_xattrs());
    Ok(match recorder(args) {
        Some(r) => fs.with_recorder(r),
        None => fs,
    })
}

/// The one `--record` recorder of this process (the layer mounts of a
/// thin image share it).
fn recorder(args: &MountArgs) -> Option<Arc<Recorder>> {
    static RECORDER: std::sync::OnceLock<Option<Arc<Recorder>>> = std::sync::OnceLock::new();
    RECORDER
        .get_or_init(|| args.record.clone().map(|f| Arc::new(Recorder::new(f))))
        .clone()
}

/// Writes the `--record` list, if any, saying where and how long it is.
fn write_record(args: &MountArgs) {
    if let Some(r) = recorder(args) {
        match r.write() {
            Ok(n) => eprintln!("recorded {n} opened files in {}", r.file().display()),
            Err(e) => eprintln!("error: writing --record {}: {e}", r.file().display()),
        }
    }
}

fn serve_one<S: TreeStore>(
    tree: Arc<S>,
    root: ObjectId,
    path: &str,
    mountpoint: &Path,
    args: &MountArgs,
    fsname: &str,
    plan: Option<PrefetchPlan>,
) -> Result<ExitCode> {
    let filesystem = open_fs(&tree, &root, path, args)?;
    let target = MountTarget {
        root,
        path,
        mountpoint,
        fsname,
    };
    serve_fs(filesystem, tree, &target, args, plan, None)
}

/// What one FUSE mount shows and where: `path` of the namespace whose root
/// catalog is `root`, at `mountpoint`, named `fsname` in the mount table.
struct MountTarget<'a> {
    root: ObjectId,
    path: &'a str,
    mountpoint: &'a Path,
    fsname: &'a str,
}

/// Serves `filesystem` (showing `target`) until it is unmounted; `live`
/// starts refreshing once it is mounted.
fn serve_fs<S: TreeStore>(
    filesystem: StratumFs<S>,
    tree: Arc<S>,
    target: &MountTarget<'_>,
    args: &MountArgs,
    plan: Option<PrefetchPlan>,
    live: Option<Arc<Live>>,
) -> Result<ExitCode> {
    let MountTarget {
        root,
        path,
        mountpoint,
        fsname,
    } = *target;
    let plan = match plan {
        Some(p) => Some((root, p)),
        None if args.prefetch_all => Some((root, PrefetchPlan::All)),
        None => None,
    };
    let mut signals = signals()?;
    eprintln!(
        "mounting {path} of {} at {}",
        args.source,
        mountpoint.display()
    );
    let mp = mountpoint.to_owned();
    let record = recorder(args);
    fs::serve(
        filesystem,
        mountpoint,
        &mount_config(args, fsname),
        move |mut unmounter, notifier| {
            start_prefetch(&tree, plan);
            if let Some(live) = &live {
                live.set_notifier(notifier);
                if let Err(e) = live.start() {
                    eprintln!("error: starting the refresh thread: {e}");
                }
            }
            // Unmount on SIGINT/SIGTERM; serving then returns and we exit 0. A
            // busy mount (a file still open) is detached lazily instead: the
            // kernel ends the session when the last file closes.
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    if signal == signal_hook::consts::SIGUSR1 {
                        if let Some(r) = &record {
                            if let Err(e) = r.write() {
                                eprintln!("error: writing --record {}: {e}", r.file().display());
                            }
                        }
                        continue;
                    }
                    if signal == signal_hook::consts::SIGHUP {
                        match &live {
                            Some(live) => live.request_refresh(),
                            None => eprintln!("SIGHUP: this mount is pinned, nothing to refresh"),
                        }
                        continue;
                    }
                    if unmounter.unmount().is_err() {
                        if let Err(e) = fs::unmount(&mp) {
                            eprintln!("error: unmounting {}: {e}", mp.display());
                        }
                    }
                    break;
                }
            });
        },
    )
    .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    write_record(args);
    Ok(ExitCode::SUCCESS)
}

/// `--layers`: one FUSE mount per layer tree (in a private directory), and
/// kernel overlayfs stacking them read-only at the mountpoint.
fn mount_layers<S: TreeStore>(
    tree: Arc<S>,
    desc: &ThinImage,
    mountpoint: &Path,
    args: &MountArgs,
    fsname: &str,
    plan: Option<(ObjectId, PrefetchPlan)>,
) -> Result<ExitCode> {
    // The stack reads one namespace of overlay markers (root: trusted.*,
    // else user.* with `userxattr`); the layer mounts show only that one,
    // so the merged view shows none of them.
    let markers = args.overlay_xattrs();
    let userxattr = match markers {
        OverlayXattrs::Trusted => false,
        OverlayXattrs::User => true,
        OverlayXattrs::Both => bail!(
            "--layers stacks the layers with overlayfs, which reads one namespace of markers: give --overlay-xattrs trusted or user"
        ),
    };
    let work = tempfile::Builder::new()
        .prefix("stratum-layers-")
        .tempdir()
        .context("creating the layer mount directory")?;
    let (tx, rx) = mpsc::channel::<(usize, Result<fs::SessionUnmounter, String>)>();
    let mut dirs = Vec::new();
    let mut threads = Vec::new();
    for (i, layer) in desc.layers.iter().enumerate() {
        let dir = work.path().join(format!("{i:03}"));
        std::fs::create_dir(&dir)?;
        let mut filesystem = StratumFs::new(tree.clone(), &layer.catalog_id()?, "/")
            .with_context(|| format!("opening layer {i} ({})", layer.diff_id))?
            .with_overlay_xattrs(markers)
            .with_fetch_ahead(false, true);
        if let Some(r) = recorder(args) {
            filesystem = filesystem.with_recorder(r);
        }
        let cfg = mount_config(args, &format!("{fsname}:layer{i}"));
        let (tx, d) = (tx.clone(), dir.clone());
        threads.push(std::thread::spawn(move || {
            let tx2 = tx.clone();
            if let Err(e) = fs::serve(filesystem, &d, &cfg, move |u, _| {
                let _ = tx2.send((i, Ok(u)));
            }) {
                let _ = tx.send((
                    i,
                    Err(format!("mounting layer {i} at {}: {e}", d.display())),
                ));
            }
        }));
        dirs.push(dir);
    }
    drop(tx);
    let mut unmounters = Vec::new();
    for _ in 0..dirs.len() {
        match rx.recv() {
            Ok((_, Ok(u))) => unmounters.push(u),
            Ok((_, Err(e))) => {
                unmount_all(&mut unmounters);
                bail!(e);
            }
            Err(_) => break,
        }
    }
    // overlayfs: lowerdir lists the top layer first. A single layer needs a
    // second (empty) lower, since there is no upper directory.
    let mut lowers: Vec<String> = dirs.iter().rev().map(|d| d.display().to_string()).collect();
    if lowers.len() == 1 {
        let empty = work.path().join("empty");
        std::fs::create_dir(&empty)?;
        lowers.push(empty.display().to_string());
    }
    let mut options = format!("lowerdir={}", lowers.join(":"));
    if userxattr {
        options.push_str(",userxattr");
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(mountpoint)
        .status()
        .context("running mount -t overlay")?;
    if !mounted.success() {
        unmount_all(&mut unmounters);
        bail!(
            "mount -t overlay -o {options} {} failed",
            mountpoint.display()
        );
    }
    eprintln!(
        "mounted {} ({} layers) at {}",
        desc.image,
        dirs.len(),
        mountpoint.display()
    );
    start_prefetch(&tree, plan);
    // Until a signal, or until someone unmounts the overlay (`stratum
    // umount`): then the layer mounts have no more use.
    let mut signals = signals()?;
    loop {
        let pending: Vec<_> = signals.pending().collect();
        if pending.contains(&signal_hook::consts::SIGUSR1) {
            write_record(args);
        }
        let stop = pending
            .iter()
            .any(|s| *s != signal_hook::consts::SIGHUP && *s != signal_hook::consts::SIGUSR1);
        if stop || !is_mounted(mountpoint) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Lazily, top first: the overlay may still be in use, and it holds the
    // layer mounts busy until it goes.
    let _ = fs::unmount(mountpoint);
    for d in &dirs {
        if let Err(e) = fs::unmount(d) {
            eprintln!("error: unmounting {}: {e}", d.display());
        }
    }
    unmounters.clear();
    for t in threads {
        let _ = t.join();
    }
    write_record(args);
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is a mount point of this mount namespace.
fn is_mounted(path: &Path) -> bool {
    let Ok(want) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want.as_os_str().as_encoded_bytes())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn unmount_all(unmounters: &mut Vec<fs::SessionUnmounter>) {
    for u in unmounters.iter_mut() {
        if let Err(e) = u.unmount() {
            eprintln!("error: unmounting a layer: {e}");
        }
    }
    unmounters.clear();
}

#[derive(clap::Args)]
pub struct UmountArgs {
    /// The directory a `stratum mount` is mounted on.
    mountpoint: PathBuf,
}

pub fn umount(a: UmountArgs) -> Result<ExitCode> {
    let mountpoint = a.mountpoint.as_path();
    fs::unmount(mountpoint).with_context(|| format!("unmounting {}", mountpoint.display()))?;
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn mountinfo_paths() {
        assert_eq!(
            super::unescape_mountinfo(r"/tmp/a\040b\134c"),
            b"/tmp/a b\\c".to_vec()
        );
        assert_eq!(super::unescape_mountinfo(r"/x\04"), b"/x\\04".to_vec());
    }
}
