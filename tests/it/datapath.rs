//! `backup.dataPath: cluster`: the healthcare move with its data path in the
//! simulated cluster. The dumps are made by tools pods beside the servers
//! onto the backup claim (a static PV beside the data's), the restore reads
//! them there, and what crosses the API server is commands and small
//! results: the test puts ~20 MB into the database and holds the exec, log
//! and port-forward bytes of the whole apply under 1 MB. A runner lost after
//! the source (whose data lived in its pod) was deleted is replaced by a
//! fresh directory that resumes — or rolls back, restoring the source from
//! the backup on the claim, its only copy.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::apply::{assert_moved, db_pod, ok, patients, pgplan_in, spec, text};
use crate::support::pg;
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

/// The example spec with `dataPath: cluster`, written into `dir`.
fn cluster_spec_in(dir: &Path) -> String {
    let example = std::fs::read_to_string(spec()).expect("the example");
    let changed = example.replace("  backup:\n", "  backup:\n    dataPath: cluster\n");
    assert_ne!(changed, example);
    let path = dir.join("pgplan.yaml");
    std::fs::write(&path, changed).expect("write the spec");
    path.display().to_string()
}

/// Files under `dir` (recursively), for the assertion that none was written.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The manifests on the backup claim's volume.
fn manifests_on_claim(cluster: &SimCluster) -> Vec<PathBuf> {
    let volume = cluster
        .pv_dir("postgres-backup-pv")
        .expect("the backup claim's volume");
    let mut found: Vec<PathBuf> = files_under(&volume)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    found.sort();
    found
}

fn tools_pods(cluster: &SimCluster) -> Vec<String> {
    cluster.pod_names(hc::NAMESPACE, "app.kubernetes.io/component=tools")
}

#[test]
fn a_move_through_the_cluster_sends_no_data_through_the_runner() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let pod = db_pod(&cluster);
    // ~20 MB that must not cross the API server.
    cluster.psql(
        hc::NAMESPACE,
        &pod,
        hc::DATABASE,
        "CREATE TABLE bulk (id int PRIMARY KEY, payload text); \
         INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 70000) g;",
    );
    let bulk = |c: &SimCluster| {
        let p = db_pod(c);
        c.psql(
            hc::NAMESPACE,
            &p,
            hc::DATABASE,
            "select count(*) || ':' || md5(string_agg(payload, '' order by id)) from bulk",
        )
    };
    let (before, bulk_before) = (patients(&cluster), bulk(&cluster));
    let state = tempfile::tempdir().expect("state dir");
    let spec = cluster_spec_in(state.path());

    let planned = pgplan_in(&cluster, state.path(), &["plan", "-f", &spec], &[]);
    let said = ok(&planned);
    assert!(
        said.contains("create PersistentVolumeClaim default/postgres-backup"),
        "{said}"
    );
    assert!(said.contains("claim: default/postgres-backup"), "{said}");

    cluster.requests().clear();
    let out = pgplan_in(
        &cluster,
        state.path(),
        &["apply", "-f", &spec, "--auto-approve"],
        &[],
    );
    let stdout = ok(&out);
    let streamed = cluster.requests().stream_bytes();
    assert_moved(&cluster);
    assert_eq!(patients(&cluster), before);
    assert_eq!(bulk(&cluster), bulk_before, "every bulk row, byte for byte");
    assert!(
        stdout.contains("claim default/postgres-backup:"),
        "the backup step says where the archive is: {stdout}"
    );
    assert!(
        stdout.contains(
            "State: the journal is kept in the cluster (Secret default/pgplan-journal-healthcare)"
        ),
        "the apply says where its state is: {stdout}"
    );

    // The archive and its manifest are on the claim, none on the runner.
    let manifests = manifests_on_claim(&cluster);
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).expect("read")).expect("json");
    assert_eq!(manifest["database"], hc::DATABASE);
    assert_eq!(manifest["format"], "directory");
    let rows: u64 = manifest["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["rows"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rows, 70_003, "the patients and the bulk rows");
    let archive_bytes = manifest["bytes"].as_u64().expect("bytes");
    // gzip level 1 on the claim: the repeated payload shrinks, but is there.
    assert_eq!(manifest["compression"], 1, "{manifest}");
    assert!(archive_bytes > 1_000_000, "{archive_bytes}");
    let archive = manifests[0].with_file_name("healthcare.dump");
    let listed = std::process::Command::new(pg::bin("pg_restore"))
        .arg("--list")
        .arg(&archive)
        .output()
        .expect("pg_restore --list");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("TABLE DATA public bulk"));
    let local: Vec<PathBuf> = files_under(state.path())
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains(".dump") || s.contains(".manifest.json") || s.contains(".roles.json")
        })
        .collect();
    assert!(
        local.is_empty(),
        "nothing of the data on the runner: {local:?}"
    );

    eprintln!("api bytes: {streamed} for a {archive_bytes}-byte archive");
    // Commands and small results only: under 1 MB for ~20 MB moved.
    assert!(
        streamed < 1_000_000,
        "{streamed} bytes crossed the API server for a {archive_bytes}-byte archive"
    );
    assert!(
        tools_pods(&cluster).is_empty(),
        "{:?}",
        tools_pods(&cluster)
    );
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test hooks: cargo test --features test-hooks (scripts/test enables them)"
)]
fn a_lost_runner_is_replaced_and_the_backup_on_the_claim_restores_a_deleted_source() {
    for roll_back in [false, true] {
        let cluster = SimCluster::with_scenario(Scenario::HealthcareInPod);
        let before = patients(&cluster);
        let runner = tempfile::tempdir().expect("the first runner");
        let spec = cluster_spec_in(runner.path());
        let planned = pgplan_in(
            &cluster,
            runner.path(),
            &["plan", "-f", &spec, "--format", "json"],
            &[],
        );
        let plan: Value = serde_json::from_slice(&planned.stdout).expect("a JSON plan");
        let steps = plan["steps"].as_array().expect("steps");
        let restore = steps
            .iter()
            .position(|s| s["address"] == "pg/healthcare/healthcare/restore")
            .expect("the restore step")
            + 1;
        let deleted = steps
            .iter()
            .position(|s| s["address"] == "k8s/default/Deployment/postgres")
            .expect("the source's deletion")
            + 1;
        assert!(deleted < restore);
        // Killed before the restore: the source, its data in its pod, is
        // deleted; the only copy is on the claim.
        let crash = format!("before:{restore}");
        let out = pgplan_in(
            &cluster,
            runner.path(),
            &["apply", "-f", &spec, "--auto-approve"],
            &[("PGPLAN_TEST_CRASH", &crash)],
        );
        assert_eq!(out.status.code(), None, "killed: {}", text(&out.stderr));
        assert_eq!(manifests_on_claim(&cluster).len(), 1);
        drop(runner);

        let fresh = tempfile::tempdir().expect("a fresh runner");
        let spec = cluster_spec_in(fresh.path());
        let fail = if roll_back {
            vec![("PGPLAN_TEST_FAIL", "pg/healthcare/healthcare/restore")]
        } else {
            Vec::new()
        };
        let out = pgplan_in(
            &cluster,
            fresh.path(),
            &["apply", "-f", &spec, "--auto-approve", "--resume"],
            &fail,
        );
        if roll_back {
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains("Rolled back to the original topology"),
                "{err}"
            );
            assert!(
                cluster
                    .get_json("deployments", hc::NAMESPACE, hc::DEPLOYMENT)
                    .is_some(),
                "the source is back"
            );
        } else {
            ok(&out);
            assert_moved(&cluster);
        }
        assert_eq!(
            patients(&cluster),
            before,
            "roll back: {roll_back}: every row, from the claim"
        );
        assert!(
            tools_pods(&cluster).is_empty(),
            "{:?}",
            tools_pods(&cluster)
        );
    }
}

#[test]
fn the_cluster_data_path_is_refused_where_it_cannot_work_and_planned_where_it_can() {
    let dir = tempfile::tempdir().expect("dir");
    let spec = cluster_spec_in(dir.path());
    let example = std::fs::read_to_string(&spec).expect("spec");
    let small = dir.path().join("small.yaml");
    std::fs::write(
        &small,
        example.replace(
            "dataPath: cluster\n",
            "dataPath: cluster\n    storageSize: 1Mi\n",
        ),
    )
    .expect("write");
    let live = format!(
        "{}/examples/healthcare/live.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = crate::run::pgplan_command()
        .args([
            "plan",
            "-f",
            &small.display().to_string(),
            "--live-state",
            &live,
        ])
        .output()
        .expect("run pgplan");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::plan::backup-too-small"), "{err}");
    assert!(err.contains("storageSize"), "{err}");

    let rds = format!(
        "{}/examples/backstage-to-rds/pgplan.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text_of = std::fs::read_to_string(&rds).expect("the RDS example");
    assert!(
        !text_of.contains("  backup:\n"),
        "the RDS example has no backup section"
    );
    let live = format!(
        "{}/examples/backstage-to-rds/live.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(
        format!(
            "{}/examples/backstage-to-rds/rds-ca.pem",
            env!("CARGO_MANIFEST_DIR")
        ),
        dir.path().join("rds-ca.pem"),
    )
    .expect("the CA bundle beside the spec");
    let plan_rds = |text: String| {
        let to_rds = dir.path().join("rds.yaml");
        std::fs::write(&to_rds, text).expect("write");
        crate::run::pgplan_command()
            .current_dir(format!(
                "{}/examples/backstage-to-rds",
                env!("CARGO_MANIFEST_DIR")
            ))
            .env("RDS_MASTER_PASSWORD", "canary-not-shown")
            .args([
                "plan",
                "-f",
                &to_rds.display().to_string(),
                "--live-state",
                &live,
            ])
            .output()
            .expect("run pgplan")
    };
    let in_cluster = text_of.clone() + "  backup:\n    dataPath: cluster\n";
    // The tools reach the instance through the connection Secret the
    // consumers get: without one, there is no way in.
    let out =
        plan_rds(in_cluster.replace("        connectionSecret: backstage-rds-credentials\n", ""));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::plan::data-path"), "{err}");
    assert!(
        err.contains("no consumer in namespace backstage names one"),
        "{err}"
    );
    // verify-full needs the CA bundle in the cluster too.
    let out = plan_rds(in_cluster.replace(
        "        caSecret:\n          name: backstage-rds-ca\n          key: postgres-crt.pem\n",
        "",
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`tls.mode: verify-full` needs the CA bundle inside the cluster"),
        "{err}"
    );
    // With both, the move plans its backup claim in the source's namespace.
    let out = plan_rds(in_cluster);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        stdout.contains("create PersistentVolumeClaim backstage/backstage-backup"),
        "{stdout}"
    );
    assert!(
        stdout.contains("claim: backstage/backstage-backup"),
        "{stdout}"
    );
}
