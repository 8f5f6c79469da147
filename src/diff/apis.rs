//! Whether the cluster serves the APIs a placement needs — the snapshot
//! CRDs for `backup.snapshots`, a consumer's custom resource — from the
//! served API group versions in the live state. Each missing one is a
//! located error on the spec field that needs it, so a plan (and an apply,
//! which plans first) stops before anything is written. A live state
//! without the served APIs (an older snapshot) is checked for nothing.

use super::Ctx;
use crate::spec::{Consumer, Target};

/// The API group version of VolumeSnapshots.
pub const SNAPSHOT_API: &str = "snapshot.storage.k8s.io/v1";

/// Whether the cluster serves `api_version`; `None` when not known.
fn serves(cx: &Ctx<'_>, api_version: &str) -> Option<bool> {
    cx.idx.observed.kubernetes.serves(api_version)
}

/// The placement-wide checks: volume snapshots.
pub(super) fn check(cx: &mut Ctx<'_>) {
    let spec = cx.p.spec();
    let wants_snapshots =
        spec.backup.snapshots.is_some() && matches!(spec.target, Target::Kubernetes(_));
    if wants_snapshots && serves(cx, SNAPSHOT_API) == Some(false) {
        cx.error(
            &["backup", "snapshots"],
            "pgplan::plan::api-not-served",
            format!(
                "VolumeSnapshot ({SNAPSHOT_API}) is not served by this cluster: install the CSI snapshot controller and its CRDs, or remove backup.snapshots"
            ),
            "the CRDs and the snapshot controller are kubernetes-csi/external-snapshotter's; `kubectl api-resources --api-group=snapshot.storage.k8s.io` shows what the cluster serves",
        );
    }
}

/// For consumer `index`: when the cluster does not serve its kind, says so
/// at the consumer and returns true (the consumer is then not looked for).
pub(super) fn consumer_unserved(
    cx: &mut Ctx<'_>,
    index: usize,
    c: &Consumer,
    api_version: &str,
) -> bool {
    if serves(cx, api_version) != Some(false) {
        return false;
    }
    let i = index.to_string();
    let field = if c.api_version.is_some() {
        "apiVersion"
    } else {
        "kind"
    };
    cx.error(
        &["consumers", &i, field],
        "pgplan::plan::api-not-served",
        format!(
            "{} ({api_version}) is not served by this cluster: install the operator that defines it (its CRDs), or remove consumers[{index}]",
            c.kind
        ),
        format!(
            "`kubectl api-resources --api-group={}` shows what the cluster serves of that group",
            api_version.split('/').next().unwrap_or(api_version)
        ),
    );
    true
}
