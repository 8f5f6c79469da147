//! Rollback: compensations, run newest first, for every step done before
//! the commit point. What comes back: the consumers at their replica
//! counts, the source workload on its original volume (or, for a source
//! whose data lived in the pod, restored from the verified backup), the
//! old Service, and nothing of the target pgplan created. What is kept is
//! said plainly: backups, snapshots, an RDS instance the spec does not
//! allow deleting, Secret values pgplan never read.

use serde_json::{json, Value};

use super::act::{self, cluster, recreatable, StepError};
use super::World;
use crate::cluster::{ClusterError, Write};
use crate::diff::manifests::{covers, diff_patch};
use crate::plan::{ObjectRef, Operation, Risk, ScalePurpose, ServerRef, Step, Wait};

/// What a compensation did.
pub enum Undo {
    /// Undone, with what was done.
    Undone(String),
    /// Left as is, with why.
    Kept(String),
    /// Nothing to undo.
    Nothing,
}

/// Undo one step, given the facts its act recorded (if it got that far).
/// `source` is the placement's source server, which a compensation that
/// brings it back waits for.
pub(super) async fn undo(
    w: &World<'_>,
    step: &Step,
    facts: Option<&Value>,
    done: &std::collections::BTreeMap<String, Value>,
    source: Option<&ServerRef>,
) -> Result<Undo, StepError> {
    match &step.operation {
        Operation::Scale {
            object,
            from,
            purpose: ScalePurpose::Quiesce,
            field,
            ..
        } => {
            let c = cluster(w)?;
            let path = field.clone().unwrap_or_else(|| "spec.replicas".into());
            let mut patch = crate::diff::manifests::field_patch(&path, json!(from));
            patch["metadata"]["annotations"][crate::plan::QUIESCED_ANNOTATION] = Value::Null;
            match c.merge_patch(object, &patch, Write::Apply).await {
                Ok(_) => {}
                Err(ClusterError::Rejected { code: 404, .. }) => {
                    return Ok(Undo::Kept(format!("{} is gone", object.display())))
                }
                Err(e) => return Err(e.into()),
            }
            if field.is_none() {
                act::wait_ready(c, object, &json!({"spec": {"replicas": from}})).await?;
            }
            act::forget_quiesce_on_replica_sets(c, object).await?;
            Ok(Undo::Undone(format!(
                "{} back at {from} replicas",
                object.display()
            )))
        }
        Operation::Scale { .. } => Ok(Undo::Nothing),
        Operation::ProtectVolume { volume, from } => {
            let c = cluster(w)?;
            c.merge_patch(
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
        Operation::Delete { object, .. } => {
            let Some(before) = &step.before else {
                return Ok(Undo::Kept(format!(
                    "no manifest of {} was recorded",
                    object.display()
                )));
            };
            let c = cluster(w)?;
            let manifest = recreatable(before);
            act::create(
                c,
                object,
                &manifest,
                if is_workload(object) {
                    Wait::Ready
                } else {
                    Wait::None
                },
            )
            .await?;
            if step.risk == Risk::Destructive && is_workload(object) {
                // Its data lived in the pod: bring it back from the backup.
                let restored = super::data::restore_source(w, step, done).await?;
                return Ok(Undo::Undone(format!(
                    "{} recreated and {restored}",
                    object.display()
                )));
            }
            Ok(Undo::Undone(format!(
                "{} recreated on its original volume",
                object.display()
            )))
        }
        Operation::Replace { object, .. } => {
            let c = cluster(w)?;
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
            c.wait(object, act::READY_TIMEOUT, |o| {
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
        Operation::Create { object, .. } => {
            if object.kind == "VolumeSnapshot" {
                let c = cluster(w)?;
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
            let c = cluster(w)?;
            let after = step.after.clone().unwrap_or(Value::Null);
            act::delete(c, object, Some(&after), Wait::Gone).await?;
            if object.kind == "StatefulSet" {
                // Its claims were created for it by this apply.
                let replicas = after["spec"]["replicas"].as_u64().unwrap_or(1);
                for t in after["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let Some(tn) = t["metadata"]["name"].as_str() else {
                        continue;
                    };
                    for i in 0..replicas {
                        let pvc = ObjectRef::new(
                            "v1",
                            "PersistentVolumeClaim",
                            &object.namespace,
                            &format!("{tn}-{}-{i}", object.name),
                        );
                        act::delete(c, &pvc, None, Wait::Gone).await?;
                    }
                }
            }
            Ok(Undo::Undone(format!("{} deleted", object.display())))
        }
        Operation::Patch { object, .. } => {
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
            cluster(w)?
                .merge_patch(object, &reverse, Write::Apply)
                .await?;
            // Pointing a consumer back at its local database (a Backstage CR's
            // `enableLocalDb`) makes its operator recreate that database:
            // the compensation is done when the source serves again, not
            // when the patch is accepted. A source pgplan deleted itself is
            // brought back (and waited for) by that step's compensation.
            if let Some(server @ ServerRef::Pod { workload, .. }) = source {
                if step.addr().phase() == Some(crate::addr::Phase::Reconfigure)
                    && !done.contains_key(&workload.address())
                {
                    super::data::wait_serving(w, server, act::READY_TIMEOUT).await?;
                    return Ok(Undo::Undone(format!(
                        "{} changed back, and {} serves again",
                        object.display(),
                        workload.display()
                    )));
                }
            }
            Ok(Undo::Undone(format!("{} changed back", object.display())))
        }
        Operation::Secret { object, .. } => {
            if step.before.is_some() {
                return Ok(Undo::Kept(format!(
                    "{} keeps its new values: pgplan never reads Secret values, so the old ones cannot be put back",
                    object.display()
                )));
            }
            cluster(w)?.delete(object, Write::Apply).await?;
            Ok(Undo::Undone(format!("{} deleted", object.display())))
        }
        Operation::Backup { .. } => {
            let at = facts
                .and_then(|f| f["archive"].as_str())
                .unwrap_or("the backup directory");
            Ok(Undo::Kept(format!("the backup stays at {at}")))
        }
        Operation::PrepareTarget { .. } => super::data::undo_prepare(w, step, facts).await,
        Operation::CreateRdsInstance { .. }
        | Operation::ModifyRdsInstance { .. }
        | Operation::SnapshotRdsInstance { .. } => super::data::undo_rds(w, step, facts).await,
        // The tuned server goes with the StatefulSet pgplan created for it.
        Operation::TuneForLoading { .. }
        | Operation::UntuneAfterLoading { .. }
        | Operation::Restore { .. }
        | Operation::ReleaseKnexLocks { .. }
        | Operation::Verify { .. }
        | Operation::SelfHeal { .. }
        | Operation::HttpCheck { .. } => Ok(Undo::Nothing),
    }
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
