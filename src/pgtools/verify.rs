//! Verifying a restored database against its backup manifest: the target
//! is measured the way the source was (same hash per table) and every
//! difference is listed, table by table; then the spec's SQL probes run.
//! A failure is one structured error the executor can print or serialize.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::contents::{self, Measure, Method};
use super::manifest::Manifest;
use super::mismatch::Mismatch;
use super::progress::{Phase, ProgressFn};
use super::roles::{check_roles, Privileges, RoleCheck, RolesChecked, PRIVILEGES_SQL};
use super::session::with_session;
use super::{PgError, Runner};
use crate::plan::VerifyChecks;
use crate::spec::SqlProbe;

/// Verification found differences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, miette::Diagnostic)]
#[serde(rename_all = "camelCase")]
#[error("verification of {database} on {server} failed: {}", summary(.mismatches))]
#[diagnostic(
    code(pgplan::pg::verify),
    help("the target does not hold what was backed up: consumers stay on the source and nothing is cleaned up; look for writes to the target during the move, then drop the target database and apply again to restore it afresh")
)]
pub struct VerifyFailure {
    pub database: String,
    pub server: String,
    pub mismatches: Vec<Mismatch>,
}

fn summary(mismatches: &[Mismatch]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = mismatches
        .iter()
        .take(SHOWN)
        .map(|m| m.to_string())
        .collect();
    if mismatches.len() > SHOWN {
        parts.push(format!("and {} more", mismatches.len() - SHOWN));
    }
    parts.join("; ")
}

/// What a successful verification compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub database: String,
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
    pub probes: u64,
    /// Grants and default privileges compared (none for an older manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<u64>,
    /// What was checked of the carried roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<RolesChecked>,
}

/// Sessions [`verify`] measures tables in.
pub const VERIFY_JOBS: u32 = 2;

/// Compares the runner's copy of `manifest.database` with the manifest as
/// `checks` asks, then runs `checks.sql` (each in its own database);
/// [`verify_in_sessions`] with [`VERIFY_JOBS`] sessions.
pub async fn verify(
    runner: &Runner<'_>,
    manifest: &Manifest,
    checks: &VerifyChecks,
    progress: ProgressFn<'_>,
) -> Result<Verified, PgError> {
    verify_all(runner, manifest, checks, &[], VERIFY_JOBS, progress).await
}

/// [`verify`], and the carried `roles` checked on the target as well
/// ([`check_roles`]); every difference is reported together.
pub async fn verify_with_roles(
    runner: &Runner<'_>,
    manifest: &Manifest,
    checks: &VerifyChecks,
    roles: &[RoleCheck<'_>],
    progress: ProgressFn<'_>,
) -> Result<Verified, PgError> {
    verify_all(runner, manifest, checks, roles, VERIFY_JOBS, progress).await
}

/// [`verify`], measuring tables in `jobs` sessions (shared out by size,
/// largest first; parallel query allowed in each).
pub async fn verify_in_sessions(
    runner: &Runner<'_>,
    manifest: &Manifest,
    checks: &VerifyChecks,
    jobs: u32,
    progress: ProgressFn<'_>,
) -> Result<Verified, PgError> {
    verify_all(runner, manifest, checks, &[], jobs, progress).await
}

async fn verify_all(
    runner: &Runner<'_>,
    manifest: &Manifest,
    checks: &VerifyChecks,
    roles: &[RoleCheck<'_>],
    jobs: u32,
    progress: ProgressFn<'_>,
) -> Result<Verified, PgError> {
    let mut mismatches = Vec::new();
    let counted = checks.row_counts || checks.checksums;
    let methods: HashMap<(String, String), Method> = manifest
        .tables
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t.method))
        .collect();
    let measured = if counted || checks.sequences {
        let what = Measure {
            checksums: checks.checksums,
            sequences: checks.sequences,
            methods: Some(&methods),
            phase: Phase::TargetChecksums,
        };
        let database = manifest.database.as_str();
        with_session(runner, database, |mut s| async move {
            contents::measure(runner, database, &mut s, None, jobs, &what, progress).await
        })
        .await?
    } else {
        contents::Contents::default()
    };

    if counted {
        let actual: BTreeMap<String, &contents::TableContents> =
            measured.tables.iter().map(|t| (t.qualified(), t)).collect();
        for want in &manifest.tables {
            let table = want.qualified();
            match actual.get(&table) {
                None => mismatches.push(Mismatch::MissingTable { table }),
                Some(got) if got.rows != want.rows => mismatches.push(Mismatch::RowCount {
                    table,
                    expected: want.rows,
                    actual: got.rows,
                }),
                // A knex lock table differs by design once pgplan has
                // released the lock (seed 004): its row count is enough.
                Some(got)
                    if checks.checksums
                        && got.checksum != want.checksum
                        && !want.name.ends_with("knex_migrations_lock") =>
                {
                    mismatches.push(Mismatch::Checksum { table })
                }
                Some(_) => {}
            }
        }
        let expected: std::collections::BTreeSet<String> =
            manifest.tables.iter().map(|t| t.qualified()).collect();
        for table in actual.keys().filter(|t| !expected.contains(*t)) {
            mismatches.push(Mismatch::ExtraTable {
                table: table.clone(),
            });
        }
    }
    if checks.sequences {
        let actual: BTreeMap<String, Option<i64>> = measured
            .sequences
            .iter()
            .map(|s| (format!("{}.{}", s.schema, s.name), s.last_value))
            .collect();
        for want in &manifest.sequences {
            let sequence = format!("{}.{}", want.schema, want.name);
            match actual.get(&sequence) {
                None => mismatches.push(Mismatch::MissingSequence { sequence }),
                // At or past the manifest's value: pg_dump read sequences a
                // moment after it (they are not transactional), and a
                // sequence ahead only leaves a gap. Behind would hand out
                // numbers already used. `None` (never used) sorts first.
                Some(got) if *got < want.last_value => mismatches.push(Mismatch::Sequence {
                    sequence,
                    expected: want.last_value,
                    actual: *got,
                }),
                Some(_) => {}
            }
        }
    }
    for probe in &checks.sql {
        if let Some(m) = run_probe(runner, probe).await? {
            mismatches.push(m);
        }
    }
    // Grants and default privileges come with the dump (as ACL and DEFAULT
    // ACL entries): the target must have exactly the backup's. A manifest
    // written before they were recorded has none to compare.
    if let Some(want) = &manifest.privileges {
        let got = Privileges::parse(
            &runner.server(),
            &runner.query(&manifest.database, PRIVILEGES_SQL).await?,
        )?;
        let lines = |p: &Privileges| -> std::collections::BTreeSet<String> {
            p.default_privileges
                .iter()
                .map(|d| format!("default {d}"))
                .chain(p.grants.iter().cloned())
                .collect()
        };
        let (want, got) = (lines(want), lines(&got));
        for p in want.difference(&got) {
            mismatches.push(Mismatch::MissingPrivilege {
                privilege: p.clone(),
            });
        }
        for p in got.difference(&want) {
            mismatches.push(Mismatch::ExtraPrivilege {
                privilege: p.clone(),
            });
        }
    }
    let mut checked_roles = None;
    if !roles.is_empty() {
        let (checked, bad) = check_roles(runner, &manifest.database, roles).await?;
        mismatches.extend(bad);
        checked_roles = Some(checked);
    }
    if !mismatches.is_empty() {
        return Err(PgError::Verify(Box::new(VerifyFailure {
            database: manifest.database.clone(),
            server: runner.server(),
            mismatches,
        })));
    }
    Ok(Verified {
        database: manifest.database.clone(),
        tables: measured.tables.len() as u64,
        rows: measured.tables.iter().map(|t| t.rows).sum(),
        sequences: measured.sequences.len() as u64,
        probes: checks.sql.len() as u64,
        privileges: manifest
            .privileges
            .as_ref()
            .map(|p| (p.default_privileges.len() + p.grants.len()) as u64),
        roles: checked_roles,
    })
}

/// Runs one probe: the first column of the first row must equal `expect`
/// (NULL and no row read as the empty string). An SQL error is a mismatch
/// too; a connection failure is an error.
async fn run_probe(runner: &Runner<'_>, probe: &SqlProbe) -> Result<Option<Mismatch>, PgError> {
    let argv: Vec<String> = [
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\u{1f}",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &probe.database,
        "-c",
        &probe.query,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let actual = match runner.output(&argv).await {
        Ok(out) => out
            .lines()
            .next()
            .unwrap_or_default()
            .split('\u{1f}')
            .next()
            .unwrap_or_default()
            .to_string(),
        Err(PgError::Command { stderr, .. }) => format!("error: {stderr}"),
        Err(e) => return Err(e),
    };
    Ok((actual != probe.expect).then(|| Mismatch::Probe {
        name: probe.name.clone(),
        database: probe.database.clone(),
        expected: probe.expect.clone(),
        actual,
    }))
}
