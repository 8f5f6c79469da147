//! Fault injection state: requests to fail (the Nth matching a verb and resource, with a chosen
//! status), latency to add, requests never to answer (a server that accepts connections and then
//! hangs), and PVCs the binder must leave unbound. Pod deletion and crashes are
//! actions on the kubelet, exposed next to these on `SimCluster::faults()`.

use std::collections::HashSet;
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
