//! What a database holds, measured so two servers can be compared: per
//! table the exact row count and an order-independent checksum, and every
//! sequence's value. The backup measures the source in the snapshot it
//! dumps; verify measures the target the same way and compares.
//!
//! The checksum of a table is the sum, as an exact number, of a 64-bit hash
//! of every row, computed by the server in one sequential scan (parallel
//! where the planner likes), so nothing but one line per table crosses the
//! wire. Three row hashes are used, the cheapest the table allows:
//!
//! - `columns`: every column hashed by its type's own extended hash
//!   function, seeded with the column's position, the hashes combined with
//!   xor (a NULL contributes a constant of its own). About twice as cheap
//!   as `record`: no whole-row value is formed and taken apart again. Only
//!   for tables whose columns are all of the base types in
//!   [`COLUMN_HASHES`] or enums (hashed by label), under deterministic
//!   collations.
//! - `record`: `hash_record_extended(row, 0)` (PostgreSQL 14+), which hashes
//!   each column with its type's own hash function: about four times
//!   cheaper than formatting rows as text. For tables whose columns are all
//!   of types listed in [`RECORD_SAFE_TYPES`] (or domains over and arrays of
//!   them) under deterministic collations, whose hashes are the same on
//!   every server and major version (hash partitioning relies on it). Not
//!   enums: their hash is of the label's OID, which a restore renumbers.
//! - `text`: `hashtextextended(row::text, 0)`, the row's text form, for
//!   everything else. The session fixes the settings that text forms depend
//!   on (time zone, date and interval styles, float digits, bytea output).
//!
//! The method chosen at backup is recorded per table in the manifest and
//! verify uses the same one. The sum detects a changed, missing or extra row
//! (with the count) with a chance of a miss around 2^-64; it is a check
//! against accidents, not against someone forging rows.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicU64, Ordering};

use super::progress::{Phase, Progress, ProgressFn};
use super::session::{with_session, Session};
use super::{PgError, Runner};

/// How a table's rows are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Each column by its type's extended hash function, seeded by its
    /// position, combined with xor.
    Columns,
    /// `hash_record_extended(row, 0)`: typed hashes of every column.
    Record,
    /// `hashtextextended(row::text, 0)`: a hash of the row's text form.
    Text,
}

/// One table's measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableContents {
    pub schema: String,
    pub name: String,
    pub rows: u64,
    pub method: Method,
    /// The sum of the row hashes as a decimal number (it outgrows 64 bits);
    /// absent when only rows were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl TableContents {
    /// `schema.name`, for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One sequence's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    /// The last value handed out; `None` when `nextval` was never called
    /// (or after `setval(…, false)`), which a restore reproduces.
    pub last_value: Option<i64>,
}

/// Everything measured in one database.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Contents {
    pub tables: Vec<TableContents>,
    pub sequences: Vec<SequenceValue>,
}

/// Base types whose hash functions are the same on every platform and
/// major version, and that every server has (by name in `pg_catalog`).
pub const RECORD_SAFE_TYPES: &[&str] = &[
    "bool",
    "bytea",
    "char",
    "name",
    "int2",
    "int4",
    "int8",
    "oid",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "bpchar",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "jsonb",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "pg_lsn",
];

/// For the `columns` hash: the base types (in `pg_catalog`) hashed column
/// by column, each with the expression that hashes a value `{c}` with the
/// seed `{s}`. These functions are the hash opclasses' own, stable across
/// platforms and major versions; `date`, `bool` and `timestamptz` go
/// through an exact conversion to a type with one. Enums are hashed by
/// label (`{c}::text`).
pub const COLUMN_HASHES: &[(&str, &str)] = &[
    ("bool", "hashint4extended({c}::int4, {s})"),
    ("char", "hashcharextended({c}, {s})"),
    ("name", "hashnameextended({c}, {s})"),
    ("int2", "hashint2extended({c}, {s})"),
    ("int4", "hashint4extended({c}, {s})"),
    ("int8", "hashint8extended({c}, {s})"),
    ("oid", "hashoidextended({c}, {s})"),
    ("float4", "hashfloat4extended({c}, {s})"),
    ("float8", "hashfloat8extended({c}, {s})"),
    ("numeric", "hash_numeric_extended({c}, {s})"),
    ("text", "hashtextextended({c}, {s})"),
    ("varchar", "hashtextextended({c}, {s})"),
    ("bpchar", "hashbpcharextended({c}, {s})"),
    ("date", "timestamp_hash_extended({c}::timestamp, {s})"),
    ("time", "time_hash_extended({c}, {s})"),
    ("timetz", "timetz_hash_extended({c}, {s})"),
    ("timestamp", "timestamp_hash_extended({c}, {s})"),
    (
        "timestamptz",
        "timestamp_hash_extended({c} AT TIME ZONE 'UTC', {s})",
    ),
    ("interval", "interval_hash_extended({c}, {s})"),
    ("uuid", "uuid_hash_extended({c}, {s})"),
    ("jsonb", "jsonb_hash_extended({c}, {s})"),
    ("inet", "hashinetextended({c}, {s})"),
    ("cidr", "hashinetextended({c}, {s})"),
    ("macaddr", "hashmacaddrextended({c}, {s})"),
    ("macaddr8", "hashmacaddr8extended({c}, {s})"),
    ("pg_lsn", "pg_lsn_hash_extended({c}, {s})"),
];

/// The column type name `tables_sql` reports for an enum.
const ENUM: &str = "enum";

/// The tables that hold rows pg_dump copies (partitions included, their
/// parents hold none; extension members left out, as pg_dump does), each
/// with the method its rows can be hashed with on this server, its size,
/// and for the `columns` method its columns in order (`[name, type]`, the
/// type as named in [`COLUMN_HASHES`] or `enum`). One line: a JSON array
/// of `[schema, name, method, bytes, columns]`.
fn tables_sql(record_capable: bool) -> String {
    let quoted = |types: &mut dyn Iterator<Item = &str>| {
        types
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let safe = quoted(&mut RECORD_SAFE_TYPES.iter().copied());
    let direct = quoted(&mut COLUMN_HASHES.iter().map(|(t, _)| *t));
    let deterministic = "NOT EXISTS (
        SELECT 1 FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT co.collisdeterministic)";
    // Every column an enum or a base type hashed directly, and at least one.
    let columns = if record_capable {
        format!(
            r#"CASE WHEN {deterministic} AND NOT EXISTS (
        SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND t.typtype <> 'e'
          AND NOT (t.typnamespace = 'pg_catalog'::regnamespace AND t.typname IN ({direct})))
    THEN (SELECT json_agg(json_build_array(a.attname,
                 CASE WHEN t.typtype = 'e' THEN '{ENUM}' ELSE t.typname::text END) ORDER BY a.attnum)
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) END"#
        )
    } else {
        "NULL::json".to_string()
    };
    let method = if record_capable {
        // A column type is walked down through domains and true arrays (the
        // element's array type is this one) to its leaves; the table is
        // `record` when every leaf is a safe base type and no column has a
        // nondeterministic collation. An enum's hash is its label's OID,
        // which differs on the restored server: such tables hash as text.
        format!(
            r#"CASE WHEN EXISTS (
        WITH RECURSIVE walk(typ) AS (
            SELECT a.atttypid FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          UNION
            SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
            FROM walk w JOIN pg_type t ON t.oid = w.typ
            WHERE t.typtype = 'd'
               OR (t.typelem <> 0 AND (SELECT e.typarray FROM pg_type e WHERE e.oid = t.typelem) = t.oid))
        SELECT 1 FROM walk w JOIN pg_type t ON t.oid = w.typ
        WHERE t.typtype <> 'd'
          AND NOT (t.typelem <> 0 AND (SELECT e.typarray FROM pg_type e WHERE e.oid = t.typelem) = t.oid)
          AND NOT (t.typnamespace = 'pg_catalog'::regnamespace AND t.typname IN ({safe})))
      OR NOT {deterministic}
    THEN 'text' ELSE 'record' END"#
        )
    } else {
        "'text'".to_string()
    };
    format!(
        r#"SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname,
    CASE WHEN x.columns IS NOT NULL THEN 'columns' ELSE {method} END, pg_relation_size(c.oid), x.columns)
    ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT {columns} AS columns) x
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"#
    )
}

const SEQUENCES_SQL: &str = r#"SELECT coalesce(json_agg(json_build_array(schemaname, sequencename, last_value)
    ORDER BY schemaname, sequencename), '[]')
FROM pg_sequences WHERE schemaname !~ '^pg_(toast|temp_|toast_temp_)'"#;

/// Quotes an SQL identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `columns` row hash: each column's hash seeded with its position
/// (from 1), a NULL standing for minus that position, combined with xor.
/// `None` when a column's type has no hash here.
fn columns_hash(columns: &[(String, String)]) -> Option<String> {
    let mut terms = Vec::with_capacity(columns.len());
    for (i, (name, typ)) in columns.iter().enumerate() {
        let seed = i + 1;
        let column = ident(name);
        let hash = if typ == ENUM {
            format!("hashtextextended({column}::text, {seed})")
        } else {
            let (_, template) = COLUMN_HASHES.iter().find(|(t, _)| t == typ)?;
            template
                .replace("{c}", &column)
                .replace("{s}", &seed.to_string())
        };
        terms.push(format!("coalesce({hash}, -{seed})"));
    }
    (!terms.is_empty()).then(|| terms.join(" # "))
}

/// The one-line count (and checksum) query of one table. The alias is one
/// no column is likely to have: a column of that name would shadow the
/// whole-row reference. `columns` are the table's, for the `columns` hash;
/// `None` when that hash cannot be computed for them.
fn table_sql(
    schema: &str,
    name: &str,
    method: Method,
    checksum: bool,
    columns: &[(String, String)],
) -> Option<String> {
    let from = format!(
        "FROM ONLY {}.{} AS \"pgplan row\"",
        ident(schema),
        ident(name)
    );
    if !checksum {
        return Some(format!("SELECT count(*) || ' -' {from}"));
    }
    let hash = match method {
        Method::Columns => columns_hash(columns)?,
        Method::Record => "hash_record_extended(\"pgplan row\", 0)".to_string(),
        Method::Text => "hashtextextended(\"pgplan row\"::text, 0)".to_string(),
    };
    Some(format!(
        "SELECT count(*) || ' ' || coalesce(sum({hash}), 0) {from}"
    ))
}

/// What to measure.
pub(crate) struct Measure<'m> {
    /// Hash rows (else only count them).
    pub checksums: bool,
    /// Read sequences.
    pub sequences: bool,
    /// Methods fixed in advance (verify uses the manifest's); other tables
    /// get the method the server allows.
    pub methods: Option<&'m HashMap<(String, String), Method>>,
    pub phase: Phase,
}

fn output_error(server: &str, what: &str, message: impl std::fmt::Display) -> PgError {
    PgError::Output {
        server: server.to_string(),
        command: what.into(),
        message: message.to_string(),
    }
}

/// Every sequence's value, read now: sequences are not transactional, so
/// no snapshot applies. The backup reads them before pg_dump starts, so
/// the archive holds these values or later ones.
pub(crate) async fn sequences(session: &mut Session) -> Result<Vec<SequenceValue>, PgError> {
    let raw: Vec<(String, String, Option<i64>)> =
        serde_json::from_str(&session.line(SEQUENCES_SQL).await?)
            .map_err(|e| output_error(session.server(), "the sequence query", e))?;
    Ok(raw
        .into_iter()
        .map(|(schema, name, last_value)| SequenceValue {
            schema,
            name,
            last_value,
        })
        .collect())
}

/// Whether the server has `hash_record_extended` (14+).
pub(crate) async fn record_capable(session: &mut Session) -> Result<bool, PgError> {
    let v = session
        .line("SELECT current_setting('server_version_num')")
        .await?;
    let num: u32 = v
        .trim()
        .parse()
        .map_err(|e| output_error(session.server(), "server_version_num", e))?;
    Ok(num >= 140_000)
}

/// A table to measure, with the hash to use and its size (for sharing the
/// work out, largest first).
struct Job {
    schema: String,
    name: String,
    method: Method,
    bytes: u64,
    /// The count (and checksum) query.
    sql: String,
}

/// Measures the database `primary` is connected to, in `jobs` sessions:
/// `primary` lists the tables and sequences and takes a share of the
/// tables; the others, opened through `runner`, take theirs. With a
/// `snapshot`, the others import it (`SET TRANSACTION SNAPSHOT`), so every
/// table is measured in the backup's snapshot; `primary` must be in the
/// transaction that exported it. Tables are shared out by size, largest
/// first (longest processing time first).
pub(crate) async fn measure(
    runner: &Runner<'_>,
    database: &str,
    primary: &mut Session,
    snapshot: Option<&str>,
    jobs: u32,
    what: &Measure<'_>,
    progress: ProgressFn<'_>,
) -> Result<Contents, PgError> {
    let capable = record_capable(primary).await?;
    type Listed = (String, String, Method, u64, Option<Vec<(String, String)>>);
    let listed: Vec<Listed> = serde_json::from_str(&primary.line(&tables_sql(capable)).await?)
        .map_err(|e| output_error(primary.server(), "the table list query", e))?;
    let sequences = if what.sequences {
        sequences(primary).await?
    } else {
        Vec::new()
    };
    let mut todo = Vec::with_capacity(listed.len());
    for (schema, name, detected, bytes, columns) in listed {
        let method = what
            .methods
            .and_then(|m| m.get(&(schema.clone(), name.clone())).copied())
            .unwrap_or(detected);
        if method == Method::Record && !capable {
            return Err(PgError::Refused {
                server: primary.server().to_string(),
                message: format!(
                    "table {schema}.{name} was checksummed with hash_record_extended, which this server (before PostgreSQL 14) lacks"
                ),
                help: "restore into a server of the source's major version or newer, or verify with `checksums: false`".into(),
            });
        }
        let columns = columns.unwrap_or_default();
        let Some(sql) = table_sql(&schema, &name, method, what.checksums, &columns) else {
            return Err(PgError::Refused {
                server: primary.server().to_string(),
                message: format!(
                    "table {schema}.{name} was checksummed column by column, but here some of its columns are of types that are not hashed so: its definition differs from the source's"
                ),
                help: "compare the table's definition on both servers; restore into an empty database, or verify with `checksums: false`".into(),
            });
        };
        todo.push(Job {
            schema,
            name,
            method,
            bytes,
            sql,
        });
    }
    let total = todo.len() as u64;
    let jobs = (jobs.max(1) as usize).min(todo.len().max(1));
    todo.sort_by_key(|j| std::cmp::Reverse(j.bytes));
    let mut shares: Vec<(u64, Vec<Job>)> = (0..jobs).map(|_| (0, Vec::new())).collect();
    for job in todo {
        if let Some(lightest) = shares.iter_mut().min_by_key(|(load, _)| *load) {
            lightest.0 += job.bytes.max(1);
            lightest.1.push(job);
        }
    }
    let done = AtomicU64::new(0);
    let counter = Counter {
        done: &done,
        total,
        phase: what.phase,
        progress,
    };
    let mut shares = shares.into_iter().map(|(_, share)| share);
    let own = shares.next().unwrap_or_default();
    let begin = snapshot.map(|s| {
        format!(
            "SET max_parallel_workers_per_gather = 0; \
             BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            literal(s)
        )
    });
    let helpers = shares.map(|share| {
        let begin = begin.clone();
        let counter = &counter;
        with_session(runner, database, move |mut s| async move {
            if let Some(begin) = &begin {
                s.send(begin).await?;
            }
            measure_share(&mut s, share, what.checksums, counter).await
        })
    });
    let (mine, theirs) = tokio::join!(
        measure_share(primary, own, what.checksums, &counter),
        futures::future::join_all(helpers)
    );
    let mut tables = mine?;
    for t in theirs {
        tables.extend(t?);
    }
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(Contents { tables, sequences })
}

/// Tables measured so far, over all sessions, for progress events.
struct Counter<'a> {
    done: &'a AtomicU64,
    total: u64,
    phase: Phase,
    progress: ProgressFn<'a>,
}

async fn measure_share(
    session: &mut Session,
    share: Vec<Job>,
    checksums: bool,
    counter: &Counter<'_>,
) -> Result<Vec<TableContents>, PgError> {
    let mut tables = Vec::with_capacity(share.len());
    for job in share {
        let line = session.line(&job.sql).await?;
        let bad = |detail: String| output_error(session.server(), "a table checksum query", detail);
        let (rows, sum) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("`{line}`")))?;
        let rows: u64 = rows.parse().map_err(|e| bad(format!("`{line}`: {e}")))?;
        let t = TableContents {
            schema: job.schema,
            name: job.name,
            rows,
            method: job.method,
            checksum: checksums.then(|| sum.to_string()),
        };
        let done = counter.done.fetch_add(1, Ordering::Relaxed) + 1;
        (counter.progress)(&Progress::Tables {
            phase: counter.phase,
            done,
            total: counter.total,
            table: t.qualified(),
        });
        tables.push(t);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_row_alias_is_quoted_and_tables_are_qualified() {
        assert_eq!(
            table_sql("public", "we\"ird", Method::Record, true, &[]).unwrap(),
            "SELECT count(*) || ' ' || coalesce(sum(hash_record_extended(\"pgplan row\", 0)), 0) \
             FROM ONLY \"public\".\"we\"\"ird\" AS \"pgplan row\""
        );
        assert!(table_sql("s", "t", Method::Text, true, &[])
            .unwrap()
            .contains("\"pgplan row\"::text"));
        assert_eq!(
            table_sql("s", "t", Method::Text, false, &[]).unwrap(),
            "SELECT count(*) || ' -' FROM ONLY \"s\".\"t\" AS \"pgplan row\""
        );
    }

    #[test]
    fn columns_are_hashed_by_position_with_their_own_functions() {
        let cols = |c: &[(&str, &str)]| -> Vec<(String, String)> {
            c.iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect()
        };
        assert_eq!(
            table_sql(
                "s",
                "t",
                Method::Columns,
                true,
                &cols(&[("id", "int8"), ("at", "timestamptz"), ("Mood", ENUM)])
            )
            .unwrap(),
            "SELECT count(*) || ' ' || coalesce(sum(\
             coalesce(hashint8extended(\"id\", 1), -1) # \
             coalesce(timestamp_hash_extended(\"at\" AT TIME ZONE 'UTC', 2), -2) # \
             coalesce(hashtextextended(\"Mood\"::text, 3), -3)), 0) \
             FROM ONLY \"s\".\"t\" AS \"pgplan row\""
        );
        // A type without a column hash, or no columns: no query.
        assert_eq!(
            table_sql("s", "t", Method::Columns, true, &cols(&[("p", "point")])),
            None
        );
        assert_eq!(table_sql("s", "t", Method::Columns, true, &[]), None);
        // Counting only needs no hash.
        assert!(table_sql("s", "t", Method::Columns, false, &[]).is_some());
        // Every listed type is also one `record` accepts.
        for (t, _) in COLUMN_HASHES {
            assert!(RECORD_SAFE_TYPES.contains(t), "{t}");
        }
    }

    #[test]
    fn older_servers_hash_text_only() {
        assert!(tables_sql(false).contains("'text'"));
        assert!(!tables_sql(false).contains("hash_record"));
        assert!(tables_sql(true).contains("'jsonb'"));
    }
}
