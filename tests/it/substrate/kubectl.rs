//! kubectl against the simulated cluster, as docs/testing.md suggests people use it: its
//! kubeconfig (HTTPS, the cluster's CA, a bearer token) works unchanged; discovery gives `get`,
//! short names and `get all`; the OpenAPI v3 documents let `apply --dry-run=server` validate on
//! the server. kubectl comes from the machine (`scripts/test` installs Debian's
//! `kubernetes-client` when there is none).

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::sim::scenario::healthcare as hc;
use crate::support::{Scenario, SimCluster, SimOptions};

fn kubectl(c: &SimCluster, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let home = c.dir().join("kubectl-home");
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", c.kubeconfig_path())
        // Its discovery cache stays in the cluster's directory.
        .env("HOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("kubectl cannot run ({e}): scripts/test installs it (apt-get install kubernetes-client)")
        });
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl's minor version (`20` for 1.20).
fn minor(c: &SimCluster) -> u32 {
    let v: Value = serde_json::from_str(&ok(&kubectl(
        c,
        &["version", "--client", "-o", "json"],
        None,
    )))
    .unwrap();
    v["clientVersion"]["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .expect("a client version")
}

#[test]
fn kubectl_reads_and_dry_runs_against_the_cluster() {
    // HTTPS whatever PGPLAN_TEST_PLAIN_HTTP says: kubectl sends no token over plain HTTP.
    let c = SimCluster::start_with(SimOptions {
        scenario: Some(Scenario::Healthcare),
        https: true,
        ..SimOptions::default()
    })
    .unwrap();
    let pods = c.pod_names(hc::NAMESPACE, "");

    let listed = ok(&kubectl(&c, &["get", "pods"], None));
    for p in &pods {
        assert!(listed.contains(p.as_str()), "{p} in:\n{listed}");
    }
    let all = ok(&kubectl(&c, &["get", "all"], None));
    for name in [
        format!("pod/{}", pods[0]),
        format!("service/{}", hc::SERVICE),
        format!("deployment.apps/{}", hc::DEPLOYMENT),
        format!("deployment.apps/{}", hc::API_DEPLOYMENT),
    ] {
        assert!(all.contains(&name), "{name} in:\n{all}");
    }
    let yaml = ok(&kubectl(
        &c,
        &["get", "deploy", hc::DEPLOYMENT, "-o", "yaml"],
        None,
    ));
    assert!(yaml.contains("kind: Deployment"), "{yaml}");
    assert!(
        yaml.contains(&format!("name: {}", hc::DEPLOYMENT)),
        "{yaml}"
    );
    let json: Value = serde_json::from_str(&ok(&kubectl(
        &c,
        &["get", "sts,pvc,svc", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["kind"], "List");
    assert!(json["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "PersistentVolumeClaim"));

    // Server dry runs: a new object and a change to a live one. kubectl before 1.27 asks the
    // OpenAPI v2 document (protobuf) whether a kind takes `dryRun`, and that document has no
    // paths here (docs/testing.md): it refuses, so only `get` is checked with it.
    if minor(&c) < 27 {
        eprintln!(
            "kubectl 1.{} is older than 1.27: apply --dry-run=server not checked",
            minor(&c)
        );
        return;
    }
    let args = ["apply", "--dry-run=server", "-f", "-"];
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {a: b}\n";
    let out = ok(&kubectl(&c, &args, Some(cm)));
    assert!(
        out.contains("configmap/probe created (server dry run)"),
        "{out}"
    );
    let scaled = yaml.replacen("replicas: 1", "replicas: 3", 1);
    let out = ok(&kubectl(&c, &args, Some(&scaled)));
    assert!(
        out.contains(&format!(
            "deployment.apps/{} configured (server dry run)",
            hc::DEPLOYMENT
        )),
        "{out}"
    );
    // Nothing was written.
    assert!(c.get_json("configmaps", "default", "probe").is_none());
    assert_eq!(
        c.get_json("deployments", "default", hc::DEPLOYMENT)
            .unwrap()["spec"]["replicas"],
        1
    );
    assert!(c
        .requests()
        .all()
        .iter()
        .any(|r| r.verb == "patch" && r.resource == "deployments" && r.dry_run));
}
