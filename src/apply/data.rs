//! The steps that touch databases and RDS, and the Secrets pgplan writes:
//! resolving a `ServerRef` to a place where the PostgreSQL tools can run,
//! then calling the data path (`pgtools`) or the RDS adapter (`aws`).

use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Value};

use super::act::{cluster, StepError};
use super::undo::Undo;
use super::World;
use crate::cluster::Write;
use crate::observed::{secret_fingerprint, FINGERPRINT_ANNOTATION};
use crate::pgtools::{ConnInfo, Runner};
use crate::plan::{ObjectRef, Operation, SecretContents, ServerRef, Step};

/// Where a server's tools run.
pub(super) async fn runner<'a>(
    w: &'a World<'_>,
    server: &ServerRef,
) -> Result<Runner<'a>, StepError> {
    match server {
        ServerRef::Pod {
            workload,
            selector,
            container,
        } => {
            let c = cluster(w)?;
            let pod = c.ready_pod(&workload.namespace, selector).await?;
            Ok(Runner::Pod {
                cluster: c,
                namespace: workload.namespace.clone(),
                pod,
                container: container.clone(),
            })
        }
        ServerRef::Direct { .. } => Ok(Runner::Local {
            conn: conn_info(w, server).await?,
        }),
    }
}

/// libpq settings for a server reached over the network.
pub(super) async fn conn_info(w: &World<'_>, server: &ServerRef) -> Result<ConnInfo, StepError> {
    let ServerRef::Direct {
        locator,
        host,
        port,
        connect,
        user,
        password_var,
        sslmode,
        ca_file,
    } = server
    else {
        return Err(StepError("not a network server".into()));
    };
    let (host, port) = match (connect, host) {
        (Some(c), _) => (c.host.clone(), c.port),
        (None, Some(h)) => (h.clone(), port.unwrap_or(5432)),
        (None, None) => endpoint(w, locator).await?,
    };
    let password = match password_var {
        Some(v) => Some(
            (w.lookup)(v)
                .ok_or_else(|| StepError(format!("environment variable `{v}` is not set")))?,
        ),
        None => None,
    };
    Ok(ConnInfo {
        host,
        port,
        user: user.clone(),
        password,
        sslmode: sslmode.as_str().into(),
        sslrootcert: ca_file.as_ref().map(|f| w.base_dir.join(f)),
    })
}

fn rds_client<'a>(w: &'a World<'_>) -> Result<&'a crate::aws::Rds, StepError> {
    w.rds
        .ok_or_else(|| StepError("this step needs AWS RDS and no RDS client is configured".into()))
}

/// The endpoint of an RDS instance (`rds/{region}/{id}`).
async fn endpoint(w: &World<'_>, locator: &str) -> Result<(String, u16), StepError> {
    let id = locator.rsplit('/').next().unwrap_or(locator);
    let instance = rds_client(w)?
        .describe_instance(id)
        .await?
        .ok_or_else(|| StepError(format!("RDS instance {id} does not exist")))?;
    instance
        .endpoint
        .map(|e| (e.address, e.port))
        .ok_or_else(|| {
            StepError(format!(
                "RDS instance {id} has no endpoint yet (status {})",
                instance.status
            ))
        })
}

/// Row count of a database's tables, by exec in a pod (self-heal check).
pub(super) async fn count_rows(
    w: &World<'_>,
    namespace: &str,
    pod: &str,
    database: &str,
) -> Result<u64, StepError> {
    let c = cluster(w)?;
    let runner = Runner::Pod {
        cluster: c,
        namespace: namespace.into(),
        pod: pod.into(),
        container: None,
    };
    let inv = crate::pgtools::inventory::server(&runner, pod, &|d| d == database).await?;
    let db = inv
        .databases
        .iter()
        .find(|d| d.name == database)
        .ok_or_else(|| {
            StepError(format!(
                "database {database} is missing on pod {namespace}/{pod}"
            ))
        })?;
    Ok(db.total_rows())
}

/// A minimal HTTP/1.1 GET for the spec's health checks (http only).
pub(super) async fn http_get(url: &str) -> Result<(u16, String), StepError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        StepError(format!(
            "{url}: only http:// checks are supported; check https endpoints through a Service"
        ))
    })?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .map_err(|_| StepError(format!("GET {url} timed out")))?
        .map_err(|e| StepError(format!("GET {url}: {e}")))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| StepError(format!("GET {url}: not an HTTP response")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Write a Secret whose values are resolved now: the connection details of
/// the new server, or the CA bundle.
pub(super) async fn secret(
    w: &World<'_>,
    object: &ObjectRef,
    contents: &SecretContents,
) -> Result<Value, StepError> {
    let c = cluster(w)?;
    let data: Vec<(String, Vec<u8>)> = match contents {
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
                        None => endpoint(w, locator).await?,
                    };
                    let pw = password_var
                        .as_deref()
                        .and_then(|v| (w.lookup)(v))
                        .ok_or_else(|| StepError("the target's password variable is not set".into()))?;
                    (h, p, user.clone(), pw)
                }
                ServerRef::Pod { workload, .. } => {
                    return Err(StepError(format!(
                        "a connection Secret for the in-cluster server {} is not supported; consumers keep using its Service",
                        workload.display()
                    )))
                }
            };
            vec![
                ("POSTGRES_HOST".into(), host.into_bytes()),
                ("POSTGRES_PORT".into(), port.to_string().into_bytes()),
                ("POSTGRES_USER".into(), user.into_bytes()),
                ("POSTGRES_PASSWORD".into(), password.into_bytes()),
            ]
        }
        SecretContents::CaCertificate { key, ca_file } => {
            let path: PathBuf = w.base_dir.join(ca_file);
            let pem = std::fs::read(&path).map_err(|e| {
                StepError(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            vec![(key.clone(), pem)]
        }
    };
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
            c.create(&manifest, Write::Apply).await?;
            Ok(json!({"created": true}))
        }
        Some(live) if live["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == fp => {
            Ok(json!({"already": true}))
        }
        Some(_) => {
            c.merge_patch(object, &json!({"metadata": manifest["metadata"].clone(), "data": manifest["data"].clone()}), Write::Apply)
                .await?;
            Ok(json!({"updated": true}))
        }
    }
}

/// Backup, prepare, restore, unlock, verify.
pub(super) async fn act(w: &World<'_>, step: &Step) -> Result<Value, StepError> {
    let _ = w;
    Err(StepError(format!(
        "{}: the data path is not available in this build",
        step.address
    )))
}

/// How long an RDS instance may take to become available.
const RDS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Create, modify or snapshot an RDS instance.
pub(super) async fn rds(w: &World<'_>, step: &Step) -> Result<Value, StepError> {
    let client = rds_client(w)?;
    let progress = |status: &str, waited: std::time::Duration| {
        w.events.note(&format!(
            "  {}: {status} after {} s",
            step.address,
            waited.as_secs()
        ));
    };
    match &step.operation {
        Operation::CreateRdsInstance { settings, .. } => {
            let created = match client.describe_instance(&settings.identifier).await? {
                Some(existing) if existing.managed_by_pgplan() => false,
                Some(_) => {
                    return Err(StepError(format!(
                        "RDS instance {} appeared and was not created by pgplan; plan again",
                        settings.identifier
                    )))
                }
                None => {
                    let password = (w.lookup)(&settings.password_var).ok_or_else(|| {
                        StepError(format!(
                            "environment variable `{}` is not set",
                            settings.password_var
                        ))
                    })?;
                    client.create_instance(settings, &password).await?;
                    true
                }
            };
            let i = client
                .wait_available(&settings.identifier, RDS_TIMEOUT, progress)
                .await?;
            Ok(
                json!({"created": created, "endpoint": i.endpoint.map(|e| format!("{}:{}", e.address, e.port))}),
            )
        }
        Operation::ModifyRdsInstance { settings, .. } => {
            let changes = client.modify_instance(settings, true).await?;
            client
                .wait_available(&settings.identifier, RDS_TIMEOUT, progress)
                .await?;
            Ok(json!({"changes": changes}))
        }
        Operation::SnapshotRdsInstance {
            identifier,
            snapshot,
            ..
        } => {
            client.create_snapshot(identifier, snapshot).await?;
            client
                .wait_snapshot_available(snapshot, RDS_TIMEOUT, progress)
                .await?;
            Ok(json!({"snapshot": snapshot}))
        }
        _ => Err(StepError(format!("{} is not an RDS step", step.address))),
    }
}

/// Restore the backup into a recreated source whose data lived in its pod.
pub(super) async fn restore_source(w: &World<'_>, step: &Step) -> Result<String, StepError> {
    let _ = w;
    Err(StepError(format!(
        "{}: cannot restore the source yet",
        step.address
    )))
}

pub(super) async fn undo_prepare(
    w: &World<'_>,
    step: &Step,
    facts: Option<&Value>,
) -> Result<Undo, StepError> {
    let _ = (w, step, facts);
    Ok(Undo::Nothing)
}

pub(super) async fn undo_rds(
    w: &World<'_>,
    step: &Step,
    facts: Option<&Value>,
) -> Result<Undo, StepError> {
    match &step.operation {
        Operation::CreateRdsInstance {
            settings,
            delete_on_rollback,
        } => {
            // Only an instance this apply created, and only when allowed.
            let created = facts.and_then(|f| f["created"].as_bool()).unwrap_or(false);
            if !created {
                return Ok(Undo::Kept(format!("RDS instance {} existed before this apply and is kept", settings.identifier)));
            }
            if !delete_on_rollback {
                return Ok(Undo::Kept(format!(
                    "RDS instance {} (created by this apply) is kept: `cleanup.rdsInstanceOnRollback` is off; delete it yourself or apply again",
                    settings.identifier
                )));
            }
            let client = rds_client(w)?;
            client.delete_instance(&settings.identifier, true, None).await?;
            client.wait_deleted(&settings.identifier, RDS_TIMEOUT, |_, _| {}).await?;
            Ok(Undo::Undone(format!("RDS instance {} deleted (deletion protection lifted first)", settings.identifier)))
        }
        Operation::ModifyRdsInstance { settings, changes } => Ok(Undo::Kept(format!(
            "RDS instance {} keeps its changes ({}); the snapshot taken before them is the way back",
            settings.identifier,
            changes.join(", ")
        ))),
        Operation::SnapshotRdsInstance { snapshot, .. } => Ok(Undo::Kept(format!("DB snapshot {snapshot} is kept"))),
        _ => Ok(Undo::Nothing),
    }
}
