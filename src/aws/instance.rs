//! What apply and rollback do to an instance: create it from the plan's
//! `RdsSettings`, modify it towards them, snapshot it, and delete it —
//! deletion protection respected unless the caller explicitly lifts it.
//!
//! Each operation is safe to repeat after a crash: a snapshot that already
//! exists for the same instance is returned, a delete of a missing or
//! deleting instance reports so, and a modify with nothing to change sends
//! nothing.

use aws_sdk_rds::types::Tag;

use super::error::{code_of, is_already_exists, is_not_found};
use super::{instance_target, snapshot_target, Rds, RdsError};
use crate::observed::{RdsInstance, RdsSnapshot};
use crate::plan::RdsSettings;

/// The tag that marks an instance as pgplan's (see `RdsInstance::managed_by_pgplan`).
const MANAGED_BY: (&str, &str) = ("managed-by", "pgplan");

/// What [`Rds::delete_instance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// DeleteDBInstance was accepted; `lifted_protection` says whether
    /// deletion protection was turned off first.
    Started { lifted_protection: bool },
    /// The instance was already being deleted.
    InProgress,
    /// There was no such instance.
    AlreadyGone,
}

impl Rds {
    /// Create a PostgreSQL instance from `settings` (engine `postgres`,
    /// encryption, deletion protection, network and tags as given, plus
    /// `managed-by: pgplan`). Returns the instance as RDS first reports it
    /// (usually `creating`); [`Rds::wait_available`] waits for it.
    ///
    /// The password goes to AWS only: it is in no error, log or `Debug`.
    pub async fn create_instance(
        &self,
        settings: &RdsSettings,
        master_password: &str,
    ) -> Result<RdsInstance, RdsError> {
        self.check_region(settings)?;
        if master_password.is_empty() {
            return Err(RdsError::Invalid {
                message: format!(
                    "the master password for DB instance `{}` is empty",
                    settings.identifier
                ),
                help: format!(
                    "set the environment variable `{}` to the password the instance should get",
                    settings.password_var
                ),
            });
        }
        let storage = gib(settings)?;
        let mut tags = settings.tags.clone();
        tags.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        let tags: Vec<Tag> = tags
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tracing::info!(
            identifier = %settings.identifier,
            region = %self.region,
            class = %settings.instance_class,
            "creating RDS instance"
        );
        let out = self
            .client
            .create_db_instance()
            .db_instance_identifier(&settings.identifier)
            .engine("postgres")
            .engine_version(&settings.engine_version)
            .db_instance_class(&settings.instance_class)
            .allocated_storage(storage)
            .storage_encrypted(settings.storage_encrypted)
            .deletion_protection(settings.deletion_protection)
            .multi_az(settings.multi_az)
            .publicly_accessible(settings.publicly_accessible)
            .set_db_subnet_group_name(settings.db_subnet_group_name.clone())
            .set_vpc_security_group_ids(
                Some(settings.vpc_security_group_ids.clone()).filter(|v| !v.is_empty()),
            )
            .master_username(&settings.master_username)
            .master_user_password(master_password)
            .copy_tags_to_snapshot(true)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| {
                self.classify(
                    "CreateDBInstance",
                    &instance_target(&settings.identifier),
                    e,
                )
            })?;
        match out.db_instance() {
            Some(i) => Ok(self.instance(i)),
            // AWS always returns the instance; describe it if it did not.
            None => self
                .describe_instance(&settings.identifier)
                .await?
                .ok_or_else(|| self.not_found(instance_target(&settings.identifier))),
        }
    }

    /// Modify instance `settings.identifier` towards `settings`: instance
    /// class, storage (grow only), deletion protection, multi-AZ and engine
    /// version (upgrade only) — the fields the planner compares. Returns the
    /// changes sent, in the planner's words; empty when nothing differs (and
    /// then nothing is sent). Encryption cannot change in place and storage
    /// cannot shrink: those are refused before anything is sent.
    pub async fn modify_instance(
        &self,
        settings: &RdsSettings,
        apply_immediately: bool,
    ) -> Result<Vec<String>, RdsError> {
        self.check_region(settings)?;
        let id = &settings.identifier;
        let live = self
            .describe_instance(id)
            .await?
            .ok_or_else(|| self.not_found(instance_target(id)))?;
        let what = instance_target(id);
        if live.storage_encrypted != settings.storage_encrypted {
            return Err(RdsError::UnsupportedChange {
                what,
                message: format!(
                    "storage encryption is {} and cannot be turned {} on an existing instance",
                    on_off(live.storage_encrypted),
                    on_off(settings.storage_encrypted)
                ),
                help: "move to a new instance identifier (a new, encrypted instance) to change encryption".into(),
            });
        }
        let storage = gib(settings)?;
        let mut req = self
            .client
            .modify_db_instance()
            .db_instance_identifier(id)
            .apply_immediately(apply_immediately);
        let mut changes = Vec::new();
        if live.instance_class != settings.instance_class {
            changes.push(format!(
                "instance class {} → {}",
                live.instance_class, settings.instance_class
            ));
            req = req.db_instance_class(&settings.instance_class);
        }
        if settings.allocated_storage < live.allocated_storage {
            return Err(RdsError::UnsupportedChange {
                what,
                message: format!(
                    "storage cannot shrink from {} GiB to {} GiB",
                    live.allocated_storage, settings.allocated_storage
                ),
                help: format!(
                    "keep `allocatedStorage: {}` or more",
                    live.allocated_storage
                ),
            });
        }
        if settings.allocated_storage > live.allocated_storage {
            changes.push(format!(
                "storage {} → {} GiB",
                live.allocated_storage, settings.allocated_storage
            ));
            req = req.allocated_storage(storage);
        }
        if live.deletion_protection != settings.deletion_protection {
            changes.push(format!(
                "deletion protection {} → {}",
                live.deletion_protection, settings.deletion_protection
            ));
            req = req.deletion_protection(settings.deletion_protection);
        }
        if live.multi_az != settings.multi_az {
            changes.push(format!(
                "multi-AZ {} → {}",
                live.multi_az, settings.multi_az
            ));
            req = req.multi_az(settings.multi_az);
        }
        match engine_change(&live.engine_version, &settings.engine_version) {
            EngineChange::None => {}
            EngineChange::Downgrade => {
                return Err(RdsError::UnsupportedChange {
                    what,
                    message: format!(
                        "it runs postgres {}; RDS cannot downgrade to {}",
                        live.engine_version, settings.engine_version
                    ),
                    help: format!("write `engineVersion: \"{}\"`", live.engine_version),
                })
            }
            EngineChange::Upgrade { major } => {
                changes.push(format!(
                    "engine {} → {}",
                    live.engine_version, settings.engine_version
                ));
                req = req
                    .engine_version(&settings.engine_version)
                    .allow_major_version_upgrade(major);
            }
        }
        if changes.is_empty() {
            return Ok(changes);
        }
        tracing::info!(identifier = %id, changes = ?changes, "modifying RDS instance");
        req.send()
            .await
            .map_err(|e| self.classify("ModifyDBInstance", &instance_target(id), e))?;
        Ok(changes)
    }

    /// Start a manual snapshot `snapshot` of instance `identifier`. If that
    /// snapshot exists already and is of the same instance (a resumed
    /// apply), it is returned as it is; [`Rds::wait_snapshot_available`]
    /// waits for it.
    pub async fn create_snapshot(
        &self,
        identifier: &str,
        snapshot: &str,
    ) -> Result<RdsSnapshot, RdsError> {
        tracing::info!(identifier, snapshot, "creating RDS snapshot");
        let result = self
            .client
            .create_db_snapshot()
            .db_instance_identifier(identifier)
            .db_snapshot_identifier(snapshot)
            .tags(Tag::builder().key(MANAGED_BY.0).value(MANAGED_BY.1).build())
            .send()
            .await;
        match result {
            Ok(out) => match out.db_snapshot() {
                Some(s) => Ok(self.snapshot(s)),
                None => self
                    .describe_snapshot(snapshot)
                    .await?
                    .ok_or_else(|| self.not_found(snapshot_target(snapshot))),
            },
            Err(e) if is_already_exists(code_of(&e).as_deref()) => {
                match self.describe_snapshot(snapshot).await? {
                    Some(s) if s.instance_identifier.eq_ignore_ascii_case(identifier) => Ok(s),
                    _ => Err(RdsError::AlreadyExists {
                        what: format!(
                            "{} (of another instance than `{identifier}`)",
                            snapshot_target(snapshot)
                        ),
                        region: self.region.clone(),
                    }),
                }
            }
            Err(e) if is_not_found(code_of(&e).as_deref()) => {
                Err(self.not_found(instance_target(identifier)))
            }
            Err(e) => Err(self.classify("CreateDBSnapshot", &instance_target(identifier), e)),
        }
    }

    /// Delete instance `identifier` (rollback of a create, or cleanup).
    /// Only an instance tagged `managed-by: pgplan` is deleted; any other
    /// is refused with [`RdsError::NotManaged`], whatever the caller says.
    ///
    /// Deletion protection is respected: a protected instance is refused
    /// with [`RdsError::DeletionProtected`] unless
    /// `lift_deletion_protection` is true, in which case protection is
    /// turned off first (ModifyDBInstance) and the delete follows. Pass
    /// true only for an instance this apply created. If AWS itself refuses
    /// because protection was turned on meanwhile, that is the same error.
    ///
    /// `final_snapshot` names a final snapshot to take; `None` skips it.
    /// [`Rds::wait_deleted`] waits until the instance is gone.
    pub async fn delete_instance(
        &self,
        identifier: &str,
        lift_deletion_protection: bool,
        final_snapshot: Option<&str>,
    ) -> Result<Deletion, RdsError> {
        let Some(live) = self.describe_instance(identifier).await? else {
            return Ok(Deletion::AlreadyGone);
        };
        if live.status == "deleting" {
            return Ok(Deletion::InProgress);
        }
        if !live.managed_by_pgplan() {
            return Err(RdsError::NotManaged {
                identifier: live.identifier,
            });
        }
        let mut lifted = false;
        if live.deletion_protection {
            if !lift_deletion_protection {
                return Err(RdsError::DeletionProtected {
                    identifier: identifier.to_string(),
                });
            }
            self.client
                .modify_db_instance()
                .db_instance_identifier(identifier)
                .deletion_protection(false)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|e| self.classify("ModifyDBInstance", &instance_target(identifier), e))?;
            lifted = true;
            tracing::info!(identifier, "lifted deletion protection");
        }
        tracing::info!(identifier, final_snapshot, "deleting RDS instance");
        let result = self
            .client
            .delete_db_instance()
            .db_instance_identifier(identifier)
            .skip_final_snapshot(final_snapshot.is_none())
            .set_final_db_snapshot_identifier(final_snapshot.map(str::to_string))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Deletion::Started {
                lifted_protection: lifted,
            }),
            Err(e) if is_not_found(code_of(&e).as_deref()) => Ok(Deletion::AlreadyGone),
            Err(e) => Err(self.classify("DeleteDBInstance", &instance_target(identifier), e)),
        }
    }

    fn check_region(&self, settings: &RdsSettings) -> Result<(), RdsError> {
        if settings.region == self.region {
            return Ok(());
        }
        Err(RdsError::Invalid {
            message: format!(
                "DB instance `{}` belongs in {} but this RDS client is connected to {}",
                settings.identifier, settings.region, self.region
            ),
            help: "this is a pgplan bug: the instance's region chooses the client; please report it with the plan".into(),
        })
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The storage size as the API's integer.
fn gib(settings: &RdsSettings) -> Result<i32, RdsError> {
    i32::try_from(settings.allocated_storage).map_err(|_| RdsError::Invalid {
        message: format!(
            "allocated storage of {} GiB for DB instance `{}` is out of range",
            settings.allocated_storage, settings.identifier
        ),
        help: "RDS for PostgreSQL takes at most 65536 GiB".into(),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum EngineChange {
    None,
    Upgrade { major: bool },
    Downgrade,
}

/// Compare engine versions as the planner does: numerically by component,
/// with a shorter wanted version ("15") matching any live one it prefixes
/// ("15.4").
fn engine_change(have: &str, want: &str) -> EngineChange {
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|x| x.parse().ok()).collect() };
    let (h, w) = (parse(have), parse(want));
    if w.is_empty() || h.starts_with(&w) || w == h {
        EngineChange::None
    } else if w < h {
        EngineChange::Downgrade
    } else {
        EngineChange::Upgrade {
            major: w.first() != h.first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_versions_compare_like_the_planner() {
        assert_eq!(engine_change("15.4", "15.4"), EngineChange::None);
        assert_eq!(engine_change("15.4", "15"), EngineChange::None);
        assert_eq!(
            engine_change("15.4", "15.5"),
            EngineChange::Upgrade { major: false }
        );
        assert_eq!(
            engine_change("15.4", "16.1"),
            EngineChange::Upgrade { major: true }
        );
        assert_eq!(engine_change("15.4", "14.9"), EngineChange::Downgrade);
        assert_eq!(engine_change("15.10", "15.9"), EngineChange::Downgrade);
    }
}
