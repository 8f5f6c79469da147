//! The garbage collector and namespace lifecycle: deletes objects whose owners are all gone
//! (background propagation) or are being deleted in the foreground, releases the
//! `foregroundDeletion` finalizer once an owner's dependents are gone, and empties then removes
//! namespaces being deleted.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::support::sim::kinds::{self, Kind};
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions, FOREGROUND};
use crate::support::sim::store::Store;

pub fn reconcile(store: &Store) {
    let mut all: Vec<(&'static Kind, Arc<Value>)> = Vec::new();
    for k in kinds::ALL.iter() {
        for o in store.list(k, None) {
            all.push((k, o));
        }
    }
    // uid → (deleting, in foreground deletion)
    let index: HashMap<&str, (bool, bool)> = all
        .iter()
        .map(|(_, o)| {
            let fg = obj::finalizers(o).iter().any(|f| f == FOREGROUND);
            (obj::uid(o), (obj::is_deleting(o), fg))
        })
        .collect();
    let mut has_dependents: HashMap<String, bool> = HashMap::new();
    for (k, o) in &all {
        let owners = obj::owner_uids(o);
        if owners.is_empty() {
            continue;
        }
        for u in &owners {
            has_dependents.insert(u.clone(), true);
        }
        if obj::is_deleting(o) {
            continue;
        }
        let live: Vec<&(bool, bool)> = owners
            .iter()
            .filter_map(|u| index.get(u.as_str()))
            .collect();
        let orphaned = live.is_empty();
        let foreground = !live.is_empty() && live.iter().all(|(deleting, fg)| *deleting && *fg);
        if orphaned || foreground {
            let _ = registry::delete(
                store,
                k,
                obj::namespace(o),
                obj::name(o),
                &DeleteOptions {
                    propagation: Some(
                        if foreground {
                            "Foreground"
                        } else {
                            "Background"
                        }
                        .into(),
                    ),
                    ..DeleteOptions::default()
                },
            );
        }
    }
    for (k, o) in &all {
        if obj::is_deleting(o)
            && obj::finalizers(o).iter().any(|f| f == FOREGROUND)
            && !has_dependents.contains_key(obj::uid(o))
        {
            let uid = obj::uid(o).to_string();
            registry::modify(store, k, obj::namespace(o), obj::name(o), |cur| {
                if obj::uid(cur) == uid {
                    registry::remove_finalizer(cur, FOREGROUND);
                }
            });
        }
    }
    for ns in store.list(&kinds::NAMESPACE, None) {
        if !obj::is_deleting(&ns) {
            continue;
        }
        let name = obj::name(&ns);
        let mut empty = true;
        for (k, o) in all
            .iter()
            .filter(|(k, o)| k.namespaced && obj::namespace(o) == name)
        {
            empty = false;
            if !obj::is_deleting(o) {
                let _ = registry::delete(store, k, name, obj::name(o), &DeleteOptions::default());
            }
        }
        if empty {
            store.remove(&kinds::NAMESPACE, "", name, obj::uid(&ns));
        }
    }
}
