//! The Deployment controller, without ReplicaSets: it owns its pods directly, names them
//! `{deployment}-{template hash}-{random}`, honours replicas (0 deletes every pod), replaces
//! pods of an old template (Recreate: old ones first; RollingUpdate: new ones first, old ones once
//! the new are Ready) and reports replicas/ready/available/updated in status.

use serde_json::{json, Map, Value};

use super::{pod_from_template, pod_phase, pod_ready, put_count, write_status};
use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::store::Store;

pub fn reconcile(store: &Store) {
    let pods = store.list(&kinds::POD, None);
    for d in store.list(&kinds::DEPLOYMENT, None) {
        if obj::is_deleting(&d) {
            continue;
        }
        let ns = obj::namespace(&d);
        let uid = obj::uid(&d);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = obj::stable_hash(&template, 10);
        let replicas = obj::i64_at(&d, "/spec/replicas").unwrap_or(1).max(0) as usize;
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| obj::owned_by(p, uid))
            .collect();
        let active: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|p| !obj::is_deleting(p) && !matches!(pod_phase(p), "Succeeded" | "Failed"))
            .collect();
        let is_new = |p: &Value| obj::labels(p).get("pod-template-hash") == Some(&hash);
        let (new, old): (Vec<&Value>, Vec<&Value>) =
            active.iter().copied().partition(|p| is_new(p));
        let delete = |p: &Value| {
            let _ = registry::delete(
                store,
                &kinds::POD,
                ns,
                obj::name(p),
                &DeleteOptions::default(),
            );
        };
        // Pods that ended (crashed out of a restart policy) are replaced.
        for p in owned
            .iter()
            .filter(|p| !obj::is_deleting(p) && matches!(pod_phase(p), "Succeeded" | "Failed"))
        {
            delete(p);
        }
        let recreate = obj::str_at(&d, "/spec/strategy/type") == Some("Recreate");
        let old_terminating = owned.iter().any(|p| obj::is_deleting(p) && !is_new(p));
        if recreate && !old.is_empty() {
            old.iter().for_each(|p| delete(p));
        } else if !(recreate && old_terminating) {
            for _ in new.len()..replicas {
                let pod = pod_from_template(
                    &d,
                    &template,
                    &format!("{}-{hash}-{}", obj::name(&d), obj::random_suffix(5)),
                    &[("pod-template-hash", hash.clone())],
                );
                let _ = registry::create(store, &kinds::POD, ns, pod, false);
            }
            if new.len() > replicas {
                let mut extra = new.clone();
                // Not-ready pods go first, then the youngest.
                extra.sort_by_key(|p| {
                    (
                        pod_ready(p),
                        std::cmp::Reverse(
                            obj::str_at(p, "/metadata/creationTimestamp")
                                .unwrap_or("")
                                .to_string(),
                        ),
                    )
                });
                extra
                    .iter()
                    .take(new.len() - replicas)
                    .for_each(|p| delete(p));
            }
            let new_ready = new.iter().filter(|p| pod_ready(p)).count();
            if !old.is_empty() && (new_ready >= replicas || replicas == 0) {
                old.iter().for_each(|p| delete(p));
            }
        }
        let ready = active.iter().filter(|p| pod_ready(p)).count();
        let mut status = Map::new();
        status.insert(
            "observedGeneration".into(),
            json!(obj::i64_at(&d, "/metadata/generation").unwrap_or(1)),
        );
        put_count(&mut status, "replicas", active.len());
        put_count(&mut status, "updatedReplicas", new.len());
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", ready);
        put_count(
            &mut status,
            "unavailableReplicas",
            active.len().max(replicas).saturating_sub(ready),
        );
        let now = obj::now();
        let available = ready >= replicas;
        status.insert(
            "conditions".into(),
            json!([
                {"type": "Available", "status": if available { "True" } else { "False" },
                 "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                 "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                 "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True",
                 "reason": if new.len() == replicas && old.is_empty() { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                 "message": format!("ReplicaSet \"{}-{hash}\" has successfully progressed.", obj::name(&d)),
                 "lastUpdateTime": now, "lastTransitionTime": now},
            ]),
        );
        write_status(store, &kinds::DEPLOYMENT, &d, Value::Object(status));
    }
}
