//! Which pod a database is reached through — a running, Ready pod of its
//! workload — and, when there is none, why not: each pod with its phase and
//! the reason the scheduler or the kubelet gives (Unschedulable,
//! ImagePullBackOff, CrashLoopBackOff, a failing readiness probe), as
//! `kubectl describe pod` would show it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{Api, ListParams};

use super::{Cluster, ClusterError};

/// What stands between a pod and Ready, in a user's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    /// `Pending`, `Running`, `Failed`, … or `Terminating`.
    pub phase: String,
    /// The reason the cluster gives, with its message.
    pub reason: String,
    /// What kind of reason, for the help line.
    pub cause: Cause,
}

/// The kinds of reasons a pod is not Ready, each with its own advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Unschedulable,
    Image,
    Crashing,
    Config,
    Probe,
    Other,
}

impl std::fmt::Display for PodState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {} is {}: {}", self.name, self.phase, self.reason)
    }
}

/// The one-line reason a container is not ready, with its kind.
fn container_reason(c: &ContainerStatus) -> Option<(String, Cause)> {
    if c.ready {
        return None;
    }
    let state = c.state.as_ref();
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_else(|| "Waiting".into());
        let cause = match reason.as_str() {
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                Cause::Image
            }
            "CrashLoopBackOff" | "RunContainerError" => Cause::Crashing,
            "CreateContainerConfigError" | "CreateContainerError" => Cause::Config,
            _ => Cause::Other,
        };
        let mut text = format!("container {} is waiting: {reason}", c.name);
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            text.push_str(&format!(" ({m})"));
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            text.push_str(&format!(
                "; it last exited with code {}{}",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        return Some((text, cause));
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return Some((
            format!(
                "container {} exited with code {}{}",
                c.name,
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Cause::Crashing,
        ));
    }
    if state.and_then(|s| s.running.as_ref()).is_some() {
        return Some((
            format!("container {} is running but not ready", c.name),
            Cause::Probe,
        ));
    }
    None
}

/// Why `pod` is not running and Ready, from its status alone.
pub fn pod_state(pod: &Pod) -> PodState {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let mut phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if pod.metadata.deletion_timestamp.is_some() {
        phase = "Terminating".into();
        return PodState {
            name,
            phase,
            reason: "it is being deleted".into(),
            cause: Cause::Other,
        };
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return PodState {
            name,
            phase,
            reason: format!(
                "{}{}",
                c.reason.as_deref().unwrap_or("not scheduled"),
                c.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
            cause: Cause::Unschedulable,
        };
    }
    let containers = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or(&[])
        .iter()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or(&[]),
        );
    let reasons: Vec<(String, Cause)> = containers.filter_map(container_reason).collect();
    if let Some((_, cause)) = reasons.first() {
        return PodState {
            name,
            phase,
            reason: reasons
                .iter()
                .map(|(r, _)| r.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            cause: *cause,
        };
    }
    let said = status
        .and_then(|s| s.reason.clone().or_else(|| s.message.clone()))
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status != "True")
                .and_then(|c| c.message.clone().or_else(|| c.reason.clone()))
        });
    PodState {
        name,
        phase,
        reason: said.unwrap_or_else(|| "its containers have not started yet".into()),
        cause: Cause::Other,
    }
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
}

/// What to do about the first pod's reason.
fn advice(cause: Cause, namespace: &str, pod: &str) -> String {
    let specific = match cause {
        Cause::Unschedulable => "no node can run it: check the nodes, its nodeSelector and affinity, and that its claims are bound on a node it may use".to_string(),
        Cause::Image => "its image cannot be pulled: check the image name and tag, the registry and imagePullSecrets".to_string(),
        Cause::Crashing => format!("its container keeps exiting: `kubectl logs -n {namespace} {pod} --previous` shows why"),
        Cause::Config => "the kubelet cannot create its container: a Secret, ConfigMap or key it refers to is missing".to_string(),
        Cause::Probe => "its readiness probe fails (its last failure is quoted above): check the probe against the server".to_string(),
        Cause::Other => "it has not become ready".to_string(),
    };
    format!(
        "{specific}. pgplan reaches the database through a running, Ready pod of the workload: fix the cause, wait until the pod is Ready, then run pgplan again (`kubectl describe pod -n {namespace} {pod}` shows its events)"
    )
}

impl Cluster {
    /// A running, Ready pod matching the labels (the newest, when several);
    /// when none is, an error naming every matching pod, its phase and the
    /// reason the cluster gives.
    pub async fn ready_pod(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<String, ClusterError> {
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| self.classify(e, "list", "pods", namespace, &format!("pods {labels}")))?;
        let mut ready: Vec<&Pod> = list.items.iter().filter(|p| is_ready(p)).collect();
        ready.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        });
        if let Some(name) = ready.first().and_then(|p| p.metadata.name.clone()) {
            return Ok(name);
        }
        let mut states: Vec<PodState> = list.items.iter().map(pod_state).collect();
        // A running container that is not ready: its readiness probe's last
        // failure is in the pod's Events, not in its status.
        for s in states.iter_mut().filter(|s| s.cause == Cause::Probe) {
            if let Some(probe) = self.last_probe_failure(namespace, &s.name).await {
                s.reason.push_str(&format!(" ({probe})"));
            }
        }
        let details = match states.as_slice() {
            [] => "no pod matches (is the workload scaled to 0?)".to_string(),
            [one] => one.to_string(),
            many => format!(
                "{} pods match, none is running and ready: {}",
                many.len(),
                many.iter()
                    .map(PodState::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        let help = match states.first() {
            Some(s) => advice(s.cause, namespace, &s.name),
            None => format!(
                "scale the workload up (or wait for its pods) until `kubectl get pods -n {namespace} -l {labels}` shows one Ready, then run pgplan again"
            ),
        };
        Err(ClusterError::NoReadyPod {
            namespace: namespace.into(),
            selector: labels,
            details,
            help,
        })
    }

    /// The message of the newest `Unhealthy` Event of a pod (a failing
    /// probe), if the cluster lets pgplan read Events.
    async fn last_probe_failure(&self, namespace: &str, pod: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client().clone(), namespace);
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await
            .ok()?;
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
            .max_by(|a, b| {
                let t = |e: &Event| e.last_timestamp.clone().or(e.first_timestamp.clone());
                t(a).cmp(&t(b))
            })
            .and_then(|e| e.message)
    }
}
