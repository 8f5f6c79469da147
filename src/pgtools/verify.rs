//! Verifying a restored database against its backup manifest: the target
//! is measured the way the source was (same hash per table) and every
//! difference is listed, table by table; then the spec's SQL probes run.
//! A failure is one structured error the executor can print or serialize.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use super::contents::{self, Measure, Method};
use super::manifest::Manifest;
use super::progress::{Phase, ProgressFn};
use super::session::with_session;
use super::{PgError, Runner};
use crate::plan::VerifyChecks;
use crate::spec::SqlProbe;

/// One difference between the target and the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Mismatch {
    /// A table of the backup is not on the target.
    MissingTable {
        table: String,
    },
    /// The target has a table the backup does not.
    ExtraTable {
        table: String,
    },
    RowCount {
        table: String,
        expected: u64,
        actual: u64,
    },
    /// Same row count, different contents.
    Checksum {
        table: String,
    },
    MissingSequence {
        sequence: String,
    },
    Sequence {
        sequence: String,
        expected: Option<i64>,
        actual: Option<i64>,
    },
    /// A SQL probe's first value differs from `expect` (or the query failed).
    Probe {
        name: String,
        database: String,
        expected: String,
        actual: String,
    },
}

fn value(v: Option<i64>) -> String {
    v.map_or_else(|| "unused".to_string(), |v| v.to_string())
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingTable { table } => write!(f, "table {table} is missing"),
            Mismatch::ExtraTable { table } => write!(f, "table {table} is not in the backup"),
            Mismatch::RowCount {
                table,
                expected,
                actual,
            } => write!(f, "table {table} has {actual} rows, the backup {expected}"),
            Mismatch::Checksum { table } => {
                write!(
                    f,
                    "table {table} has the backup's row count but different contents"
                )
            }
            Mismatch::MissingSequence { sequence } => write!(f, "sequence {sequence} is missing"),
            Mismatch::Sequence {
                sequence,
                expected,
                actual,
            } => write!(
                f,
                "sequence {sequence} is at {}, behind the backup's {}",
                value(*actual),
                value(*expected)
            ),
            Mismatch::Probe {
                name,
                database,
                expected,
                actual,
            } => write!(
                f,
                "probe `{name}` in {database} returned `{actual}`, expected `{expected}`"
            ),
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub database: String,
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
    pub probes: u64,
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
    verify_in_sessions(runner, manifest, checks, VERIFY_JOBS, progress).await
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
