//! The JSON Schema in `docs/` agrees with the types and the parser.

use super::props::thin_image;
use super::refusals::refusals;
use super::*;

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("docs/thin-image.schema.json is not valid JSON")
}

fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        node = schema["$defs"]
            .get(name)
            .unwrap_or_else(|| panic!("$ref {r} names no $defs entry"));
    }
    node
}

/// Walks `value` (JSON the Rust type emitted) alongside its schema node:
/// every object member emitted is a schema property; the schema's `required`
/// are emitted; with `exact`, `required` is exactly the set emitted (the
/// value has no optional member) or `properties` is exactly the set emitted
/// (the value has every optional member).
fn walk(schema: &Value, node: &Value, value: &Value, at: &str, exact: Exactness) {
    let node = resolve(schema, node);
    match value {
        Value::Object(members) => {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                assert_eq!(
                    node.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "{at}: the schema must refuse unknown members, as the parser does"
                );
                let required: BTreeSet<&str> = node
                    .get("required")
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{at}: no `required` list in the schema"))
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                let emitted: BTreeSet<&str> = members.keys().map(String::as_str).collect();
                let properties: BTreeSet<&str> = props.keys().map(String::as_str).collect();
                assert!(
                    emitted.is_subset(&properties),
                    "{at}: emitted {:?} not in the schema's properties",
                    emitted.difference(&properties).collect::<Vec<_>>()
                );
                assert!(
                    required.is_subset(&emitted),
                    "{at}: schema requires {:?}, not emitted",
                    required.difference(&emitted).collect::<Vec<_>>()
                );
                match exact {
                    Exactness::Minimal => assert_eq!(
                        required, emitted,
                        "{at}: the schema's `required` must list exactly what is always emitted"
                    ),
                    Exactness::Maximal => assert_eq!(
                        properties, emitted,
                        "{at}: the schema's `properties` must list exactly what can be emitted"
                    ),
                }
                for (k, v) in members {
                    walk(schema, &props[k], v, &format!("{at}.{k}"), exact);
                }
            } else if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in members {
                    walk(schema, ap, v, &format!("{at}[{k:?}]"), exact);
                }
            } else {
                panic!("{at}: object without properties in the schema");
            }
        }
        Value::Array(items) => {
            let item = node
                .get("items")
                .unwrap_or_else(|| panic!("{at}: array without items in the schema"));
            for (i, v) in items.iter().enumerate() {
                walk(schema, item, v, &format!("{at}[{i}]"), exact);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Exactness {
    Minimal,
    Maximal,
}

#[test]
fn schema_lists_every_member_the_type_emits() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema must declare draft 2020-12"
    );
    assert_eq!(s["properties"]["mediaType"]["const"], MEDIA_TYPE);
    assert_eq!(s["properties"]["schemaVersion"]["const"], SCHEMA_VERSION);
    let max: Value = serde_json::from_str(&golden().to_json_pretty().unwrap()).unwrap();
    let min: Value = serde_json::from_str(&minimal().to_json_pretty().unwrap()).unwrap();
    walk(&s, &s, &max, "$", Exactness::Maximal);
    walk(&s, &s, &min, "$", Exactness::Minimal);
}

/// Runs Python's `jsonschema` (draft 2020-12) over `cases` = [(what,
/// instance, should be valid)]; `None` when python3 or jsonschema is absent.
fn python_validate(cases: &[(String, Value, bool)]) -> Option<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit(3)
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
failures = []
for what, inst, ok in json.load(sys.stdin):
    errs = list(v.iter_errors(inst))
    if ok and errs:
        failures.append(f"{what}: schema refuses it: {errs[0].message}")
    if not ok and not errs:
        failures.append(f"{what}: schema accepts it")
print(json.dumps(failures))
"#;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/thin-image.schema.json"
    );
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT, path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    let input = serde_json::to_vec(
        &cases
            .iter()
            .map(|(w, v, ok)| json!([w, v, ok]))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(
        out.status.success(),
        "python jsonschema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn schema_agrees_with_the_parser() {
    let mut cases = vec![
        ("golden".to_string(), golden_value(), true),
        (
            "minimal".to_string(),
            serde_json::from_str(&expand(MINIMAL_JSON)).unwrap(),
            true,
        ),
    ];
    // Random valid descriptors.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..64 {
        let t = thin_image().new_tree(&mut runner).unwrap().current();
        cases.push((
            format!("random #{i}"),
            serde_json::to_value(&t).unwrap(),
            true,
        ));
    }
    // Everything the parser refuses that JSON Schema can express.
    for (what, edit, _, schema_refuses) in refusals() {
        if schema_refuses {
            let mut v = golden_value();
            edit(&mut v);
            cases.push((what.to_string(), v, false));
        }
    }
    match python_validate(&cases) {
        None if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") => {
            panic!("python3 with the jsonschema package is not installed; under CI every test must run")
        }
        None => eprintln!(
            "SKIP: schema_agrees_with_the_parser: python3 with the jsonschema package is not installed"
        ),
        Some(failures) => assert!(failures.is_empty(), "{failures:#?}"),
    }
}

#[test]
fn the_example_in_the_docs_parses() {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/THIN-IMAGE.md"
    ));
    let start = doc
        .find("```json\n")
        .expect("a ```json block in docs/THIN-IMAGE.md")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let t = ThinImage::from_json(&doc.as_bytes()[start..start + len])
        .unwrap_or_else(|e| panic!("the example of docs/THIN-IMAGE.md is refused: {e}"));
    assert_eq!(t.layers.len(), 2);
    assert_eq!(t.prioritized_files.len(), 2);
}
