//! Tools pods (`backup.dataPath: cluster`): a short-lived pod per data step
//! in the backup claim's namespace that mounts the claim at
//! [`pgtools::claim::MOUNT`] and runs the PostgreSQL tools beside the
//! servers. pgplan execs the tools in it; their data goes between the
//! server and the claim over the cluster network, never through pgplan.
//!
//! The pod runs the image of the server it works on (the source's for a
//! dump, the target's for a restore: tools of the server's own major
//! version), with that server's address as `PGHOST`/`PGPORT` and its
//! container's own login passed on by reference (`POSTGRES_USER`, and the
//! password as `PGPASSWORD`, each `valueFrom` kept as the workload has it:
//! no secret value enters the pod's spec that was not in the workload's).
//! It sleeps until pgplan deletes it when the step ends, whatever the
//! outcome; `activeDeadlineSeconds` ends one that a lost runner left.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::outcome::StepError;
use super::world::{World, READY_TIMEOUT};
use crate::cluster::{Cluster, Write};
use crate::observed::str_at;
use crate::pgtools::{claim::MOUNT, Runner};
use crate::plan::{InCluster, ObjectRef, ServerRef};

/// How often a tools pod starting (or going) is looked at: it takes a
/// moment, and each data step waits for one.
const POD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The container in a tools pod.
const CONTAINER: &str = "tools";

/// A tools pod at work for one step; [`ToolsPod::remove`] deletes it.
pub struct ToolsPod<'a> {
    cluster: &'a Cluster,
    pub pod: ObjectRef,
}

impl<'a> ToolsPod<'a> {
    /// Where the tools run.
    pub fn runner(&self) -> Runner<'a> {
        tools_runner(self.cluster, &self.pod)
    }

    /// Deletes the pod (a failure is logged: the pod's deadline ends it).
    pub async fn remove(self) {
        if let Err(e) = self.cluster.delete(&self.pod, Write::Apply).await {
            tracing::warn!(pod = %self.pod.display(), error = %e, "could not delete the tools pod");
        }
    }
}

/// The server a tools pod works on: the image to run, and the libpq
/// environment (address and login) and volumes that reach it.
struct Beside {
    image: String,
    env: Vec<Value>,
    /// Secret volumes: (volume, secret name, mount path).
    secrets: Vec<(String, String, String)>,
}

/// Where a tools pod mounts the CA bundle of a server outside the cluster.
const CA_MOUNT: &str = "/pgplan-ca";

/// What a tools pod needs to reach `server`: a server in a pod at its
/// Ready pod's address, a server outside the cluster through the
/// connection Secret (`InCluster`).
async fn beside(w: &World<'_>, server: &ServerRef) -> Result<Beside, StepError> {
    let (workload, selector, container) = match server {
        ServerRef::Pod {
            workload,
            selector,
            container,
        } => (workload, selector, container),
        ServerRef::Direct {
            in_cluster: Some(ic),
            ..
        } => return Ok(outside(ic)),
        ServerRef::Direct { .. } => {
            return Err(StepError::new(format!(
                "{} is reached from this machine: a tools pod works only on servers in pods or reached from the cluster (`backup.dataPath: cluster`)",
                server.locator()
            )))
        }
    };
    let c = w.cluster()?;
    let name = c.ready_pod(&workload.namespace, selector).await?;
    let pod_ref = ObjectRef::new("v1", "Pod", &workload.namespace, &name);
    let live = c.get(&pod_ref).await?.unwrap_or(Value::Null);
    let chosen = crate::diff::source::postgres_container(&live["spec"], container.as_deref())
        .map_err(|e| {
            StepError::new(format!(
                "pod {}: no PostgreSQL container to run the tools beside ({e:?})",
                pod_ref.display()
            ))
        })?;
    let spec = live["spec"]["containers"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| str_at(c, &["name"]) == Some(&chosen.name))
        })
        .cloned()
        .unwrap_or(Value::Null);
    let host = str_at(&live, &["status", "podIP"])
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            StepError::new(format!(
                "pod {} has no address yet (status.podIP)",
                pod_ref.display()
            ))
        })?
        .to_string();
    let port = spec["ports"]
        .as_array()
        .and_then(|ps| ps.first())
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(5432);
    let mut env = vec![
        json!({"name": "PGHOST", "value": host}),
        json!({"name": "PGPORT", "value": port.to_string()}),
    ];
    let sources = env_from_keys(c, &workload.namespace, &spec).await?;
    env.extend(login_env(&spec, &sources));
    Ok(Beside {
        image: str_at(&spec, &["image"]).unwrap_or("postgres").to_string(),
        env,
        secrets: Vec::new(),
    })
}

/// A server outside the cluster: its address and login from the
/// connection Secret, each by reference, and its CA bundle mounted.
fn outside(ic: &InCluster) -> Beside {
    let from = |var: &str, key: &str| json!({"name": var, "valueFrom": {"secretKeyRef": {"name": ic.login_secret, "key": key}}});
    let mut env = vec![
        from("PGHOST", "POSTGRES_HOST"),
        from("PGPORT", "POSTGRES_PORT"),
        from("POSTGRES_USER", "POSTGRES_USER"),
        from("PGPASSWORD", "POSTGRES_PASSWORD"),
        json!({"name": "PGSSLMODE", "value": ic.sslmode.as_str()}),
    ];
    let mut secrets = Vec::new();
    if let Some(ca) = &ic.ca_secret {
        env.push(json!({"name": "PGSSLROOTCERT", "value": format!("{CA_MOUNT}/{}", ca.key)}));
        secrets.push(("ca".to_string(), ca.name.clone(), CA_MOUNT.to_string()));
    }
    Beside {
        image: ic.image.clone(),
        env,
        secrets,
    }
}

/// The variables that carry a server container's login, and the name the
/// tools read each as, in order of preference.
const LOGIN_VARS: [(&str, &str); 5] = [
    ("POSTGRES_USER", "POSTGRES_USER"),
    ("POSTGRESQL_USER", "POSTGRES_USER"),
    ("POSTGRES_PASSWORD", "PGPASSWORD"),
    ("POSTGRESQL_PASSWORD", "PGPASSWORD"),
    ("POSTGRESQL_ADMIN_PASSWORD", "PGPASSWORD"),
];

/// The server container's own login, by reference, as the tools read it:
/// from its `env`, and from the Secrets and ConfigMaps of its `envFrom`
/// (whose key names `sources` gives, by `(kind, name)`), with Kubernetes'
/// precedence (a later `envFrom` over an earlier one, `env` over both).
fn login_env(container: &Value, sources: &BTreeMap<(String, String), Vec<String>>) -> Vec<Value> {
    // Each variable of the container, as the value (or reference) it takes.
    let mut vars: BTreeMap<String, Value> = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = str_at(from, &["prefix"]).unwrap_or_default();
        for (kind, field, key_ref) in [
            ("Secret", "secretRef", "secretKeyRef"),
            ("ConfigMap", "configMapRef", "configMapKeyRef"),
        ] {
            let Some(name) = str_at(from, &[field, "name"]) else {
                continue;
            };
            let keys = sources.get(&(kind.to_string(), name.to_string()));
            for key in keys.into_iter().flatten() {
                vars.insert(
                    format!("{prefix}{key}"),
                    json!({"valueFrom": {key_ref: {"name": name, "key": key}}}),
                );
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        if let Some(name) = str_at(e, &["name"]) {
            let mut v = e.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("name");
            }
            vars.insert(name.to_string(), v);
        }
    }
    let mut env: Vec<Value> = Vec::new();
    for (var, tools_name) in LOGIN_VARS {
        let Some(v) = vars.get(var) else {
            continue;
        };
        if env.iter().any(|e| e["name"] == tools_name) {
            continue;
        }
        let mut e = v.clone();
        e["name"] = json!(tools_name);
        env.push(e);
    }
    env
}

/// The key names of the Secrets and ConfigMaps a container's `envFrom`
/// names (values are not read), by `(kind, name)`.
async fn env_from_keys(
    c: &Cluster,
    namespace: &str,
    container: &Value,
) -> Result<BTreeMap<(String, String), Vec<String>>, StepError> {
    let mut out = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        for (kind, field) in [("Secret", "secretRef"), ("ConfigMap", "configMapRef")] {
            let Some(name) = str_at(from, &[field, "name"]) else {
                continue;
            };
            let object = c.get(&ObjectRef::new("v1", kind, namespace, name)).await?;
            let keys = object
                .and_then(|o| o["data"].as_object().map(|d| d.keys().cloned().collect()))
                .unwrap_or_default();
            out.insert((kind.to_string(), name.to_string()), keys);
        }
    }
    Ok(out)
}

/// The tools pod's name: the run and the step, hashed (stable, so a
/// resumed step finds its predecessor's pod and replaces it).
fn pod_name(run: &str, address: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{run}\n{address}").as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("pgplan-tools-{hash}")
}

/// `s` as a label value: its safe characters, at most 63, alphanumeric at both ends.
fn label_value(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The tools pod's manifest; `claim` mounted at [`MOUNT`] when given.
fn manifest(
    pod: &ObjectRef,
    placement: Option<&str>,
    run: &str,
    claim: Option<&str>,
    b: &Beside,
) -> Value {
    let mut env = b.env.clone();
    env.extend([
        json!({"name": "PGCONNECT_TIMEOUT", "value": "10"}),
        json!({"name": "PGAPPNAME", "value": "pgplan"}),
        // The server is not this pod's own: a login check connects to PGHOST.
        json!({"name": "PGPLAN_REMOTE", "value": "1"}),
    ]);
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(claim) = claim {
        mounts.push(json!({"name": "backups", "mountPath": MOUNT}));
        volumes.push(json!({"name": "backups", "persistentVolumeClaim": {"claimName": claim}}));
    }
    let mut labels = json!({
        "app.kubernetes.io/managed-by": "pgplan",
        "app.kubernetes.io/component": "tools",
        "pgplan.dev/run": label_value(run),
    });
    if let Some(p) = placement {
        labels["pgplan.dev/placement"] = json!(p);
    }
    for (volume, secret, path) in &b.secrets {
        mounts.push(json!({"name": volume, "mountPath": path, "readOnly": true}));
        volumes.push(json!({"name": volume, "secret": {"secretName": secret}}));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": labels,
        },
        "spec": {
            "restartPolicy": "Never",
            // A day: longer than any data step, and the end of a pod a
            // lost runner left behind.
            "activeDeadlineSeconds": 86400,
            "containers": [{
                "name": CONTAINER,
                "image": b.image,
                "command": ["sleep", "86400"],
                "env": env,
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    })
}

/// Starts a tools pod on `claim` beside `server` for `step`, and waits
/// until it runs.
pub async fn start<'a>(
    w: &'a World<'_>,
    step: &crate::plan::Step,
    claim: &ObjectRef,
    server: &ServerRef,
) -> Result<ToolsPod<'a>, StepError> {
    let b = beside(w, server).await?;
    let run = w.run.file_name();
    let pod = ObjectRef::new(
        "v1",
        "Pod",
        &claim.namespace,
        &pod_name(&run, &step.address),
    );
    let desired = manifest(&pod, Some(&step.placement), &run, Some(&claim.name), &b);
    launch(w.cluster()?, desired, &b.image).await.map_err(|e| {
        StepError::new(format!(
            "the tools pod on claim {} did not start: {e}; check that the claim binds (`kubectl describe pvc -n {} {}`) and the image {} can be pulled",
            claim.display(),
            claim.namespace,
            claim.name,
            b.image
        ))
    })
}

/// The tools of a server outside the cluster, in its client pod: started
/// at the first use in this apply, shared by its steps and deleted when the
/// apply ends ([`remove_clients`]).
pub async fn client<'a>(w: &'a World<'_>, server: &ServerRef) -> Result<Runner<'a>, StepError> {
    let ServerRef::Direct {
        in_cluster: Some(ic),
        locator,
        ..
    } = server
    else {
        return Err(StepError::new(format!(
            "{} has no client pod: it is not reached from inside the cluster",
            server.locator()
        )));
    };
    let c = w.cluster()?;
    let mut clients = w.clients.lock().await;
    let key = locator.to_string();
    if let Some(pod) = clients.get(&key) {
        return Ok(tools_runner(c, pod));
    }
    let tools = start_client(c, ic, &w.run.file_name(), &key).await?;
    clients.insert(key, tools.pod.clone());
    Ok(tools.runner())
}

/// Starts a client pod for the server `key` outside the cluster, named for
/// `run`, and waits until it runs. `observe` takes an RDS target's
/// inventory through one of its own.
pub async fn start_client<'a>(
    c: &'a Cluster,
    ic: &InCluster,
    run: &str,
    key: &str,
) -> Result<ToolsPod<'a>, StepError> {
    let b = outside(ic);
    let pod = ObjectRef::new("v1", "Pod", &ic.namespace, &pod_name(run, key));
    let desired = manifest(&pod, None, run, None, &b);
    launch(c, desired, &b.image).await.map_err(|e| {
        StepError::new(format!(
            "the client pod for {key} did not start: {e}; check that Secret {}/{} exists (pgplan writes it before the data moves) and the image {} can be pulled",
            ic.namespace, ic.login_secret, b.image
        ))
    })
}

/// Deletes the client pods this apply started.
pub async fn remove_clients(w: &World<'_>) {
    let Ok(c) = w.cluster() else {
        return;
    };
    let pods: Vec<ObjectRef> = std::mem::take(&mut *w.clients.lock().await)
        .into_values()
        .collect();
    for pod in pods {
        ToolsPod { cluster: c, pod }.remove().await;
    }
}

/// Whether a pod runs with its container ready.
fn pod_running(pod: &Value) -> bool {
    str_at(pod, &["status", "phase"]) == Some("Running")
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|s| s["ready"] == true))
}

/// A pod that does not run yet, as `kubectl describe` would say why: its
/// phase, and each container's waiting or terminated reason and message
/// (`ContainerCreating: MountVolume.SetUp failed …`, `ImagePullBackOff`).
fn pod_state(pod: &Value) -> String {
    let phase = str_at(pod, &["status", "phase"]).unwrap_or("Pending");
    let mut why: Vec<String> = Vec::new();
    for s in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for state in ["waiting", "terminated"] {
            let st = &s["state"][state];
            if let Some(reason) = str_at(st, &["reason"]) {
                why.push(match str_at(st, &["message"]).filter(|m| !m.is_empty()) {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason.to_string(),
                });
            }
        }
    }
    for c in pod["status"]["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "PodScheduled" && c["status"] == "False" {
            if let Some(m) = str_at(c, &["message"]) {
                why.push(format!("not scheduled: {m}"));
            }
        }
    }
    if why.is_empty() {
        format!("phase {phase}")
    } else {
        format!("phase {phase} ({})", why.join("; "))
    }
}

fn tools_runner<'a>(cluster: &'a Cluster, pod: &ObjectRef) -> Runner<'a> {
    Runner::Pod {
        cluster,
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        container: Some(CONTAINER.into()),
    }
}

/// Creates the pod `desired` (after one an interrupted attempt left under
/// its name) and waits until it runs; one that does not is deleted.
async fn launch<'a>(
    c: &'a Cluster,
    desired: Value,
    image: &str,
) -> Result<ToolsPod<'a>, StepError> {
    let pod = ObjectRef::of(&desired)
        .ok_or_else(|| StepError::new("a tools pod manifest without a name"))?;
    if c.delete(&pod, Write::Apply).await? {
        c.wait_polling(&pod, READY_TIMEOUT, POD_POLL, |o| match o {
            None => Ok(true),
            Some(_) => Err("still terminating".into()),
        })
        .await?;
    }
    c.create(&desired, Write::Apply).await?;
    let tools = ToolsPod { cluster: c, pod };
    let running = c
        .wait_polling(&tools.pod, READY_TIMEOUT, POD_POLL, |o| match o {
            Some(p) if pod_running(p) => Ok(true),
            Some(p) => Err(pod_state(p)),
            None => Err("deleted".into()),
        })
        .await;
    if let Err(e) = running {
        tracing::debug!(image, "tools pod did not start");
        tools.remove().await;
        return Err(StepError::new(e.to_string()));
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_is_passed_on_by_reference_under_the_tools_names() {
        let container = json!({"env": [
            {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "c", "key": "u"}}},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "c", "key": "p"}}},
            {"name": "OTHER", "value": "x"},
        ]});
        let env = login_env(&container, &BTreeMap::new());
        assert_eq!(
            env,
            [
                json!({"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "c", "key": "u"}}}),
                json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "c", "key": "p"}}}),
            ]
        );
    }

    #[test]
    fn the_login_of_env_from_is_passed_on_with_kubernetes_precedence() {
        // The operator's image: everything from one Secret, by envFrom; a
        // prefixed ConfigMap whose keys do not name a login; an explicit
        // user that wins over the Secret's.
        let container = json!({
            "envFrom": [{"secretRef": {"name": "db"}}, {"prefix": "X_", "configMapRef": {"name": "cm"}}],
            "env": [{"name": "POSTGRES_USER", "value": "admin"}],
        });
        let sources = BTreeMap::from([
            (
                ("Secret".to_string(), "db".to_string()),
                vec![
                    "POSTGRES_USER".to_string(),
                    "POSTGRESQL_ADMIN_PASSWORD".to_string(),
                ],
            ),
            (
                ("ConfigMap".to_string(), "cm".to_string()),
                vec!["POSTGRES_PASSWORD".to_string()],
            ),
        ]);
        assert_eq!(
            login_env(&container, &sources),
            [
                json!({"name": "POSTGRES_USER", "value": "admin"}),
                json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "POSTGRESQL_ADMIN_PASSWORD"}}}),
            ]
        );
    }

    #[test]
    fn a_pod_that_does_not_start_says_why() {
        let waiting = json!({"status": {"phase": "Pending", "containerStatuses": [{"ready": false,
            "state": {"waiting": {"reason": "ContainerCreating",
                "message": "MountVolume.SetUp failed for volume: secret \"db-login\" not found"}}}]}});
        assert!(!pod_running(&waiting));
        assert_eq!(
            pod_state(&waiting),
            "phase Pending (ContainerCreating: MountVolume.SetUp failed for volume: secret \"db-login\" not found)"
        );
        let unscheduled = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}});
        assert_eq!(
            pod_state(&unscheduled),
            "phase Pending (not scheduled: 0/3 nodes are available: 3 Insufficient cpu.)"
        );
        let running = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}});
        assert!(pod_running(&running));
        assert_eq!(pod_state(&json!({})), "phase Pending");
    }

    #[test]
    fn a_steps_pod_name_is_stable_and_its_own() {
        let a = pod_name("run-1", "pg/hc/healthcare/backup");
        assert_eq!(a, pod_name("run-1", "pg/hc/healthcare/backup"));
        assert_ne!(a, pod_name("run-1", "pg/hc/healthcare/restore"));
        assert_ne!(a, pod_name("run-2", "pg/hc/healthcare/backup"));
        assert!(a.len() <= 63 && a.starts_with("pgplan-tools-"), "{a}");
    }
}
