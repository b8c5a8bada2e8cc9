//! `stratum keygen` and `stratum init`: a signing key and an empty
//! repository.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use stratum_catalog::manifest;
use stratum_publisher::Repository;

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PEM, mode 0600; must not exist); the public key
    /// goes to KEYFILE.pub.
    keyfile: PathBuf,
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The repository to create: a directory (created if missing), or s3://BUCKET/PREFIX.
    repo: PathBuf,
    /// The private key (PEM, from `stratum keygen`) that signs revision 1; its public key
    /// is stored in the repository as .stratum/public.pem.
    #[arg(long)]
    key: PathBuf,
    /// Repository name recorded in every manifest (default: the directory name).
    #[arg(long)]
    name: Option<String>,
    /// Base URL nodes will fetch the repository from, recorded in REPO/.stratum/urls as
    /// the default of `thin`, `thin push` and `publish --thin-dir`; repeat for mirrors.
    #[arg(long = "url", value_name = "URL", value_parser = crate::thin::parse_url)]
    urls: Vec<String>,
}

pub fn keygen(a: KeygenArgs) -> Result<ExitCode> {
    let keyfile = a.keyfile.as_path();
    let public = manifest::generate_keypair(keyfile)
        .with_context(|| format!("generating key {}", keyfile.display()))?;
    outln!("private key: {}", keyfile.display());
    outln!(
        "public key:  {}",
        manifest::public_key_path(keyfile).display()
    );
    outln!("fingerprint: {}", manifest::key_fingerprint(&public));
    Ok(ExitCode::SUCCESS)
}

pub fn init(a: InitArgs) -> Result<ExitCode> {
    let (repo, urls) = (a.repo.as_path(), a.urls.as_slice());
    let sk = manifest::load_signing_key(&a.key)?;
    let name = match a.name {
        Some(n) => n,
        None => std::path::absolute(repo)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "stratum".into()),
    };
    let m = Repository::init(repo, &sk, &name)
        .with_context(|| format!("initializing {}", repo.display()))?;
    outln!(
        "initialized repository {:?} at {} (revision {})",
        m.name,
        repo.display(),
        m.revision
    );
    if !stratum_publisher::repo::RepoLocation::from_path(repo)?.is_remote() {
        crate::stray_keys::warn_about_private_keys(repo);
    }
    if !urls.is_empty() {
        crate::thin::write_default_urls(repo, urls).with_context(|| {
            format!(
                "the repository is initialized, but recording its URLs in {} failed",
                repo.join(crate::thin::URLS_PATH).display()
            )
        })?;
        outln!("default URLs: {}", urls.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
