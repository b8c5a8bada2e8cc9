//! `--timeout SECONDS`, `--retries N`, `--name NAME` and
//! `--http2-prior-knowledge` of `mount`, `pull` and `bundle` from a URL: the
//! repository name the manifest must carry, how long a request to a mirror
//! may wait, how many extra rounds over the mirrors a fetch runs, and
//! whether `http://` mirrors are spoken to in HTTP/2 without negotiation (`fetcher/src/transport.rs`, defaults in
//! `RemoteConfig::new`, docs/DEPLOYMENT.md §4.5).

use std::time::Duration;

use anyhow::{bail, Result};
use stratum_fetcher::RemoteConfig;

/// The longest `--timeout` accepted (a day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// The connect timeout is `--timeout`, but at most this.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Transport (with a repository URL)")]
pub struct TransportArgs {
    /// Seconds without receiving anything (the response head or the next
    /// body bytes) before a request to a mirror fails; connecting may take
    /// this long, at most 5 s. A request also ends after 10 × SECONDS plus
    /// the connect time whatever its progress. Decimals allowed [default: 20]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Extra rounds over the mirrors after a round in which every mirror
    /// failed, with exponential backoff (0.2 s, 0.4 s, … at most 5 s) in
    /// between [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: Option<u32>,
    /// The repository name the signed manifest must carry: another
    /// repository signed with the same key is refused. Default: the name in
    /// a thin descriptor, else the name this cache recorded when the first
    /// URL was first used with this key (trust on first use)
    #[arg(long = "name", value_name = "NAME")]
    pub repository_name: Option<String>,
    /// Speak HTTP/2 to http:// mirrors without negotiating it (h2c): every
    /// request to a mirror multiplexed on one connection. For `stratum
    /// serve` and servers configured for it (nginx `listen … http2`); an
    /// HTTP/1.1-only server (Squid, S3, a default nginx) then fails every
    /// request. https:// mirrors use HTTP/2 whenever the server offers it,
    /// with or without this flag
    #[arg(long)]
    pub http2_prior_knowledge: bool,
}

impl TransportArgs {
    /// True when either flag was given.
    pub fn is_set(&self) -> bool {
        self.timeout.is_some()
            || self.retries.is_some()
            || self.repository_name.is_some()
            || self.http2_prior_knowledge
    }

    /// Refuses the flags for a repository directory (no transport).
    pub fn refuse_for_directory(&self) -> Result<()> {
        if self.is_set() {
            bail!(
                "--timeout, --retries, --name and --http2-prior-knowledge apply to a \
                 repository URL, not a directory"
            );
        }
        Ok(())
    }

    /// Sets the timeouts and the retry budget of `cfg` from the flags given.
    pub fn apply(&self, cfg: &mut RemoteConfig) {
        if let Some(t) = self.timeout {
            cfg.read_timeout = t;
            cfg.connect_timeout = t.min(MAX_CONNECT_TIMEOUT);
        }
        if let Some(r) = self.retries {
            cfg.retries = r;
        }
        if let Some(n) = &self.repository_name {
            cfg.expected_name = Some(n.clone());
        }
        if self.http2_prior_knowledge {
            cfg.http2_prior_knowledge = true;
        }
    }

    /// Sets the expected repository name to a thin descriptor's, refusing a
    /// `--name` that names another repository.
    pub fn expect_thin_name(&self, cfg: &mut RemoteConfig, desc_name: &str) -> Result<()> {
        match &self.repository_name {
            Some(n) if n != desc_name => bail!(
                "--name {n:?} contradicts the thin descriptor, which names repository {desc_name:?}"
            ),
            _ => cfg.expected_name = Some(desc_name.to_owned()),
        }
        Ok(())
    }
}

/// A positive number of seconds (decimals allowed), at most a day.
fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_TIMEOUT_SECS {
        return Err(format!(
            "{s:?}: give more than 0 and at most {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "", "1s"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn apply_caps_the_connect_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let key = stratum_catalog::manifest::generate_keypair(&tmp.path().join("k")).unwrap();
        let mut cfg = RemoteConfig::new(vec!["http://x".into()], key, "/tmp/c".into());
        let defaults = (cfg.connect_timeout, cfg.read_timeout, cfg.retries);
        TransportArgs::default().apply(&mut cfg);
        assert_eq!(
            (cfg.connect_timeout, cfg.read_timeout, cfg.retries),
            defaults
        );
        let args = TransportArgs {
            timeout: Some(Duration::from_millis(1500)),
            retries: Some(0),
            repository_name: Some("repo.example".into()),
            http2_prior_knowledge: true,
        };
        args.apply(&mut cfg);
        assert_eq!(cfg.connect_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.read_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.retries, 0);
        assert_eq!(cfg.expected_name.as_deref(), Some("repo.example"));
        assert!(cfg.http2_prior_knowledge);
        // A thin descriptor's name must agree with --name.
        assert!(args.expect_thin_name(&mut cfg, "other.example").is_err());
        args.expect_thin_name(&mut cfg, "repo.example").unwrap();
        let args = TransportArgs {
            timeout: Some(Duration::from_secs(60)),
            retries: None,
            repository_name: None,
            http2_prior_knowledge: false,
        };
        args.apply(&mut cfg);
        assert_eq!(cfg.connect_timeout, MAX_CONNECT_TIMEOUT);
        assert_eq!(cfg.read_timeout, Duration::from_secs(60));
        assert_eq!(cfg.retries, 0);
    }
}
