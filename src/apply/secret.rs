//! The Secrets pgplan writes — a new server's connection details, a CA
//! bundle — with values resolved at apply, never in the plan; and their
//! compensation.

use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Value};

use super::outcome::{Outcome, SecretChange, StepError, Undo};
use super::servers;
use super::world::World;
use crate::cluster::{Cluster, Write};
use crate::observed::{secret_fingerprint, FINGERPRINT_ANNOTATION};
use crate::plan::{ObjectRef, SecretContents, ServerRef, Step};

/// Write a Secret whose values are resolved now: the connection details of
/// the new server, or the CA bundle.
pub async fn write(
    w: &World<'_>,
    object: &ObjectRef,
    contents: &SecretContents,
) -> Result<Outcome, StepError> {
    let data = resolve(w, contents).await?;
    put(w.cluster()?, Write::Apply, object, &data).await
}

/// What `pgplan plan` sends the API server for a Secret step: the same
/// object with every value empty (values are resolved at apply, and the
/// RDS endpoint may not exist yet), as a dry run.
pub async fn dry_run(
    c: &Cluster,
    object: &ObjectRef,
    contents: &SecretContents,
) -> Result<Outcome, StepError> {
    let keys: Vec<String> = match contents {
        SecretContents::Connection { .. } => CONNECTION_KEYS.map(str::to_string).to_vec(),
        SecretContents::CaCertificate { key, .. } => vec![key.clone()],
    };
    let data: Vec<(String, Vec<u8>)> = keys.into_iter().map(|k| (k, Vec::new())).collect();
    put(c, Write::DryRun, object, &data).await
}

/// The keys of a connection Secret, as consumers read them.
const CONNECTION_KEYS: [&str; 4] = [
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
];

/// The values of a Secret, resolved now: the new server's endpoint and
/// login, or the CA bundle read from the spec's directory.
async fn resolve(
    w: &World<'_>,
    contents: &SecretContents,
) -> Result<Vec<(String, Vec<u8>)>, StepError> {
    Ok(match contents {
        SecretContents::Connection { server } => {
            let (host, port, user, password) = match server {
                ServerRef::Direct {
                    locator,
                    host,
                    port,
                    user,
                    password_var,
                    ..
                } => {
                    // Consumers get the real endpoint, never a tunnel's.
                    let (h, p) = match host {
                        Some(h) => (h.clone(), port.unwrap_or(5432)),
                        None => servers::endpoint(w, locator).await?,
                    };
                    let pw = password_var
                        .as_deref()
                        .and_then(|v| (w.lookup)(v))
                        .ok_or_else(|| StepError::new("the target's password variable is not set"))?;
                    (h, p, user.clone(), pw)
                }
                ServerRef::Pod { workload, .. } => {
                    return Err(StepError::new(format!(
                        "a connection Secret for the in-cluster server {} is not supported; consumers keep using its Service",
                        workload.display()
                    )))
                }
            };
            let values = [
                host.into_bytes(),
                port.to_string().into_bytes(),
                user.into_bytes(),
                password.into_bytes(),
            ];
            CONNECTION_KEYS
                .iter()
                .map(|k| k.to_string())
                .zip(values)
                .collect()
        }
        SecretContents::CaCertificate { key, ca_file } => {
            let path: PathBuf = w.base_dir.join(ca_file);
            let pem = std::fs::read(&path).map_err(|e| {
                StepError::new(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            vec![(key.clone(), pem)]
        }
    })
}

/// The Secret with `data` created, or patched when its fingerprint
/// differs (pgplan never reads Secret values, only that annotation).
async fn put(
    c: &Cluster,
    write: Write,
    object: &ObjectRef,
    data: &[(String, Vec<u8>)],
) -> Result<Outcome, StepError> {
    let fp = secret_fingerprint(data.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let encoded: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": object.name, "namespace": object.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "pgplan"},
                     "annotations": {FINGERPRINT_ANNOTATION: fp}},
        "type": "Opaque",
        "data": encoded,
    });
    match c.get(object).await? {
        None => {
            c.create(&manifest, write).await?;
            Ok(Outcome::SecretWritten {
                change: SecretChange::Created,
            })
        }
        Some(live) if live["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == fp => {
            Ok(Outcome::SecretWritten {
                change: SecretChange::Unchanged,
            })
        }
        Some(_) => {
            c.merge_patch(object, &json!({"metadata": manifest["metadata"].clone(), "data": manifest["data"].clone()}), write)
                .await?;
            Ok(Outcome::SecretWritten {
                change: SecretChange::Updated,
            })
        }
    }
}

/// Undo a Secret pgplan wrote: one it created is deleted; one it
/// overwrote keeps its new values (pgplan never reads Secret values).
pub async fn undo(w: &World<'_>, step: &Step, object: &ObjectRef) -> Result<Undo, StepError> {
    if step.before.is_some() {
        return Ok(Undo::Kept(format!(
            "{} keeps its new values: pgplan never reads Secret values, so the old ones cannot be put back",
            object.display()
        )));
    }
    w.cluster()?.delete(object, Write::Apply).await?;
    Ok(Undo::Undone(format!("{} deleted", object.display())))
}
