//! `stratum`: publish container images into a content-addressed repository
//! and read them back. This file only parses arguments and dispatches; the
//! work lives in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that returns the write error instead of panicking, so that
/// `stratum images --json | head` ends quietly when `head` closes the pipe
/// (see [`is_broken_pipe`]). Use it, never `println!`, for command output.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod commands;
mod lifecycle;
mod limits_args;
mod mount;
mod progress;
mod registry_args;
mod replicate;
mod serve;
mod stray_keys;
mod sync;
mod thin;
mod transport_args;

#[derive(Parser)]
#[command(
    name = "stratum",
    version,
    about = "Publish container images into a shared content-addressed repository",
    long_about = "stratum unpacks OCI images layer by layer into a content-addressed repository \
(BLAKE3 ids, zstd objects, SQLite catalogs) that any static HTTP server can serve. Each image is \
published as per-layer trees (/layers/ab/<diff_id>) and as a flat rootfs (/flat/ab/<manifest digest>), \
named under /images/<name>/<tag>. Every revision is signed.\n\n\
A first run:\n  stratum keygen key\n  stratum init repo --key key\n  \
stratum publish oci:./image:latest --repo repo --key key\n  stratum images repo\n  \
stratum pull repo --image local/image:latest ./rootfs",
    after_help = "Logs go to stderr; set RUST_LOG=debug (or stratum=trace) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    s3: S3Args,
}

/// How to reach the store of an `s3://BUCKET/PREFIX` repository (any command).
#[derive(clap::Args)]
#[command(next_help_heading = "S3 repositories (REPO = s3://BUCKET/PREFIX)")]
struct S3Args {
    /// S3 endpoint URL, e.g. https://s3.example.org or http://127.0.0.1:9000
    /// (default: $AWS_ENDPOINT_URL, else AWS). Credentials come from the usual
    /// AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    #[arg(long, global = true, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, global = true, value_name = "REGION")]
    s3_region: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key: private key in KEYFILE (mode 0600), public key in KEYFILE.pub.
    ///
    /// Keep the private key outside the repository; give KEYFILE.pub to the nodes that read it.
    Keygen { keyfile: PathBuf },
    /// Create an empty repository (revision 1) signed with KEYFILE.
    Init {
        repo: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Repository name recorded in every manifest (default: the directory name).
        #[arg(long)]
        name: Option<String>,
        /// Base URL nodes will fetch the repository from, recorded in REPO/.stratum/urls as
        /// the default of `thin`, `thin push` and `publish --thin-dir`; repeat for mirrors.
        #[arg(long = "url", value_name = "URL", value_parser = thin::parse_url)]
        urls: Vec<String>,
    },
    /// Ingest images and publish them as one new signed revision.
    ///
    /// SOURCE is oci:DIR[:TAG] (an OCI image layout), docker-archive:FILE (docker save) or
    /// docker://HOST[:PORT]/REPO[:TAG|@sha256:…] (a registry; layers already in the
    /// repository are never downloaded, the others download in parallel).
    /// Layers already in the repository are not ingested again; an image whose manifest
    /// is already published under the same name is left as it is.
    Publish {
        #[arg(required = true)]
        sources: Vec<String>,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Name for a single SOURCE under /images (default: local/<layout dir name>:<tag>).
        #[arg(long = "as", value_name = "NAME:TAG")]
        as_name: Option<String>,
        /// Print a JSON array with one report object per image instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        platforms: registry_args::PlatformArgs,
        #[command(flatten)]
        registry: registry_args::RegistryArgs,
        #[command(flatten)]
        thin: thin::PublishThinArgs,
        #[command(flatten)]
        limits: limits_args::LimitsArgs,
    },
    /// List the published images.
    Images {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        /// Verify the manifest with this public key (default: the repository's own copy).
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Show the current revision: name, revision, timestamp, root catalog.
    Info {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// List a directory of the repository namespace (e.g. /images, /layers/ab/<hex>/usr).
    Ls {
        repo: PathBuf,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Write a file of the repository namespace to stdout.
    Cat {
        repo: PathBuf,
        path: String,
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Re-encode objects published since the last run at a dense zstd level.
    ///
    /// Object ids do not depend on the encoding, so no catalog or manifest changes and
    /// readers are never disturbed. Publishing uses a fast level; run this off-peak.
    Compact {
        repo: PathBuf,
        /// zstd level (1-22); 19 is about 15% smaller than the publish level, and slow.
        #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Look at every object, not only those published since the last run.
        #[arg(long)]
        all: bool,
        /// Worker threads (default: the number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Verify the signature and every catalog and object reachable from the manifest.
    ///
    /// Exits 0 only when everything verifies; every problem found is listed.
    Check {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Mount the repository (or one image's flat rootfs) read-only with FUSE.
    ///
    /// Serves until unmounted (`stratum umount MOUNTPOINT`) or interrupted (SIGINT/SIGTERM).
    /// Catalogs load on first use of their subtree; file contents are read on first access.
    ///
    /// With --thin FILE, mounts the image a thin descriptor names, by the catalog ids it pins:
    /// `stratum mount --thin FILE MOUNTPOINT [--url URL] --pubkey KEY.pub [--layers]`.
    Mount {
        /// A repository: an http(s):// URL (needs --pubkey) or a local directory.
        /// With --thin, the only operand is MOUNTPOINT.
        source: String,
        mountpoint: Option<PathBuf>,
        /// Mount the image described by this thin-image descriptor (see docs/THIN-IMAGE.md):
        /// a file, or docker://HOST/REPO:TAG pushed by `stratum thin push` (this host's platform).
        #[arg(long, value_name = "FILE|docker://REF")]
        thin: Option<PathBuf>,
        /// With --thin: fetch from these URLs instead of the descriptor's.
        #[arg(long = "url", value_name = "URL", requires = "thin")]
        urls: Vec<String>,
        /// With --thin: mount each per-layer tree and stack them with overlayfs at MOUNTPOINT
        /// (the same view as the flat tree, for layer-aware runtimes).
        #[arg(long, requires = "thin")]
        layers: bool,
        /// Fetch the whole image in the background while the mount is already usable
        /// (eager mode for bad networks). Without it, a thin image's prioritized files are
        /// prefetched.
        #[arg(long)]
        prefetch_all: bool,
        /// Verify the manifest with this public key (required for a URL; default for a
        /// directory: the repository's own copy).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// More URLs serving the same repository, tried in turn when one fails.
        #[arg(long = "mirror", value_name = "URL")]
        mirrors: Vec<String>,
        /// The node's cache directory, shared by all mounts and pulls
        /// (default: /var/cache/stratum as root, else $XDG_CACHE_HOME/stratum).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Cache quota; least recently used content is evicted beyond it (e.g. 500M, 4G).
        #[arg(long, value_name = "SIZE", default_value = "4G")]
        quota: String,
        /// Mount only this image's flat rootfs at MOUNTPOINT.
        #[arg(long, value_name = "NAME:TAG")]
        image: Option<String>,
        /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf unless root).
        #[arg(long)]
        allow_other: bool,
        /// Honour the image's setuid/setgid bits (the mount is nosuid by default: an image
        /// author must not be able to give root to local users). Only for trusted repositories.
        #[arg(long)]
        suid: bool,
        /// Let device nodes of the image be opened (nodev by default). Only for trusted
        /// repositories; overlayfs whiteouts do not need it.
        #[arg(long)]
        dev: bool,
        /// Which overlayfs markers of opaque directories the per-layer trees show:
        /// `trusted` (trusted.overlay.*, for overlayfs mounted by root), `user`
        /// (user.overlay.*, for rootless overlayfs mounted with userxattr) or `both`.
        /// A stack must get only the namespace it reads, or its merged view shows
        /// overlayfs' private attributes. With --layers it also picks how the stack is
        /// mounted. [default: trusted as root, else user]
        #[arg(long, value_name = "WHICH", value_enum)]
        overlay_xattrs: Option<mount::OverlayXattrsArg>,
        /// With --thin docker://…: how to reach the registry.
        #[command(flatten)]
        registry: registry_args::RegistryArgs,
        /// With a URL: timeouts and retries.
        #[command(flatten)]
        transport: transport_args::TransportArgs,
    },
    /// Unmount a stratum mount.
    Umount { mountpoint: PathBuf },
    /// Serve a repository read-only over HTTP (GET/HEAD, byte ranges, strong ETags).
    ///
    /// Objects under data/ get `Cache-Control: public, max-age=SECONDS, immutable`; the manifest
    /// gets `no-cache`. Only those paths are served (.stratum/manifest, .stratum/public.pem and
    /// data/<2 hex>/<62 hex>[C|M]): writer files (.stratum/lock, .stratum/dirty, .stratum/tmp/),
    /// a key or any other file left in the directory get 404. Warns about private keys inside REPO.
    /// Prints `listening on http://ADDR` once bound (`--listen 127.0.0.1:0` picks a free port).
    /// Connections are capped and timed out (--max-connections, --header-timeout,
    /// --idle-timeout). Stops on SIGINT/SIGTERM. Access log: RUST_LOG=stratum::serve=info.
    Serve {
        /// The repository directory.
        repo: PathBuf,
        /// Address to listen on, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Cache lifetime of the immutable objects under data/, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = serve::DEFAULT_MAX_AGE)]
        max_age: u64,
        /// Close a connection that has not sent a complete request head within SECONDS of
        /// connecting or of the end of its previous response (so also how long an idle
        /// kept-alive connection stays open).
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = serve::DEFAULT_HEADER_TIMEOUT.as_secs(),
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        header_timeout: u64,
        /// Close a connection on which no byte could be read or written for SECONDS (a client
        /// that stopped reading a response).
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = serve::DEFAULT_IDLE_TIMEOUT.as_secs(),
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        idle_timeout: u64,
        /// Serve at most N connections at once; further ones wait in the listen backlog until
        /// one closes. Lowered, with a warning, when the file-descriptor limit (raised up to its
        /// hard limit if needed) cannot hold two descriptors per connection.
        #[arg(
            long,
            value_name = "N",
            default_value_t = serve::DEFAULT_MAX_CONNECTIONS,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        max_connections: u32,
    },
    /// Write the thin-image descriptor of a published image (JSON, see docs/THIN-IMAGE.md).
    ///
    /// The descriptor pins the image's flat and per-layer catalog ids, the revision and the
    /// repository's public-key fingerprint, and names the URLs nodes fetch the repository from.
    /// Written to stdout unless -o is given. `stratum thin push REPO --image NAME:TAG DEST_REF`
    /// pushes it to an OCI registry instead (docker://…, one artifact per platform).
    Thin(thin::ThinArgs),
    /// Keep a repository in sync with a wishlist of registry images (docs/WISHLIST.md).
    ///
    /// Tag globs are expanded through the registries' tag lists; every image whose tag
    /// moved is published, every unchanged one costs one manifest request and no blob;
    /// images dropped from the wishlist are unlinked from /images (their trees stay until
    /// garbage collection). One signed revision per sync, however many images changed.
    /// One failing image does not stop the others; the exit status is 1 if any failed.
    /// Every action is appended to the wishlist's JSON-lines event log.
    Sync(sync::SyncArgs),
    /// Unlink images from /images in a new revision; their trees stay for the grace
    /// period (running nodes may still use them), then `stratum gc` removes them.
    Rm(lifecycle::RmArgs),
    /// Garbage-collect: forget retired images older than the grace period (their trees
    /// and every layer no other image uses), then delete every object that neither the
    /// newest revisions nor a tagged one reaches and that is older than the safety window.
    /// Holds the repository lock; nodes reading a kept revision are never disturbed.
    Gc(lifecycle::GcArgs),
    /// List the revisions, newest first (each manifest records its parent).
    History(lifecycle::HistoryArgs),
    /// Name a revision; garbage collection keeps tagged revisions and what they reach.
    Tag(lifecycle::TagArgs),
    /// Publish a new revision whose images are those of an older one (the revision
    /// number never goes back; the images it unlinks are retired, not deleted).
    Rollback(lifecycle::RollbackArgs),
    /// Mirror a served repository into a local directory (a replica), incrementally.
    ///
    /// Only objects the replica lacks are fetched, several at a time; each is verified
    /// (BLAKE3) before it is stored, the manifest's signature with --pubkey, and an older
    /// revision than the replica's is refused. The manifest is written last, so the replica
    /// is always a complete revision, and an interrupted run is resumed by the next one.
    /// Serve DEST with `stratum serve` or nginx; nodes list it with --mirror.
    Replicate(replicate::ReplicateArgs),
    /// Materialize an image's flat rootfs, or any subtree, into DEST.
    ///
    /// From a local repository, or over HTTP(S) from its URL through the node's verified cache
    /// (`stratum pull https://host/repo --pubkey KEY.pub --image NAME:TAG DEST`).
    /// DEST must not exist or be empty. Owners and device nodes are reproduced when run as root.
    /// Nothing is ever written outside DEST.
    Pull {
        /// A repository directory, or the http(s):// URL of one (then --pubkey is required).
        repo: PathBuf,
        /// An image name with tag, as listed by `stratum images`.
        #[arg(
            long,
            value_name = "NAME:TAG",
            conflicts_with_all = ["path", "thin"],
            required_unless_present_any = ["path", "thin"]
        )]
        image: Option<String>,
        /// A namespace path, e.g. a layer tree /layers/ab/<diff_id hex>.
        #[arg(long, conflicts_with = "thin")]
        path: Option<String>,
        /// The image a thin-image descriptor names, by the flat catalog id it pins: a file, or
        /// docker://HOST/REPO:TAG pushed by `stratum thin push` (this host's platform).
        #[arg(long, value_name = "FILE|docker://REF")]
        thin: Option<PathBuf>,
        dest: PathBuf,
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
        /// With --thin docker://…: how to reach the registry.
        #[command(flatten)]
        registry: registry_args::RegistryArgs,
        /// With a URL: timeouts and retries.
        #[command(flatten)]
        transport: transport_args::TransportArgs,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    stratum_catalog::location::S3Options::set_defaults(stratum_catalog::location::S3Options {
        endpoint: cli.s3.s3_endpoint,
        region: cli.s3.s3_region,
        ..Default::default()
    });
    match commands::run(cli.command) {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted, it has; say nothing.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", show_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG`; and the libraries' notices for
/// the user ([`stratum_catalog::NOTICE`]) as plain lines on stderr, always.
fn init_tracing() {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let is_notice = |m: &tracing::Metadata<'_>| m.target() == stratum_catalog::NOTICE;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not in files, pipes or
        // journald, and never with NO_COLOR set (https://no-color.org).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_filter(env.and(filter_fn(move |m| !is_notice(m))));
    tracing_subscriber::registry()
        .with(logs)
        .with(NoticeLayer.with_filter(filter_fn(is_notice)))
        .init();
}

/// Writes the message of each [`stratum_catalog::NOTICE`] event to stderr,
/// as the line it is (no time, level or target).
struct NoticeLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoticeLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        eprintln!("{}", message.0);
    }
}

/// A manifest timestamp (Unix seconds) as people read it, in UTC:
/// `2026-12-07T08:11:41Z`. `--json` keeps the number.
fn show_time(unix_seconds: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The error and its causes, joined with `: ` as `{:#}` does, but without
/// a cause whose text the message already holds: many library errors say
/// their cause in their own message and also return it as `source()`, and
/// "No such file or directory" twice helps nobody.
fn show_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// True when writing our output failed because its reader closed the pipe.
/// Rust ignores SIGPIPE, so the write returns EPIPE instead of killing us;
/// the servers (`serve`, `mount`) rely on that for their sockets.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
