//! The OpenAPI v3 documents kubectl reads before it writes: `/openapi/v3` (one entry per group
//! version) and `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`. kubectl asks them
//! whether a kind's PATCH takes the `fieldValidation` query parameter; when it does, kubectl
//! leaves validation to the server (`--validate=strict`, the default) instead of checking the
//! manifest against the schemas itself. So the documents list every served kind's paths and
//! operations with their parameters, and schemas only as open objects (the simulated server keeps
//! unknown fields anyway: see docs/testing.md). `/openapi/v2`, which kubectl before 1.27 reads
//! (as protobuf) for `apply`, is a document with no paths and no definitions: such a kubectl finds
//! no schema for any kind, so it skips its own validation and computes patches from its built-in
//! types.

use serde_json::{json, Map, Value};

use super::kinds::{Kind, ALL};

/// Changes when the documents do, so clients' caches (keyed by the URL) stay right.
const HASH: &str = "pgplan-sim-1";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`.
pub fn discovery() -> Value {
    let mut paths = Map::new();
    for k in ALL.iter() {
        let p = gv_path(k.group, k.version);
        paths.entry(p.clone()).or_insert_with(
            || json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
        );
    }
    json!({"paths": paths})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn schema_name(k: &Kind) -> String {
    let group = if k.group.is_empty() { "core" } else { k.group };
    format!("io.k8s.{group}.{}.{}", k.version, k.kind)
}

fn operation(k: &Kind, verb: &str, params: &[&str], body: Option<&[&str]>) -> Value {
    let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
    let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(k))});
    let mut op = json!({
        "operationId": format!("{verb}{}", k.kind),
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params.iter().map(|p| query(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
    });
    if let Some(types) = body {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": reference})))
            .collect();
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

/// The patch media types a kind takes (custom resources: no strategic merge, as real).
fn patch_types(k: &Kind) -> Vec<&'static str> {
    let mut types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if k.kind != "Backstage" {
        types.push("application/strategic-merge-patch+json");
    }
    types
}

/// `GET /openapi/v3/api/v1` or `GET /openapi/v3/apis/{group}/{version}`.
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = ALL
        .iter()
        .copied()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for k in &kinds {
        let base = format!("/{}", gv_path(k.group, k.version));
        let collection = if k.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{base}/{}", k.plural)
        };
        let mut scope = vec![];
        if k.namespaced {
            scope.push(path_param("namespace"));
        }
        let writes = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        let patch_params = [
            "dryRun",
            "fieldManager",
            "fieldValidation",
            "force",
            "pretty",
        ];
        let json_only: &[&str] = &["application/json"];
        paths.insert(
            collection.clone(),
            json!({
                "parameters": scope.clone(),
                "get": operation(k, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"], None),
                "post": operation(k, "post", &writes, Some(json_only)),
                "delete": operation(k, "deletecollection", &["labelSelector", "fieldSelector", "dryRun"], None),
            }),
        );
        let mut item_scope = scope;
        item_scope.push(path_param("name"));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "parameters": item_scope,
                "get": operation(k, "get", &["pretty"], None),
                "put": operation(k, "put", &writes, Some(json_only)),
                "patch": operation(k, "patch", &patch_params, Some(&patch_types(k))),
                "delete": operation(k, "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"], None),
            }),
        );
        schemas.insert(
            schema_name(k),
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": k.group, "version": k.version, "kind": k.kind}],
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                },
                "x-kubernetes-preserve-unknown-fields": true,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (pgplan simulated API server)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The empty Swagger 2.0 document, as JSON.
pub fn v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}})
}

/// The same document as protobuf (gnostic's `openapi_v2.Document`: `swagger` is field 1, `info`
/// field 2 with `title` 1 and `version` 2), which is what kubectl asks for.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        // Length-delimited (wire type 2); every length here is below 128, one varint byte.
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    let info = [field(1, b"Kubernetes"), field(2, b"v1.33.0")].concat();
    [field(1, b"2.0"), field(2, &info)].concat()
}
