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

// The schema checked by a real JSON Schema validator (Python's `jsonschema`,
// the reference implementation; scripts/test makes sure it is installed):
// every example validates, and each mistake of a corpus is rejected by the
// keyword and at the path expected — and by pgplan itself, at the same line.

fn example_spec(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("examples/{name}/pgplan.yaml")),
    )
    .expect("example spec")
}

/// The documents of a YAML file as JSON, as an editor's YAML plugin sees them.
fn documents(text: &str) -> Vec<Value> {
    pgplan::yaml::parse(text)
        .expect("YAML")
        .iter()
        .map(|d| d.root.to_json())
        .collect()
}

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
data = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(data["schema"])
v = Draft202012Validator(data["schema"], format_checker=FormatChecker())
def flat(errors):
    for e in errors:
        yield e
        yield from flat(e.context)
print(json.dumps([
    sorted({"/".join(str(p) for p in e.absolute_path) + " " + e.validator for e in flat(v.iter_errors(i))})
    for i in data["instances"]
]))
"#;

/// For each instance, the set of `path keyword` of every error (nested
/// errors of `oneOf`/`anyOf` included).
fn json_schema_errors(instances: &[Value]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let script = dir.path().join("validate.py");
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({
            "schema": pgplan::spec::json_schema(),
            "instances": instances,
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(&script, VALIDATE).unwrap();
    let python = std::env::var("PGPLAN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    assert!(
        out.status.success(),
        "the JSON Schema validator failed (scripts/test installs Python's jsonschema: pip install jsonschema):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validator output")
}

#[test]
fn every_example_validates_against_the_schema() {
    let mut instances = Vec::new();
    for name in ["healthcare", "backstage-to-rds", "pyairtable"] {
        instances.extend(documents(&example_spec(name)));
    }
    let errors = json_schema_errors(&instances);
    assert_eq!(errors.len(), 3);
    for (i, e) in errors.iter().enumerate() {
        assert!(e.is_empty(), "document {i}: {e:?}");
    }
}

/// A mistake: the example it is made in, the text replaced, and where and
/// by which keyword the schema must reject it.
struct Mistake {
    example: &'static str,
    from: &'static str,
    to: &'static str,
    path: &'static str,
    keyword: &'static str,
}

const fn m(
    example: &'static str,
    from: &'static str,
    to: &'static str,
    path: &'static str,
    keyword: &'static str,
) -> Mistake {
    Mistake {
        example,
        from,
        to,
        path,
        keyword,
    }
}

const HC: &str = "healthcare";
const RDS: &str = "backstage-to-rds";

const MISTAKES: &[Mistake] = &[
    m(HC, "  name: healthcare\nspec:", "  name: My_DB\nspec:", "metadata/name", "pattern"),
    m(HC, "namespace: default", "namespace: Prod_NS", "spec/source/kubernetes/namespace", "pattern"),
    m(HC, "replicas: 1", "replicas: 0", "spec/target/kubernetes/statefulSet/replicas", "minimum"),
    m(HC, "size: 5Gi", "size: 5 gigs", "spec/target/kubernetes/statefulSet/storage/size", "pattern"),
    m(
        HC,
        "size: 5Gi\n",
        "size: 5Gi\n          accessModes: [ReadWriteSometimes]\n",
        "spec/target/kubernetes/statefulSet/storage/accessModes/0",
        "enum",
    ),
    m(RDS, "password: ${RDS_MASTER_PASSWORD}", "password: hunter2", "spec/credentials/target/password", "pattern"),
    m(HC, "  databases:\n    - healthcare\n", "  databases: []\n", "spec/databases", "minItems"),
    m(
        HC,
        "directory: .pgplan/backups/healthcare",
        "directory: .pgplan/backups/healthcare\n    schedule: every night",
        "spec/backup/schedule",
        "pattern",
    ),
    m(
        HC,
        "directory: .pgplan/backups/healthcare",
        "directory: .pgplan/backups/healthcare\n    jobs: 0",
        "spec/backup/jobs",
        "minimum",
    ),
    m(
        HC,
        "selfHeal: true\n",
        "selfHeal: true\n    http:\n      - name: api\n        url: not a url\n",
        "spec/verify/http/0/url",
        "pattern",
    ),
    m(
        HC,
        "selfHeal: true\n",
        "selfHeal: true\n    http:\n      - name: api\n        url: http://api:8000/\n        expectStatus: 999\n",
        "spec/verify/http/0/expectStatus",
        "maximum",
    ),
    m(RDS, "region: us-east-1", "region: useast", "spec/target/rds/region", "pattern"),
    m(RDS, "instanceIdentifier: backstage-prod", "instanceIdentifier: 1-bad--id", "spec/target/rds/instanceIdentifier", "pattern"),
    m(RDS, "instanceClass: db.t3.medium", "instanceClass: t3.medium", "spec/target/rds/instanceClass", "pattern"),
    m(RDS, "allocatedStorage: 100", "allocatedStorage: 5", "spec/target/rds/allocatedStorage", "minimum"),
    m(RDS, "engineVersion: \"15.4\"", "engineVersion: fifteen", "spec/target/rds/engineVersion", "pattern"),
    m(RDS, "mode: verify-full", "mode: verify", "spec/target/rds/tls/mode", "enum"),
    m(HC, "      statefulSet:\n        name: postgres", "      statefulSet:\n        name: Postgres", "spec/target/kubernetes/statefulSet/name", "pattern"),
    m(HC, "size: 5Gi\n", "size: 5Gi\n          mountPath: data\n", "spec/target/kubernetes/statefulSet/storage/mountPath", "pattern"),
    m(
        HC,
        "path: /data/postgres-0",
        "path: data/postgres-0",
        "spec/target/kubernetes/statefulSet/storage/staticVolumes/0/path",
        "pattern",
    ),
    m(HC, "    - kind: Deployment\n      name: healthcare-api", "    - kind: deployment\n      name: healthcare-api", "spec/consumers/0/kind", "pattern"),
    m(HC, "      name: healthcare-api", "      name: Healthcare_API", "spec/consumers/0/name", "pattern"),
    m(
        HC,
        "directory: .pgplan/backups/healthcare",
        "directory: .pgplan/backups/healthcare\n    storageSize: lots",
        "spec/backup/storageSize",
        "pattern",
    ),
    m(
        HC,
        "        kind: Deployment\n        name: postgres",
        "        kind: Deployment\n        selector: {}",
        "spec/source/kubernetes/workload/selector",
        "minProperties",
    ),
    m(HC, "  cleanup:\n", "  environments:\n    Prod: {}\n  cleanup:\n", "spec/environments", "pattern"),
    m(HC, "    - healthcare\n", "    - \"health care\"\n", "spec/databases/0", "pattern"),
    m(HC, "storageClassName: local-path", "storageClassName: Local_Path", "spec/target/kubernetes/statefulSet/storage/storageClassName", "pattern"),
];

#[test]
fn the_schema_rejects_each_mistake_where_pgplan_does() {
    assert!(MISTAKES.len() >= 15);
    let mut instances = Vec::new();
    let mut texts = Vec::new();
    for mistake in MISTAKES {
        let base = example_spec(mistake.example);
        assert_eq!(
            base.matches(mistake.from).count(),
            1,
            "{:?} is not unique",
            mistake.from
        );
        let text = base.replacen(mistake.from, mistake.to, 1);
        instances.push(documents(&text).remove(0));
        texts.push(text);
    }
    let errors = json_schema_errors(&instances);
    let lookup = |v: &str| (v == "RDS_MASTER_PASSWORD").then(|| "x".repeat(12));
    for ((mistake, found), text) in MISTAKES.iter().zip(&errors).zip(&texts) {
        let want = format!("{} {}", mistake.path, mistake.keyword);
        assert!(
            found.contains(&want),
            "{:?}: expected `{want}` among {found:?}",
            mistake.to
        );
        // pgplan refuses it too, at the line of the mistake.
        let line =
            text[..text.find(mistake.to).unwrap()].lines().count() + mistake.to.lines().count();
        let loaded = pgplan::spec::load(
            pgplan::spec::SourceFile::new("pgplan.yaml", text.as_str()),
            &pgplan::spec::LoadOptions {
                environment: None,
                all_environments: true,
                lookup: &lookup,
            },
        );
        let Err(e) = loaded else {
            panic!("pgplan accepts {:?}", mistake.to)
        };
        let lines: Vec<String> = e.errors.iter().map(|x| x.location()).collect();
        assert!(
            lines.iter().any(|l| {
                let n: usize = l.split(':').nth(1).unwrap().parse().unwrap();
                n + 2 >= line && n <= line
            }),
            "{:?}: pgplan's errors are elsewhere: {lines:?} (mistake ends on line {line})",
            mistake.to
        );
    }
}
