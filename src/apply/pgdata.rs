//! The steps that move and check data — backup, prepare, restore, unlock,
//! verify, and tuning a fresh target for loading — each with its
//! compensation, and the rollback's restore of a source whose data lived
//! in its pod. The SQL is pgtools'; this module decides what to run where.
//!
//! Each backup, prepare, restore, unlock and verify runs under a stall
//! watch: with no progress for the placement's `backup.stallTimeout`
//! (bytes moved, tables measured, or the server busy with pgplan's
//! statements) the step fails, its tools are stopped, and the apply rolls
//! back.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use super::outcome::{BackedUp, Outcome, StepError, Undo, VerifiersRead};
use super::servers;
use super::world::{World, READY_TIMEOUT};
use crate::pgtools::backup::BackupOptions;
use crate::pgtools::manifest::Manifest;
use crate::pgtools::restore::RestoreOptions;
use crate::pgtools::tune::LoadTuning;
use crate::pgtools::{self, stall::Watch};
use crate::plan::{
    DatabaseFacts, ObjectRef, RoleChecks, RolePassword, ServerRef, Step, VerifyChecks,
};
use crate::spec::DumpFormat;

/// The outcomes of the steps done so far (or of those a step depends on), by address.
pub type Done = BTreeMap<String, Outcome>;

/// Run `work` under the stall watch of `step`'s placement; the probe that
/// looks at the server gets its own runner (the step's may be busy
/// streaming).
async fn watched(
    w: &World<'_>,
    step: &Step,
    server: &ServerRef,
    database: Option<&str>,
    watch: &Watch,
    work: impl Future<Output = Result<Outcome, StepError>>,
) -> Result<Outcome, StepError> {
    let probe = servers::runner(w, server).await?;
    pgtools::stall::guard(
        work,
        watch,
        w.stall_timeout(&step.placement),
        &probe,
        database,
    )
    .await
}

/// Where a backup step dumps.
pub enum BackupTo<'a> {
    /// The spec's `backup.directory` on this machine.
    Directory(&'a str),
    /// The backup claim, by a tools pod beside the source.
    Claim(&'a ObjectRef),
}

impl<'a> BackupTo<'a> {
    /// The claim when the plan names one, else the directory.
    pub fn of(claim: Option<&'a ObjectRef>, directory: &'a str) -> BackupTo<'a> {
        claim.map_or(BackupTo::Directory(directory), BackupTo::Claim)
    }
}

/// Dump one database into this run's backup directory (or onto the backup
/// claim), read it back and list it; with `verifiers`, read the source's
/// roles and passwords too.
pub async fn backup(
    w: &World<'_>,
    step: &Step,
    server: &ServerRef,
    database: &DatabaseFacts,
    (format, jobs): (DumpFormat, u32),
    to: BackupTo<'_>,
    verifiers: bool,
) -> Result<Outcome, StepError> {
    // The plan's format and parallelism, pgplan's defaults for the rest.
    let options = BackupOptions {
        format,
        jobs,
        ..BackupOptions::default()
    };
    let watch = Watch::default();
    let progress = progress_to(w, &step.address, Some(database.size_bytes), &watch);
    let claim = match to {
        BackupTo::Claim(claim) => claim,
        BackupTo::Directory(directory) => {
            let root = backup_root(w, directory);
            let work = async {
                let r = servers::runner(w, server).await?;
                let (paths, manifest) = pgtools::backup::backup(
                    &r,
                    &root,
                    &step.placement,
                    &database.name,
                    &options,
                    &progress,
                )
                .await?;
                let kept = Kept::Local(&paths.dir);
                backed_up(
                    w,
                    step,
                    server,
                    &r,
                    kept,
                    (paths.archive, paths.manifest),
                    &manifest,
                    verifiers,
                )
                .await
            };
            let result = watched(w, step, server, Some(&database.name), &watch, work).await;
            if result.is_err() {
                // A step stopped by the watch left its partial archive behind.
                let paths = pgtools::backup_paths(&root, &step.placement, &database.name);
                let _ = pgtools::archive::remove(&pgtools::archive::partial_of(&paths.archive));
            }
            return result;
        }
    };
    let tools = super::datapod::start(w, step, claim, server).await?;
    let work = async {
        let r = servers::runner(w, server).await?;
        let t = tools.runner();
        let root = format!("{}/{}", pgtools::claim::MOUNT, w.run.file_name());
        let (paths, manifest) = pgtools::claim::backup(
            &r,
            &t,
            &root,
            (&step.placement, &database.name),
            &options,
            &progress,
        )
        .await?;
        let text = manifest.to_bytes(Path::new(&paths.manifest))?;
        w.keep(claim, Path::new(&paths.manifest), &text);
        let kept = Kept::Claim {
            claim,
            tools: &t,
            dir: &paths.dir,
        };
        let files = (
            PathBuf::from(&paths.archive),
            PathBuf::from(&paths.manifest),
        );
        backed_up(w, step, server, &r, kept, files, &manifest, verifiers).await
    };
    let result = watched(w, step, server, Some(&database.name), &watch, work).await;
    tools.remove().await;
    result
}

/// Where a backup's roles file is written.
enum Kept<'k> {
    Local(&'k Path),
    Claim {
        claim: &'k ObjectRef,
        tools: &'k pgtools::Runner<'k>,
        dir: &'k str,
    },
}

/// The outcome of a backup written (`files`: archive and manifest); with
/// `verifiers`, the source's roles and passwords read through `r` and kept
/// beside the archive (0600), the journal recording only where.
#[allow(clippy::too_many_arguments)]
async fn backed_up(
    w: &World<'_>,
    step: &Step,
    server: &ServerRef,
    r: &pgtools::Runner<'_>,
    kept: Kept<'_>,
    (archive, manifest_path): (PathBuf, PathBuf),
    manifest: &Manifest,
    verifiers: bool,
) -> Result<Outcome, StepError> {
    // The archive has been read back (sha256 equal to what was written)
    // and listed with the server's own pg_restore before it was committed:
    // the invariant is a *verified* backup.
    let mut done = BackedUp {
        placement: step.placement.clone(),
        claim: match &kept {
            Kept::Claim { claim, .. } => Some((*claim).clone()),
            Kept::Local(_) => None,
        },
        rows: manifest.tables.iter().map(|t| t.rows).sum(),
        archive,
        manifest: manifest_path,
        bytes: manifest.bytes,
        sha256: manifest.sha256.clone(),
        verifiers: None,
    };
    if verifiers {
        // Read while the source is up (it may be gone when the target is
        // prepared).
        let mut v = pgtools::roles::read_verifiers(r).await?;
        // The roles as they are now, too: a rollback that recreates a
        // source whose data was in its pod recreates them from here.
        v.roles = pgtools::inventory::server(r, &server.locator().to_string(), &|_| false)
            .await?
            .roles;
        let file = format!("{}.roles.json", manifest.database);
        let path = match kept {
            Kept::Local(dir) => {
                let path = dir.join(file);
                pgtools::roles::write_verifiers(&path, &v)?;
                path
            }
            Kept::Claim { claim, tools, dir } => {
                let path = PathBuf::from(format!("{dir}/{file}"));
                let bytes = pgtools::roles::verifiers_bytes(&path, &v)?;
                pgtools::claim::write_file(tools, &format!("{dir}/{file}"), &bytes).await?;
                w.keep(claim, &path, &bytes);
                path
            }
        };
        done.verifiers = Some(VerifiersRead {
            path,
            readable: v.readable,
            passwords: v.len(),
            server: r.server(),
        });
    }
    Ok(Outcome::BackedUp(done))
}

/// A small file a backup wrote (its manifest, its roles file), from its
/// claim: kept by this process, else read by a tools pod beside `near`.
async fn claim_file(
    w: &World<'_>,
    step: &Step,
    claim: &ObjectRef,
    path: &Path,
    near: &ServerRef,
) -> Result<Vec<u8>, StepError> {
    if let Some(bytes) = w.kept(claim, path) {
        return Ok(bytes);
    }
    let tools = super::datapod::start(w, step, claim, near).await?;
    let read = pgtools::claim::read_file(&tools.runner(), &path.to_string_lossy()).await;
    tools.remove().await;
    let bytes = read?;
    w.keep(claim, path, &bytes);
    Ok(bytes)
}

/// The manifest of a backup, wherever it is.
async fn manifest_of_backup(
    w: &World<'_>,
    step: &Step,
    b: &BackedUp,
    near: &ServerRef,
) -> Result<Manifest, StepError> {
    match &b.claim {
        None => Ok(Manifest::read(&b.manifest)?),
        Some(claim) => {
            let bytes = claim_file(w, step, claim, &b.manifest, near).await?;
            Ok(Manifest::parse(&bytes, &b.manifest)?)
        }
    }
}

/// What prepare creates on the target.
pub struct Prepare<'p> {
    pub server: &'p ServerRef,
    pub roles: &'p [crate::observed::Role],
    pub databases: &'p [(String, String)],
    pub strip_superuser: bool,
    pub passwords: &'p [RolePassword],
    pub verifiers_from: Option<&'p str>,
}

/// Create the missing roles and databases on the target, with the
/// source's attributes, memberships and passwords.
pub async fn prepare(
    w: &World<'_>,
    step: &Step,
    p: Prepare<'_>,
    deps: &Done,
) -> Result<Outcome, StepError> {
    let watch = Watch::default();
    let work = async {
        let verifiers = verifiers_of(w, step, deps, p.verifiers_from, p.server).await?;
        let given = given_passwords(w, p.passwords)?;
        let r = servers::runner(w, p.server).await?;
        let prepared = pgtools::prepare_target_with(
            &r,
            p.roles,
            p.databases,
            p.strip_superuser,
            pgtools::Passwords {
                verifiers: verifiers.as_ref(),
                given: Some(&given),
            },
        )
        .await?;
        let note = prepared_note(&prepared, p.roles, verifiers.as_ref());
        Ok(Outcome::Prepared { prepared, note })
    };
    watched(w, step, p.server, None, &watch, work).await
}

/// Restore one database from the backup `backup_step` took. Resumed after
/// a crash mid-restore: a complete copy is kept, a partial one (this run's
/// own, into a database prepared empty) is dropped and restored afresh.
pub async fn restore(
    w: &World<'_>,
    step: &Step,
    server: &ServerRef,
    database: &DatabaseFacts,
    backup_step: &str,
    jobs: u32,
    deps: &Done,
) -> Result<Outcome, StepError> {
    let watch = Watch::default();
    let progress = progress_to(w, &step.address, None, &watch);
    let work = async {
        let backup = backup_of(deps, backup_step)?;
        let manifest = manifest_of_backup(w, step, backup, server).await?;
        let r = servers::runner(w, server).await?;
        if pgtools::has_tables(&r, &database.name).await? {
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
                return Ok(Outcome::Restored { entries: None });
            }
            pgtools::reset_database(&r, &database.name, &manifest.owner).await?;
        }
        let options = RestoreOptions {
            jobs,
            run_id: w.run.file_name(),
            ..RestoreOptions::default()
        };
        let restored = restore_backup(w, step, backup, (server, &r), &options, &progress).await?;
        Ok(Outcome::Restored {
            entries: Some(restored.entries),
        })
    };
    watched(w, step, server, Some(&database.name), &watch, work).await
}

/// Restores a backup into the server `to` (whose tools run through its
/// runner): from this machine's disk, or from its claim by a tools pod
/// beside the server.
async fn restore_backup(
    w: &World<'_>,
    step: &Step,
    backup: &BackedUp,
    (to, r): (&ServerRef, &pgtools::Runner<'_>),
    options: &RestoreOptions,
    progress: pgtools::ProgressFn<'_>,
) -> Result<pgtools::Restored, StepError> {
    let Some(claim) = &backup.claim else {
        return Ok(pgtools::restore::restore(r, &backup.manifest, options, progress).await?);
    };
    let tools = super::datapod::start(w, step, claim, to).await?;
    let manifest = backup.manifest.to_string_lossy();
    let restored = pgtools::claim::restore(&tools.runner(), r, &manifest, options, progress).await;
    tools.remove().await;
    Ok(restored?)
}

/// Empty every locked `%knex_migrations_lock` table of a database.
pub async fn release_knex_locks(
    w: &World<'_>,
    step: &Step,
    server: &ServerRef,
    database: &str,
    tables: &[String],
) -> Result<Outcome, StepError> {
    let watch = Watch::default();
    let work = async {
        let r = servers::runner(w, server).await?;
        let released = pgtools::knex::release_knex_locks(&r, database, tables).await?;
        Ok(Outcome::LocksReleased { released })
    };
    watched(w, step, server, Some(database), &watch, work).await
}

/// Compare the restored database with the backup's manifest, and the
/// carried roles with the source's.
pub async fn verify(
    w: &World<'_>,
    step: &Step,
    target: &ServerRef,
    database: &DatabaseFacts,
    backup_step: &str,
    (checks, roles): (&VerifyChecks, Option<&RoleChecks>),
    deps: &Done,
) -> Result<Outcome, StepError> {
    let watch = Watch::default();
    let progress = progress_to(w, &step.address, None, &watch);
    let work = verify_unwatched(
        w,
        step,
        target,
        backup_step,
        (checks, roles),
        deps,
        &progress,
    );
    watched(w, step, target, Some(&database.name), &watch, work).await
}

async fn verify_unwatched(
    w: &World<'_>,
    step: &Step,
    target: &ServerRef,
    backup_step: &str,
    (checks, roles): (&VerifyChecks, Option<&RoleChecks>),
    deps: &Done,
    progress: pgtools::ProgressFn<'_>,
) -> Result<Outcome, StepError> {
    let backup = backup_of(deps, backup_step)?;
    let manifest = manifest_of_backup(w, step, backup, target).await?;
    let (verifiers, given) = match roles {
        Some(rc) => (
            verifiers_of(w, step, deps, Some(backup_step), target).await?,
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
    let r = servers::runner(w, target).await?;
    let verified =
        pgtools::verify_with_roles(&r, &manifest, checks, &role_checks, progress).await?;
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
    Ok(Outcome::Verified { verified, note })
}

/// Tune the fresh target for loading; restart it when minimal WAL is wanted
/// and not yet in effect (so a resumed apply does not restart it again).
pub async fn tune(
    w: &World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
    minimal_wal: bool,
) -> Result<Outcome, StepError> {
    let r = servers::pod_runner(w, server, pod)?;
    // A resumed apply may find the pod still coming back from a restart.
    pgtools::wait_accepting(&r, READY_TIMEOUT).await?;
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
        let r = servers::restart_server(w, server, pod).await?;
        let level = pgtools::tune::wal_level(&r).await?;
        if level != "minimal" {
            return Err(StepError::new(format!(
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
    Ok(Outcome::Tuned {
        restarted,
        settings,
    })
}

/// Put the settings back (restarting when one of them needs it), then make
/// what was loaded durable. Idempotent: a resumed apply finds nothing to
/// reset and nothing pending, and only checkpoints again.
pub async fn untune(
    w: &World<'_>,
    server: &ServerRef,
    pod: &ObjectRef,
) -> Result<Outcome, StepError> {
    let r = servers::pod_runner(w, server, pod)?;
    pgtools::wait_accepting(&r, READY_TIMEOUT).await?;
    let pending = pgtools::untune(&r).await?;
    let restart = !pending.is_empty() || pgtools::tune::wal_level(&r).await? == "minimal";
    let r = if restart {
        let r = servers::restart_server(w, server, pod).await?;
        let still = pgtools::tune::pending_restart(&r).await?;
        if !still.is_empty() || pgtools::tune::wal_level(&r).await? == "minimal" {
            return Err(StepError::new(format!(
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
    Ok(Outcome::Untuned { restarted: restart })
}

/// Drop what prepare created on a server that outlives the rollback (RDS,
/// external); an in-cluster target goes away with its StatefulSet.
pub async fn undo_prepare(
    w: &World<'_>,
    server: &ServerRef,
    roles: &[crate::observed::Role],
    databases: &[(String, String)],
    outcome: Option<&Outcome>,
) -> Result<Undo, StepError> {
    if matches!(server, ServerRef::Pod { .. }) {
        return Ok(Undo::Nothing);
    }
    // What it recorded creating; if it failed before recording, what it was
    // to create (none of it existed when the plan was made).
    let (dbs, created_roles): (Vec<String>, Vec<String>) = match outcome {
        Some(Outcome::Prepared { prepared, .. }) => {
            (prepared.databases.clone(), prepared.roles.clone())
        }
        _ => (
            databases.iter().map(|(d, _)| d.clone()).collect(),
            roles.iter().map(|r| r.name.clone()).collect(),
        ),
    };
    let r = servers::runner(w, server).await?;
    let dropped = pgtools::drop_prepared(&r, &dbs, &created_roles).await?;
    if dropped.is_empty() {
        return Ok(Undo::Nothing);
    }
    Ok(Undo::Undone(format!(
        "dropped {} on {}",
        dropped.join(", "),
        server.locator()
    )))
}

/// A backup is kept, always: it is the way back.
pub fn undo_backup(outcome: Option<&Outcome>) -> Undo {
    let at = outcome
        .and_then(Outcome::backup)
        .map(BackedUp::location)
        .unwrap_or_else(|| "the backup directory".into());
    Undo::Kept(format!("the backup stays at {at}"))
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

/// The source's verifiers a backup step read (`from`), if any; from its
/// claim through a tools pod beside `near` when it is there.
async fn verifiers_of(
    w: &World<'_>,
    step: &Step,
    deps: &Done,
    from: Option<&str>,
    near: &ServerRef,
) -> Result<Option<pgtools::roles::Verifiers>, StepError> {
    let Some(from) = from else { return Ok(None) };
    let Some(b) = deps.get(from).and_then(Outcome::backup) else {
        return Ok(None);
    };
    let Some(v) = &b.verifiers else {
        return Ok(None);
    };
    match &b.claim {
        None => Ok(Some(pgtools::roles::read_verifiers_file(&v.path)?)),
        Some(claim) => {
            let bytes = claim_file(w, step, claim, &v.path, near).await?;
            Ok(Some(pgtools::roles::parse_verifiers(&bytes, &v.path)?))
        }
    }
}

/// The backup a finished backup step recorded.
fn backup_of<'d>(deps: &'d Done, backup_step: &str) -> Result<&'d BackedUp, StepError> {
    deps.get(backup_step)
        .and_then(Outcome::backup)
        .ok_or_else(|| StepError::new(format!("no backup manifest recorded by {backup_step}")))
}

/// The passwords the spec gives, read from the environment now; each
/// becomes a secret no log line may show.
fn given_passwords(
    w: &World<'_>,
    passwords: &[crate::plan::RolePassword],
) -> Result<BTreeMap<String, String>, StepError> {
    let mut out = BTreeMap::new();
    for p in passwords {
        let value = w.var(
            &p.var,
            &format!(" (the password of role {} in `credentials.roles`)", p.role),
        )?;
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

/// Restore the backups into a recreated source whose data lived in its
/// pod (the rollback of deleting it).
pub async fn restore_source(w: &World<'_>, step: &Step, done: &Done) -> Result<String, StepError> {
    let mut restored = Vec::new();
    let mut found = Vec::new();
    for dep in &step.depends_on {
        let Some(backup) = done.get(dep).and_then(Outcome::backup) else {
            continue;
        };
        let manifest_path = &backup.manifest;
        let Some(server) = source_server(step) else {
            continue;
        };
        let manifest = manifest_of_backup(w, step, backup, &server).await?;
        let r = servers::runner(w, &server).await?;
        // Tables there already: a rollback that stopped after (or while)
        // restoring it is being resumed. Never restore over them; verify.
        let present = pgtools::has_tables(&r, &manifest.database).await?;
        if !present {
            // The pod's data went with it, roles too: they come back as the
            // backup read them (attributes, memberships, passwords), or the
            // restore's grants to them would fail.
            let v = source_roles(w, step, done, &server).await?;
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
            let no_progress = &crate::pgtools::progress::no_progress;
            restore_backup(w, step, backup, (&server, &r), &options, no_progress).await?;
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
                return Err(StepError::new(format!(
                    "database {} on the recreated {} already holds tables, and they do not match the backup ({e}); a rollback may have stopped while restoring it. Drop that database, then `pgplan apply --resume` restores it again from {}",
                    manifest.database,
                    server.locator(),
                    manifest_path.display()
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
async fn source_roles(
    w: &World<'_>,
    step: &Step,
    done: &Done,
    near: &ServerRef,
) -> Result<Option<pgtools::roles::Verifiers>, StepError> {
    let placement = &step.placement;
    let from = done
        .iter()
        .find(|(_, o)| {
            o.backup()
                .is_some_and(|b| &b.placement == placement && b.verifiers.is_some())
        })
        .map(|(a, _)| a.as_str());
    verifiers_of(w, step, done, from, near).await
}

/// The source server of a deleted workload, from its manifest.
fn source_server(step: &Step) -> Option<ServerRef> {
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
