//! Consumers: finding them, stopping them while data moves, pointing them at
//! the new server, and starting them again.

use serde_json::{json, Value};

use super::manifests::{diff_patch, field_patch, get_field, merge_patch, secret_display, shown};
use super::Ctx;
use crate::addr::Phase;
use crate::observed::{at, str_at};
use crate::plan::{Action, ObjectRef, Operation, Risk, ScalePurpose, SecretContents, ServerRef};
use crate::spec::Consumer;

pub use crate::plan::QUIESCED_ANNOTATION;

pub(super) struct ConsumerFacts<'a> {
    pub spec: &'a Consumer,
    pub object: ObjectRef,
    pub manifest: &'a Value,
    pub current: u32,
    /// Replicas to return to when resuming.
    pub original: u32,
    /// At zero replicas with pgplan's annotation: an earlier apply stopped
    /// it and did not get to start it again.
    pub stopped_by_pgplan: bool,
}

pub(super) fn resolve<'a>(cx: &mut Ctx<'a>, default_namespace: &str) -> Vec<ConsumerFacts<'a>> {
    let mut out = Vec::new();
    for (index, c) in cx.p.spec().consumers.iter().enumerate() {
        let ns = c
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string());
        let api_version = c
            .api_version
            .clone()
            .unwrap_or_else(|| "apps/v1".to_string());
        let object = ObjectRef::new(&api_version, &c.kind, &ns, &c.name);
        if super::apis::consumer_unserved(cx, index, c, &api_version) {
            continue;
        }
        let Some(manifest) = cx.idx.get(&c.kind, &ns, &c.name) else {
            let i = index.to_string();
            cx.error(
                &["consumers", &i, "name"],
                "pgplan::plan::consumer-missing",
                format!("consumer {} was not found", object.display()),
                "check the name and namespace, or remove the consumer",
            );
            continue;
        };
        cx.read(manifest);
        let current = match c.replicas_field() {
            Some(f) if !c.is_workload() => {
                get_field(manifest, f).and_then(Value::as_u64).unwrap_or(1) as u32
            }
            _ => at(manifest, &["spec", "replicas"])
                .and_then(Value::as_u64)
                .unwrap_or(1) as u32,
        };
        let remembered = str_at(manifest, &["metadata", "annotations", QUIESCED_ANNOTATION])
            .and_then(|v| v.parse::<u32>().ok());
        let original = match remembered {
            Some(r) if current == 0 => r,
            _ => current,
        };
        out.push(ConsumerFacts {
            spec: c,
            object,
            manifest,
            current,
            original,
            stopped_by_pgplan: current == 0 && remembered.is_some(),
        });
    }
    out
}

fn replicas_patch(c: &ConsumerFacts<'_>, to: u32) -> (Option<String>, Value) {
    match c.spec.replicas_field() {
        Some(f) if !c.spec.is_workload() => (Some(f.to_string()), field_patch(f, json!(to))),
        _ => (None, json!({"spec": {"replicas": to}})),
    }
}

/// Scale every quiescing consumer to zero; returns the step addresses.
/// `first`: steps that must be done before, so consumers stop as late as
/// possible (e.g. an RDS instance that takes minutes to create).
pub(super) fn quiesce(
    cx: &mut Ctx<'_>,
    consumers: &[ConsumerFacts<'_>],
    first: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for c in consumers.iter().filter(|c| c.spec.quiesce && c.current > 0) {
        let (field, patch) = replicas_patch(c, 0);
        let mut after = shown(c.manifest);
        merge_patch(&mut after, &patch);
        let mut s = cx.step(
            c.object.address_at(Phase::Quiesce),
            Action::Update,
            Risk::Disruptive,
            Operation::Scale {
                object: c.object.clone(),
                from: c.original,
                to: 0,
                purpose: ScalePurpose::Quiesce,
                field,
            },
            format!("stop {} ({} → 0 replicas)", c.object.display(), c.original),
            "a consumer writing during the copy would lose those writes; it is stopped first and its replica count remembered".into(),
        );
        s.depends_on = first.to_vec();
        s.before = Some(shown(c.manifest));
        s.after = Some(after);
        out.push(cx.push(s));
    }
    out
}

/// Return consumers to their replica count: those this plan stops
/// (`moving`) and those an earlier, interrupted apply left stopped.
pub(super) fn resume(
    cx: &mut Ctx<'_>,
    consumers: &[ConsumerFacts<'_>],
    deps: &[String],
    moving: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in consumers
        .iter()
        .filter(|c| c.spec.quiesce && c.original > 0 && (moving || c.stopped_by_pgplan))
    {
        let (field, patch) = replicas_patch(c, c.original);
        let mut before = shown(c.manifest);
        merge_patch(&mut before, &replicas_patch(c, 0).1);
        let mut after = before.clone();
        merge_patch(&mut after, &patch);
        let mut s = cx.step(
            c.object.address_at(Phase::Resume),
            Action::Update,
            Risk::Safe,
            Operation::Scale {
                object: c.object.clone(),
                from: 0,
                to: c.original,
                purpose: ScalePurpose::Resume,
                field,
            },
            format!(
                "start {} again (0 → {} replicas)",
                c.object.display(),
                c.original
            ),
            "the data is verified on the target; the consumer comes back".into(),
        );
        s.depends_on = deps.to_vec();
        s.before = Some(before);
        s.after = Some(after);
        out.push(cx.push(s));
    }
    out
}

/// What consumers are pointed at.
pub(super) struct Connection<'a> {
    pub server: ServerRef,
    /// Host and port consumers use (a cluster DNS name or the RDS endpoint);
    /// `None` while the RDS instance does not exist yet.
    pub host: Option<String>,
    pub port: u16,
    pub user: String,
    pub password_var: Option<String>,
    pub ca: Option<(&'a str, String)>,
}

/// The Secrets consumers will read (connection, CA). They only need the
/// target to exist, so they are written before anything stops.
pub(super) fn secrets(
    cx: &mut Ctx<'_>,
    consumers: &[ConsumerFacts<'_>],
    conn: &Connection<'_>,
    deps: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for c in consumers {
        let Some(r) = &c.spec.reconfigure else {
            continue;
        };
        let ns = c.object.namespace.clone();
        if let Some(name) = &r.connection_secret {
            let password = conn
                .password_var
                .as_deref()
                .and_then(|v| (cx.inputs.env)(v));
            let port = conn.port.to_string();
            // Passwords are read at apply: without the variable now, the
            // live Secret cannot be compared, and the step says so.
            let pending = match (&conn.host, conn.password_var.as_deref(), &password) {
                (Some(_), Some(var), None) => Some(format!(
                    "POSTGRES_PASSWORD is read from `${{{var}}}` at apply and the data compared then"
                )),
                _ => None,
            };
            let desired = match (&conn.host, password) {
                (Some(host), Some(pw)) => Some(crate::observed::secret_fingerprint([
                    ("POSTGRES_HOST", host.as_bytes()),
                    ("POSTGRES_PASSWORD", pw.as_bytes()),
                    ("POSTGRES_PORT", port.as_bytes()),
                    ("POSTGRES_USER", conn.user.as_bytes()),
                ])),
                _ => None,
            };
            let keys = [
                "POSTGRES_HOST",
                "POSTGRES_PORT",
                "POSTGRES_USER",
                "POSTGRES_PASSWORD",
            ];
            let contents = SecretContents::Connection {
                server: conn.server.clone(),
            };
            let reason = "consumers read the new server's address and login from this Secret";
            out.extend(secret_step(
                cx,
                name,
                &ns,
                &keys,
                contents,
                (desired, pending),
                reason,
                deps,
            ));
        }
        if let (Some(ca), Some((ca_file, content))) = (&r.ca_secret, &conn.ca) {
            let desired =
                crate::observed::secret_fingerprint([(ca.key.as_str(), content.as_bytes())]);
            let contents = SecretContents::CaCertificate {
                key: ca.key.clone(),
                ca_file: (*ca_file).to_string(),
            };
            let reason = "consumers verify the server's certificate with this CA (TLS verify-full)";
            out.extend(secret_step(
                cx,
                &ca.name,
                &ns,
                &[ca.key.as_str()],
                contents,
                (Some(desired), None),
                reason,
                &[],
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The change pointing each consumer that has `reconfigure` at the target.
pub(super) fn reconfigure(
    cx: &mut Ctx<'_>,
    consumers: &[ConsumerFacts<'_>],
    deps: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for c in consumers {
        let Some(r) = &c.spec.reconfigure else {
            continue;
        };
        let patch = consumer_patch(c);
        let mut after = shown(c.manifest);
        merge_patch(&mut after, &patch);
        let Some(effective) = diff_patch(&shown(c.manifest), &after) else {
            continue;
        };
        let mut s = cx.step(
            c.object.address_at(Phase::Reconfigure),
            Action::Update,
            Risk::Disruptive,
            Operation::Patch {
                object: c.object.clone(),
                patch: effective,
            },
            format!("point {} at the new server", c.object.display()),
            match (c.spec.is_backstage(), r.merge_patch.is_some()) {
            (true, false) => "the Backstage operator stops its local database when `enableLocalDb` is false and mounts the connection and CA Secrets".into(),
            _ => "the consumer must use the verified target from now on".into(),
        },
        );
        s.depends_on = deps.to_vec();
        s.before = Some(shown(c.manifest));
        s.after = Some(after);
        out.push(cx.push(s));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn secret_step(
    cx: &mut Ctx<'_>,
    name: &str,
    namespace: &str,
    keys: &[&str],
    contents: SecretContents,
    (desired, pending): (Option<String>, Option<String>),
    reason: &str,
    deps: &[String],
) -> Option<String> {
    let object = ObjectRef::new("v1", "Secret", namespace, name);
    let address = object.address();
    if cx.has_step(&address) {
        return Some(address);
    }
    let live = cx.idx.get("Secret", namespace, name);
    let live_fp = live.and_then(|l| {
        str_at(
            l,
            &[
                "metadata",
                "annotations",
                crate::observed::FINGERPRINT_ANNOTATION,
            ],
        )
    });
    let action = match (live, &desired) {
        (None, _) => Action::Create,
        (Some(_), Some(d)) if live_fp == Some(d.as_str()) => {
            if let Some(l) = live {
                cx.read(l);
            }
            return None;
        }
        (Some(_), _) => Action::Update,
    };
    match live {
        Some(l) => cx.read(l),
        None => cx.read_absent(address.clone()),
    }
    let mut summary = format!(
        "{} {} (keys {})",
        if action == Action::Create {
            "create"
        } else {
            "update"
        },
        object.display(),
        keys.join(", ")
    );
    if let (Action::Update, Some(pending)) = (action, &pending) {
        summary = format!("{summary} if its data differs: {pending}");
    }
    let mut s = cx.step(
        address,
        action,
        Risk::Safe,
        Operation::Secret {
            object: object.clone(),
            contents,
            fingerprint: desired.unwrap_or_else(|| "resolved at apply".into()),
        },
        summary,
        reason.into(),
    );
    s.depends_on = deps.to_vec();
    s.before = live.map(shown);
    s.after = Some(secret_display(cx.p, name, namespace, keys));
    Some(cx.push(s))
}

/// The merge patch pointing one consumer at the new server.
fn consumer_patch(c: &ConsumerFacts<'_>) -> Value {
    let Some(r) = &c.spec.reconfigure else {
        return json!({});
    };
    if !c.spec.is_workload() {
        if let Some(p) = &r.merge_patch {
            return p.clone();
        }
        if c.spec.is_backstage() {
            return backstage_patch(c.manifest, r);
        }
        return json!({});
    }
    // Deployments and StatefulSets: envFrom the connection Secret, the CA
    // mounted and named by PGSSLROOTCERT, plus the spec's plain env.
    let mut template = at(c.manifest, &["spec", "template", "spec"])
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(Value::Array(containers)) = template.get_mut("containers") {
        for container in containers.iter_mut() {
            if let Some(name) = &r.connection_secret {
                let list = container
                    .as_object_mut()
                    .map(|o| o.entry("envFrom").or_insert_with(|| json!([])));
                if let Some(Value::Array(list)) = list {
                    let entry = json!({"secretRef": {"name": name}});
                    if !list.contains(&entry) {
                        list.push(entry);
                    }
                }
            }
            let mut env_adds: Vec<(String, String)> =
                r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if let Some(ca) = &r.ca_secret {
                env_adds.push(("PGSSLROOTCERT".into(), format!("/etc/pgplan/ca/{}", ca.key)));
                env_adds.push(("PGSSLMODE".into(), "verify-full".into()));
                let mounts = container
                    .as_object_mut()
                    .map(|o| o.entry("volumeMounts").or_insert_with(|| json!([])));
                if let Some(Value::Array(mounts)) = mounts {
                    let m = json!({"name": "pgplan-ca", "mountPath": "/etc/pgplan/ca", "readOnly": true});
                    if !mounts.contains(&m) {
                        mounts.push(m);
                    }
                }
            }
            if !env_adds.is_empty() {
                let env = container
                    .as_object_mut()
                    .map(|o| o.entry("env").or_insert_with(|| json!([])));
                if let Some(Value::Array(env)) = env {
                    for (k, v) in env_adds {
                        env.retain(|e| str_at(e, &["name"]) != Some(k.as_str()));
                        env.push(json!({"name": k, "value": v}));
                    }
                }
            }
        }
    }
    if let Some(ca) = &r.ca_secret {
        let vols = template
            .as_object_mut()
            .map(|o| o.entry("volumes").or_insert_with(|| json!([])));
        if let Some(Value::Array(vols)) = vols {
            let v = json!({"name": "pgplan-ca", "secret": {"secretName": ca.name}});
            if !vols
                .iter()
                .any(|x| str_at(x, &["name"]) == Some("pgplan-ca"))
            {
                vols.push(v);
            }
        }
    }
    json!({"spec": {"template": {"spec": template}}})
}

/// Seed 004's reconfiguration of a Backstage CR: local DB off, the
/// connection Secret as extraEnvs and the CA Secret as extraFiles, keeping
/// entries already listed.
fn backstage_patch(cr: &Value, r: &crate::spec::Reconfigure) -> Value {
    let mut patch = json!({"spec": {"database": {"enableLocalDb": false}}});
    if let Some(name) = &r.connection_secret {
        let mut list = at(cr, &["spec", "application", "extraEnvs", "secrets"])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !list
            .iter()
            .any(|e| str_at(e, &["name"]) == Some(name.as_str()))
        {
            list.push(json!({"name": name}));
        }
        patch["spec"]["application"]["extraEnvs"]["secrets"] = Value::Array(list);
    }
    if let Some(ca) = &r.ca_secret {
        let mut list = at(cr, &["spec", "application", "extraFiles", "secrets"])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let entry = json!({"name": ca.name, "key": ca.key});
        if !list.contains(&entry) {
            list.push(entry);
        }
        patch["spec"]["application"]["extraFiles"]["secrets"] = Value::Array(list);
    }
    patch
}

/// True when every consumer that has `reconfigure` already points at the
/// target: the cutover happened, so the source is no longer authoritative.
pub(super) fn cut_over(consumers: &[ConsumerFacts<'_>]) -> bool {
    let reconfigurable: Vec<&ConsumerFacts<'_>> = consumers
        .iter()
        .filter(|c| c.spec.reconfigure.is_some())
        .collect();
    !reconfigurable.is_empty()
        && reconfigurable.iter().all(|c| {
            let patch = consumer_patch(c);
            let mut after = shown(c.manifest);
            merge_patch(&mut after, &patch);
            diff_patch(&shown(c.manifest), &after).is_none()
        })
}
