//! What the steps reach the world through, and how long they wait on it.
//! Below every family module; depends only on [`super::outcome`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::events::Events;
use super::outcome::StepError;
use crate::cluster::Cluster;

/// What the steps reach the world through.
pub struct World<'a> {
    pub cluster: Option<&'a Cluster>,
    /// The RDS client of the plan's region (one region per apply).
    pub rds: Option<&'a crate::aws::Rds>,
    pub lookup: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    /// The spec file's directory: CA files and relative backup directories.
    pub base_dir: PathBuf,
    pub events: &'a Events,
    pub run: crate::addr::RunId,
    /// Per placement, how long a data step may go without progress
    /// (`backup.stallTimeout`); [`DEFAULT_STALL`] for one not listed.
    pub stall_timeouts: BTreeMap<String, Duration>,
    /// Small files of backups on claims (manifests, roles files) this
    /// process wrote or read, by claim and path, so later steps need no
    /// tools pod to read them again. Never written anywhere.
    pub kept: std::sync::Mutex<BTreeMap<(String, PathBuf), Vec<u8>>>,
    /// The client pods of servers outside the cluster this apply started,
    /// by server locator (see `datapod::client`); deleted when it ends.
    pub clients: tokio::sync::Mutex<BTreeMap<String, crate::plan::ObjectRef>>,
}

/// The stall timeout of a placement the apply has no setting for.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);

/// How long a workload may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

impl<'a> World<'a> {
    /// Keeps a file of a backup on `claim`.
    pub fn keep(&self, claim: &crate::plan::ObjectRef, path: &std::path::Path, bytes: &[u8]) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert((claim.display(), path.to_path_buf()), bytes.to_vec());
    }

    /// A file of a backup on `claim` kept by this process.
    pub fn kept(&self, claim: &crate::plan::ObjectRef, path: &std::path::Path) -> Option<Vec<u8>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(&(claim.display(), path.to_path_buf())).cloned()
    }

    /// The cluster, for a step that needs one.
    pub fn cluster(&self) -> Result<&'a Cluster, StepError> {
        self.cluster.ok_or_else(|| {
            StepError::new("this step needs a Kubernetes cluster and none is configured")
        })
    }

    /// The RDS client, for a step that needs one.
    pub fn rds(&self) -> Result<&'a crate::aws::Rds, StepError> {
        self.rds.ok_or_else(|| {
            StepError::new("this step needs AWS RDS and no RDS client is configured")
        })
    }

    /// A variable of the environment, or an error naming it (and `what` it is).
    pub fn var(&self, name: &str, what: &str) -> Result<String, StepError> {
        (self.lookup)(name).ok_or_else(|| {
            StepError::new(format!("environment variable `{name}`{what} is not set"))
        })
    }

    /// How long a data step of `placement` may go without progress.
    pub fn stall_timeout(&self, placement: &str) -> Duration {
        self.stall_timeouts
            .get(placement)
            .copied()
            .unwrap_or(DEFAULT_STALL)
    }
}
