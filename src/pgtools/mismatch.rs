//! A difference between a restored database and its backup's manifest:
//! what verify reports, and what a role check reports too (the leaf both
//! depend on).

use std::fmt;

use serde::Serialize;

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
    /// A default privilege or grant of the backup is not on the target.
    MissingPrivilege {
        privilege: String,
    },
    /// The target has a default privilege or grant the backup does not.
    ExtraPrivilege {
        privilege: String,
    },
    /// A role prepare carried is not on the target.
    RoleMissing {
        role: String,
    },
    RoleAttributes {
        role: String,
        expected: String,
        actual: String,
    },
    RoleSettings {
        role: String,
        expected: Vec<String>,
        actual: Vec<String>,
    },
    /// Memberships as `group` or `group (admin)`.
    RoleMemberships {
        role: String,
        expected: Vec<String>,
        actual: Vec<String>,
    },
    /// The verifier on the target is not the source's (neither is shown).
    RolePassword {
        role: String,
    },
    /// A login with the password the spec gives failed.
    RoleLogin {
        role: String,
        error: String,
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
            Mismatch::MissingPrivilege { privilege } => {
                write!(f, "privilege `{privilege}` is missing")
            }
            Mismatch::ExtraPrivilege { privilege } => {
                write!(f, "privilege `{privilege}` is not in the backup")
            }
            Mismatch::RoleMissing { role } => write!(f, "role {role} is missing"),
            Mismatch::RoleAttributes {
                role,
                expected,
                actual,
            } => write!(f, "role {role} has `{actual}`, the source `{expected}`"),
            Mismatch::RoleSettings {
                role,
                expected,
                actual,
            } => write!(
                f,
                "role {role} has settings [{}], the source [{}]",
                actual.join(", "),
                expected.join(", ")
            ),
            Mismatch::RoleMemberships {
                role,
                expected,
                actual,
            } => write!(
                f,
                "role {role} is a member of [{}], on the source of [{}]",
                actual.join(", "),
                expected.join(", ")
            ),
            Mismatch::RolePassword { role } => write!(
                f,
                "role {role}'s password on the target is not the source's: it could not log in as before"
            ),
            Mismatch::RoleLogin { role, error } => write!(
                f,
                "role {role} cannot log in with the password the spec gives: {error}"
            ),
        }
    }
}
