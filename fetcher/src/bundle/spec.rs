//! The OCI runtime spec (`config.json`) of an image, as `umoci unpack`
//! (0.4.7, which builds it on the runtime-tools template) derives it from
//! the image config, on the defaults of `runc spec` (1.1).
//!
//! From the image config, exactly as umoci:
//! - `process.args`: `Entrypoint` then `Cmd`; `["sh"]` when both are empty.
//! - `process.env`: the template's `PATH=…` and `TERM=xterm`, then each
//!   `Env` entry, a name already there replaced in place; then `HOME` from
//!   the user's passwd entry (also in place).
//! - `process.cwd`: `WorkingDir`, else `/`.
//! - `process.user`: `User` resolved against the image's `/etc/passwd` and
//!   `/etc/group` ([`super::user`]).
//! - `annotations`: the `Labels`, then `org.opencontainers.image.os`,
//!   `.architecture`, `.author`, `.created`, `.stopSignal` and
//!   `.exposedPorts` (sorted, comma-separated), always present, overriding
//!   labels of the same name.
//! - `mounts`: one tmpfs per `Volumes` entry, after the default ones.
//!
//! Kept different on purpose (docs/DEPLOYMENT.md lists them):
//! `root` is the absolute path of the image's tree in a mount and read-only;
//! `process.terminal` is false unless asked for; `hostname` is `stratum`;
//! capabilities, masked and read-only paths and `ociVersion` are `runc
//! spec`'s (no inheritable capabilities; `/proc/acpi`, `/proc/keys` and
//! `/proc/asound` masked); volumes are mounted in sorted order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::user::resolve_user;
use super::BundleError;

/// The runtime-spec version written (`runc spec` 1.1 writes `1.0.2-dev`).
pub const OCI_VERSION: &str = "1.0.2";

/// The template environment umoci starts from (runtime-tools' defaults).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hostname of the container.
pub const HOSTNAME: &str = "stratum";

/// Options of [`runtime_spec`] that are not in the image.
#[derive(Clone, Debug)]
pub struct SpecOptions {
    /// `root.path`: the image's tree, absolute.
    pub root_path: String,
    /// `process.terminal` (umoci writes true; a node runs detached).
    pub terminal: bool,
}

/// The image config file, as far as the runtime spec needs it. `null`
/// members read as absent, as Go reads them.
#[derive(Deserialize, Default)]
struct ImageFile {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<ImageConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ImageConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

/// An OCI runtime spec (the members written; runtime-spec config.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub annotations: BTreeMap<String, String>,
    pub linux: Linux,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub terminal: bool,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub capabilities: Capabilities,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub resources: serde_json::Value,
    pub namespaces: Vec<Namespace>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.into(),
        kind: kind.into(),
        source: source.into(),
        options: strings(options),
    }
}

/// `runc spec`'s default mounts.
fn default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// `runc spec`'s `linux` member.
fn default_linux() -> Linux {
    Linux {
        resources: serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}),
        namespaces: ["pid", "network", "ipc", "uts", "mount"]
            .iter()
            .map(|k| Namespace { kind: (*k).into() })
            .collect(),
        masked_paths: strings(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]),
        readonly_paths: strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]),
    }
}

fn default_capabilities() -> Capabilities {
    let caps = strings(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    Capabilities {
        bounding: caps.clone(),
        effective: caps.clone(),
        permitted: caps.clone(),
        ambient: caps,
    }
}

/// An environment list where setting a name already present replaces that
/// entry in place (runtime-tools' `AddProcessEnv`).
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, name: &str, entry: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = entry,
            None => self.0.push((name.to_owned(), entry)),
        }
    }
}

/// An image's `created` time as Go prints it back (`…T15:04:05.999999999Z07:00`):
/// trailing zeros of the fraction dropped, a zero offset as `Z`. Absent:
/// Go's zero time. A value that is not RFC 3339 is kept as it is.
fn created_annotation(created: Option<&str>) -> String {
    let Some(s) = created else {
        return "0001-01-01T00:00:00Z".to_owned();
    };
    // `date T time [.fraction] offset`
    let Some((date, rest)) = s.split_once(['T', 't']) else {
        return s.to_owned();
    };
    let zone_at = rest
        .char_indices()
        .skip(8)
        .find(|(_, c)| matches!(c, 'Z' | 'z' | '+' | '-'))
        .map(|(i, _)| i);
    let Some(zone_at) = zone_at else {
        return s.to_owned();
    };
    let (time, zone) = rest.split_at(zone_at);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    if hms.len() != 8 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return s.to_owned();
    }
    let fraction = fraction.trim_end_matches('0');
    let zone = match zone {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        z => z,
    };
    let mut out = format!("{date}T{hms}");
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out.push_str(zone);
    out
}

/// The runtime spec of an image from its config JSON (the bytes of the
/// config blob) and its `/etc/passwd` and `/etc/group` (`None`: absent).
pub fn runtime_spec(
    config_json: &[u8],
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
    options: &SpecOptions,
) -> Result<Spec, BundleError> {
    let image: ImageFile =
        serde_json::from_slice(config_json).map_err(|e| BundleError::Config(e.to_string()))?;
    let os = image.os.clone().unwrap_or_default();
    if os != "linux" {
        return Err(BundleError::Config(format!(
            "the image is for os {os:?}; runtime bundles are for linux images"
        )));
    }
    let c = image.config.unwrap_or_default();

    let mut env = Env(vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("TERM".into(), "TERM=xterm".into()),
    ]);
    for e in c.env.iter().flatten() {
        match e.split_once('=') {
            Some((name, _)) if !name.is_empty() => env.set(name, e.clone()),
            _ => {
                return Err(BundleError::Config(format!(
                    "Env entry {e:?} is not NAME=VALUE"
                )))
            }
        }
    }

    let user_spec = c.user.clone().unwrap_or_default();
    let user = resolve_user(&user_spec, passwd, group)?;
    if let Some(home) = &user.home {
        env.set("HOME", format!("HOME={home}"));
    }

    let mut args: Vec<String> = c.entrypoint.iter().flatten().cloned().collect();
    args.extend(c.cmd.iter().flatten().cloned());
    if args.is_empty() {
        args.push("sh".into());
    }

    let mut annotations = c.labels.clone().unwrap_or_default();
    let ports: Vec<&str> = c
        .exposed_ports
        .iter()
        .flat_map(|m| m.keys())
        .map(String::as_str)
        .collect();
    for (k, v) in [
        ("org.opencontainers.image.os", os),
        (
            "org.opencontainers.image.architecture",
            image.architecture.unwrap_or_default(),
        ),
        (
            "org.opencontainers.image.author",
            image.author.unwrap_or_default(),
        ),
        (
            "org.opencontainers.image.created",
            created_annotation(image.created.as_deref()),
        ),
        (
            "org.opencontainers.image.stopSignal",
            c.stop_signal.unwrap_or_default(),
        ),
        ("org.opencontainers.image.exposedPorts", ports.join(",")),
    ] {
        annotations.insert(k.to_owned(), v);
    }

    let mut mounts = default_mounts();
    for volume in c.volumes.iter().flat_map(|m| m.keys()) {
        mounts.push(mount(
            volume,
            "tmpfs",
            "none",
            &["rw", "nosuid", "nodev", "noexec", "relatime"],
        ));
    }

    Ok(Spec {
        oci_version: OCI_VERSION.into(),
        process: Process {
            terminal: options.terminal,
            user: User {
                uid: user.uid,
                gid: user.gid,
                additional_gids: user.additional_gids,
            },
            args,
            env: env.0.into_iter().map(|(_, e)| e).collect(),
            cwd: c
                .working_dir
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
            capabilities: default_capabilities(),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                hard: 1024,
                soft: 1024,
            }],
            no_new_privileges: true,
        },
        root: Root {
            path: options.root_path.clone(),
            readonly: true,
        },
        hostname: HOSTNAME.into(),
        mounts,
        annotations,
        linux: default_linux(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> SpecOptions {
        SpecOptions {
            root_path: "/mnt/flat/ab/abcd".into(),
            terminal: false,
        }
    }

    #[test]
    fn a_bare_config_gets_umocis_defaults() {
        let s = runtime_spec(
            br#"{"os":"linux","architecture":"amd64"}"#,
            Some(b"root:x:0:0:root:/root:/bin/sh\n"),
            None,
            &opts(),
        )
        .unwrap();
        assert_eq!(s.process.args, ["sh"]);
        assert_eq!(s.process.env, [DEFAULT_PATH, "TERM=xterm", "HOME=/root"]);
        assert_eq!(s.process.cwd, "/");
        assert_eq!((s.process.user.uid, s.process.user.gid), (0, 0));
        assert_eq!(
            s.annotations["org.opencontainers.image.created"],
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(s.annotations["org.opencontainers.image.author"], "");
        assert_eq!(s.annotations["org.opencontainers.image.exposedPorts"], "");
        assert_eq!(s.annotations["org.opencontainers.image.stopSignal"], "");
        assert_eq!(s.root.path, "/mnt/flat/ab/abcd");
        assert!(s.root.readonly);
    }

    #[test]
    fn env_replaces_in_place_and_home_comes_from_passwd() {
        let s = runtime_spec(
            br#"{"os":"linux","config":{"User":"app:extra","Env":["HOME=/mine","A=1","A=2","PATH=/x"],
                "Entrypoint":["/bin/sh"],"Cmd":["-c","id"],"WorkingDir":"/w",
                "ExposedPorts":{"9/udp":{},"80/tcp":{},"443/tcp":{}},
                "Labels":{"org.opencontainers.image.os":"weird","z":"1"},"Volumes":{"/v":{}}}}"#,
            Some(b"app:x:1000:1000::/home/app:/bin/sh\n"),
            Some(b"extra:x:2000:app\n"),
            &opts(),
        )
        .unwrap();
        assert_eq!(
            s.process.env,
            ["PATH=/x", "TERM=xterm", "HOME=/home/app", "A=2"]
        );
        assert_eq!(s.process.args, ["/bin/sh", "-c", "id"]);
        assert_eq!(s.process.cwd, "/w");
        assert_eq!((s.process.user.uid, s.process.user.gid), (1000, 2000));
        assert_eq!(
            s.annotations["org.opencontainers.image.exposedPorts"],
            "443/tcp,80/tcp,9/udp"
        );
        assert_eq!(s.annotations["org.opencontainers.image.os"], "linux");
        assert_eq!(s.annotations["z"], "1");
        assert_eq!(s.mounts.last().unwrap().destination, "/v");
    }

    #[test]
    fn bad_configs_are_refused() {
        let r = |j: &[u8]| runtime_spec(j, None, None, &opts());
        assert!(matches!(r(b"{"), Err(BundleError::Config(_))));
        assert!(matches!(
            r(br#"{"os":"windows"}"#),
            Err(BundleError::Config(_))
        ));
        assert!(matches!(
            r(br#"{"os":"linux","config":{"Env":["NOEQUALS"]}}"#),
            Err(BundleError::Config(_))
        ));
        assert!(matches!(
            r(br#"{"os":"linux","config":{"User":"nobody"}}"#),
            Err(BundleError::User { .. })
        ));
    }

    #[test]
    fn created_is_printed_back_as_go_does() {
        let c = |s| created_annotation(Some(s));
        assert_eq!(
            c("2026-12-07T09:37:06.471666099Z"),
            "2026-12-07T09:37:06.471666099Z"
        );
        assert_eq!(c("2020-01-02T03:04:05.500000Z"), "2020-01-02T03:04:05.5Z");
        assert_eq!(c("2020-01-02T03:04:05.000Z"), "2020-01-02T03:04:05Z");
        assert_eq!(c("2020-01-02T03:04:05+00:00"), "2020-01-02T03:04:05Z");
        assert_eq!(c("2020-01-02T03:04:05+02:00"), "2020-01-02T03:04:05+02:00");
        assert_eq!(c("garbage"), "garbage");
    }
}
