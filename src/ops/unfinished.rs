//! What the live state shows of applies pgplan did not finish, read beside
//! the objects a plan reads: each placement's Lease (one request), the
//! `pgplan.dev/quiesced-replicas` annotation on its consumers (already
//! observed), and the loading settings on a target StatefulSet's server
//! (one exec, only when that StatefulSet exists). `pgplan plan` refuses to
//! plan such a placement, and `apply` refuses to apply over it.

use serde_json::Value;

use crate::apply::lock;
use crate::cluster::{Cluster, ClusterError};
use crate::diff::manifests::get_field;
use crate::observed::{at, str_at, ObjectKey, StoppedConsumer, TunedServer, UnfinishedApply};
use crate::pgtools::{tune, Runner};
use crate::plan::{ObjectRef, QUIESCED_ANNOTATION};
use crate::spec::{Placement, Source, Spec, Target};

/// Every placement's unfinished apply, if the cluster shows one. The
/// Lease held by `own_lock` (this apply's, after it took its locks) is not
/// one.
pub async fn observe(
    cluster: &Cluster,
    spec: &Spec,
    objects: &[Value],
    own_lock: Option<&str>,
) -> Result<Vec<UnfinishedApply>, ClusterError> {
    let mut out = Vec::new();
    for p in &spec.placements {
        let u = placement(cluster, p, objects, own_lock).await?;
        if !u.is_empty() {
            out.push(u);
        }
    }
    Ok(out)
}

async fn placement(
    cluster: &Cluster,
    p: &Placement,
    objects: &[Value],
    own_lock: Option<&str>,
) -> Result<UnfinishedApply, ClusterError> {
    let find = |kind: &str, ns: &str, name: &str| {
        let key = ObjectKey::new(kind, ns, name);
        objects
            .iter()
            .find(|o| ObjectKey::of(o).as_ref() == Some(&key))
    };
    let lease = cluster
        .get(&lock::lease_ref(&lock::namespace(p), p.name()))
        .await?;
    let lock = lease
        .as_ref()
        .and_then(lock::describe)
        .filter(|l| Some(l.holder.as_str()) != own_lock);

    let spec = p.spec();
    let src_ns = match &spec.source {
        Source::Kubernetes(k) => k.namespace.clone(),
        Source::External(_) => "default".into(),
    };
    let mut stopped = Vec::new();
    for c in &spec.consumers {
        let ns = c.namespace.clone().unwrap_or_else(|| src_ns.clone());
        let Some(o) = find(&c.kind, &ns, &c.name) else {
            continue;
        };
        let Some(from) = str_at(o, &["metadata", "annotations", QUIESCED_ANNOTATION])
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let replicas = match c.replicas_field() {
            Some(f) if !c.is_workload() => get_field(o, f),
            _ => at(o, &["spec", "replicas"]),
        }
        .and_then(Value::as_u64)
        .unwrap_or(1);
        let av = c.api_version.clone().unwrap_or_else(|| "apps/v1".into());
        stopped.push(StoppedConsumer {
            object: ObjectRef::new(&av, &c.kind, &ns, &c.name).address(),
            replicas,
            quiesced_from: from,
        });
    }

    let mut tuned = Vec::new();
    if let Target::Kubernetes(k) = &spec.target {
        let ns = k.namespace.clone().unwrap_or_else(|| src_ns.clone());
        if let Some(sts) = find("StatefulSet", &ns, &k.stateful_set.name) {
            tuned.extend(tuned_server(cluster, &ns, sts).await);
        }
    }
    Ok(UnfinishedApply {
        placement: p.name().to_string(),
        lock,
        stopped_consumers: stopped,
        tuned_servers: tuned,
    })
}

/// The loading settings still on a StatefulSet's ready server. A server
/// that cannot be asked (no ready pod, a refused query) shows nothing:
/// the plan reports what it can see, and the Lease says the rest.
async fn tuned_server(cluster: &Cluster, ns: &str, sts: &Value) -> Option<TunedServer> {
    let selector = at(sts, &["spec", "selector", "matchLabels"])?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let pod = cluster.ready_pod(ns, &selector).await.ok()?;
    let runner = Runner::Pod {
        cluster,
        namespace: ns.to_string(),
        pod: pod.clone(),
        container: at(sts, &["spec", "template", "spec"])
            .and_then(|pod_spec| crate::diff::source::postgres_container(pod_spec, None).ok())
            .map(|c| c.name),
    };
    let settings = tune::still_tuned(&runner).await.ok()?;
    (!settings.is_empty()).then(|| TunedServer {
        pod: ObjectRef::new("v1", "Pod", ns, &pod).address(),
        settings,
    })
}
