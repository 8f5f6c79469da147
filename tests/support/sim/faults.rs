//! Fault injection state: requests to fail (the Nth matching a verb and resource, with a chosen
//! status), latency to add, requests never to answer (a server that accepts connections and then
//! hangs), PVCs the binder must leave unbound, images the kubelet cannot pull and pods whose
//! readiness probe fails. Pod deletion and crashes are actions on the kubelet, exposed next to
//! these on `SimCluster::faults()`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::error::ApiError;

/// Identifies an installed fault, to ask whether it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultId(usize);

#[derive(Debug)]
struct FailRule {
    verb: String,
    resource: String,
    nth: u32,
    times: u32,
    seen: u32,
    fired: u32,
    error: ApiError,
}

#[derive(Debug)]
struct Latency {
    verb: Option<String>,
    resource: Option<String>,
    delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<FailRule>,
    latencies: Vec<Latency>,
    /// (verb, resource) patterns of requests read and never answered.
    hangs: Vec<(String, String)>,
    unbound_pvcs: HashSet<(String, String)>,
    unpullable_images: HashSet<String>,
    /// Pods whose readiness probe fails, with the probe's output.
    unready_pods: HashMap<(String, String), String>,
}

/// Shared fault state, consulted by the API server and the volume binder.
#[derive(Debug, Default)]
pub struct FaultState {
    state: Mutex<State>,
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

impl FaultState {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails `times` requests starting with the `nth` (1-based, counted from now) whose verb and
    /// resource match (`"*"` matches any), answering `error`.
    pub fn fail(
        &self,
        verb: &str,
        resource: &str,
        nth: u32,
        times: u32,
        error: ApiError,
    ) -> FaultId {
        let mut s = self.lock();
        s.rules.push(FailRule {
            verb: verb.into(),
            resource: resource.into(),
            nth: nth.max(1),
            times,
            seen: 0,
            fired: 0,
            error,
        });
        FaultId(s.rules.len() - 1)
    }

    /// How many times the fault fired.
    pub fn fired(&self, id: FaultId) -> u32 {
        self.lock().rules.get(id.0).map_or(0, |r| r.fired)
    }

    pub fn add_latency(&self, verb: Option<&str>, resource: Option<&str>, delay: Duration) {
        self.lock().latencies.push(Latency {
            verb: verb.map(str::to_string),
            resource: resource.map(str::to_string),
            delay,
        });
    }

    /// Matching requests (`"*"` matches any verb or resource; the empty resource is discovery
    /// and `/version`) are read and never answered, the connection kept open.
    pub fn hang(&self, verb: &str, resource: &str) {
        self.lock().hangs.push((verb.into(), resource.into()));
    }

    /// Whether a request is to be left unanswered.
    pub fn hangs(&self, verb: &str, resource: &str) -> bool {
        self.lock()
            .hangs
            .iter()
            .any(|(v, r)| matches(v, verb) && matches(r, resource))
    }

    /// Removes every request fault, hang and latency (PVC holds stay; requests already
    /// hanging stay unanswered).
    pub fn clear_requests(&self) {
        let mut s = self.lock();
        for r in &mut s.rules {
            r.times = 0;
        }
        s.latencies.clear();
        s.hangs.clear();
    }

    pub fn hold_pvc(&self, ns: &str, name: &str, hold: bool) {
        let key = (ns.to_string(), name.to_string());
        let mut s = self.lock();
        if hold {
            s.unbound_pvcs.insert(key);
        } else {
            s.unbound_pvcs.remove(&key);
        }
    }

    pub fn pvc_held(&self, ns: &str, name: &str) -> bool {
        self.lock()
            .unbound_pvcs
            .contains(&(ns.to_string(), name.to_string()))
    }

    pub fn set_unpullable(&self, image: &str, unpullable: bool) {
        let mut s = self.lock();
        if unpullable {
            s.unpullable_images.insert(image.to_string());
        } else {
            s.unpullable_images.remove(image);
        }
    }

    pub fn unpullable(&self, image: &str) -> bool {
        self.lock().unpullable_images.contains(image)
    }

    /// Makes a pod's readiness probe fail with `output` (`None`: pass again).
    pub fn set_readiness(&self, ns: &str, pod: &str, output: Option<&str>) {
        let key = (ns.to_string(), pod.to_string());
        let mut s = self.lock();
        match output {
            Some(o) => {
                s.unready_pods.insert(key, o.to_string());
            }
            None => {
                s.unready_pods.remove(&key);
            }
        }
    }

    /// The failing readiness probe's output of a pod, if it fails.
    pub fn readiness_failure(&self, ns: &str, pod: &str) -> Option<String> {
        self.lock()
            .unready_pods
            .get(&(ns.to_string(), pod.to_string()))
            .cloned()
    }

    /// For one incoming request: the latency to add and the error to answer, if any.
    pub fn check(&self, verb: &str, resource: &str) -> (Duration, Option<ApiError>) {
        let mut s = self.lock();
        let delay = s
            .latencies
            .iter()
            .filter(|l| {
                l.verb.as_deref().is_none_or(|v| matches(v, verb))
                    && l.resource.as_deref().is_none_or(|r| matches(r, resource))
            })
            .map(|l| l.delay)
            .sum();
        let mut error = None;
        for rule in &mut s.rules {
            if !(matches(&rule.verb, verb) && matches(&rule.resource, resource)) {
                continue;
            }
            rule.seen += 1;
            if error.is_none() && rule.seen >= rule.nth && rule.fired < rule.times {
                rule.fired += 1;
                error = Some(rule.error.clone());
            }
        }
        (delay, error)
    }
}
