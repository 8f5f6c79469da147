//! The one place an operation meets the code that performs it: an
//! exhaustive `match` for the act, one for the compensation and one for
//! what a plan's dry run checks, with no fallback arm, so a new operation does not compile until both say what
//! it does. Each arm hands the operation's fields to its family module
//! (`kube`, `pgdata`, `rds`, `secret`, `probe`); dependencies run one way,
//! dispatch → families → `servers` → `world`/`outcome`.

use super::outcome::{Outcome, StepError, Undo};
use super::pgdata::{self, Done};
use super::world::World;
use super::{kube, probe, rds, secret};
use crate::cluster::{Cluster, Write};
use crate::plan::{Operation, ScalePurpose, ServerRef, Step};

/// The writes of an apply are real.
const APPLY: Write = Write::Apply;

/// Run one step; its outcome. `deps` are the outcomes of the steps it
/// depends on (and of the backups it reads).
pub async fn act(w: &World<'_>, step: &Step, deps: &Done) -> Result<Outcome, StepError> {
    // The cluster, for a step that writes to it.
    let c = || w.cluster();
    match &step.operation {
        Operation::Create { object, wait } => {
            kube::create_step(c()?, APPLY, step, object, *wait).await
        }
        Operation::Delete { object, wait } => {
            kube::delete_step(c()?, APPLY, step, object, *wait).await
        }
        Operation::Replace { object, wait } => kube::replace(c()?, step, object, *wait).await,
        Operation::Patch { object, patch } => kube::patch(c()?, APPLY, object, patch).await,
        Operation::Scale {
            object,
            from,
            to,
            purpose,
            field,
        } => kube::scale(c()?, APPLY, object, *from, *to, *purpose, field.as_deref()).await,
        Operation::ProtectVolume { volume, from } => {
            kube::protect_volume(c()?, APPLY, volume, from).await
        }
        Operation::Secret {
            object, contents, ..
        } => secret::write(w, object, contents).await,
        Operation::Backup {
            server,
            database,
            format,
            jobs,
            directory,
            claim,
            verifiers,
        } => {
            let how = (*format, *jobs);
            let to = pgdata::BackupTo::of(claim.as_ref(), directory);
            pgdata::backup(w, step, server, database, how, to, *verifiers).await
        }
        Operation::PrepareTarget {
            server,
            roles,
            databases,
            strip_superuser,
            passwords,
            verifiers_from,
        } => {
            let p = pgdata::Prepare {
                server,
                roles,
                databases,
                strip_superuser: *strip_superuser,
                passwords,
                verifiers_from: verifiers_from.as_deref(),
            };
            pgdata::prepare(w, step, p, deps).await
        }
        Operation::TuneForLoading {
            server,
            pod,
            minimal_wal,
        } => pgdata::tune(w, server, pod, *minimal_wal).await,
        Operation::Restore {
            server,
            database,
            backup_step,
            jobs,
        } => pgdata::restore(w, step, server, database, backup_step, *jobs, deps).await,
        Operation::ReleaseKnexLocks {
            server,
            database,
            tables,
        } => pgdata::release_knex_locks(w, step, server, database, tables).await,
        Operation::UntuneAfterLoading { server, pod, .. } => pgdata::untune(w, server, pod).await,
        Operation::Verify {
            target,
            database,
            backup_step,
            checks,
            roles,
            ..
        } => {
            let checks = (checks, roles.as_deref());
            pgdata::verify(w, step, target, database, backup_step, checks, deps).await
        }
        Operation::CreateRdsInstance { settings, .. } => {
            rds::create_instance(w, step, settings).await
        }
        Operation::ModifyRdsInstance { settings, .. } => {
            rds::modify_instance(w, step, settings).await
        }
        Operation::SnapshotRdsInstance {
            identifier,
            snapshot,
            ..
        } => rds::snapshot(w, step, identifier, snapshot).await,
        Operation::SelfHeal {
            pod,
            database,
            expect_rows,
            ..
        } => probe::self_heal(w, pod, database, *expect_rows).await,
        Operation::HttpCheck {
            url,
            expect_status,
            contains,
            ..
        } => probe::http_check(url, *expect_status, contains.as_deref()).await,
    }
}

/// What `pgplan plan` checks with the API server before anything runs:
/// each write a step makes to the cluster, by the same act as apply with
/// `dryRun=All` (admission, validation, immutability, quota), waiting for
/// nothing. A replacement is not checked (its delete-then-create cannot be
/// dry-run as one request); steps on data, RDS or probes write nothing a
/// Kubernetes API server checks.
pub async fn dry_run(c: &Cluster, step: &Step) -> Result<(), StepError> {
    const DRY: Write = Write::DryRun;
    match &step.operation {
        Operation::Create { object, wait } => {
            kube::create_step(c, DRY, step, object, *wait).await?;
        }
        Operation::Delete { object, wait } => {
            kube::delete_step(c, DRY, step, object, *wait).await?;
        }
        Operation::Patch { object, patch } => {
            kube::patch(c, DRY, object, patch).await?;
        }
        Operation::Scale {
            object,
            from,
            to,
            purpose,
            field,
        } => {
            kube::scale(c, DRY, object, *from, *to, *purpose, field.as_deref()).await?;
        }
        Operation::ProtectVolume { volume, from } => {
            kube::protect_volume(c, DRY, volume, from).await?;
        }
        Operation::Secret {
            object, contents, ..
        } => {
            secret::dry_run(c, object, contents).await?;
        }
        Operation::Replace { .. }
        | Operation::Backup { .. }
        | Operation::PrepareTarget { .. }
        | Operation::TuneForLoading { .. }
        | Operation::Restore { .. }
        | Operation::ReleaseKnexLocks { .. }
        | Operation::UntuneAfterLoading { .. }
        | Operation::Verify { .. }
        | Operation::CreateRdsInstance { .. }
        | Operation::ModifyRdsInstance { .. }
        | Operation::SnapshotRdsInstance { .. }
        | Operation::SelfHeal { .. }
        | Operation::HttpCheck { .. } => {}
    }
    Ok(())
}

/// Undo one step, given the outcome its act recorded (if it got that
/// far) and those of every step done. `source` is the placement's source
/// server, which a compensation that brings it back waits for.
pub async fn undo(
    w: &World<'_>,
    step: &Step,
    outcome: Option<&Outcome>,
    done: &Done,
    source: Option<&ServerRef>,
) -> Result<Undo, StepError> {
    match &step.operation {
        Operation::Scale {
            object,
            from,
            purpose: ScalePurpose::Quiesce,
            field,
            to: _,
        } => kube::undo_quiesce(w, object, *from, field.as_deref()).await,
        Operation::Scale {
            purpose: ScalePurpose::Resume,
            ..
        } => Ok(Undo::Nothing),
        Operation::ProtectVolume { volume, from } => {
            kube::undo_protect_volume(w, volume, from).await
        }
        Operation::Delete { object, .. } => {
            if kube::recreate(w, step, object).await?.is_none() {
                return Ok(Undo::Kept(format!(
                    "no manifest of {} was recorded",
                    object.display()
                )));
            }
            if kube::took_its_data(step, object) {
                // Its data lived in the pod: bring it back from the backup.
                let restored = pgdata::restore_source(w, step, done).await?;
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
        Operation::Replace { object, .. } => kube::undo_replace(w, step, object).await,
        Operation::Create { object, .. } => kube::undo_create(w, step, object).await,
        Operation::Patch { object, .. } => {
            // Switching consumers back brings a source pgplan did not delete
            // back into service (a source it deleted is brought back, and
            // waited for, by that step's compensation).
            let reconfigure = step.addr().phase() == Some(crate::addr::Phase::Reconfigure);
            let serving = source
                .and_then(|server| match server {
                    ServerRef::Pod { workload, .. } => Some((server, workload)),
                    ServerRef::Direct { .. } => None,
                })
                .filter(|(_, workload)| reconfigure && !done.contains_key(&workload.address()));
            kube::undo_patch(w, step, object, serving).await
        }
        Operation::Secret { object, .. } => secret::undo(w, step, object).await,
        Operation::Backup { .. } => Ok(pgdata::undo_backup(outcome)),
        Operation::PrepareTarget {
            server,
            roles,
            databases,
            ..
        } => pgdata::undo_prepare(w, server, roles, databases, outcome).await,
        Operation::CreateRdsInstance {
            settings,
            delete_on_rollback,
        } => rds::undo_create_instance(w, settings, *delete_on_rollback, outcome).await,
        Operation::ModifyRdsInstance { settings, changes } => {
            Ok(rds::undo_modify_instance(settings, changes))
        }
        Operation::SnapshotRdsInstance { snapshot, .. } => Ok(rds::undo_snapshot(snapshot)),
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
