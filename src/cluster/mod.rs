//! The Kubernetes adapter: a client from the kubeconfig (or in-cluster),
//! object reads and writes on plain JSON manifests, waits, and errors a user
//! can act on (which context, which server, which verb was forbidden).
//!
//! Everything goes through the unmodified kube client. Objects are
//! `DynamicObject`s converted to and from `serde_json::Value`, the form the
//! core plans with; built-in kinds map to their API resources without
//! discovery, custom resources are resolved once per kind.

pub mod exec;
pub mod observe;
pub mod pods;
pub mod timeout;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

use crate::plan::ObjectRef;

/// What went wrong talking to the cluster, in the user's terms.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClusterError {
    #[error("no usable Kubernetes configuration: {message}")]
    #[diagnostic(
        code(pgplan::cluster::config),
        help("set KUBECONFIG or pass --kubeconfig FILE (and --context NAME); inside a pod, pgplan uses the service account")
    )]
    Config { message: String },
    #[error("context `{context}` is not in the kubeconfig ({file}); it has: {have}")]
    #[diagnostic(
        code(pgplan::cluster::context),
        help("pass one of those with --context (`kubectl config get-contexts` lists them), or point --kubeconfig (or KUBECONFIG) at the file that has `{context}`")
    )]
    UnknownContext {
        context: String,
        file: String,
        have: String,
    },
    #[error(
        "the Kubernetes API server of context `{context}` ({server}) is unreachable: {message}"
    )]
    #[diagnostic(
        code(pgplan::cluster::unreachable),
        help("check the network path to the server and that the context is the one you meant (`kubectl --context {context} get ns`)")
    )]
    Unreachable {
        context: String,
        server: String,
        message: String,
    },
    #[error(
        "the Kubernetes API server of context `{context}` ({server}) did not answer within {limit}"
    )]
    #[diagnostic(
        code(pgplan::cluster::request_timeout),
        help("check that the server is up and answering (`kubectl --context {context} get ns`); a server that is only slow needs a longer --request-timeout (0: no limit)")
    )]
    TimedOut {
        context: String,
        server: String,
        /// The bound, as people read it: `30 s (--request-timeout)`.
        limit: String,
    },
    #[error("forbidden: cannot {verb} {resource} in namespace `{namespace}`: {message}")]
    #[diagnostic(
        code(pgplan::cluster::forbidden),
        help("grant the identity of context `{context}` the `{verb}` verb on `{resource}` (e.g. a Role bound in `{namespace}`); `kubectl auth can-i {verb} {resource} -n {namespace}` checks it")
    )]
    Forbidden {
        context: String,
        verb: String,
        resource: String,
        namespace: String,
        message: String,
    },
    #[error("the API server rejected {verb} of {object}: {message}")]
    #[diagnostic(code(pgplan::cluster::rejected), help("{help}"))]
    Rejected {
        verb: String,
        object: String,
        code: u16,
        reason: String,
        message: String,
        help: String,
    },
    #[error("{object} is not ready after {seconds} s: {state}")]
    #[diagnostic(
        code(pgplan::cluster::timeout),
        help("`kubectl describe` the object and its pods; re-run with --resume once it is fixed")
    )]
    Timeout {
        object: String,
        seconds: u64,
        state: String,
    },
    #[error("{kind} ({api_version}) is not served by this cluster")]
    #[diagnostic(
        code(pgplan::cluster::unknown_kind),
        help("install its CustomResourceDefinition (with the controller or operator that acts on it); `kubectl api-resources` lists what the cluster serves")
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("{what}: {message}")]
    #[diagnostic(code(pgplan::cluster::exec))]
    Exec { what: String, message: String },
    #[error("no ready pod with labels {selector} in namespace `{namespace}`: {details}")]
    #[diagnostic(code(pgplan::cluster::no_ready_pod), help("{help}"))]
    NoReadyPod {
        namespace: String,
        selector: String,
        details: String,
        help: String,
    },
}

/// Whether a write is real or a server-side dry run (`dryRun=All`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Apply,
    DryRun,
}

/// How long a request to the API server may take by default (kubectl has
/// no default; 30 s is well past what a healthy server needs).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected cluster.
pub struct Cluster {
    client: Client,
    pub context: String,
    pub server: String,
    /// The bound on each request (`None`: unbounded).
    request_timeout: Option<Duration>,
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    /// The served API group versions, discovered once per run (`None`
    /// inside: discovery was refused, so nothing is known).
    served: tokio::sync::OnceCell<Option<Vec<String>>>,
}

/// Built-in kinds pgplan touches: (apiVersion, kind, plural, namespaced).
const BUILTIN: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "Pod", "pods", true),
    ("v1", "Service", "services", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "PersistentVolume", "persistentvolumes", false),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("storage.k8s.io/v1", "StorageClass", "storageclasses", false),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    (
        "snapshot.storage.k8s.io/v1",
        "VolumeSnapshot",
        "volumesnapshots",
        true,
    ),
];

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((g, v)) => GroupVersionKind::gvk(g, v, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

/// The usual apiVersion of a built-in kind.
pub fn builtin_api_version(kind: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|b| b.1 == kind).map(|b| b.0)
}

impl Cluster {
    /// Connect with `--kubeconfig`/`--context`, else $KUBECONFIG or
    /// ~/.kube/config, else the in-cluster service account; requests are
    /// bounded by [`DEFAULT_REQUEST_TIMEOUT`].
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, ClusterError> {
        Self::connect_with(kubeconfig, context, Some(DEFAULT_REQUEST_TIMEOUT)).await
    }

    /// [`Cluster::connect`] with every request bounded by
    /// `request_timeout` (`None`: unbounded), connecting included; see
    /// [`timeout`] for what it bounds of streams.
    pub async fn connect_with(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        request_timeout: Option<Duration>,
    ) -> Result<Self, ClusterError> {
        if let Some(wanted) = context {
            check_context(kubeconfig, wanted)?;
        }
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| ClusterError::Config {
                    message: format!("{}: {e}", path.display()),
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| ClusterError::Config {
                        message: e.to_string(),
                    })?
            }
            None if context.is_some() => {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| ClusterError::Config {
                        message: e.to_string(),
                    })?
            }
            None => Config::infer().await.map_err(|e| ClusterError::Config {
                message: e.to_string(),
            })?,
        };
        let context_name = context
            .map(str::to_string)
            .or_else(|| current_context(kubeconfig))
            .unwrap_or_else(|| "in-cluster".into());
        let server = config.cluster_url.to_string();
        let mut config = config;
        config.connect_timeout = request_timeout;
        let builder =
            kube::client::ClientBuilder::try_from(config).map_err(|e| ClusterError::Config {
                message: e.to_string(),
            })?;
        let client = match request_timeout {
            Some(limit) => builder
                .with_layer(&timeout::RequestTimeoutLayer { limit })
                .build(),
            None => builder.build(),
        };
        Ok(Cluster {
            client,
            context: context_name,
            server,
            request_timeout,
            resources: Mutex::new(HashMap::new()),
            served: tokio::sync::OnceCell::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API group versions the cluster serves (`v1`, `apps/v1`, …), as
    /// kubectl discovers them: one `GET /apis` per run, cached. `None` when
    /// the server refuses discovery (then nothing is concluded from it).
    pub async fn served_apis(&self) -> Result<Option<Vec<String>>, ClusterError> {
        self.served
            .get_or_try_init(|| async {
                match self.client.list_api_groups().await {
                    Ok(list) => {
                        let mut served: Vec<String> = list
                            .groups
                            .iter()
                            .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
                            .collect();
                        served.push("v1".into());
                        served.sort();
                        served.dedup();
                        Ok(Some(served))
                    }
                    Err(kube::Error::Api(_)) => Ok(None),
                    Err(e) => Err(self.classify(e, "discover", "APIs", "", "the served APIs")),
                }
            })
            .await
            .cloned()
    }

    /// The API resource of a kind (built-in table, or discovery once per kind).
    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ClusterError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self
            .resources
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(r);
        }
        // A kind whose API group the cluster does not serve (a CRD not
        // installed) is said so, instead of the plain `404 page not found`
        // the server would answer for its paths.
        if api_version != "v1" {
            if let Some(served) = self.served_apis().await? {
                if !served.iter().any(|a| a == api_version) {
                    return Err(ClusterError::UnknownKind {
                        api_version: api_version.into(),
                        kind: kind.into(),
                    });
                }
            }
        }
        let found = match BUILTIN.iter().find(|b| b.0 == api_version && b.1 == kind) {
            Some(b) => (
                ApiResource::from_gvk_with_plural(&gvk(api_version, kind), b.2),
                b.3,
            ),
            None => {
                let (ar, caps) =
                    kube::discovery::pinned_kind(&self.client, &gvk(api_version, kind))
                        .await
                        .map_err(|e| match e {
                            kube::Error::Api(s) if s.code == 404 => ClusterError::UnknownKind {
                                api_version: api_version.into(),
                                kind: kind.into(),
                            },
                            other => self.classify(other, "discover", kind, "", kind),
                        })?;
                (ar, caps.scope == kube::discovery::Scope::Namespaced)
            }
        };
        if let Ok(mut m) = self.resources.lock() {
            m.insert(key, found.clone());
        }
        Ok(found)
    }

    async fn api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> Result<(Api<DynamicObject>, ApiResource), ClusterError> {
        let (ar, namespaced) = self.resource(api_version, kind).await?;
        let api = if namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        Ok((api, ar))
    }

    /// Turn a kube error into one that names the context, verb and object.
    fn classify(
        &self,
        e: kube::Error,
        verb: &str,
        resource: &str,
        namespace: &str,
        object: &str,
    ) -> ClusterError {
        match e {
            kube::Error::Api(s) if s.code == 403 => ClusterError::Forbidden {
                context: self.context.clone(),
                verb: verb.into(),
                resource: resource.into(),
                namespace: if namespace.is_empty() {
                    "(cluster)".into()
                } else {
                    namespace.into()
                },
                message: s.message.clone(),
            },
            kube::Error::Api(s) => ClusterError::Rejected {
                verb: verb.into(),
                object: object.into(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
                help: match s.code {
                    409 => "the object changed or exists already; plan again".into(),
                    422 => {
                        "the server's validation refused the manifest; the message names the field"
                            .into()
                    }
                    404 => "the object (or its namespace) does not exist".into(),
                    _ => "see the server's message".into(),
                },
            },
            other => match timeout::timed_out(&other) {
                Some(limit) => ClusterError::TimedOut {
                    context: self.context.clone(),
                    server: self.server.clone(),
                    limit: match limit.or(self.request_timeout) {
                        Some(l) => format!("{} (--request-timeout)", timeout::seconds(l)),
                        None => "the connect timeout".into(),
                    },
                },
                None => ClusterError::Unreachable {
                    context: self.context.clone(),
                    server: self.server.clone(),
                    message: error_chain(&other),
                },
            },
        }
    }

    /// Read an object; `None` when it does not exist.
    pub async fn get(&self, r: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let (api, ar) = self.api(&r.api_version, &r.kind, &r.namespace).await?;
        match api.get(&r.name).await {
            Ok(o) => Ok(Some(to_value(o, &ar))),
            Err(kube::Error::Api(s)) if page_not_found(&s) => Err(ClusterError::UnknownKind {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            }),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
            Err(e) => Err(self.classify(e, "get", &ar.plural, &r.namespace, &r.display())),
        }
    }

    /// List objects of a kind, optionally by label selector.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: Option<&str>,
    ) -> Result<Vec<Value>, ClusterError> {
        let (api, ar) = self.api(api_version, kind, namespace).await?;
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        match api.list(&lp).await {
            Ok(list) => Ok(list.items.into_iter().map(|o| to_value(o, &ar)).collect()),
            Err(kube::Error::Api(s)) if page_not_found(&s) => Err(ClusterError::UnknownKind {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            Err(e) => Err(self.classify(
                e,
                "list",
                &ar.plural,
                namespace,
                &format!("{kind} in {namespace}"),
            )),
        }
    }

    /// The pods of a namespace that have `ip` (`fieldSelector=status.podIP=…`).
    pub async fn pods_with_ip(
        &self,
        namespace: &str,
        ip: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let (api, ar) = self.api("v1", "Pod", namespace).await?;
        let lp = ListParams::default().fields(&format!("status.podIP={ip}"));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items.into_iter().map(|o| to_value(o, &ar)).collect()),
            Err(e) => Err(self.classify(
                e,
                "list",
                &ar.plural,
                namespace,
                &format!("Pod with address {ip} in {namespace}"),
            )),
        }
    }

    /// Create an object from a manifest.
    pub async fn create(&self, manifest: &Value, write: Write) -> Result<Value, ClusterError> {
        let r = object_ref(manifest)?;
        let (api, ar) = self.api(&r.api_version, &r.kind, &r.namespace).await?;
        let obj: DynamicObject = from_value(manifest)?;
        let pp = PostParams {
            dry_run: write == Write::DryRun,
            ..Default::default()
        };
        api.create(&pp, &obj)
            .await
            .map(|o| to_value(o, &ar))
            .map_err(|e| self.classify(e, "create", &ar.plural, &r.namespace, &r.display()))
    }

    /// JSON merge patch an object.
    pub async fn merge_patch(
        &self,
        r: &ObjectRef,
        patch: &Value,
        write: Write,
    ) -> Result<Value, ClusterError> {
        let (api, ar) = self.api(&r.api_version, &r.kind, &r.namespace).await?;
        let pp = PatchParams {
            dry_run: write == Write::DryRun,
            ..Default::default()
        };
        api.patch(&r.name, &pp, &Patch::Merge(patch))
            .await
            .map(|o| to_value(o, &ar))
            .map_err(|e| self.classify(e, "patch", &ar.plural, &r.namespace, &r.display()))
    }

    /// Delete an object; `false` when it was already gone.
    pub async fn delete(&self, r: &ObjectRef, write: Write) -> Result<bool, ClusterError> {
        let (api, ar) = self.api(&r.api_version, &r.kind, &r.namespace).await?;
        let dp = DeleteParams {
            dry_run: write == Write::DryRun,
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        match api.delete(&r.name, &dp).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.classify(e, "delete", &ar.plural, &r.namespace, &r.display())),
        }
    }

    /// Poll until `ready` says so, or time out with the last state seen.
    pub async fn wait<F>(
        &self,
        r: &ObjectRef,
        timeout: Duration,
        ready: F,
    ) -> Result<Option<Value>, ClusterError>
    where
        F: FnMut(Option<&Value>) -> Result<bool, String>,
    {
        self.wait_polling(r, timeout, Duration::from_secs(2), ready)
            .await
    }

    /// [`Cluster::wait`], looking again at most every `cap` (from 100 ms,
    /// doubling): a short cap for what is expected within a second, such
    /// as a tools pod starting, so that it is seen at once.
    pub async fn wait_polling<F>(
        &self,
        r: &ObjectRef,
        timeout: Duration,
        cap: Duration,
        mut ready: F,
    ) -> Result<Option<Value>, ClusterError>
    where
        F: FnMut(Option<&Value>) -> Result<bool, String>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(100).min(cap);
        loop {
            let obj = self.get(r).await?;
            match ready(obj.as_ref()) {
                Ok(true) => return Ok(obj),
                Ok(false) => {}
                Err(state) if start.elapsed() >= timeout => {
                    return Err(ClusterError::Timeout {
                        object: r.display(),
                        seconds: timeout.as_secs(),
                        state,
                    })
                }
                Err(_) => {}
            }
            if start.elapsed() >= timeout {
                return Err(ClusterError::Timeout {
                    object: r.display(),
                    seconds: timeout.as_secs(),
                    state: "condition not met".into(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(cap);
        }
    }
}

/// A 404 that is not an API `Status` but the server's plain-text `404 page
/// not found`: no API serves the path (a CRD that is not installed). A
/// missing object is a JSON `Status` with reason `NotFound`.
fn page_not_found(s: &kube::core::Status) -> bool {
    s.code == 404 && s.reason != "NotFound" && s.message.contains("page not found")
}

/// A `--context` the kubeconfig does not have is named with the contexts it
/// does have (kube's own error says only that it is missing). A kubeconfig
/// that cannot be read is left for the client to report.
fn check_context(kubeconfig: Option<&Path>, wanted: &str) -> Result<(), ClusterError> {
    let (kc, file) = match kubeconfig {
        Some(p) => (Kubeconfig::read_from(p), p.display().to_string()),
        None => (
            Kubeconfig::read(),
            std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into()),
        ),
    };
    let Ok(kc) = kc else {
        return Ok(());
    };
    if kc.contexts.iter().any(|c| c.name == wanted) {
        return Ok(());
    }
    let have: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
    Err(ClusterError::UnknownContext {
        context: wanted.into(),
        file,
        have: if have.is_empty() {
            "no contexts".into()
        } else {
            have.join(", ")
        },
    })
}

fn current_context(kubeconfig: Option<&Path>) -> Option<String> {
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    kc.current_context
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        cur = s.source();
    }
    msg
}

fn object_ref(manifest: &Value) -> Result<ObjectRef, ClusterError> {
    ObjectRef::of(manifest).ok_or_else(|| ClusterError::Rejected {
        verb: "create".into(),
        object: "a manifest".into(),
        code: 0,
        reason: "Invalid".into(),
        message: "the manifest has no apiVersion, kind or name".into(),
        help: "this is a pgplan bug; please report it with the plan".into(),
    })
}

fn from_value(manifest: &Value) -> Result<DynamicObject, ClusterError> {
    serde_json::from_value(manifest.clone()).map_err(|e| ClusterError::Rejected {
        verb: "create".into(),
        object: "a manifest".into(),
        code: 0,
        reason: "Invalid".into(),
        message: e.to_string(),
        help: "this is a pgplan bug; please report it with the plan".into(),
    })
}

/// A DynamicObject as a plain manifest, with its apiVersion and kind set
/// (lists omit them) and managedFields dropped.
fn to_value(o: DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
        if let Some(Value::Object(md)) = m.get_mut("metadata") {
            md.remove("managedFields");
        }
    }
    v
}
