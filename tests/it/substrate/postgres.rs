//! Pods with real PostgreSQL: seed 002's story (a Deployment without a PVC loses its data, a
//! StatefulSet keeps it across pod deletion), container restarts after a crash, image
//! initialisation (official and Red Hat images), and the scenarios' data.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

use super::{exec, from_json, CONVERGE};
use crate::support::sim::scenario::{backstage, healthcare};
use crate::support::{pg, Scenario, SimCluster};

const PATIENTS_SQL: &str = "CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL, age int, \
    condition text, registered_at timestamptz DEFAULT now());\n\
    INSERT INTO patients (name, age, registered_at) VALUES ('Alice', 34, now() - interval '3 days'), \
    ('Bob', 52, now() - interval '2 days'), ('Ibrahim', 41, now() - interval '1 day');";

fn pg_env() -> serde_json::Value {
    json!([{"name": "POSTGRES_USER", "value": "healthcare_user"},
           {"name": "POSTGRES_PASSWORD", "value": "pw"},
           {"name": "POSTGRES_DB", "value": "healthcare"}])
}

fn names(c: &SimCluster, pod: &str) -> Vec<String> {
    c.query(
        "default",
        pod,
        "healthcare",
        "SELECT name FROM patients ORDER BY registered_at",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// Seed 002: the same database loses its rows as a Deployment without a PVC and keeps them as a
/// StatefulSet whose PVC is reattached to the new postgres-0.
#[tokio::test]
async fn deployment_without_pvc_loses_data_statefulset_keeps_it() {
    let c = SimCluster::start();
    c.create_json(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path"}, "provisioner": "kubernetes.io/no-provisioner"}),
    )
    .unwrap();
    let client = c.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = from_json(
        json!({"metadata": {"name": "postgres"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "postgres"}},
        "template": {"metadata": {"labels": {"app": "postgres"}}, "spec": {"containers": [
            {"name": "postgres", "image": "postgres:15", "env": pg_env(),
             "ports": [{"containerPort": 5432}]}]}}}}),
    );
    deploys.create(&PostParams::default(), &d).await.unwrap();
    c.wait_until_async(CONVERGE, "the postgres Deployment is ready", |c| {
        c.workloads_ready("default")
    })
    .await;
    let first = c.pod_names("default", "app=postgres").remove(0);
    c.psql("default", &first, "healthcare", PATIENTS_SQL);
    assert_eq!(names(&c, &first), ["Alice", "Bob", "Ibrahim"]);
    pods.delete(&first, &DeleteParams::default()).await.unwrap();
    c.wait_until_async(CONVERGE, "a replacement pod is ready", |c| {
        let now = c.pod_names("default", "app=postgres");
        now.len() == 1 && now[0] != first && c.pod_ready("default", &now[0])
    })
    .await;
    let second = c.pod_names("default", "app=postgres").remove(0);
    let lost = c.try_psql(
        "default",
        &second,
        "healthcare",
        "SELECT count(*) FROM patients",
    );
    let err = lost.expect_err("the patients table went with the first pod");
    assert!(
        err.stderr.contains("relation \"patients\" does not exist"),
        "{err}"
    );
    deploys
        .delete("postgres", &DeleteParams::default())
        .await
        .unwrap();

    // The StatefulSet on a static local PV (seed 002 steps 3 and 4).
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = from_json(json!({"metadata": {"name": "postgres-pv-0"}, "spec": {
        "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
        "local": {"path": "/data/postgres"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node2"]}]}]}}}}));
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let s: StatefulSet = from_json(json!({"metadata": {"name": "postgres"}, "spec": {
        "serviceName": "postgres", "replicas": 1, "selector": {"matchLabels": {"app": "postgres"}},
        "template": {"metadata": {"labels": {"app": "postgres"}}, "spec": {"containers": [
            {"name": "postgres", "image": "postgres:15", "env": pg_env(),
             "ports": [{"containerPort": 5432}],
             "volumeMounts": [{"name": "postgres-storage", "mountPath": "/var/lib/postgresql/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "postgres-storage"}, "spec": {
            "storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}}}}]}}));
    sets.create(&PostParams::default(), &s).await.unwrap();
    c.wait_until_async(CONVERGE, "postgres-0 is ready", |c| {
        c.pod_ready("default", "postgres-0")
    })
    .await;
    c.psql("default", "postgres-0", "healthcare", PATIENTS_SQL);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim = pvcs.get("postgres-storage-postgres-0").await.unwrap();
    assert_eq!(
        claim.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("postgres-pv-0")
    );
    let uid = claim.metadata.uid.clone();
    let old_pod_uid = pods.get("postgres-0").await.unwrap().metadata.uid;
    assert_eq!(
        pods.get("postgres-0")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("node2")
    );

    pods.delete("postgres-0", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "a new postgres-0 is ready", |c| {
        c.get::<Pod>("default", "postgres-0")
            .is_some_and(|p| p.metadata.uid != old_pod_uid)
            && c.pod_ready("default", "postgres-0")
    })
    .await;
    let claim = pvcs.get("postgres-storage-postgres-0").await.unwrap();
    assert_eq!(claim.metadata.uid, uid, "the same PVC is reattached");
    let vols = pods
        .get("postgres-0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volumes
        .unwrap();
    assert_eq!(
        vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
        "postgres-storage-postgres-0"
    );
    assert_eq!(
        names(&c, "postgres-0"),
        ["Alice", "Bob", "Ibrahim"],
        "the data survived the pod"
    );
    let count = exec(
        &pods,
        "postgres-0",
        &[
            "psql",
            "-U",
            "healthcare_user",
            "-d",
            "healthcare",
            "-Atc",
            "SELECT count(*) FROM patients",
        ],
    )
    .await;
    assert_eq!(count.stdout_str().trim(), "3");
}

#[tokio::test]
async fn a_crashed_server_restarts_on_the_same_volume() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let pod = c.pod_names("default", "app=postgres").remove(0);
    let before = c.pod_postgres("default", &pod).unwrap();
    assert!(c.faults().crash_pod("default", &pod));
    c.wait_until_async(CONVERGE, "the container restarted and is ready", |c| {
        c.get::<Pod>("default", &pod)
            .and_then(|p| p.status?.container_statuses)
            .is_some_and(|s| s[0].restart_count == 1 && s[0].ready)
    })
    .await;
    let after = c.pod_postgres("default", &pod).unwrap();
    assert_eq!(after.data_dir, before.data_dir);
    assert_eq!(after.port, before.port, "the pod keeps its address");
    assert_eq!(names(&c, &pod), healthcare::PATIENTS);
    let status = c
        .get::<Pod>("default", &pod)
        .unwrap()
        .status
        .unwrap()
        .container_statuses
        .unwrap();
    let last = status[0]
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 137);
}

#[test]
fn healthcare_scenario_matches_seed_002() {
    let c = SimCluster::with_scenario(Scenario::Healthcare);
    let ns = healthcare::NAMESPACE;
    let pod = c.pod_names(ns, "app=postgres").remove(0);
    assert_eq!(names(&c, &pod), healthcare::PATIENTS);
    let pv = c.get::<PersistentVolume>("", healthcare::PV).unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.host_path.unwrap().path, "/data/postgres");
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    let api = c.get::<Deployment>(ns, healthcare::API_DEPLOYMENT).unwrap();
    assert_eq!(
        api.status.unwrap().ready_replicas,
        Some(healthcare::API_REPLICAS)
    );
    // The password from the Secret works over TCP (scram), a wrong one does not.
    let ep = c.pod_postgres(ns, &pod).unwrap();
    let tcp = |password: &str| {
        std::process::Command::new(pg::bin("psql"))
            .args([
                "-h",
                &ep.addr.to_string(),
                "-p",
                &ep.port.to_string(),
                "-U",
                healthcare::USER,
                "-d",
                healthcare::DATABASE,
                "-Atc",
                "SELECT count(*) FROM patients",
            ])
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    };
    let ok = tcp(healthcare::PASSWORD);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "3",
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = tcp("wrong");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("password authentication failed"));
    assert_eq!(c.requests().all().len(), 0, "seeding makes no API requests");
}

#[test]
fn backstage_scenario_matches_seed_004() {
    let c = SimCluster::with_scenario(Scenario::Backstage);
    let ns = backstage::NAMESPACE;
    let pod = backstage::POD;
    let dbs = c.query(
        ns,
        pod,
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'backstage_plugin_%' ORDER BY 1",
    );
    let dbs: Vec<&str> = dbs.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(dbs, backstage::DATABASES);
    for (db, table, rows) in backstage::ROW_COUNTS {
        let n = c.psql(ns, pod, db, &format!("SELECT count(*) FROM {table}"));
        assert_eq!(n, rows.to_string(), "{db}.{table}");
    }
    for db in backstage::DATABASES {
        let locked = c.psql(ns, pod, db, "SELECT is_locked FROM knex_migrations_lock");
        assert_eq!(
            locked,
            if db == backstage::LOCKED_DB { "1" } else { "0" },
            "{db}"
        );
    }
    let tasks = c.psql(
        ns,
        pod,
        backstage::TASKS_LOCK_DB,
        &format!("SELECT is_locked FROM {}", backstage::TASKS_LOCK_TABLE),
    );
    assert_eq!(tasks, "1");
    // The Red Hat image: superuser postgres with POSTGRESQL_ADMIN_PASSWORD over TCP.
    let ep = c.pod_postgres(ns, pod).unwrap();
    let out = std::process::Command::new(pg::bin("psql"))
        .args([
            "-h",
            &ep.addr.to_string(),
            "-p",
            &ep.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "backstage_plugin_catalog",
            "-Atc",
            "SELECT count(*) FROM final_entities",
        ])
        .env("PGPASSWORD", backstage::PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "50",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn missing_secret_keeps_the_pod_pending_until_it_exists() {
    let c = SimCluster::start();
    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let p: Pod = from_json(json!({"metadata": {"name": "db"}, "spec": {"containers": [
        {"name": "postgres", "image": "docker.io/library/postgres:16-alpine", "env": [
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]}]}}));
    pods.create(&PostParams::default(), &p).await.unwrap();
    c.wait_until_async(CONVERGE, "the container waits for its Secret", |c| {
        c.get::<Pod>("default", "db")
            .and_then(|p| p.status?.container_statuses)
            .and_then(|s| s[0].state.clone()?.waiting?.reason)
            .as_deref()
            == Some("CreateContainerConfigError")
    })
    .await;
    c.create_json(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"}}),
    )
    .unwrap();
    c.wait_until_async(CONVERGE, "the pod starts once the Secret exists", |c| {
        c.pod_ready("default", "db")
    })
    .await;
    let out = exec(
        &pods,
        "db",
        &["sh", "-c", "psql -U postgres -Atc 'SELECT current_user'"],
    )
    .await;
    assert_eq!(out.stdout_str().trim(), "postgres");
    // Like the official image, exec runs as root: psql without -U has no such role.
    let root = exec(&pods, "db", &["psql", "-Atc", "SELECT 1"]).await;
    assert!(
        root.stderr.contains("role \"root\" does not exist"),
        "{}",
        root.stderr
    );
    assert!(!root.succeeded());
}

#[test]
fn postgres_images_are_recognised_by_name() {
    use crate::support::sim::kubelet::Flavor;
    for (image, flavor) in [
        ("postgres:15", Some(Flavor::Official)),
        (
            "docker.io/library/postgres:16-alpine",
            Some(Flavor::Official),
        ),
        ("postgres@sha256:0123", Some(Flavor::Official)),
        ("registry.redhat.io/rhel9/postgresql-15", Some(Flavor::Rhel)),
        (
            "quay.io/sclorg/postgresql-16-c9s:latest",
            Some(Flavor::Rhel),
        ),
        ("ghcr.io/example/healthcare-api:1.4", None),
        ("quay.io/rhdh/rhdh-hub-rhel9:1.3", None),
        (
            "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
            None,
        ),
    ] {
        assert_eq!(Flavor::of_image(image), flavor, "{image}");
    }
}
