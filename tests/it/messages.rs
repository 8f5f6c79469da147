//! What a user reads when a file is wrong: every error of a file at once,
//! each said once, with help that fits it.

use crate::cli::pgplan;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = include_str!("../../examples/healthcare/pgplan.yaml");
const SCHEMA_HELP: &str = "`pgplan schema` prints the JSON Schema";

fn validate(content: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pgplan.yaml");
    std::fs::write(&path, content).expect("write");
    let out = pgplan(&["validate", "-f", path.to_str().expect("utf-8")], &[]);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

#[test]
fn a_missing_file_is_named_and_its_cause_said_once() {
    let out = pgplan(&["validate", "-f", "does/not/exist.yaml"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read does/not/exist.yaml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let out = pgplan(
        &[
            "plan",
            "--example",
            "healthcare",
            "--live-state",
            "no/live.yaml",
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(err.contains("cannot read no/live.yaml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn the_schema_is_suggested_only_for_schema_errors() {
    // A field the schema does not know: the schema helps.
    let (code, err) = validate(&GOOD.replace("  backup:", "  bakup:"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pgplan::spec::unknown-field"), "{err}");
    assert!(err.contains(SCHEMA_HELP), "{err}");
    // A syntax error, a bad name, a snapshot: it does not.
    for broken in [
        GOOD.replace("kind: Placement", "kind: [Placement"),
        GOOD.replace("name: healthcare\n", "name: Health_Care\n"),
    ] {
        let (code, err) = validate(&broken);
        assert_eq!(code, 1, "{err}");
        assert!(!err.contains(SCHEMA_HELP), "{err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live.yaml");
    std::fs::write(&live, "formatVersion: 1\nkubernetes: {objects: 3}\n").expect("write");
    let out = pgplan(
        &[
            "plan",
            "--example",
            "healthcare",
            "--live-state",
            live.to_str().expect("utf-8"),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(err.contains("pgplan::snapshot::invalid"), "{err}");
    assert!(!err.contains(SCHEMA_HELP), "{err}");
}
