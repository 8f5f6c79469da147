//! The data path every journey shares: which databases move, and the chain
//! backup → prepare target → restore → (knex unlock) → verify for each.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Ctx;
use crate::addr::Address;
use crate::observed::{DatabaseInventory, ServerInventory};
use crate::observed::{PasswordKind, Role};
use crate::plan::{
    Action, DatabaseFacts, ObjectRef, Operation, Risk, RoleChecks, RolePassword, ServerRef, Step,
    VerifyChecks,
};
use crate::quantity::{count, human_bytes};
use crate::spec::model::SYSTEM_DATABASES;
use crate::spec::LoadTuningMode;

pub(super) fn facts(db: &DatabaseInventory) -> DatabaseFacts {
    DatabaseFacts {
        name: db.name.clone(),
        owner: db.owner.clone(),
        size_bytes: db.size_bytes,
        tables: db.tables.len() as u64,
        rows: db.total_rows(),
        fingerprint: db.fingerprint(),
    }
}

/// The databases of `server` the spec's names and globs select, in name
/// order. A literal name that is missing, or a glob matching nothing, is an
/// error at that list entry.
pub(super) fn select<'a>(
    cx: &mut Ctx<'_>,
    server: &'a ServerInventory,
) -> Vec<&'a DatabaseInventory> {
    let mut chosen: BTreeMap<&str, &DatabaseInventory> = BTreeMap::new();
    let selector = cx.p.model().databases.clone();
    for (i, entry) in selector.entries() {
        let (pat, is_glob) = (entry.text(), entry.is_glob());
        let mut hit = false;
        for db in &server.databases {
            if entry.selects(&db.name) {
                chosen.insert(&db.name, db);
                hit = true;
            }
        }
        if !hit {
            let idx = i.to_string();
            let names: Vec<&str> = server.databases.iter().map(|d| d.name.as_str()).collect();
            let help = match crate::spec::check::did_you_mean(pat, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the server has: {}", names.join(", ")),
            };
            cx.error(
                &["databases", &idx],
                "pgplan::plan::database-missing",
                if is_glob {
                    format!("`{pat}` matches no database on {}", server.locator)
                } else {
                    format!("database `{pat}` does not exist on {}", server.locator)
                },
                help,
            );
        }
    }
    chosen.into_values().collect()
}

pub(super) struct Chain<'a> {
    pub source: &'a ServerRef,
    pub source_server: &'a ServerInventory,
    pub target: &'a ServerRef,
    pub target_server: Option<&'a ServerInventory>,
    /// Steps the target must have finished before anything is restored.
    pub target_ready: &'a [String],
    pub strip_superuser: bool,
    /// A server pgplan creates, tuned while loading (StatefulSet targets).
    pub tuning: Option<Tuning>,
}

/// Which pod runs the target server, and how it is tuned for loading.
pub(super) struct Tuning {
    pub pod: ObjectRef,
    pub mode: LoadTuningMode,
}

/// One backup step per database; returns their addresses in `dbs` order.
pub(super) fn backups(
    cx: &mut Ctx<'_>,
    source: &ServerRef,
    claim: Option<&ObjectRef>,
    dbs: &[&DatabaseInventory],
    deps: &[String],
) -> Vec<String> {
    let spec = cx.p.spec();
    let name = cx.p.name().to_string();
    let mut out = Vec::new();
    for db in dbs {
        let f = facts(db);
        let mut s = cx.step(
            Address::database(&name, &db.name, "backup").into(),
            Action::Run,
            Risk::Safe,
            Operation::Backup {
                server: source.clone(),
                database: f.clone(),
                format: spec.backup.format,
                jobs: spec.backup.jobs,
                directory: spec.backup.directory.clone(),
                claim: claim.cloned(),
                verifiers: false,
            },
            format!(
            "back up {} ({}, {}, {}) from {}",
            db.name,
            human_bytes(db.size_bytes),
            count(f.tables, "table"),
            count(f.rows, "row"),
            source.locator()
        ),
            "no step that can lose data runs before a verified backup exists: the dump is checksummed, read back with `pg_restore --list`, and row counts and sequences are recorded".into(),
        );
        s.depends_on = deps.to_vec();
        s.after = Some(json!({
            "database": db.name,
            "from": source.locator(),
            "format": format!("{:?}", spec.backup.format).to_lowercase(),
            "sizeBytes": db.size_bytes,
            "tables": f.tables,
            "rows": f.rows,
        }));
        let kept = s.after.as_mut().and_then(Value::as_object_mut);
        if let Some(after) = kept {
            match claim {
                Some(c) => {
                    after.insert("claim".into(), json!(format!("{}/{}", c.namespace, c.name)))
                }
                None => after.insert("directory".into(), json!(spec.backup.directory)),
            };
        }
        out.push(cx.push(s));
    }
    out
}

/// Prepare the target, then restore and verify each database from its
/// backup, and release its knex locks. Returns, per database, the step after
/// which it is ready for consumers (its unlock, else its verify).
pub(super) fn restore_chain(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    dbs: &[&DatabaseInventory],
    backups: &[String],
) -> Vec<String> {
    let mut verifies = Vec::new();
    if dbs.is_empty() {
        return verifies;
    }
    // Roles first (ownership is restored with the data), then databases.
    let carried = carried_roles(cx, c);
    let prepare_addr = prepare_target(cx, c, dbs, backups, &carried);

    let tuning = c
        .tuning
        .as_ref()
        .filter(|t| tunes(t.mode, bytes_to_load(dbs)));
    let prepare_deps = match tuning {
        Some(t) => vec![tune_for_loading(cx, c, t, dbs, prepare_addr.clone())],
        None => vec![prepare_addr.clone()],
    };
    match tuning {
        // Put back once, after every restore and before any verify: the
        // data is verified as it will serve.
        Some(t) => {
            let restores: Vec<String> = dbs
                .iter()
                .zip(backups)
                .map(|(db, b)| restore(cx, c, db, b, &prepare_deps, None))
                .collect();
            let untuned = untune(cx, c, t, dbs, &restores);
            for (i, (db, b)) in dbs.iter().zip(backups).enumerate() {
                let checks = (i == 0).then(|| role_checks(&carried)).flatten();
                verifies.push(verify(cx, c, db, b, std::slice::from_ref(&untuned), checks));
            }
        }
        None => {
            // `auto` with too little to load for tuning to pay off: said
            // where a reviewer looks for the tuning steps.
            let untuned = c.tuning.is_some().then(|| {
                format!(
                    "; it loads on the server's own settings: `loadTuning: auto` tunes from {} to load, and there is {}",
                    human_bytes(RESTART_FROM_BYTES),
                    human_bytes(bytes_to_load(dbs))
                )
            });
            for (i, (db, b)) in dbs.iter().zip(backups).enumerate() {
                let restored = restore(cx, c, db, b, &prepare_deps, untuned.as_deref());
                let checks = (i == 0).then(|| role_checks(&carried)).flatten();
                verifies.push(verify(
                    cx,
                    c,
                    db,
                    b,
                    std::slice::from_ref(&restored),
                    checks,
                ));
            }
        }
    }
    verifies
}

/// The step creating the carried roles and the databases the target lacks
/// (owners first: restores keep ownership). The verifiers are read by the
/// first backup, which this marks. Returns its address.
fn prepare_target(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    dbs: &[&DatabaseInventory],
    backups: &[String],
    carried: &Carried,
) -> String {
    let name = cx.p.name().to_string();
    let existing_dbs: Vec<&str> = c
        .target_server
        .map(|t| t.databases.iter().map(|d| d.name.as_str()).collect())
        .unwrap_or_default();
    let databases: Vec<(String, String)> = dbs
        .iter()
        .filter(|d| !existing_dbs.contains(&d.name.as_str()))
        .map(|d| (d.name.clone(), d.owner.clone()))
        .collect();
    // The verifiers are read by the first backup (the source may be gone
    // when the target is prepared); none are needed without roles.
    let verifiers_from = backups
        .first()
        .filter(|_| !carried.roles.is_empty())
        .cloned();
    if let Some(b) = &verifiers_from {
        for s in cx.steps.iter_mut().filter(|s| &s.address == b) {
            if let Operation::Backup { verifiers, .. } = &mut s.operation {
                *verifiers = true;
            }
        }
    }
    let mut reason = if c.strip_superuser {
        "restores keep ownership, so owners must exist first; pg_dump carries no roles, so their attributes, settings, memberships and passwords are carried here; RDS has no superuser, so roles are created without SUPERUSER, REPLICATION or BYPASSRLS".to_string()
    } else {
        "restores keep ownership, so owners must exist first; pg_dump carries no roles, so their attributes, settings, memberships and passwords are carried here (roles the target had are left alone)".to_string()
    };
    if verifiers_from.is_some() {
        reason.push_str(&format!(
            "; the source's password verifiers are read by {} and never enter the plan or the journal",
            backups[0]
        ));
    }
    let mut prepare = cx.step(
        Address::placement(&name, "prepare").into(),
        Action::Run,
        Risk::Safe,
        Operation::PrepareTarget {
            server: c.target.clone(),
            roles: carried.roles.clone(),
            databases: databases.clone(),
            strip_superuser: c.strip_superuser,
            passwords: carried.passwords.clone(),
            verifiers_from: verifiers_from.clone(),
        },
        prepare_summary(&carried.roles, &databases, carried, c),
        reason,
    );
    prepare.depends_on = c.target_ready.to_vec();
    prepare.depends_on.extend(verifiers_from.iter().cloned());
    prepare.after = Some(prepare_shown(c, &databases, carried));
    cx.push(prepare)
}

/// What the prepare step shows as its result: the roles (and where each
/// password comes from), memberships, what is not carried, the databases.
fn prepare_shown(c: &Chain<'_>, databases: &[(String, String)], carried: &Carried) -> Value {
    let roles = &carried.roles;
    let mut after = json!({
        "server": c.target.locator(),
        "roles": roles.iter().map(|r| format!("{} ({}; password: {})", r.name, r.attributes(), carried.password_of(r))).collect::<Vec<_>>(),
    });
    let memberships: Vec<String> = roles
        .iter()
        .flat_map(|r| {
            r.member_of.iter().map(move |g| {
                format!(
                    "{} in {}{}",
                    r.name,
                    g,
                    if r.admin_of.contains(g) {
                        " with admin option"
                    } else {
                        ""
                    }
                )
            })
        })
        .collect();
    if !memberships.is_empty() {
        after["memberships"] = json!(memberships);
    }
    if !carried.dropped.is_empty() {
        after["notCarried"] = json!(carried.dropped);
    }
    after["databases"] = json!(databases
        .iter()
        .map(|(d, o)| json!({"name": d, "owner": o}))
        .collect::<Vec<_>>());
    after
}

/// From this much data to load, `loadTuning: auto` tunes the target,
/// restarting it twice for minimal WAL; below it, the target loads on its
/// own settings. Measured with `scripts/bench-copy` (pgplan's path, median
/// of 3): at ~1 GB tuning with restarts takes 14–17 % off the whole path; at
/// ~500 MB it gains 1.3 s on one big table and breaks even on 30 tables; at
/// ~200 MB tuning and putting back (checkpoint and sync) cost 0.6 s more than
/// they save even by reload. A restart of a fresh pod is seconds.
pub const RESTART_FROM_BYTES: u64 = 256 << 20;

/// Whether the target is tuned for loading `bytes` at all.
pub(super) fn tunes(mode: LoadTuningMode, bytes: u64) -> bool {
    match mode {
        LoadTuningMode::Off => false,
        LoadTuningMode::Auto => bytes >= RESTART_FROM_BYTES,
        LoadTuningMode::Restart | LoadTuningMode::Reload => true,
    }
}

/// Whether the target is restarted for minimal WAL while loading `dbs`.
fn minimal_wal(mode: LoadTuningMode, dbs: &[&DatabaseInventory]) -> bool {
    match mode {
        LoadTuningMode::Restart => true,
        LoadTuningMode::Auto => bytes_to_load(dbs) >= RESTART_FROM_BYTES,
        LoadTuningMode::Reload | LoadTuningMode::Off => false,
    }
}

fn bytes_to_load(dbs: &[&DatabaseInventory]) -> u64 {
    dbs.iter().map(|d| d.size_bytes).sum()
}

/// The step `pg/NAME/{suffix}` on the target's pod, and whether it restarts it.
fn tuning_step(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    t: &Tuning,
    dbs: &[&DatabaseInventory],
    suffix: &str,
    operation: impl FnOnce(ServerRef, ObjectRef, bool) -> Operation,
    says: impl FnOnce(bool) -> (String, String),
) -> (Step, bool) {
    let restart = minimal_wal(t.mode, dbs);
    let (summary, reason) = says(restart);
    let step = cx.step(
        Address::placement(cx.p.name(), suffix).into(),
        Action::Run,
        Risk::Safe,
        operation(c.target.clone(), t.pod.clone(), restart),
        summary,
        reason,
    );
    (step, restart)
}

fn tune_for_loading(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    t: &Tuning,
    dbs: &[&DatabaseInventory],
    prepared: String,
) -> String {
    let pod = t.pod.display();
    let size = human_bytes(bytes_to_load(dbs));
    let says = |restart: bool| {
        let summary = if restart {
            format!("tune {pod} for loading: no fsync, minimal WAL, autovacuum off (restarts it)")
        } else {
            format!(
                "tune {pod} for loading: no fsync or full-page writes, autovacuum off (by reload)"
            )
        };
        let why = match (t.mode, restart) {
        (LoadTuningMode::Auto, true) => format!(
            "minimal WAL needs a restart, which pays off for the {size} to load (`loadTuning: auto` restarts from {})",
            human_bytes(RESTART_FROM_BYTES)
        ),
        (_, true) => "`loadTuning: restart`: minimal WAL, which needs a restart".into(),
        // `auto` never tunes by reload (it does not tune below the threshold).
        (_, false) => "`loadTuning: reload`: settings a reload applies".into(),
    };
        let reason = format!(
        "the new server holds nothing but the restore, which is redone from the backup if it crashes, so it loads without durability as CloudNativePG's import does; {why}"
    );
        (summary, reason)
    };
    let (mut s, restart) = tuning_step(
        cx,
        c,
        t,
        dbs,
        "tune-for-loading",
        |server, pod, minimal_wal| Operation::TuneForLoading {
            server,
            pod,
            minimal_wal,
        },
        says,
    );
    s.depends_on = vec![prepared];
    s.after = Some(json!({"pod": t.pod.name, "restart": restart, "toLoad": size}));
    cx.push(s)
}

fn untune(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    t: &Tuning,
    dbs: &[&DatabaseInventory],
    restores: &[String],
) -> String {
    let pod = t.pod.display();
    let says = |restart: bool| {
        let summary = if restart {
            format!("put {pod}'s settings back (restarts it), checkpoint and sync")
        } else {
            format!("put {pod}'s settings back, checkpoint and sync")
        };
        let reason =
            "the restored data is verified as it will serve: durable, on the server's own settings";
        (summary, reason.to_string())
    };
    let (mut s, restart) = tuning_step(
        cx,
        c,
        t,
        dbs,
        "untune",
        |server, pod, minimal_wal| Operation::UntuneAfterLoading {
            server,
            pod,
            minimal_wal,
        },
        says,
    );
    s.depends_on = restores.to_vec();
    s.after = Some(json!({"pod": t.pod.name, "restart": restart}));
    cx.push(s)
}

fn restore(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    db: &DatabaseInventory,
    backup: &str,
    deps: &[String],
    untuned: Option<&str>,
) -> String {
    let name = cx.p.name().to_string();
    let jobs = cx.p.spec().backup.jobs;
    let f = facts(db);
    let mut r = cx.step(
        Address::database(&name, &db.name, "restore").into(),
        Action::Run,
        Risk::Safe,
        Operation::Restore {
            server: c.target.clone(),
            database: f.clone(),
            backup_step: backup.to_string(),
            jobs,
        },
        format!(
            "restore {} into {} ({} parallel jobs)",
            db.name,
            c.target.locator(),
            jobs
        ),
        format!(
            "the restore stops at the first error and names the archive entry that failed{}",
            untuned.unwrap_or_default()
        ),
    );
    let mut d = deps.to_vec();
    d.push(backup.to_string());
    r.depends_on = d;
    r.after = Some(
        json!({"database": db.name, "into": c.target.locator(), "tables": f.tables, "rows": f.rows}),
    );
    cx.push(r)
}

/// Verify one database (and release its knex locks); returns the step after
/// which it is ready for consumers.
fn verify(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    db: &DatabaseInventory,
    backup: &str,
    deps: &[String],
    roles: Option<Box<RoleChecks>>,
) -> String {
    let spec = cx.p.spec();
    let name = cx.p.name().to_string();
    let f = facts(db);
    let mut checks = Vec::new();
    if spec.verify.row_counts {
        checks.push("row counts");
    }
    if spec.verify.checksums {
        checks.push("checksums");
    }
    if spec.verify.sequences {
        checks.push("sequences");
    }
    let probes = spec
        .verify
        .sql
        .iter()
        .filter(|q| q.database == db.name)
        .count();
    if let Some(r) = &roles {
        checks.push(if r.passwords.is_empty() {
            "roles"
        } else {
            "roles (logging in with the spec's passwords)"
        });
    }
    checks.push("privileges");
    let mut v = cx.step(
        Address::database(&name, &db.name, "verify").into(),
        Action::Run,
        Risk::Safe,
        Operation::Verify {
            source: c.source.clone(),
            target: c.target.clone(),
            database: f.clone(),
            backup_step: backup.to_string(),
            checks: VerifyChecks {
                row_counts: spec.verify.row_counts,
                checksums: spec.verify.checksums,
                sequences: spec.verify.sequences,
                sql: spec
                    .verify
                    .sql
                    .iter()
                    .filter(|q| q.database == db.name)
                    .cloned()
                    .collect(),
            },
            roles: roles.clone(),
        },
        format!(
        "verify {} on {}: {}{}",
        db.name,
        c.target.locator(),
        checks.join(", "),
        if probes > 0 {
            format!(", {}", count(probes as u64, "SQL probe"))
        } else {
            String::new()
        }
    ),
        "nothing is cleaned up and no consumer is switched until the restored data matches the backup manifest".into(),
    );
    v.depends_on = deps.to_vec();
    v.after = Some(
        json!({"database": db.name, "expectRows": f.rows, "expectTables": f.tables, "checks": checks}),
    );
    let verified = cx.push(v);
    let ready = release_knex_locks(cx, c, db, verified);
    cx.databases.push(f);
    ready
}

/// Releases the knex migration locks copied in the locked state, after
/// `verified`. Returns the step after which the database is ready.
fn release_knex_locks(
    cx: &mut Ctx<'_>,
    c: &Chain<'_>,
    db: &DatabaseInventory,
    verified: String,
) -> String {
    let name = cx.p.name().to_string();
    let locked: Vec<String> = db
        .knex_locks
        .iter()
        .filter(|l| l.locked)
        .map(|l| format!("{}.{}", l.schema, l.table))
        .collect();
    if !locked.is_empty() {
        let mut k = cx.step(
            Address::database(&name, &db.name, "knex-unlock").into(),
            Action::Run,
            Risk::Safe,
            Operation::ReleaseKnexLocks {
                server: c.target.clone(),
                database: db.name.clone(),
                tables: locked.clone(),
            },
            format!("release {} in {}", locked.join(", "), db.name),
            "a migration lock copied in the locked state makes Backstage crash-loop with `Migration table is already locked`; released after verify, which compares the copy with the backup as taken".into(),
        );
        k.depends_on = vec![verified];
        k.after = Some(json!({"database": db.name, "tables": locked}));
        return cx.push(k);
    }
    verified
}

/// The roles a placement carries to its target, and how.
struct Carried {
    /// As the target must have them (stripped for RDS).
    roles: Vec<Role>,
    /// Passwords the spec gives, by reference.
    passwords: Vec<RolePassword>,
    /// What is not carried, and why (said in the plan).
    dropped: Vec<String>,
    source: String,
}

impl Carried {
    fn given(&self, role: &str) -> Option<&RolePassword> {
        self.passwords.iter().find(|p| p.role == role)
    }

    /// Where a role's password comes from, as the plan says it.
    fn password_of(&self, r: &Role) -> String {
        match (self.given(&r.name), r.password) {
            (Some(p), _) => format!("from ${{{}}}", p.var),
            (None, PasswordKind::ScramSha256) => "the source's SCRAM verifier".into(),
            (None, PasswordKind::Md5) => "the source's MD5 hash".into(),
            (None, PasswordKind::None) => "none".into(),
            (None, PasswordKind::Unknown) => format!(
                "none: {} does not let pgplan read it; give it in `credentials.roles`",
                self.source
            ),
        }
    }
}

/// Which roles move: the source's, but `pg_*`, the system names and the
/// login pgplan uses on the target; without the ones the target had when
/// observed. Memberships in roles that are neither carried nor on the
/// target (nor built in) are dropped and said so.
fn carried_roles(cx: &mut Ctx<'_>, c: &Chain<'_>) -> Carried {
    let existing: Vec<&str> = c
        .target_server
        .map(|t| t.roles.iter().map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    let login = match c.target {
        ServerRef::Direct { user, .. } => Some(user.as_str()),
        ServerRef::Pod { .. } => None,
    };
    let mut roles: Vec<Role> = c
        .source_server
        .roles
        .iter()
        .filter(|r| !r.name.starts_with("pg_") && !SYSTEM_DATABASES.contains(&r.name.as_str()))
        .filter(|r| !existing.contains(&r.name.as_str()) && Some(r.name.as_str()) != login)
        .cloned()
        .collect();
    let names: Vec<String> = roles.iter().map(|r| r.name.clone()).collect();
    let dropped = fit_to_target(&mut roles, &names, &existing, c.strip_superuser);
    let passwords = given_passwords(cx, c, &names);
    let carried = Carried {
        roles,
        passwords,
        dropped,
        source: c.source_server.locator.clone(),
    };
    warn_about_passwords(cx, &carried);
    carried
}

/// The carried roles made to fit the target: without what only a
/// superuser grants when there is none (`strip_superuser`), and without
/// memberships in roles that are neither carried (`names`) nor on the
/// target (`existing`) nor built in. Returns what was dropped, in words.
fn fit_to_target(
    roles: &mut [Role],
    names: &[String],
    existing: &[&str],
    strip_superuser: bool,
) -> Vec<String> {
    let mut dropped = Vec::new();
    for r in roles.iter_mut() {
        if strip_superuser {
            let only_superuser: Vec<&str> = [
                (r.superuser, "SUPERUSER"),
                (r.replication, "REPLICATION"),
                (r.bypass_rls, "BYPASSRLS"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            if !only_superuser.is_empty() {
                dropped.push(format!(
                    "{} of role {} (only a superuser grants it, and there is none)",
                    only_superuser.join(", "),
                    r.name
                ));
            }
            r.superuser = false;
            r.replication = false;
            r.bypass_rls = false;
        }
        let keep = |g: &String| {
            g.starts_with("pg_") || names.contains(g) || existing.contains(&g.as_str())
        };
        for g in r.member_of.iter().filter(|g| !keep(g)) {
            dropped.push(format!(
                "membership of {} in {g} (no such role on the target)",
                r.name
            ));
        }
        r.member_of.retain(keep);
        let member_of = r.member_of.clone();
        r.admin_of.retain(|g| member_of.contains(g));
    }
    dropped
}

/// The passwords `credentials.roles` gives for carried roles (`names`), by
/// variable; a role it names that is not carried is a warning (it exists
/// on the target already) or an error (no such role).
fn given_passwords(cx: &mut Ctx<'_>, c: &Chain<'_>, names: &[String]) -> Vec<RolePassword> {
    let spec = cx.p.spec();
    let mut passwords = Vec::new();
    for (role, secret) in &spec.credentials.roles {
        let Some(var) = crate::spec::password_var(&secret.password) else {
            continue;
        };
        if names.contains(role) {
            passwords.push(RolePassword {
                role: role.clone(),
                var: var.to_string(),
            });
        } else if c.source_server.roles.iter().any(|r| &r.name == role) {
            cx.warnings.push(format!(
                "role {role} exists on {} already and is left as it is: its password in `credentials.roles` is not used",
                c.target.locator()
            ));
        } else {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            cx.error(
                &["credentials", "roles", role],
                "pgplan::plan::role-missing",
                format!("role `{role}` is not a role of {}", c.source_server.locator),
                match crate::spec::check::did_you_mean(role, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the roles pgplan carries: {}", known.join(", ")),
                },
            );
        }
    }
    passwords
}

/// Warnings for carried logins that will not log in as they did: a
/// password the source does not let pgplan read, or an MD5 hash.
fn warn_about_passwords(cx: &mut Ctx<'_>, carried: &Carried) {
    let unreadable: Vec<&str> = carried
        .roles
        .iter()
        .filter(|r| {
            r.login && r.password == PasswordKind::Unknown && carried.given(&r.name).is_none()
        })
        .map(|r| r.name.as_str())
        .collect();
    if !unreadable.is_empty() {
        cx.warnings.push(format!(
            "the passwords of {} cannot be read on {} (it does not let pgplan read pg_authid): they are created without one, so they cannot log in, unless `credentials.roles` gives them one",
            unreadable.join(", "),
            carried.source
        ));
    }
    let md5: Vec<&str> = carried
        .roles
        .iter()
        .filter(|r| r.password == PasswordKind::Md5 && carried.given(&r.name).is_none())
        .map(|r| r.name.as_str())
        .collect();
    if !md5.is_empty() {
        cx.warnings.push(format!(
            "{} {} an MD5 password hash, carried as it is: a target whose pg_hba.conf asks for scram-sha-256 will not accept it; give a password in `credentials.roles` to store it as SCRAM",
            md5.join(", "),
            if md5.len() == 1 { "has" } else { "have" }
        ));
    }
}

/// What the first verify checks of the carried roles.
fn role_checks(carried: &Carried) -> Option<Box<RoleChecks>> {
    (!carried.roles.is_empty()).then(|| {
        Box::new(RoleChecks {
            roles: carried.roles.clone(),
            passwords: carried.passwords.clone(),
        })
    })
}

/// "create, if missing, 2 roles (a, b) and 1 database (d) on …; carry 1 password"
fn prepare_summary(
    roles: &[Role],
    databases: &[(String, String)],
    carried: &Carried,
    c: &Chain<'_>,
) -> String {
    let named = |n: usize, what: &str, names: Vec<&str>| {
        const SHOWN: usize = 4;
        let mut list = names[..names.len().min(SHOWN)].join(", ");
        if names.len() > SHOWN {
            list.push_str(&format!(", and {} more", names.len() - SHOWN));
        }
        format!("{} ({list})", count(n as u64, what))
    };
    let mut parts = Vec::new();
    if !roles.is_empty() {
        parts.push(named(
            roles.len(),
            "role",
            roles.iter().map(|r| r.name.as_str()).collect(),
        ));
    }
    if !databases.is_empty() {
        parts.push(named(
            databases.len(),
            "database",
            databases.iter().map(|(d, _)| d.as_str()).collect(),
        ));
    }
    let mut out = if parts.is_empty() {
        format!("check the roles and databases on {}", c.target.locator())
    } else {
        format!(
            "create, if missing, {} on {}",
            parts.join(" and "),
            c.target.locator()
        )
    };
    let passwords = roles
        .iter()
        .filter(|r| carried.given(&r.name).is_some() || r.password.carried())
        .count();
    let memberships: usize = roles.iter().map(|r| r.member_of.len()).sum();
    let mut extra = Vec::new();
    if passwords > 0 {
        extra.push(count(passwords as u64, "password"));
    }
    if memberships > 0 {
        extra.push(count(memberships as u64, "membership"));
    }
    if !extra.is_empty() {
        out.push_str(&format!("; carry {}", extra.join(" and ")));
    }
    out
}
