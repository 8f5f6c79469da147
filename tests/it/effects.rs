//! What a real cluster shows that a happy one does not, on the simulated
//! cluster: APIs it does not serve (CRDs not installed), a snapshot CRD with
//! no controller behind it, a volume expansion that never finishes, pods
//! that are not running, a sidecar listed before the database container,
//! and the messages for a wrong context, workload or namespace. pgplan must
//! fail clearly (a located diagnostic, exit 1) and never call a step done
//! before its effect is seen.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::apply::{pgplan_in, text};
use crate::cli::repo;
use crate::support::{Scenario, SimCluster, SimOptions};

/// The healthcare example, edited, written as `pgplan.yaml` into `dir`.
fn spec_in(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let original = std::fs::read_to_string(repo().join("examples/healthcare/pgplan.yaml")).unwrap();
    let path = dir.join("pgplan.yaml");
    std::fs::write(&path, edit(original)).unwrap();
    path
}

/// `original` with `from` replaced by `to`, which must be there.
fn replaced(original: &str, from: &str, to: &str) -> String {
    assert!(original.contains(from), "`{from}` is not in the spec");
    original.replacen(from, to, 1)
}

/// The 1-based line of the first line of `file` that starts with `prefix`.
fn line_of(file: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with `{prefix}`"))
        + 1
}

fn run(cluster: &SimCluster, dir: &Path, args: &[&str]) -> Output {
    pgplan_in(cluster, dir, args, &[])
}

/// Exit 1 with `code` and every one of `texts` on stderr; returns stderr.
fn fails_with(out: &Output, code: &str, texts: &[&str]) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{err}",
        text(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(code), "expected {code} in:\n{err}");
    for t in texts {
        assert!(err.contains(t), "expected `{t}` in:\n{err}");
    }
    err
}

fn healthcare_without(groups: &[&str]) -> SimCluster {
    SimCluster::start_with(SimOptions {
        scenario: Some(Scenario::Healthcare),
        absent_api_groups: groups.iter().map(|g| g.to_string()).collect(),
        ..SimOptions::default()
    })
    .expect("start the healthcare scenario")
}

/// Nothing was written: every mutating request was a dry run (or an exec).
fn nothing_written(cluster: &SimCluster) {
    let written: Vec<String> = cluster
        .requests()
        .mutations()
        .iter()
        .filter(|r| !r.dry_run && r.resource != "pods/exec")
        .map(|r| format!("{} {} {:?}", r.verb, r.resource, r.name))
        .collect();
    assert!(written.is_empty(), "written: {written:?}");
}

/// A JSON merge patch of Deployment `name` in the healthcare namespace.
fn patch_deployment(cluster: &SimCluster, name: &str, patch: &Value) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api: Api<Deployment> = Api::namespaced(
            cluster.client().await,
            crate::support::sim::scenario::healthcare::NAMESPACE,
        );
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch the Deployment");
    });
}

mod missing_apis {
    use super::*;

    fn with_snapshots(s: String) -> String {
        replaced(
            &s,
            "  backup:\n    directory: .pgplan/backups/healthcare\n",
            "  backup:\n    directory: .pgplan/backups/healthcare\n    snapshots:\n      className: csi-snapclass\n",
        )
    }

    /// Without the snapshot CRDs the server answers `404 page not found`
    /// for their paths: plan, offline plan and apply stop at
    /// `backup.snapshots`, and observe does not read snapshots at all.
    #[test]
    fn snapshots_on_a_cluster_without_the_snapshot_crds_fail_the_plan_there() {
        let cluster = healthcare_without(&["snapshot.storage.k8s.io"]);
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), with_snapshots);
        let spec_s = spec.to_str().unwrap();
        let location = format!("pgplan.yaml:{}:5", line_of(&spec, "    snapshots:"));
        let message = "VolumeSnapshot (snapshot.storage.k8s.io/v1) is not served by this cluster: install the CSI snapshot controller and its CRDs, or remove backup.snapshots";
        let code = "pgplan::plan::api-not-served";

        fails_with(
            &run(&cluster, dir.path(), &["plan", "-f", spec_s]),
            code,
            &[message, &location],
        );

        // The served APIs are part of the snapshot, so an offline plan knows too.
        let live = dir.path().join("live.yaml");
        let out = run(
            &cluster,
            dir.path(),
            &["observe", "-f", spec_s, "--out", live.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let observed = pgplan::observed::load_snapshot(
            "live.yaml",
            std::fs::read_to_string(&live).unwrap().as_bytes(),
        )
        .unwrap();
        let served = observed
            .kubernetes
            .served_apis
            .clone()
            .expect("served APIs recorded");
        assert!(served.contains(&"apps/v1".to_string()), "{served:?}");
        assert!(
            !served
                .iter()
                .any(|a| a.starts_with("snapshot.storage.k8s.io")),
            "{served:?}"
        );
        assert!(
            !cluster
                .requests()
                .all()
                .iter()
                .any(|r| r.path.contains("volumesnapshots")),
            "observe read snapshots the cluster does not serve:\n{}",
            cluster.requests().summary()
        );
        fails_with(
            &run(
                &cluster,
                dir.path(),
                &["plan", "-f", spec_s, "--live-state", live.to_str().unwrap()],
            ),
            code,
            &[message, &location],
        );

        cluster.requests().clear();
        fails_with(
            &run(
                &cluster,
                dir.path(),
                &["apply", "-f", spec_s, "--auto-approve"],
            ),
            code,
            &[message],
        );
        nothing_written(&cluster);
    }

    /// A consumer whose custom resource the cluster does not serve is named
    /// as such at the consumer, not as a consumer that "was not found".
    #[test]
    fn a_consumer_whose_crd_is_not_installed_fails_the_plan_at_the_consumer() {
        let cluster = healthcare_without(&["rhdh.redhat.com"]);
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), |s| {
            replaced(
                &s,
                "    - kind: Deployment\n      name: healthcare-api\n",
                "    - kind: Deployment\n      name: healthcare-api\n    - kind: Backstage\n      apiVersion: rhdh.redhat.com/v1alpha3\n      name: developer-hub\n",
            )
        });
        // At the value of `apiVersion:`.
        let location = format!(
            "pgplan.yaml:{}:19",
            line_of(&spec, "      apiVersion: rhdh.redhat.com/v1alpha3")
        );
        let err = fails_with(
            &run(&cluster, dir.path(), &["plan", "-f", spec.to_str().unwrap()]),
            "pgplan::plan::api-not-served",
            &[
                "Backstage (rhdh.redhat.com/v1alpha3) is not served by this cluster: install the operator that defines it (its CRDs), or remove consumers[1]",
                &location,
            ],
        );
        assert!(!err.contains("was not found"), "{err}");
    }

    /// An old snapshot (no served APIs) still plans, and means "unknown".
    #[test]
    fn a_snapshot_without_served_apis_checks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), with_snapshots);
        let live = repo().join("examples/healthcare/live.yaml");
        let text_live = std::fs::read_to_string(&live).unwrap();
        assert!(!text_live.contains("servedApis"));
        let out = crate::cli::pgplan(
            &[
                "plan",
                "-f",
                spec.to_str().unwrap(),
                "--live-state",
                live.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

/// A database StatefulSet `pg` in `default` with a 10Gi claim on the
/// expandable class `expandable`, ready, for day-2 changes.
mod day2 {
    use super::*;
    use std::time::Duration;

    pub const CLASS: &str = "expandable";
    pub const CLAIM: &str = "data-pg-0";

    pub fn cluster(opts: SimOptions) -> SimCluster {
        let cluster = SimCluster::start_with(opts).expect("start the cluster");
        for o in [
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": CLASS}, "provisioner": "rancher.io/local-path",
                   "allowVolumeExpansion": true, "reclaimPolicy": "Delete",
                   "volumeBindingMode": "WaitForFirstConsumer"}),
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                   "metadata": {"name": "csi-snapclass"}, "driver": "rancher.io/local-path",
                   "deletionPolicy": "Delete"}),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "pg", "namespace": "default"},
                   "spec": {"clusterIP": "None", "selector": {"app": "pg"}, "ports": [{"port": 5432}]}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "pg", "namespace": "default"},
                   "spec": {"serviceName": "pg", "replicas": 1,
                     "selector": {"matchLabels": {"app": "pg"}},
                     "template": {"metadata": {"labels": {"app": "pg"}}, "spec": {"containers": [{
                       "name": "postgres", "image": "postgres:15",
                       "env": [{"name": "POSTGRES_PASSWORD", "value": "day2-pw-81f3"}],
                       "ports": [{"containerPort": 5432}],
                       "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                       "accessModes": ["ReadWriteOnce"], "storageClassName": CLASS,
                       "resources": {"requests": {"storage": "10Gi"}}}}]}}),
        ] {
            cluster.create_json(o).expect("create a day-2 object");
        }
        cluster.wait_until(Duration::from_secs(90), "pg-0 is ready", |c| {
            c.pod_ready("default", "pg-0")
        });
        cluster
    }

    pub fn spec(dir: &Path, snapshots: bool) -> PathBuf {
        let mut text = "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata:
  name: pg
spec:
  source:
    kubernetes:
      namespace: default
      workload:
        kind: StatefulSet
        name: pg
  target:
    kubernetes:
      statefulSet:
        name: pg
        serviceName: pg
        storage:
          size: 20Gi
          storageClassName: expandable
          volumeClaimTemplate: data
  databases:
    - postgres
"
        .to_string();
        if snapshots {
            text.push_str("  backup:\n    snapshots:\n      className: csi-snapclass\n");
        }
        let path = dir.join("pgplan.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The claim's requested size and capacity.
    pub fn claim_sizes(cluster: &SimCluster) -> (String, String) {
        let pvc = cluster
            .get_json("persistentvolumeclaims", "default", CLAIM)
            .expect("the claim");
        (
            pvc["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            pvc["status"]["capacity"]["storage"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }

    pub fn apply(cluster: &SimCluster, dir: &Path, spec: &Path) -> Output {
        run(
            cluster,
            dir,
            &["apply", "-f", spec.to_str().unwrap(), "--auto-approve"],
        )
    }

    /// `plan --detailed-exitcode`: its exit code and output.
    pub fn replan(cluster: &SimCluster, dir: &Path, spec: &Path) -> (Option<i32>, String) {
        let out = run(
            cluster,
            dir,
            &["plan", "-f", spec.to_str().unwrap(), "--detailed-exitcode"],
        );
        (
            out.status.code(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    }

    /// With every controller there: snapshot, grow, and then nothing to do.
    #[test]
    fn a_claim_grows_after_a_ready_snapshot_and_then_the_plan_is_empty() {
        let cluster = cluster(SimOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), true);
        let out = apply(&cluster, dir.path(), &spec);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(claim_sizes(&cluster), ("20Gi".into(), "20Gi".into()));
        let snaps = cluster.list_json("volumesnapshots", Some("default"));
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        assert_eq!(snaps[0]["status"]["readyToUse"], true);
        assert_eq!(replan(&cluster, dir.path(), &spec).0, Some(0));
    }

    /// The CRDs are there, the snapshot controller is not: the snapshot
    /// step fails naming it, the claim is not grown, the unready snapshot
    /// is not kept as a "restore point", and the next plan still has work.
    #[test]
    fn a_snapshot_nothing_acts_on_fails_naming_the_missing_snapshot_controller() {
        let cluster = cluster(SimOptions {
            snapshot_controller: false,
            ..SimOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), true);
        fails_with(
            &apply(&cluster, dir.path(), &spec),
            "pgplan::apply::failed",
            &[
                "no snapshot controller acted on it",
                "install the CSI snapshot controller",
            ],
        );
        assert_eq!(claim_sizes(&cluster).0, "10Gi", "grown without a snapshot");
        assert!(
            cluster
                .list_json("volumesnapshots", Some("default"))
                .is_empty(),
            "an unready snapshot was left as a restore point"
        );
        let (code, plan) = replan(&cluster, dir.path(), &spec);
        assert_eq!(code, Some(2), "{plan}");
        assert!(plan.contains("snapshot claim default/data-pg-0"), "{plan}");
    }

    /// The volume grows but its file system resize never finishes: the step
    /// is not done, says what is pending and what to do, and the next plan
    /// is not "No changes".
    #[test]
    fn a_resize_that_stays_pending_is_never_reported_done() {
        let cluster = cluster(SimOptions {
            stalled_resize_classes: vec![CLASS.into()],
            ..SimOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), false);
        fails_with(
            &apply(&cluster, dir.path(), &spec),
            "pgplan::apply::failed",
            &[
                "asks for 20Gi and still has 10Gi",
                "FileSystemResizePending",
                "kubectl delete pod -n default pg-0",
            ],
        );
        assert_eq!(claim_sizes(&cluster), ("20Gi".into(), "10Gi".into()));
        let (code, plan) = replan(&cluster, dir.path(), &spec);
        assert_eq!(code, Some(2), "{plan}");
        assert!(
            plan.contains("finish growing PersistentVolumeClaim default/data-pg-0: it asks for 20Gi and has 10Gi"),
            "{plan}"
        );
    }
}

/// Pods that are not running and Ready: observe, plan and apply name each
/// one, its phase and the reason the cluster gives, with what to do.
mod no_ready_pod {
    use super::*;
    use crate::support::sim::scenario::healthcare as hc;
    use std::time::Duration;

    const SPEC: &str = "examples/healthcare/pgplan.yaml";

    /// The healthcare cluster with the postgres Deployment's template
    /// changed by `patch` (Recreate, so the old pod goes first); returns
    /// the one postgres pod once its status shows `want`.
    fn broken(patch: Value, want: &str) -> (SimCluster, String) {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let mut full = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}});
        merge(&mut full, &patch);
        patch_deployment(&cluster, hc::DEPLOYMENT, &full);
        wait_for_pod(cluster, want)
    }

    fn merge(a: &mut Value, b: &Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    fn wait_for_pod(cluster: SimCluster, want: &str) -> (SimCluster, String) {
        let mut name = String::new();
        cluster.wait_until(Duration::from_secs(60), want, |c| {
            let pods = c.pod_names(hc::NAMESPACE, "app=postgres");
            let all = c.list_json("pods", Some(hc::NAMESPACE));
            match pods.as_slice() {
                [one] if all.len() == 3 => {
                    let pod = c.get_json("pods", hc::NAMESPACE, one).unwrap_or_default();
                    name = one.clone();
                    pod["status"].to_string().contains(want)
                }
                _ => false,
            }
        });
        (cluster, name)
    }

    fn observe(cluster: &SimCluster) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join(SPEC);
        run(
            cluster,
            dir.path(),
            &["observe", "-f", spec.to_str().unwrap()],
        )
    }

    #[test]
    fn an_unschedulable_pod_is_named_with_the_schedulers_reason() {
        let (cluster, pod) = broken(
            json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": "node9"}}}}}),
            "Unschedulable",
        );
        fails_with(
            &observe(&cluster),
            "pgplan::cluster::no_ready_pod",
            &[
                "no ready pod with labels app=postgres in namespace `default`",
                &format!("pod {pod} is Pending: Unschedulable (0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector"),
                "no node can run it",
                &format!("kubectl describe pod -n default {pod}"),
            ],
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        cluster.faults().unpullable_image("postgres:99");
        patch_deployment(
            &cluster,
            hc::DEPLOYMENT,
            &json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:99"}]}}}}),
        );
        let (cluster, pod) = wait_for_pod(cluster, "ImagePullBackOff");
        fails_with(
            &observe(&cluster),
            "pgplan::cluster::no_ready_pod",
            &[
                &format!("pod {pod} is Pending: container postgres is waiting: ImagePullBackOff (Back-off pulling image \"postgres:99\")"),
                "its image cannot be pulled",
            ],
        );
    }

    #[test]
    fn a_crashing_server_is_named_with_its_exit_code() {
        // A fresh data directory and no POSTGRES_PASSWORD: the official
        // image's entrypoint refuses to initialise it and exits 1.
        let (cluster, pod) = broken(
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "postgres", "image": hc::IMAGE,
                    "volumeMounts": [{"name": "scratch", "mountPath": "/var/lib/postgresql/data"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}),
            "CrashLoopBackOff",
        );
        fails_with(
            &observe(&cluster),
            "pgplan::cluster::no_ready_pod",
            &[
                &format!("pod {pod} is Running: container postgres is waiting: CrashLoopBackOff"),
                "it last exited with code 1 (Error)",
                &format!("kubectl logs -n default {pod} --previous"),
            ],
        );
    }

    /// A failing readiness probe: the pod is Running, the reason is the
    /// probe's last failure (from its Events); apply stops before taking
    /// the lock, so nothing changed.
    #[test]
    fn a_failing_readiness_probe_is_quoted_and_apply_changes_nothing() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let pod = cluster.pod_names(hc::NAMESPACE, "app=postgres").remove(0);
        cluster.faults().fail_readiness(
            hc::NAMESPACE,
            &pod,
            "/var/run/postgresql:5432 - no response",
        );
        cluster.wait_until(Duration::from_secs(30), "the pod is not ready", |c| {
            !c.pod_ready(hc::NAMESPACE, &pod)
        });
        let reason = format!(
            "pod {pod} is Running: container postgres is running but not ready (Readiness probe failed: /var/run/postgresql:5432 - no response)"
        );
        fails_with(
            &observe(&cluster),
            "pgplan::cluster::no_ready_pod",
            &[&reason, "its readiness probe fails"],
        );

        cluster.requests().clear();
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join(SPEC);
        fails_with(
            &run(
                &cluster,
                dir.path(),
                &["apply", "-f", spec.to_str().unwrap(), "--auto-approve"],
            ),
            "pgplan::cluster::no_ready_pod",
            &[&reason],
        );
        nothing_written(&cluster);
        assert!(
            cluster.list_json("leases", Some(hc::NAMESPACE)).is_empty(),
            "the lock was taken"
        );
    }
}

/// Which container is the database: a sidecar listed first (an exporter
/// whose image name contains "postgres") is never it; a selector that
/// matches the application is told so; on thin evidence a failure names
/// the container that was tried.
mod containers {
    use super::*;
    use crate::support::sim::scenario::healthcare as hc;
    use std::time::Duration;

    /// The `container` of every step that runs tools in a pod.
    fn pod_containers(plan: &Value) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if m.get("via") == Some(&json!("pod")) {
                        out.push(
                            m.get("container")
                                .and_then(Value::as_str)
                                .unwrap_or("(none)")
                                .into(),
                        );
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&plan["steps"], &mut out);
        out
    }

    /// A busybox-like exporter listed before the server: observe inventories
    /// the server, the plan runs every tool in `postgres`, and the move
    /// completes with the patients.
    #[test]
    fn an_exporter_sidecar_listed_first_is_not_taken_for_the_server() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let dep = cluster
            .get_json("deployments", hc::NAMESPACE, hc::DEPLOYMENT)
            .unwrap();
        let mut containers = dep["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .clone();
        containers.insert(
            0,
            json!({"name": "postgres-exporter",
                   "image": "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
                   "ports": [{"containerPort": 9187, "name": "metrics"}],
                   "env": [{"name": "DATA_SOURCE_NAME",
                            "value": "postgresql://localhost:5432/postgres?sslmode=disable"}]}),
        );
        patch_deployment(
            &cluster,
            hc::DEPLOYMENT,
            &json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {"containers": containers}}}}),
        );
        cluster.wait_until(
            Duration::from_secs(60),
            "the two-container pod is ready",
            |c| {
                let pods = c.pod_names(hc::NAMESPACE, "app=postgres");
                pods.len() == 1
                    && c.list_json("pods", Some(hc::NAMESPACE)).len() == 3
                    && c.pod_ready(hc::NAMESPACE, &pods[0])
                    && c.get_json("pods", hc::NAMESPACE, &pods[0]).unwrap()["spec"]["containers"]
                        .as_array()
                        .is_some_and(|cs| cs.len() == 2)
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join("examples/healthcare/pgplan.yaml");
        let spec = spec.to_str().unwrap();
        let live = dir.path().join("live.yaml");
        let out = run(
            &cluster,
            dir.path(),
            &["observe", "-f", spec, "--out", live.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let observed = pgplan::observed::load_snapshot(
            "live.yaml",
            std::fs::read_to_string(&live).unwrap().as_bytes(),
        )
        .unwrap();
        let db = observed.servers[0]
            .databases
            .iter()
            .find(|d| d.name == hc::DATABASE)
            .expect("the healthcare database is inventoried");
        assert_eq!(db.total_rows(), 3);

        let out = run(
            &cluster,
            dir.path(),
            &["plan", "-f", spec, "--format", "json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        let used = pod_containers(&plan);
        assert!(!used.is_empty());
        assert!(used.iter().all(|c| c == "postgres"), "{used:?}");

        let out = run(
            &cluster,
            dir.path(),
            &["apply", "-f", spec, "--auto-approve"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let names = cluster.psql(
            hc::NAMESPACE,
            "postgres-0",
            hc::DATABASE,
            "select string_agg(name, ',' order by registered_at, id) from patients",
        );
        assert_eq!(names.trim(), "Alice,Bob,Ibrahim");
    }

    /// A selector that matches the application's Deployment, not the
    /// database's.
    #[test]
    fn a_selector_that_matches_the_application_is_told_it_has_no_postgres_container() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), |s| {
            replaced(
                &s,
                "        kind: Deployment\n        name: postgres\n",
                "        kind: Deployment\n        selector:\n          app: healthcare-api\n",
            )
        });
        let location = format!("pgplan.yaml:{}:7", line_of(&spec, "      workload:"));
        fails_with(
            &run(
                &cluster,
                dir.path(),
                &["plan", "-f", spec.to_str().unwrap()],
            ),
            "pgplan::plan::no-container",
            &[
                "Deployment healthcare-api has no PostgreSQL container",
                "api (ghcr.io/example/healthcare-api:1.4)",
                &location,
            ],
        );
    }

    /// A container taken on thin evidence (a port and a data volume, no
    /// server image or command) that turns out not to run the server: the
    /// error says which container was tried and how to name the right one.
    #[test]
    fn a_container_taken_on_thin_evidence_is_named_when_it_fails() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        patch_deployment(
            &cluster,
            hc::DEPLOYMENT,
            &json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {
                    "containers": [{"name": "db", "image": "mycorp/legacy-db:3",
                        "ports": [{"containerPort": 5432}],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/var/lib/postgresql/data"}]}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}),
        );
        cluster.wait_until(Duration::from_secs(60), "the legacy pod is ready", |c| {
            let pods = c.pod_names(hc::NAMESPACE, "app=postgres");
            pods.len() == 1
                && c.list_json("pods", Some(hc::NAMESPACE)).len() == 3
                && c.pod_ready(hc::NAMESPACE, &pods[0])
                && c.get_json("pods", hc::NAMESPACE, &pods[0]).unwrap()["spec"]["containers"][0]
                    ["name"]
                    == "db"
        });
        let pod = cluster.pod_names(hc::NAMESPACE, "app=postgres").remove(0);
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join("examples/healthcare/pgplan.yaml");
        fails_with(
            &run(&cluster, dir.path(), &["observe", "-f", spec.to_str().unwrap()]),
            "pgplan::source::container",
            &[
                &format!("in container `db` of pod default/{pod}"),
                "pgplan took `db` for the PostgreSQL container (port 5432, data volume at /var/lib/postgresql/data)",
                "set `source.kubernetes.container`",
            ],
        );
    }
}

/// Messages for what does not exist: a context, a workload, a namespace.
mod messages {
    use super::*;

    #[test]
    fn a_wrong_context_lists_the_contexts_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\n- name: prod-eu\n  context: {cluster: c, user: u}\n",
        )
        .unwrap();
        let spec = repo().join("examples/healthcare/pgplan.yaml");
        let spec = spec.to_str().unwrap();
        let kc = kubeconfig.to_str().unwrap();
        let by_flag = crate::cli::pgplan(
            &["plan", "-f", spec, "--kubeconfig", kc, "--context", "prod"],
            &[],
        );
        fails_with(
            &by_flag,
            "pgplan::cluster::context",
            &[
                "context `prod` is not in the kubeconfig",
                "it has: dev, prod-eu",
            ],
        );
        let by_env = crate::cli::pgplan(
            &["plan", "-f", spec, "--context", "prod"],
            &[("KUBECONFIG", kc)],
        );
        fails_with(
            &by_env,
            "pgplan::cluster::context",
            &["it has: dev, prod-eu", kc],
        );
    }

    #[test]
    fn a_missing_deployment_is_named() {
        let cluster = SimCluster::start();
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join("examples/healthcare/pgplan.yaml");
        fails_with(
            &run(&cluster, dir.path(), &["plan", "-f", spec.to_str().unwrap()]),
            "pgplan::plan::source-missing",
            &["the source Deployment `postgres` was not found in namespace `default`, and the target StatefulSet default/postgres does not exist either"],
        );
    }

    #[test]
    fn a_missing_namespace_is_said_to_be_missing() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), |s| {
            replaced(&s, "      namespace: default\n", "      namespace: prod\n")
        });
        let location = format!("pgplan.yaml:{}:7", line_of(&spec, "      workload:"));
        fails_with(
            &run(
                &cluster,
                dir.path(),
                &["plan", "-f", spec.to_str().unwrap()],
            ),
            "pgplan::plan::source-missing",
            &[
                "the source Deployment `postgres` cannot be there: namespace `prod` does not exist",
                "correct `source.kubernetes.namespace`",
                &location,
            ],
        );
    }
}

/// Secrets in snapshots: placeholders a real server accepts (valid base64,
/// decoding to the marker), loaded back as the marker.
mod snapshot_secrets {
    use super::*;
    use crate::support::sim::scenario::healthcare as hc;
    use base64::Engine;

    fn secrets(yaml: &str) -> Vec<Value> {
        let v: Value = serde_yaml_ng::from_str(yaml).expect("the snapshot is YAML");
        v["kubernetes"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "Secret")
            .cloned()
            .collect()
    }

    fn assert_placeholders(secret: &Value) {
        let data = secret["data"].as_object().expect("data keys are kept");
        assert!(!data.is_empty());
        for (k, v) in data {
            let v = v.as_str().unwrap();
            assert_eq!(v, pgplan::observed::SNAPSHOT_PLACEHOLDER, "{k}");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v)
                .unwrap_or_else(|e| panic!("{k}: {v} is not base64: {e}"));
            assert_eq!(decoded, b"(sensitive)");
        }
    }

    #[test]
    fn a_snapshots_secrets_hold_valid_base64_that_a_server_accepts() {
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        let dir = tempfile::tempdir().unwrap();
        let spec = repo().join("examples/healthcare/pgplan.yaml");
        let live = dir.path().join("live.yaml");
        let out = run(
            &cluster,
            dir.path(),
            &[
                "observe",
                "-f",
                spec.to_str().unwrap(),
                "--out",
                live.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let yaml = std::fs::read_to_string(&live).unwrap();
        assert!(yaml.contains("not for `kubectl apply`"), "{yaml}");
        let found = secrets(&yaml);
        let secret = found
            .iter()
            .find(|s| s["metadata"]["name"] == hc::SECRET)
            .expect("the credentials Secret");
        assert_placeholders(secret);
        assert!(!yaml.contains(hc::PASSWORD));

        // What a real server does with the manifest (`kubectl apply -f`): it decodes.
        let mut copy = secret.clone();
        let md = copy["metadata"].as_object_mut().unwrap();
        for f in ["uid", "resourceVersion", "creationTimestamp"] {
            md.remove(f);
        }
        md.insert("name".into(), json!("credentials-from-snapshot"));
        cluster
            .create_json(copy)
            .expect("the server accepts the snapshot's Secret");

        // Loaded, the placeholders are the marker again.
        let observed = pgplan::observed::load_snapshot("live.yaml", yaml.as_bytes()).unwrap();
        let loaded = observed
            .kubernetes
            .objects
            .iter()
            .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == hc::SECRET)
            .unwrap();
        assert_eq!(loaded["data"]["POSTGRES_PASSWORD"], "(sensitive)");
    }

    #[test]
    fn the_examples_snapshots_hold_the_same_placeholders() {
        for example in ["healthcare", "backstage-to-rds"] {
            let yaml =
                std::fs::read_to_string(repo().join(format!("examples/{example}/live.yaml")))
                    .unwrap();
            let found = secrets(&yaml);
            assert!(!found.is_empty(), "{example}");
            found.iter().for_each(assert_placeholders);
        }
    }
}
