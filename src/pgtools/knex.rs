//! Releasing knex migration locks left set in a copied database (seed 004:
//! Backstage crash-loops with "Migration table is already locked").
//!
//! pgplan does what `knex migrate:unlock` does, `UPDATE … SET is_locked = 0`,
//! rather than the seed's `DELETE`: the row stays, so the table looks the
//! way knex left it after a clean run, and knex works either way (it
//! re-inserts a missing row). Only tables named `%knex_migrations_lock`
//! are touched, all in one statement (one transaction).

use super::contents::ident;
use super::{PgError, Runner};

/// Unlocks each `schema.table` of `tables` (all `%knex_migrations_lock`)
/// in `database`. Returns the tables that were locked, in the order
/// given; a second call returns none.
pub async fn release_knex_locks(
    runner: &Runner<'_>,
    database: &str,
    tables: &[String],
) -> Result<Vec<String>, PgError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut ctes = Vec::new();
    let mut counts = Vec::new();
    for (i, qualified) in tables.iter().enumerate() {
        let (schema, table) = qualified.split_once('.').unwrap_or(("public", qualified));
        if !table.ends_with("knex_migrations_lock") {
            return Err(PgError::Refused {
                server: runner.server(),
                message: format!("{qualified} in {database} is not a knex migration lock table"),
                help: "only tables named `…knex_migrations_lock` are unlocked".into(),
            });
        }
        ctes.push(format!(
            "u{i} AS (UPDATE {}.{} SET is_locked = 0 WHERE is_locked <> 0 RETURNING 1)",
            ident(schema),
            ident(table)
        ));
        counts.push(format!("(SELECT count(*) FROM u{i})"));
    }
    let sql = format!(
        "WITH {} SELECT concat_ws(',', {})",
        ctes.join(", "),
        counts.join(", ")
    );
    let out = runner.query(database, &sql).await?;
    let released: Vec<bool> = out.trim().split(',').map(|n| n != "0").collect();
    if released.len() != tables.len() {
        return Err(PgError::Output {
            server: runner.server(),
            command: "the knex unlock statement".into(),
            message: format!("`{}`", out.trim()),
        });
    }
    Ok(tables
        .iter()
        .zip(released)
        .filter(|(_, r)| *r)
        .map(|(t, _)| t.clone())
        .collect())
}
