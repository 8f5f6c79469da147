//! The manifests pgplan wants to exist, built from the spec and from what
//! the source already runs, plus the JSON helpers the planner compares with.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::observed::{at, str_at};
use crate::spec::{Placement, ReclaimPolicy, StatefulSetTarget, StaticVolume};

/// Labels pgplan puts on everything it creates.
pub fn managed_labels(p: &Placement) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("app.kubernetes.io/managed-by".into(), "pgplan".into());
    m.insert("pgplan.dev/placement".into(), p.name().into());
    for (k, v) in &p.doc.metadata.labels {
        m.insert(k.clone(), v.clone().into());
    }
    m
}

/// The metadata of an object pgplan writes in place of (or next to) a live
/// one: the labels and annotations carried over from `from` (less what the
/// server and GitOps tools set, see `gitops::carried`), then pgplan's own
/// labels, which win.
fn metadata(p: &Placement, name: &str, namespace: &str, from: Option<&Value>) -> Value {
    let (mut labels, annotations) = from.map(super::gitops::carried).unwrap_or_default();
    labels.extend(managed_labels(p));
    let mut md = json!({"name": name, "namespace": namespace, "labels": Value::Object(labels)});
    if !annotations.is_empty() {
        md["annotations"] = Value::Object(annotations);
    }
    md
}

fn labels_value(labels: &BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The StatefulSet: the source's pod template with its data volume turned
/// into a volumeClaimTemplate.
pub struct StatefulSetInput<'a> {
    pub namespace: &'a str,
    pub target: &'a StatefulSetTarget,
    pub service_name: &'a str,
    pub pod_labels: &'a BTreeMap<String, String>,
    /// The source workload's selector, kept as it is (the pod labels when
    /// it has none).
    pub selector: Option<&'a Value>,
    /// The object whose labels and annotations the StatefulSet keeps.
    pub metadata_from: Option<&'a Value>,
    /// The pod template to start from (source's, or the live target's).
    pub template: &'a Value,
    pub container_name: &'a str,
    /// Pod volume that held the data, removed from the template.
    pub data_volume: Option<&'a str>,
    pub storage_class: Option<&'a str>,
}

pub fn statefulset(p: &Placement, input: &StatefulSetInput<'_>) -> Value {
    let t = input.target;
    let st = &t.storage;
    let mut template = input.template.clone();
    strip_server_fields(&mut template);
    if let Some(md) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("labels".into(), labels_value(input.pod_labels));
    } else if let Some(obj) = template.as_object_mut() {
        obj.insert(
            "metadata".into(),
            json!({ "labels": labels_value(input.pod_labels) }),
        );
    }
    let pod_spec = template
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})));
    if let Some(Value::Object(pod_spec)) = pod_spec {
        if let (Some(Value::Array(vols)), Some(data)) =
            (pod_spec.get_mut("volumes"), input.data_volume)
        {
            vols.retain(|v| str_at(v, &["name"]) != Some(data));
        }
        if matches!(pod_spec.get("volumes"), Some(Value::Array(v)) if v.is_empty()) {
            pod_spec.remove("volumes");
        }
        if let Some(Value::Array(containers)) = pod_spec.get_mut("containers") {
            for c in containers.iter_mut() {
                if str_at(c, &["name"]) != Some(input.container_name) {
                    continue;
                }
                if let Some(img) = &t.image {
                    c["image"] = Value::String(img.clone());
                }
                let mounts = c
                    .as_object_mut()
                    .map(|o| o.entry("volumeMounts").or_insert_with(|| json!([])));
                if let Some(Value::Array(mounts)) = mounts {
                    mounts.retain(|m| {
                        let name = str_at(m, &["name"]);
                        name != input.data_volume && name != Some(st.volume_claim_template.as_str())
                    });
                    mounts.insert(
                        0,
                        json!({"name": st.volume_claim_template, "mountPath": st.mount_path}),
                    );
                }
            }
        }
    }
    let mut claim_spec = json!({
        "accessModes": st.access_modes,
        "resources": {"requests": {"storage": st.size}},
    });
    if let Some(class) = input.storage_class {
        claim_spec["storageClassName"] = Value::String(class.to_string());
    }
    let selector = input
        .selector
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .unwrap_or_else(|| json!({"matchLabels": labels_value(input.pod_labels)}));
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(p, &t.name, input.namespace, input.metadata_from),
        "spec": {
            "serviceName": input.service_name,
            "replicas": t.replicas,
            "podManagementPolicy": "OrderedReady",
            "selector": selector,
            "template": template,
            "volumeClaimTemplates": [{
                "metadata": {"name": st.volume_claim_template},
                "spec": claim_spec,
            }],
        },
    })
}

/// The headless Service giving pods `{sts}-{ordinal}.{service}` names,
/// with the labels and annotations of `metadata_from` (the Service it
/// replaces, or the source workload).
pub fn headless_service(
    p: &Placement,
    name: &str,
    namespace: &str,
    selector: &Map<String, Value>,
    ports: Option<&Value>,
    metadata_from: Option<&Value>,
) -> Value {
    let ports = ports
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .map(|ports| {
            Value::Array(
                ports
                    .iter()
                    .map(|port| {
                        let mut q = Map::new();
                        for k in ["name", "port", "targetPort", "protocol"] {
                            if let Some(v) = port.get(k) {
                                q.insert(k.into(), v.clone());
                            }
                        }
                        Value::Object(q)
                    })
                    .collect(),
            )
        })
        .unwrap_or_else(|| json!([{"name": "postgres", "port": 5432, "targetPort": 5432}]));
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(p, name, namespace, metadata_from),
        "spec": {"clusterIP": "None", "selector": Value::Object(selector.clone()), "ports": ports},
    })
}

/// A static local PV pinned to a node and pre-bound to the PVC the
/// StatefulSet will create for its ordinal.
pub struct StaticPvInput<'a> {
    pub name: &'a str,
    pub volume: &'a StaticVolume,
    pub size: &'a str,
    pub class: &'a str,
    pub access_modes: &'a [String],
    pub claim_namespace: &'a str,
    pub claim_name: &'a str,
}

pub fn static_pv(p: &Placement, i: &StaticPvInput<'_>) -> Value {
    let policy = match i.volume.reclaim_policy {
        ReclaimPolicy::Retain => "Retain",
        ReclaimPolicy::Delete => "Delete",
    };
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": i.name, "labels": Value::Object(managed_labels(p))},
        "spec": {
            "capacity": {"storage": i.size},
            "accessModes": i.access_modes,
            "persistentVolumeReclaimPolicy": policy,
            "storageClassName": i.class,
            "volumeMode": "Filesystem",
            "local": {"path": i.volume.path},
            "claimRef": {"namespace": i.claim_namespace, "name": i.claim_name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname",
                "operator": "In",
                "values": [i.volume.node],
            }]}]}},
        },
    })
}

/// A PVC for the scheduled backups.
pub fn backup_pvc(
    p: &Placement,
    name: &str,
    namespace: &str,
    size: &str,
    class: Option<&str>,
) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    });
    if let Some(c) = class {
        spec["storageClassName"] = Value::String(c.into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": Value::Object(managed_labels(p))},
        "spec": spec,
    })
}

/// The backup CronJob: `pg_dump -Fc` of every database into the backup PVC,
/// each archive checked with `pg_restore --list`, older runs pruned.
pub struct CronJobInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub schedule: &'a str,
    pub retention_days: u32,
    pub image: &'a str,
    pub host: &'a str,
    pub env: Vec<Value>,
    pub databases: &'a [String],
    pub claim: &'a str,
}

pub fn backup_cronjob(p: &Placement, i: &CronJobInput<'_>) -> Value {
    // Each name is one shell word whatever it holds: PostgreSQL allows
    // spaces, quotes, `$` and `;` in database names.
    let dbs: Vec<String> = i.databases.iter().map(|d| shell_word(d)).collect();
    let dbs = dbs.join(" ");
    let script = format!(
        "set -eu\n\
         dir=/backups/$(date +%Y%m%d-%H%M%S)\n\
         mkdir -p \"$dir\"\n\
         for db in {dbs}; do\n  \
           pg_dump -Fc -h {host} -d \"$db\" -f \"$dir/$db.dump\"\n  \
           pg_restore --list \"$dir/$db.dump\" > /dev/null\n\
         done\n\
         find /backups -mindepth 1 -maxdepth 1 -type d -mtime +{days} -exec rm -rf {{}} +\n",
        host = i.host,
        days = i.retention_days,
    );
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": i.name, "namespace": i.namespace, "labels": Value::Object(managed_labels(p))},
        "spec": {
            "schedule": i.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": 1,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "backup",
                        "image": i.image,
                        "command": ["sh", "-c", script],
                        "env": i.env,
                        "volumeMounts": [{"name": "backups", "mountPath": "/backups"}],
                    }],
                    "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": i.claim}}],
                }},
            }},
        },
    })
}

/// `s` as one word of a POSIX shell command line: bare when every byte is
/// one the shell gives no meaning to (so ordinary names read as before),
/// else in single quotes, each `'` written as `'\''`.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b',' | b'+' | b'@' | b'%' | b':' | b'='
                )
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A CSI VolumeSnapshot of a PVC.
pub fn volume_snapshot(
    p: &Placement,
    name: &str,
    namespace: &str,
    class: &str,
    pvc: &str,
) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "labels": Value::Object(managed_labels(p))},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": pvc}},
    })
}

/// How a Secret pgplan writes is shown in a plan: its keys, never values.
pub fn secret_display(p: &Placement, name: &str, namespace: &str, keys: &[&str]) -> Value {
    let data: Map<String, Value> = keys
        .iter()
        .map(|k| {
            (
                (*k).to_string(),
                Value::String(crate::redact::REDACTED.into()),
            )
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": Value::Object(managed_labels(p))},
        "type": "Opaque",
        "data": data,
    })
}

/// Drop what the API server owns, so that a live manifest can be reused as
/// input or shown in a diff.
pub fn strip_server_fields(v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(Value::Object(md)) = obj.get_mut("metadata") {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "selfLink",
            ] {
                md.remove(k);
            }
            if matches!(md.get("annotations"), Some(Value::Object(a)) if a.is_empty()) {
                md.remove("annotations");
            }
        }
    }
}

/// A manifest as shown in plans: server-owned fields removed.
pub fn shown(v: &Value) -> Value {
    let mut v = v.clone();
    strip_server_fields(&mut v);
    if let Some(Value::Object(md)) = v.get_mut("metadata") {
        if let Some(Value::Object(a)) = md.get_mut("annotations") {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                md.remove("annotations");
            }
        }
    }
    v
}

/// True when every field of `desired` has the same value in `live`
/// (objects compared key by key, arrays item by item, extra live fields —
/// defaults filled in by the API server — ignored).
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| covers(lv, dv)) || (dv.is_null() && !l.contains_key(k))
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(a, b)| covers(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// Apply an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The smallest merge patch turning `from` into `to` (for showing and
/// applying updates computed as whole desired objects).
pub fn diff_patch(from: &Value, to: &Value) -> Option<Value> {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut patch = Map::new();
            for (k, tv) in t {
                match f.get(k) {
                    Some(fv) => {
                        if let Some(p) = diff_patch(fv, tv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), tv.clone());
                    }
                }
            }
            for k in f.keys() {
                if !t.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (f, t) if f == t => None,
        (_, t) => Some(t.clone()),
    }
}

/// Set a dotted field (`spec.application.replicas`) in a JSON value.
pub fn set_field(v: &mut Value, dotted: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(obj) = cur else { return };
        if i == parts.len() - 1 {
            obj.insert((*part).to_string(), value);
            return;
        }
        cur = obj
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A merge patch setting one dotted field.
pub fn field_patch(dotted: &str, value: Value) -> Value {
    let mut v = Value::Object(Map::new());
    set_field(&mut v, dotted, value);
    v
}

/// Read a dotted field.
pub fn get_field<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    let parts: Vec<&str> = dotted.split('.').collect();
    at(v, &parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_ignores_server_defaults() {
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10, "ports": [{"port": 5432, "protocol": "TCP"}]}});
        assert!(covers(
            &live,
            &json!({"spec": {"replicas": 1, "ports": [{"port": 5432}]}})
        ));
        assert!(!covers(&live, &json!({"spec": {"replicas": 2}})));
        assert!(!covers(&live, &json!({"spec": {"ports": []}})));
    }

    #[test]
    fn merge_patch_round_trips_with_diff_patch() {
        let from = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let to = json!({"a": 1, "b": {"c": 5}, "e": [1, 2], "f": "x"});
        let patch = diff_patch(&from, &to).unwrap();
        assert_eq!(
            patch,
            json!({"b": {"c": 5, "d": null}, "e": [1, 2], "f": "x"})
        );
        let mut applied = from.clone();
        merge_patch(&mut applied, &patch);
        assert_eq!(applied, to);
        assert_eq!(diff_patch(&to, &to), None);
    }

    #[test]
    fn shell_words_are_bare_only_when_the_shell_gives_them_no_meaning() {
        assert_eq!(shell_word("healthcare"), "healthcare");
        assert_eq!(
            shell_word("backstage_plugin-auth.v2"),
            "backstage_plugin-auth.v2"
        );
        assert_eq!(shell_word("a b;$(x)"), "'a b;$(x)'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("pay$ments"), "'pay$ments'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn dotted_fields() {
        let mut v = json!({"spec": {"application": {"replicas": 2}}});
        assert_eq!(get_field(&v, "spec.application.replicas"), Some(&json!(2)));
        set_field(&mut v, "spec.application.replicas", json!(0));
        assert_eq!(v["spec"]["application"]["replicas"], 0);
        assert_eq!(
            field_patch("spec.database.enableLocalDb", json!(false)),
            json!({"spec": {"database": {"enableLocalDb": false}}})
        );
    }
}
