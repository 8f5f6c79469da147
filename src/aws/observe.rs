//! Reading RDS into the observed model: one instance by identifier (one
//! DescribeDBInstances; the account is never listed), its snapshots, and
//! the mapping from the SDK's types into `observed::RdsInstance` and
//! `observed::RdsSnapshot`.

use std::collections::BTreeMap;

use aws_sdk_rds::types::{DbInstance, DbSnapshot};

use super::error::{code_of, is_not_found};
use super::{instance_target, snapshot_target, Rds, RdsError};
use crate::observed::{Endpoint, RdsInstance, RdsSnapshot, RdsState};

impl Rds {
    /// The instance `identifier`, or `None` when it does not exist.
    pub async fn describe_instance(
        &self,
        identifier: &str,
    ) -> Result<Option<RdsInstance>, RdsError> {
        Ok(self
            .describe_raw(identifier)
            .await?
            .map(|i| self.instance(&i)))
    }

    /// The snapshots of instance `identifier` (manual and automated; also
    /// those of a deleted instance), oldest API page first.
    pub async fn describe_snapshots(&self, identifier: &str) -> Result<Vec<RdsSnapshot>, RdsError> {
        let mut pages = self
            .client
            .describe_db_snapshots()
            .db_instance_identifier(identifier)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.classify("DescribeDBSnapshots", &instance_target(identifier), e)
            })?;
            out.extend(page.db_snapshots().iter().map(|s| self.snapshot(s)));
        }
        Ok(out)
    }

    /// What a placement's plan reads about instance `identifier`: the
    /// instance (if any) and its snapshots, read concurrently.
    pub async fn observe(&self, identifier: &str) -> Result<RdsState, RdsError> {
        let (instance, snapshots) = futures::try_join!(
            self.describe_instance(identifier),
            self.describe_snapshots(identifier)
        )?;
        Ok(RdsState {
            instances: instance.into_iter().collect(),
            snapshots,
        })
    }

    /// One snapshot by its identifier, or `None`.
    pub async fn describe_snapshot(&self, snapshot: &str) -> Result<Option<RdsSnapshot>, RdsError> {
        match self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(snapshot)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_snapshots().first().map(|s| self.snapshot(s))),
            Err(e) if is_not_found(code_of(&e).as_deref()) => Ok(None),
            Err(e) => Err(self.classify("DescribeDBSnapshots", &snapshot_target(snapshot), e)),
        }
    }

    /// The SDK's view of one instance; waits read fields the observed
    /// model does not keep (pending modifications).
    pub(super) async fn describe_raw(
        &self,
        identifier: &str,
    ) -> Result<Option<DbInstance>, RdsError> {
        match self
            .client
            .describe_db_instances()
            .db_instance_identifier(identifier)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .db_instances()
                .iter()
                // RDS keeps identifiers in lower case whatever was asked.
                .find(|i| {
                    i.db_instance_identifier()
                        .is_some_and(|id| id.eq_ignore_ascii_case(identifier))
                })
                .cloned()),
            Err(e) if is_not_found(code_of(&e).as_deref()) => Ok(None),
            Err(e) => Err(self.classify("DescribeDBInstances", &instance_target(identifier), e)),
        }
    }

    pub(super) fn instance(&self, i: &DbInstance) -> RdsInstance {
        RdsInstance {
            region: self.region.clone(),
            identifier: i.db_instance_identifier().unwrap_or_default().to_string(),
            engine: i.engine().unwrap_or_default().to_string(),
            engine_version: i.engine_version().unwrap_or_default().to_string(),
            instance_class: i.db_instance_class().unwrap_or_default().to_string(),
            allocated_storage: i
                .allocated_storage()
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0),
            storage_encrypted: i.storage_encrypted().unwrap_or(false),
            deletion_protection: i.deletion_protection().unwrap_or(false),
            multi_az: i.multi_az().unwrap_or(false),
            publicly_accessible: i.publicly_accessible().unwrap_or(false),
            status: i.db_instance_status().unwrap_or("unknown").to_string(),
            endpoint: i.endpoint().and_then(|e| {
                Some(Endpoint {
                    address: e.address()?.to_string(),
                    port: e.port().and_then(|p| u16::try_from(p).ok())?,
                })
            }),
            master_username: i.master_username().map(str::to_string),
            tags: i
                .tag_list()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    pub(super) fn snapshot(&self, s: &DbSnapshot) -> RdsSnapshot {
        RdsSnapshot {
            region: self.region.clone(),
            identifier: s.db_snapshot_identifier().unwrap_or_default().to_string(),
            instance_identifier: s.db_instance_identifier().unwrap_or_default().to_string(),
            status: s.status().unwrap_or("unknown").to_string(),
            snapshot_type: s.snapshot_type().map(str::to_string),
        }
    }
}
