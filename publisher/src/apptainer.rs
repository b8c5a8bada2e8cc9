//! The `apptainer` output (`publish --apptainer`): the `/.singularity.d`
//! metadata Apptainer (and Singularity) read from a sandbox directory, added
//! to an image's flat tree so `apptainer exec <mount>/images/<name>/<tag>`
//! gets the image's environment, runscript and labels — what DUCC writes
//! into every flat tree of `/cvmfs/unpacked.cern.ch`.
//!
//! The layout is the one Apptainer's own OCI conversion writes (its build
//! sources `base_environment.go` and `conveyorPacker_oci.go`):
//!
//! - `/.singularity.d/{actions,env,libs}/`, 0755;
//! - `env/10-docker2singularity.sh`: one `export` per `Env` entry, quoted as
//!   Apptainer quotes it ([`env_script`]); `env/01-base.sh`,
//!   `90-environment.sh`, `95-apps.sh`, `99-base.sh`, `99-runtimevars.sh`;
//! - `runscript`: `Entrypoint` and `Cmd` run as Apptainer runs them
//!   ([`runscript`]); `startscript`; `actions/{exec,run,shell,start,test}`;
//! - `labels.json`: the config's `Labels` as Go's `json.MarshalIndent(…,
//!   "", "\t")` writes them ([`labels_json`]);
//! - symlinks `/singularity` → `.singularity.d/runscript`, `/.run`, `/.exec`,
//!   `/.test`, `/.shell` → `actions/…`, `/environment` →
//!   `env/90-environment.sh`;
//! - mount points `/dev /proc /root /var/tmp /tmp /etc /sys /home` and empty
//!   `/etc/hosts`, `/etc/resolv.conf` where the image has none.
//!
//! The scripts are written here, not copied. Generated files replace what
//! the image had at their paths (as Apptainer's build does); symlinks,
//! mount points and `/etc` files the image already has are kept.

use std::collections::BTreeMap;

use serde::Deserialize;
use stratum_catalog::catalog::{CatalogBuilder, Data, Entry, FileType, ROOT_ID};
use stratum_catalog::ObjectKind;

use crate::ingest::INLINE_MAX;
use crate::objects::ObjectWriter;

/// The name of this output in image records, `images --json` and wishlists.
pub const OUTPUT: &str = "apptainer";

/// The flat catalog property listing the outputs a flat tree carries
/// (comma-separated, sorted; absent when none).
pub const PROP_OUTPUTS: &str = "outputs";

/// What the generator reads from an image configuration.
#[derive(Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
}

impl ImageConfig {
    /// The `config` object of an OCI image configuration (all optional).
    pub fn parse(config_json: &[u8]) -> Result<Self, String> {
        let f: ConfigFile = serde_json::from_slice(config_json)
            .map_err(|e| format!("the image configuration is not valid JSON: {e}"))?;
        Ok(f.config.unwrap_or_default())
    }
}

/// What a generated path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory that must be there (a non-directory is replaced).
    Dir,
    /// A mount point: created only where nothing is (nor above it).
    MountPoint,
    /// A file written over whatever is there.
    File { mode: u32, bytes: Vec<u8> },
    /// A file created only where nothing is.
    FileIfMissing { mode: u32 },
    /// A symlink: created where nothing is, or replacing a symlink that
    /// points elsewhere; a non-symlink is kept.
    Symlink(&'static str),
}

/// Every path of the output, parents before children (relative to `/`).
pub fn generate(config: &ImageConfig) -> Vec<(String, Node)> {
    let file = |bytes: String| Node::File {
        mode: 0o755,
        bytes: bytes.into_bytes(),
    };
    let mut out: Vec<(String, Node)> = Vec::new();
    let mut add = |p: &str, n: Node| out.push((p.to_owned(), n));
    for d in [
        "dev", "proc", "root", "var", "var/tmp", "tmp", "etc", "sys", "home",
    ] {
        add(d, Node::MountPoint);
    }
    add("etc/hosts", Node::FileIfMissing { mode: 0o644 });
    add("etc/resolv.conf", Node::FileIfMissing { mode: 0o644 });
    for d in [
        ".singularity.d",
        ".singularity.d/actions",
        ".singularity.d/env",
        ".singularity.d/libs",
    ] {
        add(d, Node::Dir);
    }
    for (name, body) in ACTIONS {
        add(
            &format!(".singularity.d/actions/{name}"),
            file(action(body)),
        );
    }
    for (name, body) in ENV_FILES {
        add(
            &format!(".singularity.d/env/{name}"),
            file((*body).to_owned()),
        );
    }
    let env = config.env.as_deref().unwrap_or_default();
    add(
        ".singularity.d/env/10-docker2singularity.sh",
        file(env_script(env)),
    );
    let ep = config.entrypoint.as_deref().unwrap_or_default();
    let cmd = config.cmd.as_deref().unwrap_or_default();
    add(".singularity.d/runscript", file(runscript(ep, cmd)));
    add(".singularity.d/startscript", file("#!/bin/sh\n".to_owned()));
    let labels = config.labels.clone().unwrap_or_default();
    add(
        ".singularity.d/labels.json",
        Node::File {
            mode: 0o644,
            bytes: labels_json(&labels).into_bytes(),
        },
    );
    for (link, target) in SYMLINKS {
        add(link, Node::Symlink(target));
    }
    out
}

const SYMLINKS: [(&str, &str); 6] = [
    ("singularity", ".singularity.d/runscript"),
    (".run", ".singularity.d/actions/run"),
    (".exec", ".singularity.d/actions/exec"),
    (".test", ".singularity.d/actions/test"),
    (".shell", ".singularity.d/actions/shell"),
    ("environment", ".singularity.d/env/90-environment.sh"),
];

/// The action scripts (run by Singularity 2.x; Apptainer 1.x brings its
/// own, which source the same `env/*.sh`): each sources the environment
/// scripts first.
const ACTIONS: [(&str, &str); 5] = [
    ("exec", "exec \"$@\"\n"),
    (
        "run",
        "if [ -x /.singularity.d/runscript ]; then\n    exec /.singularity.d/runscript \"$@\"\nfi\n\
         echo \"No runscript in this container: running /bin/sh\" >&2\nexec /bin/sh \"$@\"\n",
    ),
    (
        "shell",
        "if [ -n \"${SINGULARITY_SHELL:-}\" ] && [ -x \"$SINGULARITY_SHELL\" ]; then\n    \
         exec \"$SINGULARITY_SHELL\" \"$@\"\nfi\n\
         if [ -x /bin/bash ]; then\n    SHELL=/bin/bash\n    PS1=\"Singularity> \"\n    export SHELL PS1\n    \
         exec /bin/bash --norc \"$@\"\nfi\n\
         SHELL=/bin/sh\nexport SHELL\nexec /bin/sh \"$@\"\n",
    ),
    (
        "start",
        "# an instance: tell the container's PID 1 to go on\nkill -CONT 1\n\
         if [ -x /.singularity.d/startscript ]; then\n    exec /.singularity.d/startscript\nfi\n",
    ),
    (
        "test",
        "if [ -x /.singularity.d/test ]; then\n    exec /.singularity.d/test \"$@\"\nfi\n\
         echo \"No test in this container\" >&2\nexec /bin/sh -c true\n",
    ),
];

fn action(body: &str) -> String {
    format!(
        "#!/bin/sh\nfor script in /.singularity.d/env/*.sh; do\n    \
         if [ -f \"$script\" ]; then\n        . \"$script\"\n    fi\ndone\n{body}"
    )
}

/// The fixed environment scripts of Apptainer's base environment (sourced
/// in name order around the image's `10-docker2singularity.sh`).
const ENV_FILES: [(&str, &str); 5] = [
    ("01-base.sh", "#!/bin/sh\n"),
    (
        "90-environment.sh",
        "#!/bin/sh\n# The definition file's %environment goes here (none for an OCI image).\n",
    ),
    (
        "95-apps.sh",
        "#!/bin/sh\n# SCIF apps (/scif/apps): an OCI image has none.\n",
    ),
    (
        "99-base.sh",
        "#!/bin/sh\nif [ -z \"${LD_LIBRARY_PATH:-}\" ]; then\n    LD_LIBRARY_PATH=/.singularity.d/libs\nelse\n    \
         LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"\nfi\nPS1=\"Singularity> \"\n\
         export LD_LIBRARY_PATH PS1\n",
    ),
    (
        "99-runtimevars.sh",
        "#!/bin/sh\n# --env PREPEND_PATH / APPEND_PATH / PATH given to apptainer\n\
         if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then\n    \
         PATH=\"$SING_USER_DEFINED_PREPEND_PATH:$PATH\"\nfi\n\
         if [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then\n    \
         PATH=\"$PATH:$SING_USER_DEFINED_APPEND_PATH\"\nfi\n\
         if [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then\n    PATH=\"$SING_USER_DEFINED_PATH\"\nfi\n\
         unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH\n\
         export PATH\n",
    ),
];

/// Escapes `\`, `"`, `` ` `` and `$` for a double-quoted shell word.
pub fn escape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A single-quoted shell word's content: `'` becomes `'"'"'`.
fn escape_single(s: &str) -> String {
    s.replace('\'', r#"'"'"'"#)
}

/// Whether `name` is a shell variable name (Apptainer skips other `Env`
/// entries).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `env/10-docker2singularity.sh`: for each `NAME=VALUE`, `export
/// NAME="${NAME:-"VALUE"}"` (a value set on the host wins, as in Apptainer),
/// except `PATH`, which is always the image's; `NAME` without `=` keeps the
/// host's value or empty. Values are escaped for double quotes, so spaces,
/// quotes, `$`, backticks and newlines arrive as written.
pub fn env_script(env: &[String]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for e in env {
        let (name, value) = match e.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (e.as_str(), None),
        };
        if !valid_name(name) {
            continue;
        }
        match value {
            None => s.push_str(&format!("export {name}=\"${{{name}:-}}\"\n")),
            Some(v) if name == "PATH" => {
                s.push_str(&format!("export {name}=\"{}\"\n", escape_double(v)))
            }
            Some(v) => s.push_str(&format!(
                "export {name}=\"${{{name}:-\"{}\"}}\"\n",
                escape_double(v)
            )),
        }
    }
    s
}

/// Each argument in double quotes (escaped), separated by spaces: what
/// Apptainer stores in `OCI_ENTRYPOINT` / `OCI_CMD` and evaluates.
fn args_quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("\"{}\"", escape_double(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn set_words(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", escape_single(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `.singularity.d/runscript`: `apptainer run IMAGE [ARGS]` runs the
/// `Entrypoint` followed by the arguments, or by `Cmd` when there are none.
/// By default, as Apptainer does, the command line is evaluated by the
/// shell once (`eval "set …"`); with `SINGULARITY_NO_EVAL` set
/// (`--no-eval`) the words are passed exactly, as an OCI runtime would.
pub fn runscript(entrypoint: &[String], cmd: &[String]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!(
        "OCI_ENTRYPOINT='{}'\nOCI_CMD='{}'\n",
        escape_single(&args_quoted(entrypoint)),
        escape_single(&args_quoted(cmd))
    ));
    if entrypoint.is_empty() && cmd.is_empty() {
        s.push_str(
            "if [ $# -eq 0 ]; then\n    \
             echo \"This image has no Entrypoint or Cmd: give a command\" >&2\n    exit 1\nfi\n",
        );
    }
    s.push_str("if [ -n \"${SINGULARITY_NO_EVAL:-}\" ]; then\n");
    if !cmd.is_empty() {
        s.push_str(&format!(
            "    if [ $# -eq 0 ]; then\n        set -- {}\n    fi\n",
            set_words(cmd)
        ));
    }
    if !entrypoint.is_empty() {
        s.push_str(&format!("    set -- {} \"$@\"\n", set_words(entrypoint)));
    }
    s.push_str(
        "    exec \"$@\"\nfi\n\
         CMDLINE_ARGS=\"\"\n\
         for arg in \"$@\"; do\n    CMDLINE_ARGS=\"${CMDLINE_ARGS} \\\"$arg\\\"\"\ndone\n\
         if [ $# -gt 0 ]; then\n    SINGULARITY_OCI_RUN=\"${OCI_ENTRYPOINT} ${CMDLINE_ARGS}\"\n\
         else\n    SINGULARITY_OCI_RUN=\"${OCI_ENTRYPOINT} ${OCI_CMD}\"\nfi\n\
         eval \"set ${SINGULARITY_OCI_RUN}\"\n\
         exec \"$@\"\n",
    );
    s
}

/// `labels.json` as Go's `json.MarshalIndent(labels, "", "\t")` writes a
/// `map[string]string`: keys sorted, tab-indented, `<`, `>`, `&`, U+2028
/// and U+2029 escaped; no trailing newline; `{}` when there are none.
pub fn labels_json(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    let body: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("\t{}: {}", go_string(k), go_string(v)))
        .collect();
    format!("{{\n{}\n}}", body.join(",\n"))
}

fn go_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Adds the output to a flat tree being built and marks it in the flat
/// catalog's [`PROP_OUTPUTS`] property. File contents over
/// [`INLINE_MAX`] bytes become content objects.
pub fn add_to_flat(
    flat: &mut CatalogBuilder,
    objects: &mut ObjectWriter,
    config: &ImageConfig,
) -> stratum_catalog::Result<()> {
    for (path, node) in generate(config) {
        let comps: Vec<&str> = path.split('/').collect();
        let (last, parents) = comps.split_last().expect("paths are not empty");
        let Some(parent) = walk(flat, parents)? else {
            continue;
        };
        let existing = flat.lookup(parent, last.as_bytes())?;
        let mut e = match node {
            Node::Dir => match existing {
                Some(old) if old.is_dir() => continue,
                _ => Entry::new(FileType::Directory, 0o755),
            },
            Node::MountPoint => match existing {
                Some(_) => continue,
                None => Entry::new(FileType::Directory, 0o755),
            },
            Node::FileIfMissing { mode } => match existing {
                Some(_) => continue,
                None => Entry::new(FileType::Regular, mode),
            },
            Node::Symlink(target) => {
                match &existing {
                    Some(old) if old.symlink.as_deref() == Some(target.as_bytes()) => continue,
                    Some(old) if old.file_type() != Some(FileType::Symlink) => continue,
                    _ => {}
                }
                let mut e = Entry::new(FileType::Symlink, 0o777);
                e.size = target.len() as u64;
                e.symlink = Some(target.as_bytes().to_vec());
                e
            }
            Node::File { mode, bytes } => {
                let mut e = Entry::new(FileType::Regular, mode);
                e.size = bytes.len() as u64;
                e.data = if bytes.is_empty() {
                    Data::None
                } else if e.size <= INLINE_MAX {
                    Data::Inline(bytes)
                } else {
                    Data::Object(objects.put_owned(ObjectKind::Content, bytes)?)
                };
                e
            }
        };
        if let Some(old) = existing {
            flat.remove(old.id)?;
        }
        e.name = last.as_bytes().to_vec();
        flat.insert(parent, &e)?;
    }
    flat.set_property(PROP_OUTPUTS, OUTPUT)
}

/// The directory at `comps` (no symlinks followed), if there is one.
fn walk(flat: &CatalogBuilder, comps: &[&str]) -> stratum_catalog::Result<Option<i64>> {
    let mut id = ROOT_ID;
    for c in comps {
        match flat.lookup(id, c.as_bytes())? {
            Some(e) if e.is_dir() => id = e.id,
            _ => return Ok(None),
        }
    }
    Ok(Some(id))
}

#[cfg(test)]
#[path = "apptainer_tests.rs"]
mod tests;
