//! The kubelet runs every container's command: init containers then containers, each in its own
//! root with its volumes at their mount paths, its environment (Secrets by reference), its exit
//! code and its log; pods reach each other's servers by in-cluster names that resolve in pods
//! only.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{LogParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use super::{from_json, CONVERGE};
use crate::support::sim::scenario::backstage;
use crate::support::{Scenario, SimCluster};

/// The only pod a Job made, once it has finished (Succeeded or Failed).
async fn finished_pod(c: &SimCluster, ns: &str, job: &str) -> Pod {
    let selector = format!("job-name={job}");
    c.wait_until_async(CONVERGE, "the job's pod finished", |c| {
        c.pod_names(ns, &selector).iter().any(|p| {
            c.get::<Pod>(ns, p)
                .and_then(|p| p.status?.phase)
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
        })
    })
    .await;
    let name = c.pod_names(ns, &selector).remove(0);
    c.get::<Pod>(ns, &name).expect("the job's pod")
}

async fn log_of(c: &SimCluster, ns: &str, pod: &Pod) -> String {
    let pods: Api<Pod> = Api::namespaced(c.client().await, ns);
    pods.logs(
        pod.metadata.name.as_deref().unwrap_or(""),
        &LogParams::default(),
    )
    .await
    .expect("the pod's log")
}

fn job(name: &str, pod_spec: Value) -> Job {
    from_json(json!({"metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}}}))
}

fn exit_code(pod: &Pod) -> Option<i32> {
    let status = pod.status.as_ref()?;
    let c = status.container_statuses.as_ref()?.first()?;
    Some(c.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[tokio::test]
async fn a_container_runs_its_command_in_its_own_root_with_its_volumes_and_env() {
    let c = SimCluster::start();
    let client = c.client().await;
    c.create_json(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "stringData": {"token": "s3cr3t value"}}))
        .expect("the secret");
    // The script checks its world and leaves a file on the node's hostPath volume.
    let script = r#"set -eu
echo "token=$TOKEN greeting=$GREETING host=$(cat /etc/hostname) whoami=$(id -u)"
test ! -e /work && test ! -e /tmp/pgplan-sim-addresses
test -d /data
cat /data/in.txt > /data/out.txt
echo "from the pod" >> /data/out.txt
pg_dump --version
exit 3"#;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let node_dir = c.dir().join("nodes").join("node1").join("srv").join("job");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    std::fs::write(node_dir.join("in.txt"), "seed line\n").expect("seed file");
    jobs.create(
        &PostParams::default(),
        &job(
            "probe",
            json!({"restartPolicy": "Never",
                "containers": [{"name": "probe", "image": "postgres:15",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "GREETING", "value": "hello"},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "hostPath": {"path": "/srv/job"}}]}),
        ),
    )
    .await
    .expect("create the job");
    let pod = finished_pod(&c, "default", "probe").await;
    let log = log_of(&c, "default", &pod).await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed"),
        "{log}"
    );
    assert_eq!(exit_code(&pod), Some(3), "{log}");
    let name = pod.metadata.name.clone().unwrap_or_default();
    assert!(
        log.contains(&format!(
            "token=s3cr3t value greeting=hello host={name} whoami=0"
        )),
        "{log}"
    );
    assert!(log.contains("pg_dump (PostgreSQL)"), "{log}");
    assert_eq!(
        std::fs::read_to_string(node_dir.join("out.txt")).expect("the pod's file"),
        "seed line\nfrom the pod\n"
    );
    // backoffLimit 0: one failed pod fails the Job.
    c.wait_until_async(CONVERGE, "the job failed", |c| {
        c.get::<Job>("default", "probe")
            .and_then(|j| j.status?.failed)
            == Some(1)
    })
    .await;
    let status = jobs
        .get("probe")
        .await
        .expect("job")
        .status
        .expect("status");
    assert!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True"),
        "a Job whose pod exited 3 has failed"
    );
}

#[tokio::test]
async fn init_containers_run_first_in_order_and_a_missing_program_is_a_start_error() {
    let c = SimCluster::start();
    let jobs: Api<Job> = Api::namespaced(c.client().await, "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "ordered",
            json!({"restartPolicy": "Never",
                "initContainers": [
                    {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo one > /work/steps"],
                     "volumeMounts": [{"name": "w", "mountPath": "/work"}]},
                    {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo two >> /work/steps"],
                     "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
                "containers": [{"name": "main", "image": "busybox",
                    "command": ["sh", "-c", "cat /work/steps; echo three"],
                    "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
                "volumes": [{"name": "w", "emptyDir": {}}]}),
        ),
    )
    .await
    .expect("create");
    let pod = finished_pod(&c, "default", "ordered").await;
    let log = log_of(&c, "default", &pod).await;
    assert_eq!(log, "one\ntwo\nthree\n");
    assert_eq!(exit_code(&pod), Some(0));
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let init: Vec<i32> = status
        .init_container_statuses
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Some(s.state.as_ref()?.terminated.as_ref()?.exit_code))
        .collect();
    assert_eq!(init, vec![0, 0]);

    jobs.create(
        &PostParams::default(),
        &job(
            "missing",
            json!({"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["no-such-program-here"]}]}),
        ),
    )
    .await
    .expect("create");
    let pod = finished_pod(&c, "default", "missing").await;
    let terminated = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .expect("terminated");
    assert_eq!(terminated.exit_code, 128);
    assert_eq!(terminated.reason.as_deref(), Some("StartError"));
    assert!(terminated
        .message
        .unwrap_or_default()
        .contains("exec: \"no-such-program-here\": executable file not found in $PATH"),);
}

#[tokio::test]
async fn a_pod_reaches_another_pods_server_by_its_in_cluster_name_which_the_machine_cannot_resolve()
{
    let c = SimCluster::with_scenario(Scenario::Backstage);
    let ns = backstage::NAMESPACE;
    let jobs: Api<Job> = Api::namespaced(c.client().await, ns);
    // The StatefulSet's pod by its headless Service's name (short, as in-namespace clients
    // write it) and the Service by its fully qualified name.
    let pod_name = format!("{}.{}", backstage::POD, backstage::SERVICE);
    let fqdn = format!("{}.{ns}.svc.cluster.local", backstage::SERVICE);
    let script = format!(
        "psql -h {pod_name} -Atc 'SELECT 1' && psql -h {fqdn} -Atc 'SELECT current_user' && getent hosts {pod_name}"
    );
    jobs.create(
        &PostParams::default(),
        &job(
            "reach",
            json!({"restartPolicy": "Never",
                "containers": [{"name": "psql", "image": backstage::DB_IMAGE,
                    "command": ["sh", "-c", script],
                    "env": [{"name": "PGUSER", "value": backstage::USER},
                            {"name": "PGDATABASE", "value": "postgres"},
                            {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                                "name": backstage::SECRET, "key": "POSTGRES_PASSWORD"}}}]}]}),
        ),
    )
    .await
    .expect("create");
    let pod = finished_pod(&c, ns, "reach").await;
    let log = log_of(&c, ns, &pod).await;
    assert_eq!(exit_code(&pod), Some(0), "{log}");
    let server = c.pod_postgres(ns, backstage::POD).expect("the server");
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("1"), "{log}");
    assert_eq!(lines.next(), Some(backstage::USER), "{log}");
    let hosts: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        hosts.first().copied(),
        Some(server.addr.to_string().as_str()),
        "{log}"
    );
    assert!(hosts.contains(&pod_name.as_str()), "{log}");
    assert!(
        server.addr.octets()[0] == 127 && server.addr.octets()[1] >= 2,
        "{}",
        server.addr
    );
    // The machine running pgplan resolves none of it.
    use std::net::ToSocketAddrs;
    assert!((fqdn.as_str(), 5432).to_socket_addrs().is_err());
    assert!((pod_name.as_str(), 5432).to_socket_addrs().is_err());
}
