//! The StatefulSet controller: pods `{sts}-{ordinal}`, one PVC per volumeClaimTemplate and
//! ordinal named `{template}-{sts}-{ordinal}` (created before the pod, never deleted with the
//! StatefulSet unless `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`), OrderedReady
//! (ordinal n+1 only once n is Ready; scale down from the highest ordinal, one at a time) or
//! Parallel, rolling updates from the highest ordinal, and replicas/ready/current/updated status.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{pod_from_template, pod_phase, pod_ready, put_count, write_status};
use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::select::LabelSelector;
use crate::support::sim::store::Store;

fn ensure_claims(store: &Store, sts: &Value, ordinal: usize) -> bool {
    let ns = obj::namespace(sts);
    let name = obj::name(sts);
    let selector_labels = obj::string_map(sts.pointer("/spec/selector/matchLabels"));
    let delete_with_set = obj::str_at(
        sts,
        "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
    ) == Some("Delete");
    let mut all_usable = true;
    for t in obj::array_at(sts, "/spec/volumeClaimTemplates") {
        let claim = format!("{}-{name}-{ordinal}", obj::name(t));
        match store.get(&kinds::PVC, ns, &claim) {
            Some(existing) => {
                if obj::is_deleting(&existing) {
                    all_usable = false;
                }
            }
            None => {
                let mut labels = obj::string_map(t.pointer("/metadata/labels"));
                labels.extend(selector_labels.clone());
                let mut meta = json!({"name": claim, "namespace": ns, "labels": labels});
                if let Some(a) = t.pointer("/metadata/annotations") {
                    meta["annotations"] = a.clone();
                }
                if delete_with_set {
                    meta["ownerReferences"] = json!([obj::controller_ref(sts)]);
                }
                let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                 "metadata": meta, "spec": t.get("spec").cloned().unwrap_or(json!({}))});
                if registry::create(store, &kinds::PVC, ns, pvc, false).is_err() {
                    all_usable = false;
                }
            }
        }
    }
    all_usable
}

fn new_pod(sts: &Value, ordinal: usize, revision: &str) -> Value {
    let name = obj::name(sts);
    let pod_name = format!("{name}-{ordinal}");
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut pod = pod_from_template(
        sts,
        &template,
        &pod_name,
        &[
            ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
            ("apps.kubernetes.io/pod-index", ordinal.to_string()),
            ("controller-revision-hash", revision.to_string()),
        ],
    );
    let spec = obj::map_at(&mut pod, &["spec"]);
    spec.insert("hostname".into(), json!(pod_name));
    if let Some(svc) = obj::str_at(sts, "/spec/serviceName").filter(|s| !s.is_empty()) {
        spec.insert("subdomain".into(), json!(svc));
    }
    let mut volumes: Vec<Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in obj::array_at(sts, "/spec/volumeClaimTemplates") {
        let vname = obj::name(t);
        volumes.retain(|v| obj::str_at(v, "/name") != Some(vname));
        volumes.push(json!({"name": vname, "persistentVolumeClaim":
            {"claimName": format!("{vname}-{name}-{ordinal}")}}));
    }
    if !volumes.is_empty() {
        spec.insert("volumes".into(), json!(volumes));
    }
    pod
}

pub fn reconcile(store: &Store) {
    let pods = store.list(&kinds::POD, None);
    for sts in store.list(&kinds::STATEFUL_SET, None) {
        if obj::is_deleting(&sts) {
            continue;
        }
        let ns = obj::namespace(&sts);
        let name = obj::name(&sts);
        let uid = obj::uid(&sts);
        let replicas = obj::i64_at(&sts, "/spec/replicas").unwrap_or(1).max(0) as usize;
        let ordered = obj::str_at(&sts, "/spec/podManagementPolicy") != Some("Parallel");
        let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let revision = format!("{name}-{}", obj::stable_hash(&template, 10));
        let selector = sts
            .pointer("/spec/selector")
            .and_then(|s| LabelSelector::from_object(s).ok())
            .unwrap_or_default();
        // Pods by ordinal: owned ones, plus orphans with the right name and labels (adoption).
        let mut by_ordinal: BTreeMap<usize, Value> = BTreeMap::new();
        for p in pods.iter().filter(|p| obj::namespace(p) == ns) {
            let Some(ordinal) = obj::name(p)
                .strip_prefix(&format!("{name}-"))
                .and_then(|o| o.parse::<usize>().ok())
            else {
                continue;
            };
            let owned = obj::owned_by(p, uid);
            let orphan =
                obj::owner_uids(p).is_empty() && selector.matches_object(p) && !obj::is_deleting(p);
            if owned {
                by_ordinal.insert(ordinal, (**p).clone());
            } else if orphan {
                // Adoption: the pod becomes the StatefulSet's.
                let owner = obj::controller_ref(&sts);
                let pod_uid = obj::uid(p).to_string();
                if let Some(adopted) =
                    registry::modify(store, &kinds::POD, ns, obj::name(p), |pod| {
                        if obj::uid(pod) == pod_uid && obj::owner_uids(pod).is_empty() {
                            obj::set(
                                pod,
                                &["metadata", "ownerReferences"],
                                json!([owner.clone()]),
                            );
                        }
                    })
                {
                    by_ordinal.insert(ordinal, (*adopted).clone());
                }
            }
        }
        let delete = |p: &Value| {
            let _ = registry::delete(
                store,
                &kinds::POD,
                ns,
                obj::name(p),
                &DeleteOptions::default(),
            );
        };
        // Create or replace pods 0..replicas.
        for i in 0..replicas {
            match by_ordinal.get(&i) {
                None => {
                    if ensure_claims(store, &sts, i) {
                        let _ = registry::create(
                            store,
                            &kinds::POD,
                            ns,
                            new_pod(&sts, i, &revision),
                            false,
                        );
                    }
                    if ordered {
                        break;
                    }
                }
                Some(p) if obj::is_deleting(p) => {
                    if ordered {
                        break;
                    }
                }
                Some(p) if matches!(pod_phase(p), "Succeeded" | "Failed") => {
                    delete(p);
                    if ordered {
                        break;
                    }
                }
                Some(p) => {
                    if ordered && !pod_ready(p) {
                        break;
                    }
                }
            }
        }
        // Scale down from the highest ordinal.
        let all_below_ready = (0..replicas).all(|i| {
            by_ordinal
                .get(&i)
                .is_some_and(|p| pod_ready(p) && !obj::is_deleting(p))
        });
        let condemned: Vec<&Value> = by_ordinal
            .range(replicas..)
            .rev()
            .map(|(_, p)| p)
            .filter(|p| !obj::is_deleting(p))
            .collect();
        let condemned_terminating = by_ordinal
            .range(replicas..)
            .any(|(_, p)| obj::is_deleting(p));
        if ordered {
            if let Some(p) = condemned.first() {
                if all_below_ready && !condemned_terminating {
                    delete(p);
                }
            }
        } else {
            condemned.iter().for_each(|p| delete(p));
        }
        // Rolling update: replace the highest outdated pod once everything is Ready.
        let outdated =
            |p: &Value| obj::labels(p).get("controller-revision-hash") != Some(&revision);
        let rolling = obj::str_at(&sts, "/spec/updateStrategy/type") != Some("OnDelete");
        let partition = obj::i64_at(&sts, "/spec/updateStrategy/rollingUpdate/partition")
            .unwrap_or(0)
            .max(0) as usize;
        if rolling && all_below_ready && condemned.is_empty() && !condemned_terminating {
            if let Some(p) = (partition..replicas)
                .rev()
                .filter_map(|i| by_ordinal.get(&i))
                .find(|p| outdated(p))
            {
                delete(p);
            }
        }
        let active: Vec<&Value> = by_ordinal
            .values()
            .filter(|p| !obj::is_deleting(p))
            .collect();
        let ready = active.iter().filter(|p| pod_ready(p)).count();
        let updated = active.iter().filter(|p| !outdated(p)).count();
        let mut status = Map::new();
        status.insert(
            "observedGeneration".into(),
            json!(obj::i64_at(&sts, "/metadata/generation").unwrap_or(1)),
        );
        status.insert("replicas".into(), json!(active.len()));
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "currentReplicas", updated);
        put_count(&mut status, "updatedReplicas", updated);
        put_count(&mut status, "availableReplicas", ready);
        status.insert("currentRevision".into(), json!(revision));
        status.insert("updateRevision".into(), json!(revision));
        status.insert("collisionCount".into(), json!(0));
        write_status(store, &kinds::STATEFUL_SET, &sts, Value::Object(status));
    }
}
