//! How to reach registries: plain HTTP hosts, extra CAs, credentials,
//! timeouts and the retry policy.
//!
//! Credentials for a host are looked up in this order: given explicitly
//! (flags, environment, wishlist); `$REGISTRY_AUTH_FILE` (podman/skopeo's
//! auth.json) when set; `~/.docker/config.json` (or `$DOCKER_CONFIG`),
//! including its credential helpers; else anonymous.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;

use crate::error::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// Bounded retries with exponential backoff for 429, 5xx, timeouts and
/// broken connections. A `Retry-After` header (seconds) replaces the backoff
/// when the response carries one, capped at `max_delay`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `n + 1` (n ≥ 1), without a Retry-After.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`, as in references) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of extra CA certificates to trust (each may hold several).
    pub ca_files: Vec<PathBuf>,
    /// Credentials given explicitly, by host.
    pub credentials: HashMap<String, Credentials>,
    /// Look in `$REGISTRY_AUTH_FILE` and `~/.docker/config.json` too.
    pub use_credential_files: bool,
    pub connect_timeout: Duration,
    /// No byte for this long fails the request (and is retried).
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest manifest or config read into memory.
    pub max_document_size: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            ca_files: Vec::new(),
            credentials: HashMap::new(),
            use_credential_files: true,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            max_document_size: 8 * 1024 * 1024,
        }
    }
}

impl RegistryConfig {
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host)
    }

    pub fn scheme(&self, host: &str) -> &'static str {
        if self.is_insecure(host) {
            "http"
        } else {
            "https"
        }
    }

    /// The PEM bytes of every CA file, read once when the client is built.
    pub(crate) fn ca_pems(&self) -> Result<Vec<Vec<u8>>, RegistryError> {
        self.ca_files
            .iter()
            .map(|p| {
                std::fs::read(p).map_err(|e| {
                    RegistryError::Config(format!("cannot read CA file {}: {e}", p.display()))
                })
            })
            .collect()
    }

    /// The credentials to use for `registry` (as written in the reference).
    pub(crate) fn auth_for(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        if let Some(c) = self.credentials.get(registry) {
            return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
        }
        if !self.use_credential_files {
            return Ok(RegistryAuth::Anonymous);
        }
        // Docker stores Docker Hub under its historical v1 URL.
        let keys: Vec<&str> = if registry == "docker.io" || registry == "index.docker.io" {
            vec![
                "https://index.docker.io/v1/",
                "docker.io",
                "index.docker.io",
            ]
        } else {
            vec![registry]
        };
        type Lookup = fn(
            &str,
        ) -> std::result::Result<
            docker_credential::DockerCredential,
            docker_credential::CredentialRetrievalError,
        >;
        let lookups: [Lookup; 2] = [
            docker_credential::get_podman_credential,
            docker_credential::get_credential,
        ];
        for lookup in lookups {
            for key in &keys {
                match lookup(key) {
                    Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
                        return Ok(RegistryAuth::Basic(u, p));
                    }
                    Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                        return Err(RegistryError::Credentials {
                            registry: registry.to_owned(),
                            reason: "the credential store holds an identity token (OAuth2 refresh \
                                     token), which is not supported; log in with a user name and \
                                     password or give them explicitly"
                                .into(),
                        });
                    }
                    Err(docker_credential::CredentialRetrievalError::HelperFailure {
                        helper,
                        stderr,
                        ..
                    }) => {
                        return Err(RegistryError::Credentials {
                            registry: registry.to_owned(),
                            reason: format!("credential helper {helper} failed: {}", stderr.trim()),
                        });
                    }
                    // No config file, no entry for this host: try the next place.
                    Err(_) => {}
                }
            }
        }
        Ok(RegistryAuth::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(60), Duration::from_secs(1));
    }

    #[test]
    fn explicit_credentials_win_and_are_not_printed() {
        let mut c = RegistryConfig {
            use_credential_files: false,
            ..Default::default()
        };
        assert!(matches!(
            c.auth_for("h:1").ok(),
            Some(RegistryAuth::Anonymous)
        ));
        let cred = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{cred:?}").contains("secret"));
        c.credentials.insert("h:1".into(), cred);
        assert!(matches!(c.auth_for("h:1").ok(), Some(RegistryAuth::Basic(u, _)) if u == "u"));
    }
}
