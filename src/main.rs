//! `stratum`: publish container images into a content-addressed repository
//! and read them back. This file only parses arguments and dispatches; the
//! work lives in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod progress;

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
    },
    /// Ingest images and publish them as one new signed revision.
    ///
    /// SOURCE is oci:DIR[:TAG] (an OCI image layout) or docker-archive:FILE (docker save).
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
        /// Print one JSON object per image instead of a table.
        #[arg(long)]
        json: bool,
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
    /// Materialize an image's flat rootfs, or any subtree, into DEST.
    ///
    /// DEST must not exist or be empty. Owners and device nodes are reproduced when run as root.
    /// Nothing is ever written outside DEST.
    Pull {
        repo: PathBuf,
        /// An image name with tag, as listed by `stratum images`.
        #[arg(
            long,
            value_name = "NAME:TAG",
            conflicts_with = "path",
            required_unless_present = "path"
        )]
        image: Option<String>,
        /// A namespace path, e.g. a layer tree /layers/ab/<diff_id hex>.
        #[arg(long)]
        path: Option<String>,
        dest: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
