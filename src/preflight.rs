//! Preflight: risks the live world shows before a byte moves, as findings
//! in the plan, each with a stable code (`pgplan::preflight::…`), a
//! severity (an error blocks apply; a warning is shown), the object it is
//! about and what to do. A finding the spec accepts (`preflight.accept`,
//! by code and object) is still listed, and no longer blocks.
//!
//! Part of the core: it reads the observed state and the spec, no IO.
//! docs/preflight.md lists every code.

use serde_json::Value;

use crate::observed::{labels, str_at, Index, ServerInventory, Session};
use crate::plan::{Finding, Severity};
use crate::spec::{Placement, Source};

/// A client connected to a database the plan moves whose pod is not the
/// source's and belongs to no listed consumer.
pub const UNLISTED_CLIENT: &str = "pgplan::preflight::unlisted-client";

/// Every code, for docs and the spec's `accept` list.
pub const CODES: &[&str] = &[UNLISTED_CLIENT];

/// The short form of a code in the spec (`unlisted-client`).
pub fn short(code: &str) -> &str {
    code.strip_prefix("pgplan::preflight::").unwrap_or(code)
}

/// Addresses a session from inside the server's own pod comes from.
fn in_the_pod(address: &str) -> bool {
    matches!(address, "127.0.0.1" | "::1" | "")
}

/// The workload a pod belongs to, as `(kind, name)`: its controller, a
/// ReplicaSet read as the Deployment it is named after (`{deployment}-{pod-template-hash}`).
fn owner_of(pod: &Value) -> Option<(String, String)> {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?;
    let owner = owners
        .iter()
        .find(|o| o.get("controller") == Some(&Value::Bool(true)))
        .or(owners.first())?;
    let kind = owner.get("kind")?.as_str()?;
    let name = owner.get("name")?.as_str()?;
    if kind == "ReplicaSet" {
        if let Some(hash) = labels(pod).get("pod-template-hash") {
            if let Some(d) = name.strip_suffix(&format!("-{hash}")) {
                return Some(("Deployment".into(), d.to_string()));
            }
        }
    }
    Some((kind.to_string(), name.to_string()))
}

/// Whether the spec accepts `code` for `object` (`Kind/name` or an address).
fn accepted(p: &Placement, code: &str, object: &str) -> bool {
    p.spec()
        .preflight
        .accept
        .iter()
        .any(|a| short(&a.code) == short(code) && a.object == object)
}

/// Sessions on the source server from clients the move does not stop:
/// they would go on writing while the data moves, and what they write
/// after the backup is lost.
pub fn unlisted_clients(
    p: &Placement,
    idx: &Index<'_>,
    source: &ServerInventory,
    moved: &[String],
) -> Vec<Finding> {
    let Source::Kubernetes(src) = &p.spec().source else {
        return Vec::new();
    };
    let source_kind = src.workload.kind.as_str();
    let source_name = source.locator.rsplit('/').next().unwrap_or_default();
    let consumers: Vec<(String, String, String)> = p
        .spec()
        .consumers
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                c.name.clone(),
                c.namespace.clone().unwrap_or_else(|| src.namespace.clone()),
            )
        })
        .collect();
    // Deployments a listed custom resource owns (an operator's workload).
    let owned_by_consumer = |ns: &str, kind: &str, name: &str| {
        idx.get(kind, ns, name).is_some_and(|w| {
            w.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|os| {
                    os.iter().any(|o| {
                        consumers.iter().any(|(ck, cn, cns)| {
                            cns == ns
                                && o.get("kind").and_then(Value::as_str) == Some(ck)
                                && o.get("name").and_then(Value::as_str) == Some(cn)
                        })
                    })
                })
        })
    };
    let pods: Vec<&Value> = idx
        .all()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pod"))
        .collect();
    let mut out: Vec<Finding> = Vec::new();
    for s in &source.sessions {
        if in_the_pod(&s.address) || !moved.contains(&s.database) {
            continue;
        }
        let pod = pods
            .iter()
            .find(|p| str_at(p, &["status", "podIP"]) == Some(s.address.as_str()));
        let (object, who) = match pod {
            Some(pod) => {
                let ns = str_at(pod, &["metadata", "namespace"]).unwrap_or("default");
                let name = str_at(pod, &["metadata", "name"]).unwrap_or("?");
                match owner_of(pod) {
                    Some((kind, owner)) => {
                        let listed = consumers
                            .iter()
                            .any(|(ck, cn, cns)| *ck == kind && *cn == owner && cns == ns)
                            || owned_by_consumer(ns, &kind, &owner);
                        let own = kind == source_kind && owner == source_name;
                        if listed || own {
                            continue;
                        }
                        (
                            format!("{kind}/{owner}"),
                            format!("pod {ns}/{name} ({kind} {owner})"),
                        )
                    }
                    None => (format!("Pod/{name}"), format!("pod {ns}/{name}")),
                }
            }
            None => (
                s.address.clone(),
                format!(
                    "a client at {} (no pod pgplan read has that address)",
                    s.address
                ),
            ),
        };
        if let Some(f) = out.iter_mut().find(|f| f.object == object) {
            if !f.message.contains(&format!("`{}`", s.database)) {
                f.message = f.message.replacen(
                    " is connected to ",
                    &format!(" is connected to `{}` and ", s.database),
                    1,
                );
            }
            continue;
        }
        out.push(unlisted(p, &object, &who, s));
    }
    out
}

fn unlisted(p: &Placement, object: &str, who: &str, s: &Session) -> Finding {
    let user = if s.user.is_empty() {
        String::new()
    } else {
        format!(" as `{}`", s.user)
    };
    let app = if s.application.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.application)
    };
    Finding {
        code: UNLISTED_CLIENT.into(),
        severity: Severity::Error,
        placement: p.name().to_string(),
        object: object.to_string(),
        message: format!(
            "{who} is connected to `{}`{user}{app} and is not a listed consumer: it would go on writing while the data moves, and what it writes after the backup is lost",
            s.database
        ),
        help: format!(
            "list its workload under `consumers` (pgplan stops it around the move and starts it again), stop it, or accept the risk: `preflight: {{accept: [{{code: {}, object: {object}}}]}}`",
            short(UNLISTED_CLIENT)
        ),
        accepted: accepted(p, UNLISTED_CLIENT, object),
    }
}
