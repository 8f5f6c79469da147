//! The kubelet (and the little scheduling there is): binds pending pods to a node — the node a
//! bound PV's nodeAffinity names, else the pod's `kubernetes.io/hostname` nodeSelector, else the
//! first node — runs their containers and reports pod status.
//!
//! A container whose image is a PostgreSQL image runs a real local PostgreSQL server, initialised
//! the way the image would (official `postgres` image: POSTGRES_USER/PASSWORD/DB; Red Hat/sclorg
//! `postgresql-NN` images: POSTGRESQL_USER/PASSWORD/DATABASE/ADMIN_PASSWORD), with its data
//! directory on the volume mounted over the image's data path: the bound PV's directory for a
//! PVC, a directory that dies with the pod otherwise. Readiness follows `pg_isready`; a server
//! that exits is restarted on the same volume (a container restart). Every other container is a
//! no-op that is Ready at once (or, in a pod with restartPolicy Never/OnFailure, completes).
//!
//! Exec and port-forward targets (working directory, environment, local port) come from here.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::dns::{self, AddressBlock, ExtraHosts};
use super::error::ApiError;
use super::faults::FaultState;
use super::kinds;
use super::obj;
use super::registry;
use super::sandbox::Sandbox;
use super::store::Store;
use crate::support::pg::{self, PgServer};
use crate::support::proc;
use crate::support::scratch;

/// The flavour of PostgreSQL image, which decides how the data directory is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Docker's official `postgres` image.
    Official,
    /// Red Hat / sclorg `postgresql-NN` images (`registry.redhat.io/rhel9/postgresql-15`).
    Rhel,
}

impl Flavor {
    /// Whether `image` is a PostgreSQL image, and which kind.
    pub fn of_image(image: &str) -> Option<Flavor> {
        let lower = image.to_ascii_lowercase();
        let without_digest = lower.split('@').next().unwrap_or("");
        let last = without_digest.rsplit('/').next().unwrap_or("");
        let repo = last.split(':').next().unwrap_or("");
        // Exporters (prometheus postgres-exporter sidecars) talk to PostgreSQL, they are not it.
        if !repo.contains("postgres") || repo.contains("exporter") {
            return None;
        }
        if repo.contains("postgresql") {
            Some(Flavor::Rhel)
        } else {
            Some(Flavor::Official)
        }
    }

    fn default_pgdata(self) -> &'static str {
        match self {
            Flavor::Official => "/var/lib/postgresql/data",
            Flavor::Rhel => "/var/lib/pgsql/data/userdata",
        }
    }

    /// The OS user an exec runs as in the image (libpq's default user name).
    fn exec_user(self) -> &'static str {
        match self {
            Flavor::Official => "root",
            Flavor::Rhel => "postgres",
        }
    }
}

/// What containerd answers for an image reference that does not exist, with the reference
/// normalised as it does (`postgres:99` → `docker.io/library/postgres:99`).
fn pull_error(image: &str) -> String {
    let mut reference = image.to_string();
    let first = reference.split('/').next().unwrap_or("");
    if !reference.contains('/') {
        reference = format!("docker.io/library/{reference}");
    } else if !(first.contains('.') || first.contains(':') || first == "localhost") {
        reference = format!("docker.io/{reference}");
    }
    let last = reference.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !reference.contains('@') {
        reference.push_str(":latest");
    }
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": {reference}: not found"
    )
}

/// Whether a postgres-image container runs the server (no command, or the entrypoint, or only
/// postgres flags as args) rather than some other program.
fn runs_server(container: &Value) -> bool {
    let first = obj::array_at(container, "/command")
        .first()
        .or_else(|| obj::array_at(container, "/args").first())
        .and_then(Value::as_str);
    match first {
        None => true,
        Some(a) => {
            a.starts_with('-')
                || matches!(
                    a.rsplit('/').next().unwrap_or(a),
                    "postgres" | "docker-entrypoint.sh" | "run-postgresql" | "postmaster"
                )
        }
    }
}

/// What exec needs to run a command "in" a container.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// Cancelled when the pod stops: the exec'd process is killed with its container.
    pub stop: CancellationToken,
    /// The container's sandbox, for a container that runs its own command (the exec joins
    /// it, as root); `None` for a PostgreSQL container, whose exec runs on the machine as the
    /// unprivileged user, in the pod's directory.
    pub sandbox: Option<Arc<Sandbox>>,
}

/// A running container's PostgreSQL server, as seen from outside.
#[derive(Debug, Clone)]
pub struct PgEndpoint {
    pub port: u16,
    pub socket_dir: PathBuf,
    /// The superuser that trust authentication on the socket lets in.
    pub superuser: String,
    /// The server's data directory on the host.
    pub data_dir: PathBuf,
    pub flavor: Flavor,
    /// The pod's address, where the server listens on its container port.
    pub addr: Ipv4Addr,
}

#[derive(Debug, Clone)]
struct ContainerInfo {
    env: Vec<(String, String)>,
    pg: Option<PgEndpoint>,
    /// The port the server listens on inside the "container" (5432 unless configured).
    container_port: u16,
    started: bool,
}

/// One pod's running containers.
struct PodRuntime {
    uid: String,
    ns: String,
    name: String,
    /// `spec.hostname`, else the pod's name.
    hostname: String,
    /// The pod's own loopback address (see [`dns`]).
    ip: Ipv4Addr,
    dir: PathBuf,
    restart: Restart,
    stop: CancellationToken,
    containers: Mutex<HashMap<String, ContainerInfo>>,
    server: Mutex<Option<PgServer>>,
    shown: Mutex<Shown>,
    done: tokio::sync::watch::Sender<bool>,
}

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

/// What a pod's status shows of its containers.
#[derive(Debug, Clone, Default)]
struct Shown {
    init: Vec<CState>,
    main: Vec<CState>,
}

impl Shown {
    /// The pod's phase: Pending until every init container succeeded (Failed when one failed
    /// and nothing reruns it); with restart policy Never or OnFailure, Succeeded or Failed once
    /// every container has terminated; Running otherwise.
    fn phase(&self, restart: Restart) -> &'static str {
        if restart == Restart::Never
            && self
                .init
                .iter()
                .any(|s| s.exit_code().is_some_and(|c| c != 0))
        {
            return "Failed";
        }
        if !self.init.iter().all(|s| s.exit_code() == Some(0)) {
            return "Pending";
        }
        if restart != Restart::Always
            && !self.main.is_empty()
            && self.main.iter().all(|s| s.exit_code().is_some())
        {
            return if self.main.iter().all(|s| s.exit_code() == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        "Running"
    }
}

/// How a container's process ended.
#[derive(Debug, Clone)]
struct Ended {
    code: i32,
    reason: &'static str,
    message: Option<String>,
}

impl Ended {
    fn terminated(&self, started: &str) -> Value {
        let mut t = json!({"exitCode": self.code, "reason": self.reason,
            "startedAt": started, "finishedAt": obj::now()});
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        json!({ "terminated": t })
    }
}

/// The command line a container runs: `command` then `args`; `args` alone when the image's
/// entrypoint runs its arguments (the PostgreSQL images' do; images without an entrypoint
/// run them as the command). None when neither is set: the image's own entrypoint, which the
/// simulated kubelet does not know.
fn command_of(c: &Value) -> Option<Vec<String>> {
    let words = |p: &str| -> Vec<String> {
        obj::array_at(c, p)
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let mut argv = words("/command");
    argv.extend(words("/args"));
    (!argv.is_empty()).then_some(argv)
}

/// The kubelet's crash-loop back-off, shortened.
fn backoff(restarts: i64) -> Duration {
    Duration::from_millis((200u64 << restarts.clamp(0, 4)).min(3000))
}

impl PodRuntime {
    fn fs_dir(&self) -> PathBuf {
        self.dir.join("fs")
    }

    fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    fn append_log(&self, container: &str, text: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(container))
        {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// The kubelet of every simulated node.
pub struct Kubelet {
    store: Store,
    root: PathBuf,
    nodes: Vec<String>,
    faults: Arc<FaultState>,
    runtimes: Mutex<HashMap<String, Arc<PodRuntime>>>,
    counter: AtomicU32,
    addresses: AddressBlock,
    extra_hosts: ExtraHosts,
}

/// Where a PV's data lives on the host. hostPath/local volumes map to
/// `{root}/nodes/{node}/{path}` — the node from the PV's nodeAffinity, else `node_hint` (the node
/// the pod runs on), else the first node — so two PVs naming the same path on the same node share
/// data, as on a real node. Every other source gets `{root}/volumes/{pv name}`.
pub fn pv_host_dir(root: &Path, nodes: &[String], pv: &Value, node_hint: Option<&str>) -> PathBuf {
    let path =
        obj::str_at(pv, "/spec/hostPath/path").or_else(|| obj::str_at(pv, "/spec/local/path"));
    match path {
        Some(p) => {
            let node = pv_node(pv)
                .or_else(|| node_hint.map(str::to_string))
                .or_else(|| nodes.first().cloned())
                .unwrap_or_else(|| "node1".into());
            root.join("nodes").join(node).join(safe_relative(p))
        }
        None => root.join("volumes").join(safe_relative(obj::name(pv))),
    }
}

/// A path made relative and stripped of `.`/`..`, so it cannot leave the directory it is joined to.
pub fn safe_relative(p: &str) -> PathBuf {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect()
}

/// The node a PV's `kubernetes.io/hostname` nodeAffinity requires, if any.
pub fn pv_node(pv: &Value) -> Option<String> {
    for term in obj::array_at(pv, "/spec/nodeAffinity/required/nodeSelectorTerms") {
        for e in obj::array_at(term, "/matchExpressions") {
            if obj::str_at(e, "/key") == Some("kubernetes.io/hostname")
                && obj::str_at(e, "/operator") == Some("In")
            {
                if let Some(v) = obj::array_at(e, "/values").first().and_then(Value::as_str) {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

fn decode_b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Resolves a container's environment (env and envFrom, Secrets and ConfigMaps from the store).
pub fn resolve_env(
    store: &Store,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let ns = obj::namespace(pod);
    let mut out: Vec<(String, String)> = Vec::new();
    let push = |out: &mut Vec<(String, String)>, k: String, v: String| {
        out.retain(|(x, _)| *x != k);
        out.push((k, v));
    };
    for src in obj::array_at(container, "/envFrom") {
        let prefix = obj::str_at(src, "/prefix").unwrap_or("");
        let (kind, r) = if let Some(r) = src.get("secretRef") {
            (&kinds::SECRET, r)
        } else if let Some(r) = src.get("configMapRef") {
            (&kinds::CONFIG_MAP, r)
        } else {
            continue;
        };
        let name = obj::str_at(r, "/name").unwrap_or("");
        let optional = r.get("optional") == Some(&json!(true));
        match store.get(kind, ns, name) {
            Some(o) => {
                let is_secret = kind.kind == "Secret";
                if let Some(Value::Object(data)) = o.get("data") {
                    for (k, v) in data {
                        let v = v.as_str().unwrap_or("");
                        let v = if is_secret {
                            decode_b64(v)
                        } else {
                            v.to_string()
                        };
                        push(&mut out, format!("{prefix}{k}"), v);
                    }
                }
            }
            None if optional => {}
            None => return Err(format!("{} \"{name}\" not found", kind.singular)),
        }
    }
    for e in obj::array_at(container, "/env") {
        let name = obj::str_at(e, "/name").unwrap_or("").to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &out)
        } else if let Some(from) = e.get("valueFrom") {
            let key_ref = |field: &str| from.get(field);
            if let Some(r) = key_ref("secretKeyRef").or_else(|| key_ref("configMapKeyRef")) {
                let is_secret = from.get("secretKeyRef").is_some();
                let kind = if is_secret {
                    &kinds::SECRET
                } else {
                    &kinds::CONFIG_MAP
                };
                let rname = obj::str_at(r, "/name").unwrap_or("");
                let key = obj::str_at(r, "/key").unwrap_or("");
                let optional = r.get("optional") == Some(&json!(true));
                match store.get(kind, ns, rname) {
                    Some(o) => match o
                        .pointer(&format!(
                            "/data/{}",
                            key.replace('~', "~0").replace('/', "~1")
                        ))
                        .and_then(Value::as_str)
                    {
                        Some(v) if is_secret => decode_b64(v),
                        Some(v) => v.to_string(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in {} {ns}/{rname}",
                                kind.kind
                            ))
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("{} \"{rname}\" not found", kind.singular)),
                }
            } else if let Some(f) = from.get("fieldRef") {
                match obj::str_at(f, "/fieldPath").unwrap_or("") {
                    "metadata.name" => obj::name(pod).to_string(),
                    "metadata.namespace" => ns.to_string(),
                    "metadata.uid" => obj::uid(pod).to_string(),
                    "spec.nodeName" => obj::str_at(pod, "/spec/nodeName").unwrap_or("").into(),
                    "status.podIP" => obj::str_at(pod, "/status/podIP").unwrap_or("").into(),
                    "spec.serviceAccountName" => "default".into(),
                    _ => String::new(),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        push(&mut out, name, value);
    }
    Ok(out)
}

/// `$(VAR)` expansion against earlier variables, as the kubelet does.
fn expand(v: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                match env.iter().find(|(k, _)| k == name) {
                    Some((_, val)) => out.push_str(val),
                    None => out.push_str(&rest[i..i + 3 + j]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn env_get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Per-container status, as the pod reports it.
#[derive(Debug, Clone)]
struct CState {
    name: String,
    image: String,
    ready: bool,
    restarts: i64,
    state: Value,
    last_state: Value,
}

impl CState {
    fn running(c: &Value, ready: bool, restarts: i64, last_state: Value) -> CState {
        CState {
            name: obj::str_at(c, "/name").unwrap_or("").into(),
            image: obj::str_at(c, "/image").unwrap_or("").into(),
            ready,
            restarts,
            state: json!({"running": {"startedAt": obj::now()}}),
            last_state,
        }
    }

    /// Waiting to run again after `last_state` (the kubelet's crash-loop back-off).
    fn backing_off(&self, restarts: i64, last_state: Value) -> CState {
        CState {
            ready: false,
            restarts,
            state: json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off restarting failed container {}", self.name)}}),
            last_state,
            ..self.clone()
        }
    }

    /// The exit code, once terminated.
    fn exit_code(&self) -> Option<i64> {
        self.state
            .pointer("/terminated/exitCode")
            .and_then(Value::as_i64)
    }

    fn waiting(c: &Value, reason: &str, message: Option<&str>) -> CState {
        let mut w = json!({"reason": reason});
        if let Some(m) = message {
            w["message"] = json!(m);
        }
        CState {
            name: obj::str_at(c, "/name").unwrap_or("").into(),
            image: obj::str_at(c, "/image").unwrap_or("").into(),
            ready: false,
            restarts: 0,
            state: json!({"waiting": w}),
            last_state: json!({}),
        }
    }

    fn to_json(&self) -> Value {
        let running = self.state.get("running").is_some();
        json!({
            "name": self.name, "image": self.image,
            "imageID": format!("{}@sha256:{}", self.image.split(':').next().unwrap_or(""),
                               obj::stable_hash(&json!(self.image), 64)),
            "containerID": format!("containerd://{}", obj::stable_hash(&json!([&self.name, self.restarts]), 64)),
            "ready": self.ready, "started": running, "restartCount": self.restarts,
            "state": self.state, "lastState": self.last_state,
        })
    }
}

impl Kubelet {
    pub fn new(
        store: Store,
        root: PathBuf,
        nodes: Vec<String>,
        faults: Arc<FaultState>,
    ) -> Result<Kubelet, String> {
        Ok(Kubelet {
            store,
            root,
            nodes,
            faults,
            runtimes: Mutex::new(HashMap::new()),
            counter: AtomicU32::new(0),
            addresses: AddressBlock::claim()
                .map_err(|e| format!("claiming the cluster's pod addresses: {e}"))?,
            extra_hosts: ExtraHosts::default(),
        })
    }

    /// The cluster's pod addresses.
    pub fn addresses(&self) -> &AddressBlock {
        &self.addresses
    }

    /// Makes `name` resolve to `addr` inside every pod (what lives outside the cluster).
    pub fn add_host(&self, name: &str, addr: Ipv4Addr) {
        self.extra_hosts.add(name, addr);
    }

    pub fn outside_address(&self) -> Ipv4Addr {
        self.addresses.outside_address()
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn faults(&self) -> &FaultState {
        &self.faults
    }

    fn runtime(&self, uid: &str) -> Option<Arc<PodRuntime>> {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// One pass over all pods: schedule, start, stop, finish deletions.
    pub fn reconcile(self: &Arc<Self>) {
        let pods = self.store.list(&kinds::POD, None);
        let live: std::collections::HashSet<String> =
            pods.iter().map(|p| obj::uid(p).to_string()).collect();
        for pod in &pods {
            let uid = obj::uid(pod).to_string();
            let rt = self.runtime(&uid);
            let terminal = matches!(
                obj::str_at(pod, "/status/phase"),
                Some("Succeeded" | "Failed")
            );
            if obj::is_deleting(pod) {
                match rt {
                    Some(rt) => rt.stop.cancel(),
                    None => {
                        self.store
                            .remove(&kinds::POD, obj::namespace(pod), obj::name(pod), &uid);
                    }
                }
                continue;
            }
            if terminal {
                continue;
            }
            if obj::str_at(pod, "/spec/nodeName").unwrap_or("").is_empty() {
                self.schedule(pod);
                continue;
            }
            if rt.is_none() {
                self.start(pod);
            }
        }
        let gone: Vec<Arc<PodRuntime>> = self
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|rt| !live.contains(&rt.uid))
            .cloned()
            .collect();
        for rt in gone {
            rt.stop.cancel();
        }
        let running: Vec<Arc<PodRuntime>> = self
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        self.write_hosts(&running);
    }

    /// Rewrites the hosts files of `pods` (those whose `etc` exists) from the store.
    fn write_hosts(&self, pods: &[Arc<PodRuntime>]) {
        let dirs: Vec<(PathBuf, String)> = pods
            .iter()
            .map(|rt| (rt.dir.join("etc"), rt.ip.to_string()))
            .collect();
        let views: Vec<dns::PodNetwork<'_>> = pods
            .iter()
            .zip(&dirs)
            .filter(|(_, (d, _))| d.is_dir())
            .map(|(rt, (d, ip))| dns::PodNetwork {
                dir: d,
                namespace: &rt.ns,
                hostname: &rt.hostname,
                addr: ip,
            })
            .collect();
        dns::write_hosts(&self.store, &self.extra_hosts, &views);
    }

    fn unschedulable(&self, pod: &Value, message: &str) {
        let uid = obj::uid(pod).to_string();
        let now = obj::now();
        registry::modify(
            &self.store,
            &kinds::POD,
            obj::namespace(pod),
            obj::name(pod),
            |p| {
                if obj::uid(p) != uid {
                    return;
                }
                let cond = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                              "message": message, "lastProbeTime": null,
                              "lastTransitionTime": now});
                let same = obj::array_at(p, "/status/conditions").iter().any(|c| {
                    c.get("type") == cond.get("type") && c.get("message") == cond.get("message")
                });
                if !same {
                    obj::set(p, &["status", "conditions"], json!([cond]));
                }
            },
        );
        registry::record_event(
            &self.store,
            &kinds::POD,
            pod,
            "Warning",
            "FailedScheduling",
            message,
        );
    }

    fn schedule(&self, pod: &Value) {
        let ns = obj::namespace(pod);
        let total = self.nodes.len();
        let mut node: Option<String> =
            obj::str_at(pod, "/spec/nodeSelector/kubernetes.io~1hostname").map(str::to_string);
        for v in obj::array_at(pod, "/spec/volumes") {
            let Some(claim) = obj::str_at(v, "/persistentVolumeClaim/claimName") else {
                continue;
            };
            let Some(pvc) = self.store.get(&kinds::PVC, ns, claim) else {
                return self.unschedulable(
                    pod,
                    &format!("0/{total} nodes are available: persistentvolumeclaim \"{claim}\" not found."),
                );
            };
            if obj::is_deleting(&pvc) {
                return self.unschedulable(
                    pod,
                    &format!("0/{total} nodes are available: persistentvolumeclaim \"{claim}\" is being deleted."),
                );
            }
            if obj::str_at(&pvc, "/status/phase") != Some("Bound") {
                return self.unschedulable(
                    pod,
                    &format!("0/{total} nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."),
                );
            }
            let pv_name = obj::str_at(&pvc, "/spec/volumeName").unwrap_or("");
            if let Some(want) = self
                .store
                .get(&kinds::PV, "", pv_name)
                .and_then(|pv| pv_node(&pv))
            {
                if node.as_ref().is_some_and(|n| *n != want) {
                    return self.unschedulable(
                        pod,
                        &format!("0/{total} nodes are available: {total} node(s) had volume node affinity conflict."),
                    );
                }
                node = Some(want);
            }
        }
        let node = node.unwrap_or_else(|| self.nodes.first().cloned().unwrap_or_default());
        if !self.nodes.contains(&node) {
            return self.unschedulable(
                pod,
                &format!("0/{total} nodes are available: {total} node(s) didn't match Pod's node affinity/selector, or had volume node affinity conflict."),
            );
        }
        let uid = obj::uid(pod).to_string();
        let now = obj::now();
        let scheduled = registry::modify(&self.store, &kinds::POD, ns, obj::name(pod), |p| {
            if obj::uid(p) != uid || obj::is_deleting(p) {
                return;
            }
            obj::set(p, &["spec", "nodeName"], json!(node));
            obj::set(
                p,
                &["status", "conditions"],
                json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                        "lastTransitionTime": now}]),
            );
        });
        if scheduled.is_some() {
            registry::record_event(
                &self.store,
                &kinds::POD,
                pod,
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {ns}/{} to {node}", obj::name(pod)),
            );
        }
    }

    fn start(self: &Arc<Self>, pod: &Value) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("pods")
            .join(format!("{n}-{}", obj::name(pod)));
        let node = obj::str_at(pod, "/spec/nodeName").unwrap_or("");
        let node_index = self.nodes.iter().position(|x| x == node).unwrap_or(0);
        let (done, _) = tokio::sync::watch::channel(false);
        let restart = match obj::str_at(pod, "/spec/restartPolicy").unwrap_or("Always") {
            "Never" => Restart::Never,
            "OnFailure" => Restart::OnFailure,
            _ => Restart::Always,
        };
        let rt = Arc::new(PodRuntime {
            uid: obj::uid(pod).to_string(),
            ns: obj::namespace(pod).to_string(),
            name: obj::name(pod).to_string(),
            hostname: obj::str_at(pod, "/spec/hostname")
                .unwrap_or(obj::name(pod))
                .to_string(),
            ip: self.addresses.pod_address(node_index, n),
            dir,
            restart,
            stop: CancellationToken::new(),
            containers: Mutex::new(HashMap::new()),
            server: Mutex::new(None),
            shown: Mutex::new(Shown::default()),
            done,
        });
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rt.uid.clone(), rt.clone());
        let kubelet = self.clone();
        tokio::spawn(async move {
            kubelet.clone().run_pod(rt.clone(), n).await;
            kubelet.finish_pod(rt).await;
        });
    }

    async fn finish_pod(self: Arc<Self>, rt: Arc<PodRuntime>) {
        let grace = self
            .store
            .get(&kinds::POD, &rt.ns, &rt.name)
            .filter(|p| obj::uid(p) == rt.uid)
            .and_then(|p| obj::i64_at(&p, "/metadata/deletionGracePeriodSeconds"))
            .unwrap_or(10)
            .clamp(1, 10) as u64;
        let rt2 = rt.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(mut server) = rt2.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
                server.stop(Duration::from_secs(grace));
            }
            let _ = std::fs::remove_dir_all(&rt2.dir);
        })
        .await;
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rt.uid);
        if let Some(p) = self.store.get(&kinds::POD, &rt.ns, &rt.name) {
            if obj::uid(&p) == rt.uid && obj::is_deleting(&p) {
                self.store.remove(&kinds::POD, &rt.ns, &rt.name, &rt.uid);
            }
        }
        rt.done.send_replace(true);
    }

    /// Changes what a pod shows and writes its status.
    fn show(&self, rt: &PodRuntime, change: impl FnOnce(&mut Shown)) {
        let shown = {
            let mut guard = rt.shown.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut guard);
            guard.clone()
        };
        self.write_status(rt, &shown);
    }

    /// Writes the pod's status from its containers' states: the phase follows from them and
    /// the restart policy (a pod stays Pending while its init containers have not all
    /// succeeded, or while a container has never started yet).
    fn write_status(&self, rt: &PodRuntime, shown: &Shown) {
        let phase = shown.phase(rt.restart);
        let states = &shown.main;
        let initialized = shown.init.iter().all(|s| s.exit_code() == Some(0));
        let never_started = states
            .iter()
            .any(|s| s.restarts == 0 && s.state.get("waiting").is_some());
        let phase = if phase == "Running" && never_started {
            "Pending"
        } else {
            phase
        };
        let uid = rt.uid.clone();
        let ip = rt.ip.to_string();
        let now = obj::now();
        let all_ready = !states.is_empty() && states.iter().all(|s| s.ready) && phase == "Running";
        registry::modify(&self.store, &kinds::POD, &rt.ns, &rt.name, |p| {
            if obj::uid(p) != uid {
                return;
            }
            let old_conditions = obj::array_at(p, "/status/conditions").to_vec();
            let cond = |t: &str, ok: bool| {
                let status = if ok { "True" } else { "False" };
                let since = old_conditions
                    .iter()
                    .find(|c| {
                        c.get("type") == Some(&json!(t)) && c.get("status") == Some(&json!(status))
                    })
                    .and_then(|c| c.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(now));
                let mut c = json!({"type": t, "status": status, "lastProbeTime": null,
                                   "lastTransitionTime": since});
                if !ok && (t == "Ready" || t == "ContainersReady") {
                    let names: Vec<&str> = states
                        .iter()
                        .filter(|s| !s.ready)
                        .map(|s| s.name.as_str())
                        .collect();
                    c["reason"] = json!(if phase == "Succeeded" {
                        "PodCompleted"
                    } else {
                        "ContainersNotReady"
                    });
                    c["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        names.join(" ")
                    ));
                }
                if !ok && t == "Initialized" {
                    let names: Vec<&str> = shown
                        .init
                        .iter()
                        .filter(|s| s.exit_code() != Some(0))
                        .map(|s| s.name.as_str())
                        .collect();
                    c["reason"] = json!("ContainersNotInitialized");
                    c["message"] = json!(format!(
                        "containers with incomplete status: [{}]",
                        names.join(" ")
                    ));
                }
                c
            };
            let node = obj::str_at(p, "/spec/nodeName").unwrap_or("").to_string();
            let host_ip = format!(
                "10.0.0.{}",
                10 + self.nodes.iter().position(|n| *n == node).unwrap_or(0) + 1
            );
            let start = p
                .pointer("/status/startTime")
                .cloned()
                .unwrap_or_else(|| json!(now));
            let mut status = json!({
                "phase": phase,
                "conditions": [
                    cond("PodReadyToStartContainers", true),
                    cond("Initialized", initialized),
                    cond("Ready", all_ready),
                    cond("ContainersReady", all_ready),
                    cond("PodScheduled", true),
                ],
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": start,
                "containerStatuses": states.iter().map(CState::to_json).collect::<Vec<_>>(),
                "qosClass": "BestEffort",
            });
            if !shown.init.is_empty() {
                status["initContainerStatuses"] =
                    json!(shown.init.iter().map(CState::to_json).collect::<Vec<_>>());
            }
            obj::set(p, &["status"], status);
        });
    }

    /// Waits `d`, or returns false when the pod stops first.
    async fn pause(rt: &PodRuntime, d: Duration) -> bool {
        tokio::select! {
            _ = rt.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Pulls every image (an image that cannot be pulled keeps the pod Pending: ErrImagePull,
    /// then back-off). Returns false when the pod stops first.
    async fn pull(&self, rt: &PodRuntime, pod: &Value, init: &[Value], main: &[Value]) -> bool {
        let mut attempts = 0u32;
        loop {
            let unpullable = |c: &&Value| {
                self.faults
                    .unpullable(obj::str_at(c, "/image").unwrap_or(""))
            };
            let bad: Vec<&Value> = init.iter().chain(main).filter(unpullable).collect();
            if bad.is_empty() {
                return true;
            }
            let state = |c: &Value| {
                let image = obj::str_at(c, "/image").unwrap_or("");
                if !self.faults.unpullable(image) {
                    CState::waiting(c, "ContainerCreating", None)
                } else if attempts == 0 {
                    CState::waiting(c, "ErrImagePull", Some(&pull_error(image)))
                } else {
                    CState::waiting(
                        c,
                        "ImagePullBackOff",
                        Some(&format!("Back-off pulling image \"{image}\"")),
                    )
                }
            };
            self.show(rt, |s| {
                s.init = init.iter().map(state).collect();
                s.main = main.iter().map(state).collect();
            });
            if attempts == 0 {
                for c in &bad {
                    let image = obj::str_at(c, "/image").unwrap_or("");
                    registry::record_event(
                        &self.store,
                        &kinds::POD,
                        pod,
                        "Warning",
                        "Failed",
                        &format!("Failed to pull image \"{image}\": {}", pull_error(image)),
                    );
                }
            }
            attempts += 1;
            if !Self::pause(rt, Duration::from_millis(300)).await {
                return false;
            }
        }
    }

    /// Every container's environment (a missing Secret keeps the pod Pending), init
    /// containers' first.
    async fn environments(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        init: &[Value],
        main: &[Value],
    ) -> Option<Vec<Vec<(String, String)>>> {
        loop {
            let pod = self
                .store
                .get(&kinds::POD, &rt.ns, &rt.name)
                .unwrap_or_else(|| std::sync::Arc::new(pod.clone()));
            let resolved: Result<Vec<_>, String> = init
                .iter()
                .chain(main)
                .map(|c| resolve_env(&self.store, &pod, c))
                .collect();
            match resolved {
                Ok(envs) => return Some(envs),
                Err(msg) => {
                    let state =
                        |c: &Value| CState::waiting(c, "CreateContainerConfigError", Some(&msg));
                    self.show(rt, |s| {
                        s.init = init.iter().map(state).collect();
                        s.main = main.iter().map(state).collect();
                    });
                    if !Self::pause(rt, Duration::from_millis(300)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Mounts every container's volumes (creates the host directories behind them).
    async fn mount_all(&self, rt: &PodRuntime, pod: &Value, all: &[Value]) -> bool {
        loop {
            let mounted: Result<(), String> = all.iter().try_for_each(|c| {
                obj::array_at(c, "/volumeMounts").iter().try_for_each(|m| {
                    let dir =
                        self.host_path(rt, pod, c, obj::str_at(m, "/mountPath").unwrap_or("/"))?;
                    if dir.exists() {
                        Ok(())
                    } else {
                        scratch::make_dir_for_postgres(&dir, 0o755).map_err(|e| e.to_string())
                    }
                })
            });
            match mounted {
                Ok(()) => return true,
                Err(msg) => {
                    let state = |c: &Value| CState::waiting(c, "ContainerCreating", Some(&msg));
                    self.show(rt, |s| {
                        s.main = all[s.init.len().min(all.len())..]
                            .iter()
                            .map(state)
                            .collect();
                    });
                    if !Self::pause(rt, Duration::from_millis(300)).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn run_pod(self: Arc<Self>, rt: Arc<PodRuntime>, n: u32) {
        let Some(pod) = self.store.get(&kinds::POD, &rt.ns, &rt.name) else {
            return;
        };
        for d in ["fs", "tmp", "logs", "volumes", "containers"] {
            if scratch::make_dir_for_postgres(&rt.dir.join(d), 0o755).is_err() {
                return;
            }
        }
        if dns::init_pod_etc(&rt.dir.join("etc"), &rt.ns, &rt.hostname).is_err() {
            return;
        }
        // The names are there before the first container starts, as the kubelet writes the
        // hosts file before it starts any.
        self.write_hosts(std::slice::from_ref(&rt));
        let init: Vec<Value> = obj::array_at(&pod, "/spec/initContainers").to_vec();
        let containers: Vec<Value> = obj::array_at(&pod, "/spec/containers").to_vec();
        let all: Vec<Value> = init.iter().chain(&containers).cloned().collect();
        self.show(&rt, |s| {
            s.init = init
                .iter()
                .map(|c| CState::waiting(c, "PodInitializing", None))
                .collect();
            s.main = containers
                .iter()
                .map(|c| {
                    let reason = if init.is_empty() {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    };
                    CState::waiting(c, reason, None)
                })
                .collect();
        });
        if !self.pull(&rt, &pod, &init, &containers).await {
            return;
        }
        let Some(mut envs) = self.environments(&rt, &pod, &init, &containers).await else {
            return;
        };
        let main_envs = envs.split_off(init.len());
        if !self.mount_all(&rt, &pod, &all).await {
            return;
        }
        let restart_always = rt.restart == Restart::Always;
        // Which container (if any) runs a PostgreSQL server.
        let server_idx = if restart_always {
            containers.iter().position(|c| {
                Flavor::of_image(obj::str_at(c, "/image").unwrap_or("")).is_some() && runs_server(c)
            })
        } else {
            None
        };
        {
            let mut infos = rt.containers.lock().unwrap_or_else(|p| p.into_inner());
            for (i, c) in containers.iter().enumerate() {
                let env = main_envs[i].clone();
                let port = env_get(&env, "PGPORT")
                    .or_else(|| env_get(&env, "POSTGRESQL_PORT_NUMBER"))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(5432);
                infos.insert(
                    obj::str_at(c, "/name").unwrap_or("").to_string(),
                    ContainerInfo {
                        env,
                        pg: None,
                        container_port: port,
                        started: server_idx != Some(i) && command_of(c).is_none(),
                    },
                );
            }
        }
        if !self.run_init_containers(&rt, &pod, &init, &envs).await {
            rt.stop.cancelled().await;
            return;
        }
        // The other containers: commands run (and rerun by the restart policy); a container
        // without one (the image's entrypoint, unknown here) idles, Ready.
        let mut tasks = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            if server_idx == Some(i) {
                continue;
            }
            if command_of(c).is_some() {
                let (k, rt2, pod2, c2, env) = (
                    self.clone(),
                    rt.clone(),
                    pod.clone(),
                    c.clone(),
                    main_envs[i].clone(),
                );
                tasks.push(tokio::spawn(async move {
                    k.run_command_container(&rt2, &pod2, i, &c2, &env).await
                }));
            } else if restart_always {
                self.show(&rt, |s| s.main[i] = CState::running(c, true, 0, json!({})));
            } else {
                let started = obj::now();
                self.show(&rt, |s| {
                    s.main[i] = CState {
                        state: json!({"terminated": {"exitCode": 0, "reason": "Completed",
                            "startedAt": started, "finishedAt": obj::now()}}),
                        ..CState::running(c, false, 0, json!({}))
                    }
                });
            }
        }
        if let Some(si) = server_idx {
            self.run_server(&rt, &pod, n, si, &containers[si], &main_envs[si])
                .await;
        } else {
            rt.stop.cancelled().await;
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Runs the init containers in order, each to success. A failure reruns it (with back-off)
    /// unless the pod's restart policy is Never, which fails the pod. Returns whether they all
    /// succeeded.
    async fn run_init_containers(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        init: &[Value],
        envs: &[Vec<(String, String)>],
    ) -> bool {
        for (i, c) in init.iter().enumerate() {
            let mut restarts = 0i64;
            loop {
                if command_of(c).is_none() {
                    let now = obj::now();
                    self.show(rt, |s| {
                        s.init[i] = CState {
                            state: json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                "startedAt": now, "finishedAt": now}}),
                            ..CState::running(c, false, 0, json!({}))
                        }
                    });
                    break;
                }
                let started = obj::now();
                self.show(rt, |s| {
                    s.init[i] = CState::running(c, false, restarts, s.init[i].last_state.clone())
                });
                let Some(ended) = self.run_process(rt, pod, c, &envs[i]).await else {
                    return false;
                };
                let terminated = ended.terminated(&started);
                if ended.code == 0 {
                    self.show(rt, |s| {
                        s.init[i].state = terminated;
                        s.init[i].ready = false;
                    });
                    break;
                }
                if rt.restart == Restart::Never {
                    self.show(rt, |s| {
                        s.init[i].state = terminated;
                        s.init[i].ready = false;
                    });
                    return false;
                }
                restarts += 1;
                self.show(rt, |s| {
                    s.init[i] = s.init[i].backing_off(restarts, terminated)
                });
                if !Self::pause(rt, backoff(restarts)).await {
                    return false;
                }
            }
        }
        true
    }

    /// Runs a container's command until the pod stops, rerunning it as the restart policy says.
    async fn run_command_container(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        i: usize,
        c: &Value,
        env: &[(String, String)],
    ) {
        let cname = obj::str_at(c, "/name").unwrap_or("").to_string();
        let mut restarts = 0i64;
        loop {
            let started = obj::now();
            self.show(rt, |s| {
                s.main[i] = CState::running(c, true, restarts, s.main[i].last_state.clone())
            });
            self.set_started(rt, &cname, true);
            let Some(ended) = self.run_process(rt, pod, c, env).await else {
                return;
            };
            self.set_started(rt, &cname, false);
            let terminated = ended.terminated(&started);
            let again = match rt.restart {
                Restart::Always => true,
                Restart::OnFailure => ended.code != 0,
                Restart::Never => false,
            };
            if !again {
                self.show(rt, |s| {
                    s.main[i].state = terminated;
                    s.main[i].ready = false;
                });
                rt.stop.cancelled().await;
                return;
            }
            restarts += 1;
            self.show(rt, |s| {
                s.main[i] = s.main[i].backing_off(restarts, terminated)
            });
            if !Self::pause(rt, backoff(restarts)).await {
                return;
            }
        }
    }

    fn set_started(&self, rt: &PodRuntime, cname: &str, started: bool) {
        if let Some(info) = rt
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(cname)
        {
            info.started = started;
        }
    }

    /// Runs a container's command once in its sandbox, its output appended to the container's
    /// log. None when the pod stopped first (the process is killed with its group).
    async fn run_process(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        c: &Value,
        env: &[(String, String)],
    ) -> Option<Ended> {
        let cname = obj::str_at(c, "/name").unwrap_or("").to_string();
        let argv = command_of(c).unwrap_or_default();
        let spawned = self.spawn_in_sandbox(rt, pod, c, &cname, &argv, env);
        let mut child = match spawned {
            Ok(child) => child,
            Err(message) => {
                rt.append_log(&cname, &message);
                return Some(Ended {
                    code: 128,
                    reason: "StartError",
                    message: Some(message),
                });
            }
        };
        loop {
            if let Some(status) = child.try_wait() {
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
                });
                return Some(Ended {
                    code,
                    reason: if code == 0 { "Completed" } else { "Error" },
                    message: None,
                });
            }
            if !Self::pause(rt, Duration::from_millis(50)).await {
                let _ = tokio::task::spawn_blocking(move || {
                    child.stop(libc::SIGTERM, Duration::from_secs(2));
                })
                .await;
                return None;
            }
        }
    }

    /// The sandbox a container's processes run in: its root, the pod's files, its volumes at
    /// their `mountPath`s. Its command and every exec into it share it.
    fn container_sandbox(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        c: &Value,
        cname: &str,
    ) -> Result<Sandbox, String> {
        let workdir = obj::str_at(c, "/workingDir").unwrap_or("/");
        let mut sandbox = Sandbox::new(
            &rt.dir
                .join("containers")
                .join(safe_relative(cname))
                .join("root"),
            &rt.dir,
            &rt.dir.join("tmp"),
            &rt.hostname,
            workdir,
        )
        .map_err(|e| format!("failed to create containerd task: preparing the root: {e}"))?;
        for m in obj::array_at(c, "/volumeMounts") {
            let mount_path = obj::str_at(m, "/mountPath").unwrap_or("/");
            let dir = self.host_path(rt, pod, c, mount_path)?;
            let read_only = m.get("readOnly") == Some(&json!(true));
            sandbox
                .mount(&dir, mount_path, read_only)
                .map_err(|e| format!("failed to create containerd task: {e}"))?;
        }
        Ok(sandbox)
    }

    /// The environment of a process in a container's sandbox: the image's defaults, then the
    /// container's own `env`.
    fn sandbox_env(rt: &PodRuntime, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut full: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                pg::child_path().to_string_lossy().into_owned(),
            ),
            ("HOSTNAME".into(), rt.hostname.clone()),
            ("HOME".into(), "/root".into()),
        ];
        if rt.dir.join("etc").join("netshim.so").exists() {
            // Connections leave from the pod's own address (see netshim.c).
            full.push(("LD_PRELOAD".into(), "/.pod/netshim.so".into()));
            full.push(("PGPLAN_SIM_POD_IP".into(), rt.ip.to_string()));
        }
        for (k, v) in env {
            full.retain(|(x, _)| x != k);
            full.push((k.clone(), v.clone()));
        }
        full
    }

    fn spawn_in_sandbox(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        c: &Value,
        cname: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<proc::ChildGuard, String> {
        let sandbox = self.container_sandbox(rt, pod, c, cname)?;
        let full = Self::sandbox_env(rt, env);
        let path = env_get(&full, "PATH").unwrap_or("").to_string();
        let program = argv.first().cloned().unwrap_or_default();
        let resolved = sandbox.resolve(&program, &path).ok_or_else(|| {
            format!(
                "failed to create containerd task: failed to create shim task: OCI runtime \
                 create failed: runc create failed: unable to start container process: exec: \
                 \"{program}\": executable file not found in $PATH: unknown"
            )
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(rt.log_path(cname))
            .map_err(|e| format!("opening the container's log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(&resolved);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(full.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        sandbox
            .apply(&mut cmd)
            .map_err(|e| format!("failed to create containerd task: {e}"))?;
        proc::ChildGuard::spawn(cmd, proc::SpawnOptions::AS_IS).map_err(|e| {
            format!(
                "failed to create containerd task: failed to create shim task: OCI runtime \
                 create failed: unable to start container process: {e}: unknown"
            )
        })
    }

    /// A PostgreSQL container: starts (and restarts) the server on the pod's address.
    async fn run_server(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        n: u32,
        si: usize,
        c: &Value,
        env: &[(String, String)],
    ) {
        let cname = obj::str_at(c, "/name").unwrap_or("").to_string();
        let image = obj::str_at(c, "/image").unwrap_or("");
        let flavor = Flavor::of_image(image).unwrap_or(Flavor::Official);
        let port = rt
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cname)
            .map(|i| i.container_port)
            .unwrap_or(5432);
        let socket_dir = self.root.join("s").join(n.to_string());
        let started_at = obj::now();
        let mut restarts = 0i64;
        let mut last_state = json!({});
        self.show(rt, |s| {
            s.main[si] = CState::waiting(c, "ContainerCreating", None)
        });
        loop {
            let data_dir = match self.data_dir_for(rt, pod, c, flavor, env) {
                Ok(d) => d,
                Err(msg) => {
                    rt.append_log(&cname, &msg);
                    self.show(rt, |s| {
                        s.main[si] = CState::waiting(c, "CreateContainerError", Some(&msg))
                    });
                    if !Self::pause(rt, Duration::from_millis(500)).await {
                        return;
                    }
                    continue;
                }
            };
            let launch = Launch {
                flavor,
                env: env.to_vec(),
                data_dir: data_dir.clone(),
                socket_dir: socket_dir.clone(),
                addr: rt.ip,
                port,
                log: rt.log_path(&cname),
            };
            let result = tokio::task::spawn_blocking(move || launch.run()).await;
            let result = match result {
                Ok(r) => r,
                Err(e) => Err(format!("launch task failed: {e}")),
            };
            match result {
                Ok((server, superuser)) => {
                    let endpoint = PgEndpoint {
                        port: server.port(),
                        socket_dir: socket_dir.clone(),
                        superuser,
                        data_dir: data_dir.clone(),
                        flavor,
                        addr: rt.ip,
                    };
                    *rt.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
                    if let Some(info) = rt
                        .containers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&cname)
                    {
                        info.pg = Some(endpoint);
                        info.started = true;
                    }
                    if rt.stop.is_cancelled() {
                        return;
                    }
                    self.show(rt, |s| {
                        s.main[si] = CState {
                            state: json!({"running": {"startedAt": obj::now()}}),
                            ..CState::running(c, true, restarts, last_state.clone())
                        }
                    });
                    let Some(exited) = self.watch_server(rt, si).await else {
                        return;
                    };
                    rt.server.lock().unwrap_or_else(|p| p.into_inner()).take();
                    self.set_started(rt, &cname, false);
                    let code = exited.code().unwrap_or(137);
                    last_state = json!({"terminated": {"exitCode": code, "reason": "Error",
                        "startedAt": started_at, "finishedAt": obj::now()}});
                    restarts += 1;
                    // Until it runs again the container shows how it ended.
                    self.show(rt, |s| {
                        s.main[si] = CState {
                            ready: false,
                            restarts,
                            state: last_state.clone(),
                            last_state: json!({}),
                            ..s.main[si].clone()
                        }
                    });
                }
                Err(msg) => {
                    rt.append_log(&cname, &msg);
                    restarts += 1;
                    last_state = json!({"terminated": {"exitCode": 1, "reason": "Error",
                        "message": msg, "startedAt": started_at, "finishedAt": obj::now()}});
                    self.show(rt, |s| {
                        s.main[si] = s.main[si].backing_off(restarts, last_state.clone())
                    });
                    if !Self::pause(rt, backoff(restarts)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Watches a running server until the pod stops (None) or the server dies; a failing
    /// readiness probe (fault injection) makes the container not ready.
    async fn watch_server(&self, rt: &PodRuntime, si: usize) -> Option<std::process::ExitStatus> {
        let mut probe_failing = false;
        loop {
            if !Self::pause(rt, Duration::from_millis(100)).await {
                return None;
            }
            let failure = self.faults.readiness_failure(&rt.ns, &rt.name);
            if failure.is_some() != probe_failing {
                probe_failing = failure.is_some();
                self.show(rt, |s| s.main[si].ready = !probe_failing);
                if let (Some(output), Some(p)) =
                    (failure, self.store.get(&kinds::POD, &rt.ns, &rt.name))
                {
                    registry::record_event(
                        &self.store,
                        &kinds::POD,
                        &p,
                        "Warning",
                        "Unhealthy",
                        &format!("Readiness probe failed: {output}"),
                    );
                }
            }
            let status = rt
                .server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|s| s.exited());
            if status.is_some() {
                return status;
            }
        }
    }

    /// The host directory that backs `path` in the container: a volume (PVC → its PV's
    /// directory; emptyDir and others → the pod's directory) or the pod's own filesystem.
    fn host_path(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        container: &Value,
        path: &str,
    ) -> Result<PathBuf, String> {
        let mut best: Option<(&Value, usize)> = None;
        for m in obj::array_at(container, "/volumeMounts") {
            let mp = obj::str_at(m, "/mountPath")
                .unwrap_or("")
                .trim_end_matches('/');
            let covers = path == mp
                || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'));
            if covers && best.is_none_or(|(_, l)| mp.len() > l) {
                best = Some((m, mp.len()));
            }
        }
        let Some((mount, len)) = best else {
            return Ok(rt.fs_dir().join(safe_relative(path)));
        };
        let vname = obj::str_at(mount, "/name").unwrap_or("");
        let rel = path[len..].trim_start_matches('/');
        let sub = obj::str_at(mount, "/subPath").unwrap_or("");
        let vol = obj::array_at(pod, "/spec/volumes")
            .iter()
            .find(|v| obj::str_at(v, "/name") == Some(vname))
            .ok_or_else(|| format!("volume {vname} not found"))?;
        let node = obj::str_at(pod, "/spec/nodeName");
        let base = if let Some(claim) = obj::str_at(vol, "/persistentVolumeClaim/claimName") {
            let pvc = self
                .store
                .get(&kinds::PVC, obj::namespace(pod), claim)
                .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
            let pv_name = obj::str_at(&pvc, "/spec/volumeName").unwrap_or("");
            let pv = self
                .store
                .get(&kinds::PV, "", pv_name)
                .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
            pv_host_dir(&self.root, &self.nodes, &pv, node)
        } else if let Some(p) = obj::str_at(vol, "/hostPath/path") {
            self.root
                .join("nodes")
                .join(node.unwrap_or("node1"))
                .join(safe_relative(p))
        } else if let Some(secret) = obj::str_at(vol, "/secret/secretName") {
            // A Secret volume: one file per key (or per listed item), as the
            // kubelet projects it; a missing Secret fails the mount.
            let dir = rt.dir.join("volumes").join(vname);
            self.project_secret(obj::namespace(pod), secret, vol, &dir)?;
            dir
        } else {
            rt.dir.join("volumes").join(vname)
        };
        if !base.exists() {
            scratch::make_dir_for_postgres(&base, 0o755).map_err(|e| e.to_string())?;
        }
        let mut out = base;
        for part in [safe_relative(sub), safe_relative(rel)] {
            if !part.as_os_str().is_empty() {
                out.push(part);
            }
        }
        Ok(out)
    }

    /// Writes Secret `name`'s keys into `dir` (the volume's `items` when listed).
    fn project_secret(&self, ns: &str, name: &str, vol: &Value, dir: &Path) -> Result<(), String> {
        let secret = self.store.get(&kinds::SECRET, ns, name).ok_or_else(|| {
            format!("MountVolume.SetUp failed for volume: secret \"{name}\" not found")
        })?;
        scratch::make_dir_for_postgres(dir, 0o755).map_err(|e| e.to_string())?;
        let data = secret["data"].as_object().cloned().unwrap_or_default();
        let items = obj::array_at(vol, "/secret/items");
        let files: Vec<(String, String)> = if items.is_empty() {
            data.keys().map(|k| (k.clone(), k.clone())).collect()
        } else {
            items
                .iter()
                .filter_map(|i| {
                    Some((
                        obj::str_at(i, "/key")?.to_string(),
                        obj::str_at(i, "/path")?.to_string(),
                    ))
                })
                .collect()
        };
        for (key, path) in files {
            let value = data
                .get(&key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("secret \"{name}\" has no key {key}"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|e| format!("secret \"{name}\" key {key}: {e}"))?;
            std::fs::write(dir.join(safe_relative(&path)), bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn data_dir_for(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        c: &Value,
        flavor: Flavor,
        env: &[(String, String)],
    ) -> Result<PathBuf, String> {
        let pgdata = env_get(env, "PGDATA").unwrap_or(flavor.default_pgdata());
        let dir = self.host_path(rt, pod, c, pgdata)?;
        if let Some(parent) = dir.parent() {
            if !parent.exists() {
                scratch::make_dir_for_postgres(parent, 0o755).map_err(|e| e.to_string())?;
            }
        }
        Ok(dir)
    }

    fn pod_runtime(&self, pod: &Value) -> Result<Arc<PodRuntime>, ApiError> {
        let phase = obj::str_at(pod, "/status/phase").unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        if obj::str_at(pod, "/spec/nodeName").unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                obj::name(pod)
            )));
        }
        self.runtime(obj::uid(pod)).ok_or_else(|| {
            ApiError::bad_request(format!("pod {} is not running on its node", obj::name(pod)))
        })
    }

    fn container_name(pod: &Value, container: Option<&str>) -> Result<String, ApiError> {
        let names: Vec<&str> = obj::array_at(pod, "/spec/containers")
            .iter()
            .filter_map(|c| obj::str_at(c, "/name"))
            .collect();
        let init: Vec<&str> = obj::array_at(pod, "/spec/initContainers")
            .iter()
            .filter_map(|c| obj::str_at(c, "/name"))
            .collect();
        let want = container
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .or_else(|| {
                obj::annotations(pod)
                    .get("kubectl.kubernetes.io/default-container")
                    .cloned()
            })
            .unwrap_or_else(|| names.first().map(|s| s.to_string()).unwrap_or_default());
        if names.contains(&want.as_str()) || init.contains(&want.as_str()) {
            Ok(want)
        } else {
            Err(ApiError::bad_request(format!(
                "container {want} is not valid for pod {}",
                obj::name(pod)
            )))
        }
    }

    /// Where and with what environment an exec in `container` of `pod` runs.
    pub fn exec_target(
        &self,
        pod: &Value,
        container: Option<&str>,
    ) -> Result<ExecTarget, ApiError> {
        let rt = self.pod_runtime(pod)?;
        let cname = Self::container_name(pod, container)?;
        let info = rt
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cname)
            .cloned()
            .filter(|i| i.started)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to upgrade connection: container not found (\"{cname}\")"
                ))
            })?;
        if info.pg.is_none() {
            // A container that runs its own command: an exec joins its sandbox (root, volumes,
            // hosts file), as root, as `kubectl exec` does in the image.
            let spec = obj::array_at(pod, "/spec/containers")
                .iter()
                .chain(obj::array_at(pod, "/spec/initContainers").iter())
                .find(|c| obj::str_at(c, "/name") == Some(cname.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            let sandbox = self
                .container_sandbox(&rt, pod, &spec, &cname)
                .map_err(ApiError::bad_request)?;
            return Ok(ExecTarget {
                cwd: PathBuf::from("/"),
                env: Self::sandbox_env(&rt, &info.env),
                stop: rt.stop.child_token(),
                sandbox: Some(Arc::new(sandbox)),
            });
        }
        let fs = rt.fs_dir();
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                pg::child_path().to_string_lossy().into_owned(),
            ),
            ("HOME".into(), fs.to_string_lossy().into_owned()),
            (
                "TMPDIR".into(),
                rt.dir.join("tmp").to_string_lossy().into_owned(),
            ),
            ("HOSTNAME".into(), rt.name.clone()),
            ("LC_ALL".into(), "C".into()),
        ];
        if let Some(pg) = &info.pg {
            env.push(("PGUSER".into(), pg.flavor.exec_user().into()));
        }
        for (k, v) in &info.env {
            env.retain(|(x, _)| x != k);
            env.push((k.clone(), v.clone()));
        }
        if let Some(pg) = &info.pg {
            env.retain(|(x, _)| x != "PGHOST" && x != "PGPORT" && x != "PGDATA");
            env.push((
                "PGHOST".into(),
                pg.socket_dir.to_string_lossy().into_owned(),
            ));
            env.push(("PGPORT".into(), pg.port.to_string()));
            env.push(("PGDATA".into(), pg.data_dir.to_string_lossy().into_owned()));
        }
        Ok(ExecTarget {
            cwd: fs,
            env,
            stop: rt.stop.child_token(),
            sandbox: None,
        })
    }

    /// The local port that reaches `port` of `pod` (its PostgreSQL server), or why not.
    pub fn port_target(&self, pod: &Value, port: u16) -> Result<SocketAddr, String> {
        let refused = format!(
            "error forwarding port {port} to pod {}, uid : failed to connect to localhost:{port} \
             inside namespace: connection refused",
            obj::uid(pod)
        );
        let rt = self.pod_runtime(pod).map_err(|e| e.message)?;
        let infos = rt.containers.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .values()
            .filter(|i| i.started && i.container_port == port)
            .find_map(|i| i.pg.as_ref().map(|pg| SocketAddr::from((pg.addr, pg.port))))
            .ok_or(refused)
    }

    /// A container's log (the server's output for PostgreSQL containers), kept after the
    /// container ends until the pod goes, as the kubelet keeps it.
    pub fn logs(&self, pod: &Value, container: Option<&str>) -> Result<String, ApiError> {
        if obj::str_at(pod, "/spec/nodeName").unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                obj::name(pod)
            )));
        }
        let rt = self.runtime(obj::uid(pod)).ok_or_else(|| {
            ApiError::bad_request(format!("pod {} is not running on its node", obj::name(pod)))
        })?;
        let cname = Self::container_name(pod, container)?;
        match std::fs::read_to_string(rt.log_path(&cname)) {
            Ok(text) => Ok(text),
            Err(_) => {
                let shown = rt.shown.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let waiting = shown
                    .init
                    .iter()
                    .chain(&shown.main)
                    .find(|s| s.name == cname)
                    .and_then(|s| {
                        s.state
                            .pointer("/waiting/reason")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                match waiting {
                    Some(reason) => Err(ApiError::bad_request(format!(
                        "container \"{cname}\" in pod \"{}\" is waiting to start: {reason}",
                        obj::name(pod)
                    ))),
                    None => Ok(String::new()),
                }
            }
        }
    }

    /// The PostgreSQL server of a pod (the first container running one).
    pub fn pg_endpoint(&self, ns: &str, pod: &str) -> Option<PgEndpoint> {
        let p = self.store.get(&kinds::POD, ns, pod)?;
        let rt = self.runtime(obj::uid(&p))?;
        let infos = rt.containers.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .values()
            .find_map(|i| i.pg.clone().filter(|_| i.started))
    }

    /// Kills a pod's PostgreSQL server hard (the pod restarts it). Returns whether one ran.
    pub fn crash(&self, ns: &str, pod: &str) -> bool {
        let Some(p) = self.store.get(&kinds::POD, ns, pod) else {
            return false;
        };
        let Some(rt) = self.runtime(obj::uid(&p)) else {
            return false;
        };
        let mut guard = rt.server.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(server) => {
                proc::signal_group(server.pid(), libc::SIGKILL);
                true
            }
            None => false,
        }
    }

    /// Freezes a pod's PostgreSQL server and its sessions (SIGSTOP to it and its children, as a
    /// network partition or a hung host looks from outside), or thaws it (SIGCONT). Returns
    /// whether a server was running (and, freezing, that all of it stopped).
    pub fn freeze(&self, ns: &str, pod: &str, frozen: bool) -> bool {
        let Some(p) = self.store.get(&kinds::POD, ns, pod) else {
            return false;
        };
        let Some(rt) = self.runtime(obj::uid(&p)) else {
            return false;
        };
        let guard = rt.server.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(server) if frozen => proc::freeze_tree(server.pid()),
            Some(server) => {
                proc::thaw_tree(server.pid());
                true
            }
            None => false,
        }
    }

    /// Stops every pod's containers (cluster shutdown) and waits for them.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<PodRuntime>> = self
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for rt in &all {
            rt.stop.cancel();
        }
        for rt in all {
            let mut rx = rt.done.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|d| *d)).await;
        }
    }
}

/// Everything needed to bring a PostgreSQL container's server up (runs on a blocking thread).
struct Launch {
    flavor: Flavor,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    log: PathBuf,
}

impl Launch {
    fn env(&self, k: &str) -> Option<&str> {
        env_get(&self.env, k)
    }

    fn start(&self) -> Result<PgServer, String> {
        let mut s = PgServer::spawn_at(
            self.addr,
            &self.data_dir,
            &self.socket_dir,
            self.port,
            &self.log,
        )
        .map_err(|e| e.to_string())?;
        s.wait_ready(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// Initialises the data directory if it holds no cluster yet, starts the server and applies
    /// the image's user/database setup. Returns the server and its superuser.
    fn run(self) -> Result<(PgServer, String), String> {
        let q = pg::quote_ident;
        let l = pg::quote_literal;
        let fresh = !pg::is_initialised(&self.data_dir);
        if !fresh {
            // Like the images' entrypoints: postgres insists on a private data directory.
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700));
        }
        match self.flavor {
            Flavor::Official => {
                let user = self.env("POSTGRES_USER").unwrap_or("postgres").to_string();
                if fresh {
                    let password = self.env("POSTGRES_PASSWORD");
                    let trust = self.env("POSTGRES_HOST_AUTH_METHOD") == Some("trust");
                    if password.is_none() && !trust {
                        return Err("Error: Database is uninitialized and superuser password is not specified.\n       You must specify POSTGRES_PASSWORD to a non-empty value for the\n       superuser. For example, \"-e POSTGRES_PASSWORD=password\" on \"docker run\".".into());
                    }
                    pg::init_data_dir(&self.data_dir, &user).map_err(|e| e.to_string())?;
                    // Like the image's entrypoint: TCP by POSTGRES_HOST_AUTH_METHOD.
                    if let Some(method) = self.env("POSTGRES_HOST_AUTH_METHOD") {
                        pg::set_host_auth(&self.data_dir, method).map_err(|e| e.to_string())?;
                    }
                    let server = self.start()?;
                    let mut sql = String::new();
                    if let Some(pw) = password {
                        sql.push_str(&format!("ALTER ROLE {} PASSWORD {};\n", q(&user), l(pw)));
                    }
                    let db = self.env("POSTGRES_DB").unwrap_or(&user).to_string();
                    if db != "postgres" {
                        sql.push_str(&format!("CREATE DATABASE {};\n", q(&db)));
                    }
                    if !sql.is_empty() {
                        server
                            .psql(&user, "postgres", &sql)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok((server, user))
                } else {
                    Ok((self.start()?, user))
                }
            }
            Flavor::Rhel => {
                let user = self.env("POSTGRESQL_USER");
                let password = self.env("POSTGRESQL_PASSWORD");
                let database = self.env("POSTGRESQL_DATABASE");
                let admin = self.env("POSTGRESQL_ADMIN_PASSWORD");
                let trio = user.is_some() && password.is_some() && database.is_some();
                if !trio && admin.is_none() {
                    return Err("You must either specify the following environment variables:\n  POSTGRESQL_USER\n  POSTGRESQL_PASSWORD\n  POSTGRESQL_DATABASE\nOr the following environment variable:\n  POSTGRESQL_ADMIN_PASSWORD".into());
                }
                if fresh {
                    pg::init_data_dir(&self.data_dir, "postgres").map_err(|e| e.to_string())?;
                }
                let server = self.start()?;
                let mut sql = String::new();
                if let (true, Some(u), Some(pw), Some(db)) = (trio, user, password, database) {
                    if fresh {
                        sql.push_str(&format!("CREATE ROLE {} LOGIN PASSWORD {};\n", q(u), l(pw)));
                        sql.push_str(&format!("CREATE DATABASE {} OWNER {};\n", q(db), q(u)));
                    } else {
                        // The image sets the passwords from the environment on every start.
                        sql.push_str(&format!("ALTER ROLE {} PASSWORD {};\n", q(u), l(pw)));
                    }
                }
                if let Some(pw) = admin {
                    sql.push_str(&format!("ALTER ROLE postgres PASSWORD {};\n", l(pw)));
                }
                if !sql.is_empty() {
                    server
                        .psql("postgres", "postgres", &sql)
                        .map_err(|e| e.to_string())?;
                }
                Ok((server, "postgres".into()))
            }
        }
    }
}
