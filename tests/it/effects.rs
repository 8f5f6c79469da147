//! What a real cluster shows that a happy one does not, on the simulated
//! cluster: APIs it does not serve (CRDs not installed), a snapshot CRD with
//! no controller behind it, a volume expansion that never finishes, pods
//! that are not running, a sidecar listed before the database container,
//! and the messages for a wrong context, workload or namespace. pgplan must
//! fail clearly (a located diagnostic, exit 1) and never call a step done
//! before its effect is seen.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;

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
            &["observe", "-f", spec_s, "-o", live.to_str().unwrap()],
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
