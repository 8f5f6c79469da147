//! `pgplan apply` end to end on the simulated cluster (issue 5, seed 002):
//! the healthcare database moves from its Deployment into a StatefulSet
//! with real data; failures at every step roll back to the original
//! topology with identical data; a kill -9 at every step boundary resumes;
//! locks, saved plans and unverifiable dumps behave.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::cli::repo;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

/// The example spec, by absolute path: pgplan runs in each test's own
/// directory, where its backups and journal go.
pub fn spec() -> String {
    repo()
        .join("examples/healthcare/pgplan.yaml")
        .display()
        .to_string()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run pgplan against a cluster with a state directory.
pub fn pgplan_in(
    cluster: &SimCluster,
    state: &Path,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Output {
    let mut cmd = crate::run::pgplan_command();
    cmd.args(args)
        .current_dir(state)
        .env("KUBECONFIG", cluster.kubeconfig_path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    if !args.contains(&"--state-dir") && args.first() == Some(&"apply") {
        cmd.arg("--state-dir").arg(state);
    }
    cmd.output().expect("run pgplan")
}

pub fn apply(cluster: &SimCluster, state: &Path, extra: &[(&str, &str)]) -> Output {
    apply_spec(cluster, state, &spec(), extra)
}

pub fn apply_spec(
    cluster: &SimCluster,
    state: &Path,
    spec: &str,
    extra: &[(&str, &str)],
) -> Output {
    pgplan_in(
        cluster,
        state,
        &["apply", "-f", spec, "--auto-approve"],
        extra,
    )
}

/// The example with `loadTuning: restart`, written into `dir`: postgres-0 is
/// restarted for minimal WAL before the restore and again after it. The
/// step addresses are the example's.
pub fn restart_spec(dir: &Path) -> String {
    let text = std::fs::read_to_string(spec()).unwrap();
    let changed = text.replace(
        "        replicas: 1\n",
        "        replicas: 1\n        loadTuning: restart\n",
    );
    assert_ne!(changed, text);
    let path = dir.join("pgplan-restart.yaml");
    std::fs::write(&path, changed).unwrap();
    path.display().to_string()
}

/// postgres-0's settings after the move: pgplan's ALTER SYSTEM entries are
/// gone and nothing waits for a restart, so it serves on its own settings.
pub fn assert_settings_back(cluster: &SimCluster) {
    let q = |sql: &str| cluster.psql(hc::NAMESPACE, "postgres-0", "postgres", sql);
    assert_eq!(q("SHOW wal_level").trim(), "replica");
    assert_eq!(q("SHOW autovacuum").trim(), "on");
    assert_eq!(
        q("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'")
            .trim(),
        "0",
        "ALTER SYSTEM settings left behind"
    );
    assert_eq!(
        q("SELECT count(*) FROM pg_settings WHERE pending_restart AND name IN ('wal_level', 'max_wal_senders', 'archive_mode')")
            .trim(),
        "0"
    );
}

pub fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The postgres pod serving the data now (Deployment or StatefulSet).
pub fn db_pod(cluster: &SimCluster) -> String {
    let pods = cluster.pod_names(hc::NAMESPACE, "app=postgres");
    assert_eq!(
        pods.len(),
        1,
        "one postgres pod expected: {pods:?}\n{}",
        cluster.describe(hc::NAMESPACE)
    );
    pods[0].clone()
}

/// Patients in registration order, and a checksum of every row.
pub fn patients(cluster: &SimCluster) -> (String, String) {
    let pod = db_pod(cluster);
    let names = cluster.psql(
        hc::NAMESPACE,
        &pod,
        hc::DATABASE,
        "select string_agg(name, ',' order by registered_at, id) from patients",
    );
    let sum = cluster.psql(
        hc::NAMESPACE,
        &pod,
        hc::DATABASE,
        "select md5(string_agg(p::text, '|' order by id)) from patients p",
    );
    (names.trim().to_string(), sum.trim().to_string())
}

pub fn json_of(cluster: &SimCluster, resource: &str, name: &str) -> Option<Value> {
    cluster.get_json(resource, hc::NAMESPACE, name)
}

/// The pgplan annotations on the healthcare namespace's ReplicaSets: none may stay once an
/// apply finished or rolled back (the Deployment controller copies a Deployment's annotations to
/// its ReplicaSet and never removes them, so pgplan must).
pub fn pgplan_annotations_on_replica_sets(cluster: &SimCluster) -> Vec<String> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    cluster
        .list::<ReplicaSet>(Some(hc::NAMESPACE))
        .into_iter()
        .flat_map(|rs| {
            let name = rs.metadata.name.clone().unwrap_or_default();
            rs.metadata
                .annotations
                .unwrap_or_default()
                .into_keys()
                .filter(|k| k.starts_with("pgplan.dev/"))
                .map(move |k| format!("ReplicaSet {name}: {k}"))
        })
        .collect()
}

/// The topology before any apply: Deployment on its claim, ClusterIP Service, API at 2.
pub fn assert_original_topology(cluster: &SimCluster) {
    let dep =
        json_of(cluster, "deployments", hc::DEPLOYMENT).expect("the postgres Deployment is back");
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        hc::PVC
    );
    assert!(
        json_of(cluster, "statefulsets", "postgres").is_none(),
        "the StatefulSet was removed"
    );
    let svc = json_of(cluster, "services", hc::SERVICE).expect("the Service is back");
    assert_ne!(
        svc["spec"]["clusterIP"], "None",
        "the Service is a ClusterIP Service again"
    );
    let api = json_of(cluster, "deployments", hc::API_DEPLOYMENT).unwrap();
    assert_eq!(api["spec"]["replicas"], hc::API_REPLICAS);
    assert!(
        cluster
            .get_json("persistentvolumes", "", "postgres-pv-0")
            .is_none(),
        "the static PV was removed"
    );
    let pv = cluster
        .get_json("persistentvolumes", "", hc::PV)
        .expect("the old PV");
    assert_eq!(
        pv["spec"]["persistentVolumeReclaimPolicy"], "Delete",
        "the reclaim policy is back"
    );
    cluster.wait_until(
        std::time::Duration::from_secs(60),
        "the Deployment and API ready again",
        |c| c.workloads_ready(hc::NAMESPACE),
    );
    assert_eq!(
        pgplan_annotations_on_replica_sets(cluster),
        Vec::<String>::new()
    );
}

/// The topology after the move (seed 002's "after").
pub fn assert_moved(cluster: &SimCluster) {
    assert!(
        json_of(cluster, "deployments", hc::DEPLOYMENT).is_none(),
        "the Deployment is gone"
    );
    let sts = json_of(cluster, "statefulsets", "postgres").expect("the StatefulSet");
    assert_eq!(sts["spec"]["serviceName"], "postgres");
    assert!(
        cluster.pod_ready(hc::NAMESPACE, "postgres-0"),
        "postgres-0 is ready"
    );
    let pvc = json_of(
        cluster,
        "persistentvolumeclaims",
        "postgres-storage-postgres-0",
    )
    .expect("the claim");
    assert_eq!(pvc["status"]["phase"], "Bound");
    assert_eq!(pvc["spec"]["volumeName"], "postgres-pv-0");
    let svc = json_of(cluster, "services", hc::SERVICE).unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let api = json_of(cluster, "deployments", hc::API_DEPLOYMENT).unwrap();
    assert_eq!(api["spec"]["replicas"], hc::API_REPLICAS);
    assert_eq!(api["status"]["readyReplicas"], hc::API_REPLICAS);
    assert!(api["metadata"]["annotations"]["pgplan.dev/quiesced-replicas"].is_null());
    assert_eq!(
        pgplan_annotations_on_replica_sets(cluster),
        Vec::<String>::new()
    );
}

#[test]
fn apply_moves_the_patients_into_a_statefulset() {
    moves_the_patients(SimCluster::with_scenario(Scenario::Healthcare));
}

/// The same through a kubelet that speaks only `v4.channel.k8s.io`
/// (before Kubernetes 1.30), which loses a command's exit status once the
/// client closes its side: every exec of observe, plan and apply ends with
/// its status there too.
#[test]
fn apply_moves_the_patients_into_a_statefulset_over_exec_v4() {
    moves_the_patients(SimCluster::with_scenario_v4(Scenario::Healthcare));
}

fn moves_the_patients(cluster: SimCluster) {
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    assert_eq!(before.0, "Alice,Bob,Ibrahim");
    let out = ok(&apply(&cluster, state.path(), &[]));
    assert!(out.contains("Apply complete"), "{out}");
    assert!(
        out.contains("Downtime of healthcare: ")
            && out.contains("s (steps 3–12; dump and restore "),
        "{out}"
    );
    assert_moved(&cluster);
    assert_eq!(db_pod(&cluster), "postgres-0");
    assert_eq!(patients(&cluster), before, "the same rows, byte for byte");
    // 7 MiB: `loadTuning: auto` loads it on the server's own settings.
    assert!(!out.contains("tune-for-loading"), "{out}");
    assert!(!out.contains("restarting Pod"), "{out}");
    assert_settings_back(&cluster);
    // Nothing left to do.
    let again = pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &spec(), "--detailed-exitcode"],
        &[],
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
}

/// Quiesce writes `pgplan.dev/quiesced-replicas` on the consumer Deployment, and the
/// Deployment controller copies it onto the ReplicaSet (and never takes it off): after the
/// move, and after a rollback, no ReplicaSet carries it.
#[test]
fn quiesce_bookkeeping_leaves_no_trace_on_replica_sets() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    ok(&apply(&cluster, state.path(), &[]));
    assert_eq!(
        pgplan_annotations_on_replica_sets(&cluster),
        Vec::<String>::new()
    );

    let steps = step_addresses(None);
    let quiesce = steps
        .iter()
        .position(|s| s.ends_with(":quiesce"))
        .expect("a quiesce step");
    let after_quiesce = &steps[quiesce + 1];
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let out = apply(
        &cluster,
        state.path(),
        &[("PGPLAN_TEST_FAIL", after_quiesce)],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert_eq!(
        pgplan_annotations_on_replica_sets(&cluster),
        Vec::<String>::new()
    );
}

/// `loadTuning: restart`: postgres-0 is restarted into minimal WAL for the
/// restore and restarted back before verify; the data and settings end as
/// with the default.
#[test]
fn a_restart_for_minimal_wal_loads_and_puts_everything_back() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    let out = ok(&apply_spec(
        &cluster,
        state.path(),
        &restart_spec(state.path()),
        &[],
    ));
    assert_eq!(
        out.matches("restarting Pod default/postgres-0 for its settings")
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("wal_level=minimal, max_wal_senders=0"),
        "{out}"
    );
    assert!(
        out.contains("settings back, restarted, checkpointed and synced"),
        "{out}"
    );
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    assert_settings_back(&cluster);
}

#[test]
fn json_events_report_every_step() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let out = ok(&pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve", "--json"],
        &[],
    ));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let done = events.iter().filter(|e| e["event"] == "step_done").count();
    assert_eq!(done, 12, "{out}");
    assert_eq!(events.last().unwrap()["event"], "apply_finished");
    assert!(!out.contains(hc::PASSWORD));

    // The downtime the consumers saw: the window's steps 3–12 as planned, at
    // least as long as the chain of steps in it that wait for each other (all
    // but #6, the Service, which runs beside #5), dump and restore a part of it.
    let downtime: Vec<&Value> = events.iter().filter(|e| e["event"] == "downtime").collect();
    assert_eq!(downtime.len(), 1, "{out}");
    let d = downtime[0];
    assert_eq!(d["placement"], "healthcare");
    assert_eq!(
        (d["first_step"].as_u64(), d["last_step"].as_u64()),
        (Some(3), Some(12))
    );
    let secs = |v: &Value| v.as_f64().expect("seconds");
    let window: f64 = events
        .iter()
        .filter(|e| {
            e["event"] == "step_done"
                && e["position"]
                    .as_u64()
                    .is_some_and(|p| (3..=12).contains(&p) && p != 6)
        })
        .map(|e| secs(&e["seconds"]))
        .sum();
    assert!(
        secs(&d["seconds"]) + 0.01 >= window,
        "{d} vs steps {window}"
    );
    let data: f64 = events
        .iter()
        .filter(|e| {
            e["event"] == "step_done"
                && e["address"]
                    .as_str()
                    .is_some_and(|a| a.ends_with("/backup") || a.ends_with("/restore"))
        })
        .map(|e| secs(&e["seconds"]))
        .sum();
    assert!(data > 0.0);
    assert!(
        (secs(&d["dump_and_restore_seconds"]) - data).abs() < 0.05,
        "{d} vs {data}"
    );
    assert!(
        (secs(&d["seconds"]) - secs(&d["dump_and_restore_seconds"]) - secs(&d["other_seconds"]))
            .abs()
            < 0.001
    );
}

/// Every step, failing after it acted, rolls back to the original topology
/// with identical data, and a second apply then succeeds. With
/// `loadTuning: restart`, so that the restarts around the restore are
/// among the steps rolled back.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_failure_at_any_step_rolls_back_and_a_second_apply_succeeds() {
    let planned = tempfile::tempdir().unwrap();
    let steps = step_addresses(Some(&restart_spec(planned.path())));
    assert!(steps.iter().any(|s| s.ends_with("/tune-for-loading")));
    for (i, address) in steps.iter().enumerate() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let state = tempfile::tempdir().unwrap();
        let before = patients(&cluster);
        let spec = restart_spec(state.path());
        let out = apply_spec(
            &cluster,
            state.path(),
            &spec,
            &[("PGPLAN_TEST_FAIL", address)],
        );
        let err = text(&out.stderr);
        // The resume step is after the commit point: it stops without rolling back.
        if address.ends_with(":resume") {
            assert_eq!(out.status.code(), Some(1));
            assert!(err.contains("nothing was rolled back"), "{err}");
            ok(&pgplan_in(
                &cluster,
                state.path(),
                &["apply", "-f", &spec, "--auto-approve", "--resume"],
                &[],
            ));
            assert_moved(&cluster);
            assert_eq!(patients(&cluster), before);
            assert_settings_back(&cluster);
            continue;
        }
        assert_eq!(
            out.status.code(),
            Some(1),
            "step {} ({address}) should fail:\n{}",
            i + 1,
            text(&out.stdout)
        );
        assert!(
            err.contains("Rolled back to the original topology"),
            "step {address}:\n{err}"
        );
        assert!(err.contains(address.as_str()), "{err}");
        assert_original_topology(&cluster);
        assert_eq!(
            patients(&cluster),
            before,
            "data after rolling back step {address}"
        );
        ok(&apply_spec(&cluster, state.path(), &spec, &[]));
        assert_moved(&cluster);
        assert_eq!(
            patients(&cluster),
            before,
            "data after the second apply (step {address})"
        );
        assert_settings_back(&cluster);
    }
}

/// A kill -9 after every step, then `--resume`: the move completes with
/// identical data (`loadTuning: restart`: a kill while postgres-0 runs with
/// minimal WAL, or between the restarts, resumes too).
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_kill_at_every_step_boundary_resumes_with_identical_data() {
    let planned = tempfile::tempdir().unwrap();
    let n = step_addresses(Some(&restart_spec(planned.path()))).len();
    assert_eq!(
        n, 14,
        "the example's steps, tune-for-loading and untune among them"
    );
    for k in 1..=n {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let state = tempfile::tempdir().unwrap();
        let before = patients(&cluster);
        let spec = restart_spec(state.path());
        let crash = format!("after:{k}");
        let out = apply_spec(
            &cluster,
            state.path(),
            &spec,
            &[("PGPLAN_TEST_CRASH", &crash)],
        );
        assert_eq!(
            out.status.code(),
            None,
            "killed after step {k}: {}",
            text(&out.stderr)
        );
        // A fresh apply refuses to start over a half-finished one.
        let refused = apply_spec(&cluster, state.path(), &spec, &[]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            text(&refused.stderr).contains("--resume"),
            "{}",
            text(&refused.stderr)
        );
        let out = pgplan_in(
            &cluster,
            state.path(),
            &["apply", "-f", &spec, "--auto-approve", "--resume"],
            &[],
        );
        let stdout = ok(&out);
        // Steps run two at a time, so a kill after step k may find its
        // neighbour done too, or not yet.
        let resumed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Resuming: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        assert!(
            resumed + 1 >= k && resumed <= k + 1,
            "killed after step {k}, resumed with {resumed} done:\n{stdout}"
        );
        assert_moved(&cluster);
        assert_eq!(
            patients(&cluster),
            before,
            "data after crashing after step {k} and resuming"
        );
        assert_settings_back(&cluster);
    }
}

/// A kill -9 while rolling back, then `--resume`: the rollback is finished,
/// never the move. Steps it had undone stay undone and the data is the
/// original. Two kills, the StatefulSet's creation having failed:
/// - after the Service's compensation acted and before the journal said so:
///   it runs again and must leave the old Service as it is (same object,
///   same cluster IP), not replace it a second time;
/// - after the consumers were started again: going forward from there
///   would move data they have changed since the backup.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_kill_while_rolling_back_resumes_the_rollback_not_the_move() {
    let steps = step_addresses(None);
    let position = |address: &str| {
        steps
            .iter()
            .position(|a| a == address)
            .unwrap_or_else(|| panic!("no step {address} in {steps:?}"))
            + 1
    };
    let failing = "k8s/default/StatefulSet/postgres";
    let service = "k8s/default/Service/postgres";
    for killed_after in [service, "k8s/default/Deployment/healthcare-api:quiesce"] {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let state = tempfile::tempdir().unwrap();
        let before = patients(&cluster);
        let crash = format!("undone:{}", position(killed_after));
        let out = apply(
            &cluster,
            state.path(),
            &[("PGPLAN_TEST_FAIL", failing), ("PGPLAN_TEST_CRASH", &crash)],
        );
        assert_eq!(
            out.status.code(),
            None,
            "killed while undoing {killed_after}: {}",
            text(&out.stderr)
        );
        let old_service = json_of(&cluster, "services", hc::SERVICE).expect("a Service");
        let out = pgplan_in(
            &cluster,
            state.path(),
            &["apply", "-f", &spec(), "--auto-approve", "--resume"],
            &[],
        );
        let (stdout, err) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{err}");
        assert!(
            stdout.contains(&format!("Resuming the rollback of {failing}")),
            "{stdout}"
        );
        assert!(
            err.contains("Rolled back to the original topology"),
            "{err}"
        );
        assert!(
            err.contains("injected failure"),
            "the original cause: {err}"
        );
        assert_original_topology(&cluster);
        assert_eq!(
            patients(&cluster),
            before,
            "data after resuming the rollback"
        );
        if killed_after == service {
            let now = json_of(&cluster, "services", hc::SERVICE).unwrap();
            assert_eq!(now["metadata"]["uid"], old_service["metadata"]["uid"]);
            assert_eq!(now["spec"]["clusterIP"], old_service["spec"]["clusterIP"]);
        }
        // Nothing left to resume; a new apply moves the data.
        let again = pgplan_in(
            &cluster,
            state.path(),
            &["apply", "-f", &spec(), "--auto-approve", "--resume"],
            &[],
        );
        assert_eq!(again.status.code(), Some(1));
        assert!(text(&again.stderr).contains("no interrupted apply"));
        ok(&apply(&cluster, state.path(), &[]));
        assert_moved(&cluster);
        assert_eq!(patients(&cluster), before, "data after the next apply");
    }
}

/// A source whose data lives in its pod (an emptyDir): deleting it deletes
/// the data, so rolling back recreates it and restores the verified backup
/// into it. Killed right after that compensation, before the journal says
/// so, the resumed rollback finds the tables there and never restores over
/// them: intact, it verifies and keeps them; torn (a row missing), it stops,
/// says what to do, and after the database is dropped restores it again.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_source_with_its_data_in_the_pod_gets_it_back_from_the_backup() {
    for torn in [false, true] {
        let cluster = SimCluster::with_scenario(Scenario::HealthcareInPod);
        let state = tempfile::tempdir().unwrap();
        // This world's plan (no volume to protect: the data is in the pod).
        let planned = pgplan_in(
            &cluster,
            state.path(),
            &["plan", "-f", &spec(), "--format", "json"],
            &[],
        );
        let plan: Value = serde_json::from_slice(&planned.stdout).expect("a JSON plan");
        let deployment = "k8s/default/Deployment/postgres";
        let position = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["address"] == deployment)
            .expect("the Deployment's deletion")
            + 1;
        assert_eq!(
            plan["steps"][position - 1]["risk"],
            "destructive",
            "deleting a Deployment whose data is in the pod"
        );
        let before = patients(&cluster);
        let crash = format!("undone:{position}");
        let out = apply(
            &cluster,
            state.path(),
            &[
                ("PGPLAN_TEST_FAIL", "pg/healthcare/healthcare/restore"),
                ("PGPLAN_TEST_CRASH", &crash),
            ],
        );
        assert_eq!(out.status.code(), None, "{}", text(&out.stderr));
        // The recreated pod is a new one: its emptyDir held nothing until
        // the compensation restored the backup into it.
        assert_eq!(patients(&cluster), before, "restored before the kill");
        let resume = || {
            pgplan_in(
                &cluster,
                state.path(),
                &["apply", "-f", &spec(), "--auto-approve", "--resume"],
                &[],
            )
        };
        let pod = db_pod(&cluster);
        if torn {
            cluster.psql(
                hc::NAMESPACE,
                &pod,
                hc::DATABASE,
                "DELETE FROM patients WHERE name = 'Bob'",
            );
            let out = resume();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("The rollback did not finish"), "{err}");
            assert!(err.contains("do not match the backup"), "{err}");
            assert!(err.contains("Drop that database"), "{err}");
            assert_ne!(patients(&cluster), before, "nothing restored over them");
            cluster.psql(
                hc::NAMESPACE,
                &pod,
                "postgres",
                "DROP DATABASE healthcare WITH (FORCE)",
            );
        }
        let out = resume();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("Rolled back to the original topology"),
            "{err}"
        );
        let said = if torn {
            "its data restored from the verified backup (healthcare)"
        } else {
            "verified against the backup (healthcare)"
        };
        assert!(err.contains(said), "{err}");
        assert_eq!(db_pod(&cluster), pod, "the same pod");
        let dep = json_of(&cluster, "deployments", hc::DEPLOYMENT).expect("the Deployment");
        assert!(dep["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].is_object());
        assert!(json_of(&cluster, "statefulsets", "postgres").is_none());
        let api = json_of(&cluster, "deployments", hc::API_DEPLOYMENT).unwrap();
        assert_eq!(api["spec"]["replicas"], hc::API_REPLICAS);
        assert_eq!(
            patients(&cluster),
            before,
            "data after the rollback (torn: {torn})"
        );
    }
}

/// Scale a Deployment through the API, as a person would with kubectl.
fn scale(cluster: &SimCluster, name: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api: Api<Deployment> = Api::namespaced(cluster.client().await, hc::NAMESPACE);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale");
    });
}

/// The addresses of the example's steps, in plan order; with `spec`, of
/// that spec's plan against the example's saved live state.
pub fn step_addresses(spec: Option<&str>) -> Vec<String> {
    let live = format!(
        "{}/examples/healthcare/live.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let args: Vec<&str> = match spec {
        Some(spec) => vec![
            "plan",
            "-f",
            spec,
            "--live-state",
            &live,
            "--format",
            "json",
        ],
        None => vec!["plan", "--example", "healthcare", "--format", "json"],
    };
    let out = crate::cli::pgplan(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect()
}

/// Over a v4-only kubelet: a failure after the restore rolls back with the
/// original data (the compensations exec too), and a kill after the backup
/// then resumes to the end with the same rows.
#[test]
fn over_exec_v4_a_failure_rolls_back_and_a_kill_resumes() {
    let cluster = SimCluster::with_scenario_v4(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    let steps = step_addresses(None);
    let restore = steps
        .iter()
        .find(|s| s.ends_with("/restore"))
        .expect("a restore step");
    let out = apply(&cluster, state.path(), &[("PGPLAN_TEST_FAIL", restore)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Rolled back to the original topology"),
        "{err}"
    );
    assert_original_topology(&cluster);
    assert_eq!(patients(&cluster), before, "data after the rollback");

    let backup = steps
        .iter()
        .position(|s| s.ends_with("/backup"))
        .expect("a backup step")
        + 1;
    let crash = format!("after:{backup}");
    let out = apply(&cluster, state.path(), &[("PGPLAN_TEST_CRASH", &crash)]);
    assert_eq!(out.status.code(), None, "killed: {}", text(&out.stderr));
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &spec(), "--auto-approve", "--resume"],
        &[],
    ));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before, "data after resuming");
}

#[test]
fn two_concurrent_applies_exactly_one_proceeds() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let command = |state: &Path| {
        let mut c = crate::run::pgplan_command();
        c.args([
            "apply",
            "-f",
            &spec(),
            "--auto-approve",
            "--lock-timeout",
            "0s",
            "--state-dir",
        ])
        .arg(state)
        .current_dir(state)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        c
    };
    // The first holds the lock (its Lease exists) when the second starts.
    let first = command(a.path()).spawn().unwrap();
    cluster.wait_until(
        std::time::Duration::from_secs(30),
        "the first apply's lease",
        |c| {
            c.get_json("leases", hc::NAMESPACE, "pgplan-healthcare")
                .is_some()
        },
    );
    let second = command(b.path()).output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stdout));
    let err = text(&second.stderr);
    assert!(err.contains("is locked by"), "{err}");
    assert!(err.contains("pgplan force-unlock"), "{err}");
    assert_moved(&cluster);
}

#[test]
fn a_dead_holder_is_named_and_force_unlock_releases_it() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    cluster
        .create_json(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "pgplan-healthcare", "namespace": "default"},
            "spec": {"holderIdentity": "ci-runner-7:4242:deadbeef", "leaseDurationSeconds": 3600,
                     "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()},
        }))
        .unwrap();
    let out = pgplan_in(
        &cluster,
        state.path(),
        &[
            "apply",
            "-f",
            &spec(),
            "--auto-approve",
            "--lock-timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ci-runner-7:4242:deadbeef"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        json_of(&cluster, "deployments", hc::DEPLOYMENT).is_some(),
        "nothing changed"
    );
    let wrong = pgplan_in(
        &cluster,
        state.path(),
        &["force-unlock", "someone-else", "-f", &spec()],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(1));
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["force-unlock", "ci-runner-7:4242:deadbeef", "-f", &spec()],
        &[],
    ));
    ok(&apply(&cluster, state.path(), &[]));
    assert_moved(&cluster);
}

#[test]
fn a_saved_plan_applies_exactly_and_a_stale_one_is_refused() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let plan_file = state.path().join("plan.json");
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &spec(), "--out", plan_file.to_str().unwrap()],
        &[],
    ));

    // The world moves: someone scales the API.
    scale(&cluster, hc::API_DEPLOYMENT, 3);
    cluster.requests().clear();
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["apply", plan_file.to_str().unwrap()],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has changed since"), "{err}");
    assert!(
        err.contains("k8s/default/Deployment/healthcare-api"),
        "{err}"
    );
    let writes: Vec<_> = cluster
        .requests()
        .mutations()
        .into_iter()
        .filter(|r| !r.dry_run && r.resource != "pods/exec")
        .collect();
    assert!(
        writes.is_empty(),
        "a stale plan changed something: {writes:?}"
    );
    assert!(json_of(&cluster, "deployments", hc::DEPLOYMENT).is_some());

    // Planned again, the saved plan applies as it is; the plan's
    // server-side dry run sent the very writes apply then makes (one code
    // path sends both, only the write is gated).
    let writes = |dry: bool| -> std::collections::BTreeSet<_> {
        cluster
            .requests()
            .mutations()
            .into_iter()
            .filter(|r| r.dry_run == dry && r.resource != "pods/exec")
            .map(|r| (r.verb, r.resource, r.namespace, r.name))
            .collect()
    };
    cluster.requests().clear();
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["plan", "-f", &spec(), "--out", plan_file.to_str().unwrap()],
        &[],
    ));
    let checked = writes(true);
    assert!(
        checked
            .iter()
            .any(|(verb, resource, _, name)| verb == "delete"
                && resource == "deployments"
                && name.as_deref() == Some(hc::DEPLOYMENT)),
        "the dry run checks the source's delete too: {checked:?}"
    );
    assert!(writes(false).is_empty(), "a plan writes nothing for real");
    cluster.requests().clear();
    ok(&pgplan_in(
        &cluster,
        state.path(),
        &["apply", plan_file.to_str().unwrap()],
        &[],
    ));
    let written = writes(false);
    let unsent: Vec<_> = checked.difference(&written).collect();
    assert!(
        unsent.is_empty(),
        "the dry run checked writes apply never made: {unsent:?}\napply wrote: {written:?}"
    );
    assert!(json_of(&cluster, "deployments", hc::DEPLOYMENT).is_none());
    let api = json_of(&cluster, "deployments", hc::API_DEPLOYMENT).unwrap();
    assert_eq!(
        api["spec"]["replicas"], 3,
        "the API comes back at the count it had when planned"
    );
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_dump_that_cannot_be_verified_stops_before_anything_destructive() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    cluster.requests().clear();
    let out = apply(
        &cluster,
        state.path(),
        &[("PGPLAN_TEST_CORRUPT_BACKUP", "healthcare")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pg/healthcare/healthcare/backup"), "{err}");
    assert!(
        err.contains("pg_restore --list") || err.contains("checksum"),
        "{err}"
    );
    // Nothing of the source was deleted: the only deletes are the rollback
    // of what pgplan itself created (the new static PV) and its lock.
    let deletes: Vec<String> = cluster
        .requests()
        .all()
        .into_iter()
        .filter(|r| r.verb == "delete" && !r.dry_run)
        .map(|r| format!("{}/{}", r.resource, r.name.unwrap_or_default()))
        .collect();
    assert_eq!(
        deletes,
        [
            "persistentvolumes/postgres-pv-0",
            "leases/pgplan-healthcare"
        ]
    );
    assert_original_topology(&cluster);
    assert_eq!(patients(&cluster), before);
}

/// The other half of `a_dump_that_cannot_be_verified…`: a build without
/// the `test-hooks` feature (what `cargo install` makes) ignores every hook
/// variable and moves the data. It runs in `cargo test` without the feature
/// (CI's run has the feature; there `testhooks`' unit tests cover this).
#[test]
#[cfg_attr(
    feature = "test-hooks",
    ignore = "checks a build without the test hooks: cargo test without --features test-hooks"
)]
fn a_build_without_the_test_hooks_ignores_them() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    ok(&apply(
        &cluster,
        state.path(),
        &[
            ("PGPLAN_TEST_CORRUPT_BACKUP", "healthcare"),
            ("PGPLAN_TEST_FAIL", "pg/healthcare/healthcare/restore"),
            ("PGPLAN_TEST_CRASH", "before:5"),
        ],
    ));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
}

#[test]
fn apply_without_a_terminal_asks_for_auto_approve_and_changes_nothing() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let out = pgplan_in(&cluster, state.path(), &["apply", "-f", &spec()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pgplan::apply::approval") && err.contains("--auto-approve"),
        "{err}"
    );
    assert!(json_of(&cluster, "deployments", hc::DEPLOYMENT).is_some());
    assert!(json_of(&cluster, "statefulsets", "postgres").is_none());
}

/// Merge-patch an object's metadata through the API, as `kubectl label`
/// and `kubectl annotate` would (the pod template is left alone, so no
/// rollout starts).
fn patch_metadata(cluster: &SimCluster, kind: &str, name: &str, metadata: Value) {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
    use kube::api::{Api, Patch, PatchParams};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = cluster.client().await;
        let patch = Patch::Merge(json!({ "metadata": metadata }));
        let pp = PatchParams::default();
        match kind {
            "Deployment" => {
                let api: Api<Deployment> = Api::namespaced(client, hc::NAMESPACE);
                api.patch(name, &pp, &patch).await.map(drop)
            }
            _ => {
                let api: Api<Service> = Api::namespaced(client, hc::NAMESPACE);
                api.patch(name, &pp, &patch).await.map(drop)
            }
        }
        .expect("patch metadata");
    });
}

/// Issue 14, items 4 and 10, end to end: the postgres Deployment is
/// labelled as teams label theirs and was installed by Helm. apply refuses
/// and changes nothing until the spec acknowledges Helm; then the move
/// runs, and the StatefulSet and the replaced Service carry the source's
/// labels and annotations (not Helm's), and the Service its selector.
#[test]
fn a_helm_installed_labelled_source_is_refused_until_acknowledged_then_keeps_its_labels() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let state = tempfile::tempdir().unwrap();
    let before = patients(&cluster);
    patch_metadata(
        &cluster,
        "Deployment",
        hc::DEPLOYMENT,
        json!({
            "labels": {
                "app.kubernetes.io/name": "postgres",
                "app.kubernetes.io/component": "database",
                "app.kubernetes.io/part-of": "healthcare",
                "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/instance": "clinic",
                "team": "clinical-data",
            },
            "annotations": {
                "meta.helm.sh/release-name": "clinic",
                "meta.helm.sh/release-namespace": "default",
                "owner": "clinical-data@example.com",
            },
        }),
    );
    patch_metadata(
        &cluster,
        "Service",
        hc::SERVICE,
        json!({
            "labels": {"app.kubernetes.io/name": "postgres", "team": "clinical-data"},
            "annotations": {"prometheus.io/scrape": "true"},
        }),
    );

    let out = apply(&cluster, state.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pgplan::apply::gitops_unacknowledged"),
        "{err}"
    );
    assert!(
        err.contains("#5 k8s/default/Deployment/postgres [pgplan::gitops::helm_managed]"),
        "{err}"
    );
    assert!(err.contains("Helm release `clinic`"), "{err}");
    assert!(err.contains("spec.gitops.acknowledge"), "{err}");
    assert!(json_of(&cluster, "deployments", hc::DEPLOYMENT).is_some());
    assert!(json_of(&cluster, "statefulsets", "postgres").is_none());
    assert!(cluster
        .get_json("leases", hc::NAMESPACE, "pgplan-healthcare")
        .is_none());

    // What to put in the chart.
    let export = state.path().join("manifests");
    let out = pgplan_in(
        &cluster,
        state.path(),
        &[
            "plan",
            "-f",
            &spec(),
            "--export-manifests",
            export.to_str().unwrap(),
        ],
        &[],
    );
    let plan_text = ok(&out);
    assert!(
        plan_text.contains("⚠ warning[pgplan::gitops::helm_managed]"),
        "{plan_text}"
    );
    let sts_file = std::fs::read_to_string(export.join("statefulset-default-postgres.yaml"))
        .expect("the StatefulSet's manifest");
    assert!(sts_file.contains("team: clinical-data"), "{sts_file}");
    assert!(!sts_file.contains("meta.helm.sh"), "{sts_file}");
    let index = std::fs::read_to_string(export.join("pgplan-export.txt")).unwrap();
    assert!(
        index.contains("Remove:\n  Deployment default/postgres\n"),
        "{index}"
    );
    assert!(
        index.contains("service-default-postgres.yaml  (replace Service default/postgres)"),
        "{index}"
    );

    // Acknowledged: the move runs.
    let acknowledged = state.path().join("pgplan-helm.yaml");
    let text_spec = std::fs::read_to_string(spec()).unwrap();
    let changed = text_spec.replace(
        "  cleanup:\n",
        "  gitops:\n    acknowledge: [helm]\n  cleanup:\n",
    );
    assert_ne!(changed, text_spec);
    std::fs::write(&acknowledged, changed).unwrap();
    ok(&apply_spec(
        &cluster,
        state.path(),
        acknowledged.to_str().unwrap(),
        &[],
    ));
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);

    let sts = json_of(&cluster, "statefulsets", "postgres").unwrap();
    let labels = &sts["metadata"]["labels"];
    for (k, v) in [
        ("app", "postgres"),
        ("app.kubernetes.io/name", "postgres"),
        ("app.kubernetes.io/component", "database"),
        ("app.kubernetes.io/part-of", "healthcare"),
        ("team", "clinical-data"),
        ("app.kubernetes.io/managed-by", "pgplan"),
        ("pgplan.dev/placement", "healthcare"),
    ] {
        assert_eq!(labels[k], v, "StatefulSet label {k}: {labels}");
    }
    assert!(
        labels.get("app.kubernetes.io/instance").is_none(),
        "{labels}"
    );
    let annotations = &sts["metadata"]["annotations"];
    assert_eq!(annotations["owner"], "clinical-data@example.com");
    assert!(
        annotations.get("meta.helm.sh/release-name").is_none(),
        "{annotations}"
    );
    assert_eq!(
        sts["spec"]["selector"],
        json!({"matchLabels": {"app": "postgres"}})
    );

    let svc = json_of(&cluster, "services", hc::SERVICE).unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["selector"], json!({"app": "postgres"}));
    assert_eq!(svc["metadata"]["labels"]["team"], "clinical-data");
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/name"],
        "postgres"
    );
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
}
