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

/// A move to an RDS instance: the instance, the copy (from this machine or
/// from inside the cluster, `backup.dataPath`), the consumers' cutover and
/// the cleanup of the local database.
pub(super) fn plan(cx: &mut Ctx<'_>, rt: &RdsTarget) {
    let spec = cx.p.spec();
    cx.journey = Journey::ToRds;
    let Some(login) = spec.credentials.target.clone() else {
        return; // validation already reported it
    };
    let password_var = crate::spec::password_var(&login.password).map(str::to_string);
    let locator = Locator::rds(&rt.region, &rt.instance_identifier);
    let Some(target_ref) =
        instance_server(cx, rt, &locator, &login.username, password_var.as_deref())
    else {
        return;
    };
    let in_cluster = matches!(
        target_ref,
        ServerRef::Direct {
            in_cluster: Some(_),
            ..
        }
    );

    // The instance.
    let instance = cx.idx.rds_instance(&rt.region, &rt.instance_identifier);
    let settings = settings(
        cx,
        rt,
        &login.username,
        password_var.clone().unwrap_or_default(),
    );
    let Some(instance_ready) = the_instance(cx, rt, &locator, &settings, instance) else {
        return;
    };
    let target_server = cx.idx.server(&locator.to_string());

    // The source.
    let Some(source) = rds_source(cx) else {
        return;
    };

    let consumers = consumers::resolve(cx, &source.default_ns);
    let Ok(ca) = ca_bundle(cx, rt, &consumers) else {
        return;
    };
    let conn = Connection {
        server: target_ref.clone(),
        host: instance.and_then(|i| i.endpoint.as_ref().map(|e| e.address.clone())),
        port: instance
            .and_then(|i| i.endpoint.as_ref().map(|e| e.port))
            .unwrap_or(5432),
        user: login.username.clone(),
        password_var: password_var.clone(),
        ca,
    };
    let cut_over = consumers::cut_over(&consumers);

    // Which databases need copying.
    let to_copy = match (source.server, &source.server_ref) {
        (Some(server), Some(_)) if !cut_over => to_copy(cx, server, target_server, &locator),
        (server, server_ref) => {
            let nothing_there = target_server.is_none() && instance.is_none();
            no_inventory_or_source(cx, server, server_ref, cut_over, nothing_there);
            Vec::new()
        }
    };
    if !cx.errors.is_empty() {
        return;
    }

    // Secrets need only the instance; written before anything stops.
    let secrets = consumers::secrets(cx, &consumers, &conn, &instance_ready);

    // Quiesce, copy, verify.
    let verifies = copy(
        cx,
        &Copy {
            source: &source,
            target: &target_ref,
            target_server,
            to_copy: &to_copy,
            ready: &[instance_ready.clone(), secrets.clone()].concat(),
            instance_ready: &instance_ready,
            in_cluster,
        },
        &consumers,
    );

    // Cut over: Secrets, consumer changes, then consumers back.
    let mut deps = verifies.clone();
    deps.extend(instance_ready.iter().cloned());
    deps.extend(secrets);
    cut_over_and_clean(cx, &consumers, &deps, &verifies, &source);
}

/// The consumers' changes and their resume after `deps`, and only after
/// every verify and the cutover the local database (`cleanup.localDatabase`).
fn cut_over_and_clean(
    cx: &mut Ctx<'_>,
    consumers: &[consumers::ConsumerFacts<'_>],
    deps: &[String],
    verifies: &[String],
    source: &RdsSource<'_>,
) {
    let reconf = consumers::reconfigure(cx, consumers, deps);
    let resume_deps = if reconf.is_empty() {
        deps.to_vec()
    } else {
        reconf.clone()
    };
    let resumed = consumers::resume(cx, consumers, &resume_deps, !verifies.is_empty());
    if cx.p.spec().cleanup.local_database {
        if let Some(local) = &source.local {
            let mut after = verifies.to_vec();
            after.extend(reconf);
            after.extend(resumed);
            cleanup_local(cx, local, &after);
        }
    }
}

/// The instance's server as pgplan logs in to it: at its endpoint (found
/// when it is ready), as the spec's target login; with `dataPath: cluster`
/// from a pod in the cluster. `None` after an error (no way in from there).
fn instance_server(
    cx: &mut Ctx<'_>,
    rt: &RdsTarget,
    locator: &Locator,
    user: &str,
    password_var: Option<&str>,
) -> Option<ServerRef> {
    let in_cluster = match super::incluster::rds_client(cx.p.spec(), rt) {
        Ok(c) => c.map(Box::new),
        Err(no) => {
            cx.error(no.path, "pgplan::plan::data-path", no.message, no.help);
            return None;
        }
    };
    Some(ServerRef::Direct {
        locator: locator.clone(),
        host: None,
        port: None,
        connect: rt.connect.clone(),
        user: user.to_string(),
        password_var: password_var.map(str::to_string),
        sslmode: rt.tls.mode,
        ca_file: rt.tls.ca_file.clone(),
        in_cluster,
    })
}

/// The instance created, or the live one checked and modified where it
/// differs from the spec. Returns the steps after which it is ready (none
/// when it is), `None` after an error.
fn the_instance(
    cx: &mut Ctx<'_>,
    rt: &RdsTarget,
    locator: &Locator,
    settings: &RdsSettings,
    instance: Option<&RdsInstance>,
) -> Option<Vec<String>> {
    let spec = cx.p.spec();
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
            s.after = Some(serde_json::to_value(settings).unwrap_or_default());
            instance_ready.push(cx.push(s));
        }
        Some(i) => {
            cx.reads.insert(locator.to_string(), instance_version(i));
            if !usable(cx, rt, i) {
                return None;
            }
            let changes = modifications(cx, rt, i);
            if !changes.is_empty() {
                let mut deps = Vec::new();
                if rt.snapshot_before_changes {
                    deps.push(snapshot(cx, rt, &changes.join(",")));
                }
                let mut s = cx.step(
                    Address::at(locator, Phase::Modify).into(),
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
                s.after = Some(serde_json::to_value(settings).unwrap_or_default());
                instance_ready.push(cx.push(s));
            }
        }
    }
    Some(instance_ready)
}

/// A live instance pgplan may use: created by pgplan (or adopted), running
/// postgres, in a state that can serve. Errors say why not.
fn usable(cx: &mut Ctx<'_>, rt: &RdsTarget, i: &RdsInstance) -> bool {
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
        return false;
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
        return false;
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
        return false;
    }
    true
}

/// Where a move to RDS copies from.
struct RdsSource<'a> {
    server_ref: Option<ServerRef>,
    server: Option<&'a ServerInventory>,
    /// Where consumers without a namespace are looked for.
    default_ns: String,
    /// The in-cluster database left behind (Kubernetes sources).
    local: Option<LocalDb<'a>>,
}

/// The source as the live state shows it; `None` after an error (an
/// ambiguous selector, no Postgres container). A workload that is gone
/// (moved earlier) is a source without a server.
fn rds_source<'a>(cx: &mut Ctx<'a>) -> Option<RdsSource<'a>> {
    let spec = cx.p.spec();
    match &spec.source {
        Source::Kubernetes(src) => kube_source(cx, src),
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
                in_cluster: None,
            };
            Some(RdsSource {
                server_ref: Some(r),
                server: cx.idx.server(&loc.to_string()),
                default_ns: "default".into(),
                local: None,
            })
        }
    }
}

fn kube_source<'a>(cx: &mut Ctx<'a>, src: &crate::spec::KubeSource) -> Option<RdsSource<'a>> {
    match source::resolve(cx.idx, src) {
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
            Some(RdsSource {
                server_ref: Some(r),
                server: f.server,
                default_ns: src.namespace.clone(),
                local: Some(local),
            })
        }
        Err(SourceProblem::NotFound) => {
            cx.read_absent(source::absent_address(src));
            Some(RdsSource {
                server_ref: None,
                server: None,
                default_ns: src.namespace.clone(),
                local: None,
            })
        }
        Err(p @ (SourceProblem::Ambiguous(_) | SourceProblem::NoContainer { .. })) => {
            if let Some(d) = p.container_diagnosis() {
                cx.error(d.path, d.code, d.message, d.help);
            }
            None
        }
    }
}

/// The CA bundle consumers are given in a Secret, read from the spec's
/// `tls.caFile`; `Err` (after an error) when a consumer needs it and it
/// could not be read.
fn ca_bundle<'r>(
    cx: &mut Ctx<'_>,
    rt: &'r RdsTarget,
    consumers: &[consumers::ConsumerFacts<'_>],
) -> Result<Option<(&'r str, String)>, ()> {
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
        return Err(());
    }
    Ok(ca)
}

/// The selected databases the target lacks or holds empty; a non-empty
/// target database with other contents is an error (never overwritten).
fn to_copy<'s>(
    cx: &mut Ctx<'_>,
    server: &'s ServerInventory,
    target_server: Option<&ServerInventory>,
    locator: &Locator,
) -> Vec<&'s crate::observed::DatabaseInventory> {
    let mut to_copy = Vec::new();
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
    to_copy
}

/// Why nothing can be copied: no inventory of the source (unless the
/// consumers were cut over already), or neither a source nor an instance.
fn no_inventory_or_source(
    cx: &mut Ctx<'_>,
    server: Option<&ServerInventory>,
    server_ref: &Option<ServerRef>,
    cut_over: bool,
    nothing_there: bool,
) {
    let spec = cx.p.spec();
    match (server, server_ref) {
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
        }
        (None, Some(ServerRef::Direct { locator, .. })) if !cut_over => {
            cx.error(
                &["source"],
                "pgplan::plan::no-inventory",
                format!("the live state has no database inventory for {locator}"),
                "observe the databases too: `pgplan observe -f SPEC --out live.yaml` (or plan online)",
            );
        }
        (_, None) if nothing_there => {
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
        }
        _ => {}
    }
}

/// What the copy to RDS reads.
struct Copy<'c> {
    source: &'c RdsSource<'c>,
    target: &'c ServerRef,
    target_server: Option<&'c ServerInventory>,
    to_copy: &'c [&'c crate::observed::DatabaseInventory],
    /// What the consumers' quiesce waits for: the instance and Secrets.
    ready: &'c [String],
    instance_ready: &'c [String],
    /// With `dataPath: cluster`: the tools reach the instance through the
    /// connection Secret, so the target's steps wait for it too.
    in_cluster: bool,
}

/// Quiesce, back up, restore and verify what must be copied; or, when
/// nothing is, name the databases the placement covers. Returns the
/// verify steps.
fn copy(cx: &mut Ctx<'_>, c: &Copy<'_>, consumers: &[consumers::ConsumerFacts<'_>]) -> Vec<String> {
    let mut verifies = Vec::new();
    if let (false, Some(src_ref), Some(src_server)) =
        (c.to_copy.is_empty(), &c.source.server_ref, c.source.server)
    {
        let claim = match c.in_cluster {
            false => None,
            true => {
                let class = c.source.local.as_ref().and_then(|l| {
                    let (pvc, _) = l.claims.first()?;
                    str_at(pvc, &["spec", "storageClassName"])
                });
                let ns = c.source.default_ns.clone();
                let Some(claim) = super::incluster::rds_claim(cx, &ns, class, c.to_copy) else {
                    return verifies;
                };
                Some(claim)
            }
        };
        let mut quiesced = consumers::quiesce(cx, consumers, c.ready);
        if let Some((_, steps)) = &claim {
            quiesced.extend(steps.iter().cloned());
        }
        let claim = claim.map(|(claim, _)| claim);
        let backups = data::backups(cx, src_ref, claim.as_ref(), c.to_copy, &quiesced);
        verifies = data::restore_chain(
            cx,
            &Chain {
                source: src_ref,
                source_server: src_server,
                target: c.target,
                target_server: c.target_server,
                target_ready: if c.in_cluster {
                    c.ready
                } else {
                    c.instance_ready
                },
                strip_superuser: true,
                tuning: None,
            },
            c.to_copy,
            &backups,
        );
    } else if let Some(t) = c.target_server {
        // Already moved: report what lives on the target.
        for db in &t.databases {
            if cx.p.model().databases.selects(&db.name) {
                cx.databases.push(data::facts(db));
            }
        }
    }
    if cx.databases.is_empty() {
        if let Some(s) = c.source.server {
            // Nothing to copy this time, but name what the placement covers.
            for db in &s.databases {
                if cx.p.model().databases.selects(&db.name) {
                    cx.databases.push(data::facts(db));
                }
            }
        }
    }
    verifies
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
