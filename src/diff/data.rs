//! The data path every journey shares: which databases move, and the chain
//! backup → prepare target → restore → (knex unlock) → verify for each.

use std::collections::BTreeMap;

use serde_json::json;

use super::Ctx;
use crate::observed::{DatabaseInventory, ServerInventory};
use crate::plan::{
    Action, DatabaseFacts, ObjectRef, Operation, Risk, ServerRef, Step, VerifyChecks,
};
use crate::quantity::{count, human_bytes};
use crate::spec::LoadTuningMode;

/// Databases every server has that are never moved unless named exactly.
const SYSTEM_DATABASES: [&str; 4] = ["template0", "template1", "postgres", "rdsadmin"];

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
    let patterns = cx.p.spec().databases.clone();
    for (i, pat) in patterns.iter().enumerate() {
        let is_glob = pat.contains(['*', '?', '[']);
        let Ok(g) = glob::Pattern::new(pat) else {
            continue;
        };
        let mut hit = false;
        for db in &server.databases {
            let system = SYSTEM_DATABASES.contains(&db.name.as_str());
            if (is_glob && !system && g.matches(&db.name)) || (!is_glob && db.name == *pat) {
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
    dbs: &[&DatabaseInventory],
    deps: &[String],
) -> Vec<String> {
    let spec = cx.p.spec().clone();
    let name = cx.p.name().to_string();
    let mut out = Vec::new();
    for db in dbs {
        let f = facts(db);
        let mut s = cx.new_step(
            format!("pg/{name}/{}/backup", db.name),
            Action::Run,
            Risk::Safe,
            Operation::Backup {
                server: source.clone(),
                database: f.clone(),
                format: spec.backup.format,
                jobs: spec.backup.jobs,
                directory: spec.backup.directory.clone(),
            },
        );
        s.summary = format!(
            "back up {} ({}, {}, {}) from {}",
            db.name,
            human_bytes(db.size_bytes),
            count(f.tables, "table"),
            count(f.rows, "row"),
            source.locator()
        );
        s.reason = "no step that can lose data runs before a verified backup exists: the dump is checksummed, read back with `pg_restore --list`, and row counts and sequences are recorded".into();
        s.depends_on = deps.to_vec();
        s.after = Some(json!({
            "database": db.name,
            "from": source.locator(),
            "format": format!("{:?}", spec.backup.format).to_lowercase(),
            "sizeBytes": db.size_bytes,
            "tables": f.tables,
            "rows": f.rows,
            "directory": spec.backup.directory,
        }));
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
    let name = cx.p.name().to_string();
    let mut verifies = Vec::new();
    if dbs.is_empty() {
        return verifies;
    }
    // Roles first (ownership is restored with the data), then databases.
    let existing_roles: Vec<&str> = c
        .target_server
        .map(|t| t.roles.iter().map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    let roles: Vec<crate::observed::Role> = c
        .source_server
        .roles
        .iter()
        .filter(|r| !r.name.starts_with("pg_") && !SYSTEM_DATABASES.contains(&r.name.as_str()))
        .filter(|r| !existing_roles.contains(&r.name.as_str()))
        .cloned()
        .map(|mut r| {
            if c.strip_superuser {
                r.superuser = false;
            }
            r
        })
        .collect();
    let existing_dbs: Vec<&str> = c
        .target_server
        .map(|t| t.databases.iter().map(|d| d.name.as_str()).collect())
        .unwrap_or_default();
    let databases: Vec<(String, String)> = dbs
        .iter()
        .filter(|d| !existing_dbs.contains(&d.name.as_str()))
        .map(|d| (d.name.clone(), d.owner.clone()))
        .collect();
    let mut prepare = cx.new_step(
        format!("pg/{name}/prepare"),
        Action::Run,
        Risk::Safe,
        Operation::PrepareTarget {
            server: c.target.clone(),
            roles: roles.clone(),
            databases: databases.clone(),
            strip_superuser: c.strip_superuser,
        },
    );
    prepare.summary = format!(
        "create {} and {} on {}",
        count(roles.len() as u64, "role"),
        count(databases.len() as u64, "database"),
        c.target.locator()
    );
    prepare.reason = if c.strip_superuser {
        "restores keep ownership, so owners must exist first; RDS has no superuser, so roles are created without SUPERUSER".into()
    } else {
        "restores keep ownership, so owners must exist first (existing ones are left alone)".into()
    };
    prepare.depends_on = c.target_ready.to_vec();
    prepare.after = Some(json!({
        "server": c.target.locator(),
        "roles": roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        "databases": databases.iter().map(|(d, o)| json!({"name": d, "owner": o})).collect::<Vec<_>>(),
    }));
    let prepare_addr = cx.push(prepare);

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
            for (db, b) in dbs.iter().zip(backups) {
                verifies.push(verify(cx, c, db, b, std::slice::from_ref(&untuned)));
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
            for (db, b) in dbs.iter().zip(backups) {
                let restored = restore(cx, c, db, b, &prepare_deps, untuned.as_deref());
                verifies.push(verify(cx, c, db, b, std::slice::from_ref(&restored)));
            }
        }
    }
    verifies
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
) -> (Step, bool) {
    let restart = minimal_wal(t.mode, dbs);
    let step = cx.new_step(
        format!("pg/{}/{suffix}", cx.p.name()),
        Action::Run,
        Risk::Safe,
        operation(c.target.clone(), t.pod.clone(), restart),
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
    );
    let pod = t.pod.display();
    s.summary = if restart {
        format!("tune {pod} for loading: no fsync, minimal WAL, autovacuum off (restarts it)")
    } else {
        format!("tune {pod} for loading: no fsync or full-page writes, autovacuum off (by reload)")
    };
    let size = human_bytes(bytes_to_load(dbs));
    let why = match (t.mode, restart) {
        (LoadTuningMode::Auto, true) => format!(
            "minimal WAL needs a restart, which pays off for the {size} to load (`loadTuning: auto` restarts from {})",
            human_bytes(RESTART_FROM_BYTES)
        ),
        (_, true) => "`loadTuning: restart`: minimal WAL, which needs a restart".into(),
        // `auto` never tunes by reload (it does not tune below the threshold).
        (_, false) => "`loadTuning: reload`: settings a reload applies".into(),
    };
    s.reason = format!(
        "the new server holds nothing but the restore, which is redone from the backup if it crashes, so it loads without durability as CloudNativePG's import does; {why}"
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
    let (mut s, restart) = tuning_step(cx, c, t, dbs, "untune", |server, pod, minimal_wal| {
        Operation::UntuneAfterLoading {
            server,
            pod,
            minimal_wal,
        }
    });
    let pod = t.pod.display();
    s.summary = if restart {
        format!("put {pod}'s settings back (restarts it), checkpoint and sync")
    } else {
        format!("put {pod}'s settings back, checkpoint and sync")
    };
    s.reason =
        "the restored data is verified as it will serve: durable, on the server's own settings"
            .into();
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
    let mut r = cx.new_step(
        format!("pg/{name}/{}/restore", db.name),
        Action::Run,
        Risk::Safe,
        Operation::Restore {
            server: c.target.clone(),
            database: f.clone(),
            backup_step: backup.to_string(),
            jobs,
        },
    );
    r.summary = format!(
        "restore {} into {} ({} parallel jobs)",
        db.name,
        c.target.locator(),
        jobs
    );
    r.reason = format!(
        "the restore stops at the first error and names the archive entry that failed{}",
        untuned.unwrap_or_default()
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
) -> String {
    let spec = cx.p.spec().clone();
    let name = cx.p.name().to_string();
    let f = facts(db);
    let mut v = cx.new_step(
        format!("pg/{name}/{}/verify", db.name),
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
        },
    );
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
    v.summary = format!(
        "verify {} on {}: {}{}",
        db.name,
        c.target.locator(),
        if checks.is_empty() {
            "existence".to_string()
        } else {
            checks.join(", ")
        },
        if probes > 0 {
            format!(", {}", count(probes as u64, "SQL probe"))
        } else {
            String::new()
        }
    );
    v.reason = "nothing is cleaned up and no consumer is switched until the restored data matches the backup manifest".into();
    v.depends_on = deps.to_vec();
    v.after = Some(
        json!({"database": db.name, "expectRows": f.rows, "expectTables": f.tables, "checks": checks}),
    );
    let mut ready = cx.push(v);
    let locked: Vec<String> = db
        .knex_locks
        .iter()
        .filter(|l| l.locked)
        .map(|l| format!("{}.{}", l.schema, l.table))
        .collect();
    if !locked.is_empty() {
        let mut k = cx.new_step(
            format!("pg/{name}/{}/knex-unlock", db.name),
            Action::Run,
            Risk::Safe,
            Operation::ReleaseKnexLocks {
                server: c.target.clone(),
                database: db.name.clone(),
                tables: locked.clone(),
            },
        );
        k.summary = format!("release {} in {}", locked.join(", "), db.name);
        k.reason = "a migration lock copied in the locked state makes Backstage crash-loop with `Migration table is already locked`; released after verify, which compares the copy with the backup as taken".into();
        k.depends_on = vec![ready.clone()];
        k.after = Some(json!({"database": db.name, "tables": locked}));
        ready = cx.push(k);
    }

    cx.databases.push(f);
    ready
}
