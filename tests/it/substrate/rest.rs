//! REST semantics: discovery, CRUD, selectors, resourceVersion conflicts, 422 validation and
//! immutable fields, dry-run, patches, subresources, watch, errors as Status, request log,
//! faults and authentication.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::json;

use super::{api_status, from_json, CONVERGE};
use crate::support::SimCluster;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    from_json(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": name}}))
}

fn sts(name: &str, app: &str) -> StatefulSet {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"serviceName": name, "replicas": 0, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
}

#[tokio::test]
async fn discovery_and_version_serve_kube() {
    let c = SimCluster::start();
    let client = c.client().await;
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "33"));
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for group in [
        "apps",
        "batch",
        "storage.k8s.io",
        "coordination.k8s.io",
        "snapshot.storage.k8s.io",
        "rhdh.redhat.com",
    ] {
        assert!(discovery.has_group(group), "group {group} discovered");
    }
    let gvk = GroupVersionKind::gvk("rhdh.redhat.com", "v1alpha3", "Backstage");
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .expect("Backstage is discoverable");
    assert_eq!(ar.plural, "backstages");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let (_, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "StatefulSet"))
        .expect("StatefulSet is discoverable");
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "scale"));
}

#[tokio::test]
async fn list_with_label_field_selectors_and_pages() {
    let c = SimCluster::start();
    let cms: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    let pp = PostParams::default();
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "front")]),
        ("b", vec![("app", "db")]),
        ("c", vec![("app", "cache"), ("tier", "back")]),
        ("d", vec![]),
    ] {
        cms.create(&pp, &cm(name, &labels)).await.expect("create");
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect()
    };
    let by = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(
        names(cms.list(&by("app in (web,db)")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(cms.list(&by("app notin (web,db)")).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(names(cms.list(&by("!tier")).await.unwrap()), ["b", "d"]);
    assert_eq!(
        names(cms.list(&by("tier,app!=cache")).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    let bad = api_status(cms.list(&by("app in web")).await);
    assert_eq!(bad.code, 400);
    // Pagination, as kube's paginated lists use it.
    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(names(first), ["a", "b", "c"]);
    let rest = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["d"]);
}

#[tokio::test]
async fn conflicts_on_stale_resource_version_and_existing_names() {
    let c = SimCluster::start();
    let cms: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    let created = cms
        .create(&PostParams::default(), &cm("conf", &[]))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let dup = api_status(cms.create(&PostParams::default(), &cm("conf", &[])).await);
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"conf\" already exists");

    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = cms
        .replace("conf", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion increases ({rv1} -> {rv2})");

    // Replacing with the first resourceVersion again is stale.
    let mut stale = created;
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    let conflict = api_status(cms.replace("conf", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );
    // So is a merge patch carrying it.
    let patch = json!({"metadata": {"resourceVersion": rv1.to_string()}, "data": {"k": "v4"}});
    let conflict = api_status(
        cms.patch("conf", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(conflict.code, 409);
    assert_eq!(cms.get("conf").await.unwrap().data.unwrap()["k"], "v2");
}

#[tokio::test]
async fn invalid_objects_and_immutable_fields_are_422() {
    let c = SimCluster::start();
    let client = c.client().await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let bad_name = api_status(cms.create(&pp, &cm("Not_A_DNS_Name", &[])).await);
    assert_eq!((bad_name.code, bad_name.reason.as_str()), (422, "Invalid"));
    let cause = &bad_name.details.as_ref().unwrap().causes[0];
    assert_eq!(cause.field, "metadata.name");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let no_containers: Pod =
        from_json(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
    let missing = api_status(pods.create(&pp, &no_containers).await);
    assert_eq!(missing.code, 422);
    assert!(
        missing.message.contains("spec.containers: Required value"),
        "{}",
        missing.message
    );

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sets.create(&pp, &sts("web", "web")).await.unwrap();
    // The controller writes status right after create; replace what it settled on.
    c.wait_until_async(CONVERGE, "the controller observed web", |c| {
        c.get::<StatefulSet>("default", "web")
            .and_then(|s| s.status?.observed_generation)
            == Some(1)
    })
    .await;
    let mut changed = sets.get("web").await.unwrap();
    let spec = changed.spec.as_mut().unwrap();
    spec.selector.match_labels = Some([("app".to_string(), "other".to_string())].into());
    spec.template.metadata.as_mut().unwrap().labels =
        Some([("app".to_string(), "other".to_string())].into());
    let sel = api_status(sets.replace("web", &pp, &changed).await);
    assert_eq!((sel.code, sel.reason.as_str()), (422, "Invalid"));
    assert!(
        sel.message.starts_with(
            "StatefulSet.apps \"web\" is invalid: spec: Forbidden: updates to statefulset spec"
        ),
        "{}",
        sel.message
    );
    let patch = json!({"spec": {"serviceName": "elsewhere"}});
    let svc = api_status(
        sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(svc.code, 422);
    let patch = json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}]}});
    let vct = api_status(
        sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(vct.code, 422);
    // Replicas stay mutable.
    let patch = json!({"spec": {"replicas": 0, "updateStrategy": {"type": "OnDelete"}}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("mutable fields");

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = from_json(json!({"metadata": {"name": "pv1"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/a"}}}));
    pvs.create(&pp, &pv).await.unwrap();
    let patch = json!({"spec": {"hostPath": {"path": "/b"}}});
    let src = api_status(
        pvs.patch("pv1", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(src.code, 422);
    assert!(
        src.message
            .contains("spec.persistentvolumesource is immutable"),
        "{}",
        src.message
    );
    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}});
    let pv = pvs
        .patch("pv1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let local_without_affinity: PersistentVolume = from_json(
        json!({"metadata": {"name": "pv2"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/a"}}}),
    );
    assert_eq!(
        api_status(pvs.create(&pp, &local_without_affinity).await).code,
        422
    );

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let pvc: PersistentVolumeClaim = from_json(json!({"metadata": {"name": "claim"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}));
    pvcs.create(&pp, &pvc).await.unwrap();
    let patch = json!({"spec": {"accessModes": ["ReadWriteMany"]}});
    let immut = api_status(
        pvcs.patch("claim", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(immut.code, 422);
    assert!(
        immut.message.contains("spec is immutable after creation"),
        "{}",
        immut.message
    );
}

#[tokio::test]
async fn dry_run_validates_and_persists_nothing() {
    let c = SimCluster::start();
    let client = c.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let before = c.requests().all().len();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let echoed = cms
        .create(&dry, &cm("ghost", &[]))
        .await
        .expect("dry-run create succeeds");
    assert_eq!(echoed.metadata.name.as_deref(), Some("ghost"));
    assert_eq!(api_status(cms.get("ghost").await).code, 404);
    assert!(cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let invalid = api_status(cms.create(&dry, &cm("Bad_Name", &[])).await);
    assert_eq!(invalid.code, 422, "dry-run still validates");

    let real = cms
        .create(&PostParams::default(), &cm("real", &[]))
        .await
        .unwrap();
    let patch = json!({"data": {"k": "changed"}});
    let patched = cms
        .patch(
            "real",
            &PatchParams::default().dry_run(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "changed");
    let stored = cms.get("real").await.unwrap();
    assert_eq!(stored.data.as_ref().unwrap()["k"], "real");
    assert_eq!(
        stored.metadata.resource_version,
        real.metadata.resource_version
    );
    cms.delete("real", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert!(
        cms.get("real").await.is_ok(),
        "dry-run delete keeps the object"
    );
    let dry_logged = c.requests().all()[before..]
        .iter()
        .filter(|r| r.dry_run)
        .count();
    assert_eq!(dry_logged, 4);
}

#[tokio::test]
async fn patches_merge_strategic_json_and_apply() {
    let c = SimCluster::start();
    let client = c.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = from_json(json!({"metadata": {"name": "app"}, "spec": {"replicas": 0,
        "selector": {"matchLabels": {"app": "app"}},
        "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "side:1"}]}}}}));
    deploys.create(&PostParams::default(), &d).await.unwrap();
    // Strategic merge: containers and env merge by name.
    let smp = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}]}}}});
    let d = deploys
        .patch("app", &PatchParams::default(), &Patch::Strategic(&smp))
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers.len(),
        2,
        "the sidecar survives a strategic merge"
    );
    let env: Vec<(String, String)> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(
        env,
        [
            ("A".into(), "1".into()),
            ("B".into(), "two".into()),
            ("C".into(), "3".into())
        ]
    );
    // Merge patch replaces lists wholesale.
    let mp = json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "only:1"}]}}}});
    let d = deploys
        .patch("app", &PatchParams::default(), &Patch::Merge(&mp))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().template.spec.unwrap().containers.len(), 1);
    let generation = deploys
        .get("app")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    assert_eq!(generation, 3, "every spec change bumps the generation");

    // JSON patch (RFC 6902), sent raw: a failing test op is refused.
    let json_patch = |ops: serde_json::Value| {
        http::Request::patch("/apis/apps/v1/namespaces/default/deployments/app")
            .header("Content-Type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let d: Deployment = client
        .request(json_patch(json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 2},
            {"op": "add", "path": "/metadata/labels", "value": {"team": "data"}}])))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let failed = api_status(
        client
            .request::<Deployment>(json_patch(json!([
        {"op": "test", "path": "/spec/replicas", "value": 7}])))
            .await,
    );
    assert_eq!(failed.code, 422);

    // Server-side apply, approximated as a merge, creates what is missing.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}});
    let pp = PatchParams::apply("pgplan-test");
    cms.patch("applied", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    let again = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"y": "2"}});
    let cm = cms
        .patch("applied", &pp, &Patch::Apply(&again))
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap().len(), 2);
}

#[tokio::test]
async fn scale_and_status_subresources() {
    let c = SimCluster::start();
    let client = c.client().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &sts("web", "web"))
        .await
        .unwrap();
    let scale = sets.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(0));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let patch = json!({"spec": {"replicas": 3}});
    let scaled = sets
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
    assert_eq!(
        sets.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
    assert_eq!(c.requests().count("patch", "statefulsets/scale"), 1);

    // A custom resource's status is written only through /status.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rhdh.redhat.com", "v1alpha3", "Backstage"),
        "backstages",
    );
    let crs: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let cr: DynamicObject = from_json(
        json!({"apiVersion": "rhdh.redhat.com/v1alpha3", "kind": "Backstage",
        "metadata": {"name": "hub"}, "spec": {"database": {"enableLocalDb": true}},
        "status": {"ignored": true}}),
    );
    let created = crs.create(&PostParams::default(), &cr).await.unwrap();
    assert!(created
        .data
        .get("status")
        .is_none_or(|s| s.get("ignored").is_none()));
    let status = json!({"status": {"conditions": [{"type": "Deployed", "status": "True"}]}});
    crs.patch_status("hub", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let spec_via_status = json!({"spec": {"database": {"enableLocalDb": false}}});
    crs.patch_status(
        "hub",
        &PatchParams::default(),
        &Patch::Merge(&spec_via_status),
    )
    .await
    .unwrap();
    let got = crs.get("hub").await.unwrap();
    assert_eq!(got.data["status"]["conditions"][0]["type"], "Deployed");
    assert_eq!(
        got.data["spec"]["database"]["enableLocalDb"], true,
        "status writes leave spec alone"
    );
}

#[tokio::test]
async fn watch_streams_changes_in_resource_version_order() {
    let c = SimCluster::start();
    let cms: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("watched=yes").timeout(20);
    let stream = cms.watch(&wp, &start).await.unwrap();
    cms.create(&PostParams::default(), &cm("w", &[("watched", "yes")]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("ignored", &[]))
        .await
        .unwrap();
    let patch = json!({"data": {"k": "changed"}});
    cms.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = stream
        .try_filter(|e| futures::future::ready(!matches!(e, WatchEvent::Bookmark(_))))
        .take(3)
        .try_collect()
        .await
        .unwrap();
    let mut last = 0u64;
    let mut kinds = Vec::new();
    for e in events {
        let (kind, o) = match e {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(o.metadata.name.as_deref(), Some("w"));
        let rv: u64 = o.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > last);
        last = rv;
        kinds.push(kind);
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn errors_are_status_objects_and_requests_are_logged() {
    let c = SimCluster::start();
    let client = c.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let missing = api_status(secrets.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "secrets \"nope\" not found");
    assert_eq!(missing.details.unwrap().name, "nope");
    let other_ns: Api<Secret> = Api::namespaced(client.clone(), "missing-ns");
    let s: Secret = from_json(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}));
    assert_eq!(
        api_status(other_ns.create(&PostParams::default(), &s).await).code,
        404
    );
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(
        created.data.unwrap()["a"].0,
        b"b",
        "stringData is folded into data"
    );
    assert_eq!(c.requests().count("get", "secrets"), 1);
    assert_eq!(c.requests().count("create", "secrets"), 2);
    let codes: Vec<u16> = c.requests().all().iter().map(|r| r.code).collect();
    assert_eq!(codes, [404, 404, 201]);

    // Without the kubeconfig's token the server answers 401.
    let mut config = kube::Config::new(c.url().parse().unwrap());
    config.default_namespace = "default".into();
    config.root_cert = c.ca_der().map(|ca| vec![ca.to_vec()]);
    let anonymous = kube::Client::try_from(config).unwrap();
    let denied = api_status(
        Api::<Secret>::namespaced(anonymous, "default")
            .get("s")
            .await,
    );
    assert_eq!(denied.code, 401);
}

#[tokio::test]
async fn injected_faults_fail_the_nth_matching_request() {
    let c = SimCluster::start();
    let cms: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    cms.create(&PostParams::default(), &cm("f", &[]))
        .await
        .unwrap();
    let fault = c.faults().fail_nth_with(
        "patch",
        "configmaps",
        2,
        1,
        500,
        "etcdserver: request timed out",
    );
    let patch = json!({"data": {"k": "1"}});
    cms.patch("f", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("1st patch passes");
    let failed = api_status(
        cms.patch("f", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (500, "InternalError")
    );
    assert_eq!(failed.message, "etcdserver: request timed out");
    cms.patch("f", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("3rd patch passes");
    assert_eq!(c.faults().fired(fault), 1);
    // kube retries 429/503/504 by itself: a single 503 is invisible to the caller but not to
    // the request log.
    c.requests().clear();
    let retried = c.faults().fail_nth("get", "configmaps", 1, 503);
    cms.get("f").await.expect("kube retried the 503");
    assert_eq!(c.faults().fired(retried), 1);
    let codes: Vec<u16> = c.requests().all().iter().map(|r| r.code).collect();
    assert_eq!(codes, [503, 200]);
    c.faults().add_latency(
        Some("get"),
        Some("configmaps"),
        std::time::Duration::from_millis(300),
    );
    let t = std::time::Instant::now();
    cms.get("f").await.unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
}

/// What pgplan's apply lock needs from Leases: one creator wins, a stale holder loses.
#[tokio::test]
async fn leases_admit_one_holder() {
    use k8s_openapi::api::coordination::v1::Lease;
    let c = SimCluster::start();
    let leases: Api<Lease> = Api::namespaced(c.client().await, "default");
    let lease = |holder: &str| -> Lease {
        from_json(json!({"metadata": {"name": "pgplan-lock-healthcare"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60}}))
    };
    let mine = leases
        .create(&PostParams::default(), &lease("apply-1"))
        .await
        .unwrap();
    let theirs = api_status(
        leases
            .create(&PostParams::default(), &lease("apply-2"))
            .await,
    );
    assert_eq!(
        (theirs.code, theirs.reason.as_str()),
        (409, "AlreadyExists")
    );
    let mut renewed = mine.clone();
    renewed.spec.as_mut().unwrap().lease_transitions = Some(1);
    leases
        .replace("pgplan-lock-healthcare", &PostParams::default(), &renewed)
        .await
        .unwrap();
    let mut stale = mine;
    stale.spec.as_mut().unwrap().holder_identity = Some("apply-2".into());
    let lost = api_status(
        leases
            .replace("pgplan-lock-healthcare", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(lost.code, 409);
    let held = leases.get("pgplan-lock-healthcare").await.unwrap();
    assert_eq!(
        held.spec.unwrap().holder_identity.as_deref(),
        Some("apply-1")
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    use k8s_openapi::api::core::v1::Namespace;
    let c = SimCluster::start();
    let client = c.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "scratch"}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    // A finalizer holds the ConfigMap, and so the namespace, in Terminating until the test lets
    // go: the refused create below then never races the namespace controller.
    let mut inside = cm("inside", &[]);
    inside.metadata.finalizers = Some(vec!["test.pgplan.dev/hold".into()]);
    cms.create(&PostParams::default(), &inside).await.unwrap();
    let deleting = namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        deleting.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let refused = api_status(cms.create(&PostParams::default(), &cm("late", &[])).await);
    assert_eq!(refused.code, 403);
    c.wait_until_async(CONVERGE, "the held ConfigMap is marked for deletion", |c| {
        c.get::<ConfigMap>("scratch", "inside")
            .is_some_and(|m| m.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert!(
        c.get::<Namespace>("", "scratch").is_some(),
        "a namespace whose contents are not gone yet stays"
    );
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("inside", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    c.wait_until_async(CONVERGE, "the namespace and its contents are gone", |c| {
        c.get::<Namespace>("", "scratch").is_none()
    })
    .await;
    assert!(c.get::<ConfigMap>("scratch", "inside").is_none());
}
