//! One apply per placement at a time: a `coordination.k8s.io` Lease named
//! `pgplan-{placement}` in the placement's namespace, holding the apply's
//! lock ID and renewed while it runs. A second apply waits `--lock-timeout`
//! and then fails naming the holder; an expired lease (a holder that died
//! without releasing) is taken over; `pgplan force-unlock ID` removes it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterError, Write};
use crate::observed::str_at;
use crate::plan::ObjectRef;

/// How long a lease stays valid without renewal.
pub const LEASE_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("placement `{placement}` is locked by `{holder}` (renewed {renewed}, valid for {valid_for} s more)")]
    #[diagnostic(
        code(pgplan::lock::held),
        help("another apply is running; wait for it, or pass --lock-timeout to wait longer. If that apply is dead, `pgplan force-unlock {holder}` releases it")
    )]
    Held {
        placement: String,
        holder: String,
        renewed: String,
        valid_for: i64,
    },
    #[error("the lock of placement `{placement}` is held by `{holder}`, not `{requested}`")]
    #[diagnostic(
        code(pgplan::lock::not_holder),
        help("force-unlock takes the lock ID the holding apply printed")
    )]
    NotHolder {
        placement: String,
        holder: String,
        requested: String,
    },
    #[error("placement `{0}` is not locked")]
    #[diagnostic(code(pgplan::lock::not_locked))]
    NotLocked(String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cluster(#[from] Box<ClusterError>),
}

impl From<ClusterError> for LockError {
    fn from(e: ClusterError) -> Self {
        LockError::Cluster(Box::new(e))
    }
}

/// A held lock.
#[derive(Debug, Clone)]
pub struct Lock {
    pub placement: String,
    pub id: String,
    lease: ObjectRef,
}

/// A lock ID for this process: `host:pid:random`.
pub fn new_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        nanos ^ std::process::id().rotate_left(16)
    )
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn lease_ref(namespace: &str, placement: &str) -> ObjectRef {
    ObjectRef::new(
        "coordination.k8s.io/v1",
        "Lease",
        namespace,
        &format!("pgplan-{placement}"),
    )
}

/// Seconds the lease is still valid (negative when expired).
fn remaining(lease: &Value) -> i64 {
    let duration = lease["spec"]["leaseDurationSeconds"]
        .as_i64()
        .unwrap_or(LEASE_SECONDS);
    let renewed = str_at(lease, &["spec", "renewTime"])
        .or_else(|| str_at(lease, &["spec", "acquireTime"]))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match renewed {
        Some(t) => t.as_second() + duration - jiff::Timestamp::now().as_second(),
        None => -1,
    }
}

/// A holder on this host whose process is gone (a killed apply) cannot renew.
fn holder_is_dead(holder: &str) -> bool {
    let mine = new_id();
    let (Some(host), Some(pid)) = (holder.split(':').next(), holder.split(':').nth(1)) else {
        return false;
    };
    let my_host = mine.split(':').next().unwrap_or_default();
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    host == my_host && pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } != 0
}

/// Take the lock, waiting up to `timeout` for another holder.
pub async fn acquire(
    cluster: &Cluster,
    namespace: &str,
    placement: &str,
    id: &str,
    timeout: Duration,
) -> Result<Lock, LockError> {
    let lease = lease_ref(namespace, placement);
    let start = Instant::now();
    loop {
        let manifest = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "pgplan", "pgplan.dev/placement": placement}},
            "spec": {"holderIdentity": id, "leaseDurationSeconds": LEASE_SECONDS,
                     "acquireTime": now_micro(), "renewTime": now_micro()},
        });
        match cluster.get(&lease).await? {
            None => match cluster.create(&manifest, Write::Apply).await {
                Ok(_) => break,
                Err(ClusterError::Rejected { code: 409, .. }) => continue,
                Err(e) => return Err(e.into()),
            },
            Some(live) => {
                let holder = str_at(&live, &["spec", "holderIdentity"])
                    .unwrap_or("")
                    .to_string();
                let left = remaining(&live);
                if holder.is_empty() || holder == id || left < 0 || holder_is_dead(&holder) {
                    // Take it over, guarded by the resourceVersion we read.
                    let rv = str_at(&live, &["metadata", "resourceVersion"]).unwrap_or_default();
                    let patch = json!({"metadata": {"resourceVersion": rv}, "spec": manifest["spec"].clone()});
                    match cluster.merge_patch(&lease, &patch, Write::Apply).await {
                        Ok(_) => break,
                        Err(ClusterError::Rejected { code: 409, .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                if start.elapsed() >= timeout {
                    return Err(LockError::Held {
                        placement: placement.into(),
                        holder,
                        renewed: str_at(&live, &["spec", "renewTime"])
                            .unwrap_or("never")
                            .into(),
                        valid_for: left,
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(Lock {
        placement: placement.into(),
        id: id.into(),
        lease,
    })
}

impl Lock {
    /// Push the expiry forward; fails when someone else took the lease.
    pub async fn renew(&self, cluster: &Cluster) -> Result<(), LockError> {
        let live = cluster
            .get(&self.lease)
            .await?
            .ok_or_else(|| LockError::NotLocked(self.placement.clone()))?;
        let holder = str_at(&live, &["spec", "holderIdentity"]).unwrap_or("");
        if holder != self.id {
            return Err(LockError::NotHolder {
                placement: self.placement.clone(),
                holder: holder.into(),
                requested: self.id.clone(),
            });
        }
        cluster
            .merge_patch(
                &self.lease,
                &json!({"spec": {"renewTime": now_micro()}}),
                Write::Apply,
            )
            .await?;
        Ok(())
    }

    /// Give the lock back (only if still ours).
    pub async fn release(&self, cluster: &Cluster) -> Result<(), LockError> {
        if let Some(live) = cluster.get(&self.lease).await? {
            if str_at(&live, &["spec", "holderIdentity"]) == Some(self.id.as_str()) {
                cluster.delete(&self.lease, Write::Apply).await?;
            }
        }
        Ok(())
    }
}

/// `pgplan force-unlock ID`: remove the lease if `id` holds it.
pub async fn force_unlock(
    cluster: &Cluster,
    namespace: &str,
    placement: &str,
    id: &str,
) -> Result<(), LockError> {
    let lease = lease_ref(namespace, placement);
    let live = cluster
        .get(&lease)
        .await?
        .ok_or_else(|| LockError::NotLocked(placement.into()))?;
    let holder = str_at(&live, &["spec", "holderIdentity"]).unwrap_or("");
    if holder != id {
        return Err(LockError::NotHolder {
            placement: placement.into(),
            holder: holder.into(),
            requested: id.into(),
        });
    }
    cluster.delete(&lease, Write::Apply).await?;
    Ok(())
}
