//! Each step's precheck → act → verify, against the live world. Every act
//! is idempotent: it first looks at what is there and does nothing when the
//! step's effect already holds, which is what makes `--resume` safe after a
//! crash in the middle of a step.
//!
//! An act returns the facts its compensation (or a later step) needs; they
//! are written to the journal before anything depends on the step.

use std::time::Duration;

use serde_json::{json, Value};

use super::World;
use crate::cluster::{Cluster, ClusterError, Write};
use crate::diff::manifests::{covers, field_patch, get_field, merge_patch, strip_server_fields};
use crate::observed::{at, str_at};
use crate::plan::{ObjectRef, Operation, ScalePurpose, Step, Wait, QUIESCED_ANNOTATION};

/// Why a step failed, as printed and journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError(pub String);

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: miette::Diagnostic> From<E> for StepError {
    fn from(e: E) -> Self {
        let mut msg = e.to_string();
        if let Some(h) = e.help() {
            msg.push_str(&format!(" (help: {h})"));
        }
        StepError(msg)
    }
}

/// How long a workload may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn cluster<'a>(w: &'a World<'_>) -> Result<&'a Cluster, StepError> {
    w.cluster.ok_or_else(|| {
        StepError("this step needs a Kubernetes cluster and none is configured".into())
    })
}

/// Run one step; returns its facts. `deps` are the facts of the steps it
/// depends on.
pub(super) async fn act(
    w: &World<'_>,
    step: &Step,
    deps: &std::collections::BTreeMap<String, Value>,
) -> Result<Value, StepError> {
    match &step.operation {
        Operation::Create { object, wait } => {
            let manifest = step
                .after
                .as_ref()
                .ok_or_else(|| StepError(format!("{}: no manifest to create", step.address)))?;
            create(cluster(w)?, object, manifest, *wait).await
        }
        Operation::Delete { object, wait } => {
            delete(cluster(w)?, object, step.before.as_ref(), *wait).await
        }
        Operation::Replace { object, wait } => {
            let c = cluster(w)?;
            let after = step
                .after
                .as_ref()
                .ok_or_else(|| StepError(format!("{}: no manifest to create", step.address)))?;
            if let Some(live) = c.get(object).await? {
                if covers(&live, after) {
                    return Ok(json!({"already": true}));
                }
            }
            delete(c, object, step.before.as_ref(), Wait::Gone).await?;
            create(c, object, after, *wait).await
        }
        Operation::Patch { object, patch } => {
            let c = cluster(w)?;
            let live = c
                .get(object)
                .await?
                .ok_or_else(|| StepError(format!("{} does not exist", object.display())))?;
            let mut merged = live.clone();
            merge_patch(&mut merged, patch);
            let already = covers(&live, &merged) && covers(&merged, &live);
            if !already {
                c.merge_patch(object, patch, Write::Apply).await?;
            }
            // A claim has grown when its capacity says so, not when the
            // request was accepted (also when a resize asked for earlier is
            // still pending).
            if object.kind == "PersistentVolumeClaim" {
                if let Some(size) =
                    get_field(patch, "spec.resources.requests.storage").and_then(Value::as_str)
                {
                    wait_resized(c, object, size).await?;
                }
            }
            Ok(if already {
                json!({"already": true})
            } else {
                json!({})
            })
        }
        Operation::Scale {
            object,
            from,
            to,
            purpose,
            field,
        } => scale(cluster(w)?, object, *from, *to, *purpose, field.as_deref()).await,
        Operation::ProtectVolume { volume, from } => {
            let c = cluster(w)?;
            let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
            c.merge_patch(volume, &patch, Write::Apply).await?;
            Ok(json!({"from": from}))
        }
        Operation::SelfHeal {
            pod,
            workload,
            database,
            expect_rows,
        } => self_heal(w, pod, workload, database, *expect_rows).await,
        Operation::HttpCheck {
            url,
            expect_status,
            contains,
            ..
        } => http_check(url, *expect_status, contains.as_deref()).await,
        Operation::Secret {
            object, contents, ..
        } => super::data::secret(w, object, contents).await,
        Operation::Backup { .. }
        | Operation::PrepareTarget { .. }
        | Operation::Restore { .. }
        | Operation::ReleaseKnexLocks { .. }
        | Operation::Verify { .. } => super::data::act(w, step, deps).await,
        Operation::TuneForLoading {
            server,
            pod,
            minimal_wal,
        } => super::data::tune(w, server, pod, *minimal_wal).await,
        Operation::UntuneAfterLoading { server, pod, .. } => {
            super::data::untune(w, server, pod).await
        }
        Operation::CreateRdsInstance { .. }
        | Operation::ModifyRdsInstance { .. }
        | Operation::SnapshotRdsInstance { .. } => super::data::rds(w, step).await,
    }
}

/// A manifest as pgplan writes it back: no server-owned fields, no clusterIP pinned.
pub(super) fn recreatable(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    strip_server_fields(&mut m);
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("ownerReferences");
        md.remove("deletionTimestamp");
        md.remove("deletionGracePeriodSeconds");
        md.remove("finalizers");
    }
    m
}

pub(super) async fn create(
    c: &Cluster,
    object: &ObjectRef,
    manifest: &Value,
    wait: Wait,
) -> Result<Value, StepError> {
    let desired = recreatable(manifest);
    match c.get(object).await? {
        Some(live)
            if covers(
                &live,
                &json!({"spec": desired.get("spec").cloned().unwrap_or(Value::Null)}),
            ) || desired.get("spec").is_none() => {}
        Some(_) => {
            return Err(StepError(format!(
                "{} already exists and differs from the plan; plan again",
                object.display()
            )))
        }
        None => match c.create(&desired, Write::Apply).await {
            Ok(_) => {}
            // Raced with ourselves on resume: it exists now.
            Err(ClusterError::Rejected { code: 409, .. }) => {}
            Err(e) => return Err(e.into()),
        },
    }
    if wait == Wait::Ready {
        wait_ready(c, object, &desired).await?;
    }
    Ok(json!({"created": true}))
}

pub(super) async fn delete(
    c: &Cluster,
    object: &ObjectRef,
    before: Option<&Value>,
    wait: Wait,
) -> Result<Value, StepError> {
    let existed = c.delete(object, Write::Apply).await?;
    if wait == Wait::Gone {
        c.wait(object, READY_TIMEOUT, |o| match o {
            None => Ok(true),
            Some(_) => Err("still terminating".into()),
        })
        .await?;
        // A workload is gone when its pods are.
        if let (Some(b), true) = (
            before,
            matches!(object.kind.as_str(), "Deployment" | "StatefulSet"),
        ) {
            wait_no_pods(c, &object.namespace, b).await?;
        }
    }
    Ok(json!({"existed": existed}))
}

fn selector_of(workload: &Value) -> String {
    at(workload, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn wait_no_pods(c: &Cluster, namespace: &str, workload: &Value) -> Result<(), StepError> {
    let sel = selector_of(workload);
    if sel.is_empty() {
        return Ok(());
    }
    let start = std::time::Instant::now();
    loop {
        let pods = c.list("v1", "Pod", namespace, Some(&sel)).await?;
        if pods.is_empty() {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(StepError(format!(
                "pods {sel} in {namespace} did not go away within {} s",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until a workload's pods are ready, a claim is bound, a snapshot is usable.
pub(super) async fn wait_ready(
    c: &Cluster,
    object: &ObjectRef,
    desired: &Value,
) -> Result<(), StepError> {
    let want = desired["spec"]["replicas"].as_u64().unwrap_or(1);
    match object.kind.as_str() {
        "StatefulSet" | "Deployment" => {
            c.wait(object, READY_TIMEOUT, |o| {
                let o = o.ok_or_else(|| "it does not exist".to_string())?;
                let ready = o["status"]["readyReplicas"].as_u64().unwrap_or(0);
                if ready >= want {
                    Ok(true)
                } else {
                    Err(format!("{ready}/{want} replicas ready"))
                }
            })
            .await?;
        }
        "PersistentVolumeClaim" => {
            c.wait(object, READY_TIMEOUT, |o| {
                match o.and_then(|o| str_at(o, &["status", "phase"])) {
                    Some("Bound") => Ok(true),
                    other => Err(format!("phase {}", other.unwrap_or("unknown"))),
                }
            })
            .await?;
        }
        "VolumeSnapshot" => wait_snapshot(c, object, desired).await?,
        _ => {}
    }
    Ok(())
}

/// How long a snapshot controller has to take notice of a new
/// VolumeSnapshot (any status at all) before pgplan concludes that none
/// runs; a real one does within a second or two. The same bound applies to
/// an error the snapshot keeps reporting.
pub const SNAPSHOT_NOTICE: Duration = Duration::from_secs(20);

/// Once only the file system resize of a grown claim is pending, how long
/// the kubelet has to finish it online before the step says what the user
/// must do.
pub const FS_RESIZE_GRACE: Duration = Duration::from_secs(30);

/// A VolumeSnapshot is taken when it is `readyToUse`, not when it exists:
/// a cluster may serve the CRDs and run no snapshot controller, and then
/// nothing ever sets its status.
async fn wait_snapshot(c: &Cluster, object: &ObjectRef, desired: &Value) -> Result<(), StepError> {
    let class = str_at(desired, &["spec", "volumeSnapshotClassName"]).unwrap_or("(default)");
    let start = std::time::Instant::now();
    let mut erring_since: Option<std::time::Instant> = None;
    loop {
        let live = c
            .get(object)
            .await?
            .ok_or_else(|| StepError(format!("{} disappeared", object.display())))?;
        let status = live
            .get("status")
            .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
        let error = status
            .and_then(|s| str_at(s, &["error", "message"]))
            .map(str::to_string);
        match status {
            Some(s) if s["readyToUse"] == json!(true) => return Ok(()),
            None if start.elapsed() >= SNAPSHOT_NOTICE => {
                return Err(StepError(format!(
                    "{} has no status after {} s: no snapshot controller acted on it. The cluster serves the VolumeSnapshot CRDs but runs no snapshot controller (or none for class `{class}`): install the CSI snapshot controller (kubernetes-csi/external-snapshotter) and a CSI driver that can snapshot these volumes, or remove backup.snapshots",
                    object.display(),
                    SNAPSHOT_NOTICE.as_secs()
                )))
            }
            _ => {}
        }
        if let Some(msg) = &error {
            let since = *erring_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SNAPSHOT_NOTICE {
                return Err(StepError(format!(
                    "{} is not ready to use: the snapshot controller reports: {msg}",
                    object.display()
                )));
            }
        } else {
            erring_since = None;
        }
        if start.elapsed() >= READY_TIMEOUT {
            return Err(StepError(format!(
                "{} is not ready to use after {} s{}",
                object.display(),
                READY_TIMEOUT.as_secs(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a claim has the condition `kind` set to True.
fn condition<'v>(pvc: &'v Value, kind: &str) -> Option<&'v Value> {
    at(pvc, &["status", "conditions"])
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == kind && c["status"] == "True")
        })
}

/// Waits until a claim's `status.capacity` reaches `size`. When only the
/// file system resize is left (`FileSystemResizePending`) and the kubelet
/// does not finish it within [`FS_RESIZE_GRACE`], the step fails saying
/// what is pending and what to do; it is never reported grown before.
async fn wait_resized(c: &Cluster, object: &ObjectRef, size: &str) -> Result<(), StepError> {
    let want = crate::quantity::parse_bytes(size).map_err(StepError)?;
    let start = std::time::Instant::now();
    let mut pending_since: Option<std::time::Instant> = None;
    loop {
        let live = c
            .get(object)
            .await?
            .ok_or_else(|| StepError(format!("{} disappeared", object.display())))?;
        let capacity = str_at(&live, &["status", "capacity", "storage"]);
        let have = capacity.and_then(|q| crate::quantity::parse_bytes(q).ok());
        if have.is_some_and(|h| h >= want) {
            return Ok(());
        }
        let capacity = capacity.unwrap_or("no capacity");
        if let Some(cond) = condition(&live, "FileSystemResizePending") {
            let since = *pending_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= FS_RESIZE_GRACE {
                let pods = pods_using(c, &object.namespace, &object.name).await?;
                let restart = match pods.as_slice() {
                    [] => "start a pod that mounts it".to_string(),
                    pods => format!(
                        "restart the pod that mounts it (`kubectl delete pod -n {} {}`; its controller recreates it)",
                        object.namespace,
                        pods.join(" ")
                    ),
                };
                return Err(StepError(format!(
                    "{} asks for {size} and still has {capacity}: the volume has grown, but its file system resize is pending (FileSystemResizePending: {}). The kubelet finishes it when a pod mounts the claim: {restart}, then run `pgplan apply` again to confirm the new size",
                    object.display(),
                    str_at(cond, &["message"]).unwrap_or("no message")
                )));
            }
        }
        if start.elapsed() >= READY_TIMEOUT {
            let conditions: Vec<String> = at(&live, &["status", "conditions"])
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| str_at(c, &["type"]).map(str::to_string))
                .collect();
            return Err(StepError(format!(
                "{} asks for {size} and still has {capacity} after {} s{}: the volume was not resized; `kubectl describe pvc -n {} {}` shows the resizer's events",
                object.display(),
                READY_TIMEOUT.as_secs(),
                if conditions.is_empty() {
                    String::new()
                } else {
                    format!(" (conditions: {})", conditions.join(", "))
                },
                object.namespace,
                object.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Names of the pods in `namespace` that mount claim `claim`.
async fn pods_using(c: &Cluster, namespace: &str, claim: &str) -> Result<Vec<String>, StepError> {
    let pods = c.list("v1", "Pod", namespace, None).await?;
    Ok(pods
        .iter()
        .filter(|p| {
            at(p, &["spec", "volumes"])
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| str_at(v, &["persistentVolumeClaim", "claimName"]) == Some(claim))
                })
        })
        .filter_map(|p| str_at(p, &["metadata", "name"]).map(str::to_string))
        .collect())
}

async fn scale(
    c: &Cluster,
    object: &ObjectRef,
    from: u32,
    to: u32,
    purpose: ScalePurpose,
    field: Option<&str>,
) -> Result<Value, StepError> {
    let path = field.unwrap_or("spec.replicas");
    let live = c
        .get(object)
        .await?
        .ok_or_else(|| StepError(format!("{} does not exist", object.display())))?;
    let current = get_field(&live, path).and_then(Value::as_u64).unwrap_or(1) as u32;
    let mut patch = field_patch(path, json!(to));
    match purpose {
        // Remember the replica count on the object itself, so that even a
        // lost journal leaves the way back written down.
        ScalePurpose::Quiesce => merge_patch(
            &mut patch,
            &json!({"metadata": {"annotations": {QUIESCED_ANNOTATION: from.max(current).to_string()}}}),
        ),
        // A JSON null in a merge patch removes the key (merging it into the
        // patch itself would drop it instead).
        ScalePurpose::Resume => patch["metadata"]["annotations"][QUIESCED_ANNOTATION] = Value::Null,
    }
    if current != to || purpose == ScalePurpose::Resume {
        c.merge_patch(object, &patch, Write::Apply).await?;
    }
    if field.is_none() {
        match purpose {
            ScalePurpose::Quiesce => wait_no_pods(c, &object.namespace, &live).await?,
            ScalePurpose::Resume => {
                wait_ready(c, object, &json!({"spec": {"replicas": to}})).await?
            }
        }
    }
    if purpose == ScalePurpose::Resume {
        forget_quiesce_on_replica_sets(c, object).await?;
    }
    Ok(json!({"replicasBefore": current}))
}

/// The Deployment controller copies a Deployment's annotations onto its
/// ReplicaSet and never removes them (`SetNewReplicaSetAnnotations`), so
/// [`QUIESCED_ANNOTATION`], once taken off a Deployment, is taken off the
/// ReplicaSets it owns too: no copy outlives the apply, and `kubectl rollout
/// undo`, which copies a ReplicaSet's annotations back onto the Deployment,
/// cannot bring it back. Called once the Deployment is ready at its count
/// again, i.e. once its controller has seen the Deployment without the
/// annotation and will not copy it again.
pub(super) async fn forget_quiesce_on_replica_sets(
    c: &Cluster,
    deployment: &ObjectRef,
) -> Result<(), StepError> {
    if deployment.kind != "Deployment" {
        return Ok(());
    }
    let Some(live) = c.get(deployment).await? else {
        return Ok(());
    };
    let uid = str_at(&live, &["metadata", "uid"]).unwrap_or_default();
    let sel = selector_of(&live);
    let sets = c
        .list(
            "apps/v1",
            "ReplicaSet",
            &deployment.namespace,
            (!sel.is_empty()).then_some(sel.as_str()),
        )
        .await?;
    let clear = json!({"metadata": {"annotations": {QUIESCED_ANNOTATION: null}}});
    for rs in sets {
        let owned = at(&rs, &["metadata", "ownerReferences"])
            .and_then(Value::as_array)
            .is_some_and(|refs| refs.iter().any(|r| str_at(r, &["uid"]) == Some(uid)));
        let marked = at(&rs, &["metadata", "annotations", QUIESCED_ANNOTATION]).is_some();
        if !(owned && marked) {
            continue;
        }
        let Some(r) = ObjectRef::of(&rs) else {
            continue;
        };
        match c.merge_patch(&r, &clear, Write::Apply).await {
            Ok(_) | Err(ClusterError::Rejected { code: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn self_heal(
    w: &World<'_>,
    pod: &ObjectRef,
    workload: &ObjectRef,
    database: &str,
    expect_rows: u64,
) -> Result<Value, StepError> {
    restart_pod(w, pod).await?;
    let rows = super::data::count_rows(w, &pod.namespace, &pod.name, database).await?;
    let _ = workload;
    if rows != expect_rows {
        return Err(StepError(format!(
            "after {} was recreated, {database} has {rows} rows instead of {expect_rows}: the volume did not come back",
            pod.display()
        )));
    }
    Ok(json!({"rows": rows}))
}

/// Deletes a pod of a StatefulSet and waits until its replacement (a new
/// uid) is Ready: how a server in a pod is restarted.
pub(super) async fn restart_pod(w: &World<'_>, pod: &ObjectRef) -> Result<(), StepError> {
    let c = cluster(w)?;
    let before = c
        .get(pod)
        .await?
        .ok_or_else(|| StepError(format!("{} does not exist", pod.display())))?;
    let uid = str_at(&before, &["metadata", "uid"])
        .unwrap_or_default()
        .to_string();
    c.delete(pod, Write::Apply).await?;
    c.wait(pod, READY_TIMEOUT, |o| {
        let o = o.ok_or_else(|| "not recreated yet".to_string())?;
        let new = str_at(o, &["metadata", "uid"]) != Some(uid.as_str());
        let ready = o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if new && ready {
            Ok(true)
        } else {
            Err("waiting for the recreated pod to be ready".into())
        }
    })
    .await?;
    Ok(())
}

async fn http_check(url: &str, expect: u16, contains: Option<&str>) -> Result<Value, StepError> {
    let (status, body) = super::data::http_get(url).await?;
    if status != expect {
        return Err(StepError(format!(
            "GET {url} answered {status}, expected {expect}"
        )));
    }
    if let Some(text) = contains {
        if !body.contains(text) {
            return Err(StepError(format!("GET {url} did not contain `{text}`")));
        }
    }
    Ok(json!({"status": status}))
}
