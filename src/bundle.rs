//! `stratum bundle`: write an OCI runtime bundle's `config.json` for a
//! published image, rooted in the image's flat tree in a mount (the work is
//! `stratum_fetcher::bundle`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stratum_catalog::manifest;
use stratum_catalog::namespace::Namespace;
use stratum_fetcher::bundle::{write_bundle, Rootfs};

#[derive(clap::Args)]
pub struct BundleArgs {
    /// A repository directory, or the http(s):// URL of one (then --pubkey is required).
    repo: PathBuf,
    /// An image name with tag, as listed by `stratum images`; of a multi-platform
    /// image, this node's platform is taken.
    #[arg(long, value_name = "NAME:TAG")]
    image: String,
    /// The bundle directory: DIR/config.json is written (DIR is created if missing;
    /// an existing config.json is replaced).
    dir: PathBuf,
    /// A live whole-repository mount (`stratum mount URL MOUNTPOINT`): root.path is
    /// MOUNTPOINT/flat/<ab>/<manifest digest hex>.
    #[arg(
        long,
        value_name = "MOUNTPOINT",
        conflicts_with = "rootfs",
        required_unless_present = "rootfs"
    )]
    mount: Option<PathBuf>,
    /// The image's root file system, e.g. a `stratum pull` directory or a
    /// `stratum mount --image` mount point.
    #[arg(long, value_name = "PATH")]
    rootfs: Option<PathBuf>,
    /// Set process.terminal (for an interactive `runc run`; umoci's default).
    #[arg(long)]
    terminal: bool,
    /// Print what was written as JSON (path, rootfs, image, manifest digest, platform).
    #[arg(long)]
    json: bool,
    /// Verify the manifest with this public key (required with a URL; default for a
    /// directory: the repository's own copy).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Cache directory for a URL, shared with `stratum mount` (default: /var/cache/stratum
    /// as root, else $XDG_CACHE_HOME/stratum or ~/.cache/stratum).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// With a URL: more URLs serving the same repository, tried in turn when one fails.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// With a URL: timeouts and retries.
    #[command(flatten)]
    transport: crate::transport_args::TransportArgs,
}

pub fn run(a: BundleArgs) -> Result<ExitCode> {
    let rootfs = match (a.mount, a.rootfs) {
        (_, Some(p)) => Rootfs::Path(p),
        (Some(m), None) => Rootfs::UnderMount(m),
        (None, None) => bail!("give --mount MOUNTPOINT or --rootfs PATH"),
    };
    let url = a
        .repo
        .to_str()
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"));
    let bundle = match url {
        Some(url) => {
            let pubkey = a.pubkey.with_context(|| {
                format!("--pubkey KEY.pub is required to read {url}: it verifies the manifest")
            })?;
            let key = manifest::load_verifying_key(&pubkey)?;
            let cache = a.cache.unwrap_or_else(stratum_fetcher::default_cache_dir);
            let mut urls = vec![url.to_owned()];
            urls.extend(a.mirrors.iter().cloned());
            let mut cfg = stratum_fetcher::RemoteConfig::new(urls.clone(), key, cache.clone());
            a.transport.apply(&mut cfg);
            let remote =
                std::sync::Arc::new(stratum_fetcher::Remote::open(cfg).with_context(|| {
                    format!("opening {} (cache {})", urls.join(", "), cache.display())
                })?);
            let ns = Namespace::new(
                stratum_fetcher::RemoteLoader::new(remote.clone()),
                &remote.manifest().root,
            )?;
            write_bundle(&ns, &*remote, &a.image, &a.dir, &rootfs, a.terminal)?
        }
        None => {
            if a.cache.is_some() {
                bail!("--cache applies to a URL, not to a local repository");
            }
            if !a.mirrors.is_empty() {
                bail!("--mirror applies to a URL, not to a local repository");
            }
            a.transport.refuse_for_directory()?;
            let reader = crate::inspect::open_reader(&a.repo, a.pubkey)?;
            let ns = reader.namespace()?;
            write_bundle(&ns, &reader.store, &a.image, &a.dir, &rootfs, a.terminal)?
        }
    };
    for w in &bundle.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&bundle)?);
    } else {
        outln!(
            "wrote {} for {} ({}): root {}",
            bundle.path.display(),
            bundle.image,
            bundle.platform,
            bundle.rootfs.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
