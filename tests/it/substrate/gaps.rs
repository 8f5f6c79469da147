//! The gaps a real cluster may have, as the simulated one reproduces them: CRDs that are not
//! installed (discovery leaves the group out, its paths answer a plain-text 404), no snapshot
//! controller, a volume expansion that stops at `FileSystemResizePending`, images that cannot be
//! pulled, failing readiness probes, and Secret data that is not base64.

use std::io::{Read, Write};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::json;

use super::CONVERGE;
use crate::support::{Scenario, SimCluster, SimOptions};

/// A raw HTTP/1.1 GET with the cluster's token: status line, headers and body as text (the
/// cluster must serve plain HTTP: `https: false`).
fn raw_get(cluster: &SimCluster, path: &str) -> String {
    let addr = cluster.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer pgplan-simcluster-token\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_crd_group_left_out_is_not_discovered_and_its_paths_answer_page_not_found() {
    let c = SimCluster::start_with(SimOptions {
        absent_api_groups: vec!["snapshot.storage.k8s.io".into()],
        https: false,
        ..SimOptions::default()
    })
    .unwrap();
    let client = c.client().await;
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert!(
        names.contains(&"apps") && names.contains(&"rhdh.redhat.com"),
        "{names:?}"
    );
    assert!(!names.contains(&"snapshot.storage.k8s.io"), "{names:?}");

    let raw = raw_get(
        &c,
        "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots",
    );
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n\r\n404 page not found\n"), "{raw:?}");

    // Through kube: a 404 whose body is no Status.
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    );
    let status = super::api_status(api.list(&Default::default()).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "404 page not found")
    );

    // A served group's unknown resource is still a JSON Status, as real.
    let raw = raw_get(&c, "/apis/apps/v1/namespaces/default/frobnicators");
    assert!(
        raw.contains("application/json") && raw.contains("\"kind\":\"Status\""),
        "{raw}"
    );
    assert!(c
        .create_json(
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"source": {"persistentVolumeClaimName": "x"}}})
        )
        .is_err());
}

#[test]
fn without_the_crd_the_backstage_scenario_keeps_the_operators_objects_but_no_cr() {
    let c = SimCluster::start_with(SimOptions {
        scenario: Some(Scenario::Backstage),
        absent_api_groups: vec!["rhdh.redhat.com".into()],
        ..SimOptions::default()
    })
    .unwrap();
    use crate::support::sim::scenario::backstage as bs;
    assert!(c.get_json("backstages", bs::NAMESPACE, bs::CR).is_none());
    let sts = c
        .get_json("statefulsets.apps", bs::NAMESPACE, bs::STATEFUL_SET)
        .expect("the StatefulSet stays, without its owner");
    assert!(sts["metadata"]["ownerReferences"].is_null());
}

/// A PVC on `class`, bound and mounted by a pod, for expansion.
fn claim_in_use(c: &SimCluster, class: &str) {
    for o in [
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class},
               "provisioner": "rancher.io/local-path", "allowVolumeExpansion": true}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": "default"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": "busybox",
                         "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    ] {
        c.create_json(o).unwrap();
    }
    c.wait_until(CONVERGE, "the claim is bound", |c| {
        c.get_json("persistentvolumeclaims", "default", "data")
            .is_some_and(|p| p["status"]["phase"] == "Bound")
    });
}

async fn grow(c: &SimCluster) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::{Patch, PatchParams};
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.client().await, "default");
    api.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stalled_class_grows_the_volume_and_leaves_the_claim_at_file_system_resize_pending() {
    let c = SimCluster::start_with(SimOptions {
        stalled_resize_classes: vec!["slow".into()],
        ..SimOptions::default()
    })
    .unwrap();
    claim_in_use(&c, "slow");
    grow(&c).await;
    c.wait_until_async(CONVERGE, "the resize is pending", |c| {
        c.get_json("persistentvolumeclaims", "default", "data")
            .is_some_and(|p| p["status"]["conditions"][0]["type"] == "FileSystemResizePending")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pvc = c
        .get_json("persistentvolumeclaims", "default", "data")
        .unwrap();
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi", "{pvc}");
    assert_eq!(pvc["status"]["allocatedResources"]["storage"], "2Gi");
    assert_eq!(
        pvc["status"]["allocatedResourceStatuses"]["storage"],
        "NodeResizePending"
    );
    let pv = c
        .get_json(
            "persistentvolumes",
            "",
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        pv["spec"]["capacity"]["storage"], "2Gi",
        "the controller side is done"
    );

    // Any other class finishes at once.
    let c = SimCluster::start();
    claim_in_use(&c, "fast");
    grow(&c).await;
    c.wait_until_async(CONVERGE, "the claim has grown", |c| {
        c.get_json("persistentvolumeclaims", "default", "data")
            .is_some_and(|p| p["status"]["capacity"]["storage"] == "2Gi")
    })
    .await;
}

#[tokio::test]
async fn without_a_snapshot_controller_nothing_sets_a_snapshots_status() {
    let c = SimCluster::start_with(SimOptions {
        snapshot_controller: false,
        ..SimOptions::default()
    })
    .unwrap();
    claim_in_use(&c, "fast");
    c.create_json(
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap", "namespace": "default"},
        "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snap = c.get_json("volumesnapshots", "default", "snap").unwrap();
    assert!(
        snap["status"].as_object().is_none_or(|s| s.is_empty()),
        "{snap}"
    );
}

#[tokio::test]
async fn unpullable_images_and_failing_readiness_probes_show_as_a_kubelet_writes_them() {
    let c = SimCluster::start();
    c.faults().unpullable_image("postgres:99");
    c.create_json(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pull", "namespace": "default"},
        "spec": {"containers": [{"name": "db", "image": "postgres:99"}]}}))
        .unwrap();
    c.wait_until_async(CONVERGE, "the pull backs off", |c| {
        c.get::<Pod>("default", "pull").is_some_and(|p| {
            p.status
                .and_then(|s| s.container_statuses)
                .is_some_and(|cs| {
                    cs[0]
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.clone())
                        == Some("ImagePullBackOff".into())
                })
        })
    })
    .await;
    let pod = c.get::<Pod>("default", "pull").unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("Back-off pulling image \"postgres:99\"")
    );
    let events = c.list_json("events", Some("default"));
    assert!(
        events.iter().any(|e| e["message"].as_str().is_some_and(
            |m| m.contains("failed to resolve reference \"docker.io/library/postgres:99\"")
        )),
        "{events:?}"
    );

    c.create_json(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:15",
            "env": [{"name": "POSTGRES_PASSWORD", "value": "pw"}]}]}}))
        .unwrap();
    c.wait_until_async(CONVERGE, "db is ready", |c| c.pod_ready("default", "db"))
        .await;
    c.faults()
        .fail_readiness("default", "db", "/var/run/postgresql:5432 - no response");
    c.wait_until_async(CONVERGE, "db is not ready", |c| {
        !c.pod_ready("default", "db")
    })
    .await;
    let pod = c.get::<Pod>("default", "db").unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.unwrap()[0];
    assert!(!cs.ready && cs.state.as_ref().unwrap().running.is_some());
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_deref(),
            ready.message.as_deref()
        ),
        (
            "False",
            Some("ContainersNotReady"),
            Some("containers with unready status: [postgres]")
        )
    );
    assert!(c
        .list_json("events", Some("default"))
        .iter()
        .any(|e| e["reason"] == "Unhealthy"
            && e["message"] == "Readiness probe failed: /var/run/postgresql:5432 - no response"));
    c.faults().pass_readiness("default", "db");
    c.wait_until_async(CONVERGE, "db is ready again", |c| {
        c.pod_ready("default", "db")
    })
    .await;
}

#[test]
fn secret_data_that_is_not_base64_is_refused_as_a_real_server_does() {
    let c = SimCluster::start();
    let e = c
        .create_json(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"}, "data": {"k": "(sensitive)"}}))
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("illegal base64 data at input byte 0"),
        "{}",
        e.message
    );
    c.create_json(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"}, "data": {"k": "dg=="}}))
        .unwrap();
}
