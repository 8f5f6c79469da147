//! The steps on Kubernetes objects — create, delete, replace, patch,
//! scale, protect a volume — each with its compensation, and the waits
//! that say when one has taken effect. Every act is idempotent: it first
//! looks at what is there and does nothing when the step's effect already
//! holds, which is what makes `--resume` safe after a crash mid-step.
//!
//! The acts take the [`Write`] they make: `pgplan plan` runs the same
//! acts with [`Write::DryRun`] (see `dispatch::dry_run`), so the server
//! checks the very requests apply will send; a dry run waits for nothing.

use std::time::Duration;

use serde_json::{json, Value};

use super::outcome::{Outcome, StepError, Undo};
use super::world::{World, READY_TIMEOUT};
use crate::cluster::{Cluster, ClusterError, Write};
use crate::diff::manifests::{
    covers, diff_patch, field_patch, get_field, merge_patch, strip_server_fields,
};
use crate::observed::{at, str_at};
use crate::plan::{ObjectRef, ScalePurpose, ServerRef, Step, Wait, QUIESCED_ANNOTATION};

/// The manifest a step creates (its `after`).
fn after_of(step: &Step) -> Result<&Value, StepError> {
    step.after
        .as_ref()
        .ok_or_else(|| StepError::new(format!("{}: no manifest to create", step.address)))
}

/// Create the step's `after`.
pub async fn create_step(
    c: &Cluster,
    write: Write,
    step: &Step,
    object: &ObjectRef,
    wait: Wait,
) -> Result<Outcome, StepError> {
    create(c, write, object, after_of(step)?, wait).await
}

/// Delete an object; a workload is gone when its pods are.
pub async fn delete_step(
    c: &Cluster,
    write: Write,
    step: &Step,
    object: &ObjectRef,
    wait: Wait,
) -> Result<Outcome, StepError> {
    delete(c, write, object, step.before.as_ref(), wait).await
}

/// Delete the step's `before` and create its `after`, unless the live
/// object is the `after` already.
pub async fn replace(
    c: &Cluster,
    step: &Step,
    object: &ObjectRef,
    wait: Wait,
) -> Result<Outcome, StepError> {
    let after = after_of(step)?;
    if let Some(live) = c.get(object).await? {
        if covers(&live, after) {
            return Ok(Outcome::Created { created: false });
        }
    }
    delete(c, Write::Apply, object, step.before.as_ref(), Wait::Gone).await?;
    create(c, Write::Apply, object, after, wait).await
}

/// Merge-patch an object (a claim: and wait until it has grown).
pub async fn patch(
    c: &Cluster,
    write: Write,
    object: &ObjectRef,
    patch: &Value,
) -> Result<Outcome, StepError> {
    let live = c
        .get(object)
        .await?
        .ok_or_else(|| StepError::new(format!("{} does not exist", object.display())))?;
    let mut merged = live.clone();
    merge_patch(&mut merged, patch);
    let already = covers(&live, &merged) && covers(&merged, &live);
    if !already {
        c.merge_patch(object, patch, write).await?;
    }
    // A claim has grown when its capacity says so, not when the
    // request was accepted (also when a resize asked for earlier is
    // still pending).
    if object.kind == "PersistentVolumeClaim" && write == Write::Apply {
        if let Some(size) =
            get_field(patch, "spec.resources.requests.storage").and_then(Value::as_str)
        {
            wait_resized(c, object, size).await?;
        }
    }
    Ok(Outcome::Patched { changed: !already })
}

/// Keep a volume's data past its claim: reclaim policy Retain.
pub async fn protect_volume(
    c: &Cluster,
    write: Write,
    volume: &ObjectRef,
    from: &str,
) -> Result<Outcome, StepError> {
    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    c.merge_patch(volume, &patch, write).await?;
    Ok(Outcome::VolumeProtected {
        from: from.to_string(),
    })
}

/// A manifest as pgplan writes it back: no server-owned fields, no clusterIP pinned.
pub fn recreatable(manifest: &Value) -> Value {
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

async fn create(
    c: &Cluster,
    write: Write,
    object: &ObjectRef,
    manifest: &Value,
    wait: Wait,
) -> Result<Outcome, StepError> {
    let desired = recreatable(manifest);
    match c.get(object).await? {
        Some(live)
            if covers(
                &live,
                &json!({"spec": desired.get("spec").cloned().unwrap_or(Value::Null)}),
            ) || desired.get("spec").is_none() => {}
        Some(_) => {
            return Err(StepError::new(format!(
                "{} already exists and differs from the plan; plan again",
                object.display()
            )))
        }
        None => match c.create(&desired, write).await {
            Ok(_) => {}
            // Raced with ourselves on resume: it exists now.
            Err(ClusterError::Rejected { code: 409, .. }) => {}
            Err(e) => return Err(e.into()),
        },
    }
    if wait == Wait::Ready && write == Write::Apply {
        wait_ready(c, object, &desired).await?;
    }
    Ok(Outcome::Created { created: true })
}

async fn delete(
    c: &Cluster,
    write: Write,
    object: &ObjectRef,
    before: Option<&Value>,
    wait: Wait,
) -> Result<Outcome, StepError> {
    let existed = c.delete(object, write).await?;
    if wait == Wait::Gone && write == Write::Apply {
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
    Ok(Outcome::Deleted { existed })
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
            return Err(StepError::new(format!(
                "pods {sel} in {namespace} did not go away within {} s",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until a workload's pods are ready, a claim is bound, a snapshot is usable.
async fn wait_ready(c: &Cluster, object: &ObjectRef, desired: &Value) -> Result<(), StepError> {
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
            .ok_or_else(|| StepError::new(format!("{} disappeared", object.display())))?;
        let status = live
            .get("status")
            .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
        let error = status
            .and_then(|s| str_at(s, &["error", "message"]))
            .map(str::to_string);
        match status {
            Some(s) if s["readyToUse"] == json!(true) => return Ok(()),
            None if start.elapsed() >= SNAPSHOT_NOTICE => {
                return Err(StepError::new(format!(
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
                return Err(StepError::new(format!(
                    "{} is not ready to use: the snapshot controller reports: {msg}",
                    object.display()
                )));
            }
        } else {
            erring_since = None;
        }
        if start.elapsed() >= READY_TIMEOUT {
            return Err(StepError::new(format!(
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
    let want = crate::quantity::parse_bytes(size).map_err(StepError::new)?;
    let start = std::time::Instant::now();
    let mut pending_since: Option<std::time::Instant> = None;
    loop {
        let live = c
            .get(object)
            .await?
            .ok_or_else(|| StepError::new(format!("{} disappeared", object.display())))?;
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
                return Err(StepError::new(format!(
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
            return Err(StepError::new(format!(
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

pub async fn scale(
    c: &Cluster,
    write: Write,
    object: &ObjectRef,
    from: u32,
    to: u32,
    purpose: ScalePurpose,
    field: Option<&str>,
) -> Result<Outcome, StepError> {
    let path = field.unwrap_or("spec.replicas");
    let live = c
        .get(object)
        .await?
        .ok_or_else(|| StepError::new(format!("{} does not exist", object.display())))?;
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
        c.merge_patch(object, &patch, write).await?;
    }
    if write == Write::DryRun {
        return Ok(Outcome::Scaled {
            replicas_before: current,
        });
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
    Ok(Outcome::Scaled {
        replicas_before: current,
    })
}

/// The Deployment controller copies a Deployment's annotations onto its
/// ReplicaSet and never removes them (`SetNewReplicaSetAnnotations`), so
/// [`QUIESCED_ANNOTATION`], once taken off a Deployment, is taken off the
/// ReplicaSets it owns too: no copy outlives the apply, and `kubectl rollout
/// undo`, which copies a ReplicaSet's annotations back onto the Deployment,
/// cannot bring it back. Called once the Deployment is ready at its count
/// again, i.e. once its controller has seen the Deployment without the
/// annotation and will not copy it again.
async fn forget_quiesce_on_replica_sets(
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
/// Undo a quiesce: the consumer back at its count, the bookkeeping gone.
pub async fn undo_quiesce(
    w: &World<'_>,
    object: &ObjectRef,
    from: u32,
    field: Option<&str>,
) -> Result<Undo, StepError> {
    let c = w.cluster()?;
    let path = field.unwrap_or("spec.replicas");
    let mut patch = field_patch(path, json!(from));
    patch["metadata"]["annotations"][QUIESCED_ANNOTATION] = Value::Null;
    match c.merge_patch(object, &patch, Write::Apply).await {
        Ok(_) => {}
        Err(ClusterError::Rejected { code: 404, .. }) => {
            return Ok(Undo::Kept(format!("{} is gone", object.display())))
        }
        Err(e) => return Err(e.into()),
    }
    if field.is_none() {
        wait_ready(c, object, &json!({"spec": {"replicas": from}})).await?;
    }
    forget_quiesce_on_replica_sets(c, object).await?;
    Ok(Undo::Undone(format!(
        "{} back at {from} replicas",
        object.display()
    )))
}

/// Put a volume's reclaim policy back.
pub async fn undo_protect_volume(
    w: &World<'_>,
    volume: &ObjectRef,
    from: &str,
) -> Result<Undo, StepError> {
    w.cluster()?
        .merge_patch(
            volume,
            &json!({"spec": {"persistentVolumeReclaimPolicy": from}}),
            Write::Apply,
        )
        .await?;
    Ok(Undo::Undone(format!(
        "{} reclaim policy back to {from}",
        volume.display()
    )))
}

/// Whether deleting this object took data with it: a workload whose data
/// lived in its pod (the planner marks that step destructive).
pub fn took_its_data(step: &Step, object: &ObjectRef) -> bool {
    step.risk == crate::plan::Risk::Destructive && is_workload(object)
}

/// Recreate a deleted object from the manifest the step recorded (a
/// workload: and wait until it is ready). `None` when none was recorded.
pub async fn recreate(
    w: &World<'_>,
    step: &Step,
    object: &ObjectRef,
) -> Result<Option<()>, StepError> {
    let Some(before) = &step.before else {
        return Ok(None);
    };
    let manifest = recreatable(before);
    let wait = if is_workload(object) {
        Wait::Ready
    } else {
        Wait::None
    };
    create(w.cluster()?, Write::Apply, object, &manifest, wait).await?;
    Ok(Some(()))
}

/// Undo a replace: the old object back (its cluster IP, when still free).
pub async fn undo_replace(
    w: &World<'_>,
    step: &Step,
    object: &ObjectRef,
) -> Result<Undo, StepError> {
    let c = w.cluster()?;
    // Run again by a resumed rollback: the old object may be back
    // already, and deleting it again would change its cluster IP.
    if let (Some(before), Some(live)) = (&step.before, c.get(object).await?) {
        let is_replacement = step
            .after
            .as_ref()
            .is_some_and(|a| covers(&live, &json!({"spec": spec_of(a)})));
        let mut old = spec_of(before);
        // The server may have picked it a new cluster IP.
        if let Some(o) = old.as_object_mut() {
            o.remove("clusterIP");
            o.remove("clusterIPs");
        }
        if !is_replacement && covers(&live, &json!({ "spec": old })) {
            return Ok(Undo::Undone(format!(
                "the old {} is back",
                object.display()
            )));
        }
    }
    c.delete(object, Write::Apply).await?;
    c.wait(object, READY_TIMEOUT, |o| {
        if o.is_none() {
            Ok(true)
        } else {
            Err("terminating".into())
        }
    })
    .await?;
    let Some(before) = &step.before else {
        return Ok(Undo::Kept(format!(
            "no manifest of the old {} was recorded",
            object.display()
        )));
    };
    let mut old = recreatable(before);
    if c.create(&old, Write::Apply).await.is_err() {
        // Its cluster IP may be taken by now: let the server pick one.
        if let Some(spec) = old.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        c.create(&old, Write::Apply).await?;
    }
    Ok(Undo::Undone(format!(
        "the old {} is back",
        object.display()
    )))
}

/// Undo a create: what this apply created is deleted (a StatefulSet with
/// the claims made for it); a snapshot that became usable is kept as a
/// restore point.
pub async fn undo_create(
    w: &World<'_>,
    step: &Step,
    object: &ObjectRef,
) -> Result<Undo, StepError> {
    let c = w.cluster()?;
    if object.kind == "VolumeSnapshot" {
        // One that never became usable is no restore point.
        let ready = c
            .get(object)
            .await?
            .is_some_and(|s| s["status"]["readyToUse"] == json!(true));
        if !ready {
            let existed = c.delete(object, Write::Apply).await?;
            return Ok(if existed {
                Undo::Undone(format!(
                    "{} deleted: it never became ready to use",
                    object.display()
                ))
            } else {
                Undo::Nothing
            });
        }
        return Ok(Undo::Kept(format!(
            "{} kept as a restore point",
            object.display()
        )));
    }
    let after = step.after.clone().unwrap_or(Value::Null);
    delete(c, Write::Apply, object, Some(&after), Wait::Gone).await?;
    if object.kind == "StatefulSet" {
        // Its claims were created for it by this apply.
        let replicas = after["spec"]["replicas"].as_u64().unwrap_or(1);
        for t in after["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(template) = t["metadata"]["name"].as_str() else {
                continue;
            };
            for ordinal in 0..replicas {
                let pvc = ObjectRef::new(
                    "v1",
                    "PersistentVolumeClaim",
                    &object.namespace,
                    &crate::names::claim_name(template, &object.name, ordinal),
                );
                delete(c, Write::Apply, &pvc, None, Wait::Gone).await?;
            }
        }
    }
    Ok(Undo::Undone(format!("{} deleted", object.display())))
}

/// Undo a patch: the reverse patch (a grown claim stays grown). With
/// `serving`, the compensation is done when that server serves again, not
/// when the patch is accepted: pointing a consumer back at its local
/// database (a Backstage CR's `enableLocalDb`) makes its operator recreate
/// that database.
pub async fn undo_patch(
    w: &World<'_>,
    step: &Step,
    object: &ObjectRef,
    serving: Option<(&ServerRef, &ObjectRef)>,
) -> Result<Undo, StepError> {
    if object.kind == "PersistentVolumeClaim" {
        return Ok(Undo::Kept(format!(
            "{} stays grown: volumes cannot shrink",
            object.display()
        )));
    }
    let (Some(before), Some(after)) = (&step.before, &step.after) else {
        return Ok(Undo::Nothing);
    };
    let Some(reverse) = diff_patch(after, before) else {
        return Ok(Undo::Nothing);
    };
    w.cluster()?
        .merge_patch(object, &reverse, Write::Apply)
        .await?;
    if let Some((server, workload)) = serving {
        super::servers::wait_serving(w, server, READY_TIMEOUT).await?;
        return Ok(Undo::Undone(format!(
            "{} changed back, and {} serves again",
            object.display(),
            workload.display()
        )));
    }
    Ok(Undo::Undone(format!("{} changed back", object.display())))
}

/// A manifest's spec as pgplan would create it.
fn spec_of(manifest: &Value) -> Value {
    recreatable(manifest)
        .get("spec")
        .cloned()
        .unwrap_or(Value::Null)
}

fn is_workload(o: &ObjectRef) -> bool {
    matches!(o.kind.as_str(), "Deployment" | "StatefulSet")
}
