//! The JSON Schema in schemas/ is generated from the Rust types; these tests
//! fail when the checked-in file or the field reference drifts from them.
//! `PGPLAN_UPDATE_SCHEMA=1 cargo test --test it schema` rewrites the file.

use std::collections::BTreeSet;

use serde_json::Value;

fn generated() -> String {
    serde_json::to_string_pretty(&pgplan::spec::json_schema()).expect("schema serialises") + "\n"
}

#[test]
fn checked_in_schema_matches_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pgplan.schema.json");
    let want = generated();
    if std::env::var_os("PGPLAN_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &want).expect("write schema");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "schemas/pgplan.schema.json is stale; regenerate with PGPLAN_UPDATE_SCHEMA=1 cargo test --test it schema"
    );
}

fn property_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            m.values().for_each(|x| property_names(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| property_names(x, out)),
        _ => {}
    }
}

#[test]
fn every_field_is_documented_in_docs_spec_md() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/spec.md"),
    )
    .expect("docs/spec.md");
    let mut names = BTreeSet::new();
    property_names(&pgplan::spec::json_schema(), &mut names);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "fields not documented in docs/spec.md: {missing:?}"
    );
    assert!(
        names.len() > 60,
        "the schema lost its fields: {}",
        names.len()
    );
}
