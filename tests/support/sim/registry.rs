//! API semantics over the store, shared by the HTTP handlers and the controllers: create, update,
//! patch and delete with server-filled metadata, admission, optimistic concurrency
//! (resourceVersion), dry-run, the status and scale subresources, finalizers and deletion
//! propagation. Controllers write through `modify`, which skips admission like a privileged
//! controller writing status would not, but keeps optimistic concurrency.

use std::sync::Arc;

use serde_json::{json, Value};

use super::admission;
use super::error::ApiError;
use super::kinds::{self, Kind};
use super::obj;
use super::patch::{self, PatchType};
use super::select::LabelSelector;
use super::store::Store;

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
    Scale,
}

/// The finalizer that holds an owner until its dependents are gone (foreground deletion).
pub const FOREGROUND: &str = "foregroundDeletion";

fn check_namespace(store: &Store, kind: &Kind, ns: &str, name: &str) -> Result<(), ApiError> {
    if !kind.namespaced {
        return Ok(());
    }
    match store.get(&kinds::NAMESPACE, "", ns) {
        None => Err(ApiError::not_found(&kinds::NAMESPACE, ns)),
        Some(n) if obj::is_deleting(&n) => Err(ApiError {
            code: 403,
            reason: "Forbidden".into(),
            message: format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} \
                 because it is being terminated",
                kind.resource()
            ),
            details: Some(Box::new(json!({"name": name, "kind": kind.plural}))),
        }),
        Some(_) => Ok(()),
    }
}

fn initial_status(kind: &Kind) -> Option<Value> {
    match kind.kind {
        "Pod" => Some(json!({"phase": "Pending", "qosClass": "BestEffort"})),
        "PersistentVolumeClaim" | "PersistentVolume" => Some(json!({"phase": "Pending"})),
        "Namespace" => Some(json!({"phase": "Active"})),
        "Service" => Some(json!({"loadBalancer": {}})),
        "Node" => None,
        _ => Some(json!({})),
    }
}

fn has_generation(kind: &Kind) -> bool {
    matches!(
        kind.kind,
        "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
            | "Backstage"
            | "VolumeSnapshot"
            | "Pod"
    )
}

/// The part of an object whose change bumps `metadata.generation`.
fn generation_part(kind: &Kind, o: &Value) -> Value {
    if kind.kind == "Backstage" {
        let mut c = o.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        c
    } else {
        o.get("spec").cloned().unwrap_or(Value::Null)
    }
}

/// Creates an object. `ns` is the request's namespace ("" for cluster-scoped kinds).
pub fn create(
    store: &Store,
    kind: &'static Kind,
    ns: &str,
    mut body: Value,
    dry_run: bool,
) -> Result<Arc<Value>, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not an object",
        ));
    }
    let api_version = kind.api_version();
    for (field, want) in [("apiVersion", api_version.as_str()), ("kind", kind.kind)] {
        match body.get(field).and_then(Value::as_str) {
            None | Some("") => obj::set(&mut body, &[field], json!(want)),
            Some(have) if have == want => {}
            Some(have) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({have}) does not match the expected API \
                     version ({want})"
                )))
            }
        }
    }
    if kind.namespaced {
        match obj::namespace(&body) {
            "" => obj::set(&mut body, &["metadata", "namespace"], json!(ns)),
            have if have == ns => {}
            _ => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ))
            }
        }
    } else if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("namespace");
    }
    if obj::name(&body).is_empty() {
        if let Some(prefix) = obj::str_at(&body, "/metadata/generateName").map(str::to_string) {
            if !prefix.is_empty() {
                let name = format!("{prefix}{}", obj::random_suffix(5));
                obj::set(&mut body, &["metadata", "name"], json!(name));
            }
        }
    }
    let name = obj::name(&body).to_string();
    check_namespace(store, kind, ns, &name)?;
    {
        let meta = obj::map_at(&mut body, &["metadata"]);
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(f);
        }
        meta.insert("uid".into(), json!(obj::new_uid()));
        meta.insert("creationTimestamp".into(), json!(obj::now()));
        if has_generation(kind) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if kind.status {
        if let Some(initial) = initial_status(kind) {
            obj::set(&mut body, &["status"], initial);
        }
    }
    match kind.kind {
        "PersistentVolumeClaim" => add_finalizer(&mut body, "kubernetes.io/pvc-protection"),
        "PersistentVolume" => add_finalizer(&mut body, "kubernetes.io/pv-protection"),
        _ => {}
    }
    admission::defaults(kind, &mut body, None, store);
    admission::validate(kind, &body, None, store)?;
    if dry_run {
        if store.get(kind, ns, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        return Ok(Arc::new(body));
    }
    store.insert(kind, body)
}

pub fn add_finalizer(o: &mut Value, f: &str) {
    let mut fs = obj::finalizers(o);
    if !fs.iter().any(|x| x == f) {
        fs.push(f.to_string());
        obj::set(o, &["metadata", "finalizers"], json!(fs));
    }
}

pub fn remove_finalizer(o: &mut Value, f: &str) -> bool {
    let fs = obj::finalizers(o);
    if !fs.iter().any(|x| x == f) {
        return false;
    }
    let rest: Vec<String> = fs.into_iter().filter(|x| x != f).collect();
    if rest.is_empty() {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("finalizers");
        }
    } else {
        obj::set(o, &["metadata", "finalizers"], json!(rest));
    }
    true
}

/// The `autoscaling/v1` Scale of a Deployment or StatefulSet.
pub fn scale_of(o: &Value) -> Value {
    let replicas = obj::i64_at(o, "/spec/replicas").unwrap_or(1);
    let selector = o
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_query())
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj::name(o), "namespace": obj::namespace(o), "uid": obj::uid(o),
            "resourceVersion": obj::resource_version(o),
            "creationTimestamp": o.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": obj::i64_at(o, "/status/replicas").unwrap_or(0), "selector": selector},
    })
}

/// Computes and stores the update of `current` to `new` (a full object of the addressed part).
fn update_from(
    store: &Store,
    kind: &'static Kind,
    current: &Arc<Value>,
    new: Value,
    sub: Sub,
    dry_run: bool,
) -> Result<Arc<Value>, ApiError> {
    let name = obj::name(current).to_string();
    let mut next = match sub {
        Sub::Status => {
            let mut c = (**current).clone();
            obj::set(
                &mut c,
                &["status"],
                new.get("status").cloned().unwrap_or(json!({})),
            );
            c
        }
        Sub::Scale => unreachable!("scale updates are turned into main updates by the caller"),
        Sub::Main => {
            let mut n = new;
            if !n.is_object() {
                return Err(ApiError::bad_request(
                    "the body of the request was not an object",
                ));
            }
            if kind.status {
                match current.get("status") {
                    Some(s) => obj::set(&mut n, &["status"], s.clone()),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        }
    };
    // Server-owned metadata comes from the stored object.
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match current.pointer(&format!("/metadata/{f}")) {
            Some(v) => obj::set(&mut next, &["metadata", f], v.clone()),
            None => {
                obj::map_at(&mut next, &["metadata"]).remove(f);
            }
        }
    }
    obj::set(&mut next, &["apiVersion"], json!(kind.api_version()));
    obj::set(&mut next, &["kind"], json!(kind.kind));
    // Removing finalizers is always allowed; adding them to an object being deleted is not.
    if obj::is_deleting(current) {
        let before = obj::finalizers(current);
        if obj::finalizers(&next).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                kind,
                &name,
                vec![super::error::Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    if sub == Sub::Main {
        admission::defaults(kind, &mut next, Some(current), store);
        admission::validate(kind, &next, Some(current), store)?;
        if has_generation(kind) && generation_part(kind, &next) != generation_part(kind, current) {
            let g = obj::i64_at(current, "/metadata/generation").unwrap_or(1);
            obj::set(&mut next, &["metadata", "generation"], json!(g + 1));
        }
    }
    obj::set(
        &mut next,
        &["metadata", "resourceVersion"],
        json!(obj::resource_version(current)),
    );
    if next == **current {
        return Ok(current.clone());
    }
    if dry_run {
        return Ok(Arc::new(next));
    }
    if obj::is_deleting(&next)
        && obj::finalizers(&next).is_empty()
        && kind.kind != "Pod"
        && kind.kind != "Namespace"
    {
        return store
            .remove(kind, obj::namespace(current), &name, obj::uid(current))
            .ok_or_else(|| ApiError::conflict(kind, &name));
    }
    store.replace(kind, next, obj::resource_version(current))
}

/// `PUT`: replaces an object (or its status/scale). A non-empty `metadata.resourceVersion` in the
/// body must match the stored one.
pub fn update(
    store: &Store,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    body: Value,
    sub: Sub,
    dry_run: bool,
) -> Result<Arc<Value>, ApiError> {
    if obj::name(&body) != name && !obj::name(&body).is_empty() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj::name(&body)
        )));
    }
    if kind.namespaced && !obj::namespace(&body).is_empty() && obj::namespace(&body) != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let current = store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    let body_rv = obj::resource_version(&body);
    if !body_rv.is_empty() && body_rv != obj::resource_version(&current) {
        return Err(ApiError::conflict(kind, name));
    }
    if sub == Sub::Scale {
        let replicas = obj::i64_at(&body, "/spec/replicas").unwrap_or(0);
        let mut next = (*current).clone();
        obj::set(&mut next, &["spec", "replicas"], json!(replicas));
        let updated = update_from(store, kind, &current, next, Sub::Main, dry_run)?;
        return Ok(Arc::new(scale_of(&updated)));
    }
    let mut body = body;
    obj::set(&mut body, &["metadata", "name"], json!(name));
    update_from(store, kind, &current, body, sub, dry_run)
}

/// `PATCH`. Returns the result and whether it created the object (server-side apply only).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &Store,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    pt: PatchType,
    body: &Value,
    sub: Sub,
    dry_run: bool,
) -> Result<(Arc<Value>, bool), ApiError> {
    for _ in 0..20 {
        let Some(current) = store.get(kind, ns, name) else {
            if pt == PatchType::Apply && sub == Sub::Main {
                let mut new = body.clone();
                obj::set(&mut new, &["metadata", "name"], json!(name));
                return create(store, kind, ns, new, dry_run).map(|o| (o, true));
            }
            return Err(ApiError::not_found(kind, name));
        };
        let base = if sub == Sub::Scale {
            scale_of(&current)
        } else {
            (*current).clone()
        };
        let patched = patch::apply(pt, &base, body)?;
        if obj::resource_version(&patched) != obj::resource_version(&base) {
            return Err(ApiError::conflict(kind, name));
        }
        if obj::name(&patched) != name {
            return Err(ApiError::bad_request(
                "metadata.name: Invalid value: the name of the object may not be changed by a patch",
            ));
        }
        let (next, next_sub) = if sub == Sub::Scale {
            let replicas = obj::i64_at(&patched, "/spec/replicas").unwrap_or(0);
            let mut n = (*current).clone();
            obj::set(&mut n, &["spec", "replicas"], json!(replicas));
            (n, Sub::Main)
        } else {
            (patched, sub)
        };
        match update_from(store, kind, &current, next, next_sub, dry_run) {
            // A controller wrote in between: re-read and re-apply, as the real server does.
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
            Ok(o) if sub == Sub::Scale => return Ok((Arc::new(scale_of(&o)), false)),
            Ok(o) => return Ok((o, false)),
        }
    }
    Err(ApiError::conflict(kind, name))
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from the store.
    Gone(Arc<Value>),
    /// Marked for deletion (finalizers, graceful pod termination, namespace termination).
    Pending(Arc<Value>),
}

/// `DELETE` of one object.
pub fn delete(
    store: &Store,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let current = store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    if let Some(uid) = &opts.precondition_uid {
        if uid != obj::uid(&current) {
            return Err(ApiError::conflict_msg(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj::uid(&current)
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        if rv != obj::resource_version(&current) {
            return Err(ApiError::conflict_msg(
                kind,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, \
                     ResourceVersion in object meta: {}",
                    obj::resource_version(&current)
                ),
            ));
        }
    }
    let propagation = opts.propagation.clone().unwrap_or_else(|| {
        if kind.kind == "Job" {
            "Orphan".into()
        } else {
            "Background".into()
        }
    });
    if !["Orphan", "Background", "Foreground"].contains(&propagation.as_str()) {
        return Err(ApiError::bad_request(format!(
            "DeleteOptions.propagationPolicy: Unsupported value: \"{propagation}\""
        )));
    }
    if kind.kind == "Namespace" && ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(ApiError::forbidden(
            kind,
            name,
            "this namespace may not be deleted",
        ));
    }
    let is_pod = kind.kind == "Pod";
    if obj::is_deleting(&current) {
        if is_pod && opts.grace_seconds == Some(0) && !opts.dry_run {
            if let Some(gone) = store.remove(kind, ns, name, obj::uid(&current)) {
                return Ok(Deleted::Gone(gone));
            }
        }
        return Ok(Deleted::Pending(current));
    }
    if opts.dry_run {
        return Ok(Deleted::Gone(current));
    }
    if propagation == "Orphan" {
        orphan_dependents(store, obj::uid(&current));
    }
    let mut next = (*current).clone();
    let mut pending = !obj::finalizers(&current).is_empty();
    if propagation == "Foreground" && has_dependents(store, obj::uid(&current)) {
        add_finalizer(&mut next, FOREGROUND);
        pending = true;
    }
    if kind.kind == "Namespace" {
        obj::set(&mut next, &["status", "phase"], json!("Terminating"));
        pending = true;
    }
    if is_pod {
        let scheduled = obj::str_at(&current, "/spec/nodeName").is_some_and(|n| !n.is_empty());
        let terminal = matches!(
            obj::str_at(&current, "/status/phase"),
            Some("Succeeded" | "Failed")
        );
        let grace = opts.grace_seconds.unwrap_or_else(|| {
            obj::i64_at(&current, "/spec/terminationGracePeriodSeconds").unwrap_or(30)
        });
        if scheduled && !terminal && grace > 0 {
            obj::set(
                &mut next,
                &["metadata", "deletionGracePeriodSeconds"],
                json!(grace),
            );
            pending = true;
        }
    }
    if pending {
        obj::set(
            &mut next,
            &["metadata", "deletionTimestamp"],
            json!(obj::now()),
        );
        let stored = store.replace(kind, next, obj::resource_version(&current))?;
        return Ok(Deleted::Pending(stored));
    }
    store
        .remove(kind, ns, name, obj::uid(&current))
        .map(Deleted::Gone)
        .ok_or_else(|| ApiError::not_found(kind, name))
}

fn has_dependents(store: &Store, uid: &str) -> bool {
    kinds::ALL
        .iter()
        .any(|k| store.list(k, None).iter().any(|o| obj::owned_by(o, uid)))
}

fn orphan_dependents(store: &Store, uid: &str) {
    for k in kinds::ALL.iter() {
        for o in store.list(k, None) {
            if obj::owned_by(&o, uid) {
                let _ = modify(store, k, obj::namespace(&o), obj::name(&o), |d| {
                    if let Some(Value::Array(refs)) = d.pointer_mut("/metadata/ownerReferences") {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                        if refs.is_empty() {
                            obj::map_at(d, &["metadata"]).remove("ownerReferences");
                        }
                    }
                });
            }
        }
    }
}

/// Changes a stored object in place (controllers): re-reads and retries on conflicts, skips
/// admission, and does not write when `f` changed nothing. Returns the stored object, `None` if
/// it does not exist.
pub fn modify(
    store: &Store,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    mut f: impl FnMut(&mut Value),
) -> Option<Arc<Value>> {
    for _ in 0..50 {
        let current = store.get(kind, ns, name)?;
        let mut next = (*current).clone();
        f(&mut next);
        if next == *current {
            return Some(current);
        }
        if obj::is_deleting(&next)
            && obj::finalizers(&next).is_empty()
            && kind.kind != "Pod"
            && kind.kind != "Namespace"
        {
            return store.remove(kind, ns, name, obj::uid(&current));
        }
        match store.replace(kind, next, obj::resource_version(&current)) {
            Ok(o) => return Some(o),
            Err(e) if e.reason == "Conflict" => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Records an Event about `involved` (deduplicated by reason and message; repeats bump count).
pub fn record_event(
    store: &Store,
    involved_kind: &Kind,
    involved: &Value,
    typ: &str,
    reason: &str,
    message: &str,
) {
    let ns = match obj::namespace(involved) {
        "" => "default",
        ns => ns,
    };
    let uid = obj::uid(involved);
    let existing = store.list(&kinds::EVENT, Some(ns)).into_iter().find(|e| {
        obj::str_at(e, "/involvedObject/uid") == Some(uid)
            && obj::str_at(e, "/reason") == Some(reason)
            && obj::str_at(e, "/message") == Some(message)
    });
    if let Some(e) = existing {
        modify(store, &kinds::EVENT, ns, obj::name(&e), |e| {
            let n = obj::i64_at(e, "/count").unwrap_or(1);
            obj::set(e, &["count"], json!(n + 1));
            obj::set(e, &["lastTimestamp"], json!(obj::now()));
        });
        return;
    }
    let now = obj::now();
    let event = json!({
        "metadata": {"name": format!("{}.{:x}", obj::name(involved), rand::random::<u64>()),
                     "namespace": ns},
        "involvedObject": {
            "apiVersion": involved_kind.api_version(), "kind": involved_kind.kind,
            "name": obj::name(involved), "namespace": obj::namespace(involved), "uid": uid,
        },
        "type": typ, "reason": reason, "message": message, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": "pgplan-simcluster"},
    });
    let _ = create(store, &kinds::EVENT, ns, event, false);
}
