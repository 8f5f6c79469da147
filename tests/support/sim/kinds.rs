//! The resource types the simulated API server serves, and the discovery documents built from
//! them (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`).

use serde_json::{json, Value};

/// One resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource (status is ignored on create/update of the main resource).
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: bool,
    pub short_names: &'static [&'static str],
}

impl Kind {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `statefulsets.apps`: the store key and the name in error messages.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `StatefulSet.apps`: how 422 messages name the kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

macro_rules! kind {
    ($name:ident, $group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr,
     namespaced: $ns:expr, status: $st:expr, scale: $sc:expr, short: $short:expr) => {
        pub static $name: Kind = Kind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            status: $st,
            scale: $sc,
            short_names: $short,
        };
    };
}

kind!(NAMESPACE, "", "v1", "Namespace", "namespaces", "namespace",
    namespaced: false, status: true, scale: false, short: &["ns"]);
kind!(NODE, "", "v1", "Node", "nodes", "node",
    namespaced: false, status: true, scale: false, short: &["no"]);
kind!(POD, "", "v1", "Pod", "pods", "pod",
    namespaced: true, status: true, scale: false, short: &["po"]);
kind!(SERVICE, "", "v1", "Service", "services", "service",
    namespaced: true, status: true, scale: false, short: &["svc"]);
kind!(SECRET, "", "v1", "Secret", "secrets", "secret",
    namespaced: true, status: false, scale: false, short: &[]);
kind!(CONFIG_MAP, "", "v1", "ConfigMap", "configmaps", "configmap",
    namespaced: true, status: false, scale: false, short: &["cm"]);
kind!(PV, "", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume",
    namespaced: false, status: true, scale: false, short: &["pv"]);
kind!(PVC, "", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim",
    namespaced: true, status: true, scale: false, short: &["pvc"]);
kind!(EVENT, "", "v1", "Event", "events", "event",
    namespaced: true, status: false, scale: false, short: &["ev"]);
kind!(SERVICE_ACCOUNT, "", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount",
    namespaced: true, status: false, scale: false, short: &["sa"]);
kind!(STORAGE_CLASS, "storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass",
    namespaced: false, status: false, scale: false, short: &["sc"]);
kind!(DEPLOYMENT, "apps", "v1", "Deployment", "deployments", "deployment",
    namespaced: true, status: true, scale: true, short: &["deploy"]);
kind!(REPLICA_SET, "apps", "v1", "ReplicaSet", "replicasets", "replicaset",
    namespaced: true, status: true, scale: true, short: &["rs"]);
kind!(STATEFUL_SET, "apps", "v1", "StatefulSet", "statefulsets", "statefulset",
    namespaced: true, status: true, scale: true, short: &["sts"]);
kind!(JOB, "batch", "v1", "Job", "jobs", "job",
    namespaced: true, status: true, scale: false, short: &[]);
kind!(CRON_JOB, "batch", "v1", "CronJob", "cronjobs", "cronjob",
    namespaced: true, status: true, scale: false, short: &["cj"]);
kind!(LEASE, "coordination.k8s.io", "v1", "Lease", "leases", "lease",
    namespaced: true, status: false, scale: false, short: &[]);
kind!(VOLUME_SNAPSHOT, "snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots",
    "volumesnapshot", namespaced: true, status: true, scale: false, short: &["vs"]);
kind!(VOLUME_SNAPSHOT_CLASS, "snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass",
    "volumesnapshotclasses", "volumesnapshotclass",
    namespaced: false, status: false, scale: false, short: &["vsclass"]);
kind!(BACKSTAGE, "rhdh.redhat.com", "v1alpha3", "Backstage", "backstages", "backstage",
    namespaced: true, status: true, scale: false, short: &[]);

/// Every served kind.
pub static ALL: [&Kind; 20] = [
    &NAMESPACE,
    &NODE,
    &POD,
    &SERVICE,
    &SECRET,
    &CONFIG_MAP,
    &PV,
    &PVC,
    &EVENT,
    &SERVICE_ACCOUNT,
    &STORAGE_CLASS,
    &DEPLOYMENT,
    &REPLICA_SET,
    &STATEFUL_SET,
    &JOB,
    &CRON_JOB,
    &LEASE,
    &VOLUME_SNAPSHOT,
    &VOLUME_SNAPSHOT_CLASS,
    &BACKSTAGE,
];

/// The API groups whose kinds are custom resources (CRDs a cluster may lack), as opposed to the
/// built-in groups every API server serves.
pub const CRD_GROUPS: [&str; 2] = ["snapshot.storage.k8s.io", "rhdh.redhat.com"];

/// Looks a kind up by its URL coordinates.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    ALL.iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Looks a kind up by `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    ALL.iter()
        .copied()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// Looks a kind up by plural and optional group (`pods`, `statefulsets.apps`, `statefulsets`).
pub fn by_resource(resource: &str) -> Option<&'static Kind> {
    ALL.iter()
        .copied()
        .find(|k| k.resource() == resource || k.plural == resource)
}

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

/// `GET /api`.
pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in ALL.iter() {
        if !k.group.is_empty() && !out.iter().any(|(g, _)| *g == k.group) {
            out.push((k.group, k.version));
        }
    }
    out
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()],
           "preferredVersion": gv})
}

/// `GET /apis`, without the groups in `absent` (CRDs not installed).
pub fn group_list(absent: &[String]) -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !absent.iter().any(|a| a == g))
        .map(|(g, v)| {
            let mut doc = group_doc(g, v);
            let obj = doc.as_object_mut().expect("group_doc builds an object");
            obj.remove("kind");
            obj.remove("apiVersion");
            doc
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn group(group: &str) -> Option<Value> {
    groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(g, v)| group_doc(g, v))
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for k in ALL
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let mut r = json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": verbs(),
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        // What `kubectl get all` lists (the real server's `all` category, less kinds not served).
        if matches!(
            k.plural,
            "pods" | "services" | "deployments" | "statefulsets" | "jobs" | "cronjobs"
        ) {
            r["categories"] = json!(["all"]);
        }
        resources.push(r);
        if k.status {
            resources.push(
                json!({"name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if k.scale {
            resources.push(
                json!({"name": format!("{}/scale", k.plural), "singularName": "",
                "namespaced": k.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
        if k.plural == "pods" {
            for sub in ["exec", "portforward"] {
                resources.push(json!({"name": format!("pods/{sub}"), "singularName": "",
                    "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
            }
            resources.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}),
            );
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": resources}),
    )
}
