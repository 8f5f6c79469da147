//! A sliver of the Red Hat Developer Hub (Backstage) operator: for a Backstage CR `X` with
//! `spec.database.enableLocalDb: false` it deletes the local database StatefulSet
//! `backstage-psql-X` and its Service (their PVCs stay behind, as seed 004 describes); with it
//! true again (or unset) it creates them again when they are missing, as the real operator's
//! reconcile does — from the backstage scenario's manifests, once the claim the old pod left
//! exists, so the new pod mounts it. Nothing else: the CR is otherwise just stored, and the operator-made objects of a
//! scenario are created by the scenario itself.

use serde_json::{json, Value};

use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
use crate::support::sim::scenario;
use crate::support::sim::store::Store;

pub fn reconcile(store: &Store) {
    for cr in store.list(&kinds::BACKSTAGE, None) {
        if obj::is_deleting(&cr) {
            continue;
        }
        let ns = obj::namespace(&cr);
        let local = cr
            .pointer("/spec/database/enableLocalDb")
            .unwrap_or(&Value::Null);
        let db = format!("backstage-psql-{}", obj::name(&cr));
        if *local != json!(false) {
            recreate_local_db(store, &cr, ns, &db);
            continue;
        }
        for kind in [&kinds::STATEFUL_SET, &kinds::SERVICE] {
            if store
                .get(kind, ns, &db)
                .is_some_and(|o| !obj::is_deleting(&o))
            {
                let _ = registry::delete(store, kind, ns, &db, &DeleteOptions::default());
            }
        }
    }
}

/// The local database's StatefulSet and Service, created again when the CR wants them and they
/// are gone (not while the old ones are still terminating). Only once the database has existed
/// (its claim is there): while a scenario is being loaded, the scenario creates them itself.
fn recreate_local_db(store: &Store, cr: &Value, ns: &str, db: &str) {
    let claim = format!("data-{db}-0");
    if store.get(&kinds::PVC, ns, &claim).is_none() {
        return;
    }
    for kind in [&kinds::SERVICE, &kinds::STATEFUL_SET] {
        if store.get(kind, ns, db).is_some() {
            continue;
        }
        let Some(mut manifest) = scenario::backstage::objects()
            .into_iter()
            .find(|o| obj::str_at(o, "/kind") == Some(kind.kind) && obj::name(o) == db)
        else {
            continue;
        };
        if let Some(Value::Array(refs)) = manifest.pointer_mut("/metadata/ownerReferences") {
            for r in refs {
                r["uid"] = json!(obj::uid(cr));
            }
        }
        let _ = registry::create(store, kind, ns, manifest, false);
    }
}
