//! One apply per placement at a time: a `coordination.k8s.io` Lease named
//! `pgplan-{placement}` in the placement's namespace, holding the apply's
//! lock ID and renewed while it runs. A second apply waits `--lock-timeout`
//! and then fails naming the holder; `pgplan force-unlock ID` removes it.
//!
//! The Lease is also the cluster's record of an unfinished apply. Its
//! annotations say what the holder is doing (`pgplan.dev/phase`: planning,
//! applying, rolling-back, stopped), where its journal is and how to
//! resume it. It is released only when the apply ended finished or rolled
//! back, or changed nothing; otherwise it stays. A holder that is gone
//! (killed, or expired) is taken over only by `--resume`, which has the
//! journal, unless it never got past planning: a fresh apply stops at it,
//! so that nobody plans and applies over a half-finished change.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterError, Write};
use crate::observed::{str_at, ApplyLock, LockState};
use crate::plan::ObjectRef;
use crate::spec::{Placement, Source, Target};

/// How long a lease stays valid without renewal.
pub const LEASE_SECONDS: i64 = 60;

/// What the holder is doing (`planning`, `applying`, `rolling-back`, `stopped`).
pub const PHASE_ANNOTATION: &str = "pgplan.dev/phase";
/// Where the holder's journal is: `host:path`.
pub const JOURNAL_ANNOTATION: &str = "pgplan.dev/journal";
/// The command that resumes the holder's apply.
pub const RESUME_ANNOTATION: &str = "pgplan.dev/resume";
/// When a rollback of the holder's apply began. Never removed while the
/// Lease lives: whatever becomes of the journal, an apply taking the lock
/// over then finishes the rollback and never goes forward.
pub const ROLLBACK_ANNOTATION: &str = "pgplan.dev/rollback-begun";

/// What an apply holding the lock is doing, as written on its Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing changed yet: re-planning under the lock.
    Planning,
    /// The journal has begun; steps may have acted.
    Applying,
    /// A rollback has begun: nothing may go forward again.
    RollingBack,
    /// The holder ended with the apply unfinished (interrupted, stopped
    /// after the commit point, or a rollback that needs attention).
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planning => "planning",
            Phase::Applying => "applying",
            Phase::RollingBack => "rolling-back",
            Phase::Stopped => "stopped",
        }
    }
}

/// Who may take over a lease whose holder is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// A new apply: only a lease that never got past planning.
    Fresh,
    /// `apply --resume`, which has the journal: any gone or stopped holder.
    Resume,
}

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
    #[error("an apply of placement `{placement}` did not finish: its lock is held by `{holder}` ({state}, {phase}, since {since})")]
    #[diagnostic(
        code(pgplan::lock::unfinished),
        help("resume it where its journal is: `{resume}`. `pgplan status` shows what it left in the cluster; once the world is whole again (docs/recovery.md), `pgplan force-unlock {holder}` releases the lock")
    )]
    Unfinished {
        placement: String,
        holder: String,
        state: &'static str,
        phase: String,
        since: String,
        resume: String,
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
    /// The lease, taken over from a gone holder, says its rollback had begun.
    pub rollback_begun: bool,
    /// The holder this apply waited for, if it waited.
    pub waited_for: Option<String>,
}

/// A lock ID for this process: `host:pid:random`.
pub fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    crate::addr::LockId::new(
        &hostname(),
        std::process::id(),
        nanos ^ std::process::id().rotate_left(16),
    )
    .to_string()
}

/// This machine's name, as lock IDs and journal locations give it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// The namespace holding a placement's lock: the source's, else the
/// target's, else its first consumer's.
pub fn namespace(p: &Placement) -> String {
    let s = p.spec();
    match (&s.source, &s.target) {
        (Source::Kubernetes(k), _) => k.namespace.clone(),
        (_, Target::Kubernetes(k)) => k.namespace.clone().unwrap_or_else(|| "default".into()),
        _ => s
            .consumers
            .iter()
            .find_map(|c| c.namespace.clone())
            .unwrap_or_else(|| "default".into()),
    }
}

/// The Lease of a placement.
pub fn lease_ref(namespace: &str, placement: &str) -> ObjectRef {
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
    let Ok(id) = holder.parse::<crate::addr::LockId>() else {
        return false;
    };
    let Ok(pid) = i32::try_from(id.holder.pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    id.holder.host == hostname()
        && id.holder.pid != std::process::id()
        && unsafe { libc::kill(pid, 0) } != 0
}

fn annotation<'v>(lease: &'v Value, key: &str) -> Option<&'v str> {
    lease["metadata"]["annotations"][key].as_str()
}

/// Whether a lease's holder is at work, stopped, or gone.
pub fn state_of(lease: &Value) -> LockState {
    let holder = str_at(lease, &["spec", "holderIdentity"]).unwrap_or("");
    if annotation(lease, PHASE_ANNOTATION) == Some(Phase::Stopped.as_str()) {
        LockState::Stopped
    } else if remaining(lease) < 0 || holder_is_dead(holder) {
        LockState::Abandoned
    } else {
        LockState::Running
    }
}

/// A live Lease as the plan shows it; `None` when nobody holds it.
pub fn describe(lease: &Value) -> Option<ApplyLock> {
    let holder = str_at(lease, &["spec", "holderIdentity"]).unwrap_or("");
    if holder.is_empty() {
        return None;
    }
    let r = ObjectRef::of(lease)?;
    Some(ApplyLock {
        lease: r.address(),
        holder: holder.to_string(),
        state: state_of(lease),
        phase: annotation(lease, PHASE_ANNOTATION).map(str::to_string),
        since: str_at(lease, &["spec", "acquireTime"]).map(str::to_string),
        renewed: str_at(lease, &["spec", "renewTime"]).map(str::to_string),
        journal: annotation(lease, JOURNAL_ANNOTATION).map(str::to_string),
        resume: annotation(lease, RESUME_ANNOTATION).map(str::to_string),
    })
}

/// Take the lock, waiting up to `timeout` for another holder. `waiting`
/// is told once when the lock is held by someone else and we wait.
pub async fn acquire(
    cluster: &Cluster,
    namespace: &str,
    placement: &str,
    id: &str,
    timeout: Duration,
    takeover: Takeover,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<Lock, LockError> {
    let lease = lease_ref(namespace, placement);
    let start = Instant::now();
    let mut waited_for = None;
    let mut rollback_begun = false;
    loop {
        let manifest = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "pgplan", "pgplan.dev/placement": placement},
                         "annotations": {PHASE_ANNOTATION: Phase::Planning.as_str()}},
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
                let phase = annotation(&live, PHASE_ANNOTATION).map(str::to_string);
                let state = state_of(&live);
                let mine = holder.is_empty() || holder == id;
                let gone = state != LockState::Running;
                // A gone holder that may have changed something is the
                // journal's to continue, never a fresh apply's to plan over.
                let changed = phase
                    .as_deref()
                    .is_some_and(|p| p != Phase::Planning.as_str());
                if !mine && gone && changed && takeover == Takeover::Fresh {
                    return Err(LockError::Unfinished {
                        placement: placement.into(),
                        holder,
                        state: state.as_str(),
                        phase: phase.unwrap_or_default(),
                        since: str_at(&live, &["spec", "acquireTime"])
                            .unwrap_or("an unknown time")
                            .into(),
                        resume: annotation(&live, RESUME_ANNOTATION)
                            .unwrap_or("pgplan apply --resume")
                            .into(),
                    });
                }
                if mine || gone {
                    // Take it over, guarded by the resourceVersion we read.
                    let rv = str_at(&live, &["metadata", "resourceVersion"]).unwrap_or_default();
                    let patch = json!({"metadata": {"resourceVersion": rv,
                                                    "annotations": {PHASE_ANNOTATION: Phase::Planning.as_str()}},
                                       "spec": manifest["spec"].clone()});
                    match cluster.merge_patch(&lease, &patch, Write::Apply).await {
                        Ok(_) => {
                            rollback_begun = annotation(&live, ROLLBACK_ANNOTATION).is_some();
                            break;
                        }
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
                        valid_for: remaining(&live),
                    });
                }
                if waited_for.as_deref() != Some(holder.as_str()) {
                    waiting(&holder);
                    waited_for = Some(holder);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(Lock {
        placement: placement.into(),
        id: id.into(),
        lease,
        rollback_begun,
        waited_for,
    })
}

impl Lock {
    /// Push the expiry forward; fails when someone else took the lease.
    pub async fn renew(&self, cluster: &Cluster) -> Result<(), LockError> {
        self.patch_if_mine(cluster, json!({"spec": {"renewTime": now_micro()}}))
            .await
    }

    /// Write what the holder is doing (and where its journal is, and how
    /// to resume it) on the lease.
    pub async fn mark(
        &self,
        cluster: &Cluster,
        phase: Phase,
        journal: Option<&str>,
        resume: Option<&str>,
    ) -> Result<(), LockError> {
        let mut annotations = json!({PHASE_ANNOTATION: phase.as_str()});
        if let Some(j) = journal {
            annotations[JOURNAL_ANNOTATION] = json!(j);
        }
        if let Some(r) = resume {
            annotations[RESUME_ANNOTATION] = json!(r);
        }
        if phase == Phase::RollingBack {
            annotations[ROLLBACK_ANNOTATION] = json!(now_micro());
        }
        self.patch_if_mine(
            cluster,
            json!({"metadata": {"annotations": annotations}, "spec": {"renewTime": now_micro()}}),
        )
        .await
    }

    async fn patch_if_mine(&self, cluster: &Cluster, patch: Value) -> Result<(), LockError> {
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
            .merge_patch(&self.lease, &patch, Write::Apply)
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

/// The locks of every placement an apply touches.
#[derive(Debug, Default)]
pub struct Locks {
    pub held: Vec<Lock>,
}

impl Locks {
    /// Take each placement's lock in order; on a failure, give back the
    /// ones already taken.
    pub async fn acquire(
        cluster: &Cluster,
        placements: &[(String, String)],
        id: &str,
        timeout: Duration,
        takeover: Takeover,
        waiting: &(dyn Fn(&str, &str) + Sync),
    ) -> Result<Locks, LockError> {
        let mut locks = Locks::default();
        for (placement, ns) in placements {
            let told = |holder: &str| waiting(placement, holder);
            match acquire(cluster, ns, placement, id, timeout, takeover, &told).await {
                Ok(l) => locks.held.push(l),
                Err(e) => {
                    locks.release(cluster).await;
                    return Err(e);
                }
            }
        }
        Ok(locks)
    }

    pub async fn renew(&self, cluster: &Cluster) {
        for l in &self.held {
            // A lost lease shows at the next renewal or release; keep going.
            let _ = l.renew(cluster).await;
        }
    }

    pub async fn mark(
        &self,
        cluster: &Cluster,
        phase: Phase,
        journal: Option<&str>,
        resume: Option<&str>,
    ) {
        for l in &self.held {
            let _ = l.mark(cluster, phase, journal, resume).await;
        }
    }

    /// Renew every lock and fail if one is no longer this apply's (it
    /// expired while planning and another apply took it): checked once
    /// before anything is changed.
    pub async fn confirm(&self, cluster: &Cluster) -> Result<(), LockError> {
        for l in &self.held {
            l.renew(cluster).await?;
        }
        Ok(())
    }

    pub async fn release(&self, cluster: &Cluster) {
        for l in &self.held {
            let _ = l.release(cluster).await;
        }
    }

    /// Whether a lease this apply took over says a rollback had begun.
    pub fn rollback_recorded(&self) -> bool {
        self.held.iter().any(|l| l.rollback_begun)
    }

    /// The holders this apply waited for.
    pub fn waited_for(&self) -> Vec<String> {
        self.held
            .iter()
            .filter_map(|l| l.waited_for.clone())
            .collect()
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
