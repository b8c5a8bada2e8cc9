//! A repository's default URLs (`.stratum/urls`, written by `stratum init
//! --url`): the `repository.urls` of its descriptors when none are given.
//! One URL per line; empty lines and lines starting with `#` are skipped,
//! repeats are dropped, and every URL is checked as a descriptor's is.

use stratum_catalog::backend::Backend;
use stratum_catalog::layout::URLS_PATH;

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

/// Why the default URLs could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] stratum_catalog::Error),
    #[error("reading {0}")]
    NotUtf8(String),
    #[error(transparent)]
    Invalid(#[from] ThinImageError),
}
