//! `backup.dataPath: cluster` towards a server outside the cluster (an RDS
//! instance): the tools reach it from a client pod in the source's
//! namespace, with the address and login the connection Secret pgplan
//! writes for the consumers passes on by reference, so the machine running
//! pgplan needs no route to it. The move's dumps go to a backup claim in
//! that namespace, planned before anything stops.

use super::Ctx;
use crate::observed::{str_at, DatabaseInventory};
use crate::plan::{InCluster, ObjectRef, SecretKeyRef};
use crate::spec::{PlacementSpec, RdsTarget, Source, SslMode};

/// Why the tools cannot reach the target from inside the cluster: the
/// field at fault (under `spec`), what is wrong and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct NoRoute {
    pub path: &'static [&'static str],
    pub message: String,
    pub help: String,
}

/// How the tools reach an RDS target from inside the cluster; `None` with
/// `dataPath: local`. Shared by the planner and by `observe`, which takes
/// the target's inventory the same way.
pub fn rds_client(spec: &PlacementSpec, rt: &RdsTarget) -> Result<Option<InCluster>, NoRoute> {
    if spec.backup.data_path.is_local() {
        return Ok(None);
    }
    let Source::Kubernetes(src) = &spec.source else {
        return Err(NoRoute {
            path: &["backup", "dataPath"],
            message: "`backup.dataPath: cluster` runs the tools in the source's namespace, and this source is outside the cluster".into(),
            help: "use `dataPath: local` for this placement".into(),
        });
    };
    let ns = &src.namespace;
    let secrets = spec.consumers.iter().filter_map(|c| {
        let r = c.reconfigure.as_ref()?;
        let name = r.connection_secret.as_ref()?;
        (c.namespace.as_deref().unwrap_or(ns) == ns.as_str())
            .then_some((name, r.ca_secret.as_ref()))
    });
    let Some((login_secret, ca)) = secrets.into_iter().next() else {
        return Err(NoRoute {
            path: &["consumers"],
            message: format!(
                "`backup.dataPath: cluster` reads the instance's address and login from the connection Secret pgplan writes for the consumers, and no consumer in namespace {ns} names one"
            ),
            help: format!(
                "set `reconfigure.connectionSecret` on a consumer in namespace {ns}, or use `dataPath: local`"
            ),
        });
    };
    let verifies = matches!(rt.tls.mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if verifies && ca.is_none() {
        return Err(NoRoute {
            path: &["target", "rds", "tls", "mode"],
            message: format!(
                "`tls.mode: {}` needs the CA bundle inside the cluster, and the consumer with Secret `{login_secret}` names no `reconfigure.caSecret`",
                rt.tls.mode.as_str()
            ),
            help: "set `reconfigure.caSecret` beside `connectionSecret` (pgplan writes the bundle from `tls.caFile` into it)".into(),
        });
    }
    Ok(Some(InCluster {
        namespace: ns.clone(),
        image: format!("postgres:{}", major(&rt.engine_version)),
        login_secret: login_secret.clone(),
        ca_secret: ca
            .filter(|_| rt.tls.ca_file.is_some())
            .map(|c| SecretKeyRef {
                name: c.name.clone(),
                key: c.key.clone(),
            }),
        sslmode: rt.tls.mode,
    }))
}

/// The major version of an engine version (`15.4` → `15`).
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The backup claim of a move to RDS, in the source's namespace `ns` and
/// of its data's storage class (`class`, else the cluster's default),
/// which must provision volumes: a move to RDS has no node and path to put
/// a static volume at. Returns the claim and the step that creates it
/// (none when it exists), or `None` after an error.
pub(super) fn rds_claim(
    cx: &mut Ctx<'_>,
    ns: &str,
    class: Option<&str>,
    dbs: &[&DatabaseInventory],
) -> Option<(ObjectRef, Vec<String>)> {
    if !super::kube::claim_holds(cx, dbs) {
        return None;
    }
    let sc = match class {
        Some(name) => cx.idx.get("StorageClass", "", name),
        None => cx.idx.list("StorageClass", "").into_iter().find(|c| {
            str_at(
                c,
                &[
                    "metadata",
                    "annotations",
                    "storageclass.kubernetes.io/is-default-class",
                ],
            ) == Some("true")
        }),
    };
    if let Some(sc) = sc {
        cx.read(sc);
        if str_at(sc, &["provisioner"]) == Some(NO_PROVISIONER) {
            cx.error(
                &["backup", "dataPath"],
                "pgplan::plan::data-path",
                format!(
                    "the backup claim would be of class {}, which has no provisioner, and a move to RDS has no node and path for a static volume",
                    str_at(sc, &["metadata", "name"]).unwrap_or_default()
                ),
                "give the source's claims a class with a provisioner, or use `dataPath: local`",
            );
            return None;
        }
    }
    let spec = cx.p.spec();
    let name = crate::names::backup_object_name(cx.p.name());
    let pvc = super::manifests::backup_pvc(cx.p, &name, ns, &spec.backup.storage_size, class);
    let steps = super::kube::converge(
        cx,
        pvc,
        "`backup.dataPath: cluster`: the move's dumps are made and kept on their own volume in the cluster, not on the machine running pgplan",
        ns,
        None,
    );
    let claim = ObjectRef::new("v1", "PersistentVolumeClaim", ns, &name);
    Some((claim, steps.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::major;

    #[test]
    fn the_tools_image_follows_the_engines_major_version() {
        assert_eq!(major("15.4"), "15");
        assert_eq!(major("16"), "16");
    }
}
