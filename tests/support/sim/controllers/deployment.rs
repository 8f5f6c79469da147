//! The Deployment controller, through ReplicaSets as the real one works: each pod template gets a
//! ReplicaSet `{deployment}-{template hash}` (label `pod-template-hash`, a controller reference to
//! the Deployment), which owns the pods. The new ReplicaSet gets the Deployment's annotations the
//! way the real `SetNewReplicaSetAnnotations` copies them — added and overwritten, never removed,
//! all but the revision, replica-count and last-applied ones (`skipCopyAnnotation`) — plus
//! `deployment.kubernetes.io/{revision,desired-replicas,max-replicas}`; the Deployment gets the
//! new ReplicaSet's revision. Recreate scales the old ReplicaSets to zero and waits for their pods
//! to go before the new one scales up; RollingUpdate scales the new one up at once and the old
//! ones down once the new pods are Ready (maxSurge/maxUnavailable are not modelled). Old
//! ReplicaSets beyond `revisionHistoryLimit` are deleted once empty. Status counts the pods of
//! every owned ReplicaSet.

use serde_json::{json, Map, Value};

use super::{pod_phase, pod_ready, put_count, write_status};
use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::store::Store;

/// The revision of a ReplicaSet (and, copied, of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

/// The annotations the real controller never copies from a Deployment to its ReplicaSets
/// (`annotationsToSkip` in `pkg/controller/deployment/util`).
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// `copyDeploymentAnnotationsToReplicaSet`: every annotation of the Deployment that is not
/// skipped is set on the ReplicaSet; annotations the Deployment no longer has stay.
fn copy_annotations(d: &Value, rs: &mut Value) {
    let from = obj::annotations(d);
    let to = obj::map_at(rs, &["metadata", "annotations"]);
    for (k, v) in from {
        if !skip_copy(&k) {
            to.insert(k, json!(v));
        }
    }
}

fn revision(o: &Value) -> i64 {
    obj::str_at(
        o,
        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0)
}

fn rs_replicas(rs: &Value) -> i64 {
    obj::i64_at(rs, "/spec/replicas").unwrap_or(1).max(0)
}

/// `maxSurge` of a RollingUpdate (an integer or a percentage, rounded up); 0 for Recreate.
fn max_surge(d: &Value, replicas: i64) -> i64 {
    if obj::str_at(d, "/spec/strategy/type") == Some("Recreate") {
        return 0;
    }
    match d.pointer("/spec/strategy/rollingUpdate/maxSurge") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => (replicas * p + 99) / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => (replicas * 25 + 99) / 100,
    }
}

/// Sets the replica-count annotations and the revision of the new ReplicaSet.
fn new_rs_annotations(d: &Value, rs: &mut Value, replicas: i64, new_revision: i64) {
    copy_annotations(d, rs);
    let ann = obj::map_at(rs, &["metadata", "annotations"]);
    let current = ann
        .get(REVISION)
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if current < new_revision {
        ann.insert(REVISION.into(), json!(new_revision.to_string()));
    }
    ann.insert(DESIRED_REPLICAS.into(), json!(replicas.to_string()));
    ann.insert(
        MAX_REPLICAS.into(),
        json!((replicas + max_surge(d, replicas)).to_string()),
    );
}

pub fn reconcile(store: &Store) {
    let sets = store.list(&kinds::REPLICA_SET, None);
    let pods = store.list(&kinds::POD, None);
    for d in store.list(&kinds::DEPLOYMENT, None) {
        if obj::is_deleting(&d) {
            continue;
        }
        let ns = obj::namespace(&d);
        let uid = obj::uid(&d);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = obj::stable_hash(&template, 10);
        let replicas = obj::i64_at(&d, "/spec/replicas").unwrap_or(1).max(0);
        let owned: Vec<&Value> = sets
            .iter()
            .map(|r| &**r)
            .filter(|r| obj::owned_by(r, uid) && !obj::is_deleting(r))
            .collect();
        let is_new = |rs: &Value| obj::labels(rs).get("pod-template-hash") == Some(&hash);
        let (new, old): (Vec<&Value>, Vec<&Value>) = owned.iter().copied().partition(|r| is_new(r));
        let pods_of = |rs: &Value| -> Vec<&Value> {
            pods.iter()
                .map(|p| &**p)
                .filter(|p| obj::owned_by(p, obj::uid(rs)))
                .collect()
        };
        let recreate = obj::str_at(&d, "/spec/strategy/type") == Some("Recreate");
        // Recreate: the new pods start once every old one (terminating ones too) is gone.
        let old_running = old
            .iter()
            .any(|rs| rs_replicas(rs) > 0 || !pods_of(rs).is_empty());
        let want_new = if recreate && old_running { 0 } else { replicas };
        let new_revision = old.iter().map(|r| revision(r)).max().unwrap_or(0) + 1;
        let new_rs = match new.first() {
            Some(rs) => registry::modify(store, &kinds::REPLICA_SET, ns, obj::name(rs), |r| {
                new_rs_annotations(&d, r, replicas, new_revision);
                obj::set(r, &["spec", "replicas"], json!(want_new));
            }),
            None => {
                let mut labels = obj::string_map(template.pointer("/metadata/labels"));
                labels.insert("pod-template-hash".into(), hash.clone());
                let mut rs_template = template.clone();
                obj::set(&mut rs_template, &["metadata", "labels"], json!(labels));
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                obj::map_at(&mut selector, &["matchLabels"])
                    .insert("pod-template-hash".into(), json!(hash));
                let mut rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {
                        "name": format!("{}-{hash}", obj::name(&d)), "namespace": ns,
                        "labels": labels, "ownerReferences": [obj::controller_ref(&d)],
                    },
                    "spec": {
                        "replicas": want_new, "selector": selector, "template": rs_template,
                        "minReadySeconds": obj::i64_at(&d, "/spec/minReadySeconds").unwrap_or(0),
                    },
                });
                new_rs_annotations(&d, &mut rs, replicas, new_revision);
                registry::create(store, &kinds::REPLICA_SET, ns, rs, false).ok()
            }
        };
        let Some(new_rs) = new_rs else {
            continue;
        };
        let new_pods = pods_of(&new_rs);
        let new_ready = new_pods
            .iter()
            .filter(|p| !obj::is_deleting(p) && pod_ready(p))
            .count() as i64;
        if recreate || new_ready >= replicas || replicas == 0 {
            for rs in old.iter().filter(|r| rs_replicas(r) > 0) {
                registry::modify(store, &kinds::REPLICA_SET, ns, obj::name(rs), |r| {
                    obj::set(r, &["spec", "replicas"], json!(0));
                });
            }
        }
        let rev = revision(&new_rs).to_string();
        registry::modify(store, &kinds::DEPLOYMENT, ns, obj::name(&d), |cur| {
            if obj::uid(cur) == uid {
                obj::map_at(cur, &["metadata", "annotations"]).insert(REVISION.into(), json!(rev));
            }
        });
        // History: empty old ReplicaSets beyond revisionHistoryLimit go, oldest first.
        let limit = obj::i64_at(&d, "/spec/revisionHistoryLimit")
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&Value> = old
            .iter()
            .copied()
            .filter(|r| rs_replicas(r) == 0 && pods_of(r).is_empty())
            .collect();
        empty.sort_by_key(|r| revision(r));
        for rs in empty.iter().take(empty.len().saturating_sub(limit)) {
            let _ = registry::delete(
                store,
                &kinds::REPLICA_SET,
                ns,
                obj::name(rs),
                &DeleteOptions::default(),
            );
        }

        let active =
            |p: &Value| !obj::is_deleting(p) && !matches!(pod_phase(p), "Succeeded" | "Failed");
        let mut sets_now: Vec<&Value> = owned.clone();
        if new.is_empty() {
            sets_now.push(&new_rs);
        }
        let all_pods: Vec<&Value> = sets_now
            .iter()
            .flat_map(|rs| pods_of(rs))
            .filter(|p| active(p))
            .collect();
        let updated = new_pods.iter().filter(|p| active(p)).count();
        let ready = all_pods.iter().filter(|p| pod_ready(p)).count();
        let mut status = Map::new();
        status.insert(
            "observedGeneration".into(),
            json!(obj::i64_at(&d, "/metadata/generation").unwrap_or(1)),
        );
        put_count(&mut status, "replicas", all_pods.len());
        put_count(&mut status, "updatedReplicas", updated);
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", ready);
        put_count(
            &mut status,
            "unavailableReplicas",
            all_pods.len().max(replicas as usize).saturating_sub(ready),
        );
        let now = obj::now();
        let available = ready as i64 >= replicas;
        let complete = updated as i64 == replicas && all_pods.len() == updated;
        status.insert(
            "conditions".into(),
            json!([
                {"type": "Available", "status": if available { "True" } else { "False" },
                 "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                 "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                 "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True",
                 "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                 "message": format!("ReplicaSet \"{}\" has successfully progressed.", obj::name(&new_rs)),
                 "lastUpdateTime": now, "lastTransitionTime": now},
            ]),
        );
        write_status(store, &kinds::DEPLOYMENT, &d, Value::Object(status));
    }
}
