//! `pgplan observe`, and the online half of `pgplan plan`: read the live
//! cluster, RDS and the databases into an `Observed`, the same data a saved
//! snapshot holds, so online and offline plans are computed identically.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cluster::{self, Cluster};
use crate::observed::{ObjectKey, Observed, Origin, SNAPSHOT_FORMAT_VERSION};
use crate::ops::OpsError;
use crate::pgtools::{self, ConnInfo, Runner};
use crate::spec::{Placement, Source, Spec, Target};

/// Where the cluster is, and how long a request to it may take.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// `--request-timeout` (`None`: no limit).
    pub request_timeout: Option<std::time::Duration>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            kubeconfig: None,
            context: None,
            request_timeout: Some(cluster::DEFAULT_REQUEST_TIMEOUT),
        }
    }
}

impl ClusterOptions {
    pub async fn connect(&self) -> Result<Cluster, cluster::ClusterError> {
        Cluster::connect_with(
            self.kubeconfig.as_deref(),
            self.context.as_deref(),
            self.request_timeout,
        )
        .await
    }
}

/// A Tokio runtime for the operations that talk to the world.
/// The inventory of a server outside the cluster, taken from a client pod
/// of its own (deleted afterwards); `None` while the connection Secret the
/// pod reads does not exist.
async fn through_client(
    c: &Cluster,
    ic: &crate::plan::InCluster,
    locator: &str,
    wants: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<crate::observed::ServerInventory>, OpsError> {
    let secret = crate::plan::ObjectRef::new("v1", "Secret", &ic.namespace, &ic.login_secret);
    if c.get(&secret).await?.is_none() {
        return Ok(None);
    }
    let fail = |message: String| OpsError::ClientPod {
        server: locator.to_string(),
        namespace: ic.namespace.clone(),
        message,
    };
    // Its own name: plans from other machines run clients of their own.
    let seed = format!(
        "observe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let pod = crate::apply::start_client(c, ic, &seed, locator)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let inventory = pgtools::inventory::server(&pod.runner(), locator, wants).await;
    pod.remove().await;
    Ok(Some(inventory?))
}

pub fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| OpsError::Runtime(e.to_string()))
}

/// The databases whose contents are read: those the planner selects.
fn wants(p: &Placement) -> impl Fn(&str) -> bool + '_ {
    move |db: &str| p.model().databases.selects(db)
}

/// A libpq connection to a server the spec names by address, as the
/// model resolved it; the password from the login's `${VAR}`.
fn conn_info(
    endpoint: &crate::spec::Endpoint,
    login: Option<&crate::spec::Login>,
    default_user: &str,
) -> ConnInfo {
    ConnInfo {
        host: endpoint.host.clone(),
        port: endpoint.port,
        user: login
            .map(|l| l.username.clone())
            .unwrap_or_else(|| default_user.into()),
        password: login
            .and_then(|l| crate::spec::password_var(&l.password))
            .and_then(|v| std::env::var(v).ok()),
        sslmode: endpoint.tls_mode.as_str().into(),
        sslrootcert: endpoint.ca_file.clone(),
    }
}

/// Observe everything the spec's plans read.
pub async fn observe(
    spec: &Spec,
    opts: &ClusterOptions,
) -> Result<(Observed, Option<Cluster>), OpsError> {
    observe_as(spec, opts, None).await
}

/// [`observe`], by the apply holding the lock `own_lock`: its own Lease is
/// not an apply in progress.
pub async fn observe_as(
    spec: &Spec,
    opts: &ClusterOptions,
    own_lock: Option<&str>,
) -> Result<(Observed, Option<Cluster>), OpsError> {
    let needs_cluster = spec.placements.iter().any(|p| {
        matches!(p.spec().source, Source::Kubernetes(_))
            || matches!(p.spec().target, Target::Kubernetes(_))
            || !p.spec().consumers.is_empty()
    });
    let cluster = if needs_cluster {
        Some(opts.connect().await?)
    } else {
        None
    };
    let mut objects = BTreeMap::new();
    let mut missing_namespaces = std::collections::BTreeSet::new();
    let mut servers = Vec::new();
    let mut rds = crate::observed::RdsState::default();
    let mut region = None;
    if let Some(c) = &cluster {
        for p in &spec.placements {
            let reads = cluster::observe::placement(c, p).await?;
            for o in reads.objects {
                if let Some(k) = ObjectKey::of(&o) {
                    objects.entry(k).or_insert(o);
                }
            }
            missing_namespaces.extend(reads.missing_namespaces);
        }
    }
    // Applies running or unfinished, before any server is asked: such a
    // placement is not planned, and its servers may be down mid-change.
    let listed: Vec<serde_json::Value> = objects.values().cloned().collect();
    let unfinished = match &cluster {
        Some(c) => super::unfinished::observe(c, spec, &listed, own_lock).await?,
        None => Vec::new(),
    };
    drop(listed);
    for p in &spec.placements {
        if unfinished.iter().any(|u| u.placement == p.name()) {
            continue;
        }
        // The source server's inventory.
        match &p.spec().source {
            Source::Kubernetes(src) => {
                let Some(c) = &cluster else { continue };
                let found = objects.iter().find(|(k, o)| {
                    k.kind == src.workload.kind.as_str()
                        && k.namespace == src.namespace
                        && match (&src.workload.name, &src.workload.selector) {
                            (Some(n), _) => &k.name == n,
                            (None, Some(sel)) => {
                                let l = crate::observed::labels(o);
                                sel.iter().all(|(a, b)| l.get(a) == Some(b))
                            }
                            _ => false,
                        }
                });
                if let Some((key, workload)) = found {
                    let locator =
                        crate::addr::Locator::k8s(&key.namespace, &key.kind, &key.name).to_string();
                    let selector =
                        crate::observed::at(workload, &["spec", "selector", "matchLabels"])
                            .and_then(serde_json::Value::as_object)
                            .map(|m| {
                                m.iter()
                                    .filter_map(|(k, v)| {
                                        v.as_str().map(|v| (k.clone(), v.to_string()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                    // The same container the planner takes; without one, the
                    // planner reports it against the spec.
                    let pod_spec = crate::observed::at(workload, &["spec", "template", "spec"])
                        .unwrap_or(&serde_json::Value::Null);
                    if let Ok(choice) =
                        crate::diff::source::postgres_container(pod_spec, src.container.as_deref())
                    {
                        let pod = c.ready_pod(&key.namespace, &selector).await?;
                        let runner = Runner::Pod {
                            cluster: c,
                            namespace: key.namespace.clone(),
                            pod: pod.clone(),
                            container: Some(choice.name.clone()),
                        };
                        match pgtools::inventory::server(&runner, &locator, &wants(p)).await {
                            Ok(s) => {
                                let namespaces = client_namespaces(p, &key.namespace);
                                for pod in client_pods(c, &s, &namespaces).await? {
                                    if let Some(k) = ObjectKey::of(&pod) {
                                        objects.entry(k).or_insert(pod);
                                    }
                                }
                                servers.push(s)
                            }
                            // On thin evidence, say which container was tried.
                            Err(e) if choice.unsure => {
                                return Err(OpsError::InContainer {
                                    namespace: key.namespace.clone(),
                                    pod,
                                    container: choice.name.clone(),
                                    why: choice.evidence.join(", "),
                                    source: Box::new(e),
                                })
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            Source::External(e) => {
                let Some(endpoint) = &p.model().source_endpoint else {
                    continue;
                };
                let conn = conn_info(endpoint, p.model().source_login.as_ref(), "postgres");
                let runner = Runner::Local { conn };
                let locator = crate::addr::Locator::external(&e.host, e.port).to_string();
                servers.push(pgtools::inventory::server(&runner, &locator, &wants(p)).await?);
            }
        }
        if let Target::Rds(r) = &p.spec().target {
            region.get_or_insert_with(|| r.region.clone());
            let client = crate::aws::Rds::connect(&r.region).await?;
            let state = client.observe(&r.instance_identifier).await?;
            let instance = state.instances.first().cloned();
            rds.instances.extend(state.instances);
            rds.snapshots.extend(state.snapshots);
            // The target's own inventory, when it is up and we can log in.
            let login = p.model().target_login.as_ref();
            let password = login
                .and_then(|l| crate::spec::password_var(&l.password))
                .and_then(|v| std::env::var(v).ok());
            let locator = crate::addr::Locator::rds(&r.region, &r.instance_identifier).to_string();
            let in_cluster = crate::diff::incluster::rds_client(p.spec(), r)
                .ok()
                .flatten()
                .filter(|_| r.connect.is_none());
            if let (Some(i), Some(ic), Some(c)) = (&instance, &in_cluster, &cluster) {
                // No route from here: through a client pod, once the
                // connection Secret it reads exists.
                if i.status == "available" {
                    if let Some(s) = through_client(c, ic, &locator, &wants(p)).await? {
                        servers.push(s);
                    }
                }
                continue;
            }
            if let (Some(i), Some(login), Some(_)) = (instance, login, password) {
                if i.status == "available" {
                    let address = i.endpoint.as_ref().map(|e| (e.address.as_str(), e.port));
                    let Some(endpoint) = p.model().rds_endpoint(&r.tls, address) else {
                        continue;
                    };
                    let runner = Runner::Local {
                        conn: conn_info(&endpoint, Some(login), &login.username),
                    };
                    servers.push(pgtools::inventory::server(&runner, &locator, &wants(p)).await?);
                }
            }
        }
    }
    let origin = cluster.as_ref().map(|c| Origin {
        context: Some(c.context.clone()),
        server: Some(c.server.clone()),
        aws_region: region.clone(),
    });
    let served_apis = match &cluster {
        Some(c) => c.served_apis().await?,
        None => None,
    };
    let observed = Observed {
        format_version: SNAPSHOT_FORMAT_VERSION,
        origin,
        kubernetes: crate::observed::KubeState {
            served_apis,
            missing_namespaces: missing_namespaces.into_iter().collect(),
            objects: objects.into_values().collect(),
        },
        rds,
        servers,
        unfinished,
    };
    Ok((observed, cluster))
}

/// Where preflight looks for the pods of a server's clients: the source's
/// namespace and each consumer's.
fn client_namespaces(p: &crate::spec::Placement, source_ns: &str) -> Vec<String> {
    let mut out = vec![source_ns.to_string()];
    for c in &p.spec().consumers {
        if let Some(ns) = &c.namespace {
            if !out.contains(ns) {
                out.push(ns.clone());
            }
        }
    }
    out
}

/// The pods behind a server's network sessions (one request per distinct
/// address and namespace, none for a server without such sessions), so
/// preflight can name who would still write during a move. A namespace
/// pgplan may not list pods in is skipped: the client is then named by its
/// address.
async fn client_pods(
    c: &Cluster,
    server: &crate::observed::ServerInventory,
    namespaces: &[String],
) -> Result<Vec<serde_json::Value>, OpsError> {
    let mut addresses: Vec<&str> = server
        .sessions
        .iter()
        .map(|s| s.address.as_str())
        .filter(|a| !matches!(*a, "127.0.0.1" | "::1" | ""))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let mut out = Vec::new();
    for a in addresses {
        for ns in namespaces {
            match c.pods_with_ip(ns, a).await {
                Ok(pods) if !pods.is_empty() => {
                    out.extend(pods);
                    break;
                }
                Ok(_) | Err(crate::cluster::ClusterError::Forbidden { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}

/// `pgplan observe`: the snapshot as YAML (secrets redacted), written to
/// `out` or returned for stdout.
pub struct ObserveOptions {
    pub source: crate::ops::SpecSource,
    pub environment: Option<String>,
    pub cluster: ClusterOptions,
    pub out: Option<PathBuf>,
}

pub fn run(opts: &ObserveOptions) -> Result<Option<String>, OpsError> {
    let (spec, _) = opts.source.load(opts.environment.as_deref(), false)?;
    let (observed, _) = runtime()?.block_on(observe(&spec, &opts.cluster))?;
    let redactor = crate::redact::Redactor::new(spec.secrets.iter().cloned());
    let yaml = crate::observed::to_yaml(&observed).map_err(|e| OpsError::Runtime(e.to_string()))?;
    let text = format!(
        "# Written by `pgplan observe` from {}; Secrets are keys and fingerprints only\n# (each value is the placeholder {}, base64 of `(sensitive)`).\n# For planning (`--live-state`), not for `kubectl apply`.\n{}",
        spec.file.name,
        crate::observed::SNAPSHOT_PLACEHOLDER,
        redactor.text(&yaml)
    );
    match &opts.out {
        Some(path) => {
            crate::ops::write(path, &text)?;
            Ok(None)
        }
        None => Ok(Some(text)),
    }
}
