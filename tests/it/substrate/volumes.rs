//! Persistent volumes: static binding with node affinity, unbound claims keeping pods Pending,
//! reclaim policies, protection finalizers and expansion.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::{api_status, from_json, CONVERGE};
use crate::support::SimCluster;

fn local_pv(name: &str, node: &str, path: &str, reclaim: &str) -> PersistentVolume {
    from_json(json!({"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
        "storageClassName": "local-path", "persistentVolumeReclaimPolicy": reclaim,
        "local": {"path": path},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}))
}

fn claim(name: &str, class: &str, size: &str) -> PersistentVolumeClaim {
    from_json(
        json!({"metadata": {"name": name}, "spec": {"storageClassName": class,
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}),
    )
}

fn pod_with_claim(name: &str, claim: &str) -> Pod {
    from_json(json!({"metadata": {"name": name}, "spec": {
        "containers": [{"name": "c", "image": "busybox:1.36",
            "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}))
}

fn no_provisioner(c: &SimCluster) {
    c.create_json(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path"}, "provisioner": "kubernetes.io/no-provisioner"}),
    )
    .unwrap();
}

#[tokio::test]
async fn static_pv_with_node_affinity_binds_and_places_the_pod() {
    let c = SimCluster::start();
    no_provisioner(&c);
    let client = c.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // A smaller PV on node1 does not fit; the 5Gi one on node2 does.
    let mut small = local_pv("small", "node1", "/data/small", "Retain");
    small.spec.as_mut().unwrap().capacity = Some(
        [(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        )]
        .into(),
    );
    pvs.create(&PostParams::default(), &small).await.unwrap();
    pvs.create(
        &PostParams::default(),
        &local_pv("postgres-pv-0", "node2", "/data/postgres", "Retain"),
    )
    .await
    .unwrap();
    pvcs.create(
        &PostParams::default(),
        &claim("postgres-storage-postgres-0", "local-path", "5Gi"),
    )
    .await
    .unwrap();
    c.wait_until_async(CONVERGE, "the claim is bound", |c| {
        c.get::<PersistentVolumeClaim>("default", "postgres-storage-postgres-0")
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;
    let pvc = pvcs.get("postgres-storage-postgres-0").await.unwrap();
    assert_eq!(
        pvc.spec.unwrap().volume_name.as_deref(),
        Some("postgres-pv-0")
    );
    let pv = pvs.get("postgres-pv-0").await.unwrap();
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("postgres-storage-postgres-0")
    );
    assert_eq!(
        pvs.get("small")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Available")
    );

    pods.create(
        &PostParams::default(),
        &pod_with_claim("user", "postgres-storage-postgres-0"),
    )
    .await
    .unwrap();
    c.wait_until_async(CONVERGE, "the pod runs", |c| c.pod_ready("default", "user"))
        .await;
    let pod = pods.get("user").await.unwrap();
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some("node2"),
        "scheduled by the PV's node affinity"
    );
}

#[tokio::test]
async fn an_unbound_claim_keeps_its_pod_pending() {
    let c = SimCluster::start();
    no_provisioner(&c);
    let client = c.client().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pvcs.create(
        &PostParams::default(),
        &claim("orphan", "local-path", "5Gi"),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod_with_claim("waiting", "orphan"))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the scheduler gave up on the pod", |c| {
        c.get::<Pod>("default", "waiting").is_some_and(|p| {
            p.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|cond| {
                    cond.type_ == "PodScheduled"
                        && cond.status == "False"
                        && cond.reason.as_deref() == Some("Unschedulable")
                })
        })
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pod = pods.get("waiting").await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(pod.spec.unwrap().node_name.is_none());
    let message = pod.status.unwrap().conditions.unwrap()[0]
        .message
        .clone()
        .unwrap();
    assert!(
        message.contains("unbound immediate PersistentVolumeClaims"),
        "{message}"
    );
    assert_eq!(
        pvcs.get("orphan")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Pending")
    );

    // A claim held unbound by fault injection, although a PV fits, binds once released.
    c.faults().keep_pvc_unbound("default", "orphan");
    let pvs: Api<PersistentVolume> = Api::all(c.client().await);
    pvs.create(
        &PostParams::default(),
        &local_pv("late", "node1", "/data/late", "Retain"),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        pvcs.get("orphan")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Pending")
    );
    c.faults().release_pvc("default", "orphan");
    c.wait_until_async(CONVERGE, "the pod runs once its claim binds", |c| {
        c.pod_ready("default", "waiting")
    })
    .await;
}

#[tokio::test]
async fn reclaim_policies_and_protection() {
    let c = SimCluster::start();
    no_provisioner(&c);
    let client = c.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pvs.create(
        &PostParams::default(),
        &local_pv("keep", "node1", "/data/keep", "Delete"),
    )
    .await
    .unwrap();
    pvs.create(
        &PostParams::default(),
        &local_pv("drop", "node1", "/data/drop", "Delete"),
    )
    .await
    .unwrap();
    let mut k = claim("keep-claim", "local-path", "5Gi");
    k.spec.as_mut().unwrap().volume_name = Some("keep".into());
    let mut d = claim("drop-claim", "local-path", "5Gi");
    d.spec.as_mut().unwrap().volume_name = Some("drop".into());
    pvcs.create(&PostParams::default(), &k).await.unwrap();
    pvcs.create(&PostParams::default(), &d).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod_with_claim("user", "drop-claim"),
    )
    .await
    .unwrap();
    c.wait_until_async(CONVERGE, "both bound and the pod running", |c| {
        c.pod_ready("default", "user")
            && c.get::<PersistentVolume>("", "keep")
                .and_then(|p| p.status?.phase)
                .as_deref()
                == Some("Bound")
    })
    .await;
    let dir = c.pv_dir("drop").unwrap();
    assert!(
        dir.exists(),
        "the pod's volume directory exists on the node"
    );

    // Protect one volume before its claim goes.
    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    pvs.patch("keep", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pvcs.delete("keep-claim", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the retained PV is Released", |c| {
        c.get::<PersistentVolume>("", "keep")
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Released")
    })
    .await;
    // Reattaching (a rollback): point the Released volume at a new claim, which then binds.
    let retarget =
        json!({"spec": {"claimRef": {"name": "reattach", "uid": null, "resourceVersion": null}}});
    pvs.patch("keep", &PatchParams::default(), &Patch::Merge(&retarget))
        .await
        .unwrap();
    let mut again = claim("reattach", "local-path", "5Gi");
    again.spec.as_mut().unwrap().volume_name = Some("keep".into());
    pvcs.create(&PostParams::default(), &again).await.unwrap();
    c.wait_until_async(CONVERGE, "the retained PV is bound to the new claim", |c| {
        c.get::<PersistentVolumeClaim>("default", "reattach")
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;

    // A claim in use is protected until its pod goes.
    let pending = pvcs
        .delete("drop-claim", &DeleteParams::default())
        .await
        .unwrap();
    let pending = pending.left().expect("the claim is held by its finalizer");
    assert!(pending.metadata.deletion_timestamp.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        pvcs.get_opt("drop-claim").await.unwrap().is_some(),
        "pvc-protection holds it while in use"
    );
    pods.delete(
        "user",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    c.wait_until_async(CONVERGE, "the Delete PV and its directory are gone", |c| {
        c.get::<PersistentVolume>("", "drop").is_none()
            && c.get::<PersistentVolumeClaim>("default", "drop-claim")
                .is_none()
    })
    .await;
    assert!(!dir.exists(), "reclaim Delete removed {}", dir.display());
    assert!(c.get::<PersistentVolume>("", "keep").is_some());
}

#[tokio::test]
async fn claims_expand_only_where_the_class_allows() {
    let c = SimCluster::start();
    for (name, expand) in [("rigid", false), ("elastic", true)] {
        c.create_json(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "ebs.csi.aws.com", "allowVolumeExpansion": expand}))
            .unwrap();
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client().await, "default");
    for class in ["rigid", "elastic"] {
        pvcs.create(&PostParams::default(), &claim(class, class, "1Gi"))
            .await
            .unwrap();
    }
    c.wait_until_async(CONVERGE, "both provisioned and bound", |c| {
        ["rigid", "elastic"].iter().all(|n| {
            c.get::<PersistentVolumeClaim>("default", n)
                .and_then(|p| p.status?.phase)
                .as_deref()
                == Some("Bound")
        })
    })
    .await;
    let grow = json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}});
    let refused = api_status(
        pvcs.patch("rigid", &PatchParams::default(), &Patch::Merge(&grow))
            .await,
    );
    assert_eq!(refused.code, 403);
    pvcs.patch("elastic", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the claim grew", |c| {
        c.get::<PersistentVolumeClaim>("default", "elastic")
            .and_then(|p| p.status?.capacity)
            .is_some_and(|cap| cap["storage"].0 == "3Gi")
    })
    .await;
    let shrink = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(
        api_status(
            pvcs.patch("elastic", &PatchParams::default(), &Patch::Merge(&shrink))
                .await
        )
        .code,
        422
    );
}

/// Seed 003's day-2 snapshot: a VolumeSnapshot of a live database's claim, restored into a new
/// claim that a second postgres pod starts from (crash recovery included).
#[tokio::test]
async fn a_volume_snapshot_restores_into_a_new_claim() {
    use crate::support::sim::scenario::healthcare;
    let c = crate::support::SimCluster::with_scenario(crate::support::Scenario::Healthcare);
    c.create_json(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "csi"}, "provisioner": "ebs.csi.aws.com"}),
    )
    .unwrap();
    let client = c.client().await;
    let snaps: Api<kube::core::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
            "volumesnapshots",
        ),
    );
    let snap: kube::core::DynamicObject =
        from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot", "metadata": {"name": "nightly"},
        "spec": {"source": {"persistentVolumeClaimName": healthcare::PVC}}}));
    snaps.create(&PostParams::default(), &snap).await.unwrap();
    c.wait_until_async(CONVERGE, "the snapshot is ready", |c| {
        c.get_json("volumesnapshots", "default", "nightly")
            .is_some_and(|s| s["status"]["readyToUse"] == true)
    })
    .await;
    let restored: PersistentVolumeClaim = from_json(
        json!({"metadata": {"name": "restored"}, "spec": {
        "storageClassName": "csi", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "nightly"}}}),
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    pvcs.create(&PostParams::default(), &restored)
        .await
        .unwrap();
    let pod: Pod = from_json(
        json!({"metadata": {"name": "restore-check"}, "spec": {"containers": [
        {"name": "postgres", "image": "postgres:15",
         "env": [{"name": "POSTGRES_USER", "value": healthcare::USER}, {"name": "POSTGRES_PASSWORD", "value": "x"}],
         "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "restored"}}]}}),
    );
    Api::<Pod>::namespaced(client, "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the restored database runs", |c| {
        c.pod_ready("default", "restore-check")
    })
    .await;
    let names = c.query(
        "default",
        "restore-check",
        healthcare::DATABASE,
        "SELECT name FROM patients ORDER BY registered_at",
    );
    let names: Vec<&str> = names.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, healthcare::PATIENTS);
}
