//! The steps that touch databases and RDS, and the Secrets pgplan writes:
//! resolving a `ServerRef` to a place where the PostgreSQL tools can run,
//! then calling the data path (`pgtools`) or the RDS adapter (`aws`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Value};

use super::act::{cluster, StepError};
use super::undo::Undo;
use super::World;
use crate::cluster::Write;
use crate::observed::{secret_fingerprint, FINGERPRINT_ANNOTATION};
use crate::pgtools::backup::BackupOptions;
use crate::pgtools::manifest::Manifest;
use crate::pgtools::restore::RestoreOptions;
use crate::pgtools::tune::LoadTuning;
use crate::pgtools::{self, ConnInfo, Runner};
use crate::plan::VerifyChecks;
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

/// Waits until a server accepts sessions again (its workload back, a pod
/// ready, PostgreSQL answering), for a rollback that brought it back.
pub(super) async fn wait_serving(
    w: &World<'_>,
    server: &ServerRef,
    timeout: std::time::Duration,
) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match runner(w, server).await {
            Ok(r) => match r.query("postgres", "SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => StepError::from(e),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError(format!(
                "{} does not serve again within {} s: {last}",
                server.locator(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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
async fn endpoint(
    w: &World<'_>,
    locator: &crate::addr::Locator,
) -> Result<(String, u16), StepError> {
    let id = locator
        .rds_instance()
        .ok_or_else(|| StepError(format!("{locator} is not an RDS instance")))?;
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
    // The container that runs the server (never a sidecar listed first).
    let live = c
        .get(&ObjectRef::new("v1", "Pod", namespace, pod))
        .await?
        .unwrap_or(Value::Null);
    let container = crate::diff::source::postgres_container(&live["spec"], None)
        .ok()
        .map(|choice| choice.name);
    let runner = Runner::Pod {
        cluster: c,
        namespace: namespace.into(),
        pod: pod.into(),
        container,
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

/// The directory this run's backups go to: `{directory}/{run}`, so runs
/// never overwrite each other's archives.
fn backup_root(w: &World<'_>, directory: &str) -> PathBuf {
    PathBuf::from(directory).join(w.run.file_name())
}

/// Forward a data-path progress report to the events and to the stall
/// watch (every report is progress). A dump's total is not known in
/// advance; `estimate` (the database's size from the inventory) stands in
/// for it on the bar.
fn progress_to<'a>(
    w: &'a World<'_>,
    address: &'a str,
    estimate: Option<u64>,
    watch: &'a pgtools::stall::Watch,
) -> impl Fn(&crate::pgtools::progress::Progress) + Send + Sync + 'a {
    use crate::pgtools::progress::{Phase, Progress};
    move |p| {
        watch.saw(p);
        if let Progress::Bytes { phase, done, total } = p {
            let estimate = estimate.filter(|_| *phase == Phase::Dump);
            w.events.progress(address, *done, *total, estimate);
        }
    }
}

/// The source's verifiers a backup step read (`from`), if any.
fn verifiers_of(
    deps: &BTreeMap<String, Value>,
    from: Option<&str>,
) -> Result<Option<pgtools::roles::Verifiers>, StepError> {
    let Some(from) = from else { return Ok(None) };
    match deps.get(from).and_then(|f| f["verifiers"].as_str()) {
        Some(path) => Ok(Some(pgtools::roles::read_verifiers_file(
            std::path::Path::new(path),
        )?)),
        None => Ok(None),
    }
}

/// The passwords the spec gives, read from the environment now; each
/// becomes a secret no log line may show.
fn given_passwords(
    w: &World<'_>,
    passwords: &[crate::plan::RolePassword],
) -> Result<BTreeMap<String, String>, StepError> {
    let mut out = BTreeMap::new();
    for p in passwords {
        let value = (w.lookup)(&p.var).ok_or_else(|| {
            StepError(format!(
                "environment variable `{}` (the password of role {} in `credentials.roles`) is not set",
                p.var, p.role
            ))
        })?;
        crate::logging::redact_also(&value);
        out.insert(p.role.clone(), value);
    }
    Ok(out)
}

/// What prepare did, in the plan's words: created if missing, and what
/// existed already.
fn prepared_note(
    p: &pgtools::Prepared,
    roles: &[crate::observed::Role],
    verifiers: Option<&pgtools::roles::Verifiers>,
) -> String {
    use crate::quantity::count;
    let mut out = format!(
        "created {} and {}",
        count(p.roles.len() as u64, "role"),
        count(p.databases.len() as u64, "database")
    );
    let mut existed = Vec::new();
    if !p.aligned.is_empty() {
        existed.push(format!(
            "{} ({}), given the source's attributes",
            count(p.aligned.len() as u64, "role"),
            p.aligned.join(", ")
        ));
    }
    if !p.existing_databases.is_empty() {
        existed.push(format!(
            "{} ({})",
            count(p.existing_databases.len() as u64, "database"),
            p.existing_databases.join(", ")
        ));
    }
    if !existed.is_empty() {
        out.push_str(&format!("; existed already: {}", existed.join(" and ")));
    }
    if !p.passwords.is_empty() {
        out.push_str(&format!("; passwords set for {}", p.passwords.join(", ")));
    }
    if !p.grants.is_empty() {
        out.push_str(&format!(
            "; {} granted",
            count(p.grants.len() as u64, "membership")
        ));
    }
    if let Some(me) = &p.left_alone {
        out.push_str(&format!("; {me} left as it is: pgplan is connected as it"));
    }
    let unreadable = verifiers.is_some_and(|v| !v.readable);
    let without: Vec<&str> = roles
        .iter()
        .filter(|r| r.login && !p.passwords.contains(&r.name))
        .map(|r| r.name.as_str())
        .collect();
    if unreadable && !without.is_empty() {
        out.push_str(&format!(
            "; no password for {} (the source does not let pgplan read them; see `credentials.roles`)",
            without.join(", ")
        ));
    }
    out
}

/// The manifest path a finished backup step recorded.
fn manifest_of(deps: &BTreeMap<String, Value>, backup_step: &str) -> Result<PathBuf, StepError> {
    deps.get(backup_step)
        .and_then(|f| f["manifest"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| StepError(format!("no backup manifest recorded by {backup_step}")))
}

/// Backup, prepare, restore, unlock, verify. `deps` holds the facts of the
/// steps this one depends on (a restore reads its backup's manifest there).
///
/// Each runs under a stall watch: with no progress for the placement's
/// `backup.stallTimeout` (bytes moved, tables measured, or the server busy
/// with pgplan's statements) the step fails, its tools are stopped, and the
/// apply rolls back.
pub(super) async fn act(
    w: &World<'_>,
    step: &Step,
    deps: &BTreeMap<String, Value>,
) -> Result<Value, StepError> {
    let (server, database) = match &step.operation {
        Operation::Backup {
            server, database, ..
        }
        | Operation::Restore {
            server, database, ..
        } => (server, Some(database.name.as_str())),
        Operation::Verify {
            target, database, ..
        } => (target, Some(database.name.as_str())),
        Operation::ReleaseKnexLocks {
            server, database, ..
        } => (server, Some(database.as_str())),
        Operation::PrepareTarget { server, .. } => (server, None),
        _ => return Err(StepError(format!("{} is not a data step", step.address))),
    };
    let timeout = w
        .stall_timeouts
        .get(&step.placement)
        .copied()
        .unwrap_or(super::DEFAULT_STALL);
    let watch = pgtools::stall::Watch::default();
    // The probe gets its own runner: the step's may be busy streaming.
    let probe = runner(w, server).await?;
    let result = pgtools::stall::guard(
        act_unwatched(w, step, deps, &watch),
        &watch,
        timeout,
        &probe,
        database,
    )
    .await;
    if let (
        Err(_),
        Operation::Backup {
            directory,
            database,
            ..
        },
    ) = (&result, &step.operation)
    {
        // A step stopped by the watch left its partial archive behind.
        let paths =
            pgtools::backup_paths(&backup_root(w, directory), &step.placement, &database.name);
        let _ =
            crate::pgtools::archive::remove(&crate::pgtools::archive::partial_of(&paths.archive));
    }
    result
}

async fn act_unwatched(
    w: &World<'_>,
    step: &Step,
    deps: &BTreeMap<String, Value>,
    watch: &pgtools::stall::Watch,
) -> Result<Value, StepError> {
    let estimate = match &step.operation {
        Operation::Backup { database, .. } => Some(database.size_bytes),
        _ => None,
    };
    let progress = progress_to(w, &step.address, estimate, watch);
    match &step.operation {
        Operation::Backup {
            server,
            database,
            format,
            jobs,
            directory,
            verifiers,
        } => {
            let r = runner(w, server).await?;
            let options = BackupOptions {
                format: *format,
                jobs: *jobs,
                ..BackupOptions::default()
            };
            let (paths, manifest) = pgtools::backup::backup(
                &r,
                &backup_root(w, directory),
                &step.placement,
                &database.name,
                &options,
                &progress,
            )
            .await?;
            // `backup` has read the archive back (sha256 equal to what was
            // written) and listed it with the server's own pg_restore before
            // committing it: the invariant is a *verified* backup.
            let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
            let mut facts = json!({
                "archive": paths.archive,
                "manifest": paths.manifest,
                "bytes": manifest.bytes,
                "sha256": manifest.sha256,
                "note": format!("{} in {}, {rows} rows, sha256 {}…, read back with pg_restore --list",
                    crate::quantity::human_bytes(manifest.bytes), paths.archive.display(), &manifest.sha256[..12.min(manifest.sha256.len())]),
            });
            if *verifiers {
                // Read while the source is up (it may be gone when the target
                // is prepared); beside the archive, 0600. The journal records
                // only the path.
                let mut v = pgtools::roles::read_verifiers(&r).await?;
                // The roles as they are now, too: a rollback that recreates a
                // source whose data was in its pod recreates them from here.
                v.roles = pgtools::inventory::server(&r, &server.locator().to_string(), &|_| false)
                    .await?
                    .roles;
                let path = paths.dir.join(format!("{}.roles.json", database.name));
                pgtools::roles::write_verifiers(&path, &v)?;
                facts["verifiers"] = json!(path);
                facts["passwordsReadable"] = json!(v.readable);
                let said = if v.readable {
                    format!("; {} role password(s) read for the target", v.len())
                } else {
                    format!(
                        "; role passwords cannot be read on {} (no access to pg_authid)",
                        r.server()
                    )
                };
                let note = format!("{}{said}", facts["note"].as_str().unwrap_or_default());
                facts["note"] = json!(note);
            }
            Ok(facts)
        }
        Operation::PrepareTarget {
            server,
            roles,
            databases,
            strip_superuser,
            passwords,
            verifiers_from,
        } => {
            let verifiers = verifiers_of(deps, verifiers_from.as_deref())?;
            let given = given_passwords(w, passwords)?;
            let r = runner(w, server).await?;
            let prepared = pgtools::prepare_target_with(
                &r,
                roles,
                databases,
                *strip_superuser,
                pgtools::Passwords {
                    verifiers: verifiers.as_ref(),
                    given: Some(&given),
                },
            )
            .await?;
            let mut facts = serde_json::to_value(&prepared).unwrap_or(Value::Null);
            facts["note"] = json!(prepared_note(&prepared, roles, verifiers.as_ref()));
            Ok(facts)
        }
        Operation::Restore {
            server,
            database,
            backup_step,
            jobs,
        } => {
            let manifest_path = manifest_of(deps, backup_step)?;
            let r = runner(w, server).await?;
            let manifest = Manifest::read(&manifest_path)?;
            // Resumed after a crash mid-restore: a complete copy is kept, a
            // partial one (this run's own, into a database prepared empty) is
            // dropped and restored afresh.
            if has_tables(&r, &database.name).await? {
                let checks = VerifyChecks {
                    row_counts: true,
                    checksums: true,
                    sequences: true,
                    sql: Vec::new(),
                };
                if pgtools::verify::verify(&r, &manifest, &checks, &progress)
                    .await
                    .is_ok()
                {
                    return Ok(json!({"already": true, "note": "already restored"}));
                }
                reset_database(&r, &database.name, &manifest.owner).await?;
            }
            let options = RestoreOptions {
                jobs: *jobs,
                run_id: w.run.file_name(),
                ..RestoreOptions::default()
            };
            let restored =
                pgtools::restore::restore(&r, &manifest_path, &options, &progress).await?;
            Ok(
                json!({"entries": restored.entries, "note": format!("{} archive entries restored", restored.entries)}),
            )
        }
        Operation::ReleaseKnexLocks {
            server,
            database,
            tables,
        } => {
            let r = runner(w, server).await?;
            let released = pgtools::knex::release_knex_locks(&r, database, tables).await?;
            Ok(
                json!({"released": released, "note": if released.is_empty() { "nothing was locked".to_string() } else { format!("released {}", released.join(", ")) }}),
            )
        }
        Operation::Verify {
            target,
            backup_step,
            checks,
            roles,
            ..
        } => {
            let manifest = Manifest::read(&manifest_of(deps, backup_step)?)?;
            let (verifiers, given) = match roles {
                Some(rc) => (
                    verifiers_of(deps, Some(backup_step))?,
                    given_passwords(w, &rc.passwords)?,
                ),
                None => (None, BTreeMap::new()),
            };
            let role_checks: Vec<pgtools::roles::RoleCheck<'_>> = roles
                .iter()
                .flat_map(|rc| rc.roles.iter())
                .map(|role| pgtools::roles::RoleCheck {
                    role,
                    password: match (
                        given.get(&role.name),
                        verifiers.as_ref().and_then(|v| v.of(&role.name)),
                    ) {
                        (Some(p), _) => pgtools::roles::Expected::Given(p),
                        (None, Some(v)) => pgtools::roles::Expected::Verifier(v),
                        (None, None) => pgtools::roles::Expected::Nothing,
                    },
                })
                .collect();
            let r = runner(w, target).await?;
            let verified =
                pgtools::verify_with_roles(&r, &manifest, checks, &role_checks, &progress).await?;
            let mut facts = serde_json::to_value(&verified).unwrap_or(Value::Null);
            let mut note = format!(
                "{} tables, {} rows, {} sequences match the backup",
                verified.tables, verified.rows, verified.sequences
            );
            if let Some(n) = verified.privileges {
                note.push_str(&format!(", {n} grant(s) and default privilege(s)"));
            }
            if verified.probes > 0 {
                note.push_str(&format!("; {} SQL probe(s) passed", verified.probes));
            }
            if let Some(rc) = &verified.roles {
                note.push_str(&format!(
                    "; {} role(s) with the source's attributes and memberships",
                    rc.roles.len()
                ));
                if !rc.same_password.is_empty() {
                    note.push_str(&format!(
                        ", the source's password on {}",
                        rc.same_password.join(", ")
                    ));
                }
                if !rc.logged_in.is_empty() {
                    note.push_str(&format!(
                        ", logged in over TCP as {}",
                        rc.logged_in.join(", ")
                    ));
                }
                let not_carried: Vec<&str> = roles
                    .iter()
                    .flat_map(|c| c.roles.iter())
                    .filter(|r| {
                        r.login
                            && !given.contains_key(&r.name)
                            && verifiers.as_ref().and_then(|v| v.of(&r.name)).is_none()
                    })
                    .map(|r| r.name.as_str())
                    .collect();
                if !not_carried.is_empty() {
                    note.push_str(&format!(
                        "; no password carried for {} ({})",
                        not_carried.join(", "),
                        if verifiers.as_ref().is_some_and(|v| v.readable) {
                            "none on the source"
                        } else {
                            "the source does not let pgplan read them"
                        }
                    ));
                }
                for n in &rc.notes {
                    note.push_str(&format!("; {n}"));
                }
            }
            facts["note"] = json!(note);
            Ok(facts)
        }
        _ => Err(StepError(format!("{} is not a data step", step.address))),
    }
}

/// A tool runner in one named pod of a `ServerRef::Pod` server.
fn pod_runner<'a>(
    w: &'a World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Runner<'a>, StepError> {
    let container = match server {
        ServerRef::Pod { container, .. } => container.clone(),
        ServerRef::Direct { .. } => {
            return Err(StepError(format!(
                "{} is not in a pod: only servers pgplan created in the cluster are tuned",
                server.locator()
            )))
        }
    };
    Ok(Runner::Pod {
        cluster: cluster(w)?,
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        container,
    })
}

/// Restarts the pod of a server and waits until PostgreSQL accepts sessions.
async fn restart_server<'a>(
    w: &'a World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Runner<'a>, StepError> {
    w.events
        .note(&format!("  restarting {} for its settings", pod.display()));
    super::act::restart_pod(w, pod).await?;
    let r = pod_runner(w, server, pod)?;
    pgtools::wait_accepting(&r, super::act::READY_TIMEOUT).await?;
    Ok(r)
}

/// Tune the fresh target for loading; restart it when minimal WAL is wanted
/// and not yet in effect (so a resumed apply does not restart it again).
pub(super) async fn tune(
    w: &World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
    minimal_wal: bool,
) -> Result<Value, StepError> {
    let r = pod_runner(w, server, pod)?;
    // A resumed apply may find the pod still coming back from a restart.
    pgtools::wait_accepting(&r, super::act::READY_TIMEOUT).await?;
    let names: Vec<&str> = pgtools::tune::MINIMAL_WAL.iter().map(|(n, _)| *n).collect();
    let pinned = if minimal_wal {
        pgtools::tune::set_on_command_line(&r, &names).await?
    } else {
        Vec::new()
    };
    if !pinned.is_empty() {
        w.events.note(&format!(
            "  {} sets {} on postgres's command line: loading without minimal WAL",
            pod.display(),
            pinned.join(", ")
        ));
    }
    let tuning = LoadTuning {
        minimal_wal: minimal_wal && pinned.is_empty(),
        ..LoadTuning::default()
    };
    let minimal_wal = tuning.minimal_wal;
    pgtools::tune_for_loading(&r, &tuning).await?;
    let mut restarted = false;
    if minimal_wal && pgtools::tune::wal_level(&r).await? != "minimal" {
        let r = restart_server(w, server, pod).await?;
        let level = pgtools::tune::wal_level(&r).await?;
        if level != "minimal" {
            return Err(StepError(format!(
                "{} came back with wal_level {level}, not minimal: something overrides ALTER SYSTEM (a command-line -c or a conf.d include); set `loadTuning: reload`",
                pod.display()
            )));
        }
        restarted = true;
    }
    let settings: Vec<String> = tuning
        .settings()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    Ok(json!({
        "restarted": restarted,
        "note": format!("{}{}", settings.join(", "), if restarted { "; restarted" } else { "" }),
    }))
}

/// Put the settings back (restarting when one of them needs it), then make
/// what was loaded durable. Idempotent: a resumed apply finds nothing to
/// reset and nothing pending, and only checkpoints again.
pub(super) async fn untune(
    w: &World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Value, StepError> {
    let r = pod_runner(w, server, pod)?;
    pgtools::wait_accepting(&r, super::act::READY_TIMEOUT).await?;
    let pending = pgtools::untune(&r).await?;
    let restart = !pending.is_empty() || pgtools::tune::wal_level(&r).await? == "minimal";
    let r = if restart {
        let r = restart_server(w, server, pod).await?;
        let still = pgtools::tune::pending_restart(&r).await?;
        if !still.is_empty() || pgtools::tune::wal_level(&r).await? == "minimal" {
            return Err(StepError(format!(
                "{} came back still waiting to apply {}; it must not serve with the loading settings",
                pod.display(),
                still.join(", ")
            )));
        }
        r
    } else {
        r
    };
    pgtools::make_durable(&r, restart).await?;
    Ok(json!({
        "restarted": restart,
        "note": if restart { "settings back, restarted, checkpointed and synced" } else { "settings back, checkpointed and synced" },
    }))
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

/// Restore the backups into a recreated source whose data lived in its
/// pod (the rollback of deleting it).
pub(super) async fn restore_source(
    w: &World<'_>,
    step: &Step,
    done: &BTreeMap<String, Value>,
) -> Result<String, StepError> {
    let mut restored = Vec::new();
    let mut found = Vec::new();
    for dep in &step.depends_on {
        let Some(facts) = done.get(dep) else { continue };
        let Some(manifest_path) = facts["manifest"].as_str() else {
            continue;
        };
        let manifest = Manifest::read(std::path::Path::new(manifest_path))?;
        let Some(server) = source_server(w, step) else {
            continue;
        };
        let r = runner(w, &server).await?;
        // Tables there already: a rollback that stopped after (or while)
        // restoring it is being resumed. Never restore over them; verify.
        let present = has_tables(&r, &manifest.database).await?;
        if !present {
            // The pod's data went with it, roles too: they come back as the
            // backup read them (attributes, memberships, passwords), or the
            // restore's grants to them would fail.
            let v = source_roles(done, &step.placement)?;
            let roles: Vec<crate::observed::Role> = v
                .as_ref()
                .map(|v| {
                    v.roles
                        .iter()
                        .filter(|r| !r.name.starts_with("pg_") && r.name != "postgres")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            pgtools::prepare_target_with(
                &r,
                &roles,
                &[(manifest.database.clone(), manifest.owner.clone())],
                false,
                pgtools::Passwords {
                    verifiers: v.as_ref(),
                    given: None,
                },
            )
            .await?;
            let options = RestoreOptions {
                run_id: w.run.file_name(),
                ..RestoreOptions::default()
            };
            pgtools::restore::restore(
                &r,
                std::path::Path::new(manifest_path),
                &options,
                &crate::pgtools::progress::no_progress,
            )
            .await?;
        }
        let checks = VerifyChecks {
            row_counts: true,
            checksums: true,
            sequences: true,
            sql: Vec::new(),
        };
        let verified = pgtools::verify::verify(
            &r,
            &manifest,
            &checks,
            &crate::pgtools::progress::no_progress,
        )
        .await;
        match verified {
            Ok(_) => {}
            Err(e) if present => {
                return Err(StepError(format!(
                    "database {} on the recreated {} already holds tables, and they do not match the backup ({e}); a rollback may have stopped while restoring it. Drop that database, then `pgplan apply --resume` restores it again from {manifest_path}",
                    manifest.database,
                    server.locator()
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if present {
            found.push(manifest.database.clone());
        } else {
            restored.push(manifest.database.clone());
        }
    }
    let mut said = Vec::new();
    if !restored.is_empty() {
        said.push(format!(
            "its data restored from the verified backup ({})",
            restored.join(", ")
        ));
    }
    if !found.is_empty() {
        said.push(format!(
            "its data, restored before an interruption, verified against the backup ({})",
            found.join(", ")
        ));
    }
    Ok(said.join("; "))
}

/// The source's roles and verifiers a backup of `placement` read, if any.
fn source_roles(
    done: &BTreeMap<String, Value>,
    placement: &str,
) -> Result<Option<pgtools::roles::Verifiers>, StepError> {
    let prefix = format!("pg/{placement}/");
    let from = done
        .iter()
        .find(|(a, f)| a.starts_with(&prefix) && f["verifiers"].is_string())
        .map(|(a, _)| a.as_str());
    verifiers_of(done, from)
}

/// The source server of a deleted workload, from its manifest.
fn source_server(w: &World<'_>, step: &Step) -> Option<ServerRef> {
    let _ = w;
    let before = step.before.as_ref()?;
    let object = crate::plan::ObjectRef::of(before)?;
    let selector = before["spec"]["selector"]["matchLabels"]
        .as_object()?
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let container =
        crate::diff::source::postgres_container(&before["spec"]["template"]["spec"], None)
            .ok()
            .map(|choice| choice.name);
    Some(ServerRef::Pod {
        workload: object,
        selector,
        container,
    })
}

async fn has_tables(r: &Runner<'_>, database: &str) -> Result<bool, StepError> {
    let exists = r
        .query(
            "postgres",
            &format!(
                "select count(*) from pg_database where datname = {}",
                literal(database)
            ),
        )
        .await?;
    if exists.trim() == "0" {
        return Ok(false);
    }
    let n = r
        .query(
            database,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r','p') and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_toast'",
        )
        .await?;
    Ok(n.trim() != "0")
}

async fn reset_database(r: &Runner<'_>, database: &str, owner: &str) -> Result<(), StepError> {
    r.query(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
    )
    .await?;
    r.query(
        "postgres",
        &format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0",
            ident(database),
            ident(owner)
        ),
    )
    .await?;
    Ok(())
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Drop what prepare created on a server that outlives the rollback (RDS,
/// external); an in-cluster target goes away with its StatefulSet.
pub(super) async fn undo_prepare(
    w: &World<'_>,
    step: &Step,
    facts: Option<&Value>,
) -> Result<Undo, StepError> {
    let Operation::PrepareTarget {
        server,
        roles,
        databases,
        ..
    } = &step.operation
    else {
        return Ok(Undo::Nothing);
    };
    if matches!(server, ServerRef::Pod { .. }) {
        return Ok(Undo::Nothing);
    }
    // What it recorded creating; if it failed before recording, what it was
    // to create (none of it existed when the plan was made).
    let planned = serde_json::json!({
        "databases": databases.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        "roles": roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
    });
    let facts = facts.unwrap_or(&planned);
    let r = runner(w, server).await?;
    let mut dropped = Vec::new();
    for db in facts["databases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        r.query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        )
        .await?;
        dropped.push(db.to_string());
    }
    for role in facts["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        r.query("postgres", &format!("DROP ROLE IF EXISTS {}", ident(role)))
            .await?;
        dropped.push(format!("role {role}"));
    }
    if dropped.is_empty() {
        return Ok(Undo::Nothing);
    }
    Ok(Undo::Undone(format!(
        "dropped {} on {}",
        dropped.join(", "),
        server.locator()
    )))
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
