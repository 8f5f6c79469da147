//! Bounded waits: poll with backoff until an instance is available (and
//! its requested modifications applied), an instance is gone, or a
//! snapshot is available. A wait ends with the last status seen when its
//! time is up, and at once when RDS reports a state the object will not
//! leave by itself.

use std::time::{Duration, Instant};

use aws_sdk_rds::types::DbInstance;

use super::{instance_target, snapshot_target, Rds, RdsError};
use crate::observed::{RdsInstance, RdsSnapshot};

/// First pause between polls; it grows by half each time up to
/// [`MAX_DELAY`]. RDS changes take minutes, so the cap keeps the request
/// rate low while the first polls catch quick changes (and moto).
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(20);

/// Instance states that never turn into `available` without someone
/// fixing something (see "Viewing Amazon RDS DB instance status").
pub fn instance_status_is_terminal(status: &str) -> bool {
    matches!(
        status,
        "failed"
            | "deleting"
            | "incompatible-credentials"
            | "incompatible-network"
            | "incompatible-option-group"
            | "incompatible-parameters"
            | "incompatible-restore"
            | "inaccessible-encryption-credentials"
            | "inaccessible-encryption-credentials-recoverable"
            | "insufficient-capacity"
            | "restore-error"
            | "storage-full"
    )
}

/// Snapshot states that never turn into `available`.
pub fn snapshot_status_is_terminal(status: &str) -> bool {
    matches!(status, "failed" | "error" | "deleted" | "deleting")
}

/// One poll's verdict.
enum Poll<T> {
    Done(T),
    /// Not yet; the status to report.
    Pending(String),
    /// Never, by itself; the status to report.
    Terminal(String),
}

impl Rds {
    /// Wait until instance `identifier` is `available` with no pending
    /// class, storage, multi-AZ or engine change. `progress` is called
    /// after every poll with the status and the time waited so far.
    ///
    /// Errors: [`RdsError::NotFound`] if the instance does not exist,
    /// [`RdsError::FailedState`] on a terminal status (`failed`,
    /// `incompatible-parameters`, `storage-full`, `deleting`, …),
    /// [`RdsError::Timeout`] with the last status after `timeout`.
    pub async fn wait_available<F>(
        &self,
        identifier: &str,
        timeout: Duration,
        mut progress: F,
    ) -> Result<RdsInstance, RdsError>
    where
        F: FnMut(&str, Duration) + Send,
    {
        self.wait_instance_available(identifier, timeout, &mut progress)
            .await
    }

    async fn wait_instance_available(
        &self,
        identifier: &str,
        timeout: Duration,
        progress: &mut (dyn FnMut(&str, Duration) + Send),
    ) -> Result<RdsInstance, RdsError> {
        let what = &instance_target(identifier);
        poll_until(what, "available", timeout, progress, move || async move {
            let Some(raw) = self.describe_raw(identifier).await? else {
                return Err(self.not_found(what.clone()));
            };
            let status = raw.db_instance_status().unwrap_or("unknown").to_string();
            Ok(if status == "available" && !has_pending_changes(&raw) {
                Poll::Done(self.instance(&raw))
            } else if status == "available" {
                Poll::Pending("available, modifications pending".into())
            } else if instance_status_is_terminal(&status) {
                Poll::Terminal(status)
            } else {
                Poll::Pending(status)
            })
        })
        .await
    }

    /// Wait until instance `identifier` no longer exists. `progress` as in
    /// [`Rds::wait_available`].
    pub async fn wait_deleted<F>(
        &self,
        identifier: &str,
        timeout: Duration,
        mut progress: F,
    ) -> Result<(), RdsError>
    where
        F: FnMut(&str, Duration) + Send,
    {
        self.wait_instance_deleted(identifier, timeout, &mut progress)
            .await
    }

    async fn wait_instance_deleted(
        &self,
        identifier: &str,
        timeout: Duration,
        progress: &mut (dyn FnMut(&str, Duration) + Send),
    ) -> Result<(), RdsError> {
        let what = &instance_target(identifier);
        poll_until(what, "deleted", timeout, progress, move || async move {
            Ok(match self.describe_raw(identifier).await? {
                None => Poll::Done(()),
                Some(raw) => {
                    let status = raw.db_instance_status().unwrap_or("unknown").to_string();
                    // A delete that was refused or undone leaves the
                    // instance in an ordinary state; only `deleting` (and
                    // the states delete passes through) are progress.
                    if matches!(status.as_str(), "available" | "stopped")
                        && raw.deletion_protection() == Some(true)
                    {
                        Poll::Terminal(format!("{status}, deletion protection on"))
                    } else {
                        Poll::Pending(status)
                    }
                }
            })
        })
        .await
    }

    /// Wait until snapshot `snapshot` is `available`.
    pub async fn wait_snapshot_available<F>(
        &self,
        snapshot: &str,
        timeout: Duration,
        mut progress: F,
    ) -> Result<RdsSnapshot, RdsError>
    where
        F: FnMut(&str, Duration) + Send,
    {
        self.wait_snapshot(snapshot, timeout, &mut progress).await
    }

    async fn wait_snapshot(
        &self,
        snapshot: &str,
        timeout: Duration,
        progress: &mut (dyn FnMut(&str, Duration) + Send),
    ) -> Result<RdsSnapshot, RdsError> {
        let what = &snapshot_target(snapshot);
        poll_until(what, "available", timeout, progress, move || async move {
            let Some(s) = self.describe_snapshot(snapshot).await? else {
                return Err(self.not_found(what.clone()));
            };
            Ok(if s.status == "available" {
                Poll::Done(s)
            } else if snapshot_status_is_terminal(&s.status) {
                Poll::Terminal(s.status)
            } else {
                Poll::Pending(s.status)
            })
        })
        .await
    }
}

/// Whether a modification pgplan asks for is still waiting to be applied.
fn has_pending_changes(i: &DbInstance) -> bool {
    i.pending_modified_values().is_some_and(|p| {
        p.db_instance_class().is_some()
            || p.allocated_storage().is_some()
            || p.multi_az().is_some()
            || p.engine_version().is_some()
            || p.storage_type().is_some()
            || p.iops().is_some()
    })
}

/// Poll `check` with backoff until it is done, terminal, or `timeout` has
/// passed. The last poll happens at the deadline, never after it.
async fn poll_until<T, C, Fut>(
    what: &str,
    wanted: &str,
    timeout: Duration,
    progress: &mut (dyn FnMut(&str, Duration) + Send),
    mut check: C,
) -> Result<T, RdsError>
where
    C: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Poll<T>, RdsError>>,
{
    let start = Instant::now();
    let mut delay = FIRST_DELAY;
    loop {
        let status = match check().await? {
            Poll::Done(v) => return Ok(v),
            Poll::Terminal(status) => {
                progress(&status, start.elapsed());
                return Err(RdsError::FailedState {
                    what: what.to_string(),
                    wanted: wanted.to_string(),
                    status,
                });
            }
            Poll::Pending(status) => status,
        };
        progress(&status, start.elapsed());
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(RdsError::Timeout {
                what: what.to_string(),
                wanted: wanted.to_string(),
                seconds: timeout.as_secs(),
                status,
            });
        }
        tokio::time::sleep(delay.min(timeout - elapsed)).await;
        delay = (delay * 3 / 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_the_ones_rds_does_not_leave_by_itself() {
        for s in [
            "failed",
            "incompatible-parameters",
            "storage-full",
            "deleting",
        ] {
            assert!(instance_status_is_terminal(s), "{s}");
        }
        for s in [
            "creating",
            "backing-up",
            "modifying",
            "available",
            "rebooting",
            "stopped",
            "starting",
            "configuring-enhanced-monitoring",
        ] {
            assert!(!instance_status_is_terminal(s), "{s}");
        }
        assert!(snapshot_status_is_terminal("failed"));
        assert!(!snapshot_status_is_terminal("creating"));
    }
}
