//! Command-line options shared by every command that talks to an OCI
//! registry (`publish`, `sync`, `thin push`, `mount --thin`, `pull --thin`):
//! how to reach it and which platforms to take.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stratum_publisher::source::PlatformSelection;
use stratum_registry::{Credentials, Platform, Registry, RegistryConfig};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Talk plain HTTP (no TLS) to this registry HOST[:PORT]; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Trust the CA certificates in this PEM file for registries; repeatable.
    #[arg(long = "registry-ca", value_name = "PEM")]
    pub ca: Vec<PathBuf>,
    /// User name for the registries named on this command line (else
    /// $REGISTRY_AUTH_FILE, ~/.docker/config.json and credential helpers).
    #[arg(
        long = "registry-user",
        env = "STRATUM_REGISTRY_USER",
        value_name = "USER"
    )]
    pub user: Option<String>,
    /// Password or token for --registry-user.
    #[arg(
        long = "registry-password",
        env = "STRATUM_REGISTRY_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Attempts per registry request (429, 5xx and broken transfers are retried
    /// with exponential backoff, honouring Retry-After).
    #[arg(long = "registry-attempts", value_name = "N", default_value_t = 6)]
    pub attempts: u32,
}

impl RegistryArgs {
    /// The client, with --registry-user applied to every host in `hosts`.
    pub fn client(&self, hosts: &[String]) -> Result<Arc<Registry>> {
        self.client_with(hosts, RegistryConfig::default())
    }

    /// Like [`client`](Self::client), starting from `base` (a wishlist's
    /// per-host settings).
    pub fn client_with(
        &self,
        hosts: &[String],
        mut config: RegistryConfig,
    ) -> Result<Arc<Registry>> {
        config.insecure.extend(self.insecure.iter().cloned());
        config.ca_files.extend(self.ca.iter().cloned());
        config.retry.attempts = self.attempts.max(1);
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => {
                for h in hosts {
                    config.credentials.insert(
                        h.clone(),
                        Credentials {
                            username: u.clone(),
                            password: p.clone(),
                        },
                    );
                }
            }
            (Some(_), None) => {
                bail!("--registry-user needs --registry-password (or STRATUM_REGISTRY_PASSWORD)")
            }
            (None, Some(_)) => bail!("--registry-password needs --registry-user"),
            (None, None) => {}
        }
        Ok(Arc::new(
            Registry::new(config).context("setting up the registry client")?,
        ))
    }
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct PlatformArgs {
    /// Platform(s) to take from a multi-platform image, OS/ARCH[/VARIANT]; repeatable
    /// or comma-separated (default: this host's). With several, each is published as
    /// NAME:TAG+OS-ARCH[-VARIANT] and NAME:TAG points to the host's (or the first).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Take every platform of a multi-platform image.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
}

impl PlatformArgs {
    pub fn selection(&self) -> Result<PlatformSelection> {
        if self.all_platforms {
            return Ok(PlatformSelection::All);
        }
        if self.platform.is_empty() {
            return Ok(PlatformSelection::Host);
        }
        let list = self
            .platform
            .iter()
            .map(|p| p.parse::<Platform>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PlatformSelection::List(list))
    }
}

/// The registry hosts of the `docker://` references among `sources`.
pub fn hosts_of<'a>(sources: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut hosts: Vec<String> = sources
        .into_iter()
        .filter_map(|s| stratum_registry::Reference::parse(s.strip_prefix("docker://")?).ok())
        .map(|r| r.registry().to_owned())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}
