//! The control loop: after every change to the store (and on a short tick) it runs each
//! controller once over the whole state, level-triggered like the real ones. Each controller only
//! writes when something differs, so the loop settles.
//!
//! Also the helpers the workload controllers share (pods from templates, readiness, conditions).

mod backstage;
mod deployment;
mod gc;
mod job;
mod replicaset;
mod statefulset;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::faults::FaultState;
use super::kinds;
use super::kubelet::Kubelet;
use super::obj;
use super::registry;
use super::store::Store;

/// Which controllers run and how (the gaps a real cluster may have).
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether a CSI snapshot controller acts on VolumeSnapshots.
    pub snapshot_controller: bool,
    /// StorageClasses whose expansions stop at `FileSystemResizePending`.
    pub stalled_resize_classes: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshot_controller: true,
            stalled_resize_classes: Vec::new(),
        }
    }
}

/// Everything the controllers share.
pub struct Controllers {
    pub store: Store,
    pub kubelet: Arc<Kubelet>,
    pub faults: Arc<FaultState>,
    pub volumes: volumes::VolumeWork,
    pub options: Options,
}

impl Controllers {
    pub fn new(
        store: Store,
        kubelet: Arc<Kubelet>,
        faults: Arc<FaultState>,
        options: Options,
    ) -> Controllers {
        Controllers {
            store,
            kubelet,
            faults,
            volumes: volumes::VolumeWork::default(),
            options,
        }
    }

    /// One pass of every controller.
    pub fn reconcile_all(&self) {
        gc::reconcile(&self.store);
        deployment::reconcile(&self.store);
        replicaset::reconcile(&self.store);
        statefulset::reconcile(&self.store);
        job::reconcile(&self.store);
        backstage::reconcile(&self.store);
        volumes::reconcile(self);
        self.kubelet.reconcile();
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.store.subscribe();
        loop {
            changes.borrow_and_update();
            self.reconcile_all();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.changed() => {
                    // Let a burst of writes land before the next pass.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(p: &Value) -> bool {
    obj::array_at(p, "/status/conditions").iter().any(|c| {
        obj::str_at(c, "/type") == Some("Ready") && obj::str_at(c, "/status") == Some("True")
    })
}

pub fn pod_phase(p: &Value) -> &str {
    obj::str_at(p, "/status/phase").unwrap_or("Pending")
}

/// A pod for `owner` from `owner.spec.template` (or `template` when given), with extra labels.
pub fn pod_from_template(
    owner: &Value,
    template: &Value,
    name: &str,
    extra_labels: &[(&str, String)],
) -> Value {
    let mut labels = obj::string_map(template.pointer("/metadata/labels"));
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), v.clone());
    }
    let mut meta = json!({
        "name": name,
        "namespace": obj::namespace(owner),
        "labels": labels,
        "ownerReferences": [obj::controller_ref(owner)],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Keeps the timestamps of conditions whose status and reason did not change, so status writes
/// settle instead of churning.
pub fn settle_conditions(old: &[Value], new: Vec<Value>) -> Vec<Value> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old.iter().find(|o| {
                o.get("type") == c.get("type")
                    && o.get("status") == c.get("status")
                    && o.get("reason") == c.get("reason")
            }) {
                for f in ["lastTransitionTime", "lastUpdateTime", "lastProbeTime"] {
                    if let Some(v) = o.get(f) {
                        c[f] = v.clone();
                    }
                }
            }
            c
        })
        .collect()
}

/// Writes `status` of a workload (only when it differs).
pub fn write_status(store: &Store, kind: &'static kinds::Kind, o: &Value, status: Value) {
    let uid = obj::uid(o).to_string();
    registry::modify(store, kind, obj::namespace(o), obj::name(o), |cur| {
        if obj::uid(cur) != uid {
            return;
        }
        let mut status = status.clone();
        if let Some(Value::Array(new)) = status.get_mut("conditions") {
            let old = obj::array_at(cur, "/status/conditions");
            *new = settle_conditions(old, std::mem::take(new));
        }
        obj::set(cur, &["status"], status);
    });
}

/// Inserts `n` into `m` under `k` unless zero (the API omits zero counts).
pub fn put_count(m: &mut serde_json::Map<String, Value>, k: &str, n: usize) {
    if n > 0 {
        m.insert(k.into(), json!(n));
    }
}
