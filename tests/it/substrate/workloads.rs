//! Controllers: Deployments, StatefulSets (ordered, with PVCs that outlive them), Jobs,
//! deletion propagation and the Backstage operator.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::json;

use super::{from_json, CONVERGE};
use crate::support::sim::scenario::backstage;
use crate::support::{Scenario, SimCluster};

fn app_deployment(name: &str, replicas: i32) -> Deployment {
    from_json(
        json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}}),
    )
}

#[tokio::test]
async fn deployment_runs_replicas_scales_to_zero_and_deletes_its_pods() {
    let c = SimCluster::start();
    let client = c.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    deploys
        .create(&PostParams::default(), &app_deployment("web", 3))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "web has 3 ready replicas", |c| {
        c.get::<Deployment>("default", "web")
            .and_then(|d| d.status?.ready_replicas)
            == Some(3)
    })
    .await;
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    for p in &listed.items {
        let name = p.metadata.name.clone().unwrap();
        let parts: Vec<&str> = name.split('-').collect();
        assert_eq!(parts.len(), 3, "{name} is {{deploy}}-{{hash}}-{{rand5}}");
        assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("web", 10, 5));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    }
    let status = deploys.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            status.replicas,
            status.available_replicas,
            status.updated_replicas
        ),
        (Some(3), Some(3), Some(3))
    );

    let patch = json!({"spec": {"replicas": 0}});
    deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "web's pods are gone", |c| {
        c.list::<Pod>(Some("default")).is_empty()
    })
    .await;
    let status = deploys.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        status.replicas, None,
        "zero counts are omitted, as by the real API"
    );

    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "one pod again", |c| {
        c.pod_names("default", "app=web").len() == 1
    })
    .await;
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "deleting the Deployment deletes its pods", |c| {
        c.list::<Pod>(Some("default")).is_empty()
    })
    .await;
}

/// The annotations of the ReplicaSets named `{deploy}-…` in `default`, by name.
fn replica_set_annotations(
    c: &SimCluster,
    deploy: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    c.list::<ReplicaSet>(Some("default"))
        .into_iter()
        .filter(|r| {
            r.metadata.owner_references.as_ref().is_some_and(|o| {
                o.iter().any(|o| {
                    o.kind == "Deployment" && o.name == deploy && o.controller == Some(true)
                })
            })
        })
        .map(|r| {
            (
                r.metadata.name.unwrap_or_default(),
                r.metadata.annotations.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn deployments_run_their_pods_through_replica_sets_that_keep_copied_annotations() {
    let c = SimCluster::start();
    let client = c.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut d = app_deployment("web", 2);
    d.metadata.annotations = Some(
        [
            ("team".to_string(), "db".to_string()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]
        .into(),
    );
    deploys.create(&PostParams::default(), &d).await.unwrap();
    c.wait_until_async(CONVERGE, "web has 2 ready replicas", |c| {
        c.get::<Deployment>("default", "web")
            .and_then(|d| d.status?.ready_replicas)
            == Some(2)
    })
    .await;
    // Served through the API: one ReplicaSet owning both pods.
    let listed = sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    let rs = &listed[0];
    let rs_name = rs.metadata.name.clone().unwrap();
    let hash = rs.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert_eq!(rs.status.as_ref().unwrap().ready_replicas, Some(2));
    for p in c.list::<Pod>(Some("default")) {
        let owners = p.metadata.owner_references.unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("ReplicaSet", rs_name.as_str())
        );
        assert!(p.metadata.name.unwrap().starts_with(&format!("{rs_name}-")));
    }
    let ann = &replica_set_annotations(&c, "web")[&rs_name];
    assert_eq!(ann.get("team").map(String::as_str), Some("db"));
    assert_eq!(
        ann.get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        ann.get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("2")
    );
    assert!(
        !ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"),
        "skipCopyAnnotation: not copied"
    );
    let revision = deploys
        .get("web")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(revision["deployment.kubernetes.io/revision"], "1");

    // An annotation added to the Deployment reaches the ReplicaSet; removed, it stays there.
    let add =
        json!({"metadata": {"annotations": {"example.com/paused": "3"}}, "spec": {"replicas": 0}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the ReplicaSet has the annotation", |c| {
        replica_set_annotations(c, "web")[&rs_name].contains_key("example.com/paused")
    })
    .await;
    let remove =
        json!({"metadata": {"annotations": {"example.com/paused": null}}, "spec": {"replicas": 2}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "web is back at 2", |c| {
        c.pod_names("default", "app=web").len() == 2 && c.workloads_ready("default")
    })
    .await;
    assert_eq!(
        replica_set_annotations(&c, "web")[&rs_name]
            .get("example.com/paused")
            .map(String::as_str),
        Some("3"),
        "the real controller copies annotations and never removes them"
    );

    // A new template: a second ReplicaSet at revision 2; the old one is scaled to zero and kept.
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the rollout finishes", |c| {
        let sets = c.list::<ReplicaSet>(Some("default"));
        sets.len() == 2
            && sets.iter().all(|r| {
                let want = if r.metadata.name.as_deref() == Some(rs_name.as_str()) {
                    0
                } else {
                    2
                };
                r.spec.as_ref().and_then(|s| s.replicas) == Some(want)
                    && r.status.as_ref().map(|s| s.replicas) == Some(want)
            })
    })
    .await;
    let anns = replica_set_annotations(&c, "web");
    let (new_name, new_ann) = anns.iter().find(|(n, _)| **n != rs_name).unwrap();
    assert_eq!(new_ann["deployment.kubernetes.io/revision"], "2");
    assert!(
        !new_ann.contains_key("example.com/paused"),
        "removed before the new ReplicaSet was made"
    );
    let d = deploys.get("web").await.unwrap();
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    for p in c.list::<Pod>(Some("default")) {
        assert!(p
            .metadata
            .name
            .unwrap()
            .starts_with(&format!("{new_name}-")));
    }
}

#[tokio::test]
async fn statefulset_is_ordered_and_leaves_its_pvcs_behind() {
    let c = SimCluster::start();
    c.create_json(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast"}, "provisioner": "ebs.csi.aws.com"}),
    )
    .unwrap();
    let client = c.client().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let s: StatefulSet = from_json(json!({"metadata": {"name": "db"}, "spec": {
        "serviceName": "db", "replicas": 3, "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
            {"name": "c", "image": "busybox:1.36", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "fast",
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}));
    sets.create(&PostParams::default(), &s).await.unwrap();
    // OrderedReady: whenever ordinal n exists, every lower ordinal is Ready.
    let mut seen_max = 0;
    c.wait_until_async(CONVERGE, "db has 3 ready replicas", |c| {
        for n in 1..3 {
            if c.get::<Pod>("default", &format!("db-{n}")).is_some() {
                for lower in 0..n {
                    assert!(
                        c.pod_ready("default", &format!("db-{lower}")),
                        "db-{n} exists before db-{lower} is Ready"
                    );
                }
                seen_max = seen_max.max(n);
            }
        }
        c.get::<StatefulSet>("default", "db")
            .and_then(|s| s.status?.ready_replicas)
            == Some(3)
    })
    .await;
    assert_eq!(seen_max, 2);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let mut claims: Vec<(String, String)> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap(), p.status.unwrap().phase.unwrap()))
        .collect();
    claims.sort();
    assert_eq!(
        claims,
        [
            ("data-db-0".to_string(), "Bound".to_string()),
            ("data-db-1".into(), "Bound".into()),
            ("data-db-2".into(), "Bound".into()),
        ]
    );
    let pod0 = c.get::<Pod>("default", "db-0").unwrap();
    let vol = &pod0.spec.unwrap().volumes.unwrap()[0];
    assert_eq!(
        vol.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-db-0"
    );
    assert_eq!(
        pod0.metadata.labels.unwrap()["statefulset.kubernetes.io/pod-name"],
        "db-0"
    );

    // Scale down from the highest ordinal.
    sets.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    c.wait_until_async(CONVERGE, "db scaled to 1", |c| {
        c.pod_names("default", "app=db") == ["db-0"]
    })
    .await;

    sets.delete("db", &DeleteParams::default()).await.unwrap();
    c.wait_until_async(CONVERGE, "the StatefulSet's pods are gone", |c| {
        c.list::<Pod>(Some("default")).is_empty() && c.get::<StatefulSet>("default", "db").is_none()
    })
    .await;
    assert_eq!(
        pvcs.list(&ListParams::default()).await.unwrap().items.len(),
        3,
        "PVCs outlive the StatefulSet"
    );
}

#[tokio::test]
async fn job_runs_its_pod_to_completion() {
    let c = SimCluster::start();
    let jobs: Api<Job> = Api::namespaced(c.client().await, "default");
    let j: Job = from_json(
        json!({"metadata": {"name": "backup"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "dump", "image": "postgres:15", "command": ["pg_dump", "--version"]}]}}}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    c.wait_until_async(CONVERGE, "the job succeeded", |c| {
        c.get::<Job>("default", "backup")
            .and_then(|j| j.status?.succeeded)
            == Some(1)
    })
    .await;
    let status = jobs.get("backup").await.unwrap().status.unwrap();
    assert!(status.completion_time.is_some());
    let conditions: Vec<String> = status
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert!(
        conditions.contains(&"Complete".to_string()),
        "{conditions:?}"
    );
    let pods = c.list::<Pod>(Some("default"));
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let invalid: Job = from_json(
        json!({"metadata": {"name": "bad"}, "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    assert_eq!(
        super::api_status(jobs.create(&PostParams::default(), &invalid).await).code,
        422
    );
}

#[tokio::test]
async fn deletion_propagation_background_foreground_and_orphan() {
    let c = SimCluster::start();
    let client = c.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    for name in ["orphaned", "foreground"] {
        deploys
            .create(&PostParams::default(), &app_deployment(name, 1))
            .await
            .unwrap();
    }
    c.wait_until_async(CONVERGE, "two pods", |c| {
        c.list::<Pod>(Some("default")).len() == 2
    })
    .await;
    deploys
        .delete("orphaned", &DeleteParams::orphan())
        .await
        .unwrap();
    let gone = deploys
        .delete("foreground", &DeleteParams::foreground())
        .await
        .unwrap();
    let held = gone
        .left()
        .expect("foreground deletion returns the object being deleted");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    c.wait_until_async(
        CONVERGE,
        "the foreground owner waits for its pod, then goes",
        |c| {
            c.get::<Deployment>("default", "foreground").is_none()
                && c.pod_names("default", "app=foreground").is_empty()
        },
    )
    .await;
    let orphans = c.pod_names("default", "app=orphaned");
    assert_eq!(orphans.len(), 1, "an orphaned pod stays");
    // Orphaning releases the Deployment's dependents, its ReplicaSet; the pod stays the
    // ReplicaSet's.
    let sets = c.list::<ReplicaSet>(Some("default"));
    let rs = sets
        .iter()
        .find(|r| {
            r.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("orphaned-")
        })
        .expect("the orphaned Deployment's ReplicaSet stays");
    assert!(rs
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .is_empty());
    let pod = c.get::<Pod>("default", &orphans[0]).unwrap();
    let owners = pod.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), Some(&owners[0].name)),
        ("ReplicaSet", rs.metadata.name.as_ref())
    );
    assert!(
        !sets.iter().any(|r| r
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("foreground-")),
        "the foreground owner's ReplicaSet went before it"
    );
}

#[test]
fn backstage_operator_drops_the_local_database_but_keeps_its_pvc() {
    let c = SimCluster::with_scenario(Scenario::Backstage);
    let ns = backstage::NAMESPACE;
    assert!(c.get::<StatefulSet>(ns, backstage::STATEFUL_SET).is_some());
    let pvc = c
        .get::<PersistentVolumeClaim>(ns, backstage::PVC)
        .expect("the dynamically provisioned PVC");
    let pv_name = pvc.spec.unwrap().volume_name.unwrap();
    assert!(pv_name.starts_with("pvc-"), "{pv_name}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rhdh.redhat.com", "v1alpha3", "Backstage"),
            "backstages",
        );
        let crs: Api<DynamicObject> = Api::namespaced_with(c.client().await, ns, &ar);
        // A JSON merge patch on the CR.
        let patch = json!({"spec": {"database": {"enableLocalDb": false}}});
        let cr = crs
            .patch(
                backstage::CR,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        assert_eq!(
            cr.data["spec"]["application"]["replicas"], 1,
            "the rest of the spec stays"
        );
        // A JSON patch (RFC 6902), sent raw; strategic merge is refused as for any custom resource.
        let client = c.client().await;
        let path = format!(
            "/apis/rhdh.redhat.com/v1alpha3/namespaces/{ns}/backstages/{}",
            backstage::CR
        );
        let ops = json!([{"op": "add", "path": "/spec/application/extraEnvs",
                          "value": {"secrets": [{"name": "external-db"}]}}]);
        let req = http::Request::patch(&path)
            .header("Content-Type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap();
        let cr: serde_json::Value = client.request(req).await.unwrap();
        assert_eq!(
            cr["spec"]["application"]["extraEnvs"]["secrets"][0]["name"],
            "external-db"
        );
        let smp = crs
            .patch(
                backstage::CR,
                &PatchParams::default(),
                &Patch::Strategic(&json!({"spec": {}})),
            )
            .await;
        assert_eq!(super::api_status(smp).code, 415);
    });
    c.wait_until(CONVERGE, "the operator deleted the local DB", |c| {
        c.get::<StatefulSet>(ns, backstage::STATEFUL_SET).is_none()
            && c.get::<Pod>(ns, backstage::POD).is_none()
    });
    let pvc = c
        .get::<PersistentVolumeClaim>(ns, backstage::PVC)
        .expect("the PVC is retained");
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    assert!(
        c.get::<Deployment>(ns, backstage::APP_DEPLOYMENT).is_some(),
        "the app stays"
    );

    // Turned on again, the operator recreates the database on its old claim.
    let marker = "select count(*) from pg_database where datname like 'backstage_plugin_%'";
    rt.block_on(async {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rhdh.redhat.com", "v1alpha3", "Backstage"),
            "backstages",
        );
        let crs: Api<DynamicObject> = Api::namespaced_with(c.client().await, ns, &ar);
        crs.patch(
            backstage::CR,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"database": {"enableLocalDb": true}}})),
        )
        .await
        .unwrap();
    });
    c.wait_until(CONVERGE, "the operator recreated the local DB", |c| {
        c.pod_ready(ns, backstage::POD)
    });
    assert_eq!(
        c.psql(ns, backstage::POD, "postgres", marker).trim(),
        backstage::DATABASES.len().to_string(),
        "the data on the retained claim"
    );
}
