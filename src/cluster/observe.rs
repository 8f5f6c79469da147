//! Reading what a placement's plan depends on, with a fixed number of API
//! requests however many unrelated objects share the namespace: objects
//! the spec names are fetched by name, the few collections the planner
//! scans (Services of a namespace, StorageClasses, PersistentVolumes,
//! VolumeSnapshots when the cluster serves them) with one list each, and
//! independent reads run concurrently. Kinds the cluster does not serve are
//! not read; the planner reports them against the spec field that needs them.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::{join_all, try_join_all};
use serde_json::Value;

use super::{builtin_api_version, Cluster, ClusterError};
use crate::observed::{at, keys_only, str_at, ObjectKey};
use crate::plan::ObjectRef;
use crate::spec::{Placement, Source, Target};

/// What one placement's plan may read: objects, and the namespaces the spec
/// names that do not exist.
#[derive(Debug, Default)]
pub struct Reads {
    pub objects: Vec<Value>,
    pub missing_namespaces: Vec<String>,
}

/// Every object the plan of `p` may read.
pub async fn placement(cluster: &Cluster, p: &Placement) -> Result<Reads, ClusterError> {
    let spec = p.spec();
    let src = match &spec.source {
        Source::Kubernetes(k) => Some(k),
        Source::External(_) => None,
    };
    let src_ns = src
        .map(|k| k.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let kube_target = match &spec.target {
        Target::Kubernetes(k) => Some(k),
        Target::Rds(_) => None,
    };
    let tgt_ns = kube_target
        .and_then(|k| k.namespace.clone())
        .unwrap_or_else(|| src_ns.clone());

    // Named objects.
    let mut named: Vec<ObjectRef> = Vec::new();
    if let Some(k) = kube_target {
        let sts = &k.stateful_set;
        named.push(ObjectRef::new("apps/v1", "StatefulSet", &tgt_ns, &sts.name));
        named.push(ObjectRef::new(
            "v1",
            "Service",
            &tgt_ns,
            sts.service_name.as_deref().unwrap_or(&sts.name),
        ));
        named.push(ObjectRef::new(
            "batch/v1",
            "CronJob",
            &tgt_ns,
            &format!("{}-backup", sts.name),
        ));
        named.push(ObjectRef::new(
            "v1",
            "PersistentVolumeClaim",
            &tgt_ns,
            &format!("{}-backup", sts.name),
        ));
    }
    for c in &spec.consumers {
        let ns = c.namespace.clone().unwrap_or_else(|| src_ns.clone());
        let av = c
            .api_version
            .clone()
            .or_else(|| builtin_api_version(&c.kind).map(str::to_string))
            .unwrap_or_else(|| "apps/v1".into());
        named.push(ObjectRef::new(&av, &c.kind, &ns, &c.name));
        if let Some(r) = &c.reconfigure {
            if let Some(s) = &r.connection_secret {
                named.push(ObjectRef::new("v1", "Secret", &ns, s));
            }
            if let Some(ca) = &r.ca_secret {
                named.push(ObjectRef::new("v1", "Secret", &ns, &ca.name));
            }
        }
    }
    let source_by_name = src.and_then(|k| {
        k.workload
            .name
            .as_ref()
            .map(|n| ObjectRef::new("apps/v1", k.workload.kind.as_str(), &k.namespace, n))
    });
    named.extend(source_by_name.clone());

    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    namespaces.insert(src_ns.clone());
    namespaces.insert(tgt_ns.clone());
    // Whether each namespace exists, so that "not found" can say why; a
    // namespace pgplan may not read (403) is simply not known.
    let namespace_refs: Vec<ObjectRef> = namespaces
        .iter()
        .map(|ns| ObjectRef::new("v1", "Namespace", "", ns))
        .collect();
    let namespace_checks = join_all(namespace_refs.iter().map(|r| cluster.get(r)));

    let gets = join_all(named.iter().map(|r| cluster.get(r)));
    let services = try_join_all(
        namespaces
            .iter()
            .map(|ns| cluster.list("v1", "Service", ns, None)),
    );
    let classes = cluster.list("storage.k8s.io/v1", "StorageClass", "", None);
    let volumes = cluster.list("v1", "PersistentVolume", "", None);
    // Only when the cluster serves them (the CRDs are installed).
    let snapshots = async {
        match cluster.served_apis().await? {
            Some(served) if !served.iter().any(|a| a == "snapshot.storage.k8s.io/v1") => {
                Ok(Vec::new())
            }
            _ => {
                cluster
                    .list(
                        "snapshot.storage.k8s.io/v1",
                        "VolumeSnapshot",
                        &tgt_ns,
                        None,
                    )
                    .await
            }
        }
    };
    let source_by_selector = async {
        match src {
            Some(k) if k.workload.name.is_none() => {
                let sel = k.workload.selector.as_ref().map(|s| {
                    s.iter()
                        .map(|(a, b)| format!("{a}={b}"))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                cluster
                    .list(
                        "apps/v1",
                        k.workload.kind.as_str(),
                        &k.namespace,
                        sel.as_deref(),
                    )
                    .await
            }
            _ => Ok(Vec::new()),
        }
    };
    let (gets, services, classes, volumes, snapshots, selected, namespace_checks) = tokio::join!(
        gets,
        services,
        classes,
        volumes,
        snapshots,
        source_by_selector,
        namespace_checks
    );
    let mut missing_namespaces = Vec::new();
    for (ns, got) in namespaces.iter().zip(namespace_checks) {
        match got {
            Ok(None) => missing_namespaces.push(ns.clone()),
            Ok(Some(_)) | Err(ClusterError::Forbidden { .. }) => {}
            Err(e) => return Err(e),
        }
    }

    let mut objects: Vec<Value> = Vec::new();
    for got in gets {
        match got {
            Ok(Some(o)) => objects.push(o),
            Ok(None) => {}
            // A kind the cluster does not serve is the planner's to report
            // (it knows the served APIs and which spec field needs them).
            Err(ClusterError::UnknownKind { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    objects.extend(services?.into_iter().flatten());
    objects.extend(classes?);
    objects.extend(volumes?);
    match snapshots {
        Ok(s) => objects.extend(s),
        // Clusters without the snapshot CRDs have no snapshots.
        Err(ClusterError::UnknownKind { .. }) => {}
        Err(e) => return Err(e),
    }
    objects.extend(selected?);

    // Second round: claims and Secrets the workloads refer to.
    let mut second: Vec<ObjectRef> = Vec::new();
    for w in objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
    {
        let ns = str_at(w, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_string();
        let name = str_at(w, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let pod_spec = at(w, &["spec", "template", "spec"])
            .cloned()
            .unwrap_or(Value::Null);
        for v in pod_spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(claim) = str_at(v, &["persistentVolumeClaim", "claimName"]) {
                second.push(ObjectRef::new("v1", "PersistentVolumeClaim", &ns, claim));
            }
        }
        if w["kind"] == "StatefulSet" {
            let replicas = at(w, &["spec", "replicas"])
                .and_then(Value::as_u64)
                .unwrap_or(1);
            for t in at(w, &["spec", "volumeClaimTemplates"])
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(tn) = str_at(t, &["metadata", "name"]) else {
                    continue;
                };
                for i in 0..replicas.max(1) {
                    second.push(ObjectRef::new(
                        "v1",
                        "PersistentVolumeClaim",
                        &ns,
                        &format!("{tn}-{name}-{i}"),
                    ));
                }
            }
        }
        for c in pod_spec
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(s) = str_at(e, &["valueFrom", "secretKeyRef", "name"]) {
                    second.push(ObjectRef::new("v1", "Secret", &ns, s));
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = str_at(e, &["secretRef", "name"]) {
                    second.push(ObjectRef::new("v1", "Secret", &ns, s));
                }
            }
        }
    }
    second.sort();
    second.dedup();
    let got = try_join_all(second.iter().map(|r| cluster.get(r))).await?;
    objects.extend(got.into_iter().flatten());

    // One copy of each object, Secrets reduced to keys and a fingerprint.
    let mut seen: BTreeMap<ObjectKey, Value> = BTreeMap::new();
    for mut o in objects {
        if o["kind"] == "Secret" {
            keys_only(&mut o);
        }
        if let Some(k) = ObjectKey::of(&o) {
            seen.entry(k).or_insert(o);
        }
    }
    Ok(Reads {
        objects: seen.into_values().collect(),
        missing_namespaces,
    })
}
