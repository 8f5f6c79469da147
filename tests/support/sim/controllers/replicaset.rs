//! The ReplicaSet controller: keeps `spec.replicas` pods of the template, named
//! `{replicaset}-{random}` with a controller reference to the ReplicaSet; pods that ended are
//! replaced, extra ones deleted not-Ready first, then youngest. Status counts them. Orphaned pods
//! matching the selector are not adopted.

use serde_json::{json, Map, Value};

use super::{pod_from_template, pod_phase, pod_ready, put_count, write_status};
use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::store::Store;

pub fn reconcile(store: &Store) {
    let pods = store.list(&kinds::POD, None);
    for rs in store.list(&kinds::REPLICA_SET, None) {
        if obj::is_deleting(&rs) {
            continue;
        }
        let ns = obj::namespace(&rs);
        let uid = obj::uid(&rs);
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let replicas = obj::i64_at(&rs, "/spec/replicas").unwrap_or(1).max(0) as usize;
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| obj::owned_by(p, uid))
            .collect();
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
        let active: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|p| !obj::is_deleting(p) && !matches!(pod_phase(p), "Succeeded" | "Failed"))
            .collect();
        for _ in active.len()..replicas {
            let pod = pod_from_template(
                &rs,
                &template,
                &format!("{}-{}", obj::name(&rs), obj::random_suffix(5)),
                &[],
            );
            let _ = registry::create(store, &kinds::POD, ns, pod, false);
        }
        if active.len() > replicas {
            let mut extra = active.clone();
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
                .take(active.len() - replicas)
                .for_each(|p| delete(p));
        }
        let ready = active.iter().filter(|p| pod_ready(p)).count();
        let mut status = Map::new();
        // `replicas` is not omitted when zero in a ReplicaSet's status (unlike a Deployment's).
        status.insert("replicas".into(), json!(active.len()));
        put_count(&mut status, "fullyLabeledReplicas", active.len());
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", ready);
        status.insert(
            "observedGeneration".into(),
            json!(obj::i64_at(&rs, "/metadata/generation").unwrap_or(1)),
        );
        write_status(store, &kinds::REPLICA_SET, &rs, Value::Object(status));
    }
}
