//! `pgplan observe` and online `pgplan plan` against the simulated cluster:
//! the snapshot holds the right inventory and no secret, planning offline
//! on it equals planning online, the number of API requests does not grow
//! with unrelated objects, and every failure is a clear exit 1.

use std::process::Output;

use serde_json::json;

use crate::cli::{pgplan, repo};
use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kube_env(cluster: &SimCluster) -> Vec<(&'static str, String)> {
    vec![(
        "KUBECONFIG",
        cluster.kubeconfig_path().display().to_string(),
    )]
}

fn run(cluster: &SimCluster, args: &[&str]) -> Output {
    let env = kube_env(cluster);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pgplan(args, &env)
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    text(&out.stdout)
}

const SPEC: &str = "examples/healthcare/pgplan.yaml";

#[test]
fn healthcare_observe_then_offline_plan_equals_online_plan() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("live.yaml");
    ok(&run(
        &cluster,
        &["observe", "-f", SPEC, "--out", snap.to_str().unwrap()],
    ));
    let snapshot = std::fs::read_to_string(&snap).unwrap();

    // The inventory: the patients table with its 3 rows, on the Deployment's server.
    let observed = pgplan::observed::load_snapshot("live.yaml", snapshot.as_bytes())
        .expect("a valid snapshot");
    let server = observed
        .servers
        .iter()
        .find(|s| s.locator == "k8s/default/Deployment/postgres")
        .expect("the source server is inventoried");
    let db = server
        .databases
        .iter()
        .find(|d| d.name == "healthcare")
        .expect("healthcare");
    assert_eq!(db.owner, hc::USER);
    assert_eq!(
        db.tables
            .iter()
            .map(|t| (t.name.as_str(), t.rows))
            .collect::<Vec<_>>(),
        [("patients", 3)]
    );
    assert_eq!(db.sequences[0].last_value, 3);
    assert!(server
        .roles
        .iter()
        .any(|r| r.name == hc::USER && r.superuser));

    // No secret value anywhere; the Secret is there with keys and a fingerprint.
    assert!(
        !snapshot.contains(hc::PASSWORD),
        "the password leaked into the snapshot"
    );
    let secret = observed
        .kubernetes
        .objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == hc::SECRET)
        .expect("the Secret the workload uses is observed");
    assert_eq!(secret["data"]["POSTGRES_PASSWORD"], "(sensitive)");
    assert!(secret["metadata"]["annotations"]["pgplan.dev/fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));

    let offline = ok(&run(
        &cluster,
        &[
            "plan",
            "-f",
            SPEC,
            "--live-state",
            snap.to_str().unwrap(),
            "--format",
            "json",
        ],
    ));
    let online = ok(&run(&cluster, &["plan", "-f", SPEC, "--format", "json"]));
    assert_eq!(
        offline, online,
        "planning offline on the snapshot differs from planning online"
    );
    assert!(!online.contains(hc::PASSWORD));
    let markdown = ok(&run(
        &cluster,
        &["plan", "-f", SPEC, "--format", "markdown"],
    ));
    assert!(!markdown.contains(hc::PASSWORD));

    // The example's saved snapshot plans the same steps as the live scenario.
    let example = ok(&pgplan(
        &["plan", "--example", "healthcare", "--format", "json"],
        &[],
    ));
    let steps = |s: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(steps(&online), steps(&example));
    assert_eq!(steps(&online).len(), 12);
}

fn api_requests(cluster: &SimCluster) -> usize {
    cluster
        .requests()
        .all()
        .iter()
        .filter(|r| !r.resource.is_empty())
        .count()
}

#[test]
fn observing_does_not_grow_with_unrelated_objects() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    cluster.requests().clear();
    ok(&run(&cluster, &["observe", "-f", SPEC]));
    let before = api_requests(&cluster);
    let by_kind_before = cluster.requests().counts();

    for i in 0..200 {
        let o = match i % 4 {
            0 => {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("noise-{i}"), "namespace": "default"}, "data": {"k": "v"}})
            }
            1 => {
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("noise-{i}"), "namespace": "default"}, "data": {"k": "dg=="}})
            }
            2 => {
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("noise-{i}"), "namespace": "default"},
                        "spec": {"selector": {"app": format!("noise-{i}")}, "ports": [{"port": 80}]}})
            }
            _ => {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("noise-{i}"), "namespace": "default", "labels": {"app": format!("noise-{i}")}},
                        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": format!("noise-{i}")}},
                                 "template": {"metadata": {"labels": {"app": format!("noise-{i}")}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
            }
        };
        cluster.create_json(o).expect("create an unrelated object");
    }
    cluster.requests().clear();
    ok(&run(&cluster, &["observe", "-f", SPEC]));
    assert_eq!(
        api_requests(&cluster),
        before,
        "requests before: {by_kind_before:?}\nafter: {:?}",
        cluster.requests().counts()
    );
}

#[test]
fn a_server_side_dry_run_rejection_is_a_plan_error() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    let spec = std::fs::read_to_string(repo().join(SPEC)).unwrap().replace(
        "    kubernetes:\n      statefulSet:",
        "    kubernetes:\n      namespace: nowhere\n      statefulSet:",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgplan.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = run(&cluster, &["plan", "-f", path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::plan::dry_run"), "{err}");
    assert!(err.contains("nowhere"), "{err}");
    // Nothing was written: every mutating request was a dry run.
    assert!(
        cluster
            .requests()
            .mutations()
            .iter()
            .all(|r| r.dry_run || r.resource == "pods/exec"),
        "{}",
        cluster.requests().summary()
    );
    assert!(cluster.requests().mutations().iter().any(|r| r.dry_run));
}

#[test]
fn an_injected_admission_rejection_names_the_object_and_quotes_the_reason() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    cluster.faults().fail_nth_with(
        "create",
        "statefulsets",
        1,
        1,
        422,
        "spec.template: forbidden by policy require-resource-limits",
    );
    let out = run(&cluster, &["plan", "-f", SPEC]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("StatefulSet default/postgres"), "{err}");
    assert!(err.contains("require-resource-limits"), "{err}");
}

#[test]
fn an_unreachable_api_server_names_the_context_and_server() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: far-away\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\ncontexts:\n- name: far-away\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let out = pgplan(
        &[
            "plan",
            "-f",
            SPEC,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::cluster::unreachable"), "{err}");
    assert!(err.contains("far-away"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// An API server that accepts connections and never answers: `plan` fails
/// within `--request-timeout` (it hung with no output for minutes before),
/// exit 1, naming the server and the bound.
#[test]
fn a_server_that_never_answers_fails_the_plan_within_the_request_timeout() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    cluster.faults().hang("*", "*");
    let started = std::time::Instant::now();
    let mut child = crate::run::pgplan_command()
        .args(["plan", "-f", SPEC, "--request-timeout", "2s"])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The test's own bound: a plan that hangs is killed and fails the test.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("plan still hangs after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20),
        "failed after {took:?}: {err}"
    );
    assert!(err.contains("pgplan::cluster::request_timeout"), "{err}");
    assert!(err.contains(&cluster.url()), "names the server: {err}");
    assert!(
        err.contains("did not answer within 2 s (--request-timeout)"),
        "{err}"
    );
    assert!(err.contains("`simcluster`"), "names the context: {err}");

    // A value that is not a duration is a usage error.
    let bad = run(&cluster, &["plan", "-f", SPEC, "--request-timeout", "soon"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("is not a duration"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn forbidden_names_verb_resource_and_namespace() {
    let cluster = SimCluster::with_scenario(Scenario::Healthcare);
    cluster.faults().fail_nth_with(
        "list",
        "services",
        1,
        1,
        403,
        "services is forbidden: User \"ci\" cannot list resource \"services\"",
    );
    let out = run(&cluster, &["observe", "-f", SPEC]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::cluster::forbidden"), "{err}");
    assert!(
        err.contains("cannot list services in namespace `default`"),
        "{err}"
    );
}

#[test]
fn a_workload_that_does_not_exist_is_a_located_plan_error() {
    let cluster = SimCluster::start();
    let out = run(&cluster, &["plan", "-f", SPEC]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::plan::source-missing"), "{err}");
    assert!(err.contains("pgplan.yaml:12:7"), "{err}");
}

#[test]
fn a_database_that_refuses_the_connection_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata: {name: legacy}
spec:
  source:
    external: {host: 127.0.0.1, port: 9, tls: {mode: disable}}
  target:
    rds:
      region: us-east-1
      instanceIdentifier: legacy
      engineVersion: \"15.4\"
      instanceClass: db.t3.micro
      allocatedStorage: 20
      tls: {mode: require}
  credentials:
    source:
      username: app
      password: ${PGPLAN_TEST_PW}
    target:
      username: postgres
      password: ${PGPLAN_TEST_PW}
  databases: [app]
";
    let path = dir.path().join("pgplan.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = pgplan(
        &["observe", "-f", path.to_str().unwrap()],
        &[("PGPLAN_TEST_PW", "secret-pw-123")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::pg::unreachable"), "{err}");
    assert!(
        err.contains("127.0.0.1:9 refused the connection (nothing listens there)"),
        "{err}"
    );
    assert!(!err.contains("secret-pw-123"));
}

mod backstage_to_rds {
    use super::*;
    use crate::backstage::{World, MASTER_PASSWORD};
    use crate::support::sim::scenario::backstage as bs;

    #[test]
    fn observe_then_offline_plan_equals_online_plan() {
        let w = World::new();
        let spec = w.spec(|s| s);
        let spec = spec.to_str().unwrap();
        let snap = w.dir.path().join("live.yaml");
        ok(&w.run(
            &["observe", "-f", spec, "--out", snap.to_str().unwrap()],
            &[],
        ));
        let text_snap = std::fs::read_to_string(&snap).unwrap();
        assert!(!text_snap.contains(bs::PASSWORD) && !text_snap.contains(MASTER_PASSWORD));
        let observed = pgplan::observed::load_snapshot("live.yaml", text_snap.as_bytes()).unwrap();
        let server = observed
            .servers
            .iter()
            .find(|s| s.locator == "k8s/backstage/StatefulSet/backstage-psql-developer-hub")
            .expect("the in-cluster server is inventoried");
        for (db, table, rows) in bs::ROW_COUNTS {
            let d = server
                .databases
                .iter()
                .find(|d| d.name == db)
                .unwrap_or_else(|| panic!("{db}"));
            let t = d
                .tables
                .iter()
                .find(|t| t.name == table)
                .unwrap_or_else(|| panic!("{db}.{table}"));
            assert_eq!(t.rows as i64, rows, "{db}.{table}");
        }
        let auth = server
            .databases
            .iter()
            .find(|d| d.name == bs::LOCKED_DB)
            .unwrap();
        assert!(auth
            .knex_locks
            .iter()
            .any(|l| l.table == "knex_migrations_lock" && l.locked));
        let search = server
            .databases
            .iter()
            .find(|d| d.name == bs::TASKS_LOCK_DB)
            .unwrap();
        assert!(search
            .knex_locks
            .iter()
            .any(|l| l.table == bs::TASKS_LOCK_TABLE && l.locked));
        assert!(observed.rds.instances.is_empty(), "no instance yet");

        let offline = ok(&w.run(
            &[
                "plan",
                "-f",
                spec,
                "--live-state",
                snap.to_str().unwrap(),
                "--format",
                "json",
            ],
            &[],
        ));
        let online = ok(&w.run(&["plan", "-f", spec, "--format", "json"], &[]));
        assert_eq!(offline, online);
        assert!(!online.contains(MASTER_PASSWORD) && !online.contains(bs::PASSWORD));
    }

    #[test]
    fn missing_aws_credentials_or_region_are_clear_errors() {
        let w = World::new();
        let spec = w.spec(|s| s);
        let spec = spec.to_str().unwrap();
        let out = w.run(
            &["plan", "-f", spec],
            &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_PROFILE", "pgplan-none"),
                ("HOME", "/nonexistent"),
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("pgplan::aws::credentials"), "{err}");
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
}

/// An external source's `tls.caFile` is a path relative to the spec's
/// directory, as everywhere else, not to where pgplan runs: observe run from
/// another directory finds the CA and gets as far as the TLS handshake (a
/// listener that agrees to TLS and then hangs up), instead of failing on a
/// root certificate file that "does not exist".
#[test]
fn an_external_sources_ca_file_is_found_beside_the_spec_from_any_directory() {
    let root = tempfile::tempdir().unwrap();
    let spec_dir = root.path().join("spec");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(
        spec_dir.join("ca.pem"),
        ca.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();

    // Answers each SSLRequest with 'S' (TLS agreed), then closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = [0u8; 8];
            if conn.read_exact(&mut request).is_ok() {
                let _ = conn.write_all(b"S");
                let _ = conn.read(&mut [0u8; 512]);
            }
        }
    });
    let spec = spec_dir.join("pgplan.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata: {{name: legacy}}
spec:
  source:
    external: {{host: 127.0.0.1, port: {port}, tls: {{mode: verify-full, caFile: ca.pem}}}}
  target:
    rds:
      region: us-east-1
      instanceIdentifier: legacy
      engineVersion: \"15.4\"
      instanceClass: db.t3.micro
      allocatedStorage: 20
      tls: {{mode: require}}
  credentials:
    source:
      username: app
      password: ${{PGPLAN_TEST_PW}}
    target:
      username: postgres
      password: ${{PGPLAN_TEST_PW}}
  databases: [app]
"
        ),
    )
    .unwrap();
    let out = crate::run::pgplan_command()
        .args(["observe", "-f", "../spec/pgplan.yaml"])
        .current_dir(&elsewhere)
        .env("PGPLAN_TEST_PW", "secret-pw-123")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::pg::tls"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    assert!(!err.contains("could not read root certificate"), "{err}");
}
