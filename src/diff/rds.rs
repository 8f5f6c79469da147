//! RDS targets: move the in-cluster (or external) databases to an RDS for
//! PostgreSQL instance, point consumers at it, and clean up the local
//! database only after everything is verified (seed 004).

use std::collections::BTreeMap;

use serde_json::json;

use super::consumers::{self, Connection};
use super::data::{self, Chain};
use super::manifests::shown;
use super::source::{self, DataVolume, SourceProblem};
use super::Ctx;
use crate::addr::{Address, Journey, Locator, Phase};
use crate::observed::{str_at, RdsInstance, ServerInventory};
use crate::plan::{Action, ObjectRef, Operation, RdsSettings, Risk, ServerRef, Wait};
use crate::spec::{RdsTarget, Source};

pub(super) fn plan(cx: &mut Ctx<'_>, rt: &RdsTarget) {
    let spec = cx.p.spec();
    cx.journey = Journey::ToRds;
    let Some(login) = spec.credentials.target.clone() else {
        return; // validation already reported it
    };
    let password_var = crate::spec::password_var(&login.password).map(str::to_string);
    let locator = Locator::rds(&rt.region, &rt.instance_identifier);
    let target_ref = ServerRef::Direct {
        locator: locator.clone(),
        host: None,
        port: None,
        connect: rt.connect.clone(),
        user: login.username.clone(),
        password_var: password_var.clone(),
        sslmode: rt.tls.mode,
        ca_file: rt.tls.ca_file.clone(),
    };

    // The instance.
    let instance = cx.idx.rds_instance(&rt.region, &rt.instance_identifier);
    let settings = settings(
        cx,
        rt,
        &login.username,
        password_var.clone().unwrap_or_default(),
    );
    let mut instance_ready = Vec::new();
    match instance {
        None => {
            cx.read_absent(locator.to_string());
            let mut s = cx.step(
                locator.to_string(),
                Action::Create,
                Risk::Safe,
                Operation::CreateRdsInstance {
                    settings: settings.clone(),
                    delete_on_rollback: spec.cleanup.rds_instance_on_rollback,
                },
                format!(
                "create RDS instance {} (postgres {}, {}, {} GiB, encrypted: {}, deletion protection: {}) and wait until available",
                rt.instance_identifier, rt.engine_version, rt.instance_class, rt.allocated_storage, rt.storage_encrypted, rt.deletion_protection
            ),
                "the target server does not exist yet".into(),
            );
            s.after = Some(serde_json::to_value(&settings).unwrap_or_default());
            instance_ready.push(cx.push(s));
        }
        Some(i) => {
            cx.reads.insert(locator.to_string(), instance_version(i));
            if !i.managed_by_pgplan() && !rt.adopt {
                cx.error(
                    &["target", "rds", "instanceIdentifier"],
                    "pgplan::plan::not-managed",
                    format!(
                        "RDS instance {} exists and was not created by pgplan",
                        rt.instance_identifier
                    ),
                    "set `adopt: true` to manage it, or choose another identifier",
                );
                return;
            }
            if i.engine != "postgres" {
                cx.error(
                    &["target", "rds", "instanceIdentifier"],
                    "pgplan::plan::engine",
                    format!(
                        "RDS instance {} runs `{}`, not postgres",
                        rt.instance_identifier, i.engine
                    ),
                    "choose a PostgreSQL instance",
                );
                return;
            }
            if matches!(
                i.status.as_str(),
                "deleting" | "failed" | "incompatible-parameters" | "storage-full"
            ) {
                cx.error(
                    &["target", "rds", "instanceIdentifier"],
                    "pgplan::plan::instance-state",
                    format!("RDS instance {} is `{}`", rt.instance_identifier, i.status),
                    "wait for it to become available, or fix it in the AWS console",
                );
                return;
            }
            let changes = modifications(cx, rt, i);
            if !changes.is_empty() {
                let mut deps = Vec::new();
                if rt.snapshot_before_changes {
                    deps.push(snapshot(cx, rt, &changes.join(",")));
                }
                let mut s = cx.step(
                    Address::at(&locator, Phase::Modify).into(),
                    Action::Update,
                    Risk::Disruptive,
                    Operation::ModifyRdsInstance {
                        settings: settings.clone(),
                        changes: changes.clone(),
                    },
                    format!(
                    "modify RDS instance {}: {}",
                    rt.instance_identifier,
                    changes.join(", ")
                ),
                    "the instance differs from the spec; the change is applied immediately and may restart it".into(),
                );
                s.depends_on = deps;
                s.before = Some(serde_json::to_value(i).unwrap_or_default());
                s.after = Some(serde_json::to_value(&settings).unwrap_or_default());
                instance_ready.push(cx.push(s));
            }
        }
    }
    let target_server = cx.idx.server(&locator.to_string());

    // The source.
    let (source_ref, source_server, default_ns, local): (
        Option<ServerRef>,
        Option<&ServerInventory>,
        String,
        Option<LocalDb<'_>>,
    ) = match &spec.source {
        Source::Kubernetes(src) => match source::resolve(cx.idx, src) {
            Ok(f) => {
                cx.read(f.manifest);
                let r = ServerRef::Pod {
                    workload: ObjectRef::new("apps/v1", f.kind.as_str(), &f.namespace, &f.name),
                    selector: f.pod_labels.clone(),
                    container: Some(f.container_name.clone()),
                };
                let claims: Vec<(&serde_json::Value, Option<&serde_json::Value>)> = match &f.data {
                    DataVolume::Claim { pvc, pv } => vec![(*pvc, *pv)],
                    DataVolume::Templates { claims } => claims.clone(),
                    DataVolume::Ephemeral { .. } => Vec::new(),
                };
                let local = LocalDb {
                    workload: ObjectRef::new("apps/v1", f.kind.as_str(), &f.namespace, &f.name),
                    manifest: f.manifest,
                    services: f.services.clone(),
                    claims,
                };
                (Some(r), f.server, src.namespace.clone(), Some(local))
            }
            Err(SourceProblem::NotFound) => {
                cx.read_absent(
                    Locator::k8s(
                        &src.namespace,
                        src.workload.kind.as_str(),
                        src.workload.name.as_deref().unwrap_or_default(),
                    )
                    .to_string(),
                );
                (None, None, src.namespace.clone(), None)
            }
            Err(SourceProblem::Ambiguous(names)) => {
                cx.error(
                    &["source", "kubernetes", "workload", "selector"],
                    "pgplan::plan::source-ambiguous",
                    format!(
                        "the selector matches several workloads: {}",
                        names.join(", ")
                    ),
                    "add labels to the selector, or name the workload",
                );
                return;
            }
            Err(p @ SourceProblem::NoContainer { .. }) => {
                if let Some(d) = p.container_diagnosis() {
                    cx.error(d.path, d.code, d.message, d.help);
                }
                return;
            }
        },
        Source::External(e) => {
            let loc = Locator::external(&e.host, e.port);
            let r = ServerRef::Direct {
                locator: loc.clone(),
                host: Some(e.host.clone()),
                port: Some(e.port),
                connect: e.connect.clone(),
                user: spec
                    .credentials
                    .source
                    .as_ref()
                    .map(|l| l.username.clone())
                    .unwrap_or_else(|| "postgres".into()),
                password_var: spec
                    .credentials
                    .source
                    .as_ref()
                    .and_then(|l| crate::spec::password_var(&l.password).map(str::to_string)),
                sslmode: e.tls.mode,
                ca_file: e.tls.ca_file.clone(),
            };
            (
                Some(r),
                cx.idx.server(&loc.to_string()),
                "default".into(),
                None,
            )
        }
    };

    let consumers = consumers::resolve(cx, &default_ns);
    let ca = rt
        .tls
        .ca_file
        .as_deref()
        .and_then(|f| cx.inputs.files.get(f).map(|c| (f, c.clone())));
    if rt.tls.ca_file.is_some()
        && ca.is_none()
        && consumers.iter().any(|c| {
            c.spec
                .reconfigure
                .as_ref()
                .is_some_and(|r| r.ca_secret.is_some())
        })
    {
        cx.error(
            &["target", "rds", "tls", "caFile"],
            "pgplan::plan::ca-file",
            format!(
                "the CA file `{}` could not be read",
                rt.tls.ca_file.clone().unwrap_or_default()
            ),
            "the path is relative to the spec file's directory",
        );
        return;
    }
    let conn = Connection {
        server: target_ref.clone(),
        host: instance.and_then(|i| i.endpoint.as_ref().map(|e| e.address.clone())),
        port: instance
            .and_then(|i| i.endpoint.as_ref().map(|e| e.port))
            .unwrap_or(5432),
        user: login.username.clone(),
        password_var: password_var.clone(),
        ca: ca.clone(),
    };
    let cut_over = consumers::cut_over(&consumers);

    // Which databases need copying.
    let mut to_copy = Vec::new();
    match (source_server, &source_ref) {
        (Some(server), Some(_)) if !cut_over => {
            for db in data::select(cx, server) {
                match target_server.and_then(|t| t.databases.iter().find(|d| d.name == db.name)) {
                    Some(existing) if existing.fingerprint() == db.fingerprint() => {}
                    Some(existing) if existing.tables.is_empty() => to_copy.push(db),
                    Some(existing) => {
                        let i =
                            cx.p.model()
                                .databases
                                .position(&db.name)
                                .unwrap_or(0)
                                .to_string();
                        cx.error(
                            &["databases", &i],
                            "pgplan::plan::target-not-empty",
                            format!(
                                "{} already has a database `{}` with different contents ({} rows in {} tables; the source has {} in {})",
                                locator,
                                db.name,
                                existing.total_rows(),
                                existing.tables.len(),
                                db.total_rows(),
                                db.tables.len()
                            ),
                            "pgplan never overwrites a non-empty target database: drop it on the target after checking it, or exclude it",
                        );
                    }
                    None => to_copy.push(db),
                }
            }
        }
        (None, Some(ServerRef::Pod { workload, .. })) if !cut_over => {
            cx.error(
                &["source"],
                "pgplan::plan::no-inventory",
                format!(
                    "the live state has no database inventory for {}",
                    workload.address()
                ),
                "observe the databases too: `pgplan observe -f SPEC --out live.yaml` (or plan online)",
            );
            return;
        }
        (None, Some(ServerRef::Direct { locator, .. })) if !cut_over => {
            cx.error(
                &["source"],
                "pgplan::plan::no-inventory",
                format!("the live state has no database inventory for {locator}"),
                "observe the databases too: `pgplan observe -f SPEC --out live.yaml` (or plan online)",
            );
            return;
        }
        (_, None) if target_server.is_none() && instance.is_none() => {
            let (missing, help) = match &spec.source {
                Source::Kubernetes(src) => source::describe_missing(cx.idx, src),
                Source::External(_) => (
                    "was not found".to_string(),
                    "check the source workload's name and namespace".to_string(),
                ),
            };
            cx.error(
                &["source"],
                "pgplan::plan::source-missing",
                format!("the source {missing}, and the RDS instance does not exist: there is nothing to move"),
                help,
            );
            return;
        }
        _ => {}
    }
    if !cx.errors.is_empty() {
        return;
    }

    // Secrets need only the instance; written before anything stops.
    let secrets = consumers::secrets(cx, &consumers, &conn, &instance_ready);

    // Quiesce, copy, verify.
    let mut verifies = Vec::new();
    if let (false, Some(src_ref), Some(src_server)) =
        (to_copy.is_empty(), &source_ref, source_server)
    {
        let quiesced = consumers::quiesce(
            cx,
            &consumers,
            &[instance_ready.clone(), secrets.clone()].concat(),
        );
        let backups = data::backups(cx, src_ref, &to_copy, &quiesced);
        verifies = data::restore_chain(
            cx,
            &Chain {
                source: src_ref,
                source_server: src_server,
                target: &target_ref,
                target_server,
                target_ready: &instance_ready,
                strip_superuser: true,
                tuning: None,
            },
            &to_copy,
            &backups,
        );
    } else if let Some(t) = target_server {
        // Already moved: report what lives on the target.
        for db in &t.databases {
            if cx.p.model().databases.selects(&db.name) {
                cx.databases.push(data::facts(db));
            }
        }
    }
    if cx.databases.is_empty() {
        if let Some(s) = source_server {
            // Nothing to copy this time, but name what the placement covers.
            for db in &s.databases {
                if cx.p.model().databases.selects(&db.name) {
                    cx.databases.push(data::facts(db));
                }
            }
        }
    }

    // Cut over: Secrets, consumer changes, then consumers back.
    let mut deps = verifies.clone();
    deps.extend(instance_ready.iter().cloned());
    deps.extend(secrets);
    let reconf = consumers::reconfigure(cx, &consumers, &deps);
    let resume_deps = if reconf.is_empty() {
        deps.clone()
    } else {
        reconf.clone()
    };
    let resumed = consumers::resume(cx, &consumers, &resume_deps, !verifies.is_empty());

    // Only after verify and cutover: the local database.
    if spec.cleanup.local_database {
        if let Some(local) = &local {
            let mut after = verifies.clone();
            after.extend(reconf);
            after.extend(resumed);
            cleanup_local(cx, local, &after);
        }
    }
}

/// The in-cluster database a move to RDS leaves behind.
struct LocalDb<'a> {
    workload: ObjectRef,
    manifest: &'a serde_json::Value,
    services: Vec<&'a serde_json::Value>,
    claims: Vec<(&'a serde_json::Value, Option<&'a serde_json::Value>)>,
}

fn cleanup_local(cx: &mut Ctx<'_>, local: &LocalDb<'_>, deps: &[String]) {
    let mut s = cx.step(
        local.workload.address(),
        Action::Delete,
        Risk::Destructive,
        Operation::Delete {
            object: local.workload.clone(),
            wait: Wait::Gone,
        },
        format!("delete the local database {}", local.workload.display()),
        "`cleanup.localDatabase` is set and every database is verified on RDS (an operator may already have removed it; then this does nothing)".into(),
    );
    s.depends_on = deps.to_vec();
    s.before = Some(shown(local.manifest));
    let sts_addr = cx.push(s);
    for svc in &local.services {
        let Some(obj) = ObjectRef::of(svc) else {
            continue;
        };
        let mut s = cx.step(
            obj.address(),
            Action::Delete,
            Risk::Disruptive,
            Operation::Delete {
                object: obj.clone(),
                wait: Wait::None,
            },
            format!("delete {}", obj.display()),
            "it fronted the local database, which is gone".into(),
        );
        s.depends_on = vec![sts_addr.clone()];
        s.before = Some(shown(svc));
        cx.push(s);
    }
    for (pvc, pv) in &local.claims {
        let Some(obj) = ObjectRef::of(pvc) else {
            continue;
        };
        let mut s = cx.step(
            obj.address(),
            Action::Delete,
            Risk::Destructive,
            Operation::Delete {
                object: obj.clone(),
                wait: Wait::Gone,
            },
            format!("delete the retained claim {}", obj.display()),
            "StatefulSet claims outlive the StatefulSet (seed 004: \"clean local PV\")".into(),
        );
        s.depends_on = vec![sts_addr.clone()];
        s.before = Some(shown(pvc));
        let pvc_addr = cx.push(s);
        let Some(pv) = pv else { continue };
        if str_at(pv, &["spec", "persistentVolumeReclaimPolicy"]) != Some("Retain") {
            continue; // a Delete volume goes with its claim
        }
        let Some(obj) = ObjectRef::of(pv) else {
            continue;
        };
        let mut s = cx.step(
            obj.address(),
            Action::Delete,
            Risk::Destructive,
            Operation::Delete {
                object: obj.clone(),
                wait: Wait::Gone,
            },
            format!("delete the released volume {}", obj.display()),
            "a Retain volume stays behind as Released once its claim is deleted".into(),
        );
        s.depends_on = vec![pvc_addr];
        s.before = Some(shown(pv));
        cx.push(s);
    }
}

fn settings(cx: &Ctx<'_>, rt: &RdsTarget, user: &str, password_var: String) -> RdsSettings {
    let mut tags: BTreeMap<String, String> = rt.tags.clone();
    tags.insert("managed-by".into(), "pgplan".into());
    tags.insert("pgplan.dev/placement".into(), cx.p.name().into());
    RdsSettings {
        region: rt.region.clone(),
        identifier: rt.instance_identifier.clone(),
        engine_version: rt.engine_version.clone(),
        instance_class: rt.instance_class.clone(),
        allocated_storage: rt.allocated_storage,
        storage_encrypted: rt.storage_encrypted,
        deletion_protection: rt.deletion_protection,
        multi_az: rt.multi_az,
        publicly_accessible: rt.publicly_accessible,
        db_subnet_group_name: rt.db_subnet_group_name.clone(),
        vpc_security_group_ids: rt.vpc_security_group_ids.clone(),
        master_username: user.to_string(),
        password_var,
        tags,
    }
}

fn instance_version(i: &RdsInstance) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        i.status,
        i.engine_version,
        i.instance_class,
        i.allocated_storage,
        i.deletion_protection,
        i.multi_az
    )
}

/// What must change on an existing instance; errors for changes RDS refuses.
fn modifications(cx: &mut Ctx<'_>, rt: &RdsTarget, i: &RdsInstance) -> Vec<String> {
    let mut changes = Vec::new();
    if i.instance_class != rt.instance_class {
        changes.push(format!(
            "instance class {} → {}",
            i.instance_class, rt.instance_class
        ));
    }
    if rt.allocated_storage < i.allocated_storage {
        cx.error(
            &["target", "rds", "allocatedStorage"],
            "pgplan::plan::shrink",
            format!(
                "RDS storage cannot shrink from {} GiB to {} GiB",
                i.allocated_storage, rt.allocated_storage
            ),
            format!("keep `allocatedStorage: {}` or more", i.allocated_storage),
        );
    } else if rt.allocated_storage > i.allocated_storage {
        changes.push(format!(
            "storage {} → {} GiB",
            i.allocated_storage, rt.allocated_storage
        ));
    }
    if i.deletion_protection != rt.deletion_protection {
        changes.push(format!(
            "deletion protection {} → {}",
            i.deletion_protection, rt.deletion_protection
        ));
    }
    if i.multi_az != rt.multi_az {
        changes.push(format!("multi-AZ {} → {}", i.multi_az, rt.multi_az));
    }
    if i.storage_encrypted != rt.storage_encrypted {
        cx.error(
            &["target", "rds", "storageEncrypted"],
            "pgplan::plan::immutable",
            format!(
                "instance {} has storageEncrypted={}; encryption cannot change in place",
                i.identifier, i.storage_encrypted
            ),
            "move to a new instance identifier to change encryption",
        );
    }
    let version = |v: &str| -> Vec<u32> { v.split('.').filter_map(|x| x.parse().ok()).collect() };
    let (have, want) = (version(&i.engine_version), version(&rt.engine_version));
    if want < have && !want.is_empty() && !have.starts_with(&want) {
        cx.error(
            &["target", "rds", "engineVersion"],
            "pgplan::plan::downgrade",
            format!(
                "instance {} runs postgres {}; RDS cannot downgrade to {}",
                i.identifier, i.engine_version, rt.engine_version
            ),
            format!("write `engineVersion: \"{}\"`", i.engine_version),
        );
    } else if want > have && !have.starts_with(&want) {
        changes.push(format!(
            "engine {} → {}",
            i.engine_version, rt.engine_version
        ));
    }
    changes
}

fn snapshot(cx: &mut Ctx<'_>, rt: &RdsTarget, change: &str) -> String {
    let tag = crate::observed::secret_fingerprint([("change", change.as_bytes())]);
    let short: String = tag.trim_start_matches("sha256:").chars().take(8).collect();
    let id = format!("{}-pgplan-{short}", rt.instance_identifier);
    let address = Address::rds_snapshot(&rt.region, &rt.instance_identifier, &id).into();
    let mut s = cx.step(
        address,
        Action::Create,
        Risk::Safe,
        Operation::SnapshotRdsInstance {
            region: rt.region.clone(),
            identifier: rt.instance_identifier.clone(),
            snapshot: id.clone(),
        },
        format!(
            "snapshot RDS instance {} as {id} before changing it",
            rt.instance_identifier
        ),
        "`snapshotBeforeChanges`: a restore point before the instance is modified".into(),
    );
    s.after = Some(json!({"snapshot": id, "instance": rt.instance_identifier}));
    cx.push(s)
}
