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

use serde_json::{json, Value};

use super::outcome::StepError;
use super::world::{World, READY_TIMEOUT};
use crate::cluster::{Cluster, Write};
use crate::observed::str_at;
use crate::pgtools::{claim::MOUNT, Runner};
use crate::plan::{ObjectRef, ServerRef};

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
        Runner::Pod {
            cluster: self.cluster,
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            container: Some(CONTAINER.into()),
        }
    }

    /// Deletes the pod (a failure is logged: the pod's deadline ends it).
    pub async fn remove(self) {
        if let Err(e) = self.cluster.delete(&self.pod, Write::Apply).await {
            tracing::warn!(pod = %self.pod.display(), error = %e, "could not delete the tools pod");
        }
    }
}

/// The server a tools pod works on: its pod's image, address and login.
struct Beside {
    image: String,
    host: String,
    port: u16,
    env: Vec<Value>,
}

/// Reads the image, address and login of the Ready pod of `server`.
async fn beside(w: &World<'_>, server: &ServerRef) -> Result<Beside, StepError> {
    let ServerRef::Pod {
        workload,
        selector,
        container,
    } = server
    else {
        return Err(StepError::new(format!(
            "{} is not in the cluster: a tools pod works only on servers in pods (set `backup.dataPath: local`)",
            server.locator()
        )));
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
    Ok(Beside {
        image: str_at(&spec, &["image"]).unwrap_or("postgres").to_string(),
        host,
        port,
        env: login_env(&spec),
    })
}

/// The server container's own login, by reference, as the tools read it.
fn login_env(container: &Value) -> Vec<Value> {
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = match str_at(e, &["name"]) {
            Some("POSTGRES_USER") | Some("POSTGRESQL_USER") => "POSTGRES_USER",
            Some("POSTGRES_PASSWORD")
            | Some("POSTGRESQL_PASSWORD")
            | Some("POSTGRESQL_ADMIN_PASSWORD") => "PGPASSWORD",
            _ => continue,
        };
        if env.iter().any(|v: &Value| v["name"] == name) {
            continue;
        }
        let mut e = e.clone();
        e["name"] = json!(name);
        env.push(e);
    }
    env
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

/// The tools pod's manifest.
fn manifest(pod: &ObjectRef, placement: &str, run: &str, claim: &str, b: &Beside) -> Value {
    let mut env = vec![
        json!({"name": "PGHOST", "value": b.host}),
        json!({"name": "PGPORT", "value": b.port.to_string()}),
        json!({"name": "PGCONNECT_TIMEOUT", "value": "10"}),
        json!({"name": "PGAPPNAME", "value": "pgplan"}),
    ];
    env.extend(b.env.iter().cloned());
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "pgplan",
                "app.kubernetes.io/component": "tools",
                "pgplan.dev/placement": placement,
                "pgplan.dev/run": label_value(run),
            },
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
                "volumeMounts": [{"name": "backups", "mountPath": MOUNT}],
            }],
            "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": claim}}],
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
    let c = w.cluster()?;
    let b = beside(w, server).await?;
    let run = w.run.file_name();
    let pod = ObjectRef::new(
        "v1",
        "Pod",
        &claim.namespace,
        &pod_name(&run, &step.address),
    );
    // One left by an interrupted attempt of this step goes first.
    if c.delete(&pod, Write::Apply).await? {
        c.wait(&pod, READY_TIMEOUT, |o| match o {
            None => Ok(true),
            Some(_) => Err("still terminating".into()),
        })
        .await?;
    }
    let desired = manifest(&pod, &step.placement, &run, &claim.name, &b);
    c.create(&desired, Write::Apply).await?;
    let tools = ToolsPod { cluster: c, pod };
    let running = c
        .wait(&tools.pod, READY_TIMEOUT, |o| {
            let phase = o
                .and_then(|p| str_at(p, &["status", "phase"]))
                .unwrap_or("Pending");
            let ready = o
                .and_then(|p| p["status"]["containerStatuses"].as_array())
                .is_some_and(|cs| cs.iter().any(|s| s["ready"] == true));
            match (phase, ready) {
                ("Running", true) => Ok(true),
                (phase, _) => Err(format!("phase {phase}")),
            }
        })
        .await;
    if let Err(e) = running {
        tools.remove().await;
        return Err(StepError::new(format!(
            "the tools pod on claim {} did not start: {e}; check that the claim binds (`kubectl describe pvc -n {} {}`) and the image {} can be pulled",
            claim.display(),
            claim.namespace,
            claim.name,
            b.image
        )));
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
        let env = login_env(&container);
        assert_eq!(
            env,
            [
                json!({"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "c", "key": "u"}}}),
                json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "c", "key": "p"}}}),
            ]
        );
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
