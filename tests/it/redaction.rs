//! Secrets in errors and journals (issue 23, item 3): a canary value from
//! the environment appears in no diagnostic — spec errors, planner errors,
//! the API server's rejection of a dry run, the final error of a failed
//! apply — and in no journal record; diagnostics about the user's file name
//! the `${VAR}` reference instead.

use std::path::Path;

use serde_json::Value;

use crate::apply::{ok, patients, pgplan_in, spec, text};
use crate::cli::pgplan;
use crate::support::{Scenario, SimCluster};

/// Not a valid Kubernetes name (upper case), a valid label value.
const CANARY: &str = "Canary_XYZ_123";

/// The healthcare example with `from` replaced by `to`, written into `dir`.
fn variant(dir: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(spec()).unwrap();
    let changed = text.replacen(from, to, 1);
    assert_ne!(changed, text, "the example still has `{from}`");
    let path = dir.join("pgplan.yaml");
    std::fs::write(&path, changed).unwrap();
    path.display().to_string()
}

fn live_state() -> String {
    crate::cli::repo()
        .join("examples/healthcare/live.yaml")
        .display()
        .to_string()
}

fn assert_no_canary(what: &str, out: &str) {
    assert!(
        !out.contains(CANARY),
        "the canary leaked into {what}:\n{out}"
    );
}

#[test]
fn spec_diagnostics_name_the_reference_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = variant(
        dir.path(),
        "        name: postgres\n        serviceName",
        "        name: ${PGPLAN_CANARY}\n        serviceName",
    );
    let live = live_state();
    for args in [
        vec!["validate", "-f", &file],
        vec!["plan", "-f", &file, "--live-state", &live],
    ] {
        let out = pgplan(&args, &[("PGPLAN_CANARY", CANARY)]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_no_canary(&format!("`pgplan {}`", args[0]), &err);
        assert_no_canary("stdout", &text(&out.stdout));
        assert!(
            err.contains("`${PGPLAN_CANARY}` is not a valid"),
            "the diagnostic names the reference:\n{err}"
        );
    }
}

#[test]
fn planner_diagnostics_name_the_reference_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = variant(
        dir.path(),
        "storageClassName: local-path",
        "storageClassName: ${PGPLAN_CANARY_CLASS}",
    );
    let class = CANARY.to_lowercase().replace('_', "-");
    let out = pgplan(
        &["plan", "-f", &file, "--live-state", &live_state()],
        &[("PGPLAN_CANARY_CLASS", &class)],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains(&class), "{err}");
    assert!(
        err.contains("StorageClass `${PGPLAN_CANARY_CLASS}` does not exist"),
        "{err}"
    );
}

/// The API server quotes the value it rejects; pgplan's error does not.
#[test]
fn a_dry_run_rejection_is_redacted() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let file = variant(
        state.path(),
        "  name: healthcare\n",
        "  name: healthcare\n  labels:\n    team: ${PGPLAN_CANARY_LABEL}\n",
    );
    // Spaces make it an invalid label value, which only the server checks.
    let label = format!("{CANARY} label");
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &file],
        &[("PGPLAN_CANARY_LABEL", &label)],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::plan::dry_run"), "{err}");
    assert!(err.contains("metadata.labels"), "{err}");
    assert_no_canary("the dry run's error", &err);
}

/// Every record of every journal file under the state directory.
fn journal_records(state: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for sub in ["journal", "history"] {
        let Ok(entries) = std::fs::read_dir(state.join(sub)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
                // Each record is sealed: `{"v":N,"seq":N,"record":{…},"sum":…}`.
                assert_eq!(
                    v["v"],
                    pgplan::apply::journal::FORMAT_VERSION,
                    "{}: {line}",
                    path.display()
                );
                out.push((line.to_string(), v["record"].clone()));
            }
        }
    }
    out
}

/// An apply whose verify fails on a SQL probe expecting the canary, with
/// the canary also in a label of everything pgplan creates: the final
/// error, the progress lines and every journal record hold references or
/// `(sensitive)`, never the value; the rollback still restores everything.
#[test]
fn a_failed_apply_writes_the_canary_nowhere() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    let file = variant(
        state.path(),
        "      - name: all patients are back\n        database: healthcare\n        query: SELECT string_agg(name, ',' ORDER BY registered_at) FROM patients\n        expect: Alice,Bob,Ibrahim\n",
        "      - name: probe ${PGPLAN_CANARY}\n        database: healthcare\n        query: SELECT string_agg(name, ',' ORDER BY registered_at) FROM patients\n        expect: ${PGPLAN_CANARY}\n",
    );
    let text_spec = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text_spec.replacen(
            "  name: healthcare\n",
            "  name: healthcare\n  labels:\n    team: ${PGPLAN_CANARY_TEAM}\n",
            1,
        ),
    )
    .unwrap();
    let team = format!("{CANARY}-team");
    let env = [
        ("PGPLAN_CANARY", CANARY),
        ("PGPLAN_CANARY_TEAM", team.as_str()),
    ];
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &file, "--auto-approve"],
        &env,
    );
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{err}");
    assert!(err.contains("pg/healthcare/healthcare/verify"), "{err}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert!(
        err.contains("expected `(sensitive)`"),
        "the failure still says what was compared:\n{err}"
    );
    assert_no_canary("the final error", &err);
    assert_no_canary("the progress output", &stdout);
    assert_eq!(patients(&cluster), before);

    let records = journal_records(state.path());
    let kinds: Vec<&str> = records
        .iter()
        .filter_map(|(_, v)| v["type"].as_str())
        .collect();
    for kind in [
        "begin",
        "started",
        "done",
        "failed",
        "rollback_started",
        "compensated",
        "rolled_back",
    ] {
        assert!(kinds.contains(&kind), "no `{kind}` record: {kinds:?}");
    }
    for (line, _) in &records {
        assert_no_canary("a journal record", line);
    }
    // The journal's copy in the cluster holds the same redacted records.
    let copy = cluster
        .get_json("secrets", "default", "pgplan-journal-healthcare")
        .expect("the journal's copy in the cluster");
    let mut in_cluster = String::new();
    for v in copy["data"].as_object().expect("data").values() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("base64");
        in_cluster.push_str(&String::from_utf8_lossy(&raw));
    }
    assert_eq!(
        in_cluster.lines().count(),
        records.len(),
        "every record is in the copy"
    );
    assert!(in_cluster.contains("${PGPLAN_CANARY_TEAM}"));
    assert_no_canary("the journal's copy in the cluster", &in_cluster);
    let failed = records
        .iter()
        .find(|(_, v)| v["type"] == "failed")
        .map(|(_, v)| v["error"].as_str().unwrap_or_default().to_string())
        .unwrap();
    assert!(
        failed.contains("expected `${PGPLAN_CANARY}`"),
        "the journal keeps the reference: {failed}"
    );
    let begin = records.iter().find(|(_, v)| v["type"] == "begin").unwrap();
    assert!(begin.0.contains("${PGPLAN_CANARY_TEAM}"), "{}", begin.0);

    // Fixed, the same spec applies: the references resolve again.
    let fixed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("expect: ${PGPLAN_CANARY}", "expect: Alice,Bob,Ibrahim");
    std::fs::write(&file, fixed).unwrap();
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &file, "--auto-approve"],
        &env,
    ));
    assert_eq!(patients(&cluster), before);
    let sts = cluster
        .get_json("statefulsets", "default", "postgres")
        .unwrap();
    assert_eq!(sts["metadata"]["labels"]["team"], team.as_str());
}
