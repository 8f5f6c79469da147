//! The object store: every object as JSON under (resource, namespace, name), one global
//! resourceVersion counter, and the history of changes that watches replay. It knows nothing of
//! validation or controllers; `registry` builds API semantics on top of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::ApiError;
use super::kinds::{self, Kind};
use super::obj;

/// How many changes watches can replay; older resourceVersions get 410 Gone.
const HISTORY: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: &'static Kind,
    pub typ: EventType,
    /// The object after the change (for Deleted: the last state, with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change (Modified and Deleted).
    pub old: Option<Arc<Value>>,
}

type Key = (String, String);

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Change>,
}

/// The shared store. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    rv_tx: Arc<watch::Sender<u64>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Store {
        let (rv_tx, _) = watch::channel(0);
        Store {
            inner: Arc::new(Mutex::new(Inner {
                rv: 1000,
                ..Inner::default()
            })),
            rv_tx: Arc::new(rv_tx),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a broken test; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever anything in the store changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, kind: &Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        inner
            .objects
            .get(kind.plural)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of `kind`, in `ns` when given, sorted by namespace and name.
    pub fn list(&self, kind: &Kind, ns: Option<&str>) -> Vec<Arc<Value>> {
        let inner = self.lock();
        let Some(m) = inner.objects.get(kind.plural) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// Finds any object by uid.
    pub fn by_uid(&self, uid: &str) -> Option<(&'static Kind, Arc<Value>)> {
        let inner = self.lock();
        for k in kinds::ALL.iter() {
            if let Some(m) = inner.objects.get(k.plural) {
                if let Some(o) = m.values().find(|o| obj::uid(o) == uid) {
                    return Some((k, o.clone()));
                }
            }
        }
        None
    }

    /// Every uid present, with whether that object is being deleted.
    pub fn uid_index(&self) -> HashMap<String, bool> {
        let inner = self.lock();
        inner
            .objects
            .values()
            .flat_map(|m| m.values())
            .map(|o| (obj::uid(o).to_string(), obj::is_deleting(o)))
            .collect()
    }

    fn bump(inner: &mut Inner) -> u64 {
        inner.rv += 1;
        inner.rv
    }

    fn record(&self, inner: &mut Inner, change: Change) {
        let rv = change.rv;
        inner.history.push_back(change);
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        self.rv_tx.send_replace(rv);
    }

    /// Inserts a new object (metadata already complete but for resourceVersion).
    pub fn insert(&self, kind: &'static Kind, mut o: Value) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = (obj::namespace(&o).to_string(), obj::name(&o).to_string());
        if inner
            .objects
            .get(kind.plural)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(kind, &key.1));
        }
        let rv = Self::bump(&mut inner);
        obj::set(
            &mut o,
            &["metadata", "resourceVersion"],
            json!(rv.to_string()),
        );
        let o = Arc::new(o);
        inner
            .objects
            .entry(kind.plural)
            .or_default()
            .insert(key, o.clone());
        self.record(
            &mut inner,
            Change {
                rv,
                kind,
                typ: EventType::Added,
                object: o.clone(),
                old: None,
            },
        );
        Ok(o)
    }

    /// Replaces an object if its stored resourceVersion is still `expected_rv`.
    pub fn replace(
        &self,
        kind: &'static Kind,
        mut o: Value,
        expected_rv: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = (obj::namespace(&o).to_string(), obj::name(&o).to_string());
        let old = inner
            .objects
            .get(kind.plural)
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, &key.1))?;
        if obj::resource_version(&old) != expected_rv {
            return Err(ApiError::conflict(kind, &key.1));
        }
        let rv = Self::bump(&mut inner);
        obj::set(
            &mut o,
            &["metadata", "resourceVersion"],
            json!(rv.to_string()),
        );
        let o = Arc::new(o);
        inner
            .objects
            .entry(kind.plural)
            .or_default()
            .insert(key, o.clone());
        self.record(
            &mut inner,
            Change {
                rv,
                kind,
                typ: EventType::Modified,
                object: o.clone(),
                old: Some(old),
            },
        );
        Ok(o)
    }

    /// Removes an object if its uid is still `expected_uid` (any uid when empty).
    pub fn remove(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        expected_uid: &str,
    ) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let m = inner.objects.get_mut(kind.plural)?;
        let cur = m.get(&key)?;
        if !expected_uid.is_empty() && obj::uid(cur) != expected_uid {
            return None;
        }
        let old = m.remove(&key)?;
        let rv = Self::bump(&mut inner);
        let mut last = (*old).clone();
        obj::set(
            &mut last,
            &["metadata", "resourceVersion"],
            json!(rv.to_string()),
        );
        let last = Arc::new(last);
        self.record(
            &mut inner,
            Change {
                rv,
                kind,
                typ: EventType::Deleted,
                object: last.clone(),
                old: Some(old),
            },
        );
        Some(last)
    }

    /// Changes of `kind` after `rv`, or 410 Gone when `rv` is older than the kept history.
    pub fn changes_since(&self, kind: &Kind, rv: u64) -> Result<Vec<Change>, ApiError> {
        let inner = self.lock();
        if let Some(first) = inner.history.front() {
            if rv + 1 < first.rv {
                return Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    first.rv - 1
                )));
            }
        }
        let start = inner.history.partition_point(|c| c.rv <= rv);
        Ok(inner
            .history
            .iter()
            .skip(start)
            .filter(|c| std::ptr::eq(c.kind, kind) || c.kind == kind)
            .cloned()
            .collect())
    }

    /// A consistent snapshot of the objects of `kind` and the resourceVersion it was taken at.
    pub fn snapshot(&self, kind: &Kind, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = match inner.objects.get(kind.plural) {
            Some(m) => m
                .iter()
                .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                .map(|(_, v)| v.clone())
                .collect(),
            None => Vec::new(),
        };
        (items, inner.rv)
    }
}
