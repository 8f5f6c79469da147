//! The four patch types of `PATCH` requests, applied to an object's JSON:
//!
//! - JSON merge patch (RFC 7386) and JSON patch (RFC 6902), exactly, via the `json-patch` crate;
//! - strategic merge patch, approximated: maps merge recursively and `null` deletes, as in a merge
//!   patch; lists whose Kubernetes patch strategy is "merge" (containers and initContainers by
//!   `name`, env by `name`, volumes by `name`, volumeMounts by `mountPath`, ports by
//!   `containerPort`/`port`, volumeClaimTemplates by `metadata.name`, imagePullSecrets by `name`,
//!   tolerations/finalizers append-unique) merge element-wise by that key; every other list is
//!   replaced. The directives `$patch: delete|replace` on list elements and maps are honoured;
//!   `$setElementOrder/…`, `$retainKeys` and `$deleteFromPrimitiveList/…` are dropped.
//! - server-side apply (`application/apply-patch+yaml`), approximated as a strategic merge of the
//!   applied configuration onto the live object (no field ownership, no conflicts).

use serde_json::{Map, Value};

use super::error::ApiError;

/// The patch types kube can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Parses a patch body (JSON; YAML for apply).
pub fn parse_body(pt: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if pt == PatchType::Apply => serde_yaml_ng::from_slice::<Value>(body)
            .map_err(|y| ApiError::bad_request(format!("error decoding YAML: {y} ({e})"))),
        Err(e) => Err(ApiError::bad_request(format!("error decoding patch: {e}"))),
    }
}

/// Applies `patch` of type `pt` to `doc`, returning the patched document.
pub fn apply(pt: PatchType, doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    match pt {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut out, patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch::patch(&mut out, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(&mut out, patch);
        }
    }
    Ok(out)
}

/// The merge key of a list field under strategic merge, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases"
        | "conditions"
        | "readinessGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "volumeClaimTemplates" => Some("metadata.name"),
        _ => None,
    }
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    let mut cur = item;
    for seg in key.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn port_key(item: &Value) -> Option<Value> {
    item.get("containerPort")
        .or_else(|| item.get("port"))
        .cloned()
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for child in m.values_mut() {
                strip_directives(child);
            }
        }
        Value::Array(a) => {
            for child in a {
                strip_directives(child);
            }
        }
        _ => {}
    }
}

fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *doc = patch.clone();
        strip_directives(doc);
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        strip_directives(&mut replaced);
        *doc = replaced;
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dmap = doc.as_object_mut().expect("made an object just above");
    for (k, pv) in pmap {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            dmap.remove(k);
            continue;
        }
        match (dmap.get_mut(k), pv) {
            (Some(dv @ Value::Object(_)), Value::Object(_)) => strategic_merge(dv, pv),
            (Some(Value::Array(da)), Value::Array(pa)) => {
                merge_list(da, pa, k);
            }
            (_, _) => {
                let mut v = pv.clone();
                if let Value::Array(items) = &mut v {
                    items.retain(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"));
                }
                strip_directives(&mut v);
                dmap.insert(k.clone(), v);
            }
        }
    }
}

fn merge_list(doc: &mut Vec<Value>, patch: &[Value], field: &str) {
    if field == "ports" {
        return merge_by(doc, patch, port_key);
    }
    if field == "finalizers" || field == "tolerations" {
        for p in patch {
            if !doc.contains(p) {
                doc.push(p.clone());
            }
        }
        return;
    }
    match merge_key(field) {
        Some(key) if patch.iter().all(Value::is_object) => {
            merge_by(doc, patch, |i| key_of(i, key).cloned())
        }
        _ => {
            let mut items: Vec<Value> = patch.to_vec();
            for i in &mut items {
                strip_directives(i);
            }
            *doc = items;
        }
    }
}

fn merge_by(doc: &mut Vec<Value>, patch: &[Value], key: impl Fn(&Value) -> Option<Value>) {
    for p in patch {
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        let pk = key(p);
        let pos = pk
            .as_ref()
            .and_then(|pk| doc.iter().position(|d| key(d).as_ref() == Some(pk)));
        match (pos, delete) {
            (Some(i), true) => {
                doc.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut doc[i], p),
            (None, false) => {
                let mut v = p.clone();
                strip_directives(&mut v);
                doc.push(v);
            }
        }
    }
}
