//! A sliver of the Red Hat Developer Hub (Backstage) operator: for a Backstage CR `X` with
//! `spec.database.enableLocalDb: false` it deletes the local database StatefulSet
//! `backstage-psql-X` and its Service (their PVCs stay behind, as seed 004 describes). Nothing
//! else: the CR is otherwise just stored, and the operator-made objects of a scenario are created
//! by the scenario itself.

use serde_json::{json, Value};

use crate::support::sim::kinds;
use crate::support::sim::obj;
use crate::support::sim::registry::{self, DeleteOptions};
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
        if *local != json!(false) {
            continue;
        }
        let db = format!("backstage-psql-{}", obj::name(&cr));
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
