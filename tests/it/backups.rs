//! The backup CronJob pgplan plans (seed 003's), run for real in the simulated cluster: after
//! the healthcare move with `backup.schedule` set, a Job made from the CronJob as
//! `kubectl create job --from=cronjob/…` makes it runs the planner's script in a pod, which
//! reaches the StatefulSet's server by its in-cluster name, writes a verified archive per
//! database on the backup volume (a static PV beside the data's, as the class has no
//! provisioner) and prunes runs older than `retentionDays`.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::{json, Value};

use crate::apply::{apply_spec, ok};
use crate::support::pg;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

/// A database whose name is shell syntax: the script must dump it, not run it.
const ODD: &str = "a b;$(x)";

/// What `kubectl create job NAME --from=cronjob/CRON` sends: the CronJob's job template, owned
/// by the CronJob and marked as made by hand.
fn job_from_cronjob(cron: &Value, name: &str) -> Value {
    let template = &cron["spec"]["jobTemplate"];
    let mut labels = template["metadata"]["labels"].clone();
    if labels.is_null() {
        labels = json!({});
    }
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cron["metadata"]["namespace"],
            "labels": labels,
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                "name": cron["metadata"]["name"], "uid": cron["metadata"]["uid"],
                "controller": true}],
        },
        "spec": template["spec"],
    })
}

fn age(path: &std::path::Path, days: u64) {
    let when = SystemTime::now() - Duration::from_secs(days * 86_400 + 3_600);
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("age {}: {e}", path.display()));
}

#[test]
fn the_backup_cronjob_run_on_demand_writes_verified_archives_and_prunes_old_runs() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let pod = crate::apply::db_pod(&cluster);
    cluster.psql(
        hc::NAMESPACE,
        &pod,
        "postgres",
        &format!("CREATE DATABASE {}", pg::quote_ident(ODD)),
    );
    cluster.psql(
        hc::NAMESPACE,
        &pod,
        ODD,
        "CREATE TABLE marker (v int); INSERT INTO marker VALUES (7);",
    );
    let state = tempfile::tempdir().expect("state dir");
    let text = std::fs::read_to_string(crate::apply::spec()).expect("the example");
    let changed = text.replace("    - healthcare\n", "    - \"*\"\n").replace(
        "  backup:\n",
        "  backup:\n    schedule: \"0 2 * * *\"\n    retentionDays: 3\n",
    );
    assert_ne!(changed, text);
    let spec = state.path().join("pgplan.yaml");
    std::fs::write(&spec, changed).expect("write the spec");
    ok(&apply_spec(
        &cluster,
        state.path(),
        &spec.display().to_string(),
        &[],
    ));

    let cron_name = "postgres-backup";
    let cron = cluster
        .get_json("cronjobs.batch", hc::NAMESPACE, cron_name)
        .expect("the backup CronJob");
    let _: CronJob = serde_json::from_value(cron.clone()).expect("a CronJob");
    let claim: PersistentVolumeClaim = cluster
        .get(hc::NAMESPACE, cron_name)
        .expect("the backup claim");
    let pv = claim
        .spec
        .and_then(|s| s.volume_name)
        .expect("the backup claim is bound");
    // The class has no provisioner: the planner made the PV, beside the data's, kept.
    assert_eq!(pv, "postgres-backup-pv");
    let made: PersistentVolume = cluster.get("", &pv).expect("the backup PV");
    let made = made.spec.expect("spec");
    assert_eq!(
        made.local.map(|l| l.path).as_deref(),
        Some("/data/postgres-0-backups")
    );
    assert_eq!(
        made.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    let volume = cluster.pv_dir(&pv).expect("the backup volume's directory");
    assert!(
        volume.ends_with("nodes/node2/data/postgres-0-backups"),
        "{}",
        volume.display()
    );
    // Earlier runs: one past retention, one within it.
    for (run, days) in [("20200101-020000", 10), ("20200108-020000", 1)] {
        let dir = volume.join(run);
        std::fs::create_dir_all(&dir).expect("an earlier run");
        std::fs::write(dir.join("healthcare.dump"), "old").expect("an old archive");
        age(&dir, days);
    }

    cluster
        .create_json(job_from_cronjob(&cron, "postgres-backup-manual-1"))
        .expect("create the job");
    cluster.wait_until(Duration::from_secs(120), "the backup job ended", |c| {
        c.get::<Job>(hc::NAMESPACE, "postgres-backup-manual-1")
            .and_then(|j| j.status)
            .is_some_and(|s| s.succeeded == Some(1) || s.failed.unwrap_or(0) > 0)
    });
    let job: Job = cluster
        .get(hc::NAMESPACE, "postgres-backup-manual-1")
        .expect("the job");
    let log = cluster
        .pod_names(hc::NAMESPACE, "job-name=postgres-backup-manual-1")
        .first()
        .map(|p| cluster.pod_log(hc::NAMESPACE, p))
        .unwrap_or_default();
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1), "{log}");

    let mut runs: Vec<String> = std::fs::read_dir(&volume)
        .expect("the backup volume")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    assert_eq!(
        runs.len(),
        2,
        "the old run is pruned, the recent one kept: {runs:?}"
    );
    assert_eq!(runs[0], "20200108-020000");
    let new_run = volume.join(&runs[1]);
    let mut archives: Vec<String> = std::fs::read_dir(&new_run)
        .expect("the new run")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    archives.sort();
    assert_eq!(
        archives,
        vec![format!("{ODD}.dump"), "healthcare.dump".to_string()]
    );
    for (archive, table) in [
        (ODD, "TABLE public marker"),
        ("healthcare", "TABLE public patients"),
    ] {
        let listed = std::process::Command::new(pg::bin("pg_restore"))
            .arg("--list")
            .arg(new_run.join(format!("{archive}.dump")))
            .output()
            .expect("pg_restore --list");
        assert!(listed.status.success(), "{archive}");
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(table),
            "the archive of `{archive}` holds its table"
        );
    }
}
