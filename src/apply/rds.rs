//! The steps on AWS RDS — create, modify, snapshot an instance — and
//! their compensations: an instance this apply created is deleted only
//! when the spec allows it; changes and snapshots are kept and said so.

use super::outcome::{Outcome, StepError, Undo};
use super::world::World;
use crate::plan::{RdsSettings, Step};

/// How long an RDS instance may take to become available.
const RDS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Progress of a long RDS wait, as event notes.
fn progress<'a>(w: &'a World<'_>, step: &'a Step) -> impl Fn(&str, std::time::Duration) + 'a {
    move |status: &str, waited: std::time::Duration| {
        w.events.note(&format!(
            "  {}: {status} after {} s",
            step.address,
            waited.as_secs()
        ));
    }
}

/// Create the instance (unless pgplan created it already) and wait until
/// it is available.
pub async fn create_instance(
    w: &World<'_>,
    step: &Step,
    settings: &RdsSettings,
) -> Result<Outcome, StepError> {
    let client = w.rds()?;
    let created = match client.describe_instance(&settings.identifier).await? {
        Some(existing) if existing.managed_by_pgplan() => false,
        Some(_) => {
            return Err(StepError::new(format!(
                "RDS instance {} appeared and was not created by pgplan; plan again",
                settings.identifier
            )))
        }
        None => {
            let password = w.var(&settings.password_var, "")?;
            client.create_instance(settings, &password).await?;
            true
        }
    };
    let i = client
        .wait_available(&settings.identifier, RDS_TIMEOUT, progress(w, step))
        .await?;
    Ok(Outcome::RdsInstanceReady {
        created,
        endpoint: i.endpoint.map(|e| format!("{}:{}", e.address, e.port)),
    })
}

/// Modify the instance towards the settings, applied now.
pub async fn modify_instance(
    w: &World<'_>,
    step: &Step,
    settings: &RdsSettings,
) -> Result<Outcome, StepError> {
    let client = w.rds()?;
    let changes = client.modify_instance(settings, true).await?;
    client
        .wait_available(&settings.identifier, RDS_TIMEOUT, progress(w, step))
        .await?;
    Ok(Outcome::RdsInstanceModified { changes })
}

/// Take a DB snapshot and wait until it is available.
pub async fn snapshot(
    w: &World<'_>,
    step: &Step,
    identifier: &str,
    snapshot: &str,
) -> Result<Outcome, StepError> {
    let client = w.rds()?;
    client.create_snapshot(identifier, snapshot).await?;
    client
        .wait_snapshot_available(snapshot, RDS_TIMEOUT, progress(w, step))
        .await?;
    Ok(Outcome::RdsSnapshotTaken {
        snapshot: snapshot.to_string(),
    })
}

/// Undo a create: only an instance this apply created, and only when the
/// spec allows deleting it (`cleanup.rdsInstanceOnRollback`).
pub async fn undo_create_instance(
    w: &World<'_>,
    settings: &RdsSettings,
    delete_on_rollback: bool,
    outcome: Option<&Outcome>,
) -> Result<Undo, StepError> {
    let created = matches!(
        outcome,
        Some(Outcome::RdsInstanceReady { created: true, .. })
    );
    if !created {
        return Ok(Undo::Kept(format!(
            "RDS instance {} existed before this apply and is kept",
            settings.identifier
        )));
    }
    if !delete_on_rollback {
        return Ok(Undo::Kept(format!(
            "RDS instance {} (created by this apply) is kept: `cleanup.rdsInstanceOnRollback` is off; delete it yourself or apply again",
            settings.identifier
        )));
    }
    let client = w.rds()?;
    client
        .delete_instance(&settings.identifier, true, None)
        .await?;
    client
        .wait_deleted(&settings.identifier, RDS_TIMEOUT, |_, _| {})
        .await?;
    Ok(Undo::Undone(format!(
        "RDS instance {} deleted (deletion protection lifted first)",
        settings.identifier
    )))
}

/// A modification is kept: the snapshot taken before it is the way back.
pub fn undo_modify_instance(settings: &RdsSettings, changes: &[String]) -> Undo {
    Undo::Kept(format!(
        "RDS instance {} keeps its changes ({}); the snapshot taken before them is the way back",
        settings.identifier,
        changes.join(", ")
    ))
}

/// A snapshot is kept.
pub fn undo_snapshot(snapshot: &str) -> Undo {
    Undo::Kept(format!("DB snapshot {snapshot} is kept"))
}
