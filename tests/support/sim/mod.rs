//! The simulated Kubernetes cluster: an API server the unmodified kube client (and kubectl) talks
//! to over HTTPS,
//! with controllers and a kubelet whose PostgreSQL pods are real local servers. `SimCluster` is
//! the handle a test holds: it starts everything on its own thread and tokio runtime (so it
//! serves sync tests, `#[tokio::test]`s and subprocesses alike), writes a kubeconfig, gives
//! direct access to state and to pods' databases, and tears everything down — processes and
//! directories — when dropped, panics included.
//!
//! Module map: `kinds` (served resource types, discovery), `store` (objects, resourceVersion,
//! change history), `registry` (API semantics over the store), `admission` (defaults,
//! validation), `patch`, `select` (selectors), `api` (HTTP), `tls` (its CA and HTTPS), `stream`
//! (exec/port-forward protocols), `openapi` (the OpenAPI documents kubectl reads), `controllers/` (workloads, volumes, GC, the Backstage operator), `kubelet` (pods,
//! real PostgreSQL), `faults` and `reqlog` (fault injection, request log), `scenario` (seeds).

pub mod admission;
pub mod api;
pub mod controllers;
pub mod dns;
pub mod error;
pub mod faults;
pub mod kinds;
pub mod kubelet;
pub mod obj;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod reqlog;
pub mod sandbox;
pub mod scenario;
pub mod select;
pub mod store;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use self::api::ExecProtocols;
use self::error::ApiError;
use self::faults::{FaultId, FaultState};
use self::kinds::Kind;
use self::kubelet::{Kubelet, PgEndpoint};
use self::reqlog::RequestLog;
pub use self::scenario::Scenario;
use self::store::Store;
use super::pg::{self, PsqlError};
use super::scratch::Scratch;

/// How to build a [`SimCluster`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Node names (`kubernetes.io/hostname`); the first is where unconstrained pods go.
    pub nodes: Vec<String>,
    /// A scenario to preload (pods Ready and data seeded before `start` returns).
    pub scenario: Option<Scenario>,
    /// How long to wait for a scenario's pods.
    pub ready_timeout: Duration,
    /// The exec protocols the kubelet speaks (default: v5 and v4, or v4 only when
    /// `PGPLAN_TEST_EXEC_PROTOCOL=v4`).
    pub exec: ExecProtocols,
    /// Serve HTTPS with a CA of its own in the kubeconfig (default), or plain HTTP (also the
    /// default when `PGPLAN_TEST_PLAIN_HTTP=1`).
    pub https: bool,
    /// API groups of custom resources whose CRDs are not installed (from [`kinds::CRD_GROUPS`]:
    /// `snapshot.storage.k8s.io`, `rhdh.redhat.com`): discovery leaves them out and every path
    /// under them answers a plain-text `404 page not found`, as a real server does. A scenario's
    /// objects of those kinds are not created (and owner references to them are dropped).
    pub absent_api_groups: Vec<String>,
    /// Whether a snapshot controller runs. Without one (the CRDs installed, the controller not)
    /// VolumeSnapshots are stored and nothing ever sets their status.
    pub snapshot_controller: bool,
    /// StorageClasses whose volume expansions never finish: the controller side grows the PV and
    /// the claim gets the `FileSystemResizePending` condition, but its `status.capacity` stays,
    /// as when the file system resize needs a pod restart the kubelet never gets.
    pub stalled_resize_classes: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: vec!["node1".into(), "node2".into()],
            scenario: None,
            ready_timeout: Duration::from_secs(90),
            exec: ExecProtocols::from_env(),
            https: std::env::var_os("PGPLAN_TEST_PLAIN_HTTP").is_none_or(|v| v.is_empty()),
            absent_api_groups: Vec::new(),
            snapshot_controller: true,
            stalled_resize_classes: Vec::new(),
        }
    }
}

/// A running simulated cluster. Dropping it stops every pod (and its PostgreSQL), the server and
/// the controllers, and removes its directory.
pub struct SimCluster {
    store: Store,
    log: Arc<RequestLog>,
    faults: Arc<FaultState>,
    kubelet: Arc<Kubelet>,
    addr: SocketAddr,
    /// The CA of its HTTPS (none over plain HTTP).
    ca: Option<(String, Vec<u8>)>,
    kubeconfig: PathBuf,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    scenario: Option<Scenario>,
    absent_api_groups: Vec<String>,
    // Last: removed after the thread (and every postgres) is gone.
    dir: Scratch,
}

const TOKEN: &str = "pgplan-simcluster-token";

impl SimCluster {
    /// An empty cluster (namespaces `default`, `kube-system`, `kube-public`; nodes `node1`,
    /// `node2`). Panics if it cannot start.
    pub fn start() -> SimCluster {
        Self::start_with(SimOptions::default()).expect("start the simulated cluster")
    }

    /// A cluster preloaded with `scenario`: returns once its pods are Ready and its data seeded.
    pub fn with_scenario(scenario: Scenario) -> SimCluster {
        Self::start_with(SimOptions {
            scenario: Some(scenario),
            ..SimOptions::default()
        })
        .unwrap_or_else(|e| panic!("start the {} scenario: {e}", scenario.name()))
    }

    /// [`SimCluster::with_scenario`] whose kubelet speaks only `v4.channel.k8s.io`, as before
    /// Kubernetes 1.30.
    pub fn with_scenario_v4(scenario: Scenario) -> SimCluster {
        Self::start_with(SimOptions {
            scenario: Some(scenario),
            exec: ExecProtocols::V4Only,
            ..SimOptions::default()
        })
        .unwrap_or_else(|e| panic!("start the {} scenario (v4): {e}", scenario.name()))
    }

    pub fn start_with(opts: SimOptions) -> Result<SimCluster, String> {
        if let Some(g) = opts
            .absent_api_groups
            .iter()
            .find(|g| !kinds::CRD_GROUPS.contains(&g.as_str()))
        {
            return Err(format!(
                "`{g}` is not a custom resource group; only {:?} can be left out",
                kinds::CRD_GROUPS
            ));
        }
        let dir = Scratch::new("sim").map_err(|e| e.to_string())?;
        let store = Store::new();
        let log = Arc::new(RequestLog::default());
        let faults = Arc::new(FaultState::default());
        let kubelet = Arc::new(Kubelet::new(
            store.clone(),
            dir.path().to_path_buf(),
            opts.nodes.clone(),
            faults.clone(),
        )?);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            registry::create(
                &store,
                &kinds::NAMESPACE,
                "",
                json!({"metadata": {"name": ns}}),
                false,
            )
            .map_err(|e| e.to_string())?;
        }
        for (i, node) in opts.nodes.iter().enumerate() {
            let ip = format!("10.0.0.{}", 11 + i);
            registry::create(&store, &kinds::NODE, "", json!({
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node,
                    "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                "spec": {"podCIDR": kubelet.addresses().node_cidr(i)},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status"}],
                    "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": node}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0-pgplan-sim", "osImage": "pgplan simulated node",
                        "architecture": "amd64", "operatingSystem": "linux", "machineID": "", "systemUUID": "",
                        "bootID": "", "kernelVersion": "", "containerRuntimeVersion": "simulated://1",
                        "kubeProxyVersion": ""}}
            }), false)
            .map_err(|e| e.to_string())?;
        }
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let opts_exec = opts.exec;
        let tls = if opts.https {
            Some(tls::Tls::generate()?)
        } else {
            None
        };
        let ca = tls.as_ref().map(|t| (t.ca_pem.clone(), t.ca_der.clone()));
        let thread = {
            let (store, log, faults, kubelet, shutdown) = (
                store.clone(),
                log.clone(),
                faults.clone(),
                kubelet.clone(),
                shutdown.clone(),
            );
            let served = Served {
                absent_api_groups: opts.absent_api_groups.clone(),
                controllers: controllers::Options {
                    snapshot_controller: opts.snapshot_controller,
                    stalled_resize_classes: opts.stalled_resize_classes.clone(),
                },
                exec: opts_exec,
                tls,
            };
            std::thread::Builder::new()
                .name("simcluster".into())
                .spawn(move || serve(store, log, faults, kubelet, served, shutdown, ready_tx))
                .map_err(|e| e.to_string())?
        };
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("the API server did not start: {e}"))??;
        if let Some((pem, _)) = &ca {
            std::fs::write(dir.path().join("ca.crt"), pem).map_err(|e| e.to_string())?;
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(addr, ca.as_ref().map(|c| c.0.as_str())),
        )
        .map_err(|e| e.to_string())?;
        let cluster = SimCluster {
            store,
            log,
            faults,
            kubelet,
            addr,
            ca,
            kubeconfig,
            shutdown,
            thread: Some(thread),
            scenario: opts.scenario,
            absent_api_groups: opts.absent_api_groups,
            dir,
        };
        if let Some(s) = opts.scenario {
            cluster.load_scenario(s, opts.ready_timeout)?;
        }
        Ok(cluster)
    }

    /// Whether the cluster serves `kind` (its CRD is installed, or it is built in).
    pub fn serves(&self, kind: &Kind) -> bool {
        !self.absent_api_groups.iter().any(|g| g == kind.group)
    }

    fn load_scenario(&self, s: Scenario, timeout: Duration) -> Result<(), String> {
        for mut o in s.objects() {
            let kind = kinds::by_kind(
                obj::str_at(&o, "/apiVersion").unwrap_or(""),
                obj::str_at(&o, "/kind").unwrap_or(""),
            )
            .ok_or("scenario object of an unserved kind")?;
            if !self.serves(kind) {
                continue;
            }
            // Objects an absent operator would have owned are kept, without the owner.
            if let Some(Value::Array(refs)) = o.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|r| {
                    kinds::by_kind(
                        obj::str_at(r, "/apiVersion").unwrap_or(""),
                        obj::str_at(r, "/kind").unwrap_or(""),
                    )
                    .is_some_and(|k| self.serves(k))
                });
                if refs.is_empty() {
                    obj::map_at(&mut o, &["metadata"]).remove("ownerReferences");
                }
            }
            let ns = if kind.namespaced {
                obj::namespace(&o).to_string()
            } else {
                String::new()
            };
            // Fill in owner uids (the scenario names owners by kind and name).
            if let Some(Value::Array(refs)) = o.pointer_mut("/metadata/ownerReferences") {
                for r in refs {
                    let owner_kind = kinds::by_kind(
                        obj::str_at(r, "/apiVersion").unwrap_or(""),
                        obj::str_at(r, "/kind").unwrap_or(""),
                    );
                    if let Some(owner) = owner_kind.and_then(|k| {
                        self.store
                            .get(k, &ns, obj::str_at(r, "/name").unwrap_or(""))
                    }) {
                        r["uid"] = json!(obj::uid(&owner));
                    }
                }
            }
            registry::create(&self.store, kind, &ns, o, false)
                .map_err(|e| format!("creating a {} object: {e}", s.name()))?;
        }
        let ns = s.namespace();
        self.wait_for(timeout, |c| c.workloads_ready(ns))
            .map_err(|_| {
                format!(
                    "the {} scenario's pods did not become Ready:\n{}",
                    s.name(),
                    self.describe(ns)
                )
            })?;
        let seed = s.seed();
        let sel = select::LabelSelector::parse(seed.pod_selector).map_err(|e| e.to_string())?;
        let pod = self
            .store
            .list(&kinds::POD, Some(ns))
            .into_iter()
            .find(|p| sel.matches_object(p) && !obj::is_deleting(p))
            .ok_or("the scenario's database pod is missing")?;
        let ep = self
            .kubelet
            .pg_endpoint(ns, obj::name(&pod))
            .ok_or("the scenario's database pod runs no PostgreSQL")?;
        for (db, sql) in seed.sql {
            if db != "postgres" {
                let exists = pg::run_psql(
                    &ep.socket_dir,
                    ep.port,
                    seed.user,
                    "postgres",
                    &format!(
                        "SELECT 1 FROM pg_database WHERE datname = {}",
                        pg::quote_literal(&db)
                    ),
                )
                .map_err(|e| e.to_string())?;
                if exists.is_empty() {
                    pg::run_psql(
                        &ep.socket_dir,
                        ep.port,
                        seed.user,
                        "postgres",
                        &format!("CREATE DATABASE {}", pg::quote_ident(&db)),
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
            pg::run_psql(&ep.socket_dir, ep.port, seed.user, &db, &sql)
                .map_err(|e| e.to_string())?;
        }
        self.log.clear();
        Ok(())
    }

    /// Whether every Deployment and StatefulSet in `ns` has all its replicas Ready.
    pub fn workloads_ready(&self, ns: &str) -> bool {
        [&kinds::DEPLOYMENT, &kinds::STATEFUL_SET].iter().all(|k| {
            self.store.list(k, Some(ns)).iter().all(|w| {
                let want = obj::i64_at(w, "/spec/replicas").unwrap_or(1);
                let ready = obj::i64_at(w, "/status/readyReplicas").unwrap_or(0);
                let observed = obj::i64_at(w, "/status/observedGeneration").unwrap_or(0);
                ready == want && observed >= obj::i64_at(w, "/metadata/generation").unwrap_or(1)
            })
        })
    }

    /// A one-line-per-object description of the pods, PVCs and PVs of `ns` (for failure
    /// messages).
    pub fn describe(&self, ns: &str) -> String {
        let mut out = String::new();
        for p in self.store.list(&kinds::POD, Some(ns)) {
            out.push_str(&format!(
                "pod {}: phase={} ready={} {}\n",
                obj::name(&p),
                obj::str_at(&p, "/status/phase").unwrap_or("?"),
                controllers::pod_ready(&p),
                p.pointer("/status/containerStatuses")
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            ));
        }
        for c in self.store.list(&kinds::PVC, Some(ns)) {
            out.push_str(&format!(
                "pvc {}: {} volume={}\n",
                obj::name(&c),
                obj::str_at(&c, "/status/phase").unwrap_or("?"),
                obj::str_at(&c, "/spec/volumeName").unwrap_or("")
            ));
        }
        for v in self.store.list(&kinds::PV, None) {
            out.push_str(&format!(
                "pv {}: {}\n",
                obj::name(&v),
                obj::str_at(&v, "/status/phase").unwrap_or("?")
            ));
        }
        out
    }

    /// The scenario this cluster was started with.
    pub fn scenario(&self) -> Option<Scenario> {
        self.scenario
    }

    /// The kubeconfig (`server: https://127.0.0.1:PORT` with the cluster's CA, a bearer token,
    /// namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT` (`http://` when started without HTTPS).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate the server's certificate is signed by, PEM (none over plain HTTP).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|c| c.0.as_str())
    }

    /// The CA certificate's file (`ca.crt` beside the kubeconfig, for `curl --cacert`).
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|_| self.dir.path().join("ca.crt"))
    }

    /// The CA certificate, DER (for kube's `Config::root_cert`).
    pub fn ca_der(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|c| c.1.as_slice())
    }

    /// The cluster's own directory (volumes, pods, sockets), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kube client configured from the kubeconfig, as pgplan would build it.
    pub async fn client(&self) -> kube::Client {
        install_crypto_provider();
        let kc =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("load the kubeconfig");
        kube::Client::try_from(config).expect("build a kube client")
    }

    /// Every HTTP request answered so far.
    pub fn requests(&self) -> &RequestLog {
        &self.log
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults<'_> {
        Faults { cluster: self }
    }

    fn kind_of<K: kube::Resource<DynamicType = ()>>() -> &'static Kind {
        let (api_version, kind) = (K::api_version(&()), K::kind(&()));
        kinds::by_kind(&api_version, &kind).unwrap_or_else(|| {
            panic!("{api_version} {kind} is not served by the simulated cluster")
        })
    }

    /// An object straight from the store (no request logged), typed.
    pub fn get<K: kube::Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<K> {
        let kind = Self::kind_of::<K>();
        let ns = if kind.namespaced { ns } else { "" };
        self.store.get(kind, ns, name).map(|o| {
            serde_json::from_value((*o).clone())
                .unwrap_or_else(|e| panic!("stored {} {name} does not decode: {e}", kind.kind))
        })
    }

    /// Objects straight from the store, typed; `ns` `None` for all namespaces.
    pub fn list<K: kube::Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: Option<&str>,
    ) -> Vec<K> {
        let kind = Self::kind_of::<K>();
        self.store
            .list(kind, ns.filter(|_| kind.namespaced))
            .into_iter()
            .map(|o| serde_json::from_value((*o).clone()).expect("stored object decodes"))
            .collect()
    }

    /// An object as JSON by resource (`backstages`, `statefulsets.apps`, `pods`).
    pub fn get_json(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = kinds::by_resource(resource)?;
        let ns = if kind.namespaced { ns } else { "" };
        self.store.get(kind, ns, name).map(|o| (*o).clone())
    }

    /// Objects as JSON by resource, straight from the store; `ns` `None` for all namespaces.
    pub fn list_json(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let Some(kind) = kinds::by_resource(resource) else {
            return Vec::new();
        };
        self.store
            .list(kind, ns.filter(|_| kind.namespaced))
            .into_iter()
            .map(|o| (*o).clone())
            .collect()
    }

    /// The served kind of a manifest (`apiVersion` and `kind`).
    fn served_kind_of(&self, o: &Value) -> Result<&'static Kind, ApiError> {
        kinds::by_kind(
            obj::str_at(o, "/apiVersion").unwrap_or(""),
            obj::str_at(o, "/kind").unwrap_or(""),
        )
        .filter(|k| self.serves(k))
        .ok_or_else(|| ApiError::bad_request("unserved kind"))
    }

    /// Creates an object directly (no request logged), with the API's defaulting and validation.
    pub fn create_json(&self, o: Value) -> Result<Value, ApiError> {
        let kind = self.served_kind_of(&o)?;
        let ns = if kind.namespaced {
            match obj::namespace(&o) {
                "" => "default".to_string(),
                ns => ns.to_string(),
            }
        } else {
            String::new()
        };
        registry::create(&self.store, kind, &ns, o, false).map(|o| (*o).clone())
    }

    /// Deletes an object directly (no request logged), by resource (`deployments`), with the
    /// API's default propagation. Returns whether it existed.
    pub fn delete_json(&self, resource: &str, ns: &str, name: &str) -> bool {
        let Some(kind) = kinds::by_resource(resource) else {
            return false;
        };
        let ns = if kind.namespaced { ns } else { "" };
        registry::delete(
            &self.store,
            kind,
            ns,
            name,
            &registry::DeleteOptions::default(),
        )
        .is_ok()
    }

    /// Replaces an object directly (no request logged), as a `PUT` by another client would:
    /// its `metadata.resourceVersion`, when set, must be the stored one.
    pub fn replace_json(&self, o: Value) -> Result<Value, ApiError> {
        let kind = self.served_kind_of(&o)?;
        let ns = if kind.namespaced {
            obj::namespace(&o).to_string()
        } else {
            String::new()
        };
        let name = obj::name(&o).to_string();
        registry::update(&self.store, kind, &ns, &name, o, registry::Sub::Main, false)
            .map(|o| (*o).clone())
    }

    /// Polls `ready` (every 50 ms) until it holds or `timeout` passes.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&SimCluster) -> bool,
    ) -> Result<(), ()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Blocks until `ready` holds; panics after `timeout` naming `what` and describing the
    /// cluster. For sync tests (in async tests use [`SimCluster::wait_until_async`]).
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl FnMut(&SimCluster) -> bool,
    ) {
        if self.wait_for(timeout, ready).is_err() {
            panic!(
                "timed out after {timeout:?} waiting until {what}\n{}",
                self.describe_all()
            );
        }
    }

    /// Like [`SimCluster::wait_until`], sleeping on the caller's tokio runtime.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut(&SimCluster) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !ready(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting until {what}\n{}",
                    self.describe_all()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn describe_all(&self) -> String {
        self.store
            .list(&kinds::NAMESPACE, None)
            .iter()
            .map(|n| self.describe(obj::name(n)))
            .collect::<Vec<_>>()
            .join("")
    }

    /// Whether pod `name` in `ns` exists and is Ready.
    pub fn pod_ready(&self, ns: &str, name: &str) -> bool {
        self.store
            .get(&kinds::POD, ns, name)
            .is_some_and(|p| !obj::is_deleting(&p) && controllers::pod_ready(&p))
    }

    /// Names of the pods in `ns` matching a label selector (`app=postgres`), not being deleted.
    pub fn pod_names(&self, ns: &str, selector: &str) -> Vec<String> {
        let sel = select::LabelSelector::parse(selector).expect("a valid label selector");
        self.store
            .list(&kinds::POD, Some(ns))
            .iter()
            .filter(|p| sel.matches_object(p) && !obj::is_deleting(p))
            .map(|p| obj::name(p).to_string())
            .collect()
    }

    /// A pod's log (its first container's, as `kubectl logs` shows it), empty when it has none.
    pub fn pod_log(&self, ns: &str, pod: &str) -> String {
        self.store
            .get(&kinds::POD, ns, pod)
            .and_then(|p| self.kubelet.logs(&p, None).ok())
            .unwrap_or_default()
    }

    /// Makes `name` resolve to `addr` inside every pod, as a name outside the cluster (an RDS
    /// endpoint) resolves there; the machine running the tests still cannot resolve it.
    pub fn add_pod_host(&self, name: &str, addr: std::net::Ipv4Addr) {
        self.kubelet.add_host(name, addr);
    }

    /// An address of this cluster's block outside every pod network: where a test puts a
    /// server only pods reach (see [`SimCluster::add_pod_host`]).
    pub fn outside_address(&self) -> std::net::Ipv4Addr {
        self.kubelet.outside_address()
    }

    /// The PostgreSQL server of a pod: port, socket directory, superuser, data directory.
    pub fn pod_postgres(&self, ns: &str, pod: &str) -> Option<PgEndpoint> {
        self.kubelet.pg_endpoint(ns, pod)
    }

    /// Runs SQL with real psql against a pod's server, as its superuser over the local socket.
    pub fn try_psql(&self, ns: &str, pod: &str, db: &str, sql: &str) -> Result<String, PsqlError> {
        let ep = self.pod_postgres(ns, pod).ok_or_else(|| PsqlError {
            code: None,
            stderr: format!("pod {ns}/{pod} runs no PostgreSQL server"),
        })?;
        pg::run_psql(&ep.socket_dir, ep.port, &ep.superuser, db, sql)
    }

    /// [`SimCluster::try_psql`], panicking with psql's error.
    pub fn psql(&self, ns: &str, pod: &str, db: &str, sql: &str) -> String {
        self.try_psql(ns, pod, db, sql)
            .unwrap_or_else(|e| panic!("psql in {ns}/{pod} on {db}: {e}\nSQL: {sql}"))
    }

    /// Rows of a query against a pod's server.
    pub fn query(&self, ns: &str, pod: &str, db: &str, sql: &str) -> Vec<Vec<String>> {
        pg::rows(&self.psql(ns, pod, db, sql))
    }

    /// Where a PV's data lives on the host.
    pub fn pv_dir(&self, pv: &str) -> Option<PathBuf> {
        let pv = self.store.get(&kinds::PV, "", pv)?;
        Some(kubelet::pv_host_dir(
            self.dir.path(),
            self.kubelet.nodes(),
            &pv,
            None,
        ))
    }

    /// Stops the cluster now (what drop does).
    pub fn stop(self) {}
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// kube links rustls with ring while the AWS SDK links aws-lc-rs, so rustls cannot choose a
/// process-wide provider by itself; a kube client needs one even for plain-HTTP servers.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn kubeconfig_yaml(addr: SocketAddr, ca_pem: Option<&str>) -> String {
    use base64::Engine as _;
    let cluster = match ca_pem {
        Some(pem) => format!(
            "    server: https://{addr}\n    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => format!("    server: http://{addr}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: simcluster\n  cluster:\n{cluster}\
         users:\n- name: simcluster\n  user:\n    token: {TOKEN}\ncontexts:\n- name: simcluster\n  context:\n\
         \x20   cluster: simcluster\n    user: simcluster\n    namespace: default\ncurrent-context: simcluster\n"
    )
}

/// What the cluster serves and runs, beyond the defaults.
struct Served {
    absent_api_groups: Vec<String>,
    controllers: controllers::Options,
    exec: ExecProtocols,
    tls: Option<tls::Tls>,
}

fn serve(
    store: Store,
    log: Arc<RequestLog>,
    faults: Arc<FaultState>,
    kubelet: Arc<Kubelet>,
    served: Served,
    shutdown: CancellationToken,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
) {
    let Served {
        absent_api_groups,
        controllers,
        exec,
        tls,
    } = served;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("simcluster-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let state = Arc::new(api::ApiState {
            store: store.clone(),
            log,
            faults: faults.clone(),
            kubelet: kubelet.clone(),
            token: TOKEN.into(),
            server_addr: addr.to_string(),
            exec,
            absent_api_groups,
        });
        let ctl = Arc::new(controllers::Controllers::new(
            store,
            kubelet.clone(),
            faults,
            controllers,
        ));
        let ctl_task = tokio::spawn(ctl.run(shutdown.clone()));
        let router = api::router(state);
        let server: std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
        > = match &tls {
            Some(tls) => match tls.listen(listener) {
                Ok(l) => Box::pin(std::future::IntoFuture::into_future(axum::serve(l, router))),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            },
            None => Box::pin(std::future::IntoFuture::into_future(axum::serve(
                listener, router,
            ))),
        };
        let _ = ready.send(Ok(addr));
        tokio::select! {
            _ = server => {}
            _ = shutdown.cancelled() => {}
        }
        let _ = ctl_task.await;
        kubelet.shutdown().await;
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// Fault injection on a [`SimCluster`].
pub struct Faults<'a> {
    cluster: &'a SimCluster,
}

impl Faults<'_> {
    /// Fails the `n`th request (1-based, counted from now) with this verb and resource
    /// (`"patch"`, `"statefulsets"`; `"*"` matches any) with `code` and a matching reason.
    pub fn fail_nth(&self, verb: &str, resource: &str, n: u32, code: u16) -> FaultId {
        self.fail_nth_with(verb, resource, n, 1, code, "injected fault")
    }

    /// Fails `times` matching requests from the `n`th on, with `code` and `message`.
    pub fn fail_nth_with(
        &self,
        verb: &str,
        resource: &str,
        n: u32,
        times: u32,
        code: u16,
        message: &str,
    ) -> FaultId {
        let e = ApiError::new(code, ApiError::reason_for(code), message);
        self.cluster.faults.fail(verb, resource, n, times, e)
    }

    /// Fails `times` matching requests from the `n`th on with exactly this error (any code,
    /// reason, message and details).
    pub fn fail_with(
        &self,
        verb: &str,
        resource: &str,
        n: u32,
        times: u32,
        error: ApiError,
    ) -> FaultId {
        self.cluster.faults.fail(verb, resource, n, times, error)
    }

    /// How many times a fault fired.
    pub fn fired(&self, id: FaultId) -> u32 {
        self.cluster.faults.fired(id)
    }

    /// Adds latency to matching requests (`None` matches any verb/resource).
    pub fn add_latency(&self, verb: Option<&str>, resource: Option<&str>, delay: Duration) {
        self.cluster.faults.add_latency(verb, resource, delay)
    }

    /// Matching requests are read and never answered, as by a server that accepts connections
    /// and hangs (`"*"` matches any verb or resource; `hang("*", "*")` hangs discovery too).
    pub fn hang(&self, verb: &str, resource: &str) {
        self.cluster.faults.hang(verb, resource)
    }

    /// Removes request faults, hangs and latency.
    pub fn clear(&self) {
        self.cluster.faults.clear_requests()
    }

    /// Keeps a PVC unbound (even if a PV matches or could be provisioned).
    pub fn keep_pvc_unbound(&self, ns: &str, name: &str) {
        self.cluster.faults.hold_pvc(ns, name, true)
    }

    /// Lets a held PVC bind again.
    pub fn release_pvc(&self, ns: &str, name: &str) {
        self.cluster.faults.hold_pvc(ns, name, false)
    }

    /// Deletes a pod behind the API's back (like an eviction or a node drain), gracefully.
    pub fn delete_pod(&self, ns: &str, name: &str) -> bool {
        registry::delete(
            &self.cluster.store,
            &kinds::POD,
            ns,
            name,
            &registry::DeleteOptions::default(),
        )
        .is_ok()
    }

    /// Makes `image` unpullable: containers with it stay Pending in `ErrImagePull`, then
    /// `ImagePullBackOff`, as when a tag does not exist in the registry.
    pub fn unpullable_image(&self, image: &str) {
        self.cluster.faults.set_unpullable(image, true)
    }

    /// Makes a pod's readiness probe fail with `output` (the probe's message): the pod stays
    /// Running with its PostgreSQL container not ready, and an `Unhealthy` Event says
    /// `Readiness probe failed: {output}`.
    pub fn fail_readiness(&self, ns: &str, pod: &str, output: &str) {
        self.cluster.faults.set_readiness(ns, pod, Some(output))
    }

    /// Lets a pod's readiness probe pass again.
    pub fn pass_readiness(&self, ns: &str, pod: &str) {
        self.cluster.faults.set_readiness(ns, pod, None)
    }

    /// Kills a pod's PostgreSQL hard; the kubelet restarts it on the same volume. Returns
    /// whether a server was running.
    pub fn crash_pod(&self, ns: &str, name: &str) -> bool {
        self.cluster.kubelet.crash(ns, name)
    }

    /// Freezes a pod's PostgreSQL (SIGSTOP to the server and its sessions): it accepts
    /// connections and answers nothing, as behind a network partition. Returns whether a
    /// server was running and stopped.
    pub fn freeze_pod(&self, ns: &str, name: &str) -> bool {
        self.cluster.kubelet.freeze(ns, name, true)
    }

    /// Lets a frozen pod's PostgreSQL run again (SIGCONT).
    pub fn thaw_pod(&self, ns: &str, name: &str) -> bool {
        self.cluster.kubelet.freeze(ns, name, false)
    }
}
