//! Reading what a placement's plan depends on, with a fixed number of API
//! requests however many unrelated objects share the namespace: objects
//! the spec names are fetched by name, the few collections the planner
//! scans (Services of a namespace, StorageClasses, PersistentVolumes,
//! VolumeSnapshots when the cluster serves them) with one list each, and
//! independent reads run concurrently. Kinds the cluster does not serve are
//! not read; the planner reports them against the spec field that needs them.

use std::collections::BTreeMap;

use futures::future::{join_all, try_join_all};
use serde_json::Value;

use super::{builtin_api_version, Cluster, ClusterError};
use crate::diff::reads::Collection;
use crate::observed::{keys_only, ObjectKey};
use crate::plan::ObjectRef;
use crate::spec::Placement;

/// What one placement's plan may read: objects, and the namespaces the spec
/// names that do not exist.
#[derive(Debug, Default)]
pub struct Reads {
    pub objects: Vec<Value>,
    pub missing_namespaces: Vec<String>,
}

/// One collection of the read list; one the cluster does not serve is empty.
async fn collection(cluster: &Cluster, c: &Collection) -> Result<Vec<Value>, ClusterError> {
    if c.only_if_served {
        if let Some(served) = cluster.served_apis().await? {
            if !served.contains(&c.api_version) {
                return Ok(Vec::new());
            }
        }
    }
    cluster
        .list(&c.api_version, &c.kind, &c.namespace, c.selector.as_deref())
        .await
}

/// Every object the plan of `p` reads (`diff::reads`), fetched.
pub async fn placement(cluster: &Cluster, p: &Placement) -> Result<Reads, ClusterError> {
    let list = crate::diff::reads(p, &builtin_api_version);
    let namespace_refs: Vec<ObjectRef> = list
        .namespaces
        .iter()
        .map(|ns| ObjectRef::new("v1", "Namespace", "", ns))
        .collect();
    // Whether each namespace exists, so that "not found" can say why; a
    // namespace pgplan may not read (403) is simply not known.
    let namespace_checks = join_all(namespace_refs.iter().map(|r| cluster.get(r)));
    let gets = join_all(list.named.iter().map(|r| cluster.get(r)));
    let lists = join_all(list.collections.iter().map(|c| collection(cluster, c)));
    let (gets, lists, namespace_checks) = tokio::join!(gets, lists, namespace_checks);
    let mut missing_namespaces = Vec::new();
    for (ns, got) in list.namespaces.iter().zip(namespace_checks) {
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
    for (c, l) in list.collections.iter().zip(lists) {
        match l {
            Ok(l) => objects.extend(l),
            // Clusters without the snapshot CRDs have no snapshots.
            Err(ClusterError::UnknownKind { .. }) if c.only_if_served => {}
            Err(e) => return Err(e),
        }
    }

    // Second round: claims and Secrets the workloads refer to.
    let second = crate::diff::reads::referenced(&objects);
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
