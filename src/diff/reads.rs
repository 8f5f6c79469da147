//! What the planner reads of a cluster, declared by the planner: the
//! objects a placement names, the collections it scans, and the objects
//! the workloads found refer to. The Kubernetes adapter
//! (`cluster::observe`) fetches exactly this list and nothing it works out
//! for itself.

use serde_json::Value;

use crate::observed::{at, str_at};
use crate::plan::ObjectRef;
use crate::spec::{Placement, Source, Target};

/// A collection the planner scans: every object of a kind in a namespace
/// (`""` for cluster-scoped kinds), optionally by label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub selector: Option<String>,
    /// Read only when the cluster serves this API group/version (a CRD).
    pub only_if_served: bool,
}

impl Collection {
    fn new(api_version: &str, kind: &str, namespace: &str) -> Collection {
        Collection {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            selector: None,
            only_if_served: false,
        }
    }
}

/// The first round of reads of one placement's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadList {
    /// Objects fetched by name.
    pub named: Vec<ObjectRef>,
    /// Namespaces the spec names, each checked for existence.
    pub namespaces: Vec<String>,
    pub collections: Vec<Collection>,
}

/// Everything the plan of `p` reads before it has seen the workloads.
/// `api_version_of` gives a built-in kind's usual apiVersion (the adapter's
/// table), for consumers that do not name one.
pub fn reads(p: &Placement, api_version_of: &dyn Fn(&str) -> Option<&'static str>) -> ReadList {
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

    let mut named: Vec<ObjectRef> = Vec::new();
    if let Some(k) = kube_target {
        let sts = &k.stateful_set;
        let backup = crate::names::backup_object_name(&sts.name);
        named.push(ObjectRef::new("apps/v1", "StatefulSet", &tgt_ns, &sts.name));
        named.push(ObjectRef::new(
            "v1",
            "Service",
            &tgt_ns,
            sts.service_name.as_deref().unwrap_or(&sts.name),
        ));
        named.push(ObjectRef::new("batch/v1", "CronJob", &tgt_ns, &backup));
        named.push(ObjectRef::new(
            "v1",
            "PersistentVolumeClaim",
            &tgt_ns,
            &backup,
        ));
    }
    for c in &spec.consumers {
        let ns = c.namespace.clone().unwrap_or_else(|| src_ns.clone());
        let av = c
            .api_version
            .clone()
            .or_else(|| api_version_of(&c.kind).map(str::to_string))
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
    if let Some(k) = src {
        if let Some(n) = &k.workload.name {
            named.push(ObjectRef::new(
                "apps/v1",
                k.workload.kind.as_str(),
                &k.namespace,
                n,
            ));
        }
    }

    let mut namespaces = vec![src_ns.clone()];
    if tgt_ns != src_ns {
        namespaces.push(tgt_ns.clone());
    }
    namespaces.sort();
    let mut collections: Vec<Collection> = namespaces
        .iter()
        .map(|ns| Collection::new("v1", "Service", ns))
        .collect();
    collections.push(Collection::new("storage.k8s.io/v1", "StorageClass", ""));
    collections.push(Collection::new("v1", "PersistentVolume", ""));
    collections.push(Collection {
        only_if_served: true,
        ..Collection::new("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &tgt_ns)
    });
    if let Some(k) = src.filter(|k| k.workload.name.is_none()) {
        collections.push(Collection {
            selector: k.workload.selector.as_ref().map(|s| {
                s.iter()
                    .map(|(a, b)| format!("{a}={b}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            ..Collection::new("apps/v1", k.workload.kind.as_str(), &k.namespace)
        });
    }
    ReadList {
        named,
        namespaces,
        collections,
    }
}

/// The second round: the claims and Secrets the workloads among `objects`
/// refer to (volumes, claim templates, env and envFrom), sorted, once each.
pub fn referenced(objects: &[Value]) -> Vec<ObjectRef> {
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
                        &crate::names::claim_name(tn, &name, i),
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
    second
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{load, LoadOptions, SourceFile};

    #[test]
    fn the_healthcare_plan_reads_the_objects_the_planner_writes() {
        let text = include_str!("../../examples/healthcare/pgplan.yaml");
        let opts = LoadOptions {
            environment: None,
            all_environments: false,
            lookup: &|_| None,
        };
        let spec = load(SourceFile::new("pgplan.yaml", text), &opts).expect("example loads");
        let list = reads(&spec.placements[0], &|k| {
            (k == "Deployment").then_some("apps/v1")
        });
        let named: Vec<String> = list
            .named
            .iter()
            .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
            .collect();
        assert_eq!(
            named,
            [
                "StatefulSet/default/postgres",
                "Service/default/postgres",
                "CronJob/default/postgres-backup",
                "PersistentVolumeClaim/default/postgres-backup",
                "Deployment/default/healthcare-api",
                "Deployment/default/postgres",
            ]
        );
        assert_eq!(list.namespaces, ["default"]);
        let scanned: Vec<(&str, bool)> = list
            .collections
            .iter()
            .map(|c| (c.kind.as_str(), c.only_if_served))
            .collect();
        assert_eq!(
            scanned,
            [
                ("Service", false),
                ("StorageClass", false),
                ("PersistentVolume", false),
                ("VolumeSnapshot", true),
            ]
        );
    }

    #[test]
    fn a_statefulsets_claims_and_a_workloads_secrets_are_read_next() {
        let sts = serde_json::json!({
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": 2, "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
                "template": {"spec": {"containers": [{"name": "pg",
                    "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "k"}}}]}]}}},
        });
        let names: Vec<String> = referenced(&[sts])
            .into_iter()
            .map(|r| format!("{}/{}", r.kind, r.name))
            .collect();
        assert_eq!(
            names,
            [
                "PersistentVolumeClaim/data-db-0",
                "PersistentVolumeClaim/data-db-1",
                "Secret/pw"
            ]
        );
    }
}
