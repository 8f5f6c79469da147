//! The request log: every HTTP request the simulated API server answered, so tests can assert how
//! many API calls pgplan made (and which). Requests made by the substrate's own controllers and
//! helpers go straight to the store and are not logged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`
    /// (exec and port-forward are `create` on `pods/exec` and `pods/portforward`, as in RBAC).
    pub verb: String,
    /// The plural resource, with the subresource after a slash: `pods`, `statefulsets/scale`,
    /// `pods/exec`. Empty for discovery and other non-resource paths.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status code of the response.
    pub code: u16,
    pub dry_run: bool,
    /// The request path and query.
    pub path: String,
}

/// Thread-safe log of [`Request`]s.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<Request>>,
    /// Payload bytes carried by exec, port-forward and log streams, both ways.
    stream_bytes: AtomicU64,
}

impl RequestLog {
    pub(crate) fn push(&self, r: Request) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    /// Every request so far, oldest first.
    pub fn all(&self) -> Vec<Request> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests had this verb and resource (`"patch"`, `"statefulsets/scale"`).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.all()
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    /// Counts keyed `"verb resource"`, e.g. `"list pods" => 2`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.all() {
            *out.entry(format!("{} {}", r.verb, r.resource)).or_insert(0) += 1;
        }
        out
    }

    /// Requests that could change state (not get/list/watch), dry runs included.
    pub fn mutations(&self) -> Vec<Request> {
        self.all()
            .into_iter()
            .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
            .collect()
    }

    /// Counts `n` payload bytes crossing the API server in a stream (exec, port-forward, log).
    pub(crate) fn add_stream_bytes(&self, n: usize) {
        self.stream_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Payload bytes that crossed the API server in exec, port-forward and log streams so far
    /// (both directions; frame headers not counted).
    pub fn stream_bytes(&self) -> u64 {
        self.stream_bytes.load(Ordering::Relaxed)
    }

    /// Forgets everything logged so far.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.stream_bytes.store(0, Ordering::Relaxed);
    }

    /// A readable summary for assertion messages.
    pub fn summary(&self) -> String {
        self.counts()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
