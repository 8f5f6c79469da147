//! The JSON plan, for machines and for saved plans (`plan --out FILE`).
//!
//! The format is versioned (`format_version`) and documented in
//! `docs/output.md`. Keys are snake_case, as in Terraform's JSON plan, and
//! appear in a fixed order; nothing depends on the clock or the process, so
//! the same plan always gives the same bytes and `apply FILE` can compare a
//! saved plan with a fresh one.
//!
//! `before`, `after` and the payloads of an operation (manifests, patches,
//! label selectors, tags) are the objects themselves and keep their own
//! keys; every key pgplan itself defines is written in snake_case.

use serde_json::{json, Map, Value};

use super::summary_line;
use crate::plan::{Plan, Step, PLAN_FORMAT_VERSION};

/// Keys whose values are foreign objects (Kubernetes manifests, merge
/// patches, label selectors, AWS tags) and are written exactly as they are.
const VERBATIM: &[&str] = &["manifest", "before", "after", "patch", "selector", "tags"];

pub(super) fn render(plan: &Plan) -> String {
    // Serialising values with string keys cannot fail. The document is
    // streamed: each step becomes a `Value` only while it is written, so a
    // plan of thousands of steps is not held twice.
    let mut out = serde_json::to_string_pretty(&Streamed(plan)).unwrap_or_default();
    out.push('\n');
    out
}

/// The document of `document()`, serialised step by step.
struct Streamed<'a>(&'a Plan);

struct Steps<'a>(&'a Plan);

impl serde::Serialize for Steps<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = ser.serialize_seq(Some(self.0.steps.len()))?;
        for (i, s) in self.0.steps.iter().enumerate() {
            seq.serialize_element(&step(i + 1, s))?;
        }
        seq.end()
    }
}

impl serde::Serialize for Streamed<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // Everything but the steps is small: build it as a value.
        let head = document(&Plan {
            placements: self.0.placements.clone(),
            steps: Vec::new(),
            fingerprints: self.0.fingerprints.clone(),
            warnings: self.0.warnings.clone(),
            unfinished: self.0.unfinished.clone(),
            findings: self.0.findings.clone(),
        });
        let mut map = ser.serialize_map(None)?;
        if let Value::Object(fields) = &head {
            for (k, v) in fields.iter() {
                if k == "steps" {
                    map.serialize_entry(k, &Steps(self.0))?;
                } else if k == "summary" {
                    map.serialize_entry(k, &summary(self.0))?;
                } else {
                    map.serialize_entry(k, v)?;
                }
            }
        }
        map.end()
    }
}

/// The JSON plan as a value.
pub(super) fn document(plan: &Plan) -> Value {
    let mut doc = json!({
        "format_version": PLAN_FORMAT_VERSION,
        "pgplan_version": env!("CARGO_PKG_VERSION"),
        "placements": plan.placements.iter().map(|pp| json!({
            "name": pp.name,
            "environment": pp.environment,
            "journey": pp.journey,
            "databases": pp.databases.iter().map(|d| json!({
                "name": d.name,
                "owner": d.owner,
                "size_bytes": d.size_bytes,
                "tables": d.tables,
                "rows": d.rows,
                "fingerprint": d.fingerprint,
            })).collect::<Vec<_>>(),
            "downtime": pp.downtime.map(|(first, last)| json!({
                "first_step": first,
                "last_step": last,
            })),
        })).collect::<Vec<_>>(),
        "steps": plan.steps.iter().enumerate().map(|(i, s)| step(i + 1, s)).collect::<Vec<_>>(),
        "summary": summary(plan),
        "fingerprints": plan.fingerprints,
        "warnings": plan.warnings,
    });
    // Only present when there is one, so that plans of a quiet world keep
    // their exact bytes.
    if !plan.unfinished.is_empty() {
        if let Some(o) = doc.as_object_mut() {
            o.insert("unfinished_applies".into(), unfinished(plan));
        }
    }
    if !plan.findings.is_empty() {
        if let Some(o) = doc.as_object_mut() {
            o.insert(
                "findings".into(),
                plan.findings
                    .iter()
                    .map(|f| {
                        json!({
                            "code": f.code,
                            "severity": f.severity.as_str(),
                            "placement": f.placement,
                            "object": f.object,
                            "message": f.message,
                            "help": f.help,
                            "accepted": f.accepted,
                            "blocks_apply": f.blocks(),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
    }
    doc
}

fn unfinished(plan: &Plan) -> Value {
    plan.unfinished
        .iter()
        .map(|u| {
            let v = serde_json::to_value(u)
                .map(|v| snake_keys(&v))
                .unwrap_or(Value::Null);
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                o.insert("summary".into(), json!(super::unfinished_headline(u)));
                o.insert("details".into(), json!(super::unfinished_details(u)));
            }
            v
        })
        .collect()
}

fn summary(plan: &Plan) -> Value {
    let s = plan.summary();
    json!({
        "add": s.add,
        "change": s.change,
        "destroy": s.destroy,
        "run": s.run,
        "databases": s.databases,
        "bytes": s.bytes,
        "has_changes": plan.has_changes(),
        "line": summary_line(plan),
    })
}

fn step(position: usize, s: &Step) -> Value {
    let operation = serde_json::to_value(&s.operation)
        .map(|v| snake_keys(&v))
        .unwrap_or(Value::Null);
    let mut out = json!({
        "position": position,
        "address": s.address,
        "placement": s.placement,
        "actions": s.action.json_actions(),
        "risk": s.risk.as_str(),
        "summary": s.summary,
        "reason": s.reason,
        "depends_on": s.depends_on,
        "in_downtime": s.in_downtime,
        "before": s.before,
        "after": s.after,
        "operation": operation,
    });
    // Only steps with warnings have the key, so plans without any keep
    // the shape they always had.
    if !s.warnings.is_empty() {
        out["warnings"] = Value::Array(
            s.warnings
                .iter()
                .map(|w| {
                    json!({
                        "code": w.code.as_str(),
                        "message": w.message,
                        "help": w.help,
                        "blocks_apply": w.blocks_apply,
                    })
                })
                .collect(),
        );
    }
    out
}

/// The plan a JSON document describes: the inverse of [`render`], for
/// `pgplan show FILE`. Derived fields (`position`, `summary`, the versions,
/// which the caller checks) are dropped; the rest is read back through the
/// plan's own serde types, every pgplan key in camelCase again.
pub(super) fn read(doc: &Value) -> Result<Plan, String> {
    let field = |key: &str| {
        doc.get(key)
            .ok_or_else(|| format!("the plan has no `{key}`"))
    };
    let placements = field("placements")?
        .as_array()
        .ok_or("`placements` is not a list")?
        .iter()
        .map(|pp| {
            let mut v = camel_keys(pp);
            if let Some(d) = v.get_mut("downtime") {
                if !d.is_null() {
                    *d = json!([d["firstStep"], d["lastStep"]]);
                }
            }
            from_value(v, "a placement")
        })
        .collect::<Result<Vec<_>, String>>()?;
    let steps = field("steps")?
        .as_array()
        .ok_or("`steps` is not a list")?
        .iter()
        .map(read_step)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Plan {
        placements,
        steps,
        fingerprints: from_value(field("fingerprints")?.clone(), "`fingerprints`")?,
        warnings: from_value(field("warnings")?.clone(), "`warnings`")?,
        // A plan blocked by an unfinished apply is never saved, so a saved
        // plan has none to read back.
        unfinished: Vec::new(),
        findings: match doc.get("findings") {
            Some(v) => v
                .as_array()
                .ok_or("`findings` is not a list")?
                .iter()
                .map(read_finding)
                .collect::<Result<Vec<_>, String>>()?,
            None => Vec::new(),
        },
    })
}

fn read_finding(v: &Value) -> Result<crate::plan::Finding, String> {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("blocks_apply");
    }
    from_value(v, "a finding")
}

fn read_step(v: &Value) -> Result<Step, String> {
    let Value::Object(fields) = v else {
        return Err("a step is not an object".into());
    };
    let mut out = Map::with_capacity(fields.len());
    for (k, v) in fields {
        match k.as_str() {
            "position" => {}
            "actions" => {
                let names: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let action = match names.as_slice() {
                    ["delete", "create"] => "replace",
                    [one] => one,
                    _ => return Err(format!("a step has the actions {v}")),
                };
                out.insert("action".into(), Value::String(action.into()));
            }
            _ if VERBATIM.contains(&k.as_str()) => {
                out.insert(camel_case(k), v.clone());
            }
            _ => {
                out.insert(camel_case(k), camel_keys(v));
            }
        }
    }
    let address = fields.get("address").cloned().unwrap_or(Value::Null);
    from_value(Value::Object(out), &format!("step {address}"))
}

fn from_value<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what} cannot be read: {e}"))
}

/// The inverse of [`snake_keys`].
fn camel_keys(v: &Value) -> Value {
    rename_keys(v, camel_case)
}

/// `backup_step` → `backupStep`.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A copy with every object key in snake_case, except inside the values
/// of [`VERBATIM`] keys.
fn snake_keys(v: &Value) -> Value {
    rename_keys(v, snake_case)
}

/// A copy with every object key renamed, except inside the values of
/// [`VERBATIM`] keys (foreign objects keep their own keys).
fn rename_keys(v: &Value, rename: fn(&str) -> String) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if VERBATIM.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        rename_keys(v, rename)
                    };
                    (rename(k), v)
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|x| rename_keys(x, rename)).collect()),
        other => other.clone(),
    }
}

/// `backupStep` → `backup_step`; keys already in snake_case are unchanged.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_snake_case_but_manifests_stay() {
        let v = json!({
            "type": "create",
            "object": {"apiVersion": "v1", "kind": "Service"},
            "manifest": {"apiVersion": "v1", "spec": {"clusterIP": "None"}},
            "expect_rows": 3,
            "selector": {"app.kubernetes.io/name": "pg", "someLabel": "x"},
        });
        assert_eq!(
            snake_keys(&v),
            json!({
                "type": "create",
                "object": {"api_version": "v1", "kind": "Service"},
                "manifest": {"apiVersion": "v1", "spec": {"clusterIP": "None"}},
                "expect_rows": 3,
                "selector": {"app.kubernetes.io/name": "pg", "someLabel": "x"},
            })
        );
    }
}
