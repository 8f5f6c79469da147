//! The journal lives in the cluster too (`--state cluster`, the default): a
//! Secret beside the placement's Lease, record by record, so an apply whose
//! runner was lost is seen by `plan` from anywhere and resumed from a fresh
//! machine; a writer that is no longer the journal's last is fenced off by
//! the Secret's resourceVersion; `--state local` keeps it on the runner only.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use crate::apply::{assert_moved, ok, patients, pgplan_in, spec, step_addresses, text};
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

const SECRET: &str = "pgplan-journal-healthcare";

/// The example spec, copied into `dir` (so its backups go there too).
fn spec_in(dir: &Path) -> String {
    let path = dir.join("pgplan.yaml");
    std::fs::copy(spec(), &path).expect("copy the spec");
    path.display().to_string()
}

/// The journal's records as the Secret holds them, in key order.
fn journal_in_cluster(cluster: &SimCluster) -> Option<Vec<Value>> {
    let secret = cluster.get_json("secrets", hc::NAMESPACE, SECRET)?;
    let data = secret["data"].as_object()?.clone();
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    Some(
        keys.iter()
            .map(|k| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(data[k.as_str()].as_str().unwrap_or(""))
                    .expect("base64");
                serde_json::from_slice(&raw).expect("one sealed record per key")
            })
            .collect(),
    )
}

fn record_types(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["record"]["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_lost_runner_is_seen_from_anywhere_and_resumed_from_a_fresh_directory() {
    let steps = step_addresses(None);
    // Killed just before the first backup step starts: everything it did
    // before is in the journal, nothing the lost directory held is needed.
    let k = steps
        .iter()
        .position(|a| a.contains("/backup"))
        .expect("a backup step")
        + 1;
    assert!(k > 1, "{steps:?}");
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let before = patients(&cluster);
    let runner = tempfile::tempdir().expect("the first runner's directory");
    let spec = spec_in(runner.path());
    let crash = format!("before:{k}");
    let out = pgplan_in(
        &cluster,
        runner.path(),
        &["apply", "-f", &spec, "--auto-approve"],
        &[("PGPLAN_TEST_CRASH", &crash)],
    );
    assert_eq!(out.status.code(), None, "killed: {}", text(&out.stderr));
    let records = journal_in_cluster(&cluster).expect("the journal's copy in the cluster");
    let types = record_types(&records);
    assert_eq!(
        types.first().map(String::as_str),
        Some("begin"),
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "done").count(),
        k - 1,
        "every step done before the kill is in the copy: {types:?}"
    );
    let secret = cluster
        .get_json("secrets", hc::NAMESPACE, SECRET)
        .expect("the Secret");
    let copy = serde_json::to_string(&records).expect("json");
    assert!(
        !copy.contains(hc::PASSWORD),
        "the journal's copy holds no secret value"
    );
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pgplan"
    );
    // The runner is gone, and its directory with it.
    drop(runner);

    // Another machine: plan sees the unfinished apply and where its journal is.
    let elsewhere = tempfile::tempdir().expect("another directory");
    let spec = spec_in(elsewhere.path());
    let planned = pgplan_in(
        &cluster,
        elsewhere.path(),
        &["plan", "-f", &spec, "--detailed-exitcode"],
        &[],
    );
    let said = text(&planned.stdout) + &text(&planned.stderr);
    assert!(!said.contains("No changes"), "{said}");
    assert!(said.contains("an apply of healthcare"), "{said}");
    assert!(
        said.contains(&format!("Secret {}/{SECRET}", hc::NAMESPACE)),
        "the plan says where the journal is: {said}"
    );
    // A fresh apply there refuses to start over it; --resume finishes it.
    let refused = pgplan_in(
        &cluster,
        elsewhere.path(),
        &["apply", "-f", &spec, "--auto-approve"],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let resumed = pgplan_in(
        &cluster,
        elsewhere.path(),
        &["apply", "-f", &spec, "--auto-approve", "--resume"],
        &[],
    );
    let stdout = ok(&resumed);
    assert!(
        stdout.contains(&format!("Resuming: {} ", k - 1)),
        "resumed with the steps done before the kill: {stdout}"
    );
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    let types = record_types(&journal_in_cluster(&cluster).expect("the copy"));
    assert_eq!(
        types.last().map(String::as_str),
        Some("finished"),
        "{types:?}"
    );
    // And the plan from yet another directory is empty now.
    let third = tempfile::tempdir().expect("a third directory");
    let spec = spec_in(third.path());
    let planned = pgplan_in(&cluster, third.path(), &["plan", "-f", &spec], &[]);
    assert!(
        text(&planned.stdout).contains("No changes"),
        "{}",
        text(&planned.stdout)
    );
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_writer_whose_journal_copy_was_changed_by_another_stops_at_its_next_record() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let runner = tempfile::tempdir().expect("runner");
    let spec = spec_in(runner.path());
    let hold = runner.path().join("hold");
    std::fs::create_dir_all(&hold).expect("hold dir");
    let held = format!("step:2:{}", hold.display());
    let mut child = crate::run::pgplan_command();
    child
        .args(["apply", "-f", &spec, "--auto-approve", "--state-dir"])
        .arg(runner.path())
        .current_dir(runner.path())
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("PGPLAN_TEST_HOLD", &held)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = child.spawn().expect("start the apply");
    cluster.wait_until(std::time::Duration::from_secs(60), "step 2 is held", |_| {
        hold.join("held-2").exists()
    });
    // Someone else writes the copy (another pgplan that took over).
    let mut secret = cluster
        .get_json("secrets", hc::NAMESPACE, SECRET)
        .expect("the copy exists once steps started");
    secret["data"]["record-99999999"] = Value::String("e30K".into());
    cluster.replace_json(secret).expect("write the Secret");
    std::fs::write(hold.join("release-2"), "").expect("release");
    let out = child.wait_with_output().expect("the apply ends");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pgplan::journal::fenced"), "{stderr}");
    assert!(
        stderr.contains(&format!("Secret {}/{SECRET}", hc::NAMESPACE)),
        "{stderr}"
    );
    // The other writer's record is still there: nothing was overwritten.
    let secret = cluster
        .get_json("secrets", hc::NAMESPACE, SECRET)
        .expect("the copy");
    assert_eq!(secret["data"]["record-99999999"], "e30K");
}

#[test]
fn with_state_local_the_journal_stays_on_the_runner() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let runner = tempfile::tempdir().expect("runner");
    let spec = spec_in(runner.path());
    let said = ok(&pgplan_in(
        &cluster,
        runner.path(),
        &["apply", "-f", &spec, "--auto-approve", "--state", "local"],
        &[],
    ));
    assert!(
        said.contains(
            "journal/healthcare.jsonl only (--state local): resume this apply from this machine"
        ),
        "the apply says where its state is: {said}"
    );
    assert_moved(&cluster);
    assert!(cluster.get_json("secrets", hc::NAMESPACE, SECRET).is_none());
    assert!(cluster
        .requests()
        .all()
        .iter()
        .all(|r| !(r.resource == "secrets" && r.name.as_deref() == Some(SECRET))));
}
