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

/// The `file:line:col: message` lines of a run's diagnostics.
fn located(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("× "))
        .filter(|l| l.contains(".yaml:"))
        .map(|l| l[l.find("pgplan.yaml:").unwrap_or(0)..].to_string())
        .collect()
}

#[test]
fn structural_and_semantic_errors_are_reported_in_one_run() {
    // Four mistakes: two the schema finds (a wrong type, a missing list),
    // two only the semantic checks find (a name, a size), in other sections.
    let four = GOOD
        .replace("  name: healthcare\n", "  name: Health_Care\n")
        .replace("        replicas: 1\n", "        replicas: one\n")
        .replace("          size: 5Gi\n", "          size: 5 gigs\n")
        .replace("  databases:\n    - healthcare\n", "");
    let (code, err) = validate(&four);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("4 errors"), "{err}");
    for needle in [
        "pgplan.yaml:7:9: `Health_Care` is not a valid Kubernetes name",
        "pgplan.yaml:20:19: `spec.target.kubernetes.statefulSet.replicas` must be an integer",
        "pgplan.yaml:22:17: ` gigs` is not a quantity suffix",
        "missing field `databases` in `spec`",
    ] {
        assert!(err.contains(needle), "missing {needle}:\n{err}");
    }
    // A size inside the section with the wrong type is found as well.
    let (_, err) = validate(&four.replace("size: 5 gigs", "size: 5Gi").replace(
        "volumeClaimTemplate: postgres-storage",
        "volumeClaimTemplate: Bad_Template",
    ));
    assert!(
        err.contains("`Bad_Template` is not a valid Kubernetes name"),
        "{err}"
    );
}

#[test]
fn fixing_the_structural_errors_reveals_nothing_new() {
    let many = GOOD
        .replace("  name: healthcare\n", "  name: Health_Care\n")
        .replace("namespace: default", "namespace: Prod_NS")
        .replace("        replicas: 1\n", "        replicas: many\n")
        .replace("          size: 5Gi\n", "          size: 5 gigs\n")
        .replace("              node: node2\n", "              node: Node_2\n")
        .replace("  databases:\n    - healthcare\n", "  databses:\n    - healthcare\n")
        .replace(
            "    - kind: Deployment\n      name: healthcare-api\n",
            "    - kind: Deployment\n      name: Healthcare_API\n      quiesce: maybe\n    - kind: Deployment\n      name: api.v2_\n",
        )
        .replace("    selfHeal: true\n", "    selfHeal: yes\n");
    let (code, first) = validate(&many);
    assert_eq!(code, 1, "{first}");
    let first = located(&first);
    // The structural errors fixed, what remains was all reported before.
    let fixed = many
        .replace("replicas: many", "replicas: 1")
        .replace("databses:", "databases:")
        .replace("quiesce: maybe", "quiesce: true")
        .replace("selfHeal: yes", "selfHeal: true");
    let (code, second) = validate(&fixed);
    assert_eq!(code, 1, "{second}");
    let second = located(&second);
    assert_eq!(second.len(), 6, "{second:#?}");
    for e in &second {
        assert!(
            first.contains(e),
            "{e} was not reported the first time:\n{first:#?}"
        );
    }
    assert_eq!(first.len(), second.len() + 5, "{first:#?}");
}

#[test]
fn an_unset_variable_is_one_error_not_also_a_bad_name() {
    for (from, to) in [
        ("namespace: default", "namespace: ${PGPLAN_TEST_UNSET_NS}"),
        (
            "        name: postgres\n        serviceName",
            "        name: pg-${PGPLAN_TEST_UNSET_NS}\n        serviceName",
        ),
        (
            "          size: 5Gi\n",
            "          size: ${PGPLAN_TEST_UNSET_NS}\n",
        ),
        (
            "        replicas: 1\n",
            "        replicas: ${PGPLAN_TEST_UNSET_NS}\n",
        ),
        ("    - healthcare\n", "    - ${PGPLAN_TEST_UNSET_NS}\n"),
    ] {
        let (code, err) = validate(&GOOD.replace(from, to));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("1 error"), "{to}:\n{err}");
        assert!(err.contains("`PGPLAN_TEST_UNSET_NS` is not set"), "{err}");
        assert!(!err.contains("not a valid Kubernetes name"), "{to}:\n{err}");
        assert!(!err.contains("must be"), "{to}:\n{err}");
    }
}

#[test]
fn a_misspelt_consumer_kind_gets_did_you_mean() {
    let (code, err) = validate(&GOOD.replace(
        "    - kind: Deployment\n      name: healthcare-api",
        "    - kind: Deploymnet\n      name: healthcare-api",
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 error"), "{err}");
    assert!(
        err.contains("pgplan.yaml:34:13: `Deploymnet` is not a kind pgplan knows"),
        "{err}"
    );
    assert!(err.contains("did you mean `Deployment`?"), "{err}");
    // A kind of another API group is a custom resource, not a typo.
    let (_, err) = validate(&GOOD.replace(
        "    - kind: Deployment\n      name: healthcare-api",
        "    - kind: DeploymentConfig\n      apiVersion: apps.openshift.io/v1\n      name: healthcare-api\n      replicasField: spec.replicas",
    ));
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn a_field_left_out_for_its_error_is_not_compared_or_missed() {
    // Two static volumes and replicas that do not read: no "2 static
    // volumes for 1 replicas" from the default the field was read as.
    let spec = GOOD.replace("        replicas: 1\n", "        replicas: two\n").replace(
        "              path: /data/postgres-0\n",
        "              path: /data/postgres-0\n            - name: postgres-pv-1\n              node: node2\n              path: /data/postgres-1\n",
    );
    let (code, err) = validate(&spec);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 error"), "{err}");
    assert!(err.contains("must be an integer"), "{err}");
    // A workload name that does not read is not "missing".
    let (code, err) = validate(&GOOD.replace(
        "        name: postgres\n  target",
        "        name: [postgres]\n  target",
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 error"), "{err}");
    assert!(!err.contains("needs `name` or `selector`"), "{err}");
}

/// Two replicas without standbys would be two writable servers behind one
/// Service, the second one empty: refused where it is written, with what to
/// do, by `validate` and by `plan` alike.
#[test]
fn replicas_without_standbys_are_refused_where_they_are_written() {
    let two = GOOD.replace("        replicas: 1\n", "        replicas: 2\n");
    assert_ne!(two, GOOD, "the spec took the replica count");
    let (code, err) = validate(&two);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 error"), "{err}");
    assert!(
        err.contains("pgplan::spec::replicas-without-standbys"),
        "{err}"
    );
    assert!(
        err.contains("pgplan.yaml:20:19: 2 replicas would be 2 independent, writable servers behind one Service"),
        "{err}"
    );
    assert!(err.contains("the restore fills `postgres-0` only"), "{err}");
    assert!(err.contains("use `replicas: 1`"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("pgplan.yaml");
    std::fs::write(&spec, &two).expect("write");
    let out = pgplan(
        &[
            "plan",
            "-f",
            spec.to_str().expect("utf-8"),
            "--live-state",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/healthcare/live.yaml"),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pgplan::spec::replicas-without-standbys"),
        "{err}"
    );
    assert!(
        text(&out.stdout).is_empty(),
        "no plan is shown: {}",
        text(&out.stdout)
    );
    // One replica stays valid.
    let (code, err) = validate(GOOD);
    assert_eq!(code, 0, "{err}");
}
