//! `stratum`: publish container images into a content-addressed repository
//! and read them back. This file only parses arguments and dispatches; the
//! work lives in the library crates.

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

mod bundle;
mod init;
mod inspect;
mod lifecycle;
mod limits_args;
mod metrics_args;
mod mount;
mod progress;
mod publish;
mod pull;
mod registry_args;
mod replicate;
mod serve;
mod snapshotter;
mod status;
mod stray_keys;
mod sync;
mod sync_every;
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
    Keygen(init::KeygenArgs),
    /// Create an empty repository (revision 1) signed with KEYFILE.
    Init(init::InitArgs),
    /// Ingest images and publish them as one new signed revision.
    ///
    /// SOURCE is oci:DIR[:TAG] (an OCI image layout), docker-archive:FILE (docker save) or
    /// docker://HOST[:PORT]/REPO[:TAG|@sha256:…] (a registry; layers already in the
    /// repository are never downloaded, the others download in parallel).
    /// Layers already in the repository are not ingested again; an image whose manifest
    /// is already published under the same name is left as it is.
    Publish(publish::PublishArgs),
    /// List the published images.
    Images(inspect::ImagesArgs),
    /// Show the current revision: name, revision, timestamp, root catalog.
    Info(inspect::InfoArgs),
    /// List a directory of the repository namespace (e.g. /images, /layers/ab/<hex>/usr).
    Ls(inspect::LsArgs),
    /// Write a file of the repository namespace to stdout.
    Cat(inspect::CatArgs),
    /// Re-encode objects published since the last run at a dense zstd level.
    ///
    /// Object ids do not depend on the encoding, so no catalog or manifest changes and
    /// readers are never disturbed. Publishing uses a fast level; run this off-peak.
    Compact(lifecycle::CompactArgs),
    /// Verify the signature and every catalog and object reachable from the manifest.
    ///
    /// Exits 0 only when everything verifies; every problem found is listed.
    Check(inspect::CheckArgs),
    /// Mount the repository (or one image's flat rootfs) read-only with FUSE.
    ///
    /// Serves until unmounted (`stratum umount MOUNTPOINT`) or interrupted (SIGINT/SIGTERM).
    /// Catalogs load on first use of their subtree; file contents are read on first access.
    ///
    /// A whole-repository mount of a URL follows the repository (--refresh, default 60s):
    /// new images appear under /images, removed ones vanish, moved tags point at their new
    /// trees; open files and working directories inside image trees are not disturbed.
    /// --image, --thin and directory mounts stay on what they resolved at mount time.
    ///
    /// With --thin FILE, mounts the image a thin descriptor names, by the catalog ids it pins:
    /// `stratum mount --thin FILE MOUNTPOINT [--url URL] --pubkey KEY.pub [--layers]`.
    Mount(mount::MountArgs),
    /// Unmount a stratum mount.
    Umount(mount::UmountArgs),
    /// Show what a mount of a URL is doing: source and mirror in use, revision and its
    /// publish time, last and next refresh, cache use, objects and bytes fetched, cache
    /// hits and misses, download errors (--json: the object of docs/DEPLOYMENT.md).
    Status(status::StatusArgs),
    /// Make a live mount refresh now (SIGHUP to its process) and print the revision it is
    /// on afterwards; exits 1 if the refresh failed (the mount stays on its revision).
    Reload(status::ReloadArgs),
    /// Serve a repository read-only over HTTP (GET/HEAD, byte ranges, strong ETags).
    ///
    /// Objects under data/ get `Cache-Control: public, max-age=SECONDS, immutable`; the manifest
    /// gets `no-cache`. Only those paths are served (.stratum/manifest, .stratum/public.pem and
    /// data/<2 hex>/<62 hex>[C|M]): writer files (.stratum/lock, .stratum/dirty, .stratum/tmp/),
    /// a key or any other file left in the directory get 404. Warns about private keys inside REPO.
    /// Prints `listening on http://ADDR` once bound (`--listen 127.0.0.1:0` picks a free port).
    /// Speaks HTTP/1.1 and, to clients with prior knowledge, HTTP/2 over cleartext (h2c) on
    /// the same port (`curl --http2-prior-knowledge`, `stratum pull
    /// --http2-prior-knowledge`; at most 128 streams per connection). Connections are capped and timed out (--max-connections, --header-timeout,
    /// --idle-timeout). Stops on SIGINT/SIGTERM. Access log: RUST_LOG=stratum::serve=info.
    Serve(serve::ServeArgs),
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
    ///
    /// With --every DURATION it keeps running as a service: one round per interval, one
    /// JSON line per round with --json, Prometheus metrics with --metrics HOST:PORT; SIGTERM
    /// or SIGINT stops it (exit 0) with the repository at its last revision.
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
    Pull(pull::PullArgs),
    /// Write an OCI runtime bundle (DIR/config.json) for a published image, for `runc run`.
    ///
    /// The config is derived from the image's OCI config as `umoci unpack` derives it
    /// (args from Entrypoint+Cmd, Env, WorkingDir, User resolved in the image's
    /// /etc/passwd and /etc/group, Labels as annotations), on `runc spec`'s defaults,
    /// with a read-only root.path in the image's flat tree: under a live mount
    /// (--mount MOUNTPOINT) or at --rootfs PATH (e.g. a `stratum pull` directory).
    /// docs/DEPLOYMENT.md lists where it differs from umoci's.
    Bundle(bundle::BundleArgs),
    /// Serve containerd's snapshot API on a unix socket: a proxy snapshotter plugin whose
    /// layers come from the live repository mount when the repository publishes them.
    ///
    /// A layer whose chain is a stack of published layers is committed at once on
    /// MOUNTPOINT/layers/ab/<diff_id> (containerd neither downloads nor applies it); other
    /// layers are local overlayfs snapshots under --root. Stops on SIGINT/SIGTERM.
    Snapshotter(snapshotter::SnapshotterArgs),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    stratum_catalog::location::S3Options::set_defaults(stratum_catalog::location::S3Options {
        endpoint: cli.s3.s3_endpoint,
        region: cli.s3.s3_region,
        ..Default::default()
    });
    match run(cli.command) {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted, it has; say nothing.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", show_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand: each takes its `Args` and prints what its library
/// call returns.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen(a) => init::keygen(a),
        Command::Init(a) => init::init(a),
        Command::Publish(a) => publish::publish(a),
        Command::Images(a) => inspect::images(a),
        Command::Info(a) => inspect::info(a),
        Command::Ls(a) => inspect::ls(a),
        Command::Cat(a) => inspect::cat(a),
        Command::Compact(a) => lifecycle::run_compact(a),
        Command::Check(a) => inspect::check(a),
        Command::Mount(a) => mount::mount(a),
        Command::Umount(a) => mount::umount(a),
        Command::Status(a) => status::status(a),
        Command::Reload(a) => status::reload(a),
        Command::Serve(a) => serve::run(a),
        Command::Thin(a) => thin::run(a),
        Command::Sync(a) => sync::run(a),
        Command::Rm(a) => lifecycle::run_rm(a),
        Command::Gc(a) => lifecycle::run_gc(a),
        Command::History(a) => lifecycle::run_history(a),
        Command::Tag(a) => lifecycle::run_tag(a),
        Command::Rollback(a) => lifecycle::run_rollback(a),
        Command::Replicate(a) => replicate::run(a),
        Command::Pull(a) => pull::pull(a),
        Command::Bundle(a) => bundle::run(a),
        Command::Snapshotter(a) => snapshotter::run(a),
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
