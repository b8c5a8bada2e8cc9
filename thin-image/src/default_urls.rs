//! A repository's default URLs (`.stratum/urls`, written by `stratum init
//! --url`): the `repository.urls` of its descriptors when none are given.
//! One URL per line; empty lines and lines starting with `#` are skipped,
//! repeats are dropped, and every URL is checked as a descriptor's is.

use std::path::Path;

use stratum_catalog::backend::Backend;
use stratum_catalog::layout::URLS_PATH;
use stratum_catalog::location::RepoLocation;

use crate::validate::check_url;
use crate::ThinImageError;

/// The URLs recorded in `backend` (a repository), in order; none when it
/// records none. `shown` names the file in messages (`DIR/.stratum/urls`).
pub fn read(backend: &dyn Backend, shown: &str) -> Result<Vec<String>, Error> {
    let Some(bytes) = backend.get(URLS_PATH)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::NotUtf8(shown.to_owned()))?;
    let mut urls = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_url(&format!("{shown}:{}", n + 1), line)?;
        if !urls.iter().any(|u| u == line) {
            urls.push(line.to_owned());
        }
    }
    Ok(urls)
}

/// Records `urls` as the defaults of the repository in `backend`,
/// replacing the file atomically.
pub fn write(backend: &dyn Backend, urls: &[String]) -> Result<(), Error> {
    let mut text = String::new();
    for u in urls {
        text.push_str(u);
        text.push('\n');
    }
    Ok(backend.replace(URLS_PATH, text.as_bytes())?)
}

/// The default URLs of the repository at `repo` (a directory, or a
/// location such as `s3://bucket/prefix`).
pub fn of_repo(repo: &Path) -> Result<Vec<String>, Error> {
    let backend = RepoLocation::from_path(repo)?.open_backend()?;
    let shown = format!("{}/{URLS_PATH}", repo.display());
    read(backend.as_ref(), &shown)
}

/// Records `urls` as the defaults of the repository at `repo` (`stratum init --url`).
pub fn record(repo: &Path, urls: &[String]) -> Result<(), Error> {
    let backend = RepoLocation::from_path(repo)?.open_backend()?;
    write(backend.as_ref(), urls)
}

/// `urls` when given, else the default URLs of the repository at `repo`,
/// else [`Error::NoneRecorded`].
pub fn given_or_default(repo: &Path, urls: &[String]) -> Result<Vec<String>, Error> {
    if !urls.is_empty() {
        return Ok(urls.to_vec());
    }
    let defaults = of_repo(repo)?;
    if defaults.is_empty() {
        return Err(Error::NoneRecorded(repo.display().to_string()));
    }
    Ok(defaults)
}

/// Why the default URLs could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] stratum_catalog::Error),
    #[error("reading {0}")]
    NotUtf8(String),
    #[error(transparent)]
    Invalid(#[from] ThinImageError),
    /// No URL given, and the repository records none.
    #[error(
        "no --url given, and {0} records no default URLs: give --url URL (repeat for \
         mirrors), or record them with `stratum init REPO --key KEY --url URL…` \
         ({URLS_PATH} in the repository, one URL per line)"
    )]
    NoneRecorded(String),
}
