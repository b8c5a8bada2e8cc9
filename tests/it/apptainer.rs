//! `publish --apptainer`: the flat tree gains Apptainer's `/.singularity.d`
//! metadata (env script, runscript, labels, actions) and pulls with it;
//! without the flag the flat tree equals `umoci unpack`. Apptainer itself is
//! not installed here: the env script is sourced and the runscript run with
//! busybox `sh`, which is what Apptainer's action scripts do with them.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::compare::{assert_trees_equal, CompareOpts};
use crate::support::oci::{Layer, Layout, TarEntry};
use crate::support::{
    require_oracle_tools, require_tool, run_cmd, stratum, tempdir, tool, TestRepo,
};

const BUSYBOX: &str = "/bin/busybox";
const NAME: &str = "test/appt:1";

const ENV: [&str; 6] = [
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "SPACES=a b  c",
    "QUOTES=say \"hi\" and 'bye'",
    "DOLLAR=$HOME ${X} `id` \\n",
    "NL=line1\nline2",
    "EMPTY=",
];

fn build(dir: &Path) -> Layout {
    let layout = Layout::create(dir);
    layout.add_image(
        "1",
        &[Layer::gzip(&[
            TarEntry::dir(b"bin"),
            TarEntry::file(b"bin/tool", b"#!/bin/sh\n").mode(0o755),
            TarEntry::dir(b"etc"),
            TarEntry::file(b"etc/hosts", b"127.0.0.1 image\n"),
        ])],
    );
    layout.edit_image("1", |_, config| {
        config["config"] = json!({
            "Env": ENV,
            "Entrypoint": [BUSYBOX, "echo", "ep"],
            "Cmd": ["it's", "$HOME"],
            "Labels": {"org.example.team": "storage & <ops>", "version": "1.2"},
        });
    });
    layout
}

/// `busybox sh -c SCRIPT` with an empty environment, bounded in time.
fn sh(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "env", "-i", BUSYBOX, "sh", "-c", script, "sh"]);
    cmd.args(args);
    let out = run_cmd(cmd);
    assert!(out.success(), "sh -c {script:?}: {}", out.stderr_str());
    out.stdout_str()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn image(repo: &TestRepo) -> Value {
    repo.image(NAME)
}

#[test]
fn apptainer_output_in_the_flat_tree() {
    if !require_tool(BUSYBOX) {
        return;
    }
    let repo = TestRepo::new("apptainer.test");
    let layout = build(&repo.tmp.path().join("layout"));
    let source = format!("oci:{}:1", layout.dir.display());
    let mut args = repo.publish_args(&[&source], Some(NAME));
    args.push("--apptainer".into());
    let report = stratum(&args).json();
    assert_eq!(report[0]["status"], "published");
    assert_eq!(image(&repo)["outputs"], json!(["apptainer"]));
    repo.check();

    let dest = tempdir();
    let root = dest.path().join("root");
    repo.pull_image(NAME, &root);
    let sd = root.join(".singularity.d");
    for d in ["", "actions", "env", "libs"] {
        assert!(sd.join(d).is_dir(), "{d}");
        assert_eq!(mode(&sd.join(d)), 0o755, "{d}");
    }
    for f in [
        "runscript",
        "startscript",
        "actions/exec",
        "actions/run",
        "actions/shell",
        "actions/start",
        "actions/test",
        "env/01-base.sh",
        "env/10-docker2singularity.sh",
        "env/90-environment.sh",
        "env/95-apps.sh",
        "env/99-base.sh",
        "env/99-runtimevars.sh",
    ] {
        assert_eq!(mode(&sd.join(f)), 0o755, "{f}");
        assert!(
            std::fs::read(sd.join(f))
                .unwrap()
                .starts_with(b"#!/bin/sh\n"),
            "{f}"
        );
    }
    assert_eq!(mode(&sd.join("labels.json")), 0o644);
    assert_eq!(
        std::fs::read_to_string(sd.join("labels.json")).unwrap(),
        "{\n\t\"org.example.team\": \"storage \\u0026 \\u003cops\\u003e\",\n\t\"version\": \"1.2\"\n}"
    );
    for (link, target) in [
        ("singularity", ".singularity.d/runscript"),
        (".run", ".singularity.d/actions/run"),
        (".exec", ".singularity.d/actions/exec"),
        (".shell", ".singularity.d/actions/shell"),
        (".test", ".singularity.d/actions/test"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new(target)
        );
    }
    // The image's own /etc/hosts is kept; missing mount points are added.
    assert_eq!(
        std::fs::read(root.join("etc/hosts")).unwrap(),
        b"127.0.0.1 image\n"
    );
    for d in ["dev", "proc", "sys", "tmp", "var/tmp", "home", "root"] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    assert!(root.join("etc/resolv.conf").is_file());

    // Sourcing the env script gives exactly the image's Env.
    let envfile = sd.join("env/10-docker2singularity.sh");
    let got = sh(
        &format!(". '{}'; for v in PATH SPACES QUOTES DOLLAR NL EMPTY; do eval \"printf '%s=%s\\0' $v \\\"\\${{$v}}\\\"\"; done", envfile.display()),
        &[],
    );
    let got: Vec<&str> = got.split('\0').filter(|s| !s.is_empty()).collect();
    assert_eq!(got, ENV.to_vec());
    let listed = sh(&format!(". '{}'; env", envfile.display()), &[]);
    assert!(listed.contains("SPACES=a b  c\n"), "{listed}");
    // A value set before wins (Apptainer's host environment), PATH does not.
    let kept = sh(
        &format!(
            "SPACES=host PATH=/host; . '{}'; echo \"$SPACES|$PATH\"",
            envfile.display()
        ),
        &[],
    );
    assert_eq!(kept, "host|/usr/local/bin:/usr/bin:/bin\n");

    // The runscript: Entrypoint + Cmd, or Entrypoint + arguments.
    let rs = sd.join("runscript");
    let run = |args: &[&str]| sh(&format!(". '{}'", rs.display()), args);
    assert_eq!(run(&[]), "ep it's $HOME\n");
    assert_eq!(run(&["a b", "c"]), "ep a b c\n");
    let no_eval = sh(&format!("SINGULARITY_NO_EVAL=1 . '{}'", rs.display()), &[]);
    assert_eq!(no_eval, "ep it's $HOME\n");

    // Published again with the flag: unchanged. Without: the flat tree is
    // rebuilt without the output and equals umoci unpack.
    let again = stratum(&args).json();
    assert_eq!(again[0]["status"], "unchanged");
    let plain = repo.publish_one(&source, Some(NAME));
    assert_eq!(plain["status"], "published");
    assert_eq!(plain["layers_ingested"], 0);
    assert_eq!(image(&repo)["outputs"], json!([]));
    repo.check();
    let bare = dest.path().join("bare");
    repo.pull_image(NAME, &bare);
    assert!(!bare.join(".singularity.d").exists());
    assert!(!bare.join("singularity").exists());
    if require_oracle_tools(false) {
        let oracle = dest.path().join("oracle");
        tool(
            "umoci",
            [
                "unpack",
                "--image",
                &source["oci:".len()..],
                oracle.to_str().unwrap(),
            ],
        );
        assert_trees_equal(
            &oracle.join("rootfs"),
            &bare,
            &CompareOpts::default(),
            "pull without --apptainer vs umoci unpack",
        );
    }
    // Collecting garbage keeps the repository whole.
    stratum([
        "gc",
        repo.repo.to_str().unwrap(),
        "--key",
        repo.key.to_str().unwrap(),
    ]);
    repo.check();
}
