//! The generated Apptainer files, against what Apptainer's OCI conversion
//! writes for the same configuration.

use std::collections::BTreeMap;

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[test]
fn env_quoting_follows_apptainer() {
    let env = s(&[
        "PATH=/usr/local/bin:/usr/bin",
        "A=plain",
        "SPACES=a b  c",
        "QUOTES=say \"hi\" and 'bye'",
        "DOLLAR=$HOME and ${X} and `id`",
        "BACKSLASH=a\\b",
        "NL=line1\nline2",
        "EMPTY=",
        "BARE",
        "1BAD=x",
        "BAD-NAME=x",
        "EQ=a=b",
    ]);
    let got = env_script(&env);
    let want = "#!/bin/sh\n\
export PATH=\"/usr/local/bin:/usr/bin\"\n\
export A=\"${A:-\"plain\"}\"\n\
export SPACES=\"${SPACES:-\"a b  c\"}\"\n\
export QUOTES=\"${QUOTES:-\"say \\\"hi\\\" and 'bye'\"}\"\n\
export DOLLAR=\"${DOLLAR:-\"\\$HOME and \\${X} and \\`id\\`\"}\"\n\
export BACKSLASH=\"${BACKSLASH:-\"a\\\\b\"}\"\n\
export NL=\"${NL:-\"line1\nline2\"}\"\n\
export EMPTY=\"${EMPTY:-\"\"}\"\n\
export BARE=\"${BARE:-}\"\n\
export EQ=\"${EQ:-\"a=b\"}\"\n";
    assert_eq!(got, want);
}

#[test]
fn runscript_entrypoint_and_cmd() {
    let r = runscript(&s(&["/bin/tool", "--flag"]), &s(&["it's", "$HOME"]));
    assert!(r.starts_with(
        "#!/bin/sh\nOCI_ENTRYPOINT='\"/bin/tool\" \"--flag\"'\n\
         OCI_CMD='\"it'\"'\"'s\" \"\\$HOME\"'\n"
    ));
    assert!(r.contains("    if [ $# -eq 0 ]; then\n        set -- 'it'\"'\"'s' '$HOME'\n    fi\n"));
    assert!(r.contains("    set -- '/bin/tool' '--flag' \"$@\"\n"));
    assert!(r.contains("eval \"set ${SINGULARITY_OCI_RUN}\"\nexec \"$@\"\n"));
    assert!(!r.contains("has no Entrypoint"));
}

#[test]
fn runscript_entrypoint_only_cmd_only_and_neither() {
    let ep = runscript(&s(&["/bin/sh", "-c"]), &[]);
    assert!(ep.contains("OCI_ENTRYPOINT='\"/bin/sh\" \"-c\"'\nOCI_CMD=''\n"));
    assert!(!ep.contains("if [ $# -eq 0 ]; then\n        set --"));
    let cmd = runscript(&[], &s(&["echo", "hi"]));
    assert!(cmd.contains("OCI_ENTRYPOINT=''\nOCI_CMD='\"echo\" \"hi\"'\n"));
    assert!(cmd.contains("set -- 'echo' 'hi'\n"));
    assert!(!cmd.contains("\"$@\"\n    exec"));
    let none = runscript(&[], &[]);
    assert!(none.contains("has no Entrypoint or Cmd"));
}

#[test]
fn labels_json_is_go_marshal_indent() {
    assert_eq!(labels_json(&BTreeMap::new()), "{}");
    let mut l = BTreeMap::new();
    l.insert("z".to_owned(), "last".to_owned());
    l.insert("a.b".to_owned(), "x <y> & \"q\" \\ \n\t\u{1}".to_owned());
    assert_eq!(
        labels_json(&l),
        "{\n\t\"a.b\": \"x \\u003cy\\u003e \\u0026 \\\"q\\\" \\\\ \\n\\t\\u0001\",\n\t\"z\": \"last\"\n}"
    );
    let back: BTreeMap<String, String> = serde_json::from_str(&labels_json(&l)).unwrap();
    assert_eq!(back, l);
}

#[test]
fn layout_paths_and_modes() {
    let cfg = ImageConfig::parse(br#"{"config":{"Env":["A=1"],"Cmd":["sh"],"Labels":{"k":"v"}}}"#)
        .unwrap();
    let g = generate(&cfg);
    let find = |p: &str| g.iter().find(|(q, _)| q == p).map(|(_, n)| n.clone());
    for f in ["exec", "run", "shell", "start", "test"] {
        let Some(Node::File { mode, bytes }) = find(&format!(".singularity.d/actions/{f}")) else {
            panic!("no action {f}")
        };
        assert_eq!(mode, 0o755);
        assert!(bytes.starts_with(b"#!/bin/sh\nfor script in /.singularity.d/env/*.sh; do"));
    }
    for f in [
        "01-base.sh",
        "10-docker2singularity.sh",
        "90-environment.sh",
        "95-apps.sh",
        "99-base.sh",
        "99-runtimevars.sh",
    ] {
        assert!(
            matches!(
                find(&format!(".singularity.d/env/{f}")),
                Some(Node::File { mode: 0o755, .. })
            ),
            "{f}"
        );
    }
    assert_eq!(find(".singularity.d/libs"), Some(Node::Dir));
    assert_eq!(
        find("singularity"),
        Some(Node::Symlink(".singularity.d/runscript"))
    );
    assert_eq!(
        find(".singularity.d/labels.json"),
        Some(Node::File {
            mode: 0o644,
            bytes: b"{\n\t\"k\": \"v\"\n}".to_vec()
        })
    );
    // Parents come before children.
    let pos = |p: &str| g.iter().position(|(q, _)| q == p).unwrap();
    assert!(pos(".singularity.d") < pos(".singularity.d/env"));
    assert!(pos(".singularity.d/env") < pos(".singularity.d/env/10-docker2singularity.sh"));
    // A config without `config`, or with nulls.
    let empty = ImageConfig::parse(br#"{"config":{"Env":null,"Labels":null}}"#).unwrap();
    assert!(empty.env.is_none() && empty.labels.is_none());
    assert!(ImageConfig::parse(b"{}").is_ok());
    assert!(ImageConfig::parse(b"not json").is_err());
}
